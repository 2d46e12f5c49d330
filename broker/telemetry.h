/*
 * telemetry.h - turning a gateway's telemetry PUBLISH into a time-series
 * point: payload parsing, line-protocol rendering, and clock correction.
 *
 * Pure functions and plain state: no I/O, no threads, no globals. The broker
 * calls them on the loop thread for each telemetry message; the resulting
 * line goes to the store's outbox.
 */
#ifndef GATEMQ_TELEMETRY_H
#define GATEMQ_TELEMETRY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum telemetry_format {
    TELEMETRY_AUTO = 0, /* '{' first: JSON, else line protocol */
    TELEMETRY_JSON,
    TELEMETRY_LINE,
};

/* Units of a device timestamp. AUTO guesses from the magnitude of a JSON
 * number (see telemetry.c for the exact ranges); line protocol defaults to
 * nanoseconds as in InfluxDB. */
enum telemetry_unit { TELEMETRY_UNIT_AUTO = 0, TELEMETRY_S, TELEMETRY_MS, TELEMETRY_US, TELEMETRY_NS };

typedef struct telemetry_rules {
    enum telemetry_format format;
    const char *ts_field;           /* JSON member holding the device time; "ts" */
    enum telemetry_unit json_unit;  /* AUTO by default */
    enum telemetry_unit line_unit;  /* NS by default */
} telemetry_rules;

/* One message made into a point. */
typedef struct telemetry_input {
    const char *company;   /* tag company */
    const char *device;    /* tag device */
    const char *topic;     /* client-relative topic, e.g. "telemetry/gw-1/temp" */
    size_t topic_len;
    const uint8_t *payload;
    size_t payload_len;
} telemetry_input;

typedef struct telemetry_point {
    char *line;            /* rendered line, without the timestamp; caller frees with free() semantics via gmq_free */
    size_t line_len;
    bool has_time;         /* the payload carried a device time */
    int64_t device_ms;     /* device time, milliseconds since the epoch (valid with has_time) */
} telemetry_point;

/*
 * Parse a payload and render its point as InfluxDB line protocol without the
 * timestamp: "measurement,company=..,device=..,topic=.. field=value,...".
 * The caller appends " <timestamp>" once the time is corrected.
 * Returns 0, or -1 with err saying why (not JSON, no fields, a timestamp that
 * is not a number, ...): the message then goes to the dead-letter table.
 */
int telemetry_make_point(const telemetry_rules *r, const telemetry_input *in,
                         telemetry_point *out, char *err, size_t errlen);
void telemetry_point_free(telemetry_point *p);

/* ---- clock correction ---------------------------------------------------- */

/*
 * Offset of a device clock: the minimum, over a recent window, of
 * (receive time - device time). A message that waited in a gateway's
 * backlog has a large difference and never lowers the minimum; live
 * messages give the smallest differences. corrected = device + offset.
 * The window is kept as TELEMETRY_CLOCK_BUCKETS buckets of receive time.
 */
#define TELEMETRY_CLOCK_BUCKETS 6

typedef struct telemetry_clock {
    int64_t window_ms;
    int64_t bucket_start[TELEMETRY_CLOCK_BUCKETS]; /* receive time the bucket starts at */
    int64_t bucket_min[TELEMETRY_CLOCK_BUCKETS];
    bool bucket_used[TELEMETRY_CLOCK_BUCKETS];
    bool have_prior;  /* an offset from before (persisted), kept until the
                         window holds enough fresh samples */
    int64_t prior_ms;
} telemetry_clock;

void telemetry_clock_init(telemetry_clock *c, int64_t window_ms);
/* Seed with a persisted offset. */
void telemetry_clock_seed(telemetry_clock *c, int64_t offset_ms);
/* Record one sample. */
void telemetry_clock_observe(telemetry_clock *c, int64_t receive_ms, int64_t device_ms);
/* Current offset; false when nothing is known. */
bool telemetry_clock_offset(const telemetry_clock *c, int64_t now_ms, int64_t *offset_ms);

#endif
