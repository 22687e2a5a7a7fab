/* SPDX-License-Identifier: MIT */
/*
 * Parked requests, GET and timers.
 *
 * A request that cannot be answered now is parked: a CREATE or PUT that
 * does not fit (in a FIFO, retried whenever memory is freed, until
 * SEALSTORE_CREATE_TIMEOUT, then -ENOSPC), or a GET naming ids that are not
 * sealed yet or are spilled to disk.
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
 * loop sleeps until the earliest. A GET's own timeout bounds the wait for
 * ids that do not exist yet; it never cuts short a restore, which is a
 * found object being brought back: when the timeout passes with restores
 * pending, the GET waits on for them up to the create timeout (a restore
 * may need memory like a create), then fails with -ENOSPC. Unless nothing
 * is freeing memory for such a restore (spilling failed, e.g. the spill
 * disk is full, and no spill is in flight): then the GET fails at its own
 * timeout (at once for timeout 0) with -SS_E_FULL (or the spill error),
 * see ss__restore_stuck.
 *
 * What parking costs is bounded and counted: each parked request is
 * charged the heap it holds (ss__parked.bytes: the request, its ids and
 * wait nodes, or the CREATE/PUT message it keeps) to its client and to the
 * store; past SS_PARKED_CLIENT_MAX for the client or SS_PARKED_BYTES_MAX
 * for the store a request that would park is answered -ENOBUFS at once
 * (ss_stats.parked_requests / parked_bytes show the figures). Freed heap
 * is handed back to the kernel with malloc_trim once enough accumulated.
 *
 * Fd budget (store_net.c): a GET reply that would pass the client's or the
 * store's budget of unread fds is not built; the GET waits, answered, on
 * the store's fdw FIFO (through qprev/qnext, which GETs use for nothing
 * else once answered) and is built when the budget allows
 * (ss__fdwait_retry, from the loop's tick). Its client's requests are not
 * read meanwhile. At stop replies go out regardless.
 */
#include "store_int.h"

#include <stdlib.h>
#include <string.h>

#include "sys.h"

/* ============================================================ wait hash */

static inline uint32_t wait_bucket(const ss__store *s, const ss_id *id)
{
    return (uint32_t)(ss__index_hash(id, s->ix.key ^ 0x5bd1e995u) & (s->wait_nbuckets - 1));
}

static void wait_link(ss__store *s, ss__waitnode *w)
{
    uint32_t b = wait_bucket(s, &w->id);

    w->prev = NULL;
    w->next = s->wait_buckets[b];
    if (w->next)
        w->next->prev = w;
    s->wait_buckets[b] = w;
    w->linked = true;
}

static void wait_unlink(ss__store *s, ss__waitnode *w)
{
    if (!w->linked)
        return;
    if (w->prev)
        w->prev->next = w->next;
    else
        s->wait_buckets[wait_bucket(s, &w->id)] = w->next;
    if (w->next)
        w->next->prev = w->prev;
    w->linked = false;
}

bool ss__id_held(const ss__store *s, const ss_id *id)
{
    for (ss__waitnode *w = s->wait_buckets[wait_bucket(s, id)]; w; w = w->next)
        if (!memcmp(&w->id, id, sizeof(*id)))
            return true;
    return false;
}

bool ss__id_restore_wanted(const ss__store *s, const ss_id *id)
{
    for (ss__waitnode *w = s->wait_buckets[wait_bucket(s, id)]; w; w = w->next)
        if (w->kind == SS_WN_RESTORE && !memcmp(&w->id, id, sizeof(*id)))
            return true;
    return false;
}

/* ======================================================= parked requests */

uint64_t ss__deadline_of(int64_t timeout_ms)
{
    if (timeout_ms < 0)
        return UINT64_MAX;
    return ss__now_ns() + (uint64_t)timeout_ms * 1000000ull;
}

