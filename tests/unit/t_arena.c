/* SPDX-License-Identifier: MIT */
/*
 * Write-once arenas (src/lib/arena.h). White-box: mutations are followed by
 * ss__arena_validate(), which walks every invariant.
 *
 * Real arenas are small (4-8 MiB) and on 4K shmem unless a case needs
 * hugepages (reserved as root, else skipped: "raise vm.nr_hugepages"). The
 * mixed workload runs on bookkeeping-only arenas (every decision the same,
 * no memory), so it can hold gigabytes of objects. Random sequences use a
 * fixed seed, printed; SS_TEST_SEED=<n> replays another one.
 */
#include "config.h"

#include "../t_helpers.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "arena.h"
#include "numa.h"
#include "options.h"
#include "segment.h"

#define HUGE_2M (2 * SS_MiB)

static uint64_t seed = 0xa7e4a5eedull;

/* log-uniform on [lo, hi] */
static uint64_t rnd_log(uint64_t lo, uint64_t hi)
{
    return (uint64_t)floor(exp(log((double)lo) + t_rnd01() * (log((double)hi) - log((double)lo))));
}

static ss__arenas *mk(t_budget *b, int64_t limit, uint64_t arena_size, int hugepages,
                      bool bookkeeping)
{
    ss__arenas *a = NULL;
    ss__arena_params p = { .arena_size = arena_size, .hugepages = hugepages,
                           .charge = t_budget_charge, .charge_arg = b,
                           .bookkeeping_only = bookkeeping };
    memset(b, 0, sizeof(*b));
    b->limit = limit;
    t_assert_ok(ss__arenas_create(&a, &p));
    t_assert_ok(ss__arena_validate(a));
    return a;
}

static ss__arena_stats stats(const ss__arenas *a)
{
    ss__arena_stats st;
    ss__arena_stats_get(a, &st);
    return st;
}

/* Write through /proc/self/mem, as root could into the store: refused for
 * a read-only shared mapping (outside a window). */
static bool pokeable(void *addr)
{
    int fd = open("/proc/self/mem", O_RDWR | O_CLOEXEC);
    uint8_t v = *(volatile uint8_t *)addr;
    assert_true(fd >= 0);
    ssize_t n = pwrite(fd, &v, 1, (off_t)(uintptr_t)addr);
    close(fd);
    return n == 1;
}

/* Fill a live object through a window (pattern seeded by its offset). */
static void fill(ss__arenas *a, const ss__aloc *loc, uint64_t size, unsigned tag)
{
    t_assert_ok(ss__arena_write_open(a, loc));
    t_fill(loc->ptr, size, tag);
    t_assert_ok(ss__arena_write_close(a, loc));
}

/* ---------------------------------------------------------------- cases */

static void test_params(void **state)
{
    (void)state;
    ss__arena_params p = { .hugepages = SS_HP_OFF };
    ss__arenas *a = NULL;

    assert_null(ss__arena_params_why(&p)); /* defaults: 64 MiB, 64 KiB, 8 MiB */
    p.arena_size = 3 * SS_MiB;
    assert_non_null(strstr(ss__arena_params_why(&p), "multiple of 2 MiB"));
    t_assert_err(ss__arenas_create(&a, &p), -EINVAL);
    p.arena_size = 128 * SS_GiB;
    assert_non_null(ss__arena_params_why(&p));
    p.arena_size = 64 * SS_MiB;
    p.hugepages = SS_HP_1G;
    assert_non_null(strstr(ss__arena_params_why(&p), "1 GiB"));
    p.hugepages = 99;
    assert_non_null(ss__arena_params_why(&p));
    p.hugepages = SS_HP_OFF;
    p.min_size = 100;
    assert_non_null(ss__arena_params_why(&p));
    p.min_size = 0;
    p.dedicated_min = 128 * SS_MiB;
    assert_non_null(strstr(ss__arena_params_why(&p), "dedicated"));
    p.dedicated_min = 0;
    assert_non_null(ss__arena_params_why(NULL));
    assert_null(ss__arena_params_why(&p));
    t_assert_ok(ss__arenas_create(&a, &p));
    ss__arenas_destroy(a);
    ss__arenas_destroy(NULL);
}

