/* SPDX-License-Identifier: MIT */
/*
 * What one client can make the store hold, and what it can take from the
 * others:
 *  - t_hello_timeout: a connection that never says HELLO is closed after
 *    the handshake timeout, and connections still waiting to say it are
 *    limited (the next one is refused);
 *  - t_parked_quota: parked GETs are charged to their client and to the
 *    store; past either bound a GET that would park fails with -ENOBUFS,
 *    stats show the figures, and they go back to 0 when the clients leave;
 *  - t_fd_budget: fds in replies a client does not read count against the
 *    store's uid in the kernel (ETOOMANYREFS past its RLIMIT_NOFILE, for
 *    every client). A store running as an unprivileged uid, with a small
 *    RLIMIT_NOFILE, and clients that request every object on several
 *    connections and never read: another client's gets keep working, and
 *    the flooding connections are only paused (they get every reply once
 *    they read). Needs root, to run the store and the flood as another
 *    uid (a root store is exempt from the kernel's limit).
 *
 * The first two run an embedded store with its limits shrunk through the
 * internal ss__g_limits; the third forks the store into a process of its
 * own.
 */
#include "config.h"

#include "t_helpers.h"

#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>

#include "proto.h"
#include "store.h"
#include "store_int.h"

/* ------------------------------------------------------------ raw wire */

static uint32_t g_req = 1000;

static int wire_connect(const char *path)
{
    struct sockaddr_un a = { .sun_family = AF_UNIX };
    int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);

    if (fd < 0)
        return -errno;
    snprintf(a.sun_path, sizeof(a.sun_path), "%s", path);
    if (connect(fd, (struct sockaddr *)&a, sizeof(a)) < 0) {
        int err = -errno;
        close(fd);
        return err;
    }
    return fd;
}

/* Send header + body; 0 or -errno. */
static int wire_send(int fd, uint16_t type, uint32_t req_id, const void *body, size_t blen)
{
    unsigned char buf[sizeof(ss__msg_hdr) + sizeof(ss__req_get) + SS_PROTO_MAX_IDS * sizeof(ss_id)];
    ss__msg_hdr *h = (ss__msg_hdr *)buf;

    if (sizeof(*h) + blen > sizeof(buf))
        return -EMSGSIZE;
    ss__proto_hdr(h, type, req_id, (uint32_t)(sizeof(*h) + blen), 0, 0);
    if (blen)
        memcpy(buf + sizeof(*h), body, blen);
    return send(fd, buf, sizeof(*h) + blen, MSG_NOSIGNAL) == (ssize_t)(sizeof(*h) + blen) ? 0
                                                                                          : -errno;
}

/* One message: its length, 0 at EOF, -ETIMEDOUT, -errno. Fds it carries
 * are discarded by the kernel (no control buffer). */
static ssize_t wire_recv(int fd, void *buf, size_t cap, int timeout_ms)
{
    struct pollfd p = { .fd = fd, .events = POLLIN };

    if (poll(&p, 1, timeout_ms) == 0)
        return -ETIMEDOUT;
    ssize_t n = recv(fd, buf, cap, 0);
    if (n < 0)
        return errno == ECONNRESET ? 0 : -errno;
    return n;
}

/* HELLO and its reply: 0 or -errno. */
static int wire_hello(int fd)
{
    ss__req_hello r = { .pid = (uint32_t)getpid() };
    unsigned char buf[512];
    int rc = wire_send(fd, SS_MSG_HELLO, ++g_req, &r, sizeof(r));

    if (rc < 0)
        return rc;
    ssize_t n = wire_recv(fd, buf, sizeof(buf), 10000);
    if (n <= 0)
        return n == 0 ? -ECONNRESET : (int)n;
    return ((ss__msg_hdr *)buf)->status;
}

