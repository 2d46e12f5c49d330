/*
 * store.c - the durable store (see store.h): statements, loading, and the
 * store thread that commits queued writes in groups. The file itself, its
 * integrity check and schema are store_db.c's.
 *
 * Ownership: each store_put_* / store_del_* copies its arguments into one
 * heap block (a store_op) on the loop thread; the store thread frees it once
 * its batch has committed. The sqlite handle belongs to the caller's thread
 * until store_start, then to the store thread until store_close joins it.
 */
#include "store/store.h"

#include <errno.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "broker/alloc.h"
#include "broker/log.h"
#include "store/store_int.h"
#include "store/store_test.h"

/* One transaction holds at most this many writes, or this many bytes of
 * copied arguments (a single larger write still goes alone). */
#define STORE_BATCH_MAX_OPS 10000
#define STORE_BATCH_MAX_BYTES (4u << 20)
#define STORE_BACKOFF_FIRST_MS 10
#define STORE_BACKOFF_MAX_MS 1000
/* Once store_close has been called, a failing batch is tried this many more
 * times before its writes are dropped (loudly), so shutdown cannot hang on
 * a full disk. */
#define STORE_CLOSE_ATTEMPTS 5

enum store__stmt {
    ST_BEGIN_WRITE,
    ST_BEGIN_READ,
    ST_COMMIT,
    ST_ROLLBACK,
    ST_PUT_RETAINED,
    ST_DEL_RETAINED,
    ST_PUT_MESSAGE,
    ST_DEL_MESSAGE,
    ST_PUT_SESSION,
    ST_DEL_SESSION,
    ST_PUT_SESSION_OFFLINE,
    ST_DEL_SESSION_SUBS,
    ST_DEL_SESSION_DELIVERIES,
    ST_DEL_SESSION_RX,
    ST_PUT_SUB,
    ST_DEL_SUB,
    ST_PUT_DELIVERY,
    ST_DEL_DELIVERY,
    ST_PUT_RX,
    ST_DEL_RX,
    ST_PUT_OUTBOX,
    ST_PUT_DEAD,
    ST_PUT_CLOCK,
    ST_PUT_PRESENCE,
    ST_LOAD_CLOCK,
    ST_LOAD_PRESENCE,
    ST_LOAD_MESSAGES,
    ST_LOAD_RETAINED,
    ST_LOAD_SESSIONS,
    ST_LOAD_SUBS,
    ST_LOAD_DELIVERIES,
    ST_LOAD_RX,
    ST_COUNT_ORPHANS,
    ST_COUNT
};

static const char *const store__sql[ST_COUNT] = {
    [ST_BEGIN_WRITE] = "BEGIN IMMEDIATE",
    [ST_BEGIN_READ] = "BEGIN",
    [ST_COMMIT] = "COMMIT",
    [ST_ROLLBACK] = "ROLLBACK",
    [ST_PUT_RETAINED] = "INSERT OR REPLACE INTO retained(topic, qos, payload) VALUES(?1, ?2, ?3)",
    [ST_DEL_RETAINED] = "DELETE FROM retained WHERE topic = ?1",
    [ST_PUT_MESSAGE] = "INSERT OR REPLACE INTO messages(id, topic, payload, qos, retain) "
                       "VALUES(?1, ?2, ?3, ?4, ?5)",
    [ST_DEL_MESSAGE] = "DELETE FROM messages WHERE id = ?1",
    [ST_PUT_SESSION] = "INSERT OR REPLACE INTO sessions(client_id, last_seen, kind, username) "
                       "VALUES(?1, ?2, ?3, ?4)",
    [ST_DEL_SESSION] = "DELETE FROM sessions WHERE client_id = ?1",
    [ST_PUT_SESSION_OFFLINE] = "UPDATE sessions SET offline_since = ?2 WHERE client_id = ?1",
    [ST_DEL_SESSION_SUBS] = "DELETE FROM subscriptions WHERE client_id = ?1",
    [ST_DEL_SESSION_DELIVERIES] = "DELETE FROM deliveries WHERE client_id = ?1",
    [ST_DEL_SESSION_RX] = "DELETE FROM rx_qos2 WHERE client_id = ?1",
    [ST_PUT_SUB] = "INSERT OR REPLACE INTO subscriptions(client_id, filter, qos) "
                   "VALUES(?1, ?2, ?3)",
    [ST_DEL_SUB] = "DELETE FROM subscriptions WHERE client_id = ?1 AND filter = ?2",
    [ST_PUT_DELIVERY] = "INSERT OR REPLACE INTO deliveries"
                        "(client_id, seq, msg_id, qos, retain, packet_id, state) "
                        "VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    [ST_DEL_DELIVERY] = "DELETE FROM deliveries WHERE client_id = ?1 AND seq = ?2",
    [ST_PUT_RX] = "INSERT OR IGNORE INTO rx_qos2(client_id, packet_id) VALUES(?1, ?2)",
    [ST_DEL_RX] = "DELETE FROM rx_qos2 WHERE client_id = ?1 AND packet_id = ?2",
    [ST_PUT_OUTBOX] = "INSERT INTO outbox(received, device, line) VALUES(?1, ?2, ?3)",
    [ST_PUT_DEAD] = "INSERT INTO dead_letters(at, device, topic, payload, reason) "
                    "VALUES(?1, ?2, ?3, ?4, ?5)",
    [ST_PUT_CLOCK] = "INSERT OR REPLACE INTO clock(device, offset_ms, updated) VALUES(?1, ?2, ?3)",
    [ST_PUT_PRESENCE] = "INSERT OR REPLACE INTO presence(device, online, since, notified) "
                        "VALUES(?1, ?2, ?3, ?4)",
    [ST_LOAD_CLOCK] = "SELECT device, offset_ms, updated FROM clock ORDER BY device",
    [ST_LOAD_PRESENCE] = "SELECT device, online, since, notified FROM presence ORDER BY device",
    [ST_LOAD_MESSAGES] = "SELECT id, topic, payload, qos, retain FROM messages ORDER BY id",
    [ST_LOAD_RETAINED] = "SELECT topic, payload, qos FROM retained ORDER BY topic",
    [ST_LOAD_SESSIONS] = "SELECT client_id, last_seen, kind, username, offline_since FROM sessions "
                         "ORDER BY client_id",
    [ST_LOAD_SUBS] = "SELECT filter, qos FROM subscriptions WHERE client_id = ?1 ORDER BY filter",
    [ST_LOAD_DELIVERIES] = "SELECT seq, msg_id, qos, retain, packet_id, state FROM deliveries "
                           "WHERE client_id = ?1 ORDER BY seq",
    [ST_LOAD_RX] = "SELECT packet_id FROM rx_qos2 WHERE client_id = ?1 ORDER BY packet_id",
    [ST_COUNT_ORPHANS] =
        "SELECT (SELECT count(*) FROM subscriptions WHERE client_id NOT IN "
        "(SELECT client_id FROM sessions)) + (SELECT count(*) FROM deliveries WHERE client_id "
        "NOT IN (SELECT client_id FROM sessions)) + (SELECT count(*) FROM rx_qos2 WHERE "
        "client_id NOT IN (SELECT client_id FROM sessions))",
};

