/* SPDX-License-Identifier: MIT */
/*
 * The shared object index (src/lib/index.c, format in store_int.h): its
 * ABI pin, the store-side writer (chunks, buckets, chains) and the reader
 * clients will use for a get without a round trip (seqlock protocol),
 * including reads racing a writer thread and reads through read-only
 * mappings of the sealed memfds.
 */
#include "t_helpers.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "store_int.h"
#include "sys.h"

static ss_id id_of(uint32_t k)
{
    ss_id id;

    memset(&id, 0, sizeof(id));
    memcpy(id.b, &k, sizeof(k));
    id.b[19] = 0xa5;
    return id;
}

/* Write entry e as an object with id_of(k), state st, and chain it. */
static void put_entry(ss__index *ix, uint32_t e, uint32_t k, uint32_t st)
{
    ss__index_entry *en;

    assert_int_equal(ss__index_reserve(ix, e), 0);
    en = ss__index_at(ix, e);
    ss__index_write_begin(en);
    en->info = SS_IX_INFO(st, SS_SEG_OBJECT, SS_BACKING_4K, k % 100);
    en->id = id_of(k);
    en->seg_id = 1000 + k;
    en->size = (uint64_t)k * 3;
    en->data_off64 = 0;
    ss__index_write_end(en);
    assert_int_equal(ss__index_link(ix, e), 0);
}

/* ------------------------------------------------------------ ABI pin */

static void t_abi_pin(void **state)
{
    (void)state;
    /*
     * ================================================================
     * If this fails, the index layout changed: bump SS_INDEX_FORMAT
     * (store_int.h), then update these numbers. Clients map this memory.
     * ================================================================
     */
    assert_int_equal(sizeof(ss__index_entry), 64);
    assert_int_equal(_Alignof(ss__index_entry), 8);
    assert_int_equal(offsetof(ss__index_entry, seq), 0);
    assert_int_equal(offsetof(ss__index_entry, info), 4);
    assert_int_equal(offsetof(ss__index_entry, generation), 8);
    assert_int_equal(offsetof(ss__index_entry, id), 12);
    assert_int_equal(offsetof(ss__index_entry, seg_id), 32);
    assert_int_equal(offsetof(ss__index_entry, size), 40);
    assert_int_equal(offsetof(ss__index_entry, data_off64), 48);
    assert_int_equal(offsetof(ss__index_entry, meta_seg), 52);
    assert_int_equal(offsetof(ss__index_entry, meta_off64), 56);
    assert_int_equal(offsetof(ss__index_entry, hnext), 60);

    assert_int_equal(sizeof(ss__index_hdr), 64);
    assert_int_equal(offsetof(ss__index_hdr, magic), 0);
    assert_int_equal(offsetof(ss__index_hdr, format), 4);
    assert_int_equal(offsetof(ss__index_hdr, stamp), 8);
    assert_int_equal(offsetof(ss__index_hdr, store_id), 16);
    assert_int_equal(offsetof(ss__index_hdr, chunk), 24);
    assert_int_equal(offsetof(ss__index_hdr, count), 28);
    assert_int_equal(offsetof(ss__index_hdr, hash_key), 32);
    assert_int_equal(offsetof(ss__index_hdr, header_size), 40);
    assert_int_equal(offsetof(ss__index_hdr, entry_size), 44);

    assert_int_equal(SS_INDEX_FORMAT, 2);
    assert_int_equal(SS_INDEX_MAGIC, 0x58444953u);
    assert_int_equal(SS_BUCKET_MAGIC, 0x544b4253u);
    assert_int_equal(SS_INDEX_CHUNK_BYTES, 1u << 20);
    assert_int_equal(SS_INDEX_CHUNK_ENTRIES, 15419);
    assert_int_equal(SS_INDEX_UID_OFF, 986880);
    assert_true(SS_INDEX_STAMP == 0x0240080c203c4014ull);
    assert_int_equal(SS_IX_INFO(2, 1, 3, 65536), 0x010000d2u);
    assert_true(SS_SEG_ID_SMALL == 1ull << 63);
    /* the hash is part of the format: pin one value */
    ss_id id = id_of(7);
    assert_true(ss__index_hash(&id, 0x1234) == ss__index_hash(&id, 0x1234));
    assert_true(ss__index_hash(&id, 0x1234) == 0x0a44fb9c764bb83cull);
}

/* ---------------------------------------------------------- functional */

