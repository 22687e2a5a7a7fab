/* SPDX-License-Identifier: MIT */
/*
 * The request layer: dispatch of a checked message to its handler
 * (ss__req_*), every request but GET (store_get.c), the scan gate, parked
 * creates and their retries, the timers of parked requests, a client's
 * departure and the answers given at stop. Owns the ss__conn fields marked
 * "req" and the counters it bumps; calls every layer below it (GET, disk
 * glue, seal worker, object table, parking, connections).
 *
 * Registers: with the connection layer, the message, departure and budget
 * handlers; with the parking layer, the GET completion; with the disk
 * glue, the end of the startup scan (the gate opens); with the seal worker,
 * per job, the completion of a client's SEAL.
 *
 * Start-up. Objects spilled by an earlier store on the socket are indexed
 * by a scan that runs in the spill engine's thread while the store already
 * serves (store_disk.c): HELLO, STATS, SUBSCRIBE, SEAL, ABORT and RELEASE
 * are answered at once, and a stop (SIGTERM, ss__store_stop) cancels the
 * scan wherever it is. A request whose answer depends on which ids exist
 * (CREATE, PUT, PUT_MANY, GET, CONTAINS, DELETE, LIST) waits at the scan gate until
 * the scan is over, so a create never duplicates an id that is on disk
 * and a get or contains never calls missing an object that is there; a
 * GET waits at most its own timeout, then is answered from what the scan
 * has found so far (a GET with timeout 0 does not wait). The held request
 * is a copy on its connection, which is not read meanwhile (its requests
 * stay in order, and the kernel's buffer pushes back on the client).
 *
 * Parked creates. A CREATE or PUT that does not fit parks in a FIFO and is
 * retried whenever memory is freed (and on a slow tick: the populator may
 * free memory from its own thread), until SEALSTORE_CREATE_TIMEOUT, then
 * fails with -ENOSPC. A PUT_MANY never parks: a record that does not fit
 * gets -ENOSPC at once (put_many).
 *
 * Seals. Each client has at most one job with the seal worker (its other
 * seals wait in its own queue), so one client with pinned pages cannot
 * monopolise it.
 */
#include "store_int.h"
#include "copy.h"

#include <stdlib.h>
#include <string.h>

#include "stats.h"
#include "sys.h"

#define LIST_SCAN_MAX 65536u
#define RETRY_TICK_NS (100 * 1000000ull)

/* ============================================================= handshake */

static void hello(ss__store *s, ss__conn *c, const ss__msg_hdr *h)
{
    struct {
        ss__msg_hdr h;
        ss__rep_hello r;
    } m;

    memset(&m, 0, sizeof(m));
    ss__proto_hdr(&m.h, SS_MSG_HELLO, h->req_id, sizeof(m), 0, SS_MSGF_REPLY);
    m.r.store_id = s->bind.store_id;
    m.r.client_id = c->id;
    m.r.small_max = (uint32_t)s->mem.small_max;
    m.r.capacity = s->mem.capacity;
    m.r.max_msg = SS_PROTO_MAX_MSG;
    ss__conn_hello_done(s, c);
    ss__conn_send(s, c, &m, sizeof(m), NULL, 0);
}

static void subscribe(ss__store *s, ss__conn *c, const ss__msg_hdr *h)
{
    const ss__req_subscribe *rq = (const void *)(h + 1);

    ss__conn_reply_status(s, c, SS_MSG_SUBSCRIBE, h->req_id, 0);
    ss__conn_subscribe(s, c, rq->mask);
}

/* ============================================================= scan gate */

static bool gated_type(int type)
{
    return type == SS_MSG_CREATE || type == SS_MSG_PUT || type == SS_MSG_PUT_MANY ||
           type == SS_MSG_PUTV ||
           type == SS_MSG_GET ||
           type == SS_MSG_CONTAINS || type == SS_MSG_DELETE || type == SS_MSG_LIST;
}

/* While the startup scan runs: hold c's request if it depends on which ids
 * exist. true: held back (or refused for lack of memory). */
static bool scan_gate(ss__store *s, ss__conn *c, const void *buf, size_t len, unsigned nfds)
{
    const ss__msg_hdr *h = buf;

    if (!s->disk.scanning || !gated_type(h->type))
        return false;
    /* a GET waits at most its timeout: with none left it runs now (this is
     * also how a held GET whose timeout passed gets through) */
    if (h->type == SS_MSG_GET && ((const ss__req_get *)(h + 1))->timeout_ms == 0)
        return false;
    c->gated = malloc(len);
    if (!c->gated) {
        ss__conn_reply_status(s, c, h->type, h->req_id, -ENOMEM);
        return true;
    }
    memcpy(c->gated, buf, len);
    c->gated_len = (uint32_t)len;
    c->gated_nfds = nfds;
    c->gated_deadline = UINT64_MAX;
    if (h->type == SS_MSG_GET)
        c->gated_deadline = ss__park_deadline_of(((const ss__req_get *)(h + 1))->timeout_ms);
    ss__conn_interest(s, c); /* not read until the request is answered */
    return true;
}

/* Run c's held request now: a GET gets what is left of its timeout. */
void ss__req_dispatch(ss__store *s, ss__conn *c, const void *buf, size_t len, unsigned nfds);

static void gate_run(ss__store *s, ss__conn *c, uint64_t now)
{
    ss__msg_hdr *h = c->gated;

    c->gated = NULL;
    if (h->type == SS_MSG_GET) {
        ss__req_get *rq = (ss__req_get *)(h + 1);

        if (rq->timeout_ms > 0)
            rq->timeout_ms = c->gated_deadline > now
                                 ? (int64_t)((c->gated_deadline - now + 999999) / 1000000)
                                 : 0;
    }
    ss__req_dispatch(s, c, h, c->gated_len, c->gated_nfds);
    free(h);
    ss__conn_interest(s, c);
}

/* The scan is over (the disk glue cleared `scanning`), or the store
 * stops: answer the held requests, in their connections' order. */
static void gate_open(ss__store *s)
{
    uint64_t now = ss__now_ns();

    for (ss__conn *c = s->conn.conns; c; c = c->next)
        if (c->gated && !c->broken)
            gate_run(s, c, now);
}

/* GETs whose timeout passed: answered from what is known. */
void ss__req_gate_turn(void *arg, uint64_t now)
{
    ss__store *s = arg;

    if (!s->disk.scanning)
        return;
    for (ss__conn *c = s->conn.conns; c; c = c->next)
        if (c->gated && !c->broken && c->gated_deadline <= now)
            gate_run(s, c, now);
}

uint64_t ss__req_gate_deadline(void *arg, uint64_t now)
{
    const ss__store *s = arg;
    uint64_t d = UINT64_MAX;

    (void)now;
    if (!s->disk.scanning)
        return d;
    for (const ss__conn *c = s->conn.conns; c; c = c->next)
        if (c->gated && !c->broken && c->gated_deadline < d)
            d = c->gated_deadline;
    return d;
}

/* ============================================================== creation */

typedef struct create_args {
    const ss_id *id;
    uint64_t size;
    const void *meta;
    uint32_t meta_size;
    int32_t node;
    uint32_t flags;          /* SS_CREATEF_* */
    const void *data;        /* PUT: the bytes */
    const ss__putv_iov *riov; /* PUTV: the bytes, in the client's memory */
    uint32_t niov;
    bool stage;              /* CREATE: an ARENA object its creator fills through
                                a staging area (ss__stage), copied in at SEAL */
    ss__conn *tc;            /* CREATE, trusted producers: the creator, whose */
    int tarea;               /* area tarea will hold the object (-1: none) */
} create_args;

static void publish(ss__store *s, uint32_t e);

/*
 * Objects bound to their creator (SS_CREATEF_CREATOR). The creating
 * connection keeps {entry, generation} of each in c->bound, in creation
 * order; the object carries SS_OBJF_BOUND. An entry's generation changes
 * whenever it is freed, so a pair names one object for good: one deleted
 * since (by DELETE, eviction or loss) is simply skipped. When the array is
 * full, such stale pairs are dropped before it grows, so it holds at most
 * twice the client's live bound objects (8 bytes each; amortised O(1) per
 * create). When the connection goes (req_conn_gone), the pairs still
 * naming a SEALED or SPILLED object are deleted as a DELETE would delete
 * them (its unsealed ones were aborted just before): O(bound objects of
 * that client), no walk of the table. All on the loop thread.
 */
