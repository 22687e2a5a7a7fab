/* SPDX-License-Identifier: MIT */
/*
 * Segments: sealed memfds (segment.h has the contract and the kernel
 * behaviour it relies on, doc/design.md the measurements; tests/unit/t_seal.c
 * and t_backing.c check it).
 *
 * Creating a segment walks the backing chain 1G -> 2M -> THP -> 4K. A
 * candidate must pass the policy (SEALSTORE_HUGEPAGES) and, under auto, the
 * waste rule; then a cheap sysfs hint (ss__backing_available) skips pools
 * that are plainly empty, and the real test is the attempt itself: hugetlb
 * memfd_create and ftruncate succeed on an empty pool, mmap reserves the
 * pages (ENOMEM when it cannot) and MADV_POPULATE_WRITE allocates them
 * (EFAULT/ENOMEM when a NUMA-bound node runs dry). We never map with
 * MAP_NORESERVE: an empty pool would then show up as SIGBUS on some later
 * fault instead of an error here.
 *
 * Concurrency: every function works on the segment or fd it is given; the
 * only shared state is a few caches of kernel facts (atomics, benign races:
 * two threads may both read sysfs) and the stats counters.
 */
#include "segment.h"

#include "hugepages.h"
#include "numa.h"
#include "options.h"
#include "stats.h"

#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#define SS_SEG_MAX_SIZE (1ull << 40) /* 1 TiB: anything larger is a bug or an attack */
#define SS_THP_SIZE (2 * SS_MiB)
#define SS_THP_TTL_NS 1000000000ull /* re-read shmem_enabled at most once a second */

/* ------------------------------------------------------------ backings */

static const char *const backing_names[SS_BACKING__COUNT] = {
    [SS_BACKING_4K] = "4K",
    [SS_BACKING_THP] = "THP",
    [SS_BACKING_2M] = "2M",
    [SS_BACKING_1G] = "1G",
};

const char *ss__backing_name(int backing)
{
    if (backing < 0 || backing >= SS_BACKING__COUNT)
        return "?";
    return backing_names[backing];
}

uint32_t ss__backing_page_size(int backing)
{
    switch (backing) {
    case SS_BACKING_4K:
        return 4096;
    case SS_BACKING_THP: /* segments are rounded so every folio can be huge */
    case SS_BACKING_2M:
        return (uint32_t)(2 * SS_MiB);
    case SS_BACKING_1G:
        return (uint32_t)SS_GiB;
    default:
        return 0;
    }
}

static bool is_hugetlb(int backing)
{
    return backing == SS_BACKING_2M || backing == SS_BACKING_1G;
}

/* May this segment skip populating (ss__seg_params.lazy)? 4K shmem keeps
 * its NUMA policy in the file; hugetlb keeps its mmap reservation, but a
 * node binding only in the populating mapping, so only with none to keep. */
static bool may_stay_lazy(const ss__seg_params *p, int backing)
{
    if (!p->lazy || p->kind == SS_SEG_SMALL)
        return false;
    /* an arena's pages fault in when the store copies into them: 4K only
     * (a hugetlb arena is populated, so an empty pool fails here, not in
     * a copy) */
    return backing == SS_BACKING_4K ||
           (p->kind == SS_SEG_OBJECT && is_hugetlb(backing) &&
            (!p->numa || ss__numa_nodes(p->numa) <= 1));
}

/* ------------------------------------------------------ kernel facts */

/*
 * shmem THP mode. The top-level file says always/within_size/advise/never
 * (plus deny/force, testing overrides); kernels with per-size (mTHP)
 * controls also have hugepages-2048kB/shmem_enabled, where "inherit" defers
 * to the top level and anything else decides for the PMD size. MADV_HUGEPAGE
 * is what we use, so every mode but never/deny serves us.
 */
static bool thp_mode_allows(const char *buf)
{
    const char *a = strchr(buf, '[');
    const char *b = a ? strchr(a, ']') : NULL;
    size_t n;

    if (!a || !b)
        return false;
    a++;
    n = (size_t)(b - a);
    return (n == 6 && !memcmp(a, "always", 6)) || (n == 11 && !memcmp(a, "within_size", 11)) ||
           (n == 6 && !memcmp(a, "advise", 6)) || (n == 5 && !memcmp(a, "force", 5));
}

