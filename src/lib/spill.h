/* SPDX-License-Identifier: MIT */
/*
 * The spill engine: sealed objects to disk and back,
 * asynchronously, for a single-threaded event loop.
 *
 * Shape. ss__spill_write() queues a spill and returns; the I/O runs on an
 * io_uring (or, where io_uring is unavailable, on worker threads doing
 * pwrite/pread), and every completion, success or failure, comes back
 * exactly once through ss__spill_reap(). The engine's eventfd
 * (ss__spill_event_fd) becomes readable whenever reap has work to do: the
 * store adds it to its epoll set and calls reap when it fires. No call
 * here waits for the disk, except ss__spill_open (probes), ss__spill_scan
 * (startup, for tools and tests: the store uses ss__spill_scan_start, which
 * scans in a thread), ss__spill_wait and ss__spill_close.
 *
 * Threads. Every ss__spill_* call on one engine must come from one thread
 * at a time (the store's loop). The engine's own threads: a worker hashes
 * large objects and runs the metadata calls that may block (open, rename,
 * unlink, fallocate, ftruncate); a submitter calls io_uring_enter, so the
 * loop never pays for pinning the pages of O_DIRECT I/O (see
 * SS_SPILL_SQPOLL); in the fallback mode, 2-4 workers also do the reads,
 * writes and syncs; a scan thread reads the spill files at startup
 * (ss__spill_scan_start).
 *
 * Layout on disk. A spill directory holds files named "<16 hex>.spill",
 * each a sequence of self-describing records (ss__spill_rec below, format
 * described there and in spill_file.c), plus "lock" (flock: one engine per
 * directory) and, transiently, "<16 hex>.tmp" files being written (renamed
 * to .spill once durable; a crash leaves them behind and scan removes
 * them). Only regular files are ever opened there. An object of more than
 * params.small_max bytes gets a file of its own; smaller ones are appended
 * in batches to a shared ("fused") file up to params.fused_cap bytes. A
 * spill completes only when its bytes are fdatasync'ed and, for a new
 * file, the directory is fsync'ed.
 *
 * Space. ss__spill_delete() unlinks a file of its own; in a fused file it
 * writes a durable tombstone into the record, and the file is unlinked once
 * every record in it is dead. ss__spill_delete_notify() also reports when
 * that is on disk (group-committed), for callers that must not answer
 * before. (Copy-forward compaction of mostly-dead fused
 * files is not done: records never move, so a location stays valid until
 * its delete.)
 */
#ifndef SEALSTORE_SRC_LIB_SPILL_H
#define SEALSTORE_SRC_LIB_SPILL_H

#include "internal.h"

#include <assert.h>

typedef struct ss__spill ss__spill;

/* ------------------------------------------------------------ on disk */

/*
 * One record, little-endian, 128 bytes, at a 128-byte aligned offset:
 *
 *   [header 128][meta: meta_size][zeros to data_off][data: data_size][zeros to rec_len]
 *
 * A file is records back to back: the next record starts at offset +
 * rec_len. Records of a file of its own have data_off and rec_len
 * multiples of 4096 (O_DIRECT straight into and out of page-aligned
 * segments); fused records are packed at 128 bytes and written in batches
 * that a PAD record fills out to 4096.
 *
 * A record is good when magic, version and hdr_size match, hdr_hash is
 * XXH64 (seed SS_SPILL_SEED) of bytes [0, 112), the sizes add up
 * (hdr_size + meta_size <= data_off, data_off + data_size <= rec_len,
 * rec_len % 128 == 0) and, for an object, meta_hash and data_hash are
 * XXH64 of the meta and data bytes. `tomb` sits outside the header hash so
 * a delete can overwrite it alone: 0 means live, SS_SPILL_TOMB dead; any
 * other value counts as a damaged header.
 *
 * Versions: 2 records the creator's uid at offset 36 (reserved, zero, in
 * version 1). Version 1 records are still read, their creator unknown
 * (SS_UID_UNKNOWN); new records are written as version 2.
 *
 * If you change this layout, bump SS_SPILL_VERSION: files of versions
 * this code does not know are then reported as unreadable, not misread
 * (tests/unit/t_spill.c pins it).
 */