static bool bound_live(const ss__store *s, ss__bound b)
{
    uint32_t st = ss__ent_state(s, b.e);

    return ss__ent(s, b.e)->generation == b.generation &&
           (ss__obj_at(s, b.e)->flags & SS_OBJF_BOUND) &&
           (st == SS_IX_CREATED || st == SS_IX_SEALED || st == SS_IX_SPILLED);
}

static int bound_add(ss__store *s, ss__conn *c, uint32_t e)
{
    if (c->nbound == c->bound_cap) {
        /* full: drop stale pairs; grow if more than half are live */
        uint32_t n = 0;
        for (uint32_t i = 0; i < c->nbound; i++)
            if (bound_live(s, c->bound[i]))
                c->bound[n++] = c->bound[i];
        c->nbound = n;
        if ((n == 0 || n > c->bound_cap / 2) &&
            SS_ARRAY_RESERVE(c->bound, c->bound_cap, (size_t)c->bound_cap + 1, 16) < 0)
            return -ENOMEM;
    }
    c->bound[c->nbound++] = (ss__bound){ e, ss__ent(s, e)->generation };
    ss__obj_at(s, e)->flags |= SS_OBJF_BOUND;
    return 0;
}

/* c went (its refs dropped, its unsealed objects aborted): delete what it
 * bound to itself. */
static void bound_delete_all(ss__store *s, ss__conn *c)
{
    for (uint32_t i = 0; i < c->nbound; i++) {
        ss__bound b = c->bound[i];
        if (!bound_live(s, b) || ss__ent_state(s, b.e) == SS_IX_CREATED)
            continue; /* gone, or being sealed by the worker: aborted then */
        /* as DELETE: unchained now, memory freed at the last release, a
         * disk copy (or a spill in flight) removed durably; nobody waits
         * for an answer, and a later DELETE of the id waits for that
         * removal (a pending removal of the id, see ss__spop) */
        ss__obj_detach(s, b.e, false);
        s->cnt.c_deletes++;
    }
    free(c->bound);
    c->bound = NULL;
    c->nbound = c->bound_cap = 0;
}

/* The memory a create takes before it has an entry. */
typedef struct create_mem_t {
    bool small;              /* the data in a small slot, else an object segment */
    bool arena;              /* !small: the data in an arena (PUTV, staged
                                CREATE), not a segment */
    bool window;             /* arena: its write window is open */
    int node;
    ss__sloc dloc, mloc;     /* small data (small), meta (a->meta_size) */
    ss__aloc aloc;           /* arena: the data's place (ptr NULL until taken) */
    ss__seg seg;             /* !small: from the pool; fd -1 until taken */
    int fd_ro;               /* !small: the readers' fd, -1 */
    const ss__stage *area;   /* trusted: the creator's area that holds it */
} create_mem_t;

/* Give back what create_take took. */
static void create_untake(ss__store *s, const create_args *a, create_mem_t *m)
{
    if (a->meta_size && m->mloc.ptr) {
        ss__salloc_free(s->mem.salloc, &m->mloc);
        ss__small_check(s, m->mloc.seg);
    }
    if (m->small && m->dloc.ptr) {
        ss__salloc_free(s->mem.salloc, &m->dloc);
        ss__small_check(s, m->dloc.seg);
    }
    if (m->arena && m->aloc.ptr) {
        if (m->window)
            (void)ss__arena_write_close(s->mem.arenas, &m->aloc);
        (void)ss__arena_free(s->mem.arenas, &m->aloc);
        m->window = false;
    }
    if (m->fd_ro >= 0)
        ss__sys_close(m->fd_ro);
    if (m->seg.fd >= 0)
        ss__obj_seg_free(s, &m->seg, true);
}

/* Take the data's memory (a pool segment, or a small slot opened for
 * writing when a PUT carries the bytes) and the meta's (written now): 0,
 * or -errno with nothing held. -ENOSPC: *need says about how much is
 * missing. */
static int create_take(ss__store *s, const create_args *a, create_mem_t *m, uint64_t *need)
{
    int rc;

    *need = m->small ? 4 * SS_MiB : SS_ALIGN_UP(a->size, 4096ull);
    if (m->arena) {
        if (a->size > s->mem.capacity)
            return -ENOSPC;
        /* a new regular arena is charged whole (a dedicated one fits the
         * object) */
        if (a->size <= s->mem.arena_size / 8)
            *need = s->mem.arena_size;
        rc = ss__arena_alloc(s->mem.arenas, a->size, m->node, &m->aloc);
        if (rc < 0)
            return rc;
        ss__amake_note(s, m->node); /* keep the next arena ready there */
        /* the store's mapping is read-only outside write windows
         * (arena.h); a staged create's window opens at its SEAL */
        if (a->riov && (rc = ss__arena_write_open(s->mem.arenas, &m->aloc)) < 0)
            goto fail;
        m->window = a->riov != NULL;
    } else if (a->tarea >= 0) {
        /* trusted: the area (charged as its connection's) is the memory */
        m->area = &a->tc->stages[a->tarea];
        m->fd_ro = ss__trust_fd(a->tc, (uint32_t)a->tarea);
        if (m->fd_ro < 0)
            return m->fd_ro;
    } else if (!m->small) {
        if (a->size > s->mem.capacity)
            return -ENOSPC;
        rc = ss__pool_take_ro(s->mem.pool, a->size, m->node, &m->seg, &m->fd_ro);
        if (rc < 0)
            return rc;
        if (m->fd_ro < 0) {
            rc = m->fd_ro;
            goto fail;
        }
    } else {
        rc = ss__salloc_alloc(s->mem.salloc, a->size, m->node, &m->dloc);
        if (rc < 0)
            return rc;
        /* the store's mapping is read-only outside write windows (alloc.c) */
        if ((a->data || a->riov) && a->size &&
            (rc = ss__salloc_write_open(s->mem.salloc, &m->dloc, a->size, false)) < 0)
            goto fail;
    }
    if (a->meta_size) {
        rc = ss__salloc_alloc(s->mem.salloc, a->meta_size, m->node, &m->mloc);
        if (rc < 0) {
            if (rc == -ENOSPC)
                *need = 4 * SS_MiB;
            goto fail;
        }
        rc = ss__salloc_write_open(s->mem.salloc, &m->mloc, a->meta_size, false);
        if (rc < 0)
            goto fail;
        memcpy(m->mloc.ptr, a->meta, a->meta_size);
    }
    return 0;
fail:
    create_untake(s, a, m);
    return rc;
}

/* Entry e takes the memory: its record, its index entry (CREATED,
 * chained) and the table's counts. */
static void create_entry(ss__store *s, const create_args *a, const create_mem_t *m,
                         const ss__small *dsm, const ss__small *msm, uint32_t e)
{
    ss__obj *o = ss__obj_at(s, e);

    o->node = (int16_t)(m->small || m->arena ? m->node : m->area ? m->area->seg.node : m->seg.node);
    if (m->area) {
        o->fd_ro = m->fd_ro;
        o->seg_size = m->area->seg.size;
        o->small_slot = a->tc->id;
        o->flags2 |= SS_OBJF2_TRUSTED;
    } else if (m->small) {
        o->small_slot = m->dloc.seg;
        if (a->data && a->size)
            memcpy(m->dloc.ptr, a->data, a->size);
    } else if (m->arena) {
        o->small_slot = m->aloc.arena;
    } else {
        o->fd_rw = m->seg.fd;
        o->fd_ro = m->fd_ro;
        o->seg_size = m->seg.size;
    }
    o->meta_slot = m->mloc.seg;

    ss__index_entry *en = ss__ent(s, e);
    ss__index_write_begin(en);
    const ss__seg *ag = m->arena ? ss__arena_segment(s->mem.arenas, m->aloc.arena) : NULL;
    __atomic_store_n(&en->info,
                     SS_IX_INFO(SS_IX_CREATED,
                                m->small ? SS_SEG_SMALL : m->arena ? SS_SEG_ARENA : SS_SEG_OBJECT,
                                m->small   ? 0
                                : m->arena ? ag->backing
                                : m->area  ? m->area->seg.backing
                                           : m->seg.backing,
                                a->meta_size),
                     __ATOMIC_RELAXED);
    memcpy(&en->id, a->id, sizeof(ss_id));
    en->seg_id = m->small   ? (SS_SEG_ID_SMALL | dsm->no)
                 : m->arena ? (SS_SEG_ID_ARENA | ss__arena_serial(s->mem.arenas, m->aloc.arena))
                            : s->tab.next_seg_id++;
    en->size = a->size;
    en->data_off64 = m->small   ? (uint32_t)(m->dloc.off / SS_OBJ_ALIGN)
                     : m->arena ? (uint32_t)(m->aloc.off / SS_OBJ_ALIGN)
                                : 0;
    en->meta_seg = a->meta_size ? msm->no : 0;
    en->meta_off64 = a->meta_size ? (uint32_t)(m->mloc.off / SS_OBJ_ALIGN) : 0;
    ss__index_write_end(en);
    ss__index_link(&s->tab.ix, e);
    s->tab.nobjects++;
    s->tab.object_bytes += a->size;
    s->cnt.c_creates++;
}

