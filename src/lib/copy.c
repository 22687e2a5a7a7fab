/* SPDX-License-Identifier: MIT */
/*
 * The copy engine (copy.h): worker threads that copy a job's source
 * ranges, remote (process_vm_readv) or local (memcpy), into its
 * destination; completions go to the loop thread through an eventfd.
 *
 * Protocol. `lock` guards todo, todo_tail, done, inflight, stop and, in
 * each queued job, rc, claimed and left. The loop (ss__copy_submit) fills
 * a job, sets nchunks, claimed 0, left nchunks, rc 0 and appends it to
 * todo under the lock, then signals `work` (broadcast for a split job).
 * A worker takes range `claimed++` of the head job under the lock (the
 * job leaves todo when its last range is taken), copies that range
 * unlocked (reading only the submitter's fields, which nobody writes while
 * the job is queued, and writing only its own part of dst), then under
 * the lock records a first error in rc and decrements left; the worker
 * that brings left to 0 pushes the job on done (LIFO; `next` is free by
 * then: the job left todo when its last range was taken), decrements
 * inflight (broadcasting `idle` at 0) and writes the eventfd. The loop
 * (ss__copy_complete) reads the eventfd, takes the whole done list under
 * the lock and runs the handlers unlocked, oldest first: the unlock/lock
 * pair orders every worker's writes to the job and to dst before them.
 * Workers exit once stop is set and todo is empty, so a close runs every
 * queued job.
 *
 * Spinning (ss__copy_set_spin, SEALSTORE_BUSY_POLL). A worker about to
 * wait for work may instead spin for it, one worker at a time: under the
 * lock, with todo empty, no spinner and a spin window to take, it sets
 * `spinning` and unlocks; it polls `queued` (a relaxed hint the submitter
 * stores under the lock) with a yield between polls until it is non-zero
 * or the window passes; then it takes the lock, clears `spinning`, records
 * hit or miss in `spin` (the spinner's alone, under the lock) and goes
 * back to the usual check of todo under the lock. A submitter that finds
 * `spinning` set, under the lock, with its single-range job the only one
 * queued, leaves it to the spinner and wakes nobody: the spinner has not
 * yet taken the lock to clear the flag, so it will find the job when it
 * does. Any job queued behind it wakes a worker as usual, so two jobs
 * never wait for one spinner. A job in a put stream then costs no wake-up
 * of a worker's vCPU. The spinner also polls `stop` (stored atomically
 * under the lock), so a close never waits out its window.
 */
#include "copy.h"

#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>

#include "sys.h"

#ifndef UIO_MAXIOV
#define UIO_MAXIOV 1024 /* the kernel's limit on an iovec array */
#endif
#define PVR_MAX_CALL (1ull << 30) /* bytes asked of one process_vm_readv:
                                     the kernel caps a call near 2 GiB */

struct ss__copy {
    pthread_mutex_t lock;
    pthread_cond_t work;        /* todo has a job, or stop */
    pthread_cond_t idle;        /* inflight reached 0 */
    ss__copyjob *todo, *todo_tail; /* lock: queued jobs with ranges to take, FIFO */
    ss__copyjob *done;          /* lock: finished jobs, LIFO */
    uint32_t inflight;          /* lock: jobs submitted to workers, not yet done */
    bool stop;                  /* lock: workers exit once todo is empty */
    bool spinning;              /* lock: a worker spins for work (no signal needed) */
    uint32_t queued;            /* lock to write, relaxed hint to read: jobs in todo */
    ss__spin spin;              /* lock: the spinner's policy (internal.h) */
    bool joined;                /* loop: no workers (any more): jobs run inline */
    unsigned nthreads;          /* open: workers started */
    uint64_t split;             /* loop: split jobs of at least this size (0: never) */
    int efd;                    /* written after each completion */
    pthread_t threads[];
};

/* ------------------------------------------------------------- copying */

/* Where byte `off` of the source is: iovec *k, offset *koff in it. */
static void src_seek(const ss__copyjob *j, uint64_t off, uint32_t *k, uint64_t *koff)
{
    uint32_t i = 0;

    while (i < j->nsrc && off >= j->src[i].iov_len) {
        off -= j->src[i].iov_len;
        i++;
    }
    *k = i;
    *koff = off;
}

