/* SPDX-License-Identifier: MIT */
/*
 * The object lifecycle through the public API (sealstore.h), against a store
 * embedded in this process (ss_connect(path, SS_CONNECT_EMBED)) on a
 * socket in t_tmpdir(). A second handle, connected without EMBED, plays
 * "another client" where the semantics depend on who asks.
 *
 * Covered: every call's results and error codes; size-0 objects; meta up
 * to 64 KiB; duplicate ids; multi-id get (an id twice takes two refs);
 * get timeouts (0, -1, positive, < -1); a blocking get woken by a seal in
 * another thread; delete while referenced; the creator's pointer read-only
 * after seal and views read-only (SIGSEGV caught with sigsetjmp in this
 * process: a forked child would hold a dead handle); several threads on
 * one handle; list, stats and events; connect argument errors; a put of
 * an id whose deleted object the client still holds ends only its own
 * reference, and ss_release_object gives back that of the very object a
 * view came from; a large object's segment stays mapped after its last
 * release (bounded) until the handle learns the object is gone.
 */
#include "sealstore.h"
#include "t_helpers.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

static ss_client *C;  /* embedded store's host handle */
static ss_client *C2; /* another client of the same store */
static char sock_path[108];
static unsigned id_counter;

#define SMALL_MAX (64 * 1024)
#define SS_ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

static ss_id new_id(void)
{
    ss_id id;

    memset(&id, 0, sizeof(id));
    snprintf((char *)id.b, sizeof(id.b), "lc-%u-%u", (unsigned)getpid(), ++id_counter);
    return id;
}




/* ---------------------------------------------------- fault detection */

static sigjmp_buf fault_jmp;

static void on_fault(int sig)
{
    (void)sig;
    siglongjmp(fault_jmp, 1);
}

/* Does a write to p fault? The byte is written with its own value, so a
 * write that (wrongly) succeeds changes nothing. */
static bool write_faults(void *p)
{
    struct sigaction sa, old_segv, old_bus;
    volatile bool faulted = false;

    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_fault;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGSEGV, &sa, &old_segv);
    sigaction(SIGBUS, &sa, &old_bus);
    if (sigsetjmp(fault_jmp, 1) == 0) {
        volatile unsigned char *b = p;
        unsigned char v = *b;
        *b = v;
    } else {
        faulted = true;
    }
    sigaction(SIGSEGV, &old_segv, NULL);
    sigaction(SIGBUS, &old_bus, NULL);
    return faulted;
}

/* ------------------------------------------------------------- helpers */

static void put_obj(ss_client *c, const ss_id *id, uint64_t size, unsigned seed,
                    const void *meta, uint64_t meta_size)
{
    void *buf = malloc(size ? size : 1);

    assert_non_null(buf);
    t_fill(buf, size, seed);
    t_assert_ok(ss_put(c, id, buf, size, meta, meta_size));
    free(buf);
}

static void get_check(ss_client *c, const ss_id *id, uint64_t size, unsigned seed)
{
    ss_object o;

    assert_int_equal(ss_get(c, id, 1, 0, &o), 1);
    assert_non_null(o.data);
    assert_int_equal(o.size, size);
    assert_memory_equal(&o.id, id, sizeof(*id));
    assert_true(t_check(o.data, size, seed));
    t_assert_ok(ss_release(c, id));
}

/* ---------------------------------------------------------------- tests */

static void test_connect_errors(void **state)
{
    char path[200], longp[300];
    ss_client *c = (ss_client *)0x1;
    struct sockaddr_un a = { .sun_family = AF_UNIX };
    int fd;
    (void)state;

    assert_int_equal(ss_connect(sock_path, 1u << 5, &c), -EINVAL);
    assert_int_equal(ss_connect(sock_path, ~0u, &c), -EINVAL);
    assert_ptr_equal(c, (ss_client *)0x1); /* untouched on failure */
    assert_int_equal(ss_connect(sock_path, 0, NULL), -EINVAL);
    memset(longp, 'x', sizeof(longp) - 1);
    longp[0] = '/';
    longp[sizeof(longp) - 1] = 0;
    assert_int_equal(ss_connect(longp, 0, &c), -EINVAL);

    /* no store: no socket file at all, then a socket nobody listens on */
    snprintf(path, sizeof(path), "%s/nobody.sock", t_tmpdir());
    assert_int_equal(ss_connect(path, 0, &c), -ENOENT);
    fd = socket(AF_UNIX, SOCK_SEQPACKET, 0);
    assert_true(fd >= 0);
    strcpy(a.sun_path, path);
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    close(fd); /* the file stays, nobody listens */
    assert_int_equal(ss_connect(path, 0, &c), -ECONNREFUSED);
    assert_ptr_equal(c, (ss_client *)0x1);

    /* the EMBED host's store answers a plain connect */
    t_assert_ok(ss_connect(sock_path, 0, &c));
    ss_disconnect(c);
    ss_disconnect(NULL);
}

/* The embedded store lives as long as the handle that started it. */
static void test_embedded_store_lifetime(void **state)
{
    char path[200];
    ss_client *h, *h2, *c;
    ss_id a = new_id();
    ss_object o;
    int rc;
    (void)state;

    snprintf(path, sizeof(path), "%s/short.sock", t_tmpdir());
    t_assert_ok(ss_connect(path, SS_CONNECT_EMBED, &h));
    t_assert_ok(ss_connect(path, SS_CONNECT_EMBED, &h2)); /* finds the live one */
    put_obj(h2, &a, 100, 5, NULL, 0);
    assert_int_equal(ss_get(h2, &a, 1, 0, &o), 1);
    ss_disconnect(h); /* stops the store */
    rc = ss_connect(path, 0, &c);
    assert_true(rc == -ECONNREFUSED || rc == -ENOENT);
    assert_true(ss_contains(h2, &a) < 0);
    assert_true(t_check(o.data, 100, 5)); /* the view outlives the store */
    t_assert_ok(ss_release(h2, &a));
    ss_disconnect(h2);

    /* a NULL path is SEALSTORE_SOCKET (the option) when set */
    snprintf(path, sizeof(path), "%s/byoption.sock", t_tmpdir());
    t_assert_ok(ss_option_set(SS_OPT_SOCKET, path));
    t_assert_ok(ss_connect(NULL, SS_CONNECT_EMBED, &h));
    t_assert_ok(ss_connect(path, 0, &c));
    ss_disconnect(c);
    ss_disconnect(h);
    t_assert_ok(ss_option_set(SS_OPT_SOCKET, ""));
}

static void test_null_args(void **state)
{
    ss_id id = new_id();
    ss_object o;
    void *p;
    uint64_t cur = 0;
    ss_stats st;
    int fd;
    (void)state;

    assert_int_equal(ss_create(NULL, &id, 1, NULL, 0, &p), -EINVAL);
    assert_int_equal(ss_create(C, NULL, 1, NULL, 0, &p), -EINVAL);
    assert_int_equal(ss_create(C, &id, 1, NULL, 0, NULL), -EINVAL);
    assert_int_equal(ss_create(C, &id, 1, NULL, 5, &p), -EINVAL);
    assert_int_equal(ss_seal(NULL, &id), -EINVAL);
    assert_int_equal(ss_seal(C, NULL), -EINVAL);
    assert_int_equal(ss_abort(C, NULL), -EINVAL);
    assert_int_equal(ss_put(C, NULL, "x", 1, NULL, 0), -EINVAL);
    assert_int_equal(ss_put(C, &id, NULL, 1, NULL, 0), -EINVAL);
    assert_int_equal(ss_get(NULL, &id, 1, 0, &o), -EINVAL);
    assert_int_equal(ss_get(C, NULL, 1, 0, &o), -EINVAL);
    assert_int_equal(ss_get(C, &id, 1, 0, NULL), -EINVAL);
    assert_int_equal(ss_release(C, NULL), -EINVAL);
    assert_int_equal(ss_release(NULL, &id), -EINVAL);
    assert_int_equal(ss_contains(C, NULL), -EINVAL);
    assert_int_equal(ss_delete(C, NULL), -EINVAL);
    assert_int_equal(ss_list(C, NULL, NULL, 1), -EINVAL);
    assert_int_equal(ss_list(C, &cur, NULL, 1), -EINVAL);
    assert_int_equal(ss_stats_get(C, NULL), -EINVAL);
    memset(&st, 0, sizeof(st));
    st.size = sizeof(st) - 8;
    st.version = SS_STATS_VERSION;
    assert_int_equal(ss_stats_get(C, &st), -EINVAL);
    st.size = sizeof(st);
    st.version = SS_STATS_VERSION + 1;
    assert_int_equal(ss_stats_get(C, &st), -EINVAL);
    assert_int_equal(ss_subscribe(C, 0, &fd), -EINVAL);
    assert_int_equal(ss_subscribe(C, 1u << 7, &fd), -EINVAL);
    assert_int_equal(ss_subscribe(C, SS_EVENT_SEALED, NULL), -EINVAL);
    assert_int_equal(ss_event_next(-1, &(ss_event){ 0 }), -EINVAL);
    ss_unsubscribe(-1);
    /* nothing above created anything */
    assert_int_equal(ss_contains(C, &id), 0);
}

