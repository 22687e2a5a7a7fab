/* SPDX-License-Identifier: MIT */
/*
 * The client library against a store that misbehaves on purpose: a thread
 * serving one connection on a socket in t_tmpdir() answers HELLO, then
 * each case's script answers the rest (src/lib/client*.c, white-box: the
 * fake speaks the wire format of proto.h).
 *
 * Checked: every request the library sends passes ss__proto_check_request;
 * a well-behaved exchange works (one mapping per segment, RELEASE sent per
 * reference); malformed, truncated, oversized, unsolicited or fd-carrying
 * replies, SS_FD_NONE for a segment never received, MSG_CTRUNC (more fds
 * than a reply may carry) and a hang-up all give an error and a dead
 * handle, never a crash; a GET batch failing after earlier batches took
 * references gives them back (RELEASE when the connection lives) and
 * leaves `out` untouched; a HELLO in another version or none at all gives
 * -SS_E_VERSION / -ETIMEDOUT; a send that fails without ending the
 * connection (ENOBUFS, injected) keeps small-object releases pending for
 * the next request, and ends the connection when it carried an object
 * segment's release. After each case no fd of this process is left over.
 * ss__cl_map_writable returns a mapping or ss__err_ptr(-errno), the one
 * error channel of the library's internals.
 */
#include "client_int.h"
#include "proto.h"
#include "segment.h"
#include "store_int.h"
#include "sys.h"
#include "t_helpers.h"

#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <unistd.h>
#include <linux/memfd.h>

/* ---- send failures, injected into this thread's next sends (the
 * library is linked into this program, so its sendmsg and sendmmsg are
 * these; the fake store's thread sends as usual) */

static _Thread_local int fail_sends; /* how many of the next sends fail */
static _Thread_local int fail_errno;

ssize_t sendmsg(int fd, const struct msghdr *m, int flags)
{
    static ssize_t (*real)(int, const struct msghdr *, int);

    if (fail_sends > 0) {
        fail_sends--;
        errno = fail_errno;
        return -1;
    }
    if (!real)
        real = (ssize_t(*)(int, const struct msghdr *, int))dlsym(RTLD_NEXT, "sendmsg");
    return real(fd, m, flags);
}

int sendmmsg(int fd, struct mmsghdr *v, unsigned int n, int flags)
{
    static int (*real)(int, struct mmsghdr *, unsigned int, int);

    if (fail_sends > 0) {
        fail_sends--;
        errno = fail_errno;
        return -1;
    }
    if (!real)
        real = (int (*)(int, struct mmsghdr *, unsigned int, int))dlsym(RTLD_NEXT, "sendmmsg");
    return real(fd, v, n, flags);
}

typedef struct fake fake;
typedef int (*fake_fn)(fake *f, const ss__msg_hdr *h, const unsigned char *body);

struct fake {
    char path[108];
    int lfd, cfd;
    pthread_t th;
    fake_fn fn;
    uint16_t hello_version;
    bool hello_refuse; /* as a store of another version answers our HELLO */
    bool no_hello;
    int bad_requests; /* requests the checker refused */
    int released;     /* ids released */
    int release_msgs; /* RELEASE messages */
    int contains;     /* CONTAINS requests */
    int index_reqs;   /* INDEX requests */
    ss__index *index; /* handed out on INDEX (else refused) */
    _Atomic bool objects; /* script_some_objects: GETs answered with an OBJECT */
    _Atomic bool hangup;  /* script_contains_none: close at the next request */
    int gets;         /* GET requests seen */
    int get_ids;      /* ids they asked for */
    int seg;          /* a 64 KiB memfd to hand out */
};


static int fake_send(fake *f, const void *bytes, size_t len, const int *fds, unsigned nfds)
{
    union {
        struct cmsghdr h;
        char b[CMSG_SPACE(253 * sizeof(int))];
    } cm;
    struct iovec iov = { (void *)bytes, len };
    struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1 };

    if (nfds) {
        struct cmsghdr *c;

        memset(&cm, 0, sizeof(cm));
        m.msg_control = cm.b;
        m.msg_controllen = CMSG_SPACE(nfds * sizeof(int));
        c = CMSG_FIRSTHDR(&m);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(nfds * sizeof(int));
        memcpy(CMSG_DATA(c), fds, nfds * sizeof(int));
    }
    return sendmsg(f->cfd, &m, MSG_NOSIGNAL) == (ssize_t)len ? 0 : -1;
}

/* a header-only reply */
static int fake_status(fake *f, const ss__msg_hdr *req, uint16_t type, int32_t status)
{
    ss__msg_hdr h;

    ss__proto_hdr(&h, type, req->req_id, sizeof(h), status, SS_MSGF_REPLY);
    return fake_send(f, &h, sizeof(h), NULL, 0);
}

/* INDEX: the fake's index memfds as the store hands them out, or a
 * refusal when it has none. */
