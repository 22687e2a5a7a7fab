/* SPDX-License-Identifier: MIT */
/*
 * The client library: one handle = one SOCK_SEQPACKET connection to a store
 * (the contract is in include/sealstore.h). client_int.h describes
 * the concurrency scheme (leader/follower receive) and the segment cache
 * invariants. This file: the handle (connect, disconnect, fork), its
 * tables of segments and references, the request/reply machinery and
 * release; client_obj.c: the object calls built on them.
 *
 * Failure model:
 *  - store gone (EOF, EPIPE, ECONNRESET) or a malformed reply: the handle
 *    becomes dead; every call returns that error, except ss_release, which
 *    still drops the local reference and unmaps (views stay readable until
 *    then: mappings outlive the store);
 *  - a send that fails without ending the connection (ENOBUFS, ENOMEM)
 *    fails that call only; the small-object releases it carried stay
 *    pending for the next one, while an object segment's failed RELEASE
 *    makes the handle dead (its segment could not be settled);
 *  - forked child: the pthread_atfork child handler bumps a generation, so
 *    every inherited handle answers -ENOTCONN without touching its lock
 *    (which another thread may have held at fork time) or its socket (still
 *    the parent's connection);
 *  - caller mistakes are return values: nothing here prints or aborts.
 */
#include "client_int.h"
#include "options.h"
#include "segment.h"
#include "store.h"
#include "sys.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>

/* EMBED: tries to connect or start, while another process wins the race
 * to start a store on the same path and gets it listening. */
#define CL_EMBED_TRIES 100
#define CL_SOCKBUF ((int)(2 * SS_PROTO_MAX_MSG))

static _Atomic unsigned g_fork_gen;
static pthread_once_t g_once = PTHREAD_ONCE_INIT;

/* data pointer of a zero-size object that names no segment: non-NULL,
 * aligned, never to be dereferenced (API) */
const unsigned char ss__cl_empty[SS_OBJ_ALIGN] __attribute__((aligned(SS_OBJ_ALIGN)));

static void cl_atfork_child(void)
{
    atomic_fetch_add_explicit(&g_fork_gen, 1, memory_order_relaxed);
}

static void cl_init_once(void)
{
    (void)pthread_atfork(NULL, NULL, cl_atfork_child);
}

/* mmap(MAP_SHARED, writable) + MADV_DONTFORK with no fork in between:
 * a pointer or ss__err_ptr(-errno). */
void *ss__cl_map_writable(size_t len, int fd)
{
    /* the fork guard (sys.h): MADV_DONTFORK is on before a fork can copy it */
    return ss__sys_mmap_shared_rw(fd, len);
}

void *ss__cl_map_area(size_t len, int fd, void **park)
{
    char *a;
    void *p;
    int rc;

    *park = NULL;
    if (len < SS_CL_PARK_MIN || len % SS_CL_PARK_MIN || len > SIZE_MAX / 4)
        return ss__cl_map_writable(len, fd);
    a = ss__sys_reserve_aligned(2 * len, SS_CL_PARK_MIN); /* the area, then its park */
    if (ss__is_err(a))
        return ss__cl_map_writable(len, fd);
    /* the fork guard (sys.h): MADV_DONTFORK is on before a fork can copy it */
    ss__fork_guard_enter();
    p = ss__sys_mmap(a, len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, fd, 0);
    rc = ss__is_err(p) ? (int)ss__ptr_err(p) : ss__sys_madvise(a, 2 * len, MADV_DONTFORK);
    ss__fork_guard_leave();
    if (rc < 0) {
        ss__sys_munmap(a, 2 * len);
        return ss__err_ptr(rc);
    }
    *park = a + len;
    return a;
}

int ss__cl_area_writable(ss__cl_seg *sg)
{
    int rc;

    if (sg->parked) {
        /* over the read-only mapping, which goes; the park keeps an empty one */
        rc = ss__sys_mremap_keep(sg->park, (size_t)sg->size, sg->addr);
        if (rc < 0) /* the pages fault in again from the file */
            rc = ss__sys_mprotect(sg->addr, (size_t)sg->size, PROT_READ | PROT_WRITE);
        if (rc < 0)
            return rc;
        sg->parked = false;
        sg->ro_len = 0;
        return 0;
    }
    if (sg->ro_len) {
        rc = ss__sys_mprotect(sg->addr, (size_t)sg->ro_len, PROT_READ | PROT_WRITE);
        if (rc < 0)
            return rc;
        sg->ro_len = 0;
    }
    return 0;
}

static inline bool cl_forked(const ss_client *c)
{
    return c->fork_gen != atomic_load_explicit(&g_fork_gen, memory_order_relaxed);
}

/* NUMA node of the calling CPU (vDSO getcpu), -1 unknown. */
int32_t ss__cl_node(void)
{
    unsigned cpu, node;

    return ss__sys_getcpu(&cpu, &node) == 0 ? (int32_t)node : -1;
}

void ss__cl_close_fds(int *fds, unsigned n)
{
    for (unsigned i = 0; i < n; i++)
        if (fds[i] >= 0) {
            ss__sys_close(fds[i]);
            fds[i] = -1;
        }
}

/* ------------------------------------------------------------ hashing */

static uint64_t id_hash(const ss_id *id)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */

    for (unsigned i = 0; i < SS_ID_SIZE; i++) {
        h ^= id->b[i];
        h *= 1099511628211ull;
    }
    return h ^ (h >> 29);
}

static size_t hold_bucket(const ss_client *c, const ss_id *id)
{
    return (size_t)(id_hash(id) & (((uint64_t)1 << c->hold_bits) - 1));
}

static size_t seg_bucket(const ss_client *c, uint64_t seg_id)
{
    return (size_t)((seg_id * 0x9E3779B97F4A7C15ull) >> (64 - c->seg_bits));
}

/* Double a table when it gets as many entries as buckets; on ENOMEM keep
 * the old one (chains just get longer). */
static void holds_grow(ss_client *c)
{
    unsigned bits = c->hold_bits + 1;
    ss__cl_hold **nb = calloc((size_t)1 << bits, sizeof(*nb));
    ss__cl_hold **old = c->holds;
    size_t n = (size_t)1 << c->hold_bits;

    if (!nb)
        return;
    c->holds = nb;
    c->hold_bits = bits;
    for (size_t i = 0; i < n; i++)
        for (ss__cl_hold *h = old[i], *nx; h; h = nx) {
            size_t b = hold_bucket(c, &h->id);
            nx = h->next;
            h->next = nb[b];
            nb[b] = h;
        }
    free(old);
}

static void segs_grow(ss_client *c)
{
    unsigned bits = c->seg_bits + 1;
    ss__cl_seg **nb = calloc((size_t)1 << bits, sizeof(*nb));
    ss__cl_seg **old = c->segs;
    size_t n = (size_t)1 << c->seg_bits;

    if (!nb)
        return;
    c->segs = nb;
    c->seg_bits = bits;
    for (size_t i = 0; i < n; i++)
        for (ss__cl_seg *s = old[i], *nx; s; s = nx) {
            size_t b = seg_bucket(c, s->seg_id);
            nx = s->next;
            s->next = nb[b];
            nb[b] = s;
        }
    free(old);
}