/* A GET of n ids (timeout_ms as the request carries it). */
static int wire_get(int fd, uint32_t req_id, const ss_id *ids, uint32_t n, int64_t timeout_ms)
{
    struct {
        ss__req_get g;
        ss_id ids[SS_PROTO_MAX_IDS];
    } b;

    memset(&b, 0, sizeof(b));
    b.g.n = n;
    b.g.timeout_ms = timeout_ms;
    memcpy(b.ids, ids, n * sizeof(ss_id));
    return wire_send(fd, SS_MSG_GET, req_id, &b, sizeof(b.g) + n * sizeof(ss_id));
}

static ss_id id_of(char tag, unsigned i)
{
    ss_id id;

    memset(&id, 0, sizeof(id));
    id.b[0] = (unsigned char)tag;
    memcpy(id.b + 1, &i, sizeof(i));
    return id;
}

/* ---------------------------------------------------- embedded store */

static ss__store *g_store;
static char g_path[108];

#define HELLO_TIMEOUT_MS 300u
#define HELLO_PENDING_MAX 6u
#define PARKED_CLIENT_MAX (64u << 10)
#define PARKED_MAX (256u << 10)

static int store_setup(void **state)
{
    (void)state;
    snprintf(g_path, sizeof(g_path), "%s/l.sock", t_tmpdir());
    ss__g_limits = (ss__limits){
        .hello_timeout_ms = HELLO_TIMEOUT_MS,
        .hello_pending_max = HELLO_PENDING_MAX,
        .parked_bytes_max = PARKED_MAX,
        .parked_client_max = PARKED_CLIENT_MAX,
    };
    int rc = ss__store_start_thread(&g_store, g_path, 0);
    ss__g_limits = (ss__limits){ 0 };
    return rc < 0 ? -1 : 0;
}

static int store_teardown(void **state)
{
    (void)state;
    ss__store_stop_thread(g_store);
    return 0;
}

static ss_stats stats_now(void)
{
    ss_client *c;

    t_assert_ok(ss_connect(g_path, 0, &c));
    ss_stats st = t_store_stats(c);
    ss_disconnect(c);
    return st;
}

/* The next thing on fd is EOF (within 10 s: the store closed it). */
static void expect_eof(int fd)
{
    unsigned char buf[256];
    ssize_t n = wire_recv(fd, buf, sizeof(buf), 10000);

    if (n != 0)
        fail_msg("connection not closed by the store: %zd", n);
}

static uint64_t clients_now(ss_client *c)
{
    return t_store_stats(c).clients;
}

static void t_hello_timeout(void **state)
{
    int fds[HELLO_PENDING_MAX];
    ss_client *c;

    (void)state;
    t_assert_ok(ss_connect(g_path, 0, &c));
    /* a connection that never speaks is closed after the timeout */
    fds[0] = wire_connect(g_path);
    t_assert_ok(fds[0]);
    expect_eof(fds[0]);
    close(fds[0]);

    /* connections that have not said HELLO are limited: with that many
     * accepted, the next one waits in the kernel's backlog ... */
    for (unsigned i = 0; i < HELLO_PENDING_MAX; i++)
        t_assert_ok(fds[i] = wire_connect(g_path));
    for (int i = 0; i < 1000 && clients_now(c) < 1 + HELLO_PENDING_MAX; i++)
        t_sleep_ms(5);
    assert_int_equal(clients_now(c), 1 + HELLO_PENDING_MAX);
    int late = wire_connect(g_path);
    t_assert_ok(late);
    /* ... and is served once one of them timed out: when its HELLO is
     * answered, the store has closed at least one (each has its own
     * deadline, so the others may still be open); all go in the end */
    t_assert_ok(wire_hello(late));
    unsigned closed = 0;
    for (unsigned i = 0; i < HELLO_PENDING_MAX; i++) {
        unsigned char buf[64];
        if (wire_recv(fds[i], buf, sizeof(buf), 0) == 0)
            closed++;
    }
    if (closed == 0)
        fail_msg("a later connection was served while %u without HELLO were open",
                 HELLO_PENDING_MAX);
    for (unsigned i = 0; i < HELLO_PENDING_MAX; i++) {
        expect_eof(fds[i]);
        close(fds[i]);
    }
    close(late);
    ss_disconnect(c);
}

