/* SPDX-License-Identifier: MIT */
/*
 * The library's one OS-call layer: every system call the library makes has
 * a thin wrapper here. Each returns >= 0 or -errno (never -1 + errno), so the
 * rest of the library has one error channel; pointers come back as a
 * pointer or ss__err_ptr(-errno). A wrapper adds no policy beyond its EINTR
 * rule, which its comment states: "EINTR retried" (the call restarts; used
 * where the caller would only loop), "EINTR returned" (the caller owns a
 * deadline or a loop turn and decides), or "no EINTR" (the call never
 * sleeps interruptibly, so there is nothing to decide). Constants missing from older
 * headers (Debian 12 ships 6.1 uapi headers) are defined here.
 */
#ifndef SEALSTORE_SRC_LIB_SYS_H
#define SEALSTORE_SRC_LIB_SYS_H

#include "internal.h"

#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <linux/memfd.h>

#ifndef MFD_NOEXEC_SEAL
#define MFD_NOEXEC_SEAL 0x0008U /* Linux 6.3 */
#endif
#ifndef MFD_EXEC
#define MFD_EXEC 0x0010U
#endif
#ifndef F_SEAL_EXEC
#define F_SEAL_EXEC 0x0020 /* Linux 6.3 */
#endif
#ifndef F_SEAL_FUTURE_WRITE
#define F_SEAL_FUTURE_WRITE 0x0010
#endif
#ifndef MADV_POPULATE_READ
#define MADV_POPULATE_READ 22
#endif
#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif
#ifndef MFD_HUGE_2MB
#define MFD_HUGE_2MB (21U << 26)
#endif
#ifndef MFD_HUGE_1GB
#define MFD_HUGE_1GB (30U << 26)
#endif
#ifndef SO_PEERPIDFD
#define SO_PEERPIDFD 77 /* Linux 6.5: a pidfd of the connecting process */
#endif

/* ------------------------------------------------------ memory and memfds */
int ss__sys_memfd_create(const char *name, unsigned flags); /* no EINTR */
int ss__sys_ftruncate(int fd, uint64_t len);                /* EINTR returned */
int ss__sys_fallocate(int fd, int mode, uint64_t off, uint64_t len); /* EINTR retried */
int ss__sys_add_seals(int fd, int seals);                   /* no EINTR */
int ss__sys_get_seals(int fd);                              /* no EINTR */
int ss__sys_fchmod(int fd, unsigned mode);                  /* no EINTR */
/* Bytes the file really holds (st_blocks * 512), or -errno; no EINTR */
int ss__sys_allocated(int fd, uint64_t *bytes);
/* mmap returning a pointer or ss__err_ptr(-errno); no EINTR */
void *ss__sys_mmap(void *addr, size_t len, int prot, int flags, int fd, uint64_t off);
int ss__sys_munmap(void *addr, size_t len);                 /* no EINTR */
/* EINTR retried (MADV_POPULATE_* sees it on a pending signal) */
int ss__sys_madvise(void *addr, size_t len, int advice);
int ss__sys_mprotect(void *addr, size_t len, int prot);     /* no EINTR */
/* A PROT_NONE anonymous reservation of len bytes at an address aligned to
 * `align` (a power of two), carved out of a larger one (whose slack is
 * unmapped), for a MAP_FIXED mapping to replace; or ss__err_ptr(-errno). */
void *ss__sys_reserve_aligned(size_t len, size_t align);
/* mremap(old, len, len, MREMAP_MAYMOVE | MREMAP_FIXED | MREMAP_DONTUNMAP,
 * to): the page tables of [old, old + len) move to `to` (whatever was
 * there is unmapped), and the mapping at old stays, empty. 0 or -errno
 * (-EINVAL: a kernel before 5.13 for shared mappings, or a mapping it
 * cannot move so). No EINTR. */
int ss__sys_mremap_keep(void *old, size_t len, void *to);
int ss__sys_close(int fd); /* EINTR returned: the fd is closed either way */
/* open("/proc/self/fd/N", flags | O_CLOEXEC): a new open file description;
 * EINTR retried */
