/* SPDX-License-Identifier: MIT */
/*
 * Scenarios on the store through the public API (sealstore.h): put, get,
 * batch, seal; and the store connection every store scenario shares.
 *
 * Which store. By default the bench starts its own, embedded
 * (ss_connect(path, SS_CONNECT_EMBED)) on a socket in a private temp dir
 * that is removed at exit; with --socket PATH it measures whatever serves
 * PATH, e.g. a running sealstored. Children of the multi-process scenarios
 * connect to the same path as ordinary clients.
 *
 * Pool warm and pool exhausted. "Warm" is the store as configured, measured
 * after its populator has refilled (the bench polls ss_stats_get until the
 * pool's ready bytes cover the object and stop moving, untimed), so every
 * timed create can take a ready, pre-faulted segment; the row's note says
 * how many really were pool hits. It waits before the first op and after
 * each op that drew from the pool; ops that take nothing from it (arena
 * puts, staged creates) run back to back, as memcpy's baseline does. "Exhausted" is a second embedded store
 * started with SEALSTORE_POOL_SIZE=0: every create makes and populates its
 * segment on demand, which is what a store whose populator cannot keep up
 * does. With --socket the bench cannot empty a running store's pool, so the
 * exhausted rows are skipped (run --socket against a sealstored started with
 * SEALSTORE_POOL_SIZE=0 to get them as "warm" rows).
 *
 * So that "warm" means warm at every measured size, the embedded warm store
 * gets a pool class for the largest object the run creates and a budget of
 * the default plus that size, unless SEALSTORE_POOL_SIZE or
 * SEALSTORE_POOL_CLASSES is set (then the environment is used as is). The
 * header says what was set.
 */
#include "bench.h"

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "options.h"

/* How long the warm pool may take to refill before a put goes ahead on a
 * cold pool anyway (4K shmem populates ~1.7 GB/s: 1 GiB in ~0.6 s). */
#define POOL_WAIT_MS 5000
#define POOL_POLL_MS 5
#define MAXU(a, b) ((a) > (b) ? (a) : (b))

struct store_ctx {
    ss_client *warm, *cold;
    char dir[64];                 /* our temp dir; "" with --socket */
    char warm_path[128], cold_path[128], trusted_path[128];
    ss_client *trusted;           /* SEALSTORE_TRUST_PRODUCERS=on, put rows */
    char cold_why[WHY_LEN];       /* why there is no exhausted store */
    char files[8][160];           /* what the signal handler removes */
    uint64_t small_max;
    uint64_t ready0;              /* warm pool ready bytes once settled */
    uint32_t tag;                 /* ids of this run */
};

static struct store_ctx g_st;
static bool g_cleanup_armed;
static pid_t g_owner; /* forked children inherit atexit and handlers: not theirs */

/* ---------------------------------------------------------- connection */

const char *store_path(struct bench *b)
{
    return b->socket_opt ? b->socket_opt : g_st.warm_path;
}

void make_id(ss_id *id, uint32_t stream, uint64_t seq)
{
    memset(id, 0, sizeof(*id));
    memcpy(id->b, &g_st.tag, 4);
    memcpy(id->b + 4, &stream, 4);
    memcpy(id->b + 8, &seq, 8);
}

ss_client *child_connect(struct bench *b)
{
    ss_client *c;
    int rc = ss_connect(store_path(b), 0, &c);

    if (rc < 0)
        die_rc(rc, "child: ss_connect(%s)", store_path(b));
    return c;
}

const char *store_dir(void)
{
    return g_st.dir;
}

void store_track_file(const char *path)
{
    for (size_t i = 0; i < SS_ARRAY_SIZE(g_st.files); i++)
        if (!g_st.files[i][0]) {
            snprintf(g_st.files[i], sizeof(g_st.files[i]), "%s", path);
            return;
        }
}

ss_stats store_stats(ss_client *c)
{
    ss_stats st = {.size = sizeof(st), .version = SS_STATS_VERSION};

    CK(ss_stats_get(c, &st));
    return st;
}

static ss_stats stats_of(ss_client *c)
{
    ss_stats st = {.size = sizeof(st), .version = SS_STATS_VERSION};

    CK(ss_stats_get(c, &st));
    return st;
}

void store_close(void)
{
    /* only the process that opened the store cleans up: a child that dies
     * through exit() must not stop a store thread it does not have */
    if (getpid() != g_owner)
        return;
    if (g_st.trusted)
        ss_disconnect(g_st.trusted);
    if (g_st.cold)
        ss_disconnect(g_st.cold);
    if (g_st.warm)
        ss_disconnect(g_st.warm);
    g_st.cold = g_st.warm = g_st.trusted = NULL;
    if (g_st.dir[0]) {
        for (size_t i = 0; i < SS_ARRAY_SIZE(g_st.files); i++)
            if (g_st.files[i][0])
                unlink(g_st.files[i]);
        rmdir(g_st.dir);
        g_st.dir[0] = '\0';
    }
}

static void on_signal(int sig)
{
    /* async-signal-safe: unlink and rmdir only; the kernel frees the rest */
    if (getpid() != g_owner) {
        signal(sig, SIG_DFL);
        raise(sig);
        return;
    }
    for (size_t i = 0; i < SS_ARRAY_SIZE(g_st.files); i++)
        if (g_st.files[i][0])
            unlink(g_st.files[i]);
    if (g_st.dir[0])
        rmdir(g_st.dir);
    hugepages_give_back(); /* this handler replaced --hugepages' own */
    signal(sig, SIG_DFL);
    raise(sig);
}

/* Wait until the pool's ready bytes cover `need` and have not moved for
 * still_ms (the populator is done, or working on something else), or until
 * timeout. Returns the ready bytes. Untimed by every caller. */
static uint64_t pool_settle_for(ss_client *c, uint64_t need, int still_ms, int timeout_ms)
{
    uint64_t last = UINT64_MAX, t_end = now_ns() + (uint64_t)timeout_ms * 1000000ull;
    int still = 0;

    for (;;) {
        ss_stats st = stats_of(c);

        if (st.pool_ready_bytes == last)
            still++;
        else
            still = 0;
        last = st.pool_ready_bytes;
        if ((last >= need && still >= still_ms / POOL_POLL_MS) || now_ns() > t_end)
            return last;
        usleep(POOL_POLL_MS * 1000);
    }
}

static uint64_t pool_settle(ss_client *c, uint64_t need, int timeout_ms)
{
    return pool_settle_for(c, need, 50, timeout_ms);
}

static uint64_t largest_created(const struct bench *b)
{
    uint64_t l = 0;

    for (int i = 0; i < b->nsizes; i++)
        l = MAXU(l, b->sizes[i]);
    for (int i = 0; i < 3; i++)
        l = MAXU(l, b->seal_sizes[i]);
    for (int i = 0; i < 2; i++)
        l = MAXU(l, MAXU(b->e2e_sizes[i], b->cl_sizes[i]));
    return l;
}

