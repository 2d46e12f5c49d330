/*
 * it_login.c - user name and password logins on a TLS listener with
 * require_certificate false, end to end with mosquitto_pub: password files
 * made by mosquitto_passwd and by gatemq-passwd, the lockout of a user
 * name and of a source address, and reloading the password file.
 *
 * Lockout runs with lockout_time 2 s. Waiting for a lock to end is done by
 * retrying until the login succeeds (with a deadline); the time the lock
 * started is taken as a lower bound (just before the failure that locks is
 * sent), so "not before the lock time" is checked soundly.
 */
#include "tls_util.h"

#include <errno.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#define LOCK_MS 2000

typedef struct login_env {
    it_broker *b;
    uint16_t port;
    tu_tls m;
    char passwd[PATH_MAX];
} login_env;

/* A password file made by tool (mosquitto_passwd or gatemq-passwd) with
 * -c -b for user/password, in a fresh directory. */
static void make_passwd(char *path, size_t n, const char *tool, const char *user,
                        const char *password)
{
    tu_fmt(path, n, "%s/passwd", tu_tempdir());
    const char *argv[] = { tool, "-c", "-b", path, user, password, NULL };
    char *out = NULL;
    int rc = it_run(argv, TU_TIMEOUT, &out);
    if (rc != 0)
        it_fail("%s -c -b exited %d:\n%s", tool, rc, out);
    free(out);
}

/* Add a user to an existing file. */
static void add_user(const char *tool, const char *path, const char *user, const char *password)
{
    const char *argv[] = { tool, "-b", path, user, password, NULL };
    char *out = NULL;
    int rc = it_run(argv, TU_TIMEOUT, &out);
    if (rc != 0)
        it_fail("%s -b exited %d:\n%s", tool, rc, out);
    free(out);
}

/* Broker with a TLS listener taking passwords (no anonymous access). */
static void start(login_env *e, const char *passwd, const char *more_global)
{
    snprintf(e->passwd, sizeof e->passwd, "%s", passwd);
    char global[PATH_MAX + 256];
    tu_fmt(global, sizeof global, "password_file %s\nlockout_time 2\n%s", passwd,
           more_global ? more_global : "");
    tu_tls_from(&e->m, tu_pki());
    e->b = tu_start(&e->m, "require_certificate false\nallow_anonymous false", global, &e->port);
}

enum { LOGIN_OK = 0, LOGIN_BAD = 4, LOGIN_LOCKED = 5 };

/* One mosquitto_pub login; returns what the broker answered. */
static int attempt(login_env *e, const char *user, const char *password)
{
    char *out = NULL;
    int rc = tu_user_pub(e->port, e->m.ca, user, password, "it/login", "x", &out);
    int r;
    if (rc == 0 && tu_has(out, "received CONNACK (0)"))
        r = LOGIN_OK;
    else if (rc != 0 && tu_has(out, "Connection Refused: bad user name or password"))
        r = LOGIN_BAD;
    else if (rc != 0 && tu_has(out, "Connection Refused: not authorised"))
        r = LOGIN_LOCKED;
    else
        it_fail("mosquitto_pub -u %s exited %d with unexpected output:\n%s", user, rc, out);
    free(out);
    return r;
}

static void expect_login(login_env *e, const char *user, const char *password, int expected)
{
    int r = attempt(e, user, password);
    if (r != expected)
        it_fail("login of %s/%s: CONNACK %d, expected %d", user, password, r, expected);
}

/* ---- password files ---------------------------------------------------------- */

/* A file made by mosquitto_passwd -c -b ($7$, its own iteration count)
 * logs in with the right password. */
static void test_mosquitto_passwd_file_accepts_right_password(void **state)
{
    char pw[PATH_MAX];
    make_passwd(pw, sizeof pw, "mosquitto_passwd", "alice", "s3cret-A");
    login_env e;
    start(&e, pw, NULL);
    tu_await_log(e.b, "password file ");
    tu_log_has(e.b, ": 1 user(s)");
    expect_login(&e, "alice", "s3cret-A", LOGIN_OK);
    tu_await_log(e.b, "(user alice, clean 1");
    it_broker_stop(e.b);
}

