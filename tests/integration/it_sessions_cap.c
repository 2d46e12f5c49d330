/*
 * it_sessions_cap.c - bounds on persistent sessions against the real
 * broker: max_sessions_per_company and max_sessions refuse a CONNECT that
 * would create a new persistent session past them (CONNACK 3), never one
 * that resumes a session, and session_expiry discards sessions whose
 * client has been away too long, in memory and in the database, across
 * restarts too.
 *
 * Company namespaces come from password users named in an ACL file (users
 * may pick any client id, as an id-generating client would); anonymous
 * clients share the namespace of no company.
 *
 * Synchronisation: expiry is awaited on $SYS/broker/sessions/expired
 * (sys_interval 1), never by sleeping; the only wait is for session_expiry
 * itself to pass, where the passing of time is what the test is about.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sqlite3.h>

#include "harness.h"
#include "tenant_util.h"

static const char acl_text[] =
    "company acme\n"
    "  user alice\n"
    "    readwrite #\n"
    "company globex\n"
    "  user bob\n"
    "    readwrite #\n"
    "anonymous\n"
    "  readwrite #\n"
    "  read $SYS/#\n";

/* The files of the current test (harness temp files); ours to free. */
static char *passwd_path, *acl_path, *db_path;

static void make_files(void)
{
    static const char *const users[] = {"alice", "bob"};
    free(passwd_path);
    passwd_path = tn_passwd_file(users, 2, "pw");
    free(acl_path);
    acl_path = it_temp_file("acl.conf", acl_text);
    /* The database lives beside them, outside the broker's own directory,
     * so that it outlives each broker of the test. */
    free(db_path);
    db_path = malloc(strlen(acl_path) + 16);
    strcpy(db_path, acl_path);
    strcpy(strrchr(db_path, '/') + 1, "gatemq.db");
}

/* A broker on the current test's files; limits are its extra lines. */
static it_broker *start(const char *limits, bool persistent)
{
    char extra[2048];
    snprintf(extra, sizeof extra,
             "password_file %s\nacl_file %s\nauth_threads 1\nsys_interval 1\n%s%s\n%s\n",
             passwd_path, acl_path, persistent ? "persistence_file " : "",
             persistent ? db_path : "", limits);
    return it_broker_start(extra);
}

/* CONNECT as user (NULL: anonymous) with client_id; expect CONNACK rc
 * with session present sp. A refused connection must then be closed. */
static it_conn *connect_as(it_broker *b, const char *user, const char *client_id, bool clean,
                           uint8_t rc, bool sp)
{
    it_conn *c = tn_login(it_broker_port(b), user, "pw", client_id, clean, sp, rc);
    if (rc != 0) {
        it_expect_closed(c, IT_TIMEOUT);
        it_close(c);
        return NULL;
    }
    return c;
}

/* A persistent session for client_id that stays after its client left. */
static void leave_session(it_broker *b, const char *user, const char *client_id, bool sp)
{
    it_conn *c = connect_as(b, user, client_id, false, 0x00, sp);
    it_disconnect(c);
}

static void refused(it_broker *b, const char *user, const char *client_id)
{
    connect_as(b, user, client_id, false, 0x03, false);
}

/* Wait until $SYS topic says value (published every second). */
static void await_sys(it_broker *b, const char *topic, const char *value)
{
    it_conn *c = it_client(it_broker_port(b), "sys-watch", true);
    it_subscribe(c, topic, 0);
    long deadline = it_now_ms() + IT_TIMEOUT;
    for (;;) {
        mqtt_publish p;
        long left = deadline - it_now_ms();
        if (left <= 0)
            it_fail("%s never became %s", topic, value);
        it_recv_publish(c, &p, (int)left);
        if (it_span_eq(p.payload, value))
            break;
    }
    it_disconnect(c);
}

/* The retained value of a $SYS topic, published at start, is value. */
static void expect_sys_at_start(it_broker *b, const char *topic, const char *value)
{
    it_conn *c = it_client(it_broker_port(b), "sys-watch", true);
    it_subscribe(c, topic, 0);
    mqtt_publish p;
    it_recv_publish(c, &p, IT_TIMEOUT);
    if (!p.retain || !it_span_eq(p.payload, value))
        it_fail("%s at start is '%.*s' (retain %d), expected %s", topic, (int)p.payload.len,
                (const char *)p.payload.ptr, p.retain, value);
    it_disconnect(c);
}

/* ---- caps ------------------------------------------------------------------ */

/* max_sessions_per_company 2: acme's third new persistent session is
 * refused with CONNACK 3 and logged with the company and the cap; resuming
 * one of the two, a clean session, and another company's sessions are not
 * refused; a session that ends frees its slot. */
