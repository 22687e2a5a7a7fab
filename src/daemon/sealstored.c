/* SPDX-License-Identifier: MIT */
/*
 * sealstored: the store as a daemon.
 *
 *   sealstored [--socket PATH] [--capacity SIZE] [--spill-dir DIR] ...
 *
 * Every option of the table (src/lib/options.h) is also a flag: its
 * SEALSTORE_<NAME> variable becomes --<name> in lower case with dashes, and
 * the flag beats the variable. The flags are generated from the table at
 * run time, so a new option needs no change here.
 *
 * The daemon makes itself non-dumpable first: small-object segments and the
 * index are written through the store's own mappings, and a dumpable
 * process can be written through /proc/PID/mem or ptrace by its uid.
 * Root (CAP_SYS_PTRACE) still can, and no user-space design stops it; the
 * small segments are at least read-only outside the store's short write
 * windows (alloc.c, "Who writes what"). SIGTERM and SIGINT stop it cleanly
 * (the handler only writes the store's stop eventfd); it exits 0 after a
 * clean stop.
 *
 * Options are checked strictly here (ss__option_check): a bad flag or
 * SEALSTORE_ variable stops the start with exit status 2, where the library
 * would warn and keep the default.
 *
 * Under a service manager (Type=notify) the daemon sends READY=1 once the
 * store is open: its socket listens, and every request sent from then on
 * is answered; STOPPING=1 when a stop signal ends the loop; STATUS= lines
 * say what it is doing (sd_notify.h). Its own messages, like the library's
 * log lines, carry syslog priorities when stderr is the journal.
 *
 * --reserve-hugepages SIZE[:PAGE] (root) makes SIZE of hugepages free
 * before the store picks its backing and gives back exactly what it added
 * when it exits, SIGTERM and SIGINT included. A crash record in the state
 * directory ($STATE_DIRECTORY, as systemd's StateDirectory= sets it, else
 * SS_STATE_DIR) lets the next start give back what a killed run could not
 * (hugepages.h has the design); every start looks for one, with the flag
 * or without.
 *
 * Hidden test helper: --print-dumpable prints PR_GET_DUMPABLE after the
 * same prctl the daemon does, then exits (tests use /proc instead; this is
 * for a human checking a build).
 */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/prctl.h>
#include <sys/stat.h>

#include "sealstore.h"
#include "hugepages.h"
#include "options.h"
#include "sd_notify.h"
#include "spill.h"
#include "store.h"

static ss__store *g_store;

/* A message of the daemon's own, at a log level (SS_LOG_*): with a syslog
 * priority prefix when stderr is the journal. Always printed: these are
 * the answers to what the operator asked (a bad flag, a reservation). */
static void __attribute__((format(printf, 2, 3))) say(int level, const char *fmt, ...)
{
    char line[1024];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    fprintf(stderr, "%ssealstored: %s\n", ss__log_prefix(level), line);
}

static void on_signal(int sig)
{
    (void)sig;
    ss__store_stop(g_store); /* one write(2): async-signal-safe */
}

/* "SEALSTORE_SPILL_DIR" -> "spill-dir" */
static void flag_of(ss_option opt, char *buf, size_t len)
{
    const char *n = ss_option_name(opt);
    size_t i = 0;

    if (n && !strncmp(n, "SEALSTORE_", 10))
        n += 10;
    for (; n && *n && i + 1 < len; n++)
        buf[i++] = *n == '_' ? '-' : (char)tolower((unsigned char)*n);
    buf[i] = '\0';
}