static void t_link_lookup(void **state)
{
    ss__index ix;
    ss__index_view v;
    ss__index_entry out;
    ss_id id;

    (void)state;
    t_assert_ok(ss__index_init(&ix, 42));
    put_entry(&ix, 0, 1, SS_IX_SEALED);
    put_entry(&ix, 1, 2, SS_IX_CREATED);
    put_entry(&ix, 2, 3, SS_IX_SEALED);
    ss__index_view_of(&ix, &v);

    id = id_of(1);
    assert_int_equal(ss__index_lookup(&v, &id, &out), 0);
    assert_memory_equal(&out.id, &id, sizeof(id));
    assert_int_equal(out.seg_id, 1001);
    assert_int_equal(out.size, 3);
    assert_int_equal(SS_IX_STATE(out.info), SS_IX_SEALED);
    assert_int_equal(SS_IX_META_SIZE(out.info), 1);
    assert_int_equal(out.seq % 2, 0);

    /* CREATED: the store finds it (EEXIST), a reader does not (unsealed) */
    id = id_of(2);
    assert_int_equal(ss__index_find(&ix, &id), 1);
    t_assert_err(ss__index_lookup(&v, &id, &out), -ENOENT);

    /* unchained (deleted but referenced): gone for both */
    id = id_of(3);
    assert_int_equal(ss__index_lookup(&v, &id, &out), 2);
    ss__index_unlink(&ix, 2);
    t_assert_err(ss__index_find(&ix, &id), -ENOENT);
    t_assert_err(ss__index_lookup(&v, &id, &out), -ENOENT);

    id = id_of(99);
    t_assert_err(ss__index_lookup(&v, &id, &out), -ENOENT);
    t_assert_err(ss__index_read(&v, 5 * SS_INDEX_CHUNK_ENTRIES, &out), -ENOENT);
    ss__index_fini(&ix);
}

/* Many entries: buckets double, chunks are added; everything stays found
 * and chains stay consistent across unlinks. */
static void t_grow(void **state)
{
    enum { N = SS_INDEX_CHUNK_ENTRIES + 5000 };
    ss__index ix;
    ss__index_view v;
    ss__index_entry out;

    (void)state;
    t_assert_ok(ss__index_init(&ix, 7));
    uint32_t b0 = ix.nbuckets;
    for (uint32_t e = 0; e < N; e++)
        put_entry(&ix, e, e + 10, SS_IX_SEALED);
    assert_true(ix.nbuckets > b0);
    assert_int_equal(ix.nchunks, 2);
    assert_int_equal(ix.hashed, N);
    /* every other one out */
    for (uint32_t e = 0; e < N; e += 2)
        ss__index_unlink(&ix, e);
    ss__index_view_of(&ix, &v);
    for (uint32_t e = 0; e < N; e++) {
        ss_id id = id_of(e + 10);
        int64_t f = ss__index_find(&ix, &id);
        int r = ss__index_lookup(&v, &id, &out);
        if (e % 2) {
            assert_int_equal(f, e);
            assert_int_equal(r, e);
        } else {
            assert_int_equal(f, -ENOENT);
            assert_int_equal(r, -ENOENT);
        }
    }
    assert_true(ss__index_bytes(&ix) >= (uint64_t)N * SS_INDEX_ENTRY_SIZE);
    ss__index_fini(&ix);
}

/* The memfds are sealed like small segments; a read-only mapping (what a
 * client gets) serves lookups; nobody can map them writable. */
static void t_sealed_ro_view(void **state)
{
    ss__index ix;
    ss__index_entry out;

    (void)state;
    t_assert_ok(ss__index_init(&ix, 9));
    put_entry(&ix, 0, 5, SS_IX_SEALED);
    put_entry(&ix, 1, 6, SS_IX_SEALED);

    int seals = ss__seg_get_seals(ix.chunk_fds[0]);
    assert_true(ss__seals_small_ok(seals));
    assert_true(ss__seals_small_ok(ss__seg_get_seals(ix.bucket_fd)));

    int cfd = ss__seg_reopen_ro(ix.chunk_fds[0]);
    int bfd = ss__seg_reopen_ro(ix.bucket_fd);
    t_assert_ok(cfd);
    t_assert_ok(bfd);
    size_t blen = (size_t)lseek(bfd, 0, SEEK_END);
    void *w = mmap(NULL, SS_INDEX_CHUNK_BYTES, PROT_READ | PROT_WRITE, MAP_SHARED, ix.chunk_fds[0], 0);
    assert_true(w == MAP_FAILED);
    assert_int_equal(errno, EPERM);
    const void *cm = mmap(NULL, SS_INDEX_CHUNK_BYTES, PROT_READ, MAP_SHARED, cfd, 0);
    const void *bm = mmap(NULL, blen, PROT_READ, MAP_SHARED, bfd, 0);
    assert_true(cm != MAP_FAILED && bm != MAP_FAILED);
    const void *chunks[1] = { cm };
    ss__index_view v = { .chunks = chunks, .nchunks = 1, .buckets = bm };

    t_assert_ok(ss__index_check_hdr(cm, SS_INDEX_MAGIC));
    t_assert_ok(ss__index_check_hdr(bm, SS_BUCKET_MAGIC));
    t_assert_err(ss__index_check_hdr(cm, SS_BUCKET_MAGIC), -SS_E_VERSION);
    ss_id id = id_of(6);
    assert_int_equal(ss__index_lookup(&v, &id, &out), 1);
    assert_int_equal(out.seg_id, 1006);
    /* the store's later writes show through the read-only mapping */
    put_entry(&ix, 2, 7, SS_IX_SEALED);
    id = id_of(7);
    assert_int_equal(ss__index_lookup(&v, &id, &out), 2);

    /* a header from another format is refused */
    unsigned char fake[64];
    memcpy(fake, cm, 64);
    ((ss__index_hdr *)fake)->stamp ^= 1;
    t_assert_err(ss__index_check_hdr(fake, SS_INDEX_MAGIC), -SS_E_VERSION);
    const void *fchunks[1] = { fake };
    ss__index_view fv = { .chunks = fchunks, .nchunks = 1, .buckets = bm };
    t_assert_err(ss__index_lookup(&fv, &id, &out), -SS_E_VERSION);

    munmap((void *)cm, SS_INDEX_CHUNK_BYTES);
    munmap((void *)bm, blen);
    close(cfd);
    close(bfd);
    ss__index_fini(&ix);
}

