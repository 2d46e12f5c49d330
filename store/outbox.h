/*
 * outbox.h - the telemetry outbox drain: a thread that reads the outbox
 * table of the store's database (through its own SQLite connection) in id
 * order, writes batches to a sink, and deletes rows only after the sink
 * stored them. It backs off and retries while the sink is down; a batch the
 * sink rejects is split until the bad rows are found, and those move to the
 * dead-letter table. Nothing is lost across broker restarts: rows stay until
 * a sink accepted them, so a replay after a crash may write the same points
 * again, which InfluxDB stores once (same series and timestamp).
 *
 * Threads: outbox_start/outbox_stop/outbox_stats from the loop thread;
 * outbox_wake from any thread (the store calls it after committing rows).
 */
#ifndef GATEMQ_OUTBOX_H
#define GATEMQ_OUTBOX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "store/sink.h"

typedef struct outbox outbox;

typedef struct outbox_options {
    size_t batch_rows;      /* at most this many points per write (e.g. 5000) */
    size_t batch_bytes;     /* and at most this many bytes (e.g. 1 MiB) */
    long batch_delay_ms;    /* wait this long for a batch to fill (e.g. 200) */
    long retry_min_ms;      /* first back-off after a failure (e.g. 500) */
    long retry_max_ms;      /* back-off cap (e.g. 30000) */
} outbox_options;

typedef struct outbox_stats {
    uint64_t rows;          /* rows waiting in the outbox (approximate) */
    int64_t lag_ms;         /* age of the oldest waiting row; 0 when empty */
    uint64_t sent;          /* points the sink accepted since start */
    uint64_t dead;          /* rows moved to dead letters since start */
    uint64_t failures;      /* failed writes since start */
    bool sink_up;           /* the last write succeeded */
} outbox_stats;

/* Open a second connection to the database at db_path and start the drain
 * thread writing to sk (the outbox owns sk from now on). NULL with err. */
outbox *outbox_start(const char *db_path, sink *sk, const outbox_options *o, char *err,
                     size_t errlen);
/* New rows were committed: drain them. Any thread. */
void outbox_wake(outbox *ob);
void outbox_get_stats(outbox *ob, outbox_stats *out);
/* Stop the thread (finishing the write in progress), close the sink and
 * the connection. */
void outbox_stop(outbox *ob);

#endif
