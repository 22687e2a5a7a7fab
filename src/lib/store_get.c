/* SPDX-License-Identifier: MIT */
/*
 * GET: the request (ss__req_do_get), its reply, and GETs that wait. It
 * owns no part of ss__store: it builds replies in req.obuf, which it
 * shares with LIST (one reply is built at a time), and its waiting GETs
 * are parked requests (store_park.c, the fd-budget FIFO park.fdw_*
 * included). Calls the disk glue (a GET of a spilled object starts its
 * restore), the parking layer, the object table and the connection layer.
 * Its two handlers are registered by the request layer: "this GET may be
 * answered now" (ss__req_get_complete, with the parking layer) and "the
 * fd budget may have room" (ss__req_get_budget, with the connection
 * layer).
 *
 * A GET naming ids that are not sealed yet or are spilled to disk parks
 * (store_park.c: one wait node per id in the waiter hash). A GET's own
 * timeout bounds the wait for ids that do not exist yet; it never cuts
 * short a restore, which is a found object being brought back: when the
 * timeout passes with restores pending, the GET waits on for them up to
 * the create timeout (a restore may need memory like a create), then fails
 * with -ENOSPC. Unless nothing is freeing memory for such a restore
 * (spilling failed, e.g. the spill disk is full, and no spill is in
 * flight): then the GET fails at its own timeout (at once for timeout 0)
 * with -SS_E_FULL (or the spill error), see ss__disk_restore_stuck. The
 * timeouts themselves are the request layer's timer hook (store_req.c).
 *
 * Fd budget (store_conn.c): a GET reply that would pass the client's or
 * the store's budget of unread fds is not built; the GET waits, answered,
 * on the store's fdw FIFO (through qprev/qnext, which GETs use for nothing
 * else once answered) and is built when the budget allows
 * (ss__req_get_budget, from the connection layer's tick). Its client's
 * requests are not read meanwhile. At stop replies go out regardless.
 */
#include "store_int.h"

#include <stdlib.h>
#include <string.h>

#include "sys.h"