/* ---- queued writes -------------------------------------------------------- */

enum store__op_kind {
    OP_PUT_RETAINED,
    OP_DEL_RETAINED,
    OP_PUT_MESSAGE,
    OP_DEL_MESSAGE,
    OP_PUT_SESSION,
    OP_DEL_SESSION,
    OP_PUT_SESSION_OFFLINE,
    OP_PUT_SUB,
    OP_DEL_SUB,
    OP_PUT_DELIVERY,
    OP_DEL_DELIVERY,
    OP_PUT_RX,
    OP_DEL_RX,
    OP_PUT_OUTBOX,
    OP_PUT_DEAD,
    OP_PUT_CLOCK,
    OP_PUT_PRESENCE,
};

static const char *const store__op_names[] = {
    [OP_PUT_RETAINED] = "put retained", [OP_DEL_RETAINED] = "delete retained",
    [OP_PUT_MESSAGE] = "put message",   [OP_DEL_MESSAGE] = "delete message",
    [OP_PUT_SESSION] = "put session",   [OP_DEL_SESSION] = "delete session",
    [OP_PUT_SESSION_OFFLINE] = "put session offline time",
    [OP_PUT_SUB] = "put subscription",  [OP_DEL_SUB] = "delete subscription",
    [OP_PUT_DELIVERY] = "put delivery", [OP_DEL_DELIVERY] = "delete delivery",
    [OP_PUT_RX] = "put QoS 2 id",       [OP_DEL_RX] = "delete QoS 2 id",
    [OP_PUT_OUTBOX] = "put telemetry",  [OP_PUT_DEAD] = "put dead letter",
    [OP_PUT_CLOCK] = "put clock offset", [OP_PUT_PRESENCE] = "put presence",
};

/* One write, with its strings and payload copied behind it in the same
 * block. key is the topic or the client id; sub the filter. */
typedef struct store_op {
    struct store_op *next;
    uint64_t seq;
    size_t size; /* bytes allocated, for the batch bound */
    enum store__op_kind kind;
    uint64_t num;    /* message id, or delivery seq */
    uint64_t msg_id; /* delivery */
    int64_t last_seen;
    const char *key;
    size_t key_len;
    const char *sub;
    size_t sub_len;
    const uint8_t *payload;
    size_t payload_len;
    uint16_t packet_id;
    uint8_t qos;
    bool retain;
    int state;
    char data[];
} store_op;

struct store {
    sqlite3 *db;
    sqlite3_stmt *stmt[ST_COUNT];
    char *path;
    size_t max_len; /* SQLITE_LIMIT_LENGTH: the largest string or blob */
    bool batch_has_outbox;                /* store thread: this batch added telemetry */
    void (*outbox_hook)(void *arg);       /* store thread: telemetry committed */
    void *outbox_hook_arg;

    /* Loop thread only. */
    struct ev_loop *loop;
    ev_async wake;
    void (*on_commit)(void *arg, uint64_t seq);
    void *arg;
    uint64_t last_queued;
    uint64_t reported; /* last seq passed to on_commit */
    bool started;
    store_watermark water; /* on queued_bytes */
    void (*on_drained)(void *arg);
    void *drained_arg;

    /* Written by the store thread, read by the loop. */
    _Atomic uint64_t committed;
    atomic_uint fail_commits; /* test hook */
    /* Added by the loop as writes are queued, taken off by the store thread
     * once they committed (or were given up), before it reports them. */
    _Atomic size_t queued_bytes;
    /* Test only: microseconds the store thread sleeps before each batch
     * (GATEMQ_TEST_STORE_DELAY_US, read once by store_start), so tests can
     * make the disk slower than the clients without timing games. */
    unsigned long test_delay_us;

    /* Under lock. */
    pthread_mutex_t lock;
    pthread_cond_t cond;
    pthread_t thread;
    store_op *head, *tail;
    bool stopping;
    store_stats stats;
};

static int store__prepare(store *s, char *err, size_t errlen)
{
    for (int i = 0; i < ST_COUNT; i++) {
        int rc = sqlite3_prepare_v3(s->db, store__sql[i], -1, SQLITE_PREPARE_PERSISTENT,
                                    &s->stmt[i], NULL);
        if (rc != SQLITE_OK) {
            gmq_errf(err, errlen, "%s: preparing \"%s\": %s", s->path, store__sql[i],
                       sqlite3_errmsg(s->db));
            return -1;
        }
    }
    int max_len = sqlite3_limit(s->db, SQLITE_LIMIT_LENGTH, -1);
    s->max_len = max_len > 0 ? (size_t)max_len : 0;
    return 0;
}

static void store__free(store *s)
{
    for (int i = 0; i < ST_COUNT; i++)
        sqlite3_finalize(s->stmt[i]);
    if (s->db && sqlite3_close(s->db) != SQLITE_OK)
        LOG_ERROR("store: closing %s: %s", s->path, sqlite3_errmsg(s->db));
    store_op *op = s->head;
    while (op) {
        store_op *next = op->next;
        gmq_free(op);
        op = next;
    }
    pthread_cond_destroy(&s->cond);
    pthread_mutex_destroy(&s->lock);
    gmq_free(s->path);
    gmq_free(s);
}

