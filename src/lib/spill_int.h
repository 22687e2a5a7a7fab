/* SPDX-License-Identifier: MIT */
/*
 * Internals of the spill engine, shared by its files and by nothing else
 * (the contract is spill.h). The files, top to bottom; each calls only the
 * ones below it:
 *   spill.c       the public face: open/close, write, read, delete, reap,
 *                 wait, stats, injection (the design essay opens it)
 *   spill_scan.c  the startup scan
 *   spill_job.c   jobs, the scheduler, the completion queue
 *   spill_ftab.c  the file table
 *   spill_io.c    ops: the io_uring, the submitter and worker threads
 *   spill_file.c  the format, names, the directory, the file reader
 * Names shared between them are ss__sp_* / SS_SP_* (ss__spill_* for the
 * format and directory helpers of spill_file.c). The threads and the
 * protocol between them are written beside struct ss__spill below.
 */
#ifndef SEALSTORE_SRC_LIB_SPILL_INT_H
#define SEALSTORE_SRC_LIB_SPILL_INT_H

#include "spill.h"

#include <liburing.h>
#include <pthread.h>
#include <stdatomic.h>

/* io_uring writes into our buffers behind valgrind's back: tell it the
 * bytes a read brought in are defined (a no-op elsewhere). */
#if defined(__has_include)
#if __has_include(<valgrind/memcheck.h>)
#include <valgrind/memcheck.h>
#define SS_SP_DEFINED(p, n) ((void)VALGRIND_MAKE_MEM_DEFINED((p), (n)))
#endif
#endif
#ifndef SS_SP_DEFINED
#define SS_SP_DEFINED(p, n) ((void)0)
#endif

/* ------------------------------------------------- spill_file.c */

/* Streaming XXH64: every update but the last must be a multiple of 32
 * bytes; the last one's bytes must stay valid until the digest. */
typedef struct ss__xxh64 {
    uint64_t v[4], total, seed;
    const uint8_t *tail;
    size_t tail_len;
} ss__xxh64;
void ss__xxh64_init(ss__xxh64 *st, uint64_t seed);
void ss__xxh64_update(ss__xxh64 *st, const void *p, size_t n);
uint64_t ss__xxh64_digest(const ss__xxh64 *st);

/* Fill a record header of the current version (hdr_hash computed, tomb 0). */
void ss__spill_rec_fill(ss__spill_rec *r, uint32_t flags, const ss_id *id, uint32_t uid,
                        uint32_t meta_size, uint64_t data_size, uint32_t data_off,
                        uint64_t rec_len, uint64_t seq, uint64_t data_hash,
                        uint64_t meta_hash);
/* The location of the object record r at offset off of file `file`. */
void ss__spill_rec_loc(const ss__spill_rec *r, uint64_t file, uint64_t off, ss__spill_loc *loc);
/* The creator's uid a checked record gives (SS_UID_UNKNOWN for version 1). */
uint32_t ss__spill_rec_uid(const ss__spill_rec *r);
/* Header self-check: 0, or -EBADMSG with *why set to a short reason. */
int ss__spill_rec_check(const ss__spill_rec *r, const char **why);

#define SS_SPILL_NAME_MAX 32
/* "<16 hex>.spill" or "<16 hex>.tmp" */
void ss__spill_name(char buf[SS_SPILL_NAME_MAX], uint64_t file, bool tmp);
/* 0 and the id for a spill or tmp file name, -EINVAL for anything else. */
int ss__spill_parse_name(const char *name, uint64_t *file, bool *tmp);

/* Create/check the directory and take its lock (see ss__spill_open). */
int ss__spill_dir_open(const char *path, int *dirfd, int *lockfd);
/* fn(arg, id, tmp, name) for every entry named like a spill or tmp file;
 * fn's negative return stops the listing and is returned. 0 or -errno. */
typedef int (*ss__spill_dir_fn)(void *arg, uint64_t id, bool tmp, const char *name);
int ss__spill_dir_each(int dirfd, ss__spill_dir_fn fn, void *arg);
/* O_DIRECT alignment usable in the directory, or 0 for buffered I/O. */
int ss__spill_dio_probe(int dirfd, uint32_t *align);

/*
 * Read one spill file synchronously and call fn for every good, live
 * object record (meta valid during the call); fn's negative return stops
 * the walk and is returned. Damage is logged and counted.
 *
 * Bounded: only a regular file is opened (O_NONBLOCK|O_NOFOLLOW, its type
 * checked before and after the open): anything else is -ENODEV, unread.
 * A record of an object of its own is checked by its header, meta and
 * length only (its data is checked when it is restored), so such a file
 * costs one small read whatever its size; fused records (at most
 * FUSED_REC_MAX bytes each) are read and checked whole. After a damaged
 * header the walk looks for the next good one for at most RESYNC_MAX
 * bytes; beyond that the rest of the file is reported lost, not read. A
 * record that claims more bytes than the file has is lost (truncated).
 *
 * ctl (may be NULL): ctl->stop set by another thread ends the walk at the
 * next record with -ECANCELED; ctl->bytes counts the bytes read.
 */
