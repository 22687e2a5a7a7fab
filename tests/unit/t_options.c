/* SPDX-License-Identifier: MIT */
/*
 * The two X-macro tables of the library: options (SEALSTORE_*) and stats.
 *
 * Options: every parser on good, bad and edge input; the environment's
 * precedence (ss_option_set > env > default) and its one-warning rule; the
 * canonical text of ss_option_get() round-tripping through ss_option_set();
 * every built-in default parsing; the --help-env text and README.md's
 * "## Environment" table both covering exactly the table's rows.
 * Stats: peak/total arithmetic, per-segment accounting, the JSON dump.
 *
 * Decision recorded here and in the help text: sizes are whole numbers;
 * "1.5G" is -EINVAL (write 1536M). Suffixes go up to E so that "16E" is a
 * genuine overflow (-ERANGE) rather than junk.
 *
 * The first test must stay first: it checks the lazy, once-only read of the
 * environment, which only the process's first option access exercises.
 */
#include "internal.h"
#include "options.h"
#include "stats.h"

#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../t_helpers.h"

/* ------------------------------------------------------------ log capture */

#define CAP_LINES 16
static struct {
    pthread_mutex_t lock;
    int n;                       /* lines received */
    int level[CAP_LINES];
    char line[CAP_LINES][1100];
} cap = {.lock = PTHREAD_MUTEX_INITIALIZER};

static void cap_sink(int level, const char *line, void *arg)
{
    (void)arg;
    pthread_mutex_lock(&cap.lock);
    if (cap.n < CAP_LINES) {
        cap.level[cap.n] = level;
        snprintf(cap.line[cap.n], sizeof(cap.line[0]), "%s", line);
    }
    cap.n++;
    pthread_mutex_unlock(&cap.lock);
}

static void cap_start(void)
{
    pthread_mutex_lock(&cap.lock);
    cap.n = 0;
    pthread_mutex_unlock(&cap.lock);
    ss_log_set_sink(cap_sink, NULL);
}

static int cap_stop(void)
{
    int n;

    ss_log_set_sink(NULL, NULL);
    pthread_mutex_lock(&cap.lock);
    n = cap.n;
    pthread_mutex_unlock(&cap.lock);
    return n;
}

/* Lines captured that mention `needle`. */
static int cap_count(const char *needle)
{
    int k = 0;

    for (int i = 0; i < cap.n && i < CAP_LINES; i++)
        k += strstr(cap.line[i], needle) != NULL;
    return k;
}

/* ---------------------------------------------------------------- helpers */

/* Forget every SEALSTORE_* variable the harness (or a test) set. */
static void clear_env(void)
{
    for (int i = 0; i < SS_OPT__COUNT; i++)
        unsetenv(ss_option_name((ss_option)i));
}

/* Start from defaults: no env, no API values. */
static int fresh(void **state)
{
    (void)state;
    clear_env();
    ss__options_reset();
    return 0;
}

static const char *get(ss_option opt)
{
    static char buf[PATH_MAX + 16];
    int n = ss_option_get(opt, buf, sizeof(buf));

    assert_true(n >= 0);
    assert_true((size_t)n < sizeof(buf));
    return buf;
}

/* The fixture: one entry per row, straight from the X-macro. */
static const struct row {
    ss_option opt;
    const char *env;
    int type;
    const char *def;
    const char *help;
} rows[] = {
#define T_ROW(ID, TYPE, DEF, HELP) {SS_OPT_##ID, "SEALSTORE_" #ID, TYPE, DEF, HELP},
    SS_OPTIONS(T_ROW)
#undef T_ROW
};

/* ---------------------------------------------- lazy first read (first!) */

static void test_first_access_reads_env_once(void **state)
{
    (void)state;
    /* nothing in this process has touched an option yet */
    clear_env();
    setenv("SEALSTORE_LOG", "warn", 1); /* make check runs with LOG=error */
    setenv("SEALSTORE_SMALL_MAX", "lots", 1);
    setenv("SEALSTORE_CAPACITY", "2G", 1);
    cap_start();
    assert_string_equal(get(SS_OPT_SMALL_MAX), "64K"); /* bad: default kept */
    assert_string_equal(get(SS_OPT_CAPACITY), "2G");
    /* read once: later changes to the environment are not seen */
    setenv("SEALSTORE_CAPACITY", "3G", 1);
    assert_string_equal(get(SS_OPT_CAPACITY), "2G");
    assert_string_equal(get(SS_OPT_SMALL_MAX), "64K");
    assert_int_equal(ss__opt_size(SS_OPT_SMALL_MAX), 64 * SS_KiB);
    assert_int_equal(cap_stop(), 1);
    assert_int_equal(cap.level[0], SS_LOG_WARN);
    assert_non_null(strstr(cap.line[0], "sealstore: "));
    assert_non_null(strstr(cap.line[0], "SEALSTORE_SMALL_MAX"));
    assert_non_null(strstr(cap.line[0], "lots"));
    fresh(NULL);
}

/* ----------------------------------------------------------------- sizes */

static void test_parse_size_good(void **state)
{
    static const struct {
        const char *s;
        uint64_t v;
    } ok[] = {
        {"0", 0},
        {"1", 1},
        {"000", 0},
        {"1B", 1},
        {"1b", 1},
        {"4096", 4096},
        {"1K", SS_KiB},
        {"1k", SS_KiB},
        {"1KB", SS_KiB},
        {"1KiB", SS_KiB},
        {"1kib", SS_KiB},
        {"64K", 64 * SS_KiB},
        {"1M", SS_MiB},
        {"3MiB", 3 * SS_MiB},
        {"4G", 4 * SS_GiB},
        {"4g", 4 * SS_GiB},
        {"1T", 1024 * SS_GiB},
        {"1TiB", 1024 * SS_GiB},
        {"2P", 2048 * 1024 * SS_GiB},
        {"15E", 15ull << 60},
        {"0T", 0},
        {"1536M", 1536 * SS_MiB},
        {"18446744073709551615", UINT64_MAX},
        {"17179869183G", 17179869183ull << 30},
    };

    (void)state;
    for (size_t i = 0; i < SS_ARRAY_SIZE(ok); i++) {
        uint64_t v = 12345;
        int rc = ss__parse_size(ok[i].s, &v);
        if (rc != 0 || v != ok[i].v)
            fail_msg("\"%s\": rc %d value %llu, expected %llu", ok[i].s, rc,
                     (unsigned long long)v, (unsigned long long)ok[i].v);
    }
}

static void test_parse_size_bad(void **state)
{
    static const struct {
        const char *s;
        int err;
    } bad[] = {
        {"", -EINVAL},
        {"-1", -EINVAL},
        {"+1", -EINVAL},
        {" 4G", -EINVAL},
        {"4G ", -EINVAL},
        {"4 G", -EINVAL},
        {"1.5G", -EINVAL}, /* decimals are not supported (documented) */
        {"0x10", -EINVAL},
        {"G", -EINVAL},
        {"K1", -EINVAL},
        {"4GG", -EINVAL},
        {"4Gi", -EINVAL},
        {"4X", -EINVAL},
        {"4GiBs", -EINVAL},
        {"abc", -EINVAL},
        {"1,024", -EINVAL},
        {"4G\n", -EINVAL},
        {"16E", -ERANGE},
        {"16EiB", -ERANGE},
        {"17179869184G", -ERANGE},
        {"18446744073709551616", -ERANGE},
        {"99999999999999999999999999", -ERANGE},
        {"99999999999999999999999999x", -EINVAL}, /* junk beats overflow */
        {"16E ", -EINVAL},
    };

    (void)state;
    for (size_t i = 0; i < SS_ARRAY_SIZE(bad); i++) {
        uint64_t v = 777;
        int rc = ss__parse_size(bad[i].s, &v);
        if (rc != bad[i].err || v != 777)
            fail_msg("\"%s\": rc %d (value %llu), expected %d, value untouched",
                     bad[i].s, rc, (unsigned long long)v, bad[i].err);
    }
    assert_int_equal(ss__parse_size(NULL, &(uint64_t){0}), -EINVAL);
    assert_int_equal(ss__parse_size("1", NULL), -EINVAL);
}

