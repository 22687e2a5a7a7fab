/* SPDX-License-Identifier: MIT */
/*
 * ss_put_many: a batch of puts in as few messages as the store allows,
 * against a store embedded in this process (a small one: no pool, no
 * eviction, no spilling, so "does not fit" is visible), with other
 * handles playing other clients.
 *
 * Covered: mixed sizes (0, 64 B, 1 KiB, the small limit, one above it that
 * takes the normal path) round-trip byte-exact with their meta; per-item
 * -EINVAL for bad items among good ones; duplicates inside a batch and
 * against the store fail alone with -EEXIST; a batch larger than one
 * message (in count and in bytes) is split and stored whole; running out
 * of capacity mid-batch gives -ENOSPC to the items that do not fit, at
 * once (no waiting for memory), and stores the others; creator-bound items
 * go when their creator disconnects, the others stay; several threads
 * batching on one handle.
 */
#include "sealstore.h"
#include "t_helpers.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static unsigned id_counter;

#define CAP_MB 16u
#define SMALL_MAX (64u * 1024u)

static ss_id new_id(void)
{
    ss_id id;

    memset(&id, 0, sizeof(id));
    snprintf((char *)id.b, sizeof(id.b), "pm-%u-%u", (unsigned)getpid(), ++id_counter);
    return id;
}

/* The object id holds exactly size bytes of t_fill(seed) and meta. */
static void check_object(const ss_id *id, uint64_t size, unsigned seed, const void *meta,
                         uint64_t meta_size)
{
    ss_object o;

    assert_int_equal(ss_get(t_embed, id, 1, 0, &o), 1);
    assert_non_null(o.data);
    assert_int_equal(o.size, size);
    assert_true(t_check(o.data, size, seed));
    assert_int_equal(o.meta_size, meta_size);
    if (meta_size)
        assert_memory_equal(o.meta, meta, meta_size);
    t_assert_ok(ss_release(t_embed, id));
}

/* Items of the given sizes, with ids, data (t_fill(seed i)) and meta. */
typedef struct batch {
    size_t n;
    ss_put_item *it;
    int *st;
    unsigned char **buf;
} batch;

static void batch_make(batch *b, size_t n, const uint64_t *sizes, uint64_t size_all,
                       unsigned flags)
{
    b->n = n;
    b->it = calloc(n, sizeof(*b->it));
    b->st = calloc(n, sizeof(*b->st));
    b->buf = calloc(n, sizeof(*b->buf));
    assert_non_null(b->it);
    assert_non_null(b->st);
    assert_non_null(b->buf);
    for (size_t i = 0; i < n; i++) {
        uint64_t size = sizes ? sizes[i] : size_all;
        b->buf[i] = malloc(size ? size : 1);
        assert_non_null(b->buf[i]);
        t_fill(b->buf[i], size, (unsigned)i + 1);
        b->it[i].id = new_id();
        b->it[i].data = b->buf[i];
        b->it[i].size = size;
        b->it[i].meta = (i % 2) ? "meta" : NULL;
        b->it[i].meta_size = (i % 2) ? 4 : 0;
        b->it[i].flags = flags;
        b->st[i] = 12345; /* must be overwritten */
    }
}

static void batch_free(batch *b, bool delete_stored)
{
    for (size_t i = 0; i < b->n; i++) {
        if (delete_stored && b->st[i] == 0)
            t_assert_ok(ss_delete(t_embed, &b->it[i].id));
        free(b->buf[i]);
    }
    free(b->buf);
    free(b->it);
    free(b->st);
}

static void check_batch(const batch *b)
{
    for (size_t i = 0; i < b->n; i++)
        if (b->st[i] == 0)
            check_object(&b->it[i].id, b->it[i].size, (unsigned)i + 1, b->it[i].meta,
                         b->it[i].meta_size);
}

/* ---------------------------------------------------------------- tests */

static void test_args(void **state)
{
    ss_put_item it = { .id = new_id(), .data = "x", .size = 1 };
    int st = 7;
    (void)state;

    assert_int_equal(ss_put_many(NULL, &it, 1, &st), -EINVAL);
    assert_int_equal(ss_put_many(t_embed, NULL, 1, &st), -EINVAL);
    assert_int_equal(ss_put_many(t_embed, &it, 1, NULL), -EINVAL);
    assert_int_equal(st, 7);
    assert_int_equal(ss_put_many(t_embed, NULL, 0, NULL), 0);
    assert_int_equal(ss_contains(t_embed, &it.id), 0);
}

