/*
 * it_acl.c - access rules against the real broker: users get their company
 * from the ACL file, everything is denied unless a rule allows it, and a
 * SIGHUP reload swaps the rules atomically: a good change takes effect
 * without dropping connections, a broken file keeps the old rules, and a
 * live subscription the new rules forbid is removed.
 *
 * Users log in with passwords on the harness's plain listener (the rules
 * are the same over TLS); the password file is written by gatemq-passwd.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "harness.h"
#include "tenant_util.h"

static const char acl_v1[] =
    "company acme\n"
    "  user alice\n"
    "    readwrite config/#\n"
    "    read      telemetry/#\n"
    "  user carol\n"
    "    write     config/#\n"
    "    write     telemetry/#\n"
    "company globex\n"
    "  user bob\n"
    "    readwrite #\n"
    "platform\n"
    "  user ingest\n"
    "    read +/telemetry/#\n";

/* v2: alice may also read secret/#. */
static const char acl_v2[] =
    "company acme\n"
    "  user alice\n"
    "    readwrite config/#\n"
    "    read      telemetry/#\n"
    "    read      secret/#\n"
    "  user carol\n"
    "    write     config/#\n"
    "    write     telemetry/#\n"
    "    write     secret/#\n"
    "company globex\n"
    "  user bob\n"
    "    readwrite #\n"
    "platform\n"
    "  user ingest\n"
    "    read +/telemetry/#\n";

/* v3: alice loses config/#; bob moves to acme. */
static const char acl_v3[] =
    "company acme\n"
    "  user alice\n"
    "    read      telemetry/#\n"
    "  user carol\n"
    "    write     config/#\n"
    "    write     telemetry/#\n"
    "  user bob\n"
    "    read      telemetry/#\n"
    "platform\n"
    "  user ingest\n"
    "    read +/telemetry/#\n";

/* v4: carol loses config/# and gains secret/#; alice may read secret/#. */
static const char acl_v4[] =
    "company acme\n"
    "  user alice\n"
    "    readwrite config/#\n"
    "    read      telemetry/#\n"
    "    read      secret/#\n"
    "  user carol\n"
    "    write     telemetry/#\n"
    "    write     secret/#\n"
    "company globex\n"
    "  user bob\n"
    "    readwrite #\n"
    "platform\n"
    "  user ingest\n"
    "    read +/telemetry/#\n";

static char *passwd_path;

/* A password file per test (temp files go with the test). */
static void make_passwords(void)
{
    static const char *const users[] = {"alice", "bob", "carol", "ingest"};
    free(passwd_path);
    passwd_path = tn_passwd_file(users, 4, "pw");
}

static char *acl_path;

/* A broker on the current test's password and ACL files, with more lines
 * of configuration (may be ""). */
static it_broker *restart(const char *more)
{
    char extra[2048];
    snprintf(extra, sizeof extra, "password_file %s\nacl_file %s\nauth_threads 1\n%s\n",
             passwd_path, acl_path, more);
    return it_broker_start(extra);
}

/* The paths are the harness's temp files of the current test; the strings
 * are ours and are freed when the next test replaces them. */
static it_broker *start_with(const char *acl_text, char **acl, const char *more)
{
    make_passwords();
    free(acl_path);
    acl_path = *acl = it_temp_file("acl.conf", acl_text);
    return restart(more);
}

static it_broker *start(const char *acl_text, char **acl)
{
    return start_with(acl_text, acl, "");
}

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    if (!f || fputs(text, f) < 0 || fclose(f) != 0)
        it_fail("cannot write %s", path);
}

/* Count occurrences of text in the broker log, awaiting at least n. */
static void await_log(it_broker *b, const char *text)
{
    long deadline = it_now_ms() + IT_TIMEOUT;
    while (!it_broker_log_contains(b, text)) {
        if (it_now_ms() > deadline)
            it_fail("the broker log never said \"%s\"", text);
        struct timespec ts = {0, 5 * 1000000L}; /* polling for a log line */
        nanosleep(&ts, NULL);
    }
}

