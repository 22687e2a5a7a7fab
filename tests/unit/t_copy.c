/* SPDX-License-Identifier: MIT */
/*
 * The copy engine (copy.h): copies from another process with
 * process_vm_readv and from this one with memcpy, whole or split across
 * workers, every byte checked against the pattern the source process
 * wrote; the errors a copy can end with (-EFAULT, -ESRCH, -EPERM,
 * -EINVAL); completions through the eventfd, each handler exactly once,
 * also for jobs still queued at close.
 *
 * A source process is a forked child that maps a buffer, fills it with a
 * pattern of its own seed and waits on a pipe; the parent unmaps its copy
 * of the buffer, so a copy that read locally by mistake would fault.
 * The -EPERM case needs root (it makes processes of two other uids); it
 * skips otherwise. The 64 MiB copy prints its GB/s with 1 and 2 workers
 * (information only: the machine is shared, nothing is asserted on time).
 */
#include "config.h" /* _GNU_SOURCE, before any system header */

#include "t_helpers.h"

#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "copy.h"
#include "sys.h"

#define MiB (1ull << 20)
#if defined(__SANITIZE_THREAD__) || defined(__SANITIZE_ADDRESS__)
#define BIGGEST (64 * MiB) /* instrumented byte loops: keep the run short */
#else
#define BIGGEST (256 * MiB)
#endif

/* The cases' random streams start from this (SS_TEST_SEED replays one). */
static uint64_t base_seed = 0x9e3779b97f4a7c15ull;

/* Byte i of the pattern of seed s: differs between neighbours and seeds. */
static inline unsigned char pat(uint64_t i, unsigned s)
{
    uint64_t x = (i + 1) * 0x9e3779b97f4a7c15ull + s * 0xbf58476d1ce4e5b9ull;
    return (unsigned char)(x >> 56 ^ x >> 29);
}

static void fill(unsigned char *p, uint64_t off, uint64_t n, unsigned s)
{
    for (uint64_t i = 0; i < n; i++)
        p[i] = pat(off + i, s);
}

/* dst holds the source ranges v[0..n) of a buffer at `base` with pattern s. */
static void check_iov(const unsigned char *dst, const struct iovec *v, uint32_t n,
                      const unsigned char *base, unsigned s)
{
    uint64_t d = 0;

    for (uint32_t k = 0; k < n; k++) {
        uint64_t off = (uint64_t)((const unsigned char *)v[k].iov_base - base);
        for (uint64_t i = 0; i < v[k].iov_len; i++, d++)
            if (dst[d] != pat(off + i, s))
                fail_msg("byte %" PRIu64 " (iovec %u + %" PRIu64 ") is %#x, expected %#x", d,
                         k, i, dst[d], pat(off + i, s));
    }
}

static unsigned char *map(uint64_t n)
{
    void *p = mmap(NULL, n ? n : 1, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

    if (p == MAP_FAILED)
        fail_msg("mmap %" PRIu64 ": %s", n, strerror(errno));
    return p;
}

/* ------------------------------------------------------- source process */

typedef struct child {
    pid_t pid;
    int pidfd;
    unsigned char *buf; /* the child's address; unmapped here */
    uint64_t size;
    unsigned seed;
    int release;        /* closing it lets the child exit */
} child;

/* Release ends of the children alive: a child closes the others' (else
 * it would keep an older child from seeing EOF). */
static int releases[8];
static unsigned nreleases;

/* A child whose buffer of `size` bytes holds pattern `seed`, followed by
 * an unmapped page (buf + size). uid/gid (when not 0): the child takes
 * them (and is not dumpable) before it fills the buffer. */
static void child_start_as(child *c, uint64_t size, unsigned seed, uid_t uid)
{
    int ready[2], rel[2];
    uint64_t pg = 4096, room = SS_ALIGN_UP(size, pg) + pg;
    unsigned char *b = map(room);

    /* the page after the buffer stays a hole in the child */
    assert_int_equal(munmap(b + SS_ALIGN_UP(size, pg), pg), 0);
    if (pipe(ready) || pipe(rel))
        fail_msg("pipe: %s", strerror(errno));
    pid_t pid = fork();
    if (pid < 0)
        fail_msg("fork: %s", strerror(errno));
    if (pid == 0) {
        char x = 1;

        close(ready[0]);
        close(rel[1]);
        for (unsigned i = 0; i < nreleases; i++)
            close(releases[i]);
        if (uid && (setresgid(uid, uid, uid) || setresuid(uid, uid, uid) ||
                    prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)))
            _exit(99);
        fill(b, 0, size, seed);
        if (write(ready[1], &x, 1) != 1)
            _exit(99);
        while (read(rel[0], &x, 1) > 0)
            ;
        _exit(0);
    }
    close(ready[1]);
    close(rel[0]);
    munmap(b, SS_ALIGN_UP(size, pg));
    char x;
    if (read(ready[0], &x, 1) != 1)
        fail_msg("source child did not start");
    close(ready[0]);
    c->pid = pid;
    c->buf = b;
    c->size = size;
    c->seed = seed;
    c->release = rel[1];
    assert_true(nreleases < SS_ARRAY_SIZE(releases));
    releases[nreleases++] = rel[1];
    c->pidfd = ss__sys_pidfd_open(pid, 0);
    t_assert_ok(c->pidfd);
}