/*
 * Make the object's memory and entry. -ENOSPC means "does not fit now"
 * (the caller reclaims or parks); *need says about how much is missing.
 */
static int create_mem(ss__store *s, const create_args *a, uint32_t *out, uint64_t *need)
{
    create_mem_t m = { .small = a->size <= s->mem.small_max, .node = SS_NODE_ANY,
                       .seg = { .fd = -1 }, .fd_ro = -1 };

    m.arena = !m.small && (a->riov || a->stage);
    SS_ASSERT(a->tarea < 0 || (!m.small && !m.arena));
    uint32_t e;
    int rc;

    if (ss__index_find(&s->tab.ix, a->id) >= 0)
        return -EEXIST;
    if (s->mem.numa && a->tarea < 0) { /* a trusted area was placed already */
        m.node = ss__numa_place(s->mem.numa, &s->mem.numa_policy, a->node);
        if (m.node < 0)
            m.node = SS_NODE_ANY;
    }
    if ((rc = create_take(s, a, &m, need)) < 0)
        return rc;
    ss__small *dsm = m.small ? ss__small_rec(s, m.dloc.seg) : NULL;
    ss__small *msm = a->meta_size ? ss__small_rec(s, m.mloc.seg) : NULL;
    if ((m.small && !dsm) || (a->meta_size && !msm)) {
        rc = -ENOMEM;
        goto fail;
    }
    rc = ss__obj_alloc(s, &e);
    if (rc < 0)
        goto fail;
    create_entry(s, a, &m, dsm, msm, e);
    *out = e;
    return 0;
fail:
    create_untake(s, a, &m);
    return rc;
}

/* Reclaim-and-retry loop around create_mem. */
static int create_fit(ss__store *s, const create_args *a, uint32_t *e, uint64_t *need)
{
    int rc;

    for (;;) {
        *need = 0;
        rc = create_mem(s, a, e, need);
        if (rc != -ENOSPC || a->size > s->mem.capacity || !ss__obj_reclaim(s, *need))
            return rc;
    }
}

/* A PUT's body (alone, or one record of a PUT_MANY) and its tail. */
static void put_args(const ss__req_put *r, const char *tail, create_args *a)
{
    memset(a, 0, sizeof(*a));
    a->tarea = -1;
    a->id = &r->id;
    a->size = r->size;
    a->meta_size = r->meta_size;
    a->node = r->node;
    a->flags = r->flags;
    a->meta = tail;
    a->data = tail + r->meta_size;
}

static void args_of(const ss__msg_hdr *h, create_args *a)
{
    const char *body = (const char *)(h + 1);

    memset(a, 0, sizeof(*a));
    a->tarea = -1;
    if (h->type == SS_MSG_PUTV) {
        const ss__req_putv *r = (const void *)body;
        const ss__putv_iov *iov = (const void *)(r + 1);
        put_args(&r->put, (const char *)(iov + r->niov), a);
        a->data = NULL; /* the tail after the iovecs is the meta alone */
        a->riov = iov;
        a->niov = r->niov;
    } else if (h->type == SS_MSG_PUT) {
        const ss__req_put *r = (const void *)body;
        put_args(r, (const char *)(r + 1), a);
    } else {
        const ss__req_create *r = (const void *)body;
        a->id = &r->id;
        a->size = r->size;
        a->meta_size = r->meta_size;
        a->node = r->node;
        a->flags = r->flags;
        a->meta = r + 1;
        a->data = NULL;
    }
}

/*
 * PUTV copies. The object is CREATED with no reference (nobody can name it
 * but this request); an arena object's write window is open (since
 * create_take), a small one's slot is in a timed window. The caller is
 * blocked in its call until the reply, so its buffers are stable, and its
 * pidfd (taken at connect) proves after the copy that the pid was its own
 * throughout (copy.h). The copy engine's workers read it, never the loop
 * (with SEALSTORE_COPY_THREADS=0 the loop does): the caller's pages may
 * take any time to come (a file on slow storage, userfaultfd memory
 * nobody serves), and that must stall only this put, not every client.
 * The hand-off costs a few microseconds. The object carries
 * SS_OBJF2_COPYING and c->copies counts the job, so neither the object
 * nor the connection is freed before putv_done runs on the loop, which
 * publishes or frees the object and answers (a client gone meanwhile gets
 * nothing stored).
 */
/*
 * When the store reads a client's memory at all (else -EPERM, and the
 * library puts another way):
 *  - the connection holds a pidfd of its peer (no proof of whose memory a
 *    pid names otherwise);
 *  - the read cannot pass checks the client's own uid could not: a store
 *    with CAP_SYS_PTRACE (root) reads root's clients only. The kernel
 *    checks the store's credentials, not the client's, and the process
 *    that sends the PUTV need not be the one that connected (a child that
 *    inherited the socket) nor still run the program it ran then (an exec
 *    of a setuid program): for an unprivileged store the kernel's own
 *    rules (same uid, dumpable) keep that within what the sender could
 *    read anyway; a privileged one would read anything;
 *  - the size is not in the band between the small limit and one arena
 *    grain (only when SEALSTORE_SMALL_MAX is below 4 KiB).
 */

typedef struct putv_job {
    ss__copyjob j;
    ss__store *s;
    ss__conn *c;
    uint32_t e, generation, req_id;
    struct iovec iov[];
} putv_job;

/* Close the write window create_take opened on an arena object. */
static void putv_window_close(ss__store *s, uint32_t e)
{
    if (SS_IX_KIND(ss__ent(s, e)->info) == SS_SEG_ARENA) {
        ss__aloc loc = ss__obj_aloc(s, e);
        (void)ss__arena_write_close(s->mem.arenas, &loc);
    }
}

/*
 * An arena object whose bytes just went in through its write window (a
 * PUTV's copy, a staged SEAL's) is published, answered, and only then is
 * its window closed, so the client wakes while the loop closes the window
 * (an mprotect and a TLB flush: 6-15 us, a tenth of a 1 MiB put). The
 * order, on the loop thread, with nothing else run between:
 *   1. the copy is over (a worker's writes are ordered before its
 *      completion handler by the engine's lock; a staged copy ran here);
 *   2. publish (SEALED: readers map the arena read-only through their own
 *      mappings; whether the store's mapping is still writable there
 *      changes nothing they see, and no thread of the store writes it);
 *   3. the answer: a send error only marks the connection for reaping at
 *      the end of the turn (ss__conn_close), so neither the answer nor
 *      publish (parked GETs, subscribers: the same) frees the object, a
 *      bound one included (SS_ASSERT on its generation);
 *   4. the window closes (ss__arena_write_close on the place noted before
 *      1), before the loop runs anything else: a later DELETE, eviction or
 *      spill finds it closed.
 */
static void window_close_at(ss__store *s, const ss__aloc *loc, uint32_t e, uint32_t generation)
{
    SS_ASSERT(ss__ent(s, e)->generation == generation);
    (void)e;
    (void)generation;
    (void)ss__arena_write_close(s->mem.arenas, loc);
}

/* The copy into e ended with rc: the answer it gives. -ESRCH (the caller
 * is gone, its pid may be another's) and what says the kernel cannot read
 * another process here at all (-ENOSYS: no process_vm_readv or
 * pidfd_send_signal, as under some kernels' configs or valgrind) read as
 * -EPERM: the library then puts another way, instead of failing. */
static int putv_rc(int rc)
{
    return rc == -ESRCH || rc == -ENOSYS || rc == -EOPNOTSUPP ? -EPERM : rc;
}

/* The copy into e ended with rc: close its window; the answer. */
static int putv_end(ss__store *s, uint32_t e, int rc)
{
    putv_window_close(s, e);
    return putv_rc(rc);
}

/* The last copy of a connection that is gone has ended: its staging
 * areas (which a worker may have read until now) and the record go. */
static void copies_over(ss__store *s, ss__conn *c)
{
    if (c->dead && !c->copies) {
        ss__stage_drop_all(s, c);
        ss__conn_free_dead(s, c);
    }
}