/* Step a source cursor over n bytes. */
static void src_advance(const ss__copyjob *j, uint64_t n, uint32_t *k, uint64_t *koff)
{
    while (n) {
        uint64_t room = j->src[*k].iov_len - *koff;

        if (n < room) {
            *koff += n;
            return;
        }
        n -= room;
        (*k)++;
        *koff = 0;
    }
    while (*k < j->nsrc && j->src[*k].iov_len == 0) /* skip empty ranges */
        (*k)++;
}

static int copy_local(const ss__copyjob *j, uint64_t off, uint64_t len)
{
    uint32_t k;
    uint64_t koff;

    src_seek(j, off, &k, &koff);
    while (len) {
        uint64_t n = j->src[k].iov_len - koff;

        if (n > len)
            n = len;
        memcpy(j->dst + off, (const unsigned char *)j->src[k].iov_base + koff, n);
        off += n;
        len -= n;
        src_advance(j, n, &k, &koff);
    }
    return 0;
}

/* process_vm_readv of [off, off + len) of the job: the remote side in
 * batches of at most UIO_MAXIOV iovecs, the local side the destination;
 * a short read continues where it stopped, and one that makes no progress
 * is -EFAULT. */
static int copy_remote(const ss__copyjob *j, uint64_t off, uint64_t len)
{
    struct iovec rv[UIO_MAXIOV];
    uint32_t k;
    uint64_t koff;

    src_seek(j, off, &k, &koff);
    src_advance(j, 0, &k, &koff);
    while (len) {
        uint64_t want = len < PVR_MAX_CALL ? len : PVR_MAX_CALL, total = 0;
        uint32_t bk = k;
        uint64_t bkoff = koff;
        unsigned n = 0;

        while (n < UIO_MAXIOV && total < want && bk < j->nsrc) {
            uint64_t l = j->src[bk].iov_len - bkoff;

            if (l > want - total)
                l = want - total;
            if (l) {
                rv[n].iov_base = (unsigned char *)j->src[bk].iov_base + bkoff;
                rv[n].iov_len = l;
                n++;
                total += l;
            }
            bk++;
            bkoff = 0;
        }
        struct iovec lv = { .iov_base = j->dst + off, .iov_len = total };
        ssize_t r = ss__sys_process_vm_readv(j->pid, &lv, 1, rv, n);

        if (r < 0)
            return (int)r;
        if (r == 0)
            return -EFAULT;
        off += (uint64_t)r;
        len -= (uint64_t)r;
        src_advance(j, (uint64_t)r, &k, &koff);
    }
    return 0;
}

/* Copy range [off, off + len) of a job: 0 or -errno. A remote copy ends
 * with the pidfd check: the bytes came from the pidfd's process only if
 * it is still there (copy.h, Trust). */
int ss__g_copy_fail;

static int copy_range(const ss__copyjob *j, uint64_t off, uint64_t len)
{
    int rc, alive;
    int fail = __atomic_load_n(&ss__g_copy_fail, __ATOMIC_RELAXED)
                   ? __atomic_exchange_n(&ss__g_copy_fail, 0, __ATOMIC_RELAXED)
                   : 0;

    if (fail)
        return fail;
    if (j->pidfd < 0)
        return copy_local(j, off, len);
    rc = copy_remote(j, off, len);
    if (rc < 0 && rc != -EFAULT && rc != -ESRCH)
        return rc;
    alive = ss__sys_pidfd_send_signal(j->pidfd, 0, NULL, 0);
    if (alive == -ESRCH)
        return -ESRCH;
    if (rc < 0)
        return rc;
    /* -EPERM: there, but not ours to signal: alive all the same */
    return alive < 0 && alive != -EPERM ? alive : 0;
}

/* Range i of a job's nchunks: bytes [i * chunk, min(size, (i + 1) * chunk)). */
static uint64_t chunk_bytes(const ss__copyjob *j)
{
    uint64_t per = (j->size + j->nchunks - 1) / j->nchunks;

    return SS_ALIGN_UP(per, SS_COPY_CHUNK_MIN);
}

static int run_chunk(const ss__copyjob *j, uint32_t i)
{
    uint64_t c = chunk_bytes(j), off = (uint64_t)i * c, end = off + c;

    if (end > j->size)
        end = j->size;
    return off < end ? copy_range(j, off, end - off) : 0;
}

