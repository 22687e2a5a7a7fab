/* SPDX-License-Identifier: MIT */
/*
 * Store internals shared by the store's files, which sit in layers (the
 * map is at the top of internal.h; tools/layers.sh checks it), lowest
 * first: loop.c (event loop core, loop.h), store_seal.c (the seal worker),
 * store_copy.c (the copy engine's lifecycle),
 * store_conn.c (connections, wire, fd budget), store_park.c (parked
 * requests, timers, waiters), store_obj.c (the object table, capacity),
 * store_check.c (the invariants, read-only), store_disk.c (spilling to disk and restoring: the store's side of the
 * spill engine), store_get.c (GET), store_req.c (the other requests) and
 * store.c (lifecycle); index.c is the shared index memfd.
 *
 * The core records: the index entry (ss__index_entry, shared with
 * clients) and ss__obj (private) make an object; ss__conn is a client;
 * ss__parked a request that waits; ss__spop an operation with the spill
 * engine; ss__sealjob a job for the seal worker; ss__store holds them,
 * one sub-structure per owning file, each field marked with who writes it
 * and what guards it.
 *
 * Threads. Everything belongs to the event-loop thread, except:
 *  - ss__store.tab.resident (atomic: the populator thread charges too);
 *  - the seal worker's queue (ss__store.seal: mutex-protected; the worker
 *    only runs ss__seg_seal_write on the fd and size a job carries, and
 *    never touches the object table: SS_OBJF_SEALING keeps the object and
 *    its fd alive);
 *  - ss__store.bind.stop_efd (written by any thread or a signal handler);
 *  - the copy engine's workers (copy.h), which see only the jobs handed to
 *    them: the submitter keeps a job's memory, iovecs and pidfd alive until
 *    its handler runs on the loop;
 *  - the spill engine's own threads (spill.h), which see only the buffers
 *    the loop hands them: SS_OBJF_SPILLING / SS_OBJF_RESTORING keep the
 *    object, its entry and that memory alive until the completion is reaped.
 *
 * Bookkeeping per object (the budget is ~128 bytes): one 64-byte index
 * entry (the canonical record: id, state, segment, offsets, sizes, hash
 * chain), one ss__obj (private: refs, fds, LRU links, creator uid) and
 * its share of the bucket array (4 bytes per bucket, load factor 0.5..1): 64 + 48 + 4..8,
 * measured 117-119 bytes per object at 200k-300k objects.
 */
#ifndef SEALSTORE_SRC_LIB_STORE_INT_H
#define SEALSTORE_SRC_LIB_STORE_INT_H

#include "internal.h"

#include <pthread.h>
#include <stdatomic.h>
#include <sys/types.h>

#include "alloc.h"
#include "arena.h"
#include "loop.h"
#include "numa.h"
#include "options.h"
#include "pool.h"
#include "proto.h"
#include "segment.h"
#include "store.h"

/* ---------------------------------------------------------------- options */
/* SEALSTORE_CREATE_TIMEOUT (ms; negative: wait forever), SEALSTORE_EVICT
 * (bool) and SEALSTORE_SOCKET_GROUP (string) live in the option table. */
#ifndef SS_HAVE_STORE_OPTIONS
#error "options.h lacks the store options (SS_HAVE_STORE_OPTIONS)"
#endif
static inline int64_t ss__store_opt_create_timeout(void)
{
    return ss__opt_ms(SS_OPT_CREATE_TIMEOUT);
}
static inline bool ss__store_opt_evict(void) { return ss__opt_bool(SS_OPT_EVICT); }
static inline size_t ss__store_opt_group(char *buf, size_t len)
{
    return ss__opt_string(SS_OPT_SOCKET_GROUP, buf, len);
}
/* Spilling: SEALSTORE_SPILL_DIR (string; "" default directory, "off"),
 * SEALSTORE_SPILL_HIGH (string: "N%", a size, or "off"; parsed by
 * store_disk.c) and SEALSTORE_SPILL_QUEUE_DEPTH (a count). */
static inline size_t ss__store_opt_spill_dir(char *buf, size_t len)
{
    return ss__opt_string(SS_OPT_SPILL_DIR, buf, len);
}

/* ===================================================================
 * The index: an ABI shared with clients.
 *
 * Memory: chunks of SS_INDEX_CHUNK_BYTES, each its own memfd, plus one
 * bucket memfd (replaced by a twice larger one when the table grows). The
 * store maps each RW once (MADV_DONTFORK) and then seals it
 * SHRINK|GROW|FUTURE_WRITE|SEAL, like a small segment: only the store's
 * mapping writes; readers get O_RDONLY fds. Pages are touched lazily, so an
 * unused tail costs nothing.
 *
 * Every memfd starts with a 64-byte ss__index_hdr (magic, format, layout
 * stamp); entries follow, 64 bytes each, numbered globally:
 *   entry e lives in chunk e / SS_INDEX_CHUNK_ENTRIES,
 *   slot 1 + e % SS_INDEX_CHUNK_ENTRIES (slot 0 is the header);
 * after the chunk's entries, one u32 per entry in the same order: the
 * creator's uid (format 2), written inside the entry's seqlock bracket,
 * so a stable copy of an entry includes it (SS_INDEX_UID_OFF).
 *
 * Hash: bucket[h] holds e + 1 of the first entry of chain h (0: empty);
 * entry.hnext holds the next e + 1. Only CREATED, SEALED and SPILLED
 * entries are chained; a deleted entry that is still referenced is
 * unchained (state DELETED) so its id can be created again at once. The hash is keyed with
 * a per-store random key stored in the bucket header (readers need it; the
 * store is node-local and every client is already trusted with capacity).
 *
 * Seqlock per entry (single writer: the store's loop):
 *   writer: seq++ (odd); release fence; write fields; seq++ (release)
 *   reader: s1 = seq (acquire); odd -> retry; copy fields (relaxed);
 *           acquire fence; s2 = seq (relaxed); s1 != s2 -> retry.
 * A chain walk by a reader may race with relinking: it is bounded and a
 * miss only means "ask the store" (never a false hit: id and state are
 * checked on a stable copy).
 *
 * Growth, as a reader with mappings sees it: chunks are only ever added
 * (never removed or moved while the store lives), and a grown hash table
 * is a new bucket memfd; the old one stays valid memory for whoever maps
 * it but goes stale. Chunk 0's header says what is current (live_chunks,
 * live_bucket_gen): a reader that misses, or meets an entry number past
 * its chunks, compares and maps what is new (the INDEX message, proto.h).
 * =================================================================== */
#define SS_INDEX_MAGIC 0x58444953u   /* "SIDX" in memory order */
#define SS_BUCKET_MAGIC 0x544b4253u  /* "SBKT" in memory order */
#define SS_INDEX_FORMAT 2u           /* 2: the uid array after a chunk's entries */
#define SS_INDEX_CHUNK_SHIFT 20      /* 1 MiB chunks: 15419 entries */
#define SS_INDEX_CHUNK_BYTES (1u << SS_INDEX_CHUNK_SHIFT)
#define SS_INDEX_ENTRY_SIZE 64u
#define SS_INDEX_CHUNK_ENTRIES ((SS_INDEX_CHUNK_BYTES - 64u) / (SS_INDEX_ENTRY_SIZE + 4u))
#define SS_INDEX_UID_OFF (64u + SS_INDEX_CHUNK_ENTRIES * SS_INDEX_ENTRY_SIZE)
#define SS_INDEX_MAX_CHUNKS 65536u   /* ~1.07e9 entries */
#define SS_INDEX_MIN_BUCKETS 4096u
#define SS_INDEX_WALK_MAX 4096u      /* chain steps a reader takes before giving up */

/*
 * entry.state. SPILLED: a sealed object whose bytes are on disk only (it is
 * chained, so its id exists: contains says 1, create says -EEXIST); its
 * entry names no segment (seg_id, meta_seg 0). A reader that finds it (not
 * SEALED) asks the store, which restores it: readers written before this
 * state existed do the same, so it needs no format change.
 */
enum ss__ix_state {
    SS_IX_FREE = 0,
    SS_IX_CREATED = 1,
    SS_IX_SEALED = 2,
    SS_IX_DELETED = 3,
    SS_IX_SPILLED = 4,
};

/* entry.info: state | kind << 4 | backing << 6 | meta_size << 8 */
#define SS_IX_INFO(state, kind, backing, meta_size)                                      \
    ((uint32_t)(state) | ((uint32_t)(kind) << 4) | ((uint32_t)(backing) << 6) |         \
     ((uint32_t)(meta_size) << 8))
#define SS_IX_STATE(info) ((info) & 0xfu)
#define SS_IX_KIND(info) (((info) >> 4) & 0x3u)
#define SS_IX_BACKING(info) (((info) >> 6) & 0x3u)
#define SS_IX_META_SIZE(info) ((info) >> 8)

/* Wire seg_ids: object segments count up from 1; small segments carry
 * this bit over their small number (a u32 in the index); arenas this one
 * over their serial (arena.h: never reused while the store lives). */
#define SS_SEG_ID_SMALL (1ull << 63)
#define SS_SEG_ID_ARENA (1ull << 62)
/* Staging areas: SS_SEG_ID_STAGE (proto.h) over a serial. */

typedef struct ss__index_hdr {
    uint32_t magic;          /* SS_INDEX_MAGIC or SS_BUCKET_MAGIC */
    uint32_t format;         /* SS_INDEX_FORMAT */
    uint64_t stamp;          /* SS_INDEX_STAMP */
    uint64_t store_id;       /* the store that wrote it */
    uint32_t chunk;          /* index chunk number / bucket generation */
    uint32_t count;          /* entries per chunk / number of buckets */
    uint64_t hash_key;       /* bucket memfd: key of ss__index_hash */
    uint32_t header_size;    /* 64 */
    uint32_t entry_size;     /* 64 (index) / 4 (buckets) */
    /* Chunk 0 only (0 elsewhere): the shape of the index now, so that a
     * reader holding mappings learns it must ask for more (INDEX). Written
     * by the store with release stores once what they announce is complete
     * (a new chunk's header, a new bucket memfd with every chain moved);
     * read with acquire. */
    uint32_t live_chunks;     /* chunks the index has; 0: the store has stopped */
    uint32_t live_bucket_gen; /* generation (`chunk` field) of the current bucket memfd */
    uint64_t reserved;
} ss__index_hdr;