/* SIGHUP and wait for the reload to be reported (the nth time). */
static void reload(it_broker *b, const char *expect)
{
    kill(it_broker_pid(b), SIGHUP);
    await_log(b, expect);
}

/* CONNECT with user name and password and clean session 1 (0 when
 * persistent); expect CONNACK with session present sp and rc. */
static it_conn *login_session(it_broker *b, const char *user, const char *client_id,
                              bool persistent, bool sp, uint8_t rc)
{
    return tn_login(it_broker_port(b), user, "pw", client_id, !persistent, sp, rc);
}

/* CONNECT with user name and password; expect CONNACK with rc. */
static it_conn *login(it_broker *b, const char *user, const char *client_id, uint8_t rc)
{
    return login_session(b, user, client_id, false, false, rc);
}

static void sub_expect(it_conn *c, const char *filter, uint8_t code)
{
    const char *f[] = {filter};
    uint8_t q[] = {1};
    uint8_t codes[] = {code};
    it_subscribe_n(c, f, q, 1, codes);
}

/* A user not named in the ACL file has no company and no rights. */
static void test_user_missing_from_acl_is_refused(void **state)
{
    char *acl;
    it_broker *b = start(acl_v1, &acl);
    write_file(acl, "company acme\n  user alice\n    read x\n");
    reload(b, "reload: ACL");
    it_conn *c = login(b, "carol", "carol-1", 0x05);
    it_expect_closed(c, IT_TIMEOUT);
    it_broker_stop(b);
}

/* Denied unless allowed: alice's subscription outside her rules gets 0x80;
 * her publish outside them is acknowledged and dropped. */
static void test_everything_not_allowed_is_denied(void **state)
{
    char *acl;
    it_broker *b = start(acl_v1, &acl);
    it_conn *alice = login(b, "alice", "alice-1", 0x00);
    it_conn *carol = login(b, "carol", "carol-1", 0x00);
    sub_expect(alice, "secret/#", 0x80);
    sub_expect(alice, "#", 0x80);
    sub_expect(alice, "config/#", 0x01);
    /* carol may write config/# but not read anything: 0x80. */
    sub_expect(carol, "config/#", 0x80);
    it_publish_str(alice, "status/x", "denied", 1, false); /* PUBACK, then dropped */
    it_publish_str(carol, "config/line-3", "rate=5", 1, false);
    it_expect_publish(alice, "config/line-3", "rate=5", 1, false);
    it_ping(alice); /* and nothing else, the denied publish included */
    it_broker_stop(b);
}

/* A user works in its company's namespace: bob (globex) with readwrite #
 * never sees acme's topics; the platform user reads both companies'
 * telemetry on internal topics. */
static void test_users_live_in_their_company_namespace(void **state)
{
    char *acl;
    it_broker *b = start(acl_v1, &acl);
    it_conn *bob = login(b, "bob", "bob-1", 0x00);
    it_conn *bob_pub = login(b, "bob", "bob-2", 0x00);
    it_conn *ingest = login(b, "ingest", "ingest-1", 0x00);
    it_conn *carol = login(b, "carol", "carol-1", 0x00);
    sub_expect(bob, "#", 0x01);
    sub_expect(ingest, "+/telemetry/#", 0x01);
    it_publish_str(carol, "telemetry/gw-1/temp", "21.5", 1, false);
    it_publish_str(bob_pub, "telemetry/gw-9/temp", "7", 1, false);
    it_expect_publish(ingest, "acme/telemetry/gw-1/temp", "21.5", 1, false);
    it_expect_publish(ingest, "globex/telemetry/gw-9/temp", "7", 1, false);
    it_expect_publish(bob, "telemetry/gw-9/temp", "7", 1, false); /* its own, not acme's */
    it_ping(bob);
    it_broker_stop(b);
}

