/* SPDX-License-Identifier: MIT */
/*
 * Options: the SEALSTORE_* table (one X-macro drives parsing, help and docs).
 *
 * One X-macro list (SS_OPTIONS in options.h) generates the row table below,
 * the --help-env text, and the fixture the tests walk. The public enum
 * ss_option in sealstore.h is hand-written (an installed header cannot
 * include our private one), so a static assert pins every row's position to
 * its SS_OPT_<ID> value: reorder one without the other and the build fails.
 *
 * Life of a value. The first access of any option runs load_all_locked()
 * exactly once (pthread_once): every row gets its default, parsed like any
 * text so a bad built-in default is caught by a test, then its environment
 * variable if set and valid. ss_option_set() overwrites a row afterwards,
 * and nothing but ss__options_reset() (tests only: forget API values and
 * read the environment again) ever loads a row again, which is what makes
 * an API setting beat the environment. SEALSTORE_LOG is applied to the
 * logger (ss__log_set_level) whenever the LOG row changes.
 *
 * Concurrency. One mutex guards the values: getters copy under it. None of
 * this is on a hot path (callers read options when a store or client
 * starts), so a mutex is simpler than a seqlock and obviously correct.
 * Warnings about bad environment values are queued while loading and
 * emitted by the first caller after the lock (and the pthread_once) are
 * released, so a log sink that itself reads an option cannot deadlock.
 */
#include "internal.h"
#include "options.h"

#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "numa.h"  /* SS_MAX_NODES */
#include "proto.h" /* SS_PROTO_MAX_INLINE */

/* ------------------------------------------------------- table and checks */

static const char *type_metavar(int type);

/* Row positions as the X-macro sees them... */
enum ss__opt_row {
#define SS_X_ROW(ID, TYPE, DEF, HELP) SS__ROW_##ID,
    SS_OPTIONS(SS_X_ROW)
#undef SS_X_ROW
    SS__ROW_COUNT
};

/* ...must be the public enum values, row for row. */
#define SS_X_CHECK(ID, TYPE, DEF, HELP)                                        \
    _Static_assert((int)SS__ROW_##ID == (int)SS_OPT_##ID,                                \
                   "options.h row " #ID " is not at position SS_OPT_" #ID      \
                   " of enum ss_option in sealstore.h: keep them in step");
SS_OPTIONS(SS_X_CHECK)
#undef SS_X_CHECK
_Static_assert((int)SS__ROW_COUNT == (int)SS_OPT__COUNT,
               "options.h and enum ss_option in sealstore.h differ in length");

typedef struct opt_desc {
    const char *name; /* "SEALSTORE_<ID>", matched exactly */
    int type;         /* enum ss__opt_type */
    const char *def;  /* default, as text */
    const char *help; /* one line */
} opt_desc;

static const opt_desc opt_table[SS_OPT__COUNT] = {
#define SS_X_DESC(ID, TYPE, DEF, HELP) {"SEALSTORE_" #ID, TYPE, DEF, HELP},
    SS_OPTIONS(SS_X_DESC)
#undef SS_X_DESC
};

/* A parsed value; which member is live follows the row's type. */
typedef struct opt_val {
    union {
        uint64_t size;          /* SS_OT_SIZE */
        int hugepages;          /* SS_OT_HUGEPAGES */
        ss__numa_policy numa;   /* SS_OT_NUMA */
        int level;              /* SS_OT_LOGLEVEL */
        ss__sizelist list;      /* SS_OT_SIZELIST */
        int64_t ms;             /* SS_OT_MS */
        int64_t us;             /* SS_OT_US */
        bool b;                 /* SS_OT_BOOL */
    } u;
    /* SS_OT_STRING: < PATH_MAX bytes, so a fixed buffer (BSS, 4 KiB per row,
     * touched only for string rows) spares us allocation and its failure. */
    char str[PATH_MAX];
} opt_val;

static pthread_mutex_t opt_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_once_t opt_once = PTHREAD_ONCE_INIT;
static opt_val opt_vals[SS_OPT__COUNT];

/* Warnings found while loading, emitted outside the lock (see top). The bad
 * value is quoted up to a length that keeps a line readable. */
