/* SPDX-License-Identifier: MIT */
/*
 * Logging: the level lives in one atomic so the check before formatting is
 * a relaxed load (log.h). The sink pointer and its argument are swapped as
 * one pair under a mutex; emitting copies the pair under the same mutex.
 * Lines are capped at 1 KiB and emitted whole.
 *
 * Under systemd the default sink's stderr is often a stream to the journal,
 * which reads a leading "<N>" as the line's syslog priority (sd-daemon(3)):
 * without it every line is stored at the unit's default (info) and
 * `journalctl -p warning` finds nothing. systemd says which stream it is in
 * JOURNAL_STREAM ("device:inode"); the prefix goes on only when stderr is
 * that very stream, so a program run under a unit that sends its stderr to
 * a file or a pipe prints plain lines. Custom sinks get the level as an
 * argument and plain lines.
 */
#include "internal.h"
#include "sys.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>

_Atomic int ss__log_level = SS_LOG_WARN;

static pthread_mutex_t sink_lock = PTHREAD_MUTEX_INITIALIZER;
static ss_log_sink sink_fn;
static void *sink_arg;

static pthread_once_t journal_once = PTHREAD_ONCE_INIT;
static bool journal; /* stderr is the journal's stream: written once, under journal_once */

static void journal_check(void)
{
    const char *e = getenv("JOURNAL_STREAM");
    unsigned long long dev, ino;
    struct stat st;
    int end = 0;

    journal = e && sscanf(e, "%llu:%llu%n", &dev, &ino, &end) == 2 && e[end] == '\0' &&
              ss__sys_fstat(STDERR_FILENO, &st) == 0 && (unsigned long long)st.st_dev == dev &&
              (unsigned long long)st.st_ino == ino;
}

const char *ss__log_prefix(int level)
{
    /* syslog priorities: LOG_ERR, LOG_WARNING, LOG_INFO, LOG_DEBUG */
    static const char *const prio[] = {"<3>", "<4>", "<6>", "<7>"};

    pthread_once(&journal_once, journal_check);
    if (!journal)
        return "";
    return prio[level >= 0 && level <= SS_LOG_DEBUG ? level : 0];
}

static void default_sink(int level, const char *line, void *arg)
{
    char buf[1100];
    const char *prio = ss__log_prefix(level);
    size_t p = strlen(prio), n = strlen(line);

    (void)arg;
    if (n > sizeof(buf) - 2 - p)
        n = sizeof(buf) - 2 - p;
    memcpy(buf, prio, p);
    memcpy(buf + p, line, n);
    n += p;
    buf[n++] = '\n';
    /* one write(2) per line, so lines from several threads do not mix */
    (void)ss__sys_write(STDERR_FILENO, buf, n);
}

void ss__log_set_level(int level)
{
    if (level < SS_LOG_ERROR)
        level = SS_LOG_ERROR;
    if (level > SS_LOG_DEBUG)
        level = SS_LOG_DEBUG;
    atomic_store_explicit(&ss__log_level, level, memory_order_relaxed);
}

SS_API int ss_log_set_sink(ss_log_sink sink, void *arg)
{
    pthread_mutex_lock(&sink_lock);
    sink_fn = sink;
    sink_arg = arg;
    pthread_mutex_unlock(&sink_lock);
    return 0;
}

void ss__log_emit(int level, const char *fmt, ...)
{
    static const char *const tag[] = {"error: ", "warning: ", "", "debug: "};
    char line[1024];
    int n;
    va_list ap;
    ss_log_sink fn;
    void *arg;

    n = snprintf(line, sizeof(line), "sealstore: %s",
                 tag[level >= 0 && level <= SS_LOG_DEBUG ? level : 0]);
    if (n < 0)
        return;
    va_start(ap, fmt);
    vsnprintf(line + n, sizeof(line) - (size_t)n, fmt, ap);
    va_end(ap);

    pthread_mutex_lock(&sink_lock);
    fn = sink_fn;
    arg = sink_arg;
    pthread_mutex_unlock(&sink_lock);
    (fn ? fn : default_sink)(level, line, arg);
}