int ss__sys_reopen(int fd, int flags);
/* Read a small text file (sysfs/procfs) into buf, NUL-terminated; bytes
 * read or -errno; EINTR retried. */
int ss__sys_read_file(const char *path, char *buf, size_t len);
/* Read an unsigned decimal from a sysfs/procfs file; EINTR retried. */
int ss__sys_read_u64(const char *path, uint64_t *out);
/* move_pages(2) query (nodes NULL): status[i] is the node of pages[i] or
 * -errno; the call's own result is 0 or -errno; no EINTR. */
int ss__sys_move_pages(unsigned long count, void **pages, int *status);
/* Return free heap memory to the kernel (malloc_trim). */
void ss__sys_heap_trim(void);
/* sysconf(_SC_PAGESIZE), read once. */
size_t ss__sys_page_size(void);
/* sysconf(name): > 0, or -EINVAL when the value is unknown or unlimited. */
long ss__sys_sysconf(int name);

/* ------------------------------------------------------------ file I/O */
/* EINTR retried (open can block on a FIFO or a lease) */
int ss__sys_open(const char *path, int flags, unsigned mode);
int ss__sys_openat(int dirfd, const char *path, int flags, unsigned mode);
/* Bytes moved (maybe short) or -errno; EINTR retried. */
ssize_t ss__sys_read(int fd, void *buf, size_t len);
ssize_t ss__sys_write(int fd, const void *buf, size_t len);
ssize_t ss__sys_pread(int fd, void *buf, size_t len, uint64_t off);
ssize_t ss__sys_pwrite(int fd, const void *buf, size_t len, uint64_t off);
ssize_t ss__sys_pwritev(int fd, const struct iovec *iov, int n, uint64_t off);
int ss__sys_fsync(int fd);     /* EINTR retried */
int ss__sys_fdatasync(int fd); /* EINTR retried */
int ss__sys_fstat(int fd, struct stat *st); /* no EINTR */
/* fstatat(2); dirfd AT_FDCWD and flags AT_SYMLINK_NOFOLLOW for lstat;
 * no EINTR */
int ss__sys_fstatat(int dirfd, const char *path, struct stat *st, int flags);
int ss__sys_fstatfs(int fd, struct statfs *st); /* no EINTR */
/* statx(2): the fields of mask that the filesystem knows into *sx (see
 * sx->stx_mask); dirfd + AT_EMPTY_PATH with path "" for an open fd;
 * no EINTR (struct statx is a GNU type: declared for files without
 * _GNU_SOURCE, as the socket types below) */
struct statx;
int ss__sys_statx(int dirfd, const char *path, int flags, unsigned mask, struct statx *sx);
/* fcntl with an int argument (F_DUPFD_CLOEXEC, F_GETFL, F_SETFL, ...):
 * its result or -errno; EINTR returned (only lock waits can see it) */
int ss__sys_fcntl(int fd, int cmd, int arg);
int ss__sys_ioctl(int fd, unsigned long req, void *arg); /* EINTR returned */
int ss__sys_flock(int fd, int op);                       /* EINTR retried */
int ss__sys_dup(int fd);         /* dup(2): the new fd has no FD_CLOEXEC; no EINTR */
int ss__sys_dup_cloexec(int fd); /* fcntl(F_DUPFD_CLOEXEC); no EINTR */

/* ------------------------------ directories (none blocks: no EINTR) */
int ss__sys_mkdirat(int dirfd, const char *path, unsigned mode);
/* unlinkat(2); flags AT_REMOVEDIR for rmdir, dirfd AT_FDCWD for unlink */
int ss__sys_unlinkat(int dirfd, const char *path, int flags);
/* renameat2(2) with flags (RENAME_NOREPLACE ...), renameat(2) when 0 */
int ss__sys_renameat(int olddirfd, const char *oldpath, int newdirfd, const char *newpath,
                     unsigned flags);
