/* SPDX-License-Identifier: MIT */
/*
 * The spill engine's jobs: the state machines of a large spill (a file of
 * its own), a batch of small spills (an append to the fused file), a
 * restore, a tombstone write and a file unlink. spill.c delivers every
 * completed op to job_advance(), which moves the job on; the
 * design essay opens spill.c.
 */
#include "spill_int.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

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
    j->t0 = ss__now_ns();
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
    if (j->span && j->hdr)
        ss__sp_span_put(sp, j->hdr);
    else
        free(j->hdr);
    free(j->tail);
    free(j->bits);
    free(j->toffs);
    free(j->dwait);
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
        if (!(x->buf = j->hdr = ss__sp_span_get(sp))) {
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

/* A new file's data is durable: give it its final name (".tmp" -> ".spill"). */
static void rename_start(ss__spill *sp, struct ss__sp_job *j)
{
    struct ss__sp_op *op = name_op(sp, j, SS_SP_OP_RENAME, j->file->id, true);

    j->state = SS_SP_S_RENAME;
    if (op) {
        ss__spill_name(op->name2, j->file->id, false);
        meta_op(sp, j, op);
    }
}

/* ... then make the name durable (a shared directory fsync). */
static void rename_done(ss__spill *sp, struct ss__sp_job *j)
{
    if (j->io_pending)
        return;
    j->renamed = true;
    dirsync_join(sp, j, SS_SP_S_DIRSYNC);
}

/* Hash pieces on the worker: for a spill the whole source is there; for a
 * restore only the prefix that has arrived (`avail`). */
static void hash_kick(ss__spill *sp, struct ss__sp_job *j, const uint8_t *base, uint64_t avail)
{
    uint64_t end;
    struct ss__sp_op *op;

    if (j->hash_busy || j->status || j->hashed >= avail)
        return;
    end = avail - j->hashed > SS_SP_HASH_PIECE ? j->hashed + SS_SP_HASH_PIECE : avail;
    if (end != j->size)
        end = j->hashed + ((end - j->hashed) & ~(uint64_t)31);
    if (end == j->hashed)
        return;
    op = ss__sp_op_new(sp, j, SS_SP_OP_HASH);
    if (!op) {
        job_fail(j, -ENOMEM);
        return;
    }
    op->hst = &j->hs;
    op->hp = base + j->hashed;
    op->hlen = end - j->hashed;
    op->hout = end == j->size ? &j->hash_val : NULL;
    j->hashed = end;
    j->hash_busy = true;
    ss__sp_op_start(sp, op);
}

static bool hash_done(const struct ss__sp_job *j)
{
    return !j->hash_busy && j->hashed == j->size;
}

static void loc_fill(ss__spill_loc *l, uint64_t file, uint64_t off, const struct ss__sp_job *j)
{
    memset(l, 0, sizeof(*l));
    l->file = file;
    l->offset = off;
    l->size = j->size;
    l->seq = j->seq;
    l->rec_len = j->rec_len;
    l->meta_size = j->meta_size;
    l->data_off = j->data_off;
    l->id = j->id;
    l->uid = j->uid;
}

static void log_spill_error(const ss_id *id, int err)
{
    char hex[2 * SS_ID_SIZE + 1];

    ss__spill_id_hex(id, hex);
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
    struct ss__sp_file *f = j->file;
    ss__spill_done d = { .cookie = j->cookie, .status = j->status, .op = SS_SPILL_OP_WRITE,
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
        f->size = j->rec_len;
        f->live = 1;
        loc_fill(&d.loc, f->id, 0, j);
        sp->st.files++;
        sp->st.disk_bytes += f->size;
        sp->st.live_objects++;
        sp->st.live_bytes += j->size;
    }
    if (!d.status) {
        sp->st.objects_spilled++;
        sp->st.bytes_spilled += j->size;
    } else {
        if (!d.copy && f->state == SS_SP_F_CREATING)
            ss__sp_file_free(sp, f);
        sp->st.spill_errors++;
        log_spill_error(&j->id, d.status);
    }
    ss__sp_push_done(sp, &d);
    busy_dec(&sp->spill_active, sp->spill_t0, &sp->st.spill_ns);
    job_free(sp, j);
}

static void large_advance(ss__spill *sp, struct ss__sp_job *j)
{
    ss__spill_rec *r;
    struct ss__sp_op *op;

    hash_kick(sp, j, j->src, j->size);
    if (j->status) {
        if (j->io_pending || j->hash_busy)
            return;
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
        return;
    }
    switch (j->state) {
    case SS_SP_S_OPEN:
        if (j->io_pending)
            return;
        j->state = SS_SP_S_DATA;
        xfer_add(j, (uint8_t *)j->src, j->data_off, j->direct_len, false, 0);
        if (j->tail_len)
            xfer_add(j, j->tail, j->data_off + j->direct_len, SS_SP_BLK, false, 0);
        job_ready(sp, j);
        /* fallthrough */
    case SS_SP_S_DATA:
        if (j->io_pending || !xfers_done(j) || !hash_done(j))
            return;
        /* the header goes last, once the data hash is known */
        r = (ss__spill_rec *)j->hdr;
        ss__spill_rec_fill(r, SS_SPILL_REC_OBJECT, &j->id, j->uid, j->meta_size, j->size,
                           j->data_off, j->rec_len, j->seq, j->hash_val, j->meta_hash);
        j->nx = j->xi = 0;
        xfer_add(j, j->hdr, 0, j->data_off, false, 0);
        j->state = SS_SP_S_HDR;
        job_ready(sp, j);
        return;
    case SS_SP_S_HDR:
        if (j->io_pending || !xfers_done(j))
            return;
        j->state = SS_SP_S_SYNC;
        sync_op(sp, j, j->fd);
        break;
    case SS_SP_S_SYNC:
        if (j->io_pending)
            return;
        rename_start(sp, j);
        break;
    case SS_SP_S_RENAME:
        rename_done(sp, j);
        return;
    case SS_SP_S_DIRSYNC:
        if (j->io_pending)
            return;
        large_finish(sp, j);
        return;
    }
    /* no memory for the next op: nothing in flight will call us again */
    if (j->status && !j->io_pending)
        large_advance(sp, j);
}

int ss__sp_large_start(ss__spill *sp, const ss_id *id, uint32_t uid, const uint8_t *data,
                       uint64_t size, const void *meta, uint32_t meta_size, uint64_t cookie)
{
    struct ss__sp_job *j = job_new(sp, SS_SP_J_LARGE);
    struct ss__sp_op *op;

    if (!j)
        return -ENOMEM;
    j->id = *id;
    j->uid = uid;
    j->cookie = cookie;
    j->src = data;
    j->size = size;
    j->meta_size = meta_size;
    j->data_off = (uint32_t)SS_ALIGN_UP(sizeof(ss__spill_rec) + meta_size, SS_SP_BLK);
    j->rec_len = j->data_off + SS_ALIGN_UP(size, SS_SP_BLK);
    /* O_DIRECT reads the caller's memory as it is: it must be aligned */
    j->direct = sp->dio_align && (uintptr_t)data % sp->dio_align == 0;
    j->direct_len = j->direct ? size & ~(SS_SP_BLK - 1) : size;
    j->tail_len = size - j->direct_len;
    j->hdr = ss__sp_balloc(j->data_off);
    j->tail = j->tail_len ? ss__sp_balloc(SS_SP_BLK) : NULL;
    j->file = ss__sp_file_new(sp, sp->next_file);
    op = ss__sp_op_new(sp, j, SS_SP_OP_OPEN);
    /* its record's slot now: once the file is durable, registering it
     * must not fail */
    if (!j->hdr || (j->tail_len && !j->tail) || !j->file || !op ||
        ss__sp_rec_reserve(sp, j->file, 1) < 0) {
        if (j->file)
            ss__sp_file_free(sp, j->file);
        if (op)
            ss__sp_op_release(sp, op);
        job_free(sp, j);
        return -ENOMEM;
    }
    sp->next_file++;
    j->seq = sp->next_seq++;
    j->file->state = SS_SP_F_CREATING;
    memset(j->hdr, 0, j->data_off);
    if (meta_size)
        memcpy(j->hdr + sizeof(ss__spill_rec), meta, meta_size);
    j->meta_hash = ss__spill_hash64(meta_size ? meta : "", meta_size, SS_SPILL_SEED);
    if (j->tail) {
        memset(j->tail, 0, SS_SP_BLK);
        memcpy(j->tail, data + j->direct_len, j->tail_len);
    }
    ss__xxh64_init(&j->hs, SS_SPILL_SEED);
    if (size <= SS_SP_HASH_INLINE_MAX) {
        j->hash_val = ss__spill_hash64(data, size, SS_SPILL_SEED);
        j->hashed = size;
    } else {
        hash_kick(sp, j, data, size);
    }
    ss__spill_name(op->name, j->file->id, true);
    op->oflags = O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | (j->direct ? O_DIRECT : 0);
    op->prealloc = j->rec_len;
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

int ss__sp_small_append(ss__spill *sp, const ss_id *id, uint32_t uid, const uint8_t *data,
                        uint64_t size, const void *meta, uint32_t meta_size, uint64_t cookie)
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

static void batch_finish(ss__spill *sp, struct ss__sp_job *j)
{
    struct ss__sp_batch *b = j->batch;
    struct ss__sp_file *f = j->file;
    bool copy = copy_left(j), keep = !j->status || copy;

    for (uint32_t i = 0; i < b->n; i++) {
        const struct ss__sp_brec *br = &b->r[i];
        ss__spill_done d = { .cookie = br->cookie, .op = SS_SPILL_OP_WRITE, .copy = copy };

        if (keep) {
            /* reserved at the kick */
            int rc = ss__sp_rec_add(sp, f, j->base + br->off);

            SS_ASSERT(rc == 0);
            (void)rc;
            d.status = j->status;
            d.loc.file = f->id;
            d.loc.offset = j->base + br->off;
            d.loc.size = br->size;
            d.loc.seq = br->seq;
            d.loc.rec_len = br->rec_len;
            d.loc.meta_size = br->meta_size;
            d.loc.data_off = br->data_off;
            d.loc.id = br->id;
            d.loc.uid = br->uid;
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
    sp->batch_job = NULL;
    j->fd = -1; /* the file's */
    if (keep) {
        if (f->state == SS_SP_F_CREATING) {
            f->state = SS_SP_F_LIVE;
            sp->st.files++;
            sp->st.fused_files++;
        }
        f->size = j->base + j->len;
        sp->st.disk_bytes += j->len;
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
    batch_put(sp, b);
    job_free(sp, j);
}

static void batch_advance(ss__spill *sp, struct ss__sp_job *j)
{
    struct ss__sp_file *f = j->file;
    struct ss__sp_op *op;

    if (j->status) {
        if (j->io_pending)
            return;
        if (j->state != SS_SP_S_CLEANUP && j->state != SS_SP_S_CLEANSYNC) {
            /* remove what the failed append wrote (a restart's scan must
             * not find it), durably, before the failure is reported */
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
                op->off = j->base;
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
        return;
    }
    switch (j->state) {
    case SS_SP_S_OPEN: /* built (and the file created) */
        if (j->io_pending)
            return;
        if (j->new_file)
            f->fd = j->fd;
        j->state = SS_SP_S_DATA;
        xfer_add(j, j->batch->buf, j->base, j->len, false, 0);
        job_ready(sp, j);
        return;
    case SS_SP_S_DATA:
        if (j->io_pending || !xfers_done(j))
            return;
        j->state = SS_SP_S_SYNC;
        sync_op(sp, j, f->fd);
        break;
    case SS_SP_S_SYNC:
        if (j->io_pending)
            return;
        if (!j->new_file) {
            batch_finish(sp, j);
            return;
        }
        rename_start(sp, j);
        break;
    case SS_SP_S_RENAME:
        rename_done(sp, j);
        return;
    case SS_SP_S_DIRSYNC:
        if (j->io_pending)
            return;
        batch_finish(sp, j);
        return;
    }
    if (j->status && !j->io_pending) /* as in large_advance */
        batch_advance(sp, j);
}

/* Flush the next batch if none is in flight: the worker builds it (and
 * creates the next fused file when needed), then it is written. */
static void batch_kick(ss__spill *sp)
{
    struct ss__sp_batch *b;
    struct ss__sp_job *j;
    struct ss__sp_file *f;
    uint64_t len;
    struct ss__sp_op *build, *open = NULL;

    if (sp->batch_job)
        return;
    if (sp->pend_head) {
        b = sp->pend_head;
        sp->pend_head = b->next;
        if (!sp->pend_head)
            sp->pend_tail = NULL;
    } else if (sp->stage && sp->stage->n) {
        b = sp->stage;
        sp->stage = NULL;
    } else {
        return;
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
    j = job_new(sp, SS_SP_J_BATCH);
    build = j ? ss__sp_op_new(sp, j, SS_SP_OP_BUILD) : NULL;
    if (build && b->buf && (!sp->fused_cur || sp->fused_cur->size + len > sp->fused_cap)) {
        ss__sp_fused_retire(sp);
        open = ss__sp_op_new(sp, j, SS_SP_OP_OPEN);
        if (open && (sp->fused_cur = ss__sp_file_new(sp, sp->next_file))) {
            sp->next_file++;
            sp->fused_cur->fused = true;
            sp->fused_cur->state = SS_SP_F_CREATING;
            j->new_file = true;
        }
    }
    /* the records' slots now: once they are durable, registering them
     * must not fail */
    if (!build || !b->buf || !sp->fused_cur ||
        ss__sp_rec_reserve(sp, sp->fused_cur, b->n) < 0) {
        /* no memory to even start: fail the batch's objects now */
        if (j && j->new_file && sp->fused_cur)
            ss__sp_file_free(sp, sp->fused_cur); /* not created yet */
        if (open)
            ss__sp_op_release(sp, open);
        if (build)
            ss__sp_op_release(sp, build);
        for (uint32_t i = 0; i < b->n; i++) {
            ss__spill_done d = { .cookie = b->r[i].cookie, .status = -ENOMEM,
                                 .op = SS_SPILL_OP_WRITE };

            ss__sp_push_done(sp, &d);
            sp->st.spill_errors++;
            busy_dec(&sp->spill_active, sp->spill_t0, &sp->st.spill_ns);
        }
        batch_put(sp, b);
        if (j)
            job_free(sp, j);
        return;
    }
    f = sp->fused_cur;
    j->batch = b;
    build->batch = b;
    j->len = len;
    j->base = f->size;
    j->file = f;
    ss__sp_file_get(f);
    sp->batch_job = j;
    j->state = SS_SP_S_OPEN;
    meta_op(sp, j, build);
    if (j->new_file) {
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
    char hex[2 * SS_ID_SIZE + 1];

    ss__spill_id_hex(&l->id, hex);
    ss__log_error("spill: restore of object %s from file %016llx at %llu failed: %s", hex,
                  (unsigned long long)l->file, (unsigned long long)l->offset, why);
    sp->st.damaged++;
    return -EBADMSG;
}

static int read_verify(ss__spill *sp, struct ss__sp_job *j)
{
    const uint8_t *p = j->hdr + (j->rec_off - j->span_off);
    const ss__spill_loc *l = &j->loc;
    ss__spill_rec r;
    const char *why = NULL;
    long i;

    memcpy(&r, p, sizeof(r));
    if (ss__spill_rec_check(&r, &why) < 0) {
        /* a tombstone that landed while we read: deleted meanwhile */
        if (r.tomb == SS_SPILL_TOMB && j->file &&
            ((i = ss__sp_rec_find(j->file, l->offset)) < 0 || (j->file->recs[i] & SS_SP_DEAD)))
            return -ENOENT;
    } else if (!(r.flags & SS_SPILL_REC_OBJECT) || memcmp(r.id, l->id.b, SS_ID_SIZE) ||
               r.data_size != l->size || r.meta_size != l->meta_size ||
               r.data_off != l->data_off || r.rec_len != l->rec_len || r.seq != l->seq) {
        why = "header does not match the location";
    } else if (r.tomb) {
        if ((i = ss__sp_rec_find(j->file, l->offset)) < 0 || (j->file->recs[i] & SS_SP_DEAD))
            return -ENOENT;
        why = "record is tombstoned";
    } else if (ss__spill_hash64(p + sizeof(r), r.meta_size, SS_SPILL_SEED) != r.meta_hash) {
        why = "meta checksum mismatch";
    } else if (j->progressive ? j->hash_val != r.data_hash
                              : ss__spill_hash64(j->span ? p + r.data_off : j->dst, l->size,
                                                 SS_SPILL_SEED) != r.data_hash) {
        why = "data checksum mismatch";
    }
    if (why)
        return read_damaged(sp, l, why);
    if (j->span && l->size) /* one span: copy the object out */
        memcpy(j->dst, p + r.data_off, l->size);
    if (j->meta_dst && r.meta_size)
        memcpy(j->meta_dst, p + sizeof(r), r.meta_size);
    return 0;
}

static void read_finish(ss__spill *sp, struct ss__sp_job *j)
{
    ss__spill_done d = { .cookie = j->cookie, .status = j->status, .op = SS_SPILL_OP_READ,
                         .loc = j->loc };

    if (j->fd >= 0 && j->fd != j->file->rfd)
        ss__sys_close(j->fd);
    j->fd = -1;
    if (!d.status) {
        sp->st.objects_restored++;
        sp->st.bytes_restored += j->size;
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
    if (j->status) {
        if (j->io_pending || j->hash_busy)
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
        if (j->progressive) {
            while (j->next_chunk < j->nchunks &&
                   (j->bits[j->next_chunk / 8] >> (j->next_chunk % 8) & 1))
                j->next_chunk++;
            j->prefix = j->next_chunk * sp->chunk;
            if (j->prefix > j->direct_len)
                j->prefix = j->direct_len;
        }
        if (!xfers_done(j) || j->io_pending) {
            if (j->progressive)
                hash_kick(sp, j, j->dst, j->prefix);
            return;
        }
        if (j->tail_len && !j->tail_copied) {
            memcpy(j->dst + j->direct_len, j->tail, j->tail_len);
            j->tail_copied = true;
        }
        if (j->progressive) {
            hash_kick(sp, j, j->dst, j->size);
            if (j->status) { /* no memory for the hash op */
                read_advance(sp, j);
                return;
            }
            if (!hash_done(j))
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
            if (j->io_pending || !xfers_done(j))
                return;
            j->state = SS_SP_S_SYNC;
            sync_op(sp, j, j->fd);
            if (j->status) /* no memory for it: finish now */
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
                      j->ntoffs, (unsigned long long)f->id, ss_strerror(j->status));
        sp->st.delete_errors += j->ntoffs;
    }
    /* durable (or failed) now: the deletes it carries may answer */
    ss__sp_dwait_done(sp, j->dwait, j->ndwait, j->status);
    f->tomb_job = NULL;
    job_free(sp, j);
    ss__sp_file_put(sp, f);
    if (f->state == SS_SP_F_LIVE)
        ss__sp_tomb_kick(sp, f);
}

void ss__sp_tomb_kick(ss__spill *sp, struct ss__sp_file *f)
{
    struct ss__sp_job *j;
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
    j->toffs = f->tomb;
    j->ntoffs = f->ntomb;
    f->tomb = NULL;
    f->ntomb = f->ctomb = 0;
    j->dwait = f->dwait; /* all of them: their offsets are in toffs */
    j->ndwait = f->ndwait;
    f->dwait = NULL;
    f->ndwait = f->cdwait = 0;
    j->tombval = SS_SPILL_TOMB;
    for (uint32_t i = 0; i < j->ntoffs; i++)
        xfer_add(j, (uint8_t *)&j->tombval, j->toffs[i] + offsetof(ss__spill_rec, tomb),
                 sizeof(j->tombval), true, 0);
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

/* Queue the restore of a live record of f (checked by the caller). */
int ss__sp_read_start(ss__spill *sp, struct ss__sp_file *f, const ss__spill_loc *loc, void *dst,
               void *meta_dst, uint64_t cookie)
{
    struct ss__sp_job *j;
    struct ss__sp_op *op = NULL;

    j = job_new(sp, SS_SP_J_READ);
    op = j ? name_op(sp, j, SS_SP_OP_OPEN, f->id, false) : NULL;
    if (!op)
        goto nomem;
    j->loc = *loc;
    j->cookie = cookie;
    j->dst = dst;
    j->meta_dst = meta_dst;
    j->size = loc->size;
    j->rec_off = loc->offset;
    if (loc->rec_len <= SS_SP_SPAN_MAX) {
        /* one read of the whole record, aligned out to blocks */
        uint64_t end = SS_ALIGN_UP(loc->offset + loc->rec_len, SS_SP_BLK);

        j->span = true;
        j->span_off = loc->offset & ~(SS_SP_BLK - 1);
        j->direct = sp->dio_align != 0;
        xfer_add(j, NULL, j->span_off, end - j->span_off, true,
                 loc->offset + loc->rec_len - j->span_off);
        j->x[0].span = true;
        /* Small records are restored often and one at a time: keep a read
         * fd per file rather than a worker round trip to open it each time.
         * The file is ours and its directory entry is cached (we made or
         * listed it), so this open does not wait for the disk; if it fails
         * the job opens its own through the worker. */
        if (f->rfd < 0) {
            char name[SS_SPILL_NAME_MAX];

            ss__spill_name(name, f->id, false);
            f->rfd = openat(sp->dirfd, name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW |
                                                 (j->direct ? O_DIRECT : 0));
        }
        if (f->rfd >= 0) {
            ss__sp_op_release(sp, op);
            op = NULL;
            j->fd = f->rfd;
        }
    } else {
        j->span_off = loc->offset;
        j->direct = sp->dio_align && loc->offset % SS_SP_BLK == 0 &&
                    loc->data_off % SS_SP_BLK == 0 &&
                    (uintptr_t)dst % sp->dio_align == 0;
        j->direct_len = j->direct ? loc->size & ~(SS_SP_BLK - 1) : loc->size;
        j->tail_len = loc->size - j->direct_len;
        if (!(j->hdr = ss__sp_balloc(loc->data_off)) ||
            (j->tail_len && !(j->tail = ss__sp_balloc(SS_SP_BLK))))
            goto nomem;
        xfer_add(j, j->hdr, loc->offset, loc->data_off, false, 0);
        xfer_add(j, dst, loc->offset + loc->data_off, j->direct_len, false, 0);
        if (j->tail_len)
            xfer_add(j, j->tail, loc->offset + loc->data_off + j->direct_len, SS_SP_BLK, false, 0);
        if (loc->size > SS_SP_HASH_INLINE_MAX) {
            j->progressive = true;
            j->nchunks = (j->direct_len + sp->chunk - 1) / sp->chunk;
            if (!(j->bits = calloc(j->nchunks / 8 + 1, 1)))
                goto nomem;
            ss__xxh64_init(&j->hs, SS_SPILL_SEED);
        }
    }
    j->file = f;
    ss__sp_file_get(f);
    if (op) {
        op->oflags = O_RDONLY | O_CLOEXEC | (j->direct ? O_DIRECT : 0);
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

    j->io_pending--;
    if (res < 0) {
        if (res == -EBADMSG && j->kind == SS_SP_J_READ)
            read_damaged(sp, &j->loc, "the file is truncated");
        job_fail(j, (int)res);
    } else {
        if (op->type == SS_SP_OP_READ)
            SS_SP_DEFINED(op->buf, op->done);
        x->completed += op->len;
        if (j->progressive && x->buf == j->dst)
            j->bits[op->idx / 8] |= (uint8_t)(1u << (op->idx % 8));
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
    case SS_SP_OP_HASH:
        j->hash_busy = false;
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
