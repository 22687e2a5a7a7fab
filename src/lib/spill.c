/* SPDX-License-Identifier: MIT */
/*
 * The spill engine: asynchronous spill, restore and delete of sealed objects
 * for a single-threaded event loop. spill.h is the contract, spill_int.h
 * the shared internals, spill_job.c the job state machines, spill_file.c
 * the format, the directory and the file reader behind scan; this file has
 * the ops, the threads, the file table, the API and scan.
 *
 * Jobs and ops. Every request becomes a job, a small state machine:
 *   LARGE   object of its own file: open+fallocate "<id>.tmp" -> data
 *           chunks and tail -> header (once hashed) -> fdatasync -> rename
 *           to "<id>.spill" -> directory fsync -> done
 *   BATCH   small objects gathered as descriptors (only their meta is
 *           copied at once), built into one buffer by the worker (copy,
 *           checksums) and written as one append to the current fused
 *           file -> fdatasync (-> rename and directory fsync when the
 *           batch created the file) -> done
 *   READ    a small record: one read of the whole record into a pooled
 *           buffer through a read fd kept per file; a large one: open ->
 *           header block, data chunks straight into the caller's memory,
 *           tail -> checksums -> done
 *   TOMB    open -> 8-byte tombstones of deleted fused records -> fdatasync
 *   UNLINK  unlink a file whose records are all dead -> directory fsync
 * A job advances by issuing ops and reacting to their completions. Ops of
 * three classes:
 *   data  reads and writes, at most queue_depth in flight, handed out one
 *         chunk at a time round-robin over the jobs that have some ready,
 *         so one huge object cannot starve the rest;
 *   sync  fdatasync and directory fsync, at most queue_depth in flight;
 *   meta  open (+fallocate), rename, unlink, ftruncate, hashing and
 *         building batches: always on the worker thread, since they may
 *         block or take a while, and io_uring in liburing 2.3 cannot
 *         express all of them.
 * With io_uring, data and sync ops are SQEs filled by the loop and handed
 * over once per call (a batch) to the submitter thread, which calls
 * io_uring_enter: submitting O_DIRECT I/O pins pages and builds bios in the
 * caller's context (~35 us per MiB here, and several ms when the device
 * queue is busy), which must not be the loop's time. The CQ stays with the
 * loop (liburing allows one thread per side); completions arrive there and
 * the registered eventfd wakes the store's epoll. In the fallback every op
 * runs on worker threads (pwrite, pread, fdatasync), and a worker writes
 * the eventfd when it finishes one.
 * Both paths complete an op the same way (op_done), so the engine above
 * them cannot tell them apart.
 *
 * Group commit. Directory fsyncs are shared: jobs that need one queue up,
 * one fsync runs at a time and covers every job queued before it started.
 * Small objects that arrive while a batch is in flight gather in the next
 * batch, so under load many objects share one write and one fdatasync.
 *
 * Hashing (XXH64, ~24 GB/s on one core here) of objects above 256 KiB runs
 * on the worker in 8 MiB pieces, overlapping the disk: a spill hashes the
 * source while its chunks are written; a restore hashes the prefix of the
 * destination whose chunks have arrived. Small spills are hashed while
 * their batch is built; small restores are checked inline (microseconds).
 * One reap handles at most 64 completions, so no call holds the loop for
 * long (measured: at most ~0.3 ms of CPU per call, 0.4-1% of the loop's
 * time while spilling or restoring at disk speed; bench/spill_probe.c).
 *
 * Threads. The engine belongs to the loop thread. Workers touch only the
 * op they run (and, for a hash op, its job's hash state, which the loop
 * leaves alone while hash_busy); the op queues are guarded by one mutex.
 * A job's buffers stay allocated until every op of it has completed, so
 * the kernel never writes into freed memory: close waits for that too.
 *
 * Files. The engine keeps a table of its files: per file the offsets of its
 * records (bit 63: dead), the live count, and references held by jobs
 * using it. A file is unlinked when its live count is zero, no job uses
 * it and it is not the fused file being appended to. Location checks
 * against this table make a double delete or a stale location -ENOENT
 * instead of a premature unlink.
 *
 * Failure. A failed op marks its job failed; once nothing of the job is in
 * flight it cleans up: a new file is unlinked (and the directory fsync'ed
 * if the file had its final name), a failed append to a fused file is
 * truncated back and the file fdatasync'ed, and that file takes no more
 * appends. Only then is the failure reported, so a failed spill leaves no
 * record a restart's scan would accept; if the cleanup fails as well, the
 * record is registered live and reported as a copy (spill.h,
 * ss__spill_done), for the caller to delete. Every spill or restore
 * completes exactly once, with its status.
 */
#include "spill_int.h"

#include <dirent.h>
#include <fcntl.h>
#include <liburing.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "sys.h"

/* ------------------------------------------------------------- helpers */

static void scan_poll(ss__spill *sp);
static void pump(ss__spill *sp);

void *ss__sp_balloc(uint64_t n)
{
    void *p;

    if (posix_memalign(&p, BLK, (size_t)SS_ALIGN_UP(n ? n : 1, BLK)) != 0)
        return NULL;
    return p;
}

void ss__sp_efd_signal(ss__spill *sp)
{
    uint64_t one = 1;

    (void)!write(sp->efd, &one, sizeof(one));
}

static void efd_drain(ss__spill *sp)
{
    uint64_t v;

    (void)!read(sp->efd, &v, sizeof(v));
}

void ss__sp_busy_inc(unsigned *active, uint64_t *t0)
{
    if ((*active)++ == 0)
        *t0 = ss__now_ns();
}

void ss__sp_busy_dec(unsigned *active, uint64_t t0, uint64_t *ns)
{
    if (*active && --(*active) == 0)
        *ns += ss__now_ns() - t0;
}

void ss__sp_push_done(ss__spill *sp, const ss__spill_done *d)
{
    if (sp->dq_head + sp->dq_n == sp->dq_cap) {
        if (sp->dq_head) {
            memmove(sp->dq, sp->dq + sp->dq_head, sp->dq_n * sizeof(*sp->dq));
            sp->dq_head = 0;
        } else {
            size_t cap = sp->dq_cap ? sp->dq_cap * 2 : 64;
            ss__spill_done *n = realloc(sp->dq, cap * sizeof(*n));

            if (!n) {
                /* nowhere to put it: the caller would wait forever, so
                 * this is the one place that must not fail; spin on
                 * malloc rather than drop a completion */
                ss__log_error("spill: out of memory queueing a completion; retrying");
                while (!(n = realloc(sp->dq, cap * sizeof(*n))))
                    usleep(1000);
            }
            sp->dq = n;
            sp->dq_cap = cap;
        }
    }
    sp->dq[sp->dq_head + sp->dq_n++] = *d;
}

uint8_t *ss__sp_span_get(ss__spill *sp)
{
    void *p = sp->span_free;

    if (p) {
        memcpy(&sp->span_free, p, sizeof(void *));
        sp->span_nfree--;
        return p;
    }
    return ss__sp_balloc(SPAN_BUF);
}

void ss__sp_span_put(ss__spill *sp, uint8_t *p)
{
    if (sp->span_nfree >= 2 * sp->qd) {
        free(p);
        return;
    }
    memcpy(p, &sp->span_free, sizeof(void *));
    sp->span_free = p;
    sp->span_nfree++;
}

/* ---------------------------------------------------------- file table */

static size_t ht_slot(const ss__spill *sp, uint64_t id)
{
    return (size_t)((id * 0x9E3779B97F4A7C15ull) >> 32) & (sp->ht_size - 1);
}

struct sfile *ss__sp_file_find(const ss__spill *sp, uint64_t id)
{
    struct sfile *f;

    for (f = sp->ht[ht_slot(sp, id)]; f; f = f->hnext)
        if (f->id == id)
            return f;
    return NULL;
}

struct sfile *ss__sp_file_new(ss__spill *sp, uint64_t id)
{
    struct sfile *f;

