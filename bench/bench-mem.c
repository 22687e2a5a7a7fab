/* SPDX-License-Identifier: MIT */
/*
 * Scenarios on sealstore's memory layer, each against same-run baselines:
 * segment (ss__seg_create per backing), pool (warm vs cold ss__pool_take,
 * populator rate), alloc (the small allocator vs glibc malloc).
 */
#include "bench.h"

#include <errno.h>
#include <malloc.h>
#include <stdlib.h>

#include "alloc.h"
#include "arena.h"
#include "numa.h"
#include "options.h"
#include "pool.h"
#include "stats.h"
#include "sys.h"

/* --------------------------------------------------------------- segment */

struct seg_arg {
    int bk;
    uint64_t size;
    uint64_t got; /* seg.size as created */
    struct samples create, destroy;
};

static int rep_seg(struct bench *b, void *arg, int rep, char *why)
{
    struct seg_arg *a = arg;
    ss__seg seg;
    ss__seg_params p = {.size = a->size,
                        .hugepages = backings[a->bk].policy,
                        .kind = SS_SEG_OBJECT,
                        .numa = NULL,
                        .node = SS_NODE_ANY};
    uint64_t t0, t1, t2;
    int rc;

    memset(&seg, 0, sizeof(seg));
    t0 = now_ns();
    rc = ss__seg_create(&seg, &p);
    t1 = now_ns();
    if (rc == -SS_E_NOBACKING) {
        snprintf(why, WHY_LEN, "%s: ss__seg_create: %s", backings[a->bk].name, ss_strerror(rc));
        return SKIP;
    }
    if (rc < 0)
        die_rc(rc, "ss__seg_create(%" PRIu64 " bytes, %s)", a->size, backings[a->bk].name);
    if (seg.backing != a->bk)
        die_rc(0, "ss__seg_create: asked for backing %s, got %s", backings[a->bk].name,
               seg.backing < SS_BACKING__COUNT ? backings[seg.backing].name : "?");
    a->got = seg.size;
    ss__seg_destroy(&seg);
    t2 = now_ns();
    if (rep >= 0) {
        samples_add(&a->create, gbps(a->got, t1 - t0));
        samples_add(&a->destroy, (double)(t2 - t1) / 1e3);
    }
    return 0;
}

void run_segment(struct bench *b)
{
    char name[48], label[48], sz[16], bname[40], why[WHY_LEN];

    for (int bk = 0; bk < SS_BACKING__COUNT; bk++) {
        const struct backing_desc *d = &backings[bk];
        /* a segment is at least one page of its backing */
        struct seg_arg a = {.bk = bk, .size = SS_ALIGN_UP(b->seg_size, d->page)};
        struct fig create = {0}, destroy = {0};

        fmt_size(a.size, sz, sizeof(sz));
        if (!backing_usable(bk, a.size, why)) {
            fig_skip(&create, why);
            fig_skip(&destroy, why);
        } else {
            snprintf(label, sizeof(label), "create %s [%s]", sz, d->name);
            if (run_reps(b, label, b->reps, rep_seg, &a, why) == SKIP) {
                fig_skip(&create, why);
                fig_skip(&destroy, why);
            } else {
                fig_set(&create, &a.create);
                fig_set(&destroy, &a.destroy);
                if (a.got != a.size)
                    snprintf(create.note, sizeof(create.note),
                             "segment size %" PRIu64 " for %" PRIu64 " asked", a.got, a.size);
            }
        }
        samples_free(&a.create);
        samples_free(&a.destroy);

        snprintf(name, sizeof(name), "create+populate %s [%s]", sz, d->name);
        snprintf(bname, sizeof(bname), "kernel zeroing %s", d->name);
        report(b, &(struct rowspec){.figure = name, .metric = "seg_create", .backing = d->name,
                                    .unit = "GB/s", .size = a.size, .f = &create,
                                    .bl_name = bname, .bl = bl_zero(b, bk)});
        snprintf(bname, sizeof(bname), "first-touch memset %s", d->name);
        report(b, &(struct rowspec){.figure = name, .metric = "seg_create", .backing = d->name,
                                    .unit = "GB/s", .size = a.size, .f = &create,
                                    .bl_name = bname, .bl = bl_touch(b, bk)});
        snprintf(name, sizeof(name), "destroy %s [%s]", sz, d->name);
        report(b, &(struct rowspec){.figure = name, .metric = "seg_destroy", .backing = d->name,
                                    .unit = "us", .size = a.size, .f = &destroy});
    }
    print_table(b, "ss__seg_create(OBJECT, forced backing, no NUMA) per segment");
}

