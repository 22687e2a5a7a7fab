/* SPDX-License-Identifier: MIT */
/*
 * Write-once arenas (arena.h has the contract and the design choice).
 *
 * Records, all in the store's private heap:
 *   aarena  one per arena: its segment, its extents in address order
 *           (regular arenas), the extent starting at each grain, a window
 *           count per page of the store's mapping;
 *   aext    one per extent, free or used: address neighbours (prev/next),
 *           bin neighbours (free extents only), start and length in grains,
 *           the requested size of a used one;
 *   anode   per node key: the bins of free extents, the idle regular arena
 *           (spare) and the idle dedicated arena (big_spare).
 *
 * Who writes what: every function runs on the caller's one thread (the
 * store's loop); nothing here is shared with other threads, except that a
 * worker may copy into an object between write_open and write_close (the
 * loop keeps the object alive and its pages writable meanwhile).
 */
#include "arena.h"
#include "numa.h"
#include "options.h"

#include <stdlib.h>
#include <string.h>

#define GRAIN ((uint64_t)SS_ARENA_GRAIN)
#define ARENA_MAX (64 * SS_GiB)     /* 16 Mi grains: ids fit uint32 with room */
#define OBJECT_MAX (1ull << 40)     /* as segments: 1 TiB */
#define NBINS 256
#define BIN_LINEAR 16               /* bins 0..15: exact grain counts */
#define BIN_SCAN 16                 /* best fit looks at most this far */
#define NODE_KEYS (SS_MAX_NODES + 2)
#define WIN_MAX UINT16_MAX

/*
 * Invariants (ss__arena_validate, equation by equation):
 *
 * regular arena r (ngr = seg.size / GRAIN grains):
 *   its extents, walked by next from r->first, tile [0, ngr): the first
 *   starts at 0, each starts where the previous ends, the last ends at ngr,
 *   and prev links mirror next links
 *   at[g] == e  for every extent e starting at grain g; at[g] == NULL else
 *   no two address neighbours are both free (free extents coalesce)
 *   used e: len == ceil(req / GRAIN), min_size <= req <= dedicated_min
 *   free e: on the list of bin_floor(len) of r's node; req == 0
 *   used_grains == sum(len of used extents);  nused == #used extents
 *   nused == 0  <=> r == spare of its node
 * dedicated arena d: one used extent or none (idle)
 *   used: start 0, dedicated_min < req <= seg.size, at == NULL
 *   idle (no extent) <=> d == big_spare of its node
 * windows: for every page u of an arena, win[u] == sum of wopen over the
 *   used extents overlapping u;  wopen == 0 on free extents
 * bins: bit b of the node's map set <=> bin b non-empty; every entry is a
 *   free extent of a regular arena of that node with bin_floor(len) == b
 * allocator:
 *   arenas == #ids in use; arena_bytes == charged == sum(seg.size)
 *   live_objects == allocs - frees == #used extents
 *   live_bytes == sum(req); used_bytes == sum(len * GRAIN) over regular
 *   used extents + sum(seg.size) of live dedicated arenas
 *   free_extents == #free extents; windows == sum(wopen)
 */
struct aarena;

typedef struct aext {
    struct aext *prev, *next;   /* address order in the arena */
    struct aext *fprev, *fnext; /* bin list (free extents) */
    struct aarena *ar;
    uint32_t start, len;        /* grains */
    uint64_t req;               /* requested bytes; 0 = free */
    uint16_t bin;               /* free: its bin */
    uint16_t wopen;             /* windows open on this object */
} aext;

typedef struct aarena {
    ss__seg seg;
    uint64_t serial;
    uint32_t id;
    int key;                    /* node key */
    bool dedicated;
    uint32_t ngr;               /* regular: grains */
    uint32_t nused;             /* used extents */
    uint64_t used_grains;
    aext *first;                /* regular: lowest extent; dedicated: the object or NULL */
    aext **at;                  /* regular: extent starting at each grain */
    uint32_t unit;              /* window unit: max(GRAIN, page) */
    uint32_t nunits;
    uint16_t *win;              /* open windows per unit */
    uint8_t *wr;                /* 1: the unit is writable in the store's
                                   mapping now (open, or lingering) */
    bool wr_stuck;              /* an mprotect back to PROT_READ failed
                                   (ENOMEM splitting a VMA): units may be
                                   writable with no record until the arena goes */
} aarena;

typedef struct anode {
    int node;
    aext *bins[NBINS];
    uint64_t free_grains;       /* sum of the lengths of the extents in bins */
    uint64_t map[NBINS / 64];
    aarena *spare;              /* idle regular arena */
    aarena *big_spare;          /* idle dedicated arena */
} anode;

/* A closed window of a small object whose units stay writable until due
 * (lingering windows, below). */
typedef struct alinger {
    aarena *ar;
    uint32_t u0, u1;
    uint64_t due;
} alinger;

struct ss__arenas {
    ss__arena_params p;
    alinger linger[SS_ARENA_LINGER_SLOTS]; /* in due order */
    uint32_t nlinger;
    anode *nodes[NODE_KEYS];
    aarena **ars;               /* by id; NULL = free id */
    uint32_t nslots;
    uint64_t next_serial;
    uint64_t charged;
    ss__arena_stats st;
};

static void linger_forget(ss__arenas *a, const aarena *r);

/* ----------------------------------------------------------------- bins */
/* Bins 0..15 hold exactly that many grains; above, 8 bins per power of two:
 * bin(k, s) holds [(8 + s) << (k - 3), (9 + s) << (k - 3)), k >= 4. */
