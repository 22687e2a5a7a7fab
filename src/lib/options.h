/* SPDX-License-Identifier: MIT */
/*
 * Options: one X-macro list generates the option table, the --help-env text
 * and the test fixture. Every row is a SEALSTORE_<NAME> environment variable
 * and an ss_option_set() name. The row order must match enum ss_option in
 * sealstore.h (options.c checks this at compile time).
 *
 * Precedence: ss_option_set() > environment > default. The environment is
 * read once, lazily, on first access (pthread_once). A bad environment value
 * logs one warning and keeps the default.
 *
 * Row: X(ID, TYPE, DEFAULT, HELP)
 *   ID       suffix of SS_OPT_ and of SEALSTORE_
 *   TYPE     how the text is parsed (enum ss__opt_type)
 *   DEFAULT  default as text, parsed like any value (packagers may override
 *            SS_DEFAULT_<ID> at build time)
 *   HELP     one line for --help-env and the README table
 */
#ifndef SEALSTORE_SRC_LIB_OPTIONS_H
#define SEALSTORE_SRC_LIB_OPTIONS_H

#include "internal.h"

#include <stdio.h>

enum ss__opt_type {
    SS_OT_STRING,    /* any text up to PATH_MAX */
    SS_OT_SIZE,      /* bytes: integer with optional K/M/G/T (KiB.. also) suffix */
    SS_OT_HUGEPAGES, /* auto|1G|2M|thp|off */
    SS_OT_NUMA,      /* local|interleave|node:N|off */
    SS_OT_LOGLEVEL,  /* error|warn|info|debug */
    SS_OT_SIZELIST,  /* comma-separated sizes, ascending, at most SS_MAX_CLASSES */
    SS_OT_MS,        /* duration: integer with optional ms/s/m/h suffix (default ms) */
    SS_OT_BOOL,      /* 1/0, true/false, yes/no, on/off */
    SS_OT_US,        /* short duration: integer with optional us/ms/s suffix (default
                        us), at most 1s; or auto (SS_SPIN_AUTO: busy polling) */
};

#ifndef SS_DEFAULT_POOL_SIZE
#define SS_DEFAULT_POOL_SIZE "256M"
#endif
#ifndef SS_DEFAULT_POOL_CLASSES
#define SS_DEFAULT_POOL_CLASSES "1M,4M,16M,64M,256M"
#endif
#ifndef SS_DEFAULT_SMALL_SEGMENT
#define SS_DEFAULT_SMALL_SEGMENT "4M"
#endif
/* The inline limit: objects up to it travel inside the PUT/SEAL message and
 * the store copies them into a small segment; larger ones get a segment of
 * their own. Measured (ss_put p50, one CPU, embedded store): inline 7.9 us
 * at 1 KiB, 9.9 us at 16 KiB, 12.4 us at 64 KiB; through an object segment
 * 53 us at 4 KiB and 95 us at 64 KiB. Inline wins at every size up to the
 * cap, which comes from the message size (SS_PROTO_MAX_INLINE: the socket
 * buffers hold two messages) and the allocator's slabs, so the default is
 * the cap. */
#ifndef SS_DEFAULT_SMALL_MAX
#define SS_DEFAULT_SMALL_MAX "64K"
#endif

/* Copy-on-seal creates (doc/design.md section 4a): a create above the
 * small limit up to this size is written into a warm staging area of its
 * creator's and copied into the store's arena at seal, instead of a fresh
 * per-object segment written in place (a page fault per 4 KiB page). On
 * 4 KiB pages staging won at every size the probe tried (64 KiB to
 * 64 MiB: doc/arena-probe.md), so the default covers every object up to
 * 64 MiB; when arenas are on 2 MiB pages the store stages up to 4 MiB at
 * most, where writing a fresh hugetlb segment in place starts to win. */
#ifndef SS_DEFAULT_STAGE_MAX
#define SS_DEFAULT_STAGE_MAX "64M"
#endif

/* Client side: large objects' segments a handle keeps mapped after their
 * last release (client_int.h, kept segments). 64M: a repeated get+release
 * of objects up to 64 MiB maps nothing, while a handle's mappings of
 * objects deleted elsewhere (memory the kernel holds beyond the store's
 * capacity until the handle drops them) stay bounded. */
#ifndef SS_DEFAULT_MAP_CACHE
#define SS_DEFAULT_MAP_CACHE "64M"
#endif

/* Copy workers for puts into arenas (copy.h): 8, and never more than the
 * online CPUs (the store caps it there), so the default is min(CPUs, 8). */
