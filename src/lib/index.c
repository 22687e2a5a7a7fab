/* SPDX-License-Identifier: MIT */
/*
 * The object index in store-written memfds (the format is
 * described in store_int.h and, as a reader sees it, in doc/protocol.md;
 * pinned by tests/unit/t_index.c).
 *
 * Why shared memory: a later fast path lets a client find a sealed object
 * by reading this table, with no round trip. This file is both sides of
 * that: the store's single writer (chunks, buckets, chains, seqlock
 * brackets) and the reader (ss__index_read, ss__index_lookup) that clients
 * will call on their read-only mappings.
 *
 * Memory: each chunk and the bucket array is a memfd the store maps RW once
 * and then seals SHRINK|GROW|FUTURE_WRITE|SEAL, so no process can ever
 * make a writable mapping or resize it (no SIGBUS for readers). Pages are
 * allocated on first touch: entries are reused LIFO, so what is touched is
 * the high-water mark of live objects.
 */
#include "store_int.h"

#include <stdlib.h>
#include <string.h>
#include <sys/random.h> /* GRND_NONBLOCK */

#include "sys.h"

/* ------------------------------------------------------------- memfds */

/* A sealed, store-writable memfd of `bytes`: *fd and *map on success. */
static int shared_create(const char *name, size_t bytes, int *fd_out, void **map_out)
{
    int fd = ss__memfd_create(name, MFD_CLOEXEC | MFD_ALLOW_SEALING);
    void *map;
    int rc;

    if (fd < 0)
        return fd;
    rc = ss__sys_ftruncate(fd, bytes);
    if (rc < 0)
        goto fail;
    /* a forked child of an embedding host must not inherit a writable view */
    map = ss__sys_mmap_shared_rw(fd, bytes);
    if (ss__is_err(map)) {
        rc = (int)ss__ptr_err(map);
        goto fail;
    }
    rc = ss__sys_add_seals(fd, SS_SEALS_SMALL);
    if (rc >= 0) {
        rc = ss__sys_get_seals(fd);
        if (rc >= 0 && !ss__seals_small_ok(rc))
            rc = -EPERM;
    }
    if (rc < 0) {
        ss__sys_munmap(map, bytes);
        goto fail;
    }
    *fd_out = fd;
    *map_out = map;
    return 0;
fail:
    ss__sys_close(fd);
    return rc;
}

static void hdr_init(void *map, uint32_t magic, uint64_t store_id, uint32_t chunk,
                     uint32_t count, uint64_t key, uint32_t entry_size)
{
    ss__index_hdr *h = map;

    h->format = SS_INDEX_FORMAT;
    h->stamp = SS_INDEX_STAMP;
    h->store_id = store_id;
    h->chunk = chunk;
    h->count = count;
    h->hash_key = key;
    h->header_size = sizeof(ss__index_hdr);
    h->entry_size = entry_size;
    /* magic last: a reader that sees it sees a complete header */
    __atomic_store_n(&h->magic, magic, __ATOMIC_RELEASE);
}

int ss__index_check_hdr(const void *map, uint32_t magic)
{
    const ss__index_hdr *h = map;

    if (!map)
        return -EINVAL;
    if (__atomic_load_n(&h->magic, __ATOMIC_ACQUIRE) != magic)
        return -SS_E_VERSION;
    if (h->format != SS_INDEX_FORMAT || h->stamp != SS_INDEX_STAMP ||
        h->header_size != sizeof(ss__index_hdr))
        return -SS_E_VERSION;
    return 0;
}

/* ------------------------------------------------------------- writer */

