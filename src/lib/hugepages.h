/* SPDX-License-Identifier: MIT */
/*
 * The kernel's hugetlb pools: reading them, telling whether an operator
 * configured them, and reserving pages for the life of a process
 * (sealstored --reserve-hugepages, sealstore-bench --hugepages).
 *
 * A reservation raises nr_hugepages until `pages` pages are free and not
 * promised to a mapping, and remembers how many pages it added. Giving back
 * lowers nr_hugepages by exactly that many from whatever it is then, so
 * pages that someone else added or took meanwhile stay theirs (pages still
 * mapped when the pool shrinks become surplus pages, which the kernel frees
 * when they are unmapped). The counts are of persistent pages, nr_hugepages
 * less surplus_hugepages: that is what writing nr_hugepages sets, and a
 * raise turns the surplus pages in use into persistent ones first, which
 * the reservation counts as added too. Reading nr_hugepages alone would
 * count other processes' surplus pages, and writing back arithmetic on it
 * would keep them in the pool after they are unmapped. Two reservations that raise the same pool at the
 * same instant can race on the read-modify-write of nr_hugepages; sysfs
 * offers no atomic add, so callers that run concurrently serialise
 * themselves (the tests hold a lock file).
 *
 * The crash record (sealstored): a process killed by SIGKILL, or one that
 * crashes, cannot give back. Before it raises the pool it takes an flock on
 * a record file in its state directory, and after the raise it writes
 * there the page size, the pages added and the boot id; a clean give-back
 * empties the file. The next start takes the same lock (a live owner still
 * holds it: -EBUSY) and gives back what a record of this boot says was
 * added. A record from an earlier boot is discarded without touching the
 * pool: the boot rebuilt it from the kernel command line and sysctl.d.
 * The state directory, not the runtime directory, holds the record because
 * systemd removes RuntimeDirectory= whenever the unit stops, a crash
 * included: the record would vanish exactly when it is needed. The window
 * between the raise and the record write (one write and fsync) is the only
 * time a crash leaks the pages until the next boot.
 */
#ifndef SEALSTORE_SRC_LIB_HUGEPAGES_H
#define SEALSTORE_SRC_LIB_HUGEPAGES_H

#include "internal.h"

#include <limits.h>
#include <sys/types.h>

/* One pool as /sys/kernel/mm/hugepages/hugepages-<size>kB reports it. */
typedef struct ss__hpool {
    bool present; /* the kernel has this page size; the rest is 0 if not */
    uint64_t nr, free, resv, surplus, overcommit;
} ss__hpool;

ss__hpool ss__hpool_read(uint64_t page_size);

/* Pages free and not promised to a mapping: free - resv. */
uint64_t ss__hpool_avail(const ss__hpool *h);

/* Has the operator given this pool any pages (nr_hugepages or
 * nr_overcommit_hugepages above 0)? A pool left at 0 is a machine's
 * default, not a shortage. */
bool ss__hpool_configured(uint64_t page_size);

/*
 * A reservation. Fields are written by the owner's main thread before any
 * signal handler that calls ss__hp_give_back() is installed, and read by
 * that handler; give-back is async-signal-safe and idempotent.
 */
typedef struct ss__hp_reservation {
    uint64_t page_size; /* 2 MiB or 1 GiB */
    uint64_t before;    /* persistent pages before the raise */
    uint64_t after;     /* persistent pages after it (what the kernel granted) */
    uint64_t added;     /* pages this process added and will give back */
    pid_t owner;        /* only this process gives back (not a forked child) */
    int record_fd;      /* the locked crash record, or -1 */
} ss__hp_reservation;

void ss__hp_init(ss__hp_reservation *r);

/*
 * Make `pages` pages of `page_size` free (and unpromised) by raising the
 * pool by what is missing. 0 when they are free (nothing added if they
 * already were); -ENOMEM when the kernel granted fewer (what it granted is
 * kept and given back later); -ENOENT no such page size; -EACCES/-EPERM
 * not allowed to write the pool (not root). msg says what happened in
 * every case. With a record taken (ss__hp_record_take) the pages added are
 * written to it (a failure to write it is reported in msg, the pages stay).
 */
int ss__hp_reserve(ss__hp_reservation *r, uint64_t page_size, uint64_t pages, char *msg,
                   size_t len);

/* Give back what r added and empty its record. Async-signal-safe; a no-op
 * in any process but the owner, and after the first call. */
void ss__hp_give_back(ss__hp_reservation *r);

/*
 * Take the crash record at `path` (created 0600 when `create`): an flock
 * held until ss__hp_record_release() or exit. If it holds what a process of
 * this boot added and did not give back, give that back now and empty it.
 * Returns the pages given back (>= 0; msg says what happened, empty when
 * nothing), -EBUSY when a live process holds the record, -ENOENT when it
 * does not exist and !create, or another -errno.
 */
int ss__hp_record_take(ss__hp_reservation *r, const char *path, bool create, char *msg,
                       size_t len);
void ss__hp_record_release(ss__hp_reservation *r);

/*
 * Parse a --reserve-hugepages value: "SIZE" or "SIZE:PAGE", SIZE a size as
 * the options take it (bytes, K/M/G/T suffixes), PAGE "2M" (the default)
 * or "1G". SIZE is rounded up to whole pages. 0 or -EINVAL.
 */
int ss__hp_parse(const char *spec, uint64_t *page_size, uint64_t *pages);

#endif /* SEALSTORE_SRC_LIB_HUGEPAGES_H */
