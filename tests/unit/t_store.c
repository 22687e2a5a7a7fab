/* SPDX-License-Identifier: MIT */
/*
 * The store's request handlers driven directly, without the client library
 * and without the loop thread: a store opened with ss__store_open, clients
 * made with ss__conn_new on one end of a socketpair, requests built with
 * proto.h and handed to ss__req_dispatch, replies read from the other
 * end. The seal worker's and the spill engine's completions are applied the
 * way the loop applies them (wait for the eventfd, then run the handler
 * registered with the loop for it), end-of-turn work by running the
 * loop's turn hooks, timeouts by calling ss__req_timer_turn with a `now`
 * past the deadline. Every step is followed by
 * ss__store_validate (store_check.c) and checks of the state it should
 * have left; the last cases corrupt the state on purpose and expect the
 * validator to say so.
 */
#include "t_helpers.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "copy.h"
#include "copy.h"
#include "store_int.h"
#include "sys.h"

#define BIG (1u << 20) /* a large (segment-backed) object */

typedef struct client {
    ss__conn *c;
    int peer; /* our end of the socketpair */
    uint32_t req_id;
} client;

typedef struct reply {
    ss__msg_hdr h;
    unsigned char body[SS_PROTO_MAX_REPLY];
    int nfds;
} reply;

static ss__store *S;
static int store_no;

/* ------------------------------------------------------------- harness */

static void valid(void)
{
    assert_int_equal(ss__store_validate(S), 0);
}

static void open_store(const char *capacity, bool evict)
{
    char path[256];

    t_assert_ok(ss_option_set(SS_OPT_CAPACITY, capacity));
    t_assert_ok(ss_option_set(SS_OPT_POOL_SIZE, "0"));
    /* large creates here are per-object segments written in place (the
     * staged path: tests/integration/t_stage, t_hostile) */
    t_assert_ok(ss_option_set(SS_OPT_STAGE_MAX, "0"));
    t_assert_ok(ss_option_set(SS_OPT_HUGEPAGES, "off"));
    t_assert_ok(ss_option_set(SS_OPT_NUMA, "off"));
    t_assert_ok(ss_option_set(SS_OPT_SPILL_DIR, "off"));
    t_assert_ok(ss_option_set(SS_OPT_EVICT, evict ? "on" : "off"));
    snprintf(path, sizeof(path), "%s/s%d.sock", t_tmpdir(), store_no++);
    t_assert_ok(ss__store_open(&S, path, 0));
    valid();
}

static int setup(void **state)
{
    (void)state;
    open_store("64M", false);
    return 0;
}

static void close_store(void)
{
    for (ss__conn *c = S->conn.conns; c; c = c->next)
        ss__conn_close(S, c);
    ss__conn_reap(S);
    valid();
    ss__store_close(S); /* validates once more in debug builds */
    S = NULL;
}

static int teardown(void **state)
{
    (void)state;
    close_store();
    return 0;
}

static ss_id id_of(unsigned k)
{
    ss_id id;

    memset(&id, 0, sizeof(id));
    memcpy(id.b, &k, sizeof(k));
    id.b[SS_ID_SIZE - 1] = 0x5e;
    return id;
}

/* Dispatch a request (header + body) from cl, then reap what it closed. */
static uint32_t request(client *cl, uint16_t type, const void *body, size_t len)
{
    static unsigned char buf[SS_PROTO_MAX_MSG];
    uint32_t id = ++cl->req_id;

    assert_true(sizeof(ss__msg_hdr) + len <= sizeof(buf));
    ss__proto_hdr((ss__msg_hdr *)buf, type, id, (uint32_t)(sizeof(ss__msg_hdr) + len), 0, 0);
    memcpy(buf + sizeof(ss__msg_hdr), body, len);
    ss__req_dispatch(S, cl->c, buf, sizeof(ss__msg_hdr) + len, 0);
    ss__conn_reap(S);
    valid();
    return id;
}

/* The next reply on cl (fds it carried closed and counted), or false if
 * none is waiting. */
static bool try_reply(client *cl, reply *r)
{
    union {
        char buf[CMSG_SPACE(sizeof(int) * SS_PROTO_MAX_FDS)];
        struct cmsghdr align;
    } u;
    struct iovec iov = { .iov_base = &r->h, .iov_len = sizeof(r->h) + sizeof(r->body) };
    struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf,
                         .msg_controllen = sizeof(u.buf) };
    ssize_t n = recvmsg(cl->peer, &mh, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);

    if (n < 0 && errno == EAGAIN)
        return false;
    assert_true(n >= (ssize_t)sizeof(r->h));
    r->nfds = 0;
    for (struct cmsghdr *cm = CMSG_FIRSTHDR(&mh); cm; cm = CMSG_NXTHDR(&mh, cm)) {
        if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS)
            continue;
        int k = (int)((cm->cmsg_len - CMSG_LEN(0)) / sizeof(int));
        for (int i = 0; i < k; i++) {
            int fd;
            memcpy(&fd, CMSG_DATA(cm) + i * sizeof(int), sizeof(int));
            close(fd);
        }
        r->nfds += k;
    }
    t_assert_ok(ss__proto_check_reply(&r->h, (size_t)n, (unsigned)r->nfds));
    return true;
}

/* The reply to req_id must be waiting: its status. */
static int32_t reply_to(client *cl, uint32_t req_id, uint16_t type, reply *r)
{
    static reply tmp;

    if (!r)
        r = &tmp;
    assert_true(try_reply(cl, r));
    assert_int_equal(r->h.type, type);
    assert_int_equal(r->h.req_id, req_id);
    return r->h.status;
}

static void no_reply(client *cl)
{
    reply r;

    assert_false(try_reply(cl, &r));
}

static void connect_client(client *cl)
{
    int sv[2];
    ss__req_hello h = { .pid = (uint32_t)getpid() };

    assert_int_equal(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv), 0);
    cl->c = ss__conn_new(S, sv[0], getpid(), getuid());
    assert_non_null(cl->c);
    cl->peer = sv[1];
    cl->req_id = 0;
    valid();
    uint32_t rq = request(cl, SS_MSG_HELLO, &h, sizeof(h));
    assert_int_equal(reply_to(cl, rq, SS_MSG_HELLO, NULL), 0);
    assert_true(cl->c->hello);
}

/* Close cl's connection the way the loop does (mark, reap at turn end). */
static void disconnect(client *cl)
{
    ss__conn_close(S, cl->c);
    ss__conn_reap(S);
    valid();
    close(cl->peer);
    cl->c = NULL;
    cl->peer = -1;
}

/* ------------------------------------------------------------ requests */

static uint32_t send_create_flags(client *cl, unsigned k, uint64_t size, uint32_t flags)
{
    ss__req_create r = { .id = id_of(k), .node = -1, .size = size, .flags = flags };

    return request(cl, SS_MSG_CREATE, &r, sizeof(r));
}

static uint32_t send_create(client *cl, unsigned k, uint64_t size)
{
    return send_create_flags(cl, k, size, 0);
}

static uint32_t send_seal(client *cl, unsigned k, uint64_t payload, bool release)
{
    static unsigned char buf[sizeof(ss__req_seal) + SS_PROTO_MAX_INLINE];
    ss__req_seal r = { .id = id_of(k), .flags = release ? SS_SEALF_RELEASE : 0,
                       .payload_size = payload };

    memcpy(buf, &r, sizeof(r));
    memset(buf + sizeof(r), (int)k, payload);
    return request(cl, SS_MSG_SEAL, buf, sizeof(r) + payload);
}

/* GET and RELEASE bodies: the fixed part, then the ids (no padding). */
static uint32_t send_get(client *cl, unsigned k, int64_t timeout_ms)
{
    unsigned char m[sizeof(ss__req_get) + sizeof(ss_id)];
    ss__req_get r = { .n = 1, .timeout_ms = timeout_ms };
    ss_id id = id_of(k);

    memcpy(m, &r, sizeof(r));
    memcpy(m + sizeof(r), &id, sizeof(id));
    return request(cl, SS_MSG_GET, m, sizeof(m));
}

static void send_release(client *cl, unsigned k)
{
    unsigned char m[sizeof(ss__req_release) + sizeof(ss_id)];
    ss__req_release r = { .n = 1 };
    ss_id id = id_of(k);

    memcpy(m, &r, sizeof(r));
    memcpy(m + sizeof(r), &id, sizeof(id));
    request(cl, SS_MSG_RELEASE, m, sizeof(m));
}

static uint32_t send_id(client *cl, uint16_t type, unsigned k)
{
    ss__req_id r = { .id = id_of(k) };

    return request(cl, type, &r, sizeof(r));
}

static int32_t put_flags(client *cl, unsigned k, uint64_t size, uint32_t flags)
{
    static unsigned char buf[sizeof(ss__req_put) + SS_PROTO_MAX_INLINE];
    ss__req_put r = { .id = id_of(k), .node = -1, .size = size, .flags = flags };

    memcpy(buf, &r, sizeof(r));
    memset(buf + sizeof(r), (int)k, size);
    return reply_to(cl, request(cl, SS_MSG_PUT, buf, sizeof(r) + size), SS_MSG_PUT, NULL);
}

