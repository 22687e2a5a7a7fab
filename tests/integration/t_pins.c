/* SPDX-License-Identifier: MIT */
/*
 * Gets served from the store's shared index with a pin (client_index.c,
 * store_int.h "Pin areas"), through the public API, against a store
 * embedded in this process.
 *
 * Cases:
 *  - a get of an object in memory the handle maps already asks nobody (the
 *    store's get count does not move) and returns the right bytes and uid;
 *    a delete that returned is seen (the get asks the store, which says no);
 *  - a pinned view outlives a delete by another client while the store
 *    refills the same memory with other objects; the release frees the
 *    object (the store's live arena bytes fall back);
 *  - a pinned object is not spilled under memory pressure (its bytes stay
 *    intact while the store spills everything else);
 *  - a client killed while it pins a deleted object: the store frees it;
 *  - garbage written into a pin area changes nothing but what is kept;
 *  - a stress: reader processes and threads get random ids, hold them
 *    across the writer's deletes and re-puts (each put of an id carries a
 *    new version and a checksum over its bytes), check every view at the
 *    get and again before its release, and release; the writer meanwhile
 *    fills the freed memory with other objects. A torn read, a view whose
 *    memory was reused, or a get that returns an object deleted before the
 *    get began fails it. Default 1.5 s; SS_STRESS_SECONDS=N for longer
 *    (tests/README.md).
 */
#define _GNU_SOURCE
#include "sealstore.h"
#include "t_helpers.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MIB (1u << 20)

static ss_id make_id(const char *tag, unsigned n, unsigned v)
{
    ss_id id;

    memset(&id, 0, sizeof(id));
    snprintf((char *)id.b, sizeof(id.b), "%.8s%06u%05u", tag, n % 1000000u, v % 100000u);
    return id;
}

static ss_client *conn(void)
{
    ss_client *c = NULL;

    t_assert_ok(ss_connect(t_embed_path, 0, &c));
    return c;
}

static void put_pattern(ss_client *c, const ss_id *id, uint64_t size, unsigned seed)
{
    void *b = malloc(size);

    assert_non_null(b);
    t_fill(b, size, seed);
    t_assert_ok(ss_put(c, id, b, size, NULL, 0));
    free(b);
}

/* Map the arena an object lives in (one get the store answers). */
static void warm(ss_client *r, const ss_id *id)
{
    ss_object o;

    assert_int_equal(ss_get(r, id, 1, 0, &o), 1);
    t_assert_ok(ss_release_object(r, &o));
}

static void wait_live_bytes(ss_client *c, uint64_t at_most)
{
    for (int i = 0; i < 2000; i++) {
        if (t_store_stats(c).arena_live_bytes <= at_most)
            return;
        t_sleep_ms(5);
    }
    fail_msg("arena_live_bytes stays %llu > %llu",
             (unsigned long long)t_store_stats(c).arena_live_bytes, (unsigned long long)at_most);
}

static void t_served_from_index(void **state)
{
    ss_client *r = conn();
    ss_id a = make_id("basic", 1, 0), b = make_id("basic", 2, 0);
    ss_object o, two[2];
    ss_stats s0, s1;

    (void)state;
    put_pattern(t_embed, &a, MIB, 11);
    put_pattern(t_embed, &b, 100, 12); /* a small object */
    warm(r, &a);
    warm(r, &b);
    s0 = t_store_stats(t_embed);
    for (int i = 0; i < 1000; i++) {
        assert_int_equal(ss_get(r, &a, 1, 0, &o), 1);
        assert_int_equal(o.size, MIB);
        assert_int_equal(o.uid, (uint32_t)geteuid());
        assert_true(t_check(o.data, MIB, 11));
        t_assert_ok(ss_release(r, &a));
    }
    assert_int_equal(ss_get(r, (ss_id[]){ a, b }, 2, 0, two), 2);
    assert_true(t_check(two[0].data, MIB, 11) && t_check(two[1].data, 100, 12));
    t_assert_ok(ss_release_objects(r, two, 2));
    s1 = t_store_stats(t_embed);
    assert_int_equal(s1.gets, s0.gets); /* nobody asked the store */

    t_assert_ok(ss_delete(t_embed, &a));
    assert_int_equal(ss_get(r, &a, 1, 0, &o), 0); /* the delete returned: not found */
    t_assert_ok(ss_delete(t_embed, &b));
    ss_disconnect(r);
}

