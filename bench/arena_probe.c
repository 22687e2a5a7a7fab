/* SPDX-License-Identifier: MIT */
/*
 * arena_probe: the candidate put paths for write-once arenas, measured side
 * by side in one run, before any of them is built. Not part of make check or
 * the suite: a diagnostic behind the arena design.
 *
 * For 64 KiB, 1 MiB, 64 MiB and (unless --max says less) 1 GiB, on 4 KiB
 * pages (shmem memfd) and 2 MiB pages (hugetlb memfd), each figure is the
 * median of --reps repetitions (default 7, at least 5; small sizes repeat
 * the op within a repetition), in GB/s and as two ratios taken in the same
 * pass: xmem, to memcpy of 256 MiB warm to warm (beyond the caches: the
 * baseline sealstore-bench's ratios use), and xsame, to memcpy of the same
 * size warm to warm (cache-resident at 64 KiB and 1 MiB). "best" is the
 * fastest repetition; spread is (max - min) / median.
 *   memcpy / memset      the references, and what a producer's fill costs
 *   today: ss_put, create+memset+seal+release   an embedded store
 *                        (SEALSTORE_HUGEPAGES=off or 2M, warm pool: the
 *                        probe waits for the populator between puts)
 *   fresh ...            a new memfd per object: memfd_create, mmap, first
 *                        touch; "in place" fills with memset, unmaps and adds
 *                        F_SEAL_WRITE (today's object segment, no store)
 *   recycled memcpy      the same copy into an already-faulted arena mapping
 *   pvr c=C xK           process_vm_readv from a second process (blocked in
 *                        recv on its socket) out of its warm anonymous 4 KiB
 *                        buffer into a pre-faulted arena sealed
 *                        SHRINK|GROW|FUTURE_WRITE|SEAL (checked: a new
 *                        writable mmap of it fails with EPERM); iovecs of C
 *                        bytes, K per call (UIO_MAXIOV is 1024)
 *   ..., 2 thr           the copy split in two halves, the second on a
 *                        persistent helper thread (a store's copy worker)
 *   producer fill        the second process memsets its warm staging area (a
 *                        shared memfd of the same page size), timed by it
 *   copy-on-seal         request to reply, per object: the producer fills
 *                        staging and asks for the seal, the store memcpys
 *                        staging -> arena and answers
 *   fixed costs          socket round trip, pidfd_open + check, a 64-byte
 *                        process_vm_readv, the hand-off to a copy thread
 *   batch                N payloads of 64 B..1 KiB inline in one 64 KiB
 *                        message, copied into a warm arena with a hash,
 *                        an index insert and a 128-byte record per object
 * The whole set runs twice: unpinned, then with every process and thread of
 * the pass on CPU 0 (sched_setaffinity in the pass's process, inherited).
 *
 *   gcc -O2 -Wall -o /tmp/arena_probe bench/arena_probe.c -Iinclude \
 *       -Lbuild/src/lib/.libs -lsealstore -lpthread
 *   LD_LIBRARY_PATH=build/src/lib/.libs /tmp/arena_probe             # all, as root
 *   LD_LIBRARY_PATH=build/src/lib/.libs /tmp/arena_probe --max 64M   # shorter
 *   LD_LIBRARY_PATH=build/src/lib/.libs /tmp/arena_probe --max 0 \
 *       --h2h 4M,16M,32M,64M        # fixed costs, batch, head to heads only
 * Options: --max SIZE (largest size, default 1G), --reps N, --hugepages N
 * (2 MiB pages to have free, default 3 x the largest size + 64 pages; as
 * root the pool is raised for the run and the exact previous
 * vm.nr_hugepages is written back at exit, on failure and on
 * SIGINT/SIGTERM/SIGHUP/SIGQUIT/SIGPIPE), --pin only (just the pinned
 * pass) or --pin none (just the unpinned one), --h2h SIZE[,SIZE...] (the
 * sizes of the head to head, default 64M, at most 8; 0: none): the main
 * contenders on both page sizes run interleaved, one op each per round in
 * a random order, 2 x --reps rounds, so that load from other processes hits
 * them alike; its ratios are to its own memcpy.
 * A full run takes a few minutes and needs about 6 GiB of RAM beside the
 * hugepages.
 */
#define _GNU_SOURCE
#include "sealstore.h"
#include <errno.h>
#include <fcntl.h>
#include <linux/memfd.h>
#include <pthread.h>
#include <sched.h>
#include <semaphore.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifndef F_SEAL_FUTURE_WRITE
#define F_SEAL_FUTURE_WRITE 0x0010
#endif
#ifndef MFD_HUGE_2MB
#define MFD_HUGE_2MB (21 << 26)
#endif
#define KiB 1024ull
#define MiB (1024ull * KiB)
#define GiB (1024ull * MiB)
#define HP_NR "/proc/sys/vm/nr_hugepages"
#define MAXREPS 64

static int g_reps = 7;
/* sizes of the interleaved head to head (default 64 MiB alone; none: 0) */
static uint64_t g_h2h[8] = {64 * 1024 * 1024};
static int g_nh2h = 1;
static const char *g_pass = "";