/* ------------------------------------------------------------- keywords */

/* The daemon's strict check: the type's parse plus the row's range, with a
 * reason; every built-in default passes it. */
static void test_option_check(void **state)
{
    static const struct {
        ss_option opt;
        const char *value;
        int rc;
        const char *why;
    } cases[] = {
        { SS_OPT_CAPACITY, "-5", -EINVAL, "invalid value (expected SIZE)" },
        { SS_OPT_CAPACITY, "99999999T", -ERANGE, "out of range" },
        { SS_OPT_CAPACITY, "64M", 0, "" },
        { SS_OPT_SMALL_MAX, "64K", 0, "" },
        { SS_OPT_SMALL_MAX, "65537", -ERANGE, "at most 64K" },
        { SS_OPT_SPILL_QUEUE_DEPTH, "0", -ERANGE, "1 to 256" },
        { SS_OPT_SPILL_QUEUE_DEPTH, "256", 0, "" },
        { SS_OPT_SPILL_QUEUE_DEPTH, "257", -ERANGE, "1 to 256" },
        { SS_OPT_COPY_THREADS, "0", 0, "" },
        { SS_OPT_COPY_THREADS, "64", 0, "" },
        { SS_OPT_COPY_THREADS, "65", -ERANGE, "0 to 64" },
        { SS_OPT_SPILL_HIGH, "100%", 0, "" },
        { SS_OPT_SPILL_HIGH, "101%", -EINVAL, "N%" },
        { SS_OPT_SPILL_HIGH, "2G", 0, "" },
        { SS_OPT_SPILL_HIGH, "off", 0, "" },
        { SS_OPT_SPILL_HIGH, "lots", -EINVAL, "N%" },
        { SS_OPT_HUGEPAGES, "3M", -EINVAL, "auto|1G|2M|thp|off" },
        { SS_OPT__COUNT, "1", -EINVAL, "no such option" },
    };
    char why[160];

    (void)state;
    for (size_t i = 0; i < SS_ARRAY_SIZE(cases); i++) {
        int rc = ss__option_check(cases[i].opt, cases[i].value, why, sizeof(why));
        if (rc != cases[i].rc || !strstr(why, cases[i].why) || (rc == 0) != (why[0] == 0))
            fail_msg("option %d \"%s\": %d \"%s\"", (int)cases[i].opt, cases[i].value, rc,
                     why);
    }
    assert_int_equal(ss__option_check(SS_OPT_LOG, NULL, why, sizeof(why)), -EINVAL);
    for (int i = 0; i < SS_OPT__COUNT; i++) {
        char def[256];
        assert_true(ss_option_get((ss_option)i, def, sizeof(def)) >= 0);
        if (ss__option_check((ss_option)i, def, why, sizeof(why)) != 0)
            fail_msg("%s default \"%s\": %s", ss_option_name((ss_option)i), def, why);
    }
}

static void test_parse_hugepages(void **state)
{
    static const struct {
        const char *s;
        int v;
    } ok[] = {
        {"auto", SS_HP_AUTO}, {"AUTO", SS_HP_AUTO}, {"1G", SS_HP_1G},
        {"1g", SS_HP_1G},     {"2M", SS_HP_2M},     {"2m", SS_HP_2M},
        {"thp", SS_HP_THP},   {"THP", SS_HP_THP},   {"off", SS_HP_OFF},
        {"Off", SS_HP_OFF},
    };
    static const char *const bad[] = {"", "on", "4M", "1G ", " 2M", "1", "2MiB",
                                      "autox", "hugetlb"};

    (void)state;
    for (size_t i = 0; i < SS_ARRAY_SIZE(ok); i++) {
        int v = -1;
        assert_int_equal(ss__parse_hugepages(ok[i].s, &v), 0);
        assert_int_equal(v, ok[i].v);
    }
    for (size_t i = 0; i < SS_ARRAY_SIZE(bad); i++) {
        int v = -1;
        if (ss__parse_hugepages(bad[i], &v) != -EINVAL || v != -1)
            fail_msg("\"%s\" accepted", bad[i]);
    }
    assert_int_equal(ss__parse_hugepages(NULL, &(int){0}), -EINVAL);
}

static void test_parse_numa(void **state)
{
    static const struct {
        const char *s;
        int mode, node;
    } ok[] = {
        {"local", SS_NUMA_LOCAL, 0},
        {"LOCAL", SS_NUMA_LOCAL, 0},
        {"interleave", SS_NUMA_INTERLEAVE, 0},
        {"off", SS_NUMA_OFF, 0},
        {"node:0", SS_NUMA_NODE, 0},
        {"node:7", SS_NUMA_NODE, 7},
        {"NODE:12", SS_NUMA_NODE, 12},
        {"node:63", SS_NUMA_NODE, SS_MAX_NODES - 1},
    };
    static const struct {
        const char *s;
        int err;
    } bad[] = {
        {"", -EINVAL},          {"node", -EINVAL},      {"node:", -EINVAL},
        {"node:-1", -EINVAL},   {"node:+1", -EINVAL},   {"node: 1", -EINVAL},
        {"node:1 ", -EINVAL},   {"node:1x", -EINVAL},   {"node:0x1", -EINVAL},
        {"nodes:1", -EINVAL},   {"node:64", -ERANGE},   {"node:99999999999999999999", -ERANGE},
        {"node:999x", -EINVAL}, {"interleaved", -EINVAL}, {"1", -EINVAL},
    };

    (void)state;
    for (size_t i = 0; i < SS_ARRAY_SIZE(ok); i++) {
        ss__numa_policy p = {-1, -1};
        assert_int_equal(ss__parse_numa(ok[i].s, &p), 0);
        assert_int_equal(p.mode, ok[i].mode);
        assert_int_equal(p.node, ok[i].node);
    }
    for (size_t i = 0; i < SS_ARRAY_SIZE(bad); i++) {
        ss__numa_policy p = {-1, -1};
        int rc = ss__parse_numa(bad[i].s, &p);
        if (rc != bad[i].err || p.mode != -1)
            fail_msg("\"%s\": rc %d, expected %d", bad[i].s, rc, bad[i].err);
    }
    assert_int_equal(SS_MAX_NODES, 64); /* the ok/bad edges above assume it */
}

static void test_parse_loglevel(void **state)
{
    static const char *const names[] = {"error", "warn", "info", "debug"};
    static const char *const bad[] = {"", "warning", "WARN ", "3", "trace", "err"};

    (void)state;
    for (int i = 0; i < 4; i++) {
        int v = -1;
        assert_int_equal(ss__parse_loglevel(names[i], &v), 0);
        assert_int_equal(v, i);
    }
    assert_int_equal(SS_LOG_ERROR, 0);
    assert_int_equal(SS_LOG_DEBUG, 3);
    {
        int v = -1;
        assert_int_equal(ss__parse_loglevel("DeBuG", &v), 0);
        assert_int_equal(v, SS_LOG_DEBUG);
    }
    for (size_t i = 0; i < SS_ARRAY_SIZE(bad); i++) {
        int v = -1;
        if (ss__parse_loglevel(bad[i], &v) != -EINVAL || v != -1)
            fail_msg("\"%s\" accepted", bad[i]);
    }
}

