/* SPDX-License-Identifier: MIT */
/*
 * The populator: ready, pre-faulted object segments.
 *
 * Why. A write-sealed memfd can never be recycled, so every object segment
 * is fresh memory the kernel must zero and fault in: ~1.9 GB/s on 4K shmem
 * here, i.e. half a millisecond per MiB on the producer's time. A
 * background thread does that work ahead of demand, and a create takes a
 * segment that is already created, sized, NUMA-bound and populated.
 *
 * Buckets. Ready segments are kept per (size class, node slot). Node slots
 * are SS_NODE_ANY, SS_NODE_INTERLEAVE and each real node 0..SS_MAX_NODES-1;
 * a slot becomes active when a take asks for it (params.node is active from
 * the start). When the pool has no numa handle nothing is bound, so every
 * take uses the ANY slot. Each bucket is a LIFO list of malloc'd entries.
 *
 * Targets (how many ready segments each bucket should hold). Every bucket
 * carries a demand weight: bytes taken from it recently, misses counted
 * twice (a miss is the signal that the bucket was too small). At start each
 * class that fits the budget gets an equal prior share (budget / classes).
 * Weights halve once their sum exceeds DECAY_FACTOR x budget, so demand is
 * measured over the last few budgets' worth of takes, and a bucket nobody
 * uses fades away. From the weights, recomputed after takes:
 *   1. minimum: in order of weight, one segment to every bucket whose
 *      proportional share is at least a quarter of its segment, while it
 *      fits (so a class that is used at all is never empty for long);
 *   2. proportional: floor(share / size) more, within what is left;
 *   3. remainder: one more to each bucket still short of its share (largest
 *      shortfall first), then what is left to the heaviest buckets that fit.
 * Sum of target x size <= budget always. When a bucket is below target and
 * the budget is full, the populator destroys one segment from the bucket
 * furthest above its own target (counted as `evicted`): that is how the
 * split follows demand. Ready segments are otherwise kept, never aged.
 *
 * Take. The smallest class >= size serves, trimmed to the page-rounded size
 * by ss__seg_fix_size(). If that bucket is empty a larger class may serve,
 * but only up to STRETCH (4) x the rounded request: trimming frees the tail
 * on the caller's thread, and on 4K shmem freeing (~5-8 GB/s) is about 3x
 * cheaper per byte than populating (~1.9 GB/s), so a tail up to 3x the
 * request still beats a miss; beyond that the populator's work is mostly
 * thrown away. A miss (no ready segment, size above the largest class,
 * pool disabled) creates and populates on the caller's thread.
 *
 * Capacity. Every segment is charged through params.charge before it is
 * created: the populator charges the class's expected size (the size the
 * last create of that class produced; initially the class rounded to the
 * first backing's page), then corrects by the difference once the real size
 * is known. A refusal stops filling for a backoff period (10 ms doubling to
 * 1 s, reset by a success), counted in `refused`. A take hands the charge
 * to the caller with the segment and uncharges the trimmed tail, so the
 * caller's charge always equals seg.size. ss__pool_trim() gives memory back
 * under pressure and holds filling for TRIM_HOLD so the room it freed goes
 * to the store's create, not straight back into the pool. A create that
 * fails (backing missing, ENOMEM, EMFILE) puts that class on backoff alone.
 *
 * Concurrency. One mutex guards everything in struct ss__pool; the
 * populator waits on work_cv (timed: idle 1 s, or until a backoff ends);
 * a take that misses or leaves its bucket empty, the last writer done, and
 * stop signal it; wait_full waits on full_cv. Neither
 * ss__seg_create (milliseconds), ss__seg_destroy (a 256 MiB 4K segment
 * takes ~40 ms to free), ss__seg_fix_size nor the charge callback is ever
 * called with the mutex held: the callback may take the store's locks, and
 * a take on a hit costs only the mutex, a list pop, fix_size (ftruncate when
 * trimming, add_seals, fchmod) and, when it empties its bucket, a signal
 * (sent after the unlock).
 * The thread blocks every signal: they belong to the store's event loop.
 * Memory being created is
 * counted in inflight_bytes, so ready + inflight never exceeds the budget.
 * A trim that happens while a segment is being created bumps pressure_gen,
 * and that segment is then destroyed instead of kept.
 *
 * Stop sets `stop`, wakes the thread and joins it: the thread finishes at
 * most the one create it is in (one class: ~8 ms for 16 MiB on 4K shmem),
 * destroys that segment, and exits; stop then destroys every ready segment.
 * The thread may be inside the charge callback, so the caller of stop must
 * not hold a lock that callback takes.
 *
 * Fork safety: the pool is store-side only. It lives in the store process
 * (the daemon, or the embedded store's host); a forked child has no
 * populator thread and may find the mutex held, so it must never call
 * into the pool. Ready segments are memfds created O_CLOEXEC and never
 * mapped by the pool, so exec'd children inherit nothing.
 */