/* refs of id as ss_list reports it, -1: not listed */
static long list_refs(ss_client *c, const ss_id *id)
{
    uint64_t cur = 0;
    ss_obj_info info[64];
    long refs = -1;

    do {
        int n = ss_list(c, &cur, info, 64);
        assert_true(n >= 0);
        for (int i = 0; i < n; i++)
            if (!memcmp(&info[i].id, id, sizeof(*id)))
                refs = info[i].refs;
    } while (cur);
    return refs;
}

static void t_pin_outlives_delete(void **state)
{
    ss_client *r = conn();
    ss_id a = make_id("outlive", 1, 0);
    ss_object o;
    uint64_t base;

    (void)state;
    base = t_store_stats(t_embed).arena_live_bytes;
    put_pattern(t_embed, &a, MIB, 21);
    warm(r, &a);
    assert_int_equal(list_refs(t_embed, &a), 0);
    assert_int_equal(ss_get(r, &a, 1, 0, &o), 1); /* pinned */
    assert_int_equal(list_refs(t_embed, &a), 1); /* a pin counts as a reference */
    t_assert_ok(ss_delete(t_embed, &a));
    /* the same arena space would be reused at once if it were free */
    for (unsigned i = 0; i < 8; i++) {
        ss_id f = make_id("refill", i, 0);
        put_pattern(t_embed, &f, MIB, 100 + i);
        t_assert_ok(ss_delete(t_embed, &f));
    }
    assert_true(t_check(o.data, MIB, 21));
    assert_true(t_store_stats(t_embed).arena_live_bytes >= base + MIB);
    t_assert_ok(ss_release_object(r, &o)); /* UNPIN: the store frees it */
    wait_live_bytes(t_embed, base);
    ss_disconnect(r);
}

static void t_pin_client_killed(void **state)
{
    ss_id a = make_id("killed", 1, 0);
    int p[2];
    pid_t pid;
    uint64_t base;
    char ch;
    int st;

    (void)state;
    if (t_under_valgrind()) {
        print_message("skipped under valgrind: a forked child's mmap trips valgrind\n");
        skip();
    }
    base = t_store_stats(t_embed).arena_live_bytes;
    put_pattern(t_embed, &a, MIB, 31);
    assert_int_equal(pipe(p), 0);
    pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        ss_client *r;
        ss_object o;

        close(p[0]);
        (void)prctl(PR_SET_PDEATHSIG, SIGKILL); /* never outlive a failed case */
        if (ss_connect(t_embed_path, 0, &r) != 0)
            _exit(2);
        warm(r, &a);
        if (ss_get(r, &a, 1, 0, &o) != 1 || !t_check(o.data, MIB, 31))
            _exit(3);
        if (write(p[1], "p", 1) != 1)
            _exit(4);
        pause(); /* killed holding its pin */
        _exit(5);
    }
    close(p[1]);
    assert_int_equal(read(p[0], &ch, 1), 1);
    close(p[0]);
    t_assert_ok(ss_delete(t_embed, &a));
    assert_true(t_store_stats(t_embed).arena_live_bytes >= base + MIB); /* pinned */
    assert_int_equal(kill(pid, SIGKILL), 0);
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_true(WIFSIGNALED(st));
    wait_live_bytes(t_embed, base);
}

/* Is address p mapped in this process? */
static bool mapped(const void *p)
{
    FILE *f = fopen("/proc/self/maps", "r");
    char line[512];
    bool in = false;

    assert_non_null(f);
    while (!in && fgets(line, sizeof(line), f)) {
        unsigned long lo, hi;
        in = sscanf(line, "%lx-%lx", &lo, &hi) == 2 && (uintptr_t)p >= lo && (uintptr_t)p < hi;
    }
    fclose(f);
    return in;
}

/* A segment larger than the handle's map cache stays mapped while the
 * index says its object lives (so a 1 GiB object's re-get is served from
 * the index), and goes at the handle's next get that asks the store once
 * another client deleted the object. */
