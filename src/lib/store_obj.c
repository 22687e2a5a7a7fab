/* SPDX-License-Identifier: MIT */
/*
 * The object table and lifecycle: create -> seal ->
 * get/release -> delete, capacity, the seal worker. Parked requests and
 * GET are in store_get.c, spilling in store_spill.c.
 *
 * Records. An object is an index entry (id, state, locations: index.c)
 * plus an ss__obj (refs, fds, LRU links), both numbered by the entry
 * number. Entry numbers are reused LIFO from a free list; each reuse bumps
 * the entry's generation.
 *
 * Deferred delete. DELETE of a referenced object unchains its entry (state
 * DELETED): the id can be created again at once, while holders keep their
 * views; the last release frees it. A RELEASE names an id only, so among
 * the sealed objects with that id this client holds (the live one and
 * deleted ones) it drops a reference on the one whose oldest reference
 * the client took first (held_ref); the library drops its oldest hold,
 * the same one. A put's own reference is dropped by its SEAL
 * (SS_SEALF_RELEASE), which names the object exactly.
 *
 * Capacity counts bytes the kernel holds for the store: object segments
 * (page-rounded, charged by the pool on take), small segments (charged by
 * the allocator per segment) and the pool's ready segments. A create that
 * does not fit asks ss__reclaim() for room: first the pool's ready memory;
 * then, with SEALSTORE_EVICT on, it drops unreferenced sealed objects,
 * least recently used first (the user asked for a cache that forgets:
 * eviction wins over spilling); otherwise, with spilling on, it spills
 * them (store_spill.c), which frees the same memory and keeps the object,
 * but only when the disk has it: the create parks meanwhile. A parked
 * create is retried whenever memory is freed, until
 * SEALSTORE_CREATE_TIMEOUT, then fails with -ENOSPC.
 *
 * Spilled objects. A spilled object keeps its entry (state SPILLED, no
 * memory, ss__obj.disk names its disk copy). Anything that frees an entry
 * first waits for a spill or restore of it in flight (SPILLING, RESTORING):
 * the engine and the seal worker hold its memory until they report back.
 *
 * Seal worker: F_ADD_SEALS(WRITE) can block ~160 ms when pages are pinned,
 * so object segments are write-sealed on a worker thread. Each client has at
 * most one job with the worker (its other seals wait in its own queue), so
 * one client with pinned pages cannot monopolise it. The worker sees only
 * the fd and the size; results come back through an eventfd and are applied
 * by the loop.
 */
#include "store_int.h"

#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "stats.h"
#include "sys.h"

#define WAIT_BUCKETS 4096u
#define DET_BUCKETS 1024u
#define EVICT_BATCH 64u

/* ================================================================ records */

void ss__ent_set_state(ss__store *s, uint32_t e, uint32_t state)
{
    ss__index_entry *en = ss__ent(s, e);
    uint32_t i = en->info;

    ss__index_write_begin(en);
    __atomic_store_n(&en->info,
                     SS_IX_INFO(state, SS_IX_KIND(i), SS_IX_BACKING(i), SS_IX_META_SIZE(i)),
                     __ATOMIC_RELAXED);
    ss__index_write_end(en);
}

int ss__obj_alloc(ss__store *s, uint32_t *out)
{
    uint32_t e;
    int rc;

    if (s->free_head) {
        e = s->free_head - 1;
        s->free_head = ss__obj_at(s, e)->next;
    } else {
        e = s->ix.high;
        rc = ss__index_reserve(&s->ix, e);
        if (rc < 0)
            return rc;
        uint32_t ch = e / SS_INDEX_CHUNK_ENTRIES;
        if (!s->objs[ch]) {
            /* calloc of this size is an mmap: pages appear as entries do */
            s->objs[ch] = calloc(SS_INDEX_CHUNK_ENTRIES, sizeof(ss__obj));
            if (!s->objs[ch]) {
                s->ix.high = e; /* nothing was handed out */
                return -ENOMEM;
            }
        }
    }
    ss__obj *o = ss__obj_at(s, e);
    memset(o, 0, sizeof(*o));
    o->fd_ro = -1;
    o->fd_rw = -1;
    o->flags = SS_OBJF_USED;
    o->uid = SS_UID_UNKNOWN;
    *out = e;
    return 0;
}

void ss__lru_remove(ss__store *s, uint32_t e)
{
    ss__obj *o = ss__obj_at(s, e);

    if (!(o->flags & SS_OBJF_ON_LRU))
        return;
    if (o->prev)
        ss__obj_at(s, o->prev - 1)->next = o->next;
    else
        s->lru_head = o->next;
    if (o->next)
        ss__obj_at(s, o->next - 1)->prev = o->prev;
    else
        s->lru_tail = o->prev;
    o->prev = o->next = 0;
    o->flags &= (uint8_t)~SS_OBJF_ON_LRU;
}

/* Most recently used at the tail. */
void ss__lru_push(ss__store *s, uint32_t e)
{
    ss__obj *o = ss__obj_at(s, e);

    SS_ASSERT(!(o->flags & SS_OBJF_ON_LRU));
    o->next = 0;
    o->prev = s->lru_tail;
    if (s->lru_tail)
        ss__obj_at(s, s->lru_tail - 1)->next = e + 1;
    else
        s->lru_head = e + 1;
    s->lru_tail = e + 1;
    o->flags |= SS_OBJF_ON_LRU;
}

/* ---------------------------------------------------------- small segments */

/* The record of allocator segment `slot`, made current (a segment that was
 * destroyed and replaced in the same slot gets a new small number). */
