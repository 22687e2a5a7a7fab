/* SPDX-License-Identifier: MIT */
/*
 * Store scenarios across processes: e2e (producer-to-consumer latency) and
 * clients (1..N producer/consumer pairs at once).
 *
 * Every process is a forked child that connects to the store's socket as an
 * ordinary client (the embedded store stays a thread of the bench). Results
 * come back through a MAP_SHARED region; CLOCK_MONOTONIC is one clock for
 * all processes, so a producer's timestamp read by a consumer is a latency.
 * Pacing goes through pipes: a consumer hands its producer one credit per
 * object it has consumed, so a producer never runs more than a window ahead
 * and memory stays bounded.
 */
#include "bench.h"

#include <errno.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#define E2E_MAX_SAMPLES (1u << 20) /* 8 MiB of doubles; pages touched as used */
#define GET_POLL_MS 50             /* consumers re-check "producer done" this often */
#define MAX_PAIRS 64
#define MAX_SLICES 64

/* Stream numbers for the ids of this file (bench-store.c counts up from 1). */
#define STREAM_E2E 0x40000000u
#define STREAM_CL 0x50000000u

static int credit_give(int fd)
{
    char c = 1;
    ssize_t w;

    do
        w = write(fd, &c, 1);
    while (w < 0 && errno == EINTR);
    return w == 1 ? 0 : -errno; /* EPIPE once the producer is gone: fine */
}

/* 1: a credit, 0: the consumer is gone, -errno */
static int credit_take(int fd)
{
    char c;
    ssize_t r;

    do
        r = read(fd, &c, 1);
    while (r < 0 && errno == EINTR);
    return r < 0 ? -errno : (int)r;
}

static void xpipe(int fd[2])
{
    if (pipe2(fd, O_CLOEXEC) < 0)
        die_rc(-errno, "pipe2");
}

/* Put one object: t0 before the create goes into its first 8 bytes. */
static void produce(ss_client *c, const ss_id *id, uint64_t size, const void *src)
{
    uint64_t t0 = now_ns();
    void *data;

    CK(ss_create(c, id, size, NULL, 0, &data));
    memcpy(data, src, size);
    if (size >= 8)
        memcpy(data, &t0, 8);
    CK(ss_seal(c, id));
    CK(ss_release(c, id));
}

/* ------------------------------------------------------------------ e2e */

struct e2e_shared {
    _Atomic int producer_done;
    uint64_t produced;
    uint64_t pool_hits, pool_misses;
    uint64_t n;
    double lat_us[E2E_MAX_SAMPLES];
};

struct e2e_arg {
    struct bench *b;
    struct e2e_shared *sh;
    uint64_t size;
    uint64_t end_ns;   /* producer stops creating at this time ... */
    unsigned min_n;    /* ... once it has made at least this many */
    int credit[2];     /* consumer -> producer */
};

static int e2e_producer(void *arg)
{
    struct e2e_arg *a = arg;
    ss_client *c = child_connect(a->b);
    const void *src = src_buf(a->size);
    ss_stats s0 = {.size = sizeof(s0), .version = SS_STATS_VERSION}, s1 = s0;
    uint64_t seq = 0;

    close(a->credit[1]);
    CK(ss_stats_get(c, &s0));
    /* lock-step: object k+1 is created once the consumer is done with k,
     * so each sample is one object's trip through an otherwise idle store */
    while ((seq < a->min_n || now_ns() < a->end_ns) && credit_take(a->credit[0]) == 1) {
        ss_id id;

        make_id(&id, STREAM_E2E, seq);
        produce(c, &id, a->size, src);
        seq++;
    }
    CK(ss_stats_get(c, &s1));
    a->sh->pool_hits = s1.pool_hits - s0.pool_hits;
    a->sh->pool_misses = s1.pool_misses - s0.pool_misses;
    a->sh->produced = seq;
    atomic_store(&a->sh->producer_done, 1);
    ss_disconnect(c);
    return 0;
}

