/* SPDX-License-Identifier: MIT */
/*
 * One client handle shared by several threads, through the public API only.
 *
 * The replies to different threads' requests come back on one connection
 * in whatever order the store answers them: a GET that waits (a timeout on
 * an id not put yet) is answered after later ones, and the store sends a
 * segment's fd once per client while later replies only name it. These
 * cases run such a mix for about a second each and check every byte they
 * read:
 *  - the reported case: one thread loops get + release of an 800 KB
 *    object while another gets ids nobody puts with a 1 ms timeout;
 *  - the same beside threads getting batches of small and large (64 KiB
 *    and up) objects, holding some references across iterations, a waiter
 *    whose batches mix present objects with a missing id (answered late,
 *    with fds), and a thread putting, reading and deleting new objects.
 *  - threads that each put, get, hold, delete and put again their own few
 *   ids (large and small objects): views of deleted objects are still held
 *   while a new object with the same id is put, and are checked again
 *   until released; a release drops the view held longest of that id;
 *  - a get waiting forever (timeout -1) on an id nobody puts while another
 *    thread puts, reads, releases and deletes 4 MiB objects: the segments
 *    released meanwhile are unmapped (counted in /proc/self/maps), not
 *    kept until the waiter ends;
 *  - threads getting and releasing (by id and by view) objects the handle
 *    holds, beside a looper getting one it does not: the client serves
 *    the held ones (the store counts the looper's gets only), every view
 *    is the held one and reads right to the last byte.
 * Every call must succeed, the handle must stay usable, and once all
 * references are released nothing stays referenced at the store.
 *
 * Workers never call cmocka (its asserts are for the main thread): they
 * record their first failure, which the main thread reports.
 */
#define _GNU_SOURCE
#include "sealstore.h"
#include "t_helpers.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define RUN_MS 1000       /* how long each case's workers loop */
#define NOBJ 12           /* the shared object set */
#define MAX_HELD 6        /* references a mixer keeps across iterations */

static ss_client *C;  /* the host's handle; its store is in this process */
static ss_client *H;  /* the handle a case's workers share */
static char sock_path[108];

/* the objects every worker reads: sizes on both sides of the small limit */
static const uint64_t obj_sizes[NOBJ] = {
    800 * 1000, 100, 4096, 60 * 1024, 64 * 1024, 64 * 1024 + 1,
    200 * 1000, 1 << 20, 0, 65 * 1024, 3000, 2 << 20,
};
static ss_id obj_ids[NOBJ];

typedef struct run {
    atomic_bool stop;
    atomic_int failed;        /* first failure recorded */
    char why[256];
    uint64_t t_end_ms;
} run;

typedef struct worker {
    run *r;
    unsigned no;              /* worker number: seeds, ids */
    void *(*fn)(void *);
    uint64_t iters;
    pthread_t th;
} worker;

static uint64_t now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static ss_id make_id(const char *tag, unsigned a, unsigned b)
{
    ss_id id;

    memset(&id, 0, sizeof(id));
    snprintf((char *)id.b, sizeof(id.b), "th-%s-%u-%u", tag, a, b);
    return id;
}

