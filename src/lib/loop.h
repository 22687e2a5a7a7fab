/* SPDX-License-Identifier: MIT */
/*
 * The event loop core: an epoll set of file descriptors, each registered
 * with a handler and its argument; hooks that run at the end of every turn
 * and say when they next have work (their deadline); a stop flag. It knows
 * nothing of the store: whatever needs the loop registers with it (the
 * store's map in internal.h lists who registers what).
 *
 * One thread runs the loop and every handler and hook (the store's loop
 * thread); nothing here is thread-safe, except that nothing but the loop
 * thread may touch it. A stop from another thread or a signal handler goes
 * through an eventfd its owner registers like any other fd.
 *
 * A turn: wait until an fd is ready or the earliest hook deadline passes;
 * run the handler of each ready fd, in the order epoll reports them; then
 * every turn hook, in registration order. The loop ends after the turn in
 * which ss__loop_stop() was called.
 *
 * Busy polling (spin, SEALSTORE_BUSY_POLL: the window and when to back
 * off, internal.h): a wait that would sleep first polls (epoll_wait with
 * timeout 0) for up to the window, or until the earliest hook deadline is
 * due, and sleeps only if nothing arrived meanwhile. Between polls it
 * yields the CPU (sched_yield), not just a pause instruction: when the
 * peer it waits for shares its CPU, the peer runs at once instead of after
 * the spin (with a pause, a get+release on one CPU took two whole spins:
 * 9k/s at 50 us against 200k/s without spinning). A request that arrives
 * while the loop spins is served without a scheduler wake-up; the price is
 * a CPU kept busy for up to the window after a turn that leaves the loop
 * idle.
 */
#ifndef SEALSTORE_SRC_LIB_LOOP_H
#define SEALSTORE_SRC_LIB_LOOP_H

#include "internal.h"

/* A registered fd: handler(arg, epoll events). The record is its owner's
 * (embedded in its structure) and must stay put while registered. */
typedef struct ss__loop_fd {
    void (*handler)(void *arg, uint32_t events);
    void *arg;
    int fd;
} ss__loop_fd;

/* A turn hook. deadline(arg, now): ns when it next has work, UINT64_MAX
 * none (NULL: never). turn(arg, now): run at the end of each turn (NULL:
 * only a deadline). */
typedef struct ss__loop_hook {
    uint64_t (*deadline)(void *arg, uint64_t now);
    void (*turn)(void *arg, uint64_t now);
    void *arg;
    struct ss__loop_hook *next;
} ss__loop_hook;

typedef struct ss__loop {
    int epfd;                   /* -1 until ss__loop_init */
    bool stopping;              /* ss__loop_stop was called: this is the last turn */
    ss__spin spin;              /* busy polling before a sleep (internal.h) */
    uint64_t spin_until;        /* a spin lasts at least until then (ss__loop_expect) */
    uint64_t spins;             /* polls that found nothing while spinning (tests) */
    ss__loop_hook *hooks, *hooks_tail; /* in registration order */
} ss__loop;

/* 0 or -errno (epoll_create1). */
int ss__loop_init(ss__loop *l);
void ss__loop_fini(ss__loop *l);

/* Register fd with a handler: 0 or -errno (epoll_ctl). */
int ss__loop_add(ss__loop *l, ss__loop_fd *r, int fd, uint32_t events,
                 void (*handler)(void *arg, uint32_t events), void *arg);
/* Change the events of a registered fd: 0 or -errno. */
int ss__loop_mod(ss__loop *l, ss__loop_fd *r, uint32_t events);
/* Forget a registered fd (before closing it). */
void ss__loop_del(ss__loop *l, ss__loop_fd *r);

/* Append a turn hook (the record is the caller's and stays put). */
void ss__loop_hook_add(ss__loop *l, ss__loop_hook *h);

/* Run turns until one in which ss__loop_stop() was called: 0, or -errno
 * (epoll_wait failed). */
int ss__loop_run(ss__loop *l);
/* End the loop after this turn (loop thread only). */
void ss__loop_stop(ss__loop *l);
/* An event is expected within ns (a copy handed to a worker): a spin
 * before the next sleeps lasts until then at least (ss__spin_copy_ns). */
void ss__loop_expect(ss__loop *l, uint64_t ns);
/* Read an eventfd's count (it fired): the handler's first step. */
void ss__loop_drain(int efd);
/* Sleep up to timeout_ms or until some fd is ready, running nothing (the
 * stop path's flush waits for clients to read). */
void ss__loop_sleep(ss__loop *l, int timeout_ms);

#endif /* SEALSTORE_SRC_LIB_LOOP_H */