static void die(const char *what)
{
    fprintf(stderr, "arena_probe: %s: %s\n", what, strerror(errno));
    exit(1);
}

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static int cmpd(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* ------------------------------------------------------------ output */

struct fig {
    double med, best, spread; /* seconds per op; (max-min)/median */
};

static struct fig figure(double *t, int n)
{
    struct fig f;
    qsort(t, (size_t)n, sizeof(*t), cmpd);
    f.med = t[n / 2];
    f.best = t[0];
    f.spread = f.med > 0 ? (t[n - 1] - t[0]) / f.med : 0;
    return f;
}

static double g_ref; /* memcpy seconds per op at the current size */
static double g_bw;  /* memcpy GB/s of 256 MiB, beyond the caches (the bench's baseline) */

static const char *szname(uint64_t s, char *b, size_t n)
{
    if (s >= GiB && s % GiB == 0)
        snprintf(b, n, "%lluG", (unsigned long long)(s / GiB));
    else if (s >= MiB && s % MiB == 0)
        snprintf(b, n, "%lluM", (unsigned long long)(s / MiB));
    else if (s >= KiB && s % KiB == 0)
        snprintf(b, n, "%lluK", (unsigned long long)(s / KiB));
    else
        snprintf(b, n, "%llu", (unsigned long long)s);
    return b;
}

/* one row: bytes moved per op -> GB/s, ratio to the 256 MiB memcpy (xmem)
 * and to memcpy of the same size (xsame) */
static void row(uint64_t size, const char *pages, const char *what, struct fig f)
{
    char b[16];
    double gbs = (double)size / f.med / 1e9;
    printf("%-8s %5s %-3s %-40s %6.2f GB/s %5.2fx %5.2fx best %6.2f %10.1f us spread %3.0f%%\n",
           g_pass, szname(size, b, sizeof(b)), pages, what, gbs, g_bw > 0 ? gbs / g_bw : 0,
           g_ref > 0 ? g_ref / f.med : 0, (double)size / f.best / 1e9, f.med * 1e6,
           f.spread * 100);
    fflush(stdout);
}

static void row_us(const char *what, struct fig f)
{
    printf("%-8s %5s %-3s %-40s %6.2f us/op %14s best %6.2f us %13s spread %3.0f%%\n", g_pass,
           "-", "-", what, f.med * 1e6, "", f.best * 1e6, "", f.spread * 100);
    fflush(stdout);
}

static void row_skip(uint64_t size, const char *pages, const char *what, const char *why)
{
    char b[16];
    printf("%-8s %5s %-3s %-40s skipped: %s\n", g_pass, szname(size, b, sizeof(b)), pages, what,
           why);
    fflush(stdout);
}

/* Each rep runs `iters` ops; op() returns the seconds it timed itself (so
 * setup between ops stays out), negative to give up. */
typedef double (*op_fn)(void *ctx, uint64_t i);

static int measure(op_fn op, void *ctx, uint64_t iters, struct fig *out)
{
    double t[MAXREPS];
    uint64_t k = 0;

    if (op(ctx, k++) < 0) /* warm-up */
        return -1;
    for (int r = 0; r < g_reps; r++) {
        double s = 0, d;
        for (uint64_t i = 0; i < iters; i++) {
            if ((d = op(ctx, k++)) < 0)
                return -1;
            s += d;
        }
        t[r] = s / (double)iters;
    }
    *out = figure(t, g_reps);
    return 0;
}

static uint64_t iters_for(uint64_t size, uint64_t budget)
{
    return size >= budget ? 1 : budget / size;
}

/* ------------------------------------------------------------ memory */

static char *anon(uint64_t size)
{
    char *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        die("mmap anonymous");
    /* a fork (the second process) must not turn these pages copy-on-write */
    madvise(p, size, MADV_DONTFORK);
    memset(p, 0x5a, size);
    return p;
}

static uint64_t pagesz(int huge) { return huge ? 2 * MiB : 4 * KiB; }
static uint64_t rounded(uint64_t size, int huge)
{
    return (size + pagesz(huge) - 1) & ~(pagesz(huge) - 1);
}

/* -errno, or an fd of a memfd of `size` (rounded to the page) */
static int memfd_of(uint64_t size, int huge)
{
    unsigned fl = MFD_CLOEXEC | MFD_ALLOW_SEALING | (huge ? MFD_HUGETLB | MFD_HUGE_2MB : 0);
    int fd = memfd_create("arena_probe", fl);
    if (fd < 0)
        return -errno;
    if (ftruncate(fd, (off_t)rounded(size, huge)) < 0) {
        int e = -errno;
        close(fd);
        return e;
    }
    return fd;
}

/* a writable, faulted mapping of a fresh memfd; NULL when hugetlb has no
 * pages (mmap ENOMEM) */
static char *mapped_memfd(uint64_t size, int huge, int *fdp)
{
    int fd = memfd_of(size, huge);
    char *p;
    if (fd < 0)
        return NULL;
    p = mmap(NULL, rounded(size, huge), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd,
             0);
    if (p == MAP_FAILED) {
        close(fd);
        return NULL;
    }
    madvise(p, rounded(size, huge), MADV_DONTFORK); /* as the store maps its segments */
    memset(p, 0x11, size); /* faulted and warm */
    *fdp = fd;
    return p;
}

/* Seal the arena as the store seals its segments at birth, and prove that
 * no new writable mapping can be made: 0 or -1. */
static int seal_arena(int fd, uint64_t size, int huge)
{
    int want = F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_FUTURE_WRITE | F_SEAL_SEAL;
    void *w;
    if (fcntl(fd, F_ADD_SEALS, want) < 0)
        die("F_ADD_SEALS arena");
    if ((fcntl(fd, F_GET_SEALS) & want) != want)
        return -1;
    w = mmap(NULL, rounded(size, huge), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (w != MAP_FAILED || errno != EPERM) {
        fprintf(stderr, "arena_probe: writable mmap of a sealed arena: %s\n",
                w == MAP_FAILED ? strerror(errno) : "succeeded");
        return -1;
    }
    return 0;
}

/* ------------------------------------------------------ copy helpers */

struct job {
    int pvr;            /* 0: memcpy src->dst; 1: process_vm_readv pid:src->dst */
    pid_t pid;
    char *dst;
    const char *src;
    uint64_t len, chunk;
    int per_call;       /* iovecs per process_vm_readv call */
    int fail;
};

static void pvr_copy(struct job *j)
{
    struct iovec l[1024], r[1024];
    uint64_t off = 0;

    while (off < j->len) {
        int n = 0;
        uint64_t o = off;
        for (; n < j->per_call && o < j->len; n++) {
            uint64_t c = j->len - o < j->chunk ? j->len - o : j->chunk;
            l[n].iov_base = j->dst + o;
            l[n].iov_len = c;
            r[n].iov_base = (void *)(j->src + o);
            r[n].iov_len = c;
            o += c;
        }
        ssize_t got = process_vm_readv(j->pid, l, (unsigned long)n, r, (unsigned long)n, 0);
        if (got <= 0) {
            j->fail = got < 0 ? errno : EIO;
            return;
        }
        off += (uint64_t)got; /* a short read resumes at the byte it stopped */
    }
}

static void do_job(struct job *j)
{
    if (j->pvr)
        pvr_copy(j);
    else
        memcpy(j->dst, j->src, j->len);
}

/* One persistent helper thread, as a store's copy worker would be. */
static struct {
    pthread_t t;
    sem_t go, done;
    struct job *job;
    int quit;
} g_h;

static void *helper_main(void *arg)
{
    (void)arg;
    for (;;) {
        while (sem_wait(&g_h.go) < 0)
            ;
        if (g_h.quit)
            return NULL;
        do_job(g_h.job);
        sem_post(&g_h.done);
    }
}

static void helper_start(void)
{
    sem_init(&g_h.go, 0, 0);
    sem_init(&g_h.done, 0, 0);
    g_h.quit = 0;
    if (pthread_create(&g_h.t, NULL, helper_main, NULL))
        die("pthread_create");
}

static void helper_stop(void)
{
    g_h.quit = 1;
    sem_post(&g_h.go);
    pthread_join(g_h.t, NULL);
}

/* run j split in `threads` (1 or 2) parts, cut at a 64-byte boundary */
static int copy_split(const struct job *j, int threads)
{
    struct job a = *j, b = *j;
    if (threads < 2 || j->len < 128) {
        do_job(&a);
        return a.fail;
    }
    a.len = (j->len / 2) & ~63ull;
    b.dst += a.len;
    b.src += a.len;
    b.len -= a.len;
    g_h.job = &b;
    sem_post(&g_h.go);
    do_job(&a);
    while (sem_wait(&g_h.done) < 0)
        ;
    return a.fail ? a.fail : b.fail;
}

/* --------------------------------------------- the second process */

/* Commands on a SOCK_SEQPACKET pair; the child blocks in recv between them
 * (as a client blocked in a put). */
enum { C_ADDR = 'A', C_PING = 'P', C_FILL = 'F', C_BATCH = 'M', C_QUIT = 'Q' };
#define BATCH_MSG (64 * KiB)

struct peer {
    pid_t pid;
    int sock;
    uint64_t src; /* its warm source buffer */
};

static void child_main(int s, uint64_t size, char *staging)
{
    char *src = anon(size), cmd[16];
    static char msg[BATCH_MSG];
    uint64_t a = (uint64_t)(uintptr_t)src;

    prctl(PR_SET_PDEATHSIG, SIGKILL);
    memset(msg, 0x33, sizeof(msg));
    for (;;) {
        ssize_t n = recv(s, cmd, sizeof(cmd), 0);
        if (n <= 0 || cmd[0] == C_QUIT)
            _exit(0);
        switch (cmd[0]) {
        case C_ADDR:
            send(s, &a, sizeof(a), 0);
            break;
        case C_PING:
            send(s, cmd, 1, 0);
            break;
        case C_FILL: { /* producer fills its staging area, then asks for the seal */
            double t0 = now(), dt;
            memset(staging, cmd[1], size);
            dt = now() - t0;
            send(s, &dt, sizeof(dt), 0);
            break;
        }
        case C_BATCH: /* one batch request: 64 KiB of inline payloads */
            send(s, msg, sizeof(msg), 0);
            break;
        }
    }
}

static void peer_start(struct peer *p, uint64_t size, int staging_fd, uint64_t staging_len)
{
    int sv[2], big = 1 << 20;
    char *staging = NULL;

    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0)
        die("socketpair");
    for (int i = 0; i < 2; i++) {
        setsockopt(sv[i], SOL_SOCKET, SO_SNDBUF, &big, sizeof(big));
        setsockopt(sv[i], SOL_SOCKET, SO_RCVBUF, &big, sizeof(big));
    }
    p->pid = fork();
    if (p->pid < 0)
        die("fork");
    if (p->pid == 0) {
        close(sv[0]);
        if (staging_fd >= 0) {
            /* the producer's own mapping of the staging area, warm */
            staging = mmap(NULL, staging_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE,
                           staging_fd, 0);
            if (staging == MAP_FAILED)
                _exit(3);
            memset(staging, 1, size);
        }
        child_main(sv[1], size, staging);
    }
    close(sv[1]);
    p->sock = sv[0];
    char c = C_ADDR;
    if (send(p->sock, &c, 1, 0) != 1 || recv(p->sock, &p->src, sizeof(p->src), 0) != 8)
        die("peer address");
}

static void peer_stop(struct peer *p)
{
    char c = C_QUIT;
    send(p->sock, &c, 1, 0);
    close(p->sock);
    waitpid(p->pid, NULL, 0);
}

static void rt(int s, char c)
{
    char b[8];
    b[0] = c;
    b[1] = (char)(c + 1);
    if (send(s, b, 2, 0) != 2 || recv(s, b, sizeof(b), 0) < 1)
        die("round trip");
}

/* ------------------------------------------------------------- ops */

struct ctx {
    uint64_t size;
    int huge;
    char *src, *dst;
    struct job job;
    int threads;
    struct peer *peer;
    ss_client *c;
    int fail;
};

static double op_memcpy(void *v, uint64_t i)
{
    struct ctx *c = v;
    double t0 = now();
    (void)i;
    memcpy(c->dst, c->src, c->size);
    return now() - t0;
}

static double op_memset(void *v, uint64_t i)
{
    struct ctx *c = v;
    double t0 = now();
    memset(c->dst, (int)(i & 0xff), c->size);
    return now() - t0;
}

/* A new memfd of the ctx's size and page, mapped writable: NULL when
 * there is no memory of that kind. hugetlb is populated here (an empty pool
 * would SIGBUS at the first touch instead), which faults and zeroes exactly
 * as a first touch would. */
static char *fresh_map(const struct ctx *c, int seal_size, int *fdp)
{
    uint64_t len = rounded(c->size, c->huge);
    int fd = memfd_of(c->size, c->huge);
    char *p;
    if (fd < 0)
        return NULL;
    if (seal_size)
        fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW);
    p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p != MAP_FAILED && c->huge && madvise(p, len, MADV_POPULATE_WRITE) < 0) {
        munmap(p, len);
        p = MAP_FAILED;
    }
    if (p == MAP_FAILED) {
        close(fd);
        return NULL;
    }
    *fdp = fd;
    return p;
}