static void test_create_seal_get_release(void **state)
{
    ss_id id = new_id();
    const char meta[] = "shape=3x4;dtype=f32";
    void *p;
    ss_object o;
    (void)state;

    t_assert_ok(ss_create(C, &id, 1000, meta, sizeof(meta), &p));
    assert_non_null(p);
    assert_int_equal((uintptr_t)p % 64, 0);
    t_fill(p, 1000, 1);
    /* invisible until sealed, to everyone */
    assert_int_equal(ss_contains(C2, &id), 0);
    assert_int_equal(ss_contains(C, &id), 0);
    assert_int_equal(ss_get(C2, &id, 1, 0, &o), 0);
    assert_null(o.data);
    t_assert_ok(ss_seal(C, &id));
    assert_int_equal(ss_contains(C2, &id), 1);
    assert_true(t_check(p, 1000, 1)); /* the creator's view stays readable */

    assert_int_equal(ss_get(C2, &id, 1, 0, &o), 1);
    assert_non_null(o.data);
    assert_int_equal(o.size, 1000);
    assert_int_equal(o.meta_size, sizeof(meta));
    assert_non_null(o.meta);
    assert_memory_equal(o.meta, meta, sizeof(meta));
    assert_true(t_check(o.data, 1000, 1));
    t_assert_ok(ss_release(C2, &id));
    assert_int_equal(ss_release(C2, &id), -ENOENT);
    /* the creator's reference */
    t_assert_ok(ss_release(C, &id));
    assert_int_equal(ss_release(C, &id), -ENOENT);
    assert_int_equal(ss_contains(C2, &id), 1); /* sealed objects stay */
    t_assert_ok(ss_delete(C2, &id));
}

/* sizes around the inline limit, zero, and objects with their own segment */
static void test_sizes(void **state)
{
    static const uint64_t sizes[] = { 0, 1, 63, 64, 4095, 4096, SMALL_MAX - 1, SMALL_MAX,
                                      SMALL_MAX + 1, 1 << 20, (3 << 20) + 17 };
    (void)state;
    for (size_t i = 0; i < SS_ARRAY_SIZE(sizes); i++) {
        ss_id a = new_id(), b = new_id();
        ss_object o[2];
        void *p;
        unsigned seed = (unsigned)i + 10;

        /* through create + write + seal */
        t_assert_ok(ss_create(C, &a, sizes[i], NULL, 0, &p));
        assert_non_null(p);
        assert_int_equal((uintptr_t)p % 64, 0);
        t_fill(p, sizes[i], seed);
        t_assert_ok(ss_seal(C, &a));
        t_assert_ok(ss_release(C, &a));
        /* through put */
        put_obj(C, &b, sizes[i], seed + 1, "m", 1);

        assert_int_equal(ss_get(C2, (ss_id[]){ a, b }, 2, 0, o), 2);
        for (int k = 0; k < 2; k++) {
            assert_non_null(o[k].data); /* even for size 0 */
            assert_int_equal(o[k].size, sizes[i]);
            assert_true(t_check(o[k].data, sizes[i], seed + (unsigned)k));
        }
        assert_null(o[0].meta);
        assert_int_equal(o[0].meta_size, 0);
        assert_int_equal(o[1].meta_size, 1);
        assert_memory_equal(o[1].meta, "m", 1);
        t_assert_ok(ss_release(C2, &a));
        t_assert_ok(ss_release(C2, &b));
        t_assert_ok(ss_delete(C, &a));
        t_assert_ok(ss_delete(C, &b));
    }
}

static void test_meta_limits(void **state)
{
    const uint64_t max = 64 * 1024;
    unsigned char *meta = malloc(max + 1);
    ss_id a = new_id(), b = new_id(), c = new_id();
    ss_object o;
    void *p;
    (void)state;

    assert_non_null(meta);
    t_fill(meta, max + 1, 3);
    assert_int_equal(ss_create(C, &a, 10, meta, max + 1, &p), -EINVAL);
    assert_int_equal(ss_put(C, &a, "0123456789", 10, meta, max + 1), -EINVAL);
    assert_int_equal(ss_contains(C, &a), 0);

    t_assert_ok(ss_create(C, &a, 10, meta, max, &p));
    memcpy(p, "0123456789", 10);
    t_assert_ok(ss_seal(C, &a));
    t_assert_ok(ss_release(C, &a));
    /* a small object with the largest meta and the largest inline payload */
    put_obj(C, &b, SMALL_MAX, 4, meta, max);
    /* and a large object with it */
    put_obj(C, &c, 2 << 20, 5, meta, max);

    for (int k = 0; k < 3; k++) {
        const ss_id *id = k == 0 ? &a : k == 1 ? &b : &c;
        assert_int_equal(ss_get(C2, id, 1, 0, &o), 1);
        assert_int_equal(o.meta_size, max);
        assert_true(t_check(o.meta, max, 3));
        t_assert_ok(ss_release(C2, id));
        t_assert_ok(ss_delete(C2, id));
    }
    free(meta);
}

static void test_duplicates(void **state)
{
    ss_id a = new_id(), b = new_id();
    void *p, *q;
    (void)state;

    t_assert_ok(ss_create(C, &a, 100, NULL, 0, &p));
    assert_int_equal(ss_create(C, &a, 100, NULL, 0, &q), -EEXIST);  /* being created */
    assert_int_equal(ss_create(C2, &a, 100, NULL, 0, &q), -EEXIST);
    assert_int_equal(ss_put(C2, &a, "x", 1, NULL, 0), -EEXIST);
    t_assert_ok(ss_seal(C, &a));
    assert_int_equal(ss_create(C2, &a, 100, NULL, 0, &q), -EEXIST); /* sealed */
    assert_int_equal(ss_put(C2, &a, "x", 1, NULL, 0), -EEXIST);
    t_assert_ok(ss_release(C, &a));
    t_assert_ok(ss_delete(C, &a));

    /* large objects too */
    t_assert_ok(ss_create(C, &b, 1 << 20, NULL, 0, &p));
    assert_int_equal(ss_create(C2, &b, 1 << 20, NULL, 0, &q), -EEXIST);
    t_assert_ok(ss_abort(C, &b));
    t_assert_ok(ss_create(C2, &b, 1 << 20, NULL, 0, &q)); /* free again after abort */
    t_assert_ok(ss_abort(C2, &b));
}

static void test_seal_abort_release_errors(void **state)
{
    ss_id a = new_id(), b = new_id(), u = new_id();
    void *p, *q;
    (void)state;

    assert_int_equal(ss_seal(C, &u), -ENOENT);
    assert_int_equal(ss_abort(C, &u), -ENOENT);
    assert_int_equal(ss_release(C, &u), -ENOENT);
    assert_int_equal(ss_delete(C, &u), -ENOENT);

    t_assert_ok(ss_create(C, &a, 5000, NULL, 0, &p));
    t_assert_ok(ss_create(C, &b, 1 << 20, NULL, 0, &q));
    /* only the creator may seal or abort */
    assert_int_equal(ss_seal(C2, &a), -ENOENT);
    assert_int_equal(ss_abort(C2, &b), -ENOENT);
    /* an unsealed object: no release, no delete */
    assert_int_equal(ss_release(C, &a), -EBUSY);
    assert_int_equal(ss_release(C, &b), -EBUSY);
    assert_int_equal(ss_release(C2, &a), -ENOENT);
    assert_int_equal(ss_delete(C, &a), -EBUSY);
    assert_int_equal(ss_delete(C2, &b), -EBUSY);

    t_assert_ok(ss_seal(C, &a));
    assert_int_equal(ss_seal(C, &a), -ENOENT); /* no unsealed object with that id now */
    assert_int_equal(ss_abort(C, &a), -ENOENT);
    t_assert_ok(ss_abort(C, &b));
    assert_int_equal(ss_abort(C, &b), -ENOENT);
    assert_int_equal(ss_seal(C, &b), -ENOENT);
    assert_int_equal(ss_contains(C2, &b), 0);
    t_assert_ok(ss_create(C, &b, 10, NULL, 0, &q)); /* re-creatable after abort */
    t_assert_ok(ss_abort(C, &b));

    t_assert_ok(ss_release(C, &a));
    assert_int_equal(ss_release(C, &a), -ENOENT);
    t_assert_ok(ss_delete(C2, &a));
    assert_int_equal(ss_delete(C2, &a), -ENOENT);
}

