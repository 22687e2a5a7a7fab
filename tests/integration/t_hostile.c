/* SPDX-License-Identifier: MIT */
/*
 * Hostile clients against an embedded store (ss__store_start_thread in this
 * process, so /proc/self/fd counts the store's fds and ASan/valgrind see
 * its code). Raw SOCK_SEQPACKET connections send what the library never
 * would: random bytes (seeded), truncated headers, wrong magic or version,
 * unknown types, absurd counts and lengths, lying len fields, fds in
 * requests, requests before HELLO, a HELLO of another protocol version,
 * batches of puts whose counts and lengths lie,
 * releases without references, seals and aborts of another client's
 * object, huge meta and sizes, a client that never reads its replies, a
 * subscriber that never reads its events, and a creator SIGKILLed with a
 * large object mapped.
 *
 * After every case: a well-behaved raw client (HELLO + CONTAINS) still gets
 * correct answers, and the store's fd count is back to its baseline.
 */
#include "config.h"

#include "t_helpers.h"

#include <fcntl.h>
#include <linux/falloc.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <unistd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>

#include "client_int.h"
#include "options.h"
#include "proto.h"
#include "store.h"
#include "store_int.h"

static ss__store *g_store;
static char g_path[108];
static int g_base_fds;
static const ss_id K_KNOWN = { { 'k', 'n', 'o', 'w', 'n' } };
static uint32_t g_req = 100;
static pid_t g_child; /* t_killed_creator's child, killed by teardown if a check fails */

/* ------------------------------------------------------------ raw wire */


/* On failure: what the fds are. */
static void dump_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    struct dirent *de;

    if (!d)
        return;
    while ((de = readdir(d))) {
        char p[300], l[256];
        ssize_t n;

        if (de->d_name[0] == '.')
            continue;
        snprintf(p, sizeof(p), "/proc/self/fd/%s", de->d_name);
        n = readlink(p, l, sizeof(l) - 1);
        l[n > 0 ? n : 0] = '\0';
        print_message("  fd %s -> %s\n", de->d_name, l);
    }
    closedir(d);
}

static int rconn_at(const char *path)
{
    struct sockaddr_un a = { .sun_family = AF_UNIX };
    int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    int big = 1 << 20;

    assert_true(fd >= 0);
    setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &big, sizeof(big));
    setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &big, sizeof(big));
    strcpy(a.sun_path, path);
    assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    return fd;
}

static int rconn(void)
{
    return rconn_at(g_path);
}

static void rsend_fds(int fd, const void *buf, size_t len, const int *fds, unsigned nfds)
{
    struct iovec iov = { .iov_base = (void *)buf, .iov_len = len };
    union {
        char b[CMSG_SPACE(sizeof(int) * 253)];
        struct cmsghdr al;
    } u;
    struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };

    if (nfds) {
        mh.msg_control = u.b;
        mh.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
        memset(u.b, 0, mh.msg_controllen);
        struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);
        cm->cmsg_level = SOL_SOCKET;
        cm->cmsg_type = SCM_RIGHTS;
        cm->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
        memcpy(CMSG_DATA(cm), fds, sizeof(int) * nfds);
    }
    ssize_t n = sendmsg(fd, &mh, MSG_NOSIGNAL);
    if (n != (ssize_t)len)
        fail_msg("sendmsg(%zu bytes, %u fds) = %zd (%s)", len, nfds, n, strerror(errno));
}

static void rsend(int fd, const void *buf, size_t len)
{
    rsend_fds(fd, buf, len, NULL, 0);
}

/* Receive one message: its length, 0 at EOF, -ETIMEDOUT. fds (if given)
 * receive the SCM_RIGHTS fds; otherwise they are closed. */
static ssize_t rrecv(int fd, void *buf, size_t cap, int *fds, unsigned *nfds, int timeout_ms)
{
    struct pollfd p = { .fd = fd, .events = POLLIN };
    union {
        char b[CMSG_SPACE(sizeof(int) * SS_PROTO_MAX_FDS)];
        struct cmsghdr al;
    } u;
    struct iovec iov = { .iov_base = buf, .iov_len = cap };
    struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.b,
                         .msg_controllen = sizeof(u.b) };
    unsigned got = 0;

    if (nfds)
        *nfds = 0;
    if (poll(&p, 1, timeout_ms) == 0)
        return -ETIMEDOUT;
    ssize_t n = recvmsg(fd, &mh, MSG_CMSG_CLOEXEC);
    if (n < 0)
        return errno == ECONNRESET ? 0 : -errno;
    for (struct cmsghdr *cm = CMSG_FIRSTHDR(&mh); cm; cm = CMSG_NXTHDR(&mh, cm)) {
        size_t k = (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        for (size_t j = 0; j < k; j++) {
            int f;
            memcpy(&f, CMSG_DATA(cm) + j * sizeof(int), sizeof(int));
            if (fds && got < SS_PROTO_MAX_FDS)
                fds[got++] = f;
            else
                close(f);
        }
    }
    if (nfds)
        *nfds = got;
    assert_false(mh.msg_flags & (MSG_TRUNC | MSG_CTRUNC));
    return n;
}

/* Build and send a request: header + body + tail; returns its req_id. */
static uint32_t rreq(int fd, uint16_t type, const void *body, size_t blen, const void *tail,
                     size_t tlen)
{
    static unsigned char buf[SS_PROTO_MAX_MSG];
    ss__msg_hdr *h = (ss__msg_hdr *)buf;
    uint32_t id = ++g_req;

    assert_true(sizeof(*h) + blen + tlen <= sizeof(buf));
    ss__proto_hdr(h, type, id, (uint32_t)(sizeof(*h) + blen + tlen), 0, 0);
    if (blen)
        memcpy(buf + sizeof(*h), body, blen);
    if (tlen)
        memcpy(buf + sizeof(*h) + blen, tail, tlen);
    rsend(fd, buf, sizeof(*h) + blen + tlen);
    return id;
}

/* Wait for the reply to req_id (skipping nothing: replies come in order
 * for these synchronous uses). Returns its status; body copied to out. */
static int32_t rreply(int fd, uint32_t req_id, uint16_t type, void *out, size_t outlen, int *fds,
                      unsigned *nfds)
{
    static unsigned char buf[SS_PROTO_MAX_MSG];
    unsigned n_fds = 0;
    ssize_t n = rrecv(fd, buf, sizeof(buf), fds, &n_fds, 5000);

    if (n <= 0)
        fail_msg("no reply to request %u (type %u): %zd", req_id, type, n);
    t_assert_ok(ss__proto_check_reply(buf, (size_t)n, n_fds));
    const ss__msg_hdr *h = (const void *)buf;
    assert_int_equal(h->req_id, req_id);
    assert_int_equal(h->type, type);
    if (out)
        memcpy(out, buf + sizeof(*h), outlen < (size_t)n - sizeof(*h) ? outlen : (size_t)n - sizeof(*h));
    if (nfds)
        *nfds = n_fds;
    else
        for (unsigned i = 0; i < n_fds; i++)
            close(fds[i]);
    return h->status;
}

static void rhello(int fd)
{
    ss__req_hello r = { .pid = (uint32_t)getpid() };
    ss__rep_hello rep;
    uint32_t id = rreq(fd, SS_MSG_HELLO, &r, sizeof(r), NULL, 0);

    assert_int_equal(rreply(fd, id, SS_MSG_HELLO, &rep, sizeof(rep), NULL, NULL), 0);
    assert_int_equal(rep.max_msg, SS_PROTO_MAX_MSG);
}

static int32_t rsimple(int fd, uint16_t type, const ss_id *id)
{
    ss__req_id r = { .id = *id };
    uint32_t rid = rreq(fd, type, &r, sizeof(r), NULL, 0);

    return rreply(fd, rid, type, NULL, 0, NULL, NULL);
}

/* The next thing on fd is EOF: the store closed the connection. */
static void expect_closed(int fd)
{
    unsigned char buf[256];

    for (int i = 0; i < 1000000; i++) {
        ssize_t n = rrecv(fd, buf, sizeof(buf), NULL, NULL, 5000);
        if (n == 0)
            return;
        if (n < 0)
            fail_msg("connection not closed by the store: %zd", n);
        /* events or replies queued before the close: skip */
    }
    fail_msg("connection not closed by the store");
}

static ss_stats rstats(int fd)
{
    ss_stats st;
    uint32_t id = rreq(fd, SS_MSG_STATS, NULL, 0, NULL, 0);

    assert_int_equal(rreply(fd, id, SS_MSG_STATS, &st, sizeof(st), NULL, NULL), 0);
    return st;
}

static uint64_t proto_errors(void)
{
    int fd = rconn();
    rhello(fd);
    uint64_t n = rstats(fd).protocol_errors;
    close(fd);
    return n;
}

/* A well-behaved client gets correct answers, and the store's fds return
 * to their baseline (connections the store closes go at its loop's pace,
 * so wait for it, boundedly). */
static void check_alive(void)
{
    ss_id unknown = { { 'n', 'o', 'p', 'e' } };
    int fd = rconn();

    rhello(fd);
    assert_int_equal(rsimple(fd, SS_MSG_CONTAINS, &K_KNOWN), 1);
    assert_int_equal(rsimple(fd, SS_MSG_CONTAINS, &unknown), 0);
    close(fd);
}

/* ... with `extra` fds more than the baseline (an idle arena the store
 * keeps: its memfd and its readers' fd). */
