/* SPDX-License-Identifier: MIT */
/* OS wrappers: each turns -1 + errno into -errno (sys.h). */
#include "sys.h"

#include <malloc.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

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
    int rc;

    if (off > (uint64_t)INT64_MAX || len > (uint64_t)INT64_MAX - off)
        return -EINVAL;
    do
        rc = fallocate(fd, mode, (off_t)off, (off_t)len);
    while (rc < 0 && errno == EINTR);
    return rc < 0 ? -errno : 0;
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

void *ss__sys_mmap(void *addr, size_t len, int prot, int flags, int fd, uint64_t off)
{
    void *p;

    if (off > (uint64_t)INT64_MAX)
        return ss__err_ptr(-EINVAL);
    p = mmap(addr, len, prot, flags, fd, (off_t)off);
    return p == MAP_FAILED ? ss__err_ptr(-errno) : p;
}

int ss__sys_munmap(void *addr, size_t len)
{
    return munmap(addr, len) < 0 ? -errno : 0;
}

int ss__sys_madvise(void *addr, size_t len, int advice)
{
    int rc;

    /* MADV_POPULATE_* returns EINTR on a pending signal: retry */
    do
        rc = madvise(addr, len, advice);
    while (rc < 0 && errno == EINTR);
    return rc < 0 ? -errno : 0;
}

int ss__sys_mprotect(void *addr, size_t len, int prot)
{
    return mprotect(addr, len, prot) < 0 ? -errno : 0;
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
    nfd = open(path, flags | O_CLOEXEC);
    return nfd < 0 ? -errno : nfd;
}

int ss__sys_read_file(const char *path, char *buf, size_t len)
{
    int fd, n;

    if (len == 0)
        return -EINVAL;
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    do
        n = (int)read(fd, buf, len - 1);
    while (n < 0 && errno == EINTR);
    if (n < 0)
        n = -errno;
    else
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

void ss__sys_heap_trim(void)
{
#ifdef __GLIBC__
    malloc_trim(0);
#endif
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