static unsigned bin_floor(uint64_t len)
{
    if (len < BIN_LINEAR)
        return (unsigned)len;
    unsigned k = 63u - (unsigned)__builtin_clzll(len);
    return BIN_LINEAR + (k - 4) * 8 + (unsigned)((len >> (k - 3)) & 7);
}

static void bin_push(anode *n, aext *e)
{
    unsigned b = bin_floor(e->len);

    e->bin = (uint16_t)b;
    e->fprev = NULL;
    e->fnext = n->bins[b];
    if (e->fnext)
        e->fnext->fprev = e;
    n->bins[b] = e;
    n->map[b / 64] |= 1ull << (b % 64);
    n->free_grains += e->len;
}

static void bin_remove(anode *n, aext *e)
{
    unsigned b = e->bin;

    if (e->fprev)
        e->fprev->fnext = e->fnext;
    else
        n->bins[b] = e->fnext;
    if (e->fnext)
        e->fnext->fprev = e->fprev;
    e->fprev = e->fnext = NULL;
    if (!n->bins[b])
        n->map[b / 64] &= ~(1ull << (b % 64));
    n->free_grains -= e->len;
}

/* First non-empty bin >= b, or NBINS. */
static unsigned bin_next(const anode *n, unsigned b)
{
    for (unsigned w = b / 64; w < NBINS / 64; w++) {
        uint64_t m = n->map[w];
        if (w == b / 64)
            m &= ~0ull << (b % 64);
        if (m)
            return w * 64 + (unsigned)__builtin_ctzll(m);
    }
    return NBINS;
}

/* ---------------------------------------------------------------- nodes */
static int node_key(const ss__arenas *a, int node)
{
    if (node < SS_NODE_INTERLEAVE || node >= SS_MAX_NODES)
        return -EINVAL;
    if (!a->p.numa)
        node = SS_NODE_ANY;
    else if (node >= 0 && ss__numa_node_index(a->p.numa, node) < 0)
        return -EINVAL;
    return node + 2;
}

static anode *node_get(ss__arenas *a, int key)
{
    if (!a->nodes[key]) {
        a->nodes[key] = calloc(1, sizeof(anode));
        if (a->nodes[key])
            a->nodes[key]->node = key - 2;
    }
    return a->nodes[key];
}

/* --------------------------------------------------------------- arenas */
static void charge(const ss__arenas *a, int64_t delta)
{
    if (a->p.charge)
        (void)a->p.charge(a->p.charge_arg, delta);
}

static void arena_free_record(aarena *r)
{
    if (r->dedicated) {
        free(r->first);
    } else {
        for (aext *e = r->first, *nx; e; e = nx) {
            nx = e->next;
            free(e);
        }
    }
    free(r->at);
    free(r->win);
    free(r->wr);
    free(r);
}

/* Unlink (from bins and spares), unmap, close and uncharge arena r. */
static void arena_destroy(ss__arenas *a, aarena *r)
{
    anode *n = a->nodes[r->key];
    uint64_t size = r->seg.size;

    if (!r->dedicated && r->nused == 0) { /* idle: its one extent is in a bin */
        bin_remove(n, r->first);
        a->st.free_extents--;
    }
    if (n->spare == r)
        n->spare = NULL;
    if (n->big_spare == r)
        n->big_spare = NULL;
    linger_forget(a, r);
    if (!a->p.bookkeeping_only)
        ss__seg_destroy(&r->seg);
    charge(a, -(int64_t)size);
    a->charged -= size;
    a->st.arena_bytes -= size;
    a->st.arenas--;
    a->st.dedicated -= r->dedicated;
    a->st.destroyed++;
    a->ars[r->id] = NULL;
    arena_free_record(r);
}

/* The memory of a new arena of `size` bytes on node n: charged, created,
 * populated, sealed, read-only. On failure nothing is left and nothing
 * stays charged. */
static int arena_memory(const ss__arenas *a, int node, uint64_t size, ss__seg *seg)
{
    uint64_t charged = size;
    int rc;

    if (a->p.charge && (rc = a->p.charge(a->p.charge_arg, (int64_t)size)) < 0)
        return rc;
    if (a->p.bookkeeping_only) {
        uint8_t plan[SS_BACKING__COUNT];
        rc = ss__backing_plan(size, a->p.hugepages, SS_SEG_ARENA, plan);
        if (rc < 0)
            goto fail_uncharge;
        *seg = (ss__seg){ .fd = -1, .backing = plan[0], .kind = SS_SEG_ARENA,
                          .page_size = ss__backing_page_size(plan[0]),
                          .node = (int16_t)(a->p.numa ? node : SS_NODE_ANY) };
        seg->size = SS_ALIGN_UP(size, (uint64_t)seg->page_size);
    } else {
        /* a dedicated arena is made on the loop for the object about to be
         * copied in: on 4 KiB pages its pages fault in during that copy,
         * on the copy's thread, instead of being populated first (0.5 s
         * a GiB, every other client waiting); regular arenas are made
         * ahead and populated */
        ss__seg_params sp = { .size = size, .hugepages = a->p.hugepages,
                              .kind = SS_SEG_ARENA, .numa = a->p.numa, .node = node,
                              .lazy = size != a->p.arena_size };
        rc = ss__seg_create(seg, &sp);
        if (rc < 0)
            goto fail_uncharge;
    }
    /* the backing may round the size up to its page: charge what the
     * kernel really holds */
    if (seg->size > size && a->p.charge) {
        rc = a->p.charge(a->p.charge_arg, (int64_t)(seg->size - size));
        if (rc < 0)
            goto fail_destroy;
        charged = seg->size;
    }
    if (!a->p.bookkeeping_only) {
        rc = ss__seg_seal_small(seg);
        if (rc == 0) /* windows open it per object */
            rc = ss__sys_mprotect(seg->map, (size_t)seg->size, PROT_READ);
        if (rc < 0)
            goto fail_destroy;
    }
    return 0;

fail_destroy:
    if (!a->p.bookkeeping_only)
        ss__seg_destroy(seg);
fail_uncharge:
    charge(a, -(int64_t)charged);
    return rc;
}

