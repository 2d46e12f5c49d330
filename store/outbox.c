/*
 * outbox.c - the telemetry outbox drain (see outbox.h).
 *
 * The drain thread has its own SQLite connection to the store's database:
 * in WAL mode it reads while the store thread writes, and its deletes wait
 * for the write lock through busy_timeout. It owns the connection, the
 * statements, the sink and the batch buffers from outbox_start until
 * outbox_stop joins it. What other threads see (the stopping flag, wake
 * counts, statistics) is under ob->lock.
 *
 * A batch is held as one body (the lines, each ended by '\n', back to back)
 * and an index of rows (id, offset, length), so that any run of rows, a
 * half when bisecting, is a contiguous slice of the body.
 *
 * Ids: SQLite gives a new row an id above every row present (no
 * AUTOINCREMENT), and the drain deletes oldest first, so the rows of a
 * batch are every row whose id lies between its first and last id, and
 * "DELETE ... BETWEEN first AND last" removes exactly them. When the table
 * runs empty, though, ids start again at 1: so each batch is read from the
 * lowest id present, never from a cursor past the last id sent (a cursor
 * would leave such a row behind until the next poll, out of order).
 */
#include "store/outbox.h"

#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "broker/alloc.h"
#include "broker/log.h"

#define OUTBOX_BUSY_TIMEOUT_MS 5000
#define OUTBOX_LOG_EVERY_MS 60000
#define OUTBOX_STATS_EVERY_MS 1000

#define OUTBOX_DEFAULT_ROWS 5000
#define OUTBOX_DEFAULT_BYTES (1u << 20)
#define OUTBOX_DEFAULT_DELAY_MS 200
#define OUTBOX_DEFAULT_RETRY_MIN_MS 500
#define OUTBOX_DEFAULT_RETRY_MAX_MS 30000
#define OUTBOX_DEFAULT_POLL_MS 1000

enum outbox__stmt {
    OS_SELECT,
    OS_DELETE_RANGE,
    OS_DEAD,
    OS_DELETE_ONE,
    OS_BEGIN,
    OS_COMMIT,
    OS_ROLLBACK,
    OS_STATS,
    OS_COUNT
};

static const char *const outbox__sql[OS_COUNT] = {
    [OS_SELECT] = "SELECT id, line FROM outbox ORDER BY id LIMIT ?1",
    [OS_DELETE_RANGE] = "DELETE FROM outbox WHERE id BETWEEN ?1 AND ?2",
    [OS_DEAD] = "INSERT INTO dead_letters(at, device, topic, payload, reason) "
                "SELECT ?1, device, NULL, CAST(line AS BLOB), ?2 FROM outbox WHERE id = ?3",
    [OS_DELETE_ONE] = "DELETE FROM outbox WHERE id = ?1",
    [OS_BEGIN] = "BEGIN IMMEDIATE",
    [OS_COMMIT] = "COMMIT",
    [OS_ROLLBACK] = "ROLLBACK",
    /* Each part is one b-tree seek. */
    [OS_STATS] = "SELECT (SELECT min(id) FROM outbox), (SELECT max(id) FROM outbox), "
                 "(SELECT received FROM outbox ORDER BY id LIMIT 1)",
};

typedef struct outbox_row {
    int64_t id;
    size_t off; /* into body */
    size_t len; /* with its '\n' */
} outbox_row;

/* A failure that repeats: logged when it starts, then at most once per
 * OUTBOX_LOG_EVERY_MS, and when it ends. */
typedef struct outbox_ratelog {
    bool active;
    int64_t since_ms;
    int64_t logged_ms;
    uint64_t count; /* since the last line logged */
    uint64_t total; /* since the failure started */
} outbox_ratelog;

enum { OUTBOX_DONE = 0, OUTBOX_STOPPED = 1 };

struct outbox {
    char *path;
    sqlite3 *db;
    sqlite3_stmt *st[OS_COUNT];
    sink *sk;
    outbox_options o;
    pthread_t thread;

