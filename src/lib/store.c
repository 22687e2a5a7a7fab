/* SPDX-License-Identifier: MIT */
/*
 * The store's lifecycle, on top of every other layer: open (the memory
 * layer, the object table, the socket, the spill directory), run (the
 * loop), stop and close; the daemon and the embedded thread run the same
 * code. Owns ss__store.bind (path, lock, socket, identity) and the memory
 * layer's handles; calls every layer below it, and registers the loop's
 * turn hooks in their order (store_hooks below).
 *
 * Binding a path safely. Who may bind is decided under an flock on
 * "<path>.lock", never by unlink-and-bind races. Under the lock, an
 * existing socket file is probed: connect, then a HELLO answered within
 * ~1 s means a live store (-EADDRINUSE: never steal it); a refused connect
 * or an unanswered hello (a listening fd that survived its store in a
 * forked child) means stale, and it is replaced. The new socket is bound
 * inside a fresh 0700 directory beside the path, given its final mode
 * (0600, or 0660 and the group of SEALSTORE_SOCKET_GROUP), then renamed
 * over the path: at no moment is a wider mode visible, and no process-wide
 * umask is touched (an embedding host may be creating files meanwhile).
 *
 * The loop is single-threaded. Besides client sockets it watches: the
 * listening socket (store_conn.c), an eventfd for stop (written by
 * ss__store_stop, which a signal handler may call), the seal worker's
 * eventfd (store_seal.c), the copy engine's (store_copy.c) and the spill
 * engine's (store_disk.c). Timers
 * (parked GET and create deadlines) are a heap in store_park.c, expired by
 * the request layer's hook; epoll_wait sleeps until the earliest deadline
 * any hook reports.
 */
#include "store_int.h"

#include <grp.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h> /* _SC_* */
#include <sys/eventfd.h>
#include <sys/file.h>
#include <sys/random.h>
#include <sys/un.h>

#include "hugepages.h"
#include "sys.h"

#include <linux/capability.h>

#define LIVENESS_TIMEOUT_MS 1000
#define LOCK_TIMEOUT_MS 5000

/* ============================================================ socket path */

int ss__default_socket_path(char *buf, size_t len)
{
    char opt[PATH_MAX];
    const char *xdg;
    int n;

    if (!buf || len == 0)
        return -EINVAL;
    if (ss__opt_string(SS_OPT_SOCKET, opt, sizeof(opt)) > 0 && opt[0]) {
        n = snprintf(buf, len, "%s", opt);
    } else if ((xdg = getenv("XDG_RUNTIME_DIR")) && xdg[0] == '/') {
        n = snprintf(buf, len, "%s/sealstore.sock", xdg);
    } else {
        char dir[64];
        struct stat st;
        uid_t uid = ss__sys_geteuid();
        int rc;

        snprintf(dir, sizeof(dir), "/tmp/sealstore-%u", (unsigned)uid);
        if ((rc = ss__sys_mkdirat(AT_FDCWD, dir, 0700)) < 0 && rc != -EEXIST)
            return rc;
        /* someone else's directory, or one others can write: refuse it */
        if ((rc = ss__sys_fstatat(AT_FDCWD, dir, &st, AT_SYMLINK_NOFOLLOW)) < 0)
            return rc;
        if (!S_ISDIR(st.st_mode) || st.st_uid != uid || (st.st_mode & 0777) != 0700)
            return -EACCES;
        n = snprintf(buf, len, "%s/sealstore.sock", dir);
    }
    if (n < 0)
        return -EINVAL;
    if ((size_t)n >= len || (size_t)n >= sizeof(((struct sockaddr_un *)0)->sun_path))
        return -ENAMETOOLONG;
    return n;
}

/* ============================================================== liveness */

static int unix_addr(struct sockaddr_un *a, const char *path)
{
    size_t n = strlen(path);

    memset(a, 0, sizeof(*a));
    a->sun_family = AF_UNIX;
    if (n == 0 || n >= sizeof(a->sun_path))
        return -ENAMETOOLONG;
    memcpy(a->sun_path, path, n);
    return 0;
}

/* 1: a store answers at `path`; 0: stale (nobody listens, or nobody
 * answers a hello); -errno: cannot tell (treated as live by the caller). */
