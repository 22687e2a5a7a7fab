/* SPDX-License-Identifier: MIT */
/*
 * The event loop core (loop.h). Owns the epoll fd and the hook list; calls
 * only what was registered with it, and sys.h/log.h.
 */
#include "loop.h"

#include <limits.h>

#include "sys.h"

#define EVENTS_PER_WAIT 64

int ss__loop_init(ss__loop *l)
{
    int fd = ss__sys_epoll_create1(EPOLL_CLOEXEC);

    l->stopping = false;
    ss__spin_init(&l->spin, 0);
    l->spins = 0;
    l->hooks = l->hooks_tail = NULL;
    l->epfd = fd < 0 ? -1 : fd;
    return fd < 0 ? fd : 0;
}

void ss__loop_fini(ss__loop *l)
{
    if (l->epfd >= 0)
        ss__sys_close(l->epfd);
    l->epfd = -1;
}

int ss__loop_add(ss__loop *l, ss__loop_fd *r, int fd, uint32_t events,
                 void (*handler)(void *arg, uint32_t events), void *arg)
{
    struct epoll_event ev = { .events = events, .data.ptr = r };

    r->handler = handler;
    r->arg = arg;
    r->fd = fd;
    return ss__sys_epoll_ctl(l->epfd, EPOLL_CTL_ADD, fd, &ev);
}

int ss__loop_mod(ss__loop *l, ss__loop_fd *r, uint32_t events)
{
    struct epoll_event ev = { .events = events, .data.ptr = r };

    return ss__sys_epoll_ctl(l->epfd, EPOLL_CTL_MOD, r->fd, &ev);
}

void ss__loop_del(ss__loop *l, ss__loop_fd *r)
{
    /* fails only for an fd that was never added (a connection whose
     * registration failed): nothing to undo then */
    (void)ss__sys_epoll_ctl(l->epfd, EPOLL_CTL_DEL, r->fd, NULL);
}

void ss__loop_hook_add(ss__loop *l, ss__loop_hook *h)
{
    h->next = NULL;
    if (l->hooks_tail)
        l->hooks_tail->next = h;
    else
        l->hooks = h;
    l->hooks_tail = h;
}

/* The earliest hook deadline (ns), UINT64_MAX none. */
static uint64_t next_deadline(ss__loop *l, uint64_t now)
{
    uint64_t d = UINT64_MAX;

    for (ss__loop_hook *h = l->hooks; h; h = h->next) {
        if (!h->deadline)
            continue;
        uint64_t x = h->deadline(h->arg, now);
        if (x < d)
            d = x;
    }
    return d;
}

/* ms until the earliest hook deadline: -1 none, 0 due. */
static int next_timeout(ss__loop *l)
{
    uint64_t now = ss__now_ns(), d = next_deadline(l, now);

    if (d == UINT64_MAX)
        return -1;
    if (d <= now)
        return 0;
    uint64_t ms = (d - now + 999999) / 1000000;
    return ms > INT32_MAX ? INT32_MAX : (int)ms;
}

/* Wait for events (loop.h: busy polling): poll for up to the spin's
 * window, ending early at the earliest hook deadline (a spin cut short so
 * is neither a hit nor a miss), then sleep until that deadline. */
static int loop_wait(ss__loop *l, struct epoll_event *evs)
{
    uint64_t win = ss__spin_window(&l->spin);

    if (win) {
        uint64_t now = ss__now_ns(), d = next_deadline(l, now);
        uint64_t want = now + win > l->spin_until ? now + win : l->spin_until;
        uint64_t end = want < d ? want : d;

        while (now < end) {
            int n = ss__sys_epoll_wait(l->epfd, evs, EVENTS_PER_WAIT, 0);

            if (n != 0) {
                ss__spin_result(&l->spin, true);
                return n;
            }
            l->spins++;
            ss__sys_yield();
            now = ss__now_ns();
        }
        if (end < d)
            ss__spin_result(&l->spin, false);
    }
    return ss__sys_epoll_wait(l->epfd, evs, EVENTS_PER_WAIT, next_timeout(l));
}

int ss__loop_run(ss__loop *l)
{
    struct epoll_event evs[EVENTS_PER_WAIT];

    while (!l->stopping) {
        int n = loop_wait(l, evs);
        if (n < 0) {
            if (n == -EINTR)
                continue;
            ss__log_error("store: epoll_wait: %s", ss_strerror(n));
            return n;
        }
        for (int i = 0; i < n; i++) {
            ss__loop_fd *r = evs[i].data.ptr;
            r->handler(r->arg, evs[i].events);
        }
        uint64_t now = ss__now_ns();
        for (ss__loop_hook *h = l->hooks; h; h = h->next)
            if (h->turn)
                h->turn(h->arg, now);
    }
    return 0;
}

void ss__loop_expect(ss__loop *l, uint64_t ns)
{
    uint64_t until = ss__now_ns() + ns;

    if (ns && until > l->spin_until)
        l->spin_until = until;
}

void ss__loop_stop(ss__loop *l)
{
    l->stopping = true;
}

void ss__loop_drain(int efd)
{
    uint64_t v;

    /* nonblocking: -EAGAIN when another reader was first */
    (void)ss__sys_eventfd_read(efd, &v);
}

void ss__loop_sleep(ss__loop *l, int timeout_ms)
{
    struct epoll_event ev[16];

    (void)ss__sys_epoll_wait(l->epfd, ev, 16, timeout_ms);
}