static int e2e_consumer(void *arg)
{
    struct e2e_arg *a = arg;
    ss_client *c = child_connect(a->b);
    uint64_t seq = 0;

    signal(SIGPIPE, SIG_IGN);
    close(a->credit[0]);
    (void)credit_give(a->credit[1]); /* ready for object 0 */
    for (;;) {
        ss_object o;
        ss_id id;
        uint64_t t1, t0;
        int rc;

        make_id(&id, STREAM_E2E, seq);
        rc = ss_get(c, &id, 1, GET_POLL_MS, &o);
        t1 = now_ns();
        if (rc < 0)
            die_rc(rc, "consumer: ss_get");
        if (rc == 0) {
            if (atomic_load(&a->sh->producer_done) && seq >= a->sh->produced)
                break;
            continue;
        }
        memcpy(&t0, o.data, 8);
        if (a->sh->n < E2E_MAX_SAMPLES)
            a->sh->lat_us[a->sh->n++] = (double)(t1 - t0) / 1e3;
        CK(ss_release(c, &id));
        CK(ss_delete(c, &id));
        seq++;
        (void)credit_give(a->credit[1]);
    }
    ss_disconnect(c);
    return 0;
}

static void e2e_one(struct bench *b, uint64_t size, struct fig *lat, char *note, size_t nlen)
{
    struct e2e_shared *sh = shared_alloc(sizeof(*sh));
    struct e2e_arg a = {.b = b, .sh = sh, .size = size, .min_n = (unsigned)b->reps + 2};
    struct samples s = {0};
    char sz[16];
    pid_t prod, cons;
    uint64_t skip;

    src_buf(size); /* faulted once, in the parent: children share it */
    xpipe(a.credit);
    /* the run: a warm-up slice, then the measured duration */
    a.end_ns = now_ns() + b->duration_ns + b->duration_ns / (uint64_t)b->reps;
    progress("[e2e] %s: producer and consumer processes running",
             fmt_size(size, sz, sizeof(sz)));
    cons = fork_child(e2e_consumer, &a);
    prod = fork_child(e2e_producer, &a);
    close(a.credit[0]);
    close(a.credit[1]);
    reap_all((pid_t[]){prod, cons}, 2, "e2e producer/consumer");
    /* the first slice's worth of samples is the warm-up (at least one) */
    skip = sh->n / (uint64_t)(b->reps + 1);
    if (skip < 1)
        skip = 1;
    for (uint64_t i = skip; i < sh->n; i++)
        samples_add(&s, sh->lat_us[i]);
    if (s.n)
        fig_set(lat, &s);
    else
        fig_skip(lat, "no sample after the warm-up");
    snprintf(note, nlen, "%" PRIu64 " objects; producer's pool hits %" PRIu64 ", misses %" PRIu64,
             sh->n, sh->pool_hits, sh->pool_misses);
    samples_free(&s);
    munmap(sh, sizeof(*sh));
}

void run_e2e(struct bench *b)
{
    char name[64], sz[16];

    for (int k = 0; k < 2; k++)
        bl_sock(b, b->e2e_sizes[k]);
    for (int k = 0; k < 2; k++) {
        uint64_t size = b->e2e_sizes[k];
        struct fig lat = {0};
        char note[120];

        e2e_one(b, size, &lat, note, sizeof(note));
        snprintf(lat.note, sizeof(lat.note), "%s", note);
        fmt_size(size, sz, sizeof(sz));
        snprintf(name, sizeof(name), "producer->consumer %s p50", sz);
        report(b, &(struct rowspec){.figure = name, .metric = "e2e_p50", .unit = "us",
                                    .size = size, .f = &lat, .bl_name = "socket copy p50",
                                    .bl = &bl_sock(b, size)->us});
        snprintf(name, sizeof(name), "producer->consumer %s p99", sz);
        report(b, &(struct rowspec){.figure = name, .metric = "e2e_p99", .unit = "us",
                                    .size = size, .f = &lat, .stat = ST_P99,
                                    .bl_name = "socket copy p99", .bl = &bl_sock(b, size)->us,
                                    .bl_stat = ST_P99});
    }
    print_table(b, "producer process: create+fill+seal; consumer process: blocking ss_get "
                   "returns (latency from before the create)");
}

/* -------------------------------------------------------------- clients */

struct cl_shared {
    uint64_t start_ns, slice_ns;
    int nslices;
    _Atomic int producer_done[MAX_PAIRS];
    uint64_t produced[MAX_PAIRS];
    uint64_t counts[MAX_PAIRS][MAX_SLICES];
};

struct cl_arg {
    struct bench *b;
    struct cl_shared *sh;
    uint64_t size;
    int pair, npairs;
    int (*credit)[2]; /* per pair: consumer -> producer */
    int ready[2];     /* children -> parent: connected */
    int go[2];        /* parent closes the write end: start */
};