/* ----------------------------------------------------------- segments */

ss__cl_seg *ss__cl_seg_find(ss_client *c, uint64_t seg_id)
{
    for (ss__cl_seg *s = c->segs[seg_bucket(c, seg_id)]; s; s = s->next)
        if (s->seg_id == seg_id)
            return s;
    return NULL;
}

ss__cl_seg *ss__cl_seg_insert(ss_client *c, uint64_t seg_id, uint64_t size, uint8_t kind)
{
    ss__cl_seg *s = calloc(1, sizeof(*s));
    size_t b;

    if (!s)
        return NULL;
    s->seg_id = seg_id;
    s->size = size;
    s->kind = kind;
    s->fd = -1;
    if (c->nsegs >= ((size_t)1 << c->seg_bits))
        segs_grow(c);
    b = seg_bucket(c, seg_id);
    s->next = c->segs[b];
    c->segs[b] = s;
    c->nsegs++;
    return s;
}

void ss__cl_seg_unlink(ss_client *c, ss__cl_seg *s)
{
    ss__cl_seg **pp = &c->segs[seg_bucket(c, s->seg_id)];

    for (; *pp; pp = &(*pp)->next)
        if (*pp == s) {
            *pp = s->next;
            c->nsegs--;
            return;
        }
}

/* Unmap and close. In a forked child a writable mapping (MADV_DONTFORK)
 * does not exist, and its range may hold something else now: leave it. */
void ss__cl_seg_free(ss__cl_seg *s, bool forked)
{
    if (s->addr && !(forked && s->writable))
        ss__sys_munmap(s->addr, s->park ? 2 * s->size : s->size); /* the park beside it */
    if (s->fd >= 0)
        ss__sys_close(s->fd);
    free(s);
}

/* Map a segment read-only from the fd it holds; the mapping keeps the
 * memory, so the fd goes. */
int ss__cl_seg_map(ss__cl_seg *s)
{
    void *p;

    if (s->addr)
        return 0;
    if (s->fd < 0 || s->size > SIZE_MAX)
        return -EBADF;
    p = ss__sys_mmap(NULL, (size_t)s->size, PROT_READ, MAP_SHARED, s->fd, 0);
    if (ss__is_err(p))
        return (int)ss__ptr_err(p);
    s->addr = p;
    ss__sys_close(s->fd);
    s->fd = -1;
    return 0;
}

/* An unused OBJECT segment whose wait_seq is set: unmap it now if no
 * reply still to come can name it with SS_FD_NONE, else defer it until a
 * reply to a request sent after its RELEASE arrives (client_int.h). */
static void seg_unused(ss_client *c, ss__cl_seg *s)
{
    if (c->gets_in_flight == 0 || (!s->deferred && c->replied_seq > s->wait_seq)) {
        if (s->deferred) /* cannot happen: sweeps empty the list at 0 */
            return;
        ss__cl_seg_unlink(c, s);
        ss__cl_seg_free(s, false);
        return;
    }
    if (!s->deferred) {
        s->deferred = true;
        s->dnext = c->deferred;
        c->deferred = s;
    }
}

static void kept_unlink(ss_client *c, ss__cl_seg *s)
{
    if (s->kprev)
        s->kprev->knext = s->knext;
    else
        c->kept_head = s->knext;
    if (s->knext)
        s->knext->kprev = s->kprev;
    else
        c->kept_tail = s->kprev;
    s->kprev = s->knext = NULL;
    s->kept = false;
    c->nkept--;
    if (s->live)
        c->live_bytes -= s->size;
    else
        c->kept_bytes -= s->size;
    s->live = false;
}

/* A kept segment leaves the list unused: settled as it was when kept. */
static void kept_drop(ss_client *c, ss__cl_seg *s)
{
    kept_unlink(c, s);
    seg_unused(c, s);
}

void ss__cl_seg_use(ss_client *c, ss__cl_seg *s)
{
    if (s->kept)
        kept_unlink(c, s);
}

static void deferred_remove(ss_client *c, ss__cl_seg *s)
{
    for (ss__cl_seg **pp = &c->deferred; *pp; pp = &(*pp)->dnext)
        if (*pp == s) {
            *pp = s->dnext;
            s->deferred = false;
            return;
        }
}

/* Keep an unused, mapped OBJECT segment (client_int.h, kept segments),
 * dropping the least recently used ones past the bounds. false: not
 * kept (too large, not mapped read-only, no cache, connection dead). */
static bool seg_keep(ss_client *c, ss__cl_seg *s)
{
    bool live = false;

    if (!s->addr || s->writable || c->dead)
        return false;
    if (s->size > c->keep_bytes) {
        /* larger than the cache: only while the store holds it anyway */
        if (!s->has_probe || s->size > c->capacity / 8 ||
            !ss__cl_index_alive(c, &s->probe, s->seg_id))
            return false;
        live = true;
    }
    if (s->deferred)
        deferred_remove(c, s);
    s->kept = true;
    s->kprev = NULL;
    s->knext = c->kept_head;
    if (c->kept_head)
        c->kept_head->kprev = s;
    else
        c->kept_tail = s;
    c->kept_head = s;
    c->nkept++;
    s->live = live;
    if (live)
        c->live_bytes += s->size;
    else
        c->kept_bytes += s->size;
    while (c->nkept > SS_CL_KEEP_MAX || c->kept_bytes > c->keep_bytes ||
           c->live_bytes > c->capacity / 8)
        kept_drop(c, c->kept_tail);
    return true;
}

void ss__cl_kept_check_live(ss_client *c)
{
    for (ss__cl_seg *s = c->kept_head, *nx; s; s = nx) {
        nx = s->knext;
        if (s->live && !ss__cl_index_alive(c, &s->probe, s->seg_id))
            kept_drop(c, s);
    }
}

/* Called once a segment's refs or unsent count dropped: an unused OBJECT
 * or ARENA segment is kept mapped, or unmapped now or deferred
 * (client_int.h; an ARENA segment is shared by many objects, and the
 * store forgets that we have it when our last reference in it goes, as
 * for an OBJECT segment). SMALL segments stay for the connection. */
void ss__cl_seg_settle(ss_client *c, ss__cl_seg *s)
{
    if (ss__cl_seg_stays(s) || s->refs > 0 || s->unsent > 0)
        return;
    s->wait_seq = c->req_seq;
    if (!seg_keep(c, s))
        seg_unused(c, s);
}

/* After a reply was applied or a GET ended: unmap deferred segments no
 * reply still to come can name with SS_FD_NONE; forget the ones a reply
 * revived. */