#include "pool.h"

#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "numa.h"
#include "segment.h"
#include "sys.h"

#define POOL_SLOTS (SS_MAX_NODES + 2) /* ANY, INTERLEAVE, nodes 0..63 */
#define SLOT_ANY 0
#define SLOT_INTERLEAVE 1

#define STRETCH 4                 /* a larger class serves up to 4x the request */
#define DECAY_FACTOR 4            /* halve demand after 4 budgets of takes */
#define MS (1000000ull)           /* ns */
#define BACKOFF_MIN_NS (10 * MS)  /* first wait after a refusal or failure */
#define BACKOFF_MAX_NS (1000 * MS)
#define TRIM_HOLD_NS (100 * MS)   /* no filling right after a trim */
#define IDLE_WAIT_NS (1000 * MS)  /* idle: re-check at least once a second */
/* A refill waits while a producer writes into a segment it took, unless
 * the bucket is empty, for at most this long after the latest take: a
 * 64 MiB copy runs at 18.5 GB/s alone and at 9-12 GB/s beside the
 * populator's zeroing on this machine's 2 vCPUs (bench/put_probe.c). A 1
 * GiB copy takes ~60 ms; a writer that never seals costs refills no more
 * than this per take. */
#define WRITER_HOLD_NS (250 * MS)

struct ready {
    struct ready *next;
    ss__seg seg; /* charged: exactly seg.size */
    int fd_ro;   /* seg reopened O_RDONLY by the populator, or -1 */
};

/* Invariant: count == length of head; sum over buckets of
 * count x sizes == ready_bytes; sum of target x expect[class] <= budget. */
struct bucket {
    struct ready *head;
    uint32_t count;
    uint32_t target;
    uint64_t demand; /* decayed bytes taken (misses twice) */
};

/* Scratch for the target computation, one per eligible bucket. */
struct cand {
    struct bucket *b;
    uint64_t size;
    double share; /* bytes of budget this bucket's weight earns */
};

struct ss__pool {
    pthread_mutex_t mu;
    pthread_cond_t work_cv; /* populator: takes, trims, stop */
    pthread_cond_t full_cv; /* wait_full: a segment was added */
    pthread_t thread;
    bool running; /* the thread exists (budget > 0 and classes) */
    bool stop;
    bool targets_dirty;
    bool warned;
    ss__pool_params p;
    unsigned n; /* classes */
    /* Bytes a segment of class i comes out at (the last create's size). */
    uint64_t expect[SS_MAX_CLASSES];
    /* Per-class backoff after a failed create (the backing is missing). */
    uint64_t class_hold_until[SS_MAX_CLASSES];
    uint64_t class_backoff[SS_MAX_CLASSES];
    bool slot_active[POOL_SLOTS];
    struct bucket *bk;  /* [POOL_SLOTS][n] */
    struct cand *cand;  /* [POOL_SLOTS * n] scratch */
    uint64_t ready_bytes, ready_segments;
    uint64_t inflight_bytes; /* charged, being created */
    uint64_t demand_total;
    uint64_t hold_until; /* ns (CLOCK_MONOTONIC): no filling before */
    uint64_t backoff_ns;
    uint64_t pressure_gen; /* bumped by trims */
    uint64_t writers;      /* takes not yet ended by ss__pool_writer_done */
    uint64_t writer_since; /* ns: the latest take */
    ss__pool_stats st;
};

/* ------------------------------------------------------------- helpers */

static struct bucket *bucket_at(ss__pool *pool, int slot, unsigned cls)
{
    return &pool->bk[(size_t)slot * pool->n + cls];
}

static int slot_node(int slot)
{
    if (slot == SLOT_ANY)
        return SS_NODE_ANY;
    if (slot == SLOT_INTERLEAVE)
        return SS_NODE_INTERLEAVE;
    return slot - 2;
}

/* Which slot serves `node`; -1 if none (then the take is a plain miss and
 * ss__seg_create judges the node). */
static int node_slot(const ss__pool *pool, int node)
{
    if (!pool->p.numa || node == SS_NODE_ANY)
        return SLOT_ANY;
    if (node == SS_NODE_INTERLEAVE)
        return SLOT_INTERLEAVE;
    if (node >= 0 && node < SS_MAX_NODES && ss__numa_node_index(pool->p.numa, node) >= 0)
        return 2 + node;
    return -1;
}

/* Smallest class >= size, or -1 above the largest. */
static int class_for(const ss__pool *pool, uint64_t size)
{
    for (unsigned i = 0; i < pool->n; i++)
        if (pool->p.classes.v[i] >= size)
            return (int)i;
    return -1;
}

static int charge(ss__pool *pool, int64_t delta)
{
    if (!pool->p.charge || delta == 0)
        return 0;
    return pool->p.charge(pool->p.charge_arg, delta);
}

