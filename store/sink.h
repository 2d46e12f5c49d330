/*
 * sink.h - where telemetry goes: a small interface so that sinks can be
 * added. InfluxDB's HTTP write API is the first, a file of line protocol
 * (for debugging and for tests without InfluxDB) the second.
 *
 * A sink is used by one thread (the outbox drain thread) at a time.
 */
#ifndef GATEMQ_SINK_H
#define GATEMQ_SINK_H

#include <stddef.h>

typedef struct sink sink;

enum sink_result {
    SINK_OK = 0,     /* every point stored */
    SINK_RETRY = 1,  /* transient: the sink is down or overloaded; try the same again later */
    SINK_REJECT = 2, /* the sink refuses these points for good (e.g. HTTP 400) */
};

typedef struct sink_ops {
    const char *name;
    /* Write body: one or more complete line-protocol lines separated by
     * '\n', timestamps in milliseconds. err gets a reason for RETRY/REJECT. */
    enum sink_result (*write)(sink *s, const char *body, size_t len, char *err, size_t errlen);
    void (*close)(sink *s);
} sink_ops;

struct sink {
    const sink_ops *ops;
};

/* InfluxDB 1.x: POST url/write?db=DB&precision=ms. NULL with err on a bad
 * URL or no memory. timeout_ms bounds each request. */
sink *sink_influx_open(const char *url, const char *db, long timeout_ms, char *err,
                       size_t errlen);
/* Append lines to a file (created if absent), fsynced per write. */
sink *sink_file_open(const char *path, char *err, size_t errlen);

static inline enum sink_result sink_write(sink *s, const char *body, size_t len, char *err,
                                          size_t errlen)
{
    return s->ops->write(s, body, len, err, errlen);
}
static inline void sink_close(sink *s)
{
    if (s)
        s->ops->close(s);
}

#endif