typedef struct ss__index_entry {
    uint32_t seq;            /* even: stable; accessed atomically */
    uint32_t info;           /* SS_IX_INFO() */
    uint32_t generation;     /* bumped each time the entry is reused */
    ss_id id;
    uint64_t seg_id;         /* wire id of the data's segment */
    uint64_t size;           /* object bytes */
    uint32_t data_off64;     /* data offset in its segment / 64 */
    uint32_t meta_seg;       /* small number of meta's segment, 0: no meta */
    uint32_t meta_off64;     /* meta offset in its segment / 64 */
    uint32_t hnext;          /* next entry + 1 in the hash chain, 0: end */
} ss__index_entry;

/* Everything a reader must agree on, folded into one number: format, entry
 * size and alignment, the offsets a reader uses, header size, chunk size. */
#define SS_INDEX_STAMP                                                                  \
    (((uint64_t)SS_INDEX_FORMAT << 56) |                                                \
     ((uint64_t)sizeof(ss__index_entry) << 48) |                                        \
     ((uint64_t)_Alignof(ss__index_entry) << 40) |                                      \
     ((uint64_t)offsetof(ss__index_entry, id) << 32) |                                  \
     ((uint64_t)offsetof(ss__index_entry, seg_id) << 24) |                              \
     ((uint64_t)offsetof(ss__index_entry, hnext) << 16) |                               \
     ((uint64_t)sizeof(ss__index_hdr) << 8) | (uint64_t)SS_INDEX_CHUNK_SHIFT)

_Static_assert(sizeof(ss__index_entry) == SS_INDEX_ENTRY_SIZE, "index entry is 64 bytes");
_Static_assert(sizeof(ss__index_hdr) == 64, "index header is 64 bytes");

/* The keyed id hash (part of the format). */
static inline uint64_t ss__index_hash(const ss_id *id, uint64_t key)
{
    uint64_t a, b;
    uint32_t c;

    __builtin_memcpy(&a, id->b, 8);
    __builtin_memcpy(&b, id->b + 8, 8);
    __builtin_memcpy(&c, id->b + 16, 4);
    uint64_t h = key ^ 0x9e3779b97f4a7c15ull;
    h = (h ^ a) * 0xbf58476d1ce4e5b9ull;
    h = (h ^ (h >> 31) ^ b) * 0x94d049bb133111ebull;
    h = (h ^ (h >> 29) ^ c) * 0xbf58476d1ce4e5b9ull;
    return h ^ (h >> 32);
}

/* A read-only view as a client (or a test) maps it. */
typedef struct ss__index_view {
    const void *const *chunks; /* nchunks mappings of SS_INDEX_CHUNK_BYTES */
    uint32_t nchunks;
    const void *buckets;       /* bucket memfd mapping: header + count u32 */
} ss__index_view;

/* Check a mapped header: 0, -SS_E_VERSION (magic/format/stamp mismatch). */
int ss__index_check_hdr(const void *map, uint32_t magic);
/* Seqlock read of entry e: 0 and *out a stable copy; -ENOENT past the
 * view; -EAGAIN if the writer kept it busy. */
int ss__index_read(const ss__index_view *v, uint32_t e, ss__index_entry *out);
/* Find a SEALED entry with this id without asking the store: its number
 * (>= 0) and a stable copy in *out, or -ENOENT (absent, or racing with the
 * writer: ask the store), -SS_E_VERSION (bad headers). */
int ss__index_lookup(const ss__index_view *v, const ss_id *id, ss__index_entry *out);
/* The same, with the entry's uid copied under the same seqlock read into
 * *uid (NULL: not wanted). */
int ss__index_read_ex(const ss__index_view *v, uint32_t e, ss__index_entry *out,
                      uint32_t *uid);
int ss__index_lookup_ex(const ss__index_view *v, const ss_id *id, ss__index_entry *out,
                        uint32_t *uid);

/* The store's side (index.c): single writer. */
typedef struct ss__index {
    uint64_t store_id;
    uint64_t key;
    int *chunk_fds;            /* RW memfds */
    void **chunks;             /* RW mappings */
    uint32_t nchunks, cap_chunks;
    int bucket_fd;
    void *bucket_map;          /* header + nbuckets u32 */
    uint32_t nbuckets;         /* power of two */
    uint32_t bucket_gen;
    uint32_t hashed;           /* chained entries */
    uint32_t high;             /* entry numbers ever handed out */
} ss__index;

int ss__index_init(ss__index *ix, uint64_t store_id);
void ss__index_fini(ss__index *ix);
/* Make sure entry e exists (adds chunks). 0, -ENOMEM, -ENOSPC (max). */
int ss__index_reserve(ss__index *ix, uint32_t e);
static inline ss__index_entry *ss__index_at(const ss__index *ix, uint32_t e)
{
    return (ss__index_entry *)((char *)ix->chunks[e / SS_INDEX_CHUNK_ENTRIES] +
                               (size_t)(1 + e % SS_INDEX_CHUNK_ENTRIES) * SS_INDEX_ENTRY_SIZE);
}
/* The uid word of entry e (written inside its seqlock bracket). */
static inline uint32_t *ss__index_uid_at(const ss__index *ix, uint32_t e)
{
    return (uint32_t *)((char *)ix->chunks[e / SS_INDEX_CHUNK_ENTRIES] + SS_INDEX_UID_OFF) +
           e % SS_INDEX_CHUNK_ENTRIES;
}
/* Seqlock writer brackets. */
void ss__index_write_begin(ss__index_entry *en);
void ss__index_write_end(ss__index_entry *en);
/* Chained entry with this id (CREATED or SEALED), or -ENOENT. */
int64_t ss__index_find(const ss__index *ix, const ss_id *id);
/* Chain / unchain entry e (its id must be written). Insert may grow the
 * buckets: 0 or -ENOMEM (then nothing changed). */
int ss__index_link(ss__index *ix, uint32_t e);
void ss__index_unlink(ss__index *ix, uint32_t e);
/* Bytes of shared index memory the store holds (touched high-water). */
uint64_t ss__index_bytes(const ss__index *ix);
/* A view of the store's own mappings (tests). */
void ss__index_view_of(const ss__index *ix, ss__index_view *v);

/* Unlink node n from a doubly linked list with head and tail pointers,
 * through its PREV and NEXT fields. */
#define SS_DL_UNLINK(head, tail, n, PREV, NEXT)                                          \
    do {                                                                                 \
        if ((n)->PREV)                                                                   \
            (n)->PREV->NEXT = (n)->NEXT;                                                 \
        else                                                                             \
            (head) = (n)->NEXT;                                                          \
        if ((n)->NEXT)                                                                   \
            (n)->NEXT->PREV = (n)->PREV;                                                 \
        else                                                                             \
            (tail) = (n)->PREV;                                                          \
        (n)->PREV = (n)->NEXT = NULL;                                                    \
    } while (0)

/* Append node n to such a list. */
#define SS_DL_APPEND(head, tail, n, PREV, NEXT)                                          \
    do {                                                                                 \
        (n)->NEXT = NULL;                                                                \
        (n)->PREV = (tail);                                                              \
        if (tail)                                                                        \
            (tail)->NEXT = (n);                                                          \
        else                                                                             \
            (head) = (n);                                                                \
        (tail) = (n);                                                                    \
    } while (0)

/* ================================================================ objects */

/* ss__obj.flags */
#define SS_OBJF_SEALING 0x01  /* a seal job is with the worker */
#define SS_OBJF_ORPHAN 0x02   /* creator gone while sealing: abort at completion */
#define SS_OBJF_USED 0x04     /* entry number in use (not on the free list) */
#define SS_OBJF_ON_LRU 0x08
#define SS_OBJF_SPILLING 0x10  /* a spill of it is with the engine (memory still held) */
#define SS_OBJF_RESTORING 0x20 /* a restore is under way (memory held by the op) */
#define SS_OBJF_NOMEM 0x40     /* holds no data/meta memory: SPILLED (or deleted so) */
#define SS_OBJF_BOUND 0x80     /* bound to its creator's connection (SS_CREATEF_CREATOR):
                                  deleted when it goes; spilled with SS_SPILL_REC_BOUND */

/* ss__obj.flags2 */
#define SS_OBJF2_PINWAIT 0x02 /* deleted, unreferenced, but a client's pin names it:
                                freed once no pin does (ss__pin_rescan) */
#define SS_OBJF2_COPYING 0x01 /* a PUTV's copy into it is with the copy engine:
                                 CREATED, no reference; its completion
                                 publishes or frees it (store_req.c) */
#define SS_OBJF2_STAGING 0x04 /* a staged SEAL's copy into it is with the copy
                                 engine: CREATED, ARENA, its creator's one
                                 reference (none once the creator is gone);
                                 its completion publishes it, answers, or
                                 frees it (store_req.c, stage_copy) */
#define SS_OBJF2_TRUSTED 0x08 /* OBJECT written in place in its creator's
                                 staging area (trusted-producer mode,
                                 ss__stage): the area holds it, charged as
                                 the connection's (small_slot: that
                                 connection's id), fd_rw -1; off the LRU
                                 (neither spilled nor evicted) until the
                                 connection goes and the object takes the
                                 area's memory over (ss__trust_detach_all) */

/*
 * Private per-object state, indexed by entry number (the index entry holds
 * id, state, sizes and locations). Invariants:
 *   refs == sum over clients of their refs on it;
 *   on the LRU <=> SEALED && refs == 0 && !SPILLING (a DELETED entry is
 *   freed at refs 0, unless a spill or restore of it is in flight: then at
 *   its completion);
 *   fd_rw >= 0 <=> OBJECT && CREATED;
 *   NOMEM <=> SPILLED, or DELETED from SPILLED;
 *   disk != 0 <=> a durable copy is on disk (SPILLED, or SEALED and spilled
 *   before: dropping its memory again needs no I/O);
 *   a CREATED object is referenced by its creator alone (a GET waits for
 *   the seal before it takes a reference; a RELEASE of it is refused), so
 *   "c holds a reference" is how the store knows c created it.
 *
 * uid: the creator's uid (its connection's SO_PEERCRED), written once when
 * the object is made (CREATE, PUT, or the startup scan of the spill
 * directory, which reads it from the record) and never changed; the loop
 * alone reads and writes it. It travels in every GET and LIST entry and in
 * the object's spill records, so it survives spilling and restarts.
 */
