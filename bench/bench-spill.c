/* SPDX-License-Identifier: MIT */
/*
 * spill: spill and restore under memory pressure, beside the disk's own
 * sequential O_DIRECT write and read rate measured in the same directory,
 * in the same run (the target: spill and restore at >= 80% of it), and the
 * latency of gets of in-memory objects while a heavy spill runs (the
 * target: within 2x of idle; doc/design.md, "The spill engine").
 *
 * The bench starts one more embedded store for this, with a small capacity
 * (SEALSTORE_CAPACITY), its pool sized and classed for the objects it puts
 * (a pool miss would populate on the store's loop, which is a create's
 * cost, not spilling's), and SEALSTORE_SPILL_DIR set to a fresh directory
 * under /var/tmp (a disk, where /tmp may be tmpfs), or to
 * $SEALSTORE_SPILL_DIR when that is set. The disk's limit: the same bytes
 * written to one file with 1 MiB O_DIRECT writes through io_uring at the
 * store's spill queue depth plus one fdatasync, then read back the same way
 * (buffered after dropping the cache where O_DIRECT is refused, e.g. tmpfs).
 *
 * A rep puts twice the capacity in objects (the store must spill the older
 * half to take the newer), deletes the newer half (in memory, never
 * spilled: restores then only read), gets the oldest quarter back
 * `SPILL_BATCH` ids per ss_get (restores in parallel), then the next
 * quarter one id per ss_get (the latency of a get that restores), then
 * deletes the rest. The spill and restore
 * rates are the store's own (ss_stats: bytes over the wall time with at
 * least one spill, or restore, in flight); the put rate under pressure and
 * the latency of a get that restores are the client's.
 *
 * Latency: a hot set of small and 1 MiB objects held by the bench (so they
 * stay in memory) is read by a second client with get+release, first with
 * the store idle, then while a third client puts twice the capacity (the
 * store spilling all along).
 *
 * When the store cannot spill (a sealstore.h without the spill stats, or a
 * store reporting spill_mode 0) every row is skipped with the reason; with
 * --socket too, since filling a running store past its capacity is not
 * something a benchmark should do to it.
 */
#include "bench.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <liburing.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#define SPILL_BATCH 4u /* ids per ss_get when measuring the restore rate */
#define HOT 8u         /* in-memory objects read during the spill */

struct spill_ctx {
    ss_client *c;
    char dir[160];
    bool own_dir;
    char sock[160];
    uint64_t cap, objsize;
    unsigned n, qd;
    uint32_t stream;
    const void *src;
    struct samples put, spill, restore, get_us;
    uint64_t spilled, restored; /* objects, over the measured reps */
};

/* ------------------------------------------------------ the disk's rate */

struct disk_arg {
    const char *dir;
    uint64_t len;
    unsigned qd;
    const void *src;
    void *buf; /* qd x 1 MiB, 4 KiB aligned, for O_DIRECT */
    struct samples w, r;
    bool direct_w, direct_r;
};

#define CHUNK (1u << 20)

/* len bytes in CHUNK pieces at queue depth qd: writes from src (64 MiB,
 * reused), reads into buf (qd chunks). Dies on an error. */
static void uring_seq(struct disk_arg *a, int fd, bool write, const char *path)
{
    struct io_uring ring;
    uint64_t next = 0, done = 0;
    unsigned inflight = 0;
    int rc = io_uring_queue_init(a->qd, &ring, 0);

    if (rc < 0)
        die_rc(rc, "io_uring_queue_init(%u)", a->qd);
    while (done < a->len) {
        while (inflight < a->qd && next < a->len) {
            struct io_uring_sqe *sqe = io_uring_get_sqe(&ring);
            unsigned slot = (unsigned)((next / CHUNK) % a->qd);

            if (write)
                io_uring_prep_write(sqe, fd, (const char *)a->src + next % (64 * SS_MiB), CHUNK,
                                    next);
            else
                io_uring_prep_read(sqe, fd, (char *)a->buf + (uint64_t)slot * CHUNK, CHUNK,
                                   next);
            next += CHUNK;
            inflight++;
        }
        io_uring_submit(&ring);
        struct io_uring_cqe *cqe;
        if ((rc = io_uring_wait_cqe(&ring, &cqe)) < 0)
            die_rc(rc, "io_uring_wait_cqe on %s", path);
        if (cqe->res != (int)CHUNK)
            die_rc(cqe->res < 0 ? cqe->res : -EIO, "%s %s: short transfer %d",
                   write ? "writing" : "reading", path, cqe->res);
        io_uring_cqe_seen(&ring, cqe);
        inflight--;
        done += CHUNK;
    }
    io_uring_queue_exit(&ring);
}