static int32_t put(client *cl, unsigned k, uint64_t size)
{
    return put_flags(cl, k, size, 0);
}

/* What the loop does when a registered fd is ready: run its handler. */
static void fire(ss__loop_fd *r)
{
    r->handler(r->arg, EPOLLIN);
}

/* Apply the seal worker's completions as the loop does when the seal
 * eventfd fires (waits for it: the worker is a thread). */
static void seal_completions(void)
{
    struct pollfd p = { .fd = S->seal.ev.fd, .events = POLLIN };

    assert_int_equal(poll(&p, 1, 30000), 1);
    fire(&S->seal.ev); /* drains the eventfd, runs each job's done handler */
    ss__conn_reap(S);
    valid();
}

/* Create and seal object k of `size` bytes from cl; cl keeps its
 * reference unless `release`. */
static void create_sealed(client *cl, unsigned k, uint64_t size, bool release)
{
    bool small = size <= S->mem.small_max;
    reply r;
    uint32_t rq = send_create(cl, k, size);

    assert_int_equal(reply_to(cl, rq, SS_MSG_CREATE, &r), 0);
    assert_int_equal(r.nfds, small ? 0 : 2);
    rq = send_seal(cl, k, small ? size : 0, release);
    if (!small)
        seal_completions();
    assert_int_equal(reply_to(cl, rq, SS_MSG_SEAL, NULL), 0);
}

/* ------------------------------------------------------------- lookups */

static int64_t entry_of(unsigned k)
{
    ss_id id = id_of(k);

    return ss__index_find(&S->tab.ix, &id);
}

static uint32_t state_of(uint32_t e) { return ss__ent_state(S, e); }
static ss__obj *obj(uint32_t e) { return ss__obj_at(S, e); }

static uint32_t refs_of(const client *cl, uint32_t e)
{
    const ss__ref *r = ss__ref_find(cl->c, e);

    return r ? SS_REF_COUNT(r->refs) : 0;
}

/* The LRU, least recently used first, as entry numbers; returns its length. */
static unsigned lru(uint32_t *out, unsigned max)
{
    unsigned n = 0;

    for (uint32_t x = S->tab.lru_head; x && n < max; x = obj(x - 1)->next)
        out[n++] = x - 1;
    return n;
}

static bool on_free_list(uint32_t e)
{
    for (uint32_t x = S->tab.free_head; x; x = obj(x - 1)->next)
        if (x == e + 1)
            return true;
    return false;
}

/* ================================================================ cases */

/* create -> seal -> get -> release -> delete, small then large. */
static void lifecycle(unsigned k, uint64_t size)
{
    client a, b;
    reply r;

    connect_client(&a);
    connect_client(&b);
    uint32_t rq = send_create(&a, k, size);
    assert_int_equal(reply_to(&a, rq, SS_MSG_CREATE, &r), 0);
    int64_t e = entry_of(k);
    assert_true(e >= 0);
    assert_int_equal(state_of((uint32_t)e), SS_IX_CREATED);
    assert_int_equal(obj((uint32_t)e)->refs, 1);
    assert_int_equal(refs_of(&a, (uint32_t)e), 1);
    assert_int_equal(S->tab.nobjects, 1);
    assert_int_equal(S->tab.nsealed, 0);
    assert_int_equal(S->tab.object_bytes, size);

    /* a GET of an unsealed object with timeout 0 finds nothing */
    rq = send_get(&b, k, 0);
    assert_int_equal(reply_to(&b, rq, SS_MSG_GET, NULL), 0);

    rq = send_seal(&a, k, size <= S->mem.small_max ? size : 0, false);
    if (size > S->mem.small_max) {
        assert_true(obj((uint32_t)e)->flags & SS_OBJF_SEALING);
        assert_true(a.c->seal_busy);
        seal_completions();
        assert_int_equal(obj((uint32_t)e)->fd_rw, -1);
        assert_true(obj((uint32_t)e)->fd_ro >= 0);
    }
    assert_int_equal(reply_to(&a, rq, SS_MSG_SEAL, NULL), 0);
    assert_int_equal(state_of((uint32_t)e), SS_IX_SEALED);
    assert_int_equal(S->tab.nsealed, 1);
    assert_false(obj((uint32_t)e)->flags & SS_OBJF_ON_LRU); /* its creator holds it */

    rq = send_get(&b, k, 0);
    assert_int_equal(reply_to(&b, rq, SS_MSG_GET, &r), 1);
    assert_int_equal(r.nfds, 1); /* the segment's, or the small segment's fd */
    assert_int_equal(obj((uint32_t)e)->refs, 2);
    assert_int_equal(refs_of(&b, (uint32_t)e), 1);
    rq = send_get(&b, k, 0); /* again: no fd this time, two references */
    assert_int_equal(reply_to(&b, rq, SS_MSG_GET, &r), 1);
    assert_int_equal(r.nfds, 0);
    assert_int_equal(refs_of(&b, (uint32_t)e), 2);

    send_release(&a, k);
    send_release(&b, k);
    assert_int_equal(obj((uint32_t)e)->refs, 1);
    assert_false(obj((uint32_t)e)->flags & SS_OBJF_ON_LRU);
    send_release(&b, k);
    no_reply(&b); /* RELEASE has no reply */
    assert_int_equal(obj((uint32_t)e)->refs, 0);
    assert_true(obj((uint32_t)e)->flags & SS_OBJF_ON_LRU);
    assert_int_equal(S->tab.lru_tail, (uint32_t)e + 1);
    send_release(&b, k); /* one too many: counted, ignored */
    assert_int_equal(S->cnt.c_proto_errors, 1);

    rq = send_id(&b, SS_MSG_CONTAINS, k);
    assert_int_equal(reply_to(&b, rq, SS_MSG_CONTAINS, NULL), 1);
    rq = send_id(&b, SS_MSG_DELETE, k);
    assert_int_equal(reply_to(&b, rq, SS_MSG_DELETE, NULL), 0);
    assert_int_equal(entry_of(k), -ENOENT);
    assert_int_equal(state_of((uint32_t)e), SS_IX_FREE);
    assert_int_equal(S->tab.free_head, (uint32_t)e + 1);
    assert_int_equal(S->tab.nobjects, 0);
    assert_int_equal(S->tab.nsealed, 0);
    assert_int_equal(S->tab.object_bytes, 0);
    assert_int_equal(S->tab.lru_head, 0);
    rq = send_id(&b, SS_MSG_DELETE, k);
    assert_int_equal(reply_to(&b, rq, SS_MSG_DELETE, NULL), -ENOENT);
    disconnect(&a);
    disconnect(&b);
}

static void t_lifecycle_small(void **state)
{
    (void)state;
    lifecycle(1, 1000);
}

static void t_lifecycle_large(void **state)
{
    (void)state;
    lifecycle(2, BIG);
}

/* ABORT of an unsealed object frees it; a CREATE of an existing id is
 * refused. */
static void t_abort(void **state)
{
    client a;

    (void)state;
    connect_client(&a);
    uint32_t rq = send_create(&a, 3, BIG);
    assert_int_equal(reply_to(&a, rq, SS_MSG_CREATE, NULL), 0);
    rq = send_create(&a, 3, 10);
    assert_int_equal(reply_to(&a, rq, SS_MSG_CREATE, NULL), -EEXIST);
    uint32_t e = (uint32_t)entry_of(3);
    rq = send_id(&a, SS_MSG_ABORT, 3);
    assert_int_equal(reply_to(&a, rq, SS_MSG_ABORT, NULL), 0);
    assert_int_equal(state_of(e), SS_IX_FREE);
    assert_int_equal(S->tab.nobjects, 0);
    assert_int_equal(atomic_load(&S->tab.resident), 0);
    disconnect(&a);
}

/* DELETE of an object another client holds: unchained at once (DELETED,
 * on its deleted-by-id chain), the id free for a new object; the holder's
 * RELEASE of the id drops the deleted one, which is freed then. */
static void t_delete_referenced(void **state)
{
    client a, b;

    (void)state;
    connect_client(&a);
    connect_client(&b);
    assert_int_equal(put(&a, 4, 500), 0);
    uint32_t e = (uint32_t)entry_of(4);
    assert_int_equal(reply_to(&b, send_get(&b, 4, 0), SS_MSG_GET, NULL), 1);
    assert_int_equal(obj(e)->refs, 1);

    assert_int_equal(reply_to(&a, send_id(&a, SS_MSG_DELETE, 4), SS_MSG_DELETE, NULL), 0);
    assert_int_equal(state_of(e), SS_IX_DELETED);
    assert_int_equal(entry_of(4), -ENOENT);
    assert_int_equal(S->tab.nobjects, 0);
    assert_false(obj(e)->flags & SS_OBJF_ON_LRU);
    unsigned chained = 0;
    for (uint32_t i = 0; i < S->tab.det_nbuckets; i++)
        for (uint32_t x = S->tab.det_buckets[i]; x; x = obj(x - 1)->next)
            chained += x == e + 1;
    assert_int_equal(chained, 1);
    assert_int_equal(reply_to(&a, send_id(&a, SS_MSG_CONTAINS, 4), SS_MSG_CONTAINS, NULL), 0);

    /* the same id again: a new entry, while the old one lives on */
    assert_int_equal(put(&a, 4, 700), 0);
    int64_t e2 = entry_of(4);
    assert_true(e2 >= 0 && (uint32_t)e2 != e);
    assert_int_equal(state_of((uint32_t)e2), SS_IX_SEALED);
    assert_int_equal(S->tab.nobjects, 1);
    assert_int_equal(S->tab.object_bytes, 700);

    send_release(&b, 4); /* b holds the deleted one only: that one goes */
    assert_int_equal(state_of(e), SS_IX_FREE);
    assert_true(on_free_list(e));
    assert_int_equal(state_of((uint32_t)e2), SS_IX_SEALED);
    assert_int_equal(obj((uint32_t)e2)->refs, 0);
    assert_int_equal(S->cnt.c_proto_errors, 0);
    disconnect(&a);
    disconnect(&b);
}

