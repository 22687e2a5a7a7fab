/* SPDX-License-Identifier: MIT */
/*
 * The populator (src/lib/pool.c): ready object segments per (class, node),
 * hits and misses, trimming on take, charge accounting (every byte charged
 * is uncharged by the end), refusals and backoff, trim, stop while busy,
 * concurrent takes, yielding to a producer's copy, node buckets on a fake two-node topology, and 2 MiB
 * hugetlb segments.
 *
 * Hugepage case: as root the test raises the 2 MiB pool itself
 * (t_hugetlb_reserve, restored at exit). Otherwise provision first:
 *     echo 32 > /proc/sys/vm/nr_hugepages
 * It skips ("hugepages") when the kernel has no hugetlb memfds or the pool
 * cannot hold the pages.
 *
 * A start whose lock or condition variables cannot be set up (injected
 * failures of pthread_condattr_setclock and pthread_cond_init) fails
 * with that error and leaves nothing behind.
 *
 * Measured, not asserted (printed): the time of a hit take and the
 * populator's GB/s (bytes_populated / populate_ns) on 4K shmem and 2M.
 */
#include "config.h"

#include <dirent.h>
#include <dlfcn.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "t_helpers.h"

#include "numa.h"
#include "pool.h"
#include "segment.h"
#include "sys.h"

#define MiB (1024ull * 1024)
#define PAGE 4096ull

/* ------------------------------------------------------------ injection */

/* Failures to inject: setclock fails while fail_setclock; the cond_init
 * call that brings cond_init_fail_at to 0 fails (0: none). */
static _Atomic bool fail_setclock;
static _Atomic int cond_init_fail_at;

int pthread_condattr_setclock(pthread_condattr_t *a, clockid_t clk)
{
    static int (*real)(pthread_condattr_t *, clockid_t);

    if (atomic_load(&fail_setclock))
        return EINVAL;
    if (!real)
        real = (int (*)(pthread_condattr_t *, clockid_t))dlsym(RTLD_NEXT,
                                                                "pthread_condattr_setclock");
    return real(a, clk);
}

int pthread_cond_init(pthread_cond_t *cv, const pthread_condattr_t *a)
{
    static int (*real)(pthread_cond_t *, const pthread_condattr_t *);

    if (atomic_load(&cond_init_fail_at) > 0 && atomic_fetch_sub(&cond_init_fail_at, 1) == 1)
        return EAGAIN;
    if (!real)
        real = (int (*)(pthread_cond_t *, const pthread_condattr_t *))dlsym(
            RTLD_NEXT, "pthread_cond_init");
    return real(cv, a);
}

/* ------------------------------------------------------------ accounting */

/* The store's side of the charge callback: a running total that must end
 * at zero and never go negative. */
struct acct {
    _Atomic int64_t total;
    _Atomic int64_t uncharged; /* bytes given back, in total */
    _Atomic bool refuse;       /* refuse every positive charge */
    _Atomic long refusals;
    _Atomic bool negative;     /* the total went below zero once */
};

static int acct_charge(void *arg, int64_t delta)
{
    struct acct *a = arg;

    if (delta > 0 && atomic_load(&a->refuse)) {
        atomic_fetch_add(&a->refusals, 1);
        return -ENOSPC;
    }
    if (atomic_fetch_add(&a->total, delta) + delta < 0)
        atomic_store(&a->negative, true);
    if (delta < 0)
        atomic_fetch_add(&a->uncharged, -delta);
    return 0;
}

static ss__pool_params params(uint64_t budget, struct acct *a)
{
    ss__pool_params p = {
        .budget = budget,
        .classes = { .n = 3, .v = { 1 * MiB, 4 * MiB, 16 * MiB } },
        .hugepages = SS_HP_OFF,
        .numa = NULL,
        .charge = a ? acct_charge : NULL,
        .charge_arg = a,
        .node = SS_NODE_ANY,
    };
    return p;
}

static ss__pool *start(const ss__pool_params *p)
{
    ss__pool *pool = NULL;

    t_assert_ok(ss__pool_start(&pool, p));
    assert_non_null(pool);
    return pool;
}

/* What the store does with a segment it is done with. */
static void release(struct acct *a, ss__seg *seg)
{
    int64_t bytes = (int64_t)seg->size;

    ss__seg_destroy(seg);
    if (a)
        acct_charge(a, -bytes);
}


static ss__pool_stats stats(ss__pool *pool)
{
    ss__pool_stats st;

    /* every look at the pool also checks its invariants */
    t_assert_ok(ss__pool_validate(pool));
    ss__pool_stats_get(pool, &st);
    return st;
}

