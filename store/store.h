/*
 * store.h - durable state in one SQLite database (WAL mode).
 *
 * What is stored: retained messages; persistent sessions (clean session 0)
 * with their subscriptions, the messages queued or in flight to them, and
 * the QoS 2 packet ids they sent that await PUBREL. The store is the only
 * code that speaks SQL; every value is bound, statements are prepared once.
 *
 * Threads: store_open() and store_load() run on the caller's thread before
 * the event loop starts. After store_start(), one store thread owns the
 * database. The loop thread queues writes with the store_put_* / store_del_*
 * calls, which copy what they need and never wait on disk; the store thread
 * commits them in groups (one transaction per batch) in the order queued.
 * Each queued write gets a sequence number (store_last_queued); when a batch
 * commits, the store publishes the highest committed number and wakes the
 * loop through ev_async, calling the commit callback there. A message whose
 * durability matters is acknowledged to its publisher only once the
 * sequence number of its last write has committed.
 *
 * Messages are stored once (table messages, keyed by the broker's message
 * id) and referenced by every delivery row that needs them; the caller
 * deletes a message row when its last delivery is gone.
 *
 * Errors: functions returning int return 0 or -1 with err filled. A failed
 * commit on the store thread is logged and retried; the loop is never
 * blocked by it (writes wait, acknowledgements wait with them).
 */
#ifndef GATEMQ_STORE_H
#define GATEMQ_STORE_H

#include <ev.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct store store;

/* Delivery states, as the broker's session keeps them. */
enum store_delivery_state {
    STORE_QUEUED = 0,       /* waiting for the window or the client */
    STORE_WAIT_PUBACK = 1,  /* QoS 1 sent */
    STORE_WAIT_PUBREC = 2,  /* QoS 2 sent */
    STORE_WAIT_PUBCOMP = 3, /* QoS 2 PUBREL sent; the message is no longer needed */
};

enum store_sync { STORE_SYNC_NORMAL = 0, STORE_SYNC_FULL = 1 };

/* Open (creating if absent) the database at path: WAL mode, synchronous
 * NORMAL or FULL, schema created or migrated forward (PRAGMA user_version),
 * statements prepared. A file that is not a database or fails the integrity
 * check is renamed to "<path>.corrupt-<unix time>" with a loud error, and a
 * fresh database is created in its place. Returns NULL with err on failure
 * (e.g. the directory is not writable). */
store *store_open(const char *path, enum store_sync sync, char *err, size_t errlen);

/* ---- loading at start (caller's thread, before store_start) ------------- */

typedef struct store_load_cb {
    /* Called once per row, in this order: every message (by id), every
     * retained message (by topic bytes), every session (by client_id bytes),
     * each followed by its own subscriptions (by filter), deliveries (by seq)
     * and QoS 2 receipt ids (by packet id). Rows of a client_id that has no
     * session row are not reported (a warning counts them). A NULL callback
     * skips its rows. Pointers are valid only during the call; payload is
     * never NULL, also when payload_len is 0. Return 0 to go on, non-zero to
     * stop loading (store_load then fails). The rows are read in one
     * snapshot. */
    int (*message)(void *arg, uint64_t id, const char *topic, size_t topic_len,
                   const uint8_t *payload, size_t payload_len, uint8_t qos, bool retain);
    int (*retained)(void *arg, const char *topic, size_t topic_len, const uint8_t *payload,
                    size_t payload_len, uint8_t qos);
    /* kind and username: who the session belongs to, as stored (kind 0
     * and NULL for rows written before schema version 2). offline_since:
     * when its client went away (Unix ms), 0 when not recorded: the client
     * was connected when the broker last stopped, or the row predates
     * schema version 4. */
    int (*session)(void *arg, const char *client_id, int64_t last_seen, int kind,
                   const char *username, int64_t offline_since);
    int (*subscription)(void *arg, const char *client_id, const char *filter, uint8_t qos);
    int (*delivery)(void *arg, const char *client_id, uint64_t seq, uint64_t msg_id,
                    uint8_t qos, bool retain, uint16_t packet_id, int state);
    int (*rx_qos2)(void *arg, const char *client_id, uint16_t packet_id);
    /* After every session: clock offsets and presence, by device. */
    int (*clock)(void *arg, const char *device, int64_t offset_ms, int64_t updated_ms);
    int (*presence)(void *arg, const char *device, bool online, int64_t since_ms,
                    bool notified);
} store_load_cb;

int store_load(store *s, const store_load_cb *cb, void *arg, char *err, size_t errlen);

/* ---- running ------------------------------------------------------------ */

/* Start the store thread. on_commit(arg, seq) is called on the loop thread
 * after writes up to seq have committed (seq only grows; several commits may
 * be reported by one call). Writes queued before store_start are committed
 * once it runs (or by store_close if it never does). What has committed is
 * always a prefix of the writes in queue order, but a batch boundary may
 * fall between any two writes. */
int store_start(store *s, struct ev_loop *loop, void (*on_commit)(void *arg, uint64_t seq),
                void *arg);

/* Sequence number of the last write queued (0 before any). */
uint64_t store_last_queued(const store *s);
/* Highest sequence number known committed (loop thread); may be ahead of
 * the last on_commit call, never behind it. */
uint64_t store_last_committed(const store *s);
/* Writes queued and not yet committed (for $SYS). */
size_t store_backlog(const store *s);

