/* SPDX-License-Identifier: MIT */
/*
 * Spilling and restoring: the store's side of the spill
 * engine (spill.h), which does the disk I/O asynchronously; nothing here
 * waits for the disk except drain and teardown.
 *
 * Where. SEALSTORE_SPILL_DIR names a directory (empty: the per-user
 * default, $TMPDIR/sealstore-UID-spill or /var/tmp/sealstore-UID, created
 * 0700 and refused unless it is ours with no group/other access; "off": no
 * spilling). Each store spills into its own subdirectory of it,
 * "store-<16 hex>", the hex being XXH64 of the absolute socket path (its
 * directory resolved): the engine locks a directory for one engine, so two
 * stores sharing a spill directory never meet, and a store restarted on the
 * same socket finds its own objects again. Setup starts indexing what is
 * there (ss__spill_scan_start: a thread reads the files, the loop applies
 * what it finds while the store serves; store_req.c's scan gate holds the
 * requests that depend on it until it is over): each object becomes a
 * SPILLED entry (sealed, unreferenced, on disk only); of two copies of one
 * id the newer write wins. When the store closes with nothing left in its
 * subdirectory, the subdirectory goes too (no litter from short-lived
 * stores), and a starting store removes the empty subdirectories that
 * stores which died left behind (unlocked, no spill file in them);
 * spilled files always stay.
 *
 * Spilling. When a create (or a restore) does not fit, ss__obj_reclaim() asks
 * ss__disk_spill_more() to have enough memory on its way out for it and every
 * parked request: least recently used unreferenced sealed objects are
 * written (an object segment straight from a read-only mapping of it, a
 * small object from the store's own mapping of its small segment, both
 * left untouched until the completion), and their memory is freed only
 * when the engine reports them durable; the parked create is then retried.
 * An object a parked GET holds is skipped. An object that was restored
 * keeps its disk copy, so dropping its memory again needs no I/O. Above
 * SEALSTORE_SPILL_HIGH the same happens ahead of demand, down to 5% of
 * capacity below the mark. With SEALSTORE_EVICT on nothing is spilled:
 * the user asked for a cache that drops (objects spilled earlier are still
 * restored).
 *
 * Failures (disk full, EIO, unwritable directory): the object stays in
 * memory and on the LRU; no new spill starts for a second; creates that
 * cannot fit meanwhile fail with -ENOSPC at their timeout; one error line
 * per 10 s says what happens and how many failures it stands for.
 *
 * Restoring. A GET of a spilled object starts its restore (one per object
 * however many GETs wait): memory as a create gets it (pool segment or
 * small slot, reclaiming and waiting like a create), then the engine reads
 * into it. An object segment is read through a writable mapping the store
 * drops before the seal worker write-seals it (hugetlb has no write()); a
 * small object lands in its slot through the store's mapping. Then the
 * entry is SEALED again and its GETs are answered. A record found damaged
 * (-EBADMSG) or gone costs that object only: it is dropped (a DELETED
 * event, an error line naming it) and its GETs see it missing (-ENOENT).
 * Other errors fail the waiting GETs with that error; the object stays
 * spilled.
 *
 * Deleting. An object's disk copy goes when the object is deleted (not
 * when its last reference does), and a DELETE is answered only once that
 * is durable, and once no older copy of the same id that is on its way
 * out (evicted, lost, a duplicate the startup scan found, what a failed
 * spill may have left) can be found by a restart either, so a crash cannot
 * undo a delete that answered 0; a DELETE of an object with no copy on
 * disk and no such removal pending needs no I/O (the protocol is beside
 * ss__spop in store_int.h).
 */
#include "store_int.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/file.h>

#include "spill.h"
#include "sys.h"

#define REAP_BATCH 64
#define REAP_ROUNDS 4                        /* batches per wake-up: fairness */
#define SPILL_INFLIGHT_MAX 4096u             /* spills with the engine at once */
#define LRU_WALK_MAX 8192u                   /* skipped entries per call */
#define BACKOFF_NS (1000 * 1000000ull)       /* no new spill after a failure */
#define LOG_EVERY_NS (10 * 1000000000ull)    /* failure report interval */
#define DRAIN_MS 60000                       /* wait for the disk at stop */
#define OPEN_RETRY_MS 5000                   /* a store leaving our directory */
#define SMALL_NEED (4 * SS_MiB)              /* a small allocation may need a segment */
/* Under demand, spills in flight wanted at least: each file ends with an
 * fdatasync and a directory fsync (milliseconds here), so one object at a
 * time leaves the disk idle half the time (measured: 0.9 GB/s for 16 MiB
 * objects one by one, 2 GB/s with several in flight). Extra bytes started
 * for this are bounded by capacity / 8. */
#define DEMAND_INFLIGHT 4u

/* ============================================================ records */

static int op_new(ss__store *s, uint32_t *out)
{
    if (!s->disk.ops_free) {
        uint32_t n = s->disk.ops_cap / SS_SPOP_CHUNK;
        ss__spop **nc = realloc(s->disk.ops, (n + 1) * sizeof(*nc));
        if (!nc)
            return -ENOMEM;
        s->disk.ops = nc;
        nc[n] = calloc(SS_SPOP_CHUNK, sizeof(ss__spop));
        if (!nc[n])
            return -ENOMEM;
        for (uint32_t k = SS_SPOP_CHUNK; k-- > 0;) {
            nc[n][k].next = s->disk.ops_free;
            s->disk.ops_free = s->disk.ops_cap + k + 1;
        }
        s->disk.ops_cap += SS_SPOP_CHUNK;
    }
    uint32_t i = s->disk.ops_free - 1;
    ss__spop *op = ss__disk_op(s, i);
    s->disk.ops_free = op->next;
    memset(op, 0, sizeof(*op));
    op->fd_ro = -1;
    op->seg.fd = -1;
    s->disk.ops_busy++;
    *out = i;
    return 0;
}

static void op_put(ss__store *s, uint32_t i)
{
    ss__spop *op = ss__disk_op(s, i);

    op->kind = SS_SPOP_FREE;
    op->next = s->disk.ops_free;
    s->disk.ops_free = i + 1;
    s->disk.ops_busy--;
}

static void disk_set(ss__store *s, uint32_t i, const ss__spill_loc *l)
{
    s->disk.locs[i] = (ss__diskloc){ .file = l->file, .offset = l->offset, .size = l->size,
                                .seq = l->seq, .rec_len = l->rec_len,
                                .meta_size = l->meta_size, .data_off = l->data_off };
}

static int disk_add(ss__store *s, const ss__spill_loc *l, uint32_t *out)
{
    uint32_t i;

    if (s->disk.locs_free) {
        i = s->disk.locs_free - 1;
        s->disk.locs_free = (uint32_t)s->disk.locs[i].file;
    } else {
        if (SS_ARRAY_RESERVE(s->disk.locs, s->disk.locs_cap, (size_t)s->disk.nlocs + 1, 1024) < 0)
            return -ENOMEM;
        i = s->disk.nlocs++;
    }
    disk_set(s, i, l);
    *out = i;
    return 0;
}

static void disk_put(ss__store *s, uint32_t i)
{
    s->disk.locs[i].file = s->disk.locs_free;
    s->disk.locs_free = i + 1;
}

static void loc_of(const ss__store *s, uint32_t e, ss__spill_loc *l)
{
    const ss__diskloc *d = &s->disk.locs[ss__obj_at(s, e)->disk - 1];

    memset(l, 0, sizeof(*l));
    l->file = d->file;
    l->offset = d->offset;
    l->size = d->size;
    l->seq = d->seq;
    l->rec_len = d->rec_len;
    l->meta_size = d->meta_size;
    l->data_off = d->data_off;
    l->id = ss__ent(s, e)->id;
}