/* Resident pages of the whole file, through a read-only shared mapping
 * (mincore on a shmem mapping reports the file's page cache). */
static uint64_t resident_pages(int fd, uint64_t size)
{
    size_t pages = (size_t)(size / PAGE);
    unsigned char *vec = malloc(pages ? pages : 1);
    uint64_t n = 0;
    void *m;

    assert_non_null(vec);
    m = mmap(NULL, (size_t)size, PROT_READ, MAP_SHARED, fd, 0);
    assert_true(m != MAP_FAILED);
    assert_int_equal(mincore(m, (size_t)size, vec), 0);
    for (size_t i = 0; i < pages; i++)
        n += vec[i] & 1;
    munmap(m, (size_t)size);
    free(vec);
    return n;
}

/* A taken object segment: sized, size-sealed (not write-sealed), 0400;
 * a hit fully populated, a miss (lazy on 4K and unbound hugetlb) with no
 * page yet. */
static void check_object_as(const ss__seg *seg, uint64_t size, uint64_t page, bool hit)
{
    uint64_t want = SS_ALIGN_UP(size, page);
    struct stat sb;
    int seals;

    if (want == 0)
        want = page;
    assert_true(seg->fd >= 0);
    assert_int_equal(seg->kind, SS_SEG_OBJECT);
    assert_int_equal(seg->page_size, page);
    assert_int_equal(seg->size, want);
    assert_int_equal(fstat(seg->fd, &sb), 0);
    assert_int_equal((uint64_t)sb.st_size, want);
    assert_int_equal(sb.st_mode & 07777, 0400);
    seals = ss__seg_get_seals(seg->fd);
    t_assert_ok(seals);
    assert_int_equal(seals & SS_SEALS_SIZE, SS_SEALS_SIZE);
    assert_int_equal(seals & (F_SEAL_WRITE | F_SEAL_SEAL), 0);
    if (page == PAGE)
        assert_int_equal(resident_pages(seg->fd, seg->size), hit ? seg->size / PAGE : 0);
    else /* hugetlb: mincore sees only this process's page tables, but the
          * file's block count is its allocated huge pages */
        assert_int_equal((uint64_t)sb.st_blocks * 512, hit ? want : 0);
}

static void check_object(const ss__seg *seg, uint64_t size, uint64_t page)
{
    check_object_as(seg, size, page, true);
}

static void check_miss(const ss__seg *seg, uint64_t size, uint64_t page)
{
    check_object_as(seg, size, page, false);
}

static void finish(ss__pool *pool, struct acct *a)
{
    ss__pool_stop(pool);
    assert_int_equal(atomic_load(&a->total), 0);
    assert_false(atomic_load(&a->negative));
}

static int cmp_u64(const void *x, const void *y)
{
    uint64_t a = *(const uint64_t *)x, b = *(const uint64_t *)y;

    return (a > b) - (a < b);
}

/* ---------------------------------------------------------------- cases */

static void test_start_invalid(void **state)
{
    ss__pool_params p = params(64 * MiB, NULL);
    ss__pool *pool = NULL;

    p.classes.v[1] = 1 * MiB; /* not ascending */
    t_assert_err(ss__pool_start(&pool, &p), -EINVAL);
    p = params(64 * MiB, NULL);
    p.classes.v[0] = 0;
    t_assert_err(ss__pool_start(&pool, &p), -EINVAL);
    t_assert_err(ss__pool_start(NULL, &p), -EINVAL);
    assert_null(pool);
    ss__pool_stop(NULL); /* no-op */
}

static void test_start_sync_failure(void **state)
{
    ss__pool_params p = params(64 * MiB, NULL);
    ss__pool *pool = NULL;

    /* timed waits on another clock would be wrong: no pool */
    atomic_store(&fail_setclock, true);
    t_assert_err(ss__pool_start(&pool, &p), -EINVAL);
    atomic_store(&fail_setclock, false);
    assert_null(pool);
    for (int at = 1; at <= 2; at++) { /* the first, then the second cond */
        atomic_store(&cond_init_fail_at, at);
        t_assert_err(ss__pool_start(&pool, &p), -EAGAIN);
        assert_int_equal(atomic_load(&cond_init_fail_at), 0);
        assert_null(pool);
    }
    pool = start(&p); /* and a start after them works */
    ss__pool_stop(pool);
}

