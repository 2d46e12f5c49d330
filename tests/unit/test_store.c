/* Unit tests for the durable store (store/store.c): schema, round trips
 * through close and reopen, group commit on the store thread, recovery from
 * damaged files, and survival of committed writes across a kill. Each test
 * works in its own temporary directory. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <fcntl.h>
#include <glob.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "broker/alloc.h"
#include "store/store.h"
#include "store/store_test.h"

#include "tempdir.h"

typedef struct fixture {
    char dir[256];
    char path[300];
    struct ev_loop *loop;
} fixture;

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof(*f));
    if (tempdir_make(f->dir, sizeof(f->dir), "gatemq-store") != 0) {
        free(f);
        return -1;
    }
    snprintf(f->path, sizeof(f->path), "%s/gatemq.db", f->dir);
    f->loop = ev_loop_new(EVFLAG_AUTO);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    tempdir_remove(f->dir);
    ev_loop_destroy(f->loop);
    free(f);
    return 0;
}

static store *open_store(fixture *f, enum store_sync sync)
{
    char err[512] = "";
    store *s = store_open(f->path, sync, err, sizeof(err));
    if (!s)
        print_error("store_open: %s\n", err);
    return s;
}

/* ---- waiting for commits, with a deadline --------------------------------- */

typedef struct commits {
    struct ev_loop *loop;
    store *s;
    uint64_t target;
    uint64_t last;
    unsigned calls;
    bool went_backwards;
    bool ran_ahead; /* on_commit reported more than was queued */
    sqlite3 *reader; /* when set: check every reported write is visible */
    bool not_visible;
} commits;

static void on_commit(void *arg, uint64_t seq)
{
    commits *c = arg;
    if (seq <= c->last)
        c->went_backwards = true;
    if (seq > store_last_queued(c->s) || store_last_committed(c->s) < seq)
        c->ran_ahead = true;
    if (c->reader) {
        /* Writes in these tests are messages whose id is their sequence
         * number: every id up to seq must be readable by another
         * connection. */
        sqlite3_stmt *st;
        sqlite3_prepare_v2(c->reader, "SELECT count(*) FROM messages WHERE id <= ?1", -1, &st,
                           NULL);
        sqlite3_bind_int64(st, 1, (sqlite3_int64)seq);
        if (sqlite3_step(st) != SQLITE_ROW || (uint64_t)sqlite3_column_int64(st, 0) != seq)
            c->not_visible = true;
        sqlite3_finalize(st);
    }
    c->last = seq;
    c->calls++;
    if (seq >= c->target)
        ev_break(c->loop, EVBREAK_ONE);
}

static void on_deadline(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)w;
    (void)revents;
    ev_break(loop, EVBREAK_ONE);
}

/* Run the loop until on_commit reports target, or the deadline passes. */
static bool await_commit(commits *c, uint64_t target, double seconds)
{
    if (c->last >= target)
        return true;
    c->target = target;
    ev_timer deadline;
    ev_timer_init(&deadline, on_deadline, seconds, 0);
    ev_timer_start(c->loop, &deadline);
    ev_run(c->loop, 0);
    ev_timer_stop(c->loop, &deadline);
    return c->last >= target;
}

static store *start_store(fixture *f, enum store_sync sync, commits *c)
{
    store *s = open_store(f, sync);
    if (!s)
        return NULL;
    *c = (commits){.loop = f->loop, .s = s};
    if (store_start(s, f->loop, on_commit, c)) {
        store_close(s);
        return NULL;
    }
    return s;
}

/* ---- recording what store_load reports ------------------------------------ */

typedef struct record {
    char *text;
    size_t len, cap;
    int stop_after; /* > 0: return non-zero from that callback on */
    int calls;
} record;