#define CL_WINDOW 4 /* objects a producer may run ahead of its consumer */

/* Keep only this child's own pipe ends: EOF must reach the other side. */
static void cl_close_others(struct cl_arg *a, bool producer)
{
    for (int p = 0; p < a->npairs; p++) {
        if (p != a->pair || producer)
            close(a->credit[p][1]);
        if (p != a->pair || !producer)
            close(a->credit[p][0]);
    }
    close(a->ready[0]);
    close(a->go[1]);
}

/* A child is ready (one byte on ready_w), then waits for the parent's go
 * (EOF on go_r); both ends closed after. */
static void child_barrier(int ready_w, int go_r)
{
    char c = 1, d;

    if (write(ready_w, &c, 1) != 1)
        die_rc(-errno, "ready pipe");
    close(ready_w);
    while (read(go_r, &d, 1) < 0 && errno == EINTR)
        ;
    close(go_r);
}

static void cl_barrier(struct cl_arg *a)
{
    child_barrier(a->ready[1], a->go[0]);
}

static int cl_producer(void *arg)
{
    struct cl_arg *a = arg;
    struct cl_shared *sh = a->sh;
    ss_client *c = child_connect(a->b);
    const void *src = src_buf(a->size);
    int fd = a->credit[a->pair][0];
    uint64_t seq = 0, end;

    cl_close_others(a, true);
    cl_barrier(a);
    end = sh->start_ns + (uint64_t)sh->nslices * sh->slice_ns;
    while (now_ns() < end) {
        ss_id id;

        if (seq >= CL_WINDOW && credit_take(fd) != 1)
            break;
        make_id(&id, STREAM_CL + (uint32_t)a->pair, seq);
        produce(c, &id, a->size, src);
        seq++;
    }
    sh->produced[a->pair] = seq;
    atomic_store(&sh->producer_done[a->pair], 1);
    ss_disconnect(c);
    return 0;
}

static int cl_consumer(void *arg)
{
    struct cl_arg *a = arg;
    struct cl_shared *sh = a->sh;
    ss_client *c = child_connect(a->b);
    int fd = a->credit[a->pair][1];
    uint64_t seq = 0;

    signal(SIGPIPE, SIG_IGN);
    cl_close_others(a, false);
    cl_barrier(a);
    for (;;) {
        ss_object o;
        ss_id id;
        uint64_t t;
        int rc;

        make_id(&id, STREAM_CL + (uint32_t)a->pair, seq);
        rc = ss_get(c, &id, 1, GET_POLL_MS, &o);
        if (rc < 0)
            die_rc(rc, "clients: consumer ss_get");
        if (rc == 0) {
            if (atomic_load(&sh->producer_done[a->pair]) && seq >= sh->produced[a->pair])
                break;
            continue;
        }
        t = now_ns();
        if (t >= sh->start_ns) {
            uint64_t slice = (t - sh->start_ns) / sh->slice_ns;

            if (slice < (uint64_t)sh->nslices)
                sh->counts[a->pair][slice]++;
        }
        CK(ss_release(c, &id));
        CK(ss_delete(c, &id));
        seq++;
        (void)credit_give(fd);
    }
    ss_disconnect(c);
    return 0;
}

/* k pairs for the duration: aggregate objects/s per slice (warm-up slice
 * dropped). */
static void cl_level(struct bench *b, int k, uint64_t size, struct fig *ops)
{
    struct cl_shared *sh = shared_alloc(sizeof(*sh));
    int (*credit)[2] = xcalloc((size_t)k, sizeof(*credit));
    pid_t *pids = xcalloc(2 * (size_t)k, sizeof(*pids));
    struct cl_arg a = {.b = b, .sh = sh, .size = size, .npairs = k, .credit = credit};
    struct samples s = {0};
    char c, sz[16];

    src_buf(size);
    sh->nslices = b->reps + 1;
    if (sh->nslices > MAX_SLICES)
        sh->nslices = MAX_SLICES;
    sh->slice_ns = b->duration_ns / (uint64_t)b->reps;
    for (int p = 0; p < k; p++)
        xpipe(credit[p]);
    xpipe(a.ready);
    xpipe(a.go);
    progress("[clients] %d+%d processes, %s: connecting", k, k, fmt_size(size, sz, sizeof(sz)));
    for (int p = 0; p < k; p++) {
        a.pair = p;
        pids[2 * p] = fork_child(cl_consumer, &a);
        pids[2 * p + 1] = fork_child(cl_producer, &a);
    }
    for (int p = 0; p < k; p++) {
        close(credit[p][0]);
        close(credit[p][1]);
    }
    close(a.ready[1]);
    close(a.go[0]);
    for (int i = 0; i < 2 * k; i++)
        if (read(a.ready[0], &c, 1) != 1)
            die_rc(-errno, "clients: a child did not get ready");
    close(a.ready[0]);
    sh->start_ns = now_ns() + 1000000; /* 1 ms: every child is past its read */
    close(a.go[1]);
    progress("[clients] %d+%d processes, %s: running", k, k, sz);
    reap_all(pids, 2 * k, "clients producer/consumer");
    for (int sl = 1; sl < sh->nslices; sl++) {
        uint64_t n = 0;

        for (int p = 0; p < k; p++)
            n += sh->counts[p][sl];
        samples_add(&s, (double)n * 1e9 / (double)sh->slice_ns);
    }
    fig_set(ops, &s);
    samples_free(&s);
    free(credit);
    free(pids);
    munmap(sh, sizeof(*sh));
}