void ss__cl_seg_sweep(ss_client *c)
{
    ss__cl_seg **pp = &c->deferred;

    while (*pp) {
        ss__cl_seg *s = *pp;

        if (s->refs > 0 || s->unsent > 0) {
            *pp = s->dnext;
            s->deferred = false;
        } else if (c->gets_in_flight == 0 || c->replied_seq > s->wait_seq) {
            *pp = s->dnext;
            ss__cl_seg_unlink(c, s);
            ss__cl_seg_free(s, false);
        } else {
            pp = &s->dnext;
        }
    }
}

/* -------------------------------------------------------------- holds */

ss__cl_hold *ss__cl_hold_new(ss_client *c, const ss_id *id)
{
    ss__cl_hold *h = calloc(1, sizeof(*h));
    size_t b;

    if (!h)
        return NULL;
    h->id = *id;
    h->seq = ++c->hold_seq;
    h->rw_fd = h->ro_fd = -1;
    if (c->nholds >= ((size_t)1 << c->hold_bits))
        holds_grow(c);
    b = hold_bucket(c, id);
    h->next = c->holds[b];
    c->holds[b] = h;
    c->nholds++;
    return h;
}

void ss__cl_hold_unlink(ss_client *c, ss__cl_hold *h)
{
    ss__cl_hold **pp = &c->holds[hold_bucket(c, &h->id)];

    for (; *pp; pp = &(*pp)->next)
        if (*pp == h) {
            *pp = h->next;
            c->nholds--;
            return;
        }
}

/* Free a hold's own resources (not its segments). */
void ss__cl_hold_free(ss__cl_hold *h, bool forked)
{
    if (h->buf && !h->slab && !forked) /* MADV_DONTFORK: absent in a forked child */
        ss__sys_munmap(h->buf, h->buf_len);
    if (h->rw_fd >= 0)
        ss__sys_close(h->rw_fd);
    if (h->ro_fd >= 0)
        ss__sys_close(h->ro_fd);
    free(h);
}

/* Private anonymous memory of len bytes, kept out of a fork's child, or
 * an error pointer. */
static void *private_map(size_t len)
{
    void *p = ss__sys_mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

    if (!ss__is_err(p))
        (void)ss__sys_madvise(p, len, MADV_DONTFORK);
    return p;
}

/* A buffer of len bytes (page-aligned) for the small creation h, from a
 * slab when one has room (client_int.h): 0 or -ENOMEM. Lock held. */
int ss__cl_buf_take(ss_client *c, size_t len, ss__cl_hold *h)
{
    ss__cl_slab *sl = &c->slabs[c->slab_cur];
    void *p;

    if (len <= SS_CL_SLAB_BYTES && (!sl->base || sl->used + len > SS_CL_SLAB_BYTES)) {
        /* the current slab is used up: start over in one with no live
         * buffer (made writable again) or not mapped yet */
        sl = NULL;
        for (unsigned k = 0; k < SS_CL_SLABS && !sl; k++) {
            ss__cl_slab *t = &c->slabs[(c->slab_cur + k) % SS_CL_SLABS];

            if (t->base && t->live == 0 && t->used &&
                ss__sys_mprotect(t->base, t->used, PROT_READ | PROT_WRITE) < 0) {
                ss__sys_munmap(t->base, SS_CL_SLAB_BYTES); /* out of map entries */
                t->base = NULL;
            }
            if (t->live)
                continue;
            if (!t->base) {
                p = private_map(SS_CL_SLAB_BYTES);
                if (ss__is_err(p))
                    continue;
                t->base = p;
            }
            t->used = 0;
            c->slab_cur = (uint8_t)(t - c->slabs);
            sl = t;
        }
    }
    if (sl && len <= SS_CL_SLAB_BYTES) {
        h->buf = sl->base + sl->used;
        h->slab = (uint8_t)(sl - c->slabs + 1);
        sl->used += len;
        sl->live++;
    } else {
        p = private_map(len);
        if (ss__is_err(p))
            return -ENOMEM;
        h->buf = p;
        h->slab = 0;
    }
    h->buf_len = len;
    return 0;
}

/* The hold h ends: its slab buffer goes back (not made writable: the slab
 * is, when it starts over). A buffer of its own is left to
 * ss__cl_hold_free. Lock held. */
void ss__cl_buf_return(ss_client *c, ss__cl_hold *h)
{
    if (!h->buf || !h->slab)
        return;
    c->slabs[h->slab - 1].live--;
    h->buf = NULL;
    h->slab = 0;
}

static bool id_eq(const ss_id *a, const ss_id *b)
{
    return memcmp(a, b, sizeof(*a)) == 0;
}

/* The creator's unsealed (or sealing) object with this id. */
ss__cl_hold *ss__cl_hold_find_creating(ss_client *c, const ss_id *id)
{
    for (ss__cl_hold *h = c->holds[hold_bucket(c, id)]; h; h = h->next)
        if (h->creator && h->state != SS_CL_SEALED && id_eq(&h->id, id))
            return h;
    return NULL;
}

/* What ss_release drops: the oldest sealed hold (release order,
 * client_int.h: it has no owed reference); -EBUSY when only an unsealed
 * creation has that id, -ENOENT when nothing does. With store, only holds
 * with store references count: a pinned hold's references are the
 * client's own, so release order (which follows the store's) skips it. */
ss__cl_hold *ss__cl_hold_pick_release(ss_client *c, const ss_id *id, int *err, bool store)
{
    ss__cl_hold *best = NULL;
    bool unsealed = false;

    for (ss__cl_hold *h = c->holds[hold_bucket(c, id)]; h; h = h->next) {
        if (!id_eq(&h->id, id) || (store && h->pins))
            continue;
        if (h->state != SS_CL_SEALED)
            unsealed = true;
        else if (!best || h->seq < best->seq)
            best = h;
    }
    if (!best)
        *err = unsealed ? -EBUSY : -ENOENT;
    return best;
}

ss__cl_hold *ss__cl_hold_find_view(ss_client *c, const ss_id *id, bool has_seg,
                                   uint64_t seg_id, uint64_t off)
{
    for (ss__cl_hold *h = c->holds[hold_bucket(c, id)]; h; h = h->next) {
        if (h->state != SS_CL_SEALED || h->priv || h->pins || !id_eq(&h->id, id))
            continue;
        if (has_seg ? (h->seg && h->seg->seg_id == seg_id && h->off == off) : !h->seg)
            return h;
    }
    return NULL;
}

ss__cl_hold *ss__cl_hold_find_pinned(ss_client *c, const ss_id *id, uint32_t e, uint32_t gen)
{
    for (ss__cl_hold *h = c->holds[hold_bucket(c, id)]; h; h = h->next)
        if (h->pins && h->pin_e == e && h->pin_gen == gen && id_eq(&h->id, id))
            return h;
    return NULL;
}

/* The sealed hold whose view (or creator's pointer) starts at data and
 * still has a reference the caller has not given up; the oldest if
 * several (zero-size objects share one address). */
