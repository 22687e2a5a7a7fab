/* SPDX-License-Identifier: MIT */
/*
 * sealstore: a node-local shared-memory object store on sealed memfds.
 *
 * This is the only installed header. Conventions for every call below:
 *  - a call that can fail returns >= 0 on success and a negative errno on
 *    failure (liburing style); sealstore's own conditions use the codes
 *    SS_E_* below, outside the kernel's -1..-4095 range;
 *  - ss_strerror() turns any return value into a message;
 *  - the library never prints to stdout, never exits and never aborts
 *    because its caller made a mistake; log lines go to the sink set with
 *    ss_log_set_sink() (stderr by default, filtered by SEALSTORE_LOG).
 */
#ifndef SEALSTORE_H
#define SEALSTORE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#define SS_API __attribute__((visibility("default")))
#define SS_NODISCARD __attribute__((warn_unused_result))
#else
#define SS_API
#define SS_NODISCARD
#endif

/* ---------------------------------------------------------------- version */

#define SS_VERSION_MAJOR 0
#define SS_VERSION_MINOR 1
#define SS_VERSION_PATCH 0

/* The library's version at run time, as "MAJOR.MINOR.PATCH". Static storage. */
SS_API const char *ss_version(void);

/* ----------------------------------------------------------------- errors */

/*
 * sealstore's own error codes. Returned negated, like errno values
 * (e.g. `return -SS_E_VERSION;`). They sit far outside -1..-4095 so that
 * liburing-style IS_ERR tests and strerror() never confuse them.
 */
enum ss_error {
    SS_E_BASE = 30800,
    SS_E_VERSION = SS_E_BASE, /* shared-memory layout or protocol version mismatch */
    SS_E_PROTO,               /* malformed message from the peer */
    SS_E_SEALS,               /* a segment's seals are not what they must be */
    SS_E_CORRUPT,             /* internal invariant broken (a bug, reported) */
    SS_E_NOBACKING,           /* the required memory backing cannot be had */
    SS_E_LAST                 /* sentinel: one past the last code */
};

/*
 * Message for any return value: 0 and positive values give "success",
 * -errno gives the C library's text, -SS_E_* gives sealstore's text, and
 * anything else "unknown error". Never NULL; static storage, thread-safe.
 */
SS_API const char *ss_strerror(int err);

/* ----------------------------------------------------- capability query */

/* Bits returned by ss_get_support(): what this kernel and machine offer. */
#define SS_SUPPORT_MEMFD_SEAL     (1u << 0) /* memfd_create + F_ADD_SEALS */
#define SS_SUPPORT_NOEXEC_SEAL    (1u << 1) /* MFD_NOEXEC_SEAL (Linux >= 6.3) */
#define SS_SUPPORT_FUTURE_WRITE   (1u << 2) /* F_SEAL_FUTURE_WRITE (Linux >= 5.1) */
#define SS_SUPPORT_HUGETLB_2M     (1u << 3) /* 2 MiB hugetlb pool has pages now */
#define SS_SUPPORT_HUGETLB_1G     (1u << 4) /* 1 GiB hugetlb pool has pages now */
#define SS_SUPPORT_THP_SHMEM      (1u << 5) /* shmem THP usable (shmem_enabled not never/deny) */
#define SS_SUPPORT_POPULATE_WRITE (1u << 6) /* MADV_POPULATE_WRITE (Linux >= 5.14) */
#define SS_SUPPORT_NUMA_BIND      (1u << 7) /* hwloc can bind memory on this system */
#define SS_SUPPORT_URING          (1u << 8) /* io_uring can be set up */

/*
 * Probe the running kernel (not the build host) and return SS_SUPPORT_* bits.
 * The hugetlb bits reflect the pools at the time of the call. Never fails.
 */
SS_API unsigned ss_get_support(void);

/* ---------------------------------------------------------------- options */

/*
 * Every tunable is a SEALSTORE_<NAME> environment variable, and also an
 * option settable through this API. Precedence: ss_option_set() beats the
 * environment, which beats the built-in default. The environment is read
 * once, on first use of any option. A bad environment value logs one
 * warning and keeps the default.
 *
 * The list is generated from one table (src/lib/options.h); README.md
 * documents every entry, and a test keeps the two in step.
 */
typedef enum ss_option {
    SS_OPT_SOCKET,            /* SEALSTORE_SOCKET: socket path */
    SS_OPT_CAPACITY,          /* SEALSTORE_CAPACITY: resident object bytes */
    SS_OPT_HUGEPAGES,         /* SEALSTORE_HUGEPAGES: auto|1G|2M|thp|off */
    SS_OPT_NUMA,              /* SEALSTORE_NUMA: local|interleave|node:N|off */
    SS_OPT_SPILL_DIR,         /* SEALSTORE_SPILL_DIR */
    SS_OPT_LOG,               /* SEALSTORE_LOG: error|warn|info|debug */
    SS_OPT_POOL_SIZE,         /* SEALSTORE_POOL_SIZE: bytes of ready segments */
    SS_OPT_POOL_CLASSES,      /* SEALSTORE_POOL_CLASSES: segment size classes */
    SS_OPT_SMALL_SEGMENT,     /* SEALSTORE_SMALL_SEGMENT: small-object segment size */
    SS_OPT_SMALL_MAX,         /* SEALSTORE_SMALL_MAX: largest small object */
    SS_OPT__COUNT             /* sentinel */
} ss_option;

/*
 * Set option `opt` from its text form, exactly as the environment variable
 * would carry it ("64G", "2M", "node:1", ...). Takes effect for stores and
 * clients started afterwards. Thread-safe.
 * Returns 0, -EINVAL for an unknown option or a value that does not parse
 * (the option keeps its previous value), -ERANGE for a size out of range.
 */
SS_API SS_NODISCARD int ss_option_set(ss_option opt, const char *value);

/*
 * Write the option's current value, in its canonical text form, to
 * `buf` (NUL-terminated). Returns the length of the full text (like
 * snprintf: a return >= len means it was truncated), or -EINVAL for an
 * unknown option or a NULL buf with a non-zero len.
 */
SS_API int ss_option_get(ss_option opt, char *buf, size_t len);

/*
 * The option's environment variable name ("SEALSTORE_CAPACITY"), or NULL
 * for an unknown option. Static storage.
 */
SS_API const char *ss_option_name(ss_option opt);

/* Look an option up by its environment name; -EINVAL if there is none. */
SS_API int ss_option_lookup(const char *env_name);

/* ---------------------------------------------------------------- logging */

enum ss_log_level {
    SS_LOG_ERROR = 0,
    SS_LOG_WARN = 1,
    SS_LOG_INFO = 2,
    SS_LOG_DEBUG = 3,
};

/*
 * Where log lines go. `line` is one message without a trailing newline,
 * already prefixed "sealstore: ". Called only for levels at or below
 * SEALSTORE_LOG; may be called from any thread, so it must be thread-safe.
 */
typedef void (*ss_log_sink)(int level, const char *line, void *arg);

/*
 * Install a sink, or restore the default (stderr) with NULL. Returns 0.
 * Thread-safe; lines already being formatted may still reach the old sink.
 */
SS_API int ss_log_set_sink(ss_log_sink sink, void *arg);

#ifdef __cplusplus
}
#endif

#endif /* SEALSTORE_H */