/* A GET parked on an id not sealed yet is answered by the seal: small (the
 * seal is immediate) and large (the worker's completion, as the loop
 * applies it). */
static void t_get_woken_by_seal(void **state)
{
    client a, b;
    reply r;

    (void)state;
    connect_client(&a);
    connect_client(&b);
    for (unsigned k = 5; k <= 6; k++) {
        uint64_t size = k == 5 ? 100 : BIG;
        uint32_t rq = send_create(&a, k, size);
        assert_int_equal(reply_to(&a, rq, SS_MSG_CREATE, NULL), 0);
        uint32_t e = (uint32_t)entry_of(k);

        uint32_t grq = send_get(&b, k, -1);
        no_reply(&b);
        assert_int_equal(S->park.nparked, 1);
        assert_int_equal(b.c->nparked, 1);
        ss__parked *pk = b.c->parked;
        assert_int_equal(pk->type, SS_PK_GET);
        assert_int_equal(pk->missing, 1);
        assert_int_equal(pk->w[0].kind, SS_WN_WAIT);
        assert_int_equal(pk->heap_pos, UINT32_MAX); /* no timeout */
        assert_true(S->park.parked_bytes >= sizeof(*pk));

        rq = send_seal(&a, k, k == 5 ? size : 0, true);
        if (k == 6) {
            no_reply(&b); /* with the worker */
            assert_int_equal(S->park.nparked, 1);
            seal_completions();
        }
        assert_int_equal(reply_to(&a, rq, SS_MSG_SEAL, NULL), 0);
        assert_int_equal(reply_to(&b, grq, SS_MSG_GET, &r), 1);
        assert_int_equal(r.nfds, 1);
        assert_int_equal(S->park.nparked, 0);
        assert_int_equal(S->park.parked_bytes, 0);
        assert_int_equal(b.c->nparked, 0);
        assert_int_equal(refs_of(&a, e), 0); /* SS_SEALF_RELEASE */
        assert_int_equal(refs_of(&b, e), 1);
        assert_int_equal(obj(e)->refs, 1);
        send_release(&b, k);
        assert_true(obj(e)->flags & SS_OBJF_ON_LRU);
    }
    disconnect(&a);
    disconnect(&b);
}

/* A GET with a timeout waits in the timer heap; ss__req_timer_turn before its
 * deadline leaves it, after answers it with what is there (nothing). */
static void t_get_expires(void **state)
{
    client b;
    reply r;

    (void)state;
    connect_client(&b);
    uint32_t rq = send_get(&b, 7, 60000);
    no_reply(&b);
    assert_int_equal(S->park.heap_len, 1);
    ss__parked *pk = S->park.heap[0];
    assert_int_equal(pk->heap_pos, 0);
    assert_ptr_equal(pk->c, b.c);
    uint64_t deadline = pk->deadline_ns;

    ss__req_timer_turn(S, deadline - 1);
    valid();
    no_reply(&b);
    assert_int_equal(S->park.nparked, 1);
    ss__req_timer_turn(S, deadline + 1);
    valid();
    assert_int_equal(reply_to(&b, rq, SS_MSG_GET, &r), 0);
    const ss__get_entry *ge = (const void *)(r.body + sizeof(ss__rep_get));
    assert_int_equal(ge->status, -ENOENT);
    assert_int_equal(S->park.nparked, 0);
    assert_int_equal(S->park.heap_len, 0);
    assert_int_equal(S->cnt.c_wait_timeouts, 1);
    disconnect(&b);
}

/* A CREATE that does not fit parks (create FIFO, timer heap, parked_need)
 * and is admitted when a DELETE frees the room. */
static void t_create_parked(void **state)
{
    client a;
    reply r;

    (void)state;
    close_store();
    open_store("16M", false);
    connect_client(&a);
    create_sealed(&a, 8, 10 * BIG, true);
    uint32_t e8 = (uint32_t)entry_of(8), gen8 = ss__ent(S, e8)->generation;

    uint32_t rq = send_create(&a, 9, 8 * BIG);
    no_reply(&a);
    assert_int_equal(entry_of(9), -ENOENT);
    assert_int_equal(S->park.nparked, 1);
    assert_ptr_equal(S->park.cq_head, a.c->parked);
    assert_ptr_equal(S->park.cq_tail, a.c->parked);
    assert_int_equal(a.c->parked->type, SS_PK_CREATE);
    assert_true(a.c->parked->heap_pos != UINT32_MAX); /* the create timeout */
    assert_true(S->park.parked_need >= 8 * BIG);

    uint32_t drq = send_id(&a, SS_MSG_DELETE, 8);
    assert_int_equal(reply_to(&a, drq, SS_MSG_DELETE, NULL), 0);
    assert_int_equal(reply_to(&a, rq, SS_MSG_CREATE, &r), 0);
    assert_int_equal(r.nfds, 2);
    assert_int_equal(entry_of(8), -ENOENT);
    /* the entry 8 gave back is the one 9 took (reused LIFO, a new generation) */
    assert_int_equal(entry_of(9), (int64_t)e8);
    assert_int_equal(ss__ent(S, e8)->generation, gen8 + 1);
    assert_int_equal(state_of(e8), SS_IX_CREATED);
    assert_int_equal(S->park.nparked, 0);
    assert_null(S->park.cq_head);
    assert_int_equal(S->park.heap_len, 0);
    assert_int_equal(S->park.parked_need, 0);

    /* one that never fits in time: -ENOSPC at its create timeout */
    rq = send_create(&a, 10, 9 * BIG);
    no_reply(&a);
    assert_int_equal(S->park.heap_len, 1);
    ss__req_timer_turn(S, S->park.heap[0]->deadline_ns + 1);
    valid();
    assert_int_equal(reply_to(&a, rq, SS_MSG_CREATE, NULL), -ENOSPC);
    assert_int_equal(S->park.nparked, 0);
    assert_int_equal(S->park.parked_need, 0);
    assert_int_equal(entry_of(10), -ENOENT);

    disconnect(&a); /* aborts the unsealed object */
    assert_int_equal(S->tab.nobjects, 0);
    assert_int_equal(atomic_load(&S->tab.resident), 0);
}

/* A PUT whose small segment does not fit parks as a PUT (the message kept)
 * and is run whole when room comes. */
static void t_put_parked(void **state)
{
    client a;
    static unsigned char buf[sizeof(ss__req_put) + 1000];
    ss__req_put r = { .id = id_of(61), .node = -1, .size = 1000 };

    (void)state;
    close_store();
    open_store("16M", false);
    connect_client(&a);
    create_sealed(&a, 60, 14 * BIG, true);
    memcpy(buf, &r, sizeof(r));
    memset(buf + sizeof(r), 7, 1000);
    uint32_t rq = request(&a, SS_MSG_PUT, buf, sizeof(buf));
    no_reply(&a);
    assert_int_equal(S->park.nparked, 1);
    assert_int_equal(S->park.cq_head->type, SS_PK_PUT);
    assert_true(S->park.cq_head->bytes >= sizeof(buf));

    assert_int_equal(reply_to(&a, send_id(&a, SS_MSG_DELETE, 60), SS_MSG_DELETE, NULL), 0);
    assert_int_equal(reply_to(&a, rq, SS_MSG_PUT, NULL), 0);
    int64_t e = entry_of(61);
    assert_true(e >= 0);
    assert_int_equal(state_of((uint32_t)e), SS_IX_SEALED);
    assert_int_equal(obj((uint32_t)e)->refs, 0);
    assert_int_equal(S->tab.lru_head, (uint32_t)e + 1);
    assert_int_equal(S->park.nparked, 0);
    assert_int_equal(S->park.parked_bytes, 0);
    disconnect(&a);
}

/* A GET of two ids, one sealed (held in memory meanwhile) and one not yet:
 * woken by the second's seal, off the timer heap, both found. */