static void test_hit_is_trimmed_sealed_populated(void **state)
{
    struct acct a = { 0 };
    ss__pool_params p = params(64 * MiB, &a);
    ss__pool *pool = start(&p);
    ss__pool_stats st;
    ss__seg seg, seg0;

    t_assert_ok(ss__pool_wait_full(pool, 20000));
    st = stats(pool);
    assert_true(st.ready_segments > 0);
    assert_true(st.ready_bytes > 0 && st.ready_bytes <= p.budget);
    assert_int_equal(st.hits + st.misses, 0);
    /* the pool is full and idle: everything charged is what is ready */
    assert_int_equal((uint64_t)atomic_load(&a.total), st.ready_bytes);

    t_assert_ok(ss__pool_take(pool, 3 * MiB, SS_NODE_ANY, &seg));
    st = stats(pool);
    assert_int_equal(st.hits, 1);
    assert_int_equal(st.misses, 0);
    assert_int_equal(seg.backing, SS_BACKING_4K);
    check_object(&seg, 3 * MiB, PAGE);

    /* not page-aligned, and size 0 (one page) */
    t_assert_ok(ss__pool_take(pool, 3 * MiB + 5, SS_NODE_ANY, &seg0));
    check_object(&seg0, 3 * MiB + 5, PAGE);
    release(&a, &seg0);
    t_assert_ok(ss__pool_take(pool, 0, SS_NODE_ANY, &seg0));
    check_object(&seg0, 0, PAGE);
    assert_int_equal(stats(pool).hits, 3);

    ss__pool_stop(pool);
    /* the caller holds exactly what it took */
    assert_int_equal((uint64_t)atomic_load(&a.total), seg.size + seg0.size);
    release(&a, &seg);
    release(&a, &seg0);
    assert_int_equal(atomic_load(&a.total), 0);
    assert_false(atomic_load(&a.negative));
}

static void test_refills_after_take(void **state)
{
    struct acct a = { 0 };
    ss__pool_params p = params(64 * MiB, &a);
    ss__pool *pool = start(&p);
    ss__pool_stats before, after;
    ss__seg seg[3];

    t_assert_ok(ss__pool_wait_full(pool, 20000));
    before = stats(pool);
    for (int i = 0; i < 3; i++)
        t_assert_ok(ss__pool_take(pool, 3 * MiB, SS_NODE_ANY, &seg[i]));
    t_assert_ok(ss__pool_wait_full(pool, 20000));
    after = stats(pool);
    /* at least the three 4M segments were made again */
    assert_true(after.bytes_populated >= before.bytes_populated + 12 * MiB);
    assert_true(after.populate_ns > before.populate_ns);
    assert_true(after.ready_bytes <= p.budget);
    for (int i = 0; i < 3; i++)
        release(&a, &seg[i]);
    t_assert_ok(ss__pool_take(pool, 3 * MiB, SS_NODE_ANY, &seg[0]));
    assert_int_equal(stats(pool).hits, 4);
    release(&a, &seg[0]);
    finish(pool, &a);
}

/* While a producer writes into a segment it took, the populator leaves a
 * bucket that can still serve alone (zeroing would share the memory
 * bandwidth of the producer's copy), refills it once the writer is done,
 * and refills an empty bucket even while a writer is active. */
/* A pool of one 4 MiB class and room for two, full. */
static ss__pool *start_two(struct acct *a)
{
    ss__pool_params p = params(8 * MiB, a);
    ss__pool *pool;

    p.classes.n = 1;
    p.classes.v[0] = 4 * MiB;
    pool = start(&p);
    t_assert_ok(ss__pool_wait_full(pool, 20000));
    assert_int_equal(stats(pool).ready_segments, 2);
    return pool;
}

static void test_yields_to_writer(void **state)
{
    struct acct a = { 0 };
    ss__pool *pool = start_two(&a);
    ss__pool_stats st;
    ss__seg seg[2];
    uint64_t t_take;

    (void)state;

    /* a hit that leaves its bucket a segment wakes nobody, and nothing is
     * refilled while its writer copies (the hold lasts 250 ms after the
     * take: unless this thread was descheduled that long) */
    t_assert_ok(ss__pool_take(pool, 4 * MiB, SS_NODE_ANY, &seg[0]));
    t_take = ss__now_ns();
    t_sleep_ms(50);
    if (ss__now_ns() - t_take < 200 * 1000000ull)
        assert_int_equal(stats(pool).ready_segments, 1);

    /* a second writer empties the bucket: the populator wakes, refills it
     * to one at once, then yields to the writers */
    t_assert_ok(ss__pool_take(pool, 4 * MiB, SS_NODE_ANY, &seg[1]));
    t_take = ss__now_ns();
    for (int i = 0; i < 20000 && stats(pool).yields == 0; i++)
        t_sleep_ms(1);
    st = stats(pool);
    assert_true(st.yields > 0);
    assert_true(st.ready_segments >= 1);
    if (ss__now_ns() - t_take < 200 * 1000000ull)
        assert_int_equal(st.ready_segments, 1);

    /* the last writer done wakes it: full again */
    ss__pool_writer_done(pool);
    ss__pool_writer_done(pool);
    /* one extra call is harmless (the count never goes below zero) */
    ss__pool_writer_done(pool);
    ss__pool_writer_done(NULL);
    t_assert_ok(ss__pool_wait_full(pool, 20000));
    assert_int_equal(stats(pool).ready_segments, 2);
    for (int i = 0; i < 2; i++)
        release(&a, &seg[i]);
    finish(pool, &a);
}