static int add_chunk(ss__index *ix)
{
    int fd, rc;
    void *map;

    if (ix->nchunks >= SS_INDEX_MAX_CHUNKS)
        return -ENOSPC;
    /* two arrays, one capacity: it is raised once both have grown (the
     * first may then be larger than cap_chunks says, which is harmless) */
    uint32_t cap = ix->cap_chunks;
    if (SS_ARRAY_RESERVE(ix->chunk_fds, cap, ix->nchunks + 1u, 8) < 0)
        return -ENOMEM;
    cap = ix->cap_chunks;
    if (SS_ARRAY_RESERVE(ix->chunks, cap, ix->nchunks + 1u, 8) < 0)
        return -ENOMEM;
    ix->cap_chunks = cap;
    rc = shared_create("sealstore-index", SS_INDEX_CHUNK_BYTES, &fd, &map);
    if (rc < 0)
        return rc;
    hdr_init(map, SS_INDEX_MAGIC, ix->store_id, ix->nchunks, SS_INDEX_CHUNK_ENTRIES,
             ix->key, SS_INDEX_ENTRY_SIZE);
    ix->chunk_fds[ix->nchunks] = fd;
    ix->chunks[ix->nchunks] = map;
    ix->nchunks++;
    /* announced once its header is complete (hdr_init's release store) */
    __atomic_store_n(&((ss__index_hdr *)ix->chunks[0])->live_chunks, ix->nchunks,
                     __ATOMIC_RELEASE);
    return 0;
}

static size_t bucket_bytes(uint32_t n)
{
    return SS_ALIGN_UP(sizeof(ss__index_hdr) + (size_t)n * 4, (size_t)4096);
}

static inline uint32_t *bucket_heads(void *map)
{
    return (uint32_t *)((char *)map + sizeof(ss__index_hdr));
}

/* Allocate a bucket array of n and chain every chained entry into it; the
 * old array is released only after the new one is complete. */
static int rebuild_buckets(ss__index *ix, uint32_t n)
{
    int fd, rc;
    void *map;

    rc = shared_create("sealstore-buckets", bucket_bytes(n), &fd, &map);
    if (rc < 0)
        return rc;
    hdr_init(map, SS_BUCKET_MAGIC, ix->store_id, ix->bucket_gen + 1, n, ix->key, 4);
    uint32_t *heads = bucket_heads(map);
    for (uint32_t e = 0; e < ix->high; e++) {
        ss__index_entry *en = ss__index_at(ix, e);
        uint32_t st = SS_IX_STATE(en->info);

        if (st != SS_IX_CREATED && st != SS_IX_SEALED && st != SS_IX_SPILLED)
            continue;
        uint32_t h = (uint32_t)(ss__index_hash(&en->id, ix->key) & (n - 1));
        ss__index_write_begin(en);
        __atomic_store_n(&en->hnext, heads[h], __ATOMIC_RELAXED);
        ss__index_write_end(en);
        __atomic_store_n(&heads[h], e + 1, __ATOMIC_RELEASE);
    }
    if (ix->bucket_map) {
        ss__sys_munmap(ix->bucket_map, bucket_bytes(ix->nbuckets));
        ss__sys_close(ix->bucket_fd);
    }
    ix->bucket_fd = fd;
    ix->bucket_map = map;
    ix->nbuckets = n;
    ix->bucket_gen++;
    /* announced once every chain is in it (the heads' release stores) */
    __atomic_store_n(&((ss__index_hdr *)ix->chunks[0])->live_bucket_gen, ix->bucket_gen,
                     __ATOMIC_RELEASE);
    return 0;
}

int ss__index_init(ss__index *ix, uint64_t store_id)
{
    int rc;

    memset(ix, 0, sizeof(*ix));
    ix->bucket_fd = -1;
    ix->store_id = store_id;
    if (ss__sys_getrandom(&ix->key, sizeof(ix->key), GRND_NONBLOCK) != sizeof(ix->key))
        ix->key = ss__now_ns() * 0x9e3779b97f4a7c15ull ^ (uint64_t)(uintptr_t)ix;
    rc = add_chunk(ix);
    if (rc == 0)
        rc = rebuild_buckets(ix, SS_INDEX_MIN_BUCKETS);
    if (rc < 0)
        ss__index_fini(ix);
    return rc;
}

void ss__index_fini(ss__index *ix)
{
    /* readers that still map the index: the store is gone (live_chunks 0) */
    if (ix->nchunks > 0)
        __atomic_store_n(&((ss__index_hdr *)ix->chunks[0])->live_chunks, 0, __ATOMIC_RELEASE);
    for (uint32_t i = 0; i < ix->nchunks; i++) {
        ss__sys_munmap(ix->chunks[i], SS_INDEX_CHUNK_BYTES);
        ss__sys_close(ix->chunk_fds[i]);
    }
    free(ix->chunks);
    free(ix->chunk_fds);
    if (ix->bucket_map) {
        ss__sys_munmap(ix->bucket_map, bucket_bytes(ix->nbuckets));
        ss__sys_close(ix->bucket_fd);
    }
    memset(ix, 0, sizeof(*ix));
    ix->bucket_fd = -1;
}