/* Give the warm store a pool that can hold the run's largest object. */
static void tune_pool(struct bench *b, char *said, size_t len)
{
    uint64_t big = largest_created(b), budget = ss__opt_size(SS_OPT_POOL_SIZE);
    ss__sizelist cl = ss__opt_sizelist(SS_OPT_POOL_CLASSES);
    char v[64], text[512] = "";
    size_t n;

    said[0] = '\0';
    if (getenv("SEALSTORE_POOL_SIZE") || getenv("SEALSTORE_POOL_CLASSES")) {
        snprintf(said, len, "pool as the environment sets it");
        return;
    }
    if (b->smoke) /* make check: stay small */
        budget = 64 * SS_MiB;
    if (big > g_st.small_max && (cl.n == 0 || cl.v[cl.n - 1] < big)) {
        for (unsigned i = 0; i < cl.n; i++) {
            n = strlen(text);
            snprintf(text + n, sizeof(text) - n, "%s,", fmt_size(cl.v[i], v, sizeof(v)));
        }
        n = strlen(text);
        snprintf(text + n, sizeof(text) - n, "%s", fmt_size(big, v, sizeof(v)));
        CK(ss_option_set(SS_OPT_POOL_CLASSES, text));
    }
    if (big > g_st.small_max && !b->smoke)
        budget += big;
    CK(ss_option_set(SS_OPT_POOL_SIZE, fmt_size(budget, v, sizeof(v))));
    ss_option_get(SS_OPT_POOL_CLASSES, text, sizeof(text));
    snprintf(said, len, "set by the bench: SEALSTORE_POOL_SIZE=%s SEALSTORE_POOL_CLASSES=%s", v,
             text);
}

static void print_store_stats(const char *label, ss_client *c)
{
    ss_stats st = stats_of(c);

    printf("%s capacity %.1f GiB, resident %.1f MiB, pool ready %.1f MiB (hits %" PRIu64
           ", misses %" PRIu64 "), segment bytes 4K/THP/2M/1G %.0f/%.0f/%.0f/%.0f MiB, "
           "small segments %.1f MiB, objects %" PRIu64 ", clients %" PRIu64 "\n",
           label, (double)st.capacity / (double)SS_GiB, (double)st.resident_bytes / (double)SS_MiB,
           (double)st.pool_ready_bytes / (double)SS_MiB, st.pool_hits, st.pool_misses,
           (double)st.bytes_by_backing[0] / (double)SS_MiB,
           (double)st.bytes_by_backing[1] / (double)SS_MiB,
           (double)st.bytes_by_backing[2] / (double)SS_MiB,
           (double)st.bytes_by_backing[3] / (double)SS_MiB,
           (double)st.small_segment_bytes / (double)SS_MiB, st.objects, st.clients);
}

static void obj_backing(ss_client *c, const ss_id *id, char *out, size_t len);

/*
 * The header's page-size line: the backing the store gives a large object,
 * found the only sure way, by putting one (untimed, deleted at once) and
 * asking ss_list. With SEALSTORE_HUGEPAGES=auto a pool another program
 * fills or drains mid-run changes it, so every row names its own backing.
 */
static void print_pages(struct bench *b)
{
    uint64_t size = b->smoke ? 4 * SS_MiB : 64 * SS_MiB;
    char bk[16], sz[16], hp[64] = "";
    ss_id id;

    make_id(&id, 0, 0);
    CK(ss_put(g_st.warm, &id, src_buf(size), size, NULL, 0));
    obj_backing(g_st.warm, &id, bk, sizeof(bk));
    CK(ss_delete(g_st.warm, &id));
    (void)ss_option_get(SS_OPT_HUGEPAGES, hp, sizeof(hp));
    printf("pages     large objects on %s pages now (a %s probe put; SEALSTORE_HUGEPAGES=%s%s; "
           "the hugepage pool is shared: each row names the backing it got)\n",
           strcmp(bk, "4K") == 0 ? "4 KiB" : bk, fmt_size(size, sz, sizeof(sz)),
           b->socket_opt ? "as the running store has it" : hp[0] ? hp : "auto",
           b->hugepages_opt > 0 ? ", hugepages reserved by --hugepages" : "");
}

void store_open(struct bench *b)
{
    char said[600] = "", v[128];
    uint64_t t0;
    int rc;

    if (b->st)
        return;
    b->st = (struct store_ctx *)&g_st;
    g_st.tag = (uint32_t)getpid() ^ (uint32_t)now_ns();
    g_st.small_max = ss__opt_size(SS_OPT_SMALL_MAX);
    if (!g_cleanup_armed) {
        g_owner = getpid();
        atexit(store_close);
        signal(SIGINT, on_signal);
        signal(SIGTERM, on_signal);
        signal(SIGHUP, on_signal);
        g_cleanup_armed = true;
    }
    progress("starting the store");
    if (b->socket_opt) {
        rc = ss_connect(b->socket_opt, 0, &g_st.warm);
        if (rc < 0)
            die_rc(rc, "--socket %s: ss_connect", b->socket_opt);
        snprintf(g_st.cold_why, WHY_LEN,
                 "with --socket the bench cannot empty a running store's pool "
                 "(measure a sealstored started with SEALSTORE_POOL_SIZE=0 instead)");
    } else {
        snprintf(g_st.dir, sizeof(g_st.dir), "/tmp/sealstore-bench.XXXXXX");
        if (!mkdtemp(g_st.dir))
            die_rc(-errno, "mkdtemp(%s)", g_st.dir);
        snprintf(g_st.warm_path, sizeof(g_st.warm_path), "%s/warm.sock", g_st.dir);
        snprintf(g_st.cold_path, sizeof(g_st.cold_path), "%s/cold.sock", g_st.dir);
        snprintf(g_st.files[0], sizeof(g_st.files[0]), "%s", g_st.warm_path);
        snprintf(g_st.files[1], sizeof(g_st.files[1]), "%s.lock", g_st.warm_path);
        snprintf(g_st.files[2], sizeof(g_st.files[2]), "%s", g_st.cold_path);
        snprintf(g_st.files[3], sizeof(g_st.files[3]), "%s.lock", g_st.cold_path);
        snprintf(g_st.trusted_path, sizeof(g_st.trusted_path), "%s/trusted.sock", g_st.dir);
        snprintf(g_st.files[4], sizeof(g_st.files[4]), "%s", g_st.trusted_path);
        snprintf(g_st.files[5], sizeof(g_st.files[5]), "%s.lock", g_st.trusted_path);
        tune_pool(b, said, sizeof(said));
        rc = ss_connect(g_st.warm_path, SS_CONNECT_EMBED, &g_st.warm);
        if (rc < 0)
            die_rc(rc, "ss_connect(%s, SS_CONNECT_EMBED)", g_st.warm_path);
        /* options are read when a store starts: pool 0 for the second one
         * only, then back to what the warm one got */
        ss_option_get(SS_OPT_POOL_SIZE, v, sizeof(v));
        CK(ss_option_set(SS_OPT_POOL_SIZE, "0"));
        rc = ss_connect(g_st.cold_path, SS_CONNECT_EMBED, &g_st.cold);
        CK(ss_option_set(SS_OPT_POOL_SIZE, v));
        if (rc < 0)
            die_rc(rc, "ss_connect(%s, SS_CONNECT_EMBED) (pool 0)", g_st.cold_path);
    }
    progress("waiting for the store's pool to fill");
    t0 = now_ns();
    /* settled: no change for 300 ms (the
     * populator finishes a 256 MiB segment in ~150 ms; a 1 GiB one may
     * still be on its way, the one thing left running behind the
     * baselines) */
    g_st.ready0 = pool_settle_for(g_st.warm, 0, 300, POOL_WAIT_MS * 2);
    progress_clear();
    if (b->socket_opt) {
        printf("store     --socket %s (a running store; its options are its own)\n",
               b->socket_opt);
    } else {
        printf("store     embedded: ss_connect(SS_CONNECT_EMBED) in this process at %s "
               "(temp dir removed at exit)\n",
               g_st.warm_path);
        printf("          warm pool: %s\n", said);
        printf("          pool exhausted: a second embedded store with SEALSTORE_POOL_SIZE=0 "
               "at %s\n",
               g_st.cold_path);
        printf("          trusted producers: the put table's 'trusted' rows use a third "
               "embedded store at %s with SEALSTORE_TRUST_PRODUCERS=on and "
               "SEALSTORE_POOL_SIZE=0 (creates written in place in memory the producer "
               "reuses; a producer could write its own sealed objects); every other row: "
               "strict mode (no process but the store can write a sealed object)\n",
               g_st.trusted_path);
        printf("options   in force for the warm store:");
        for (int o = 0; o < SS_OPT__COUNT; o++) {
            const char *name = ss_option_name((ss_option)o);

            if (name && ss_option_get((ss_option)o, v, sizeof(v)) >= 0)
                printf(" %s=%s", name + 10, v[0] ? v : "\"\"");
        }
        printf("\n");
    }
    printf("          pool settled at %.0f MiB ready after %.2f s\n",
           (double)g_st.ready0 / (double)SS_MiB, (double)(now_ns() - t0) / 1e9);
    print_pages(b);
    print_store_stats("stats    ", g_st.warm);
    printf("reads     get and /dev/shm open+map do not touch the object's bytes (access cost, "
           "not reading); fills copy from a faulted buffer\n");
    fflush(stdout);
}