#define NCONN 8
#define GETS_PER_CONN 24

static void t_parked_quota(void **state)
{
    int fds[NCONN];
    ss_id ids[SS_PROTO_MAX_IDS];
    unsigned refused[NCONN] = { 0 }, parked = 0;
    uint64_t max_bytes = 0;

    (void)state;
    for (int k = 0; k < NCONN; k++) {
        t_assert_ok(fds[k] = wire_connect(g_path));
        t_assert_ok(wire_hello(fds[k]));
    }
    for (int k = 0; k < NCONN; k++) {
        for (unsigned j = 0; j < GETS_PER_CONN; j++) {
            /* ids nobody will create, no timeout: the GET parks */
            for (unsigned i = 0; i < SS_PROTO_MAX_IDS; i++)
                ids[i] = id_of('q', (unsigned)k << 20 | j << 8 | i);
            uint32_t gid = ++g_req, sid = ++g_req;
            t_assert_ok(wire_get(fds[k], gid, ids, SS_PROTO_MAX_IDS, -1));
            /* a STATS behind it: its reply comes after the GET's, if any */
            t_assert_ok(wire_send(fds[k], SS_MSG_STATS, sid, NULL, 0));
            for (;;) {
                static unsigned char buf[SS_PROTO_MAX_MSG];
                ssize_t n = wire_recv(fds[k], buf, sizeof(buf), 10000);
                if (n <= 0)
                    fail_msg("connection %d: no reply (%zd)", k, n);
                const ss__msg_hdr *h = (const void *)buf;
                if (h->req_id == gid) {
                    /* the only answer a parking GET gets now: over quota */
                    t_assert_err(h->status, -ENOBUFS);
                    refused[k]++;
                    continue;
                }
                assert_int_equal(h->req_id, sid);
                ss_stats st;
                memcpy(&st, buf + sizeof(*h), sizeof(st));
                if (st.parked_bytes > max_bytes)
                    max_bytes = st.parked_bytes;
                break;
            }
        }
        parked += GETS_PER_CONN - refused[k];
    }
    /* every client met its quota; the later ones the store's total */
    for (int k = 0; k < NCONN; k++)
        if (refused[k] == 0)
            fail_msg("connection %d parked all its %u gets", k, GETS_PER_CONN);
    assert_true(refused[NCONN - 1] == GETS_PER_CONN);
    assert_true(max_bytes > 0 && max_bytes <= PARKED_MAX);
    ss_stats st = stats_now();
    assert_int_equal(st.parked_requests, parked);
    assert_int_equal(st.parked_bytes, max_bytes);

    /* they leave: nothing stays parked, nothing stays charged */
    for (int k = 0; k < NCONN; k++)
        close(fds[k]);
    for (int i = 0; i < 1000; i++) {
        st = stats_now();
        if (st.parked_requests == 0)
            break;
        t_sleep_ms(10);
    }
    assert_int_equal(st.parked_requests, 0);
    assert_int_equal(st.parked_bytes, 0);
}

/* ------------------------------------------------ fd budget (non-root) */

#define FD_LIMIT 1024        /* the store's RLIMIT_NOFILE */
#define NOBJ 300             /* each its own segment: one fd per object */
#define OBJ_SIZE 65537       /* just over SEALSTORE_SMALL_MAX (64K) */
#define NFLOOD 6             /* connections that never read */
#define NGET ((NOBJ + SS_PROTO_MAX_IDS - 1) / SS_PROTO_MAX_IDS)

static ss__store *g_child_store;

static void on_term(int sig)
{
    (void)sig;
    ss__store_stop(g_child_store); /* async-signal-safe */
}

static int become(uid_t uid)
{
    if (setgroups(0, NULL) < 0 || setgid((gid_t)uid) < 0 || setuid(uid) < 0)
        return -errno;
    return 0;
}