/* ------------------------------------------------------------------ pool */

/* 4K shmem fills ~1 GB/s: a pool that takes this long is starved (another
 * process took the hugetlb pages), not slow */
#define POOL_FILL_TIMEOUT_S 30

struct pool_arg {
    int bk;
    uint64_t size, budget;
    struct samples take_us, pop_rate, fill_rate;
    uint64_t takes, hits;
};

static int pool_skip(int rc, int bk, const char *call, char *why)
{
    if (rc == -SS_E_NOBACKING || (is_hugetlb(bk) && rc == -ENOMEM)) {
        snprintf(why, WHY_LEN, "%s: %s: %s", backings[bk].name, call, ss_strerror(rc));
        return SKIP;
    }
    return 0;
}

static int pool_open(struct pool_arg *a, uint64_t budget, ss__pool **out, char *why)
{
    ss__pool_params p = {.budget = budget,
                         .classes = {.n = 1, .v = {a->size}},
                         .hugepages = backings[a->bk].policy,
                         .numa = NULL,
                         .charge = NULL};
    int rc = ss__pool_start(out, &p);

    if (rc < 0 && pool_skip(rc, a->bk, "ss__pool_start", why))
        return SKIP;
    if (rc < 0)
        die_rc(rc, "ss__pool_start(budget %" PRIu64 ", class %" PRIu64 ", %s)", budget, a->size,
               backings[a->bk].name);
    return 0;
}

/* Take one segment, timing only the take; destroys it. */
static int pool_take1(struct pool_arg *a, ss__pool *pool, double *us, char *why)
{
    ss__seg seg;
    uint64_t t0, t1;
    int rc;

    memset(&seg, 0, sizeof(seg));
    t0 = now_ns();
    rc = ss__pool_take(pool, a->size, SS_NODE_ANY, &seg);
    t1 = now_ns();
    if (rc < 0 && pool_skip(rc, a->bk, "ss__pool_take", why))
        return SKIP;
    if (rc < 0)
        die_rc(rc, "ss__pool_take(%" PRIu64 ", %s)", a->size, backings[a->bk].name);
    if (seg.backing != a->bk)
        die_rc(0, "ss__pool_take: asked for backing %s, got %s", backings[a->bk].name,
               seg.backing < SS_BACKING__COUNT ? backings[seg.backing].name : "?");
    if (seg.size < a->size)
        die_rc(0, "ss__pool_take(%" PRIu64 "): segment of only %" PRIu64 " bytes", a->size,
               seg.size);
    ss__seg_destroy(&seg);
    *us = (double)(t1 - t0) / 1e3;
    return 0;
}

/*
 * Warm: start a pool, let it fill (timed: the populator's wall-clock rate),
 * then take every ready segment back to back. The populator refills while we
 * take, as it would in a store; hits/misses say whether it kept up.
 */