#define SS_SPILL_MAGIC 0x4c505353u          /* "SSPL" */
#define SS_SPILL_VERSION 2u                 /* written */
#define SS_SPILL_VERSION_MIN 1u             /* oldest still read */
#define SS_SPILL_SEED 0x5353504c31ull       /* hash seed: "SSPL1" */
#define SS_SPILL_TOMB 0x424d4f5444414544ull /* "DEADTOMB" */
#define SS_SPILL_REC_ALIGN 128u             /* record start/length granularity */
#define SS_SPILL_BLOCK 4096u                /* file-of-its-own / batch granularity */
#define SS_SPILL_META_MAX (64u * 1024)      /* sealstore.h: meta is at most 64 KiB */

enum {
    SS_SPILL_REC_OBJECT = 1u << 0, /* an object (else the flags say PAD) */
    SS_SPILL_REC_PAD = 1u << 1,    /* filler to the end of a batch: skip */
    SS_SPILL_REC_FUSED = 1u << 2,  /* lives in a fused file */
    /* its object was bound to its creator's connection (SS_CREATEF_CREATOR),
     * which a restarted store no longer has: never restored, deleted by
     * the store's startup scan. An object flag within version 2: a reader
     * that predates it calls the record damaged and skips it, which is
     * what it should do with it anyway; the other records of the file
     * stay readable (a version bump would have hidden them all). */
    SS_SPILL_REC_BOUND = 1u << 3,
};

typedef struct ss__spill_rec {
    uint32_t magic;       /*   0 SS_SPILL_MAGIC */
    uint16_t version;     /*   4 SS_SPILL_VERSION */
    uint16_t hdr_size;    /*   6 sizeof(ss__spill_rec) */
    uint32_t flags;       /*   8 SS_SPILL_REC_* */
    uint32_t meta_size;   /*  12 bytes of meta right after the header */
    uint64_t data_size;   /*  16 bytes of data at data_off */
    uint64_t rec_len;     /*  24 bytes from this header to the next record */
    uint32_t data_off;    /*  32 offset of the data from the header */
    uint32_t uid;         /*  36 creator's uid (version 1: zero, not a uid) */
    uint64_t data_hash;   /*  40 XXH64(data, SS_SPILL_SEED) */
    uint64_t meta_hash;   /*  48 XXH64(meta, SS_SPILL_SEED) */
    uint64_t seq;         /*  56 engine-wide write sequence: newest wins */
    uint8_t id[SS_ID_SIZE]; /* 64 the object's id */
    uint8_t reserved1[28];  /* 84 zero */
    uint64_t hdr_hash;    /* 112 XXH64(bytes [0, 112), SS_SPILL_SEED) */
    uint64_t tomb;        /* 120 0 live, SS_SPILL_TOMB deleted */
} ss__spill_rec;

static_assert(sizeof(ss__spill_rec) == 128, "spill record header is 128 bytes");
static_assert(offsetof(ss__spill_rec, id) == 64, "spill record layout");
static_assert(offsetof(ss__spill_rec, hdr_hash) == 112, "spill record layout");
static_assert(offsetof(ss__spill_rec, tomb) == 120, "spill record layout");
static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
              "spill records are read and written in host order, which must be little-endian");

/* XXH64 (the xxHash 64-bit algorithm, bit-exact): the record checksum. */
uint64_t ss__spill_hash64(const void *p, size_t len, uint64_t seed);

/* -------------------------------------------------------------- engine */

/* Where a spilled object is: what the store keeps to restore or delete it.
 * Plain data; copy it freely. */
typedef struct ss__spill_loc {
    uint64_t file;      /* file id: "<file as %016x>.spill" */
    uint64_t offset;    /* record offset in the file */
    uint64_t size;      /* data bytes */
    uint64_t seq;       /* write sequence (the newest copy of an id wins) */
    uint64_t rec_len;   /* record bytes on disk */
    uint32_t meta_size; /* meta bytes */
    uint32_t data_off;  /* data offset from the record start */
    ss_id id;           /* the object */
    uint32_t uid;       /* its creator's uid; SS_UID_UNKNOWN from a version 1 record */
    bool bound;         /* SS_SPILL_REC_BOUND: bound to its (gone) creator */
} ss__spill_loc;