/* Open fds of this process. */
static int open_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    int n = 0;

    assert_non_null(d);
    while (readdir(d))
        n++;
    closedir(d);
    return n;
}

/* ro is a read-only fd of seg's file: no write through it, no writable
 * map of it. */
static void check_ro(const ss__seg *seg, int ro)
{
    struct stat st_rw, st_ro;

    assert_true(ro >= 0);
    assert_int_equal(fcntl(ro, F_GETFL) & O_ACCMODE, O_RDONLY);
    assert_int_equal(fstat(seg->fd, &st_rw), 0);
    assert_int_equal(fstat(ro, &st_ro), 0);
    assert_true(st_rw.st_ino == st_ro.st_ino && st_rw.st_dev == st_ro.st_dev);
    assert_int_equal(st_ro.st_size, seg->size); /* trimmed: one file */
    assert_int_equal(write(ro, "x", 1), -1);
    assert_true(mmap(NULL, seg->size, PROT_READ | PROT_WRITE, MAP_SHARED, ro, 0) == MAP_FAILED);
}

/* A hit hands over the readers' fd the populator opened, a miss one opened
 * then; a plain take closes the ready one; ready segments' fds close with
 * the pool. */
static void test_take_ro(void **state)
{
    struct acct a = { 0 };
    int fds0 = open_fds(), ro = 7, miss_ro = 7;
    ss__pool *pool = start_two(&a);
    ss__seg seg, miss, plain;

    (void)state;
    /* two segments, each with its fd and its readers' fd */
    assert_int_equal(open_fds(), fds0 + 4);

    t_assert_ok(ss__pool_take_ro(pool, 3 * MiB, SS_NODE_ANY, &seg, &ro));
    check_ro(&seg, ro);
    /* moved to us, none opened (counted before the writer is done, which
     * lets the populator refill) */
    assert_int_equal(open_fds(), fds0 + 4);
    ss__pool_writer_done(pool);

    /* above the largest class: a miss, its readers' fd opened now */
    t_assert_ok(ss__pool_take_ro(pool, 20 * MiB, SS_NODE_ANY, &miss, &miss_ro));
    check_ro(&miss, miss_ro);
    ss__pool_writer_done(pool);
    assert_int_equal(close(miss_ro), 0);
    release(&a, &miss);

    /* a plain take keeps only the segment's own fd */
    t_assert_ok(ss__pool_wait_full(pool, 20000));
    int fds1 = open_fds();
    t_assert_ok(ss__pool_take(pool, 3 * MiB, SS_NODE_ANY, &plain));
    assert_int_equal(open_fds(), fds1 - 1);
    ss__pool_writer_done(pool);
    release(&a, &plain);

    release(&a, &seg);
    finish(pool, &a);
    /* the ready segments' fds closed with the pool; the hit's is ours */
    assert_int_equal(open_fds(), fds0 + 1);
    assert_int_equal(close(ro), 0);
    assert_int_equal(open_fds(), fds0);
}

static void test_miss_above_largest_class(void **state)
{
    struct acct a = { 0 };
    ss__pool_params p = params(64 * MiB, &a);
    ss__pool *pool = start(&p);
    ss__seg seg;

    t_assert_ok(ss__pool_wait_full(pool, 20000));
    t_assert_ok(ss__pool_take(pool, 20 * MiB + 1, SS_NODE_ANY, &seg));
    assert_int_equal(stats(pool).misses, 1);
    assert_int_equal(stats(pool).hits, 0);
    check_miss(&seg, 20 * MiB + 1, PAGE);
    release(&a, &seg);
    /* absurd sizes fail cleanly and charge nothing */
    assert_true(ss__pool_take(pool, UINT64_MAX, SS_NODE_ANY, &seg) < 0);
    assert_true(ss__pool_take(pool, 1ull << 50, SS_NODE_ANY, &seg) < 0);
    finish(pool, &a);
}