static void t_get_partial(void **state)
{
    client a, b;
    reply r;
    unsigned char m[sizeof(ss__req_get) + 2 * sizeof(ss_id)];
    ss__req_get g = { .n = 2, .timeout_ms = 60000 };
    ss_id ids[2] = { id_of(70), id_of(71) };

    (void)state;
    connect_client(&a);
    connect_client(&b);
    assert_int_equal(put(&a, 70, 64), 0);
    memcpy(m, &g, sizeof(g));
    memcpy(m + sizeof(g), ids, sizeof(ids));
    uint32_t rq = request(&b, SS_MSG_GET, m, sizeof(m));
    no_reply(&b);
    ss__parked *pk = b.c->parked;
    assert_non_null(pk);
    assert_int_equal(pk->missing, 1);
    assert_int_equal(pk->w[0].kind, SS_WN_HOLD);
    assert_int_equal(pk->w[1].kind, SS_WN_WAIT);
    assert_int_equal(pk->heap_pos, 0);
    assert_true(ss__park_id_held(S, &ids[0]));

    assert_int_equal(put(&a, 71, 64), 0);
    assert_int_equal(reply_to(&b, rq, SS_MSG_GET, &r), 2);
    assert_int_equal(S->park.heap_len, 0);
    assert_false(ss__park_id_held(S, &ids[0]));
    assert_int_equal(obj((uint32_t)entry_of(70))->refs, 1);
    assert_int_equal(obj((uint32_t)entry_of(71))->refs, 1);
    disconnect(&b); /* its references go with it */
    assert_int_equal(obj((uint32_t)entry_of(70))->refs, 0);
    assert_int_equal(obj((uint32_t)entry_of(71))->refs, 0);
    disconnect(&a);
}

/* A client goes away holding references, unsealed objects (one with the
 * seal worker), and parked GET and CREATE requests: everything it held is
 * released, the object being sealed is freed when the worker is done, and
 * the connection itself then. */
/* The copy engine the store opens: SEALSTORE_COPY_THREADS workers (at
 * most the online CPUs), its eventfd on the loop (a job's handler runs
 * when it fires), and a job still queued at close is run and handled
 * then, once. */
static unsigned copies_done;

static void copy_done(void *arg, ss__copyjob *j)
{
    (void)arg;
    (void)j;
    copies_done++;
}

static void t_copy_engine(void **state)
{
    static unsigned char src[3 << 20], dst[3 << 20];
    struct iovec v = { src, sizeof(src) };
    ss__copyjob j = { .pidfd = -1, .src = &v, .nsrc = 1, .dst = dst, .size = sizeof(dst),
                      .done = copy_done };
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);

    (void)state;
    memset(src, 7, sizeof(src));
    for (int round = 0; round < 3; round++) {
        const char *n = round == 0 ? "2" : round == 1 ? "0" : "64";
        unsigned want = round == 0 ? (cpus < 2 ? (unsigned)cpus : 2u)
                        : round == 1 ? 0u : (unsigned)(cpus < 64 ? cpus : 64);

        close_store();
        t_assert_ok(ss_option_set(SS_OPT_COPY_THREADS, n));
        open_store("64M", false);
        assert_non_null(S->copy.engine);
        assert_int_equal(ss__copy_threads(S->copy.engine), want);
        assert_int_equal(S->copy.ev.fd, ss__copy_fd(S->copy.engine));

        copies_done = 0;
        memset(dst, 0, sizeof(dst));
        ss__copy_submit(S->copy.engine, &j);
        struct pollfd p = { .fd = S->copy.ev.fd, .events = POLLIN };
        assert_int_equal(poll(&p, 1, 30000), 1);
        while (copies_done == 0) { /* the eventfd fires per job: this one */
            fire(&S->copy.ev);
        }
        assert_int_equal(copies_done, 1);
        t_assert_ok(j.rc);
        assert_memory_equal(dst, src, sizeof(dst));

        /* queued at close: run and handled by the close, once */
        copies_done = 0;
        memset(dst, 0, sizeof(dst));
        ss__copy_submit(S->copy.engine, &j);
        close_store();
        assert_int_equal(copies_done, 1);
        t_assert_ok(j.rc);
        assert_memory_equal(dst, src, sizeof(dst));
        open_store("64M", false);
    }
    t_assert_ok(ss_option_set(SS_OPT_COPY_THREADS, "8"));
}

/* The pid a pidfd names (its fdinfo), or -1. */
static pid_t pidfd_pid(int pidfd)
{
    char path[64], buf[512], *p;

    snprintf(path, sizeof(path), "/proc/self/fdinfo/%d", pidfd);
    if (ss__sys_read_file(path, buf, sizeof(buf)) < 0 || !(p = strstr(buf, "\nPid:")))
        return -1;
    return (pid_t)strtol(p + 5, NULL, 10);
}

/* A connection holds a pidfd of its peer (SO_PEERPIDFD, else pidfd_open
 * checked against the socket), closed when the connection is freed; the
 * fallback keeps none when the socket names another pid or its peer hung
 * up. */
static void t_conn_pidfd(void **state)
{
    client a;
    int sv[2], n0;

    (void)state;
    T_SKIP_IF(!t_remote_reads_work(), "pidfd", "no process_vm_readv, pidfd_open or pidfd_send_signal here (ENOSYS)");
    for (int fallback = 0; fallback < 2; fallback++) {
        ss__g_conn_no_peerpidfd = fallback;
        n0 = t_count_fds();
        connect_client(&a);
        assert_true(a.c->pidfd >= 0);
        assert_int_equal(pidfd_pid(a.c->pidfd), getpid());
        disconnect(&a);
        assert_int_equal(t_count_fds(), n0); /* the pidfd went with it */
    }
    /* fallback: SO_PEERCRED says another pid than the one given */
    assert_int_equal(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv), 0);
    a.c = ss__conn_new(S, sv[0], getppid(), getuid());
    assert_non_null(a.c);
    assert_int_equal(a.c->pidfd, -1);
    a.peer = sv[1];
    disconnect(&a);
    /* fallback: the peer is gone (its end closed) */
    assert_int_equal(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv), 0);
    close(sv[1]);
    a.c = ss__conn_new(S, sv[0], getpid(), getuid());
    assert_non_null(a.c);
    assert_int_equal(a.c->pidfd, -1);
    a.peer = open("/dev/null", O_RDONLY | O_CLOEXEC);
    disconnect(&a);
    ss__g_conn_no_peerpidfd = 0;
}

static void t_conn_gone(void **state)
{
    client a, b;

    (void)state;
    close_store();
    open_store("16M", false);
    connect_client(&a);
    connect_client(&b);
    assert_int_equal(put(&b, 10, 300), 0); /* sealed: a will hold it */
    create_sealed(&b, 11, 8 * BIG, true);
    uint32_t e10 = (uint32_t)entry_of(10), e11 = (uint32_t)entry_of(11);
    assert_int_equal(reply_to(&a, send_get(&a, 10, 0), SS_MSG_GET, NULL), 1);
    assert_int_equal(reply_to(&a, send_get(&a, 11, 0), SS_MSG_GET, NULL), 1);
    assert_int_equal(reply_to(&a, send_create(&a, 12, 200), SS_MSG_CREATE, NULL), 0);
    assert_int_equal(reply_to(&a, send_create(&a, 13, BIG), SS_MSG_CREATE, NULL), 0);
    assert_int_equal(reply_to(&a, send_create(&a, 14, BIG), SS_MSG_CREATE, NULL), 0);
    uint32_t e12 = (uint32_t)entry_of(12), e13 = (uint32_t)entry_of(13);
    uint32_t e14 = (uint32_t)entry_of(14);
    send_seal(&a, 13, 0, false); /* with the worker */
    send_seal(&a, 14, 0, false); /* queued behind it */
    assert_ptr_not_equal(a.c->seal_queue, NULL);
    send_get(&a, 15, -1);       /* parked, no deadline */
    send_get(&a, 16, 60000);    /* parked, in the heap */
    send_create(&a, 17, 8 * BIG); /* does not fit: parked */
    assert_int_equal(a.c->nparked, 3);
    assert_int_equal(S->park.nparked, 3);
    assert_int_equal(obj(e10)->refs, 1);
    assert_int_equal(S->tab.nobjects, 5);

    ss__conn *dead = a.c;
    disconnect(&a);
    assert_int_equal(S->conn.nclients, 1);
    assert_int_equal(S->park.nparked, 0);
    assert_int_equal(S->park.parked_bytes, 0);
    assert_int_equal(S->park.heap_len, 0);
    assert_null(S->park.cq_head);
    assert_int_equal(obj(e10)->refs, 0);
    assert_true(obj(e10)->flags & SS_OBJF_ON_LRU);
    assert_int_equal(obj(e11)->refs, 0);
    assert_true(obj(e11)->flags & SS_OBJF_ON_LRU);
    assert_int_equal(state_of(e12), SS_IX_FREE);
    assert_int_equal(state_of(e14), SS_IX_FREE); /* its seal never reached the worker */
    assert_int_equal(state_of(e13), SS_IX_CREATED); /* the worker has it */
    assert_true(obj(e13)->flags & SS_OBJF_ORPHAN);
    assert_true(dead->dead && dead->seal_busy);

    seal_completions(); /* frees e13, then the connection */
    assert_int_equal(state_of(e13), SS_IX_FREE);
    assert_int_equal(S->tab.nobjects, 2);
    assert_int_equal(S->tab.nsealed, 2);
    disconnect(&b);
}

/* Creator-bound objects (SS_CREATEF_CREATOR) when their creator goes:
 * sealed ones deleted (one held by another client unchained, freed at its
 * release), an unsealed one aborted, one whose seal the worker has aborted
 * at its completion (the validator allows that one to outlive its
 * creator), one deleted and created again by another client left alone;
 * the validator catches a bound object its creator does not name. */
