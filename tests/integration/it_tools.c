/*
 * it_tools.c - interoperability with mosquitto_pub / mosquitto_sub, and
 * the broker's command line: --check-config, --version, --help, signals.
 */
#include "harness.h"

#include <signal.h>

static void port_str(it_broker *b, char *buf, size_t n)
{
    snprintf(buf, n, "%u", it_broker_port(b));
}

/* mosquitto_sub waits for one message; it is started with -d so that its
 * "received SUBACK" line tells us when it is subscribed (no sleeping), and
 * under stdbuf -oL so that the line reaches the pipe when printed. */
static void round_trip(const char *qos)
{
    it_broker *b = it_broker_start(NULL);
    char port[8];
    port_str(b, port, sizeof port);
    const char *sub_argv[] = { "stdbuf", "-oL", "mosquitto_sub", "-h", "127.0.0.1",
                               "-p", port, "-t", "tools/rt", "-q", qos, "-C", "1", "-W", "10", "-d", "-v",
                               "-i", "it-sub", NULL };
    it_proc *sub = it_spawn(sub_argv);
    if (!it_proc_wait_output(sub, "received SUBACK", IT_TIMEOUT))
        it_fail("mosquitto_sub never got its SUBACK:\n%s", it_proc_output(sub));
    const char *pub_argv[] = { "mosquitto_pub", "-h", "127.0.0.1", "-p", port, "-t",
                               "tools/rt", "-q", qos, "-m", "hello from mosquitto_pub",
                               "-i", "it-pub", NULL };
    char *out = NULL;
    int rc = it_run(pub_argv, IT_TIMEOUT * 2, &out);
    if (rc != 0)
        it_fail("mosquitto_pub -q %s exited %d:\n%s", qos, rc, out);
    free(out);
    rc = it_proc_wait(sub, IT_TIMEOUT * 2);
    if (rc != 0 || !strstr(it_proc_output(sub), "tools/rt hello from mosquitto_pub"))
        it_fail("mosquitto_sub -q %s exited %d:\n%s", qos, rc, it_proc_output(sub));
    it_proc_free(sub);
    it_broker_stop(b);
}

/* [MQTT-7.0.0-2] [MQTT-7.1.1-1] a stock client interoperates over TCP. */
static void test_mosquitto_pub_sub_round_trip_qos0(void **state)
{
    round_trip("0");
}

static void test_mosquitto_pub_sub_round_trip_qos1(void **state)
{
    round_trip("1");
}

static void test_mosquitto_pub_sub_round_trip_qos2(void **state)
{
    round_trip("2");
}

/* mosquitto_pub -r stores a retained message that a later mosquitto_sub
 * gets with its retain flag set (%r = 1). */
static void test_mosquitto_pub_retained_read_by_later_mosquitto_sub(void **state)
{
    it_broker *b = it_broker_start(NULL);
    char port[8];
    port_str(b, port, sizeof port);
    const char *pub_argv[] = { "mosquitto_pub", "-h", "127.0.0.1", "-p", port, "-t",
                               "tools/retained", "-q", "1", "-r", "-m", "kept", NULL };
    char *out = NULL;
    int rc = it_run(pub_argv, IT_TIMEOUT * 2, &out);
    if (rc != 0)
        it_fail("mosquitto_pub -r exited %d:\n%s", rc, out);
    free(out);
    const char *sub_argv[] = { "mosquitto_sub", "-h", "127.0.0.1", "-p", port, "-t",
                               "tools/retained", "-q", "1", "-C", "1", "-W", "10", "-F",
                               "%r %q %t %p", NULL };
    rc = it_run(sub_argv, IT_TIMEOUT * 2, &out);
    if (rc != 0 || strcmp(out, "1 1 tools/retained kept\n") != 0)
        it_fail("mosquitto_sub exited %d with output:\n%s", rc, out);
    free(out);
    it_broker_stop(b);
}

/* A persistent mosquitto_sub session (-c -i) gets the QoS 1 message
 * published while it was away. -E exits once subscribed. */
static void test_mosquitto_sub_persistent_session_gets_offline_message(void **state)
{
    it_broker *b = it_broker_start(NULL);
    char port[8];
    port_str(b, port, sizeof port);
    const char *sub1[] = { "mosquitto_sub", "-h", "127.0.0.1", "-p", port, "-t",
                           "tools/offline", "-q", "1", "-c", "-i", "it-persist", "-E",
                           NULL };
    char *out = NULL;
    int rc = it_run(sub1, IT_TIMEOUT * 2, &out);
    if (rc != 0)
        it_fail("mosquitto_sub -E exited %d:\n%s", rc, out);
    free(out);
    const char *pub[] = { "mosquitto_pub", "-h", "127.0.0.1", "-p", port, "-t",
                          "tools/offline", "-q", "1", "-m", "queued", NULL };
    rc = it_run(pub, IT_TIMEOUT * 2, &out);
    if (rc != 0)
        it_fail("mosquitto_pub exited %d:\n%s", rc, out);
    free(out);
    const char *sub2[] = { "mosquitto_sub", "-h", "127.0.0.1", "-p", port, "-t",
                           "tools/offline", "-q", "1", "-c", "-i", "it-persist", "-C",
                           "1", "-W", "10", NULL };
    rc = it_run(sub2, IT_TIMEOUT * 2, &out);
    if (rc != 0 || strcmp(out, "queued\n") != 0)
        it_fail("resumed mosquitto_sub exited %d with output:\n%s", rc, out);
    free(out);
    it_broker_stop(b);
}

