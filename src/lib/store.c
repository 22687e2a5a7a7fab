/* SPDX-License-Identifier: MIT */
/*
 * The store process model: open (memory layer, index,
 * socket), the epoll loop, stop and close; the daemon and the embedded
 * thread run the same code.
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
 * Access: every accepted peer is checked with SO_PEERCRED (and
 * SO_PEERGROUPS for the group rule): same uid as the store, root, or a
 * member of the socket group. Anyone else is disconnected at once.
 *
 * The loop is single-threaded. Besides client sockets it watches: the
 * listening socket, an eventfd for stop (written by ss__store_stop, which a
 * signal handler may call), an eventfd the seal worker writes when a seal
 * completes, and the spill engine's eventfd (spills and restores done). Timers (parked GET / create deadlines) are a heap in
 * store_obj.c; epoll_wait sleeps until the earliest.
 *
 * Start-up. Objects spilled by an earlier store on the socket are indexed
 * by a scan that runs in the spill engine's thread while the store already
 * serves (store_spill.c): HELLO, STATS, SUBSCRIBE, SEAL, ABORT and RELEASE
 * are answered at once, and a stop (SIGTERM, ss__store_stop) cancels the
 * scan wherever it is. A request whose answer depends on which ids exist
 * (CREATE, PUT, GET, CONTAINS, DELETE, LIST) waits at the scan gate until
 * the scan is over, so a create never duplicates an id that is on disk
 * and a get or contains never calls missing an object that is there; a
 * GET waits at most its own timeout, then is answered from what the scan
 * has found so far (a GET with timeout 0 does not wait). The held request
 * is a copy on its connection, which is not read meanwhile (its requests
 * stay in order, and the kernel's buffer pushes back on the client).
 */
#include "store_int.h"

#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/file.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include "hugepages.h"
#include "sys.h"

/* Tests shrink these before opening a store (0: the default). */
ss__limits ss__g_limits;

#define TAG_LISTEN 1u
#define TAG_STOP 2u
#define TAG_SEAL 3u
#define TAG_SPILL 4u
#define LIVENESS_TIMEOUT_MS 1000
#define LOCK_TIMEOUT_MS 5000
#define SOCK_BUF (4 * SS_PROTO_MAX_MSG)
#define ACCEPT_BACKOFF_NS (100 * 1000000ull)

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

        snprintf(dir, sizeof(dir), "/tmp/sealstore-%u", (unsigned)geteuid());
        if (mkdir(dir, 0700) < 0 && errno != EEXIST)
            return -errno;
        /* someone else's directory, or one others can write: refuse it */
        if (lstat(dir, &st) < 0)
            return -errno;
        if (!S_ISDIR(st.st_mode) || st.st_uid != geteuid() || (st.st_mode & 0777) != 0700)
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
    fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return -errno;
    if (connect(fd, (struct sockaddr *)&a, sizeof(a)) < 0) {
        rc = -errno;
        close(fd);
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
    m.r.pid = (uint32_t)getpid();
    if (send(fd, &m, sizeof(m), MSG_NOSIGNAL) < 0) {
        rc = -errno;
        close(fd);
        return rc == -EAGAIN ? 1 : 0;
    }
    uint64_t end = ss__now_ns() + LIVENESS_TIMEOUT_MS * 1000000ull;
    for (;;) {
        uint64_t now = ss__now_ns();
        if (now >= end) {
            rc = 0; /* accepted by the kernel, answered by nobody: stale */
            break;
        }
        struct pollfd p = { .fd = fd, .events = POLLIN };
        int pr = poll(&p, 1, (int)((end - now) / 1000000ull) + 1);
        if (pr < 0 && errno == EINTR)
            continue;
        if (pr <= 0) {
            rc = 0;
            break;
        }
        ss__msg_hdr h;
        ssize_t n = recv(fd, &h, sizeof(h), MSG_DONTWAIT);
        /* A peer that accepted and closed is a live process refusing us
         * (another uid): live. Any reply with our magic is a store. */
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
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
    close(fd);
    return rc;
}

/* ================================================================ binding */

/* Lock "<path>.lock": an flock held on the file currently at that path. */
static int lock_take(const char *lock_path)
{
    uint64_t end = ss__now_ns() + LOCK_TIMEOUT_MS * 1000000ull;

    for (;;) {
        int fd = open(lock_path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
        struct stat a, b;

        if (fd < 0)
            return -errno;
        if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
            int err = errno;
            close(fd);
            if (err != EWOULDBLOCK)
                return -err;
            if (ss__now_ns() >= end)
                return -EBUSY;
            usleep(10000);
            continue;
        }
        /* the holder before us may have unlinked it on its way out */
        if (fstat(fd, &a) == 0 && stat(lock_path, &b) == 0 && a.st_ino == b.st_ino &&
            a.st_dev == b.st_dev)
            return fd;
        close(fd);
    }
}

static void set_bufs(int fd)
{
    int v = (int)SOCK_BUF;

    /* FORCE passes net.core.[rw]mem_max when we may (root) */
    if (setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &v, sizeof(v)) < 0)
        setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &v, sizeof(v));
    if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &v, sizeof(v)) < 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &v, sizeof(v));
}

