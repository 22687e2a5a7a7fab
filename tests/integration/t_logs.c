/* SPDX-License-Identifier: MIT */
/*
 * What a store prints on stderr.
 *
 * A stock machine (no hugepage pool configured, shmem THP off) is normal:
 * an embedded store at the default log level, asked for an object big
 * enough to want hugepages (larger than the 2 MiB pool: every hugepage
 * backing is tried and falls back), prints nothing; at info it says once
 * that it runs on 4 KiB pages and names `sealstore doctor`. On a machine
 * where someone configured some of it (other test programs reserve 2 MiB
 * pages), the backings left unconfigured must still go unmentioned. The
 * case holds the test programs' pool lock meanwhile.
 *
 * Under systemd (JOURNAL_STREAM naming stderr's device:inode) every line
 * starts with its syslog priority, "<4>" for a warning and "<6>" for info;
 * with JOURNAL_STREAM naming some other file, no line does.
 *
 * Each store runs in a forked child with stderr on a file: the library
 * reads its environment once per process, and this process never starts
 * one.
 */
#include "config.h"

#include "t_helpers.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>
#include <sys/wait.h>

#define HUGE_2M (2ull << 20)
#define HUGE_1G (1ull << 30)

/* the object each store puts: large enough that every hugepage backing
 * is tried (the child takes it from T_OBJ_SIZE, else 8 MiB) */
static uint64_t g_obj_size;

enum journal { J_NONE, J_STDERR, J_OTHER };

/* In a child: an embedded store with `env` ("NAME=value" strings, NULL
 * ended) on top of a clean SEALSTORE_* environment, one put and get of an
 * 8 MiB object, stderr into `out`; returns the child's exit status. */
static int run_store(const char *name, const char *const *env, enum journal j, char *out,
                     size_t len)
{
    char path[512], sock[512];
    pid_t pid;
    int st, fd;
    ssize_t n;

    snprintf(path, sizeof(path), "%s/%s.stderr", t_tmpdir(), name);
    snprintf(sock, sizeof(sock), "%s/%s.sock", t_tmpdir(), name);
    pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        ss_client *c;
        ss_id id = {{1, 2, 3}};
        ss_object o;
        const char *sz;
        uint64_t size;
        void *data;
        struct stat sb;

        fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        if (fd < 0 || dup2(fd, STDERR_FILENO) < 0)
            _exit(99);
        /* make check runs tests with SEALSTORE_HUGEPAGES=off and
         * SEALSTORE_LOG=error: this is about the defaults */
        unsetenv("SEALSTORE_HUGEPAGES");
        unsetenv("SEALSTORE_LOG");
        unsetenv("JOURNAL_STREAM");
        setenv("SEALSTORE_SPILL_DIR", "off", 1);
        for (; env && *env; env++)
            putenv((char *)*env);
        sz = getenv("T_OBJ_SIZE");
        size = sz ? strtoull(sz, NULL, 10) : 8ull << 20;
        data = calloc(1, size);
        if (j != J_NONE) {
            char js[64];

            if (j == J_STDERR ? fstat(STDERR_FILENO, &sb) < 0 : stat("/", &sb) < 0)
                _exit(99);
            snprintf(js, sizeof(js), "%llu:%llu", (unsigned long long)sb.st_dev,
                     (unsigned long long)sb.st_ino);
            setenv("JOURNAL_STREAM", js, 1);
        }
        if (!data)
            _exit(99);
        if (ss_connect(sock, SS_CONNECT_EMBED, &c) < 0)
            _exit(2);
        if (ss_put(c, &id, data, size, NULL, 0) < 0 || ss_get(c, &id, 1, 10000, &o) != 1)
            _exit(3);
        (void)ss_release_object(c, &o);
        ss_disconnect(c);
        _exit(0);
    }
    assert_int_equal(waitpid(pid, &st, 0), pid);
    fd = open(path, O_RDONLY | O_CLOEXEC);
    assert_true(fd >= 0);
    n = read(fd, out, len - 1);
    close(fd);
    out[n > 0 ? n : 0] = '\0';
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

static int count(const char *hay, const char *needle)
{
    int n = 0;

    for (const char *p = hay; (p = strstr(p, needle)); p += strlen(needle))
        n++;
    return n;
}

/* Every line of `out` that mentions `what` (a backing nobody configured)
 * fails the case. */
static void none_about(const char *out, const char *what, const char *why)
{
    const char *p = strstr(out, what);

    if (p)
        fail_msg("a line about %s, which %s:\n%s", what, why, out);
}