/* A wrong password: CONNACK 4, mosquitto_pub says "bad user name or
 * password", the log says why. */
static void test_mosquitto_passwd_file_refuses_wrong_password(void **state)
{
    char pw[PATH_MAX];
    make_passwd(pw, sizeof pw, "mosquitto_passwd", "alice", "s3cret-A");
    login_env e;
    start(&e, pw, NULL);
    expect_login(&e, "alice", "s3cret-B", LOGIN_BAD);
    tu_await_log(e.b, "refused (CONNACK 4): bad user name or password for alice");
    tu_log_lacks(e.b, "(user alice");
    it_broker_stop(e.b);
}

/* A file made by gatemq-passwd -c -b works the same way, and a user added
 * to it by mosquitto_passwd too. */
static void test_gatemq_passwd_file_accepts_right_and_refuses_wrong_password(void **state)
{
    char pw[PATH_MAX];
    make_passwd(pw, sizeof pw, tu_passwd_bin(), "bob", "pa55-Bob");
    add_user("mosquitto_passwd", pw, "carol", "pa55-Carol");
    login_env e;
    start(&e, pw, NULL);
    tu_await_log(e.b, ": 2 user(s)");
    expect_login(&e, "bob", "pa55-Bob", LOGIN_OK);
    tu_await_log(e.b, "(user bob, clean 1");
    expect_login(&e, "bob", "pa55-bob", LOGIN_BAD);
    tu_await_log(e.b, "bad user name or password for bob");
    expect_login(&e, "carol", "pa55-Carol", LOGIN_OK);
    tu_await_log(e.b, "(user carol, clean 1");
    it_broker_stop(e.b);
}

/* An unknown user is refused like a wrong password (CONNACK 4). */
static void test_unknown_user_gets_connack_4(void **state)
{
    char pw[PATH_MAX];
    make_passwd(pw, sizeof pw, tu_passwd_bin(), "bob", "pa55-Bob");
    login_env e;
    start(&e, pw, NULL);
    expect_login(&e, "mallory", "pa55-Bob", LOGIN_BAD);
    tu_await_log(e.b, "bad user name or password for mallory");
    it_broker_stop(e.b);
}

/* Without a certificate or a user name, allow_anonymous false refuses
 * (CONNACK 5). */
static void test_no_credentials_refused_when_anonymous_off(void **state)
{
    char pw[PATH_MAX];
    make_passwd(pw, sizeof pw, tu_passwd_bin(), "bob", "pa55-Bob");
    login_env e;
    start(&e, pw, NULL);
    char *out = NULL;
    tu_args a;
    tu_args_init(&a);
    tu_args_mosq(&a, "mosquitto_pub", e.port, e.m.ca, NULL);
    tu_args_add(&a, "-t", "it/anon", "-m", "x", NULL);
    int rc = tu_run(&a, &out);
    if (rc == 0 || !tu_has(out, "not authorised"))
        it_fail("anonymous client: exit %d:\n%s", rc, out);
    free(out);
    tu_await_log(e.b, "refused (CONNACK 5): anonymous access is off on this listener");
    it_broker_stop(e.b);
}

/* ---- lockout ------------------------------------------------------------------- */

/* Four failures, then the fifth; returns a lower bound of the time the
 * lock started (taken before the fifth attempt is made). */
static long five_failures(login_env *e, const char *user)
{
    for (int i = 0; i < 4; i++)
        expect_login(e, user, "wrong", LOGIN_BAD);
    tu_log_lacks(e->b, "login lockout");
    long t0 = it_now_ms();
    expect_login(e, user, "wrong", LOGIN_BAD);
    return t0;
}

/* Five bad passwords lock the user name: the sixth attempt is refused as
 * locked (CONNACK 5) without a password check, even with the right
 * password. */