/* Placement, coalescing, immediate reuse, refusals. */
static void test_alloc_free(void **state)
{
    (void)state;
    t_budget b;
    ss__arenas *a = mk(&b, 1 * SS_GiB, 8 * SS_MiB, SS_HP_OFF, false);
    ss__aloc x, y, z, w;

    t_assert_err(ss__arena_alloc(a, 64 * SS_KiB - 1, SS_NODE_ANY, &x), -EINVAL);
    t_assert_err(ss__arena_alloc(a, 64 * SS_KiB, 99999, &x), -EINVAL);
    t_assert_ok(ss__arena_alloc(a, 64 * SS_KiB, SS_NODE_ANY, &x));
    t_assert_ok(ss__arena_alloc(a, 100 * SS_KiB + 1, SS_NODE_ANY, &y));
    t_assert_ok(ss__arena_alloc(a, 1 * SS_MiB, SS_NODE_ANY, &z));
    t_assert_ok(ss__arena_validate(a));
    /* address order, grain aligned, no overlap, one arena */
    assert_int_equal(x.arena, y.arena);
    assert_int_equal(x.off, 0);
    assert_int_equal(y.off, 64 * SS_KiB);
    assert_int_equal(z.off, 64 * SS_KiB + SS_ALIGN_UP(100 * SS_KiB + 1, 4096));
    assert_int_equal(ss__arena_size_of(a, &y), 100 * SS_KiB + 1);
    ss__arena_stats st = stats(a);
    assert_int_equal(st.arenas, 1);
    assert_int_equal(st.arena_bytes, 8 * SS_MiB);
    assert_int_equal(b.used, 8 * SS_MiB);
    assert_int_equal(st.live_objects, 3);
    assert_int_equal(st.free_extents, 1);
    fill(a, &x, 64 * SS_KiB, 1);
    fill(a, &y, 100 * SS_KiB + 1, 2);
    fill(a, &z, SS_MiB, 3);

    /* freed space is reused at once, at the same place */
    t_assert_ok(ss__arena_free(a, &y));
    t_assert_ok(ss__arena_validate(a));
    assert_int_equal(stats(a).free_extents, 2);
    t_assert_ok(ss__arena_alloc(a, 90 * SS_KiB, SS_NODE_ANY, &w));
    assert_int_equal(w.off, y.off);
    assert_true(t_check(x.ptr, 64 * SS_KiB, 1));
    assert_true(t_check(z.ptr, SS_MiB, 3));
    t_assert_ok(ss__arena_free(a, &w));
    /* bad frees change nothing */
    t_assert_err(ss__arena_free(a, &w), -EINVAL);
    ss__aloc bad = x;
    bad.off += 4096;
    t_assert_err(ss__arena_free(a, &bad), -EINVAL);
    bad = x;
    bad.ptr = (char *)x.ptr + 1;
    t_assert_err(ss__arena_free(a, &bad), -EINVAL);
    bad = x;
    bad.arena = 77;
    t_assert_err(ss__arena_free(a, &bad), -EINVAL);
    t_assert_err(ss__arena_write_close(a, &x), -EINVAL); /* no window open */
    /* neighbours coalesce: x + hole + z + tail becomes one extent */
    t_assert_ok(ss__arena_free(a, &x));
    assert_int_equal(stats(a).free_extents, 2);
    t_assert_ok(ss__arena_write_open(a, &z));
    t_assert_err(ss__arena_free(a, &z), -EBUSY); /* a copy may be running */
    t_assert_ok(ss__arena_write_close(a, &z));
    t_assert_ok(ss__arena_free(a, &z));
    t_assert_ok(ss__arena_validate(a));
    st = stats(a);
    assert_int_equal(st.free_extents, 1);
    assert_int_equal(st.live_objects, 0);
    assert_int_equal(st.idle_arenas, 1); /* kept warm */
    assert_int_equal(st.arenas, 1);
    ss__arenas_destroy(a);
    assert_int_equal(b.used, 0);
}

/* The store's mapping is read-only outside a window; windows nest and
 * count per page. */
static void test_windows(void **state)
{
    (void)state;
    t_budget b;
    ss__arenas *a = mk(&b, 1 * SS_GiB, 8 * SS_MiB, SS_HP_OFF, false);
    ss__aloc x, y;

    t_assert_ok(ss__arena_alloc(a, 64 * SS_KiB + 10, SS_NODE_ANY, &x));
    t_assert_ok(ss__arena_alloc(a, 64 * SS_KiB, SS_NODE_ANY, &y));
    assert_false(pokeable(x.ptr));
    t_assert_ok(ss__arena_write_open(a, &x));
    t_assert_ok(ss__arena_write_open(a, &x));
    assert_int_equal(stats(a).windows, 1);
    assert_true(pokeable(x.ptr));
    assert_true(pokeable((char *)x.ptr + 64 * SS_KiB + 9)); /* the last page */
    assert_false(pokeable(y.ptr));                           /* not the neighbour */
    t_assert_ok(ss__arena_validate(a));
    t_assert_ok(ss__arena_write_close(a, &x));
    assert_true(pokeable(x.ptr)); /* still one open */
    t_assert_ok(ss__arena_write_close(a, &x));
    assert_int_equal(stats(a).windows, 0);
    /* closed; it lingers (test_linger) until the records are closed */
    assert_true(pokeable(x.ptr));
    assert_int_equal(ss__arena_linger_close(a, 0, true), UINT64_MAX);
    assert_false(pokeable(x.ptr));
    assert_false(pokeable(y.ptr));
    t_assert_ok(ss__arena_validate(a));
    ss__arenas_destroy(a);
}

/* Lingering windows: a small object's units stay writable for
 * SS_ARENA_LINGER_NS after its window closes, a put into the same space
 * finds them so, they become read-only when due, a large object's close at
 * once, and records stay bounded and go with their arena. */
