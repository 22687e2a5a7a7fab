/* SPDX-License-Identifier: MIT */
/*
 * Copy-on-seal creates: ss_create of an object above SEALSTORE_SMALL_MAX
 * up to SEALSTORE_STAGE_MAX hands the creator a pointer into a staging
 * area of its connection ("sealstore-stage"), and the seal copies the
 * bytes into the store's arena ("sealstore-arena"), against a store
 * embedded in this process (4 KiB pages, no pool).
 *
 * Covered: 64 KiB + 1, 1 MiB and 16 MiB created, written, sealed and read
 * back by another client from an arena mapping; the creator's pointer is
 * read-only from the seal until its area is lent again (after the
 * release), and the next create that gets it makes it writable; many creates in flight on one connection get distinct
 * areas; abort; a client that goes with staged objects open and sealed
 * leaves nothing behind; the per-client quota (creates beyond it are
 * written in place, in a "sealstore-obj" segment); ss_put's
 * create-and-seal path; a spilled and restored staged object; a first
 * mapping of an area that fails, and the area's next use.
 */
#include "config.h"

#include "sealstore.h"
#include "t_helpers.h"

#include "client_int.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

static unsigned id_counter;

static ss_id new_id(void)
{
    ss_id id;

    memset(&id, 0, sizeof(id));
    snprintf((char *)id.b, sizeof(id.b), "st-%u-%u", (unsigned)getpid(), ++id_counter);
    return id;
}

/* Another client reads the object: its bytes, from an arena mapping
 * (restored: from an object segment, as every restore). */
static void read_back_from(const ss_id *id, uint64_t size, unsigned seed, const char *seg)
{
    ss_client *r = NULL;
    ss_object o;

    t_assert_ok(ss_connect(t_embed_path, 0, &r));
    assert_int_equal(ss_get(r, id, 1, 0, &o), 1);
    assert_int_equal(o.size, size);
    assert_true(t_check(o.data, size, seed));
    t_expect_map(o.data, seg, "r--s");
    t_assert_ok(ss_release(r, id));
    ss_disconnect(r);
}

static void read_back(const ss_id *id, uint64_t size, unsigned seed)
{
    read_back_from(id, size, seed, "sealstore-arena");
}

static void test_sizes(void **state)
{
    static const uint64_t sizes[] = { 64 * 1024 + 1, 1 << 20, 16 << 20 };

    (void)state;
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        ss_id id = new_id();
        ss_stats before = t_store_stats(t_embed);
        void *data;
        unsigned seed = (unsigned)(i + 7);

        t_assert_ok(ss_create(t_embed, &id, sizes[i], NULL, 0, &data));
        assert_true(((uintptr_t)data & 63) == 0);
        t_expect_map(data, "sealstore-stage", "rw-s");
        t_fill(data, sizes[i], seed);
        t_assert_ok(ss_seal(t_embed, &id));
        /* the creator's pointer: the sealed bytes, read-only until release */
        t_expect_map(data, "sealstore-stage", "r--s");
        assert_true(t_check(data, sizes[i], seed));
        ss_stats after = t_store_stats(t_embed);
        assert_true(after.arena_live_bytes >= before.arena_live_bytes + sizes[i]);
        read_back(&id, sizes[i], seed);
        t_assert_ok(ss_release(t_embed, &id));
        /* read-only until the area is lent again, by the next create */
        t_expect_map(data, "sealstore-stage", "r--s");
        t_assert_ok(ss_delete(t_embed, &id));
        ss_id id2 = new_id();
        void *again;
        t_assert_ok(ss_create(t_embed, &id2, sizes[i], NULL, 0, &again));
        assert_ptr_equal(again, data);
        t_expect_map(again, "sealstore-stage", "rw-s");
        t_assert_ok(ss_abort(t_embed, &id2));
    }
}

/* Many creations open at once on one handle: distinct areas. */
static void test_in_flight(void **state)
{
    enum { N = 12 };
    const uint64_t size = 200 * 1024;
    ss_id ids[N];
    void *data[N];

    (void)state;
    for (int i = 0; i < N; i++) {
        ids[i] = new_id();
        t_assert_ok(ss_create(t_embed, &ids[i], size, NULL, 0, &data[i]));
        t_expect_map(data[i], "sealstore-stage", "rw-s");
        for (int j = 0; j < i; j++)
            assert_true((char *)data[j] + size <= (char *)data[i] ||
                        (char *)data[i] + size <= (char *)data[j]);
        t_fill(data[i], size, 100u + (unsigned)i);
    }
    for (int i = N - 1; i >= 0; i--)
        t_assert_ok(ss_seal(t_embed, &ids[i]));
    for (int i = 0; i < N; i++) {
        read_back(&ids[i], size, 100u + (unsigned)i);
        t_assert_ok(ss_release(t_embed, &ids[i]));
        t_assert_ok(ss_delete(t_embed, &ids[i]));
    }
    /* released: the areas are lent again, no new ones made */
    ss_stats st = t_store_stats(t_embed);
    for (int i = 0; i < N; i++) {
        t_assert_ok(ss_create(t_embed, &ids[i], size, NULL, 0, &data[i]));
        t_expect_map(data[i], "sealstore-stage", "rw-s");
    }
    ss_stats st2 = t_store_stats(t_embed);
    assert_int_equal(st2.resident_bytes - st2.arena_bytes, st.resident_bytes - st.arena_bytes);
    for (int i = 0; i < N; i++)
        t_assert_ok(ss_abort(t_embed, &ids[i]));
}