static void child_start(child *c, uint64_t size, unsigned seed)
{
    child_start_as(c, size, seed, 0);
}

/* Let it exit and reap it (the pidfd stays open unless close_fd). */
static void child_release(child *c)
{
    for (unsigned i = 0; i < nreleases; i++)
        if (releases[i] == c->release)
            releases[i] = releases[--nreleases];
    if (c->release >= 0)
        close(c->release);
    c->release = -1;
}

static void child_stop(child *c, bool close_fd)
{
    int st;

    child_release(c);
    if (c->pid > 0) {
        assert_int_equal(waitpid(c->pid, &st, 0), c->pid);
        assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    }
    c->pid = 0;
    if (close_fd && c->pidfd >= 0) {
        close(c->pidfd);
        c->pidfd = -1;
    }
}

/* A source child, then an engine of `threads` workers (the fork first:
 * no worker thread is copied into the child). */
static ss__copy *engine_and_child(child *c, uint64_t size, unsigned seed, unsigned threads)
{
    ss__copy *e;

    child_start(c, size, seed);
    t_assert_ok(ss__copy_open(&e, threads));
    return e;
}

static ss__copyjob job_of(const child *c, const struct iovec *v, uint32_t n, unsigned char *dst,
                          uint64_t size)
{
    return (ss__copyjob){ .pidfd = c ? c->pidfd : -1, .pid = c ? c->pid : 0, .src = v,
                          .nsrc = n, .dst = dst, .size = size };
}

static uint64_t iov_sum(const struct iovec *v, uint32_t n)
{
    uint64_t s = 0;

    for (uint32_t i = 0; i < n; i++)
        s += v[i].iov_len;
    return s;
}

/* ------------------------------------------------------ engine helpers */

typedef struct tally {
    unsigned ndone;
    unsigned *calls; /* per job, indexed by job - base */
    ss__copyjob *base;
} tally;

static void on_done(void *arg, ss__copyjob *j)
{
    tally *t = arg;

    t->ndone++;
    if (t->calls)
        t->calls[j - t->base]++;
}

/* Run the loop's side until `want` handlers ran. */
static void complete_until(ss__copy *e, tally *t, unsigned want)
{
    while (t->ndone < want) {
        struct pollfd p = { .fd = ss__copy_fd(e), .events = POLLIN };
        int n = poll(&p, 1, 120000);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            fail_msg("no completion in 120 s (%u of %u)", t->ndone, want);
        ss__copy_complete(e);
    }
}

/* Submit one job and wait for it: its rc. */
static int submit_wait(ss__copy *e, ss__copyjob *j)
{
    tally t = { 0 };

    j->done = on_done;
    j->arg = &t;
    ss__copy_submit(e, j);
    complete_until(e, &t, 1);
    assert_int_equal(t.ndone, 1);
    return j->rc;
}

static double now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* --------------------------------------------------------------- cases */

/* One iovec, 1 B to 256 MiB, synchronous and through workers (split from
 * 8 MiB with 2 and 3 workers), every byte checked. */
