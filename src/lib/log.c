/* SPDX-License-Identifier: MIT */
/*
 * Logging: the level lives in one atomic so the check before formatting is
 * a relaxed load (log.h). The sink pointer and its argument are swapped as
 * one pair under a mutex; emitting copies the pair under the same mutex.
 * Lines are capped at 1 KiB and emitted whole.
 */
#include "internal.h"
#include "sys.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

_Atomic int ss__log_level = SS_LOG_WARN;

static pthread_mutex_t sink_lock = PTHREAD_MUTEX_INITIALIZER;
static ss_log_sink sink_fn;
static void *sink_arg;

static void default_sink(int level, const char *line, void *arg)
{
    char buf[1100];
    size_t n = strlen(line);

    (void)level;
    (void)arg;
    if (n > sizeof(buf) - 2)
        n = sizeof(buf) - 2;
    memcpy(buf, line, n);
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