/* The store's process: uid `uid`, RLIMIT_NOFILE FD_LIMIT (hard too, so it
 * cannot raise it). Serves until SIGTERM. */
static void store_child(uid_t uid, const char *path, int ready_fd)
{
    struct rlimit rl = { FD_LIMIT, FD_LIMIT };
    struct sigaction sa = { .sa_handler = on_term };

    if (setrlimit(RLIMIT_NOFILE, &rl) < 0 || become(uid) < 0)
        _exit(3);
    if (ss__store_open(&g_child_store, path, 0) < 0)
        _exit(4);
    sigaction(SIGTERM, &sa, NULL);
    if (write(ready_fd, "r", 1) != 1)
        _exit(5);
    close(ready_fd);
    int rc = ss__store_run(g_child_store);
    ss__store_close(g_child_store);
    _exit(rc < 0 ? 6 : 0);
}

/* The flood, as the store's uid: puts NOBJ objects, then on NFLOOD
 * connections asks for all of them and reads nothing. Tells `ready_fd`
 * when every GET is sent; when `go_fd` says so, reads every reply on
 * every connection: the store must have kept them all (exit 0). */
static void flood_child(uid_t uid, const char *path, int ready_fd, int go_fd)
{
    static unsigned char buf[SS_PROTO_MAX_MSG];
    ss_client *c;
    int fds[NFLOOD];
    char go;

    if (become(uid) < 0)
        _exit(3);
    if (ss_connect(path, 0, &c) < 0)
        _exit(4);
    void *data = malloc(OBJ_SIZE);
    if (!data)
        _exit(5);
    for (unsigned i = 0; i < NOBJ; i++) {
        ss_id id = id_of('f', i);
        t_fill(data, OBJ_SIZE, i);
        if (ss_put(c, &id, data, OBJ_SIZE, NULL, 0) < 0)
            _exit(6);
    }
    free(data);
    ss_disconnect(c);
    for (int k = 0; k < NFLOOD; k++) {
        if ((fds[k] = wire_connect(path)) < 0 || wire_hello(fds[k]) != 0)
            _exit(7);
        for (unsigned j = 0; j < NGET; j++) {
            ss_id ids[SS_PROTO_MAX_IDS];
            uint32_t n = NOBJ - j * SS_PROTO_MAX_IDS;
            if (n > SS_PROTO_MAX_IDS)
                n = SS_PROTO_MAX_IDS;
            for (uint32_t i = 0; i < n; i++)
                ids[i] = id_of('f', j * SS_PROTO_MAX_IDS + i);
            if (wire_get(fds[k], 1 + j, ids, n, 0) < 0)
                _exit(8);
        }
    }
    if (write(ready_fd, "r", 1) != 1 || read(go_fd, &go, 1) != 1)
        _exit(9);
    for (int k = 0; k < NFLOOD; k++) {
        for (unsigned j = 0; j < NGET; j++) {
            ssize_t n = wire_recv(fds[k], buf, sizeof(buf), 20000);
            if (n < (ssize_t)sizeof(ss__msg_hdr))
                _exit(10); /* dropped (EOF), or not answered */
            const ss__msg_hdr *h = (const void *)buf;
            uint32_t want = NOBJ - j * SS_PROTO_MAX_IDS;
            if (h->req_id != 1 + j ||
                h->status != (int32_t)(want > SS_PROTO_MAX_IDS ? SS_PROTO_MAX_IDS : want))
                _exit(11);
        }
        close(fds[k]);
    }
    _exit(0);
}