ss__cl_hold *ss__cl_hold_find_addr(ss_client *c, const ss_id *id, const void *data)
{
    ss__cl_hold *best = NULL;

    for (ss__cl_hold *h = c->holds[hold_bucket(c, id)]; h; h = h->next) {
        const void *p;

        if (h->state != SS_CL_SEALED || (h->refs <= h->owed && !h->pins) ||
            !id_eq(&h->id, id))
            continue;
        if (h->priv)
            p = h->buf;
        else if (h->seg)
            p = h->seg->addr ? h->seg->addr + h->off : NULL;
        else
            p = ss__cl_empty;
        if (p == data && (!best || h->seq < best->seq))
            best = h;
    }
    return best;
}

/* Local references (client_int.h): the youngest hold of id whose view a
 * GET reply named, the caller still holds, is mapped, and is not known
 * deleted. */
ss__cl_hold *ss__cl_hold_find_local(ss_client *c, const ss_id *id)
{
    ss__cl_hold *best = NULL;

    for (ss__cl_hold *h = c->holds[hold_bucket(c, id)]; h; h = h->next) {
        if (h->state != SS_CL_SEALED || h->priv || !h->got || h->stale ||
            h->refs <= h->owed || !id_eq(&h->id, id))
            continue;
        if ((h->seg && !h->seg->addr) || (h->mseg && !h->mseg->addr))
            continue; /* a failed mmap: the store's answer retries it */
        if (!best || h->seq > best->seq)
            best = h;
    }
    return best;
}

void ss__cl_forget(ss_client *c, const ss_id *id, const ss__cl_hold *keep)
{
    for (ss__cl_hold *h = c->holds[hold_bucket(c, id)]; h; h = h->next)
        if (h != keep && h->state == SS_CL_SEALED && id_eq(&h->id, id))
            h->stale = true;
    for (ss__cl_seg *s = c->kept_head, *nx; s; s = nx) {
        nx = s->knext;
        if (id_eq(&s->oid, id) && !(keep && (keep->seg == s || keep->mseg == s)))
            kept_drop(c, s);
    }
}

/* ---------------------------------------------------- connection state */

/* The connection is unusable: remember why, wake every waiter. Called
 * with the lock held. The fd stays open until ss_disconnect (closing it
 * here would let another thread's next socket() reuse the number);
 * shutdown() wakes a reader blocked in recvmsg. */
void ss__cl_kill(ss_client *c, int err)
{
    if (!c->dead) {
        c->dead = err < 0 ? err : -ECONNRESET;
        (void)ss__sys_shutdown(c->fd, SHUT_RDWR);
    }
    for (ss__cl_slot *t = c->slots; t; t = t->next)
        if (!t->done) {
            t->done = true;
            t->err = c->dead;
            if (t->waiting)
                pthread_cond_signal(&t->cond);
        }
}

static bool send_err_fatal(int err)
{
    return err == -EPIPE || err == -ECONNRESET || err == -ENOTCONN || err == -EBADF ||
           err == -ECONNREFUSED;
}

int ss__cl_sendv(int fd, struct iovec *iov, int iovcnt)
{
    struct msghdr m = { .msg_iov = iov, .msg_iovlen = (size_t)iovcnt };
    ssize_t r = ss__sys_sendmsg(fd, &m, MSG_NOSIGNAL);

    return r < 0 ? (int)r : 0;
}

/* Send a RELEASE of ids[n] and then the request iov in one datagram (the
 * one case the protocol allows two messages in one, proto.h): the store
 * wakes and reads once, and handles the RELEASE first, so the request sees
 * the references already dropped. A request too large to share the
 * store's max_msg, or with more than SS_CL_MAX_IOV iovecs (a PUT_MANY),
 * goes as a second datagram of the same sendmmsg. */
static int cl_send_with_releases(int fd, uint32_t max_msg, const ss_id *ids, uint32_t n,
                                 struct iovec *iov, int iovcnt, bool *released)
{
    ss__msg_hdr h;
    ss__req_release r = { .n = n };
    struct iovec all[3 + SS_CL_MAX_IOV];
    size_t rel_len = SS_CL_HDR + sizeof(r) + n * sizeof(ss_id), total = rel_len;
    int sent = 0;

    *released = false;
    if (iovcnt < 1)
        return -EINVAL;
    ss__proto_hdr(&h, SS_MSG_RELEASE, 0, (uint32_t)rel_len, 0, 0);
    all[0] = (struct iovec){ &h, sizeof(h) };
    all[1] = (struct iovec){ &r, sizeof(r) };
    all[2] = (struct iovec){ (void *)ids, n * sizeof(ss_id) };
    for (int i = 0; i < iovcnt; i++)
        total += iov[i].iov_len;
    if (total <= max_msg && iovcnt <= SS_CL_MAX_IOV) {
        int rc;

        memcpy(all + 3, iov, (size_t)iovcnt * sizeof(*iov));
        rc = ss__cl_sendv(fd, all, 3 + iovcnt);
        *released = rc == 0;
        return rc;
    }
    struct mmsghdr mm[2] = {
        { .msg_hdr = { .msg_iov = all, .msg_iovlen = 3 } },
        { .msg_hdr = { .msg_iov = iov, .msg_iovlen = (size_t)iovcnt } },
    };
    while (sent < 2) {
        int k = ss__sys_sendmmsg(fd, mm + sent, (unsigned)(2 - sent), MSG_NOSIGNAL);

        if (k < 0)
            return k;
        sent += k;
        *released = true;
    }
    return 0;
}

/* Take up to max (at most SS_PROTO_MAX_IDS) pending releases (the
 * oldest) into ids; how many. Lock held. */
static uint32_t cl_take_pend(ss_client *c, ss_id *ids, uint32_t max)
{
    uint32_t n = c->npend < max ? c->npend : max;

    memcpy(ids, c->pend, n * sizeof(ss_id));
    c->npend -= n;
    memmove(c->pend, c->pend + n, c->npend * sizeof(ss_id));
    return n;
}

/* Small-object releases whose send failed without ending the connection
 * (ENOBUFS, ENOMEM): pending again, ahead of the others, so the next
 * request carries them. Lock held. Should they not fit (other threads'
 * sends failed too), the store and we would disagree on what we hold from
 * now on: the connection ends (the store then drops all our references). */
static void cl_repend(ss_client *c, const ss_id *ids, uint32_t n, int err)
{
    if (c->dead)
        return;
    if (c->npend + n >= SS_CL_PEND_MAX) {
        ss__cl_kill(c, err);
        return;
    }
    memmove(c->pend + n, c->pend, c->npend * sizeof(ss_id));
    memcpy(c->pend, ids, n * sizeof(ss_id));
    c->npend += n;
}

