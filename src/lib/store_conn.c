/* SPDX-License-Identifier: MIT */
/*
 * Connections: accepting, the handshake deadline, receiving, sending and
 * the outbox, the fd budget, lingering sockets, events to subscribers.
 * Owns ss__store.conn (and the ss__conn fields marked "conn"); calls only
 * the loop core (loop.h), proto.c, and the handlers the request layer
 * registered (ss__conn_register): a message arrived, a connection went
 * away, the fd budget may have freed up.
 *
 * Access: every accepted peer is checked with SO_PEERCRED (and
 * SO_PEERGROUPS for the group rule): same uid as the store, root, or a
 * member of the socket group. Anyone else is disconnected at once. An
 * accepted connection keeps a pidfd of its peer (peer_pidfd below), with
 * which copies may read from the blocked caller's memory (copy.h).
 *
 * Never trust the peer. A request that carries fds (SCM_RIGHTS) has them
 * closed and is a protocol error; a truncated message (MSG_TRUNC,
 * MSG_CTRUNC) likewise. Every request then goes through
 * ss__proto_check_request (the fuzzed decoder, in the request layer's
 * dispatch) before any field is read. A malformed request gets an error
 * reply when its header names a request (magic right), else the
 * connection is closed; before HELLO anything else closes it. Protocol
 * errors are counted (ss_stats.protocol_errors).
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
 *
 * Fd passing is a shared resource: fds in replies a client has not read
 * count against the store's uid, and past its RLIMIT_NOFILE every
 * SCM_RIGHTS send fails with ETOOMANYREFS, whoever it is for. So the store
 * tracks each client's unread fd-carrying replies (ss__fdmark in
 * store_int.h), stops reading a client's requests at its cap, holds back
 * GET replies that would pass the budget (store_get.c parks them until it
 * frees up), and never takes ETOOMANYREFS for a dead peer: that reply is
 * queued and retried, and the connection stays. The only way a count goes
 * down is the client reading (or closing), which the store sees with
 * SIOCOUTQ: while anything waits for the budget, ss__conn_tick looks every
 * FD_POLL_MS. A connection closed with replies unread lingers (socket shut
 * down, still counted) until they are read or the peer closes.
 *
 * Handshake: a connection must say HELLO within the hello timeout, and at
 * most hello_pending_max connections may be waiting to; beyond that the
 * store accepts no more until some do (they wait in the kernel's backlog).
 */
#include "store_int.h"

#include <stdlib.h>
#include <string.h>
#include <linux/sockios.h>
#include <sys/ioctl.h> /* TIOCOUTQ, behind SIOCOUTQ */

#include "sys.h"

#define READ_BATCH 64         /* requests read per wake-up: fairness */
#define CMSG_FDS 16           /* fds we can see in a hostile request; the
                                 kernel closes what does not fit */
#define FD_POLL_MS 10         /* look at unread replies this often while
                                 something waits for the fd budget */
#define SOCK_BUF (4 * SS_PROTO_MAX_MSG)
#define ACCEPT_BACKOFF_NS (100 * 1000000ull)
#define TRIM_AFTER (8ull << 20) /* heap freed before asking malloc to return it */

/* Tests shrink these before opening a store (0: the default). */
ss__limits ss__g_limits;

void ss__conn_register(ss__store *s, const ss__conn_handlers *h)
{
    s->conn.h = *h;
}

void ss__conn_heap_freed(ss__store *s, uint64_t bytes)
{
    /* Thousands of parked requests and wait nodes freed at once leave
     * free chunks scattered through malloc's arenas that it would keep
     * (only a free top is returned by itself): give them back once a few
     * MiB accumulated, so a burst of clients does not raise the store's
     * RSS for good. */
    s->conn.trim_freed += bytes;
    if (s->conn.trim_freed >= TRIM_AFTER) {
        s->conn.trim_freed = 0;
        ss__sys_heap_trim();
    }
}

/* ============================================================= lifecycle */

int ss__g_conn_no_peerpidfd;

