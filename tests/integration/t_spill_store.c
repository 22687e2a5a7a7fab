/* SPDX-License-Identifier: MIT */
/*
 * Spilling through the store (doc/design.md, the spill engine), with the public API against stores
 * embedded in this process (ss_connect(..., SS_CONNECT_EMBED)); a
 * disconnect stops the embedded store and a new connect starts another on
 * the same socket, which is how a restart is played. Every object's bytes
 * and meta come from a generator keyed by its number, so every read is
 * checked bit for bit.
 *
 * Covered: a 32 MiB store filled with 4x its capacity of mixed small and
 * large objects, all read back, then again after a restart on the same
 * spill directory (every object that was on disk is found; deletes empty
 * the directory, which goes away with the store); a spilled object
 * restored once for several threads getting it at the same time; gets of
 * in-memory objects going on while the store spills; a corrupted spill
 * file (found at startup) and a record corrupted under a running store:
 * only that object is lost, with -ENOENT on its get; a FIFO and a 64 GiB
 * sparse file of garbage named like spill files; a spill directory on a
 * 16 MiB tmpfs (buffered I/O) that fills up: creates fail with -ENOSPC at
 * their timeout and every sealed object is still readable; deletes that
 * a crash right after does not undo; a get of a spilled object with
 * memory and spill space full answers at its own timeout (SS_E_FULL);
 * spilling off.
 */
#include "config.h"

#include "sealstore.h"
#include "t_helpers.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>

#define SMALL_MAX (64u * 1024)
#define CAP "32M"
#define CAP_BYTES (32ull << 20)
#define GET_MS 20000

/* ------------------------------------------------------------ generator */

static uint64_t mix(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ull;
    return x ^ (x >> 33);
}

/* The bytes of object `n` (stream 0: data, 1: meta). */
static void gen(unsigned n, int stream, unsigned char *p, uint64_t len)
{
    uint64_t x = mix(((uint64_t)n << 8) | (uint64_t)stream | 0x5a5a000000000000ull);
    uint64_t i = 0;

    for (; i + 8 <= len; i += 8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        memcpy(p + i, &x, 8);
    }
    for (x = mix(x); i < len; i++, x >>= 8)
        p[i] = (unsigned char)x;
}

static bool gen_equal(unsigned n, int stream, const unsigned char *p, uint64_t len)
{
    static _Thread_local unsigned char buf[1 << 16]; /* threads check too */

    /* regenerate in pieces: compare the stream, not a second copy */
    uint64_t x = mix(((uint64_t)n << 8) | (uint64_t)stream | 0x5a5a000000000000ull);
    uint64_t i = 0;

    while (len - i >= 8) {
        uint64_t k = 0, chunk = len - i < sizeof(buf) ? (len - i) & ~7ull : sizeof(buf);
        for (; k < chunk; k += 8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            memcpy(buf + k, &x, 8);
        }
        if (memcmp(buf, p + i, chunk))
            return false;
        i += chunk;
    }
    for (x = mix(x); i < len; i++, x >>= 8)
        if (p[i] != (unsigned char)x)
            return false;
    return true;
}

static ss_id id_of(char tag, unsigned n)
{
    ss_id id;

    memset(&id, 0, sizeof(id));
    snprintf((char *)id.b, sizeof(id.b), "sp%c-%u", tag, n);
    return id;
}

/* Object n: sizes mixed, 3 in 4 small (up to 64 KiB), the rest 128 KiB to
 * ~1.6 MiB; meta on most. */
static uint64_t size_of(unsigned n)
{
    uint64_t r = mix(n * 7919u + 1);

    if (n % 4 != 3)
        return r % (SMALL_MAX + 1); /* 0 included */
    return (128u << 10) + r % (1500u << 10);
}

static uint64_t meta_of(unsigned n)
{
    return n % 5 == 0 ? 0 : 1 + mix(n) % 300;
}

/* ---------------------------------------------------------------- store */

static void set_opt(ss_option o, const char *v)
{
    t_assert_ok(ss_option_set(o, v));
}

/* Options every store here starts with; callers change what they test. */
static void base_options(const char *spill_dir)
{
    set_opt(SS_OPT_CAPACITY, CAP);
    set_opt(SS_OPT_POOL_SIZE, "0");
    set_opt(SS_OPT_HUGEPAGES, "off");
    set_opt(SS_OPT_CREATE_TIMEOUT, "20s");
    set_opt(SS_OPT_EVICT, "off");
    set_opt(SS_OPT_SPILL_HIGH, "90%");
    set_opt(SS_OPT_SPILL_QUEUE_DEPTH, "8");
    set_opt(SS_OPT_SPILL_DIR, spill_dir);
    set_opt(SS_OPT_STAGE_MAX, "64M");
}

static void path_in(char *buf, size_t len, const char *name)
{
    snprintf(buf, len, "%s/%s", t_tmpdir(), name);
}

static ss_client *embed(const char *sock)
{
    ss_client *c = NULL;

    t_assert_ok(ss_connect(sock, SS_CONNECT_EMBED, &c));
    return c;
}


/* Put object n with lifetime flags (ss_put_ex, ss_create_ex). */
/* put_obj_flags: a large object through create + write + seal always
 * (a segment of its own: no arena space that an idle arena could free) */
#define PUT_SEGMENT (1u << 31)

