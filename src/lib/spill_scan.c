/* SPDX-License-Identifier: MIT */
/*
 * The spill engine's startup scan: a thread lists the directory and walks
 * the spill files (ss__spill_walk), handing what it finds to the loop in
 * chunks; the loop applies them to the file table from ss__spill_reap
 * (ss__sp_scan_poll). The protocol between the two is written beside
 * ss__spill_scan_st in spill_int.h.
 *
 * Owns ss__spill_scan_start/_status/_kept/_cancel and ss__spill_scan. May
 * call spill_job.c (the scheduler, dropping file references, tombstone
 * writes), spill_ftab.c, spill_io.c (the eventfd) and spill_file.c; is
 * called by spill.c (reap and close) only.
 */
#include "spill_int.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "sys.h"

#define SCAN_CHUNK_RECS 1024u             /* records per chunk */
#define SCAN_CHUNK_META (256u * 1024)     /* meta bytes per chunk (one record may pass it) */
#define SCAN_QUEUE_MAX 4u                 /* chunks waiting for the loop */
#define SCAN_APPLY_MAX 4u                 /* chunks applied per reap */

/* What the thread found in one file, or part of it (see ss__spill_scan_st). */
struct ss__sp_scan_chunk {
    struct ss__sp_scan_chunk *next;
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
static int scan_push(ss__spill *sp, struct ss__sp_scan_chunk *c)
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
    struct ss__sp_scan_chunk *c;
    uint64_t file;
};

static struct ss__sp_scan_chunk *chunk_new(uint64_t file)
{
    struct ss__sp_scan_chunk *c = malloc(sizeof(*c));

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
    struct ss__sp_scan_chunk *c = w->c;

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

struct scan_list {
    ss__spill *sp;
    uint64_t *ids;
    size_t n, cap, removed;
};

/* Thread: one directory entry named like a spill or tmp file. */
static int scan_list_one(void *arg, uint64_t id, bool tmp, const char *name)
{
    struct scan_list *l = arg;

    if (id >= l->sp->scan.limit)
        return 0;
    if (tmp) {
        /* a spill that never completed: its object is still in
         * whatever memory held it, or was lost with the store */
        ss__log_info("spill: removing unfinished spill file %s", name);
        if (ss__sys_unlinkat(l->sp->dirfd, name, 0) == 0)
            l->removed++;
        return 0;
    }
    if (SS_ARRAY_RESERVE(l->ids, l->cap, l->n + 1, 64) < 0)
        return -ENOMEM;
    l->ids[l->n++] = id;
    return 0;
}

/* Thread: the directory's spill files, sorted (leftover .tmp files are
 * removed on the way). */
static int scan_list(ss__spill *sp, uint64_t **out, size_t *nout)
{
    struct scan_list l = { .sp = sp };
    int rc = ss__spill_dir_each(sp->dirfd, scan_list_one, &l);

    if (l.removed)
        ss__sys_fsync(sp->dirfd);
    if (rc < 0) {
        free(l.ids);
        return rc;
    }
    if (l.n > 1) /* qsort(NULL, 0, ...) is undefined */
        qsort(l.ids, l.n, sizeof(*l.ids), cmp_u64);
    *out = l.ids;
    *nout = l.n;
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
        uint64_t t = ss__sys_real_ns() + 10 * 1000000ull; /* the cv's clock */
        struct timespec ts = { (time_t)(t / 1000000000ull), (long)(t % 1000000000ull) };

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
    int rc;

    ss__sys_block_signals(NULL);
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
static int scan_rec(ss__spill *sp, struct ss__sp_file *f, const ss__spill_loc *loc,
                    const void *meta)
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
    if (SS_ARRAY_RESERVE(sc->drop, sc->cdrop, sc->ndrop + 1, 16) < 0)
        return -ENOMEM;
    sc->drop[sc->ndrop++] = *loc;
    return 0;
}

/* Loop: the records the caller dropped (an older copy, say) die now and get
 * their tombstones (or the file goes, when nothing in it lives). */
static void scan_drops(ss__spill *sp, struct ss__sp_file *f)
{
    ss__spill_scan_st *sc = &sp->scan;

    for (size_t k = 0; k < sc->ndrop; k++) {
        long idx = ss__sp_rec_find(f, sc->drop[k].offset);

        if (idx < 0 || (f->recs[idx] & SS_SP_DEAD))
            continue;
        ss__sp_rec_kill(sp, f, idx, sc->drop[k].size);
        /* on failure: dead here; a later scan drops it again */
        (void)ss__sp_tomb_add(f, sc->drop[k].offset, NULL);
    }
    sc->ndrop = 0;
}

/* Loop: the end of a file's records. */
static int scan_file_end(ss__spill *sp, struct ss__sp_file *f, const struct ss__sp_scan_chunk *c)
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
                          ss_strerror(c->err));
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
    if (f->state != SS_SP_F_LIVE) { /* registered just now: hold it like the others */
        f->state = SS_SP_F_LIVE;
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
static int scan_apply(ss__spill *sp, struct ss__sp_scan_chunk *c)
{
    ss__spill_scan_st *sc = &sp->scan;
    struct ss__sp_file *f = sc->cur;
    int rc = 0;

    if (c->n && !f) {
        if (!(f = ss__sp_file_new(sp, c->file)))
            return -ENOMEM;
        /* the scan's reference keeps it from being unlinked while records
         * of it are still to come (drops and deletes can kill the first) */
        f->state = SS_SP_F_LIVE;
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
        struct ss__sp_scan_chunk *c = sc->q_head;

        sc->q_head = c->next;
        free(c);
    }
    sc->q_tail = NULL;
    sc->q_n = 0;
    if (sc->cur) {
        /* cut short in the middle of a file: what was applied stays */
        struct ss__sp_file *f = sc->cur;

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
    ss__sp_pump(sp);
}

void ss__sp_scan_poll(ss__spill *sp)
{
    ss__spill_scan_st *sc = &sp->scan;
    bool done, more;
    int err;

    if (!sc->started || sc->over)
        return;
    for (unsigned k = 0; k < SCAN_APPLY_MAX; k++) {
        struct ss__sp_scan_chunk *c;
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
            ss__log_error("spill: %s: scan stopped: %s", sp->dir, ss_strerror(rc));
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
            ss__log_error("spill: %s: scan stopped: %s", sp->dir, ss_strerror(err));
        scan_over(sp, err < 0 ? err : 1);
    } else if (more) {
        ss__sp_efd_signal(sp); /* more than one turn's worth: come back */
    } else {
        ss__sp_pump(sp);
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
        if (ss__sys_poll(&pfd, 1, 1000) > 0)
            ss__sp_efd_drain(sp);
        ss__sp_process(sp);
        ss__sp_scan_poll(sp);
    }
    if (sp->dq_n)
        ss__sp_efd_signal(sp);
    if (rc < 0)
        return rc;
    return sp->scan.kept > INT32_MAX ? INT32_MAX : (int)sp->scan.kept;
}
