/* Unit tests for the configuration parser (broker/config.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "broker/alloc.h"
#include "broker/config.h"
#include "broker/log.h"

static char err[512];

static void parses_listeners_and_their_options(void **state)
{
    (void)state;
    gmq_config c;
    const char *text = "listener 1883 127.0.0.1\n"
                       "allow_anonymous true\n"
                       "\n"
                       "   # a comment line\n"
                       "listener 8883   # trailing comment\n";
    assert_int_equal(gmq_config_parse(text, "t.conf", NULL, &c, err, sizeof(err)), 0);
    assert_int_equal(c.nlisteners, 2);
    assert_int_equal(c.listeners[0].port, 1883);
    assert_string_equal(c.listeners[0].address, "127.0.0.1");
    assert_true(c.listeners[0].allow_anonymous);
    assert_int_equal(c.listeners[1].port, 8883);
    assert_null(c.listeners[1].address);
    assert_false(c.listeners[1].allow_anonymous); /* off unless asked for */
    gmq_config_free(&c);
}

static void applies_defaults(void **state)
{
    (void)state;
    gmq_config c;
    assert_int_equal(gmq_config_parse("listener 1\n", "t", NULL, &c, err, sizeof(err)), 0);
    assert_int_equal(c.max_packet_size, 16u * 1024 * 1024);
    assert_int_equal(c.max_connect_size, 64u * 1024);
    assert_int_equal(c.max_inflight, 20);
    assert_int_equal(c.max_queued, 1000);
    assert_int_equal(c.max_queued_bytes, 64u * 1024 * 1024); /* bounded unless told */
    assert_int_equal(c.max_sessions, 0);
    assert_int_equal(c.max_sessions_per_company, 0);
    assert_true(c.session_expiry == 0);
    assert_int_equal(c.sys_interval, 10);
    assert_int_equal(c.log_level, GMQ_LOG_NOTICE);
    gmq_config_free(&c);
}

static void parses_limits_and_deny_list(void **state)
{
    (void)state;
    gmq_config c;
    const char *text = "log_level debug\nmax_packet_size 1000\nmax_connect_size 100\n"
                       "connect_timeout 3\nmax_connections 7\nmax_inflight_messages 5\n"
                       "max_queued_messages 9\nmax_queued_bytes 4096\nsys_interval 0\n"
                       "max_sessions 1000\nmax_sessions_per_company 10\nsession_expiry 86400\n"
                       "anonymous_deny_subscribe test/nosubscribe\n"
                       "anonymous_deny_subscribe a/+/#\nanonymous_deny_subscribe #\n"
                       "listener 1883\n";
    assert_int_equal(gmq_config_parse(text, "t", NULL, &c, err, sizeof(err)), 0);
    assert_int_equal(c.log_level, GMQ_LOG_DEBUG);
    assert_int_equal(c.max_packet_size, 1000);
    assert_int_equal(c.max_connect_size, 100);
    assert_true(c.connect_timeout == 3.0);
    assert_int_equal(c.max_connections, 7);
    assert_int_equal(c.max_inflight, 5);
    assert_int_equal(c.max_queued, 9);
    assert_int_equal(c.max_queued_bytes, 4096);
    assert_int_equal(c.max_sessions, 1000);
    assert_int_equal(c.max_sessions_per_company, 10);
    assert_true(c.session_expiry == 86400.0);
    assert_int_equal(c.sys_interval, 0);
    assert_int_equal(c.nanon_deny, 3);
    assert_string_equal(c.anon_deny[1], "a/+/#"); /* '#' inside a value is data */
    assert_string_equal(c.anon_deny[2], "#");
    gmq_config_free(&c);
}

/* Every bad input names the file and line and leaves nothing allocated. */
static void expect_error(const char *text, const char *needle)
{
    gmq_config c;
    err[0] = '\0';
    if (gmq_config_parse(text, "bad.conf", NULL, &c, err, sizeof(err)) != -1)
        fail_msg("accepted: %s", text);
    if (!strstr(err, needle))
        fail_msg("error '%s' does not contain '%s'", err, needle);
    assert_int_equal(c.nlisteners, 0);
}