static void check_store_ok_plus(int extra)
{
    check_alive();
    int n = 0;
    for (int i = 0; i < 500; i++) {
        if ((n = t_count_fds()) == g_base_fds + extra)
            return;
        usleep(10000);
    }
    dump_fds();
    fail_msg("store fds: %d, baseline %d + %d", n, g_base_fds, extra);
}

static void check_store_ok(void)
{
    check_store_ok_plus(0);
}

static int put_small(int fd, const ss_id *id, const char *data, uint64_t size)
{
    ss__req_put r = { .id = *id, .node = -1, .size = size };
    uint32_t rid = rreq(fd, SS_MSG_PUT, &r, sizeof(r), data, size);

    return rreply(fd, rid, SS_MSG_PUT, NULL, 0, NULL, NULL);
}

/* ------------------------------------------------------------- setup */

static int group_setup(void **state)
{
    (void)state;
    snprintf(g_path, sizeof(g_path), "%s/h.sock", t_tmpdir());
    if (ss_option_set(SS_OPT_POOL_SIZE, "0") < 0 || ss_option_set(SS_OPT_CAPACITY, "256M") < 0 ||
        ss_option_set(SS_OPT_CREATE_TIMEOUT, "300") < 0 ||
        ss_option_set(SS_OPT_HUGEPAGES, "off") < 0 ||
        ss_option_set(SS_OPT_STAGE_MAX, "512K") < 0) /* 1 MiB creates: in place */
        return -1;
    if (ss__store_start_thread(&g_store, g_path, 0) < 0)
        return -1;
    /* the known object, and one get of it so the small segment's reader
     * fd exists before the baseline is taken */
    int fd = rconn();
    rhello(fd);
    if (put_small(fd, &K_KNOWN, "hello", 5) != 0)
        return -1;
    ss__req_get g = { .n = 1, .timeout_ms = 0 };
    uint32_t rid = rreq(fd, SS_MSG_GET, &g, sizeof(g), &K_KNOWN, sizeof(K_KNOWN));
    int fds[SS_PROTO_MAX_FDS];
    unsigned nfds;
    if (rreply(fd, rid, SS_MSG_GET, NULL, 0, fds, &nfds) != 1)
        return -1;
    for (unsigned i = 0; i < nfds; i++)
        close(fds[i]);
    close(fd); /* drops the get's reference with the connection */
    usleep(100000);
    g_base_fds = t_count_fds();
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    ss__store_stop_thread(g_store);
    return 0;
}

/* --------------------------------------------------------------- cases */

static void t_random_bytes(void **state)
{
    unsigned seed = 0x5ea1u;
    unsigned char buf[600];

    (void)state;
    for (int it = 0; it < 200; it++) {
        int fd = rconn();
        if (rand_r(&seed) % 4)
            rhello(fd);
        int nmsg = 1 + rand_r(&seed) % 3;
        for (int m = 0; m < nmsg; m++) {
            size_t len = 1 + rand_r(&seed) % sizeof(buf);
            for (size_t i = 0; i < len; i++)
                buf[i] = (unsigned char)rand_r(&seed);
            if (len >= sizeof(ss__msg_hdr) && rand_r(&seed) % 2) {
                /* plausible header over random contents */
                ss__msg_hdr h;
                memcpy(&h, buf, sizeof(h));
                h.magic = SS_PROTO_MAGIC;
                h.version = SS_PROTO_VERSION;
                h.type = (uint16_t)(rand_r(&seed) % (SS_MSG__COUNT + 2));
                h.len = rand_r(&seed) % 3 ? (uint32_t)len : (uint32_t)rand_r(&seed);
                h.flags = 0;
                h.status = 0;
                memcpy(buf, &h, sizeof(h));
            }
            if (send(fd, buf, len, MSG_NOSIGNAL | MSG_DONTWAIT) < 0)
                break; /* the store already closed us */
        }
        /* whatever comes back is a well-formed reply, or the end */
        for (;;) {
            unsigned char rb[SS_PROTO_MAX_MSG];
            int fds[SS_PROTO_MAX_FDS];
            unsigned nfds;
            ssize_t n = rrecv(fd, rb, sizeof(rb), fds, &nfds, 20);
            if (n <= 0)
                break;
            t_assert_ok(ss__proto_check_reply(rb, (size_t)n, nfds));
            for (unsigned i = 0; i < nfds; i++)
                close(fds[i]);
        }
        close(fd);
    }
    check_store_ok();
}

static void t_truncated_and_bad_headers(void **state)
{
    ss__msg_hdr h;
    uint64_t before = proto_errors();

    (void)state;
    /* truncated header (after HELLO): closed */
    int fd = rconn();
    rhello(fd);
    ss__proto_hdr(&h, SS_MSG_CONTAINS, 1, sizeof(h), 0, 0);
    rsend(fd, &h, 10);
    expect_closed(fd);
    close(fd);

    /* wrong magic: closed */
    fd = rconn();
    rhello(fd);
    ss__proto_hdr(&h, SS_MSG_STATS, 2, sizeof(h), 0, 0);
    h.magic = 0xdeadbeef;
    rsend(fd, &h, sizeof(h));
    expect_closed(fd);
    close(fd);

    /* wrong version: an error reply naming the request, connection kept */
    fd = rconn();
    rhello(fd);
    ss__proto_hdr(&h, SS_MSG_STATS, 3, sizeof(h), 0, 0);
    h.version = SS_PROTO_VERSION + 1;
    rsend(fd, &h, sizeof(h));
    assert_int_equal(rreply(fd, 3, SS_MSG_STATS, NULL, 0, NULL, NULL), -SS_E_VERSION);

    /* a reply flag on a request, a non-zero status: errors */
    ss__proto_hdr(&h, SS_MSG_STATS, 5, sizeof(h), 0, 0);
    h.status = 7;
    rsend(fd, &h, sizeof(h));
    assert_int_equal(rreply(fd, 5, SS_MSG_STATS, NULL, 0, NULL, NULL), -SS_E_PROTO);
    /* and the connection still works */
    assert_int_equal(rsimple(fd, SS_MSG_CONTAINS, &K_KNOWN), 1);
    close(fd);
    assert_true(proto_errors() >= before + 4);

    /* unknown types, and an EVENT sent as a request: no reply can name
     * them to a client, so the connection is closed */
    uint16_t bad[] = { 0, 77, SS_MSG_EVENT, SS_MSG__COUNT };
    for (size_t i = 0; i < SS_ARRAY_SIZE(bad); i++) {
        fd = rconn();
        rhello(fd);
        ss__proto_hdr(&h, bad[i], 4, sizeof(h), 0, 0);
        rsend(fd, &h, sizeof(h));
        expect_closed(fd);
        close(fd);
    }
    check_store_ok();
}

static void t_len_lies(void **state)
{
    unsigned char buf[128];
    ss__msg_hdr h;
    ss__req_id r = { .id = K_KNOWN };

    (void)state;
    int fd = rconn();
    rhello(fd);
    /* len says more than was sent */
    ss__proto_hdr(&h, SS_MSG_CONTAINS, 11, 1000, 0, 0);
    memcpy(buf, &h, sizeof(h));
    memcpy(buf + sizeof(h), &r, sizeof(r));
    rsend(fd, buf, sizeof(h) + sizeof(r));
    assert_int_equal(rreply(fd, 11, SS_MSG_CONTAINS, NULL, 0, NULL, NULL), -SS_E_PROTO);
    /* len says less */
    ss__proto_hdr(&h, SS_MSG_CONTAINS, 12, sizeof(h), 0, 0);
    memcpy(buf, &h, sizeof(h));
    rsend(fd, buf, sizeof(h) + sizeof(r));
    assert_int_equal(rreply(fd, 12, SS_MSG_CONTAINS, NULL, 0, NULL, NULL), -SS_E_PROTO);
    /* body one byte short of its type */
    ss__proto_hdr(&h, SS_MSG_CONTAINS, 13, sizeof(h) + sizeof(r) - 1, 0, 0);
    memcpy(buf, &h, sizeof(h));
    rsend(fd, buf, sizeof(h) + sizeof(r) - 1);
    assert_int_equal(rreply(fd, 13, SS_MSG_CONTAINS, NULL, 0, NULL, NULL), -SS_E_PROTO);
    /* longer than any request: truncated on receive */
    size_t big = SS_PROTO_MAX_MSG + 4096;
    unsigned char *huge = calloc(1, big);
    ss__proto_hdr(&h, SS_MSG_PUT, 14, (uint32_t)big, 0, 0);
    memcpy(huge, &h, sizeof(h));
    rsend(fd, huge, big);
    free(huge);
    assert_int_equal(rreply(fd, 14, SS_MSG_PUT, NULL, 0, NULL, NULL), -SS_E_PROTO);
    assert_int_equal(rsimple(fd, SS_MSG_CONTAINS, &K_KNOWN), 1);
    close(fd);
    check_store_ok();
}