    if (sp->nfiles + 1 > sp->ht_size) {
        size_t nsz = sp->ht_size * 2;
        struct sfile **nt = calloc(nsz, sizeof(*nt));

        if (nt) {
            struct sfile **old = sp->ht;
            size_t osz = sp->ht_size;

            sp->ht = nt;
            sp->ht_size = nsz;
            for (size_t i = 0; i < osz; i++) {
                while (old[i]) {
                    struct sfile *g = old[i];

                    old[i] = g->hnext;
                    g->hnext = sp->ht[ht_slot(sp, g->id)];
                    sp->ht[ht_slot(sp, g->id)] = g;
                }
            }
            free(old);
        } /* else: longer chains, still correct */
    }
    f = calloc(1, sizeof(*f));
    if (!f)
        return NULL;
    f->id = id;
    f->fd = -1;
    f->rfd = -1;
    f->hnext = sp->ht[ht_slot(sp, id)];
    sp->ht[ht_slot(sp, id)] = f;
    sp->nfiles++;
    return f;
}

void ss__sp_file_free(ss__spill *sp, struct sfile *f)
{
    struct sfile **pp = &sp->ht[ht_slot(sp, f->id)];

    while (*pp && *pp != f)
        pp = &(*pp)->hnext;
    if (*pp) {
        *pp = f->hnext;
        sp->nfiles--;
    }
    if (f->fd >= 0)
        close(f->fd);
    if (f->rfd >= 0)
        close(f->rfd);
    if (sp->fused_cur == f)
        sp->fused_cur = NULL;
    free(f->recs);
    free(f->tomb);
    free(f->dwait); /* completed by the unlink; at close, dropped */
    free(f);
}

/* Room for one more in a growing array of *n values (capacity *cap). */
static int u64_reserve(uint64_t **a, uint32_t n, uint32_t *cap)
{
    return SS_ARRAY_RESERVE(*a, *cap, (size_t)n + 1, 4);
}

bool ss__sp_inj_hit(ss__spill *sp, unsigned kind)
{
    if (!sp->inj_left || !(sp->inj_mask & kind))
        return false;
    if (sp->inj_left > 1) {
        sp->inj_left--;
        return false;
    }
    if (!sp->inj_sticky || (sp->inj_hits && --sp->inj_hits == 0))
        sp->inj_left = 0;
    return true;
}

int ss__sp_rec_reserve(ss__spill *sp, struct sfile *f, uint32_t n)
{
    uint32_t c = f->crecs ? f->crecs : 4;
    uint64_t *na;

    if (f->crecs - f->nrecs >= n)
        return 0;
    if (ss__sp_inj_hit(sp, SS_SPILL_INJ_RECS))
        return -ENOMEM;
    while (c - f->nrecs < n) {
        if (c > UINT32_MAX / 2)
            return -ENOMEM;
        c *= 2;
    }
    na = realloc(f->recs, c * sizeof(*na));
    if (!na)
        return -ENOMEM;
    f->recs = na;
    f->crecs = c;
    return 0;
}

int ss__sp_rec_add(ss__spill *sp, struct sfile *f, uint64_t off)
{
    if (ss__sp_rec_reserve(sp, f, 1) < 0)
        return -ENOMEM;
    SS_ASSERT(f->nrecs == 0 || (f->recs[f->nrecs - 1] & ~DEAD) < off);
    f->recs[f->nrecs++] = off;
    return 0;
}

/* Index of the record at `off`, live or dead, or -1. */
long ss__sp_rec_find(const struct sfile *f, uint64_t off)
{
    long lo = 0, hi = (long)f->nrecs - 1;

    while (lo <= hi) {
        long mid = lo + (hi - lo) / 2;
        uint64_t v = f->recs[mid] & ~DEAD;

        if (v == off)
            return mid;
        if (v < off)
            lo = mid + 1;
        else
            hi = mid - 1;
    }
    return -1;
}

/* The live record a location names, or NULL. */
static struct sfile *loc_lookup(ss__spill *sp, const ss__spill_loc *loc, long *idx)
{
    struct sfile *f = ss__sp_file_find(sp, loc->file);
    long i;

    if (!f || f->state != F_LIVE)
        return NULL;
    i = ss__sp_rec_find(f, loc->offset);
    if (i < 0 || (f->recs[i] & DEAD))
        return NULL;
    *idx = i;
    return f;
}

void ss__sp_file_get(struct sfile *f)
{
    f->refs++;
}

void ss__sp_file_put(ss__spill *sp, struct sfile *f)
{
    SS_ASSERT(f->refs > 0);
    f->refs--;
    ss__sp_maybe_reclaim(sp, f);
}

/* --------------------------------------------------------------- ops */

struct op *ss__sp_op_new(ss__spill *sp, struct job *j, int type)
{
    struct op *op = sp->op_free;

    if (op)
        sp->op_free = op->next;
    else if (!(op = malloc(sizeof(*op))))
        return NULL;
    memset(op, 0, sizeof(*op));
    op->job = j;
    op->type = (uint8_t)type;
    op->fd = -1;
    return op;
}

void ss__sp_op_release(ss__spill *sp, struct op *op)
{
    op->next = sp->op_free;
    sp->op_free = op;
}

static bool op_on_ring(const ss__spill *sp, const struct op *op)
{
    return sp->uring && op->type <= OP_DIRSYNC;
}

static unsigned op_inj_kind(const struct op *op)
{
    switch (op->type) {
    case OP_WRITE:
        return SS_SPILL_INJ_WRITE;
    case OP_READ:
        return SS_SPILL_INJ_READ;
    case OP_FSYNC:
    case OP_DIRSYNC:
        return SS_SPILL_INJ_SYNC;
    case OP_OPEN:
        return SS_SPILL_INJ_OPEN;
    case OP_UNLINK:
        return SS_SPILL_INJ_UNLINK;
    case OP_TRUNCATE:
        return SS_SPILL_INJ_TRUNCATE;
    default:
        return 0;
    }
}

/* Hand an op to a worker (or, for a fake completion, straight to the
 * completed list). */
static void worker_push(ss__spill *sp, struct op *op, bool completed)
{
    bool wake;

    pthread_mutex_lock(&sp->lock);
    op->next = NULL;
    if (completed) {
        wake = !sp->wd_head;
        if (sp->wd_tail)
            sp->wd_tail->next = op;
        else
            sp->wd_head = op;
        sp->wd_tail = op;
    } else {
        if (sp->wq_tail)
            sp->wq_tail->next = op;
        else
            sp->wq_head = op;
        sp->wq_tail = op;
        pthread_cond_signal(&sp->cv);
        wake = false;
    }
    pthread_mutex_unlock(&sp->lock);
    if (wake)
        ss__sp_efd_signal(sp);
}

static void ring_prep(ss__spill *sp, struct op *op)
{
    struct io_uring_sqe *sqe = io_uring_get_sqe(&sp->ring);

    if (!sqe && sp->submit_mode != SUB_THREAD) {
        /* in flight is bounded by the SQ size, so only unsubmitted
         * entries can fill it */
        if (io_uring_submit(&sp->ring) >= 0)
            sp->to_submit = 0;
        sqe = io_uring_get_sqe(&sp->ring);
    }
    if (!sqe) {
        op->res = -EAGAIN;
        worker_push(sp, op, true);
        return;
    }
    switch (op->type) {
    case OP_WRITE:
        io_uring_prep_write(sqe, op->fd, op->buf + op->done, (unsigned)(op->len - op->done),
                            op->off + op->done);
        break;
    case OP_READ:
        io_uring_prep_read(sqe, op->fd, op->buf + op->done, (unsigned)(op->len - op->done),
                           op->off + op->done);
        break;
    case OP_FSYNC:
        io_uring_prep_fsync(sqe, op->fd, IORING_FSYNC_DATASYNC);
        break;
    case OP_DIRSYNC:
        io_uring_prep_fsync(sqe, sp->dirfd, 0);
        break;
    }
    io_uring_sqe_set_data(sqe, op);
    sp->to_submit++;
}

void ss__sp_op_start(ss__spill *sp, struct op *op)
{
    if (!op->started) {
        op->started = true;
        if (ss__sp_inj_hit(sp, op_inj_kind(op))) {
            op->res = sp->inj_err;
            worker_push(sp, op, true);
            return;
        }
    }
    if (op_on_ring(sp, op))
        ring_prep(sp, op);
    else
        worker_push(sp, op, false);
}