/* Bind and listen in a private directory, fix mode and group, then rename
 * over s->path (which replaces a stale socket atomically). */
static int bind_fresh(ss__store *s)
{
    char tmpl[PATH_MAX], bindp[108];
    const char *slash = strrchr(s->path, '/');
    int dfd = -1, fd = -1, rc;
    struct sockaddr_un a;
    bool made_dir = false, bound = false;

    if (slash)
        rc = snprintf(tmpl, sizeof(tmpl), "%.*s/.sealstore-XXXXXX", (int)(slash - s->path),
                      s->path);
    else
        rc = snprintf(tmpl, sizeof(tmpl), ".sealstore-XXXXXX");
    if (rc < 0 || (size_t)rc >= sizeof(tmpl))
        return -ENAMETOOLONG;
    if (!mkdtemp(tmpl))
        return -errno;
    made_dir = true;
    dfd = open(tmpl, O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0) {
        rc = -errno;
        goto out;
    }
    /* Bind through /proc/self/fd/N/s: short whatever the directory's path
     * length; fall back to the plain path when /proc is missing. */
    snprintf(bindp, sizeof(bindp), "/proc/self/fd/%d/s", dfd);
    if (access("/proc/self/fd", X_OK) != 0) {
        if (strlen(tmpl) + 2 >= sizeof(a.sun_path)) {
            rc = -ENAMETOOLONG;
            goto out;
        }
        snprintf(bindp, sizeof(bindp), "%s/s", tmpl);
    }
    if ((rc = unix_addr(&a, bindp)) < 0)
        goto out;
    fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) {
        rc = -errno;
        goto out;
    }
    if (bind(fd, (struct sockaddr *)&a, sizeof(a)) < 0) {
        rc = -errno;
        goto out;
    }
    bound = true;
    if (s->has_group && fchownat(dfd, "s", (uid_t)-1, s->group, 0) < 0) {
        rc = -errno;
        goto out;
    }
    if (fchmodat(dfd, "s", s->has_group ? 0660 : 0600, 0) < 0) {
        rc = -errno;
        goto out;
    }
    if (listen(fd, SOMAXCONN) < 0) {
        rc = -errno;
        goto out;
    }
    if (renameat(dfd, "s", AT_FDCWD, s->path) < 0) {
        rc = -errno;
        goto out;
    }
    bound = false;
    struct stat st;
    if (stat(s->path, &st) == 0) {
        s->sock_dev = st.st_dev;
        s->sock_ino = st.st_ino;
    }
    s->listen_fd = fd;
    s->bound = true;
    fd = -1;
    rc = 0;
out:
    if (bound)
        unlinkat(dfd, "s", 0);
    if (fd >= 0)
        close(fd);
    if (dfd >= 0)
        close(dfd);
    if (made_dir)
        rmdir(tmpl);
    return rc;
}

static int bind_socket(ss__store *s)
{
    struct stat st;
    int lock, rc;

    lock = lock_take(s->lock_path);
    if (lock < 0) {
        ss__log_error("store: cannot lock %s: %s", s->lock_path, ss_strerror(lock));
        return lock == -EBUSY ? -EADDRINUSE : lock;
    }
    if (lstat(s->path, &st) == 0) {
        if (!S_ISSOCK(st.st_mode)) {
            ss__log_error("store: %s exists and is not a socket: not replacing it", s->path);
            rc = -EEXIST;
            goto out;
        }
        rc = probe_live(s->path);
        if (rc != 0) {
            if (rc < 0)
                ss__log_error("store: cannot tell whether %s is served (%s)", s->path,
                              ss_strerror(rc));
            rc = -EADDRINUSE;
            goto out;
        }
        ss__log_info("store: replacing stale socket %s", s->path);
    } else if (errno != ENOENT) {
        rc = -errno;
        goto out;
    }
    rc = bind_fresh(s);
out:
    flock(lock, LOCK_UN);
    close(lock);
    return rc;
}

