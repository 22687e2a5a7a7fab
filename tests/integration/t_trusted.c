/* SPDX-License-Identifier: MIT */
/*
 * Trusted-producer mode (SEALSTORE_TRUST_PRODUCERS=on), against a store
 * embedded in this process (4 KiB pages, no pool): ss_create above
 * SEALSTORE_SMALL_MAX up to SEALSTORE_STAGE_MAX is written in place in a
 * staging area of the creator's ("sealstore-stage"), which then holds the
 * object itself; nothing is copied at the seal.
 *
 * Covered: 64 KiB + 1, 1 MiB and 16 MiB created, sealed and read back by
 * another client from a read-only mapping of the area (no arena bytes
 * used); every write path on a reader's fd of it fails (root: through
 * /proc/self/map_files); the creator's pages are read-only from the seal
 * until the area is lent again, which happens only once the object is
 * freed (a reader holding it keeps the area from the next create); the
 * next create of the size gets the same, warm memory; a producer that
 * disconnects leaves its sealed objects readable, charged as their own,
 * and spillable; trusted objects are not spilled while their producer is
 * connected; the per-client quota (creates beyond it are written in place
 * in a segment of their own, write-sealed as in strict mode); holes the
 * creator punched are allocated at the seal, the area is mode 0400 and
 * cannot be punched after; a small object gets an area of its size, not
 * a large free one; the statistics count a handed-over area once.
 */
#include "config.h"

#include "sealstore.h"
#include "t_helpers.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

static unsigned id_counter;

static ss_id new_id(void)
{
    ss_id id;

    memset(&id, 0, sizeof(id));
    snprintf((char *)id.b, sizeof(id.b), "tr-%u-%u", (unsigned)getpid(), ++id_counter);
    return id;
}

/* Every write path on the memfd behind a reader's view fails: opened
 * read-write through /proc/self/map_files (root only; else skipped). */
static void attack_view(const void *view)
{
    char p[5] = "", n[256] = "", path[128];
    unsigned long lo, hi;

    assert_true(t_map_of(view, p, n, &lo, &hi));
    assert_int_equal(mprotect((void *)lo, hi - lo, PROT_READ | PROT_WRITE), -1);
    assert_int_equal(errno, EACCES);
    snprintf(path, sizeof(path), "/proc/self/map_files/%lx-%lx", lo, hi);
    int fd = open(path, O_RDWR | O_CLOEXEC);
    if (fd < 0) {
        assert_true(errno == EPERM || errno == EACCES); /* not root */
        return;
    }
    void *m = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    assert_true(m == MAP_FAILED);
    assert_int_equal(pwrite(fd, "x", 1, 0), -1);
    assert_int_equal(ftruncate(fd, 0), -1);
    assert_int_equal(fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, 4096), -1);
    close(fd);
}

/* Wait until the store's trusted_bytes is `bytes` (a reader's release
 * reaches the store after its ss_release returns; the delete of an
 * object it held frees it then). */
static void wait_trusted(uint64_t bytes)
{
    for (int i = 0; i < 5000 && t_store_stats(t_embed).trusted_bytes != bytes; i++)
        usleep(1000);
    assert_int_equal(t_store_stats(t_embed).trusted_bytes, bytes);
}

/* Another client reads the object from a read-only mapping of `seg`,
 * attacks it, and releases it unless *keep (then it is left held). */
static ss_client *read_back_from(const ss_id *id, uint64_t size, unsigned seed, const char *seg,
                                 ss_object *keep)
{
    ss_client *r = NULL;
    ss_object o;

    t_assert_ok(ss_connect(t_embed_path, 0, &r));
    assert_int_equal(ss_get(r, id, 1, 0, &o), 1);
    assert_int_equal(o.size, size);
    assert_true(t_check(o.data, size, seed));
    t_expect_map(o.data, seg, "r--s");
    attack_view(o.data);
    assert_true(t_check(o.data, size, seed));
    if (keep) {
        *keep = o;
        return r;
    }
    t_assert_ok(ss_release(r, id));
    ss_disconnect(r);
    return NULL;
}