static void t_absurd_counts(void **state)
{
    ss_id ids[SS_PROTO_MAX_IDS + 1];

    (void)state;
    memset(ids, 0, sizeof(ids));
    int fd = rconn();
    rhello(fd);
    /* GET n = 0, n = 65, timeout below -1 */
    ss__req_get g = { .n = 0, .timeout_ms = 0 };
    uint32_t rid = rreq(fd, SS_MSG_GET, &g, sizeof(g), NULL, 0);
    assert_int_equal(rreply(fd, rid, SS_MSG_GET, NULL, 0, NULL, NULL), -SS_E_PROTO);
    g.n = SS_PROTO_MAX_IDS + 1;
    rid = rreq(fd, SS_MSG_GET, &g, sizeof(g), ids, sizeof(ids));
    assert_int_equal(rreply(fd, rid, SS_MSG_GET, NULL, 0, NULL, NULL), -SS_E_PROTO);
    g.n = 1000000; /* and a tail that does not match */
    rid = rreq(fd, SS_MSG_GET, &g, sizeof(g), ids, sizeof(ids));
    assert_int_equal(rreply(fd, rid, SS_MSG_GET, NULL, 0, NULL, NULL), -SS_E_PROTO);
    g.n = 1;
    g.timeout_ms = -5;
    rid = rreq(fd, SS_MSG_GET, &g, sizeof(g), ids, sizeof(ss_id));
    assert_int_equal(rreply(fd, rid, SS_MSG_GET, NULL, 0, NULL, NULL), -SS_E_PROTO);
    /* LIST max 0 and too many */
    ss__req_list l = { .cursor = 0, .max = 0 };
    rid = rreq(fd, SS_MSG_LIST, &l, sizeof(l), NULL, 0);
    assert_int_equal(rreply(fd, rid, SS_MSG_LIST, NULL, 0, NULL, NULL), -SS_E_PROTO);
    l.max = SS_PROTO_MAX_LIST + 1;
    rid = rreq(fd, SS_MSG_LIST, &l, sizeof(l), NULL, 0);
    assert_int_equal(rreply(fd, rid, SS_MSG_LIST, NULL, 0, NULL, NULL), -SS_E_PROTO);
    /* a LIST cursor far past the end is just the end */
    l.max = 10;
    l.cursor = UINT64_MAX - 1;
    rid = rreq(fd, SS_MSG_LIST, &l, sizeof(l), NULL, 0);
    ss__rep_list rl;
    assert_int_equal(rreply(fd, rid, SS_MSG_LIST, &rl, sizeof(rl), NULL, NULL), 0);
    assert_int_equal(rl.n, 0);
    assert_int_equal(rl.next_cursor, 0);
    /* RELEASE n = 0: never answered, the next reply is the CONTAINS one */
    ss__req_release rr = { .n = 0 };
    rreq(fd, SS_MSG_RELEASE, &rr, sizeof(rr), NULL, 0);
    /* SUBSCRIBE with unknown bits */
    ss__req_subscribe sb = { .mask = 0x80 };
    rid = rreq(fd, SS_MSG_SUBSCRIBE, &sb, sizeof(sb), NULL, 0);
    assert_int_equal(rreply(fd, rid, SS_MSG_SUBSCRIBE, NULL, 0, NULL, NULL), -SS_E_PROTO);
    assert_int_equal(rsimple(fd, SS_MSG_CONTAINS, &K_KNOWN), 1);
    close(fd);
    check_store_ok();
}

/* A PUT_MANY of n records with ids pm-<tag>-<i>, sizes[i] bytes of data
 * each and no meta; the tail is tail_len bytes (the sum when honest). */
static uint32_t put_many_send(int fd, char tag, uint32_t n, const uint64_t *sizes, size_t tail_len)
{
    static unsigned char body[SS_PROTO_MAX_MSG];
    ss__req_put_many r = { .n = n };
    size_t blen = sizeof(r);

    memcpy(body, &r, sizeof(r));
    for (uint32_t i = 0; i < n && blen + sizeof(ss__req_put) <= sizeof(body) / 2; i++) {
        ss__req_put e = { .node = -1, .size = sizes[i] };
        snprintf((char *)e.id.b, sizeof(e.id.b), "pm-%c-%u", tag, i);
        memcpy(body + blen, &e, sizeof(e));
        blen += sizeof(e);
    }
    assert_true(blen + tail_len <= sizeof(body) - sizeof(ss__msg_hdr));
    memset(body + blen, 'd', tail_len);
    return rreq(fd, SS_MSG_PUT_MANY, body, blen + tail_len, NULL, 0);
}

static int32_t pm_contains(int fd, char tag, uint32_t i)
{
    ss_id id;

    memset(&id, 0, sizeof(id));
    snprintf((char *)id.b, sizeof(id.b), "pm-%c-%u", tag, i);
    return rsimple(fd, SS_MSG_CONTAINS, &id);
}

/* Hostile batches: n = 0, n over the maximum, sizes summing past the
 * message, lengths shifted between records, a size that wraps the sum,
 * records missing: each gets -SS_E_PROTO and stores nothing; the same
 * connection then stores an honest batch (one record a duplicate of an
 * object in the store: -EEXIST for it alone). */
static void t_put_many_hostile(void **state)
{
    uint64_t sizes[SS_PROTO_MAX_BATCH + 1];
    uint64_t errs0 = proto_errors();
    int32_t st[4];
    uint32_t rid;
    ss__rep_put_many rp;
    struct {
        ss__rep_put_many r;
        int32_t st[4];
    } rep;
    (void)state;

    for (size_t i = 0; i < SS_ARRAY_SIZE(sizes); i++)
        sizes[i] = 10;
    int fd = rconn();
    rhello(fd);
    rid = put_many_send(fd, 'a', 0, sizes, 0);                   /* n = 0 */
    assert_int_equal(rreply(fd, rid, SS_MSG_PUT_MANY, NULL, 0, NULL, NULL), -SS_E_PROTO);
    rid = put_many_send(fd, 'b', SS_PROTO_MAX_BATCH + 1, sizes, 10 * (SS_PROTO_MAX_BATCH + 1));
    assert_int_equal(rreply(fd, rid, SS_MSG_PUT_MANY, NULL, 0, NULL, NULL), -SS_E_PROTO);
    rid = put_many_send(fd, 'c', 3, sizes, 29);                  /* the sum past the end */
    assert_int_equal(rreply(fd, rid, SS_MSG_PUT_MANY, NULL, 0, NULL, NULL), -SS_E_PROTO);
    sizes[0] = 60000;                                            /* overlapping lengths */
    rid = put_many_send(fd, 'd', 3, sizes, 30);
    assert_int_equal(rreply(fd, rid, SS_MSG_PUT_MANY, NULL, 0, NULL, NULL), -SS_E_PROTO);
    sizes[0] = (uint64_t)-10;                                    /* wraps to the tail's 20 */
    sizes[1] = 20;
    rid = put_many_send(fd, 'e', 3, sizes, 20);
    assert_int_equal(rreply(fd, rid, SS_MSG_PUT_MANY, NULL, 0, NULL, NULL), -SS_E_PROTO);
    sizes[0] = sizes[1] = 10;
    rp = (ss__rep_put_many){ .n = 4 };                           /* records missing */
    rid = rreq(fd, SS_MSG_PUT_MANY, &rp, sizeof(rp), "0123456789", 10);
    assert_int_equal(rreply(fd, rid, SS_MSG_PUT_MANY, NULL, 0, NULL, NULL), -SS_E_PROTO);
    for (char t = 'a'; t <= 'e'; t++)
        for (uint32_t i = 0; i < 3; i++)
            assert_int_equal(pm_contains(fd, t, i), 0);

    /* honest, with a duplicate of a stored object */
    t_assert_ok(put_small(fd, &(ss_id){ { 'p', 'm', '-', 'f', '-', '1' } }, "x", 1));
    rid = put_many_send(fd, 'f', 3, sizes, 30);
    assert_int_equal(rreply(fd, rid, SS_MSG_PUT_MANY, &rep, sizeof(rep), NULL, NULL), 2);
    assert_int_equal(rep.r.n, 3);
    memcpy(st, rep.st, sizeof(st));
    assert_int_equal(st[0], 0);
    assert_int_equal(st[1], -EEXIST);
    assert_int_equal(st[2], 0);
    for (uint32_t i = 0; i < 3; i++) {
        ss_id id;
        memset(&id, 0, sizeof(id));
        snprintf((char *)id.b, sizeof(id.b), "pm-f-%u", i);
        assert_int_equal(rsimple(fd, SS_MSG_DELETE, &id), 0);
    }
    close(fd);
    assert_int_equal(proto_errors() - errs0, 6);
    check_store_ok();
}