void store_summary(struct bench *b)
{
    ss_stats st;

    if (!g_st.warm)
        return;
    st = stats_of(g_st.warm);
    printf("\n== store after the run\n");
    print_store_stats("warm     ", g_st.warm);
    printf("          creates %" PRIu64 ", seals %" PRIu64 ", aborts %" PRIu64 ", gets %" PRIu64
           ", releases %" PRIu64 ", deletes %" PRIu64 ", waits %" PRIu64 " (timeouts %" PRIu64
           "), protocol errors %" PRIu64 ", bookkeeping %" PRIu64 " B\n",
           st.creates, st.seals, st.aborts, st.gets, st.releases, st.deletes, st.waits,
           st.wait_timeouts, st.protocol_errors, st.bookkeeping_bytes);
    if (g_st.cold)
        print_store_stats("exhausted", g_st.cold);
    fflush(stdout);
}

/* The backing of a live object, as ss_list reports it ("" if not found). */
static void obj_backing(ss_client *c, const ss_id *id, char *out, size_t len)
{
    ss_obj_info info[64];
    uint64_t cursor = 0;

    snprintf(out, len, "?");
    do {
        int n = ss_list(c, &cursor, info, SS_ARRAY_SIZE(info));

        if (n < 0)
            return;
        for (int i = 0; i < n; i++)
            if (memcmp(&info[i].id, id, sizeof(*id)) == 0) {
                snprintf(out, len, "%.*s", (int)sizeof(info[i].backing), info[i].backing);
                return;
            }
    } while (cursor);
}

/* ------------------------------------------------------------------ put */

static uint32_t g_stream = 1; /* id streams: one per measurement */

/* How a put_op stores its object: the call shapes a producer has. */
enum put_shape {
    SHAPE_CREATE_COPY,   /* ss_create + memcpy + ss_seal + ss_release */
    SHAPE_CREATE_MEMSET, /* the same with a memset fill (Plasma's benchmark) */
    SHAPE_PUT,           /* ss_put of one buffer */
    SHAPE_PUTV,          /* ss_putv of PUTV_PIECES buffers: a header and 3 parts */
};

/* ss_putv's pieces: a header of up to PUTV_HEAD bytes (a quarter of a tiny
 * object), then the rest in 3 parts, as a pickle-5 put sends its header,
 * stream and out-of-band buffers. */
#define PUTV_PIECES 4
#define PUTV_HEAD 64

struct put_arg {
    ss_client *c;
    uint64_t size;
    uint32_t stream;
    enum put_shape shape;
    /* Let the pool refill before an op, untimed: before the first, and
     * before each one that follows an op that drew from the pool (a hit or
     * a miss). An op that took nothing from it (an arena put, a staged
     * create) left the pool as it was, and waiting for it anyway would
     * idle every thread for 50 ms before each timed op: an op after such a
     * pause finds the caches and TLBs cold (a 1 MiB memcpy alone then runs
     * at about 0.6x the streaming memcpy baseline here), which measures
     * the pause, not the put. */
    bool wait;
    bool settled;  /* the pool is as the last wait left it */
    bool never;    /* the pool never covered the size: waiting stopped */
    const void *src;
    struct iovec iov[PUTV_PIECES]; /* SHAPE_PUTV: pieces of src */
    uint64_t ops, hits, misses; /* pool, over measured and warm-up ops */
    char backing[16];
};

/* Cut src[0..size) into PUTV_PIECES iovecs in a->iov. */
static void putv_pieces(struct put_arg *a)
{
    const char *p = a->src;
    uint64_t head = a->size / 4 < PUTV_HEAD ? a->size / 4 : PUTV_HEAD;
    uint64_t rest = a->size - head, part = rest / 3;

    a->iov[0] = (struct iovec){(void *)p, (size_t)head};
    a->iov[1] = (struct iovec){(void *)(p + head), (size_t)part};
    a->iov[2] = (struct iovec){(void *)(p + head + part), (size_t)part};
    a->iov[3] = (struct iovec){(void *)(p + head + 2 * part), (size_t)(rest - 2 * part)};
}

static uint64_t put_op(struct bench *b, void *arg, uint64_t i)
{
    struct put_arg *a = arg;
    bool large = a->size > g_st.small_max;
    ss_stats s0 = {0}, s1;
    uint64_t t0, t1;
    ss_id id;
    void *data;

    make_id(&id, a->stream, i);
    if (a->wait && large && !a->never && !a->settled) {
        if (pool_settle(a->c, a->size, POOL_WAIT_MS) < a->size)
            a->never = true; /* a pool too small for it: measure, do not wait */
        else
            a->settled = true;
    }
    if (large)
        s0 = stats_of(a->c);
    t0 = now_ns();
    switch (a->shape) {
    case SHAPE_PUT:
        CK(ss_put(a->c, &id, a->src, a->size, NULL, 0));
        break;
    case SHAPE_PUTV:
        CK(ss_putv(a->c, &id, a->iov, PUTV_PIECES, NULL, 0, 0));
        break;
    case SHAPE_CREATE_COPY:
    case SHAPE_CREATE_MEMSET:
        CK(ss_create(a->c, &id, a->size, NULL, 0, &data));
        if (a->shape == SHAPE_CREATE_COPY)
            memcpy(data, a->src, a->size);
        else /* a new value each time: rewriting the bytes memory already
              * holds ran 1.5x faster on the VM this was measured on, and
              * recycled memory holds the last op's */
            memset(data, (int)(0x5a + i), a->size);
        clobber(data);
        CK(ss_seal(a->c, &id));
        CK(ss_release(a->c, &id));
        break;
    }
    t1 = now_ns();
    if (large) {
        s1 = stats_of(a->c);
        a->hits += s1.pool_hits - s0.pool_hits;
        a->misses += s1.pool_misses - s0.pool_misses;
        if (s1.pool_hits != s0.pool_hits || s1.pool_misses != s0.pool_misses)
            a->settled = false; /* it drew from the pool: refill first */
    }
    a->ops++;
    if (i == 0)
        obj_backing(a->c, &id, a->backing, sizeof(a->backing));
    CK(ss_delete(a->c, &id));
    return t1 - t0;
}

/* ss_put_many of PUT_MANY_N objects of one size per op (their deletes
 * untimed). */
#define PUT_MANY_N 100u

struct put_many_arg {
    ss_client *c;
    uint32_t stream;
    ss_put_item items[PUT_MANY_N];
    int status[PUT_MANY_N];
};

