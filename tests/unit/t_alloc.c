/* SPDX-License-Identifier: MIT */
/*
 * The small allocator (src/lib/alloc.h). White-box: every mutation is
 * followed by ss__salloc_validate(), which walks all invariants.
 *
 * Runs on 4K shmem only (SS_HP_OFF): no hugepages needed, and memory stays
 * at a few 4 MiB segments. Random sequences use a fixed seed, printed;
 * SS_TEST_SEED=<n> replays another one.
 */
#include "../t_helpers.h"

#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <fcntl.h>
#include <unistd.h>

#include "alloc.h"
#include "numa.h"
#include "options.h"
#include "segment.h"

#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#define T_ASAN 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__) && !defined(T_ASAN)
#define T_ASAN 1
#endif
#ifdef T_ASAN
#include <sanitizer/asan_interface.h>
#endif

#define SEG (4 * SS_MiB)
#define MAXSZ (64 * SS_KiB)

static uint64_t seed = 0x5ea157043ull;

/* ---------------------------------------------------------------- utils */

/* Half log-uniform on [1, 64 KiB], half uniform on [64 B, 64 KiB]; a few
 * zero-size objects too. */
static uint64_t rnd_size(void)
{
    uint64_t r = t_rnd() % 64;
    if (r == 0)
        return 0;
    if (r < 32)
        return (uint64_t)floor(exp(t_rnd01() * log((double)MAXSZ))); /* 1..64K */
    return 64 + t_rnd() % (MAXSZ - 64 + 1);
}

static ss__salloc *mk(t_budget *b, int64_t limit)
{
    ss__salloc *a = NULL;
    ss__salloc_params p = {
        .segment_size = SEG,
        .max_size = MAXSZ,
        .hugepages = SS_HP_OFF,
        .charge = t_budget_charge,
        .charge_arg = b,
    };
    memset(b, 0, sizeof(*b));
    b->limit = limit;
    t_assert_ok(ss__salloc_create(&a, &p));
    t_assert_ok(ss__salloc_validate(a));
    return a;
}

static ss__salloc_stats stats(const ss__salloc *a)
{
    ss__salloc_stats st;
    ss__salloc_stats_get(a, &st);
    return st;
}


/* A live object as the tests track it. */
typedef struct obj {
    ss__sloc loc;
    uint64_t size;
    uint64_t tag;
} obj;

static uint8_t pat(uint64_t tag, uint64_t i) { return (uint8_t)((tag * 131 + i * 7) ^ (i >> 8)); }

/* The store's mapping is read-only outside write windows: open one first. */
static void fill(ss__salloc *a, const obj *o)
{
    uint8_t *p = o->loc.ptr;

    t_assert_ok(ss__salloc_write_open(a, &o->loc, o->size, false));
    for (uint64_t i = 0; i < o->size; i++)
        p[i] = pat(o->tag, i);
}

static void check_intact(const obj *o)
{
    const uint8_t *p = o->loc.ptr;
    for (uint64_t i = 0; i < o->size; i++)
        if (p[i] != pat(o->tag, i))
            fail_msg("object seg %u off %" PRIu64 " size %" PRIu64 ": byte %" PRIu64
                     " changed", o->loc.seg, o->loc.off, o->size, i);
}

/* Checks every fresh location must pass, including against all live ones. */
static void check_new(const ss__salloc *a, const ss__sloc *l, uint64_t size,
                      const obj *live, size_t nlive)
{
    const ss__seg *s = ss__salloc_segment(a, l->seg);
    assert_non_null(s);
    assert_int_equal(l->cls, ss__salloc_class_of(size));
    assert_int_equal(l->off % 64, 0);
    assert_ptr_equal(l->ptr, (char *)s->map + l->off);
    uint64_t cs = ss__salloc_class_size((int)l->cls);
    assert_true(l->off + cs <= s->size);
    for (size_t i = 0; i < nlive; i++) {
        const ss__sloc *m = &live[i].loc;
        if (m->seg != l->seg)
            continue;
        uint64_t ms = ss__salloc_class_size((int)m->cls);
        if (l->off < m->off + ms && m->off < l->off + cs)
            fail_msg("block seg %u off %" PRIu64 "+%" PRIu64 " overlaps off %" PRIu64
                     "+%" PRIu64, l->seg, l->off, cs, m->off, ms);
    }
}

static int do_alloc(ss__salloc *a, uint64_t size, int node, obj *live, size_t *nlive)
{
    obj o = { .size = size, .tag = t_rnd() };
    int rc = ss__salloc_alloc(a, size, node, &o.loc);
    t_assert_ok(ss__salloc_validate(a));
    if (rc < 0)
        return rc;
    check_new(a, &o.loc, size, live, *nlive);
    fill(a, &o);
    live[(*nlive)++] = o;
    return 0;
}