static void uncharge(ss__pool *pool, uint64_t bytes)
{
    if (bytes)
        (void)charge(pool, -(int64_t)bytes);
}

/* The size ss__seg_create() would give at most for `size`: rounded to the
 * page of the first backing it would try. 0 if create would reject it. */
static uint64_t planned_bytes(uint64_t size, int hugepages)
{
    uint8_t plan[SS_BACKING__COUNT];
    uint64_t ps, r;

    if (ss__backing_plan(size, hugepages, SS_SEG_OBJECT, plan) < 1)
        return 0;
    ps = ss__backing_page_size(plan[0]);
    r = SS_ALIGN_UP(size, ps);
    return r ? r : ps;
}

static void cond_wait_until(pthread_cond_t *cv, pthread_mutex_t *mu, uint64_t deadline_ns)
{
    struct timespec ts = {
        .tv_sec = (time_t)(deadline_ns / 1000000000ull),
        .tv_nsec = (long)(deadline_ns % 1000000000ull),
    };

    (void)pthread_cond_timedwait(cv, mu, &ts);
}

/* Destroy a list of entries and uncharge them. Called without the lock. */
static void destroy_list(ss__pool *pool, struct ready *r)
{
    while (r) {
        struct ready *next = r->next;
        uint64_t bytes = r->seg.size;

        ss__seg_destroy(&r->seg);
        if (r->fd_ro >= 0)
            ss__sys_close(r->fd_ro);
        uncharge(pool, bytes);
        free(r);
        r = next;
    }
}

static struct ready *pop(ss__pool *pool, struct bucket *b)
{
    struct ready *r = b->head;

    if (!r)
        return NULL;
    b->head = r->next;
    r->next = NULL;
    b->count--;
    pool->ready_bytes -= r->seg.size;
    pool->ready_segments--;
    return r;
}

static void push(ss__pool *pool, struct bucket *b, struct ready *r)
{
    r->next = b->head;
    b->head = r;
    b->count++;
    pool->ready_bytes += r->seg.size;
    pool->ready_segments++;
}

/* ------------------------------------------------------------- targets */

static int cand_by_weight(const void *a, const void *b)
{
    const struct cand *x = a, *y = b;

    if (x->b->demand != y->b->demand)
        return x->b->demand > y->b->demand ? -1 : 1;
    /* equal weight: the smaller class first (it is ready sooner) */
    return (x->size > y->size) - (x->size < y->size);
}

static int cand_by_shortfall(const void *a, const void *b)
{
    const struct cand *x = a, *y = b;
    double dx = x->share - (double)x->b->target * (double)x->size;
    double dy = y->share - (double)y->b->target * (double)y->size;

    if (dx != dy)
        return dx > dy ? -1 : 1;
    return cand_by_weight(a, b);
}

/* Recompute every bucket's target from the demand weights (see the essay).
 * Lock held. */
static void compute_targets(ss__pool *pool)
{
    uint64_t budget = pool->p.budget, left = budget;
    double weight = 0;
    size_t nc = 0;

    pool->targets_dirty = false;
    for (int s = 0; s < POOL_SLOTS; s++) {
        if (!pool->slot_active[s])
            continue;
        for (unsigned i = 0; i < pool->n; i++) {
            struct bucket *b = bucket_at(pool, s, i);

            b->target = 0;
            if (b->demand == 0 || pool->expect[i] > budget)
                continue;
            pool->cand[nc++] = (struct cand){ .b = b, .size = pool->expect[i] };
            weight += (double)b->demand;
        }
    }
    if (nc == 0)
        return;
    for (size_t k = 0; k < nc; k++)
        pool->cand[k].share = (double)budget * (double)pool->cand[k].b->demand / weight;
    qsort(pool->cand, nc, sizeof(pool->cand[0]), cand_by_weight);

    /* 1. one segment to every bucket that earns a quarter of one */
    for (size_t k = 0; k < nc; k++) {
        struct cand *c = &pool->cand[k];

        if (c->share * 4 >= (double)c->size && c->size <= left) {
            c->b->target = 1;
            left -= c->size;
        }
    }
    /* 2. proportional */
    for (size_t k = 0; k < nc; k++) {
        struct cand *c = &pool->cand[k];
        double have = (double)c->b->target * (double)c->size;
        uint64_t more;

        if (c->share <= have)
            continue;
        more = (uint64_t)((c->share - have) / (double)c->size);
        if (more > left / c->size)
            more = left / c->size;
        c->b->target += (uint32_t)(more > UINT32_MAX / 2 ? UINT32_MAX / 2 : more);
        left -= more * c->size;
    }
    /* 3a. one more to whoever is still short, largest shortfall first */
    qsort(pool->cand, nc, sizeof(pool->cand[0]), cand_by_shortfall);
    for (size_t k = 0; k < nc; k++) {
        struct cand *c = &pool->cand[k];

        if (c->share > (double)c->b->target * (double)c->size && c->size <= left) {
            c->b->target++;
            left -= c->size;
        }
    }
    /* 3b. the rest to the heaviest buckets that fit: ready memory is the
     * point of the budget */
    qsort(pool->cand, nc, sizeof(pool->cand[0]), cand_by_weight);
    for (size_t k = 0; k < nc && left > 0; k++) {
        struct cand *c = &pool->cand[k];
        uint64_t more = left / c->size;

        if (more > UINT32_MAX / 2 - c->b->target)
            more = UINT32_MAX / 2 - c->b->target;
        c->b->target += (uint32_t)more;
        left -= more * c->size;
    }
}

