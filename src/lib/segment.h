/* SPDX-License-Identifier: MIT */
/*
 * Segments: sealed memfds, the only memory objects ever live in.
 *
 * Four kinds:
 *
 *  OBJECT segment, one per large object. Created with sealing allowed
 *  (MFD_NOEXEC_SEAL where the kernel has it), sized to its backing's page,
 *  populated, then ss__seg_fix_size() adds F_SEAL_SHRINK|F_SEAL_GROW and
 *  fchmod(0400): from then on nobody can resize it (no SIGBUS for readers).
 *  The creator writes through a writable fd; ss__seg_seal_write() adds
 *  F_SEAL_WRITE|F_SEAL_SEAL, reads the seals back and accepts exactly
 *  SEAL|SHRINK|GROW|WRITE (EXEC allowed), then fallocate()s any holes so a
 *  reader's fault cannot allocate behind the store's accounting.
 *
 *  SMALL segment, carved by the small allocator. The store maps it
 *  read-write once (MADV_DONTFORK), then ss__seg_seal_small() adds
 *  SHRINK|GROW|FUTURE_WRITE|SEAL: no new writable mapping or write() can be
 *  made by anyone; only the store's earlier mapping writes (the allocator
 *  keeps it read-only outside its write windows; whoever can write the
 *  store's memory, root, can use it during one).
 *
 *  ARENA segment, carved by the arena allocator (arena.h) for objects
 *  above the small limit that the store copies in: made and sealed exactly
 *  like a SMALL segment (ss__seg_seal_small), named apart.
 *
 *  STAGE segment, a client's staging area for copy-on-seal creates
 *  (store_int.h, ss__stage): created and populated like an OBJECT segment
 *  (no writable store mapping is kept), then the store adds SHRINK|GROW
 *  and sends its O_RDWR fd to that one client, which writes its objects'
 *  bytes there; at seal the store copies them into the object's arena
 *  place, from its own read-only mapping on shmem, with pread on hugetlb
 *  (never SIGBUS, whatever the client does to the file). No
 *  object lives in it: it is the producer's scratch, named apart
 *  ("sealstore-stage").
 *
 * Readers get an O_RDONLY fd from ss__seg_reopen_ro().
 *
 * Backing chain, chosen per segment, best first:
 * hugetlb 1G -> hugetlb 2M -> shmem THP -> 4K shmem. A hugetlb backing is
 * used only when its pool really has pages: memfd_create and ftruncate
 * succeed on an empty pool, so the test is the populate step (mmap ENOMEM,
 * fallocate ENOSPC). Under SS_HP_AUTO a page size is considered only when
 * rounding the request up to it wastes at most 1/8 of the rounded size
 * (4K always qualifies; THP also needs at least 2 MiB), and a failure falls
 * back (counted in stats; logged once per backing: a warning when memory
 * someone configured ran out, a debug line when the machine has none of
 * that backing). An explicit policy (1G,
 * 2M, thp) is a requirement: that backing is used for any size (rounded up
 * to its page), and when it cannot be had the create fails with
 * -SS_E_NOBACKING (never SIGBUS). SS_HP_OFF means 4K shmem only.
 */
#ifndef SEALSTORE_SRC_LIB_SEGMENT_H
#define SEALSTORE_SRC_LIB_SEGMENT_H

#include "internal.h"
#include "sys.h"

struct ss__numa;

enum ss__backing {
    SS_BACKING_4K,
    SS_BACKING_THP,
    SS_BACKING_2M,
    SS_BACKING_1G,
    SS_BACKING__COUNT
};

/* What a segment holds (on the wire: ss__segref.kind; in the index: the
 * entry's kind). OBJECT: one object, written in place by its creator and
 * write-sealed; SMALL: small objects the store copied in; ARENA: larger
 * objects the store copied in (arena.h). SMALL and ARENA segments are
 * sealed FUTURE_WRITE at birth and written only by the store. STAGE: a
 * client's staging area (never in the index): populated and sealed
 * SHRINK|GROW only, written by that client, read by the store with pread
 * when it copies a staged object into its arena at seal. */
enum ss__seg_kind { SS_SEG_OBJECT, SS_SEG_SMALL, SS_SEG_ARENA, SS_SEG_STAGE };

/* Seal sets, as F_GET_SEALS reports them. */
#define SS_SEALS_SIZE (F_SEAL_SHRINK | F_SEAL_GROW)
#define SS_SEALS_OBJECT (F_SEAL_SEAL | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE)
#define SS_SEALS_SMALL (F_SEAL_SEAL | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_FUTURE_WRITE)

/*
 * A segment as the store holds it.
 * Invariants: size % page_size == 0; size is what the kernel holds once
 * populated (capacity counts it); map != NULL only for SMALL segments.
 */
typedef struct ss__seg {
    int fd;             /* O_RDWR memfd, -1 when closed */
    uint32_t page_size; /* 4096, 2 MiB or 1 GiB */
    uint8_t backing;    /* enum ss__backing */
    uint8_t kind;       /* enum ss__seg_kind */
    int16_t node;       /* NUMA node bound at populate, or an SS_NODE_* value */
    uint64_t size;      /* file size in bytes */
    void *map;          /* store's read-write mapping (SMALL only) */
} ss__seg;

