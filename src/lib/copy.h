/* SPDX-License-Identifier: MIT */
/*
 * The copy engine: copies a put's bytes into memory only the store may
 * write (an arena's writable window), straight from the blocked caller's
 * memory with process_vm_readv, or from a mapping of this process (a
 * staging area), on a pool of worker threads, off the event loop.
 * Completions reach the loop thread through an eventfd (ss__copy_fd):
 * the loop calls ss__copy_complete when it is readable, which runs each
 * finished job's done handler, in completion order.
 *
 * Splitting. A job of at least `split` bytes (SS_COPY_SPLIT_DEFAULT,
 * 8 MiB; ss__copy_set_split) is cut into contiguous ranges of its
 * destination, at multiples of SS_COPY_CHUNK_MIN (1 MiB), at most one per
 * worker, which run in parallel; the job completes when its last range
 * does, with the first error. Smaller jobs run whole on one worker. Why
 * 8 MiB: measured on a 2-vCPU VM (doc/arena-probe.md, section 5), a second
 * copy thread loses at 1 MiB and below in every run (the hand-off and
 * wake-up cost 2.6-3.9 us, more than it saves), and gained only from
 * 16 MiB up, and then only when the second CPU was free; process_vm_readv
 * runs as fast with 1 MiB iovecs as with one iovec, so cuts at 1 MiB cost
 * nothing.
 *
 * Trust. A remote copy reads from the process a pidfd names, by its pid
 * (process_vm_readv takes a pid). After the copy the pidfd is checked
 * (pidfd_send_signal(pidfd, 0)): while the caller is blocked in its call
 * the process cannot be reaped, so if the pidfd's process is still there
 * the pid was its own during the whole copy and the bytes came from it;
 * if it is gone (-ESRCH) the pid may have been reused and the bytes are
 * not trusted.
 *
 * Threads: ss__copy_open, _close, _submit, _complete, _drain and
 * _set_split belong to one thread (the loop); ss__copy_run may be called
 * from any thread on a job of its own.
 */
#ifndef SEALSTORE_SRC_LIB_COPY_H
#define SEALSTORE_SRC_LIB_COPY_H

#include "internal.h"

#include <sys/types.h>
#include <sys/uio.h>

#define SS_COPY_SPLIT_DEFAULT (8ull << 20) /* jobs this large are split */
#define SS_COPY_CHUNK_MIN (1ull << 20)     /* ranges are cut at multiples of this */
#define SS_COPY_MAX_THREADS 64u

typedef struct ss__copy ss__copy;

/*
 * A copy job. The submitter fills the fields down to `arg` and owns the
 * job, its iovec array and the memory both sides name until `done` runs
 * (which may free the job); the engine writes `rc`, `nchunks` and the
 * private fields, under the protocol in copy.c.
 */
typedef struct ss__copyjob {
    struct ss__copyjob *next;  /* the engine's while queued or done */
    /* >= 0: src holds addresses in the process this pidfd names, read with
     * process_vm_readv from pid; -1: addresses in this process (memcpy) */
    int pidfd;
    pid_t pid;
    const struct iovec *src;   /* nsrc ranges whose lengths sum to size */
    uint32_t nsrc;
    unsigned char *dst;        /* size bytes of destination */
    uint64_t size;
    /* run on the loop thread by ss__copy_complete (or ss__copy_drain /
     * ss__copy_close), exactly once per submitted job */
    void (*done)(void *arg, struct ss__copyjob *j);
    void *arg;
    /* out: 0; -EINVAL (the lengths do not sum to size); -EFAULT (a source
     * range is not readable, or a read made no progress); -EPERM (no
     * permission to read that process: fall back to another path);
     * -ESRCH (the process is gone: its pid may have been reused, so the
     * bytes read are not trusted); another -errno */
    int rc;
    uint32_t nchunks;          /* out: ranges it ran as (1: whole) */
    /* engine-private */
    uint32_t claimed;          /* ranges taken by workers */
    uint32_t left;             /* ranges not finished */
} ss__copyjob;

/* Start `threads` workers (at most SS_COPY_MAX_THREADS; 0: none, every
 * submitted job runs on the submitting thread): 0 or -errno. */
int ss__copy_open(ss__copy **out, unsigned threads);
/* Let the workers finish every queued job, join them, then run the done
 * handlers of every job not yet handled, on this thread (a handler may
 * submit again: such a job runs at once, here, and is handled too).
 * NULL is a no-op. */
void ss__copy_close(ss__copy *e);
/* The eventfd the loop watches: readable when jobs completed. */
int ss__copy_fd(const ss__copy *e);
/* Workers started. */
unsigned ss__copy_threads(const ss__copy *e);
/* How an idle worker spins for the next job before it sleeps (one at a
 * time): SEALSTORE_BUSY_POLL's value (ss__spin_init; the default 0: never).
 * Thread-safe. */
void ss__copy_set_spin(ss__copy *e, int64_t opt_us);
/* Split jobs of at least this many bytes (0: never split). */
void ss__copy_set_split(ss__copy *e, uint64_t bytes);
/* Queue a job (j->done set). Its handler runs later, from
 * ss__copy_complete, never from inside this call, also when the job ran
 * at once for want of workers. */
void ss__copy_submit(ss__copy *e, ss__copyjob *j);
/* Run a job whole on this thread (the loop copies small ones itself):
 * returns j->rc. Does not call j->done. */
int ss__copy_run(ss__copyjob *j);

/* Tests: when not 0, the next range a worker (or ss__copy_run) copies ends
 * with this error instead (as a kernel without process_vm_readv makes it
 * end: -ENOSYS). Set by a test thread, taken by the copier. */
extern int ss__g_copy_fail;
/* Drain the eventfd and run the handlers of finished jobs, in completion
 * order. */
void ss__copy_complete(ss__copy *e);
/* Wait until no job is queued or running, running handlers as jobs
 * finish (at stop). */
void ss__copy_drain(ss__copy *e);

#endif /* SEALSTORE_SRC_LIB_COPY_H */