typedef struct ss__obj {
    uint32_t refs;
    uint32_t uid;            /* creator's uid, SS_UID_UNKNOWN if not known */
    uint32_t prev, next;     /* entry + 1: LRU, free list (next), or the deleted-by-id chain */
    int32_t fd_ro;           /* OBJECT: the store's O_RDONLY fd, else -1 */
    int32_t fd_rw;           /* OBJECT while CREATED, else -1 */
    uint64_t seg_size;       /* OBJECT: bytes charged, else 0 */
    uint32_t small_slot;     /* SMALL: allocator segment id of the data;
                                ARENA: the data's arena id (arena.h) */
    uint32_t meta_slot;      /* allocator segment id of the meta (meta_size > 0) */
    int16_t node;
    uint8_t flags;           /* SS_OBJF_* */
    uint8_t flags2;          /* SS_OBJF2_* */
    uint32_t disk;           /* index + 1 in ss__store.disk.locs: the disk copy, 0 none */
} ss__obj;
/* The bookkeeping budget (ss_stats.bookkeeping_bytes counts it per entry). */
_Static_assert(sizeof(ss__obj) <= 48, "ss__obj stays within 48 bytes");

/* Where an object's disk copy is (an ss__spill_loc without the id, which
 * the index entry holds). A free record links the next free one in `file`. */
typedef struct ss__diskloc {
    uint64_t file, offset, size, seq, rec_len;
    uint32_t meta_size, data_off;
} ss__diskloc;

/*
 * A spill, restore or delete the store has with the engine (cookie = its
 * index).
 *
 * Durable deletes. A DELETE of id X is answered only once no crash can
 * bring back any record of X: not its object's disk copy, nor an older
 * copy of X on its way out. The store never drops a record without
 * hearing when that is durable: every removal of a disk copy (DELETE,
 * eviction, a lost object, a duplicate the startup scan found, what a
 * failed spill may have left: ss__spill_done.copy) is a DELETE op with the
 * engine (ss__spill_delete_notify), carrying the id; a spill in flight of
 * a deleted object is one too until its completion starts that op. These
 * are X's pending removals (removal_find in store_disk.c; nremovals
 * counts the DELETE ops).
 *
 * A DELETE that finds its object with a disk copy, a spill in flight or a
 * pending removal of its id is parked (SS_PK_DELETE, no deadline, on its
 * client's list, so it counts against SS_PARKED_MAX) and waits on one op
 * at a time: op->pk heads the list of DELETEs waiting on that op (linked
 * through pk->qnext/qprev, which DELETEs use for nothing else), pk->spop
 * names the op. The object's own copy first (the SPILL op in flight, whose
 * completion starts the DELETE op and hands its waiters over, or the
 * DELETE op of the copy), else a pending removal of X. When an op
 * completes, its waiters are answered with its status if that is an error;
 * with 0, they move on to another pending removal of X if there is one,
 * and are answered 0 only when none is left. A client that goes away
 * frees pk, which unlinks it from its op's list (the op completes
 * unanswered). A DELETE with none of these is answered at once. All on the
 * loop thread.
 */
enum { SS_SPOP_FREE = 0, SS_SPOP_SPILL, SS_SPOP_RESTORE, SS_SPOP_DELETE };
#define SS_SPOP_CHUNK 256u
enum { SS_RS_WAITMEM = 1, SS_RS_READ, SS_RS_SEAL };
typedef struct ss__spop {
    uint8_t kind;            /* SS_SPOP_* */
    uint8_t rstate;          /* restore: SS_RS_* */
    bool small;              /* restore: into a small slot */
    bool has_meta;           /* restore: mloc holds a slot */
    uint32_t e, generation;  /* the object */
    uint32_t next;           /* index + 1: free list / restores waiting for memory */
    void *map;               /* spill: RO mapping of the segment; restore: RW */
    uint64_t map_len;
    uint64_t bytes;          /* spill: memory its completion frees; restore: need */
    ss__seg seg;             /* restore of an OBJECT: the fresh segment */
    int fd_ro;               /* restore of an OBJECT: readers' fd, -1 */
    ss__sloc dloc, mloc;     /* restore: data (small) and meta slots */
    int16_t node;            /* restore: placement */
    uint32_t disk;           /* spill: its disk record, reserved at the start (index + 1) */
    ss_id id;                /* spill, delete: the object's id */
    struct ss__parked *pk;   /* spill, delete: DELETEs waiting for it (list), or NULL */
} ss__spop;

/* An arena as the store tracks it for readers (by arena id): the serial
 * it had when ro_fd was opened, so a destroyed arena's record (and fd)
 * is never taken for its successor under the same id. */
typedef struct ss__arena_rec {
    uint64_t serial;         /* 0: no record (ro_fd means nothing) */
    int32_t ro_fd;           /* O_RDONLY reopen for readers, -1 until needed */
} ss__arena_rec;

/*
 * Staging areas: copy-on-seal creates (doc/design.md section 4a).
 *
 * A CREATE of an object above small_max up to the staging limit
 * (ss__store_mem.stage_limit) makes an ARENA object (CREATED) and lends
 * its creator one of the connection's staging areas for it: a memfd the
 * store created, populated and sealed SHRINK|GROW (so nobody can resize
 * it), whose O_RDWR fd goes to that client with the first CREATE reply
 * naming it (kind SS_SEG_STAGE); the client maps it read-write
 * (MADV_DONTFORK under the fork guard) and writes the object's bytes at
 * offset 0. The store maps it read-only on shmem (seg.map), not at all on
 * hugetlb. SEAL opens the object's arena write window, copies the area's
 * first `size` bytes into it (memcpy from seg.map, else pread; on the
 * copy engine above SS_STAGE_LOOP_MAX, store_req.c), publishes, answers
 * and closes the window: the object's bytes are in the arena
 * from then on, and nothing the client does to the area changes them.
 *
 * Who writes what: every field below is the loop's (store_obj.c). An area
 * is lent (busy, e/generation naming the object) from the CREATE until the
 * creator's last reference to that object goes (RELEASE, SEAL with
 * SS_SEALF_RELEASE, ABORT, a failed seal, the connection's end: wherever
 * the reference record is deleted, ss__stage_forget), not at the seal: the
 * library's *data still points into the area until the creator releases
 * the object, so the area must not be lent to another create before. The
 * store reads an area only in a SEAL of the object it is lent for (on the
 * loop, or a worker while the object is SS_OBJF2_STAGING: the areas of a
 * connection that went stay until its last copy ends, c->copies); a
 * client writing it meanwhile can only change its own object's bytes
 * before they are sealed.
 *
 * Bounds: at most SS_STAGE_AREAS areas and stage_quota bytes per
 * connection, stage_total bytes over all connections; every area is
 * charged to capacity (ss__obj_charge) while it exists, and areas are
 * freed only when their connection goes (a client keeps its mapping of
 * an area, so destroying one early would leave memory the store no
 * longer counts). A create that finds no free area big enough and may
 * not make one is made the old way, an OBJECT segment written in place.
 *
 * Trusted producers (ss__store_mem.trusted, doc/design.md section 4a): a
 * create up to trust_limit takes an area the same way, but the area then
 * holds the object (held, he: an OBJECT entry with SS_OBJF2_TRUSTED whose
 * memory it is) until the object is freed; it is lent again only then.
 * Its first SEAL adds F_SEAL_FUTURE_WRITE|F_SEAL_SEAL (fsealed), after
 * its creator mapped it. When the connection goes, each held area's
 * memory is handed to its object (given: not uncharged with the area).
 */
#define SS_STAGE_AREAS 64u
typedef struct ss__stage {
    ss__seg seg;             /* fd: O_RDWR memfd; map: the store's PROT_READ
                                mapping (shmem), NULL (hugetlb: pread); size */
    uint64_t seg_id;         /* SS_SEG_ID_STAGE | serial */
    uint32_t e, generation;  /* the object it is lent for, while busy */
    uint32_t he, hgen;       /* the object it holds, while held */
    int32_t ro_fd;           /* O_RDONLY reopen for held objects, -1 */
    int32_t node;            /* the placement it was made for (trusted) */
    bool busy;
    bool held;               /* trusted: a TRUSTED object lives in it */
    bool fsealed;            /* F_SEAL_FUTURE_WRITE added (trusted) */
    bool filled;             /* and its holes allocated, mode 0400 */
    bool given;              /* its memory went to an object (detach) */
    bool sent;               /* the client has the fd */
} ss__stage;

/* A small segment as the store tracks it (by allocator segment id). */
typedef struct ss__small {
    uint32_t no;             /* small number (wire id = SS_SEG_ID_SMALL | no) */
    int32_t ro_fd;           /* O_RDONLY reopen for readers, -1 until needed */
    const ss__seg *seg;      /* identity check: allocator record */
} ss__small;

/* ================================================================ clients */

/* Per-client references: open addressing, key = entry + 1 (0 empty). */
typedef struct ss__ref {
    uint32_t key;
    uint32_t refs;           /* bit 31: this client has the object's fd (OBJECT) */
    uint32_t seq;            /* order of first reference (release drops the oldest) */
} ss__ref;
#define SS_REF_SENT 0x80000000u
#define SS_REF_COUNT(r) ((r) & ~SS_REF_SENT)

/*
 * Unread fd-carrying replies. The kernel counts every fd
 * queued in a unix socket against the *sending* user (the store's uid) and
 * fails SCM_RIGHTS with ETOOMANYREFS for all of the store's clients once
 * that count passes the store's RLIMIT_NOFILE. The store therefore tracks,
 * per connection, the fd-carrying messages the client has not read yet:
 *
 *   marks[]   one per fd-carrying message still possibly unread, oldest
 *             first: {nfds, after}, where `after` is the value of `later`
 *             right after that message was sent;
 *   later     the sum of the sizes (kernel truesize, measured with
 *             SIOCOUTQ before and after each send, clamped at 0) of the
 *             messages sent since the first mark;
 *   fd_unread sum of marks[].nfds.
 *
 * SIOCOUTQ on our end is the truesize of what the peer has not read, and
 * the peer reads in order, so mark i has been read once
 *   SIOCOUTQ <= later - marks[i].after
 * (the bytes of the messages sent after it). A client reading during the
 * measurement makes a size look smaller: `later` only underestimates, so a
 * mark can only be kept too long, never dropped early; SIOCOUTQ == 0 drops
 * them all. Only the loop thread touches these fields.
 */
typedef struct ss__fdmark {
    uint32_t nfds;
    uint64_t after;
} ss__fdmark;

/* An object a connection created bound to itself: its entry, and the
 * entry's generation then (store_req.c, bound_add). */
typedef struct ss__bound {
    uint32_t e, generation;
} ss__bound;

typedef struct ss__outmsg {
    struct ss__outmsg *next;
    uint32_t len;
    uint32_t nfds;
    int *fds;                /* dup'ed: owned by the message */
    unsigned char buf[];
} ss__outmsg;

struct ss__parked;
struct ss__sealjob;

/*
 * A client connection. Every field is the loop thread's; each group says
 * which file writes it (others only read). A connection is freed by the
 * connection layer once reaped and its last seal job is back (dead).
 */