static void do_free(ss__salloc *a, obj *live, size_t *nlive, size_t i)
{
    check_intact(&live[i]);
    t_assert_ok(ss__salloc_free(a, &live[i].loc));
    t_assert_ok(ss__salloc_validate(a));
#ifdef T_ASAN
    /* Freed blocks are poisoned, unless their segment went away (its
     * shadow is cleared before the unmap). */
    if (ss__salloc_segment(a, live[i].loc.seg))
        assert_true(__asan_address_is_poisoned(live[i].loc.ptr));
#endif
    live[i] = live[--*nlive];
}

static void free_all(ss__salloc *a, obj *live, size_t *nlive)
{
    while (*nlive)
        do_free(a, live, nlive, t_rnd() % *nlive);
}

/* ---------------------------------------------------------- class table */
static void test_class_table(void **state)
{
    (void)state;
    int last = ss__salloc_class_of(MAXSZ);
    assert_true(last > 0);
    assert_int_equal(ss__salloc_class_size(last), MAXSZ);
    assert_int_equal(ss__salloc_class_of(0), 0);
    assert_int_equal(ss__salloc_class_size(0), 64);

    /* Monotonic, 64-aligned, and class_of() inverts class_size(). Go well
     * past 64 KiB: max_size can be up to segment_size / 8. */
    int top = ss__salloc_class_of(64 * SS_MiB);
    for (int c = 0; c <= top; c++) {
        uint64_t cs = ss__salloc_class_size(c);
        assert_true(cs > 0 && cs % 64 == 0);
        if (c > 0)
            assert_true(cs > ss__salloc_class_size(c - 1));
        assert_int_equal(ss__salloc_class_of(cs), c);
        assert_int_equal(ss__salloc_class_of(cs + 1), c + 1);
        /* worst-case rounding of one object: 12.5% above 1 KiB */
        if (c > 0 && cs > 1024)
            assert_true((cs - ss__salloc_class_size(c - 1) - 1) * 8 <=
                        ss__salloc_class_size(c - 1) + 1);
    }
    /* class_of(size) is the smallest class that fits, for every size up to
     * 1 MiB. */
    for (uint64_t s = 0; s <= SS_MiB; s++) {
        int c = ss__salloc_class_of(s);
        assert_true(c >= 0);
        assert_true(ss__salloc_class_size(c) >= s);
        if (c > 0 && ss__salloc_class_size(c - 1) >= s)
            fail_msg("size %" PRIu64 ": class %d but %d fits", s, c, c - 1);
    }
    assert_int_equal(ss__salloc_class_of(UINT32_MAX + 1ull), -EINVAL);
    assert_true(ss__salloc_class_of(UINT32_MAX) > 0);
    assert_int_equal(ss__salloc_class_size(-1), 0);

    /* Internal waste over the two workloads, exactly: log-uniform sizes on
     * [1, 64 KiB] (weight of integer s: ln((s+1)/s)) and uniform sizes on
     * [64 B, 64 KiB]. Ratio = sum(waste) / sum(live bytes). */
    double lw = 0, ll = 0, uw = 0, ul = 0;
    for (uint64_t s = 1; s <= MAXSZ; s++) {
        double w = log((double)(s + 1) / (double)s);
        double waste = (double)(ss__salloc_class_size(ss__salloc_class_of(s)) - s);
        lw += w * waste;
        ll += w * (double)s;
        if (s >= 64) {
            uw += waste;
            ul += (double)s;
        }
    }
    print_message("internal waste: log-uniform 1B..64K %.2f%%, uniform 64B..64K %.2f%%, "
                  "mixed %.2f%%\n", 100 * lw / ll, 100 * uw / ul,
                  100 * (lw / ll + uw / ul) / 2);
    assert_true(lw / ll <= 0.125);
    assert_true(uw / ul <= 0.125);
}