/* Give made memory back: destroy it and uncharge it. */
static void memory_drop(const ss__arenas *a, ss__seg *seg)
{
    uint64_t size = seg->size;

    if (!a->p.bookkeeping_only)
        ss__seg_destroy(seg);
    else
        *seg = (ss__seg){ .fd = -1 };
    charge(a, -(int64_t)size);
}

/* Record made memory as an arena of node n (its charge moves in). On
 * -ENOMEM nothing changed and seg is still the caller's. */
static int arena_install(ss__arenas *a, anode *n, ss__seg *seg, bool dedicated, aarena **out)
{
    uint32_t id;

    for (id = 0; id < a->nslots && a->ars[id]; id++)
        ;
    if (id == a->nslots && SS_ARRAY_RESERVE(a->ars, a->nslots, id + 1, 8) < 0)
        return -ENOMEM;
    aarena *r = calloc(1, sizeof(*r));
    if (!r)
        return -ENOMEM;
    r->unit = seg->page_size > GRAIN ? seg->page_size : (uint32_t)GRAIN;
    r->nunits = (uint32_t)(seg->size / r->unit);
    r->win = calloc(r->nunits, sizeof(*r->win));
    r->wr = calloc(r->nunits, sizeof(*r->wr));
    r->dedicated = dedicated;
    if (!dedicated) {
        r->ngr = (uint32_t)(seg->size / GRAIN);
        r->at = calloc(r->ngr, sizeof(*r->at));
        r->first = calloc(1, sizeof(aext));
    }
    if (!r->win || !r->wr || (!dedicated && (!r->at || !r->first))) {
        arena_free_record(r);
        return -ENOMEM;
    }
    r->seg = *seg;
    if (!dedicated) {
        *r->first = (aext){ .ar = r, .start = 0, .len = r->ngr };
        r->at[0] = r->first;
        bin_push(n, r->first);
        a->st.free_extents++;
    }
    r->id = id;
    r->key = n->node + 2;
    r->serial = ++a->next_serial;
    a->ars[id] = r;
    a->charged += r->seg.size;
    a->st.arena_bytes += r->seg.size;
    a->st.arenas++;
    a->st.dedicated += dedicated;
    a->st.created++;
    *out = r;
    return 0;
}

/* A new arena on node n: regular (size == arena_size) or dedicated. A
 * refused charge drops the idle arenas and tries once more. */
static int arena_grow(ss__arenas *a, anode *n, uint64_t size, bool dedicated, aarena **out)
{
    ss__seg seg;
    int rc;

    rc = arena_memory(a, n->node, size, &seg);
    if (rc == -ENOSPC && ss__arena_trim(a) > 0)
        rc = arena_memory(a, n->node, size, &seg);
    if (rc < 0)
        return rc;
    rc = arena_install(a, n, &seg, dedicated, out);
    if (rc < 0)
        memory_drop(a, &seg);
    return rc;
}

/* ----------------------------------------------------------- public API */
static ss__arena_params params_defaulted(const ss__arena_params *p)
{
    ss__arena_params q = *p;

    if (!q.arena_size)
        q.arena_size = 64 * SS_MiB;
    if (!q.min_size)
        q.min_size = 64 * SS_KiB;
    if (!q.dedicated_min)
        q.dedicated_min = q.arena_size / 8;
    return q;
}

const char *ss__arena_params_why(const ss__arena_params *p)
{
    ss__arena_params q;

    if (!p)
        return "no parameters";
    q = params_defaulted(p);
    if (q.arena_size % (2 * SS_MiB))
        return "the arena size is not a multiple of 2 MiB";
    if (q.arena_size > ARENA_MAX)
        return "the arena size is over 64 GiB";
    if (q.hugepages == SS_HP_1G && q.arena_size % SS_GiB)
        return "the arena size is not a multiple of the 1 GiB hugepage the explicit 1G "
               "policy gives every arena";
    if (q.hugepages < SS_HP_AUTO || q.hugepages > SS_HP_OFF)
        return "unknown hugepage policy";
    if (q.min_size < GRAIN)
        return "the smallest arena object is below 4 KiB";
    if (q.dedicated_min < q.min_size || q.dedicated_min > q.arena_size)
        return "the dedicated-arena threshold is not between the smallest object and the "
               "arena size";
    return NULL;
}

int ss__arenas_create(ss__arenas **out, const ss__arena_params *p)
{
    if (!out || ss__arena_params_why(p))
        return -EINVAL;
    ss__arenas *a = calloc(1, sizeof(*a));
    if (!a)
        return -ENOMEM;
    a->p = params_defaulted(p);
    *out = a;
    return 0;
}

void ss__arenas_destroy(ss__arenas *a)
{
    if (!a)
        return;
    for (uint32_t id = 0; id < a->nslots; id++)
        if (a->ars[id])
            arena_destroy(a, a->ars[id]);
    for (int k = 0; k < NODE_KEYS; k++)
        free(a->nodes[k]);
    free(a->ars);
    free(a);
}