#define WARN_LEN 400
static char opt_warn[SS_OPT__COUNT][WARN_LEN];
static _Atomic bool opt_warn_pending;

/* ---------------------------------------------------------------- parsers */

/* Size suffixes, powers of 1024, matched case-insensitively. P and E exist
 * so that a value like "16E" is reported as out of range, not as junk. */
static const struct {
    const char *sfx;
    unsigned shift;
} size_sfx[] = {
    {"", 0},    {"b", 0},
    {"k", 10},  {"kb", 10}, {"kib", 10},
    {"m", 20},  {"mb", 20}, {"mib", 20},
    {"g", 30},  {"gb", 30}, {"gib", 30},
    {"t", 40},  {"tb", 40}, {"tib", 40},
    {"p", 50},  {"pb", 50}, {"pib", 50},
    {"e", 60},  {"eb", 60}, {"eib", 60},
};

/* Parse a size that ends at `end` (exclusive). */
static int parse_size_n(const char *s, const char *end, uint64_t *out)
{
    uint64_t v = 0;
    const char *p = s;
    size_t sl;
    unsigned i;
    bool overflow = false;

    /* strtoull would accept leading blanks, a sign and "0x": we do not. */
    if (p == end || *p < '0' || *p > '9')
        return -EINVAL;
    for (; p < end && *p >= '0' && *p <= '9'; p++) {
        unsigned d = (unsigned)(*p - '0');
        if (v > (UINT64_MAX - d) / 10)
            overflow = true; /* keep scanning: junk after it is still EINVAL */
        else
            v = v * 10 + d;
    }
    sl = (size_t)(end - p);
    for (i = 0; i < SS_ARRAY_SIZE(size_sfx); i++) {
        if (strlen(size_sfx[i].sfx) == sl && strncasecmp(p, size_sfx[i].sfx, sl) == 0)
            break;
    }
    if (i == SS_ARRAY_SIZE(size_sfx))
        return -EINVAL;
    if (overflow)
        return -ERANGE;
    if (size_sfx[i].shift && v > (UINT64_MAX >> size_sfx[i].shift))
        return -ERANGE;
    *out = v << size_sfx[i].shift;
    return 0;
}

int ss__parse_size(const char *s, uint64_t *out)
{
    uint64_t v;
    int rc;

    if (!s || !out)
        return -EINVAL;
    rc = parse_size_n(s, s + strlen(s), &v);
    if (rc == 0)
        *out = v;
    return rc;
}

static const char *const hp_names[] = {
    [SS_HP_AUTO] = "auto", [SS_HP_1G] = "1G", [SS_HP_2M] = "2M",
    [SS_HP_THP] = "thp",   [SS_HP_OFF] = "off",
};

int ss__parse_hugepages(const char *s, int *out)
{
    if (!s || !out)
        return -EINVAL;
    for (unsigned i = 0; i < SS_ARRAY_SIZE(hp_names); i++) {
        if (strcasecmp(s, hp_names[i]) == 0) {
            *out = (int)i;
            return 0;
        }
    }
    return -EINVAL;
}

static const char *const numa_names[] = {
    [SS_NUMA_LOCAL] = "local", [SS_NUMA_INTERLEAVE] = "interleave",
    [SS_NUMA_NODE] = "node:",  [SS_NUMA_OFF] = "off",
};

int ss__parse_numa(const char *s, ss__numa_policy *out)
{
    const char *p;
    int node = 0;

    if (!s || !out)
        return -EINVAL;
    if (strncasecmp(s, "node:", 5) == 0) {
        p = s + 5;
        if (*p == '\0' || strspn(p, "0123456789") != strlen(p))
            return -EINVAL; /* digits only: no sign, blank or junk */
        for (; *p; p++) {
            node = node * 10 + (*p - '0');
            if (node >= SS_MAX_NODES)
                return -ERANGE; /* checked per digit, so it cannot overflow */
        }
        out->mode = SS_NUMA_NODE;
        out->node = node;
        return 0;
    }
    for (unsigned i = 0; i < SS_ARRAY_SIZE(numa_names); i++) {
        if (i != SS_NUMA_NODE && strcasecmp(s, numa_names[i]) == 0) {
            out->mode = (int)i;
            out->node = 0;
            return 0;
        }
    }
    return -EINVAL;
}