/*
 * A pidfd of the peer on socket fd, whose SO_PEERCRED said (pid, uid), or
 * -1. SO_PEERPIDFD (Linux 6.5) names the process that connected, whatever
 * became of its pid since. Before it: pidfd_open(pid), which names
 * whoever holds that pid now, so it is kept only if the socket still
 * names the same peer (SO_PEERCRED read again: pid and uid) and the peer
 * has not hung up (the connecting process still holds its end: unless it
 * passed it on, it is alive, so the pid is still its own and the pidfd
 * names it). A pid reused by a process that holds a copy of the peer's
 * socket (a child it forked) would pass: that process had the
 * connection, and copies are only ever made for requests on it.
 */
static int peer_pidfd(int fd, pid_t pid, uid_t uid)
{
    struct ucred cr;
    struct pollfd p = { .fd = fd, .events = POLLRDHUP };
    int pfd = -1;
    socklen_t l = sizeof(pfd);

    if (!ss__g_conn_no_peerpidfd &&
        ss__sys_getsockopt(fd, SOL_SOCKET, SO_PEERPIDFD, &pfd, &l) == 0 && l == sizeof(pfd) &&
        pfd >= 0)
        return pfd;
    if (pid <= 0 || (pfd = ss__sys_pidfd_open(pid, 0)) < 0)
        return -1;
    if (ss__sys_peercred(fd, &cr) < 0 || cr.pid != pid || cr.uid != uid ||
        ss__sys_poll(&p, 1, 0) != 0) {
        ss__sys_close(pfd);
        return -1;
    }
    return pfd;
}

ss__conn *ss__conn_new(ss__store *s, int fd, pid_t pid, uid_t uid)
{
    ss__conn *c = calloc(1, sizeof(*c));

    if (!c)
        return NULL;
    c->store = s;
    c->fd = fd;
    c->pid = pid;
    c->uid = uid;
    c->pidfd = peer_pidfd(fd, pid, uid);
    if (++s->conn.next_client_id == 0)
        s->conn.next_client_id = 1;
    c->id = s->conn.next_client_id;
    c->next = s->conn.conns;
    if (s->conn.conns)
        s->conn.conns->prev = c;
    s->conn.conns = c;
    s->conn.nclients++;
    /* handshake list: accept order is deadline order */
    c->hello_deadline = ss__now_ns() + s->hs.hello_timeout_ns;
    SS_DL_APPEND(s->hs.hq_head, s->hs.hq_tail, c, hq_prev, hq_next);
    s->hs.nhello_pending++;
    return c;
}

static void accept_resume(ss__store *s);

static void hq_unlink(ss__store *s, ss__conn *c)
{
    if (c->hello_deadline == 0)
        return;
    SS_DL_UNLINK(s->hs.hq_head, s->hs.hq_tail, c, hq_prev, hq_next);
    c->hello_deadline = 0;
    s->hs.nhello_pending--;
    accept_resume(s);
}

/* ============================================================ fd budget */

static int outq(int fd)
{
    int q = 0;

    int rc = ss__sys_ioctl(fd, SIOCOUTQ, &q);

    if (rc < 0)
        return rc;
    return q < 0 ? 0 : q;
}

/* c has marks: on the list; c has none: off it. */
static void fdt_unlink(ss__store *s, ss__conn *c)
{
    SS_DL_UNLINK(s->fdb.fdt_head, s->fdb.fdt_tail, c, fdt_prev, fdt_next);
}

/* Drop the marks the client has read (all of them when q == 0). Returns
 * the SIOCOUTQ it saw, or -1 (no marks, or it failed). */
static int fdt_refresh(ss__store *s, ss__conn *c)
{
    uint32_t had = c->mark_len;
    int q;

    if (!c->mark_len || (q = outq(c->fd)) < 0)
        return -1;
    while (c->mark_len) {
        ss__fdmark *m = &c->marks[c->mark_head];
        if (q != 0 && (uint64_t)q > c->later - m->after)
            break;
        c->fd_unread -= m->nfds;
        s->fdb.fds_unread -= m->nfds;
        c->mark_head = (c->mark_head + 1) % c->mark_cap;
        c->mark_len--;
    }
    if (!c->mark_len) {
        c->mark_head = 0;
        c->later = 0;
        fdt_unlink(s, c);
    }
    if (c->mark_len < had && c->in_paused && !c->broken)
        ss__conn_interest(s, c); /* read again if nothing else holds it */
    return q;
}