ss__small *ss__small_rec(ss__store *s, uint32_t slot)
{
    const ss__seg *g = ss__salloc_segment(s->salloc, slot);

    if (!g)
        return NULL;
    if (slot >= s->nsmalls) {
        uint32_t n = s->nsmalls ? s->nsmalls : 16;
        while (n <= slot)
            n *= 2;
        ss__small *ns = realloc(s->smalls, n * sizeof(*ns));
        if (!ns)
            return NULL;
        for (uint32_t i = s->nsmalls; i < n; i++)
            ns[i] = (ss__small){ .no = 0, .ro_fd = -1, .seg = NULL };
        s->smalls = ns;
        s->nsmalls = n;
    }
    ss__small *sm = &s->smalls[slot];
    if (sm->no == 0 || sm->seg != g) {
        if (sm->ro_fd >= 0)
            close(sm->ro_fd);
        if (++s->next_small_no == 0)
            s->next_small_no = 1;
        sm->no = s->next_small_no;
        sm->ro_fd = -1;
        sm->seg = g;
    }
    return sm;
}

/* After a free: if the allocator destroyed the segment, forget it. */
void ss__small_check(ss__store *s, uint32_t slot)
{
    if (slot < s->nsmalls && !ss__salloc_segment(s->salloc, slot)) {
        ss__small *sm = &s->smalls[slot];
        if (sm->ro_fd >= 0)
            close(sm->ro_fd);
        sm->ro_fd = -1;
        sm->no = 0;
        sm->seg = NULL;
    }
}

int ss__small_ro_fd(ss__store *s, ss__small *sm)
{
    if (sm->ro_fd < 0) {
        int fd = ss__seg_reopen_ro(sm->seg->fd);
        if (fd < 0)
            return fd;
        sm->ro_fd = fd;
    }
    return sm->ro_fd;
}

void ss__small_free(ss__store *s, uint32_t slot, uint64_t off64, uint64_t size)
{
    ss__sloc loc = { .seg = slot, .cls = (uint32_t)ss__salloc_class_of(size),
                     .off = off64 * SS_OBJ_ALIGN, .ptr = NULL };

    if (ss__salloc_free(s->salloc, &loc) < 0)
        ss__log_error("store: small free of seg %u off %llu failed", slot,
                      (unsigned long long)loc.off);
    ss__small_check(s, slot);
}

/* ------------------------------------------------------------ free/detach */

void ss__obj_seg_free(ss__store *s, ss__seg *seg, bool writing)
{
    uint64_t bytes = seg->size;

    if (writing)
        ss__pool_writer_done(s->pool);
    ss__seg_destroy(seg);
    ss__store_charge(s, -(int64_t)bytes);
}

void ss__obj_drop_mem(ss__store *s, uint32_t e)
{
    ss__obj *o = ss__obj_at(s, e);
    ss__index_entry *en = ss__ent(s, e);
    uint32_t info = en->info;

    if (o->flags & SS_OBJF_NOMEM)
        return; /* spilled: nothing in memory */
    if (SS_IX_KIND(info) == SS_SEG_OBJECT) {
        ss__seg seg = {
            .fd = o->fd_ro >= 0 ? o->fd_ro : o->fd_rw,
            .page_size = ss__backing_page_size((int)SS_IX_BACKING(info)),
            .backing = (uint8_t)SS_IX_BACKING(info),
            .kind = SS_SEG_OBJECT,
            .node = o->node,
            .size = o->seg_size,
            .map = NULL,
        };
        bool writing = o->fd_ro >= 0 && o->fd_rw >= 0; /* never sealed */

        if (writing)
            close(o->fd_rw);
        ss__obj_seg_free(s, &seg, writing);
    } else {
        ss__small_free(s, o->small_slot, en->data_off64, en->size);
    }
    if (en->meta_seg)
        ss__small_free(s, o->meta_slot, en->meta_off64, SS_IX_META_SIZE(info));
    o->fd_ro = o->fd_rw = -1;
    o->seg_size = 0;
    o->small_slot = o->meta_slot = 0;
    o->flags |= SS_OBJF_NOMEM;
    s->retry_creates = true;
}

/* Give back an object's memory and its entry. Caller made refs 0 (or the
 * object was never seen by anyone but its creator). */
static void det_remove(ss__store *s, uint32_t e);

void ss__obj_free(ss__store *s, uint32_t e)
{
    ss__obj *o = ss__obj_at(s, e);
    ss__index_entry *en = ss__ent(s, e);
    uint32_t info = en->info;
    uint32_t st = SS_IX_STATE(info);

    SS_ASSERT(o->refs == 0 &&
              !(o->flags & (SS_OBJF_SEALING | SS_OBJF_SPILLING | SS_OBJF_RESTORING)));
    ss__lru_remove(s, e);
    if (st == SS_IX_CREATED || st == SS_IX_SEALED || st == SS_IX_SPILLED) {
        ss__index_unlink(&s->ix, e);
        s->nobjects--;
        s->object_bytes -= en->size;
    } else if (st == SS_IX_DELETED) {
        det_remove(s, e);
    }
    if (st == SS_IX_SEALED || st == SS_IX_SPILLED)
        s->nsealed--;
    if (st == SS_IX_SPILLED) {
        s->nspilled--;
        s->spilled_bytes -= en->size;
    }
    if (o->disk)
        ss__spill_forget(s, e);

    ss__obj_drop_mem(s, e);

    ss__index_write_begin(en);
    __atomic_store_n(&en->info, SS_IX_INFO(SS_IX_FREE, 0, 0, 0), __ATOMIC_RELAXED);
    __atomic_store_n(&en->generation, en->generation + 1, __ATOMIC_RELAXED);
    __atomic_store_n(&en->meta_seg, 0, __ATOMIC_RELAXED);
    ss__index_write_end(en);

    memset(o, 0, sizeof(*o));
    o->fd_ro = o->fd_rw = -1;
    o->next = s->free_head;
    s->free_head = e + 1;
    s->retry_creates = true;
}

/* ------------------------------------------------- deleted but referenced */