store *store_open(const char *path, enum store_sync sync, char *err, size_t errlen)
{
    store *s = gmq_calloc(1, sizeof(*s));
    if (!s) {
        gmq_errf(err, errlen, "no memory");
        return NULL;
    }
    if (pthread_mutex_init(&s->lock, NULL)) {
        gmq_free(s);
        gmq_errf(err, errlen, "cannot create a mutex");
        return NULL;
    }
    if (pthread_cond_init(&s->cond, NULL)) {
        pthread_mutex_destroy(&s->lock);
        gmq_free(s);
        gmq_errf(err, errlen, "cannot create a condition variable");
        return NULL;
    }
    atomic_init(&s->committed, 0);
    atomic_init(&s->fail_commits, 0);
    atomic_init(&s->queued_bytes, 0);
    s->path = gmq_strdup(path);
    if (!s->path) {
        gmq_errf(err, errlen, "no memory");
        goto fail;
    }
    s->db = store__db_open(path, sync, err, errlen);
    if (!s->db || store__prepare(s, err, errlen))
        goto fail;
    return s;
fail:
    store__free(s);
    return NULL;
}

/* ---- loading -------------------------------------------------------------- */

static const uint8_t store__empty[1];

static const uint8_t *store__blob(sqlite3_stmt *st, int col, size_t *len)
{
    const uint8_t *p = sqlite3_column_blob(st, col);
    *len = (size_t)sqlite3_column_bytes(st, col);
    return p ? p : store__empty; /* a zero-length blob reads as NULL */
}

static const char *store__text(sqlite3_stmt *st, int col, size_t *len)
{
    const char *p = (const char *)sqlite3_column_text(st, col);
    *len = (size_t)sqlite3_column_bytes(st, col);
    return p ? p : "";
}

/* The rows of one session, its subscriptions, deliveries and QoS 2 ids. */
static int store__load_session_rows(store *s, const store_load_cb *cb, void *arg,
                                    const char *client_id, size_t client_len,
                                    const char **what)
{
    int rc = SQLITE_OK, stop = 0;
    sqlite3_stmt *st = s->stmt[ST_LOAD_SUBS];
    *what = "subscriptions";
    sqlite3_bind_text64(st, 1, client_id, client_len, SQLITE_STATIC, SQLITE_UTF8);
    while (!stop && cb->subscription && (rc = sqlite3_step(st)) == SQLITE_ROW)
        stop = cb->subscription(arg, client_id, (const char *)sqlite3_column_text(st, 0),
                                (uint8_t)sqlite3_column_int(st, 1));
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    if (stop || (rc != SQLITE_DONE && rc != SQLITE_OK))
        return stop ? -1 : rc;

    st = s->stmt[ST_LOAD_DELIVERIES];
    *what = "deliveries";
    sqlite3_bind_text64(st, 1, client_id, client_len, SQLITE_STATIC, SQLITE_UTF8);
    while (!stop && cb->delivery && (rc = sqlite3_step(st)) == SQLITE_ROW)
        stop = cb->delivery(arg, client_id, (uint64_t)sqlite3_column_int64(st, 0),
                            (uint64_t)sqlite3_column_int64(st, 1),
                            (uint8_t)sqlite3_column_int(st, 2), sqlite3_column_int(st, 3) != 0,
                            (uint16_t)sqlite3_column_int(st, 4), sqlite3_column_int(st, 5));
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    if (stop || (rc != SQLITE_DONE && rc != SQLITE_OK))
        return stop ? -1 : rc;

    st = s->stmt[ST_LOAD_RX];
    *what = "QoS 2 receipt ids";
    sqlite3_bind_text64(st, 1, client_id, client_len, SQLITE_STATIC, SQLITE_UTF8);
    while (!stop && cb->rx_qos2 && (rc = sqlite3_step(st)) == SQLITE_ROW)
        stop = cb->rx_qos2(arg, client_id, (uint16_t)sqlite3_column_int(st, 0));
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    if (stop || (rc != SQLITE_DONE && rc != SQLITE_OK))
        return stop ? -1 : rc;
    return SQLITE_OK;
}