/* ----------------------------------------------------------- parameters */
static void test_params(void **state)
{
    (void)state;
    ss__salloc *a = (ss__salloc *)0x1;
    ss__salloc_params p = { .segment_size = SEG, .max_size = MAXSZ, .hugepages = SS_HP_OFF };

    p.segment_size = SEG + 4096;
    t_assert_err(ss__salloc_create(&a, &p), -EINVAL);
    p.segment_size = SEG;
    p.max_size = SEG / 8 + 64;
    t_assert_err(ss__salloc_create(&a, &p), -EINVAL);
    p.max_size = MAXSZ;
    p.hugepages = 99;
    t_assert_err(ss__salloc_create(&a, &p), -EINVAL);
    p.hugepages = SS_HP_2M;
    p.segment_size = 3 * SS_MiB; /* a 64 KiB multiple but not a 2 MiB one */
    t_assert_err(ss__salloc_create(&a, &p), -EINVAL);
    assert_non_null(strstr(ss__salloc_params_why(&p), "2 MiB hugepage"));
    /* the default 4 MiB segment under an explicit 1G policy: the reason
     * names the page size, so the store can say which options clash */
    p.hugepages = SS_HP_1G;
    p.segment_size = 0;
    t_assert_err(ss__salloc_create(&a, &p), -EINVAL);
    assert_non_null(strstr(ss__salloc_params_why(&p), "1 GiB hugepage"));
    p.segment_size = SEG;
    p.max_size = SEG / 8 + 64;
    p.hugepages = SS_HP_OFF;
    assert_non_null(strstr(ss__salloc_params_why(&p), "1/8 of the segment"));
    p.max_size = MAXSZ;
    assert_null(ss__salloc_params_why(&p));
    t_assert_err(ss__salloc_create(&a, NULL), -EINVAL);
    assert_ptr_equal(a, (ss__salloc *)0x1); /* untouched on failure */

    /* Defaults: 4 MiB segments, 64 KiB objects. */
    ss__salloc_params d = { .hugepages = SS_HP_OFF };
    t_assert_ok(ss__salloc_create(&a, &d));
    ss__sloc l;
    t_assert_err(ss__salloc_alloc(a, MAXSZ + 1, SS_NODE_ANY, &l), -EINVAL);
    t_assert_err(ss__salloc_alloc(a, 64, SS_MAX_NODES, &l), -EINVAL);
    t_assert_err(ss__salloc_alloc(a, 64, -3, &l), -EINVAL);
    assert_int_equal(stats(a).segments, 0); /* nothing created yet */
    t_assert_ok(ss__salloc_validate(a));
    ss__salloc_destroy(a);
    ss__salloc_destroy(NULL);
}

/* Size 0, max size, every node value the placement can return. */
static void test_edges(void **state)
{
    (void)state;
    t_budget b;
    ss__salloc *a = mk(&b, 64 * SS_MiB);
    obj live[16];
    size_t n = 0;

    t_assert_ok(do_alloc(a, 0, SS_NODE_ANY, live, &n));
    assert_int_equal(live[0].loc.cls, 0);
    t_assert_ok(do_alloc(a, MAXSZ, SS_NODE_INTERLEAVE, live, &n));
    t_assert_ok(do_alloc(a, 1, 0, live, &n));
    t_assert_ok(do_alloc(a, 64, 5, live, &n)); /* no numa: same heap */
    t_assert_ok(do_alloc(a, 65, SS_MAX_NODES - 1, live, &n));
    assert_int_equal(stats(a).segments, 1);
    assert_int_equal(b.used, SEG);
    ss__salloc_stats st = stats(a);
    assert_int_equal(st.live_objects, 5);
    assert_int_equal(st.live_bytes, 0 + MAXSZ + 1 + 64 + 65);
    assert_int_equal(st.used_bytes, 64 + MAXSZ + 64 + 64 + 128);
#ifdef T_ASAN
    /* exactly the requested bytes are addressable */
    assert_true(__asan_address_is_poisoned((char *)live[4].loc.ptr + 65));
    assert_false(__asan_address_is_poisoned((char *)live[4].loc.ptr + 64));
#endif
    free_all(a, live, &n);
    assert_int_equal(stats(a).live_bytes, 0);
    assert_int_equal(stats(a).segments, 1); /* the spare */
    ss__salloc_destroy(a);
    assert_int_equal(b.used, 0);
}

/* --------------------------------------------------- random sequences */
#define RAND_MAXLIVE 320

static void test_random(void **state)
{
    (void)state;
    t_budget b;
    ss__salloc *a = mk(&b, 256 * SS_MiB);
    static obj live[RAND_MAXLIVE];
    size_t n = 0;
    uint64_t peak_segs = 0;

    t_rnd_seed(seed);
    /* Waves: fill towards a target, then drain towards a lower one, so
     * slabs and segments are created, emptied, cached and destroyed. */
    int steps = 0;
    for (int wave = 0; wave < 12; wave++) {
        size_t hi = 40 + t_rnd() % (RAND_MAXLIVE - 40);
        size_t lo = wave == 11 ? 0 : t_rnd() % 30;
        while (n < hi) {
            if (n && t_rnd() % 4 == 0)
                do_free(a, live, &n, t_rnd() % n);
            else
                t_assert_ok(do_alloc(a, rnd_size(), (int)(t_rnd() % 3) - 2, live, &n));
            steps++;
        }
        ss__salloc_stats st = stats(a);
        if (st.segments > peak_segs)
            peak_segs = st.segments;
        while (n > lo) {
            if (t_rnd() % 4 == 0)
                t_assert_ok(do_alloc(a, rnd_size(), 0, live, &n));
            else
                do_free(a, live, &n, t_rnd() % n);
            steps++;
        }
    }
    ss__salloc_stats st = stats(a);
    print_message("random: %d steps, peak %" PRIu64 " segments, %" PRIu64 " allocs\n",
                  steps, peak_segs, st.allocs);
    assert_int_equal(n, 0);
    assert_int_equal(st.live_objects, 0);
    assert_int_equal(st.used_bytes, 0);
    assert_int_equal(st.allocs, st.frees);
    assert_int_equal(st.segments, 1); /* only the spare is kept */
    assert_int_equal(st.spare_segments, 1);
    assert_int_equal(b.used, (int64_t)st.segment_bytes);
    ss__salloc_destroy(a);
    assert_int_equal(b.used, 0);
}