/* Meta ops: straight to the worker; they count in io_pending. */
void ss__sp_meta_op(ss__spill *sp, struct job *j, struct op *op)
{
    j->io_pending++;
    ss__sp_op_start(sp, op);
}

int ss__sp_sync_op(ss__spill *sp, struct job *j, int fd)
{
    struct op *op = ss__sp_op_new(sp, j, OP_FSYNC);

    if (!op) {
        if (!j->status)
            j->status = -ENOMEM;
        return -ENOMEM;
    }
    op->fd = fd;
    j->io_pending++;
    op->next = NULL;
    if (sp->syncq_tail)
        sp->syncq_tail->next = op;
    else
        sp->syncq_head = op;
    sp->syncq_tail = op;
    return 0;
}

struct op *ss__sp_name_op(ss__spill *sp, struct job *j, int type, uint64_t file, bool tmp)
{
    struct op *op = ss__sp_op_new(sp, j, type);

    if (op)
        ss__spill_name(op->name, file, tmp);
    else if (!j->status)
        j->status = -ENOMEM;
    return op;
}

/* What a worker does with an op; returns its result. */
static int64_t run_op(ss__spill *sp, struct op *op)
{
    ssize_t n;
    int fd, rc;

    switch (op->type) {
    case OP_WRITE:
        do
            n = pwrite(op->fd, op->buf + op->done, op->len - op->done,
                       (off_t)(op->off + op->done));
        while (n < 0 && errno == EINTR);
        return n < 0 ? -errno : n;
    case OP_READ:
        do
            n = pread(op->fd, op->buf + op->done, op->len - op->done,
                      (off_t)(op->off + op->done));
        while (n < 0 && errno == EINTR);
        return n < 0 ? -errno : n;
    case OP_FSYNC:
        return fdatasync(op->fd) < 0 ? -errno : 0;
    case OP_DIRSYNC:
        return fsync(sp->dirfd) < 0 ? -errno : 0;
    case OP_OPEN:
        fd = openat(sp->dirfd, op->name, op->oflags, 0600);
        if (fd < 0)
            return -errno;
        if (op->prealloc) {
            /* Reserve the whole file up front: ENOSPC shows here, before a
             * byte is written, and the data writes then land inside the
             * file, which ext4 runs in parallel (extending writes take the
             * inode lock exclusively). */
            do
                rc = fallocate(fd, 0, 0, (off_t)op->prealloc);
            while (rc < 0 && errno == EINTR);
            if (rc < 0 && (errno == EOPNOTSUPP || errno == ENOSYS))
                rc = ftruncate(fd, (off_t)op->prealloc);
            if (rc < 0) {
                rc = -errno;
                close(fd);
                unlinkat(sp->dirfd, op->name, 0);
                return rc;
            }
        }
        return fd;
    case OP_UNLINK:
        return unlinkat(sp->dirfd, op->name, 0) < 0 ? -errno : 0;
    case OP_RENAME:
        /* never replace: a name clash means a bug or a foreign file */
        rc = renameat2(sp->dirfd, op->name, sp->dirfd, op->name2, RENAME_NOREPLACE);
        if (rc < 0 && errno == EINVAL) {
            struct stat sb;

            if (fstatat(sp->dirfd, op->name2, &sb, AT_SYMLINK_NOFOLLOW) == 0)
                return -EEXIST;
            rc = renameat(sp->dirfd, op->name, sp->dirfd, op->name2);
        }
        return rc < 0 ? -errno : 0;
    case OP_TRUNCATE:
        return ftruncate(op->fd, (off_t)op->off) < 0 ? -errno : 0;
    case OP_HASH:
        ss__xxh64_update(op->hst, op->hp, op->hlen);
        if (op->hout)
            *op->hout = ss__xxh64_digest(op->hst);
        return 0;
    case OP_BUILD:
        ss__sp_batch_build(op->job->batch);
        return 0;
    }
    return -EINVAL;
}

static void *worker_main(void *arg)
{
    ss__spill *sp = arg;
    sigset_t all;

    /* signals belong to the store's loop thread */
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, NULL);
    pthread_mutex_lock(&sp->lock);
    for (;;) {
        struct op *op;

        while (!sp->wq_head && !sp->wstop)
            pthread_cond_wait(&sp->cv, &sp->lock);
        if (!sp->wq_head)
            break;
        op = sp->wq_head;
        sp->wq_head = op->next;
        if (!sp->wq_head)
            sp->wq_tail = NULL;
        pthread_mutex_unlock(&sp->lock);
        op->res = run_op(sp, op);
        op->next = NULL;
        pthread_mutex_lock(&sp->lock);
        if (sp->wd_tail) {
            sp->wd_tail->next = op;
            sp->wd_tail = op;
        } else {
            sp->wd_head = sp->wd_tail = op;
            /* first in an empty list: the loop may be asleep */
            ss__sp_efd_signal(sp);
        }
    }
    pthread_mutex_unlock(&sp->lock);
    return NULL;
}

/* ------------------------------------------------------ the loop side */

static void data_done(ss__spill *sp, struct op *op)
{
    struct job *j = op->job;
    struct xfer *x = &j->x[op->part];
    int64_t res = op->res;

    sp->data_inflight--;
    if (res >= 0 && op->type == OP_READ && res == 0 && op->done < op->len) {
        /* end of file */
        if (op->done < op->need)
            res = -EBADMSG; /* the record is cut short */
        else
            op->done = op->len;
    } else if (res == 0 && op->done < op->len) {
        res = -EIO; /* a write that writes nothing would loop forever */
    } else if ((res == -EAGAIN || res == -EINTR) && op->retries < 16) {
        op->retries++;
        sp->data_inflight++;
        ss__sp_op_start(sp, op);
        return;
    } else if (res > 0) {
        op->done += (uint64_t)res;
    }
    if (res >= 0 && op->done < op->len) {
        /* short transfer: the rest, same op */
        sp->data_inflight++;
        ss__sp_op_start(sp, op);
        return;
    }
    j->io_pending--;
    if (res < 0) {
        if (res == -EBADMSG && j->kind == J_READ) {
            char hex[2 * SS_ID_SIZE + 1];

            ss__spill_id_hex(&j->loc.id, hex);
            ss__log_error("spill: restore of object %s from file %016llx at %llu failed: "
                          "the file is truncated", hex, (unsigned long long)j->loc.file,
                          (unsigned long long)j->loc.offset);
            sp->st.damaged++;
        }
        ss__sp_job_fail(j, (int)res);
    } else {
        if (op->type == OP_READ)
            SS_SP_DEFINED(op->buf, op->done);
        x->completed += op->len;
        if (j->progressive && x->buf == j->dst)
            j->bits[op->idx / 8] |= (uint8_t)(1u << (op->idx % 8));
    }
    ss__sp_op_release(sp, op);
    ss__sp_job_advance(sp, j);
}

static void op_done(ss__spill *sp, struct op *op)
{
    struct job *j = op->job;

    switch (op->type) {
    case OP_WRITE:
    case OP_READ:
        data_done(sp, op);
        return;
    case OP_DIRSYNC:
        sp->sync_inflight--;
        ss__sp_dirsync_done(sp, op->res);
        ss__sp_op_release(sp, op);
        return;
    case OP_FSYNC:
        sp->sync_inflight--;
        if (op->res < 0) {
            ss__log_error("spill: fdatasync of file %016llx failed: %s",
                          (unsigned long long)j->file->id, strerror((int)-op->res));
            if (j->state == S_CLEANSYNC)
                j->cleanup_err = (int)op->res;
            else
                ss__sp_job_fail(j, (int)op->res);
        }
        break;
    case OP_OPEN:
        if (op->res >= 0) {
            j->fd = (int)op->res;
            j->created = (op->oflags & O_CREAT) != 0;
        } else {
            ss__sp_job_fail(j, (int)op->res);
        }
        break;
    case OP_UNLINK:
    case OP_RENAME:
        /* a name already gone needs only the directory fsync that follows */
        if (op->type == OP_UNLINK && op->res == -ENOENT)
            op->res = 0;
        if (op->res < 0 && j->state == S_CLEANUP)
            j->cleanup_err = (int)op->res;
        else if (op->res < 0)
            ss__sp_job_fail(j, (int)op->res);
        break;
    case OP_TRUNCATE: /* only a failed append's cleanup truncates */
        if (op->res < 0)
            j->cleanup_err = (int)op->res;
        break;
    case OP_HASH:
        j->hash_busy = false;
        ss__sp_op_release(sp, op);
        ss__sp_job_advance(sp, j);
        return;
    }
    j->io_pending--;
    ss__sp_op_release(sp, op);
    ss__sp_job_advance(sp, j);
}

