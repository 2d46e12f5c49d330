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
 * Batching: a batch is the oldest rows, at most batch_rows of them and at
 * most batch_bytes of body (one line larger than that goes alone). When the
 * rows found do not fill a batch and rows are arriving steadily (two wakes
 * within batch_delay_ms), the thread waits batch_delay_ms once for more
 * before writing; a lone row after a quiet spell is written at once.
 *
 * Failures: RETRY keeps the batch and writes the same body again after
 * retry_min_ms, doubling up to retry_max_ms. REJECT splits the batch in
 * halves, written in id order, down to single rows; a single rejected row
 * moves to dead_letters (at = now, device, topic NULL, payload = the line,
 * reason = "<sink name>: <sink's message>") in the transaction that deletes
 * it from the outbox. A database error (deleting, reading) is retried with
 * the same back-off; rows are never skipped. Failures are logged with rate
 * limiting: the first, then a summary at most once a minute, and recovery.
 *
 * Threads: outbox_start/outbox_stop/outbox_get_stats from the loop thread
 * (outbox_get_stats takes a mutex, never the disk); outbox_wake and
 * outbox_on_commit from any thread.
 *
 * Wiring with the store: store_open, outbox_start(store_path(s), ...),
 * store_on_outbox_commit(s, outbox_on_commit, ob), store_start; at
 * shutdown store_close first (it may still wake the outbox while it
 * commits what was queued), then outbox_stop.
 */
#ifndef GATEMQ_OUTBOX_H
#define GATEMQ_OUTBOX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "store/sink.h"

typedef struct outbox outbox;

/* Zero (or negative) in any field means its default. */
typedef struct outbox_options {
    size_t batch_rows;      /* at most this many points per write (default 5000) */
    size_t batch_bytes;     /* and at most this many bytes (default 1 MiB) */
    long batch_delay_ms;    /* wait this long for a batch to fill (default 200; <0: never) */
    long retry_min_ms;      /* first back-off after a failure (default 500) */
    long retry_max_ms;      /* back-off cap (default 30000; raised to retry_min_ms) */
    long poll_ms;           /* look for rows this often even without a wake (default 1000) */
} outbox_options;

typedef struct outbox_stats {
    uint64_t rows;          /* rows waiting in the outbox (max id - min id + 1), refreshed
                               after each write, at each poll, and once a second in back-off */
    int64_t lag_ms;         /* age of the oldest waiting row by its receive time; 0 when empty */
    uint64_t sent;          /* points the sink accepted since start */
    uint64_t dead;          /* rows moved to dead letters since start */
    uint64_t failures;      /* writes answered RETRY, and database errors, since start */
    uint64_t rejects;       /* writes answered REJECT (each split counts) since start */
    bool sink_up;           /* the last write was answered OK or REJECT (true before any) */
} outbox_stats;

/* Open a second connection to the database at db_path (it must exist with
 * the outbox schema: store_open made it) and start the drain thread writing
 * to sk. The outbox owns sk from this call on, also when it fails (sk is
 * closed then). o may be NULL (all defaults). Returns NULL with err filled
 * (no such database, no outbox table, no memory, no thread). */
outbox *outbox_start(const char *db_path, sink *sk, const outbox_options *o, char *err,
                     size_t errlen);
/* New rows were committed: drain them. Any thread; cheap (a mutex and a
 * condition signal). ob may be NULL. */
void outbox_wake(outbox *ob);
/* outbox_wake with the signature of store_on_outbox_commit's callback. */
void outbox_on_commit(void *ob);
void outbox_get_stats(outbox *ob, outbox_stats *out);
/* Stop the thread (it finishes the write in progress and its delete, and
 * starts no other; waits in back-off are cut short), close the sink and the
 * connection, free ob. Rows not yet delivered stay for the next start.
 * Blocks at most for one sink write (its timeout) plus one database
 * statement. NULL is a no-op. */
void outbox_stop(outbox *ob);

#endif