static void put_obj_flags(ss_client *c, char tag, unsigned n, uint64_t size, uint64_t msz,
                          unsigned flags)
{
    bool segment = flags & PUT_SEGMENT;

    ss_id id = id_of(tag, n);
    unsigned char meta[512];
    void *p;

    gen(n, 1, meta, msz);
    /* small ones travel inline; large ones alternate between ss_put (the
     * store copies them into an arena) and create + write + seal */
    flags &= ~PUT_SEGMENT;
    if (size <= SMALL_MAX || (n % 2 == 0 && !segment)) {
        unsigned char *buf = malloc(size ? size : 1);
        assert_non_null(buf);
        gen(n, 0, buf, size);
        int rc = ss_put_ex(c, &id, buf, size, meta, msz, flags);
        free(buf);
        t_assert_ok(rc);
        return;
    }
    t_assert_ok(ss_create_ex(c, &id, size, meta, msz, flags, &p));
    gen(n, 0, p, size);
    t_assert_ok(ss_seal(c, &id));
    t_assert_ok(ss_release(c, &id));
}

static void put_obj(ss_client *c, char tag, unsigned n, uint64_t size, uint64_t msz)
{
    put_obj_flags(c, tag, n, size, msz, 0);
}

/* Get object n and check every byte; false if it is not found. */
static bool check_obj(ss_client *c, char tag, unsigned n, uint64_t size, uint64_t msz,
                      int64_t timeout_ms)
{
    ss_id id = id_of(tag, n);
    ss_object o;
    int rc = ss_get(c, &id, 1, timeout_ms, &o);

    if (rc < 0)
        fail_msg("get of object %c%u: %d (%s)", tag, n, rc, t_strerror(rc));
    if (rc == 0)
        return false;
    if (o.size != size || o.meta_size != msz)
        fail_msg("object %c%u: size %llu meta %llu, expected %llu and %llu", tag, n,
                 (unsigned long long)o.size, (unsigned long long)o.meta_size,
                 (unsigned long long)size, (unsigned long long)msz);
    if (!gen_equal(n, 0, o.data, size))
        fail_msg("object %c%u (%llu bytes): data differ", tag, n, (unsigned long long)size);
    if (msz && !gen_equal(n, 1, o.meta, msz))
        fail_msg("object %c%u: meta differ", tag, n);
    /* its creator (this process) survives spill, restore and restarts */
    if (o.uid != geteuid())
        fail_msg("object %c%u: creator uid %u, expected %u", tag, n, (unsigned)o.uid,
                 (unsigned)geteuid());
    t_assert_ok(ss_release(c, &id));
    return true;
}

/* Is object (tag, n) on disk only, per ss_list? */
static bool listed_on_disk(ss_client *c, char tag, unsigned n, bool *found)
{
    ss_id id = id_of(tag, n);
    ss_obj_info info[256];
    uint64_t cur = 0;

    *found = false;
    do {
        int k = ss_list(c, &cur, info, 256);
        t_assert_ok(k);
        for (int i = 0; i < k; i++) {
            if (memcmp(&info[i].id, &id, sizeof(id)))
                continue;
            *found = true;
            assert_int_equal(info[i].uid, geteuid());
            return strcmp(info[i].backing, "disk") == 0;
        }
    } while (cur);
    return false;
}

/* Wait (bounded) until the store has `n` objects on disk only. */
static ss_stats wait_spilled(ss_client *c, uint64_t n)
{
    ss_stats st = t_store_stats(c);

    for (int i = 0; i < 1000 && st.spilled_objects < n; i++) {
        usleep(10000);
        st = t_store_stats(c);
    }
    assert_true(st.spilled_objects >= n);
    return st;
}

/* The stats once the startup scan is over: a CONTAINS waits for it. */
static ss_stats wait_scan(ss_client *c)
{
    ss_id none = id_of('?', 0);

    assert_int_equal(ss_contains(c, &none), 0);
    ss_stats st = t_store_stats(c);
    assert_false(st.spill_mode & SS_SPILL_MODE_SCANNING);
    return st;
}

static int count_files(const char *dir, const char *suffix)
{
    DIR *d = opendir(dir);
    struct dirent *de;
    int n = 0;

    if (!d)
        return -errno;
    while ((de = readdir(d))) {
        size_t l = strlen(de->d_name), s = strlen(suffix);
        if (l > s && !strcmp(de->d_name + l - s, suffix))
            n++;
    }
    closedir(d);
    return n;
}

/* The store's own subdirectory of a spill directory (there is one store
 * per spill directory in these tests). */
static bool store_dir(const char *spill, char *out, size_t len)
{
    DIR *d = opendir(spill);
    struct dirent *de;
    bool found = false;

    if (!d)
        return false;
    while ((de = readdir(d))) {
        if (!strncmp(de->d_name, "store-", 6)) {
            snprintf(out, len, "%s/%s", spill, de->d_name);
            found = true;
        }
    }
    closedir(d);
    return found;
}

/* ------------------------------------------------------- fill + restart */

#define FILL_N 640u