/*
 * Default level: not a word about a backing nobody configured. On a stock
 * machine (nothing configured) that is no output at all, and at info one
 * line saying 4 KiB pages. Where someone configured a pool, its running
 * dry may be said (the object is made larger than the 2 MiB pool, so
 * every hugepage backing is tried): only the unconfigured ones are checked.
 */
static void t_unconfigured_is_quiet(void **state)
{
    char out[8192], size_env[64];
    const char *env[] = {size_env, NULL};
    const char *info[] = {size_env, "SEALSTORE_LOG=info", NULL};
    int lk = t_hugetlb_lock();
    long p2 = t_hugetlb_total(HUGE_2M), p1 = t_hugetlb_total(HUGE_1G);
    const char *thp = t_thp_shmem_mode();
    bool thp_on = strcmp(thp, "never") && strcmp(thp, "deny") && strcmp(thp, "");
    bool stock = p2 <= 0 && p1 <= 0 && !thp_on;
    int rc;

    (void)state;
    /* beyond the 2 MiB pool, however large others made it */
    g_obj_size = (uint64_t)(p2 > 0 ? p2 + 2 : 4) * HUGE_2M;
    if (!(p2 <= 0 || !thp_on) || g_obj_size > (192ull << 20))
        t_hugetlb_unlock(lk);
    T_SKIP_IF(p2 > 0 && thp_on, NULL,
              "the 2 MiB pool and shmem THP are both configured: no backing left unconfigured");
    T_SKIP_IF(g_obj_size > (192ull << 20), NULL,
              "the 2 MiB pool is too large (others reserved pages) to exceed cheaply");
    snprintf(size_env, sizeof(size_env), "T_OBJ_SIZE=%llu", (unsigned long long)g_obj_size);
    rc = run_store("quiet", env, J_NONE, out, sizeof(out));
    if (rc != 0 || (stock && out[0]))
        fail_msg("exit %d; a store on a machine without hugepages printed:\n%s", rc, out);
    if (p2 <= 0)
        none_about(out, "2 MiB", "nobody configured");
    if (p1 <= 0)
        none_about(out, "1 GiB", "nobody configured");
    if (!thp_on)
        none_about(out, "transparent hugepages", "shmem_enabled leaves off");
    rc = run_store("info", info, J_NONE, out, sizeof(out));
    t_hugetlb_unlock(lk);
    assert_int_equal(rc, 0);
    if (count(out, "4 KiB pages") != (stock ? 1 : 0) ||
        (stock && !strstr(out, "sealstore doctor")))
        fail_msg("at info, expected %s line saying 4 KiB pages (naming sealstore doctor):\n%s",
                 stock ? "one" : "no", out);
    if (stock && strstr(out, "warning"))
        fail_msg("at info, a warning on a machine without hugepages:\n%s", out);
}

/* A bad SEALSTORE_POOL_SIZE is a warning; the store's start is info. These
 * stores run without the pool lock, so on 4 KiB pages: on the default
 * backing they would map free 2 MiB pages that a test program holding the
 * lock added for itself (t_service, t_arena). */
static const char *const journal_env[] = {"SEALSTORE_LOG=info", "SEALSTORE_POOL_SIZE=bogus",
                                          "SEALSTORE_HUGEPAGES=off", NULL};

static void t_journal_priorities(void **state)
{
    char out[8192];

    (void)state;
    assert_int_equal(run_store("journal", journal_env, J_STDERR, out, sizeof(out)), 0);
    if (!strstr(out, "<4>sealstore: warning: ") || !strstr(out, "<6>sealstore: store: serving"))
        fail_msg("no <4> warning or <6> info line with JOURNAL_STREAM naming stderr:\n%s", out);
    /* every line has one */
    for (const char *l = out; *l; l = strchr(l, '\n') + 1) {
        if (l[0] != '<' || l[2] != '>' || !strchr("3467", l[1]))
            fail_msg("a line without a priority:\n%s", l);
        if (!strchr(l, '\n'))
            break;
    }
}

static void t_journal_elsewhere(void **state)
{
    char out[8192];

    (void)state;
    assert_int_equal(run_store("notjournal", journal_env, J_OTHER, out, sizeof(out)), 0);
    if (!strstr(out, "sealstore: warning: ") || strchr(out, '<'))
        fail_msg("with JOURNAL_STREAM naming another file, expected plain lines:\n%s", out);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(t_unconfigured_is_quiet),
        cmocka_unit_test(t_journal_priorities),
        cmocka_unit_test(t_journal_elsewhere),
    };

    return t_run(tests, NULL, NULL);
}
