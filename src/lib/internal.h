/* SPDX-License-Identifier: MIT */
/*
 * Cross-file internals of libsealstore. Everything here is private: names
 * start with ss__ (a leading underscore is reserved at file scope in ISO C).
 *
 * Map of the library (start with the headers named here):
 *   sys.h      thin syscall wrappers, each returning -errno
 *   segment.h  sealed memfd segments: backing chain, seal sequences
 *   hugepages.h hugetlb pools: reading, reserving for a process's life
 *   numa.h     hwloc topology and placement policy
 *   pool.h     the populator: ready, pre-faulted object segments
 *   alloc.h    the small allocator carving small-object segments
 *   options.h  the SEALSTORE_* table (X-macro) and its parsers
 *   log.h      levelled, rate-limited logging to a sink
 *   stats.h    counters (X-macro)
 */
#ifndef SEALSTORE_SRC_LIB_INTERNAL_H
#define SEALSTORE_SRC_LIB_INTERNAL_H

#include "config.h"

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sealstore.h"

#define ss_likely(x) __builtin_expect(!!(x), 1)
#define ss_unlikely(x) __builtin_expect(!!(x), 0)

/* Spin-wait hint for a short retry loop (a seqlock reader). */
static inline void ss__cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield" ::: "memory");
#else
    __asm__ __volatile__("" ::: "memory");
#endif
}

#define SS_ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#define SS_ALIGN_UP(x, a) (((x) + ((a) - 1)) & ~((__typeof__(x))(a) - 1))
#define SS_IS_POW2(x) ((x) != 0 && ((x) & ((x) - 1)) == 0)

/*
 * Growing arrays. Make room for at least `need` elements of `size` bytes in
 * *arr, whose capacity is *cap: the capacity doubles (starting at `first`)
 * until it covers need, and never passes `max`. New elements are zeroed.
 * 0, or -ENOMEM (allocation failed or need > max): then *arr and *cap are
 * unchanged. SS_ARRAY_RESERVE(arr, cap, need, first) is the typed form for
 * any pointer `arr` and unsigned counter `cap`.
 */
int ss__array_grow(void **arr, size_t *cap, size_t need, size_t size, size_t first,
                   size_t max);
#define SS_ARRAY_RESERVE(arr, cap, need, first)                                          \
    __extension__({                                                                      \
        void *a_ = (arr);                                                                \
        size_t c_ = (cap);                                                               \
        int r_ = ss__array_grow(&a_, &c_, (need), sizeof(*(arr)), (first),               \
                                (size_t)(__typeof__(cap))-1);                           \
        if (r_ == 0) {                                                                   \
            (arr) = a_;                                                                  \
            (cap) = (__typeof__(cap))c_;                                                 \
        }                                                                                \
        r_;                                                                              \
    })

#define SS_KiB (1024ull)
#define SS_MiB (1024ull * 1024)
#define SS_GiB (1024ull * 1024 * 1024)

/* Every object is 64-byte aligned: a cache line, and AVX-512 friendly. */
#define SS_OBJ_ALIGN 64u

/*
 * Debug checks compile in every build and the optimiser removes them when
 * SS_DEBUG is 0, so debug code always type-checks (jemalloc config_debug).
 * 1: cheap asserts, 2: expensive invariant walks (--enable-debug).
 */
static const int SS_DEBUG = SS_DEBUG_LEVEL;

/* Pointer-or-error for internal use only (never in the public API). */
#define SS_MAX_ERRNO 4095
static inline void *ss__err_ptr(long err) { return (void *)err; }
static inline long ss__ptr_err(const void *p) { return (long)p; }
static inline bool ss__is_err(const void *p)
{
    return (uintptr_t)p >= (uintptr_t)-SS_MAX_ERRNO;
}

/*
 * Assertions: SS_ASSERT for invariants that a bug, never a client, can break.
 * The handler prints without allocating and aborts. Client input must never
 * reach an assert: it gets an error instead.
 */
void ss__assert_fail(const char *expr, const char *file, int line,
                     const char *func) __attribute__((noreturn, cold));
#define SS_ASSERT(e) \
    ((SS_DEBUG >= 1 && !(e)) ? ss__assert_fail(#e, __FILE__, __LINE__, __func__) : (void)0)
#define SS_ASSERT_EXPENSIVE(e) \
    ((SS_DEBUG >= 2 && !(e)) ? ss__assert_fail(#e, __FILE__, __LINE__, __func__) : (void)0)

#include "log.h"

#endif /* SEALSTORE_SRC_LIB_INTERNAL_H */
