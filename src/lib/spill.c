/* SPDX-License-Identifier: MIT */
/*
 * The spill engine: asynchronous spill, restore and delete of sealed objects
 * for a single-threaded event loop. spill.h is the contract, spill_int.h
 * the shared internals and the concurrency protocol.
 *
 * Map. Calls go one way, down this list:
 *   spill.c       the engine's public face: open/close, write, read,
 *                 delete, reap, wait, stats, test injection
 *   spill_scan.c  the startup scan (a thread, applied on the loop)
 *   spill_job.c   the jobs' state machines, the scheduler (pump), the
 *                 completion queue and the dispatch of finished ops
 *   spill_ftab.c  the file table: files, record slots, tombstones
 *   spill_io.c    ops and what runs them: the io_uring and its submitter
 *                 thread, the worker threads, reaping finished ops
 *   spill_file.c  the on-disk format, checksums, names, the directory,
 *                 building fused batches and the synchronous file reader
 * Each file's opening comment says what it owns and what it may call;
 * this one may call all the others and is called by the store only.
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
 * leaves alone while hash.busy; for a build, its batch); the op queues
 * are guarded by one mutex. A job's buffers stay allocated until every op
 * of it has completed, so the kernel never writes into freed memory:
 * close waits for that too. The whole protocol (threads, queues, who
 * wakes whom, in which order) is written beside struct ss__spill in
 * spill_int.h.
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

#include <stdlib.h>
#include <string.h>

#include "sys.h"

/* ---------------------------------------------------------------- open */

static bool params_ok(const ss__spill_params *p)
{
    return p && p->dir &&
           !(p->flags & ~(SS_SPILL_NO_URING | SS_SPILL_NO_DIRECT | SS_SPILL_SQPOLL |
                          SS_SPILL_INLINE_SUBMIT)) &&
           !(p->flags & SS_SPILL_SQPOLL && p->flags & SS_SPILL_INLINE_SUBMIT) &&
           p->queue_depth <= SS_SP_MAX_QD && !(p->fused_cap && p->fused_cap < SS_MiB) &&
           p->small_max <= SS_SP_MAX_SMALL_MAX &&
           !(p->chunk &&
             (!SS_IS_POW2(p->chunk) || p->chunk < 64 * SS_KiB || p->chunk > 64 * SS_MiB));
}

/* An engine with the parameters' values (defaults for zeros) and nothing
 * opened yet. */
static ss__spill *engine_new(const ss__spill_params *p)
{
    ss__spill *sp = calloc(1, sizeof(*sp));

    if (!sp)
        return NULL;
    sp->dirfd = sp->lockfd = sp->efd = -1;
    sp->qd = p->queue_depth ? p->queue_depth : SS_SP_DEF_QD;
    sp->fused_cap = p->fused_cap ? p->fused_cap : SS_SP_DEF_FUSED_CAP;
    sp->small_max = p->small_max ? p->small_max : SS_SP_DEF_SMALL_MAX;
    sp->chunk = p->chunk ? p->chunk : SS_SP_DEF_CHUNK;
    sp->next_file = 1;
    sp->next_seq = 1;
    sp->ht_size = 64;
    sp->ht = calloc(sp->ht_size, sizeof(*sp->ht));
    sp->dir = strdup(p->dir);
    if (!sp->ht || !sp->dir) {
        free(sp->ht);
        free(sp->dir);
        free(sp);
        return NULL;
    }
    return sp;
}

static void engine_free(ss__spill *sp)
{
    if (sp->lockfd >= 0)
        ss__sys_close(sp->lockfd);
    if (sp->dirfd >= 0)
        ss__sys_close(sp->dirfd);
    free(sp->ht);
    free(sp->dq);
    free(sp->dir);
    free(sp);
}

static int max_file_id(void *arg, uint64_t id, bool tmp, const char *name)
{
    ss__spill *sp = arg;

    (void)tmp;
    (void)name;
    if (id >= sp->next_file)
        sp->next_file = id + 1;
    return 0;
}

/* The directory: locked, O_DIRECT probed, and the first id no file there
 * has (new files must never take an existing name; scan may not run). */
static int dir_setup(ss__spill *sp, const ss__spill_params *p)
{
    int rc = ss__spill_dir_open(p->dir, &sp->dirfd, &sp->lockfd);

    if (rc < 0)
        return rc;
    if (!(p->flags & SS_SPILL_NO_DIRECT)) {
        rc = ss__spill_dio_probe(sp->dirfd, &sp->dio_align);
        if (rc < 0)
            return rc;
    }
    rc = ss__spill_dir_each(sp->dirfd, max_file_id, sp);
    if (rc < 0)
        return rc;
    sp->scan.limit = sp->next_file;
    return 0;
}

