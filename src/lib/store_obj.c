/* SPDX-License-Identifier: MIT */
/*
 * The object table: index entries and their private records (ss__obj),
 * the free list of entry numbers, the LRU, the deleted-by-id chains, the
 * small-segment records, per-client references, and the capacity charge.
 * Owns ss__store.tab (and the ss__conn fields marked "tab"); calls the
 * index (index.c), the memory layer (pool, small allocator, segments),
 * the parking layer (GETs waiting for a restore hear that the object went)
 * and the connection layer (DELETED events), and the handlers the disk
 * glue registered (ss__obj_register_disk): forget a disk copy, cancel a
 * restore waiting for memory, spill to free memory.
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
 * the client took first (ss__ref_held); the library drops its oldest hold,
 * the same one. A put's own reference is dropped by its SEAL
 * (SS_SEALF_RELEASE), which names the object exactly.
 *
 * Capacity counts bytes the kernel holds for the store: object segments
 * (page-rounded, charged by the pool on take), small segments (charged by
 * the allocator per segment) and the pool's ready segments. A create that
 * does not fit asks ss__obj_reclaim() for room: first the pool's ready memory;
 * then, with SEALSTORE_EVICT on, it drops unreferenced sealed objects,
 * least recently used first (the user asked for a cache that forgets:
 * eviction wins over spilling); otherwise, with spilling on, it spills
 * them (store_disk.c), which frees the same memory and keeps the object,
 * but only when the disk has it: the create parks meanwhile.
 *
 * Spilled objects. A spilled object keeps its entry (state SPILLED, no
 * memory, ss__obj.disk names its disk copy). Anything that frees an entry
 * first waits for a spill or restore of it in flight (SPILLING, RESTORING):
 * the engine and the seal worker hold its memory until they report back.
 */
#include "store_int.h"

#include <stdlib.h>
#include <string.h>

#include "sys.h"

#define DET_BUCKETS 1024u
#define EVICT_BATCH 64u

void ss__obj_register_disk(ss__store *s, const ss__obj_disk_hooks *h)
{
    s->tab.disk_h = *h;
}

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

void ss__obj_set_uid(ss__store *s, uint32_t e, uint32_t uid)
{
    ss__index_entry *en = ss__ent(s, e);

    ss__obj_at(s, e)->uid = uid;
    ss__index_write_begin(en);
    __atomic_store_n(ss__index_uid_at(&s->tab.ix, e), uid, __ATOMIC_RELAXED);
    ss__index_write_end(en);
}