/* Memory an object's data and meta hold (what spilling it frees). */
static uint64_t mem_bytes(const ss__store *s, uint32_t e)
{
    const ss__obj *o = ss__obj_at(s, e);
    const ss__index_entry *en = ss__ent(s, e);
    uint64_t b = SS_IX_KIND(en->info) == SS_SEG_OBJECT  ? o->seg_size
                 : SS_IX_KIND(en->info) == SS_SEG_ARENA ? SS_ALIGN_UP(en->size, SS_ARENA_GRAIN)
                                                        : ss__salloc_class_size(ss__salloc_class_of(en->size));

    if (en->meta_seg)
        b += ss__salloc_class_size(ss__salloc_class_of(SS_IX_META_SIZE(en->info)));
    return b;
}

/* Rewrite e's entry as SPILLED (no segment) and count it. */
static void ent_spilled(ss__store *s, uint32_t e)
{
    ss__index_entry *en = ss__ent(s, e);
    uint32_t i = en->info;

    ss__index_write_begin(en);
    __atomic_store_n(&en->info,
                     SS_IX_INFO(SS_IX_SPILLED, SS_IX_KIND(i), 0, SS_IX_META_SIZE(i)),
                     __ATOMIC_RELAXED);
    __atomic_store_n(&en->seg_id, 0, __ATOMIC_RELAXED);
    __atomic_store_n(&en->data_off64, 0, __ATOMIC_RELAXED);
    __atomic_store_n(&en->meta_seg, 0, __ATOMIC_RELAXED);
    __atomic_store_n(&en->meta_off64, 0, __ATOMIC_RELAXED);
    ss__index_write_end(en);
    s->disk.nspilled++;
    s->disk.spilled_bytes += en->size;
}

/* A SEALED, unreferenced object with a durable disk copy: free its
 * memory, unless a client pinned it from the index (store_int.h, pins):
 * then it stays in memory, put back at the LRU's recent end. */
static bool to_disk(ss__store *s, uint32_t e)
{
    if (s->tab.npin_areas) {
        ss__ent_set_state(s, e, SS_IX_SPILLED); /* no new pin holds from here */
        if (ss__pin_held(s, e)) {
            ss__ent_set_state(s, e, SS_IX_SEALED);
            ss__lru_remove(s, e);
            ss__lru_push(s, e);
            return false;
        }
    }
    ss__lru_remove(s, e);
    ss__obj_drop_mem(s, e);
    ent_spilled(s, e);
    return true;
}

/* ============================================================= failures */

static void spill_failed(ss__store *s, int err)
{
    uint64_t now = ss__now_ns();

    s->cnt.c_spill_errors++;
    s->disk.spill_err = err;
    s->disk.spill_backoff_until = now + BACKOFF_NS;
    if (now < s->disk.spill_log_next) {
        s->disk.spill_log_quiet++;
        return;
    }
    ss__log_error("store: cannot spill to %s: %s; objects stay in memory, and creates that "
                  "do not fit fail with ENOSPC after SEALSTORE_CREATE_TIMEOUT (%llu more "
                  "failures since the last report; retrying in 1 s)",
                  s->disk.spill_dir, ss_strerror(err), (unsigned long long)s->disk.spill_log_quiet);
    s->disk.spill_log_next = now + LOG_EVERY_NS;
    s->disk.spill_log_quiet = 0;
}

/* =============================================================== spills */

static int spill_start(ss__store *s, uint32_t e)
{
    ss__obj *o = ss__obj_at(s, e);
    ss__index_entry *en = ss__ent(s, e);
    const void *data, *meta = NULL;
    void *map = NULL;
    uint64_t map_len = 0;
    uint32_t i;
    int rc;

    if (SS_IX_KIND(en->info) == SS_SEG_OBJECT) {
        /* the disk reads the sealed segment straight from this mapping
         * (O_DIRECT where the filesystem allows) */
        map_len = o->seg_size;
        map = ss__sys_mmap(NULL, map_len, PROT_READ, MAP_SHARED, o->fd_ro, 0);
        if (ss__is_err(map))
            return (int)ss__ptr_err(map);
        data = map;
    } else {
        /* small slots and arenas: the store's own (read-only) mapping,
         * which stays while the spill holds the object (SPILLING) */
        data = ss__obj_data(s, e);
        if (!data)
            return -SS_E_CORRUPT;
    }
    if (en->meta_seg) {
        const ss__seg *g = ss__salloc_segment(s->mem.salloc, o->meta_slot);
        if (!g) {
            rc = -SS_E_CORRUPT;
            goto fail;
        }
        meta = (const char *)g->map + (uint64_t)en->meta_off64 * SS_OBJ_ALIGN;
    }
    /* the record's slot now: a durable record must never go untracked
     * for want of memory at the completion */
    static const ss__spill_loc none;
    uint32_t di;
    if ((rc = disk_add(s, &none, &di)) < 0)
        goto fail;
    if ((rc = op_new(s, &i)) < 0) {
        disk_put(s, di);
        goto fail;
    }
    rc = ss__spill_write_flags(s->disk.sp, &en->id, o->uid,
                               (o->flags & SS_OBJF_BOUND) ? SS_SPILL_REC_BOUND : 0, data,
                               en->size, meta, SS_IX_META_SIZE(en->info), i);
    if (rc < 0) {
        op_put(s, i);
        disk_put(s, di);
        goto fail;
    }
    ss__spop *op = ss__disk_op(s, i);
    op->kind = SS_SPOP_SPILL;
    op->disk = di + 1;
    op->id = en->id;
    op->e = e;
    op->generation = en->generation;
    op->map = map;
    op->map_len = map_len;
    op->bytes = mem_bytes(s, e);
    s->disk.spill_pending += op->bytes;
    s->disk.nspilling++;
    s->disk.ops_engine++;
    ss__lru_remove(s, e);
    o->flags |= SS_OBJF_SPILLING;
    return 0;
fail:
    if (map)
        ss__sys_munmap(map, map_len);
    return rc;
}

bool ss__disk_spill_more(ss__store *s, uint64_t target, bool demand)
{
    uint64_t now = ss__now_ns(), got = 0;
    uint64_t extra = demand ? target + s->mem.capacity / 8 : target;
    bool io = now >= s->disk.spill_backoff_until, freed = false;
    uint32_t walked = 0;

    if (!s->disk.sp || s->mem.evict || s->disk.closing)
        return false;
    for (uint32_t x = s->tab.lru_head; x;) {
        uint64_t out = s->disk.spill_pending + got;
        if (out >= target && (!demand || s->disk.nspilling >= DEMAND_INFLIGHT || out >= extra))
            break;
        uint32_t e = x - 1;
        ss__obj *o = ss__obj_at(s, e);
        x = o->next;
        if (ss__park_id_held(s, &ss__ent(s, e)->id)) {
            if (++walked > LRU_WALK_MAX)
                break;
            continue;
        }
        if (o->disk) {
            /* restored earlier: its disk copy is still good */
            uint64_t b = mem_bytes(s, e);
            if (to_disk(s, e)) {
                got += b;
                freed = true;
            } else if (++walked > LRU_WALK_MAX) {
                break;
            }
            continue;
        }
        if (!io || s->disk.ops_engine >= SPILL_INFLIGHT_MAX) {
            /* only copies already on disk can go now */
            if (++walked > LRU_WALK_MAX)
                break;
            continue;
        }
        int rc = spill_start(s, e);
        if (rc < 0) {
            spill_failed(s, rc);
            io = false;
        }
    }
    return freed;
}