static void test_get_multi(void **state)
{
    ss_id a = new_id(), b = new_id(), missing = new_id();
    ss_id ids[4];
    ss_object o[4];
    (void)state;

    put_obj(C, &a, 100, 21, NULL, 0);
    put_obj(C, &b, 200000, 22, NULL, 0);
    ids[0] = a;
    ids[1] = b;
    ids[2] = missing;
    ids[3] = a;
    assert_int_equal(ss_get(C2, ids, 4, 0, o), 3);
    assert_true(t_check(o[0].data, 100, 21));
    assert_true(t_check(o[1].data, 200000, 22));
    assert_null(o[2].data);
    assert_memory_equal(&o[2].id, &missing, sizeof(missing));
    assert_true(t_check(o[3].data, 100, 21));
    /* a listed twice: two references */
    t_assert_ok(ss_release(C2, &a));
    t_assert_ok(ss_release(C2, &a));
    assert_int_equal(ss_release(C2, &a), -ENOENT);
    assert_int_equal(ss_release(C2, &missing), -ENOENT);
    t_assert_ok(ss_release(C2, &b));
    t_assert_ok(ss_delete(C, &a));
    t_assert_ok(ss_delete(C, &b));
}

/* more ids than one request carries: the library splits into batches */
static void test_get_many(void **state)
{
    enum { N = 150 };
    ss_id *ids = calloc(N, sizeof(*ids));
    ss_object *o = calloc(N, sizeof(*o));
    (void)state;

    assert_non_null(ids);
    assert_non_null(o);
    for (int i = 0; i < N; i++) {
        ids[i] = new_id();
        if (i % 3 == 0)
            put_obj(C, &ids[i], (uint64_t)i * 10, (unsigned)i, NULL, 0);
    }
    assert_int_equal(ss_get(C2, ids, N, 0, o), N / 3);
    for (int i = 0; i < N; i++) {
        if (i % 3 == 0) {
            assert_non_null(o[i].data);
            assert_true(t_check(o[i].data, (uint64_t)i * 10, (unsigned)i));
            t_assert_ok(ss_release(C2, &ids[i]));
            t_assert_ok(ss_delete(C, &ids[i]));
        } else {
            assert_null(o[i].data);
        }
    }
    free(ids);
    free(o);
}

static void test_get_timeouts(void **state)
{
    ss_id a = new_id(), missing = new_id();
    ss_object o[2], pattern[2];
    void *p;
    (void)state;

    memset(pattern, 0x5a, sizeof(pattern));
    memcpy(o, pattern, sizeof(o));
    assert_int_equal(ss_get(C, &missing, 1, -2, o), -EINVAL);
    assert_int_equal(ss_get(C, &missing, 1, INT64_MIN, o), -EINVAL);
    assert_memory_equal(o, pattern, sizeof(o)); /* untouched */

    assert_int_equal(ss_get(C, &missing, 1, 0, o), 0);
    assert_null(o[0].data);
    assert_int_equal(ss_get(C, &missing, 1, 30, o), 0);
    assert_null(o[0].data);

    /* an unsealed object is not found, with or without waiting */
    t_assert_ok(ss_create(C, &a, 10, NULL, 0, &p));
    assert_int_equal(ss_get(C2, &a, 1, 0, o), 0);
    assert_int_equal(ss_get(C2, &a, 1, 20, o), 0);
    t_assert_ok(ss_seal(C, &a));
    /* found ones come back at once even with a long timeout */
    assert_int_equal(ss_get(C2, &a, 1, 60000, o), 1);
    t_assert_ok(ss_release(C2, &a));
    assert_int_equal(ss_get(C2, &a, 1, -1, o), 1);
    t_assert_ok(ss_release(C2, &a));
    /* a partial answer after the timeout */
    assert_int_equal(ss_get(C2, (ss_id[]){ a, missing }, 2, 20, o), 1);
    assert_non_null(o[0].data);
    assert_null(o[1].data);
    t_assert_ok(ss_release(C2, &a));
    t_assert_ok(ss_release(C, &a));
    t_assert_ok(ss_delete(C, &a));
}

struct waiter {
    ss_client *c;
    ss_id id;
    int64_t timeout;
    int rc;
    ss_object o;
};

static void *wait_thread(void *arg)
{
    struct waiter *w = arg;

    w->rc = ss_get(w->c, &w->id, 1, w->timeout, &w->o);
    return NULL;
}

static void test_get_woken_by_seal(void **state)
{
    struct waiter w = { .c = C2, .timeout = -1 };
    struct waiter w2 = { .c = C2, .timeout = 60000 };
    pthread_t t, t2;
    void *p;
    (void)state;

    w.id = new_id();
    w2.id = w.id;
    uint64_t waits = t_store_stats(C).waits;
    assert_int_equal(pthread_create(&t, NULL, wait_thread, &w), 0);
    assert_int_equal(pthread_create(&t2, NULL, wait_thread, &w2), 0);
    /* both gets parked in the store (the stats say so), so the seal below
     * is what wakes them; a get that arrived after it would just find the
     * object. Bounded: a get that never parks fails the test, not hangs. */
    for (int i = 0; i < 1000 && t_store_stats(C).waits < waits + 2; i++)
        t_sleep_ms(10);
    assert_int_equal(t_store_stats(C).waits, waits + 2);
    t_assert_ok(ss_create(C, &w.id, 3 << 20, NULL, 0, &p));
    t_fill(p, 3 << 20, 31);
    t_assert_ok(ss_seal(C, &w.id));
    pthread_join(t, NULL);
    pthread_join(t2, NULL);
    /* give back every reference taken before checking anything, so a
     * failure here leaves no object behind for the next case */
    bool same = w.rc == 1 && w2.rc == 1 && w.o.data == w2.o.data; /* one mapping per segment */
    bool data_ok = w.rc == 1 && t_check(w.o.data, 3 << 20, 31);
    if (w.rc == 1)
        t_assert_ok(ss_release(C2, &w.id));
    if (w2.rc == 1)
        t_assert_ok(ss_release(C2, &w.id));
    t_assert_ok(ss_release(C, &w.id));
    t_assert_ok(ss_delete(C, &w.id));
    assert_int_equal(w.rc, 1);
    assert_int_equal(w2.rc, 1);
    assert_true(data_ok);
    assert_true(same);
}

/* Threads of one handle getting the same new segment at once: one reply
 * carries its fd, the others SS_FD_NONE, and the replies may be applied
 * in any order by their threads. */
struct racer {
    pthread_barrier_t *bar;
    ss_id id;
    int rc;
    ss_object o;
};

static void *race_thread(void *arg)
{
    struct racer *r = arg;

    pthread_barrier_wait(r->bar);
    r->rc = ss_get(C2, &r->id, 1, 5000, &r->o);
    return NULL;
}

static void test_concurrent_gets_same_segment(void **state)
{
    enum { T = 4, ROUNDS = 40 };
    pthread_barrier_t bar;
    struct racer r[T];
    pthread_t t[T];
    (void)state;

    assert_int_equal(pthread_barrier_init(&bar, NULL, T + 1), 0);
    for (int round = 0; round < ROUNDS; round++) {
        ss_id id = new_id();
        uint64_t size = round % 2 ? (1 << 20) + 1 : 40000;

        for (int i = 0; i < T; i++) {
            r[i] = (struct racer){ .bar = &bar, .id = id };
            assert_int_equal(pthread_create(&t[i], NULL, race_thread, &r[i]), 0);
        }
        pthread_barrier_wait(&bar);
        put_obj(C, &id, size, (unsigned)round, NULL, 0);
        for (int i = 0; i < T; i++) {
            pthread_join(t[i], NULL);
            assert_int_equal(r[i].rc, 1);
            assert_ptr_equal(r[i].o.data, r[0].o.data);
            assert_true(t_check(r[i].o.data, size, (unsigned)round));
        }
        for (int i = 0; i < T; i++)
            t_assert_ok(ss_release(C2, &id));
        assert_int_equal(ss_release(C2, &id), -ENOENT);
        t_assert_ok(ss_delete(C, &id));
    }
    pthread_barrier_destroy(&bar);
}