static int probe_live(const char *path)
{
    struct sockaddr_un a;
    int fd, rc;

    if ((rc = unix_addr(&a, path)) < 0)
        return rc;
    fd = ss__sys_socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return fd;
    if ((rc = ss__sys_connect(fd, (struct sockaddr *)&a, sizeof(a))) < 0) {
        ss__sys_close(fd);
        if (rc == -ECONNREFUSED || rc == -ENOENT)
            return 0;
        /* EAGAIN: a full backlog means somebody listens: never steal */
        return rc == -EAGAIN ? 1 : rc;
    }
    struct {
        ss__msg_hdr h;
        ss__req_hello r;
    } m;
    memset(&m, 0, sizeof(m));
    ss__proto_hdr(&m.h, SS_MSG_HELLO, 1, sizeof(m), 0, 0);
    m.r.pid = (uint32_t)ss__sys_getpid();
    ssize_t sent = ss__sys_send(fd, &m, sizeof(m), MSG_NOSIGNAL);
    if (sent < 0) {
        ss__sys_close(fd);
        return sent == -EAGAIN ? 1 : 0;
    }
    uint64_t end = ss__now_ns() + LIVENESS_TIMEOUT_MS * 1000000ull;
    for (;;) {
        uint64_t now = ss__now_ns();
        if (now >= end) {
            rc = 0; /* accepted by the kernel, answered by nobody: stale */
            break;
        }
        struct pollfd p = { .fd = fd, .events = POLLIN };
        int pr = ss__sys_poll(&p, 1, (int)((end - now) / 1000000ull) + 1);
        if (pr == -EINTR)
            continue;
        if (pr <= 0) {
            rc = 0;
            break;
        }
        ss__msg_hdr h;
        ssize_t n = ss__sys_recv(fd, &h, sizeof(h), MSG_DONTWAIT);
        /* A peer that accepted and closed is a live process refusing us
         * (another uid): live. Any reply with our magic is a store. */
        if (n == 0 || (n < 0 && n != -EAGAIN)) {
            rc = 1;
            break;
        }
        if (n >= (ssize_t)sizeof(uint32_t) && h.magic == SS_PROTO_MAGIC) {
            rc = 1;
            break;
        }
        if (n > 0) {
            rc = 1; /* someone answers, whatever it is: not ours to take */
            break;
        }
    }
    ss__sys_close(fd);
    return rc;
}

/* ================================================================ binding */