static void segref_none(ss__segref *r)
{
    memset(r, 0, sizeof(*r));
    r->fd_index = SS_FD_NONE;
    r->kind = SS_SEG_SMALL;
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

/* An ARENA object's data segref: the arena's fd goes with it unless c
 * holds another reference in that arena (its SS_REF_SENT records count
 * in c->arena_refs: store_int.h), as for an OBJECT segment. Room in
 * c->arena_refs and the reader fd were made in pass 1. */
static void arena_segref(ss__store *s, ss__conn *c, uint32_t e, ss__ref *r, ss__segref *d,
                         int *fds, uint32_t *nfds)
{
    const ss__obj *o = ss__obj_at(s, e);
    const ss__index_entry *en = ss__ent(s, e);
    uint32_t id = o->small_slot;
    const ss__seg *g = ss__arena_segment(s->mem.arenas, id);

    d->seg_id = en->seg_id;
    d->seg_size = g->size;
    d->offset = (uint64_t)en->data_off64 * SS_OBJ_ALIGN;
    d->size = en->size;
    d->kind = SS_SEG_ARENA;
    d->fd_index = SS_FD_NONE;
    if (!(r->refs & SS_REF_SENT)) {
        if (c->arena_refs[id]++ == 0) {
            d->fd_index = *nfds;
            fds[(*nfds)++] = ss__arena_rec_of(s, id)->ro_fd;
        }
        r->refs |= SS_REF_SENT;
    }
}

/* Pass 1 of a reply: everything that can fail, before any reference is
 * taken (the small segments' reader fds), and how many fds the reply
 * carries at most (an id listed twice is counted twice). 0 and *found,
 * *maxslot, *need_fds; or -errno. */
static int get_check(ss__store *s, ss__conn *c, const ss_id *ids, uint32_t n,
                     uint32_t *found, uint32_t *maxslot, uint32_t *need_fds)
{
    int rc;

    *found = *maxslot = *need_fds = 0;
    for (uint32_t i = 0; i < n; i++) {
        int64_t e = ss__obj_find_sealed(s, &ids[i]);
        if (e < 0)
            continue;
        ss__obj *o = ss__obj_at(s, (uint32_t)e);
        ss__index_entry *en = ss__ent(s, (uint32_t)e);
        uint32_t slots[2], ns = 0;
        if (SS_IX_KIND(en->info) == SS_SEG_SMALL) {
            slots[ns++] = o->small_slot;
        } else if (SS_IX_KIND(en->info) == SS_SEG_ARENA) {
            const ss__ref *r = ss__ref_find(c, (uint32_t)e);
            if ((rc = ss__arena_ro_fd(s, o->small_slot)) < 0 ||
                (rc = ss__arena_refs_reserve(c, o->small_slot)) < 0)
                return rc;
            /* at most one fd per arena; counting one per id is an upper bound */
            *need_fds += (!r || !(r->refs & SS_REF_SENT)) && c->arena_refs[o->small_slot] == 0;
        } else {
            const ss__ref *r = ss__ref_find(c, (uint32_t)e);
            *need_fds += !r || !(r->refs & SS_REF_SENT);
        }
        if (en->meta_seg)
            slots[ns++] = o->meta_slot;
        for (uint32_t k = 0; k < ns; k++) {
            ss__small *sm = ss__small_rec(s, slots[k]);
            if (!sm)
                return -ENOMEM;
            if ((rc = ss__small_ro_fd(s, sm)) < 0)
                return rc;
            if (slots[k] > *maxslot)
                *maxslot = slots[k];
            *need_fds += slots[k] >= c->sent_cap || c->sent_small[slots[k]] != sm->no;
        }
        (*found)++;
    }
    return 0;
}

/* Pass 2: fill the entries and take the references (cannot fail: pass 1
 * and the reservations made room). Returns how many ids were found. */
static uint32_t get_fill(ss__store *s, ss__conn *c, const ss_id *ids, uint32_t n,
                         ss__get_entry *ge, int *fds, uint32_t *nfds)
{
    uint32_t found = 0;

    memset(ge, 0, (size_t)n * sizeof(*ge));
    for (uint32_t i = 0; i < n; i++) {
        int64_t e = ss__obj_find_sealed(s, &ids[i]);
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
                d->fd_index = *nfds;
                fds[(*nfds)++] = o->fd_ro;
                r->refs |= SS_REF_SENT;
            }
        } else if (SS_IX_KIND(en->info) == SS_SEG_ARENA) {
            arena_segref(s, c, (uint32_t)e, r, &ge[i].data, fds, nfds);
        } else {
            small_segref(s, c, o->small_slot, (uint64_t)en->data_off64 * SS_OBJ_ALIGN,
                         en->size, &ge[i].data, fds, nfds);
        }
        if (en->meta_seg)
            small_segref(s, c, o->meta_slot, (uint64_t)en->meta_off64 * SS_OBJ_ALIGN,
                         SS_IX_META_SIZE(en->info), &ge[i].meta, fds, nfds);
    }
    return found;
}

/* Answer a GET now with what is sealed in memory (taking refs). false:
 * answered; true: nothing done, its fds would pass the fd budget. */
