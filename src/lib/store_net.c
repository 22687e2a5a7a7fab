/* SPDX-License-Identifier: MIT */
/*
 * Client sessions on the store's SOCK_SEQPACKET socket: receive, validate,
 * dispatch, reply (DESIGN section 1; wire format in proto.h).
 *
 * Never trust the peer. Every request goes through ss__proto_check_request
 * (the fuzzed decoder) before any field is read. A request that carries fds
 * (SCM_RIGHTS) has them closed and is a protocol error; a truncated message
 * (MSG_TRUNC, MSG_CTRUNC) likewise. A malformed request gets an error reply
 * when its header names a request (magic right), else the connection is
 * closed; before HELLO anything else closes it. Protocol errors are
 * counted (ss_stats.protocol_errors).
 *
 * Replies are sent with MSG_DONTWAIT | MSG_NOSIGNAL. When the client does
 * not read (EAGAIN), the reply goes to a bounded per-client outbox, with the
 * fds it carries dup'ed (the object may be freed before the outbox drains),
 * and the connection's EPOLLIN is switched off until EPOLLOUT drains it: a
 * client that does not read its replies cannot make the store queue more
 * than its parked requests' worth. A subscriber whose queue is full is
 * dropped instead (events are never queued).
 *
 * Closing is deferred to the end of the loop turn (ss__conn_reap): a send
 * that fails in the middle of waking waiters must not free a connection
 * another pointer in the same turn still refers to.
 */
#include "store_int.h"

#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/epoll.h>
#include <sys/socket.h>

#include "stats.h"

#define READ_BATCH 64         /* requests read per wake-up: fairness */
#define CMSG_FDS 16           /* fds we can see in a hostile request; the
                                 kernel closes what does not fit */

/* ============================================================= lifecycle */

ss__conn *ss__conn_new(ss__store *s, int fd, pid_t pid, uid_t uid)
{
    ss__conn *c = calloc(1, sizeof(*c));

    if (!c)
        return NULL;
    c->fd = fd;
    c->pid = pid;
    c->uid = uid;
    if (++s->next_client_id == 0)
        s->next_client_id = 1;
    c->id = s->next_client_id;
    c->next = s->conns;
    if (s->conns)
        s->conns->prev = c;
    s->conns = c;
    s->nclients++;
    return c;
}

void ss__conn_close(ss__store *s, ss__conn *c)
{
    if (c->broken)
        return;
    c->broken = true;
    c->reap_next = s->reap;
    s->reap = c;
}

static void outbox_free(ss__conn *c)
{
    for (ss__outmsg *m = c->out_head, *nx; m; m = nx) {
        nx = m->next;
        for (uint32_t i = 0; i < m->nfds; i++)
            close(m->fds[i]);
        free(m->fds);
        free(m);
    }
    c->out_head = c->out_tail = NULL;
    c->out_count = 0;
}

void ss__conn_free_dead(ss__store *s, ss__conn *c)
{
    if (c->seal_busy)
        return; /* its seal job comes back later */
    free(c);
}

void ss__conn_reap(ss__store *s)
{
    while (s->reap) {
        ss__conn *c = s->reap;
        s->reap = c->reap_next;
        epoll_ctl(s->epfd, EPOLL_CTL_DEL, c->fd, NULL);
        close(c->fd);
        c->fd = -1;
        outbox_free(c);
        if (c->prev)
            c->prev->next = c->next;
        else
            s->conns = c->next;
        if (c->next)
            c->next->prev = c->prev;
        s->nclients--;
        if (c->subscriber)
            s->nsubscribers--;
        c->dead = true;
        /* may send to others (retried creates, events) and so queue more
         * connections on s->reap: the loop takes them too */
        ss__obj_conn_gone(s, c);
        ss__conn_free_dead(s, c);
    }
}

/* ================================================================ sending */