static void test_in_place(void **state)
{
    static const uint64_t sizes[] = { 64 * 1024 + 1, 1 << 20, 16 << 20 };

    (void)state;
    assert_int_equal(t_store_stats(t_embed).trusted_producers, 1);
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        ss_id id = new_id(), id2 = new_id();
        ss_stats before = t_store_stats(t_embed);
        void *data, *again;
        unsigned seed = (unsigned)(i + 11);

        t_assert_ok(ss_create(t_embed, &id, sizes[i], NULL, 0, &data));
        t_expect_map(data, "sealstore-stage", "rw-s");
        t_fill(data, sizes[i], seed);
        t_assert_ok(ss_seal(t_embed, &id));
        /* dropped writable at the seal; the object is the area's bytes */
        t_expect_map(data, "sealstore-stage", "r--s");
        ss_stats after = t_store_stats(t_embed);
        assert_int_equal(after.arena_live_bytes, before.arena_live_bytes); /* no copy */
        assert_true(after.trusted_bytes >= before.trusted_bytes + sizes[i]);
        read_back_from(&id, sizes[i], seed, "sealstore-stage", NULL);
        t_assert_ok(ss_release(t_embed, &id));
        t_expect_map(data, "sealstore-stage", "r--s"); /* still the object's */
        t_assert_ok(ss_delete(t_embed, &id));
        wait_trusted(before.trusted_bytes);
        /* the same warm memory for the next create of the size */
        t_assert_ok(ss_create(t_embed, &id2, sizes[i], NULL, 0, &again));
        assert_ptr_equal(again, data);
        t_expect_map(again, "sealstore-stage", "rw-s");
        assert_true(t_check(again, sizes[i], seed)); /* not zeroed: recycled */
        t_fill(again, sizes[i], seed + 100);
        t_assert_ok(ss_seal(t_embed, &id2));
        read_back_from(&id2, sizes[i], seed + 100, "sealstore-stage", NULL);
        t_assert_ok(ss_release(t_embed, &id2));
        t_assert_ok(ss_delete(t_embed, &id2));
    }
}

/* A reader's view stays valid after the delete: the area is not lent
 * again until the reader releases it. */
static void test_reader_holds(void **state)
{
    const uint64_t size = 3 << 20;
    ss_id id = new_id(), id2 = new_id(), id3 = new_id();
    ss_object view;
    void *data, *other, *again;

    (void)state;
    wait_trusted(0);
    t_assert_ok(ss_create(t_embed, &id, size, NULL, 0, &data));
    t_fill(data, size, 21);
    t_assert_ok(ss_seal(t_embed, &id));
    t_assert_ok(ss_release(t_embed, &id));
    ss_client *r = read_back_from(&id, size, 21, "sealstore-stage", &view);
    t_assert_ok(ss_delete(t_embed, &id));
    /* held: the next create gets another area */
    t_assert_ok(ss_create(t_embed, &id2, size, NULL, 0, &other));
    assert_ptr_not_equal(other, data);
    memset(other, 0xee, size);
    t_assert_ok(ss_seal(t_embed, &id2));
    assert_true(t_check(view.data, size, 21));
    t_assert_ok(ss_release(r, &id));
    ss_disconnect(r);
    wait_trusted(4 << 20); /* id2's 4 MiB area alone */
    /* released: the area is free again, and the next create gets it */
    t_assert_ok(ss_create(t_embed, &id3, size, NULL, 0, &again));
    assert_ptr_equal(again, data);
    t_assert_ok(ss_abort(t_embed, &id3));
    t_assert_ok(ss_release(t_embed, &id2));
    t_assert_ok(ss_delete(t_embed, &id2));
}

/* A producer that goes: its open creation is aborted, its sealed objects
 * stay readable (charged as their own), and are freed with their delete. */