typedef struct ss__spill_walk_ctl {
    _Atomic bool stop;
    _Atomic uint64_t bytes;
} ss__spill_walk_ctl;
typedef int (*ss__spill_walk_fn)(void *arg, const ss__spill_loc *loc, const void *meta);
typedef struct ss__spill_walk_res {
    uint64_t size;     /* file bytes */
    uint64_t good;     /* good object records (live or dead) */
    uint64_t dead;     /* of which tombstoned */
    uint64_t damaged;  /* objects or regions lost */
    uint64_t max_seq;  /* highest seq of a good record */
    bool fused;        /* records say fused */
} ss__spill_walk_res;
int ss__spill_walk(int dirfd, const char *name, uint64_t file, uint32_t dio_align,
                   ss__spill_walk_ctl *ctl, ss__spill_walk_fn fn, void *arg,
                   ss__spill_walk_res *res);

/* ------------------------------------------------------ engine state */

#define SS_SP_DEF_QD 8                        /* queue_depth 0 */
#define SS_SP_MAX_QD 256                      /* queue_depth at most */
#define SS_SP_DEF_FUSED_CAP (64 * SS_MiB)     /* fused_cap 0 */
#define SS_SP_DEF_SMALL_MAX (64 * SS_KiB)     /* small_max 0 */
#define SS_SP_MAX_SMALL_MAX (1 * SS_MiB)      /* small_max at most */
#define SS_SP_DEF_CHUNK (1u * 1024 * 1024)    /* chunk 0 */
#define SS_SP_HASH_PIECE (8 * SS_MiB)         /* worker hashes this much per turn */
#define SS_SP_HASH_INLINE_MAX (256 * SS_KiB)  /* below: hash on the loop (~10 us) */
#define SS_SP_SPAN_MAX (256 * SS_KiB)         /* records up to this: one read */
#define SS_SP_SPAN_BUF (SS_SP_SPAN_MAX + 2 * SS_SP_BLK) /* a pooled buffer for such a read */
#define SS_SP_BATCH_MAX (8 * SS_MiB)          /* bytes of records per append */
#define SS_SP_CLOSE_WAIT_MS 60000             /* close waits this long for the disk */
#define SS_SP_PROCESS_BUDGET 64u              /* completions handled per reap call */
#define SS_SP_BLK ((uint64_t)SS_SPILL_BLOCK)  /* a block: O_DIRECT and batch granularity */
#define SS_SP_DEAD (1ull << 63)               /* in a file's recs[]: the record is deleted */

enum ss__sp_op_type {
    SS_SP_OP_WRITE, SS_SP_OP_READ,    /* data */
    SS_SP_OP_FSYNC, SS_SP_OP_DIRSYNC, /* sync */
    SS_SP_OP_OPEN, SS_SP_OP_UNLINK, SS_SP_OP_RENAME, SS_SP_OP_TRUNCATE, /* meta: worker */
    SS_SP_OP_HASH, SS_SP_OP_BUILD,
};

struct ss__sp_job;

/* One disk operation (or a piece of CPU work for a worker). The loop fills
 * it; while it is in flight (wq, a worker, the ring, wd) only the thread
 * running it touches res and what it points to; then it is the loop's
 * again (spill_io.c, the protocol beside struct ss__spill). */
struct ss__sp_op {
    struct ss__sp_op *next; /* the queue it is on */
    struct ss__sp_job *job; /* its job (carried, not followed, below the jobs);
                             * NULL for the directory fsync */
    uint8_t type;       /* SS_SP_OP_* */
    uint32_t part;      /* data: which xfer of the job */
    bool started;       /* issued once (counted in flight; injection counts first issues) */
    uint8_t retries;    /* data: -EAGAIN/-EINTR retries so far */
    int fd;             /* data, fsync, truncate: the file */
    uint8_t *buf;       /* data: the bytes */
    uint64_t off;       /* data: file offset; truncate: the new length */
    uint64_t len;       /* data: bytes */
    uint64_t done;      /* data: bytes transferred so far (short transfers resume) */
    uint64_t need;      /* reads: bytes that must arrive before end of file */
    uint64_t idx;       /* data: chunk index in its xfer (restore progress bits) */
    int64_t res;        /* the result: >= 0 (bytes, an fd) or -errno */
    int oflags;         /* open: flags */
    uint64_t prealloc;  /* open: fallocate this many bytes (0: none) */
    char name[SS_SPILL_NAME_MAX];  /* open, unlink, rename: the name */
    char name2[SS_SPILL_NAME_MAX]; /* rename: the new name */
    ss__xxh64 *hst;     /* hash: the state to update */
    const uint8_t *hp;  /* hash: the piece */
    uint64_t hlen;      /* hash: its bytes */
    uint64_t *hout;     /* hash: the last piece: the digest goes here */
    struct ss__sp_batch *batch; /* build: the batch to build */
};