static int child_status(pid_t pid)
{
    int st;

    if (waitpid(pid, &st, 0) != pid)
        return -1;
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

static void hog_child(uid_t uid, int ready_fd, int go_fd);

/* An unprivileged store (the fixture of the fd cases): its uid, socket,
 * the pipes its helpers report on, and the helper processes. */
static struct {
    uid_t uid;
    char dir[32], path[108];
    int rp[2], gp[2];   /* children -> test ("ready"), test -> children ("go") */
    pid_t store, helper;
} U;

static void reap_child(pid_t *pid, bool force)
{
    if (*pid <= 0)
        return;
    if (force)
        kill(*pid, SIGKILL);
    waitpid(*pid, NULL, 0);
    *pid = 0;
}

/* The helper's exit status (it was told to finish). */
static int helper_status(void)
{
    int st = child_status(U.helper);

    U.helper = 0;
    return st;
}

/* Wait for a child's "ready" on U.rp: 0, or its exit status when it died
 * first (the test holds the pipe's write end for the other children, so a
 * dead child's EOF never comes) or -1 when it said nothing for a minute. */
static int child_ready(pid_t *pid)
{
    char b;

    for (int i = 0; i < 600; i++) {
        struct pollfd p = { .fd = U.rp[0], .events = POLLIN };
        int st;

        if (poll(&p, 1, 100) == 1)
            return read(U.rp[0], &b, 1) == 1 ? 0 : -1;
        if (waitpid(*pid, &st, WNOHANG) == *pid) {
            *pid = 0;
            return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
        }
    }
    return -1;
}

/* Fork a helper; wait for its "ready". */
static void helper_start(void (*fn)(void))
{
    int rc;

    U.helper = fork();
    assert_true(U.helper >= 0);
    if (U.helper == 0)
        fn();
    if ((rc = child_ready(&U.helper)) != 0)
        fail_msg("helper process failed: %d", rc);
}

static int ustore_setup(void **state)
{
    (void)state;
    memset(&U, 0, sizeof(U));
    U.rp[0] = U.rp[1] = U.gp[0] = U.gp[1] = -1;
    if (geteuid() != 0)
        return 0; /* the case skips */
    /* a uid of our own: the kernel counts in-flight fds per uid, and
     * another test run must not share the count */
    U.uid = 0x7e000000u | ((uid_t)getpid() & 0xffffu);
    snprintf(U.dir, sizeof(U.dir), "/tmp/ss-limits-XXXXXX");
    if (!mkdtemp(U.dir) || chown(U.dir, U.uid, (gid_t)U.uid) < 0 || pipe(U.rp) < 0 ||
        pipe(U.gp) < 0) {
        print_error("fixture: %s\n", strerror(errno));
        return -1;
    }
    snprintf(U.path, sizeof(U.path), "%s/s.sock", U.dir);
    U.store = fork();
    if (U.store < 0)
        return -1;
    if (U.store == 0)
        store_child(U.uid, U.path, U.rp[1]);
    int rc = child_ready(&U.store);
    if (rc != 0) {
        print_error("store process failed: %d\n", rc);
        reap_child(&U.store, true);
        return -1;
    }
    return 0;
}

/* Stop the store (SIGTERM: a clean stop); a failed case's helper is
 * killed. The store must exit 0. */
static int ustore_teardown(void **state)
{
    int rc = 0;
    char lock[120];

    (void)state;
    reap_child(&U.helper, true);
    if (U.store > 0) {
        kill(U.store, SIGTERM);
        rc = child_status(U.store) == 0 ? 0 : -1;
        U.store = 0;
    }
    if (U.path[0]) {
        unlink(U.path);
        snprintf(lock, sizeof(lock), "%s.lock", U.path);
        unlink(lock);
        rmdir(U.dir);
    }
    for (int i = 0; i < 2; i++) {
        if (U.rp[i] >= 0)
            close(U.rp[i]);
        if (U.gp[i] >= 0)
            close(U.gp[i]);
    }
    return rc;
}

#define SKIP_UNLESS_ROOT()                                                                \
    T_SKIP_IF(geteuid() != 0, NULL,                                                       \
              "needs root, to run the store as an unprivileged uid (a root store is "     \
              "exempt from the kernel's in-flight fd limit)")

static void flood_main(void)
{
    flood_child(U.uid, U.path, U.rp[1], U.gp[0]);
}

static void hog_main(void)
{
    hog_child(U.uid, U.rp[1], U.gp[0]);
}

static void t_fd_budget(void **state)
{
    (void)state;
    SKIP_UNLESS_ROOT();
    helper_start(flood_main);
    /* Wait until the store has dealt with the flood. With FD_LIMIT 1024,
     * clients with replies unread share 512 fds, at most 256 each: two
     * flooding connections fill that and are no longer read; each of the
     * other four gets one reply (a client with nothing unread may use the
     * budget up to 896) and has its next one held back. A store without
     * the budget answers everything (or drops connections trying). */
    ss_client *c;
    ss_stats st;
    t_assert_ok(ss_connect(U.path, 0, &c));
    for (int i = 0; i < 2000; i++) {
        st = t_store_stats(c);
        if (st.fd_deferred >= NFLOOD - 2 || st.gets >= (uint64_t)NFLOOD * NOBJ)
            break;
        t_sleep_ms(5);
    }
    /* another client's gets, each with the object's fd, work meanwhile */
    for (unsigned i = 0; i < 20; i++) {
        ss_id id = id_of('f', i * 7);
        ss_object o;
        t_assert_err(ss_get(c, &id, 1, 0, &o), 1);
        assert_true(t_check(o.data, OBJ_SIZE, i * 7));
        t_assert_ok(ss_release(c, &id));
    }
    st = t_store_stats(c);
    if (st.fd_deferred < NFLOOD - 2) /* the flood was held back ... */
        fail_msg("get replies deferred: %llu, gets %llu", (unsigned long long)st.fd_deferred,
                 (unsigned long long)st.gets);
    assert_int_equal(st.clients, NFLOOD + 1); /* ... and not dropped */
    ss_disconnect(c);

    /* the flood reads: it gets every reply */
    assert_int_equal(write(U.gp[1], "g", 1), 1);
    int fst = helper_status();
    if (fst != 0)
        fail_msg("the flooding connections lost replies (flood exit %d)", fst);
}

/* Another process of the store's uid keeps more fds in flight than the
 * store's RLIMIT_NOFILE (its own limit is higher): the kernel refuses
 * every fd the store sends. Told on `ready_fd`, lets go when `go_fd`
 * says so. */
static void hog_child(uid_t uid, int ready_fd, int go_fd)
{
    struct rlimit rl = { 4 * FD_LIMIT, 4 * FD_LIMIT };
    int sp[2], fds[200], one;
    char go;

    if (setrlimit(RLIMIT_NOFILE, &rl) < 0 || become(uid) < 0)
        _exit(3);
    if (socketpair(AF_UNIX, SOCK_DGRAM, 0, sp) < 0 || (one = open("/dev/null", O_RDONLY)) < 0)
        _exit(4);
    for (int i = 0; i < 200; i++)
        fds[i] = one;
    for (int m = 0; m < (FD_LIMIT + 199) / 200 + 1; m++) {
        union {
            char b[CMSG_SPACE(sizeof(fds))];
            struct cmsghdr al;
        } u;
        char byte = 0;
        struct iovec iov = { .iov_base = &byte, .iov_len = 1 };
        struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.b,
                             .msg_controllen = sizeof(u.b) };
        struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);
        cm->cmsg_level = SOL_SOCKET;
        cm->cmsg_type = SCM_RIGHTS;
        cm->cmsg_len = CMSG_LEN(sizeof(fds));
        memcpy(CMSG_DATA(cm), fds, sizeof(fds));
        if (sendmsg(sp[0], &mh, 0) != 1)
            _exit(5);
    }
    if (write(ready_fd, "r", 1) != 1 || read(go_fd, &go, 1) != 1)
        _exit(6);
    _exit(0); /* closing sp[1] drops what it never read */
}