#ifndef SS_DEFAULT_COPY_THREADS
#define SS_DEFAULT_COPY_THREADS "8"
#endif

#define SS_OPTIONS(X)                                                          \
    X(SOCKET, SS_OT_STRING, "",                                                \
      "socket path; empty: $XDG_RUNTIME_DIR/sealstore.sock, else "            \
      "sealstore.sock in a per-user 0700 directory under /tmp")                \
    X(CAPACITY, SS_OT_SIZE, "0",                                               \
      "resident object memory in bytes (K/M/G/T suffixes); 0: half of RAM")   \
    X(HUGEPAGES, SS_OT_HUGEPAGES, "auto",                                      \
      "auto (best available, falling back), 1G, 2M, thp or off; an explicit " \
      "size is required and fails when it cannot be had")                     \
    X(NUMA, SS_OT_NUMA, "local",                                               \
      "local (node of the creating client), interleave, node:N or off")       \
    X(SPILL_DIR, SS_OT_STRING, "",                                             \
      "where objects are spilled when memory is short; each store uses its "  \
      "own subdirectory store-<hash of its socket path> (mode 0700), so a "   \
      "store restarted on the same socket finds its objects again; empty: "   \
      "$TMPDIR/sealstore-UID-spill if TMPDIR is set, else "                   \
      "/var/tmp/sealstore-UID; off: no spilling")                             \
    X(LOG, SS_OT_LOGLEVEL, "warn", "error, warn, info or debug")               \
    X(POOL_SIZE, SS_OT_SIZE, SS_DEFAULT_POOL_SIZE,                             \
      "bytes of ready, pre-faulted object segments the populator keeps; 0 "   \
      "disables it")                                                           \
    X(POOL_CLASSES, SS_OT_SIZELIST, SS_DEFAULT_POOL_CLASSES,                   \
      "segment size classes the populator prepares, ascending")               \
    X(SMALL_SEGMENT, SS_OT_SIZE, SS_DEFAULT_SMALL_SEGMENT,                     \
      "size of each small-object segment the small allocator carves")         \
    X(SMALL_MAX, SS_OT_SIZE, SS_DEFAULT_SMALL_MAX,                             \
      "largest object stored in small-object segments (at most 64K)")         \
    X(CREATE_TIMEOUT, SS_OT_MS, "10s",                                         \
      "how long a create that does not fit waits for memory before -ENOSPC")  \
    X(EVICT, SS_OT_BOOL, "off",                                                \
      "drop least-recently-used unreferenced objects when memory is short, "  \
      "instead of spilling them (off: objects are never dropped)")            \
    X(SOCKET_GROUP, SS_OT_STRING, "",                                          \
      "group allowed to connect (socket mode 0660); empty: owner only (0600)") \
    X(SPILL_HIGH, SS_OT_STRING, "90%",                                         \
      "spill unreferenced objects ahead of demand while memory in use is "    \
      "above this mark (a percentage of SEALSTORE_CAPACITY or a size), down " \
      "to 5% of capacity below it; 0: spill every unreferenced object; off: " \
      "spill only when a create does not fit")                                \
    X(SPILL_QUEUE_DEPTH, SS_OT_SIZE, "8",                                      \
      "spill and restore I/Os kept in flight (1 to 256)")                     \
    X(MAP_CACHE, SS_OT_SIZE, SS_DEFAULT_MAP_CACHE,                             \
      "client side: bytes of large objects' segments a client handle keeps "  \
      "mapped after their last release (at most 16 segments and 1/8 of the "  \
      "store's capacity), so that a get of one again maps nothing; a larger " \
      "segment is kept too while the store's index says an object in it is "  \
      "sealed (the store holds it anyway); 0: none (but those)")              \
    X(LOCAL_GETS, SS_OT_BOOL, "off",                                           \
      "client side: a get of an object the handle already holds is answered " \
      "by the handle, without asking the store (tens of millions per "        \
      "second instead of a round trip), but it then returns the held object " \
      "even if another client deleted it since; off: every get asks the "     \
      "store")                                                                 \
    X(COPY_THREADS, SS_OT_SIZE, SS_DEFAULT_COPY_THREADS,                       \
      "threads that copy large puts into the store's memory, at most the "    \
      "number of online CPUs (at most 64); 0: the store's loop thread "       \
      "copies")                                                                \
    X(BUSY_POLL, SS_OT_US, "auto",                                             \
      "how long the store's loop and a client waiting for a reply spin, "      \
      "polling, before they sleep: auto (50us while spins find their event, " \
      "backing off while they do not; never with one CPU), microseconds "      \
      "(us/ms/s suffixes, at most 1s) at every wait, or 0: never spin")        \
    X(STAGE_MAX, SS_OT_SIZE, SS_DEFAULT_STAGE_MAX,                             \
      "largest create written into a staging area of the creator's and "      \
      "copied into the store's memory at seal (at most 4M when the store is " \
      "on 2 MiB pages); larger ones are written in place; each client's "     \
      "areas hold at most twice this (and all clients' a quarter of the "     \
      "capacity); 0: none")                                                    \
    X(INDEX_GETS, SS_OT_BOOL, "on",                                            \
      "client side: a get of a sealed object whose memory the handle has "    \
      "mapped already is served from the store's shared index with a pin "    \
      "the store sees, without a round trip (millions per second); off: "     \
      "every get asks the store")                                          \
    X(TRUST_PRODUCERS, SS_OT_BOOL, "off",                                      \
      "trusted-producer mode: a create above SEALSTORE_SMALL_MAX up to "      \
      "SEALSTORE_STAGE_MAX (64M also on 2 MiB pages) is written in place "    \
      "into memory its creator keeps mapped and reuses, with no copy; "       \
      "readers stay read-only, but a producer could still write its own "     \
      "objects after their seal; off: the store copies them in")