/* A good change takes effect at SIGHUP without dropping anyone. */
static void test_reload_good_change_takes_effect_without_dropping(void **state)
{
    char *acl;
    it_broker *b = start(acl_v1, &acl);
    it_conn *alice = login(b, "alice", "alice-1", 0x00);
    it_conn *carol = login(b, "carol", "carol-1", 0x00);
    sub_expect(alice, "secret/#", 0x80);
    write_file(acl, acl_v2);
    reload(b, "reload: ACL");
    sub_expect(alice, "secret/#", 0x01); /* same connection */
    it_publish_str(carol, "secret/plan", "v2", 1, false);
    it_expect_publish(alice, "secret/plan", "v2", 1, false);
    it_broker_stop(b);
}

/* A broken file keeps the old rules in force: never fails open. */
static void test_reload_broken_file_keeps_old_rules(void **state)
{
    char *acl;
    it_broker *b = start(acl_v1, &acl);
    it_conn *alice = login(b, "alice", "alice-1", 0x00);
    it_conn *carol = login(b, "carol", "carol-1", 0x00);
    sub_expect(alice, "config/#", 0x01);
    write_file(acl, "company acme\n  user alice\n    readwrite #\n  bogus line here\n");
    reload(b, "reload: keeping the ACL in force");
    if (!it_broker_log_contains(b, "acl.conf:4"))
        it_fail("the reload error does not name file:line");
    sub_expect(alice, "secret/#", 0x80); /* the broken file would have allowed it */
    it_publish_str(carol, "config/a", "still", 1, false);
    it_expect_publish(alice, "config/a", "still", 1, false);
    it_broker_stop(b);
}

/* A permission revoked at reload removes the live subscription; the user
 * stays connected. A user moved to another company is disconnected. */
static void test_reload_revoked_permission_removes_live_subscription(void **state)
{
    char *acl;
    it_broker *b = start(acl_v1, &acl);
    it_conn *alice = login(b, "alice", "alice-1", 0x00);
    it_conn *bob = login(b, "bob", "bob-1", 0x00);
    it_conn *carol = login(b, "carol", "carol-1", 0x00);
    sub_expect(alice, "config/#", 0x01);
    sub_expect(alice, "telemetry/#", 0x01);
    write_file(acl, acl_v3);
    reload(b, "subscription config/# removed");
    it_expect_closed(bob, IT_TIMEOUT); /* moved from globex to acme */
    it_publish_str(carol, "config/a", "after", 1, false);
    it_publish_str(carol, "telemetry/t", "kept", 1, false);
    /* The config message is not delivered; the telemetry one is, next. */
    it_expect_publish(alice, "telemetry/t", "kept", 1, false);
    it_ping(alice);
    it_broker_stop(b);
}

/* A connection remembers the topics it was allowed to publish to; a reload
 * must still decide its very next PUBLISH by the new rules, both ways: a
 * topic published to (and remembered) before is refused, a topic refused
 * before is allowed. */
static void test_reload_decides_the_next_publish_on_a_topic_seen_before(void **state)
{
    char *acl;
    it_broker *b = start(acl_v1, &acl);
    it_conn *alice = login(b, "alice", "alice-1", 0x00);
    it_conn *carol = login(b, "carol", "carol-1", 0x00);
    sub_expect(alice, "config/#", 0x01);
    it_publish_str(carol, "config/a", "before-1", 1, false);
    it_publish_str(carol, "config/a", "before-2", 1, false);
    it_publish_str(carol, "secret/x", "refused", 1, false);
    it_expect_publish(alice, "config/a", "before-1", 1, false);
    it_expect_publish(alice, "config/a", "before-2", 1, false);
    await_log(b, "publish to secret/x denied");
    write_file(acl, acl_v4);
    reload(b, "reload: ACL");
    sub_expect(alice, "secret/#", 0x01);
    /* Same connection, same topics: config/a is now dropped, secret/x
     * delivered, and it is the next message alice gets. */
    it_publish_str(carol, "config/a", "after", 1, false);
    it_publish_str(carol, "secret/x", "granted", 1, false);
    it_expect_publish(alice, "secret/x", "granted", 1, false);
    it_ping(alice);
    await_log(b, "publish to config/a denied");
    it_broker_stop(b);
}