/* The SQ side, split between two threads: the loop fills SQEs and
 * publishes the tail (what io_uring_submit would do before entering the
 * kernel); the submitter thread enters the kernel. Every entry up to the
 * published tail gets submitted, whoever asks. */
static void sq_publish(struct io_uring *r)
{
    struct io_uring_sq *sq = &r->sq;

    if (sq->sqe_head != sq->sqe_tail) {
        sq->sqe_head = sq->sqe_tail;
        io_uring_smp_store_release(sq->ktail, sq->sqe_tail);
    }
}

static void *submit_main(void *arg)
{
    ss__spill *sp = arg;
    sigset_t all;

    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, NULL);
    pthread_mutex_lock(&sp->sub_lock);
    for (;;) {
        while (!sp->sub_kick && !sp->sub_stop)
            pthread_cond_wait(&sp->sub_cv, &sp->sub_lock);
        if (!sp->sub_kick)
            break;
        sp->sub_kick = false;
        pthread_mutex_unlock(&sp->sub_lock);
        for (int tries = 0;; tries++) {
            /* ring_entries: submit whatever is published */
            long rc = syscall(__NR_io_uring_enter, sp->ring.ring_fd, sp->ring.sq.ring_entries,
                              0, 0, NULL, 0);

            if (rc >= 0 || errno == EINTR)
                break;
            if ((errno != EAGAIN && errno != EBUSY) || tries == 1000) {
                SS_LOG_ONCE(SS_LOG_ERROR, "spill: io_uring_enter: %s", strerror(errno));
                break;
            }
            usleep(100); /* the kernel is short of memory or CQ room */
        }
        pthread_mutex_lock(&sp->sub_lock);
    }
    pthread_mutex_unlock(&sp->sub_lock);
    return NULL;
}

static void ring_submit(ss__spill *sp)
{
    int rc;

    if (sp->submit_mode == SUB_THREAD) {
        sq_publish(&sp->ring);
        sp->to_submit = 0;
        pthread_mutex_lock(&sp->sub_lock);
        sp->sub_kick = true;
        pthread_cond_signal(&sp->sub_cv);
        pthread_mutex_unlock(&sp->sub_lock);
        return;
    }
    rc = io_uring_submit(&sp->ring);
    if (rc >= 0) {
        sp->to_submit = (unsigned)rc >= sp->to_submit ? 0 : sp->to_submit - (unsigned)rc;
    } else if (rc != -EINTR && rc != -EAGAIN && rc != -EBUSY) {
        SS_LOG_ONCE(SS_LOG_ERROR, "spill: io_uring_submit: %s", strerror(-rc));
    }
    if (sp->to_submit)
        ss__sp_efd_signal(sp); /* come back and submit the rest */
}

static void pump(ss__spill *sp)
{
    ss__sp_batch_kick(sp);
    while (sp->syncq_head && sp->sync_inflight < sp->qd) {
        struct op *op = sp->syncq_head;

        sp->syncq_head = op->next;
        if (!sp->syncq_head)
            sp->syncq_tail = NULL;
        sp->sync_inflight++;
        ss__sp_op_start(sp, op);
    }
    if (!sp->ds_busy && sp->ds_wait && sp->sync_inflight < sp->qd) {
        struct op *op = ss__sp_op_new(sp, NULL, OP_DIRSYNC);

        if (op) {
            sp->ds_run = sp->ds_wait;
            sp->ds_wait = NULL;
            sp->ds_busy = true;
            sp->sync_inflight++;
            ss__sp_op_start(sp, op);
        }
    }
    while (sp->data_inflight < sp->qd && sp->ready_head) {
        struct job *j = sp->ready_head;

        sp->ready_head = j->next;
        if (!sp->ready_head)
            sp->ready_tail = NULL;
        j->in_ready = false;
        if (ss__sp_job_issue(sp, j))
            ss__sp_job_ready(sp, j);
        else if (j->status && !j->io_pending)
            ss__sp_job_advance(sp, j); /* failed before it had anything in flight */
    }
    if (sp->uring && sp->to_submit)
        ring_submit(sp);
}

/* Handle finished ops (at most PROCESS_BUDGET: a call must not hold the
 * loop for long; what is left keeps the eventfd readable), then start
 * what can start. */
static unsigned process(ss__spill *sp)
{
    struct op *list = NULL, **tail = &list, *op;
    unsigned n = 0, taken = 0;
    bool more = false;

    if (sp->uring) {
        struct io_uring_cqe *cqe;
        unsigned head;

        io_uring_for_each_cqe(&sp->ring, head, cqe) {
            if (taken == PROCESS_BUDGET) {
                more = true;
                break;
            }
            op = io_uring_cqe_get_data(cqe);
            op->res = cqe->res;
            op->next = NULL;
            *tail = op;
            tail = &op->next;
            taken++;
        }
        io_uring_cq_advance(&sp->ring, taken);
    }
    pthread_mutex_lock(&sp->lock);
    while (sp->wd_head && taken < PROCESS_BUDGET) {
        op = sp->wd_head;
        sp->wd_head = op->next;
        op->next = NULL;
        *tail = op;
        tail = &op->next;
        taken++;
    }
    if (!sp->wd_head)
        sp->wd_tail = NULL;
    else
        more = true;
    pthread_mutex_unlock(&sp->lock);
    if (more)
        ss__sp_efd_signal(sp);
    while (list) {
        op = list;
        list = op->next;
        op_done(sp, op);
        n++;
    }
    pump(sp);
    return n;
}

static bool idle(const ss__spill *sp)
{
    return sp->njobs == 0 && !(sp->stage && sp->stage->n) && !sp->pend_head;
}

/* ---------------------------------------------------------------- API */

static void submit_stop(ss__spill *sp)
{
    if (!sp->sub_started)
        return;
    pthread_mutex_lock(&sp->sub_lock);
    sp->sub_stop = true;
    pthread_cond_signal(&sp->sub_cv);
    pthread_mutex_unlock(&sp->sub_lock);
    pthread_join(sp->sub_thr, NULL);
    sp->sub_started = false;
}