/* A contiguous transfer, issued in chunks. */
struct ss__sp_xfer {
    uint8_t *buf;
    uint64_t off, len;
    uint64_t issued, completed;
    uint64_t need; /* single reads: bytes that must arrive before EOF */
    bool single;   /* one op whatever the chunk size */
    bool span;     /* buf comes from the span pool when first issued */
};

enum ss__sp_job_kind { SS_SP_J_LARGE, SS_SP_J_BATCH, SS_SP_J_READ, SS_SP_J_TOMB, SS_SP_J_UNLINK };
/* SS_SP_S_CLEANUP: a failed spill removes what it wrote (unlink, or truncate);
 * SS_SP_S_CLEANSYNC: then makes that durable (directory fsync, or fdatasync)
 * before the failure is reported (spill.h, ss__spill_done). */
enum ss__sp_job_state {
    SS_SP_S_OPEN, SS_SP_S_DATA, SS_SP_S_HDR, SS_SP_S_SYNC, SS_SP_S_RENAME, SS_SP_S_DIRSYNC,
    SS_SP_S_UNLINK, SS_SP_S_CLEANUP, SS_SP_S_CLEANSYNC
};

struct ss__sp_brec {    /* one small object in a batch */
    uint64_t cookie;    /* the write's */
    uint64_t off;       /* its record's offset in the batch */
    uint64_t size;      /* data bytes */
    uint64_t rec_len;   /* record bytes (a multiple of 128) */
    uint64_t seq;       /* its write sequence */
    uint32_t meta_size; /* meta bytes */
    uint32_t data_off;  /* data offset in the record */
    uint32_t meta_off;  /* its meta's offset in the batch's meta[] */
    ss_id id;           /* the object */
    uint32_t uid;       /* its creator */
    uint32_t rflags;    /* SS_SPILL_REC_BOUND or 0 */
    const uint8_t *src; /* the caller's bytes, copied when the batch is built */
};

/* Small objects gathered for one append: descriptors while they wait (the
 * loop copies nothing but meta), then built into buf by the worker right
 * before the write. */
struct ss__sp_batch {
    struct ss__sp_batch *next; /* the pending queue or the free list */
    uint8_t *buf;       /* while built and written (the worker's while building) */
    uint64_t cap;       /* buf bytes */
    uint64_t used;      /* record bytes planned */
    struct ss__sp_brec *r; /* the objects */
    uint32_t n;         /* of them */
    uint32_t ncap;      /* r[] slots */
    uint8_t *meta;      /* the records' meta, copied at append */
    uint32_t meta_used; /* meta bytes */
    uint32_t meta_cap;  /* meta[] bytes allocated */
};

/* spill_file.c, on a worker: every record of the batch (header with its
 * checksums, meta, data, zeros between) into b->buf, then a PAD record to
 * the end of the last block. */
void ss__sp_batch_build(struct ss__sp_batch *b);

enum ss__sp_file_state { SS_SP_F_CREATING, SS_SP_F_LIVE, SS_SP_F_DOOMED };

/* Invariant: live == number of recs[] entries without SS_SP_DEAD; a file is
 * unlinked only when live == 0 && refs == 0 && it is not fused_cur.
 *
 * Record slots are reserved before a spill's I/O (ss__sp_rec_reserve: one
 * for a file of its own at start, a batch's count at its kick; only the
 * batch job in flight appends to a fused file), so a record that reached
 * the disk is always registered: never a durable record the engine does
 * not know about because the table could not grow.
 *
 * Durable deletes (all on the loop thread; the disk work on the worker
 * and the ring). A delete marks its record SS_SP_DEAD and appends its offset to
 * tomb[] (and, if the caller wants to hear, its cookie to dwait[]); then,
 * if that was the file's last live record, the file is reclaimed (unlink
 * job) when nothing uses it, else the pending tombstones are written
 * (tomb job). So:
 *  - while the file is SS_SP_F_LIVE, every cookie in dwait[] has its offset in
 *    tomb[] (a tombstone is dropped only when the unlink starts);
 *  - a tomb job takes tomb[] and dwait[] together, writes the tombstones,
 *    fdatasyncs the file and only then completes its cookies (with its
 *    status); deletes arriving meanwhile gather in the file's next job
 *    (group commit: one write + fdatasync for all of them);
 *  - the unlink job leaves dwait[] on the file and completes it after the
 *    unlink and the directory fsync that follows (shared by every job
 *    queued for it), right before the file record is freed;
 *  - a tomb job holds a file reference, so no unlink runs under it.
 * No delete completes before its record is tombstoned or its file
 * unlinked on disk: a crash after the completion cannot bring it back. */