int ss__sys_fchmodat(int dirfd, const char *path, unsigned mode, int flags);
int ss__sys_fchownat(int dirfd, const char *path, uid_t uid, gid_t gid, int flags);
int ss__sys_faccessat(int dirfd, const char *path, int mode, int flags);
/* realpath(3) into buf (PATH_MAX bytes) */
int ss__sys_realpath(const char *path, char *buf);
/* mkdtemp(3): tmpl (ending in XXXXXX) becomes a new private directory; 0
 * or -errno. No EINTR. */
int ss__sys_mkdtemp(char *tmpl);
/* A directory stream: a pointer or ss__err_ptr(-errno). */
DIR *ss__sys_opendir(const char *path);
/* A stream over the directory open as dirfd, read from its start: a
 * close-on-exec dup of dirfd (the stream closes it; dirfd stays open; a
 * fork + exec by another thread never inherits it). A dup shares its
 * offset with dirfd, so the stream is rewound before it is returned. */
DIR *ss__sys_dir_reopen(int dirfd);
/* The next entry into *e: 1, 0 at the end, or -errno. */
int ss__sys_readdir(DIR *d, struct dirent **e);
int ss__sys_closedir(DIR *d);

/* -------------------------------------------------------------- sockets */
/* GNU types: declared here too for files that include sys.h after a system
 * header without _GNU_SOURCE (tests) */
struct ucred;
struct mmsghdr;
int ss__sys_socket(int domain, int type, int protocol); /* no EINTR */
/* EINTR retried: a Unix-domain connect either completes or fails again */
int ss__sys_connect(int fd, const struct sockaddr *addr, socklen_t len);
int ss__sys_bind(int fd, const struct sockaddr *addr, socklen_t len); /* no EINTR */
int ss__sys_listen(int fd, int backlog);                              /* no EINTR */
/* accept4(fd, NULL, NULL, flags): the new fd; EINTR retried */
int ss__sys_accept4(int fd, int flags);
int ss__sys_shutdown(int fd, int how); /* no EINTR */
int ss__sys_setsockopt(int fd, int level, int name, const void *val,
                       socklen_t len); /* no EINTR */
/* getsockopt; *len in: room, out: bytes written; no EINTR */
int ss__sys_getsockopt(int fd, int level, int name, void *val, socklen_t *len);
/* The peer's credentials (SO_PEERCRED); no EINTR */
int ss__sys_peercred(int fd, struct ucred *cr);
/* Bytes or -errno; EINTR retried. */
ssize_t ss__sys_send(int fd, const void *buf, size_t len, int flags);
ssize_t ss__sys_recv(int fd, void *buf, size_t len, int flags);
ssize_t ss__sys_sendmsg(int fd, const struct msghdr *m, int flags);
ssize_t ss__sys_recvmsg(int fd, struct msghdr *m, int flags);
/* Messages sent or -errno; EINTR retried. */
int ss__sys_sendmmsg(int fd, struct mmsghdr *v, unsigned n, int flags);

/* ----------------------------------------------- readiness and waiting */
int ss__sys_epoll_create1(int flags);                                   /* no EINTR */
int ss__sys_epoll_ctl(int epfd, int op, int fd, struct epoll_event *ev); /* no EINTR */
/* Events ready, or -errno; EINTR returned (the caller recomputes its timeout) */
int ss__sys_epoll_wait(int epfd, struct epoll_event *evs, int n, int timeout_ms);
/* Ready fds, or -errno; EINTR returned (the caller owns the deadline) */
int ss__sys_poll(struct pollfd *fds, nfds_t n, int timeout_ms);
int ss__sys_eventfd(unsigned initval, int flags); /* no EINTR */
/* Add v to an eventfd's counter. Async-signal-safe, keeps errno; EINTR retried. */
int ss__sys_eventfd_write(int fd, uint64_t v);
/* Read (and reset) the counter into *v; -EAGAIN when it is 0 on a
 * non-blocking eventfd; EINTR retried. */
int ss__sys_eventfd_read(int fd, uint64_t *v);
/* Sleep ns nanoseconds; EINTR retried with the time left, so a signal
 * does not cut the sleep short. */
