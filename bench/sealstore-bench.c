/* SPDX-License-Identifier: MIT */
/*
 * sealstore-bench: the throughput benchmark suite (README, sealstore-bench(1)).
 *
 * Every figure is printed beside a baseline measured in the same run (the
 * machine's own limit, or the naive way of doing the same thing), because on
 * a shared VM absolute numbers drift from run to run while ratios drift far
 * less.
 *
 * This file is the framework; bench.h has the map of the other files. Add to
 * the tables, not to main():
 *   options    bench_opts[] generates getopt_long's array, the short-option
 *              string and --help. A new flag is one row plus a setter.
 *   scenarios  scenarios[] = {name, help, run}. --scenario picks rows; they
 *              always run in table order, each printing its own table.
 *   reps       run_reps() runs one unmeasured warm-up rep, then N measured
 *              ones; a rep function files its own samples (one rep may give
 *              many samples, e.g. one per pool take) and may report a skip.
 *   figures    struct fig: median/min/max/p99 of a sample set, or a skip
 *              reason.
 *   report     report() files one row: a human table per scenario on stdout,
 *              and one JSON object per line in --json FILE.
 *
 * Units: GB/s means 1e9 bytes per second; sizes are binary (MiB, GiB).
 * Exit status: 0 done (skips included), 1 a call failed, 2 bad usage.
 */
#include "bench.h"

#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdlib.h>
#include <sys/utsname.h>
#include <unistd.h>

#include "numa.h"
#include "options.h"
#include "sys.h"

extern char **environ;

/* ---------------------------------------------------------------- basics */

bool g_tty;

void progress_clear(void)
{
    if (g_tty)
        fputs("\r\033[K", stderr);
}

