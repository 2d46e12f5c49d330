/*
 * store_db.c - the database file under the store: opening it with an
 * integrity check (moving a damaged file aside), WAL and synchronous
 * settings, and the schema with its forward migrations.
 */
#include <errno.h>
#include <limits.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "broker/log.h"
#include "store/store_int.h"

#define STORE_BUSY_TIMEOUT_MS 5000

/* ---- schema ---------------------------------------------------------------
 *
 * migrations[i] takes the database from user_version i to i + 1 and sets
 * the new version itself; they run in one transaction from the stored
 * version up. retained and messages keep rowid tables because their rows
 * carry payloads (WITHOUT ROWID suits small rows); the per-session tables
 * are WITHOUT ROWID, clustered on (client_id, ...) so that one session's
 * rows are read, and deleted, as one key range.
 */
static const char *const store__migrations[] = {
    /* 0 -> 1 */
    "CREATE TABLE messages("
    "  id INTEGER PRIMARY KEY,"
    "  topic TEXT NOT NULL,"
    "  payload BLOB NOT NULL,"
    "  qos INTEGER NOT NULL,"
    "  retain INTEGER NOT NULL);"
    "CREATE TABLE retained("
    "  topic TEXT PRIMARY KEY,"
    "  qos INTEGER NOT NULL,"
    "  payload BLOB NOT NULL);"
    "CREATE TABLE sessions("
    "  client_id TEXT PRIMARY KEY,"
    "  last_seen INTEGER NOT NULL) WITHOUT ROWID;"
    "CREATE TABLE subscriptions("
    "  client_id TEXT NOT NULL,"
    "  filter TEXT NOT NULL,"
    "  qos INTEGER NOT NULL,"
    "  PRIMARY KEY(client_id, filter)) WITHOUT ROWID;"
    "CREATE TABLE deliveries("
    "  client_id TEXT NOT NULL,"
    "  seq INTEGER NOT NULL,"
    "  msg_id INTEGER NOT NULL,"
    "  qos INTEGER NOT NULL,"
    "  retain INTEGER NOT NULL,"
    "  packet_id INTEGER NOT NULL,"
    "  state INTEGER NOT NULL,"
    "  PRIMARY KEY(client_id, seq)) WITHOUT ROWID;"
    "CREATE TABLE rx_qos2("
    "  client_id TEXT NOT NULL,"
    "  packet_id INTEGER NOT NULL,"
    "  PRIMARY KEY(client_id, packet_id)) WITHOUT ROWID;"
    "PRAGMA user_version = 1;",
    /* 1 -> 2: who a session belongs to, so access rules apply to a restored
     * session before its client comes back. */
    "ALTER TABLE sessions ADD COLUMN kind INTEGER NOT NULL DEFAULT 0;"
    "ALTER TABLE sessions ADD COLUMN username TEXT;"
    "PRAGMA user_version = 2;",
    /* 2 -> 3: the telemetry outbox (drained to the sinks by id), parse and
     * sink failures kept for inspection, per-device clock offsets, and
     * device presence for offline notifications. */
    "CREATE TABLE outbox("
    "  id INTEGER PRIMARY KEY,"
    "  received INTEGER NOT NULL,"
    "  device TEXT NOT NULL,"
    "  line TEXT NOT NULL);"
    "CREATE TABLE dead_letters("
    "  id INTEGER PRIMARY KEY,"
    "  at INTEGER NOT NULL,"
    "  device TEXT NOT NULL,"
    "  topic TEXT,"
    "  payload BLOB,"
    "  reason TEXT NOT NULL);"
    "CREATE TABLE clock("
    "  device TEXT PRIMARY KEY,"
    "  offset_ms INTEGER NOT NULL,"
    "  updated INTEGER NOT NULL) WITHOUT ROWID;"
    "CREATE TABLE presence("
    "  device TEXT PRIMARY KEY,"
    "  online INTEGER NOT NULL,"
    "  since INTEGER NOT NULL,"
    "  notified INTEGER NOT NULL) WITHOUT ROWID;"
    "PRAGMA user_version = 3;",
    /* 3 -> 4: when a persistent session's client went away (Unix ms; NULL
     * while connected), so that session_expiry counts across restarts. */
    "ALTER TABLE sessions ADD COLUMN offline_since INTEGER;"
    "PRAGMA user_version = 4;",
};
#define STORE_SCHEMA_VERSION ((int)(sizeof(store__migrations) / sizeof(store__migrations[0])))

/* ---- opening -------------------------------------------------------------- */

enum store__check_result { CHECK_OK, CHECK_DAMAGED, CHECK_ERROR };