/* Lock "<path>.lock": an flock held on the file currently at that path. */
static int lock_take(const char *lock_path)
{
    uint64_t end = ss__now_ns() + LOCK_TIMEOUT_MS * 1000000ull;

    for (;;) {
        int fd = ss__sys_open(lock_path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
        struct stat a, b;
        int rc;

        if (fd < 0)
            return fd;
        if ((rc = ss__sys_flock(fd, LOCK_EX | LOCK_NB)) < 0) {
            ss__sys_close(fd);
            if (rc != -EWOULDBLOCK)
                return rc;
            if (ss__now_ns() >= end)
                return -EBUSY;
            ss__sys_sleep_ns(10 * 1000000ull);
            continue;
        }
        /* the holder before us may have unlinked it on its way out */
        if (ss__sys_fstat(fd, &a) == 0 && ss__sys_fstatat(AT_FDCWD, lock_path, &b, 0) == 0 &&
            a.st_ino == b.st_ino && a.st_dev == b.st_dev)
            return fd;
        ss__sys_close(fd);
    }
}

/* Bind and listen in a private directory, fix mode and group, then rename
 * over s->bind.path (which replaces a stale socket atomically). */
static int bind_fresh(ss__store *s)
{
    char tmpl[PATH_MAX], bindp[108];
    const char *slash = strrchr(s->bind.path, '/');
    int dfd = -1, fd = -1, rc;
    struct sockaddr_un a;
    bool made_dir = false, bound = false;

    if (slash)
        rc = snprintf(tmpl, sizeof(tmpl), "%.*s/.sealstore-XXXXXX", (int)(slash - s->bind.path),
                      s->bind.path);
    else
        rc = snprintf(tmpl, sizeof(tmpl), ".sealstore-XXXXXX");
    if (rc < 0 || (size_t)rc >= sizeof(tmpl))
        return -ENAMETOOLONG;
    rc = ss__sys_mkdtemp(tmpl);
    if (rc < 0)
        return rc;
    made_dir = true;
    dfd = ss__sys_open(tmpl, O_PATH | O_DIRECTORY | O_CLOEXEC, 0);
    if (dfd < 0) {
        rc = dfd;
        goto out;
    }
    /* Bind through /proc/self/fd/N/s: short whatever the directory's path
     * length; fall back to the plain path when /proc is missing. */
    snprintf(bindp, sizeof(bindp), "/proc/self/fd/%d/s", dfd);
    if (ss__sys_faccessat(AT_FDCWD, "/proc/self/fd", X_OK, 0) != 0) {
        if (strlen(tmpl) + 2 >= sizeof(a.sun_path)) {
            rc = -ENAMETOOLONG;
            goto out;
        }
        snprintf(bindp, sizeof(bindp), "%s/s", tmpl);
    }
    if ((rc = unix_addr(&a, bindp)) < 0)
        goto out;
    fd = ss__sys_socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) {
        rc = fd;
        goto out;
    }
    if ((rc = ss__sys_bind(fd, (struct sockaddr *)&a, sizeof(a))) < 0)
        goto out;
    bound = true;
    if (s->conn.has_group &&
        (rc = ss__sys_fchownat(dfd, "s", (uid_t)-1, s->conn.group, 0)) < 0)
        goto out;
    if ((rc = ss__sys_fchmodat(dfd, "s", s->conn.has_group ? 0660 : 0600, 0)) < 0)
        goto out;
    if ((rc = ss__sys_listen(fd, SOMAXCONN)) < 0)
        goto out;
    if ((rc = ss__sys_renameat(dfd, "s", AT_FDCWD, s->bind.path, 0)) < 0)
        goto out;
    bound = false;
    struct stat st;
    if (ss__sys_fstatat(AT_FDCWD, s->bind.path, &st, 0) == 0) {
        s->bind.sock_dev = st.st_dev;
        s->bind.sock_ino = st.st_ino;
    }
    s->bind.listen_fd = fd;
    s->bind.bound = true;
    fd = -1;
    rc = 0;
out:
    if (bound)
        (void)ss__sys_unlinkat(dfd, "s", 0);
    if (fd >= 0)
        ss__sys_close(fd);
    if (dfd >= 0)
        ss__sys_close(dfd);
    if (made_dir)
        (void)ss__sys_unlinkat(AT_FDCWD, tmpl, AT_REMOVEDIR);
    return rc;
}

static int bind_socket(ss__store *s)
{
    struct stat st;
    int lock, rc;

    lock = lock_take(s->bind.lock_path);
    if (lock < 0) {
        ss__log_error("store: cannot lock %s: %s", s->bind.lock_path, ss_strerror(lock));
        return lock == -EBUSY ? -EADDRINUSE : lock;
    }
    if ((rc = ss__sys_fstatat(AT_FDCWD, s->bind.path, &st, AT_SYMLINK_NOFOLLOW)) == 0) {
        if (!S_ISSOCK(st.st_mode)) {
            ss__log_error("store: %s exists and is not a socket: not replacing it", s->bind.path);
            rc = -EEXIST;
            goto out;
        }
        rc = probe_live(s->bind.path);
        if (rc != 0) {
            if (rc < 0)
                ss__log_error("store: cannot tell whether %s is served (%s)", s->bind.path,
                              ss_strerror(rc));
            rc = -EADDRINUSE;
            goto out;
        }
        ss__log_info("store: replacing stale socket %s", s->bind.path);
    } else if (rc != -ENOENT) {
        goto out;
    }
    rc = bind_fresh(s);
out:
    (void)ss__sys_flock(lock, LOCK_UN);
    ss__sys_close(lock);
    return rc;
}

/* Remove our socket and the lock file, under the lock, and only if the
 * socket at the path is still the one we bound. */
