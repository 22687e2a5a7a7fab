/* SPDX-License-Identifier: MIT */
/*
 * Error messages, version, capability bits and the log sink: the small
 * public calls every other part of sealstore reports through.
 */
#include "internal.h"
#include "options.h"

#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../t_helpers.h"

/* ---------------------------------------------------------- ss_strerror */

static void test_strerror_success(void **state)
{
    (void)state;
    assert_string_equal(ss_strerror(0), "success");
    assert_string_equal(ss_strerror(1), "success");
    assert_string_equal(ss_strerror(4096), "success");
    assert_string_equal(ss_strerror(INT_MAX), "success");
}

static void test_strerror_errno(void **state)
{
    char want[256];

    (void)state;
    /* the C library's text, whatever the locale says it is */
    snprintf(want, sizeof(want), "%s", strerror(ENOENT));
    assert_string_equal(ss_strerror(-ENOENT), want);
    snprintf(want, sizeof(want), "%s", strerror(EINVAL));
    assert_string_equal(ss_strerror(-EINVAL), want);
    assert_string_not_equal(ss_strerror(-ENOENT), ss_strerror(-EINVAL));
    /* every kernel-range code gives some non-empty text */
    for (int e = 1; e <= SS_MAX_ERRNO; e++) {
        const char *s = ss_strerror(-e);
        if (!s || !*s)
            fail_msg("ss_strerror(-%d) is empty", e);
    }
}

static void test_strerror_own_codes(void **state)
{
    (void)state;
    /* outside -1..-4095, so IS_ERR-style checks and strerror never clash */
    assert_true(SS_E_BASE > SS_MAX_ERRNO);
    assert_true(SS_E_LAST > SS_E_BASE);
    for (int e = SS_E_BASE; e < SS_E_LAST; e++) {
        const char *s = ss_strerror(-e);
        assert_non_null(s);
        if (strncmp(s, "SS_E_", 5) != 0 || strlen(s) < 8)
            fail_msg("ss_strerror(-%d) = \"%s\": want \"SS_E_NAME: text\"", e, s);
        assert_non_null(strchr(s, ':'));
        for (int o = SS_E_BASE; o < e; o++)
            if (strcmp(s, ss_strerror(-o)) == 0)
                fail_msg("-%d and -%d share the message \"%s\"", e, o, s);
    }
    assert_non_null(strstr(ss_strerror(-SS_E_VERSION), "SS_E_VERSION"));
    assert_non_null(strstr(ss_strerror(-SS_E_NOBACKING), "SS_E_NOBACKING"));
    assert_non_null(strstr(ss_strerror(-SS_E_FULL), "spill space exhausted"));
}

static void test_strerror_unknown(void **state)
{
    static const int odd[] = {
        -SS_E_LAST, -(SS_E_LAST + 1), -(SS_E_BASE - 1), -(SS_MAX_ERRNO + 1),
        -100000, -1000000000, INT_MIN, INT_MIN + 1,
    };

    (void)state;
    for (size_t i = 0; i < SS_ARRAY_SIZE(odd); i++) {
        const char *s = ss_strerror(odd[i]);
        assert_non_null(s);
        if (strcmp(s, "unknown error") != 0)
            fail_msg("ss_strerror(%d) = \"%s\", want \"unknown error\"", odd[i], s);
    }
}

/* Messages come from static or thread-local storage: two threads asking at
 * once each get their own text. */
static void *strerror_worker(void *arg)
{
    int e = (int)(intptr_t)arg;
    char want[256];
    long bad = 0;

    snprintf(want, sizeof(want), "%s", ss_strerror(-e));
    for (int i = 0; i < 5000; i++) {
        if (strcmp(ss_strerror(-e), want) != 0)
            bad++;
        (void)ss_strerror(-SS_E_PROTO);
    }
    return (void *)bad;
}

static void test_strerror_threads(void **state)
{
    pthread_t t[2];
    void *r[2];

    (void)state;
    assert_int_equal(pthread_create(&t[0], NULL, strerror_worker, (void *)(intptr_t)ENOENT), 0);
    assert_int_equal(pthread_create(&t[1], NULL, strerror_worker, (void *)(intptr_t)4000), 0);
    pthread_join(t[0], &r[0]);
    pthread_join(t[1], &r[1]);
    assert_null(r[0]);
    assert_null(r[1]);
}

