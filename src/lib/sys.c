/* SPDX-License-Identifier: MIT */
/* OS wrappers: each turns -1 + errno into -errno (sys.h). */
#include "sys.h"

#include <limits.h>
#include <linux/capability.h>
#include <malloc.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/random.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

/* -1 + errno as -errno; the common tail of most wrappers */
static inline int neg(int rc)
{
    return rc < 0 ? -errno : rc;
}

/* Run `call` until it does not fail with EINTR; its result, or -errno. */
#define RETRY(type, call)                                                                \
    __extension__({                                                                      \
        type r_;                                                                         \
        do                                                                               \
            r_ = (call);                                                                 \
        while (r_ < 0 && errno == EINTR);                                                \
        r_ < 0 ? (type)-errno : r_;                                                      \
    })

int ss__sys_memfd_create(const char *name, unsigned flags)
{
    /* the raw syscall: glibc's wrapper is fine, but this also builds where
     * the libc predates memfd_create */
    long fd = syscall(SYS_memfd_create, name, flags);

    return fd < 0 ? -errno : (int)fd;
}

int ss__sys_ftruncate(int fd, uint64_t len)
{
    if (len > (uint64_t)INT64_MAX)
        return -EINVAL;
    return ftruncate(fd, (off_t)len) < 0 ? -errno : 0;
}

int ss__sys_fallocate(int fd, int mode, uint64_t off, uint64_t len)
{
    if (off > (uint64_t)INT64_MAX || len > (uint64_t)INT64_MAX - off)
        return -EINVAL;
    return RETRY(int, fallocate(fd, mode, (off_t)off, (off_t)len));
}

int ss__sys_add_seals(int fd, int seals)
{
    return fcntl(fd, F_ADD_SEALS, seals) < 0 ? -errno : 0;
}

int ss__sys_get_seals(int fd)
{
    int s = fcntl(fd, F_GET_SEALS);

    return s < 0 ? -errno : s;
}

int ss__sys_fchmod(int fd, unsigned mode)
{
    return fchmod(fd, (mode_t)mode) < 0 ? -errno : 0;
}

int ss__sys_allocated(int fd, uint64_t *bytes)
{
    struct stat st;

    if (fstat(fd, &st) < 0)
        return -errno;
    *bytes = (uint64_t)st.st_blocks * 512u;
    return 0;
}

/*
 * Under ASan a new mapping may land on addresses whose shadow still says
 * "poisoned": the small allocator poisons the free slots of its mapping,
 * and in a forked child that mapping is gone (MADV_DONTFORK) while its
 * shadow is inherited, so a store or client started in the child would
 * trip on its own fresh memory. A fresh mapping is wholly addressable.
 */
#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#define SS_SYS_ASAN 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__) && !defined(SS_SYS_ASAN)
#define SS_SYS_ASAN 1
#endif
#ifdef SS_SYS_ASAN
#include <sanitizer/asan_interface.h>
#define fresh_mapping(p, n) ASAN_UNPOISON_MEMORY_REGION((p), (n))
#else
#define fresh_mapping(p, n) ((void)(p), (void)(n))
#endif

void *ss__sys_mmap(void *addr, size_t len, int prot, int flags, int fd, uint64_t off)
{
    void *p;

    if (off > (uint64_t)INT64_MAX)
        return ss__err_ptr(-EINVAL);
    p = mmap(addr, len, prot, flags, fd, (off_t)off);
    if (p == MAP_FAILED)
        return ss__err_ptr(-errno);
    fresh_mapping(p, len);
    return p;
}

int ss__sys_munmap(void *addr, size_t len)
{
    return munmap(addr, len) < 0 ? -errno : 0;
}

int ss__sys_madvise(void *addr, size_t len, int advice)
{
    /* MADV_POPULATE_* returns EINTR on a pending signal: retry */
    return RETRY(int, madvise(addr, len, advice));
}

int ss__sys_mprotect(void *addr, size_t len, int prot)
{
    return mprotect(addr, len, prot) < 0 ? -errno : 0;
}

