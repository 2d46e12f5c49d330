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

/* Results of telemetry_make_point. A bad payload goes to the dead-letter
 * table; no memory is a transient fault of the broker, not of the message. */
enum telemetry_result {
    TELEMETRY_OK = 0,
    TELEMETRY_EPAYLOAD = -1, /* the payload is not a usable point; err says why */
    TELEMETRY_ENOMEM = -2,   /* an allocation failed; err says so */
};

/* Limits on a payload (see telemetry.c for the full rules). */
#define TELEMETRY_MAX_FIELDS 256    /* fields in one point, after flattening */
#define TELEMETRY_MAX_TAGS 64       /* tags a line-protocol payload may carry */
#define TELEMETRY_MAX_KEY 255       /* bytes of a key (JSON: unescaped; line: as written) */
#define TELEMETRY_JSON_DEPTH 16     /* nesting of JSON objects and arrays */

enum telemetry_format {
    TELEMETRY_AUTO = 0, /* first non-blank byte '{' or '[': JSON, else line protocol */
    TELEMETRY_JSON,
    TELEMETRY_LINE,
};

/* Units of a device timestamp. AUTO guesses from the magnitude of a JSON
 * number: below 1e11 seconds, below 1e14 milliseconds, below 1e17
 * microseconds, else nanoseconds. For line protocol AUTO means nanoseconds,
 * InfluxDB's own default. (The order is fixed: the configuration stores the
 * numbers.) */
enum telemetry_unit { TELEMETRY_UNIT_AUTO = 0, TELEMETRY_S, TELEMETRY_MS, TELEMETRY_US, TELEMETRY_NS };

/* A zeroed struct (or r == NULL) means: format AUTO, "ts", JSON units AUTO,
 * line-protocol nanoseconds. The strings stay the caller's. */
typedef struct telemetry_rules {
    enum telemetry_format format;
    const char *ts_field;           /* top-level JSON member holding the device time; NULL: "ts" */
    enum telemetry_unit json_unit;  /* AUTO by default */
    enum telemetry_unit line_unit;  /* NS by default */
} telemetry_rules;

/* One message made into a point. Nothing here is kept after the call. */
typedef struct telemetry_input {
    const char *company;   /* tag company: NUL-terminated, not empty */
    const char *device;    /* tag device: NUL-terminated, not empty */
    const char *topic;     /* client-relative topic, e.g. "telemetry/gw-1/temp" */
    size_t topic_len;
    const uint8_t *payload;
    size_t payload_len;
} telemetry_input;

typedef struct telemetry_point {
    char *line;            /* rendered line without the timestamp, NUL-terminated;
                              owned by the caller, freed by telemetry_point_free */
    size_t line_len;
    bool has_time;         /* the payload carried a device time */
    int64_t device_ms;     /* device time, milliseconds since the epoch, truncated
                              (valid with has_time; 0 .. TELEMETRY_MAX_MS) */
} telemetry_point;

/* Latest device time accepted: 9999-12-31T23:59:59.999Z. Device times are
 * never negative, so device_ms + offset stays far inside int64_t for any
 * offset that telemetry_clock derives from real receive times. */
#define TELEMETRY_MAX_MS INT64_C(253402300799999)

/*
 * Parse a payload and render its point as InfluxDB line protocol without the
 * timestamp: "measurement,company=..,device=..,topic=.. field=value,...".
 * The caller appends " <timestamp>" (milliseconds) once the time is corrected.
 * Returns TELEMETRY_OK with *out filled; or TELEMETRY_EPAYLOAD (not JSON, no
 * fields, a timestamp that is not a time, ...: the message then goes to the
 * dead-letter table) or TELEMETRY_ENOMEM, both with err saying why
 * (NUL-terminated, truncated to errlen) and *out zeroed: nothing to free.
 * r may be NULL for the defaults. err may be NULL when errlen is 0.
 */
int telemetry_make_point(const telemetry_rules *r, const telemetry_input *in,
                         telemetry_point *out, char *err, size_t errlen);
/* Frees p->line and zeroes *p; safe on a zeroed point and twice. */
void telemetry_point_free(telemetry_point *p);

/* ---- clock correction ---------------------------------------------------- */

/*
 * Offset of a device clock: the minimum, over a recent window, of
 * (receive time - device time). A message that waited in a gateway's
 * backlog has a large difference and never lowers the minimum; live
 * messages give the smallest differences. corrected = device + offset.
 * The window is kept as TELEMETRY_CLOCK_BUCKETS buckets of receive time.
 *
 * A prior offset (persisted, or the last one the window established) stays
 * in force until the samples in the window span a third of it; a sample
 * below the prior wins at once. See telemetry.c and docs/telemetry.md
 * ("Clock correction") for the algorithm and its limits. Plain state: copy
 * it, no cleanup; one clock per device, used by one thread.
 */
#define TELEMETRY_CLOCK_BUCKETS 6
#define TELEMETRY_CLOCK_WINDOW_MS INT64_C(3600000) /* window_ms <= 0 means this */

typedef struct telemetry_clock {
    int64_t window_ms;
    int64_t bucket_ms;                              /* window_ms / BUCKETS, rounded up */
    int64_t bucket_start[TELEMETRY_CLOCK_BUCKETS]; /* receive time the bucket starts at */
    int64_t bucket_min[TELEMETRY_CLOCK_BUCKETS];   /* smallest sample in the bucket */
    int64_t bucket_first[TELEMETRY_CLOCK_BUCKETS]; /* earliest receive time in the bucket */
    int64_t bucket_last[TELEMETRY_CLOCK_BUCKETS];  /* latest receive time in the bucket */
    bool bucket_used[TELEMETRY_CLOCK_BUCKETS];
    bool have_prior;  /* an offset from before (persisted or established by
                         an earlier window), kept until the window holds
                         enough fresh samples */
    int64_t prior_ms;
} telemetry_clock;

void telemetry_clock_init(telemetry_clock *c, int64_t window_ms);
/* Seed with a persisted offset: it becomes the prior. */
void telemetry_clock_seed(telemetry_clock *c, int64_t offset_ms);
/* Record one sample: receive_ms is the broker's receive time, device_ms the
 * device's time of the same message. A sample whose receive time is older
 * than the window held is ignored. */
void telemetry_clock_observe(telemetry_clock *c, int64_t receive_ms, int64_t device_ms);
/* Current offset as of now_ms; false (and *offset_ms untouched) when nothing
 * is known. */
bool telemetry_clock_offset(const telemetry_clock *c, int64_t now_ms, int64_t *offset_ms);

#endif