int ss__index_reserve(ss__index *ix, uint32_t e)
{
    while (e / SS_INDEX_CHUNK_ENTRIES >= ix->nchunks) {
        int rc = add_chunk(ix);
        if (rc < 0)
            return rc;
    }
    if (e >= ix->high)
        ix->high = e + 1;
    return 0;
}

void ss__index_write_begin(ss__index_entry *en)
{
    uint32_t s = __atomic_load_n(&en->seq, __ATOMIC_RELAXED);

    __atomic_store_n(&en->seq, s + 1, __ATOMIC_RELAXED);
    /* readers that see any field written below also see the odd seq */
    __atomic_thread_fence(__ATOMIC_RELEASE);
}

void ss__index_write_end(ss__index_entry *en)
{
    uint32_t s = __atomic_load_n(&en->seq, __ATOMIC_RELAXED);

    __atomic_store_n(&en->seq, s + 1, __ATOMIC_RELEASE);
}

int64_t ss__index_find(const ss__index *ix, const ss_id *id)
{
    const uint32_t *heads = bucket_heads(ix->bucket_map);
    uint32_t h = (uint32_t)(ss__index_hash(id, ix->key) & (ix->nbuckets - 1));

    for (uint32_t x = heads[h]; x; ) {
        const ss__index_entry *en = ss__index_at(ix, x - 1);
        if (!memcmp(&en->id, id, sizeof(*id)))
            return x - 1;
        x = en->hnext;
    }
    return -ENOENT;
}

int ss__index_link(ss__index *ix, uint32_t e)
{
    ss__index_entry *en = ss__index_at(ix, e);

    if (ix->hashed >= ix->nbuckets && ix->nbuckets < (1u << 30)) {
        /* the entry is not chained yet, so the rebuild skips it: chain it
         * below. A failed grow only makes chains longer. */
        uint32_t st = en->info;
        en->info = SS_IX_INFO(SS_IX_FREE, 0, 0, 0);
        if (rebuild_buckets(ix, ix->nbuckets * 2) < 0)
            ss__log_warn("index: could not grow the hash table (%u buckets)", ix->nbuckets);
        en->info = st;
    }
    uint32_t *heads = bucket_heads(ix->bucket_map);
    uint32_t h = (uint32_t)(ss__index_hash(&en->id, ix->key) & (ix->nbuckets - 1));
    ss__index_write_begin(en);
    __atomic_store_n(&en->hnext, heads[h], __ATOMIC_RELAXED);
    ss__index_write_end(en);
    __atomic_store_n(&heads[h], e + 1, __ATOMIC_RELEASE);
    ix->hashed++;
    return 0;
}

void ss__index_unlink(ss__index *ix, uint32_t e)
{
    ss__index_entry *en = ss__index_at(ix, e);
    uint32_t *heads = bucket_heads(ix->bucket_map);
    uint32_t h = (uint32_t)(ss__index_hash(&en->id, ix->key) & (ix->nbuckets - 1));

    if (heads[h] == e + 1) {
        __atomic_store_n(&heads[h], en->hnext, __ATOMIC_RELEASE);
    } else {
        uint32_t x = heads[h];
        while (x) {
            ss__index_entry *p = ss__index_at(ix, x - 1);
            if (p->hnext == e + 1) {
                ss__index_write_begin(p);
                __atomic_store_n(&p->hnext, en->hnext, __ATOMIC_RELAXED);
                ss__index_write_end(p);
                break;
            }
            x = p->hnext;
        }
        SS_ASSERT(x != 0);
        if (!x)
            return;
    }
    /* keep hnext: a reader standing on this entry can still walk on */
    ix->hashed--;
}