static void test_budget_zero(void **state)
{
    struct acct a = { 0 };
    ss__pool_params p = params(0, &a);
    ss__pool *pool = start(&p);
    uint64_t sizes[] = { 0, 1, 1 * MiB, 3 * MiB, 20 * MiB };
    ss__seg seg;

    t_assert_ok(ss__pool_wait_full(pool, 0));
    for (size_t i = 0; i < SS_ARRAY_SIZE(sizes); i++) {
        t_assert_ok(ss__pool_take(pool, sizes[i], SS_NODE_ANY, &seg));
        check_miss(&seg, sizes[i], PAGE);
        assert_int_equal((uint64_t)atomic_load(&a.total), seg.size);
        release(&a, &seg);
    }
    assert_int_equal(stats(pool).misses, SS_ARRAY_SIZE(sizes));
    assert_int_equal(stats(pool).hits, 0);
    assert_int_equal(stats(pool).bytes_populated, 0);
    assert_int_equal(ss__pool_trim(pool, UINT64_MAX), 0);
    finish(pool, &a);

    /* no classes at all: the same */
    p = params(64 * MiB, NULL);
    p.classes.n = 0;
    pool = start(&p);
    t_assert_ok(ss__pool_take(pool, 1 * MiB, SS_NODE_ANY, &seg));
    check_miss(&seg, 1 * MiB, PAGE);
    release(NULL, &seg);
    ss__pool_stop(pool);
}

static void test_refusal_backs_off(void **state)
{
    struct acct a = { 0 };
    ss__pool_params p = params(64 * MiB, &a);
    ss__pool *pool;
    ss__pool_stats st;
    ss__seg seg;

    atomic_store(&a.refuse, true);
    pool = start(&p);
    t_assert_err(ss__pool_wait_full(pool, 300), -ETIMEDOUT);
    st = stats(pool);
    assert_int_equal(st.ready_segments, 0);
    assert_int_equal(st.ready_bytes, 0);
    assert_int_equal(st.bytes_populated, 0);
    assert_true(st.refused > 0);
    /* backoff, not a busy loop: 300 ms at >= 10 ms doubling is a handful
     * of tries (a spinning thread would make thousands) */
    assert_true(atomic_load(&a.refusals) < 100);
    t_assert_err(ss__pool_take(pool, 1 * MiB, SS_NODE_ANY, &seg), -ENOSPC);
    t_assert_err(ss__pool_take(pool, 20 * MiB, SS_NODE_ANY, &seg), -ENOSPC);
    assert_int_equal(stats(pool).misses, 2);
    assert_true(seg.fd < 0);
    assert_int_equal(atomic_load(&a.total), 0);

    /* capacity comes back: the pool fills */
    atomic_store(&a.refuse, false);
    t_assert_ok(ss__pool_wait_full(pool, 20000));
    assert_true(stats(pool).ready_segments > 0);
    finish(pool, &a);
}

static void test_trim(void **state)
{
    struct acct a = { 0 };
    ss__pool_params p = params(64 * MiB, &a);
    ss__pool *pool = start(&p);
    ss__pool_stats st;
    int64_t unch;
    uint64_t got;

    t_assert_ok(ss__pool_wait_full(pool, 20000));
    st = stats(pool);
    unch = atomic_load(&a.uncharged);
    got = ss__pool_trim(pool, 20 * MiB);
    assert_true(got >= 20 * MiB);
    /* largest first: one 16M and then more; never more than one segment
     * past the request */
    assert_true(got < 20 * MiB + 16 * MiB);
    assert_true(atomic_load(&a.uncharged) - unch >= (int64_t)got);
    assert_true(got <= st.ready_bytes);

    unch = atomic_load(&a.uncharged);
    got = ss__pool_trim(pool, UINT64_MAX);
    assert_true(atomic_load(&a.uncharged) - unch >= (int64_t)got);
    assert_int_equal(ss__pool_trim(pool, 0), 0);
    /* the pool refills once the pressure hold is over */
    t_assert_ok(ss__pool_wait_full(pool, 20000));
    assert_true(stats(pool).ready_segments > 0);
    finish(pool, &a);
}

static void test_stop_while_populating(void **state)
{
    static const int delay_us[] = { 0, 1000, 10000 };
    int fds = t_count_fds();

    for (size_t i = 0; i < SS_ARRAY_SIZE(delay_us); i++) {
        struct acct a = { 0 };
        ss__pool_params p = params(192 * MiB, &a);
        ss__pool *pool = start(&p);
        uint64_t t0;

        if (delay_us[i])
            usleep((useconds_t)delay_us[i]);
        t0 = ss__now_ns();
        ss__pool_stop(pool);
        print_message("stop after %d us: %.2f ms\n", delay_us[i],
                      (double)(ss__now_ns() - t0) / 1e6);
        assert_int_equal(atomic_load(&a.total), 0);
        assert_false(atomic_load(&a.negative));
        assert_int_equal(t_count_fds(), fds);
    }
}