/* Flags for ss__spill_params.flags. */
#define SS_SPILL_NO_URING (1u << 0)  /* use the worker-thread fallback */
#define SS_SPILL_NO_DIRECT (1u << 1) /* buffered I/O even where O_DIRECT works */
/*
 * Who calls io_uring_enter. Submitting O_DIRECT I/O does real work in the
 * kernel (pinning the pages, building bios; ~35 us per MiB here) and can
 * wait on a busy queue (several ms seen), so by default the engine's own
 * submitter thread does it and the caller only fills SQEs. SQPOLL hands it
 * to a kernel thread instead (which polls a CPU while spills run, idle
 * after 10 ms; plain submission if refused); INLINE submits on the caller's
 * thread (the simplest, for comparison: it blocks the loop).
 */
#define SS_SPILL_SQPOLL (1u << 2)
#define SS_SPILL_INLINE_SUBMIT (1u << 3)

typedef struct ss__spill_params {
    const char *dir;      /* the spill directory (required) */
    unsigned flags;       /* SS_SPILL_* above; unknown bits: -EINVAL */
    unsigned queue_depth; /* data I/Os in flight; 0: 8; at most 256 */
    uint64_t fused_cap;   /* bytes per fused file; 0: 64 MiB; at least 1 MiB */
    uint64_t small_max;   /* objects of at most this many bytes are fused;
                           * 0: 64 KiB; at most 1 MiB */
    uint32_t chunk;       /* bytes per I/O of a large object; 0: 1 MiB;
                           * a power of two, 64 KiB .. 64 MiB */
} ss__spill_params;

/*
 * Open an engine on params->dir. The directory is created (mode 0700) if
 * missing (its parent must exist); an existing one must be a directory
 * owned by the effective uid with no group/other permission bits. Takes an
 * exclusive flock on "<dir>/lock", probes O_DIRECT (statx STATX_DIOALIGN,
 * else a test write; tmpfs and filesystems without it get buffered I/O),
 * sets up io_uring (queue_init -ENOSYS/-EPERM/-EINVAL/-ENOMEM fall back to
 * worker threads, logged once) and starts the worker thread. Existing spill
 * files are left alone until ss__spill_scan(); new ones never reuse their
 * ids.
 * Returns 0; -EINVAL (params); -ENOENT (parent missing); -ENOTDIR; -EPERM
 * (not ours, or group/other access); -EACCES/-EROFS (not writable); -EBUSY
 * (another engine holds the directory); -ENOMEM; -EAGAIN (thread); other
 * -errno. On failure *out is untouched.
 */
int ss__spill_open(ss__spill **out, const ss__spill_params *params);

/*
 * Finish everything queued (waiting up to a minute for the disk: if I/O is
 * still in flight then, an error line is logged and the engine's memory is
 * leaked rather than freed under the kernel), then free the engine.
 * Completions not reaped are dropped. NULL is a no-op.
 */
void ss__spill_close(ss__spill *sp);

/* The eventfd to poll (EPOLLIN): readable when ss__spill_reap has work.
 * Owned by the engine. */
int ss__spill_event_fd(const ss__spill *sp);

/*
 * Queue a spill of object `id`, created by `uid` (recorded with it): `size`
 * bytes at `data`, plus `meta` (meta_size <= SS_SPILL_META_MAX bytes,
 * copied now).
 * `data` must stay mapped and unchanged until the completion is reaped:
 * the disk reads it directly (O_DIRECT from a read-only mapping of a sealed
 * segment works; it is never registered with io_uring, which would pin it
 * and break sealing). Page-aligned data goes straight to the disk; other
 * alignments use buffered I/O.
 * Returns 0 (exactly one completion will carry `cookie`), -EINVAL (bad
 * arguments), -ENOMEM, or -ESHUTDOWN (engine closing).
 */