/* Returns SQLITE_OK, an sqlite error, or -1 when a callback stopped. */
static int store__load_all(store *s, const store_load_cb *cb, void *arg, const char **what)
{
    int rc = SQLITE_OK, stop = 0;
    size_t tlen, plen;
    sqlite3_stmt *st = s->stmt[ST_LOAD_MESSAGES];
    *what = "messages";
    while (!stop && cb->message && (rc = sqlite3_step(st)) == SQLITE_ROW) {
        const char *topic = store__text(st, 1, &tlen);
        const uint8_t *payload = store__blob(st, 2, &plen);
        stop = cb->message(arg, (uint64_t)sqlite3_column_int64(st, 0), topic, tlen, payload, plen,
                           (uint8_t)sqlite3_column_int(st, 3), sqlite3_column_int(st, 4) != 0);
    }
    sqlite3_reset(st);
    if (stop || (rc != SQLITE_DONE && rc != SQLITE_OK))
        return stop ? -1 : rc;

    st = s->stmt[ST_LOAD_RETAINED];
    *what = "retained messages";
    while (!stop && cb->retained && (rc = sqlite3_step(st)) == SQLITE_ROW) {
        const char *topic = store__text(st, 0, &tlen);
        const uint8_t *payload = store__blob(st, 1, &plen);
        stop = cb->retained(arg, topic, tlen, payload, plen, (uint8_t)sqlite3_column_int(st, 2));
    }
    sqlite3_reset(st);
    if (stop || (rc != SQLITE_DONE && rc != SQLITE_OK))
        return stop ? -1 : rc;

    st = s->stmt[ST_LOAD_SESSIONS];
    while (!stop && (rc = sqlite3_step(st)) == SQLITE_ROW) {
        *what = "sessions";
        const char *client_id = store__text(st, 0, &tlen);
        if (cb->session) {
            const char *user = (const char *)sqlite3_column_text(st, 3);
            stop = cb->session(arg, client_id, sqlite3_column_int64(st, 1),
                               sqlite3_column_int(st, 2), user, sqlite3_column_int64(st, 4));
        }
        if (!stop) {
            int r = store__load_session_rows(s, cb, arg, client_id, tlen, what);
            if (r == -1)
                stop = 1;
            else if (r != SQLITE_OK)
                rc = r;
        }
        if (rc != SQLITE_ROW)
            break;
    }
    sqlite3_reset(st);
    if (stop || (rc != SQLITE_DONE && rc != SQLITE_OK))
        return stop ? -1 : rc;

    st = s->stmt[ST_LOAD_CLOCK];
    while (!stop && (rc = sqlite3_step(st)) == SQLITE_ROW) {
        *what = "clock offsets";
        const char *device = store__text(st, 0, &tlen);
        if (cb->clock)
            stop = cb->clock(arg, device, sqlite3_column_int64(st, 1), sqlite3_column_int64(st, 2));
    }
    sqlite3_reset(st);
    if (stop || (rc != SQLITE_DONE && rc != SQLITE_OK))
        return stop ? -1 : rc;

    st = s->stmt[ST_LOAD_PRESENCE];
    while (!stop && (rc = sqlite3_step(st)) == SQLITE_ROW) {
        *what = "presence";
        const char *device = store__text(st, 0, &tlen);
        if (cb->presence)
            stop = cb->presence(arg, device, sqlite3_column_int(st, 1) != 0,
                                sqlite3_column_int64(st, 2), sqlite3_column_int(st, 3) != 0);
    }
    sqlite3_reset(st);
    if (stop || (rc != SQLITE_DONE && rc != SQLITE_OK))
        return stop ? -1 : rc;

    st = s->stmt[ST_COUNT_ORPHANS];
    *what = "orphan rows";
    if ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        sqlite3_int64 orphans = sqlite3_column_int64(st, 0);
        if (orphans)
            LOG_WARN("store: %s: %lld subscription, delivery or QoS 2 row(s) belong to no "
                     "session and were not loaded",
                     s->path, (long long)orphans);
        rc = SQLITE_OK;
    }
    sqlite3_reset(st);
    return rc == SQLITE_DONE ? SQLITE_OK : rc;
}

int store_load(store *s, const store_load_cb *cb, void *arg, char *err, size_t errlen)
{
    if (s->started) {
        gmq_errf(err, errlen, "store_load after store_start");
        return -1;
    }
    sqlite3_stmt *begin = s->stmt[ST_BEGIN_READ];
    int rc = sqlite3_step(begin);
    sqlite3_reset(begin);
    if (rc != SQLITE_DONE) {
        gmq_errf(err, errlen, "%s: cannot start reading: %s", s->path, sqlite3_errmsg(s->db));
        return -1;
    }
    /* One read transaction: a consistent snapshot, read without relocking. */
    const char *what = "messages";
    rc = store__load_all(s, cb, arg, &what);
    if (rc == -1)
        gmq_errf(err, errlen, "%s: loading stopped by the caller while reading %s", s->path,
                   what);
    else if (rc != SQLITE_OK)
        gmq_errf(err, errlen, "%s: reading %s: %s", s->path, what, sqlite3_errmsg(s->db));
    sqlite3_stmt *end = s->stmt[ST_ROLLBACK];
    sqlite3_step(end);
    sqlite3_reset(end);
    return rc == SQLITE_OK ? 0 : -1;
}

/* ---- the store thread ----------------------------------------------------- */

static int store__bind_text(sqlite3_stmt *st, int i, const char *p, size_t n, int rc)
{
    return rc != SQLITE_OK ? rc : sqlite3_bind_text64(st, i, p, n, SQLITE_STATIC, SQLITE_UTF8);
}

static int store__bind_blob(sqlite3_stmt *st, int i, const uint8_t *p, size_t n, int rc)
{
    /* p is never NULL (it points into the op), so an empty payload is a
     * zero-length blob, not NULL. */
    return rc != SQLITE_OK ? rc : sqlite3_bind_blob64(st, i, p, n, SQLITE_STATIC);
}

static int store__bind_int(sqlite3_stmt *st, int i, sqlite3_int64 v, int rc)
{
    return rc != SQLITE_OK ? rc : sqlite3_bind_int64(st, i, v);
}

/* Step a bound write statement to completion and make it reusable. */
static int store__step(sqlite3_stmt *st, int rc)
{
    if (rc == SQLITE_OK) {
        rc = sqlite3_step(st);
        if (rc == SQLITE_DONE)
            rc = SQLITE_OK;
    }
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    return rc;
}