typedef struct ss__conn {
    /* store_conn.c: the session */
    struct ss__conn *prev, *next;  /* store's list (ss__store.conn.conns) */
    struct ss__store *store;       /* its store (the loop handler's argument is c) */
    ss__loop_fd ev;                /* its registration with the loop */
    int fd;                        /* -1 once closed (or handed to a linger) */
    uint32_t id;                   /* client id, never 0 */
    pid_t pid;                     /* SO_PEERCRED at accept */
    uid_t uid;
    /* a pidfd of the peer (SO_PEERPIDFD, else pidfd_open of pid checked
     * against the socket), -1 if none: copies read from pid with
     * process_vm_readv only with it (copy.h, Trust); closed when c is freed */
    int pidfd;
    bool hello;                    /* HELLO seen */
    bool subscriber;               /* SUBSCRIBE seen: an event stream only */
    uint32_t sub_mask;             /* SS_EVENT_* it wants */
    bool broken;                   /* to be closed at the end of this loop turn */
    bool dead;                     /* reaped; freed when no seal is pending */
    struct ss__conn *reap_next;    /* store's reap list while broken */
    bool in_paused;                /* EPOLLIN off: see ss__conn_may_read */
    /* store_conn.c: the outbox */
    ss__outmsg *out_head, *out_tail;
    uint32_t out_count;
    bool out_retry;                /* outbox head hit ETOOMANYREFS: retried on the tick */
    /* store_conn.c: unread fd-carrying replies (ss__fdmark above) */
    ss__fdmark *marks;             /* ring of mark_cap, mark_len from mark_head */
    uint32_t mark_head, mark_len, mark_cap;
    uint32_t fd_unread;
    uint64_t later;
    struct ss__conn *fdt_prev, *fdt_next; /* store's list of conns with fd_unread */
    /* store_conn.c: before HELLO, on the store's handshake list, closed at
     * hello_deadline (0: off the list) */
    struct ss__conn *hq_prev, *hq_next;
    uint64_t hello_deadline;
    /* store_obj.c: references (ss__ref, open addressing) */
    ss__ref *refs;
    uint32_t ref_cap, ref_used, ref_seq;
    /* store_get.c (store_obj.c frees it): small segments sent,
     * sent_small[allocator segment id] == small no */
    uint32_t *sent_small;
    uint32_t sent_cap;
    /* store_obj.c: arenas this client maps, by arena id: how many of its
     * reference records (SS_REF_SENT on an ARENA object) name an object
     * in each. A GET sends the arena's fd when the count is 0 (the client
     * holds nothing there, so it may have unmapped it), as for an OBJECT
     * segment; an arena is destroyed only empty, so a count > 0 always
     * names a live arena. */
    uint32_t *arena_refs;
    uint32_t arena_cap;
    /* store_obj.c: the client's pin area (PINS), mapped read-only, NULL:
     * none; unmapped when the connection goes */
    const void *pin_map;
    /* store_obj.c: staging areas (ss__stage above): nstages of them,
     * nstage_busy lent, stage_bytes their sizes */
    ss__stage *stages;
    uint32_t nstages, stage_cap, nstage_busy, nstage_held;
    uint64_t stage_bytes;
    /* store_park.c: parked requests of this client (cprev/cnext) */
    struct ss__parked *parked;
    uint32_t nparked;
    uint64_t parked_bytes;         /* heap its parked requests hold (quota) */
    uint32_t nfdwait;              /* of which GETs waiting for the fd budget (store_get.c) */
    /* store_req.c: seals, one with the worker at a time, the rest queued here */
    struct ss__sealjob *seal_queue, *seal_tail;
    bool seal_busy;
    /* store_req.c: PUTV and staged SEAL copies of this client with the
     * copy engine (each job names the connection: a dead one, and its
     * staging areas, are freed once they are back) */
    uint32_t copies;
    /* store_req.c: the objects it created bound to itself (SS_OBJF_BOUND),
     * oldest first; pairs of objects deleted since are dropped when the
     * array is full (bound_add), the rest deleted when it goes */
    ss__bound *bound;
    uint32_t nbound, bound_cap;
    /* store_req.c: a request held back until the startup scan ends (the
     * scan gate): a copy of the message; the connection is not read
     * meanwhile (store_conn.c frees it at reap) */
    void *gated;
    uint32_t gated_len, gated_nfds;
    uint64_t gated_deadline;       /* ns: a GET's timeout, UINT64_MAX: none */
} ss__conn;

#define SS_OUTBOX_MAX 1024u     /* queued replies before a client is dropped */
#define SS_PARKED_MAX 1024u     /* parked requests per client (-EAGAIN beyond) */

/* A closed connection whose last fd-carrying replies are still unread:
 * its socket stays open (shut down) until the peer reads or closes, so the
 * fds it pins stay counted in the store's total. */
typedef struct ss__linger {
    struct ss__linger *next;
    int fd;
    uint32_t fd_unread;
} ss__linger;

/*
 * Limits the store enforces on what clients make it hold. Set from
 * ss__g_limits at ss__store_open (tests shrink them; 0 keeps a default).
 */
typedef struct ss__limits {
    uint32_t hello_timeout_ms;  /* a connection must say HELLO within this */
    uint32_t hello_pending_max; /* connections not past HELLO at once */
    uint64_t parked_bytes_max;  /* heap all parked requests may hold */
    uint64_t parked_client_max; /* ... one client's parked requests */
    uint64_t fd_budget;         /* 0: the store's RLIMIT_NOFILE */
} ss__limits;
#define SS_HELLO_TIMEOUT_MS 10000u
#define SS_HELLO_PENDING_MAX 256u
#define SS_PARKED_BYTES_MAX (256ull << 20)
#define SS_PARKED_CLIENT_MAX (16ull << 20)
extern ss__limits ss__g_limits;

/* ======================================================== parked requests */

/*
 * One id of a parked GET, linked in the waiter hash by id for the life of
 * the request. WAIT: not sealed yet (a seal wakes it); RESTORE: spilled,
 * its restore is under way (the restore wakes it); HOLD: found, and kept in
 * memory until the reply (a held object is never chosen to spill).
 */
enum { SS_WN_WAIT = 0, SS_WN_RESTORE, SS_WN_HOLD };
typedef struct ss__waitnode {
    struct ss__waitnode *prev, *next; /* waiter-hash chain */
    struct ss__parked *pk;
    ss_id id;
    bool linked;
    uint8_t kind;                     /* SS_WN_* */
} ss__waitnode;

enum { SS_PK_GET = 1, SS_PK_CREATE, SS_PK_PUT, SS_PK_DELETE };

/*
 * A parked request: the loop thread's. Its record, lists, heap position
 * and charge are store_park.c's (ss__parked_new / ss__parked_free); the
 * GET fields are store_get.c's and store_req.c's (timeouts), the create
 * fields store_req.c's, spop store_disk.c's. qprev/qnext serve one list at
 * a time: the create FIFO (CREATE/PUT), the fd-budget FIFO (an answered
 * GET), a wake-up's ready list (GET, through qnext), or its op's waiters
 * (DELETE).
 */
typedef struct ss__parked {
    struct ss__parked *cprev, *cnext; /* conn's list */
    struct ss__parked *qprev, *qnext; /* one list at a time (above) */
    ss__conn *c;
    uint32_t req_id;
    int type;
    uint64_t deadline_ns;     /* UINT64_MAX: none */
    uint32_t heap_pos;        /* in the timer heap, UINT32_MAX: not in it */
    uint32_t missing;         /* GET: ids not sealed yet (restores included) */
    uint32_t nrestore;        /* GET: of which restores under way */
    bool expired;             /* GET: its own timeout passed; waits for restores */
    bool ready;               /* GET: on a wake-up's list of requests to answer */
    bool fdwait;              /* GET: answered, waits for the fd budget (fdw list) */
    int32_t err;              /* GET: a restore failed: the reply's status */
    uint64_t hard_deadline_ns;/* GET: give up on restores (create timeout) */
    uint64_t need;            /* CREATE/PUT: bytes it lacked last time (reclaim) */
    uint32_t n;               /* GET: ids; CREATE/PUT: message bytes */
    uint64_t bytes;           /* heap it holds (charged to parked_bytes) */
    ss__waitnode *w;          /* GET: n nodes */
    void *msg;                /* GET: ids copy; CREATE/PUT: request copy */
    uint32_t spop;            /* DELETE: the op it waits for (index + 1), 0 none */
} ss__parked;

/* ============================================================ seal worker */

/* A job for the seal worker: the worker reads fd and size and writes rc
 * (under the protocol in store_seal.c); the rest is the submitter's. */
typedef struct ss__sealjob {
    struct ss__sealjob *next;
    /* on the loop once sealed (rc set): the submitter's; frees the job */
    void (*done)(struct ss__store *s, struct ss__sealjob *j);
    ss__conn *c;              /* store_req.c: its client; NULL: a restored segment
                                 (store_disk.c; req_id: its spop) */
    uint32_t req_id;
    uint32_t e;               /* entry number */
    uint32_t generation;
    int fd;                   /* the object's writable fd (owned by the object) */
    uint64_t size;            /* segment bytes */
    int rc;
    bool release;             /* SS_SEALF_RELEASE: drop the creator's reference once sealed */
} ss__sealjob;

/* Tests: when not 0, the next job the worker runs ends with this error
 * instead of sealing (as a tampered memfd or a dry hugetlb pool make it
 * end). Set by a test thread, taken by the worker (__atomic_exchange). */
extern int ss__g_seal_fail;

/* ============================================ handlers registered upward */


/* Registered by the request layer with the connection layer. */
typedef struct ss__conn_handlers {
    /* a message arrived on c (as received: not checked yet) */
    void (*message)(ss__store *s, ss__conn *c, const void *buf, size_t len, unsigned nfds);
    /* c is gone (reaped): drop everything it held */
    void (*gone)(ss__store *s, ss__conn *c);
    /* the fd budget may have room: answer what waits for it; true if
     * something still waits */
    bool (*budget)(ss__store *s);
} ss__conn_handlers;

/* Registered by the disk glue with the object table. */
typedef struct ss__obj_disk_hooks {
    /* delete e's disk copy (or only forget it when the engine is closed) */
    void (*forget)(ss__store *s, uint32_t e);
    /* e goes: a restore of it still waiting for memory is dropped */
    void (*cancel_restore)(ss__store *s, uint32_t e);
    /* start spills until target bytes are on their way out; true if
     * memory was freed at once */
    bool (*spill)(ss__store *s, uint64_t target, bool demand);
} ss__obj_disk_hooks;