static void unbind_socket(ss__store *s)
{
    struct stat st;
    int lock;

    if (!s->bind.bound)
        return;
    s->bind.bound = false;
    lock = lock_take(s->bind.lock_path);
    if (ss__sys_fstatat(AT_FDCWD, s->bind.path, &st, 0) == 0 && st.st_ino == s->bind.sock_ino &&
        st.st_dev == s->bind.sock_dev)
        (void)ss__sys_unlinkat(AT_FDCWD, s->bind.path, 0);
    if (lock >= 0) {
        (void)ss__sys_unlinkat(AT_FDCWD, s->bind.lock_path, 0);
        (void)ss__sys_flock(lock, LOCK_UN);
        ss__sys_close(lock);
    }
}

/* ================================================================== open */

static void raise_nofile(void)
{
    struct rlimit rl;
    int rc;

    /* fds queued in unread replies count against our limit (store_int.h) */
    if (ss__sys_getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        if ((rc = ss__sys_setrlimit(RLIMIT_NOFILE, &rl)) < 0)
            ss__log_info("store: cannot raise RLIMIT_NOFILE: %s", ss_strerror(rc));
    }
}

static int resolve_group(ss__store *s)
{
    char name[256], buf[4096];
    struct group gr, *res = NULL;

    if (ss__store_opt_group(name, sizeof(name)) == 0 || !name[0])
        return 0;
    int rc = getgrnam_r(name, &gr, buf, sizeof(buf), &res);
    if (rc == 0 && res) {
        s->conn.group = res->gr_gid;
    } else {
        char *end;
        unsigned long g = strtoul(name, &end, 10);
        if (*end || end == name) {
            ss__log_error("store: SEALSTORE_SOCKET_GROUP: no group '%s'", name);
            return -EINVAL;
        }
        s->conn.group = (gid_t)g;
    }
    s->conn.has_group = true;
    return 0;
}