static void rec_printf(record *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void rec_printf(record *r, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (r->len + (size_t)n + 1 > r->cap) {
        r->cap = (r->len + (size_t)n + 1) * 2;
        r->text = realloc(r->text, r->cap);
    }
    va_start(ap, fmt);
    vsnprintf(r->text + r->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    r->len += (size_t)n;
}

static uint64_t fnv1a(const uint8_t *p, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++)
        h = (h ^ p[i]) * 0x100000001b3ull;
    return h;
}

static int rec_result(record *r)
{
    r->calls++;
    return r->stop_after > 0 && r->calls >= r->stop_after;
}

/* Payloads are recorded by length and hash: byte-exact, and short. */
static int rec_message(void *arg, uint64_t id, const char *topic, size_t topic_len,
                       const uint8_t *payload, size_t payload_len, uint8_t qos, bool retain)
{
    assert_non_null(payload);
    rec_printf(arg, "message %llu [%.*s] %zu:%016llx q%u r%d\n", (unsigned long long)id,
               (int)topic_len, topic, payload_len, (unsigned long long)fnv1a(payload, payload_len),
               qos, retain);
    return rec_result(arg);
}

static int rec_retained(void *arg, const char *topic, size_t topic_len, const uint8_t *payload,
                        size_t payload_len, uint8_t qos)
{
    assert_non_null(payload);
    rec_printf(arg, "retained [%.*s] %zu:%016llx q%u\n", (int)topic_len, topic, payload_len,
               (unsigned long long)fnv1a(payload, payload_len), qos);
    return rec_result(arg);
}

static int rec_session(void *arg, const char *client_id, int64_t last_seen, int kind,
                       const char *username, int64_t offline_since)
{
    if (kind || username)
        rec_printf(arg, "session %s %lld kind %d user %s", client_id, (long long)last_seen, kind,
                   username ? username : "-");
    else
        rec_printf(arg, "session %s %lld", client_id, (long long)last_seen);
    if (offline_since)
        rec_printf(arg, " offline %lld", (long long)offline_since);
    rec_printf(arg, "\n");
    return rec_result(arg);
}

static int rec_subscription(void *arg, const char *client_id, const char *filter, uint8_t qos)
{
    rec_printf(arg, "  sub %s %s q%u\n", client_id, filter, qos);
    return rec_result(arg);
}

static int rec_delivery(void *arg, const char *client_id, uint64_t seq, uint64_t msg_id,
                        uint8_t qos, bool retain, uint16_t packet_id, int state)
{
    rec_printf(arg, "  delivery %s #%llu msg %llu q%u r%d pid %u state %d\n", client_id,
               (unsigned long long)seq, (unsigned long long)msg_id, qos, retain, packet_id,
               state);
    return rec_result(arg);
}

static int rec_rx(void *arg, const char *client_id, uint16_t packet_id)
{
    rec_printf(arg, "  rx %s %u\n", client_id, packet_id);
    return rec_result(arg);
}

static const store_load_cb rec_cb = {
    .message = rec_message,
    .retained = rec_retained,
    .session = rec_session,
    .subscription = rec_subscription,
    .delivery = rec_delivery,
    .rx_qos2 = rec_rx,
};

/* Reopen the database and return what store_load reports (caller frees). */
static char *reload_with(fixture *f, const store_load_cb *cb)
{
    store *s = open_store(f, STORE_SYNC_NORMAL);
    assert_non_null(s);
    record r = {0};
    rec_printf(&r, "%s", "");
    char err[256];
    assert_int_equal(store_load(s, cb, &r, err, sizeof(err)), 0);
    store_close(s);
    return r.text;
}

static char *reload(fixture *f)
{
    return reload_with(f, &rec_cb);
}

/* Commit everything queued through the store thread, then close. */
static void commit_and_close(store *s, commits *c)
{
    assert_true(await_commit(c, store_last_queued(s), 30));
    assert_int_equal(store_backlog(s), 0);
    store_close(s);
}

static uint8_t *pattern(size_t n, unsigned seed)
{
    uint8_t *p = malloc(n ? n : 1);
    uint32_t x = seed * 2654435761u + 1;
    for (size_t i = 0; i < n; i++) {
        x = x * 1103515245u + 12345u;
        p[i] = (uint8_t)(x >> 16);
    }
    return p;
}

static int64_t user_version(const char *path)
{
    sqlite3 *db;
    sqlite3_stmt *st;
    int64_t v = -1;
    if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK &&
        sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &st, NULL) == SQLITE_OK) {
        if (sqlite3_step(st) == SQLITE_ROW)
            v = sqlite3_column_int64(st, 0);
        sqlite3_finalize(st);
    }
    sqlite3_close(db);
    return v;
}

static size_t count_corrupt_copies(const fixture *f, char *first, size_t firstlen)
{
    char pat[400];
    glob_t g;
    snprintf(pat, sizeof(pat), "%s.corrupt-*", f->path);
    if (glob(pat, 0, NULL, &g) != 0)
        return 0;
    size_t n = 0;
    for (size_t i = 0; i < g.gl_pathc; i++) {
        const char *name = g.gl_pathv[i];
        size_t len = strlen(name);
        if (len > 4 && (strcmp(name + len - 4, "-wal") == 0 || strcmp(name + len - 4, "-shm") == 0))
            continue;
        if (n++ == 0 && first)
            snprintf(first, firstlen, "%s", name);
    }
    globfree(&g);
    return n;
}

/* ---- tests ------------------------------------------------------------------ */