struct ss__sp_file { /* all of it the loop's */
    struct ss__sp_file *hnext; /* the file table's chain */
    uint64_t id;       /* "<id as %016x>.spill" */
    uint64_t size;     /* bytes on disk (a fused file: appended so far) */
    uint64_t *recs;    /* record offsets, ascending; SS_SP_DEAD marks deleted ones */
    uint32_t nrecs;    /* records */
    uint32_t crecs;    /* recs[] slots: reserved before a spill's I/O */
    uint64_t live;     /* records not dead */
    uint32_t refs;     /* references: jobs using the file, the scan applying it */
    uint8_t state;     /* SS_SP_F_*: CREATING (not durable yet), LIVE, DOOMED (unlinking) */
    bool fused;        /* small records, appended in batches */
    int fd;            /* append fd of the fused file being filled, or -1 */
    int rfd;           /* read fd kept for restores of small records, or -1 */
    uint64_t *tomb;    /* offsets waiting for a tombstone write */
    uint32_t ntomb;    /* of them */
    uint32_t ctomb;    /* tomb[] slots */
    struct ss__sp_job *tomb_job; /* the tombstone write in flight, or NULL */
    uint64_t *dwait;   /* cookies of deletes waiting to be durable */
    uint32_t ndwait;   /* of them */
    uint32_t cdwait;   /* dwait[] slots */
};

/*
 * The hash of a large object's data (XXH64), computed on the worker in
 * pieces of SS_SP_HASH_PIECE while the disk works: a spill hashes its
 * source, a restore the prefix of its destination that has arrived.
 * Protocol: the loop hands a piece over (busy = true, one SS_SP_OP_HASH op
 * pointing at st and, for the last piece, val); while busy only the worker
 * touches st and val; the op's completion, reaped under sp->lock, hands
 * them back (busy = false). One piece at a time.
 */
struct ss__sp_hash {
    ss__xxh64 st;  /* streaming state */
    uint64_t done; /* bytes handed over so far (a multiple of 32 but the last) */
    uint64_t val;  /* the digest: valid once done == the object's size and !busy */
    bool busy;     /* a piece is on the worker */
};

/* What a spill or restore of one object needs besides the caller's memory
 * (LARGE and READ jobs). The data moves in up to three transfers: the
 * header block(s), the data's whole blocks straight to or from the
 * caller's memory (direct_len bytes), and the last partial block through
 * a bounce block (tail). */
struct ss__sp_objio {
    uint64_t size;       /* data bytes */
    uint8_t *hdr;        /* LARGE: header + meta, data_off bytes; READ: the header
                          * block, or the whole record (span, from the span pool) */
    uint8_t *tail;       /* SS_SP_BLK bytes for the data's last tail_len bytes, or NULL */
    uint64_t direct_len; /* data bytes moved in place: all of them unless direct */
    uint64_t tail_len;   /* data bytes moved through tail: size - direct_len */
    bool direct;         /* O_DIRECT: the caller's memory is aligned for it */
    struct ss__sp_hash hash; /* above; LARGE: always for size > HASH_INLINE_MAX;
                              * READ: when progressive */
};

/* SS_SP_J_LARGE: one object into a file of its own:
 * OPEN (create "<id>.tmp", fallocate) -> DATA (data and tail, hashed
 * meanwhile) -> HDR (the header once the hash is known) -> SYNC -> RENAME
 * -> DIRSYNC -> done; on failure CLEANUP (unlink) -> CLEANSYNC. */
struct ss__sp_job_large {
    struct ss__sp_objio o;
    uint64_t cookie;    /* the write's, for its completion */
    const uint8_t *src; /* the caller's data: mapped and unchanged until the completion */
    ss_id id;           /* the object */
    uint32_t uid;       /* its creator */
    uint32_t rflags;    /* SS_SPILL_REC_BOUND or 0 */
    uint32_t meta_size; /* meta bytes (copied into o.hdr at start) */
    uint32_t data_off;  /* the data's offset in the record: header + meta, block-aligned */
    uint64_t rec_len;   /* record bytes: data_off + size rounded to a block (= the file) */
    uint64_t seq;       /* the record's write sequence */
    uint64_t meta_hash; /* XXH64 of the meta */
};

/* SS_SP_J_BATCH: one append of small objects to the fused file:
 * OPEN (the worker builds the records, and creates the file if new_file)
 * -> DATA (one write) -> SYNC [-> RENAME -> DIRSYNC if new_file] -> done;
 * on failure CLEANUP (truncate back, or unlink a new file) -> CLEANSYNC.
 * At most one is in flight (sp->batch_job): only it appends. */
struct ss__sp_job_batch {
    struct ss__sp_batch *batch; /* the records; returned to the pool at the end */
    uint64_t base;              /* file offset of the append: the file's size at the kick */
    uint64_t len;               /* bytes appended: the records rounded up to a block */
    bool new_file;              /* the append creates the file (".tmp", renamed once durable) */
};

/* SS_SP_J_READ: a restore: [OPEN (no kept read fd)] -> DATA -> checks ->
 * done. A record of at most SPAN_MAX bytes is one read of its blocks
 * (span) into a pooled buffer; a larger one reads its header block, its
 * data in place and its tail, and with more than HASH_INLINE_MAX bytes
 * hashes the data as its chunks arrive (progressive). */