static void putv_done(void *arg, ss__copyjob *j)
{
    putv_job *pj = arg;
    ss__store *s = pj->s;
    ss__conn *c = pj->c;
    ss__obj *o = ss__obj_at(s, pj->e);
    int rc = putv_rc(j->rc);

    SS_ASSERT(ss__ent(s, pj->e)->generation == pj->generation);
    o->flags2 &= (uint8_t)~SS_OBJF2_COPYING;
    c->copies--;
    if (c->dead || rc < 0) {
        putv_window_close(s, pj->e);
        ss__obj_free(s, pj->e); /* its bytes failed, or nobody waits for it */
        if (!c->dead)
            ss__conn_reply_status(s, c, SS_MSG_PUTV, pj->req_id, rc);
        else
            copies_over(s, c);
    } else {
        /* the window closes last (window_close_at says why it may) */
        ss__aloc loc = ss__obj_aloc(s, pj->e);
        publish(s, pj->e);
        s->cnt.c_remote_puts++;
        ss__conn_reply_status(s, c, SS_MSG_PUTV, pj->req_id, 0);
        window_close_at(s, &loc, pj->e, pj->generation);
    }
    free(pj);
}

/* Start a PUTV's copy into e: 0 done, 1 with the engine (answered by
 * putv_done), or -errno (e left for the caller to free). */
static int putv_fill(ss__store *s, ss__conn *c, const create_args *a, uint32_t e,
                     uint32_t req_id)
{
    const ss__index_entry *en = ss__ent(s, e);
    putv_job *pj = malloc(sizeof(*pj) + (size_t)a->niov * sizeof(struct iovec));
    int rc;

    if (!pj)
        return putv_end(s, e, -ENOMEM);
    for (uint32_t i = 0; i < a->niov; i++)
        pj->iov[i] = (struct iovec){ (void *)(uintptr_t)a->riov[i].base,
                                     (size_t)a->riov[i].len };
    pj->j = (ss__copyjob){ .pidfd = c->pidfd, .pid = c->pid, .src = pj->iov,
                           .nsrc = a->niov,
                           .dst = ss__obj_data(s, e),
                           .size = a->size, .done = putv_done, .arg = pj };
    pj->s = s;
    pj->c = c;
    pj->e = e;
    pj->generation = en->generation;
    pj->req_id = req_id;
    if (c->pidfd < 0) {
        rc = -EPERM; /* no proof of whose memory a pid names: never read it */
    } else if (ss__copy_threads(s->copy.engine) > 0) {
        ss__obj_at(s, e)->flags2 |= SS_OBJF2_COPYING;
        c->copies++;
        ss__copy_submit(s->copy.engine, &pj->j);
        ss__loop_expect(&s->loop, ss__spin_copy_ns(a->size)); /* its completion */
        return 1;
    } else {
        rc = ss__copy_run(&pj->j);
    }
    free(pj);
    return putv_end(s, e, rc);
}

/*
 * One object of a CREATE, a PUT or a PUT_MANY record: checked, made
 * (reclaiming as needed), owned by c's uid, bound to c when asked, and
 * for a put sealed with no reference left. 0 and *e; -ENOSPC: it does
 * not fit now (nothing held, *need says about how much is missing); any
 * other -errno (-EINVAL, -EEXIST, -ENOMEM, ...): nothing held.
 */
static int create_one(ss__store *s, ss__conn *c, const create_args *a, bool put,
                      uint32_t req_id, uint32_t *e, uint64_t *need)
{
    int rc;

    if (a->meta_size > SS_PROTO_MAX_META || (put && !a->riov && a->size > s->mem.small_max))
        return -EINVAL;
    if (a->riov && (c->pidfd < 0 || (s->mem.ptrace_cap && c->uid != 0) ||
                    (a->size > s->mem.small_max && a->size < SS_ARENA_GRAIN)))
        return -EPERM; /* see putv_may_read */
    rc = create_fit(s, a, e, need);
    if (rc < 0)
        return rc;
    if (a->tarea >= 0) /* its memory: released with it, whatever frees it */
        ss__trust_hold(s, a->tc, (uint32_t)a->tarea, *e);
    ss__obj_set_uid(s, *e, (uint32_t)c->uid);
    if ((a->flags & SS_CREATEF_CREATOR) && bound_add(s, c, *e) < 0) {
        if (a->riov)
            putv_window_close(s, *e);
        ss__obj_free(s, *e);
        return -ENOMEM;
    }
    if (a->riov && (rc = putv_fill(s, c, a, *e, req_id)) != 0) {
        if (rc < 0)
            ss__obj_free(s, *e);
        return rc; /* 1: putv_done answers */
    }
    if (put)
        publish(s, *e);
    if (a->riov)
        s->cnt.c_remote_puts++;
    return 0;
}