static void test_remote_sizes(void **state)
{
    static const uint64_t sizes[] = { 1, 63, 4095, 4096, 65537, MiB + 3, 8 * MiB,
                                      9 * MiB + 1, 64 * MiB + 7, BIGGEST };
    ss__copy *e2, *e3;
    child c;

    (void)state;
    uint64_t room = 0;
    for (size_t i = 0; i < SS_ARRAY_SIZE(sizes); i++)
        room = sizes[i] > room ? sizes[i] : room;
    child_start(&c, room + 64, 11); /* forks before the engines' threads exist */
    t_assert_ok(ss__copy_open(&e2, 2));
    t_assert_ok(ss__copy_open(&e3, 3));
    unsigned char *dst = map(room);
    for (size_t i = 0; i < SS_ARRAY_SIZE(sizes); i++) {
        uint64_t n = sizes[i], off = i * 7; /* odd source offsets too */
        struct iovec v = { c.buf + off, n };
        ss__copyjob j = job_of(&c, &v, 1, dst, n);

        memset(dst, 0, n);
        t_assert_ok(ss__copy_run(&j));
        assert_int_equal(j.nchunks, 1);
        check_iov(dst, &v, 1, c.buf, c.seed);

        ss__copy *e = i % 2 ? e3 : e2;
        memset(dst, 0, n);
        j = job_of(&c, &v, 1, dst, n);
        t_assert_ok(submit_wait(e, &j));
        check_iov(dst, &v, 1, c.buf, c.seed);
        /* split from 8 MiB, at 1 MiB multiples, at most one range per worker */
        uint32_t want = 1;
        if (n >= 8 * MiB) {
            uint64_t w = ss__copy_threads(e), per = SS_ALIGN_UP((n + w - 1) / w, MiB);
            want = (uint32_t)((n + per - 1) / per);
        }
        assert_int_equal(j.nchunks, want);
    }
    munmap(dst, room);
    child_stop(&c, true);
    ss__copy_close(e2);
    ss__copy_close(e3);
}

/* Source shapes: 4 KiB pieces (more than UIO_MAXIOV of them), pieces of
 * odd lengths at odd offsets with gaps, empty iovecs among them; split at
 * 2 MiB over 4 workers so ranges start and end inside iovecs. */
static void test_remote_shapes(void **state)
{
    const uint64_t room = 48 * MiB;
    child c;
    ss__copy *e = engine_and_child(&c, room, 23, 4);

    (void)state;
    t_rnd_seed(base_seed ^ 1);
    ss__copy_set_split(e, 2 * MiB);
    unsigned char *dst = map(room);
    uint32_t cap = 12000;
    struct iovec *v = calloc(cap, sizeof(*v));
    assert_non_null(v);

    for (int shape = 0; shape < 4; shape++) {
        uint32_t n = 0;
        uint64_t pos = 0;

        if (shape == 0) { /* 4 KiB pieces, back to back: 16 MiB in 4096 iovecs */
            for (; n < 4096; n++, pos += 4096)
                v[n] = (struct iovec){ c.buf + pos, 4096 };
        } else if (shape == 1) { /* odd pieces, odd gaps, some empty */
            while (n < 3000) {
                uint64_t len = n % 97 == 5 ? 0 : 1 + t_rnd() % 9000, gap = t_rnd() % 333;
                pos += gap;
                v[n++] = (struct iovec){ c.buf + pos, len };
                pos += len;
            }
        } else if (shape == 2) { /* a few large pieces, reversed order */
            for (int k = 0; k < 5; k++) {
                uint64_t len = 3 * MiB + 1 + t_rnd() % MiB;
                v[n++] = (struct iovec){ c.buf + room - (uint64_t)(k + 1) * 5 * MiB - 3, len };
            }
        } else { /* 10000 pieces of 1..64 bytes: 10 batches of process_vm_readv */
            while (n < 10000) {
                uint64_t len = 1 + t_rnd() % 64;
                v[n++] = (struct iovec){ c.buf + pos + 1, len };
                pos += len + 1;
            }
        }
        uint64_t size = iov_sum(v, n);
        assert_true(size <= room);

        ss__copyjob j = job_of(&c, v, n, dst, size);
        memset(dst, 0, size);
        t_assert_ok(ss__copy_run(&j));
        check_iov(dst, v, n, c.buf, c.seed);

        memset(dst, 0, size);
        j = job_of(&c, v, n, dst, size);
        t_assert_ok(submit_wait(e, &j));
        check_iov(dst, v, n, c.buf, c.seed);
        if (size >= 4 * MiB)
            assert_true(j.nchunks > 1);
    }
    free(v);
    munmap(dst, room);
    child_stop(&c, true);
    ss__copy_close(e);
}