/* Deleted objects still referenced, by id, so a RELEASE naming the id can
 * find them (the live hash no longer has them). Chained through the
 * object's prev/next, which the LRU does not use for these. Rare. */
static inline uint32_t det_bucket(const ss__store *s, const ss_id *id)
{
    return (uint32_t)(ss__index_hash(id, s->ix.key ^ 0x2545f491u) & (s->det_nbuckets - 1));
}

static void det_add(ss__store *s, uint32_t e)
{
    ss__obj *o = ss__obj_at(s, e);
    uint32_t b = det_bucket(s, &ss__ent(s, e)->id);

    o->prev = 0;
    o->next = s->det_buckets[b];
    if (o->next)
        ss__obj_at(s, o->next - 1)->prev = e + 1;
    s->det_buckets[b] = e + 1;
}

static void det_remove(ss__store *s, uint32_t e)
{
    ss__obj *o = ss__obj_at(s, e);

    if (o->prev)
        ss__obj_at(s, o->prev - 1)->next = o->next;
    else
        s->det_buckets[det_bucket(s, &ss__ent(s, e)->id)] = o->next;
    if (o->next)
        ss__obj_at(s, o->next - 1)->prev = o->prev;
    o->prev = o->next = 0;
}

/* DELETE / eviction / loss of a sealed (or spilled) object: unchain now,
 * free at refs 0 once no spill or restore of it is in flight. */
void ss__obj_detach(ss__store *s, uint32_t e, bool evicted)
{
    ss__obj *o = ss__obj_at(s, e);
    ss__index_entry *en = ss__ent(s, e);
    ss_id id = en->id;
    uint64_t size = en->size;
    bool spilled = ss__ent_state(s, e) == SS_IX_SPILLED;

    if (o->flags & SS_OBJF_RESTORING)
        ss__restore_cancel(s, e); /* only one still waiting for memory stops */
    if (o->refs == 0 && !(o->flags & (SS_OBJF_SPILLING | SS_OBJF_RESTORING))) {
        ss__obj_free(s, e);
    } else {
        /* its disk copy goes now, not when the last reference does: a
         * crash meanwhile must not bring a deleted object back */
        if (o->disk)
            ss__spill_forget(s, e);
        ss__lru_remove(s, e);
        ss__index_unlink(&s->ix, e);
        ss__ent_set_state(s, e, SS_IX_DELETED);
        det_add(s, e);
        s->nobjects--;
        s->nsealed--;
        s->object_bytes -= size;
        if (spilled) {
            s->nspilled--;
            s->spilled_bytes -= size;
        }
    }
    /* GETs waiting for its restore now wait for the id like any other */
    if (spilled)
        ss__restore_waiters_done(s, &id, 0);
    if (evicted)
        s->c_evictions++;
    ss__store_event(s, SS_EVENT_DELETED, &id, size);
}

/* ============================================================== capacity */

int ss__store_charge(void *arg, int64_t delta)
{
    ss__store *s = arg;

    if (delta <= 0) {
        atomic_fetch_sub_explicit(&s->resident, (uint64_t)-delta, memory_order_relaxed);
        return 0;
    }
    uint64_t cur = atomic_load_explicit(&s->resident, memory_order_relaxed);
    do {
        if (cur + (uint64_t)delta > s->capacity || cur + (uint64_t)delta < cur)
            return -ENOSPC;
    } while (!atomic_compare_exchange_weak_explicit(&s->resident, &cur, cur + (uint64_t)delta,
                                                    memory_order_relaxed,
                                                    memory_order_relaxed));
    return 0;
}

/*
 * Free memory for a create (or restore) needing about `need` more bytes.
 * Returns true if anything was freed now (the caller retries). Spilling
 * frees later: it is asked to have enough on its way out for this request
 * and every parked one.
 */
bool ss__reclaim(ss__store *s, uint64_t need)
{
    uint64_t before = atomic_load(&s->resident);
    bool progress = false;

    if (s->pool && ss__pool_trim(s->pool, need) > 0)
        progress = true;
    if (!s->evict) {
        if (s->sp && ss__spill_more(s, need + s->parked_need, true))
            progress = true;
        return progress;
    }
    /* a batch at a time: freeing small objects frees slots, not always
     * whole segments, so the caller retries after each batch */
    for (uint32_t r = 0; r < EVICT_BATCH && s->lru_head; r++) {
        uint64_t now = atomic_load(&s->resident);
        if (before > now && before - now >= need)
            break;
        uint32_t e = s->lru_head - 1;
        ss__obj_detach(s, e, true);
        progress = true;
    }
    return progress;
}

/* ======================================================== client refs map */

ss__ref *ss__ref_find(const ss__conn *c, uint32_t e)
{
    if (!c->ref_cap)
        return NULL;
    uint32_t mask = c->ref_cap - 1;
    for (uint32_t i = (e * 0x9e3779b1u) & mask;; i = (i + 1) & mask) {
        ss__ref *r = &c->refs[i];
        if (r->key == e + 1)
            return r;
        if (!r->key)
            return NULL;
    }
}

int ss__ref_grow(ss__conn *c)
{
    uint32_t ncap = c->ref_cap ? c->ref_cap * 2 : 16;
    ss__ref *nr = calloc(ncap, sizeof(*nr));

    if (!nr)
        return -ENOMEM;
    for (uint32_t i = 0; i < c->ref_cap; i++) {
        if (!c->refs[i].key)
            continue;
        uint32_t j = ((c->refs[i].key - 1) * 0x9e3779b1u) & (ncap - 1);
        while (nr[j].key)
            j = (j + 1) & (ncap - 1);
        nr[j] = c->refs[i];
    }
    free(c->refs);
    c->refs = nr;
    c->ref_cap = ncap;
    return 0;
}