static void test_parse_sizelist(void **state)
{
    ss__sizelist l;
    char big[SS_MAX_CLASSES * 8 + 16];
    size_t off = 0;
    static const struct {
        const char *s;
        int err;
    } bad[] = {
        {"", -EINVAL},        {",", -EINVAL},        {"1M,", -EINVAL},
        {",1M", -EINVAL},     {"1M,,4M", -EINVAL},   {"1M, 4M", -EINVAL},
        {"4M,1M", -EINVAL},   {"1M,1M", -EINVAL},    {"0", -EINVAL},
        {"0,1M", -EINVAL},    {"1M;4M", -EINVAL},    {"1.5M", -EINVAL},
        {"1M,16E", -ERANGE},  {"1M,x", -EINVAL},     {"1M,4M ", -EINVAL},
    };

    (void)state;
    assert_int_equal(ss__parse_sizelist("1M", &l), 0);
    assert_int_equal(l.n, 1);
    assert_int_equal(l.v[0], SS_MiB);
    assert_int_equal(ss__parse_sizelist("4K,2m,1G,1T", &l), 0);
    assert_int_equal(l.n, 4);
    assert_int_equal(l.v[0], 4 * SS_KiB);
    assert_int_equal(l.v[1], 2 * SS_MiB);
    assert_int_equal(l.v[2], SS_GiB);
    assert_int_equal(l.v[3], 1024 * SS_GiB);

    /* exactly SS_MAX_CLASSES fit; one more is out of range */
    for (int i = 1; i <= SS_MAX_CLASSES; i++)
        off += (size_t)snprintf(big + off, sizeof(big) - off, "%s%dK", i > 1 ? "," : "", i);
    assert_int_equal(ss__parse_sizelist(big, &l), 0);
    assert_int_equal(l.n, SS_MAX_CLASSES);
    assert_int_equal(l.v[SS_MAX_CLASSES - 1], SS_MAX_CLASSES * SS_KiB);
    snprintf(big + off, sizeof(big) - off, ",%dK", SS_MAX_CLASSES + 1);
    assert_int_equal(ss__parse_sizelist(big, &l), -ERANGE);

    for (size_t i = 0; i < SS_ARRAY_SIZE(bad); i++) {
        ss__sizelist m = {.n = 99};
        int rc = ss__parse_sizelist(bad[i].s, &m);
        if (rc != bad[i].err || m.n != 99)
            fail_msg("\"%s\": rc %d, expected %d, list untouched", bad[i].s, rc, bad[i].err);
    }
}

/* --------------------------------------------------------------- the API */

static void test_string_limits(void **state)
{
    static char s[PATH_MAX + 1];
    char small[8];

    (void)state;
    memset(s, 'a', PATH_MAX - 1);
    s[PATH_MAX - 1] = '\0';
    assert_int_equal(ss_option_set(SS_OPT_SPILL_DIR, s), 0);
    assert_int_equal(ss__opt_string(SS_OPT_SPILL_DIR, small, sizeof(small)), PATH_MAX - 1);
    assert_string_equal(small, "aaaaaaa"); /* truncated, still terminated */
    s[PATH_MAX - 1] = 'a';
    s[PATH_MAX] = '\0';
    assert_int_equal(ss_option_set(SS_OPT_SPILL_DIR, s), -ERANGE);
    assert_int_equal(ss_option_get(SS_OPT_SPILL_DIR, NULL, 0), PATH_MAX - 1); /* kept */
    assert_int_equal(ss_option_set(SS_OPT_SPILL_DIR, ""), 0);
    assert_string_equal(get(SS_OPT_SPILL_DIR), "");
    assert_int_equal(ss_option_set(SS_OPT_SOCKET, "/run/x y/s.sock"), 0);
    assert_int_equal(ss__opt_string(SS_OPT_SOCKET, NULL, 0), strlen("/run/x y/s.sock"));
    assert_int_equal(ss__opt_string(SS_OPT_SOCKET, small, sizeof(small)), 15);
    assert_string_equal(small, "/run/x ");
}

static void test_set_errors_keep_value(void **state)
{
    (void)state;
    assert_int_equal(ss_option_set(SS_OPT_CAPACITY, "8G"), 0);
    assert_int_equal(ss_option_set(SS_OPT_CAPACITY, "8.5G"), -EINVAL);
    assert_int_equal(ss_option_set(SS_OPT_CAPACITY, "16E"), -ERANGE);
    assert_int_equal(ss_option_set(SS_OPT_CAPACITY, NULL), -EINVAL);
    assert_string_equal(get(SS_OPT_CAPACITY), "8G");
    assert_int_equal(ss_option_set(SS_OPT_NUMA, "node:64"), -ERANGE);
    assert_int_equal(ss_option_set(SS_OPT_HUGEPAGES, "huge"), -EINVAL);
    assert_int_equal(ss_option_set(SS_OPT_POOL_CLASSES, "4M,1M"), -EINVAL);
    assert_string_equal(get(SS_OPT_NUMA), "local");
    assert_string_equal(get(SS_OPT_HUGEPAGES), "auto");
    assert_int_equal(ss_option_set(SS_OPT__COUNT, "1"), -EINVAL);
    assert_int_equal(ss_option_set((ss_option)-1, "1"), -EINVAL);
    assert_int_equal(ss_option_set((ss_option)INT_MAX, "1"), -EINVAL);
}

static void test_get_snprintf_semantics(void **state)
{
    char buf[4];

    (void)state;
    assert_int_equal(ss_option_set(SS_OPT_POOL_CLASSES, "1M,4M,16M"), 0);
    assert_int_equal(ss_option_get(SS_OPT_POOL_CLASSES, NULL, 0), 9);
    memset(buf, 'x', sizeof(buf));
    assert_int_equal(ss_option_get(SS_OPT_POOL_CLASSES, buf, sizeof(buf)), 9);
    assert_string_equal(buf, "1M,");
    assert_int_equal(ss_option_get(SS_OPT_POOL_CLASSES, buf, 1), 9);
    assert_string_equal(buf, "");
    assert_int_equal(ss_option_get(SS_OPT_POOL_CLASSES, NULL, 4), -EINVAL);
    assert_int_equal(ss_option_get(SS_OPT__COUNT, buf, sizeof(buf)), -EINVAL);
    assert_int_equal(ss_option_get((ss_option)-5, buf, sizeof(buf)), -EINVAL);
    assert_int_equal(ss_option_set(SS_OPT_NUMA, "node:12"), 0);
    assert_int_equal(ss_option_get(SS_OPT_NUMA, buf, sizeof(buf)), 7);
    assert_string_equal(buf, "nod");
}

/* Non-canonical spellings come back canonical, and the canonical text sets
 * the same value again. */