/* ------------------------------------------------------ per-node heaps */
/* On a synthetic topology binding does nothing, but the heaps are real:
 * each node the placement names gets its own segments and its own spare. */
static void test_nodes(void **state)
{
    (void)state;
    ss__numa *numa = NULL;
    int rc = ss__numa_open_synthetic(&numa, "pack:2 [numa] core:2 pu:1");
    if (rc < 0)
        fail_msg("ss__numa_open_synthetic = %d (%s)", rc, t_strerror(rc));
    assert_int_equal(ss__numa_nodes(numa), 2);
    int n0 = ss__numa_node_id(numa, 0), n1 = ss__numa_node_id(numa, 1);

    t_budget b = { .limit = 64 * SS_MiB };
    ss__salloc *a = NULL;
    ss__salloc_params p = { .segment_size = SEG, .max_size = MAXSZ, .hugepages = SS_HP_OFF,
                            .numa = numa, .charge = t_budget_charge, .charge_arg = &b };
    t_assert_ok(ss__salloc_create(&a, &p));
    obj live[64];
    size_t n = 0;

    t_rnd_seed(seed ^ 7);
    const int nodes[3] = { n0, n1, SS_NODE_INTERLEAVE };
    int seg_node[64];
    for (int i = 0; i < 64; i++)
        seg_node[i] = INT32_MIN;
    for (int i = 0; i < 30; i++) {
        int node = nodes[i % 3];
        t_assert_ok(do_alloc(a, rnd_size() % 8192, node, live, &n));
        /* Each segment serves one node, and was created for it. */
        uint32_t id = live[n - 1].loc.seg;
        assert_true(id < 64);
        if (seg_node[id] == INT32_MIN)
            seg_node[id] = node;
        assert_int_equal(seg_node[id], node);
        assert_int_equal(ss__salloc_segment(a, id)->node, node);
    }
    assert_int_equal(stats(a).segments, 3);
    /* A node the topology does not have is refused before any charge. */
    int64_t used = b.used;
    t_assert_err(ss__salloc_alloc(a, 64, 7, &(ss__sloc){0}), -EINVAL);
    assert_int_equal(b.used, used);
    t_assert_ok(ss__salloc_validate(a));

    free_all(a, live, &n);
    ss__salloc_stats st = stats(a);
    assert_int_equal(st.segments, 3); /* one spare per node */
    assert_int_equal(st.spare_segments, 3);
    ss__salloc_destroy(a);
    assert_int_equal(b.used, 0);
    ss__numa_close(numa);
}

/* ----------------------------------------------------------- exhaustion */
static void test_exhaustion(void **state)
{
    (void)state;
    t_budget b;
    ss__salloc *a = mk(&b, 2 * SEG); /* two segments */
    static obj live[512];
    size_t n = 0;
    int rc;

    t_rnd_seed(seed ^ 1);
    while ((rc = do_alloc(a, MAXSZ, SS_NODE_ANY, live, &n)) == 0)
        assert_true(n < 512);
    t_assert_err(rc, -ENOSPC);
    ss__salloc_stats st = stats(a);
    print_message("exhaustion: %zu x 64 KiB objects in %" PRIu64 " segments\n", n, st.segments);
    assert_int_equal(st.segments, 2);
    assert_int_equal(b.used, 2 * SEG);
    /* At least 7/8 of the memory holds objects (slabs of 8 blocks). */
    assert_true(n * MAXSZ * 8 >= 7 * 2 * SEG);

    /* A refused growth leaks nothing: no fd, no charge, no stats change. */
    int fds = t_count_fds();
    unsigned refused = b.refused;
    t_assert_err(ss__salloc_alloc(a, 64, SS_NODE_ANY, &(ss__sloc){0}), -ENOSPC);
    assert_int_equal(b.refused, refused + 1);
    assert_int_equal(t_count_fds(), fds);
    assert_int_equal(b.used, 2 * SEG);
    assert_int_equal(stats(a).live_objects, n);
    t_assert_ok(ss__salloc_validate(a));

    /* Free one: that block is reusable without growing. */
    uint64_t off = live[3].loc.off;
    uint32_t sid = live[3].loc.seg;
    do_free(a, live, &n, 3);
    t_assert_ok(do_alloc(a, MAXSZ, SS_NODE_ANY, live, &n));
    assert_int_equal(live[n - 1].loc.seg, sid);
    assert_int_equal(live[n - 1].loc.off, off);
    t_assert_err(ss__salloc_alloc(a, MAXSZ, SS_NODE_ANY, &(ss__sloc){0}), -ENOSPC);

    /* Empty a whole slab of the 64 KiB class (it is cached, empty): a small
     * class then needs pages, which drops the cached slab instead of
     * growing. */
    uint64_t slab_base = live[0].loc.off / (8 * MAXSZ) * (8 * MAXSZ);
    sid = live[0].loc.seg;
    for (size_t i = 0; i < n;) {
        if (live[i].loc.seg == sid && live[i].loc.off / (8 * MAXSZ) * (8 * MAXSZ) == slab_base)
            do_free(a, live, &n, i);
        else
            i++;
    }
    assert_int_equal(stats(a).empty_slabs, 1);
    t_assert_ok(do_alloc(a, 100, SS_NODE_ANY, live, &n));
    assert_int_equal(stats(a).empty_slabs, 0);
    assert_int_equal(stats(a).segments, 2);
    assert_int_equal(b.used, 2 * SEG);

    free_all(a, live, &n);
    assert_int_equal(stats(a).segments, 1);
    assert_int_equal(b.used, SEG);
    /* and recover fully after the pressure is gone */
    for (int i = 0; i < 100; i++) /* small sizes: they fit in one segment */
        t_assert_ok(do_alloc(a, rnd_size() % 2048, SS_NODE_ANY, live, &n));
    free_all(a, live, &n);
    ss__salloc_destroy(a);
    assert_int_equal(b.used, 0);
}