/* The ref record of (c, e), created with count 0 if missing. */
static ss__ref *ref_get(ss__conn *c, uint32_t e)
{
    ss__ref *r = ss__ref_find(c, e);

    if (r)
        return r;
    if ((c->ref_used + 1) * 4 > c->ref_cap * 3 && ss__ref_grow(c) < 0)
        return NULL;
    uint32_t mask = c->ref_cap - 1;
    uint32_t i = (e * 0x9e3779b1u) & mask;
    while (c->refs[i].key)
        i = (i + 1) & mask;
    c->refs[i].key = e + 1;
    c->refs[i].refs = 0;
    c->refs[i].seq = c->ref_seq++;
    c->ref_used++;
    return &c->refs[i];
}

/* Backward-shift deletion keeps probe chains intact without tombstones. */
static void ref_del(ss__conn *c, ss__ref *r)
{
    uint32_t mask = c->ref_cap - 1;
    uint32_t i = (uint32_t)(r - c->refs);

    c->refs[i].key = 0;
    c->ref_used--;
    for (uint32_t j = (i + 1) & mask; c->refs[j].key; j = (j + 1) & mask) {
        uint32_t home = ((c->refs[j].key - 1) * 0x9e3779b1u) & mask;
        /* move j into the hole at i if its home is not in (i, j] */
        if (((j - home) & mask) >= ((j - i) & mask)) {
            c->refs[i] = c->refs[j];
            c->refs[j].key = 0;
            i = j;
        }
    }
}

int ss__ref_take(ss__store *s, ss__conn *c, uint32_t e, ss__ref **out)
{
    ss__ref *r = ref_get(c, e);
    ss__obj *o = ss__obj_at(s, e);

    if (!r)
        return -ENOMEM;
    r->refs++;
    if (o->refs++ == 0)
        ss__lru_remove(s, e);
    if (out)
        *out = r;
    return 0;
}

void ss__obj_idle(ss__store *s, uint32_t e)
{
    if (!(ss__obj_at(s, e)->flags & SS_OBJF_SPILLING))
        ss__lru_push(s, e);
}

/* A DELETED object's last reference went: free it, unless a spill or
 * restore of it is in flight (its completion frees it). */
static void unref_deleted(ss__store *s, uint32_t e)
{
    if (!(ss__obj_at(s, e)->flags & (SS_OBJF_SPILLING | SS_OBJF_RESTORING)))
        ss__obj_free(s, e);
}

/* Drop `n` references of c on e (the record r); frees or LRU-queues. */
static void ref_drop(ss__store *s, ss__conn *c, ss__ref *r, uint32_t n)
{
    uint32_t e = r->key - 1;
    ss__obj *o = ss__obj_at(s, e);

    SS_ASSERT(SS_REF_COUNT(r->refs) >= n && o->refs >= n);
    r->refs -= n;
    if (SS_REF_COUNT(r->refs) == 0)
        ref_del(c, r); /* forgets "sent": the client unmaps at 0 refs */
    o->refs -= n;
    if (o->refs)
        return;
    uint32_t st = ss__ent_state(s, e);
    if (st == SS_IX_DELETED)
        unref_deleted(s, e);
    else if (st == SS_IX_SEALED)
        ss__obj_idle(s, e);
}

/* ============================================================== creation */

typedef struct create_args {
    const ss_id *id;
    uint64_t size;
    const void *meta;
    uint32_t meta_size;
    int32_t node;
    const void *data;        /* PUT: the bytes */
} create_args;

static void publish(ss__store *s, uint32_t e);

/*
 * Make the object's memory and entry. -ENOSPC means "does not fit now"
 * (the caller reclaims or parks); *need says about how much is missing.
 */
static int create_mem(ss__store *s, const create_args *a, uint32_t *out, uint64_t *need)
{
    bool small = a->size <= s->small_max;
    int node = SS_NODE_ANY;
    ss__sloc dloc = { 0 }, mloc = { 0 };
    ss__seg seg = { .fd = -1 };
    int fd_ro = -1, rc;
    uint32_t e;

    if (ss__index_find(&s->ix, a->id) >= 0)
        return -EEXIST;
    if (s->numa) {
        node = ss__numa_place(s->numa, &s->numa_policy, a->node);
        if (node < 0)
            node = SS_NODE_ANY;
    }
    *need = small ? 4 * SS_MiB : SS_ALIGN_UP(a->size, 4096ull);
    if (!small) {
        if (a->size > s->capacity)
            return -ENOSPC;
        rc = ss__pool_take(s->pool, a->size, node, &seg);
        if (rc < 0)
            return rc;
        fd_ro = ss__seg_reopen_ro(seg.fd);
        if (fd_ro < 0) {
            rc = fd_ro;
            goto fail;
        }
    } else {
        rc = ss__salloc_alloc(s->salloc, a->size, node, &dloc);
        if (rc < 0)
            return rc;
        /* the store's mapping is read-only outside write windows (alloc.c) */
        if (a->data && a->size && (rc = ss__salloc_write_open(s->salloc, &dloc, a->size, false)) < 0)
            goto fail;
    }
    if (a->meta_size) {
        rc = ss__salloc_alloc(s->salloc, a->meta_size, node, &mloc);
        if (rc < 0) {
            if (rc == -ENOSPC)
                *need = 4 * SS_MiB;
            goto fail;
        }
        rc = ss__salloc_write_open(s->salloc, &mloc, a->meta_size, false);
        if (rc < 0)
            goto fail;
        memcpy(mloc.ptr, a->meta, a->meta_size);
    }
    ss__small *dsm = small ? ss__small_rec(s, dloc.seg) : NULL;
    ss__small *msm = a->meta_size ? ss__small_rec(s, mloc.seg) : NULL;
    if ((small && !dsm) || (a->meta_size && !msm)) {
        rc = -ENOMEM;
        goto fail;
    }
    rc = ss__obj_alloc(s, &e);
    if (rc < 0)
        goto fail;

    ss__obj *o = ss__obj_at(s, e);
    o->node = (int16_t)(small ? node : seg.node);
    if (small) {
        o->small_slot = dloc.seg;
        if (a->data && a->size)
            memcpy(dloc.ptr, a->data, a->size);
    } else {
        o->fd_rw = seg.fd;
        o->fd_ro = fd_ro;
        o->seg_size = seg.size;
    }
    o->meta_slot = mloc.seg;

    ss__index_entry *en = ss__ent(s, e);
    ss__index_write_begin(en);
    __atomic_store_n(&en->info,
                     SS_IX_INFO(SS_IX_CREATED, small ? SS_SEG_SMALL : SS_SEG_OBJECT,
                                small ? 0 : seg.backing, a->meta_size),
                     __ATOMIC_RELAXED);
    memcpy(&en->id, a->id, sizeof(ss_id));
    en->seg_id = small ? (SS_SEG_ID_SMALL | dsm->no) : s->next_seg_id++;
    en->size = a->size;
    en->data_off64 = small ? (uint32_t)(dloc.off / SS_OBJ_ALIGN) : 0;
    en->meta_seg = a->meta_size ? msm->no : 0;
    en->meta_off64 = a->meta_size ? (uint32_t)(mloc.off / SS_OBJ_ALIGN) : 0;
    ss__index_write_end(en);
    ss__index_link(&s->ix, e);
    s->nobjects++;
    s->object_bytes += a->size;
    s->c_creates++;
    *out = e;
    return 0;

fail:
    if (a->meta_size && mloc.ptr) {
        ss__salloc_free(s->salloc, &mloc);
        ss__small_check(s, mloc.seg);
    }
    if (small && dloc.ptr) {
        ss__salloc_free(s->salloc, &dloc);
        ss__small_check(s, dloc.seg);
    }
    if (fd_ro >= 0)
        close(fd_ro);
    if (seg.fd >= 0)
        ss__obj_seg_free(s, &seg, true);
    return rc;
}