void ss__parked_free(ss__store *s, ss__parked *pk)
{
    ss__conn *c = pk->c;

    ss__heap_del(s, pk);
    if (pk->type == SS_PK_DELETE)
        ss__spill_unpark(s, pk);
    for (uint32_t i = 0; pk->w && i < pk->n; i++)
        wait_unlink(s, &pk->w[i]);
    if (pk->type != SS_PK_GET) {
        s->parked_need -= pk->need;
        if (pk->qprev)
            pk->qprev->qnext = pk->qnext;
        else if (s->cq_head == pk)
            s->cq_head = pk->qnext;
        if (pk->qnext)
            pk->qnext->qprev = pk->qprev;
        else if (s->cq_tail == pk)
            s->cq_tail = pk->qprev;
    }
    if (pk->fdwait) {
        SS_DL_UNLINK(s->fdw_head, s->fdw_tail, pk, qprev, qnext);
        c->nfdwait--;
    }
    if (pk->cprev)
        pk->cprev->cnext = pk->cnext;
    else
        c->parked = pk->cnext;
    if (pk->cnext)
        pk->cnext->cprev = pk->cprev;
    c->nparked--;
    s->nparked--;
    c->parked_bytes -= pk->bytes;
    s->parked_bytes -= pk->bytes;
    ss__heap_freed(s, pk->bytes);
    free(pk->w);
    free(pk->msg);
    free(pk);
    if (c->in_paused && !c->dead && c->nparked < SS_PARKED_MAX)
        ss__store_epoll_mod(s, c);
}

/* Heap a parked request holds: itself, plus `extra` (ids, wait nodes, a
 * message copy). */
static uint64_t parked_cost(uint64_t extra)
{
    return sizeof(ss__parked) + extra;
}

/* May c park a request costing `bytes` more? */
static bool parked_fits(const ss__store *s, const ss__conn *c, uint64_t bytes)
{
    return c->parked_bytes + bytes <= s->parked_client_max &&
           s->parked_bytes + bytes <= s->parked_bytes_max;
}

static void parked_charge(ss__store *s, ss__parked *pk, uint64_t bytes)
{
    pk->bytes += bytes;
    pk->c->parked_bytes += bytes;
    s->parked_bytes += bytes;
}

#define TRIM_AFTER (8ull << 20) /* heap freed before asking malloc to return it */

void ss__heap_freed(ss__store *s, uint64_t bytes)
{
    /* Thousands of parked requests and wait nodes freed at once leave
     * free chunks scattered through malloc's arenas that it would keep
     * (only a free top is returned by itself): give them back once a few
     * MiB accumulated, so a burst of clients does not raise the store's
     * RSS for good. */
    s->trim_freed += bytes;
    if (s->trim_freed >= TRIM_AFTER) {
        s->trim_freed = 0;
        ss__sys_heap_trim();
    }
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
    if (deadline_ns != UINT64_MAX && ss__heap_add(s, pk) < 0) {
        free(pk);
        return NULL;
    }
    pk->cnext = c->parked;
    if (c->parked)
        c->parked->cprev = pk;
    c->parked = pk;
    c->nparked++;
    s->nparked++;
    parked_charge(s, pk, parked_cost(0));
    if (c->nparked >= SS_PARKED_MAX)
        ss__store_epoll_mod(s, c); /* stop reading until some complete */
    return pk;
}

static void set_need(ss__store *s, ss__parked *pk, uint64_t need)
{
    s->parked_need += need - pk->need;
    pk->need = need;
}

/* ======================================================= CREATE parking */

void ss__obj_create(ss__store *s, ss__conn *c, const ss__msg_hdr *h, bool put)
{
    uint64_t need = 0;

    if (ss__obj_create_run(s, c, h, put, &need) != -ENOSPC)
        return;
    if (s->create_timeout_ms == 0 || s->stopping || c->nparked >= SS_PARKED_MAX) {
        ss__conn_reply_status(s, c, h->type, h->req_id, -ENOSPC);
        return;
    }
    if (!parked_fits(s, c, parked_cost(h->len))) {
        ss__conn_reply_status(s, c, h->type, h->req_id, -ENOBUFS);
        return;
    }
    ss__parked *pk = ss__parked_new(s, c, put ? SS_PK_PUT : SS_PK_CREATE, h->req_id,
                                    ss__deadline_of(s->create_timeout_ms));
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
    parked_charge(s, pk, h->len);
    SS_DL_APPEND(s->cq_head, s->cq_tail, pk, qprev, qnext);
    set_need(s, pk, need);
    s->c_waits++;
}

void ss__obj_retry_creates(ss__store *s)
{
    s->retry_creates = false;
    /* restores first: a GET of a found object is waiting on each */
    if (s->rq_head)
        ss__restore_retry(s);
    for (ss__parked *pk = s->cq_head, *nx; pk; pk = nx) {
        nx = pk->qnext;
        const ss__msg_hdr *h = pk->msg;
        uint64_t need = 0;
        if (ss__obj_create_run(s, pk->c, h, pk->type == SS_PK_PUT, &need) == -ENOSPC) {
            set_need(s, pk, need);
            continue;
        }
        /* answered; nx may have been answered too only through its own
         * run, so the walk stays valid */
        ss__parked_free(s, pk);
    }
}