static void test_canonical_roundtrip(void **state)
{
    static const struct {
        ss_option opt;
        const char *in, *canon;
    } cases[] = {
        {SS_OPT_CAPACITY, "268435456", "256M"},
        {SS_OPT_CAPACITY, "1024K", "1M"},
        {SS_OPT_CAPACITY, "1536", "1536"},
        {SS_OPT_CAPACITY, "1536M", "1536M"},
        {SS_OPT_CAPACITY, "1048576KiB", "1G"},
        {SS_OPT_CAPACITY, "0G", "0"},
        {SS_OPT_CAPACITY, "1tib", "1T"},
        {SS_OPT_CAPACITY, "15E", "15E"},
        {SS_OPT_CAPACITY, "18446744073709551615", "18446744073709551615"},
        {SS_OPT_CAPACITY, "1b", "1"},
        {SS_OPT_HUGEPAGES, "AUTO", "auto"},
        {SS_OPT_HUGEPAGES, "1g", "1G"},
        {SS_OPT_HUGEPAGES, "2m", "2M"},
        {SS_OPT_HUGEPAGES, "THP", "thp"},
        {SS_OPT_HUGEPAGES, "OFF", "off"},
        {SS_OPT_NUMA, "NODE:003", "node:3"},
        {SS_OPT_NUMA, "Interleave", "interleave"},
        {SS_OPT_NUMA, "OFF", "off"},
        {SS_OPT_NUMA, "Local", "local"},
        {SS_OPT_LOG, "ERROR", "error"},
        {SS_OPT_LOG, "Info", "info"},
        {SS_OPT_POOL_CLASSES, "1048576,4m,4097K,1GiB", "1M,4M,4097K,1G"},
        {SS_OPT_SOCKET, "/tmp/a b,c", "/tmp/a b,c"},
        {SS_OPT_CREATE_TIMEOUT, "5000", "5s"},
        {SS_OPT_CREATE_TIMEOUT, "250ms", "250ms"},
        {SS_OPT_CREATE_TIMEOUT, "2M", "120s"},
        {SS_OPT_CREATE_TIMEOUT, "0", "0ms"},
        {SS_OPT_EVICT, "YES", "on"},
        {SS_OPT_EVICT, "0", "off"},
    };

    (void)state;
    for (size_t i = 0; i < SS_ARRAY_SIZE(cases); i++) {
        char first[64];
        int rc = ss_option_set(cases[i].opt, cases[i].in);
        if (rc != 0)
            fail_msg("%s=%s: %d", ss_option_name(cases[i].opt), cases[i].in, rc);
        assert_true(ss_option_get(cases[i].opt, first, sizeof(first)) >= 0);
        if (strcmp(first, cases[i].canon) != 0)
            fail_msg("%s=%s reads back as \"%s\", expected \"%s\"",
                     ss_option_name(cases[i].opt), cases[i].in, first, cases[i].canon);
        assert_int_equal(ss_option_set(cases[i].opt, first), 0);
        assert_string_equal(get(cases[i].opt), first);
    }
    /* and every option's current (default) value round-trips */
    fresh(NULL);
    for (int i = 0; i < SS_OPT__COUNT; i++) {
        char first[PATH_MAX];
        assert_true(ss_option_get((ss_option)i, first, sizeof(first)) >= 0);
        assert_int_equal(ss_option_set((ss_option)i, first), 0);
        assert_string_equal(get((ss_option)i), first);
    }
}

static void test_parse_ms_and_bool(void **state)
{
    int64_t ms;
    bool b;

    (void)state;
    assert_int_equal(ss__parse_ms("0", &ms), 0);
    assert_int_equal(ms, 0);
    assert_int_equal(ss__parse_ms("1500", &ms), 0);
    assert_int_equal(ms, 1500);
    assert_int_equal(ss__parse_ms("10s", &ms), 0);
    assert_int_equal(ms, 10000);
    assert_int_equal(ss__parse_ms("3m", &ms), 0);
    assert_int_equal(ms, 180000);
    assert_int_equal(ss__parse_ms("24h", &ms), 0);
    assert_int_equal(ms, 86400000);
    assert_int_equal(ss__parse_ms("25h", &ms), -ERANGE);
    assert_int_equal(ss__parse_ms("99999999999999999999", &ms), -ERANGE);
    static const char *const bad_ms[] = {"", "-1", "1.5s", " 5s", "5s ", "5 s",
                                         "s", "5d", "5sec", "0x10", NULL};
    for (int i = 0; i < (int)SS_ARRAY_SIZE(bad_ms); i++)
        assert_int_equal(ss__parse_ms(bad_ms[i], &ms), -EINVAL);

    /* microseconds (SEALSTORE_BUSY_POLL): us by default, 1s at most */
    static const struct {
        const char *text;
        int64_t us;
    } good_us[] = {{"50", 50}, {"50us", 50}, {"2ms", 2000}, {"1s", 1000000}};
    for (size_t i = 0; i < SS_ARRAY_SIZE(good_us); i++) {
        assert_int_equal(ss__parse_us(good_us[i].text, &ms), 0);
        assert_int_equal(ms, good_us[i].us);
    }
    assert_int_equal(ss__parse_us("1000001", &ms), -ERANGE);
    assert_int_equal(ss__parse_us("2s", &ms), -ERANGE);
    for (int i = 0; i < (int)SS_ARRAY_SIZE(bad_ms); i++)
        assert_int_equal(ss__parse_us(bad_ms[i], &ms), -EINVAL);
    assert_int_equal(ss__parse_us("1m", &ms), -EINVAL);
    assert_int_equal(ss_option_set(SS_OPT_BUSY_POLL, "3ms"), 0);
    assert_int_equal(ss__opt_us(SS_OPT_BUSY_POLL), 3000);
    assert_int_equal(ss_option_set(SS_OPT_BUSY_POLL, "0"), 0);
    assert_int_equal(ss__opt_us(SS_OPT_BUSY_POLL), 0);
    assert_int_equal(ss__parse_us("AUTO", &ms), 0);
    assert_int_equal(ms, SS_SPIN_AUTO);
    assert_int_equal(ss_option_set(SS_OPT_BUSY_POLL, "auto"), 0);
    assert_int_equal(ss__opt_us(SS_OPT_BUSY_POLL), SS_SPIN_AUTO);
    char shown[16];
    assert_true(ss_option_get(SS_OPT_BUSY_POLL, shown, sizeof(shown)) > 0);
    assert_string_equal(shown, "auto");

    static const char *const t[] = {"1", "true", "YES", "On"};
    static const char *const f[] = {"0", "FALSE", "no", "off"};
    for (int i = 0; i < 4; i++) {
        b = false;
        assert_int_equal(ss__parse_bool(t[i], &b), 0);
        assert_true(b);
        assert_int_equal(ss__parse_bool(f[i], &b), 0);
        assert_false(b);
    }
    static const char *const bad_b[] = {"", "2", "y", "enable", " on", NULL};
    for (int i = 0; i < (int)SS_ARRAY_SIZE(bad_b); i++)
        assert_int_equal(ss__parse_bool(bad_b[i], &b), -EINVAL);
}

