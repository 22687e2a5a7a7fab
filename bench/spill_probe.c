/* SPDX-License-Identifier: MIT */
/*
 * spill_probe: spill and restore throughput of the spill engine beside the
 * disk's own limit, measured in the same run on the same directory (the
 * target: spill and restore at >= 80% of a plain sequential O_DIRECT
 * writer and reader). Not part of make check; not built by default.
 *
 *   cd build && make src/lib/libsealstore-core.la     (an out-of-tree build)
 *   gcc -O2 -pthread -I../include -I../src/lib -I. \
 *       ../bench/spill_probe.c src/lib/.libs/libsealstore-core.a \
 *       -luring -lhwloc -o /tmp/spill_probe
 *   /tmp/spill_probe [base_dir=/var/tmp] [total_MiB=1024] [object_MiB=64] [qd=8] [reps=3]
 *   (environment SQPOLL=1, INLINE=1 or NO_URING=1 picks that mode; an object
 *   size like 60k measures small objects, fused, against the same bytes
 *   written as one region)
 *
 * Sources are sealed memfds mapped read-only (what the store spills from),
 * populated before timing; restores go into fresh, populated memfd
 * mappings, checked bit-exact after the timing. The baseline writes the
 * same bytes to one preallocated file with io_uring at the same queue depth
 * and 1 MiB O_DIRECT writes plus one fdatasync, and reads them back the same
 * way. The engine's time is wall time from the first request to the last
 * completion, fdatasync and directory fsync included. Also reported: the
 * longest single call into the engine (what the store's event loop could
 * be held up by) and the loop's total time inside the engine.
 * Everything lives in <base_dir>/sealstore-spill-probe-<pid>, removed after.
 */
#include "config.h"

#include <fcntl.h>
#include <liburing.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "spill.h"

#define MiB (1024ull * 1024)

static double now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static void die(const char *what, int err)
{
    fprintf(stderr, "spill_probe: %s: %s\n", what, strerror(err < 0 ? -err : err));
    exit(1);
}

static uint8_t *map_memfd(uint64_t size, bool sealed, uint64_t seed)
{
    int fd = memfd_create("spill_probe", MFD_ALLOW_SEALING | MFD_CLOEXEC);
    uint8_t *p;

    if (fd < 0 || ftruncate(fd, (off_t)size) < 0)
        die("memfd", errno);
    p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED)
        die("mmap", errno);
    for (uint64_t i = 0; i < size; i += 8) {
        uint64_t v = (i + seed) * 0x9E3779B97F4A7C15ull;

        memcpy(p + i, &v, 8);
    }
    if (sealed) {
        munmap(p, size);
        if (fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_SEAL) < 0)
            die("seal", errno);
        p = mmap(NULL, size, PROT_READ, MAP_SHARED, fd, 0);
        if (p == MAP_FAILED)
            die("mmap ro", errno);
        madvise(p, size, MADV_POPULATE_READ);
    }
    close(fd);
    return p;
}

/* Plain sequential O_DIRECT at queue depth qd, 1 MiB I/Os: write (then one
 * fdatasync) or read n buffers of `size` to/from one file. */
static double plain(const char *path, uint8_t **bufs, int n, uint64_t size, unsigned qd,
                    bool write)
{
    struct io_uring ring;
    uint64_t total = (uint64_t)n * size, issued = 0, done = 0;
    unsigned inflight = 0;
    double t0;
    int fd, rc;

    fd = open(path, (write ? O_WRONLY | O_CREAT : O_RDONLY) | O_DIRECT | O_CLOEXEC, 0600);
    if (fd < 0)
        die(path, errno);
    if (write && fallocate(fd, 0, 0, (off_t)total) < 0)
        die("fallocate", errno);
    if ((rc = io_uring_queue_init(qd, &ring, 0)) < 0)
        die("io_uring_queue_init", rc);
    t0 = now_s();
    while (done < total) {
        struct io_uring_cqe *cqe;

        while (inflight < qd && issued < total) {
            struct io_uring_sqe *sqe = io_uring_get_sqe(&ring);
            uint8_t *b = bufs[issued / size] + issued % size;

            if (write)
                io_uring_prep_write(sqe, fd, b, MiB, issued);
            else
                io_uring_prep_read(sqe, fd, b, MiB, issued);
            issued += MiB;
            inflight++;
        }
        io_uring_submit(&ring);
        if ((rc = io_uring_wait_cqe(&ring, &cqe)) < 0)
            die("wait_cqe", rc);
        if (cqe->res != (int)MiB)
            die("plain I/O", cqe->res < 0 ? cqe->res : EIO);
        io_uring_cqe_seen(&ring, cqe);
        inflight--;
        done += MiB;
    }
    if (write && fdatasync(fd) < 0)
        die("fdatasync", errno);
    t0 = now_s() - t0;
    io_uring_queue_exit(&ring);
    close(fd);
    return t0;
}