    /* Drain thread only. */
    outbox_row *rows;
    size_t nrows, rows_cap;
    char *body;
    size_t body_len, body_cap;
    long backoff_ms;  /* the next back-off */
    int64_t stats_ms; /* when the waiting-rows estimate was refreshed */
    outbox_ratelog sink_log, db_log;
    uint64_t dead_unlogged;
    int64_t dead_logged_ms;
    char dead_reason[600]; /* the latest, for the summary */

    /* Under lock. */
    pthread_mutex_t lock;
    pthread_cond_t cond; /* CLOCK_MONOTONIC */
    bool stopping;
    uint64_t wakes;
    int64_t wake_ms[2]; /* the last wake and the one before (monotonic) */
    outbox_stats stats; /* lag_ms is computed from oldest_received */
    int64_t oldest_received;
};

/* ---- time and waiting ----------------------------------------------------- */

static int64_t outbox__clock_ms(clockid_t clk)
{
    struct timespec ts;
    clock_gettime(clk, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int64_t outbox__mono_ms(void)
{
    return outbox__clock_ms(CLOCK_MONOTONIC);
}

static int64_t outbox__wall_ms(void)
{
    return outbox__clock_ms(CLOCK_REALTIME);
}

static bool outbox__stopping(outbox *ob)
{
    pthread_mutex_lock(&ob->lock);
    bool stopping = ob->stopping;
    pthread_mutex_unlock(&ob->lock);
    return stopping;
}

/* Sleep until deadline (monotonic ms), or until outbox_stop; with
 * until_wake, also until a wake after the count seen. True when stopping. */
static bool outbox__wait(outbox *ob, int64_t deadline, bool until_wake, uint64_t seen)
{
    pthread_mutex_lock(&ob->lock);
    while (!ob->stopping && !(until_wake && ob->wakes != seen)) {
        if (outbox__mono_ms() >= deadline)
            break;
        struct timespec ts = {.tv_sec = deadline / 1000, .tv_nsec = (deadline % 1000) * 1000000};
        pthread_cond_timedwait(&ob->cond, &ob->lock, &ts);
    }
    bool stopping = ob->stopping;
    pthread_mutex_unlock(&ob->lock);
    return stopping;
}

/* ---- statistics ----------------------------------------------------------- */

static void outbox__stat_add(outbox *ob, uint64_t *field, uint64_t n)
{
    pthread_mutex_lock(&ob->lock);
    *field += n;
    pthread_mutex_unlock(&ob->lock);
}

/* Refresh the estimate of waiting rows. A failure keeps the old figures. */
static void outbox__refresh_stats(outbox *ob)
{
    sqlite3_stmt *st = ob->st[OS_STATS];
    if (sqlite3_step(st) == SQLITE_ROW) {
        bool empty = sqlite3_column_type(st, 0) == SQLITE_NULL;
        int64_t lo = sqlite3_column_int64(st, 0), hi = sqlite3_column_int64(st, 1);
        int64_t received = sqlite3_column_int64(st, 2);
        pthread_mutex_lock(&ob->lock);
        ob->stats.rows = empty || hi < lo ? 0 : (uint64_t)(hi - lo) + 1;
        ob->oldest_received = received;
        pthread_mutex_unlock(&ob->lock);
    }
    sqlite3_reset(st);
    ob->stats_ms = outbox__mono_ms();
}

/* ---- logging with rate limits --------------------------------------------- */

/* Returns true when this failure should be logged, with *count the
 * failures since the last line (this one included). */
static bool outbox__ratelog_fail(outbox_ratelog *r, int64_t now, uint64_t *count)
{
    r->count++;
    r->total++;
    if (!r->active) {
        r->active = true;
        r->since_ms = now;
        r->total = 1;
    } else if (now - r->logged_ms < OUTBOX_LOG_EVERY_MS) {
        return false;
    }
    r->logged_ms = now;
    *count = r->count;
    r->count = 0;
    return true;
}

/* Returns true when a failure was going on (and now ends). */
static bool outbox__ratelog_ok(outbox_ratelog *r)
{
    bool was = r->active;
    r->active = false;
    r->count = 0;
    return was;
}

static void outbox__sink_answered(outbox *ob)
{
    uint64_t attempts = ob->sink_log.total;
    if (outbox__ratelog_ok(&ob->sink_log))
        LOG_NOTICE("outbox: sink %s is back after %.1f s and %llu failed attempt(s)",
                   ob->sk->ops->name, (double)(outbox__mono_ms() - ob->sink_log.since_ms) / 1000,
                   (unsigned long long)attempts);
    pthread_mutex_lock(&ob->lock);
    ob->stats.sink_up = true;
    pthread_mutex_unlock(&ob->lock);
}

static void outbox__sink_failed(outbox *ob, const char *why, size_t rows)
{
    int64_t now = outbox__mono_ms();
    uint64_t count;
    bool first = !ob->sink_log.active;
    if (outbox__ratelog_fail(&ob->sink_log, now, &count)) {
        if (first)
            LOG_WARN("outbox: sink %s failed: %s; %zu point(s) kept, retrying in %ld ms "
                     "(back-off up to %ld ms)",
                     ob->sk->ops->name, why[0] ? why : "no reason given", rows, ob->backoff_ms,
                     ob->o.retry_max_ms);
        else
            LOG_WARN("outbox: sink %s still failing after %lld s (%llu attempt(s) since the "
                     "last report): %s",
                     ob->sk->ops->name, (long long)((now - ob->sink_log.since_ms) / 1000),
                     (unsigned long long)count, why[0] ? why : "no reason given");
    }
    pthread_mutex_lock(&ob->lock);
    ob->stats.failures++;
    ob->stats.sink_up = false;
    pthread_mutex_unlock(&ob->lock);
}

static void outbox__db_failed(outbox *ob, const char *doing, const char *why)
{
    int64_t now = outbox__mono_ms();
    uint64_t count;
    if (outbox__ratelog_fail(&ob->db_log, now, &count))
        LOG_ERROR("outbox: %s: %s failed: %s (%llu time(s) since the last report); retrying",
                  ob->path, doing, why, (unsigned long long)count);
    outbox__stat_add(ob, &ob->stats.failures, 1);
}

static void outbox__db_ok(outbox *ob)
{
    if (!ob->db_log.active)
        return;
    ob->backoff_ms = ob->o.retry_min_ms;
    uint64_t attempts = ob->db_log.total;
    if (outbox__ratelog_ok(&ob->db_log))
        LOG_NOTICE("outbox: %s: database access works again after %llu failure(s)", ob->path,
                   (unsigned long long)attempts);
}

/* A row moved to dead_letters (reason non-NULL), or a flush at stop: log
 * the first, then a count at most once per OUTBOX_LOG_EVERY_MS. */
static void outbox__dead_logged(outbox *ob, const char *reason, bool flush)
{
    int64_t now = outbox__mono_ms();
    if (reason) {
        ob->dead_unlogged++;
        snprintf(ob->dead_reason, sizeof(ob->dead_reason), "%s", reason);
    }
    if (!ob->dead_unlogged)
        return;
    if (!flush && ob->dead_logged_ms && now - ob->dead_logged_ms < OUTBOX_LOG_EVERY_MS)
        return;
    LOG_ERROR("outbox: %llu point(s) moved to dead_letters in %s; latest reason: %s",
              (unsigned long long)ob->dead_unlogged, ob->path, ob->dead_reason);
    ob->dead_unlogged = 0;
    ob->dead_logged_ms = now;
}

/* Wait out the current back-off (refreshing the statistics meanwhile) and
 * double it for next time. True when stopping. */
static bool outbox__backoff(outbox *ob)
{
    int64_t deadline = outbox__mono_ms() + ob->backoff_ms;
    ob->backoff_ms = ob->backoff_ms > ob->o.retry_max_ms / 2 ? ob->o.retry_max_ms
                                                              : ob->backoff_ms * 2;
    for (;;) {
        int64_t now = outbox__mono_ms();
        if (now >= deadline)
            return outbox__stopping(ob);
        int64_t slice = now + OUTBOX_STATS_EVERY_MS < deadline ? now + OUTBOX_STATS_EVERY_MS
                                                               : deadline;
        if (outbox__wait(ob, slice, false, 0))
            return true;
        if (outbox__mono_ms() - ob->stats_ms >= OUTBOX_STATS_EVERY_MS)
            outbox__refresh_stats(ob);
    }
}

/* ---- reading a batch ------------------------------------------------------ */

static bool outbox__reserve(outbox *ob, size_t more_bytes)
{
    if (ob->nrows == ob->rows_cap) {
        size_t cap = ob->rows_cap ? ob->rows_cap * 2 : 256;
        outbox_row *r = gmq_realloc(ob->rows, cap * sizeof(*r));
        if (!r)
            return false;
        ob->rows = r;
        ob->rows_cap = cap;
    }
    if (ob->body_len + more_bytes > ob->body_cap) {
        size_t cap = ob->body_cap ? ob->body_cap : 4096;
        while (cap < ob->body_len + more_bytes)
            cap *= 2;
        char *b = gmq_realloc(ob->body, cap);
        if (!b)
            return false;
        ob->body = b;
        ob->body_cap = cap;
    }
    return true;
}

/* Read the oldest rows into the batch, within its bounds.
 * Returns the number of rows, or -1 (logged) on a database error or no
 * memory. *full: a bound stopped the batch, so more rows are waiting. */
static long outbox__read(outbox *ob, bool *full)
{
    sqlite3_stmt *st = ob->st[OS_SELECT];
    const char *failed = NULL;
    int rc = SQLITE_OK;
    ob->nrows = 0;
    ob->body_len = 0;
    *full = false;
    sqlite3_bind_int64(st, 1, (sqlite3_int64)ob->o.batch_rows);
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        const char *line = (const char *)sqlite3_column_text(st, 1);
        size_t len = (size_t)sqlite3_column_bytes(st, 1);
        if (!line)
            line = "";
        bool add_nl = len == 0 || line[len - 1] != '\n';
        size_t need = len + add_nl;
        if (ob->nrows && ob->body_len + need > ob->o.batch_bytes) {
            *full = true;
            break;
        }
        if (!outbox__reserve(ob, need)) {
            failed = "no memory for the batch";
            break;
        }
        outbox_row *r = &ob->rows[ob->nrows++];
        r->id = sqlite3_column_int64(st, 0);
        r->off = ob->body_len;
        r->len = need;
        memcpy(ob->body + ob->body_len, line, len);
        if (add_nl)
            ob->body[ob->body_len + len] = '\n';
        ob->body_len += need;
    }
    if (!failed && rc != SQLITE_ROW && rc != SQLITE_DONE)
        failed = sqlite3_errmsg(ob->db);
    if (failed)
        outbox__db_failed(ob, "reading the outbox", failed);
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    if (failed) {
        ob->nrows = 0;
        return -1;
    }
    if (ob->nrows == ob->o.batch_rows)
        *full = true;
    return (long)ob->nrows;
}

/* ---- settling rows -------------------------------------------------------- */

static int outbox__step(sqlite3_stmt *st)
{
    int rc = sqlite3_step(st);
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    return rc == SQLITE_DONE || rc == SQLITE_ROW ? SQLITE_OK : rc;
}

/* Delete rows [lo, hi) of the batch, or, with reason, move the single row
 * lo to dead_letters: one transaction either way. On failure, why gets the
 * database's message and the transaction is rolled back. */
static int outbox__apply(outbox *ob, size_t lo, size_t hi, const char *reason, char *why,
                         size_t whylen)
{
    int rc;
    if (!reason) {
        sqlite3_stmt *st = ob->st[OS_DELETE_RANGE];
        sqlite3_bind_int64(st, 1, ob->rows[lo].id);
        sqlite3_bind_int64(st, 2, ob->rows[hi - 1].id);
        rc = outbox__step(st);
    } else if ((rc = outbox__step(ob->st[OS_BEGIN])) == SQLITE_OK) {
        sqlite3_stmt *st = ob->st[OS_DEAD];
        sqlite3_bind_int64(st, 1, outbox__wall_ms());
        sqlite3_bind_text(st, 2, reason, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 3, ob->rows[lo].id);
        rc = outbox__step(st);
        if (rc == SQLITE_OK) {
            st = ob->st[OS_DELETE_ONE];
            sqlite3_bind_int64(st, 1, ob->rows[lo].id);
            rc = outbox__step(st);
        }
        if (rc == SQLITE_OK)
            rc = outbox__step(ob->st[OS_COMMIT]);
    }
    if (rc != SQLITE_OK) {
        snprintf(why, whylen, "%s", sqlite3_errmsg(ob->db));
        if (!sqlite3_get_autocommit(ob->db))
            outbox__step(ob->st[OS_ROLLBACK]);
    }
    return rc;
}

/* Apply until it succeeds; the first attempt is made even when stopping,
 * so that a write the sink took is not replayed needlessly. */
static int outbox__settle(outbox *ob, size_t lo, size_t hi, const char *reason)
{
    for (;;) {
        char why[256] = "";
        if (outbox__apply(ob, lo, hi, reason, why, sizeof(why)) == SQLITE_OK) {
            outbox__db_ok(ob);
            return OUTBOX_DONE;
        }
        outbox__db_failed(ob, reason ? "moving a point to dead_letters" : "deleting sent points",
                          why);
        if (outbox__backoff(ob))
            return OUTBOX_STOPPED;
    }
}

/* ---- writing -------------------------------------------------------------- */

/* Write rows [lo, hi) until the sink took them or they are dead letters. */
static int outbox__deliver(outbox *ob, size_t lo, size_t hi)
{
    for (;;) {
        if (outbox__stopping(ob))
            return OUTBOX_STOPPED;
        const outbox_row *first = &ob->rows[lo], *last = &ob->rows[hi - 1];
        char err[512] = "";
        enum sink_result r = sink_write(ob->sk, ob->body + first->off,
                                        last->off + last->len - first->off, err, sizeof(err));
        if (r == SINK_OK) {
            outbox__sink_answered(ob);
            ob->backoff_ms = ob->o.retry_min_ms;
            if (outbox__settle(ob, lo, hi, NULL) == OUTBOX_STOPPED)
                return OUTBOX_STOPPED;
            outbox__stat_add(ob, &ob->stats.sent, hi - lo);
            return OUTBOX_DONE;
        }
        if (r == SINK_REJECT) {
            outbox__sink_answered(ob);
            ob->backoff_ms = ob->o.retry_min_ms;
            outbox__stat_add(ob, &ob->stats.rejects, 1);
            if (hi - lo > 1) {
                size_t mid = lo + (hi - lo) / 2;
                if (outbox__deliver(ob, lo, mid) == OUTBOX_STOPPED)
                    return OUTBOX_STOPPED;
                return outbox__deliver(ob, mid, hi);
            }
            char reason[600];
            snprintf(reason, sizeof(reason), "%s: %s", ob->sk->ops->name,
                     err[0] ? err : "rejected");
            if (outbox__settle(ob, lo, hi, reason) == OUTBOX_STOPPED)
                return OUTBOX_STOPPED;
            outbox__stat_add(ob, &ob->stats.dead, 1);
            outbox__dead_logged(ob, reason, false);
            return OUTBOX_DONE;
        }
        outbox__sink_failed(ob, err, hi - lo);
        if (outbox__backoff(ob))
            return OUTBOX_STOPPED;
    }
}

/* ---- the thread ----------------------------------------------------------- */

/* Rows are arriving steadily: the last two wakes both fell within the
 * batch delay, so waiting that long should fill the batch. */
static bool outbox__busy(outbox *ob)
{
    if (ob->o.batch_delay_ms <= 0)
        return false;
    pthread_mutex_lock(&ob->lock);
    int64_t before_last = ob->wake_ms[1];
    pthread_mutex_unlock(&ob->lock);
    return before_last && outbox__mono_ms() - before_last <= ob->o.batch_delay_ms;
}

static void *outbox__thread(void *arg)
{
    outbox *ob = arg;
    for (;;) {
        pthread_mutex_lock(&ob->lock);
        bool stopping = ob->stopping;
        uint64_t seen = ob->wakes;
        pthread_mutex_unlock(&ob->lock);
        if (stopping)
            break;
        bool full;
        long n = outbox__read(ob, &full);
        if (n < 0) {
            if (outbox__backoff(ob))
                break;
            continue;
        }
        outbox__db_ok(ob);
        if (n == 0) {
            outbox__refresh_stats(ob);
            if (outbox__wait(ob, outbox__mono_ms() + ob->o.poll_ms, true, seen))
                break;
            continue;
        }
        if (!full && outbox__busy(ob)) {
            if (outbox__wait(ob, outbox__mono_ms() + ob->o.batch_delay_ms, false, 0))
                break;
            n = outbox__read(ob, &full);
            if (n <= 0)
                continue;
        }
        if (outbox__deliver(ob, 0, (size_t)n) == OUTBOX_STOPPED)
            break;
        outbox__refresh_stats(ob);
        if (!full && outbox__wait(ob, outbox__mono_ms() + ob->o.poll_ms, true, seen))
            break;
    }
    return NULL;
}

/* ---- public --------------------------------------------------------------- */

static void outbox__defaults(outbox_options *o, const outbox_options *in)
{
    outbox_options z = {0};
    if (!in)
        in = &z;
    o->batch_rows = in->batch_rows ? in->batch_rows : OUTBOX_DEFAULT_ROWS;
    o->batch_bytes = in->batch_bytes ? in->batch_bytes : OUTBOX_DEFAULT_BYTES;
    o->batch_delay_ms = in->batch_delay_ms ? in->batch_delay_ms : OUTBOX_DEFAULT_DELAY_MS;
    o->retry_min_ms = in->retry_min_ms > 0 ? in->retry_min_ms : OUTBOX_DEFAULT_RETRY_MIN_MS;
    o->retry_max_ms = in->retry_max_ms > 0 ? in->retry_max_ms : OUTBOX_DEFAULT_RETRY_MAX_MS;
    if (o->retry_max_ms < o->retry_min_ms)
        o->retry_max_ms = o->retry_min_ms;
    o->poll_ms = in->poll_ms > 0 ? in->poll_ms : OUTBOX_DEFAULT_POLL_MS;
    if (o->batch_rows > INT64_MAX)
        o->batch_rows = INT64_MAX;
}

static void outbox__free(outbox *ob)
{
    for (int i = 0; i < OS_COUNT; i++)
        sqlite3_finalize(ob->st[i]);
    if (ob->db && sqlite3_close(ob->db) != SQLITE_OK)
        LOG_ERROR("outbox: closing %s: %s", ob->path, sqlite3_errmsg(ob->db));
    sink_close(ob->sk);
    pthread_cond_destroy(&ob->cond);
    pthread_mutex_destroy(&ob->lock);
    gmq_free(ob->rows);
    gmq_free(ob->body);
    gmq_free(ob->path);
    gmq_free(ob);
}

static int outbox__open_db(outbox *ob, char *err, size_t errlen)
{
    int rc = sqlite3_open_v2(ob->path, &ob->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX,
                             NULL);
    if (rc != SQLITE_OK) {
        snprintf(err, errlen, "outbox: cannot open %s: %s", ob->path,
                 ob->db ? sqlite3_errmsg(ob->db) : sqlite3_errstr(rc));
        return -1;
    }
    sqlite3_extended_result_codes(ob->db, 1);
    sqlite3_busy_timeout(ob->db, OUTBOX_BUSY_TIMEOUT_MS);
    /* Per connection. In WAL mode NORMAL loses, on a power cut, only the
     * latest transactions, whole: a delete lost means a replay. */
    if (sqlite3_exec(ob->db, "PRAGMA synchronous = NORMAL", NULL, NULL, NULL) != SQLITE_OK) {
        snprintf(err, errlen, "outbox: %s: %s", ob->path, sqlite3_errmsg(ob->db));
        return -1;
    }
    for (int i = 0; i < OS_COUNT; i++) {
        rc = sqlite3_prepare_v3(ob->db, outbox__sql[i], -1, SQLITE_PREPARE_PERSISTENT,
                                &ob->st[i], NULL);
        if (rc != SQLITE_OK) {
            snprintf(err, errlen, "outbox: %s: preparing \"%s\": %s", ob->path, outbox__sql[i],
                     sqlite3_errmsg(ob->db));
            return -1;
        }
    }
    return 0;
}

outbox *outbox_start(const char *db_path, sink *sk, const outbox_options *o, char *err,
                     size_t errlen)
{
    if (!sk) {
        snprintf(err, errlen, "outbox: no sink");
        return NULL;
    }
    outbox *ob = gmq_calloc(1, sizeof(*ob));
    if (!ob) {
        snprintf(err, errlen, "no memory");
        sink_close(sk);
        return NULL;
    }
    ob->sk = sk;
    pthread_condattr_t ca;
    if (pthread_mutex_init(&ob->lock, NULL)) {
        snprintf(err, errlen, "outbox: cannot create a mutex");
        sink_close(sk);
        gmq_free(ob);
        return NULL;
    }
    if (pthread_condattr_init(&ca) || pthread_condattr_setclock(&ca, CLOCK_MONOTONIC) ||
        pthread_cond_init(&ob->cond, &ca)) {
        snprintf(err, errlen, "outbox: cannot create a condition variable");
        pthread_mutex_destroy(&ob->lock);
        sink_close(sk);
        gmq_free(ob);
        return NULL;
    }
    pthread_condattr_destroy(&ca);
    /* From here on outbox__free undoes everything. */
    outbox__defaults(&ob->o, o);
    ob->backoff_ms = ob->o.retry_min_ms;
    ob->stats.sink_up = true;
    ob->path = gmq_strdup(db_path);
    if (!ob->path) {
        snprintf(err, errlen, "no memory");
        goto fail;
    }
    if (outbox__open_db(ob, err, errlen))
        goto fail;
    outbox__refresh_stats(ob);
    if (pthread_create(&ob->thread, NULL, outbox__thread, ob)) {
        snprintf(err, errlen, "outbox: cannot start the drain thread");
        goto fail;
    }
    LOG_INFO("outbox: draining %s to sink %s (%llu row(s) waiting)", ob->path, sk->ops->name,
             (unsigned long long)ob->stats.rows);
    return ob;
fail:
    outbox__free(ob);
    return NULL;
}

void outbox_wake(outbox *ob)
{
    if (!ob)
        return;
    int64_t now = outbox__mono_ms();
    pthread_mutex_lock(&ob->lock);
    ob->wakes++;
    ob->wake_ms[1] = ob->wake_ms[0];
    ob->wake_ms[0] = now;
    pthread_cond_signal(&ob->cond);
    pthread_mutex_unlock(&ob->lock);
}

void outbox_on_commit(void *ob)
{
    outbox_wake(ob);
}

void outbox_get_stats(outbox *ob, outbox_stats *out)
{
    memset(out, 0, sizeof(*out));
    if (!ob)
        return;
    pthread_mutex_lock(&ob->lock);
    *out = ob->stats;
    int64_t oldest = ob->oldest_received;
    pthread_mutex_unlock(&ob->lock);
    out->lag_ms = 0;
    if (out->rows) {
        int64_t lag = outbox__wall_ms() - oldest;
        out->lag_ms = lag > 0 ? lag : 0;
    }
}

void outbox_stop(outbox *ob)
{
    if (!ob)
        return;
    pthread_mutex_lock(&ob->lock);
    ob->stopping = true;
    pthread_cond_broadcast(&ob->cond);
    pthread_mutex_unlock(&ob->lock);
    pthread_join(ob->thread, NULL);
    outbox__dead_logged(ob, NULL, true);
    LOG_INFO("outbox: %s stopped: %llu point(s) sent, %llu dead, %llu failure(s), %llu row(s) "
             "waiting",
             ob->path, (unsigned long long)ob->stats.sent, (unsigned long long)ob->stats.dead,
             (unsigned long long)ob->stats.failures, (unsigned long long)ob->stats.rows);
    outbox__free(ob);
}