static void test_abort(void **state)
{
    ss_id id = new_id();
    ss_stats before = t_store_stats(t_embed);
    void *data;

    (void)state;
    t_assert_ok(ss_create(t_embed, &id, 1 << 20, NULL, 0, &data));
    memset(data, 0x5a, 1 << 20);
    assert_int_equal(t_store_stats(t_embed).arena_live_bytes, before.arena_live_bytes + (1 << 20));
    t_assert_ok(ss_abort(t_embed, &id));
    assert_int_equal(t_store_stats(t_embed).arena_live_bytes, before.arena_live_bytes);
    assert_int_equal(ss_contains(t_embed, &id), 0);
    /* the id and the area are free again */
    t_assert_ok(ss_create(t_embed, &id, 1 << 20, NULL, 0, &data));
    t_expect_map(data, "sealstore-stage", "rw-s");
    t_fill(data, 1 << 20, 3);
    t_assert_ok(ss_seal(t_embed, &id));
    read_back(&id, 1 << 20, 3);
    t_assert_ok(ss_release(t_embed, &id));
    t_assert_ok(ss_delete(t_embed, &id));
}

/* A client that goes with staged objects open (and one sealed, held):
 * its unsealed objects and its areas go; the sealed one stays. */
static void test_disconnect(void **state)
{
    ss_stats base = t_store_stats(t_embed);
    ss_id open1 = new_id(), open2 = new_id(), done = new_id();
    ss_client *c = NULL;
    void *d1, *d2, *d3;

    (void)state;
    t_assert_ok(ss_connect(t_embed_path, 0, &c));
    t_assert_ok(ss_create(c, &open1, 300 * 1024, NULL, 0, &d1));
    t_assert_ok(ss_create(c, &open2, 5 << 20, NULL, 0, &d2));
    t_assert_ok(ss_create(c, &done, 1 << 20, NULL, 0, &d3));
    t_fill(d3, 1 << 20, 9);
    t_assert_ok(ss_seal(c, &done));
    ss_stats mid = t_store_stats(t_embed);
    assert_true(mid.resident_bytes - mid.arena_bytes > base.resident_bytes - base.arena_bytes);
    ss_disconnect(c);
    t_wait_clients(t_embed, base.clients);
    ss_stats after = t_store_stats(t_embed);
    /* the staging areas are gone and uncharged; the arenas hold only the
     * sealed object */
    assert_int_equal(after.resident_bytes - after.arena_bytes,
                     base.resident_bytes - base.arena_bytes);
    assert_int_equal(after.arena_live_bytes, base.arena_live_bytes + (1 << 20));
    assert_int_equal(ss_contains(t_embed, &open1), 0);
    assert_int_equal(ss_contains(t_embed, &open2), 0);
    read_back(&done, 1 << 20, 9);
    t_assert_ok(ss_delete(t_embed, &done));
    assert_int_equal(t_store_stats(t_embed).arena_live_bytes, base.arena_live_bytes);
}

/* Per client at most twice SEALSTORE_STAGE_MAX (64M here) of areas, all
 * clients' at most a quarter of the capacity (256M here): two
 * 64 MiB creations open stage, a third is written in place. */
static void test_quota(void **state)
{
    ss_id ids[3] = { new_id(), new_id(), new_id() };
    ss_client *c = NULL;
    void *d[3];

    (void)state;
    t_assert_ok(ss_connect(t_embed_path, 0, &c));
    for (int i = 0; i < 3; i++) {
        t_assert_ok(ss_create(c, &ids[i], 64 << 20, NULL, 0, &d[i]));
        t_expect_map(d[i], i < 2 ? "sealstore-stage" : "sealstore-obj", "rw-s");
        t_fill(d[i], 64 << 20, 40u + (unsigned)i);
    }
    for (int i = 0; i < 3; i++) {
        t_assert_ok(ss_seal(c, &ids[i]));
        read_back_from(&ids[i], 64 << 20, 40u + (unsigned)i,
                       i < 2 ? "sealstore-arena" : "sealstore-obj");
        t_assert_ok(ss_release(c, &ids[i]));
        t_assert_ok(ss_delete(c, &ids[i]));
    }
    /* above the staging limit: in place */
    ss_id big = new_id();
    t_assert_ok(ss_create(c, &big, (64 << 20) + 1, NULL, 0, &d[0]));
    t_expect_map(d[0], "sealstore-obj", "rw-s");
    t_assert_ok(ss_abort(c, &big));
    ss_disconnect(c);
}