/* Reclaim-and-retry loop around create_mem. */
static int create_fit(ss__store *s, const create_args *a, uint32_t *e, uint64_t *need)
{
    int rc;

    for (;;) {
        *need = 0;
        rc = create_mem(s, a, e, need);
        if (rc != -ENOSPC || a->size > s->capacity || !ss__reclaim(s, *need))
            return rc;
    }
}

static void args_of(const ss__msg_hdr *h, bool put, create_args *a)
{
    const char *body = (const char *)(h + 1);

    if (put) {
        const ss__req_put *r = (const void *)body;
        a->id = &r->id;
        a->size = r->size;
        a->meta_size = r->meta_size;
        a->node = r->node;
        a->meta = r + 1;
        a->data = (const char *)(r + 1) + r->meta_size;
    } else {
        const ss__req_create *r = (const void *)body;
        a->id = &r->id;
        a->size = r->size;
        a->meta_size = r->meta_size;
        a->node = r->node;
        a->meta = r + 1;
        a->data = NULL;
    }
}

int ss__obj_create_run(ss__store *s, ss__conn *c, const ss__msg_hdr *h, bool put,
                       uint64_t *need)
{
    create_args a;
    uint32_t e;
    int rc;

    args_of(h, put, &a);
    if (a.meta_size > SS_PROTO_MAX_META || (put && a.size > s->small_max)) {
        ss__conn_reply_status(s, c, h->type, h->req_id, -EINVAL);
        return 0;
    }
    rc = create_fit(s, &a, &e, need);
    if (rc == -ENOSPC && a.size <= s->capacity)
        return -ENOSPC;
    if (rc < 0) {
        ss__conn_reply_status(s, c, h->type, h->req_id, rc);
        return 0;
    }
    ss__obj_at(s, e)->uid = (uint32_t)c->uid;
    if (put) {
        publish(s, e);
        ss__conn_reply_status(s, c, h->type, h->req_id, 0);
        return 0;
    }

    ss__obj *o = ss__obj_at(s, e);
    ss__index_entry *en = ss__ent(s, e);
    ss__ref *r;
    if (ss__ref_take(s, c, e, &r) < 0) {
        ss__obj_free(s, e);
        ss__conn_reply_status(s, c, h->type, h->req_id, -ENOMEM);
        return 0;
    }
    struct {
        ss__msg_hdr h;
        ss__rep_create r;
    } m;
    memset(&m, 0, sizeof(m));
    ss__proto_hdr(&m.h, SS_MSG_CREATE, h->req_id, sizeof(m), 0, SS_MSGF_REPLY);
    m.r.data.seg_id = en->seg_id;
    m.r.data.size = a.size;
    if (SS_IX_KIND(en->info) == SS_SEG_OBJECT) {
        int fds[2] = { o->fd_ro, o->fd_rw };
        m.r.data.seg_size = o->seg_size;
        m.r.data.offset = 0;
        m.r.data.fd_index = 0;
        m.r.data.kind = SS_SEG_OBJECT;
        r->refs |= SS_REF_SENT;
        ss__conn_send(s, c, &m, sizeof(m), fds, 2);
    } else {
        const ss__seg *g = ss__salloc_segment(s->salloc, o->small_slot);
        m.r.data.seg_size = g ? g->size : 0;
        m.r.data.offset = (uint64_t)en->data_off64 * SS_OBJ_ALIGN;
        m.r.data.fd_index = SS_FD_NONE;
        m.r.data.kind = SS_SEG_SMALL;
        ss__conn_send(s, c, &m, sizeof(m), NULL, 0);
    }
    return 0;
}

static void publish(ss__store *s, uint32_t e)
{
    ss__obj *o = ss__obj_at(s, e);
    ss__index_entry *en = ss__ent(s, e);

    ss__ent_set_state(s, e, SS_IX_SEALED);
    s->nsealed++;
    s->c_seals++;
    if (o->refs == 0)
        ss__lru_push(s, e);
    ss_id id = en->id;
    ss__store_event(s, SS_EVENT_SEALED, &id, en->size);
    ss__wake_waiters(s, &id);
}