static int rep_pool_warm(struct bench *b, void *arg, int rep, char *why)
{
    struct pool_arg *a = arg;
    ss__pool *pool;
    ss__pool_stats st0, st1;
    uint64_t t0, t1;
    double us;
    int rc;

    t0 = now_ns();
    if (pool_open(a, a->budget, &pool, why) == SKIP)
        return SKIP;
    rc = ss__pool_wait_full(pool, POOL_FILL_TIMEOUT_S * 1000);
    t1 = now_ns();
    if (rc == -ETIMEDOUT) {
        ss__pool_stop(pool);
        snprintf(why, WHY_LEN, "%s: the pool did not fill %" PRIu64 " MiB within %d s",
                 backings[a->bk].name, (uint64_t)(a->budget / SS_MiB), POOL_FILL_TIMEOUT_S);
        return SKIP;
    }
    if (rc < 0)
        die_rc(rc, "ss__pool_wait_full");
    ss__pool_stats_get(pool, &st0);
    if (st0.ready_segments == 0)
        die_rc(0, "ss__pool_wait_full returned with no ready segment (budget %" PRIu64
                  ", class %" PRIu64 ")", a->budget, a->size);
    for (uint64_t i = 0; i < st0.ready_segments; i++) {
        if (pool_take1(a, pool, &us, why) == SKIP) {
            ss__pool_stop(pool);
            return SKIP;
        }
        if (rep >= 0)
            samples_add(&a->take_us, us);
    }
    ss__pool_stats_get(pool, &st1);
    ss__pool_stop(pool);
    if (rep >= 0) {
        samples_add(&a->pop_rate, gbps(st0.bytes_populated, st0.populate_ns));
        samples_add(&a->fill_rate, gbps(st0.bytes_populated, t1 - t0));
        a->takes += st0.ready_segments;
        a->hits += st1.hits - st0.hits;
    }
    return 0;
}

/* Cold: budget 0, no populator: each take creates and populates on our
 * thread. Small objects take several per rep to get a percentile. */
static int rep_pool_cold(struct bench *b, void *arg, int rep, char *why)
{
    struct pool_arg *a = arg;
    ss__pool *pool;
    int n = a->size <= 4 * SS_MiB ? 8 : 1;
    double us;

    if (pool_open(a, 0, &pool, why) == SKIP)
        return SKIP;
    for (int i = 0; i < n; i++) {
        if (pool_take1(a, pool, &us, why) == SKIP) {
            ss__pool_stop(pool);
            return SKIP;
        }
        if (rep >= 0)
            samples_add(&a->take_us, us);
    }
    ss__pool_stop(pool);
    return 0;
}