static bool thp_mode_is(const char *buf, const char *mode)
{
    const char *a = strchr(buf, '[');
    size_t n = strlen(mode);

    return a && !strncmp(a + 1, mode, n) && a[1 + n] == ']';
}

static _Atomic uint64_t thp_checked_ns; /* 0: never read (or forgotten) */
static _Atomic bool thp_ok;

static bool thp_read_mode(void)
{
    char buf[256];

    if (ss__sys_read_file("/sys/kernel/mm/transparent_hugepage/shmem_enabled", buf,
                          sizeof(buf)) <= 0)
        return false; /* no THP in this kernel */
    if (thp_mode_is(buf, "deny"))
        return false;
    if (thp_mode_is(buf, "force"))
        return true;
    {
        char per[256];

        if (ss__sys_read_file(
                "/sys/kernel/mm/transparent_hugepage/hugepages-2048kB/shmem_enabled", per,
                sizeof(per)) > 0 &&
            !thp_mode_is(per, "inherit"))
            return thp_mode_allows(per);
    }
    return thp_mode_allows(buf);
}

static bool thp_available(void)
{
    uint64_t now = ss__now_ns();
    uint64_t at = atomic_load_explicit(&thp_checked_ns, memory_order_acquire);

    if (at == 0 || now - at > SS_THP_TTL_NS) {
        atomic_store_explicit(&thp_ok, thp_read_mode(), memory_order_relaxed);
        atomic_store_explicit(&thp_checked_ns, now ? now : 1, memory_order_release);
    }
    return atomic_load_explicit(&thp_ok, memory_order_relaxed);
}

static _Atomic bool hint_enabled = true;

void ss__backing_forget(void)
{
    atomic_store(&thp_checked_ns, 0);
}

void ss__backing_set_hint(bool on)
{
    atomic_store(&hint_enabled, on);
}

static int pool_read(uint64_t page_size, const char *file, uint64_t *out)
{
    char path[128];

    snprintf(path, sizeof(path), "/sys/kernel/mm/hugepages/hugepages-%llukB/%s",
             (unsigned long long)(page_size / 1024), file);
    return ss__sys_read_u64(path, out);
}

bool ss__backing_available(int backing, uint64_t pages)
{
    uint64_t ps, fr, rsv, over, surplus, avail;

    switch (backing) {
    case SS_BACKING_4K:
        return true;
    case SS_BACKING_THP:
        return thp_available();
    case SS_BACKING_2M:
    case SS_BACKING_1G:
        break;
    default:
        return false;
    }
    ps = ss__backing_page_size(backing);
    if (pool_read(ps, "free_hugepages", &fr) < 0)
        return false; /* no such hstate: this kernel or CPU lacks the size */
    /* The other files only refine the answer; if one cannot be read, let
     * the mapping attempt decide. */
    if (pool_read(ps, "resv_hugepages", &rsv) < 0 ||
        pool_read(ps, "nr_overcommit_hugepages", &over) < 0 ||
        pool_read(ps, "surplus_hugepages", &surplus) < 0)
        return true;
    /* free counts pages that mappings have reserved but not faulted yet */
    avail = fr > rsv ? fr - rsv : 0;
    if (over > surplus)
        avail += over - surplus;
    return avail >= pages;
}

/* ------------------------------------------------------------ planning */

/* Rounding `size` up to `page` wastes at most 1/8 of the rounded size. */
static bool waste_ok(uint64_t size, uint64_t page)
{
    uint64_t rounded = SS_ALIGN_UP(size, page);

    if (rounded == 0)
        rounded = page; /* size 0: one page, all of it waste */
    return (rounded - size) <= rounded / 8;
}

/* The segment size for `size` on `backing`: at least one page. */
static uint64_t seg_bytes(uint64_t size, int backing)
{
    uint64_t ps = ss__backing_page_size(backing);
    uint64_t r = SS_ALIGN_UP(size, ps);

    return r ? r : ps;
}