/* Register demand for class `cls` in `slot` (lock held). */
static void add_demand(ss__pool *pool, int slot, unsigned cls, bool shortage)
{
    struct bucket *b = bucket_at(pool, slot, cls);
    uint64_t d = pool->expect[cls] * (shortage ? 2 : 1);

    if (!pool->slot_active[slot])
        pool->slot_active[slot] = true;
    b->demand += d;
    pool->demand_total += d;
    if (pool->demand_total > DECAY_FACTOR * pool->p.budget) {
        pool->demand_total = 0;
        for (int s = 0; s < POOL_SLOTS; s++) {
            if (!pool->slot_active[s])
                continue;
            for (unsigned i = 0; i < pool->n; i++) {
                struct bucket *x = bucket_at(pool, s, i);

                x->demand /= 2;
                pool->demand_total += x->demand;
            }
        }
    }
    pool->targets_dirty = true;
}

static bool is_full(ss__pool *pool)
{
    if (!pool->running)
        return true;
    if (pool->targets_dirty)
        compute_targets(pool);
    for (int s = 0; s < POOL_SLOTS; s++) {
        if (!pool->slot_active[s])
            continue;
        for (unsigned i = 0; i < pool->n; i++) {
            struct bucket *b = bucket_at(pool, s, i);

            if (b->count < b->target)
                return false;
        }
    }
    return true;
}

/* ------------------------------------------------------------ populator */

/* The emptiest bucket relative to its target, skipping classes on
 * backoff. Lock held. */
static struct bucket *pick_fill(ss__pool *pool, uint64_t now, int *slot_out, unsigned *cls_out)
{
    struct bucket *best = NULL;

    for (unsigned i = 0; i < pool->n; i++) {
        if (now < pool->class_hold_until[i])
            continue;
        for (int s = 0; s < POOL_SLOTS; s++) {
            struct bucket *b;

            if (!pool->slot_active[s])
                continue;
            b = bucket_at(pool, s, i);
            if (b->count >= b->target)
                continue;
            /* count/target smaller than best's, without dividing */
            if (!best || (uint64_t)b->count * best->target < (uint64_t)best->count * b->target) {
                best = b;
                *slot_out = s;
                *cls_out = i;
            }
        }
    }
    return best;
}

/* One segment from the bucket furthest above its target (bytes), or NULL. */
static struct ready *pick_evict(ss__pool *pool)
{
    struct bucket *victim = NULL;
    uint64_t most = 0;

    for (int s = 0; s < POOL_SLOTS; s++) {
        if (!pool->slot_active[s])
            continue;
        for (unsigned i = 0; i < pool->n; i++) {
            struct bucket *b = bucket_at(pool, s, i);
            uint64_t excess;

            if (b->count <= b->target)
                continue;
            excess = (uint64_t)(b->count - b->target) * pool->expect[i];
            if (excess > most) {
                most = excess;
                victim = b;
            }
        }
    }
    return victim ? pop(pool, victim) : NULL;
}

static uint64_t backoff_doubled(uint64_t ns)
{
    return ns * 2 > BACKOFF_MAX_NS ? BACKOFF_MAX_NS : ns * 2;
}

/* A charge was refused: the whole populator waits. Lock held. */
static void back_off(ss__pool *pool, uint64_t now)
{
    pool->hold_until = now + pool->backoff_ns;
    pool->backoff_ns = backoff_doubled(pool->backoff_ns);
}

/* A create of class cls (size bytes) failed with rc: that class waits, the
 * others go on; the first failure is a warning. Lock held. */
static void create_failed(ss__pool *pool, unsigned cls, uint64_t size, int rc, uint64_t now)
{
    pool->st.failed++;
    ss__log_debug("populator: create of %llu bytes failed: %s", (unsigned long long)size,
                  ss_strerror(rc));
    if (!pool->warned) {
        pool->warned = true;
        ss__log_warn("populator: cannot create a %llu-byte segment (%s); "
                     "retrying with backoff",
                     (unsigned long long)size, ss_strerror(rc));
    }
    if (pool->class_backoff[cls] == 0)
        pool->class_backoff[cls] = BACKOFF_MIN_NS;
    pool->class_hold_until[cls] = now + pool->class_backoff[cls];
    pool->class_backoff[cls] = backoff_doubled(pool->class_backoff[cls]);
}

