/* SPDX-License-Identifier: MIT */
/*
 * Cross-file internals of libsealstore. Everything here is private: names
 * start with ss__ (a leading underscore is reserved at file scope in ISO C).
 *
 * Map of the library (start with the headers named here; doc/design.md,
 * "Map of the code", says the same at more length):
 *   internal.h  this map; helpers every file uses (arrays, asserts, errors)
 *   log.h       levelled, rate-limited logging to a sink
 *   sys.h       thin syscall wrappers, each returning -errno
 *   options.h   the SEALSTORE_* table (X-macro) and its parsers
 *   stats.h     process-wide counters of the memory layer (X-macro)
 *   segment.h   sealed memfd segments: backing chain, seal sequences
 *   hugepages.h hugetlb pools: reading, reserving for a process's life
 *   numa.h      hwloc topology and placement policy
 *   pool.h      the populator: ready, pre-faulted object segments
 *   alloc.h     the small allocator carving small-object segments
 *   arena.h     write-once arenas: best-fit extents for objects above the small limit
 *   copy.h      the copy engine: worker threads copy puts' bytes into the
 *               store's memory (process_vm_readv from the caller, or memcpy)
 *   proto.h     the wire protocol between the client library and the store
 *   spill.h     the spill engine: objects to disk and back, asynchronously
 *   spill_int.h the spill engine's internals; its files call one way, down
 *               spill.c (the face spill.h declares) -> spill_scan.c (startup
 *               scan) -> spill_job.c (job state machines) -> spill_ftab.c
 *               (file table, tombstones) -> spill_io.c (io_uring, threads)
 *               -> spill_file.c (on-disk format, directory listing)
 *   loop.h      the event loop core: fds with handlers, turn hooks
 *   store.h     the store: open, run, stop, close (daemon and embedded)
 *   store_int.h the store's internals: index format, core records, layers
 *   client_int.h a client handle's internals (client.c, client_obj.c)
 *
 * The store's layers, lowest first. Each file calls only files listed
 * above it (tools/layers.sh checks the built objects: `make check` runs
 * it as tests/integration/t_layers.sh):
 *   loop.c        the event loop core; knows no request type
 *   store_seal.c  the seal worker thread
 *   store_copy.c  the copy engine's lifecycle in the store (copy.h)
 *   store_conn.c  connections: accept, handshake, wire, outbox, fd budget
 *   store_park.c  parked requests: records, quotas, timer heap, waiter hash
 *   store_obj.c   the object table: entries, free list, LRU, deleted
 *                 chains, small segments, client references, capacity
 *   store_arena.c arenas made ahead on a thread of their own
 *   store_check.c the store's invariants, every layer's records read in
 *                 one walk (--enable-debug: store.c runs it each turn)
 *   store_disk.c  the store's glue to the spill engine (ss__disk_*; the
 *                 engine itself is ss__spill_*): spills, restores,
 *                 durable deletes, the startup scan
 *   store_get.c   GET: reply, waiting GETs, the fd-budget FIFO
 *   store_req.c   dispatch, every other request, the scan gate, parked
 *                 creates, timers of parked requests, stop
 *   store.c       lifecycle: open, bind, run, stop, close; the loop's
 *                 turn hooks, in order, in one table
 * Where a lower layer must reach an upper one, the upper one registers a
 * handler (a function pointer) with it:
 *   loop      <- every layer: its fds (conn: listener and clients; seal,
 *                copy and arena: their eventfds; disk: the engine's eventfd;
 *                store.c: stop)
 *                and store.c's table of turn hooks (conn, req, disk)
 *   seal      <- req (a client's SEAL) and disk (a restored segment): a
 *                completion handler per job (ss__sealjob.done)
 *   conn      <- req: a message arrived, a connection went, the fd budget
 *                may have room (ss__conn_register)
 *   park      <- req: a parked GET may be answered (store_get.c's
 *                ss__req_get_complete, through ss__park_on_ready);
 *                disk: a parked DELETE was freed (ss__park_on_unpark)
 *   obj       <- disk: forget an object's disk copy, cancel its restore,
 *                spill to free memory (ss__obj_register_disk)
 *   disk      <- req: the startup scan is over (ss__disk_register)
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

/* An object id as 2 * SS_ID_SIZE lowercase hex digits and a NUL (spill
 * file logs, the CLI). */