static void test_linger(void **state)
{
    (void)state;
    t_budget b;
    ss__arenas *a = mk(&b, 1 * SS_GiB, 8 * SS_MiB, SS_HP_OFF, false);
    ss__aloc x, y, z, o[70];
    uint64_t now, due;

    t_assert_ok(ss__arena_alloc(a, 64 * SS_KiB + 10, SS_NODE_ANY, &x));
    now = ss__now_ns();
    fill(a, &x, 64 * SS_KiB + 10, 1);
    assert_int_equal(ss__arena_lingering(a), 1);
    assert_true(pokeable(x.ptr));
    assert_true(pokeable((char *)x.ptr + 64 * SS_KiB + 9));
    t_assert_ok(ss__arena_validate(a));
    /* not due yet: stays; the answer is when it is */
    due = ss__arena_linger_close(a, now, false);
    assert_true(due >= now + SS_ARENA_LINGER_NS && due <= ss__now_ns() + SS_ARENA_LINGER_NS);
    assert_true(pokeable(x.ptr));
    /* due: read-only */
    assert_int_equal(ss__arena_linger_close(a, due, false), UINT64_MAX);
    assert_int_equal(ss__arena_lingering(a), 0);
    assert_false(pokeable(x.ptr));
    assert_false(pokeable((char *)x.ptr + 64 * SS_KiB + 9));
    t_assert_ok(ss__arena_validate(a));

    /* a close of the same units while they linger does not push the due
     * back: 20 ms after the first close they are read-only, however often
     * they were written since (a 2 MiB page that puts keep writing) */
    now = ss__now_ns();
    fill(a, &x, 64 * SS_KiB + 10, 5);
    due = ss__arena_linger_close(a, now, false);
    t_sleep_ms(2);
    fill(a, &x, 64 * SS_KiB + 10, 6);
    assert_int_equal(ss__arena_lingering(a), 1);
    assert_int_equal(ss__arena_linger_close(a, due, false), UINT64_MAX);
    assert_false(pokeable(x.ptr));
    assert_true(t_check(x.ptr, 64 * SS_KiB + 10, 6));

    /* the space of a deleted object, handed out again, is still writable:
     * one record for both closes */
    fill(a, &x, 64 * SS_KiB + 10, 2);
    t_assert_ok(ss__arena_free(a, &x));
    t_assert_ok(ss__arena_alloc(a, 64 * SS_KiB + 10, SS_NODE_ANY, &y));
    assert_int_equal(y.off, x.off);
    assert_true(pokeable(y.ptr));
    fill(a, &y, 64 * SS_KiB + 10, 3);
    assert_int_equal(ss__arena_lingering(a), 1);
    t_assert_ok(ss__arena_validate(a));

    /* above SS_ARENA_LINGER_MAX: read-only at its close */
    t_assert_ok(ss__arena_alloc(a, SS_ARENA_LINGER_MAX + SS_KiB, SS_NODE_ANY, &z));
    fill(a, &z, SS_ARENA_LINGER_MAX + SS_KiB, 4);
    assert_false(pokeable(z.ptr));
    assert_false(pokeable((char *)z.ptr + SS_ARENA_LINGER_MAX));
    assert_int_equal(ss__arena_lingering(a), 1);
    t_assert_ok(ss__arena_free(a, &z));

    /* bounded: past SS_ARENA_LINGER_SLOTS records the oldest expire */
    for (int i = 0; i < 70; i++) {
        t_assert_ok(ss__arena_alloc(a, 64 * SS_KiB, SS_NODE_ANY, &o[i]));
        fill(a, &o[i], 64 * SS_KiB, 10 + (unsigned)i);
    }
    assert_int_equal(ss__arena_lingering(a), SS_ARENA_LINGER_SLOTS);
    assert_false(pokeable(y.ptr)); /* the oldest */
    assert_false(pokeable(o[0].ptr));
    assert_true(pokeable(o[69].ptr));
    t_assert_ok(ss__arena_validate(a));
    for (int i = 0; i < 70; i++)
        assert_true(t_check(o[i].ptr, 64 * SS_KiB, 10 + (unsigned)i));

    /* an arena that goes takes its records along */
    for (int i = 0; i < 70; i++)
        t_assert_ok(ss__arena_free(a, &o[i]));
    t_assert_ok(ss__arena_free(a, &y));
    assert_true(ss__arena_trim(a) > 0);
    assert_int_equal(ss__arena_lingering(a), 0);
    t_assert_ok(ss__arena_validate(a));
    ss__arenas_destroy(a);
    assert_int_equal(b.used, 0);
}

/* A reader's O_RDONLY view can never write, sees the store's writes, and
 * the arena can be neither resized nor punched. */