void ss__disk_turn(void *arg, uint64_t now)
{
    ss__store *s = arg;
    uint64_t used;

    (void)now;
    /* after a failure only copies already on disk could go: leave that to
     * creates that need it rather than walk the LRU every turn */
    if (!s->disk.sp || !s->disk.spill_ahead || s->mem.evict || ss__now_ns() < s->disk.spill_backoff_until)
        return;
    used = atomic_load_explicit(&s->tab.resident, memory_order_relaxed);
    if (used <= s->disk.spill_high)
        return;
    if (s->mem.pool) {
        /* ready segments are given back at once when needed: not "in use" */
        ss__pool_stats ps;
        ss__pool_stats_get(s->mem.pool, &ps);
        used = used > ps.ready_bytes ? used - ps.ready_bytes : 0;
        if (used <= s->disk.spill_high)
            return;
    }
    if (s->mem.arenas) {
        /* free space in arenas takes the next puts as they come: spilling
         * more would not make room for them (an arena goes back to the
         * kernel only once empty) */
        ss__arena_stats as;
        ss__arena_stats_get(s->mem.arenas, &as);
        uint64_t idle = as.arena_bytes - as.used_bytes;
        used = used > idle ? used - idle : 0;
        if (used <= s->disk.spill_high)
            return;
    }
    ss__disk_spill_more(s, used - s->disk.spill_low, false);
}

static void disk_delete(ss__store *s, const ss__spill_loc *loc, ss__parked *pk);
static void waiters_pass(ss__store *s, ss__parked *pk, int status, const ss_id *id);
static void restores_stuck(ss__store *s);

static void spill_done(ss__store *s, uint32_t i, const ss__spill_done *d)
{
    ss__spop *op = ss__disk_op(s, i);
    uint32_t e = op->e, di = op->disk - 1;
    ss__obj *o = ss__obj_at(s, e);
    uint32_t st = ss__ent_state(s, e);
    int status = d->status;
    ss__parked *pk = op->pk; /* DELETEs of it, waiting for this */
    ss_id id = op->id;

    SS_ASSERT(ss__ent(s, e)->generation == op->generation);
    if (op->map)
        ss__sys_munmap(op->map, op->map_len);
    s->disk.spill_pending -= op->bytes;
    s->disk.nspilling--;
    op_put(s, i);
    o->flags &= (uint8_t)~SS_OBJF_SPILLING;
    if (status == 0 && st != SS_IX_DELETED) {
        s->cnt.c_spills++;
        disk_set(s, di, &d->loc);
        o->disk = di + 1;
    } else {
        disk_put(s, di);
        if (status == 0)
            s->cnt.c_spills++;
        if (status == 0 || d->copy) {
            /* deleted while being written, or a failed spill's record that
             * may be on disk: it must not come back, and DELETEs of it
             * answer once that is durable */
            disk_delete(s, &d->loc, pk);
            pk = NULL;
        }
    }
    if (status < 0 && st != SS_IX_DELETED)
        spill_failed(s, status);
    /* the spill failed and left no record: other removals of the id? */
    waiters_pass(s, pk, 0, &id);
    if (s->disk.rq_head)
        restores_stuck(s); /* that was the last spill in flight, say */
    if (st == SS_IX_DELETED) {
        if (o->refs == 0)
            ss__obj_unref_deleted(s, e);
        return;
    }
    if (o->refs)
        return; /* someone got it meanwhile: it goes when released */
    if (!(o->disk && !s->disk.closing && !ss__park_id_held(s, &ss__ent(s, e)->id) &&
          to_disk(s, e)) && !(o->flags & SS_OBJF_ON_LRU))
        ss__lru_push(s, e);
}

/* ============================================================= restores */

/*
 * Restores that wait for memory nothing frees. Memory for a restore comes
 * from spills in flight (spill_pending) or from spills still to start;
 * after a spill failure none starts for BACKOFF_NS. With nothing in flight
 * during that pause a waiting restore is stuck: its GETs whose own timeout
 * passed (timeout 0 included) fail now with why (SS_E_FULL: memory and
 * spill space exhausted), not at the create timeout; the others fail so
 * when their own timeout passes (ss__req_timer_turn). Checked when a restore
 * starts waiting, when a spill completes and on every retry of waiting
 * restores (at least every 100 ms). The restore itself stays queued while
 * any GET still wants it.
 */
static int stuck_err(const ss__store *s)
{
    if (s->disk.spill_pending || ss__now_ns() >= s->disk.spill_backoff_until || !s->disk.spill_err)
        return 0;
    return s->disk.spill_err == -ENOSPC || s->disk.spill_err == -EDQUOT ? -SS_E_FULL : s->disk.spill_err;
}

static void stuck_fail(ss__store *s, uint32_t e, int err)
{
    ss_id id = ss__ent(s, e)->id;

    if (ss__park_restore_expired(s, &id, err))
        s->cnt.c_restore_errors++;
}

static void restores_stuck(ss__store *s)
{
    int err = stuck_err(s);

    for (uint32_t x = s->disk.rq_head; x && err; x = ss__disk_op(s, x - 1)->next)
        stuck_fail(s, ss__disk_op(s, x - 1)->e, err);
}

int ss__disk_restore_stuck(ss__store *s, const ss_id *id)
{
    int64_t e = ss__index_find(&s->tab.ix, id);
    int err = stuck_err(s);

    if (e < 0 || !err)
        return 0;
    for (uint32_t x = s->disk.rq_head; x; x = ss__disk_op(s, x - 1)->next)
        if (ss__disk_op(s, x - 1)->e == (uint32_t)e) {
            s->cnt.c_restore_errors++; /* for this GET */
            return err;
        }
    return 0;
}

static void restore_mem_free(ss__store *s, ss__spop *op)
{
    if (op->map) {
        ss__sys_munmap(op->map, op->map_len);
        op->map = NULL;
    }
    if (op->fd_ro >= 0) {
        ss__sys_close(op->fd_ro);
        op->fd_ro = -1;
    }
    if (op->seg.fd >= 0)
        ss__obj_seg_free(s, &op->seg, true); /* leaves seg.fd at -1 */
    if (op->small && op->dloc.ptr) {
        ss__salloc_free(s->mem.salloc, &op->dloc);
        ss__small_check(s, op->dloc.seg);
        op->dloc.ptr = NULL;
    }
    if (op->has_meta) {
        ss__salloc_free(s->mem.salloc, &op->mloc);
        ss__small_check(s, op->mloc.seg);
        op->has_meta = false;
    }
}

/* Memory for the object, as a create would get it: 0, -ENOSPC (*need
 * set), -E2BIG (never fits), other -errno. */
static int restore_mem(ss__store *s, ss__spop *op, uint64_t *need)
{
    ss__index_entry *en = ss__ent(s, op->e);
    uint64_t size = en->size;
    uint32_t msz = SS_IX_META_SIZE(en->info);
    int rc;

    op->small = size <= s->mem.small_max;
    *need = op->small ? SMALL_NEED : SS_ALIGN_UP(size, 4096ull);
    if (!op->small) {
        if (size > s->mem.capacity)
            return -E2BIG;
        rc = ss__pool_take_ro(s->mem.pool, size, op->node, &op->seg, &op->fd_ro);
        if (rc < 0) {
            op->seg.fd = -1;
            return rc;
        }
        if (op->fd_ro < 0) {
            rc = op->fd_ro;
            goto fail;
        }
        /* the store's one writable mapping of an object: dropped before
         * the write seal, kept out of any fork of an embedding host (the
         * fork guard covers the moment before MADV_DONTFORK) */
        op->map_len = op->seg.size;
        op->map = ss__sys_mmap_shared_rw(op->seg.fd, op->map_len);
        if (ss__is_err(op->map)) {
            rc = (int)ss__ptr_err(op->map);
            op->map = NULL;
            goto fail;
        }
    } else {
        rc = ss__salloc_alloc(s->mem.salloc, size, op->node, &op->dloc);
        if (rc < 0) {
            op->dloc.ptr = NULL;
            return rc;
        }
    }
    if (msz) {
        rc = ss__salloc_alloc(s->mem.salloc, msz, op->node, &op->mloc);
        if (rc < 0) {
            if (rc == -ENOSPC)
                *need = SMALL_NEED;
            goto fail;
        }
        op->has_meta = true;
    }
    return 0;
fail:
    restore_mem_free(s, op);
    return rc;
}

/* The restore's small-segment bytes (the object if small, its metadata)
 * land when its read completes, copied by the engine on this thread: hold
 * their write windows open until then (alloc.c, "Who writes what"). */