static const char *const level_names[] = {
    [SS_LOG_ERROR] = "error", [SS_LOG_WARN] = "warn",
    [SS_LOG_INFO] = "info",   [SS_LOG_DEBUG] = "debug",
};

int ss__parse_loglevel(const char *s, int *out)
{
    if (!s || !out)
        return -EINVAL;
    for (unsigned i = 0; i < SS_ARRAY_SIZE(level_names); i++) {
        if (strcasecmp(s, level_names[i]) == 0) {
            *out = (int)i;
            return 0;
        }
    }
    return -EINVAL;
}

int ss__parse_sizelist(const char *s, ss__sizelist *out)
{
    ss__sizelist l = {0};
    const char *p;

    if (!s || !out)
        return -EINVAL;
    p = s;
    for (;;) {
        const char *end = strchr(p, ',');
        uint64_t v;
        int rc;

        if (!end)
            end = p + strlen(p);
        /* an empty item (",," or a trailing comma) fails in parse_size_n */
        rc = parse_size_n(p, end, &v);
        if (rc < 0)
            return rc;
        if (v == 0)
            return -EINVAL;
        if (l.n > 0 && v <= l.v[l.n - 1])
            return -EINVAL; /* strictly ascending: classes are looked up in order */
        if (l.n == SS_MAX_CLASSES)
            return -ERANGE;
        l.v[l.n++] = v;
        if (*end == '\0')
            break;
        p = end + 1;
    }
    *out = l;
    return 0;
}

typedef struct dur_unit {
    const char *sfx;
    int64_t mul;
} dur_unit;

/* A whole number with an optional unit from units[n] (the first is the
 * bare number's), at most max in the smallest unit. */
static int parse_duration(const char *s, const dur_unit *units, size_t n, uint64_t max,
                          int64_t *out)
{
    const char *p = s;
    uint64_t v = 0;

    if (!s || *s < '0' || *s > '9')
        return -EINVAL;
    while (*p >= '0' && *p <= '9') {
        if (v > max)
            return -ERANGE;
        v = v * 10 + (uint64_t)(*p++ - '0');
    }
    for (size_t i = 0; i < n; i++) {
        if (strcasecmp(p, units[i].sfx) == 0) {
            if (v > max / (uint64_t)units[i].mul)
                return -ERANGE;
            *out = (int64_t)v * units[i].mul;
            return 0;
        }
    }
    return -EINVAL;
}

/* Durations: a whole number with an optional unit, ms by default. One
 * day at most: anything longer is a typo, not a timeout. */
int ss__parse_ms(const char *s, int64_t *out)
{
    static const dur_unit units[] = {
        {"", 1}, {"ms", 1}, {"s", 1000}, {"m", 60000}, {"h", 3600000}};

    return parse_duration(s, units, SS_ARRAY_SIZE(units), 86400000ull, out);
}

/* Short durations: a whole number with an optional unit, us by default.
 * One second at most: a spin (SEALSTORE_BUSY_POLL) longer than that is a
 * typo, not a tuning. */
int ss__parse_us(const char *s, int64_t *out)
{
    static const dur_unit units[] = {{"", 1}, {"us", 1}, {"ms", 1000}, {"s", 1000000}};

    if (s && strcasecmp(s, "auto") == 0) { /* busy polling that backs off (internal.h) */
        *out = SS_SPIN_AUTO;
        return 0;
    }
    return parse_duration(s, units, SS_ARRAY_SIZE(units), 1000000ull, out);
}

int ss__parse_bool(const char *s, bool *out)
{
    static const char *const yes[] = {"1", "true", "yes", "on"};
    static const char *const no[] = {"0", "false", "no", "off"};

    if (!s)
        return -EINVAL;
    for (size_t i = 0; i < SS_ARRAY_SIZE(yes); i++) {
        if (strcasecmp(s, yes[i]) == 0) {
            *out = true;
            return 0;
        }
        if (strcasecmp(s, no[i]) == 0) {
            *out = false;
            return 0;
        }
    }
    return -EINVAL;
}