static void usage(FILE *f)
{
    char flag[64];

    fprintf(f, "Usage: sealstored [OPTION]...\n"
               "Run the sealstore object store on a Unix socket until SIGTERM or SIGINT.\n\n"
               "Options (each also read from its environment variable; a flag wins):\n");
    for (int i = 0; i < SS_OPT__COUNT; i++) {
        flag_of((ss_option)i, flag, sizeof(flag));
        fprintf(f, "  --%-20s %s\n", flag, ss_option_name((ss_option)i));
    }
    fprintf(f, "  --%-20s %s\n", "reserve-hugepages",
            "SIZE[:PAGE] of hugepages made free at start (root; PAGE 2M or 1G)");
    fprintf(f, "  --%-20s %s\n", "help", "show this help and exit");
    fprintf(f, "  --%-20s %s\n\n", "version", "show the version and exit");
    ss__options_help(f);
    fprintf(f, "\nUnlike the library, which warns and keeps the default, the daemon refuses\n"
               "to start when a flag or a SEALSTORE_ variable holds a value that does not\n"
               "parse or is out of range.\n"
               "\n--reserve-hugepages raises the hugetlb pool until SIZE (rounded up to "
               "whole pages, 2 MiB unless :1G) is free, and gives back exactly the pages it "
               "added at exit; a record in the state directory ($STATE_DIRECTORY, else "
               SS_STATE_DIR ") lets the next start give back what a killed run added.\n"
               "\nExit status: 0 after a clean stop; 1 when the store cannot start "
               "(another store serving the path, options that do not fit together, an "
               "explicit hugepage size the machine cannot give, hugepages that cannot be "
               "reserved, no memory); 2 on bad usage (an unknown flag, or a bad value in a "
               "flag or variable).\n");
}

/* The strict check of one value (ss__option_check); on failure say which
 * flag or variable and why. 0 or -1. */
static int check_value(ss_option opt, const char *what, const char *val)
{
    char why[160];

    if (ss__option_check(opt, val, why, sizeof(why)) == 0)
        return 0;
    say(SS_LOG_ERROR, "%s \"%.200s\": %s", what, val, why);
    return -1;
}

/* Every SEALSTORE_ variable that is set must hold a good value: checked
 * before anything reads the options (the library would warn and use the
 * default). 0 or -1. */
static int check_environment(void)
{
    for (int i = 0; i < SS_OPT__COUNT; i++) {
        const char *name = ss_option_name((ss_option)i);
        const char *val = getenv(name);

        if (val && check_value((ss_option)i, name, val) < 0)
            return -1;
    }
    return 0;
}

static int lookup_flag(const char *name, size_t len)
{
    char flag[64];

    for (int i = 0; i < SS_OPT__COUNT; i++) {
        flag_of((ss_option)i, flag, sizeof(flag));
        if (strlen(flag) == len && !strncmp(flag, name, len))
            return i;
    }
    return -1;
}

/* ------------------------------------------------- hugepage reservation */

static ss__hp_reservation g_hp;

/* The state directory: the first of systemd's $STATE_DIRECTORY list, else
 * the build's default. */
static void state_dir(char *buf, size_t len)
{
    const char *e = getenv("STATE_DIRECTORY");

    if (e && *e)
        snprintf(buf, len, "%.*s", (int)strcspn(e, ":"), e);
    else
        snprintf(buf, len, "%s", SS_STATE_DIR);
}

/* mkdir -p: the directory and any missing parents (0755, the last 0700).
 * 0, or -1 with errno. */
static int mkdir_parents(const char *dir)
{
    char p[PATH_MAX];

    if (snprintf(p, sizeof(p), "%s", dir) >= (int)sizeof(p)) {
        errno = ENAMETOOLONG;
        return -1;
    }
    for (char *q = p + 1; *q; q++) {
        if (*q != '/')
            continue;
        *q = '\0';
        if (mkdir(p, 0755) < 0 && errno != EEXIST)
            return -1;
        *q = '/';
    }
    return mkdir(p, 0700) < 0 && errno != EEXIST ? -1 : 0;
}

/*
 * Give back what a killed run on this socket added, then reserve what
 * `spec` asks (NULL: nothing). The record is named after the socket path
 * (two daemons on two sockets keep two records) and stays locked while we
 * run. 0, or -errno when the reservation the operator asked for cannot
 * be made at all (the daemon then exits 1).
 */
