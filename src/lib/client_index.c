/* SPDX-License-Identifier: MIT */
/*
 * The store's shared index, mapped read-only by a client handle, and the
 * calls it answers without a round trip (ss_contains). The format and the
 * reader are index.c's (store_int.h); this file maps the memfds the INDEX
 * message hands over (proto.h), keeps the mappings current, and looks ids
 * up in them.
 *
 * Memory-ordering protocol (who writes what, in which order):
 *  - The store's loop is the only writer of the index memory. Each entry
 *    change is bracketed by the entry's seqlock (store_int.h: seq odd,
 *    release fence, fields, seq even with a release store). A delete
 *    writes the entry's new state (DELETED, or FREE) inside such a bracket
 *    before the store sends the DELETE's reply; a seal writes SEALED
 *    before the SEAL's (or PUT's) reply.
 *  - A reader copies an entry under the seqlock (ss__index_read: acquire
 *    load of seq, relaxed loads of the words, acquire fence, seq again):
 *    a copy it accepts is the entry as it was at one instant between the
 *    two loads of seq. A hit is such a copy whose state is SEALED and
 *    whose id is the one asked for: at that instant the store held a
 *    sealed object with that id, which is exactly what ss_contains()
 *    reports. Nothing else the reader looks at (buckets, chains, headers)
 *    can make a hit: a stale bucket array or a chain relinked under the
 *    walk can only make a miss, and a miss asks the store.
 *  - Why a contains that starts after a delete returned never says 1:
 *    the store wrote the entry's new state (and its even seq, with
 *    release) before it sent the reply; the deleting client's receive of
 *    that reply, and whatever later tells another thread or process that
 *    the delete returned, order that write before the reader's acquire
 *    load of seq (the socket calls in the kernel are full barriers). So
 *    the reader sees the new seq, or a later one: its copy says DELETED,
 *    FREE, or a newer object with that id (which is then indeed sealed).
 *  - Why a sealed object is never reported missing: a miss here is never
 *    an answer; the store is asked.
 *  - Chunks are only ever added; a new chunk's header is complete before
 *    the store announces it in chunk 0's header (live_chunks, release
 *    store), and a new bucket memfd holds every chain before it is
 *    announced (live_bucket_gen). The store keeps the memfds' pages (the
 *    client's mappings keep them alive even after the store replaced a
 *    bucket memfd or exited), and every memfd is sealed against
 *    shrinking, so no mapping here can fault.
 *
 * Client-side concurrency: the mappings (ss_client.ix) are read and
 * changed only under the handle's lock, and every lookup runs under it
 * (a lookup is a few hundred ns: no blocking call is made with the lock
 * held). A refresh sends INDEX requests through ss__cl_call, which
 * returns with the lock held: the reply's fds are mapped and installed
 * then. Two threads may refresh at once: a chunk already mapped is
 * skipped, an older bucket generation than the one mapped is dropped.
 *
 * When the handle does not use the index: before its first ss_contains()
 * (the mapping is lazy), while an INDEX refused with -EAGAIN (the store's
 * fd budget, no fds) waits out SS_CL_INDEX_RETRY_NS, for good after any
 * other refusal or memfds that fail the checks (magic, format, stamp,
 * store id, seals, size), once the connection is known dead, and once the
 * store has stopped: at its stop it frees every entry and then stores 0
 * into chunk 0's live_chunks (release; read with acquire before each
 * lookup). A store that crashed
 * (SIGKILL) cannot say so: until a call of this handle talks to the store
 * and finds the connection gone, ss_contains may still answer 1 for an
 * object that was sealed when it died. A lookup makes no system call (a
 * poll of the socket before each one cost more than the lookup: 0.66 M/s
 * against several M/s without).
 */
#include "client_int.h"
#include "segment.h"
#include "store_int.h"
#include "sys.h"

#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* After a refused INDEX, how long the handle asks the store instead. */
#define SS_CL_INDEX_RETRY_NS (50ull * 1000 * 1000)