/* ------------------------------------------------------------ bad frees */
static void test_bad_free(void **state)
{
    (void)state;
    t_budget b;
    ss__salloc *a = mk(&b, 64 * SS_MiB);
    obj live[64];
    size_t n = 0;

    t_rnd_seed(seed ^ 2);
    static const uint64_t sizes[] = { 0, 1, 64, 100, 192, 1000, 1500, 5000, 40000, MAXSZ };
    for (size_t i = 0; i < SS_ARRAY_SIZE(sizes); i++) {
        t_assert_ok(do_alloc(a, sizes[i], SS_NODE_ANY, live, &n));
        t_assert_ok(do_alloc(a, sizes[i], SS_NODE_ANY, live, &n));
    }
    /* Double free. */
    ss__sloc gone = live[5].loc;
    do_free(a, live, &n, 5);
    ss__salloc_stats before = stats(a);
    t_assert_err(ss__salloc_free(a, &gone), -EINVAL);

    size_t k100 = 0;
    while (live[k100].size != 100)
        k100++;
    const ss__sloc l = live[k100].loc; /* a 100-byte object, class 128 */
    assert_int_equal(ss__salloc_class_size((int)l.cls), 128);
    ss__sloc x;
    x = l; x.seg = 999;                 t_assert_err(ss__salloc_free(a, &x), -EINVAL);
    x = l; x.seg = l.seg + 1;           t_assert_err(ss__salloc_free(a, &x), -EINVAL);
    x = l; x.off += 64; x.ptr = NULL;   t_assert_err(ss__salloc_free(a, &x), -EINVAL);
    x = l; x.off += 1; x.ptr = NULL;    t_assert_err(ss__salloc_free(a, &x), -EINVAL);
    x = l; x.cls += 1;                  t_assert_err(ss__salloc_free(a, &x), -EINVAL);
    x = l; x.cls = 100000;              t_assert_err(ss__salloc_free(a, &x), -EINVAL);
    x = l; x.off = SEG;   x.ptr = NULL; t_assert_err(ss__salloc_free(a, &x), -EINVAL);
    x = l; x.off = UINT64_MAX - 63; x.ptr = NULL; t_assert_err(ss__salloc_free(a, &x), -EINVAL);
    x = l; x.ptr = (char *)l.ptr + 64;  t_assert_err(ss__salloc_free(a, &x), -EINVAL);
    t_assert_err(ss__salloc_free(a, NULL), -EINVAL);
    t_assert_ok(ss__salloc_validate(a));
    ss__salloc_stats mid = stats(a);
    assert_memory_equal(&before, &mid, sizeof(before));

    /* Exhaustively: every (offset, class) that is not a live block start is
     * refused and changes nothing. */
    for (uint32_t seg = 0; seg < 2; seg++) {
        for (uint64_t off = 0; off < SEG; off += 64) {
            for (uint32_t cls = 0; cls < 4; cls++) {
                bool is_live = false;
                for (size_t i = 0; i < n; i++)
                    is_live |= live[i].loc.seg == seg && live[i].loc.off == off &&
                               live[i].loc.cls == cls;
                if (is_live)
                    continue;
                x = (ss__sloc){ .seg = seg, .cls = cls, .off = off };
                if (ss__salloc_free(a, &x) != -EINVAL)
                    fail_msg("free of seg %u cls %u off %" PRIu64 " accepted", seg, cls, off);
            }
        }
    }
    ss__salloc_stats after = stats(a);
    assert_memory_equal(&before, &after, sizeof(before));
    t_assert_ok(ss__salloc_validate(a));

    /* A store that keeps only (seg, cls, off) may free with ptr NULL. */
    x = live[0].loc;
    x.ptr = NULL;
    check_intact(&live[0]);
    t_assert_ok(ss__salloc_free(a, &x));
    live[0] = live[--n];
    t_assert_ok(ss__salloc_validate(a));

    free_all(a, live, &n);
    ss__salloc_destroy(a);
}