int ss__backing_plan(uint64_t size, int hugepages, int kind, uint8_t out[SS_BACKING__COUNT])
{
    int n = 0;

    if (kind != SS_SEG_OBJECT && kind != SS_SEG_SMALL && kind != SS_SEG_ARENA &&
        kind != SS_SEG_STAGE)
        return -EINVAL;
    if (size > SS_SEG_MAX_SIZE || (kind != SS_SEG_OBJECT && size == 0))
        return -EINVAL;
    switch (hugepages) {
    case SS_HP_AUTO:
        for (int b = SS_BACKING_1G; b >= SS_BACKING_4K; b--) {
            if (b == SS_BACKING_THP && size < SS_THP_SIZE)
                continue; /* a THP segment below one huge page is all waste */
            if (b != SS_BACKING_4K && !waste_ok(size, ss__backing_page_size(b)))
                continue;
            out[n++] = (uint8_t)b;
        }
        break;
    /* An explicit size is a requirement, not a preference: it is used for
     * any request (the operator chose the memory cost), never replaced. */
    case SS_HP_1G:
        out[n++] = SS_BACKING_1G;
        break;
    case SS_HP_2M:
        out[n++] = SS_BACKING_2M;
        break;
    case SS_HP_THP:
        out[n++] = SS_BACKING_THP;
        break;
    case SS_HP_OFF:
        out[n++] = SS_BACKING_4K;
        break;
    default:
        return -EINVAL;
    }
    return n;
}

/* ------------------------------------------------------------ creation */

/* Set once we learn the kernel predates MFD_NOEXEC_SEAL (Linux 6.3). */
static _Atomic bool noexec_unsupported;
/* Set once we learn the kernel predates MADV_POPULATE_WRITE (Linux 5.14). */
static _Atomic bool populate_unsupported;

int ss__memfd_create(const char *name, unsigned flags)
{
    int fd;

    if (!atomic_load_explicit(&noexec_unsupported, memory_order_relaxed)) {
        fd = ss__sys_memfd_create(name, flags | MFD_NOEXEC_SEAL);
        if (fd != -EINVAL)
            return fd;
        /* EINVAL may also mean "no hugetlb": only a retry that works
         * proves the kernel lacks NOEXEC_SEAL */
        fd = ss__sys_memfd_create(name, flags);
        if (fd >= 0)
            atomic_store_explicit(&noexec_unsupported, true, memory_order_relaxed);
        return fd;
    }
    return ss__sys_memfd_create(name, flags);
}

static int memfd_new(int backing, int kind)
{
    const char *name = kind == SS_SEG_SMALL   ? "sealstore-small"
                       : kind == SS_SEG_ARENA ? "sealstore-arena"
                       : kind == SS_SEG_STAGE ? "sealstore-stage"
                                              : "sealstore-obj";
    unsigned flags = MFD_CLOEXEC | MFD_ALLOW_SEALING;

    if (backing == SS_BACKING_2M)
        flags |= MFD_HUGETLB | MFD_HUGE_2MB;
    else if (backing == SS_BACKING_1G)
        flags |= MFD_HUGETLB | MFD_HUGE_1GB;
    return ss__memfd_create(name, flags);
}

/* Populate without MADV_POPULATE_WRITE (kernels before 5.14). */
static int populate_fallback(int fd, char *map, uint64_t size, int backing)
{
    uint64_t step;

    if (backing == SS_BACKING_4K)
        return ss__sys_fallocate(fd, 0, 0, size);
    /* hugetlb: the mmap reservation already holds the pages, so these
     * faults cannot SIGBUS (short of a NUMA binding to a node that has no
     * pages: old kernels only, and a reason to prefer populate).
     * THP: fallocate would allocate small folios (no MADV_HUGEPAGE on the
     * file yet), so fault through the advised mapping. */
    step = backing == SS_BACKING_THP ? 4096 : ss__backing_page_size(backing);
    for (uint64_t off = 0; off < size; off += step)
        ((volatile char *)map)[off] = 0;
    return 0;
}

/* Which errors of an attempt mean "this backing cannot be had now" rather
 * than a failure that another backing would not fix. */
static bool backing_missing(int backing, int err)
{
    if (is_hugetlb(backing))
        /* EINVAL/ENODEV/ENOSYS: no hugetlb or no such size; ENOMEM: mmap
         * could not reserve; ENOSPC: fallocate ran out; EFAULT: populate
         * would have raised SIGBUS (node-bound pool empty) */
        return err == -EINVAL || err == -ENODEV || err == -ENOSYS || err == -ENOMEM ||
               err == -ENOSPC || err == -EFAULT;
    if (backing == SS_BACKING_THP)
        return err == -EINVAL; /* MADV_HUGEPAGE: kernel without THP */
    return false;
}

