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
} ss__salloc_stats;

int ss__salloc_create(ss__salloc **out, const ss__salloc_params *p);
void ss__salloc_destroy(ss__salloc *a);

/* 0, -EINVAL (size > max_size), -ENOSPC (charge refused), -ENOMEM, -errno. */
int ss__salloc_alloc(ss__salloc *a, uint64_t size, int node, ss__sloc *out);
/* 0, or -EINVAL if loc is not a live allocation (nothing changes). */
int ss__salloc_free(ss__salloc *a, const ss__sloc *loc);

/* The segment with id `seg` (its fd is what readers get, read-only), or NULL. */
const ss__seg *ss__salloc_segment(const ss__salloc *a, uint32_t seg);

/* Walk every invariant: 0 or -SS_E_CORRUPT (and log what broke). */
int ss__salloc_validate(const ss__salloc *a);

void ss__salloc_stats_get(const ss__salloc *a, ss__salloc_stats *out);

/* Class of a size, and a class's block size (for tests and stats). */
int ss__salloc_class_of(uint64_t size);
uint64_t ss__salloc_class_size(int cls);

#endif /* SEALSTORE_SRC_LIB_ALLOC_H */