struct ss__sp_job_read {
    struct ss__sp_objio o;
    uint64_t cookie;       /* the read's, for its completion */
    ss__spill_loc loc;     /* the record, as the caller named it */
    uint8_t *dst;          /* the caller's data buffer (loc.size bytes) */
    void *meta_dst;        /* the caller's meta buffer, or NULL */
    uint64_t span_off;     /* file offset o.hdr's first byte came from */
    bool span;             /* one read of the whole record into o.hdr */
    bool tail_copied;      /* o.tail's bytes are in dst */
    bool progressive;      /* hash chunks as they arrive (bits below) */
    uint8_t *bits;         /* progressive: bit i set when chunk i of the data arrived */
    uint64_t nchunks;      /* progressive: chunks in the in-place data transfer */
    uint64_t next_chunk;   /* progressive: the first chunk not arrived */
    uint64_t prefix;       /* progressive: dst bytes from 0 that have arrived */
};

/* SS_SP_J_TOMB: the pending tombstones of a fused file: OPEN -> DATA (one
 * 8-byte write per record, buffered) -> SYNC -> done, then the deletes it
 * carries complete. Holds a file reference; one per file (f->tomb_job). */
struct ss__sp_job_tomb {
    uint64_t val;    /* SS_SPILL_TOMB: the bytes every write writes */
    uint64_t *offs;  /* record offsets, taken from the file's tomb[] */
    uint32_t n;      /* of them */
    uint64_t *dwait; /* delete cookies completed once the tombstones are durable */
    uint32_t ndwait; /* of them */
};

/* SS_SP_J_UNLINK (no per-kind state): UNLINK -> DIRSYNC -> done, then the
 * file's waiting deletes complete and its record is freed. */

/*
 * A job: one request's state machine (the kinds above). All of it belongs
 * to the loop thread; ops carry a pointer to their job, and the only part
 * a worker touches is u.*.o.hash (its protocol above) and, for OP_BUILD,
 * the batch. A job is freed only when io_pending is 0 and no hash piece is
 * busy, so nothing in flight points into freed memory.
 */
struct ss__sp_job {
    struct ss__sp_job *next;    /* the ready queue (sp->ready_head), while in_ready */
    struct ss__sp_job *ds_next; /* sp->ds_wait or sp->ds_run, while in a dirsync */
    uint8_t kind;               /* SS_SP_J_*: which member of u */
    uint8_t state;              /* SS_SP_S_*: the step it waits for */
    bool in_ready;              /* on the ready queue (has data ops to issue) */
    bool created;               /* LARGE/BATCH: its open created the file */
    bool renamed;               /* LARGE/BATCH: the file has its final name */
    int status;                 /* 0, or the first error: the job is failing */
    int cleanup_err;            /* the cleanup after a failure failed too: a record
                                 * may be left on disk */
    unsigned io_pending;        /* its ops in flight (hash pieces apart) plus a dirsync wait */
    struct ss__sp_file *file;   /* the file it works on; READ, BATCH and TOMB hold a
                                 * reference, LARGE creates it, UNLINK frees it */
    int fd;                     /* the fd its data ops use: its own (closed by the job)
                                 * or the file's fd/rfd; -1 none */
    struct ss__sp_xfer xin[3];  /* transfers, when 3 are enough */
    struct ss__sp_xfer *x;      /* xin, or (TOMB) an array of one per tombstone */
    unsigned nx;                /* transfers in x */
    unsigned xi;                /* the first with bytes left to issue */
    union {
        struct ss__sp_job_large large;
        struct ss__sp_job_batch batch;
        struct ss__sp_job_read read;
        struct ss__sp_job_tomb tomb;
    } u;
};

/*
 * The startup scan (ss__spill_scan_start): a thread reads the directory
 * and walks the spill files one by one (ss__spill_walk), handing what it
 * finds to the loop in chunks; the loop applies them (file table, the
 * caller's fn, drops, tombstones) from ss__spill_reap, so the engine and
 * its caller serve meanwhile. Each file's records arrive in offset order,
 * files in id order; a chunk with `last` closes its file.
 *
 * Protocol. `lock` guards q_head/q_tail/q_n, done and err_thread; the
 * thread appends chunks (waiting on `cv` while SCAN_QUEUE_MAX are queued,
 * so memory stays bounded), the loop takes them and signals `cv`. After
 * every append and when it ends (done = true, last) the thread writes the
 * engine's eventfd; reap drains the eventfd before it looks at the queue,
 * so no chunk is left behind a drained wakeup. ctl.stop (atomic, set under
 * `lock` with a broadcast on cv) makes the thread stop at its next record
 * or queue wait; ctl.bytes and files_done are progress counters (relaxed
 * atomics, for stats). Everything else in ss__spill_scan_st belongs to the
 * loop. The thread touches no other engine state: it reads dirfd,
 * dio_align and limit, which are fixed before it starts, and
 * inj_scan_stall (atomic), and writes the eventfd.
 */
