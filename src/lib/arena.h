/* SPDX-License-Identifier: MIT */
/*
 * Write-once arenas: the memory for objects above the small-object limit.
 *
 * An arena is a large memfd that only the store maps writable: created,
 * NUMA-bound, populated and sealed SHRINK|GROW|FUTURE_WRITE|SEAL at birth
 * exactly like a small segment (ss__seg_create with SS_SEG_SMALL, then
 * ss__seg_seal_small: the same backing chain, MADV_DONTFORK under the fork
 * guard, MADV_POPULATE_WRITE), then kept PROT_READ at rest: the store opens
 * a write window over an object while it copies the object in, and closes
 * it after. Readers reopen the fd O_RDONLY, map the arena once and keep the
 * mapping: nobody but the store's own mapping can ever write it, and
 * F_SEAL_FUTURE_WRITE forbids hole punching too, so arena memory is reused,
 * never punched, and an arena goes back to the kernel whole.
 *
 * Sizes. Requests of min_size (the small-object limit) up to dedicated_min
 * share regular arenas of arena_size bytes. Larger ones get a dedicated
 * arena of their own, the request rounded up to the backing's page; a
 * freed dedicated arena is kept (one per node) and recycled for the next
 * large request it fits with at most 1/8 of it unused, else returned.
 *
 * Design choice: best fit over free extents of 4 KiB grains, not size
 * classes. Every object occupies ceil(size / 4 KiB) grains, so internal
 * waste is under one grain: at most 1/16 at the 64 KiB floor and 0.1%
 * from 4 MiB up, 0.01% on the mixed workload below (size classes of 4 per
 * power of two round up to 20%, 8.9% on average on that workload, 8 per
 * power of two 11% and 4.4%, before any external fragmentation; and a class that
 * needs whole slabs of 8+ blocks would hold a 64 MiB slab per class per node
 * idle for 8 MiB objects). Free extents are coalesced at once with their
 * address neighbours and indexed per node in two-level segregated bins (8
 * per power of two of the grain count, a 256-bit map of non-empty bins):
 * alloc scans the request's own bin for the best fit (at most 16 entries),
 * then takes the head of the first non-empty larger bin, whose every extent
 * fits; the remainder of a split goes back to its bin. Alloc and free are
 * O(1) apart from the bounded scan. A bin's list is LIFO, so recently freed
 * (cache-warm) memory is reused first; an empty arena's one extent sits in
 * the top bin and is taken last, which keeps the spare empty.
 *
 * Arena size and the dedicated threshold, from the mixed workload of
 * tests/unit/t_arena.c (bookkeeping-only arenas, 8 GiB live, sizes
 * log-uniform 64 KiB..128 MiB, random frees, steady state; waste = every
 * byte the kernel holds over live bytes; T_ARENA_SWEEP=1 prints the table):
 *
 *   arena    dedicated above   waste mean / worst
 *   64 MiB   64 MiB            15.3% / 25.7%
 *   64 MiB   32 MiB             9.4% / 17.5%
 *   64 MiB   16 MiB             5.8% / 11.0%
 *   64 MiB    8 MiB             3.4% /  6.1%   <- default
 *   128 MiB  16 MiB             6.5% / 11.8%
 *   256 MiB  32 MiB            13.4% / 23.0%
 *   32 MiB    8 MiB             2.6% /  5.3%
 *
 * Waste is set by the ratio of the largest shared object to the arena
 * (objects near the threshold strand the space between them), not by the
 * arena size, so the threshold is arena_size / 8 and the arena size is
 * chosen for its costs: populating 64 MiB takes 30-50 ms of 4 KiB shmem or
 * ~6 ms of 2 MiB hugetlb, the one idle arena kept per node holds 64 MiB, a
 * reader maps one fd per 64 MiB of small objects (32 MiB arenas would
 * double the mappings for 0.8% less waste). Above 8 MiB a dedicated arena
 * fits its object to the page; on 2 MiB pages that is where writing in
 * place already beats a copy (the crossover measured near 4 MiB), and a
 * stream of same-size puts (64 MiB, the benchmark's shape) recycles the
 * same arena every time.
 *
 * Bookkeeping lives in the store's private heap, never in an arena (readers
 * can read every byte), and a location handed back is checked against it
 * (-EINVAL, never an assert). Per extent: one 64-byte record; per grain of
 * a regular arena: an 8-byte pointer (0.2% of the arena); per page of an
 * arena: a 2-byte window count (0.05% on 4 KiB pages).
 *
 * Capacity: every arena is charged through params.charge before it is
 * created (a refusal drops this allocator's idle arenas and retries once,
 * then fails with -ENOSPC), for what the kernel holds once it is populated
 * (its whole size), and uncharged when it is destroyed.
 *
 * Thread-safety: none, like the small allocator. The store calls every
 * function from its event-loop thread. Copies into an open window may run
 * on any thread: the window's mapping stays writable until the loop closes
 * it, and the loop must not free the object while a window is open
 * (ss__arena_free refuses with -EBUSY).
 */