static int fake_index_reply(fake *f, const ss__msg_hdr *req, const unsigned char *body)
{
    struct {
        ss__msg_hdr h;
        ss__rep_index r;
    } m;
    ss__req_index rq;
    int fds[SS_PROTO_MAX_FDS];
    uint32_t n;

    f->index_reqs++;
    if (!f->index)
        return fake_status(f, req, SS_MSG_INDEX, -ENOSYS);
    memcpy(&rq, body, sizeof(rq));
    n = rq.first < f->index->nchunks ? f->index->nchunks - rq.first : 0;
    fds[0] = f->index->bucket_fd;
    for (uint32_t i = 0; i < n; i++)
        fds[1 + i] = f->index->chunk_fds[rq.first + i];
    memset(&m, 0, sizeof(m));
    m.r = (ss__rep_index){ .nchunks = f->index->nchunks, .first = rq.first, .n = n };
    ss__proto_hdr(&m.h, SS_MSG_INDEX, req->req_id, sizeof(m), 0, SS_MSGF_REPLY);
    return fake_send(f, &m, sizeof(m), fds, 1 + n);
}

/* One request (of a datagram): < 0 ends the connection. */
static int fake_one(fake *f, const unsigned char *buf, size_t n)
{
    ss__msg_hdr h;
    int type = ss__proto_check_request(buf, n, 0);

    if (type < 0) {
        f->bad_requests++;
        return 0;
    }
    memcpy(&h, buf, sizeof(h));
    if (type == SS_MSG_HELLO) {
        struct {
            ss__msg_hdr h;
            ss__rep_hello r;
        } m;
        if (f->no_hello)
            return 0;
        if (f->hello_refuse) {
            /* header only, in its own version, then the close */
            ss__proto_hdr(&m.h, SS_MSG_HELLO, h.req_id, sizeof(m.h), -SS_E_VERSION,
                          SS_MSGF_REPLY);
            m.h.version = SS_PROTO_VERSION + 1;
            fake_send(f, &m.h, sizeof(m.h), NULL, 0);
            return -1;
        }
        memset(&m, 0, sizeof(m));
        ss__proto_hdr(&m.h, SS_MSG_HELLO, h.req_id, sizeof(m), 0, SS_MSGF_REPLY);
        if (f->hello_version)
            m.h.version = f->hello_version;
        m.r = (ss__rep_hello){ .store_id = 1, .client_id = 1, .small_max = 65536,
                               .capacity = 1 << 30, .max_msg = SS_PROTO_MAX_MSG };
        fake_send(f, &m, sizeof(m), NULL, 0);
        return 0;
    }
    if (type == SS_MSG_RELEASE) {
        ss__req_release r;
        memcpy(&r, buf + sizeof(h), sizeof(r));
        f->released += (int)r.n;
        f->release_msgs++;
        return 0;
    }
    if (type == SS_MSG_CONTAINS)
        f->contains++;
    if (type == SS_MSG_INDEX)
        return fake_index_reply(f, &h, buf + sizeof(h));
    if (type == SS_MSG_GET) {
        ss__req_get r;
        memcpy(&r, buf + sizeof(h), sizeof(r));
        f->gets++;
        f->get_ids += (int)r.n;
    }
    if (!f->fn || f->fn(f, &h, buf + sizeof(h)) < 0)
        return -1;
    return 0;
}

static void *fake_main(void *arg)
{
    fake *f = arg;
    static unsigned char buf[SS_PROTO_MAX_MSG + 16];

    f->cfd = accept4(f->lfd, NULL, NULL, SOCK_CLOEXEC);
    if (f->cfd < 0)
        return NULL;
    for (;;) {
        ssize_t n = recv(f->cfd, buf, sizeof(buf), 0);
        size_t first;

        if (n <= 0)
            break;
        /* a RELEASE may lead a datagram: the request behind it follows */
        first = ss__proto_split_request(buf, (size_t)n);
        if (fake_one(f, buf, first) < 0 ||
            (first < (size_t)n && fake_one(f, buf + first, (size_t)n - first) < 0))
            break;
    }
    close(f->cfd);
    f->cfd = -1;
    return NULL;
}