/* Map a read-only index memfd of at least min bytes, sealed against
 * resizing and writing: the mapping and its length, or NULL. */
static const void *ix_map(int fd, size_t min, size_t *len)
{
    struct stat st;
    int seals = ss__sys_get_seals(fd);
    void *p;

    if (seals < 0 || !ss__seals_small_ok(seals) || ss__sys_fstat(fd, &st) < 0 ||
        st.st_size < 0 || (uint64_t)st.st_size < min || (uint64_t)st.st_size > SIZE_MAX)
        return NULL;
    p = ss__sys_mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_SHARED, fd, 0);
    if (ss__is_err(p))
        return NULL;
    *len = (size_t)st.st_size;
    return p;
}

/* A mapped chunk or bucket memfd of this store: its header checks. */
static bool ix_hdr_ok(const ss_client *c, const void *map, uint32_t magic)
{
    const ss__index_hdr *h = map;

    return ss__index_check_hdr(map, magic) == 0 && h->store_id == c->store_id;
}

/* Install chunk number j from fd (lock held): 0, or -1 when it does not
 * check out (the index is then never used again). */
static int ix_add_chunk(ss_client *c, uint32_t j, int fd)
{
    ss__cl_index *ix = &c->ix;
    size_t len;
    const void *map;

    /* j < nchunks: another thread's refresh mapped it; j > nchunks: an
     * earlier chunk of this reply found no memory (below). Either way
     * nothing to do: a later refresh asks again from nchunks. */
    if (j != ix->nchunks)
        return 0;
    if (SS_ARRAY_RESERVE(ix->chunks, ix->cap, (size_t)j + 1, 8) < 0)
        return 0; /* no memory: fewer hits, nothing wrong */
    map = ix_map(fd, SS_INDEX_CHUNK_BYTES, &len);
    if (!map)
        return -1;
    if (len != SS_INDEX_CHUNK_BYTES || !ix_hdr_ok(c, map, SS_INDEX_MAGIC) ||
        ((const ss__index_hdr *)map)->chunk != j) {
        ss__sys_munmap((void *)map, len);
        return -1;
    }
    ix->chunks[j] = map;
    ix->nchunks = j + 1;
    return 0;
}

/* Install the bucket memfd fd if it is newer than the one mapped (lock
 * held): 0, or -1 when it does not check out. */
static int ix_set_buckets(ss_client *c, int fd)
{
    ss__cl_index *ix = &c->ix;
    size_t len;
    const void *map = ix_map(fd, sizeof(ss__index_hdr), &len);
    const ss__index_hdr *h = map;

    if (!map)
        return -1;
    if (!ix_hdr_ok(c, map, SS_BUCKET_MAGIC) || !SS_IS_POW2(h->count) ||
        sizeof(ss__index_hdr) + (uint64_t)h->count * 4 > len) {
        ss__sys_munmap((void *)map, len);
        return -1;
    }
    if (ix->buckets && ((const ss__index_hdr *)ix->buckets)->chunk >= h->chunk) {
        ss__sys_munmap((void *)map, len); /* not newer than ours */
        return 0;
    }
    if (ix->buckets)
        ss__sys_munmap((void *)ix->buckets, ix->bucket_len);
    ix->buckets = map;
    ix->bucket_len = len;
    return 0;
}

/* Apply an INDEX reply in s (lock held, from ss__cl_call) asked from
 * chunk first: 1 when the store has more chunks than the reply carried
 * (ask again), 0 done, -1 given up (a reply that does not fit what was
 * asked, memfds that fail the checks, or a refusal but -EAGAIN), -2
 * refused for now (-EAGAIN: the store's fd budget). */