/* ---- k reader processes getting the same objects at once */

#define STREAM_RD 0x60000000u
#define RD_OBJECTS 64

struct rd_arg {
    struct bench *b;
    struct cl_shared *sh; /* counts[reader][slice] */
    int reader;
    int ready[2], go[2];
};

static int rd_reader(void *arg)
{
    struct rd_arg *a = arg;
    struct cl_shared *sh = a->sh;
    ss_client *c = child_connect(a->b);
    uint64_t end, k = 0;
    ss_id ids[RD_OBJECTS];

    close(a->ready[0]);
    close(a->go[1]);
    for (uint32_t i = 0; i < RD_OBJECTS; i++) {
        ss_object o;

        make_id(&ids[i], STREAM_RD, i);
        if (ss_get(c, &ids[i], 1, 0, &o) != 1) /* maps what it needs, once */
            die_rc(-ENOENT, "readers: ss_get");
        CK(ss_release(c, &ids[i]));
    }
    child_barrier(a->ready[1], a->go[0]);
    end = sh->start_ns + (uint64_t)sh->nslices * sh->slice_ns;
    for (;;) {
        uint64_t t = now_ns();
        ss_object o;

        if (t >= end)
            break;
        for (int j = 0; j < 64; j++, k++) { /* a clock read per 64 gets */
            if (ss_get(c, &ids[k % RD_OBJECTS], 1, 0, &o) != 1)
                die_rc(-ENOENT, "readers: ss_get");
            CK(ss_release_object(c, &o));
        }
        if (t >= sh->start_ns) {
            uint64_t slice = (t - sh->start_ns) / sh->slice_ns;

            if (slice < (uint64_t)sh->nslices)
                sh->counts[a->reader][slice] += 64;
        }
    }
    ss_disconnect(c);
    return 0;
}

/* k readers of the same RD_OBJECTS objects for the duration: total and
 * per-reader gets/s per slice (warm-up slice dropped). */
static void rd_level(struct bench *b, int k, struct fig *total, struct fig *each)
{
    struct cl_shared *sh = shared_alloc(sizeof(*sh));
    pid_t *pids = xcalloc((size_t)k, sizeof(*pids));
    struct rd_arg a = {.b = b, .sh = sh};
    struct samples s = {0}, e = {0};
    char c;

    sh->nslices = b->reps + 1;
    if (sh->nslices > MAX_SLICES)
        sh->nslices = MAX_SLICES;
    sh->slice_ns = b->duration_ns / (uint64_t)b->reps;
    xpipe(a.ready);
    xpipe(a.go);
    progress("[clients] %d reader processes: connecting", k);
    for (int p = 0; p < k; p++) {
        a.reader = p;
        pids[p] = fork_child(rd_reader, &a);
    }
    close(a.ready[1]);
    close(a.go[0]);
    for (int i = 0; i < k; i++)
        if (read(a.ready[0], &c, 1) != 1)
            die_rc(-errno, "readers: a child did not get ready");
    close(a.ready[0]);
    sh->start_ns = now_ns() + 1000000;
    close(a.go[1]);
    reap_all(pids, k, "readers");
    for (int sl = 1; sl < sh->nslices; sl++) {
        uint64_t n = 0;

        for (int p = 0; p < k; p++)
            n += sh->counts[p][sl];
        samples_add(&s, (double)n * 1e9 / (double)sh->slice_ns);
        samples_add(&e, (double)n * 1e9 / (double)sh->slice_ns / k);
    }
    fig_set(total, &s);
    fig_set(each, &e);
    samples_free(&s);
    samples_free(&e);
    free(pids);
    munmap(sh, sizeof(*sh));
}

