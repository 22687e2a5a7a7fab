/* SPDX-License-Identifier: MIT */
/*
 * ss_contains() answered from the store's shared index (client_index.c),
 * raced against puts and deletes, through the public API.
 *
 * Writer threads each own some ids and cycle them: put (small and large
 * objects), then delete. Around each call they publish the id's phase in
 * a word readers can see (seq_cst): ABSENT (initially, and once a delete
 * returned), PUTTING (before the put is called), SEALED (once it
 * returned), DELETING (before the delete is called), with a generation
 * bumped at every change. Readers (threads with their own handles, two
 * threads sharing one, and a reader in a child process unless under
 * ThreadSanitizer) call ss_contains() on random ids between two reads of
 * the word: when both reads agree, the whole call ran while the object
 * was known sealed (it must say 1) or known absent (it must say 0). A
 * filler thread meanwhile puts and deletes thousands of other objects, so
 * the index grows under the readers (a larger hash table: a new bucket
 * memfd; a second chunk) and its entries are reused.
 *
 * Failures: a 1 after the deleting writer's ss_delete() returned and
 * before its next put started; a 0 between a put's return and the next
 * delete's start; any error. The run must also have checked both kinds
 * many times. Default 1.5 s; SS_STRESS_SECONDS=N runs N seconds (the long
 * version, tests/README.md).
 *
 * Also: a store that stops tells the clients that map its index, which
 * then answer from it no more.
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
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define NIDS 64          /* ids the writers cycle */
#define NWRITERS 2
#define FILL_BATCH 128
#define NFILL (133 * FILL_BATCH) /* filler objects per round: past one index chunk */

enum { P_ABSENT, P_PUTTING, P_SEALED, P_DELETING };

/* Shared with the child reader (MAP_SHARED). */
typedef struct shared {
    _Atomic uint64_t phase[NIDS];  /* gen << 2 | P_* */
    atomic_bool stop;
    atomic_int failed;
    char why[256];
    _Atomic uint64_t checked_sealed, checked_absent, calls;
    uint64_t t_end_ms;
    uint64_t t_cap_ms; /* past t_end_ms, run on to here while a kind of check
                          has not reached MIN_CHECKS (a slow build, a loaded
                          machine): the counts are asserted, not the time */
} shared;

#define MIN_CHECKS 100
#define CAP_MS 60000

static shared *S;
static char sock_path[108];
static ss_client *C; /* the host's handle: the store is embedded here */

static uint64_t now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static ss_id make_id(const char *tag, unsigned n)
{
    ss_id id;

    memset(&id, 0, sizeof(id));
    snprintf((char *)id.b, sizeof(id.b), "ct-%s-%u", tag, n);
    return id;
}

static void failf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void failf(const char *fmt, ...)
{
    int no = 0;

    if (atomic_compare_exchange_strong(&S->failed, &no, 1)) {
        va_list ap;

        va_start(ap, fmt);
        vsnprintf(S->why, sizeof(S->why), fmt, ap);
        va_end(ap);
    }
    atomic_store(&S->stop, true);
}

static bool going(void)
{
    if (atomic_load(&S->stop))
        return false;
    uint64_t now = now_ms();

    if (now >= S->t_end_ms &&
        (now >= S->t_cap_ms || (atomic_load(&S->checked_sealed) >= MIN_CHECKS &&
                                atomic_load(&S->checked_absent) >= MIN_CHECKS))) {
        atomic_store(&S->stop, true);
        return false;
    }
    return true;
}

static void set_phase(unsigned i, unsigned p)
{
    uint64_t w = atomic_load(&S->phase[i]);

    atomic_store(&S->phase[i], ((w >> 2) + 1) << 2 | p);
}

static ss_client *connect_or_fail(void)
{
    ss_client *c = NULL;
    int rc = ss_connect(sock_path, 0, &c);

    if (rc != 0)
        failf("ss_connect: %s", ss_strerror(rc));
    return rc == 0 ? c : NULL;
}