/* Parse `s` for a row of `type` into *v. 0, -EINVAL or -ERANGE. */
static int parse_value(int type, const char *s, opt_val *v)
{
    size_t n;

    if (!s)
        return -EINVAL;
    switch (type) {
    case SS_OT_STRING:
        n = strlen(s);
        if (n >= PATH_MAX)
            return -ERANGE;
        memcpy(v->str, s, n + 1);
        return 0;
    case SS_OT_SIZE:
        return ss__parse_size(s, &v->u.size);
    case SS_OT_HUGEPAGES:
        return ss__parse_hugepages(s, &v->u.hugepages);
    case SS_OT_NUMA:
        return ss__parse_numa(s, &v->u.numa);
    case SS_OT_LOGLEVEL:
        return ss__parse_loglevel(s, &v->u.level);
    case SS_OT_SIZELIST:
        return ss__parse_sizelist(s, &v->u.list);
    case SS_OT_MS:
        return ss__parse_ms(s, &v->u.ms);
    case SS_OT_US:
        return ss__parse_us(s, &v->u.us);
    case SS_OT_BOOL:
        return ss__parse_bool(s, &v->u.b);
    }
    return -EINVAL;
}

int ss__spill_parse_high(const char *t, uint64_t capacity, uint64_t *bytes)
{
    size_t n = t ? strlen(t) : 0;

    if (!t)
        return -EINVAL;
    if (strcasecmp(t, "off") == 0)
        return 1;
    if (n >= 2 && t[n - 1] == '%') {
        uint64_t v = 0;
        for (size_t k = 0; k + 1 < n; k++) {
            if (t[k] < '0' || t[k] > '9' || k >= 3)
                return -EINVAL;
            v = v * 10 + (uint64_t)(t[k] - '0');
        }
        if (v > 100)
            return -EINVAL;
        *bytes = capacity / 100 * v + capacity % 100 * v / 100;
        return 0;
    }
    return ss__parse_size(t, bytes) < 0 ? -EINVAL : 0;
}

/* ------------------------------------------------------ canonical output */

/* Largest exact suffix, so "268435456" prints as "256M" and parses back. */
static int format_size(uint64_t v, char *buf, size_t len)
{
    static const char sfx[] = "KMGTPE";
    int i;

    if (v == 0)
        return snprintf(buf, len, "0");
    for (i = 5; i >= 0; i--) {
        unsigned shift = 10u * (unsigned)(i + 1);
        if ((v & ((1ull << shift) - 1)) == 0)
            return snprintf(buf, len, "%llu%c", (unsigned long long)(v >> shift), sfx[i]);
    }
    return snprintf(buf, len, "%llu", (unsigned long long)v);
}

/* Append text of length n at *used, keeping buf NUL-terminated within len;
 * *used counts the full length even once the buffer is full. */
static void append(char *buf, size_t len, size_t *used, const char *text, size_t n)
{
    if (*used + 1 < len) {
        size_t room = len - 1 - *used;
        size_t k = n < room ? n : room;
        memcpy(buf + *used, text, k);
        buf[*used + k] = '\0';
    }
    *used += n;
}

/* snprintf-like: writes at most len bytes (NUL included), returns the full
 * length. buf may be NULL when len is 0. */
static int format_value(int type, const opt_val *v, char *buf, size_t len)
{
    char tmp[32];
    size_t used = 0;

    switch (type) {
    case SS_OT_STRING:
        return snprintf(buf, len, "%s", v->str);
    case SS_OT_SIZE:
        return format_size(v->u.size, buf, len);
    case SS_OT_HUGEPAGES:
        return snprintf(buf, len, "%s", hp_names[v->u.hugepages]);
    case SS_OT_NUMA:
        if (v->u.numa.mode == SS_NUMA_NODE)
            return snprintf(buf, len, "node:%d", v->u.numa.node);
        return snprintf(buf, len, "%s", numa_names[v->u.numa.mode]);
    case SS_OT_LOGLEVEL:
        return snprintf(buf, len, "%s", level_names[v->u.level]);
    case SS_OT_SIZELIST:
        if (len)
            buf[0] = '\0';
        for (unsigned i = 0; i < v->u.list.n; i++) {
            int n = format_size(v->u.list.v[i], tmp, sizeof(tmp));
            if (i > 0)
                append(buf, len, &used, ",", 1);
            append(buf, len, &used, tmp, (size_t)n);
        }
        return (int)used;
    case SS_OT_MS:
        if (v->u.ms != 0 && v->u.ms % 1000 == 0)
            return snprintf(buf, len, "%llds", (long long)(v->u.ms / 1000));
        return snprintf(buf, len, "%lldms", (long long)v->u.ms);
    case SS_OT_US:
        if (v->u.us == SS_SPIN_AUTO)
            return snprintf(buf, len, "auto");
        if (v->u.us != 0 && v->u.us % 1000 == 0)
            return snprintf(buf, len, "%lldms", (long long)(v->u.us / 1000));
        return snprintf(buf, len, "%lldus", (long long)v->u.us);
    case SS_OT_BOOL:
        return snprintf(buf, len, "%s", v->u.b ? "on" : "off");
    }
    return -EINVAL;
}