/* ---- backpressure ---------------------------------------------------------
 *
 * Queued writes live in memory until they commit, so a disk slower than the
 * writes arrive would let the queue grow without bound. The store counts
 * the bytes it holds for writes not yet committed (copied arguments and
 * bookkeeping) and applies two marks to them: the queue becomes congested
 * when it reaches the high mark, and stays congested until it is back at or
 * below the low one, so a queue hovering around one mark does not flap. The
 * store never refuses or drops a write for it; the caller decides whom to
 * stop (the broker stops reading the clients that write, broker/persist.c). */

/* The marks and the state, on their own (unit-tested; the store keeps one). */
typedef struct store_watermark {
    size_t high; /* 0: never congested */
    size_t low;  /* below high */
    bool congested;
} store_watermark;

/* A write was queued and the queue now holds `queued` bytes: congested from
 * the high mark on. Returns whether the queue is congested. Never clears
 * the state: only the commit side may, or a release could be missed. */
bool store_watermark_rise(store_watermark *w, size_t queued);
/* Writes committed and `queued` bytes remain: returns true exactly when
 * this clears a congested state (at or below the low mark). */
bool store_watermark_fall(store_watermark *w, size_t queued);

/* Set the marks (loop thread; before or after store_start). on_drained(arg)
 * is called on the loop thread, from the wake-up that reports commits, each
 * time a congested queue falls to the low mark or below; it runs before the
 * on_commit call of that wake-up. */
void store_set_queue_limit(store *s, size_t high, size_t low, void (*on_drained)(void *arg),
                           void *arg);
/* Loop thread: is the queue congested? Set when a write makes the queue
 * reach the high mark, cleared when on_drained is called. */
bool store_congested(const store *s);
/* Bytes held for writes queued and not yet committed (any thread). */
size_t store_queued_bytes(const store *s);

/* Writes: called on the loop thread; each copies its arguments (payload may
 * be NULL when payload_len is 0). On no memory, or a write larger than the
 * database's string/blob limit, the write is dropped and logged, -1 is
 * returned and no sequence number is used. Message ids and delivery seqs
 * are stored as SQLite integers: they round-trip exactly, but load in order
 * only below 2^63. The queue is not bounded by the store itself: its size
 * drives the backpressure above. */
int store_put_retained(store *s, const char *topic, size_t topic_len, const uint8_t *payload,
                       size_t payload_len, uint8_t qos);
int store_del_retained(store *s, const char *topic, size_t topic_len);
int store_put_message(store *s, uint64_t id, const char *topic, size_t topic_len,
                      const uint8_t *payload, size_t payload_len, uint8_t qos, bool retain);
int store_del_message(store *s, uint64_t id);
/* Insert or replace a session; kind (0..255) and username (NULL: none)
 * record who it belongs to. Its client is connected: the offline time is
 * cleared. */
int store_put_session(store *s, const char *client_id, int64_t last_seen, int kind,
                      const char *username);
/* The session's client went away at since_ms (Unix ms); no-op for a
 * client id without a session row. */
int store_put_session_offline(store *s, const char *client_id, int64_t since_ms);
/* Deletes the session and its subscriptions, deliveries and receipt ids. */
int store_del_session(store *s, const char *client_id);
int store_put_subscription(store *s, const char *client_id, const char *filter, uint8_t qos);
int store_del_subscription(store *s, const char *client_id, const char *filter);
/* Insert or replace the delivery (client_id, seq). */
int store_put_delivery(store *s, const char *client_id, uint64_t seq, uint64_t msg_id,
                       uint8_t qos, bool retain, uint16_t packet_id, int state);
int store_del_delivery(store *s, const char *client_id, uint64_t seq);
int store_put_rx_qos2(store *s, const char *client_id, uint16_t packet_id);
int store_del_rx_qos2(store *s, const char *client_id, uint16_t packet_id);

/* Telemetry (schema version 3). device is "<company>/<device id>".
 * store_put_outbox: one line-protocol point, received_ms the broker's
 * receive time; the sink thread drains the outbox in id order.
 * store_put_dead_letter: a payload that could not be used, with why.
 * store_put_clock: a device's clock offset (corrected = device time + offset).
 * store_put_presence: a device's presence: online or not since since_ms, and
 * whether its offline notification was sent. */
int store_put_outbox(store *s, const char *device, int64_t received_ms, const char *line,
                     size_t line_len);
int store_put_dead_letter(store *s, const char *device, int64_t at_ms, const char *topic,
                          const uint8_t *payload, size_t payload_len, const char *reason);
int store_put_clock(store *s, const char *device, int64_t offset_ms, int64_t updated_ms);
int store_put_presence(store *s, const char *device, bool online, int64_t since_ms,
                       bool notified);
/* fn(arg) runs on the store thread after each commit that added outbox
 * rows (to wake the sink). Set before store_start. */
void store_on_outbox_commit(store *s, void (*fn)(void *arg), void *arg);
/* The database file's path (the sink opens its own connection to it). */
const char *store_path(const store *s);

/* Stop the thread after committing everything queued, and close the
 * database. on_commit is not called by store_close nor after it. If the
 * database keeps failing, the writes still queued are dropped with an error
 * after a few attempts, so that shutdown cannot hang. Loop thread (or any
 * thread once the loop stopped). */
void store_close(store *s);

#endif