#define SS_STORE_HOOKS 10u /* the loop's turn hooks (store.c) */

/* ================================================================ store */
/*
 * The store, one sub-structure per owning file. Every field says who
 * writes it and what guards it; "loop" means the event-loop thread alone
 * (the default: nothing else runs store code), "open" means written while
 * the store opens and read-only after (any layer may read it). A layer
 * writes only its own sub-structure, except where a field says otherwise.
 */

/* store.c: binding, identity, lifecycle. */
typedef struct ss__store_bind {
    unsigned flags;               /* open: SS_STORE_* */
    char path[108];               /* open: the socket path */
    char lock_path[4096];         /* open: "<path>.lock" */
    int listen_fd;                /* open; -1 once the loop stopped (loop) */
    int stop_efd;                 /* open; written by any thread or a signal handler */
    ss__loop_fd stop_ev;          /* open: stop_efd's registration */
    dev_t sock_dev;               /* open: the socket file we bound */
    ino_t sock_ino;
    bool bound;                   /* the socket file is ours (loop: cleared at stop) */
    uint64_t store_id;            /* open: random, sent in HELLO, stamped in the index */
    pthread_t thread;             /* embedded mode: the loop's thread (caller's thread) */
    bool thread_started;
    ss__loop_hook hooks[SS_STORE_HOOKS]; /* open: the loop's turn hooks */
} ss__store_bind;

/* store.c (open): the memory layer and the configuration it serves. */
typedef struct ss__store_mem {
    ss__numa *numa;               /* open; NULL: no placement */
    ss__numa_policy numa_policy;  /* open */
    int hugepages;                /* open: SEALSTORE_HUGEPAGES */
    ss__pool *pool;               /* open; its own thread (pool.h) */
    ss__salloc *salloc;           /* open; loop */
    ss__arenas *arenas;           /* open; loop: objects above small_max that the
                                     store copies in (PUTV) */
    uint64_t arena_size;          /* open: a regular arena's bytes */
    bool ptrace_cap;              /* open: CAP_SYS_PTRACE is effective, so reading a
                                     client's memory would pass checks the client's
                                     own uid could not: done only for root clients */
    uint64_t capacity;            /* open: bytes the store may hold */
    uint64_t small_max;           /* open: largest small object */
    int64_t create_timeout_ms;    /* open: SEALSTORE_CREATE_TIMEOUT */
    bool evict;                   /* open: SEALSTORE_EVICT */
    /* open: creates above small_max up to stage_limit are staged
     * (ss__stage): SEALSTORE_STAGE_MAX, at most 4 MiB when arenas are on
     * hugetlb pages (in place wins above); a connection's areas hold at
     * most stage_quota bytes, all connections' stage_total */
    uint64_t stage_limit, stage_quota, stage_total;
    /* open: SEALSTORE_TRUST_PRODUCERS; creates above small_max up to
     * trust_limit (SEALSTORE_STAGE_MAX, not capped on 2 MiB pages) are
     * written in place in an area that then holds them (ss__stage) */
    bool trusted;
    uint64_t trust_limit;
} ss__store_mem;

/* ===================================================================
 * Pin areas: gets served from the shared index, with no round trip.
 *
 * A client that maps the index (above) may take a sealed object it finds
 * there without asking the store, when the object's segments are mapped
 * already: it pins it instead, in its own pin area, a memfd the store
 * made for this connection (PINS, proto.h), sealed SHRINK|GROW|SEAL,
 * which the client maps read-write and the store read-only. The area is
 * a 64-byte ss__pin_hdr then nslots u64 slots; a slot holds 0 (free) or
 * SS_PIN_KEY(e, generation) of the entry it pins. Only that client
 * writes it; the store treats every word as input: a slot that names
 * nothing live names nothing, and the worst a garbage value can do is
 * keep an object of the store's alive while that connection lives,
 * which a reference can do anyway.
 *
 * Memory ordering (a Dekker pair of sequentially consistent fences):
 *   client get:     slot = KEY(e, g) (relaxed store; hw raised first
 *                   when the slot is at or past it); seq_cst fence; read
 *                   entry e under its seqlock: SEALED with generation g
 *                   and the id and place it found -> the pin holds; else
 *                   clear the slot (release, below) and ask the store.
 *   client release: slot = 0 (relaxed store); seq_cst fence; read entry
 *                   e: no longer SEALED with generation g -> the store
 *                   may be waiting for this pin: send UNPIN (no reply).
 *   store, before an object's memory is freed or given to another
 *   object: make the entry stop saying SEALED (DELETED, or SPILLED for
 *   a spill), a seqlock write; seq_cst fence; scan every pin area's
 *   slots below its hw for KEY(e, g) (ss__pin_held).
 * Each side stores, fences, then loads what the other stores: at least
 * one sees the other. If the store's scan misses a pin, the client's
 * re-read after its fence sees the entry leaving and the client backs
 * off. If the scan finds it, the object waits: a deleted one keeps its
 * memory (SS_OBJF2_PINWAIT, on tab.pinwait) until a rescan finds no pin
 * (on UNPIN, and when a connection with a pin area goes); a spill puts
 * the entry back to SEALED and keeps the object in memory. An entry's
 * generation changes only when it is freed, which waits for its pins,
 * so a key never names a later object of the same entry.
 * =================================================================== */
#define SS_PIN_MAGIC 0x4e495053u /* "SPIN" in memory order */
#define SS_PIN_AREA_BYTES 8192u
#define SS_PIN_SLOTS ((SS_PIN_AREA_BYTES - 64u) / 8u) /* 1016 */
#define SS_PIN_KEY(e, gen) (((uint64_t)(gen) << 32) | ((uint64_t)(e) + 1u))

typedef struct ss__pin_hdr {
    uint32_t magic;          /* SS_PIN_MAGIC (store-written) */
    uint32_t nslots;         /* SS_PIN_SLOTS (store-written) */
    uint64_t store_id;       /* store-written */
    uint32_t hw;             /* client-written: every slot in use is below it */
    uint32_t reserved[11];
} ss__pin_hdr;
_Static_assert(sizeof(ss__pin_hdr) == 64, "pin area header is 64 bytes");

/* An object whose free waits for pins. */
typedef struct ss__pinwait {
    uint32_t e, generation;
} ss__pinwait;

/* store_obj.c: the object table. */
typedef struct ss__store_tab {
    ss__index ix;                 /* loop: the shared index (single writer) */
    ss__obj **objs;               /* loop: per index chunk, SS_INDEX_CHUNK_ENTRIES each */
    uint32_t free_head;           /* loop: free entry numbers (entry + 1, through next) */
    uint32_t lru_head, lru_tail;  /* loop: entry + 1; head = least recently used */
    uint64_t next_seg_id;         /* loop: wire id of the next object segment */
    uint32_t next_small_no;       /* loop: small number of the next small segment */
    ss__small *smalls;            /* loop: by allocator segment id, nsmalls of them */
    uint32_t nsmalls;
    ss__arena_rec *arecs;         /* loop: by arena id, narecs of them */
    uint32_t narecs;
    uint64_t stage_bytes;         /* loop: every connection's staging areas */
    uint64_t next_stage_serial;   /* loop: serial of the next staging area */
    ss__pinwait *pinwait;         /* loop: deleted objects a pin keeps (npinwait) */
    uint32_t npinwait, pinwait_cap;
    uint32_t npin_areas;          /* loop: connections with a pin area */
    /* loop; also written by store_req.c (a create) and store_disk.c (the
     * startup scan, a spill): CREATED + SEALED + SPILLED entries, the
     * sealed and spilled among them, and their bytes */
    uint64_t nobjects, nsealed, object_bytes;
    uint32_t *det_buckets;        /* loop: deleted but referenced, by id (prev/next) */
    uint32_t det_nbuckets;
    /* bytes charged against capacity: atomic (relaxed), charged by the
     * loop, the pool's populator thread and the small allocator */
    _Atomic uint64_t resident;
    ss__obj_disk_hooks disk_h;    /* open: registered by store_disk.c */
} ss__store_tab;

/* store_conn.c: clients and the listener. */
typedef struct ss__store_conn {
    ss__conn *conns;              /* loop: every live connection */
    ss__conn *reap;               /* loop: broken connections, closed at turn end */
    uint32_t next_client_id;      /* loop */
    uint64_t nclients;            /* loop */
    uint32_t nsubscribers;        /* loop: events are built only when someone listens */
    ss__loop_fd listen_ev;        /* loop: the listener's registration */
    bool listening;               /* loop: listen_ev is registered */
    uint64_t accept_paused_until; /* loop: ns, EMFILE backoff of the listener */
    unsigned char *ibuf;          /* open; loop: receive buffer (SS_PROTO_MAX_MSG) */
    uid_t uid;                    /* open: the store's uid (who may connect) */
    gid_t group;                  /* open: SEALSTORE_SOCKET_GROUP, if has_group */
    bool has_group;
    uint64_t trim_freed;          /* loop: heap freed since the last malloc_trim */
    ss__conn_handlers h;          /* open: registered by store_req.c */
} ss__store_conn;

/* store_conn.c: the handshake (connections before HELLO, oldest first). */
typedef struct ss__store_hs {
    ss__conn *hq_head, *hq_tail;  /* loop */
    uint32_t nhello_pending;      /* loop */
    uint32_t hello_pending_max;   /* open */
    bool accept_held;             /* loop: listener off, hello_pending_max reached */
    uint64_t hello_timeout_ns;    /* open */
} ss__store_hs;

/* store_conn.c: the fd budget (ss__fdmark); fds_unread = sum of conns'
 * fd_unread + lingers'. */
typedef struct ss__store_fdb {
    uint64_t fd_hard, fd_total_max; /* open: see ss__fd_may_send */
    uint32_t fd_client_max;         /* open */
    uint64_t fds_unread;            /* loop */
    ss__conn *fdt_head, *fdt_tail;  /* loop: conns with fd_unread > 0 */
    ss__linger *lingers;            /* loop: closed sockets with unread fds */
    uint32_t nout_retry;            /* loop: conns with out_retry */
    uint64_t fd_poll_at;            /* loop: ns, next look at unread replies, 0 none due */
} ss__store_fdb;