/* The same bytes as one rep spills, written sequentially to one file
 * (O_DIRECT, io_uring at the spill queue depth) with one fdatasync, then
 * read back the same way. */
static int rep_disk(struct bench *b, void *arg, int rep, char *why)
{
    struct disk_arg *a = arg;
    char path[200];
    uint64_t t0, t1, t2;
    int fd;

    (void)b;
    (void)why;
    snprintf(path, sizeof(path), "%s/disk-baseline", a->dir);
    fd = open(path, O_CREAT | O_TRUNC | O_WRONLY | O_CLOEXEC | O_DIRECT, 0600);
    a->direct_w = fd >= 0;
    if (fd < 0)
        fd = open(path, O_CREAT | O_TRUNC | O_WRONLY | O_CLOEXEC, 0600);
    if (fd < 0)
        die_rc(-errno, "creating %s", path);
    t0 = now_ns();
    uring_seq(a, fd, true, path);
    if (fdatasync(fd) < 0)
        die_rc(-errno, "fdatasync %s", path);
    t1 = now_ns();
    close(fd);
    fd = open(path, O_RDONLY | O_CLOEXEC | O_DIRECT);
    a->direct_r = fd >= 0;
    if (fd < 0) {
        fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
            die_rc(-errno, "opening %s", path);
        (void)posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
    }
    t2 = now_ns();
    uring_seq(a, fd, false, path);
    if (rep >= 0) {
        samples_add(&a->w, gbps(a->len, t1 - t0));
        samples_add(&a->r, gbps(a->len, now_ns() - t2));
    }
    close(fd);
    unlink(path);
    return 0;
}

/* ------------------------------------------------------- the spill store */

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    if (ftw->level > 0)
        remove(path);
    return 0;
}

