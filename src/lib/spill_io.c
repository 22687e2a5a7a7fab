/* SPDX-License-Identifier: MIT */
/*
 * The spill engine's I/O layer: ops and the threads and ring that run them.
 *
 * Owns: the op pool (ss__sp_op_new/release), issuing an op
 * (ss__sp_op_start: a test's injected failure, an SQE on the io_uring, or
 * the worker queue), the worker threads (run_op: pwrite/pread/fdatasync in
 * the fallback; open+fallocate, rename, unlink, ftruncate, hashing and
 * batch building always), the submitter thread (io_uring_enter on the
 * loop's behalf), collecting finished ops (ss__sp_io_reap, which also
 * reissues short and retried transfers, so what it hands back is final),
 * the engine's eventfd, the buffers data ops use (ss__sp_balloc, the span
 * pool) and the injection counter (ss__sp_inj_hit). Starting and stopping
 * all of that is ss__sp_io_start / ss__sp_io_stop.
 *
 * Knows nothing of jobs: an op's job pointer is carried, never followed,
 * May call only
 * spill_file.c (hashing, batch building). Everything above it (spill_job.c,
 * spill_ftab.c, spill_scan.c, spill.c) calls down into it.
 *
 * The concurrency protocol of the queues and threads it runs is written
 * beside struct ss__spill in spill_int.h.
 */
#include "spill_int.h"

#include <fcntl.h>
#include <liburing.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/stat.h>

#include "sys.h"

/* ------------------------------------------------------------ helpers */

void *ss__sp_balloc(uint64_t n)
{
    void *p;

    if (posix_memalign(&p, SS_SP_BLK, (size_t)SS_ALIGN_UP(n ? n : 1, SS_SP_BLK)) != 0)
        return NULL;
    return p;
}

void ss__sp_efd_signal(ss__spill *sp)
{
    (void)ss__sys_eventfd_write(sp->efd, 1);
}

void ss__sp_efd_drain(ss__spill *sp)
{
    uint64_t v;

    (void)ss__sys_eventfd_read(sp->efd, &v); /* -EAGAIN: nothing was signalled */
}