/* ------------------------------------------------------------ strict check */

int ss__option_check(ss_option opt, const char *value, char *why, size_t len)
{
    opt_val v; /* ~4 KiB: the daemon calls this at start only */
    uint64_t bytes;
    int rc;

    if (len)
        why[0] = '\0';
    if ((unsigned)opt >= SS_OPT__COUNT || !value) {
        snprintf(why, len, "no such option");
        return -EINVAL;
    }
    rc = parse_value(opt_table[opt].type, value, &v);
    if (rc < 0) {
        snprintf(why, len, "%s (expected %s)",
                 rc == -ERANGE ? "out of range" : "invalid value",
                 type_metavar(opt_table[opt].type));
        return rc;
    }
    switch (opt) {
    case SS_OPT_SMALL_MAX:
        if (v.u.size > SS_PROTO_MAX_INLINE) {
            snprintf(why, len, "out of range (at most %uK)", SS_PROTO_MAX_INLINE / 1024u);
            return -ERANGE;
        }
        break;
    case SS_OPT_SPILL_QUEUE_DEPTH:
        if (v.u.size < 1 || v.u.size > 256) {
            snprintf(why, len, "out of range (1 to 256)");
            return -ERANGE;
        }
        break;
    case SS_OPT_COPY_THREADS:
        if (v.u.size > 64) {
            snprintf(why, len, "out of range (0 to 64)");
            return -ERANGE;
        }
        break;
    case SS_OPT_SPILL_HIGH:
        if (ss__spill_parse_high(v.str, 100, &bytes) < 0) {
            snprintf(why, len, "invalid value (expected N%% with N at most 100, a SIZE or off)");
            return -EINVAL;
        }
        break;
    default:
        break;
    }
    return 0;
}

/* ---------------------------------------------------------------- loading */

/* Fill every row from its default, then from the environment, and apply
 * the LOG row to the logger. Called with opt_lock held. */
static void load_all_locked(void)
{
    bool warned = false;

    for (unsigned i = 0; i < SS_OPT__COUNT; i++) {
        const opt_desc *d = &opt_table[i];
        const char *env = getenv(d->name);
        opt_val tmp = {0};
        int rc;

        opt_warn[i][0] = '\0';
        memset(&opt_vals[i], 0, sizeof(opt_vals[i]));
        rc = parse_value(d->type, d->def, &opt_vals[i]);
        if (rc < 0) {
            /* a packaging bug (SS_DEFAULT_* override); t_options catches ours */
            snprintf(opt_warn[i], WARN_LEN,
                     "built-in default of %s does not parse: \"%.200s\" (%s)",
                     d->name, d->def, ss_strerror(rc));
            warned = true;
        }
        if (!env)
            continue;
        rc = parse_value(d->type, env, &tmp);
        if (rc < 0) {
            char shown[201];
            size_t k;

            /* quote at most 200 bytes, control characters masked, so the
             * warning stays one readable line whatever the variable holds */
            for (k = 0; k < sizeof(shown) - 1 && env[k]; k++)
                shown[k] = (unsigned char)env[k] < 0x20 || env[k] == 0x7f ? '?' : env[k];
            shown[k] = '\0';
            snprintf(opt_warn[i], WARN_LEN,
                     "ignoring %s=\"%s\"%s: %s; using the default \"%.100s\"",
                     d->name, shown, env[k] ? "..." : "",
                     rc == -ERANGE ? "out of range" : "invalid value", d->def);
            warned = true;
            continue;
        }
        opt_vals[i] = tmp;
    }
    ss__log_set_level(opt_vals[SS_OPT_LOG].u.level);
    if (warned)
        atomic_store(&opt_warn_pending, true);
}