static void test_reader(void **state)
{
    (void)state;
    t_budget b;
    ss__arenas *a = mk(&b, 1 * SS_GiB, 4 * SS_MiB, SS_HP_OFF, false);
    ss__aloc x;

    t_assert_ok(ss__arena_alloc(a, 200 * SS_KiB, SS_NODE_ANY, &x));
    const ss__seg *sg = ss__arena_segment(a, x.arena);
    assert_non_null(sg);
    assert_true(ss__seals_small_ok(ss__seg_get_seals(sg->fd)));
    int ro = ss__seg_reopen_ro(sg->fd);
    t_assert_ok(ro);
    uint8_t *view = mmap(NULL, sg->size, PROT_READ, MAP_SHARED, ro, 0);
    assert_true(view != MAP_FAILED);

    fill(a, &x, 200 * SS_KiB, 42);
    assert_true(t_check(view + x.off, 200 * SS_KiB, 42));

    errno = 0;
    assert_true(mmap(NULL, sg->size, PROT_READ | PROT_WRITE, MAP_SHARED, ro, 0) == MAP_FAILED);
    assert_int_equal(errno, EACCES);
    assert_int_equal(mprotect(view, sg->size, PROT_READ | PROT_WRITE), -1);
    assert_int_equal(errno, EACCES);
    /* even a writable fd (the store's own, or a reopen of it) gets no new
     * writable mapping, no write(), no hole, no resize */
    char path[64];
    snprintf(path, sizeof(path), "/proc/self/fd/%d", sg->fd);
    int rw = open(path, O_RDWR | O_CLOEXEC);
    t_assert_ok(rw < 0 ? -errno : rw);
    errno = 0;
    assert_true(mmap(NULL, sg->size, PROT_READ | PROT_WRITE, MAP_SHARED, rw, 0) == MAP_FAILED);
    assert_int_equal(errno, EPERM);
    assert_int_equal(pwrite(rw, "x", 1, 0), -1);
    assert_int_equal(errno, EPERM);
    assert_int_equal(fallocate(rw, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, 4096), -1);
    assert_int_equal(errno, EPERM);
    assert_int_equal(ftruncate(rw, (off_t)sg->size / 2), -1);
    assert_int_equal(errno, EPERM);
    close(rw);

    /* a freed object's space is reused; the reader's view stays valid and
     * sees the new bytes (the store frees only after every release) */
    t_assert_ok(ss__arena_free(a, &x));
    ss__aloc y;
    t_assert_ok(ss__arena_alloc(a, 100 * SS_KiB, SS_NODE_ANY, &y));
    assert_int_equal(y.off, x.off);
    fill(a, &y, 100 * SS_KiB, 7);
    assert_true(t_check(view + y.off, 100 * SS_KiB, 7));
    munmap(view, sg->size);
    close(ro);
    ss__arenas_destroy(a);
}

/* Empty arenas go back to the kernel (one kept per node), dedicated ones
 * are recycled within 1/8, refusals are -ENOSPC and drop idle arenas. */
static void test_returned(void **state)
{
    (void)state;
    t_budget b;
    ss__arenas *a = NULL;
    ss__arena_params p = { .arena_size = 4 * SS_MiB, .dedicated_min = 2 * SS_MiB,
                           .hugepages = SS_HP_OFF, .charge = t_budget_charge, .charge_arg = &b };
    ss__aloc o[8];

    memset(&b, 0, sizeof(b));
    b.limit = 64 * SS_MiB;
    t_assert_ok(ss__arenas_create(&a, &p));

    for (int i = 0; i < 8; i++) /* 1.5 MiB: two per 4 MiB arena */
        t_assert_ok(ss__arena_alloc(a, 3 * SS_MiB / 2, SS_NODE_ANY, &o[i]));
    t_assert_ok(ss__arena_validate(a));
    ss__arena_stats st = stats(a);
    assert_int_equal(st.arenas, 4);
    assert_int_equal(b.used, 16 * SS_MiB);
    assert_int_equal(st.arena_bytes, 16 * SS_MiB);
    for (int i = 0; i < 8; i++) {
        t_assert_ok(ss__arena_free(a, &o[i]));
        t_assert_ok(ss__arena_validate(a));
    }
    st = stats(a);
    assert_int_equal(st.arenas, 1);
    assert_int_equal(st.idle_arenas, 1);
    assert_int_equal(st.destroyed, 3);
    assert_int_equal(b.used, 4 * SS_MiB);

    /* dedicated: above dedicated_min */
    ss__aloc d;
    t_assert_ok(ss__arena_alloc(a, 10 * SS_MiB, SS_NODE_ANY, &d));
    assert_int_equal(d.off, 0);
    uint64_t serial = ss__arena_serial(a, d.arena);
    assert_int_equal(ss__arena_segment(a, d.arena)->size, 10 * SS_MiB);
    assert_int_equal(b.used, 14 * SS_MiB);
    fill(a, &d, 10 * SS_MiB, 5);
    t_assert_ok(ss__arena_free(a, &d));
    assert_int_equal(stats(a).idle_arenas, 2);
    t_assert_ok(ss__arena_alloc(a, 9 * SS_MiB + 1, SS_NODE_ANY, &d)); /* fits within 1/8 */
    assert_int_equal(ss__arena_serial(a, d.arena), serial);
    assert_int_equal(stats(a).recycled, 1);
    t_assert_ok(ss__arena_free(a, &d));
    t_assert_ok(ss__arena_alloc(a, 5 * SS_MiB, SS_NODE_ANY, &d)); /* would waste half */
    assert_true(ss__arena_serial(a, d.arena) != serial);
    assert_int_equal(ss__arena_segment(a, d.arena)->size, 5 * SS_MiB);
    assert_int_equal(b.used, 9 * SS_MiB); /* the 10 MiB one went back first */
    t_assert_ok(ss__arena_validate(a));

    /* capacity: a refused charge is -ENOSPC; the idle arena is dropped and
     * the charge retried before giving up */
    b.limit = 12 * SS_MiB;
    ss__aloc e;
    t_assert_err(ss__arena_alloc(a, 20 * SS_MiB, SS_NODE_ANY, &e), -ENOSPC);
    assert_int_equal(b.used, 5 * SS_MiB); /* the spare was dropped to try */
    assert_int_equal(stats(a).idle_arenas, 0);
    t_assert_ok(ss__arena_alloc(a, 7 * SS_MiB, SS_NODE_ANY, &e));
    t_assert_ok(ss__arena_validate(a));
    t_assert_ok(ss__arena_free(a, &e));
    t_assert_ok(ss__arena_free(a, &d));
    assert_int_equal(ss__arena_trim(a), 7 * SS_MiB);
    assert_int_equal(b.used, 0);
    assert_int_equal(stats(a).arenas, 0);
    t_assert_ok(ss__arena_validate(a));
    ss__arenas_destroy(a);
}