static int send_msg(int fd, const void *msg, uint32_t len, const int *fds, uint32_t nfds)
{
    struct iovec iov = { .iov_base = (void *)msg, .iov_len = len };
    union {
        char buf[CMSG_SPACE(sizeof(int) * SS_PROTO_MAX_FDS)];
        struct cmsghdr align;
    } u;
    struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };

    if (nfds) {
        mh.msg_control = u.buf;
        mh.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
        memset(u.buf, 0, mh.msg_controllen); /* padding after an odd fd count */
        struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);
        cm->cmsg_level = SOL_SOCKET;
        cm->cmsg_type = SCM_RIGHTS;
        cm->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
        memcpy(CMSG_DATA(cm), fds, sizeof(int) * nfds);
    }
    for (;;) {
        ssize_t n = sendmsg(fd, &mh, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (n >= 0)
            return n == (ssize_t)len ? 0 : -EMSGSIZE;
        if (errno != EINTR)
            return -errno;
    }
}

static int outbox_push(ss__conn *c, const void *msg, uint32_t len, const int *fds, uint32_t nfds)
{
    ss__outmsg *m = malloc(sizeof(*m) + len);

    if (!m)
        return -ENOMEM;
    m->next = NULL;
    m->len = len;
    m->nfds = 0;
    m->fds = NULL;
    memcpy(m->buf, msg, len);
    if (nfds) {
        m->fds = malloc(nfds * sizeof(int));
        if (!m->fds) {
            free(m);
            return -ENOMEM;
        }
        for (uint32_t i = 0; i < nfds; i++) {
            int d = fcntl(fds[i], F_DUPFD_CLOEXEC, 0);
            if (d < 0) {
                int err = -errno;
                for (uint32_t k = 0; k < m->nfds; k++)
                    close(m->fds[k]);
                free(m->fds);
                free(m);
                return err;
            }
            m->fds[m->nfds++] = d;
        }
    }
    if (c->out_tail)
        c->out_tail->next = m;
    else
        c->out_head = m;
    c->out_tail = m;
    c->out_count++;
    return 0;
}

int ss__conn_send(ss__store *s, ss__conn *c, const void *msg, uint32_t len, const int *fds,
                  uint32_t nfds)
{
    int rc;

    if (c->broken || c->dead)
        return -EPIPE;
    if (!c->out_head) {
        rc = send_msg(c->fd, msg, len, fds, nfds);
        if (rc == 0)
            return 0;
        if (rc != -EAGAIN) {
            /* EPIPE/ECONNRESET: gone; ETOOMANYREFS: too many of our fds
             * sit unread in sockets, and this client is not reading */
            if (rc != -EPIPE && rc != -ECONNRESET)
                ss__log_info("store: client %u (pid %d): send: %s: dropped", c->id,
                             (int)c->pid, ss_strerror(rc));
            ss__conn_close(s, c);
            return rc;
        }
        if (c->subscriber) {
            ss__log_info("store: subscriber %u (pid %d) not reading: dropped", c->id,
                         (int)c->pid);
            ss__conn_close(s, c);
            return rc;
        }
    }
    if (c->out_count >= SS_OUTBOX_MAX) {
        ss__log_warn("store: client %u (pid %d) has %u unread replies: dropped", c->id,
                     (int)c->pid, c->out_count);
        ss__conn_close(s, c);
        return -ENOBUFS;
    }
    rc = outbox_push(c, msg, len, fds, nfds);
    if (rc < 0) {
        ss__conn_close(s, c);
        return rc;
    }
    if (c->out_count == 1)
        ss__store_epoll_mod(s, c);
    return 0;
}

void ss__conn_reply_status(ss__store *s, ss__conn *c, uint16_t type, uint32_t req_id,
                           int32_t status)
{
    ss__msg_hdr h;

    ss__proto_hdr(&h, type, req_id, sizeof(h), status, SS_MSGF_REPLY);
    ss__conn_send(s, c, &h, sizeof(h), NULL, 0);
}

void ss__conn_writable(ss__store *s, ss__conn *c)
{
    while (c->out_head && !c->broken) {
        ss__outmsg *m = c->out_head;
        int rc = send_msg(c->fd, m->buf, m->len, m->fds, m->nfds);
        if (rc == -EAGAIN)
            return;
        if (rc < 0) {
            ss__conn_close(s, c);
            return;
        }
        c->out_head = m->next;
        if (!c->out_head)
            c->out_tail = NULL;
        c->out_count--;
        for (uint32_t i = 0; i < m->nfds; i++)
            close(m->fds[i]);
        free(m->fds);
        free(m);
    }
    if (!c->broken)
        ss__store_epoll_mod(s, c); /* drained: read requests again */
}