/*
 * Create one segment for (slot, cls) and keep it. Entered and left with
 * the lock held; drops it around the charge and the create.
 */
static void fill_one(ss__pool *pool, int slot, unsigned cls)
{
    uint64_t e = pool->expect[cls], gen = pool->pressure_gen, t0, t1;
    ss__seg_params sp = {
        .size = pool->p.classes.v[cls],
        .hugepages = pool->p.hugepages,
        .kind = SS_SEG_OBJECT,
        .numa = pool->p.numa,
        .node = slot_node(slot),
    };
    struct ready *r;
    bool refused = false;
    int rc;

    pool->inflight_bytes += e;
    pthread_mutex_unlock(&pool->mu);

    r = calloc(1, sizeof(*r));
    if (r)
        r->fd_ro = -1;
    rc = r ? charge(pool, (int64_t)e) : -ENOMEM;
    if (rc < 0) {
        free(r);
        pthread_mutex_lock(&pool->mu);
        pool->inflight_bytes -= e;
        if (r)
            pool->st.refused++;
        back_off(pool, ss__now_ns());
        return;
    }
    t0 = ss__now_ns();
    rc = ss__seg_create(&r->seg, &sp);
    t1 = ss__now_ns();
    if (rc == 0 && r->seg.size != e) {
        /* the backing differed from the plan: settle the difference */
        if (r->seg.size > e) {
            int crc = charge(pool, (int64_t)(r->seg.size - e));

            if (crc < 0) {
                ss__seg_destroy(&r->seg);
                rc = crc;
                refused = true;
            }
        } else {
            uncharge(pool, e - r->seg.size);
        }
    }
    if (rc < 0) {
        uncharge(pool, e); /* all this call charged */
        free(r);
        pthread_mutex_lock(&pool->mu);
        pool->inflight_bytes -= e;
        if (refused) {
            pool->st.refused++;
            back_off(pool, t1);
        } else {
            create_failed(pool, cls, sp.size, rc, t1);
        }
        return;
    }

    /* the readers' fd, opened here rather than in a take on the loop; a
     * failure leaves it to the taker */
    r->fd_ro = ss__seg_reopen_ro(r->seg.fd);
    if (r->fd_ro < 0)
        r->fd_ro = -1;
    pthread_mutex_lock(&pool->mu);
    pool->inflight_bytes -= e;
    pool->st.bytes_populated += r->seg.size;
    pool->st.populate_ns += t1 - t0;
    pool->backoff_ns = BACKOFF_MIN_NS;
    pool->class_backoff[cls] = 0;
    if (pool->expect[cls] != r->seg.size) {
        pool->expect[cls] = r->seg.size;
        pool->targets_dirty = true;
    }
    if (pool->stop || gen != pool->pressure_gen ||
        pool->ready_bytes + pool->inflight_bytes + r->seg.size > pool->p.budget) {
        /* stopping, trimmed meanwhile, or the real size does not fit */
        pthread_mutex_unlock(&pool->mu);
        destroy_list(pool, r);
        pthread_mutex_lock(&pool->mu);
        return;
    }
    push(pool, bucket_at(pool, slot, cls), r);
    pthread_cond_broadcast(&pool->full_cv);
}

static void *populator_main(void *arg)
{
    ss__pool *pool = arg;

    pthread_mutex_lock(&pool->mu);
    while (!pool->stop) {
        uint64_t now = ss__now_ns();
        struct bucket *b;
        struct ready *victim;
        int slot = 0;
        unsigned cls = 0;

        if (now < pool->hold_until) {
            cond_wait_until(&pool->work_cv, &pool->mu, pool->hold_until);
            continue;
        }
        if (pool->targets_dirty)
            compute_targets(pool);
        b = pick_fill(pool, now, &slot, &cls);
        if (!b) {
            uint64_t wake = now + IDLE_WAIT_NS;

            /* nothing to fill; if classes are on backoff, wake when the
             * first one ends */
            for (unsigned i = 0; i < pool->n; i++)
                if (pool->class_hold_until[i] > now && pool->class_hold_until[i] < wake)
                    wake = pool->class_hold_until[i];
            pthread_cond_broadcast(&pool->full_cv);
            cond_wait_until(&pool->work_cv, &pool->mu, wake);
            continue;
        }
        if (pool->writers > 0 && b->count > 0 && now < pool->writer_since + WRITER_HOLD_NS) {
            /* a producer is copying: leave it the memory bandwidth while
             * the bucket can still serve the next take */
            pool->st.yields++;
            cond_wait_until(&pool->work_cv, &pool->mu, pool->writer_since + WRITER_HOLD_NS);
            continue;
        }
        if (pool->ready_bytes + pool->inflight_bytes + pool->expect[cls] > pool->p.budget) {
            victim = pick_evict(pool);
            if (!victim) {
                /* only possible while sizes are being re-learnt */
                cond_wait_until(&pool->work_cv, &pool->mu, now + IDLE_WAIT_NS);
                continue;
            }
            pool->st.evicted++;
            pthread_mutex_unlock(&pool->mu);
            destroy_list(pool, victim);
            pthread_mutex_lock(&pool->mu);
            continue;
        }
        fill_one(pool, slot, cls);
    }
    pthread_mutex_unlock(&pool->mu);
    return NULL;
}