/* A writer in the middle of an update (odd seq) is never read as stable. */
static void t_odd_seq(void **state)
{
    ss__index ix;
    ss__index_view v;
    ss__index_entry out;

    (void)state;
    t_assert_ok(ss__index_init(&ix, 1));
    put_entry(&ix, 0, 1, SS_IX_SEALED);
    ss__index_view_of(&ix, &v);
    ss__index_entry *en = ss__index_at(&ix, 0);
    ss__index_write_begin(en);
    t_assert_err(ss__index_read(&v, 0, &out), -EAGAIN);
    ss_id id = id_of(1);
    t_assert_err(ss__index_lookup(&v, &id, &out), -ENOENT);
    ss__index_write_end(en);
    t_assert_ok(ss__index_read(&v, 0, &out));
    ss__index_fini(&ix);
}

/* Readers racing a writer: every stable copy must be internally consistent
 * (all fields from the same update). */
struct race {
    ss__index ix;
    atomic_bool stop;
    atomic_ulong writes;
};

static void *writer(void *arg)
{
    struct race *r = arg;
    ss__index_entry *en = ss__index_at(&r->ix, 0);

    for (uint64_t k = 1; !atomic_load(&r->stop); k++) {
        ss__index_write_begin(en);
        __atomic_store_n(&en->seg_id, k, __ATOMIC_RELAXED);
        __atomic_store_n(&en->size, k * 7, __ATOMIC_RELAXED);
        __atomic_store_n(&en->data_off64, (uint32_t)k, __ATOMIC_RELAXED);
        __atomic_store_n(&en->meta_off64, (uint32_t)~k, __ATOMIC_RELAXED);
        ss__index_write_end(en);
        atomic_fetch_add(&r->writes, 1);
    }
    return NULL;
}

static void t_seqlock_race(void **state)
{
    struct race r;
    ss__index_view v;
    pthread_t th;
    unsigned long stable = 0, busy = 0;

    (void)state;
    memset(&r, 0, sizeof(r));
    t_assert_ok(ss__index_init(&r.ix, 3));
    put_entry(&r.ix, 0, 1, SS_IX_SEALED);
    /* start from a state that already satisfies the invariant (k = 0) */
    ss__index_entry *en0 = ss__index_at(&r.ix, 0);
    ss__index_write_begin(en0);
    en0->seg_id = 0;
    en0->size = 0;
    en0->data_off64 = 0;
    en0->meta_off64 = ~0u;
    ss__index_write_end(en0);
    ss__index_view_of(&r.ix, &v);
    assert_int_equal(pthread_create(&th, NULL, writer, &r), 0);
    for (int i = 0; i < 300000 || atomic_load(&r.writes) < 1000; i++) {
        ss__index_entry out;
        int rc = ss__index_read(&v, 0, &out);
        if (rc == -EAGAIN) {
            busy++;
            continue;
        }
        assert_int_equal(rc, 0);
        stable++;
        assert_true(out.size == out.seg_id * 7);
        assert_true(out.data_off64 == (uint32_t)out.seg_id);
        assert_true(out.meta_off64 == (uint32_t)~out.seg_id);
        assert_int_equal(out.seq % 2, 0);
        if (i > 10000000)
            break;
    }
    atomic_store(&r.stop, true);
    pthread_join(th, NULL);
    print_message("seqlock: %lu stable reads, %lu busy, %lu writes\n", stable, busy,
                  atomic_load(&r.writes));
    assert_true(stable > 0);
    ss__index_fini(&r.ix);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(t_abi_pin),
        cmocka_unit_test(t_link_lookup),
        cmocka_unit_test(t_grow),
        cmocka_unit_test(t_sealed_ro_view),
        cmocka_unit_test(t_odd_seq),
        cmocka_unit_test(t_seqlock_race),
    };

    return t_run(tests, NULL, NULL);
}