void ss__store_event(ss__store *s, uint32_t type, const ss_id *id, uint64_t size)
{
    struct {
        ss__msg_hdr h;
        ss__msg_event ev;
    } m;

    if (!s->nsubscribers)
        return;
    memset(&m, 0, sizeof(m));
    ss__proto_hdr(&m.h, SS_MSG_EVENT, 0, sizeof(m), 0, SS_MSGF_REPLY);
    m.ev.type = type;
    m.ev.id = *id;
    m.ev.size = size;
    for (ss__conn *c = s->conns; c; c = c->next)
        if (c->subscriber && !c->broken && (c->sub_mask & type))
            ss__conn_send(s, c, &m, sizeof(m), NULL, 0);
}

void ss__conn_flush_all(ss__store *s, int timeout_ms)
{
    uint64_t end = ss__now_ns() + (uint64_t)timeout_ms * 1000000ull;

    for (;;) {
        bool pending = false;
        for (ss__conn *c = s->conns; c; c = c->next) {
            if (c->out_head && !c->broken)
                ss__conn_writable(s, c);
            if (c->out_head && !c->broken)
                pending = true;
        }
        ss__conn_reap(s);
        if (!pending || ss__now_ns() >= end)
            return;
        struct epoll_event ev[16];
        epoll_wait(s->epfd, ev, 16, 10);
    }
}

/* ================================================================ receiving */

static void hello(ss__store *s, ss__conn *c, const ss__msg_hdr *h)
{
    struct {
        ss__msg_hdr h;
        ss__rep_hello r;
    } m;

    memset(&m, 0, sizeof(m));
    ss__proto_hdr(&m.h, SS_MSG_HELLO, h->req_id, sizeof(m), 0, SS_MSGF_REPLY);
    m.r.store_id = s->store_id;
    m.r.client_id = c->id;
    m.r.small_max = (uint32_t)s->small_max;
    m.r.capacity = s->capacity;
    m.r.max_msg = SS_PROTO_MAX_MSG;
    c->hello = true;
    ss__conn_send(s, c, &m, sizeof(m), NULL, 0);
}

static void subscribe(ss__store *s, ss__conn *c, const ss__msg_hdr *h)
{
    const ss__req_subscribe *rq = (const void *)(h + 1);

    c->sub_mask = rq->mask;
    ss__conn_reply_status(s, c, SS_MSG_SUBSCRIBE, h->req_id, 0);
    c->subscriber = true;
    s->nsubscribers++;
}

/* A malformed message: answer it if its header names a request, else
 * close. RELEASE is never answered. */
static void proto_error(ss__store *s, ss__conn *c, const void *buf, size_t len, int rc)
{
    ss__msg_hdr h;

    s->c_proto_errors++;
    if (len < sizeof(h) || !c->hello) {
        ss__conn_close(s, c);
        return;
    }
    memcpy(&h, buf, sizeof(h));
    /* "names a request": our magic, a request type (an EVENT or an unknown
     * type could not be matched by any client), not a reply */
    if (h.magic != SS_PROTO_MAGIC || (h.flags & SS_MSGF_REPLY) || h.type < SS_MSG_HELLO ||
        h.type > SS_MSG_SUBSCRIBE) {
        ss__conn_close(s, c);
        return;
    }
    if (h.type == SS_MSG_RELEASE && h.version == SS_PROTO_VERSION)
        return;
    ss__conn_reply_status(s, c, h.type, h.req_id, rc == -SS_E_VERSION ? rc : -SS_E_PROTO);
}