/* Receive one message into s (buf, fds). Lock NOT held. */
int ss__cl_recv(int fd, ss__cl_slot *s, int flags)
{
    union {
        struct cmsghdr h;
        char b[CMSG_SPACE(SS_PROTO_MAX_FDS * sizeof(int))];
    } cm;
    struct iovec iov = { s->buf, sizeof(s->buf) };
    struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1,
                        .msg_control = cm.b, .msg_controllen = sizeof(cm.b) };
    bool overflow = false;
    ssize_t n;

    s->nfds = 0;
    n = ss__sys_recvmsg(fd, &m, MSG_CMSG_CLOEXEC | flags);
    if (n < 0)
        return (int)n;
    for (struct cmsghdr *h = CMSG_FIRSTHDR(&m); h; h = CMSG_NXTHDR(&m, h)) {
        int *fds = (int *)CMSG_DATA(h);
        size_t k;

        if (h->cmsg_level != SOL_SOCKET || h->cmsg_type != SCM_RIGHTS)
            continue;
        k = (h->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        for (size_t i = 0; i < k; i++) {
            int f;
            memcpy(&f, fds + i, sizeof(f));
            if (s->nfds < SS_PROTO_MAX_FDS) {
                s->fds[s->nfds++] = f;
            } else {
                ss__sys_close(f);
                overflow = true;
            }
        }
    }
    if (n == 0) { /* EOF: the store closed the connection */
        ss__cl_close_fds(s->fds, s->nfds);
        s->nfds = 0;
        return -ECONNRESET;
    }
    if (overflow || (m.msg_flags & (MSG_CTRUNC | MSG_TRUNC))) {
        /* fds lost or a message cut: the store's idea of what we hold
         * and ours now differ; nothing can be trusted on this connection */
        ss__cl_close_fds(s->fds, s->nfds);
        s->nfds = 0;
        return -SS_E_PROTO;
    }
    s->len = (size_t)n;
    return 0;
}

/* A reply arrived in rx: validate it and hand it to its slot. Lock held. */
static void cl_dispatch(ss_client *c, ss__cl_slot *rx)
{
    ss__msg_hdr h;
    ss__cl_slot *t;
    int rc = ss__proto_check_reply(rx->buf, rx->len, rx->nfds);

    if (rc < 0 || rc == SS_MSG_EVENT)
        goto bad;
    memcpy(&h, rx->buf, sizeof(h));
    for (t = c->slots; t; t = t->next)
        if (t->req_id == h.req_id)
            break;
    if (!t || t->done || t->type != h.type)
        goto bad;
    if (t->get) {
        /* Applied here, under the lock and before the next reply is
         * received: in arrival order (client_int.h). What remains of its
         * fds is redundant. Once applied, the GET is no longer in flight. */
        if (h.status >= 0)
            t->get->rc = ss__cl_get_apply(c, rx, t->get);
        ss__cl_close_fds(rx->fds, rx->nfds);
        rx->nfds = 0;
        c->gets_in_flight--;
        t->get_pending = false;
        if (c->dead) /* t was not done, so the apply killed the connection: t->err says why */
            return;
    }
    /* t's request left after every RELEASE whose send had ended when it
     * was numbered: the store built this reply after reading them, and
     * every reply it built before has been applied (client_int.h) */
    if (t->seq > c->replied_seq)
        c->replied_seq = t->seq;
    if (c->deferred)
        ss__cl_seg_sweep(c);
    if (t != rx) {
        memcpy(t->buf, rx->buf, rx->len);
        t->len = rx->len;
        memcpy(t->fds, rx->fds, rx->nfds * sizeof(int));
        t->nfds = rx->nfds;
        rx->nfds = 0;
    }
    t->done = true;
    if (t != rx && t->waiting)
        pthread_cond_signal(&t->cond);
    return;
bad:
    ss__log_warn("bad reply from the store (%s): dropping the connection",
                 ss_strerror(rc < 0 ? rc : -SS_E_PROTO));
    ss__cl_close_fds(rx->fds, rx->nfds);
    rx->nfds = 0;
    ss__cl_kill(c, rc == -ENOMEM ? -ENOMEM : -SS_E_PROTO);
}

/* Receive the next message as the reader (lock NOT held). With
 * SEALSTORE_BUSY_POLL, first try without blocking for up to the spin's
 * window (internal.h), yielding the CPU between tries (loop.h says why):
 * a reply that comes within it costs no wake-up. */
static int cl_recv_reply(ss_client *c, ss__cl_slot *s)
{
    uint64_t win = ss__spin_window(&c->spin);

    if (win) {
        uint64_t end = ss__now_ns() + win + s->work_ns;

        do {
            int rc = ss__cl_recv(c->fd, s, MSG_DONTWAIT);

            if (rc != -EAGAIN && rc != -EWOULDBLOCK) {
                ss__spin_result(&c->spin, true);
                return rc;
            }
            c->busy_spins++;
            ss__sys_yield();
        } while (ss__now_ns() < end);
        ss__spin_result(&c->spin, false);
    }
    return ss__cl_recv(c->fd, s, 0);
}

/* Wait, lock held, until s is done: receive as the reader when nobody
 * else is, else sleep until the reader hands us our reply or the role. */
static void cl_wait(ss_client *c, ss__cl_slot *s)
{
    while (!s->done) {
        if (!c->reader) {
            int rc;

            c->reader = true;
            pthread_mutex_unlock(&c->lock);
            rc = cl_recv_reply(c, s);
            pthread_mutex_lock(&c->lock);
            c->reader = false;
            if (rc < 0)
                ss__cl_kill(c, rc);
            else
                cl_dispatch(c, s);
        } else {
            s->waiting = true;
            pthread_cond_wait(&s->cond, &c->lock);
            s->waiting = false;
        }
    }
}

/* Unlink a finished slot; pass the reader role on if someone still waits. */
void ss__cl_slot_end(ss_client *c, ss__cl_slot *s)
{
    if (s->prev)
        s->prev->next = s->next;
    else
        c->slots = s->next;
    if (s->next)
        s->next->prev = s->prev;
    if (s->get_pending)
        c->gets_in_flight--;
    if (!c->reader)
        for (ss__cl_slot *t = c->slots; t; t = t->next)
            if (!t->done && t->waiting) {
                pthread_cond_signal(&t->cond);
                break;
            }
    pthread_cond_destroy(&s->cond);
}

/*
 * Send a request (iov[0] is its header, filled here) and wait for the
 * reply. Returns with the lock HELD: 0 and the reply in s (status in its
 * header) or a connection error. The caller processes the reply, then
 * calls ss__cl_slot_end(), unlocks and closes s->fds it did not consume.
 * get: a GET's request and result; its reply is applied by whichever
 * thread receives it (client_int.h), and until then it counts among the
 * GETs in flight (segment cache rule). NULL for any other request.
 */