typedef struct maker {
    const ss__arenas *a;
    ss__seg seg;
    int rc;
} maker;

static void *make_thread(void *arg)
{
    maker *m = arg;
    m->rc = ss__arena_make(m->a, SS_NODE_ANY, &m->seg);
    return NULL;
}

/* A populator thread makes the next arena; the loop adopts it as the idle
 * arena, which the next alloc then uses; a second one is refused while an
 * idle arena exists and goes back uncharged. */
static void test_make_adopt(void **state)
{
    (void)state;
    t_budget b;
    ss__arenas *a = mk(&b, 1 * SS_GiB, 4 * SS_MiB, SS_HP_OFF, false);
    maker m = { .a = a };
    pthread_t th;
    ss__aloc x;

    assert_true(ss__arena_wants(a, SS_NODE_ANY));
    assert_int_equal(pthread_create(&th, NULL, make_thread, &m), 0);
    assert_int_equal(pthread_join(th, NULL), 0);
    t_assert_ok(m.rc);
    assert_int_equal(b.used, 4 * SS_MiB); /* charged by the maker */
    assert_true(ss__seals_small_ok(ss__seg_get_seals(m.seg.fd)));
    ss__seg wrong = m.seg;
    wrong.size /= 2;
    t_assert_err(ss__arena_adopt(a, &wrong), -EINVAL);
    t_assert_ok(ss__arena_adopt(a, &m.seg));
    assert_true(m.seg.fd < 0);
    t_assert_ok(ss__arena_validate(a));
    ss__arena_stats st = stats(a);
    assert_int_equal(st.idle_arenas, 1);
    assert_false(ss__arena_wants(a, SS_NODE_ANY));
    t_assert_ok(ss__arena_alloc(a, 256 * SS_KiB, SS_NODE_ANY, &x)); /* not dedicated */
    assert_int_equal(stats(a).created, 1); /* the adopted one, nothing new */
    fill(a, &x, 256 * SS_KiB, 9);
    /* in use but mostly free: no other one is wanted yet */
    assert_false(ss__arena_wants(a, SS_NODE_ANY));
    ss__aloc more[4];
    for (int i = 0; i < 4; i++)
        t_assert_ok(ss__arena_alloc(a, 480 * SS_KiB, SS_NODE_ANY, &more[i]));
    assert_int_equal(stats(a).created, 1);
    assert_true(ss__arena_wants(a, SS_NODE_ANY)); /* over half full */
    for (int i = 0; i < 4; i++)
        t_assert_ok(ss__arena_free(a, &more[i]));
    assert_false(ss__arena_wants(a, SS_NODE_ANY));
    t_assert_ok(ss__arena_free(a, &x)); /* idle again */

    t_assert_ok(ss__arena_make(a, SS_NODE_ANY, &m.seg));
    assert_int_equal(b.used, 8 * SS_MiB);
    t_assert_err(ss__arena_adopt(a, &m.seg), -EEXIST);
    t_assert_ok(ss__arena_validate(a));
    ss__arena_unmake(a, &m.seg);
    assert_int_equal(b.used, 4 * SS_MiB);
    t_assert_err(ss__arena_make(a, 12345, &m.seg), -EINVAL);
    ss__arenas_destroy(a);
    assert_int_equal(b.used, 0);
}

/* NUMA: arenas are per node; on the real topology an arena bound to node 0
 * has its pages there. Placement decisions on a fake two-node topology. */