static void load_once(void)
{
    pthread_mutex_lock(&opt_lock);
    load_all_locked();
    pthread_mutex_unlock(&opt_lock);
}

/* Emit queued warnings; each exactly once (the queue is cleared under the
 * lock before anything is printed). */
static void flush_warnings(void)
{
    char msgs[SS_OPT__COUNT][WARN_LEN];

    if (!atomic_exchange(&opt_warn_pending, false))
        return;
    pthread_mutex_lock(&opt_lock);
    memcpy(msgs, opt_warn, sizeof(msgs));
    memset(opt_warn, 0, sizeof(opt_warn));
    pthread_mutex_unlock(&opt_lock);
    for (unsigned i = 0; i < SS_OPT__COUNT; i++) {
        if (msgs[i][0])
            ss__log_warn("%s", msgs[i]);
    }
}

static inline void ensure_loaded(void)
{
    pthread_once(&opt_once, load_once);
    if (ss_unlikely(atomic_load_explicit(&opt_warn_pending, memory_order_relaxed)))
        flush_warnings();
}

void ss__options_reset(void)
{
    pthread_once(&opt_once, load_once);
    pthread_mutex_lock(&opt_lock);
    load_all_locked();
    pthread_mutex_unlock(&opt_lock);
    flush_warnings();
}

/* ---------------------------------------------------------- typed getters */

static bool row_ok(ss_option opt, int type)
{
    if ((unsigned)opt >= SS_OPT__COUNT || opt_table[opt].type != type) {
        SS_ASSERT(!"option read with the wrong type");
        return false;
    }
    return true;
}

uint64_t ss__opt_size(ss_option opt)
{
    uint64_t v;

    if (!row_ok(opt, SS_OT_SIZE))
        return 0;
    ensure_loaded();
    pthread_mutex_lock(&opt_lock);
    v = opt_vals[opt].u.size;
    pthread_mutex_unlock(&opt_lock);
    return v;
}

int ss__opt_hugepages(void)
{
    int v;

    ensure_loaded();
    pthread_mutex_lock(&opt_lock);
    v = opt_vals[SS_OPT_HUGEPAGES].u.hugepages;
    pthread_mutex_unlock(&opt_lock);
    return v;
}

ss__numa_policy ss__opt_numa(void)
{
    ss__numa_policy v;

    ensure_loaded();
    pthread_mutex_lock(&opt_lock);
    v = opt_vals[SS_OPT_NUMA].u.numa;
    pthread_mutex_unlock(&opt_lock);
    return v;
}

int ss__opt_loglevel(void)
{
    int v;

    ensure_loaded();
    pthread_mutex_lock(&opt_lock);
    v = opt_vals[SS_OPT_LOG].u.level;
    pthread_mutex_unlock(&opt_lock);
    return v;
}

/* A duration row's value (SS_OT_MS or SS_OT_US), 0 for a row of another type. */
static int64_t opt_duration(ss_option opt, int type)
{
    int64_t v;

    if (!row_ok(opt, type))
        return 0;
    ensure_loaded();
    pthread_mutex_lock(&opt_lock);
    v = type == SS_OT_MS ? opt_vals[opt].u.ms : opt_vals[opt].u.us;
    pthread_mutex_unlock(&opt_lock);
    return v;
}

int64_t ss__opt_ms(ss_option opt)
{
    return opt_duration(opt, SS_OT_MS);
}

int64_t ss__opt_us(ss_option opt)
{
    return opt_duration(opt, SS_OT_US);
}

bool ss__opt_bool(ss_option opt)
{
    bool v;

    if (!row_ok(opt, SS_OT_BOOL))
        return false;
    ensure_loaded();
    pthread_mutex_lock(&opt_lock);
    v = opt_vals[opt].u.b;
    pthread_mutex_unlock(&opt_lock);
    return v;
}