static void test_delete_while_referenced(void **state)
{
    ss_id a = new_id();
    ss_object v, v2;
    const void *creator_view;
    void *p;
    (void)state;

    for (int large = 0; large < 2; large++) {
        uint64_t size = large ? (2 << 20) + 5 : 3000;

        t_assert_ok(ss_create(C, &a, size, "m1", 2, &p));
        t_fill(p, size, 40);
        t_assert_ok(ss_seal(C, &a));
        creator_view = p;
        assert_int_equal(ss_get(C2, &a, 1, 0, &v), 1);
        assert_int_equal(ss_delete(C2, &a), 0);
        assert_int_equal(ss_contains(C, &a), 0);
        assert_int_equal(ss_get(C, &a, 1, 0, &v2), 0);
        assert_int_equal(ss_delete(C2, &a), -ENOENT);
        /* views stay readable */
        assert_true(t_check(v.data, size, 40));
        assert_true(t_check(creator_view, size, 40));
        assert_memory_equal(v.meta, "m1", 2);
        /* the id can be created again at once */
        put_obj(C, &a, size / 2, 41, "m2", 2);
        assert_int_equal(ss_get(C2, &a, 1, 0, &v2), 1);
        assert_true(t_check(v2.data, size / 2, 41));
        assert_memory_equal(v2.meta, "m2", 2);
        assert_true(t_check(v.data, size, 40));
        /* release drops the oldest view first, then the new one */
        t_assert_ok(ss_release(C2, &a));
        assert_true(t_check(v2.data, size / 2, 41));
        t_assert_ok(ss_release(C2, &a));
        assert_int_equal(ss_release(C2, &a), -ENOENT);
        t_assert_ok(ss_release(C, &a));
        assert_int_equal(ss_release(C, &a), -ENOENT);
        assert_int_equal(ss_contains(C, &a), 1);
        t_assert_ok(ss_delete(C, &a));
    }
}

static void test_read_only_views(void **state)
{
    ss_id a = new_id(), b = new_id();
    ss_object o[2];
    void *pa, *pb;
    (void)state;

    t_assert_ok(ss_create(C, &a, 100, NULL, 0, &pa));
    t_assert_ok(ss_create(C, &b, 1 << 20, NULL, 0, &pb));
    /* writable before seal */
    assert_false(write_faults(pa));
    assert_false(write_faults((char *)pb + 12345));
    t_fill(pa, 100, 50);
    t_fill(pb, 1 << 20, 51);
    t_assert_ok(ss_seal(C, &a));
    t_assert_ok(ss_seal(C, &b));
    /* the creator's pointer is a read-only view now */
    assert_true(write_faults(pa));
    assert_true(write_faults(pb));
    assert_true(write_faults((char *)pb + (1 << 20) - 1));
    assert_true(t_check(pa, 100, 50));
    assert_true(t_check(pb, 1 << 20, 51));
    /* and so are views from get, in both handles */
    assert_int_equal(ss_get(C2, (ss_id[]){ a, b }, 2, 0, o), 2);
    assert_true(write_faults((void *)o[0].data));
    assert_true(write_faults((void *)o[1].data));
    t_assert_ok(ss_release(C2, &a));
    t_assert_ok(ss_release(C2, &b));
    assert_int_equal(ss_get(C, (ss_id[]){ a, b }, 2, 0, o), 2);
    assert_true(write_faults((void *)o[0].data));
    assert_true(write_faults((void *)o[1].data));
    t_assert_ok(ss_release(C, &a));
    t_assert_ok(ss_release(C, &b));
    t_assert_ok(ss_release(C, &a));
    t_assert_ok(ss_release(C, &b));
    t_assert_ok(ss_delete(C, &a));
    t_assert_ok(ss_delete(C, &b));
    /* small creations cut their buffers from two 1 MiB slabs per handle
     * and a slab starts over, made writable again, once none of its
     * buffers is held (ss__cl_buf_take): through several rounds of both
     * slabs, with creations held across them (so one round cannot reset
     * a slab, and one has both slabs held and gets a mapping of its own)
     * and one aborted, each creation is writable until its seal and a
     * read-only view after, the object holds its own bytes, and a held
     * view keeps its bytes while the slabs go round */
    enum { N = 120, SZ = 60000 };
    ss_id held[3];
    void *hp[3];
    uint64_t hn[3];
    unsigned hseed[3];
    int nheld = 0;

    for (int i = 0; i < N; i++) {
        ss_id c = new_id();
        void *pc;
        uint64_t n = i % 7 == 1 ? 4000 : i % 7 == 2 ? 60 : SZ;
        bool hold = i == 3 || i == 20 || i == 37;

        t_assert_ok(ss_create(C, &c, n, NULL, 0, &pc));
        assert_false(write_faults(pc));
        assert_false(write_faults((char *)pc + n - 1));
        if (i == 50) { /* aborted: its buffer goes back writable or not */
            t_fill(pc, n, 1);
            t_assert_ok(ss_abort(C, &c));
            continue;
        }
        t_fill(pc, n, 60 + (unsigned)i);
        t_assert_ok(ss_seal(C, &c));
        assert_true(write_faults(pc));
        assert_true(write_faults((char *)pc + n - 1));
        assert_true(t_check(pc, n, 60 + (unsigned)i));
        assert_int_equal(ss_get(C2, &c, 1, 0, o), 1);
        assert_int_equal(o[0].size, n);
        assert_true(t_check(o[0].data, n, 60 + (unsigned)i));
        t_assert_ok(ss_release(C2, &c));
        if (hold) {
            held[nheld] = c;
            hp[nheld] = pc;
            hn[nheld] = n;
            hseed[nheld++] = 60 + (unsigned)i;
            continue;
        }
        t_assert_ok(ss_release(C, &c));
        t_assert_ok(ss_delete(C, &c));
        if (i == 90) /* the held ones end: both slabs can start over */
            for (int k = 0; k < nheld; k++) {
                assert_true(t_check(hp[k], hn[k], hseed[k]));
                assert_true(write_faults(hp[k]));
                t_assert_ok(ss_release(C, &held[k]));
                t_assert_ok(ss_delete(C, &held[k]));
            }
    }
    assert_int_equal(nheld, 3);
}

/* several threads on one handle: one blocked in get, the others free */
struct churner {
    ss_client *c;
    int n;
    int errors;
    unsigned seed;
};

static void *churn_thread(void *arg)
{
    struct churner *ch = arg;
    char buf[3000];

    for (int i = 0; i < ch->n; i++) {
        ss_id id;
        ss_object o;
        uint64_t size = 1 + (uint64_t)((i * 37 + ch->seed) % sizeof(buf));

        memset(&id, 0, sizeof(id));
        snprintf((char *)id.b, sizeof(id.b), "th%u-%d", ch->seed, i);
        t_fill(buf, size, ch->seed + (unsigned)i);
        if (ss_put(ch->c, &id, buf, size, NULL, 0) != 0 ||
            ss_get(ch->c, &id, 1, 0, &o) != 1 || o.size != size ||
            !t_check(o.data, size, ch->seed + (unsigned)i) || ss_release(ch->c, &id) != 0 ||
            ss_delete(ch->c, &id) != 0)
            ch->errors++;
    }
    return NULL;
}

static void test_threads_share_handle(void **state)
{
    enum { T = 4, N = 150 };
    struct waiter w = { .c = C, .timeout = -1 };
    struct churner ch[T];
    pthread_t wt, t[T];
    (void)state;

    w.id = new_id();
    assert_int_equal(pthread_create(&wt, NULL, wait_thread, &w), 0);
    t_sleep_ms(20);
    for (int i = 0; i < T; i++) {
        ch[i] = (struct churner){ .c = C, .n = N, .seed = 100 + (unsigned)i };
        assert_int_equal(pthread_create(&t[i], NULL, churn_thread, &ch[i]), 0);
    }
    for (int i = 0; i < T; i++) {
        pthread_join(t[i], NULL);
        assert_int_equal(ch[i].errors, 0);
    }
    /* the blocked get is still waiting, and a seal from the other client ends it */
    put_obj(C2, &w.id, 777, 60, NULL, 0);
    pthread_join(wt, NULL);
    assert_int_equal(w.rc, 1);
    assert_true(t_check(w.o.data, 777, 60));
    t_assert_ok(ss_release(C, &w.id));
    t_assert_ok(ss_delete(C, &w.id));
}