static int memory_open(ss__store *s)
{
    int rc;

    s->mem.capacity = ss__opt_size(SS_OPT_CAPACITY);
    if (s->mem.capacity == 0) {
        long pages = ss__sys_sysconf(_SC_PHYS_PAGES), psz = ss__sys_sysconf(_SC_PAGESIZE);
        s->mem.capacity = pages > 0 && psz > 0 ? (uint64_t)pages * (uint64_t)psz / 2 : SS_GiB;
    }
    s->mem.small_max = ss__opt_size(SS_OPT_SMALL_MAX);
    if (s->mem.small_max > SS_PROTO_MAX_INLINE) {
        ss__log_warn("store: SEALSTORE_SMALL_MAX=%llu is over %u: using %u",
                     (unsigned long long)s->mem.small_max, SS_PROTO_MAX_INLINE,
                     SS_PROTO_MAX_INLINE);
        s->mem.small_max = SS_PROTO_MAX_INLINE;
    }
    s->mem.hugepages = ss__opt_hugepages();
    s->mem.numa_policy = ss__opt_numa();
    s->mem.create_timeout_ms = ss__store_opt_create_timeout();
    s->mem.evict = ss__store_opt_evict();

    if (s->mem.numa_policy.mode != SS_NUMA_OFF) {
        rc = ss__numa_open(&s->mem.numa);
        if (rc < 0) {
            ss__log_warn("store: NUMA topology unavailable (%s): no placement",
                         ss_strerror(rc));
            s->mem.numa = NULL;
        } else if (ss__numa_place(s->mem.numa, &s->mem.numa_policy, -1) < 0) {
            ss__log_error("store: SEALSTORE_NUMA names a node this machine lacks");
            return -EINVAL;
        }
    }
    /* An explicit backing is a requirement: one that cannot be had fails
     * the start, not every create after it. */
    char why[400], opts[3][64];
    rc = ss__backing_require(s->mem.hugepages, why, sizeof(why));
    if (rc < 0) {
        ss_option_get(SS_OPT_HUGEPAGES, opts[0], sizeof(opts[0]));
        ss__log_error("store: SEALSTORE_HUGEPAGES=%s cannot be had: %s", opts[0], why);
        return rc;
    }
    /* a machine without hugepages is a stock install, not a fault: one
     * line, at info (segment.c warns only about memory someone configured) */
    if (s->mem.hugepages == SS_HP_AUTO && !ss__hpool_configured(2 * SS_MiB) &&
        !ss__hpool_configured(SS_GiB) && !ss__backing_available(SS_BACKING_THP, 1))
        ss__log_info("store: 4 KiB pages: no hugepage pool and shmem THP off; "
                     "run `sealstore doctor`");
    ss__salloc_params sp = {
        .segment_size = ss__opt_size(SS_OPT_SMALL_SEGMENT),
        .max_size = s->mem.small_max,
        .hugepages = s->mem.hugepages,
        .numa = s->mem.numa,
        .charge = ss__obj_charge,
        .charge_arg = s,
    };
    const char *bad = ss__salloc_params_why(&sp);
    if (bad) {
        ss_option_get(SS_OPT_SMALL_SEGMENT, opts[0], sizeof(opts[0]));
        ss_option_get(SS_OPT_SMALL_MAX, opts[1], sizeof(opts[1]));
        ss_option_get(SS_OPT_HUGEPAGES, opts[2], sizeof(opts[2]));
        ss__log_error("store: SEALSTORE_SMALL_SEGMENT=%s with SEALSTORE_SMALL_MAX=%s and "
                      "SEALSTORE_HUGEPAGES=%s: %s",
                      opts[0], opts[1], opts[2], bad);
        return -EINVAL;
    }
    rc = ss__salloc_create(&s->mem.salloc, &sp);
    if (rc < 0) {
        ss__log_error("store: small allocator: %s", ss_strerror(rc));
        return rc;
    }
    s->mem.ptrace_cap = ss__sys_cap_effective(CAP_SYS_PTRACE);
    /* arenas: objects above the small limit the store copies in (PUTV);
     * 64 MiB each (arena.h says why), an eighth of a smaller capacity (at
     * least 2 MiB) so that one regular arena never holds most of it */
    uint64_t asize = s->mem.capacity / 8 / (2 * SS_MiB) * (2 * SS_MiB);
    if (asize > 64 * SS_MiB)
        asize = 64 * SS_MiB;
    if (asize < 2 * SS_MiB)
        asize = 2 * SS_MiB;
    if (s->mem.hugepages == SS_HP_1G)
        asize = SS_GiB;
    s->mem.arena_size = asize;
    ss__arena_params ap = {
        .arena_size = asize,
        .min_size = s->mem.small_max > SS_ARENA_GRAIN ? s->mem.small_max : SS_ARENA_GRAIN,
        .hugepages = s->mem.hugepages,
        .numa = s->mem.numa,
        .charge = ss__amake_charge,
        .charge_arg = s,
    };
    bad = ss__arena_params_why(&ap);
    rc = bad ? -EINVAL : ss__arenas_create(&s->mem.arenas, &ap);
    if (rc < 0) {
        ss__log_error("store: arenas: %s", bad ? bad : ss_strerror(rc));
        return rc;
    }
    /* copy-on-seal creates (store_int.h, ss__stage): on hugetlb arenas
     * in place wins from ~4 MiB (doc/arena-probe.md) */
    s->mem.stage_limit = ss__opt_size(SS_OPT_STAGE_MAX);
    if ((s->mem.hugepages == SS_HP_2M || s->mem.hugepages == SS_HP_1G ||
         (s->mem.hugepages == SS_HP_AUTO && ss__hpool_configured(2 * SS_MiB))) &&
        s->mem.stage_limit > 4 * SS_MiB)
        s->mem.stage_limit = 4 * SS_MiB;
    /* trusted producers write in place: no copy, so no 2 MiB-page cap */
    s->mem.trusted = ss__opt_bool(SS_OPT_TRUST_PRODUCERS);
    s->mem.trust_limit = s->mem.trusted ? ss__opt_size(SS_OPT_STAGE_MAX) : 0;
    if (s->mem.trusted)
        ss__log_info("store: trusted producers: creates up to %llu bytes are written in "
                     "place; a producer can still write its own sealed objects",
                     (unsigned long long)s->mem.trust_limit);
    s->mem.stage_quota = 2 * (s->mem.trust_limit > s->mem.stage_limit ? s->mem.trust_limit
                                                                       : s->mem.stage_limit);
    s->mem.stage_total = s->mem.capacity / 4;
    ss__pool_params pp = {
        .budget = ss__opt_size(SS_OPT_POOL_SIZE),
        .classes = ss__opt_sizelist(SS_OPT_POOL_CLASSES),
        .hugepages = s->mem.hugepages,
        .numa = s->mem.numa,
        .charge = ss__obj_charge,
        .charge_arg = s,
        .node = s->mem.numa ? ss__numa_place(s->mem.numa, &s->mem.numa_policy, -1) : SS_NODE_ANY,
    };
    /* the pool never takes more than a quarter of capacity from objects */
    if (pp.budget > s->mem.capacity / 4)
        pp.budget = s->mem.capacity / 4;
    rc = ss__pool_start(&s->mem.pool, &pp);
    if (rc < 0) {
        ss__log_error("store: populator: %s", ss_strerror(rc));
        return rc;
    }
    return 0;
}

