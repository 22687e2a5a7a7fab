/* SPDX-License-Identifier: MIT */
/*
 * ss__store_validate: the store's invariants, equation by equation, in one
 * read-only walk of the object table, the clients and the parked requests
 * (O(entries + connections + parked requests + buckets)). In
 * --enable-debug builds store.c runs it as the loop's last turn hook (after
 * the turn's connections are reaped) and once more at close; a broken equation is logged (one line naming it and
 * the entry or client) and returned as -SS_E_CORRUPT, like the allocator's
 * and the pool's validators, so a test can corrupt a copy on purpose and
 * see it reported.
 *
 * What is checked (e ranges over entry numbers below ix.high, o = objs[e],
 * st = the entry's state, c over live connections, pk over parked
 * requests):
 *
 * objects
 *   o.USED <=> st != FREE
 *   free list: the entries it links are exactly those with st == FREE
 *   st in {CREATED, SEALED, SPILLED} <=> e is chained: index_find(id) == e
 *   ix.hashed == nobjects == #{CREATED, SEALED, SPILLED}
 *   nsealed == #{SEALED, SPILLED};  object_bytes == sum of their sizes
 *   nspilled == #SPILLED;  spilled_bytes == sum of their sizes
 *   o.refs == sum over c of c's count on e
 *   CREATED: o.refs == 1 (its creator), or ORPHAN or COPYING and o.refs == 0,
 *   or STAGING and o.refs <= 1 (0: the creator left during the copy)
 *   STAGING => CREATED && ARENA && !SEALING && !COPYING
 *   ORPHAN => SEALING;  SEALING => CREATED && OBJECT
 *   ON_LRU <=> SEALED && refs == 0 && !SPILLING && !TRUSTED
 *   LRU list (head..tail, prev/next) == {e : ON_LRU}
 *   DELETED => refs > 0 || SPILLING || RESTORING
 *   DELETED <=> e on det chain ss__obj_det_bucket(id) (prev/next consistent)
 *   fd_rw >= 0 <=> OBJECT && CREATED && !TRUSTED
 *   TRUSTED => OBJECT && !NOMEM && !SEALING && !SPILLING && !RESTORING &&
 *   disk == 0 && (CREATED || SEALED || DELETED), held by exactly one area
 *   of its creator's (c.id == small_slot, seg_size == the area's size),
 *   which is sealed (fsealed, filled) unless the object is CREATED, and
 *   lent, if at all, for that object; c.nstage_held == #held areas,
 *   c.nstage_busy == #lent, c.stage_bytes == their sizes; no live
 *   connection's area is given
 *   OBJECT && !NOMEM <=> fd_ro >= 0 && seg_size >= size (else fd_ro < 0,
 *   seg_size == 0)
 *   NOMEM => SPILLED || DELETED;  SPILLED => NOMEM && disk != 0
 *   disk <= disk.nlocs;  CREATED => disk == 0
 *   SPILLING => SEALED || DELETED;  RESTORING => SPILLED || DELETED
 *   SMALL && !NOMEM: size <= small_max and seg_id names the small segment
 *   the allocator has in small_slot
 *   !NOMEM: meta_seg != 0 <=> meta_size != 0
 *
 * clients
 *   conns list (prev/next) has nclients entries, nsubscribers subscribers
 *   handshake list == {c : hello_deadline != 0}, nhello_pending of them
 *   c.ref_used == #keys in c.refs, each found by ss__ref_find, count > 0
 *   c.fd_unread == sum of c's marks;  fdt list == {c : mark_len > 0}
 *   fds_unread == sum of c.fd_unread + sum of lingers' fd_unread
 *   nout_retry == #{c : out_retry};  c.out_count == length of c's outbox
 *   #{e : SEALING && !ORPHAN} == sum over c of (queued seals + seal_busy)
 *   c.nbound <= c.bound_cap, each pair's entry below ix.high;
 *   a pair of a live connection whose generation still matches names a
 *   CREATED, SEALED or SPILLED entry (else: deleted since) that is BOUND;
 *   #{e : BOUND, st in {CREATED, SEALED, SPILLED}, not ORPHAN} == the
 *   number of those pairs
 *   (a creator-bound object outlives its connection only while an
 *   orphaned seal is with the worker)
 *   (a restored segment's seal job has no client: its object is RESTORING)
 *
 * parked requests
 *   c.nparked == length of c.parked;  c.parked_bytes == sum of pk.bytes
 *   nparked == sum of c.nparked;  parked_bytes == sum of c.parked_bytes
 *   heap: heap[i].heap_pos == i, deadline(parent) <= deadline(child)
 *   pk in heap <=> deadline != none && !fdwait;  heap_len == #in heap
 *   create FIFO (qprev/qnext) == {pk : CREATE or PUT}
 *   fdw FIFO == {pk : fdwait};  c.nfdwait == #c's fdwait;  fdwait <=> ready
 *   GET with nodes: missing == #nodes not HOLD, nrestore == #RESTORE nodes
 *   waiter hash == every GET's nodes, each in ss__park_wait_bucket(id)
 *   DELETE: waits on a SPILL or DELETE op whose waiter list holds it
 *   parked_need == sum of parked creates' need + waiting restores' bytes
 *
 * spill ops (when spilling is on)
 *   ops_busy == #ops not FREE;  free list == the FREE ones
 *   nspilling == #SPILL ops == #{e : SPILLING}, each on its object
 *   #RESTORE ops == #{e : RESTORING}, each on its object
 *   nremovals == #DELETE ops;  restore queue: RESTORE ops waiting for memory
 *
 * The bucket functions and the op lookup are the owners' own
 * (ss__obj_det_bucket, ss__park_wait_bucket, ss__disk_op in store_int.h).
 * It reads every layer's records but calls only the object table
 * (ss__ref_find) and the index, allocator and log below the store, so it
 * sits just above store_obj.c in the layers (internal.h); store.c calls it.
 */
