/* SPDX-License-Identifier: MIT */
/*
 * The spill engine's file table: every spill file the engine knows, with
 * the offsets of its records (live or dead), its live count, the job
 * references that keep it, and the tombstones and delete cookies waiting
 * for its next tombstone write. The invariants are written beside struct
 * sfile in spill_int.h.
 *
 * Owns the table (a hash by file id), record slots (reserved before a
 * spill's I/O so registering a durable record never fails) and the lookup
 * of a location. Dropping a file reference, which may start the file's
 * unlink, is a job's business (ss__sp_file_put, spill_job.c). May call
 * spill_io.c (the injection counter) only; called from spill_job.c,
 * spill_scan.c and spill.c, all on the loop thread.
 */
#include "spill_int.h"

#include <stdlib.h>
#include <string.h>

#include "sys.h"

/* ---------------------------------------------------------- file table */

static size_t ht_slot(const ss__spill *sp, uint64_t id)
{
    return (size_t)((id * 0x9E3779B97F4A7C15ull) >> 32) & (sp->ht_size - 1);
}

struct ss__sp_file *ss__sp_file_find(const ss__spill *sp, uint64_t id)
{
    struct ss__sp_file *f;

    for (f = sp->ht[ht_slot(sp, id)]; f; f = f->hnext)
        if (f->id == id)
            return f;
    return NULL;
}

struct ss__sp_file *ss__sp_file_new(ss__spill *sp, uint64_t id)
{
    struct ss__sp_file *f;

    if (sp->nfiles + 1 > sp->ht_size) {
        size_t nsz = sp->ht_size * 2;
        struct ss__sp_file **nt = calloc(nsz, sizeof(*nt));

        if (nt) {
            struct ss__sp_file **old = sp->ht;
            size_t osz = sp->ht_size;

            sp->ht = nt;
            sp->ht_size = nsz;
            for (size_t i = 0; i < osz; i++) {
                while (old[i]) {
                    struct ss__sp_file *g = old[i];

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

void ss__sp_file_free(ss__spill *sp, struct ss__sp_file *f)
{
    struct ss__sp_file **pp = &sp->ht[ht_slot(sp, f->id)];

    while (*pp && *pp != f)
        pp = &(*pp)->hnext;
    if (*pp) {
        *pp = f->hnext;
        sp->nfiles--;
    }
    if (f->fd >= 0)
        ss__sys_close(f->fd);
    if (f->rfd >= 0)
        ss__sys_close(f->rfd);
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

int ss__sp_rec_reserve(ss__spill *sp, struct ss__sp_file *f, uint32_t n)
{
    if (f->crecs - f->nrecs >= n)
        return 0;
    if (ss__sp_inj_hit(sp, SS_SPILL_INJ_RECS))
        return -ENOMEM;
    return SS_ARRAY_RESERVE(f->recs, f->crecs, (size_t)f->nrecs + n, 4);
}

int ss__sp_rec_add(ss__spill *sp, struct ss__sp_file *f, uint64_t off)
{
    if (ss__sp_rec_reserve(sp, f, 1) < 0)
        return -ENOMEM;
    SS_ASSERT(f->nrecs == 0 || (f->recs[f->nrecs - 1] & ~SS_SP_DEAD) < off);
    f->recs[f->nrecs++] = off;
    return 0;
}

/* Index of the record at `off`, live or dead, or -1. */
long ss__sp_rec_find(const struct ss__sp_file *f, uint64_t off)
{
    long lo = 0, hi = (long)f->nrecs - 1;

    while (lo <= hi) {
        long mid = lo + (hi - lo) / 2;
        uint64_t v = f->recs[mid] & ~SS_SP_DEAD;

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
struct ss__sp_file *ss__sp_loc_lookup(ss__spill *sp, const ss__spill_loc *loc, long *idx)
{
    struct ss__sp_file *f = ss__sp_file_find(sp, loc->file);
    long i;

    if (!f || f->state != SS_SP_F_LIVE)
        return NULL;
    i = ss__sp_rec_find(f, loc->offset);
    if (i < 0 || (f->recs[i] & SS_SP_DEAD))
        return NULL;
    *idx = i;
    return f;
}

void ss__sp_file_get(struct ss__sp_file *f)
{
    f->refs++;
}

void ss__sp_rec_kill(ss__spill *sp, struct ss__sp_file *f, long idx, uint64_t size)
{
    SS_ASSERT(!(f->recs[idx] & SS_SP_DEAD) && f->live > 0);
    f->recs[idx] |= SS_SP_DEAD;
    f->live--;
    sp->st.deletes++;
    sp->st.live_objects--;
    sp->st.live_bytes -= size < sp->st.live_bytes ? size : sp->st.live_bytes;
}

/* Queue a tombstone for the record at off (and the caller's cookie): the
 * durable-delete protocol beside struct ss__sp_file. */
int ss__sp_tomb_add(struct ss__sp_file *f, uint64_t off, const uint64_t *cookie)
{
    if (u64_reserve(&f->tomb, f->ntomb, &f->ctomb) < 0 ||
        (cookie && u64_reserve(&f->dwait, f->ndwait, &f->cdwait) < 0))
        return -ENOMEM;
    f->tomb[f->ntomb++] = off;
    if (cookie)
        f->dwait[f->ndwait++] = *cookie;
    return 0;
}
