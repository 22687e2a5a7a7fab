/* SPDX-License-Identifier: MIT */
/*
 * Parked requests: their records and what they cost, the timer heap of
 * their deadlines, the waiter hash of parked GETs by id, and the lists
 * parked requests wait on (creates for memory, GETs for the fd budget).
 * Owns ss__store.park (and the ss__conn fields marked "park"); calls the
 * connection layer (store_conn.c: a client's reading resumes or pauses)
 * and two handlers registered with it: the GET layer's "this GET may be
 * answered" (ss__park_on_ready) and the disk glue's "this DELETE no longer
 * waits on its op" (ss__park_on_unpark). Which request waits for what, and
 * why, is the request layers' business (store_get.c, store_req.c).
 *
 * A parked GET links one wait node per id in a hash keyed by id, for its
 * whole life:
 *   WAIT     the id is not sealed yet: a seal wakes exactly its waiters;
 *   RESTORE  the id is spilled: its restore (started by the GET, shared by
 *            every GET of it: one restore however many wait) wakes it;
 *   HOLD     the id is sealed in memory: the node keeps it there until the
 *            reply (spilling never picks an object a parked GET holds, so
 *            one GET cannot spill what another restore brought back).
 * Deadlines (GET timeout, create timeout) live in a binary min-heap; the
 * loop sleeps until the earliest (the request layer's timer hook).
 *
 * What parking costs is bounded and counted: each parked request is
 * charged the heap it holds (ss__parked.bytes: the request, its ids and
 * wait nodes, or the CREATE/PUT message it keeps) to its client and to the
 * store; past SS_PARKED_CLIENT_MAX for the client or SS_PARKED_BYTES_MAX
 * for the store a request that would park is answered -ENOBUFS at once
 * (ss_stats.parked_requests / parked_bytes show the figures). Freed heap
 * is handed back to the kernel with malloc_trim once enough accumulated
 * (ss__conn_heap_freed).
 */
#include "store_int.h"

#include <stdlib.h>
#include <string.h>

#include "sys.h"

#define WAIT_BUCKETS 4096u

int ss__park_init(ss__store *s)
{
    s->park.wait_nbuckets = WAIT_BUCKETS;
    s->park.wait_buckets = calloc(WAIT_BUCKETS, sizeof(*s->park.wait_buckets));
    return s->park.wait_buckets ? 0 : -ENOMEM;
}

void ss__park_fini(ss__store *s)
{
    free(s->park.heap);
    s->park.heap = NULL;
    free(s->park.wait_buckets);
    s->park.wait_buckets = NULL;
}

void ss__park_on_ready(ss__store *s, void (*ready)(ss__store *s, ss__parked *pk))
{
    s->park.ready = ready;
}

void ss__park_on_unpark(ss__store *s, void (*unpark)(ss__store *s, ss__parked *pk))
{
    s->park.unpark = unpark;
}

/* ============================================================ wait hash */

void ss__park_wait_link(ss__store *s, ss__waitnode *w)
{
    uint32_t b = ss__park_wait_bucket(s, &w->id);

    w->prev = NULL;
    w->next = s->park.wait_buckets[b];
    if (w->next)
        w->next->prev = w;
    s->park.wait_buckets[b] = w;
    w->linked = true;
}

static void wait_unlink(ss__store *s, ss__waitnode *w)
{
    if (!w->linked)
        return;
    if (w->prev)
        w->prev->next = w->next;
    else
        s->park.wait_buckets[ss__park_wait_bucket(s, &w->id)] = w->next;
    if (w->next)
        w->next->prev = w->prev;
    w->linked = false;
}

bool ss__park_id_held(const ss__store *s, const ss_id *id)
{
    for (ss__waitnode *w = s->park.wait_buckets[ss__park_wait_bucket(s, id)]; w; w = w->next)
        if (!memcmp(&w->id, id, sizeof(*id)))
            return true;
    return false;
}

bool ss__park_restore_wanted(const ss__store *s, const ss_id *id)
{
    for (ss__waitnode *w = s->park.wait_buckets[ss__park_wait_bucket(s, id)]; w; w = w->next)
        if (w->kind == SS_WN_RESTORE && !memcmp(&w->id, id, sizeof(*id)))
            return true;
    return false;
}

/* ======================================================= parked requests */