static void t_bound_conn_gone(void **state)
{
    client a, b;

    (void)state; /* the 64 MiB store of setup() */
    connect_client(&a);
    connect_client(&b);
    assert_int_equal(put_flags(&a, 20, 300, SS_CREATEF_CREATOR), 0);
    assert_int_equal(put_flags(&a, 21, 300, SS_CREATEF_CREATOR), 0);
    assert_int_equal(put(&a, 22, 300), 0);
    uint32_t rq = send_create_flags(&a, 23, 2 * BIG, SS_CREATEF_CREATOR);
    assert_int_equal(reply_to(&a, rq, SS_MSG_CREATE, NULL), 0);
    rq = send_seal(&a, 23, 0, true);
    seal_completions();
    assert_int_equal(reply_to(&a, rq, SS_MSG_SEAL, NULL), 0);
    rq = send_create_flags(&a, 24, 100, SS_CREATEF_CREATOR); /* never sealed */
    assert_int_equal(reply_to(&a, rq, SS_MSG_CREATE, NULL), 0);
    rq = send_create_flags(&a, 25, BIG, SS_CREATEF_CREATOR);
    assert_int_equal(reply_to(&a, rq, SS_MSG_CREATE, NULL), 0);
    send_seal(&a, 25, 0, false); /* with the worker when a goes */
    uint32_t e20 = (uint32_t)entry_of(20), e22 = (uint32_t)entry_of(22);
    uint32_t e23 = (uint32_t)entry_of(23), e24 = (uint32_t)entry_of(24);
    uint32_t e25 = (uint32_t)entry_of(25);
    assert_true(obj(e20)->flags & SS_OBJF_BOUND);
    assert_false(obj(e22)->flags & SS_OBJF_BOUND);
    /* 21 deleted by b and created again by b: not a's any more */
    assert_int_equal(reply_to(&b, send_id(&b, SS_MSG_DELETE, 21), SS_MSG_DELETE, NULL), 0);
    assert_int_equal(put(&b, 21, 10), 0);
    uint32_t e21 = (uint32_t)entry_of(21);
    assert_int_equal(reply_to(&b, send_get(&b, 23, 0), SS_MSG_GET, NULL), 1);
    valid();
    obj(e20)->flags &= (uint8_t)~SS_OBJF_BOUND; /* its creator names it, it says not bound */
    assert_int_equal(ss__store_validate(S), -SS_E_CORRUPT);
    obj(e20)->flags |= SS_OBJF_BOUND;
    valid();

    uint64_t deletes = S->cnt.c_deletes;
    disconnect(&a); /* validates */
    assert_int_equal(S->cnt.c_deletes, deletes + 2);
    assert_int_equal(state_of(e20), SS_IX_FREE);
    assert_int_equal(state_of(e21), SS_IX_SEALED);
    assert_int_equal(state_of(e22), SS_IX_SEALED);
    assert_int_equal(state_of(e23), SS_IX_DELETED); /* b holds it */
    assert_int_equal(entry_of(23), -ENOENT);
    assert_int_equal(state_of(e24), SS_IX_FREE);
    assert_int_equal(state_of(e25), SS_IX_CREATED); /* orphaned, with the worker */
    seal_completions();
    assert_int_equal(state_of(e25), SS_IX_FREE);
    valid();
    send_release(&b, 23);
    assert_int_equal(reply_to(&b, send_id(&b, SS_MSG_CONTAINS, 22), SS_MSG_CONTAINS, NULL), 1);
    assert_int_equal(state_of(e23), SS_IX_FREE);
    assert_int_equal(S->tab.nobjects, 2);
    valid();
    disconnect(&b);
}

/* The LRU orders unreferenced sealed objects by their last release. */
static void t_lru_order(void **state)
{
    client a;
    uint32_t l[8], e[3];

    (void)state;
    connect_client(&a);
    for (unsigned k = 0; k < 3; k++) {
        assert_int_equal(put(&a, 20 + k, 100), 0);
        e[k] = (uint32_t)entry_of(20 + k);
    }
    assert_int_equal(lru(l, 8), 3);
    assert_int_equal(l[0], e[0]);
    assert_int_equal(l[1], e[1]);
    assert_int_equal(l[2], e[2]);

    assert_int_equal(reply_to(&a, send_get(&a, 20, 0), SS_MSG_GET, NULL), 1);
    assert_int_equal(lru(l, 8), 2); /* held: off the LRU */
    assert_int_equal(l[0], e[1]);
    assert_int_equal(l[1], e[2]);
    send_release(&a, 20);
    assert_int_equal(lru(l, 8), 3);
    assert_int_equal(l[0], e[1]);
    assert_int_equal(l[1], e[2]);
    assert_int_equal(l[2], e[0]);
    assert_int_equal(S->tab.lru_tail, e[0] + 1);
    disconnect(&a);
}

/* With SEALSTORE_EVICT on, a create that does not fit drops the least
 * recently used unreferenced object, never a held one. */
static void t_evict(void **state)
{
    client a, b;
    uint32_t l[8];

    (void)state;
    close_store();
    open_store("16M", true);
    connect_client(&a);
    connect_client(&b);
    for (unsigned k = 0; k < 3; k++)
        create_sealed(&a, 30 + k, 5 * BIG, true);
    uint32_t e30 = (uint32_t)entry_of(30), e32 = (uint32_t)entry_of(32);
    /* 30 used again: 31 is now the least recently used; 32 is held */
    assert_int_equal(reply_to(&b, send_get(&b, 30, 0), SS_MSG_GET, NULL), 1);
    send_release(&b, 30);
    assert_int_equal(reply_to(&b, send_get(&b, 32, 0), SS_MSG_GET, NULL), 1);
    assert_int_equal(lru(l, 8), 2);

    create_sealed(&a, 33, 4 * BIG, true);
    assert_int_equal(S->cnt.c_evictions, 1);
    assert_int_equal(entry_of(31), -ENOENT);
    assert_int_equal(entry_of(30), (int64_t)e30);
    assert_int_equal(entry_of(32), (int64_t)e32);
    assert_int_equal(S->tab.nobjects, 3);
    assert_int_equal(S->tab.object_bytes, 14 * BIG);

    /* the LRU is now 30, 33 (32 is held): the next create evicts 30 */
    create_sealed(&a, 34, 5 * BIG, true);
    assert_int_equal(S->cnt.c_evictions, 2);
    assert_int_equal(entry_of(30), -ENOENT);
    assert_int_equal(entry_of(32), (int64_t)e32);
    assert_int_equal(obj(e32)->refs, 1);
    disconnect(&a);
    disconnect(&b);
}

/* One loop turn for the seal worker and the spill engine: wait (at most
 * 100 ms) for either to report, run the handlers the loop would run for
 * them, then the loop's end-of-turn hooks (store.c's table: timers,
 * retries, spilling ahead, reaping, ...) in their order. */
static void turn(void)
{
    struct pollfd p[4] = { { .fd = S->seal.ev.fd, .events = POLLIN },
                           { .fd = S->disk.sp ? S->disk.ev.fd : -1, .events = POLLIN },
                           { .fd = S->amake.ev.fd, .events = POLLIN },
                           { .fd = S->copy.registered ? S->copy.ev.fd : -1, .events = POLLIN } };

    assert_true(poll(p, 4, 100) >= 0);
    if (p[3].revents & POLLIN)
        fire(&S->copy.ev);
    if (p[0].revents & POLLIN)
        fire(&S->seal.ev);
    if (p[1].revents & POLLIN)
        fire(&S->disk.ev);
    if (p[2].revents & POLLIN)
        fire(&S->amake.ev);
    uint64_t now = ss__now_ns();
    for (ss__loop_hook *h = S->loop.hooks; h; h = h->next)
        if (h->turn)
            h->turn(h->arg, now);
    valid();
}

/* Turns until cond holds (evaluated once per turn: it may consume a
 * reply), at most a minute. */
#define TURNS_UNTIL(cond)                                                     \
    do {                                                                      \
        bool ok_ = false;                                                     \
        for (int n_ = 0; n_ < 600 && !(ok_ = (cond)); n_++)                   \
            turn();                                                           \
        assert_true(ok_);                                                     \
    } while (0)

/* A PUTV of nb bytes at buf in nio pieces from cl (which names this
 * process): the reply's status. */
static int32_t putv(client *cl, unsigned k, const unsigned char *buf, uint64_t nb, unsigned nio)
{
    static unsigned char body[sizeof(ss__req_putv) + 8 * sizeof(ss__putv_iov)];
    ss__req_putv r = { .put = { .id = id_of(k), .node = -1, .size = nb }, .niov = nio };
    ss__putv_iov *v = (ss__putv_iov *)(body + sizeof(r));
    uint64_t piece = nb / nio;

    assert_true(nio >= 1 && nio <= 8);
    memcpy(body, &r, sizeof(r));
    for (unsigned i = 0; i < nio; i++)
        v[i] = (ss__putv_iov){ (uint64_t)(uintptr_t)(buf + i * piece),
                               i == nio - 1 ? nb - i * piece : piece };
    uint32_t rq = request(cl, SS_MSG_PUTV, body, sizeof(r) + nio * sizeof(*v));
    static reply rp;
    /* above 1 MiB the copy engine copies: its completion answers */
    TURNS_UNTIL(try_reply(cl, &rp));
    assert_int_equal(rp.h.type, SS_MSG_PUTV);
    assert_int_equal(rp.h.req_id, rq);
    return rp.h.status;
}