static void t_fill_restart(void **state)
{
    char sock[108], spill[256], sub[512];
    uint64_t total = 0;
    static bool on_disk[FILL_N];
    unsigned ndisk = 0;

    (void)state;
    path_in(sock, sizeof(sock), "fill.sock");
    path_in(spill, sizeof(spill), "spill-fill");
    base_options(spill);
    ss_client *c = embed(sock);

    for (unsigned n = 0; n < FILL_N; n++) {
        put_obj(c, 'f', n, size_of(n), meta_of(n));
        total += size_of(n);
    }
    assert_true(total >= 4 * CAP_BYTES);
    ss_stats st = t_store_stats(c);
    assert_true(st.spills > 0);
    assert_true(st.spilled_objects > 0);
    assert_true(st.spill_mode & SS_SPILL_MODE_ON);
    assert_int_equal(st.objects, FILL_N); /* spilled objects are still objects */
    assert_true(st.resident_bytes <= CAP_BYTES);
    assert_true(st.spill_files > 0);
    assert_int_equal(st.spill_errors, 0);
    print_message("filled %llu MiB: %llu spills, %llu on disk, mode 0x%llx\n",
                  (unsigned long long)(total >> 20), (unsigned long long)st.spills,
                  (unsigned long long)st.spilled_objects, (unsigned long long)st.spill_mode);

    /* a spilled object is there without I/O */
    bool found;
    for (unsigned n = 0; n < FILL_N; n++) {
        if (listed_on_disk(c, 'f', n, &found)) {
            ss_id id = id_of('f', n);
            assert_int_equal(ss_contains(c, &id), 1);
            break;
        }
        assert_true(found);
    }
    /* every object, in memory or not */
    for (unsigned n = 0; n < FILL_N; n++)
        assert_true(check_obj(c, 'f', n, size_of(n), meta_of(n), GET_MS));
    st = t_store_stats(c);
    assert_true(st.restores > 0);
    assert_true(st.restore_bytes > 0 && st.restore_ns > 0);
    assert_int_equal(st.restore_errors, 0);

    for (unsigned n = 0; n < FILL_N; n++) {
        on_disk[n] = listed_on_disk(c, 'f', n, &found);
        assert_true(found);
        ndisk += on_disk[n];
    }
    assert_true(ndisk > 0);
    ss_disconnect(c); /* the embedded store stops: spilled files stay */
    assert_true(store_dir(spill, sub, sizeof(sub)));
    assert_true(count_files(sub, ".spill") > 0);

    /* restart: every object that was on disk is back, bit for bit */
    c = embed(sock);
    st = wait_scan(c);
    assert_true(st.spilled_objects >= ndisk);
    unsigned back = 0;
    for (unsigned n = 0; n < FILL_N; n++) {
        ss_id id = id_of('f', n);
        int in = ss_contains(c, &id);
        t_assert_ok(in);
        if (on_disk[n] && !in)
            fail_msg("object f%u was on disk before the restart and is gone", n);
        if (in) {
            assert_true(check_obj(c, 'f', n, size_of(n), meta_of(n), GET_MS));
            back++;
        }
    }
    assert_true(back >= ndisk);
    /* deleting them all empties the directory; it goes with the store */
    for (unsigned n = 0; n < FILL_N; n++) {
        ss_id id = id_of('f', n);
        int rc = ss_delete(c, &id);
        if (rc != -ENOENT)
            t_assert_ok(rc);
    }
    st = t_store_stats(c);
    assert_int_equal(st.objects, 0);
    assert_int_equal(st.spilled_objects, 0);
    ss_disconnect(c);
    assert_false(store_dir(spill, sub, sizeof(sub)));
}

/* -------------------------------------------- a delete survives a crash */

/* A store embedded in a child process (killed, not stopped, by the
 * caller): returns once it serves `sock`. */
static pid_t fork_store(const char *sock)
{
    int p[2];
    char b = 0;

    assert_int_equal(pipe(p), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        ss_client *c = NULL;
        close(p[0]);
        if (ss_connect(sock, SS_CONNECT_EMBED, &c) < 0 || write(p[1], &b, 1) != 1)
            _exit(T_EXIT_ERROR);
        for (;;)
            pause();
    }
    close(p[1]);
    ssize_t r = read(p[0], &b, 1);
    close(p[0]);
    if (r != 1) {
        int st = 0;
        waitpid(pid, &st, 0);
        fail_msg("the store child did not start (status 0x%x)", st);
    }
    return pid;
}