static int ix_apply(ss_client *c, ss__cl_slot *s, uint32_t first)
{
    ss__rep_index r;
    int rc = 0;

    if (ss__cl_status(s) == -EAGAIN)
        return -2;
    if (ss__cl_status(s) < 0) /* a store that does not hand its index out */
        return -1;
    memcpy(&r, s->buf + SS_CL_HDR, sizeof(r));
    if (r.first != first || s->nfds != 1 + r.n) /* the checker saw nfds == 1 + n */
        rc = -1;
    if (rc == 0)
        rc = ix_set_buckets(c, s->fds[0]);
    for (uint32_t i = 0; rc == 0 && i < r.n; i++)
        rc = ix_add_chunk(c, r.first + i, s->fds[1 + i]);
    if (rc < 0)
        return -1;
    return r.n > 0 && r.first + r.n < r.nchunks ? 1 : 0;
}

/* Map what the store's index has now that this handle lacks: the current
 * bucket memfd and the chunks past ours. Lock NOT held. */
static void ix_refresh(ss_client *c)
{
    int rc;

    do {
        ss__cl_slot s;
        ss__msg_hdr h;
        ss__req_index rq = { 0 };
        struct iovec iov[2] = { { &h, sizeof(h) }, { &rq, sizeof(rq) } };

        pthread_mutex_lock(&c->lock);
        rq.first = c->ix.nchunks;
        pthread_mutex_unlock(&c->lock);
        rc = ss__cl_call(c, &s, SS_MSG_INDEX, iov, 2, NULL); /* returns locked */
        rc = rc == 0 ? ix_apply(c, &s, rq.first) : c->dead ? 0 : -2; /* -2: send failed */
        if (rc == -1)
            c->ix.broken = true;
        else if (rc == -2)
            c->ix.retry_ns = ss__now_ns() + SS_CL_INDEX_RETRY_NS;
        ss__cl_end(c, &s); /* closes the fds: the mappings stay */
    } while (rc == 1);
}

/* May the index be used now? (lock held) Not once the connection is known
 * dead, nor once the store has stopped (it says so in chunk 0: a crashed
 * store cannot, see the top). */
static bool ix_usable(ss_client *c)
{
    if (c->dead || c->ix.broken)
        return false;
    return c->ix.nchunks == 0 ||
           __atomic_load_n(&((const ss__index_hdr *)c->ix.chunks[0])->live_chunks,
                           __ATOMIC_ACQUIRE) != 0;
}

/* Look id up in the mappings (lock held): 1 a sealed object, 0 a miss
 * that mapping more cannot change, -1 a miss where the index has grown
 * past our mappings (or there are none yet). */
static int ix_lookup(ss_client *c, const ss_id *id)
{
    ss__cl_index *ix = &c->ix;
    ss__index_view v = { (const void *const *)ix->chunks, ix->nchunks, ix->buckets };
    ss__index_entry en;
    const ss__index_hdr *h0;

    if (ix->nchunks == 0 || !ix->buckets)
        return -1;
    if (ss__index_lookup(&v, id, &en) >= 0)
        return 1;
    h0 = ix->chunks[0];
    if (__atomic_load_n(&h0->live_chunks, __ATOMIC_ACQUIRE) > ix->nchunks ||
        __atomic_load_n(&h0->live_bucket_gen, __ATOMIC_ACQUIRE) !=
            ((const ss__index_hdr *)ix->buckets)->chunk)
        return -1;
    return 0;
}

/* Answered here: small-object releases waiting for this handle's next
 * call go now, by themselves, as they would have with the request (lock
 * held). */
static int ix_hit(ss_client *c)
{
    if (c->npend)
        ss__cl_send_pend(c);
    return 1;
}

int ss__cl_index_contains(ss_client *c, const ss_id *id)
{
    int rc;

    pthread_mutex_lock(&c->lock);
    rc = ix_usable(c) ? ix_lookup(c, id) : 0;
    if (rc < 0 && c->ix.retry_ns > ss__now_ns())
        rc = 0;
    if (rc == 1)
        rc = ix_hit(c);
    pthread_mutex_unlock(&c->lock);
    if (rc >= 0)
        return rc;
    ix_refresh(c);
    pthread_mutex_lock(&c->lock);
    rc = ix_usable(c) ? ix_lookup(c, id) : 0;
    if (rc == 1)
        rc = ix_hit(c);
    pthread_mutex_unlock(&c->lock);
    return rc == 1;
}