void ss__fd_poll_soon(ss__store *s)
{
    if (!s->fdb.fd_poll_at)
        s->fdb.fd_poll_at = ss__now_ns() + FD_POLL_MS * 1000000ull;
}

static int fdt_mark(ss__store *s, ss__conn *c, uint32_t nfds)
{
    if (c->mark_len == c->mark_cap) {
        uint32_t had = c->mark_cap;

        /* a full ring at least doubles: the marks before mark_head move
         * to just past the old end, and the ring reads on from mark_head */
        if (SS_ARRAY_RESERVE(c->marks, c->mark_cap, (size_t)had + 1, 8) < 0)
            return -ENOMEM;
        memcpy(c->marks + had, c->marks, c->mark_head * sizeof(*c->marks));
    }
    if (!c->mark_len) {
        c->later = 0;
        SS_DL_APPEND(s->fdb.fdt_head, s->fdb.fdt_tail, c, fdt_prev, fdt_next);
    }
    c->marks[(c->mark_head + c->mark_len) % c->mark_cap] =
        (ss__fdmark){ .nfds = nfds, .after = c->later };
    c->mark_len++;
    c->fd_unread += nfds;
    s->fdb.fds_unread += nfds;
    if (c->fd_unread >= s->fdb.fd_client_max && !c->in_paused)
        ss__conn_interest(s, c); /* at its cap: read no more requests */
    return 0;
}

bool ss__fd_paused(const ss__store *s, const ss__conn *c)
{
    return c->nfdwait > 0 || c->fd_unread >= s->fdb.fd_client_max;
}

bool ss__fd_room(const ss__store *s, const ss__conn *c, uint32_t nfds)
{
    if (!nfds || s->fdb.fds_unread == 0)
        return true;
    if (c->fd_unread == 0)
        return s->fdb.fds_unread + nfds <= s->fdb.fd_hard;
    return c->fd_unread + nfds <= s->fdb.fd_client_max && s->fdb.fds_unread + nfds <= s->fdb.fd_total_max;
}

bool ss__fd_may_send(ss__store *s, ss__conn *c, uint32_t nfds)
{
    if (!nfds)
        return true;
    fdt_refresh(s, c);
    return ss__fd_room(s, c, nfds);
}

void ss__fd_budget_init(ss__store *s)
{
    struct rlimit rl;
    uint64_t b = ss__g_limits.fd_budget;

    if (!b)
        b = ss__sys_getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY
                ? (uint64_t)rl.rlim_cur
                : 1024;
    /* The kernel refuses a send once the uid's in-flight fds exceed the
     * sender's RLIMIT_NOFILE. An eighth stays for other processes of our
     * uid (an embedding host passing fds of its own); clients that have
     * read everything may use the rest; clients with replies unread share
     * half of it, each at most a sixteenth (never less than two full
     * replies, so a paused client can always be answered). */
    s->fdb.fd_hard = b - b / 8;
    s->fdb.fd_total_max = b / 2;
    uint64_t per = s->fdb.fd_total_max / 16;
    if (per < 2 * SS_PROTO_MAX_FDS)
        per = 2 * SS_PROTO_MAX_FDS;
    if (per > 65536)
        per = 65536;
    s->fdb.fd_client_max = (uint32_t)per;
    if (s->fdb.fd_hard < SS_PROTO_MAX_FDS)
        s->fdb.fd_hard = SS_PROTO_MAX_FDS;
}

void ss__conn_interest(ss__store *s, ss__conn *c)
{
    uint32_t events = 0;
    int rc;

    if (c->broken || c->fd < 0)
        return;
    if (c->out_head) {
        /* after ETOOMANYREFS the socket is writable but the send is not:
         * the tick retries it */
        if (!c->out_retry)
            events = EPOLLOUT;
    } else if (ss__conn_may_read(s, c)) {
        events = EPOLLIN;
    }
    c->in_paused = !(events & EPOLLIN);
    if (c->in_paused && !c->out_head)
        ss__fd_poll_soon(s); /* an fd pause ends when the client reads */
    if ((rc = ss__loop_mod(&s->loop, &c->ev, events)) < 0) {
        /* the connection cannot be watched as it needs: drop it */
        ss__log_warn("store: client %u (pid %d): epoll: %s: dropped", c->id, (int)c->pid,
                     ss_strerror(rc));
        ss__conn_close(s, c);
    }
}