/* ---- SEAL / ABORT */

/* A seal succeeded: publish, drop the creator's reference on this object
 * if the SEAL asked (after publish, so a GET of the same client answered
 * by publish still finds the segment sent), then answer. */
static void sealed(ss__store *s, ss__conn *c, uint32_t e, uint32_t req_id, bool release)
{
    publish(s, e);
    if (release) {
        ss__ref *r = ss__ref_find(c, e);

        if (r) { /* the creator's: own_created found it, only an abort drops it */
            ref_drop(s, c, r, 1);
            s->c_releases++;
        }
    }
    ss__conn_reply_status(s, c, SS_MSG_SEAL, req_id, 0);
}

/* The CREATED object of client c with this id, or -ENOENT. Only its
 * creator holds a reference to a CREATED object (store_int.h). */
static int64_t own_created(ss__store *s, ss__conn *c, const ss_id *id)
{
    int64_t e = ss__index_find(&s->ix, id);

    if (e < 0 || ss__ent_state(s, (uint32_t)e) != SS_IX_CREATED ||
        !ss__ref_find(c, (uint32_t)e))
        return -ENOENT;
    return e;
}

/* Abort: drop the creator's ref and free. */
static void abort_obj(ss__store *s, ss__conn *c, uint32_t e)
{
    ss__ref *r = ss__ref_find(c, e);
    ss__obj *o = ss__obj_at(s, e);

    if (r) {
        uint32_t n = SS_REF_COUNT(r->refs);
        ref_del(c, r);
        o->refs -= n;
    }
    SS_ASSERT(o->refs == 0);
    o->refs = 0;
    s->c_aborts++;
    ss__obj_free(s, e);
}

void ss__sw_submit(ss__store *s, ss__sealjob *j)
{
    if (j->c)
        j->c->seal_busy = true;
    pthread_mutex_lock(&s->sw_lock);
    j->next = NULL;
    if (s->sw_todo_tail)
        s->sw_todo_tail->next = j;
    else
        s->sw_todo = j;
    s->sw_todo_tail = j;
    s->sw_inflight++;
    pthread_cond_signal(&s->sw_cond);
    pthread_mutex_unlock(&s->sw_lock);
}

void ss__obj_seal(ss__store *s, ss__conn *c, const ss__msg_hdr *h)
{
    const ss__req_seal *rq = (const void *)(h + 1);
    int64_t e = own_created(s, c, &rq->id);

    if (e < 0) {
        ss__conn_reply_status(s, c, SS_MSG_SEAL, h->req_id, -ENOENT);
        return;
    }
    ss__obj *o = ss__obj_at(s, (uint32_t)e);
    ss__index_entry *en = ss__ent(s, (uint32_t)e);
    if (o->flags & SS_OBJF_SEALING) {
        ss__conn_reply_status(s, c, SS_MSG_SEAL, h->req_id, -EBUSY);
        return;
    }
    if (SS_IX_KIND(en->info) == SS_SEG_SMALL) {
        if (rq->payload_size != en->size) {
            ss__conn_reply_status(s, c, SS_MSG_SEAL, h->req_id, -EINVAL);
            return;
        }
        const ss__seg *g = ss__salloc_segment(s->salloc, o->small_slot);
        ss__sloc at = { .seg = o->small_slot, .off = (uint64_t)en->data_off64 * SS_OBJ_ALIGN };
        int rc = en->size ? ss__salloc_write_open(s->salloc, &at, en->size, false) : 0;
        if (rc < 0) { /* still created: the creator may retry or abort */
            ss__conn_reply_status(s, c, SS_MSG_SEAL, h->req_id, rc);
            return;
        }
        if (en->size)
            memcpy((char *)g->map + at.off, rq + 1, en->size);
        sealed(s, c, (uint32_t)e, h->req_id, rq->flags & SS_SEALF_RELEASE);
        return;
    }
    if (rq->payload_size != 0) {
        ss__conn_reply_status(s, c, SS_MSG_SEAL, h->req_id, -EINVAL);
        return;
    }
    ss__sealjob *j = calloc(1, sizeof(*j));
    if (!j) {
        ss__conn_reply_status(s, c, SS_MSG_SEAL, h->req_id, -ENOMEM);
        return;
    }
    j->c = c;
    j->req_id = h->req_id;
    j->e = (uint32_t)e;
    j->generation = en->generation;
    j->fd = o->fd_rw;
    j->size = o->seg_size;
    j->release = rq->flags & SS_SEALF_RELEASE;
    o->flags |= SS_OBJF_SEALING;
    if (!c->seal_busy) {
        ss__sw_submit(s, j);
    } else {
        if (c->seal_tail)
            c->seal_tail->next = j;
        else
            c->seal_queue = j;
        c->seal_tail = j;
    }
}