static void t_huge_sizes(void **state)
{
    static unsigned char meta[SS_PROTO_MAX_META + 1];
    ss_id x = { { 'h', 'u', 'g', 'e' } };

    (void)state;
    int fd = rconn();
    rhello(fd);
    /* meta_size 1 GiB without the bytes; 64 KiB + 1 with them */
    ss__req_create c = { .id = x, .node = -1, .size = 10, .meta_size = 1u << 30 };
    uint32_t rid = rreq(fd, SS_MSG_CREATE, &c, sizeof(c), NULL, 0);
    assert_int_equal(rreply(fd, rid, SS_MSG_CREATE, NULL, 0, NULL, NULL), -SS_E_PROTO);
    c.meta_size = SS_PROTO_MAX_META + 1;
    rid = rreq(fd, SS_MSG_CREATE, &c, sizeof(c), meta, sizeof(meta));
    assert_int_equal(rreply(fd, rid, SS_MSG_CREATE, NULL, 0, NULL, NULL), -SS_E_PROTO);
    /* size 2^63, 2^64-1, capacity + 1: -ENOSPC at once (never fits) */
    uint64_t sizes[] = { 1ull << 63, UINT64_MAX, (256ull << 20) + 1 };
    for (size_t i = 0; i < SS_ARRAY_SIZE(sizes); i++) {
        c.meta_size = 0;
        c.size = sizes[i];
        rid = rreq(fd, SS_MSG_CREATE, &c, sizeof(c), NULL, 0);
        assert_int_equal(rreply(fd, rid, SS_MSG_CREATE, NULL, 0, NULL, NULL), -ENOSPC);
    }
    /* a NUMA node hint that is no node is only a hint */
    c.size = 100;
    c.node = 123456;
    rid = rreq(fd, SS_MSG_CREATE, &c, sizeof(c), NULL, 0);
    assert_int_equal(rreply(fd, rid, SS_MSG_CREATE, NULL, 0, NULL, NULL), 0);
    assert_int_equal(rsimple(fd, SS_MSG_ABORT, &x), 0);
    /* PUT above the inline limit: refused by the decoder */
    ss__req_put p = { .id = x, .node = -1, .size = SS_PROTO_MAX_INLINE + 1 };
    static unsigned char data[SS_PROTO_MAX_INLINE + 1];
    rid = rreq(fd, SS_MSG_PUT, &p, sizeof(p), data, sizeof(data));
    assert_int_equal(rreply(fd, rid, SS_MSG_PUT, NULL, 0, NULL, NULL), -SS_E_PROTO);
    /* a SEAL whose payload does not match the small object's size */
    c.size = 100;
    c.node = -1;
    rid = rreq(fd, SS_MSG_CREATE, &c, sizeof(c), NULL, 0);
    assert_int_equal(rreply(fd, rid, SS_MSG_CREATE, NULL, 0, NULL, NULL), 0);
    ss__req_seal s = { .id = x, .payload_size = 50 };
    rid = rreq(fd, SS_MSG_SEAL, &s, sizeof(s), data, 50);
    assert_int_equal(rreply(fd, rid, SS_MSG_SEAL, NULL, 0, NULL, NULL), -EINVAL);
    assert_int_equal(rsimple(fd, SS_MSG_CONTAINS, &x), 0);
    close(fd); /* the unsealed object goes with its creator */
    fd = rconn();
    rhello(fd);
    assert_int_equal(rsimple(fd, SS_MSG_CONTAINS, &x), 0);
    assert_int_equal(rsimple(fd, SS_MSG_DELETE, &x), -ENOENT);
    close(fd);
    check_store_ok();
}

/* Our copies closed, the store's too: the pipe's reader sees EOF. */
static void expect_pipe_eof(int rd)
{
    struct pollfd p = { .fd = rd, .events = POLLIN };
    char c;

    assert_int_equal(poll(&p, 1, 5000), 1);
    assert_int_equal(read(rd, &c, 1), 0);
}

static void t_fds_in_requests(void **state)
{
    ss__msg_hdr h;
    ss__req_id r = { .id = K_KNOWN };
    unsigned char buf[64];
    int pfd[2];

    (void)state;
    memcpy(buf + sizeof(h), &r, sizeof(r));
    /* three fds with a CONTAINS: error reply, fds closed by the store */
    int fd = rconn();
    rhello(fd);
    assert_int_equal(pipe2(pfd, O_CLOEXEC), 0);
    int three[3] = { pfd[1], pfd[1], pfd[1] };
    ss__proto_hdr(&h, SS_MSG_CONTAINS, 21, sizeof(h) + sizeof(r), 0, 0);
    memcpy(buf, &h, sizeof(h));
    rsend_fds(fd, buf, sizeof(h) + sizeof(r), three, 3);
    close(pfd[1]);
    assert_int_equal(rreply(fd, 21, SS_MSG_CONTAINS, NULL, 0, NULL, NULL), -SS_E_PROTO);
    expect_pipe_eof(pfd[0]);
    close(pfd[0]);

    /* 200 fds: more than the store looks at (MSG_CTRUNC); all closed */
    assert_int_equal(pipe2(pfd, O_CLOEXEC), 0);
    int many[200];
    for (int i = 0; i < 200; i++)
        many[i] = pfd[1];
    ss__proto_hdr(&h, SS_MSG_CONTAINS, 22, sizeof(h) + sizeof(r), 0, 0);
    memcpy(buf, &h, sizeof(h));
    rsend_fds(fd, buf, sizeof(h) + sizeof(r), many, 200);
    close(pfd[1]);
    assert_int_equal(rreply(fd, 22, SS_MSG_CONTAINS, NULL, 0, NULL, NULL), -SS_E_PROTO);
    expect_pipe_eof(pfd[0]);
    close(pfd[0]);

    /* an fd with the HELLO itself, on a new connection: closed */
    int fd2 = rconn();
    assert_int_equal(pipe2(pfd, O_CLOEXEC), 0);
    ss__req_hello hr = { .pid = 1 };
    ss__proto_hdr(&h, SS_MSG_HELLO, 23, sizeof(h) + sizeof(hr), 0, 0);
    memcpy(buf, &h, sizeof(h));
    memcpy(buf + sizeof(h), &hr, sizeof(hr));
    rsend_fds(fd2, buf, sizeof(h) + sizeof(hr), &pfd[1], 1);
    close(pfd[1]);
    expect_closed(fd2);
    expect_pipe_eof(pfd[0]);
    close(pfd[0]);
    close(fd2);

    assert_int_equal(rsimple(fd, SS_MSG_CONTAINS, &K_KNOWN), 1);
    close(fd);
    check_store_ok();
}

static void t_before_hello(void **state)
{
    (void)state;
    uint16_t types[] = { SS_MSG_CONTAINS, SS_MSG_STATS, SS_MSG_DELETE };
    for (size_t i = 0; i < SS_ARRAY_SIZE(types); i++) {
        int fd = rconn();
        ss__req_id r = { .id = K_KNOWN };
        if (types[i] == SS_MSG_STATS)
            rreq(fd, types[i], NULL, 0, NULL, 0);
        else
            rreq(fd, types[i], &r, sizeof(r), NULL, 0);
        expect_closed(fd);
        close(fd);
    }
    /* the DELETE never ran */
    check_store_ok();
}

/* A HELLO of another protocol version (right magic, whatever body that
 * version has) gets a header-only reply in this store's version with
 * status -SS_E_VERSION, then the store closes the connection; a HELLO with
 * a wrong magic is closed unanswered. */
static void t_hello_other_version(void **state)
{
    static const struct {
        uint16_t version;
        uint32_t body;
    } cases[] = {
        { SS_PROTO_VERSION + 1, sizeof(ss__req_hello) },
        { SS_PROTO_VERSION + 1, 0 },
        { SS_PROTO_VERSION + 1, sizeof(ss__req_hello) + 24 },
        { SS_PROTO_VERSION - 1, sizeof(ss__req_hello) },
        { 0xffff, 8 },
    };
    unsigned char buf[256];
    ss__msg_hdr h;
    uint64_t errs0 = proto_errors();

    (void)state;
    for (size_t i = 0; i < SS_ARRAY_SIZE(cases); i++) {
        int fd = rconn();
        uint32_t len = (uint32_t)sizeof(h) + cases[i].body;

        memset(buf, 0, sizeof(buf));
        ss__proto_hdr(&h, SS_MSG_HELLO, 7 + (uint32_t)i, len, 0, 0);
        h.version = cases[i].version;
        memcpy(buf, &h, sizeof(h));
        rsend(fd, buf, len);
        ssize_t n = rrecv(fd, buf, sizeof(buf), NULL, NULL, 5000);
        if (n <= 0)
            fail_msg("HELLO of version %u: no reply (%zd)", cases[i].version, n);
        assert_int_equal(n, sizeof(h));
        t_assert_ok(ss__proto_check_reply(buf, (size_t)n, 0));
        memcpy(&h, buf, sizeof(h));
        assert_int_equal(h.magic, SS_PROTO_MAGIC);
        assert_int_equal(h.version, SS_PROTO_VERSION);
        assert_int_equal(h.type, SS_MSG_HELLO);
        assert_int_equal(h.req_id, 7 + i);
        assert_int_equal(h.flags, SS_MSGF_REPLY);
        assert_int_equal(h.status, -SS_E_VERSION);
        assert_int_equal(rrecv(fd, buf, sizeof(buf), NULL, NULL, 5000), 0); /* then EOF */
        close(fd);
    }
    /* wrong magic: closed, no reply */
    int fd = rconn();
    ss__proto_hdr(&h, SS_MSG_HELLO, 1, sizeof(h), 0, 0);
    h.magic = 0xdeadbeef;
    h.version = SS_PROTO_VERSION + 1;
    rsend(fd, &h, sizeof(h));
    assert_int_equal(rrecv(fd, buf, sizeof(buf), NULL, NULL, 5000), 0);
    close(fd);
    /* another version's request that is not a HELLO, before HELLO: closed */
    fd = rconn();
    ss__proto_hdr(&h, SS_MSG_STATS, 1, sizeof(h), 0, 0);
    h.version = SS_PROTO_VERSION + 1;
    rsend(fd, &h, sizeof(h));
    assert_int_equal(rrecv(fd, buf, sizeof(buf), NULL, NULL, 5000), 0);
    close(fd);
    /* each one counted as a protocol error */
    assert_int_equal(proto_errors(), errs0 + SS_ARRAY_SIZE(cases) + 2);
    check_alive();
}

static void t_release_without_refs(void **state)
{
    ss_id ids[3] = { K_KNOWN, { { 'x' } }, K_KNOWN };
    uint64_t before = proto_errors();

    (void)state;
    int fd = rconn();
    rhello(fd);
    ss__req_release rr = { .n = 3 };
    rreq(fd, SS_MSG_RELEASE, &rr, sizeof(rr), ids, sizeof(ids));
    /* no reply: the next one is the CONTAINS answer; the object survives */
    assert_int_equal(rsimple(fd, SS_MSG_CONTAINS, &K_KNOWN), 1);
    close(fd);
    assert_int_equal(proto_errors(), before + 3);
    check_store_ok();
}