static bool get_reply(ss__store *s, ss__conn *c, uint32_t req_id, const ss_id *ids, uint32_t n)
{
    ss__msg_hdr *h = (ss__msg_hdr *)s->req.obuf;
    ss__rep_get *rg = (ss__rep_get *)(h + 1);
    ss__get_entry *ge = (ss__get_entry *)(rg + 1);
    int fds[SS_PROTO_MAX_FDS];
    uint32_t nfds = 0, found, maxslot, need_fds;
    int rc;

    if ((rc = get_check(s, c, ids, n, &found, &maxslot, &need_fds)) < 0)
        goto fail;
    if (!s->loop.stopping && !ss__fd_may_send(s, c, need_fds))
        return true;
    /* room for what pass 2 records: small segments sent, references */
    if (found && maxslot >= c->sent_cap &&
        (rc = SS_ARRAY_RESERVE(c->sent_small, c->sent_cap, (size_t)maxslot + 1, 16)) < 0)
        goto fail;
    while (c->ref_cap < (c->ref_used + found + 1) * 2)
        if ((rc = ss__ref_grow(c)) < 0)
            goto fail;

    found = get_fill(s, c, ids, n, ge, fds, &nfds);
    rg->n = n;
    rg->nfds = nfds;
    uint32_t len = (uint32_t)(sizeof(*h) + sizeof(*rg) + (size_t)n * sizeof(*ge));
    ss__proto_hdr(h, SS_MSG_GET, req_id, len, (int32_t)found, SS_MSGF_REPLY);
    s->cnt.c_gets += found;
    ss__conn_send(s, c, s->req.obuf, len, fds, nfds);
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

    ss__park_timer_del(s, pk);
    pk->fdwait = true;
    pk->ready = true; /* wake-ups leave it alone */
    SS_DL_APPEND(s->park.fdw_head, s->park.fdw_tail, pk, qprev, qnext);
    c->nfdwait++;
    s->cnt.c_fd_deferred++;
    if (!c->in_paused)
        ss__conn_interest(s, c);
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

void ss__req_get_complete(ss__store *s, ss__parked *pk)
{
    if (!get_try(s, pk) && !pk->fdwait)
        fdw_add(s, pk);
}

bool ss__req_get_budget(ss__store *s)
{
    /* in order; one that still does not fit does not hold up others
     * (another client's budget may allow theirs). The tick refreshed the
     * counts: a client with no room for even one fd is skipped without
     * building its replies (it may have a thousand waiting). */
    for (ss__parked *pk = s->park.fdw_head, *nx; pk; pk = nx) {
        nx = pk->qnext;
        if (ss__fd_room(s, pk->c, 1))
            get_try(s, pk);
    }
    return s->park.fdw_head != NULL;
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
    ss__parked_charge(s, pk, (uint64_t)n * sizeof(ss_id));
    fdw_add(s, pk);
}

void ss__req_do_get(ss__store *s, ss__conn *c, const ss__msg_hdr *h)
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
        int64_t e = ss__index_find(&s->tab.ix, &ids[i]);
        uint32_t st = e < 0 ? SS_IX_FREE : ss__ent_state(s, (uint32_t)e);
        if (st == SS_IX_SEALED)
            continue;
        missing++;
        if (st == SS_IX_SPILLED && !s->loop.stopping)
            nrestore++;
    }
    uint64_t cost = (uint64_t)n * (sizeof(ss_id) + sizeof(ss__waitnode));
    if (nrestore == 0 && (missing == 0 || rq->timeout_ms == 0 || s->loop.stopping)) {
        if (get_reply(s, c, h->req_id, ids, n))
            get_defer(s, c, h->req_id, ids, n);
        return;
    }
    if (c->nparked >= SS_PARKED_MAX) {
        ss__conn_reply_status(s, c, SS_MSG_GET, h->req_id, -EAGAIN);
        return;
    }
    if (!ss__parked_fits(s, c, ss__parked_cost(cost))) {
        ss__conn_reply_status(s, c, SS_MSG_GET, h->req_id, -ENOBUFS);
        return;
    }
    uint64_t hard = ss__park_deadline_of(s->mem.create_timeout_ms);
    bool expired = nrestore && rq->timeout_ms == 0;
    ss__parked *pk = ss__parked_new(s, c, SS_PK_GET, h->req_id,
                                    expired ? hard : ss__park_deadline_of(rq->timeout_ms));
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
    ss__parked_charge(s, pk, cost);
    nrestore = 0;
    for (uint32_t i = 0; i < n; i++) {
        int64_t e = ss__index_find(&s->tab.ix, &ids[i]);
        uint32_t st = e < 0 ? SS_IX_FREE : ss__ent_state(s, (uint32_t)e);
        ss__waitnode *w = &pk->w[i];
        w->pk = pk;
        w->id = ids[i];
        if (st == SS_IX_SEALED) {
            w->kind = SS_WN_HOLD;
        } else if (st == SS_IX_SPILLED && !s->loop.stopping) {
            w->kind = SS_WN_RESTORE;
            restore[nrestore++] = (uint32_t)e;
        } else {
            w->kind = SS_WN_WAIT;
        }
        ss__park_wait_link(s, w);
    }
    pk->missing = missing;
    pk->nrestore = nrestore;
    s->cnt.c_waits++;
    /* Last, and without touching pk: a restore that cannot even start
     * tells its waiters at once, which may answer (and free) pk. */
    for (uint32_t i = 0; i < nrestore; i++)
        ss__disk_restore_start(s, restore[i]);
}