/* A fresh memfd per object. inplace 0: mmap + first-touch copy (what every
 * put pays today). inplace 1: today's per-object sealed memfd written in
 * place: create, map, fill, unmap, F_SEAL_WRITE (the seal the store adds). */
static double fresh_op(struct ctx *c, uint64_t i, int inplace)
{
    uint64_t len = rounded(c->size, c->huge);
    double t0 = now(), t1;
    int fd;
    char *p = fresh_map(c, inplace, &fd);
    if (!p)
        return -1;
    if (inplace)
        memset(p, (int)(i & 0xff), c->size);
    else
        memcpy(p, c->src, c->size);
    munmap(p, len);
    if (inplace && fcntl(fd, F_ADD_SEALS, F_SEAL_WRITE | F_SEAL_SEAL) < 0)
        die("F_SEAL_WRITE in place");
    t1 = now();
    close(fd);
    return t1 - t0;
}

static double op_fresh_copy(void *v, uint64_t i) { return fresh_op(v, i, 0); }
static double op_fresh_inplace(void *v, uint64_t i) { return fresh_op(v, i, 1); }

static double op_job(void *v, uint64_t i)
{
    struct ctx *c = v;
    double t0 = now();
    (void)i;
    if ((c->fail = copy_split(&c->job, c->threads)) != 0)
        return -1;
    return now() - t0;
}