static void dispatch(ss__store *s, ss__conn *c, const void *buf, size_t len, unsigned nfds)
{
    int type = ss__proto_check_request(buf, len, nfds);
    const ss__msg_hdr *h = buf;

    if (type < 0) {
        proto_error(s, c, buf, len, type);
        return;
    }
    if (!c->hello && type != SS_MSG_HELLO) {
        /* HELLO first: anything else is not one of our clients */
        s->c_proto_errors++;
        ss__conn_close(s, c);
        return;
    }
    if (c->subscriber) {
        /* an event stream carries no requests */
        s->c_proto_errors++;
        ss__conn_close(s, c);
        return;
    }
    switch (type) {
    case SS_MSG_HELLO:
        hello(s, c, h);
        break;
    case SS_MSG_CREATE:
        ss__obj_create(s, c, h, false);
        break;
    case SS_MSG_PUT:
        ss__obj_create(s, c, h, true);
        break;
    case SS_MSG_SEAL:
        ss__obj_seal(s, c, h);
        break;
    case SS_MSG_ABORT:
        ss__obj_abort(s, c, h);
        break;
    case SS_MSG_GET:
        ss__obj_get(s, c, h);
        break;
    case SS_MSG_RELEASE:
        ss__obj_release(s, c, h);
        break;
    case SS_MSG_CONTAINS:
        ss__obj_contains(s, c, h);
        break;
    case SS_MSG_DELETE:
        ss__obj_delete(s, c, h);
        break;
    case SS_MSG_LIST:
        ss__obj_list(s, c, h);
        break;
    case SS_MSG_STATS:
        ss__obj_stats(s, c, h);
        break;
    case SS_MSG_SUBSCRIBE:
        subscribe(s, c, h);
        break;
    default:
        proto_error(s, c, buf, len, -SS_E_PROTO);
        break;
    }
}

void ss__conn_readable(ss__store *s, ss__conn *c)
{
    union {
        char buf[CMSG_SPACE(sizeof(int) * CMSG_FDS)];
        struct cmsghdr align;
    } u;

    for (int i = 0; i < READ_BATCH; i++) {
        /* stop when the outbox holds replies or too many requests wait:
         * the kernel's queue then pushes back on the client */
        if (c->broken || c->out_head || c->nparked >= SS_PARKED_MAX)
            return;
        struct iovec iov = { .iov_base = s->ibuf, .iov_len = SS_PROTO_MAX_MSG };
        struct msghdr mh = {
            .msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf,
            .msg_controllen = sizeof(u.buf),
        };
        ssize_t n = recvmsg(c->fd, &mh, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno != EAGAIN)
                ss__conn_close(s, c);
            return;
        }
        if (n == 0) { /* orderly close */
            ss__conn_close(s, c);
            return;
        }
        unsigned nfds = 0;
        for (struct cmsghdr *cm = CMSG_FIRSTHDR(&mh); cm; cm = CMSG_NXTHDR(&mh, cm)) {
            if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS)
                continue;
            size_t k = (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);
            for (size_t j = 0; j < k; j++) {
                int fd;
                memcpy(&fd, CMSG_DATA(cm) + j * sizeof(int), sizeof(int));
                close(fd);
                nfds++;
            }
        }
        if (mh.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) {
            /* longer than any request, or more fds than we look at */
            proto_error(s, c, s->ibuf, (size_t)n, -SS_E_PROTO);
            continue;
        }
        size_t first = ss__proto_split_request(s->ibuf, (size_t)n);

        dispatch(s, c, s->ibuf, first, nfds);
        if (first < (size_t)n && !c->broken) {
            /* a RELEASE led the datagram: the request behind it, moved to
             * the buffer's start so its header is aligned */
            memmove(s->ibuf, (char *)s->ibuf + first, (size_t)n - first);
            dispatch(s, c, s->ibuf, (size_t)n - first, nfds);
        }
    }
}

/* ---- LIST, STATS */

#define LIST_SCAN_MAX 65536u