static int store__run_op(store *s, const store_op *op)
{
    sqlite3_stmt *st;
    int rc = SQLITE_OK;
    switch (op->kind) {
    case OP_PUT_RETAINED:
        st = s->stmt[ST_PUT_RETAINED];
        rc = store__bind_text(st, 1, op->key, op->key_len, rc);
        rc = store__bind_int(st, 2, op->qos, rc);
        rc = store__bind_blob(st, 3, op->payload, op->payload_len, rc);
        return store__step(st, rc);
    case OP_DEL_RETAINED:
        st = s->stmt[ST_DEL_RETAINED];
        rc = store__bind_text(st, 1, op->key, op->key_len, rc);
        return store__step(st, rc);
    case OP_PUT_MESSAGE:
        st = s->stmt[ST_PUT_MESSAGE];
        rc = store__bind_int(st, 1, (sqlite3_int64)op->num, rc);
        rc = store__bind_text(st, 2, op->key, op->key_len, rc);
        rc = store__bind_blob(st, 3, op->payload, op->payload_len, rc);
        rc = store__bind_int(st, 4, op->qos, rc);
        rc = store__bind_int(st, 5, op->retain, rc);
        return store__step(st, rc);
    case OP_DEL_MESSAGE:
        st = s->stmt[ST_DEL_MESSAGE];
        rc = store__bind_int(st, 1, (sqlite3_int64)op->num, rc);
        return store__step(st, rc);
    case OP_PUT_SESSION:
        st = s->stmt[ST_PUT_SESSION];
        rc = store__bind_text(st, 1, op->key, op->key_len, rc);
        rc = store__bind_int(st, 2, op->last_seen, rc);
        rc = store__bind_int(st, 3, op->qos, rc); /* the principal kind */
        if (rc == SQLITE_OK)
            rc = op->sub_len ? sqlite3_bind_text(st, 4, op->sub, (int)op->sub_len, SQLITE_STATIC)
                             : sqlite3_bind_null(st, 4);
        return store__step(st, rc);
    case OP_PUT_SESSION_OFFLINE:
        st = s->stmt[ST_PUT_SESSION_OFFLINE];
        rc = store__bind_text(st, 1, op->key, op->key_len, rc);
        rc = store__bind_int(st, 2, op->last_seen, rc);
        return store__step(st, rc);
    case OP_DEL_SESSION: {
        static const enum store__stmt order[] = {ST_DEL_SESSION_SUBS, ST_DEL_SESSION_DELIVERIES,
                                                 ST_DEL_SESSION_RX, ST_DEL_SESSION};
        for (size_t i = 0; i < sizeof(order) / sizeof(order[0]) && rc == SQLITE_OK; i++) {
            st = s->stmt[order[i]];
            rc = store__step(st, store__bind_text(st, 1, op->key, op->key_len, SQLITE_OK));
        }
        return rc;
    }
    case OP_PUT_SUB:
        st = s->stmt[ST_PUT_SUB];
        rc = store__bind_text(st, 1, op->key, op->key_len, rc);
        rc = store__bind_text(st, 2, op->sub, op->sub_len, rc);
        rc = store__bind_int(st, 3, op->qos, rc);
        return store__step(st, rc);
    case OP_DEL_SUB:
        st = s->stmt[ST_DEL_SUB];
        rc = store__bind_text(st, 1, op->key, op->key_len, rc);
        rc = store__bind_text(st, 2, op->sub, op->sub_len, rc);
        return store__step(st, rc);
    case OP_PUT_DELIVERY:
        st = s->stmt[ST_PUT_DELIVERY];
        rc = store__bind_text(st, 1, op->key, op->key_len, rc);
        rc = store__bind_int(st, 2, (sqlite3_int64)op->num, rc);
        rc = store__bind_int(st, 3, (sqlite3_int64)op->msg_id, rc);
        rc = store__bind_int(st, 4, op->qos, rc);
        rc = store__bind_int(st, 5, op->retain, rc);
        rc = store__bind_int(st, 6, op->packet_id, rc);
        rc = store__bind_int(st, 7, op->state, rc);
        return store__step(st, rc);
    case OP_DEL_DELIVERY:
        st = s->stmt[ST_DEL_DELIVERY];
        rc = store__bind_text(st, 1, op->key, op->key_len, rc);
        rc = store__bind_int(st, 2, (sqlite3_int64)op->num, rc);
        return store__step(st, rc);
    case OP_PUT_RX:
    case OP_DEL_RX:
        st = s->stmt[op->kind == OP_PUT_RX ? ST_PUT_RX : ST_DEL_RX];
        rc = store__bind_text(st, 1, op->key, op->key_len, rc);
        rc = store__bind_int(st, 2, op->packet_id, rc);
        return store__step(st, rc);
    case OP_PUT_OUTBOX:
        st = s->stmt[ST_PUT_OUTBOX];
        rc = store__bind_int(st, 1, op->last_seen, rc);
        rc = store__bind_text(st, 2, op->key, op->key_len, rc);
        rc = store__bind_text(st, 3, op->sub, op->sub_len, rc);
        rc = store__step(st, rc);
        if (rc == SQLITE_OK)
            s->batch_has_outbox = true;
        return rc;
    case OP_PUT_DEAD:
        /* payload holds the reason (num bytes) followed by the payload. */
        st = s->stmt[ST_PUT_DEAD];
        rc = store__bind_int(st, 1, op->last_seen, rc);
        rc = store__bind_text(st, 2, op->key, op->key_len, rc);
        rc = store__bind_text(st, 3, op->sub, op->sub_len, rc);
        rc = store__bind_blob(st, 4, op->payload + op->num, op->payload_len - op->num, rc);
        rc = store__bind_text(st, 5, (const char *)op->payload, op->num, rc);
        return store__step(st, rc);
    case OP_PUT_CLOCK:
        st = s->stmt[ST_PUT_CLOCK];
        rc = store__bind_text(st, 1, op->key, op->key_len, rc);
        rc = store__bind_int(st, 2, (sqlite3_int64)op->num, rc);
        rc = store__bind_int(st, 3, op->last_seen, rc);
        return store__step(st, rc);
    case OP_PUT_PRESENCE:
        st = s->stmt[ST_PUT_PRESENCE];
        rc = store__bind_text(st, 1, op->key, op->key_len, rc);
        rc = store__bind_int(st, 2, op->qos, rc);
        rc = store__bind_int(st, 3, op->last_seen, rc);
        rc = store__bind_int(st, 4, op->retain, rc);
        return store__step(st, rc);
    }
    return SQLITE_MISUSE;
}

/* Errors that concern one row and will not go away by retrying: such a
 * write is skipped (and logged), not allowed to block every later one. */
static bool store__rc_is_permanent(int rc)
{
    switch (rc & 0xff) {
    case SQLITE_CONSTRAINT:
    case SQLITE_TOOBIG:
    case SQLITE_MISMATCH:
    case SQLITE_RANGE:
        return true;
    default:
        return false;
    }
}

/* Run one batch in one transaction. Returns SQLITE_OK once committed, or
 * the failing code after rolling back (logged here, while the message of
 * the failure is still the connection's). */