struct worker {
    ss__pool *pool;
    struct acct *a;
    unsigned seed;
    int takes, errors;
};

static void *worker_main(void *arg)
{
    static const uint64_t sizes[] = { 64 * 1024, 900 * 1024, 1 * MiB, 3 * MiB,
                                      4 * MiB, 9 * MiB, 20 * MiB };
    struct worker *w = arg;

    for (int i = 0; i < w->takes; i++) {
        uint64_t size = sizes[rand_r(&w->seed) % SS_ARRAY_SIZE(sizes)];
        ss__seg seg;
        int rc = ss__pool_take(w->pool, size, SS_NODE_ANY, &seg);

        if (rc < 0 || seg.size != SS_ALIGN_UP(size, PAGE) ||
            ss__seg_get_seals(seg.fd) < 0) {
            w->errors++;
            continue;
        }
        release(w->a, &seg);
    }
    return NULL;
}

static void test_concurrent_takes(void **state)
{
    struct acct a = { 0 };
    ss__pool_params p = params(64 * MiB, &a);
    struct worker w[2];
    pthread_t th[2];
    ss__pool *pool;
    ss__pool_stats st;
    int fds = t_count_fds();

    pool = start(&p);
    for (int i = 0; i < 2; i++) {
        w[i] = (struct worker){ .pool = pool, .a = &a, .seed = 7u + (unsigned)i, .takes = 60 };
        assert_int_equal(pthread_create(&th[i], NULL, worker_main, &w[i]), 0);
    }
    for (int i = 0; i < 5; i++) {
        usleep(5000);
        (void)ss__pool_trim(pool, 8 * MiB);
        t_assert_ok(ss__pool_validate(pool));
    }
    for (int i = 0; i < 2; i++) {
        assert_int_equal(pthread_join(th[i], NULL), 0);
        assert_int_equal(w[i].errors, 0);
    }
    st = stats(pool);
    assert_int_equal(st.hits + st.misses, 120);
    finish(pool, &a);
    assert_int_equal(t_count_fds(), fds);
}

/* When the right class is empty, a larger class within 4x serves (trimmed);
 * beyond that the take misses. The populator is kept from refilling by
 * refusing its charges (a hit charges nothing new). */
static void test_larger_class_serves(void **state)
{
    struct acct a = { 0 };
    ss__pool_params p = params(16 * MiB, &a);
    ss__pool *pool;
    ss__pool_stats st;
    ss__seg seg;
    int rc, hits = 0;

    p.classes = (ss__sizelist){ .n = 3, .v = { 1 * MiB, 2 * MiB, 4 * MiB } };
    pool = start(&p);
    t_assert_ok(ss__pool_wait_full(pool, 20000));
    st = stats(pool);
    atomic_store(&a.refuse, true);
    for (;;) {
        rc = ss__pool_take(pool, 1 * MiB, SS_NODE_ANY, &seg);
        if (rc < 0)
            break;
        check_object(&seg, 1 * MiB, PAGE);
        release(&a, &seg);
        hits++;
        assert_true(hits <= 16);
    }
    t_assert_err(rc, -ENOSPC); /* a miss, refused */
    st = stats(pool);
    assert_int_equal(st.hits, (uint64_t)hits);
    assert_true(st.hits_larger > 0);
    assert_int_equal(st.misses, 1);
    /* 1M took every 1M, 2M and 4M segment (4M is within 4x of 1M) */
    assert_int_equal(st.ready_bytes, 0);
    atomic_store(&a.refuse, false);
    finish(pool, &a);
}

/* Node buckets, on a fake two-node topology (binding does nothing there,
 * the decisions are what is tested). */