void *ss__sys_reserve_aligned(size_t len, size_t align)
{
    char *r, *a, *end;

    if (len > SIZE_MAX - align)
        return ss__err_ptr(-ENOMEM);
    r = ss__sys_mmap(NULL, len + align, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                     -1, 0);
    if (ss__is_err(r))
        return r;
    a = (char *)SS_ALIGN_UP((uintptr_t)r, (uintptr_t)align);
    end = r + len + align;
    if (a > r)
        ss__sys_munmap(r, (size_t)(a - r));
    if (end > a + len)
        ss__sys_munmap(a + len, (size_t)(end - (a + len)));
    return a;
}

#ifndef MREMAP_DONTUNMAP
#define MREMAP_DONTUNMAP 4
#endif
int ss__sys_mremap_keep(void *old, size_t len, void *to)
{
    void *p = mremap(old, len, len, MREMAP_MAYMOVE | MREMAP_FIXED | MREMAP_DONTUNMAP, to);

    return p == MAP_FAILED ? -errno : 0;
}

int ss__sys_close(int fd)
{
    /* never retry close on EINTR: the fd is gone on Linux either way */
    return close(fd) < 0 ? -errno : 0;
}

int ss__sys_reopen(int fd, int flags)
{
    char path[40];
    int nfd;

    snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
    nfd = ss__sys_open(path, flags | O_CLOEXEC, 0);
    return nfd;
}

int ss__sys_read_file(const char *path, char *buf, size_t len)
{
    int fd, n;

    if (len == 0)
        return -EINVAL;
    fd = ss__sys_open(path, O_RDONLY | O_CLOEXEC, 0);
    if (fd < 0)
        return fd;
    n = (int)ss__sys_read(fd, buf, len - 1);
    if (n >= 0)
        buf[n] = '\0';
    close(fd);
    return n;
}

int ss__sys_read_u64(const char *path, uint64_t *out)
{
    char buf[32], *end;
    unsigned long long v;
    int n = ss__sys_read_file(path, buf, sizeof(buf));

    if (n < 0)
        return n;
    errno = 0;
    v = strtoull(buf, &end, 10);
    if (errno || end == buf)
        return -EINVAL;
    *out = v;
    return 0;
}

uint64_t ss__now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

uint64_t ss__sys_real_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