/* ================================================================ pins
 *
 * Gets served from the index (store_int.h, "Pin areas", has the protocol
 * both sides follow). Everything below runs under the handle's lock,
 * except the setup's round trips and the UNPIN send.
 *
 * A get of id is served here when the index has a SEALED entry for it
 * whose data (and meta) segments this handle has mapped read-only
 * already, and a slot is free: the slot gets KEY(e, generation), a
 * seq_cst fence, then entry e is read again under its seqlock; only if it
 * still says SEALED, same generation, id and place, the view is returned.
 * The hold (ss__cl_hold with pins > 0, no store reference) keeps a
 * reference on its segments, so they stay mapped until the release; a
 * second get of the same object takes one more pin reference on the same
 * hold and slot. The last release clears the slot, fences, and reads the
 * entry: when it no longer says SEALED with that generation the store
 * may be keeping the object for this pin, and is told (UNPIN).
 *
 * What a pinned get promises is what a get from the store does: the entry
 * said SEALED after the get began (a get that starts after a DELETE
 * returned cannot see SEALED: client_index.c's top), and the pin, seen by
 * the store before it frees or reuses the memory, keeps the view valid
 * until the release.
 */

/* Map the pin area of a PINS reply in s (lock held): 0, or -1 when it
 * does not check out (never asked again). */
static int pins_apply(ss_client *c, ss__cl_slot *s)
{
    ss__cl_pins *p = &c->pins;
    ss__rep_pins r;
    struct stat st;
    int seals, fd = s->fds[0];
    const ss__pin_hdr *h;
    void *map;

    memcpy(&r, s->buf + SS_CL_HDR, sizeof(r));
    seals = ss__sys_get_seals(fd);
    if (seals < 0 || (seals & (F_SEAL_SHRINK | F_SEAL_GROW)) != (F_SEAL_SHRINK | F_SEAL_GROW) ||
        (seals & (F_SEAL_WRITE | F_SEAL_FUTURE_WRITE)) || ss__sys_fstat(fd, &st) < 0 ||
        st.st_size != SS_PIN_AREA_BYTES || r.nslots != SS_PIN_SLOTS)
        return -1;
    p->free = malloc(SS_PIN_SLOTS * sizeof(*p->free));
    if (!p->free)
        return -1;
    map = ss__cl_map_writable(SS_PIN_AREA_BYTES, fd);
    if (ss__is_err(map)) {
        free(p->free);
        p->free = NULL;
        return -1;
    }
    h = map;
    if (h->magic != SS_PIN_MAGIC || h->nslots != SS_PIN_SLOTS || h->store_id != c->store_id) {
        ss__sys_munmap(map, SS_PIN_AREA_BYTES);
        free(p->free);
        p->free = NULL;
        return -1;
    }
    __atomic_store_n(&p->map, map, __ATOMIC_RELAXED); /* read as a hint by get_batch */
    p->slots = (uint64_t *)((char *)map + sizeof(ss__pin_hdr));
    p->hw = &((ss__pin_hdr *)map)->hw;
    p->nslots = SS_PIN_SLOTS;
    p->high = p->nfree = 0;
    return 0;
}

void ss__cl_pins_setup(ss_client *c)
{
    ss__cl_slot s;
    ss__msg_hdr h;
    ss__req_pins rq = { { 0, 0 } };
    struct iovec iov[2] = { { &h, sizeof(h) }, { &rq, sizeof(rq) } };
    bool need_ix;
    int rc;

    pthread_mutex_lock(&c->lock);
    need_ix = c->ix.nchunks == 0 && !c->ix.broken;
    /* not at a handle's first get: no segment is mapped yet, so none can
     * be served from the index, and a handle that makes one get pays one
     * round trip, not three; from its second on */
    rc = c->pins.map || c->pins.broken || c->dead || c->remote_gets == 0 ||
         c->pins.retry_ns > ss__now_ns();
    pthread_mutex_unlock(&c->lock);
    if (rc)
        return;
    if (need_ix)
        ix_refresh(c);
    rc = ss__cl_call(c, &s, SS_MSG_PINS, iov, 2, NULL); /* returns locked */
    if (rc == 0 && !c->pins.map) {
        rc = ss__cl_status(&s);
        if (rc == -EAGAIN)
            c->pins.retry_ns = ss__now_ns() + SS_CL_INDEX_RETRY_NS;
        else if (rc < 0 || pins_apply(c, &s) < 0)
            c->pins.broken = true; /* a store that does not lend pin areas */
    }
    ss__cl_end(c, &s); /* closes the fd: the mapping stays */
}