/* A user moved to another company cannot reach its persistent sessions in
 * the old one any more (sessions are keyed by company): the reload discards
 * them, connected or not, from memory (their slots under max_sessions free
 * at once, they are gone when the user is moved back) and from the
 * database (gone after a restart). Another user's session stays. */
static void test_reload_moved_user_loses_persistent_sessions(void **state)
{
    char *acl;
    char *readme = it_temp_file("README", "database directory\n");
    char more[512];
    snprintf(more, sizeof more, "persistence_file %.*s/gatemq.db\n",
             (int)(strrchr(readme, '/') - readme), readme);
    char with_cap[600];
    snprintf(with_cap, sizeof with_cap, "%smax_sessions 3\n", more);
    it_broker *b = start_with(acl_v1, &acl, with_cap);
    it_disconnect(login_session(b, "alice", "alice-1", true, false, 0x00));
    it_disconnect(login_session(b, "bob", "bob-2", true, false, 0x00));
    it_conn *bob1 = login_session(b, "bob", "bob-1", true, false, 0x00);
    sub_expect(bob1, "#", 0x01);
    it_close(login_session(b, "alice", "alice-2", true, false, 0x03)); /* full */

    write_file(acl, acl_v3); /* bob moves from globex to acme */
    reload(b, "client bob-1: persistent session of user bob in company globex discarded");
    it_expect_closed(bob1, IT_TIMEOUT);
    await_log(b, "client bob-2: persistent session of user bob in company globex discarded");
    /* Two slots free: alice gets them, the third is refused. */
    it_disconnect(login_session(b, "alice", "alice-2", true, false, 0x00));
    it_disconnect(login_session(b, "alice", "alice-3", true, false, 0x00));
    it_close(login_session(b, "alice", "alice-4", true, false, 0x03));

    /* Moved back, bob finds nothing in globex. */
    write_file(acl, acl_v1);
    char reloaded[600];
    snprintf(reloaded, sizeof reloaded, "reload: ACL %s: 6 rule(s)", acl);
    reload(b, reloaded);
    it_disconnect(login_session(b, "alice", "alice-3", false, false, 0x00)); /* a slot */
    it_disconnect(login_session(b, "bob", "bob-2", true, false, 0x00));
    it_broker_stop(b);

    b = restart(more);
    it_disconnect(login_session(b, "bob", "bob-1", true, false, 0x00));
    it_disconnect(login_session(b, "alice", "alice-1", true, true, 0x00));
    it_broker_stop(b);
    free(readme);
}

/* --check-config loads the ACL file too and names file:line. */
static void test_check_config_reports_acl_errors(void **state)
{
    char *acl = it_temp_file("bad-acl.conf", "company acme\n  user alice\n    readwrite a/#/b\n");
    char conf_text[512];
    snprintf(conf_text, sizeof conf_text, "listener 1883 127.0.0.1\nacl_file %s\n", acl);
    char *conf = it_temp_file("gatemq.conf", conf_text);
    const char *argv[] = {it_broker_bin(), "-c", conf, "--check-config", NULL};
    char *out = NULL;
    int rc = it_run(argv, IT_TIMEOUT, &out);
    if (rc != 1 || !out || !strstr(out, "bad-acl.conf:3"))
        it_fail("--check-config exited %d and said: %s", rc, out ? out : "");
    free(out);
    free(conf);
    free(acl);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        IT_TEST(test_user_missing_from_acl_is_refused),
        IT_TEST(test_everything_not_allowed_is_denied),
        IT_TEST(test_users_live_in_their_company_namespace),
        IT_TEST(test_reload_good_change_takes_effect_without_dropping),
        IT_TEST(test_reload_broken_file_keeps_old_rules),
        IT_TEST(test_reload_revoked_permission_removes_live_subscription),
        IT_TEST(test_reload_moved_user_loses_persistent_sessions),
        IT_TEST(test_reload_decides_the_next_publish_on_a_topic_seen_before),
        IT_TEST(test_check_config_reports_acl_errors),
    };
    int failed = IT_RUN(tests);
    free(passwd_path);
    free(acl_path);
    return failed;
}