#define SS_ID_HEX_LEN (2 * SS_ID_SIZE + 1)
void ss__id_hex(const ss_id *id, char out[SS_ID_HEX_LEN]);

/*
 * Busy polling (SEALSTORE_BUSY_POLL): how long a wait that would sleep
 * first polls for its event (the store's loop: its epoll set; a client's
 * reader: its socket), yielding the CPU between polls (loop.h says why).
 * An event that arrives within the spin costs no wake-up of the sleeping
 * side, which is most of a round trip when the peer runs on another CPU
 * (20-70 us each way on an idle VM vCPU; measured in doc/design.md).
 *
 * A duration spins that long at every wait (0: never). auto, the default,
 * spins SS_SPIN_AUTO_NS while spins pay and backs off while they do not:
 * after SS_SPIN_MISSES spins in a row that found nothing, the next `skip`
 * waits sleep at once; skip starts at SS_SPIN_SKIP_MIN and doubles at
 * each back-off that follows, up to SS_SPIN_SKIP_MAX; a spin that finds
 * its event resets both. So request streams and replies the store sends
 * at once cost no wake-up, while an idle store or a client whose replies
 * take longer than the window (large copies) spins for about
 * SS_SPIN_MISSES waits in every SS_SPIN_SKIP_MAX. With one online CPU auto
 * never spins: the peer it waits for needs that CPU.
 *
 * One per waiter, used by one thread at a time (the loop thread; a
 * client's reader, a role handed over under the handle's lock).
 */
#define SS_SPIN_AUTO_NS 50000ull
#define SS_SPIN_MISSES 8u
#define SS_SPIN_SKIP_MIN 16u
#define SS_SPIN_SKIP_MAX 1024u
#define SS_SPIN_AUTO (-1)  /* the option's value for auto (ss__parse_us) */
typedef struct ss__spin {
    uint64_t ns;           /* the window; 0: never spin */
    bool adaptive;         /* auto: back off while spins find nothing */
    uint32_t misses;       /* spins in a row that found nothing */
    uint32_t skip;         /* waits left that sleep at once */
    uint32_t backoff;      /* the skip of the next back-off */
} ss__spin;

/*
 * A waiter that knows its event waits for a copy of `bytes` (a client's
 * PUTV or staged SEAL; the loop with such a copy on a worker) spins
 * through the copy's expected time as well, at 6 GB/s, for copies up to
 * SS_SPIN_COPY_MAX: there the wake-up it saves is 10-40% of the put on an
 * idle vCPU; above, a few percent, not worth a CPU spinning for a
 * millisecond. Only when the wait spins at all (ss__spin_window > 0).
 */
#define SS_SPIN_COPY_MAX (2ull << 20)
static inline uint64_t ss__spin_copy_ns(uint64_t bytes)
{
    return bytes <= SS_SPIN_COPY_MAX ? bytes / 6 : 0;
}

/* A write seal's round trip through the store's seal worker (two hand-offs
 * and F_ADD_SEALS): what a waiter for a SEAL of a segment of its own, and
 * the loop meanwhile, spin through (measured 150-270 us on a 2-vCPU VM,
 * most of it wake-ups that spinning avoids). */
#define SS_SPIN_SEAL_NS (200ull * 1000)

/* From the option's value: SS_SPIN_AUTO, 0 or microseconds. */
void ss__spin_init(ss__spin *sp, int64_t opt_us);
/* The spin this wait may take (0: sleep at once); counts a skipped wait. */
uint64_t ss__spin_window(ss__spin *sp);
/* The spin ended: its event came (hit) or its whole window passed. */
void ss__spin_result(ss__spin *sp, bool hit);

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