static int hugepages_start(const char *socket_path, const char *spec, char *status,
                           size_t slen)
{
    char dir[PATH_MAX], rec[PATH_MAX + 64], msg[400];
    uint64_t page, pages;
    int rc;

    ss__hp_init(&g_hp);
    status[0] = '\0';
    state_dir(dir, sizeof(dir));
    snprintf(rec, sizeof(rec), "%s/hugepages-%016llx.reserve", dir,
             (unsigned long long)ss__spill_hash64(socket_path, strlen(socket_path), 0));
    if (spec && mkdir_parents(dir) < 0)
        say(SS_LOG_WARN, "state directory %s: %s", dir, strerror(errno));
    rc = ss__hp_record_take(&g_hp, rec, spec != NULL, msg, sizeof(msg));
    if (rc == -EBUSY) {
        /* a live daemon owns this socket's record: leave its pages alone
         * (opening the store will find it serving) */
        if (spec)
            say(SS_LOG_ERROR, "%s is held by a running sealstored: not reserving", rec);
        return spec ? -EBUSY : 0;
    }
    if (msg[0])
        say(rc < 0 ? SS_LOG_ERROR : SS_LOG_WARN, "%s", msg);
    if (!spec)
        return 0;
    if (rc < 0 && rc != -ENOENT)
        say(SS_LOG_WARN, "no crash record %s (%s): pages added now leak if this run is killed",
            rec, strerror(-rc));
    if (ss__hp_parse(spec, &page, &pages) < 0)
        return -EINVAL; /* checked with the flags already */
    rc = ss__hp_reserve(&g_hp, page, pages, msg, sizeof(msg));
    if (rc < 0 && !g_hp.added) {
        say(SS_LOG_ERROR, "--reserve-hugepages %s: %s", spec, msg);
        return rc;
    }
    say(rc < 0 ? SS_LOG_WARN : SS_LOG_INFO, "--reserve-hugepages %s: %s", spec, msg);
    if (g_hp.added)
        snprintf(status, slen, "; %llu %s hugepages reserved",
                 (unsigned long long)g_hp.added, page >= SS_GiB ? "1 GiB" : "2 MiB");
    return 0;
}

static void hugepages_stop(void)
{
    uint64_t added = g_hp.added;

    ss__hp_give_back(&g_hp);
    ss__hp_record_release(&g_hp);
    if (added)
        say(SS_LOG_INFO, "gave back the %llu %s hugepages it reserved",
            (unsigned long long)added, g_hp.page_size >= SS_GiB ? "1 GiB" : "2 MiB");
}

/* Tell the service manager why the start failed (rc: -errno or -SS_E_*). */
static void notify_failure(const char *what, int rc)
{
    ss_notify("STATUS=%s: %s\nERRNO=%d", what, ss_strerror(rc), rc > -4096 ? -rc : EIO);
}

/* The command line: -1 to go on with the options set, or the status to
 * exit with (0 after --help, --version, --print-dumpable; 2 on a mistake).
 * *reserve: the --reserve-hugepages value (NULL: none, or 0). */