static void test_mixed_sizes(void **state)
{
    const uint64_t sizes[] = { 0, 64, 1024, SMALL_MAX, SMALL_MAX + 1, 64, 0, 3 * SMALL_MAX };
    batch b;
    (void)state;

    batch_make(&b, sizeof(sizes) / sizeof(sizes[0]), sizes, 0, 0);
    b.it[3].meta = b.buf[2];
    b.it[3].meta_size = 1024; /* meta and data of the same item */
    assert_int_equal(ss_put_many(t_embed, b.it, b.n, b.st), (int)b.n);
    for (size_t i = 0; i < b.n; i++)
        assert_int_equal(b.st[i], 0);
    check_batch(&b);
    batch_free(&b, true);
}

static void test_bad_items(void **state)
{
    const uint64_t sizes[] = { 10, 10, 10, 10, 10 };
    batch b;
    char big_meta[1];
    (void)state;

    batch_make(&b, 5, sizes, 0, 0);
    b.it[1].data = NULL;                  /* NULL data, size > 0 */
    b.it[2].meta = big_meta;
    b.it[2].meta_size = 64 * 1024 + 1;    /* meta over 64 KiB */
    b.it[3].flags = SS_LIFETIME_CREATOR << 1;
    assert_int_equal(ss_put_many(t_embed, b.it, b.n, b.st), 2);
    assert_int_equal(b.st[0], 0);
    assert_int_equal(b.st[1], -EINVAL);
    assert_int_equal(b.st[2], -EINVAL);
    assert_int_equal(b.st[3], -EINVAL);
    assert_int_equal(b.st[4], 0);
    for (int i = 1; i < 4; i++)
        assert_int_equal(ss_contains(t_embed, &b.it[i].id), 0);
    check_batch(&b);
    batch_free(&b, true);
}

static void test_duplicates(void **state)
{
    batch b;
    (void)state;

    batch_make(&b, 6, NULL, 100, 0);
    t_assert_ok(ss_put(t_embed, &b.it[4].id, "old", 3, NULL, 0)); /* in the store already */
    b.it[2].id = b.it[0].id;                                /* twice in the batch */
    b.it[5].id = b.it[0].id;                                /* three times */
    assert_int_equal(ss_put_many(t_embed, b.it, b.n, b.st), 3);
    assert_int_equal(b.st[0], 0);
    assert_int_equal(b.st[1], 0);
    assert_int_equal(b.st[2], -EEXIST);
    assert_int_equal(b.st[3], 0);
    assert_int_equal(b.st[4], -EEXIST);
    assert_int_equal(b.st[5], -EEXIST);
    check_batch(&b); /* the first of the id won */
    ss_object o;
    assert_int_equal(ss_get(t_embed, &b.it[4].id, 1, 0, &o), 1); /* the older one stays */
    assert_int_equal(o.size, 3);
    assert_memory_equal(o.data, "old", 3);
    t_assert_ok(ss_release(t_embed, &b.it[4].id));
    t_assert_ok(ss_delete(t_embed, &b.it[4].id));
    batch_free(&b, true);
}

/* More items than one message takes, in count (1 KiB) and in bytes
 * (32 KiB: a few per message): split and stored whole, in order. */
static void test_split(void **state)
{
    batch b;
    ss_stats s0 = t_store_stats(t_embed), s1;
    (void)state;

    batch_make(&b, 1000, NULL, 1024, 0);
    assert_int_equal(ss_put_many(t_embed, b.it, b.n, b.st), 1000);
    for (size_t i = 0; i < b.n; i++)
        assert_int_equal(b.st[i], 0);
    check_batch(&b);
    s1 = t_store_stats(t_embed);
    assert_true(s1.creates - s0.creates == 1000);
    batch_free(&b, true);

    batch_make(&b, 40, NULL, 32 * 1024, 0);
    assert_int_equal(ss_put_many(t_embed, b.it, b.n, b.st), 40);
    check_batch(&b);
    batch_free(&b, true);
}

/* Fill the store with 64 KiB items: the ones that fit are stored, the
 * others get -ENOSPC at once (the batch never waits for memory, although
 * a lone put would), small ones after them still fit in what is left. */
