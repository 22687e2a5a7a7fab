/* SPDX-License-Identifier: MIT */
/*
 * The small allocator: small objects share segments.
 *
 * Who writes what. A SMALL segment is a memfd that the store maps read-write
 * exactly once (ss__seg_create keeps seg->map, MADV_DONTFORK) and then seals
 * with SHRINK|GROW|FUTURE_WRITE|SEAL. That mapping is the only way left to
 * write the segment, and whoever can write the store's memory (root, with
 * /proc/PID/mem, process_vm_writev or ptrace) can use it; so it is
 * PROT_READ at rest, and only the window units the store is writing are
 * PROT_READ|PROT_WRITE, for at most SS_SALLOC_WINDOW_NS (20 ms) per opening
 * (or while a restore holds them). A write from outside the windows faults
 * (/proc/PID/mem refuses to force a write into a read-only shared mapping),
 * and a stray write of the store's own faults instead of changing a sealed
 * object. The window list is a small array in open order: a put opens the
 * unit once, the puts after it within the window's time find it open, and
 * the loop's close pass shuts the expired ones, so a burst of puts pays two
 * mprotects per 64 KiB unit and window, not two per put (measured: a
 * page's mprotect pair costs about 4 us, an ss_put of 1 KiB about 4 us; see
 * alloc.h for why the window lasts 20 ms).
 * Readers hold O_RDONLY fds of the same
 * file and can read every byte of it, so nothing the allocator depends on is
 * ever stored in the segment: bitmaps, lists and sizes live in this file's
 * private heap. A reader learns only object bytes (which it may read anyway)
 * and can steer nothing; a bogus location sent back by a client is checked
 * against that private state and refused with -EINVAL, never asserted on.
 *
 * Layout. A segment is cut into SS_SLAB_PAGE (64 KiB) pages. A slab is a run
 * of pages serving one size class; the run length is chosen per class so a
 * slab holds at least 8 blocks with little tail waste (small classes: one
 * page; 64 KiB blocks: 8 pages). Each slab has a bitmap of used blocks,
 * scanned with ctz from a hint (at most 16 words for the 64-byte class),
 * so alloc and free are O(1)-ish apart from the rare slab or segment
 * creation, which is first fit over the node's segments with free pages.
 *
 * Freed blocks are not cleared: a reader that maps the segment can see a
 * deleted object's bytes until the block is reused, exactly as it could
 * while the object was live. Clearing on free is the store's call.
 *
 * Lists, per node key (the node the caller asked for, see node_key()):
 *   partial[cls]  slabs with 0 < used < nblocks (alloc takes the head);
 *   cached[cls]   at most one empty slab kept per class, so a class that
 *                 hovers around zero objects does not rebuild its slab on
 *                 every alloc/free pair;
 *   avail         segments with at least one free page;
 *   spare         at most one segment with no busy slab (kept so that a
 *                 workload oscillating around a segment boundary does not
 *                 create and destroy memfds; it may hold cached slabs).
 * A segment whose last busy slab empties while the node already has a
 * spare is destroyed and uncharged.
 *
 * Concurrency: none. The store calls every function from its one event-loop
 * thread, and an uncontended mutex lock/unlock per call would about double
 * the ~25 ns alloc+free pair; a caller that shares an allocator between threads must
 * serialise all calls (stats_get and validate included).
 */
#include "alloc.h"
#include "numa.h"
#include "options.h"

#include <stdlib.h>
#include <string.h>

/* ----------------------------------------------------------------- ASan */
#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#define SS_ALLOC_ASAN 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__) && !defined(SS_ALLOC_ASAN)
#define SS_ALLOC_ASAN 1
#endif
#ifdef SS_ALLOC_ASAN
#include <sanitizer/asan_interface.h>
#define ss_poison(p, n) ASAN_POISON_MEMORY_REGION((p), (n))
#define ss_unpoison(p, n) ASAN_UNPOISON_MEMORY_REGION((p), (n))
#else
#define ss_poison(p, n) ((void)(p), (void)(n))
#define ss_unpoison(p, n) ((void)(p), (void)(n))
#endif

/* ------------------------------------------------------------ constants */
/* Slab granule: small enough that a one-page slab of a 64-byte class is a
 * 16-word bitmap, large enough that a 4 MiB segment is one 64-bit page map. */
#define SS_SLAB_PAGE (64 * SS_KiB)
/* A slab should hold at least this many blocks, so the largest classes do
 * not degenerate to one block per slab (max_size <= segment/8). */
#define SS_SLAB_MIN_BLOCKS 8u
/* Classes: 64-byte steps up to 1 KiB (16 classes), then 8 per power of two
 * (worst case 12.5% rounding, ~4% on average for smooth size mixes). */
#define SS_CLS_LINEAR_MAX 1024u
#define SS_CLS_LINEAR 16
#define SS_CLS_PER_POW2 8
/* Requested sizes are kept as uint32_t per block. */
#define SS_SALLOC_SIZE_LIMIT UINT32_MAX
/* Segment sizes we accept: up to 64 GiB (page map of 1 Mi bits). */
#define SS_SEG_SIZE_LIMIT (64 * SS_GiB)
/* Node keys: SS_NODE_INTERLEAVE (-2), SS_NODE_ANY (-1), 0..SS_MAX_NODES-1. */
#define SS_NODE_KEYS (SS_MAX_NODES + 2)

enum { SLAB_PARTIAL, SLAB_FULL, SLAB_CACHED };