void ss__obj_list(ss__store *s, ss__conn *c, const ss__msg_hdr *h)
{
    const ss__req_list *rq = (const void *)(h + 1);
    ss__msg_hdr *oh = (ss__msg_hdr *)s->obuf;
    ss__rep_list *rl = (ss__rep_list *)(oh + 1);
    ss__list_entry *le = (ss__list_entry *)(rl + 1);
    uint32_t max = rq->max, n = 0;
    uint64_t e = rq->cursor, scanned = 0;

    if (max == 0 || max > SS_PROTO_MAX_LIST) {
        ss__conn_reply_status(s, c, SS_MSG_LIST, h->req_id, -EINVAL);
        return;
    }
    for (; e < s->ix.high && n < max && scanned < LIST_SCAN_MAX; e++, scanned++) {
        const ss__index_entry *en = ss__index_at(&s->ix, (uint32_t)e);
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
            const ss__seg *g = ss__salloc_segment(s->salloc, o->small_slot);
            le[n].backing = g ? g->backing : SS_BACKING_4K;
        } else {
            le[n].backing = (uint8_t)SS_IX_BACKING(en->info);
        }
        le[n].spilled = st == SS_IX_SPILLED;
        le[n].node = st == SS_IX_SPILLED ? -1 : o->node;
        le[n].refs = o->refs;
        le[n].uid = o->uid;
        n++;
    }
    rl->next_cursor = e < s->ix.high ? e : 0;
    rl->n = n;
    rl->reserved = 0;
    uint32_t len = (uint32_t)(sizeof(*oh) + sizeof(*rl) + (size_t)n * sizeof(*le));
    ss__proto_hdr(oh, SS_MSG_LIST, h->req_id, len, (int32_t)n, SS_MSGF_REPLY);
    ss__conn_send(s, c, s->obuf, len, NULL, 0);
}

uint64_t ss__obj_bookkeeping(const ss__store *s)
{
    return ss__index_bytes(&s->ix) + (uint64_t)s->ix.high * sizeof(ss__obj) +
           (uint64_t)s->disk_cap * sizeof(ss__diskloc) +
           (uint64_t)s->ops_cap * sizeof(ss__spop);
}

void ss__obj_fill_stats(ss__store *s, ss_stats *st)
{
    ss__salloc_stats sa;
    ss__pool_stats ps;

    memset(st, 0, sizeof(*st));
    st->size = sizeof(*st);
    st->version = SS_STATS_VERSION;
    st->capacity = s->capacity;
    st->resident_bytes = atomic_load(&s->resident);
    st->objects = s->nobjects;
    st->sealed_objects = s->nsealed;
    st->object_bytes = s->object_bytes;
    st->bytes_by_backing[0] = (uint64_t)atomic_load(&ss__g_stats.seg_bytes_4k.cur);
    st->bytes_by_backing[1] = (uint64_t)atomic_load(&ss__g_stats.seg_bytes_thp.cur);
    st->bytes_by_backing[2] = (uint64_t)atomic_load(&ss__g_stats.seg_bytes_2m.cur);
    st->bytes_by_backing[3] = (uint64_t)atomic_load(&ss__g_stats.seg_bytes_1g.cur);
    ss__salloc_stats_get(s->salloc, &sa);
    st->small_live_bytes = sa.live_bytes;
    st->small_used_bytes = sa.used_bytes;
    st->small_segment_bytes = sa.segment_bytes;
    if (s->pool) {
        ss__pool_stats_get(s->pool, &ps);
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
    st->clients = s->nclients;
    st->creates = s->c_creates;
    st->seals = s->c_seals;
    st->aborts = s->c_aborts;
    st->gets = s->c_gets;
    st->releases = s->c_releases;
    st->deletes = s->c_deletes;
    st->evictions = s->c_evictions;
    st->waits = s->c_waits;
    st->wait_timeouts = s->c_wait_timeouts;
    st->protocol_errors = s->c_proto_errors;
    st->bookkeeping_bytes = ss__obj_bookkeeping(s);
    ss__spill_fill_stats(s, st);
}

void ss__obj_stats(ss__store *s, ss__conn *c, const ss__msg_hdr *h)
{
    struct {
        ss__msg_hdr h;
        ss_stats st;
    } m;

    ss__obj_fill_stats(s, &m.st);
    ss__proto_hdr(&m.h, SS_MSG_STATS, h->req_id, sizeof(m), 0, SS_MSGF_REPLY);
    ss__conn_send(s, c, &m, sizeof(m), NULL, 0);
}