/* n bytes of pattern `seed` for PUTVs to read (skips the test where this
 * kernel cannot read another process). */
static unsigned char *putv_buffer(size_t n, unsigned seed)
{
    unsigned char *buf;

    T_SKIP_IF(!t_remote_reads_work(), "pidfd", "no process_vm_readv, pidfd_open or pidfd_send_signal here (ENOSYS)");
    buf = malloc(n);
    assert_non_null(buf);
    t_fill(buf, n, seed);
    return buf;
}

/* PUTV: the store reads the bytes from the client into an arena object
 * (kind ARENA, bytes exact); GETs send the arena's fd while the client
 * holds nothing in it, not while it does; a buffer the client does not
 * have is -EFAULT with nothing left behind; a client whose process is
 * gone is -EPERM; once an arena is in use, the next one is made ahead on
 * the arena thread and adopted as idle. */
static void t_putv_arena(void **state)
{
    enum { N = 3 * BIG + 4096 };
    unsigned char *buf;
    client a, b;
    reply r;
    (void)state;

    buf = putv_buffer(N, 5);
    connect_client(&a);
    connect_client(&b);
    /* a kernel that cannot read another process (-ENOSYS) makes it -EPERM:
     * the library puts another way */
    ss__g_copy_fail = -ENOSYS;
    assert_int_equal(putv(&a, 39, buf, N, 3), -EPERM);
    assert_int_equal(entry_of(39), -ENOENT);
    assert_int_equal(putv(&a, 40, buf, N, 3), 0);
    int64_t e = entry_of(40);
    assert_true(e >= 0);
    const ss__index_entry *en = ss__ent(S, (uint32_t)e);
    assert_int_equal(SS_IX_KIND(en->info), SS_SEG_ARENA);
    assert_int_equal(SS_IX_STATE(en->info), SS_IX_SEALED);
    assert_int_equal(obj((uint32_t)e)->refs, 0);
    const ss__seg *g = ss__arena_segment(S->mem.arenas, obj((uint32_t)e)->small_slot);
    assert_non_null(g);
    assert_true(t_check((const char *)g->map + (uint64_t)en->data_off64 * SS_OBJ_ALIGN, N, 5));
    assert_int_equal(S->cnt.c_remote_puts, 1);
    assert_false(S->mem.ptrace_cap && getuid() != 0); /* this test's client is root or unprivileged */
    /* up to the small limit: a small slot, read the same way */
    assert_int_equal(putv(&a, 44, buf, 1000, 2), 0);
    int64_t e44 = entry_of(44);
    assert_true(e44 >= 0);
    const ss__index_entry *en44 = ss__ent(S, (uint32_t)e44);
    assert_int_equal(SS_IX_KIND(en44->info), SS_SEG_SMALL);
    const ss__seg *g44 = ss__salloc_segment(S->mem.salloc, obj((uint32_t)e44)->small_slot);
    assert_true(t_check((const char *)g44->map + (uint64_t)en44->data_off64 * SS_OBJ_ALIGN, 1000, 5));
    /* b's GETs: the fd once while b holds something in the arena */
    uint32_t rq = send_get(&b, 40, 0);
    assert_int_equal(reply_to(&b, rq, SS_MSG_GET, &r), 1);
    assert_int_equal(r.nfds, 1);
    rq = send_get(&b, 40, 0);
    assert_int_equal(reply_to(&b, rq, SS_MSG_GET, &r), 1);
    assert_int_equal(r.nfds, 0);
    send_release(&b, 40);
    send_release(&b, 40);
    rq = send_get(&b, 40, 0);
    assert_int_equal(reply_to(&b, rq, SS_MSG_GET, &r), 1);
    assert_int_equal(r.nfds, 1); /* it may have unmapped the arena since */
    send_release(&b, 40);
    /* the next arena, made ahead and adopted idle */
    TURNS_UNTIL(S->amake.made == 1);
    ss__arena_stats as;
    ss__arena_stats_get(S->mem.arenas, &as);
    assert_int_equal(as.idle_arenas, 1);
    /* a buffer the client does not have: nothing stored, nothing held */
    uint64_t live = as.live_bytes;
    unsigned char *hole = mmap(NULL, 8192, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    assert_true(hole != MAP_FAILED);
    assert_int_equal(munmap(hole, 8192), 0);
    assert_int_equal(putv(&a, 41, hole, 2 * BIG, 1), -EFAULT);
    assert_int_equal(entry_of(41), -ENOENT);
    ss__arena_stats_get(S->mem.arenas, &as);
    assert_int_equal(as.live_bytes, live);
    assert_int_equal(as.windows, 0);
    /* a client whose process is gone (its pid reaped) */
    pid_t dead = fork();
    assert_true(dead >= 0);
    if (dead == 0)
        _exit(0);
    assert_int_equal(waitpid(dead, NULL, 0), dead);
    pid_t was = a.c->pid;
    a.c->pid = dead;
    assert_int_equal(putv(&a, 42, buf, N, 1), -EPERM);
    a.c->pid = was;
    assert_int_equal(entry_of(42), -ENOENT);
    /* the client goes while the engine copies: the copy's completion
     * frees the object and then the connection; nothing stays */
    enum { BIGPUT = 24u << 20 };
    unsigned char *big = malloc(BIGPUT);
    assert_non_null(big);
    memset(big, 7, BIGPUT);
    client d;
    connect_client(&d);
    ss__req_putv pr = { .put = { .id = id_of(43), .node = -1, .size = BIGPUT }, .niov = 1 };
    ss__putv_iov v = { (uint64_t)(uintptr_t)big, BIGPUT };
    unsigned char body[sizeof(pr) + sizeof(v)];
    memcpy(body, &pr, sizeof(pr));
    memcpy(body + sizeof(pr), &v, sizeof(v));
    (void)request(&d, SS_MSG_PUTV, body, sizeof(body));
    if (ss__copy_threads(S->copy.engine) > 0) {
        int64_t e43 = entry_of(43);
        assert_true(e43 >= 0 && (obj((uint32_t)e43)->flags2 & SS_OBJF2_COPYING));
        assert_int_equal(d.c->copies, 1);
    }
    disconnect(&d);
    TURNS_UNTIL(entry_of(43) == -ENOENT);
    ss__arena_stats_get(S->mem.arenas, &as);
    assert_int_equal(as.live_bytes, live);
    assert_int_equal(as.windows, 0);
    free(big);
    disconnect(&a);
    disconnect(&b);
    free(buf);
}

/*
 * An arena object's answer goes before its write window closes (PUTV and
 * staged SEAL: window_close_at in store_req.c): when the answer is read,
 * the object is SEALED and, once the loop is back, no window is open; an
 * answer that cannot be sent (the client's end closed) leaves the object
 * published and its window closed, and one bound to its creator is then
 * deleted with the connection, its arena place freed.
 */
static void putv_closed_peer(unsigned k, const unsigned char *buf, uint64_t nb, uint32_t flags)
{
    client d;
    ss__req_putv pr = { .put = { .id = id_of(k), .node = -1, .size = nb, .flags = flags },
                        .niov = 1 };
    ss__putv_iov v = { (uint64_t)(uintptr_t)buf, nb };
    unsigned char body[sizeof(pr) + sizeof(v)];
    uint64_t puts = S->cnt.c_remote_puts;

    connect_client(&d);
    memcpy(body, &pr, sizeof(pr));
    memcpy(body + sizeof(pr), &v, sizeof(v));
    (void)request(&d, SS_MSG_PUTV, body, sizeof(body));
    close(d.peer); /* the answer's send fails: the store closes d */
    TURNS_UNTIL(S->cnt.c_remote_puts == puts + 1);
    ss__conn_reap(S);
    valid();
}

static void t_answer_before_window_close(void **state)
{
    enum { N = 2 * BIG + 4096 };
    unsigned char *buf;
    ss__arena_stats as;
    client a;
    reply r;
    (void)state;

    buf = putv_buffer(N, 8);
    connect_client(&a);
    /* a PUTV: SEALED when answered, its window closed after */
    assert_int_equal(putv(&a, 60, buf, N, 2), 0);
    int64_t e = entry_of(60);
    assert_true(e >= 0);
    assert_int_equal(SS_IX_STATE(ss__ent(S, (uint32_t)e)->info), SS_IX_SEALED);
    ss__arena_stats_get(S->mem.arenas, &as);
    assert_int_equal(as.windows, 0);
    uint64_t live = as.live_bytes;

    /* answers that cannot be sent: unbound, the object stays */
    putv_closed_peer(61, buf, N, 0);
    e = entry_of(61);
    assert_true(e >= 0);
    assert_int_equal(SS_IX_STATE(ss__ent(S, (uint32_t)e)->info), SS_IX_SEALED);
    ss__arena_stats_get(S->mem.arenas, &as);
    assert_int_equal(as.windows, 0);
    assert_int_equal(as.live_bytes, live + N);
    /* bound to its creator: deleted with the connection, place freed */
    putv_closed_peer(62, buf, N, SS_CREATEF_CREATOR);
    assert_int_equal(entry_of(62), -ENOENT);
    ss__arena_stats_get(S->mem.arenas, &as);
    assert_int_equal(as.windows, 0);
    assert_int_equal(as.live_bytes, live + N);

    /* staged creates (copy-on-seal; this store writes large creates in
     * place unless told): the SEAL's answer, then the window */
    S->mem.stage_limit = 8 * BIG;
    S->mem.stage_quota = 2 * S->mem.stage_limit;
    for (unsigned bound = 0; bound < 2; bound++) {
        client d;
        unsigned k = 63 + bound;
        connect_client(&d);
        uint32_t rq = send_create_flags(&d, k, N, bound ? SS_CREATEF_CREATOR : 0);
        assert_int_equal(reply_to(&d, rq, SS_MSG_CREATE, &r), 0);
        assert_int_equal(((const ss__rep_create *)r.body)->data.kind, SS_SEG_STAGE);
        if (!bound) { /* answered: SEALED, window closed */
            static reply rp;
            rq = send_seal(&d, k, 0, true);
            TURNS_UNTIL(try_reply(&d, &rp)); /* above 1 MiB the copy engine copies */
            assert_int_equal(rp.h.req_id, rq);
            assert_int_equal(rp.h.status, 0);
            disconnect(&d);
        } else { /* the answer cannot be sent: deleted with d */
            close(d.peer);
            (void)send_seal(&d, k, 0, false);
            TURNS_UNTIL(entry_of(k) == -ENOENT);
            ss__conn_reap(S);
            valid();
        }
        ss__arena_stats_get(S->mem.arenas, &as);
        assert_int_equal(as.windows, 0);
    }
    e = entry_of(63);
    assert_true(e >= 0);
    assert_int_equal(SS_IX_STATE(ss__ent(S, (uint32_t)e)->info), SS_IX_SEALED);
    assert_int_equal(entry_of(64), -ENOENT);
    ss__arena_stats_get(S->mem.arenas, &as);
    assert_int_equal(as.live_bytes, live + 2 * (uint64_t)N);
    disconnect(&a);
    free(buf);
}

/* Write n bytes of pattern seed into the staging area lent to cl for
 * entry e (as the client would through its mapping). */
static void stage_fill(client *cl, uint32_t e, size_t n, unsigned seed)
{
    const ss__stage *g = ss__stage_of(S, cl->c, e);
    unsigned char *buf = malloc(n);

    assert_non_null(g);
    assert_non_null(buf);
    t_fill(buf, n, seed);
    assert_int_equal(pwrite(g->seg.fd, buf, n, 0), (ssize_t)n);
    free(buf);
}

/*
 * A staged SEAL above 1 MiB (SS_STAGE_LOOP_MAX) is copied by the copy
 * engine, not the loop: the object is STAGING meanwhile (a second SEAL and
 * an ABORT are -EBUSY), and the copy's completion publishes the area's
 * bytes and answers. A creator that goes while its copy runs leaves
 * nothing: the object, then its staging areas and the connection go when
 * the copy ends (the worker reads the area until then).
 */
static void t_staged_engine(void **state)
{
    enum { N = 3 * BIG + 4096 };
    bool engine = ss__copy_threads(S->copy.engine) > 0;
    ss__arena_stats as;
    client a, d;
    reply r;
    (void)state;

    S->mem.stage_limit = 8 * BIG;
    S->mem.stage_quota = 2 * S->mem.stage_limit;
    connect_client(&a);
    uint32_t rq = send_create(&a, 70, N);
    assert_int_equal(reply_to(&a, rq, SS_MSG_CREATE, &r), 0);
    assert_int_equal(((const ss__rep_create *)r.body)->data.kind, SS_SEG_STAGE);
    int64_t e = entry_of(70);
    assert_true(e >= 0);
    stage_fill(&a, (uint32_t)e, N, 9);
    rq = send_seal(&a, 70, 0, false);
    if (engine) {
        assert_true(obj((uint32_t)e)->flags2 & SS_OBJF2_STAGING);
        assert_int_equal(a.c->copies, 1);
        uint32_t again = send_seal(&a, 70, 0, false);
        assert_int_equal(reply_to(&a, again, SS_MSG_SEAL, NULL), -EBUSY);
        uint32_t ab = send_id(&a, SS_MSG_ABORT, 70);
        assert_int_equal(reply_to(&a, ab, SS_MSG_ABORT, NULL), -EBUSY);
    }
    TURNS_UNTIL(try_reply(&a, &r));
    assert_int_equal(r.h.type, SS_MSG_SEAL);
    assert_int_equal(r.h.req_id, rq);
    assert_int_equal(r.h.status, 0);
    const ss__index_entry *en = ss__ent(S, (uint32_t)e);
    assert_int_equal(SS_IX_STATE(en->info), SS_IX_SEALED);
    assert_int_equal(SS_IX_KIND(en->info), SS_SEG_ARENA);
    const ss__seg *g = ss__arena_segment(S->mem.arenas, obj((uint32_t)e)->small_slot);
    assert_non_null(g);
    assert_true(t_check((const char *)g->map + (uint64_t)en->data_off64 * SS_OBJ_ALIGN, N, 9));
    ss__arena_stats_get(S->mem.arenas, &as);
    assert_int_equal(as.windows, 0);
    uint64_t live = as.live_bytes, staged = S->tab.stage_bytes;

    /* the creator goes while the engine copies */
    connect_client(&d);
    rq = send_create(&d, 71, N);
    assert_int_equal(reply_to(&d, rq, SS_MSG_CREATE, NULL), 0);
    int64_t e71 = entry_of(71);
    assert_true(e71 >= 0);
    stage_fill(&d, (uint32_t)e71, N, 10);
    assert_true(S->tab.stage_bytes > staged);
    (void)send_seal(&d, 71, 0, false);
    if (engine)
        assert_true(obj((uint32_t)e71)->flags2 & SS_OBJF2_STAGING);
    disconnect(&d);
    TURNS_UNTIL(entry_of(71) == -ENOENT && S->tab.stage_bytes == staged);
    ss__arena_stats_get(S->mem.arenas, &as);
    assert_int_equal(as.windows, 0);
    assert_int_equal(as.live_bytes, live);
    disconnect(&a);
}

/* With spilling on and everything idle above the high-water mark (0):
 * objects spill (SPILLING, then SPILLED with a disk copy and no memory); a
 * GET parks on a restore and is answered by it; a DELETE of an object with
 * a disk copy parks until the engine says the copy is gone. */
static void t_spill_restore_delete(void **state)
{
    client a;
    reply r;
    char dir[256], path[256];

    (void)state;
    close_store();
    snprintf(dir, sizeof(dir), "%s/spill", t_tmpdir());
    snprintf(path, sizeof(path), "%s/spill.sock", t_tmpdir());
    t_assert_ok(ss_option_set(SS_OPT_SPILL_HIGH, "0"));
    t_assert_ok(ss_option_set(SS_OPT_SPILL_DIR, dir));
    t_assert_ok(ss_option_set(SS_OPT_EVICT, "off"));
    t_assert_ok(ss__store_open(&S, path, 0));
    t_assert_ok(ss_option_set(SS_OPT_SPILL_HIGH, "90%"));
    valid();
    T_SKIP_IF(!S->disk.sp, "uring", "the spill engine could not start here");
    TURNS_UNTIL(!S->disk.scanning);

    connect_client(&a);
    assert_int_equal(put(&a, 80, 2000), 0);
    create_sealed(&a, 81, BIG, true);
    uint32_t e80 = (uint32_t)entry_of(80), e81 = (uint32_t)entry_of(81);
    ss__disk_turn(S, ss__now_ns());
    valid();
    assert_true(S->disk.nspilling > 0);
    assert_true(obj(e81)->flags & SS_OBJF_SPILLING);
    assert_false(obj(e81)->flags & SS_OBJF_ON_LRU);
    TURNS_UNTIL(S->disk.nspilled == 2 && S->disk.nspilling == 0);
    for (uint32_t e = e80; e <= e81; e += e81 - e80) {
        assert_int_equal(state_of(e), SS_IX_SPILLED);
        assert_true(obj(e)->flags & SS_OBJF_NOMEM);
        assert_true(obj(e)->disk != 0);
        assert_int_equal(obj(e)->fd_ro, -1);
    }
    assert_int_equal(S->tab.nobjects, 2);
    assert_int_equal(S->tab.nsealed, 2);
    assert_int_equal(reply_to(&a, send_id(&a, SS_MSG_CONTAINS, 81), SS_MSG_CONTAINS, NULL), 1);

    uint32_t rq = send_get(&a, 81, -1);
    assert_int_equal(a.c->nparked, 1);
    assert_int_equal(a.c->parked->w[0].kind, SS_WN_RESTORE);
    assert_int_equal(a.c->parked->nrestore, 1);
    assert_true(obj(e81)->flags & SS_OBJF_RESTORING);
    TURNS_UNTIL(try_reply(&a, &r));
    assert_int_equal(r.h.req_id, rq);
    assert_int_equal(r.h.status, 1);
    assert_int_equal(state_of(e81), SS_IX_SEALED);
    assert_false(obj(e81)->flags & (SS_OBJF_NOMEM | SS_OBJF_RESTORING));
    assert_int_equal(obj(e81)->refs, 1);
    assert_int_equal(S->park.nparked, 0);

    rq = send_id(&a, SS_MSG_DELETE, 80);
    no_reply(&a); /* answered once the copy's removal is durable */
    assert_int_equal(a.c->nparked, 1);
    assert_int_equal(a.c->parked->type, SS_PK_DELETE);
    assert_int_equal(entry_of(80), -ENOENT); /* gone for everyone at once */
    TURNS_UNTIL(try_reply(&a, &r));
    assert_int_equal(r.h.req_id, rq);
    assert_int_equal(r.h.status, 0);
    assert_int_equal(S->park.nparked, 0);
    assert_int_equal(S->disk.nremovals, 0);
    assert_int_equal(state_of(e80), SS_IX_FREE);
    send_release(&a, 81);
    disconnect(&a);
}

/* ------------------------------------------------- the validator itself */

/* A store with a bit of everything: a held object, idle ones on the LRU, a
 * deleted one still referenced, a parked GET in the heap. */
static void busy_store(client *a, client *b)
{
    connect_client(a);
    connect_client(b);
    for (unsigned k = 40; k < 44; k++)
        assert_int_equal(put(a, k, 100 * k), 0);
    assert_int_equal(reply_to(b, send_get(b, 40, 0), SS_MSG_GET, NULL), 1);
    assert_int_equal(reply_to(b, send_get(b, 41, 0), SS_MSG_GET, NULL), 1);
    assert_int_equal(reply_to(a, send_id(a, SS_MSG_DELETE, 41), SS_MSG_DELETE, NULL), 0);
    send_get(b, 50, 60000);
    assert_int_equal(S->park.nparked, 1);
}

/* Each corruption is seen (and undone, so the store closes cleanly). */
/* INDEX: the bucket memfd and every chunk, read-only; a first past the
 * end gets the buckets alone; a client whose unread fds would pass its
 * budget is refused with -EAGAIN (and answered once it has read). */
static void t_index_request(void **state)
{
    client a;
    reply r;
    ss__req_index rq = { 0 };
    ss__rep_index rep;
    uint32_t id;
    (void)state;

    connect_client(&a);
    id = request(&a, SS_MSG_INDEX, &rq, sizeof(rq));
    assert_int_equal(reply_to(&a, id, SS_MSG_INDEX, &r), 0);
    memcpy(&rep, r.body, sizeof(rep));
    assert_int_equal(rep.nchunks, S->tab.ix.nchunks);
    assert_int_equal(rep.first, 0);
    assert_int_equal(rep.n, S->tab.ix.nchunks);
    assert_int_equal(r.nfds, 1 + rep.n);
    rq.first = 9;
    id = request(&a, SS_MSG_INDEX, &rq, sizeof(rq));
    assert_int_equal(reply_to(&a, id, SS_MSG_INDEX, &r), 0);
    memcpy(&rep, r.body, sizeof(rep));
    assert_int_equal(rep.first, rep.nchunks);
    assert_int_equal(rep.n, 0);
    assert_int_equal(r.nfds, 1);

    /* unread fds count against the client's budget */
    S->fdb.fd_client_max = 3; /* (at the cap the store would stop reading) */
    rq.first = 0;
    uint32_t id1 = request(&a, SS_MSG_INDEX, &rq, sizeof(rq)); /* 2 fds, unread */
    uint32_t id2 = request(&a, SS_MSG_INDEX, &rq, sizeof(rq)); /* 2 more: refused */
    assert_int_equal(reply_to(&a, id1, SS_MSG_INDEX, &r), 0);
    assert_int_equal(r.nfds, 2);
    assert_int_equal(reply_to(&a, id2, SS_MSG_INDEX, &r), -EAGAIN);
    assert_int_equal(r.nfds, 0);
    id = request(&a, SS_MSG_INDEX, &rq, sizeof(rq)); /* all read: answered */
    assert_int_equal(reply_to(&a, id, SS_MSG_INDEX, &r), 0);
    disconnect(&a);
}

static void t_validate_catches(void **state)
{
    client a, b;
    uint32_t l[8];

    (void)state;
    busy_store(&a, &b);
    uint32_t e40 = (uint32_t)entry_of(40);
    assert_int_equal(lru(l, 8), 2);

    obj(e40)->refs++; /* refs == sum over clients */
    assert_int_equal(ss__store_validate(S), -SS_E_CORRUPT);
    obj(e40)->refs--;
    valid();

    uint32_t head = S->tab.lru_head; /* the LRU holds every idle sealed object */
    S->tab.lru_head = obj(head - 1)->next;
    obj(S->tab.lru_head - 1)->prev = 0;
    assert_int_equal(ss__store_validate(S), -SS_E_CORRUPT);
    obj(S->tab.lru_head - 1)->prev = head;
    S->tab.lru_head = head;
    valid();

    S->park.nparked++; /* nparked == sum of the clients' */
    assert_int_equal(ss__store_validate(S), -SS_E_CORRUPT);
    S->park.nparked--;
    b.c->parked_bytes--; /* a client's parked bytes == its requests' */
    assert_int_equal(ss__store_validate(S), -SS_E_CORRUPT);
    b.c->parked_bytes++;
    valid();

    S->tab.object_bytes += 1;
    assert_int_equal(ss__store_validate(S), -SS_E_CORRUPT);
    S->tab.object_bytes -= 1;
    S->tab.nobjects--;
    assert_int_equal(ss__store_validate(S), -SS_E_CORRUPT);
    S->tab.nobjects++;
    valid();

    /* the deleted entry off its chain */
    uint32_t saved[1024];
    assert_true(S->tab.det_nbuckets <= 1024);
    memcpy(saved, S->tab.det_buckets, S->tab.det_nbuckets * sizeof(*saved));
    memset(S->tab.det_buckets, 0, S->tab.det_nbuckets * sizeof(*saved));
    assert_int_equal(ss__store_validate(S), -SS_E_CORRUPT);
    memcpy(S->tab.det_buckets, saved, S->tab.det_nbuckets * sizeof(*saved));
    valid();

    /* the parked GET's deadline moved without the heap knowing */
    ss__parked *pk = S->park.heap[0];
    uint64_t d = pk->deadline_ns;
    pk->deadline_ns = UINT64_MAX;
    assert_int_equal(ss__store_validate(S), -SS_E_CORRUPT);
    pk->deadline_ns = d;
    pk->w[0].kind = SS_WN_HOLD; /* missing == nodes not held */
    assert_int_equal(ss__store_validate(S), -SS_E_CORRUPT);
    pk->w[0].kind = SS_WN_WAIT;
    valid();

    /* an entry in use put back on the free list */
    assert_int_equal(put(&a, 45, 10), 0);
    uint32_t e45 = (uint32_t)entry_of(45), fh = S->tab.free_head;
    S->tab.free_head = e45 + 1;
    assert_int_equal(ss__store_validate(S), -SS_E_CORRUPT);
    S->tab.free_head = fh;
    valid();

    S->fdb.fds_unread++; /* fd budget sums */
    assert_int_equal(ss__store_validate(S), -SS_E_CORRUPT);
    S->fdb.fds_unread--;
    valid();
    disconnect(&a);
    disconnect(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(t_lifecycle_small, setup, teardown),
        cmocka_unit_test_setup_teardown(t_lifecycle_large, setup, teardown),
        cmocka_unit_test_setup_teardown(t_abort, setup, teardown),
        cmocka_unit_test_setup_teardown(t_delete_referenced, setup, teardown),
        cmocka_unit_test_setup_teardown(t_get_woken_by_seal, setup, teardown),
        cmocka_unit_test_setup_teardown(t_get_expires, setup, teardown),
        cmocka_unit_test_setup_teardown(t_create_parked, setup, teardown),
        cmocka_unit_test_setup_teardown(t_put_parked, setup, teardown),
        cmocka_unit_test_setup_teardown(t_get_partial, setup, teardown),
        cmocka_unit_test_setup_teardown(t_conn_gone, setup, teardown),
        cmocka_unit_test_setup_teardown(t_conn_pidfd, setup, teardown),
        cmocka_unit_test_setup_teardown(t_copy_engine, setup, teardown),
        cmocka_unit_test_setup_teardown(t_bound_conn_gone, setup, teardown),
        cmocka_unit_test_setup_teardown(t_lru_order, setup, teardown),
        cmocka_unit_test_setup_teardown(t_evict, setup, teardown),
        cmocka_unit_test_setup_teardown(t_index_request, setup, teardown),
        cmocka_unit_test_setup_teardown(t_spill_restore_delete, setup, teardown),
        cmocka_unit_test_setup_teardown(t_putv_arena, setup, teardown),
        cmocka_unit_test_setup_teardown(t_answer_before_window_close, setup, teardown),
        cmocka_unit_test_setup_teardown(t_staged_engine, setup, teardown),
        cmocka_unit_test_setup_teardown(t_validate_catches, setup, teardown),
    };

    return t_run(tests, NULL, NULL);
}