static void test_numa(void **state)
{
    (void)state;
    ss__numa *fake = NULL;
    t_budget b;

    t_assert_ok(ss__numa_open_synthetic(&fake, "pack:2 [numa] core:2 pu:1"));
    int n0 = ss__numa_node_id(fake, 0), n1 = ss__numa_node_id(fake, 1);
    ss__arena_params p = { .arena_size = 64 * SS_MiB, .hugepages = SS_HP_OFF, .numa = fake,
                           .charge = t_budget_charge, .charge_arg = &b, .bookkeeping_only = true };
    memset(&b, 0, sizeof(b));
    b.limit = INT64_MAX;
    ss__arenas *a = NULL;
    t_assert_ok(ss__arenas_create(&a, &p));
    ss__aloc x, y, z;
    t_assert_ok(ss__arena_alloc(a, SS_MiB, n0, &x));
    t_assert_ok(ss__arena_alloc(a, SS_MiB, n1, &y));
    t_assert_ok(ss__arena_alloc(a, SS_MiB, n0, &z));
    assert_true(x.arena != y.arena);
    assert_int_equal(x.arena, z.arena);
    assert_int_equal(ss__arena_segment(a, x.arena)->node, n0);
    assert_int_equal(ss__arena_segment(a, y.arena)->node, n1);
    t_assert_err(ss__arena_alloc(a, SS_MiB, 5, &x), -EINVAL);
    t_assert_ok(ss__arena_validate(a));
    assert_int_equal(stats(a).arenas, 2);
    ss__arenas_destroy(a);
    ss__numa_close(fake);

    ss__numa *real = NULL;
    t_assert_ok(ss__numa_open(&real));
    bool can = ss__numa_can_bind(real);
    if (!can)
        ss__numa_close(real);
    T_SKIP_IF(!can, "numa", "hwloc reports no memory binding support on this system");
    int node0 = ss__numa_node_id(real, 0);
    p = (ss__arena_params){ .arena_size = 4 * SS_MiB, .hugepages = SS_HP_OFF, .numa = real,
                            .charge = t_budget_charge, .charge_arg = &b };
    t_assert_ok(ss__arenas_create(&a, &p));
    t_assert_ok(ss__arena_alloc(a, SS_MiB, node0, &x));
    const ss__seg *sg = ss__arena_segment(a, x.arena);
    assert_int_equal(sg->node, node0);
    /* a dedicated arena on 4 KiB pages is not populated ahead: its pages
     * come in with the copy, on node 0 by the file's policy */
    fill(a, &x, SS_MiB, 3);
    for (uint64_t off = 0; off < sg->size; off += 256 * SS_KiB)
        assert_int_equal(ss__numa_node_of_addr((char *)sg->map + off), node0);
    ss__arenas_destroy(a);
    ss__numa_close(real);
}

static bool no_hugetlb;
static char no_hugetlb_why[160];

/* On 2 MiB hugetlb: the backing, the reader's page size, and windows on
 * a 2 MiB page shared by two objects. */
static void test_hugepages(void **state)
{
    (void)state;
    T_SKIP_IF(no_hugetlb, "hugepages", no_hugetlb_why);
    t_budget b;
    ss__arenas *a = mk(&b, 1 * SS_GiB, 4 * SS_MiB, SS_HP_2M, false);
    ss__aloc x, y;

    t_assert_ok(ss__arena_alloc(a, 100 * SS_KiB, SS_NODE_ANY, &x));
    t_assert_ok(ss__arena_alloc(a, 100 * SS_KiB, SS_NODE_ANY, &y));
    const ss__seg *sg = ss__arena_segment(a, x.arena);
    assert_int_equal(sg->backing, SS_BACKING_2M);
    assert_true(ss__seals_small_ok(ss__seg_get_seals(sg->fd)));
    int ro = ss__seg_reopen_ro(sg->fd);
    t_assert_ok(ro);
    uint8_t *view = mmap(NULL, sg->size, PROT_READ, MAP_SHARED, ro, 0);
    assert_true(view != MAP_FAILED);
    assert_int_equal(t_kernel_page_size(view), HUGE_2M);

    t_assert_ok(ss__arena_write_open(a, &x));
    t_assert_ok(ss__arena_write_open(a, &y)); /* same 2 MiB page */
    t_fill(x.ptr, 100 * SS_KiB, 1);
    t_assert_ok(ss__arena_write_close(a, &x));
    t_fill(y.ptr, 100 * SS_KiB, 2); /* still writable for y */
    t_assert_ok(ss__arena_validate(a));
    t_assert_ok(ss__arena_write_close(a, &y));
    assert_true(pokeable(y.ptr)); /* lingering */
    (void)ss__arena_linger_close(a, 0, true);
    assert_false(pokeable(y.ptr));
    assert_true(t_check(view + x.off, 100 * SS_KiB, 1));
    assert_true(t_check(view + y.off, 100 * SS_KiB, 2));
    munmap(view, sg->size);
    close(ro);
    ss__arenas_destroy(a);
    assert_int_equal(b.used, 0);
}

/* The validator sees a broken invariant. */
static void test_validate_catches(void **state)
{
    (void)state;
    t_budget b;
    ss__arenas *a = mk(&b, INT64_MAX, 64 * SS_MiB, SS_HP_OFF, true);
    ss__aloc x, d;

    t_assert_ok(ss__arena_alloc(a, SS_MiB, SS_NODE_ANY, &x));
    t_assert_ok(ss__arena_alloc(a, 40 * SS_MiB, SS_NODE_ANY, &d)); /* dedicated */
    t_assert_ok(ss__arena_validate(a));
    /* an arena whose recorded size no longer matches its grains and the
     * bytes charged */
    ss__seg *sg = (ss__seg *)ss__arena_segment(a, x.arena);
    sg->size += SS_ARENA_GRAIN;
    t_assert_err(ss__arena_validate(a), -SS_E_CORRUPT);
    sg->size -= SS_ARENA_GRAIN;
    t_assert_ok(ss__arena_validate(a));
    /* a dedicated arena too small for its object */
    sg = (ss__seg *)ss__arena_segment(a, d.arena);
    uint64_t keep = sg->size;
    sg->size = 32 * SS_MiB;
    t_assert_err(ss__arena_validate(a), -SS_E_CORRUPT);
    sg->size = keep;
    t_assert_ok(ss__arena_validate(a));
    ss__arenas_destroy(a);
}