/* SIGKILL a store fork_store started and reap it. */
static void kill_store(pid_t pid)
{
    int st = 0;

    assert_int_equal(kill(pid, SIGKILL), 0);
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_true(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
}

#define CRASH_N 48u
#define CRASH_ROUNDS 4u

/* Objects spilled (own files and fused records), most deleted (one of them
 * restored and referenced), the store SIGKILLed right after the last
 * delete answered: after a restart on the
 * same socket and spill directory no deleted object is back, every other
 * one is, bit for bit. (Deletes used to answer before the unlink or
 * tombstone was even issued: most came back.) */
static void t_delete_crash(void **state)
{
    char sock[108], spill[256];

    (void)state;
    path_in(sock, sizeof(sock), "crash.sock");
    path_in(spill, sizeof(spill), "spill-crash");
    base_options(spill);
    set_opt(SS_OPT_SPILL_HIGH, "0"); /* everything goes to disk at once */
    for (unsigned round = 0; round < CRASH_ROUNDS; round++) {
        unsigned back = 0;
        pid_t pid = fork_store(sock);
        ss_client *c = NULL;
        t_assert_ok(ss_connect(sock, 0, &c));
        for (unsigned n = 0; n < CRASH_N; n++)
            put_obj(c, 'k', round * CRASH_N + n, size_of(n), meta_of(n));
        wait_spilled(c, CRASH_N);
        /* one restored (it keeps its disk copy) and still referenced when
         * deleted: its copy must go with the delete, not the release */
        ss_id held = id_of('k', round * CRASH_N + 1);
        ss_object o;
        assert_int_equal(ss_get(c, &held, 1, GET_MS, &o), 1);
        for (unsigned n = 0; n < CRASH_N; n++) {
            ss_id id = id_of('k', round * CRASH_N + n);
            if (n % 6 != 0)
                t_assert_ok(ss_delete(c, &id));
        }
        kill_store(pid);
        ss_disconnect(c);

        c = embed(sock);
        for (unsigned n = 0; n < CRASH_N; n++) {
            ss_id id = id_of('k', round * CRASH_N + n);
            int in = ss_contains(c, &id);
            t_assert_ok(in);
            if (n % 6 != 0) {
                back += in;
                continue;
            }
            if (!in)
                fail_msg("round %u: object k%u was not deleted and is gone", round, n);
            assert_true(check_obj(c, 'k', round * CRASH_N + n, size_of(n), meta_of(n),
                                  GET_MS));
            t_assert_ok(ss_delete(c, &id));
        }
        if (back)
            fail_msg("round %u: %u of %u deleted objects are back after a crash", round, back,
                     CRASH_N - CRASH_N / 6);
        assert_int_equal(t_store_stats(c).objects, 0);
        ss_disconnect(c);
    }
}

/* ------------------------------------------------- creator-bound objects */

#define BOUND_N 12u

/* Objects bound to their creator (SS_LIFETIME_CREATOR), spilled (files
 * of their own and fused records), with objects that are not: the store
 * SIGKILLed while the creator is still connected (nobody deleted them:
 * their records are on disk), then, in a second round, after the creator
 * disconnected while they were on disk (the store deleted them, durably,
 * before it was killed). Either way, after a restart on the same spill
 * directory no bound object is back and every other one is, bit for bit. */
static void t_bound_restart(void **state)
{
    char sock[108], spill[256];

    (void)state;
    path_in(sock, sizeof(sock), "bound.sock");
    path_in(spill, sizeof(spill), "spill-bound");
    base_options(spill);
    set_opt(SS_OPT_SPILL_HIGH, "0"); /* everything unreferenced goes to disk */
    for (unsigned round = 0; round < 2; round++) {
        unsigned base = round * BOUND_N, back = 0;
        pid_t pid = fork_store(sock);
        ss_client *c = NULL, *keeper = NULL;
        t_assert_ok(ss_connect(sock, 0, &c));
        t_assert_ok(ss_connect(sock, 0, &keeper));
        for (unsigned n = base; n < base + BOUND_N; n++)
            put_obj_flags(n % 2 ? c : keeper, 'b', n, size_of(n), meta_of(n),
                          n % 2 ? SS_LIFETIME_CREATOR : 0);
        wait_spilled(keeper, BOUND_N);
        if (round == 1) {
            /* the creator goes first: the store deletes its objects */
            uint64_t clients = t_store_stats(keeper).clients;
            ss_disconnect(c);
            c = NULL;
            for (int i = 0; i < 100000 && t_store_stats(keeper).clients != clients - 1; i++)
                usleep(100);
            assert_int_equal(t_store_stats(keeper).clients, clients - 1);
            for (unsigned n = base + 1; n < base + BOUND_N; n += 2) {
                ss_id id = id_of('b', n);
                assert_int_equal(ss_contains(keeper, &id), 0);
            }
        }
        kill_store(pid);
        ss_disconnect(c);
        ss_disconnect(keeper);

        c = embed(sock);
        wait_scan(c);
        for (unsigned n = base; n < base + BOUND_N; n++) {
            ss_id id = id_of('b', n);
            int in = ss_contains(c, &id);
            t_assert_ok(in);
            if (n % 2) {
                back += in;
                continue;
            }
            if (!in)
                fail_msg("round %u: object b%u was not bound and is gone", round, n);
            assert_true(check_obj(c, 'b', n, size_of(n), meta_of(n), GET_MS));
            t_assert_ok(ss_delete(c, &id));
        }
        if (back)
            fail_msg("round %u: %u of %u creator-bound objects are back after a restart", round,
                     back, BOUND_N / 2);
        assert_int_equal(t_store_stats(c).objects, 0);
        ss_disconnect(c);
    }
}

/* ----------------------------------------------------- concurrent restore */

#define NTHREADS 4

static pthread_barrier_t g_bar;
static const char *g_sock;
static _Atomic int g_errors;

static void *restore_thread(void *arg)
{
    ss_client *c = NULL;
    ss_id ids[2] = { id_of('c', 0), id_of('c', 1) };
    ss_object o[2];

    (void)arg;
    if (ss_connect(g_sock, 0, &c) < 0) {
        g_errors++;
        pthread_barrier_wait(&g_bar);
        pthread_barrier_wait(&g_bar);
        return NULL;
    }
    pthread_barrier_wait(&g_bar);
    int rc = ss_get(c, ids, 2, GET_MS, o);
    if (rc != 2 || o[0].size != 4u << 20 || !gen_equal(0, 0, o[0].data, o[0].size) ||
        o[1].size != 5000 || !gen_equal(1, 0, o[1].data, o[1].size)) {
        print_message("concurrent get: %d (%s)\n", rc, t_strerror(rc));
        g_errors++;
    }
    /* everyone holds both before anyone lets go: nothing can spill them
     * again in between, so a second restore would be a bug */
    pthread_barrier_wait(&g_bar);
    if (rc == 2) {
        ss_release(c, &ids[0]);
        ss_release(c, &ids[1]);
    }
    ss_disconnect(c);
    return NULL;
}

static void t_concurrent_restore(void **state)
{
    char sock[108], spill[256];
    pthread_t th[NTHREADS];

    (void)state;
    path_in(sock, sizeof(sock), "conc.sock");
    path_in(spill, sizeof(spill), "spill-conc");
    base_options(spill);
    set_opt(SS_OPT_SPILL_HIGH, "0"); /* everything unreferenced goes to disk */
    ss_client *c = embed(sock);
    put_obj(c, 'c', 0, 4u << 20, 0);
    put_obj(c, 'c', 1, 5000, 0);
    ss_stats st = wait_spilled(c, 2);
    uint64_t r0 = st.restores;

    g_sock = sock;
    g_errors = 0;
    assert_int_equal(pthread_barrier_init(&g_bar, NULL, NTHREADS), 0);
    for (int i = 0; i < NTHREADS; i++)
        assert_int_equal(pthread_create(&th[i], NULL, restore_thread, NULL), 0);
    for (int i = 0; i < NTHREADS; i++)
        pthread_join(th[i], NULL);
    pthread_barrier_destroy(&g_bar);
    assert_int_equal(g_errors, 0);
    st = t_store_stats(c);
    assert_int_equal(st.restores, r0 + 2); /* one each, for four getters */
    assert_int_equal(st.gets, 2 * NTHREADS);
    ss_disconnect(c);
}

/* ---------------------------------------------- gets while spilling */

#define HOT 8u

static _Atomic bool g_stop;
static _Atomic long g_reads;

static void *reader_thread(void *arg)
{
    ss_client *c = arg;

    while (!g_stop) {
        for (unsigned n = 0; n < HOT && !g_stop; n++) {
            ss_id id = id_of('h', n);
            ss_object o;
            uint64_t size = n % 2 ? 1u << 20 : 1000 + n;
            if (ss_get(c, &id, 1, 5000, &o) != 1 || o.size != size ||
                !gen_equal(n, 0, o.data, o.size)) {
                g_errors++;
                return NULL;
            }
            ss_release(c, &id);
            g_reads++;
        }
    }
    return NULL;
}

static void t_gets_while_spilling(void **state)
{
    char sock[108], spill[256];
    pthread_t th;
    ss_object held[HOT];

    (void)state;
    path_in(sock, sizeof(sock), "busy.sock");
    path_in(spill, sizeof(spill), "spill-busy");
    base_options(spill);
    ss_client *c = embed(sock), *r = NULL;
    t_assert_ok(ss_connect(sock, 0, &r));
    for (unsigned n = 0; n < HOT; n++) {
        ss_id id = id_of('h', n);
        put_obj(c, 'h', n, n % 2 ? 1u << 20 : 1000 + n, 0);
        /* held by this handle: they stay in memory, hot */
        assert_int_equal(ss_get(c, &id, 1, 0, &held[n]), 1);
    }
    g_stop = false;
    g_reads = 0;
    g_errors = 0;
    assert_int_equal(pthread_create(&th, NULL, reader_thread, r), 0);
    for (unsigned n = 0; n < 96; n++)
        put_obj(c, 'w', n, 1u << 20, 0); /* 3x capacity: spills all along */
    long during = g_reads;
    g_stop = true;
    pthread_join(th, NULL);
    assert_int_equal(g_errors, 0);
    assert_true(during > 0);
    ss_stats st = t_store_stats(c);
    assert_true(st.spills > 0);
    print_message("%ld in-memory gets while spilling %llu objects\n", during,
                  (unsigned long long)st.spills);
    for (unsigned n = 0; n < HOT; n++) {
        ss_id id = id_of('h', n);
        t_assert_ok(ss_release(c, &id));
    }
    ss_disconnect(r);
    ss_disconnect(c);
}

/* ------------------------------------------------------------ corruption */

/* Flip one byte in the middle of a file. */
/* A store on "<name>.sock" that spilled objects (tag, 0..n) of size(n)
 * bytes to "spill-<name>" and stopped; sub: its spill subdirectory. */
static void spilled_store(char sock[108], char spill[256], char *sub, size_t sub_len,
                          const char *name, char tag, unsigned n, uint64_t (*size)(unsigned))
{
    char buf[64];

    snprintf(buf, sizeof(buf), "%s.sock", name);
    path_in(sock, 108, buf);
    snprintf(buf, sizeof(buf), "spill-%s", name);
    path_in(spill, 256, buf);
    base_options(spill);
    set_opt(SS_OPT_SPILL_HIGH, "0"); /* everything unreferenced goes to disk */
    ss_client *c = embed(sock);
    for (unsigned i = 0; i < n; i++)
        put_obj(c, tag, i, size(i), meta_of(i));
    wait_spilled(c, n);
    ss_disconnect(c);
    assert_true(store_dir(spill, sub, sub_len));
}

/* Flip one bit at `at`, or in the middle of the file (at < 0). */
static void flip(const char *path, off_t at)
{
    int fd = open(path, O_RDWR);
    struct stat sb;
    unsigned char b;

    assert_true(fd >= 0);
    assert_int_equal(fstat(fd, &sb), 0);
    if (at < 0)
        at = sb.st_size / 2;
    assert_int_equal(pread(fd, &b, 1, at), 1);
    b ^= 0x40;
    assert_int_equal(pwrite(fd, &b, 1, at), 1);
    close(fd);
}

/* The largest .spill file of a directory (a large object's own file). */
static bool largest_spill(const char *dir, char *out, size_t len, const char *skip)
{
    DIR *d = opendir(dir);
    struct dirent *de;
    off_t best = -1;

    assert_non_null(d);
    while ((de = readdir(d))) {
        char p[700];
        struct stat sb;
        size_t l = strlen(de->d_name);
        if (l < 7 || strcmp(de->d_name + l - 6, ".spill"))
            continue;
        snprintf(p, sizeof(p), "%s/%s", dir, de->d_name);
        if ((skip && !strcmp(p, skip)) || stat(p, &sb) < 0)
            continue;
        if (sb.st_size > best) {
            best = sb.st_size;
            snprintf(out, len, "%s", p);
        }
    }
    closedir(d);
    return best >= 0;
}

#define CORR_LARGE 4u
#define CORR_SMALL 20u

static uint64_t corr_size(unsigned n)
{
    /* distinct large sizes: the largest file is object 3's */
    return n < CORR_LARGE ? (1u << 20) + n * (256u << 10) : 100 + n * 997;
}

static void t_corrupt(void **state)
{
    char sock[108], spill[256], sub[512], victim[700], victim2[700];
    unsigned total = CORR_LARGE + CORR_SMALL;

    (void)state;
    spilled_store(sock, spill, sub, sizeof(sub), "corr", 'x', total, corr_size);

    /* a stopped store's file, its record header damaged: found at startup
     * (the data of a large object is only checked when it is restored:
     * below) */
    assert_true(largest_spill(sub, victim, sizeof(victim), NULL));
    flip(victim, 20);
    ss_client *c = embed(sock);
    ss_stats st = wait_scan(c);
    assert_int_equal(st.objects, total - 1);
    assert_true(st.spill_lost >= 1);
    ss_id lost = id_of('x', CORR_LARGE - 1);
    assert_int_equal(ss_contains(c, &lost), 0);
    assert_false(check_obj(c, 'x', CORR_LARGE - 1, 0, 0, 0)); /* -ENOENT: not found */
    for (unsigned n = 0; n < total - 1; n++)
        if (n != CORR_LARGE - 1)
            assert_true(check_obj(c, 'x', n, corr_size(n), meta_of(n), GET_MS));

    /* and one damaged under the running store: its restore finds it */
    wait_spilled(c, total - 1);
    assert_true(largest_spill(sub, victim2, sizeof(victim2), NULL));
    flip(victim2, -1); /* object 2's own file, in its data */
    ss_id lost2 = id_of('x', CORR_LARGE - 2);
    assert_int_equal(ss_contains(c, &lost2), 1); /* not read yet */
    /* timeout 0 still waits for the restore (the object exists), then
     * finds it gone: not found, at once */
    assert_false(check_obj(c, 'x', CORR_LARGE - 2, 0, 0, 0));
    assert_int_equal(ss_contains(c, &lost2), 0);
    for (unsigned n = 0; n < total; n++)
        if (n != CORR_LARGE - 1 && n != CORR_LARGE - 2)
            assert_true(check_obj(c, 'x', n, corr_size(n), meta_of(n), GET_MS));
    st = t_store_stats(c);
    assert_int_equal(st.objects, total - 2);
    assert_true(st.spill_lost >= 2);
    ss_disconnect(c);
}

/* ------------------------------------------------ hostile spill files */

#define HOSTILE_N 6u

static uint64_t hostile_size(unsigned n)
{
    return n % 2 ? 3000 + n : (1u << 20) + n * 4096;
}

/* Planted in a stopped store's spill directory, named like spill files: a
 * FIFO (an open without O_NONBLOCK waits for a writer for ever) and a
 * 64 GiB sparse file of garbage. The store starts (the old one blocked in
 * ss_connect for good: alarm() turns that into a failure), ignores the
 * FIFO, gives up on the garbage after reading a little of it, and every
 * real object is back. */
static void t_hostile_restart(void **state)
{
    char sock[108], spill[256], sub[512], fifo[600], junk[600];
    unsigned char head[8192];
    struct stat sb;

    (void)state;
    spilled_store(sock, spill, sub, sizeof(sub), "hostile", 'h', HOSTILE_N, hostile_size);
    snprintf(fifo, sizeof(fifo), "%s/00000000000000f0.spill", sub);
    assert_int_equal(mkfifo(fifo, 0600), 0);
    snprintf(junk, sizeof(junk), "%s/00000000000000f1.spill", sub);
    gen(77, 0, head, sizeof(head));
    int fd = open(junk, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0600);
    assert_true(fd >= 0);
    assert_int_equal(pwrite(fd, head, sizeof(head), 0), (ssize_t)sizeof(head));
    assert_int_equal(ftruncate(fd, (off_t)(64ull << 30)), 0);
    close(fd);

    alarm(120);
    ss_client *c = embed(sock);
    ss_stats st = wait_scan(c);
    alarm(0);
    assert_int_equal(st.objects, HOSTILE_N);
    assert_int_equal(st.spilled_objects, HOSTILE_N);
    assert_true(st.spill_lost >= 1);               /* the garbage */
    assert_true(st.spill_scan_bytes < (8u << 20)); /* not the 64 GiB */
    for (unsigned n = 0; n < HOSTILE_N; n++)
        assert_true(check_obj(c, 'h', n, hostile_size(n), meta_of(n), GET_MS));
    ss_disconnect(c);
    assert_int_equal(lstat(fifo, &sb), 0); /* not ours to remove */
    assert_true(S_ISFIFO(sb.st_mode));
    assert_int_equal(lstat(junk, &sb), -1); /* nothing readable in it: removed */
    unlink(fifo);
}

/* -------------------------------------------------------- a full tmpfs */

static char g_mnt[256];
static bool g_mounted;

static int umount_tiny(void **state)
{
    (void)state;
    if (g_mounted) {
        if (umount(g_mnt) < 0)
            umount2(g_mnt, MNT_DETACH);
        g_mounted = false;
    }
    return 0;
}

/* A tmpfs of `size` ("16m") on <tmpdir>/name as g_mnt (umount_tiny
 * removes it); skips the case where we may not mount. */
static void mount_tiny(const char *name, const char *size)
{
    char opts[64];

    path_in(g_mnt, sizeof(g_mnt), name);
    assert_int_equal(mkdir(g_mnt, 0700), 0);
    snprintf(opts, sizeof(opts), "size=%s,mode=0700", size);
    if (mount("sealstore-test", g_mnt, "tmpfs", MS_NOSUID | MS_NODEV, opts) < 0) {
        int err = errno;
        T_SKIP_IF(err == EPERM, NULL, "cannot mount a tmpfs (not root, or no CAP_SYS_ADMIN)");
        fail_msg("mount tmpfs: %s", strerror(err));
    }
    g_mounted = true;
}

#define TINY_MAX 200u

static uint64_t tiny_size(unsigned n)
{
    return n % 4 == 3 ? 10000 + n : (1u << 20) + n * 4096;
}

static void t_tmpfs_full(void **state)
{
    char sock[108];
    static bool sealed[TINY_MAX];
    unsigned n, nsealed = 0;
    int rc = 0;

    (void)state;
    mount_tiny("tiny", "16m");
    path_in(sock, sizeof(sock), "tiny.sock");
    base_options(g_mnt);
    set_opt(SS_OPT_CREATE_TIMEOUT, "500ms");
    set_opt(SS_OPT_SPILL_HIGH, "off"); /* spill only when a create needs it */
    ss_client *c = embed(sock);

    memset(sealed, 0, sizeof(sealed));
    for (n = 0; n < TINY_MAX; n++) {
        ss_id id = id_of('t', n);
        unsigned char meta[8];
        void *p;
        uint64_t size = tiny_size(n);
        if (size <= SMALL_MAX) {
            unsigned char buf[16384];
            gen(n, 0, buf, size);
            rc = ss_put(c, &id, buf, size, NULL, 0);
        } else {
            rc = ss_create(c, &id, size, meta, 0, &p);
            if (rc == 0) {
                gen(n, 0, p, size);
                t_assert_ok(ss_seal(c, &id));
                t_assert_ok(ss_release(c, &id));
            }
        }
        if (rc < 0)
            break;
        sealed[n] = true;
        nsealed++;
    }
    /* memory (32 MiB) and disk (16 MiB) are both full: a clean ENOSPC */
    t_assert_err(rc, -ENOSPC);
    ss_stats st = t_store_stats(c);
    assert_true(st.spills > 0);
    assert_true(st.spill_errors > 0);
    assert_true(st.spill_mode & SS_SPILL_MODE_ON);
    assert_false(st.spill_mode & SS_SPILL_MODE_DIRECT); /* tmpfs: buffered */
    assert_int_equal(st.sealed_objects, nsealed);
    assert_true(nsealed * (1ull << 20) > CAP_BYTES); /* some did go to disk */
    print_message("tmpfs full after %u objects: %llu spills, %llu spill errors\n", nsealed,
                  (unsigned long long)st.spills, (unsigned long long)st.spill_errors);

    /* nothing sealed is lost: the ones in memory first (then freed, to
     * make room), then the ones on the full disk */
    bool found;
    for (unsigned k = 0; k < TINY_MAX; k++) {
        if (!sealed[k] || listed_on_disk(c, 't', k, &found))
            continue;
        assert_true(found);
        assert_true(check_obj(c, 't', k, tiny_size(k), 0, 0));
        ss_id id = id_of('t', k);
        t_assert_ok(ss_delete(c, &id));
        sealed[k] = false;
    }
    for (unsigned k = 0; k < TINY_MAX; k++)
        if (sealed[k])
            assert_true(check_obj(c, 't', k, tiny_size(k), 0, GET_MS));
    ss_disconnect(c);
    umount_tiny(NULL);
}

/* A get of a spilled object when memory and the spill disk are both full:
 * its restore cannot get memory (the only unreferenced object in memory
 * cannot be spilled: no space), so the get answers at its own timeout
 * (timeout 0: at once) with SS_E_FULL, not at the create timeout (30 s
 * here: the alarm would end the test first), and the object is intact. */
#define FULL_BIG (3u << 19)   /* spilled objects: 1.5 MiB */
#define FULL_HELD (1u << 19)  /* memory fillers, held: 512 KiB */
#define FULL_MAX 64u

static void t_get_full(void **state)
{
    char sock[108];
    static ss_id held[FULL_MAX];
    unsigned nbig = 0, nheld = 0;
    void *p;

    (void)state;
    mount_tiny("tiny-get", "4m");
    path_in(sock, sizeof(sock), "tiny-get.sock");
    base_options(g_mnt);
    set_opt(SS_OPT_CAPACITY, "8M");
    set_opt(SS_OPT_CREATE_TIMEOUT, "30s");
    set_opt(SS_OPT_SPILL_HIGH, "0");
    set_opt(SS_OPT_STAGE_MAX, "0"); /* PUT_SEGMENT: in place, not staged into an arena */
    ss_client *c = embed(sock);

    /* big objects spill until the disk is full: the last stays in memory */
    ss_stats st = t_store_stats(c);
    while (st.spill_errors == 0) {
        assert_true(nbig < 8);
        put_obj_flags(c, 'F', nbig, FULL_BIG, 0, PUT_SEGMENT);
        nbig++;
        for (int i = 0; i < 1000 && st.spilled_objects < nbig && st.spill_errors == 0; i++) {
            usleep(10000);
            st = t_store_stats(c);
        }
    }
    assert_true(st.spilled_objects >= 1);
    bool found;
    assert_true(listed_on_disk(c, 'F', 0, &found));
    /* memory: referenced objects (never spilled) until a big one cannot fit */
    while (st.resident_bytes + 2 * FULL_HELD <= st.capacity) {
        assert_true(nheld < FULL_MAX);
        held[nheld] = id_of('H', nheld);
        t_assert_ok(ss_create(c, &held[nheld], FULL_HELD, NULL, 0, &p));
        memset(p, (int)nheld, FULL_HELD);
        t_assert_ok(ss_seal(c, &held[nheld]));
        nheld++;
        st = t_store_stats(c);
    }
    assert_true(st.resident_bytes + FULL_BIG > st.capacity);

    ss_id id = id_of('F', 0);
    ss_object o;
    uint64_t timeouts = st.wait_timeouts;
    alarm(10); /* a get waiting for the create timeout ends the test here */
    int rc = ss_get(c, &id, 1, 0, &o);
    t_assert_err(rc, -SS_E_FULL);
    /* its own timeout, not 0: the same once that passes */
    rc = ss_get(c, &id, 1, 300, &o);
    alarm(0);
    t_assert_err(rc, -SS_E_FULL);
    assert_non_null(strstr(ss_strerror(rc), "spill space"));
    st = t_store_stats(c);
    assert_int_equal(st.wait_timeouts, timeouts); /* no create timeout ran out */
    assert_true(st.restore_errors >= 2);
    assert_int_equal(ss_contains(c, &id), 1);

    /* memory back: the object is restored, intact */
    for (unsigned k = 0; k < nheld; k++) {
        t_assert_ok(ss_delete(c, &held[k]));
        t_assert_ok(ss_release(c, &held[k]));
    }
    assert_true(check_obj(c, 'F', 0, FULL_BIG, 0, GET_MS));
    ss_disconnect(c);
    umount_tiny(NULL);
}

/* ------------------------------------------------------------ spill off */

static void t_spill_off(void **state)
{
    char sock[108];
    void *p;

    (void)state;
    path_in(sock, sizeof(sock), "off.sock");
    base_options("off");
    set_opt(SS_OPT_CREATE_TIMEOUT, "200ms");
    ss_client *c = embed(sock);
    ss_id a = id_of('o', 0), b = id_of('o', 1);
    t_assert_ok(ss_create(c, &a, 24u << 20, NULL, 0, &p));
    memset(p, 1, 24u << 20);
    t_assert_ok(ss_seal(c, &a));
    t_assert_ok(ss_release(c, &a));
    /* unreferenced and sealed, but nowhere to go: the create waits, fails */
    t_assert_err(ss_create(c, &b, 16u << 20, NULL, 0, &p), -ENOSPC);
    ss_stats st = t_store_stats(c);
    assert_int_equal(st.spill_mode, 0);
    assert_int_equal(st.spills, 0);
    assert_int_equal(ss_contains(c, &a), 1);
    ss_disconnect(c);
}

/* ------------------------------------------------------------ the option */

static void t_high_option(void **state)
{
    char sock[108], spill[256];
    const char *bad[] = { "lots", "101%", "%", "-1%", "12.5%" };

    (void)state;
    path_in(sock, sizeof(sock), "opt.sock");
    path_in(spill, sizeof(spill), "spill-opt");
    base_options(spill);
    /* a bad value is reported and the default used: the store still runs */
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        set_opt(SS_OPT_SPILL_HIGH, bad[i]);
        ss_client *c = embed(sock);
        ss_stats st = t_store_stats(c);
        assert_true(st.spill_mode & SS_SPILL_MODE_ON);
        ss_disconnect(c);
    }
    /* queue depth reaches the engine */
    set_opt(SS_OPT_SPILL_HIGH, "off");
    set_opt(SS_OPT_SPILL_QUEUE_DEPTH, "32");
    ss_client *c = embed(sock);
    assert_int_equal(t_store_stats(c).spill_queue_depth, 32);
    ss_disconnect(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(t_fill_restart),
        cmocka_unit_test(t_delete_crash),
        cmocka_unit_test(t_concurrent_restore),
        cmocka_unit_test(t_gets_while_spilling),
        cmocka_unit_test(t_corrupt),
        cmocka_unit_test(t_hostile_restart),
        cmocka_unit_test(t_bound_restart),
        cmocka_unit_test_teardown(t_tmpfs_full, umount_tiny),
        cmocka_unit_test_teardown(t_get_full, umount_tiny),
        cmocka_unit_test(t_spill_off),
        cmocka_unit_test(t_high_option),
    };

    /* the tmpfs mounts below live in a mount namespace of our own (when
     * we may make one): they go with the process however it ends */
    if (unshare(CLONE_NEWNS) == 0)
        (void)mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL);
    t_tmpdir(); /* made now: exits 99 if it cannot be */
    return t_run(tests, NULL, NULL);
}