/* Writer w: ids w, w + NWRITERS, ... put and deleted in turn. */
static void *writer(void *arg)
{
    unsigned w = (unsigned)(uintptr_t)arg, seed = w * 7919 + 1;
    static const uint64_t sizes[] = { 100, 1024, 100 * 1024 };
    static char buf[2][100 * 1024];
    ss_client *c = connect_or_fail();

    if (!c)
        return NULL;
    memset(buf[w], 'w', sizeof(buf[w]));
    while (going()) {
        unsigned i = w + NWRITERS * (rand_r(&seed) % (NIDS / NWRITERS));
        ss_id id = make_id("obj", i);
        int rc;

        if ((atomic_load(&S->phase[i]) & 3) == P_ABSENT) {
            set_phase(i, P_PUTTING);
            rc = ss_put(c, &id, buf[w], sizes[rand_r(&seed) % 3], NULL, 0);
            if (rc != 0) {
                failf("put %u: %s", i, ss_strerror(rc));
                break;
            }
            set_phase(i, P_SEALED);
        } else {
            set_phase(i, P_DELETING);
            rc = ss_delete(c, &id);
            if (rc != 0) {
                failf("delete %u: %s", i, ss_strerror(rc));
                break;
            }
            set_phase(i, P_ABSENT);
        }
    }
    ss_disconnect(c);
    return NULL;
}

/* Puts NFILL other objects, then deletes them, again and again. */
static void *filler(void *arg)
{
    static ss_put_item items[FILL_BATCH];
    static int status[FILL_BATCH];
    static ss_id ids[FILL_BATCH];
    ss_client *c = connect_or_fail();
    unsigned round = 0;

    (void)arg;
    if (!c)
        return NULL;
    while (going()) {
        for (unsigned n = 0; n < NFILL && going(); n += FILL_BATCH) {
            for (unsigned k = 0; k < FILL_BATCH; k++) {
                ids[k] = make_id("fill", n + k);
                items[k] = (ss_put_item){ .id = ids[k], .data = "f", .size = 1 };
            }
            int rc = ss_put_many(c, items, FILL_BATCH, status);
            if (rc != FILL_BATCH) {
                failf("filler round %u: put_many stored %d of %d", round, rc, FILL_BATCH);
                break;
            }
        }
        for (unsigned n = 0; n < NFILL && going(); n++) {
            ss_id id = make_id("fill", n);
            int rc = ss_delete(c, &id);
            if (rc != 0 && rc != -ENOENT) {
                failf("filler round %u: delete: %s", round, ss_strerror(rc));
                break;
            }
        }
        round++;
    }
    /* a stop in the middle leaves fill objects: the next round or the
     * store's end drops them */
    ss_disconnect(c);
    return NULL;
}

/* Readers on c (NULL: a handle of its own). */
static void read_loop(ss_client *c, unsigned seed)
{
    while (going()) {
        unsigned i = rand_r(&seed) % NIDS;
        ss_id id = make_id("obj", i);
        uint64_t w1 = atomic_load(&S->phase[i]);
        int r = ss_contains(c, &id);
        uint64_t w2 = atomic_load(&S->phase[i]);

        atomic_fetch_add(&S->calls, 1);
        if (r < 0) {
            failf("contains %u: %s", i, ss_strerror(r));
            return;
        }
        if (w1 == w2 && (w1 & 3) == P_SEALED) {
            if (r != 1) {
                failf("contains %u said %d while it was sealed (gen %llu)", i, r,
                      (unsigned long long)(w1 >> 2));
                return;
            }
            atomic_fetch_add(&S->checked_sealed, 1);
        } else if (w1 == w2 && (w1 & 3) == P_ABSENT) {
            if (r != 0) {
                failf("contains %u said %d after its delete returned (gen %llu)", i, r,
                      (unsigned long long)(w1 >> 2));
                return;
            }
            atomic_fetch_add(&S->checked_absent, 1);
        }
        /* the filler's objects: any answer, no error */
        if ((seed & 7) == 0) {
            ss_id f = make_id("fill", rand_r(&seed) % NFILL);
            if ((r = ss_contains(c, &f)) < 0) {
                failf("contains fill: %s", ss_strerror(r));
                return;
            }
        }
    }
}

typedef struct reader {
    ss_client *shared_handle; /* NULL: its own */
    unsigned seed;
    pthread_t th;
} reader;