static void pool_one(struct bench *b, int bk, uint64_t size)
{
    const struct backing_desc *d = &backings[bk];
    struct pool_arg w = {.bk = bk, .size = size, .budget = b->pool_budget};
    struct pool_arg c = {.bk = bk, .size = size};
    struct fig warm = {0}, cold = {0}, pop = {0}, fill = {0};
    char name[48], label[48], sz[16], bname[40], why[WHY_LEN];

    fmt_size(size, sz, sizeof(sz));
    why[0] = '\0';
    if (bk == SS_BACKING_1G && size < SS_GiB)
        snprintf(why, WHY_LEN, "1G: a %s object would waste more than 1/8 of a 1 GiB page", sz);
    else if (!backing_usable(bk, w.budget + size, why))
        ;
    else {
        snprintf(label, sizeof(label), "cold take %s [%s]", sz, d->name);
        if (run_reps(b, label, b->reps, rep_pool_cold, &c, why) != SKIP) {
            fig_set(&cold, &c.take_us);
            snprintf(label, sizeof(label), "warm take %s [%s]", sz, d->name);
            if (run_reps(b, label, b->reps, rep_pool_warm, &w, why) != SKIP) {
                why[0] = '\0';
                fig_set(&warm, &w.take_us);
                fig_set(&pop, &w.pop_rate);
                fig_set(&fill, &w.fill_rate);
                snprintf(warm.note, sizeof(warm.note),
                         "%s: %" PRIu64 "/%" PRIu64 " warm takes were pool hits; budget %" PRIu64
                         " MiB",
                         d->name, w.hits, w.takes, (uint64_t)(w.budget / SS_MiB));
            }
        }
    }
    if (why[0]) {
        if (!cold.done)
            fig_skip(&cold, why);
        fig_skip(&warm, why);
        fig_skip(&pop, why);
        fig_skip(&fill, why);
    }
    samples_free(&w.take_us);
    samples_free(&w.pop_rate);
    samples_free(&w.fill_rate);
    samples_free(&c.take_us);

    snprintf(name, sizeof(name), "warm take %s p50 [%s]", sz, d->name);
    report(b, &(struct rowspec){.figure = name, .metric = "take_warm_p50", .backing = d->name,
                                .unit = "us", .size = size, .f = &warm, .stat = ST_MEDIAN,
                                .bl_name = "cold take p50", .bl = &cold, .bl_stat = ST_MEDIAN});
    snprintf(name, sizeof(name), "warm take %s p99 [%s]", sz, d->name);
    report(b, &(struct rowspec){.figure = name, .metric = "take_warm_p99", .backing = d->name,
                                .unit = "us", .size = size, .f = &warm, .stat = ST_P99,
                                .bl_name = "cold take p99", .bl = &cold, .bl_stat = ST_P99});
    snprintf(name, sizeof(name), "cold take %s p50 [%s]", sz, d->name);
    snprintf(bname, sizeof(bname), "kernel zeroing %s time", d->name);
    report(b, &(struct rowspec){.figure = name, .metric = "take_cold_p50", .backing = d->name,
                                .unit = "us", .size = size, .f = &cold, .stat = ST_MEDIAN,
                                .bl_name = bname,
                                .bl_value = fig_ok(&cold) ? zero_us(b, bk, size) : NAN});
    snprintf(name, sizeof(name), "cold take %s p99 [%s]", sz, d->name);
    report(b, &(struct rowspec){.figure = name, .metric = "take_cold_p99", .backing = d->name,
                                .unit = "us", .size = size, .f = &cold, .stat = ST_P99,
                                .bl_name = bname,
                                .bl_value = fig_ok(&cold) ? zero_us(b, bk, size) : NAN});
    snprintf(name, sizeof(name), "populator rate, %s class [%s]", sz, d->name);
    snprintf(bname, sizeof(bname), "kernel zeroing %s", d->name);
    report(b, &(struct rowspec){.figure = name, .metric = "populator_rate", .backing = d->name,
                                .unit = "GB/s", .size = size, .f = &pop, .bl_name = bname,
                                .bl = fig_ok(&pop) ? bl_zero(b, bk) : NULL,
                                .bl_value = NAN});
    snprintf(name, sizeof(name), "pool fill wall, %s class [%s]", sz, d->name);
    report(b, &(struct rowspec){.figure = name, .metric = "pool_fill_wall", .backing = d->name,
                                .unit = "GB/s", .size = size, .f = &fill, .bl_name = bname,
                                .bl = fig_ok(&fill) ? bl_zero(b, bk) : NULL,
                                .bl_value = NAN});
}

void run_pool(struct bench *b)
{
    /* 64 MiB (seg_size; --smoke 16 MiB) */
    const uint64_t sizes[] = {4 * SS_MiB, b->seg_size};

    for (int bk = 0; bk < SS_BACKING__COUNT; bk++)
        for (size_t i = 0; i < SS_ARRAY_SIZE(sizes); i++)
            pool_one(b, bk, sizes[i]);
    print_table(b, "ss__pool take latency, warm (populator) vs cold (budget 0)");
}

/* ----------------------------------------------------------------- alloc */

/* splitmix64: a fixed seed, so every run replays the same trace. */
static uint64_t rng_next(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);

    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* The workload: a live set of `live` slots; each step frees one random slot
 * and allocates a log-uniform size (1 B .. max) into it. */
struct trace {
    unsigned live, ops;
    uint32_t *fill_size; /* initial size per slot */
    uint32_t *slot;      /* per op */
    uint32_t *size;      /* per op */
};

static uint32_t logu_size(uint64_t *s, uint64_t max)
{
    double u = (double)(rng_next(s) >> 11) / 9007199254740992.0; /* [0,1) */
    double v = floor(exp2(u * log2((double)max + 1)));

    return v < 1 ? 1 : v > (double)max ? (uint32_t)max : (uint32_t)v;
}