static uint64_t raw_fd_deferred(int fd)
{
    static unsigned char buf[SS_PROTO_MAX_MSG];
    uint32_t id = ++g_req;
    ss_stats st;

    t_assert_ok(wire_send(fd, SS_MSG_STATS, id, NULL, 0));
    ssize_t n = wire_recv(fd, buf, sizeof(buf), 10000);
    if (n < (ssize_t)(sizeof(ss__msg_hdr) + sizeof(st)))
        fail_msg("no STATS reply: %zd", n);
    memcpy(&st, buf + sizeof(ss__msg_hdr), sizeof(st));
    return st.fd_deferred;
}

/* The kernel refuses the store's fds (ETOOMANYREFS) for reasons that are
 * not the client's: its reply waits and goes out later; the connection
 * is never taken for a dead one. */
static void t_fd_refused(void **state)
{
    static unsigned char buf[SS_PROTO_MAX_MSG];

    (void)state;
    SKIP_UNLESS_ROOT();
    /* an object whose get carries its fd */
    ss_client *c;
    ss_id id = id_of('r', 1);
    void *data = calloc(1, OBJ_SIZE);
    assert_non_null(data);
    t_assert_ok(ss_connect(U.path, 0, &c));
    t_assert_ok(ss_put(c, &id, data, OBJ_SIZE, NULL, 0));
    free(data);
    ss_disconnect(c);

    helper_start(hog_main);

    int fd = wire_connect(U.path), sfd = wire_connect(U.path);
    t_assert_ok(fd);
    t_assert_ok(sfd);
    t_assert_ok(wire_hello(fd));
    t_assert_ok(wire_hello(sfd));
    uint64_t before = raw_fd_deferred(sfd);
    uint32_t gid = ++g_req;
    t_assert_ok(wire_get(fd, gid, &id, 1, 0));
    /* the store tried and was refused (a store that takes that for a dead
     * client closes fd instead: seen below) */
    for (int i = 0; i < 2000 && raw_fd_deferred(sfd) == before; i++)
        t_sleep_ms(5);
    assert_int_equal(write(U.gp[1], "g", 1), 1); /* the hog lets go */
    assert_int_equal(helper_status(), 0);
    ssize_t n = wire_recv(fd, buf, sizeof(buf), 20000);
    if (n < (ssize_t)sizeof(ss__msg_hdr))
        fail_msg("GET not answered (%zd: 0 is the store closing the connection)", n);
    const ss__msg_hdr *h = (const void *)buf;
    assert_int_equal(h->req_id, gid);
    assert_int_equal(h->status, 1);
    assert_true(raw_fd_deferred(sfd) > before);
    /* and the connection serves on */
    ss__req_id rq = { .id = id };
    t_assert_ok(wire_send(fd, SS_MSG_CONTAINS, ++g_req, &rq, sizeof(rq)));
    n = wire_recv(fd, buf, sizeof(buf), 10000);
    assert_true(n >= (ssize_t)sizeof(ss__msg_hdr));
    assert_int_equal(h->status, 1);
    close(fd);
    close(sfd);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(t_hello_timeout, store_setup, store_teardown),
        cmocka_unit_test_setup_teardown(t_parked_quota, store_setup, store_teardown),
        cmocka_unit_test_setup_teardown(t_fd_budget, ustore_setup, ustore_teardown),
        cmocka_unit_test_setup_teardown(t_fd_refused, ustore_setup, ustore_teardown),
    };

    /* STAGE_MAX 0: large creates get a segment (an fd) each, which the fd
     * budget cases count on */
    if (ss_option_set(SS_OPT_POOL_SIZE, "0") < 0 || ss_option_set(SS_OPT_CAPACITY, "64M") < 0 ||
        ss_option_set(SS_OPT_STAGE_MAX, "0") < 0 ||
        ss_option_set(SS_OPT_SPILL_DIR, "off") < 0 || ss_option_set(SS_OPT_HUGEPAGES, "off") < 0) {
        fprintf(stderr, "cannot set options\n");
        return T_EXIT_ERROR;
    }
    return t_run(tests, NULL, NULL);
}