/*
 * Map the whole segment read-write. THP needs a 2 MiB-aligned address or
 * every fault allocates small folios; the kernel aligns shmem mappings when
 * THP is enabled, but not in every mode (nor under valgrind), so when the
 * address it picked is off we carve an aligned one out of a larger
 * reservation (two more syscalls, against populating >= 2 MiB).
 */
static void *map_rw(int fd, uint64_t size, int backing)
{
    const uint64_t align = SS_THP_SIZE;
    void *p, *a;

    p = ss__sys_mmap(NULL, (size_t)size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (ss__is_err(p) || backing != SS_BACKING_THP || ((uintptr_t)p & (align - 1)) == 0)
        return p;
    ss__sys_munmap(p, (size_t)size);
    a = ss__sys_reserve_aligned((size_t)size, (size_t)align);
    if (ss__is_err(a))
        return a;
    p = ss__sys_mmap(a, (size_t)size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, fd, 0);
    if (ss__is_err(p))
        ss__sys_munmap(a, (size_t)size);
    return p;
}

static int try_backing(ss__seg *seg, const ss__seg_params *p, int backing, uint64_t size,
                       int *err_step)
{
    void *map;
    int fd, rc;
    uint64_t t0;

    *err_step = 0;
    fd = memfd_new(backing, p->kind);
    if (fd < 0)
        return fd;
    *err_step = 1;
    rc = ss__sys_ftruncate(fd, size);
    if (rc < 0)
        goto fail_close;
    *err_step = 2;
    /* The populate mapping is writable and made from the O_RDWR fd: a
     * forked child holding a copy (an embedded store's host may fork at
     * any time) would make every later F_SEAL_WRITE fail with EBUSY. So
     * MADV_DONTFORK goes on before any fork can copy it. */
    ss__fork_guard_enter();
    map = map_rw(fd, size, backing);
    if (!ss__is_err(map)) {
        rc = ss__sys_madvise(map, (size_t)size, MADV_DONTFORK);
        if (rc < 0) {
            ss__sys_munmap(map, (size_t)size);
            map = ss__err_ptr(rc);
        }
    }
    ss__fork_guard_leave();
    if (ss__is_err(map)) {
        rc = (int)ss__ptr_err(map);
        goto fail_close;
    }
    *err_step = 3;
    if (p->numa) {
        rc = ss__numa_bind(p->numa, map, (size_t)size, p->node);
        if (rc < 0)
            goto fail_unmap;
    }
    if (backing == SS_BACKING_THP) {
        rc = ss__sys_madvise(map, (size_t)size, MADV_HUGEPAGE);
        if (rc < 0)
            goto fail_unmap;
    } else if (backing == SS_BACKING_4K && thp_available()) {
        /* under shmem_enabled=always a 100 KiB object would get a 2 MiB
         * folio: the waste the backing choice just avoided. Best effort
         * (force ignores it). */
        (void)ss__sys_madvise(map, (size_t)size, MADV_NOHUGEPAGE);
    }
    *err_step = 4;
    if (!may_stay_lazy(p, backing)) {
        t0 = ss__now_ns();
        rc = -EINVAL;
        if (!atomic_load_explicit(&populate_unsupported, memory_order_relaxed)) {
            rc = ss__sys_madvise(map, (size_t)size, MADV_POPULATE_WRITE);
            if (rc == -EINVAL)
                atomic_store_explicit(&populate_unsupported, true, memory_order_relaxed);
        }
        if (rc == -EINVAL)
            rc = populate_fallback(fd, map, size, backing);
        if (rc < 0)
            goto fail_unmap;
        ss__counter_add(&ss__g_stats.populate_ns, ss__now_ns() - t0);
        ss__counter_add(&ss__g_stats.populate_bytes, size);
    }

    if (p->kind == SS_SEG_OBJECT || p->kind == SS_SEG_STAGE) {
        /* OBJECT segments are written by the creator through its own
         * mapping; a store mapping from the O_RDWR fd would make
         * F_SEAL_WRITE fail with EBUSY. STAGE areas are the client's to
         * write; the store reads them (design.md section 4a) */
        ss__sys_munmap(map, (size_t)size);
        map = NULL;
    }
    seg->fd = fd;
    seg->page_size = ss__backing_page_size(backing);
    seg->backing = (uint8_t)backing;
    seg->kind = (uint8_t)p->kind;
    seg->node = (int16_t)(p->numa ? p->node : SS_NODE_ANY);
    seg->size = size;
    seg->map = map;
    return 0;

fail_unmap:
    ss__sys_munmap(map, (size_t)size);
fail_close:
    ss__sys_close(fd);
    return rc;
}

/* [0]: said at debug level, [1]: warned (see warn_missing) */
static atomic_flag warned[2][SS_BACKING__COUNT];

static const char *const step_names[] = {"memfd_create", "ftruncate", "mmap", "madvise",
                                         "populate"};

/* Which memory was missing and how an operator gets it, as one line
 * (err 0: the pool or mode looked empty before any attempt). */
static void describe_missing(int backing, int err, int step, char *buf, size_t len)
{
    const char *where = err ? step_names[step] : "pool";
    const char *what = err ? ss_strerror(err) : "too few free pages";

    switch (backing) {
    case SS_BACKING_1G:
        snprintf(buf, len,
                 "no free 1 GiB hugepages (%s: %s): raise "
                 "/sys/kernel/mm/hugepages/hugepages-1048576kB/nr_hugepages "
                 "(or boot with hugepagesz=1G hugepages=N)",
                 where, what);
        break;
    case SS_BACKING_2M:
        snprintf(buf, len,
                 "no free 2 MiB hugepages (%s: %s): raise /proc/sys/vm/nr_hugepages "
                 "(or /sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages)",
                 where, what);
        break;
    case SS_BACKING_THP:
        snprintf(buf, len,
                 "shmem transparent hugepages unavailable (%s): echo advise > "
                 "/sys/kernel/mm/transparent_hugepage/shmem_enabled",
                 err ? ss_strerror(err) : "shmem_enabled is never or deny");
        break;
    default:
        snprintf(buf, len, "4K shmem unavailable (%s)", ss_strerror(err));
        break;
    }
}

/* Has the operator given the machine this backing at all? A pool left at
 * 0 pages and shmem THP at never are a stock install, not a shortage. */
static bool backing_configured(int backing)
{
    if (is_hugetlb(backing))
        return ss__hpool_configured(ss__backing_page_size(backing));
    return backing == SS_BACKING_THP && thp_available();
}

/* One line per backing for the life of the process: a warning when an
 * explicit setting cannot be honoured or memory the operator configured
 * ran out; a debug line when the machine simply has none (the store says
 * that once at start, at info level). */
static void warn_missing(int backing, int err, int step, bool fallback)
{
    char line[320];
    bool configured;

    if (backing == SS_BACKING_4K)
        return;
    configured = !fallback || backing_configured(backing);
    if (atomic_flag_test_and_set(&warned[configured][backing]))
        return;
    describe_missing(backing, err, step, line, sizeof(line));
    ss__log(configured ? SS_LOG_WARN : SS_LOG_DEBUG, "%s%s", line,
            fallback ? "; falling back to a smaller page size" : "");
}

int ss__backing_require(int hugepages, char *why, size_t len)
{
    int backing, fd, rc, step = 0;
    uint64_t page;
    void *map;

    if (len)
        why[0] = '\0';
    switch (hugepages) {
    case SS_HP_1G:
        backing = SS_BACKING_1G;
        break;
    case SS_HP_2M:
        backing = SS_BACKING_2M;
        break;
    case SS_HP_THP:
        if (thp_available())
            return 0;
        describe_missing(SS_BACKING_THP, 0, 0, why, len);
        return -SS_E_NOBACKING;
    case SS_HP_AUTO:
    case SS_HP_OFF:
        return 0;
    default:
        return -EINVAL;
    }
    /* memfd_create and ftruncate succeed on an empty pool; the shared
     * mapping reserves a page (ENOMEM when there is none) and is dropped
     * before anything faults */
    page = ss__backing_page_size(backing);
    fd = memfd_new(backing, SS_SEG_OBJECT);
    if (fd < 0) {
        rc = fd;
        goto out;
    }
    step = 1;
    rc = ss__sys_ftruncate(fd, page);
    if (rc == 0) {
        step = 2;
        map = ss__sys_mmap(NULL, (size_t)page, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        if (ss__is_err(map))
            rc = (int)ss__ptr_err(map);
        else
            ss__sys_munmap(map, (size_t)page);
    }
    ss__sys_close(fd);
out:
    if (rc < 0 && backing_missing(backing, rc)) {
        describe_missing(backing, rc, step, why, len);
        return -SS_E_NOBACKING;
    }
    if (rc < 0)
        snprintf(why, len, "%s of a %s hugepage: %s", step_names[step],
                 ss__backing_name(backing), ss_strerror(rc));
    return rc;
}

int ss__seg_create(ss__seg *seg, const ss__seg_params *p)
{
    uint8_t plan[SS_BACKING__COUNT];
    int n, rc = -SS_E_NOBACKING;
    bool explicit_policy;

    if (!seg || !p)
        return -EINVAL;
    n = ss__backing_plan(p->size, p->hugepages, p->kind, plan);
    if (n < 0)
        return n;
    explicit_policy = p->hugepages != SS_HP_AUTO;
    for (int i = 0; i < n; i++) {
        int b = plan[i], step = 0;
        uint64_t size = seg_bytes(p->size, b);
        bool last = i == n - 1;

        if (atomic_load_explicit(&hint_enabled, memory_order_relaxed) &&
            !ss__backing_available(b, size / ss__backing_page_size(b))) {
            warn_missing(b, 0, 0, !explicit_policy);
            continue;
        }
        rc = try_backing(seg, p, b, size, &step);
        if (rc == 0) {
            if (i > 0)
                ss__counter_add(&ss__g_stats.backing_fallbacks, 1);
            ss__stats_segment(seg, +1);
            return 0;
        }
        if (!backing_missing(b, rc) || (last && !explicit_policy))
            return rc; /* EMFILE, ENOMEM on 4K shmem, a bad NUMA node... */
        warn_missing(b, rc, step, !explicit_policy);
    }
    return -SS_E_NOBACKING;
}

/* ------------------------------------------------------------- sealing */

/* Keep the per-backing byte counts exact when a segment shrinks (the
 * segment count itself does not change). */
static void stats_resize(const ss__seg *seg, uint64_t old_size, uint64_t new_size)
{
    int64_t d = (int64_t)new_size - (int64_t)old_size;
    ss__count *c;

    switch (seg->backing) {
    case SS_BACKING_THP:
        c = &ss__g_stats.seg_bytes_thp;
        break;
    case SS_BACKING_2M:
        c = &ss__g_stats.seg_bytes_2m;
        break;
    case SS_BACKING_1G:
        c = &ss__g_stats.seg_bytes_1g;
        break;
    default:
        c = &ss__g_stats.seg_bytes_4k;
        break;
    }
    ss__count_add(c, d);
    /* same rule as ss__stats_segment(): only real nodes below the cap */
    if (seg->node >= 0 && seg->node < SS_MAX_NODES)
        atomic_fetch_add_explicit(&ss__g_stats.node_bytes[seg->node], d, memory_order_relaxed);
}

int ss__seg_fix_size(ss__seg *seg, uint64_t size)
{
    uint64_t target;
    int rc;

    if (!seg || seg->fd < 0 || seg->size == 0 || seg->kind != SS_SEG_OBJECT || seg->map)
        return -EINVAL;
    if (size > seg->size) /* also keeps SS_ALIGN_UP below from overflowing */
        return -EINVAL;
    target = SS_ALIGN_UP(size, (uint64_t)seg->page_size);
    if (target == 0)
        target = seg->page_size; /* an empty object still has one page */
    if (target < seg->size) {
        rc = ss__sys_ftruncate(seg->fd, target);
        if (rc < 0)
            return rc;
        stats_resize(seg, seg->size, target);
        seg->size = target;
    }
    rc = ss__sys_add_seals(seg->fd, SS_SEALS_SIZE);
    if (rc < 0)
        return rc;
    /* slows down other uids reopening a reader's fd O_RDWR before the write
     * seal; the write seal is the real protection */
    return ss__sys_fchmod(seg->fd, 0400);
}

static bool seals_are(int seals, int want)
{
    return seals >= 0 && (seals & ~F_SEAL_EXEC) == want;
}

bool ss__seals_object_ok(int seals)
{
    return seals_are(seals, SS_SEALS_OBJECT);
}

bool ss__seals_small_ok(int seals)
{
    return seals_are(seals, SS_SEALS_SMALL);
}

int ss__seg_seal_small(ss__seg *seg)
{
    int rc;

    if (!seg || seg->fd < 0 || seg->size == 0 || seg->kind == SS_SEG_OBJECT || !seg->map)
        return -EINVAL;
    rc = ss__sys_add_seals(seg->fd, SS_SEALS_SMALL);
    if (rc < 0)
        return rc;
    rc = ss__sys_get_seals(seg->fd);
    if (rc < 0)
        return rc;
    return ss__seals_small_ok(rc) ? 0 : -EPERM;
}

/* A write seal slower than this waited for page references (above). */
#define SEAL_WAIT_NS (4 * 1000000ull)

int ss__seg_seal_write(int fd, uint64_t size)
{
    uint64_t t0, t1;
    int rc;

    if (fd < 0)
        return -EBADF;
    /* EPERM: F_SEAL_SEAL is already set (a creator sealed it first, which
     * it can since it holds a writable fd) or the fd is read-only. EBUSY: a
     * writable shared mapping or a pin exists; nothing changed. */
    t0 = ss__now_ns();
    rc = ss__sys_add_seals(fd, F_SEAL_WRITE | F_SEAL_SEAL);
    t1 = ss__now_ns();
    if (t1 - t0 > SEAL_WAIT_NS) {
        /* The kernel found a page with an extra reference (a pin, or a
         * transient one: compaction, a concurrent GUP) and waited it out
         * in 5, 10, 20, 40, 80 ms steps. Seen right after a hugepage
         * reservation (bench/put_probe.c): count it and say so. */
        ss__counter_add(&ss__g_stats.seal_waits, 1);
        ss__log_info("seal of %llu bytes waited %.1f ms in the kernel for transient page "
                     "references (%s)",
                     (unsigned long long)size, (double)(t1 - t0) / 1e6,
                     rc < 0 ? ss_strerror(rc) : "sealed");
    }
    if (rc < 0)
        return rc;
    /* The add only proves our bits are now set: anything the creator added
     * besides (FUTURE_WRITE) or failed to have (the size seals) means the
     * object is not what we publish. */
    rc = ss__sys_get_seals(fd);
    if (rc < 0)
        return rc;
    if (!ss__seals_object_ok(rc))
        return -EPERM;
    /* Allocate any holes now, under the store's accounting, rather than in
     * a reader's fault. Allowed under F_SEAL_WRITE (it changes no data). On
     * hugetlb this can fail with ENOSPC when the pool ran dry. A segment the
     * store populated has no holes unless the creator punched some, and
     * the block count tells in O(1): fallocate walks every page (~35 ms per
     * GiB of 4K pages), so it runs only when blocks are missing. The size
     * seals keep pages from existing past `size`, so blocks covering `size`
     * means no hole. */
    return ss__seg_fill_holes(fd, size);
}

int ss__seg_fill_holes(int fd, uint64_t size)
{
    uint64_t held;

    if (size == 0 || (ss__sys_allocated(fd, &held) == 0 && held >= size))
        return 0;
    return ss__sys_fallocate(fd, 0, 0, size);
}

int ss__seg_reopen_ro(int fd)
{
    if (fd < 0)
        return -EBADF;
    return ss__sys_reopen(fd, O_RDONLY);
}

int ss__seg_get_seals(int fd)
{
    if (fd < 0)
        return -EBADF;
    return ss__sys_get_seals(fd);
}

void ss__seg_destroy(ss__seg *seg)
{
    /* A zeroed segment has fd 0 and size 0: size tells a live one apart
     * (every live segment has at least one page), so stdin is never closed. */
    if (!seg || seg->size == 0 || seg->fd < 0) {
        if (seg) {
            seg->fd = -1;
            seg->size = 0;
            seg->map = NULL;
        }
        return;
    }
    ss__stats_segment(seg, -1);
    ss__seg_close(seg);
}

void ss__seg_close(ss__seg *seg)
{
    if (seg->map)
        ss__sys_munmap(seg->map, (size_t)seg->size);
    if (seg->fd >= 0)
        ss__sys_close(seg->fd);
    seg->fd = -1;
    seg->size = 0;
    seg->map = NULL;
}