/* Remove our socket and the lock file, under the lock, and only if the
 * socket at the path is still the one we bound. */
static void unbind_socket(ss__store *s)
{
    struct stat st;
    int lock;

    if (!s->bound)
        return;
    s->bound = false;
    lock = lock_take(s->lock_path);
    if (stat(s->path, &st) == 0 && st.st_ino == s->sock_ino && st.st_dev == s->sock_dev)
        unlink(s->path);
    if (lock >= 0) {
        unlink(s->lock_path);
        flock(lock, LOCK_UN);
        close(lock);
    }
}

/* ================================================================== open */

static void raise_nofile(void)
{
    struct rlimit rl;

    /* fds queued in unread replies count against our limit (store_int.h) */
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
            ss__log_info("store: cannot raise RLIMIT_NOFILE: %s", ss_strerror(-errno));
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
        s->group = res->gr_gid;
    } else {
        char *end;
        unsigned long g = strtoul(name, &end, 10);
        if (*end || end == name) {
            ss__log_error("store: SEALSTORE_SOCKET_GROUP: no group '%s'", name);
            return -EINVAL;
        }
        s->group = (gid_t)g;
    }
    s->has_group = true;
    return 0;
}

static int epoll_add(ss__store *s, int fd, uint32_t events, uint64_t tag)
{
    struct epoll_event ev = { .events = events, .data.u64 = tag };

    return epoll_ctl(s->epfd, EPOLL_CTL_ADD, fd, &ev) < 0 ? -errno : 0;
}

void ss__store_epoll_mod(ss__store *s, ss__conn *c)
{
    struct epoll_event ev = { .events = 0, .data.ptr = c };

    if (c->broken || c->fd < 0)
        return;
    if (c->out_head) {
        /* after ETOOMANYREFS the socket is writable but the send is not:
         * the tick retries it */
        if (!c->out_retry)
            ev.events = EPOLLOUT;
    } else if (ss__conn_may_read(s, c)) {
        ev.events = EPOLLIN;
    }
    c->in_paused = !(ev.events & EPOLLIN);
    if (c->in_paused && !c->out_head)
        ss__fd_poll_soon(s); /* an fd pause ends when the client reads */
    epoll_ctl(s->epfd, EPOLL_CTL_MOD, c->fd, &ev);
}