void ss__conn_close(ss__store *s, ss__conn *c)
{
    if (c->broken)
        return;
    c->broken = true;
    c->reap_next = s->conn.reap;
    s->conn.reap = c;
}

static void outbox_free(ss__conn *c)
{
    for (ss__outmsg *m = c->out_head, *nx; m; m = nx) {
        nx = m->next;
        for (uint32_t i = 0; i < m->nfds; i++)
            ss__sys_close(m->fds[i]);
        free(m->fds);
        free(m);
    }
    c->out_head = c->out_tail = NULL;
    c->out_count = 0;
}

void ss__conn_free_dead(ss__store *s, ss__conn *c)
{
    if (c->seal_busy || c->copies)
        return; /* its seal job or copies come back later */
    if (c->pidfd >= 0)
        ss__sys_close(c->pidfd);
    free(c);
}

/* Close c's socket, or keep it (shut down) while fds it carried are
 * unread: they still count against the store's uid. */
static void close_or_linger(ss__store *s, ss__conn *c)
{
    ss__linger *l;

    fdt_refresh(s, c);
    if (c->mark_len) {
        fdt_unlink(s, c);
        if ((l = malloc(sizeof(*l)))) {
            (void)ss__sys_shutdown(c->fd, SHUT_RDWR);
            l->fd = c->fd;
            l->fd_unread = c->fd_unread; /* stays in s->fdb.fds_unread */
            l->next = s->fdb.lingers;
            s->fdb.lingers = l;
            c->fd = -1;
        } else {
            s->fdb.fds_unread -= c->fd_unread; /* best effort: forget them */
        }
    }
    free(c->marks);
    c->marks = NULL;
    c->mark_len = c->mark_cap = c->mark_head = 0;
    c->fd_unread = 0;
    if (c->fd >= 0)
        ss__sys_close(c->fd);
    c->fd = -1;
}

void ss__conn_reap(ss__store *s)
{
    while (s->conn.reap) {
        ss__conn *c = s->conn.reap;
        s->conn.reap = c->reap_next;
        ss__loop_del(&s->loop, &c->ev);
        hq_unlink(s, c);
        if (c->out_retry) {
            c->out_retry = false;
            s->fdb.nout_retry--;
        }
        close_or_linger(s, c);
        outbox_free(c);
        free(c->gated);
        c->gated = NULL;
        if (c->prev)
            c->prev->next = c->next;
        else
            s->conn.conns = c->next;
        if (c->next)
            c->next->prev = c->prev;
        s->conn.nclients--;
        if (c->subscriber)
            s->conn.nsubscribers--;
        c->dead = true;
        uint64_t held = sizeof(*c) + (uint64_t)c->ref_cap * sizeof(ss__ref) +
                        (uint64_t)c->sent_cap * sizeof(uint32_t) +
                        (uint64_t)c->bound_cap * sizeof(ss__bound);
        /* may send to others (retried creates, events) and so queue more
         * connections on s->conn.reap: the loop takes them too */
        s->conn.h.gone(s, c);
        ss__conn_heap_freed(s, held);
        ss__conn_free_dead(s, c);
    }
}

void ss__conn_reap_turn(void *arg, uint64_t now)
{
    (void)now;
    ss__conn_reap(arg);
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
    ssize_t n = ss__sys_sendmsg(fd, &mh, MSG_DONTWAIT | MSG_NOSIGNAL);

    if (n < 0)
        return (int)n;
    return n == (ssize_t)len ? 0 : -EMSGSIZE;
}