/* --------------------------------------------------------------- structs */
/*
 * Invariants (checked by ss__salloc_validate, equation by equation):
 *
 * slab s (class c, cs = class_size(c)):
 *   npages == cls_pages[c];  nblocks == npages * SS_SLAB_PAGE / cs >= 1
 *   off == first_page * SS_SLAB_PAGE
 *   popcount(bm) == used + (nwords * 64 - nblocks)  (bits past nblocks are 1)
 *   0 <= used <= nblocks
 *   for i < nblocks: bit i set <=> req[i] != 0, and then
 *                    class_of(req[i] - 1) == c   (req stores size + 1)
 *   live_bytes(s) == sum(req[i] - 1 over set bits)
 *   state == PARTIAL <=> s on partial[c] of its node <=> 0 < used < nblocks
 *   state == FULL    <=> used == nblocks (on no list)
 *   state == CACHED  <=> used == 0 <=> cached[c] of its node == s
 *   hint <= index of the first word with a free bit
 *
 * segment g:
 *   popcount(pagemap) == used_pages == sum(npages of slabs in g)
 *   page_slab[p] == s for p in [s.first_page, s.first_page + s.npages),
 *   page_slab[p] == NULL for pages whose bit is clear
 *   nslabs == #slabs in g;  busy_slabs == #slabs in g with used > 0
 *   g on avail of its node <=> used_pages < npages
 *   busy_slabs == 0 <=> g == spare of its node  (so <= 1 idle per node)
 *
 * allocator:
 *   segments == #segment ids in use;  nsegs_node[k] summed == segments
 *   segment_bytes == sum(g.seg.size) == charged
 *   live_objects == sum(used) == allocs - frees
 *   used_bytes == sum(used * class_size)
 *   live_bytes == sum over slabs of live_bytes(s)
 *   slabs == sum(nslabs);  slab_bytes == sum(npages) * SS_SLAB_PAGE
 *   empty_slabs == #CACHED slabs;  spare_segments == #spare
 */
struct sseg;

typedef struct sslab {
    struct sslab *prev, *next; /* partial list of (node, cls) */
    struct sseg *sg;
    uint64_t off;              /* byte offset of block 0 in the segment */
    uint64_t bsize;            /* class size */
    uint32_t first_page, npages;
    uint32_t cls, nblocks, used, hint, nwords;
    uint8_t state;
    uint32_t *req;             /* requested size + 1 per block, 0 = free */
    uint64_t bm[];             /* 1 = used (or past nblocks) */
} sslab;

typedef struct sseg {
    ss__seg seg;
    uint32_t id;
    int key;                   /* node key (index into a->nodes) */
    uint32_t npages, used_pages;
    uint32_t nslabs, busy_slabs;
    struct sseg *aprev, *anext; /* avail list */
    bool on_avail;
    uint64_t *pagemap;         /* 1 = page in a slab */
    sslab **page_slab;
} sseg;

typedef struct snode {
    int node;                  /* value passed to ss__seg_create */
    sseg *avail;
    sseg *spare;
    uint32_t nsegs;
    sslab **partial;           /* [ncls] */
    sslab **cached;            /* [ncls] */
} snode;

/* An open write window: unit `unit` of segment `seg` is writable. The
 * array a->win is in open order (so by `opened`); held windows stay past
 * their time until released. */
typedef struct swin {
    uint32_t seg, unit;
    uint32_t holds;
    uint64_t opened; /* ss__now_ns() */
} swin;

struct ss__salloc {
    ss__salloc_params p;
    swin *win;
    uint32_t nwin, capwin;
    uint32_t seg_pages;
    int ncls;
    uint32_t *cls_pages;       /* slab length per class, in pages */
    uint32_t *cls_blocks;      /* blocks per slab per class */
    snode *nodes[SS_NODE_KEYS];
    sseg **segs;               /* by id; NULL = free id */
    uint32_t nslots;
    uint64_t charged;
    ss__salloc_stats st;
};

/* --------------------------------------------------------- size classes */
int ss__salloc_class_of(uint64_t size)
{
    if (size > SS_SALLOC_SIZE_LIMIT)
        return -EINVAL;
    if (size <= SS_CLS_LINEAR_MAX)
        return size == 0 ? 0 : (int)((size - 1) / SS_OBJ_ALIGN);
    uint64_t s = size - 1;
    int k = 63 - __builtin_clzll(s);           /* k >= 10 */
    uint64_t j = s >> (k - 3);                  /* 8..15 */
    return SS_CLS_LINEAR + (k - 10) * SS_CLS_PER_POW2 + (int)(j - 8);
}

uint64_t ss__salloc_class_size(int cls)
{
    if (cls < 0)
        return 0;
    if (cls < SS_CLS_LINEAR)
        return (uint64_t)(cls + 1) * SS_OBJ_ALIGN;
    int d = cls - SS_CLS_LINEAR;
    int k = 10 + d / SS_CLS_PER_POW2;
    uint64_t j = 8 + (uint64_t)(d % SS_CLS_PER_POW2);
    if (k > 32)
        return 0;
    return (j + 1) << (k - 3);
}

/* Slab length for a class: at least SS_SLAB_MIN_BLOCKS blocks (clamped to
 * the segment), then among up to twice that length the one with the least
 * tail waste, shortest first on ties. */
static uint32_t slab_pages_for(uint64_t cs, uint32_t seg_pages)
{
    uint64_t need = (cs * SS_SLAB_MIN_BLOCKS + SS_SLAB_PAGE - 1) / SS_SLAB_PAGE;
    uint32_t nmin = (uint32_t)(need < 1 ? 1 : need);
    if (nmin > seg_pages)
        nmin = seg_pages;
    uint32_t nmax = nmin * 2 > seg_pages ? seg_pages : nmin * 2;
    uint32_t best = nmin;
    double best_w = 2.0;
    for (uint32_t n = nmin; n <= nmax; n++) {
        uint64_t bytes = (uint64_t)n * SS_SLAB_PAGE;
        double w = (double)(bytes % cs) / (double)bytes;
        if (w < best_w - 1e-12) {
            best_w = w;
            best = n;
        }
        if (w == 0)
            break;
    }
    return best;
}

/* ---------------------------------------------------------------- nodes */
/* The caller passes what ss__numa_place() returned. Without a topology
 * there is no binding, so every request shares the SS_NODE_ANY heap. */