static void test_five_failures_lock_user_even_for_right_password(void **state)
{
    char pw[PATH_MAX];
    make_passwd(pw, sizeof pw, "mosquitto_passwd", "alice", "s3cret-A");
    login_env e;
    start(&e, pw, NULL);
    five_failures(&e, "alice");
    tu_await_log(e.b, "login lockout: user alice locked for 2 s");
    expect_login(&e, "alice", "wrong", LOGIN_LOCKED);
    tu_await_log(e.b, "refused (CONNACK 5): user alice is locked out");
    expect_login(&e, "alice", "s3cret-A", LOGIN_LOCKED);
    tu_await_log_n(e.b, "refused (CONNACK 5): user alice is locked out", 2, TU_TIMEOUT);
    tu_log_lacks(e.b, "(user alice");
    if (tu_log_count(e.b, "bad user name or password for alice") != 5)
        it_fail("a locked attempt had its password checked");
    it_broker_stop(e.b);
}

/* Once lockout_time (2 s) has passed, the right password works; it never
 * works before. */
static void test_user_lock_ends_after_lockout_time(void **state)
{
    char pw[PATH_MAX];
    make_passwd(pw, sizeof pw, "mosquitto_passwd", "alice", "s3cret-A");
    login_env e;
    start(&e, pw, NULL);
    long t0 = five_failures(&e, "alice");
    expect_login(&e, "alice", "s3cret-A", LOGIN_LOCKED);
    long deadline = it_now_ms() + LOCK_MS + TU_TIMEOUT;
    int locked = 1;
    for (;;) {
        int r = attempt(&e, "alice", "s3cret-A");
        long done = it_now_ms();
        if (r == LOGIN_OK) {
            if (done - t0 < LOCK_MS)
                it_fail("logged in %ld ms after the lock started, before lockout_time (%d ms)",
                        done - t0, LOCK_MS);
            break;
        }
        if (r != LOGIN_LOCKED)
            it_fail("the right password during the lock got CONNACK %d", r);
        locked++;
        if (done > deadline)
            it_fail("still locked %ld ms after the lock started", done - t0);
        tu_poll_pause();
    }
    tu_await_log(e.b, "(user alice, clean 1");
    if (tu_log_count(e.b, "user alice is locked out") != locked)
        it_fail("expected %d locked refusals in the log", locked);
    it_broker_stop(e.b);
}

/* After a lock ends, the next failure (no success in between) locks again
 * for twice as long. */
static void test_failure_after_lock_doubles_lock_time(void **state)
{
    char pw[PATH_MAX];
    make_passwd(pw, sizeof pw, "mosquitto_passwd", "alice", "s3cret-A");
    login_env e;
    start(&e, pw, NULL);
    five_failures(&e, "alice");
    tu_await_log(e.b, "user alice locked for 2 s");
    /* Retry a wrong password: refused as locked until the lock ends, then
     * checked (CONNACK 4), which locks again. */
    long deadline = it_now_ms() + LOCK_MS + TU_TIMEOUT;
    while (attempt(&e, "alice", "wrong") == LOGIN_LOCKED) {
        if (it_now_ms() > deadline)
            it_fail("the first lock never ended");
        tu_poll_pause();
    }
    tu_await_log(e.b, "user alice locked for 4 s");
    expect_login(&e, "alice", "s3cret-A", LOGIN_LOCKED);
    it_broker_stop(e.b);
}

/* Failures are counted while consecutive: a success in between resets the
 * count, so 4 + 4 failures lock nothing. */
static void test_success_resets_failure_count(void **state)
{
    char pw[PATH_MAX];
    make_passwd(pw, sizeof pw, "mosquitto_passwd", "alice", "s3cret-A");
    login_env e;
    start(&e, pw, NULL);
    for (int i = 0; i < 4; i++)
        expect_login(&e, "alice", "wrong", LOGIN_BAD);
    expect_login(&e, "alice", "s3cret-A", LOGIN_OK);
    for (int i = 0; i < 4; i++)
        expect_login(&e, "alice", "wrong", LOGIN_BAD);
    expect_login(&e, "alice", "s3cret-A", LOGIN_OK);
    tu_log_lacks(e.b, "login lockout");
    it_broker_stop(e.b);
}