/* ================================================================== GET */

static void segref_none(ss__segref *r)
{
    memset(r, 0, sizeof(*r));
    r->fd_index = SS_FD_NONE;
    r->kind = SS_SEG_SMALL;
}

int64_t ss__get_find(ss__store *s, const ss_id *id)
{
    int64_t e = ss__index_find(&s->ix, id);

    if (e < 0 || ss__ent_state(s, (uint32_t)e) != SS_IX_SEALED)
        return -ENOENT;
    return e;
}

int64_t ss__find_sealed_any(ss__store *s, const ss_id *id)
{
    int64_t e = ss__index_find(&s->ix, id);
    uint32_t st;

    if (e < 0)
        return -ENOENT;
    st = ss__ent_state(s, (uint32_t)e);
    return st == SS_IX_SEALED || st == SS_IX_SPILLED ? e : -ENOENT;
}

static void small_segref(ss__store *s, ss__conn *c, uint32_t slot, uint64_t off,
                         uint64_t size, ss__segref *r, int *fds, uint32_t *nfds)
{
    ss__small *sm = ss__small_rec(s, slot);

    r->seg_id = SS_SEG_ID_SMALL | sm->no;
    r->seg_size = sm->seg->size;
    r->offset = off;
    r->size = size;
    r->kind = SS_SEG_SMALL;
    if (slot < c->sent_cap && c->sent_small[slot] == sm->no) {
        r->fd_index = SS_FD_NONE;
    } else {
        r->fd_index = *nfds;
        fds[(*nfds)++] = sm->ro_fd;
        c->sent_small[slot] = sm->no;
    }
}

/* Answer a GET now with what is sealed in memory (taking refs). false:
 * answered; true: nothing done, its fds would pass the fd budget. */