static int store__run_batch(store *s, store_op *batch, size_t n)
{
    s->batch_has_outbox = false;
    int rc = store__step(s->stmt[ST_BEGIN_WRITE], SQLITE_OK);
    const char *during = "BEGIN";
    if (rc != SQLITE_OK)
        goto fail;
    for (store_op *op = batch; op; op = op->next) {
        rc = store__run_op(s, op);
        if (rc == SQLITE_OK)
            continue;
        if (store__rc_is_permanent(rc) && !sqlite3_get_autocommit(s->db)) {
            LOG_ERROR("store: %s: write %llu (%s) rejected: %s; skipped", s->path,
                      (unsigned long long)op->seq, store__op_names[op->kind],
                      sqlite3_errmsg(s->db));
            continue;
        }
        during = store__op_names[op->kind];
        goto fail;
    }
    unsigned inject = atomic_load(&s->fail_commits);
    while (inject && !atomic_compare_exchange_weak(&s->fail_commits, &inject, inject - 1))
        ;
    if (inject) {
        rc = SQLITE_IOERR;
        LOG_ERROR("store: %s: COMMIT of %zu write(s) failed: injected I/O error", s->path, n);
        goto rollback;
    }
    during = "COMMIT";
    rc = store__step(s->stmt[ST_COMMIT], SQLITE_OK);
    if (rc == SQLITE_OK) {
        /* Wake the telemetry sink: there are new rows to drain. */
        if (s->batch_has_outbox && s->outbox_hook)
            s->outbox_hook(s->outbox_hook_arg);
        return SQLITE_OK;
    }
fail:
    LOG_ERROR("store: %s: %s in a batch of %zu write(s) failed: %s", s->path, during, n,
              sqlite3_errmsg(s->db));
rollback:
    if (!sqlite3_get_autocommit(s->db))
        store__step(s->stmt[ST_ROLLBACK], SQLITE_OK);
    return rc;
}

static bool store__stopping(store *s)
{
    pthread_mutex_lock(&s->lock);
    bool stopping = s->stopping;
    pthread_mutex_unlock(&s->lock);
    return stopping;
}

/* Commit the batch, retrying with back-off until it goes through; after
 * store_close, give up after a few attempts. Frees the batch. Returns true
 * when committed. */
static bool store__commit(store *s, store_op *batch, size_t n)
{
    unsigned delay_ms = STORE_BACKOFF_FIRST_MS, failures = 0, after_stop = 0;
    bool ok = false;
    for (;;) {
        if (store__run_batch(s, batch, n) == SQLITE_OK) {
            ok = true;
            break;
        }
        failures++;
        if (store__stopping(s) && ++after_stop >= STORE_CLOSE_ATTEMPTS) {
            uint64_t last = batch->seq;
            for (store_op *op = batch; op; op = op->next)
                last = op->seq;
            LOG_ERROR("store: %s: giving up at close: %zu write(s) (%llu..%llu) are NOT saved",
                      s->path, n, (unsigned long long)batch->seq, (unsigned long long)last);
            break;
        }
        LOG_WARN("store: %s: retrying %zu write(s) in %u ms", s->path, n, delay_ms);
        struct timespec ts = {.tv_sec = delay_ms / 1000, .tv_nsec = (long)(delay_ms % 1000) * 1000000};
        while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
            ;
        delay_ms = delay_ms * 2 > STORE_BACKOFF_MAX_MS ? STORE_BACKOFF_MAX_MS : delay_ms * 2;
    }
    size_t bytes = 0;
    while (batch) {
        store_op *next = batch->next;
        bytes += batch->size;
        gmq_free(batch);
        batch = next;
    }
    /* Before the commit is reported, so the loop sees the smaller queue
     * when it wakes (the backpressure release). */
    atomic_fetch_sub(&s->queued_bytes, bytes);
    pthread_mutex_lock(&s->lock);
    s->stats.failures += failures;
    if (ok) {
        s->stats.transactions++;
        s->stats.writes += n;
    } else {
        s->stats.dropped += n;
    }
    pthread_mutex_unlock(&s->lock);
    return ok;
}

/* Detach the oldest queued writes, within the batch bounds. Under lock. */
static store_op *store__take_batch(store *s, size_t *count, uint64_t *last_seq)
{
    store_op *batch = s->head, *op = batch, *last = NULL;
    size_t n = 0, bytes = 0;
    while (op && n < STORE_BATCH_MAX_OPS && (n == 0 || bytes + op->size <= STORE_BATCH_MAX_BYTES)) {
        bytes += op->size;
        n++;
        last = op;
        op = op->next;
    }
    s->head = op;
    if (!op)
        s->tail = NULL;
    if (last)
        last->next = NULL;
    *count = n;
    *last_seq = last ? last->seq : 0;
    return n ? batch : NULL;
}

static void *store__thread(void *arg)
{
    store *s = arg;
    pthread_mutex_lock(&s->lock);
    for (;;) {
        while (!s->head && !s->stopping)
            pthread_cond_wait(&s->cond, &s->lock);
        if (!s->head)
            break; /* stopping, and everything queued is done */
        size_t n;
        uint64_t last;
        store_op *batch = store__take_batch(s, &n, &last);
        bool delay = s->test_delay_us && !s->stopping; /* shutdown is not slowed */
        pthread_mutex_unlock(&s->lock);
        if (delay) {
            struct timespec ts = {.tv_sec = (time_t)(s->test_delay_us / 1000000),
                                  .tv_nsec = (long)(s->test_delay_us % 1000000) * 1000};
            while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
                ;
        }
        bool ok = store__commit(s, batch, n);
        pthread_mutex_lock(&s->lock);
        if (ok) {
            atomic_store_explicit(&s->committed, last, memory_order_release);
            ev_async_send(s->loop, &s->wake);
        }
    }
    pthread_mutex_unlock(&s->lock);
    return NULL;
}

static void store__on_wake(struct ev_loop *loop, ev_async *w, int revents)
{
    (void)loop;
    (void)revents;
    store *s = w->data;
    /* Every commit sends a wake-up after taking its bytes off the queue, so
     * the one that brings the queue down to the low mark is seen here.
     * `committed` is read first: the thread takes a batch's bytes off before
     * it publishes the batch's seq (release), so the count read after it
     * (acquire) is net of every batch up to seq, and the release is reported
     * no later than the on_commit of the commit that made it. Read the other
     * way round, a commit landing between the two reads is reported here
     * and its release only by the next wake-up. */
    uint64_t seq = atomic_load_explicit(&s->committed, memory_order_acquire);
    if (store_watermark_fall(&s->water, store_queued_bytes(s)) && s->on_drained)
        s->on_drained(s->drained_arg);
    if (seq <= s->reported)
        return;
    s->reported = seq;
    if (s->on_commit)
        s->on_commit(s->arg, seq); /* last use of s: on_commit may close the store */
}