struct ss__sp_scan_chunk;
typedef struct ss__spill_scan_st {
    pthread_t thr;
    bool started;     /* thread created (joined at stop/close) */
    bool over;        /* finished, failed or cancelled (status says which) */
    int status;       /* 1 done; -errno failed (fn's error, directory) or -ECANCELED */
    ss__spill_scan_fn fn;
    void *arg;
    uint64_t limit;   /* file ids below this existed at open: scan those only */
    pthread_mutex_t lock;
    pthread_cond_t cv;
    struct ss__sp_scan_chunk *q_head, *q_tail;
    unsigned q_n;
    bool done;        /* thread: no more chunks will come */
    int err_thread;   /* thread: why it stopped early (-ENOMEM, directory) */
    ss__spill_walk_ctl ctl;
    _Atomic uint64_t files_done;
    /* loop */
    struct ss__sp_file *cur;  /* file being applied (holds a reference) */
    uint64_t kept, removed;
    ss__spill_loc *drop;
    size_t ndrop, cdrop;
} ss__spill_scan_st;

/*
 * The engine.
 *
 * Threads. The loop thread (whoever calls ss__spill_*, one call at a time)
 * owns every field below unless its comment names another owner. The
 * other threads, and what they may touch:
 *  - workers (spill_io.c worker_main; 1 with io_uring, 2-4 in the
 *    fallback): wq/wd and wstop under `lock`; the op they took and what it
 *    points to (its buffer, a hash piece's state, a batch being built);
 *    dirfd. Nothing else.
 *  - the submitter (submit_main; io_uring without SQPOLL or inline
 *    submission): sub_kick/sub_stop under `sub_lock`; ring.ring_fd and
 *    ring.sq.ring_entries, fixed once the ring exists. It never touches an
 *    SQE, the CQ or an op.
 *  - the scan thread: see ss__spill_scan_st above; besides its own
 *    fields it reads dirfd, dio_align and scan.limit (fixed before it
 *    starts) and inj_scan_stall (atomic).
 *  - the kernel: the buffers of data ops in flight, the SQ entries up to
 *    the published tail, the CQ; it writes efd when a CQE is posted.
 *
 * Queues and wakeups:
 *  - ops to a worker: the loop fills the op, then appends it to wq under
 *    `lock` and signals `cv`; the worker takes it under `lock` and runs it
 *    unlocked (the mutex orders the loop's writes before the worker's
 *    reads). Done, the worker sets op->res and appends the op to wd under
 *    `lock`, and writes efd if wd was empty. A fake completion (an
 *    injected failure) goes straight to wd the same way.
 *  - ops to the ring: the loop fills SQEs and, once per call
 *    (ss__sp_io_submit), publishes the SQ tail with a store-release
 *    (sq_publish) and then sets sub_kick under `sub_lock` and signals
 *    `sub_cv`; the submitter calls io_uring_enter, which submits every
 *    entry up to the published tail. (SQPOLL and inline modes call
 *    io_uring_submit on the loop instead.) CQEs are read by the loop only.
 *    The SQ has 4 x qd entries: in flight are at most 2 x qd ops, but the
 *    kernel gives an SQE's slot back only when the io_uring_enter that
 *    consumed it returns, and the ops of that batch may complete, be
 *    reaped and be issued again before then. An op that still finds no
 *    free SQE waits on sqw (the loop's), and every ss__sp_io_submit
 *    prepares what waits there as slots come back, writing efd while any
 *    is left so the loop comes back for it: it is never failed for it.
 *  - the loop's wakeup: efd is readable while reap has work. Producers
 *    first make their work visible (wd under `lock`, a CQE, a scan chunk
 *    under scan.lock), then write efd; ss__spill_reap drains efd first and
 *    then looks at everything, so no work hides behind a drained wakeup.
 *    A reap that leaves work behind (its budget, completions beyond `max`)
 *    writes efd itself.
 *  - close: ss__spill_wait until no job is left (so no op is in flight and
 *    no buffer is in the kernel's hands), then wstop under `lock` with a
 *    broadcast, join the workers, then stop the submitter (its exit would
 *    cancel what it submitted), then the ring.
 * Lock order: no thread holds two of lock, sub_lock and scan.lock.
 */
struct ss__spill {
    /* -- set at open, fixed after (read by any thread) */
    int dirfd;              /* the spill directory */
    int lockfd;             /* "<dir>/lock", flock'ed: one engine per directory */
    int efd;                /* the eventfd reap's caller polls (written by all) */
    char *dir;              /* its path, for log lines */
    uint32_t dio_align;     /* O_DIRECT alignment; 0: buffered I/O */
    unsigned qd;            /* data ops (and sync ops) in flight, at most */
    uint64_t fused_cap;     /* bytes per fused file */
    uint64_t small_max;     /* objects of at most this many bytes are fused */
    uint64_t chunk;         /* bytes per data op of a large object */
    bool uring;             /* io_uring (false: the worker-thread fallback) */
    int submit_mode;        /* SS_SP_SUB_*: who calls io_uring_enter */

    /* -- the loop's flags */
    bool scanned;           /* ss__spill_scan_start was called */
    bool closing;           /* ss__spill_close runs: no new requests */