int ss__obj_alloc(ss__store *s, uint32_t *out)
{
    uint32_t e;
    int rc;

    if (s->tab.free_head) {
        e = s->tab.free_head - 1;
        s->tab.free_head = ss__obj_at(s, e)->next;
    } else {
        e = s->tab.ix.high;
        rc = ss__index_reserve(&s->tab.ix, e);
        if (rc < 0)
            return rc;
        uint32_t ch = e / SS_INDEX_CHUNK_ENTRIES;
        if (!s->tab.objs[ch]) {
            /* calloc of this size is an mmap: pages appear as entries do */
            s->tab.objs[ch] = calloc(SS_INDEX_CHUNK_ENTRIES, sizeof(ss__obj));
            if (!s->tab.objs[ch]) {
                s->tab.ix.high = e; /* nothing was handed out */
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
        s->tab.lru_head = o->next;
    if (o->next)
        ss__obj_at(s, o->next - 1)->prev = o->prev;
    else
        s->tab.lru_tail = o->prev;
    o->prev = o->next = 0;
    o->flags &= (uint8_t)~SS_OBJF_ON_LRU;
}

/* Most recently used at the tail. */
void ss__lru_push(ss__store *s, uint32_t e)
{
    ss__obj *o = ss__obj_at(s, e);

    if (o->flags2 & SS_OBJF2_TRUSTED)
        return; /* its creator's area, not the store's to reclaim */
    SS_ASSERT(!(o->flags & SS_OBJF_ON_LRU));
    o->next = 0;
    o->prev = s->tab.lru_tail;
    if (s->tab.lru_tail)
        ss__obj_at(s, s->tab.lru_tail - 1)->next = e + 1;
    else
        s->tab.lru_head = e + 1;
    s->tab.lru_tail = e + 1;
    o->flags |= SS_OBJF_ON_LRU;
}

/* Lookups: a chained entry with this id that is SEALED (in memory), or
 * SEALED or SPILLED (stored: on disk is enough); -ENOENT otherwise. */
int64_t ss__obj_find_sealed(ss__store *s, const ss_id *id)
{
    int64_t e = ss__index_find(&s->tab.ix, id);

    if (e < 0 || ss__ent_state(s, (uint32_t)e) != SS_IX_SEALED)
        return -ENOENT;
    return e;
}

int64_t ss__obj_find_stored(ss__store *s, const ss_id *id)
{
    int64_t e = ss__index_find(&s->tab.ix, id);
    uint32_t st;

    if (e < 0)
        return -ENOENT;
    st = ss__ent_state(s, (uint32_t)e);
    return st == SS_IX_SEALED || st == SS_IX_SPILLED ? e : -ENOENT;
}

/* ---------------------------------------------------------- small segments */

/* The record of allocator segment `slot`, made current (a segment that was
 * destroyed and replaced in the same slot gets a new small number). */
ss__small *ss__small_rec(ss__store *s, uint32_t slot)
{
    const ss__seg *g = ss__salloc_segment(s->mem.salloc, slot);

    if (!g)
        return NULL;
    if (slot >= s->tab.nsmalls) {
        uint32_t had = s->tab.nsmalls;

        if (SS_ARRAY_RESERVE(s->tab.smalls, s->tab.nsmalls, (size_t)slot + 1, 16) < 0)
            return NULL;
        for (uint32_t i = had; i < s->tab.nsmalls; i++)
            s->tab.smalls[i].ro_fd = -1; /* no, seg: zeroed */
    }
    ss__small *sm = &s->tab.smalls[slot];
    if (sm->no == 0 || sm->seg != g) {
        if (sm->ro_fd >= 0)
            ss__sys_close(sm->ro_fd);
        if (++s->tab.next_small_no == 0)
            s->tab.next_small_no = 1;
        sm->no = s->tab.next_small_no;
        sm->ro_fd = -1;
        sm->seg = g;
    }
    return sm;
}

/* After a free: if the allocator destroyed the segment, forget it. */
void ss__small_check(ss__store *s, uint32_t slot)
{
    if (slot < s->tab.nsmalls && !ss__salloc_segment(s->mem.salloc, slot)) {
        ss__small *sm = &s->tab.smalls[slot];
        if (sm->ro_fd >= 0)
            ss__sys_close(sm->ro_fd);
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

    if (ss__salloc_free(s->mem.salloc, &loc) < 0)
        ss__log_error("store: small free of seg %u off %llu failed", slot,
                      (unsigned long long)loc.off);
    ss__small_check(s, slot);
}

/* ------------------------------------------------------------------ arenas */

/* The record of arena `id`, made current (a destroyed arena whose id was
 * reused gets a fresh record): NULL if no such arena or no memory. */
ss__arena_rec *ss__arena_rec_of(ss__store *s, uint32_t id)
{
    uint64_t serial = ss__arena_serial(s->mem.arenas, id);

    if (serial == 0)
        return NULL;
    /* new records are zeroed: serial 0, no record (ro_fd then means nothing) */
    if (SS_ARRAY_RESERVE(s->tab.arecs, s->tab.narecs, (size_t)id + 1, 16) < 0)
        return NULL;
    ss__arena_rec *ar = &s->tab.arecs[id];
    if (ar->serial != serial) {
        if (ar->serial != 0 && ar->ro_fd >= 0)
            ss__sys_close(ar->ro_fd);
        ar->ro_fd = -1;
        ar->serial = serial;
    }
    return ar;
}

ss__aloc ss__obj_aloc(const ss__store *s, uint32_t e)
{
    return (ss__aloc){ .arena = ss__obj_at(s, e)->small_slot,
                       .off = (uint64_t)ss__ent(s, e)->data_off64 * SS_OBJ_ALIGN };
}

unsigned char *ss__obj_data(const ss__store *s, uint32_t e)
{
    const ss__index_entry *en = ss__ent(s, e);
    uint32_t slot = ss__obj_at(s, e)->small_slot;
    const ss__seg *g = SS_IX_KIND(en->info) == SS_SEG_ARENA
                           ? ss__arena_segment(s->mem.arenas, slot)
                           : ss__salloc_segment(s->mem.salloc, slot);

    return g ? (unsigned char *)g->map + (uint64_t)en->data_off64 * SS_OBJ_ALIGN : NULL;
}

/* The readers' fd of arena `id` (opened once per arena), or -errno. */
int ss__arena_ro_fd(ss__store *s, uint32_t id)
{
    ss__arena_rec *ar = ss__arena_rec_of(s, id);

    if (!ar)
        return -ENOMEM;
    if (ar->ro_fd < 0) {
        const ss__seg *g = ss__arena_segment(s->mem.arenas, id);
        int fd = g ? ss__seg_reopen_ro(g->fd) : -SS_E_CORRUPT;

        if (fd < 0)
            return fd;
        ar->ro_fd = fd;
    }
    return ar->ro_fd;
}

/* After a free: if the allocator destroyed arena `id`, forget it; if it
 * is empty (kept idle), close its readers' fd until it is needed again
 * (nobody can be sent it for an object that does not exist). */
static void arena_check(ss__store *s, uint32_t id)
{
    if (id < s->tab.narecs && s->tab.arecs[id].serial != 0 &&
        (ss__arena_serial(s->mem.arenas, id) != s->tab.arecs[id].serial ||
         ss__arena_objects(s->mem.arenas, id) == 0)) {
        ss__arena_rec *ar = &s->tab.arecs[id];
        if (ar->ro_fd >= 0)
            ss__sys_close(ar->ro_fd);
        ar->ro_fd = -1;
        ar->serial = 0;
    }
}

int ss__arena_refs_reserve(ss__conn *c, uint32_t id)
{
    return SS_ARRAY_RESERVE(c->arena_refs, c->arena_cap, (size_t)id + 1, 16);
}

/* Forget reference record r of c (its count is 0): an ARENA object's
 * record that counted in c->arena_refs stops counting. */
void ss__ref_forget(ss__store *s, ss__conn *c, ss__ref *r)
{
    uint32_t e = r->key - 1;

    if ((r->refs & SS_REF_SENT) && SS_IX_KIND(ss__ent(s, e)->info) == SS_SEG_ARENA) {
        uint32_t id = ss__obj_at(s, e)->small_slot;

        SS_ASSERT(id < c->arena_cap && c->arena_refs[id] > 0);
        if (id < c->arena_cap && c->arena_refs[id] > 0)
            c->arena_refs[id]--;
    }
    ss__stage_forget(s, c, e); /* the creator's area is free for its next create */
    ss__ref_del(c, r);
}

/* ------------------------------------------------------------ staging */

/* An area's size for a create of `size` bytes: a power of two up to
 * 2 MiB, then whole 2 MiB (so areas are reused across nearby sizes, and
 * a hugetlb area wastes nothing). */
static uint64_t stage_area_size(uint64_t size)
{
    uint64_t a = 4096;

    if (size > 2 * SS_MiB)
        return SS_ALIGN_UP(size, 2 * SS_MiB);
    while (a < size)
        a <<= 1;
    return a;
}

int ss__stage_take(ss__store *s, ss__conn *c, uint64_t size, int node, bool hold)
{
    uint64_t asize = stage_area_size(size);
    int best = -1, rc;

    for (uint32_t i = 0; i < c->nstages; i++) {
        const ss__stage *g = &c->stages[i];
        /* an area that will hold the object for its life: on its node, and
         * at most twice the size it would get (a small object never keeps
         * a large area) */
        if (!g->busy && !g->held && g->seg.size >= size &&
            (!hold || (g->node == node && g->seg.size <= 2 * asize)) &&
            (best < 0 || g->seg.size < c->stages[best].seg.size))
            best = (int)i;
    }
    if (best >= 0)
        return best;
    if (c->nstages >= SS_STAGE_AREAS || c->stage_bytes + asize > s->mem.stage_quota ||
        s->tab.stage_bytes + asize > s->mem.stage_total ||
        atomic_load_explicit(&s->tab.resident, memory_order_relaxed) + asize > s->mem.capacity)
        return -ENOSPC;
    if ((rc = SS_ARRAY_RESERVE(c->stages, c->stage_cap, (size_t)c->nstages + 1, 4)) < 0)
        return rc;

    ss__stage *g = &c->stages[c->nstages];
    ss__seg_params sp = { .size = asize, .hugepages = s->mem.hugepages, .kind = SS_SEG_STAGE,
                          .numa = s->mem.numa, .node = node };
    memset(g, 0, sizeof(*g));
    g->ro_fd = -1;
    g->node = node;
    rc = ss__seg_create(&g->seg, &sp);
    if (rc < 0)
        return rc == -SS_E_NOBACKING ? -ENOSPC : rc;
    /* the client may write it, never resize it under anyone */
    if ((rc = ss__sys_add_seals(g->seg.fd, SS_SEALS_SIZE)) < 0 ||
        (rc = ss__obj_charge(s, (int64_t)g->seg.size)) < 0) {
        ss__seg_destroy(&g->seg);
        return rc == -ENOSPC ? -ENOSPC : rc;
    }
    /* shmem (4 KiB or THP): the store reads it through a read-only
     * mapping (a memcpy, 2-4x a pread's per-page lookups at 64 MiB); the
     * size seals keep every byte of it backed (a hole the client punches
     * reads as a fresh zeroed page, never SIGBUS). hugetlb: pread only,
     * since a hole there faults from a pool that may be empty. */
    if (g->seg.backing == SS_BACKING_4K || g->seg.backing == SS_BACKING_THP) {
        void *p = ss__sys_mmap(NULL, (size_t)g->seg.size, PROT_READ, MAP_SHARED, g->seg.fd, 0);
        g->seg.map = ss__is_err(p) ? NULL : p; /* without it: pread */
    }
    g->seg_id = SS_SEG_ID_STAGE | ++s->tab.next_stage_serial;
    c->stage_bytes += g->seg.size;
    s->tab.stage_bytes += g->seg.size;
    return (int)c->nstages++;
}

void ss__stage_bind(ss__store *s, ss__conn *c, uint32_t i, uint32_t e)
{
    ss__stage *g = &c->stages[i];

    SS_ASSERT(i < c->nstages && !g->busy);
    g->busy = true;
    g->e = e;
    g->generation = ss__ent(s, e)->generation;
    c->nstage_busy++;
}

ss__stage *ss__stage_of(const ss__store *s, ss__conn *c, uint32_t e)
{
    uint32_t gen = ss__ent(s, e)->generation;

    for (uint32_t i = 0; c->nstage_busy && i < c->nstages; i++)
        if (c->stages[i].busy && c->stages[i].e == e && c->stages[i].generation == gen)
            return &c->stages[i];
    return NULL;
}

void ss__stage_forget(ss__store *s, ss__conn *c, uint32_t e)
{
    ss__stage *g = ss__stage_of(s, c, e);

    if (g) {
        g->busy = false;
        c->nstage_busy--;
    }
}

void ss__stage_drop_all(ss__store *s, ss__conn *c)
{
    SS_ASSERT(c->nstage_held == 0); /* ss__trust_detach_all ran */
    for (uint32_t i = 0; i < c->nstages; i++) {
        ss__stage *g = &c->stages[i];
        uint64_t bytes = g->seg.size;

        if (g->ro_fd >= 0)
            ss__sys_close(g->ro_fd);
        if (!g->given) {
            ss__seg_destroy(&g->seg);
            (void)ss__obj_charge(s, -(int64_t)bytes);
            s->tab.stage_bytes -= bytes;
        } else {
            ss__seg_close(&g->seg); /* its memory lives on in its object's fd */
        }
    }
    free(c->stages);
    c->stages = NULL;
    c->nstages = c->stage_cap = c->nstage_busy = c->nstage_held = 0;
    if (c->stage_bytes)
        s->park.retry_creates = true; /* capacity came back */
    c->stage_bytes = 0;
}

/* ---------------------------------------------------- trusted producers */

int ss__trust_fd(ss__conn *c, uint32_t i)
{
    ss__stage *g = &c->stages[i];

    if (g->ro_fd < 0) {
        int fd = ss__seg_reopen_ro(g->seg.fd);
        if (fd < 0)
            return fd;
        g->ro_fd = fd;
    }
    return ss__sys_dup_cloexec(g->ro_fd);
}

void ss__trust_hold(ss__store *s, ss__conn *c, uint32_t i, uint32_t e)
{
    ss__stage *g = &c->stages[i];

    SS_ASSERT(i < c->nstages && !g->busy && !g->held);
    g->held = true;
    g->he = e;
    g->hgen = ss__ent(s, e)->generation;
    c->nstage_held++;
    ss__stage_bind(s, c, i, e);
}

/* The area of c holding e, or NULL. By entry alone: a held area's
 * object is live (its free releases the area first), and the entry's
 * generation may have moved on already while it is being freed. */
static ss__stage *trust_area(ss__conn *c, uint32_t e)
{
    for (uint32_t i = 0; c->nstage_held && i < c->nstages; i++)
        if (c->stages[i].held && c->stages[i].he == e)
            return &c->stages[i];
    return NULL;
}

int ss__trust_seal(ss__store *s, ss__conn *c, uint32_t e)
{
    ss__stage *g = trust_area(c, e);
    int rc;

    if (!g)
        return -SS_E_CORRUPT;
    if (!g->fsealed) {
        /* instant: unlike F_SEAL_WRITE it waits for no mapping or pin */
        if ((rc = ss__sys_add_seals(g->seg.fd, F_SEAL_FUTURE_WRITE | F_SEAL_SEAL)) < 0)
            return rc;
        g->fsealed = true;
    }
    if (!g->filled) {
        /* holes its creator punched (MADV_REMOVE) are allocated now, under
         * the store's accounting, never in a reader's fault (no SIGBUS from
         * an empty hugetlb pool); none can be punched once it is sealed */
        if ((rc = ss__seg_fill_holes(g->seg.fd, g->seg.size)) < 0)
            return rc;
        /* as an object segment: no reopen of a reader's fd opens it
         * writable (the seal refuses every write anyway) */
        (void)ss__sys_fchmod(g->seg.fd, 0400);
        g->filled = true;
    }
    return 0;
}

void ss__trust_release(ss__store *s, uint32_t e)
{
    const ss__obj *o = ss__obj_at(s, e);

    /* ids wrap after 2^32 connections: look on past a namesake */
    for (ss__conn *c = s->conn.conns; c; c = c->next) {
        if (c->id != o->small_slot)
            continue;
        ss__stage *g = trust_area(c, e);
        if (g) {
            g->held = false;
            c->nstage_held--;
            if (g->busy && g->e == e) { /* freed before its creator had a reference */
                g->busy = false;
                c->nstage_busy--;
            }
            return;
        }
    }
    ss__log_error("store: trusted object %u has no area of client %u", e, o->small_slot);
}

void ss__trust_detach_all(ss__store *s, ss__conn *c)
{
    for (uint32_t i = 0; c->nstage_held && i < c->nstages; i++) {
        ss__stage *g = &c->stages[i];
        if (!g->held)
            continue;
        ss__obj *o = ss__obj_at(s, g->he);
        /* the object's fd keeps the memory; its charge is the object's now */
        SS_ASSERT(o->flags2 & SS_OBJF2_TRUSTED);
        o->flags2 &= (uint8_t)~SS_OBJF2_TRUSTED;
        o->small_slot = 0;
        g->held = false;
        g->given = true;
        c->nstage_held--;
        c->stage_bytes -= g->seg.size;
        s->tab.stage_bytes -= g->seg.size;
        if (ss__ent_state(s, g->he) == SS_IX_SEALED && o->refs == 0 &&
            !(o->flags & (SS_OBJF_SPILLING | SS_OBJF_ON_LRU)))
            ss__lru_push(s, g->he);
    }
}

uint64_t ss__trust_bytes(const ss__store *s)
{
    uint64_t n = 0;

    for (const ss__conn *c = s->conn.conns; c; c = c->next)
        for (uint32_t i = 0; c->nstage_held && i < c->nstages; i++)
            n += c->stages[i].held ? c->stages[i].seg.size : 0;
    return n;
}

/* ------------------------------------------------------------ free/detach */

void ss__obj_seg_free(ss__store *s, ss__seg *seg, bool writing)
{
    uint64_t bytes = seg->size;

    if (writing)
        ss__pool_writer_done(s->mem.pool);
    ss__seg_destroy(seg);
    ss__obj_charge(s, -(int64_t)bytes);
}

void ss__obj_drop_mem(ss__store *s, uint32_t e)
{
    ss__obj *o = ss__obj_at(s, e);
    ss__index_entry *en = ss__ent(s, e);
    uint32_t info = en->info;

    if (o->flags & SS_OBJF_NOMEM)
        return; /* spilled: nothing in memory */
    if (o->flags2 & SS_OBJF2_TRUSTED) {
        ss__sys_close(o->fd_ro); /* the area stays its creator's */
        ss__trust_release(s, e);
        o->flags2 &= (uint8_t)~SS_OBJF2_TRUSTED;
    } else if (SS_IX_KIND(info) == SS_SEG_OBJECT) {
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
            ss__sys_close(o->fd_rw);
        ss__obj_seg_free(s, &seg, writing);
    } else if (SS_IX_KIND(info) == SS_SEG_ARENA) {
        ss__aloc loc = ss__obj_aloc(s, e);

        if (ss__arena_free(s->mem.arenas, &loc) < 0)
            ss__log_error("store: arena free of arena %u off %llu failed", loc.arena,
                          (unsigned long long)loc.off);
        arena_check(s, loc.arena);
    } else {
        ss__small_free(s, o->small_slot, en->data_off64, en->size);
    }
    if (en->meta_seg)
        ss__small_free(s, o->meta_slot, en->meta_off64, SS_IX_META_SIZE(info));
    o->fd_ro = o->fd_rw = -1;
    o->seg_size = 0;
    o->small_slot = o->meta_slot = 0;
    o->flags |= SS_OBJF_NOMEM;
    s->park.retry_creates = true;
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
              !(o->flags & (SS_OBJF_SEALING | SS_OBJF_SPILLING | SS_OBJF_RESTORING)) &&
              !(o->flags2 & (SS_OBJF2_COPYING | SS_OBJF2_STAGING)));
    ss__lru_remove(s, e);
    if (st == SS_IX_CREATED || st == SS_IX_SEALED || st == SS_IX_SPILLED) {
        ss__index_unlink(&s->tab.ix, e);
        s->tab.nobjects--;
        s->tab.object_bytes -= en->size;
    } else if (st == SS_IX_DELETED) {
        det_remove(s, e);
    }
    if (st == SS_IX_SEALED || st == SS_IX_SPILLED)
        s->tab.nsealed--;
    if (st == SS_IX_SPILLED) {
        s->disk.nspilled--;
        s->disk.spilled_bytes -= en->size;
    }
    if (o->disk)
        s->tab.disk_h.forget(s, e);

    ss__obj_drop_mem(s, e);

    ss__index_write_begin(en);
    __atomic_store_n(&en->info, SS_IX_INFO(SS_IX_FREE, 0, 0, 0), __ATOMIC_RELAXED);
    __atomic_store_n(&en->generation, en->generation + 1, __ATOMIC_RELAXED);
    __atomic_store_n(&en->meta_seg, 0, __ATOMIC_RELAXED);
    ss__index_write_end(en);

    memset(o, 0, sizeof(*o));
    o->fd_ro = o->fd_rw = -1;
    o->next = s->tab.free_head;
    s->tab.free_head = e + 1;
    s->park.retry_creates = true;
}

/* ------------------------------------------------- deleted but referenced */

/* Deleted objects still referenced, by id, so a RELEASE naming the id can
 * find them (the live hash no longer has them). Chained through the
 * object's prev/next, which the LRU does not use for these. Rare. The
 * bucket of an id: ss__obj_det_bucket (store_int.h). */
static void det_add(ss__store *s, uint32_t e)
{
    ss__obj *o = ss__obj_at(s, e);
    uint32_t b = ss__obj_det_bucket(s, &ss__ent(s, e)->id);

    o->prev = 0;
    o->next = s->tab.det_buckets[b];
    if (o->next)
        ss__obj_at(s, o->next - 1)->prev = e + 1;
    s->tab.det_buckets[b] = e + 1;
}

static void det_remove(ss__store *s, uint32_t e)
{
    ss__obj *o = ss__obj_at(s, e);

    if (o->prev)
        ss__obj_at(s, o->prev - 1)->next = o->next;
    else
        s->tab.det_buckets[ss__obj_det_bucket(s, &ss__ent(s, e)->id)] = o->next;
    if (o->next)
        ss__obj_at(s, o->next - 1)->prev = o->prev;
    o->prev = o->next = 0;
}

/* DELETE / eviction / loss of a sealed (or spilled) object: unchain now,
 * free at refs 0 once no spill or restore of it is in flight and no pin
 * names it. A sealed object goes through DELETED even when nothing
 * references it: a client may have pinned it from the index, and the
 * pin check needs the entry to have stopped saying SEALED (pins, store_int.h). */
void ss__obj_detach(ss__store *s, uint32_t e, bool evicted)
{
    ss__obj *o = ss__obj_at(s, e);
    ss__index_entry *en = ss__ent(s, e);
    ss_id id = en->id;
    uint64_t size = en->size;
    bool spilled = ss__ent_state(s, e) == SS_IX_SPILLED;
    bool busy = (o->flags & (SS_OBJF_SPILLING | SS_OBJF_RESTORING)) != 0;

    if (o->flags & SS_OBJF_RESTORING)
        s->tab.disk_h.cancel_restore(s, e); /* only one still waiting for memory stops */
    if (o->refs == 0 && !busy && (spilled || !s->tab.npin_areas)) {
        ss__obj_free(s, e);
    } else {
        /* its disk copy goes now, not when the last reference does: a
         * crash meanwhile must not bring a deleted object back */
        if (o->disk)
            s->tab.disk_h.forget(s, e);
        ss__lru_remove(s, e);
        ss__index_unlink(&s->tab.ix, e);
        ss__ent_set_state(s, e, SS_IX_DELETED);
        det_add(s, e);
        s->tab.nobjects--;
        s->tab.nsealed--;
        s->tab.object_bytes -= size;
        if (spilled) {
            s->disk.nspilled--;
            s->disk.spilled_bytes -= size;
        }
        if (o->refs == 0 && !busy)
            ss__obj_unref_deleted(s, e); /* freed now unless a pin names it */
    }
    /* GETs waiting for its restore now wait for the id like any other */
    if (spilled)
        ss__park_restore_done(s, &id, 0);
    if (evicted)
        s->cnt.c_evictions++;
    ss__conn_event(s, SS_EVENT_DELETED, &id, size);
}

/* ============================================================== capacity */

int ss__obj_charge(void *arg, int64_t delta)
{
    ss__store *s = arg;

    if (delta <= 0) {
        atomic_fetch_sub_explicit(&s->tab.resident, (uint64_t)-delta, memory_order_relaxed);
        return 0;
    }
    uint64_t cur = atomic_load_explicit(&s->tab.resident, memory_order_relaxed);
    do {
        if (cur + (uint64_t)delta > s->mem.capacity || cur + (uint64_t)delta < cur)
            return -ENOSPC;
    } while (!atomic_compare_exchange_weak_explicit(&s->tab.resident, &cur, cur + (uint64_t)delta,
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
bool ss__obj_reclaim(ss__store *s, uint64_t need)
{
    uint64_t before = atomic_load(&s->tab.resident);
    bool progress = false;

    if (s->mem.pool && ss__pool_trim(s->mem.pool, need) > 0)
        progress = true;
    if (s->mem.arenas && ss__arena_trim(s->mem.arenas) > 0)
        progress = true;
    if (!s->mem.evict) {
        if (s->tab.disk_h.spill(s, need + s->park.parked_need, true))
            progress = true;
        return progress;
    }
    /* a batch at a time: freeing small objects frees slots, not always
     * whole segments, so the caller retries after each batch */
    for (uint32_t r = 0; r < EVICT_BATCH && s->tab.lru_head; r++) {
        uint64_t now = atomic_load(&s->tab.resident);
        if (before > now && before - now >= need)
            break;
        uint32_t e = s->tab.lru_head - 1;
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
void ss__ref_del(ss__conn *c, ss__ref *r)
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
 * restore of it is in flight (its completion frees it) or a client's pin
 * names it (a rescan frees it). */
void ss__obj_unref_deleted(ss__store *s, uint32_t e)
{
    ss__obj *o = ss__obj_at(s, e);

    if (o->flags & (SS_OBJF_SPILLING | SS_OBJF_RESTORING))
        return;
    if (s->tab.npin_areas && ss__pin_held(s, e)) {
        /* Room: after a rescan every waiting object is pinned by a slot
         * of its own, and pinwait_cap covers every area's slots. */
        if (s->tab.npinwait >= s->tab.pinwait_cap)
            ss__pin_rescan(s);
        if (s->tab.npinwait < s->tab.pinwait_cap) {
            o->flags2 |= SS_OBJF2_PINWAIT;
            s->tab.pinwait[s->tab.npinwait++] =
                (ss__pinwait){ e, ss__ent(s, e)->generation };
            return;
        }
        /* cannot happen (see above): keep it rather than free it */
        ss__log_error("store: no room to remember a pinned object");
        return;
    }
    ss__obj_free(s, e);
}

/* ================================================================= pins */

/* Slots naming entry e as it is now: all of them (max UINT32_MAX), or
 * whether there is one (max 1). */
static uint32_t pin_scan(ss__store *s, uint32_t e, uint32_t max)
{
    uint64_t key = SS_PIN_KEY(e, ss__ent(s, e)->generation);
    uint32_t n = 0;

    if (!s->tab.npin_areas)
        return 0;
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    for (ss__conn *c = s->conn.conns; c && n < max; c = c->next) {
        const ss__pin_hdr *h = c->pin_map;
        const uint64_t *slot;
        uint32_t hw;

        if (!h)
            continue;
        slot = (const uint64_t *)(h + 1);
        hw = __atomic_load_n(&h->hw, __ATOMIC_RELAXED);
        if (hw > SS_PIN_SLOTS)
            hw = SS_PIN_SLOTS;
        for (uint32_t i = 0; i < hw && n < max; i++)
            n += __atomic_load_n(&slot[i], __ATOMIC_RELAXED) == key;
    }
    return n;
}

bool ss__pin_held(ss__store *s, uint32_t e)
{
    SS_ASSERT(ss__ent_state(s, e) != SS_IX_SEALED);
    return pin_scan(s, e, 1) > 0;
}

uint32_t ss__pin_count(ss__store *s, uint32_t e)
{
    return pin_scan(s, e, UINT32_MAX);
}

void ss__pin_rescan(ss__store *s)
{
    uint32_t k = 0, n = s->tab.npinwait;

    s->tab.npinwait = 0; /* frees below never see a half-filtered list */
    for (uint32_t i = 0; i < n; i++) {
        ss__pinwait w = s->tab.pinwait[i];
        ss__obj *o = ss__obj_at(s, w.e);

        if (!(o->flags2 & SS_OBJF2_PINWAIT) || ss__ent(s, w.e)->generation != w.generation)
            continue;
        if (ss__pin_held(s, w.e)) {
            s->tab.pinwait[k++] = w;
            continue;
        }
        o->flags2 &= (uint8_t)~SS_OBJF2_PINWAIT;
        ss__obj_free(s, w.e);
    }
    /* nothing was added meanwhile: frees do not pin */
    SS_ASSERT(s->tab.npinwait == 0);
    s->tab.npinwait = k;
}

int ss__pin_area_make(ss__store *s, ss__conn *c, int *fdp)
{
    ss__pin_hdr *h;
    void *map;
    int fd, rc;

    if (c->pin_map)
        return -EBUSY;
    if ((rc = SS_ARRAY_RESERVE(s->tab.pinwait, s->tab.pinwait_cap,
                               ((size_t)s->tab.npin_areas + 1) * SS_PIN_SLOTS, 64)) < 0)
        return rc;
    fd = ss__memfd_create("sealstore-pins", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    if (fd < 0)
        return fd;
    if ((rc = ss__sys_ftruncate(fd, SS_PIN_AREA_BYTES)) < 0)
        goto fail;
    map = ss__sys_mmap(NULL, SS_PIN_AREA_BYTES, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (ss__is_err(map)) {
        rc = (int)ss__ptr_err(map);
        goto fail;
    }
    h = map;
    h->nslots = SS_PIN_SLOTS;
    h->store_id = s->bind.store_id;
    h->magic = SS_PIN_MAGIC;
    /* the client writes it; nobody may resize it under the store (a
     * hole punched in it reads as zeros: no pin) */
    rc = ss__sys_add_seals(fd, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL);
    if (rc >= 0)
        rc = ss__sys_mprotect(map, SS_PIN_AREA_BYTES, PROT_READ);
    if (rc < 0) {
        ss__sys_munmap(map, SS_PIN_AREA_BYTES);
        goto fail;
    }
    c->pin_map = map;
    s->tab.npin_areas++;
    *fdp = fd;
    return 0;
fail:
    ss__sys_close(fd);
    return rc;
}

/* c goes: its pins with it. */
static void pin_area_drop(ss__store *s, ss__conn *c)
{
    if (!c->pin_map)
        return;
    ss__sys_munmap((void *)c->pin_map, SS_PIN_AREA_BYTES);
    c->pin_map = NULL;
    s->tab.npin_areas--;
    if (s->tab.npinwait)
        ss__pin_rescan(s);
}

/* Drop `n` references of c on e (the record r); frees or LRU-queues. */
void ss__ref_drop(ss__store *s, ss__conn *c, ss__ref *r, uint32_t n)
{
    uint32_t e = r->key - 1;
    ss__obj *o = ss__obj_at(s, e);

    SS_ASSERT(SS_REF_COUNT(r->refs) >= n && o->refs >= n);
    r->refs -= n;
    if (SS_REF_COUNT(r->refs) == 0)
        ss__ref_forget(s, c, r); /* forgets "sent": the client unmaps at 0 refs */
    o->refs -= n;
    if (o->refs)
        return;
    uint32_t st = ss__ent_state(s, e);
    if (st == SS_IX_DELETED)
        ss__obj_unref_deleted(s, e);
    else if (st == SS_IX_SEALED)
        ss__obj_idle(s, e);
}

/* Which object a RELEASE of `id` by c means: the one c has held longest
 * among the sealed (live or deleted) objects with that id (the library
 * drops its oldest sealed hold: the same one). NULL if c holds none. */
ss__ref *ss__ref_held(ss__store *s, ss__conn *c, const ss_id *id)
{
    int64_t e = ss__index_find(&s->tab.ix, id);
    ss__ref *best = NULL, *r;

    if (e >= 0 && ss__ent_state(s, (uint32_t)e) == SS_IX_SEALED)
        best = ss__ref_find(c, (uint32_t)e);
    for (uint32_t x = s->tab.det_buckets[ss__obj_det_bucket(s, id)]; x; x = ss__obj_at(s, x - 1)->next) {
        if (memcmp(&ss__ent(s, x - 1)->id, id, sizeof(*id)) || !(r = ss__ref_find(c, x - 1)))
            continue;
        if (!best || (int32_t)(r->seq - best->seq) < 0)
            best = r;
    }
    return best;
}

/* A connection goes away: its references go (its unsealed objects are
 * aborted, or orphaned while the worker seals them), its record of small
 * segments sent too. */
void ss__ref_drop_all(ss__store *s, ss__conn *c)
{
    /* first: the objects its areas hold outlive it (its open ones are
     * freed below as objects of their own) */
    ss__trust_detach_all(s, c);
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
            } else if (o->flags2 & SS_OBJF2_STAGING) {
                o->refs = 0; /* freed when its copy ends (c->dead) */
            } else {
                o->refs = 0;
                s->cnt.c_aborts++;
                ss__obj_free(s, e);
            }
            continue;
        }
        if (o->refs == 0) {
            if (ss__ent_state(s, e) == SS_IX_DELETED)
                ss__obj_unref_deleted(s, e);
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
    free(c->arena_refs);
    c->arena_refs = NULL;
    c->arena_cap = 0;
    if (!c->copies) /* else a worker still reads an area: the last copy's end drops them */
        ss__stage_drop_all(s, c);
    pin_area_drop(s, c);
}

/* ================================================================ setup */

int ss__obj_init(ss__store *s)
{
    int rc;

    s->tab.free_head = s->tab.lru_head = s->tab.lru_tail = 0;
    s->tab.next_seg_id = 1;
    s->tab.objs = calloc(SS_INDEX_MAX_CHUNKS, sizeof(*s->tab.objs));
    s->tab.det_nbuckets = DET_BUCKETS;
    s->tab.det_buckets = calloc(DET_BUCKETS, sizeof(*s->tab.det_buckets));
    if (!s->tab.objs || !s->tab.det_buckets)
        return -ENOMEM;
    rc = ss__index_init(&s->tab.ix, s->bind.store_id);
    if (rc < 0)
        return rc;
    return 0;
}

/* Free every object (the disk glue was torn down first: disk copies are
 * forgotten, not deleted) and the table. */
void ss__obj_fini(ss__store *s)
{
    if (s->tab.objs) {
        for (uint32_t e = 0; e < s->tab.ix.high; e++) {
            ss__obj *o = ss__obj_at(s, e);
            if (!(o->flags & SS_OBJF_USED))
                continue;
            o->refs = 0;
            o->flags &= (uint8_t)~(SS_OBJF_SEALING | SS_OBJF_SPILLING | SS_OBJF_RESTORING);
            o->flags2 = 0;
            ss__obj_free(s, e);
        }
        for (uint32_t i = 0; i < SS_INDEX_MAX_CHUNKS; i++)
            free(s->tab.objs[i]);
        free(s->tab.objs);
        s->tab.objs = NULL;
    }
    for (uint32_t i = 0; i < s->tab.nsmalls; i++)
        if (s->tab.smalls[i].ro_fd >= 0)
            ss__sys_close(s->tab.smalls[i].ro_fd);
    free(s->tab.smalls);
    s->tab.smalls = NULL;
    s->tab.nsmalls = 0;
    for (uint32_t i = 0; i < s->tab.narecs; i++)
        if (s->tab.arecs[i].serial != 0 && s->tab.arecs[i].ro_fd >= 0)
            ss__sys_close(s->tab.arecs[i].ro_fd);
    free(s->tab.arecs);
    s->tab.arecs = NULL;
    s->tab.narecs = 0;
    ss__index_fini(&s->tab.ix);
    free(s->tab.pinwait);
    s->tab.pinwait = NULL;
    s->tab.npinwait = s->tab.pinwait_cap = 0;
    free(s->tab.det_buckets);
    s->tab.det_buckets = NULL;
}