static void trace_make(struct trace *t, unsigned live, unsigned ops, uint64_t max)
{
    uint64_t s = 0x5ea15ea15ea1ull;

    t->live = live;
    t->ops = ops;
    t->fill_size = xcalloc(live, sizeof(uint32_t));
    t->slot = xcalloc(ops, sizeof(uint32_t));
    t->size = xcalloc(ops, sizeof(uint32_t));
    for (unsigned i = 0; i < live; i++)
        t->fill_size[i] = logu_size(&s, max);
    for (unsigned i = 0; i < ops; i++) {
        t->slot[i] = (uint32_t)(rng_next(&s) % live);
        t->size[i] = logu_size(&s, max);
    }
}

static void trace_free(struct trace *t)
{
    free(t->fill_size);
    free(t->slot);
    free(t->size);
}

struct alloc_arg {
    const struct trace *t;
    ss__salloc_params params;
    struct samples ops, waste, slack, book;
    void **ptrs;         /* malloc baseline */
    ss__sloc *locs;      /* sealstore */
    uint32_t *sizes;     /* current size per slot */
    int backing;         /* of the small segments; -1 unknown, -2 mixed */
    struct samples churn; /* segments created per 1000 timed ops */
};

/* The backing of the allocator's segments (policy auto can mix them). */
static int salloc_backing(const ss__salloc *al, uint64_t nsegs)
{
    int bk = -1;
    uint64_t found = 0;

    /* ids are small and stable; scan a little past the count for holes */
    for (uint32_t id = 0; found < nsegs && id < 4 * nsegs + 64; id++) {
        const ss__seg *g = ss__salloc_segment(al, id);

        if (!g)
            continue;
        found++;
        if (bk == -1)
            bk = g->backing;
        else if (bk != g->backing)
            return -2;
    }
    return bk;
}

static size_t heap_bytes(void)
{
    struct mallinfo2 mi = mallinfo2();

    return mi.uordblks + mi.hblkhd;
}

static void salloc_do(ss__salloc *al, const struct trace *t, ss__sloc *loc, uint32_t size)
{
    int rc = ss__salloc_alloc(al, size, SS_NODE_ANY, loc);

    if (rc < 0)
        die_rc(rc, "ss__salloc_alloc(%" PRIu32 ")", size);
}

static int rep_salloc(struct bench *b, void *arg, int rep, char *why)
{
    struct alloc_arg *a = arg;
    const struct trace *t = a->t;
    ss__salloc *al;
    ss__salloc_stats st;
    size_t heap0, heap1;
    uint64_t t0, t1;

    uint64_t created;

    heap0 = heap_bytes();
    CK(ss__salloc_create(&al, &a->params));
    for (unsigned i = 0; i < t->live; i++)
        salloc_do(al, t, &a->locs[i], t->fill_size[i]);
    /* segments made while timed: their populate is part of the op cost */
    created = atomic_load(&ss__g_stats.seg_created);
    t0 = now_ns();
    for (unsigned i = 0; i < t->ops; i++) {
        ss__sloc *l = &a->locs[t->slot[i]];
        int rc = ss__salloc_free(al, l);

        if (rc < 0)
            die_rc(rc, "ss__salloc_free");
        salloc_do(al, t, l, t->size[i]);
    }
    t1 = now_ns();
    created = atomic_load(&ss__g_stats.seg_created) - created;
    heap1 = heap_bytes();
    ss__salloc_stats_get(al, &st);
    CK(ss__salloc_validate(al));
    if (st.live_objects != t->live)
        die_rc(0, "ss__salloc stats: %" PRIu64 " live objects, expected %u", st.live_objects,
               t->live);
    if (rep >= 0) {
        int bk = salloc_backing(al, st.segments);

        a->backing = rep == 0 || a->backing == bk ? bk : -2;
        samples_add(&a->ops, 2.0 * t->ops / ((double)(t1 - t0) / 1e9));
        samples_add(&a->churn, 1000.0 * (double)created / (2.0 * t->ops));
        samples_add(&a->waste, 100.0 * (double)(st.used_bytes - st.live_bytes) /
                                   (double)st.live_bytes);
        samples_add(&a->slack, 100.0 * (double)(st.segment_bytes - st.used_bytes) /
                                   (double)st.used_bytes);
        samples_add(&a->book, heap1 > heap0 ? (double)(heap1 - heap0) / (double)t->live : 0);
    }
    for (unsigned i = 0; i < t->live; i++)
        CK(ss__salloc_free(al, &a->locs[i]));
    ss__salloc_destroy(al);
    return 0;
}