static int restore_windows(ss__store *s, ss__spop *op, bool open)
{
    uint64_t size = op->small ? ss__ent(s, op->e)->size : 0;
    uint32_t msz = op->has_meta ? SS_IX_META_SIZE(ss__ent(s, op->e)->info) : 0;
    int rc = 0;

    if (!open) {
        ss__salloc_write_release(s->mem.salloc, &op->dloc, size);
        ss__salloc_write_release(s->mem.salloc, &op->mloc, msz);
        return 0;
    }
    if (size && (rc = ss__salloc_write_open(s->mem.salloc, &op->dloc, size, true)) < 0)
        return rc;
    if (msz && (rc = ss__salloc_write_open(s->mem.salloc, &op->mloc, msz, true)) < 0)
        ss__salloc_write_release(s->mem.salloc, &op->dloc, size);
    return rc;
}

/* Get memory (reclaiming like a create) and start the read: 0, -ENOSPC
 * (waits for memory; op->bytes: what it lacks), other -errno. */
static int restore_try(ss__store *s, uint32_t i)
{
    ss__spill_loc loc;
    uint64_t need = 0;
    int rc;

    for (;;) {
        rc = restore_mem(s, ss__disk_op(s, i), &need);
        /* reclaiming may start spills: op pointers stay valid (chunks) */
        if (rc != -ENOSPC || !ss__obj_reclaim(s, need))
            break;
    }
    ss__spop *op = ss__disk_op(s, i);
    if (rc == -ENOSPC) {
        op->bytes = need;
        return rc;
    }
    if (rc < 0)
        return rc;
    loc_of(s, op->e, &loc);
    rc = restore_windows(s, op, true);
    if (rc < 0) {
        restore_mem_free(s, op);
        return rc;
    }
    rc = ss__spill_read(s->disk.sp, &loc, op->small ? op->dloc.ptr : op->map,
                        op->has_meta ? op->mloc.ptr : NULL, i);
    if (rc < 0) {
        restore_windows(s, op, false);
        restore_mem_free(s, op);
        return rc;
    }
    op->rstate = SS_RS_READ;
    s->disk.ops_engine++;
    return 0;
}

static void rq_push(ss__store *s, uint32_t i)
{
    ss__spop *op = ss__disk_op(s, i);

    op->rstate = SS_RS_WAITMEM;
    op->next = 0;
    if (s->disk.rq_tail)
        ss__disk_op(s, s->disk.rq_tail - 1)->next = i + 1;
    else
        s->disk.rq_head = i + 1;
    s->disk.rq_tail = i + 1;
    s->park.parked_need += op->bytes;
}

/* The restore ends without publishing: memory back, RESTORING off, then
 * the object's fate by err (see the top of the file). */
static void restore_end(ss__store *s, uint32_t i, int err)
{
    ss__spop *op = ss__disk_op(s, i);
    uint32_t e = op->e;
    ss__obj *o = ss__obj_at(s, e);
    ss_id id = ss__ent(s, e)->id;
    char hex[SS_ID_HEX_LEN];

    restore_mem_free(s, op);
    op_put(s, i);
    o->flags &= (uint8_t)~SS_OBJF_RESTORING;
    if (ss__ent_state(s, e) == SS_IX_DELETED) {
        if (o->refs == 0)
            ss__obj_unref_deleted(s, e);
        return;
    }
    if (err == 0 || s->disk.closing)
        return; /* nobody waits for it: it stays on disk */
    ss__id_hex(&id, hex);
    if (err == -EBADMSG || err == -ENOENT) {
        /* the record is damaged (or gone): this object is lost, nothing else */
        ss__log_error("store: spilled object %s is lost: its record in %s is %s; it is "
                      "dropped", hex, s->disk.spill_dir,
                      err == -EBADMSG ? "damaged (checksum or header mismatch)" : "missing");
        if (err == -ENOENT)
            s->cnt.c_lost++; /* the engine counts damaged records itself */
        ss__obj_detach(s, e, false); /* tells its GETs: missing */
        return;
    }
    s->cnt.c_restore_errors++;
    ss__log_error("store: cannot restore spilled object %s from %s: %s", hex, s->disk.spill_dir,
                  ss_strerror(err == -E2BIG ? -ENOSPC : err));
    ss__park_restore_done(s, &id, err == -E2BIG ? -ENOSPC : err);
}

int ss__disk_restore_start(ss__store *s, uint32_t e)
{
    ss__obj *o = ss__obj_at(s, e);
    uint32_t i;
    int rc;

    if (o->flags & SS_OBJF_RESTORING)
        return 0; /* one restore, however many wait */
    if (!s->disk.sp || !o->disk || s->disk.closing) {
        ss_id id = ss__ent(s, e)->id;
        ss__park_restore_done(s, &id, -EIO);
        return -EIO;
    }
    if ((rc = op_new(s, &i)) < 0) {
        ss_id id = ss__ent(s, e)->id;
        ss__park_restore_done(s, &id, rc);
        return rc;
    }
    ss__spop *op = ss__disk_op(s, i);
    op->kind = SS_SPOP_RESTORE;
    op->e = e;
    op->generation = ss__ent(s, e)->generation;
    op->node = SS_NODE_ANY;
    if (s->mem.numa) {
        int node = ss__numa_place(s->mem.numa, &s->mem.numa_policy, -1);
        op->node = (int16_t)(node < 0 ? SS_NODE_ANY : node);
    }
    o->flags |= SS_OBJF_RESTORING;
    rc = restore_try(s, i);
    if (rc == -ENOSPC) {
        rq_push(s, i);
        int err = stuck_err(s); /* a GET with timeout 0 answers now */
        if (err)
            stuck_fail(s, e, err);
        return 0;
    }
    if (rc < 0) {
        restore_end(s, i, rc);
        return rc;
    }
    return 0;
}

void ss__disk_restore_retry(ss__store *s)
{
    uint32_t x = s->disk.rq_head;

    s->disk.rq_head = s->disk.rq_tail = 0;
    while (x) {
        uint32_t i = x - 1;
        ss__spop *op = ss__disk_op(s, i);
        x = op->next;
        s->park.parked_need -= op->bytes;
        op->bytes = 0;
        if (ss__ent_state(s, op->e) == SS_IX_DELETED ||
            !ss__park_restore_wanted(s, &ss__ent(s, op->e)->id)) {
            restore_end(s, i, 0); /* deleted, or its GETs gave up */
            continue;
        }
        int rc = restore_try(s, i);
        if (rc == -ENOSPC)
            rq_push(s, i);
        else if (rc < 0)
            restore_end(s, i, rc);
    }
    restores_stuck(s);
}

void ss__disk_restore_cancel(ss__store *s, uint32_t e)
{
    uint32_t prev = 0;

    for (uint32_t x = s->disk.rq_head; x; prev = x, x = ss__disk_op(s, x - 1)->next) {
        ss__spop *op = ss__disk_op(s, x - 1);
        if (op->e != e)
            continue;
        if (prev)
            ss__disk_op(s, prev - 1)->next = op->next;
        else
            s->disk.rq_head = op->next;
        if (s->disk.rq_tail == x)
            s->disk.rq_tail = prev;
        s->park.parked_need -= op->bytes;
        op_put(s, x - 1);
        ss__obj_at(s, e)->flags &= (uint8_t)~SS_OBJF_RESTORING;
        return;
    }
    /* reading or sealing: its completion sees the entry DELETED */
}