/* mosquitto_sub can read $SYS/broker/version (retained). */
static void test_mosquitto_sub_reads_sys_broker_version(void **state)
{
    it_broker *b = it_broker_start("sys_interval 60");
    char port[8];
    port_str(b, port, sizeof port);
    const char *argv[] = { "mosquitto_sub", "-h", "127.0.0.1", "-p", port, "-t",
                           "$SYS/broker/version", "-C", "1", "-W", "10", NULL };
    char *out = NULL;
    int rc = it_run(argv, IT_TIMEOUT * 2, &out);
    if (rc != 0 || strlen(out) < 2)
        it_fail("mosquitto_sub on $SYS/broker/version exited %d:\n%s", rc, out);
    free(out);
    it_broker_stop(b);
}

/* ---- command line ------------------------------------------------------- */

static int check_config(const char *text, char **path, char **out)
{
    *path = it_temp_file("test.conf", text);
    const char *argv[] = { it_broker_bin(), "-c", *path, "--check-config", NULL };
    return it_run(argv, IT_TIMEOUT * 2, out);
}

/* Every directive of the configuration language, valid: exit 0. */
static void test_check_config_accepts_every_directive(void **state)
{
    char *path, *out;
    int rc = check_config("# every directive once\n"
                          "log_level notice\n"
                          "\n"
                          "listener 18830 127.0.0.1\n"
                          "allow_anonymous false\n"
                          "listener 18831\n"
                          "allow_anonymous true\n"
                          "max_packet_size 1048576\n"
                          "max_connect_size 4096\n"
                          "connect_timeout 5\n"
                          "max_connections 100\n"
                          "max_inflight_messages 10\n"
                          "max_queued_messages 100\n"
                          "sys_interval 0\n"
                          "anonymous_deny_subscribe a/b\n"
                          "anonymous_deny_subscribe c/#\n",
                          &path, &out);
    if (rc != 0)
        it_fail("--check-config on a valid file exited %d:\n%s", rc, out);
    free(out);
    free(path);
}

/* An unknown key: exit 1 and an error naming file:line. */
static void test_check_config_unknown_key_exits_1_naming_line(void **state)
{
    char *path, *out;
    int rc = check_config("log_level info\n"
                          "# a comment\n"
                          "no_such_directive 1\n",
                          &path, &out);
    char where[600];
    snprintf(where, sizeof where, "%s:3", path);
    if (rc != 1 || !strstr(out, where))
        it_fail("expected exit 1 and '%s', got %d:\n%s", where, rc, out);
    free(out);
    free(path);
}

/* A bad number: exit 1 naming the line. */
static void test_check_config_bad_number_exits_1_naming_line(void **state)
{
    char *path, *out;
    int rc = check_config("listener 1883 127.0.0.1\n"
                          "max_connections lots\n",
                          &path, &out);
    char where[600];
    snprintf(where, sizeof where, "%s:2", path);
    if (rc != 1 || !strstr(out, where))
        it_fail("expected exit 1 and '%s', got %d:\n%s", where, rc, out);
    free(out);
    free(path);
}

/* A bad boolean: exit 1 naming the line. */
static void test_check_config_bad_boolean_exits_1_naming_line(void **state)
{
    char *path, *out;
    int rc = check_config("listener 1883 127.0.0.1\n"
                          "allow_anonymous maybe\n",
                          &path, &out);
    char where[600];
    snprintf(where, sizeof where, "%s:2", path);
    if (rc != 1 || !strstr(out, where))
        it_fail("expected exit 1 and '%s', got %d:\n%s", where, rc, out);
    free(out);
    free(path);
}

/* A bad log level: exit 1 naming the line. */
static void test_check_config_bad_log_level_exits_1_naming_line(void **state)
{
    char *path, *out;
    int rc = check_config("log_level chatty\n", &path, &out);
    char where[600];
    snprintf(where, sizeof where, "%s:1", path);
    if (rc != 1 || !strstr(out, where))
        it_fail("expected exit 1 and '%s', got %d:\n%s", where, rc, out);
    free(out);
    free(path);
}