int store_start(store *s, struct ev_loop *loop, void (*on_commit)(void *arg, uint64_t seq),
                void *arg)
{
    if (s->started)
        return -1;
    s->loop = loop;
    s->on_commit = on_commit;
    s->arg = arg;
    ev_async_init(&s->wake, store__on_wake);
    s->wake.data = s;
    ev_async_start(loop, &s->wake);
    const char *delay = getenv("GATEMQ_TEST_STORE_DELAY_US");
    if (delay && *delay) {
        s->test_delay_us = strtoul(delay, NULL, 10);
        LOG_WARN("store: GATEMQ_TEST_STORE_DELAY_US: every commit is delayed by %lu us "
                 "(for tests only)",
                 s->test_delay_us);
    }
    if (pthread_create(&s->thread, NULL, store__thread, s)) {
        LOG_ERROR("store: cannot start the store thread");
        ev_async_stop(loop, &s->wake);
        return -1;
    }
    s->started = true;
    return 0;
}

uint64_t store_last_queued(const store *s)
{
    return s->last_queued;
}

uint64_t store_last_committed(const store *s)
{
    return atomic_load_explicit(&((store *)s)->committed, memory_order_acquire);
}

size_t store_backlog(const store *s)
{
    return (size_t)(s->last_queued - store_last_committed(s));
}

/* ---- backpressure --------------------------------------------------------- */

bool store_watermark_rise(store_watermark *w, size_t queued)
{
    if (!w->congested && w->high && queued >= w->high)
        w->congested = true;
    return w->congested;
}

bool store_watermark_fall(store_watermark *w, size_t queued)
{
    if (!w->congested || queued > w->low)
        return false;
    w->congested = false;
    return true;
}

void store_set_queue_limit(store *s, size_t high, size_t low, void (*on_drained)(void *arg),
                           void *arg)
{
    s->water.high = high;
    s->water.low = low < high ? low : (high ? high - 1 : 0);
    s->on_drained = on_drained;
    s->drained_arg = arg;
}

bool store_congested(const store *s)
{
    return s->water.congested;
}

size_t store_queued_bytes(const store *s)
{
    return atomic_load(&((store *)s)->queued_bytes);
}

void store_close(store *s)
{
    if (!s)
        return;
    pthread_mutex_lock(&s->lock);
    s->stopping = true;
    pthread_cond_signal(&s->cond);
    pthread_mutex_unlock(&s->lock);
    if (s->started) {
        pthread_join(s->thread, NULL);
        ev_async_stop(s->loop, &s->wake); /* a pending wake-up is dropped with it */
    } else {
        /* Writes queued before a start that never came: commit them here. */
        size_t n;
        uint64_t last;
        store_op *batch;
        while ((batch = store__take_batch(s, &n, &last)))
            if (store__commit(s, batch, n))
                atomic_store(&s->committed, last);
    }
    LOG_INFO("store: %s closed: %llu write(s) in %llu transaction(s), %llu failed attempt(s)",
             s->path, (unsigned long long)s->stats.writes,
             (unsigned long long)s->stats.transactions, (unsigned long long)s->stats.failures);
    store__free(s);
}

void store_get_stats(store *s, store_stats *out)
{
    pthread_mutex_lock(&s->lock);
    *out = s->stats;
    pthread_mutex_unlock(&s->lock);
}

void store_test_fail_commits(store *s, unsigned n)
{
    atomic_store(&s->fail_commits, n);
}

/* ---- queueing (loop thread) ----------------------------------------------- */

/* Copy the arguments into one block: key, NUL, sub, NUL, payload. NULL
 * (logged) when the write is too large for the database or memory runs out. */
static store_op *store__op_new(const store *s, enum store__op_kind kind, const char *key,
                               size_t key_len, const char *sub, size_t sub_len,
                               const uint8_t *payload, size_t payload_len)
{
    size_t fixed = sizeof(store_op) + 2;
    if (key_len > s->max_len || sub_len > s->max_len || payload_len > s->max_len ||
        key_len + sub_len + payload_len > s->max_len) {
        LOG_ERROR("store: %s: %s of %zu bytes exceeds the database's limit; dropped", s->path,
                  store__op_names[kind], key_len + sub_len + payload_len);
        return NULL;
    }
    size_t size = fixed + key_len + sub_len + payload_len;
    store_op *op = gmq_malloc(size);
    if (!op) {
        LOG_ERROR("store: %s: no memory for %s (%zu bytes); dropped", s->path,
                  store__op_names[kind], size);
        return NULL;
    }
    memset(op, 0, sizeof(*op));
    op->kind = kind;
    op->size = size;
    char *p = op->data;
    op->key = p;
    op->key_len = key_len;
    if (key_len)
        memcpy(p, key, key_len);
    p += key_len;
    *p++ = '\0';
    op->sub = p;
    op->sub_len = sub_len;
    if (sub_len)
        memcpy(p, sub, sub_len);
    p += sub_len;
    *p++ = '\0';
    op->payload = (const uint8_t *)p;
    op->payload_len = payload_len;
    if (payload_len)
        memcpy(p, payload, payload_len);
    return op;
}

static int store__queue(store *s, store_op *op)
{
    if (!op)
        return -1;
    op->seq = ++s->last_queued;
    size_t queued = atomic_fetch_add(&s->queued_bytes, op->size) + op->size;
    store_watermark_rise(&s->water, queued);
    pthread_mutex_lock(&s->lock);
    if (s->tail)
        s->tail->next = op;
    else
        s->head = op;
    s->tail = op;
    /* The thread waits only on an empty queue. */
    if (s->head == op)
        pthread_cond_signal(&s->cond);
    pthread_mutex_unlock(&s->lock);
    return 0;
}

int store_put_retained(store *s, const char *topic, size_t topic_len, const uint8_t *payload,
                       size_t payload_len, uint8_t qos)
{
    store_op *op =
        store__op_new(s, OP_PUT_RETAINED, topic, topic_len, NULL, 0, payload, payload_len);
    if (op)
        op->qos = qos;
    return store__queue(s, op);
}