/* The restored object goes live: SEALED in memory, its GETs answered. */
static void restore_publish(ss__store *s, uint32_t i)
{
    ss__spop *op = ss__disk_op(s, i);
    uint32_t e = op->e;
    ss__obj *o = ss__obj_at(s, e);
    ss__index_entry *en = ss__ent(s, e);
    uint32_t msz = SS_IX_META_SIZE(en->info);
    ss__small *dsm = op->small ? ss__small_rec(s, op->dloc.seg) : NULL;
    ss__small *msm = op->has_meta ? ss__small_rec(s, op->mloc.seg) : NULL;
    uint8_t backing = 0;

    if ((op->small && !dsm) || (op->has_meta && !msm)) {
        restore_end(s, i, -ENOMEM);
        return;
    }
    if (!op->small) {
        ss__sys_close(op->seg.fd); /* sealed: the store keeps the read-only fd */
        op->seg.fd = -1;
        ss__pool_writer_done(s->mem.pool); /* the disk is done writing into it */
        o->fd_ro = op->fd_ro;
        o->fd_rw = -1;
        o->seg_size = op->seg.size;
        o->node = op->seg.node;
        backing = op->seg.backing;
        op->fd_ro = -1;
    } else {
        o->small_slot = op->dloc.seg;
        o->node = op->node;
    }
    o->meta_slot = op->has_meta ? op->mloc.seg : 0;
    ss__index_write_begin(en);
    __atomic_store_n(&en->info,
                     SS_IX_INFO(SS_IX_SEALED, op->small ? SS_SEG_SMALL : SS_SEG_OBJECT, backing,
                                msz),
                     __ATOMIC_RELAXED);
    en->seg_id = op->small ? (SS_SEG_ID_SMALL | dsm->no) : s->tab.next_seg_id++;
    en->data_off64 = op->small ? (uint32_t)(op->dloc.off / SS_OBJ_ALIGN) : 0;
    en->meta_seg = op->has_meta ? msm->no : 0;
    en->meta_off64 = op->has_meta ? (uint32_t)(op->mloc.off / SS_OBJ_ALIGN) : 0;
    ss__index_write_end(en);
    o->flags &= (uint8_t)~(SS_OBJF_RESTORING | SS_OBJF_NOMEM);
    s->disk.nspilled--;
    s->disk.spilled_bytes -= en->size;
    s->cnt.c_restores++;
    op_put(s, i);
    if (o->refs == 0)
        ss__lru_push(s, e);
    ss_id id = en->id;
    ss__park_wake(s, &id);
}

static void restore_job_done(ss__store *s, ss__sealjob *j);

static void restore_read_done(ss__store *s, uint32_t i, const ss__spill_done *d)
{
    ss__spop *op = ss__disk_op(s, i);
    uint32_t e = op->e;
    int status = d->status;

    SS_ASSERT(ss__ent(s, e)->generation == op->generation);
    restore_windows(s, op, false); /* the bytes have landed, or never will */
    if (status < 0 || ss__ent_state(s, e) == SS_IX_DELETED || s->disk.closing) {
        restore_end(s, i, status);
        return;
    }
    if (op->small) {
        restore_publish(s, i);
        return;
    }
    ss__sys_munmap(op->map, op->map_len);
    op->map = NULL;
    /* write-seal off the loop, like any object segment */
    ss__sealjob *j = calloc(1, sizeof(*j));
    if (!j) {
        restore_end(s, i, -ENOMEM);
        return;
    }
    j->c = NULL;
    j->done = restore_job_done;
    j->req_id = i;
    j->e = e;
    j->generation = op->generation;
    j->fd = op->seg.fd;
    j->size = op->seg.size;
    op->rstate = SS_RS_SEAL;
    if (s->seal.started) {
        ss__seal_submit(s, j);
    } else {
        j->rc = ss__seg_seal_write(j->fd, j->size);
        restore_job_done(s, j);
    }
}

/* The seal worker finished a restored segment (ss__sealjob.done). */
static void restore_job_done(ss__store *s, ss__sealjob *j)
{
    uint32_t i = j->req_id;

    if (j->rc == 0 && ss__ent_state(s, j->e) != SS_IX_DELETED && !s->disk.closing)
        restore_publish(s, i);
    else
        restore_end(s, i, ss__ent_state(s, j->e) == SS_IX_DELETED ? 0 : j->rc);
    free(j);
}

/* ========================================================= durable deletes */

/* The protocol is beside ss__spop (store_int.h). */

/* A pending removal of a record of `id`: a DELETE op, or a spill in flight
 * of a deleted object (index + 1), or 0. Linear, but only while some are
 * in flight (spills: a DELETE of a spilling object scans them anyway). */
static uint32_t removal_find(const ss__store *s, const ss_id *id)
{
    if (!s->disk.nremovals && !s->disk.nspilling)
        return 0;
    for (uint32_t i = 0; i < s->disk.ops_cap; i++) {
        const ss__spop *op = ss__disk_op(s, i);
        if ((op->kind == SS_SPOP_DELETE ||
             (op->kind == SS_SPOP_SPILL && ss__ent_state(s, op->e) == SS_IX_DELETED)) &&
            !memcmp(&op->id, id, sizeof(*id)))
            return i + 1;
    }
    return 0;
}

/* Hang the waiters list pk on op i. */
static void waiters_attach(ss__store *s, uint32_t i, ss__parked *pk)
{
    ss__spop *op = ss__disk_op(s, i);
    ss__parked *last = pk;

    for (ss__parked *w = pk; w; w = w->qnext) {
        w->spop = i + 1;
        last = w;
    }
    if (!pk)
        return;
    last->qnext = op->pk;
    if (op->pk)
        op->pk->qprev = last;
    pk->qprev = NULL;
    op->pk = pk;
}

/* The op a list of DELETEs waited on completed (and was given back) with
 * status: an error is their answer; with 0 they wait on for another
 * pending removal of id, and answer 0 once none is left. */
static void waiters_pass(ss__store *s, ss__parked *pk, int status, const ss_id *id)
{
    uint32_t j;

    if (!pk)
        return;
    if (status == 0 && (j = removal_find(s, id))) {
        waiters_attach(s, j - 1, pk);
        return;
    }
    while (pk) {
        ss__parked *nx = pk->qnext;
        pk->spop = 0;
        pk->qprev = pk->qnext = NULL;
        ss__conn_reply_status(s, pk->c, SS_MSG_DELETE, pk->req_id, status);
        ss__parked_free(s, pk);
        pk = nx;
    }
}

/* Delete a disk copy through the engine, tracked as a pending removal of
 * its id until it is durable; pk (DELETEs waiting, or NULL) is handed the
 * completion. */
static void disk_delete(ss__store *s, const ss__spill_loc *loc, ss__parked *pk)
{
    uint32_t i;
    int rc;

    if (op_new(s, &i) < 0) {
        /* nothing to track it with: removed, but nobody can wait on it */
        ss__log_error("store: out of memory tracking the delete of a spilled copy; a crash "
                      "may bring it back");
        rc = ss__spill_delete(s->disk.sp, loc);
        if (rc < 0 && rc != -ENOENT)
            ss__log_warn("store: dropping a spilled copy: %s", ss_strerror(rc));
        waiters_pass(s, pk, -ENOMEM, &loc->id);
        return;
    }
    rc = ss__spill_delete_notify(s->disk.sp, loc, i);
    if (rc < 0) {
        op_put(s, i);
        if (rc != -ENOENT)
            ss__log_warn("store: dropping a spilled copy: %s", ss_strerror(rc));
        waiters_pass(s, pk, rc == -ENOENT ? 0 : rc, &loc->id); /* -ENOENT: no record */
        return;
    }
    ss__spop *op = ss__disk_op(s, i);
    op->kind = SS_SPOP_DELETE;
    op->id = loc->id;
    s->disk.nremovals++;
    s->disk.ops_engine++;
    waiters_attach(s, i, pk);
}

static void delete_done(ss__store *s, uint32_t i, const ss__spill_done *d)
{
    ss__spop *op = ss__disk_op(s, i);
    ss__parked *pk = op->pk;
    ss_id id = op->id;

    s->disk.nremovals--;
    op_put(s, i);
    waiters_pass(s, pk, d->status, &id);
}

bool ss__disk_delete_waits(const ss__store *s, uint32_t e)
{
    const ss__obj *o = ss__obj_at(s, e);

    return s->disk.sp && (o->disk || (o->flags & SS_OBJF_SPILLING) ||
                     removal_find(s, &ss__ent(s, e)->id));
}