/* ------------------------------------------------------ segment return */
static void test_segments_returned(void **state)
{
    (void)state;
    t_budget b;
    ss__salloc *a = mk(&b, 64 * SS_MiB);
    static obj live[600];
    size_t n = 0;

    t_rnd_seed(seed ^ 3);
    /* 64 KiB objects: 64 per segment; make 4 segments. */
    for (int i = 0; i < 4 * 64; i++)
        t_assert_ok(do_alloc(a, MAXSZ, SS_NODE_ANY, live, &n));
    assert_int_equal(stats(a).segments, 4);
    assert_int_equal(b.used, 4 * SEG);
    for (uint32_t id = 0; id < 4; id++)
        assert_non_null(ss__salloc_segment(a, id));
    assert_null(ss__salloc_segment(a, 4));

    /* Free all of segment 1: it is idle and becomes the spare. */
    for (size_t i = 0; i < n;) {
        if (live[i].loc.seg == 1)
            do_free(a, live, &n, i);
        else
            i++;
    }
    assert_int_equal(stats(a).segments, 4);
    assert_int_equal(stats(a).spare_segments, 1);
    /* Free all of segment 2: a spare exists, so segment 2 goes back. */
    for (size_t i = 0; i < n;) {
        if (live[i].loc.seg == 2)
            do_free(a, live, &n, i);
        else
            i++;
    }
    assert_int_equal(stats(a).segments, 3);
    assert_int_equal(b.used, 3 * SEG);
    assert_null(ss__salloc_segment(a, 2));

    /* Growth reuses the spare first, then the freed id 2. */
    for (int i = 0; i < 64; i++)
        t_assert_ok(do_alloc(a, MAXSZ, SS_NODE_ANY, live, &n));
    assert_int_equal(stats(a).segments, 3);
    assert_int_equal(stats(a).spare_segments, 0);
    t_assert_ok(do_alloc(a, 64, SS_NODE_ANY, live, &n));
    assert_int_equal(stats(a).segments, 4);
    assert_int_equal(live[n - 1].loc.seg, 2);

    /* Everything freed in random order: one spare segment is left. */
    free_all(a, live, &n);
    ss__salloc_stats st = stats(a);
    assert_int_equal(st.segments, 1);
    assert_int_equal(st.spare_segments, 1);
    assert_int_equal(b.used, SEG);
    /* The spare serves the next allocation without a new charge. */
    t_assert_ok(do_alloc(a, 7, SS_NODE_ANY, live, &n));
    assert_int_equal(b.used, SEG);
    free_all(a, live, &n);
    ss__salloc_destroy(a);
    assert_int_equal(b.used, 0);
}

/* -------------------------------------------------------- write windows */

/* Permissions ("r--s", "rw-s") of this process's mapping containing addr. */
static void perms_of(const void *addr, char out[5])
{
    FILE *f = fopen("/proc/self/maps", "r");
    char line[512];

    assert_non_null(f);
    strcpy(out, "?");
    while (fgets(line, sizeof(line), f)) {
        unsigned long lo, hi;
        char p[5];
        if (sscanf(line, "%lx-%lx %4s", &lo, &hi, p) == 3 && (uintptr_t)addr >= lo &&
            (uintptr_t)addr < hi) {
            memcpy(out, p, 5);
            break;
        }
    }
    fclose(f);
}

/* Write through /proc/self/mem, the way root writes another process's
 * memory: the kernel forces no write into a read-only shared mapping. */
static ssize_t poke(void *addr, uint8_t v)
{
    int fd = open("/proc/self/mem", O_RDWR | O_CLOEXEC);
    assert_true(fd >= 0);
    ssize_t n = pwrite(fd, &v, 1, (off_t)(uintptr_t)addr);
    close(fd);
    return n;
}

/* Small-segment memory is read-only at rest; a window makes only its unit
 * writable, closes after SS_SALLOC_WINDOW_NS (or when released, if held),
 * and outside windows neither the store nor /proc/PID/mem can write. */