static void t_large_kept_while_alive(void **state)
{
    char old[64];
    ss_client *r;
    ss_id a = make_id("bigkeep", 1, 0), none = make_id("bigkeep", 2, 0);
    ss_object o;
    ss_stats s0;
    const void *addr;

    (void)state;
    assert_true(ss_option_get(SS_OPT_MAP_CACHE, old, sizeof(old)) > 0);
    t_assert_ok(ss_option_set(SS_OPT_MAP_CACHE, "1M"));
    r = conn();
    t_assert_ok(ss_option_set(SS_OPT_MAP_CACHE, old));
    put_pattern(t_embed, &a, 16 * MIB, 61);
    warm(r, &a); /* (a handle's first get maps no index: a second) */
    warm(r, &a);
    s0 = t_store_stats(t_embed);
    assert_int_equal(ss_get(r, &a, 1, 0, &o), 1); /* its memory is still mapped */
    assert_int_equal(t_store_stats(t_embed).gets, s0.gets);
    assert_true(t_check(o.data, 16 * MIB, 61));
    addr = o.data;
    t_assert_ok(ss_release_object(r, &o));
    assert_true(mapped(addr));
    t_assert_ok(ss_delete(t_embed, &a));
    assert_int_equal(ss_get(r, &none, 1, 0, &o), 0); /* asks the store */
    assert_false(mapped(addr));
    ss_disconnect(r);
}

/* The pin area is this process's mapping of a memfd named sealstore-pins:
 * write garbage over all of it (hw included). */
static int scribble_pins(unsigned seed)
{
    FILE *f = fopen("/proc/self/maps", "r");
    char line[512];
    int found = 0;

    assert_non_null(f);
    while (fgets(line, sizeof(line), f)) {
        unsigned long lo, hi;
        if (!strstr(line, "sealstore-pins") || sscanf(line, "%lx-%lx", &lo, &hi) != 2 ||
            !strstr(line, "rw"))
            continue;
        for (uint64_t *w = (uint64_t *)lo; (unsigned long)w < hi; w++)
            *w = ((uint64_t)rand_r(&seed) << 33) ^ (uint64_t)rand_r(&seed);
        found++;
    }
    fclose(f);
    return found;
}

static void t_pin_area_garbage(void **state)
{
    ss_client *r = conn();
    ss_id a = make_id("garbage", 1, 0);
    ss_object o;
    uint64_t base;

    (void)state;
    base = t_store_stats(t_embed).arena_live_bytes;
    put_pattern(t_embed, &a, MIB, 41);
    warm(r, &a);
    assert_int_equal(ss_get(r, &a, 1, 0, &o), 1);
    assert_int_equal(scribble_pins(7), 1);
    /* the garbage replaced our pin: the store may free the object now */
    t_assert_ok(ss_delete(t_embed, &a));
    wait_live_bytes(t_embed, base);
    for (unsigned i = 0; i < 16; i++) { /* the store still works, and so do frees */
        ss_id f = make_id("garbage", 100 + i, 0);
        put_pattern(t_embed, &f, MIB, i);
        t_assert_ok(ss_delete(t_embed, &f));
    }
    wait_live_bytes(t_embed, base);
    /* the library's own release of its pin is harmless */
    t_assert_ok(ss_release_object(r, &o));
    ss_disconnect(r);
}

/* ----------------------------------------------------------------- spill */

#define SZ (256u << 10)

static void t_pinned_not_spilled(void **state)
{
    ss_client *c, *r;
    ss_id a = make_id("spill", 1, 0);
    ss_object o;
    char dir[512], path[600];

    (void)state;
    snprintf(dir, sizeof(dir), "%s/spill", t_tmpdir());
    snprintf(path, sizeof(path), "%s/spill.sock", t_tmpdir());
    if (t_tight_store_options(48, "5s") < 0 || ss_option_set(SS_OPT_SPILL_DIR, dir) != 0)
        fail_msg("options");
    t_assert_ok(ss_connect(path, SS_CONNECT_EMBED, &c));
    t_assert_ok(ss_connect(path, 0, &r));
    /* 256 KiB objects share arenas (of capacity / 8): a spilled one's
     * place goes to the next put at once */
    put_pattern(c, &a, SZ, 51);
    warm(r, &a);
    warm(r, &a);
    assert_int_equal(ss_get(r, &a, 1, 0, &o), 1);
    /* four times the capacity: everything unpinned goes to disk */
    for (unsigned i = 0; i < 4 * 48 * 4; i++) {
        ss_id f = make_id("spillf", i, 0);
        put_pattern(c, &f, SZ, 200 + i);
    }
    assert_true(t_store_stats(c).spilled_objects > 100);
    assert_true(t_check(o.data, SZ, 51));
    t_assert_ok(ss_release_object(r, &o));
    /* still stored, still right */
    assert_int_equal(ss_get(r, &a, 1, 5000, &o), 1);
    assert_true(t_check(o.data, SZ, 51));
    t_assert_ok(ss_release_object(r, &o));
    ss_disconnect(r);
    ss_disconnect(c);
}