/* Many jobs at once on 3 workers, remote and local, some split: each
 * handler runs once, every byte right. */
static void test_many_jobs(void **state)
{
    enum { NJ = 300 };
    const uint64_t room = 32 * MiB;
    child c;
    ss__copy *e = engine_and_child(&c, room, 31, 3);
    ss__copyjob *jobs = calloc(NJ, sizeof(*jobs));
    struct iovec *v = calloc(NJ * 2, sizeof(*v));
    unsigned *calls = calloc(NJ, sizeof(*calls));
    unsigned char **dsts = calloc(NJ, sizeof(*dsts));
    unsigned char *local = map(room);
    tally t = { .calls = calls, .base = jobs };

    (void)state;
    t_rnd_seed(base_seed ^ 2);
    assert_true(jobs && v && calls && dsts);
    fill(local, 0, room, 77);
    ss__copy_set_split(e, 2 * MiB);
    for (unsigned i = 0; i < NJ; i++) {
        uint64_t a = 1 + t_rnd() % (i % 10 == 0 ? 3 * MiB : 64 * 1024);
        uint64_t b = t_rnd() % 5000;
        bool remote = i % 3 != 0;
        unsigned char *base = remote ? c.buf : local;
        uint64_t oa = t_rnd() % (room - a - b - 1);
        uint64_t ob = t_rnd() % (room - b);

        v[2 * i] = (struct iovec){ base + oa, a };
        v[2 * i + 1] = (struct iovec){ base + ob, b };
        dsts[i] = malloc(a + b);
        assert_non_null(dsts[i]);
        jobs[i] = job_of(remote ? &c : NULL, &v[2 * i], 2, dsts[i], a + b);
        jobs[i].done = on_done;
        jobs[i].arg = &t;
        ss__copy_submit(e, &jobs[i]);
    }
    complete_until(e, &t, NJ);
    for (unsigned i = 0; i < NJ; i++) {
        assert_int_equal(calls[i], 1);
        t_assert_ok(jobs[i].rc);
        check_iov(dsts[i], &v[2 * i], 2, jobs[i].pidfd >= 0 ? c.buf : local,
                  jobs[i].pidfd >= 0 ? c.seed : 77);
        free(dsts[i]);
    }
    ss__copy_close(e);
    child_stop(&c, true);
    munmap(local, room);
    free(jobs);
    free(v);
    free(calls);
    free(dsts);
}

/* 64 MiB remote with 1 and 2 workers: GB/s printed, never asserted. */
static void test_throughput(void **state)
{
    const uint64_t n = 64 * MiB;
    child c;

    (void)state;
    child_start(&c, n, 5);
    unsigned char *dst = map(n);
    memset(dst, 1, n); /* faulted: a store's arena is */
    for (unsigned w = 1; w <= 2; w++) {
        ss__copy *e;
        double best = 1e9;

        t_assert_ok(ss__copy_open(&e, w));
        for (int r = 0; r < 5; r++) {
            struct iovec v = { c.buf, n };
            ss__copyjob j = job_of(&c, &v, 1, dst, n);
            double t0 = now_s();
            t_assert_ok(submit_wait(e, &j));
            double dt = now_s() - t0;
            if (dt < best)
                best = dt;
            assert_int_equal(j.nchunks, w);
        }
        check_iov(dst, &(struct iovec){ c.buf, n }, 1, c.buf, c.seed);
        print_message("64 MiB remote copy, %u worker%s: %.2f GB/s (best of 5)\n", w,
                      w > 1 ? "s" : "", n / best / 1e9);
        ss__copy_close(e);
    }
    munmap(dst, n);
    child_stop(&c, true);
}

/* -EFAULT: a range at an unmapped address of the source, one that runs
 * into the hole after its buffer, a later iovec unmapped; also for a
 * split job whose last range faults. */