/* store_park.c: parked requests. */
typedef struct ss__store_park {
    ss__parked **heap;            /* loop: timer min-heap by deadline_ns */
    uint32_t heap_len, heap_cap;
    ss__waitnode **wait_buckets;  /* loop: parked GETs' wait nodes by id */
    uint32_t wait_nbuckets;
    ss__parked *cq_head, *cq_tail; /* loop: parked CREATE/PUT, FIFO (store_req.c appends) */
    ss__parked *fdw_head, *fdw_tail; /* loop: GETs waiting for the fd budget, FIFO
                                        (qprev/qnext; store_get.c appends) */
    bool retry_creates;           /* loop: memory freed since the last retry
                                     (set by store_obj.c) */
    uint64_t nparked, parked_bytes; /* loop: all parked requests and the heap they hold */
    uint64_t parked_bytes_max, parked_client_max; /* open */
    /* loop: bytes parked creates and restores lack (store_req.c,
     * store_disk.c update their own) */
    uint64_t parked_need;
    void (*ready)(ss__store *s, ss__parked *pk);  /* open: by store_get.c */
    void (*unpark)(ss__store *s, ss__parked *pk); /* open: by store_disk.c */
} ss__store_park;

/* store_arena.c: arenas made ahead on a thread of their own. lock guards
 * want, node, stop, done, seg and rc (protocol in store_arena.c); the
 * rest is the loop's. */
typedef struct ss__store_amake {
    pthread_t thread;
    bool started, sync;           /* loop */
    pthread_mutex_t lock;
    pthread_cond_t cond;
    bool want;                    /* lock: a request for `node` is posted */
    int node;                     /* lock */
    bool stop;                    /* lock */
    bool done;                    /* lock: seg and rc hold a result */
    ss__seg seg;                  /* lock: the arena made (rc 0) */
    int rc;                       /* lock */
    int efd;                      /* the thread writes it after each result */
    ss__loop_fd ev;               /* loop */
    bool busy;                    /* loop: a request is out, its result not taken */
    uint64_t nodes;               /* loop: nodes arena objects were placed on (bits) */
    int node_of[64];              /* loop: the node each bit stands for */
    uint64_t retry_at;            /* loop: ns; no request before (after a failure) */
    uint64_t made;                /* loop: arenas made ahead and adopted, total */
    /* bytes the thread charged for arenas not adopted (or given back) yet:
     * atomic (relaxed), added by the thread's charges (ss__amake_charge),
     * taken off by the loop */
    _Atomic uint64_t pending;
} ss__store_amake;

/* store_seal.c: the seal worker. lock guards todo, todo_tail, done, stop
 * and inflight (protocol in store_seal.c). */
typedef struct ss__store_seal {
    pthread_t thread;
    bool started;                 /* loop */
    bool sync;                    /* loop: lock and cond initialised */
    pthread_mutex_t lock;
    pthread_cond_t cond;
    ss__sealjob *todo, *todo_tail; /* lock: queued jobs, FIFO */
    ss__sealjob *done;            /* lock: finished jobs, LIFO */
    bool stop;                    /* lock: the worker exits once todo is empty */
    uint32_t inflight;            /* lock: jobs queued or running */
    int efd;                      /* the worker writes it after each job */
    ss__loop_fd ev;               /* loop: efd's registration */
} ss__store_seal;

/* store_copy.c: the copy engine (copy.h) that puts into arenas use; the
 * engine's own lock guards its queues, its workers see only the jobs
 * handed to them (the submitter keeps their memory and pidfd alive until
 * the job's handler runs). */
typedef struct ss__store_copy {
    struct ss__copy *engine;      /* open; loop: ss__copy_submit(engine, j) */
    ss__loop_fd ev;               /* open: its eventfd's registration */
    bool registered;              /* open */
} ss__store_copy;

/* store_disk.c: the store's side of the spill engine; sp NULL: off. The
 * engine's own threads see only the buffers handed to them. */
typedef struct ss__store_disk {
    struct ss__spill *sp;         /* open; loop */
    char spill_dir[4096];         /* open: the engine's directory (this store's own) */
    uint64_t spill_high;          /* open: spill ahead above this many bytes in use */
    uint64_t spill_low;           /* open: ... down to this */
    bool spill_ahead;             /* open: SEALSTORE_SPILL_HIGH is not off */
    ss__loop_fd ev;               /* open: the engine's eventfd registration */
    /* the rest: loop */
    ss__diskloc *locs;            /* disk copies; ss__obj.disk = index + 1 */
    uint32_t nlocs, locs_cap, locs_free; /* locs_free: index + 1 */
    ss__spop **ops;               /* chunks of SS_SPOP_CHUNK: ops never move */
    uint32_t ops_cap, ops_free, ops_busy; /* ops_free: index + 1 */
    uint32_t ops_engine;          /* ops the engine still has to complete */
    uint32_t nremovals;           /* DELETE ops in flight (see ss__spop) */
    bool closing;                 /* teardown: completions only free memory */
    uint32_t rq_head, rq_tail;    /* restores waiting for memory (index + 1) */
    uint64_t spill_pending;       /* memory that spills in flight will free */
    uint32_t nspilling;           /* spills in flight */
    uint64_t spill_backoff_until; /* ns: no new spill before (after a failure) */
    int spill_err;                /* the last spill failure (-errno) */
    uint64_t spill_log_next;      /* ns: next failure report allowed */
    uint64_t spill_log_quiet;     /* failures not reported since the last line */
    uint64_t nspilled, spilled_bytes; /* objects SPILLED now (store_obj.c
                                         takes off the ones it frees) */
    /* The startup scan of the spill directory runs in the engine's thread
     * while the store serves; objects appear as SPILLED entries as it goes
     * (scan_one, on the loop). While `scanning`, requests whose answer
     * depends on which ids exist wait at the scan gate (store_req.c). */
    bool scanning;
    struct ss__spill_loc *scan_drop; /* older copies the scan replaced: deleted */
    size_t scan_ndrop, scan_cdrop;
    uint64_t scan_dups;           /* of the objects the scan kept, older copies dropped */
    void (*scan_end)(ss__store *s); /* open: by store_req.c (the gate opens) */
} ss__store_disk;

/* store_req.c and store_get.c. */
typedef struct ss__store_req {
    unsigned char *obuf;          /* open; loop: reply scratch (GET, LIST) */
} ss__store_req;

/* Counters (ss_stats), loop; each written by the file named. */
typedef struct ss__store_counters {
    uint64_t c_creates;           /* store_req.c */
    uint64_t c_remote_puts;       /* store_req.c: PUTVs read from the caller */
    uint64_t c_seals, c_aborts;   /* store_req.c (aborts: store_obj.c too) */
    uint64_t c_gets;              /* store_get.c */
    uint64_t c_releases, c_deletes; /* store_req.c */
    uint64_t c_evictions;         /* store_obj.c */
    uint64_t c_waits;             /* store_get.c, store_req.c */
    uint64_t c_wait_timeouts;     /* store_req.c */
    uint64_t c_proto_errors;      /* store_conn.c, store_req.c */
    uint64_t c_fd_deferred;       /* store_conn.c, store_get.c */
    uint64_t c_spills, c_restores, c_spill_errors, c_restore_errors, c_lost; /* store_disk.c */
} ss__store_counters;

struct ss__store {
    ss__store_bind bind;
    ss__store_mem mem;
    ss__loop loop;                /* loop.c */
    ss__store_tab tab;
    ss__store_conn conn;
    ss__store_hs hs;
    ss__store_fdb fdb;
    ss__store_park park;
    ss__store_seal seal;
    ss__store_amake amake;
    ss__store_copy copy;          /* store_copy.c */
    ss__store_disk disk;
    ss__store_req req;
    ss__store_counters cnt;
};

/* ---- store_check.c: the invariants (listed there) in one read-only walk:
 * 0, or -SS_E_CORRUPT after logging the first broken one. */
int ss__store_validate(const ss__store *s);

/* ====================================================== functions by layer
 * Lowest first; each layer calls only layers above it in this list
 * (tools/layers.sh checks it from the objects). loop.h is the lowest. */

/* ---- store_seal.c: the seal worker */
/* Start the worker (and register its eventfd): 0 or -errno. */
int ss__seal_start(ss__store *s);
/* Queue a job (j->done set by the caller). */
void ss__seal_submit(ss__store *s, ss__sealjob *j);
/* Stop the worker after it ran every queued job. */
void ss__seal_join(ss__store *s);
/* At stop: join, then run what is left (and the handlers) on this thread. */
void ss__seal_finish(ss__store *s);
/* At close: join, free jobs never handled, the lock, the eventfd. */
void ss__seal_fini(ss__store *s);

/* ---- store_copy.c: the copy engine */
/* Start it with SEALSTORE_COPY_THREADS workers, its eventfd on the loop:
 * 0 or -errno. */
int ss__scopy_start(ss__store *s);
/* At stop: wait for the copies in flight, running their handlers. */
void ss__scopy_finish(ss__store *s);
/* At close: run what is queued and every handler, join, free. */
void ss__scopy_fini(ss__store *s);

/* ---- store_conn.c: connections and the wire */
void ss__conn_register(ss__store *s, const ss__conn_handlers *h);
/* Watch the listening socket: 0 or -errno. Unlisten: stop watching it. */
int ss__conn_listen(ss__store *s, int fd);
void ss__conn_unlisten(ss__store *s);
/* A connection on socket fd from the peer (pid, uid) SO_PEERCRED named;
 * takes a pidfd of the peer (ss__conn.pidfd). */
ss__conn *ss__conn_new(ss__store *s, int fd, pid_t pid, uid_t uid);
/* Tests: nonzero makes ss__conn_new skip SO_PEERPIDFD (the fallback). */
extern int ss__g_conn_no_peerpidfd;
void ss__conn_readable(ss__store *s, ss__conn *c);
void ss__conn_writable(ss__store *s, ss__conn *c);
/* A malformed message: answered if its header names a request, else the
 * connection is closed (counted either way). */
void ss__conn_proto_error(ss__store *s, ss__conn *c, const void *buf, size_t len, int rc);
/* HELLO answered: off the handshake list. SUBSCRIBE: events with these
 * bits go to c from now on. */
void ss__conn_hello_done(ss__store *s, ss__conn *c);
void ss__conn_subscribe(ss__store *s, ss__conn *c, uint32_t mask);
/* Mark for closing: the connection is torn down by ss__conn_reap() at the
 * end of the loop turn, so pointers held by the current turn stay valid. */
void ss__conn_close(ss__store *s, ss__conn *c);
void ss__conn_reap(ss__store *s);
/* Free a reaped connection once its last seal job came back. */
void ss__conn_free_dead(ss__store *s, ss__conn *c);
/* Send a message (header already filled by the caller, len = h->len) with
 * fds; queue on EAGAIN. The fds stay the caller's. 0 or -errno (the
 * connection was closed). */
int ss__conn_send(ss__store *s, ss__conn *c, const void *msg, uint32_t len,
                  const int *fds, uint32_t nfds);