static uint64_t put_many_op(struct bench *b, void *arg, uint64_t i)
{
    struct put_many_arg *a = arg;
    uint64_t t0, t1;
    int rc;

    (void)b;
    for (unsigned j = 0; j < PUT_MANY_N; j++)
        make_id(&a->items[j].id, a->stream, i * PUT_MANY_N + j);
    t0 = now_ns();
    rc = ss_put_many(a->c, a->items, PUT_MANY_N, a->status);
    t1 = now_ns();
    if (rc != (int)PUT_MANY_N)
        die_rc(rc < 0 ? rc : a->status[0], "ss_put_many of %u objects stored %d", PUT_MANY_N, rc);
    for (unsigned j = 0; j < PUT_MANY_N; j++)
        CK(ss_delete(a->c, &a->items[j].id));
    return t1 - t0;
}

/* Objects per second of ss_put_many batches of `size`. */
static void put_many_measure(struct bench *b, uint64_t size, struct opfig *o, struct fig *objs)
{
    struct put_many_arg *a = xcalloc(1, sizeof(*a));
    char label[64], sz[16];

    a->c = g_st.warm;
    a->stream = g_stream++;
    for (unsigned j = 0; j < PUT_MANY_N; j++) {
        a->items[j].data = src_buf(size);
        a->items[j].size = size;
    }
    snprintf(label, sizeof(label), "ss_put_many %s x %u", fmt_size(size, sz, sizeof(sz)),
             PUT_MANY_N);
    run_ops(b, label, b->duration_ns, 5, put_many_op, a, o);
    fig_scale(&o->ops, PUT_MANY_N, objs);
    free(a);
}

/* rtt non-NULL: bare round trips in half of every slice (run_ops_rtt) */
static void put_measure(struct bench *b, struct put_arg *a, const char *what, struct opfig *o,
                        struct opfig *rtt);

/* Sizes up to this are reported in objects/s, larger ones in GB/s. */
#define SHAPE_OBJS_MAX (64 * SS_KiB)
/* From this size on one put outlasts a slice (about 1 s for 1 GiB on 4 KiB
 * pages, plus the pool's refill before it): SHAPE_LONG_REPS slices of one
 * op each, which keeps make bench's run time in bounds. */
#define SHAPE_LONG_MIN (256 * SS_MiB)
#define SHAPE_LONG_REPS 3

/*
 * Every put call shape at every size, pool warm (refilled, untimed, before
 * each op that follows one that drew from it; deletes untimed), each
 * beside memcpy of the same bytes in this run (faulted memory, well beyond
 * the caches). Up to SHAPE_OBJS_MAX, as objects per second against the
 * streaming memcpy baseline scaled to that size; above, as GB/s against
 * memcpy in calls of the object's size (bl_memcpy_sized): the C library
 * copies a 64 MiB call differently from a 256 MiB one, at 9-10 against
 * 14-16 GB/s on the machine this was written on, and a producer's
 * alternative to a put is one call of its object's size. Either way the
 * ratio is the fraction of memcpy speed the put reaches, the figure put
 * targets are stated in.
 */
/* Why this run has no one-CPU rows, or NULL and *cpu the CPU to pin to
 * (the one the bench runs on now). */
static const char *one_cpu_why(const struct bench *b, int *cpu)
{
    *cpu = sched_getcpu();
    if (b->socket_opt)
        return "--socket: the store is another process, not pinned by the bench";
    return *cpu < 0 ? "sched_getcpu failed" : NULL;
}

/* Pin every thread of the process (the embedded store's too) to cpu, its
 * mask before into *old; cpu < 0: back to *old. Dies on failure. */
static void pin_one_cpu(int cpu, cpu_set_t *old)
{
    cpu_set_t one;
    int rc;

    if (cpu < 0) {
        if ((rc = pin_process(old, NULL)) < 0)
            die_rc(rc, "unpinning the process");
        return;
    }
    CPU_ZERO(&one);
    CPU_SET(cpu, &one);
    if ((rc = pin_process(&one, old)) < 0)
        die_rc(rc, "pinning the process to CPU %d", cpu);
}

/*
 * ss_put and create+memset+seal of `size` with the whole process (client,
 * embedded store threads) on one CPU, beside the same memcpy baseline: no
 * wake-up crosses vCPUs, so the ratio is the store's own cost. Unpinned,
 * each round trip here pays a wake-up of the idle vCPU (20-40 us on this
 * VM) and a large put pays four (client, loop, copy worker, loop, client).
 */
static void put_shapes_one_cpu(struct bench *b, uint64_t size, const struct fig *base,
                               const struct fig *mc)
{
    static const struct {
        enum put_shape shape;
        const char *name, *metric;
    } shapes[] = {
        {SHAPE_PUT, "ss_put", "shape_put_1cpu"},
        {SHAPE_CREATE_MEMSET, "create+memset+seal", "shape_create_memset_1cpu"},
    };
    bool objs = size <= SHAPE_OBJS_MAX;
    char name[80], sz[16];
    cpu_set_t old;
    int cpu;
    const char *why = one_cpu_why(b, &cpu);

    fmt_size(size, sz, sizeof(sz));
    for (size_t j = 0; j < SS_ARRAY_SIZE(shapes); j++) {
        struct put_arg a = {.c = g_st.warm, .size = size, .stream = g_stream++,
                            .shape = shapes[j].shape, .wait = true};
        struct opfig o;
        struct fig gb;

        if (why) {
            fig_skip(&o.ops, why);
            fig_skip(&gb, why);
        } else {
            pin_one_cpu(cpu, &old);
            put_measure(b, &a, shapes[j].name, &o, NULL);
            pin_one_cpu(-1, &old);
            fig_gbps(&o, size, &gb);
            snprintf(o.ops.note, sizeof(o.ops.note),
                     "client and store threads pinned to CPU %d; %s", cpu, a.backing);
            memcpy(gb.note, o.ops.note, sizeof(gb.note));
        }
        snprintf(name, sizeof(name), "%s %s, one CPU", shapes[j].name, sz);
        report(b, &(struct rowspec){.figure = name, .metric = shapes[j].metric,
                                    .backing = a.backing, .unit = objs ? "objs/s" : "GB/s",
                                    .size = size, .f = objs ? &o.ops : &gb,
                                    .bl_name = objs ? "memcpy faulted, streaming"
                                                    : "memcpy faulted, same size",
                                    .bl = objs ? base : mc});
    }
}

/* The trusted-producer store (made on first use, embedded), or NULL and
 * why not. Options are read when a store starts: set for it only. */
static ss_client *trusted_store(struct bench *b, const char **why)
{
    char pool[128], trust[16];
    int rc;

    *why = NULL;
    if (b->socket_opt) {
        *why = "with --socket the bench measures the running store's mode only";
        return NULL;
    }
    if (g_st.trusted)
        return g_st.trusted;
    ss_option_get(SS_OPT_POOL_SIZE, pool, sizeof(pool));
    ss_option_get(SS_OPT_TRUST_PRODUCERS, trust, sizeof(trust));
    CK(ss_option_set(SS_OPT_POOL_SIZE, "0"));
    CK(ss_option_set(SS_OPT_TRUST_PRODUCERS, "on"));
    rc = ss_connect(g_st.trusted_path, SS_CONNECT_EMBED, &g_st.trusted);
    CK(ss_option_set(SS_OPT_POOL_SIZE, pool));
    CK(ss_option_set(SS_OPT_TRUST_PRODUCERS, trust));
    if (rc < 0)
        die_rc(rc, "ss_connect(%s, SS_CONNECT_EMBED) (trusted producers)", g_st.trusted_path);
    return g_st.trusted;
}