/* The mixed workload: sizes log-uniform over [64 KiB, 128 MiB], allocated
 * until `target` live bytes, then steady state: each step frees a random
 * object and allocates new ones to return to the target. Waste = bytes
 * the kernel holds (every arena, idle ones included) over live bytes,
 * minus one; sampled through the steady state. */
typedef struct wl_obj {
    ss__aloc loc;
    uint64_t size;
} wl_obj;

static double mixed(int hugepages, uint64_t arena_size, uint64_t dedicated_min, uint64_t target,
                    long steps, double *mean, uint64_t *arenas, uint64_t *created)
{
    t_budget b = { .limit = INT64_MAX };
    ss__arenas *a = NULL;
    ss__arena_params p = { .arena_size = arena_size, .dedicated_min = dedicated_min,
                           .hugepages = hugepages, .charge = t_budget_charge, .charge_arg = &b,
                           .bookkeeping_only = true };
    t_assert_ok(ss__arenas_create(&a, &p));
    size_t cap = 4096, n = 0;
    wl_obj *o = calloc(cap, sizeof(*o));
    double worst = 0, sum = 0;
    long samples = 0;

    assert_non_null(o);
    t_rnd_seed(seed);
    for (long step = 0; step < steps; step++) {
        ss__arena_stats st = stats(a);
        if (st.live_bytes >= target && n > 0) {
            size_t i = (size_t)(t_rnd() % n);
            t_assert_ok(ss__arena_free(a, &o[i].loc));
            o[i] = o[--n];
        }
        while (stats(a).live_bytes < target) {
            if (n == cap) {
                cap *= 2;
                o = realloc(o, cap * sizeof(*o));
                assert_non_null(o);
            }
            o[n].size = rnd_log(64 * SS_KiB, 128 * SS_MiB);
            t_assert_ok(ss__arena_alloc(a, o[n].size, SS_NODE_ANY, &o[n].loc));
            n++;
        }
        if (step % 2000 == 0)
            t_assert_ok(ss__arena_validate(a));
        if (step >= steps / 5) { /* steady state */
            st = stats(a);
            double w = (double)st.arena_bytes / (double)st.live_bytes - 1;
            worst = w > worst ? w : worst;
            sum += w;
            samples++;
        }
    }
    t_assert_ok(ss__arena_validate(a));
    *arenas = stats(a).arenas;
    *created = stats(a).created;
    *mean = sum / (double)samples;
    ss__arenas_destroy(a);
    free(o);
    return worst;
}

/* --enable-debug validates after every alloc and free: fewer steps there. */
#define STEPS (SS_DEBUG >= 2 ? 3000 : 20000)

static void test_mixed_workload(void **state)
{
    (void)state;
    if (getenv("T_ARENA_SWEEP")) {
        uint64_t as[] = {32 * SS_MiB, 64 * SS_MiB, 128 * SS_MiB, 256 * SS_MiB};
        for (int i = 0; i < 4; i++)
            for (int d = 1; d <= 16; d *= 2) {
                double mean;
                uint64_t ar, cr;
                double worst =
                    mixed(SS_HP_OFF, as[i], as[i] / d, 8 * SS_GiB, 20000, &mean, &ar, &cr);
                print_message("arena %4llu MiB dedicated > %4llu MiB: mean %.1f%% worst %.1f%% arenas %llu\n",
                              (unsigned long long)(as[i] >> 20), (unsigned long long)(as[i] / d >> 20),
                              100 * mean, 100 * worst, (unsigned long long)ar);
            }
    }
    static const struct { int hp; const char *name; } runs[] = {
        { SS_HP_OFF, "4K" }, { SS_HP_2M, "2M" } };
    for (size_t i = 0; i < SS_ARRAY_SIZE(runs); i++) {
        double mean;
        uint64_t arenas, created;
        double worst =
            mixed(runs[i].hp, 64 * SS_MiB, 0, 8 * SS_GiB, STEPS, &mean, &arenas, &created);
        print_message("mixed workload (%s pages, 64 MiB arenas, 8 GiB live, sizes 64 KiB..128 "
                      "MiB log-uniform, %d steps): waste mean %.1f%%, worst %.1f%% of live "
                      "bytes; %" PRIu64 " arenas now, %" PRIu64 " created\n",
                      runs[i].name, STEPS, 100 * mean, 100 * worst, arenas, created);
        assert_true(worst <= 0.12);
    }
}

/* Real arenas under churn: contents of live objects survive every other
 * object's writes and frees. */