static int memory_open(ss__store *s)
{
    int rc;

    s->capacity = ss__opt_size(SS_OPT_CAPACITY);
    if (s->capacity == 0) {
        long pages = sysconf(_SC_PHYS_PAGES), psz = sysconf(_SC_PAGESIZE);
        s->capacity = pages > 0 && psz > 0 ? (uint64_t)pages * (uint64_t)psz / 2 : SS_GiB;
    }
    s->small_max = ss__opt_size(SS_OPT_SMALL_MAX);
    if (s->small_max > SS_PROTO_MAX_INLINE) {
        ss__log_warn("store: SEALSTORE_SMALL_MAX=%llu is over %u: using %u",
                     (unsigned long long)s->small_max, SS_PROTO_MAX_INLINE,
                     SS_PROTO_MAX_INLINE);
        s->small_max = SS_PROTO_MAX_INLINE;
    }
    s->hugepages = ss__opt_hugepages();
    s->numa_policy = ss__opt_numa();
    s->create_timeout_ms = ss__store_opt_create_timeout();
    s->evict = ss__store_opt_evict();

    if (s->numa_policy.mode != SS_NUMA_OFF) {
        rc = ss__numa_open(&s->numa);
        if (rc < 0) {
            ss__log_warn("store: NUMA topology unavailable (%s): no placement",
                         ss_strerror(rc));
            s->numa = NULL;
        } else if (ss__numa_place(s->numa, &s->numa_policy, -1) < 0) {
            ss__log_error("store: SEALSTORE_NUMA names a node this machine lacks");
            return -EINVAL;
        }
    }
    /* An explicit backing is a requirement: one that cannot be had fails
     * the start, not every create after it. */
    char why[400], opts[3][64];
    rc = ss__backing_require(s->hugepages, why, sizeof(why));
    if (rc < 0) {
        ss_option_get(SS_OPT_HUGEPAGES, opts[0], sizeof(opts[0]));
        ss__log_error("store: SEALSTORE_HUGEPAGES=%s cannot be had: %s", opts[0], why);
        return rc;
    }
    /* a machine without hugepages is a stock install, not a fault: one
     * line, at info (segment.c warns only about memory someone configured) */
    if (s->hugepages == SS_HP_AUTO && !ss__hpool_configured(2 * SS_MiB) &&
        !ss__hpool_configured(SS_GiB) && !ss__backing_available(SS_BACKING_THP, 1))
        ss__log_info("store: 4 KiB pages: no hugepage pool and shmem THP off; "
                     "run `sealstore doctor`");
    ss__salloc_params sp = {
        .segment_size = ss__opt_size(SS_OPT_SMALL_SEGMENT),
        .max_size = s->small_max,
        .hugepages = s->hugepages,
        .numa = s->numa,
        .charge = ss__store_charge,
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
    rc = ss__salloc_create(&s->salloc, &sp);
    if (rc < 0) {
        ss__log_error("store: small allocator: %s", ss_strerror(rc));
        return rc;
    }
    ss__pool_params pp = {
        .budget = ss__opt_size(SS_OPT_POOL_SIZE),
        .classes = ss__opt_sizelist(SS_OPT_POOL_CLASSES),
        .hugepages = s->hugepages,
        .numa = s->numa,
        .charge = ss__store_charge,
        .charge_arg = s,
        .node = s->numa ? ss__numa_place(s->numa, &s->numa_policy, -1) : SS_NODE_ANY,
    };
    /* the pool never takes more than a quarter of capacity from objects */
    if (pp.budget > s->capacity / 4)
        pp.budget = s->capacity / 4;
    rc = ss__pool_start(&s->pool, &pp);
    if (rc < 0) {
        ss__log_error("store: populator: %s", ss_strerror(rc));
        return rc;
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
    s->flags = flags;
    s->listen_fd = s->epfd = s->stop_efd = s->seal_efd = -1;
    s->uid = geteuid();
    if (socket_path) {
        if (strlen(socket_path) >= sizeof(s->path)) {
            rc = -EINVAL;
            goto fail;
        }
        strcpy(s->path, socket_path);
    } else if ((rc = ss__default_socket_path(s->path, sizeof(s->path))) < 0) {
        goto fail;
    }
    if (!s->path[0]) {
        rc = -EINVAL;
        goto fail;
    }
    snprintf(s->lock_path, sizeof(s->lock_path), "%s.lock", s->path);
    if (getrandom(&s->store_id, sizeof(s->store_id), GRND_NONBLOCK) != sizeof(s->store_id))
        s->store_id = ss__now_ns() ^ ((uint64_t)getpid() << 32);
    raise_nofile();
    ss__fd_budget_init(s);
    s->hello_timeout_ns = (uint64_t)(ss__g_limits.hello_timeout_ms ? ss__g_limits.hello_timeout_ms
                                                                   : SS_HELLO_TIMEOUT_MS) *
                          1000000ull;
    s->hello_pending_max = ss__g_limits.hello_pending_max ? ss__g_limits.hello_pending_max
                                                          : SS_HELLO_PENDING_MAX;
    s->parked_bytes_max = ss__g_limits.parked_bytes_max ? ss__g_limits.parked_bytes_max
                                                        : SS_PARKED_BYTES_MAX;
    s->parked_client_max = ss__g_limits.parked_client_max ? ss__g_limits.parked_client_max
                                                          : SS_PARKED_CLIENT_MAX;

    s->obuf = malloc(SS_PROTO_MAX_MSG);
    s->ibuf = malloc(SS_PROTO_MAX_MSG);
    if (!s->obuf || !s->ibuf) {
        rc = -ENOMEM;
        goto fail;
    }
    /* the path first: a store that cannot have it does no other work */
    if ((rc = resolve_group(s)) < 0 || (rc = bind_socket(s)) < 0)
        goto fail;
    if ((rc = memory_open(s)) < 0)
        goto fail;
    if ((rc = ss__obj_init(s)) < 0)
        goto fail;
    /* objects spilled by an earlier store on this socket: the scan runs
     * while we serve (the scan gate holds what depends on it) */
    if ((rc = ss__spill_setup(s)) < 0)
        goto fail;

    s->epfd = epoll_create1(EPOLL_CLOEXEC);
    s->stop_efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    s->seal_efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (s->epfd < 0 || s->stop_efd < 0 || s->seal_efd < 0) {
        rc = -errno;
        goto fail;
    }
    if ((rc = epoll_add(s, s->stop_efd, EPOLLIN, TAG_STOP)) < 0 ||
        (rc = epoll_add(s, s->seal_efd, EPOLLIN, TAG_SEAL)) < 0)
        goto fail;
    if ((rc = epoll_add(s, s->listen_fd, EPOLLIN, TAG_LISTEN)) < 0)
        goto fail;
    if (ss__spill_fd(s) >= 0 && (rc = epoll_add(s, ss__spill_fd(s), EPOLLIN, TAG_SPILL)) < 0)
        goto fail;
    ss__log_info("store: serving %s (capacity %llu bytes, small objects up to %llu, "
                 "spilling %s%s)", s->path, (unsigned long long)s->capacity,
                 (unsigned long long)s->small_max, s->sp ? "to " : "off",
                 s->sp ? s->spill_dir : "");
    *out = s;
    return 0;
fail:
    ss__store_close(s);
    return rc;
}

/* ================================================================== loop */

static bool peer_allowed(ss__store *s, int fd, struct ucred *cr)
{
    socklen_t l = sizeof(*cr);

    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, cr, &l) < 0)
        return false;
    if (cr->uid == s->uid || cr->uid == 0)
        return true;
    if (!s->has_group)
        return false;
    if (cr->gid == s->group)
        return true;
#ifdef SO_PEERGROUPS
    gid_t groups[256];
    l = sizeof(groups);
    if (getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, groups, &l) == 0) {
        for (size_t i = 0; i < l / sizeof(gid_t); i++)
            if (groups[i] == s->group)
                return true;
    }