#include "store_int.h"

#include <stdlib.h>
#include <string.h>

/* One line per broken invariant: what, where, and the equation. */
#define V(cond, fmt, ...)                                                         \
    do {                                                                          \
        if (ss_unlikely(!(cond))) {                                               \
            ss__log_error("store invalid: " fmt " [%s at %s:%d]", ##__VA_ARGS__, \
                          #cond, __FILE__, __LINE__);                             \
            return -SS_E_CORRUPT;                                                 \
        }                                                                         \
    } while (0)

#define ULL(x) ((unsigned long long)(x))

/* What the walks count, to be compared with the store's own figures. */
typedef struct tally {
    uint64_t chained, sealed, bytes, spilled, spilled_bytes;
    uint64_t free, on_lru, deleted, sealing, spilling, restoring;
    uint64_t in_heap, creates, fdwait, nodes, deletes;
    uint64_t parked, parked_bytes, need;
    uint64_t bound, bound_pairs; /* creator-bound objects, and the pairs naming them */
    uint64_t pinwait;               /* objects whose free waits for a pin */
    uint64_t trusted, held;         /* TRUSTED objects, and the areas holding them */
    uint32_t *refs; /* per entry: sum of the clients' counts (NULL: no memory) */
} tally;

/* ----------------------------------------------------------------- objects */

static int check_entry(const ss__store *s, uint32_t e, tally *t)
{
    const ss__obj *o = ss__obj_at(s, e);
    const ss__index_entry *en = ss__ent(s, e);
    uint32_t info = en->info, st = SS_IX_STATE(info), kind = SS_IX_KIND(info);
    unsigned f = o->flags;
    bool nomem = f & SS_OBJF_NOMEM;

    V(!(f & SS_OBJF_USED) == (st == SS_IX_FREE), "entry %u: used flag %d, state %u", e,
      !!(f & SS_OBJF_USED), st);
    if (st == SS_IX_FREE) {
        t->free++;
        return 0;
    }
    V(st == SS_IX_CREATED || st == SS_IX_SEALED || st == SS_IX_DELETED || st == SS_IX_SPILLED,
      "entry %u: state %u", e, st);
    V(kind == SS_SEG_SMALL || kind == SS_SEG_OBJECT || kind == SS_SEG_ARENA, "entry %u: kind %u",
      e, kind);
    if (st != SS_IX_DELETED) {
        V(ss__index_find(&s->tab.ix, &en->id) == (int64_t)e,
          "entry %u (state %u): its id does not find it in the index", e, st);
        t->chained++;
        t->bytes += en->size;
    } else {
        t->deleted++;
        V(o->refs > 0 || (f & (SS_OBJF_SPILLING | SS_OBJF_RESTORING)) ||
              (o->flags2 & SS_OBJF2_PINWAIT),
          "entry %u: deleted, unreferenced, nothing in flight and no pin waited for, but not freed",
          e);
    }
    if (o->flags2 & SS_OBJF2_PINWAIT) {
        t->pinwait++;
        V(st == SS_IX_DELETED && o->refs == 0, "entry %u: waits for a pin, state %u refs %u", e,
          st, o->refs);
    }
    if (st == SS_IX_SEALED || st == SS_IX_SPILLED)
        t->sealed++;
    if (st == SS_IX_SPILLED) {
        t->spilled++;
        t->spilled_bytes += en->size;
        V(nomem && o->disk, "entry %u: spilled, nomem %d disk %u", e, nomem, o->disk);
    }
    if (st == SS_IX_CREATED) {
        V(o->disk == 0, "entry %u: created with a disk copy %u", e, o->disk);
        V((f & SS_OBJF_ORPHAN) || (o->flags2 & SS_OBJF2_COPYING) ? o->refs == 0
          : (o->flags2 & SS_OBJF2_STAGING)                       ? o->refs <= 1
                                                                 : o->refs == 1,
          "entry %u: created (orphan %d, copying %d) with %u refs", e, !!(f & SS_OBJF_ORPHAN),
          !!(o->flags2 & SS_OBJF2_COPYING), o->refs);
    }
    V(!(f & SS_OBJF_ORPHAN) || (f & SS_OBJF_SEALING), "entry %u: orphan not sealing", e);
    V(!(o->flags2 & SS_OBJF2_COPYING) || (st == SS_IX_CREATED && !(f & SS_OBJF_SEALING)),
      "entry %u: copying in state %u", e, st);
    V(!(o->flags2 & SS_OBJF2_STAGING) ||
          (st == SS_IX_CREATED && kind == SS_SEG_ARENA &&
           !(f & SS_OBJF_SEALING) && !(o->flags2 & SS_OBJF2_COPYING)),
      "entry %u: staged copy in state %u kind %u flags %x", e, st, kind, f);
    V(!(f & SS_OBJF_SEALING) || (st == SS_IX_CREATED && kind == SS_SEG_OBJECT),
      "entry %u: sealing in state %u kind %u", e, st, kind);
    t->sealing += (f & (SS_OBJF_SEALING | SS_OBJF_ORPHAN)) == SS_OBJF_SEALING;
    t->bound += (f & (SS_OBJF_BOUND | SS_OBJF_ORPHAN)) == SS_OBJF_BOUND &&
                (st == SS_IX_CREATED || st == SS_IX_SEALED || st == SS_IX_SPILLED);
    V(!(f & SS_OBJF_SPILLING) || st == SS_IX_SEALED || st == SS_IX_DELETED,
      "entry %u: spilling in state %u", e, st);
    V(!(f & SS_OBJF_RESTORING) || st == SS_IX_SPILLED || st == SS_IX_DELETED,
      "entry %u: restoring in state %u", e, st);
    t->spilling += !!(f & SS_OBJF_SPILLING);
    t->restoring += !!(f & SS_OBJF_RESTORING);

    bool trusted = o->flags2 & SS_OBJF2_TRUSTED;
    if (trusted) {
        t->trusted++;
        V(kind == SS_SEG_OBJECT && !nomem && o->fd_rw < 0 && o->disk == 0 &&
              !(f & (SS_OBJF_SEALING | SS_OBJF_SPILLING | SS_OBJF_RESTORING)) &&
              (st == SS_IX_CREATED || st == SS_IX_SEALED || st == SS_IX_DELETED),
          "entry %u: trusted in state %u kind %u (nomem %d fd_rw %d disk %u flags %x)", e, st,
          kind, nomem, o->fd_rw, o->disk, f);
    }
    bool lru = st == SS_IX_SEALED && o->refs == 0 && !(f & SS_OBJF_SPILLING) && !trusted;
    V(!!(f & SS_OBJF_ON_LRU) == lru, "entry %u: on the LRU %d, should be %d (state %u refs %u)",
      e, !!(f & SS_OBJF_ON_LRU), lru, st, o->refs);
    t->on_lru += lru;

    V((o->fd_rw >= 0) == (kind == SS_SEG_OBJECT && st == SS_IX_CREATED && !trusted),
      "entry %u: fd_rw %d in state %u kind %u", e, o->fd_rw, st, kind);
    V(!nomem || st == SS_IX_SPILLED || st == SS_IX_DELETED, "entry %u: nomem in state %u", e,
      st);
    V(o->disk <= s->disk.nlocs, "entry %u: disk %u of %u", e, o->disk, s->disk.nlocs);
    if (kind == SS_SEG_OBJECT && !nomem)
        V(o->fd_ro >= 0 && o->seg_size >= en->size,
          "entry %u: object without its fd (%d) or segment (%llu < %llu)", e, o->fd_ro,
          ULL(o->seg_size), ULL(en->size));
    else
        V(o->fd_ro < 0 && o->seg_size == 0, "entry %u: fd_ro %d seg_size %llu without a segment",
          e, o->fd_ro, ULL(o->seg_size));
    if (!nomem) {
        V((en->meta_seg != 0) == (SS_IX_META_SIZE(info) != 0), "entry %u: meta_seg %u size %u",
          e, en->meta_seg, SS_IX_META_SIZE(info));
        if (kind == SS_SEG_SMALL) {
            const ss__seg *g = ss__salloc_segment(s->mem.salloc, o->small_slot);
            V(en->size <= s->mem.small_max, "entry %u: small of %llu bytes", e, ULL(en->size));
            V(g && o->small_slot < s->tab.nsmalls && s->tab.smalls[o->small_slot].seg == g &&
                  en->seg_id == (SS_SEG_ID_SMALL | s->tab.smalls[o->small_slot].no),
              "entry %u: seg_id %llx does not name small slot %u", e, ULL(en->seg_id),
              o->small_slot);
        }
        if (kind == SS_SEG_ARENA) {
            ss__aloc loc = ss__obj_aloc(s, e);
            V(en->size > s->mem.small_max, "entry %u: arena object of %llu bytes", e,
              ULL(en->size));
            V(ss__arena_size_of(s->mem.arenas, &loc) == (int64_t)en->size &&
                  en->seg_id == (SS_SEG_ID_ARENA | ss__arena_serial(s->mem.arenas, loc.arena)),
              "entry %u: seg_id %llx off %llu is not its object in arena %u", e,
              ULL(en->seg_id), ULL(loc.off), loc.arena);
        }
    }
    return 0;
}

static int check_objects(const ss__store *s, tally *t)
{
    int rc;

    for (uint32_t e = 0; e < s->tab.ix.high; e++)
        if ((rc = check_entry(s, e, t)) < 0)
            return rc;

    uint64_t n = 0;
    for (uint32_t x = s->tab.free_head; x; x = ss__obj_at(s, x - 1)->next) {
        V(x <= s->tab.ix.high && n < s->tab.ix.high, "free list: entry %u (step %llu)", x - 1, ULL(n));
        V(!(ss__obj_at(s, x - 1)->flags & SS_OBJF_USED), "free list: entry %u is used", x - 1);
        n++;
    }
    V(n == t->free, "free list holds %llu of %llu free entries", ULL(n), ULL(t->free));

    n = 0;
    for (uint32_t x = s->tab.lru_head, prev = 0; x; prev = x, x = ss__obj_at(s, x - 1)->next) {
        V(x <= s->tab.ix.high && n < s->tab.ix.high, "LRU: entry %u (step %llu)", x - 1, ULL(n));
        const ss__obj *o = ss__obj_at(s, x - 1);
        V((o->flags & SS_OBJF_ON_LRU) && o->prev == prev, "LRU: entry %u flag %d prev %u != %u",
          x - 1, !!(o->flags & SS_OBJF_ON_LRU), o->prev, prev);
        V(o->next || s->tab.lru_tail == x, "LRU: ends at entry %u, tail is %u", x - 1,
          s->tab.lru_tail);
        n++;
    }
    V(n == t->on_lru && (s->tab.lru_head == 0) == (s->tab.lru_tail == 0),
      "LRU holds %llu of %llu entries that belong on it (head %u tail %u)", ULL(n),
      ULL(t->on_lru), s->tab.lru_head, s->tab.lru_tail);

    n = 0;
    for (uint32_t b = 0; b < s->tab.det_nbuckets; b++) {
        for (uint32_t x = s->tab.det_buckets[b], prev = 0; x;
             prev = x, x = ss__obj_at(s, x - 1)->next) {
            V(x <= s->tab.ix.high && n < s->tab.ix.high, "deleted chain %u: entry %u", b, x - 1);
            const ss__obj *o = ss__obj_at(s, x - 1);
            V(ss__ent_state(s, x - 1) == SS_IX_DELETED, "deleted chain %u: entry %u state %u", b,
              x - 1, ss__ent_state(s, x - 1));
            V(o->prev == prev && ss__obj_det_bucket(s, &ss__ent(s, x - 1)->id) == b,
              "deleted chain %u: entry %u prev %u != %u or wrong bucket", b, x - 1, o->prev,
              prev);
            n++;
        }
    }
    V(n == t->deleted, "deleted chains hold %llu of %llu deleted entries", ULL(n),
      ULL(t->deleted));

    /* every object waiting for a pin is on the list, once, with its
     * generation (the list may also name entries freed since: skipped) */
    n = 0;
    V(s->tab.npinwait <= s->tab.pinwait_cap, "pinwait %u > cap %u", s->tab.npinwait,
      s->tab.pinwait_cap);
    for (uint32_t i = 0; i < s->tab.npinwait; i++) {
        const ss__pinwait *w = &s->tab.pinwait[i];
        V(w->e < s->tab.ix.high, "pinwait %u: entry %u", i, w->e);
        if ((ss__obj_at(s, w->e)->flags2 & SS_OBJF2_PINWAIT) &&
            ss__ent(s, w->e)->generation == w->generation)
            n++;
    }
    V(n == t->pinwait, "pinwait names %llu of %llu objects waiting for a pin", ULL(n),
      ULL(t->pinwait));
    {
        uint32_t areas = 0;
        for (const ss__conn *c = s->conn.conns; c; c = c->next)
            areas += c->pin_map != NULL;
        V(areas == s->tab.npin_areas, "pin areas %u != %u", areas, s->tab.npin_areas);
    }

    V(s->tab.nobjects == t->chained && s->tab.ix.hashed == t->chained,
      "nobjects %llu, index hashed %u, chained entries %llu", ULL(s->tab.nobjects), s->tab.ix.hashed,
      ULL(t->chained));
    V(s->tab.nsealed == t->sealed, "nsealed %llu != %llu", ULL(s->tab.nsealed), ULL(t->sealed));
    V(s->tab.object_bytes == t->bytes, "object_bytes %llu != %llu", ULL(s->tab.object_bytes),
      ULL(t->bytes));
    V(s->disk.nspilled == t->spilled && s->disk.spilled_bytes == t->spilled_bytes,
      "nspilled %llu (%llu bytes) != %llu (%llu bytes)", ULL(s->disk.nspilled),
      ULL(s->disk.spilled_bytes), ULL(t->spilled), ULL(t->spilled_bytes));
    return 0;
}

/* ----------------------------------------------------------------- parking */

static int check_get(const ss__store *s, const ss__conn *c, const ss__parked *pk, tally *t)
{
    uint32_t missing = 0, nrestore = 0;

    V(pk->fdwait == pk->ready, "conn %u GET %u: fdwait %d ready %d", c->id, pk->req_id,
      pk->fdwait, pk->ready);
    t->fdwait += pk->fdwait;
    if (!pk->w)
        return 0;
    for (uint32_t i = 0; i < pk->n; i++) {
        const ss__waitnode *w = &pk->w[i];
        V(w->linked && w->pk == pk && w->kind <= SS_WN_HOLD,
          "conn %u GET %u node %u: linked %d kind %u", c->id, pk->req_id, i, w->linked,
          w->kind);
        missing += w->kind != SS_WN_HOLD;
        nrestore += w->kind == SS_WN_RESTORE;
    }
    V(pk->missing == missing && pk->nrestore == nrestore,
      "conn %u GET %u: missing %u/%u nrestore %u/%u", c->id, pk->req_id, pk->missing, missing,
      pk->nrestore, nrestore);
    t->nodes += pk->n;
    return 0;
}

static int check_delete(const ss__store *s, const ss__conn *c, const ss__parked *pk, tally *t)
{
    V(pk->spop && pk->spop <= s->disk.ops_cap, "conn %u DELETE %u: op %u of %u", c->id,
      pk->req_id, pk->spop, s->disk.ops_cap);
    const ss__spop *op = ss__disk_op(s, pk->spop - 1);
    V(op->kind == SS_SPOP_SPILL || op->kind == SS_SPOP_DELETE,
      "conn %u DELETE %u: waits on op %u of kind %u", c->id, pk->req_id, pk->spop - 1, op->kind);
    t->deletes++;
    return 0;
}

static int check_parked(const ss__store *s, const ss__conn *c, tally *t)
{
    uint64_t n = 0, bytes = 0, fdwait = t->fdwait;
    int rc;

    for (const ss__parked *pk = c->parked, *prev = NULL; pk; prev = pk, pk = pk->cnext) {
        V(n < s->park.nparked && pk->c == c && pk->cprev == prev,
          "conn %u: parked list broken at request %u", c->id, pk->req_id);
        V(pk->bytes >= sizeof(*pk), "conn %u request %u: charged %llu bytes", c->id, pk->req_id,
          ULL(pk->bytes));
        bool heaped = pk->heap_pos != UINT32_MAX;
        V(!heaped || (pk->heap_pos < s->park.heap_len && s->park.heap[pk->heap_pos] == pk),
          "conn %u request %u: heap position %u of %u", c->id, pk->req_id, pk->heap_pos,
          s->park.heap_len);
        V(heaped == (pk->deadline_ns != UINT64_MAX && !pk->fdwait),
          "conn %u request %u: in the heap %d, deadline %llu fdwait %d", c->id, pk->req_id,
          heaped, ULL(pk->deadline_ns), pk->fdwait);
        t->in_heap += heaped;
        switch (pk->type) {
        case SS_PK_GET:
            rc = check_get(s, c, pk, t);
            break;
        case SS_PK_CREATE:
        case SS_PK_PUT:
            V(pk->msg && !pk->fdwait, "conn %u create %u: no message", c->id, pk->req_id);
            t->creates++;
            t->need += pk->need;
            rc = 0;
            break;
        case SS_PK_DELETE:
            rc = check_delete(s, c, pk, t);
            break;
        default:
            V(0, "conn %u request %u: type %d", c->id, pk->req_id, pk->type);
        }
        if (rc < 0)
            return rc;
        n++;
        bytes += pk->bytes;
    }
    V(n == c->nparked && bytes == c->parked_bytes,
      "conn %u: nparked %u (%llu bytes), its list %llu (%llu bytes)", c->id, c->nparked,
      ULL(c->parked_bytes), ULL(n), ULL(bytes));
    V(t->fdwait - fdwait == c->nfdwait, "conn %u: nfdwait %u, %llu wait", c->id, c->nfdwait,
      ULL(t->fdwait - fdwait));
    t->parked += n;
    t->parked_bytes += bytes;
    return 0;
}

static int check_queues(const ss__store *s, tally *t)
{
    uint64_t n = 0;

    V(s->park.heap_len <= s->park.heap_cap, "heap: %u of %u", s->park.heap_len, s->park.heap_cap);
    for (uint32_t i = 0; i < s->park.heap_len; i++) {
        V(s->park.heap[i]->heap_pos == i, "heap[%u] says position %u", i, s->park.heap[i]->heap_pos);
        V(i == 0 || s->park.heap[(i - 1) / 2]->deadline_ns <= s->park.heap[i]->deadline_ns,
          "heap[%u]: deadline before its parent's", i);
    }
    V(s->park.heap_len == t->in_heap, "heap holds %u of %llu requests with deadlines", s->park.heap_len,
      ULL(t->in_heap));

    for (const ss__parked *pk = s->park.cq_head, *prev = NULL; pk; prev = pk, pk = pk->qnext) {
        V(n < t->creates && pk->qprev == prev &&
              (pk->type == SS_PK_CREATE || pk->type == SS_PK_PUT),
          "create FIFO broken at request %u (type %d)", pk->req_id, pk->type);
        V(pk->qnext || s->park.cq_tail == pk, "create FIFO: tail");
        n++;
    }
    V(n == t->creates && (!s->park.cq_head) == (!s->park.cq_tail), "create FIFO holds %llu of %llu",
      ULL(n), ULL(t->creates));

    n = 0;
    for (const ss__parked *pk = s->park.fdw_head, *prev = NULL; pk; prev = pk, pk = pk->qnext) {
        V(n < t->fdwait && pk->qprev == prev && pk->fdwait && pk->type == SS_PK_GET,
          "fd-budget FIFO broken at request %u", pk->req_id);
        V(pk->qnext || s->park.fdw_tail == pk, "fd-budget FIFO: tail");
        n++;
    }
    V(n == t->fdwait && (!s->park.fdw_head) == (!s->park.fdw_tail), "fd-budget FIFO holds %llu of %llu",
      ULL(n), ULL(t->fdwait));

    n = 0;
    for (uint32_t b = 0; b < s->park.wait_nbuckets; b++) {
        for (const ss__waitnode *w = s->park.wait_buckets[b], *prev = NULL; w;
             prev = w, w = w->next) {
            V(n < t->nodes && w->linked && w->prev == prev && ss__park_wait_bucket(s, &w->id) == b,
              "waiter hash bucket %u: node broken", b);
            const ss__parked *pk = w->pk;
            V(pk && pk->type == SS_PK_GET && pk->w && w >= pk->w && w < pk->w + pk->n,
              "waiter hash bucket %u: node of no parked GET", b);
            n++;
        }
    }
    V(n == t->nodes, "waiter hash holds %llu of %llu nodes", ULL(n), ULL(t->nodes));

    V(s->park.nparked == t->parked && s->park.parked_bytes == t->parked_bytes,
      "nparked %llu (%llu bytes) != %llu (%llu bytes)", ULL(s->park.nparked), ULL(s->park.parked_bytes),
      ULL(t->parked), ULL(t->parked_bytes));
    return 0;
}

/* ----------------------------------------------------------------- clients */

static int check_refs(const ss__store *s, const ss__conn *c, tally *t)
{
    uint32_t used = 0;

    for (uint32_t i = 0; i < c->ref_cap; i++) {
        const ss__ref *r = &c->refs[i];
        if (!r->key)
            continue;
        uint32_t e = r->key - 1;
        V(e < s->tab.ix.high && (ss__obj_at(s, e)->flags & SS_OBJF_USED),
          "conn %u: a reference on entry %u, which is not in use", c->id, e);
        V(SS_REF_COUNT(r->refs) > 0 && ss__ref_find(c, e) == r,
          "conn %u: reference on entry %u: count %u, or its probe chain is broken", c->id, e,
          SS_REF_COUNT(r->refs));
        if (t->refs)
            t->refs[e] += SS_REF_COUNT(r->refs);
        used++;
    }
    V(used == c->ref_used, "conn %u: ref_used %u, %u in the table", c->id, c->ref_used, used);
    return 0;
}

static int check_conn(const ss__store *s, const ss__conn *c, tally *t, uint64_t *seals)
{
    uint64_t unread = 0, n = 0;
    int rc;

    V(c->id && !c->dead && !c->broken, "conn %u: dead %d broken %d at rest", c->id, c->dead,
      c->broken);
    V(c->mark_len <= c->mark_cap, "conn %u: %u marks in %u", c->id, c->mark_len, c->mark_cap);
    for (uint32_t i = 0; i < c->mark_len; i++)
        unread += c->marks[(c->mark_head + i) % c->mark_cap].nfds;
    V(unread == c->fd_unread, "conn %u: fd_unread %u, marks %llu", c->id, c->fd_unread,
      ULL(unread));
    for (const ss__outmsg *m = c->out_head; m; m = m->next) {
        V(n < c->out_count && (m->next || c->out_tail == m), "conn %u: outbox broken", c->id);
        n++;
    }
    V(n == c->out_count, "conn %u: out_count %u, outbox %llu", c->id, c->out_count, ULL(n));
    n = 0;
    for (const ss__sealjob *j = c->seal_queue; j; j = j->next) {
        V(j->c == c && j->e < s->tab.ix.high && (ss__obj_at(s, j->e)->flags & SS_OBJF_SEALING) &&
              ss__ent(s, j->e)->generation == j->generation,
          "conn %u: queued seal of entry %u not sealing", c->id, j->e);
        V(j->next || c->seal_tail == j, "conn %u: seal queue tail", c->id);
        n++;
    }
    *seals += n + c->seal_busy;
    V(c->nbound <= c->bound_cap, "conn %u: %u bound pairs in %u", c->id, c->nbound,
      c->bound_cap);
    for (uint32_t i = 0; i < c->nbound; i++) {
        ss__bound b = c->bound[i];
        V(b.e < s->tab.ix.high, "conn %u: bound pair names entry %u past the table", c->id, b.e);
        uint32_t st = ss__ent_state(s, b.e);
        if (ss__ent(s, b.e)->generation != b.generation ||
            (st != SS_IX_CREATED && st != SS_IX_SEALED && st != SS_IX_SPILLED))
            continue; /* deleted since */
        V(ss__obj_at(s, b.e)->flags & SS_OBJF_BOUND, "conn %u: bound entry %u is not bound",
          c->id, b.e);
        t->bound_pairs++;
    }
    n = 0;
    uint64_t abytes = 0, busy = 0;
    for (uint32_t i = 0; i < c->nstages; i++) {
        const ss__stage *g = &c->stages[i];
        V(!g->given, "conn %u: area %u given away while the connection lives", c->id, i);
        abytes += g->seg.size;
        busy += g->busy;
        if (!g->held)
            continue;
        uint32_t hst = g->he < s->tab.ix.high ? ss__ent_state(s, g->he) : SS_IX_FREE;
        V(g->he < s->tab.ix.high && ss__ent(s, g->he)->generation == g->hgen &&
              (ss__obj_at(s, g->he)->flags2 & SS_OBJF2_TRUSTED) &&
              ss__obj_at(s, g->he)->small_slot == c->id &&
              ss__obj_at(s, g->he)->seg_size == g->seg.size,
          "conn %u: area %u holds entry %u, which is not its trusted object", c->id, i, g->he);
        /* the kernel holds every reader read-only once it is published */
        V(hst == SS_IX_CREATED || (g->fsealed && g->filled),
          "conn %u: area %u holds entry %u in state %u without its write seal", c->id, i, g->he,
          hst);
        V(!g->busy || (g->e == g->he && g->generation == g->hgen),
          "conn %u: area %u holds entry %u but is lent for %u", c->id, i, g->he, g->e);
        for (uint32_t j = 0; j < i; j++)
            V(!c->stages[j].held || c->stages[j].he != g->he,
              "conn %u: areas %u and %u both hold entry %u", c->id, j, i, g->he);
        n++;
    }
    V(n == c->nstage_held && busy == c->nstage_busy && abytes == c->stage_bytes,
      "conn %u: %u areas hold objects (%llu found), %u lent (%llu), %llu bytes (%llu)", c->id,
      c->nstage_held, ULL(n), c->nstage_busy, ULL(busy), ULL(c->stage_bytes), ULL(abytes));
    t->held += n;
    if ((rc = check_refs(s, c, t)) < 0)
        return rc;
    return check_parked(s, c, t);
}

static int check_conns(const ss__store *s, tally *t)
{
    uint64_t n = 0, subs = 0, retry = 0, unread = 0, hq = 0, fdt = 0, seals = 0;
    int rc;

    for (const ss__conn *c = s->conn.conns, *prev = NULL; c; prev = c, c = c->next) {
        V(n < s->conn.nclients && c->prev == prev, "conns list broken at conn %u", c->id);
        if ((rc = check_conn(s, c, t, &seals)) < 0)
            return rc;
        n++;
        subs += c->subscriber;
        retry += c->out_retry;
        unread += c->fd_unread;
        hq += c->hello_deadline != 0;
        fdt += c->mark_len > 0;
    }
    V(n == s->conn.nclients && subs == s->conn.nsubscribers && retry == s->fdb.nout_retry,
      "nclients %llu/%llu nsubscribers %u/%llu nout_retry %u/%llu", ULL(s->conn.nclients), ULL(n),
      s->conn.nsubscribers, ULL(subs), s->fdb.nout_retry, ULL(retry));
    V(seals == t->sealing, "%llu objects sealing, clients have %llu seals with the worker or "
      "queued", ULL(t->sealing), ULL(seals));
    V(t->bound == t->bound_pairs, "%llu creator-bound objects, their creators name %llu",
      ULL(t->bound), ULL(t->bound_pairs));
    V(t->trusted == t->held, "%llu trusted objects, their creators' areas hold %llu",
      ULL(t->trusted), ULL(t->held));

    n = 0;
    for (const ss__conn *c = s->hs.hq_head, *prev = NULL; c; prev = c, c = c->hq_next) {
        V(n < hq && c->hq_prev == prev && c->hello_deadline && !c->hello,
          "handshake list broken at conn %u", c->id);
        V(c->hq_next || s->hs.hq_tail == c, "handshake list: tail");
        n++;
    }
    V(n == hq && hq == s->hs.nhello_pending, "handshake list %llu, %llu waiting, nhello_pending %u",
      ULL(n), ULL(hq), s->hs.nhello_pending);

    n = 0;
    for (const ss__conn *c = s->fdb.fdt_head, *prev = NULL; c; prev = c, c = c->fdt_next) {
        V(n < fdt && c->fdt_prev == prev && c->mark_len, "unread-fds list broken at conn %u",
          c->id);
        V(c->fdt_next || s->fdb.fdt_tail == c, "unread-fds list: tail");
        n++;
    }
    V(n == fdt, "unread-fds list holds %llu of %llu", ULL(n), ULL(fdt));
    for (const ss__linger *l = s->fdb.lingers; l; l = l->next)
        unread += l->fd_unread;
    V(unread == s->fdb.fds_unread, "fds_unread %llu, connections and lingers %llu",
      ULL(s->fdb.fds_unread), ULL(unread));

    if (t->refs)
        for (uint32_t e = 0; e < s->tab.ix.high; e++)
            V(t->refs[e] == ss__obj_at(s, e)->refs, "entry %u: refs %u, clients hold %u", e,
              ss__obj_at(s, e)->refs, t->refs[e]);
    return 0;
}

/* -------------------------------------------------------------- spill ops */

static int check_ops(const ss__store *s, tally *t)
{
    uint64_t busy = 0, spills = 0, restores = 0, deletes = 0, waiters = 0, n = 0;

    for (uint32_t i = 0; i < s->disk.ops_cap; i++) {
        const ss__spop *op = ss__disk_op(s, i);
        if (op->kind == SS_SPOP_FREE)
            continue;
        busy++;
        V(op->kind <= SS_SPOP_DELETE, "op %u: kind %u", i, op->kind);
        if (op->kind == SS_SPOP_SPILL || op->kind == SS_SPOP_RESTORE) {
            unsigned flag = op->kind == SS_SPOP_SPILL ? SS_OBJF_SPILLING : SS_OBJF_RESTORING;
            V(op->e < s->tab.ix.high && (ss__obj_at(s, op->e)->flags & flag) &&
                  ss__ent(s, op->e)->generation == op->generation,
              "op %u (kind %u): entry %u lacks its flag", i, op->kind, op->e);
        }
        spills += op->kind == SS_SPOP_SPILL;
        restores += op->kind == SS_SPOP_RESTORE;
        deletes += op->kind == SS_SPOP_DELETE;
        for (const ss__parked *pk = op->pk, *prev = NULL; pk; prev = pk, pk = pk->qnext) {
            V(waiters < t->deletes && pk->type == SS_PK_DELETE && pk->spop == i + 1 &&
                  pk->qprev == prev,
              "op %u: its DELETE waiters list is broken", i);
            waiters++;
        }
    }
    V(busy == s->disk.ops_busy, "ops_busy %u, %llu ops in use", s->disk.ops_busy, ULL(busy));
    for (uint32_t x = s->disk.ops_free; x; x = ss__disk_op(s, x - 1)->next) {
        V(x <= s->disk.ops_cap && n < s->disk.ops_cap && ss__disk_op(s, x - 1)->kind == SS_SPOP_FREE,
          "op free list broken at %u", x - 1);
        n++;
    }
    V(n + busy == s->disk.ops_cap, "op free list %llu + %llu in use != %u", ULL(n), ULL(busy),
      s->disk.ops_cap);
    V(spills == s->disk.nspilling && spills == t->spilling,
      "nspilling %u, %llu spill ops, %llu objects spilling", s->disk.nspilling, ULL(spills),
      ULL(t->spilling));
    V(restores == t->restoring, "%llu restore ops, %llu objects restoring", ULL(restores),
      ULL(t->restoring));
    V(deletes == s->disk.nremovals, "nremovals %u, %llu delete ops", s->disk.nremovals, ULL(deletes));
    V(waiters == t->deletes, "%llu parked DELETEs, ops list %llu", ULL(t->deletes),
      ULL(waiters));

    n = 0;
    uint64_t need = t->need;
    for (uint32_t x = s->disk.rq_head; x; x = ss__disk_op(s, x - 1)->next) {
        V(x <= s->disk.ops_cap && n < restores, "restore queue broken at op %u", x - 1);
        const ss__spop *op = ss__disk_op(s, x - 1);
        V(op->kind == SS_SPOP_RESTORE && op->rstate == SS_RS_WAITMEM,
          "restore queue: op %u kind %u state %u", x - 1, op->kind, op->rstate);
        V(op->next || s->disk.rq_tail == x, "restore queue: tail");
        need += op->bytes;
        n++;
    }
    V(s->park.parked_need == need, "parked_need %llu, creates and restores lack %llu",
      ULL(s->park.parked_need), ULL(need));
    return 0;
}

/* ------------------------------------------------------------------ entry */

int ss__store_validate(const ss__store *s)
{
    tally t;
    int rc;

    if (!s)
        return -EINVAL;
    /* a store whose open failed half-way has nothing to check */
    if (!s->tab.objs || !s->tab.det_buckets || !s->park.wait_buckets || !s->tab.ix.chunks)
        return 0;
    memset(&t, 0, sizeof(t));
    /* without this memory the per-entry equation is skipped, not failed */
    t.refs = s->tab.ix.high ? calloc(s->tab.ix.high, sizeof(*t.refs)) : NULL;
    if ((rc = check_objects(s, &t)) < 0 || (rc = check_conns(s, &t)) < 0 ||
        (rc = check_queues(s, &t)) < 0 || (rc = check_ops(s, &t)) < 0)
        goto out;
    rc = 0;
out:
    free(t.refs);
    return rc;
}
