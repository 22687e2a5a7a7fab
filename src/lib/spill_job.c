/* SPDX-License-Identifier: MIT */
/*
 * The spill engine's jobs: the state machines of a large spill (a file of
 * its own), a batch of small spills (an append to the fused file), a
 * restore, a tombstone write and a file unlink (struct ss__sp_job and its
 * per-kind parts in spill_int.h); the scheduler that starts their ops
 * (ss__sp_pump); the dispatch of finished ops to their jobs
 * (ss__sp_process: op_done -> job_advance); the completion queue reap
 * hands out (ss__sp_push_done, reserved per request); dropping a file
 * reference and reclaiming a file no record in it needs.
 *
 * Owns everything of struct ss__spill under "jobs" and "completions". May
 * call spill_ftab.c, spill_io.c and spill_file.c; called by spill_scan.c
 * and spill.c. Everything here runs on the loop thread. The design essay
 * opens spill.c.
 */
#include "spill_int.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sys.h"

static void job_advance(ss__spill *sp, struct ss__sp_job *j);
static void batch_kick(ss__spill *sp);

/* ------------------------------------------------ completions, ops */

static void busy_inc(unsigned *active, uint64_t *t0)
{
    if ((*active)++ == 0)
        *t0 = ss__now_ns();
}

static void busy_dec(unsigned *active, uint64_t t0, uint64_t *ns)
{
    if (*active && --(*active) == 0)
        *ns += ss__now_ns() - t0;
}

int ss__sp_done_reserve(ss__spill *sp)
{
    size_t need = sp->dq_n + sp->dq_owed + 1;

    if (need > sp->dq_cap) {
        if (ss__sp_inj_hit(sp, SS_SPILL_INJ_DONEQ) ||
            SS_ARRAY_RESERVE(sp->dq, sp->dq_cap, need, 64) < 0)
            return -ENOMEM;
    }
    sp->dq_owed++;
    return 0;
}

void ss__sp_done_unreserve(ss__spill *sp)
{
    SS_ASSERT(sp->dq_owed > 0);
    sp->dq_owed--;
}