/* copy-on-seal, request to reply: the producer fills staging and asks for
 * the seal; the store copies staging -> arena and answers */
static double op_cos(void *v, uint64_t i)
{
    struct ctx *c = v;
    char b[8] = {C_FILL, (char)(i & 0x7f)};
    double t0 = now();
    if (send(c->peer->sock, b, 2, 0) != 2 || recv(c->peer->sock, b, sizeof(b), 0) != 8)
        return -1;
    if ((c->fail = copy_split(&c->job, c->threads)) != 0)
        return -1;
    rt(c->peer->sock, C_PING); /* the answer; the producer's echo ends the put */
    return now() - t0;
}

/* the producer's fill of its staging area alone, as it timed it */
static double op_fill(void *v, uint64_t i)
{
    struct ctx *c = v;
    char b[8] = {C_FILL, (char)(i & 0x7f)};
    double dt;
    if (send(c->peer->sock, b, 2, 0) != 2 || recv(c->peer->sock, &dt, sizeof(dt), 0) != 8)
        return -1;
    return dt;
}

static double op_ping(void *v, uint64_t i)
{
    struct ctx *c = v;
    double t0 = now();
    (void)i;
    rt(c->peer->sock, C_PING);
    return now() - t0;
}

static double op_pidfd(void *v, uint64_t i)
{
    struct ctx *c = v;
    double t0 = now();
    int fd = (int)syscall(SYS_pidfd_open, c->peer->pid, 0);
    (void)i;
    if (fd < 0 || syscall(SYS_pidfd_send_signal, fd, 0, NULL, 0) < 0)
        return -1;
    close(fd);
    return now() - t0;
}

static double op_pidfd_check(void *v, uint64_t i)
{
    struct ctx *c = v;
    static int fd = -1;
    double t0;
    (void)i;
    if (fd < 0 && (fd = (int)syscall(SYS_pidfd_open, c->peer->pid, 0)) < 0)
        return -1;
    t0 = now();
    if (syscall(SYS_pidfd_send_signal, fd, 0, NULL, 0) < 0)
        return -1;
    return now() - t0;
}

/* ------------------------------------------------- today's path (store) */

static void store_wait(ss_client *cl, uint64_t need)
{
    ss_stats st;
    for (int i = 0; i < 400; i++) { /* at most 4 s */
        if (ss_stats_get(cl, &st) < 0 || st.pool_ready_bytes >= need)
            return;
        usleep(10000);
    }
}

static void make_id(ss_id *id, uint64_t i)
{
    memset(id, 0, sizeof(*id));
    snprintf((char *)id->b, sizeof(id->b), "ap%d-%llu", (int)getpid(), (unsigned long long)i);
}

static double op_ss_put(void *v, uint64_t i)
{
    struct ctx *c = v;
    ss_id id;
    double t0, t1;
    make_id(&id, i);
    if (c->size > 64 * KiB)
        store_wait(c->c, c->size);
    t0 = now();
    if ((c->fail = ss_put(c->c, &id, c->src, c->size, NULL, 0)) < 0)
        return -1;
    t1 = now();
    if ((c->fail = ss_delete(c->c, &id)) < 0)
        return -1;
    return t1 - t0;
}

static double op_ss_create(void *v, uint64_t i)
{
    struct ctx *c = v;
    ss_id id;
    void *data;
    double t0, t1;
    make_id(&id, i);
    if (c->size > 64 * KiB)
        store_wait(c->c, c->size);
    t0 = now();
    if ((c->fail = ss_create(c->c, &id, c->size, NULL, 0, &data)) < 0)
        return -1;
    memset(data, (int)(i & 0xff), c->size);
    if ((c->fail = ss_seal(c->c, &id)) < 0)
        return -1;
    ss_release(c->c, &id);
    t1 = now();
    if ((c->fail = ss_delete(c->c, &id)) < 0)
        return -1;
    return t1 - t0;
}