int ss__req_create_try(ss__store *s, ss__conn *c, const ss__msg_hdr *h, bool put,
                       uint64_t *need)
{
    create_args a;
    uint32_t e;
    int rc;

    args_of(h, &a);
    /* trusted producers: written in place in an area that then holds the
     * object; else copy-on-seal (ss__stage). No area to be had makes it
     * the old way. */
    bool trust = !put && s->mem.trusted && a.size > s->mem.small_max &&
                 a.size <= s->mem.trust_limit;
    int node = trust && s->mem.numa ? ss__numa_place(s->mem.numa, &s->mem.numa_policy, a.node)
                                    : SS_NODE_ANY;
    int area = (trust || (!put && a.size > s->mem.small_max && a.size <= s->mem.stage_limit))
                   ? ss__stage_take(s, c, a.size, node, trust)
                   : -1;
    a.stage = area >= 0 && !trust;
    if (area >= 0 && trust) {
        a.tc = c;
        a.tarea = area;
    }
    rc = create_one(s, c, &a, put, h->req_id, &e, need);
    if (rc == 1)
        return 0; /* a PUTV copying: answered when done */
    if (rc == -ENOSPC && a.size <= s->mem.capacity)
        return -ENOSPC;
    if (rc < 0 || put) {
        ss__conn_reply_status(s, c, h->type, h->req_id, rc);
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
    if (a.stage || a.tarea >= 0) {
        /* the creator writes the staging area; the arena place stays the
         * store's alone (the reference is not SENT: no arena fd went). A
         * trusted area holds the object itself (its readers' fd not
         * SENT either: the creator maps the area) */
        ss__stage *g = &c->stages[area];
        if (a.tarea < 0) /* a trusted one is held since create_one */
            ss__stage_bind(s, c, (uint32_t)area, e);
        m.r.data.seg_id = g->seg_id;
        m.r.data.seg_size = g->seg.size;
        m.r.data.offset = 0;
        m.r.data.kind = SS_SEG_STAGE;
        m.r.data.fd_index = g->sent ? SS_FD_NONE : 0;
        ss__conn_send(s, c, &m, sizeof(m), &g->seg.fd, g->sent ? 0 : 1);
        g->sent = true;
    } else if (SS_IX_KIND(en->info) == SS_SEG_OBJECT) {
        int fds[2] = { o->fd_ro, o->fd_rw };
        m.r.data.seg_size = o->seg_size;
        m.r.data.offset = 0;
        m.r.data.fd_index = 0;
        m.r.data.kind = SS_SEG_OBJECT;
        r->refs |= SS_REF_SENT;
        ss__conn_send(s, c, &m, sizeof(m), fds, 2);
    } else {
        const ss__seg *g = ss__salloc_segment(s->mem.salloc, o->small_slot);
        m.r.data.seg_size = g ? g->size : 0;
        m.r.data.offset = (uint64_t)en->data_off64 * SS_OBJ_ALIGN;
        m.r.data.fd_index = SS_FD_NONE;
        m.r.data.kind = SS_SEG_SMALL;
        ss__conn_send(s, c, &m, sizeof(m), NULL, 0);
    }
    return 0;
}

/*
 * PUT_MANY: each record runs as a PUT would (create_one), in order, and
 * the batch is answered once with a status per record. A record that
 * does not fit after reclaiming gets -ENOSPC at once: a batch never parks
 * (one parked message would hold every later record hostage to the
 * first that does not fit, and a partial answer is what the caller asked
 * for). A later duplicate of an earlier record's id gets -EEXIST like
 * any duplicate. The decoder checked the records and that the tail is
 * exactly their bytes, so walking it stays inside the message.
 */
static void put_many(ss__store *s, ss__conn *c, const ss__msg_hdr *h)
{
    const ss__req_put_many *rq = (const void *)(h + 1);
    const ss__req_put *rec = (const void *)(rq + 1);
    const char *tail = (const char *)(rec + rq->n);
    struct {
        ss__msg_hdr h;
        ss__rep_put_many r;
        int32_t st[SS_PROTO_MAX_BATCH];
    } m;
    int32_t stored = 0;

    memset(&m, 0, sizeof(m));
    for (uint32_t i = 0; i < rq->n; i++) {
        create_args a;
        uint64_t need;
        uint32_t e;

        put_args(&rec[i], tail, &a);
        tail += (size_t)a.meta_size + (size_t)a.size;
        m.st[i] = create_one(s, c, &a, true, h->req_id, &e, &need);
        if (m.st[i] == 0)
            stored++;
    }
    size_t len = sizeof(m.h) + sizeof(m.r) + (size_t)rq->n * sizeof(int32_t);
    ss__proto_hdr(&m.h, SS_MSG_PUT_MANY, h->req_id, (uint32_t)len, stored, SS_MSGF_REPLY);
    m.r.n = rq->n;
    ss__conn_send(s, c, &m, len, NULL, 0);
}

/* ======================================================= CREATE parking */

void ss__req_do_create(ss__store *s, ss__conn *c, const ss__msg_hdr *h, bool put)
{
    uint64_t need = 0;

    if (ss__req_create_try(s, c, h, put, &need) != -ENOSPC)
        return;
    if (s->mem.create_timeout_ms == 0 || s->loop.stopping || c->nparked >= SS_PARKED_MAX) {
        ss__conn_reply_status(s, c, h->type, h->req_id, -ENOSPC);
        return;
    }
    if (!ss__parked_fits(s, c, ss__parked_cost(h->len))) {
        ss__conn_reply_status(s, c, h->type, h->req_id, -ENOBUFS);
        return;
    }
    ss__parked *pk = ss__parked_new(s, c, put ? SS_PK_PUT : SS_PK_CREATE, h->req_id,
                                    ss__park_deadline_of(s->mem.create_timeout_ms));
    void *copy = pk ? malloc(h->len) : NULL;
    if (!copy) {
        if (pk)
            ss__parked_free(s, pk);
        ss__conn_reply_status(s, c, h->type, h->req_id, -ENOMEM);
        return;
    }
    memcpy(copy, h, h->len);
    pk->msg = copy;
    pk->n = h->len;
    ss__parked_charge(s, pk, h->len);
    SS_DL_APPEND(s->park.cq_head, s->park.cq_tail, pk, qprev, qnext);
    ss__parked_set_need(s, pk, need);
    s->cnt.c_waits++;
}

void ss__req_retry_creates(ss__store *s)
{
    s->park.retry_creates = false;
    /* restores first: a GET of a found object is waiting on each */
    if (s->disk.rq_head)
        ss__disk_restore_retry(s);
    for (ss__parked *pk = s->park.cq_head, *nx; pk; pk = nx) {
        nx = pk->qnext;
        const ss__msg_hdr *h = pk->msg;
        uint64_t need = 0;
        if (ss__req_create_try(s, pk->c, h, pk->type == SS_PK_PUT, &need) == -ENOSPC) {
            ss__parked_set_need(s, pk, need);
            continue;
        }
        /* answered; nx may have been answered too only through its own
         * run, so the walk stays valid */
        ss__parked_free(s, pk);
    }
}

/* ============================================================ SEAL, ABORT */

static void publish(ss__store *s, uint32_t e)
{
    ss__obj *o = ss__obj_at(s, e);
    ss__index_entry *en = ss__ent(s, e);

    ss__ent_set_state(s, e, SS_IX_SEALED);
    s->tab.nsealed++;
    s->cnt.c_seals++;
    if (o->refs == 0)
        ss__lru_push(s, e);
    ss_id id = en->id;
    ss__conn_event(s, SS_EVENT_SEALED, &id, en->size);
    ss__park_wake(s, &id);
}

/* A seal succeeded: publish, drop the creator's reference on this object
 * if the SEAL asked (after publish, so a GET of the same client answered
 * by publish still finds the segment sent), then answer. */
static void sealed(ss__store *s, ss__conn *c, uint32_t e, uint32_t req_id, bool release)
{
    publish(s, e);
    if (release) {
        ss__ref *r = ss__ref_find(c, e);

        if (r) { /* the creator's: own_created found it, only an abort drops it */
            ss__ref_drop(s, c, r, 1);
            s->cnt.c_releases++;
        }
    }
    ss__conn_reply_status(s, c, SS_MSG_SEAL, req_id, 0);
}

/* The CREATED object of client c with this id, or -ENOENT. Only its
 * creator holds a reference to a CREATED object (store_int.h). */
static int64_t own_created(ss__store *s, ss__conn *c, const ss_id *id)
{
    int64_t e = ss__index_find(&s->tab.ix, id);

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
        ss__stage_forget(s, c, e);
        ss__ref_del(c, r);
        o->refs -= n;
    }
    SS_ASSERT(o->refs == 0);
    o->refs = 0;
    s->cnt.c_aborts++;
    ss__obj_free(s, e);
}

static void seal_job_done(ss__store *s, ss__sealjob *j);

/*
 * Staged copies above this many bytes run on the copy engine's workers
 * (in parallel ranges from SS_COPY_SPLIT_DEFAULT up), not on the loop: a
 * 1 MiB memcpy holds the loop about 100 us here, which other clients'
 * requests wait through; a 64 MiB one would hold it 7-8 ms. At 1 MiB and
 * below the copy stays on the loop, where it saves the two wake-ups of a
 * hand-off (each 20-40 us when the other vCPU idles on this VM), more
 * than the copy itself. Hugetlb areas (read with pread, up to the 4 MiB
 * staging limit there) and SEALSTORE_COPY_THREADS=0 copy on the loop.
 */
#define SS_STAGE_LOOP_MAX (1ull << 20)

/* A staged SEAL's copy with the copy engine (SS_OBJF2_STAGING). */
typedef struct stage_job {
    ss__copyjob j;
    ss__store *s;
    ss__conn *c;
    uint32_t e, generation, req_id;
    bool release;
    struct iovec iov;
} stage_job;

static void staged_sealed(ss__store *s, ss__conn *c, uint32_t e, uint32_t req_id, bool release);

/* The engine is done with a staged SEAL's copy (stage_copy): publish and
 * answer (window closed last), or answer the error with the object still
 * CREATED (the creator may retry or abort), or, the creator gone, free it. */
static void stage_done(void *arg, ss__copyjob *j)
{
    stage_job *sj = arg;
    ss__store *s = sj->s;
    ss__conn *c = sj->c;
    ss__obj *o = ss__obj_at(s, sj->e);

    SS_ASSERT(ss__ent(s, sj->e)->generation == sj->generation);
    o->flags2 &= (uint8_t)~SS_OBJF2_STAGING;
    c->copies--;
    if (c->dead || j->rc < 0) {
        putv_window_close(s, sj->e);
        if (c->dead) {
            SS_ASSERT(o->refs == 0);
            s->cnt.c_aborts++;
            ss__obj_free(s, sj->e); /* its creator left: nobody can name it */
            copies_over(s, c);
        } else {
            ss__conn_reply_status(s, c, SS_MSG_SEAL, sj->req_id, j->rc);
        }
    } else {
        staged_sealed(s, c, sj->e, sj->req_id, sj->release);
    }
    free(sj);
}

/*
 * A staged object's bytes (ss__stage): copied from the area lent for it
 * into its arena place, in that place's write window: on the loop up to
 * SS_STAGE_LOOP_MAX, by the copy engine above (stage_done answers). pread,
 * not a mapping, where the store has none (hugetlb): whatever the client
 * did to its area (holes punched in a hugetlb file included) reads as
 * bytes or an error, never a fault in the store; a shmem area's holes
 * read as zeros through the store's mapping, and its size is sealed. 0
 * with the window still open (staged_sealed closes it), 1 with the engine
 * (the object SS_OBJF2_STAGING, counted in c->copies, so neither it nor
 * the connection nor its areas are freed before stage_done), -EINVAL (no
 * area lent for it: not staged), -errno (the window closed again).
 */