static int node_key(const ss__salloc *a, int node)
{
    if (node < SS_NODE_INTERLEAVE || node >= SS_MAX_NODES)
        return -EINVAL;
    if (!a->p.numa)
        node = SS_NODE_ANY;
    else if (node >= 0 && ss__numa_node_index(a->p.numa, node) < 0)
        return -EINVAL; /* refuse before charging anything */
    return node + 2;
}

static snode *node_get(ss__salloc *a, int key)
{
    snode *n = a->nodes[key];
    if (n)
        return n;
    n = calloc(1, sizeof(*n));
    if (!n)
        return NULL;
    n->partial = calloc((size_t)a->ncls, sizeof(*n->partial));
    n->cached = calloc((size_t)a->ncls, sizeof(*n->cached));
    if (!n->partial || !n->cached) {
        free(n->partial);
        free(n->cached);
        free(n);
        return NULL;
    }
    n->node = key - 2;
    a->nodes[key] = n;
    return n;
}

/* --------------------------------------------------------- list helpers */
static void partial_push(snode *n, sslab *s)
{
    s->prev = NULL;
    s->next = n->partial[s->cls];
    if (s->next)
        s->next->prev = s;
    n->partial[s->cls] = s;
    s->state = SLAB_PARTIAL;
}

static void partial_remove(snode *n, sslab *s)
{
    if (s->prev)
        s->prev->next = s->next;
    else
        n->partial[s->cls] = s->next;
    if (s->next)
        s->next->prev = s->prev;
    s->prev = s->next = NULL;
}

static void avail_add(snode *n, sseg *g)
{
    if (g->on_avail)
        return;
    g->aprev = NULL;
    g->anext = n->avail;
    if (g->anext)
        g->anext->aprev = g;
    n->avail = g;
    g->on_avail = true;
}

static void avail_remove(snode *n, sseg *g)
{
    if (!g->on_avail)
        return;
    if (g->aprev)
        g->aprev->anext = g->anext;
    else
        n->avail = g->anext;
    if (g->anext)
        g->anext->aprev = g->aprev;
    g->aprev = g->anext = NULL;
    g->on_avail = false;
}

static inline void bit_set(uint64_t *bm, uint32_t i) { bm[i / 64] |= 1ull << (i % 64); }
static inline void bit_clear(uint64_t *bm, uint32_t i) { bm[i / 64] &= ~(1ull << (i % 64)); }
static inline bool bit_test(const uint64_t *bm, uint32_t i)
{
    return (bm[i / 64] >> (i % 64)) & 1;
}

/* ------------------------------------------------------------- segments */
static void seg_free_record(sseg *g)
{
    free(g->pagemap);
    free(g->page_slab);
    free(g);
}

static void win_forget_seg(ss__salloc *a, uint32_t seg);

static void seg_destroy(ss__salloc *a, sseg *g)
{
    snode *n = a->nodes[g->key];

    win_forget_seg(a, g->id);
    avail_remove(n, g);
    if (n->spare == g)
        n->spare = NULL;
    n->nsegs--;
    /* ASan: the mapping goes away; leave no poisoned shadow behind for
     * whatever is mapped at this address next. */
    ss_unpoison(g->seg.map, g->seg.size);
    uint64_t size = g->seg.size;
    ss__seg_destroy(&g->seg);
    if (a->p.charge)
        a->p.charge(a->p.charge_arg, -(int64_t)size);
    a->charged -= size;
    a->st.segment_bytes -= size;
    a->st.segments--;
    a->segs[g->id] = NULL;
    seg_free_record(g);
}

/* A new segment for node n: charge first (refusal is -ENOSPC and nothing
 * was created), then create, populate and seal. On any failure everything
 * done so far is undone. The new segment is idle: it becomes the spare. */
static int seg_grow(ss__salloc *a, snode *n, sseg **out)
{
    uint32_t id;
    int rc;

    for (id = 0; id < a->nslots && a->segs[id]; id++)
        ;
    if (id == a->nslots && SS_ARRAY_RESERVE(a->segs, a->nslots, id + 1, 8) < 0)
        return -ENOMEM;

    sseg *g = calloc(1, sizeof(*g));
    if (!g)
        return -ENOMEM;
    g->seg.fd = -1;
    g->npages = a->seg_pages;
    g->pagemap = calloc((g->npages + 63) / 64, sizeof(uint64_t));
    g->page_slab = calloc(g->npages, sizeof(sslab *));
    if (!g->pagemap || !g->page_slab) {
        seg_free_record(g);
        return -ENOMEM;
    }

    uint64_t want = a->p.segment_size;
    if (a->p.charge && (rc = a->p.charge(a->p.charge_arg, (int64_t)want)) < 0) {
        seg_free_record(g);
        return rc;
    }
    uint64_t charged = want;

    ss__seg_params sp = {
        .size = want,
        .hugepages = a->p.hugepages,
        .kind = SS_SEG_SMALL,
        .numa = a->p.numa,
        .node = n->node,
    };
    rc = ss__seg_create(&g->seg, &sp);
    if (rc < 0)
        goto fail_uncharge;
    if (!g->seg.map || g->seg.size < want) {
        ss__log_error("small segment: create gave map %p size %llu for %llu",
                      g->seg.map, (unsigned long long)g->seg.size,
                      (unsigned long long)want);
        rc = -SS_E_CORRUPT;
        goto fail_destroy;
    }
    /* The backing may round the size up to its page: charge what the kernel
     * really holds. */
    if (g->seg.size > want && a->p.charge) {
        rc = a->p.charge(a->p.charge_arg, (int64_t)(g->seg.size - want));
        if (rc < 0)
            goto fail_destroy;
        charged = g->seg.size;
    }
    rc = ss__seg_seal_small(&g->seg);
    if (rc == 0)
        rc = ss__sys_mprotect(g->seg.map, (size_t)g->seg.size, PROT_READ); /* windows: top */
    if (rc < 0)
        goto fail_destroy;

    ss_poison(g->seg.map, g->seg.size);
    g->id = id;
    g->key = (int)(n->node + 2);
    a->segs[id] = g;
    a->charged += g->seg.size;
    a->st.segment_bytes += g->seg.size;
    a->st.segments++;
    n->nsegs++;
    avail_add(n, g);
    SS_ASSERT(!n->spare);
    n->spare = g;
    *out = g;
    return 0;

fail_destroy:
    ss__seg_destroy(&g->seg);
fail_uncharge:
    if (a->p.charge)
        a->p.charge(a->p.charge_arg, -(int64_t)charged);
    seg_free_record(g);
    return rc;
}