static void test_disconnect(void **state)
{
    ss_stats base = t_store_stats(t_embed);
    ss_id open1 = new_id(), done = new_id(), held = new_id();
    ss_client *c = NULL;
    ss_object view;
    void *d1, *d2, *d3;

    (void)state;
    t_assert_ok(ss_connect(t_embed_path, 0, &c));
    t_assert_ok(ss_create(c, &open1, 300 * 1024, NULL, 0, &d1));
    t_assert_ok(ss_create(c, &done, 1 << 20, NULL, 0, &d2));
    t_fill(d2, 1 << 20, 9);
    t_assert_ok(ss_seal(c, &done));
    t_assert_ok(ss_release(c, &done));
    t_assert_ok(ss_create(c, &held, 2 << 20, NULL, 0, &d3));
    t_fill(d3, 2 << 20, 10);
    t_assert_ok(ss_seal(c, &held));
    t_assert_ok(ss_release(c, &held));
    ss_client *r = read_back_from(&held, 2 << 20, 10, "sealstore-stage", &view);
    ss_disconnect(c);
    t_wait_clients(t_embed, base.clients + 1);
    ss_stats after = t_store_stats(t_embed);
    assert_int_equal(after.trusted_bytes, base.trusted_bytes);
    /* what stays charged: the two objects' areas (1 MiB and 2 MiB) */
    assert_int_equal(after.resident_bytes, base.resident_bytes + (3 << 20));
    assert_int_equal(ss_contains(t_embed, &open1), 0);
    assert_true(t_check(view.data, 2 << 20, 10));
    read_back_from(&done, 1 << 20, 9, "sealstore-stage", NULL);
    t_assert_ok(ss_delete(t_embed, &done));
    t_assert_ok(ss_delete(t_embed, &held));
    assert_int_equal(t_store_stats(t_embed).resident_bytes, base.resident_bytes + (2 << 20));
    t_assert_ok(ss_release(r, &held));
    ss_disconnect(r);
    t_wait_clients(t_embed, base.clients);
    ss_stats end = t_store_stats(t_embed);
    assert_int_equal(end.resident_bytes, base.resident_bytes);
    /* the handed-over areas left the per-backing figures once, with their
     * objects (not also with their connection) */
    assert_int_equal(end.bytes_by_backing[0], base.bytes_by_backing[0]);
}

/* Holes the creator punched in its area before the first seal are
 * allocated at the seal (no reader faults memory in, or gets SIGBUS from
 * an empty hugetlb pool); after it, punching is refused. */
static void test_holes(void **state)
{
    const uint64_t size = 1 << 20;
    ss_id id = new_id(), id2 = new_id();
    ss_client *c = NULL;
    ss_object view;
    void *data;

    (void)state;
    t_assert_ok(ss_connect(t_embed_path, 0, &c)); /* areas of its own, never sealed yet */
    t_assert_ok(ss_create(c, &id, size, NULL, 0, &data));
    t_fill(data, size, 5);
    assert_int_equal(madvise(data, size, MADV_REMOVE), 0);
    t_assert_ok(ss_seal(c, &id));
    ss_client *r = NULL;
    t_assert_ok(ss_connect(t_embed_path, 0, &r));
    assert_int_equal(ss_get(r, &id, 1, 0, &view), 1);
    t_expect_map(view.data, "sealstore-stage", "r--s");
    /* before reading: a read of a shmem hole would allocate it */
    char p[5], n[256], path[128];
    unsigned long lo, hi;
    assert_true(t_map_of(view.data, p, n, &lo, &hi));
    snprintf(path, sizeof(path), "/proc/self/map_files/%lx-%lx", lo, hi);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd >= 0) { /* root */
        struct stat st;
        assert_int_equal(fstat(fd, &st), 0);
        assert_true((uint64_t)st.st_blocks * 512 >= size);
        assert_int_equal(st.st_mode & 0777, 0400);
        close(fd);
    }
    for (uint64_t i = 0; i < size; i += 4096)
        assert_int_equal(((const unsigned char *)view.data)[i], 0); /* punched: zeroes */
    attack_view(view.data);
    t_assert_ok(ss_release(r, &id));
    ss_disconnect(r);
    t_assert_ok(ss_release(c, &id));
    t_assert_ok(ss_delete(c, &id));
    /* the area again: sealed, so no hole can be punched in it now */
    void *again;
    for (int i = 0; i < 5000 && t_store_stats(c).trusted_bytes; i++)
        usleep(1000);
    t_assert_ok(ss_create(c, &id2, size, NULL, 0, &again));
    assert_ptr_equal(again, data);
    assert_int_equal(madvise(again, size, MADV_REMOVE), -1);
    assert_int_equal(errno, EPERM);
    t_assert_ok(ss_abort(c, &id2));
    ss_disconnect(c);
}

/* A small object does not keep a large free area for its life: it gets
 * an area of its own size. */