void ss__disk_delete_durable(ss__store *s, uint32_t e, ss__parked *pk)
{
    ss__obj *o = ss__obj_at(s, e);
    ss__spill_loc loc;

    pk->qprev = pk->qnext = NULL;
    if (o->flags & SS_OBJF_SPILLING) {
        /* its spill's completion deletes what it wrote, then answers */
        for (uint32_t i = 0; i < s->disk.ops_cap; i++) {
            ss__spop *op = ss__disk_op(s, i);
            if (op->kind == SS_SPOP_SPILL && op->e == e) {
                waiters_attach(s, i, pk);
                return;
            }
        }
        waiters_pass(s, pk, -SS_E_CORRUPT, NULL); /* a spilling object without its spill */
        return;
    }
    if (o->disk && s->disk.sp) {
        loc_of(s, e, &loc);
        disk_put(s, o->disk - 1);
        o->disk = 0;
        disk_delete(s, &loc, pk);
        return;
    }
    /* no copy of its own: an older copy's removal, if any */
    waiters_pass(s, pk, 0, &ss__ent(s, e)->id);
}

/* ss__parked_free of a DELETE: its op completes unanswered (registered
 * with the parking layer). */
static void spill_unpark(ss__store *s, ss__parked *pk)
{
    if (pk->spop) {
        ss__parked *tail = NULL; /* the list keeps none */
        SS_DL_UNLINK(ss__disk_op(s, pk->spop - 1)->pk, tail, pk, qprev, qnext);
        (void)tail;
    }
    pk->qprev = pk->qnext = NULL;
    pk->spop = 0;
}

static void apply(ss__store *s, const ss__spill_done *d)
{
    uint32_t i = (uint32_t)d->cookie;

    s->disk.ops_engine--;
    if (d->op == SS_SPILL_OP_DELETE)
        delete_done(s, i, d);
    else if (ss__disk_op(s, i)->kind == SS_SPOP_SPILL)
        spill_done(s, i, d);
    else
        restore_read_done(s, i, d);
}

/* Older copies the scan replaced go (their files are registered by now),
 * each a pending removal of its id until durable: a DELETE of the id
 * waits for it. */
static void scan_drops(ss__store *s)
{
    for (size_t k = 0; k < s->disk.scan_ndrop; k++)
        disk_delete(s, &s->disk.scan_drop[k], NULL);
    s->disk.scan_ndrop = 0;
}

/* The scan is over (complete, failed or stopped): requests held for it go. */
static void scan_end(ss__store *s)
{
    int st = ss__spill_scan_status(s->disk.sp);

    scan_drops(s);
    free(s->disk.scan_drop);
    s->disk.scan_drop = NULL;
    s->disk.scan_cdrop = 0;
    if (st < 0 && st != -ECANCELED)
        ss__log_error("store: indexing the spilled objects in %s stopped: %s; objects "
                      "not found stay on disk for the next start", s->disk.spill_dir,
                      ss_strerror(st));
    else if (ss__spill_scan_kept(s->disk.sp) > s->disk.scan_dups)
        ss__log_info("store: %llu spilled objects %s in %s",
                     (unsigned long long)(ss__spill_scan_kept(s->disk.sp) - s->disk.scan_dups),
                     st == 1 ? "found" : "found before the stop", s->disk.spill_dir);
    if (s->disk.scanning) {
        s->disk.scanning = false;
        s->disk.scan_end(s);
    }
}

void ss__disk_scan_stop(ss__store *s)
{
    if (!s->disk.sp || !s->disk.scanning)
        return;
    ss__spill_scan_cancel(s->disk.sp);
    scan_end(s);
}

static void spill_events(ss__store *s)
{
    ss__spill_done d[REAP_BATCH];

    if (!s->disk.sp)
        return;
    for (int round = 0; round < REAP_ROUNDS; round++) {
        int n = ss__spill_reap(s->disk.sp, d, REAP_BATCH);
        for (int k = 0; k < n; k++)
            apply(s, &d[k]);
        if (n < REAP_BATCH)
            break;
    }
    if (s->disk.scanning) {
        scan_drops(s);
        if (ss__spill_scan_status(s->disk.sp) != 0)
            scan_end(s);
    }
}

static void spill_event(void *arg, uint32_t events)
{
    (void)events;
    spill_events(arg);
}

void ss__disk_drain(ss__store *s)
{
    uint64_t end = ss__now_ns() + DRAIN_MS * 1000000ull;

    if (!s->disk.sp)
        return;
    ss__disk_scan_stop(s);
    /* restores still waiting for memory: their GETs were answered */
    while (s->disk.rq_head) {
        uint32_t i = s->disk.rq_head - 1;
        s->disk.rq_head = ss__disk_op(s, i)->next;
        s->park.parked_need -= ss__disk_op(s, i)->bytes;
        restore_end(s, i, 0);
    }
    s->disk.rq_tail = 0;
    while (s->disk.ops_engine && ss__now_ns() < end) {
        ss__spill_wait(s->disk.sp, 1000);
        spill_events(s);
    }
    if (s->disk.ops_engine)
        ss__log_error("store: %u spill operations still unfinished at stop",
                      (unsigned)s->disk.ops_engine);
}

void ss__disk_teardown(ss__store *s)
{
    ss__spill_stats st;

    if (s->disk.sp) {
        s->disk.closing = true;
        ss__disk_drain(s);
        /* restores whose seal job died with the worker */
        for (uint32_t i = 0; i < s->disk.ops_cap; i++) {
            ss__spop *op = ss__disk_op(s, i);
            if (op->kind == SS_SPOP_RESTORE && op->rstate == SS_RS_SEAL)
                restore_end(s, i, 0);
        }
        ss__spill_wait(s->disk.sp, DRAIN_MS);
        ss__spill_stats_get(s->disk.sp, &st);
        /* (a scan cut short has not seen every file that is there) */
        if (st.files == 0 && s->disk.ops_engine == 0 && ss__spill_scan_status(s->disk.sp) == 1) {
            /* nothing kept here: no litter. Unlinked under the engine's
             * lock; a store that opens it meanwhile retries (setup). */
            char p[sizeof(s->disk.spill_dir) + 8];
            snprintf(p, sizeof(p), "%s/lock", s->disk.spill_dir);
            (void)ss__sys_unlinkat(AT_FDCWD, p, 0);
            (void)ss__sys_unlinkat(AT_FDCWD, s->disk.spill_dir, AT_REMOVEDIR);
        }
        ss__spill_close(s->disk.sp);
        s->disk.sp = NULL;
    }
    for (uint32_t k = 0; k < s->disk.ops_cap / SS_SPOP_CHUNK; k++)
        free(s->disk.ops[k]);
    free(s->disk.ops);
    s->disk.ops = NULL;
    s->disk.ops_cap = s->disk.ops_free = s->disk.ops_busy = 0;
}

void ss__disk_fini(ss__store *s)
{
    free(s->disk.locs);
    s->disk.locs = NULL;
    s->disk.nlocs = s->disk.locs_cap = s->disk.locs_free = 0;
}

void ss__disk_forget(ss__store *s, uint32_t e)
{
    ss__obj *o = ss__obj_at(s, e);

    if (!o->disk)
        return;
    if (s->disk.sp) {
        ss__spill_loc loc;
        loc_of(s, e, &loc);
        disk_delete(s, &loc, NULL);
    }
    disk_put(s, o->disk - 1);
    o->disk = 0;
}

