/* SPDX-License-Identifier: MIT */
/*
 * The store's copy engine (copy.h): started at open with
 * SEALSTORE_COPY_THREADS workers, its eventfd registered with the loop,
 * drained at stop and closed first thing at close. Owns
 * ss__store.copy; calls only the loop core and copy.c. The request layer
 * submits jobs to s->copy.engine (ss__copy_submit, or ss__copy_run for a
 * copy it makes on the loop thread itself); their handlers run on the
 * loop thread.
 */
#include "store_int.h"

#include <unistd.h>

#include "copy.h"
#include "sys.h"

/* SEALSTORE_COPY_THREADS, at most the online CPUs (a copy is CPU-bound:
 * more threads than CPUs only time-slice) and SS_COPY_MAX_THREADS. */
static unsigned copy_threads(void)
{
    uint64_t want = ss__opt_size(SS_OPT_COPY_THREADS);
    long cpus = ss__sys_sysconf(_SC_NPROCESSORS_ONLN);

    if (want > SS_COPY_MAX_THREADS) {
        ss__log_warn("store: SEALSTORE_COPY_THREADS=%llu is above %u: using %u",
                     (unsigned long long)want, SS_COPY_MAX_THREADS, SS_COPY_MAX_THREADS);
        want = SS_COPY_MAX_THREADS;
    }
    if (cpus > 0 && want > (uint64_t)cpus)
        want = (uint64_t)cpus;
    return (unsigned)want;
}

static void copy_event(void *arg, uint32_t events)
{
    ss__store *s = arg;

    (void)events;
    ss__copy_complete(s->copy.engine);
}

int ss__scopy_start(ss__store *s)
{
    int rc = ss__copy_open(&s->copy.engine, copy_threads());

    if (rc < 0) {
        s->copy.engine = NULL;
        return rc;
    }
    ss__copy_set_spin(s->copy.engine, ss__opt_us(SS_OPT_BUSY_POLL));
    rc = ss__loop_add(&s->loop, &s->copy.ev, ss__copy_fd(s->copy.engine), EPOLLIN, copy_event,
                      s);
    if (rc < 0) {
        ss__copy_close(s->copy.engine);
        s->copy.engine = NULL;
        return rc;
    }
    s->copy.registered = true;
    return 0;
}

void ss__scopy_finish(ss__store *s)
{
    if (s->copy.engine)
        ss__copy_drain(s->copy.engine);
}

void ss__scopy_fini(ss__store *s)
{
    if (!s->copy.engine)
        return;
    if (s->copy.registered)
        ss__loop_del(&s->loop, &s->copy.ev);
    s->copy.registered = false;
    ss__copy_close(s->copy.engine); /* runs what is queued, and every handler */
    s->copy.engine = NULL;
}
