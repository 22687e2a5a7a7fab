/* SPDX-License-Identifier: MIT */
/*
 * Process-wide counters of the memory layer (mimalloc stats pattern): one
 * X-macro list. COUNT fields track current, peak and total; COUNTER fields
 * only grow. Updates are relaxed atomics: exact totals, no ordering.
 */
#ifndef SEALSTORE_SRC_LIB_STATS_H
#define SEALSTORE_SRC_LIB_STATS_H

#include "internal.h"
#include "numa.h"
#include "segment.h"

#include <stdatomic.h>
#include <stdio.h>

#define SS_STATS(COUNT, COUNTER)                                              \
    COUNT(seg_bytes_4k)     /* bytes in 4K shmem segments */                 \
    COUNT(seg_bytes_thp)    /* bytes in shmem THP segments */                \
    COUNT(seg_bytes_2m)     /* bytes in 2 MiB hugetlb segments */            \
    COUNT(seg_bytes_1g)     /* bytes in 1 GiB hugetlb segments */            \
    COUNT(segments)         /* live segments */                              \
    COUNTER(seg_created)    /* segments ever created */                      \
    COUNTER(backing_fallbacks) /* creates that fell back to a lesser backing */ \
    COUNTER(populate_bytes) /* bytes populated (any thread) */                \
    COUNTER(populate_ns)    /* time spent populating */                     \
    COUNTER(seal_waits)     /* F_SEAL_WRITE calls that took over 4 ms */

typedef struct ss__count {
    _Atomic int64_t cur;
    _Atomic int64_t peak;
    _Atomic uint64_t total;
} ss__count;

typedef struct ss__stats {
#define SS_S_COUNT(n) ss__count n;
#define SS_S_COUNTER(n) _Atomic uint64_t n;
    SS_STATS(SS_S_COUNT, SS_S_COUNTER)
#undef SS_S_COUNT
#undef SS_S_COUNTER
    _Atomic int64_t node_bytes[SS_MAX_NODES]; /* segment bytes bound per node */
} ss__stats;

extern ss__stats ss__g_stats;

void ss__count_add(ss__count *c, int64_t delta);
static inline void ss__counter_add(_Atomic uint64_t *c, uint64_t n)
{
    atomic_fetch_add_explicit(c, n, memory_order_relaxed);
}

/* Account a segment coming (sign = 1) or going (sign = -1). */
void ss__stats_segment(const ss__seg *seg, int sign);

/* One JSON object with every field (for tools and the bench). */
void ss__stats_json(FILE *f);

#endif /* SEALSTORE_SRC_LIB_STATS_H */