static void spill_close(struct spill_ctx *x)
{
    if (x->c)
        ss_disconnect(x->c);
    x->c = NULL;
    /* spilled files are meant to outlive the store: ours must not */
    if (x->own_dir) {
        nftw(x->dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
        rmdir(x->dir);
    }
}

static int spill_open(struct bench *b, struct spill_ctx *x, char *why)
{
#ifndef SS_SPILL_MODE_ON
    (void)b;
    (void)x;
    snprintf(why, WHY_LEN, "not available: spilling not built");
    return SKIP;
#else
    static const ss_option saved_opts[] = { SS_OPT_CAPACITY, SS_OPT_POOL_SIZE,
                                            SS_OPT_POOL_CLASSES, SS_OPT_SPILL_DIR };
    char saved[4][PATH_MAX], v[32], path[PATH_MAX];
    const char *env = getenv("SEALSTORE_SPILL_DIR");
    ss_stats st;
    int rc;

    if (b->socket_opt) {
        snprintf(why, WHY_LEN,
                 "with --socket the bench does not fill a running store past its capacity");
        return SKIP;
    }
    if (env && env[0] && strcmp(env, "off") != 0) {
        snprintf(x->dir, sizeof(x->dir), "%s", env);
    } else {
        snprintf(x->dir, sizeof(x->dir), "/var/tmp/sealstore-bench-spill.XXXXXX");
        if (!mkdtemp(x->dir))
            die_rc(-errno, "mkdtemp(%s)", x->dir);
        x->own_dir = true;
    }
    snprintf(x->sock, sizeof(x->sock), "%s/spill.sock", store_dir());
    store_track_file(x->sock);
    snprintf(path, sizeof(path), "%s.lock", x->sock);
    store_track_file(path);
    /* options are read when a store starts: set, start, put back */
    for (int i = 0; i < 4; i++)
        ss_option_get(saved_opts[i], saved[i], sizeof(saved[i]));
    CK(ss_option_set(SS_OPT_CAPACITY, fmt_size(x->cap, v, sizeof(v))));
    /* the store caps its pool at a quarter of capacity; the class is the
     * object size, so a take is a ready segment, never trimmed */
    CK(ss_option_set(SS_OPT_POOL_SIZE, fmt_size(x->cap / 4, v, sizeof(v))));
    CK(ss_option_set(SS_OPT_POOL_CLASSES, fmt_size(x->objsize, v, sizeof(v))));
    CK(ss_option_set(SS_OPT_SPILL_DIR, x->dir));
    rc = ss_connect(x->sock, SS_CONNECT_EMBED, &x->c);
    for (int i = 0; i < 4; i++)
        CK(ss_option_set(saved_opts[i], saved[i]));
    if (rc < 0)
        die_rc(rc, "ss_connect(%s, SS_CONNECT_EMBED) (spilling to %s)", x->sock, x->dir);
    st = store_stats(x->c);
    if (!(st.spill_mode & SS_SPILL_MODE_ON)) {
        snprintf(why, WHY_LEN, "not available: the store reports spilling off (spill_mode 0)");
        spill_close(x);
        return SKIP;
    }
    x->qd = (unsigned)st.spill_queue_depth;
    return 0;
#endif
}

#ifdef SS_SPILL_MODE_ON
static void spill_put(ss_client *c, const struct spill_ctx *x, uint32_t stream, unsigned i)
{
    ss_id id;
    void *data;

    make_id(&id, stream, i);
    CK(ss_create(c, &id, x->objsize, NULL, 0, &data));
    memcpy(data, x->src, x->objsize);
    CK(ss_seal(c, &id));
    CK(ss_release(c, &id));
}

static int rep_spill(struct bench *b, void *arg, int rep, char *why)
{
    struct spill_ctx *x = arg;
    ss_stats s0, s1, r0, r1, g0, g1;
    uint64_t t0, t1, restored = 0;
    unsigned half = x->n / 2, quarter = x->n / 4;

    (void)b;
    s0 = store_stats(x->c);
    t0 = now_ns();
    for (unsigned i = 0; i < x->n; i++)
        spill_put(x->c, x, x->stream, i);
    t1 = now_ns();
    s1 = store_stats(x->c);
    /* the newer half is in memory with no copy on disk: gone, so that the
     * restores below are reads only, not reads mixed with the spills that
     * would make room for them */
    for (unsigned i = half; i < x->n; i++) {
        ss_id id;

        make_id(&id, x->stream, i);
        CK(ss_delete(x->c, &id));
    }
    /* the oldest quarter (spilled: LRU), SPILL_BATCH per get: restores in
     * parallel */
    r0 = store_stats(x->c);
    for (unsigned i = 0; i < quarter; i += SPILL_BATCH) {
        ss_id ids[SPILL_BATCH];
        ss_object o[SPILL_BATCH];
        unsigned k = quarter - i < SPILL_BATCH ? quarter - i : SPILL_BATCH;
        int rc;

        for (unsigned j = 0; j < k; j++)
            make_id(&ids[j], x->stream, i + j);
        rc = ss_get(x->c, ids, k, 60000, o);
        if (rc != (int)k)
            die_rc(rc < 0 ? rc : 0, "ss_get of %u sealed (maybe spilled) objects returned %d",
                   k, rc);
        for (unsigned j = 0; j < k; j++)
            CK(ss_release(x->c, &ids[j]));
    }
    r1 = store_stats(x->c);
    /* the next quarter one per get: the latency of a get that restores */
    for (unsigned i = quarter; i < half; i++) {
        ss_object o;
        ss_id id;
        uint64_t a;
        int rc;

        make_id(&id, x->stream, i);
        g0 = store_stats(x->c);
        a = now_ns();
        rc = ss_get(x->c, &id, 1, 60000, &o);
        a = now_ns() - a;
        if (rc != 1)
            die_rc(rc < 0 ? rc : 0, "ss_get of a sealed (maybe spilled) object returned %d", rc);
        g1 = store_stats(x->c);
        CK(ss_release(x->c, &id));
        if (g1.restores > g0.restores) {
            restored++;
            if (rep >= 0)
                samples_add(&x->get_us, (double)a / 1e3);
        }
    }
    for (unsigned i = 0; i < half; i++) {
        ss_id id;

        make_id(&id, x->stream, i);
        CK(ss_delete(x->c, &id));
    }
    if (s1.spills == s0.spills) {
        snprintf(why, WHY_LEN,
                 "the store spilled nothing while %" PRIu64 " MiB went into a %" PRIu64
                 " MiB store",
                 (uint64_t)(x->n * x->objsize / SS_MiB), (uint64_t)(x->cap / SS_MiB));
        return SKIP;
    }
    if (rep < 0)
        return 0;
    samples_add(&x->put, gbps(x->n * x->objsize, t1 - t0));
    samples_add(&x->spill, gbps(s1.spill_bytes - s0.spill_bytes, s1.spill_ns - s0.spill_ns));
    if (r1.restore_ns > r0.restore_ns)
        samples_add(&x->restore,
                    gbps(r1.restore_bytes - r0.restore_bytes, r1.restore_ns - r0.restore_ns));
    x->spilled += s1.spills - s0.spills;
    x->restored += (r1.restores - r0.restores) + restored;
    return 0;
}

/* ----------------------------------------- in-memory gets during a spill */

struct lat_ctx {
    struct bench *b;
    struct spill_ctx *x;
    ss_client *reader, *writer;
    _Atomic bool stop;
    unsigned written;
};

static void hot_id(ss_id *id, unsigned k)
{
    make_id(id, 0x61000000u, k);
}

static uint64_t hot_size(unsigned k)
{
    return k % 2 ? SS_MiB : 1024;
}

/* get+release of the hot set until *stop (or n ops when n > 0) */
static void read_hot(struct lat_ctx *l, struct samples *us, uint64_t n, uint64_t until_ns)
{
    for (uint64_t i = 0; n ? i < n : !l->stop; i++) {
        ss_id id;
        ss_object o;
        uint64_t t0;

        hot_id(&id, (unsigned)(i % HOT));
        t0 = now_ns();
        int rc = ss_get(l->reader, &id, 1, 5000, &o);
        if (rc != 1)
            die_rc(rc < 0 ? rc : -ENOENT, "ss_get of an in-memory object during a spill");
        CK(ss_release(l->reader, &id));
        samples_add(us, (double)(now_ns() - t0) / 1e3);
        if (until_ns && now_ns() >= until_ns)
            break;
    }
}

static void *lat_writer(void *arg)
{
    struct lat_ctx *l = arg;

    for (unsigned i = 0; i < l->x->n; i++) {
        spill_put(l->writer, l->x, 0x62000000u, i);
        l->written++;
    }
    l->stop = true;
    return NULL;
}

/* Idle figure, then the figure during a spill of 2x capacity. */
static void measure_latency(struct bench *b, struct spill_ctx *x, struct samples *idle,
                            struct samples *busy, uint64_t *spilled)
{
    struct lat_ctx l = { .b = b, .x = x };
    pthread_t th;
    ss_stats s0, s1;

    CK(ss_connect(x->sock, 0, &l.reader));
    CK(ss_connect(x->sock, 0, &l.writer));
    for (unsigned k = 0; k < HOT; k++) {
        ss_id id;
        ss_object o;
        hot_id(&id, k);
        if (hot_size(k) <= 65536) {
            CK(ss_put(x->c, &id, x->src, hot_size(k), NULL, 0));
        } else {
            void *p;
            CK(ss_create(x->c, &id, hot_size(k), NULL, 0, &p));
            memcpy(p, x->src, hot_size(k));
            CK(ss_seal(x->c, &id));
            CK(ss_release(x->c, &id));
        }
        /* held by the bench: these stay in memory whatever spills */
        if (ss_get(x->c, &id, 1, 0, &o) != 1)
            die_rc(-ENOENT, "hot object");
    }
    read_hot(&l, idle, 200, 0); /* warm-up, not filed */
    samples_free(idle);
    read_hot(&l, idle, 0, now_ns() + b->duration_ns);
    s0 = store_stats(x->c);
    if (pthread_create(&th, NULL, lat_writer, &l) != 0)
        die_rc(-EAGAIN, "pthread_create");
    read_hot(&l, busy, 0, 0);
    pthread_join(th, NULL);
    s1 = store_stats(x->c);
    *spilled = s1.spills - s0.spills;
    for (unsigned i = 0; i < x->n; i++) {
        ss_id id;
        make_id(&id, 0x62000000u, i);
        CK(ss_delete(x->c, &id));
    }
    for (unsigned k = 0; k < HOT; k++) {
        ss_id id;
        hot_id(&id, k);
        CK(ss_release(x->c, &id));
        CK(ss_delete(x->c, &id));
    }
    ss_disconnect(l.reader);
    ss_disconnect(l.writer);
}
#endif

void run_spill(struct bench *b)
{
    struct spill_ctx x = {0};
    struct disk_arg d = {0};
    struct fig spill = {0}, restore = {0}, put = {0}, get = {0}, dw = {0}, dr = {0};
    struct fig lat_idle = {0}, lat_busy = {0};
    struct samples s_idle = {0}, s_busy = {0};
    char why[WHY_LEN] = "", name[64], sz[16];
    int reps = b->reps < 3 ? b->reps : 3; /* each rep writes 2x capacity to disk */
    int saved = b->reps;

    x.cap = b->smoke ? 32 * SS_MiB : b->quick ? 128 * SS_MiB : 256 * SS_MiB;
    x.objsize = x.cap / 8;
    x.n = 16;
    x.stream = 0x60000000u;
    x.src = src_buf(x.objsize);
    b->reps = reps;
    progress("[spill] starting a store with capacity %s", fmt_size(x.cap, sz, sizeof(sz)));
    if (spill_open(b, &x, why) == 0) {
#ifdef SS_SPILL_MODE_ON
        d.dir = x.dir;
        d.len = x.n * x.objsize;
        d.qd = x.qd ? x.qd : 8;
        d.src = src_buf(64 * SS_MiB);
        if (posix_memalign(&d.buf, 4096, (size_t)d.qd * CHUNK) != 0)
            die_rc(-ENOMEM, "posix_memalign");
        if (run_reps(b, "disk O_DIRECT write+read", reps, rep_disk, &d, why) == 0) {
            fig_set(&dw, &d.w);
            fig_set(&dr, &d.r);
            if (!d.direct_w)
                snprintf(dw.note, sizeof(dw.note), "O_DIRECT refused here: buffered writes");
            if (!d.direct_r)
                snprintf(dr.note, sizeof(dr.note), "O_DIRECT refused here: buffered after "
                                                   "POSIX_FADV_DONTNEED");
        }
        free(d.buf);
        samples_free(&d.w);
        samples_free(&d.r);
        why[0] = '\0';
        if (run_reps(b, "put 2x capacity, get all back", reps, rep_spill, &x, why) == 0) {
            fig_set(&put, &x.put);
            fig_set(&spill, &x.spill);
            if (x.restore.n)
                fig_set(&restore, &x.restore);
            else
                fig_skip(&restore, "no get restored an object");
            if (x.get_us.n)
                fig_set(&get, &x.get_us);
            else
                fig_skip(&get, "no get restored an object");
            snprintf(spill.note, sizeof(spill.note),
                     "%" PRIu64 " objects spilled, %" PRIu64 " restored in %d reps; dir %.48s",
                     x.spilled, x.restored, reps, x.dir);
            snprintf(restore.note, sizeof(restore.note),
                     "%u ids per ss_get: restores in parallel", SPILL_BATCH);
            uint64_t lat_spilled = 0;
            progress("[spill] in-memory get+release, idle then during a spill");
            measure_latency(b, &x, &s_idle, &s_busy, &lat_spilled);
            fig_set(&lat_idle, &s_idle);
            fig_set(&lat_busy, &s_busy);
            snprintf(lat_busy.note, sizeof(lat_busy.note),
                     "%zu gets while another client put %" PRIu64 " MiB (%" PRIu64
                     " objects spilled)",
                     s_busy.n, (uint64_t)(x.n * x.objsize / SS_MiB), lat_spilled);
        }
#endif
        spill_close(&x);
    }
    b->reps = saved;
    if (why[0]) {
        fig_skip(&spill, why);
        fig_skip(&restore, why);
        fig_skip(&put, why);
        fig_skip(&get, why);
        fig_skip(&lat_idle, why);
        fig_skip(&lat_busy, why);
        if (!dw.done) {
            fig_skip(&dw, why);
            fig_skip(&dr, why);
        }
    }
    samples_free(&x.put);
    samples_free(&x.spill);
    samples_free(&x.restore);
    samples_free(&x.get_us);
    samples_free(&s_idle);
    samples_free(&s_busy);

    fmt_size(x.objsize, sz, sizeof(sz));
    snprintf(name, sizeof(name), "spill, %s objects", sz);
    report(b, &(struct rowspec){.figure = name, .metric = "spill_gbps", .unit = "GB/s",
                                .size = x.objsize, .f = &spill,
                                .bl_name = "disk O_DIRECT write+fdatasync", .bl = &dw});
    snprintf(name, sizeof(name), "restore on get, %s objects", sz);
    report(b, &(struct rowspec){.figure = name, .metric = "restore_gbps", .unit = "GB/s",
                                .size = x.objsize, .f = &restore,
                                .bl_name = "disk O_DIRECT read", .bl = &dr});
    snprintf(name, sizeof(name), "put at 2x capacity, %s", sz);
    report(b, &(struct rowspec){.figure = name, .metric = "put_pressure_gbps", .unit = "GB/s",
                                .size = x.objsize, .f = &put,
                                .bl_name = "disk O_DIRECT write+fdatasync", .bl = &dw});
    snprintf(name, sizeof(name), "get that restores, %s p50", sz);
    report(b, &(struct rowspec){.figure = name, .metric = "restore_get_p50", .unit = "us",
                                .size = x.objsize, .f = &get,
                                .bl_name = "disk read time",
                                .bl_value = fig_ok(&dr) && fig_ok(&get)
                                                ? (double)x.objsize / dr.med / 1e3
                                                : NAN});
    report(b, &(struct rowspec){.figure = "in-memory get during spill p50",
                                .metric = "get_during_spill_p50", .unit = "us", .f = &lat_busy,
                                .bl_name = "in-memory get, idle p50", .bl = &lat_idle});
    report(b, &(struct rowspec){.figure = "in-memory get during spill p99",
                                .metric = "get_during_spill_p99", .unit = "us", .f = &lat_busy,
                                .stat = ST_P99, .bl_name = "in-memory get, idle p99",
                                .bl = &lat_idle, .bl_stat = ST_P99});
    print_table(b, "spill and restore: a store of small capacity given twice its capacity, "
                   "then every object read back; in-memory gets while it spills");
}