static int cl_call(ss_client *c, ss__cl_slot *s, uint16_t type, struct iovec *iov, int iovcnt,
                   ss__cl_getreq *get, uint64_t work_ns, void (*sent)(void *arg), void *arg)
{
    ss_id pend[SS_PROTO_MAX_IDS];
    uint32_t npend;
    size_t len = 0;
    bool released = false;
    int rc;

    for (int i = 0; i < iovcnt; i++)
        len += iov[i].iov_len;
    s->done = s->waiting = false;
    s->err = 0;
    s->nfds = 0;
    s->len = 0;
    s->type = type;
    s->get = get;
    s->get_pending = false;
    s->work_ns = work_ns;
    s->prev = NULL;
    /* the static initializer: default attributes, and no failure to check */
    s->cond = (pthread_cond_t)PTHREAD_COND_INITIALIZER;

    pthread_mutex_lock(&c->lock);
    if (++c->next_req == 0)
        c->next_req = 1;
    s->req_id = c->next_req;
    s->seq = ++c->req_seq; /* before the send starts: client_int.h */
    s->next = c->slots;
    if (c->slots)
        c->slots->prev = s;
    c->slots = s;
    if (get) {
        s->get_pending = true;
        c->gets_in_flight++;
    }
    if (c->dead) {
        s->done = true;
        s->err = c->dead;
        return s->err;
    }
    npend = cl_take_pend(c, pend, SS_PROTO_MAX_IDS);
    pthread_mutex_unlock(&c->lock);

    ss__proto_hdr(iov[0].iov_base, type, s->req_id, (uint32_t)len, 0, 0);
    if (npend)
        rc = cl_send_with_releases(c->fd, c->max_msg, pend, npend, iov, iovcnt, &released);
    else
        rc = ss__cl_sendv(c->fd, iov, iovcnt);
    if (rc >= 0 && sent)
        sent(arg); /* while the store works on it */

    pthread_mutex_lock(&c->lock);
    if (rc < 0) {
        if (send_err_fatal(rc)) {
            ss__cl_kill(c, rc);
        } else {
            s->done = true;
            s->err = rc;
            if (npend && !released)
                cl_repend(c, pend, npend, rc);
        }
    }
    cl_wait(c, s);
    return s->err;
}

int ss__cl_call(ss_client *c, ss__cl_slot *s, uint16_t type, struct iovec *iov, int iovcnt,
                ss__cl_getreq *get)
{
    return cl_call(c, s, type, iov, iovcnt, get, 0, NULL, NULL);
}

int ss__cl_call_work(ss_client *c, ss__cl_slot *s, uint16_t type, struct iovec *iov,
                     int iovcnt, uint64_t work_ns, void (*sent)(void *arg), void *arg)
{
    return cl_call(c, s, type, iov, iovcnt, NULL, work_ns, sent, arg);
}

/* Finish a call: unlink, unlock, close unconsumed fds. */
void ss__cl_end(ss_client *c, ss__cl_slot *s)
{
    ss__cl_slot_end(c, s);
    pthread_mutex_unlock(&c->lock);
    ss__cl_close_fds(s->fds, s->nfds);
}

int32_t ss__cl_status(const ss__cl_slot *s)
{
    ss__msg_hdr h;

    memcpy(&h, s->buf, sizeof(h));
    return h.status;
}

/* Handle checks every public call makes first. */
int ss__cl_enter(ss_client *c)
{
    if (!c)
        return -EINVAL;
    if (cl_forked(c))
        return -ENOTCONN;
    return 0;
}

/* A request whose body is one id and whose reply is a status. */
int ss__cl_simple(ss_client *c, uint16_t type, const ss_id *id)
{
    ss__cl_slot s;
    ss__msg_hdr h;
    ss__req_id r = { .id = *id };
    struct iovec iov[2] = { { &h, sizeof(h) }, { &r, sizeof(r) } };
    int rc = ss__cl_call(c, &s, type, iov, 2, NULL);

    if (rc == 0)
        rc = ss__cl_status(&s);
    ss__cl_end(c, &s);
    return rc;
}

/* ----------------------------------------------------------- releases */

/* Drop one reference of h (lock held), noting its id and segments for
 * the RELEASE message and the settle step that must follow its send. */
void ss__cl_drop_one(ss_client *c, ss__cl_hold *h, ss_id *ids, size_t *nids,
                     ss__cl_seg **segs, size_t *nsegs)
{
    ids[(*nids)++] = h->id;
    h->refs--;
    if (h->seg) {
        h->seg->refs--;
        h->seg->unsent++;
        segs[(*nsegs)++] = h->seg;
    }
    if (h->mseg) {
        h->mseg->refs--;
        h->mseg->unsent++;
        segs[(*nsegs)++] = h->mseg;
    }
    if (h->refs == 0) {
        /* a staged creation's area stays read-only until it is lent again */
        ss__cl_hold_unlink(c, h);
        ss__cl_buf_return(c, h);
        ss__cl_hold_free(h, false);
    }
}

/* Send RELEASE for ids (unlocking around the send), then settle the
 * segments: the unmap decision comes after the send (contract). Lock held
 * on entry and exit. A send that fails and leaves the connection up:
 * small-object ids go back to the pending ones (cl_repend); an OBJECT
 * segment's RELEASE ends the connection instead (its segment cannot be
 * settled before the store has read one). Returns the send's result. */
int ss__cl_finish_drop(ss_client *c, const ss_id *ids, size_t nids, ss__cl_seg **segs,
                       size_t nsegs)
{
    bool send = !c->dead && nids > 0;
    int rc = 0;

    pthread_mutex_unlock(&c->lock);
    if (send) {
        ss__msg_hdr h;
        ss__req_release r = { .n = (uint32_t)nids };
        struct iovec iov[3] = { { &h, sizeof(h) }, { &r, sizeof(r) },
                                { (void *)ids, nids * sizeof(ss_id) } };

        ss__proto_hdr(&h, SS_MSG_RELEASE, 0, (uint32_t)(SS_CL_HDR + sizeof(r) + nids * sizeof(ss_id)),
                      0, 0);
        rc = ss__cl_sendv(c->fd, iov, 3);
    }
    pthread_mutex_lock(&c->lock);
    if (rc < 0) {
        bool small = !send_err_fatal(rc);

        for (size_t i = 0; small && i < nsegs; i++)
            small = ss__cl_seg_stays(segs[i]);
        if (small)
            cl_repend(c, ids, (uint32_t)nids, rc);
        else
            ss__cl_kill(c, rc);
    }
    for (size_t i = 0; i < nsegs; i++) {
        segs[i]->unsent--;
        ss__cl_seg_settle(c, segs[i]);
    }
    return rc;
}

/* Send pending releases while a full message of them waits (the oldest
 * first). Lock held; unlocks around each send. */
static void cl_pend_flush(ss_client *c)
{
    while (!c->dead && c->npend >= SS_PROTO_MAX_IDS) {
        ss_id batch[SS_PROTO_MAX_IDS];
        uint32_t n = cl_take_pend(c, batch, SS_PROTO_MAX_IDS);

        (void)ss__cl_finish_drop(c, batch, n, NULL, 0);
    }
}