static void test_windows(void **state)
{
    (void)state;
    t_budget b;
    ss__salloc *a = mk(&b, 64 * SS_MiB);
    obj live[4];
    size_t n = 0;
    char p[5];

    uint64_t t0 = ss__now_ns(); /* the window opens after this */
    t_assert_ok(do_alloc(a, 1000, SS_NODE_ANY, live, &n)); /* fill opened a window */
    uint8_t *x = live[0].loc.ptr;
    assert_int_equal(ss__salloc_windows(a), 1);
    perms_of(x, p);
    assert_string_equal(p, "rw-s");
    /* a pass at t0 finds it not yet due, and says when it is; a pass after
     * that closes it and says nothing more is due (no clock in the test) */
    uint64_t due = ss__salloc_write_close(a, t0, false);
    assert_true(due >= t0 + SS_SALLOC_WINDOW_NS && due != UINT64_MAX);
    assert_int_equal(ss__salloc_windows(a), 1);
    assert_int_equal(ss__salloc_write_close(a, due, false), UINT64_MAX);
    assert_int_equal(ss__salloc_windows(a), 0);
    perms_of(x, p);
    assert_string_equal(p, "r--s");
    /* the rest of the segment too: only window units were ever writable */
    perms_of((char *)ss__salloc_segment(a, 0)->map + SEG - 1, p);
    assert_string_equal(p, "r--s");
    uint8_t was = x[0];
    assert_true(poke(x, (uint8_t)(was ^ 0xff)) < 0);
    assert_int_equal(x[0], was);
    check_intact(&live[0]);

    /* a held window outlives its time until released */
    t_assert_ok(ss__salloc_write_open(a, &live[0].loc, live[0].size, true));
    assert_int_equal(poke(x, (uint8_t)(was ^ 0xff)), 1); /* open: root could, now */
    assert_int_equal(x[0], (uint8_t)(was ^ 0xff));
    x[0] = was;
    assert_int_equal(ss__salloc_write_close(a, UINT64_MAX / 2, true), UINT64_MAX);
    assert_int_equal(ss__salloc_windows(a), 1);
    ss__salloc_write_release(a, &live[0].loc, live[0].size);
    ss__salloc_write_close(a, 0, true);
    assert_int_equal(ss__salloc_windows(a), 0);
    perms_of(x, p);
    assert_string_equal(p, "r--s");

    /* a range crossing a unit boundary opens both units; bad ranges */
    ss__sloc cross = live[0].loc;
    cross.off = 64 * SS_KiB - 8;
    t_assert_ok(ss__salloc_write_open(a, &cross, 16, false));
    assert_int_equal(ss__salloc_windows(a), 2);
    cross.off = SEG - 8;
    t_assert_err(ss__salloc_write_open(a, &cross, 16, false), -EINVAL);
    cross.seg = 99;
    t_assert_err(ss__salloc_write_open(a, &cross, 1, false), -EINVAL);
    free_all(a, live, &n);
    ss__salloc_destroy(a); /* with windows open: they go with the segment */
}

/* -------------------------------------------------------------- readers */
static void test_readers(void **state)
{
    (void)state;
    t_budget b;
    ss__salloc *a = mk(&b, 64 * SS_MiB);
    obj live[32];
    size_t n = 0;

    t_rnd_seed(seed ^ 4);
    for (int i = 0; i < 20; i++)
        t_assert_ok(do_alloc(a, rnd_size(), SS_NODE_ANY, live, &n));
    const ss__seg *s = ss__salloc_segment(a, 0);
    assert_non_null(s);
    assert_true(ss__seals_small_ok(ss__seg_get_seals(s->fd)));

    int ro = ss__seg_reopen_ro(s->fd);
    t_assert_ok(ro);
    const uint8_t *view = mmap(NULL, s->size, PROT_READ, MAP_SHARED, ro, 0);
    assert_true(view != MAP_FAILED);
    for (size_t i = 0; i < n; i++) {
        if (live[i].loc.seg != 0)
            continue;
        const uint8_t *p = view + live[i].loc.off;
        for (uint64_t k = 0; k < live[i].size; k++)
            if (p[k] != pat(live[i].tag, k))
                fail_msg("reader sees byte %" PRIu64 " of off %" PRIu64 " differ", k,
                         live[i].loc.off);
    }
    /* Writes through the store's mapping show up in the reader's. */
    if (live[0].size > 0) {
        t_assert_ok(ss__salloc_write_open(a, &live[0].loc, 1, false));
        ((uint8_t *)live[0].loc.ptr)[0] ^= 0xff;
        assert_int_equal(view[live[0].loc.off], (uint8_t)(pat(live[0].tag, 0) ^ 0xff));
        ((uint8_t *)live[0].loc.ptr)[0] ^= 0xff;
    }
    /* Nobody can map it writable: not the reader's fd, not a new mapping
     * of the store's own fd (FUTURE_WRITE), not an upgrade. */
    errno = 0;
    assert_true(mmap(NULL, s->size, PROT_READ | PROT_WRITE, MAP_SHARED, ro, 0) == MAP_FAILED);
    assert_int_equal(errno, EACCES);
    errno = 0;
    assert_true(mmap(NULL, s->size, PROT_READ | PROT_WRITE, MAP_SHARED, s->fd, 0) ==
                MAP_FAILED);
    assert_int_equal(errno, EPERM);
    assert_int_equal(mprotect((void *)view, s->size, PROT_READ | PROT_WRITE), -1);
    assert_int_equal(errno, EACCES);
    assert_int_equal(write(s->fd, "x", 1), -1);
    assert_int_equal(errno, EPERM);

    munmap((void *)view, s->size);
    close(ro);
    free_all(a, live, &n);
    ss__salloc_destroy(a);
}