static void test_typed_getters(void **state)
{
    ss__numa_policy p;
    ss__sizelist l;

    (void)state;
    assert_int_equal(ss_option_set(SS_OPT_CAPACITY, "3G"), 0);
    assert_int_equal(ss__opt_size(SS_OPT_CAPACITY), 3 * SS_GiB);
    assert_int_equal(ss_option_set(SS_OPT_HUGEPAGES, "thp"), 0);
    assert_int_equal(ss__opt_hugepages(), SS_HP_THP);
    assert_int_equal(ss_option_set(SS_OPT_NUMA, "node:5"), 0);
    p = ss__opt_numa();
    assert_int_equal(p.mode, SS_NUMA_NODE);
    assert_int_equal(p.node, 5);
    assert_int_equal(ss_option_set(SS_OPT_POOL_CLASSES, "2M,8M"), 0);
    l = ss__opt_sizelist(SS_OPT_POOL_CLASSES);
    assert_int_equal(l.n, 2);
    assert_int_equal(l.v[1], 8 * SS_MiB);
    assert_int_equal(ss_option_set(SS_OPT_LOG, "info"), 0);
    assert_int_equal(ss__opt_loglevel(), SS_LOG_INFO);
    assert_int_equal(ss_option_set(SS_OPT_CREATE_TIMEOUT, "7s"), 0);
    assert_int_equal(ss__opt_ms(SS_OPT_CREATE_TIMEOUT), 7000);
    assert_int_equal(ss_option_set(SS_OPT_EVICT, "on"), 0);
    assert_true(ss__opt_bool(SS_OPT_EVICT));
}

static void test_log_option_drives_logger(void **state)
{
    (void)state;
    assert_int_equal(ss_option_set(SS_OPT_LOG, "debug"), 0);
    assert_int_equal(atomic_load(&ss__log_level), SS_LOG_DEBUG);
    assert_int_equal(ss_option_set(SS_OPT_LOG, "error"), 0);
    assert_int_equal(atomic_load(&ss__log_level), SS_LOG_ERROR);
    setenv("SEALSTORE_LOG", "info", 1);
    ss__options_reset();
    assert_int_equal(atomic_load(&ss__log_level), SS_LOG_INFO);
    unsetenv("SEALSTORE_LOG");
    ss__options_reset();
    assert_int_equal(atomic_load(&ss__log_level), SS_LOG_WARN);
}

static void test_name_and_lookup(void **state)
{
    (void)state;
    for (int i = 0; i < SS_OPT__COUNT; i++) {
        const char *n = ss_option_name((ss_option)i);
        assert_non_null(n);
        assert_string_equal(n, rows[i].env);
        assert_int_equal(ss_option_lookup(n), i);
        for (int j = 0; j < i; j++)
            assert_string_not_equal(n, ss_option_name((ss_option)j));
    }
    assert_null(ss_option_name(SS_OPT__COUNT));
    assert_null(ss_option_name((ss_option)-1));
    assert_int_equal(ss_option_lookup("SEALSTORE_CAPACITY"), SS_OPT_CAPACITY);
    assert_int_equal(ss_option_lookup("sealstore_capacity"), -EINVAL); /* exact */
    assert_int_equal(ss_option_lookup("CAPACITY"), -EINVAL);
    assert_int_equal(ss_option_lookup("SEALSTORE_CAPACITY "), -EINVAL);
    assert_int_equal(ss_option_lookup("SEALSTORE_"), -EINVAL);
    assert_int_equal(ss_option_lookup(""), -EINVAL);
    assert_int_equal(ss_option_lookup(NULL), -EINVAL);
}

/* ------------------------------------------------------------ the table */

static void test_table_matches_public_enum(void **state)
{
    (void)state;
    assert_int_equal(SS_ARRAY_SIZE(rows), SS_OPT__COUNT);
    for (size_t i = 0; i < SS_ARRAY_SIZE(rows); i++) {
        assert_int_equal(rows[i].opt, (int)i);
        assert_true(strncmp(rows[i].env, "SEALSTORE_", 10) == 0);
        assert_true(strlen(rows[i].help) > 0);
    }
}

/* A bad built-in default would be caught here, not in the field. */
static void test_every_default_parses(void **state)
{
    (void)state;
    for (size_t i = 0; i < SS_ARRAY_SIZE(rows); i++) {
        const struct row *r = &rows[i];
        int rc = -EINVAL;
        union {
            uint64_t size;
            int i;
            ss__numa_policy numa;
            ss__sizelist list;
            int64_t ms;
            bool b;
        } v;

        switch (r->type) {
        case SS_OT_STRING: rc = strlen(r->def) < PATH_MAX ? 0 : -ERANGE; break;
        case SS_OT_SIZE: rc = ss__parse_size(r->def, &v.size); break;
        case SS_OT_HUGEPAGES: rc = ss__parse_hugepages(r->def, &v.i); break;
        case SS_OT_NUMA: rc = ss__parse_numa(r->def, &v.numa); break;
        case SS_OT_LOGLEVEL: rc = ss__parse_loglevel(r->def, &v.i); break;
        case SS_OT_SIZELIST: rc = ss__parse_sizelist(r->def, &v.list); break;
        case SS_OT_MS: rc = ss__parse_ms(r->def, &v.ms); break;
        case SS_OT_US: rc = ss__parse_us(r->def, &v.ms); break;
        case SS_OT_BOOL: rc = ss__parse_bool(r->def, &v.b); break;
        default: fail_msg("%s: unknown type %d", r->env, r->type);
        }
        if (rc != 0)
            fail_msg("default of %s does not parse: \"%s\" (%d)", r->env, r->def, rc);
        /* and a fresh load holds exactly that value, without a warning */
        assert_int_equal(ss_option_set(r->opt, r->def), 0);
        {
            char want[PATH_MAX];
            assert_true(ss_option_get(r->opt, want, sizeof(want)) >= 0);
            cap_start();
            fresh(NULL);
            assert_int_equal(cap_stop(), 0);
            assert_string_equal(get(r->opt), want);
        }
    }
}

/* ------------------------------------------------- env, precedence, warn */

static void test_precedence(void **state)
{
    (void)state;
    assert_string_equal(get(SS_OPT_CAPACITY), "0"); /* default */
    setenv("SEALSTORE_CAPACITY", "1G", 1);
    ss__options_reset();
    assert_string_equal(get(SS_OPT_CAPACITY), "1G"); /* env beats default */
    assert_int_equal(ss_option_set(SS_OPT_CAPACITY, "2G"), 0);
    assert_string_equal(get(SS_OPT_CAPACITY), "2G"); /* API beats env */
    setenv("SEALSTORE_CAPACITY", "3G", 1);
    assert_string_equal(get(SS_OPT_CAPACITY), "2G"); /* env read once */
    assert_int_equal(ss__opt_size(SS_OPT_CAPACITY), 2 * SS_GiB);
    ss__options_reset();
    assert_string_equal(get(SS_OPT_CAPACITY), "3G"); /* reset forgets the API value */
    unsetenv("SEALSTORE_CAPACITY");
    ss__options_reset();
    assert_string_equal(get(SS_OPT_CAPACITY), "0");

    /* every type takes its value from the environment */
    setenv("SEALSTORE_SOCKET", "/run/s.sock", 1);
    setenv("SEALSTORE_HUGEPAGES", "2m", 1);
    setenv("SEALSTORE_NUMA", "interleave", 1);
    setenv("SEALSTORE_POOL_CLASSES", "2M,32M", 1);
    ss__options_reset();
    assert_string_equal(get(SS_OPT_SOCKET), "/run/s.sock");
    assert_int_equal(ss__opt_hugepages(), SS_HP_2M);
    assert_int_equal(ss__opt_numa().mode, SS_NUMA_INTERLEAVE);
    assert_string_equal(get(SS_OPT_POOL_CLASSES), "2M,32M");
    /* an empty variable is a value too: empty string, or invalid */
    setenv("SEALSTORE_SOCKET", "", 1);
    ss__options_reset();
    assert_string_equal(get(SS_OPT_SOCKET), "");
}