static bool get_reply(ss__store *s, ss__conn *c, uint32_t req_id, const ss_id *ids, uint32_t n)
{
    ss__msg_hdr *h = (ss__msg_hdr *)s->obuf;
    ss__rep_get *rg = (ss__rep_get *)(h + 1);
    ss__get_entry *ge = (ss__get_entry *)(rg + 1);
    int fds[SS_PROTO_MAX_FDS];
    uint32_t nfds = 0, found = 0;
    int rc;

    /* Pass 1: everything that can fail, before any reference is taken;
     * and how many fds the reply carries at most (an id listed twice is
     * counted twice). */
    uint32_t maxslot = 0, need_fds = 0;
    for (uint32_t i = 0; i < n; i++) {
        int64_t e = ss__get_find(s, &ids[i]);
        if (e < 0)
            continue;
        ss__obj *o = ss__obj_at(s, (uint32_t)e);
        ss__index_entry *en = ss__ent(s, (uint32_t)e);
        uint32_t slots[2], ns = 0;
        if (SS_IX_KIND(en->info) == SS_SEG_SMALL) {
            slots[ns++] = o->small_slot;
        } else {
            const ss__ref *r = ss__ref_find(c, (uint32_t)e);
            need_fds += !r || !(r->refs & SS_REF_SENT);
        }
        if (en->meta_seg)
            slots[ns++] = o->meta_slot;
        for (uint32_t k = 0; k < ns; k++) {
            ss__small *sm = ss__small_rec(s, slots[k]);
            if (!sm) {
                rc = -ENOMEM;
                goto fail;
            }
            if ((rc = ss__small_ro_fd(s, sm)) < 0)
                goto fail;
            if (slots[k] > maxslot)
                maxslot = slots[k];
            need_fds += slots[k] >= c->sent_cap || c->sent_small[slots[k]] != sm->no;
        }
        found++;
    }
    if (!s->stopping && !ss__fd_may_send(s, c, need_fds))
        return true;
    if (found && maxslot >= c->sent_cap) {
        uint32_t ncap = c->sent_cap ? c->sent_cap : 16;
        while (ncap <= maxslot)
            ncap *= 2;
        uint32_t *ns = realloc(c->sent_small, ncap * sizeof(*ns));
        if (!ns) {
            rc = -ENOMEM;
            goto fail;
        }
        memset(ns + c->sent_cap, 0, (ncap - c->sent_cap) * sizeof(*ns));
        c->sent_small = ns;
        c->sent_cap = ncap;
    }
    if (c->ref_cap < (c->ref_used + found + 1) * 2) {
        while (c->ref_cap < (c->ref_used + found + 1) * 2)
            if ((rc = ss__ref_grow(c)) < 0)
                goto fail;
    }

    /* Pass 2: fill, take refs (cannot fail now). */
    found = 0;
    memset(ge, 0, (size_t)n * sizeof(*ge));
    for (uint32_t i = 0; i < n; i++) {
        int64_t e = ss__get_find(s, &ids[i]);
        segref_none(&ge[i].data);
        segref_none(&ge[i].meta);
        if (e < 0) {
            ge[i].status = -ENOENT;
            continue;
        }
        ss__obj *o = ss__obj_at(s, (uint32_t)e);
        ss__index_entry *en = ss__ent(s, (uint32_t)e);
        ss__ref *r;
        ss__ref_take(s, c, (uint32_t)e, &r);
        /* most recently used: to the LRU tail when released */
        found++;
        ge[i].status = 0;
        ge[i].uid = o->uid;
        if (SS_IX_KIND(en->info) == SS_SEG_OBJECT) {
            ss__segref *d = &ge[i].data;
            d->seg_id = en->seg_id;
            d->seg_size = o->seg_size;
            d->offset = 0;
            d->size = en->size;
            d->kind = SS_SEG_OBJECT;
            if (r->refs & SS_REF_SENT) {
                d->fd_index = SS_FD_NONE;
            } else {
                d->fd_index = nfds;
                fds[nfds++] = o->fd_ro;
                r->refs |= SS_REF_SENT;
            }
        } else {
            small_segref(s, c, o->small_slot, (uint64_t)en->data_off64 * SS_OBJ_ALIGN,
                         en->size, &ge[i].data, fds, &nfds);
        }
        if (en->meta_seg)
            small_segref(s, c, o->meta_slot, (uint64_t)en->meta_off64 * SS_OBJ_ALIGN,
                         SS_IX_META_SIZE(en->info), &ge[i].meta, fds, &nfds);
    }
    rg->n = n;
    rg->nfds = nfds;
    uint32_t len = (uint32_t)(sizeof(*h) + sizeof(*rg) + (size_t)n * sizeof(*ge));
    ss__proto_hdr(h, SS_MSG_GET, req_id, len, (int32_t)found, SS_MSGF_REPLY);
    s->c_gets += found;
    ss__conn_send(s, c, s->obuf, len, fds, nfds);
    return false;
fail:
    ss__conn_reply_status(s, c, SS_MSG_GET, req_id, rc);
    return false;
}

/* An answered GET waits for the fd budget: off the timer heap, to the
 * tail of the store's FIFO; its client's requests are not read meanwhile. */
static void fdw_add(ss__store *s, ss__parked *pk)
{
    ss__conn *c = pk->c;

    ss__heap_del(s, pk);
    pk->fdwait = true;
    pk->ready = true; /* wake-ups leave it alone */
    SS_DL_APPEND(s->fdw_head, s->fdw_tail, pk, qprev, qnext);
    c->nfdwait++;
    s->c_fd_deferred++;
    if (!c->in_paused)
        ss__store_epoll_mod(s, c);
    ss__fd_poll_soon(s);
}

/* Answer pk (then free it), or leave it waiting for the fd budget: true if
 * it was answered. */
static bool get_try(ss__store *s, ss__parked *pk)
{
    if (pk->err)
        ss__conn_reply_status(s, pk->c, SS_MSG_GET, pk->req_id, pk->err);
    else if (get_reply(s, pk->c, pk->req_id, pk->msg, pk->n))
        return false;
    ss__parked_free(s, pk);
    return true;
}

void ss__get_complete(ss__store *s, ss__parked *pk)
{
    if (!get_try(s, pk) && !pk->fdwait)
        fdw_add(s, pk);
}

void ss__fdwait_retry(ss__store *s)
{
    /* in order; one that still does not fit does not hold up others
     * (another client's budget may allow theirs). The tick refreshed the
     * counts: a client with no room for even one fd is skipped without
     * building its replies (it may have a thousand waiting). */
    for (ss__parked *pk = s->fdw_head, *nx; pk; pk = nx) {
        nx = pk->qnext;
        if (ss__fd_room(s, pk->c, 1))
            get_try(s, pk);
    }
}