static void account_alloc(ss__arenas *a, uint64_t size, uint64_t used)
{
    a->st.live_objects++;
    a->st.live_bytes += size;
    a->st.used_bytes += used;
    a->st.allocs++;
}

/* A dedicated arena for size bytes: the node's idle one when size fills
 * it with at most 1/8 left over, else a new one (the idle one, which
 * does not fit, is returned first). */
static int alloc_dedicated(ss__arenas *a, anode *n, uint64_t size, ss__aloc *out)
{
    aarena *r = n->big_spare;
    int rc;

    if (r && !(size <= r->seg.size && r->seg.size - size <= r->seg.size / 8)) {
        arena_destroy(a, r);
        r = NULL;
    }
    aext *e = calloc(1, sizeof(*e));
    if (!e)
        return -ENOMEM;
    if (r) {
        n->big_spare = NULL;
        a->st.recycled++;
    } else if ((rc = arena_grow(a, n, size, true, &r)) < 0) {
        free(e);
        return rc;
    }
    *e = (aext){ .ar = r, .start = 0, .len = 0, .req = size };
    r->first = e;
    r->nused = 1;
    account_alloc(a, size, r->seg.size);
    out->arena = r->id;
    out->off = 0;
    out->ptr = r->seg.map;
    return 0;
}

/* Best fit among at most BIN_SCAN extents of bin b, or NULL. */
static aext *bin_best(const anode *n, unsigned b, uint32_t need)
{
    aext *best = NULL;
    int seen = 0;

    for (aext *e = n->bins[b]; e && seen < BIN_SCAN; e = e->fnext, seen++) {
        if (e->len >= need && (!best || e->len < best->len)) {
            best = e;
            if (e->len == need)
                break;
        }
    }
    return best;
}

int ss__arena_alloc(ss__arenas *a, uint64_t size, int node, ss__aloc *out)
{
    if (!a || !out || size < a->p.min_size || size > OBJECT_MAX)
        return -EINVAL;
    int key = node_key(a, node);
    if (key < 0)
        return key;
    anode *n = node_get(a, key);
    if (!n)
        return -ENOMEM;
    if (size > a->p.dedicated_min) {
        int rc = alloc_dedicated(a, n, size, out);
        SS_ASSERT_EXPENSIVE(ss__arena_validate(a) == 0);
        return rc;
    }

    /* best fit in the request's own bin; else any extent of a larger bin
     * fits (each holds more than bin_floor(need)'s upper end) */
    uint32_t need = (uint32_t)((size + GRAIN - 1) / GRAIN);
    aext *e = bin_best(n, bin_floor(need), need);
    if (!e) {
        unsigned b = bin_next(n, bin_floor(need) + 1);
        if (b < NBINS)
            e = n->bins[b];
    }
    aext *rest = NULL;
    if (!e || e->len > need) {
        rest = calloc(1, sizeof(*rest));
        if (!rest)
            return -ENOMEM;
    }
    if (!e) {
        aarena *r;
        int rc = arena_grow(a, n, a->p.arena_size, false, &r);
        if (rc < 0) {
            free(rest);
            return rc;
        }
        e = r->first;
    }
    aarena *r = e->ar;
    bin_remove(n, e);
    if (e->len > need) { /* the tail stays free */
        *rest = (aext){ .ar = r, .start = e->start + need, .len = e->len - need,
                        .prev = e, .next = e->next };
        if (e->next)
            e->next->prev = rest;
        e->next = rest;
        e->len = need;
        r->at[rest->start] = rest;
        bin_push(n, rest);
    } else {
        free(rest);
        a->st.free_extents--;
    }
    e->req = size;
    if (r->nused++ == 0 && n->spare == r)
        n->spare = NULL;
    r->used_grains += need;
    account_alloc(a, size, (uint64_t)need * GRAIN);

    out->arena = r->id;
    out->off = (uint64_t)e->start * GRAIN;
    out->ptr = r->seg.map ? (char *)r->seg.map + out->off : NULL;
    SS_ASSERT_EXPENSIVE(ss__arena_validate(a) == 0);
    return 0;
}

/* The used extent loc names exactly, or NULL. */
static aext *locate(const ss__arenas *a, const ss__aloc *loc)
{
    const aarena *r;
    aext *e;

    if (!loc || loc->arena >= a->nslots || !(r = a->ars[loc->arena]))
        return NULL;
    if (r->dedicated)
        e = loc->off == 0 ? r->first : NULL;
    else
        e = loc->off % GRAIN || loc->off / GRAIN >= r->ngr ? NULL : r->at[loc->off / GRAIN];
    if (!e || !e->req)
        return NULL;
    if (loc->ptr && (!r->seg.map || loc->ptr != (char *)r->seg.map + loc->off))
        return NULL;
    return e;
}

int64_t ss__arena_size_of(const ss__arenas *a, const ss__aloc *loc)
{
    const aext *e = a ? locate(a, loc) : NULL;

    return e ? (int64_t)e->req : -EINVAL;
}

/* Merge free extent b into its free address predecessor e (both out of
 * the bins). */
static void merge_next(ss__arenas *a, aext *e, aext *b)
{
    e->len += b->len;
    e->next = b->next;
    if (b->next)
        b->next->prev = e;
    e->ar->at[b->start] = NULL;
    a->st.free_extents--;
    free(b);
}

/* A regular arena's last object left: it becomes its node's spare, or goes
 * back to the kernel if the node keeps one already. */
static void arena_idle(ss__arenas *a, anode *n, aarena *r, bool dedicated)
{
    aarena **slot = dedicated ? &n->big_spare : &n->spare;

    if (!*slot)
        *slot = r;
    else
        arena_destroy(a, r);
}