/* First fit of a run of `len` free pages; -1 if none. */
static int64_t seg_find_run(const sseg *g, uint32_t len)
{
    if (g->npages - g->used_pages < len)
        return -1;
    uint32_t run = 0;
    for (uint32_t p = 0; p < g->npages; p++) {
        if (!(p % 64) && g->pagemap[p / 64] == ~0ull) {
            run = 0;
            p += 63;
            continue;
        }
        if (bit_test(g->pagemap, p)) {
            run = 0;
        } else if (++run == len) {
            return (int64_t)(p + 1 - len);
        }
    }
    return -1;
}

/* ---------------------------------------------------------------- slabs */
static sslab *slab_carve(ss__salloc *a, snode *n, sseg *g, uint32_t first, int cls)
{
    uint32_t nb = a->cls_blocks[cls];
    uint32_t nw = (nb + 63) / 64;
    sslab *s = calloc(1, sizeof(*s) + nw * sizeof(uint64_t));
    if (!s)
        return NULL;
    s->req = calloc(nb, sizeof(uint32_t));
    if (!s->req) {
        free(s);
        return NULL;
    }
    s->sg = g;
    s->cls = (uint32_t)cls;
    s->bsize = ss__salloc_class_size(cls);
    s->first_page = first;
    s->npages = a->cls_pages[cls];
    s->off = (uint64_t)first * SS_SLAB_PAGE;
    s->nblocks = nb;
    s->nwords = nw;
    if (nb % 64)
        s->bm[nw - 1] = ~0ull << (nb % 64);
    for (uint32_t p = first; p < first + s->npages; p++) {
        bit_set(g->pagemap, p);
        g->page_slab[p] = s;
    }
    g->used_pages += s->npages;
    g->nslabs++;
    if (g->used_pages == g->npages)
        avail_remove(n, g);
    a->st.slabs++;
    a->st.slab_bytes += (uint64_t)s->npages * SS_SLAB_PAGE;
    return s;
}

/* Give an empty slab's pages back to its segment. */
static void slab_release(ss__salloc *a, sslab *s)
{
    sseg *g = s->sg;
    snode *n = a->nodes[g->key];

    SS_ASSERT(s->used == 0);
    for (uint32_t p = s->first_page; p < s->first_page + s->npages; p++) {
        bit_clear(g->pagemap, p);
        g->page_slab[p] = NULL;
    }
    g->used_pages -= s->npages;
    g->nslabs--;
    avail_add(n, g);
    a->st.slabs--;
    a->st.slab_bytes -= (uint64_t)s->npages * SS_SLAB_PAGE;
    free(s->req);
    free(s);
}

/* Drop every cached empty slab of node n (optionally only those in g). */
static void flush_cached(ss__salloc *a, snode *n, const sseg *only)
{
    for (int c = 0; c < a->ncls; c++) {
        sslab *s = n->cached[c];
        if (s && (!only || s->sg == only)) {
            n->cached[c] = NULL;
            a->st.empty_slabs--;
            slab_release(a, s);
        }
    }
}

/* Find room for a new slab of class cls on node n: a busy segment first
 * (pack), then the spare, then cached empty slabs are dropped, then grow. */
static int slab_new(ss__salloc *a, snode *n, int cls, sslab **out)
{
    uint32_t len = a->cls_pages[cls];
    sseg *g = NULL;
    int64_t first = -1;
    int rc;

    for (int pass = 0; pass < 2 && first < 0; pass++) {
        for (g = n->avail; g; g = g->anext) {
            if (g == n->spare)
                continue;
            if ((first = seg_find_run(g, len)) >= 0)
                break;
        }
        if (first < 0 && (g = n->spare))
            first = seg_find_run(g, len);
        if (first < 0 && pass == 0)
            flush_cached(a, n, NULL);
    }
    if (first < 0) {
        rc = seg_grow(a, n, &g);
        if (rc < 0)
            return rc;
        first = 0;
    }
    sslab *s = slab_carve(a, n, g, (uint32_t)first, cls);
    if (!s)
        return -ENOMEM; /* g keeps its state: if fresh, it is the spare */
    s->state = SLAB_CACHED; /* transient: taken from immediately */
    *out = s;
    return 0;
}

/* ----------------------------------------------------------- public API */
static ss__salloc_params params_defaulted(const ss__salloc_params *p)
{
    ss__salloc_params q = *p;

    if (q.segment_size == 0)
        q.segment_size = 4 * SS_MiB;
    if (q.max_size == 0)
        q.max_size = 64 * SS_KiB;
    return q;
}

const char *ss__salloc_params_why(const ss__salloc_params *p)
{
    ss__salloc_params q;

    if (!p)
        return "no parameters";
    q = params_defaulted(p);
    if (q.segment_size % SS_SLAB_PAGE)
        return "the segment size is not a multiple of 64 KiB";
    if (q.segment_size > SS_SEG_SIZE_LIMIT)
        return "the segment size is over 64 GiB";
    if (q.max_size > q.segment_size / SS_SLAB_MIN_BLOCKS)
        return "the largest small object is over 1/8 of the segment size";
    if (q.max_size >= SS_SALLOC_SIZE_LIMIT) /* req[] stores size + 1 */
        return "the largest small object is over 4 GiB";
    if (q.hugepages < SS_HP_AUTO || q.hugepages > SS_HP_OFF)
        return "unknown hugepage policy";
    /* An explicit hugetlb policy would round every segment up to its page. */
    if (q.hugepages == SS_HP_2M && q.segment_size % (2 * SS_MiB))
        return "the segment size is not a multiple of the 2 MiB hugepage the explicit 2M "
               "policy gives every segment";
    if (q.hugepages == SS_HP_1G && q.segment_size % SS_GiB)
        return "the segment size is not a multiple of the 1 GiB hugepage the explicit 1G "
               "policy gives every segment";
    return NULL;
}