/* A GET answerable now whose fds do not fit the budget: it waits, with
 * a copy of its ids (charged, never refused: its client is not read from
 * while it waits, so there is at most one such per read). */
static void get_defer(ss__store *s, ss__conn *c, uint32_t req_id, const ss_id *ids, uint32_t n)
{
    ss__parked *pk = ss__parked_new(s, c, SS_PK_GET, req_id, UINT64_MAX);

    if (pk)
        pk->msg = malloc((size_t)n * sizeof(ss_id));
    if (!pk || !pk->msg) {
        if (pk)
            ss__parked_free(s, pk);
        ss__conn_reply_status(s, c, SS_MSG_GET, req_id, -ENOMEM);
        return;
    }
    memcpy(pk->msg, ids, (size_t)n * sizeof(ss_id));
    pk->n = n;
    parked_charge(s, pk, (uint64_t)n * sizeof(ss_id));
    fdw_add(s, pk);
}

void ss__obj_get(ss__store *s, ss__conn *c, const ss__msg_hdr *h)
{
    const ss__req_get *rq = (const void *)(h + 1);
    const ss_id *ids = (const void *)(rq + 1);
    uint32_t n = rq->n, missing = 0, nrestore = 0;
    uint32_t restore[SS_PROTO_MAX_IDS];

    if (n == 0 || n > SS_PROTO_MAX_IDS || rq->timeout_ms < -1) {
        ss__conn_reply_status(s, c, SS_MSG_GET, h->req_id, -EINVAL);
        return;
    }
    for (uint32_t i = 0; i < n; i++) {
        int64_t e = ss__index_find(&s->ix, &ids[i]);
        uint32_t st = e < 0 ? SS_IX_FREE : ss__ent_state(s, (uint32_t)e);
        if (st == SS_IX_SEALED)
            continue;
        missing++;
        if (st == SS_IX_SPILLED && !s->stopping)
            nrestore++;
    }
    uint64_t cost = (uint64_t)n * (sizeof(ss_id) + sizeof(ss__waitnode));
    if (nrestore == 0 && (missing == 0 || rq->timeout_ms == 0 || s->stopping)) {
        if (get_reply(s, c, h->req_id, ids, n))
            get_defer(s, c, h->req_id, ids, n);
        return;
    }
    if (c->nparked >= SS_PARKED_MAX) {
        ss__conn_reply_status(s, c, SS_MSG_GET, h->req_id, -EAGAIN);
        return;
    }
    if (!parked_fits(s, c, parked_cost(cost))) {
        ss__conn_reply_status(s, c, SS_MSG_GET, h->req_id, -ENOBUFS);
        return;
    }
    uint64_t hard = ss__deadline_of(s->create_timeout_ms);
    bool expired = nrestore && rq->timeout_ms == 0;
    ss__parked *pk = ss__parked_new(s, c, SS_PK_GET, h->req_id,
                                    expired ? hard : ss__deadline_of(rq->timeout_ms));
    if (!pk) {
        ss__conn_reply_status(s, c, SS_MSG_GET, h->req_id, -ENOMEM);
        return;
    }
    pk->n = n;
    pk->expired = expired;
    pk->hard_deadline_ns = hard;
    pk->msg = malloc((size_t)n * sizeof(ss_id));
    pk->w = calloc(n, sizeof(ss__waitnode));
    if (!pk->msg || !pk->w) {
        ss__parked_free(s, pk);
        ss__conn_reply_status(s, c, SS_MSG_GET, h->req_id, -ENOMEM);
        return;
    }
    memcpy(pk->msg, ids, (size_t)n * sizeof(ss_id));
    parked_charge(s, pk, cost);
    nrestore = 0;
    for (uint32_t i = 0; i < n; i++) {
        int64_t e = ss__index_find(&s->ix, &ids[i]);
        uint32_t st = e < 0 ? SS_IX_FREE : ss__ent_state(s, (uint32_t)e);
        ss__waitnode *w = &pk->w[i];
        w->pk = pk;
        w->id = ids[i];
        if (st == SS_IX_SEALED) {
            w->kind = SS_WN_HOLD;
        } else if (st == SS_IX_SPILLED && !s->stopping) {
            w->kind = SS_WN_RESTORE;
            restore[nrestore++] = (uint32_t)e;
        } else {
            w->kind = SS_WN_WAIT;
        }
        wait_link(s, w);
    }
    pk->missing = missing;
    pk->nrestore = nrestore;
    s->c_waits++;
    /* Last, and without touching pk: a restore that cannot even start
     * tells its waiters at once, which may answer (and free) pk. */
    for (uint32_t i = 0; i < nrestore; i++)
        ss__restore_start(s, restore[i]);
}