bool ss__cl_index_alive(ss_client *c, const ss_id *id, uint64_t seg_id)
{
    ss__cl_index *ix = &c->ix;
    ss__index_view v = { (const void *const *)ix->chunks, ix->nchunks, ix->buckets };
    ss__index_entry en;

    return ix_usable(c) && ix->nchunks && ix->buckets && ss__index_lookup(&v, id, &en) >= 0 &&
           en.seg_id == seg_id;
}

/* A mapped, read-only segment of this handle of kind `kind` holding
 * [off, off + len): it, or NULL. */
static ss__cl_seg *pin_seg(ss_client *c, uint64_t seg_id, unsigned kind, uint64_t off,
                           uint64_t len)
{
    ss__cl_seg *sg = ss__cl_seg_find(c, seg_id);

    if (!sg || !sg->addr || sg->writable || sg->kind != kind || off > sg->size ||
        len > sg->size - off)
        return NULL;
    return sg;
}

/* Clear slot i and give it back; then, when entry e no longer says
 * SEALED with generation gen, the store may be keeping the object for
 * this pin: true (send UNPIN). */
static bool pin_clear(ss_client *c, uint32_t i, uint32_t e, uint32_t gen)
{
    ss__cl_index *ix = &c->ix;
    ss__index_view v = { (const void *const *)ix->chunks, ix->nchunks, ix->buckets };
    ss__index_entry en;

    __atomic_store_n(&c->pins.slots[i], 0, __ATOMIC_RELAXED);
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    c->pins.free[c->pins.nfree++] = i;
    if (ss__index_read(&v, e, &en) < 0)
        return true; /* cannot tell: tell the store (it only looks again) */
    return SS_IX_STATE(en.info) != SS_IX_SEALED || en.generation != gen;
}

/* UNPIN, sent without the lock (it is one datagram, no reply). */
static void pin_tell(ss_client *c)
{
    ss__msg_hdr h;
    ss__req_pins r = { { 0, 0 } };
    struct iovec iov[2] = { { &h, sizeof(h) }, { &r, sizeof(r) } };

    if (c->dead)
        return;
    ss__proto_hdr(&h, SS_MSG_UNPIN, 0, (uint32_t)(SS_CL_HDR + sizeof(r)), 0, 0);
    pthread_mutex_unlock(&c->lock);
    (void)ss__cl_sendv(c->fd, iov, 2); /* a failure: the connection is going, and its
                                         * pins with it */
    pthread_mutex_lock(&c->lock);
}