/* The first failure wins; every worker stops. */
static void failf(run *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void failf(run *r, const char *fmt, ...)
{
    int no = 0;

    if (atomic_compare_exchange_strong(&r->failed, &no, 1)) {
        va_list ap;

        va_start(ap, fmt);
        vsnprintf(r->why, sizeof(r->why), fmt, ap);
        va_end(ap);
    }
    atomic_store(&r->stop, true);
}

static bool going(worker *w)
{
    if (atomic_load(&w->r->stop))
        return false;
    if (now_ms() >= w->r->t_end_ms) {
        atomic_store(&w->r->stop, true);
        return false;
    }
    w->iters++;
    return true;
}

/* One view against what was put under that id (seed = its index + 1). */
static bool view_ok(run *r, const ss_object *o, uint64_t size, unsigned seed, const char *who)
{
    if (!o->data) {
        failf(r, "%s: object of %llu bytes not found", who, (unsigned long long)size);
        return false;
    }
    if (o->size != size || !t_check(o->data, size, seed)) {
        failf(r, "%s: object of %llu bytes reads wrong (size %llu)", who,
              (unsigned long long)size, (unsigned long long)o->size);
        return false;
    }
    return true;
}

static bool release_ok(run *r, const ss_id *id, const char *who)
{
    int rc = ss_release(H, id);

    if (rc < 0)
        failf(r, "%s: ss_release = %d (%s)", who, rc, t_strerror(rc));
    return rc == 0;
}

/* get + check + release of the 800 KB object (index 0), in a loop. */
static void *w_looper(void *a)
{
    worker *w = a;
    ss_object o;
    int rc;

    while (going(w)) {
        rc = ss_get(H, &obj_ids[0], 1, 0, &o);
        if (rc != 1) {
            failf(w->r, "looper: ss_get = %d (%s)", rc, t_strerror(rc));
            break;
        }
        if (!view_ok(w->r, &o, obj_sizes[0], 1, "looper") ||
            !release_ok(w->r, &obj_ids[0], "looper"))
            break;
    }
    return NULL;
}

/* gets of ids nobody puts, 1 ms timeout each */
static void *w_waiter(void *a)
{
    worker *w = a;
    ss_object o;
    int rc;

    while (going(w)) {
        ss_id id = make_id("missing", w->no, (unsigned)w->iters);

        rc = ss_get(H, &id, 1, 1, &o);
        if (rc != 0 || o.data) {
            failf(w->r, "waiter: ss_get of a missing id = %d (%s)", rc, t_strerror(rc));
            break;
        }
    }
    return NULL;
}

/* batches of present objects plus one missing id, 1 ms timeout: the store
 * answers them late, after replies to later requests, fds included */
static void *w_late_batch(void *a)
{
    worker *w = a;
    ss_id ids[4];
    ss_object o[4];
    unsigned k[3];
    int rc;

    while (going(w)) {
        for (unsigned j = 0; j < 3; j++) {
            k[j] = (unsigned)((w->iters * 5 + j * 7 + w->no) % NOBJ);
            ids[j] = obj_ids[k[j]];
        }
        ids[3] = make_id("late", w->no, (unsigned)w->iters);
        rc = ss_get(H, ids, 4, 1, o);
        if (rc != 3 || o[3].data) {
            failf(w->r, "late batch: ss_get = %d (%s)", rc, t_strerror(rc));
            break;
        }
        for (unsigned j = 0; j < 3; j++)
            if (!view_ok(w->r, &o[j], obj_sizes[k[j]], k[j] + 1, "late batch"))
                return NULL;
        for (unsigned j = 0; j < 3; j++)
            if (!release_ok(w->r, &ids[j], "late batch"))
                return NULL;
    }
    return NULL;
}

/* batches of 1-4 objects, some references kept for a while */
static void *w_mixer(void *a)
{
    worker *w = a;
    unsigned held[MAX_HELD], nheld = 0;
    unsigned x = w->no * 2654435761u + 1;
    int rc;

    while (going(w)) {
        ss_id ids[4];
        ss_object o[4];
        unsigned k[4], n;

        x = x * 1103515245u + 12345u;
        n = 1 + (x >> 16) % 4;
        for (unsigned j = 0; j < n; j++) {
            x = x * 1103515245u + 12345u;
            k[j] = (x >> 16) % NOBJ;
            ids[j] = obj_ids[k[j]];
        }
        rc = ss_get(H, ids, n, 0, o);
        if (rc != (int)n) {
            failf(w->r, "mixer: ss_get of %u = %d (%s)", n, rc, t_strerror(rc));
            break;
        }
        for (unsigned j = 0; j < n; j++) {
            if (!view_ok(w->r, &o[j], obj_sizes[k[j]], k[j] + 1, "mixer"))
                return NULL;
            if (nheld < MAX_HELD && ((x >> 8) & 1)) {
                held[nheld++] = k[j];
            } else if (!release_ok(w->r, &ids[j], "mixer")) {
                return NULL;
            }
        }
        if (nheld == MAX_HELD || ((x >> 12) & 7) == 0)
            while (nheld > 0)
                if (!release_ok(w->r, &obj_ids[held[--nheld]], "mixer"))
                    return NULL;
    }
    while (nheld > 0)
        (void)ss_release(H, &obj_ids[held[--nheld]]);
    return NULL;
}

/* new objects (new segments) put, read back and deleted */
static void *w_churn(void *a)
{
    static const uint64_t sizes[] = { 300, 96 * 1024, 7000, 500 * 1000 };
    worker *w = a;
    void *buf = malloc(500 * 1000);
    int rc;

    if (!buf) {
        failf(w->r, "churn: malloc failed");
        return NULL;
    }
    while (going(w)) {
        uint64_t size = sizes[w->iters % 4];
        unsigned seed = 1000 + (unsigned)w->iters;
        ss_id id = make_id("churn", w->no, (unsigned)w->iters);
        ss_object o;

        t_fill(buf, size, seed);
        if ((rc = ss_put(H, &id, buf, size, NULL, 0)) < 0 ||
            (rc = ss_get(H, &id, 1, 0, &o)) != 1) {
            failf(w->r, "churn: put/get = %d (%s)", rc, t_strerror(rc));
            break;
        }
        if (!view_ok(w->r, &o, size, seed, "churn") || !release_ok(w->r, &id, "churn"))
            break;
        if ((rc = ss_delete(H, &id)) < 0) {
            failf(w->r, "churn: ss_delete = %d (%s)", rc, t_strerror(rc));
            break;
        }
    }
    free(buf);
    return NULL;
}

/* One worker's own ids, put, held, deleted and put again: a put must end
 * only its own reference, never an older view this thread still holds of
 * a deleted object with that id. Each id's views are kept oldest first: a
 * release drops the one held longest. */
#define SAME_IDS 2
#define SAME_HELD 4
static void *w_same_id(void *a)
{
    static const uint64_t sizes[] = { 300 * 1000, 5000, 1 << 20, 100 };
    worker *w = a;
    struct {
        unsigned k, seed;
        const void *data;
        uint64_t size;
    } held[SAME_HELD];
    unsigned nheld = 0, seed_of[SAME_IDS] = { 0 };
    bool present[SAME_IDS] = { false };
    unsigned x = w->no * 2654435761u + 7;
    void *buf = malloc(1 << 20);
    ss_id ids[SAME_IDS];
    int rc;

    if (!buf) {
        failf(w->r, "same id: malloc failed");
        return NULL;
    }
    for (unsigned k = 0; k < SAME_IDS; k++)
        ids[k] = make_id("same", w->no, k);
    while (going(w)) {
        unsigned k, seed = (w->no << 20) + (unsigned)w->iters;
        uint64_t size = sizes[w->iters % 4];
        ss_object o;

        x = x * 1103515245u + 12345u;
        k = (x >> 16) % SAME_IDS;
        if (present[k]) {
            if ((rc = ss_delete(H, &ids[k])) != 0) {
                failf(w->r, "same id: ss_delete = %d (%s)", rc, t_strerror(rc));
                break;
            }
            present[k] = false;
        }
        t_fill(buf, size, seed);
        if ((rc = ss_put(H, &ids[k], buf, size, NULL, 0)) != 0) {
            failf(w->r, "same id: ss_put = %d (%s)", rc, t_strerror(rc));
            break;
        }
        present[k] = true;
        seed_of[k] = seed;
        /* every view still held reads what it read when taken */
        for (unsigned i = 0; i < nheld; i++)
            if (!t_check(held[i].data, held[i].size, held[i].seed)) {
                failf(w->r, "same id: a held view changed after a put of its id");
                goto out;
            }
        if ((rc = ss_get(H, &ids[k], 1, 0, &o)) != 1) {
            failf(w->r, "same id: ss_get = %d (%s)", rc, t_strerror(rc));
            break;
        }
        if (!view_ok(w->r, &o, size, seed_of[k], "same id"))
            break;
        if (nheld == SAME_HELD) {
            /* release the view held longest of some id: the oldest entry
             * of that id goes, every other view stays intact */
            unsigned rk = held[(x >> 8) % nheld].k, i = 0;

            while (held[i].k != rk)
                i++;
            if (!release_ok(w->r, &ids[rk], "same id"))
                break;
            memmove(&held[i], &held[i + 1], (nheld - i - 1) * sizeof(held[0]));
            nheld--;
        }
        held[nheld++] = (typeof(held[0])){ k, seed_of[k], o.data, o.size };
    }
out:
    while (nheld > 0) {
        unsigned rk = held[0].k;

        if (!t_check(held[0].data, held[0].size, held[0].seed))
            failf(w->r, "same id: a held view changed before its release");
        if (!release_ok(w->r, &ids[rk], "same id"))
            break;
        memmove(&held[0], &held[1], (nheld - 1) * sizeof(held[0]));
        nheld--;
    }
    for (unsigned k = 0; k < SAME_IDS; k++)
        if (present[k] && (rc = ss_delete(H, &ids[k])) != 0)
            failf(w->r, "same id: ss_delete = %d (%s)", rc, t_strerror(rc));
    free(buf);
    return NULL;
}

/* Start the workers, let them run RUN_MS, fail with the first failure. */
static void workers_go(worker *ws, size_t n)
{
    run r = { .t_end_ms = now_ms() + RUN_MS };

    for (size_t i = 0; i < n; i++) {
        ws[i].r = &r;
        ws[i].no = (unsigned)i;
        assert_int_equal(pthread_create(&ws[i].th, NULL, ws[i].fn, &ws[i]), 0);
    }
    for (size_t i = 0; i < n; i++)
        assert_int_equal(pthread_join(ws[i].th, NULL), 0);
    if (atomic_load(&r.failed))
        fail_msg("%s", r.why);
}

/* Nothing is referenced at the store: how many objects it lists. */
static unsigned no_refs_left(void)
{
    ss_obj_info info[64];
    uint64_t cursor = 0;
    unsigned listed = 0;

    do {
        int k = ss_list(C, &cursor, info, 64);

        t_assert_ok(k);
        for (int i = 0; i < k; i++)
            assert_int_equal(info[i].refs, 0);
        listed += (unsigned)k;
    } while (cursor != 0);
    return listed;
}

/* Run the workers and check the outcome. */
static void run_workers(worker *ws, size_t n)
{
    ss_object o;

    workers_go(ws, n);
    for (size_t i = 0; i < n; i++)
        print_message("worker %zu: %llu iterations\n", i, (unsigned long long)ws[i].iters);

    /* the handle still serves, and sends the small releases still waiting
     * (with the next request: before the listing below is read) */
    assert_int_equal(ss_get(H, &obj_ids[0], 1, 0, &o), 1);
    assert_true(t_check(o.data, obj_sizes[0], 1));
    t_assert_ok(ss_release(H, &obj_ids[0]));
    for (unsigned i = 0; i < NOBJ; i++)
        assert_int_equal(ss_contains(H, &obj_ids[i]), 1);
    /* every reference the workers took was given back */
    assert_true(no_refs_left() >= NOBJ);
}

/* The reported case: get + release of an 800 KB object in one thread, 1 ms
 * gets of missing ids in another. */
static void test_get_release_beside_waiter(void **state)
{
    worker ws[2] = { { .fn = w_looper }, { .fn = w_waiter } };

    (void)state;
    run_workers(ws, 2);
}

static void test_mixed(void **state)
{
    worker ws[] = {
        { .fn = w_looper }, { .fn = w_waiter },     { .fn = w_late_batch },
        { .fn = w_mixer },  { .fn = w_mixer },      { .fn = w_churn },
    };

    (void)state;
    run_workers(ws, sizeof(ws) / sizeof(ws[0]));
}

/* several threads churn their own ids beside a waiter and a looper */
static void test_same_id_churn(void **state)
{
    worker ws[] = {
        { .fn = w_same_id }, { .fn = w_same_id }, { .fn = w_same_id },
        { .fn = w_waiter },  { .fn = w_looper },
    };

    (void)state;
    run_workers(ws, sizeof(ws) / sizeof(ws[0]));
}

/* ---- held objects, got again by several threads: served by the client */

/* small, 4 KiB, just above 64 KiB (its own segment), 1 MiB, empty */
static const unsigned held_k[] = { 1, 2, 5, 7, 8 };
#define NHELD (sizeof(held_k) / sizeof(held_k[0]))
static ss_object held_views[NHELD]; /* the main thread's, held throughout */

/* get all held ids (in an order of its own) + check every byte + release,
 * half by id, half by view */
static void *w_reget(void *a)
{
    worker *w = a;
    ss_id ids[NHELD];
    ss_object o[NHELD];
    unsigned at[NHELD];
    int rc;

    while (going(w)) {
        for (unsigned j = 0; j < NHELD; j++) {
            at[j] = (unsigned)((j + w->iters + w->no) % NHELD);
            ids[j] = obj_ids[held_k[at[j]]];
        }
        rc = ss_get(H, ids, NHELD, 0, o);
        if (rc != (int)NHELD) {
            failf(w->r, "reget: ss_get = %d (%s)", rc, t_strerror(rc));
            break;
        }
        for (unsigned j = 0; j < NHELD; j++) {
            unsigned k = held_k[at[j]];

            if (!view_ok(w->r, &o[j], obj_sizes[k], k + 1, "reget"))
                return NULL;
            if (o[j].data != held_views[at[j]].data || o[j].uid != held_views[at[j]].uid) {
                failf(w->r, "reget: another view of a held object");
                return NULL;
            }
            rc = (j + w->iters) % 2 ? ss_release(H, &ids[j]) : ss_release_object(H, &o[j]);
            if (rc != 0) {
                failf(w->r, "reget: release = %d (%s)", rc, t_strerror(rc));
                return NULL;
            }
        }
    }
    return NULL;
}

/* Threads get and release objects the handle holds, beside a looper whose
 * object is not held: the store sees the looper's gets only, every view
 * is the held one and reads right, and once the holder releases nothing
 * stays referenced. */
static void test_held_regets(void **state)
{
    worker ws[] = { { .fn = w_reget }, { .fn = w_reget }, { .fn = w_reget },
                    { .fn = w_looper } };
    size_t n = sizeof(ws) / sizeof(ws[0]);
    ss_stats st0 = { .size = sizeof(st0), .version = SS_STATS_VERSION }, st1 = st0;
    uint64_t regets = 0;

    (void)state;
    for (unsigned j = 0; j < NHELD; j++) {
        assert_int_equal(ss_get(H, &obj_ids[held_k[j]], 1, 0, &held_views[j]), 1);
        assert_true(t_check(held_views[j].data, obj_sizes[held_k[j]], held_k[j] + 1));
    }
    t_assert_ok(ss_stats_get(C, &st0));
    workers_go(ws, n);
    t_assert_ok(ss_stats_get(C, &st1));
    for (size_t i = 0; i + 1 < n; i++)
        regets += ws[i].iters;
    print_message("re-gets of %u held ids: %llu; looper gets: %llu; store gets: %llu\n",
                  (unsigned)NHELD, (unsigned long long)regets,
                  (unsigned long long)ws[n - 1].iters, (unsigned long long)(st1.gets - st0.gets));
    assert_true(regets > 0);
    /* only the looper's gets reached the store */
    assert_int_equal(st1.gets - st0.gets, ws[n - 1].iters);
    for (unsigned j = 0; j < NHELD; j++) {
        assert_true(t_check(held_views[j].data, obj_sizes[held_k[j]], held_k[j] + 1));
        t_assert_ok(ss_release(H, &obj_ids[held_k[j]]));
        assert_int_equal(ss_release(H, &obj_ids[held_k[j]]), -ENOENT);
    }
    /* a call carries the small releases still waiting; then nothing is
     * referenced */
    assert_int_equal(ss_contains(H, &obj_ids[0]), 1);
    assert_true(no_refs_left() >= NOBJ);
}

/* Mappings of object segments in this process (the embedded store maps
 * none of its own). */
static int obj_mappings(void)
{
    FILE *f = fopen("/proc/self/maps", "r");
    char line[512];
    int n = 0;

    if (!f)
        return -1;
    while (fgets(line, sizeof(line), f))
        n += strstr(line, "sealstore-obj") != NULL;
    fclose(f);
    return n;
}

typedef struct forever {
    ss_id id;
    int rc;
    ss_object o;
} forever;

static void *w_forever(void *a)
{
    forever *fw = a;

    fw->rc = ss_get(H, &fw->id, 1, -1, &fw->o);
    return NULL;
}

/* A get waiting forever keeps no segment released after it mapped. */
static void test_waiter_pins_nothing(void **state)
{
    enum { ITERS = 24, SIZE = 4 << 20 };
    forever fw = { .id = make_id("forever", 0, 0) };
    ss_stats st = { .size = sizeof(st), .version = SS_STATS_VERSION };
    void *buf = malloc(SIZE);
    pthread_t th;
    int base, most = 0;

    (void)state;
    assert_non_null(buf);
    assert_int_equal(pthread_create(&th, NULL, w_forever, &fw), 0);
    /* the get is parked at the store before the loop starts */
    for (;;) {
        t_assert_ok(ss_stats_get(C, &st));
        if (st.parked_requests > 0)
            break;
        t_sleep_ms(1);
    }
    base = obj_mappings();
    assert_true(base >= 0);
    for (unsigned i = 0; i < ITERS; i++) {
        ss_id id = make_id("pin", 0, i);
        ss_object o;
        int n;

        t_fill(buf, SIZE, 500 + i);
        t_assert_ok(ss_put(H, &id, buf, SIZE, NULL, 0));
        assert_int_equal(ss_get(H, &id, 1, 0, &o), 1);
        assert_true(t_check(o.data, SIZE, 500 + i));
        t_assert_ok(ss_release(H, &id));
        t_assert_ok(ss_delete(H, &id));
        n = obj_mappings() - base;
        if (n > most)
            most = n;
    }
    print_message("object mappings beside a waiting get: %d at most\n", most);
    /* the waiter gets its object once it is put */
    t_fill(buf, SIZE, 7);
    t_assert_ok(ss_put(C, &fw.id, buf, SIZE, NULL, 0));
    assert_int_equal(pthread_join(th, NULL), 0);
    /* the newest one or two may wait for the next reply; none older */
    assert_true(most <= 4);
    assert_int_equal(fw.rc, 1);
    assert_true(t_check(fw.o.data, SIZE, 7));
    t_assert_ok(ss_release(H, &fw.id));
    t_assert_ok(ss_delete(C, &fw.id));
    free(buf);
}

static int setup(void **state)
{
    void *buf = malloc(2 << 20);

    (void)state;
    snprintf(sock_path, sizeof(sock_path), "%s/store.sock", t_tmpdir());
    if (!buf || ss_connect(sock_path, SS_CONNECT_EMBED, &C) != 0) {
        free(buf);
        return -1;
    }
    for (unsigned i = 0; i < NOBJ; i++) {
        obj_ids[i] = make_id("obj", i, 0);
        t_fill(buf, obj_sizes[i], i + 1);
        if (ss_put(C, &obj_ids[i], buf, obj_sizes[i], NULL, 0) != 0) {
            free(buf);
            return -1;
        }
    }
    free(buf);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    ss_disconnect(C);
    return 0;
}

/* each case's own handle: a case that kills it leaves the next one alone */
static int case_setup(void **state)
{
    (void)state;
    return ss_connect(sock_path, 0, &H) == 0 ? 0 : -1;
}

/* A handle that serves re-gets of held objects itself (SEALSTORE_LOCAL_GETS) */
static int case_setup_local(void **state)
{
    int rc;

    (void)state;
    /* (the store counts the gets it answers: none from the index here) */
    if (ss_option_set(SS_OPT_LOCAL_GETS, "on") != 0 ||
        ss_option_set(SS_OPT_INDEX_GETS, "off") != 0)
        return -1;
    rc = ss_connect(sock_path, 0, &H);
    if (ss_option_set(SS_OPT_LOCAL_GETS, "off") != 0 ||
        ss_option_set(SS_OPT_INDEX_GETS, "on") != 0)
        return -1;
    return rc == 0 ? 0 : -1;
}

static int case_teardown(void **state)
{
    (void)state;
    ss_disconnect(H);
    H = NULL;
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_get_release_beside_waiter, case_setup,
                                        case_teardown),
        cmocka_unit_test_setup_teardown(test_mixed, case_setup, case_teardown),
        cmocka_unit_test_setup_teardown(test_same_id_churn, case_setup, case_teardown),
        cmocka_unit_test_setup_teardown(test_waiter_pins_nothing, case_setup, case_teardown),
        cmocka_unit_test_setup_teardown(test_held_regets, case_setup_local, case_teardown),
    };

    /* room for everything, and nothing spilled: every get finds its
     * object in memory at once */
    if (ss_option_set(SS_OPT_CAPACITY, "256M") != 0 || ss_option_set(SS_OPT_SPILL_DIR, "off") != 0)
        return T_EXIT_ERROR;
    return t_run(tests, setup, teardown);
}
