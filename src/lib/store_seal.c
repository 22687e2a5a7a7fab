/* SPDX-License-Identifier: MIT */
/*
 * The seal worker. F_ADD_SEALS(F_SEAL_WRITE) may block ~160 ms on pinned
 * pages, so object segments are write-sealed on this thread, off the loop.
 * Owns ss__store.seal; calls the loop core (its eventfd) and segment.c,
 * and each job's own completion handler (ss__sealjob.done, set by whoever
 * submitted it: the request layer for a client's SEAL, the disk glue for
 * a restored segment), on the loop thread.
 *
 * The worker sees a job's fd and size only and never touches the object
 * table: the submitter keeps the object and its fd alive meanwhile
 * (SS_OBJF_SEALING, SS_OBJF_RESTORING). Queued jobs are all run before the
 * thread exits, so a stop never loses a seal.
 *
 * Protocol: sw_lock guards sw_todo, sw_todo_tail, sw_done, sw_stop and
 * sw_inflight. The loop appends to sw_todo and signals sw_cond; the worker
 * takes the head, runs it unlocked, pushes it on sw_done (LIFO) under the
 * lock and writes the eventfd; the loop takes the whole sw_done list under
 * the lock and runs the handlers unlocked, in completion order.
 */
#include "store_int.h"

#include <signal.h>
#include <stdlib.h>
#include <unistd.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>

#include "sys.h"

static void *seal_worker(void *arg)
{
    ss__store *s = arg;
    sigset_t all;

    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, NULL);
    pthread_mutex_lock(&s->sw_lock);
    for (;;) {
        while (!s->sw_todo && !s->sw_stop)
            pthread_cond_wait(&s->sw_cond, &s->sw_lock);
        if (!s->sw_todo)
            break;
        ss__sealjob *j = s->sw_todo;
        s->sw_todo = j->next;
        if (!s->sw_todo)
            s->sw_todo_tail = NULL;
        pthread_mutex_unlock(&s->sw_lock);

        j->rc = ss__seg_seal_write(j->fd, j->size);

        pthread_mutex_lock(&s->sw_lock);
        j->next = s->sw_done;
        s->sw_done = j;
        s->sw_inflight--;
        uint64_t one = 1;
        ssize_t w = write(s->seal_efd, &one, sizeof(one));
        (void)w; /* an eventfd write only fails at 2^64-1 */
    }
    pthread_mutex_unlock(&s->sw_lock);
    return NULL;
}

/* Run the handlers of the finished jobs, in completion order. */
static void seal_done(ss__store *s)
{
    ss__sealjob *done;

    pthread_mutex_lock(&s->sw_lock);
    done = s->sw_done;
    s->sw_done = NULL;
    pthread_mutex_unlock(&s->sw_lock);

    /* the list is LIFO: reverse to answer in completion order */
    ss__sealjob *rev = NULL;
    while (done) {
        ss__sealjob *nx = done->next;
        done->next = rev;
        rev = done;
        done = nx;
    }
    for (ss__sealjob *j = rev, *nx; j; j = nx) {
        nx = j->next;
        j->done(s, j); /* frees j */
    }
}

static void seal_event(void *arg, uint32_t events)
{
    ss__store *s = arg;
    uint64_t v;
    ssize_t n = read(s->seal_efd, &v, sizeof(v));

    (void)n;
    (void)events;
    seal_done(s);
}

int ss__seal_start(ss__store *s)
{
    int rc;

    s->seal_efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (s->seal_efd < 0)
        return -errno;
    if ((rc = ss__loop_add(&s->loop, &s->seal_ev, s->seal_efd, EPOLLIN, seal_event, s)) < 0)
        return rc;
    rc = pthread_mutex_init(&s->sw_lock, NULL);
    if (rc)
        return -rc;
    rc = pthread_cond_init(&s->sw_cond, NULL);
    if (rc) {
        pthread_mutex_destroy(&s->sw_lock);
        return -rc;
    }
    s->sw_sync = true;
    rc = pthread_create(&s->sw_thread, NULL, seal_worker, s);
    if (rc)
        return -rc;
    s->sw_started = true;
    pthread_setname_np(s->sw_thread, "ss-seal");
    return 0;
}

void ss__seal_submit(ss__store *s, ss__sealjob *j)
{
    pthread_mutex_lock(&s->sw_lock);
    j->next = NULL;
    if (s->sw_todo_tail)
        s->sw_todo_tail->next = j;
    else
        s->sw_todo = j;
    s->sw_todo_tail = j;
    s->sw_inflight++;
    pthread_cond_signal(&s->sw_cond);
    pthread_mutex_unlock(&s->sw_lock);
}

void ss__seal_join(ss__store *s)
{
    if (!s->sw_started)
        return;
    pthread_mutex_lock(&s->sw_lock);
    s->sw_stop = true;
    pthread_cond_signal(&s->sw_cond);
    pthread_mutex_unlock(&s->sw_lock);
    pthread_join(s->sw_thread, NULL);
    s->sw_started = false;
}

void ss__seal_finish(ss__store *s)
{
    if (!s->sw_started)
        return;
    ss__seal_join(s);
    /* queued seals of each client go through one by one, run here */
    for (;;) {
        seal_done(s);
        bool more = false;
        pthread_mutex_lock(&s->sw_lock);
        for (ss__sealjob *j = s->sw_todo, *nx; j; j = nx) {
            nx = j->next;
            j->rc = ss__seg_seal_write(j->fd, j->size);
            j->next = s->sw_done;
            s->sw_done = j;
            s->sw_inflight--;
            more = true;
        }
        s->sw_todo = s->sw_todo_tail = NULL;
        pthread_mutex_unlock(&s->sw_lock);
        if (!more)
            break;
    }
}

void ss__seal_fini(ss__store *s)
{
    ss__seal_join(s);
    for (ss__sealjob *j = s->sw_todo, *nx; j; j = nx) {
        nx = j->next;
        free(j);
    }
    for (ss__sealjob *j = s->sw_done, *nx; j; j = nx) {
        nx = j->next;
        free(j);
    }
    s->sw_todo = s->sw_done = NULL;
    if (s->sw_sync) {
        pthread_cond_destroy(&s->sw_cond);
        pthread_mutex_destroy(&s->sw_lock);
        s->sw_sync = false;
    }
    if (s->seal_efd >= 0)
        close(s->seal_efd);
    s->seal_efd = -1;
}