int ss__spill_open(ss__spill **out, const ss__spill_params *p)
{
    ss__spill *sp;
    DIR *d;
    struct dirent *e;
    int rc, dfd;

    if (!out || !p || !p->dir ||
        (p->flags & ~(SS_SPILL_NO_URING | SS_SPILL_NO_DIRECT | SS_SPILL_SQPOLL |
                      SS_SPILL_INLINE_SUBMIT)) ||
        (p->flags & SS_SPILL_SQPOLL && p->flags & SS_SPILL_INLINE_SUBMIT) ||
        p->queue_depth > MAX_QD || (p->fused_cap && p->fused_cap < SS_MiB) ||
        p->small_max > MAX_SMALL_MAX ||
        (p->chunk && (!SS_IS_POW2(p->chunk) || p->chunk < 64 * SS_KiB || p->chunk > 64 * SS_MiB)))
        return -EINVAL;
    sp = calloc(1, sizeof(*sp));
    if (!sp)
        return -ENOMEM;
    sp->dirfd = sp->lockfd = sp->efd = -1;
    sp->qd = p->queue_depth ? p->queue_depth : DEF_QD;
    sp->fused_cap = p->fused_cap ? p->fused_cap : DEF_FUSED_CAP;
    sp->small_max = p->small_max ? p->small_max : DEF_SMALL_MAX;
    sp->chunk = p->chunk ? p->chunk : DEF_CHUNK;
    sp->next_file = 1;
    sp->next_seq = 1;
    sp->ht_size = 64;
    sp->ht = calloc(sp->ht_size, sizeof(*sp->ht));
    sp->dir = strdup(p->dir);
    if (!sp->ht || !sp->dir) {
        rc = -ENOMEM;
        goto fail;
    }
    rc = ss__spill_dir_open(p->dir, &sp->dirfd, &sp->lockfd);
    if (rc < 0)
        goto fail;
    if (!(p->flags & SS_SPILL_NO_DIRECT)) {
        rc = ss__spill_dio_probe(sp->dirfd, &sp->dio_align);
        if (rc < 0)
            goto fail;
    }
    /* New files must never take an existing name (scan may not run). */
    dfd = dup(sp->dirfd);
    if (dfd < 0 || !(d = fdopendir(dfd))) {
        rc = -errno;
        if (dfd >= 0)
            close(dfd);
        goto fail;
    }
    rewinddir(d); /* a dup shares the directory offset with dirfd */
    while ((e = readdir(d)) != NULL) {
        uint64_t id;
        bool tmp;

        if (ss__spill_parse_name(e->d_name, &id, &tmp) == 0 && id >= sp->next_file)
            sp->next_file = id + 1;
    }
    closedir(d);
    sp->scan.limit = sp->next_file;

    sp->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (sp->efd < 0) {
        rc = -errno;
        goto fail;
    }
    if (!(p->flags & SS_SPILL_NO_URING)) {
        /* data + sync ops in flight never exceed 2 x qd: the SQ size */
        rc = -EINVAL;
        sp->submit_mode = p->flags & SS_SPILL_INLINE_SUBMIT ? SUB_INLINE : SUB_THREAD;
        if (p->flags & SS_SPILL_SQPOLL) {
            struct io_uring_params up = { .flags = IORING_SETUP_SQPOLL, .sq_thread_idle = 10 };

            rc = io_uring_queue_init_params(2 * sp->qd, &sp->ring, &up);
            if (rc == 0)
                sp->submit_mode = SUB_SQPOLL;
            else
                ss__log_info("spill: SQPOLL refused (%s): a submitter thread instead",
                             strerror(-rc));
        }
        if (rc < 0)
            rc = io_uring_queue_init(2 * sp->qd, &sp->ring, 0);
        if (rc == 0) {
            rc = io_uring_register_eventfd(&sp->ring, sp->efd);
            if (rc < 0)
                io_uring_queue_exit(&sp->ring);
        }
        if (rc == 0) {
            sp->uring = true;
        } else if (rc == -ENOSYS || rc == -EPERM || rc == -EINVAL || rc == -ENOMEM ||
                   rc == -EOPNOTSUPP) {
            SS_LOG_ONCE(SS_LOG_WARN, "spill: io_uring unavailable (%s): spilling with worker "
                        "threads (pwrite/pread)", strerror(-rc));
        } else {
            goto fail;
        }
    }
    rc = pthread_mutex_init(&sp->lock, NULL);
    if (rc) {
        rc = -rc;
        goto fail_ring;
    }
    pthread_cond_init(&sp->cv, NULL);
    pthread_mutex_init(&sp->sub_lock, NULL);
    pthread_cond_init(&sp->sub_cv, NULL);
    pthread_mutex_init(&sp->scan.lock, NULL);
    pthread_cond_init(&sp->scan.cv, NULL);
    if (sp->uring && sp->submit_mode == SUB_THREAD) {
        rc = pthread_create(&sp->sub_thr, NULL, submit_main, sp);
        if (rc) {
            rc = -rc;
            goto fail_lock;
        }
        sp->sub_started = true;
        pthread_setname_np(sp->sub_thr, "ss-spill-sub");
    }
    {
        unsigned want = sp->uring ? 1 : (sp->qd < 2 ? 2 : sp->qd > 4 ? 4 : sp->qd);

        for (sp->nthr = 0; sp->nthr < want; sp->nthr++) {
            rc = pthread_create(&sp->thr[sp->nthr], NULL, worker_main, sp);
            if (rc)
                break;
            pthread_setname_np(sp->thr[sp->nthr], "ss-spill");
        }
        if (sp->nthr == 0) {
            rc = -rc;
            goto fail_sub;
        }
    }
    sp->st.queue_depth = sp->qd;
    sp->st.uring = sp->uring;
    sp->st.sqpoll = sp->uring && sp->submit_mode == SUB_SQPOLL;
    sp->st.direct = sp->dio_align != 0;
    sp->st.dio_align = sp->dio_align;
    if (ss__spill_inject_on_open.mask) { /* tests */
        ss__spill_inject(sp, ss__spill_inject_on_open.mask, ss__spill_inject_on_open.nth,
                         ss__spill_inject_on_open.err);
        sp->inj_hits = ss__spill_inject_on_open.hits;
    }
    ss__log_info("spill: %s: %s, %s I/O%s, queue depth %u", sp->dir,
                 !sp->uring ? "worker threads"
                 : sp->submit_mode == SUB_SQPOLL ? "io_uring (SQPOLL)"
                 : sp->submit_mode == SUB_INLINE ? "io_uring (inline submission)"
                                                 : "io_uring",
                 sp->dio_align ? "O_DIRECT" : "buffered",
                 (p->flags & SS_SPILL_NO_DIRECT) ? " (asked)" : "", sp->qd);
    *out = sp;
    return 0;

fail_sub:
    submit_stop(sp);
fail_lock:
    pthread_cond_destroy(&sp->scan.cv);
    pthread_mutex_destroy(&sp->scan.lock);
    pthread_cond_destroy(&sp->sub_cv);
    pthread_mutex_destroy(&sp->sub_lock);
    pthread_cond_destroy(&sp->cv);
    pthread_mutex_destroy(&sp->lock);
fail_ring:
    if (sp->uring)
        io_uring_queue_exit(&sp->ring);
fail:
    if (sp->efd >= 0)
        close(sp->efd);
    if (sp->lockfd >= 0)
        close(sp->lockfd);
    if (sp->dirfd >= 0)
        close(sp->dirfd);
    free(sp->ht);
    free(sp->dir);
    free(sp);
    return rc;
}

void ss__spill_close(ss__spill *sp)
{
    struct batch *b;

    if (!sp)
        return;
    ss__spill_scan_cancel(sp);
    sp->closing = true;
    if (ss__spill_wait(sp, CLOSE_WAIT_MS) < 0) {
        /* the kernel may still write into our buffers: leak them all */
        ss__log_error("spill: %s: I/O still in flight after %d s at close; leaking the "
                      "engine's memory", sp->dir, CLOSE_WAIT_MS / 1000);
        return;
    }
    pthread_mutex_lock(&sp->lock);
    sp->wstop = true;
    pthread_cond_broadcast(&sp->cv);
    pthread_mutex_unlock(&sp->lock);
    for (unsigned i = 0; i < sp->nthr; i++)
        pthread_join(sp->thr[i], NULL);
    /* after the last completion: the submitter's exit would cancel
     * requests it submitted */
    submit_stop(sp);
    if (sp->uring)
        io_uring_queue_exit(&sp->ring);
    for (size_t i = 0; i < sp->ht_size; i++)
        while (sp->ht[i])
            ss__sp_file_free(sp, sp->ht[i]);
    if (sp->stage) { /* empty: wait flushed anything in it */
        sp->stage->next = sp->bfree;
        sp->bfree = sp->stage;
        sp->stage = NULL;
    }
    while ((b = sp->bfree)) {
        sp->bfree = b->next;
        free(b->r);
        free(b->meta);
        free(b);
    }
    free(sp->bbuf);
    while (sp->span_free) {
        void *p = sp->span_free;

        memcpy(&sp->span_free, p, sizeof(void *));
        free(p);
    }
    while (sp->op_free) {
        struct op *op = sp->op_free;

        sp->op_free = op->next;
        free(op);
    }
    pthread_cond_destroy(&sp->scan.cv);
    pthread_mutex_destroy(&sp->scan.lock);
    pthread_cond_destroy(&sp->sub_cv);
    pthread_mutex_destroy(&sp->sub_lock);
    pthread_cond_destroy(&sp->cv);
    pthread_mutex_destroy(&sp->lock);
    close(sp->efd);
    close(sp->lockfd);
    close(sp->dirfd);
    free(sp->ht);
    free(sp->dq);
    free(sp->dir);
    free(sp);
}