#endif
    return false;
}

void ss__store_accept_resume(ss__store *s)
{
    struct epoll_event ev = { .events = EPOLLIN, .data.u64 = TAG_LISTEN };

    if (!s->accept_held || s->nhello_pending >= s->hello_pending_max)
        return;
    s->accept_held = false;
    if (!s->accept_paused_until && s->listen_fd >= 0) /* else the backoff's end does it */
        epoll_ctl(s->epfd, EPOLL_CTL_MOD, s->listen_fd, &ev);
}

static void accept_all(ss__store *s)
{
    for (;;) {
        if (s->nhello_pending >= s->hello_pending_max) {
            /* That many connections have not said HELLO yet: accept no
             * more until some do or time out. Clients opening sockets and
             * never speaking cannot pin the store's fds, and a burst of
             * real clients only waits in the kernel's backlog (each of
             * them says HELLO at once), none is dropped. */
            struct epoll_event ev = { .events = 0, .data.u64 = TAG_LISTEN };
            SS_LOG_ONCE(SS_LOG_WARN, "store: %u connections have not said HELLO yet: "
                        "accepting more once they do or time out", s->nhello_pending);
            epoll_ctl(s->epfd, EPOLL_CTL_MOD, s->listen_fd, &ev);
            s->accept_held = true;
            return;
        }
        int fd = accept4(s->listen_fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
        struct ucred cr;

        if (fd < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                /* the pending connection stays queued and epoll would
                 * report it forever: stop listening for a moment */
                SS_LOG_ONCE(SS_LOG_WARN, "store: accept: %s (backing off)",
                            ss_strerror(-errno));
                struct epoll_event ev = { .events = 0, .data.u64 = TAG_LISTEN };
                epoll_ctl(s->epfd, EPOLL_CTL_MOD, s->listen_fd, &ev);
                s->accept_paused_until = ss__now_ns() + ACCEPT_BACKOFF_NS;
            }
            return;
        }
        if (!peer_allowed(s, fd, &cr)) {
            ss__log_info("store: refused a connection from uid %u pid %d", (unsigned)cr.uid,
                         (int)cr.pid);
            close(fd);
            continue;
        }
        set_bufs(fd);
        ss__conn *c = ss__conn_new(s, fd, cr.pid, cr.uid);
        if (!c) {
            close(fd);
            continue;
        }
        struct epoll_event ev = { .events = EPOLLIN, .data.ptr = c };
        if (epoll_ctl(s->epfd, EPOLL_CTL_ADD, fd, &ev) < 0)
            ss__conn_close(s, c);
    }
}

/* ============================================================= scan gate */

static bool gated_type(int type)
{
    return type == SS_MSG_CREATE || type == SS_MSG_PUT || type == SS_MSG_GET ||
           type == SS_MSG_CONTAINS || type == SS_MSG_DELETE || type == SS_MSG_LIST;
}

