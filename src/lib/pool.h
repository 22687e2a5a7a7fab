/* SPDX-License-Identifier: MIT */
/*
 * The populator (DESIGN section 3): a background thread that keeps ready
 * object segments (created, sized, NUMA-bound, fully populated) per size
 * class and node, so that a create takes a ready segment instead of
 * faulting on the producer's time.
 *
 * A ready segment carries no size seals yet: ss__pool_take() trims it to the
 * request (page-rounded) and then calls ss__seg_fix_size(). A miss creates
 * and populates on the caller's thread.
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
 * -ENOSPC to refuse a charge. Called from the populator thread too. */
typedef int (*ss__charge_fn)(void *arg, int64_t delta);

typedef struct ss__pool_params {
    uint64_t budget;        /* bytes of ready segments kept; 0: no thread */
    ss__sizelist classes;   /* ascending segment size classes */
    int hugepages;          /* enum ss__hugepages */
    struct ss__numa *numa;  /* NULL: no binding */
    ss__charge_fn charge;   /* NULL: nothing is charged */
    void *charge_arg;
} ss__pool_params;

typedef struct ss__pool_stats {
    uint64_t hits;            /* takes served from a ready segment */
    uint64_t misses;          /* takes that created on the caller's thread */
    uint64_t bytes_populated; /* by the populator thread, total */
    uint64_t populate_ns;     /* time the populator spent populating */
    uint64_t ready_bytes;     /* now */
    uint64_t ready_segments;  /* now */
    uint64_t refused;         /* charges refused (capacity) */
} ss__pool_stats;

int ss__pool_start(ss__pool **out, const ss__pool_params *p);
void ss__pool_stop(ss__pool *pool); /* joins the thread, frees ready segments */

/* An OBJECT segment of at least `size` bytes (size 0 allowed) bound per
 * `node` (from ss__numa_place), size-sealed and 0400. 0 or -errno. */
int ss__pool_take(ss__pool *pool, uint64_t size, int node, ss__seg *out);

/* Give back ready memory under pressure: free ready segments until
 * `bytes` are released or none is left; returns bytes released. */
uint64_t ss__pool_trim(ss__pool *pool, uint64_t bytes);

void ss__pool_stats_get(ss__pool *pool, ss__pool_stats *out);

/* Block until every class is at its target, or timeout; 0 or -ETIMEDOUT.
 * For benchmarks and tests. */
int ss__pool_wait_full(ss__pool *pool, int timeout_ms);

#endif /* SEALSTORE_SRC_LIB_POOL_H */