static void put_shapes(struct bench *b)
{
    static const struct {
        enum put_shape shape;
        const char *name, *metric;
    } shapes[SS_ARRAY_SIZE(b->plot[0].shape)] = { /* in the plot's order */
        {SHAPE_PUT, "ss_put", "shape_put"},
        {SHAPE_PUTV, "ss_putv 4 pieces", "shape_putv"},
        {SHAPE_CREATE_MEMSET, "create+memset+seal", "shape_create_memset"},
    };
    const struct fig *mc = bl_memcpy(b), *mcs;
    int reps = b->reps;
    char name[64], sz[16];

    /* the tables before left the populator refilling (1 GiB of it after the
     * exhausted puts): let it finish, or it competes with the small puts */
    progress("[put] waiting for the store's pool to settle");
    (void)pool_settle_for(g_st.warm, 0, 300, POOL_WAIT_MS);
    /* the GB/s rows' baselines (memcpy in calls of their size), while
     * nothing of ours runs */
    for (int k = 0; k < b->nsizes; k++)
        if (b->sizes[k] > SHAPE_OBJS_MAX)
            bl_memcpy_sized(b, b->sizes[k]);

    for (int k = 0; k < b->nsizes; k++) {
        uint64_t size = b->sizes[k];
        bool objs = size <= SHAPE_OBJS_MAX;
        struct fig base, gb;

        /* run_ops cuts b->reps slices: fewer for the longest puts */
        b->reps = size >= SHAPE_LONG_MIN && reps > SHAPE_LONG_REPS ? SHAPE_LONG_REPS : reps;
        fmt_size(size, sz, sizeof(sz));
        fig_scale(mc, 1e9 / (double)size, &base);
        mcs = bl_memcpy_sized(b, size);
        for (size_t j = 0; j < SS_ARRAY_SIZE(shapes); j++) {
            struct put_arg a = {.c = g_st.warm, .size = size, .stream = g_stream++,
                                .shape = shapes[j].shape, .wait = true};
            struct opfig o;

            put_measure(b, &a, shapes[j].name, &o, NULL);
            fig_gbps(&o, size, &gb);
            b->plot[k].shape[j] = gb.med;
            snprintf(name, sizeof(name), "%s %s", shapes[j].name, sz);
            report(b, &(struct rowspec){.figure = name, .metric = shapes[j].metric,
                                        .backing = a.backing, .unit = objs ? "objs/s" : "GB/s",
                                        .size = size, .f = objs ? &o.ops : &gb,
                                        .bl_name = objs ? "memcpy faulted, streaming"
                                                        : "memcpy faulted, same size",
                                        .bl = objs ? &base : mcs});
        }
        if (size > g_st.small_max && size <= ss__opt_size(SS_OPT_STAGE_MAX)) {
            /* trusted-producer mode beside strict: written in place */
            const char *why;
            ss_client *tc = trusted_store(b, &why);
            struct put_arg a = {.c = tc, .size = size, .stream = g_stream++,
                                .shape = SHAPE_CREATE_MEMSET, .wait = true};
            struct opfig o;

            if (tc) {
                put_measure(b, &a, "create+memset+seal trusted", &o, NULL);
                fig_gbps(&o, size, &gb);
            } else {
                fig_skip(&o.ops, why);
                fig_skip(&gb, why);
            }
            snprintf(name, sizeof(name), "create+memset+seal %s, trusted", sz);
            report(b, &(struct rowspec){.figure = name, .metric = "shape_create_memset_trusted",
                                        .backing = a.backing, .unit = objs ? "objs/s" : "GB/s",
                                        .size = size, .f = objs ? &o.ops : &gb,
                                        .bl_name = objs ? "memcpy faulted, streaming"
                                                        : "memcpy faulted, same size",
                                        .bl = objs ? &base : mcs});
        }
        if (size >= SHAPE_OBJS_MAX && size < SHAPE_LONG_MIN)
            put_shapes_one_cpu(b, size, &base, mcs);
    }
    b->reps = reps;
    print_table(b, "put call shapes, pool warm (refilled after each op that drew from it; deletes untimed; 256M and up: 3 ops), ratio = "
                   "fraction of memcpy speed; targets: 4K pages ss_put 64M >= 0.5, 1M >= 0.6; create+memset+seal "
                   "64K >= 0.05, 1M >= 0.33, 64M >= 0.9 (Plasma); 2M pages 64M >= 0.85; rows ', one CPU': "
                   "client and store threads on one CPU (no wake-up crosses vCPUs); rows ', trusted': "
                   "SEALSTORE_TRUST_PRODUCERS=on (written in place, no copy; see the header)");
}

static void put_measure(struct bench *b, struct put_arg *a, const char *what, struct opfig *o,
                        struct opfig *rtt)
{
    char label[64], sz[16];
    unsigned min_ops = a->size >= SS_MiB ? 1 : 20;

    a->src = src_buf(a->size);
    putv_pieces(a);
    snprintf(label, sizeof(label), "%s %s", what, fmt_size(a->size, sz, sizeof(sz)));
    if (rtt)
        run_ops_rtt(b, label, b->duration_ns, min_ops, put_op, a, o, rtt,
                    a->size <= g_st.small_max ? (size_t)a->size + 64 : 64);
    else
        run_ops(b, label, b->duration_ns, min_ops, put_op, a, o);
    if (a->size > g_st.small_max)
        snprintf(o->ops.note, sizeof(o->ops.note),
                 "%s: pool hits %" PRIu64 ", misses %" PRIu64 " in %" PRIu64 " creates%s",
                 a->backing, a->hits, a->misses, a->ops,
                 a->never ? "; the pool never held this size within 5 s" : "");
    else
        snprintf(o->ops.note, sizeof(o->ops.note), "backing %s", a->backing);
    memcpy(o->us.note, o->ops.note, sizeof(o->us.note));
}