/* ================================================================ INDEX */

/* INDEX: read-only fds of the bucket memfd and of chunks first.. (as many
 * as a reply carries), reopened O_RDONLY for this reply and closed once it
 * is sent (or queued: the connection layer keeps its own copies). A reply
 * over the client's fd budget is refused with -EAGAIN: the client only
 * loses its fast path for a while (it asks the store meanwhile). */
void ss__req_do_index(ss__store *s, ss__conn *c, const ss__msg_hdr *h)
{
    const ss__req_index *rq = (const void *)(h + 1);
    const ss__index *ix = &s->tab.ix;
    struct {
        ss__msg_hdr h;
        ss__rep_index r;
    } m;
    int fds[SS_PROTO_MAX_FDS];
    uint32_t first = rq->first < ix->nchunks ? rq->first : ix->nchunks;
    uint32_t n = ix->nchunks - first, nfds = 0;
    int rc = 0;

    if (n > SS_PROTO_MAX_FDS - 1)
        n = SS_PROTO_MAX_FDS - 1;
    if (!s->loop.stopping && !ss__fd_may_send(s, c, 1 + n)) {
        ss__conn_reply_status(s, c, SS_MSG_INDEX, h->req_id, -EAGAIN);
        return;
    }
    for (uint32_t i = 0; i <= n && rc >= 0; i++) {
        rc = ss__seg_reopen_ro(i == 0 ? ix->bucket_fd : ix->chunk_fds[first + i - 1]);
        if (rc >= 0)
            fds[nfds++] = rc;
    }
    if (rc < 0) {
        ss__conn_reply_status(s, c, SS_MSG_INDEX, h->req_id, rc == -EMFILE || rc == -ENFILE ? -EAGAIN : rc);
    } else {
        m.r = (ss__rep_index){ .nchunks = ix->nchunks, .first = first, .n = n };
        ss__proto_hdr(&m.h, SS_MSG_INDEX, h->req_id, sizeof(m), 0, SS_MSGF_REPLY);
        ss__conn_send(s, c, &m, sizeof(m), fds, nfds);
    }
    for (uint32_t i = 0; i < nfds; i++)
        ss__sys_close(fds[i]);
}

/* ================================================================= PINS */

/* PINS: this connection's pin area (store_int.h, pins), its read-write fd
 * in the reply. Refused with -EAGAIN over the client's fd budget (it asks
 * the store for its gets meanwhile), -EBUSY when it has one. */
void ss__req_do_pins(ss__store *s, ss__conn *c, const ss__msg_hdr *h)
{
    struct {
        ss__msg_hdr h;
        ss__rep_pins r;
    } m;
    int fd = -1, rc;

    if (!s->loop.stopping && !ss__fd_may_send(s, c, 1)) {
        ss__conn_reply_status(s, c, SS_MSG_PINS, h->req_id, -EAGAIN);
        return;
    }
    rc = ss__pin_area_make(s, c, &fd);
    if (rc < 0) {
        ss__conn_reply_status(s, c, SS_MSG_PINS, h->req_id,
                              rc == -EMFILE || rc == -ENFILE ? -EAGAIN : rc);
        return;
    }
    m.r = (ss__rep_pins){ .nslots = SS_PIN_SLOTS };
    ss__proto_hdr(&m.h, SS_MSG_PINS, h->req_id, sizeof(m), 0, SS_MSGF_REPLY);
    ss__conn_send(s, c, &m, sizeof(m), &fd, 1);
    ss__sys_close(fd);
}
