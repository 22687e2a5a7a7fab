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
 * Hidden test helper: --print-dumpable prints PR_GET_DUMPABLE after the
 * same prctl the daemon does, then exits (tests use /proc instead; this is
 * for a human checking a build).
 */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/prctl.h>

#include "sealstore.h"
#include "options.h"
#include "store.h"

static ss__store *g_store;

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
    fprintf(f, "  --%-20s %s\n", "help", "show this help and exit");
    fprintf(f, "  --%-20s %s\n\n", "version", "show the version and exit");
    ss__options_help(f);
    fprintf(f, "\nUnlike the library, which warns and keeps the default, the daemon refuses\n"
               "to start when a flag or a SEALSTORE_ variable holds a value that does not\n"
               "parse or is out of range.\n"
               "\nExit status: 0 after a clean stop; 1 when the store cannot start "
               "(another store serving the path, options that do not fit together, an "
               "explicit hugepage size the machine cannot give, no memory); 2 on bad "
               "usage (an unknown flag, or a bad value in a flag or variable).\n");
}

/* The strict check of one value (ss__option_check); on failure say which
 * flag or variable and why. 0 or -1. */
static int check_value(ss_option opt, const char *what, const char *val)
{
    char why[160];

    if (ss__option_check(opt, val, why, sizeof(why)) == 0)
        return 0;
    fprintf(stderr, "sealstored: %s \"%.200s\": %s\n", what, val, why);
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

/* The command line: -1 to go on with the options set, or the status to
 * exit with (0 after --help, --version, --print-dumpable; 2 on a mistake). */
static int parse_args(int argc, char **argv)
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
            fprintf(stderr, "sealstored: unexpected argument '%s' (try --help)\n", a);
            return 2;
        }
        const char *name = a + 2, *eq = strchr(name, '=');
        size_t nlen = eq ? (size_t)(eq - name) : strlen(name);
        int opt = lookup_flag(name, nlen);
        if (opt < 0) {
            fprintf(stderr, "sealstored: unknown option '%.*s' (try --help)\n",
                    (int)(nlen + 2), a);
            return 2;
        }
        const char *val = eq ? eq + 1 : NULL;
        if (!val) {
            if (i + 1 >= argc) {
                fprintf(stderr, "sealstored: option '%s' needs a value\n", a);
                return 2;
            }
            val = argv[++i];
        }
        char what[80];
        snprintf(what, sizeof(what), "--%.*s", (int)nlen, name);
        if (check_value((ss_option)opt, what, val) < 0)
            return 2;
        int rc = ss_option_set((ss_option)opt, val);
        if (rc < 0) {
            fprintf(stderr, "sealstored: %s \"%s\": %s\n", what, val, ss_strerror(rc));
            return 2;
        }
    }
    return -1;
}

int main(int argc, char **argv)
{
    char path[4096];
    int rc;

    /* before any memory of ours exists */
    if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) < 0) {
        fprintf(stderr, "sealstored: prctl(PR_SET_DUMPABLE): %s\n", strerror(errno));
        return 1;
    }
    rc = parse_args(argc, argv);
    if (rc >= 0)
        return rc;

    rc = ss__default_socket_path(path, sizeof(path));
    if (rc < 0) {
        fprintf(stderr, "sealstored: socket path: %s\n", ss_strerror(rc));
        return 1;
    }
    /* block the stop signals until the store exists, then let the handler
     * see a valid store */
    sigset_t stop_sigs, old;
    sigemptyset(&stop_sigs);
    sigaddset(&stop_sigs, SIGTERM);
    sigaddset(&stop_sigs, SIGINT);
    sigprocmask(SIG_BLOCK, &stop_sigs, &old);
    signal(SIGPIPE, SIG_IGN);

    rc = ss__store_open(&g_store, path, 0);
    if (rc == -EADDRINUSE) {
        fprintf(stderr, "sealstored: another store is serving %s\n", path);
        return 1;
    }
    if (rc < 0) {
        fprintf(stderr, "sealstored: cannot start on %s: %s\n", path, ss_strerror(rc));
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

    rc = ss__store_run(g_store);
    sigprocmask(SIG_BLOCK, &stop_sigs, NULL); /* no handler on a freed store */
    ss__store_close(g_store);
    if (rc < 0) {
        fprintf(stderr, "sealstored: %s\n", ss_strerror(rc));
        return 1;
    }
    return 0;
}