static void test_enospc(void **state)
{
    size_t n = (CAP_MB << 20) / SMALL_MAX + 64, stored = 0;
    uint64_t *sizes = calloc(n + 1, sizeof(*sizes));
    ss_stats s0 = t_store_stats(t_embed), s1;
    batch b;
    (void)state;

    assert_non_null(sizes);
    for (size_t i = 0; i < n; i++)
        sizes[i] = SMALL_MAX;
    sizes[n] = 0; /* a size-0 object takes no data memory */
    batch_make(&b, n + 1, sizes, 0, 0);
    b.it[n].meta = NULL;
    b.it[n].meta_size = 0;
    int rc = ss_put_many(t_embed, b.it, b.n, b.st);
    for (size_t i = 0; i < n; i++) {
        if (b.st[i] == 0) {
            assert_int_equal(stored, i); /* a prefix fits */
            stored++;
        } else {
            assert_int_equal(b.st[i], -ENOSPC);
        }
    }
    assert_true(stored > 0 && stored < n);
    assert_int_equal(b.st[n], 0);
    assert_int_equal(rc, (int)stored + 1);
    s1 = t_store_stats(t_embed);
    assert_true(s1.waits == s0.waits); /* nothing parked */
    check_batch(&b);
    batch_free(&b, true);
    free(sizes);
}

/* Creator-bound items go with their creator's connection, the others
 * stay; the bound ones are free ids again. */
static void test_creator_bound(void **state)
{
    ss_client *p = NULL;
    batch b;
    (void)state;

    t_assert_ok(ss_connect(t_embed_path, 0, &p));
    batch_make(&b, 10, NULL, 64, 0);
    for (size_t i = 0; i < b.n; i += 2)
        b.it[i].flags = SS_LIFETIME_CREATOR;
    b.it[8].size = 2 * SMALL_MAX; /* bound on the normal path too */
    free(b.buf[8]);
    b.buf[8] = malloc(b.it[8].size);
    assert_non_null(b.buf[8]);
    t_fill(b.buf[8], b.it[8].size, 9);
    b.it[8].data = b.buf[8];
    uint64_t clients = t_store_stats(t_embed).clients;
    assert_int_equal(ss_put_many(p, b.it, b.n, b.st), 10);
    check_batch(&b);
    ss_disconnect(p);
    t_wait_clients(t_embed, clients - 1);
    for (size_t i = 0; i < b.n; i++) {
        assert_int_equal(ss_contains(t_embed, &b.it[i].id), i % 2 ? 1 : 0);
        if (i % 2 == 0)
            b.st[i] = -ENOENT; /* gone: nothing to delete */
    }
    batch_free(&b, true);
}

typedef struct thr {
    ss_client *c;
    batch b;
    int rc;
} thr;

static void *thr_main(void *arg)
{
    thr *t = arg;

    t->rc = ss_put_many(t->c, t->b.it, t->b.n, t->b.st);
    return NULL;
}

/* Several threads batching on one handle: every reply reaches its own
 * caller. */
static void test_threads(void **state)
{
    thr t[4];
    pthread_t th[4];
    ss_client *c = NULL;
    (void)state;

    t_assert_ok(ss_connect(t_embed_path, 0, &c));
    for (int i = 0; i < 4; i++) {
        t[i].c = c;
        batch_make(&t[i].b, 300, NULL, (uint64_t)(i + 1) * 100, 0);
    }
    for (int i = 0; i < 4; i++)
        assert_int_equal(pthread_create(&th[i], NULL, thr_main, &t[i]), 0);
    for (int i = 0; i < 4; i++)
        pthread_join(th[i], NULL);
    for (int i = 0; i < 4; i++) {
        assert_int_equal(t[i].rc, 300);
        check_batch(&t[i].b);
        batch_free(&t[i].b, true);
    }
    ss_disconnect(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_args),
        cmocka_unit_test(test_mixed_sizes),
        cmocka_unit_test(test_bad_items),
        cmocka_unit_test(test_duplicates),
        cmocka_unit_test(test_split),
        cmocka_unit_test(test_enospc),
        cmocka_unit_test(test_creator_bound),
        cmocka_unit_test(test_threads),
    };

    /* a small store with no pool, no eviction and no spilling; a lone
     * create would wait for memory (the batch must not) */
    if (t_tight_store_options(CAP_MB, "30000") < 0)
        return T_EXIT_ERROR;
    return t_run(tests, t_embed_setup, t_embed_teardown);
}