void ss__sys_sleep_ns(uint64_t ns);
/* Give the CPU to another runnable thread, if any (a busy poll's pause:
 * on a CPU shared with the peer it waits for, the peer runs); no EINTR. */
void ss__sys_yield(void);
uint64_t ss__now_ns(void);      /* CLOCK_MONOTONIC */
uint64_t ss__sys_real_ns(void); /* CLOCK_REALTIME: wall clock, for records read later */

/* ------------------------------------------------- process, CPU, signals */
/* getpid/geteuid cannot fail: here so that every OS call has one home. */
pid_t ss__sys_getpid(void);
uid_t ss__sys_geteuid(void);
/* Is capability `cap` (CAP_*) in this thread's effective set? false when
 * it cannot be read (capget: no EINTR). */
bool ss__sys_cap_effective(int cap);
/* Bytes of randomness written (may be short) or -errno; EINTR retried. */
int ss__sys_getrandom(void *buf, size_t len, unsigned flags);
/* The CPU and NUMA node this thread runs on (vDSO; stale at once); either
 * pointer may be NULL; no EINTR */
int ss__sys_getcpu(unsigned *cpu, unsigned *node);
int ss__sys_getrlimit(int resource, struct rlimit *rl);       /* no EINTR */
int ss__sys_setrlimit(int resource, const struct rlimit *rl); /* no EINTR */
/* pthread_sigmask, as 0 or -errno; no EINTR */
int ss__sys_sigmask(int how, const sigset_t *set, sigset_t *old);
/* Block every signal in this thread; the previous mask into *old if not
 * NULL. Threads the library starts call this first, so that signals go to
 * the application's threads. No EINTR. */
int ss__sys_block_signals(sigset_t *old);
/* process_vm_readv(2) from process pid into this one (flags 0): bytes
 * read (maybe short: a remote range not mapped ends the transfer there),
 * or -errno (-EFAULT: nothing readable at the first remote byte; -EPERM:
 * no PTRACE_MODE_ATTACH_REALCREDS access; -ESRCH: no such pid); EINTR
 * retried (a fatal signal ends it with what it read). */
ssize_t ss__sys_process_vm_readv(pid_t pid, const struct iovec *local, unsigned long nlocal,
                                 const struct iovec *remote, unsigned long nremote);
/* pidfd_open(2) (raw syscall: glibc 2.36 headers lack it): a close-on-exec
 * pidfd of pid, or -errno (-ESRCH: no such process); no EINTR */
int ss__sys_pidfd_open(pid_t pid, unsigned flags);
/* pidfd_send_signal(2) (raw syscall); sig 0 checks only that the process
 * is not reaped yet (-ESRCH once it is; -EPERM: alive, but not ours to
 * signal); no EINTR */
int ss__sys_pidfd_send_signal(int pidfd, int sig, siginfo_t *info, unsigned flags);
/* io_uring_enter(2) without a signal mask: events consumed or -errno;
 * EINTR returned */
int ss__sys_io_uring_enter(int ring_fd, unsigned to_submit, unsigned min_complete,
                           unsigned flags);

/*
 * Fork guard. A writable shared mapping of a memfd must never reach a forked
 * child: there it makes F_SEAL_WRITE fail with EBUSY for as long as the
 * child lives. MADV_DONTFORK can only follow the mmap, so a fork by another
 * thread in between would still copy the mapping. Code that makes such a
 * mapping holds the guard (shared) from the mmap until MADV_DONTFORK is set;
 * fork() takes it exclusively (pthread_atfork). Cheap: an uncontended
 * rwlock read side.
 */
void ss__fork_guard_enter(void);
void ss__fork_guard_leave(void);
/* mmap(PROT_READ|PROT_WRITE, MAP_SHARED) + MADV_DONTFORK under the guard:
 * a pointer or ss__err_ptr(-errno). */
void *ss__sys_mmap_shared_rw(int fd, size_t len);

#endif /* SEALSTORE_SRC_LIB_SYS_H */