/* A port out of range: exit 1 naming the line. */
static void test_check_config_bad_port_exits_1_naming_line(void **state)
{
    char *path, *out;
    int rc = check_config("listener 70000\n", &path, &out);
    char where[600];
    snprintf(where, sizeof where, "%s:1", path);
    if (rc != 1 || !strstr(out, where))
        it_fail("expected exit 1 and '%s', got %d:\n%s", where, rc, out);
    free(out);
    free(path);
}

/* Without --check-config, a bad file stops the broker from starting. */
static void test_bad_config_refuses_to_start(void **state)
{
    char *path = it_temp_file("test.conf", "listener 0 127.0.0.1\nbogus yes\n");
    const char *argv[] = { it_broker_bin(), "-c", path, NULL };
    char *out = NULL;
    int rc = it_run(argv, IT_TIMEOUT * 2, &out);
    if (rc == 0)
        it_fail("broker started on a bad config:\n%s", out);
    free(out);
    free(path);
}

static void test_version_exits_0_and_prints(void **state)
{
    const char *argv[] = { it_broker_bin(), "--version", NULL };
    char *out = NULL;
    int rc = it_run(argv, IT_TIMEOUT * 2, &out);
    if (rc != 0 || strlen(out) < 2)
        it_fail("--version exited %d:\n%s", rc, out);
    free(out);
}

static void test_help_exits_0_and_lists_options(void **state)
{
    const char *argv[] = { it_broker_bin(), "--help", NULL };
    char *out = NULL;
    int rc = it_run(argv, IT_TIMEOUT * 2, &out);
    if (rc != 0 || !strstr(out, "--check-config"))
        it_fail("--help exited %d:\n%s", rc, out);
    free(out);
}

/* Populates a broker with every kind of state (sessions online and
 * offline, queued and in-flight messages, QoS 2 state, retained messages,
 * wills) so that a clean exit - status 0, which under ASan means no leak -
 * covers freeing all of it. */
static it_broker *busy_broker(void)
{
    it_broker *b = it_broker_start("sys_interval 1");
    uint16_t port = it_broker_port(b);
    it_conn *off = it_client(port, "offline", false);
    it_subscribe(off, "busy/#", 2);
    it_disconnect(off);
    it_conn *on = it_connect(port);
    it_will will = { "busy/will", "bye", 1, true };
    it_mqtt_connect(on, "online", false, 0, &will);
    it_subscribe(on, "busy/#", 1);
    it_conn *pub = it_client(port, "pub", true);
    it_publish_str(pub, "busy/retained", "r", 1, true);
    it_publish_str(pub, "busy/q1", "in-flight", 1, false);
    it_publish_str(pub, "busy/q2", "queued", 2, false);
    mqtt_publish p;
    it_recv_publish(on, &p, IT_TIMEOUT); /* not acknowledged: stays in flight */
    size_t n;
    uint8_t *half = it_encode_publish("busy/half", "x", 1, 2, false, false, 77, &n);
    it_send(pub, half, n); /* QoS 2 without PUBREL: broker holds the state */
    free(half);
    IT_EXPECT(pub, 0x50, 0x02, 0x00, 0x4d);
    return b;
}

static void test_sigterm_with_state_exits_0(void **state)
{
    it_broker *b = busy_broker();
    it_broker_stop_with(b, SIGTERM);
}

static void test_sigint_with_state_exits_0(void **state)
{
    it_broker *b = busy_broker();
    it_broker_stop_with(b, SIGINT);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        IT_TEST(test_mosquitto_pub_sub_round_trip_qos0),
        IT_TEST(test_mosquitto_pub_sub_round_trip_qos1),
        IT_TEST(test_mosquitto_pub_sub_round_trip_qos2),
        IT_TEST(test_mosquitto_pub_retained_read_by_later_mosquitto_sub),
        IT_TEST(test_mosquitto_sub_persistent_session_gets_offline_message),
        IT_TEST(test_mosquitto_sub_reads_sys_broker_version),
        IT_TEST(test_check_config_accepts_every_directive),
        IT_TEST(test_check_config_unknown_key_exits_1_naming_line),
        IT_TEST(test_check_config_bad_number_exits_1_naming_line),
        IT_TEST(test_check_config_bad_boolean_exits_1_naming_line),
        IT_TEST(test_check_config_bad_log_level_exits_1_naming_line),
        IT_TEST(test_check_config_bad_port_exits_1_naming_line),
        IT_TEST(test_bad_config_refuses_to_start),
        IT_TEST(test_version_exits_0_and_prints),
        IT_TEST(test_help_exits_0_and_lists_options),
        IT_TEST(test_sigterm_with_state_exits_0),
        IT_TEST(test_sigint_with_state_exits_0),
    };
    return IT_RUN(tests);
}