static void test_company_cap_refuses_only_new_persistent_sessions(void **state)
{
    make_files();
    it_broker *b = start("max_sessions_per_company 2", false);
    leave_session(b, "alice", "a-1", false);
    leave_session(b, "alice", "a-2", false);
    refused(b, "alice", "a-3");
    if (!it_broker_log_contains(b, "company acme has max_sessions_per_company (2)"))
        it_fail("the refusal does not name the company and the cap");
    await_sys(b, "$SYS/broker/sessions/refused", "1");
    /* Resuming is never refused, nor is taking a session over. */
    it_conn *a1 = connect_as(b, "alice", "a-1", false, 0x00, true);
    it_conn *a1_again = connect_as(b, "alice", "a-1", false, 0x00, true);
    it_expect_closed(a1, IT_TIMEOUT);
    it_close(a1);
    it_disconnect(a1_again);
    /* Clean sessions do not count, and globex has its own two. */
    it_conn *clean = connect_as(b, "alice", "a-3", true, 0x00, false);
    leave_session(b, "bob", "b-1", false);
    leave_session(b, "bob", "b-2", false);
    refused(b, "bob", "b-3");
    it_disconnect(clean);
    /* a-1 ends (a clean CONNECT discards it [MQTT-3.1.2-6]): a-3 now fits. */
    it_disconnect(connect_as(b, "alice", "a-1", true, 0x00, false));
    leave_session(b, "alice", "a-3", false);
    refused(b, "alice", "a-4");
    await_sys(b, "$SYS/broker/sessions/persistent", "4");
    it_broker_stop(b);
}

/* max_sessions 3 counts every namespace: once full, no one creates a new
 * persistent session; existing ones resume; clean sessions go on. */
static void test_global_cap_refuses_every_namespace(void **state)
{
    make_files();
    it_broker *b = start("max_sessions 3", false);
    leave_session(b, NULL, "anon-1", false);
    leave_session(b, "alice", "a-1", false);
    leave_session(b, "bob", "b-1", false);
    refused(b, NULL, "anon-2");
    refused(b, "alice", "a-2");
    refused(b, "bob", "b-2");
    if (!it_broker_log_contains(b, "max_sessions (3) persistent sessions reached (company acme)"))
        it_fail("the refusal does not name the cap and the company");
    leave_session(b, "bob", "b-1", true);
    it_disconnect(connect_as(b, NULL, "anon-clean", true, 0x00, false));
    await_sys(b, "$SYS/broker/sessions/refused", "3");
    /* A persistent session replaced by a clean one frees its slot. */
    it_disconnect(connect_as(b, NULL, "anon-1", true, 0x00, false));
    leave_session(b, "alice", "a-2", false);
    refused(b, NULL, "anon-3");
    it_broker_stop(b);
}

/* Sessions restored from the database count: after a restart the caps
 * still hold, and the restored sessions resume. */
static void test_caps_hold_after_restart(void **state)
{
    make_files();
    const char *limits = "max_sessions 3\nmax_sessions_per_company 2";
    it_broker *b = start(limits, true);
    leave_session(b, "alice", "a-1", false);
    leave_session(b, "alice", "a-2", false);
    leave_session(b, NULL, "anon-1", false);
    it_broker_stop(b);
    b = start(limits, true);
    await_sys(b, "$SYS/broker/sessions/persistent", "3");
    refused(b, "alice", "a-3");
    refused(b, "bob", "b-1");
    leave_session(b, "alice", "a-1", true);
    /* Ending one restored session frees a slot in both counts. */
    it_disconnect(connect_as(b, "alice", "a-2", true, 0x00, false));
    leave_session(b, "bob", "b-1", false);
    refused(b, "alice", "a-3");
    it_broker_stop(b);
}

/* ---- expiry ------------------------------------------------------------------ */

/* session_expiry 2: a persistent session whose client left is discarded
 * after two seconds, in memory (session present 0) and in the database (a
 * restart without expiry does not bring it back); one whose client stays
 * connected is kept; its own clock starts when it leaves. */
