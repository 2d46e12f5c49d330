/*
 * log.h - leveled logging to stderr, one line per call.
 *
 * The level is process-wide (set once from the config, and again on reload).
 * Each line is written with a single stdio call, so lines from worker threads
 * never interleave mid-line.
 */
#ifndef GATEMQ_LOG_H
#define GATEMQ_LOG_H

enum gmq_log_level {
    GMQ_LOG_ERROR = 0,
    GMQ_LOG_WARNING = 1,
    GMQ_LOG_NOTICE = 2,
    GMQ_LOG_INFO = 3,
    GMQ_LOG_DEBUG = 4,
};

extern int gmq__log_level;

/* "error", "warning", "notice", "info", "debug" -> level, or -1. */
int gmq_log_level_parse(const char *name);
void gmq_log_set_level(int level);
void gmq_log(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define gmq_log_enabled(level) ((level) <= gmq__log_level)
#define LOG_ERROR(...) gmq_log(GMQ_LOG_ERROR, __VA_ARGS__)
#define LOG_WARN(...) gmq_log(GMQ_LOG_WARNING, __VA_ARGS__)
#define LOG_NOTICE(...) gmq_log(GMQ_LOG_NOTICE, __VA_ARGS__)
#define LOG_INFO(...)                                                          \
    do {                                                                       \
        if (gmq_log_enabled(GMQ_LOG_INFO))                                     \
            gmq_log(GMQ_LOG_INFO, __VA_ARGS__);                                \
    } while (0)
#define LOG_DEBUG(...)                                                         \
    do {                                                                       \
        if (gmq_log_enabled(GMQ_LOG_DEBUG))                                    \
            gmq_log(GMQ_LOG_DEBUG, __VA_ARGS__);                               \
    } while (0)

#endif