/* -------------------------------------------------- version and support */

static void test_version(void **state)
{
    char want[64];

    (void)state;
    snprintf(want, sizeof(want), "%d.%d.%d", SS_VERSION_MAJOR, SS_VERSION_MINOR,
             SS_VERSION_PATCH);
    assert_non_null(ss_version());
    assert_string_equal(ss_version(), want);
    assert_ptr_equal(ss_version(), ss_version()); /* static storage */
}

static void test_get_support(void **state)
{
    /* the pools may change between calls (other tests reserve pages) */
    const unsigned volatile_bits = SS_SUPPORT_HUGETLB_2M | SS_SUPPORT_HUGETLB_1G;
    unsigned a, b;

    (void)state;
    a = ss_get_support();
    b = ss_get_support();
    /* this machine (Linux >= 3.17) has sealing memfds; everything builds on them */
    assert_true(a & SS_SUPPORT_MEMFD_SEAL);
    assert_int_equal(a & ~volatile_bits, b & ~volatile_bits);
    /* F_SEAL_FUTURE_WRITE (5.1) and MADV_POPULATE_WRITE (5.14) imply
     * sealing memfds; NOEXEC (6.3) implies FUTURE_WRITE */
    if (a & SS_SUPPORT_NOEXEC_SEAL)
        assert_true(a & SS_SUPPORT_FUTURE_WRITE);
}

/* -------------------------------------------------------------- logging */

#define CAP_LINES 8
static struct {
    pthread_mutex_t lock;
    int n;
    int level[CAP_LINES];
    char line[CAP_LINES][1100];
    void *arg[CAP_LINES];
} cap = {.lock = PTHREAD_MUTEX_INITIALIZER};

static void cap_sink(int level, const char *line, void *arg)
{
    pthread_mutex_lock(&cap.lock);
    if (cap.n < CAP_LINES) {
        cap.level[cap.n] = level;
        cap.arg[cap.n] = arg;
        snprintf(cap.line[cap.n], sizeof(cap.line[0]), "%s", line);
    }
    cap.n++;
    pthread_mutex_unlock(&cap.lock);
}

static int log_setup(void **state)
{
    (void)state;
    unsetenv("SEALSTORE_LOG"); /* make check exports SEALSTORE_LOG=error */
    ss__options_reset();
    memset(cap.line, 0, sizeof(cap.line));
    cap.n = 0;
    return 0;
}

static int log_teardown(void **state)
{
    (void)state;
    ss_log_set_sink(NULL, NULL);
    unsetenv("SEALSTORE_LOG");
    ss__options_reset();
    return 0;
}

static void test_log_sink_receives_lines(void **state)
{
    static int token;

    (void)state;
    assert_int_equal(ss_log_set_sink(cap_sink, &token), 0);
    ss__log_set_level(SS_LOG_DEBUG);
    ss__log_error("e %d", 1);
    ss__log_warn("w %s", "two");
    ss__log_info("i %u", 3u);
    ss__log_debug("d %c", '4');
    assert_int_equal(cap.n, 4);
    assert_string_equal(cap.line[0], "sealstore: error: e 1");
    assert_string_equal(cap.line[1], "sealstore: warning: w two");
    assert_string_equal(cap.line[2], "sealstore: i 3");
    assert_string_equal(cap.line[3], "sealstore: debug: d 4");
    for (int i = 0; i < 4; i++) {
        assert_int_equal(cap.level[i], i); /* SS_LOG_ERROR .. SS_LOG_DEBUG */
        assert_ptr_equal(cap.arg[i], &token);
        assert_null(strchr(cap.line[i], '\n'));
    }
}