static void test_list_and_stats(void **state)
{
    enum { N = 5 };
    ss_id ids[N];
    bool seen[N] = { false };
    ss_obj_info info[2];
    uint64_t cursor = 0;
    ss_stats st0, st;
    void *p;
    ss_id u = new_id();
    int rounds = 0;
    (void)state;

    memset(&st0, 0, sizeof(st0));
    st0.size = sizeof(st0);
    st0.version = SS_STATS_VERSION;
    t_assert_ok(ss_stats_get(C, &st0));
    for (int i = 0; i < N; i++) {
        ids[i] = new_id();
        put_obj(C, &ids[i], i == 0 ? (4 << 20) : (uint64_t)(i * 100), (unsigned)i, "mm", 2);
    }
    t_assert_ok(ss_create(C, &u, 10, NULL, 0, &p)); /* an unsealed one */

    assert_int_equal(ss_list(C, &cursor, info, 0), 0);
    do {
        int n = ss_list(C2, &cursor, info, 2);
        t_assert_ok(n);
        assert_true(n <= 2);
        for (int k = 0; k < n; k++) {
            if (memcmp(&info[k].id, &u, sizeof(u)) == 0) {
                assert_int_equal(info[k].state, SS_OBJ_CREATED);
                continue;
            }
            for (int i = 0; i < N; i++)
                if (memcmp(&info[k].id, &ids[i], sizeof(ids[i])) == 0) {
                    assert_false(seen[i]);
                    seen[i] = true;
                    assert_int_equal(info[k].state, SS_OBJ_SEALED);
                    assert_int_equal(info[k].size, i == 0 ? (4 << 20) : (uint64_t)(i * 100));
                    assert_int_equal(info[k].meta_size, 2);
                    assert_int_equal(info[k].refs, 0);
                    assert_true(info[k].backing[0] != 0);
                    assert_true(memchr(info[k].backing, 0, sizeof(info[k].backing)) != NULL);
                    if (i != 0)
                        assert_string_equal(info[k].backing, "small");
                    else
                        assert_string_not_equal(info[k].backing, "small");
                }
        }
        assert_true(++rounds < 100000);
    } while (cursor != 0);
    for (int i = 0; i < N; i++)
        assert_true(seen[i]);

    memset(&st, 0, sizeof(st));
    st.size = sizeof(st);
    st.version = SS_STATS_VERSION;
    t_assert_ok(ss_stats_get(C2, &st));
    assert_int_equal(st.size, sizeof(st));
    assert_int_equal(st.version, SS_STATS_VERSION);
    assert_int_equal(st.objects, st0.objects + N + 1);
    assert_int_equal(st.sealed_objects, st0.sealed_objects + N);
    assert_true(st.object_bytes >= st0.object_bytes + (4 << 20));
    assert_true(st.capacity > 0);
    assert_true(st.resident_bytes >= (4 << 20));
    assert_true(st.clients >= 2);
    assert_true(st.seals >= st0.seals + N);

    t_assert_ok(ss_abort(C, &u));
    for (int i = 0; i < N; i++)
        t_assert_ok(ss_delete(C, &ids[i]));
    t_assert_ok(ss_stats_get(C2, &st));
    assert_int_equal(st.objects, st0.objects);
}

static void test_contains_delete(void **state)
{
    ss_id a = new_id();
    (void)state;

    assert_int_equal(ss_contains(C, &a), 0);
    put_obj(C, &a, 10, 70, NULL, 0);
    assert_int_equal(ss_contains(C, &a), 1);
    assert_int_equal(ss_contains(C2, &a), 1);
    t_assert_ok(ss_delete(C2, &a));
    assert_int_equal(ss_contains(C, &a), 0);
    assert_int_equal(ss_delete(C, &a), -ENOENT);
}

static int wait_event(int fd, ss_event *ev)
{
    struct pollfd pfd = { .fd = fd, .events = POLLIN };

    if (poll(&pfd, 1, 5000) != 1)
        return -ETIMEDOUT;
    return ss_event_next(fd, ev);
}

static void test_events(void **state)
{
    ss_id a = new_id(), b = new_id();
    ss_event ev;
    int fd, fd2;
    void *p;
    (void)state;

    t_assert_ok(ss_subscribe(C2, SS_EVENT_SEALED | SS_EVENT_DELETED, &fd));
    t_assert_ok(ss_subscribe(C, SS_EVENT_DELETED, &fd2));
    assert_int_equal(ss_event_next(fd, &ev), 0); /* nothing yet */

    put_obj(C, &a, 1234, 80, NULL, 0);
    assert_int_equal(wait_event(fd, &ev), 1);
    assert_int_equal(ev.type, SS_EVENT_SEALED);
    assert_memory_equal(&ev.id, &a, sizeof(a));
    assert_int_equal(ev.size, 1234);

    t_assert_ok(ss_create(C, &b, 1 << 20, NULL, 0, &p));
    t_assert_ok(ss_abort(C, &b)); /* an abort is no event */
    t_assert_ok(ss_delete(C, &a));
    assert_int_equal(wait_event(fd, &ev), 1);
    assert_int_equal(ev.type, SS_EVENT_DELETED);
    assert_memory_equal(&ev.id, &a, sizeof(a));
    assert_int_equal(ss_event_next(fd, &ev), 0);

    /* fd2 only wanted deletions */
    assert_int_equal(wait_event(fd2, &ev), 1);
    assert_int_equal(ev.type, SS_EVENT_DELETED);
    assert_memory_equal(&ev.id, &a, sizeof(a));
    assert_int_equal(ss_event_next(fd2, &ev), 0);
    ss_unsubscribe(fd);
    ss_unsubscribe(fd2);
}

static void test_put_then_get_large(void **state)
{
    static const uint64_t sizes[] = { SMALL_MAX + 1, 1 << 20, (8 << 20) + 4096 + 3 };
    (void)state;
    for (size_t i = 0; i < SS_ARRAY_SIZE(sizes); i++) {
        ss_id a = new_id();

        put_obj(C, &a, sizes[i], 90 + (unsigned)i, NULL, 0);
        get_check(C2, &a, sizes[i], 90 + (unsigned)i);
        get_check(C, &a, sizes[i], 90 + (unsigned)i);
        t_assert_ok(ss_delete(C, &a));
    }
}

/* ------------------------------------------------ the store's own mapping */

struct vma {
    uintptr_t lo, hi;
    char perms[5];
    uint64_t pgoff;
    unsigned long inode;
};

/* The mappings of this process whose path contains `name`; how many. */
static int vmas_named(const char *name, struct vma *out, int max)
{
    FILE *f = fopen("/proc/self/maps", "r");
    char line[512];
    int n = 0;

    assert_non_null(f);
    while (n < max && fgets(line, sizeof(line), f)) {
        struct vma v;
        unsigned long long off;
        if (!strstr(line, name) ||
            sscanf(line, "%lx-%lx %4s %llx %*s %lu", &v.lo, &v.hi, v.perms, &off, &v.inode) != 5)
            continue;
        v.pgoff = off;
        out[n++] = v;
    }
    fclose(f);
    return n;
}

/* Every address in this process that maps the byte a reader sees at
 * `data` (the reader's own mapping, other handles', the embedded store's),
 * in a memfd whose name holds `name`; *writable: how many of them are
 * writable. */
static int maps_of(const char *name, const void *data, uintptr_t *at, int max, int *writable)
{
    struct vma v[256];
    int n = vmas_named(name, v, 256), k = 0;
    const struct vma *mine = NULL;

    for (int i = 0; i < n; i++)
        if ((uintptr_t)data >= v[i].lo && (uintptr_t)data < v[i].hi)
            mine = &v[i];
    assert_non_null(mine);
    uint64_t fileoff = (uintptr_t)data - mine->lo + mine->pgoff;
    *writable = 0;
    for (int i = 0; i < n && k < max; i++) {
        if (v[i].inode != mine->inode || fileoff < v[i].pgoff ||
            fileoff >= v[i].pgoff + (v[i].hi - v[i].lo))
            continue;
        at[k++] = v[i].lo + (uintptr_t)(fileoff - v[i].pgoff);
        *writable += v[i].perms[1] == 'w';
    }
    return k;
}

/* The store writes small objects, and large ones put from a buffer,
 * through its one writable mapping of their segment or arena, which anyone
 * who can write its memory could use too (root with /proc/PID/mem or
 * process_vm_writev; no user-space design stops root). It is read-only
 * but while the store writes (and, for small units and arena objects up
 * to 2 MiB, up to 20 ms after): shortly after a put no mapping of the
 * object's first page in this process (the embedded store's included) is
 * writable, and a write through /proc/self/mem to any of them fails and
 * changes nothing a reader sees. */