int ss__spill_event_fd(const ss__spill *sp)
{
    return sp ? sp->efd : -EINVAL;
}

int ss__spill_write(ss__spill *sp, const ss_id *id, uint32_t uid, const void *data,
                    uint64_t size, const void *meta, uint32_t meta_size, uint64_t cookie)
{
    int rc;

    if (!sp || !id || (size && !data) || (meta_size && !meta) || meta_size > SS_SPILL_META_MAX ||
        size > (1ull << 50))
        return -EINVAL;
    if (sp->closing)
        return -ESHUTDOWN;
    if (size <= sp->small_max)
        rc = ss__sp_small_append(sp, id, uid, data, size, meta, meta_size, cookie);
    else
        rc = ss__sp_large_start(sp, id, uid, data, size, meta, meta_size, cookie);
    if (rc == 0)
        pump(sp);
    return rc;
}

int ss__spill_read(ss__spill *sp, const ss__spill_loc *loc, void *dst, void *meta_dst,
                   uint64_t cookie)
{
    struct sfile *f;
    long idx;
    int rc;

    if (!sp || !loc || (loc->size && !dst))
        return -EINVAL;
    if (sp->closing)
        return -ESHUTDOWN;
    if (loc->meta_size > SS_SPILL_META_MAX ||
        loc->data_off < sizeof(ss__spill_rec) + loc->meta_size || loc->size > (1ull << 50) ||
        loc->rec_len < loc->data_off + loc->size || loc->rec_len % SS_SPILL_REC_ALIGN ||
        loc->offset % SS_SPILL_REC_ALIGN)
        return -EINVAL;
    f = loc_lookup(sp, loc, &idx);
    if (!f)
        return -ENOENT;
    rc = ss__sp_read_start(sp, f, loc, dst, meta_dst, cookie);
    if (rc == 0)
        pump(sp);
    return rc;
}

void ss__sp_dwait_done(ss__spill *sp, const uint64_t *cookie, uint32_t n, int status)
{
    for (uint32_t i = 0; i < n; i++) {
        ss__spill_done d = { .cookie = cookie[i], .status = status, .op = SS_SPILL_OP_DELETE };
        ss__sp_push_done(sp, &d);
    }
    if (n)
        ss__sp_efd_signal(sp);
}

/* Queue a tombstone for the record at off (and the caller's cookie): the
 * durable-delete protocol beside struct sfile. */
static int tomb_add(struct sfile *f, uint64_t off, const uint64_t *cookie)
{
    if (u64_reserve(&f->tomb, f->ntomb, &f->ctomb) < 0 ||
        (cookie && u64_reserve(&f->dwait, f->ndwait, &f->cdwait) < 0))
        return -ENOMEM;
    f->tomb[f->ntomb++] = off;
    if (cookie)
        f->dwait[f->ndwait++] = *cookie;
    return 0;
}

_Atomic int ss__spill_unwaited_lost;

/* cookie NULL: nobody hears when it is durable */
static int delete_rec(ss__spill *sp, const ss__spill_loc *loc, const uint64_t *cookie)
{
    struct sfile *f;
    long idx;

    if (!sp || !loc)
        return -EINVAL;
    f = loc_lookup(sp, loc, &idx);
    if (!f)
        return -ENOENT;
    if (!cookie && atomic_load(&ss__spill_unwaited_lost))
        return 0; /* tests: as if a crash came before it reached the disk */
    f->recs[idx] |= DEAD;
    f->live--;
    sp->st.deletes++;
    sp->st.live_objects--;
    sp->st.live_bytes -= loc->size < sp->st.live_bytes ? loc->size : sp->st.live_bytes;
    if (tomb_add(f, loc->offset, cookie) < 0) {
        /* dead in memory at least; the tombstone is lost */
        sp->st.delete_errors++;
        ss__log_error("spill: out of memory recording a tombstone");
        if (cookie)
            ss__sp_dwait_done(sp, cookie, 1, -ENOMEM);
    }
    if (f->live == 0) {
        /* the unlink, once it starts, makes the tombstones moot */
        if (f == sp->fused_cur && !(sp->batch_job && sp->batch_job->file == f))
            ss__sp_fused_retire(sp); /* reclaims it */
        else
            ss__sp_maybe_reclaim(sp, f);
    }
    /* a file that cannot go yet (in use, or records on their way into
     * it) gets its tombstones: nothing waits on a later unlink */
    if (f->state == F_LIVE)
        ss__sp_tomb_kick(sp, f);
    pump(sp);
    return 0;
}

int ss__spill_delete(ss__spill *sp, const ss__spill_loc *loc)
{
    return delete_rec(sp, loc, NULL);
}

int ss__spill_delete_notify(ss__spill *sp, const ss__spill_loc *loc, uint64_t cookie)
{
    return delete_rec(sp, loc, &cookie);
}

int ss__spill_reap(ss__spill *sp, ss__spill_done *done, int max)
{
    int n = 0;

    if (!sp || max < 0 || (max && !done))
        return -EINVAL;
    efd_drain(sp);
    process(sp);
    scan_poll(sp);
    while (n < max && sp->dq_n) {
        done[n++] = sp->dq[sp->dq_head++];
        sp->dq_n--;
    }
    if (!sp->dq_n)
        sp->dq_head = 0;
    else
        ss__sp_efd_signal(sp); /* more to hand out: stay readable */
    return n;
}

int ss__spill_wait(ss__spill *sp, int timeout_ms)
{
    uint64_t deadline = timeout_ms < 0 ? UINT64_MAX : ss__now_ns() + (uint64_t)timeout_ms * 1000000;
    int rc = 0;

    for (;;) {
        struct pollfd pfd = { .fd = sp->efd, .events = POLLIN };
        uint64_t now;
        int ms;

        process(sp);
        if (idle(sp))
            break;
        now = ss__now_ns();
        if (now >= deadline) {
            rc = -ETIMEDOUT;
            break;
        }
        /* wake at least once a second: cheap insurance against a lost wakeup */
        ms = deadline - now > 1000000000ull ? 1000 : (int)((deadline - now) / 1000000) + 1;
        if (poll(&pfd, 1, ms) > 0)
            efd_drain(sp);
    }
    if (sp->dq_n)
        ss__sp_efd_signal(sp);
    return rc;
}

void ss__spill_stats_get(const ss__spill *sp, ss__spill_stats *out)
{
    uint64_t now = ss__now_ns();

    *out = sp->st;
    out->scan_bytes = atomic_load_explicit(&sp->scan.ctl.bytes,
                                           memory_order_relaxed);
    out->scan_files = atomic_load_explicit(&sp->scan.files_done,
                                           memory_order_relaxed);
    out->scanning = sp->scan.started && !sp->scan.over;
    if (sp->spill_active)
        out->spill_ns += now - sp->spill_t0;
    if (sp->restore_active)
        out->restore_ns += now - sp->restore_t0;
}

void ss__spill_inject(ss__spill *sp, unsigned mask, unsigned nth, int err)
{
    atomic_store(&sp->inj_scan_stall, (mask & SS_SPILL_INJ_SCAN_STALL) && nth);
    sp->inj_sticky = (mask & SS_SPILL_INJ_STICKY) != 0;
    sp->inj_mask = mask & ~(unsigned)(SS_SPILL_INJ_SCAN_STALL | SS_SPILL_INJ_STICKY);
    sp->inj_left = nth;
    sp->inj_hits = 0;
    sp->inj_err = err;
}

ss__spill_inj_spec ss__spill_inject_on_open;

/* ---------------------------------------------------------------- scan */

#define SCAN_CHUNK_RECS 1024u             /* records per chunk */
#define SCAN_CHUNK_META (256u * 1024)     /* meta bytes per chunk (one record may pass it) */
#define SCAN_QUEUE_MAX 4u                 /* chunks waiting for the loop */
#define SCAN_APPLY_MAX 4u                 /* chunks applied per reap */

