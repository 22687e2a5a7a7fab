/* SPDX-License-Identifier: MIT */
/*
 * Objects bound to their creator (SS_LIFETIME_CREATOR, ss_create_ex and
 * ss_put_ex) through the public API, against a store embedded in this
 * process; other clients are other handles, or forked children that
 * connect on their own and die.
 *
 * Covered: a bound object goes when its creator disconnects, and when
 * the creator process is SIGKILLed; a reader's view stays valid with its
 * bytes until released, the id is free at once, the memory comes back
 * only with the release (a create that needs it fails before, fits
 * after); an unsealed bound object is aborted; an object without the
 * flag survives its creator; list shows the flag; unknown flag bits are
 * refused. Disk copies and restarts: t_spill_store.c (t_bound_restart).
 *
 * The store handles a disconnect on its own time: tests wait until
 * ss_stats says the client is gone (a state, not a sleep).
 */
#include "sealstore.h"
#include "t_helpers.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static unsigned id_counter;

#define CAP_MB 64u
#define BIG ((uint64_t)40 << 20) /* more than half the capacity */

static ss_id new_id(void)
{
    ss_id id;

    memset(&id, 0, sizeof(id));
    snprintf((char *)id.b, sizeof(id.b), "bd-%u-%u", (unsigned)getpid(), ++id_counter);
    return id;
}

static ss_client *client(void)
{
    ss_client *c = NULL;

    t_assert_ok(ss_connect(t_embed_path, 0, &c));
    return c;
}

static void put_bound(ss_client *c, const ss_id *id, uint64_t size, unsigned seed,
                      unsigned flags)
{
    void *p;

    if (size <= 4096) {
        unsigned char buf[4096];
        t_fill(buf, size, seed);
        t_assert_ok(ss_put_ex(c, id, buf, size, "m", 1, flags));
        return;
    }
    t_assert_ok(ss_create_ex(c, id, size, "m", 1, flags, &p));
    t_fill(p, size, seed);
    t_assert_ok(ss_seal(c, id));
    t_assert_ok(ss_release(c, id));
}

/* The flags ss_list reports for id; -1 if it is not listed. */
static int64_t listed_flags(const ss_id *id)
{
    uint64_t cursor = 0;
    ss_obj_info info[64];

    do {
        int n = ss_list(t_embed, &cursor, info, 64);
        t_assert_ok(n);
        for (int i = 0; i < n; i++)
            if (!memcmp(&info[i].id, id, sizeof(*id)))
                return info[i].flags;
    } while (cursor);
    return -1;
}

/* ---------------------------------------------------------------- tests */

static void test_flags_checked(void **state)
{
    ss_id a = new_id();
    void *p;
    (void)state;

    assert_int_equal(ss_put_ex(t_embed, &a, "x", 1, NULL, 0, SS_LIFETIME_CREATOR << 1), -EINVAL);
    assert_int_equal(ss_create_ex(t_embed, &a, 10, NULL, 0, ~0u, &p), -EINVAL);
    assert_int_equal(ss_contains(t_embed, &a), 0);
    /* flags 0: the same as ss_put / ss_create */
    t_assert_ok(ss_put_ex(t_embed, &a, "x", 1, NULL, 0, 0));
    assert_int_equal(listed_flags(&a), 0);
    t_assert_ok(ss_delete(t_embed, &a));
}

/* Disconnect: the bound ones (small put, large create) go, the other
 * stays; list showed which was which. */
static void test_disconnect(void **state)
{
    ss_id sm = new_id(), lg = new_id(), keep = new_id();
    ss_client *c = client();
    uint64_t clients = t_store_stats(t_embed).clients;
    uint64_t deletes;
    (void)state;

    put_bound(c, &sm, 100, 1, SS_LIFETIME_CREATOR);
    put_bound(c, &lg, (1 << 20) + 3, 2, SS_LIFETIME_CREATOR);
    put_bound(c, &keep, 200, 3, 0);
    assert_int_equal(listed_flags(&sm), SS_LIFETIME_CREATOR);
    assert_int_equal(listed_flags(&lg), SS_LIFETIME_CREATOR);
    assert_int_equal(listed_flags(&keep), 0);
    /* another client deleting one early is fine (and is not done twice) */
    t_assert_ok(ss_delete(t_embed, &sm));
    put_bound(t_embed, &sm, 100, 4, 0); /* the id again, by a client that stays */
    deletes = t_store_stats(t_embed).deletes;

    ss_disconnect(c);
    t_wait_clients(t_embed, clients - 1);
    assert_int_equal(ss_contains(t_embed, &lg), 0);
    assert_int_equal(ss_contains(t_embed, &keep), 1);
    assert_int_equal(ss_contains(t_embed, &sm), 1); /* not the creator's object */
    assert_int_equal(t_store_stats(t_embed).deletes, deletes + 1);
    t_assert_ok(ss_delete(t_embed, &keep));
    t_assert_ok(ss_delete(t_embed, &sm));
}