/* Header-only reply with a status. */
void ss__conn_reply_status(ss__store *s, ss__conn *c, uint16_t type, uint32_t req_id,
                           int32_t status);
/* Push an event to every subscriber with the bit in its mask. */
void ss__conn_event(ss__store *s, uint32_t type, const ss_id *id, uint64_t size);
/* Flush outboxes at stop (bounded wait). */
void ss__conn_flush_all(ss__store *s, int timeout_ms);
/* Switch c's epoll events to what it may do now (ss__conn_may_read). */
void ss__conn_interest(ss__store *s, ss__conn *c);
/* Fd budget: may a message with nfds fds go to c now? (refreshes c's
 * unread count first). Rules: a client with nothing unread may use the
 * store's whole budget (fd_hard), so a client that reads its replies is
 * never held up by others that do not; one with unread fds stays within
 * its own cap (fd_client_max) and the total cap (fd_total_max). */
bool ss__fd_may_send(ss__store *s, ss__conn *c, uint32_t nfds);
/* The same test on the counts as they are (no refresh). */
bool ss__fd_room(const ss__store *s, const ss__conn *c, uint32_t nfds);
/* A client's reading is paused (unread fds at its cap, or GETs waiting
 * for the budget). */
bool ss__fd_paused(const ss__store *s, const ss__conn *c);
/* May the store read c's next request? Not while replies wait in its
 * outbox or too many of its requests are parked (the kernel's queue then
 * pushes back on the client), nor while its fd budget pauses it or a
 * request of its waits for the startup scan (the scan gate). EPOLLIN is
 * on exactly when this holds (ss__conn_interest). */
static inline bool ss__conn_may_read(const ss__store *s, const ss__conn *c)
{
    return !c->broken && !c->out_head && c->nparked < SS_PARKED_MAX && !c->gated &&
           !ss__fd_paused(s, c);
}
/* Have the tick look at unread replies soon (something waits on them). */
void ss__fd_poll_soon(ss__store *s);
/* Set the budget from the store's RLIMIT_NOFILE (after raising it). */
void ss__fd_budget_init(ss__store *s);
/* At close: close the sockets kept for unread replies. */
void ss__conn_lingers_close(ss__store *s);
/* Heap freed that malloc may keep: trim when enough accumulated. */
void ss__conn_heap_freed(ss__store *s, uint64_t bytes);
/* Loop hooks (arg: the store): the listener's EMFILE backoff; the tick
 * (unread replies, deferred GETs and outboxes, lingering sockets, due
 * every few ms while anything waits; connections past the HELLO timeout);
 * the reaping of broken connections. */
uint64_t ss__conn_accept_deadline(void *arg, uint64_t now);
void ss__conn_accept_turn(void *arg, uint64_t now);
uint64_t ss__conn_tick_deadline(void *arg, uint64_t now);
void ss__conn_tick(void *arg, uint64_t now);
void ss__conn_reap_turn(void *arg, uint64_t now);

/* ---- store_park.c: parked requests, timer heap, waiter hash */
int ss__park_init(ss__store *s);
void ss__park_fini(ss__store *s);
/* Handlers: a GET whose ids are all there (or failed) may be answered
 * (GET layer); a parked DELETE is freed: off its op's list (disk glue). */
void ss__park_on_ready(ss__store *s, void (*ready)(ss__store *s, ss__parked *pk));
void ss__park_on_unpark(ss__store *s, void (*unpark)(ss__store *s, ss__parked *pk));
/* The waiter hash's bucket of an id (buckets: a power of two). */
static inline uint32_t ss__park_wait_bucket(const ss__store *s, const ss_id *id)
{
    return (uint32_t)(ss__index_hash(id, s->tab.ix.key ^ 0x5bd1e995u) &
                      (s->park.wait_nbuckets - 1));
}
/* deadline_ns: UINT64_MAX for none. NULL: out of memory. */
ss__parked *ss__parked_new(ss__store *s, ss__conn *c, int type, uint32_t req_id,
                           uint64_t deadline_ns);
void ss__parked_free(ss__store *s, ss__parked *pk);
/* Heap a parked request holds: itself plus `extra`; may c park `bytes`
 * more; charge pk `bytes` more; a parked create's lack of memory. */
uint64_t ss__parked_cost(uint64_t extra);
bool ss__parked_fits(const ss__store *s, const ss__conn *c, uint64_t bytes);
void ss__parked_charge(ss__store *s, ss__parked *pk, uint64_t bytes);
void ss__parked_set_need(ss__store *s, ss__parked *pk, uint64_t need);
/* ns deadline of a timeout in ms (negative: UINT64_MAX) */
uint64_t ss__park_deadline_of(int64_t timeout_ms);
/* timer heap of parked requests (deadline_ns; heap_pos) */
int ss__park_timer_add(ss__store *s, ss__parked *pk);
void ss__park_timer_del(ss__store *s, ss__parked *pk);
/* Link a parked GET's wait node in the waiter hash (by its id). */
void ss__park_wait_link(ss__store *s, ss__waitnode *w);
/* An object with this id became SEALED in memory (seal or restore): its
 * waiters are satisfied (their nodes now hold it). */
void ss__park_wake(ss__store *s, const ss_id *id);
/* The restore of `id` is over without bringing it back (err < 0: fail its
 * GETs with err; 0: the object is gone, its GETs wait for the id as for
 * any missing one). */
void ss__park_restore_done(ss__store *s, const ss_id *id, int err);
/* The same (err < 0) for the GETs of `id` whose own timeout has passed
 * only; returns how many were failed. */
int ss__park_restore_expired(ss__store *s, const ss_id *id, int err);
/* Does a parked GET hold or await this id? */
bool ss__park_id_held(const ss__store *s, const ss_id *id);
/* Does a parked GET wait for this id's restore? */
bool ss__park_restore_wanted(const ss__store *s, const ss_id *id);

/* ---- store_obj.c: the object table */
int ss__obj_init(ss__store *s);
void ss__obj_fini(ss__store *s);
void ss__obj_register_disk(ss__store *s, const ss__obj_disk_hooks *h);
int ss__obj_charge(void *arg, int64_t delta);
static inline ss__obj *ss__obj_at(const ss__store *s, uint32_t e)
{
    return &s->tab.objs[e / SS_INDEX_CHUNK_ENTRIES][e % SS_INDEX_CHUNK_ENTRIES];
}
static inline ss__index_entry *ss__ent(const ss__store *s, uint32_t e)
{
    return ss__index_at(&s->tab.ix, e);
}
static inline uint32_t ss__ent_state(const ss__store *s, uint32_t e)
{
    return SS_IX_STATE(ss__ent(s, e)->info);
}
void ss__ent_set_state(ss__store *s, uint32_t e, uint32_t state);
/* Pins (above). Does a client's pin name entry e as it is now? The
 * caller made the entry stop saying SEALED first. */
bool ss__pin_held(ss__store *s, uint32_t e);
/* Pins naming entry e as it is now, one per client that pinned it (LIST
 * counts them with the references: a get served from the index is a
 * reference the store does not keep). */
uint32_t ss__pin_count(ss__store *s, uint32_t e);
/* Free the waiting objects no pin names any more (UNPIN, a connection
 * gone). */
void ss__pin_rescan(ss__store *s);
/* Make c's pin area: 0 and its read-write fd in *fd (the caller closes
 * it), or -errno. */
int ss__pin_area_make(ss__store *s, ss__conn *c, int *fd);
/* A DELETED object's last reference went (or it had none): free it
 * unless a spill or restore of it is in flight or a pin names it. */
void ss__obj_unref_deleted(ss__store *s, uint32_t e);
/* The creator's uid, in the object and in its index entry (readers of the
 * index return it with the view). */
void ss__obj_set_uid(ss__store *s, uint32_t e, uint32_t uid);
/* The deleted-but-referenced chains' bucket of an id (a power of two). */
static inline uint32_t ss__obj_det_bucket(const ss__store *s, const ss_id *id)
{
    return (uint32_t)(ss__index_hash(id, s->tab.ix.key ^ 0x2545f491u) &
                      (s->tab.det_nbuckets - 1));
}
int ss__obj_alloc(ss__store *s, uint32_t *out);
void ss__lru_remove(ss__store *s, uint32_t e);
void ss__lru_push(ss__store *s, uint32_t e);
/* A SEALED object's last reference went: back on the LRU (unless a spill
 * of it is in flight). */
void ss__obj_idle(ss__store *s, uint32_t e);
/* Small segments by allocator segment id (made current), their readers'
 * fd, and freeing a slot (forgets a segment the allocator destroyed). */
ss__small *ss__small_rec(ss__store *s, uint32_t slot);
void ss__small_check(ss__store *s, uint32_t slot);
int ss__small_ro_fd(ss__store *s, ss__small *sm);
void ss__small_free(ss__store *s, uint32_t slot, uint64_t off64, uint64_t size);
/* Arenas (store_obj.c): the readers' record of arena `id` (made current),
 * its O_RDONLY fd (opened once), room in c->arena_refs for `id`, and the
 * end of a reference record (ss__ref_del, keeping c->arena_refs). */
ss__arena_rec *ss__arena_rec_of(ss__store *s, uint32_t id);
/* Where an ARENA object lives (ptr NULL). */
ss__aloc ss__obj_aloc(const ss__store *s, uint32_t e);
/* The store's own mapping of a SMALL or ARENA object's data (read-only
 * outside write windows), or NULL if its segment is gone. */
unsigned char *ss__obj_data(const ss__store *s, uint32_t e);
int ss__arena_ro_fd(ss__store *s, uint32_t id);
int ss__arena_refs_reserve(ss__conn *c, uint32_t id);
void ss__ref_forget(ss__store *s, ss__conn *c, ss__ref *r);
/* Staging areas (ss__stage): lend c an area of at least `size` bytes (a
 * free one, best fit, or a new one within the bounds): its index, or
 * -ENOSPC (none may be had: create the old way), -errno. hold (trusted:
 * the area will hold the object): only an area made for `node` (what
 * ss__numa_place said, or SS_NODE_ANY) and at most twice the size a new
 * one would have. Bind it to the
 * object made with it; the area lent for entry e; end the loan when the
 * creator's reference record of e goes (ss__ref_forget, an abort); free
 * every area of c (its end). */