static void store_rows(struct ctx *c, const char *pg)
{
    char dir[] = "/tmp/arena_probe.XXXXXX", sock[128], v[32], b[16];
    struct fig f;
    uint64_t it = iters_for(c->size, 16 * MiB), pool = c->size < 64 * MiB ? 64 * MiB : c->size;

    if (!mkdtemp(dir))
        die("mkdtemp");
    snprintf(sock, sizeof(sock), "%s/s.sock", dir);
    if (ss_option_set(SS_OPT_HUGEPAGES, c->huge ? "2M" : "off") < 0 ||
        ss_option_set(SS_OPT_POOL_CLASSES, szname(c->size < MiB ? MiB : c->size, b, sizeof(b))) < 0 ||
        ss_option_set(SS_OPT_POOL_SIZE, szname(pool, v, sizeof(v))) < 0) {
        row_skip(c->size, pg, "ss_put (embedded store)", "ss_option_set failed");
        rmdir(dir);
        return;
    }
    int rc = ss_connect(sock, SS_CONNECT_EMBED, &c->c);
    if (rc < 0) {
        row_skip(c->size, pg, "ss_put (embedded store)", strerror(-rc));
        rmdir(dir);
        return;
    }
    store_wait(c->c, pool); /* the populator done before anything is timed */
    if (measure(op_ss_put, c, it, &f) == 0)
        row(c->size, pg, "today: ss_put (warm pool)", f);
    else
        row_skip(c->size, pg, "today: ss_put", strerror(-c->fail));
    if (measure(op_ss_create, c, it, &f) == 0)
        row(c->size, pg, "today: create+memset+seal+release", f);
    else
        row_skip(c->size, pg, "today: create+memset+seal+release", strerror(-c->fail));
    ss_disconnect(c->c);
    c->c = NULL;
    unlink(sock);
    snprintf(sock, sizeof(sock), "%s/s.sock.lock", dir);
    unlink(sock);
    rmdir(dir);
}

/* -------------------------------------------------------- per size */

static void size_rows(uint64_t size, char *src, char *ref)
{
    struct ctx c = {.size = size, .src = src, .dst = ref, .threads = 1};
    uint64_t it = iters_for(size, 64 * MiB);
    struct fig f;
    static const struct { uint64_t chunk; int per_call; const char *name; } ch[] = {
        {4 * KiB, 1024, "c=4K x1024"},  {64 * KiB, 1, "c=64K x1"},
        {64 * KiB, 1024, "c=64K x1024"}, {1 * MiB, 1, "c=1M x1"},
        {1 * MiB, 1024, "c=1M x1024"},   {~0ull, 1, "one iovec"},
    };

    g_ref = 0;
    measure(op_memcpy, &c, it, &f);
    g_ref = f.med;
    row(size, "4K", "memcpy warm->warm (reference)", f);
    measure(op_memset, &c, it, &f);
    row(size, "4K", "memset warm", f);

    for (int huge = 0; huge < 2; huge++) {
        const char *pg = huge ? "2M" : "4K";
        int afd, sfd;
        char *arena, *staging, name[80];
        struct peer peer;

        c.huge = huge;
        c.dst = NULL;
        store_rows(&c, pg);

        if (measure(op_fresh_inplace, &c, it, &f) == 0)
            row(size, pg, "fresh memfd, memset in place, seal", f);
        else
            row_skip(size, pg, "fresh memfd in place", "no memory of this kind");
        if (measure(op_fresh_copy, &c, it, &f) == 0)
            row(size, pg, "fresh memfd + mmap + first-touch memcpy", f);
        else
            row_skip(size, pg, "fresh memfd + first-touch memcpy", "no memory of this kind");

        arena = mapped_memfd(size, huge, &afd);
        staging = arena ? mapped_memfd(size, huge, &sfd) : NULL;
        if (!arena || !staging) {
            row_skip(size, pg, "arena rows", "no hugepages for arena + staging");
            if (arena) {
                munmap(arena, rounded(size, huge));
                close(afd);
            }
            continue;
        }
        if (seal_arena(afd, size, huge) < 0) {
            row_skip(size, pg, "arena rows", "the arena seal did not hold");
            exit(1);
        }
        c.dst = arena;
        measure(op_memcpy, &c, it, &f);
        row(size, pg, "recycled (faulted, sealed arena) memcpy", f);
        c.job = (struct job){.dst = arena, .src = src, .len = size};
        c.threads = 2;
        measure(op_job, &c, it, &f);
        row(size, pg, "recycled memcpy, 2 thr", f);

        peer_start(&peer, size, sfd, rounded(size, huge));
        c.peer = &peer;
        for (size_t k = 0; k < sizeof(ch) / sizeof(ch[0]); k++) {
            if (ch[k].chunk != ~0ull && ch[k].chunk > size)
                continue;
            if (ch[k].chunk == 4 * KiB && size > 64 * MiB)
                continue; /* 4K iovecs at 1G: 256k iovecs, known slow by 64M */
            c.job = (struct job){.pvr = 1, .pid = peer.pid, .dst = arena,
                                 .src = (const char *)(uintptr_t)peer.src, .len = size,
                                 .chunk = ch[k].chunk, .per_call = ch[k].per_call};
            for (int th = 1; th <= 2; th++) {
                c.threads = th;
                snprintf(name, sizeof(name), "pvr %s%s", ch[k].name, th == 2 ? ", 2 thr" : "");
                if (measure(op_job, &c, it, &f) == 0)
                    row(size, pg, name, f);
                else
                    row_skip(size, pg, name, strerror(c.fail));
            }
        }
        measure(op_fill, &c, it, &f);
        row(size, pg, "producer fill of staging (memset, alone)", f);
        c.job = (struct job){.dst = arena, .src = staging, .len = size};
        for (int th = 1; th <= 2; th++) {
            c.threads = th;
            measure(op_cos, &c, it, &f);
            row(size, pg, th == 1 ? "copy-on-seal (fill+rtt+memcpy)" :
                                    "copy-on-seal (fill+rtt+memcpy), 2 thr", f);
        }
        c.threads = 1;
        peer_stop(&peer);
        munmap(staging, rounded(size, huge));
        close(sfd);
        munmap(arena, rounded(size, huge));
        close(afd);
    }
}