static void open_creates_schema_and_user_version(void **state)
{
    fixture *f = *state;
    store *s = open_store(f, STORE_SYNC_NORMAL);
    assert_non_null(s);
    store_close(s);
    assert_int_equal(user_version(f->path), 4);
    sqlite3 *db;
    assert_int_equal(sqlite3_open_v2(f->path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    static const char *const tables[] = {"messages",   "retained",      "sessions",
                                         "subscriptions", "deliveries", "rx_qos2"};
    for (size_t i = 0; i < sizeof(tables) / sizeof(tables[0]); i++) {
        sqlite3_stmt *st;
        assert_int_equal(sqlite3_prepare_v2(db, "SELECT count(*) FROM sqlite_schema WHERE "
                                                "type = 'table' AND name = ?1",
                                            -1, &st, NULL),
                         SQLITE_OK);
        sqlite3_bind_text(st, 1, tables[i], -1, SQLITE_STATIC);
        assert_int_equal(sqlite3_step(st), SQLITE_ROW);
        assert_int_equal(sqlite3_column_int(st, 0), 1);
        sqlite3_finalize(st);
    }
    sqlite3_stmt *st;
    assert_int_equal(sqlite3_prepare_v2(db, "PRAGMA journal_mode", -1, &st, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    assert_string_equal((const char *)sqlite3_column_text(st, 0), "wal");
    sqlite3_finalize(st);
    sqlite3_close(db);
}

static void reopen_keeps_data(void **state)
{
    fixture *f = *state;
    commits c;
    store *s = start_store(f, STORE_SYNC_FULL, &c);
    assert_non_null(s);
    assert_int_equal(store_put_session(s, "dev-1", 42, 0, NULL), 0);
    commit_and_close(s, &c);
    for (int i = 0; i < 2; i++) { /* open and close without writing keeps it too */
        char *text = reload(f);
        assert_string_equal(text, "session dev-1 42\n");
        free(text);
    }
}

static int rec_clock(void *arg, const char *device, int64_t offset_ms, int64_t updated_ms)
{
    rec_printf(arg, "clock %s %lld %lld\n", device, (long long)offset_ms, (long long)updated_ms);
    return rec_result(arg);
}

static int rec_presence(void *arg, const char *device, bool online, int64_t since_ms,
                        bool notified)
{
    rec_printf(arg, "presence %s %d %lld %d\n", device, online, (long long)since_ms, notified);
    return rec_result(arg);
}

static int64_t count_rows(const char *path, const char *sql)
{
    sqlite3 *db;
    sqlite3_stmt *st;
    int64_t n = -1;
    if (sqlite3_open(path, &db) == SQLITE_OK &&
        sqlite3_prepare_v2(db, sql, -1, &st, NULL) == SQLITE_OK) {
        if (sqlite3_step(st) == SQLITE_ROW)
            n = sqlite3_column_int64(st, 0);
        sqlite3_finalize(st);
    }
    sqlite3_close(db);
    return n;
}

/* Telemetry rows, dead letters, clock offsets and presence are written
 * with bound values; offsets and presence load back, the last write wins. */
static void telemetry_tables_round_trip(void **state)
{
    fixture *f = *state;
    commits c;
    store *s = start_store(f, STORE_SYNC_NORMAL, &c);
    assert_non_null(s);
    const char *line = "telemetry,company=acme,device=gw-1 temp=21.5 1733300000123";
    assert_int_equal(store_put_outbox(s, "acme/gw-1", 1733300000200, line, strlen(line)), 0);
    assert_int_equal(store_put_outbox(s, "acme/gw-1", 1733300000300, line, strlen(line)), 0);
    const uint8_t bad[] = {'{', 0, 'x'};
    assert_int_equal(store_put_dead_letter(s, "acme/gw-1", 5, "telemetry/gw-1", bad, 3,
                                           "not JSON: '; DROP TABLE outbox;--"),
                     0);
    assert_int_equal(store_put_clock(s, "acme/gw-1", -300000, 10), 0);
    assert_int_equal(store_put_clock(s, "acme/gw-1", -299990, 11), 0);
    assert_int_equal(store_put_presence(s, "globex/gw-9", false, 1234, true), 0);
    commit_and_close(s, &c);
    assert_int_equal(count_rows(f->path, "SELECT count(*) FROM outbox"), 2);
    assert_int_equal(count_rows(f->path, "SELECT length(payload) FROM dead_letters"), 3);
    assert_int_equal(count_rows(f->path, "SELECT count(*) FROM dead_letters WHERE reason = "
                                         "'not JSON: ''; DROP TABLE outbox;--'"),
                     1);
    store_load_cb cb = rec_cb;
    cb.clock = rec_clock;
    cb.presence = rec_presence;
    char *text = reload_with(f, &cb);
    assert_string_equal(text, "clock acme/gw-1 -299990 11\npresence globex/gw-9 0 1234 1\n");
    free(text);
}

static void session_principal_round_trips(void **state)
{
    fixture *f = *state;
    commits c;
    store *s = start_store(f, STORE_SYNC_NORMAL, &c);
    assert_non_null(s);
    assert_int_equal(store_put_session(s, "acme/gw-1", 7, 3, NULL), 0);
    assert_int_equal(store_put_session(s, "acme/ops-1", 8, 2, "alice'; DROP TABLE x;--"), 0);
    commit_and_close(s, &c);
    char *text = reload(f);
    assert_string_equal(text, "session acme/gw-1 7 kind 3 user -\n"
                              "session acme/ops-1 8 kind 2 user alice'; DROP TABLE x;--\n");
    free(text);
}

/* When a session's client went away is kept (Unix ms), and cleared when
 * the session is put again (its client is back); an offline time for a
 * client id without a session row adds none. */
static void session_offline_time_round_trips(void **state)
{
    fixture *f = *state;
    commits c;
    store *s = start_store(f, STORE_SYNC_NORMAL, &c);
    assert_non_null(s);
    assert_int_equal(store_put_session(s, "acme/gw-1", 7, 3, NULL), 0);
    assert_int_equal(store_put_session_offline(s, "acme/gw-1", 1700000000123), 0);
    assert_int_equal(store_put_session(s, "acme/gw-2", 8, 3, NULL), 0);
    assert_int_equal(store_put_session_offline(s, "acme/gw-2", 1700000000456), 0);
    assert_int_equal(store_put_session(s, "acme/gw-2", 9, 3, NULL), 0); /* back online */
    assert_int_equal(store_put_session_offline(s, "acme/none", 5), 0);
    commit_and_close(s, &c);
    char *text = reload(f);
    assert_string_equal(text, "session acme/gw-1 7 kind 3 user - offline 1700000000123\n"
                              "session acme/gw-2 9 kind 3 user -\n");
    free(text);
}

/* A database of schema version 3 (sessions without offline_since) is
 * migrated to version 4 in place: its sessions load with no offline time,
 * and one can be recorded afterwards. */
static void version_3_database_is_migrated_forward(void **state)
{
    fixture *f = *state;
    commits c;
    store *s = start_store(f, STORE_SYNC_NORMAL, &c);
    assert_non_null(s);
    assert_int_equal(store_put_session(s, "acme/gw-1", 7, 3, NULL), 0);
    assert_int_equal(store_put_subscription(s, "acme/gw-1", "acme/config/#", 1), 0);
    commit_and_close(s, &c);
    /* Back to exactly the version 3 schema. */
    sqlite3 *db;
    assert_int_equal(sqlite3_open(f->path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db,
                                  "ALTER TABLE sessions DROP COLUMN offline_since;"
                                  "PRAGMA user_version = 3;",
                                  NULL, NULL, NULL),
                     SQLITE_OK);
    sqlite3_close(db);
    assert_int_equal(user_version(f->path), 3);
    char *text = reload(f);
    assert_string_equal(text, "session acme/gw-1 7 kind 3 user -\n  sub acme/gw-1 acme/config/# q1\n");
    free(text);
    assert_int_equal(user_version(f->path), 4);
    s = start_store(f, STORE_SYNC_NORMAL, &c);
    assert_non_null(s);
    assert_int_equal(store_put_session_offline(s, "acme/gw-1", 42), 0);
    commit_and_close(s, &c);
    text = reload(f);
    assert_string_equal(text,
                        "session acme/gw-1 7 kind 3 user - offline 42\n  sub acme/gw-1 acme/config/# q1\n");
    free(text);
}

/* A database written by schema version 1 is migrated forward in place and
 * keeps its rows; the sessions it holds have no recorded principal. */
static void version_1_database_is_migrated_forward(void **state)
{
    fixture *f = *state;
    sqlite3 *db;
    assert_int_equal(sqlite3_open(f->path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db,
                                  "CREATE TABLE messages(id INTEGER PRIMARY KEY, topic TEXT NOT NULL,"
                                  " payload BLOB NOT NULL, qos INTEGER NOT NULL, retain INTEGER NOT NULL);"
                                  "CREATE TABLE retained(topic TEXT PRIMARY KEY, qos INTEGER NOT NULL,"
                                  " payload BLOB NOT NULL);"
                                  "CREATE TABLE sessions(client_id TEXT PRIMARY KEY,"
                                  " last_seen INTEGER NOT NULL) WITHOUT ROWID;"
                                  "CREATE TABLE subscriptions(client_id TEXT NOT NULL, filter TEXT NOT NULL,"
                                  " qos INTEGER NOT NULL, PRIMARY KEY(client_id, filter)) WITHOUT ROWID;"
                                  "CREATE TABLE deliveries(client_id TEXT NOT NULL, seq INTEGER NOT NULL,"
                                  " msg_id INTEGER NOT NULL, qos INTEGER NOT NULL, retain INTEGER NOT NULL,"
                                  " packet_id INTEGER NOT NULL, state INTEGER NOT NULL,"
                                  " PRIMARY KEY(client_id, seq)) WITHOUT ROWID;"
                                  "CREATE TABLE rx_qos2(client_id TEXT NOT NULL, packet_id INTEGER NOT NULL,"
                                  " PRIMARY KEY(client_id, packet_id)) WITHOUT ROWID;"
                                  "INSERT INTO sessions VALUES('/old', 5);"
                                  "INSERT INTO subscriptions VALUES('/old', 'a/#', 1);"
                                  "PRAGMA user_version = 1;",
                                  NULL, NULL, NULL),
                     SQLITE_OK);
    sqlite3_close(db);
    char *text = reload(f);
    assert_string_equal(text, "session /old 5\n  sub /old a/# q1\n");
    free(text);
    assert_int_equal(user_version(f->path), 4);
}

static void every_write_kind_round_trips_in_load_order(void **state)
{
    fixture *f = *state;
    commits c;
    store *s = start_store(f, STORE_SYNC_NORMAL, &c);
    assert_non_null(s);
    const uint8_t hello[] = "hello";
    /* messages: loaded by id, the deleted one absent */
    assert_int_equal(store_put_message(s, 7, "a/b", 3, hello, 5, 1, false), 0);
    assert_int_equal(store_put_message(s, 1ull << 40, "big/id", 6, hello, 2, 2, true), 0);
    assert_int_equal(store_put_message(s, 3, "c", 1, hello, 1, 0, true), 0);
    assert_int_equal(store_put_message(s, 9, "gone", 4, hello, 5, 1, false), 0);
    assert_int_equal(store_del_message(s, 9), 0);
    /* retained: loaded by topic; replaced; deleted */
    assert_int_equal(store_put_retained(s, "r/2", 3, hello, 5, 1), 0);
    assert_int_equal(store_put_retained(s, "r/1", 3, hello, 4, 0), 0);
    assert_int_equal(store_put_retained(s, "r/1", 3, hello, 3, 2), 0);
    assert_int_equal(store_put_retained(s, "r/0", 3, hello, 5, 1), 0);
    assert_int_equal(store_del_retained(s, "r/0", 3), 0);
    /* sessions, queued out of order */
    assert_int_equal(store_put_session(s, "zeta", 200, 0, NULL), 0);
    assert_int_equal(store_put_session(s, "alpha", 100, 0, NULL), 0);
    assert_int_equal(store_put_session(s, "alpha", 150, 0, NULL), 0);
    assert_int_equal(store_put_subscription(s, "alpha", "b/#", 1), 0);
    assert_int_equal(store_put_subscription(s, "alpha", "a/+", 2), 0);
    assert_int_equal(store_put_subscription(s, "alpha", "c", 0), 0);
    assert_int_equal(store_del_subscription(s, "alpha", "c"), 0);
    assert_int_equal(store_put_subscription(s, "zeta", "z", 1), 0);
    assert_int_equal(store_put_delivery(s, "alpha", 3, 7, 1, false, 12, STORE_WAIT_PUBACK), 0);
    assert_int_equal(store_put_delivery(s, "alpha", 1, 3, 0, true, 0, STORE_QUEUED), 0);
    assert_int_equal(store_put_delivery(s, "alpha", 2, 1ull << 40, 2, true, 65535,
                                        STORE_WAIT_PUBCOMP),
                     0);
    assert_int_equal(store_put_delivery(s, "alpha", 5, 7, 1, false, 13, STORE_WAIT_PUBREC), 0);
    assert_int_equal(store_del_delivery(s, "alpha", 5), 0);
    assert_int_equal(store_put_delivery(s, "zeta", 1, 7, 2, false, 1, STORE_WAIT_PUBREC), 0);
    assert_int_equal(store_put_rx_qos2(s, "alpha", 10), 0);
    assert_int_equal(store_put_rx_qos2(s, "alpha", 5), 0);
    assert_int_equal(store_put_rx_qos2(s, "alpha", 5), 0); /* idempotent */
    assert_int_equal(store_put_rx_qos2(s, "alpha", 7), 0);
    assert_int_equal(store_del_rx_qos2(s, "alpha", 7), 0);
    assert_int_equal(store_put_rx_qos2(s, "zeta", 65535), 0);
    commit_and_close(s, &c);

    char h5[40], h3[40], h2[40], h1[40];
    snprintf(h5, sizeof(h5), "5:%016llx", (unsigned long long)fnv1a(hello, 5));
    snprintf(h3, sizeof(h3), "3:%016llx", (unsigned long long)fnv1a(hello, 3));
    snprintf(h2, sizeof(h2), "2:%016llx", (unsigned long long)fnv1a(hello, 2));
    snprintf(h1, sizeof(h1), "1:%016llx", (unsigned long long)fnv1a(hello, 1));
    char expected[2048];
    snprintf(expected, sizeof(expected),
             "message 3 [c] %s q0 r1\n"
             "message 7 [a/b] %s q1 r0\n"
             "message 1099511627776 [big/id] %s q2 r1\n"
             "retained [r/1] %s q2\n"
             "retained [r/2] %s q1\n"
             "session alpha 150\n"
             "  sub alpha a/+ q2\n"
             "  sub alpha b/# q1\n"
             "  delivery alpha #1 msg 3 q0 r1 pid 0 state 0\n"
             "  delivery alpha #2 msg 1099511627776 q2 r1 pid 65535 state 3\n"
             "  delivery alpha #3 msg 7 q1 r0 pid 12 state 1\n"
             "  rx alpha 5\n"
             "  rx alpha 10\n"
             "session zeta 200\n"
             "  sub zeta z q1\n"
             "  delivery zeta #1 msg 7 q2 r0 pid 1 state 2\n"
             "  rx zeta 65535\n",
             h1, h5, h2, h3, h5);
    char *text = reload(f);
    assert_string_equal(text, expected);
    free(text);
}

static void payloads_round_trip_byte_exact(void **state)
{
    fixture *f = *state;
    commits c;
    store *s = start_store(f, STORE_SYNC_NORMAL, &c);
    assert_non_null(s);
    size_t big_len = 5u << 20;
    uint8_t *big = pattern(big_len, 1);
    const uint8_t binary[] = {0, 1, 0, 0xff, 0xfe, 0, '\'', ';'};
    assert_int_equal(store_put_message(s, 1, "big", 3, big, big_len, 1, false), 0);
    assert_int_equal(store_put_message(s, 2, "empty", 5, NULL, 0, 1, false), 0);
    assert_int_equal(store_put_message(s, 3, "nul", 3, binary, sizeof(binary), 1, false), 0);
    assert_int_equal(store_put_retained(s, "big", 3, big, big_len, 1), 0);
    assert_int_equal(store_put_retained(s, "empty", 5, (const uint8_t *)"", 0, 0), 0);
    commit_and_close(s, &c);

    char expected[1024];
    snprintf(expected, sizeof(expected),
             "message 1 [big] %zu:%016llx q1 r0\n"
             "message 2 [empty] 0:%016llx q1 r0\n"
             "message 3 [nul] %zu:%016llx q1 r0\n"
             "retained [big] %zu:%016llx q1\n"
             "retained [empty] 0:%016llx q0\n",
             big_len, (unsigned long long)fnv1a(big, big_len),
             (unsigned long long)fnv1a(NULL, 0), sizeof(binary),
             (unsigned long long)fnv1a(binary, sizeof(binary)), big_len,
             (unsigned long long)fnv1a(big, big_len), (unsigned long long)fnv1a(NULL, 0));
    char *text = reload(f);
    assert_string_equal(text, expected);
    free(text);
    free(big);
}

static void topics_with_quotes_semicolons_and_utf8_are_bound_not_parsed(void **state)
{
    fixture *f = *state;
    static const char *const odd[] = {
        "it's/\"quoted\"/;DROP TABLE retained;--",
        "'); DELETE FROM sessions; --",
        "caf\xc3\xa9/\xe2\x82\xac/\xf0\x9f\x98\x80/\xe2\x80\x8f/\xef\xbb\xbf",
        "%s%n%x/?1/:name/@x/$y",
        "back\\slash/\ttab/ spaces /",
    };
    enum { N = sizeof(odd) / sizeof(odd[0]) };
    commits c;
    store *s = start_store(f, STORE_SYNC_NORMAL, &c);
    assert_non_null(s);
    for (int i = 0; i < N; i++) {
        size_t len = strlen(odd[i]);
        assert_int_equal(store_put_retained(s, odd[i], len, (const uint8_t *)odd[i], len, 1), 0);
        assert_int_equal(store_put_session(s, odd[i], i, 0, NULL), 0);
        assert_int_equal(store_put_subscription(s, odd[i], odd[i], 2), 0);
    }
    commit_and_close(s, &c);

    /* Expected order: by bytes, as memcmp sorts them. */
    const char *sorted[N];
    memcpy(sorted, odd, sizeof(sorted));
    for (int i = 1; i < N; i++)
        for (int j = i; j > 0 && strcmp(sorted[j - 1], sorted[j]) > 0; j--) {
            const char *t = sorted[j];
            sorted[j] = sorted[j - 1];
            sorted[j - 1] = t;
        }
    record want = {0};
    rec_printf(&want, "%s", "");
    for (int i = 0; i < N; i++) {
        size_t len = strlen(sorted[i]);
        rec_printf(&want, "retained [%s] %zu:%016llx q1\n", sorted[i], len,
                   (unsigned long long)fnv1a((const uint8_t *)sorted[i], len));
    }
    for (int i = 0; i < N; i++) {
        int index = 0;
        while (odd[index] != sorted[i])
            index++;
        rec_printf(&want, "session %s %d\n  sub %s %s q2\n", sorted[i], index, sorted[i],
                   sorted[i]);
    }
    char *text = reload(f);
    assert_string_equal(text, want.text);
    free(text);
    free(want.text);
}

static void del_session_removes_only_its_own_rows(void **state)
{
    fixture *f = *state;
    commits c;
    store *s = start_store(f, STORE_SYNC_NORMAL, &c);
    assert_non_null(s);
    static const char *const ids[] = {"keep-a", "drop", "keep-b", "drop2"};
    for (int i = 0; i < 4; i++) {
        assert_int_equal(store_put_session(s, ids[i], 1, 0, NULL), 0);
        assert_int_equal(store_put_subscription(s, ids[i], "t/#", 1), 0);
        assert_int_equal(store_put_delivery(s, ids[i], 1, 1, 1, false, 1, STORE_WAIT_PUBACK), 0);
        assert_int_equal(store_put_rx_qos2(s, ids[i], 9), 0);
    }
    assert_int_equal(store_del_session(s, "drop"), 0);
    /* "drop" is a prefix of "drop2": only the exact id goes */
    commit_and_close(s, &c);
    char *text = reload(f);
    assert_string_equal(text, "session drop2 1\n"
                              "  sub drop2 t/# q1\n"
                              "  delivery drop2 #1 msg 1 q1 r0 pid 1 state 1\n"
                              "  rx drop2 9\n"
                              "session keep-a 1\n"
                              "  sub keep-a t/# q1\n"
                              "  delivery keep-a #1 msg 1 q1 r0 pid 1 state 1\n"
                              "  rx keep-a 9\n"
                              "session keep-b 1\n"
                              "  sub keep-b t/# q1\n"
                              "  delivery keep-b #1 msg 1 q1 r0 pid 1 state 1\n"
                              "  rx keep-b 9\n");
    free(text);
    /* and no orphan row of "drop" is left behind in any table */
    sqlite3 *db;
    assert_int_equal(sqlite3_open_v2(f->path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    sqlite3_stmt *st;
    assert_int_equal(sqlite3_prepare_v2(db,
                                        "SELECT (SELECT count(*) FROM subscriptions WHERE "
                                        "client_id = 'drop') + (SELECT count(*) FROM deliveries "
                                        "WHERE client_id = 'drop') + (SELECT count(*) FROM "
                                        "rx_qos2 WHERE client_id = 'drop')",
                                        -1, &st, NULL),
                     SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    assert_int_equal(sqlite3_column_int(st, 0), 0);
    sqlite3_finalize(st);
    sqlite3_close(db);
}

static void put_delivery_on_same_seq_replaces_it(void **state)
{
    fixture *f = *state;
    commits c;
    store *s = start_store(f, STORE_SYNC_NORMAL, &c);
    assert_non_null(s);
    assert_int_equal(store_put_session(s, "c", 1, 0, NULL), 0);
    assert_int_equal(store_put_delivery(s, "c", 4, 10, 2, false, 0, STORE_QUEUED), 0);
    assert_int_equal(store_put_delivery(s, "c", 4, 10, 2, false, 77, STORE_WAIT_PUBREC), 0);
    assert_int_equal(store_put_delivery(s, "c", 4, 10, 2, false, 77, STORE_WAIT_PUBCOMP), 0);
    commit_and_close(s, &c);
    char *text = reload(f);
    assert_string_equal(text, "session c 1\n"
                              "  delivery c #4 msg 10 q2 r0 pid 77 state 3\n");
    free(text);
}

static void writes_commit_in_groups(void **state)
{
    fixture *f = *state;
    commits c;
    store *s = start_store(f, STORE_SYNC_NORMAL, &c);
    assert_non_null(s);
    enum { N = 10000 };
    uint8_t payload[64];
    memset(payload, 'x', sizeof(payload));
    for (uint64_t i = 1; i <= N; i++)
        assert_int_equal(store_put_message(s, i, "g/c", 3, payload, sizeof(payload), 1, false), 0);
    assert_int_equal(store_last_queued(s), N);
    assert_true(await_commit(&c, N, 30));
    assert_int_equal(c.last, N);
    assert_int_equal(store_last_committed(s), N);
    assert_int_equal(store_backlog(s), 0);
    store_stats st;
    store_get_stats(s, &st);
    assert_int_equal(st.writes, N);
    print_message("%d writes in %llu transaction(s)\n", N, (unsigned long long)st.transactions);
    assert_true(st.transactions >= 1);
    assert_true(st.transactions <= N / 10);
    assert_true(c.calls <= st.transactions); /* wake-ups coalesce too */
    store_close(s);
}

/* Writes are queued in slices from a timer while the store thread commits;
 * each on_commit(seq) must be larger than the last and every write up to seq
 * must already be visible to another connection. */
typedef struct producer {
    store *s;
    uint64_t next, total;
} producer;

static void produce(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)revents;
    producer *p = w->data;
    for (int i = 0; i < 97 && p->next <= p->total; i++, p->next++)
        store_put_message(p->s, p->next, "m", 1, (const uint8_t *)"x", 1, 1, false);
    if (p->next > p->total)
        ev_timer_stop(loop, w);
}

static void committed_sequence_is_monotonic_and_covers_earlier_writes(void **state)
{
    fixture *f = *state;
    commits c;
    store *s = start_store(f, STORE_SYNC_NORMAL, &c);
    assert_non_null(s);
    assert_int_equal(sqlite3_open_v2(f->path, &c.reader, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    producer p = {.s = s, .next = 1, .total = 5000};
    ev_timer tick;
    ev_timer_init(&tick, produce, 0.0001, 0.0001);
    tick.data = &p;
    ev_timer_start(f->loop, &tick);
    assert_true(await_commit(&c, p.total, 30));
    ev_timer_stop(f->loop, &tick);
    assert_true(c.calls > 1);
    assert_false(c.went_backwards);
    assert_false(c.ran_ahead);
    assert_false(c.not_visible);
    sqlite3_close(c.reader);
    store_close(s);
}

static void on_commit_is_not_called_after_close(void **state)
{
    fixture *f = *state;
    commits c;
    store *s = start_store(f, STORE_SYNC_NORMAL, &c);
    assert_non_null(s);
    for (uint64_t i = 1; i <= 100; i++)
        store_put_message(s, i, "m", 1, (const uint8_t *)"x", 1, 1, false);
    unsigned calls = c.calls;
    store_close(s); /* commits all 100, reports none of it */
    ev_run(f->loop, EVRUN_NOWAIT);
    assert_int_equal(c.calls, calls);
    char *text = reload(f);
    assert_int_equal(strlen(text) > 0, 1);
    assert_non_null(strstr(text, "message 100 "));
    free(text);
}

static void writes_queued_before_start_commit_at_close(void **state)
{
    fixture *f = *state;
    store *s = open_store(f, STORE_SYNC_NORMAL);
    assert_non_null(s);
    assert_int_equal(store_put_session(s, "early", 5, 0, NULL), 0);
    assert_int_equal(store_last_queued(s), 1);
    assert_int_equal(store_backlog(s), 1);
    store_close(s);
    char *text = reload(f);
    assert_string_equal(text, "session early 5\n");
    free(text);
}

static void failed_commit_is_rolled_back_and_retried(void **state)
{
    fixture *f = *state;
    commits c;
    store *s = start_store(f, STORE_SYNC_NORMAL, &c);
    assert_non_null(s);
    store_test_fail_commits(s, 3);
    assert_int_equal(store_put_session(s, "retry", 1, 0, NULL), 0);
    assert_int_equal(store_put_subscription(s, "retry", "x", 1), 0);
    assert_true(await_commit(&c, store_last_queued(s), 30));
    store_stats st;
    store_get_stats(s, &st);
    assert_true(st.failures >= 3);
    assert_int_equal(st.writes, 2);
    assert_int_equal(st.dropped, 0);
    store_close(s);
    char *text = reload(f);
    assert_string_equal(text, "session retry 1\n  sub retry x q1\n");
    free(text);
}

static void load_stops_when_a_callback_says_so(void **state)
{
    fixture *f = *state;
    commits c;
    store *s = start_store(f, STORE_SYNC_NORMAL, &c);
    assert_non_null(s);
    for (int i = 0; i < 3; i++) {
        char id[16];
        snprintf(id, sizeof(id), "s%d", i);
        store_put_session(s, id, i, 0, NULL);
    }
    commit_and_close(s, &c);
    s = open_store(f, STORE_SYNC_NORMAL);
    assert_non_null(s);
    record r = {.stop_after = 2};
    char err[256] = "";
    assert_int_equal(store_load(s, &rec_cb, &r, err, sizeof(err)), -1);
    assert_int_equal(r.calls, 2);
    assert_non_null(strstr(err, "stopped"));
    free(r.text);
    /* the store is still usable: a full load works */
    record all = {0};
    assert_int_equal(store_load(s, &rec_cb, &all, err, sizeof(err)), 0);
    assert_int_equal(all.calls, 3);
    free(all.text);
    store_close(s);
}

static void corrupted_header_is_moved_aside_and_fresh_database_opens(void **state)
{
    fixture *f = *state;
    commits c;
    store *s = start_store(f, STORE_SYNC_NORMAL, &c);
    assert_non_null(s);
    store_put_session(s, "lost", 1, 0, NULL);
    commit_and_close(s, &c);
    int fd = open(f->path, O_WRONLY);
    assert_true(fd >= 0);
    char garbage[100];
    memset(garbage, 0x5a, sizeof(garbage));
    assert_int_equal(pwrite(fd, garbage, sizeof(garbage), 0), (ssize_t)sizeof(garbage));
    close(fd);

    s = open_store(f, STORE_SYNC_NORMAL);
    assert_non_null(s);
    store_close(s);
    char moved[400];
    assert_int_equal(count_corrupt_copies(f, moved, sizeof(moved)), 1);
    FILE *fp = fopen(moved, "rb");
    assert_non_null(fp);
    char head[100];
    assert_int_equal(fread(head, 1, sizeof(head), fp), sizeof(head));
    fclose(fp);
    assert_memory_equal(head, garbage, sizeof(head)); /* the old bytes, untouched */
    assert_int_equal(user_version(f->path), 4);
    char *text = reload(f);
    assert_string_equal(text, "");
    free(text);
}

static void damaged_page_fails_the_check_and_is_moved_aside(void **state)
{
    fixture *f = *state;
    commits c;
    store *s = start_store(f, STORE_SYNC_NORMAL, &c);
    assert_non_null(s);
    uint8_t *payload = pattern(1000, 2);
    for (uint64_t i = 1; i <= 200; i++)
        store_put_message(s, i, "p", 1, payload, 1000, 1, false);
    free(payload);
    commit_and_close(s, &c);
    /* Overwrite a whole page in the middle of the messages b-tree. */
    int fd = open(f->path, O_WRONLY);
    assert_true(fd >= 0);
    char page[4096];
    memset(page, 0xa5, sizeof(page));
    assert_int_equal(pwrite(fd, page, sizeof(page), 4096 * 2), (ssize_t)sizeof(page));
    close(fd);

    s = open_store(f, STORE_SYNC_NORMAL);
    assert_non_null(s);
    store_close(s);
    assert_int_equal(count_corrupt_copies(f, NULL, 0), 1);
    char *text = reload(f);
    assert_string_equal(text, "");
    free(text);
}

static void empty_file_is_initialised_as_a_new_database(void **state)
{
    fixture *f = *state;
    FILE *fp = fopen(f->path, "wb");
    assert_non_null(fp);
    fclose(fp);
    store *s = open_store(f, STORE_SYNC_NORMAL);
    assert_non_null(s);
    store_close(s);
    assert_int_equal(user_version(f->path), 4);
    assert_int_equal(count_corrupt_copies(f, NULL, 0), 0);
}

static void future_schema_version_is_refused(void **state)
{
    fixture *f = *state;
    store *s = open_store(f, STORE_SYNC_NORMAL);
    assert_non_null(s);
    store_close(s);
    sqlite3 *db;
    assert_int_equal(sqlite3_open(f->path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db, "PRAGMA user_version = 99", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);

    char err[512] = "";
    assert_null(store_open(f->path, STORE_SYNC_NORMAL, err, sizeof(err)));
    assert_non_null(strstr(err, "schema version 99"));
    assert_non_null(strstr(err, "newer"));
    assert_int_equal(count_corrupt_copies(f, NULL, 0), 0); /* refused, not moved aside */
    assert_int_equal(user_version(f->path), 99);
}

static void open_in_missing_directory_fails_with_error(void **state)
{
    fixture *f = *state;
    char path[400], err[512] = "";
    snprintf(path, sizeof(path), "%s/no/such/dir/gatemq.db", f->dir);
    assert_null(store_open(path, STORE_SYNC_NORMAL, err, sizeof(err)));
    assert_non_null(strstr(err, path));
}

/* The child acknowledges (sees on_commit for) a set of writes, queues more,
 * and is killed with SIGKILL: no store_close, no atexit. The parent finds
 * every acknowledged write, and of the rest an in-order prefix. */
static void committed_writes_survive_kill(void **state)
{
    fixture *f = *state;
    enum { ACKED = 3000, EXTRA = 2000 };
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
        commits c;
        char err[256];
        store *s = store_open(f->path, STORE_SYNC_NORMAL, err, sizeof(err));
        if (!s)
            _exit(2);
        c = (commits){.loop = loop, .s = s};
        if (store_start(s, loop, on_commit, &c))
            _exit(3);
        store_put_session(s, "survivor", 1, 0, NULL);
        for (uint64_t i = 1; i <= ACKED; i++)
            store_put_message(s, i, "k", 1, (const uint8_t *)&i, sizeof(i), 1, false);
        if (!await_commit(&c, store_last_queued(s), 30))
            _exit(4);
        for (uint64_t i = ACKED + 1; i <= ACKED + EXTRA; i++)
            store_put_message(s, i, "k", 1, (const uint8_t *)&i, sizeof(i), 1, false);
        raise(SIGKILL);
        _exit(5);
    }
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFSIGNALED(status));
    assert_int_equal(WTERMSIG(status), SIGKILL);

    sqlite3 *db;
    assert_int_equal(sqlite3_open(f->path, &db), SQLITE_OK);
    sqlite3_stmt *st;
    assert_int_equal(sqlite3_prepare_v2(db, "SELECT count(*), min(id), max(id) FROM messages", -1,
                                        &st, NULL),
                     SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    int64_t n = sqlite3_column_int64(st, 0), lo = sqlite3_column_int64(st, 1),
            hi = sqlite3_column_int64(st, 2);
    sqlite3_finalize(st);
    sqlite3_close(db);
    assert_int_equal(lo, 1);
    assert_true(n >= ACKED);
    assert_int_equal(hi, n); /* 1..n with no hole: batches commit in order */

    store *s = open_store(f, STORE_SYNC_NORMAL);
    assert_non_null(s);
    record r = {0};
    char err[256];
    assert_int_equal(store_load(s, &rec_cb, &r, err, sizeof(err)), 0);
    assert_non_null(strstr(r.text, "session survivor 1\n"));
    free(r.text);
    store_close(s);
}

static void put_fails_cleanly_when_allocation_fails(void **state)
{
    fixture *f = *state;
    commits c;
    store *s = start_store(f, STORE_SYNC_NORMAL, &c);
    assert_non_null(s);
    gmq_alloc_fail_at(1);
    assert_int_equal(store_put_message(s, 1, "t", 1, (const uint8_t *)"x", 1, 1, false), -1);
    gmq_alloc_fail_at(1);
    assert_int_equal(store_put_retained(s, "t", 1, (const uint8_t *)"x", 1, 1), -1);
    gmq_alloc_fail_at(1);
    assert_int_equal(store_put_session(s, "c", 1, 0, NULL), -1);
    gmq_alloc_fail_at(1);
    assert_int_equal(store_put_delivery(s, "c", 1, 1, 1, false, 1, 1), -1);
    gmq_alloc_fail_at(1);
    assert_int_equal(store_del_session(s, "c"), -1);
    gmq_alloc_fail_at(0);
    assert_int_equal(store_last_queued(s), 0);
    assert_int_equal(store_backlog(s), 0);
    /* the next write works and is number 1 */
    assert_int_equal(store_put_session(s, "ok", 2, 0, NULL), 0);
    assert_int_equal(store_last_queued(s), 1);
    commit_and_close(s, &c);
    char *text = reload(f);
    assert_string_equal(text, "session ok 2\n");
    free(text);
}

#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(open_creates_schema_and_user_version),
        T(session_principal_round_trips),
        T(telemetry_tables_round_trip),
        T(version_1_database_is_migrated_forward),
        T(session_offline_time_round_trips),
        T(version_3_database_is_migrated_forward),
        T(reopen_keeps_data),
        T(every_write_kind_round_trips_in_load_order),
        T(payloads_round_trip_byte_exact),
        T(topics_with_quotes_semicolons_and_utf8_are_bound_not_parsed),
        T(del_session_removes_only_its_own_rows),
        T(put_delivery_on_same_seq_replaces_it),
        T(writes_commit_in_groups),
        T(committed_sequence_is_monotonic_and_covers_earlier_writes),
        T(on_commit_is_not_called_after_close),
        T(writes_queued_before_start_commit_at_close),
        T(failed_commit_is_rolled_back_and_retried),
        T(load_stops_when_a_callback_says_so),
        T(corrupted_header_is_moved_aside_and_fresh_database_opens),
        T(damaged_page_fails_the_check_and_is_moved_aside),
        T(empty_file_is_initialised_as_a_new_database),
        T(future_schema_version_is_refused),
        T(open_in_missing_directory_fails_with_error),
        T(committed_writes_survive_kill),
        T(put_fails_cleanly_when_allocation_fails),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