int store_del_retained(store *s, const char *topic, size_t topic_len)
{
    return store__queue(s, store__op_new(s, OP_DEL_RETAINED, topic, topic_len, NULL, 0, NULL, 0));
}

int store_put_message(store *s, uint64_t id, const char *topic, size_t topic_len,
                      const uint8_t *payload, size_t payload_len, uint8_t qos, bool retain)
{
    store_op *op =
        store__op_new(s, OP_PUT_MESSAGE, topic, topic_len, NULL, 0, payload, payload_len);
    if (op) {
        op->num = id;
        op->qos = qos;
        op->retain = retain;
    }
    return store__queue(s, op);
}

int store_del_message(store *s, uint64_t id)
{
    store_op *op = store__op_new(s, OP_DEL_MESSAGE, NULL, 0, NULL, 0, NULL, 0);
    if (op)
        op->num = id;
    return store__queue(s, op);
}

int store_put_session(store *s, const char *client_id, int64_t last_seen, int kind,
                      const char *username)
{
    store_op *op = store__op_new(s, OP_PUT_SESSION, client_id, strlen(client_id), username,
                                 username ? strlen(username) : 0, NULL, 0);
    if (op) {
        op->last_seen = last_seen;
        op->qos = (uint8_t)kind;
    }
    return store__queue(s, op);
}

int store_put_session_offline(store *s, const char *client_id, int64_t since_ms)
{
    store_op *op =
        store__op_new(s, OP_PUT_SESSION_OFFLINE, client_id, strlen(client_id), NULL, 0, NULL, 0);
    if (op)
        op->last_seen = since_ms;
    return store__queue(s, op);
}

int store_del_session(store *s, const char *client_id)
{
    return store__queue(
        s, store__op_new(s, OP_DEL_SESSION, client_id, strlen(client_id), NULL, 0, NULL, 0));
}

int store_put_subscription(store *s, const char *client_id, const char *filter, uint8_t qos)
{
    store_op *op = store__op_new(s, OP_PUT_SUB, client_id, strlen(client_id), filter,
                                 strlen(filter), NULL, 0);
    if (op)
        op->qos = qos;
    return store__queue(s, op);
}

int store_del_subscription(store *s, const char *client_id, const char *filter)
{
    return store__queue(s, store__op_new(s, OP_DEL_SUB, client_id, strlen(client_id), filter,
                                         strlen(filter), NULL, 0));
}

int store_put_delivery(store *s, const char *client_id, uint64_t seq, uint64_t msg_id,
                       uint8_t qos, bool retain, uint16_t packet_id, int state)
{
    store_op *op =
        store__op_new(s, OP_PUT_DELIVERY, client_id, strlen(client_id), NULL, 0, NULL, 0);
    if (op) {
        op->num = seq;
        op->msg_id = msg_id;
        op->qos = qos;
        op->retain = retain;
        op->packet_id = packet_id;
        op->state = state;
    }
    return store__queue(s, op);
}

int store_del_delivery(store *s, const char *client_id, uint64_t seq)
{
    store_op *op =
        store__op_new(s, OP_DEL_DELIVERY, client_id, strlen(client_id), NULL, 0, NULL, 0);
    if (op)
        op->num = seq;
    return store__queue(s, op);
}

int store_put_rx_qos2(store *s, const char *client_id, uint16_t packet_id)
{
    store_op *op = store__op_new(s, OP_PUT_RX, client_id, strlen(client_id), NULL, 0, NULL, 0);
    if (op)
        op->packet_id = packet_id;
    return store__queue(s, op);
}

int store_del_rx_qos2(store *s, const char *client_id, uint16_t packet_id)
{
    store_op *op = store__op_new(s, OP_DEL_RX, client_id, strlen(client_id), NULL, 0, NULL, 0);
    if (op)
        op->packet_id = packet_id;
    return store__queue(s, op);
}

/* ---- telemetry, clocks and presence ------------------------------------------ */

int store_put_outbox(store *s, const char *device, int64_t received_ms, const char *line,
                     size_t line_len)
{
    store_op *op =
        store__op_new(s, OP_PUT_OUTBOX, device, strlen(device), line, line_len, NULL, 0);
    if (op)
        op->last_seen = received_ms;
    return store__queue(s, op);
}

int store_put_dead_letter(store *s, const char *device, int64_t at_ms, const char *topic,
                          const uint8_t *payload, size_t payload_len, const char *reason)
{
    size_t rlen = strlen(reason);
    uint8_t *both = gmq_malloc(rlen + payload_len + 1);
    if (!both) {
        LOG_ERROR("store: %s: no memory for a dead letter; dropped", s->path);
        return -1;
    }
    memcpy(both, reason, rlen);
    if (payload_len)
        memcpy(both + rlen, payload, payload_len);
    store_op *op = store__op_new(s, OP_PUT_DEAD, device, strlen(device), topic,
                                 topic ? strlen(topic) : 0, both, rlen + payload_len);
    gmq_free(both);
    if (op) {
        op->last_seen = at_ms;
        op->num = rlen;
    }
    return store__queue(s, op);
}

int store_put_clock(store *s, const char *device, int64_t offset_ms, int64_t updated_ms)
{
    store_op *op = store__op_new(s, OP_PUT_CLOCK, device, strlen(device), NULL, 0, NULL, 0);
    if (op) {
        op->num = (uint64_t)offset_ms;
        op->last_seen = updated_ms;
    }
    return store__queue(s, op);
}

int store_put_presence(store *s, const char *device, bool online, int64_t since_ms, bool notified)
{
    store_op *op = store__op_new(s, OP_PUT_PRESENCE, device, strlen(device), NULL, 0, NULL, 0);
    if (op) {
        op->qos = online;
        op->last_seen = since_ms;
        op->retain = notified;
    }
    return store__queue(s, op);
}

void store_on_outbox_commit(store *s, void (*fn)(void *arg), void *arg)
{
    s->outbox_hook = fn;
    s->outbox_hook_arg = arg;
}

const char *store_path(const store *s)
{
    return s->path;
}