struct loopcost {
    double in_calls, max_call, cpu, max_cpu;
    unsigned n, over100us, over1ms;
};

static double cpu_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static __thread double call_cpu0;

/* wall time from t0, CPU time from the matching call_start() */
static double call_start(void)
{
    call_cpu0 = cpu_s();
    return now_s();
}

static void account(struct loopcost *lc, double t0)
{
    double d = now_s() - t0;

    double c = cpu_s() - call_cpu0;

    lc->cpu += c;
    if (c > lc->max_cpu)
        lc->max_cpu = c;
    lc->in_calls += d;
    lc->n++;
    lc->over100us += d > 100e-6;
    lc->over1ms += d > 1e-3;
    if (d > lc->max_call)
        lc->max_call = d;
}

/* Reap until n completions; returns their worst status. */
static int reap_n(ss__spill *sp, ss__spill_done *done, int n, struct loopcost *lc)
{
    int got = 0, worst = 0;

    while (got < n) {
        struct pollfd pfd = { .fd = ss__spill_event_fd(sp), .events = POLLIN };
        double t;
        int k;

        poll(&pfd, 1, 1000);
        t = call_start();
        k = ss__spill_reap(sp, done + got, n - got);
        account(lc, t);
        for (int i = 0; i < k; i++)
            if (done[got + i].status < worst)
                worst = done[got + i].status;
        got += k;
    }
    return worst;
}

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;

    return (x > y) - (x < y);
}

