/* SPDX-License-Identifier: MIT */
/*
 * Arenas made ahead, on a thread of their own. Making a regular arena
 * (creating, binding, populating and sealing 64 MiB) takes 30-50 ms of
 * 4 KiB shmem (about 6 ms of 2 MiB hugetlb): on the loop, every client
 * would wait that long whenever puts fill the arena they use. So whenever
 * a node that arena objects were placed on has no idle arena left
 * (ss__arena_wants), this thread makes the next one (ss__arena_make,
 * which reads only the allocator's parameters and charges capacity
 * through the store's atomic charge) and the loop adopts it as the node's
 * idle arena; a put that finds no room before it is ready still makes
 * one on the loop, as it would without this thread. Owns ss__store.amake;
 * calls loop.c and arena.c only.
 *
 * Protocol: lock guards want, node, stop, done, seg and rc. The loop (a
 * turn hook) posts one request at a time (busy, loop-only, stays true
 * until the result is taken); the thread takes it, makes the arena
 * unlocked, stores the result under the lock and writes the eventfd; the
 * loop takes the result under the lock and adopts the arena (or gives it
 * back: the node got an idle arena meanwhile, -EEXIST). A failure (no
 * capacity, no backing) holds further requests back for a second. At
 * close the thread is joined first; a result never taken is given back.
 */
#include "store_int.h"

#include <stdlib.h>
#include <sys/eventfd.h>

#include "sys.h"

#define AMAKE_RETRY_NS (1000ull * 1000 * 1000)

/* This thread is the arena thread: its charges are arenas not adopted yet
 * (ss__store_amake.pending, counted in ss_stats.arena_bytes). */
static __thread bool on_amake_thread;

int ss__amake_charge(void *arg, int64_t delta)
{
    ss__store *s = arg;
    int rc = ss__obj_charge(s, delta);

    if (rc == 0 && on_amake_thread)
        atomic_fetch_add_explicit(&s->amake.pending, (uint64_t)delta, memory_order_relaxed);
    return rc;
}

/* The arena the thread made left its hands: adopted or given back. */
static void pending_done(ss__store *s, const ss__seg *seg)
{
    atomic_fetch_sub_explicit(&s->amake.pending, seg->size, memory_order_relaxed);
}
#define ANY_BIT 63 /* SS_NODE_ANY, SS_NODE_INTERLEAVE and nodes >= 62 */

static unsigned node_bit(int node)
{
    return node >= 0 && node < ANY_BIT - 1 ? (unsigned)node : ANY_BIT;
}

static void *amake_thread(void *arg)
{
    ss__store *s = arg;
    ss__store_amake *m = &s->amake;

    (void)ss__sys_block_signals(NULL);
    on_amake_thread = true;
    pthread_mutex_lock(&m->lock);
    for (;;) {
        while (!m->want && !m->stop)
            pthread_cond_wait(&m->cond, &m->lock);
        if (m->stop)
            break;
        int node = m->node;
        m->want = false;
        pthread_mutex_unlock(&m->lock);

        ss__seg seg = { .fd = -1 };
        int rc = ss__arena_make(s->mem.arenas, node, &seg);

        pthread_mutex_lock(&m->lock);
        m->seg = seg;
        m->rc = rc;
        m->done = true;
        (void)ss__sys_eventfd_write(m->efd, 1);
    }
    pthread_mutex_unlock(&m->lock);
    return NULL;
}

/* The thread made one: adopt it as its node's idle arena. */
static void amake_event(void *arg, uint32_t events)
{
    ss__store *s = arg;
    ss__store_amake *m = &s->amake;
    ss__seg seg;
    int rc;

    (void)events;
    ss__loop_drain(m->efd);
    pthread_mutex_lock(&m->lock);
    bool done = m->done;
    seg = m->seg;
    rc = m->rc;
    m->done = false;
    pthread_mutex_unlock(&m->lock);
    if (!done)
        return;
    m->busy = false;
    if (rc == 0) {
        ss__seg made = seg;
        if (ss__arena_adopt(s->mem.arenas, &seg) < 0)
            ss__arena_unmake(s->mem.arenas, &seg); /* -EEXIST: one came meanwhile */
        else
            m->made++;
        pending_done(s, &made);
        return;
    }
    m->retry_at = ss__now_ns() + AMAKE_RETRY_NS;
    ss__log_debug("store: making an arena ahead failed (%s); retrying in 1 s",
                  ss_strerror(rc));
}

void ss__amake_note(ss__store *s, int node)
{
    s->amake.nodes |= 1ull << node_bit(node);
    s->amake.node_of[node_bit(node)] = node;
}

void ss__amake_turn(void *arg, uint64_t now)
{
    ss__store *s = arg;
    ss__store_amake *m = &s->amake;

    if (!m->started || m->busy || !m->nodes || now < m->retry_at)
        return;
    for (unsigned b = 0; b < 64; b++) {
        if (!(m->nodes & (1ull << b)) || !ss__arena_wants(s->mem.arenas, m->node_of[b]))
            continue;
        pthread_mutex_lock(&m->lock);
        m->want = true;
        m->node = m->node_of[b];
        pthread_cond_signal(&m->cond);
        pthread_mutex_unlock(&m->lock);
        m->busy = true;
        return;
    }
}

int ss__amake_start(ss__store *s)
{
    ss__store_amake *m = &s->amake;
    int rc;

    m->efd = ss__sys_eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (m->efd < 0) {
        rc = m->efd;
        m->efd = -1;
        return rc;
    }
    if ((rc = ss__loop_add(&s->loop, &m->ev, m->efd, EPOLLIN, amake_event, s)) < 0)
        return rc;
    if ((rc = pthread_mutex_init(&m->lock, NULL)) != 0)
        return -rc;
    if ((rc = pthread_cond_init(&m->cond, NULL)) != 0) {
        pthread_mutex_destroy(&m->lock);
        return -rc;
    }
    m->sync = true;
    if ((rc = pthread_create(&m->thread, NULL, amake_thread, s)) != 0)
        return -rc;
    m->started = true;
    pthread_setname_np(m->thread, "ss-arena");
    return 0;
}

void ss__amake_stop(ss__store *s)
{
    ss__store_amake *m = &s->amake;

    if (m->started) {
        pthread_mutex_lock(&m->lock);
        m->stop = true;
        pthread_cond_signal(&m->cond);
        pthread_mutex_unlock(&m->lock);
        pthread_join(m->thread, NULL);
        m->started = false;
        if (m->done && m->rc == 0) {
            ss__seg made = m->seg;
            ss__arena_unmake(s->mem.arenas, &m->seg); /* made, never adopted */
            pending_done(s, &made);
        }
        m->done = false;
    }
    if (m->sync) {
        pthread_cond_destroy(&m->cond);
        pthread_mutex_destroy(&m->lock);
        m->sync = false;
    }
    if (m->efd >= 0) {
        ss__loop_del(&s->loop, &m->ev);
        ss__sys_close(m->efd);
    }
    m->efd = -1;
}