static bool store__rc_means_damaged(int rc)
{
    return (rc & 0xff) == SQLITE_NOTADB || (rc & 0xff) == SQLITE_CORRUPT;
}

/* PRAGMA quick_check: the b-trees are well formed and every row fits its
 * page. A file that is not a database fails already when read. */
static enum store__check_result store__check(sqlite3 *db, char *why, size_t whylen)
{
    sqlite3_stmt *st = NULL;
    enum store__check_result res = CHECK_OK;
    int rc = sqlite3_prepare_v2(db, "PRAGMA quick_check", -1, &st, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        const char *verdict = (const char *)sqlite3_column_text(st, 0);
        if (!verdict || strcmp(verdict, "ok") != 0) {
            gmq_errf(why, whylen, "integrity check: %s", verdict ? verdict : "(no answer)");
            res = CHECK_DAMAGED;
        }
    } else {
        gmq_errf(why, whylen, "%s", sqlite3_errmsg(db));
        res = store__rc_means_damaged(rc) ? CHECK_DAMAGED : CHECK_ERROR;
    }
    sqlite3_finalize(st);
    return res;
}

/* Rename path and its companions (-wal, -shm, -journal) to
 * "<path>.corrupt-<unix time>[-n]" plus the same suffix, so that the copy
 * can still be opened as it was. Writes the new name to moved. */
static int store__move_aside(const char *path, char *moved, size_t movedlen, char *err,
                             size_t errlen)
{
    static const char *const suffix[] = {"", "-wal", "-shm", "-journal"};
    long long now = (long long)time(NULL);
    if (strlen(path) + 40 > movedlen) {
        gmq_errf(err, errlen, "path too long: %s", path);
        return -1;
    }
    for (int n = 0;; n++) {
        if (n)
            snprintf(moved, movedlen, "%s.corrupt-%lld-%d", path, now, n);
        else
            snprintf(moved, movedlen, "%s.corrupt-%lld", path, now);
        if (access(moved, F_OK) != 0)
            break;
        if (n == 1000) {
            gmq_errf(err, errlen, "cannot find a free name to move %s aside", path);
            return -1;
        }
    }
    for (size_t i = 0; i < sizeof(suffix) / sizeof(suffix[0]); i++) {
        char from[PATH_MAX], to[PATH_MAX + 16];
        snprintf(from, sizeof(from), "%s%s", path, suffix[i]);
        snprintf(to, sizeof(to), "%s%s", moved, suffix[i]);
        if (rename(from, to) != 0 && (errno != ENOENT || i == 0)) {
            gmq_errf(err, errlen, "cannot move damaged %s to %s: %s", from, to,
                       strerror(errno));
            return -1;
        }
    }
    return 0;
}

static int store__exec(sqlite3 *db, const char *sql, char *err, size_t errlen)
{
    char *msg = NULL;
    int rc = sqlite3_exec(db, sql, NULL, NULL, &msg);
    if (rc != SQLITE_OK) {
        gmq_errf(err, errlen, "%s", msg ? msg : sqlite3_errstr(rc));
        sqlite3_free(msg);
    }
    return rc;
}

static int store__user_version(sqlite3 *db, int *version)
{
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &st, NULL);
    if (rc == SQLITE_OK && (rc = sqlite3_step(st)) == SQLITE_ROW) {
        *version = sqlite3_column_int(st, 0);
        rc = SQLITE_OK;
    }
    sqlite3_finalize(st);
    return rc;
}

/* Bring the schema to STORE_SCHEMA_VERSION in one transaction; refuse a
 * database written by a newer gatemq rather than guess at its meaning. */
static int store__migrate(sqlite3 *db, const char *path, char *err, size_t errlen)
{
    char why[256] = "";
    int version = 0;
    if (store__exec(db, "BEGIN IMMEDIATE", why, sizeof(why)) != SQLITE_OK) {
        gmq_errf(err, errlen, "%s: cannot start the schema transaction: %s", path, why);
        return -1;
    }
    if (store__user_version(db, &version) != SQLITE_OK) {
        gmq_errf(err, errlen, "%s: cannot read the schema version: %s", path,
                   sqlite3_errmsg(db));
        goto fail;
    }
    if (version > STORE_SCHEMA_VERSION || version < 0) {
        gmq_errf(err, errlen,
                   "%s has schema version %d, but this gatemq knows versions up to %d; "
                   "refusing to open it (was it written by a newer gatemq?)",
                   path, version, STORE_SCHEMA_VERSION);
        goto fail;
    }
    for (int v = version; v < STORE_SCHEMA_VERSION; v++) {
        if (store__exec(db, store__migrations[v], why, sizeof(why)) != SQLITE_OK) {
            gmq_errf(err, errlen, "%s: schema migration %d -> %d failed: %s", path, v, v + 1,
                       why);
            goto fail;
        }
    }
    if (store__exec(db, "COMMIT", why, sizeof(why)) != SQLITE_OK) {
        gmq_errf(err, errlen, "%s: committing the schema failed: %s", path, why);
        goto fail;
    }
    if (version < STORE_SCHEMA_VERSION)
        LOG_INFO("store: %s: schema version %d -> %d", path, version, STORE_SCHEMA_VERSION);
    return 0;
fail:
    if (!sqlite3_get_autocommit(db))
        sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
    return -1;
}