int ss__salloc_create(ss__salloc **out, const ss__salloc_params *p)
{
    if (!out || !p || ss__salloc_params_why(p))
        return -EINVAL;
    ss__salloc_params q = params_defaulted(p);
    int top = ss__salloc_class_of(q.max_size);
    if (top < 0)
        return top;

    ss__salloc *a = calloc(1, sizeof(*a));
    if (!a)
        return -ENOMEM;
    a->p = q;
    a->seg_pages = (uint32_t)(q.segment_size / SS_SLAB_PAGE);
    a->ncls = top + 1;
    a->cls_pages = calloc((size_t)a->ncls, sizeof(uint32_t));
    a->cls_blocks = calloc((size_t)a->ncls, sizeof(uint32_t));
    if (!a->cls_pages || !a->cls_blocks) {
        free(a->cls_pages);
        free(a->cls_blocks);
        free(a);
        return -ENOMEM;
    }
    for (int c = 0; c < a->ncls; c++) {
        uint64_t cs = ss__salloc_class_size(c);
        a->cls_pages[c] = slab_pages_for(cs, a->seg_pages);
        a->cls_blocks[c] = (uint32_t)((uint64_t)a->cls_pages[c] * SS_SLAB_PAGE / cs);
        if (a->cls_blocks[c] == 0) {
            /* Only if the last class outgrew a segment: cap max_size. */
            ss__salloc_destroy(a);
            return -EINVAL;
        }
    }
    *out = a;
    return 0;
}

void ss__salloc_destroy(ss__salloc *a)
{
    if (!a)
        return;
    free(a->win);
    for (uint32_t id = 0; id < a->nslots; id++) {
        sseg *g = a->segs[id];
        if (!g)
            continue;
        for (uint32_t pg = 0; pg < g->npages;) {
            sslab *s = g->page_slab[pg];
            if (!s) {
                pg++;
                continue;
            }
            pg += s->npages;
            free(s->req);
            free(s);
        }
        ss_unpoison(g->seg.map, g->seg.size);
        uint64_t size = g->seg.size;
        ss__seg_destroy(&g->seg);
        if (a->p.charge)
            a->p.charge(a->p.charge_arg, -(int64_t)size);
        seg_free_record(g);
    }
    for (int k = 0; k < SS_NODE_KEYS; k++) {
        if (a->nodes[k]) {
            free(a->nodes[k]->partial);
            free(a->nodes[k]->cached);
            free(a->nodes[k]);
        }
    }
    free(a->segs);
    free(a->cls_pages);
    free(a->cls_blocks);
    free(a);
}

int ss__salloc_alloc(ss__salloc *a, uint64_t size, int node, ss__sloc *out)
{
    if (!a || !out || size > a->p.max_size)
        return -EINVAL;
    int key = node_key(a, node);
    if (key < 0)
        return key;
    int cls = ss__salloc_class_of(size);
    snode *n = node_get(a, key);
    if (!n)
        return -ENOMEM;

    sslab *s = n->partial[cls];
    if (!s) {
        if ((s = n->cached[cls])) {
            n->cached[cls] = NULL;
            a->st.empty_slabs--;
        } else {
            int rc = slab_new(a, n, cls, &s);
            if (rc < 0)
                return rc;
        }
        /* An empty slab becomes busy: its segment is no longer idle. */
        sseg *g = s->sg;
        if (g->busy_slabs++ == 0 && n->spare == g)
            n->spare = NULL;
        if (s->nblocks > 1)
            partial_push(n, s);
    }

    uint32_t w = s->hint;
    while (s->bm[w] == ~0ull)
        w++;
    uint32_t idx = w * 64 + (uint32_t)__builtin_ctzll(~s->bm[w]);
    SS_ASSERT(idx < s->nblocks);
    s->bm[w] |= 1ull << (idx % 64);
    s->hint = w;
    s->req[idx] = (uint32_t)size + 1;
    if (++s->used == s->nblocks) {
        if (s->state == SLAB_PARTIAL)
            partial_remove(n, s);
        s->state = SLAB_FULL;
    }

    a->st.live_objects++;
    a->st.live_bytes += size;
    a->st.used_bytes += s->bsize;
    a->st.allocs++;

    uint64_t off = s->off + (uint64_t)idx * s->bsize;
    out->seg = s->sg->id;
    out->cls = (uint32_t)cls;
    out->off = off;
    out->ptr = (char *)s->sg->seg.map + off;
    ss_unpoison(out->ptr, size);
    SS_ASSERT_EXPENSIVE(ss__salloc_validate(a) == 0);
    return 0;
}

/* Map a location to its slab and block; -EINVAL unless it names a live
 * block exactly. ptr may be NULL (a store that keeps only seg/cls/off). */
static int locate(const ss__salloc *a, const ss__sloc *loc, sslab **sp, uint32_t *ip)
{
    if (loc->seg >= a->nslots || !a->segs[loc->seg])
        return -EINVAL;
    const sseg *g = a->segs[loc->seg];
    if (loc->off >= (uint64_t)g->npages * SS_SLAB_PAGE || loc->off % SS_OBJ_ALIGN)
        return -EINVAL;
    sslab *s = g->page_slab[loc->off / SS_SLAB_PAGE];
    if (!s || s->cls != loc->cls)
        return -EINVAL;
    uint64_t rel = loc->off - s->off;
    if (rel % s->bsize || rel / s->bsize >= s->nblocks)
        return -EINVAL;
    uint32_t idx = (uint32_t)(rel / s->bsize);
    if (!bit_test(s->bm, idx))
        return -EINVAL;
    if (loc->ptr && loc->ptr != (char *)g->seg.map + loc->off)
        return -EINVAL;
    *sp = s;
    *ip = idx;
    return 0;
}