#ifndef SEALSTORE_SRC_LIB_ARENA_H
#define SEALSTORE_SRC_LIB_ARENA_H

#include "internal.h"
#include "pool.h"
#include "segment.h"

struct ss__numa;
typedef struct ss__arenas ss__arenas;

/* Objects are placed on grains of this size (and so are 4 KiB aligned). */
#define SS_ARENA_GRAIN 4096u

typedef struct ss__arena_params {
    uint64_t arena_size;    /* regular arena bytes; 0: 64 MiB */
    uint64_t min_size;      /* smallest request served (the small-object
                             * limit); 0: 64 KiB */
    uint64_t dedicated_min; /* requests above get a dedicated arena;
                             * 0: arena_size / 8 */
    int hugepages;          /* enum ss__hugepages, for every arena */
    struct ss__numa *numa;  /* NULL: no binding */
    ss__charge_fn charge;   /* NULL: nothing charged */
    void *charge_arg;
    /* Simulations and tests: arenas are bookkeeping only (fd -1, no map,
     * nothing charged to the kernel but the charge callback still runs);
     * every size and placement decision is the same, the backing's page
     * being the first of ss__backing_plan(). Write windows are counted but
     * change no mapping. */
    bool bookkeeping_only;
} ss__arena_params;

/* Where an arena object lives. `arena` indexes ss__arena_segment() while
 * that arena exists; ids of destroyed arenas are reused, so whoever keeps
 * a mapping across an arena's life keys it by ss__arena_serial(). */
typedef struct ss__aloc {
    uint32_t arena;
    uint64_t off;   /* bytes from the arena's start, a multiple of the grain */
    void *ptr;      /* the store's address (read-only outside a window);
                     * NULL under bookkeeping_only */
} ss__aloc;

typedef struct ss__arena_stats {
    uint64_t live_bytes;      /* requested sizes of live objects */
    uint64_t used_bytes;      /* grains they occupy (dedicated: whole arena) */
    uint64_t arena_bytes;     /* every arena, as the kernel holds it (charged) */
    uint64_t arenas;          /* now, regular + dedicated */
    uint64_t dedicated;       /* dedicated arenas now (live or idle) */
    uint64_t idle_arenas;     /* kept empty: at most one regular and one
                               * dedicated per node */
    uint64_t free_extents;    /* free runs in regular arenas */
    uint64_t live_objects;
    uint64_t allocs, frees;   /* totals */
    uint64_t created, destroyed; /* arenas, totals */
    uint64_t recycled;        /* large requests served by an idle dedicated arena */
    uint64_t windows;         /* objects with a write window open now */
} ss__arena_stats;

/* Why ss__arenas_create() would refuse p (-EINVAL), as one phrase, or
 * NULL when p is acceptable. arena_size: a multiple of 2 MiB (of 1 GiB
 * under an explicit 1G policy), at most 64 GiB; min_size >= 1 grain;
 * min_size <= dedicated_min <= arena_size. */
const char *ss__arena_params_why(const ss__arena_params *p);
/* 0, -EINVAL, -ENOMEM. No arena is created before the first alloc. */
int ss__arenas_create(ss__arenas **out, const ss__arena_params *p);
/* Destroys and uncharges every arena. NULL: no-op. */
void ss__arenas_destroy(ss__arenas *a);

/* `node` is what ss__numa_place() returned (>= 0, SS_NODE_ANY or
 * SS_NODE_INTERLEAVE); without params.numa every node shares one heap.
 * 0, -EINVAL (size below min_size or over 1 TiB, bad node), -ENOSPC (charge
 * refused), -SS_E_NOBACKING, -ENOMEM, -errno from arena creation. The
 * object's bytes are whatever the arena held (zeroes when fresh, a freed
 * object's bytes when reused): the store writes all of them. */
int ss__arena_alloc(ss__arenas *a, uint64_t size, int node, ss__aloc *out);
/* 0; -EINVAL if loc is not a live object (nothing changes; ptr may be
 * NULL); -EBUSY while its write window is open. The space is reusable at
 * once. */
int ss__arena_free(ss__arenas *a, const ss__aloc *loc);
/* The requested size of a live object, or -EINVAL. */
int64_t ss__arena_size_of(const ss__arenas *a, const ss__aloc *loc);