typedef struct ss__seg_params {
    uint64_t size;           /* bytes wanted; rounded up to the backing's page */
    int hugepages;           /* enum ss__hugepages (options.h) */
    int kind;                /* enum ss__seg_kind */
    struct ss__numa *numa;   /* NULL: no binding */
    int node;                /* from ss__numa_place() */
    /* OBJECT only: leave the pages to the creator's first writes (on its
     * own thread) where that keeps every guarantee: 4K shmem (the file
     * keeps its NUMA policy) and hugetlb without a node binding to keep
     * (one node, or no NUMA layer: the mmap reservation holds the pages,
     * so no fault can fail). THP and bound hugetlb populate as usual. A
     * lazy segment may have holes: ss__seg_seal_write fills them. */
    bool lazy;
} ss__seg_params;

/*
 * Create, size and populate a segment: memfd -> ftruncate -> map RW ->
 * bind (numa) -> MADV_HUGEPAGE (THP) -> MADV_POPULATE_WRITE -> unmap
 * (OBJECT) or keep the mapping with MADV_DONTFORK (SMALL). Falls back along
 * the backing chain per p->hugepages. Seals are not added yet.
 * Returns 0, -SS_E_NOBACKING (explicit backing unavailable), -ENOMEM,
 * -EMFILE/-ENFILE, -EINVAL (SMALL of size 0, over 1 TiB, bad policy or
 * kind), other -errno. An OBJECT of size 0 gets one 4K page. On failure
 * *seg is untouched and nothing is left behind.
 */
int ss__seg_create(ss__seg *seg, const ss__seg_params *p);

/* OBJECT: shrink to SS_ALIGN_UP(size, page_size) (never grows; size 0
 * keeps one page), add SHRINK|GROW, fchmod(0400). 0, -EINVAL if size is
 * larger than seg->size or seg is not a live OBJECT segment. */
int ss__seg_fix_size(ss__seg *seg, uint64_t size);

/* SMALL: add SHRINK|GROW|FUTURE_WRITE|SEAL and verify. Needs seg->map.
 * 0, -EPERM (already sealed, or the seals read back wrong), -EINVAL. */
int ss__seg_seal_small(ss__seg *seg);

/*
 * Write-seal an object segment through a writable fd of it: add
 * WRITE|SEAL, read back, require exactly SS_SEALS_OBJECT (plus F_SEAL_EXEC),
 * then fallocate the whole file (`size`: its size). Returns 0; -EBUSY if a
 * writable shared mapping or pinned pages exist anywhere (nothing changed:
 * retry later); -EPERM if the seals were tampered with or F_SEAL_SEAL was
 * already set, or fd is read-only (the object must be aborted); -ENOSPC
 * (hugetlb pool ran dry filling holes); other -errno.
 * May block ~160 ms when pages are pinned: call it off the event loop.
 */
int ss__seg_seal_write(int fd, uint64_t size);
/* Allocate whatever holes the first `size` bytes of fd have, under the
 * store's accounting rather than in a reader's fault: nothing when the
 * block count says there are none (O(1); fallocate walks every page).
 * Allowed under F_SEAL_WRITE and F_SEAL_FUTURE_WRITE. 0, -ENOSPC (hugetlb
 * pool dry), -errno. */
int ss__seg_fill_holes(int fd, uint64_t size);

/* O_RDONLY|O_CLOEXEC reopen through /proc/self/fd/N, for readers. */
int ss__seg_reopen_ro(int fd);
/* memfd_create(name, flags | MFD_NOEXEC_SEAL), or without it on kernels
 * before 6.3 (remembered once a retry proves it): an fd or -errno. */
int ss__memfd_create(const char *name, unsigned flags);

/* F_GET_SEALS, or -errno. */
int ss__seg_get_seals(int fd);
bool ss__seals_object_ok(int seals);
bool ss__seals_small_ok(int seals);

/* Unmap (if mapped) and close; the kernel frees the memory once no
 * reader maps it. Safe on a zeroed or already destroyed segment. */
void ss__seg_destroy(ss__seg *seg);
/* The same, but the segment stays in the statistics: its memory lives on
 * through another fd and is counted there (destroyed as that one's). */
void ss__seg_close(ss__seg *seg);

const char *ss__backing_name(int backing); /* "4K", "THP", "2M", "1G" */
uint32_t ss__backing_page_size(int backing);

/*
 * Could `backing` serve a segment right now? For hugetlb: pages free in the
 * pool (free - reserved, plus overcommit headroom) >= pages; THP: the
 * shmem_enabled mode allows it. A hint: the populate step decides.
 */
bool ss__backing_available(int backing, uint64_t pages);

/*
 * Start check for an explicit policy (enum ss__hugepages): can its backing
 * be had at all? hugetlb: a one-page memfd is mapped, which reserves a page
 * of the pool (ENOMEM when it is empty), and dropped before anything
 * faults; THP: shmem_enabled allows it. 0 (always for auto and off), or
 * -SS_E_NOBACKING with the missing memory and its remedy in why, or another
 * -errno (why says which step failed).
 */
int ss__backing_require(int hugepages, char *why, size_t len);

/*
 * The backings ss__seg_create() would try for `size` under `hugepages`
 * (enum ss__hugepages), best first, judged by policy and waste rule only
 * (no availability check). Fills out[], returns how many (>= 1), or -EINVAL
 * for a size create rejects (SMALL 0, over 1 TiB) or a bad policy/kind.
 */
int ss__backing_plan(uint64_t size, int hugepages, int kind, uint8_t out[SS_BACKING__COUNT]);

/* Tests and tools: forget the cached shmem_enabled mode (re-read it next
 * time; it is otherwise cached for up to a second). */
void ss__backing_forget(void);
/* Tests: false makes create skip the ss__backing_available() hint, so the
 * mapping attempt itself meets an empty pool. Default true. */
void ss__backing_set_hint(bool on);

#endif /* SEALSTORE_SRC_LIB_SEGMENT_H */