/* Send one message to c, keeping its unread-fd marks (ss__fdmark). */
static int send_tracked(ss__store *s, ss__conn *c, const void *msg, uint32_t len,
                        const int *fds, uint32_t nfds)
{
    /* the client has usually read everything by now: then its marks go
     * and a reply without fds needs no measuring */
    int q = fdt_refresh(s, c);
    bool track = nfds || c->mark_len;
    int before = !track ? 0 : q >= 0 ? q : outq(c->fd);
    int rc = send_msg(c->fd, msg, len, fds, nfds);

    if (rc < 0 || !track)
        return rc;
    int after = outq(c->fd);
    if (c->mark_len && before >= 0 && after > before)
        c->later += (uint64_t)(after - before);
    if (nfds && fdt_mark(s, c, nfds) < 0) {
        /* cannot remember it: count it until the client reads everything */
        if (c->mark_len) {
            ss__fdmark *last = &c->marks[(c->mark_head + c->mark_len - 1) % c->mark_cap];
            last->nfds += nfds;
            c->fd_unread += nfds;
            s->fdb.fds_unread += nfds;
        }
    }
    return 0;
}

/* A send failed with ETOOMANYREFS: the store's uid has too many fds in
 * flight (others' unread replies). Not this client's fault: retried from
 * the tick, never a reason to close. */