int ss__spill_write(ss__spill *sp, const ss_id *id, uint32_t uid, const void *data,
                    uint64_t size, const void *meta, uint32_t meta_size, uint64_t cookie);
/* The same with record flags: 0 or SS_SPILL_REC_BOUND (else -EINVAL). */
int ss__spill_write_flags(ss__spill *sp, const ss_id *id, uint32_t uid, uint32_t rflags,
                          const void *data, uint64_t size, const void *meta,
                          uint32_t meta_size, uint64_t cookie);

/*
 * Queue a restore of `loc` into `dst` (writable for loc->size bytes, e.g. a
 * fresh segment's mapping; page alignment lets the disk write it directly)
 * and, if meta_dst is not NULL, its meta into meta_dst (loc->meta_size
 * bytes). Both are written until the completion; with status 0 they hold
 * the object, checked against its header (id, sizes) and checksums. Seal
 * the segment only after the completion: the I/O pins its pages meanwhile.
 * Returns 0 (one completion follows), -ENOENT (no such live record: never
 * spilled here, or deleted), -EINVAL, -ENOMEM, -ESHUTDOWN.
 * Completion status: 0; -EBADMSG (damaged or truncated: header or checksum
 * mismatch); -EIO or other -errno from the disk.
 */
int ss__spill_read(ss__spill *sp, const ss__spill_loc *loc, void *dst, void *meta_dst,
                   uint64_t cookie);

/*
 * Free the space of a spilled object. The record is dead at once (reads of
 * it give -ENOENT); durably so soon after: its own file is unlinked and the
 * directory fsync'ed, or in a fused file a tombstone is written and
 * fdatasync'ed, and the fused file is unlinked when its last record dies.
 * Nothing is reaped for it; failures are logged and counted. Nobody hears
 * when it is durable: a caller that may later tell someone the object is
 * gone (a delete of the same id) uses ss__spill_delete_notify.
 * Returns 0, -ENOENT (no such live record), -EINVAL.
 */
int ss__spill_delete(ss__spill *sp, const ss__spill_loc *loc);

/*
 * The same, and exactly one completion (op SS_SPILL_OP_DELETE, `cookie`)
 * is reaped once the delete is durable: status 0 means no crash can bring
 * the record back (a restart's scan finds it unlinked or tombstoned);
 * -errno means that could not be made sure of (-ENOMEM, or the disk's
 * error): it may reappear after a crash. Durability is group-committed:
 * deletes that arrive while a file's tombstone write is in flight share
 * the next write and fdatasync, and unlinks share directory fsyncs, so a
 * burst of deletes costs a few syncs, not one each.
 * Returns 0 (a completion follows), -ENOENT (no such live record: none
 * does), -EINVAL, -ENOMEM (no room to queue its completion: nothing was
 * done, the record stays live).
 */
int ss__spill_delete_notify(ss__spill *sp, const ss__spill_loc *loc, uint64_t cookie);

/*
 * What ss__spill_reap hands back: one per write, read or notified delete.
 *
 * A write that fails leaves no record a scan would accept: what it wrote
 * is removed before the failure is reported, durably (a new file unlinked
 * and, if it already had its final name, the directory fsync'ed; an append
 * to a fused file truncated away and the file fdatasync'ed). If that
 * cleanup fails too, the write completes with its error and `copy` set:
 * loc names a record that may be on disk (a restart's scan may find it),
 * registered live like a spilled one, so the caller deletes it
 * (ss__spill_delete_notify) before it may tell anyone the object is gone.
 * The engine never loses track of a record it wrote for want of memory:
 * the bookkeeping a spill needs is reserved before its I/O starts; so is
 * the room for every completion (a request that cannot get it fails with
 * -ENOMEM when queued), so a completion is never dropped nor waited for.
 */