    /* -- the ring: SQ and CQ are the loop's; see the protocol above */
    struct io_uring ring;   /* valid when uring */
    unsigned to_submit;     /* SQEs filled and not yet submitted (inline/SQPOLL modes) */
    struct ss__sp_op *sqw_head, *sqw_tail; /* ops that found no free SQE, FIFO */
    pthread_t sub_thr;      /* the submitter (when sub_started) */
    pthread_mutex_t sub_lock; /* guards sub_kick and sub_stop */
    pthread_cond_t sub_cv;  /* the submitter waits here for sub_kick or sub_stop */
    bool sub_kick;          /* sub_lock: entries were published, enter the kernel */
    bool sub_stop;          /* sub_lock: exit */
    bool sub_started;       /* loop: the submitter runs (joined by close) */
    unsigned data_inflight; /* data ops from first issue to their final reap */
    unsigned sync_inflight; /* fdatasync/fsync ops from issue to reap */

    /* -- workers */
    pthread_mutex_t lock;   /* guards wq_*, wd_* and wstop */
    pthread_cond_t cv;      /* workers wait here for wq or wstop */
    struct ss__sp_op *wq_head, *wq_tail; /* lock: ops for the workers, FIFO */
    struct ss__sp_op *wd_head, *wd_tail; /* lock: ops the workers (or a fake
                                          * completion) finished, FIFO */
    bool wstop;             /* lock: workers exit once wq is empty */
    pthread_t thr[4];       /* the workers */
    unsigned nthr;          /* of them */
    struct ss__sp_op *op_free; /* free ops (spill_io.c's pool) */
    void *span_free;        /* pooled SS_SP_SPAN_BUF buffers, linked through their start */
    unsigned span_nfree;    /* of them (at most 2 x qd kept) */

    /* -- jobs (spill_job.c) */
    unsigned njobs;         /* jobs alive: the engine is idle when 0 (and no batch waits) */
    struct ss__sp_job *ready_head, *ready_tail; /* jobs with data ops to issue,
                                                 * served round-robin */
    struct ss__sp_op *syncq_head, *syncq_tail; /* fdatasyncs waiting for a sync slot */
    struct ss__sp_job *ds_wait; /* jobs waiting for the next directory fsync */
    struct ss__sp_job *ds_run;  /* jobs the running directory fsync covers */
    bool ds_busy;           /* a directory fsync runs (one at a time) */
    struct ss__sp_batch *stage; /* the batch small spills join now */
    struct ss__sp_batch *pend_head, *pend_tail; /* full batches waiting their turn */
    struct ss__sp_batch *bfree; /* spare batch descriptors */
    uint8_t *bbuf;          /* a batch buffer kept for the next batch */
    uint64_t bbuf_cap;      /* its bytes */
    struct ss__sp_job *batch_job; /* the batch in flight: the only appender */

    /* -- files (spill_ftab.c) */
    struct ss__sp_file **ht; /* the file table: chains by id */
    size_t ht_size;         /* its slots, a power of two */
    size_t nfiles;          /* files in it */
    struct ss__sp_file *fused_cur; /* the fused file batches append to, or NULL */
    uint64_t next_file;     /* the id of the next new file (above any on disk) */
    uint64_t next_seq;      /* the next record's write sequence */

    /* -- completions for reap (spill_job.c): dq[dq_head .. dq_head + dq_n) */
    ss__spill_done *dq;     /* the queue */
    size_t dq_head;         /* first unreaped entry */
    size_t dq_n;            /* entries queued */
    size_t dq_cap;          /* entries allocated: always >= dq_n + dq_owed */
    size_t dq_owed;         /* completions promised to queued requests, not yet pushed */

    /* -- accounting */
    unsigned spill_active;  /* spills in progress (spill_ns runs while > 0) */
    unsigned restore_active; /* restores in progress */
    uint64_t spill_t0;      /* when spill_active last became 1 */
    uint64_t restore_t0;    /* when restore_active last became 1 */
    ss__spill_stats st;     /* the counters ss__spill_stats_get reports */

    /* -- injection (tests; ss__spill_inject) */
    unsigned inj_mask;      /* SS_SPILL_INJ_* kinds armed */
    unsigned inj_left;      /* uses of those kinds until the hit (0: disarmed) */
    unsigned inj_hits;      /* sticky: failures left, 0 no limit */
    bool inj_sticky;        /* the hit and every later use fail */
    int inj_err;            /* what an injected op completes with */
    _Atomic bool inj_scan_stall; /* the scan thread waits before each file until stopped */

    /* -- the startup scan (spill_scan.c; its own protocol above) */
    ss__spill_scan_st scan;
};

enum { SS_SP_SUB_THREAD, SS_SP_SUB_SQPOLL, SS_SP_SUB_INLINE };

/* ------------------------------------------------ spill_io.c: ops */

void *ss__sp_balloc(uint64_t n); /* 4096-aligned, rounded up to 4096 */
void ss__sp_efd_signal(ss__spill *sp);
void ss__sp_efd_drain(ss__spill *sp);
/* SS_SP_SPAN_BUF bytes, 4096-aligned, from the pool (only data ops in flight
 * hold one, so the pool stays at about the queue depth) */