static void set_out_retry(ss__store *s, ss__conn *c)
{
    if (c->out_retry)
        return;
    c->out_retry = true;
    s->fdb.nout_retry++;
    SS_LOG_ONCE(SS_LOG_WARN, "store: fd passing hit the kernel's limit (ETOOMANYREFS): "
                "replies are held back until clients read theirs");
    ss__fd_poll_soon(s);
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
            int d = ss__sys_dup_cloexec(fds[i]);
            if (d < 0) {
                for (uint32_t k = 0; k < m->nfds; k++)
                    ss__sys_close(m->fds[k]);
                free(m->fds);
                free(m);
                return d;
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
        rc = send_tracked(s, c, msg, len, fds, nfds);
        if (rc == 0)
            return 0;
        if (rc != -EAGAIN && rc != -ETOOMANYREFS) {
            /* EPIPE/ECONNRESET: gone */
            if (rc != -EPIPE && rc != -ECONNRESET)
                ss__log_info("store: client %u (pid %d): send: %s: dropped", c->id,
                             (int)c->pid, ss_strerror(rc));
            ss__conn_close(s, c);
            return rc;
        }
        if (rc == -ETOOMANYREFS) {
            s->cnt.c_fd_deferred++;
            set_out_retry(s, c);
        } else if (c->subscriber) {
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
        ss__conn_interest(s, c);
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
    if (c->out_retry) {
        c->out_retry = false;
        s->fdb.nout_retry--;
    }
    while (c->out_head && !c->broken) {
        ss__outmsg *m = c->out_head;
        int rc = send_tracked(s, c, m->buf, m->len, m->fds, m->nfds);
        if (rc == -EAGAIN)
            return;
        if (rc == -ETOOMANYREFS) {
            set_out_retry(s, c);
            ss__conn_interest(s, c); /* no EPOLLOUT: the tick retries */
            return;
        }
        if (rc < 0) {
            ss__conn_close(s, c);
            return;
        }
        c->out_head = m->next;
        if (!c->out_head)
            c->out_tail = NULL;
        c->out_count--;
        for (uint32_t i = 0; i < m->nfds; i++)
            ss__sys_close(m->fds[i]);
        free(m->fds);
        free(m);
    }
    if (!c->broken)
        ss__conn_interest(s, c); /* drained: read requests again */
}

void ss__conn_event(ss__store *s, uint32_t type, const ss_id *id, uint64_t size)
{
    struct {
        ss__msg_hdr h;
        ss__msg_event ev;
    } m;

    if (!s->conn.nsubscribers)
        return;
    memset(&m, 0, sizeof(m));
    ss__proto_hdr(&m.h, SS_MSG_EVENT, 0, sizeof(m), 0, SS_MSGF_REPLY);
    m.ev.type = type;
    m.ev.id = *id;
    m.ev.size = size;
    for (ss__conn *c = s->conn.conns; c; c = c->next)
        if (c->subscriber && !c->broken && (c->sub_mask & type))
            ss__conn_send(s, c, &m, sizeof(m), NULL, 0);
}

void ss__conn_flush_all(ss__store *s, int timeout_ms)
{
    uint64_t end = ss__now_ns() + (uint64_t)timeout_ms * 1000000ull;

    for (;;) {
        bool pending = false;
        for (ss__conn *c = s->conn.conns; c; c = c->next) {
            if (c->out_head && !c->broken)
                ss__conn_writable(s, c);
            if (c->out_head && !c->broken)
                pending = true;
        }
        ss__conn_reap(s);
        if (!pending || ss__now_ns() >= end)
            return;
        ss__loop_sleep(&s->loop, 10);
    }
}

/* ================================================================= ticks */

static void lingers_check(ss__store *s)
{
    for (ss__linger **pl = &s->fdb.lingers, *l; (l = *pl);) {
        if (outq(l->fd) > 0) {
            pl = &l->next;
            continue;
        }
        ss__sys_close(l->fd);
        s->fdb.fds_unread -= l->fd_unread;
        *pl = l->next;
        free(l);
    }
}

void ss__conn_tick(void *arg, uint64_t now)
{
    ss__store *s = arg;

    while (s->hs.hq_head && s->hs.hq_head->hello_deadline <= now) {
        ss__conn *c = s->hs.hq_head;
        hq_unlink(s, c);
        ss__log_info("store: client %u (pid %d) sent no HELLO in time: closed", c->id,
                     (int)c->pid);
        ss__conn_close(s, c);
    }
    if (!s->fdb.fd_poll_at || now < s->fdb.fd_poll_at)
        return;
    s->fdb.fd_poll_at = 0;
    bool waiting = false;
    for (ss__conn *c = s->fdb.fdt_head, *nx; c; c = nx) {
        nx = c->fdt_next;
        fdt_refresh(s, c);
        if (ss__fd_paused(s, c))
            waiting = true;
    }
    lingers_check(s);
    if (s->conn.h.budget(s))
        waiting = true; /* GETs still wait for the budget */
    if (s->fdb.nout_retry)
        for (ss__conn *c = s->conn.conns; c; c = c->next)
            if (c->out_retry && !c->broken)
                ss__conn_writable(s, c);
    if (waiting || s->fdb.nout_retry)
        ss__fd_poll_soon(s);
}

uint64_t ss__conn_tick_deadline(void *arg, uint64_t now)
{
    const ss__store *s = arg;
    uint64_t d = s->hs.hq_head ? s->hs.hq_head->hello_deadline : UINT64_MAX;

    (void)now;
    if (s->fdb.fd_poll_at && s->fdb.fd_poll_at < d)
        d = s->fdb.fd_poll_at;
    return d;
}

void ss__conn_lingers_close(ss__store *s)
{
    while (s->fdb.lingers) {
        ss__linger *l = s->fdb.lingers;
        s->fdb.lingers = l->next;
        ss__sys_close(l->fd);
        s->fdb.fds_unread -= l->fd_unread;
        free(l);
    }
}

/* ================================================================ receiving */

/* A malformed message: answer it if its header names a request, else
 * close. RELEASE is never answered. Before HELLO every malformed message
 * closes the connection; a HELLO of another version is told why first
 * (its header layout is the same in every version: proto.h). */
void ss__conn_proto_error(ss__store *s, ss__conn *c, const void *buf, size_t len, int rc)
{
    ss__msg_hdr h;

    s->cnt.c_proto_errors++;
    if (len < sizeof(h)) {
        ss__conn_close(s, c);
        return;
    }
    memcpy(&h, buf, sizeof(h));
    if (!c->hello) {
        if (rc == -SS_E_VERSION && h.type == SS_MSG_HELLO) {
            /* Sent at once, not through the outbox: the close below
             * would drop a queued reply. The connection's first reply,
             * 24 bytes, always finds room in its fresh socket; the peer
             * reads it before the EOF. */
            ss__msg_hdr r;
            ss__proto_hdr(&r, SS_MSG_HELLO, h.req_id, sizeof(r), -SS_E_VERSION, SS_MSGF_REPLY);
            (void)send_msg(c->fd, &r, sizeof(r), NULL, 0);
        }
        ss__conn_close(s, c);
        return;
    }
    /* "names a request": our magic, a request type (an EVENT or an unknown
     * type could not be matched by any client), not a reply */
    if (h.magic != SS_PROTO_MAGIC || (h.flags & SS_MSGF_REPLY) || !ss__proto_type_ok(h.type) ||
        h.type == SS_MSG_EVENT) {
        ss__conn_close(s, c);
        return;
    }
    if ((h.type == SS_MSG_RELEASE || h.type == SS_MSG_UNPIN) && h.version == SS_PROTO_VERSION)
        return; /* never answered */
    ss__conn_reply_status(s, c, h.type, h.req_id, rc == -SS_E_VERSION ? rc : -SS_E_PROTO);
}

void ss__conn_readable(ss__store *s, ss__conn *c)
{
    union {
        char buf[CMSG_SPACE(sizeof(int) * CMSG_FDS)];
        struct cmsghdr align;
    } u;

    for (int i = 0; i < READ_BATCH; i++) {
        if (!ss__conn_may_read(s, c))
            return;
        struct iovec iov = { .iov_base = s->conn.ibuf, .iov_len = SS_PROTO_MAX_MSG };
        struct msghdr mh = {
            .msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf,
            .msg_controllen = sizeof(u.buf),
        };
        ssize_t n = ss__sys_recvmsg(c->fd, &mh, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
        if (n < 0) {
            if (n != -EAGAIN)
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
                ss__sys_close(fd);
                nfds++;
            }
        }
        if (mh.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) {
            /* longer than any request, or more fds than we look at */
            ss__conn_proto_error(s, c, s->conn.ibuf, (size_t)n, -SS_E_PROTO);
            continue;
        }
        size_t first = ss__proto_split_request(s->conn.ibuf, (size_t)n);

        s->conn.h.message(s, c, s->conn.ibuf, first, nfds);
        if (first < (size_t)n && !c->broken) {
            /* a RELEASE led the datagram: the request behind it, moved to
             * the buffer's start so its header is aligned */
            memmove(s->conn.ibuf, (char *)s->conn.ibuf + first, (size_t)n - first);
            s->conn.h.message(s, c, s->conn.ibuf, (size_t)n - first, nfds);
        }
    }
}

/* ============================================================== accepting */

static void set_bufs(int fd)
{
    int v = (int)SOCK_BUF;

    /* FORCE passes net.core.[rw]mem_max when we may (root) */
    if (ss__sys_setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &v, sizeof(v)) < 0)
        (void)ss__sys_setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &v, sizeof(v));
    if (ss__sys_setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &v, sizeof(v)) < 0)
        (void)ss__sys_setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &v, sizeof(v));
}