/* ------------------------------------------------ fixed costs, batch */

static void fixed_rows(void)
{
    struct peer peer;
    struct ctx c = {.size = 64};
    struct fig f;
    char *dst = anon(4096);

    peer_start(&peer, 4096, -1, 0);
    c.peer = &peer;
    measure(op_ping, &c, 2000, &f);
    row_us("round trip (SEQPACKET ping-pong)", f);
    measure(op_pidfd, &c, 2000, &f);
    row_us("pidfd_open + send_signal(0) + close", f);
    measure(op_pidfd_check, &c, 2000, &f);
    row_us("pidfd check only (kept pidfd)", f);
    c.job = (struct job){.pvr = 1, .pid = peer.pid, .dst = dst,
                         .src = (const char *)(uintptr_t)peer.src, .len = 64, .chunk = 64,
                         .per_call = 1};
    c.threads = 1;
    measure(op_job, &c, 2000, &f);
    row_us("process_vm_readv of 64 B", f);
    c.threads = 2;
    c.job.len = 4096;
    c.job.chunk = 4096;
    measure(op_job, &c, 2000, &f);
    row_us("pvr 4 KiB split over 2 threads (hand-off)", f);
    peer_stop(&peer);
    munmap(dst, 4096);
}

/* Simulated batch put: a 64 KiB request of n payloads of `obj` bytes each,
 * copied into a warm arena at 64-byte aligned offsets, with the per-object
 * bookkeeping a store must do (an id hash, an open-addressing index insert
 * of a 64-byte entry, a bump allocation). */
struct ent {
    uint8_t id[20];
    uint32_t hash;
    uint64_t off, size, gen;
    uint8_t pad[16];
};
#define TBL (1u << 20)
#define NREC (1u << 16) /* records live at once: older ones are freed */
static void *g_rec[NREC];

static uint32_t fnv(const uint8_t *p, size_t n)
{
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++)
        h = (h ^ p[i]) * 16777619u;
    return h;
}

static double batch_once(char *msg, int n, uint64_t obj, char *arena, uint64_t alen,
                         struct ent *tbl, uint64_t *cursor, uint64_t *seq, struct peer *peer)
{
    double t0 = now();
    if (peer) { /* the request travels: 64 KiB through the socket */
        char c = C_BATCH;
        if (send(peer->sock, &c, 1, 0) != 1 || recv(peer->sock, msg, BATCH_MSG, 0) <= 0)
            return -1;
    }
    for (int k = 0; k < n; k++) {
        uint8_t id[20] = {0};
        uint64_t s = (*seq)++, a = (obj + 63) & ~63ull;
        memcpy(id, &s, sizeof(s));
        uint32_t h = fnv(id, sizeof(id));
        uint32_t slot = h & (TBL - 1);
        while (tbl[slot].size && tbl[slot].gen == 1)
            slot = (slot + 1) & (TBL - 1);
        if (*cursor + a > alen)
            *cursor = 0;
        memcpy(arena + *cursor, msg + 64 + (uint64_t)k * obj, obj);
        memcpy(tbl[slot].id, id, sizeof(id));
        tbl[slot].hash = h;
        tbl[slot].off = *cursor;
        tbl[slot].size = obj;
        tbl[slot].gen = 0; /* never "live": the table does not fill up */
        *cursor += a;
        /* the object's record (the store keeps ~128 B per object) */
        uint64_t r = s & (NREC - 1);
        free(g_rec[r]);
        if (!(g_rec[r] = malloc(128)))
            return -1;
        memset(g_rec[r], 0, 128);
    }
    if (peer)
        rt(peer->sock, C_PING); /* the answer */
    return now() - t0;
}

static void batch_rows(void)
{
    uint64_t alen = 64 * MiB, cursor = 0, seq = 0;
    int afd;
    char *arena = mapped_memfd(alen, 0, &afd), *msg = anon(BATCH_MSG);
    struct ent *tbl = (struct ent *)anon(TBL * sizeof(struct ent));
    struct peer peer;
    static const uint64_t objs[] = {64, 256, 1024};

    if (!arena)
        die("batch arena");
    peer_start(&peer, 4096, -1, 0);
    for (int w = 0; w < 2; w++) {
        for (size_t k = 0; k < 3; k++) {
            int n = (int)((BATCH_MSG - 64) / objs[k]);
            double t[MAXREPS];
            char name[80];
            for (int r = 0; r < g_reps; r++) {
                double s = 0;
                for (int i = 0; i < 200; i++)
                    s += batch_once(msg, n, objs[k], arena, alen, tbl, &cursor, &seq,
                                    w ? &peer : NULL);
                t[r] = s / 200;
            }
            struct fig f = figure(t, g_reps);
            snprintf(name, sizeof(name), "batch %4llu B x %4d %s", (unsigned long long)objs[k], n,
                     w ? "(socket+copy+index)" : "(copy+index only)");
            printf("%-8s %5s %-3s %-40s %6.2f Mobj/s %5.2f GB/s best %5.2f Mobj/s %7.1f us "
                   "spread %3.0f%%\n",
                   g_pass, "64K", "4K", name, n / f.med / 1e6,
                   (double)n * (double)objs[k] / f.med / 1e9, n / f.best / 1e6, f.med * 1e6,
                   f.spread * 100);
        }
    }
    fflush(stdout);
    peer_stop(&peer);
    munmap(arena, alen);
    close(afd);
    munmap(msg, BATCH_MSG);
    munmap(tbl, TBL * sizeof(struct ent));
}

/* ------------------------------------------------------------- pass */