/* A RELEASE leading a datagram with one more request behind it (what the
 * library sends): both are handled, the RELEASE first. Odd or malformed
 * compounds cost only themselves. */
static void t_release_prefix(void **state)
{
    static unsigned char buf[2048];
    ss__msg_hdr *h = (ss__msg_hdr *)buf;
    ss__req_release rr = { .n = 1 };
    ss__req_id q = { .id = K_KNOWN };
    ss_id unknown = { { 'u', 'n', 'k' } };
    size_t rel = sizeof(*h) + sizeof(rr) + sizeof(ss_id), n;
    uint64_t before = proto_errors();
    uint32_t rid;

    (void)state;
    int fd = rconn();
    rhello(fd);

    /* RELEASE (of nothing held: one protocol error, no reply) + CONTAINS */
    ss__proto_hdr(h, SS_MSG_RELEASE, 0, (uint32_t)rel, 0, 0);
    memcpy(buf + sizeof(*h), &rr, sizeof(rr));
    memcpy(buf + sizeof(*h) + sizeof(rr), &unknown, sizeof(unknown));
    rid = ++g_req;
    ss__proto_hdr((ss__msg_hdr *)(buf + rel), SS_MSG_CONTAINS, rid,
                  (uint32_t)(sizeof(*h) + sizeof(q)), 0, 0);
    memcpy(buf + rel + sizeof(*h), &q, sizeof(q));
    n = rel + sizeof(*h) + sizeof(q);
    rsend(fd, buf, n);
    assert_int_equal(rreply(fd, rid, SS_MSG_CONTAINS, NULL, 0, NULL, NULL), 1);
    assert_int_equal(proto_errors(), before + 1);

    /* RELEASE + a truncated request: an error reply names it */
    rid = ++g_req;
    ss__proto_hdr((ss__msg_hdr *)(buf + rel), SS_MSG_CONTAINS, rid,
                  (uint32_t)(sizeof(*h) + sizeof(q)), 0, 0);
    rsend(fd, buf, n - 4);
    assert_int_equal(rreply(fd, rid, SS_MSG_CONTAINS, NULL, 0, NULL, NULL), -SS_E_PROTO);

    /* RELEASE + RELEASE + CONTAINS: only one request may follow, so the
     * rest is one malformed RELEASE (no reply); the connection lives on */
    memcpy(buf + rel, buf, rel);
    rid = ++g_req;
    ss__proto_hdr((ss__msg_hdr *)(buf + 2 * rel), SS_MSG_CONTAINS, rid,
                  (uint32_t)(sizeof(*h) + sizeof(q)), 0, 0);
    memcpy(buf + 2 * rel + sizeof(*h), &q, sizeof(q));
    rsend(fd, buf, 2 * rel + sizeof(*h) + sizeof(q));
    assert_int_equal(rsimple(fd, SS_MSG_CONTAINS, &K_KNOWN), 1);

    /* a leading RELEASE whose len lies (points into the middle of the
     * next header): both halves are garbage, the store keeps serving */
    ss__proto_hdr(h, SS_MSG_RELEASE, 0, (uint32_t)(rel + 6), 0, 0);
    rsend(fd, buf, n);
    close(fd);
    check_store_ok();
}

static void t_other_clients_object(void **state)
{
    ss_id xs = { { 's', 'm' } }, xo = { { 'o', 'b' } };
    int fds[SS_PROTO_MAX_FDS];
    unsigned nfds;

    (void)state;
    int a = rconn(), b = rconn();
    rhello(a);
    rhello(b);
    /* A creates a small and an object-segment object */
    ss__req_create c = { .id = xs, .node = -1, .size = 64 };
    uint32_t rid = rreq(a, SS_MSG_CREATE, &c, sizeof(c), NULL, 0);
    assert_int_equal(rreply(a, rid, SS_MSG_CREATE, NULL, 0, NULL, NULL), 0);
    c.id = xo;
    c.size = 1 << 20;
    rid = rreq(a, SS_MSG_CREATE, &c, sizeof(c), NULL, 0);
    assert_int_equal(rreply(a, rid, SS_MSG_CREATE, NULL, 0, fds, &nfds), 0);
    assert_int_equal(nfds, 2);
    for (unsigned i = 0; i < nfds; i++)
        close(fds[i]);
    /* B may neither seal nor abort them, nor create the same ids */
    ss__req_seal s = { .id = xo, .payload_size = 0 };
    rid = rreq(b, SS_MSG_SEAL, &s, sizeof(s), NULL, 0);
    assert_int_equal(rreply(b, rid, SS_MSG_SEAL, NULL, 0, NULL, NULL), -ENOENT);
    assert_int_equal(rsimple(b, SS_MSG_ABORT, &xo), -ENOENT);
    assert_int_equal(rsimple(b, SS_MSG_ABORT, &xs), -ENOENT);
    assert_int_equal(rsimple(b, SS_MSG_DELETE, &xo), -EBUSY);
    c.id = xs;
    c.size = 64;
    rid = rreq(b, SS_MSG_CREATE, &c, sizeof(c), NULL, 0);
    assert_int_equal(rreply(b, rid, SS_MSG_CREATE, NULL, 0, NULL, NULL), -EEXIST);
    /* B's release of an unsealed object it never got: ignored */
    ss__req_release rr = { .n = 1 };
    rreq(b, SS_MSG_RELEASE, &rr, sizeof(rr), &xo, sizeof(xo));
    /* A seals both (the object segment: A closed its fds, no mapping) */
    static unsigned char payload[64];
    s.id = xs;
    s.payload_size = sizeof(payload);
    rid = rreq(a, SS_MSG_SEAL, &s, sizeof(s), payload, sizeof(payload));
    assert_int_equal(rreply(a, rid, SS_MSG_SEAL, NULL, 0, NULL, NULL), 0);
    s.id = xo;
    s.payload_size = 0;
    rid = rreq(a, SS_MSG_SEAL, &s, sizeof(s), NULL, 0);
    assert_int_equal(rreply(a, rid, SS_MSG_SEAL, NULL, 0, NULL, NULL), 0);
    /* sealed twice: -ENOENT (no unsealed object with that id) */
    rid = rreq(a, SS_MSG_SEAL, &s, sizeof(s), NULL, 0);
    assert_int_equal(rreply(a, rid, SS_MSG_SEAL, NULL, 0, NULL, NULL), -ENOENT);
    assert_int_equal(rsimple(b, SS_MSG_CONTAINS, &xo), 1);
    assert_int_equal(rsimple(b, SS_MSG_DELETE, &xo), 0);
    assert_int_equal(rsimple(b, SS_MSG_DELETE, &xs), 0);
    close(a); /* its creator refs go: the memory with them */
    close(b);
    check_store_ok();
}

/* A client that sends without ever reading its replies: the store queues
 * them, stops reading that client, and keeps serving everyone else. */
static void t_never_reads(void **state)
{
    ss__msg_hdr h;
    ss__req_id r = { .id = K_KNOWN };
    unsigned char buf[64];
    int sent = 0;

    (void)state;
    int fd = rconn();
    rhello(fd);
    ss__proto_hdr(&h, SS_MSG_CONTAINS, 1, sizeof(h) + sizeof(r), 0, 0);
    memcpy(buf, &h, sizeof(h));
    memcpy(buf + sizeof(h), &r, sizeof(r));
    for (int i = 0; i < 100000; i++) {
        if (send(fd, buf, sizeof(h) + sizeof(r), MSG_DONTWAIT | MSG_NOSIGNAL) < 0)
            break;
        sent++;
    }
    print_message("flooder: %d requests queued before the kernel pushed back\n", sent);
    assert_true(sent > 0);
    check_alive(); /* others are served meanwhile */
    /* the flooder gets every answer, in order, once it reads */
    int got = 0;
    for (; got < sent; got++) {
        unsigned char rb[64];
        ssize_t n = rrecv(fd, rb, sizeof(rb), NULL, NULL, 5000);
        if (n <= 0)
            break;
        memcpy(&h, rb, sizeof(h));
        assert_int_equal(h.status, 1);
    }
    assert_int_equal(got, sent);
    close(fd);
    check_store_ok();
}

/* INDEX from a raw client: the fds are read-only and sealed (no write,
 * no writable mapping, no resize), a first past the end gets the bucket
 * memfd alone, a first the decoder refuses is a protocol error, and a
 * client that asks again and again without reading gets every answer
 * (each well-formed; -EAGAIN once its unread fds would pass its budget)
 * when it reads, and the store's own fds come back to the baseline when
 * it goes. */