void ss__disk_fill_stats(ss__store *s, ss_stats *st)
{
    ss__spill_stats es;

    st->spilled_objects = s->disk.nspilled;
    st->spilled_bytes = s->disk.spilled_bytes;
    st->spills = s->cnt.c_spills;
    st->restores = s->cnt.c_restores;
    st->spill_errors = s->cnt.c_spill_errors;
    st->restore_errors = s->cnt.c_restore_errors;
    st->spill_lost = s->cnt.c_lost;
    if (!s->disk.sp)
        return;
    ss__spill_stats_get(s->disk.sp, &es);
    st->spill_bytes = es.bytes_spilled;
    st->spill_ns = es.spill_ns;
    st->restore_bytes = es.bytes_restored;
    st->restore_ns = es.restore_ns;
    st->spill_files = es.files;
    st->spill_disk_bytes = es.disk_bytes;
    st->spill_queue_depth = es.queue_depth;
    st->spill_lost += es.damaged;
    st->spill_mode = SS_SPILL_MODE_ON | (es.uring ? SS_SPILL_MODE_URING : 0) |
                     (es.direct ? SS_SPILL_MODE_DIRECT : 0) |
                     (s->disk.scanning ? SS_SPILL_MODE_SCANNING : 0);
    st->spill_scan_bytes = es.scan_bytes;
}

/* ================================================================ setup */

/* The per-user default directory, created 0700 and checked. */
static int default_dir(char *buf, size_t len)
{
    const char *t = getenv("TMPDIR");
    unsigned uid = (unsigned)ss__sys_geteuid();
    struct stat st;
    int n, rc;

    if (t && t[0] == '/')
        n = snprintf(buf, len, "%s/sealstore-%u-spill", t, uid);
    else
        n = snprintf(buf, len, "/var/tmp/sealstore-%u", uid);
    if (n < 0 || (size_t)n >= len)
        return -ENAMETOOLONG;
    if ((rc = ss__sys_mkdirat(AT_FDCWD, buf, 0700)) < 0 && rc != -EEXIST)
        return rc;
    /* someone else's directory, or one others can enter: never ours */
    if ((rc = ss__sys_fstatat(AT_FDCWD, buf, &st, AT_SYMLINK_NOFOLLOW)) < 0)
        return rc;
    if (!S_ISDIR(st.st_mode) || st.st_uid != uid || (st.st_mode & 077)) {
        ss__log_error("store: %s is not a directory owned by uid %u with mode 0700", buf, uid);
        return -EPERM;
    }
    return 0;
}

/* What a subdirectory holds: 1 spill files (keep it), 0 only our own
 * leftovers (lock, unfinished .tmp, .probe-*), -1 something else. */
static int dir_kind(int dfd)
{
    DIR *d = ss__sys_dir_reopen(dfd); /* rewound: starts over */
    struct dirent *de;
    int kind = 0;

    if (ss__is_err(d))
        return -1;
    while (kind == 0 && ss__sys_readdir(d, &de) > 0) {
        const char *n = de->d_name;
        size_t l = strlen(n);
        if (!strcmp(n, ".") || !strcmp(n, "..") || !strcmp(n, "lock") ||
            !strncmp(n, ".probe-", 7) || (l > 4 && !strcmp(n + l - 4, ".tmp")))
            continue;
        kind = l > 6 && !strcmp(n + l - 6, ".spill") ? 1 : -1;
    }
    ss__sys_closedir(d);
    return kind;
}

static void remove_leftovers(int dfd)
{
    DIR *d = ss__sys_dir_reopen(dfd);
    struct dirent *de;

    if (ss__is_err(d))
        return;
    while (ss__sys_readdir(d, &de) > 0)
        if (strcmp(de->d_name, ".") && strcmp(de->d_name, ".."))
            (void)ss__sys_unlinkat(dfd, de->d_name, 0);
    ss__sys_closedir(d);
}

/*
 * Stores that died (killed, crashed) never ran their cleanup: remove their
 * subdirectories that hold no spill file and that no store holds (the
 * engine's flock on "lock"), so short-lived stores leave no litter. Done
 * under that flock: a store opening one meanwhile gets -EBUSY or -ENOENT
 * and retries (setup).
 */
static void sweep_dead(const char *top, const char *own)
{
    DIR *d = ss__sys_opendir(top);
    struct dirent *de;

    if (ss__is_err(d))
        return;
    while (ss__sys_readdir(d, &de) > 0) {
        struct stat sb;
        int dfd, lfd;

        if (strncmp(de->d_name, "store-", 6) || strlen(de->d_name) != 22 ||
            !strcmp(de->d_name, own))
            continue;
        dfd = ss__sys_openat(dirfd(d), de->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC,
                             0);
        if (dfd < 0)
            continue;
        lfd = ss__sys_openat(dfd, "lock", O_RDWR | O_NOFOLLOW | O_CLOEXEC, 0);
        if (lfd >= 0 && ss__sys_fstat(dfd, &sb) == 0 && sb.st_uid == ss__sys_geteuid() &&
            ss__sys_flock(lfd, LOCK_EX | LOCK_NB) == 0 && dir_kind(dfd) == 0) {
            remove_leftovers(dfd);
            if (ss__sys_unlinkat(dirfd(d), de->d_name, AT_REMOVEDIR) == 0)
                ss__log_info("store: removed %s/%s, left empty by a store that died", top,
                             de->d_name);
        }
        if (lfd >= 0)
            ss__sys_close(lfd);
        ss__sys_close(dfd);
    }
    ss__sys_closedir(d);
}

/* The socket path made absolute, its directory resolved: the key of this
 * store's subdirectory. */
static void socket_key(const ss__store *s, char *out, size_t len)
{
    char dir[PATH_MAX], real[PATH_MAX];
    const char *slash = strrchr(s->bind.path, '/');
    const char *base = slash ? slash + 1 : s->bind.path;

    if (slash == s->bind.path)
        snprintf(dir, sizeof(dir), "/");
    else if (slash)
        snprintf(dir, sizeof(dir), "%.*s", (int)(slash - s->bind.path), s->bind.path);
    else
        snprintf(dir, sizeof(dir), ".");
    if (ss__sys_realpath(dir, real) == 0)
        snprintf(out, len, "%s/%s", strcmp(real, "/") ? real : "", base);
    else
        snprintf(out, len, "%s", s->bind.path);
}

/* An older copy the scan found goes (scan_drops): kept by the engine until
 * then, so its removal is one the store hears about (ss__spop). */
static int scan_drop(ss__store *s, const ss__spill_loc *loc)
{
    if (SS_ARRAY_RESERVE(s->disk.scan_drop, s->disk.scan_cdrop, s->disk.scan_ndrop + 1, 16) < 0)
        return -ENOMEM;
    s->disk.scan_drop[s->disk.scan_ndrop++] = *loc;
    if (!loc->bound)
        s->disk.scan_dups++;
    return 0;
}

/* The scan found an object (on the loop, from ss__spill_reap: see
 * ss__disk_setup). */