static void test_efault(void **state)
{
    const uint64_t n = 16 * MiB;
    child c;
    ss__copy *e = engine_and_child(&c, n, 41, 2);

    (void)state;
    unsigned char *dst = map(n + 4096);
    struct iovec cases[][2] = {
        { { c.buf + n, 100 }, { 0, 0 } },                  /* unmapped */
        { { c.buf + n - 100, 200 }, { 0, 0 } },            /* runs into the hole */
        { { c.buf, 4096 }, { c.buf + n + 8, 10 } },        /* second one unmapped */
        { { (void *)8, 4096 }, { 0, 0 } },                 /* the null page */
    };
    for (size_t k = 0; k < SS_ARRAY_SIZE(cases); k++) {
        uint32_t nv = cases[k][1].iov_len ? 2 : 1;
        uint64_t size = iov_sum(cases[k], nv);
        ss__copyjob j = job_of(&c, cases[k], nv, dst, size);

        t_assert_err(ss__copy_run(&j), -EFAULT);
        j = job_of(&c, cases[k], nv, dst, size);
        t_assert_err(submit_wait(e, &j), -EFAULT);
    }
    /* split in two; only the second range reaches the hole */
    struct iovec v = { c.buf + 4096, n };
    ss__copyjob j = job_of(&c, &v, 1, dst, n);
    t_assert_err(submit_wait(e, &j), -EFAULT);
    assert_int_equal(j.nchunks, 2);
    /* ...and the first range did arrive */
    check_iov(dst, &(struct iovec){ c.buf + 4096, n / 2 }, 1, c.buf, c.seed);
    munmap(dst, n + 4096);
    child_stop(&c, true);
    ss__copy_close(e);
}

/* -ESRCH: the source exited and was reaped; its pid now names another
 * process (as after reuse): what was read is not trusted. A zombie's
 * pid cannot be reused, but it has nothing to read. */
static void test_esrch(void **state)
{
    ss__copy *e;
    child a, b;
    unsigned char dst[8192];

    (void)state;
    child_start(&a, 8192, 1);
    child_start(&b, 8192, 2);
    t_assert_ok(ss__copy_open(&e, 1));
    struct iovec va = { a.buf, 8192 }, vb = { b.buf, 8192 };
    pid_t apid = a.pid;

    child_stop(&a, false); /* exited, reaped; a.pidfd still open */
    ss__copyjob j = job_of(&a, &va, 1, dst, sizeof(dst));
    j.pid = apid;
    t_assert_err(ss__copy_run(&j), -ESRCH);
    j = job_of(&a, &va, 1, dst, sizeof(dst));
    j.pid = apid;
    t_assert_err(submit_wait(e, &j), -ESRCH);

    /* "reused": b's pid with a's pidfd: the read works, the check fails */
    j = job_of(&b, &vb, 1, dst, sizeof(dst));
    j.pidfd = a.pidfd;
    t_assert_err(ss__copy_run(&j), -ESRCH);
    check_iov(dst, &vb, 1, b.buf, b.seed); /* it did read, from b */
    j = job_of(&b, &vb, 1, dst, sizeof(dst));
    j.pidfd = a.pidfd;
    t_assert_err(submit_wait(e, &j), -ESRCH);
    j = job_of(&b, &vb, 1, dst, sizeof(dst)); /* b's own pidfd: fine */
    t_assert_ok(submit_wait(e, &j));

    /* a zombie (not reaped yet) */
    child_release(&b);
    siginfo_t si;
    assert_int_equal(waitid(P_PID, (id_t)b.pid, &si, WEXITED | WNOWAIT), 0);
    j = job_of(&b, &vb, 1, dst, sizeof(dst));
    t_assert_err(ss__copy_run(&j), -ESRCH);
    child_stop(&b, true);
    close(a.pidfd);
    ss__copy_close(e);
}

/* -EPERM: a copier of uid 65534 without CAP_SYS_PTRACE reads a
 * non-dumpable process of uid 65533. Needs root to make both. */