/* ---------------------------------------------------------------- stress */

#define NIDS 24
#define NREADERS 2   /* threads per reader process */
#define NPROCS 2     /* reader processes (besides this one's threads) */

typedef struct hdr {
    uint32_t k, version;
    uint64_t size, sum;
} hdr;

typedef struct shared {
    atomic_int stop;
    atomic_ulong checked, held_across, failures;
    char why[256];
} shared;

static shared *S;

static uint64_t sum_of(const unsigned char *p, uint64_t n)
{
    uint64_t h = 0xcbf29ce484222325ull;

    for (uint64_t i = 0; i < n; i++)
        h = (h ^ p[i]) * 0x100000001b3ull;
    return h;
}

static uint64_t size_of(unsigned k, unsigned v)
{
    static const uint64_t sizes[] = { 200, 3000, 70000, 300000, MIB + 4096 };
    return sizes[(k + v) % 5];
}

static void failf(const char *msg)
{
    if (atomic_fetch_add(&S->failures, 1) == 0)
        snprintf(S->why, sizeof(S->why), "%s", msg);
}

/* The object k as it must look: its header names k, the size is right and
 * the sum covers the bytes after the header. */
static bool view_ok(const ss_object *o, unsigned k)
{
    hdr h;

    if (o->size < sizeof(h))
        return false;
    memcpy(&h, o->data, sizeof(h));
    return h.k == k && h.size == o->size && h.size == size_of(k, h.version) &&
           sum_of((const unsigned char *)o->data + sizeof(h), o->size - sizeof(h)) == h.sum;
}

static void *reader(void *arg)
{
    ss_client *c;
    unsigned seed = (unsigned)(uintptr_t)arg;
    ss_object held[4];
    unsigned hk[4], nheld = 0;

    if (ss_connect(t_embed_path, 0, &c) != 0) {
        failf("reader connect");
        return NULL;
    }
    while (!atomic_load(&S->stop)) {
        unsigned k = (unsigned)rand_r(&seed) % NIDS;
        ss_id id = make_id("stress", k, 0);
        ss_object o;
        int rc = ss_get(c, &id, 1, 0, &o);

        if (rc < 0) {
            failf("get failed");
            break;
        }
        if (rc == 0)
            continue;
        if (!view_ok(&o, k)) {
            failf("a view's bytes are wrong at the get");
            break;
        }
        atomic_fetch_add(&S->checked, 1);
        if (nheld < 4) { /* hold it across the writer's next deletes */
            held[nheld] = o;
            hk[nheld++] = k;
            continue;
        }
        for (unsigned i = 0; i < nheld; i++) {
            if (!view_ok(&held[i], hk[i])) {
                failf("a held view changed before its release");
                break;
            }
            ss_release_object(c, &held[i]);
            atomic_fetch_add(&S->held_across, 1);
        }
        nheld = 0;
        ss_release_object(c, &o);
    }
    for (unsigned i = 0; i < nheld; i++)
        ss_release_object(c, &held[i]);
    ss_disconnect(c);
    return NULL;
}

static void reader_process(unsigned seed)
{
    pthread_t th[NREADERS];

#ifdef T_TSAN
    /* ThreadSanitizer cannot start threads in a child of a threaded
     * process: one reader, on the child's own thread */
    reader((void *)(uintptr_t)seed);
    return;
#endif

    for (unsigned i = 0; i < NREADERS; i++)
        pthread_create(&th[i], NULL, reader, (void *)(uintptr_t)(seed + i));
    for (unsigned i = 0; i < NREADERS; i++)
        pthread_join(th[i], NULL);
}