static void test_small_pages_read_only(void **state)
{
    static const uint64_t sizes[] = { 1000, 1 << 20 };
    static const char *const names[] = { "sealstore-small", "sealstore-arena" };
    (void)state;

    for (size_t k = 0; k < SS_ARRAY_SIZE(sizes); k++) {
        ss_id a = new_id();
        ss_object o;
        uintptr_t at[8];
        int n = 0, writable = -1;

        put_obj(C, &a, sizes[k], 77, NULL, 0);
        assert_int_equal(ss_get(C, &a, 1, 0, &o), 1);
        /* the window closes within about 20 ms of the write; bounded */
        for (int i = 0; i < 500; i++) {
            n = maps_of(names[k], o.data, at, 8, &writable);
            if (!writable)
                break;
            t_sleep_ms(10);
        }
        assert_true(n >= 2); /* the reader's and the store's at least */
        if (writable)
            fail_msg("%d of %d mappings of a sealed object of %llu bytes stay writable",
                     writable, n, (unsigned long long)sizes[k]);
        unsigned char was = *(const unsigned char *)o.data, evil = (unsigned char)(was ^ 0xff);
        int fd = open("/proc/self/mem", O_RDWR | O_CLOEXEC);
        assert_true(fd >= 0);
        for (int i = 0; i < n; i++) {
            errno = 0;
            ssize_t w = pwrite(fd, &evil, 1, (off_t)at[i]);
            if (w >= 0)
                fail_msg("/proc/self/mem wrote a mapping of a sealed object at %lx",
                         (unsigned long)at[i]);
            assert_true(errno == EIO || errno == EFAULT);
        }
        close(fd);
        assert_int_equal(*(const unsigned char *)o.data, was);
        assert_true(t_check(o.data, sizes[k], 77));
        t_assert_ok(ss_release(C, &a));
        t_assert_ok(ss_delete(C, &a));
    }
}

static void test_pool_yields_to_writer(void **state)
{
    char path[200], size[32], classes[64];
    ss_client *h;
    int checked = 0;
    (void)state;

    /* While a producer writes a segment it took from the pool, the pool
     * is not refilled (the populator leaves it the memory bandwidth for
     * 250 ms after the take) as long as the bucket still holds one; the
     * refill comes once the writer is done. A store of its own, whose pool
     * is two 1 MiB segments, so full means two in that one bucket. */
    snprintf(path, sizeof(path), "%s/yields.sock", t_tmpdir());
    int n1 = ss_option_get(SS_OPT_POOL_SIZE, size, sizeof(size));
    int n2 = ss_option_get(SS_OPT_POOL_CLASSES, classes, sizeof(classes));
    assert_true(n1 >= 0 && n1 < (int)sizeof(size) && n2 >= 0 && n2 < (int)sizeof(classes));
    t_assert_ok(ss_option_set(SS_OPT_POOL_SIZE, "2M"));
    t_assert_ok(ss_option_set(SS_OPT_POOL_CLASSES, "1M"));
    t_assert_ok(ss_connect(path, SS_CONNECT_EMBED, &h));
    t_assert_ok(ss_option_set(SS_OPT_POOL_SIZE, size));
    t_assert_ok(ss_option_set(SS_OPT_POOL_CLASSES, classes));

    for (int round = 0; round < 20 && checked < 3; round++) {
        ss_id a = new_id();
        void *p;
        uint64_t r1, t0;

        for (int i = 0; i < 500 && t_store_stats(h).pool_ready_bytes < (2u << 20); i++)
            t_sleep_ms(10);
        assert_int_equal(t_store_stats(h).pool_ready_bytes, 2u << 20);
        t_assert_ok(ss_create(h, &a, 1 << 20, NULL, 0, &p));
        t0 = t_now_ns();
        t_sleep_ms(30);
        memset(p, 7, 1 << 20);
        r1 = t_store_stats(h).pool_ready_bytes;
        /* unless this thread was descheduled past the hold */
        if (t_now_ns() - t0 < 200 * 1000000ull) {
            assert_int_equal(r1, 1u << 20);
            checked++;
        }
        t_assert_ok(ss_seal(h, &a));
        t_assert_ok(ss_release(h, &a));
        t_assert_ok(ss_delete(h, &a));
        /* and the refill happens once the writer is done */
        for (int i = 0; i < 500 && t_store_stats(h).pool_ready_bytes < (2u << 20); i++)
            t_sleep_ms(10);
        assert_int_equal(t_store_stats(h).pool_ready_bytes, 2u << 20);
    }
    assert_true(checked > 0);
    ss_disconnect(h);
}

static void test_create_too_big(void **state)
{
    ss_id a = new_id();
    void *p;
    ss_stats st;
    (void)state;

    memset(&st, 0, sizeof(st));
    st.size = sizeof(st);
    st.version = SS_STATS_VERSION;
    t_assert_ok(ss_stats_get(C, &st));
    /* more than the whole capacity can never fit: no waiting */
    assert_int_equal(ss_create(C, &a, st.capacity + (1 << 20), NULL, 0, &p), -ENOSPC);
    assert_int_equal(ss_contains(C, &a), 0);
}

/* refs the store counts for id (all clients), as another client sees them */
static int store_refs(ss_client *viewer, const ss_id *id)
{
    uint64_t cur = 0;
    ss_obj_info info[64];

    do {
        int n = ss_list(viewer, &cur, info, SS_ARRAY_SIZE(info));
        assert_true(n >= 0);
        for (int i = 0; i < n; i++)
            if (memcmp(&info[i].id, id, sizeof(*id)) == 0)
                return (int)info[i].refs;
    } while (cur != 0);
    return -1;
}

/* another connection's messages are not ordered with ours: poll a little */
static int store_refs_settle(ss_client *viewer, const ss_id *id, int want)
{
    int r = -1;

    for (int i = 0; i < 200 && (r = store_refs(viewer, id)) != want; i++)
        t_sleep_ms(5);
    return r;
}

/*
 * ss_release of a large object reaches the store at once; a small object's
 * release travels with the handle's next call (so a get + release loop
 * wakes the store once per pair), or goes out when 64 are waiting.
 */
static void test_release_deferral(void **state)
{
    ss_id small = new_id(), large = new_id(), more[64];
    ss_object o;

    (void)state;
    put_obj(C2, &small, 100, 1, NULL, 0);
    put_obj(C2, &large, 1 << 20, 2, NULL, 0);
    assert_int_equal(ss_get(C2, &small, 1, 0, &o), 1);
    assert_int_equal(ss_get(C2, &large, 1, 0, &o), 1);
    assert_int_equal(store_refs(C, &small), 1);
    assert_int_equal(store_refs(C, &large), 1);

    t_assert_ok(ss_release(C2, &large));
    t_assert_ok(ss_release(C2, &small));
    assert_int_equal(store_refs_settle(C, &large, 0), 0);
    /* C2 made no call since: its small release has not been sent */
    t_sleep_ms(20);
    assert_int_equal(store_refs(C, &small), 1);
    /* its next call sends it: ahead of the request itself, or alone when
     * the call asks the store nothing (a contains answered from the
     * shared index) */
    assert_int_equal(ss_contains(C2, &small), 1);
    assert_int_equal(store_refs_settle(C, &small, 0), 0);

    /* a full batch goes out by itself */
    for (int i = 0; i < 64; i++) {
        more[i] = new_id();
        put_obj(C2, &more[i], 64, (unsigned)i, NULL, 0);
        assert_int_equal(ss_get(C2, &more[i], 1, 0, &o), 1);
    }
    for (int i = 0; i < 64; i++)
        t_assert_ok(ss_release(C2, &more[i]));
    for (int i = 0; i < 64; i++)
        assert_int_equal(store_refs_settle(C, &more[i], 0), 0);

    /* deferred releases are sent before a disconnect */
    {
        ss_client *c3;
        ss_id x = new_id();

        t_assert_ok(ss_connect(sock_path, 0, &c3));
        put_obj(c3, &x, 10, 3, NULL, 0);
        assert_int_equal(ss_get(c3, &x, 1, 0, &o), 1);
        t_assert_ok(ss_release(c3, &x));
        ss_disconnect(c3);
        assert_int_equal(store_refs_settle(C, &x, 0), 0);
        t_assert_ok(ss_delete(C, &x));
    }
    t_assert_ok(ss_delete(C, &small));
    t_assert_ok(ss_delete(C, &large));
    for (int i = 0; i < 64; i++)
        t_assert_ok(ss_delete(C, &more[i]));
}

/* Put an object (seed), take a view of it, delete it and put its
 * successor (seed + 1) with the same id: the view still reads the first. */