int ss__arena_free(ss__arenas *a, const ss__aloc *loc)
{
    aext *e;

    if (!a || !(e = locate(a, loc))) {
        if (a && loc)
            ss__log_debug("arena free refused: arena %u off %llu is not live", loc->arena,
                          (unsigned long long)loc->off);
        return -EINVAL;
    }
    if (e->wopen)
        return -EBUSY;
    aarena *r = e->ar;
    anode *n = a->nodes[r->key];

    a->st.live_objects--;
    a->st.live_bytes -= e->req;
    a->st.frees++;
    r->nused--;
    if (r->dedicated) {
        a->st.used_bytes -= r->seg.size;
        free(e);
        r->first = NULL;
        arena_idle(a, n, r, true);
        SS_ASSERT_EXPENSIVE(ss__arena_validate(a) == 0);
        return 0;
    }
    a->st.used_bytes -= (uint64_t)e->len * GRAIN;
    r->used_grains -= e->len;
    e->req = 0;
    a->st.free_extents++;
    if (e->next && !e->next->req) {
        bin_remove(n, e->next);
        merge_next(a, e, e->next);
    }
    if (e->prev && !e->prev->req) {
        aext *p = e->prev;
        bin_remove(n, p);
        merge_next(a, p, e);
        e = p;
    }
    bin_push(n, e);
    if (r->nused == 0)
        arena_idle(a, n, r, false);
    SS_ASSERT_EXPENSIVE(ss__arena_validate(a) == 0);
    return 0;
}

/* ---------------------------------------------------------- write windows */

/*
 * The store's mapping of an arena is PROT_READ except for units that are
 * writable (wr): those of open windows (win > 0), and those of a small
 * object's window closed less than SS_ARENA_LINGER_NS ago (lingering: a
 * record in a->linger covers them). An open makes writable only the units
 * that are not, and a put that reuses the space of one deleted a moment
 * ago (the allocator hands freed space out again at once) finds its units
 * writable still: a stream of puts of up to SS_ARENA_LINGER_MAX bytes pays
 * no mprotect, where each one cost an interprocessor interrupt, tens of us
 * on a VM, when another thread of the process ran elsewhere. Larger
 * objects' windows close at once.
 *   win[u] > 0  =>  wr[u]
 *   wr[u] && win[u] == 0  =>  a linger record of r covers u, or r->wr_stuck
 * A record that expires (or is pushed out when all slots are taken, or
 * its arena goes) makes the idle writable units it covers read-only. A
 * record's due is set by the close that made it and never pushed back: a
 * close of the same units while it lingers adds nothing. So a unit shared
 * by several objects (a 2 MiB page) that puts keep writing becomes
 * read-only every 20 ms all the same, and no sealed object's pages stay
 * writable longer than 20 ms after the last window over them closed.
 */

/* mprotect the units [u0, u1) of r with win == 0 and wr == from to prot,
 * in runs, setting wr to !from. On an error the runs already changed are
 * changed back when `undo`. */
static int win_protect_idle(const ss__arenas *a, aarena *r, uint32_t u0, uint32_t u1, int prot,
                            bool from, bool undo)
{
    for (uint32_t u = u0; u < u1;) {
        if (r->win[u] || (bool)r->wr[u] != from) {
            u++;
            continue;
        }
        uint32_t v = u;
        while (v < u1 && !r->win[v] && (bool)r->wr[v] == from)
            v++;
        int rc = a->p.bookkeeping_only
                     ? 0
                     : ss__sys_mprotect((char *)r->seg.map + (uint64_t)u * r->unit,
                                        (size_t)(v - u) * r->unit, prot);
        if (rc < 0) {
            if (undo && u > u0 && win_protect_idle(a, r, u0, u, PROT_READ, !from, false) < 0)
                r->wr_stuck = true;
            return rc;
        }
        memset(r->wr + u, !from, v - u);
        u = v;
    }
    return 0;
}

/* The idle writable units [u0, u1) of r become read-only. On failure
 * (ENOMEM splitting a VMA) the rest stay writable until a later window
 * over them closes or the arena goes: logged, and the arena marked. */
static void protect_back(const ss__arenas *a, aarena *r, uint32_t u0, uint32_t u1)
{
    int rc = win_protect_idle(a, r, u0, u1, PROT_READ, true, false);

    if (rc < 0) {
        r->wr_stuck = true;
        ss__log_error("arena %u: cannot make units %u..%u read-only again: %s", r->id, u0, u1,
                      ss_strerror(rc));
    }
}

/* Linger record k expires: its idle writable units become read-only. */
static void linger_expire(ss__arenas *a, uint32_t k)
{
    alinger *l = &a->linger[k];

    protect_back(a, l->ar, l->u0, l->u1);
    memmove(l, l + 1, (a->nlinger - k - 1) * sizeof(*l));
    a->nlinger--;
}

/* The units [u0, u1) of r linger until now + SS_ARENA_LINGER_NS, unless a
 * record of the same units lingers already (its due stands); the oldest
 * expires first when every slot is taken. */
static void linger_add(ss__arenas *a, aarena *r, uint32_t u0, uint32_t u1, uint64_t now)
{
    for (uint32_t k = 0; k < a->nlinger; k++)
        if (a->linger[k].ar == r && a->linger[k].u0 == u0 && a->linger[k].u1 == u1)
            return;
    if (a->nlinger == SS_ARENA_LINGER_SLOTS)
        linger_expire(a, 0);
    a->linger[a->nlinger++] = (alinger){ r, u0, u1, now + SS_ARENA_LINGER_NS };
}