/* The last busy slab of g emptied: g becomes the node's spare, or is
 * destroyed if the node already has one. */
static void seg_idle(ss__salloc *a, snode *n, sseg *g)
{
    if (!n->spare) {
        n->spare = g;
        return;
    }
    flush_cached(a, n, g);
    SS_ASSERT(g->nslabs == 0);
    seg_destroy(a, g);
}

int ss__salloc_free(ss__salloc *a, const ss__sloc *loc)
{
    sslab *s;
    uint32_t idx;

    if (!a || !loc)
        return -EINVAL;
    if (locate(a, loc, &s, &idx) < 0) {
        ss__log_debug("small free refused: seg %u cls %u off %llu is not live",
                      loc->seg, loc->cls, (unsigned long long)loc->off);
        return -EINVAL;
    }
    sseg *g = s->sg;
    snode *n = a->nodes[g->key];
    uint64_t size = s->req[idx] - 1;
    void *ptr = (char *)g->seg.map + loc->off;

    ss_poison(ptr, s->bsize);
    bit_clear(s->bm, idx);
    s->req[idx] = 0;
    if (idx / 64 < s->hint)
        s->hint = idx / 64;
    a->st.live_objects--;
    a->st.live_bytes -= size;
    a->st.used_bytes -= s->bsize;
    a->st.frees++;

    bool was_full = s->state == SLAB_FULL;
    s->used--;
    if (s->used > 0) {
        if (was_full)
            partial_push(n, s);
    } else {
        if (!was_full)
            partial_remove(n, s);
        g->busy_slabs--;
        /* Keep one empty slab per class, unless it is the last busy slab of
         * a segment that is about to be destroyed anyway. */
        if (!n->cached[s->cls]) {
            n->cached[s->cls] = s;
            s->state = SLAB_CACHED;
            a->st.empty_slabs++;
        } else {
            slab_release(a, s);
        }
        if (g->busy_slabs == 0)
            seg_idle(a, n, g);
    }
    SS_ASSERT_EXPENSIVE(ss__salloc_validate(a) == 0);
    return 0;
}

/* ---------------------------------------------------------- write windows */

static uint64_t win_unit(const sseg *g)
{
    return g->seg.page_size > SS_SLAB_PAGE ? g->seg.page_size : SS_SLAB_PAGE;
}

static int win_protect(ss__salloc *a, uint32_t seg, uint32_t unit, int prot)
{
    const sseg *g = a->segs[seg];
    uint64_t u = win_unit(g), off = (uint64_t)unit * u;
    uint64_t len = g->seg.size - off < u ? g->seg.size - off : u;

    return ss__sys_mprotect((char *)g->seg.map + off, (size_t)len, prot);
}

static int64_t win_find(const ss__salloc *a, uint32_t seg, uint32_t unit)
{
    for (uint32_t i = a->nwin; i-- > 0;) /* the newest is the likeliest */
        if (a->win[i].seg == seg && a->win[i].unit == unit)
            return i;
    return -1;
}

static void win_remove(ss__salloc *a, uint32_t i)
{
    memmove(&a->win[i], &a->win[i + 1], (a->nwin - i - 1) * sizeof(a->win[0]));
    a->nwin--;
}

/* A destroyed segment's windows go with its mapping. */
static void win_forget_seg(ss__salloc *a, uint32_t seg)
{
    for (uint32_t i = a->nwin; i-- > 0;)
        if (a->win[i].seg == seg)
            win_remove(a, i);
}

/* The units of a live range, or -EINVAL. */
static int win_range(const ss__salloc *a, const ss__sloc *loc, uint64_t len, uint32_t *first,
                     uint32_t *last)
{
    const sseg *g;

    if (!loc || loc->seg >= a->nslots || !(g = a->segs[loc->seg]) || len == 0 ||
        loc->off >= g->seg.size || len > g->seg.size - loc->off)
        return -EINVAL;
    *first = (uint32_t)(loc->off / win_unit(g));
    *last = (uint32_t)((loc->off + len - 1) / win_unit(g));
    return 0;
}

int ss__salloc_write_open(ss__salloc *a, const ss__sloc *loc, uint64_t len, bool hold)
{
    uint32_t first, last;
    uint64_t now = 0;
    int rc;

    if (!a || (rc = win_range(a, loc, len, &first, &last)) < 0)
        return len == 0 && a && loc ? 0 : -EINVAL;
    for (uint32_t u = first; u <= last; u++) {
        int64_t i = win_find(a, loc->seg, u);
        if (i < 0) {
            if (SS_ARRAY_RESERVE(a->win, a->capwin, a->nwin + 1, 16) < 0)
                return -ENOMEM;
            rc = win_protect(a, loc->seg, u, PROT_READ | PROT_WRITE);
            if (rc < 0)
                return rc;
            if (!now)
                now = ss__now_ns();
            i = a->nwin++;
            a->win[i] = (swin){ .seg = loc->seg, .unit = u, .holds = 0, .opened = now };
        }
        if (hold)
            a->win[i].holds++;
    }
    return 0;
}

void ss__salloc_write_release(ss__salloc *a, const ss__sloc *loc, uint64_t len)
{
    uint32_t first, last;

    if (!a || win_range(a, loc, len, &first, &last) < 0)
        return;
    for (uint32_t u = first; u <= last; u++) {
        int64_t i = win_find(a, loc->seg, u);
        SS_ASSERT(i >= 0 && a->win[i].holds > 0);
        if (i >= 0 && a->win[i].holds > 0)
            a->win[i].holds--;
    }
}