/* A creator killed with SIGKILL (no goodbye at all): its objects go. */
static void test_sigkill(void **state)
{
    ss_id a = new_id(), b = new_id(), keep = new_id();
    uint64_t clients = t_store_stats(t_embed).clients;
    int p[2], st;
    char x;
    (void)state;

    assert_int_equal(pipe(p), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        ss_client *c = NULL;
        close(p[0]);
        if (ss_connect(t_embed_path, 0, &c) < 0)
            _exit(1);
        unsigned char buf[300];
        memset(buf, 7, sizeof(buf));
        void *d;
        if (ss_put_ex(c, &a, buf, sizeof(buf), NULL, 0, SS_LIFETIME_CREATOR) < 0 ||
            ss_create_ex(c, &b, 3 << 20, NULL, 0, SS_LIFETIME_CREATOR, &d) < 0)
            _exit(2);
        memset(d, 9, 3 << 20);
        if (ss_seal(c, &b) < 0 || ss_put(c, &keep, buf, sizeof(buf), NULL, 0) < 0)
            _exit(3);
        if (write(p[1], "k", 1) != 1)
            _exit(4);
        raise(SIGKILL);
        _exit(5);
    }
    close(p[1]);
    assert_int_equal(read(p[0], &x, 1), 1);
    close(p[0]);
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_true(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
    t_wait_clients(t_embed, clients);
    assert_int_equal(ss_contains(t_embed, &a), 0);
    assert_int_equal(ss_contains(t_embed, &b), 0);
    assert_int_equal(ss_contains(t_embed, &keep), 1);
    t_assert_ok(ss_delete(t_embed, &keep));
}

/* Another client holds a view when the creator goes: the view stays
 * readable, the id is free at once, the memory comes back with the
 * release (not before: a create that needs it does not fit). */
static void test_view_outlives_creator(void **state)
{
    ss_id a = new_id(), other = new_id();
    ss_client *c = client(), *r = client();
    uint64_t clients = t_store_stats(t_embed).clients;
    ss_object v, v2;
    void *p;
    (void)state;

    put_bound(c, &a, BIG, 11, SS_LIFETIME_CREATOR);
    assert_int_equal(ss_get(r, &a, 1, 0, &v), 1);
    ss_disconnect(c);
    t_wait_clients(t_embed, clients - 1);

    assert_int_equal(ss_contains(t_embed, &a), 0);
    assert_int_equal(ss_get(t_embed, &a, 1, 0, &v2), 0);
    assert_true(t_check(v.data, BIG, 11));
    /* its memory is still held: another object of that size does not fit */
    assert_int_equal(ss_create(t_embed, &other, BIG, NULL, 0, &p), -ENOSPC);
    /* the id is free: a small object takes it at once */
    put_bound(t_embed, &a, 100, 12, 0);
    assert_int_equal(ss_get(t_embed, &a, 1, 0, &v2), 1);
    assert_true(t_check(v2.data, 100, 12));
    t_assert_ok(ss_release(t_embed, &a));
    assert_true(t_check(v.data, BIG, 11));
    t_assert_ok(ss_release_object(r, &v));
    /* released: the memory is back */
    put_bound(t_embed, &other, BIG, 13, 0);
    t_assert_ok(ss_delete(t_embed, &other));
    t_assert_ok(ss_delete(t_embed, &a));
    ss_disconnect(r);
}

/* Unsealed when the creator goes: aborted, bound or not. */
static void test_unsealed(void **state)
{
    ss_id a = new_id(), b = new_id();
    ss_client *c = client();
    uint64_t clients = t_store_stats(t_embed).clients;
    uint64_t objects = t_store_stats(t_embed).objects;
    void *p;
    (void)state;

    t_assert_ok(ss_create_ex(c, &a, 5000, NULL, 0, SS_LIFETIME_CREATOR, &p));
    t_assert_ok(ss_create_ex(c, &b, 2 << 20, NULL, 0, SS_LIFETIME_CREATOR, &p));
    assert_int_equal(t_store_stats(t_embed).objects, objects + 2);
    assert_int_equal(listed_flags(&b), SS_LIFETIME_CREATOR);
    ss_disconnect(c);
    t_wait_clients(t_embed, clients - 1);
    assert_int_equal(t_store_stats(t_embed).objects, objects);
    /* the ids are free */
    put_bound(t_embed, &a, 10, 1, 0);
    put_bound(t_embed, &b, 10, 1, 0);
    t_assert_ok(ss_delete(t_embed, &a));
    t_assert_ok(ss_delete(t_embed, &b));
}

/* Many bound objects, most deleted by others meanwhile (the creator's
 * record of them is compacted as it goes): only the live ones go at the
 * disconnect, and the ids deleted and created again by others stay. */
static void test_many(void **state)
{
    enum { N = 300 };
    ss_id ids[N];
    ss_client *c = client();
    uint64_t clients = t_store_stats(t_embed).clients;
    uint64_t objects = t_store_stats(t_embed).objects;
    (void)state;

    for (int i = 0; i < N; i++) {
        ids[i] = new_id();
        put_bound(c, &ids[i], 64, (unsigned)i, SS_LIFETIME_CREATOR);
        if (i % 3) {
            t_assert_ok(ss_delete(t_embed, &ids[i]));
            if (i % 3 == 2)
                put_bound(t_embed, &ids[i], 64, (unsigned)i, 0);
        }
    }
    ss_disconnect(c);
    t_wait_clients(t_embed, clients - 1);
    for (int i = 0; i < N; i++)
        assert_int_equal(ss_contains(t_embed, &ids[i]), i % 3 == 2);
    assert_int_equal(t_store_stats(t_embed).objects, objects + N / 3);
    for (int i = 2; i < N; i += 3)
        t_assert_ok(ss_delete(t_embed, &ids[i]));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_flags_checked),
        cmocka_unit_test(test_disconnect),
        cmocka_unit_test(test_sigkill),
        cmocka_unit_test(test_view_outlives_creator),
        cmocka_unit_test(test_unsealed),
        cmocka_unit_test(test_many),
    };

    /* a small store with no pool, no eviction, no spilling and no wait for
     * memory: "does not fit" is an answer at once */
    if (t_tight_store_options(CAP_MB, "0") < 0)
        return T_EXIT_ERROR;
    return t_run(tests, t_embed_setup, t_embed_teardown);
}
