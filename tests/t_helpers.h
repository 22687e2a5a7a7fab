/* SPDX-License-Identifier: MIT */
/*
 * Shared test helpers. Skip protocol (Automake): a program returns 77 when
 * its whole precondition is missing, with one line on stderr saying why;
 * T_SKIP_IF() skips one case (counted, so a program whose cases all skipped
 * returns 77 through t_run()). Skip only on the precise "unavailable"
 * errors; anything else fails. SEALSTORE_TEST_REQUIRE=hugepages,uring,numa
 * turns the named skips into failures.
 */
#ifndef SEALSTORE_TESTS_T_HELPERS_H
#define SEALSTORE_TESTS_T_HELPERS_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>
#include <cmocka.h>

#include "sealstore.h"

#define T_EXIT_PASS 0
#define T_EXIT_SKIP 77
#define T_EXIT_ERROR 99

extern int t_skipped;

/* Is this feature listed in SEALSTORE_TEST_REQUIRE? */
bool t_required(const char *feature);

/* Per-case skip with a stated reason; fails instead when `feature` is
 * required (feature may be NULL). */
#define T_SKIP_IF(cond, feature, why)                                         \
    do {                                                                      \
        if (cond) {                                                           \
            if ((feature) && t_required(feature))                            \
                fail_msg("required feature '%s' unavailable: %s (%s)",      \
                         (const char *)(feature), (why), #cond);              \
            print_message("SKIP: %s (%s)\n", (why), #cond);                   \
            t_skipped++;                                                      \
            skip();                                                           \
        }                                                                     \
    } while (0)

/* Whole-program skip from main(): prints the reason, returns 77 (or 99
 * when the feature is required). */
int t_skip_program(const char *feature, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Run a group; 77 if every case skipped. SS_TEST_FILTER=pattern runs
 * only the cases whose names match (cmocka's * and ? wildcards), e.g. to
 * repeat one case under load. */
#define t_run(group, setup, teardown)                                         \
    (t_apply_filter(),                                                        \
     t_finish(cmocka_run_group_tests(group, setup, teardown),                 \
              sizeof(group) / sizeof((group)[0])))
void t_apply_filter(void);
int t_finish(int failures, size_t ncases);

/* assert_int_equal with the error's text on failure. */
#define t_assert_ok(expr)                                                     \
    do {                                                                      \
        long t_rc_ = (long)(expr);                                            \
        if (t_rc_ < 0)                                                        \
            fail_msg("%s = %ld (%s)", #expr, t_rc_, t_strerror((int)t_rc_)); \
    } while (0)
#define t_assert_err(expr, err)                                               \
    do {                                                                      \
        long t_rc_ = (long)(expr);                                            \
        if (t_rc_ != (long)(err))                                             \
            fail_msg("%s = %ld (%s), expected %ld (%s)", #expr, t_rc_,       \
                     t_strerror((int)t_rc_), (long)(err), t_strerror((int)(err))); \
    } while (0)
const char *t_strerror(int err);

/*
 * The 2 MiB / 1 GiB hugetlb pools. As root, t_hugetlb_reserve() adds
 * `pages` pages of this program's own to the pool (on top of what others
 * hold: test programs run concurrently) and returns the number free after;
 * not root, it returns the free count if that suffices, else -EPERM.
 * t_hugetlb_restore() takes back exactly what this program added (also run
 * at exit).
 */
long t_hugetlb_free(uint64_t page_size);
/* Pages reserved (by mappings, not yet faulted): resv_hugepages. */
long t_hugetlb_resv(uint64_t page_size);
/* Pages in use beyond the persistent pool (freed when unmapped):
 * surplus_hugepages. */
long t_hugetlb_surplus(uint64_t page_size);
/* The pool's persistent pages: nr_hugepages less surplus_hugepages (pages
 * still mapped after the pool was lowered below what is in use, freed when
 * unmapped). Writing nr_hugepages sets this count; reading it counts the
 * surplus too. -errno without the pool. */
long t_hugetlb_persistent(uint64_t page_size);
/* Pages the pool could ever hand out: nr_hugepages + nr_overcommit_hugepages. */
long t_hugetlb_total(uint64_t page_size);
/* Hold off every other test program's pool changes (an flock; returns the
 * fd to pass to unlock, -1 if unavailable). Do not reserve while holding it. */
int t_hugetlb_lock(void);
void t_hugetlb_unlock(int fd);
long t_hugetlb_reserve(uint64_t page_size, long pages);
void t_hugetlb_restore(void);

/*
 * Can this kernel create 2 MiB hugetlb memfds? 1: yes. 0: no, the reason in
 * why (EINVAL/ENOSYS: no hugetlbfs; ENODEV: no 2 MiB page size), the only
 * errors that mean "unavailable". Any other error is the probe's own
 * failure: it exits 99. A yes proves kernel support, not free pages: an
 * empty pool still creates memfds (t_hugetlb_reserve tells about pages).
 */
int t_hugetlb_kernel(char *why, size_t len);

/* shmem THP mode as the kernel reports it: "never", "advise", ... */
const char *t_thp_shmem_mode(void);

/* Page size the kernel uses for the mapping containing addr (smaps
 * KernelPageSize), in bytes, or -errno. */
long t_kernel_page_size(const void *addr);
/* ShmemPmdMapped + hugetlb share of the mapping containing addr, bytes. */
long t_smaps_field(const void *addr, const char *field);
/* The /proc/self/maps line covering addr: its permissions ("r--s"...),
 * the mapped file's name and its range, into perms[5], name[256], *lo,
 * *hi; false if no mapping covers addr. */
bool t_map_of(const void *addr, char perms[5], char name[256], unsigned long *lo,
              unsigned long *hi);
/* Fail the test unless addr is mapped from a file whose name contains
 * `what`, with permissions `perms` (NULL: any). */
void t_expect_map(const void *addr, const char *what, const char *perms);

/* A capacity budget for the memory layer's charge callbacks (pool, small
 * allocator, arenas): t_budget_charge refuses a charge that would pass
 * `limit` (counting it in `refused`) and fails the test if the balance
 * ever goes negative. */
typedef struct t_budget {
    int64_t used, limit;
    unsigned refused;
} t_budget;
int t_budget_charge(void *arg, int64_t delta);

/* A deterministic random stream (splitmix64), one per program: seed it
 * before each case that draws from it, so every run draws the same. */
void t_rnd_seed(uint64_t seed);
uint64_t t_rnd(void);
double t_rnd01(void); /* uniform on [0, 1) */

/* A deterministic byte pattern: t_fill writes it, t_check compares. */
void t_fill(void *p, uint64_t n, unsigned seed);
bool t_check(const void *p, uint64_t n, unsigned seed);

void t_sleep_ms(long ms);
/* CLOCK_MONOTONIC in nanoseconds. */
uint64_t t_now_ns(void);

/* Open fds of this process (for before/after leak checks). */
int t_count_fds(void);

/* The store's stats through c (size and version filled in); fails the
 * test if the call fails. */
ss_stats t_store_stats(ss_client *c);

/* Wait until the store c talks to counts n clients (a disconnect is
 * handled by the store's loop after ss_disconnect returns): bounded, not
 * timed; fails the test if it never does. */
void t_wait_clients(ss_client *c, uint64_t n);

/* Options for an embedded store where "does not fit" is visible: cap_mb
 * MiB of capacity, no pool, no hugepages, no eviction, no spilling, and
 * create_timeout (SEALSTORE_CREATE_TIMEOUT) for a create that does not
 * fit. 0, or -1 when an option was refused. */
int t_tight_store_options(unsigned cap_mb, const char *create_timeout);

/* Temporary directory for this test program (removed at exit). When it
 * cannot be made the program exits 99 (an environment error, never a
 * skip), so the result is never NULL. */
const char *t_tmpdir(void);

/* A store embedded in this process for a whole test group (cmocka group
 * setup and teardown): t_embed_setup connects with SS_CONNECT_EMBED at
 * <t_tmpdir()>/store.sock, kept in t_embed_path, and leaves the host
 * handle in t_embed; t_embed_teardown disconnects it, which stops the
 * store. Options set before the setup apply to that store. */
/* Can a process read another's memory here at all (process_vm_readv,
 * pidfd_open, pidfd_send_signal)? Not under valgrind, or on kernels built
 * without them (ENOSYS): cases that need the store to read its clients
 * skip then, with the reason. */
bool t_remote_reads_work(void);
/* Running under valgrind (its preload is in LD_PRELOAD)? A forked child
 * that maps memory there trips an assertion of valgrind's own (mmap in
 * a child of a threaded process): cases that need such children leave
 * them out, saying so. */
bool t_under_valgrind(void);

/* T_TSAN: defined in a ThreadSanitizer build (gcc or clang), where a child
 * forked from a threaded process cannot start threads. */
#if defined(__SANITIZE_THREAD__)
#define T_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define T_TSAN 1
#endif
#endif

extern ss_client *t_embed;
extern char t_embed_path[108];
int t_embed_setup(void **state);
int t_embed_teardown(void **state);

#endif /* SEALSTORE_TESTS_T_HELPERS_H */