static void *reader_main(void *arg)
{
    reader *rd = arg;
    ss_client *c = rd->shared_handle ? rd->shared_handle : connect_or_fail();

    if (!c)
        return NULL;
    read_loop(c, rd->seed);
    if (!rd->shared_handle)
        ss_disconnect(c);
    return NULL;
}

static void test_contains_races(void **state)
{
    pthread_t wr[NWRITERS], fill;
    reader rd[4];
    ss_client *both = NULL;
    pid_t child = -1;
    const char *secs = getenv("SS_STRESS_SECONDS");
    uint64_t ms = secs ? (uint64_t)strtoul(secs, NULL, 10) * 1000 : 1500;
    (void)state;

    memset(S, 0, sizeof(*S));
    S->t_end_ms = now_ms() + ms;
    S->t_cap_ms = S->t_end_ms + CAP_MS;
#ifndef T_TSAN
    /* a reader in another process, forked before any thread of ours */
    child = fork();
    if (child < 0)
        exit(T_EXIT_ERROR);
    if (child == 0) {
        ss_client *c = NULL;
        if (ss_connect(sock_path, 0, &c) != 0) {
            failf("child: ss_connect failed");
            _exit(1);
        }
        read_loop(c, 4242);
        ss_disconnect(c);
        _exit(0);
    }
#endif
    t_assert_ok(ss_connect(sock_path, 0, &both));
    for (unsigned i = 0; i < 4; i++) {
        rd[i] = (reader){ .shared_handle = i >= 2 ? both : NULL, .seed = 17 * i + 3 };
        assert_int_equal(pthread_create(&rd[i].th, NULL, reader_main, &rd[i]), 0);
    }
    for (unsigned i = 0; i < NWRITERS; i++)
        assert_int_equal(pthread_create(&wr[i], NULL, writer, (void *)(uintptr_t)i), 0);
    assert_int_equal(pthread_create(&fill, NULL, filler, NULL), 0);
    for (unsigned i = 0; i < NWRITERS; i++)
        pthread_join(wr[i], NULL);
    pthread_join(fill, NULL);
    for (unsigned i = 0; i < 4; i++)
        pthread_join(rd[i].th, NULL);
    ss_disconnect(both);
    if (child > 0) {
        int st;
        assert_int_equal(waitpid(child, &st, 0), child);
        if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
            failf("child reader: status %d", st);
    }
    if (atomic_load(&S->failed))
        fail_msg("%s", S->why);
    print_message("%llu contains, %llu checked sealed, %llu checked absent\n",
                  (unsigned long long)S->calls, (unsigned long long)S->checked_sealed,
                  (unsigned long long)S->checked_absent);
    /* not vacuous: both kinds were checked, many times */
    assert_true(S->checked_sealed >= MIN_CHECKS);
    assert_true(S->checked_absent >= MIN_CHECKS);
}

/* A store that stops (its embedding handle disconnects) says so in its
 * index: a client that mapped it answers nothing from it any more, but
 * the error the connection's end gives. */
static void test_stopped_store(void **state)
{
    char path[108];
    ss_client *host, *c;
    ss_id id = make_id("stop", 0);
    (void)state;

    snprintf(path, sizeof(path), "%s/stop.sock", t_tmpdir());
    t_assert_ok(ss_connect(path, SS_CONNECT_EMBED, &host));
    t_assert_ok(ss_connect(path, 0, &c));
    t_assert_ok(ss_put(host, &id, "x", 1, NULL, 0));
    assert_int_equal(ss_contains(c, &id), 1);
    assert_int_equal(ss_contains(c, &id), 1);
    ss_disconnect(host); /* the store stops */
    assert_true(ss_contains(c, &id) < 0);
    ss_disconnect(c);
}

static int setup(void **state)
{
    (void)state;
    S = mmap(NULL, sizeof(*S), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (S == MAP_FAILED)
        return -1;
    snprintf(sock_path, sizeof(sock_path), "%s/store.sock", t_tmpdir());
    return ss_connect(sock_path, SS_CONNECT_EMBED, &C) == 0 ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    ss_disconnect(C);
    munmap(S, sizeof(*S));
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_contains_races),
        cmocka_unit_test(test_stopped_store),
    };

    return t_run(tests, setup, teardown);
}
