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

#include <stdlib.h>
#include <sys/eventfd.h>

#include "sys.h"

int ss__g_seal_fail;

/* Seal one job's segment (its rc), or fail it as a test asked. */
static void seal_run(ss__sealjob *j)
{
    int fail = __atomic_load_n(&ss__g_seal_fail, __ATOMIC_RELAXED)
                   ? __atomic_exchange_n(&ss__g_seal_fail, 0, __ATOMIC_RELAXED)
                   : 0;

    j->rc = fail ? fail : ss__seg_seal_write(j->fd, j->size);
}

static void *seal_worker(void *arg)
{
    ss__store *s = arg;

    (void)ss__sys_block_signals(NULL);
    pthread_mutex_lock(&s->seal.lock);
    for (;;) {
        while (!s->seal.todo && !s->seal.stop)
            pthread_cond_wait(&s->seal.cond, &s->seal.lock);
        if (!s->seal.todo)
            break;
        ss__sealjob *j = s->seal.todo;
        s->seal.todo = j->next;
        if (!s->seal.todo)
            s->seal.todo_tail = NULL;
        pthread_mutex_unlock(&s->seal.lock);

        seal_run(j);

        pthread_mutex_lock(&s->seal.lock);
        j->next = s->seal.done;
        s->seal.done = j;
        s->seal.inflight--;
        /* an eventfd write only fails at 2^64-1 */
        (void)ss__sys_eventfd_write(s->seal.efd, 1);
    }
    pthread_mutex_unlock(&s->seal.lock);
    return NULL;
}

/* Run the handlers of the finished jobs, in completion order. */
static void seal_done(ss__store *s)
{
    ss__sealjob *done;

    pthread_mutex_lock(&s->seal.lock);
    done = s->seal.done;
    s->seal.done = NULL;
    pthread_mutex_unlock(&s->seal.lock);

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

    (void)events;
    ss__loop_drain(s->seal.efd);
    seal_done(s);
}

int ss__seal_start(ss__store *s)
{
    int rc;

    s->seal.efd = ss__sys_eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (s->seal.efd < 0) {
        rc = s->seal.efd;
        s->seal.efd = -1;
        return rc;
    }
    if ((rc = ss__loop_add(&s->loop, &s->seal.ev, s->seal.efd, EPOLLIN, seal_event, s)) < 0)
        return rc;
    rc = pthread_mutex_init(&s->seal.lock, NULL);
    if (rc)
        return -rc;
    rc = pthread_cond_init(&s->seal.cond, NULL);
    if (rc) {
        pthread_mutex_destroy(&s->seal.lock);
        return -rc;
    }
    s->seal.sync = true;
    rc = pthread_create(&s->seal.thread, NULL, seal_worker, s);
    if (rc)
        return -rc;
    s->seal.started = true;
    pthread_setname_np(s->seal.thread, "ss-seal");
    return 0;
}

void ss__seal_submit(ss__store *s, ss__sealjob *j)
{
    pthread_mutex_lock(&s->seal.lock);
    j->next = NULL;
    if (s->seal.todo_tail)
        s->seal.todo_tail->next = j;
    else
        s->seal.todo = j;
    s->seal.todo_tail = j;
    s->seal.inflight++;
    pthread_cond_signal(&s->seal.cond);
    pthread_mutex_unlock(&s->seal.lock);
}

void ss__seal_join(ss__store *s)
{
    if (!s->seal.started)
        return;
    pthread_mutex_lock(&s->seal.lock);
    s->seal.stop = true;
    pthread_cond_signal(&s->seal.cond);
    pthread_mutex_unlock(&s->seal.lock);
    pthread_join(s->seal.thread, NULL);
    s->seal.started = false;
}

void ss__seal_finish(ss__store *s)
{
    if (!s->seal.started)
        return;
    ss__seal_join(s);
    /* queued seals of each client go through one by one, run here */
    for (;;) {
        seal_done(s);
        bool more = false;
        pthread_mutex_lock(&s->seal.lock);
        for (ss__sealjob *j = s->seal.todo, *nx; j; j = nx) {
            nx = j->next;
            seal_run(j);
            j->next = s->seal.done;
            s->seal.done = j;
            s->seal.inflight--;
            more = true;
        }
        s->seal.todo = s->seal.todo_tail = NULL;
        pthread_mutex_unlock(&s->seal.lock);
        if (!more)
            break;
    }
}

void ss__seal_fini(ss__store *s)
{
    ss__seal_join(s);
    for (ss__sealjob *j = s->seal.todo, *nx; j; j = nx) {
        nx = j->next;
        free(j);
    }
    for (ss__sealjob *j = s->seal.done, *nx; j; j = nx) {
        nx = j->next;
        free(j);
    }
    s->seal.todo = s->seal.done = NULL;
    if (s->seal.sync) {
        pthread_cond_destroy(&s->seal.cond);
        pthread_mutex_destroy(&s->seal.lock);
        s->seal.sync = false;
    }
    if (s->seal.efd >= 0)
        ss__sys_close(s->seal.efd);
    s->seal.efd = -1;
}