static void test_eperm(void **state)
{
    child src;
    int st;

    (void)state;
    T_SKIP_IF(geteuid() != 0, NULL, "needs root to run processes of two other uids");
    child_start_as(&src, 65536, 3, 65533);
    pid_t pid = fork();
    if (pid < 0)
        fail_msg("fork: %s", strerror(errno));
    if (pid == 0) {
        static unsigned char dst[65536];
        struct iovec v = { src.buf, sizeof(dst) };

        if (setresgid(65534, 65534, 65534) || setresuid(65534, 65534, 65534))
            _exit(98);
        ss__copyjob j = job_of(&src, &v, 1, dst, sizeof(dst));
        int rc = ss__copy_run(&j);
        _exit(rc == -EPERM ? 0 : rc == 0 ? 97 : 96);
    }
    assert_int_equal(waitpid(pid, &st, 0), pid);
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
        fail_msg("copier: status %#x (97: the copy worked, 96: another error)", st);
    /* root itself may: CAP_SYS_PTRACE */
    unsigned char dst[65536];
    struct iovec v = { src.buf, sizeof(dst) };
    ss__copyjob j = job_of(&src, &v, 1, dst, sizeof(dst));
    t_assert_ok(ss__copy_run(&j));
    check_iov(dst, &v, 1, src.buf, src.seed);
    child_stop(&src, true);
}

/* Local copies (pidfd -1), whole and split; -EINVAL for lengths that do
 * not sum to the size; an engine without workers runs submitted jobs at
 * once but hands them over through the eventfd all the same. */
static void test_local(void **state)
{
    const uint64_t n = 24 * MiB;
    unsigned char *src = map(n), *dst = map(n);
    ss__copy *e, *e0;
    struct iovec v[3] = { { src + 5, 7 * MiB }, { src + 9 * MiB, 3 }, { src + 10 * MiB, 9 * MiB } };
    uint64_t size = iov_sum(v, 3);

    (void)state;
    fill(src, 0, n, 9);
    t_assert_ok(ss__copy_open(&e, 2));
    ss__copyjob j = job_of(NULL, v, 3, dst, size);
    t_assert_ok(ss__copy_run(&j));
    check_iov(dst, v, 3, src, 9);
    memset(dst, 0, size);
    j = job_of(NULL, v, 3, dst, size);
    t_assert_ok(submit_wait(e, &j));
    assert_int_equal(j.nchunks, 2);
    check_iov(dst, v, 3, src, 9);

    j = job_of(NULL, v, 3, dst, size + 1);
    t_assert_err(ss__copy_run(&j), -EINVAL);
    j = job_of(NULL, v, 3, dst, size - 1);
    t_assert_err(submit_wait(e, &j), -EINVAL);
    j = job_of(NULL, NULL, 3, dst, size);
    t_assert_err(ss__copy_run(&j), -EINVAL);
    j = job_of(NULL, v, 0, dst, 0); /* empty */
    t_assert_ok(ss__copy_run(&j));

    t_assert_ok(ss__copy_open(&e0, 0));
    tally t = { 0 };
    memset(dst, 0, size);
    j = job_of(NULL, v, 3, dst, size);
    j.done = on_done;
    j.arg = &t;
    ss__copy_submit(e0, &j);
    assert_int_equal(t.ndone, 0); /* never from inside submit */
    complete_until(e0, &t, 1);
    t_assert_ok(j.rc);
    check_iov(dst, v, 3, src, 9);
    ss__copy_close(e0);
    ss__copy_close(e);
    munmap(src, n);
    munmap(dst, n);
}

/* Close with jobs queued and none completed yet: each handler runs
 * exactly once, from close, after its copy; a handler that submits again
 * during close gets its job run and handled too. Drain at stop likewise. */
static ss__copy *resubmit_engine;
static ss__copyjob extra;

static void on_extra_done(void *arg, ss__copyjob *j)
{
    (void)j;
    ((tally *)arg)->ndone++;
}

static void on_done_resubmit(void *arg, ss__copyjob *j)
{
    on_done(arg, j);
    if (j - ((tally *)arg)->base == 0) {
        extra.done = on_extra_done;
        extra.arg = arg;
        ss__copy_submit(resubmit_engine, &extra);
    }
}