/* What the thread found in one file, or part of it (see ss__spill_scan_st). */
struct scan_chunk {
    struct scan_chunk *next;
    uint64_t file;
    uint32_t n;
    bool last;               /* the file is done: err and res are valid */
    int err;                 /* last: the walk's result */
    ss__spill_walk_res res;  /* last */
    uint32_t meta_used;
    ss__spill_loc loc[SCAN_CHUNK_RECS];
    uint32_t meta_off[SCAN_CHUNK_RECS];
    uint8_t meta[SCAN_CHUNK_META + SS_SPILL_META_MAX];
};

/* Thread: queue a chunk for the loop. -ECANCELED (chunk freed) when told
 * to stop meanwhile. */
static int scan_push(ss__spill *sp, struct scan_chunk *c)
{
    ss__spill_scan_st *sc = &sp->scan;

    pthread_mutex_lock(&sc->lock);
    while (sc->q_n >= SCAN_QUEUE_MAX && !atomic_load(&sc->ctl.stop))
        pthread_cond_wait(&sc->cv, &sc->lock);
    if (atomic_load(&sc->ctl.stop)) {
        pthread_mutex_unlock(&sc->lock);
        free(c);
        return -ECANCELED;
    }
    c->next = NULL;
    if (sc->q_tail)
        sc->q_tail->next = c;
    else
        sc->q_head = c;
    sc->q_tail = c;
    sc->q_n++;
    pthread_mutex_unlock(&sc->lock);
    ss__sp_efd_signal(sp);
    return 0;
}

struct scan_walk {
    ss__spill *sp;
    struct scan_chunk *c;
    uint64_t file;
};

static struct scan_chunk *chunk_new(uint64_t file)
{
    struct scan_chunk *c = malloc(sizeof(*c));

    if (c) {
        c->file = file;
        c->n = 0;
        c->last = false;
        c->err = 0;
        c->meta_used = 0;
        memset(&c->res, 0, sizeof(c->res));
    }
    return c;
}

/* Thread: the walk's callback, one good live record. */
static int scan_collect(void *arg, const ss__spill_loc *loc, const void *meta)
{
    struct scan_walk *w = arg;
    struct scan_chunk *c = w->c;

    if (c->n == SCAN_CHUNK_RECS || c->meta_used > SCAN_CHUNK_META) {
        int rc = scan_push(w->sp, c);

        w->c = NULL;
        if (rc < 0)
            return rc;
        if (!(w->c = c = chunk_new(w->file)))
            return -ENOMEM;
    }
    c->loc[c->n] = *loc;
    c->meta_off[c->n] = c->meta_used;
    memcpy(c->meta + c->meta_used, meta, loc->meta_size);
    c->meta_used += loc->meta_size;
    c->n++;
    return 0;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

    return (x > y) - (x < y);
}

/* Thread: the directory's spill files, sorted (leftover .tmp files are
 * removed on the way). */
static int scan_list(ss__spill *sp, uint64_t **out, size_t *nout)
{
    uint64_t *ids = NULL;
    size_t nids = 0, cids = 0, removed = 0;
    DIR *d;
    struct dirent *e;
    int dfd, rc = 0;

    dfd = dup(sp->dirfd);
    if (dfd < 0 || !(d = fdopendir(dfd))) {
        rc = -errno;
        if (dfd >= 0)
            close(dfd);
        return rc;
    }
    rewinddir(d); /* a dup shares the directory offset with dirfd */
    while ((e = readdir(d)) != NULL) {
        uint64_t id;
        bool tmp;

        if (ss__spill_parse_name(e->d_name, &id, &tmp) < 0 || id >= sp->scan.limit)
            continue;
        if (tmp) {
            /* a spill that never completed: its object is still in
             * whatever memory held it, or was lost with the store */
            ss__log_info("spill: removing unfinished spill file %s", e->d_name);
            if (unlinkat(sp->dirfd, e->d_name, 0) == 0)
                removed++;
            continue;
        }
        if (nids == cids) {
            size_t cap = cids ? cids * 2 : 64;
            uint64_t *n = realloc(ids, cap * sizeof(*n));

            if (!n) {
                rc = -ENOMEM;
                break;
            }
            ids = n;
            cids = cap;
        }
        ids[nids++] = id;
    }
    closedir(d);
    if (removed)
        fsync(sp->dirfd);
    if (rc < 0) {
        free(ids);
        return rc;
    }
    if (nids > 1) /* qsort(NULL, 0, ...) is undefined */
        qsort(ids, nids, sizeof(*ids), cmp_u64);
    *out = ids;
    *nout = nids;
    return 0;
}

_Atomic int ss__spill_scan_hold;

static bool scan_held(ss__spill *sp)
{
    return atomic_load(&sp->inj_scan_stall) || atomic_load(&ss__spill_scan_hold);
}

/* Tests: hold the thread before its next file until it is told to stop or
 * the hold ends (ss__spill_scan_hold is polled: nobody signals it). */
static void scan_stall(ss__spill *sp)
{
    ss__spill_scan_st *sc = &sp->scan;

    if (!scan_held(sp))
        return;
    pthread_mutex_lock(&sc->lock);
    while (!atomic_load(&sc->ctl.stop) && scan_held(sp)) {
        struct timespec ts;

        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 10 * 1000000;
        if (ts.tv_nsec >= 1000000000) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000;
        }
        pthread_cond_timedwait(&sc->cv, &sc->lock, &ts);
    }
    pthread_mutex_unlock(&sc->lock);
}

static void *scan_main(void *arg)
{
    ss__spill *sp = arg;
    ss__spill_scan_st *sc = &sp->scan;
    uint64_t *ids = NULL;
    size_t nids = 0;
    sigset_t all;
    int rc;

    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, NULL);
    rc = scan_list(sp, &ids, &nids);
    for (size_t i = 0; rc == 0 && i < nids; i++) {
        char name[SS_SPILL_NAME_MAX];
        struct scan_walk w = { .sp = sp, .file = ids[i] };
        ss__spill_walk_res res;
        int wrc;

        scan_stall(sp);
        if (atomic_load(&sc->ctl.stop) || !(w.c = chunk_new(ids[i]))) {
            rc = atomic_load(&sc->ctl.stop) ? -ECANCELED : -ENOMEM;
            break;
        }
        ss__spill_name(name, ids[i], false);
        wrc = ss__spill_walk(sp->dirfd, name, ids[i], sp->dio_align, &sc->ctl, scan_collect,
                             &w, &res);
        if (!w.c) { /* the callback's push failed or no memory */
            rc = wrc < 0 ? wrc : -ENOMEM;
            break;
        }
        if (wrc == -ECANCELED || wrc == -ENOMEM) {
            free(w.c);
            rc = wrc;
            break;
        }
        w.c->last = true;
        w.c->err = wrc;
        w.c->res = res;
        atomic_fetch_add_explicit(&sc->files_done, 1, memory_order_relaxed);
        rc = scan_push(sp, w.c);
    }
    free(ids);
    pthread_mutex_lock(&sc->lock);
    sc->done = true;
    sc->err_thread = rc;
    pthread_mutex_unlock(&sc->lock);
    ss__sp_efd_signal(sp);
    return NULL;
}

/* Loop: one record of the file being applied. */
static int scan_rec(ss__spill *sp, struct sfile *f, const ss__spill_loc *loc, const void *meta)
{
    ss__spill_scan_st *sc = &sp->scan;
    int rc;

    if (ss__sp_rec_add(sp, f, loc->offset) < 0)
        return -ENOMEM;
    f->live++;
    sp->st.live_objects++;
    sp->st.live_bytes += loc->size;
    sp->st.scanned++;
    if (loc->seq >= sp->next_seq)
        sp->next_seq = loc->seq + 1;
    rc = sc->fn ? sc->fn(sc->arg, loc, meta) : 1;
    if (rc < 0)
        return rc;
    if (rc == 0) {
        sc->kept++;
        return 0;
    }
    if (sc->ndrop == sc->cdrop) {
        size_t cap = sc->cdrop ? sc->cdrop * 2 : 16;
        ss__spill_loc *n = realloc(sc->drop, cap * sizeof(*n));

        if (!n)
            return -ENOMEM;
        sc->drop = n;
        sc->cdrop = cap;
    }
    sc->drop[sc->ndrop++] = *loc;
    return 0;
}

/* Loop: the records the caller dropped (an older copy, say) die now and get
 * their tombstones (or the file goes, when nothing in it lives). */