static bool peer_allowed(ss__store *s, int fd, struct ucred *cr)
{
    if (ss__sys_peercred(fd, cr) < 0)
        return false;
    if (cr->uid == s->conn.uid || cr->uid == 0)
        return true;
    if (!s->conn.has_group)
        return false;
    if (cr->gid == s->conn.group)
        return true;
#ifdef SO_PEERGROUPS
    gid_t groups[256];
    socklen_t l = sizeof(groups);
    if (ss__sys_getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, groups, &l) == 0) {
        for (size_t i = 0; i < l / sizeof(gid_t); i++)
            if (groups[i] == s->conn.group)
                return true;
    }
#endif
    return false;
}

/* Listen or not (events 0): a listener that cannot be switched is
 * reported; the backoff or the next HELLO tries again. */
static void listen_events(ss__store *s, uint32_t events)
{
    int rc = ss__loop_mod(&s->loop, &s->conn.listen_ev, events);

    if (rc < 0)
        ss__log_error("store: epoll on the listening socket: %s", ss_strerror(rc));
}

static void accept_resume(ss__store *s)
{
    if (!s->hs.accept_held || s->hs.nhello_pending >= s->hs.hello_pending_max)
        return;
    s->hs.accept_held = false;
    if (!s->conn.accept_paused_until && s->conn.listening) /* else the backoff's end does it */
        listen_events(s, EPOLLIN);
}

