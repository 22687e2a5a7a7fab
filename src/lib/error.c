/* SPDX-License-Identifier: MIT */
/* Error messages, version, capability probe and the assert handler. */
#include "internal.h"
#include "options.h"
#include "segment.h"
#include "sys.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <hwloc.h>
#include <liburing.h>

SS_API const char *ss_version(void)
{
    return SS_VERSION_STRING;
}

/* "NAME: text" for our own codes, like mdb_strerror's table. */
static const char *const ss_errtab[SS_E_LAST - SS_E_BASE] = {
    [SS_E_VERSION - SS_E_BASE] = "SS_E_VERSION: shared-memory layout or protocol version mismatch",
    [SS_E_PROTO - SS_E_BASE] = "SS_E_PROTO: malformed message",
    [SS_E_SEALS - SS_E_BASE] = "SS_E_SEALS: segment seals are not as required",
    [SS_E_CORRUPT - SS_E_BASE] = "SS_E_CORRUPT: internal invariant broken",
    [SS_E_NOBACKING - SS_E_BASE] =
        "SS_E_NOBACKING: the required memory backing is unavailable "
        "(reserve hugepages or set SEALSTORE_HUGEPAGES=auto)",
    [SS_E_FULL - SS_E_BASE] =
        "SS_E_FULL: store memory and spill space exhausted (no room to restore a spilled object)",
};

SS_API const char *ss_strerror(int err)
{
    static __thread char buf[64];
    int e;

    if (err >= 0)
        return "success";
    if (err == INT32_MIN)
        return "unknown error";
    e = -err;
    if (e >= SS_E_BASE && e < SS_E_LAST)
        return ss_errtab[e - SS_E_BASE];
    if (e <= SS_MAX_ERRNO) {
        /* strerror_r (GNU) may return a static string or fill buf */
        return strerror_r(e, buf, sizeof(buf));
    }
    return "unknown error";
}

static bool probe_memfd_flags(unsigned flags)
{
    int fd = ss__sys_memfd_create("sealstore-probe", flags);

    if (fd < 0)
        return false;
    ss__sys_close(fd);
    return true;
}

static bool probe_future_write(void)
{
    int fd = ss__sys_memfd_create("sealstore-probe", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    bool ok;

    if (fd < 0)
        return false;
    ok = ss__sys_add_seals(fd, F_SEAL_FUTURE_WRITE) == 0;
    ss__sys_close(fd);
    return ok;
}

static bool probe_populate_write(void)
{
    size_t pg = ss__sys_page_size();
    void *p = ss__sys_mmap(NULL, pg, PROT_READ | PROT_WRITE,
                           MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    bool ok;

    if (ss__is_err(p))
        return false;
    ok = ss__sys_madvise(p, (size_t)pg, MADV_POPULATE_WRITE) == 0;
    ss__sys_munmap(p, (size_t)pg);
    return ok;
}

static bool probe_numa_bind(void)
{
    hwloc_topology_t t;
    bool ok = false;

    if (hwloc_topology_init(&t) < 0)
        return false;
    if (hwloc_topology_load(t) == 0) {
        const struct hwloc_topology_support *s = hwloc_topology_get_support(t);
        ok = hwloc_topology_is_thissystem(t) && s->membind->set_area_membind;
    }
    hwloc_topology_destroy(t);
    return ok;
}

static bool probe_uring(void)
{
    struct io_uring ring;

    if (io_uring_queue_init(2, &ring, 0) < 0)
        return false;
    io_uring_queue_exit(&ring);
    return true;
}

SS_API unsigned ss_get_support(void)
{
    unsigned s = 0;

    if (probe_memfd_flags(MFD_CLOEXEC | MFD_ALLOW_SEALING))
        s |= SS_SUPPORT_MEMFD_SEAL;
    if (probe_memfd_flags(MFD_CLOEXEC | MFD_NOEXEC_SEAL))
        s |= SS_SUPPORT_NOEXEC_SEAL;
    if (probe_future_write())
        s |= SS_SUPPORT_FUTURE_WRITE;
    if (ss__backing_available(SS_BACKING_2M, 1))
        s |= SS_SUPPORT_HUGETLB_2M;
    if (ss__backing_available(SS_BACKING_1G, 1))
        s |= SS_SUPPORT_HUGETLB_1G;
    if (ss__backing_available(SS_BACKING_THP, 1))
        s |= SS_SUPPORT_THP_SHMEM;
    if (probe_populate_write())
        s |= SS_SUPPORT_POPULATE_WRITE;
    if (probe_numa_bind())
        s |= SS_SUPPORT_NUMA_BIND;
    if (probe_uring())
        s |= SS_SUPPORT_URING;
    return s;
}

/* Prints without allocating (the heap may be what is broken), then aborts. */
void ss__assert_fail(const char *expr, const char *file, int line, const char *func)
{
    char buf[512];
    int n = snprintf(buf, sizeof(buf), "sealstore: assertion failed: %s (%s:%d %s)\n",
                     expr, file, line, func);

    if (n > 0)
        (void)ss__sys_write(STDERR_FILENO, buf,
                            (size_t)n < sizeof(buf) ? (size_t)n : sizeof(buf) - 1);
    abort();
}
