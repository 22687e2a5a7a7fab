/* SPDX-License-Identifier: MIT */
/*
 * The populator: a background thread that keeps ready
 * object segments (created, sized, NUMA-bound, fully populated) per size
 * class and node, so that a create takes a ready segment instead of
 * faulting on the producer's time.
 *
 * A ready segment carries no size seals yet: ss__pool_take() trims it to the
 * request (page-rounded) and then calls ss__seg_fix_size(). A miss creates
 * on the caller's thread, lazily where that keeps every guarantee
 * (ss__seg_params.lazy): the creator's writes zero the pages.
 *
 * Capacity: every segment the pool creates is charged through
 * params.charge before it is created (a refusal stops the filling, or fails
 * a miss with -ENOSPC); the charge moves to the caller with the segment,
 * trimming uncharges the tail, and the caller uncharges what it destroys.
 */
#ifndef SEALSTORE_SRC_LIB_POOL_H
#define SEALSTORE_SRC_LIB_POOL_H

#include "internal.h"
#include "options.h"
#include "segment.h"

struct ss__numa;
typedef struct ss__pool ss__pool;

/* Charge (delta > 0) or uncharge (delta < 0) resident bytes; return 0 or
 * -ENOSPC to refuse a charge. Called from the populator thread too, and
 * never with the pool's lock held (it may take the store's locks). */
typedef int (*ss__charge_fn)(void *arg, int64_t delta);

typedef struct ss__pool_params {
    uint64_t budget;        /* bytes of ready segments kept; 0: no thread */
    ss__sizelist classes;   /* ascending segment size classes */
    int hugepages;          /* enum ss__hugepages */
    struct ss__numa *numa;  /* NULL: no binding */
    ss__charge_fn charge;   /* NULL: nothing is charged */
    void *charge_arg;
    /* Node bucket filled from the start, before any take asks (what
     * ss__numa_place() gives for a client with no hint: 0 on one node);
     * other nodes join when a take asks for them. Ignored when numa is
     * NULL (every take then shares the SS_NODE_ANY bucket). */
    int node;
} ss__pool_params;

typedef struct ss__pool_stats {
    uint64_t hits;            /* takes served from a ready segment */
    uint64_t misses;          /* takes that created on the caller's thread */
    uint64_t bytes_populated; /* by the populator thread, total */
    uint64_t populate_ns;     /* time the populator spent populating */
    uint64_t ready_bytes;     /* now */
    uint64_t ready_segments;  /* now */
    uint64_t refused;         /* charges refused (capacity) */
    uint64_t hits_larger;     /* hits served by a larger class (trimmed) */
    uint64_t evicted;         /* ready segments destroyed to rebalance */
    uint64_t failed;          /* populator creates that failed (backing) */
    uint64_t yields;          /* refills put off while a producer wrote */
    uint64_t writers;         /* now: takes not ended by ss__pool_writer_done */
} ss__pool_stats;

/* 0, -EINVAL (classes not ascending, node unknown), -ENOMEM, -EAGAIN
 * (thread). budget 0 or no classes: no thread, every take is a miss. */
int ss__pool_start(ss__pool **out, const ss__pool_params *p);
/* Joins the thread (waiting for at most the one segment it may be
 * populating), frees ready segments. The last call on the pool: no take,
 * trim or wait may run concurrently, and the caller must not hold any lock
 * the charge callback takes (the thread may be inside it). NULL: no-op. */
void ss__pool_stop(ss__pool *pool);

/* An OBJECT segment of at least `size` bytes (size 0 allowed) bound per
 * `node` (from ss__numa_place), size-sealed and 0400. 0 or -errno:
 * -ENOSPC (a miss whose charge was refused), -EINVAL (a size create
 * rejects), or what ss__seg_create returns on a miss. On success
 * seg.size is charged. Thread-safe. A hit costs ~1 us, plus freeing the
 * trimmed tail (~130 us per MiB of 4K pages) when size is below the class. */
int ss__pool_take(ss__pool *pool, uint64_t size, int node, ss__seg *out);

/* ss__pool_take, and into *fd_ro a read-only fd of the segment (the
 * readers' one, O_RDONLY): on a hit the one the populator opened
 * beforehand (reopening through /proc costs ~50 us on a VM, a fifth of an
 * in-place create's round trip, so it is done off the loop), else opened
 * now. On success the fd is the caller's, or *fd_ro is -errno when it
 * could not be opened (the segment is the caller's all the same). */
int ss__pool_take_ro(ss__pool *pool, uint64_t size, int node, ss__seg *out, int *fd_ro);

/* A successful take counts as a writer until this is called once for it
 * (the object was sealed or freed). While writers are active, the
 * populator leaves buckets that still hold a segment alone, for at most
 * 250 ms after the latest take, so a producer's copy does not share
 * memory bandwidth with zeroing. Thread-safe; NULL: no-op. */
void ss__pool_writer_done(ss__pool *pool);

/* Give back ready memory under pressure: free ready segments until
 * `bytes` are released or none is left; returns bytes released. */
uint64_t ss__pool_trim(ss__pool *pool, uint64_t bytes);

void ss__pool_stats_get(ss__pool *pool, ss__pool_stats *out);

/* Block until every class is at its target, or timeout; 0 or -ETIMEDOUT.
 * timeout_ms < 0 waits forever. For benchmarks and tests. */
int ss__pool_wait_full(ss__pool *pool, int timeout_ms);

/* Check the invariants (bucket lists match their counts and ready_bytes,
 * ready + in-flight <= budget, targets fit the budget). 0 or
 * -SS_E_CORRUPT. Tests and debug builds. */
int ss__pool_validate(ss__pool *pool);

#endif /* SEALSTORE_SRC_LIB_POOL_H */