/* Head to head at one size: the contenders run interleaved, one op each
 * per round, so a neighbour's burst of load hits all of them alike.
 * Ratios here are to the memcpy contender (first) of the same rounds. */
#define NDUEL 16
struct duel {
    const char *name, *pg;
    op_fn op;
    struct ctx c;
    double t[MAXREPS];
};

static void duel_rows(uint64_t size)
{
    struct duel d[NDUEL];
    struct peer peer[2];
    char *src = anon(size), *ref = anon(size), *arena[2], *staging[2];
    int afd[2], sfd[2], have[2] = {0, 0}, n = 0;
    int reps = g_reps * 2 > MAXREPS ? MAXREPS : g_reps * 2;

    for (int h = 0; h < 2; h++) {
        arena[h] = mapped_memfd(size, h, &afd[h]);
        staging[h] = arena[h] ? mapped_memfd(size, h, &sfd[h]) : NULL;
        if (!arena[h] || !staging[h]) { /* e.g. the shared hugepage pool ran dry */
            row_skip(size, h ? "2M" : "4K", "head to head", "no memory of this kind");
            if (arena[h]) {
                munmap(arena[h], rounded(size, h));
                close(afd[h]);
            }
            continue;
        }
        if (seal_arena(afd[h], size, h) < 0)
            exit(1);
        peer_start(&peer[h], size, sfd[h], rounded(size, h));
        have[h] = 1;
    }
#define ADD(nm, p, fn, ...) d[n++] = (struct duel){.name = nm, .pg = p, .op = fn, \
    .c = {.size = size, .src = src, __VA_ARGS__}}
    ADD("H2H memcpy warm->warm", "4K", op_memcpy, .dst = ref);
    ADD("H2H memset warm (trusted in place)", "4K", op_memset, .dst = ref);
    for (int h = 0; h < 2; h++) {
        const char *pg = h ? "2M" : "4K";
        if (!have[h])
            continue;
        struct job pv = {.pvr = 1, .pid = peer[h].pid, .dst = arena[h],
                         .src = (const char *)(uintptr_t)peer[h].src, .len = size,
                         .chunk = MiB, .per_call = 1024};
        struct job cp = {.dst = arena[h], .src = staging[h], .len = size};
        ADD("H2H fresh memfd, memset in place, seal", pg, op_fresh_inplace, .huge = h);
        ADD("H2H recycled arena memcpy", pg, op_memcpy, .dst = arena[h], .huge = h);
        ADD("H2H pvr c=1M x1024", pg, op_job, .job = pv, .huge = h);
        ADD("H2H pvr c=1M x1024, 2 thr", pg, op_job, .job = pv, .huge = h, .threads = 2);
        ADD("H2H copy-on-seal", pg, op_cos, .job = cp, .peer = &peer[h], .huge = h);
        ADD("H2H copy-on-seal, 2 thr", pg, op_cos, .job = cp, .peer = &peer[h], .huge = h,
            .threads = 2);
    }
#undef ADD
    for (int i = 0; i < n; i++) /* warm-up */
        if (d[i].op(&d[i].c, 0) < 0)
            d[i].op = NULL;
    /* a fresh random order every round: what runs just before a contender
     * (and leaves the caches and TLB warm or cold for it) varies */
    srand(1);
    for (int r = 0; r < reps; r++) {
        int ord[NDUEL];
        for (int i = 0; i < n; i++) {
            int j = rand() % (i + 1);
            ord[i] = ord[j];
            ord[j] = i;
        }
        for (int k = 0; k < n; k++) {
            struct duel *e = &d[ord[k]];
            if (e->op && (e->t[r] = e->op(&e->c, (uint64_t)r + 1)) < 0)
                e->op = NULL;
        }
    }
    g_ref = 0;
    for (int i = 0; i < n; i++) {
        if (!d[i].op) {
            row_skip(size, d[i].pg, d[i].name, "an op failed");
            continue;
        }
        struct fig f = figure(d[i].t, reps);
        if (i == 0)
            g_ref = f.med;
        row(size, d[i].pg, d[i].name, f);
    }
    for (int h = 0; h < 2; h++) {
        if (!have[h])
            continue;
        peer_stop(&peer[h]);
        munmap(staging[h], rounded(size, h));
        munmap(arena[h], rounded(size, h));
        close(sfd[h]);
        close(afd[h]);
    }
    munmap(src, size);
    munmap(ref, size);
}

/* the bench's memcpy baseline: 256 MiB, warm to warm */
static void big_memcpy(const char *name, int set)
{
    struct ctx c = {.size = 256 * MiB, .src = anon(256 * MiB), .dst = anon(256 * MiB)};
    struct fig f;
    memset(c.dst, 1, c.size);
    measure(op_memcpy, &c, 1, &f);
    g_ref = f.med;
    if (set)
        g_bw = (double)c.size / f.med / 1e9;
    row(c.size, "4K", name, f);
    munmap(c.src, c.size);
    munmap(c.dst, c.size);
}

static int run_pass(int pinned, uint64_t max)
{
    static const uint64_t sizes[] = {64 * KiB, 1 * MiB, 64 * MiB, 1 * GiB};

    g_pass = pinned ? "cpu0" : "unpinned";
    if (pinned) {
        cpu_set_t set;
        CPU_ZERO(&set);
        CPU_SET(0, &set);
        if (sched_setaffinity(0, sizeof(set), &set) < 0)
            die("sched_setaffinity");
    }
    helper_start();
    big_memcpy("memcpy warm->warm, beyond caches (xmem)", 1);
    fixed_rows();
    batch_rows();
    for (int i = 0; i < g_nh2h; i++)
        duel_rows(g_h2h[i]);
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]) && sizes[i] <= max; i++) {
        char *src = anon(sizes[i]), *ref = anon(sizes[i]);
        size_rows(sizes[i], src, ref);
        munmap(src, sizes[i]);
        munmap(ref, sizes[i]);
    }
    big_memcpy("memcpy warm->warm, beyond caches, again", 0);
    helper_stop();
    return 0;
}