static int parse_args(int argc, char **argv, const char **reserve)
{
    /* --help and --version work whatever the environment holds */
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            usage(stdout);
            return 0;
        }
        if (!strcmp(argv[i], "--version")) {
            printf("sealstored %s\n", ss_version());
            return 0;
        }
    }
    if (check_environment() < 0)
        return 2;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];

        if (!strcmp(a, "--print-dumpable")) {
            printf("%d\n", prctl(PR_GET_DUMPABLE, 0, 0, 0, 0));
            return 0;
        }
        if (strncmp(a, "--", 2) != 0) {
            say(SS_LOG_ERROR, "unexpected argument '%s' (try --help)", a);
            return 2;
        }
        const char *name = a + 2, *eq = strchr(name, '=');
        size_t nlen = eq ? (size_t)(eq - name) : strlen(name);
        bool is_reserve = nlen == 17 && !strncmp(name, "reserve-hugepages", 17);
        int opt = is_reserve ? SS_OPT__COUNT : lookup_flag(name, nlen);
        if (opt < 0) {
            say(SS_LOG_ERROR, "unknown option '%.*s' (try --help)", (int)(nlen + 2), a);
            return 2;
        }
        const char *val = eq ? eq + 1 : NULL;
        if (!val) {
            if (i + 1 >= argc) {
                say(SS_LOG_ERROR, "option '%s' needs a value", a);
                return 2;
            }
            val = argv[++i];
        }
        char what[80];
        snprintf(what, sizeof(what), "--%.*s", (int)nlen, name);
        if (is_reserve) {
            uint64_t page, pages;

            if (ss__hp_parse(val, &page, &pages) < 0) {
                say(SS_LOG_ERROR, "%s \"%.200s\": not SIZE or SIZE:2M or SIZE:1G", what, val);
                return 2;
            }
            *reserve = pages ? val : NULL;
            continue;
        }
        if (check_value((ss_option)opt, what, val) < 0)
            return 2;
        int rc = ss_option_set((ss_option)opt, val);
        if (rc < 0) {
            say(SS_LOG_ERROR, "%s \"%s\": %s", what, val, ss_strerror(rc));
            return 2;
        }
    }
    return -1;
}

int main(int argc, char **argv)
{
    char path[4096], hp_status[96];
    const char *reserve = NULL;
    int rc;

    /* before any memory of ours exists */
    if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) < 0) {
        say(SS_LOG_ERROR, "prctl(PR_SET_DUMPABLE): %s", strerror(errno));
        return 1;
    }
    rc = parse_args(argc, argv, &reserve);
    if (rc >= 0)
        return rc;
    rc = ss_notify_init();
    if (rc < 0)
        say(SS_LOG_WARN, "NOTIFY_SOCKET: %s: not notifying the service manager", strerror(-rc));

    rc = ss__default_socket_path(path, sizeof(path));
    if (rc < 0) {
        say(SS_LOG_ERROR, "socket path: %s", ss_strerror(rc));
        notify_failure("socket path", rc);
        return 1;
    }
    /* block the stop signals until the store exists, then let the handler
     * see a valid store; a stop asked meanwhile waits, and the give-back
     * after the loop covers the pages reserved */
    sigset_t stop_sigs, old;
    sigemptyset(&stop_sigs);
    sigaddset(&stop_sigs, SIGTERM);
    sigaddset(&stop_sigs, SIGINT);
    sigprocmask(SIG_BLOCK, &stop_sigs, &old);
    signal(SIGPIPE, SIG_IGN);

    /* before the store reads the pools to pick its backing */
    rc = hugepages_start(path, reserve, hp_status, sizeof(hp_status));
    if (rc < 0) {
        hugepages_stop();
        notify_failure("cannot reserve hugepages", rc);
        return 1;
    }
    rc = ss__store_open(&g_store, path, 0);
    if (rc < 0) {
        if (rc == -EADDRINUSE)
            say(SS_LOG_ERROR, "another store is serving %s", path);
        else
            say(SS_LOG_ERROR, "cannot start on %s: %s", path, ss_strerror(rc));
        hugepages_stop();
        notify_failure("cannot start", rc);
        return 1;
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sigprocmask(SIG_SETMASK, &old, NULL);

    /* the socket listens and the store is complete: a request sent from
     * now on is answered (the loop below reads it) */
    ss_notify("READY=1\nSTATUS=serving %s%s", path, hp_status);
    rc = ss__store_run(g_store);
    ss_notify("STOPPING=1\nSTATUS=stopping");
    sigprocmask(SIG_BLOCK, &stop_sigs, NULL); /* no handler on a freed store */
    ss__store_close(g_store);
    hugepages_stop();
    if (rc < 0) {
        say(SS_LOG_ERROR, "%s", ss_strerror(rc));
        return 1;
    }
    return 0;
}