void ss__obj_seal_done(ss__store *s)
{
    ss__sealjob *done;

    pthread_mutex_lock(&s->sw_lock);
    done = s->sw_done;
    s->sw_done = NULL;
    pthread_mutex_unlock(&s->sw_lock);

    /* the list is LIFO: reverse to answer in completion order */
    ss__sealjob *rev = NULL;
    while (done) {
        ss__sealjob *nx = done->next;
        done->next = rev;
        rev = done;
        done = nx;
    }
    for (ss__sealjob *j = rev, *nx; j; j = nx) {
        nx = j->next;
        ss__conn *c = j->c;
        if (!c) {
            ss__restore_sealed(s, j); /* a restored segment */
            free(j);
            continue;
        }
        ss__obj *o = ss__obj_at(s, j->e);
        o->flags &= (uint8_t)~SS_OBJF_SEALING;
        c->seal_busy = false;
        if (o->flags & SS_OBJF_ORPHAN) {
            o->flags &= (uint8_t)~SS_OBJF_ORPHAN;
            s->c_aborts++;
            ss__obj_free(s, j->e); /* its creator is gone: nobody else holds it */
        } else if (j->rc == 0) {
            close(o->fd_rw);
            o->fd_rw = -1;
            sealed(s, c, j->e, j->req_id, j->release);
            ss__pool_writer_done(s->pool); /* after the reply: refills wait */
        } else if (j->rc == -EBUSY) {
            ss__conn_reply_status(s, c, SS_MSG_SEAL, j->req_id, -EBUSY);
        } else {
            /* -EPERM: seals tampered with; anything else (fallocate ENOSPC
             * on an exhausted hugetlb pool): never publish what we could
             * not verify or account */
            ss__log_info("store: seal failed (%s): object aborted", ss_strerror(j->rc));
            abort_obj(s, c, j->e);
            ss__conn_reply_status(s, c, SS_MSG_SEAL, j->req_id, j->rc);
        }
        free(j);
        if (c->dead) {
            ss__conn_free_dead(s, c);
        } else if (c->seal_queue) {
            ss__sealjob *q = c->seal_queue;
            c->seal_queue = q->next;
            if (!c->seal_queue)
                c->seal_tail = NULL;
            ss__sw_submit(s, q);
        }
    }
}

void ss__obj_abort(ss__store *s, ss__conn *c, const ss__msg_hdr *h)
{
    const ss__req_id *rq = (const void *)(h + 1);
    int64_t e = own_created(s, c, &rq->id);

    if (e < 0) {
        ss__conn_reply_status(s, c, SS_MSG_ABORT, h->req_id, -ENOENT);
        return;
    }
    if (ss__obj_at(s, (uint32_t)e)->flags & SS_OBJF_SEALING) {
        ss__conn_reply_status(s, c, SS_MSG_ABORT, h->req_id, -EBUSY);
        return;
    }
    abort_obj(s, c, (uint32_t)e);
    ss__conn_reply_status(s, c, SS_MSG_ABORT, h->req_id, 0);
}

/* ---- RELEASE, CONTAINS, DELETE */

/* Which object a RELEASE of `id` by c means: the one c has held longest
 * among the sealed (live or deleted) objects with that id (the library
 * drops its oldest sealed hold: the same one). NULL if c holds none. */
static ss__ref *held_ref(ss__store *s, ss__conn *c, const ss_id *id)
{
    int64_t e = ss__index_find(&s->ix, id);
    ss__ref *best = NULL, *r;

    if (e >= 0 && ss__ent_state(s, (uint32_t)e) == SS_IX_SEALED)
        best = ss__ref_find(c, (uint32_t)e);
    for (uint32_t x = s->det_buckets[det_bucket(s, id)]; x; x = ss__obj_at(s, x - 1)->next) {
        if (memcmp(&ss__ent(s, x - 1)->id, id, sizeof(*id)) || !(r = ss__ref_find(c, x - 1)))
            continue;
        if (!best || (int32_t)(r->seq - best->seq) < 0)
            best = r;
    }
    return best;
}

void ss__obj_release(ss__store *s, ss__conn *c, const ss__msg_hdr *h)
{
    const ss__req_release *rq = (const void *)(h + 1);
    const ss_id *ids = (const void *)(rq + 1);

    for (uint32_t i = 0; i < rq->n && i < SS_PROTO_MAX_IDS; i++) {
        ss__ref *r = held_ref(s, c, &ids[i]);
        if (!r || ss__ent_state(s, r->key - 1) == SS_IX_CREATED) {
            /* the library checks this locally: a bad one is a hostile or
             * broken client, counted and ignored */
            s->c_proto_errors++;
            continue;
        }
        ref_drop(s, c, r, 1);
        s->c_releases++;
    }
    if (s->retry_creates && (s->cq_head || s->rq_head))
        ss__obj_retry_creates(s);
}

void ss__obj_delete(ss__store *s, ss__conn *c, const ss__msg_hdr *h)
{
    const ss__req_id *rq = (const void *)(h + 1);
    int64_t e = ss__index_find(&s->ix, &rq->id);
    ss__parked *pk = NULL;
    int rc = 0;

    if (e < 0)
        rc = -ENOENT;
    else if (ss__ent_state(s, (uint32_t)e) != SS_IX_SEALED &&
             ss__ent_state(s, (uint32_t)e) != SS_IX_SPILLED)
        rc = -EBUSY;
    else if (ss__spill_delete_waits(s, (uint32_t)e) &&
             !(pk = ss__parked_new(s, c, SS_PK_DELETE, h->req_id, UINT64_MAX)))
        rc = -ENOMEM;
    else {
        /* with a disk copy, or an older copy of the id on its way out:
         * answered once no record of it can come back (the protocol is
         * beside ss__spop) */
        if (pk)
            ss__spill_delete_durable(s, (uint32_t)e, pk);
        ss__obj_detach(s, (uint32_t)e, false);
        s->c_deletes++;
    }
    if (!pk)
        ss__conn_reply_status(s, c, SS_MSG_DELETE, h->req_id, rc);
    if (s->retry_creates && (s->cq_head || s->rq_head))
        ss__obj_retry_creates(s);
}

/* ================================================================ clients */