/* Readers scale with cores: gets of sealed objects in memory a reader
 * maps are served from the shared index (no lock shared between
 * processes on that path). */
static void run_readers(struct bench *b)
{
    uint64_t size = b->cl_sizes[1];
    const void *src = src_buf(size);
    struct fig one = {0};
    char name[64], sz[16];
    int k;

    ss_client *pc = child_connect(b); /* (a handle of this process's own) */

    fmt_size(size, sz, sizeof(sz));
    for (uint32_t i = 0; i < RD_OBJECTS; i++) {
        ss_id id;

        make_id(&id, STREAM_RD, i);
        produce(pc, &id, size, src);
    }
    for (k = 1;; k *= 2) {
        struct fig total = {0}, each = {0};

        if (k > b->clients)
            k = b->clients;
        rd_level(b, k, &total, &each);
        if (k == 1)
            one = total;
        snprintf(name, sizeof(name), "%d reader%s, get+release %s, total", k, k > 1 ? "s" : "",
                 sz);
        report(b, &(struct rowspec){.figure = name, .metric = "readers_ops", .unit = "ops/s",
                                    .size = size, .clients = k, .f = &total,
                                    .bl_name = "1 reader", .bl = &one});
        snprintf(name, sizeof(name), "%d reader%s, get+release %s, each", k, k > 1 ? "s" : "",
                 sz);
        report(b, &(struct rowspec){.figure = name, .metric = "readers_ops_each",
                                    .unit = "ops/s", .size = size, .clients = k, .f = &each,
                                    .bl_name = "1 reader", .bl = &one});
        if (k >= b->clients)
            break;
    }
    for (uint32_t i = 0; i < RD_OBJECTS; i++) {
        ss_id id;

        make_id(&id, STREAM_RD, i);
        CK(ss_delete(pc, &id));
    }
    ss_disconnect(pc);
}

void run_clients(struct bench *b)
{
    int levels[8], nl = 0;
    char name[64], sz[16], bname[48];

    for (int k = 1; k < b->clients && nl < 7; k *= 2)
        levels[nl++] = k;
    levels[nl++] = b->clients > MAX_PAIRS ? MAX_PAIRS : b->clients;
    for (int j = 0; j < 2; j++)
        bl_sock(b, b->cl_sizes[j]);
    bl_memcpy(b);
    for (int j = 0; j < 2; j++) {
        uint64_t size = b->cl_sizes[j];
        struct fig one = {0}, sock;

        fmt_size(size, sz, sizeof(sz));
        sock = bl_sock(b, size)->ops;
        for (int l = 0; l < nl; l++) {
            int k = levels[l];
            struct fig ops = {0}, gb;

            cl_level(b, k, size, &ops);
            if (l == 0)
                one = ops;
            snprintf(name, sizeof(name), "%d producer%s + %d consumer%s, %s", k,
                     k > 1 ? "s" : "", k, k > 1 ? "s" : "", sz);
            if (l == 0)
                report(b, &(struct rowspec){.figure = name, .metric = "clients_ops",
                                            .unit = "ops/s", .size = size, .clients = k,
                                            .f = &ops, .bl_name = "socket copy, 1 pair",
                                            .bl = &sock});
            else
                report(b, &(struct rowspec){.figure = name, .metric = "clients_ops",
                                            .unit = "ops/s", .size = size, .clients = k,
                                            .f = &ops, .bl_name = "1 producer + 1 consumer",
                                            .bl = &one});
            fig_scale(&ops, (double)size / 1e9, &gb);
            snprintf(bname, sizeof(bname), "memcpy faulted");
            report(b, &(struct rowspec){.figure = name, .metric = "clients_gbps",
                                        .unit = "GB/s", .size = size, .clients = k, .f = &gb,
                                        .bl_name = bname, .bl = bl_memcpy(b)});
        }
    }
    run_readers(b);
    print_table(b, "k producer and k consumer processes, one stream per pair (create+fill+seal"
                   "+release; blocking get+release+delete); objects moved per second; then "
                   "k reader processes getting the same objects (served from the index)");
}