/* The lengths sum to size and the pointers are there: 0 or -EINVAL. */
static int job_check(const ss__copyjob *j)
{
    uint64_t sum = 0;

    if ((j->nsrc && !j->src) || (j->size && !j->dst))
        return -EINVAL;
    for (uint32_t i = 0; i < j->nsrc; i++) {
        if (j->src[i].iov_len > j->size - sum)
            return -EINVAL;
        sum += j->src[i].iov_len;
    }
    return sum == j->size ? 0 : -EINVAL;
}

int ss__copy_run(ss__copyjob *j)
{
    j->nchunks = 1;
    j->rc = job_check(j);
    if (j->rc == 0 && j->size)
        j->rc = copy_range(j, 0, j->size);
    return j->rc;
}

/* ------------------------------------------------------------- workers */

/* Under the lock: range done with rc; the job's last one hands it over. */
static void chunk_done(ss__copy *e, ss__copyjob *j, int rc)
{
    if (rc < 0 && j->rc == 0)
        j->rc = rc;
    if (--j->left)
        return;
    j->next = e->done;
    e->done = j;
    if (--e->inflight == 0)
        pthread_cond_broadcast(&e->idle);
    /* an eventfd write only fails at 2^64-1 */
    (void)ss__sys_eventfd_write(e->efd, 1);
}

/* Lock held, todo empty, nobody spinning: spin for work for up to the
 * window (the protocol at the top), lock held again on return. */
static void worker_spin(ss__copy *e)
{
    uint64_t win = ss__spin_window(&e->spin), end;
    bool hit = false;

    if (!win)
        return;
    e->spinning = true;
    pthread_mutex_unlock(&e->lock);
    end = ss__now_ns() + win;
    do {
        if (__atomic_load_n(&e->queued, __ATOMIC_RELAXED)) {
            hit = true;
            break;
        }
        if (__atomic_load_n(&e->stop, __ATOMIC_RELAXED))
            break;
        ss__sys_yield();
    } while (ss__now_ns() < end);
    pthread_mutex_lock(&e->lock);
    e->spinning = false;
    ss__spin_result(&e->spin, hit || e->todo);
}

static void *copy_worker(void *arg)
{
    ss__copy *e = arg;

    (void)ss__sys_block_signals(NULL);
    pthread_mutex_lock(&e->lock);
    for (;;) {
        if (!e->todo && !e->stop && !e->spinning)
            worker_spin(e);
        while (!e->todo && !e->stop)
            pthread_cond_wait(&e->work, &e->lock);
        if (!e->todo)
            break;
        ss__copyjob *j = e->todo;
        uint32_t i = j->claimed++;
        if (j->claimed == j->nchunks) {
            e->todo = j->next;
            __atomic_store_n(&e->queued, e->queued - 1, __ATOMIC_RELAXED);
            if (!e->todo)
                e->todo_tail = NULL;
        }
        pthread_mutex_unlock(&e->lock);

        int rc = run_chunk(j, i);

        pthread_mutex_lock(&e->lock);
        chunk_done(e, j, rc);
    }
    pthread_mutex_unlock(&e->lock);
    return NULL;
}

/* ---------------------------------------------------------------- loop */

int ss__copy_open(ss__copy **out, unsigned threads)
{
    ss__copy *e;
    int rc;

    if (threads > SS_COPY_MAX_THREADS)
        return -EINVAL;
    e = calloc(1, sizeof(*e) + threads * sizeof(pthread_t));
    if (!e)
        return -ENOMEM;
    e->split = SS_COPY_SPLIT_DEFAULT;
    e->efd = ss__sys_eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (e->efd < 0) {
        rc = e->efd;
        free(e);
        return rc;
    }
    if ((rc = pthread_mutex_init(&e->lock, NULL)) != 0)
        goto fail_efd;
    if ((rc = pthread_cond_init(&e->work, NULL)) != 0)
        goto fail_lock;
    if ((rc = pthread_cond_init(&e->idle, NULL)) != 0)
        goto fail_work;
    for (; e->nthreads < threads; e->nthreads++) {
        if ((rc = pthread_create(&e->threads[e->nthreads], NULL, copy_worker, e)) != 0) {
            ss__copy_close(e);
            return -rc;
        }
        pthread_setname_np(e->threads[e->nthreads], "ss-copy");
    }
    e->joined = threads == 0;
    *out = e;
    return 0;
fail_work:
    pthread_cond_destroy(&e->work);
fail_lock:
    pthread_mutex_destroy(&e->lock);
fail_efd:
    ss__sys_close(e->efd);
    free(e);
    return -rc;
}

int ss__copy_fd(const ss__copy *e)
{
    return e->efd;
}