/* The stop eventfd fired: this turn is the loop's last. */
static void stop_event(void *arg, uint32_t events)
{
    ss__store *s = arg;

    (void)events;
    ss__loop_drain(s->bind.stop_efd);
    ss__loop_stop(&s->loop);
}

/* The small segments' expired write windows, and the arenas' lingering
 * ones, close here (alloc.c, arena.c): a deadline hook, so it runs last
 * thing before the loop sleeps and a window never outlives its time by a
 * sleep. */
static uint64_t windows_deadline(void *arg, uint64_t now)
{
    ss__store *s = arg;
    uint64_t d = ss__salloc_write_close(s->mem.salloc, now, false);
    uint64_t da = ss__arena_linger_close(s->mem.arenas, now, false);

    return da < d ? da : d;
}

/* --enable-debug: the whole store is checked at the end of every turn,
 * once the turn's connections are reaped (store_check.c). */
static void validate_turn(void *arg, uint64_t now)
{
    (void)now;
    SS_ASSERT_EXPENSIVE(ss__store_validate(arg) == 0);
}

/* The loop's turn hooks, in the order each turn runs them (deadlines are
 * all asked before the loop sleeps). Connections are reaped last, so
 * pointers held during the turn stay valid; then, in debug builds only
 * (an entry with neither function is not registered), the validator. */
static const struct {
    uint64_t (*deadline)(void *arg, uint64_t now);
    void (*turn)(void *arg, uint64_t now);
} store_hooks[SS_STORE_HOOKS] = {
    { ss__conn_accept_deadline, ss__conn_accept_turn }, /* listener backoff ends */
    { ss__req_timer_deadline, ss__req_timer_turn },     /* parked deadlines */
    { ss__conn_tick_deadline, ss__conn_tick },          /* handshake, fd budget */
    { ss__req_gate_deadline, ss__req_gate_turn },       /* gated GETs' timeouts */
    { NULL, ss__req_retry_turn },                       /* memory freed: retry */
    { NULL, ss__disk_turn },                           /* spill ahead */
    { NULL, ss__amake_turn },                          /* arenas made ahead */
    { windows_deadline, NULL },                         /* small write windows */
    { NULL, ss__conn_reap_turn },                       /* broken connections */
    { NULL, SS_DEBUG_LEVEL >= 2 ? validate_turn : NULL }, /* invariants */
};

/* The loop, the stop eventfd and the hooks. */
static int loop_open(ss__store *s)
{
    int rc = ss__loop_init(&s->loop);

    if (rc < 0)
        return rc;
    ss__spin_init(&s->loop.spin, ss__opt_us(SS_OPT_BUSY_POLL));
    s->bind.stop_efd = ss__sys_eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (s->bind.stop_efd < 0) {
        rc = s->bind.stop_efd;
        s->bind.stop_efd = -1;
        return rc;
    }
    if ((rc = ss__loop_add(&s->loop, &s->bind.stop_ev, s->bind.stop_efd, EPOLLIN, stop_event, s)) < 0)
        return rc;
    for (unsigned i = 0; i < SS_STORE_HOOKS; i++) {
        if (!store_hooks[i].deadline && !store_hooks[i].turn)
            continue;
        s->bind.hooks[i] = (ss__loop_hook){ .deadline = store_hooks[i].deadline,
                                       .turn = store_hooks[i].turn, .arg = s };
        ss__loop_hook_add(&s->loop, &s->bind.hooks[i]);
    }
    return 0;
}