static void scan_drops(ss__spill *sp, struct sfile *f)
{
    ss__spill_scan_st *sc = &sp->scan;

    for (size_t k = 0; k < sc->ndrop; k++) {
        long idx = ss__sp_rec_find(f, sc->drop[k].offset);

        if (idx < 0 || (f->recs[idx] & DEAD))
            continue;
        f->recs[idx] |= DEAD;
        f->live--;
        sp->st.live_objects--;
        sp->st.live_bytes -= sc->drop[k].size;
        sp->st.deletes++;
        if (u64_reserve(&f->tomb, f->ntomb, &f->ctomb) < 0)
            continue; /* dead here; a later scan drops it again */
        f->tomb[f->ntomb++] = sc->drop[k].offset;
    }
    sc->ndrop = 0;
}

/* Loop: the end of a file's records. */
static int scan_file_end(ss__spill *sp, struct sfile *f, const struct scan_chunk *c)
{
    char name[SS_SPILL_NAME_MAX];

    ss__spill_name(name, c->file, false);
    sp->st.damaged += c->res.damaged;
    if (c->err < 0 && (!f || f->nrecs == 0)) {
        if (c->err == -ENODEV)
            ss__log_warn("spill: %s/%s is not a regular file: ignored", sp->dir, name);
        else if (c->err == -ENOENT || c->err == -EACCES || c->err == -EIO ||
                 c->err == -EISDIR || c->err == -ELOOP) {
            ss__log_error("spill: cannot read spill file %s: %s: skipped", name,
                          strerror(-c->err));
            sp->st.damaged++;
        } else {
            return c->err;
        }
        if (f) {
            f->refs--;
            ss__sp_file_free(sp, f);
        }
        return 0;
    }
    if (!f && !(f = ss__sp_file_new(sp, c->file)))
        return -ENOMEM;
    if (f->state != F_LIVE) { /* registered just now: hold it like the others */
        f->state = F_LIVE;
        ss__sp_file_get(f);
    }
    f->size = c->res.size;
    f->fused = c->res.fused;
    if (c->res.max_seq >= sp->next_seq)
        sp->next_seq = c->res.max_seq + 1;
    sp->st.files++;
    sp->st.fused_files += f->fused;
    sp->st.disk_bytes += f->size;
    if (f->live == 0) {
        if (c->res.damaged || c->err < 0)
            ss__log_error("spill: removing spill file %s: nothing in it is readable", name);
        else
            ss__log_info("spill: removing spill file %s: every object in it is deleted",
                         name);
        sp->scan.removed++;
    } else {
        ss__sp_tomb_kick(sp, f);
    }
    ss__sp_file_put(sp, f); /* unlinked now if nothing in it lives */
    return c->err;
}

/* Loop: apply one chunk; -errno stops the scan. */
static int scan_apply(ss__spill *sp, struct scan_chunk *c)
{
    ss__spill_scan_st *sc = &sp->scan;
    struct sfile *f = sc->cur;
    int rc = 0;

    if (c->n && !f) {
        if (!(f = ss__sp_file_new(sp, c->file)))
            return -ENOMEM;
        /* the scan's reference keeps it from being unlinked while records
         * of it are still to come (drops and deletes can kill the first) */
        f->state = F_LIVE;
        ss__sp_file_get(f);
        sc->cur = f;
    }
    for (uint32_t i = 0; i < c->n && rc == 0; i++)
        rc = scan_rec(sp, f, &c->loc[i], c->meta + c->meta_off[i]);
    if (f)
        scan_drops(sp, f);
    if (rc < 0)
        return rc;
    if (c->last) {
        sc->cur = NULL;
        rc = scan_file_end(sp, f, c);
    }
    return rc;
}

/* Loop: the scan is over (status: 1 done, -errno). */
static void scan_over(ss__spill *sp, int status)
{
    ss__spill_scan_st *sc = &sp->scan;

    pthread_mutex_lock(&sc->lock);
    atomic_store(&sc->ctl.stop, true);
    pthread_cond_broadcast(&sc->cv);
    pthread_mutex_unlock(&sc->lock);
    if (sc->started)
        pthread_join(sc->thr, NULL);
    while (sc->q_head) {
        struct scan_chunk *c = sc->q_head;

        sc->q_head = c->next;
        free(c);
    }
    sc->q_tail = NULL;
    sc->q_n = 0;
    if (sc->cur) {
        /* cut short in the middle of a file: what was applied stays */
        struct sfile *f = sc->cur;

        sc->cur = NULL;
        sp->st.files++;
        sp->st.fused_files += f->fused;
        ss__sp_file_put(sp, f);
    }
    free(sc->drop);
    sc->drop = NULL;
    sc->ndrop = sc->cdrop = 0;
    sc->over = true;
    sc->status = status;
    pump(sp);
}

static void scan_poll(ss__spill *sp)
{
    ss__spill_scan_st *sc = &sp->scan;
    bool done, more;
    int err;

    if (!sc->started || sc->over)
        return;
    for (unsigned k = 0; k < SCAN_APPLY_MAX; k++) {
        struct scan_chunk *c;
        int rc;

        pthread_mutex_lock(&sc->lock);
        c = sc->q_head;
        if (c) {
            sc->q_head = c->next;
            if (!sc->q_head)
                sc->q_tail = NULL;
            sc->q_n--;
            pthread_cond_signal(&sc->cv);
        }
        pthread_mutex_unlock(&sc->lock);
        if (!c)
            break;
        rc = scan_apply(sp, c);
        free(c);
        if (rc < 0) {
            ss__log_error("spill: %s: scan stopped: %s", sp->dir, strerror(-rc));
            scan_over(sp, rc);
            return;
        }
    }
    pthread_mutex_lock(&sc->lock);
    more = sc->q_head != NULL; /* the queue is the scan thread's too: read it locked */
    done = sc->done && !more;
    err = sc->err_thread;
    pthread_mutex_unlock(&sc->lock);
    if (done) {
        if (err < 0)
            ss__log_error("spill: %s: scan stopped: %s", sp->dir, strerror(-err));
        scan_over(sp, err < 0 ? err : 1);
    } else if (more) {
        ss__sp_efd_signal(sp); /* more than one turn's worth: come back */
    } else {
        pump(sp);
    }
}

int ss__spill_scan_start(ss__spill *sp, ss__spill_scan_fn fn, void *arg)
{
    ss__spill_scan_st *sc;
    int rc;

    if (!sp)
        return -EINVAL;
    sc = &sp->scan;
    if (sp->scanned || sp->njobs || sp->nfiles || (sp->stage && sp->stage->n))
        return -EBUSY;
    sp->scanned = true;
    sc->fn = fn;
    sc->arg = arg;
    rc = pthread_create(&sc->thr, NULL, scan_main, sp);
    if (rc) {
        sc->over = true;
        sc->status = -rc;
        return -rc;
    }
    pthread_setname_np(sc->thr, "ss-scan");
    sc->started = true;
    return 0;
}

int ss__spill_scan_status(const ss__spill *sp)
{
    return sp && sp->scan.over ? sp->scan.status : 0;
}

uint64_t ss__spill_scan_kept(const ss__spill *sp)
{
    return sp ? sp->scan.kept : 0;
}

void ss__spill_scan_cancel(ss__spill *sp)
{
    if (sp && sp->scan.started && !sp->scan.over)
        scan_over(sp, -ECANCELED);
}

int ss__spill_scan(ss__spill *sp, ss__spill_scan_fn fn, void *arg)
{
    int rc = ss__spill_scan_start(sp, fn, arg);

    if (rc < 0)
        return rc;
    while ((rc = ss__spill_scan_status(sp)) == 0) {
        struct pollfd pfd = { .fd = sp->efd, .events = POLLIN };

        /* wake at least once a second: cheap insurance against a lost wakeup */
        if (poll(&pfd, 1, 1000) > 0)
            efd_drain(sp);
        process(sp);
        scan_poll(sp);
    }
    if (sp->dq_n)
        ss__sp_efd_signal(sp);
    if (rc < 0)
        return rc;
    return sp->scan.kept > INT32_MAX ? INT32_MAX : (int)sp->scan.kept;
}