/* The same trace through glibc malloc: what a private heap costs. */
static int rep_malloc(struct bench *b, void *arg, int rep, char *why)
{
    struct alloc_arg *a = arg;
    const struct trace *t = a->t;
    uint64_t t0, t1, live = 0, usable = 0;

    for (unsigned i = 0; i < t->live; i++) {
        a->ptrs[i] = malloc(t->fill_size[i]);
        if (!a->ptrs[i])
            die_rc(-ENOMEM, "malloc(%" PRIu32 ")", t->fill_size[i]);
        a->sizes[i] = t->fill_size[i];
    }
    t0 = now_ns();
    for (unsigned i = 0; i < t->ops; i++) {
        uint32_t s = t->slot[i];

        free(a->ptrs[s]);
        a->ptrs[s] = malloc(t->size[i]);
        if (!a->ptrs[s])
            die_rc(-ENOMEM, "malloc(%" PRIu32 ")", t->size[i]);
        a->sizes[s] = t->size[i];
    }
    t1 = now_ns();
    clobber(a->ptrs);
    for (unsigned i = 0; i < t->live; i++) {
        live += a->sizes[i];
        usable += malloc_usable_size(a->ptrs[i]);
        free(a->ptrs[i]);
    }
    if (rep >= 0) {
        samples_add(&a->ops, 2.0 * t->ops / ((double)(t1 - t0) / 1e9));
        samples_add(&a->waste, 100.0 * (double)(usable - live) / (double)live);
    }
    return 0;
}

/*
 * The arena allocator (objects above the small limit) on its mixed
 * workload: the store's own parameters (64 MiB arenas, dedicated above
 * 8 MiB) with bookkeeping-only arenas (every decision made, no memory),
 * ARENA_LIVE bytes live, sizes log-uniform 64 KiB .. 128 MiB, each step
 * frees a random object while the live bytes are at the target and
 * allocates back up to it. Waste is every byte the arenas hold (what the
 * kernel would hold) over the live bytes, at each step of the steady state
 * (after the first fifth); bookkeeping is the heap the allocator holds
 * over the live bytes (it grows with bytes, not objects: per grain and per
 * extent). Target: waste <= 12% of live bytes.
 */
#define ARENA_LIVE (8 * SS_GiB)
#define ARENA_STEPS 20000

struct arena_rep {
    struct samples ops, mean, worst, book;
    int hugepages;
};

