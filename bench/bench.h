/* SPDX-License-Identifier: MIT */
/*
 * sealstore-bench's framework, shared by its files:
 *   sealstore-bench.c  main, the option and scenario tables, the header,
 *                      samples and figures, reporting, run_reps()
 *   bench-machine.c    machine facts, backings (memfds by hand), and the
 *                      memoized baselines with the "baseline" scenario
 *   bench-mem.c        scenarios on the memory layer: segment, pool, alloc
 *   bench-store.c      the store: connection (embedded or --socket), put, get,
 *                      batch, seal, memory per object
 *   bench-proc.c       multi-process store scenarios: e2e, clients
 *   bench-spill.c      spill and restore under memory pressure
 *   bench-plot.c       --plot: throughput against size, drawn with gnuplot
 *
 * Per-operation figures (bench-store.c, bench-proc.c, the IPC baselines)
 * run through run_ops(): the op function times its own critical part and
 * returns the nanoseconds; run_ops() cuts --duration into reps slices (each
 * at least one op) after a warm-up slice, and files ops/s per slice and the
 * latency of every op. Baselines per object size are memoized in a memo.
 *
 * A new scenario: write `void run_x(struct bench *b)` in a bench-*.c file,
 * declare it below, add a row to scenarios[] in sealstore-bench.c. In it, run
 * reps with run_reps(), turn samples into figures with fig_set() or
 * fig_skip(), file rows with report() (baselines from bl_*() or another
 * figure) and end with print_table().
 */
#ifndef SEALSTORE_BENCH_BENCH_H
#define SEALSTORE_BENCH_BENCH_H

#include "internal.h"

#include <inttypes.h>
#include <sched.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <sys/types.h>
#include <time.h>

#include "hugepages.h"
#include "segment.h"

#define PROG "sealstore-bench"
#define SKIP 1 /* a rep function's "this cannot run here" (reason in why) */
#define MAX_ROWS 256
#define WHY_LEN 200
#define MAX_SIZES 16 /* --sizes entries */
#define MEMO_MAX 24  /* distinct sizes a per-size baseline is measured at */

/* ---------------------------------------------------------------- basics */

extern bool g_tty; /* progress on stderr only when someone watches it */