void ss__obj_conn_gone(ss__store *s, ss__conn *c)
{
    while (c->parked)
        ss__parked_free(s, c->parked);
    /* queued seals never reached the worker: their objects are aborted
     * with the rest below */
    for (ss__sealjob *j = c->seal_queue, *nx; j; j = nx) {
        nx = j->next;
        ss__obj_at(s, j->e)->flags &= (uint8_t)~SS_OBJF_SEALING;
        free(j);
    }
    c->seal_queue = c->seal_tail = NULL;

    for (uint32_t i = 0; i < c->ref_cap; i++) {
        ss__ref *r = &c->refs[i];
        if (!r->key)
            continue;
        uint32_t e = r->key - 1, n = SS_REF_COUNT(r->refs);
        ss__obj *o = ss__obj_at(s, e);
        r->key = 0;
        o->refs -= n;
        if (ss__ent_state(s, e) == SS_IX_CREATED) {
            if (o->flags & SS_OBJF_SEALING) {
                o->flags |= SS_OBJF_ORPHAN; /* freed when the worker is done */
            } else {
                o->refs = 0;
                s->c_aborts++;
                ss__obj_free(s, e);
            }
            continue;
        }
        if (o->refs == 0) {
            if (ss__ent_state(s, e) == SS_IX_DELETED)
                unref_deleted(s, e);
            else
                ss__obj_idle(s, e);
        }
    }
    free(c->refs);
    c->refs = NULL;
    c->ref_cap = c->ref_used = 0;
    free(c->sent_small);
    c->sent_small = NULL;
    c->sent_cap = 0;
    if ((s->cq_head || s->rq_head) && s->retry_creates)
        ss__obj_retry_creates(s);
}

/* ================================================================ setup */

int ss__obj_init(ss__store *s)
{
    int rc;

    s->free_head = s->lru_head = s->lru_tail = 0;
    s->next_seg_id = 1;
    s->objs = calloc(SS_INDEX_MAX_CHUNKS, sizeof(*s->objs));
    s->wait_nbuckets = WAIT_BUCKETS;
    s->wait_buckets = calloc(WAIT_BUCKETS, sizeof(*s->wait_buckets));
    s->det_nbuckets = DET_BUCKETS;
    s->det_buckets = calloc(DET_BUCKETS, sizeof(*s->det_buckets));
    if (!s->objs || !s->wait_buckets || !s->det_buckets)
        return -ENOMEM;
    rc = ss__index_init(&s->ix, s->store_id);
    if (rc < 0)
        return rc;
    return ss__sw_start(s);
}

/* Stop: every parked request is answered now (GETs with what is sealed,
 * creates with -ENOSPC... as if their time had come), spills and restores
 * in flight and pending seals finish. */
void ss__obj_stop(ss__store *s)
{
    while (s->heap_len || s->cq_head) {
        ss__parked *pk = s->heap_len ? s->heap[0] : s->cq_head;
        if (pk->type == SS_PK_GET) {
            ss__get_complete(s, pk);
        } else {
            ss__conn_reply_status(s, pk->c, ((const ss__msg_hdr *)pk->msg)->type, pk->req_id,
                                  -ENOSPC);
            ss__parked_free(s, pk);
        }
    }
    /* GETs without a deadline: walk the clients */
    for (ss__conn *c = s->conns; c; c = c->next)
        for (ss__parked *pk = c->parked, *nx; pk; pk = nx) {
            nx = pk->cnext;
            if (pk->type == SS_PK_GET)
                ss__get_complete(s, pk);
        }
    /* before the worker goes: a finished restore still needs its seal;
     * deletes made durable meanwhile are answered */
    ss__spill_drain(s);
    for (ss__conn *c = s->conns; c; c = c->next)
        while (c->parked) {
            /* a DELETE the disk did not finish in time */
            ss__conn_reply_status(s, c, SS_MSG_DELETE, c->parked->req_id, -ETIMEDOUT);
            ss__parked_free(s, c->parked);
        }
    if (s->sw_started) {
        ss__sw_join(s);
        /* queued seals of each client go through one by one, run here */
        for (;;) {
            ss__obj_seal_done(s);
            bool more = false;
            pthread_mutex_lock(&s->sw_lock);
            for (ss__sealjob *j = s->sw_todo, *nx; j; j = nx) {
                nx = j->next;
                j->rc = ss__seg_seal_write(j->fd, j->size);
                j->next = s->sw_done;
                s->sw_done = j;
                s->sw_inflight--;
                more = true;
            }
            s->sw_todo = s->sw_todo_tail = NULL;
            pthread_mutex_unlock(&s->sw_lock);
            if (!more)
                break;
        }
    }
}

void ss__obj_fini(ss__store *s)
{
    ss__sw_join(s);
    for (ss__sealjob *j = s->sw_todo, *nx; j; j = nx) {
        nx = j->next;
        free(j);
    }
    for (ss__sealjob *j = s->sw_done, *nx; j; j = nx) {
        nx = j->next;
        free(j);
    }
    s->sw_todo = s->sw_done = NULL;
    /* spills in flight end first (their memory is ours); spilled files
     * stay: the engine is closed before any object is freed, so freeing
     * forgets disk copies instead of deleting them */
    ss__spill_teardown(s);
    if (s->objs) {
        for (uint32_t e = 0; e < s->ix.high; e++) {
            ss__obj *o = ss__obj_at(s, e);
            if (!(o->flags & SS_OBJF_USED))
                continue;
            o->refs = 0;
            o->flags &= (uint8_t)~(SS_OBJF_SEALING | SS_OBJF_SPILLING | SS_OBJF_RESTORING);
            ss__obj_free(s, e);
        }
        for (uint32_t i = 0; i < SS_INDEX_MAX_CHUNKS; i++)
            free(s->objs[i]);
        free(s->objs);
        s->objs = NULL;
    }
    for (uint32_t i = 0; i < s->nsmalls; i++)
        if (s->smalls[i].ro_fd >= 0)
            close(s->smalls[i].ro_fd);
    free(s->smalls);
    s->smalls = NULL;
    s->nsmalls = 0;
    ss__index_fini(&s->ix);
    free(s->heap);
    s->heap = NULL;
    free(s->wait_buckets);
    s->wait_buckets = NULL;
    free(s->det_buckets);
    s->det_buckets = NULL;
    free(s->disk);
    s->disk = NULL;
    s->ndisk = s->disk_cap = s->disk_free = 0;
}