#define SS_MAX_CLASSES 32

enum ss__hugepages { SS_HP_AUTO, SS_HP_1G, SS_HP_2M, SS_HP_THP, SS_HP_OFF };

enum ss__numa_mode { SS_NUMA_LOCAL, SS_NUMA_INTERLEAVE, SS_NUMA_NODE, SS_NUMA_OFF };
typedef struct ss__numa_policy {
    int mode; /* enum ss__numa_mode */
    int node; /* for SS_NUMA_NODE */
} ss__numa_policy;

typedef struct ss__sizelist {
    unsigned n;
    uint64_t v[SS_MAX_CLASSES];
} ss__sizelist;

/* Typed readers. They read the environment on first use. Thread-safe. */
uint64_t ss__opt_size(ss_option opt);              /* SS_OT_SIZE */
int ss__opt_hugepages(void);                       /* enum ss__hugepages */
ss__numa_policy ss__opt_numa(void);
int ss__opt_loglevel(void);                        /* enum ss_log_level */
ss__sizelist ss__opt_sizelist(ss_option opt);      /* SS_OT_SIZELIST */
int64_t ss__opt_ms(ss_option opt);                 /* SS_OT_MS, milliseconds */
int64_t ss__opt_us(ss_option opt);                 /* SS_OT_US, microseconds */
bool ss__opt_bool(ss_option opt);                  /* SS_OT_BOOL */
#define SS_HAVE_STORE_OPTIONS 1
/* Copy a string option into buf (NUL-terminated); returns its full length. */
size_t ss__opt_string(ss_option opt, char *buf, size_t len);

/* Parsers, exposed for tests and for the daemon's flags. 0 or -EINVAL/-ERANGE. */
int ss__parse_size(const char *s, uint64_t *out);
int ss__parse_hugepages(const char *s, int *out);
int ss__parse_numa(const char *s, ss__numa_policy *out);
int ss__parse_loglevel(const char *s, int *out);
int ss__parse_sizelist(const char *s, ss__sizelist *out);
int ss__parse_ms(const char *s, int64_t *out);
int ss__parse_us(const char *s, int64_t *out);
int ss__parse_bool(const char *s, bool *out);

/* Parse SEALSTORE_SPILL_HIGH against a capacity: 0 and *bytes, 1 for
 * "off", -EINVAL. */
int ss__spill_parse_high(const char *text, uint64_t capacity, uint64_t *bytes);

/*
 * The daemon's strict check of one value for a row: what ss_option_set()
 * parses, plus the row's documented range (SMALL_MAX at most 64K,
 * SPILL_QUEUE_DEPTH 1 to 256, COPY_THREADS 0 to 64, SPILL_HIGH N%, a size
 * or off), which the
 * library applies only when a store starts, with a warning and a fallback.
 * Returns 0, or -EINVAL/-ERANGE with a one-line reason in why (len > 0).
 */
int ss__option_check(ss_option opt, const char *value, char *why, size_t len);

/* Print the --help-env text: one block per option, generated from the table. */
void ss__options_help(FILE *f);

/* Tests only: forget ss_option_set() values and read the environment again. */
void ss__options_reset(void);

#endif /* SEALSTORE_SRC_LIB_OPTIONS_H */