static void fake_start(fake *f, fake_fn fn)
{
    struct sockaddr_un a = { .sun_family = AF_UNIX };
    static int n;

    memset(f, 0, sizeof(*f));
    f->fn = fn;
    f->cfd = -1;
    snprintf(f->path, sizeof(f->path), "%s/fake%d.sock", t_tmpdir(), n++);
    strcpy(a.sun_path, f->path);
    f->lfd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    assert_true(f->lfd >= 0);
    assert_int_equal(bind(f->lfd, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(listen(f->lfd, 4), 0);
    f->seg = (int)syscall(SYS_memfd_create, "fake-seg", MFD_CLOEXEC);
    assert_true(f->seg >= 0);
    assert_int_equal(ftruncate(f->seg, 65536), 0);
    assert_int_equal(pwrite(f->seg, "0123456789abcdef", 16, 0), 16);
    assert_int_equal(pthread_create(&f->th, NULL, fake_main, f), 0);
}

static void fake_stop(fake *f)
{
    shutdown(f->lfd, SHUT_RDWR); /* unblocks an accept that never came */
    pthread_join(f->th, NULL);
    close(f->lfd);
    close(f->seg);
    unlink(f->path);
    assert_int_equal(f->bad_requests, 0);
}

static ss_id fid(int n)
{
    ss_id id;

    memset(&id, 0, sizeof(id));
    snprintf((char *)id.b, sizeof(id.b), "fake-%d", n);
    return id;
}

/* a GET reply: n entries, all found in the fake's one SMALL segment (its
 * fd sent with the first entry), each 8 bytes at offset 64*i */
static int fake_get_reply(fake *f, const ss__msg_hdr *req, uint32_t n, int flavour)
{
    static unsigned char m[SS_PROTO_MAX_REPLY];
    ss__msg_hdr h;
    ss__rep_get r = { .n = n, .nfds = 1 };
    size_t len = sizeof(h) + sizeof(r) + n * sizeof(ss__get_entry);
    int fds[200];
    unsigned nfds = 1;

    for (uint32_t i = 0; i < n; i++) {
        ss__get_entry e;
        memset(&e, 0, sizeof(e));
        e.data = (ss__segref){ 77, 65536, 64 * i, 8, i == 0 ? 0 : SS_FD_NONE, SS_SEG_SMALL };
        if (flavour == 1 && i == 0) /* a segment we never got */
            e.data = (ss__segref){ 78, 65536, 0, 8, SS_FD_NONE, SS_SEG_SMALL };
        memcpy(m + sizeof(h) + sizeof(r) + i * sizeof(e), &e, sizeof(e));
    }
    if (flavour == 1) {
        r.nfds = 0;
        nfds = 0;
        /* entry 1.. name seg 77 without an fd either: all unknown */
    }
    for (unsigned i = 0; i < 200; i++)
        fds[i] = f->seg;
    if (flavour == 2) { /* more fds than the library's buffer: MSG_CTRUNC */
        r.nfds = 200;
        nfds = 200;
    }
    memcpy(m + sizeof(h), &r, sizeof(r));
    ss__proto_hdr(&h, SS_MSG_GET, req->req_id, (uint32_t)len, (int32_t)n, SS_MSGF_REPLY);
    memcpy(m, &h, sizeof(h));
    return fake_send(f, m, len, fds, nfds);
}

/* a GET reply of one entry in an OBJECT segment (the fake's memfd) */
static int fake_get_object(fake *f, const ss__msg_hdr *req)
{
    struct {
        ss__msg_hdr h;
        ss__rep_get r;
        ss__get_entry e;
    } m;

    memset(&m, 0, sizeof(m));
    ss__proto_hdr(&m.h, SS_MSG_GET, req->req_id, sizeof(m), 1, SS_MSGF_REPLY);
    m.r = (ss__rep_get){ .n = 1, .nfds = 1 };
    m.e.data = (ss__segref){ 90, 65536, 0, 16, 0, SS_SEG_OBJECT };
    return fake_send(f, &m, sizeof(m), &f->seg, 1);
}

static int script_good(fake *f, const ss__msg_hdr *h, const unsigned char *body)
{
    switch (h->type) {
    case SS_MSG_CONTAINS:
        return fake_status(f, h, SS_MSG_CONTAINS, 1);
    case SS_MSG_GET: {
        ss__req_get r;
        memcpy(&r, body, sizeof(r));
        return fake_get_reply(f, h, r.n, 0);
    }
    default:
        return fake_status(f, h, h->type, 0);
    }
}

static int script_object(fake *f, const ss__msg_hdr *h, const unsigned char *body)
{
    if (h->type == SS_MSG_GET)
        return fake_get_object(f, h);
    return script_good(f, h, body);
}

/* CONTAINS answered 20 ms late */
static int script_slow(fake *f, const ss__msg_hdr *h, const unsigned char *body)
{
    if (h->type == SS_MSG_CONTAINS)
        t_sleep_ms(20);
    return script_good(f, h, body);
}

/* CONTAINS says 0 (or the fake hangs up, once told to) */
static int script_contains_none(fake *f, const ss__msg_hdr *h, const unsigned char *body)
{
    if (atomic_load(&f->hangup))
        return -1;
    if (h->type == SS_MSG_CONTAINS)
        return fake_status(f, h, SS_MSG_CONTAINS, 0);
    return script_good(f, h, body);
}

/* GETs answered with an OBJECT segment while f->objects, else SMALL */
static int script_some_objects(fake *f, const ss__msg_hdr *h, const unsigned char *body)
{
    return f->objects ? script_object(f, h, body) : script_good(f, h, body);
}

/* the second GET batch fails with an error reply: the connection lives */
static int script_batch_err(fake *f, const ss__msg_hdr *h, const unsigned char *body)
{
    if (h->type == SS_MSG_GET && f->gets == 2)
        return fake_status(f, h, SS_MSG_GET, -ENOMEM);
    return script_good(f, h, body);
}

static int script_batch_proto(fake *f, const ss__msg_hdr *h, const unsigned char *body)
{
    if (h->type == SS_MSG_GET && f->gets == 2)
        return fake_get_reply(f, h, 3, 0); /* n differs from the request's */
    return script_good(f, h, body);
}

static int script_fd_none(fake *f, const ss__msg_hdr *h, const unsigned char *body)
{
    ss__req_get r;

    if (h->type != SS_MSG_GET)
        return script_good(f, h, body);
    memcpy(&r, body, sizeof(r));
    return fake_get_reply(f, h, r.n, 1);
}

static int script_ctrunc(fake *f, const ss__msg_hdr *h, const unsigned char *body)
{
    ss__req_get r;

    if (h->type != SS_MSG_GET)
        return script_good(f, h, body);
    memcpy(&r, body, sizeof(r));
    return fake_get_reply(f, h, r.n, 2);
}

static int script_wrong_id(fake *f, const ss__msg_hdr *h, const unsigned char *body)
{
    ss__msg_hdr x = *h;
    (void)body;
    x.req_id += 7;
    return fake_status(f, &x, h->type, 1);
}

static int script_wrong_type(fake *f, const ss__msg_hdr *h, const unsigned char *body)
{
    (void)body;
    return fake_status(f, h, SS_MSG_DELETE, 0);
}

static int script_huge(fake *f, const ss__msg_hdr *h, const unsigned char *body)
{
    static unsigned char m[SS_PROTO_MAX_REPLY + 4096];
    (void)body;
    ss__proto_hdr((ss__msg_hdr *)m, h->type, h->req_id, sizeof(m), 0, SS_MSGF_REPLY);
    return fake_send(f, m, sizeof(m), NULL, 0);
}

static int script_fd_on_status(fake *f, const ss__msg_hdr *h, const unsigned char *body)
{
    ss__msg_hdr x;
    (void)body;
    ss__proto_hdr(&x, h->type, h->req_id, sizeof(x), 1, SS_MSGF_REPLY);
    return fake_send(f, &x, sizeof(x), &f->seg, 1);
}

static int script_hangup(fake *f, const ss__msg_hdr *h, const unsigned char *body)
{
    (void)f;
    (void)h;
    (void)body;
    return -1;
}

static void test_fake_store_good(void **state)
{
    int fds0 = t_count_fds();
    fake f;
    ss_client *c;
    ss_object o[3];
    ss_id ids[3] = { fid(0), fid(1), fid(0) };
    (void)state;

    fake_start(&f, script_good);
    t_assert_ok(ss_connect(f.path, 0, &c));
    assert_int_equal(ss_contains(c, &ids[0]), 1);
    t_assert_ok(ss_delete(c, &ids[0]));
    t_assert_ok(ss_put(c, &ids[0], "abc", 3, "m", 1));
    assert_int_equal(ss_get(c, ids, 3, 0, o), 3);
    assert_memory_equal(o[0].data, "01234567", 8);
    assert_memory_equal(o[1].data, "\0\0\0\0\0\0\0\0", 8);
    assert_ptr_equal(o[2].data, (const char *)o[0].data + 128);
    /* a second get reuses the mapping: the reply carries no new fd then */
    for (int i = 0; i < 3; i++)
        t_assert_ok(ss_release(c, &ids[i]));
    assert_int_equal(ss_release(c, &ids[0]), -ENOENT);
    ss_disconnect(c);
    fake_stop(&f);
    assert_int_equal(f.released, 3);
    assert_int_equal(t_count_fds(), fds0);
}

/* a later batch fails: references of the earlier ones are given back and
 * out stays untouched */
static void test_fake_store_batch_failure(void **state)
{
    int fds0 = t_count_fds();
    enum { N = 100 };
    static ss_id ids[N];
    static ss_object o[N], pattern[N];
    fake f;
    ss_client *c;
    (void)state;

    for (int i = 0; i < N; i++)
        ids[i] = fid(i);
    memset(pattern, 0x77, sizeof(pattern));

    /* an error reply: the connection survives, RELEASE goes out */
    fake_start(&f, script_batch_err);
    t_assert_ok(ss_connect(f.path, 0, &c));
    memcpy(o, pattern, sizeof(o));
    assert_int_equal(ss_get(c, ids, N, 0, o), -ENOMEM);
    assert_memory_equal(o, pattern, sizeof(o));
    assert_int_equal(ss_release(c, &ids[0]), -ENOENT);
    assert_int_equal(ss_contains(c, &ids[0]), 1); /* still connected */
    ss_disconnect(c);
    fake_stop(&f);
    assert_int_equal(f.released, SS_PROTO_MAX_IDS);

    /* a malformed reply: the connection dies, nothing stays held */
    fake_start(&f, script_batch_proto);
    t_assert_ok(ss_connect(f.path, 0, &c));
    memcpy(o, pattern, sizeof(o));
    assert_int_equal(ss_get(c, ids, N, 0, o), -SS_E_PROTO);
    assert_memory_equal(o, pattern, sizeof(o));
    assert_int_equal(ss_release(c, &ids[0]), -ENOENT);
    assert_int_equal(ss_contains(c, &ids[0]), -SS_E_PROTO);
    ss_disconnect(c);
    fake_stop(&f);
    assert_int_equal(t_count_fds(), fds0);
}

static void check_fatal(fake_fn fn, int call, int want)
{
    int fds0 = t_count_fds();
    fake f;
    ss_client *c;
    ss_id id = fid(1);
    ss_object o, pattern;
    int rc;

    fake_start(&f, fn);
    t_assert_ok(ss_connect(f.path, 0, &c));
    memset(&pattern, 0x33, sizeof(pattern));
    o = pattern;
    rc = call == 0 ? ss_get(c, &id, 1, 0, &o) : ss_contains(c, &id);
    if (rc != want)
        fail_msg("got %d (%s), want %d (%s)", rc, ss_strerror(rc), want, ss_strerror(want));
    assert_memory_equal(&o, &pattern, sizeof(o));
    /* the handle stays dead, and says why */
    assert_int_equal(ss_contains(c, &id), want);
    assert_int_equal(ss_put(c, &id, "x", 1, NULL, 0), want);
    assert_int_equal(ss_release(c, &id), -ENOENT);
    ss_disconnect(c);
    fake_stop(&f);
    assert_int_equal(t_count_fds(), fds0);
}

static void test_fake_store_bad_replies(void **state)
{
    (void)state;
    check_fatal(script_fd_none, 0, -SS_E_PROTO);    /* SS_FD_NONE for a segment we lack */
    check_fatal(script_ctrunc, 0, -SS_E_PROTO);     /* fds cut: MSG_CTRUNC */
    check_fatal(script_wrong_id, 1, -SS_E_PROTO);   /* nobody asked */
    check_fatal(script_wrong_type, 1, -SS_E_PROTO); /* answer to another question */
    check_fatal(script_huge, 1, -SS_E_PROTO);       /* longer than any reply: MSG_TRUNC */
    check_fatal(script_fd_on_status, 1, -SS_E_PROTO); /* an fd where none belongs */
    check_fatal(script_hangup, 1, -ECONNRESET);     /* the store goes away */
}

/* A send that fails without ending the connection loses no release. */
static void test_send_failure(void **state)
{
    int fds0 = t_count_fds();
    fake f;
    ss_client *c;
    ss_object o;
    ss_id id = fid(1), other;
    (void)state;

    /* a small object's release waits for the next request; that send
     * fails: the release waits for the one after */
    fake_start(&f, script_good);
    t_assert_ok(ss_connect(f.path, 0, &c));
    assert_int_equal(ss_get(c, &id, 1, 0, &o), 1);
    t_assert_ok(ss_release(c, &id));
    fail_sends = 1;
    fail_errno = ENOBUFS;
    other = fid(99);
    assert_int_equal(ss_delete(c, &other), -ENOBUFS);
    assert_int_equal(fail_sends, 0);
    assert_int_equal(ss_contains(c, &id), 1); /* still connected */
    ss_disconnect(c);
    fake_stop(&f);
    assert_int_equal(f.released, 1);

    /* a full batch of 64 sent on its own fails: the next request carries
     * it (64 ids: a get of an id held already would be served locally) */
    fake_start(&f, script_good);
    t_assert_ok(ss_connect(f.path, 0, &c));
    for (int i = 0; i < (int)SS_PROTO_MAX_IDS; i++) {
        ss_id k = fid(100 + i);
        assert_int_equal(ss_get(c, &k, 1, 0, &o), 1);
    }
    for (int i = 0; i < (int)SS_PROTO_MAX_IDS - 1; i++) {
        ss_id k = fid(100 + i);
        t_assert_ok(ss_release(c, &k));
    }
    fail_sends = 1;
    fail_errno = ENOMEM;
    id = fid(100 + SS_PROTO_MAX_IDS - 1);
    t_assert_ok(ss_release(c, &id)); /* the 64th: sent at once, fails */
    assert_int_equal(fail_sends, 0);
    assert_int_equal(ss_contains(c, &id), 1);
    ss_disconnect(c);
    fake_stop(&f);
    assert_int_equal(f.released, (int)SS_PROTO_MAX_IDS);

    /* an object segment's release fails: its segment cannot be settled,
     * the connection ends (the store then drops every reference) */
    fake_start(&f, script_object);
    t_assert_ok(ss_connect(f.path, 0, &c));
    assert_int_equal(ss_get(c, &id, 1, 0, &o), 1);
    assert_memory_equal(o.data, "0123456789abcdef", 16);
    fail_sends = 1;
    fail_errno = ENOBUFS;
    t_assert_ok(ss_release(c, &id));
    assert_int_equal(fail_sends, 0);
    assert_int_equal(ss_contains(c, &id), -ENOBUFS);
    ss_disconnect(c);
    fake_stop(&f);
    assert_int_equal(f.released, 0);
    assert_int_equal(t_count_fds(), fds0);
}

/* A get of an id this client holds is served by the client: no GET, no
 * RELEASE, the same view; the store hears of the first reference and the
 * last release only. A delete through the handle ends local serving of
 * that id; a failed batch gives its local references back too. */
static void test_local_gets(void **state)
{
    int fds0 = t_count_fds();
    fake f;
    ss_client *c;
    ss_object o, first, b[3];
    ss_id a = fid(1), ids[3] = { fid(1), fid(2), fid(1) };
    (void)state;

    fake_start(&f, script_good);
    t_assert_ok(ss_option_set(SS_OPT_LOCAL_GETS, "on")); /* read at connect */
    t_assert_ok(ss_connect(f.path, 0, &c));
    t_assert_ok(ss_option_set(SS_OPT_LOCAL_GETS, "off"));
    assert_int_equal(ss_get(c, &a, 1, 0, &first), 1); /* GET 1: a */
    for (int i = 0; i < 100; i++) {
        memset(&o, 0, sizeof(o));
        assert_int_equal(ss_get(c, &a, 1, 0, &o), 1);
        assert_ptr_equal(o.data, first.data);
        assert_int_equal(o.size, first.size);
        assert_int_equal(o.uid, first.uid);
        assert_memory_equal(&o.id, &a, sizeof(a));
        t_assert_ok(ss_release(c, &a));
    }
    /* a batch: only the id not held goes to the store (GET 2: one id) */
    assert_int_equal(ss_get(c, ids, 3, 0, b), 3);
    assert_ptr_equal(b[0].data, first.data);
    assert_ptr_equal(b[2].data, first.data);
    assert_non_null(b[1].data);
    t_assert_ok(ss_release_object(c, &b[2]));
    t_assert_ok(ss_release(c, &ids[1]));
    t_assert_ok(ss_release(c, &a));
    t_assert_ok(ss_release(c, &a)); /* the last: a RELEASE (pending) */
    assert_int_equal(ss_release(c, &a), -ENOENT);
    /* not held any more: the store is asked (GET 3) */
    assert_int_equal(ss_get(c, &a, 1, 0, &o), 1);
    /* deleted through this handle: asked again (GET 4) though held */
    t_assert_ok(ss_delete(c, &a));
    assert_int_equal(ss_get(c, &a, 1, 0, &o), 1);
    t_assert_ok(ss_release(c, &a));
    t_assert_ok(ss_release(c, &a));
    ss_disconnect(c);
    fake_stop(&f);
    assert_int_equal(f.gets, 4);
    assert_int_equal(f.get_ids, 4);
    assert_int_equal(f.released, 4); /* a three times, fid(2) once */

    /* a batch whose GET fails gives back the local reference it took */
    fake_start(&f, script_batch_err); /* the second GET fails */
    t_assert_ok(ss_connect(f.path, 0, &c));
    assert_int_equal(ss_get(c, &a, 1, 0, &first), 1);
    memset(b, 0x5a, sizeof(b));
    assert_int_equal(ss_get(c, ids, 2, 0, b), -ENOMEM);
    for (size_t i = 0; i < sizeof(b); i++)
        assert_int_equal(((unsigned char *)b)[i], 0x5a); /* untouched */
    t_assert_ok(ss_release(c, &a));
    assert_int_equal(ss_release(c, &a), -ENOENT);
    ss_disconnect(c);
    fake_stop(&f);
    assert_int_equal(f.released, 1);
    assert_int_equal(t_count_fds(), fds0);
}

/* ss_release_many / ss_release_objects: each entry as ss_release would,
 * skipped ones counted out; the references the store must learn of leave
 * in as few RELEASE messages as possible (64 ids a message), with the
 * pending small releases in the first; small objects only wait for the
 * next call. */
static void test_release_many(void **state)
{
    int fds0 = t_count_fds();
    fake f;
    ss_client *c;
    ss_object o, views[3];
    ss_id small = fid(1), ids[70], two[3] = { fid(2), fid(3), fid(2) };
    (void)state;

    fake_start(&f, script_some_objects);
    t_assert_ok(ss_connect(f.path, 0, &c));
    assert_int_equal(ss_release_many(NULL, ids, 1), -EINVAL);
    assert_int_equal(ss_release_many(c, NULL, 1), -EINVAL);
    assert_int_equal(ss_release_many(c, NULL, 0), 0);
    assert_int_equal(ss_release_objects(c, NULL, 2), -EINVAL);

    /* one small release pending, then 70 large objects at once: two
     * messages (64 ids, the pending one first, then 7) */
    assert_int_equal(ss_get(c, &small, 1, 0, &o), 1);
    f.objects = true;
    for (int i = 0; i < 70; i++) {
        ids[i] = fid(100 + i);
        assert_int_equal(ss_get(c, &ids[i], 1, 0, &o), 1);
    }
    f.objects = false;
    t_assert_ok(ss_release(c, &small)); /* pending: no message */
    assert_int_equal(ss_release_many(c, ids, 70), 70);
    assert_int_equal(ss_contains(c, &small), 1); /* the fake read all before */
    assert_int_equal(f.release_msgs, 2);
    assert_int_equal(f.released, 71);
    /* none held any more: every entry skipped, nothing sent */
    assert_int_equal(ss_release_many(c, ids, 70), 0);

    /* small objects only: an id twice drops two references, one not held
     * is skipped; they wait for the next call (one message with it) */
    assert_int_equal(ss_get(c, two, 3, 0, views), 3);
    ss_id three[4] = { fid(2), fid(9), fid(3), fid(2) };
    assert_int_equal(ss_release_many(c, three, 4), 3);
    assert_int_equal(ss_release(c, &two[0]), -ENOENT);
    assert_int_equal(ss_contains(c, &small), 1);
    assert_int_equal(f.release_msgs, 3);
    assert_int_equal(f.released, 74);

    /* by view: the missing one (NULL data) is skipped */
    assert_int_equal(ss_get(c, two, 2, 0, views), 2);
    views[2] = views[1];
    views[1].data = NULL;
    assert_int_equal(ss_release_objects(c, views, 3), 2);
    assert_int_equal(ss_release(c, &two[1]), -ENOENT);
    ss_disconnect(c);
    fake_stop(&f);
    assert_int_equal(f.released, 76);
    assert_int_equal(t_count_fds(), fds0);
}

/* Entry e of ix: id, in state st, chained (or unchained when st is
 * DELETED), written under the seqlock as the store writes it. */
static void fake_ix_set(ss__index *ix, uint32_t e, const ss_id *id, uint32_t st)
{
    ss__index_entry *en;

    t_assert_ok(ss__index_reserve(ix, e));
    en = ss__index_at(ix, e);
    if (st == SS_IX_DELETED)
        ss__index_unlink(ix, e);
    ss__index_write_begin(en);
    en->info = SS_IX_INFO(st, SS_SEG_SMALL, 0, 0);
    memcpy(&en->id, id, sizeof(*id));
    ss__index_write_end(en);
    if (st != SS_IX_DELETED)
        t_assert_ok(ss__index_link(ix, e));
}

/* ss_contains answers a sealed object from the store's index without a
 * CONTAINS (one INDEX at first use); a miss, a deleted entry, asks the
 * store; a grown hash table or a new chunk is mapped at the first miss
 * that needs it; pending small releases go out with an answer from the
 * index; a store that stopped answers nothing from its index. */
static void test_index_contains(void **state)
{
    int fds0 = t_count_fds();
    fake f;
    ss_client *c;
    ss__index ix;
    ss_object o;
    ss_id a = fid(1), b = fid(2), far = fid(7), small = fid(8);
    uint32_t e = 0;
    (void)state;

    t_assert_ok(ss__index_init(&ix, 1)); /* the fake's HELLO says store 1 */
    fake_start(&f, script_contains_none);
    f.index = &ix;
    t_assert_ok(ss_connect(f.path, 0, &c));
    fake_ix_set(&ix, e++, &a, SS_IX_SEALED);
    fake_ix_set(&ix, e++, &b, SS_IX_CREATED);
    assert_int_equal(ss_contains(c, &a), 1);
    assert_int_equal(f.index_reqs, 1);
    assert_int_equal(f.contains, 0);
    for (int i = 0; i < 100; i++)
        assert_int_equal(ss_contains(c, &a), 1);
    assert_int_equal(f.contains, 0);
    /* not sealed yet, or absent: the store is asked */
    assert_int_equal(ss_contains(c, &b), 0);
    assert_int_equal(ss_contains(c, &far), 0);
    assert_int_equal(f.contains, 2);
    /* deleted: never 1 from the index again */
    fake_ix_set(&ix, 0, &a, SS_IX_DELETED);
    assert_int_equal(ss_contains(c, &a), 0);
    assert_int_equal(f.contains, 3);
    fake_ix_set(&ix, 0, &a, SS_IX_SEALED);
    assert_int_equal(ss_contains(c, &a), 1);
    assert_int_equal(f.contains, 3);
    assert_int_equal(f.index_reqs, 1);

    /* the hash table grows (a new bucket memfd): mapped at the first miss */
    for (int i = 0; i < 5000; i++) {
        ss_id k = fid(1000 + i);
        fake_ix_set(&ix, e++, &k, SS_IX_SEALED);
    }
    assert_true(ix.bucket_gen > 1);
    for (int i = 0; i < 5000; i += 499) {
        ss_id k = fid(1000 + i);
        assert_int_equal(ss_contains(c, &k), 1);
    }
    assert_int_equal(f.contains, 3);
    assert_int_equal(f.index_reqs, 2);

    /* an entry in a chunk this handle has not mapped */
    fake_ix_set(&ix, SS_INDEX_CHUNK_ENTRIES + 3, &far, SS_IX_SEALED);
    assert_int_equal(ix.nchunks, 2);
    assert_int_equal(ss_contains(c, &far), 1);
    assert_int_equal(f.contains, 3);
    assert_int_equal(f.index_reqs, 3);

    /* a pending small release leaves with an answer from the index */
    assert_int_equal(ss_get(c, &small, 1, 0, &o), 1);
    t_assert_ok(ss_release(c, &small));
    assert_int_equal(ss_contains(c, &a), 1);
    assert_int_equal(ss_contains(c, &b), 0); /* a request: the fake read the RELEASE */
    assert_int_equal(f.released, 1);
    assert_int_equal(f.release_msgs, 1);

    /* the store says it stopped: its index answers nothing any more */
    __atomic_store_n(&((ss__index_hdr *)ix.chunks[0])->live_chunks, 0, __ATOMIC_RELEASE);
    assert_int_equal(ss_contains(c, &a), 0); /* the fake, asked, says 0 */
    assert_int_equal(f.contains, 5);
    f.hangup = true;
    assert_true(ss_contains(c, &a) < 0);
    ss_disconnect(c);
    fake_stop(&f);
    ss__index_fini(&ix);
    assert_int_equal(t_count_fds(), fds0);
}

/* SEALSTORE_BUSY_POLL (read at connect): the handle waiting for a reply
 * tries non-blocking receives first; off, it never does. */
static void test_busy_poll_wait(void **state)
{
    fake f;
    ss_client *c;
    ss_id id = fid(1);
    (void)state;

    for (int on = 0; on < 2; on++) {
        fake_start(&f, script_slow);
        t_assert_ok(ss_option_set(SS_OPT_BUSY_POLL, on ? "1s" : "0"));
        t_assert_ok(ss_connect(f.path, 0, &c));
        t_assert_ok(ss_option_set(SS_OPT_BUSY_POLL, "0"));
        assert_int_equal(ss_contains(c, &id), 1);
        if (on)
            assert_true(c->busy_spins > 0);
        else
            assert_int_equal(c->busy_spins, 0);
        ss_disconnect(c);
        fake_stop(&f);
    }
}

static void test_fake_store_hello(void **state)
{
    int fds0 = t_count_fds();
    fake f;
    ss_client *c = (ss_client *)0x1;
    (void)state;

    fake_start(&f, script_good);
    f.hello_version = SS_PROTO_VERSION + 1;
    assert_int_equal(ss_connect(f.path, 0, &c), -SS_E_VERSION);
    fake_stop(&f);
    fake_start(&f, script_good);
    f.hello_refuse = true;
    assert_int_equal(ss_connect(f.path, 0, &c), -SS_E_VERSION);
    fake_stop(&f);
    fake_start(&f, script_good);
    f.no_hello = true;
    assert_int_equal(ss_connect(f.path, 0, &c), -ETIMEDOUT);
    fake_stop(&f);
    assert_ptr_equal(c, (ss_client *)0x1);
    assert_int_equal(t_count_fds(), fds0);
}

static void test_map_writable(void **state)
{
    int fd = (int)syscall(SYS_memfd_create, "t_client", MFD_CLOEXEC), ro;
    unsigned char *p;
    (void)state;

    assert_true(fd >= 0);
    assert_int_equal(ftruncate(fd, 4096), 0);
    p = ss__cl_map_writable(4096, -1);
    assert_true(ss__is_err(p));
    assert_int_equal(ss__ptr_err(p), -EBADF);
    ro = ss__sys_reopen(fd, O_RDONLY); /* a read-only file: no shared RW map */
    assert_true(ro >= 0);
    p = ss__cl_map_writable(4096, ro);
    assert_true(ss__is_err(p));
    assert_int_equal(ss__ptr_err(p), -EACCES);
    p = ss__cl_map_writable(4096, fd);
    assert_false(ss__is_err(p));
    p[4095] = 0x5a;
    assert_int_equal(ss__sys_munmap(p, 4096), 0);
    close(ro);
    close(fd);
}

int main(void)
{
    /* the fake stores speak what these cases need, not PINS: every get
     * asks the store */
    if (ss_option_set(SS_OPT_INDEX_GETS, "off") != 0)
        return 99;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_map_writable),
        cmocka_unit_test(test_fake_store_good),
        cmocka_unit_test(test_fake_store_batch_failure),
        cmocka_unit_test(test_fake_store_bad_replies),
        cmocka_unit_test(test_fake_store_hello),
        cmocka_unit_test(test_send_failure),
        cmocka_unit_test(test_local_gets),
        cmocka_unit_test(test_release_many),
        cmocka_unit_test(test_index_contains),
        cmocka_unit_test(test_busy_poll_wait),
    };

    return t_run(tests, NULL, NULL);
}