uint8_t *ss__sp_span_get(ss__spill *sp);
void ss__sp_span_put(ss__spill *sp, uint8_t *p);
/* tests: does the armed injection hit this use of a kind (SS_SPILL_INJ_*)? */
bool ss__sp_inj_hit(ss__spill *sp, unsigned kind);
struct ss__sp_op *ss__sp_op_new(ss__spill *sp, struct ss__sp_job *j, int type);
void ss__sp_op_release(ss__spill *sp, struct ss__sp_op *op);
/* issue an op (its first issue counts it in flight and may be injected) */
void ss__sp_op_start(ss__spill *sp, struct ss__sp_op *op);
/* hand the SQEs filled so far to the kernel (io_uring) */
void ss__sp_io_submit(ss__spill *sp);
/* finished ops, at most SS_SP_PROCESS_BUDGET, in *out (linked by next); data ops
 * come back only when final. Returns how many. */
unsigned ss__sp_io_reap(ss__spill *sp, struct ss__sp_op **out);
/* eventfd, io_uring unless SS_SPILL_NO_URING (or refused), the threads */
int ss__sp_io_start(ss__spill *sp, unsigned flags);
/* join the threads, tear down the ring, free the pools, close the eventfd */
void ss__sp_io_stop(ss__spill *sp);

/* --------------------------------------- spill_ftab.c: the file table */

struct ss__sp_file *ss__sp_file_find(const ss__spill *sp, uint64_t id);
struct ss__sp_file *ss__sp_file_new(ss__spill *sp, uint64_t id);
void ss__sp_file_free(ss__spill *sp, struct ss__sp_file *f);
void ss__sp_file_get(struct ss__sp_file *f);
/* room for n more records (-ENOMEM); then ss__sp_rec_add of them cannot fail */
int ss__sp_rec_reserve(ss__spill *sp, struct ss__sp_file *f, uint32_t n);
int ss__sp_rec_add(ss__spill *sp, struct ss__sp_file *f, uint64_t off);
/* index of the record at off, live or dead, or -1 */
long ss__sp_rec_find(const struct ss__sp_file *f, uint64_t off);
/* the file of the live record a location names (its index in *idx), or NULL */
struct ss__sp_file *ss__sp_loc_lookup(ss__spill *sp, const ss__spill_loc *loc, long *idx);
/* the live record at recs[idx] (size data bytes) dies: marked, counted */
void ss__sp_rec_kill(ss__spill *sp, struct ss__sp_file *f, long idx, uint64_t size);
/* queue a tombstone for the record at off and, if cookie, the delete's
 * cookie: 0 or -ENOMEM (nothing queued) */
int ss__sp_tomb_add(struct ss__sp_file *f, uint64_t off, const uint64_t *cookie);

/* ------------------------------------------------ spill_job.c: jobs */

/* room for one more completion, reserved when a request is queued (the
 * request fails with -ENOMEM without it); ss__sp_push_done uses it up,
 * ss__sp_done_unreserve gives it back when the request failed after all */
int ss__sp_done_reserve(ss__spill *sp);
void ss__sp_done_unreserve(ss__spill *sp);
/* queue a completion for reap: never fails, never waits */
void ss__sp_push_done(ss__spill *sp, const ss__spill_done *d);
/* complete n delete cookies with status (frees nothing) */
void ss__sp_dwait_done(ss__spill *sp, const uint64_t *cookie, uint32_t n, int status);
/* drop a job's reference; the file is unlinked if that was all that kept it */
void ss__sp_file_put(ss__spill *sp, struct ss__sp_file *f);
int ss__sp_large_start(ss__spill *sp, const ss_id *id, uint32_t uid, uint32_t rflags,
                       const uint8_t *data, uint64_t size, const void *meta,
                       uint32_t meta_size, uint64_t cookie);
int ss__sp_small_append(ss__spill *sp, const ss_id *id, uint32_t uid, uint32_t rflags,
                        const uint8_t *data, uint64_t size, const void *meta,
                        uint32_t meta_size, uint64_t cookie);
int ss__sp_read_start(ss__spill *sp, struct ss__sp_file *f, const ss__spill_loc *loc, void *dst,
                      void *meta_dst, uint64_t cookie);
/* the fused file being filled takes no more appends */
void ss__sp_fused_retire(ss__spill *sp);
/* write the file's pending tombstones unless that is under way */
void ss__sp_tomb_kick(ss__spill *sp, struct ss__sp_file *f);
/* unlink the file if no record in it is live and nothing uses it */
void ss__sp_maybe_reclaim(ss__spill *sp, struct ss__sp_file *f);
/* start what may start (batches, syncs, data ops) and submit */
void ss__sp_pump(ss__spill *sp);
/* handle finished ops (one reap's worth), then pump; returns how many */
unsigned ss__sp_process(ss__spill *sp);
/* nothing queued or in flight */
bool ss__sp_idle(const ss__spill *sp);

/* ------------------------------------------ spill_scan.c: the scan */

/* loop: apply what the scan thread found (from ss__spill_reap) */
void ss__sp_scan_poll(ss__spill *sp);

#endif /* SEALSTORE_SRC_LIB_SPILL_INT_H */
