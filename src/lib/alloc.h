/* SPDX-License-Identifier: MIT */
/*
 * The small allocator: carves SMALL segments into 64-byte aligned size
 * classes for objects up to SEALSTORE_SMALL_MAX. The store is the only
 * writer of these segments (through its own mapping); readers get read-only
 * fds. All bookkeeping lives in the store's private memory, never inside the
 * shared segments, so nothing a reader sees can steer the allocator.
 *
 * Grows by adding segments per NUMA node; a segment that becomes empty is
 * returned to the kernel (one spare per node is kept). Free blocks are
 * poisoned for AddressSanitizer. ss__salloc_validate() checks every
 * invariant; tests call it after each mutation, and --enable-debug builds
 * call it from SS_ASSERT_EXPENSIVE.
 */
#ifndef SEALSTORE_SRC_LIB_ALLOC_H
#define SEALSTORE_SRC_LIB_ALLOC_H

#include "internal.h"
#include "pool.h"
#include "segment.h"

struct ss__numa;
typedef struct ss__salloc ss__salloc;

typedef struct ss__salloc_params {
    uint64_t segment_size;  /* SEALSTORE_SMALL_SEGMENT */
    uint64_t max_size;      /* SEALSTORE_SMALL_MAX: largest object served */
    int hugepages;          /* enum ss__hugepages, for the segments */
    struct ss__numa *numa;  /* NULL: no binding */
    ss__charge_fn charge;   /* charged per segment created; NULL: none */
    void *charge_arg;
} ss__salloc_params;

/* Where a small object lives. `seg` ids are stable while the segment exists
 * (they index ss__salloc_segment()); ptr is the store's writable address. */
typedef struct ss__sloc {
    uint32_t seg;
    uint32_t cls;
    uint64_t off;
    void *ptr;
} ss__sloc;

typedef struct ss__salloc_stats {
    uint64_t live_bytes;     /* sum of requested sizes of live objects */
    uint64_t used_bytes;     /* sum of their class sizes */
    uint64_t segment_bytes;  /* bytes of all small segments (what the kernel holds) */
    uint64_t segments;
    uint64_t live_objects;
    uint64_t allocs, frees;  /* totals */
    /* Fragmentation report (added after the fields above; append only). */
    uint64_t slabs;          /* slabs carved out of segments now */
    uint64_t slab_bytes;     /* bytes of those slabs (segment_bytes - slab_bytes is unused) */
    uint64_t empty_slabs;    /* empty slabs kept for reuse (one per class and node) */
    uint64_t spare_segments; /* idle segments kept (at most one per node) */
} ss__salloc_stats;

/*
 * Thread-safety: none. The store calls every function below from its one
 * event-loop thread; callers sharing an allocator must serialise all calls.
 *
 * params: segment_size 0 means 4 MiB, max_size 0 means 64 KiB.
 * segment_size must be a multiple of 64 KiB (of 2 MiB / 1 GiB with an
 * explicit SS_HP_2M / SS_HP_1G policy), max_size <= segment_size / 8.
 * 0, -EINVAL (bad params), -ENOMEM. No segment is created until the first
 * alloc. ss__salloc_destroy(NULL) is a no-op; destroy uncharges every
 * segment it frees.
 */
int ss__salloc_create(ss__salloc **out, const ss__salloc_params *p);

/*
 * Write windows. The store's mapping of a small segment is read-only at
 * rest; a write through loc->ptr needs a window first. ss__salloc_write_open
 * makes the window units (64 KiB, or the segment's page when larger)
 * covering [loc->off, loc->off + len) writable: 0, -EINVAL (not a live
 * range), -ENOMEM (mprotect or bookkeeping). A window closes at the first
 * ss__salloc_write_close() at least SS_SALLOC_WINDOW_NS after it opened,
 * unless held: hold keeps it open until the matching
 * ss__salloc_write_release() (a restore whose bytes land later), and it
 * closes at the first close call after that. ss__salloc_write_close
 * returns the time (ss__now_ns clock) the next window is due, UINT64_MAX
 * when none is; all closes every window not held.
 */
/* 20 ms: a 1 ms window cost back-to-back ss_put 25-40% of its calls per
 * second (64 B and 1 KiB; sealstore-bench -s put), 20 ms costs none we
 * can measure on this machine, and a sealed page is still writable to
 * root for at most 20 ms after its last write. */
#define SS_SALLOC_WINDOW_NS 20000000ull
int ss__salloc_write_open(ss__salloc *a, const ss__sloc *loc, uint64_t len, bool hold);
void ss__salloc_write_release(ss__salloc *a, const ss__sloc *loc, uint64_t len);
uint64_t ss__salloc_write_close(ss__salloc *a, uint64_t now, bool all);
/* Tests: windows open now (held or not). */
uint32_t ss__salloc_windows(const ss__salloc *a);

/* Why ss__salloc_create() would refuse p with -EINVAL, as one phrase in
 * the allocator's terms (the caller names the options behind them), or
 * NULL when p is acceptable. */
const char *ss__salloc_params_why(const ss__salloc_params *p);
void ss__salloc_destroy(ss__salloc *a);

/* `node` is what ss__numa_place() returned (>= 0, SS_NODE_ANY or
 * SS_NODE_INTERLEAVE); without params.numa every node shares one heap.
 * size 0 gets a 64-byte block whose address must not be dereferenced.
 * out->ptr stays valid until the block is freed.
 * 0, -EINVAL (size > max_size, bad node), -ENOSPC (charge refused),
 * -SS_E_NOBACKING, -ENOMEM, -errno from segment creation. */
int ss__salloc_alloc(ss__salloc *a, uint64_t size, int node, ss__sloc *out);
/* 0, or -EINVAL if loc is not a live allocation (nothing changes): unknown
 * seg, off not at a block start, cls mismatch, block already free, or a
 * non-NULL ptr that is not the block's address (ptr may be NULL). */
int ss__salloc_free(ss__salloc *a, const ss__sloc *loc);

/* The segment with id `seg` (its fd is what readers get, read-only), or NULL.
 * The pointer stays valid while the segment exists: until a free empties it
 * (and it is not kept as the spare) or ss__salloc_destroy(). */
const ss__seg *ss__salloc_segment(const ss__salloc *a, uint32_t seg);

/* Walk every invariant: 0 or -SS_E_CORRUPT (and log what broke). */
int ss__salloc_validate(const ss__salloc *a);

void ss__salloc_stats_get(const ss__salloc *a, ss__salloc_stats *out);

/* Class of a size, and a class's block size (for tests and stats). */
int ss__salloc_class_of(uint64_t size);
uint64_t ss__salloc_class_size(int cls);

#endif /* SEALSTORE_SRC_LIB_ALLOC_H */