static int scan_one(void *arg, const ss__spill_loc *loc, const void *meta)
{
    ss__store *s = arg;
    int64_t x = ss__index_find(&s->tab.ix, &loc->id);
    uint32_t e, di;
    int rc;

    (void)meta;
    if (loc->bound) {
        /* bound to a creator that is gone (the store restarted): deleted
         * like the older copies; an indexed copy of its id older than it
         * was deleted before it was created, and goes too */
        if (x >= 0 && ss__obj_at(s, (uint32_t)x)->disk &&
            s->disk.locs[ss__obj_at(s, (uint32_t)x)->disk - 1].seq < loc->seq)
            ss__obj_detach(s, (uint32_t)x, false);
        return scan_drop(s, loc);
    }
    if (x >= 0) {
        /* two copies of one id (a crash between a new spill and the old
         * one's delete): the newer write wins */
        ss__obj *o = ss__obj_at(s, (uint32_t)x);
        /* no disk copy: created since the start, newer than any (creates
         * wait for the scan, so only at a stop) */
        if (!o->disk || s->disk.locs[o->disk - 1].seq >= loc->seq)
            return scan_drop(s, loc);
        if (ss__ent_state(s, (uint32_t)x) != SS_IX_SPILLED ||
            (o->flags & (SS_OBJF_RESTORING | SS_OBJF_SPILLING))) {
            /* the older copy was restored meanwhile (a GET whose timeout
             * ended its wait for the scan): it goes as if deleted, its
             * disk copy with it, and the newer one is indexed below */
            ss__obj_detach(s, (uint32_t)x, false);
            x = -1;
        }
    }
    if (x >= 0) {
        ss__obj *o = ss__obj_at(s, (uint32_t)x);
        ss__spill_loc old;
        loc_of(s, (uint32_t)x, &old);
        if ((rc = scan_drop(s, &old)) < 0)
            return rc;
        s->disk.spilled_bytes -= s->disk.locs[o->disk - 1].size;
        s->tab.object_bytes -= s->disk.locs[o->disk - 1].size;
        disk_put(s, o->disk - 1);
        o->disk = 0;
        if ((rc = disk_add(s, loc, &di)) < 0)
            return rc;
        o->disk = di + 1;
        ss__obj_set_uid(s, (uint32_t)x, loc->uid);
        ss__index_entry *en = ss__ent(s, (uint32_t)x);
        ss__index_write_begin(en);
        __atomic_store_n(&en->info,
                         SS_IX_INFO(SS_IX_SPILLED,
                                    loc->size <= s->mem.small_max ? SS_SEG_SMALL : SS_SEG_OBJECT,
                                    0, loc->meta_size),
                         __ATOMIC_RELAXED);
        __atomic_store_n(&en->size, loc->size, __ATOMIC_RELAXED);
        ss__index_write_end(en);
        s->disk.spilled_bytes += loc->size;
        s->tab.object_bytes += loc->size;
        return 0;
    }
    if ((rc = disk_add(s, loc, &di)) < 0)
        return rc;
    if ((rc = ss__obj_alloc(s, &e)) < 0) {
        disk_put(s, di);
        return rc;
    }
    ss__obj *o = ss__obj_at(s, e);
    o->flags |= SS_OBJF_NOMEM;
    o->disk = di + 1;
    o->node = SS_NODE_ANY;
    ss__obj_set_uid(s, e, loc->uid);
    ss__index_entry *en = ss__ent(s, e);
    ss__index_write_begin(en);
    __atomic_store_n(&en->info,
                     SS_IX_INFO(SS_IX_SPILLED,
                                loc->size <= s->mem.small_max ? SS_SEG_SMALL : SS_SEG_OBJECT, 0,
                                loc->meta_size),
                     __ATOMIC_RELAXED);
    memcpy(&en->id, &loc->id, sizeof(ss_id));
    en->seg_id = 0;
    en->size = loc->size;
    en->data_off64 = 0;
    en->meta_seg = 0;
    en->meta_off64 = 0;
    ss__index_write_end(en);
    if ((rc = ss__index_link(&s->tab.ix, e)) < 0) {
        /* give the entry back as it came */
        o->flags &= (uint8_t)~SS_OBJF_NOMEM;
        o->disk = 0;
        disk_put(s, di);
        ss__index_write_begin(en);
        __atomic_store_n(&en->info, SS_IX_INFO(SS_IX_FREE, 0, 0, 0), __ATOMIC_RELAXED);
        ss__index_write_end(en);
        memset(o, 0, sizeof(*o));
        o->fd_ro = o->fd_rw = -1;
        o->next = s->tab.free_head;
        s->tab.free_head = e + 1;
        return rc;
    }
    s->tab.nobjects++;
    s->tab.nsealed++;
    s->tab.object_bytes += loc->size;
    s->disk.nspilled++;
    s->disk.spilled_bytes += loc->size;
    return 0;
}

void ss__disk_register(ss__store *s, void (*on_scan_end)(ss__store *s))
{
    static const ss__obj_disk_hooks tab = {
        .forget = ss__disk_forget,
        .cancel_restore = ss__disk_restore_cancel,
        .spill = ss__disk_spill_more,
    };

    s->disk.scan_end = on_scan_end;
    ss__obj_register_disk(s, &tab);
    ss__park_on_unpark(s, spill_unpark);
}

int ss__disk_setup(ss__store *s)
{
    char opt[PATH_MAX], top[PATH_MAX], key[PATH_MAX + 128], high[64];
    ss__spill_params p = { 0 };
    uint64_t qd, end;
    int rc;

    ss__store_opt_spill_dir(opt, sizeof(opt));
    if (strcasecmp(opt, "off") == 0) {
        ss__log_info("store: spilling is off (SEALSTORE_SPILL_DIR=off)");
        return 0;
    }
    if (!opt[0]) {
        rc = default_dir(top, sizeof(top));
    } else {
        snprintf(top, sizeof(top), "%s", opt);
        if ((rc = ss__sys_mkdirat(AT_FDCWD, top, 0700)) == -EEXIST)
            rc = 0;
    }
    socket_key(s, key, sizeof(key));
    if (rc == 0 &&
        snprintf(s->disk.spill_dir, sizeof(s->disk.spill_dir), "%s/store-%016llx", top,
                 (unsigned long long)ss__spill_hash64(key, strlen(key), 0)) >=
            (int)sizeof(s->disk.spill_dir))
        rc = -ENAMETOOLONG;
    if (rc < 0) {
        ss__log_error("store: spill directory %s: %s: spilling is off", top, ss_strerror(rc));
        return 0;
    }

    sweep_dead(top, strrchr(s->disk.spill_dir, '/') + 1);
    qd = ss__opt_size(SS_OPT_SPILL_QUEUE_DEPTH);
    if (qd < 1 || qd > 256) {
        ss__log_warn("store: SEALSTORE_SPILL_QUEUE_DEPTH=%llu is outside 1..256: using %u",
                     (unsigned long long)qd, qd < 1 ? 1u : 256u);
        qd = qd < 1 ? 1 : 256;
    }
    p.dir = s->disk.spill_dir;
    p.queue_depth = (unsigned)qd;
    /* a store going away on the same socket may still hold the directory */
    end = ss__now_ns() + OPEN_RETRY_MS * 1000000ull;
    for (;;) {
        rc = ss__spill_open(&s->disk.sp, &p);
        if ((rc != -EBUSY && rc != -ENOENT) || ss__now_ns() >= end)
            break;
        ss__sys_sleep_ns(20 * 1000000ull);
    }
    if (rc < 0) {
        s->disk.sp = NULL;
        ss__log_error("store: cannot spill to %s: %s: spilling is off", s->disk.spill_dir,
                      ss_strerror(rc));
        return rc == -ENOMEM ? rc : 0;
    }

    ss__opt_string(SS_OPT_SPILL_HIGH, high, sizeof(high));
    rc = ss__spill_parse_high(high, s->mem.capacity, &s->disk.spill_high);
    if (rc < 0) {
        ss__log_warn("store: SEALSTORE_SPILL_HIGH=\"%s\" is not N%%, a size or off: using 90%%",
                     high);
        rc = ss__spill_parse_high("90%", s->mem.capacity, &s->disk.spill_high);
    }
    s->disk.spill_ahead = rc == 0;
    uint64_t hyst = s->mem.capacity / 20;
    s->disk.spill_low = s->disk.spill_high > hyst ? s->disk.spill_high - hyst : 0;

    /* The scan runs in the engine's thread; what it finds comes to
     * scan_one from ss__spill_reap, on the loop. Until it is over the scan
     * gate holds the requests that depend on it (store_req.c). */
    rc = ss__loop_add(&s->loop, &s->disk.ev, ss__spill_event_fd(s->disk.sp), EPOLLIN,
                      spill_event, s);
    if (rc < 0) {
        ss__log_error("store: epoll on the spill engine: %s", ss_strerror(rc));
        return rc;
    }
    rc = ss__spill_scan_start(s->disk.sp, scan_one, s);
    if (rc < 0) {
        ss__log_error("store: cannot index the spilled objects in %s: %s", s->disk.spill_dir,
                      ss_strerror(rc));
        return rc;
    }
    s->disk.scanning = true;
    return 0;
}