/* A connection's events. */
static void conn_event(void *arg, uint32_t e)
{
    ss__conn *c = arg;
    ss__store *s = c->store;

    if (c->broken)
        return;
    if (e & EPOLLOUT)
        ss__conn_writable(s, c);
    if ((e & EPOLLIN) && !c->broken)
        ss__conn_readable(s, c);
    /* hang-up with nothing (more) to read, or an error */
    if ((e & (EPOLLHUP | EPOLLERR)) && !(e & EPOLLIN) && !c->broken)
        ss__conn_close(s, c);
}

static void accept_all(ss__store *s)
{
    for (;;) {
        if (s->hs.nhello_pending >= s->hs.hello_pending_max) {
            /* That many connections have not said HELLO yet: accept no
             * more until some do or time out. Clients opening sockets and
             * never speaking cannot pin the store's fds, and a burst of
             * real clients only waits in the kernel's backlog (each of
             * them says HELLO at once), none is dropped. */
            SS_LOG_ONCE(SS_LOG_WARN, "store: %u connections have not said HELLO yet: "
                        "accepting more once they do or time out", s->hs.nhello_pending);
            listen_events(s, 0);
            s->hs.accept_held = true;
            return;
        }
        int fd = ss__sys_accept4(s->conn.listen_ev.fd, SOCK_CLOEXEC | SOCK_NONBLOCK);
        struct ucred cr = { 0 };

        if (fd < 0) {
            if (fd == -EMFILE || fd == -ENFILE || fd == -ENOBUFS || fd == -ENOMEM) {
                /* the pending connection stays queued and epoll would
                 * report it forever: stop listening for a moment */
                SS_LOG_ONCE(SS_LOG_WARN, "store: accept: %s (backing off)", ss_strerror(fd));
                listen_events(s, 0);
                s->conn.accept_paused_until = ss__now_ns() + ACCEPT_BACKOFF_NS;
            }
            return;
        }
        if (!peer_allowed(s, fd, &cr)) {
            ss__log_info("store: refused a connection from uid %u pid %d", (unsigned)cr.uid,
                         (int)cr.pid);
            ss__sys_close(fd);
            continue;
        }
        set_bufs(fd);
        ss__conn *c = ss__conn_new(s, fd, cr.pid, cr.uid);
        if (!c) {
            ss__sys_close(fd);
            continue;
        }
        if (ss__loop_add(&s->loop, &c->ev, fd, EPOLLIN, conn_event, c) < 0)
            ss__conn_close(s, c);
    }
}

static void listen_event(void *arg, uint32_t events)
{
    ss__store *s = arg;

    (void)events;
    if (!s->loop.stopping)
        accept_all(s);
}

int ss__conn_listen(ss__store *s, int fd)
{
    int rc = ss__loop_add(&s->loop, &s->conn.listen_ev, fd, EPOLLIN, listen_event, s);

    s->conn.listening = rc == 0;
    return rc;
}

void ss__conn_unlisten(ss__store *s)
{
    if (!s->conn.listening)
        return;
    ss__loop_del(&s->loop, &s->conn.listen_ev);
    s->conn.listening = false;
}

uint64_t ss__conn_accept_deadline(void *arg, uint64_t now)
{
    const ss__store *s = arg;

    (void)now;
    return s->conn.accept_paused_until ? s->conn.accept_paused_until : UINT64_MAX;
}

void ss__conn_accept_turn(void *arg, uint64_t now)
{
    ss__store *s = arg;

    if (s->conn.accept_paused_until && now >= s->conn.accept_paused_until) {
        s->conn.accept_paused_until = 0;
        if (!s->hs.accept_held)
            listen_events(s, EPOLLIN);
    }
}

/* ================================================================= HELLO */

void ss__conn_hello_done(ss__store *s, ss__conn *c)
{
    c->hello = true;
    hq_unlink(s, c);
}

void ss__conn_subscribe(ss__store *s, ss__conn *c, uint32_t mask)
{
    c->sub_mask = mask;
    c->subscriber = true;
    s->conn.nsubscribers++;
}