static void viewed_then_replaced(ss_client *c, const ss_id *id, uint64_t size, unsigned seed,
                                 ss_object *v)
{
    put_obj(c, id, size, seed, NULL, 0);
    assert_int_equal(ss_get(c, id, 1, 0, v), 1);
    t_assert_ok(ss_delete(c, id));
    put_obj(c, id, size, seed + 1, NULL, 0);
    assert_true(t_check(v->data, size, seed));
}

/* Create, fill and seal an object, then delete it: the creator keeps its
 * reference and pointer (returned). */
static void *sealed_then_deleted(ss_client *c, const ss_id *id, uint64_t size, unsigned seed)
{
    void *p;

    t_assert_ok(ss_create(c, id, size, NULL, 0, &p));
    t_fill(p, size, seed);
    t_assert_ok(ss_seal(c, id));
    t_assert_ok(ss_delete(c, id));
    return p;
}

/*
 * A put of an id this client still holds a deleted object of (a view from
 * get, or its own creation) ends its own reference only: the older view
 * stays mapped and intact until the matching release. Large objects (put
 * through create + seal) and small ones.
 */
static void test_put_keeps_older_view(void **state)
{
    ss_id x = new_id();
    ss_object v, v2;
    void *p;

    (void)state;
    for (int large = 0; large < 2; large++) {
        uint64_t size = large ? 1 << 20 : 3000;

        /* a view from get */
        viewed_then_replaced(C2, &x, size, 60, &v);
        /* the new object holds no reference of the put; C2 the old one */
        assert_int_equal(store_refs(C2, &x), 0);
        assert_int_equal(ss_get(C2, &x, 1, 0, &v2), 1);
        assert_true(t_check(v2.data, size, 61));
        assert_int_equal(store_refs(C2, &x), 1);
        /* release drops the oldest: the deleted object's view */
        t_assert_ok(ss_release(C2, &x));
        assert_true(t_check(v2.data, size, 61));
        assert_int_equal(store_refs(C2, &x), 1);
        t_assert_ok(ss_release(C2, &x));
        assert_int_equal(store_refs(C2, &x), 0);
        assert_int_equal(ss_release(C2, &x), -ENOENT);
        t_assert_ok(ss_delete(C2, &x));

        /* the creator's own pointer */
        p = sealed_then_deleted(C2, &x, size, 62);
        put_obj(C2, &x, size, 63, NULL, 0);
        assert_true(t_check(p, size, 62));
        assert_int_equal(store_refs(C2, &x), 0);
        t_assert_ok(ss_release(C2, &x));
        assert_int_equal(ss_release(C2, &x), -ENOENT);
        get_check(C2, &x, size, 63);
        t_assert_ok(ss_delete(C2, &x));
    }
}

/*
 * ss_release_object gives back the reference of the very object a view came
 * from: views of a deleted object and of its successor with the same id,
 * released newest first, leave the older view intact; the newer object's
 * reference reaches the store once the older one's is released.
 */
static void test_release_object(void **state)
{
    ss_id x = new_id();
    ss_object v1, v2, bad;
    void *p1, *p2;

    (void)state;
    for (int large = 0; large < 2; large++) {
        uint64_t size = large ? 1 << 20 : 3000;

        viewed_then_replaced(C2, &x, size, 70, &v1);
        assert_int_equal(ss_get(C2, &x, 1, 0, &v2), 1);
        t_assert_ok(ss_release_object(C2, &v2));
        assert_true(t_check(v1.data, size, 70));
        /* v2's reference is owed until v1's goes; given back only once */
        assert_int_equal(ss_release_object(C2, &v2), -ENOENT);
        assert_int_equal(store_refs(C2, &x), 1);
        t_assert_ok(ss_release_object(C2, &v1));
        assert_int_equal(store_refs(C2, &x), 0);
        assert_int_equal(ss_release(C2, &x), -ENOENT);
        t_assert_ok(ss_delete(C2, &x));

        /* a creator's own pointer, beside an older creation of the id */
        p1 = sealed_then_deleted(C2, &x, size, 72);
        t_assert_ok(ss_create(C2, &x, size, NULL, 0, &p2));
        t_fill(p2, size, 73);
        bad = (ss_object){ .id = x, .data = p2 };
        assert_int_equal(ss_release_object(C2, &bad), -EBUSY);
        t_assert_ok(ss_seal(C2, &x));
        t_assert_ok(ss_release_object(C2, &bad));
        assert_true(t_check(p1, size, 72));
        assert_int_equal(ss_get(C2, &x, 1, 0, &v2), 1);
        assert_true(t_check(v2.data, size, 73));
        t_assert_ok(ss_release_object(C2, &v2)); /* not ss_release: p1's is older */
        assert_true(t_check(p1, size, 72));
        bad.data = p1;
        t_assert_ok(ss_release_object(C2, &bad));
        assert_int_equal(store_refs(C2, &x), 0);
        t_assert_ok(ss_delete(C2, &x));
    }
    bad = (ss_object){ .id = x, .data = &bad };
    assert_int_equal(ss_release_object(C2, &bad), -ENOENT);
    assert_int_equal(ss_release_object(C2, NULL), -EINVAL);
    bad.data = NULL;
    assert_int_equal(ss_release_object(C2, &bad), -EINVAL);
}

static int setup(void **state)
{
    (void)state;
    snprintf(sock_path, sizeof(sock_path), "%s/store.sock", t_tmpdir());
    /* these cases count the store's references: every get asks it (gets
     * served from the index are t_pins' cases) */
    if (ss_option_set(SS_OPT_INDEX_GETS, "off") != 0)
        return -1;
    if (ss_connect(sock_path, SS_CONNECT_EMBED, &C) != 0)
        return -1;
    if (ss_connect(sock_path, 0, &C2) != 0)
        return -1;
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    ss_disconnect(C2);
    ss_disconnect(C);
    return 0;
}

/* ---------------------------------------------------- kept mappings */

/* This process's read-only object segment mappings: a client's (the
 * embedded store's pool maps the segments it makes ready writable, and
 * makes new ones at any time); how many. */
static int ro_obj_vmas(struct vma *out, int max)
{
    struct vma v[256];
    int n = vmas_named("sealstore-obj", v, 256), k = 0;

    for (int i = 0; i < n && k < max; i++)
        if (v[i].perms[1] != 'w')
            out[k++] = v[i];
    return k;
}

/* The inode of the object segment mapping `p` is in, 0 if none. */
static unsigned long obj_inode(const void *p)
{
    struct vma v[256];
    int n = ro_obj_vmas(v, 256);

    for (int i = 0; i < n; i++)
        if ((uintptr_t)p >= v[i].lo && (uintptr_t)p < v[i].hi)
            return v[i].inode;
    return 0;
}

/* Does this process map the object segment with this inode? (Addresses
 * alone would not tell: a new mapping may land where an old one was.) */
static bool obj_mapped(unsigned long inode)
{
    struct vma v[256];
    int n = ro_obj_vmas(v, 256);

    for (int i = 0; i < n; i++)
        if (v[i].inode == inode)
            return true;
    return false;
}

/* get + check every byte + release on h: the inode of the view's segment
 * (looked up while held), its address in *data. */
static unsigned long get_check_release(ss_client *h, const ss_id *id, uint64_t size,
                                       unsigned seed, const void **data)
{
    ss_object o;
    unsigned long ino;

    assert_int_equal(ss_get(h, id, 1, 0, &o), 1);
    assert_int_equal(o.size, size);
    assert_true(t_check(o.data, size, seed));
    ino = obj_inode(o.data);
    assert_true(ino != 0);
    if (data)
        *data = o.data;
    t_assert_ok(ss_release(h, id));
    return ino;
}

/* An object written in place in a segment of its own (create + write +
 * seal + release, through a handle of its own that is gone after, with
 * its mappings): the segments kept mappings are about (ss_put copies a
 * large object into an arena the store shares between many). */
static int put_in_segment(ss_client *unused, const ss_id *id, const void *data, uint64_t size,
                          const void *meta, uint64_t meta_size)
{
    ss_client *h;
    void *p;
    int rc = ss_connect(sock_path, 0, &h);

    (void)unused;
    if (rc < 0)
        return rc;
    if ((rc = ss_create(h, id, size, meta, meta_size, &p)) == 0) {
        memcpy(p, data, size);
        if ((rc = ss_seal(h, id)) == 0)
            rc = ss_release(h, id);
    }
    ss_disconnect(h);
    return rc;
}