static void test_log_long_line(void **state)
{
    char big[3000];

    (void)state;
    memset(big, 'x', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    ss_log_set_sink(cap_sink, NULL);
    ss__log_set_level(SS_LOG_WARN);
    ss__log_warn("%s", big);
    assert_int_equal(cap.n, 1);
    assert_true(strncmp(cap.line[0], "sealstore: warning: xxx", 23) == 0);
    assert_true(strlen(cap.line[0]) < 1100); /* capped, not overflowed */
}

static void test_log_level_filtering(void **state)
{
    (void)state;
    ss_log_set_sink(cap_sink, NULL);
    ss__log_set_level(SS_LOG_WARN);
    ss__log_info("hidden");
    ss__log_debug("hidden");
    ss__log_warn("shown");
    ss__log_error("shown");
    assert_int_equal(cap.n, 2);
    assert_int_equal(cap.level[0], SS_LOG_WARN);
    assert_int_equal(cap.level[1], SS_LOG_ERROR);

    ss__log_set_level(SS_LOG_ERROR);
    ss__log_warn("hidden");
    assert_int_equal(cap.n, 2);

    /* out-of-range levels clamp instead of disabling everything */
    ss__log_set_level(-7);
    ss__log_error("shown");
    assert_int_equal(cap.n, 3);
    ss__log_set_level(99);
    ss__log_debug("shown");
    assert_int_equal(cap.n, 4);
}

static void test_log_level_from_env_and_option(void **state)
{
    (void)state;
    ss_log_set_sink(cap_sink, NULL);

    setenv("SEALSTORE_LOG", "debug", 1);
    ss__options_reset();
    ss__log_debug("shown");
    assert_int_equal(cap.n, 1);

    setenv("SEALSTORE_LOG", "error", 1);
    ss__options_reset();
    ss__log_warn("hidden");
    ss__log_info("hidden");
    assert_int_equal(cap.n, 1);

    /* the API setting beats the environment */
    assert_int_equal(ss_option_set(SS_OPT_LOG, "info"), 0);
    ss__log_info("shown");
    ss__log_debug("hidden");
    assert_int_equal(cap.n, 2);
    assert_int_equal(cap.level[1], SS_LOG_INFO);

    /* default is warn */
    unsetenv("SEALSTORE_LOG");
    ss__options_reset();
    ss__log_info("hidden");
    ss__log_warn("shown");
    assert_int_equal(cap.n, 3);
}

/* NULL restores the default sink: stderr, one line with a newline. */
static void test_log_default_sink(void **state)
{
    char path[PATH_MAX], buf[256] = {0};
    int fd, saved;
    ssize_t n;

    (void)state;
    ss_log_set_sink(cap_sink, NULL);
    ss__log_set_level(SS_LOG_WARN);
    ss__log_warn("to the sink");
    assert_int_equal(cap.n, 1);
    assert_int_equal(ss_log_set_sink(NULL, NULL), 0);

    snprintf(path, sizeof(path), "%s/stderr", t_tmpdir());
    fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    assert_true(fd >= 0);
    fflush(stderr);
    saved = dup(STDERR_FILENO);
    assert_true(saved >= 0);
    assert_true(dup2(fd, STDERR_FILENO) >= 0);
    ss__log_warn("to stderr %d", 42);
    ss__log_info("hidden");
    dup2(saved, STDERR_FILENO);
    close(saved);
    n = pread(fd, buf, sizeof(buf) - 1, 0);
    close(fd);
    assert_int_equal(cap.n, 1); /* the old sink saw nothing */
    assert_true(n > 0);
    assert_string_equal(buf, "sealstore: warning: to stderr 42\n");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_strerror_success),
        cmocka_unit_test(test_strerror_errno),
        cmocka_unit_test(test_strerror_own_codes),
        cmocka_unit_test(test_strerror_unknown),
        cmocka_unit_test(test_strerror_threads),
        cmocka_unit_test(test_version),
        cmocka_unit_test(test_get_support),
        cmocka_unit_test_setup_teardown(test_log_sink_receives_lines, log_setup, log_teardown),
        cmocka_unit_test_setup_teardown(test_log_long_line, log_setup, log_teardown),
        cmocka_unit_test_setup_teardown(test_log_level_filtering, log_setup, log_teardown),
        cmocka_unit_test_setup_teardown(test_log_level_from_env_and_option, log_setup,
                                        log_teardown),
        cmocka_unit_test_setup_teardown(test_log_default_sink, log_setup, log_teardown),
    };

    return t_run(tests, NULL, NULL);
}