static void test_node_buckets(void **state)
{
    struct acct a = { 0 };
    ss__pool_params p = params(32 * MiB, &a);
    ss__numa *numa = NULL;
    ss__pool *pool;
    ss__seg seg;
    int rc;

    t_assert_ok(ss__numa_open_synthetic(&numa, "pack:2 [numa] core:1 pu:1"));
    assert_int_equal(ss__numa_nodes(numa), 2);
    p.numa = numa;
    p.node = 0;
    p.classes = (ss__sizelist){ .n = 2, .v = { 1 * MiB, 4 * MiB } };
    pool = start(&p);
    t_assert_ok(ss__pool_wait_full(pool, 20000));

    t_assert_ok(ss__pool_take(pool, 1 * MiB, 0, &seg));
    assert_int_equal(seg.node, 0);
    assert_int_equal(stats(pool).hits, 1);
    release(&a, &seg);

    /* node 1 has no bucket yet: a miss, which registers it */
    t_assert_ok(ss__pool_take(pool, 1 * MiB, 1, &seg));
    assert_int_equal(seg.node, 1);
    assert_int_equal(stats(pool).misses, 1);
    release(&a, &seg);
    t_assert_ok(ss__pool_wait_full(pool, 20000));
    t_assert_ok(ss__pool_take(pool, 1 * MiB, 1, &seg));
    assert_int_equal(seg.node, 1);
    assert_int_equal(stats(pool).hits, 2);
    release(&a, &seg);

    /* interleave is a bucket of its own */
    t_assert_ok(ss__pool_take(pool, 1 * MiB, SS_NODE_INTERLEAVE, &seg));
    assert_int_equal(seg.node, SS_NODE_INTERLEAVE);
    assert_int_equal(stats(pool).misses, 2);
    release(&a, &seg);
    t_assert_ok(ss__pool_wait_full(pool, 20000));
    t_assert_ok(ss__pool_take(pool, 1 * MiB, SS_NODE_INTERLEAVE, &seg));
    assert_int_equal(seg.node, SS_NODE_INTERLEAVE);
    assert_int_equal(stats(pool).hits, 3);
    release(&a, &seg);

    /* a node that does not exist: no bucket, the create rejects it */
    rc = ss__pool_take(pool, 1 * MiB, 7, &seg);
    assert_true(rc < 0);
    finish(pool, &a);

    /* without a numa handle every node shares the ANY bucket */
    p = params(32 * MiB, &a);
    p.node = 5;
    pool = start(&p);
    t_assert_ok(ss__pool_wait_full(pool, 20000));
    t_assert_ok(ss__pool_take(pool, 1 * MiB, 1, &seg));
    assert_int_equal(stats(pool).hits, 1);
    assert_int_equal(seg.node, SS_NODE_ANY);
    release(&a, &seg);
    finish(pool, &a);

    /* a start node the topology lacks */
    p.numa = numa;
    p.node = 9;
    pool = NULL;
    t_assert_err(ss__pool_start(&pool, &p), -EINVAL);
    ss__numa_close(numa);
}

static bool no_hugetlb;
static char no_hugetlb_why[160];

static void test_hugetlb_2m(void **state)
{
    struct acct a = { 0 };
    ss__pool_params p = params(16 * MiB, &a);
    const long need = 16 / 2 + 2 + 5; /* the pool, slack for a refill, a 10M miss */
    ss__pool *pool;
    ss__pool_stats st;
    ss__seg seg;
    long got;
    int rc;

    T_SKIP_IF(no_hugetlb, "hugepages", no_hugetlb_why);
    got = t_hugetlb_reserve(2 * MiB, need);
    T_SKIP_IF(got < need, "hugepages",
              "cannot reserve 2 MiB hugepages: raise vm.nr_hugepages");
    p.hugepages = SS_HP_2M;
    p.classes = (ss__sizelist){ .n = 3, .v = { 2 * MiB, 4 * MiB, 8 * MiB } };
    pool = start(&p);
    rc = ss__pool_wait_full(pool, 20000);
    if (rc == -ETIMEDOUT && stats(pool).failed > 0 && t_hugetlb_free(2 * MiB) < need) {
        finish(pool, &a);
        T_SKIP_IF(true, "hugepages", "another test shrank the 2 MiB pool meanwhile");
    }
    t_assert_ok(rc);
    st = stats(pool);
    print_message("populator, hugetlb 2M: %.2f GB/s (%llu bytes)\n",
                  st.populate_ns ? (double)st.bytes_populated / (double)st.populate_ns : 0.0,
                  (unsigned long long)st.bytes_populated);
    t_assert_ok(ss__pool_take(pool, 3 * MiB, SS_NODE_ANY, &seg));
    assert_int_equal(stats(pool).hits, 1);
    assert_int_equal(seg.backing, SS_BACKING_2M);
    check_object(&seg, 3 * MiB, 2 * MiB); /* 4M: two huge pages */
    release(&a, &seg);

    /* a miss (above the largest class) is lazy but reserved: the pages are
     * held for it (no later fault can fail), none is allocated yet, and
     * the creator's writes get them */
    {
        long resv0;
        unsigned char *m;

        /* the populator refilling after the hit reserves and faults pages
         * of its own: let it finish so resv_hugepages moves for us alone */
        t_assert_ok(ss__pool_wait_full(pool, 20000));
        resv0 = t_hugetlb_resv(2 * MiB);

        t_assert_ok(ss__pool_take(pool, 10 * MiB, SS_NODE_ANY, &seg));
        assert_int_equal(seg.backing, SS_BACKING_2M);
        check_miss(&seg, 10 * MiB, 2 * MiB);
        assert_true(t_hugetlb_resv(2 * MiB) >= resv0 + 5);
        m = mmap(NULL, seg.size, PROT_READ | PROT_WRITE, MAP_SHARED, seg.fd, 0);
        if (m == MAP_FAILED) { /* 0400 is checked on open, not here: reopen */
            int rw = ss__sys_reopen(seg.fd, O_RDWR);
            t_assert_ok(rw);
            m = mmap(NULL, seg.size, PROT_READ | PROT_WRITE, MAP_SHARED, rw, 0);
            close(rw);
        }
        assert_true(m != MAP_FAILED);
        memset(m, 0x5a, seg.size);
        munmap(m, seg.size);
        check_object(&seg, 10 * MiB, 2 * MiB);
        release(&a, &seg);
    }
    finish(pool, &a);

    /* again on pool pages already touched once (the first use of a fresh
     * hugetlb pool can be host-cold on a VM) */
    pool = start(&p);
    rc = ss__pool_wait_full(pool, 20000);
    st = stats(pool);
    if (rc == 0)
        print_message("populator, hugetlb 2M, warm pool: %.2f GB/s\n",
                      st.populate_ns ? (double)st.bytes_populated / (double)st.populate_ns : 0.0);
    finish(pool, &a);
}