int ss__store_open(ss__store **out, const char *socket_path, unsigned flags)
{
    ss__store *s;
    int rc;

    if (!out || (flags & ~SS_STORE_EMBEDDED))
        return -EINVAL;
    s = calloc(1, sizeof(*s));
    if (!s)
        return -ENOMEM;
    s->bind.flags = flags;
    s->bind.listen_fd = s->loop.epfd = s->bind.stop_efd = s->seal.efd = s->amake.efd = -1;
    s->conn.uid = ss__sys_geteuid();
    if (socket_path) {
        if (strlen(socket_path) >= sizeof(s->bind.path)) {
            rc = -EINVAL;
            goto fail;
        }
        strcpy(s->bind.path, socket_path);
    } else if ((rc = ss__default_socket_path(s->bind.path, sizeof(s->bind.path))) < 0) {
        goto fail;
    }
    if (!s->bind.path[0]) {
        rc = -EINVAL;
        goto fail;
    }
    snprintf(s->bind.lock_path, sizeof(s->bind.lock_path), "%s.lock", s->bind.path);
    if (ss__sys_getrandom(&s->bind.store_id, sizeof(s->bind.store_id), GRND_NONBLOCK) !=
        (int)sizeof(s->bind.store_id))
        s->bind.store_id = ss__now_ns() ^ ((uint64_t)ss__sys_getpid() << 32);
    raise_nofile();
    ss__fd_budget_init(s);
    s->hs.hello_timeout_ns = (uint64_t)(ss__g_limits.hello_timeout_ms ? ss__g_limits.hello_timeout_ms
                                                                   : SS_HELLO_TIMEOUT_MS) *
                          1000000ull;
    s->hs.hello_pending_max = ss__g_limits.hello_pending_max ? ss__g_limits.hello_pending_max
                                                          : SS_HELLO_PENDING_MAX;
    s->park.parked_bytes_max = ss__g_limits.parked_bytes_max ? ss__g_limits.parked_bytes_max
                                                        : SS_PARKED_BYTES_MAX;
    s->park.parked_client_max = ss__g_limits.parked_client_max ? ss__g_limits.parked_client_max
                                                          : SS_PARKED_CLIENT_MAX;

    s->req.obuf = malloc(SS_PROTO_MAX_MSG);
    s->conn.ibuf = malloc(SS_PROTO_MAX_MSG);
    if (!s->req.obuf || !s->conn.ibuf) {
        rc = -ENOMEM;
        goto fail;
    }
    /* the path first: a store that cannot have it does no other work */
    if ((rc = resolve_group(s)) < 0 || (rc = bind_socket(s)) < 0)
        goto fail;
    if ((rc = memory_open(s)) < 0)
        goto fail;
    if ((rc = loop_open(s)) < 0 || (rc = ss__obj_init(s)) < 0 || (rc = ss__park_init(s)) < 0 ||
        (rc = ss__seal_start(s)) < 0 || (rc = ss__scopy_start(s)) < 0 ||
        (rc = ss__amake_start(s)) < 0)
        goto fail;
    ss__req_init(s); /* the upper layers' handlers, before anything can run them */
    /* objects spilled by an earlier store on this socket: the scan runs
     * while we serve (the scan gate holds what depends on it) */
    if ((rc = ss__disk_setup(s)) < 0)
        goto fail;
    if ((rc = ss__conn_listen(s, s->bind.listen_fd)) < 0)
        goto fail;
    ss__log_info("store: serving %s (capacity %llu bytes, small objects up to %llu, "
                 "spilling %s%s)", s->bind.path, (unsigned long long)s->mem.capacity,
                 (unsigned long long)s->mem.small_max, s->disk.sp ? "to " : "off",
                 s->disk.sp ? s->disk.spill_dir : "");
    *out = s;
    return 0;
fail:
    ss__store_close(s);
    return rc;
}