/* Open the file and run the integrity check. Returns the handle, or NULL
 * with *damaged set (and why filled) when the file is not a sound database,
 * or NULL with err filled on any other failure. */
static sqlite3 *store__open_checked(const char *path, bool *damaged, char *why, size_t whylen,
                                    char *err, size_t errlen)
{
    sqlite3 *db = NULL;
    *damaged = false;
    int rc = sqlite3_open_v2(path, &db,
                             SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                             NULL);
    if (rc != SQLITE_OK) {
        gmq_errf(err, errlen, "cannot open %s: %s", path,
                   db ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
        goto fail;
    }
    sqlite3_extended_result_codes(db, 1);
    sqlite3_busy_timeout(db, STORE_BUSY_TIMEOUT_MS);
    switch (store__check(db, why, whylen)) {
    case CHECK_OK:
        return db;
    case CHECK_DAMAGED:
        *damaged = true;
        goto fail;
    case CHECK_ERROR:
        gmq_errf(err, errlen, "cannot read %s: %s", path, why);
        goto fail;
    }
fail:
    sqlite3_close(db);
    return NULL;
}

static int store__configure(sqlite3 *db, const char *path, enum store_sync sync, char *err,
                            size_t errlen)
{
    char why[256] = "";
    sqlite3_stmt *st = NULL;
    if (sqlite3_db_readonly(db, "main") == 1) {
        gmq_errf(err, errlen, "%s is read-only to this process", path);
        return -1;
    }
    /* journal_mode answers with the mode in force: a file system without
     * shared memory support may leave us in another one. */
    int rc = sqlite3_prepare_v2(db, "PRAGMA journal_mode = WAL", -1, &st, NULL);
    if (rc == SQLITE_OK && (rc = sqlite3_step(st)) == SQLITE_ROW) {
        const char *mode = (const char *)sqlite3_column_text(st, 0);
        if (!mode || strcmp(mode, "wal") != 0) {
            sqlite3_finalize(st);
            gmq_errf(err, errlen, "%s: cannot switch to WAL mode (mode is %s)", path,
                       mode ? mode : "unknown");
            return -1;
        }
        rc = SQLITE_OK;
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_OK) {
        gmq_errf(err, errlen, "%s: cannot switch to WAL mode: %s", path,
                   sqlite3_errmsg(db));
        return -1;
    }
    /* NORMAL: a commit survives a crash of the process; FULL: also of the
     * machine, at the price of an fsync per transaction. */
    const char *pragmas = sync == STORE_SYNC_FULL
                              ? "PRAGMA synchronous = FULL; PRAGMA journal_size_limit = 67108864;"
                              : "PRAGMA synchronous = NORMAL; PRAGMA journal_size_limit = 67108864;";
    if (store__exec(db, pragmas, why, sizeof(why)) != SQLITE_OK) {
        gmq_errf(err, errlen, "%s: %s", path, why);
        return -1;
    }
    if (store__migrate(db, path, err, errlen))
        return -1;
    return 0;
}

sqlite3 *store__db_open(const char *path, enum store_sync sync, char *err, size_t errlen)
{
    char why[512] = "";
    bool damaged;
    sqlite3 *db = store__open_checked(path, &damaged, why, sizeof(why), err, errlen);
    if (!db && damaged) {
        char moved[PATH_MAX];
        if (store__move_aside(path, moved, sizeof(moved), err, errlen))
            return NULL;
        LOG_ERROR("store: %s is damaged (%s); moved it to %s and starting with an empty "
                  "database: retained messages and persistent sessions are lost",
                  path, why, moved);
        db = store__open_checked(path, &damaged, why, sizeof(why), err, errlen);
        if (!db && damaged)
            gmq_errf(err, errlen, "%s: a fresh database fails its check: %s", path, why);
    }
    if (db && store__configure(db, path, sync, err, errlen)) {
        sqlite3_close(db);
        db = NULL;
    }
    return db;
}