void ss__sys_sleep_ns(uint64_t ns)
{
    struct timespec ts = { (time_t)(ns / 1000000000ull), (long)(ns % 1000000000ull) };

    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

void ss__sys_yield(void)
{
    (void)sched_yield();
}

void ss__sys_heap_trim(void)
{
#ifdef __GLIBC__
    malloc_trim(0);
#endif
}

int ss__sys_move_pages(unsigned long count, void **pages, int *status)
{
    return syscall(SYS_move_pages, 0, count, pages, NULL, status, 0) < 0 ? -errno : 0;
}

size_t ss__sys_page_size(void)
{
    static _Atomic size_t cached;
    size_t v = cached;

    if (!v) {
        long pg = sysconf(_SC_PAGESIZE);
        v = pg > 0 ? (size_t)pg : 4096u;
        cached = v;
    }
    return v;
}

long ss__sys_sysconf(int name)
{
    long v;

    errno = 0;
    v = sysconf(name);
    if (v > 0)
        return v;
    return errno ? -errno : -EINVAL;
}

/* -------------------------------------------------------------- file I/O */

int ss__sys_open(const char *path, int flags, unsigned mode)
{
    return RETRY(int, open(path, flags, (mode_t)mode));
}

int ss__sys_openat(int dirfd, const char *path, int flags, unsigned mode)
{
    return RETRY(int, openat(dirfd, path, flags, (mode_t)mode));
}

ssize_t ss__sys_read(int fd, void *buf, size_t len)
{
    return RETRY(ssize_t, read(fd, buf, len));
}

ssize_t ss__sys_write(int fd, const void *buf, size_t len)
{
    return RETRY(ssize_t, write(fd, buf, len));
}

ssize_t ss__sys_pread(int fd, void *buf, size_t len, uint64_t off)
{
    if (off > (uint64_t)INT64_MAX)
        return -EINVAL;
    return RETRY(ssize_t, pread(fd, buf, len, (off_t)off));
}

ssize_t ss__sys_pwrite(int fd, const void *buf, size_t len, uint64_t off)
{
    if (off > (uint64_t)INT64_MAX)
        return -EINVAL;
    return RETRY(ssize_t, pwrite(fd, buf, len, (off_t)off));
}

ssize_t ss__sys_pwritev(int fd, const struct iovec *iov, int n, uint64_t off)
{
    if (off > (uint64_t)INT64_MAX)
        return -EINVAL;
    return RETRY(ssize_t, pwritev(fd, iov, n, (off_t)off));
}

int ss__sys_fsync(int fd)
{
    return RETRY(int, fsync(fd));
}

int ss__sys_fdatasync(int fd)
{
    return RETRY(int, fdatasync(fd));
}

int ss__sys_fstat(int fd, struct stat *st)
{
    return neg(fstat(fd, st));
}

int ss__sys_fstatat(int dirfd, const char *path, struct stat *st, int flags)
{
    return neg(fstatat(dirfd, path, st, flags));
}

int ss__sys_fstatfs(int fd, struct statfs *st)
{
    return neg(fstatfs(fd, st));
}

int ss__sys_statx(int dirfd, const char *path, int flags, unsigned mask, struct statx *sx)
{
    return neg(statx(dirfd, path, flags, mask, sx));
}

int ss__sys_fcntl(int fd, int cmd, int arg)
{
    return neg(fcntl(fd, cmd, arg));
}

int ss__sys_ioctl(int fd, unsigned long req, void *arg)
{
    return neg(ioctl(fd, req, arg));
}

int ss__sys_flock(int fd, int op)
{
    return RETRY(int, flock(fd, op));
}

int ss__sys_dup(int fd)
{
    return neg(dup(fd));
}

int ss__sys_dup_cloexec(int fd)
{
    return neg(fcntl(fd, F_DUPFD_CLOEXEC, 0));
}

/* ----------------------------------------------------------- directories */

int ss__sys_mkdirat(int dirfd, const char *path, unsigned mode)
{
    return neg(mkdirat(dirfd, path, (mode_t)mode));
}

int ss__sys_unlinkat(int dirfd, const char *path, int flags)
{
    return neg(unlinkat(dirfd, path, flags));
}

int ss__sys_renameat(int olddirfd, const char *oldpath, int newdirfd, const char *newpath,
                     unsigned flags)
{
    if (flags == 0)
        return neg(renameat(olddirfd, oldpath, newdirfd, newpath));
    return neg(renameat2(olddirfd, oldpath, newdirfd, newpath, flags));
}

int ss__sys_fchmodat(int dirfd, const char *path, unsigned mode, int flags)
{
    return neg(fchmodat(dirfd, path, (mode_t)mode, flags));
}

int ss__sys_fchownat(int dirfd, const char *path, uid_t uid, gid_t gid, int flags)
{
    return neg(fchownat(dirfd, path, uid, gid, flags));
}

int ss__sys_faccessat(int dirfd, const char *path, int mode, int flags)
{
    return neg(faccessat(dirfd, path, mode, flags));
}

int ss__sys_realpath(const char *path, char *buf)
{
    return realpath(path, buf) ? 0 : -errno;
}

int ss__sys_mkdtemp(char *tmpl)
{
    return mkdtemp(tmpl) ? 0 : -errno;
}

DIR *ss__sys_opendir(const char *path)
{
    DIR *d = opendir(path);

    return d ? d : ss__err_ptr(-errno);
}

DIR *ss__sys_dir_reopen(int dirfd)
{
    /* close-on-exec from the start: fdopendir sets it too, but only
     * after a window in which a fork + exec elsewhere would inherit it */
    int fd = ss__sys_dup_cloexec(dirfd), err;
    DIR *d;

    if (fd < 0)
        return ss__err_ptr(fd);
    d = fdopendir(fd);
    if (!d) {
        err = -errno;
        ss__sys_close(fd);
        return ss__err_ptr(err);
    }
    rewinddir(d);
    return d;
}

int ss__sys_readdir(DIR *d, struct dirent **e)
{
    errno = 0;
    *e = readdir(d);
    if (*e)
        return 1;
    return errno ? -errno : 0;
}

int ss__sys_closedir(DIR *d)
{
    return neg(closedir(d));
}

/* --------------------------------------------------------------- sockets */

int ss__sys_socket(int domain, int type, int protocol)
{
    return neg(socket(domain, type, protocol));
}

int ss__sys_connect(int fd, const struct sockaddr *addr, socklen_t len)
{
    return RETRY(int, connect(fd, addr, len));
}

int ss__sys_bind(int fd, const struct sockaddr *addr, socklen_t len)
{
    return neg(bind(fd, addr, len));
}

int ss__sys_listen(int fd, int backlog)
{
    return neg(listen(fd, backlog));
}

int ss__sys_accept4(int fd, int flags)
{
    return RETRY(int, accept4(fd, NULL, NULL, flags));
}

int ss__sys_shutdown(int fd, int how)
{
    return neg(shutdown(fd, how));
}

int ss__sys_setsockopt(int fd, int level, int name, const void *val, socklen_t len)
{
    return neg(setsockopt(fd, level, name, val, len));
}

int ss__sys_getsockopt(int fd, int level, int name, void *val, socklen_t *len)
{
    return neg(getsockopt(fd, level, name, val, len));
}

int ss__sys_peercred(int fd, struct ucred *cr)
{
    socklen_t l = sizeof(*cr);
    int rc = ss__sys_getsockopt(fd, SOL_SOCKET, SO_PEERCRED, cr, &l);

    return rc < 0 ? rc : l == sizeof(*cr) ? 0 : -EPROTO;
}

ssize_t ss__sys_send(int fd, const void *buf, size_t len, int flags)
{
    return RETRY(ssize_t, send(fd, buf, len, flags));
}

ssize_t ss__sys_recv(int fd, void *buf, size_t len, int flags)
{
    return RETRY(ssize_t, recv(fd, buf, len, flags));
}

ssize_t ss__sys_sendmsg(int fd, const struct msghdr *m, int flags)
{
    return RETRY(ssize_t, sendmsg(fd, m, flags));
}

ssize_t ss__sys_recvmsg(int fd, struct msghdr *m, int flags)
{
    return RETRY(ssize_t, recvmsg(fd, m, flags));
}

int ss__sys_sendmmsg(int fd, struct mmsghdr *v, unsigned n, int flags)
{
    return RETRY(int, sendmmsg(fd, v, n, flags));
}

/* ------------------------------------------------ readiness and waiting */

int ss__sys_epoll_create1(int flags)
{
    return neg(epoll_create1(flags));
}

int ss__sys_epoll_ctl(int epfd, int op, int fd, struct epoll_event *ev)
{
    return neg(epoll_ctl(epfd, op, fd, ev));
}

int ss__sys_epoll_wait(int epfd, struct epoll_event *evs, int n, int timeout_ms)
{
    return neg(epoll_wait(epfd, evs, n, timeout_ms));
}

int ss__sys_poll(struct pollfd *fds, nfds_t n, int timeout_ms)
{
    return neg(poll(fds, n, timeout_ms));
}

int ss__sys_eventfd(unsigned initval, int flags)
{
    return neg(eventfd(initval, flags));
}

int ss__sys_eventfd_write(int fd, uint64_t v)
{
    int saved = errno; /* may run in a signal handler */
    ssize_t n = ss__sys_write(fd, &v, sizeof(v));

    errno = saved;
    return n < 0 ? (int)n : n == sizeof(v) ? 0 : -EIO;
}

int ss__sys_eventfd_read(int fd, uint64_t *v)
{
    ssize_t n = ss__sys_read(fd, v, sizeof(*v));

    return n < 0 ? (int)n : n == sizeof(*v) ? 0 : -EIO;
}

/* ---------------------------------------------- process, CPU, signals */

pid_t ss__sys_getpid(void)
{
    return getpid();
}

bool ss__sys_cap_effective(int cap)
{
    struct __user_cap_header_struct h = { .version = _LINUX_CAPABILITY_VERSION_3, .pid = 0 };
    struct __user_cap_data_struct d[_LINUX_CAPABILITY_U32S_3];

    if (cap < 0 || cap >= 32 * _LINUX_CAPABILITY_U32S_3 || syscall(SYS_capget, &h, d) != 0)
        return false;
    return d[cap / 32].effective & (1u << (cap % 32));
}

uid_t ss__sys_geteuid(void)
{
    return geteuid();
}

int ss__sys_getrandom(void *buf, size_t len, unsigned flags)
{
    return (int)RETRY(ssize_t, getrandom(buf, len, flags));
}

int ss__sys_getcpu(unsigned *cpu, unsigned *node)
{
    return neg(getcpu(cpu, node));
}

int ss__sys_getrlimit(int resource, struct rlimit *rl)
{
    return neg(getrlimit(resource, rl));
}

int ss__sys_setrlimit(int resource, const struct rlimit *rl)
{
    return neg(setrlimit(resource, rl));
}

int ss__sys_sigmask(int how, const sigset_t *set, sigset_t *old)
{
    return -pthread_sigmask(how, set, old); /* returns the error number */
}

int ss__sys_block_signals(sigset_t *old)
{
    sigset_t all;

    sigfillset(&all);
    return ss__sys_sigmask(SIG_BLOCK, &all, old);
}

ssize_t ss__sys_process_vm_readv(pid_t pid, const struct iovec *local, unsigned long nlocal,
                                 const struct iovec *remote, unsigned long nremote)
{
    return RETRY(ssize_t, process_vm_readv(pid, local, nlocal, remote, nremote, 0));
}

int ss__sys_pidfd_open(pid_t pid, unsigned flags)
{
    long fd = syscall(SYS_pidfd_open, pid, flags);

    return fd < 0 ? -errno : (int)fd;
}

int ss__sys_pidfd_send_signal(int pidfd, int sig, siginfo_t *info, unsigned flags)
{
    return syscall(SYS_pidfd_send_signal, pidfd, sig, info, flags) < 0 ? -errno : 0;
}

int ss__sys_io_uring_enter(int ring_fd, unsigned to_submit, unsigned min_complete,
                           unsigned flags)
{
    long rc = syscall(__NR_io_uring_enter, ring_fd, to_submit, min_complete, flags, NULL, 0);

    return rc < 0 ? -errno : (int)rc;
}

/* ------------------------------------------------------------ fork guard */

static pthread_rwlock_t fork_lock = PTHREAD_RWLOCK_INITIALIZER;
static pthread_once_t fork_once = PTHREAD_ONCE_INIT;

static void fork_prepare(void)
{
    pthread_rwlock_wrlock(&fork_lock);
}

static void fork_parent(void)
{
    pthread_rwlock_unlock(&fork_lock);
}

static void fork_child(void)
{
    /* not unlock: glibc records the writer's tid, which differs in the
     * child; the child has one thread, so a fresh lock is right */
    pthread_rwlock_init(&fork_lock, NULL);
}

static void fork_guard_init(void)
{
    (void)pthread_atfork(fork_prepare, fork_parent, fork_child);
}

void ss__fork_guard_enter(void)
{
    pthread_once(&fork_once, fork_guard_init);
    pthread_rwlock_rdlock(&fork_lock);
}

void ss__fork_guard_leave(void)
{
    pthread_rwlock_unlock(&fork_lock);
}

void *ss__sys_mmap_shared_rw(int fd, size_t len)
{
    void *p;
    int rc;

    ss__fork_guard_enter();
    p = ss__sys_mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (!ss__is_err(p)) {
        rc = ss__sys_madvise(p, len, MADV_DONTFORK);
        if (rc < 0) {
            ss__sys_munmap(p, len);
            p = ss__err_ptr(rc);
        }
    }
    ss__fork_guard_leave();
    return p;
}