/* Five failures from one address across different user names lock the
 * address: then even a valid user with the right password is refused. */
static void test_failures_across_user_names_lock_source_address(void **state)
{
    char pw[PATH_MAX];
    make_passwd(pw, sizeof pw, "mosquitto_passwd", "alice", "s3cret-A");
    add_user("mosquitto_passwd", pw, "bob", "s3cret-B");
    login_env e;
    start(&e, pw, NULL);
    static const char *const users[] = { "bob", "carol", "dave", "erin", "frank" };
    for (int i = 0; i < 5; i++)
        expect_login(&e, users[i], "wrong", LOGIN_BAD);
    tu_await_log(e.b, "login lockout: address 127.0.0.1 locked for 2 s");
    tu_log_lacks(e.b, "login lockout: user");
    expect_login(&e, "alice", "s3cret-A", LOGIN_LOCKED);
    tu_await_log(e.b, "refused (CONNACK 5): address 127.0.0.1 is locked out");
    tu_log_lacks(e.b, "(user alice");
    /* Certificates are not passwords: a device still connects. */
    tu_dev dev;
    tu_device(&dev, "acme", "gw-0001");
    char *out = NULL;
    int rc = tu_dev_pub(e.port, e.m.ca, &dev, "gw-0001", "it/login", "x", &out);
    if (rc != 0)
        it_fail("a device was refused while the address is locked (exit %d):\n%s", rc, out);
    free(out);
    it_broker_stop(e.b);
}

/* ---- reloading the password file ------------------------------------------------ */

/* SIGHUP reads the password file again: a user added since logs in, a
 * deleted one no longer does. */
static void test_reload_takes_new_password_file(void **state)
{
    char pw[PATH_MAX];
    make_passwd(pw, sizeof pw, tu_passwd_bin(), "bob", "pa55-Bob");
    login_env e;
    start(&e, pw, NULL);
    expect_login(&e, "bob", "pa55-Bob", LOGIN_OK);
    add_user(tu_passwd_bin(), pw, "dan", "pa55-Dan");
    const char *del[] = { tu_passwd_bin(), "-D", pw, "bob", NULL };
    if (it_run(del, TU_TIMEOUT, NULL) != 0)
        it_fail("gatemq-passwd -D failed");
    tu_reload(e.b, "reload: password file: 1 user(s)");
    expect_login(&e, "dan", "pa55-Dan", LOGIN_OK);
    expect_login(&e, "bob", "pa55-Bob", LOGIN_BAD);
    it_broker_stop(e.b);
}

/* A password file that does not parse at reload: the old one stays in
 * force (the log says so) and the broker keeps serving. */
static void test_reload_with_broken_password_file_keeps_old_one(void **state)
{
    char pw[PATH_MAX];
    make_passwd(pw, sizeof pw, "mosquitto_passwd", "alice", "s3cret-A");
    login_env e;
    start(&e, pw, NULL);
    tu_dev dev;
    tu_device(&dev, "acme", "gw-0001");
    it_proc *s = tu_sub_start(e.port, e.m.ca, &dev, "gw-0001", "it/pw");
    tu_write(pw, "this line is not a password entry\n");
    tu_reload(e.b, "reload: keeping the password file in force");
    tu_log_has(e.b, "missing ':'");
    expect_login(&e, "alice", "s3cret-A", LOGIN_OK);
    tu_dev_publish(e.port, e.m.ca, "gw-0002", "it/pw", "still-here");
    tu_await_output(s, "it/pw still-here");
    tu_log_lacks(e.b, "gw-0001 (127.0.0.1");
    it_proc_free(s);
    it_assert_serving(e.b);
    it_broker_stop(e.b);
}

/* ---- the password check runs off the event loop --------------------------------- */

/* Unread bytes in the broker's end of the TCP connection from local port
 * `from` to `port` (-1 if not found), from /proc/net/tcp. */