static void test_spill_restore(void **state)
{
    ss_id id = new_id();
    void *data;

    (void)state;
    t_assert_ok(ss_create(t_embed, &id, 3 << 20, NULL, 0, &data));
    t_expect_map(data, "sealstore-stage", "rw-s"); /* staged, then an arena object */
    t_fill(data, 3 << 20, 77);
    t_assert_ok(ss_seal(t_embed, &id));
    t_assert_ok(ss_release(t_embed, &id));
    uint64_t spills = t_store_stats(t_embed).spills;
    /* fill the store with other objects until ours is spilled */
    ss_id fill[80];
    int n = 0;
    static unsigned char chunk[16 << 20];
    while (t_store_stats(t_embed).spills == spills && n < 80) {
        fill[n] = new_id();
        t_assert_ok(ss_put(t_embed, &fill[n], chunk, sizeof(chunk), NULL, 0));
        n++;
    }
    assert_true(t_store_stats(t_embed).spills > spills);
    for (int i = 0; i < n; i++)
        t_assert_ok(ss_delete(t_embed, &fill[i]));
    read_back_from(&id, 3 << 20, 77, "sealstore-obj");
    t_assert_ok(ss_delete(t_embed, &id));
}

/* ss_put through CREATE and SEAL (what the library does once the store
 * said it may not read this process's memory: no_remote) of a staged
 * size: one copy into the area, the seal copies it into the arena. */
static void test_put_staged(void **state)
{
    unsigned char *buf = malloc(3 << 20);
    ss_client *c = NULL;

    (void)state;
    assert_non_null(buf);
    t_fill(buf, 3 << 20, 55);
    t_assert_ok(ss_connect(t_embed_path, 0, &c));
    c->no_remote = true;
    uint64_t remote = t_store_stats(c).remote_puts;
    for (int i = 0; i < 3; i++) { /* the area is lent again each time */
        ss_id id = new_id();
        struct iovec iov[3] = { { buf, 1000 }, { buf + 1000, (1 << 20) - 1000 },
                                { buf + (1 << 20), (size_t)(2 << 20) } };
        t_assert_ok(ss_putv(c, &id, iov, 3, NULL, 0, 0));
        read_back(&id, 3 << 20, 55);
        t_assert_ok(ss_delete(c, &id));
    }
    assert_int_equal(t_store_stats(c).remote_puts, remote);
    ss_disconnect(c);
    free(buf);
}

/* The first create naming a new area brings its fd; if mapping it
 * fails (address space, map count; here injected), that create fails with the error and
 * the area goes back to the store's free list, which counts its fd as
 * sent. The next create that gets the area (no fd this time) maps it from
 * the fd the client kept. The old client closed that fd, took the reply
 * for a confused store and ended the connection (-SS_E_PROTO). */
static void test_map_fails(void **state)
{
    ss_client *c = NULL;
    ss_id id = new_id(), id2 = new_id();
    void *data;

    (void)state;
    t_assert_ok(ss_connect(t_embed_path, 0, &c));
    c->inj_map_fail = 1;
    t_assert_err(ss_create(c, &id, 1 << 20, NULL, 0, &data), -ENOMEM);
    assert_int_equal(c->inj_map_fail, 0);
    t_assert_ok(ss_create(c, &id2, 1 << 20, NULL, 0, &data));
    t_expect_map(data, "sealstore-stage", "rw-s");
    t_fill(data, 1 << 20, 91);
    t_assert_ok(ss_seal(c, &id2));
    t_assert_ok(ss_release(c, &id2));
    read_back(&id2, 1 << 20, 91);
    /* the failed one left nothing: its id is free */
    t_assert_ok(ss_create(c, &id, 1 << 20, NULL, 0, &data));
    t_assert_ok(ss_abort(c, &id));
    t_assert_ok(ss_delete(c, &id2));
    ss_disconnect(c);
}

static int group_setup(void **state)
{
    if (ss_option_set(SS_OPT_POOL_SIZE, "0") < 0 || ss_option_set(SS_OPT_CAPACITY, "1G") < 0 ||
        ss_option_set(SS_OPT_HUGEPAGES, "off") < 0 ||
        ss_option_set(SS_OPT_SPILL_DIR, t_tmpdir()) < 0 ||
        ss_option_set(SS_OPT_SPILL_HIGH, "off") < 0 ||
        ss_option_set(SS_OPT_CREATE_TIMEOUT, "20s") < 0)
        return -1;
    return t_embed_setup(state);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sizes),
        cmocka_unit_test(test_in_flight),
        cmocka_unit_test(test_abort),
        cmocka_unit_test(test_disconnect),
        cmocka_unit_test(test_quota),
        cmocka_unit_test(test_put_staged),
        cmocka_unit_test(test_map_fails),
        cmocka_unit_test(test_spill_restore),
    };

    return t_run(tests, group_setup, t_embed_teardown);
}