ss__sizelist ss__opt_sizelist(ss_option opt)
{
    ss__sizelist v = {0};

    if (!row_ok(opt, SS_OT_SIZELIST))
        return v;
    ensure_loaded();
    pthread_mutex_lock(&opt_lock);
    v = opt_vals[opt].u.list;
    pthread_mutex_unlock(&opt_lock);
    return v;
}

size_t ss__opt_string(ss_option opt, char *buf, size_t len)
{
    size_t n;

    if (!row_ok(opt, SS_OT_STRING)) {
        if (buf && len)
            buf[0] = '\0';
        return 0;
    }
    ensure_loaded();
    pthread_mutex_lock(&opt_lock);
    n = strlen(opt_vals[opt].str);
    if (buf && len) {
        size_t k = n < len - 1 ? n : len - 1;
        memcpy(buf, opt_vals[opt].str, k);
        buf[k] = '\0';
    }
    pthread_mutex_unlock(&opt_lock);
    return n;
}

/* ------------------------------------------------------------- public API */

SS_API int ss_option_set(ss_option opt, const char *value)
{
    opt_val tmp = {0}; /* ~4 KiB (a PATH_MAX string): fine on any thread's stack */
    int rc;

    if ((unsigned)opt >= SS_OPT__COUNT || !value)
        return -EINVAL;
    /* load first, or a later first access would overwrite this with env */
    ensure_loaded();
    rc = parse_value(opt_table[opt].type, value, &tmp);
    if (rc < 0)
        return rc;
    pthread_mutex_lock(&opt_lock);
    opt_vals[opt] = tmp;
    if (opt == SS_OPT_LOG)
        ss__log_set_level(tmp.u.level);
    pthread_mutex_unlock(&opt_lock);
    return 0;
}

SS_API int ss_option_get(ss_option opt, char *buf, size_t len)
{
    int n;

    if ((unsigned)opt >= SS_OPT__COUNT || (!buf && len))
        return -EINVAL;
    ensure_loaded();
    pthread_mutex_lock(&opt_lock);
    n = format_value(opt_table[opt].type, &opt_vals[opt], buf, len);
    pthread_mutex_unlock(&opt_lock);
    return n;
}

SS_API const char *ss_option_name(ss_option opt)
{
    if ((unsigned)opt >= SS_OPT__COUNT)
        return NULL;
    return opt_table[opt].name;
}

SS_API int ss_option_lookup(const char *env_name)
{
    if (!env_name)
        return -EINVAL;
    /* exact, upper-case: the same spelling everywhere */
    for (unsigned i = 0; i < SS_OPT__COUNT; i++) {
        if (strcmp(env_name, opt_table[i].name) == 0)
            return (int)i;
    }
    return -EINVAL;
}

/* ------------------------------------------------------------- help text */

static const char *type_metavar(int type)
{
    switch (type) {
    case SS_OT_STRING: return "TEXT";
    case SS_OT_SIZE: return "SIZE";
    case SS_OT_HUGEPAGES: return "auto|1G|2M|thp|off";
    case SS_OT_NUMA: return "local|interleave|node:N|off";
    case SS_OT_LOGLEVEL: return "error|warn|info|debug";
    case SS_OT_SIZELIST: return "SIZE,SIZE,...";
    case SS_OT_MS: return "DURATION";
    case SS_OT_US: return "auto|MICROSECONDS";
    case SS_OT_BOOL: return "on|off";
    }
    return "?";
}

void ss__options_help(FILE *f)
{
    if (!f)
        return;
    fputs("Environment (an API setting beats the variable, which beats the default):\n", f);
    for (unsigned i = 0; i < SS_OPT__COUNT; i++) {
        const opt_desc *d = &opt_table[i];
        fprintf(f, "  %s=%s  (default: \"%s\")\n      %s\n", d->name,
                type_metavar(d->type), d->def, d->help);
    }
    fputs("SIZE is a whole number of bytes, optionally followed by K, M, G, T, P or E\n"
          "(powers of 1024; KiB/KB/k and so on are accepted too, and B alone means\n"
          "bytes). No decimals (write 1536M, not 1.5G), signs or spaces. Keywords are\n"
          "case-insensitive. A bad value is reported once and the default is used.\n",
          f);
}