static void test_area_fit(void **state)
{
    ss_id big = new_id(), small = new_id();
    ss_client *c = NULL;
    void *d;

    (void)state;
    wait_trusted(0);
    t_assert_ok(ss_connect(t_embed_path, 0, &c)); /* areas of its own */
    t_assert_ok(ss_create(c, &big, 16 << 20, NULL, 0, &d));
    t_assert_ok(ss_seal(c, &big));
    t_assert_ok(ss_release(c, &big));
    t_assert_ok(ss_delete(c, &big));
    wait_trusted(0);
    t_assert_ok(ss_create(c, &small, 65 * 1024, NULL, 0, &d));
    memset(d, 1, 65 * 1024);
    t_assert_ok(ss_seal(c, &small));
    assert_int_equal(t_store_stats(c).trusted_bytes, 128 * 1024);
    t_assert_ok(ss_release(c, &small));
    t_assert_ok(ss_delete(c, &small));
    ss_disconnect(c);
}

/* Per client at most twice SEALSTORE_STAGE_MAX (64M here) of areas: two
 * 64 MiB objects are held there, a third is written in place in a segment
 * of its own and write-sealed as in strict mode. */
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
        t_assert_ok(ss_seal(c, &ids[i]));
        t_assert_ok(ss_release(c, &ids[i]));
    }
    for (int i = 0; i < 3; i++) {
        read_back_from(&ids[i], 64 << 20, 40u + (unsigned)i,
                       i < 2 ? "sealstore-stage" : "sealstore-obj", NULL);
        t_assert_ok(ss_delete(c, &ids[i]));
    }
    ss_disconnect(c);
}

/* Fill the store with puts until `spills` more objects went to disk. */
static int fill_until_spilled(ss_id *fill, int max, uint64_t spills)
{
    static unsigned char chunk[16 << 20];
    int n = 0;

    while (t_store_stats(t_embed).spills < spills && n < max) {
        fill[n] = new_id();
        t_assert_ok(ss_put(t_embed, &fill[n], chunk, sizeof(chunk), NULL, 0));
        n++;
    }
    assert_true(t_store_stats(t_embed).spills >= spills);
    return n;
}

/* Not spilled while its producer is connected (its area is the
 * producer's); an ordinary object once the producer went. */
static void test_spill(void **state)
{
    ss_id id = new_id(), fill[160];
    ss_client *c = NULL;
    void *data;

    (void)state;
    uint64_t clients = t_store_stats(t_embed).clients;
    t_assert_ok(ss_connect(t_embed_path, 0, &c));
    t_assert_ok(ss_create(c, &id, 3 << 20, NULL, 0, &data));
    t_fill(data, 3 << 20, 77);
    t_assert_ok(ss_seal(c, &id));
    t_assert_ok(ss_release(c, &id));
    int n = fill_until_spilled(fill, 80, t_store_stats(t_embed).spills + 8);
    read_back_from(&id, 3 << 20, 77, "sealstore-stage", NULL); /* never left */
    for (int i = 0; i < n; i++)
        t_assert_ok(ss_delete(t_embed, &fill[i]));
    ss_disconnect(c);
    t_wait_clients(t_embed, clients);
    uint64_t spills = t_store_stats(t_embed).spills;
    n = fill_until_spilled(fill, 160, spills + 4);
    for (int i = 0; i < n; i++)
        t_assert_ok(ss_delete(t_embed, &fill[i]));
    /* spilled with the oldest, then restored into a segment of its own */
    read_back_from(&id, 3 << 20, 77, "sealstore-obj", NULL);
    t_assert_ok(ss_delete(t_embed, &id));
}

static int group_setup(void **state)
{
    if (ss_option_set(SS_OPT_POOL_SIZE, "0") < 0 || ss_option_set(SS_OPT_CAPACITY, "1G") < 0 ||
        ss_option_set(SS_OPT_HUGEPAGES, "off") < 0 ||
        ss_option_set(SS_OPT_SPILL_DIR, t_tmpdir()) < 0 ||
        ss_option_set(SS_OPT_SPILL_HIGH, "off") < 0 ||
        ss_option_set(SS_OPT_CREATE_TIMEOUT, "20s") < 0 ||
        ss_option_set(SS_OPT_TRUST_PRODUCERS, "on") < 0)
        return -1;
    return t_embed_setup(state);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_in_place),
        cmocka_unit_test(test_reader_holds),
        cmocka_unit_test(test_disconnect),
        cmocka_unit_test(test_holes),
        cmocka_unit_test(test_area_fit),
        cmocka_unit_test(test_quota),
        cmocka_unit_test(test_spill),
    };

    return t_run(tests, group_setup, t_embed_teardown);
}