static void rejects_unknown_key_with_file_and_line(void **state)
{
    (void)state;
    expect_error("listener 1883\n\nbogus_key 1\n", "bad.conf:3: unknown key 'bogus_key'");
}

static void rejects_bad_values(void **state)
{
    (void)state;
    expect_error("listener 0\n", "bad.conf:1: listener: 0 is out of range");
    expect_error("listener 65536\n", "out of range");
    expect_error("listener abc\n", "not a non-negative integer");
    expect_error("listener 1883\nallow_anonymous maybe\n", "bad.conf:2: allow_anonymous: expected true or false");
    expect_error("allow_anonymous true\nlistener 1\n", "bad.conf:1: allow_anonymous must follow a listener");
    expect_error("listener 1\nmax_inflight_messages 0\n", "out of range");
    expect_error("listener 1\nmax_packet_size -5\n", "not a non-negative integer");
    expect_error("listener 1\nmax_packet_size 999999999999\n", "out of range");
    expect_error("listener 1\nlog_level loud\n", "log_level");
    expect_error("listener 1\nsys_interval\n", "expected exactly one value");
    expect_error("listener 1\nanonymous_deny_subscribe a/#/b\n", "not a valid topic filter");
    expect_error("listener 1\nlistener 1\n", "already declared at line 1");
    expect_error("listener 1\nmax_sessions -1\n", "not a non-negative integer");
    expect_error("listener 1\nmax_sessions_per_company 100000001\n", "out of range");
    expect_error("listener 1\nsession_expiry 1d\n", "bad.conf:2: session_expiry");
}

static void parses_telemetry_and_presence(void **state)
{
    (void)state;
    gmq_config c;
    const char *text = "listener 1\npersistence_file /var/lib/gatemq/db\n"
                       "telemetry_topic telemetry/#\ntelemetry_topic metrics/+/raw\n"
                       "telemetry_format json\ntelemetry_timestamp_field time\n"
                       "telemetry_timestamp_unit ms\ntelemetry_line_precision s\n"
                       "clock_window 600\nsink influxdb http://127.0.0.1:8086 plant\n"
                       "sink_batch_size 100\nsink_batch_delay 50\nsink_retry_max 10\n"
                       "offline_notify_after 120\ncompany_offline_notify_after acme 30\n"
                       "presence_topic status\n";
    assert_int_equal(gmq_config_parse(text, "t", NULL, &c, err, sizeof(err)), 0);
    assert_int_equal(c.ntelemetry_topics, 2);
    assert_string_equal(c.telemetry_topics[1], "metrics/+/raw");
    assert_int_equal(c.telemetry_format, 1);
    assert_string_equal(c.telemetry_ts_field, "time");
    assert_int_equal(c.telemetry_json_unit, 2);
    assert_int_equal(c.telemetry_line_unit, 1);
    assert_true(c.clock_window == 600);
    assert_string_equal(c.sink_kind, "influxdb");
    assert_string_equal(c.sink_target, "http://127.0.0.1:8086");
    assert_string_equal(c.sink_db, "plant");
    assert_int_equal(c.sink_batch_size, 100);
    assert_int_equal(c.sink_batch_delay_ms, 50);
    assert_int_equal(c.sink_retry_max, 10);
    assert_true(c.offline_notify_after == 120);
    assert_int_equal(c.ncompany_delays, 1);
    assert_string_equal(c.company_delays[0].company, "acme");
    assert_true(c.company_delays[0].seconds == 30);
    assert_string_equal(c.presence_topic, "status");
    gmq_config_free(&c);
}

static void rejects_bad_telemetry_settings(void **state)
{
    (void)state;
    expect_error("listener 1\ntelemetry_topic telemetry/#\n", "telemetry_topic needs persistence_file");
    expect_error("listener 1\npersistence_file x\ntelemetry_topic a/#/b\n", "bad.conf:3: telemetry_topic");
    expect_error("listener 1\npersistence_file x\ntelemetry_topic $SYS/#\n", "not a usable topic filter");
    expect_error("listener 1\nsink influxdb ftp://x db\n", "not an http:// or https:// URL");
    expect_error("listener 1\nsink kafka x\n", "expected 'influxdb URL DATABASE' or 'file PATH'");
    expect_error("listener 1\nsink file /tmp/x\n", "sink without any telemetry_topic");
    expect_error("listener 1\ntelemetry_format xml\n", "not one of the accepted values");
    expect_error("listener 1\ncompany_offline_notify_after a/b 5\n", "not a usable company name");
    expect_error("listener 1\npresence_topic a/b\n", "not usable as one topic level");
    expect_error("listener 1\nclock_window 5\n", "out of range");
}