uint64_t ss__park_deadline_of(int64_t timeout_ms)
{
    if (timeout_ms < 0)
        return UINT64_MAX;
    return ss__now_ns() + (uint64_t)timeout_ms * 1000000ull;
}

void ss__parked_free(ss__store *s, ss__parked *pk)
{
    ss__conn *c = pk->c;

    ss__park_timer_del(s, pk);
    if (pk->type == SS_PK_DELETE)
        s->park.unpark(s, pk);
    for (uint32_t i = 0; pk->w && i < pk->n; i++)
        wait_unlink(s, &pk->w[i]);
    if (pk->type != SS_PK_GET) {
        s->park.parked_need -= pk->need;
        if (pk->qprev)
            pk->qprev->qnext = pk->qnext;
        else if (s->park.cq_head == pk)
            s->park.cq_head = pk->qnext;
        if (pk->qnext)
            pk->qnext->qprev = pk->qprev;
        else if (s->park.cq_tail == pk)
            s->park.cq_tail = pk->qprev;
    }
    if (pk->fdwait) {
        SS_DL_UNLINK(s->park.fdw_head, s->park.fdw_tail, pk, qprev, qnext);
        c->nfdwait--;
    }
    if (pk->cprev)
        pk->cprev->cnext = pk->cnext;
    else
        c->parked = pk->cnext;
    if (pk->cnext)
        pk->cnext->cprev = pk->cprev;
    c->nparked--;
    s->park.nparked--;
    c->parked_bytes -= pk->bytes;
    s->park.parked_bytes -= pk->bytes;
    ss__conn_heap_freed(s, pk->bytes);
    free(pk->w);
    free(pk->msg);
    free(pk);
    if (c->in_paused && !c->dead && c->nparked < SS_PARKED_MAX)
        ss__conn_interest(s, c);
}

/* Heap a parked request holds: itself, plus `extra` (ids, wait nodes, a
 * message copy). */
uint64_t ss__parked_cost(uint64_t extra)
{
    return sizeof(ss__parked) + extra;
}

/* May c park a request costing `bytes` more? */
bool ss__parked_fits(const ss__store *s, const ss__conn *c, uint64_t bytes)
{
    return c->parked_bytes + bytes <= s->park.parked_client_max &&
           s->park.parked_bytes + bytes <= s->park.parked_bytes_max;
}

void ss__parked_charge(ss__store *s, ss__parked *pk, uint64_t bytes)
{
    pk->bytes += bytes;
    pk->c->parked_bytes += bytes;
    s->park.parked_bytes += bytes;
}

ss__parked *ss__parked_new(ss__store *s, ss__conn *c, int type, uint32_t req_id,
                           uint64_t deadline_ns)
{
    ss__parked *pk = calloc(1, sizeof(*pk));

    if (!pk)
        return NULL;
    pk->c = c;
    pk->type = type;
    pk->req_id = req_id;
    pk->heap_pos = UINT32_MAX;
    pk->deadline_ns = deadline_ns;
    pk->hard_deadline_ns = UINT64_MAX;
    if (deadline_ns != UINT64_MAX && ss__park_timer_add(s, pk) < 0) {
        free(pk);
        return NULL;
    }
    pk->cnext = c->parked;
    if (c->parked)
        c->parked->cprev = pk;
    c->parked = pk;
    c->nparked++;
    s->park.nparked++;
    ss__parked_charge(s, pk, ss__parked_cost(0));
    if (c->nparked >= SS_PARKED_MAX)
        ss__conn_interest(s, c); /* stop reading until some complete */
    return pk;
}

void ss__parked_set_need(ss__store *s, ss__parked *pk, uint64_t need)
{
    s->park.parked_need += need - pk->need;
    pk->need = need;
}


/* ================================================================ timers */
/*
 * Deadlines of parked requests (GET timeouts, create timeouts) in a binary
 * min-heap; each parked request knows its position, so cancelling one (a
 * GET woken by a seal, a client gone) is O(log n).
 */
static void heap_swap(ss__store *s, uint32_t i, uint32_t j)
{
    ss__parked *t = s->park.heap[i];
    s->park.heap[i] = s->park.heap[j];
    s->park.heap[j] = t;
    s->park.heap[i]->heap_pos = i;
    s->park.heap[j]->heap_pos = j;
}