void ss__cl_send_pend(ss_client *c)
{
    while (c->npend && !c->dead) {
        ss_id batch[SS_PROTO_MAX_IDS];
        uint32_t n = cl_take_pend(c, batch, SS_PROTO_MAX_IDS);

        if (ss__cl_finish_drop(c, batch, n, NULL, 0) < 0)
            break; /* back in pend (or the connection is dead) */
    }
}

/* Drop one small-object reference without a message of its own: the id
 * waits in c->pend for the next request (ss__cl_call), or is sent now when
 * the batch is full. SMALL segments stay mapped for the connection, so
 * there is nothing to settle. Lock held on entry and exit. */
void ss__cl_defer_drop(ss_client *c, const ss_id *id, ss__cl_seg **segs, size_t nsegs)
{
    for (size_t i = 0; i < nsegs; i++)
        segs[i]->unsent--;
    if (c->dead)
        return;
    c->pend[c->npend++] = *id; /* room: cl_repend keeps npend < SS_CL_PEND_MAX */
    cl_pend_flush(c);
}

/* Send the batch's RELEASE (b->n ids, with the pending small releases
 * ahead of them when room is left: they are older) and settle its
 * segments. Lock held; unlocks around the send. */
static void cl_batch_flush(ss_client *c, ss__cl_batch *b)
{
    ss_id ids[SS_PROTO_MAX_IDS];
    uint32_t np = cl_take_pend(c, ids, (uint32_t)(SS_PROTO_MAX_IDS - b->nids));

    memcpy(ids + np, b->ids, b->nids * sizeof(ss_id));
    (void)ss__cl_finish_drop(c, ids, np + b->nids, b->segs, b->nsegs);
    b->nids = b->nsegs = 0;
    b->object = false;
}

void ss__cl_batch_end(ss_client *c, ss__cl_batch *b)
{
    if (b->nids == 0)
        return;
    if (b->object || c->npend + b->nids >= SS_CL_PEND_MAX) {
        cl_batch_flush(c, b);
        return;
    }
    /* Small objects only: they wait for the next call, as ss_release's
     * do. All of them join pend before any send (which unlocks), so no
     * other thread's release of one of these ids can leave ahead of them. */
    for (size_t i = 0; i < b->nsegs; i++)
        b->segs[i]->unsent--;
    if (!c->dead) {
        memcpy(c->pend + c->npend, b->ids, b->nids * sizeof(ss_id));
        c->npend += (uint32_t)b->nids;
    }
    b->nids = b->nsegs = 0;
    cl_pend_flush(c);
}

/* Drop one reference of h now and send its RELEASE: a small object's
 * waits in pend (ss__cl_defer_drop), an OBJECT's goes at once; with a
 * batch, it joins the batch (sent when full or at ss__cl_batch_end). Lock
 * held; may unlock around the send. */
static void cl_drop_send(ss_client *c, ss__cl_hold *h, ss__cl_batch *b)
{
    ss_id rid[1];
    ss__cl_seg *segs[2];
    size_t nid = 0, nseg = 0;
    bool small = true;

    if (b) {
        size_t before = b->nsegs;

        ss__cl_drop_one(c, h, b->ids, &b->nids, b->segs, &b->nsegs);
        for (size_t i = before; i < b->nsegs; i++)
            b->object = b->object || b->segs[i]->kind != SS_SEG_SMALL;
        if (b->nids == SS_PROTO_MAX_IDS)
            cl_batch_flush(c, b);
        return;
    }
    ss__cl_drop_one(c, h, rid, &nid, segs, &nseg);
    /* A small object's release rides along with the next request: one
     * store wake-up instead of two for a get + release loop. Its memory is
     * a slot, not a segment; the reference is dropped by the next call on
     * this handle, at disconnect, or once 64 are waiting. */
    for (size_t i = 0; i < nseg; i++) /* a staged object's goes at once too: it
                                         * frees arena space and the area */
        small = small && segs[i]->kind == SS_SEG_SMALL;
    if (small)
        ss__cl_defer_drop(c, &rid[0], segs, nseg);
    else
        (void)ss__cl_finish_drop(c, rid, nid, segs, nseg);
}

void ss__cl_release_hold_into(ss_client *c, ss__cl_hold *h, ss__cl_batch *b)
{
    ss_id id = h->id;
    int err;

    if (h->pins > 0) { /* the client's own: no store reference moves */
        ss__cl_unpin(c, h);
        return;
    }
    if (h->local > 0) { /* interchangeable with its store references: no message */
        h->local--;
        return;
    }
    if (h != ss__cl_hold_pick_release(c, &id, &err, true)) {
        h->owed++;
        return;
    }
    cl_drop_send(c, h, b);
    /* h may be gone, and the lock was maybe dropped: look again */
    while ((h = ss__cl_hold_pick_release(c, &id, &err, true)) && h->owed > 0) {
        h->owed--;
        cl_drop_send(c, h, b);
    }
}

void ss__cl_release_hold(ss_client *c, ss__cl_hold *h)
{
    ss__cl_release_hold_into(c, h, NULL);
}

/* Undo references a get took (refs[i].found), by identity: the holds are
 * looked up again under the lock, so a concurrent release by the caller
 * cannot leave us with a dangling pointer; each goes in release order (a
 * RELEASE of the id would drop the oldest hold's). Lock held. */
void ss__cl_drop_refs(ss_client *c, const ss_id *ids, const ss__cl_ref *refs, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        ss__cl_hold *h;

        if (!refs[i].found)
            continue;
        if (refs[i].pinned)
            h = ss__cl_hold_find_pinned(c, &ids[i], (uint32_t)refs[i].seg_id,
                                        (uint32_t)refs[i].off);
        else
            h = ss__cl_hold_find_view(c, &ids[i], refs[i].has_seg, refs[i].seg_id, refs[i].off);
        if (h)
            ss__cl_release_hold(c, h);
    }
}

/* ------------------------------------------------------------ connect */

int ss__cl_wait_reply(int fd)
{
    struct pollfd pfd = { .fd = fd, .events = POLLIN };
    int rc;

    do
        rc = ss__sys_poll(&pfd, 1, SS_CL_HELLO_TIMEOUT_MS);
    while (rc == -EINTR);
    return rc == 0 ? -ETIMEDOUT : rc < 0 ? rc : 0;
}