void progress(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void progress_clear(void);
/* Print "sealstore-bench: <msg>: <ss_strerror(rc)>" (rc 0: no suffix), exit 1. */
void die_rc(int rc, const char *fmt, ...) __attribute__((noreturn, format(printf, 2, 3)));
/* Print the message and "(try --help)", exit 2. */
void usage_error(const char *fmt, ...) __attribute__((noreturn, format(printf, 1, 2)));
void *xcalloc(size_t n, size_t sz);
const char *fmt_size(uint64_t v, char *buf, size_t len); /* "64M", "1G", "4097" */

/* A failed call that is not a stated skip ends the run: the numbers after
 * it would be measured on a machine in an unknown state. */
#define CK(expr)                                                              \
    do {                                                                      \
        int ck_rc_ = (expr);                                                  \
        if (ck_rc_ < 0)                                                       \
            die_rc(ck_rc_, "%s", #expr);                                      \
    } while (0)

static inline uint64_t now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* Keeps the compiler from dropping stores nobody reads back. */
static inline void clobber(void *p)
{
    __asm__ volatile("" : : "r"(p) : "memory");
}

/* bytes per ns is GB/s (1e9 B/s) */
static inline double gbps(uint64_t bytes, uint64_t ns)
{
    return ns ? (double)bytes / (double)ns : NAN;
}

/* --------------------------------------------------- samples and figures */

struct samples {
    double *v;
    size_t n, cap;
    bool sorted;
};

void samples_add(struct samples *s, double x);
void samples_free(struct samples *s);
double samples_pct(struct samples *s, double p); /* 0..100, interpolated */

/* One measured quantity: statistics of its samples, or why it was skipped. */
struct fig {
    bool done; /* measured or skipped (baselines are memoized on this) */
    int n;     /* samples; 0 when skipped */
    double med, min, max, p99;
    char skip[WHY_LEN];
    char note[120];
};

void fig_set(struct fig *f, struct samples *s);
void fig_skip(struct fig *f, const char *why);
bool fig_ok(const struct fig *f);
/* out = in x k (k > 0): ops/s to GB/s, a rate halved for two round trips */
void fig_scale(const struct fig *in, double k, struct fig *out);

/* What an op-rate measurement gives: ops/s per slice (median, min, max)
 * and per-op latency in microseconds (p50 = med, p99). */
struct opfig {
    struct fig ops, us;
};

/* Figures per object size, measured once per run (baselines). */
struct memo {
    int n;
    uint64_t size[MEMO_MAX];
    struct opfig f[MEMO_MAX];
};
/* The slot for `size`, added (not done) when new; NULL if the memo is full. */
struct opfig *memo_at(struct memo *m, uint64_t size);

/* ------------------------------------------------------------- the bench */

struct row {
    char figure[48];
    char metric[40];
    char backing[8];
    char unit[8];
    uint64_t size; /* bytes the figure is about; 0: not applicable */
    int clients;
    int n;
    double value, min, max;
    char baseline[48];
    double base, ratio; /* NaN: none */
    char skip[WHY_LEN];
    char note[120];
};

struct bench {
    /* options, as parsed */
    bool quick;
    int reps_opt; /* 0: not given */
    const char *json_path;
    unsigned long sel; /* bit i: scenarios[i] */
    /* derived settings (settle()) */
    int reps;
    uint64_t bw_region;   /* memset/memcpy buffers: well beyond the caches */
    uint64_t region;      /* bytes per baseline fill (1G backing: one page) */
    uint64_t seg_size;    /* segment scenario */
    uint64_t pool_budget; /* pool scenario */
    unsigned alloc_live;  /* small allocator: live objects */
    unsigned alloc_ops;   /* small allocator: free+alloc pairs per rep */
    /* store scenarios (bench-store.c) */
    bool smoke;              /* hidden --smoke: make check's tiny run */
    const char *socket_opt;  /* --socket: a running store; NULL: embedded */
    const char *plot_path;   /* --plot FILE.png */
    uint64_t sizes[MAX_SIZES]; /* put/get object sizes (--sizes) */
    int nsizes;
    int clients_opt;         /* --clients N; 0: not given */
    long hugepages_opt;      /* --hugepages N: 2 MiB pages to make free; 0: none */
    char hugepages_msg[200]; /* what --hugepages did */
    double duration_opt;     /* --duration seconds; 0: not given */
    int clients;             /* most producer (and consumer) processes */
    uint64_t duration_ns;    /* per ops/s measurement */
    uint64_t e2e_sizes[2], seal_sizes[3], cl_sizes[2];
    unsigned batch_n;        /* ids per batched ss_get */
    struct store_ctx *st;    /* NULL until store_open() */
    FILE *json;
    /* the scenario running */
    const char *scenario;
    struct row rows[MAX_ROWS];
    int nrows;
    /* memoized baselines (bench-machine.c) */
    struct fig bl_memset, bl_memset0, bl_memcpy;
    struct fig bl_memcpy_at[MAX_SIZES]; /* bl_memcpy_sized, by --sizes index */
    struct fig bl_touch[SS_BACKING__COUNT]; /* first-touch memset of a fresh memfd */
    struct fig bl_zero[SS_BACKING__COUNT];  /* MADV_POPULATE_WRITE of a fresh memfd */
    struct opfig bl_rtt;                    /* bare SOCK_SEQPACKET 64 B round trip */
    uint64_t bl_rtt_at;                     /* when it was measured (now_ns) */
    struct opfig bl_rtt1;                   /* the same, both ends on one CPU */
    struct memo bl_shm_w, bl_shm_r;         /* /dev/shm file per object */
    struct memo bl_sock;                    /* socket copy (one way) */
    /* --plot: GB/s per entry of sizes[] (NaN: not measured) */
    struct {
        double put_warm, put_cold, get, shm_w, shm_r, sock;
        double shape[3]; /* ss_put, ss_putv, create+memset+seal (put_shapes) */
    } plot[MAX_SIZES];
};

/* ------------------------------------------------------------- reporting */

enum { ST_MEDIAN, ST_P99 };

/* What report() files: value = the figure's median (or p99); the baseline is
 * another figure's median (or p99), or bl_value when bl is NULL. The ratio
 * is value / baseline. */
struct rowspec {
    const char *figure, *metric, *backing, *unit;
    uint64_t size;
    int clients; /* 0: 1 */
    const struct fig *f;
    int stat;
    const char *bl_name;
    const struct fig *bl;
    int bl_stat;
    double bl_value;
};

/* File a row: JSON at once, the human table at print_table(). */
void report(struct bench *b, const struct rowspec *rs);
/* Print the scenario's table and start a new one. */
void print_table(struct bench *b, const char *title);

/* ------------------------------------------------------------------ reps */

/*
 * One repetition. rep is -1 for the warm-up (the function must not file its
 * samples), else 0..reps-1. Returns 0, or SKIP with the reason in why
 * (WHY_LEN bytes); failures that are not skips die inside.
 */
typedef int (*rep_fn)(struct bench *b, void *arg, int rep, char *why);

/* One unmeasured warm-up rep, then `reps` measured ones. 0 or SKIP. */
int run_reps(struct bench *b, const char *label, int reps, rep_fn fn, void *arg, char *why);

/* One operation, op number i (from 0, across slices, warm-up included).
 * Returns the nanoseconds of its timed part (setup and cleanup such as a
 * delete stay outside); failures die inside. */
typedef uint64_t (*op_fn)(struct bench *b, void *arg, uint64_t i);

/* A warm-up slice, then b->reps slices of duration_ns / reps wall time,
 * each running at least min_ops ops (>= 1). Fills *out. */
void run_ops(struct bench *b, const char *label, uint64_t duration_ns, unsigned min_ops,
             op_fn fn, void *arg, struct opfig *out);
/* The same, with fn2 measured into *out2 in the first half of every
 * slice and fn in the second: two operations under the same conditions. */
void run_ops_pair(struct bench *b, const char *label, uint64_t duration_ns, unsigned min_ops,
                  op_fn fn, void *arg, struct opfig *out, op_fn fn2, void *arg2,
                  struct opfig *out2);

/* ------------------------------------------ machine facts (bench-machine.c) */

int read_text(const char *path, char *buf, size_t len); /* trailing newline cut */
const char *sysfs_mode(const char *path, char *buf, size_t len); /* the [word] */
const char *thp_shmem_mode(char *buf, size_t len);
long meminfo_kb(const char *file, const char *field); /* -1: not found */
long smaps_kb(const void *addr, const char *field);   /* -errno: not found */

/* --hugepages N: make N 2 MiB pages free by raising the pool (root), and
 * give back what was added at exit or on SIGINT/SIGTERM/SIGHUP. 0 or
 * -errno; msg says what happened either way. */
int hugepages_reserve(uint64_t want, char *msg, size_t msglen);
void hugepages_give_back(void);

/* --------------------------------------------- backings (bench-machine.c) */

struct backing_desc {
    const char *name;
    uint64_t page;
    unsigned mfd_flags;
    bool madv_huge; /* huge folios need an MADV_HUGEPAGE mapping under "advise" */
    int policy;     /* enum ss__hugepages that forces this backing */
};
extern const struct backing_desc backings[SS_BACKING__COUNT];

static inline bool is_hugetlb(int bk)
{
    return bk == SS_BACKING_2M || bk == SS_BACKING_1G;
}

/* Could backing bk hold `bytes` now? If not, why says what to change. */
bool backing_usable(int bk, uint64_t bytes, char *why);
uint64_t region_for(const struct bench *b, int bk); /* bytes of a baseline fill */

struct fresh {
    int fd;
    void *p;
    uint64_t len;
};
/* A fresh memfd of backing bk, mapped RW shared (THP: advised). 0 or SKIP. */
int fresh_map(int bk, uint64_t len, struct fresh *m, char *why);
void fresh_unmap(struct fresh *m);
void thp_note(int bk, const struct fresh *m, struct fig *f);

/* ------------------------------------------- baselines (bench-machine.c) */

const struct fig *bl_memset(struct bench *b);
const struct fig *bl_memset_zeros(struct bench *b);
const struct fig *bl_memcpy(struct bench *b);
/* memcpy in calls of `size` bytes (one of --sizes) through the streaming
 * region (or one call, if size is larger): the copy a caller of that size
 * makes, whose speed depends on the call's size (the C library switches
 * strategies with it). Other sizes: bl_memcpy. */
const struct fig *bl_memcpy_sized(struct bench *b, uint64_t size);
const struct fig *bl_touch(struct bench *b, int bk); /* first-touch memset */
const struct fig *bl_zero(struct bench *b, int bk);  /* MADV_POPULATE_WRITE */
/* Microseconds the kernel needs to zero `bytes` of bk (NaN if skipped). */
double zero_us(struct bench *b, int bk, uint64_t bytes);

/* IPC and naive-alternative baselines (bench-machine.c). */
/* 64 B SOCK_SEQPACKET ping-pong between two processes; measured again when
 * the last measurement is more than RTT_MAX_AGE_S old (see bench-machine.c) */
const struct opfig *bl_rtt(struct bench *b);
const struct opfig *bl_rtt_one_cpu(struct bench *b); /* both pinned to one CPU */
/* Set every thread of this process (the embedded store's included) to
 * `set`; old (if non-NULL) gets the caller's mask first. 0 or -errno. */
int pin_process(const cpu_set_t *set, cpu_set_t *old);
/* run_ops of fn with a bare round trip (a req-byte request, 64-byte
 * reply: what the store call sends) measured in half of every slice, into
 * *rtt: the baseline under the same vCPU state as the ops. */
void run_ops_rtt(struct bench *b, const char *label, uint64_t duration_ns, unsigned min_ops,
                 op_fn fn, void *arg, struct opfig *out, struct opfig *rtt, size_t req);
/* shm_open+ftruncate+mmap+memcpy+munmap+close of a new /dev/shm file */
const struct opfig *bl_shm_write(struct bench *b, uint64_t size);
/* shm_open(O_RDONLY)+fstat+mmap+munmap+close of an existing file */
const struct opfig *bl_shm_read(struct bench *b, uint64_t size);
/* `size` bytes through a Unix stream socket to another process, until its
 * buffer holds them all (one way, no pipelining) */
const struct opfig *bl_sock(struct bench *b, uint64_t size);
/* an ops/s figure as GB/s of `size`-byte objects */
void fig_gbps(const struct opfig *o, uint64_t size, struct fig *out);
/* the faulted source of every fill: b->sizes' largest, pre-faulted */
const void *src_buf(uint64_t size);
/* plot slot of `size` in b->sizes, or -1 */
int size_index(const struct bench *b, uint64_t size);

/* ------------------------------------------------------------- scenarios */

void run_baseline(struct bench *b); /* bench-machine.c */
void run_segment(struct bench *b);  /* bench-mem.c */
void run_pool(struct bench *b);
void run_alloc(struct bench *b);
void run_ipc(struct bench *b);      /* bench-machine.c */
void run_put(struct bench *b);      /* bench-store.c */
void run_get(struct bench *b);
void run_batch(struct bench *b);
void run_seal(struct bench *b);
void run_e2e(struct bench *b);      /* bench-proc.c */
void run_clients(struct bench *b);
void run_spill(struct bench *b);    /* bench-spill.c */

/* --------------------------------------------- the store (bench-store.c) */

/* Connect (embedded stores in a private temp dir, or --socket), wait for
 * the warm pool to fill, print the store's part of the header. Idempotent. */
void store_open(struct bench *b);
/* Disconnect; remove the temp dir. Safe to call twice; atexit runs it. */
void store_close(void);
/* The store summary printed after the last scenario. */
void store_summary(struct bench *b);
/* The path clients of the warm store connect to. */
const char *store_path(struct bench *b);
/* The bench's private temp dir ("" with --socket), and a file in it for the
 * signal handler to remove (a socket, its lock file). */
const char *store_dir(void);
void store_track_file(const char *path);
/* ss_stats_get(); dies on failure. */
ss_stats store_stats(ss_client *c);
/* An object id: a per-run tag, the stream (client/producer) and sequence. */
void make_id(ss_id *id, uint32_t stream, uint64_t seq);
/* ss_connect() for a forked child (no EMBED); dies on failure. */
ss_client *child_connect(struct bench *b);
/* Fork: the child runs fn(arg) and _exit()s with its return; the parent
 * gets the pid. stdout is flushed first. */
pid_t fork_child(int (*fn)(void *arg), void *arg);
/* waitpid; dies if the child failed. */
void reap(pid_t pid, const char *what);
/* Wait for all n children in any order; when one fails, kill the others
 * (they may wait for it forever), then die. */
void reap_all(const pid_t *pids, int n, const char *what);
/* A MAP_SHARED anonymous region for results from children. */
void *shared_alloc(size_t len);

/* --------------------------------------------- --plot (bench-plot.c) */

void plot_write(struct bench *b);

#endif /* SEALSTORE_BENCH_BENCH_H */