/* -------------------------------------------------- fragmentation report */
static void test_fragmentation(void **state)
{
    (void)state;
    t_budget b;
    ss__salloc *a = mk(&b, 256 * SS_MiB);
    static obj live[3000];
    size_t n = 0;

    t_rnd_seed(seed ^ 5);
    for (int i = 0; i < 3000; i++) {
        obj o = { .size = rnd_size() };
        t_assert_ok(ss__salloc_alloc(a, o.size, SS_NODE_ANY, &o.loc));
        live[n++] = o;
    }
    /* Free a random half, as a store under churn would. */
    for (int i = 0; i < 1500; i++) {
        size_t k = t_rnd() % n;
        t_assert_ok(ss__salloc_free(a, &live[k].loc));
        live[k] = live[--n];
    }
    t_assert_ok(ss__salloc_validate(a));
    ss__salloc_stats st = stats(a);
    print_message("fragmentation: %" PRIu64 " objects, live %" PRIu64 " B, class %" PRIu64
                  " B (+%.1f%% rounding), slabs %" PRIu64 " (%" PRIu64 " B, %.1f%% used), "
                  "segments %" PRIu64 " (%" PRIu64 " B, %.1f%% live), empty slabs %" PRIu64
                  ", spare %" PRIu64 "\n",
                  st.live_objects, st.live_bytes, st.used_bytes,
                  100.0 * (double)(st.used_bytes - st.live_bytes) / (double)st.live_bytes,
                  st.slabs, st.slab_bytes, 100.0 * (double)st.used_bytes / (double)st.slab_bytes,
                  st.segments, st.segment_bytes,
                  100.0 * (double)st.live_bytes / (double)st.segment_bytes, st.empty_slabs,
                  st.spare_segments);
    assert_true(st.live_bytes <= st.used_bytes);
    assert_true(st.used_bytes <= st.slab_bytes);
    assert_true(st.slab_bytes <= st.segment_bytes);
    assert_true((st.used_bytes - st.live_bytes) * 8 <= st.live_bytes); /* <= 12.5% */
    assert_int_equal(st.segment_bytes, st.segments * SEG);
    for (size_t i = 0; i < n; i++)
        t_assert_ok(ss__salloc_free(a, &live[i].loc));
    t_assert_ok(ss__salloc_validate(a));
    ss__salloc_destroy(a);
    assert_int_equal(b.used, 0);
}

/* ------------------------------------------------ throughput (printed) */
static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Not a timing test: prints pairs/s for the report, asserts only results. */
static void test_throughput(void **state)
{
    (void)state;
    t_budget b;
    ss__salloc *a = mk(&b, 256 * SS_MiB);
    static ss__sloc ring[1024];
    const int pairs = 200000;

    ss__sloc l;
    double t0 = now_s();
    for (int i = 0; i < pairs; i++) {
        t_assert_ok(ss__salloc_alloc(a, 200, SS_NODE_ANY, &l));
        t_assert_ok(ss__salloc_free(a, &l));
    }
    double t1 = now_s();

    t_rnd_seed(seed ^ 6);
    for (int i = 0; i < 1024; i++)
        t_assert_ok(ss__salloc_alloc(a, rnd_size() % 4096, SS_NODE_ANY, &ring[i]));
    double t2 = now_s();
    for (int i = 0; i < pairs; i++) {
        int k = (int)(t_rnd() % 1024);
        uint64_t sz = ring[k].off % 4096; /* cheap pseudo-random size */
        t_assert_ok(ss__salloc_free(a, &ring[k]));
        t_assert_ok(ss__salloc_alloc(a, sz, SS_NODE_ANY, &ring[k]));
    }
    double t3 = now_s();
    print_message("throughput: same-size pair %.1f M pairs/s; 1024 live mixed <4K "
                  "free+alloc %.1f M pairs/s\n",
                  pairs / (t1 - t0) / 1e6, pairs / (t3 - t2) / 1e6);
    for (int i = 0; i < 1024; i++)
        t_assert_ok(ss__salloc_free(a, &ring[i]));
    t_assert_ok(ss__salloc_validate(a));
    assert_int_equal(stats(a).live_objects, 0);
    ss__salloc_destroy(a);
}

int main(void)
{
    const char *env = getenv("SS_TEST_SEED");
    if (env && *env)
        seed = strtoull(env, NULL, 0);
    fprintf(stderr, "t_alloc: seed %#" PRIx64 " (SS_TEST_SEED=<n> to replay)\n", seed);

    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_class_table),
        cmocka_unit_test(test_params),
        cmocka_unit_test(test_edges),
        cmocka_unit_test(test_random),
        cmocka_unit_test(test_nodes),
        cmocka_unit_test(test_exhaustion),
        cmocka_unit_test(test_bad_free),
        cmocka_unit_test(test_segments_returned),
        cmocka_unit_test(test_readers),
        cmocka_unit_test(test_windows),
        cmocka_unit_test(test_fragmentation),
        cmocka_unit_test(test_throughput),
    };
    return t_run(tests, NULL, NULL);
}