void run_put(struct bench *b)
{
    const struct opfig *rtt = bl_rtt(b);
    struct fig rtt2, rtt2us;
    char name[64], sz[16];

    /* create and seal each wait for a reply; release sends none */
    fig_scale(&rtt->ops, 0.5, &rtt2);
    fig_scale(&rtt->us, 2.0, &rtt2us);
    /* baselines first: nothing of ours runs while they are measured */
    for (int k = 0; k < b->nsizes; k++)
        bl_shm_write(b, b->sizes[k]);
    bl_memcpy(b);
    for (int k = 0; k < b->nsizes; k++) {
        uint64_t size = b->sizes[k];
        bool large = size > g_st.small_max;
        struct put_arg w = {.c = g_st.warm, .size = size, .stream = g_stream++, .wait = true};
        struct opfig ow, oc, op;
        struct fig gw, gc, shm;

        fmt_size(size, sz, sizeof(sz));
        fig_gbps(bl_shm_write(b, size), size, &shm);
        put_measure(b, &w, "put warm", &ow, NULL);
        fig_scale(&ow.ops, (double)size / 1e9, &gw);
        b->plot[k].put_warm = gw.med;
        snprintf(name, sizeof(name), "put %s [warm]", sz);
        if (size >= SS_MiB)
            report(b, &(struct rowspec){.figure = name, .metric = "put_warm_gbps",
                                        .backing = w.backing, .unit = "GB/s", .size = size,
                                        .f = &gw, .bl_name = "memcpy faulted",
                                        .bl = bl_memcpy(b)});
        else
            report(b, &(struct rowspec){.figure = name, .metric = "put_warm_ops",
                                        .backing = w.backing, .unit = "ops/s", .size = size,
                                        .f = &ow.ops, .bl_name = "seqpacket RTT x2 (create, seal)",
                                        .bl = &rtt2});
        if (size < SS_MiB) {
            snprintf(name, sizeof(name), "put %s [warm] p50", sz);
            report(b, &(struct rowspec){.figure = name, .metric = "put_warm_p50",
                                        .backing = w.backing, .unit = "us", .size = size,
                                        .f = &ow.us, .bl_name = "seqpacket RTT p50 x2",
                                        .bl = &rtt2us});
            snprintf(name, sizeof(name), "put %s [warm]", sz);
        }
        report(b, &(struct rowspec){.figure = name, .metric = "put_warm_gbps",
                                    .backing = w.backing, .unit = "GB/s", .size = size, .f = &gw,
                                    .bl_name = "/dev/shm file write", .bl = &shm});
        if (large) {
            struct put_arg c = {.c = g_st.cold, .size = size, .stream = g_stream++};

            if (g_st.cold) {
                put_measure(b, &c, "put exhausted", &oc, NULL);
                fig_scale(&oc.ops, (double)size / 1e9, &gc);
                b->plot[k].put_cold = gc.med;
            } else {
                fig_skip(&gc, g_st.cold_why);
            }
            snprintf(name, sizeof(name), "put %s [exhausted]", sz);
            report(b, &(struct rowspec){.figure = name, .metric = "put_exhausted_gbps",
                                        .backing = c.backing, .unit = "GB/s", .size = size,
                                        .f = &gc, .bl_name = "/dev/shm file write", .bl = &shm});
            report(b, &(struct rowspec){.figure = name, .metric = "put_exhausted_gbps",
                                        .backing = c.backing, .unit = "GB/s", .size = size,
                                        .f = &gc, .bl_name = "put warm", .bl = &gw});
        } else {
            struct put_arg p = {.c = g_st.warm, .size = size, .stream = g_stream++,
                                .shape = SHAPE_PUT};

            struct opfig pr;

            put_measure(b, &p, "ss_put", &op, &pr);
            snprintf(name, sizeof(name), "ss_put %s (one call)", sz);
            report(b, &(struct rowspec){.figure = name, .metric = "put_call_ops",
                                        .unit = "ops/s", .size = size, .f = &op.ops,
                                        .bl_name = "round trip, same slices", .bl = &pr.ops});
            snprintf(name, sizeof(name), "ss_put %s p50", sz);
            report(b, &(struct rowspec){.figure = name, .metric = "put_call_p50", .unit = "us",
                                        .size = size, .f = &op.us,
                                        .bl_name = "round trip p50, same slices", .bl = &pr.us});

            struct opfig om;
            struct fig objs;

            put_many_measure(b, size, &om, &objs);
            snprintf(name, sizeof(name), "ss_put_many %s (batch of %u)", sz, PUT_MANY_N);
            report(b, &(struct rowspec){.figure = name, .metric = "put_many_objs",
                                        .unit = "objs/s", .size = size, .f = &objs,
                                        .bl_name = "ss_put (one call)", .bl = &op.ops});
            report(b, &(struct rowspec){.figure = name, .metric = "put_many_objs",
                                        .unit = "objs/s", .size = size, .f = &objs,
                                        .bl_name = "round trip, same slices",
                                        .bl = &pr.ops});
        }
    }
    print_table(b, "create + memcpy + seal + release (delete untimed); [warm] pool refilled "
                   "after each op that drew from it, [exhausted] pool 0; target: 64M warm >= 0.8 x memcpy");
    put_shapes(b);
}

/* ------------------------------------------------------------------ get */

struct get_arg {
    ss_client *c;
    uint32_t stream;
    unsigned n;
    uint64_t size;
};

/* n sealed objects of `size`, ids (stream, 0..n-1). */
static void objects_make(ss_client *c, uint32_t stream, unsigned n, uint64_t size)
{
    const void *src = src_buf(size);

    for (unsigned i = 0; i < n; i++) {
        ss_id id;
        void *data;

        make_id(&id, stream, i);
        CK(ss_create(c, &id, size, NULL, 0, &data));
        memcpy(data, src, size);
        CK(ss_seal(c, &id));
        CK(ss_release(c, &id));
    }
}

static void objects_drop(ss_client *c, uint32_t stream, unsigned n)
{
    for (unsigned i = 0; i < n; i++) {
        ss_id id;

        make_id(&id, stream, i);
        CK(ss_delete(c, &id));
    }
}

static uint64_t get_op(struct bench *b, void *arg, uint64_t i)
{
    struct get_arg *a = arg;
    ss_object o;
    ss_id id;
    uint64_t t0, t1;
    int rc;

    make_id(&id, a->stream, i % a->n);
    t0 = now_ns();
    rc = ss_get(a->c, &id, 1, 0, &o);
    if (rc != 1 || !o.data || o.size != a->size)
        die_rc(rc < 0 ? rc : 0, "ss_get of a sealed %" PRIu64 "-byte object returned %d", a->size,
               rc);
    CK(ss_release(a->c, &id));
    t1 = now_ns();
    return t1 - t0;
}

static unsigned get_objects(uint64_t size)
{
    uint64_t n = 64 * SS_MiB / size;

    return n < 1 ? 1 : n > 4096 ? 4096 : (unsigned)n;
}

/*
 * get+release of 64 B objects with the whole process (client, embedded
 * store threads, the echo process) on one CPU. Across the VM's vCPUs a
 * wake-up costs ~6 us or ~47 us depending on whether the scheduler places
 * the woken thread beside its waker, which changes from second to second
 * and differs between the store's thread and an echo process; on one CPU
 * no wake-up crosses, and the ratio is the store's own cost.
 */
static void get_one_cpu(struct bench *b)
{
    struct get_arg a = {.c = g_st.warm, .stream = g_stream++, .n = get_objects(64), .size = 64};
    struct opfig o, r;
    cpu_set_t old;
    int cpu;
    const char *why = one_cpu_why(b, &cpu);

    if (why) {
        fig_skip(&o.us, why);
        fig_skip(&r.us, why);
    } else {
        objects_make(a.c, a.stream, a.n, 64);
        pin_one_cpu(cpu, &old);
        run_ops_rtt(b, "get+release 64, one CPU", b->duration_ns, 20, get_op, &a, &o, &r, 64);
        pin_one_cpu(-1, &old);
        objects_drop(a.c, a.stream, a.n);
        snprintf(o.us.note, sizeof(o.us.note),
                 "client, store threads and echo process pinned to CPU %d", cpu);
    }
    report(b, &(struct rowspec){.figure = "get+release 64, one CPU p50", .metric = "get_p50_1cpu",
                                .unit = "us", .size = 64, .f = &o.us,
                                .bl_name = "round trip p50, same slices", .bl = &r.us});
}

/* REGET_INNER re-gets + releases of an object the bench holds, per op. */
#define REGET_INNER 64

static uint64_t reget_op(struct bench *b, void *arg, uint64_t i)
{
    struct get_arg *a = arg;
    ss_object o;
    ss_id id;
    uint64_t t0;
    int rc;

    (void)b;
    (void)i;
    make_id(&id, a->stream, 0);
    t0 = now_ns();
    for (unsigned k = 0; k < REGET_INNER; k++) {
        rc = ss_get(a->c, &id, 1, 0, &o);
        if (rc != 1 || !o.data || o.size != a->size)
            die_rc(rc < 0 ? rc : 0, "ss_get of a held %" PRIu64 "-byte object returned %d",
                   a->size, rc);
        CK(ss_release(a->c, &id));
    }
    return now_ns() - t0;
}

/*
 * The gets the client can serve without the store, or without a new
 * mapping: re-get+release of an object the caller already holds (the
 * client takes another reference locally), and get+release of one large
 * object again and again, each get after the previous release (its
 * segment mapped anew each time unless the client keeps the mapping).
 */