static void heap_up(ss__store *s, uint32_t i)
{
    while (i > 0) {
        uint32_t p = (i - 1) / 2;
        if (s->park.heap[p]->deadline_ns <= s->park.heap[i]->deadline_ns)
            break;
        heap_swap(s, i, p);
        i = p;
    }
}

static void heap_down(ss__store *s, uint32_t i)
{
    for (;;) {
        uint32_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < s->park.heap_len && s->park.heap[l]->deadline_ns < s->park.heap[m]->deadline_ns)
            m = l;
        if (r < s->park.heap_len && s->park.heap[r]->deadline_ns < s->park.heap[m]->deadline_ns)
            m = r;
        if (m == i)
            return;
        heap_swap(s, i, m);
        i = m;
    }
}

int ss__park_timer_add(ss__store *s, ss__parked *pk)
{
    if (SS_ARRAY_RESERVE(s->park.heap, s->park.heap_cap, s->park.heap_len + 1, 64) < 0)
        return -ENOMEM;
    pk->heap_pos = s->park.heap_len;
    s->park.heap[s->park.heap_len++] = pk;
    heap_up(s, pk->heap_pos);
    return 0;
}

void ss__park_timer_del(ss__store *s, ss__parked *pk)
{
    uint32_t i = pk->heap_pos;

    if (i == UINT32_MAX)
        return;
    pk->heap_pos = UINT32_MAX;
    if (i != --s->park.heap_len) {
        s->park.heap[i] = s->park.heap[s->park.heap_len];
        s->park.heap[i]->heap_pos = i;
        heap_down(s, i);
        heap_up(s, i);
    }
    /* a burst of parked requests gone: do not keep its array */
    if (s->park.heap_cap > 64 && s->park.heap_len < s->park.heap_cap / 4) {
        ss__parked **nh = realloc(s->park.heap, (s->park.heap_cap / 2) * sizeof(*nh));
        if (nh) {
            s->park.heap = nh;
            s->park.heap_cap /= 2;
        }
    }
}

/* ============================================================= wake-ups */

/* Answer the GETs chained through qnext (GETs never use the create FIFO). */
static void complete_list(ss__store *s, ss__parked *ready)
{
    while (ready) {
        ss__parked *pk = ready;
        ready = pk->qnext;
        pk->qnext = NULL;
        s->park.ready(s, pk);
    }
}

static void add_ready(ss__parked **list, ss__parked *pk)
{
    if (pk->ready)
        return;
    pk->ready = true;
    pk->qnext = *list;
    *list = pk;
}

void ss__park_wake(ss__store *s, const ss_id *id)
{
    ss__parked *ready = NULL;

    for (ss__waitnode *w = s->park.wait_buckets[ss__park_wait_bucket(s, id)]; w; w = w->next) {
        if (w->kind == SS_WN_HOLD || memcmp(&w->id, id, sizeof(*id)))
            continue;
        ss__parked *pk = w->pk;
        if (w->kind == SS_WN_RESTORE)
            pk->nrestore--;
        w->kind = SS_WN_HOLD;
        pk->missing--;
        if (pk->missing == 0 || (pk->expired && pk->nrestore == 0))
            add_ready(&ready, pk);
    }
    complete_list(s, ready);
}

static int restore_waiters(ss__store *s, const ss_id *id, int err, bool expired_only)
{
    ss__parked *ready = NULL;
    int n = 0;

    for (ss__waitnode *w = s->park.wait_buckets[ss__park_wait_bucket(s, id)]; w; w = w->next) {
        if (w->kind != SS_WN_RESTORE || memcmp(&w->id, id, sizeof(*id)) ||
            (expired_only && !w->pk->expired))
            continue;
        ss__parked *pk = w->pk;
        pk->nrestore--;
        w->kind = SS_WN_WAIT; /* gone: like any id not sealed (yet) */
        if (err < 0 && !pk->err)
            pk->err = err;
        if (pk->err || (pk->expired && pk->nrestore == 0)) {
            add_ready(&ready, pk);
            n++;
        }
    }
    complete_list(s, ready);
    return n;
}

void ss__park_restore_done(ss__store *s, const ss_id *id, int err)
{
    restore_waiters(s, id, err, false);
}

int ss__park_restore_expired(ss__store *s, const ss_id *id, int err)
{
    return restore_waiters(s, id, err, true);
}