static int stage_copy(ss__store *s, ss__conn *c, uint32_t e, uint32_t req_id, bool release)
{
    const ss__stage *g = ss__stage_of(s, c, e);
    const ss__index_entry *en = ss__ent(s, e);
    ss__aloc loc = ss__obj_aloc(s, e);
    const ss__seg *ag = ss__arena_segment(s->mem.arenas, loc.arena);
    uint64_t done = 0;
    int rc;

    if (!g || !ag || g->seg.size < en->size)
        return -EINVAL;
    if ((rc = ss__arena_write_open(s->mem.arenas, &loc)) < 0)
        return rc;
    if (g->seg.map && en->size > SS_STAGE_LOOP_MAX && ss__copy_threads(s->copy.engine) > 0) {
        stage_job *sj = malloc(sizeof(*sj));

        if (sj) { /* else on the loop, below */
            *sj = (stage_job){ .s = s, .c = c, .e = e, .generation = en->generation,
                               .req_id = req_id, .release = release,
                               .iov = { g->seg.map, (size_t)en->size } };
            sj->j = (ss__copyjob){ .pidfd = -1, .src = &sj->iov, .nsrc = 1,
                                   .dst = (unsigned char *)ag->map + loc.off,
                                   .size = en->size, .done = stage_done, .arg = sj };
            ss__obj_at(s, e)->flags2 |= SS_OBJF2_STAGING;
            c->copies++;
            ss__copy_submit(s->copy.engine, &sj->j);
            ss__loop_expect(&s->loop, ss__spin_copy_ns(en->size)); /* its completion */
            return 1;
        }
    }
    if (g->seg.map) { /* shmem: its read-only mapping (store_obj.c) */
        memcpy((char *)ag->map + loc.off, g->seg.map, (size_t)en->size);
        done = en->size;
    }
    while (done < en->size) {
        ssize_t r = ss__sys_pread(g->seg.fd, (char *)ag->map + loc.off + done,
                                  (size_t)(en->size - done), done);
        if (r <= 0) {
            rc = r < 0 ? (int)r : -EIO;
            break;
        }
        done += (uint64_t)r;
    }
    if (rc < 0)
        (void)ss__arena_write_close(s->mem.arenas, &loc);
    return rc;
}

/* A staged object's copy is in (stage_copy, window open): publish, answer
 * and close the window, in that order (window_close_at says why). */
static void staged_sealed(ss__store *s, ss__conn *c, uint32_t e, uint32_t req_id, bool release)
{
    ss__aloc loc = ss__obj_aloc(s, e);
    uint32_t generation = ss__ent(s, e)->generation;

    sealed(s, c, e, req_id, release);
    window_close_at(s, &loc, e, generation);
}

/* A client's seal job to the worker: its one job there. */
static void seal_submit(ss__store *s, ss__sealjob *j)
{
    j->c->seal_busy = true;
    j->done = seal_job_done;
    ss__seal_submit(s, j);
    ss__loop_expect(&s->loop, SS_SPIN_SEAL_NS); /* its completion */
}