static void get_repeat(struct bench *b)
{
    static const uint64_t held_sizes[] = {64, SS_MiB};
    static const uint64_t again_sizes[] = {SS_MiB, 64 * SS_MiB};
    const struct opfig *rtt = bl_rtt(b);
    char name[80], sz[16];

    /* by default every get asks the store; a handle connected with
     * SEALSTORE_LOCAL_GETS on answers re-gets of what it holds itself */
    ss_client *local;
    int rc;

    CK(ss_option_set(SS_OPT_LOCAL_GETS, "on"));
    rc = ss_connect(store_path(b), 0, &local);
    CK(ss_option_set(SS_OPT_LOCAL_GETS, "off"));
    if (rc < 0)
        die_rc(rc, "ss_connect(%s) with SEALSTORE_LOCAL_GETS", store_path(b));
    for (size_t k = 0; k < 2 * sizeof(held_sizes) / sizeof(held_sizes[0]); k++) {
        bool lg = k & 1;
        struct get_arg a = {.c = lg ? local : g_st.warm, .stream = g_stream++, .n = 1,
                            .size = held_sizes[k / 2]};
        struct opfig o;
        struct fig f;
        ss_object held;
        ss_id id;

        fmt_size(a.size, sz, sizeof(sz));
        objects_make(a.c, a.stream, 1, a.size);
        make_id(&id, a.stream, 0);
        if (ss_get(a.c, &id, 1, 0, &held) != 1)
            die_rc(0, "ss_get of a sealed %s object found nothing", sz);
        snprintf(name, sizeof(name), "re-get+release of a held %s%s", sz,
                 lg ? ", local gets" : "");
        run_ops(b, name, b->duration_ns, 20, reget_op, &a, &o);
        CK(ss_release(a.c, &id));
        objects_drop(a.c, a.stream, 1);
        fig_scale(&o.ops, REGET_INNER, &f);
        report(b, &(struct rowspec){.figure = name,
                                    .metric = lg ? "reget_local_ops" : "reget_ops",
                                    .unit = "ops/s", .size = a.size, .f = &f,
                                    .bl_name = "seqpacket round trip", .bl = &rtt->ops});
    }
    ss_disconnect(local);
    for (size_t k = 0; k < sizeof(again_sizes) / sizeof(again_sizes[0]); k++) {
        struct get_arg a = {.c = g_st.warm, .stream = g_stream++, .n = 1,
                            .size = again_sizes[k]};
        struct opfig o, r;

        fmt_size(a.size, sz, sizeof(sz));
        objects_make(a.c, a.stream, 1, a.size);
        snprintf(name, sizeof(name), "get+release %s after release", sz);
        run_ops_rtt(b, name, b->duration_ns, 20, get_op, &a, &o, &r, 64);
        objects_drop(a.c, a.stream, 1);
        report(b, &(struct rowspec){.figure = name, .metric = "get_again_ops", .unit = "ops/s",
                                    .size = a.size, .f = &o.ops,
                                    .bl_name = "round trip, same slices", .bl = &r.ops});
    }
}

/* CONTAINS_INNER ss_contains calls per op. */
#define CONTAINS_INNER 64

struct contains_arg {
    ss_client *c;
    ss_id id;
    int want;
};

static uint64_t contains_op(struct bench *b, void *arg, uint64_t i)
{
    struct contains_arg *a = arg;
    uint64_t t0 = now_ns();
    int rc;

    (void)b;
    (void)i;
    for (unsigned k = 0; k < CONTAINS_INNER; k++)
        if ((rc = ss_contains(a->c, &a->id)) != a->want)
            die_rc(rc < 0 ? rc : 0, "ss_contains returned %d, not %d", rc, a->want);
    return now_ns() - t0;
}

/*
 * ss_contains of a sealed 1 KiB object (answered from the store's index,
 * mapped by the handle: no round trip) and of an id that does not exist
 * (a miss in the index: the store is asked, one round trip, as every
 * contains did before the index was mapped by clients).
 */
static void get_contains(struct bench *b)
{
    const struct opfig *rtt = bl_rtt(b);
    uint32_t stream = g_stream++;

    objects_make(g_st.warm, stream, 1, 1024);
    for (int hit = 1; hit >= 0; hit--) {
        struct contains_arg a = {.c = g_st.warm, .want = hit};
        const char *name = hit ? "contains of a sealed 1K (index)" : "contains of an absent id (store)";
        struct opfig o;
        struct fig f;

        make_id(&a.id, hit ? stream : g_stream++, 0);
        run_ops(b, name, b->duration_ns, 20, contains_op, &a, &o);
        fig_scale(&o.ops, CONTAINS_INNER, &f);
        report(b, &(struct rowspec){.figure = name,
                                    .metric = hit ? "contains_hit_ops" : "contains_miss_ops",
                                    .unit = "ops/s", .size = hit ? 1024 : 0, .f = &f,
                                    .bl_name = "seqpacket round trip", .bl = &rtt->ops});
    }
    objects_drop(g_st.warm, stream, 1);
}
/* The store's own bytes per object it should stay within (ratio <= 1). */
#define BOOKKEEPING_TARGET 128.0

void run_get(struct bench *b)
{
    char name[64], sz[16], label[64];

    for (int k = 0; k < b->nsizes; k++) {
        bl_shm_read(b, b->sizes[k]);
        bl_sock(b, b->sizes[k]);
    }
    for (int k = 0; k < b->nsizes; k++) {
        uint64_t size = b->sizes[k];
        struct get_arg a = {.c = g_st.warm, .stream = g_stream++, .n = get_objects(size),
                            .size = size};
        struct opfig o, r;
        struct fig gb, shm, sock, book = {0}, waste = {0};
        struct samples sb = {0}, sw = {0};
        ss_stats s0, s1;

        fmt_size(size, sz, sizeof(sz));
        progress("[get] creating %u objects of %s", a.n, sz);
        s0 = stats_of(a.c);
        objects_make(a.c, a.stream, a.n, size);
        s1 = stats_of(a.c);
        /* what the store keeps per object: its index (with these objects
         * live and nothing else), and for small ones the class rounding */
        if (s1.objects > 0) {
            samples_add(&sb, (double)s1.bookkeeping_bytes / (double)s1.objects);
            fig_set(&book, &sb);
            snprintf(book.note, sizeof(book.note),
                     "bookkeeping_bytes / objects with %" PRIu64 " live (grew by %" PRId64
                     " B for these %u)",
                     s1.objects, (int64_t)(s1.bookkeeping_bytes - s0.bookkeeping_bytes), a.n);
        } else {
            fig_skip(&book, "the store counts no objects");
        }
        if (size <= g_st.small_max && s1.small_live_bytes > 0) {
            samples_add(&sw, 100.0 * (double)(s1.small_used_bytes - s1.small_live_bytes) /
                                 (double)s1.small_live_bytes);
            fig_set(&waste, &sw);
        } else {
            fig_skip(&waste, size <= g_st.small_max ? "no small-allocator bytes in the stats"
                                                     : "not a small object");
        }
        samples_free(&sb);
        samples_free(&sw);
        snprintf(label, sizeof(label), "get+release %s", sz);
        run_ops_rtt(b, label, b->duration_ns, 20, get_op, &a, &o, &r, 64);
        objects_drop(a.c, a.stream, a.n);
        fig_scale(&o.ops, (double)size / 1e9, &gb);
        b->plot[k].get = gb.med;
        shm = bl_shm_read(b, size)->ops;
        fig_gbps(bl_sock(b, size), size, &sock);

        snprintf(name, sizeof(name), "get+release %s", sz);
        report(b, &(struct rowspec){.figure = name, .metric = "get_ops", .unit = "ops/s",
                                    .size = size, .f = &o.ops,
                                    .bl_name = "round trip, same slices", .bl = &r.ops});
        report(b, &(struct rowspec){.figure = name, .metric = "get_ops", .unit = "ops/s",
                                    .size = size, .f = &o.ops,
                                    .bl_name = "/dev/shm file open+map", .bl = &shm});
        report(b, &(struct rowspec){.figure = name, .metric = "get_gbps", .unit = "GB/s",
                                    .size = size, .f = &gb, .bl_name = "socket copy",
                                    .bl = &sock});
        snprintf(name, sizeof(name), "get+release %s p50", sz);
        report(b, &(struct rowspec){.figure = name, .metric = "get_p50", .unit = "us",
                                    .size = size, .f = &o.us,
                                    .bl_name = "round trip p50, same slices", .bl = &r.us});
        snprintf(name, sizeof(name), "get+release %s p99", sz);
        report(b, &(struct rowspec){.figure = name, .metric = "get_p99", .unit = "us",
                                    .size = size, .f = &o.us, .stat = ST_P99,
                                    .bl_name = "round trip p99, same slices", .bl = &r.us,
                                    .bl_stat = ST_P99});
        snprintf(name, sizeof(name), "bookkeeping per object, %s", sz);
        report(b, &(struct rowspec){.figure = name, .metric = "bookkeeping_per_object",
                                    .unit = "B/obj", .size = size, .f = &book,
                                    .bl_name = "object size", .bl_value = (double)size});
        /* against the target only with the most objects the run holds: the
         * index's pages stay counted once touched, so with fewer live
         * objects the quotient mostly measures earlier, larger populations */
        if (a.n < get_objects(1) && fig_ok(&book))
            fig_skip(&book, "too few live objects for a per-object figure (the index's touched "
                            "pages dominate): see the rows with the most objects");
        report(b, &(struct rowspec){.figure = name, .metric = "bookkeeping_per_object",
                                    .unit = "B/obj", .size = size, .f = &book,
                                    .bl_name = "target <= 128 B/obj",
                                    .bl_value = BOOKKEEPING_TARGET});
        if (size <= g_st.small_max) {
            snprintf(name, sizeof(name), "small allocator waste, %s", sz);
            report(b, &(struct rowspec){.figure = name, .metric = "small_waste", .unit = "%",
                                        .size = size, .f = &waste});
        }
    }
    get_one_cpu(b);
    get_repeat(b);
    get_contains(b);
    print_table(b, "get+release of sealed objects, cycling over up to 64 MiB of them (the "
                   "bytes are not read); target: <= 1.5 round trips (ratio >= 0.67)");
}