uint8_t *ss__sp_span_get(ss__spill *sp)
{
    void *p = sp->span_free;

    if (p) {
        memcpy(&sp->span_free, p, sizeof(void *));
        sp->span_nfree--;
        return p;
    }
    return ss__sp_balloc(SS_SP_SPAN_BUF);
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

/* --------------------------------------------------------------- ops */

struct ss__sp_op *ss__sp_op_new(ss__spill *sp, struct ss__sp_job *j, int type)
{
    struct ss__sp_op *op = sp->op_free;

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

void ss__sp_op_release(ss__spill *sp, struct ss__sp_op *op)
{
    op->next = sp->op_free;
    sp->op_free = op;
}

static bool op_on_ring(const ss__spill *sp, const struct ss__sp_op *op)
{
    return sp->uring && op->type <= SS_SP_OP_DIRSYNC;
}

static unsigned op_inj_kind(const struct ss__sp_op *op)
{
    switch (op->type) {
    case SS_SP_OP_WRITE:
        return SS_SPILL_INJ_WRITE;
    case SS_SP_OP_READ:
        return SS_SPILL_INJ_READ;
    case SS_SP_OP_FSYNC:
    case SS_SP_OP_DIRSYNC:
        return SS_SPILL_INJ_SYNC;
    case SS_SP_OP_OPEN:
        return SS_SPILL_INJ_OPEN;
    case SS_SP_OP_UNLINK:
        return SS_SPILL_INJ_UNLINK;
    case SS_SP_OP_TRUNCATE:
        return SS_SPILL_INJ_TRUNCATE;
    default:
        return 0;
    }
}

/* Hand an op to a worker (or, for a fake completion, straight to the
 * completed list). */
static void worker_push(ss__spill *sp, struct ss__sp_op *op, bool completed)
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

static void ring_fill(ss__spill *sp, struct io_uring_sqe *sqe, struct ss__sp_op *op)
{
    switch (op->type) {
    case SS_SP_OP_WRITE:
        io_uring_prep_write(sqe, op->fd, op->buf + op->done, (unsigned)(op->len - op->done),
                            op->off + op->done);
        break;
    case SS_SP_OP_READ:
        io_uring_prep_read(sqe, op->fd, op->buf + op->done, (unsigned)(op->len - op->done),
                           op->off + op->done);
        break;
    case SS_SP_OP_FSYNC:
        io_uring_prep_fsync(sqe, op->fd, IORING_FSYNC_DATASYNC);
        break;
    case SS_SP_OP_DIRSYNC:
        io_uring_prep_fsync(sqe, sp->dirfd, 0);
        break;
    }
    io_uring_sqe_set_data(sqe, op);
    sp->to_submit++;
}

/* An SQE, or NULL when every slot is taken (see the protocol in
 * spill_int.h: slots come back when the kernel's submit returns). */
static struct io_uring_sqe *ring_sqe(ss__spill *sp)
{
    struct io_uring_sqe *sqe;

    if (ss__sp_inj_hit(sp, SS_SPILL_INJ_SQFULL))
        return NULL;
    sqe = io_uring_get_sqe(&sp->ring);
    if (!sqe && sp->submit_mode != SS_SP_SUB_THREAD && sp->to_submit) {
        /* entries not yet handed to the kernel: hand them over */
        if (io_uring_submit(&sp->ring) >= 0)
            sp->to_submit = 0;
        sqe = io_uring_get_sqe(&sp->ring);
    }
    return sqe;
}

/* Fill an SQE for op, or queue op on sqw until one is free. */
static void ring_prep(ss__spill *sp, struct ss__sp_op *op)
{
    struct io_uring_sqe *sqe = sp->sqw_head ? NULL : ring_sqe(sp);

    if (!sqe) {
        op->next = NULL;
        if (sp->sqw_tail)
            sp->sqw_tail->next = op;
        else
            sp->sqw_head = op;
        sp->sqw_tail = op;
        return;
    }
    ring_fill(sp, sqe, op);
}

void ss__sp_op_start(ss__spill *sp, struct ss__sp_op *op)
{
    if (!op->started) {
        op->started = true;
        /* in flight from its first issue until ss__sp_io_reap hands it back */
        if (op->type == SS_SP_OP_WRITE || op->type == SS_SP_OP_READ) {
            if (++sp->data_inflight > sp->st.inflight_peak)
                sp->st.inflight_peak = sp->data_inflight;
        } else if (op->type == SS_SP_OP_FSYNC || op->type == SS_SP_OP_DIRSYNC) {
            sp->sync_inflight++;
        }
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

/* What a worker does with an op; returns its result. */
static int64_t run_op(ss__spill *sp, struct ss__sp_op *op)
{
    int fd, rc;

    switch (op->type) {
    case SS_SP_OP_WRITE:
        return ss__sys_pwrite(op->fd, op->buf + op->done, op->len - op->done,
                              op->off + op->done);
    case SS_SP_OP_READ:
        return ss__sys_pread(op->fd, op->buf + op->done, op->len - op->done,
                             op->off + op->done);
    case SS_SP_OP_FSYNC:
        return ss__sys_fdatasync(op->fd);
    case SS_SP_OP_DIRSYNC:
        return ss__sys_fsync(sp->dirfd);
    case SS_SP_OP_OPEN:
        fd = ss__sys_openat(sp->dirfd, op->name, op->oflags, 0600);
        if (fd < 0)
            return fd;
        if (op->prealloc) {
            /* Reserve the whole file up front: ENOSPC shows here, before a
             * byte is written, and the data writes then land inside the
             * file, which ext4 runs in parallel (extending writes take the
             * inode lock exclusively). */
            rc = ss__sys_fallocate(fd, 0, 0, op->prealloc);
            if (rc == -EOPNOTSUPP || rc == -ENOSYS)
                rc = ss__sys_ftruncate(fd, op->prealloc);
            if (rc < 0) {
                ss__sys_close(fd);
                ss__sys_unlinkat(sp->dirfd, op->name, 0);
                return rc;
            }
        }
        return fd;
    case SS_SP_OP_UNLINK:
        return ss__sys_unlinkat(sp->dirfd, op->name, 0);
    case SS_SP_OP_RENAME:
        /* never replace: a name clash means a bug or a foreign file */
        rc = ss__sys_renameat(sp->dirfd, op->name, sp->dirfd, op->name2, RENAME_NOREPLACE);
        if (rc == -EINVAL) { /* a filesystem without RENAME_NOREPLACE */
            struct stat sb;

            if (ss__sys_fstatat(sp->dirfd, op->name2, &sb, AT_SYMLINK_NOFOLLOW) == 0)
                return -EEXIST;
            rc = ss__sys_renameat(sp->dirfd, op->name, sp->dirfd, op->name2, 0);
        }
        return rc;
    case SS_SP_OP_TRUNCATE:
        return ss__sys_ftruncate(op->fd, op->off);
    case SS_SP_OP_HASH:
        ss__xxh64_update(op->hst, op->hp, op->hlen);
        if (op->hout)
            *op->hout = ss__xxh64_digest(op->hst);
        return 0;
    case SS_SP_OP_BUILD:
        ss__sp_batch_build(op->batch);
        return 0;
    }
    return -EINVAL;
}

static void *worker_main(void *arg)
{
    ss__spill *sp = arg;

    /* signals belong to the store's loop thread */
    ss__sys_block_signals(NULL);
    pthread_mutex_lock(&sp->lock);
    for (;;) {
        struct ss__sp_op *op;

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

    ss__sys_block_signals(NULL);
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
            int rc = ss__sys_io_uring_enter(sp->ring.ring_fd, sp->ring.sq.ring_entries, 0, 0);

            if (rc >= 0)
                break;
            if (rc == -EINTR) /* nothing was submitted: again at once */
                continue;
            if ((rc != -EAGAIN && rc != -EBUSY) || tries == 1000) {
                SS_LOG_ONCE(SS_LOG_ERROR, "spill: io_uring_enter: %s", ss_strerror(rc));
                break;
            }
            ss__sys_sleep_ns(100 * 1000); /* the kernel is short of memory or CQ room */
        }
        pthread_mutex_lock(&sp->sub_lock);
    }
    pthread_mutex_unlock(&sp->sub_lock);
    return NULL;
}

static void ring_submit(ss__spill *sp)
{
    int rc;

    if (sp->submit_mode == SS_SP_SUB_THREAD) {
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
        SS_LOG_ONCE(SS_LOG_ERROR, "spill: io_uring_submit: %s", ss_strerror(rc));
    }
    if (sp->to_submit)
        ss__sp_efd_signal(sp); /* come back and submit the rest */
}

/* Hand the SQEs filled since the last call to the kernel, after filling
 * what slots have come back with the ops waiting for one. */
void ss__sp_io_submit(ss__spill *sp)
{
    struct io_uring_sqe *sqe;

    if (!sp->uring)
        return;
    while (sp->sqw_head && (sqe = ring_sqe(sp))) {
        struct ss__sp_op *op = sp->sqw_head;

        sp->sqw_head = op->next;
        if (!sp->sqw_head)
            sp->sqw_tail = NULL;
        op->next = NULL;
        ring_fill(sp, sqe, op);
    }
    if (sp->to_submit)
        ring_submit(sp);
    if (sp->sqw_head)
        ss__sp_efd_signal(sp); /* come back once the kernel frees slots */
}

/* ---------------------------------------------------- reaping and start */

/* A data op's completion: true when it is final (res then holds its
 * outcome: >= 0 all of it transferred, or -errno); false when the rest of
 * it was issued again (a short transfer, or a retry of -EAGAIN/-EINTR). */
static bool data_final(ss__spill *sp, struct ss__sp_op *op)
{
    int64_t res = op->res;

    if (res >= 0 && op->type == SS_SP_OP_READ && res == 0 && op->done < op->len) {
        /* end of file */
        if (op->done < op->need)
            res = -EBADMSG; /* the record is cut short */
        else
            op->done = op->len;
    } else if (res == 0 && op->done < op->len) {
        res = -EIO; /* a write that writes nothing would loop forever */
    } else if ((res == -EAGAIN || res == -EINTR) && op->retries < 16) {
        op->retries++;
        ss__sp_op_start(sp, op);
        return false;
    } else if (res > 0) {
        op->done += (uint64_t)res;
    }
    if (res >= 0 && op->done < op->len) {
        /* short transfer: the rest, same op */
        ss__sp_op_start(sp, op);
        return false;
    }
    op->res = res;
    sp->data_inflight--;
    return true;
}

unsigned ss__sp_io_reap(ss__spill *sp, struct ss__sp_op **out)
{
    struct ss__sp_op *list = NULL, **tail = &list, *op, *done = NULL, **dtail = &done;
    unsigned n = 0, taken = 0;
    bool more = false;

    if (sp->uring) {
        struct io_uring_cqe *cqe;
        unsigned head;

        io_uring_for_each_cqe(&sp->ring, head, cqe) {
            if (taken == SS_SP_PROCESS_BUDGET) {
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
    while (sp->wd_head && taken < SS_SP_PROCESS_BUDGET) {
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
        op->next = NULL;
        if (op->type == SS_SP_OP_WRITE || op->type == SS_SP_OP_READ) {
            if (!data_final(sp, op))
                continue;
        } else if (op->type == SS_SP_OP_FSYNC || op->type == SS_SP_OP_DIRSYNC) {
            sp->sync_inflight--;
        }
        *dtail = op;
        dtail = &op->next;
        n++;
    }
    *out = done;
    return n;
}

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

/* The io_uring (unless refused: then the fallback, logged once). 0, or
 * -errno for an error that is not "io_uring unavailable". */
static int ring_init(ss__spill *sp, unsigned flags)
{
    int rc = -EINVAL;

    /* 4 x qd entries: twice what is in flight (spill_int.h says why) */
    sp->submit_mode = flags & SS_SPILL_INLINE_SUBMIT ? SS_SP_SUB_INLINE : SS_SP_SUB_THREAD;
    if (flags & SS_SPILL_SQPOLL) {
        struct io_uring_params up = { .flags = IORING_SETUP_SQPOLL, .sq_thread_idle = 10 };

        rc = io_uring_queue_init_params(4 * sp->qd, &sp->ring, &up);
        if (rc == 0)
            sp->submit_mode = SS_SP_SUB_SQPOLL;
        else
            ss__log_info("spill: SQPOLL refused (%s): a submitter thread instead",
                         ss_strerror(rc));
    }
    if (rc < 0)
        rc = io_uring_queue_init(4 * sp->qd, &sp->ring, 0);
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
                    "threads (pwrite/pread)", ss_strerror(rc));
        rc = 0;
    }
    return rc;
}

/* The submitter (io_uring, unless SQPOLL or inline) and the workers. */
static int threads_start(ss__spill *sp)
{
    unsigned want = sp->uring ? 1 : (sp->qd < 2 ? 2 : sp->qd > 4 ? 4 : sp->qd);
    int rc = 0;

    if (sp->uring && sp->submit_mode == SS_SP_SUB_THREAD) {
        rc = pthread_create(&sp->sub_thr, NULL, submit_main, sp);
        if (rc)
            return -rc;
        sp->sub_started = true;
        pthread_setname_np(sp->sub_thr, "ss-spill-sub");
    }
    for (sp->nthr = 0; sp->nthr < want; sp->nthr++) {
        rc = pthread_create(&sp->thr[sp->nthr], NULL, worker_main, sp);
        if (rc)
            break;
        pthread_setname_np(sp->thr[sp->nthr], "ss-spill");
    }
    if (sp->nthr == 0) {
        submit_stop(sp);
        return -rc;
    }
    return 0;
}

static void locks_destroy(ss__spill *sp)
{
    pthread_cond_destroy(&sp->sub_cv);
    pthread_mutex_destroy(&sp->sub_lock);
    pthread_cond_destroy(&sp->cv);
    pthread_mutex_destroy(&sp->lock);
}

int ss__sp_io_start(ss__spill *sp, unsigned flags)
{
    int rc;

    sp->efd = ss__sys_eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (sp->efd < 0) {
        rc = sp->efd;
        sp->efd = -1;
        return rc;
    }
    if (!(flags & SS_SPILL_NO_URING) && (rc = ring_init(sp, flags)) < 0)
        goto fail_efd;
    rc = -pthread_mutex_init(&sp->lock, NULL);
    if (rc < 0)
        goto fail_ring;
    pthread_cond_init(&sp->cv, NULL);
    pthread_mutex_init(&sp->sub_lock, NULL);
    pthread_cond_init(&sp->sub_cv, NULL);
    rc = threads_start(sp);
    if (rc < 0)
        goto fail_lock;
    return 0;

fail_lock:
    locks_destroy(sp);
fail_ring:
    if (sp->uring)
        io_uring_queue_exit(&sp->ring);
    sp->uring = false;
fail_efd:
    ss__sys_close(sp->efd);
    sp->efd = -1;
    return rc;
}

void ss__sp_io_stop(ss__spill *sp)
{
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
    while (sp->span_free) {
        void *p = sp->span_free;

        memcpy(&sp->span_free, p, sizeof(void *));
        free(p);
    }
    while (sp->op_free) {
        struct ss__sp_op *op = sp->op_free;

        sp->op_free = op->next;
        free(op);
    }
    locks_destroy(sp);
    ss__sys_close(sp->efd);
    sp->efd = -1;
}