static long broker_rx_queue(uint16_t port, uint16_t from)
{
    FILE *f = fopen("/proc/net/tcp", "r");
    if (!f)
        return -1;
    char line[512];
    long q = -1;
    while (fgets(line, sizeof line, f)) {
        unsigned la, lp, ra, rp, st;
        unsigned long tx, rx;
        if (sscanf(line, " %*d: %x:%x %x:%x %x %lx:%lx", &la, &lp, &ra, &rp, &st, &tx, &rx) == 7 &&
            lp == port && rp == from) {
            q = (long)rx;
            break;
        }
    }
    fclose(f);
    return q;
}

/* A login whose key derivation takes about 2 s (1000000 PBKDF2 rounds)
 * does not hold up other clients: once the broker has read its CONNECT,
 * another client is served completely before that login is answered. */
static void test_slow_password_check_does_not_block_other_clients(void **state)
{
    char pw[PATH_MAX];
    tu_fmt(pw, sizeof pw, "%s/passwd", tu_tempdir());
    const char *mk[] = { tu_passwd_bin(), "-c", "-I", "1000000", "-b", pw, "slow", "pa55",
                         NULL };
    if (it_run(mk, TU_TIMEOUT, NULL) != 0)
        it_fail("gatemq-passwd -I 1000000 failed");
    login_env e;
    start(&e, pw, NULL);
    uint16_t port = it_broker_port(e.b);

    /* A raw client on the plain listener: passwords are checked there too. */
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(port) };
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof a) != 0)
        it_fail("connect: %s", strerror(errno));
    struct sockaddr_in me;
    socklen_t len = sizeof me;
    getsockname(fd, (struct sockaddr *)&me, &len);
    static const uint8_t creds[] = { 0, 4, 's', 'l', 'o', 'w', 0, 4, 'p', 'a', '5', '5' };
    uint8_t buf[64];
    size_t n = it_raw_connect(buf, "MQTT", 4, 0xc2, 0, "slow-login", creds, sizeof creds);
    if (send(fd, buf, n, 0) != (ssize_t)n)
        it_fail("send: %s", strerror(errno));
    long deadline = it_now_ms() + TU_TIMEOUT;
    while (broker_rx_queue(port, ntohs(me.sin_port)) != 0) {
        if (it_now_ms() > deadline) {
            close(fd);
            it_fail("the broker never read the CONNECT");
        }
        tu_poll_pause();
    }
    long t0 = it_now_ms();
    it_assert_serving(e.b);
    long served = it_now_ms() - t0;
    struct pollfd p = { fd, POLLIN, 0 };
    if (poll(&p, 1, 0) != 0) {
        close(fd);
        it_fail("the slow login was answered before another client was served (%ld ms): "
                "the key derivation blocks the event loop", served);
    }
    p.revents = 0;
    int r = poll(&p, 1, TU_TIMEOUT);
    ssize_t got = r == 1 ? recv(fd, buf, sizeof buf, 0) : -1;
    close(fd);
    if (got != 4 || memcmp(buf, "\x20\x02\x00\x00", 4) != 0)
        it_fail("the slow login did not get CONNACK 0 (%zd bytes)", got);
    tu_await_log(e.b, "slow-login connected from");
    it_broker_stop(e.b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        TU_TEST(test_mosquitto_passwd_file_accepts_right_password),
        TU_TEST(test_mosquitto_passwd_file_refuses_wrong_password),
        TU_TEST(test_gatemq_passwd_file_accepts_right_and_refuses_wrong_password),
        TU_TEST(test_unknown_user_gets_connack_4),
        TU_TEST(test_no_credentials_refused_when_anonymous_off),
        TU_TEST(test_five_failures_lock_user_even_for_right_password),
        TU_TEST(test_user_lock_ends_after_lockout_time),
        TU_TEST(test_failure_after_lock_doubles_lock_time),
        TU_TEST(test_success_resets_failure_count),
        TU_TEST(test_failures_across_user_names_lock_source_address),
        TU_TEST(test_reload_takes_new_password_file),
        TU_TEST(test_reload_with_broken_password_file_keeps_old_one),
        TU_TEST(test_slow_password_check_does_not_block_other_clients),
    };
    return TU_RUN(tests);
}