/* Arena r goes: its records go (its mapping goes with it). */
static void linger_forget(ss__arenas *a, const aarena *r)
{
    uint32_t j = 0;

    for (uint32_t k = 0; k < a->nlinger; k++)
        if (a->linger[k].ar != r)
            a->linger[j++] = a->linger[k];
    a->nlinger = j;
}

uint64_t ss__arena_linger_close(ss__arenas *a, uint64_t now, bool all)
{
    if (!a)
        return UINT64_MAX;
    while (a->nlinger && (all || a->linger[0].due <= now))
        linger_expire(a, 0);
    return a->nlinger ? a->linger[0].due : UINT64_MAX;
}

uint32_t ss__arena_lingering(const ss__arenas *a)
{
    return a ? a->nlinger : 0;
}

static void win_units(const aext *e, uint32_t *u0, uint32_t *u1)
{
    const aarena *r = e->ar;
    uint64_t off = (uint64_t)e->start * GRAIN;

    *u0 = (uint32_t)(off / r->unit);
    *u1 = (uint32_t)((off + e->req + r->unit - 1) / r->unit);
}

int ss__arena_write_open(ss__arenas *a, const ss__aloc *loc)
{
    aext *e = a ? locate(a, loc) : NULL;
    uint32_t u0, u1;
    int rc;

    if (!e)
        return -EINVAL;
    aarena *r = e->ar;
    win_units(e, &u0, &u1);
    if (e->wopen == WIN_MAX)
        return -EOVERFLOW;
    for (uint32_t u = u0; u < u1; u++)
        if (r->win[u] == WIN_MAX)
            return -EOVERFLOW;
    rc = win_protect_idle(a, r, u0, u1, PROT_READ | PROT_WRITE, false, true);
    if (rc < 0)
        return rc;
    for (uint32_t u = u0; u < u1; u++)
        r->win[u]++;
    if (e->wopen++ == 0)
        a->st.windows++;
    return 0;
}

int ss__arena_write_close(ss__arenas *a, const ss__aloc *loc)
{
    aext *e = a ? locate(a, loc) : NULL;
    uint32_t u0, u1;

    if (!e || !e->wopen)
        return -EINVAL;
    aarena *r = e->ar;
    win_units(e, &u0, &u1);
    for (uint32_t u = u0; u < u1; u++)
        r->win[u]--;
    if (--e->wopen == 0)
        a->st.windows--;
    if ((uint64_t)(u1 - u0) * r->unit <= SS_ARENA_LINGER_MAX) {
        linger_add(a, r, u0, u1, ss__now_ns());
        return 0;
    }
    protect_back(a, r, u0, u1);
    return 0;
}

/* ------------------------------------------------------ off-loop making */

int ss__arena_make(const ss__arenas *a, int node, ss__seg *out)
{
    int key = a && out ? node_key(a, node) : -EINVAL;

    if (key < 0)
        return key;
    return arena_memory(a, key - 2, a->p.arena_size, out);
}

bool ss__arena_wants(const ss__arenas *a, int node)
{
    int key = a ? node_key(a, node) : -EINVAL;

    if (key < 0)
        return false;
    const anode *n = a->nodes[key];
    /* no idle arena, and the ones in use are more than half full */
    return !n || (!n->spare && n->free_grains * SS_ARENA_GRAIN < a->p.arena_size / 2);
}

int ss__arena_adopt(ss__arenas *a, ss__seg *seg)
{
    int key;
    aarena *r;

    if (!a || !seg || seg->size != a->p.arena_size || seg->kind != SS_SEG_ARENA ||
        (a->p.bookkeeping_only ? seg->map != NULL : !seg->map))
        return -EINVAL;
    key = node_key(a, a->p.numa ? seg->node : SS_NODE_ANY);
    if (key < 0)
        return key;
    anode *n = node_get(a, key);
    if (!n)
        return -ENOMEM;
    if (n->spare)
        return -EEXIST;
    int rc = arena_install(a, n, seg, false, &r);
    if (rc < 0)
        return rc;
    n->spare = r;
    *seg = (ss__seg){ .fd = -1 };
    SS_ASSERT_EXPENSIVE(ss__arena_validate(a) == 0);
    return 0;
}

void ss__arena_unmake(const ss__arenas *a, ss__seg *seg)
{
    if (a && seg && (seg->size || seg->fd >= 0))
        memory_drop(a, seg);
}

/* ------------------------------------------------------------- queries */
const ss__seg *ss__arena_segment(const ss__arenas *a, uint32_t id)
{
    if (!a || id >= a->nslots || !a->ars[id])
        return NULL;
    return &a->ars[id]->seg;
}

uint32_t ss__arena_objects(const ss__arenas *a, uint32_t id)
{
    if (!a || id >= a->nslots || !a->ars[id])
        return 0;
    return a->ars[id]->nused;
}

uint64_t ss__arena_serial(const ss__arenas *a, uint32_t id)
{
    if (!a || id >= a->nslots || !a->ars[id])
        return 0;
    return a->ars[id]->serial;
}

uint64_t ss__arena_trim(ss__arenas *a)
{
    uint64_t bytes = 0;

    if (!a)
        return 0;
    for (int k = 0; k < NODE_KEYS; k++) {
        anode *n = a->nodes[k];
        if (!n)
            continue;
        if (n->spare) {
            bytes += n->spare->seg.size;
            arena_destroy(a, n->spare);
        }
        if (n->big_spare) {
            bytes += n->big_spare->seg.size;
            arena_destroy(a, n->big_spare);
        }
    }
    return bytes;
}