/* Report only: hit take time and the populator's throughput on 4K shmem. */
static void test_measure(void **state)
{
    struct acct a = { 0 };
    ss__pool_params p = params(64 * MiB, &a);
    ss__pool *pool = start(&p);
    uint64_t exact[8], trimmed[4];
    ss__pool_stats st;
    ss__seg seg;

    t_assert_ok(ss__pool_wait_full(pool, 20000));
    for (size_t i = 0; i < SS_ARRAY_SIZE(exact); i++) {
        uint64_t t0 = ss__now_ns();

        t_assert_ok(ss__pool_take(pool, 1 * MiB, SS_NODE_ANY, &seg));
        exact[i] = ss__now_ns() - t0;
        release(&a, &seg);
    }
    t_assert_ok(ss__pool_wait_full(pool, 20000));
    for (size_t i = 0; i < SS_ARRAY_SIZE(trimmed); i++) {
        uint64_t t0 = ss__now_ns();

        t_assert_ok(ss__pool_take(pool, 3 * MiB, SS_NODE_ANY, &seg));
        trimmed[i] = ss__now_ns() - t0;
        release(&a, &seg);
    }
    st = stats(pool);
    qsort(exact, SS_ARRAY_SIZE(exact), sizeof(exact[0]), cmp_u64);
    qsort(trimmed, SS_ARRAY_SIZE(trimmed), sizeof(trimmed[0]), cmp_u64);
    print_message("hit take 1M (no trim): median %.1f us; 3M from 4M (trim 1M): "
                  "median %.1f us; hits %llu misses %llu\n",
                  (double)exact[SS_ARRAY_SIZE(exact) / 2] / 1e3,
                  (double)trimmed[SS_ARRAY_SIZE(trimmed) / 2] / 1e3,
                  (unsigned long long)st.hits, (unsigned long long)st.misses);
    print_message("populator, 4K shmem: %.2f GB/s (%llu bytes in %.1f ms)\n",
                  st.populate_ns ? (double)st.bytes_populated / (double)st.populate_ns : 0.0,
                  (unsigned long long)st.bytes_populated, (double)st.populate_ns / 1e6);
    finish(pool, &a);
}

int main(void)
{
    const struct CMUnitTest group[] = {
        cmocka_unit_test(test_start_invalid),
        cmocka_unit_test(test_start_sync_failure),
        cmocka_unit_test(test_hit_is_trimmed_sealed_populated),
        cmocka_unit_test(test_refills_after_take),
        cmocka_unit_test(test_yields_to_writer),
        cmocka_unit_test(test_take_ro),
        cmocka_unit_test(test_miss_above_largest_class),
        cmocka_unit_test(test_budget_zero),
        cmocka_unit_test(test_refusal_backs_off),
        cmocka_unit_test(test_trim),
        cmocka_unit_test(test_stop_while_populating),
        cmocka_unit_test(test_concurrent_takes),
        cmocka_unit_test(test_larger_class_serves),
        cmocka_unit_test(test_node_buckets),
        cmocka_unit_test(test_hugetlb_2m),
        cmocka_unit_test(test_measure),
    };
    /* no 2 MiB hugetlb memfds in this kernel: the hugetlb case skips */
    no_hugetlb = !t_hugetlb_kernel(no_hugetlb_why, sizeof(no_hugetlb_why));
    return t_run(group, NULL, NULL);
}