static void test_close_queued(void **state)
{
    enum { NJ = 64 };
    const uint64_t n = 2 * MiB;
    unsigned char *src = map(n), *dst = map(NJ * n + n);
    ss__copyjob jobs[NJ];
    unsigned calls[NJ + 1] = { 0 };
    tally t = { .calls = calls, .base = jobs };
    struct iovec v = { src, n };

    (void)state;
    fill(src, 0, n, 4);
    for (int round = 0; round < 2; round++) {
        ss__copy *e;

        memset(calls, 0, sizeof(calls));
        t.ndone = 0;
        memset(dst, 0, NJ * n + n);
        t_assert_ok(ss__copy_open(&e, 2));
        resubmit_engine = e;
        for (unsigned i = 0; i < NJ; i++) {
            jobs[i] = job_of(NULL, &v, 1, dst + i * n, n);
            jobs[i].done = on_done_resubmit;
            jobs[i].arg = &t;
            ss__copy_submit(e, &jobs[i]);
        }
        extra = job_of(NULL, &v, 1, dst + NJ * n, n);
        if (round == 0) {
            ss__copy_close(e); /* nothing completed on the loop side yet */
        } else {
            ss__copy_drain(e);
            assert_int_equal(t.ndone, NJ + 1);
            ss__copy_close(e);
        }
        assert_int_equal(t.ndone, NJ + 1);
        for (unsigned i = 0; i < NJ; i++) {
            assert_int_equal(calls[i], 1);
            t_assert_ok(jobs[i].rc);
            check_iov(dst + i * n, &v, 1, src, 4);
        }
        t_assert_ok(extra.rc);
        check_iov(dst + NJ * n, &v, 1, src, 4);
    }
    munmap(src, n);
    munmap(dst, NJ * n + n);
}

/* Stress (run under TSan in the tsan build): several rounds of bursts of
 * small and split local jobs on 4 workers, completed while workers still
 * run others, then a close with some in flight. */
/* One worker at a time spins for work (ss__copy_set_spin): jobs submitted
 * while it spins go to it with no signal, jobs submitted after its window
 * wake a sleeping worker, and none is lost either way (a lost one would
 * leave the wait below without a completion). */
static void test_spin(void **state)
{
    static const int64_t modes[] = { 2000, SS_SPIN_AUTO };
    unsigned char src[8192], dst[8192];
    struct iovec v = { src, sizeof(src) };
    (void)state;

    fill(src, 0, sizeof(src), 8);
    for (size_t m = 0; m < sizeof(modes) / sizeof(modes[0]); m++) {
        ss__copy *e;

        t_assert_ok(ss__copy_open(&e, 3));
        ss__copy_set_spin(e, modes[m]);
        for (int i = 0; i < 200; i++) {
            ss__copyjob j = job_of(NULL, &v, 1, dst, sizeof(dst));

            memset(dst, 0, sizeof(dst));
            t_assert_ok(submit_wait(e, &j));
            check_iov(dst, &v, 1, src, 8);
            if (i % 20 == 19)
                usleep(3000); /* past a 2 ms window: the next wakes a sleeper */
        }
        ss__copy_close(e);
    }
}

/* Completion order of test_spin_parallel's jobs. */
static int spin_order[2], spin_n;
static void on_done_order(void *arg, ss__copyjob *j)
{
    (void)j;
    spin_order[spin_n++] = (int)(intptr_t)arg;
}

/* Two single-range jobs queued while a worker spins run in parallel: the
 * second wakes a sleeping worker instead of waiting behind the first for
 * the spinner (a 4 KiB job finishes before a 128 MiB one). */
static void test_spin_parallel(void **state)
{
    const uint64_t big = 128 * MiB;
    unsigned char *sa = map(big), *da = map(big);
    static unsigned char sb[4096], db[4096];
    struct iovec va = { sa, big }, vb = { sb, sizeof(sb) }, vw = { sb, 64 };
    ss__copy *e;
    (void)state;

    fill(sa, 0, big, 9);
    memset(da, 0, big); /* faulted: the copy's time is the copy's */
    t_assert_ok(ss__copy_open(&e, 2));
    ss__copy_set_split(e, 0);
    ss__copy_set_spin(e, 20000); /* 20 ms */
    ss__copyjob w = job_of(NULL, &vw, 1, db, 64);
    t_assert_ok(submit_wait(e, &w));
    usleep(1000); /* the worker that ran w spins now, the other sleeps */
    ss__copyjob a = job_of(NULL, &va, 1, da, big), b = job_of(NULL, &vb, 1, db, sizeof(db));
    a.done = b.done = on_done_order;
    a.arg = (void *)(intptr_t)0;
    b.arg = (void *)(intptr_t)1;
    spin_n = 0;
    ss__copy_submit(e, &a);
    ss__copy_submit(e, &b);
    while (spin_n < 2) {
        struct pollfd p = { .fd = ss__copy_fd(e), .events = POLLIN };
        assert_true(poll(&p, 1, 120000) > 0);
        ss__copy_complete(e);
    }
    assert_int_equal(spin_order[0], 1); /* b first */
    t_assert_ok(a.rc);
    t_assert_ok(b.rc);
    check_iov(da, &va, 1, sa, 9);
    ss__copy_close(e);
    munmap(sa, big);
    munmap(da, big);
}