void ss__arena_stats_get(const ss__arenas *a, ss__arena_stats *out)
{
    memset(out, 0, sizeof(*out));
    if (!a)
        return;
    *out = a->st;
    for (int k = 0; k < NODE_KEYS; k++)
        if (a->nodes[k])
            out->idle_arenas += (a->nodes[k]->spare != NULL) + (a->nodes[k]->big_spare != NULL);
}

/* ------------------------------------------------------------- validate */
#define CHECK(cond, ...)                                                     \
    do {                                                                     \
        if (ss_unlikely(!(cond))) {                                          \
            ss__log_error("arena invariant broken: " __VA_ARGS__);           \
            ss__log_error("  (%s, %s:%d)", #cond, __FILE__, __LINE__);       \
            return -SS_E_CORRUPT;                                            \
        }                                                                    \
    } while (0)

typedef struct vsum {
    uint64_t arenas, dedicated, bytes, objects, live, used, free_extents, windows;
} vsum;

/* Is e on the list of bin b of node n? */
static bool in_bin(const anode *n, unsigned b, const aext *e)
{
    for (const aext *x = n->bins[b]; x; x = x->fnext)
        if (x == e)
            return true;
    return false;
}

/* The window counts of r's units against the open objects of r. */
static int validate_windows(const ss__arenas *a, const aarena *r)
{
    uint32_t *want = calloc(r->nunits ? r->nunits : 1, sizeof(*want));
    int rc = 0;

    if (!want)
        return -ENOMEM;
    /* writable units: open, or covered by a linger record */
    for (uint32_t u = 0; u < r->nunits && rc == 0; u++) {
        bool covered = r->win[u] > 0;

        for (uint32_t k = 0; k < a->nlinger && !covered; k++)
            covered = a->linger[k].ar == r && a->linger[k].u0 <= u && u < a->linger[k].u1;
        if ((r->win[u] && !r->wr[u]) || (r->wr[u] && !covered && !r->wr_stuck)) {
            ss__log_error("arena invariant broken: arena %u unit %u: %u windows, writable %d, "
                          "lingering %d", r->id, u, r->win[u], r->wr[u], covered);
            rc = -SS_E_CORRUPT;
        }
    }
    for (const aext *e = r->first; e; e = r->dedicated ? NULL : e->next) {
        uint32_t u0, u1;
        if (!e->req || !e->wopen)
            continue;
        win_units(e, &u0, &u1);
        for (uint32_t u = u0; u < u1 && u < r->nunits; u++)
            want[u] += e->wopen;
    }
    for (uint32_t u = 0; u < r->nunits; u++)
        if (want[u] != r->win[u]) {
            ss__log_error("arena invariant broken: arena %u unit %u: %u windows counted, "
                          "%u open", r->id, u, r->win[u], want[u]);
            rc = -SS_E_CORRUPT;
            break;
        }
    free(want);
    return rc;
}

static int validate_regular(const ss__arenas *a, const aarena *r, vsum *t)
{
    const anode *n = a->nodes[r->key];
    uint32_t pos = 0, nused = 0;
    uint64_t used_grains = 0;
    const aext *prev = NULL;

    CHECK(r->ngr == r->seg.size / GRAIN && r->seg.size == a->p.arena_size,
          "arena %u: %u grains, %llu bytes", r->id, r->ngr, (unsigned long long)r->seg.size);
    for (const aext *e = r->first; e; prev = e, e = e->next) {
        CHECK(e->ar == r && e->prev == prev, "arena %u: extent at %u links", r->id, e->start);
        CHECK(e->start == pos && e->len > 0 && e->len <= r->ngr - pos,
              "arena %u: extent at %u of %u grains, expected at %u", r->id, e->start, e->len,
              pos);
        CHECK(r->at[e->start] == e, "arena %u: grain %u does not point at its extent", r->id,
              e->start);
        for (uint32_t g = e->start + 1; g < e->start + e->len; g++)
            CHECK(!r->at[g], "arena %u: grain %u inside an extent points at one", r->id, g);
        if (e->req) {
            CHECK(e->len == (e->req + GRAIN - 1) / GRAIN && e->req >= a->p.min_size &&
                      e->req <= a->p.dedicated_min,
                  "arena %u: object at %u: %u grains for %llu bytes", r->id, e->start, e->len,
                  (unsigned long long)e->req);
            nused++;
            used_grains += e->len;
            t->objects++;
            t->live += e->req;
            t->used += (uint64_t)e->len * GRAIN;
            t->windows += e->wopen > 0;
        } else {
            CHECK(!prev || prev->req, "arena %u: free extents at %u and %u not merged", r->id,
                  prev ? prev->start : 0, e->start);
            CHECK(e->wopen == 0 && e->bin == bin_floor(e->len) && in_bin(n, e->bin, e),
                  "arena %u: free extent at %u (%u grains) not in bin %u", r->id, e->start,
                  e->len, bin_floor(e->len));
            t->free_extents++;
        }
        pos += e->len;
    }
    CHECK(pos == r->ngr, "arena %u: extents end at grain %u of %u", r->id, pos, r->ngr);
    CHECK(nused == r->nused && used_grains == r->used_grains,
          "arena %u: %u objects / %llu grains counted, %u / %llu recorded", r->id, nused,
          (unsigned long long)used_grains, r->nused, (unsigned long long)r->used_grains);
    CHECK((nused == 0) == (n->spare == r), "arena %u: empty %d but spare %d", r->id,
          nused == 0, n->spare == r);
    return 0;
}

static int validate_dedicated(const ss__arenas *a, const aarena *r, vsum *t)
{
    const anode *n = a->nodes[r->key];
    const aext *e = r->first;

    t->dedicated++;
    CHECK(!r->at && r->nused == (e != NULL), "dedicated arena %u: records", r->id);
    CHECK((e == NULL) == (n->big_spare == r), "dedicated arena %u: idle %d but spare %d",
          r->id, e == NULL, n->big_spare == r);
    if (!e)
        return 0;
    CHECK(e->ar == r && e->start == 0 && e->req > a->p.dedicated_min && e->req <= r->seg.size,
          "dedicated arena %u: object of %llu bytes in %llu", r->id,
          (unsigned long long)e->req, (unsigned long long)r->seg.size);
    t->objects++;
    t->live += e->req;
    t->used += r->seg.size;
    t->windows += e->wopen > 0;
    return 0;
}

/* Node k's bins: the map mirrors the lists; every entry a free extent of a
 * live regular arena of this node, in the right bin. Counts entries. */
static int validate_node(const ss__arenas *a, int k, uint64_t *entries)
{
    const anode *n = a->nodes[k];
    uint64_t free_grains = 0;

    CHECK(n->node == k - 2, "node key %d: node %d", k, n->node);
    for (unsigned b = 0; b < NBINS; b++) {
        CHECK(((n->map[b / 64] >> (b % 64)) & 1) == (n->bins[b] != NULL),
              "node key %d: bin %u map bit", k, b);
        for (const aext *e = n->bins[b], *p = NULL; e; p = e, e = e->fnext) {
            CHECK(e->fprev == p && !e->req && e->bin == b && bin_floor(e->len) == b,
                  "node key %d bin %u: entry", k, b);
            CHECK(!e->ar->dedicated && e->ar->key == k && a->ars[e->ar->id] == e->ar,
                  "node key %d bin %u: entry of a foreign arena", k, b);
            (*entries)++;
            free_grains += e->len;
        }
    }
    CHECK(free_grains == n->free_grains, "node key %d: %llu free grains counted, %llu in bins",
          k, (unsigned long long)n->free_grains, (unsigned long long)free_grains);
    CHECK(!n->spare || (!n->spare->dedicated && n->spare->key == k), "node key %d: spare", k);
    CHECK(!n->big_spare || (n->big_spare->dedicated && n->big_spare->key == k),
          "node key %d: big spare", k);
    return 0;
}

int ss__arena_validate(const ss__arenas *a)
{
    vsum t = { 0 };
    uint64_t entries = 0;
    int rc;

    if (!a)
        return -EINVAL;
    CHECK(a->nlinger <= SS_ARENA_LINGER_SLOTS, "linger records %u", a->nlinger);
    for (uint32_t k = 0; k < a->nlinger; k++) {
        const alinger *l = &a->linger[k];
        CHECK(l->ar && l->ar->id < a->nslots && a->ars[l->ar->id] == l->ar &&
                  l->u0 < l->u1 && l->u1 <= l->ar->nunits &&
                  (k == 0 || a->linger[k - 1].due <= l->due),
              "linger record %u", k);
    }
    for (uint32_t id = 0; id < a->nslots; id++) {
        const aarena *r = a->ars[id];
        if (!r)
            continue;
        CHECK(r->id == id && r->key >= 0 && r->key < NODE_KEYS && a->nodes[r->key],
              "arena %u: id %u key %d", id, r->id, r->key);
        CHECK(r->serial > 0 && r->serial <= a->next_serial, "arena %u: serial", id);
        CHECK(a->p.bookkeeping_only ? !r->seg.map : r->seg.map && r->seg.fd >= 0,
              "arena %u: map", id);
        CHECK(r->unit >= GRAIN && r->unit % GRAIN == 0 && r->nunits == r->seg.size / r->unit,
              "arena %u: window units", id);
        t.arenas++;
        t.bytes += r->seg.size;
        rc = r->dedicated ? validate_dedicated(a, r, &t) : validate_regular(a, r, &t);
        if (rc == 0)
            rc = validate_windows(a, r);
        if (rc < 0)
            return rc;
    }
    for (int k = 0; k < NODE_KEYS; k++)
        if (a->nodes[k] && (rc = validate_node(a, k, &entries)) < 0)
            return rc;
    const ss__arena_stats *st = &a->st;
    CHECK(entries == t.free_extents && st->free_extents == t.free_extents,
          "free extents: %llu in bins, %llu walked, %llu counted",
          (unsigned long long)entries, (unsigned long long)t.free_extents,
          (unsigned long long)st->free_extents);
    CHECK(st->arenas == t.arenas && st->dedicated == t.dedicated, "arenas %llu/%llu",
          (unsigned long long)st->arenas, (unsigned long long)t.arenas);
    CHECK(st->arena_bytes == t.bytes && a->charged == t.bytes,
          "arena_bytes %llu charged %llu walked %llu", (unsigned long long)st->arena_bytes,
          (unsigned long long)a->charged, (unsigned long long)t.bytes);
    CHECK(st->live_objects == t.objects && st->allocs - st->frees == t.objects,
          "live_objects %llu walked %llu", (unsigned long long)st->live_objects,
          (unsigned long long)t.objects);
    CHECK(st->live_bytes == t.live && st->used_bytes == t.used,
          "live/used bytes %llu/%llu walked %llu/%llu", (unsigned long long)st->live_bytes,
          (unsigned long long)st->used_bytes, (unsigned long long)t.live,
          (unsigned long long)t.used);
    CHECK(st->windows == t.windows, "windows %llu walked %llu",
          (unsigned long long)st->windows, (unsigned long long)t.windows);
    return 0;
}