int ss__stage_take(ss__store *s, ss__conn *c, uint64_t size, int node, bool hold);
void ss__stage_bind(ss__store *s, ss__conn *c, uint32_t i, uint32_t e);
ss__stage *ss__stage_of(const ss__store *s, ss__conn *c, uint32_t e);
void ss__stage_forget(ss__store *s, ss__conn *c, uint32_t e);
void ss__stage_drop_all(ss__store *s, ss__conn *c);
/* Trusted-producer mode (SS_OBJF2_TRUSTED). fd: a read-only fd of area i
 * of c for an object it will hold (the area's reopened once, then dup'd),
 * or -errno. hold: area i of c holds the new object e from now on (and
 * is lent to its creator: ss__stage_bind).
 * seal: the area sealed F_SEAL_FUTURE_WRITE (once; its creator mapped it
 * before), so no process can map it writable from now on; 0 or -errno.
 * release: e's memory goes (ss__obj_drop_mem): its area is free again.
 * detach_all: c goes (first thing, ss__ref_drop_all); each object its
 * areas hold takes the area's memory over (charged as its own, on the
 * LRU when idle) and is TRUSTED no more, so an open one is then freed as
 * any object. */
int ss__trust_fd(ss__conn *c, uint32_t i);
void ss__trust_hold(ss__store *s, ss__conn *c, uint32_t i, uint32_t e);
int ss__trust_seal(ss__store *s, ss__conn *c, uint32_t e);
void ss__trust_release(ss__store *s, uint32_t e);
void ss__trust_detach_all(ss__store *s, ss__conn *c);
uint64_t ss__trust_bytes(const ss__store *s);
/* Free an object's data and meta memory (sets NOMEM; the entry is the
 * caller's to rewrite). */
void ss__obj_drop_mem(ss__store *s, uint32_t e);
/* Destroy an OBJECT segment the store holds and uncharge its bytes.
 * writing: it came from a pool take that no seal has ended (the creator or
 * a restore was still filling it), so its pool writer ends here too. */
void ss__obj_seg_free(ss__store *s, ss__seg *seg, bool writing);
/* Give back an object's memory, disk copy and entry (refs 0, nothing in
 * flight). */
void ss__obj_free(ss__store *s, uint32_t e);
/* DELETE / eviction / loss: unchain now, free when nothing holds it. */
void ss__obj_detach(ss__store *s, uint32_t e, bool evicted);
/* Free memory for about `need` bytes: true if some was freed at once
 * (retry now); spills started meanwhile free more later. */
bool ss__obj_reclaim(ss__store *s, uint64_t need);
/* The sealed (resident) entry with this id, or -ENOENT. */
int64_t ss__obj_find_sealed(ss__store *s, const ss_id *id);
/* A sealed entry with this id, resident or spilled, or -ENOENT. */
int64_t ss__obj_find_stored(ss__store *s, const ss_id *id);
/* Per-client references. */
ss__ref *ss__ref_find(const ss__conn *c, uint32_t e);
int ss__ref_grow(ss__conn *c);
int ss__ref_take(ss__store *s, ss__conn *c, uint32_t e, ss__ref **out);
/* Remove a record (its count is the caller's to take off the object). */
void ss__ref_del(ss__conn *c, ss__ref *r);
/* Drop `n` references of c on the record r's object; frees or LRU-queues. */
void ss__ref_drop(ss__store *s, ss__conn *c, ss__ref *r, uint32_t n);
/* Which object a RELEASE of `id` by c means: the one c has held longest
 * among the sealed (live or deleted) objects with that id. NULL if none. */
ss__ref *ss__ref_held(ss__store *s, ss__conn *c, const ss_id *id);
/* c went: every reference of it goes (its CREATED objects are aborted). */
void ss__ref_drop_all(ss__store *s, ss__conn *c);

/* ---- store_arena.c: arenas made ahead */
/* Start the thread (and register its eventfd): 0 or -errno. */
int ss__amake_start(ss__store *s);
/* The arenas' capacity charge (ss__obj_charge; on the arena thread it also
 * counts what it made in amake.pending). Any thread. */
int ss__amake_charge(void *arg, int64_t delta);
/* An arena object was placed on `node`: keep an idle arena ready there. */
void ss__amake_note(ss__store *s, int node);
/* Turn hook: post a request when a noted node lacks an idle arena. */
void ss__amake_turn(void *arg, uint64_t now);
/* Join the thread, give back an arena made and not adopted, close. */
void ss__amake_stop(ss__store *s);
/* ---- store_disk.c: the store's side of the spill engine */
/* Op i (its cookie with the engine); ops sit in chunks and never move. */
static inline ss__spop *ss__disk_op(const ss__store *s, uint32_t i)
{
    return &s->disk.ops[i / SS_SPOP_CHUNK][i % SS_SPOP_CHUNK];
}
/* Register the disk glue's handlers with the object table and the parking
 * layer; scan_end: the request layer's "the startup scan is over". */
void ss__disk_register(ss__store *s, void (*on_scan_end)(ss__store *s));
/* Open the engine per SEALSTORE_SPILL_DIR (this store's subdirectory) and
 * start indexing the objects already spilled there (the scan runs while
 * the store serves; s->disk.scanning until it ends). A directory that cannot be
 * used turns spilling off (logged); returns 0, or -errno (no memory). */
int ss__disk_setup(ss__store *s);
/* Stop the startup scan where it is (what it found stays indexed). */
void ss__disk_scan_stop(ss__store *s);
/* Finish what is in flight (completions applied), close the engine and
 * remove this store's directory if nothing is left in it. */
void ss__disk_teardown(ss__store *s);
/* After the objects were freed: the disk records. */
void ss__disk_fini(ss__store *s);
/* Wait for spills and restores in flight (bounded) and apply them: at stop. */
void ss__disk_drain(ss__store *s);
/* Loop hook: spill ahead above the high-water mark. */
void ss__disk_turn(void *arg, uint64_t now);
/* Start spills of LRU victims until `target` bytes are on their way out
 * (demand: a request waits; keep a few spills in flight so the disk
 * overlaps one file's syncs with the next one's data); true if memory was
 * freed at once (objects whose disk copy exists). */
bool ss__disk_spill_more(ss__store *s, uint64_t target, bool demand);
/* Start (or join) the restore of spilled entry e: 0, or -errno (it could
 * not start; its waiters were told). */
int ss__disk_restore_start(ss__store *s, uint32_t e);
/* Memory was freed: retry restores waiting for it. */
void ss__disk_restore_retry(ss__store *s);
/* A GET's own timeout passed while it waits for the restore of `id`: the
 * error to fail it with now because that restore waits for memory nothing
 * is freeing (memory full, spilling failed and paused, no spill in
 * flight): -SS_E_FULL when the spill disk is full, else the spill error;
 * 0 while memory may still come (it waits on, up to the create timeout). */
int ss__disk_restore_stuck(ss__store *s, const ss_id *id);
/* A deleted object's restore that still waits for memory is dropped. */
void ss__disk_restore_cancel(ss__store *s, uint32_t e);
/* Delete e's disk copy, or only forget it when the engine is closed (the
 * store is going away: spilled files survive it). */
void ss__disk_forget(ss__store *s, uint32_t e);
/* Must a DELETE of e wait for the disk: a disk copy, a spill of it in
 * flight, or a pending removal of an older copy of its id? */
bool ss__disk_delete_waits(const ss__store *s, uint32_t e);
/* DELETE of e, which must wait: delete its copy and answer pk (a parked
 * SS_PK_DELETE, taken over) once no record of its id can come back,
 * before e is detached. */
void ss__disk_delete_durable(ss__store *s, uint32_t e, ss__parked *pk);
void ss__disk_fill_stats(ss__store *s, ss_stats *st);

/* ---- store_get.c: GET */
/* The request (checked by the dispatch): answered, or parked. */
void ss__req_do_get(ss__store *s, ss__conn *c, const ss__msg_hdr *h);
/* A parked GET may be answered now (or waits for the fd budget). */
void ss__req_get_complete(ss__store *s, ss__parked *pk);
/* The budget may have room: answer GETs waiting for it, in order; true if
 * some still wait. */
bool ss__req_get_budget(ss__store *s);
/* INDEX: the shared index's fds, read-only (proto.h). */
void ss__req_do_index(ss__store *s, ss__conn *c, const ss__msg_hdr *h);
void ss__req_do_pins(ss__store *s, ss__conn *c, const ss__msg_hdr *h);

/* ---- store_req.c: dispatch and the other requests */
/* Register the request layer's handlers with the layers below. */
void ss__req_init(ss__store *s);
/* At stop, after the loop: answer held and parked requests, finish the
 * seals and the disk's work in flight. */
void ss__req_stop(ss__store *s);
/* Check and run one request (a message as received): the connection
 * layer's message handler. */
void ss__req_dispatch(ss__store *s, ss__conn *c, const void *buf, size_t len, unsigned nfds);
/* Request handlers (the message checked by the dispatch): each sends its
 * reply, or parks the request. */
void ss__req_do_create(ss__store *s, ss__conn *c, const ss__msg_hdr *h, bool put);
void ss__req_do_seal(ss__store *s, ss__conn *c, const ss__msg_hdr *h);
void ss__req_do_abort(ss__store *s, ss__conn *c, const ss__msg_hdr *h);
void ss__req_do_release(ss__store *s, ss__conn *c, const ss__msg_hdr *h);
void ss__req_do_contains(ss__store *s, ss__conn *c, const ss__msg_hdr *h);
void ss__req_do_delete(ss__store *s, ss__conn *c, const ss__msg_hdr *h);
void ss__req_do_list(ss__store *s, ss__conn *c, const ss__msg_hdr *h);
void ss__req_do_stats(ss__store *s, ss__conn *c, const ss__msg_hdr *h);
/* Run a CREATE or PUT: -ENOSPC (park it; *need: bytes it lacked) or 0 when
 * answered. */
int ss__req_create_try(ss__store *s, ss__conn *c, const ss__msg_hdr *h, bool put,
                       uint64_t *need);
/* A connection went away (the connection layer's departure handler):
 * abort its unsealed objects, drop its refs, cancel its parked requests
 * and queued seals. */
void ss__req_conn_gone(ss__store *s, ss__conn *c);
/* Retry parked creates (and restores waiting for memory). */
void ss__req_retry_creates(ss__store *s);
/* Loop hooks (arg: the store): the timer heap of parked requests (and the
 * slow retry tick); the scan gate's GET timeouts; retries after memory
 * was freed. */
uint64_t ss__req_timer_deadline(void *arg, uint64_t now);
void ss__req_timer_turn(void *arg, uint64_t now);
uint64_t ss__req_gate_deadline(void *arg, uint64_t now);
void ss__req_gate_turn(void *arg, uint64_t now);
void ss__req_retry_turn(void *arg, uint64_t now);
uint64_t ss__req_bookkeeping(const ss__store *s);
void ss__req_fill_stats(ss__store *s, ss_stats *st);

#endif /* SEALSTORE_SRC_LIB_STORE_INT_H */