static void test_stress(void **state)
{
    enum { NJ = 400 };
    const uint64_t room = 8 * MiB;
    unsigned char *src = map(room);
    ss__copyjob *jobs = calloc(NJ, sizeof(*jobs));
    struct iovec *v = calloc(NJ, sizeof(*v));
    unsigned *calls = calloc(NJ, sizeof(*calls));
    unsigned char *dst = map((uint64_t)NJ * 4 * MiB / 16 + room);
    tally t = { .calls = calls, .base = jobs };
    ss__copy *e;

    (void)state;
    t_rnd_seed(base_seed ^ 3);
    assert_true(jobs && v && calls);
    fill(src, 0, room, 6);
    t_assert_ok(ss__copy_open(&e, 4));
    ss__copy_set_split(e, 2 * MiB);
    for (int round = 0; round < 3; round++) {
        if (round == 1)
            ss__copy_set_spin(e, SS_SPIN_AUTO); /* rounds 1 and 2 with a spinner */
        uint64_t at = 0;
        unsigned base = t.ndone;

        memset(calls, 0, NJ * sizeof(*calls));
        for (unsigned i = 0; i < NJ; i++) {
            uint64_t len = i % 16 == 0 ? 2 * MiB + t_rnd() % (2 * MiB) : 1 + t_rnd() % 4096;
            v[i] = (struct iovec){ src + t_rnd() % (room - len), len };
            jobs[i] = job_of(NULL, &v[i], 1, dst + at, len);
            at += len;
            jobs[i].done = on_done;
            jobs[i].arg = &t;
            ss__copy_submit(e, &jobs[i]);
            if (i % 50 == 49)
                ss__copy_complete(e); /* reap some while the rest run */
        }
        complete_until(e, &t, base + NJ);
        at = 0;
        for (unsigned i = 0; i < NJ; i++) {
            assert_int_equal(calls[i], 1);
            t_assert_ok(jobs[i].rc);
            check_iov(dst + at, &v[i], 1, src, 6);
            at += v[i].iov_len;
        }
    }
    ss__copy_close(e);
    munmap(src, room);
    munmap(dst, (uint64_t)NJ * 4 * MiB / 16 + room);
    free(jobs);
    free(v);
    free(calls);
}

int main(void)
{
    const char *env = getenv("SS_TEST_SEED");
    if (env && *env)
        base_seed = strtoull(env, NULL, 0) | 1;
    fprintf(stderr, "t_copy: seed %#" PRIx64 " (SS_TEST_SEED=<n> to replay)\n", base_seed);

    /* probe: process_vm_readv of ourselves (a kernel without it, or a
     * seccomp filter that forbids it, is unavailable, not broken) */
    char a = 1, b = 0;
    struct iovec lv = { &b, 1 }, rv = { &a, 1 };
    ssize_t r = ss__sys_process_vm_readv(getpid(), &lv, 1, &rv, 1);
    if (r == -ENOSYS)
        return t_skip_program(NULL, "process_vm_readv: %s", t_strerror((int)r));
    int pfd = ss__sys_pidfd_open(getpid(), 0);
    if (pfd == -ENOSYS)
        return t_skip_program(NULL, "pidfd_open: %s", t_strerror(pfd));
    if (pfd >= 0)
        close(pfd);

    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_local),
        cmocka_unit_test(test_remote_sizes),
        cmocka_unit_test(test_remote_shapes),
        cmocka_unit_test(test_many_jobs),
        cmocka_unit_test(test_throughput),
        cmocka_unit_test(test_efault),
        cmocka_unit_test(test_esrch),
        cmocka_unit_test(test_eperm),
        cmocka_unit_test(test_close_queued),
        cmocka_unit_test(test_spin),
        cmocka_unit_test(test_spin_parallel),
        cmocka_unit_test(test_stress),
    };
    return t_run(tests, NULL, NULL);
}
