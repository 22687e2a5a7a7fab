/* SPDX-License-Identifier: MIT */
/*
 * Backing choice of segments (segment.h): the waste rule, the fallback chain under auto, hard
 * failure (never SIGBUS) under an explicit policy, what the kernel really
 * maps, and the per-backing stats.
 *
 * Provisioning: the hugetlb cases need 2 MiB pages (as root the test
 * reserves them itself and puts the pool back at exit; otherwise
 *     echo 40 > /proc/sys/vm/nr_hugepages
 * ). The 1 GiB case needs one 1 GiB page (reserved as root when memory
 * allows, released right after). The THP case switches
 * /sys/kernel/mm/transparent_hugepage/shmem_enabled to advise as root for
 * its duration (restored afterwards, and at exit should the case fail).
 * Cases whose memory cannot be had skip with the reason.
 */
#include "config.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "../t_helpers.h"

#include "numa.h"
#include "options.h"
#include "segment.h"
#include "stats.h"

#define HUGE_2M (2ull << 20)
#define HUGE_1G (1ull << 30)
#define OBJ_64M (64ull << 20)
#define PAGES_64M (OBJ_64M / HUGE_2M)
/* the empty-pool cases populate pool-size+ bytes of 4K/THP memory instead:
 * keep them cheap when other programs hold a big pool */
#define EMPTY_POOL_MAX (192ull << 20)

static bool no_hugetlb;
static char no_hugetlb_why[160];

/* ------------------------------------------------------------- helpers */

static int64_t cur(const ss__count *c)
{
    return atomic_load_explicit(&c->cur, memory_order_relaxed);
}

static uint64_t counter(_Atomic uint64_t *c)
{
    return atomic_load_explicit(c, memory_order_relaxed);
}

static int create(ss__seg *seg, uint64_t size, int hugepages, int kind)
{
    ss__seg_params p = {
        .size = size, .hugepages = hugepages, .kind = kind, .numa = NULL, .node = SS_NODE_ANY,
    };

    return ss__seg_create(seg, &p);
}


/* Map the segment read-only through a reader's fd at an address aligned
 * to its page (the kernel picks one for hugetlb and THP shmem by itself,
 * valgrind does not), and fault it all in. */