void ss__req_do_seal(ss__store *s, ss__conn *c, const ss__msg_hdr *h)
{
    const ss__req_seal *rq = (const void *)(h + 1);
    int64_t e = own_created(s, c, &rq->id);

    if (e < 0) {
        ss__conn_reply_status(s, c, SS_MSG_SEAL, h->req_id, -ENOENT);
        return;
    }
    ss__obj *o = ss__obj_at(s, (uint32_t)e);
    ss__index_entry *en = ss__ent(s, (uint32_t)e);
    if ((o->flags & SS_OBJF_SEALING) || (o->flags2 & SS_OBJF2_STAGING)) {
        ss__conn_reply_status(s, c, SS_MSG_SEAL, h->req_id, -EBUSY);
        return;
    }
    if (SS_IX_KIND(en->info) == SS_SEG_SMALL) {
        if (rq->payload_size != en->size) {
            ss__conn_reply_status(s, c, SS_MSG_SEAL, h->req_id, -EINVAL);
            return;
        }
        const ss__seg *g = ss__salloc_segment(s->mem.salloc, o->small_slot);
        ss__sloc at = { .seg = o->small_slot, .off = (uint64_t)en->data_off64 * SS_OBJ_ALIGN };
        int rc = en->size ? ss__salloc_write_open(s->mem.salloc, &at, en->size, false) : 0;
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
    if (o->flags2 & SS_OBJF2_TRUSTED) {
        /* written in place in the creator's area: nothing to copy */
        int rc = ss__trust_seal(s, c, (uint32_t)e);
        if (rc < 0) /* still created: the creator may retry or abort */
            ss__conn_reply_status(s, c, SS_MSG_SEAL, h->req_id, rc);
        else
            sealed(s, c, (uint32_t)e, h->req_id, rq->flags & SS_SEALF_RELEASE);
        return;
    }
    if (SS_IX_KIND(en->info) == SS_SEG_ARENA) {
        bool release = rq->flags & SS_SEALF_RELEASE;
        int rc = stage_copy(s, c, (uint32_t)e, h->req_id, release);
        if (rc < 0) /* still created: the creator may retry or abort */
            ss__conn_reply_status(s, c, SS_MSG_SEAL, h->req_id, rc);
        else if (rc == 0)
            staged_sealed(s, c, (uint32_t)e, h->req_id, release);
        return; /* else stage_done answers */
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
        seal_submit(s, j);
    } else {
        if (c->seal_tail)
            c->seal_tail->next = j;
        else
            c->seal_queue = j;
        c->seal_tail = j;
    }
}

/* The worker is done with a client's seal job (ss__sealjob.done). */
static void seal_job_done(ss__store *s, ss__sealjob *j)
{
    ss__conn *c = j->c;
    ss__obj *o = ss__obj_at(s, j->e);

    o->flags &= (uint8_t)~SS_OBJF_SEALING;
    c->seal_busy = false;
    if (o->flags & SS_OBJF_ORPHAN) {
        o->flags &= (uint8_t)~SS_OBJF_ORPHAN;
        s->cnt.c_aborts++;
        ss__obj_free(s, j->e); /* its creator is gone: nobody else holds it */
    } else if (j->rc == 0) {
        ss__sys_close(o->fd_rw);
        o->fd_rw = -1;
        sealed(s, c, j->e, j->req_id, j->release);
        ss__pool_writer_done(s->mem.pool); /* after the reply: refills wait */
    } else if (j->rc == -EBUSY) {
        ss__conn_reply_status(s, c, SS_MSG_SEAL, j->req_id, -EBUSY);
    } else {
        /* -EPERM: seals tampered with; anything else (fallocate ENOSPC
         * on an exhausted hugetlb pool): never publish what we could
         * not verify or account. The reply says so (SS_MSGF_ABORTED) and
         * keeps the cause: the creator's reference went with the object,
         * and its library drops its hold on this flag alone. */
        ss__msg_hdr r;

        ss__log_info("store: seal failed (%s): object aborted", ss_strerror(j->rc));
        abort_obj(s, c, j->e);
        ss__proto_hdr(&r, SS_MSG_SEAL, j->req_id, sizeof(r), j->rc,
                      SS_MSGF_REPLY | SS_MSGF_ABORTED);
        ss__conn_send(s, c, &r, sizeof(r), NULL, 0);
    }
    free(j);
    if (c->dead) {
        ss__conn_free_dead(s, c);
    } else if (c->seal_queue) {
        ss__sealjob *q = c->seal_queue;
        c->seal_queue = q->next;
        if (!c->seal_queue)
            c->seal_tail = NULL;
        seal_submit(s, q);
    }
}

void ss__req_do_abort(ss__store *s, ss__conn *c, const ss__msg_hdr *h)
{
    const ss__req_id *rq = (const void *)(h + 1);
    int64_t e = own_created(s, c, &rq->id);

    if (e < 0) {
        ss__conn_reply_status(s, c, SS_MSG_ABORT, h->req_id, -ENOENT);
        return;
    }
    if ((ss__obj_at(s, (uint32_t)e)->flags & SS_OBJF_SEALING) ||
        (ss__obj_at(s, (uint32_t)e)->flags2 & SS_OBJF2_STAGING)) {
        ss__conn_reply_status(s, c, SS_MSG_ABORT, h->req_id, -EBUSY);
        return;
    }
    abort_obj(s, c, (uint32_t)e);
    ss__conn_reply_status(s, c, SS_MSG_ABORT, h->req_id, 0);
}

/* ================================================ RELEASE, CONTAINS, DELETE */

void ss__req_do_release(ss__store *s, ss__conn *c, const ss__msg_hdr *h)
{
    const ss__req_release *rq = (const void *)(h + 1);
    const ss_id *ids = (const void *)(rq + 1);

    for (uint32_t i = 0; i < rq->n && i < SS_PROTO_MAX_IDS; i++) {
        ss__ref *r = ss__ref_held(s, c, &ids[i]);
        if (!r || ss__ent_state(s, r->key - 1) == SS_IX_CREATED) {
            /* the library checks this locally: a bad one is a hostile or
             * broken client, counted and ignored */
            s->cnt.c_proto_errors++;
            continue;
        }
        ss__ref_drop(s, c, r, 1);
        s->cnt.c_releases++;
    }
    if (s->park.retry_creates && (s->park.cq_head || s->disk.rq_head))
        ss__req_retry_creates(s);
}

void ss__req_do_contains(ss__store *s, ss__conn *c, const ss__msg_hdr *h)
{
    const ss__req_id *rq = (const void *)(h + 1);

    /* a spilled object is found from the index alone: no I/O */
    ss__conn_reply_status(s, c, SS_MSG_CONTAINS, h->req_id,
                          ss__obj_find_stored(s, &rq->id) >= 0 ? 1 : 0);
}

void ss__req_do_delete(ss__store *s, ss__conn *c, const ss__msg_hdr *h)
{
    const ss__req_id *rq = (const void *)(h + 1);
    int64_t e = ss__index_find(&s->tab.ix, &rq->id);
    ss__parked *pk = NULL;
    int rc = 0;

    if (e < 0)
        rc = -ENOENT;
    else if (ss__ent_state(s, (uint32_t)e) != SS_IX_SEALED &&
             ss__ent_state(s, (uint32_t)e) != SS_IX_SPILLED)
        rc = -EBUSY;
    else if (ss__disk_delete_waits(s, (uint32_t)e) &&
             !(pk = ss__parked_new(s, c, SS_PK_DELETE, h->req_id, UINT64_MAX)))
        rc = -ENOMEM;
    else {
        /* with a disk copy, or an older copy of the id on its way out:
         * answered once no record of it can come back (the protocol is
         * beside ss__spop) */
        if (pk)
            ss__disk_delete_durable(s, (uint32_t)e, pk);
        ss__obj_detach(s, (uint32_t)e, false);
        s->cnt.c_deletes++;
    }
    if (!pk)
        ss__conn_reply_status(s, c, SS_MSG_DELETE, h->req_id, rc);
    if (s->park.retry_creates && (s->park.cq_head || s->disk.rq_head))
        ss__req_retry_creates(s);
}

/* ============================================================ LIST, STATS */

void ss__req_do_list(ss__store *s, ss__conn *c, const ss__msg_hdr *h)
{
    const ss__req_list *rq = (const void *)(h + 1);
    ss__msg_hdr *oh = (ss__msg_hdr *)s->req.obuf;
    ss__rep_list *rl = (ss__rep_list *)(oh + 1);
    ss__list_entry *le = (ss__list_entry *)(rl + 1);
    uint32_t max = rq->max, n = 0;
    uint64_t e = rq->cursor, scanned = 0;

    if (max == 0 || max > SS_PROTO_MAX_LIST) {
        ss__conn_reply_status(s, c, SS_MSG_LIST, h->req_id, -EINVAL);
        return;
    }
    for (; e < s->tab.ix.high && n < max && scanned < LIST_SCAN_MAX; e++, scanned++) {
        const ss__index_entry *en = ss__index_at(&s->tab.ix, (uint32_t)e);
        uint32_t st = SS_IX_STATE(en->info);
        if (st != SS_IX_CREATED && st != SS_IX_SEALED && st != SS_IX_SPILLED)
            continue;
        const ss__obj *o = ss__obj_at(s, (uint32_t)e);
        memset(&le[n], 0, sizeof(le[n]));
        le[n].id = en->id;
        le[n].state = st == SS_IX_CREATED ? SS_OBJ_CREATED : SS_OBJ_SEALED;
        le[n].size = en->size;
        le[n].meta_size = SS_IX_META_SIZE(en->info);
        if (st == SS_IX_SPILLED) {
            le[n].backing = SS_BACKING_4K; /* none: the client says "disk" */
        } else if (SS_IX_KIND(en->info) == SS_SEG_SMALL) {
            /* the small segment's backing (clients say "small" by size) */
            const ss__seg *g = ss__salloc_segment(s->mem.salloc, o->small_slot);
            le[n].backing = g ? g->backing : SS_BACKING_4K;
        } else {
            le[n].backing = (uint8_t)SS_IX_BACKING(en->info);
        }
        le[n].flags = (uint8_t)((st == SS_IX_SPILLED ? SS_LISTF_SPILLED : 0) |
                                ((o->flags & SS_OBJF_BOUND) ? SS_LISTF_CREATOR : 0));
        le[n].node = st == SS_IX_SPILLED ? -1 : o->node;
        le[n].refs = o->refs + (st == SS_IX_SEALED ? ss__pin_count(s, (uint32_t)e) : 0);
        le[n].uid = o->uid;
        n++;
    }
    rl->next_cursor = e < s->tab.ix.high ? e : 0;
    rl->n = n;
    rl->reserved = 0;
    uint32_t len = (uint32_t)(sizeof(*oh) + sizeof(*rl) + (size_t)n * sizeof(*le));
    ss__proto_hdr(oh, SS_MSG_LIST, h->req_id, len, (int32_t)n, SS_MSGF_REPLY);
    ss__conn_send(s, c, s->req.obuf, len, NULL, 0);
}

uint64_t ss__req_bookkeeping(const ss__store *s)
{
    return ss__index_bytes(&s->tab.ix) + (uint64_t)s->tab.ix.high * sizeof(ss__obj) +
           (uint64_t)s->disk.locs_cap * sizeof(ss__diskloc) +
           (uint64_t)s->disk.ops_cap * sizeof(ss__spop);
}

void ss__req_fill_stats(ss__store *s, ss_stats *st)
{
    ss__salloc_stats sa;
    ss__pool_stats ps;

    memset(st, 0, sizeof(*st));
    st->size = sizeof(*st);
    st->version = SS_STATS_VERSION;
    st->capacity = s->mem.capacity;
    st->resident_bytes = atomic_load(&s->tab.resident);
    st->objects = s->tab.nobjects;
    st->sealed_objects = s->tab.nsealed;
    st->object_bytes = s->tab.object_bytes;
    st->bytes_by_backing[0] = (uint64_t)atomic_load(&ss__g_stats.seg_bytes_4k.cur);
    st->bytes_by_backing[1] = (uint64_t)atomic_load(&ss__g_stats.seg_bytes_thp.cur);
    st->bytes_by_backing[2] = (uint64_t)atomic_load(&ss__g_stats.seg_bytes_2m.cur);
    st->bytes_by_backing[3] = (uint64_t)atomic_load(&ss__g_stats.seg_bytes_1g.cur);
    ss__salloc_stats_get(s->mem.salloc, &sa);
    st->small_live_bytes = sa.live_bytes;
    st->small_used_bytes = sa.used_bytes;
    st->small_segment_bytes = sa.segment_bytes;
    if (s->mem.pool) {
        ss__pool_stats_get(s->mem.pool, &ps);
        st->pool_ready_bytes = ps.ready_bytes;
        st->pool_hits = ps.hits;
        st->pool_misses = ps.misses;
        st->pool_yields = ps.yields;
    }
    st->seal_waits = atomic_load(&ss__g_stats.seal_waits);
    st->backing_fallbacks = atomic_load(&ss__g_stats.backing_fallbacks);
    for (int i = 0; i < 8; i++) {
        int64_t v = atomic_load(&ss__g_stats.node_bytes[i]);
        st->node_bytes[i] = v > 0 ? (uint64_t)v : 0;
    }
    st->clients = s->conn.nclients;
    st->creates = s->cnt.c_creates;
    st->seals = s->cnt.c_seals;
    st->aborts = s->cnt.c_aborts;
    st->gets = s->cnt.c_gets;
    st->releases = s->cnt.c_releases;
    st->deletes = s->cnt.c_deletes;
    st->evictions = s->cnt.c_evictions;
    st->waits = s->cnt.c_waits;
    st->wait_timeouts = s->cnt.c_wait_timeouts;
    st->protocol_errors = s->cnt.c_proto_errors;
    st->bookkeeping_bytes = ss__req_bookkeeping(s);
    st->parked_requests = s->park.nparked;
    st->parked_bytes = s->park.parked_bytes;
    st->fd_deferred = s->cnt.c_fd_deferred;
    ss__arena_stats as;
    ss__arena_stats_get(s->mem.arenas, &as);
    st->arena_bytes = as.arena_bytes + atomic_load_explicit(&s->amake.pending,
                                                            memory_order_relaxed);
    st->arena_live_bytes = as.live_bytes;
    st->remote_puts = s->cnt.c_remote_puts;
    st->trusted_producers = s->mem.trusted;
    st->trusted_bytes = ss__trust_bytes(s);
    ss__disk_fill_stats(s, st);
}

void ss__req_do_stats(ss__store *s, ss__conn *c, const ss__msg_hdr *h)
{
    struct {
        ss__msg_hdr h;
        ss_stats st;
    } m;

    ss__req_fill_stats(s, &m.st);
    ss__proto_hdr(&m.h, SS_MSG_STATS, h->req_id, sizeof(m), 0, SS_MSGF_REPLY);
    ss__conn_send(s, c, &m, sizeof(m), NULL, 0);
}

/* ============================================================== dispatch */

/* Check and run one request (a message as received). */
void ss__req_dispatch(ss__store *s, ss__conn *c, const void *buf, size_t len, unsigned nfds)
{
    int type = ss__proto_check_request(buf, len, nfds);
    const ss__msg_hdr *h = buf;

    if (type < 0) {
        ss__conn_proto_error(s, c, buf, len, type);
        return;
    }
    if (!c->hello && type != SS_MSG_HELLO) {
        /* HELLO first: anything else is not one of our clients */
        s->cnt.c_proto_errors++;
        ss__conn_close(s, c);
        return;
    }
    if (c->subscriber) {
        /* an event stream carries no requests */
        s->cnt.c_proto_errors++;
        ss__conn_close(s, c);
        return;
    }
    if (s->disk.scanning && scan_gate(s, c, buf, len, nfds))
        return;
    switch (type) {
    case SS_MSG_HELLO:
        hello(s, c, h);
        break;
    case SS_MSG_CREATE:
        ss__req_do_create(s, c, h, false);
        break;
    case SS_MSG_PUT:
        ss__req_do_create(s, c, h, true);
        break;
    case SS_MSG_PUTV:
        ss__req_do_create(s, c, h, true);
        break;
    case SS_MSG_PUT_MANY:
        put_many(s, c, h);
        break;
    case SS_MSG_SEAL:
        ss__req_do_seal(s, c, h);
        break;
    case SS_MSG_ABORT:
        ss__req_do_abort(s, c, h);
        break;
    case SS_MSG_GET:
        ss__req_do_get(s, c, h);
        break;
    case SS_MSG_RELEASE:
        ss__req_do_release(s, c, h);
        break;
    case SS_MSG_CONTAINS:
        ss__req_do_contains(s, c, h);
        break;
    case SS_MSG_DELETE:
        ss__req_do_delete(s, c, h);
        break;
    case SS_MSG_LIST:
        ss__req_do_list(s, c, h);
        break;
    case SS_MSG_STATS:
        ss__req_do_stats(s, c, h);
        break;
    case SS_MSG_SUBSCRIBE:
        subscribe(s, c, h);
        break;
    case SS_MSG_INDEX:
        ss__req_do_index(s, c, h);
        break;
    case SS_MSG_PINS:
        ss__req_do_pins(s, c, h);
        break;
    case SS_MSG_UNPIN:
        if (s->tab.npinwait)
            ss__pin_rescan(s);
        break;
    default:
        ss__conn_proto_error(s, c, buf, len, -SS_E_PROTO);
        break;
    }
}

/* ================================================================ clients */

/* A connection went away (registered with the connection layer): abort
 * its unsealed objects, drop its refs, cancel its parked requests and
 * queued seals, delete the objects bound to it. */
void ss__req_conn_gone(ss__store *s, ss__conn *c)
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
    ss__ref_drop_all(s, c);
    bound_delete_all(s, c);
    if ((s->park.cq_head || s->disk.rq_head) && s->park.retry_creates)
        ss__req_retry_creates(s);
}