static void t_index_requests(void **state)
{
    ss__req_index rq = { 0 };
    ss__rep_index rep;
    int fds[SS_PROTO_MAX_FDS];
    unsigned nfds = 0;
    uint32_t rid;

    (void)state;
    int fd = rconn();
    rhello(fd);
    rid = rreq(fd, SS_MSG_INDEX, &rq, sizeof(rq), NULL, 0);
    assert_int_equal(rreply(fd, rid, SS_MSG_INDEX, &rep, sizeof(rep), fds, &nfds), 0);
    assert_int_equal(nfds, 1 + rep.n);
    assert_true(rep.n >= 1);
    for (unsigned i = 0; i < nfds; i++) {
        int fl = fcntl(fds[i], F_GETFL);
        assert_int_equal(fl & O_ACCMODE, O_RDONLY);
        assert_int_equal(write(fds[i], "x", 1), -1);
        assert_int_equal(ftruncate(fds[i], 0), -1);
        assert_ptr_equal(mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fds[i], 0),
                         MAP_FAILED);
        void *p = mmap(NULL, 4096, PROT_READ, MAP_SHARED, fds[i], 0);
        assert_true(p != MAP_FAILED);
        assert_int_equal(ss__index_check_hdr(p, i == 0 ? SS_BUCKET_MAGIC : SS_INDEX_MAGIC), 0);
        munmap(p, 4096);
        close(fds[i]);
    }
    rq.first = rep.nchunks + 5;
    rid = rreq(fd, SS_MSG_INDEX, &rq, sizeof(rq), NULL, 0);
    assert_int_equal(rreply(fd, rid, SS_MSG_INDEX, &rep, sizeof(rep), fds, &nfds), 0);
    assert_int_equal(nfds, 1);
    close(fds[0]);
    assert_int_equal(rep.n, 0);
    assert_int_equal(rep.first, rep.nchunks);
    uint64_t perr = proto_errors();
    rq.first = SS_PROTO_INDEX_MAX_CHUNKS;
    rid = rreq(fd, SS_MSG_INDEX, &rq, sizeof(rq), NULL, 0);
    assert_int_equal(rreply(fd, rid, SS_MSG_INDEX, NULL, 0, NULL, NULL), -SS_E_PROTO);
    assert_true(proto_errors() > perr);
    close(fd);

    /* a hoarder: asks without reading, then reads what came */
    fd = rconn();
    rhello(fd);
    rq.first = 0;
    int asked = 0, refused = 0, got = 0;
    for (; asked < 300; asked++) /* 2 fds each: past a client's budget of 256 */
        rreq(fd, SS_MSG_INDEX, &rq, sizeof(rq), NULL, 0);
    for (; got < asked; got++) {
        unsigned char rb[256];
        unsigned n;
        ssize_t len = rrecv(fd, rb, sizeof(rb), fds, &n, 5000);
        if (len <= 0)
            break;
        t_assert_ok(ss__proto_check_reply(rb, (size_t)len, n));
        refused += ((const ss__msg_hdr *)rb)->status == -EAGAIN;
        for (unsigned i = 0; i < n; i++)
            close(fds[i]);
    }
    print_message("index hoarder: %d asked, %d answered, %d refused\n", asked, got, refused);
    assert_int_equal(got, asked);
    close(fd);
    check_store_ok();
}

/* A subscriber that never reads is dropped, not waited for. And a
 * subscriber that sends a request is closed. */
static void t_subscriber(void **state)
{
    char data[8] = "evt";

    (void)state;
    int sub = rconn(), sub2 = rconn(), w = rconn();
    rhello(sub);
    rhello(sub2);
    rhello(w);
    ss__req_subscribe sb = { .mask = SS_EVENT_SEALED | SS_EVENT_DELETED };
    uint32_t rid = rreq(sub, SS_MSG_SUBSCRIBE, &sb, sizeof(sb), NULL, 0);
    assert_int_equal(rreply(sub, rid, SS_MSG_SUBSCRIBE, NULL, 0, NULL, NULL), 0);
    rid = rreq(sub2, SS_MSG_SUBSCRIBE, &sb, sizeof(sb), NULL, 0);
    assert_int_equal(rreply(sub2, rid, SS_MSG_SUBSCRIBE, NULL, 0, NULL, NULL), 0);
    rreq(sub2, SS_MSG_STATS, NULL, 0, NULL, 0);
    expect_closed(sub2);
    close(sub2);
    /* one event arrives intact */
    ss_id x = { { 'e', 0 } };
    assert_int_equal(put_small(w, &x, data, 3), 0);
    unsigned char rb[128];
    ssize_t n = rrecv(sub, rb, sizeof(rb), NULL, NULL, 5000);
    assert_int_equal(n, sizeof(ss__msg_hdr) + sizeof(ss__msg_event));
    t_assert_ok(ss__proto_check_reply(rb, (size_t)n, 0));
    ss__msg_event ev;
    memcpy(&ev, rb + sizeof(ss__msg_hdr), sizeof(ev));
    assert_int_equal(ev.type, SS_EVENT_SEALED);
    assert_memory_equal(&ev.id, &x, sizeof(x));
    assert_int_equal(ev.size, 3);
    assert_int_equal(rsimple(w, SS_MSG_DELETE, &x), 0);
    /* now flood events until the store gives up on the subscriber */
    int i;
    for (i = 1; i < 20000; i++) {
        x.b[1] = (unsigned char)i;
        x.b[2] = (unsigned char)(i >> 8);
        assert_int_equal(put_small(w, &x, data, 3), 0);
        assert_int_equal(rsimple(w, SS_MSG_DELETE, &x), 0);
        struct pollfd p = { .fd = sub, .events = 0 };
        if (poll(&p, 1, 0) == 1 && (p.revents & POLLHUP))
            break;
    }
    print_message("subscriber dropped after %d events\n", 2 * i);
    assert_true(i < 20000);
    expect_closed(sub);
    close(sub);
    close(w);
    check_store_ok();
}

/* A creator killed with SIGKILL while its large object is mapped and half
 * written: its memory returns, the others do not notice. */
static void t_killed_creator(void **state)
{
    int ready[2];
    const uint64_t size = 32ull << 20;

    (void)state;
    int w = rconn();
    rhello(w);
    ss_stats st0 = rstats(w);
    assert_int_equal(pipe2(ready, O_CLOEXEC), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    g_child = pid;
    if (pid == 0) {
        close(ready[0]);
        int fd = rconn();
        rhello(fd);
        ss_id x = { { 'k', 'i', 'l', 'l' } };
        ss__req_create c = { .id = x, .node = -1, .size = size };
        uint32_t rid = rreq(fd, SS_MSG_CREATE, &c, sizeof(c), NULL, 0);
        int fds[SS_PROTO_MAX_FDS];
        unsigned nfds;
        ss__rep_create rep;
        if (rreply(fd, rid, SS_MSG_CREATE, &rep, sizeof(rep), fds, &nfds) != 0 || nfds != 2)
            _exit(3);
        void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fds[1], 0);
        if (p == MAP_FAILED)
            _exit(4);
        memset(p, 0x5a, size / 2);
        if (write(ready[1], "r", 1) != 1)
            _exit(5);
        for (;;)
            pause();
    }
    close(ready[1]);
    char ch;
    assert_int_equal(read(ready[0], &ch, 1), 1);
    close(ready[0]);
    ss_stats st1 = rstats(w);
    assert_true(st1.resident_bytes >= st0.resident_bytes + size);
    assert_int_equal(st1.objects, st0.objects + 1);
    kill(pid, SIGKILL);
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    g_child = 0;
    assert_true(WIFSIGNALED(status));
    ss_stats st2;
    for (int i = 0; i < 500; i++) {
        st2 = rstats(w);
        if (st2.resident_bytes == st0.resident_bytes)
            break;
        usleep(10000);
    }
    assert_int_equal(st2.resident_bytes, st0.resident_bytes);
    assert_int_equal(st2.objects, st0.objects);
    assert_int_equal(st2.aborts, st1.aborts + 1);
    ss_id x = { { 'k', 'i', 'l', 'l' } };
    assert_int_equal(rsimple(w, SS_MSG_CONTAINS, &x), 0);
    assert_int_equal(rsimple(w, SS_MSG_CONTAINS, &K_KNOWN), 1);
    close(w);
    check_store_ok();
}

/* CREATE of an object-segment object: 0 and its [ro, rw] fds. */
static int32_t create_obj(int fd, const ss_id *id, uint64_t size, int fds[2])
{
    ss__req_create c = { .id = *id, .node = -1, .size = size };
    uint32_t rid = rreq(fd, SS_MSG_CREATE, &c, sizeof(c), NULL, 0);
    int got[SS_PROTO_MAX_FDS];
    unsigned n = 0;
    int32_t st = rreply(fd, rid, SS_MSG_CREATE, NULL, 0, got, &n);

    if (st == 0 && size > SS_PROTO_MAX_INLINE) {
        assert_int_equal(n, 2);
        fds[0] = got[0];
        fds[1] = got[1];
    } else if (st == 0) {
        assert_int_equal(n, 0); /* small: the creator buffers locally */
    }
    return st;
}

static int32_t seal_obj(int fd, const ss_id *id)
{
    ss__req_seal s = { .id = *id, .payload_size = 0 };
    uint32_t rid = rreq(fd, SS_MSG_SEAL, &s, sizeof(s), NULL, 0);

    return rreply(fd, rid, SS_MSG_SEAL, NULL, 0, NULL, NULL);
}

/* A creator that keeps a writable mapping gets -EBUSY (object stays
 * unsealed); one that seals the memfd itself gets -EPERM (aborted). */