void progress(const char *fmt, ...)
{
    va_list ap;

    if (!g_tty)
        return;
    fputs("\r\033[K", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fflush(stderr);
}

void die_rc(int rc, const char *fmt, ...)
{
    va_list ap;

    progress_clear();
    fflush(stdout);
    fputs(PROG ": ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    if (rc)
        fprintf(stderr, ": %s", ss_strerror(rc));
    fputc('\n', stderr);
    exit(1);
}

void usage_error(const char *fmt, ...)
{
    va_list ap;

    fputs(PROG ": ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputs(" (try --help)\n", stderr);
    exit(2);
}

void *xcalloc(size_t n, size_t sz)
{
    void *p = calloc(n ? n : 1, sz ? sz : 1);

    if (!p)
        die_rc(-ENOMEM, "calloc(%zu, %zu)", n, sz);
    return p;
}

const char *fmt_size(uint64_t v, char *buf, size_t len)
{
    if (v >= SS_GiB && v % SS_GiB == 0)
        snprintf(buf, len, "%" PRIu64 "G", (uint64_t)(v / SS_GiB));
    else if (v >= SS_MiB && v % SS_MiB == 0)
        snprintf(buf, len, "%" PRIu64 "M", (uint64_t)(v / SS_MiB));
    else if (v >= SS_KiB && v % SS_KiB == 0)
        snprintf(buf, len, "%" PRIu64 "K", (uint64_t)(v / SS_KiB));
    else
        snprintf(buf, len, "%" PRIu64, v);
    return buf;
}

/* -------------------------------------------------------------- samples */

void samples_add(struct samples *s, double x)
{
    if (s->n == s->cap) {
        size_t cap = s->cap ? 2 * s->cap : 64;
        double *v = realloc(s->v, cap * sizeof(*v));

        if (!v)
            die_rc(-ENOMEM, "realloc samples");
        s->v = v;
        s->cap = cap;
    }
    s->v[s->n++] = x;
    s->sorted = false;
}

void samples_free(struct samples *s)
{
    free(s->v);
    memset(s, 0, sizeof(*s));
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;

    return (x > y) - (x < y);
}

/* Percentile p (0..100) by linear interpolation between closest ranks. */
double samples_pct(struct samples *s, double p)
{
    double pos, frac;
    size_t lo;

    if (s->n == 0)
        return NAN;
    if (!s->sorted) {
        qsort(s->v, s->n, sizeof(double), cmp_double);
        s->sorted = true;
    }
    pos = p / 100.0 * (double)(s->n - 1);
    lo = (size_t)pos;
    frac = pos - (double)lo;
    if (lo + 1 >= s->n)
        return s->v[s->n - 1];
    return s->v[lo] + frac * (s->v[lo + 1] - s->v[lo]);
}

/* --------------------------------------------------------------- figures */

void fig_set(struct fig *f, struct samples *s)
{
    f->done = true;
    f->n = (int)s->n;
    f->med = samples_pct(s, 50);
    f->p99 = samples_pct(s, 99);
    f->min = samples_pct(s, 0);
    f->max = samples_pct(s, 100);
}

void fig_skip(struct fig *f, const char *why)
{
    f->done = true;
    f->n = 0;
    f->med = f->min = f->max = f->p99 = NAN;
    snprintf(f->skip, sizeof(f->skip), "%s", why);
}

bool fig_ok(const struct fig *f)
{
    return f && f->done && f->n > 0;
}

void fig_scale(const struct fig *in, double k, struct fig *out)
{
    *out = *in;
    out->med *= k;
    out->min *= k;
    out->max *= k;
    out->p99 *= k;
}

struct opfig *memo_at(struct memo *m, uint64_t size)
{
    for (int i = 0; i < m->n; i++)
        if (m->size[i] == size)
            return &m->f[i];
    if (m->n == MEMO_MAX)
        return NULL;
    m->size[m->n] = size;
    memset(&m->f[m->n], 0, sizeof(m->f[m->n]));
    return &m->f[m->n++];
}

/* -------------------------------------------------------------- reporting */

static const char *fmt_num(double v, char *buf, size_t len)
{
    double a = fabs(v);

    if (!isfinite(v))
        snprintf(buf, len, "-");
    else if (a >= 1000)
        snprintf(buf, len, "%.0f", v);
    else if (a >= 100)
        snprintf(buf, len, "%.1f", v);
    else if (a >= 1)
        snprintf(buf, len, "%.2f", v);
    else
        snprintf(buf, len, "%.3g", v);
    return buf;
}

static void json_str(FILE *f, const char *s)
{
    fputc('"', f);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;

        if (c == '"' || c == '\\')
            fprintf(f, "\\%c", c);
        else if (c == '\n')
            fputs("\\n", f);
        else if (c < 0x20)
            fprintf(f, "\\u%04x", c);
        else
            fputc(c, f);
    }
    fputc('"', f);
}

static void json_num(FILE *f, double v)
{
    if (isfinite(v))
        fprintf(f, "%.6g", v);
    else
        fputs("null", f);
}

static void json_row(struct bench *b, const struct row *r)
{
    FILE *f = b->json;

    if (!f)
        return;
    fputs("{\"scenario\":", f);
    json_str(f, b->scenario);
    fputs(",\"size\":", f);
    if (r->size)
        fprintf(f, "%" PRIu64, r->size);
    else
        fputs("null", f);
    fprintf(f, ",\"clients\":%d,\"metric\":", r->clients);
    json_str(f, r->metric);
    fputs(",\"backing\":", f);
    if (r->backing[0])
        json_str(f, r->backing);
    else
        fputs("null", f);
    fputs(",\"value\":", f);
    json_num(f, r->value);
    fputs(",\"unit\":", f);
    json_str(f, r->unit);
    fputs(",\"min\":", f);
    json_num(f, r->min);
    fputs(",\"max\":", f);
    json_num(f, r->max);
    fprintf(f, ",\"n\":%d,\"baseline\":", r->n);
    if (r->baseline[0])
        json_str(f, r->baseline);
    else
        fputs("null", f);
    fputs(",\"baseline_value\":", f);
    json_num(f, r->base);
    fputs(",\"ratio\":", f);
    json_num(f, r->ratio);
    if (r->skip[0]) {
        fputs(",\"skipped\":", f);
        json_str(f, r->skip);
    }
    if (r->note[0]) {
        fputs(",\"note\":", f);
        json_str(f, r->note);
    }
    fputs("}\n", f);
    if (ferror(f))
        die_rc(-EIO, "writing %s", b->json_path);
}

void report(struct bench *b, const struct rowspec *rs)
{
    struct row *r;
    const struct fig *f = rs->f;

    if (b->nrows == MAX_ROWS)
        die_rc(0, "more than %d rows in scenario %s", MAX_ROWS, b->scenario);
    r = &b->rows[b->nrows++];
    memset(r, 0, sizeof(*r));
    snprintf(r->figure, sizeof(r->figure), "%s", rs->figure);
    snprintf(r->metric, sizeof(r->metric), "%s", rs->metric);
    snprintf(r->backing, sizeof(r->backing), "%s", rs->backing ? rs->backing : "");
    snprintf(r->unit, sizeof(r->unit), "%s", rs->unit);
    r->size = rs->size;
    r->clients = rs->clients > 0 ? rs->clients : 1;
    r->value = r->min = r->max = r->base = r->ratio = NAN;
    if (fig_ok(f)) {
        r->n = f->n;
        r->value = rs->stat == ST_P99 ? f->p99 : f->med;
        r->min = f->min;
        r->max = f->max;
    } else {
        snprintf(r->skip, sizeof(r->skip), "%s",
                 f && f->skip[0] ? f->skip : "not measured");
    }
    if (f)
        snprintf(r->note, sizeof(r->note), "%s", f->note);
    if (rs->bl_name) {
        snprintf(r->baseline, sizeof(r->baseline), "%s", rs->bl_name);
        if (rs->bl)
            r->base = fig_ok(rs->bl) ? (rs->bl_stat == ST_P99 ? rs->bl->p99 : rs->bl->med)
                                     : NAN;
        else
            r->base = rs->bl_value;
        if (isfinite(r->value) && isfinite(r->base) && r->base != 0)
            r->ratio = r->value / r->base;
    }
    json_row(b, r);
}

void print_table(struct bench *b, const char *title)
{
    char v[16], lo[16], hi[16], bv[16], ra[16];

    progress_clear();
    printf("\n== %s: %s\n", b->scenario, title);
    printf("%-36s %-6s %9s %9s %9s  %-26s %9s %7s\n", "figure", "unit", "median",
           "min", "max", "baseline", "base", "ratio");
    for (int i = 0; i < b->nrows; i++) {
        const struct row *r = &b->rows[i];

        if (r->skip[0]) {
            /* one line per run of rows skipped for the same reason: the
             * JSON keeps every row */
            int j = i + 1;
            char fig[64];

            while (j < b->nrows && strcmp(b->rows[j].skip, r->skip) == 0)
                j++;
            if (j - i > 1)
                snprintf(fig, sizeof(fig), "%s (+%d)", r->figure, j - i - 1);
            else
                snprintf(fig, sizeof(fig), "%s", r->figure);
            printf("%-36s %-6s skipped: %s\n", fig, r->unit, r->skip);
            i = j - 1;
            continue;
        }
        printf("%-36s %-6s %9s %9s %9s  %-26s %9s %7s\n", r->figure, r->unit,
               fmt_num(r->value, v, sizeof(v)), fmt_num(r->min, lo, sizeof(lo)),
               fmt_num(r->max, hi, sizeof(hi)), r->baseline[0] ? r->baseline : "-",
               fmt_num(r->base, bv, sizeof(bv)), fmt_num(r->ratio, ra, sizeof(ra)));
        if (r->note[0] && (i == 0 || strcmp(r->note, b->rows[i - 1].note) != 0))
            printf("    note: %s\n", r->note);
    }
    fflush(stdout);
    b->nrows = 0;
}

/* ------------------------------------------------------------------ reps */

/*
 * The warm-up rep is not optional: on this VM, memory freed and left idle
 * goes host-cold and its next first touch runs at ~0.4 GB/s; the warm-up
 * pays that, and it also faults in code and library state.
 */
int run_reps(struct bench *b, const char *label, int reps, rep_fn fn, void *arg, char *why)
{
    for (int rep = -1; rep < reps; rep++) {
        if (rep < 0)
            progress("[%s] %s: warm-up", b->scenario, label);
        else
            progress("[%s] %s: rep %d/%d", b->scenario, label, rep + 1, reps);
        why[0] = '\0';
        if (fn(b, arg, rep, why) == SKIP)
            return SKIP;
    }
    return 0;
}

/*
 * Slices rather than single ops for the rate: a slice's ops/s is total ops
 * over total timed ns (a mean, what a busy client sees), and the spread of
 * slices is the run-to-run noise; the per-op samples give the percentiles.
 * The warm-up slice's ops are neither.
 */
/* One slice of fn: at least min_ops ops and `slice` ns; op numbers from
 * *i. Adds the ops/s of the slice to ops and each op's us to us (when
 * measured). */
static void slice_run(struct bench *b, uint64_t slice, unsigned min_ops, op_fn fn, void *arg,
                      uint64_t *i, bool measured, struct samples *ops, struct samples *us)
{
    uint64_t start = now_ns(), timed = 0, n = 0;

    do {
        uint64_t ns = fn(b, arg, (*i)++);

        timed += ns;
        n++;
        if (measured)
            samples_add(us, (double)ns / 1e3);
    } while (n < min_ops || now_ns() - start < slice);
    if (measured)
        samples_add(ops, timed ? (double)n * 1e9 / (double)timed : NAN);
}

void run_ops_pair(struct bench *b, const char *label, uint64_t duration_ns, unsigned min_ops,
                  op_fn fn, void *arg, struct opfig *out, op_fn fn2, void *arg2,
                  struct opfig *out2)
{
    struct samples ops = {0}, us = {0}, ops2 = {0}, us2 = {0};
    uint64_t slice = duration_ns / (uint64_t)b->reps, i = 0, i2 = 0;

    if (min_ops < 1)
        min_ops = 1;
    memset(out, 0, sizeof(*out));
    if (out2)
        memset(out2, 0, sizeof(*out2));
    for (int rep = -1; rep < b->reps; rep++) {
        if (rep < 0)
            progress("[%s] %s: warm-up", b->scenario, label);
        else
            progress("[%s] %s: slice %d/%d", b->scenario, label, rep + 1, b->reps);
        /* with a partner, each gets half of every slice, back to back:
         * never one op of each in turn, since with two peers to wake the
         * scheduler keeps only one beside the caller */
        if (fn2)
            slice_run(b, slice / 2, min_ops, fn2, arg2, &i2, rep >= 0, &ops2, &us2);
        slice_run(b, fn2 ? slice / 2 : slice, min_ops, fn, arg, &i, rep >= 0, &ops, &us);
    }
    fig_set(&out->ops, &ops);
    fig_set(&out->us, &us);
    if (fn2) {
        fig_set(&out2->ops, &ops2);
        fig_set(&out2->us, &us2);
    }
    samples_free(&ops);
    samples_free(&us);
    samples_free(&ops2);
    samples_free(&us2);
}

void run_ops(struct bench *b, const char *label, uint64_t duration_ns, unsigned min_ops,
             op_fn fn, void *arg, struct opfig *out)
{
    run_ops_pair(b, label, duration_ns, min_ops, fn, arg, out, NULL, NULL, NULL);
}

/* ------------------------------------------------------------- scenarios */

static const struct scenario {
    const char *name;
    const char *help;
    void (*run)(struct bench *b);
} scenarios[] = {
    {"baseline", "memset/memcpy bandwidth; first-touch and kernel-zeroing fill rate per backing",
     run_baseline},
    {"segment", "ss__seg_create+populate per backing vs kernel zeroing and first touch",
     run_segment},
    {"pool", "warm vs cold ss__pool_take (4M, 64M); populator rate vs kernel zeroing", run_pool},
    {"alloc", "small allocator ops/s, waste, bookkeeping vs glibc malloc; arena allocator waste on its mixed workload", run_alloc},
    {"ipc", "bare SOCK_SEQPACKET round trip; /dev/shm file per object; copy through a socket",
     run_ipc},
    {"put", "create+fill+seal+release per size, pool warm and exhausted; ss_put; ss_put_many; "
            "every call shape (ss_put, ss_putv, create+memset+seal) vs memcpy", run_put},
    {"get", "get+release of existing objects per size: ops/s, p50/p99; memory per object",
     run_get},
    {"batch", "many small ids per ss_get (and objects per ss_put_many) call vs one per call", run_batch},
    {"e2e", "producer-to-consumer latency across processes (create .. blocking get returns)",
     run_e2e},
    {"clients", "1..N producer and consumer processes: aggregate ops/s and GB/s", run_clients},
    {"seal", "seal time against object size (must not grow: no hashing, no copy)", run_seal},
    {"spill", "spill and restore GB/s under memory pressure (when spilling exists)", run_spill},
};

/* Scenarios that talk to the store: the store is started before them. */
static const unsigned long store_scenarios_from = 5; /* index of "put" */

/* --------------------------------------------------------------- options */

static int opt_quick(struct bench *b, const char *arg)
{
    b->quick = true;
    return 0;
}

static int opt_reps(struct bench *b, const char *arg)
{
    char *end;
    long v;

    errno = 0;
    v = strtol(arg, &end, 10);
    if (errno || *end || end == arg || v < 1 || v > 10000)
        usage_error("--reps: '%s' is not a count between 1 and 10000", arg);
    b->reps_opt = (int)v;
    return 0;
}

static int opt_json(struct bench *b, const char *arg)
{
    b->json_path = arg;
    return 0;
}

static int opt_scenario(struct bench *b, const char *arg)
{
    char *list = strdup(arg), *save = NULL, *tok;
    unsigned long sel = 0;

    if (!list)
        die_rc(-ENOMEM, "strdup");
    for (tok = strtok_r(list, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        size_t i;

        if (strcmp(tok, "all") == 0) {
            sel |= (1ul << SS_ARRAY_SIZE(scenarios)) - 1;
            continue;
        }
        for (i = 0; i < SS_ARRAY_SIZE(scenarios); i++)
            if (strcmp(tok, scenarios[i].name) == 0)
                break;
        if (i == SS_ARRAY_SIZE(scenarios)) {
            char known[256] = "";

            for (size_t j = 0; j < SS_ARRAY_SIZE(scenarios); j++) {
                strncat(known, scenarios[j].name, sizeof(known) - strlen(known) - 1);
                strncat(known, j + 1 < SS_ARRAY_SIZE(scenarios) ? ", " : "",
                        sizeof(known) - strlen(known) - 1);
            }
            usage_error("--scenario: unknown scenario '%s' (known: %s, all)", tok, known);
        }
        sel |= 1ul << i;
    }
    free(list);
    if (!sel)
        usage_error("--scenario: empty list");
    b->sel = sel;
    return 0;
}

static int opt_socket(struct bench *b, const char *arg)
{
    if (!arg[0])
        usage_error("--socket: empty path");
    b->socket_opt = arg;
    return 0;
}

static int opt_sizes(struct bench *b, const char *arg)
{
    char *list = strdup(arg), *save = NULL, *tok;

    if (!list)
        die_rc(-ENOMEM, "strdup");
    b->nsizes = 0;
    for (tok = strtok_r(list, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        uint64_t v;

        if (ss__parse_size(tok, &v) < 0 || v == 0 || v > 64 * SS_GiB)
            usage_error("--sizes: '%s' is not a size between 1 and 64G (e.g. 64,1K,64K,1M)",
                        tok);
        if (b->nsizes == MAX_SIZES)
            usage_error("--sizes: more than %d sizes", MAX_SIZES);
        for (int i = 0; i < b->nsizes; i++)
            if (b->sizes[i] == v)
                usage_error("--sizes: %s listed twice", tok);
        b->sizes[b->nsizes++] = v;
    }
    free(list);
    if (!b->nsizes)
        usage_error("--sizes: empty list");
    /* ascending: the tables and the plot read left to right by size */
    for (int i = 1; i < b->nsizes; i++)
        for (int j = i; j > 0 && b->sizes[j - 1] > b->sizes[j]; j--) {
            uint64_t t = b->sizes[j];

            b->sizes[j] = b->sizes[j - 1];
            b->sizes[j - 1] = t;
        }
    return 0;
}

static int opt_clients(struct bench *b, const char *arg)
{
    char *end;
    long v;

    errno = 0;
    v = strtol(arg, &end, 10);
    if (errno || *end || end == arg || v < 1 || v > 64)
        usage_error("--clients: '%s' is not a count between 1 and 64", arg);
    b->clients_opt = (int)v;
    return 0;
}

static int opt_duration(struct bench *b, const char *arg)
{
    char *end;
    double v;

    errno = 0;
    v = strtod(arg, &end);
    if (errno || *end || end == arg || !(v >= 0.01 && v <= 3600))
        usage_error("--duration: '%s' is not a number of seconds between 0.01 and 3600", arg);
    b->duration_opt = v;
    return 0;
}

static int opt_hugepages(struct bench *b, const char *arg)
{
    char *end;
    long v;

    errno = 0;
    v = strtol(arg, &end, 10);
    if (errno || *end || end == arg || v < 0 || v > 1000000)
        usage_error("--hugepages: '%s' is not a count of 2 MiB pages between 0 and 1000000", arg);
    b->hugepages_opt = v;
    return 0;
}

static int opt_plot(struct bench *b, const char *arg)
{
    if (!arg[0])
        usage_error("--plot: empty file name");
    b->plot_path = arg;
    return 0;
}

static int opt_smoke(struct bench *b, const char *arg)
{
    b->smoke = true;
    b->quick = true;
    return 0;
}

static int opt_help(struct bench *b, const char *arg);

/*
 * The flags. key: a short option letter, or a value >= 256 for long-only
 * flags. metavar NULL: the flag takes no argument. Rows print in --help in
 * this order.
 */
static const struct bench_opt {
    const char *name;
    int key;
    const char *metavar;
    int (*set)(struct bench *b, const char *arg);
    const char *help;
} bench_opts[] = {
    {"quick", 'q', NULL, opt_quick,
     "smaller regions and fewer reps (3): the whole suite in well under a minute"},
    {"scenario", 's', "LIST", opt_scenario,
     "comma-separated scenarios to run, in table order (default: all)"},
    {"reps", 'r', "N", opt_reps,
     "measured repetitions per figure (default 7, --quick 3); one unmeasured warm-up rep "
     "always runs first"},
    {"json", 'j', "FILE", opt_json,
     "also write each figure as one JSON object per line to FILE"},
    {"socket", 'S', "PATH", opt_socket,
     "measure the store serving PATH (e.g. a running sealstored); default: an embedded "
     "store the bench starts in a private temp dir and removes at exit"},
    {"sizes", 'z', "LIST", opt_sizes,
     "object sizes for put and get (default 64,1K,64K,1M,64M,1G; --quick without 1G)"},
    {"clients", 'c', "N", opt_clients,
     "clients scenario: up to N producer and N consumer processes (default 4, --quick 2)"},
    {"duration", 'd', "SECONDS", opt_duration,
     "wall time per ops/s measurement, cut into the reps (default 1, --quick 0.3)"},
    {"plot", 'p', "FILE.png", opt_plot,
     "draw GB/s against object size for put and get beside the baselines (gnuplot)"},
    {"hugepages", 258, "N", opt_hugepages,
     "as root, raise the 2 MiB hugepage pool until N pages are free for this run, and "
     "give back what was added at exit (make bench asks for 1600: 3.2 GiB)"},
    {"help", 'h', NULL, opt_help, "show this help and exit"},
    /* make check's smoke test: every row, tiny sizes, a few seconds */
    {"smoke", 257, NULL, opt_smoke, NULL},
};

static int opt_help(struct bench *b, const char *arg)
{
    printf("usage: %s [OPTION]...\n\n"
           "Measure sealstore beside the machine's own limits and the naive alternatives\n"
           "(a /dev/shm file per object, copying through a socket), in one run.\n"
           "Each figure is the median of N reps (with min and max), printed next to a\n"
           "baseline from the same run and the ratio value/baseline.\n\noptions:\n",
           PROG);
    for (size_t i = 0; i < SS_ARRAY_SIZE(bench_opts); i++) {
        const struct bench_opt *o = &bench_opts[i];
        char lhs[48];

        if (!o->help)
            continue; /* hidden */
        if (o->key < 256)
            snprintf(lhs, sizeof(lhs), "-%c, --%s%s%s", o->key, o->name, o->metavar ? " " : "",
                     o->metavar ? o->metavar : "");
        else
            snprintf(lhs, sizeof(lhs), "    --%s%s%s", o->name, o->metavar ? " " : "",
                     o->metavar ? o->metavar : "");
        printf("  %-24s %s\n", lhs, o->help);
    }
    printf("\nscenarios:\n");
    for (size_t i = 0; i < SS_ARRAY_SIZE(scenarios); i++)
        printf("  %-10s %s\n", scenarios[i].name, scenarios[i].help);
    printf("\nJSON rows: {\"scenario\", \"size\" (bytes or null), \"clients\", \"metric\",\n"
           "\"backing\", \"value\", \"unit\", \"min\", \"max\", \"n\", \"baseline\" (its name),\n"
           "\"baseline_value\", \"ratio\"} plus \"skipped\" (value null) and \"note\".\n"
           "Unavailable backings (no hugepages in the pool, shmem THP off) and features\n"
           "(spilling) are skipped with the reason. The library reads SEALSTORE_* as usual;\n"
           "the embedded store gets a pool class and budget for the largest put size\n"
           "unless SEALSTORE_POOL_SIZE or SEALSTORE_POOL_CLASSES is set.\n"
           "Exit status: 0 done, 1 a call failed, 2 bad usage.\n");
    exit(0);
}

static void parse_args(struct bench *b, int argc, char **argv)
{
    struct option lo[SS_ARRAY_SIZE(bench_opts) + 1];
    char shortopts[2 * SS_ARRAY_SIZE(bench_opts) * 2 + 2] = ":"; /* ':' reports a missing arg */
    size_t n = 1;
    int c;

    memset(lo, 0, sizeof(lo));
    for (size_t i = 0; i < SS_ARRAY_SIZE(bench_opts); i++) {
        const struct bench_opt *o = &bench_opts[i];

        lo[i] = (struct option){o->name, o->metavar ? required_argument : no_argument, NULL,
                                o->key};
        if (o->key < 256) {
            shortopts[n++] = (char)o->key;
            if (o->metavar)
                shortopts[n++] = ':';
        }
    }
    shortopts[n] = '\0';
    opterr = 0;
    while ((c = getopt_long(argc, argv, shortopts, lo, NULL)) != -1) {
        size_t i;

        if (c == '?') {
            if (optopt && optopt < 256 && isprint(optopt))
                usage_error("unknown option '-%c'", optopt);
            usage_error("unknown option '%s'", argv[optind - 1]);
        }
        if (c == ':')
            usage_error("option '%s' needs an argument", argv[optind - 1]);
        for (i = 0; i < SS_ARRAY_SIZE(bench_opts); i++)
            if (bench_opts[i].key == c)
                break;
        if (i == SS_ARRAY_SIZE(bench_opts))
            usage_error("unhandled option %d", c);
        bench_opts[i].set(b, optarg);
    }
    if (optind < argc)
        usage_error("unexpected argument '%s'", argv[optind]);
}

/* Settings that follow from the flags, whatever their order. */
static void settle(struct bench *b)
{
    if (!b->sel)
        b->sel = (1ul << SS_ARRAY_SIZE(scenarios)) - 1;
    b->reps = b->reps_opt ? b->reps_opt : b->quick ? 3 : 7;
    /* ~256 MiB keeps a default run to minutes on 4K pages (~1.3 GB/s), and
     * memcpy's two buffers plus everything else under ~1.5 GiB */
    b->region = b->quick ? 64 * SS_MiB : 256 * SS_MiB;
    /* a 64 MiB memset still ran partly in cache here (up to 66 GB/s) */
    b->bw_region = 256 * SS_MiB;
    b->seg_size = 64 * SS_MiB;
    b->pool_budget = b->quick ? 128 * SS_MiB : 256 * SS_MiB;
    b->alloc_live = b->quick ? 4096 : 16384;
    b->alloc_ops = b->quick ? 100000 : 500000;
    if (b->smoke) {
        /* make check: every row present, in a few seconds and ~100 MiB */
        b->reps = b->reps_opt ? b->reps_opt : 2;
        b->region = 16 * SS_MiB;
        b->bw_region = 32 * SS_MiB;
        b->seg_size = 16 * SS_MiB;
        b->pool_budget = 32 * SS_MiB;
        b->alloc_live = 1024;
        b->alloc_ops = 10000;
    }
    if (!b->nsizes) {
        static const uint64_t def[] = {64, SS_KiB, 64 * SS_KiB, SS_MiB, 64 * SS_MiB, SS_GiB};
        int n = b->smoke ? 4 : b->quick ? 5 : 6;

        for (int i = 0; i < n; i++)
            b->sizes[b->nsizes++] = def[i];
    }
    b->clients = b->clients_opt ? b->clients_opt : b->quick ? 2 : 4;
    b->duration_ns = (uint64_t)((b->duration_opt ? b->duration_opt
                                 : b->smoke    ? 0.04
                                 : b->quick    ? 0.3
                                               : 1.0) *
                                1e9);
    /* the figures: e2e at 1 KiB and 64 MiB; seal 1 MiB vs 64 MiB
     * vs 1 GiB (quick: 256 MiB) */
    b->e2e_sizes[0] = SS_KiB;
    b->e2e_sizes[1] = b->smoke ? SS_MiB : 64 * SS_MiB;
    b->seal_sizes[0] = SS_MiB;
    b->seal_sizes[1] = b->smoke ? 4 * SS_MiB : 64 * SS_MiB;
    b->seal_sizes[2] = b->smoke ? 16 * SS_MiB : b->quick ? 256 * SS_MiB : SS_GiB;
    b->cl_sizes[0] = SS_KiB;
    b->cl_sizes[1] = SS_MiB;
    b->batch_n = 64;
}

int size_index(const struct bench *b, uint64_t size)
{
    for (int i = 0; i < b->nsizes; i++)
        if (b->sizes[i] == size)
            return i;
    return -1;
}

/* ---------------------------------------------------------------- header */

static void print_header(struct bench *b)
{
    struct utsname u;
    char buf[256], mode[300], model[128] = "?", line[256];
    long total = meminfo_kb("/proc/meminfo", "MemTotal");
    long avail = meminfo_kb("/proc/meminfo", "MemAvailable");
    FILE *f;
    time_t now = time(NULL);
    bool any = false;

    printf("%s %s", PROG, ss_version());
    if (strftime(buf, sizeof(buf), "%Y-%m-%d %H:%M:%S %z", localtime(&now)))
        printf(", %s", buf);
    printf("\n");
    if (uname(&u) == 0)
        printf("kernel    %s %s %s (%s)\n", u.sysname, u.release, u.machine, u.version);
    f = fopen("/proc/cpuinfo", "re");
    if (f) {
        while (fgets(line, sizeof(line), f))
            if (strncmp(line, "model name", 10) == 0) {
                char *p = strchr(line, ':');

                if (p) {
                    snprintf(model, sizeof(model), "%s", p + 2);
                    model[strcspn(model, "\n")] = '\0';
                }
                break;
            }
        fclose(f);
    }
    printf("cpus      %ld online, %s\n", sysconf(_SC_NPROCESSORS_ONLN), model);
    printf("memory    %ld MiB total, %ld MiB available\n", total / 1024, avail / 1024);
    if (b->hugepages_msg[0])
        printf("reserve   --hugepages %ld: %s\n", b->hugepages_opt, b->hugepages_msg);
    printf("hugetlb  ");
    for (int bk = SS_BACKING_2M; bk <= SS_BACKING_1G; bk++) {
        ss__hpool h = ss__hpool_read(backings[bk].page);

        if (!h.present)
            printf(" %s: no pool;", backings[bk].name);
        else
            printf(" %s: nr %" PRIu64 " free %" PRIu64 " resv %" PRIu64 " surplus %" PRIu64
                   ";",
                   backings[bk].name, h.nr, h.free, h.resv, h.surplus);
    }
    printf("\n");
    printf("thp       shmem_enabled=%s", thp_shmem_mode(mode, sizeof(mode)));
    printf(", anon enabled=%s\n",
           sysfs_mode("/sys/kernel/mm/transparent_hugepage/enabled", mode, sizeof(mode)));
    if (read_text("/sys/devices/system/node/online", buf, sizeof(buf)) > 0) {
        printf("numa      nodes %s:", buf);
        for (int node = 0; node < SS_MAX_NODES; node++) {
            char path[96], cpus[128];

            snprintf(path, sizeof(path), "/sys/devices/system/node/node%d/cpulist", node);
            if (read_text(path, cpus, sizeof(cpus)) < 0)
                continue;
            snprintf(path, sizeof(path), "/sys/devices/system/node/node%d/meminfo", node);
            printf(" node%d cpus %s, %ld MiB;", node, cpus, meminfo_kb(path, "MemTotal") / 1024);
        }
        printf("\n");
    } else {
        printf("numa      no /sys/devices/system/node (treated as one node)\n");
    }
    printf("env      ");
    for (char **e = environ; *e; e++)
        if (strncmp(*e, "SEALSTORE_", 10) == 0) {
            printf(" %s", *e);
            any = true;
        }
    printf("%s\n", any ? "" : " no SEALSTORE_* set (library defaults)");
    /* what the library resolved (env over defaults); the segment and pool
     * scenarios force each backing themselves, the small allocator uses
     * these */
    printf("options  ");
    for (int o = 0; o < SS_OPT__COUNT; o++) {
        char val[128];
        const char *name = ss_option_name((ss_option)o);

        if (name && ss_option_get((ss_option)o, val, sizeof(val)) >= 0)
            printf(" %s=%s", name + 10, val[0] ? val : "\"\"");
    }
    printf("\n");
    printf("run       %d reps per figure (median, min, max), each after one unmeasured warm-up "
           "rep:\n"
           "          on this VM memory freed and left idle goes host-cold (~0.4 GB/s on next "
           "touch)\n",
           b->reps);
    printf("sizes     memset/memcpy %" PRIu64 " MiB; fills %" PRIu64
           " MiB (1G: 1 GiB); segments %" PRIu64 " MiB; pool budget %" PRIu64
           " MiB; small allocator %u live objects\n",
           (uint64_t)(b->bw_region / SS_MiB), (uint64_t)(b->region / SS_MiB),
           (uint64_t)(b->seg_size / SS_MiB),
           (uint64_t)(b->pool_budget / SS_MiB), b->alloc_live);
    {
        char list[MAX_SIZES * 8] = "", sz[16];

        for (int i = 0; i < b->nsizes; i++) {
            strncat(list, i ? "," : "", sizeof(list) - strlen(list) - 1);
            strncat(list, fmt_size(b->sizes[i], sz, sizeof(sz)), sizeof(list) - strlen(list) - 1);
        }
        printf("store     put/get sizes %s; %.2g s per ops/s figure (%d slices after a warm-up "
               "slice); up to %d clients\n",
               list, (double)b->duration_ns / 1e9, b->reps, b->clients);
    }
    printf("backings  each row names its backing in [brackets] (JSON: \"backing\"); now:\n");
    for (int bk = 0; bk < SS_BACKING__COUNT; bk++) {
        char why[WHY_LEN];

        if (backing_usable(bk, region_for(b, bk), why))
            printf("          %s: usable\n", backings[bk].name);
        else
            printf("          %s\n", why);
    }
    printf("units     GB/s = 1e9 bytes/s; ratio = value / baseline\n");
    if (b->json_path)
        printf("json      %s\n", b->json_path);
    fflush(stdout);
}

/* ------------------------------------------------------------------ main */

int main(int argc, char **argv)
{
    struct bench *b = xcalloc(1, sizeof(*b));

    g_tty = isatty(STDERR_FILENO);
    parse_args(b, argc, argv);
    settle(b);
    /* before the library reads the pools: the store's backing choice and
     * the header both see the reserved pages */
    if (b->hugepages_opt > 0)
        (void)hugepages_reserve((uint64_t)b->hugepages_opt, b->hugepages_msg,
                                sizeof(b->hugepages_msg));
    if (b->json_path) {
        b->json = fopen(b->json_path, "w");
        if (!b->json)
            die_rc(-errno, "cannot open --json file %s", b->json_path);
    }
    for (int i = 0; i < MAX_SIZES; i++) {
        b->plot[i].put_warm = b->plot[i].put_cold = b->plot[i].get = b->plot[i].shm_w =
            b->plot[i].shm_r = b->plot[i].sock = NAN;
        for (size_t j = 0; j < SS_ARRAY_SIZE(b->plot[i].shape); j++)
            b->plot[i].shape[j] = NAN;
    }
    print_header(b);
    /* the store starts after the header and before the first scenario: its
     * populator fills the warm pool once, before anything is measured */
    if (b->sel >> store_scenarios_from)
        store_open(b);
    for (size_t i = 0; i < SS_ARRAY_SIZE(scenarios); i++) {
        if (!(b->sel & (1ul << i)))
            continue;
        b->scenario = scenarios[i].name;
        scenarios[i].run(b);
    }
    progress_clear();
    if (b->st)
        store_summary(b);
    if (b->plot_path)
        plot_write(b);
    store_close();
    if (b->json && fclose(b->json) != 0)
        die_rc(-errno, "closing %s", b->json_path);
    if (fflush(stdout) != 0 || ferror(stdout))
        die_rc(-EIO, "writing the tables to stdout");
    free(b);
    hugepages_give_back();
    return 0;
}