/* Answer the GETs chained through qnext (GETs never use the create FIFO). */
static void complete_list(ss__store *s, ss__parked *ready)
{
    while (ready) {
        ss__parked *pk = ready;
        ready = pk->qnext;
        pk->qnext = NULL;
        ss__get_complete(s, pk);
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

void ss__wake_waiters(ss__store *s, const ss_id *id)
{
    ss__parked *ready = NULL;

    for (ss__waitnode *w = s->wait_buckets[wait_bucket(s, id)]; w; w = w->next) {
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

    for (ss__waitnode *w = s->wait_buckets[wait_bucket(s, id)]; w; w = w->next) {
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

void ss__restore_waiters_done(ss__store *s, const ss_id *id, int err)
{
    restore_waiters(s, id, err, false);
}

int ss__restore_waiters_expired(ss__store *s, const ss_id *id, int err)
{
    return restore_waiters(s, id, err, true);
}

void ss__obj_contains(ss__store *s, ss__conn *c, const ss__msg_hdr *h)
{
    const ss__req_id *rq = (const void *)(h + 1);

    /* a spilled object is found from the index alone: no I/O */
    ss__conn_reply_status(s, c, SS_MSG_CONTAINS, h->req_id,
                          ss__find_sealed_any(s, &rq->id) >= 0 ? 1 : 0);
}

/* ================================================================ timers */

uint64_t ss__obj_next_deadline(const ss__store *s)
{
    uint64_t d = s->heap_len ? s->heap[0]->deadline_ns : UINT64_MAX;

    /* parked creates and restores also retry on a slow tick: the populator
     * may free memory from its own thread */
    if (s->cq_head || s->rq_head) {
        uint64_t tick = ss__now_ns() + 100 * 1000000ull;
        if (tick < d)
            d = tick;
    }
    /* spilling resumes after a failure's pause: look again then */
    if (s->sp && s->spill_backoff_until && s->spill_backoff_until < d)
        d = s->spill_backoff_until;
    return d;
}

void ss__obj_expire(ss__store *s, uint64_t now)
{
    if (s->cq_head || s->rq_head)
        ss__obj_retry_creates(s);
    while (s->heap_len && s->heap[0]->deadline_ns <= now) {
        ss__parked *pk = s->heap[0];
        if (pk->type == SS_PK_GET && pk->nrestore && !pk->expired) {
            /* its own timeout bounds the ids that do not exist; the found
             * ones being restored get up to the create timeout, unless a
             * restore waits for memory nothing is freeing */
            pk->expired = true;
            int err = 0;
            for (uint32_t i = 0; i < pk->n && !err; i++)
                if (pk->w[i].kind == SS_WN_RESTORE)
                    err = ss__restore_stuck(s, &pk->w[i].id);
            if (err) {
                ss__conn_reply_status(s, pk->c, SS_MSG_GET, pk->req_id, err);
                ss__parked_free(s, pk);
                continue;
            }
            ss__heap_del(s, pk);
            pk->deadline_ns = pk->hard_deadline_ns;
            if (pk->deadline_ns != UINT64_MAX && ss__heap_add(s, pk) < 0) {
                ss__conn_reply_status(s, pk->c, SS_MSG_GET, pk->req_id, -ENOMEM);
                ss__parked_free(s, pk);
            }
            continue;
        }
        s->c_wait_timeouts++;
        if (pk->type == SS_PK_GET) {
            if (pk->nrestore) {
                /* a restore could not get memory (or the disk) in time */
                ss__conn_reply_status(s, pk->c, SS_MSG_GET, pk->req_id, -ENOSPC);
                ss__parked_free(s, pk);
            } else {
                ss__get_complete(s, pk);
            }
        } else {
            const ss__msg_hdr *h = pk->msg;
            ss__conn_reply_status(s, pk->c, h->type, pk->req_id, -ENOSPC);
            ss__parked_free(s, pk);
        }
    }
}