void ss__sp_push_done(ss__spill *sp, const ss__spill_done *d)
{
    /* its room was reserved when the request was queued: dq_cap >= dq_n +
     * dq_owed, so moving the queue to the front always makes room */
    SS_ASSERT(sp->dq_owed > 0 && sp->dq_n < sp->dq_cap);
    sp->dq_owed--;
    if (sp->dq_head + sp->dq_n == sp->dq_cap) {
        memmove(sp->dq, sp->dq + sp->dq_head, sp->dq_n * sizeof(*sp->dq));
        sp->dq_head = 0;
    }
    sp->dq[sp->dq_head + sp->dq_n++] = *d;
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


void ss__sp_file_put(ss__spill *sp, struct ss__sp_file *f)
{
    SS_ASSERT(f->refs > 0);
    f->refs--;
    ss__sp_maybe_reclaim(sp, f);
}

/* Meta ops: straight to the worker; they count in io_pending. */
static void meta_op(ss__spill *sp, struct ss__sp_job *j, struct ss__sp_op *op)
{
    j->io_pending++;
    ss__sp_op_start(sp, op);
}

static int sync_op(ss__spill *sp, struct ss__sp_job *j, int fd)
{
    struct ss__sp_op *op = ss__sp_op_new(sp, j, SS_SP_OP_FSYNC);

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

static struct ss__sp_op *name_op(ss__spill *sp, struct ss__sp_job *j, int type, uint64_t file,
                                 bool tmp)
{
    struct ss__sp_op *op = ss__sp_op_new(sp, j, type);

    if (op)
        ss__spill_name(op->name, file, tmp);
    else if (!j->status)
        j->status = -ENOMEM;
    return op;
}


/* ---------------------------------------------------------------- jobs */

static struct ss__sp_job *job_new(ss__spill *sp, int kind)
{
    struct ss__sp_job *j = calloc(1, sizeof(*j));

    if (!j)
        return NULL;
    j->kind = (uint8_t)kind;
    j->fd = -1;
    j->x = j->xin;
    sp->njobs++;
    return j;
}

static void job_free(ss__spill *sp, struct ss__sp_job *j)
{
    if (j->in_ready) {
        struct ss__sp_job **pp = &sp->ready_head, *prev = NULL;

        while (*pp != j) {
            prev = *pp;
            pp = &(*pp)->next;
        }
        *pp = j->next;
        if (sp->ready_tail == j)
            sp->ready_tail = prev;
    }
    if (j->fd >= 0 && !(j->file && (j->fd == j->file->fd || j->fd == j->file->rfd)))
        ss__sys_close(j->fd);
    switch (j->kind) {
    case SS_SP_J_LARGE:
        free(j->u.large.o.hdr);
        free(j->u.large.o.tail);
        break;
    case SS_SP_J_READ:
        if (j->u.read.span && j->u.read.o.hdr)
            ss__sp_span_put(sp, j->u.read.o.hdr);
        else
            free(j->u.read.o.hdr);
        free(j->u.read.o.tail);
        free(j->u.read.bits);
        break;
    case SS_SP_J_TOMB:
        free(j->u.tomb.offs);
        free(j->u.tomb.dwait);
        break;
    }
    if (j->x != j->xin)
        free(j->x);
    sp->njobs--;
    free(j);
}

static void job_fail(struct ss__sp_job *j, int err)
{
    if (!j->status)
        j->status = err < 0 ? err : -EIO;
}

static void job_ready(ss__spill *sp, struct ss__sp_job *j)
{
    if (j->in_ready)
        return;
    j->in_ready = true;
    j->next = NULL;
    if (sp->ready_tail)
        sp->ready_tail->next = j;
    else
        sp->ready_head = j;
    sp->ready_tail = j;
}

static void xfer_add(struct ss__sp_job *j, uint8_t *buf, uint64_t off, uint64_t len, bool single,
                     uint64_t need)
{
    struct ss__sp_xfer *x;

    if (!len)
        return;
    x = &j->x[j->nx++];
    memset(x, 0, sizeof(*x));
    x->buf = buf;
    x->off = off;
    x->len = len;
    x->single = single;
    x->need = need ? need : len;
}

static bool xfers_done(const struct ss__sp_job *j)
{
    for (unsigned i = 0; i < j->nx; i++)
        if (j->x[i].completed < j->x[i].len)
            return false;
    return true;
}

/* Issue the job's next data op; true if it has more to issue. */
static bool job_issue(ss__spill *sp, struct ss__sp_job *j)
{
    struct ss__sp_xfer *x;
    struct ss__sp_op *op;
    uint64_t n;

    if (j->status)
        return false;
    while (j->xi < j->nx && j->x[j->xi].issued == j->x[j->xi].len)
        j->xi++;
    if (j->xi == j->nx)
        return false;
    x = &j->x[j->xi];
    if (x->span && !x->buf) {
        /* taken only now: thousands of queued small restores must not
         * each hold a buffer while they wait */
        if (!(x->buf = j->u.read.o.hdr = ss__sp_span_get(sp))) { /* only READ spans */
            job_fail(j, -ENOMEM);
            return false;
        }
    }
    n = x->len - x->issued;
    if (!x->single && n > sp->chunk)
        n = sp->chunk;
    op = ss__sp_op_new(sp, j, j->kind == SS_SP_J_READ ? SS_SP_OP_READ : SS_SP_OP_WRITE);
    if (!op) {
        job_fail(j, -ENOMEM);
        return false;
    }
    op->fd = j->fd;
    op->buf = x->buf + x->issued;
    op->off = x->off + x->issued;
    op->len = n;
    op->need = x->single ? x->need : n;
    op->part = j->xi;
    op->idx = x->issued / sp->chunk;
    x->issued += n;
    j->io_pending++;
    ss__sp_op_start(sp, op);
    return x->issued < x->len || j->xi + 1 < j->nx;
}

static void dirsync_join(ss__spill *sp, struct ss__sp_job *j, int state)
{
    j->io_pending++;
    j->state = (uint8_t)state;
    j->ds_next = sp->ds_wait;
    sp->ds_wait = j;
}

static void dirsync_done(ss__spill *sp, int64_t res)
{
    struct ss__sp_job *j = sp->ds_run, *next;

    sp->ds_run = NULL;
    sp->ds_busy = false;
    if (res < 0)
        ss__log_error("spill: fsync of directory %s failed: %s", sp->dir,
                      ss_strerror((int)res));
    for (; j; j = next) {
        next = j->ds_next;
        j->io_pending--;
        if (res < 0 && j->state == SS_SP_S_CLEANSYNC)
            j->cleanup_err = (int)res;
        else if (res < 0)
            job_fail(j, (int)res);
        job_advance(sp, j);
    }
}

/* Once every transfer of the job is written, make them durable: SYNC, an
 * fdatasync of fd. false while some are still in flight. */
static bool written_sync(ss__spill *sp, struct ss__sp_job *j, int fd)
{
    if (j->io_pending || !xfers_done(j))
        return false;
    j->state = SS_SP_S_SYNC;
    sync_op(sp, j, fd);
    return true;
}

/* A new file, once its bytes are synced: SYNC -> RENAME (".tmp" to
 * ".spill") -> DIRSYNC (the name made durable, a shared directory fsync).
 * Moves the job one step on when nothing of it is in flight; true when it
 * is done. */
static bool new_file_step(ss__spill *sp, struct ss__sp_job *j)
{
    struct ss__sp_op *op;

    if (j->io_pending)
        return false;
    switch (j->state) {
    case SS_SP_S_SYNC:
        j->state = SS_SP_S_RENAME;
        if ((op = name_op(sp, j, SS_SP_OP_RENAME, j->file->id, true))) {
            ss__spill_name(op->name2, j->file->id, false);
            meta_op(sp, j, op);
        }
        return false;
    case SS_SP_S_RENAME:
        j->renamed = true;
        dirsync_join(sp, j, SS_SP_S_DIRSYNC);
        return false;
    }
    return true; /* SS_SP_S_DIRSYNC */
}

/* Hash pieces on the worker: for a spill the whole source is there; for a
 * restore only the prefix that has arrived (`avail`). */
static void hash_kick(ss__spill *sp, struct ss__sp_job *j, struct ss__sp_objio *o,
                      const uint8_t *base, uint64_t avail)
{
    struct ss__sp_hash *h = &o->hash;
    uint64_t end;
    struct ss__sp_op *op;

    if (h->busy || j->status || h->done >= avail)
        return;
    end = avail - h->done > SS_SP_HASH_PIECE ? h->done + SS_SP_HASH_PIECE : avail;
    if (end != o->size)
        end = h->done + ((end - h->done) & ~(uint64_t)31);
    if (end == h->done)
        return;
    op = ss__sp_op_new(sp, j, SS_SP_OP_HASH);
    if (!op) {
        job_fail(j, -ENOMEM);
        return;
    }
    op->hst = &h->st;
    op->hp = base + h->done;
    op->hlen = end - h->done;
    op->hout = end == o->size ? &h->val : NULL;
    h->done = end;
    h->busy = true;
    ss__sp_op_start(sp, op);
}

static bool hash_done(const struct ss__sp_objio *o)
{
    return !o->hash.busy && o->hash.done == o->size;
}

static void log_spill_error(const ss_id *id, int err)
{
    char hex[SS_ID_HEX_LEN];

    ss__id_hex(id, hex);
    if (err == -ENOSPC || err == -EDQUOT)
        ss__log_info("spill: object %s not spilled: %s", hex, ss_strerror(err));
    else
        ss__log_warn("spill: object %s not spilled: %s", hex, ss_strerror(err));
}

/* ----------------------------------------------------- LARGE: own file */

/* A failed spill whose cleanup failed as well: what it wrote may be found
 * by a restart's scan (a .tmp never is: scan removes those). */
static bool copy_left(const struct ss__sp_job *j)
{
    return j->status && j->cleanup_err &&
           (j->renamed || (j->kind == SS_SP_J_BATCH && j->file->state != SS_SP_F_CREATING));
}

static void large_finish(ss__spill *sp, struct ss__sp_job *j)
{
    struct ss__sp_job_large *lg = &j->u.large;
    struct ss__sp_file *f = j->file;
    ss__spill_done d = { .cookie = lg->cookie, .status = j->status, .op = SS_SPILL_OP_WRITE,
                         .copy = copy_left(j) };

    if (j->fd >= 0) {
        ss__sys_close(j->fd);
        j->fd = -1;
    }
    if (!d.status || d.copy) {
        int rc = ss__sp_rec_add(sp, f, 0); /* reserved at the start */

        SS_ASSERT(rc == 0);
        (void)rc;
        f->state = SS_SP_F_LIVE;
        f->size = lg->rec_len;
        f->live = 1;
        /* the header went to disk before the rename (no copy without it) */
        ss__spill_rec_loc((const ss__spill_rec *)lg->o.hdr, f->id, 0, &d.loc);
        sp->st.files++;
        sp->st.disk_bytes += f->size;
        sp->st.live_objects++;
        sp->st.live_bytes += lg->o.size;
    }
    if (!d.status) {
        sp->st.objects_spilled++;
        sp->st.bytes_spilled += lg->o.size;
    } else {
        if (!d.copy && f->state == SS_SP_F_CREATING)
            ss__sp_file_free(sp, f);
        sp->st.spill_errors++;
        log_spill_error(&lg->id, d.status);
    }
    ss__sp_push_done(sp, &d);
    busy_dec(&sp->spill_active, sp->spill_t0, &sp->st.spill_ns);
    job_free(sp, j);
}

/* A failed large spill, nothing of it in flight: remove what it made,
 * durably, then report. */
static void large_cleanup(ss__spill *sp, struct ss__sp_job *j)
{
    struct ss__sp_op *op;

    if (j->state != SS_SP_S_CLEANUP && j->state != SS_SP_S_CLEANSYNC && j->created) {
        /* remove what we made: an unrenamed .tmp, or the .spill whose
         * directory entry we could not make durable */
        if (j->fd >= 0) {
            ss__sys_close(j->fd);
            j->fd = -1;
        }
        j->state = SS_SP_S_CLEANUP;
        op = name_op(sp, j, SS_SP_OP_UNLINK, j->file->id, !j->renamed);
        if (op) {
            meta_op(sp, j, op);
            return;
        }
        j->cleanup_err = -ENOMEM;
    } else if (j->state == SS_SP_S_CLEANUP && j->renamed && !j->cleanup_err) {
        /* the .spill's unlink must be durable before the failure is
         * reported: a restart must not find the object there */
        dirsync_join(sp, j, SS_SP_S_CLEANSYNC);
        return;
    }
    large_finish(sp, j);
}

static void large_advance(ss__spill *sp, struct ss__sp_job *j)
{
    struct ss__sp_job_large *lg = &j->u.large;
    ss__spill_rec *r;

    hash_kick(sp, j, &lg->o, lg->src, lg->o.size);
    if (j->status) {
        if (!j->io_pending && !lg->o.hash.busy)
            large_cleanup(sp, j);
        return;
    }
    switch (j->state) {
    case SS_SP_S_OPEN:
        if (j->io_pending)
            return;
        j->state = SS_SP_S_DATA;
        xfer_add(j, (uint8_t *)lg->src, lg->data_off, lg->o.direct_len, false, 0);
        if (lg->o.tail_len)
            xfer_add(j, lg->o.tail, lg->data_off + lg->o.direct_len, SS_SP_BLK, false, 0);
        job_ready(sp, j);
        /* fallthrough */
    case SS_SP_S_DATA:
        if (j->io_pending || !xfers_done(j) || !hash_done(&lg->o))
            return;
        /* the header goes last, once the data hash is known */
        r = (ss__spill_rec *)lg->o.hdr;
        ss__spill_rec_fill(r, SS_SPILL_REC_OBJECT | lg->rflags, &lg->id, lg->uid, lg->meta_size, lg->o.size,
                           lg->data_off, lg->rec_len, lg->seq, lg->o.hash.val, lg->meta_hash);
        j->nx = j->xi = 0;
        xfer_add(j, lg->o.hdr, 0, lg->data_off, false, 0);
        j->state = SS_SP_S_HDR;
        job_ready(sp, j);
        return;
    case SS_SP_S_HDR:
        if (!written_sync(sp, j, j->fd))
            return;
        break;
    case SS_SP_S_SYNC:
    case SS_SP_S_RENAME:
    case SS_SP_S_DIRSYNC:
        if (new_file_step(sp, j)) {
            large_finish(sp, j);
            return;
        }
        break;
    }
    /* no memory for the next op: nothing in flight will call us again */
    if (j->status && !j->io_pending)
        large_advance(sp, j);
}

int ss__sp_large_start(ss__spill *sp, const ss_id *id, uint32_t uid, uint32_t rflags,
                       const uint8_t *data, uint64_t size, const void *meta,
                       uint32_t meta_size, uint64_t cookie)
{
    struct ss__sp_job *j = job_new(sp, SS_SP_J_LARGE);
    struct ss__sp_job_large *lg;
    struct ss__sp_op *op;

    if (!j)
        return -ENOMEM;
    lg = &j->u.large;
    lg->id = *id;
    lg->uid = uid;
    lg->rflags = rflags;
    lg->cookie = cookie;
    lg->src = data;
    lg->o.size = size;
    lg->meta_size = meta_size;
    lg->data_off = (uint32_t)SS_ALIGN_UP(sizeof(ss__spill_rec) + meta_size, SS_SP_BLK);
    lg->rec_len = lg->data_off + SS_ALIGN_UP(size, SS_SP_BLK);
    /* O_DIRECT reads the caller's memory as it is: it must be aligned */
    lg->o.direct = sp->dio_align && (uintptr_t)data % sp->dio_align == 0;
    lg->o.direct_len = lg->o.direct ? size & ~(SS_SP_BLK - 1) : size;
    lg->o.tail_len = size - lg->o.direct_len;
    lg->o.hdr = ss__sp_balloc(lg->data_off);
    lg->o.tail = lg->o.tail_len ? ss__sp_balloc(SS_SP_BLK) : NULL;
    j->file = ss__sp_file_new(sp, sp->next_file);
    op = ss__sp_op_new(sp, j, SS_SP_OP_OPEN);
    /* its record's slot now: once the file is durable, registering it
     * must not fail */
    if (!lg->o.hdr || (lg->o.tail_len && !lg->o.tail) || !j->file || !op ||
        ss__sp_rec_reserve(sp, j->file, 1) < 0) {
        if (j->file)
            ss__sp_file_free(sp, j->file);
        if (op)
            ss__sp_op_release(sp, op);
        job_free(sp, j);
        return -ENOMEM;
    }
    sp->next_file++;
    lg->seq = sp->next_seq++;
    j->file->state = SS_SP_F_CREATING;
    memset(lg->o.hdr, 0, lg->data_off);
    if (meta_size)
        memcpy(lg->o.hdr + sizeof(ss__spill_rec), meta, meta_size);
    lg->meta_hash = ss__spill_hash64(meta_size ? meta : "", meta_size, SS_SPILL_SEED);
    if (lg->o.tail) {
        memset(lg->o.tail, 0, SS_SP_BLK);
        memcpy(lg->o.tail, data + lg->o.direct_len, lg->o.tail_len);
    }
    ss__xxh64_init(&lg->o.hash.st, SS_SPILL_SEED);
    if (size <= SS_SP_HASH_INLINE_MAX) {
        lg->o.hash.val = ss__spill_hash64(data, size, SS_SPILL_SEED);
        lg->o.hash.done = size;
    } else {
        hash_kick(sp, j, &lg->o, data, size);
    }
    ss__spill_name(op->name, j->file->id, true);
    op->oflags = O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | (lg->o.direct ? O_DIRECT : 0);
    op->prealloc = lg->rec_len;
    j->state = SS_SP_S_OPEN;
    meta_op(sp, j, op);
    busy_inc(&sp->spill_active, &sp->spill_t0);
    return 0;
}

/* ----------------------------------------------- BATCH: small, fused */

static struct ss__sp_batch *batch_get(ss__spill *sp)
{
    struct ss__sp_batch *b = sp->bfree;

    if (b) {
        sp->bfree = b->next;
        b->next = NULL;
        b->used = 0;
        b->n = 0;
        b->meta_used = 0;
        return b;
    }
    return calloc(1, sizeof(*b));
}

/* Give back a batch and its buffer (one buffer is kept, the larger). */
static void batch_put(ss__spill *sp, struct ss__sp_batch *b)
{
    if (b->buf) {
        if (!sp->bbuf || sp->bbuf_cap < b->cap) {
            free(sp->bbuf);
            sp->bbuf = b->buf;
            sp->bbuf_cap = b->cap;
        } else {
            free(b->buf);
        }
        b->buf = NULL;
        b->cap = 0;
    }
    b->next = sp->bfree;
    sp->bfree = b;
}

int ss__sp_small_append(ss__spill *sp, const ss_id *id, uint32_t uid, uint32_t rflags,
                        const uint8_t *data, uint64_t size, const void *meta,
                        uint32_t meta_size, uint64_t cookie)
{
    uint32_t data_off = (uint32_t)SS_ALIGN_UP(sizeof(ss__spill_rec) + meta_size, SS_OBJ_ALIGN);
    uint64_t rec_len = SS_ALIGN_UP(data_off + size, SS_SPILL_REC_ALIGN);
    struct ss__sp_batch *b = sp->stage;
    struct ss__sp_brec *br;

    if (b && b->used + rec_len > SS_SP_BATCH_MAX) {
        /* full: queue it behind the batch in flight */
        b->next = NULL;
        if (sp->pend_tail)
            sp->pend_tail->next = b;
        else
            sp->pend_head = b;
        sp->pend_tail = b;
        b = sp->stage = NULL;
    }
    if (!b && !(b = sp->stage = batch_get(sp)))
        return -ENOMEM;
    if (SS_ARRAY_RESERVE(b->r, b->ncap, (size_t)b->n + 1, 64) < 0 ||
        SS_ARRAY_RESERVE(b->meta, b->meta_cap, (size_t)b->meta_used + meta_size, 4096) < 0)
        return -ENOMEM;
    br = &b->r[b->n++];
    br->cookie = cookie;
    br->off = b->used;
    br->size = size;
    br->rec_len = rec_len;
    br->seq = sp->next_seq++;
    br->meta_size = meta_size;
    br->data_off = data_off;
    br->meta_off = b->meta_used;
    br->id = *id;
    br->uid = uid;
    br->rflags = rflags;
    br->src = data;
    if (meta_size)
        memcpy(b->meta + b->meta_used, meta, meta_size);
    b->meta_used += meta_size;
    b->used += rec_len;
    busy_inc(&sp->spill_active, &sp->spill_t0);
    return 0;
}

/* The fused file being filled takes no more appends. */
void ss__sp_fused_retire(ss__spill *sp)
{
    struct ss__sp_file *f = sp->fused_cur;

    if (!f)
        return;
    sp->fused_cur = NULL;
    if (f->fd >= 0 && sp->batch_job == NULL) {
        ss__sys_close(f->fd);
        f->fd = -1;
    }
    ss__sp_maybe_reclaim(sp, f);
}

/* Each object of a finished batch: registered (keep), counted, and its
 * completion queued. */
static void batch_complete(ss__spill *sp, struct ss__sp_job *j, bool keep, bool copy)
{
    struct ss__sp_job_batch *bt = &j->u.batch;
    struct ss__sp_batch *b = bt->batch;
    struct ss__sp_file *f = j->file;

    for (uint32_t i = 0; i < b->n; i++) {
        const struct ss__sp_brec *br = &b->r[i];
        ss__spill_done d = { .cookie = br->cookie, .op = SS_SPILL_OP_WRITE, .copy = copy };

        if (keep) {
            /* reserved at the kick */
            int rc = ss__sp_rec_add(sp, f, bt->base + br->off);

            SS_ASSERT(rc == 0);
            (void)rc;
            d.status = j->status;
            /* the worker built every header before the write */
            ss__spill_rec_loc((const ss__spill_rec *)(b->buf + br->off), f->id,
                              bt->base + br->off, &d.loc);
            f->live++;
            sp->st.live_objects++;
            sp->st.live_bytes += br->size;
        }
        if (!j->status) {
            sp->st.objects_spilled++;
            sp->st.bytes_spilled += br->size;
        } else {
            d.status = j->status;
            sp->st.spill_errors++;
            if (i == 0)
                log_spill_error(&br->id, d.status);
        }
        ss__sp_push_done(sp, &d);
        busy_dec(&sp->spill_active, sp->spill_t0, &sp->st.spill_ns);
    }
}

static void batch_finish(ss__spill *sp, struct ss__sp_job *j)
{
    struct ss__sp_job_batch *bt = &j->u.batch;
    struct ss__sp_file *f = j->file;
    bool copy = copy_left(j), keep = !j->status || copy;

    batch_complete(sp, j, keep, copy);
    sp->batch_job = NULL;
    j->fd = -1; /* the file's */
    if (keep) {
        if (f->state == SS_SP_F_CREATING) {
            f->state = SS_SP_F_LIVE;
            sp->st.files++;
            sp->st.fused_files++;
        }
        f->size = bt->base + bt->len;
        sp->st.disk_bytes += bt->len;
        if (copy && sp->fused_cur == f)
            sp->fused_cur = NULL; /* no more appends behind a doubtful one */
        if (f != sp->fused_cur && f->fd >= 0) {
            ss__sys_close(f->fd);
            f->fd = -1;
        }
        ss__sp_file_put(sp, f);
    } else if (f->state == SS_SP_F_CREATING) {
        f->refs--;
        ss__sp_file_free(sp, f); /* its .tmp is gone (or never was) */
    } else {
        /* the file keeps its earlier records but takes no more appends */
        if (sp->fused_cur == f)
            sp->fused_cur = NULL;
        if (f->fd >= 0) {
            ss__sys_close(f->fd);
            f->fd = -1;
        }
        ss__sp_file_put(sp, f);
    }
    batch_put(sp, bt->batch);
    job_free(sp, j);
}

/* A failed append, nothing of it in flight: remove what it wrote (a
 * restart's scan must not find it), durably, before the failure is
 * reported. */
static void batch_cleanup(ss__spill *sp, struct ss__sp_job *j)
{
    struct ss__sp_file *f = j->file;
    struct ss__sp_op *op;

    if (j->state != SS_SP_S_CLEANUP && j->state != SS_SP_S_CLEANSYNC) {
        j->state = SS_SP_S_CLEANUP;
        if (f->state == SS_SP_F_CREATING) {
            if (j->fd >= 0 && j->fd != f->fd)
                ss__sys_close(j->fd);
            if (f->fd >= 0)
                ss__sys_close(f->fd);
            f->fd = j->fd = -1;
            if (!j->created)
                goto finish;
            if ((op = name_op(sp, j, SS_SP_OP_UNLINK, f->id, !j->renamed))) {
                meta_op(sp, j, op);
                return;
            }
        } else if (f->fd >= 0 && (op = ss__sp_op_new(sp, j, SS_SP_OP_TRUNCATE))) {
            op->fd = f->fd;
            op->off = j->u.batch.base;
            meta_op(sp, j, op);
            return;
        }
        j->cleanup_err = f->fd >= 0 || f->state == SS_SP_F_CREATING ? -ENOMEM : -EBADF;
    } else if (j->state == SS_SP_S_CLEANUP && !j->cleanup_err) {
        if (f->state == SS_SP_F_CREATING) {
            if (j->renamed) { /* the .spill name's removal */
                dirsync_join(sp, j, SS_SP_S_CLEANSYNC);
                return;
            }
        } else {
            j->state = SS_SP_S_CLEANSYNC; /* the truncation's */
            if (sync_op(sp, j, f->fd) == 0)
                return;
            j->cleanup_err = -ENOMEM;
        }
    }
finish:
    batch_finish(sp, j);
}

static void batch_advance(ss__spill *sp, struct ss__sp_job *j)
{
    struct ss__sp_job_batch *bt = &j->u.batch;
    struct ss__sp_file *f = j->file;

    if (j->status) {
        if (!j->io_pending)
            batch_cleanup(sp, j);
        return;
    }
    switch (j->state) {
    case SS_SP_S_OPEN: /* built (and the file created) */
        if (j->io_pending)
            return;
        if (bt->new_file)
            f->fd = j->fd;
        j->state = SS_SP_S_DATA;
        xfer_add(j, bt->batch->buf, bt->base, bt->len, false, 0);
        job_ready(sp, j);
        return;
    case SS_SP_S_DATA:
        if (!written_sync(sp, j, f->fd))
            return;
        break;
    case SS_SP_S_SYNC:
    case SS_SP_S_RENAME:
    case SS_SP_S_DIRSYNC:
        if ((!bt->new_file && !j->io_pending) || new_file_step(sp, j)) {
            batch_finish(sp, j); /* an append to a file on disk is done once synced */
            return;
        }
        break;
    }
    if (j->status && !j->io_pending) /* as in large_advance */
        batch_advance(sp, j);
}

/* The next batch to write (queued full ones first, then the stage), or
 * NULL; with a buffer for it (b->buf NULL: no memory). */
static struct ss__sp_batch *batch_next(ss__spill *sp)
{
    struct ss__sp_batch *b;
    uint64_t len;

    if (sp->pend_head) {
        b = sp->pend_head;
        sp->pend_head = b->next;
        if (!sp->pend_head)
            sp->pend_tail = NULL;
    } else if (sp->stage && sp->stage->n) {
        b = sp->stage;
        sp->stage = NULL;
    } else {
        return NULL;
    }
    b->next = NULL;
    len = SS_ALIGN_UP(b->used, SS_SP_BLK);
    if (sp->bbuf && sp->bbuf_cap >= len) {
        b->buf = sp->bbuf;
        b->cap = sp->bbuf_cap;
        sp->bbuf = NULL;
    } else if ((b->buf = ss__sp_balloc(SS_ALIGN_UP(len, SS_MiB)))) {
        b->cap = SS_ALIGN_UP(len, SS_MiB);
    }
    return b;
}

/* No memory to even start a batch: its objects fail now. */
static void batch_fail_all(ss__spill *sp, struct ss__sp_batch *b)
{
    for (uint32_t i = 0; i < b->n; i++) {
        ss__spill_done d = { .cookie = b->r[i].cookie, .status = -ENOMEM,
                             .op = SS_SPILL_OP_WRITE };

        ss__sp_push_done(sp, &d);
        sp->st.spill_errors++;
        busy_dec(&sp->spill_active, sp->spill_t0, &sp->st.spill_ns);
    }
    batch_put(sp, b);
}

/* Flush the next batch if none is in flight: the worker builds it (and
 * creates the next fused file when needed), then it is written. */
static void batch_kick(ss__spill *sp)
{
    struct ss__sp_batch *b;
    struct ss__sp_job *j;
    struct ss__sp_job_batch *bt;
    struct ss__sp_file *f;
    struct ss__sp_op *build, *open = NULL;
    bool new_file = false;
    uint64_t len;

    if (sp->batch_job || !(b = batch_next(sp)))
        return;
    len = SS_ALIGN_UP(b->used, SS_SP_BLK);
    j = job_new(sp, SS_SP_J_BATCH);
    build = j ? ss__sp_op_new(sp, j, SS_SP_OP_BUILD) : NULL;
    if (build && b->buf && (!sp->fused_cur || sp->fused_cur->size + len > sp->fused_cap)) {
        ss__sp_fused_retire(sp);
        open = ss__sp_op_new(sp, j, SS_SP_OP_OPEN);
        if (open && (sp->fused_cur = ss__sp_file_new(sp, sp->next_file))) {
            sp->next_file++;
            sp->fused_cur->fused = true;
            sp->fused_cur->state = SS_SP_F_CREATING;
            new_file = true;
        }
    }
    /* the records' slots now: once they are durable, registering them
     * must not fail */
    if (!build || !b->buf || !sp->fused_cur ||
        ss__sp_rec_reserve(sp, sp->fused_cur, b->n) < 0) {
        if (new_file)
            ss__sp_file_free(sp, sp->fused_cur); /* not created yet */
        if (open)
            ss__sp_op_release(sp, open);
        if (build)
            ss__sp_op_release(sp, build);
        batch_fail_all(sp, b);
        if (j)
            job_free(sp, j);
        return;
    }
    f = sp->fused_cur;
    bt = &j->u.batch;
    bt->batch = b;
    bt->len = len;
    bt->base = f->size;
    bt->new_file = new_file;
    build->batch = b;
    j->file = f;
    ss__sp_file_get(f);
    sp->batch_job = j;
    j->state = SS_SP_S_OPEN;
    meta_op(sp, j, build);
    if (new_file) {
        ss__spill_name(open->name, f->id, true);
        open->oflags = O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | (sp->dio_align ? O_DIRECT : 0);
        meta_op(sp, j, open);
    } else {
        j->fd = f->fd;
    }
}

/* -------------------------------------------------------- READ: restore */

/* A restore found its record damaged: one log line, counted; -EBADMSG. */
static int read_damaged(ss__spill *sp, const ss__spill_loc *l, const char *why)
{
    char hex[SS_ID_HEX_LEN];

    ss__id_hex(&l->id, hex);
    ss__log_error("spill: restore of object %s from file %016llx at %llu failed: %s", hex,
                  (unsigned long long)l->file, (unsigned long long)l->offset, why);
    sp->st.damaged++;
    return -EBADMSG;
}

static int read_verify(ss__spill *sp, struct ss__sp_job *j)
{
    struct ss__sp_job_read *rd = &j->u.read;
    const uint8_t *p = rd->o.hdr + (rd->loc.offset - rd->span_off);
    const ss__spill_loc *l = &rd->loc;
    ss__spill_rec r;
    const char *why = NULL;
    long i;

    memcpy(&r, p, sizeof(r));
    if (ss__spill_rec_check(&r, &why) < 0) {
        /* why says what; a deletion meanwhile is told apart below */
    } else if (!(r.flags & SS_SPILL_REC_OBJECT) || memcmp(r.id, l->id.b, SS_ID_SIZE) ||
               r.data_size != l->size || r.meta_size != l->meta_size ||
               r.data_off != l->data_off || r.rec_len != l->rec_len || r.seq != l->seq) {
        why = "header does not match the location";
    } else if (r.tomb) {
        why = "record is tombstoned";
    } else if (ss__spill_hash64(p + sizeof(r), r.meta_size, SS_SPILL_SEED) != r.meta_hash) {
        why = "meta checksum mismatch";
    } else if (rd->progressive ? rd->o.hash.val != r.data_hash
                               : ss__spill_hash64(rd->span ? p + r.data_off : rd->dst, l->size,
                                                  SS_SPILL_SEED) != r.data_hash) {
        why = "data checksum mismatch";
    }
    /* A record deleted since this restore began may show its tombstone,
     * or be read while the tombstone is being written: the 8 bytes can
     * arrive torn (a page-cache copy is not atomic). Once the record is
     * dead in memory, the object is gone, not damaged. */
    if (why && j->file &&
        ((i = ss__sp_rec_find(j->file, l->offset)) < 0 || (j->file->recs[i] & SS_SP_DEAD)))
        return -ENOENT;
    if (why)
        return read_damaged(sp, l, why);
    if (rd->span && l->size) /* one span: copy the object out */
        memcpy(rd->dst, p + r.data_off, l->size);
    if (rd->meta_dst && r.meta_size)
        memcpy(rd->meta_dst, p + sizeof(r), r.meta_size);
    return 0;
}

static void read_finish(ss__spill *sp, struct ss__sp_job *j)
{
    struct ss__sp_job_read *rd = &j->u.read;
    ss__spill_done d = { .cookie = rd->cookie, .status = j->status, .op = SS_SPILL_OP_READ,
                         .loc = rd->loc };

    if (j->fd >= 0 && j->fd != j->file->rfd)
        ss__sys_close(j->fd);
    j->fd = -1;
    if (!d.status) {
        sp->st.objects_restored++;
        sp->st.bytes_restored += rd->o.size;
    } else {
        sp->st.restore_errors++;
    }
    ss__sp_push_done(sp, &d);
    busy_dec(&sp->restore_active, sp->restore_t0, &sp->st.restore_ns);
    ss__sp_file_put(sp, j->file);
    job_free(sp, j);
}

static void read_advance(ss__spill *sp, struct ss__sp_job *j)
{
    struct ss__sp_job_read *rd = &j->u.read;

    if (j->status) {
        if (j->io_pending || rd->o.hash.busy)
            return;
        read_finish(sp, j);
        return;
    }
    switch (j->state) {
    case SS_SP_S_OPEN:
        if (j->io_pending)
            return;
        j->state = SS_SP_S_DATA;
        job_ready(sp, j);
        return;
    case SS_SP_S_DATA:
        if (rd->progressive) {
            while (rd->next_chunk < rd->nchunks &&
                   (rd->bits[rd->next_chunk / 8] >> (rd->next_chunk % 8) & 1))
                rd->next_chunk++;
            rd->prefix = rd->next_chunk * sp->chunk;
            if (rd->prefix > rd->o.direct_len)
                rd->prefix = rd->o.direct_len;
        }
        if (!xfers_done(j) || j->io_pending) {
            if (rd->progressive)
                hash_kick(sp, j, &rd->o, rd->dst, rd->prefix);
            return;
        }
        if (rd->o.tail_len && !rd->tail_copied) {
            memcpy(rd->dst + rd->o.direct_len, rd->o.tail, rd->o.tail_len);
            rd->tail_copied = true;
        }
        if (rd->progressive) {
            hash_kick(sp, j, &rd->o, rd->dst, rd->o.size);
            if (j->status) { /* no memory for the hash op */
                read_advance(sp, j);
                return;
            }
            if (!hash_done(&rd->o))
                return;
        }
        j->status = read_verify(sp, j);
        read_finish(sp, j);
        return;
    }
}

/* -------------------------------------------------- TOMB and UNLINK */

static void tomb_advance(ss__spill *sp, struct ss__sp_job *j)
{
    struct ss__sp_job_tomb *tb = &j->u.tomb;
    struct ss__sp_file *f = j->file;

    if (!j->status) {
        switch (j->state) {
        case SS_SP_S_OPEN:
            if (j->io_pending)
                return;
            j->state = SS_SP_S_DATA;
            job_ready(sp, j);
            return;
        case SS_SP_S_DATA:
            if (written_sync(sp, j, j->fd) && j->status) /* no memory for it: finish now */
                tomb_advance(sp, j);
            return;
        case SS_SP_S_SYNC:
            if (j->io_pending)
                return;
            break;
        }
    } else {
        if (j->io_pending)
            return;
        ss__log_error("spill: tombstones for %u deleted object(s) in file %016llx failed: %s; "
                      "they may reappear after a restart",
                      tb->n, (unsigned long long)f->id, ss_strerror(j->status));
        sp->st.delete_errors += tb->n;
    }
    /* durable (or failed) now: the deletes it carries may answer */
    ss__sp_dwait_done(sp, tb->dwait, tb->ndwait, j->status);
    f->tomb_job = NULL;
    job_free(sp, j);
    ss__sp_file_put(sp, f);
    if (f->state == SS_SP_F_LIVE)
        ss__sp_tomb_kick(sp, f);
}

void ss__sp_tomb_kick(ss__spill *sp, struct ss__sp_file *f)
{
    struct ss__sp_job *j;
    struct ss__sp_job_tomb *tb;
    struct ss__sp_op *op;

    if (f->tomb_job || !f->ntomb || f->state != SS_SP_F_LIVE)
        return;
    j = job_new(sp, SS_SP_J_TOMB);
    op = j ? name_op(sp, j, SS_SP_OP_OPEN, f->id, false) : NULL;
    if (j)
        j->x = calloc(f->ntomb, sizeof(*j->x));
    if (!j || !op || !j->x) {
        if (op)
            ss__sp_op_release(sp, op);
        if (j) {
            if (!j->x)
                j->x = j->xin;
            job_free(sp, j);
        }
        /* the tombstones stay pending (the next delete or close retries);
         * nobody waits on that */
        ss__sp_dwait_done(sp, f->dwait, f->ndwait, -ENOMEM);
        f->ndwait = 0;
        return;
    }
    j->file = f;
    ss__sp_file_get(f);
    f->tomb_job = j;
    tb = &j->u.tomb;
    tb->offs = f->tomb;
    tb->n = f->ntomb;
    f->tomb = NULL;
    f->ntomb = f->ctomb = 0;
    tb->dwait = f->dwait; /* all of them: their offsets are in toffs */
    tb->ndwait = f->ndwait;
    f->dwait = NULL;
    f->ndwait = f->cdwait = 0;
    tb->val = SS_SPILL_TOMB;
    for (uint32_t i = 0; i < tb->n; i++)
        xfer_add(j, (uint8_t *)&tb->val, tb->offs[i] + offsetof(ss__spill_rec, tomb),
                 sizeof(tb->val), true, 0);
    /* buffered: an 8-byte write in place; O_DIRECT would need a
     * read-modify-write of the sector */
    op->oflags = O_WRONLY | O_CLOEXEC;
    j->state = SS_SP_S_OPEN;
    meta_op(sp, j, op);
}

static void unlink_advance(ss__spill *sp, struct ss__sp_job *j)
{
    struct ss__sp_file *f = j->file;

    if (j->io_pending)
        return;
    if (!j->status && j->state == SS_SP_S_UNLINK) {
        dirsync_join(sp, j, SS_SP_S_DIRSYNC);
        return;
    }
    if (j->status) {
        ss__log_error("spill: removing file %016llx.spill failed: %s", (unsigned long long)f->id,
                      ss_strerror(j->status));
        sp->st.delete_errors++;
    } else {
        sp->st.files_removed++;
    }
    sp->st.files--;
    if (f->fused)
        sp->st.fused_files--;
    sp->st.disk_bytes -= f->size;
    /* unlinked and the directory synced (or failed): its deletes answer */
    ss__sp_dwait_done(sp, f->dwait, f->ndwait, j->status);
    f->ndwait = 0;
    ss__sp_file_free(sp, f);
    job_free(sp, j);
}

void ss__sp_maybe_reclaim(ss__spill *sp, struct ss__sp_file *f)
{
    struct ss__sp_job *j;
    struct ss__sp_op *op;

    if (f->state != SS_SP_F_LIVE || f->live || f->refs || f == sp->fused_cur)
        return;
    j = job_new(sp, SS_SP_J_UNLINK);
    op = j ? name_op(sp, j, SS_SP_OP_UNLINK, f->id, false) : NULL;
    if (!op) {
        if (j)
            job_free(sp, j);
        return; /* stays LIVE with no record: scan removes it later */
    }
    f->state = SS_SP_F_DOOMED;
    if (f->fd >= 0) {
        ss__sys_close(f->fd);
        f->fd = -1;
    }
    if (f->rfd >= 0) {
        ss__sys_close(f->rfd);
        f->rfd = -1;
    }
    f->ntomb = 0; /* the unlink makes them moot */
    j->file = f;
    j->state = SS_SP_S_UNLINK;
    meta_op(sp, j, op);
}

static void job_advance(ss__spill *sp, struct ss__sp_job *j)
{
    switch (j->kind) {
    case SS_SP_J_LARGE:
        large_advance(sp, j);
        break;
    case SS_SP_J_BATCH:
        batch_advance(sp, j);
        break;
    case SS_SP_J_READ:
        read_advance(sp, j);
        break;
    case SS_SP_J_TOMB:
        tomb_advance(sp, j);
        break;
    case SS_SP_J_UNLINK:
        unlink_advance(sp, j);
        break;
    }
}

/* A small record: one read of all of it, aligned out to blocks, into a
 * pooled buffer taken when the read is issued. Returns the file's kept
 * read fd, or -1 (the job opens its own). */
static int read_span_setup(ss__spill *sp, struct ss__sp_job *j, struct ss__sp_file *f)
{
    struct ss__sp_job_read *rd = &j->u.read;
    const ss__spill_loc *loc = &rd->loc;
    uint64_t end = SS_ALIGN_UP(loc->offset + loc->rec_len, SS_SP_BLK);

    rd->span = true;
    rd->span_off = loc->offset & ~(SS_SP_BLK - 1);
    rd->o.direct = sp->dio_align != 0;
    xfer_add(j, NULL, rd->span_off, end - rd->span_off, true,
             loc->offset + loc->rec_len - rd->span_off);
    j->x[0].span = true;
    /* Small records are restored often and one at a time: keep a read
     * fd per file rather than a worker round trip to open it each time.
     * The file is ours and its directory entry is cached (we made or
     * listed it), so this open does not wait for the disk; if it fails
     * the job opens its own through the worker. */
    if (f->rfd < 0) {
        char name[SS_SPILL_NAME_MAX];
        int fd, fl = O_RDONLY | O_CLOEXEC | O_NOFOLLOW | (rd->o.direct ? O_DIRECT : 0);

        ss__spill_name(name, f->id, false);
        fd = ss__sys_openat(sp->dirfd, name, fl, 0);
        f->rfd = fd < 0 ? -1 : fd; /* -1: the job opens its own */
    }
    return f->rfd;
}

/* A larger record: its header block, its data in place (straight into
 * the caller's memory when aligned for O_DIRECT) and its tail through a
 * bounce block; hashed as it arrives when large. 0 or -ENOMEM. */
static int read_large_setup(ss__spill *sp, struct ss__sp_job *j)
{
    struct ss__sp_job_read *rd = &j->u.read;
    const ss__spill_loc *loc = &rd->loc;
    uint64_t data = loc->offset + loc->data_off;

    rd->span_off = loc->offset;
    rd->o.direct = sp->dio_align && loc->offset % SS_SP_BLK == 0 &&
                   loc->data_off % SS_SP_BLK == 0 && (uintptr_t)rd->dst % sp->dio_align == 0;
    rd->o.direct_len = rd->o.direct ? loc->size & ~(SS_SP_BLK - 1) : loc->size;
    rd->o.tail_len = loc->size - rd->o.direct_len;
    if (!(rd->o.hdr = ss__sp_balloc(loc->data_off)) ||
        (rd->o.tail_len && !(rd->o.tail = ss__sp_balloc(SS_SP_BLK))))
        return -ENOMEM;
    xfer_add(j, rd->o.hdr, loc->offset, loc->data_off, false, 0);
    xfer_add(j, rd->dst, data, rd->o.direct_len, false, 0);
    if (rd->o.tail_len)
        xfer_add(j, rd->o.tail, data + rd->o.direct_len, SS_SP_BLK, false, 0);
    if (loc->size > SS_SP_HASH_INLINE_MAX) {
        rd->progressive = true;
        rd->nchunks = (rd->o.direct_len + sp->chunk - 1) / sp->chunk;
        if (!(rd->bits = calloc(rd->nchunks / 8 + 1, 1)))
            return -ENOMEM;
        ss__xxh64_init(&rd->o.hash.st, SS_SPILL_SEED);
    }
    return 0;
}

/* Queue the restore of a live record of f (checked by the caller). */
int ss__sp_read_start(ss__spill *sp, struct ss__sp_file *f, const ss__spill_loc *loc, void *dst,
                      void *meta_dst, uint64_t cookie)
{
    struct ss__sp_job *j;
    struct ss__sp_job_read *rd;
    struct ss__sp_op *op = NULL;

    j = job_new(sp, SS_SP_J_READ);
    op = j ? name_op(sp, j, SS_SP_OP_OPEN, f->id, false) : NULL;
    if (!op)
        goto nomem;
    rd = &j->u.read;
    rd->loc = *loc;
    rd->cookie = cookie;
    rd->dst = dst;
    rd->meta_dst = meta_dst;
    rd->o.size = loc->size;
    if (loc->rec_len <= SS_SP_SPAN_MAX) {
        if ((j->fd = read_span_setup(sp, j, f)) >= 0) {
            ss__sp_op_release(sp, op);
            op = NULL;
        }
    } else if (read_large_setup(sp, j) < 0) {
        goto nomem;
    }
    j->file = f;
    ss__sp_file_get(f);
    if (op) {
        op->oflags = O_RDONLY | O_CLOEXEC | (rd->o.direct ? O_DIRECT : 0);
        j->state = SS_SP_S_OPEN;
        meta_op(sp, j, op);
    } else {
        j->state = SS_SP_S_DATA;
        job_ready(sp, j);
    }
    busy_inc(&sp->restore_active, &sp->restore_t0);
    return 0;

nomem:
    if (op)
        ss__sp_op_release(sp, op);
    if (j)
        job_free(sp, j);
    return -ENOMEM;
}

/* ------------------------------------------------------ completions */

static void data_done(ss__spill *sp, struct ss__sp_op *op)
{
    struct ss__sp_job *j = op->job;
    struct ss__sp_xfer *x = &j->x[op->part];
    int64_t res = op->res;
    struct ss__sp_job_read *rd = j->kind == SS_SP_J_READ ? &j->u.read : NULL;

    j->io_pending--;
    if (res < 0) {
        if (res == -EBADMSG && rd)
            read_damaged(sp, &rd->loc, "the file is truncated");
        job_fail(j, (int)res);
    } else {
        if (op->type == SS_SP_OP_READ)
            SS_SP_DEFINED(op->buf, op->done);
        x->completed += op->len;
        if (rd && rd->progressive && x->buf == rd->dst)
            rd->bits[op->idx / 8] |= (uint8_t)(1u << (op->idx % 8));
    }
    ss__sp_op_release(sp, op);
    job_advance(sp, j);
}

static void op_done(ss__spill *sp, struct ss__sp_op *op)
{
    struct ss__sp_job *j = op->job;

    switch (op->type) {
    case SS_SP_OP_WRITE:
    case SS_SP_OP_READ:
        data_done(sp, op);
        return;
    case SS_SP_OP_DIRSYNC:
        dirsync_done(sp, op->res);
        ss__sp_op_release(sp, op);
        return;
    case SS_SP_OP_FSYNC:
        if (op->res < 0) {
            ss__log_error("spill: fdatasync of file %016llx failed: %s",
                          (unsigned long long)j->file->id, ss_strerror((int)op->res));
            if (j->state == SS_SP_S_CLEANSYNC)
                j->cleanup_err = (int)op->res;
            else
                job_fail(j, (int)op->res);
        }
        break;
    case SS_SP_OP_OPEN:
        if (op->res >= 0) {
            j->fd = (int)op->res;
            j->created = (op->oflags & O_CREAT) != 0;
        } else {
            job_fail(j, (int)op->res);
        }
        break;
    case SS_SP_OP_UNLINK:
    case SS_SP_OP_RENAME:
        /* a name already gone needs only the directory fsync that follows */
        if (op->type == SS_SP_OP_UNLINK && op->res == -ENOENT)
            op->res = 0;
        if (op->res < 0 && j->state == SS_SP_S_CLEANUP)
            j->cleanup_err = (int)op->res;
        else if (op->res < 0)
            job_fail(j, (int)op->res);
        break;
    case SS_SP_OP_TRUNCATE: /* only a failed append's cleanup truncates */
        if (op->res < 0)
            j->cleanup_err = (int)op->res;
        break;
    case SS_SP_OP_HASH: /* only LARGE and READ hash */
        (j->kind == SS_SP_J_LARGE ? &j->u.large.o : &j->u.read.o)->hash.busy = false;
        ss__sp_op_release(sp, op);
        job_advance(sp, j);
        return;
    }
    j->io_pending--;
    ss__sp_op_release(sp, op);
    job_advance(sp, j);
}

/* ------------------------------------------------------- scheduling */

/* Start what may start: the next batch, queued fdatasyncs, a directory
 * fsync for the jobs waiting on one, data ops round-robin over the ready
 * jobs (each bounded by queue_depth in flight); then submit. */
void ss__sp_pump(ss__spill *sp)
{
    batch_kick(sp);
    while (sp->syncq_head && sp->sync_inflight < sp->qd) {
        struct ss__sp_op *op = sp->syncq_head;

        sp->syncq_head = op->next;
        if (!sp->syncq_head)
            sp->syncq_tail = NULL;
        ss__sp_op_start(sp, op);
    }
    if (!sp->ds_busy && sp->ds_wait && sp->sync_inflight < sp->qd) {
        struct ss__sp_op *op = ss__sp_op_new(sp, NULL, SS_SP_OP_DIRSYNC);

        if (op) {
            sp->ds_run = sp->ds_wait;
            sp->ds_wait = NULL;
            sp->ds_busy = true;
            ss__sp_op_start(sp, op);
        }
    }
    while (sp->data_inflight < sp->qd && sp->ready_head) {
        struct ss__sp_job *j = sp->ready_head;

        sp->ready_head = j->next;
        if (!sp->ready_head)
            sp->ready_tail = NULL;
        j->in_ready = false;
        if (job_issue(sp, j))
            job_ready(sp, j);
        else if (j->status && !j->io_pending)
            job_advance(sp, j); /* failed before it had anything in flight */
    }
    ss__sp_io_submit(sp);
}

/* Handle finished ops (at most SS_SP_PROCESS_BUDGET: a call must not hold the
 * loop for long; what is left keeps the eventfd readable), then start
 * what can start. */
unsigned ss__sp_process(ss__spill *sp)
{
    struct ss__sp_op *list, *op;
    unsigned n = ss__sp_io_reap(sp, &list);

    while (list) {
        op = list;
        list = op->next;
        op_done(sp, op);
    }
    ss__sp_pump(sp);
    return n;
}

bool ss__sp_idle(const ss__spill *sp)
{
    return sp->njobs == 0 && !(sp->stage && sp->stage->n) && !sp->pend_head;
}