static void t_seal_tampering(void **state)
{
    ss_id a = { { 't', 'a' } }, b = { { 't', 'b' } };
    const uint64_t size = 1 << 20;
    int fds[2];

    (void)state;
    int fd = rconn();
    rhello(fd);
    assert_int_equal(create_obj(fd, &a, size, fds), 0);
    /* the size is sealed from the start: nobody can SIGBUS a reader */
    assert_int_equal(ftruncate(fds[1], 0), -1);
    assert_int_equal(errno, EPERM);
    /* the read-only fd cannot be mapped writable */
    assert_true(mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fds[0], 0) == MAP_FAILED);
    char *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fds[1], 0);
    assert_true(p != MAP_FAILED);
    memset(p, 7, size);
    assert_int_equal(seal_obj(fd, &a), -EBUSY);
    assert_int_equal(rsimple(fd, SS_MSG_CONTAINS, &a), 0);
    munmap(p, size);
    assert_int_equal(seal_obj(fd, &a), 0);
    assert_int_equal(rsimple(fd, SS_MSG_CONTAINS, &a), 1);
    /* sealed: the writable fd we still hold gives no write path */
    assert_true(mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fds[1], 0) == MAP_FAILED);
    assert_int_equal(pwrite(fds[1], "x", 1, 0), -1);
    close(fds[0]);
    close(fds[1]);

    assert_int_equal(create_obj(fd, &b, size, fds), 0);
    assert_int_equal(fcntl(fds[1], F_ADD_SEALS, F_SEAL_FUTURE_WRITE | F_SEAL_SEAL), 0);
    assert_int_equal(seal_obj(fd, &b), -EPERM);
    assert_int_equal(rsimple(fd, SS_MSG_CONTAINS, &b), 0);
    close(fds[0]);
    close(fds[1]);
    /* aborted: the id is free again, and the client holds nothing on it */
    assert_int_equal(create_obj(fd, &b, 100, fds), 0); /* small: no fds */
    assert_int_equal(rsimple(fd, SS_MSG_ABORT, &b), 0);
    assert_int_equal(rsimple(fd, SS_MSG_DELETE, &a), 0);
    close(fd);
    check_store_ok();
}

static ss_stats client_stats(ss_client *c)
{
    ss_stats st = { .size = sizeof(st), .version = SS_STATS_VERSION };

    t_assert_ok(ss_stats_get(c, &st));
    return st;
}

/* The store's seal worker fails the next seal with err (ss__g_seal_fail). */
static void seal_fail_next(int err)
{
    __atomic_store_n(&ss__g_seal_fail, err, __ATOMIC_RELAXED);
}

/* A seal the worker fails, through the library. Every error but -EBUSY
 * aborts the object in the store: ss_seal returns the cause and the
 * creator's hold and segment are gone in the library too, so the id is
 * free for a new create and ss_abort has nothing to abort. -EBUSY leaves
 * the object created: a retry seals it. */
static void t_seal_failure_holds(void **state)
{
    static const int aborting[] = { -ENOSPC, -EIO, -ENOMEM, -EPERM };
    const uint64_t size = 1 << 20; /* an object segment: sealed by the worker */
    ss_id id = { { 's', 'f' } };
    ss_client *c;
    void *data;

    (void)state;
    t_assert_ok(ss_connect(g_path, 0, &c));
    size_t holds0 = c->nholds, segs0 = c->nsegs;
    ss_stats st0 = client_stats(c);
    for (size_t i = 0; i < SS_ARRAY_SIZE(aborting); i++) {
        t_assert_ok(ss_create(c, &id, size, NULL, 0, &data));
        memset(data, (int)i, size);
        assert_int_equal(c->nholds, holds0 + 1);
        seal_fail_next(aborting[i]);
        assert_int_equal(ss_seal(c, &id), aborting[i]);
        assert_int_equal(__atomic_load_n(&ss__g_seal_fail, __ATOMIC_RELAXED), 0);
        /* no stale hold: nothing left to seal or abort, the segment unmapped */
        assert_int_equal(c->nholds, holds0);
        assert_int_equal(c->nsegs, segs0);
        assert_int_equal(ss_seal(c, &id), -ENOENT);
        assert_int_equal(ss_abort(c, &id), -ENOENT);
        assert_int_equal(ss_contains(c, &id), 0);
    }
    /* a put's seal fails the same way: its hold goes, the cause returns
     * (a put that writes a segment of its own, as when the store may not
     * read this process's memory; else the store copies it in) */
    void *buf = calloc(1, size);
    assert_non_null(buf);
    c->no_remote = true;
    seal_fail_next(-ENOSPC);
    assert_int_equal(ss_put(c, &id, buf, size, NULL, 0), -ENOSPC);
    c->no_remote = false;
    assert_int_equal(c->nholds, holds0);
    assert_int_equal(c->nsegs, segs0);
    assert_int_equal(ss_contains(c, &id), 0);
    free(buf);

    /* -EBUSY: still created; the same hold seals on a retry */
    t_assert_ok(ss_create(c, &id, size, NULL, 0, &data));
    memset(data, 9, size);
    seal_fail_next(-EBUSY);
    assert_int_equal(ss_seal(c, &id), -EBUSY);
    assert_int_equal(c->nholds, holds0 + 1);
    assert_int_equal(ss_contains(c, &id), 0);
    t_assert_ok(ss_seal(c, &id));
    assert_int_equal(ss_contains(c, &id), 1);
    t_assert_ok(ss_release(c, &id));
    t_assert_ok(ss_delete(c, &id));
    /* -EBUSY, then an abort: the store still had it */
    t_assert_ok(ss_create(c, &id, size, NULL, 0, &data));
    seal_fail_next(-EBUSY);
    assert_int_equal(ss_seal(c, &id), -EBUSY);
    t_assert_ok(ss_abort(c, &id));
    assert_int_equal(c->nholds, holds0);

    /* the store kept nothing: every failed seal was an abort there */
    ss_stats st = client_stats(c);
    assert_int_equal(st.objects, st0.objects);
    assert_int_equal(st.object_bytes, st0.object_bytes);
    assert_int_equal(st.aborts, st0.aborts + SS_ARRAY_SIZE(aborting) + 2);
    assert_int_equal(c->nsegs, segs0);
    ss_disconnect(c);
    check_alive();
}

/* A second embedded store with its own options (options are read when a
 * store starts). */
static ss__store *start_store(const char *name, const char *capacity, const char *evict,
                              char *path, size_t len)
{
    ss__store *s = NULL;

    snprintf(path, len, "%s/%s", t_tmpdir(), name);
    t_assert_ok(ss_option_set(SS_OPT_CAPACITY, capacity));
    t_assert_ok(ss_option_set(SS_OPT_EVICT, evict));
    t_assert_ok(ss__store_start_thread(&s, path, 0));
    t_assert_ok(ss_option_set(SS_OPT_CAPACITY, "256M"));
    t_assert_ok(ss_option_set(SS_OPT_EVICT, "off"));
    return s;
}

/* A create that does not fit waits (create timeout 300 ms), then gets
 * -ENOSPC; one that waits while memory is freed succeeds. */
static void t_capacity_wait(void **state)
{
    char path[108];
    ss_id big = { { 'b' } }, more = { { 'm' } };
    int fds[2], fds2[2];
    unsigned char rb[256];

    (void)state;
    ss__store *s = start_store("cap.sock", "32M", "off", path, sizeof(path));
    int a = rconn_at(path), b = rconn_at(path);
    rhello(a);
    rhello(b);
    assert_int_equal(create_obj(a, &big, 24 << 20, fds), 0);
    close(fds[0]);
    close(fds[1]);
    ss__req_create c = { .id = more, .node = -1, .size = 16 << 20 };
    uint32_t rid = rreq(b, SS_MSG_CREATE, &c, sizeof(c), NULL, 0);
    assert_int_equal(rrecv(b, rb, sizeof(rb), NULL, NULL, 100), -ETIMEDOUT); /* parked */
    assert_int_equal(rreply(b, rid, SS_MSG_CREATE, NULL, 0, NULL, NULL), -ENOSPC);
    /* again, and this time A gives its memory back meanwhile */
    rid = rreq(b, SS_MSG_CREATE, &c, sizeof(c), NULL, 0);
    assert_int_equal(rrecv(b, rb, sizeof(rb), NULL, NULL, 50), -ETIMEDOUT);
    assert_int_equal(rsimple(a, SS_MSG_ABORT, &big), 0);
    int got[SS_PROTO_MAX_FDS];
    unsigned n;
    assert_int_equal(rreply(b, rid, SS_MSG_CREATE, NULL, 0, got, &n), 0);
    assert_int_equal(n, 2);
    close(got[0]);
    close(got[1]);
    ss_stats st = rstats(b);
    assert_int_equal(st.waits, 2);
    assert_int_equal(st.wait_timeouts, 1);
    /* B disconnects with its parked request's object unsealed: all back */
    close(b);
    (void)fds2;
    ss_stats st2;
    for (int i = 0; i < 500; i++) {
        st2 = rstats(a);
        if (st2.objects == 0)
            break;
        usleep(10000);
    }
    assert_int_equal(st2.objects, 0);
    close(a);
    ss__store_stop_thread(s);
    check_store_ok();
}

/* With eviction on, an unreferenced sealed object is dropped to make room
 * (and a DELETED event says so); a referenced one never is. */
static void t_evict_lru(void **state)
{
    char path[108];
    ss_id x = { { 'x' } }, y = { { 'y' } }, z = { { 'z' } };
    int fds[2];

    (void)state;
    ss__store *s = start_store("evict.sock", "32M", "on", path, sizeof(path));
    int a = rconn_at(path);
    rhello(a);
    assert_int_equal(create_obj(a, &x, 20 << 20, fds), 0);
    close(fds[0]);
    close(fds[1]);
    assert_int_equal(seal_obj(a, &x), 0);
    ss__req_release rr = { .n = 1 };
    rreq(a, SS_MSG_RELEASE, &rr, sizeof(rr), &x, sizeof(x)); /* unreferenced now */
    assert_int_equal(create_obj(a, &y, 20 << 20, fds), 0);   /* x makes room */
    close(fds[0]);
    close(fds[1]);
    assert_int_equal(rsimple(a, SS_MSG_CONTAINS, &x), 0);
    ss_stats st = rstats(a);
    assert_int_equal(st.evictions, 1);
    /* y is held (creator's reference): z cannot evict it, and times out */
    assert_int_equal(seal_obj(a, &y), 0);
    assert_int_equal(create_obj(a, &z, 20 << 20, fds), -ENOSPC);
    assert_int_equal(rsimple(a, SS_MSG_CONTAINS, &y), 1);
    close(a);
    ss__store_stop_thread(s);
    check_store_ok();
}