int ss__spill_open(ss__spill **out, const ss__spill_params *p)
{
    ss__spill *sp;
    int rc;

    if (!out || !params_ok(p))
        return -EINVAL;
    if (!(sp = engine_new(p)))
        return -ENOMEM;
    rc = dir_setup(sp, p);
    if (rc < 0)
        goto fail;
    rc = -pthread_mutex_init(&sp->scan.lock, NULL);
    if (rc < 0)
        goto fail;
    rc = -pthread_cond_init(&sp->scan.cv, NULL);
    if (rc < 0)
        goto fail_scan_lock;
    rc = ss__sp_io_start(sp, p->flags);
    if (rc < 0)
        goto fail_scan_cv;
    sp->st.queue_depth = sp->qd;
    sp->st.uring = sp->uring;
    sp->st.sqpoll = sp->uring && sp->submit_mode == SS_SP_SUB_SQPOLL;
    sp->st.direct = sp->dio_align != 0;
    sp->st.dio_align = sp->dio_align;
    if (ss__spill_inject_on_open.mask) { /* tests */
        ss__spill_inject(sp, ss__spill_inject_on_open.mask, ss__spill_inject_on_open.nth,
                         ss__spill_inject_on_open.err);
        sp->inj_hits = ss__spill_inject_on_open.hits;
    }
    ss__log_info("spill: %s: %s, %s I/O%s, queue depth %u", sp->dir,
                 !sp->uring ? "worker threads"
                 : sp->submit_mode == SS_SP_SUB_SQPOLL ? "io_uring (SQPOLL)"
                 : sp->submit_mode == SS_SP_SUB_INLINE ? "io_uring (inline submission)"
                                                 : "io_uring",
                 sp->dio_align ? "O_DIRECT" : "buffered",
                 (p->flags & SS_SPILL_NO_DIRECT) ? " (asked)" : "", sp->qd);
    *out = sp;
    return 0;

fail_scan_cv:
    pthread_cond_destroy(&sp->scan.cv);
fail_scan_lock:
    pthread_mutex_destroy(&sp->scan.lock);
fail:
    engine_free(sp);
    return rc;
}

/* ---------------------------------------------------------------- API */

void ss__spill_close(ss__spill *sp)
{
    struct ss__sp_batch *b;

    if (!sp)
        return;
    ss__spill_scan_cancel(sp);
    sp->closing = true;
    if (ss__spill_wait(sp, SS_SP_CLOSE_WAIT_MS) < 0) {
        /* the kernel may still write into our buffers: leak them all */
        ss__log_error("spill: %s: I/O still in flight after %d s at close; leaking the "
                      "engine's memory", sp->dir, SS_SP_CLOSE_WAIT_MS / 1000);
        return;
    }
    ss__sp_io_stop(sp);
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
    pthread_cond_destroy(&sp->scan.cv);
    pthread_mutex_destroy(&sp->scan.lock);
    engine_free(sp);
}

int ss__spill_event_fd(const ss__spill *sp)
{
    return sp ? sp->efd : -EINVAL;
}

int ss__spill_write(ss__spill *sp, const ss_id *id, uint32_t uid, const void *data,
                    uint64_t size, const void *meta, uint32_t meta_size, uint64_t cookie)
{
    return ss__spill_write_flags(sp, id, uid, 0, data, size, meta, meta_size, cookie);
}

int ss__spill_write_flags(ss__spill *sp, const ss_id *id, uint32_t uid, uint32_t rflags,
                          const void *data, uint64_t size, const void *meta,
                          uint32_t meta_size, uint64_t cookie)
{
    int rc;

    if (!sp || !id || (size && !data) || (meta_size && !meta) || meta_size > SS_SPILL_META_MAX ||
        size > (1ull << 50) || (rflags & ~(uint32_t)SS_SPILL_REC_BOUND))
        return -EINVAL;
    if (sp->closing)
        return -ESHUTDOWN;
    if (ss__sp_done_reserve(sp) < 0)
        return -ENOMEM;
    if (size <= sp->small_max)
        rc = ss__sp_small_append(sp, id, uid, rflags, data, size, meta, meta_size, cookie);
    else
        rc = ss__sp_large_start(sp, id, uid, rflags, data, size, meta, meta_size, cookie);
    if (rc < 0) {
        ss__sp_done_unreserve(sp);
        return rc;
    }
    ss__sp_pump(sp);
    return 0;
}

int ss__spill_read(ss__spill *sp, const ss__spill_loc *loc, void *dst, void *meta_dst,
                   uint64_t cookie)
{
    struct ss__sp_file *f;
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
    f = ss__sp_loc_lookup(sp, loc, &idx);
    if (!f)
        return -ENOENT;
    if (ss__sp_done_reserve(sp) < 0)
        return -ENOMEM;
    rc = ss__sp_read_start(sp, f, loc, dst, meta_dst, cookie);
    if (rc < 0) {
        ss__sp_done_unreserve(sp);
        return rc;
    }
    ss__sp_pump(sp);
    return 0;
}

_Atomic int ss__spill_unwaited_lost;

/* cookie NULL: nobody hears when it is durable */
static int delete_rec(ss__spill *sp, const ss__spill_loc *loc, const uint64_t *cookie)
{
    struct ss__sp_file *f;
    long idx;

    if (!sp || !loc)
        return -EINVAL;
    f = ss__sp_loc_lookup(sp, loc, &idx);
    if (!f)
        return -ENOENT;
    if (!cookie && atomic_load(&ss__spill_unwaited_lost))
        return 0; /* tests: as if a crash came before it reached the disk */
    if (cookie && ss__sp_done_reserve(sp) < 0)
        return -ENOMEM;
    ss__sp_rec_kill(sp, f, idx, loc->size);
    if (ss__sp_tomb_add(f, loc->offset, cookie) < 0) {
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
    if (f->state == SS_SP_F_LIVE)
        ss__sp_tomb_kick(sp, f);
    ss__sp_pump(sp);
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
    ss__sp_efd_drain(sp);
    ss__sp_process(sp);
    ss__sp_scan_poll(sp);
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

        ss__sp_process(sp);
        if (ss__sp_idle(sp))
            break;
        now = ss__now_ns();
        if (now >= deadline) {
            rc = -ETIMEDOUT;
            break;
        }
        /* wake at least once a second: cheap insurance against a lost wakeup */
        ms = deadline - now > 1000000000ull ? 1000 : (int)((deadline - now) / 1000000) + 1;
        if (ss__sys_poll(&pfd, 1, ms) > 0)
            ss__sp_efd_drain(sp);
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