static int rep_arena(struct bench *b, void *arg, int rep, char *why)
{
    struct arena_rep *r = arg;
    ss__arena_params p = {.hugepages = r->hugepages, .bookkeeping_only = true};
    ss__arenas *a = NULL;
    struct {
        ss__aloc loc;
        uint64_t size;
    } *o = NULL;
    size_t n = 0, cap = 0, heap0 = heap_bytes(), book = 0;
    uint64_t seed = 0x5ea15ea1 + (uint64_t)rep, t0, t1, ops = 0;
    double worst = 0, sum = 0;
    long samples = 0;
    ss__arena_stats st;

    (void)b;
    (void)why;
    CK(ss__arenas_create(&a, &p));
    ss__arena_stats_get(a, &st);
    t0 = now_ns();
    for (long step = 0; step < ARENA_STEPS; step++) {
        if (st.live_bytes >= ARENA_LIVE && n > 0) {
            size_t i = (size_t)(rng_next(&seed) % n);

            CK(ss__arena_free(a, &o[i].loc));
            o[i] = o[--n];
            ops++;
            ss__arena_stats_get(a, &st);
        }
        while (st.live_bytes < ARENA_LIVE) {
            double u = (double)(rng_next(&seed) >> 11) / 9007199254740992.0; /* [0,1) */

            if (n == cap) {
                cap = cap ? 2 * cap : 1024;
                o = realloc(o, cap * sizeof(*o));
                if (!o)
                    die_rc(-ENOMEM, "arena workload");
            }
            o[n].size = (uint64_t)exp2(log2(64.0 * SS_KiB) + u * (log2(128.0 * SS_MiB) -
                                                                  log2(64.0 * SS_KiB)));
            CK(ss__arena_alloc(a, o[n].size, SS_NODE_ANY, &o[n].loc));
            n++;
            ops++;
            ss__arena_stats_get(a, &st);
        }
        if (step >= ARENA_STEPS / 5) {
            double w = (double)st.arena_bytes / (double)st.live_bytes - 1;

            worst = w > worst ? w : worst;
            sum += w;
            samples++;
            if (step == ARENA_STEPS - 1)
                book = heap_bytes() - heap0 - cap * sizeof(*o);
        }
    }
    t1 = now_ns();
    if (rep >= 0) {
        samples_add(&r->ops, (double)ops / ((double)(t1 - t0) / 1e9));
        samples_add(&r->mean, 100.0 * sum / (double)samples);
        samples_add(&r->worst, 100.0 * worst);
        samples_add(&r->book, 100.0 * (double)book / (double)st.live_bytes);
    }
    ss__arenas_destroy(a);
    free(o);
    return 0;
}

static void arena_mixed(struct bench *b)
{
    struct arena_rep r = {.hugepages = ss__opt_hugepages()};
    struct fig ops = {0}, mean = {0}, worst = {0}, book = {0}, target = {0};
    struct samples t12 = {0};
    char why[WHY_LEN];

    if (run_reps(b, "arena mixed workload", b->reps, rep_arena, &r, why) == SKIP)
        die_rc(0, "arena workload cannot skip");
    fig_set(&ops, &r.ops);
    fig_set(&mean, &r.mean);
    fig_set(&worst, &r.worst);
    fig_set(&book, &r.book);
    samples_add(&t12, 12);
    fig_set(&target, &t12);
    snprintf(ops.note, sizeof(ops.note),
             "64 MiB arenas, dedicated above 8 MiB; 8 GiB live, sizes log-uniform 64 KiB..128 "
             "MiB; bookkeeping-only arenas");
    report(b, &(struct rowspec){.figure = "arena alloc|free ops, mixed sizes", .metric = "arena_ops",
                                .unit = "ops/s", .f = &ops});
    report(b, &(struct rowspec){.figure = "arena waste, mean (held-live)/live",
                                .metric = "arena_waste_mean", .unit = "%", .f = &mean,
                                .bl_name = "target <= 12%", .bl = &target});
    report(b, &(struct rowspec){.figure = "arena waste, worst (held-live)/live",
                                .metric = "arena_waste_worst", .unit = "%", .f = &worst,
                                .bl_name = "target <= 12%", .bl = &target});
    snprintf(book.note, sizeof(book.note),
             "heap over live bytes: 8 B per 4 KiB grain of a regular arena, 64 B per "
             "extent (~1/500 of a 64 KiB object)");
    report(b, &(struct rowspec){.figure = "arena bookkeeping / live bytes",
                                .metric = "arena_bookkeeping", .unit = "%", .f = &book});
    samples_free(&r.ops);
    samples_free(&r.mean);
    samples_free(&r.worst);
    samples_free(&r.book);
    samples_free(&t12);
    print_table(b, "arena allocator (objects above the small limit), mixed workload; target: "
                   "waste <= 12% of live bytes");
}

