/*
 * sink.h - where telemetry goes: a small interface so that sinks can be
 * added. InfluxDB's HTTP write API is the first, a file of line protocol
 * (for debugging and for tests without InfluxDB) the second.
 *
 * A sink is used by one thread (the outbox drain thread) at a time; it may
 * be opened on another thread before that.
 *
 * Idempotence: the outbox deletes rows only after SINK_OK, so after a crash,
 * a RETRY that was in fact stored, or a REJECT of a batch that the sink
 * partly stored (InfluxDB's "partial write"), the same lines are written
 * again. A sink must tolerate that; InfluxDB does (a point is identified by
 * measurement, tag set and timestamp), the file sink simply appends again.
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
    /* Write body: one or more complete line-protocol lines, each ended by
     * '\n' (a missing final '\n' is tolerated), timestamps in milliseconds.
     * body stays the caller's. On RETRY/REJECT, err gets a one-line reason
     * (NUL-terminated, truncated to errlen); REJECT reasons are stored with
     * the dead letters, so they should name what was wrong with the points.
     * Blocks at most for the sink's own timeout. */
    enum sink_result (*write)(sink *s, const char *body, size_t len, char *err, size_t errlen);
    /* Frees the sink and everything it holds. */
    void (*close)(sink *s);
} sink_ops;

struct sink {
    const sink_ops *ops;
};

/* InfluxDB 1.x: POST url/write?db=DB&precision=ms (db URL-escaped), one
 * reused connection (keep-alive). url is "http://host:port" or https, with
 * an optional path prefix and optional "user:password@" (basic auth); a
 * trailing '/' is ignored. timeout_ms bounds each request (connect
 * included); <= 0 means 10 s. Returns NULL with err on a bad URL, an empty
 * db, or no memory; the strings are copied.
 *
 * Results: 2xx -> OK. 400, 413 and 422 (something in these points: parse
 * error, field type conflict, beyond retention, body too large) -> REJECT
 * with the server's message. 5xx, 408, 429, connection errors and time-outs
 * -> RETRY. Other 4xx (401/403 credentials, 404 "database not found", a
 * proxy's 405...) do not depend on the points: they are configuration
 * faults, and dead-lettering every point for them would be wrong -> RETRY,
 * with the server's message so that the operator sees it in the log. */
sink *sink_influx_open(const char *url, const char *db, long timeout_ms, char *err,
                       size_t errlen);
/* Append lines to a file (created 0640 if absent), fsynced per write; a
 * '\n' is added when the body does not end with one. On an I/O error the
 * file is cut back to its size before the write (so that a retry does not
 * leave half a batch in front of the whole one) and RETRY is returned.
 * NULL with err when the file cannot be opened. */
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