/* Connect and HELLO, each bounded by SS_CL_HELLO_TIMEOUT_MS. */
int ss__cl_open(const char *path, int *fdp, ss__rep_hello *hello)
{
    struct sockaddr_un a = { .sun_family = AF_UNIX };
    struct timeval tv = { SS_CL_HELLO_TIMEOUT_MS / 1000, (SS_CL_HELLO_TIMEOUT_MS % 1000) * 1000 };
    struct timeval tv0 = { 0, 0 };
    int bufsz = CL_SOCKBUF;
    ss__msg_hdr h;
    ss__req_hello r = { .pid = (uint32_t)ss__sys_getpid() };
    struct iovec iov[2] = { { &h, sizeof(h) }, { &r, sizeof(r) } };
    ss__cl_slot *s = NULL;
    int fd, rc;

    strcpy(a.sun_path, path);
    fd = ss__sys_socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return fd;
    /* room for a few of the largest messages either way */
    (void)ss__sys_setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &bufsz, sizeof(bufsz));
    (void)ss__sys_setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &bufsz, sizeof(bufsz));
    /* a Unix connect waits on a full backlog: SO_SNDTIMEO bounds it */
    (void)ss__sys_setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    rc = ss__sys_connect(fd, (struct sockaddr *)&a, sizeof(a));
    if (rc < 0) {
        if (rc == -EAGAIN || rc == -EWOULDBLOCK)
            rc = -ETIMEDOUT;
        goto fail;
    }
    (void)ss__sys_setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv0, sizeof(tv0));

    ss__proto_hdr(&h, SS_MSG_HELLO, 1, sizeof(h) + sizeof(r), 0, 0);
    rc = ss__cl_sendv(fd, iov, 2);
    if (rc < 0) {
        /* the listener went away between connect and send */
        if (rc == -EPIPE || rc == -ECONNRESET)
            rc = -ECONNREFUSED;
        goto fail;
    }
    rc = ss__cl_wait_reply(fd);
    if (rc < 0)
        goto fail;
    s = malloc(sizeof(*s));
    if (!s) {
        rc = -ENOMEM;
        goto fail;
    }
    rc = ss__cl_recv(fd, s, 0);
    if (rc < 0)
        goto fail;
    ss__cl_close_fds(s->fds, s->nfds);
    rc = ss__proto_check_reply(s->buf, s->len, s->nfds);
    if (rc < 0)
        goto fail;
    memcpy(&h, s->buf, sizeof(h));
    if (h.type != SS_MSG_HELLO || h.req_id != 1) {
        rc = -SS_E_PROTO;
        goto fail;
    }
    if (h.status < 0) {
        rc = h.status;
        goto fail;
    }
    memcpy(hello, s->buf + SS_CL_HDR, sizeof(*hello));
    free(s);
    *fdp = fd;
    return 0;
fail:
    free(s);
    ss__sys_close(fd);
    return rc;
}

SS_API int ss_connect(const char *socket_path, unsigned flags, ss_client **out)
{
    ss__rep_hello hello;
    ss__store *started = NULL;
    ss_client *c;
    int rc, fd = -1;

    if (!out || (flags & ~SS_CONNECT_EMBED))
        return -EINVAL;
    pthread_once(&g_once, cl_init_once);
    c = calloc(1, sizeof(*c));
    if (!c)
        return -ENOMEM;
    if (socket_path) {
        size_t n = strlen(socket_path);
        if (n == 0 || n >= sizeof(c->path)) {
            free(c);
            return -EINVAL;
        }
        memcpy(c->path, socket_path, n + 1);
    } else {
        rc = ss__default_socket_path(c->path, sizeof(c->path));
        if (rc < 0) {
            free(c);
            return rc == -ENAMETOOLONG ? -EINVAL : rc;
        }
    }

    for (int tries = 0;; tries++) {
        rc = ss__cl_open(c->path, &fd, &hello);
        if (rc == 0)
            break;
        if (!(flags & SS_CONNECT_EMBED) || started || tries >= CL_EMBED_TRIES ||
            (rc != -ECONNREFUSED && rc != -ENOENT && rc != -ETIMEDOUT))
            goto fail;
        rc = ss__store_start_thread(&started, c->path, SS_STORE_EMBEDDED);
        if (rc == -EADDRINUSE) {
            /* another process (or thread) won the race to start a store
             * on this path: connect to theirs once it listens */
            started = NULL;
            ss__sys_sleep_ns(10 * 1000 * 1000);
            continue;
        }
        if (rc < 0) {
            started = NULL;
            goto fail;
        }
    }

    c->fd = fd;
    c->fork_gen = atomic_load_explicit(&g_fork_gen, memory_order_relaxed);
    c->embedded = started;
    c->store_id = hello.store_id;
    c->client_id = hello.client_id;
    c->small_max = hello.small_max;
    c->max_msg = hello.max_msg < SS_PROTO_MAX_MSG ? hello.max_msg : SS_PROTO_MAX_MSG;
    c->capacity = hello.capacity;
    c->keep_bytes = ss__opt_size(SS_OPT_MAP_CACHE);
    c->local_gets = ss__opt_bool(SS_OPT_LOCAL_GETS);
    c->index_gets = ss__opt_bool(SS_OPT_INDEX_GETS);
    ss__spin_init(&c->spin, ss__opt_us(SS_OPT_BUSY_POLL));
    if (c->keep_bytes > c->capacity / 8)
        c->keep_bytes = c->capacity / 8;
    c->hold_bits = 6;
    c->seg_bits = 6;
    c->holds = calloc((size_t)1 << c->hold_bits, sizeof(*c->holds));
    c->segs = calloc((size_t)1 << c->seg_bits, sizeof(*c->segs));
    if (!c->holds || !c->segs || pthread_mutex_init(&c->lock, NULL) != 0) {
        rc = -ENOMEM;
        free(c->holds);
        free(c->segs);
        ss__sys_close(fd);
        goto fail;
    }
    *out = c;
    return 0;
fail:
    if (started)
        ss__store_stop_thread(started);
    free(c);
    return rc;
}

SS_API void ss_disconnect(ss_client *c)
{
    bool forked;

    if (!c)
        return;
    forked = cl_forked(c);
    /* Closing the socket makes the store drop this client's references
     * and unsealed objects (in a forked child it only drops our copy);
     * deferred releases still go out first, so the store never sees a
     * reference dropped by disconnect that the caller had released. */
    if (!forked && !c->dead && c->npend) {
        pthread_mutex_lock(&c->lock);
        ss__cl_send_pend(c); /* on a failure the close below drops them all */
        pthread_mutex_unlock(&c->lock);
    }
    ss__sys_close(c->fd);
    for (size_t b = 0; b < ((size_t)1 << c->hold_bits); b++)
        for (ss__cl_hold *h = c->holds[b], *nx; h; h = nx) {
            nx = h->next;
            ss__cl_hold_free(h, forked);
        }
    for (size_t b = 0; b < ((size_t)1 << c->seg_bits); b++)
        for (ss__cl_seg *s = c->segs[b], *nx; s; s = nx) {
            nx = s->next;
            ss__cl_seg_free(s, forked);
        }
    for (unsigned k = 0; k < SS_CL_SLABS; k++)
        if (c->slabs[k].base && !forked) /* MADV_DONTFORK: absent in a forked child */
            ss__sys_munmap(c->slabs[k].base, SS_CL_SLAB_BYTES);
    free(c->holds);
    free(c->segs);
    ss__cl_index_free(c, forked);
    if (!forked) {
        /* the lock may have been held by a thread that does not exist in
         * a child: leave it alone there */
        pthread_mutex_destroy(&c->lock);
        if (c->embedded)
            ss__store_stop_thread(c->embedded);
    }
    free(c);
}