/* ----------------------------------------------------------------- API */

/* Free a pool whose locks are initialised and whose thread is not running
 * (start's failure path, stop). */
static void pool_free(ss__pool *pool)
{
    free(pool->cand);
    free(pool->bk);
    pthread_cond_destroy(&pool->full_cv);
    pthread_cond_destroy(&pool->work_cv);
    pthread_mutex_destroy(&pool->mu);
    free(pool);
}

/* The lock and the two condition variables, whose timed waits run on
 * CLOCK_MONOTONIC (the clock of ss__now_ns()): 0, or -errno and nothing
 * left initialised. */
static int pool_sync_init(ss__pool *pool)
{
    pthread_condattr_t ca;
    int rc = -pthread_mutex_init(&pool->mu, NULL);

    if (rc < 0)
        return rc;
    rc = -pthread_condattr_init(&ca);
    if (rc < 0)
        goto no_attr;
    rc = -pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    if (rc == 0)
        rc = -pthread_cond_init(&pool->work_cv, &ca);
    if (rc == 0) {
        rc = -pthread_cond_init(&pool->full_cv, &ca);
        if (rc < 0)
            pthread_cond_destroy(&pool->work_cv);
    }
    pthread_condattr_destroy(&ca);
    if (rc == 0)
        return 0;
no_attr:
    pthread_mutex_destroy(&pool->mu);
    return rc;
}

int ss__pool_start(ss__pool **out, const ss__pool_params *p)
{
    sigset_t old;
    ss__pool *pool;
    unsigned nfit = 0;
    int slot, rc;

    if (!out || !p || p->classes.n > SS_MAX_CLASSES)
        return -EINVAL;
    for (unsigned i = 0; i < p->classes.n; i++)
        if (p->classes.v[i] == 0 || (i > 0 && p->classes.v[i] <= p->classes.v[i - 1]))
            return -EINVAL;
    pool = calloc(1, sizeof(*pool));
    if (!pool)
        return -ENOMEM;
    pool->p = *p;
    pool->n = p->classes.n;
    pool->backoff_ns = BACKOFF_MIN_NS;
    if (p->numa) {
        slot = node_slot(pool, p->node);
        if (slot < 0) {
            free(pool);
            return -EINVAL;
        }
    } else {
        slot = SLOT_ANY;
    }
    for (unsigned i = 0; i < pool->n; i++) {
        pool->expect[i] = planned_bytes(p->classes.v[i], p->hugepages);
        if (pool->expect[i] == 0) {
            free(pool);
            return -EINVAL; /* a class create would always reject */
        }
        if (pool->expect[i] <= p->budget)
            nfit++;
    }
    rc = pool_sync_init(pool);
    if (rc < 0) {
        free(pool);
        return rc;
    }

    if (p->budget > 0 && pool->n > 0) {
        pool->bk = calloc((size_t)POOL_SLOTS * pool->n, sizeof(*pool->bk));
        pool->cand = calloc((size_t)POOL_SLOTS * pool->n, sizeof(*pool->cand));
        if (!pool->bk || !pool->cand) {
            rc = -ENOMEM;
            goto fail;
        }
        /* prior: an equal share of the budget for every class that fits */
        pool->slot_active[slot] = true;
        for (unsigned i = 0; i < pool->n; i++) {
            if (pool->expect[i] > p->budget)
                continue;
            bucket_at(pool, slot, i)->demand = p->budget / nfit;
            pool->demand_total += p->budget / nfit;
        }
        pool->targets_dirty = true;
        /* the thread takes no signals: they belong to the store's loop */
        (void)ss__sys_block_signals(&old);
        rc = -pthread_create(&pool->thread, NULL, populator_main, pool);
        (void)ss__sys_sigmask(SIG_SETMASK, &old, NULL);
        if (rc < 0)
            goto fail;
        pthread_setname_np(pool->thread, "ss-populator");
        pool->running = true;
    }
    *out = pool;
    return 0;

fail:
    pool_free(pool);
    return rc;
}

void ss__pool_stop(ss__pool *pool)
{
    struct ready *all = NULL;

    if (!pool)
        return;
    pthread_mutex_lock(&pool->mu);
    pool->stop = true;
    pthread_cond_broadcast(&pool->work_cv);
    pthread_cond_broadcast(&pool->full_cv);
    pthread_mutex_unlock(&pool->mu);
    if (pool->running)
        pthread_join(pool->thread, NULL);

    pthread_mutex_lock(&pool->mu);
    if (pool->bk) {
        for (size_t k = 0; k < (size_t)POOL_SLOTS * pool->n; k++) {
            struct ready *r;

            while ((r = pop(pool, &pool->bk[k])) != NULL) {
                r->next = all;
                all = r;
            }
        }
    }
    pthread_mutex_unlock(&pool->mu);
    destroy_list(pool, all);
    pool_free(pool);
}