/* ------------------------------------------------------ hugepages */

static char g_hp_prev[32];
static int g_hp_raised;
static pid_t g_worker;

static int write_str(const char *path, const char *s)
{
    int fd = open(path, O_WRONLY | O_CLOEXEC), rc = 0;
    if (fd < 0)
        return -errno;
    if (write(fd, s, strlen(s)) < 0)
        rc = -errno;
    close(fd);
    return rc;
}

static void hp_restore(void)
{
    if (g_hp_raised) { /* async-signal-safe */
        g_hp_raised = 0;
        write_str(HP_NR, g_hp_prev);
    }
}

static void on_signal(int sig)
{
    if (g_worker > 0)
        kill(g_worker, SIGKILL);
    hp_restore();
    signal(sig, SIG_DFL);
    raise(sig);
}

static uint64_t read_u64(const char *path)
{
    char b[32] = "";
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    ssize_t n = read(fd, b, sizeof(b) - 1);
    close(fd);
    return n > 0 ? strtoull(b, NULL, 10) : 0;
}

static void hp_reserve(uint64_t want)
{
    const char *fr = "/sys/kernel/mm/hugepages/hugepages-2048kB/free_hugepages";
    uint64_t nr = read_u64(HP_NR), fre = read_u64(fr);
    char num[32];

    printf("hugepages: pool %llu, free %llu, want %llu free\n", (unsigned long long)nr,
           (unsigned long long)fre, (unsigned long long)want);
    if (fre >= want)
        return;
    snprintf(g_hp_prev, sizeof(g_hp_prev), "%llu", (unsigned long long)nr);
    snprintf(num, sizeof(num), "%llu", (unsigned long long)(nr + want - fre));
    g_hp_raised = 1;
    atexit(hp_restore);
    /* SIGPIPE too: `arena_probe | head` must not leave the pool raised */
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    signal(SIGHUP, on_signal);
    signal(SIGQUIT, on_signal);
    signal(SIGPIPE, on_signal);
    int rc = write_str(HP_NR, num);
    if (rc < 0) {
        g_hp_raised = 0;
        printf("hugepages: cannot raise %s (%s): 2M rows may be skipped\n", HP_NR,
               strerror(-rc));
        return;
    }
    printf("hugepages: pool raised %s -> %llu (now %llu free); restored to %s at exit\n",
           g_hp_prev, (unsigned long long)read_u64(HP_NR), (unsigned long long)read_u64(fr),
           g_hp_prev);
}

static uint64_t parse_size(const char *s)
{
    char *e;
    uint64_t v = strtoull(s, &e, 10);
    if (*e == 'K' || *e == 'k')
        v *= KiB;
    else if (*e == 'M' || *e == 'm')
        v *= MiB;
    else if (*e == 'G' || *e == 'g')
        v *= GiB;
    return v;
}

int main(int argc, char **argv)
{
    uint64_t max = GiB, hp = 0;
    int passes[2] = {1, 1}, status, bad = 0;

    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--max"))
            max = parse_size(argv[i + 1]);
        else if (!strcmp(argv[i], "--reps"))
            g_reps = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--hugepages"))
            hp = strtoull(argv[i + 1], NULL, 10);
        else if (!strcmp(argv[i], "--h2h")) {
            g_nh2h = 0;
            for (char *t = strtok(argv[i + 1], ","); t && g_nh2h < 8; t = strtok(NULL, ","))
                if (parse_size(t))
                    g_h2h[g_nh2h++] = parse_size(t);
        } else if (!strcmp(argv[i], "--pin"))
            passes[!strcmp(argv[i + 1], "only") ? 0 : 1] = 0;
        else {
            fprintf(stderr, "usage: %s [--max SIZE] [--reps N] [--hugepages N] [--pin only|none] [--h2h SIZE,...|0]\n",
                    argv[0]);
            return 2;
        }
    }
    if (g_reps < 5 || g_reps > MAXREPS)
        g_reps = g_reps < 5 ? 5 : MAXREPS;
    /* arena + staging + a fresh object + the store's pool and object, at
     * the largest size */
    if (!hp) {
        uint64_t big = max < 64 * MiB ? 64 * MiB : max;
        for (int i = 0; i < g_nh2h; i++)
            big = g_h2h[i] > big ? g_h2h[i] : big;
        hp = 3 * big / (2 * MiB) + 64;
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    printf("arena_probe: reps %d, largest %llu MiB; columns: pass size pages variant "
           "GB/s, xmem (ratio to memcpy of 256 MiB, the bench's baseline), xsame (ratio to memcpy of "
           "the same size), time per op, spread = (max-min)/median\n",
           g_reps, (unsigned long long)(max / MiB));
    if (geteuid() == 0)
        hp_reserve(hp);
    for (int pinned = 0; pinned < 2; pinned++) {
        if (!passes[pinned])
            continue;
        g_worker = fork();
        if (g_worker < 0)
            die("fork");
        if (g_worker == 0) {
            signal(SIGINT, SIG_DFL);
            signal(SIGTERM, SIG_DFL);
            signal(SIGHUP, SIG_DFL);
            signal(SIGQUIT, SIG_DFL);
            signal(SIGPIPE, SIG_DFL);
            prctl(PR_SET_PDEATHSIG, SIGKILL);
            _exit(run_pass(pinned, max));
        }
        while (waitpid(g_worker, &status, 0) < 0 && errno == EINTR)
            ;
        g_worker = 0;
        if (!WIFEXITED(status) || WEXITSTATUS(status)) {
            fprintf(stderr, "arena_probe: the %s pass failed (status %#x)\n",
                    pinned ? "pinned" : "unpinned", status);
            bad = 1;
        }
    }
    hp_restore();
    if (geteuid() == 0)
        printf("hugepages: pool back to %llu\n", (unsigned long long)read_u64(HP_NR));
    return bad;
}