/* ================================================================ timers */

/* Loop hook: the earliest parked deadline, and the slow retry tick. */
uint64_t ss__req_timer_deadline(void *arg, uint64_t now)
{
    const ss__store *s = arg;
    uint64_t d = s->park.heap_len ? s->park.heap[0]->deadline_ns : UINT64_MAX;

    /* parked creates and restores also retry on a slow tick: the populator
     * may free memory from its own thread */
    if (s->park.cq_head || s->disk.rq_head) {
        uint64_t tick = now + RETRY_TICK_NS;
        if (tick < d)
            d = tick;
    }
    /* spilling resumes after a failure's pause: look again then */
    if (s->disk.sp && s->disk.spill_backoff_until && s->disk.spill_backoff_until < d)
        d = s->disk.spill_backoff_until;
    return d;
}

/* Loop hook: retry parked creates, then expire what is due. */
void ss__req_timer_turn(void *arg, uint64_t now)
{
    ss__store *s = arg;

    if (s->park.cq_head || s->disk.rq_head)
        ss__req_retry_creates(s);
    while (s->park.heap_len && s->park.heap[0]->deadline_ns <= now) {
        ss__parked *pk = s->park.heap[0];
        if (pk->type == SS_PK_GET && pk->nrestore && !pk->expired) {
            /* its own timeout bounds the ids that do not exist; the found
             * ones being restored get up to the create timeout, unless a
             * restore waits for memory nothing is freeing */
            pk->expired = true;
            int err = 0;
            for (uint32_t i = 0; i < pk->n && !err; i++)
                if (pk->w[i].kind == SS_WN_RESTORE)
                    err = ss__disk_restore_stuck(s, &pk->w[i].id);
            if (err) {
                ss__conn_reply_status(s, pk->c, SS_MSG_GET, pk->req_id, err);
                ss__parked_free(s, pk);
                continue;
            }
            ss__park_timer_del(s, pk);
            pk->deadline_ns = pk->hard_deadline_ns;
            if (pk->deadline_ns != UINT64_MAX && ss__park_timer_add(s, pk) < 0) {
                ss__conn_reply_status(s, pk->c, SS_MSG_GET, pk->req_id, -ENOMEM);
                ss__parked_free(s, pk);
            }
            continue;
        }
        s->cnt.c_wait_timeouts++;
        if (pk->type == SS_PK_GET) {
            if (pk->nrestore) {
                /* a restore could not get memory (or the disk) in time */
                ss__conn_reply_status(s, pk->c, SS_MSG_GET, pk->req_id, -ENOSPC);
                ss__parked_free(s, pk);
            } else {
                ss__req_get_complete(s, pk);
            }
        } else {
            const ss__msg_hdr *h = pk->msg;
            ss__conn_reply_status(s, pk->c, h->type, pk->req_id, -ENOSPC);
            ss__parked_free(s, pk);
        }
    }
}

/* ================================================================== stop */

/* At stop, after the loop: every parked request is answered now (GETs with what is sealed,
 * creates with -ENOSPC... as if their time had come), spills and restores
 * in flight and pending seals finish. */
void ss__req_stop(ss__store *s)
{
    gate_open(s); /* held requests: answered as at stop */
    while (s->park.heap_len || s->park.cq_head) {
        ss__parked *pk = s->park.heap_len ? s->park.heap[0] : s->park.cq_head;
        if (pk->type == SS_PK_GET) {
            ss__req_get_complete(s, pk);
        } else {
            ss__conn_reply_status(s, pk->c, ((const ss__msg_hdr *)pk->msg)->type, pk->req_id,
                                  -ENOSPC);
            ss__parked_free(s, pk);
        }
    }
    /* GETs without a deadline: walk the clients */
    for (ss__conn *c = s->conn.conns; c; c = c->next)
        for (ss__parked *pk = c->parked, *nx; pk; pk = nx) {
            nx = pk->cnext;
            if (pk->type == SS_PK_GET)
                ss__req_get_complete(s, pk);
        }
    /* before the worker goes: a finished restore still needs its seal;
     * deletes made durable meanwhile are answered */
    ss__disk_drain(s);
    for (ss__conn *c = s->conn.conns; c; c = c->next)
        while (c->parked) {
            /* a DELETE the disk did not finish in time */
            ss__conn_reply_status(s, c, SS_MSG_DELETE, c->parked->req_id, -ETIMEDOUT);
            ss__parked_free(s, c->parked);
        }
    ss__seal_finish(s);
}

/* Loop hook: parked creates and restores retry once memory was freed. */
void ss__req_retry_turn(void *arg, uint64_t now)
{
    ss__store *s = arg;

    (void)now;
    if (s->park.retry_creates && (s->park.cq_head || s->disk.rq_head))
        ss__req_retry_creates(s);
}

/* ================================================================ wiring */

void ss__req_init(ss__store *s)
{
    static const ss__conn_handlers conn = {
        .message = ss__req_dispatch,
        .gone = ss__req_conn_gone,
        .budget = ss__req_get_budget,
    };

    ss__conn_register(s, &conn);
    ss__park_on_ready(s, ss__req_get_complete);
    ss__disk_register(s, gate_open);
}