int main(int argc, char **argv)
{
    const char *base = argc > 1 ? argv[1] : "/var/tmp";
    uint64_t total = (argc > 2 ? strtoull(argv[2], NULL, 0) : 1024) * MiB; /* then n x osize */
    uint64_t osize = 64 * MiB;
    unsigned qd = argc > 4 ? (unsigned)atoi(argv[4]) : 8;
    int reps = argc > 5 ? atoi(argv[5]) : 3;
    int n;
    double r_pw[16], r_pr[16], r_sw[16], r_sr[16];
    char dir[512], path[600];
    uint8_t **src, **dst;
    ss__spill_done *done;
    ss__spill_loc *loc;
    ss__spill_stats st;
    struct loopcost lc_w = { 0 }, lc_r = { 0 };
    double sum_sw = 0, sum_sr = 0;
    bool big = false;    /* one region instead of one memfd per object */
    uint64_t region = 0; /* its size */

    if (argc > 3) {
        char *end;

        osize = strtoull(argv[3], &end, 0);
        osize *= *end == 'k' || *end == 'K' ? 1024 : MiB;
    }
    n = (int)(total / osize);
    total = (uint64_t)n * osize;
    src = calloc((size_t)n + 1, sizeof(*src));
    dst = calloc((size_t)n + 1, sizeof(*dst));
    done = calloc((size_t)n + 1, sizeof(*done));
    loc = calloc((size_t)n + 1, sizeof(*loc));
    if (n < 1 || reps < 1 || reps > 16 || !src || !dst || !done || !loc) {
        fprintf(stderr, "usage: %s [base_dir] [total_MiB] [object_MiB] [qd] [reps<=16]\n", argv[0]);
        return 2;
    }
    snprintf(dir, sizeof(dir), "%s/sealstore-spill-probe-%ld", base, (long)getpid());
    printf("spill_probe: %d objects of %llu KiB (%.2f GB) in %s, queue depth %u, %d reps\n", n,
           (unsigned long long)(osize / 1024), (double)n * osize / 1e9, dir, qd, reps);
    if (osize % MiB == 0) {
        for (int i = 0; i < n; i++) {
            src[i] = map_memfd(osize, true, (uint64_t)i * 977);
            dst[i] = map_memfd(osize, false, 1);
        }
        big = false;
    } else {
        /* small objects: slices of one sealed region (the baseline writes
         * the whole region) */
        uint64_t all = SS_ALIGN_UP((uint64_t)n * osize, MiB);
        uint8_t *s0 = map_memfd(all, true, 977), *d0 = map_memfd(all, false, 1);

        for (int i = 0; i < n; i++) {
            src[i] = s0 + (uint64_t)i * osize;
            dst[i] = d0 + (uint64_t)i * osize;
        }
        big = true;
        region = all;
    }

    for (int r = 0; r < reps; r++) {
        ss__spill_params p = { .dir = dir, .queue_depth = qd,
                               .flags = getenv("SQPOLL")     ? SS_SPILL_SQPOLL
                                        : getenv("INLINE")   ? SS_SPILL_INLINE_SUBMIT
                                        : getenv("NO_URING") ? SS_SPILL_NO_URING
                                                             : 0 };
        ss__spill *sp = NULL;
        double t;
        int rc;

        /* the disk's limit: plain O_DIRECT writer and reader */
        if (mkdir(dir, 0700) < 0 && errno != EEXIST)
            die(dir, errno);
        snprintf(path, sizeof(path), "%s/plain", dir);
        r_pw[r] = big ? plain(path, src, 1, region, qd, true) : plain(path, src, n, osize, qd, true);
        r_pr[r] = big ? plain(path, dst, 1, region, qd, false)
                      : plain(path, dst, n, osize, qd, false);
        unlink(path);

        /* the engine */
        if ((rc = ss__spill_open(&sp, &p)) < 0)
            die("ss__spill_open", rc);
        t = now_s();
        for (int i = 0; i < n; i++) {
            ss_id id = { { 0 } };
            double c;

            memcpy(id.b, &i, sizeof(i));
            c = call_start();
            if ((rc = ss__spill_write(sp, &id, (uint32_t)getuid(), src[i], osize, "meta", 4, (uint64_t)i)) < 0)
                die("ss__spill_write", rc);
            account(&lc_w, c);
        }
        if ((rc = reap_n(sp, done, n, &lc_w)) < 0)
            die("spill", rc);
        r_sw[r] = now_s() - t;
        sum_sw += r_sw[r];
        for (int i = 0; i < n; i++)
            loc[done[i].cookie] = done[i].loc;

        t = now_s();
        for (int i = 0; i < n; i++) {
            double c = call_start();

            if ((rc = ss__spill_read(sp, &loc[i], dst[i], NULL, (uint64_t)i)) < 0)
                die("ss__spill_read", rc);
            account(&lc_r, c);
        }
        if ((rc = reap_n(sp, done, n, &lc_r)) < 0)
            die("restore", rc);
        r_sr[r] = now_s() - t;
        sum_sr += r_sr[r];
        for (int i = 0; i < n; i++)
            if (memcmp(src[i], dst[i], osize) != 0)
                die("restored data differs", EIO);
        ss__spill_stats_get(sp, &st);
        for (int i = 0; i < n; i++)
            ss__spill_delete(sp, &loc[i]);
        ss__spill_close(sp);
        printf("rep %d: plain write %.2f GB/s, read %.2f GB/s | spill %.2f GB/s, restore %.2f "
               "GB/s (%s, %s)\n",
               r, (double)total / r_pw[r] / 1e9, (double)total / r_pr[r] / 1e9,
               (double)total / r_sw[r] / 1e9, (double)total / r_sr[r] / 1e9,
               st.uring ? (st.sqpoll ? "io_uring SQPOLL" : "io_uring") : "fallback",
               st.direct ? "O_DIRECT" : "buffered");
        snprintf(path, sizeof(path), "%s/lock", dir);
        unlink(path);
        rmdir(dir);
    }
    qsort(r_pw, (size_t)reps, sizeof(double), cmp_d);
    qsort(r_pr, (size_t)reps, sizeof(double), cmp_d);
    qsort(r_sw, (size_t)reps, sizeof(double), cmp_d);
    qsort(r_sr, (size_t)reps, sizeof(double), cmp_d);
    {
        double pw = (double)total / r_pw[reps / 2] / 1e9, pr = (double)total / r_pr[reps / 2] / 1e9;
        double sw = (double)total / r_sw[reps / 2] / 1e9, sr = (double)total / r_sr[reps / 2] / 1e9;

        printf("median: spill %.2f GB/s = %.0f%% of plain write %.2f GB/s; restore %.2f GB/s = "
               "%.0f%% of plain read %.2f GB/s\n", sw, 100 * sw / pw, pw, sr, 100 * sr / pr, pr);
        printf("event loop: longest call into the engine %.0f us (spill side), %.0f us (restore "
               "side), most CPU in one call %.0f / %.0f us; time inside calls %.1f%% / %.1f%% of "
               "the spill / restore wall time\n",
               lc_w.max_call * 1e6, lc_r.max_call * 1e6, lc_w.max_cpu * 1e6, lc_r.max_cpu * 1e6, 100 * lc_w.in_calls / sum_sw,
               100 * lc_r.in_calls / sum_sr);
        printf("calls: spill side %u (%u > 100 us, %u > 1 ms), restore side %u (%u > 100 us, "
               "%u > 1 ms); CPU time in them %.1f%% / %.1f%% of the wall time (the rest of "
               "the time inside is waiting for a CPU)\n", lc_w.n, lc_w.over100us, lc_w.over1ms,
               lc_r.n, lc_r.over100us, lc_r.over1ms, 100 * lc_w.cpu / sum_sw,
               100 * lc_r.cpu / sum_sr);
    }
    return 0;
}