unsigned ss__copy_threads(const ss__copy *e)
{
    return e->nthreads;
}

void ss__copy_set_spin(ss__copy *e, int64_t opt_us)
{
    pthread_mutex_lock(&e->lock);
    ss__spin_init(&e->spin, opt_us);
    pthread_mutex_unlock(&e->lock);
}

void ss__copy_set_split(ss__copy *e, uint64_t bytes)
{
    e->split = bytes;
}

/* Ranges a job is cut into: 1 below the split size, else up to one per
 * worker, each a multiple of SS_COPY_CHUNK_MIN except the last. */
static uint32_t job_chunks(const ss__copy *e, const ss__copyjob *j)
{
    uint64_t n, per;

    if (e->nthreads < 2 || !e->split || j->size < e->split || j->size < 2 * SS_COPY_CHUNK_MIN)
        return 1;
    n = j->size / SS_COPY_CHUNK_MIN;
    if (n > e->nthreads)
        n = e->nthreads;
    per = SS_ALIGN_UP((j->size + n - 1) / n, SS_COPY_CHUNK_MIN);
    return (uint32_t)((j->size + per - 1) / per);
}

void ss__copy_submit(ss__copy *e, ss__copyjob *j)
{
    int rc = job_check(j);

    if (rc < 0 || e->joined) {
        /* nothing to queue: done at once, handled from ss__copy_complete */
        if (rc == 0)
            rc = ss__copy_run(j);
        j->rc = rc;
        j->nchunks = 1;
        pthread_mutex_lock(&e->lock);
        j->next = e->done;
        e->done = j;
        (void)ss__sys_eventfd_write(e->efd, 1);
        pthread_mutex_unlock(&e->lock);
        return;
    }
    j->nchunks = job_chunks(e, j);
    j->claimed = 0;
    j->left = j->nchunks;
    j->rc = 0;
    j->next = NULL;
    pthread_mutex_lock(&e->lock);
    if (e->todo_tail)
        e->todo_tail->next = j;
    else
        e->todo = j;
    e->todo_tail = j;
    __atomic_store_n(&e->queued, e->queued + 1, __ATOMIC_RELAXED);
    e->inflight++;
    if (j->nchunks > 1)
        pthread_cond_broadcast(&e->work);
    else if (!e->spinning || e->queued > 1) /* else the spinner takes it (protocol at the top) */
        pthread_cond_signal(&e->work);
    pthread_mutex_unlock(&e->lock);
}

/* Run the handlers of the finished jobs, oldest first: whether there were any. */
static bool run_done(ss__copy *e)
{
    ss__copyjob *done, *rev = NULL;

    pthread_mutex_lock(&e->lock);
    done = e->done;
    e->done = NULL;
    pthread_mutex_unlock(&e->lock);
    while (done) {
        ss__copyjob *nx = done->next;
        done->next = rev;
        rev = done;
        done = nx;
    }
    if (!rev)
        return false;
    for (ss__copyjob *j = rev, *nx; j; j = nx) {
        nx = j->next;
        j->next = NULL;
        j->done(j->arg, j); /* may free j */
    }
    return true;
}

void ss__copy_complete(ss__copy *e)
{
    uint64_t v;

    (void)ss__sys_eventfd_read(e->efd, &v);
    run_done(e);
}

void ss__copy_drain(ss__copy *e)
{
    do {
        pthread_mutex_lock(&e->lock);
        while (e->inflight)
            pthread_cond_wait(&e->idle, &e->lock);
        pthread_mutex_unlock(&e->lock);
    } while (run_done(e));
    uint64_t v;
    (void)ss__sys_eventfd_read(e->efd, &v);
}

void ss__copy_close(ss__copy *e)
{
    if (!e)
        return;
    pthread_mutex_lock(&e->lock);
    __atomic_store_n(&e->stop, true, __ATOMIC_RELAXED); /* the spinner polls it too */
    pthread_cond_broadcast(&e->work);
    pthread_mutex_unlock(&e->lock);
    for (unsigned i = 0; i < e->nthreads; i++)
        pthread_join(e->threads[i], NULL);
    e->joined = true; /* a handler's submit runs inline from here on */
    while (run_done(e))
        ;
    pthread_cond_destroy(&e->idle);
    pthread_cond_destroy(&e->work);
    pthread_mutex_destroy(&e->lock);
    ss__sys_close(e->efd);
    free(e);
}