static void test_bad_env_warns_once(void **state)
{
    static const struct {
        const char *env, *bad;
    } cases[] = {
        {"SEALSTORE_CAPACITY", "12Q"},
        {"SEALSTORE_POOL_SIZE", "16E"},       /* out of range */
        {"SEALSTORE_HUGEPAGES", "4M"},
        {"SEALSTORE_NUMA", "node:64"},
        {"SEALSTORE_POOL_CLASSES", "4M,1M"},
        {"SEALSTORE_SMALL_SEGMENT", ""},
        {"SEALSTORE_SMALL_MAX", "-1"},
    };
    char defaults[SS_OPT__COUNT][64];

    (void)state;
    for (int i = 0; i < SS_OPT__COUNT; i++)
        assert_true(ss_option_get((ss_option)i, defaults[i], sizeof(defaults[i])) >= 0);

    /* one bad variable: one warning naming it and its value */
    for (size_t i = 0; i < SS_ARRAY_SIZE(cases); i++) {
        int opt = ss_option_lookup(cases[i].env);
        assert_true(opt >= 0);
        setenv("SEALSTORE_LOG", "warn", 1);
        setenv(cases[i].env, cases[i].bad, 1);
        cap_start();
        ss__options_reset();
        for (int k = 0; k < 3; k++)
            (void)get((ss_option)opt); /* later reads do not warn again */
        assert_int_equal(cap_stop(), 1);
        assert_int_equal(cap.level[0], SS_LOG_WARN);
        if (!strstr(cap.line[0], cases[i].env) || !strstr(cap.line[0], "sealstore: "))
            fail_msg("warning does not name %s: %s", cases[i].env, cap.line[0]);
        if (cases[i].bad[0] && !strstr(cap.line[0], cases[i].bad))
            fail_msg("warning does not quote \"%s\": %s", cases[i].bad, cap.line[0]);
        assert_string_equal(get((ss_option)opt), defaults[opt]);
        unsetenv(cases[i].env);
    }

    /* several at once: one line each */
    for (size_t i = 0; i < SS_ARRAY_SIZE(cases); i++)
        setenv(cases[i].env, cases[i].bad, 1);
    cap_start();
    ss__options_reset();
    (void)get(SS_OPT_CAPACITY);
    assert_int_equal(cap_stop(), (int)SS_ARRAY_SIZE(cases));
    for (size_t i = 0; i < SS_ARRAY_SIZE(cases); i++)
        assert_int_equal(cap_count(cases[i].env), 1);

    /* hostile values stay one bounded line: control bytes masked, long
     * values cut */
    clear_env();
    setenv("SEALSTORE_LOG", "warn", 1);
    setenv("SEALSTORE_NUMA", "node:1\nsealstore: fake line", 1);
    {
        char longv[600];
        memset(longv, '9', sizeof(longv) - 2);
        longv[sizeof(longv) - 2] = 'x';
        longv[sizeof(longv) - 1] = '\0';
        setenv("SEALSTORE_CAPACITY", longv, 1);
    }
    cap_start();
    ss__options_reset();
    assert_int_equal(cap_stop(), 2);
    for (int i = 0; i < 2; i++)
        assert_null(strchr(cap.line[i], '\n'));
    assert_int_equal(cap_count("node:1?sealstore: fake line"), 1);
    assert_int_equal(cap_count("99999\"..."), 1); /* cut at 200 bytes */
    assert_string_equal(get(SS_OPT_NUMA), "local");

    /* a bad SEALSTORE_LOG warns too and leaves the level at its default */
    clear_env();
    setenv("SEALSTORE_LOG", "loud", 1);
    cap_start();
    ss__options_reset();
    assert_int_equal(cap_stop(), 1);
    assert_int_equal(cap_count("SEALSTORE_LOG"), 1);
    assert_int_equal(cap_count("loud"), 1);
    assert_string_equal(get(SS_OPT_LOG), "warn");
    assert_int_equal(atomic_load(&ss__log_level), SS_LOG_WARN);

    /* SEALSTORE_LOG=error silences the warning, as asked */
    setenv("SEALSTORE_LOG", "error", 1);
    setenv("SEALSTORE_CAPACITY", "nope", 1);
    cap_start();
    ss__options_reset();
    assert_int_equal(cap_stop(), 0);
    assert_string_equal(get(SS_OPT_CAPACITY), "0");
    clear_env();
}

/* ------------------------------------------------------- help and README */

static void test_help_env_mentions_every_option(void **state)
{
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);

    (void)state;
    assert_non_null(f);
    ss__options_help(f);
    fclose(f);
    assert_non_null(text);
    for (size_t i = 0; i < SS_ARRAY_SIZE(rows); i++) {
        char def[128];
        if (!strstr(text, rows[i].env))
            fail_msg("--help-env lacks %s", rows[i].env);
        if (!strstr(text, rows[i].help))
            fail_msg("--help-env lacks the help of %s", rows[i].env);
        snprintf(def, sizeof(def), "(default: \"%s\")", rows[i].def);
        if (!strstr(text, def))
            fail_msg("--help-env lacks the default of %s: %s", rows[i].env, def);
    }
    /* the decimal decision is documented where users look */
    assert_non_null(strstr(text, "No decimals"));
    free(text);
}