static void rejects_config_without_listener(void **state)
{
    (void)state;
    expect_error("log_level info\n", "no listener configured");
}

static void load_reports_missing_file(void **state)
{
    (void)state;
    gmq_config c;
    assert_int_equal(gmq_config_load("/nonexistent/gatemq.conf", &c, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "/nonexistent/gatemq.conf"));
}

static void load_reads_a_file(void **state)
{
    (void)state;
    char path[] = "/tmp/gatemq-test-config-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    const char *text = "listener 2883 ::1\nmax_queued_messages 5\n";
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    gmq_config c;
    assert_int_equal(gmq_config_load(path, &c, err, sizeof(err)), 0);
    unlink(path);
    assert_int_equal(c.listeners[0].port, 2883);
    assert_string_equal(c.listeners[0].address, "::1");
    assert_int_equal(c.max_queued, 5);
    gmq_config_free(&c);
}

static void embedded_default_is_valid(void **state)
{
    (void)state;
    gmq_config c;
    assert_int_equal(gmq_config_parse(gmq_config_default_text, "default", NULL, &c, err, sizeof(err)), 0);
    assert_true(c.nlisteners >= 1);
    assert_true(c.listeners[0].allow_anonymous);
    assert_non_null(c.listeners[0].address); /* loopback only */
    gmq_config_free(&c);
}

/* Failing each allocation in turn yields an error and no leak (ASan checks). */
static void survives_allocation_failures(void **state)
{
    (void)state;
    const char *text = "listener 1883 127.0.0.1\nallow_anonymous true\n"
                       "anonymous_deny_subscribe a\nanonymous_deny_subscribe b\nlistener 2\n";
    for (unsigned long n = 1;; n++) {
        gmq_config c;
        gmq_alloc_fail_at(n);
        int rc = gmq_config_parse(text, "t", NULL, &c, err, sizeof(err));
        gmq_alloc_fail_at(0);
        if (rc == 0) {
            assert_int_equal(c.nlisteners, 2);
            gmq_config_free(&c);
            break;
        }
        assert_non_null(strstr(err, "out of memory"));
        assert_true(n < 100);
    }
}

/* store_queue_limit: 64 MiB unless told; no value turns it off. */
static void parses_store_queue_limit(void **state)
{
    (void)state;
    gmq_config c;
    assert_int_equal(gmq_config_parse("listener 1\n", "t", NULL, &c, err, sizeof(err)), 0);
    assert_int_equal(c.store_queue_limit, 64u * 1024 * 1024);
    gmq_config_free(&c);
    assert_int_equal(gmq_config_parse("listener 1\nstore_queue_limit 1048576\n", "t", NULL, &c,
                                      err, sizeof(err)),
                     0);
    assert_int_equal(c.store_queue_limit, 1048576);
    gmq_config_free(&c);
    expect_error("listener 1\nstore_queue_limit 0\n", "bad.conf:2: store_queue_limit: 0 is out of range");
    expect_error("listener 1\nstore_queue_limit 65535\n", "out of range");
    expect_error("listener 1\nstore_queue_limit 1M\n", "not a non-negative integer");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(parses_listeners_and_their_options),
        cmocka_unit_test(applies_defaults),
        cmocka_unit_test(parses_limits_and_deny_list),
        cmocka_unit_test(rejects_unknown_key_with_file_and_line),
        cmocka_unit_test(rejects_bad_values),
        cmocka_unit_test(rejects_config_without_listener),
        cmocka_unit_test(parses_telemetry_and_presence),
        cmocka_unit_test(rejects_bad_telemetry_settings),
        cmocka_unit_test(load_reports_missing_file),
        cmocka_unit_test(load_reads_a_file),
        cmocka_unit_test(embedded_default_is_valid),
        cmocka_unit_test(survives_allocation_failures),
        cmocka_unit_test(parses_store_queue_limit),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