/* A miss: create and charge on the caller's thread (the store's loop),
 * lazily where that keeps the guarantees (ss__seg_params.lazy): zeroing a
 * cold 1 GiB segment there took ~40 ms on 2 MiB pages and ~0.5 s on 4K,
 * with every other client waiting; the creator's writes zero it instead. */
static int take_miss(ss__pool *pool, uint64_t size, int node, ss__seg *out)
{
    ss__seg_params sp = {
        .size = size,
        .hugepages = pool->p.hugepages,
        .kind = SS_SEG_OBJECT,
        .numa = pool->p.numa,
        .node = pool->p.numa ? node : SS_NODE_ANY,
        .lazy = true,
    };
    uint64_t want = planned_bytes(size, pool->p.hugepages), before;
    int rc;

    if (want == 0)
        return -EINVAL; /* create would reject it: charge nothing */
    rc = charge(pool, (int64_t)want);
    if (rc < 0)
        goto refused;
    rc = ss__seg_create(out, &sp);
    if (rc < 0) {
        uncharge(pool, want);
        return rc;
    }
    if (out->size > want) {
        rc = charge(pool, (int64_t)(out->size - want));
        if (rc < 0) {
            ss__seg_destroy(out);
            uncharge(pool, want);
            goto refused;
        }
    } else {
        uncharge(pool, want - out->size);
    }
    before = out->size;
    rc = ss__seg_fix_size(out, size);
    if (rc < 0) {
        ss__seg_destroy(out);
        uncharge(pool, before);
        return rc;
    }
    uncharge(pool, before - out->size);
    return 0;

refused:
    pthread_mutex_lock(&pool->mu);
    pool->st.refused++;
    pthread_mutex_unlock(&pool->mu);
    return rc;
}

/* A take; *fd_ro (when asked) the ready segment's read-only fd, -1 when
 * it has none (a miss, or the populator's reopen failed). */
static int pool_take(ss__pool *pool, uint64_t size, int node, ss__seg *out, int *fd_ro)
{
    struct ready *r = NULL;
    uint64_t before;
    bool wake = false;
    int slot, cls, rc;

    if (!pool || !out)
        return -EINVAL;
    out->fd = -1;
    out->size = 0;
    out->map = NULL;
    slot = node_slot(pool, node);
    cls = class_for(pool, size);

    pthread_mutex_lock(&pool->mu);
    if (pool->running && slot >= 0 && cls >= 0) {
        uint64_t rounded = SS_ALIGN_UP(size, 4096);
        unsigned j;

        for (j = (unsigned)cls; j < pool->n; j++) {
            /* the right class always serves; a larger one within STRETCH */
            if (j > (unsigned)cls && pool->expect[j] / STRETCH > rounded)
                break;
            r = pop(pool, bucket_at(pool, slot, j));
            if (r)
                break;
        }
        if (r && j > (unsigned)cls)
            pool->st.hits_larger++;
        /* a hit on the right class is plain demand; anything else says the
         * bucket was short */
        add_demand(pool, slot, (unsigned)cls, !r || j > (unsigned)cls);
        /* A hit that leaves its bucket a segment wakes nobody: the
         * populator would only yield to this writer until its
         * ss__pool_writer_done, which wakes it, and a wake-up here costs
         * the take an interprocessor interrupt (20-50 us on a VM). A
         * bucket left empty, a larger class or a miss wake it now. */
        wake = !r || j > (unsigned)cls || bucket_at(pool, slot, j)->count == 0;
    }
    if (r)
        pool->st.hits++;
    else
        pool->st.misses++;
    /* counted before the populator can wake, so it sees the writer */
    pool->writers++;
    pool->writer_since = ss__now_ns();
    pthread_mutex_unlock(&pool->mu);
    /* after the unlock, so the populator does not wake into a held mutex;
     * no wake-up is lost: it re-checks the state under the lock */
    if (wake)
        pthread_cond_signal(&pool->work_cv);

    if (!r) {
        rc = take_miss(pool, size, node, out);
    } else {
        before = r->seg.size;
        rc = ss__seg_fix_size(&r->seg, size);
        /* fix_size may have shrunk the file before failing */
        uncharge(pool, before - r->seg.size);
        if (rc < 0) {
            destroy_list(pool, r); /* frees r */
        } else {
            *out = r->seg;
            if (fd_ro)
                *fd_ro = r->fd_ro;
            else if (r->fd_ro >= 0)
                ss__sys_close(r->fd_ro);
            free(r);
        }
    }
    if (rc < 0)
        ss__pool_writer_done(pool); /* no writer after all */
    return rc;
}