/* ---------------------------------------------------------------- batch */

struct batch_arg {
    ss_client *c;
    ss_id *ids;
    ss_object *out;
    unsigned n;
    bool one_call;
};

static uint64_t batch_op(struct bench *b, void *arg, uint64_t i)
{
    struct batch_arg *a = arg;
    uint64_t t0 = now_ns();
    int rc;

    if (a->one_call) {
        rc = ss_get(a->c, a->ids, a->n, 0, a->out);
        if (rc != (int)a->n)
            die_rc(rc < 0 ? rc : 0, "ss_get of %u sealed objects found %d", a->n, rc);
    } else {
        for (unsigned j = 0; j < a->n; j++) {
            rc = ss_get(a->c, &a->ids[j], 1, 0, &a->out[j]);
            if (rc != 1)
                die_rc(rc < 0 ? rc : 0, "ss_get of a sealed object returned %d", rc);
        }
    }
    for (unsigned j = 0; j < a->n; j++)
        CK(ss_release(a->c, &a->ids[j]));
    return now_ns() - t0;
}

void run_batch(struct bench *b)
{
    const struct opfig *rtt = bl_rtt(b);
    uint32_t stream = g_stream++;
    unsigned n = b->batch_n;
    uint64_t size = 64;
    struct batch_arg a = {.c = g_st.warm, .n = n};
    struct opfig many, one, pm;
    struct fig fmany, fone, fpm;
    char name[64], label[64];

    a.ids = xcalloc(n, sizeof(*a.ids));
    a.out = xcalloc(n, sizeof(*a.out));
    for (unsigned j = 0; j < n; j++)
        make_id(&a.ids[j], stream, j);
    objects_make(a.c, stream, n, size);
    snprintf(label, sizeof(label), "get %u ids per call", n);
    a.one_call = true;
    run_ops(b, label, b->duration_ns, 5, batch_op, &a, &many);
    snprintf(label, sizeof(label), "get 1 id per call x %u", n);
    a.one_call = false;
    run_ops(b, label, b->duration_ns, 5, batch_op, &a, &one);
    objects_drop(a.c, stream, n);
    free(a.ids);
    free(a.out);
    fig_scale(&many.ops, n, &fmany);
    fig_scale(&one.ops, n, &fone);

    snprintf(name, sizeof(name), "get+release, %u ids per ss_get", n);
    report(b, &(struct rowspec){.figure = name, .metric = "batch_get_ids", .unit = "ids/s",
                                .size = size, .f = &fmany, .bl_name = "1 id per ss_get",
                                .bl = &fone});
    report(b, &(struct rowspec){.figure = name, .metric = "batch_get_ids", .unit = "ids/s",
                                .size = size, .f = &fmany, .bl_name = "seqpacket round trip",
                                .bl = &rtt->ops});
    report(b, &(struct rowspec){.figure = "get+release, 1 id per ss_get",
                                .metric = "single_get_ids", .unit = "ids/s", .size = size,
                                .f = &fone, .bl_name = "seqpacket round trip",
                                .bl = &rtt->ops});
    put_many_measure(b, size, &pm, &fpm);
    snprintf(name, sizeof(name), "put, %u objects per ss_put_many", PUT_MANY_N);
    report(b, &(struct rowspec){.figure = name, .metric = "batch_put_ids", .unit = "ids/s",
                                .size = size, .f = &fpm, .bl_name = "seqpacket round trip",
                                .bl = &rtt->ops});
    print_table(b, "many small objects (64 B) per call vs one per call");
}

/* ----------------------------------------------------------------- seal */

struct seal_arg {
    ss_client *c;
    uint64_t size;
    uint32_t stream;
    const void *src;
};

static uint64_t seal_op(struct bench *b, void *arg, uint64_t i)
{
    struct seal_arg *a = arg;
    uint64_t t0, t1;
    ss_id id;
    void *data;

    make_id(&id, a->stream, i);
    CK(ss_create(a->c, &id, a->size, NULL, 0, &data));
    memcpy(data, a->src, a->size);
    t0 = now_ns();
    CK(ss_seal(a->c, &id));
    t1 = now_ns();
    CK(ss_release(a->c, &id));
    CK(ss_delete(a->c, &id));
    return t1 - t0;
}

void run_seal(struct bench *b)
{
    const struct opfig *rtt = bl_rtt(b);
    struct fig first = {0};
    char name[64], sz[16], label[64], bname[48];

    for (int k = 0; k < 3; k++) {
        uint64_t size = b->seal_sizes[k];
        struct seal_arg a = {.c = g_st.warm, .size = size, .stream = g_stream++,
                             .src = src_buf(size)};
        struct opfig o;

        fmt_size(size, sz, sizeof(sz));
        snprintf(label, sizeof(label), "seal %s", sz);
        run_ops(b, label, b->duration_ns, 1, seal_op, &a, &o);
        snprintf(name, sizeof(name), "seal %s", sz);
        if (k == 0) {
            first = o.us;
            report(b, &(struct rowspec){.figure = name, .metric = "seal_us", .unit = "us",
                                        .size = size, .f = &o.us,
                                        .bl_name = "seqpacket round trip p50", .bl = &rtt->us});
        } else {
            snprintf(bname, sizeof(bname), "seal %s", fmt_size(b->seal_sizes[0], sz, sizeof(sz)));
            report(b, &(struct rowspec){.figure = name, .metric = "seal_us", .unit = "us",
                                        .size = size, .f = &o.us, .bl_name = bname,
                                        .bl = &first});
        }
    }
    print_table(b, "ss_seal of a filled object (create, fill, release, delete untimed); "
                   "target: O(1) in size, ratio ~1");
}