bool ss__scan_gate(ss__store *s, ss__conn *c, const void *buf, size_t len, unsigned nfds)
{
    const ss__msg_hdr *h = buf;

    if (!s->scanning || !gated_type(h->type))
        return false;
    /* a GET waits at most its timeout: with none left it runs now (this is
     * also how a held GET whose timeout passed gets through) */
    if (h->type == SS_MSG_GET && ((const ss__req_get *)(h + 1))->timeout_ms == 0)
        return false;
    c->gated = malloc(len);
    if (!c->gated) {
        ss__conn_reply_status(s, c, h->type, h->req_id, -ENOMEM);
        return true;
    }
    memcpy(c->gated, buf, len);
    c->gated_len = (uint32_t)len;
    c->gated_nfds = nfds;
    c->gated_deadline = UINT64_MAX;
    if (h->type == SS_MSG_GET)
        c->gated_deadline = ss__deadline_of(((const ss__req_get *)(h + 1))->timeout_ms);
    ss__store_epoll_mod(s, c); /* not read until the request is answered */
    return true;
}

/* Run c's held request now: a GET gets what is left of its timeout. */
static void gate_run(ss__store *s, ss__conn *c, uint64_t now)
{
    ss__msg_hdr *h = c->gated;

    c->gated = NULL;
    if (h->type == SS_MSG_GET) {
        ss__req_get *rq = (ss__req_get *)(h + 1);

        if (rq->timeout_ms > 0)
            rq->timeout_ms = c->gated_deadline > now
                                 ? (int64_t)((c->gated_deadline - now + 999999) / 1000000)
                                 : 0;
    }
    ss__conn_dispatch(s, c, h, c->gated_len, c->gated_nfds);
    free(h);
    ss__store_epoll_mod(s, c);
}

void ss__scan_gate_open(ss__store *s)
{
    uint64_t now = ss__now_ns();

    s->scanning = false;
    for (ss__conn *c = s->conns; c; c = c->next)
        if (c->gated && !c->broken)
            gate_run(s, c, now);
}

/* GETs whose timeout passed: answered from what is known. */
static void gate_expire(ss__store *s, uint64_t now)
{
    for (ss__conn *c = s->conns; c; c = c->next)
        if (c->gated && !c->broken && c->gated_deadline <= now)
            gate_run(s, c, now);
}

static uint64_t gate_deadline(const ss__store *s)
{
    uint64_t d = UINT64_MAX;

    if (!s->scanning)
        return d;
    for (const ss__conn *c = s->conns; c; c = c->next)
        if (c->gated && !c->broken && c->gated_deadline < d)
            d = c->gated_deadline;
    return d;
}

/* Also closes the small segments' expired write windows (alloc.c): last
 * thing before sleeping, so a window never outlives its time by a sleep. */
static int loop_timeout(ss__store *s)
{
    uint64_t d = ss__obj_next_deadline(s), now = ss__now_ns();
    uint64_t dc = ss__conn_next_deadline(s), g = gate_deadline(s);
    uint64_t w = ss__salloc_write_close(s->salloc, now, false);

    if (dc < d)
        d = dc;
    if (g < d)
        d = g;
    if (w < d)
        d = w;
    if (s->accept_paused_until && s->accept_paused_until < d)
        d = s->accept_paused_until;
    if (d == UINT64_MAX)
        return -1;
    if (d <= now)
        return 0;
    uint64_t ms = (d - now + 999999) / 1000000;
    return ms > INT32_MAX ? INT32_MAX : (int)ms;
}

static void drain_efd(int fd)
{
    uint64_t v;
    ssize_t n = read(fd, &v, sizeof(v));
    (void)n;
}