void run_alloc(struct bench *b)
{
    struct trace t;
    struct alloc_arg ss = {0}, ml = {0};
    struct fig f_ops = {0}, f_waste = {0}, f_slack = {0}, f_book = {0}, f_churn = {0};
    struct fig m_ops = {0}, m_waste = {0};
    char why[WHY_LEN], sz[16], fig[48];
    const char *bk;
    uint64_t max = ss__opt_size(SS_OPT_SMALL_MAX);

    ss.params = (ss__salloc_params){.segment_size = ss__opt_size(SS_OPT_SMALL_SEGMENT),
                                    .max_size = max,
                                    .hugepages = ss__opt_hugepages(),
                                    .numa = NULL,
                                    .charge = NULL};
    /* the brief's mix is 1 B .. 64 KiB; a smaller SMALL_MAX caps it */
    if (max > 64 * SS_KiB)
        max = 64 * SS_KiB;
    trace_make(&t, b->alloc_live, b->alloc_ops, max);
    ss.t = ml.t = &t;
    ss.locs = xcalloc(t.live, sizeof(*ss.locs));
    ml.ptrs = xcalloc(t.live, sizeof(*ml.ptrs));
    ml.sizes = xcalloc(t.live, sizeof(*ml.sizes));

    if (run_reps(b, "malloc/free", b->reps, rep_malloc, &ml, why) == SKIP)
        die_rc(0, "malloc baseline cannot skip");
    fig_set(&m_ops, &ml.ops);
    fig_set(&m_waste, &ml.waste);
    if (run_reps(b, "ss__salloc", b->reps, rep_salloc, &ss, why) == SKIP)
        die_rc(0, "small allocator cannot skip");
    fig_set(&f_ops, &ss.ops);
    fig_set(&f_waste, &ss.waste);
    fig_set(&f_slack, &ss.slack);
    fig_set(&f_book, &ss.book);
    fig_set(&f_churn, &ss.churn);
    snprintf(f_ops.note, sizeof(f_ops.note),
             "%u live objects, %u free+alloc pairs per rep, sizes log-uniform 1..%s; "
             "segment %s",
             t.live, t.ops, fmt_size(max, sz, sizeof(sz)),
             fmt_size(ss.params.segment_size, why, sizeof(why)));
    snprintf(f_book.note, sizeof(f_book.note),
             "malloc'd bytes held by the allocator at steady state / live objects");

    bk = ss.backing >= 0 && ss.backing < SS_BACKING__COUNT ? backings[ss.backing].name
         : ss.backing == -2                                   ? "mixed"
                                                              : NULL;
    snprintf(fig, sizeof(fig), "alloc|free ops, mixed sizes [%s]", bk ? bk : "?");
    report(b, &(struct rowspec){.figure = fig, .metric = "salloc_ops", .backing = bk,
                                .unit = "ops/s", .f = &f_ops, .bl_name = "malloc/free",
                                .bl = &m_ops});
    report(b, &(struct rowspec){.figure = "internal waste (used-live)/live",
                                .metric = "salloc_waste", .backing = bk, .unit = "%", .f = &f_waste,
                                .bl_name = "malloc usable-size waste", .bl = &m_waste});
    report(b, &(struct rowspec){.figure = "segment slack (segment-used)/used",
                                .metric = "salloc_segment_slack", .backing = bk,
                                .unit = "%", .f = &f_slack});
    report(b, &(struct rowspec){.figure = "segments created per 1000 ops",
                                .metric = "salloc_segment_churn", .backing = bk,
                                .unit = "/1k op", .f = &f_churn});
    report(b, &(struct rowspec){.figure = "bookkeeping per live object",
                                .metric = "salloc_bookkeeping", .backing = bk,
                                .unit = "B/obj", .f = &f_book});

    samples_free(&ss.ops);
    samples_free(&ss.waste);
    samples_free(&ss.slack);
    samples_free(&ss.book);
    samples_free(&ss.churn);
    samples_free(&ml.ops);
    samples_free(&ml.waste);
    free(ss.locs);
    free(ml.ptrs);
    free(ml.sizes);
    trace_free(&t);
    print_table(b, "small allocator vs glibc malloc, same trace (one op = one alloc or one free)");
    arena_mixed(b);
}