enum { SS_SPILL_OP_WRITE = 1, SS_SPILL_OP_READ = 2, SS_SPILL_OP_DELETE = 3 };
typedef struct ss__spill_done {
    uint64_t cookie;   /* as given */
    int status;        /* 0 or -errno (see write/read) */
    int op;            /* SS_SPILL_OP_* */
    bool copy;         /* write with status < 0: a record may be on disk at loc */
    ss__spill_loc loc; /* write: where the object now is (valid with status 0,
                        * or with copy); read: the location read; delete: zero */
} ss__spill_done;

/*
 * Advance the engine (handle finished I/O, start queued I/O) and hand back
 * up to `max` completions. Never blocks. Call it when the eventfd fires
 * (it reads the eventfd; when more than `max` are ready it keeps it
 * readable). Returns the number of entries filled (0..max).
 */
int ss__spill_reap(ss__spill *sp, ss__spill_done *done, int max);

/*
 * Wait until nothing is queued or in flight (completions stay for reap),
 * or timeout_ms passed (< 0: forever). For tests, tools and shutdown.
 * Returns 0 or -ETIMEDOUT.
 */
int ss__spill_wait(ss__spill *sp, int timeout_ms);

/*
 * Startup: find every spill file in the directory, check every record and
 * call fn(arg, loc, meta) for each live object (meta: loc->meta_size bytes,
 * valid during the call). fn returns 0 to keep the object (the store
 * indexes loc), 1 to drop it (the engine deletes it, e.g. an older copy of
 * an id), or a negative -errno to stop the scan.
 * fn NULL drops everything (empties the directory).
 * Leftover .tmp files are removed. A damaged or truncated record costs only
 * itself: one log line each (file, offset, id when readable), counted in
 * stats.damaged; a file left with no live record is unlinked. Anything
 * named like a spill file that is not a regular file (a FIFO, a device, a
 * symlink) is ignored with one warning and never opened. Checking reads
 * headers and meta, and the data of fused (small) records; the data of an
 * object in a file of its own is checked when it is restored, so a file
 * costs one small read however large it is (or claims to be), and garbage
 * is given up on after at most ~1 MiB (spill_int.h, ss__spill_walk).
 *
 * ss__spill_scan_start runs this in a thread of its own and returns at
 * once: what the thread finds is applied, fn called, on the caller's thread
 * from within ss__spill_reap (the eventfd fires for it), file by file in
 * id order, so the engine serves meanwhile. Objects found so far can be
 * read and deleted; the caller must not write an object that may still be
 * found (its sequence number could be below the one on disk) and must
 * expect fn for any id not found yet. ss__spill_scan_status says 0 while
 * it runs, 1 once it is complete, -errno when it stopped early (fn's
 * error, no memory, the directory unreadable; -ECANCELED after
 * ss__spill_scan_cancel). ss__spill_scan_cancel (and ss__spill_close)
 * stops the thread within one record's read and joins it: what was applied
 * stays; files not reached are left alone on disk.
 * Start must be the first use of the engine (-EBUSY otherwise; once only).
 * Returns 0, -EINVAL, -EBUSY, -EAGAIN (no thread).
 *
 * ss__spill_scan: the same, waiting for the end (tests, tools). Returns
 * the number of objects kept, or -errno.
 */
typedef int (*ss__spill_scan_fn)(void *arg, const ss__spill_loc *loc, const void *meta);
int ss__spill_scan_start(ss__spill *sp, ss__spill_scan_fn fn, void *arg);
int ss__spill_scan_status(const ss__spill *sp);
void ss__spill_scan_cancel(ss__spill *sp);
/* Objects fn kept so far. */
uint64_t ss__spill_scan_kept(const ss__spill *sp);
int ss__spill_scan(ss__spill *sp, ss__spill_scan_fn fn, void *arg);