int ss__store_run(ss__store *s)
{
    struct epoll_event evs[64];

    if (!s)
        return -EINVAL;
    while (!s->stopping) {
        int n = epoll_wait(s->epfd, evs, 64, loop_timeout(s));
        if (n < 0) {
            if (errno == EINTR)
                continue;
            ss__log_error("store: epoll_wait: %s", ss_strerror(-errno));
            return -errno;
        }
        for (int i = 0; i < n; i++) {
            uint64_t tag = evs[i].data.u64;
            uint32_t e = evs[i].events;
            if (tag == TAG_LISTEN) {
                if (!s->stopping)
                    accept_all(s);
            } else if (tag == TAG_STOP) {
                drain_efd(s->stop_efd);
                s->stopping = true;
            } else if (tag == TAG_SEAL) {
                drain_efd(s->seal_efd);
                ss__obj_seal_done(s);
            } else if (tag == TAG_SPILL) {
                ss__spill_events(s);
            } else {
                ss__conn *c = evs[i].data.ptr;
                if (c->broken)
                    continue;
                if (e & EPOLLOUT)
                    ss__conn_writable(s, c);
                if ((e & EPOLLIN) && !c->broken)
                    ss__conn_readable(s, c);
                /* hang-up with nothing (more) to read, or an error */
                if ((e & (EPOLLHUP | EPOLLERR)) && !(e & EPOLLIN) && !c->broken)
                    ss__conn_close(s, c);
            }
        }
        uint64_t now = ss__now_ns();
        if (s->accept_paused_until && now >= s->accept_paused_until) {
            struct epoll_event ev = { .events = EPOLLIN, .data.u64 = TAG_LISTEN };
            s->accept_paused_until = 0;
            if (!s->accept_held)
                epoll_ctl(s->epfd, EPOLL_CTL_MOD, s->listen_fd, &ev);
        }
        ss__obj_expire(s, now);
        ss__conn_tick(s, now);
        if (s->scanning)
            gate_expire(s, now);
        if (s->retry_creates && (s->cq_head || s->rq_head))
            ss__obj_retry_creates(s);
        ss__spill_tick(s);
        ss__conn_reap(s);
    }

    /* Stop: no new clients; the socket disappears now so a new store may
     * start while we finish. */
    if (s->listen_fd >= 0) {
        epoll_ctl(s->epfd, EPOLL_CTL_DEL, s->listen_fd, NULL);
        close(s->listen_fd);
        s->listen_fd = -1;
    }
    unbind_socket(s);
    ss__spill_scan_stop(s); /* the scan stops where it is */
    ss__scan_gate_open(s);  /* held requests: answered as at stop */
    ss__obj_stop(s);        /* answer parked requests, finish seals */
    ss__conn_reap(s);
    ss__conn_flush_all(s, 1000);
    for (ss__conn *c = s->conns; c; c = c->next)
        ss__conn_close(s, c);
    ss__conn_reap(s);
    ss__log_info("store: stopped");
    return 0;
}

void ss__store_stop(ss__store *s)
{
    uint64_t one = 1;

    /* async-signal-safe: one write(2) */
    if (s && s->stop_efd >= 0) {
        ssize_t n = write(s->stop_efd, &one, sizeof(one));
        (void)n;
    }
}

void ss__store_close(ss__store *s)
{
    if (!s)
        return;
    for (ss__conn *c = s->conns; c; c = c->next)
        ss__conn_close(s, c);
    ss__conn_reap(s);
    ss__lingers_close(s);
    if (s->listen_fd >= 0)
        close(s->listen_fd);
    unbind_socket(s);
    ss__obj_fini(s);
    ss__salloc_destroy(s->salloc);
    if (SS_DEBUG && s->pool) {
        /* every take was ended by a seal or a free: a leak here would have
         * kept refills waiting */
        ss__pool_stats ps;

        ss__pool_stats_get(s->pool, &ps);
        SS_ASSERT(ps.writers == 0);
    }
    ss__pool_stop(s->pool);
    if (s->numa)
        ss__numa_close(s->numa);
    if (s->epfd >= 0)
        close(s->epfd);
    if (s->stop_efd >= 0)
        close(s->stop_efd);
    if (s->seal_efd >= 0)
        close(s->seal_efd);
    free(s->obuf);
    free(s->ibuf);
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
    sigset_t all, old;
    int rc;

    if (!out)
        return -EINVAL;
    rc = ss__store_open(&s, socket_path, flags | SS_STORE_EMBEDDED);
    if (rc < 0)
        return rc;
    /* the host's signals are the host's: the loop never takes one */
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    rc = pthread_create(&s->thread, NULL, store_thread, s);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc) {
        ss__store_close(s);
        return -rc;
    }
    s->thread_started = true;
    pthread_setname_np(s->thread, "ss-store"); /* top -H, perf: the embedded store */
    *out = s;
    return 0;
}

void ss__store_stop_thread(ss__store *s)
{
    if (!s)
        return;
    ss__store_stop(s);
    if (s->thread_started)
        pthread_join(s->thread, NULL);
    ss__store_close(s);
}

/* ================================================================ timers */
/*
 * Deadlines of parked requests (GET timeouts, create timeouts) in a binary
 * min-heap; each parked request knows its position, so cancelling one (a
 * GET woken by a seal, a client gone) is O(log n).
 */
static void heap_swap(ss__store *s, uint32_t i, uint32_t j)
{
    ss__parked *t = s->heap[i];
    s->heap[i] = s->heap[j];
    s->heap[j] = t;
    s->heap[i]->heap_pos = i;
    s->heap[j]->heap_pos = j;
}