uint64_t ss__index_bytes(const ss__index *ix)
{
    /* headers + the touched entries and their uids + the bucket array */
    return (uint64_t)ix->nchunks * sizeof(ss__index_hdr) +
           (uint64_t)ix->high * (SS_INDEX_ENTRY_SIZE + 4) + bucket_bytes(ix->nbuckets);
}

void ss__index_view_of(const ss__index *ix, ss__index_view *v)
{
    v->chunks = (const void *const *)ix->chunks;
    v->nchunks = ix->nchunks;
    v->buckets = ix->bucket_map;
}

/* ------------------------------------------------------------- reader */

#define READ_TRIES 64

int ss__index_read(const ss__index_view *v, uint32_t e, ss__index_entry *out)
{
    return ss__index_read_ex(v, e, out, NULL);
}

int ss__index_read_ex(const ss__index_view *v, uint32_t e, ss__index_entry *out, uint32_t *uid)
{
    if (!v || !out || e / SS_INDEX_CHUNK_ENTRIES >= v->nchunks)
        return -ENOENT;
    const char *chunk = v->chunks[e / SS_INDEX_CHUNK_ENTRIES];
    const uint32_t *src = (const uint32_t *)(chunk + (size_t)(1 + e % SS_INDEX_CHUNK_ENTRIES) *
                                                         SS_INDEX_ENTRY_SIZE);
    const uint32_t *usrc = (const uint32_t *)(chunk + SS_INDEX_UID_OFF) + e % SS_INDEX_CHUNK_ENTRIES;
    uint32_t *dst = (uint32_t *)out;
    uint32_t u = 0;

    for (int t = 0; t < READ_TRIES; t++) {
        uint32_t s1 = __atomic_load_n(&src[0], __ATOMIC_ACQUIRE);
        if (s1 & 1) {
            ss__cpu_relax();
            continue;
        }
        /* word by word with relaxed atomics: the writer may be storing
         * concurrently, and a torn copy is caught by the seq check */
        for (size_t i = 0; i < SS_INDEX_ENTRY_SIZE / 4; i++)
            dst[i] = __atomic_load_n(&src[i], __ATOMIC_RELAXED);
        if (uid)
            u = __atomic_load_n(usrc, __ATOMIC_RELAXED);
        __atomic_thread_fence(__ATOMIC_ACQUIRE);
        if (__atomic_load_n(&src[0], __ATOMIC_RELAXED) == s1) {
            out->seq = s1;
            if (uid)
                *uid = u;
            return 0;
        }
    }
    return -EAGAIN;
}

int ss__index_lookup(const ss__index_view *v, const ss_id *id, ss__index_entry *out)
{
    return ss__index_lookup_ex(v, id, out, NULL);
}

int ss__index_lookup_ex(const ss__index_view *v, const ss_id *id, ss__index_entry *out,
                        uint32_t *uid)
{
    int rc;

    if (!v || !id || !out || !v->buckets || v->nchunks == 0)
        return -EINVAL;
    if ((rc = ss__index_check_hdr(v->buckets, SS_BUCKET_MAGIC)) < 0 ||
        (rc = ss__index_check_hdr(v->chunks[0], SS_INDEX_MAGIC)) < 0)
        return rc;
    const ss__index_hdr *bh = v->buckets;
    uint32_t n = bh->count;
    if (!SS_IS_POW2(n))
        return -SS_E_VERSION;
    const uint32_t *heads = (const uint32_t *)((const char *)v->buckets + sizeof(ss__index_hdr));
    uint32_t h = (uint32_t)(ss__index_hash(id, bh->hash_key) & (n - 1));
    uint32_t x = __atomic_load_n(&heads[h], __ATOMIC_ACQUIRE);

    for (uint32_t steps = 0; x && steps < SS_INDEX_WALK_MAX; steps++) {
        ss__index_entry en;
        if (ss__index_read_ex(v, x - 1, &en, uid) < 0)
            return -ENOENT; /* past the chunks we map, or busy: ask the store */
        if (SS_IX_STATE(en.info) == SS_IX_SEALED && !memcmp(&en.id, id, sizeof(*id))) {
            *out = en;
            return (int)(x - 1);
        }
        x = en.hnext;
    }
    return -ENOENT;
}
