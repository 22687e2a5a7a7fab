/* SPDX-License-Identifier: MIT */
/*
 * Logging. The level is checked before anything is formatted (redis
 * serverLog): a disabled ss__log() costs one load and a compare. Lines go to
 * the sink from ss_log_set_sink() (stderr by default), prefixed
 * "sealstore: ", and each call site can be rate-limited with
 * SS_LOG_ONCE / ss__log_ratelimited.
 */
#ifndef SEALSTORE_SRC_LIB_LOG_H
#define SEALSTORE_SRC_LIB_LOG_H

#include <stdatomic.h>

extern _Atomic int ss__log_level; /* current SEALSTORE_LOG level */

void ss__log_emit(int level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3), cold));

#define ss__log(level, ...)                                               \
    do {                                                                  \
        if (ss_unlikely((level) <= atomic_load_explicit(&ss__log_level,   \
                                                        memory_order_relaxed))) \
            ss__log_emit((level), __VA_ARGS__);                           \
    } while (0)

#define ss__log_error(...) ss__log(SS_LOG_ERROR, __VA_ARGS__)
#define ss__log_warn(...) ss__log(SS_LOG_WARN, __VA_ARGS__)
#define ss__log_info(...) ss__log(SS_LOG_INFO, __VA_ARGS__)
#define ss__log_debug(...) ss__log(SS_LOG_DEBUG, __VA_ARGS__)

/* Log at most once per call site for the life of the process. */
#define SS_LOG_ONCE(level, ...)                                           \
    do {                                                                  \
        static atomic_flag ss__once_ = ATOMIC_FLAG_INIT;                  \
        if (!atomic_flag_test_and_set(&ss__once_))                        \
            ss__log((level), __VA_ARGS__);                                \
    } while (0)

/* The syslog priority prefix ("<4>" for SS_LOG_WARN) the default sink puts
 * before each line when stderr is the journal's stream (JOURNAL_STREAM
 * names it), else "". For programs that write to stderr themselves. */
const char *ss__log_prefix(int level);

/* Set the level from SEALSTORE_LOG's parsed value (options.c calls this). */
void ss__log_set_level(int level);

#endif /* SEALSTORE_SRC_LIB_LOG_H */