static void heap_up(ss__store *s, uint32_t i)
{
    while (i > 0) {
        uint32_t p = (i - 1) / 2;
        if (s->heap[p]->deadline_ns <= s->heap[i]->deadline_ns)
            break;
        heap_swap(s, i, p);
        i = p;
    }
}

static void heap_down(ss__store *s, uint32_t i)
{
    for (;;) {
        uint32_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < s->heap_len && s->heap[l]->deadline_ns < s->heap[m]->deadline_ns)
            m = l;
        if (r < s->heap_len && s->heap[r]->deadline_ns < s->heap[m]->deadline_ns)
            m = r;
        if (m == i)
            return;
        heap_swap(s, i, m);
        i = m;
    }
}

int ss__heap_add(ss__store *s, ss__parked *pk)
{
    if (s->heap_len == s->heap_cap) {
        uint32_t n = s->heap_cap ? s->heap_cap * 2 : 64;
        ss__parked **nh = realloc(s->heap, n * sizeof(*nh));
        if (!nh)
            return -ENOMEM;
        s->heap = nh;
        s->heap_cap = n;
    }
    pk->heap_pos = s->heap_len;
    s->heap[s->heap_len++] = pk;
    heap_up(s, pk->heap_pos);
    return 0;
}

void ss__heap_del(ss__store *s, ss__parked *pk)
{
    uint32_t i = pk->heap_pos;

    if (i == UINT32_MAX)
        return;
    pk->heap_pos = UINT32_MAX;
    if (i != --s->heap_len) {
        s->heap[i] = s->heap[s->heap_len];
        s->heap[i]->heap_pos = i;
        heap_down(s, i);
        heap_up(s, i);
    }
    /* a burst of parked requests gone: do not keep its array */
    if (s->heap_cap > 64 && s->heap_len < s->heap_cap / 4) {
        ss__parked **nh = realloc(s->heap, (s->heap_cap / 2) * sizeof(*nh));
        if (nh) {
            s->heap = nh;
            s->heap_cap /= 2;
        }
    }
}


/* =========================================================== seal worker */
/*
 * F_ADD_SEALS(F_SEAL_WRITE) may block ~160 ms on pinned pages, so it runs
 * here, off the loop. The worker sees a job's fd and size only; the loop
 * keeps the object (SS_OBJF_SEALING) from being freed meanwhile. Queued
 * jobs are all run before the thread exits, so a stop never loses a seal.
 */
static void *seal_worker(void *arg)
{
    ss__store *s = arg;
    sigset_t all;

    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, NULL);
    pthread_mutex_lock(&s->sw_lock);
    for (;;) {
        while (!s->sw_todo && !s->sw_stop)
            pthread_cond_wait(&s->sw_cond, &s->sw_lock);
        if (!s->sw_todo)
            break;
        ss__sealjob *j = s->sw_todo;
        s->sw_todo = j->next;
        if (!s->sw_todo)
            s->sw_todo_tail = NULL;
        pthread_mutex_unlock(&s->sw_lock);

        j->rc = ss__seg_seal_write(j->fd, j->size);

        pthread_mutex_lock(&s->sw_lock);
        j->next = s->sw_done;
        s->sw_done = j;
        s->sw_inflight--;
        uint64_t one = 1;
        ssize_t w = write(s->seal_efd, &one, sizeof(one));
        (void)w; /* an eventfd write only fails at 2^64-1 */
    }
    pthread_mutex_unlock(&s->sw_lock);
    return NULL;
}


int ss__sw_start(ss__store *s)
{
    int rc = pthread_mutex_init(&s->sw_lock, NULL);

    if (rc)
        return -rc;
    rc = pthread_cond_init(&s->sw_cond, NULL);
    if (rc) {
        pthread_mutex_destroy(&s->sw_lock);
        return -rc;
    }
    s->sw_sync = true;
    rc = pthread_create(&s->sw_thread, NULL, seal_worker, s);
    if (rc)
        return -rc;
    s->sw_started = true;
    pthread_setname_np(s->sw_thread, "ss-seal");
    return 0;
}

void ss__sw_join(ss__store *s)
{
    if (!s->sw_started)
        return;
    pthread_mutex_lock(&s->sw_lock);
    s->sw_stop = true;
    pthread_cond_signal(&s->sw_cond);
    pthread_mutex_unlock(&s->sw_lock);
    pthread_join(s->sw_thread, NULL);
    s->sw_started = false;
}