static void *reader_map(const ss__seg *seg, int *rfd)
{
    uint64_t align = seg->page_size;
    char *res, *r;

    *rfd = ss__seg_reopen_ro(seg->fd);
    t_assert_ok(*rfd);
    res = mmap(NULL, seg->size + align, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    assert_true(res != MAP_FAILED);
    r = (char *)SS_ALIGN_UP((uintptr_t)res, (uintptr_t)align);
    assert_true(mmap(r, seg->size, PROT_READ, MAP_SHARED | MAP_FIXED, *rfd, 0) == r);
    if (r > res)
        munmap(res, (size_t)(r - res));
    if (res + seg->size + align > r + seg->size)
        munmap(r + seg->size, (size_t)(res + seg->size + align - (r + seg->size)));
    t_assert_ok(madvise(r, seg->size, MADV_POPULATE_READ) < 0 ? -errno : 0);
    return r;
}

static void need_2m(long pages)
{
    long fr;

    T_SKIP_IF(no_hugetlb, "hugepages", no_hugetlb_why);
    fr = t_hugetlb_reserve(HUGE_2M, pages);
    if (fr < pages)
        fail_msg("could not reserve %ld 2 MiB pages (%ld)", pages, fr);
}

/* A request the 2 MiB pool cannot serve right now: more than its free
 * pages hold (0 pages free: any size). Read right before use: other test
 * programs resize the pool. */
/* A size no 2 MiB pool state can serve: more pages than the pool could
 * ever hold (its size plus overcommit, not just what is free now: other
 * test programs free pages concurrently). Call it holding
 * t_hugetlb_lock(), so nobody grows the pool meanwhile. */
static uint64_t beyond_2m_pool(void)
{
    long total = no_hugetlb ? 0 : t_hugetlb_total(HUGE_2M);

    if (total < 0)
        total = 0; /* no 2 MiB hstate at all */
    return (uint64_t)(total + 2) * HUGE_2M;
}

/* Collects warnings (and errors), and separately debug lines, from the
 * library's log sink. */
static char warnings[4096], debugs[4096];
static int nwarnings;

static void sink(int level, const char *line, void *arg)
{
    char *buf = level <= SS_LOG_WARN ? warnings : level == SS_LOG_DEBUG ? debugs : NULL;

    (void)arg;
    if (!buf)
        return;
    if (buf == warnings)
        nwarnings++;
    strncat(buf, line, sizeof(warnings) - strlen(buf) - 2);
    strcat(buf, "\n");
}

/* Exactly one line in `lines` about the 2 MiB pool, naming the fix. */
static void one_2m_line(const char *lines, const char *what)
{
    const char *first = strstr(lines, "2 MiB hugepages");

    if (!first || !strstr(first, "/proc/sys/vm/nr_hugepages"))
        fail_msg("no %s about the 2 MiB pool naming nr_hugepages; got:\n%s", what, lines);
    if (strstr(first + 1, "2 MiB hugepages"))
        fail_msg("the 2 MiB pool %s came more than once:\n%s", what, lines);
}

/* Two creates under auto beyond the 2 MiB pool, the hint on then off: both
 * fall back (THP or 4K) and count it. Call holding t_hugetlb_lock(). */
static void fall_back_twice(uint64_t size)
{
    uint64_t fb0 = counter(&ss__g_stats.backing_fallbacks);
    ss__seg seg;

    for (int hint = 1; hint >= 0; hint--) {
        ss__backing_set_hint(hint);
        t_assert_ok(create(&seg, size, SS_HP_AUTO, SS_SEG_OBJECT));
        ss__backing_set_hint(true);
        if (seg.backing != SS_BACKING_THP && seg.backing != SS_BACKING_4K)
            fail_msg("%llu bytes beyond the 2M pool got %s", (unsigned long long)size,
                     ss__backing_name(seg.backing));
        assert_int_equal(seg.size, size);
        assert_int_equal(counter(&ss__g_stats.backing_fallbacks) - fb0, 2 - hint);
        ss__seg_destroy(&seg);
    }
}

/* ---------------------------------------------------------- thp switch */

static char thp_saved[32];

static int thp_write(const char *mode)
{
    FILE *f = fopen("/sys/kernel/mm/transparent_hugepage/shmem_enabled", "w");
    int rc = 0;

    if (!f)
        return -errno;
    if (fputs(mode, f) < 0)
        rc = -EIO;
    if (fclose(f) != 0 && rc == 0)
        rc = -errno;
    ss__backing_forget();
    return rc;
}

static void thp_restore(void)
{
    if (thp_saved[0] && thp_write(thp_saved) < 0)
        fprintf(stderr, "warning: could not restore shmem_enabled to %s\n", thp_saved);
    thp_saved[0] = '\0';
}

/* --------------------------------------------------------------- cases */

static void t_names(void **state)
{
    static const struct {
        int b;
        const char *name;
        uint32_t ps;
    } tab[] = {
        {SS_BACKING_4K, "4K", 4096},
        {SS_BACKING_THP, "THP", 2u << 20},
        {SS_BACKING_2M, "2M", 2u << 20},
        {SS_BACKING_1G, "1G", 1u << 30},
    };

    (void)state;
    for (size_t i = 0; i < SS_ARRAY_SIZE(tab); i++) {
        assert_string_equal(ss__backing_name(tab[i].b), tab[i].name);
        assert_int_equal(ss__backing_page_size(tab[i].b), tab[i].ps);
    }
    assert_string_equal(ss__backing_name(SS_BACKING__COUNT), "?");
    assert_string_equal(ss__backing_name(-1), "?");
    assert_int_equal(ss__backing_page_size(SS_BACKING__COUNT), 0);
    assert_true(ss__backing_available(SS_BACKING_4K, 1u << 30));
    assert_false(ss__backing_available(SS_BACKING__COUNT, 1));
}

/* Expect plan(size, policy) == the listed backings, best first. */
static void plan_is(uint64_t size, int hp, int kind, int n, ...)
{
    uint8_t out[SS_BACKING__COUNT];
    int got = ss__backing_plan(size, hp, kind, out);
    va_list ap;

    if (got != n)
        fail_msg("plan(%llu, %d): %d backings, expected %d", (unsigned long long)size, hp, got,
                 n);
    va_start(ap, n);
    for (int i = 0; i < n; i++) {
        int want = va_arg(ap, int);

        if (out[i] != want)
            fail_msg("plan(%llu, %d)[%d] = %s, expected %s", (unsigned long long)size, hp, i,
                     ss__backing_name(out[i]), ss__backing_name(want));
    }
    va_end(ap);
}

/* The waste rule: a page size is tried only if rounding up to it wastes at
 * most 1/8 of the rounded size (auto); explicit policies take any size. */
static void t_plan(void **state)
{
    const int O = SS_SEG_OBJECT, S = SS_SEG_SMALL;
    uint8_t out[SS_BACKING__COUNT];

    (void)state;
    plan_is(100 * SS_KiB, SS_HP_AUTO, O, 1, SS_BACKING_4K);
    plan_is(0, SS_HP_AUTO, O, 1, SS_BACKING_4K);
    plan_is(64 * SS_MiB, SS_HP_AUTO, O, 3, SS_BACKING_2M, SS_BACKING_THP, SS_BACKING_4K);
    plan_is(SS_GiB, SS_HP_AUTO, O, 4, SS_BACKING_1G, SS_BACKING_2M, SS_BACKING_THP,
            SS_BACKING_4K);
    /* 1 GiB + 4 KiB would take two 1 GiB pages: half wasted */
    plan_is(SS_GiB + 4096, SS_HP_AUTO, O, 3, SS_BACKING_2M, SS_BACKING_THP, SS_BACKING_4K);
    /* exactly 1/8 wasted is allowed, a byte more is not */
    plan_is(SS_GiB / 8 * 7, SS_HP_AUTO, O, 4, SS_BACKING_1G, SS_BACKING_2M, SS_BACKING_THP,
            SS_BACKING_4K);
    plan_is(SS_GiB / 8 * 7 - 1, SS_HP_AUTO, O, 3, SS_BACKING_2M, SS_BACKING_THP,
            SS_BACKING_4K);
    /* below 2 MiB: hugetlb 2M if the waste is small, never THP */
    plan_is(HUGE_2M / 8 * 7, SS_HP_AUTO, O, 2, SS_BACKING_2M, SS_BACKING_4K);
    plan_is(HUGE_2M / 8 * 7 - 1, SS_HP_AUTO, O, 1, SS_BACKING_4K);
    plan_is(3 * SS_MiB, SS_HP_AUTO, O, 1, SS_BACKING_4K); /* 4 MiB rounded: 25% waste */
    plan_is(4 * SS_MiB, SS_HP_AUTO, S, 3, SS_BACKING_2M, SS_BACKING_THP, SS_BACKING_4K);
    plan_is(SS_GiB, SS_HP_OFF, O, 1, SS_BACKING_4K);
    plan_is(100 * SS_KiB, SS_HP_2M, O, 1, SS_BACKING_2M);
    plan_is(100 * SS_KiB, SS_HP_1G, O, 1, SS_BACKING_1G);
    plan_is(100 * SS_KiB, SS_HP_THP, O, 1, SS_BACKING_THP);
    plan_is(1ull << 40, SS_HP_AUTO, O, 4, SS_BACKING_1G, SS_BACKING_2M, SS_BACKING_THP,
            SS_BACKING_4K);
    t_assert_err(ss__backing_plan((1ull << 40) + 1, SS_HP_AUTO, O, out), -EINVAL);
    t_assert_err(ss__backing_plan(UINT64_MAX, SS_HP_1G, O, out), -EINVAL);
    t_assert_err(ss__backing_plan(0, SS_HP_AUTO, S, out), -EINVAL);
    t_assert_err(ss__backing_plan(4096, 99, O, out), -EINVAL);
    t_assert_err(ss__backing_plan(4096, -1, O, out), -EINVAL);
    t_assert_err(ss__backing_plan(4096, SS_HP_AUTO, 5, out), -EINVAL);
}

/* Stats: per-backing bytes and the segment count follow create, shrink
 * (fix_size) and destroy. */
static void t_stats(void **state)
{
    ss__seg seg;
    int64_t b0 = cur(&ss__g_stats.seg_bytes_4k), n0 = cur(&ss__g_stats.segments);
    uint64_t created0 = counter(&ss__g_stats.seg_created);
    uint64_t pop0 = counter(&ss__g_stats.populate_bytes);

    (void)state;
    t_assert_ok(create(&seg, SS_MiB + 1, SS_HP_OFF, SS_SEG_OBJECT));
    assert_int_equal(seg.backing, SS_BACKING_4K);
    assert_int_equal(seg.size, SS_MiB + 4096);
    assert_int_equal(cur(&ss__g_stats.seg_bytes_4k) - b0, SS_MiB + 4096);
    assert_int_equal(cur(&ss__g_stats.segments) - n0, 1);
    assert_int_equal(counter(&ss__g_stats.seg_created) - created0, 1);
    assert_true(counter(&ss__g_stats.populate_bytes) - pop0 >= SS_MiB + 4096);
    t_assert_ok(ss__seg_fix_size(&seg, 4096 * 3));
    assert_int_equal(seg.size, 4096 * 3);
    assert_int_equal(cur(&ss__g_stats.seg_bytes_4k) - b0, 4096 * 3);
    ss__seg_destroy(&seg);
    assert_int_equal(cur(&ss__g_stats.seg_bytes_4k), b0);
    assert_int_equal(cur(&ss__g_stats.segments), n0);
    ss__seg_destroy(&seg); /* counted once only */
    assert_int_equal(cur(&ss__g_stats.segments), n0);
}

/* Under auto beyond the 2 MiB pool, a create falls back (THP or 4K) and
 * counts the fallback. A pool nobody configured (0 pages, no overcommit:
 * a stock machine) is no fault: not a warning, one debug line naming the
 * fix. A configured pool that runs dry warns once, naming the fix (as
 * root the case configures one page itself to see it). With the hint off
 * the mapping attempt itself meets the pool. */
static void t_auto_fallback(void **state)
{
    int lk = t_hugetlb_lock();
    uint64_t size = beyond_2m_pool();
    bool configured = !no_hugetlb && t_hugetlb_total(HUGE_2M) > 0;
    int fds0 = t_count_fds();

    (void)state;
    /* the fallback populates `size` bytes of 4K/THP memory */
    if (size > EMPTY_POOL_MAX)
        t_hugetlb_unlock(lk);
    T_SKIP_IF(size > EMPTY_POOL_MAX, NULL,
              "the 2 MiB pool is too large (other programs reserved pages) to exceed cheaply");
    warnings[0] = debugs[0] = '\0';
    ss__log_set_level(SS_LOG_DEBUG);
    ss_log_set_sink(sink, NULL);
    fall_back_twice(size);
    t_hugetlb_unlock(lk);
    /* failed candidates closed their fds */
    assert_int_equal(t_count_fds(), fds0 + (lk >= 0 ? -1 : 0));
    if (configured) {
        one_2m_line(warnings, "warning");
    } else {
        if (!no_hugetlb && strstr(warnings, "2 MiB hugepages"))
            fail_msg("a 2 MiB pool nobody configured gave a warning:\n%s", warnings);
        if (!no_hugetlb)
            one_2m_line(debugs, "debug line");
        /* now configure it (one page) and run it dry: that warns */
        if (!no_hugetlb && geteuid() == 0 && t_hugetlb_reserve(HUGE_2M, 1) >= 0) {
            lk = t_hugetlb_lock();
            size = beyond_2m_pool();
            if (size <= EMPTY_POOL_MAX) {
                fall_back_twice(size);
                one_2m_line(warnings, "warning");
            }
            t_hugetlb_unlock(lk);
            t_hugetlb_restore();
        }
    }
    ss_log_set_sink(NULL, NULL);
    ss__log_set_level(SS_LOG_ERROR);
}

/* An explicit 2M policy with no pages fails cleanly (no SIGBUS, no leaked
 * fd), through the hint and through the mapping attempt alike. Any size
 * works here: the mmap reservation fails before anything is allocated. */
static void t_explicit_no_pages(void **state)
{
    int fds0 = t_count_fds();
    int lk = t_hugetlb_lock();
    uint64_t size = beyond_2m_pool();
    ss__seg seg;

    (void)state;
    for (int hint = 1; hint >= 0; hint--) {
        ss__backing_set_hint(hint);
        t_assert_err(create(&seg, size, SS_HP_2M, SS_SEG_OBJECT), -SS_E_NOBACKING);
        t_assert_err(create(&seg, size, SS_HP_2M, SS_SEG_SMALL), -SS_E_NOBACKING);
        ss__backing_set_hint(true);
    }
    t_hugetlb_unlock(lk);
    if (t_hugetlb_free(HUGE_1G) <= 0) {
        for (int hint = 1; hint >= 0; hint--) {
            ss__backing_set_hint(hint);
            t_assert_err(create(&seg, SS_GiB, SS_HP_1G, SS_SEG_OBJECT), -SS_E_NOBACKING);
            ss__backing_set_hint(true);
        }
    }
    assert_int_equal(t_count_fds(), fds0);
}

/* With 2 MiB pages free, a 64 MiB object under auto is 2M-backed and a
 * reader's mapping really uses 2 MiB pages; the pool pays for it and the
 * 2M stats follow. A small segment under explicit 2M is mapped with them. */
static void t_auto_2m(void **state)
{
    int64_t b0 = cur(&ss__g_stats.seg_bytes_2m);
    uint64_t fb0 = counter(&ss__g_stats.backing_fallbacks);
    ss__seg seg, small;
    void *r;
    int rfd;

    (void)state;
    need_2m(PAGES_64M + 2 + 1);
    t_assert_ok(create(&seg, OBJ_64M, SS_HP_AUTO, SS_SEG_OBJECT));
    assert_int_equal(seg.backing, SS_BACKING_2M);
    assert_int_equal(seg.page_size, HUGE_2M);
    assert_int_equal(seg.size, OBJ_64M);
    assert_int_equal(counter(&ss__g_stats.backing_fallbacks), fb0);
    assert_int_equal(cur(&ss__g_stats.seg_bytes_2m) - b0, (int64_t)OBJ_64M);
    t_assert_ok(ss__seg_fix_size(&seg, OBJ_64M - 3 * HUGE_2M + 5)); /* trims 2 pages */
    assert_int_equal(seg.size, OBJ_64M - 2 * HUGE_2M);
    assert_int_equal(cur(&ss__g_stats.seg_bytes_2m) - b0, (int64_t)(OBJ_64M - 2 * HUGE_2M));
    t_assert_ok(ss__seg_seal_write(seg.fd, seg.size));
    r = reader_map(&seg, &rfd);
    assert_int_equal(t_kernel_page_size(r), HUGE_2M);
    munmap(r, seg.size);
    close(rfd);
    ss__seg_destroy(&seg);
    assert_int_equal(cur(&ss__g_stats.seg_bytes_2m), b0);

    t_assert_ok(create(&small, 2 * HUGE_2M, SS_HP_2M, SS_SEG_SMALL));
    assert_int_equal(small.backing, SS_BACKING_2M);
    assert_int_equal(t_kernel_page_size(small.map), HUGE_2M);
    ss__seg_destroy(&small);
}

/* The waste rule in practice: 100 KiB is 4K-backed with 2 MiB pages free. */
static void t_waste_small_object(void **state)
{
    ss__seg seg;

    (void)state;
    need_2m(2);
    t_assert_ok(create(&seg, 100 * SS_KiB, SS_HP_AUTO, SS_SEG_OBJECT));
    assert_int_equal(seg.backing, SS_BACKING_4K);
    assert_int_equal(seg.size, 100 * SS_KiB);
    ss__seg_destroy(&seg);
}

/* 1 GiB pages: only where the machine can reserve one; released after. */
static void t_1g(void **state)
{
    long fr = t_hugetlb_free(HUGE_1G);
    ss__seg seg;
    void *r;
    int rfd;

    (void)state;
    /* its own feature name: a 1 GiB page needs 1 GiB of contiguous memory,
     * which a long-running machine may not have even with gigabytes free
     * (CI requires "hugepages", the 2 MiB pool, which it can always fill) */
    T_SKIP_IF(fr == -ENOENT, "hugepages-1g", "no 1 GiB hugepage support (no hstate)");
    if (fr < 1)
        fr = t_hugetlb_reserve(HUGE_1G, 1);
    T_SKIP_IF(fr < 1, "hugepages-1g",
              "could not reserve a 1 GiB page (no contiguous GiB free): raise "
              "/sys/kernel/mm/hugepages/hugepages-1048576kB/nr_hugepages");
    t_assert_ok(create(&seg, SS_GiB, SS_HP_AUTO, SS_SEG_OBJECT));
    assert_int_equal(seg.backing, SS_BACKING_1G);
    assert_int_equal(seg.size, SS_GiB);
    assert_int_equal(seg.page_size, SS_GiB);
    t_assert_ok(ss__seg_fix_size(&seg, SS_GiB));
    t_assert_ok(ss__seg_seal_write(seg.fd, seg.size));
    r = reader_map(&seg, &rfd);
    assert_int_equal(t_kernel_page_size(r), (long)SS_GiB);
    munmap(r, seg.size);
    close(rfd);
    ss__seg_destroy(&seg);
    t_hugetlb_restore(); /* give the GiB back now (and the 2M pool: later
                          * cases reserve again) */
}

/* shmem THP: explicit thp is refused while shmem_enabled forbids it; with
 * advise (set here as root) the segment is THP and a reader's mapping of it
 * is PMD-mapped. */
static void t_thp(void **state)
{
    const char *mode = t_thp_shmem_mode();
    bool usable;
    ss__seg seg;
    void *r;
    int rfd;

    (void)state;
    ss__backing_forget();
    usable = ss__backing_available(SS_BACKING_THP, 1);
    if (!usable)
        t_assert_err(create(&seg, 8 * SS_MiB, SS_HP_THP, SS_SEG_OBJECT), -SS_E_NOBACKING);
    if (!usable) {
        T_SKIP_IF(geteuid() != 0, NULL, "shmem THP disabled and not root to enable it");
        T_SKIP_IF(access("/sys/kernel/mm/transparent_hugepage/shmem_enabled", W_OK) != 0,
                  NULL, "no shmem_enabled to switch");
        snprintf(thp_saved, sizeof(thp_saved), "%s", mode);
        t_assert_ok(thp_write("advise"));
        usable = ss__backing_available(SS_BACKING_THP, 1);
        if (!usable)
            thp_restore();
        T_SKIP_IF(!usable, NULL, "shmem THP stays disabled (per-size shmem_enabled is never)");
    }
    t_assert_ok(create(&seg, 8 * SS_MiB, SS_HP_THP, SS_SEG_OBJECT));
    assert_int_equal(seg.backing, SS_BACKING_THP);
    assert_int_equal(seg.size, 8 * SS_MiB);
    assert_int_equal(seg.page_size, HUGE_2M);
    t_assert_ok(ss__seg_fix_size(&seg, 8 * SS_MiB));
    t_assert_ok(ss__seg_seal_write(seg.fd, seg.size));
    r = reader_map(&seg, &rfd);
    /* huge folios are best effort (fragmentation), but this machine gets
     * them when fresh: at least one PMD mapping must show */
    assert_true(t_smaps_field(r, "ShmemPmdMapped") > 0);
    munmap(r, seg.size);
    close(rfd);
    ss__seg_destroy(&seg);

    /* auto with the 2 MiB pool short falls back to THP now, counted */
    {
        int lk = t_hugetlb_lock();
        uint64_t size = beyond_2m_pool();
        uint64_t fb0 = counter(&ss__g_stats.backing_fallbacks);
        int64_t thp0 = cur(&ss__g_stats.seg_bytes_thp);
        int rc = 0;

        if (size <= EMPTY_POOL_MAX) {
            rc = create(&seg, size, SS_HP_AUTO, SS_SEG_OBJECT);
            t_hugetlb_unlock(lk);
            t_assert_ok(rc);
            assert_int_equal(seg.backing, SS_BACKING_THP);
            assert_int_equal(counter(&ss__g_stats.backing_fallbacks) - fb0, 1);
            assert_int_equal(cur(&ss__g_stats.seg_bytes_thp) - thp0, (int64_t)size);
            ss__seg_destroy(&seg);
            assert_int_equal(cur(&ss__g_stats.seg_bytes_thp), thp0);
        } else {
            t_hugetlb_unlock(lk);
        }
    }

    /* THP is explicitly requested for a small size: rounded to one page */
    t_assert_ok(create(&seg, 100 * SS_KiB, SS_HP_THP, SS_SEG_OBJECT));
    assert_int_equal(seg.size, HUGE_2M);
    ss__seg_destroy(&seg);
    thp_restore();
}

/* ---------------------------------------------------------------- main */

static void probe_hugetlb(void)
{
    if (!t_hugetlb_kernel(no_hugetlb_why, sizeof(no_hugetlb_why))) {
        no_hugetlb = true;
        return;
    }
    /* reserving is left to the cases (after the empty-pool ones); here
     * only: could we, if needed? */
    if (geteuid() != 0 && t_hugetlb_free(HUGE_2M) < (long)PAGES_64M + 3) {
        no_hugetlb = true;
        snprintf(no_hugetlb_why, sizeof(no_hugetlb_why),
                 "fewer than %d free 2 MiB pages and not root: raise vm.nr_hugepages",
                 (int)PAGES_64M + 3);
    }
}

int main(void)
{
    /* order matters: the empty-pool cases run before any reservation */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(t_names),
        cmocka_unit_test(t_plan),
        cmocka_unit_test(t_stats),
        cmocka_unit_test(t_auto_fallback),
        cmocka_unit_test(t_explicit_no_pages),
        cmocka_unit_test(t_auto_2m),
        cmocka_unit_test(t_waste_small_object),
        cmocka_unit_test(t_thp),
        cmocka_unit_test(t_1g),
    };

    atexit(thp_restore);
    ss__log_set_level(SS_LOG_ERROR);
    probe_hugetlb();
    return t_run(tests, NULL, NULL);
}