/* A large object's segment stays mapped after its last release, so that a
 * get of it again maps nothing (the same address: the old mapping is
 * still there, a new one could not land on it); it is unmapped as soon as
 * the handle learns the object is gone (its own delete, or a contains or
 * get no longer finding it), and the kept ones are bounded by count (16)
 * and bytes (SEALSTORE_MAP_CACHE; 0: none kept). Once all is deleted and
 * the handle gone, no object mapping is left. */
/*
 * The contract of ss_delete holds for holders: once any client's delete of
 * an id is answered, a get of it through another handle that still holds
 * the object does not find it (the holder's view stays valid). With
 * SEALSTORE_LOCAL_GETS on, the holder's re-get is answered by its handle
 * and returns the held object, as documented.
 */
static void test_get_after_others_delete(void **state)
{
    enum { SMALL = 1000, BIG = 1 << 20 };
    const uint64_t sizes[] = { SMALL, BIG };
    ss_client *h, *hl;
    ss_object held, heldl, o;

    (void)state;
    t_assert_ok(ss_connect(sock_path, 0, &h));
    t_assert_ok(ss_option_set(SS_OPT_LOCAL_GETS, "on"));
    t_assert_ok(ss_connect(sock_path, 0, &hl));
    t_assert_ok(ss_option_set(SS_OPT_LOCAL_GETS, "off"));
    for (size_t k = 0; k < sizeof(sizes) / sizeof(sizes[0]); k++) {
        ss_id x = new_id();

        put_obj(C, &x, sizes[k], 60 + (unsigned)k, NULL, 0);
        assert_int_equal(ss_get(h, &x, 1, 0, &held), 1);
        assert_int_equal(ss_get(hl, &x, 1, 0, &heldl), 1);
        assert_int_equal(ss_get(h, &x, 1, 0, &o), 1); /* held: found */
        t_assert_ok(ss_release_object(h, &o));
        t_assert_ok(ss_delete(C, &x));
        /* default: the store is asked, and the object is gone */
        assert_int_equal(ss_get(h, &x, 1, 0, &o), 0);
        assert_null(o.data);
        assert_true(t_check(held.data, sizes[k], 60 + (unsigned)k)); /* the view stays */
        /* SEALSTORE_LOCAL_GETS: the handle answers from what it holds */
        assert_int_equal(ss_get(hl, &x, 1, 0, &o), 1);
        assert_ptr_equal(o.data, heldl.data);
        t_assert_ok(ss_release_object(hl, &o));
        t_assert_ok(ss_release_object(h, &held));
        t_assert_ok(ss_release_object(hl, &heldl));
    }
    ss_disconnect(hl);
    ss_disconnect(h);
}

static void test_kept_mappings(void **state)
{
    enum { BIG = 1 << 20, MID = 128 * 1024, HUGE = 24 << 20, NMID = 20, NHUGE = 3 };
    struct vma v[256];
    int base = ro_obj_vmas(v, 256);
    void *buf = malloc(HUGE);
    ss_client *h, *h0;
    ss_id x = new_id(), y = new_id(), mid[NMID], huge[NHUGE];
    const void *p, *q;
    unsigned long ix, im[NMID], ih[NHUGE];

    (void)state;
    assert_non_null(buf);
    t_assert_ok(ss_connect(sock_path, 0, &h));
    t_fill(buf, BIG, 41);
    t_assert_ok(put_in_segment(C, &x, buf, BIG, NULL, 0));
    ix = get_check_release(h, &x, BIG, 41, &p);
    assert_true(obj_mapped(ix)); /* kept */
    assert_int_equal(get_check_release(h, &x, BIG, 41, &q), ix);
    assert_ptr_equal(q, p); /* the kept mapping, reused (a new one could not land there) */
    /* deleted by another client: kept until this handle learns it */
    t_assert_ok(ss_delete(C, &x));
    assert_true(obj_mapped(ix));
    assert_int_equal(ss_contains(h, &x), 0);
    assert_false(obj_mapped(ix));

    /* its own delete drops it at once */
    t_fill(buf, BIG, 42);
    t_assert_ok(put_in_segment(C, &y, buf, BIG, NULL, 0));
    ix = get_check_release(h, &y, BIG, 42, NULL);
    assert_true(obj_mapped(ix));
    t_assert_ok(ss_delete(h, &y));
    assert_false(obj_mapped(ix));

    /* at most 16 kept: the most recently released */
    for (int i = 0; i < NMID; i++) {
        mid[i] = new_id();
        t_fill(buf, MID, 100 + (unsigned)i);
        t_assert_ok(put_in_segment(C, &mid[i], buf, MID, NULL, 0));
        im[i] = get_check_release(h, &mid[i], MID, 100 + (unsigned)i, NULL);
    }
    for (int i = 0; i < NMID; i++)
        assert_int_equal(obj_mapped(im[i]), i >= NMID - 16);
    assert_int_equal(ro_obj_vmas(v, 256), base + 16);
    /* and at most 64 MiB (the default): two of three 24 MiB objects */
    for (int i = 0; i < NHUGE; i++) {
        huge[i] = new_id();
        t_fill(buf, HUGE, 200 + (unsigned)i);
        t_assert_ok(put_in_segment(C, &huge[i], buf, HUGE, NULL, 0));
        ih[i] = get_check_release(h, &huge[i], HUGE, 200 + (unsigned)i, NULL);
    }
    assert_false(obj_mapped(ih[0]));
    assert_true(obj_mapped(ih[1]) && obj_mapped(ih[2]));
    /* a get that does not find it drops it too */
    t_assert_ok(ss_delete(C, &huge[2]));
    assert_int_equal(ss_get(h, &huge[2], 1, 0, &(ss_object){ 0 }), 0);
    assert_false(obj_mapped(ih[2]));

    /* SEALSTORE_MAP_CACHE=0 (read at connect): nothing kept */
    t_assert_ok(ss_option_set(SS_OPT_MAP_CACHE, "0"));
    t_assert_ok(ss_connect(sock_path, 0, &h0));
    t_assert_ok(ss_option_set(SS_OPT_MAP_CACHE, "64M"));
    t_fill(buf, BIG, 43);
    t_assert_ok(put_in_segment(C, &x, buf, BIG, NULL, 0)); /* x: not mapped by h */
    assert_false(obj_mapped(get_check_release(h0, &x, BIG, 43, NULL)));
    ss_disconnect(h0);
    t_assert_ok(ss_delete(C, &x));

    for (int i = 0; i < NMID; i++)
        t_assert_ok(ss_delete(C, &mid[i]));
    for (int i = 0; i < NHUGE - 1; i++)
        t_assert_ok(ss_delete(C, &huge[i]));
    ss_disconnect(h);
    assert_int_equal(ro_obj_vmas(v, 256), base);
    free(buf);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_connect_errors),
        cmocka_unit_test(test_embedded_store_lifetime),
        cmocka_unit_test(test_null_args),
        cmocka_unit_test(test_create_seal_get_release),
        cmocka_unit_test(test_sizes),
        cmocka_unit_test(test_meta_limits),
        cmocka_unit_test(test_duplicates),
        cmocka_unit_test(test_seal_abort_release_errors),
        cmocka_unit_test(test_get_multi),
        cmocka_unit_test(test_get_many),
        cmocka_unit_test(test_get_timeouts),
        cmocka_unit_test(test_get_woken_by_seal),
        cmocka_unit_test(test_concurrent_gets_same_segment),
        cmocka_unit_test(test_delete_while_referenced),
        cmocka_unit_test(test_read_only_views),
        cmocka_unit_test(test_threads_share_handle),
        cmocka_unit_test(test_list_and_stats),
        cmocka_unit_test(test_contains_delete),
        cmocka_unit_test(test_events),
        cmocka_unit_test(test_put_then_get_large),
        cmocka_unit_test(test_small_pages_read_only),
        cmocka_unit_test(test_pool_yields_to_writer),
        cmocka_unit_test(test_create_too_big),
        cmocka_unit_test(test_release_deferral),
        cmocka_unit_test(test_put_keeps_older_view),
        cmocka_unit_test(test_release_object),
        cmocka_unit_test(test_get_after_others_delete),
        cmocka_unit_test(test_kept_mappings),
    };

    /* a small store: keep memory modest on a shared machine */
    /* STAGE_MAX 0: large creates are written in place in segments of
     * their own, whose pool, mappings and seals these cases are about
     * (staged creates: t_stage) */
    if (ss_option_set(SS_OPT_POOL_SIZE, "8M") != 0 || ss_option_set(SS_OPT_CAPACITY, "512M") != 0 ||
        ss_option_set(SS_OPT_STAGE_MAX, "0") != 0)
        return T_EXIT_ERROR;
    return t_run(tests, setup, teardown);
}