bool ss__cl_index_get(ss_client *c, const ss_id *id, ss__cl_ref *ref, ss_object *o)
{
    ss__cl_index *ix = &c->ix;
    ss__cl_pins *p = &c->pins;
    ss__index_view v = { (const void *const *)ix->chunks, ix->nchunks, ix->buckets };
    ss__index_entry en, again;
    ss__cl_seg *ds, *ms = NULL;
    ss__cl_hold *h;
    uint32_t uid, slot, msize;
    uint64_t off;
    int64_t e;

    if (!p->map || !ix_usable(c) || ix->nchunks == 0 || !ix->buckets)
        return false;
    e = ss__index_lookup_ex(&v, id, &en, &uid);
    if (e < 0 || en.size == 0)
        return false; /* (a zero-size object: the store answers) */
    h = ss__cl_hold_find_pinned(c, id, (uint32_t)e, en.generation);
    if (h) {
        if (h->pins == UINT32_MAX)
            return false;
        h->pins++; /* the entry said SEALED just now, and our pin holds it */
        goto view;
    }
    off = (uint64_t)en.data_off64 * SS_OBJ_ALIGN;
    ds = pin_seg(c, en.seg_id, SS_IX_KIND(en.info), off, en.size);
    msize = SS_IX_META_SIZE(en.info);
    if (!ds || (msize && !(ms = pin_seg(c, SS_SEG_ID_SMALL | en.meta_seg, SS_SEG_SMALL,
                                         (uint64_t)en.meta_off64 * SS_OBJ_ALIGN, msize))))
        return false;
    if (p->nfree == 0 && p->high >= p->nslots)
        return false; /* every slot pins something: ask the store */
    if (p->nfree) {
        slot = p->free[--p->nfree];
    } else {
        slot = p->high++;
        __atomic_store_n(p->hw, p->high, __ATOMIC_RELAXED);
    }
    __atomic_store_n(&p->slots[slot], SS_PIN_KEY((uint32_t)e, en.generation), __ATOMIC_RELAXED);
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    if (ss__index_read(&v, (uint32_t)e, &again) < 0 ||
        SS_IX_STATE(again.info) != SS_IX_SEALED || again.generation != en.generation ||
        memcmp(&again.id, id, sizeof(*id)) || again.seg_id != en.seg_id ||
        again.data_off64 != en.data_off64 || again.meta_seg != en.meta_seg ||
        again.meta_off64 != en.meta_off64 || !(h = ss__cl_hold_new(c, id))) {
        if (pin_clear(c, slot, (uint32_t)e, en.generation))
            pin_tell(c);
        return false;
    }
    h->state = SS_CL_SEALED;
    h->pins = 1;
    h->pin_slot = slot;
    h->pin_e = (uint32_t)e;
    h->pin_gen = en.generation;
    h->uid = uid;
    h->seg = ds;
    h->off = off;
    h->size = en.size;
    h->mseg = ms;
    h->moff = (uint64_t)en.meta_off64 * SS_OBJ_ALIGN;
    h->msize = msize;
    ss__cl_seg_use(c, ds);
    ds->refs++;
    if (ms) {
        ss__cl_seg_use(c, ms);
        ms->refs++;
    }
view:
    *ref = (ss__cl_ref){ .seg_id = h->pin_e, .off = h->pin_gen, .has_seg = true,
                         .found = true, .pinned = true };
    ss__cl_hold_view(h, o);
    return true;
}

void ss__cl_unpin(ss_client *c, ss__cl_hold *h)
{
    ss__cl_seg *ds = h->seg, *ms = h->mseg;
    bool tell;

    if (--h->pins > 0)
        return;
    tell = pin_clear(c, h->pin_slot, h->pin_e, h->pin_gen);
    ss__cl_hold_unlink(c, h);
    ss__cl_hold_free(h, false);
    ds->refs--;
    ss__cl_seg_settle(c, ds);
    if (ms) {
        ms->refs--;
        ss__cl_seg_settle(c, ms);
    }
    if (tell)
        pin_tell(c);
}

void ss__cl_index_free(ss_client *c, bool forked)
{
    ss__cl_index *ix = &c->ix;

    if (c->pins.map && !forked) /* MADV_DONTFORK: absent in a forked child */
        ss__sys_munmap(c->pins.map, SS_PIN_AREA_BYTES);
    free(c->pins.free);
    memset(&c->pins, 0, sizeof(c->pins));

    for (uint32_t i = 0; i < ix->nchunks; i++)
        ss__sys_munmap((void *)ix->chunks[i], SS_INDEX_CHUNK_BYTES);
    free(ix->chunks);
    if (ix->buckets)
        ss__sys_munmap((void *)ix->buckets, ix->bucket_len);
    memset(ix, 0, sizeof(*ix));
}