int ss__store_run(ss__store *s)
{
    int rc;

    if (!s)
        return -EINVAL;
    if ((rc = ss__loop_run(&s->loop)) < 0)
        return rc;

    /* Stop: no new clients; the socket disappears now so a new store may
     * start while we finish. */
    if (s->bind.listen_fd >= 0) {
        ss__conn_unlisten(s);
        ss__sys_close(s->bind.listen_fd);
        s->bind.listen_fd = -1;
    }
    unbind_socket(s);
    ss__disk_scan_stop(s); /* the scan stops where it is */
    ss__scopy_finish(s);   /* copies in flight end, their handlers run */
    ss__req_stop(s);        /* answer held and parked requests, finish seals */
    ss__conn_reap(s);
    ss__conn_flush_all(s, 1000);
    for (ss__conn *c = s->conn.conns; c; c = c->next)
        ss__conn_close(s, c);
    ss__conn_reap(s);
    ss__log_info("store: stopped");
    return 0;
}

void ss__store_stop(ss__store *s)
{
    /* async-signal-safe: one write(2), errno kept */
    if (s && s->bind.stop_efd >= 0)
        (void)ss__sys_eventfd_write(s->bind.stop_efd, 1);
}

void ss__store_close(ss__store *s)
{
    if (!s)
        return;
    /* copies read from clients (their pidfds) and write objects' memory:
     * they end, and their handlers run, before anything is freed */
    ss__scopy_fini(s);
    for (ss__conn *c = s->conn.conns; c; c = c->next)
        ss__conn_close(s, c);
    ss__conn_reap(s);
    ss__conn_lingers_close(s);
    SS_ASSERT_EXPENSIVE(ss__store_validate(s) == 0);
    ss__conn_unlisten(s);
    if (s->bind.listen_fd >= 0)
        ss__sys_close(s->bind.listen_fd);
    unbind_socket(s);
    ss__seal_fini(s);
    /* spills in flight end first (their memory is ours); spilled files
     * stay: the engine is closed before any object is freed, so freeing
     * forgets disk copies instead of deleting them */
    ss__disk_teardown(s);
    ss__obj_fini(s);
    ss__disk_fini(s);
    ss__park_fini(s);
    ss__amake_stop(s);
    ss__salloc_destroy(s->mem.salloc);
    ss__arenas_destroy(s->mem.arenas);
    if (SS_DEBUG && s->mem.pool) {
        /* every take was ended by a seal or a free: a leak here would have
         * kept refills waiting */
        ss__pool_stats ps;

        ss__pool_stats_get(s->mem.pool, &ps);
        SS_ASSERT(ps.writers == 0);
    }
    ss__pool_stop(s->mem.pool);
    if (s->mem.numa)
        ss__numa_close(s->mem.numa);
    ss__loop_fini(&s->loop);
    if (s->bind.stop_efd >= 0)
        ss__sys_close(s->bind.stop_efd);
    free(s->req.obuf);
    free(s->conn.ibuf);
    free(s);
}

/* ============================================================== embedded */

static void *store_thread(void *arg)
{
    ss__store *s = arg;

    ss__store_run(s);
    return NULL;
}

int ss__store_start_thread(ss__store **out, const char *socket_path, unsigned flags)
{
    ss__store *s;
    sigset_t old;
    int rc;

    if (!out)
        return -EINVAL;
    rc = ss__store_open(&s, socket_path, flags | SS_STORE_EMBEDDED);
    if (rc < 0)
        return rc;
    /* the host's signals are the host's: the loop never takes one */
    (void)ss__sys_block_signals(&old);
    rc = pthread_create(&s->bind.thread, NULL, store_thread, s);
    (void)ss__sys_sigmask(SIG_SETMASK, &old, NULL);
    if (rc) {
        ss__store_close(s);
        return -rc;
    }
    s->bind.thread_started = true;
    pthread_setname_np(s->bind.thread, "ss-store"); /* top -H, perf: the embedded store */
    *out = s;
    return 0;
}

void ss__store_stop_thread(ss__store *s)
{
    if (!s)
        return;
    ss__store_stop(s);
    if (s->bind.thread_started)
        pthread_join(s->bind.thread, NULL);
    ss__store_close(s);
}
