/* SPDX-License-Identifier: MIT */
/*
 * Thin OS wrappers. Each returns >= 0 or -errno (never -1 + errno), so the
 * rest of the library has one error channel. Constants missing from older
 * headers (Debian 12 ships 6.1 uapi headers) are defined here.
 */
#ifndef SEALSTORE_SRC_LIB_SYS_H
#define SEALSTORE_SRC_LIB_SYS_H

#include "internal.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/types.h>
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

int ss__sys_memfd_create(const char *name, unsigned flags);
int ss__sys_ftruncate(int fd, uint64_t len);
int ss__sys_fallocate(int fd, int mode, uint64_t off, uint64_t len);
int ss__sys_add_seals(int fd, int seals);
int ss__sys_get_seals(int fd);
int ss__sys_fchmod(int fd, unsigned mode);
/* Bytes the file really holds (st_blocks * 512), or -errno. */
int ss__sys_allocated(int fd, uint64_t *bytes);
/* mmap returning a pointer or ss__err_ptr(-errno) */
void *ss__sys_mmap(void *addr, size_t len, int prot, int flags, int fd, uint64_t off);
int ss__sys_munmap(void *addr, size_t len);
int ss__sys_madvise(void *addr, size_t len, int advice);
int ss__sys_mprotect(void *addr, size_t len, int prot);
int ss__sys_close(int fd);
/* open("/proc/self/fd/N", flags | O_CLOEXEC): a new open file description */
int ss__sys_reopen(int fd, int flags);
/* Read a small text file (sysfs/procfs) into buf, NUL-terminated; bytes read or -errno. */
int ss__sys_read_file(const char *path, char *buf, size_t len);
/* Read an unsigned decimal from a sysfs/procfs file. */
int ss__sys_read_u64(const char *path, uint64_t *out);
uint64_t ss__now_ns(void); /* CLOCK_MONOTONIC */
/* Return free heap memory to the kernel (malloc_trim). */
void ss__sys_heap_trim(void);

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