int ss__pool_take(ss__pool *pool, uint64_t size, int node, ss__seg *out)
{
    return pool_take(pool, size, node, out, NULL);
}

int ss__pool_take_ro(ss__pool *pool, uint64_t size, int node, ss__seg *out, int *fd_ro)
{
    int rc;

    *fd_ro = -1;
    rc = pool_take(pool, size, node, out, fd_ro);
    if (rc == 0 && *fd_ro < 0)
        *fd_ro = ss__seg_reopen_ro(out->fd);
    return rc;
}

void ss__pool_writer_done(ss__pool *pool)
{
    bool wake;

    if (!pool)
        return;
    pthread_mutex_lock(&pool->mu);
    if (pool->writers > 0)
        pool->writers--;
    wake = pool->writers == 0;
    pthread_mutex_unlock(&pool->mu);
    if (wake)
        pthread_cond_signal(&pool->work_cv);
}

uint64_t ss__pool_trim(ss__pool *pool, uint64_t bytes)
{
    struct ready *list = NULL;
    uint64_t released = 0;

    if (!pool || bytes == 0)
        return 0;
    pthread_mutex_lock(&pool->mu);
    if (pool->bk) {
        /* largest class first: fewest segments to close for the bytes */
        for (unsigned i = pool->n; i-- > 0 && released < bytes;) {
            for (int s = 0; s < POOL_SLOTS && released < bytes; s++) {
                struct bucket *b = bucket_at(pool, s, i);
                struct ready *r;

                while (released < bytes && (r = pop(pool, b)) != NULL) {
                    released += r->seg.size;
                    r->next = list;
                    list = r;
                }
            }
        }
    }
    if (pool->running) {
        uint64_t until = ss__now_ns() + TRIM_HOLD_NS;

        pool->pressure_gen++;
        if (pool->hold_until < until)
            pool->hold_until = until;
    }
    pthread_mutex_unlock(&pool->mu);
    destroy_list(pool, list);
    return released;
}

void ss__pool_stats_get(ss__pool *pool, ss__pool_stats *out)
{
    if (!out)
        return;
    memset(out, 0, sizeof(*out));
    if (!pool)
        return;
    pthread_mutex_lock(&pool->mu);
    *out = pool->st;
    out->ready_bytes = pool->ready_bytes;
    out->ready_segments = pool->ready_segments;
    out->writers = pool->writers;
    pthread_mutex_unlock(&pool->mu);
}

int ss__pool_wait_full(ss__pool *pool, int timeout_ms)
{
    uint64_t deadline;
    int rc = 0;

    if (!pool)
        return -EINVAL;
    deadline = timeout_ms < 0 ? UINT64_MAX : ss__now_ns() + (uint64_t)timeout_ms * MS;
    pthread_mutex_lock(&pool->mu);
    while (!is_full(pool)) {
        if (pool->stop || ss__now_ns() >= deadline) {
            rc = -ETIMEDOUT;
            break;
        }
        if (deadline == UINT64_MAX)
            pthread_cond_wait(&pool->full_cv, &pool->mu);
        else
            cond_wait_until(&pool->full_cv, &pool->mu, deadline);
    }
    pthread_mutex_unlock(&pool->mu);
    return rc;
}

int ss__pool_validate(ss__pool *pool)
{
    uint64_t bytes = 0, segs = 0, planned = 0;
    int rc = 0;

    if (!pool)
        return -EINVAL;
    pthread_mutex_lock(&pool->mu);
    if (!pool->bk) {
        rc = pool->ready_bytes || pool->ready_segments || pool->running ? -SS_E_CORRUPT : 0;
        goto out;
    }
    for (int s = 0; s < POOL_SLOTS; s++) {
        for (unsigned i = 0; i < pool->n; i++) {
            struct bucket *b = bucket_at(pool, s, i);
            uint32_t len = 0;

            for (struct ready *r = b->head; r; r = r->next) {
                if (r->seg.fd < 0 || r->seg.size == 0 || r->seg.kind != SS_SEG_OBJECT ||
                    r->seg.size < pool->p.classes.v[i])
                    rc = -SS_E_CORRUPT;
                bytes += r->seg.size;
                len++;
            }
            if (len != b->count || (!pool->slot_active[s] && (len || b->demand)))
                rc = -SS_E_CORRUPT;
            segs += len;
            planned += (uint64_t)b->target * pool->expect[i];
        }
    }
    if (bytes != pool->ready_bytes || segs != pool->ready_segments ||
        pool->ready_bytes + pool->inflight_bytes > pool->p.budget ||
        (!pool->targets_dirty && planned > pool->p.budget))
        rc = -SS_E_CORRUPT;
out:
    pthread_mutex_unlock(&pool->mu);
    return rc;
}