static void test_churn_contents(void **state)
{
    (void)state;
    t_budget b;
    ss__arenas *a = mk(&b, 1 * SS_GiB, 8 * SS_MiB, SS_HP_OFF, false);
    wl_obj o[64];
    unsigned tag[64];
    size_t n = 0;

    t_rnd_seed(seed ^ 1);
    for (int step = 0; step < 600; step++) {
        if (n == 64 || (n > 0 && t_rnd() % 3 == 0)) {
            size_t i = (size_t)(t_rnd() % n);
            assert_true(t_check(o[i].loc.ptr, o[i].size, tag[i]));
            t_assert_ok(ss__arena_free(a, &o[i].loc));
            o[i] = o[--n];
            tag[i] = tag[n];
        } else {
            o[n].size = rnd_log(64 * SS_KiB, 6 * SS_MiB);
            tag[n] = (unsigned)step;
            t_assert_ok(ss__arena_alloc(a, o[n].size, SS_NODE_ANY, &o[n].loc));
            fill(a, &o[n].loc, o[n].size, tag[n]);
            n++;
        }
        t_assert_ok(ss__arena_validate(a));
    }
    for (size_t i = 0; i < n; i++)
        assert_true(t_check(o[i].loc.ptr, o[i].size, tag[i]));
    ss__arenas_destroy(a);
    assert_int_equal(b.used, 0);
}

/* Cost of alloc + free (bookkeeping only: the allocator's own work) and of
 * a window open + close on 4K pages. Printed, never asserted. */
static void test_costs(void **state)
{
    (void)state;
    t_budget b;
    ss__arenas *a = mk(&b, INT64_MAX, 64 * SS_MiB, SS_HP_OFF, true);
    enum { LIVE = 256 };
    const int N = SS_DEBUG >= 2 ? 2000 : 200000;
    ss__aloc live[LIVE];

    t_rnd_seed(seed ^ 2);
    for (int i = 0; i < LIVE; i++)
        t_assert_ok(ss__arena_alloc(a, rnd_log(64 * SS_KiB, 4 * SS_MiB), SS_NODE_ANY, &live[i]));
    uint64_t t0 = ss__now_ns();
    for (int i = 0; i < N; i++) {
        int k = (int)(t_rnd() % LIVE);
        t_assert_ok(ss__arena_free(a, &live[k]));
        t_assert_ok(ss__arena_alloc(a, rnd_log(64 * SS_KiB, 4 * SS_MiB), SS_NODE_ANY, &live[k]));
    }
    uint64_t t1 = ss__now_ns();
    t_assert_ok(ss__arena_validate(a));
    ss__arenas_destroy(a);

    print_message("alloc+free pair (64 KiB..4 MiB, %d live): %.0f ns\n", LIVE,
                  (double)(t1 - t0) / N);

    a = mk(&b, INT64_MAX, 8 * SS_MiB, SS_HP_OFF, false);
    static const uint64_t sizes[] = { 64 * SS_KiB, SS_MiB, 4 * SS_MiB };
    for (size_t s = 0; s < SS_ARRAY_SIZE(sizes); s++) {
        ss__aloc x;
        t_assert_ok(ss__arena_alloc(a, sizes[s], SS_NODE_ANY, &x));
        uint64_t t2 = ss__now_ns();
        for (int i = 0; i < 1000; i++) {
            t_assert_ok(ss__arena_write_open(a, &x));
            t_assert_ok(ss__arena_write_close(a, &x));
            (void)ss__arena_linger_close(a, 0, true); /* both mprotects */
        }
        uint64_t t3 = ss__now_ns();
        t_assert_ok(ss__arena_free(a, &x));
        print_message("window open+close, %" PRIu64 " KiB object on 4K pages: %.2f us\n",
                      sizes[s] >> 10, (double)(t3 - t2) / 1000 / 1000);
    }
    ss__arenas_destroy(a);
}

/* ---------------------------------------------------------------- main */
static void probe_hugetlb(void)
{
    long fr;

    if (!t_hugetlb_kernel(no_hugetlb_why, sizeof(no_hugetlb_why))) {
        no_hugetlb = true;
        return;
    }
    fr = t_hugetlb_reserve(HUGE_2M, 2);
    if (fr == -EPERM || fr == -EACCES || (fr >= 0 && fr < 2)) {
        no_hugetlb = true;
        snprintf(no_hugetlb_why, sizeof(no_hugetlb_why),
                 "%ld free 2 MiB pages, 2 needed: raise vm.nr_hugepages", fr < 0 ? 0 : fr);
    } else if (fr < 0) {
        fprintf(stderr, "t_hugetlb_reserve: %s\n", strerror((int)-fr));
        exit(T_EXIT_ERROR);
    }
}

int main(void)
{
    const char *env = getenv("SS_TEST_SEED");
    if (env && *env)
        seed = strtoull(env, NULL, 0);
    fprintf(stderr, "t_arena: seed %#" PRIx64 " (SS_TEST_SEED=<n> to replay)\n", seed);
    probe_hugetlb();

    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_params),
        cmocka_unit_test(test_alloc_free),
        cmocka_unit_test(test_windows),
        cmocka_unit_test(test_linger),
        cmocka_unit_test(test_reader),
        cmocka_unit_test(test_returned),
        cmocka_unit_test(test_make_adopt),
        cmocka_unit_test(test_numa),
        cmocka_unit_test(test_hugepages),
        cmocka_unit_test(test_validate_catches),
        cmocka_unit_test(test_mixed_workload),
        cmocka_unit_test(test_churn_contents),
        cmocka_unit_test(test_costs),
    };
    return t_run(tests, NULL, NULL);
}