uint64_t ss__salloc_write_close(ss__salloc *a, uint64_t now, bool all)
{
    uint64_t next = UINT64_MAX;

    if (!a)
        return next;
    for (uint32_t i = 0; i < a->nwin;) {
        swin *w = &a->win[i];
        if (w->holds) {
            i++;
            continue;
        }
        if (!all && now < w->opened + SS_SALLOC_WINDOW_NS) {
            if (w->opened + SS_SALLOC_WINDOW_NS < next)
                next = w->opened + SS_SALLOC_WINDOW_NS;
            i++;
            continue;
        }
        int rc = win_protect(a, w->seg, w->unit, PROT_READ);
        if (rc < 0) /* ENOMEM splitting a VMA: stays writable, said once per try */
            ss__log_error("small segment %u: cannot make unit %u read-only again: %s", w->seg,
                          w->unit, ss_strerror(rc));
        win_remove(a, i);
    }
    return next;
}

uint32_t ss__salloc_windows(const ss__salloc *a)
{
    return a ? a->nwin : 0;
}

const ss__seg *ss__salloc_segment(const ss__salloc *a, uint32_t seg)
{
    if (!a || seg >= a->nslots || !a->segs[seg])
        return NULL;
    return &a->segs[seg]->seg;
}

void ss__salloc_stats_get(const ss__salloc *a, ss__salloc_stats *out)
{
    if (!a) {
        memset(out, 0, sizeof(*out));
        return;
    }
    *out = a->st;
    out->spare_segments = 0;
    for (int k = 0; k < SS_NODE_KEYS; k++)
        if (a->nodes[k] && a->nodes[k]->spare)
            out->spare_segments++;
}