/* A staged create (copy-on-seal) read back by another raw client. */
static void stage_check(int fd, const ss_id *id, const unsigned char *want, uint64_t size)
{
    ss__req_get g = { .n = 1, .timeout_ms = 0 };
    struct {
        ss__rep_get r;
        ss__get_entry e;
    } rep;
    int fds[SS_PROTO_MAX_FDS];
    unsigned nfds = 0;
    uint32_t rid = rreq(fd, SS_MSG_GET, &g, sizeof(g), id, sizeof(*id));

    assert_int_equal(rreply(fd, rid, SS_MSG_GET, &rep, sizeof(rep), fds, &nfds), 1);
    assert_int_equal(rep.e.data.kind, SS_SEG_ARENA);
    assert_int_equal(nfds, 1);
    const unsigned char *p = mmap(NULL, rep.e.data.seg_size, PROT_READ, MAP_SHARED, fds[0], 0);
    assert_true(p != MAP_FAILED);
    assert_memory_equal(p + rep.e.data.offset, want, size);
    munmap((void *)p, rep.e.data.seg_size);
    close(fds[0]);
    ss__req_release rr = { .n = 1 };
    rreq(fd, SS_MSG_RELEASE, &rr, sizeof(rr), id, sizeof(*id));
}

/*
 * Staging areas in the hands of raw clients: an area comes with the
 * CREATE reply once, sealed against resizing; a SEAL names no bytes of
 * it (a payload or a size is refused, the object stays open); another
 * client can neither seal the object nor get the area; the store copies
 * whatever the area holds at the seal (a hole punched in it reads as
 * zeroes, never a fault in the store), and nothing written to the area
 * after the seal reaches the object. A creator that goes leaves no fd.
 */
static void t_staging_hostile(void **state)
{
    enum { SZ = 256 * 1024 };
    ss_id xa = { { 's', 't', 'a' } }, xb = { { 's', 't', 'b' } };
    static unsigned char want[SZ];
    int fds[SS_PROTO_MAX_FDS];
    unsigned nfds = 0;
    ss__rep_create rc;

    (void)state;
    int a = rconn(), b = rconn();
    rhello(a);
    rhello(b);
    ss__req_create c = { .id = xa, .node = -1, .size = SZ };
    uint32_t rid = rreq(a, SS_MSG_CREATE, &c, sizeof(c), NULL, 0);
    assert_int_equal(rreply(a, rid, SS_MSG_CREATE, &rc, sizeof(rc), fds, &nfds), 0);
    assert_int_equal(rc.data.kind, SS_SEG_STAGE);
    assert_int_equal(nfds, 1);
    int area = fds[0];
    assert_true((fcntl(area, F_GET_SEALS) & (F_SEAL_SHRINK | F_SEAL_GROW)) ==
                (F_SEAL_SHRINK | F_SEAL_GROW));
    assert_int_equal(ftruncate(area, 4096), -1);
    assert_int_equal(ftruncate(area, (off_t)rc.data.seg_size * 2), -1);
    unsigned char *p = mmap(NULL, rc.data.seg_size, PROT_READ | PROT_WRITE, MAP_SHARED, area, 0);
    assert_true(p != MAP_FAILED);
    for (unsigned i = 0; i < SZ; i++)
        p[i] = want[i] = (unsigned char)(i * 7 + 1);
    /* a hole in the middle: the store reads zeroes there */
    assert_int_equal(fallocate(area, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 65536, 65536), 0);
    memset(want + 65536, 0, 65536);

    /* SEALs that name bytes: refused, the object stays open */
    ss__req_seal sl = { .id = xa, .payload_size = 64 };
    static unsigned char junk[SZ];
    rid = rreq(a, SS_MSG_SEAL, &sl, sizeof(sl), junk, 64);
    assert_int_equal(rreply(a, rid, SS_MSG_SEAL, NULL, 0, NULL, NULL), -EINVAL);
    sl.payload_size = SS_PROTO_MAX_INLINE + 1; /* no such message */
    rid = rreq(a, SS_MSG_SEAL, &sl, sizeof(sl), NULL, 0);
    assert_int_equal(rreply(a, rid, SS_MSG_SEAL, NULL, 0, NULL, NULL), -SS_E_PROTO);
    /* B: not its object; its own create gets its own area */
    sl.payload_size = 0;
    rid = rreq(b, SS_MSG_SEAL, &sl, sizeof(sl), NULL, 0);
    assert_int_equal(rreply(b, rid, SS_MSG_SEAL, NULL, 0, NULL, NULL), -ENOENT);
    assert_int_equal(rsimple(b, SS_MSG_ABORT, &xa), -ENOENT);
    ss__rep_create rb;
    c.id = xb;
    rid = rreq(b, SS_MSG_CREATE, &c, sizeof(c), NULL, 0);
    assert_int_equal(rreply(b, rid, SS_MSG_CREATE, &rb, sizeof(rb), fds, &nfds), 0);
    assert_int_equal(rb.data.kind, SS_SEG_STAGE);
    assert_int_equal(nfds, 1);
    assert_true(rb.data.seg_id != rc.data.seg_id);
    close(fds[0]);
    /* B goes with its object open: aborted, its area freed */
    close(b);

    /* A seals; its area written after the seal changes nothing */
    rid = rreq(a, SS_MSG_SEAL, &sl, sizeof(sl), NULL, 0);
    assert_int_equal(rreply(a, rid, SS_MSG_SEAL, NULL, 0, NULL, NULL), 0);
    memset(p, 0xee, SZ);
    b = rconn();
    rhello(b);
    stage_check(b, &xa, want, SZ);
    /* a second create of A's: the area is still lent (A holds xa), so
     * another one comes, with its fd */
    c.id = xb;
    rid = rreq(a, SS_MSG_CREATE, &c, sizeof(c), NULL, 0);
    assert_int_equal(rreply(a, rid, SS_MSG_CREATE, &rb, sizeof(rb), fds, &nfds), 0);
    assert_int_equal(nfds, 1);
    assert_true(rb.data.seg_id != rc.data.seg_id);
    close(fds[0]);
    assert_int_equal(rsimple(a, SS_MSG_ABORT, &xb), 0);
    /* A releases xa: its first area is lent again, without an fd */
    ss__req_release rr = { .n = 1 };
    rreq(a, SS_MSG_RELEASE, &rr, sizeof(rr), &xa, sizeof(xa));
    rid = rreq(a, SS_MSG_CREATE, &c, sizeof(c), NULL, 0);
    assert_int_equal(rreply(a, rid, SS_MSG_CREATE, &rb, sizeof(rb), fds, &nfds), 0);
    assert_int_equal(nfds, 0);
    assert_true(rb.data.seg_id == rc.data.seg_id);
    munmap(p, rc.data.seg_size);
    close(area);
    close(a); /* xb open: aborted; the areas go */
    stage_check(b, &xa, want, SZ);
    assert_int_equal(rsimple(b, SS_MSG_CONTAINS, &xb), 0);
    assert_int_equal(rsimple(b, SS_MSG_DELETE, &xa), 0);
    /* every area is gone with its connection; one empty arena is kept
     * warm (32 MiB here: an eighth of the capacity), its memfd open (its
     * readers' fd is closed while it holds nothing) */
    ss_stats st = rstats(b);
    /* (an arena the store's arena thread is making ahead meanwhile is
     * given back once it finds one idle: wait for that) */
    for (int i = 0; i < 500 && st.arena_bytes != 32u << 20; i++) {
        usleep(10000);
        st = rstats(b);
    }
    assert_int_equal(st.arena_live_bytes, 0);
    assert_int_equal(st.arena_bytes, 32u << 20);
    close(b);
    check_store_ok_plus(1);
}

static int kill_child(void **state)
{
    (void)state;
    if (g_child > 0) {
        kill(g_child, SIGKILL);
        waitpid(g_child, NULL, 0);
        g_child = 0;
    }
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(t_random_bytes),
        cmocka_unit_test(t_truncated_and_bad_headers),
        cmocka_unit_test(t_len_lies),
        cmocka_unit_test(t_absurd_counts),
        cmocka_unit_test(t_huge_sizes),
        cmocka_unit_test(t_put_many_hostile),
        cmocka_unit_test(t_fds_in_requests),
        cmocka_unit_test(t_before_hello),
        cmocka_unit_test(t_hello_other_version),
        cmocka_unit_test(t_release_without_refs),
        cmocka_unit_test(t_release_prefix),
        cmocka_unit_test(t_other_clients_object),
        cmocka_unit_test(t_never_reads),
        cmocka_unit_test(t_subscriber),
        cmocka_unit_test_teardown(t_killed_creator, kill_child),
        cmocka_unit_test(t_seal_tampering),
        cmocka_unit_test(t_index_requests),
        cmocka_unit_test(t_seal_failure_holds),
        cmocka_unit_test(t_capacity_wait),
        cmocka_unit_test(t_evict_lru),
        cmocka_unit_test(t_staging_hostile),
    };

    signal(SIGPIPE, SIG_IGN);
    return t_run(tests, group_setup, group_teardown);
}