/*
 * Write windows. The store's mapping is PROT_READ at rest; open makes the
 * pages covering the whole object writable (the backing's page: a 2 MiB
 * page shared with a neighbour is opened for both; counts per page keep it
 * writable until the last window on it closes), close makes them read-only
 * again. Windows nest per object. 0, -EINVAL (not a live object; close of
 * a window not open), -ENOMEM (mprotect splitting a mapping; nothing
 * changed on open), -EOVERFLOW (65535 windows on one page). A close whose
 * mprotect fails is logged and counted closed; the pages stay writable.
 * Cost of an open + close pair (t_arena, 4 KiB pages, loaded 2-vCPU VM):
 * 8-12 us for 64 KiB, 12-20 us for 1 MiB, 40-65 us for 4 MiB (the page
 * table entries change twice).
 */
int ss__arena_write_open(ss__arenas *a, const ss__aloc *loc);
int ss__arena_write_close(ss__arenas *a, const ss__aloc *loc);

/*
 * Lingering windows. The close of a window over at most
 * SS_ARENA_LINGER_MAX bytes of units leaves them writable for
 * SS_ARENA_LINGER_NS more (a close while they linger does not extend it), so
 * the next put into the same space, which the allocator hands out again
 * at once after a delete, opens its window without an mprotect. Each
 * mprotect cost an interprocessor interrupt (20-30 us on a 2-vCPU VM)
 * whenever another thread of the store's process ran on the other CPU.
 * Measured (sealstore-bench -s put -z 1M, embedded store, 4 KiB pages):
 * ss_put of 1 MiB 0.62-0.65x -> 1.11-1.21x memcpy, create+memset+seal
 * 0.32-0.36x -> 0.46-0.47x. The price: a sealed small
 * object's pages stay writable in the store's own mapping for up to
 * 20 ms after its copy, as the small allocator's units do (alloc.h).
 * ss__arena_linger_close makes the units of records due by `now` (all
 * records: all) read-only and returns when the next one is due,
 * UINT64_MAX for none; the store calls it from the loop's deadline hook.
 * At most SS_ARENA_LINGER_SLOTS records: a close past that expires the
 * oldest at once.
 */
#define SS_ARENA_LINGER_NS (20ull * 1000000)
#define SS_ARENA_LINGER_MAX (2ull << 20)
#define SS_ARENA_LINGER_SLOTS 64u
uint64_t ss__arena_linger_close(ss__arenas *a, uint64_t now, bool all);
/* Tests: linger records now. */
uint32_t ss__arena_lingering(const ss__arenas *a);

/*
 * Off-loop making: a populator thread builds the next regular arena so the
 * loop never waits 30-50 ms populating one. ss__arena_make reads only the
 * allocator's parameters, so it may run on any thread while the loop uses
 * the allocator (params.charge must then be thread-safe): it creates,
 * binds, populates, seals and charges the memory of one regular arena for
 * `node`, exactly as an alloc would. The loop then adopts it as the node's
 * idle arena, or gives it back with ss__arena_unmake (uncharged) when
 * adopt says -EEXIST (the node has an idle arena already: nothing
 * changed). ss__arena_wants says whether the node lacks one while the
 * arenas it uses are more than half full (loop thread): a node whose puts
 * come and go within one arena never has another made.
 * make: 0 or the errors of ss__arena_alloc. adopt: 0 (*seg is the
 * allocator's now and reset), -EEXIST, -EINVAL (not this allocator's
 * arena memory), -ENOMEM (nothing changed).
 */
int ss__arena_make(const ss__arenas *a, int node, ss__seg *out);
bool ss__arena_wants(const ss__arenas *a, int node);
int ss__arena_adopt(ss__arenas *a, ss__seg *seg);
void ss__arena_unmake(const ss__arenas *a, ss__seg *seg);

/* Arena `id`: its fd (O_RDWR; readers get ss__seg_reopen_ro of it), size,
 * backing, node and the store's map; NULL if no such arena. Valid until
 * the arena is destroyed (a free that empties it, trim, destroy). */
const ss__seg *ss__arena_segment(const ss__arenas *a, uint32_t id);
/* Live objects in arena `id` (0 if no such arena). */
uint32_t ss__arena_objects(const ss__arenas *a, uint32_t id);
/* Never reused within an allocator's life (1, 2, ...); 0 if no such arena. */
uint64_t ss__arena_serial(const ss__arenas *a, uint32_t id);

/* Memory pressure: destroy every idle arena kept for reuse; the bytes
 * uncharged. */
uint64_t ss__arena_trim(ss__arenas *a);

/* Walk every invariant: 0 or -SS_E_CORRUPT (and log what broke). Tests
 * call it after mutations; --enable-debug builds after each alloc/free. */
int ss__arena_validate(const ss__arenas *a);

void ss__arena_stats_get(const ss__arenas *a, ss__arena_stats *out);

#endif /* SEALSTORE_SRC_LIB_ARENA_H */