static void put_version(unsigned k, unsigned v, unsigned char *buf)
{
    ss_id id = make_id("stress", k, 0);
    uint64_t n = size_of(k, v);
    hdr h = { .k = k, .version = v, .size = n };

    t_fill(buf + sizeof(h), n - sizeof(h), k * 7919u + v);
    h.sum = sum_of(buf + sizeof(h), n - sizeof(h));
    memcpy(buf, &h, sizeof(h));
    t_assert_ok(ss_put(t_embed, &id, buf, n, NULL, 0));
}

static void t_stress(void **state)
{
    const char *env = getenv("SS_STRESS_SECONDS");
    double secs = env ? atof(env) : 1.5;
    unsigned char *buf = malloc(MIB + 8192);
    unsigned version[NIDS] = { 0 };
    pid_t kids[NPROCS];
    unsigned nprocs = t_under_valgrind() ? 0 : NPROCS; /* see t_under_valgrind */
    pthread_t th[NREADERS];
    struct timespec t0, t;
    unsigned long rounds = 0;

    (void)state;
    S = mmap(NULL, sizeof(*S), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    assert_true(S != MAP_FAILED && buf);
    for (unsigned k = 0; k < NIDS; k++)
        put_version(k, 0, buf);
    for (unsigned i = 0; i < nprocs; i++) {
        kids[i] = fork();
        assert_true(kids[i] >= 0);
        if (kids[i] == 0) {
            (void)prctl(PR_SET_PDEATHSIG, SIGKILL);
            reader_process(1000u * (i + 1));
            _exit(0);
        }
    }
    for (unsigned i = 0; i < NREADERS; i++)
        pthread_create(&th[i], NULL, reader, (void *)(uintptr_t)(77u + i));
    clock_gettime(CLOCK_MONOTONIC, &t0);
    do {
        unsigned k = rounds % NIDS;
        ss_id id = make_id("stress", k, 0), f = make_id("stressf", (unsigned)rounds, 0);

        t_assert_ok(ss_delete(t_embed, &id));
        /* the freed memory goes to another object at once, if it is free */
        put_pattern(t_embed, &f, size_of(k, version[k]), (unsigned)rounds);
        put_version(k, ++version[k], buf);
        t_assert_ok(ss_delete(t_embed, &f));
        rounds++;
        clock_gettime(CLOCK_MONOTONIC, &t);
    } while (!atomic_load(&S->failures) &&
             (double)(t.tv_sec - t0.tv_sec) + (double)(t.tv_nsec - t0.tv_nsec) / 1e9 < secs);
    atomic_store(&S->stop, 1);
    for (unsigned i = 0; i < NREADERS; i++)
        pthread_join(th[i], NULL);
    for (unsigned i = 0; i < nprocs; i++) {
        int st;
        assert_int_equal(waitpid(kids[i], &st, 0), kids[i]);
        assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    }
    print_message("pins stress: %lu writer rounds, %lu views checked, %lu held across deletes\n",
                  rounds, (unsigned long)S->checked, (unsigned long)S->held_across);
    if (S->failures)
        fail_msg("%lu failures, first: %s", (unsigned long)S->failures, S->why);
    assert_true(S->checked > 100 && S->held_across > 10);
    for (unsigned k = 0; k < NIDS; k++) {
        ss_id id = make_id("stress", k, 0);
        t_assert_ok(ss_delete(t_embed, &id));
    }
    munmap(S, sizeof(*S));
    free(buf);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(t_served_from_index),
        cmocka_unit_test(t_pin_outlives_delete),
        cmocka_unit_test(t_pin_client_killed),
        cmocka_unit_test(t_pin_area_garbage),
        cmocka_unit_test(t_large_kept_while_alive),
        cmocka_unit_test(t_stress),
    };
    const struct CMUnitTest spill[] = {
        cmocka_unit_test(t_pinned_not_spilled),
    };
    int failures;

    failures = cmocka_run_group_tests_name("pins", tests, t_embed_setup, t_embed_teardown);
    failures += cmocka_run_group_tests_name("pins, spilling", spill, NULL, NULL);
    return t_finish(failures, 7);
}