static void test_offline_session_expires(void **state)
{
    make_files();
    it_broker *b = start("session_expiry 2", true);
    it_conn *gone = connect_as(b, NULL, "gone", false, 0x00, false);
    it_subscribe(gone, "t/#", 1);
    it_disconnect(gone);
    it_conn *stays = connect_as(b, NULL, "stays", false, 0x00, false);
    await_sys(b, "$SYS/broker/sessions/expired", "1");
    await_sys(b, "$SYS/broker/sessions/persistent", "1");
    if (!it_broker_log_contains(b, "client gone: persistent session expired after"))
        it_fail("the expiry is not logged");
    it_disconnect(stays);
    it_disconnect(connect_as(b, NULL, "stays", false, 0x00, true));
    it_broker_stop(b);
    b = start("", true);
    it_conn *back = connect_as(b, NULL, "gone", false, 0x00, false);
    /* Its subscription went with it. */
    it_conn *pub = it_client(it_broker_port(b), "pub", true);
    it_publish_str(pub, "t/x", "after", 1, false);
    it_ping(back);
    it_disconnect(connect_as(b, NULL, "stays", false, 0x00, true));
    it_broker_stop(b);
}

/* Wall-clock time in ms: what the broker records when a client leaves. */
static int64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* The current test's database, opened while no broker runs. */
static sqlite3 *db_open(void)
{
    sqlite3 *db = NULL;
    if (sqlite3_open_v2(db_path, &db, SQLITE_OPEN_READWRITE, NULL) != SQLITE_OK)
        it_fail("cannot open %s: %s", db_path, db ? sqlite3_errmsg(db) : "no memory");
    return db;
}

/* The offline time stored for a session key (0: recorded as connected). */
static int64_t stored_offline_since(sqlite3 *db, const char *key)
{
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(db, "SELECT coalesce(offline_since, 0) FROM sessions WHERE client_id = ?1",
                           -1, &st, NULL) != SQLITE_OK ||
        sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC) != SQLITE_OK)
        it_fail("sessions query: %s", sqlite3_errmsg(db));
    if (sqlite3_step(st) != SQLITE_ROW)
        it_fail("no stored session %s", key);
    int64_t v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return v;
}

static void db_exec(sqlite3 *db, const char *sql)
{
    char *err = NULL;
    if (sqlite3_exec(db, sql, NULL, NULL, &err) != SQLITE_OK)
        it_fail("%s: %s", sql, err ? err : "?");
}

/* The time a client left survives a restart: a session that has been
 * offline longer than session_expiry while the broker was down is gone at
 * start (from the database too). A session whose client was connected
 * when the broker was killed counts from the restart, however long ago
 * it connected.
 *
 * Waiting out the expiry for real would leave the restarted broker that
 * same short expiry to take the connected client back, a race on a loaded
 * machine. Instead the time recorded when "old" left is checked to be the
 * wall-clock time it left, then both sessions are made an hour older in
 * the database, as a broker down for an hour would find them; the expiry
 * (600 s) is then far from both. */
static void test_expiry_counts_across_restart(void **state)
{
    make_files();
    it_broker *b = start("", true);
    int64_t left_from = wall_ms();
    leave_session(b, NULL, "old", false);
    it_conn *live = connect_as(b, NULL, "live", false, 0x00, false);
    /* Acknowledged once committed, after what "old" leaving wrote. */
    it_publish_str(live, "sync", "x", 1, true);
    int64_t left_by = wall_ms();
    it_broker_kill9(b);
    it_close(live);
    sqlite3 *db = db_open();
    int64_t since = stored_offline_since(db, "/old");
    if (since < left_from || since > left_by)
        it_fail("old left between %lld and %lld, recorded %lld", (long long)left_from,
                (long long)left_by, (long long)since);
    if (stored_offline_since(db, "/live") != 0)
        it_fail("live was connected at the crash but is recorded as offline");
    db_exec(db, "UPDATE sessions SET last_seen = last_seen - 3600, "
                "offline_since = offline_since - 3600000 WHERE offline_since IS NOT NULL");
    db_exec(db, "UPDATE sessions SET last_seen = last_seen - 3600 WHERE offline_since IS NULL");
    sqlite3_close(db);
    b = start("session_expiry 600", true);
    it_disconnect(connect_as(b, NULL, "live", false, 0x00, true));
    expect_sys_at_start(b, "$SYS/broker/sessions/expired", "1"); /* at start, not by the sweep */
    it_broker_stop(b);
    b = start("", true);
    it_disconnect(connect_as(b, NULL, "old", false, 0x00, false));
    it_disconnect(connect_as(b, NULL, "live", false, 0x00, true));
    it_broker_stop(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        IT_TEST(test_company_cap_refuses_only_new_persistent_sessions),
        IT_TEST(test_global_cap_refuses_every_namespace),
        IT_TEST(test_caps_hold_after_restart),
        IT_TEST(test_offline_session_expires),
        IT_TEST(test_expiry_counts_across_restart),
    };
    int failed = IT_RUN(tests);
    free(passwd_path);
    free(acl_path);
    free(db_path);
    return failed;
}