typedef struct ss__spill_stats {
    uint64_t objects_spilled;  /* spills completed */
    uint64_t bytes_spilled;    /* data bytes of those */
    uint64_t spill_ns;         /* wall time with at least one spill in progress */
    uint64_t objects_restored; /* restores completed with status 0 */
    uint64_t bytes_restored;
    uint64_t restore_ns;       /* wall time with at least one restore in progress */
    uint64_t live_objects;     /* spilled and not deleted (scan included) */
    uint64_t live_bytes;       /* data bytes of those */
    uint64_t files;            /* spill files on disk, fused ones included */
    uint64_t fused_files;      /* of which fused */
    uint64_t disk_bytes;       /* bytes in those files */
    uint64_t deletes;          /* records deleted */
    uint64_t files_removed;    /* files unlinked (all records dead) */
    uint64_t spill_errors;     /* spills completed with an error */
    uint64_t restore_errors;   /* restores completed with an error */
    uint64_t delete_errors;    /* tombstones/unlinks that failed */
    uint64_t damaged;          /* records found damaged (scan or restore) */
    uint64_t scanned;          /* objects scan reported */
    uint64_t scan_bytes;       /* bytes the scan read */
    uint64_t scan_files;       /* spill files the scan has walked */
    bool scanning;             /* the scan runs (started, not over) */
    uint32_t queue_depth;      /* data I/Os allowed in flight */
    uint32_t inflight_peak;    /* most data I/Os ever in flight */
    uint32_t dio_align;        /* O_DIRECT alignment in use; 0: buffered */
    bool uring;                /* io_uring (false: worker-thread fallback) */
    bool sqpoll;               /* io_uring submits from a kernel thread */
    bool direct;               /* O_DIRECT in use */
} ss__spill_stats;

void ss__spill_stats_get(const ss__spill *sp, ss__spill_stats *out);

/*
 * Tests: make the nth (1-based, counted from this call) disk operation of
 * the kinds in `mask` complete with `err` instead of running (with
 * SS_SPILL_INJ_STICKY: the nth and every later one, until disarmed).
 * nth 0 disarms.
 */
enum {
    SS_SPILL_INJ_WRITE = 1u << 0,
    SS_SPILL_INJ_READ = 1u << 1,
    SS_SPILL_INJ_SYNC = 1u << 2,  /* fdatasync of a file or fsync of the directory */
    SS_SPILL_INJ_OPEN = 1u << 3,
    /* the scan thread stalls before each file until stopped (nth != 0) */
    SS_SPILL_INJ_SCAN_STALL = 1u << 4,
    SS_SPILL_INJ_UNLINK = 1u << 5,
    SS_SPILL_INJ_TRUNCATE = 1u << 6,
    /* a file's record table cannot grow (fails with -ENOMEM, err unused) */
    SS_SPILL_INJ_RECS = 1u << 7,
    /* the completion queue cannot grow: the write, read or notified delete
     * that needs it returns -ENOMEM, err unused */
    SS_SPILL_INJ_DONEQ = 1u << 8,
    /* the io_uring's SQ has no free entry for the op being issued (as
     * when the kernel has not yet given back the slots of a batch whose
     * ops already completed), err unused */
    SS_SPILL_INJ_SQFULL = 1u << 9,
    SS_SPILL_INJ_STICKY = 1u << 31,
};
/* Tests: while nonzero, the scan of every engine stalls before each file
 * (as SS_SPILL_INJ_SCAN_STALL; for an engine a store opens itself). */
extern _Atomic int ss__spill_scan_hold;
/* Tests: armed on every engine opened while mask is nonzero (an engine a
 * store opens itself), as ss__spill_inject(sp, mask, nth, err); with
 * SS_SPILL_INJ_STICKY, `hits` failures at most (0: no limit). Set it
 * before the engine opens. */
typedef struct ss__spill_inj_spec {
    unsigned mask, nth, hits;
    int err;
} ss__spill_inj_spec;
extern ss__spill_inj_spec ss__spill_inject_on_open;
/* Tests: while nonzero, ss__spill_delete (a delete nobody waits on) is
 * dropped before it reaches the disk, as a crash right after it would drop
 * it: the record stays on disk and live in the engine. */
extern _Atomic int ss__spill_unwaited_lost;
void ss__spill_inject(ss__spill *sp, unsigned mask, unsigned nth, int err);

#endif /* SEALSTORE_SRC_LIB_SPILL_H */