/* ------------------------------------------------------------- validate */
#define V(cond, ...)                                                         \
    do {                                                                     \
        if (ss_unlikely(!(cond))) {                                          \
            ss__log_error("salloc invalid: " __VA_ARGS__);                   \
            ss__log_error("  failed: %s (%s:%d)", #cond, __FILE__, __LINE__); \
            return -SS_E_CORRUPT;                                            \
        }                                                                    \
    } while (0)

static int validate_slab(const ss__salloc *a, const sseg *g, const sslab *s,
                         uint64_t *live_bytes)
{
    const snode *n = a->nodes[g->key];
    V(s->sg == g, "slab at page %u: wrong segment", s->first_page);
    V(s->cls < (uint32_t)a->ncls, "slab cls %u", s->cls);
    V(s->bsize == ss__salloc_class_size((int)s->cls), "slab bsize");
    V(s->npages == a->cls_pages[s->cls] && s->nblocks == a->cls_blocks[s->cls],
      "slab geometry cls %u", s->cls);
    V(s->off == (uint64_t)s->first_page * SS_SLAB_PAGE, "slab off");
    V(s->first_page + s->npages <= g->npages, "slab past segment end");
    V(s->nwords == (s->nblocks + 63) / 64, "slab nwords");
    V(s->used <= s->nblocks, "slab used %u > %u", s->used, s->nblocks);

    uint64_t pop = 0;
    for (uint32_t w = 0; w < s->nwords; w++)
        pop += (uint64_t)__builtin_popcountll(s->bm[w]);
    uint32_t tail = s->nwords * 64 - s->nblocks;
    V(pop == (uint64_t)s->used + tail, "seg %u slab page %u: popcount %llu != used %u + tail %u",
      g->id, s->first_page, (unsigned long long)pop, s->used, tail);
    if (tail)
        V((s->bm[s->nwords - 1] >> (s->nblocks % 64)) == (~0ull >> (s->nblocks % 64)),
          "slab tail bits");
    for (uint32_t w = 0; w < s->hint && w < s->nwords; w++)
        V(s->bm[w] == ~0ull, "slab hint %u past free word %u", s->hint, w);
    V(s->used == s->nblocks || s->hint < s->nwords, "slab hint out of range");

    uint64_t lb = 0;
    for (uint32_t i = 0; i < s->nblocks; i++) {
        bool used = bit_test(s->bm, i);
        V(used == (s->req[i] != 0), "slab block %u: bit %d req %u", i, used, s->req[i]);
        if (used) {
            V((uint64_t)s->req[i] - 1 <= s->bsize && s->req[i] - 1 <= a->p.max_size,
              "block %u req %u > class %llu", i, s->req[i], (unsigned long long)s->bsize);
            V(ss__salloc_class_of(s->req[i] - 1) == (int)s->cls, "block %u size/class", i);
            lb += s->req[i] - 1;
        }
    }
    *live_bytes += lb;

    switch (s->state) {
    case SLAB_PARTIAL: {
        V(s->used > 0 && s->used < s->nblocks, "partial slab used %u", s->used);
        const sslab *x = n->partial[s->cls];
        while (x && x != s)
            x = x->next;
        V(x == s, "partial slab not on its list");
        break;
    }
    case SLAB_FULL:
        V(s->used == s->nblocks, "full slab used %u of %u", s->used, s->nblocks);
        break;
    case SLAB_CACHED:
        V(s->used == 0 && n->cached[s->cls] == s, "cached slab");
        break;
    default:
        V(0, "slab state %u", s->state);
    }
    return 0;
}

/* What the walk over the segments counts, to compare with the stats. */
typedef struct vtotals {
    uint64_t segments, seg_bytes, live_objects, used_bytes, live_bytes;
    uint64_t slabs, slab_pages, cached;
} vtotals;

/* Segment g (id): its page map against its slabs, its counts, its place
 * on the node's lists; adds to t. */
static int validate_segment(const ss__salloc *a, const sseg *g, uint32_t id, vtotals *t)
{
    int rc;

    t->segments++;
    t->seg_bytes += g->seg.size;
    V(g->id == id, "segment %u records id %u", id, g->id);
    V(g->key >= 0 && g->key < SS_NODE_KEYS && a->nodes[g->key], "segment %u key", id);
    V(g->npages == a->seg_pages, "segment %u npages", id);
    V(g->seg.map && g->seg.size >= a->p.segment_size, "segment %u map/size", id);
    const snode *n = a->nodes[g->key];

    uint64_t pop = 0;
    for (uint32_t w = 0; w < (g->npages + 63) / 64; w++)
        pop += (uint64_t)__builtin_popcountll(g->pagemap[w]);
    V(pop == g->used_pages, "segment %u: page popcount %llu != used_pages %u", id,
      (unsigned long long)pop, g->used_pages);

    uint32_t ns = 0, busy = 0, pages = 0;
    for (uint32_t pg = 0; pg < g->npages;) {
        const sslab *s = g->page_slab[pg];
        if (!s) {
            V(!bit_test(g->pagemap, pg), "segment %u page %u: bit without slab", id, pg);
            pg++;
            continue;
        }
        V(s->first_page == pg, "segment %u page %u: slab starts at %u", id, pg,
          s->first_page);
        for (uint32_t q = pg; q < pg + s->npages; q++)
            V(q < g->npages && g->page_slab[q] == s && bit_test(g->pagemap, q),
              "segment %u page %u: slab map", id, q);
        if ((rc = validate_slab(a, g, s, &t->live_bytes)) < 0)
            return rc;
        ns++;
        busy += s->used > 0;
        pages += s->npages;
        t->live_objects += s->used;
        t->used_bytes += (uint64_t)s->used * s->bsize;
        t->cached += s->state == SLAB_CACHED;
        pg += s->npages;
    }
    V(pages == g->used_pages, "segment %u: slab pages %u != used_pages %u", id, pages,
      g->used_pages);
    V(ns == g->nslabs && busy == g->busy_slabs,
      "segment %u: nslabs %u/%u busy %u/%u", id, ns, g->nslabs, busy, g->busy_slabs);
    V((busy == 0) == (n->spare == g), "segment %u: idle %d but spare %d", id,
      busy == 0, n->spare == g);
    V(g->on_avail == (g->used_pages < g->npages), "segment %u: avail %d", id,
      g->on_avail);
    const sseg *x = n->avail;
    while (x && x != g)
        x = x->anext;
    V((x == g) == g->on_avail, "segment %u: avail list membership", id);
    t->slabs += ns;
    t->slab_pages += pages;
    return 0;
}

/* Node key k's lists: its spare, avail, partial and cached slabs, and its
 * segment count against nsegs, the segments found with its key. */
static int validate_node(const ss__salloc *a, int k, uint32_t nsegs)
{
    const snode *n = a->nodes[k];

    V(n->nsegs == nsegs, "node key %d: nsegs %u != %u", k, n->nsegs, nsegs);
    V(!n->spare || (n->spare->key == k && a->segs[n->spare->id] == n->spare),
      "node key %d: spare", k);
    for (const sseg *g = n->avail; g; g = g->anext) {
        V(g->key == k && g->on_avail && a->segs[g->id] == g, "node key %d: avail", k);
        V(!g->anext || g->anext->aprev == g, "node key %d: avail links", k);
    }
    for (int c = 0; c < a->ncls; c++) {
        for (const sslab *s = n->partial[c]; s; s = s->next) {
            V(s->state == SLAB_PARTIAL && s->cls == (uint32_t)c && s->sg->key == k,
              "node key %d cls %d: partial list holds a non-partial slab", k, c);
            V(!s->next || s->next->prev == s, "partial links");
            V(s->sg->page_slab[s->first_page] == s, "partial slab not in a segment");
        }
        const sslab *s = n->cached[c];
        if (s)
            V(s->state == SLAB_CACHED && s->cls == (uint32_t)c && s->sg->key == k &&
                  s->sg->page_slab[s->first_page] == s,
              "node key %d cls %d: cached slab", k, c);
    }
    return 0;
}

int ss__salloc_validate(const ss__salloc *a)
{
    if (!a)
        return -EINVAL;
    vtotals t = { 0 };
    uint32_t nsegs_node[SS_NODE_KEYS] = {0};
    int rc;

    for (uint32_t id = 0; id < a->nslots; id++) {
        const sseg *g = a->segs[id];
        if (!g)
            continue;
        if ((rc = validate_segment(a, g, id, &t)) < 0)
            return rc;
        nsegs_node[g->key]++;
    }
    for (int k = 0; k < SS_NODE_KEYS; k++)
        if (a->nodes[k] && (rc = validate_node(a, k, nsegs_node[k])) < 0)
            return rc;

    const ss__salloc_stats *st = &a->st;
    V(st->segments == t.segments, "segments %llu != %llu",
      (unsigned long long)st->segments, (unsigned long long)t.segments);
    V(st->segment_bytes == t.seg_bytes && a->charged == t.seg_bytes,
      "segment_bytes %llu charged %llu != %llu", (unsigned long long)st->segment_bytes,
      (unsigned long long)a->charged, (unsigned long long)t.seg_bytes);
    V(st->live_objects == t.live_objects && st->allocs - st->frees == t.live_objects,
      "live_objects %llu != %llu", (unsigned long long)st->live_objects,
      (unsigned long long)t.live_objects);
    V(st->used_bytes == t.used_bytes, "used_bytes %llu != %llu",
      (unsigned long long)st->used_bytes, (unsigned long long)t.used_bytes);
    V(st->live_bytes == t.live_bytes, "live_bytes %llu != %llu",
      (unsigned long long)st->live_bytes, (unsigned long long)t.live_bytes);
    V(st->slabs == t.slabs && st->slab_bytes == t.slab_pages * SS_SLAB_PAGE, "slabs");
    V(st->empty_slabs == t.cached, "empty_slabs %llu != %llu",
      (unsigned long long)st->empty_slabs, (unsigned long long)t.cached);
    return 0;
}