static char *trim(char *s)
{
    char *e;

    while (*s == ' ' || *s == '\t')
        s++;
    e = s + strlen(s);
    while (e > s && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\n' || e[-1] == '\r'))
        *--e = '\0';
    return s;
}

/*
 * README.md's "## Environment" table lists exactly the rows of the table,
 * each once, with the same default. A default cell is `text` in backticks,
 * or "(empty)" for an empty default; it is compared by value (set it, read
 * the canonical text back), so "256M" and "268435456" would both match.
 */
static void test_readme_table_matches(void **state)
{
    const char *srcdir = getenv("SS_SRCDIR");
    char path[PATH_MAX], line[2048];
    bool in_section = false, header = false;
    int seen[SS_OPT__COUNT] = {0};
    char defaults[SS_OPT__COUNT][PATH_MAX / 16];
    FILE *f;

    (void)state;
    T_SKIP_IF(!srcdir, NULL, "SS_SRCDIR is not set (make check sets it)");
    for (int i = 0; i < SS_OPT__COUNT; i++)
        assert_true(ss_option_get((ss_option)i, defaults[i], sizeof(defaults[i])) >= 0);
    snprintf(path, sizeof(path), "%s/README.md", srcdir);
    f = fopen(path, "r");
    if (!f)
        fail_msg("cannot open %s", path);
    while (fgets(line, sizeof(line), f)) {
        char *cells[4], *p, *var, *def;
        int n = 0, opt;

        if (strncmp(line, "## ", 3) == 0) {
            in_section = strcmp(trim(line), "## Environment") == 0;
            continue;
        }
        if (!in_section)
            continue;
        if (strncmp(trim(line), "| variable | default | meaning |", 32) == 0)
            header = true;
        if (strncmp(line, "| `", 3) != 0)
            continue;
        /* | `VAR` | default | meaning | */
        p = line + 1;
        while (n < 3 && p) {
            char *bar = strchr(p, '|');
            if (bar)
                *bar = '\0';
            cells[n++] = trim(p);
            p = bar ? bar + 1 : NULL;
        }
        if (n < 3)
            fail_msg("README table row with %d cells", n);
        var = cells[0];
        if (var[0] != '`' || var[strlen(var) - 1] != '`' || strlen(var) < 3)
            fail_msg("README variable cell not in backticks: %s", var);
        var[strlen(var) - 1] = '\0';
        var++;
        opt = ss_option_lookup(var);
        if (opt < 0)
            fail_msg("README lists %s, which is not an option", var);
        if (seen[opt]++)
            fail_msg("README lists %s twice", var);
        def = cells[1];
        if (strcmp(def, "(empty)") == 0) {
            def = "";
        } else if (def[0] == '`' && strlen(def) >= 2 && def[strlen(def) - 1] == '`') {
            def[strlen(def) - 1] = '\0';
            def++;
        } else {
            fail_msg("README default of %s is neither `value` nor (empty): %s", var, def);
        }
        if (ss_option_set((ss_option)opt, def) != 0)
            fail_msg("README default of %s does not parse: \"%s\"", var, def);
        if (strcmp(get((ss_option)opt), defaults[opt]) != 0)
            fail_msg("README default of %s is \"%s\", the table's is \"%s\"", var, def,
                     defaults[opt]);
    }
    fclose(f);
    assert_true(header);
    for (int i = 0; i < SS_OPT__COUNT; i++) {
        if (!seen[i])
            fail_msg("README's Environment table lacks %s", ss_option_name((ss_option)i));
    }
}

/* ------------------------------------------------------------ threading */

#define T_ITERS 4000

static _Atomic bool stop_readers;

static void *setter(void *arg)
{
    char s[64];

    (void)arg;
    for (int i = 0; i < T_ITERS; i++) {
        /* a socket path of i%50+1 copies of one letter: readers check it is
         * never a mix of two writes */
        int n = i % 50 + 1;
        memset(s, 'a' + i % 26, (size_t)n);
        s[n] = '\0';
        if (ss_option_set(SS_OPT_SOCKET, s) != 0 ||
            ss_option_set(SS_OPT_CAPACITY, i & 1 ? "1G" : "2G") != 0 ||
            ss_option_set(SS_OPT_POOL_CLASSES, i & 1 ? "1M,2M" : "4M,8M,16M") != 0)
            return (void *)1;
    }
    return NULL;
}

static void *getter(void *arg)
{
    char s[64];
    long bad = 0;

    (void)arg;
    while (!atomic_load(&stop_readers)) {
        size_t n = ss__opt_string(SS_OPT_SOCKET, s, sizeof(s));
        uint64_t capv = ss__opt_size(SS_OPT_CAPACITY);
        ss__sizelist l = ss__opt_sizelist(SS_OPT_POOL_CLASSES);
        char buf[32];
        int k = ss_option_get(SS_OPT_POOL_CLASSES, buf, sizeof(buf));

        if (n != strlen(s) || n == 0 || strspn(s, (char[]){s[0], 0}) != n)
            bad++;
        if (capv != SS_GiB && capv != 2 * SS_GiB && capv != 0)
            bad++;
        if (!(l.n == 2 && l.v[1] == 2 * SS_MiB) && !(l.n == 3 && l.v[2] == 16 * SS_MiB) &&
            !(l.n == 5)) /* the default, before the first set */
            bad++;
        if (k < 0 || (strcmp(buf, "1M,2M") && strcmp(buf, "4M,8M,16M") &&
                      strcmp(buf, "1M,4M,16M,64M,256M")))
            bad++;
    }
    return (void *)bad;
}

static void test_threads_get_set(void **state)
{
    pthread_t ts, tg;
    void *rs, *rg;

    (void)state;
    assert_int_equal(ss_option_set(SS_OPT_SOCKET, "x"), 0);
    atomic_store(&stop_readers, false);
    assert_int_equal(pthread_create(&tg, NULL, getter, NULL), 0);
    assert_int_equal(pthread_create(&ts, NULL, setter, NULL), 0);
    pthread_join(ts, &rs);
    atomic_store(&stop_readers, true);
    pthread_join(tg, &rg);
    assert_null(rs);
    assert_int_equal((long)rg, 0);
}

/* ----------------------------------------------------------------- stats */

static void test_count_add(void **state)
{
    ss__count c = {0};

    (void)state;
    ss__count_add(&c, 10);
    ss__count_add(&c, 5);
    ss__count_add(&c, -12);
    ss__count_add(&c, 4);
    assert_int_equal(atomic_load(&c.cur), 7);
    assert_int_equal(atomic_load(&c.peak), 15);
    assert_int_equal(atomic_load(&c.total), 19); /* positive deltas only */
    ss__count_add(&c, -7);
    ss__count_add(&c, 0);
    assert_int_equal(atomic_load(&c.cur), 0);
    assert_int_equal(atomic_load(&c.peak), 15);
    ss__count_add(&c, 20);
    assert_int_equal(atomic_load(&c.peak), 20);
}

static ss__count shared_count;

static void *count_worker(void *arg)
{
    (void)arg;
    for (int i = 0; i < 20000; i++) {
        ss__count_add(&shared_count, 3);
        ss__count_add(&shared_count, -3);
    }
    return NULL;
}

static void test_count_threads(void **state)
{
    pthread_t t[2];

    (void)state;
    for (int i = 0; i < 2; i++)
        assert_int_equal(pthread_create(&t[i], NULL, count_worker, NULL), 0);
    for (int i = 0; i < 2; i++)
        pthread_join(t[i], NULL);
    assert_int_equal(atomic_load(&shared_count.cur), 0);
    assert_int_equal(atomic_load(&shared_count.total), 2 * 20000 * 3);
    /* both threads may have been up at once, never more */
    assert_true(atomic_load(&shared_count.peak) == 3 || atomic_load(&shared_count.peak) == 6);
}

static void test_stats_segment(void **state)
{
    static const struct {
        int backing;
        ss__count *c;
    } map[] = {
        {SS_BACKING_4K, &ss__g_stats.seg_bytes_4k},
        {SS_BACKING_THP, &ss__g_stats.seg_bytes_thp},
        {SS_BACKING_2M, &ss__g_stats.seg_bytes_2m},
        {SS_BACKING_1G, &ss__g_stats.seg_bytes_1g},
    };

    (void)state;
    for (size_t i = 0; i < SS_ARRAY_SIZE(map); i++) {
        ss__seg seg = {.fd = -1, .backing = (uint8_t)map[i].backing, .node = 3,
                       .size = (i + 1) * 2 * SS_MiB};
        int64_t cur0 = atomic_load(&map[i].c->cur);
        uint64_t tot0 = atomic_load(&map[i].c->total);
        int64_t segs0 = atomic_load(&ss__g_stats.segments.cur);
        uint64_t made0 = atomic_load(&ss__g_stats.seg_created);
        int64_t node0 = atomic_load(&ss__g_stats.node_bytes[3]);
        int64_t others[SS_ARRAY_SIZE(map)];

        for (size_t j = 0; j < SS_ARRAY_SIZE(map); j++)
            others[j] = atomic_load(&map[j].c->cur);

        ss__stats_segment(&seg, 1);
        assert_int_equal(atomic_load(&map[i].c->cur), cur0 + (int64_t)seg.size);
        assert_true(atomic_load(&map[i].c->peak) >= cur0 + (int64_t)seg.size);
        assert_int_equal(atomic_load(&map[i].c->total), tot0 + seg.size);
        assert_int_equal(atomic_load(&ss__g_stats.segments.cur), segs0 + 1);
        assert_int_equal(atomic_load(&ss__g_stats.seg_created), made0 + 1);
        assert_int_equal(atomic_load(&ss__g_stats.node_bytes[3]), node0 + (int64_t)seg.size);
        /* the other backings did not move */
        for (size_t j = 0; j < SS_ARRAY_SIZE(map); j++)
            if (j != i)
                assert_int_equal(atomic_load(&map[j].c->cur), others[j]);

        ss__stats_segment(&seg, -1);
        assert_int_equal(atomic_load(&map[i].c->cur), cur0);
        assert_int_equal(atomic_load(&map[i].c->total), tot0 + seg.size);
        assert_int_equal(atomic_load(&ss__g_stats.segments.cur), segs0);
        assert_int_equal(atomic_load(&ss__g_stats.seg_created), made0 + 1);
        assert_int_equal(atomic_load(&ss__g_stats.node_bytes[3]), node0);
    }

    /* unbound and out-of-range nodes count bytes but no node */
    {
        int64_t nodes[SS_MAX_NODES];
        int16_t odd[] = {SS_NODE_ANY, SS_NODE_INTERLEAVE, SS_MAX_NODES, INT16_MAX};
        int64_t b4k = atomic_load(&ss__g_stats.seg_bytes_4k.cur);

        for (int n = 0; n < SS_MAX_NODES; n++)
            nodes[n] = atomic_load(&ss__g_stats.node_bytes[n]);
        for (size_t k = 0; k < SS_ARRAY_SIZE(odd); k++) {
            ss__seg seg = {.fd = -1, .backing = SS_BACKING_4K, .node = odd[k], .size = 4096};
            ss__stats_segment(&seg, 1);
            assert_int_equal(atomic_load(&ss__g_stats.seg_bytes_4k.cur), b4k + 4096);
            ss__stats_segment(&seg, -1);
        }
        for (int n = 0; n < SS_MAX_NODES; n++)
            assert_int_equal(atomic_load(&ss__g_stats.node_bytes[n]), nodes[n]);
    }
}

/* A small strict JSON checker: objects, arrays, strings without escapes,
 * integers. Returns the position after the value, or NULL. */
static const char *json_value(const char *p, int depth);

static const char *json_ws(const char *p)
{
    while (*p == ' ' || *p == '\n' || *p == '\t' || *p == '\r')
        p++;
    return p;
}

static const char *json_string(const char *p)
{
    if (*p++ != '"')
        return NULL;
    while (*p && *p != '"') {
        if (*p == '\\' || (unsigned char)*p < 0x20)
            return NULL;
        p++;
    }
    return *p == '"' ? p + 1 : NULL;
}

static const char *json_value(const char *p, int depth)
{
    p = json_ws(p);
    if (depth > 8)
        return NULL;
    if (*p == '{' || *p == '[') {
        char close = *p == '{' ? '}' : ']';
        bool obj = *p == '{';
        p = json_ws(p + 1);
        if (*p == close)
            return p + 1;
        for (;;) {
            if (obj) {
                p = json_string(json_ws(p));
                if (!p)
                    return NULL;
                p = json_ws(p);
                if (*p++ != ':')
                    return NULL;
            }
            p = json_value(p, depth + 1);
            if (!p)
                return NULL;
            p = json_ws(p);
            if (*p == close)
                return p + 1;
            if (*p++ != ',')
                return NULL;
        }
    }
    if (*p == '"')
        return json_string(p);
    if (*p == '-')
        p++;
    if (*p < '0' || *p > '9')
        return NULL;
    while (*p >= '0' && *p <= '9')
        p++;
    return p;
}

static void test_stats_json(void **state)
{
    char *text = NULL, *q;
    size_t len = 0;
    FILE *f;
    const char *end;
    int commas = 0;
    ss__seg seg = {.fd = -1, .backing = SS_BACKING_2M, .node = 2, .size = 6 * SS_MiB};

    (void)state;
    ss__stats_segment(&seg, 1);
    ss__counter_add(&ss__g_stats.populate_ns, 123);
    f = open_memstream(&text, &len);
    assert_non_null(f);
    ss__stats_json(f);
    fclose(f);
    ss__stats_segment(&seg, -1);
    assert_non_null(text);
    end = json_value(text, 0);
    if (!end || *json_ws(end) != '\0')
        fail_msg("not one JSON object: %s", text);
    assert_true(text[0] == '{');

#define T_J_COUNT(n)                                                           \
    if (!strstr(text, "\"" #n "\":{\"cur\":"))                                 \
        fail_msg("JSON lacks COUNT " #n ": %s", text);
#define T_J_COUNTER(n)                                                         \
    if (!strstr(text, "\"" #n "\":"))                                          \
        fail_msg("JSON lacks COUNTER " #n ": %s", text);
    SS_STATS(T_J_COUNT, T_J_COUNTER)
#undef T_J_COUNT
#undef T_J_COUNTER

    {
        char want[128];
        snprintf(want, sizeof(want), "\"seg_bytes_2m\":{\"cur\":%llu,",
                 (unsigned long long)(6 * SS_MiB));
        assert_non_null(strstr(text, want));
        snprintf(want, sizeof(want), "\"populate_ns\":%llu",
                 (unsigned long long)atomic_load(&ss__g_stats.populate_ns));
        assert_non_null(strstr(text, want));
    }
    q = strstr(text, "\"node_bytes\":[");
    assert_non_null(q);
    for (q += strlen("\"node_bytes\":["); *q && *q != ']'; q++)
        commas += *q == ',';
    assert_int_equal(commas + 1, SS_MAX_NODES);
    q = strstr(text, "\"node_bytes\":[0,0,");
    assert_non_null(q);
    {
        char want[64];
        snprintf(want, sizeof(want), "\"node_bytes\":[0,0,%llu,",
                 (unsigned long long)(6 * SS_MiB));
        assert_non_null(strstr(text, want));
    }
    free(text);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_first_access_reads_env_once), /* must stay first */
        cmocka_unit_test(test_parse_size_good),
        cmocka_unit_test(test_parse_size_bad),
        cmocka_unit_test(test_parse_hugepages),
        cmocka_unit_test(test_parse_numa),
        cmocka_unit_test(test_parse_loglevel),
        cmocka_unit_test(test_parse_sizelist),
        cmocka_unit_test(test_parse_ms_and_bool),
        cmocka_unit_test_setup(test_string_limits, fresh),
        cmocka_unit_test_setup(test_set_errors_keep_value, fresh),
        cmocka_unit_test_setup(test_get_snprintf_semantics, fresh),
        cmocka_unit_test_setup(test_canonical_roundtrip, fresh),
        cmocka_unit_test_setup(test_typed_getters, fresh),
        cmocka_unit_test_setup(test_log_option_drives_logger, fresh),
        cmocka_unit_test_setup(test_name_and_lookup, fresh),
        cmocka_unit_test(test_table_matches_public_enum),
        cmocka_unit_test_setup(test_every_default_parses, fresh),
        cmocka_unit_test_setup(test_option_check, fresh),
        cmocka_unit_test_setup(test_precedence, fresh),
        cmocka_unit_test_setup(test_bad_env_warns_once, fresh),
        cmocka_unit_test_setup(test_help_env_mentions_every_option, fresh),
        cmocka_unit_test_setup_teardown(test_readme_table_matches, fresh, fresh),
        cmocka_unit_test_setup_teardown(test_threads_get_set, fresh, fresh),
        cmocka_unit_test(test_count_add),
        cmocka_unit_test(test_count_threads),
        cmocka_unit_test(test_stats_segment),
        cmocka_unit_test(test_stats_json),
    };

    return t_run(tests, NULL, NULL);
}
