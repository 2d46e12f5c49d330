/*
 * test_telemetry.c - unit tests of telemetry payloads and clock correction
 * (broker/telemetry.c).
 *
 * Every payload is copied into a heap block of exactly its length, without
 * a terminating NUL, so that AddressSanitizer catches a parser reading past
 * the end. Clock tests use a fixed pseudo-random sequence: the same delays
 * every run.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "broker/alloc.h"
#include "broker/telemetry.h"
#include "mqtt.h"

#define HEAD "telemetry,company=acme,device=gw-1,topic=telemetry/gw-1/temp "
#define LHEAD "weather,company=acme,device=gw-1,topic=telemetry/gw-1/temp"

static const char *topic = "telemetry/gw-1/temp";
static char err[256];

/* ---- helpers ---------------------------------------------------------------- */

static int make_n(const telemetry_rules *r, const char *company, const char *device,
                  const char *t, const void *payload, size_t len, telemetry_point *pt)
{
    uint8_t *copy = malloc(len ? len : 1);
    assert_non_null(copy);
    memcpy(copy, payload, len);
    telemetry_input in = {
        .company = company,
        .device = device,
        .topic = t,
        .topic_len = strlen(t),
        .payload = copy,
        .payload_len = len,
    };
    memset(err, 0, sizeof(err));
    int rc = telemetry_make_point(r, &in, pt, err, sizeof(err));
    free(copy);
    if (rc != TELEMETRY_OK) {
        assert_null(pt->line);
        assert_int_equal(pt->line_len, 0);
        assert_false(pt->has_time);
        assert_true(err[0] != '\0');
    } else {
        assert_non_null(pt->line);
        assert_int_equal(strlen(pt->line), pt->line_len);
    }
    return rc;
}

static int make(const telemetry_rules *r, const char *payload, telemetry_point *pt)
{
    return make_n(r, "acme", "gw-1", topic, payload, strlen(payload), pt);
}

/* The payload gives exactly this line (and the device time, if any). */
static void expect_line(const telemetry_rules *r, const char *payload, const char *line)
{
    telemetry_point pt;
    int rc = make(r, payload, &pt);
    if (rc != TELEMETRY_OK)
        fail_msg("payload %s rejected: %s", payload, err);
    assert_string_equal(pt.line, line);
    telemetry_point_free(&pt);
}

static void expect_time(const telemetry_rules *r, const char *payload, int64_t ms)
{
    telemetry_point pt;
    int rc = make(r, payload, &pt);
    if (rc != TELEMETRY_OK)
        fail_msg("payload %s rejected: %s", payload, err);
    assert_true(pt.has_time);
    if (pt.device_ms != ms)
        fail_msg("payload %s: device_ms %lld, expected %lld", payload, (long long)pt.device_ms,
                 (long long)ms);
    telemetry_point_free(&pt);
}

static void expect_no_time(const telemetry_rules *r, const char *payload)
{
    telemetry_point pt;
    assert_int_equal(make(r, payload, &pt), TELEMETRY_OK);
    assert_false(pt.has_time);
    telemetry_point_free(&pt);
}

/* Rejected as a bad payload, with a reason that mentions `why`. */
static void expect_reject(const telemetry_rules *r, const char *payload, const char *why)
{
    telemetry_point pt;
    int rc = make(r, payload, &pt);
    if (rc != TELEMETRY_EPAYLOAD)
        fail_msg("payload %s: expected rejection (%s), got %d", payload, why, rc);
    if (!strstr(err, why))
        fail_msg("payload %s: reason \"%s\" does not mention \"%s\"", payload, err, why);
}

static const telemetry_rules json_rules = {.format = TELEMETRY_JSON};
static const telemetry_rules line_rules = {.format = TELEMETRY_LINE};

/* ---- JSON: rendering -------------------------------------------------------- */

static void test_json_example_renders_exact_line(void **state)
{
    (void)state;
    telemetry_point pt;
    assert_int_equal(make(NULL, "{\"ts\": 1733300000123, \"temp\": 21.5, \"state\": \"run\"}", &pt),
                     TELEMETRY_OK);
    assert_string_equal(pt.line, HEAD "temp=21.5,state=\"run\"");
    assert_true(pt.has_time);
    assert_int_equal(pt.device_ms, INT64_C(1733300000123));
    telemetry_point_free(&pt);
}

static void test_json_numbers_are_always_floats(void **state)
{
    (void)state;
    /* 21 and 21.0 render the same: a float field in both messages */
    expect_line(NULL, "{\"t\": 21}", HEAD "t=21");
    expect_line(NULL, "{\"t\": 21.0}", HEAD "t=21");
    expect_line(NULL, "{\"t\": -0.25, \"big\": 1e21, \"third\": 0.3333333333333333}",
                HEAD "t=-0.25,big=1e+21,third=0.3333333333333333");
}

static void test_json_field_types(void **state)
{
    (void)state;
    expect_line(NULL, "{\"n\": 1.5, \"on\": true, \"off\": false, \"s\": \"x\", \"nothing\": null}",
                HEAD "n=1.5,on=true,off=false,s=\"x\"");
}

static void test_json_string_values_escaped(void **state)
{
    (void)state;
    /* quotes and backslashes escaped; LF and CR as the two characters \n, \r;
     * commas, spaces and '=' need nothing inside quotes */
    expect_line(NULL, "{\"s\": \"a \\\"q\\\" \\\\ b\\nc\\rd,e=f\"}",
                HEAD "s=\"a \\\"q\\\" \\\\ b\\nc\\rd,e=f\"");
}

static void test_json_field_keys_escaped(void **state)
{
    (void)state;
    expect_line(NULL, "{\"a b,c=d\\\\e\\nf\": 1}", HEAD "a\\ b\\,c\\=d\\\\e_f=1");
}

static void test_tag_values_escaped(void **state)
{
    (void)state;
    telemetry_point pt;
    const char *t = "tele metry/a,b=c\\d\ne";
    assert_int_equal(make_n(NULL, "ac me,=x", "gw\\1", t, "{\"v\":1}", 7, &pt), TELEMETRY_OK);
    assert_string_equal(pt.line, "tele\\ metry,company=ac\\ me\\,\\=x,device=gw\\\\1,"
                                 "topic=tele\\ metry/a\\,b\\=c\\\\d_e v=1");
    telemetry_point_free(&pt);
}

static void test_measurement_escapes_comma_space_not_equals(void **state)
{
    (void)state;
    telemetry_point pt;
    assert_int_equal(make_n(NULL, "acme", "gw-1", "a=b,c d/x", "{\"v\":1}", 7, &pt),
                     TELEMETRY_OK);
    assert_string_equal(pt.line, "a=b\\,c\\ d,company=acme,device=gw-1,topic=a\\=b\\,c\\ d/x v=1");
    telemetry_point_free(&pt);
}

static void test_json_measurement_is_first_topic_level(void **state)
{
    (void)state;
    telemetry_point pt;
    assert_int_equal(make_n(NULL, "acme", "gw-1", "metrics", "{\"v\":1}", 7, &pt), TELEMETRY_OK);
    assert_string_equal(pt.line, "metrics,company=acme,device=gw-1,topic=metrics v=1");
    telemetry_point_free(&pt);
}

static void test_json_measurement_falls_back_for_empty_level(void **state)
{
    (void)state;
    telemetry_point pt;
    assert_int_equal(make_n(NULL, "acme", "gw-1", "/x/y", "{\"v\":1}", 7, &pt), TELEMETRY_OK);
    assert_string_equal(pt.line, "telemetry,company=acme,device=gw-1,topic=/x/y v=1");
    telemetry_point_free(&pt);
}

static void test_json_flattens_nested_objects(void **state)
{
    (void)state;
    expect_line(NULL, "{\"a\": {\"b\": 1, \"c\": {\"d\": true}}, \"e\": 2}",
                HEAD "a_b=1,a_c_d=true,e=2");
}

static void test_json_flattens_arrays_by_index(void **state)
{
    (void)state;
    expect_line(NULL, "{\"v\": [1, 2, [3]], \"o\": [{\"x\": \"y\"}], \"e\": [], \"eo\": {}}",
                HEAD "v_0=1,v_1=2,v_2_0=3,o_0_x=\"y\"");
}

static void test_json_nested_ts_member_is_a_field(void **state)
{
    (void)state;
    telemetry_point pt;
    assert_int_equal(make(NULL, "{\"a\": {\"ts\": 5}, \"x\": 1}", &pt), TELEMETRY_OK);
    assert_string_equal(pt.line, HEAD "a_ts=5,x=1");
    assert_false(pt.has_time);
    telemetry_point_free(&pt);
}

static void test_json_duplicate_member_last_wins(void **state)
{
    (void)state;
    expect_line(NULL, "{\"v\": 1, \"v\": 2}", HEAD "v=2");
}

static void test_json_accepts_sixteen_levels_and_256_fields(void **state)
{
    (void)state;
    char buf[8192];
    size_t k = 0;
    for (int i = 0; i < TELEMETRY_JSON_DEPTH; i++)
        k += (size_t)sprintf(buf + k, "{\"a\":");
    buf[k++] = '1';
    for (int i = 0; i < TELEMETRY_JSON_DEPTH; i++)
        buf[k++] = '}';
    buf[k] = '\0';
    telemetry_point pt;
    assert_int_equal(make(NULL, buf, &pt), TELEMETRY_OK);
    telemetry_point_free(&pt);

    k = (size_t)sprintf(buf, "{");
    for (int i = 0; i < TELEMETRY_MAX_FIELDS; i++)
        k += (size_t)sprintf(buf + k, "%s\"f%d\":%d", i ? "," : "", i, i);
    sprintf(buf + k, "}");
    assert_int_equal(make(NULL, buf, &pt), TELEMETRY_OK);
    telemetry_point_free(&pt);
}

static void test_json_accepts_255_byte_key(void **state)
{
    (void)state;
    char buf[600];
    char key[TELEMETRY_MAX_KEY + 1];
    memset(key, 'k', TELEMETRY_MAX_KEY);
    key[TELEMETRY_MAX_KEY] = '\0';
    snprintf(buf, sizeof(buf), "{\"%s\": 1}", key);
    telemetry_point pt;
    assert_int_equal(make(NULL, buf, &pt), TELEMETRY_OK);
    telemetry_point_free(&pt);
}

/* ---- JSON: device time ------------------------------------------------------ */

static void test_json_auto_unit_boundaries(void **state)
{
    (void)state;
    expect_time(NULL, "{\"ts\": 0, \"v\": 1}", 0);
    expect_time(NULL, "{\"ts\": 1733300000, \"v\": 1}", INT64_C(1733300000000));
    expect_time(NULL, "{\"ts\": 99999999999, \"v\": 1}", INT64_C(99999999999000)); /* s */
    expect_time(NULL, "{\"ts\": 99999999999.9, \"v\": 1}", INT64_C(99999999999900));
    expect_time(NULL, "{\"ts\": 100000000000, \"v\": 1}", INT64_C(100000000000)); /* ms */
    expect_time(NULL, "{\"ts\": 1e11, \"v\": 1}", INT64_C(100000000000));
    expect_time(NULL, "{\"ts\": 99999999999999, \"v\": 1}", INT64_C(99999999999999));
    expect_time(NULL, "{\"ts\": 100000000000000, \"v\": 1}", INT64_C(100000000000)); /* us */
    expect_time(NULL, "{\"ts\": 99999999999999999, \"v\": 1}", INT64_C(99999999999999));
    expect_time(NULL, "{\"ts\": 100000000000000000, \"v\": 1}", INT64_C(100000000000)); /* ns */
    expect_time(NULL, "{\"ts\": 1733300000123456789, \"v\": 1}", INT64_C(1733300000123));
}

static void test_json_time_units_agree(void **state)
{
    (void)state;
    const char *same[] = {"1733300000.123", "1733300000123", "1733300000123456",
                          "1733300000123456789", "1.733300000123e12", "1733300000123.9"};
    for (size_t i = 0; i < sizeof(same) / sizeof(same[0]); i++) {
        char buf[128];
        snprintf(buf, sizeof(buf), "{\"ts\": %s, \"v\": 1}", same[i]);
        expect_time(NULL, buf, INT64_C(1733300000123));
    }
}

static void test_json_fraction_truncated_not_rounded(void **state)
{
    (void)state;
    /* .123 is 0.12299999... as a double: the digits are used, not the double */
    expect_time(NULL, "{\"ts\": 1733300000.123, \"v\": 1}", INT64_C(1733300000123));
    expect_time(NULL, "{\"ts\": 1733300000.1239999, \"v\": 1}", INT64_C(1733300000123));
    expect_time(NULL, "{\"ts\": 1733300000123999999, \"v\": 1}", INT64_C(1733300000123));
}

static void test_json_explicit_units(void **state)
{
    (void)state;
    telemetry_rules r = {.json_unit = TELEMETRY_MS};
    expect_time(&r, "{\"ts\": 1733300000, \"v\": 1}", INT64_C(1733300000));
    r.json_unit = TELEMETRY_S;
    expect_time(&r, "{\"ts\": 1733300000.5, \"v\": 1}", INT64_C(1733300000500));
    expect_time(&r, "{\"ts\": 253402300799.999, \"v\": 1}", TELEMETRY_MAX_MS);
    expect_reject(&r, "{\"ts\": 253402300800, \"v\": 1}", "after 9999");
    expect_reject(&r, "{\"ts\": 1733300000123, \"v\": 1}", "after 9999");
    r.json_unit = TELEMETRY_US;
    expect_time(&r, "{\"ts\": 1733300000, \"v\": 1}", INT64_C(1733300));
    r.json_unit = TELEMETRY_NS;
    expect_time(&r, "{\"ts\": 1733300000, \"v\": 1}", INT64_C(1733));
}

static void test_json_rfc3339_times(void **state)
{
    (void)state;
    expect_time(NULL, "{\"ts\": \"2024-12-04T08:13:20.123Z\", \"v\": 1}", INT64_C(1733300000123));
    expect_time(NULL, "{\"ts\": \"2024-12-04t08:13:20.123z\", \"v\": 1}", INT64_C(1733300000123));
    expect_time(NULL, "{\"ts\": \"2024-12-04 08:13:20.123Z\", \"v\": 1}", INT64_C(1733300000123));
    expect_time(NULL, "{\"ts\": \"2024-12-04T09:13:20.123+01:00\", \"v\": 1}",
                INT64_C(1733300000123));
    expect_time(NULL, "{\"ts\": \"2024-12-04T02:43:20.5-05:30\", \"v\": 1}",
                INT64_C(1733300000500));
    expect_time(NULL, "{\"ts\": \"2024-12-04T08:13:20.123999999Z\", \"v\": 1}",
                INT64_C(1733300000123));
    expect_time(NULL, "{\"ts\": \"2024-12-04T08:13:20Z\", \"v\": 1}", INT64_C(1733300000000));
    expect_time(NULL, "{\"ts\": \"2024-02-29T23:59:59Z\", \"v\": 1}", INT64_C(1709251199000));
    expect_time(NULL, "{\"ts\": \"2016-12-31T23:59:60Z\", \"v\": 1}", INT64_C(1483228800000));
    expect_time(NULL, "{\"ts\": \"1970-01-01T00:00:00Z\", \"v\": 1}", 0);
    expect_time(NULL, "{\"ts\": \"9999-12-31T23:59:59.999Z\", \"v\": 1}", TELEMETRY_MAX_MS);
}

static void test_json_rejects_ts_string_that_is_not_a_time(void **state)
{
    (void)state;
    const char *bad[] = {
        "soon", "1733300000123", "2024-12-04", "2024-12-04T08:13:20", "2024-12-04T08:13:20.Z",
        "2023-02-29T00:00:00Z", "2024-13-01T00:00:00Z", "2024-04-31T00:00:00Z",
        "2024-12-04T24:00:00Z", "2024-12-04T08:60:00Z", "2024-12-04T08:13:20+0100",
        "2024-12-04T08:13:20Z ", "1969-12-31T23:59:59Z", "",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char buf[128];
        snprintf(buf, sizeof(buf), "{\"ts\": \"%s\", \"v\": 1}", bad[i]);
        expect_reject(NULL, buf, "RFC 3339");
    }
}

static void test_json_rejects_ts_of_other_types(void **state)
{
    (void)state;
    expect_reject(NULL, "{\"ts\": true, \"v\": 1}", "neither a number nor");
    expect_reject(NULL, "{\"ts\": {\"s\": 1}, \"v\": 1}", "neither a number nor");
    expect_reject(NULL, "{\"ts\": [1], \"v\": 1}", "neither a number nor");
    expect_reject(NULL, "{\"ts\": -1, \"v\": 1}", "negative");
    expect_reject(NULL, "{\"ts\": -1.5e3, \"v\": 1}", "negative");
    expect_reject(NULL, "{\"ts\": NaN, \"v\": 1}", "finite");
    expect_reject(NULL, "{\"ts\": 1e999, \"v\": 1}", "finite");
    expect_reject(NULL, "{\"ts\": 123456789012345678901234, \"v\": 1}", "out of range");
}

static void test_json_missing_ts_has_no_time(void **state)
{
    (void)state;
    expect_no_time(NULL, "{\"v\": 1}");
    expect_no_time(NULL, "{\"ts\": null, \"v\": 1}");
}

static void test_json_custom_ts_field(void **state)
{
    (void)state;
    telemetry_rules r = {.ts_field = "time"};
    telemetry_point pt;
    assert_int_equal(make(&r, "{\"time\": 1733300000123, \"ts\": 7}", &pt), TELEMETRY_OK);
    assert_string_equal(pt.line, HEAD "ts=7");
    assert_true(pt.has_time);
    assert_int_equal(pt.device_ms, INT64_C(1733300000123));
    telemetry_point_free(&pt);
}

/* ---- JSON: rejections ------------------------------------------------------- */

static void test_json_rejects_not_json(void **state)
{
    (void)state;
    expect_reject(NULL, "{\"v\": 1", "not JSON");
    expect_reject(NULL, "{v: 1}", "not JSON");
    expect_reject(NULL, "{\"v\": 1,}", "not JSON");
    expect_reject(NULL, "{\"v\": 1} {}", "not JSON");
    expect_reject(NULL, "{\"v\": 01}", "not JSON");
    expect_reject(&json_rules, "temp v=1", "not JSON");
}

static void test_json_rejects_array_top_level(void **state)
{
    (void)state;
    expect_reject(NULL, "[{\"v\": 1}]", "not an object");
    expect_reject(NULL, "  [1, 2]", "not an object");
    expect_reject(&json_rules, "42", "not an object");
    expect_reject(&json_rules, "\"s\"", "not an object");
}

static void test_rejects_invalid_utf8(void **state)
{
    (void)state;
    expect_reject(NULL, "{\"s\": \"\xc3\x28\"}", "UTF-8");
    expect_reject(NULL, "{\"\xff\": 1}", "UTF-8");
    expect_reject(NULL, "m s=\"\xed\xa0\x80\"", "UTF-8"); /* a surrogate */
    telemetry_point pt;
    assert_int_equal(make_n(NULL, "acme", "gw-1", topic, "{\"v\":1}\0", 8, &pt),
                     TELEMETRY_EPAYLOAD);
    assert_non_null(strstr(err, "U+0000"));
}

static void test_json_rejects_nul_in_string(void **state)
{
    (void)state;
    expect_reject(NULL, "{\"s\": \"a\\u0000b\"}", "U+0000");
}

static void test_json_rejects_no_fields(void **state)
{
    (void)state;
    expect_reject(NULL, "{}", "no fields");
    expect_reject(NULL, "{\"ts\": 1733300000}", "no fields");
    expect_reject(NULL, "{\"n\": null, \"e\": [], \"o\": {}}", "no fields");
}

static void test_json_rejects_deep_nesting(void **state)
{
    (void)state;
    char buf[4096];
    size_t k = 0;
    for (int i = 0; i < TELEMETRY_JSON_DEPTH + 1; i++)
        k += (size_t)sprintf(buf + k, "{\"a\":");
    buf[k++] = '1';
    for (int i = 0; i < TELEMETRY_JSON_DEPTH + 1; i++)
        buf[k++] = '}';
    buf[k] = '\0';
    expect_reject(NULL, buf, "nested deeper");
    /* far deeper, in arrays */
    memset(buf, '[', 1000);
    buf[0] = '{';
    memcpy(buf + 1, "\"a\":", 4);
    buf[1000] = '\0';
    expect_reject(NULL, buf, "nested deeper");
}

static void test_json_rejects_too_many_fields(void **state)
{
    (void)state;
    char buf[8192];
    size_t k = (size_t)sprintf(buf, "{\"v\": [");
    for (int i = 0; i <= TELEMETRY_MAX_FIELDS; i++)
        k += (size_t)sprintf(buf + k, "%s%d", i ? "," : "", i);
    sprintf(buf + k, "]}");
    expect_reject(NULL, buf, "more than 256 fields");
}

static void test_json_rejects_long_key(void **state)
{
    (void)state;
    char buf[600];
    char key[TELEMETRY_MAX_KEY + 2];
    memset(key, 'k', TELEMETRY_MAX_KEY + 1);
    key[TELEMETRY_MAX_KEY + 1] = '\0';
    snprintf(buf, sizeof(buf), "{\"%s\": 1}", key);
    expect_reject(NULL, buf, "longer than 255");
    /* long only once flattened */
    key[200] = '\0';
    snprintf(buf, sizeof(buf), "{\"%s\": {\"%s\": 1}}", key, key);
    expect_reject(NULL, buf, "longer than 255");
}

static void test_json_rejects_empty_member_name(void **state)
{
    (void)state;
    expect_reject(NULL, "{\"\": 1}", "empty member name");
    expect_reject(NULL, "{\"a\": {\"\": 1}}", "empty member name");
}

static void test_json_rejects_reserved_field_names(void **state)
{
    (void)state;
    expect_reject(NULL, "{\"time\": 1}", "reserved");
    expect_reject(NULL, "{\"_field\": 1}", "reserved");
    expect_reject(NULL, "{\"_measurement\": \"x\"}", "reserved");
}

static void test_json_rejects_duplicate_after_flattening(void **state)
{
    (void)state;
    expect_reject(NULL, "{\"a_b\": 1, \"a\": {\"b\": 2}}", "two fields named \"a_b\"");
    expect_reject(NULL, "{\"v_0\": 1, \"v\": [2]}", "two fields named \"v_0\"");
    /* the same once control characters are replaced */
    expect_reject(NULL, "{\"a\\nb\": 1, \"a_b\": 2}", "two fields named");
}

static void test_json_rejects_non_finite_numbers(void **state)
{
    (void)state;
    expect_reject(NULL, "{\"v\": NaN}", "finite");
    expect_reject(NULL, "{\"v\": -Infinity}", "finite");
    expect_reject(NULL, "{\"v\": 1e999}", "finite");
    expect_reject(NULL, "{\"v\": 123456789012345678901234}", "out of range");
}

static void test_rejects_empty_payload(void **state)
{
    (void)state;
    telemetry_point pt;
    assert_int_equal(make_n(NULL, "acme", "gw-1", topic, "", 0, &pt), TELEMETRY_EPAYLOAD);
    assert_non_null(strstr(err, "empty payload"));
    expect_reject(NULL, "   ", "empty line");
}

static void test_rejects_missing_company_or_device(void **state)
{
    (void)state;
    telemetry_point pt;
    assert_int_equal(make_n(NULL, "", "gw-1", topic, "{\"v\":1}", 7, &pt), TELEMETRY_EPAYLOAD);
    assert_int_equal(make_n(NULL, NULL, "gw-1", topic, "{\"v\":1}", 7, &pt), TELEMETRY_EPAYLOAD);
    assert_int_equal(make_n(NULL, "acme", "", topic, "{\"v\":1}", 7, &pt), TELEMETRY_EPAYLOAD);
    assert_int_equal(make_n(NULL, "acme", "gw-1", "", "{\"v\":1}", 7, &pt), TELEMETRY_EPAYLOAD);
}

static void test_reasons_are_one_printable_line(void **state)
{
    (void)state;
    expect_reject(NULL, "{\"a\\nb\": NaN}", "\"a?b\": not a finite number");
    /* a long name of two-byte characters is quoted up to a character boundary */
    char buf[256];
    size_t k = (size_t)sprintf(buf, "weather v=");
    for (int i = 0; i < 30; i++)
        k += (size_t)sprintf(buf + k, "\xc3\xa9");
    expect_reject(NULL, buf, "bad value");
    assert_true(mqtt_utf8_valid((const uint8_t *)err, strlen(err)));
    /* and the reason is cut at a character boundary when err is short */
    telemetry_point pt;
    telemetry_input in = {"acme", "gw-1", topic, strlen(topic), (const uint8_t *)buf, k};
    const char *prefix = "line protocol: field \"v\" has a bad value \"";
    char small[64];
    /* room for the prefix and the first byte of a two-byte character */
    assert_int_equal(telemetry_make_point(NULL, &in, &pt, small, strlen(prefix) + 2),
                     TELEMETRY_EPAYLOAD);
    assert_string_equal(small, prefix);
}

/* ---- format choice ---------------------------------------------------------- */

static void test_auto_format_detects_json_after_blanks(void **state)
{
    (void)state;
    expect_line(NULL, " \r\n\t{\"v\": 1}\n", HEAD "v=1");
    expect_line(NULL, "weather v=1", LHEAD " v=1");
}

static void test_forced_line_format_rejects_json(void **state)
{
    (void)state;
    expect_reject(&line_rules, "{\"v\": 1}", "line protocol");
}

/* ---- line protocol ---------------------------------------------------------- */

static void test_line_valid_point_rendered(void **state)
{
    (void)state;
    telemetry_point pt;
    assert_int_equal(make(NULL, "weather,site=north temp=21.5,ok=true,n=-3i,u=4u,s=\"a b\" "
                                "1733300000123456789",
                          &pt),
                     TELEMETRY_OK);
    assert_string_equal(pt.line, LHEAD ",site=north temp=21.5,ok=true,n=-3i,u=4u,s=\"a b\"");
    assert_true(pt.has_time);
    assert_int_equal(pt.device_ms, INT64_C(1733300000123));
    telemetry_point_free(&pt);
}

static void test_line_spoofed_company_device_topic_replaced(void **state)
{
    (void)state;
    expect_line(NULL, "weather,company=evil,site=a,device=gw-9,topic=x/y v=1",
                LHEAD ",site=a v=1");
    expect_line(NULL, "weather,Company=x v=1", LHEAD ",Company=x v=1"); /* another tag */
}

static void test_line_value_syntax_accepted(void **state)
{
    (void)state;
    const char *ok[] = {"1", "-1", "1.", ".5", "-.5", "1e3", "1E-3", "1.5e+10", "0i",
                        "-9223372036854775808i", "18446744073709551615u", "t", "T", "true",
                        "True", "TRUE", "f", "F", "false", "False", "FALSE", "\"\"",
                        "\"a,b c=d\\\"\\\\\""};
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        char payload[128], line[256];
        snprintf(payload, sizeof(payload), "weather v=%s", ok[i]);
        snprintf(line, sizeof(line), LHEAD " v=%s", ok[i]);
        expect_line(NULL, payload, line);
    }
}

static void test_line_escapes_kept_as_written(void **state)
{
    (void)state;
    expect_line(NULL, "my\\ meas\\,x,t\\,k\\=1=v\\ 1 f\\=k\\ 2=\"q\\\"\"",
                "my\\ meas\\,x,company=acme,device=gw-1,topic=telemetry/gw-1/temp,"
                "t\\,k\\=1=v\\ 1 f\\=k\\ 2=\"q\\\"\"");
}

static void test_line_without_timestamp_has_no_time(void **state)
{
    (void)state;
    expect_no_time(NULL, "weather v=1");
    expect_no_time(NULL, "weather v=1   ");
}

static void test_line_timestamp_units(void **state)
{
    (void)state;
    telemetry_rules r = {0}; /* AUTO: nanoseconds */
    expect_time(&r, "weather v=1 1733300000123456789", INT64_C(1733300000123));
    r.line_unit = TELEMETRY_NS;
    expect_time(&r, "weather v=1 1733300000123999999", INT64_C(1733300000123));
    r.line_unit = TELEMETRY_US;
    expect_time(&r, "weather v=1 1733300000123456", INT64_C(1733300000123));
    r.line_unit = TELEMETRY_MS;
    expect_time(&r, "weather v=1 1733300000123", INT64_C(1733300000123));
    r.line_unit = TELEMETRY_S;
    expect_time(&r, "weather v=1 1733300000", INT64_C(1733300000000));
    expect_reject(&r, "weather v=1 1733300000123", "after 9999");
}

static void test_line_trailing_newline_accepted(void **state)
{
    (void)state;
    expect_line(NULL, "weather v=1\n", LHEAD " v=1");
    expect_line(NULL, "weather v=1 5\r\n", LHEAD " v=1");
    expect_line(NULL, "  weather v=1", LHEAD " v=1");
}

static void test_line_rejects_several_lines(void **state)
{
    (void)state;
    expect_reject(NULL, "weather v=1\nweather v=2", "one point per message");
    expect_reject(NULL, "weather v=1\n\n", "one point per message");
    expect_reject(NULL, "weather s=\"a\nb\"", "one point per message");
    expect_reject(NULL, "weather v=1\r", "one point per message");
}

static void test_line_rejects_comment(void **state)
{
    (void)state;
    expect_reject(NULL, "# weather v=1", "comment");
}

static void test_line_rejects_unbalanced_quotes(void **state)
{
    (void)state;
    expect_reject(NULL, "weather s=\"abc", "unbalanced quotes");
    expect_reject(NULL, "weather s=\"abc\\\"", "unbalanced quotes");
    expect_reject(NULL, "weather s=\"abc\\", "unbalanced quotes");
    expect_reject(NULL, "weather s=\"a\"b", "text after the string");
}

static void test_line_rejects_missing_fields(void **state)
{
    (void)state;
    expect_reject(NULL, "weather", "no fields");
    expect_reject(NULL, "weather,site=a", "no fields");
    expect_reject(NULL, "weather x", "without value");
    expect_reject(NULL, "weather v=1,", "without value");
    expect_reject(NULL, "weather v=", "bad value");
    expect_reject(NULL, "weather =1", "empty field key");
    expect_reject(NULL, ",site=a v=1", "no measurement");
}

static void test_line_rejects_bad_values(void **state)
{
    (void)state;
    const char *bad[] = {"abc", "1.2.3", "1e", "+1", "-", ".", "--1", "nan", "inf", "1e999",
                         "9223372036854775808i", "-1u", "1.5i", "18446744073709551616u",
                         "i", "tru", "yes", "1x"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char payload[128];
        snprintf(payload, sizeof(payload), "weather v=%s", bad[i]);
        expect_reject(NULL, payload, "bad value");
    }
}

static void test_line_rejects_bad_timestamp(void **state)
{
    (void)state;
    expect_reject(NULL, "weather v=1 12.5", "not an integer");
    expect_reject(NULL, "weather v=1 abc", "not an integer");
    expect_reject(NULL, "weather v=1 -5", "negative");
    expect_reject(NULL, "weather v=1 99999999999999999999", "out of range");
    expect_reject(NULL, "weather v=1 1 2", "text after the timestamp");
}

static void test_line_rejects_bad_tags(void **state)
{
    (void)state;
    expect_reject(NULL, "weather,site v=1", "without '='");
    expect_reject(NULL, "weather,=x v=1", "empty tag key");
    expect_reject(NULL, "weather,site= v=1", "without value");
    expect_reject(NULL, "weather,site=a=b v=1", "unescaped '='");
    expect_reject(NULL, "weather,site=a,site=b v=1", "given twice");
    expect_reject(NULL, "weather,time=a v=1", "reserved");
    expect_reject(NULL, "weather, v=1", "empty tag key");
}

static void test_line_rejects_bad_field_keys(void **state)
{
    (void)state;
    expect_reject(NULL, "weather v=1,v=2", "given twice");
    expect_reject(NULL, "weather time=1", "reserved");
    expect_reject(NULL, "weather\\", "backslash");
    expect_reject(NULL, "weather v\\", "backslash");
}

static void test_line_rejects_too_many_tags_and_fields(void **state)
{
    (void)state;
    char buf[8192];
    size_t k = (size_t)sprintf(buf, "weather");
    for (int i = 0; i <= TELEMETRY_MAX_TAGS; i++)
        k += (size_t)sprintf(buf + k, ",t%d=x", i);
    sprintf(buf + k, " v=1");
    expect_reject(NULL, buf, "more than 64 tags");

    k = (size_t)sprintf(buf, "weather ");
    for (int i = 0; i <= TELEMETRY_MAX_FIELDS; i++)
        k += (size_t)sprintf(buf + k, "%sf%d=1", i ? "," : "", i);
    expect_reject(NULL, buf, "more than 256 fields");
}

/* ---- ownership and memory --------------------------------------------------- */

static void test_point_free_is_safe_twice(void **state)
{
    (void)state;
    telemetry_point pt;
    assert_int_equal(make(NULL, "{\"v\": 1}", &pt), TELEMETRY_OK);
    telemetry_point_free(&pt);
    assert_null(pt.line);
    telemetry_point_free(&pt);
    telemetry_point_free(NULL);
}

/* Fail each allocation in turn: a clean TELEMETRY_ENOMEM every time, then
 * the same line as without injection. Leaks show under ASan. */
static void sweep(const char *payload)
{
    telemetry_point ref;
    assert_int_equal(make(NULL, payload, &ref), TELEMETRY_OK);
    unsigned long n;
    for (n = 1; n < 100; n++) {
        telemetry_point pt;
        gmq_alloc_fail_at(n);
        int rc = make(NULL, payload, &pt);
        gmq_alloc_fail_at(0);
        if (rc == TELEMETRY_OK) {
            assert_string_equal(pt.line, ref.line);
            assert_int_equal(pt.device_ms, ref.device_ms);
            telemetry_point_free(&pt);
            break;
        }
        assert_int_equal(rc, TELEMETRY_ENOMEM);
        assert_non_null(strstr(err, "out of memory"));
    }
    assert_true(n > 2); /* the line grew at least once */
    assert_true(n < 100);
    telemetry_point_free(&ref);
}

static void test_make_point_allocation_failure_sweep(void **state)
{
    (void)state;
    char json[4096], line[4096];
    size_t j = (size_t)sprintf(json, "{\"ts\": 1733300000123");
    size_t l = (size_t)sprintf(line, "weather,site=north ");
    for (int i = 0; i < 40; i++) {
        j += (size_t)sprintf(json + j, ", \"field_%d\": {\"value\": %d.5, \"s\": \"x\"}", i, i);
        l += (size_t)sprintf(line + l, "%sfield_%d=%d.5", i ? "," : "", i, i);
    }
    sprintf(json + j, "}");
    sprintf(line + l, " 1733300000123456789");
    sweep(json);
    sweep(line);
}

/* ---- clock correction ------------------------------------------------------- */

enum { MIN_MS = 60 * 1000, HOUR_MS = 60 * MIN_MS, WINDOW_MS = HOUR_MS };
static const int64_t base_ms = INT64_C(1733300000000);

static uint32_t rng_state;
static uint32_t rng(void)
{
    rng_state = rng_state * 1664525u + 1013904223u;
    return rng_state >> 8;
}

/* Live messages every step_ms from t0 to t1 (true time), device clock
 * `true - skew`, delays 20..219 ms; returns the smallest delay of those
 * received in the last 5/6 of a window before t1, which are surely live. */
static int64_t live(telemetry_clock *c, int64_t t0, int64_t t1, int64_t step_ms, int64_t skew)
{
    int64_t min_delay = INT64_MAX;
    for (int64_t t = t0; t < t1; t += step_ms) {
        int64_t delay = 20 + (int64_t)(rng() % 200);
        if (delay < min_delay && t + delay >= t1 - WINDOW_MS * 5 / 6)
            min_delay = delay;
        telemetry_clock_observe(c, t + delay, t - skew);
    }
    return min_delay;
}

static int64_t offset_at(const telemetry_clock *c, int64_t now)
{
    int64_t off = INT64_MIN;
    assert_true(telemetry_clock_offset(c, now, &off));
    return off;
}

static void test_clock_knows_nothing_at_first(void **state)
{
    (void)state;
    telemetry_clock c;
    telemetry_clock_init(&c, WINDOW_MS);
    int64_t off = 42;
    assert_false(telemetry_clock_offset(&c, base_ms, &off));
    assert_int_equal(off, 42);
    telemetry_clock_init(&c, 0);
    assert_int_equal(c.window_ms, TELEMETRY_CLOCK_WINDOW_MS);
}

static void test_clock_live_samples_give_offset_within_smallest_delay(void **state)
{
    (void)state;
    rng_state = 1;
    telemetry_clock c;
    telemetry_clock_init(&c, WINDOW_MS);
    const int64_t skew = 5 * MIN_MS; /* device clock 5 minutes behind */
    int64_t min_delay = live(&c, base_ms, base_ms + WINDOW_MS, 10000, skew);
    int64_t off = offset_at(&c, base_ms + WINDOW_MS);
    /* never below the true offset (every sample is an upper bound of it),
     * and above it by at most the smallest delay of the window */
    assert_true(off >= skew + 20);
    assert_true(off <= skew + min_delay);
}

static void test_clock_backlog_burst_does_not_move_offset(void **state)
{
    (void)state;
    rng_state = 2;
    telemetry_clock c;
    telemetry_clock_init(&c, WINDOW_MS);
    const int64_t skew = 5 * MIN_MS;
    live(&c, base_ms, base_ms + WINDOW_MS, 10000, skew);
    int64_t now = base_ms + WINDOW_MS;
    int64_t before = offset_at(&c, now);
    /* two hours of stored messages arrive within a few seconds */
    for (int i = 0; i < 720; i++)
        telemetry_clock_observe(&c, now + i * 5, now - 2 * HOUR_MS + i * 10000 - skew);
    assert_int_equal(offset_at(&c, now + 5000), before);
}

static void test_clock_seed_kept_during_backlog_flush_after_gap(void **state)
{
    (void)state;
    rng_state = 3;
    telemetry_clock c;
    telemetry_clock_init(&c, WINDOW_MS);
    const int64_t seed = 5 * MIN_MS;
    telemetry_clock_seed(&c, seed);
    assert_int_equal(offset_at(&c, base_ms), seed);

    /* back after three weeks: the backlog first (two minutes of flushing),
     * then live messages from a clock that drifted 400 ms further behind */
    const int64_t t0 = base_ms + 21 * 24 * HOUR_MS;
    for (int i = 0; i < 1200; i++)
        telemetry_clock_observe(&c, t0 + i * 100, t0 - 21 * 24 * HOUR_MS + i * 1000 - seed);
    assert_int_equal(offset_at(&c, t0 + 2 * MIN_MS), seed);

    const int64_t skew = seed + 400;
    const int64_t third = WINDOW_MS / 3;
    int64_t min_delay = live(&c, t0 + 2 * MIN_MS, t0 + third - 10000, 10000, skew);
    assert_int_equal(offset_at(&c, t0 + third - 10000), seed);
    /* once the fresh samples span a third of the window, they replace the seed */
    int64_t d = live(&c, t0 + third - 10000, t0 + third + 30000, 10000, skew);
    if (d < min_delay)
        min_delay = d;
    int64_t off = offset_at(&c, t0 + third + 30000);
    assert_true(off >= skew + 20);
    assert_true(off <= skew + min_delay);
}

static void test_clock_smaller_fresh_sample_beats_prior_at_once(void **state)
{
    (void)state;
    telemetry_clock c;
    telemetry_clock_init(&c, WINDOW_MS);
    telemetry_clock_seed(&c, 5 * MIN_MS);
    telemetry_clock_observe(&c, base_ms + 1000, base_ms + 1000 - 4 * MIN_MS);
    assert_int_equal(offset_at(&c, base_ms + 1000), 4 * MIN_MS);
    /* and it stays the best bound once the window has moved on */
    assert_int_equal(offset_at(&c, base_ms + 10 * HOUR_MS), 4 * MIN_MS);
}

static void test_clock_jump_backwards_followed_within_window(void **state)
{
    (void)state;
    rng_state = 4;
    telemetry_clock c;
    telemetry_clock_init(&c, WINDOW_MS);
    const int64_t skew = 1000;
    live(&c, base_ms, base_ms + 2 * HOUR_MS, 10000, skew);
    /* the device clock is set back by a minute: samples grow by 60 s */
    const int64_t jump = base_ms + 2 * HOUR_MS;
    live(&c, jump, jump + WINDOW_MS / 2, 10000, skew + MIN_MS);
    assert_true(offset_at(&c, jump + WINDOW_MS / 2) < skew + 220);
    live(&c, jump + WINDOW_MS / 2, jump + WINDOW_MS, 10000, skew + MIN_MS);
    int64_t off = offset_at(&c, jump + WINDOW_MS);
    assert_true(off >= skew + MIN_MS);
    assert_true(off < skew + MIN_MS + 220);
}

static void test_clock_jump_forwards_followed_at_once(void **state)
{
    (void)state;
    rng_state = 5;
    telemetry_clock c;
    telemetry_clock_init(&c, WINDOW_MS);
    live(&c, base_ms, base_ms + HOUR_MS, 10000, MIN_MS);
    /* clock set right: it was a minute behind, now exact */
    telemetry_clock_observe(&c, base_ms + HOUR_MS + 50, base_ms + HOUR_MS);
    assert_int_equal(offset_at(&c, base_ms + HOUR_MS + 50), 50);
}

static void test_clock_negative_offset_device_ahead(void **state)
{
    (void)state;
    rng_state = 6;
    telemetry_clock c;
    telemetry_clock_init(&c, WINDOW_MS);
    const int64_t skew = -5 * MIN_MS; /* device clock 5 minutes ahead */
    int64_t min_delay = live(&c, base_ms, base_ms + WINDOW_MS, 10000, skew);
    int64_t off = offset_at(&c, base_ms + WINDOW_MS);
    assert_true(off >= skew + 20);
    assert_true(off <= skew + min_delay);
    assert_true(off < 0);
}

static void test_clock_quiet_device_keeps_last_offset(void **state)
{
    (void)state;
    rng_state = 7;
    telemetry_clock c;
    telemetry_clock_init(&c, WINDOW_MS);
    const int64_t skew = 5 * MIN_MS;
    live(&c, base_ms, base_ms + WINDOW_MS, 10000, skew);
    int64_t established = offset_at(&c, base_ms + WINDOW_MS);
    /* three hours of silence, then a backlog flush: the offset holds */
    const int64_t back = base_ms + 4 * HOUR_MS;
    telemetry_clock_observe(&c, back, back - 3 * HOUR_MS - skew);
    assert_int_equal(offset_at(&c, back + 10 * HOUR_MS), established);
    for (int i = 0; i < 100; i++)
        telemetry_clock_observe(&c, back + i, back - 3 * HOUR_MS + i * 60000 - skew);
    assert_int_equal(offset_at(&c, back + 1000), established);
}

static void test_clock_first_ever_backlog_gives_large_offset_until_live(void **state)
{
    (void)state;
    telemetry_clock c;
    telemetry_clock_init(&c, WINDOW_MS);
    for (int i = 0; i < 60; i++)
        telemetry_clock_observe(&c, base_ms + i, base_ms - HOUR_MS + i * 60000);
    assert_true(offset_at(&c, base_ms + 100) > MIN_MS); /* the documented limit */
    telemetry_clock_observe(&c, base_ms + 200, base_ms + 150);
    assert_int_equal(offset_at(&c, base_ms + 200), 50);
}

static void test_clock_ignores_samples_older_than_the_window(void **state)
{
    (void)state;
    telemetry_clock c;
    telemetry_clock_init(&c, WINDOW_MS);
    telemetry_clock_observe(&c, base_ms + 2 * HOUR_MS, base_ms + 2 * HOUR_MS - 100);
    /* the broker's own clock stepped back by two hours for one message */
    telemetry_clock_observe(&c, base_ms, base_ms + 5000);
    assert_int_equal(offset_at(&c, base_ms + 2 * HOUR_MS), 100);
    /* extreme values do not overflow */
    telemetry_clock_observe(&c, INT64_MAX, INT64_MIN);
    assert_int_equal(offset_at(&c, base_ms + 2 * HOUR_MS), 100);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_json_example_renders_exact_line),
        cmocka_unit_test(test_json_numbers_are_always_floats),
        cmocka_unit_test(test_json_field_types),
        cmocka_unit_test(test_json_string_values_escaped),
        cmocka_unit_test(test_json_field_keys_escaped),
        cmocka_unit_test(test_tag_values_escaped),
        cmocka_unit_test(test_measurement_escapes_comma_space_not_equals),
        cmocka_unit_test(test_json_measurement_is_first_topic_level),
        cmocka_unit_test(test_json_measurement_falls_back_for_empty_level),
        cmocka_unit_test(test_json_flattens_nested_objects),
        cmocka_unit_test(test_json_flattens_arrays_by_index),
        cmocka_unit_test(test_json_nested_ts_member_is_a_field),
        cmocka_unit_test(test_json_duplicate_member_last_wins),
        cmocka_unit_test(test_json_accepts_sixteen_levels_and_256_fields),
        cmocka_unit_test(test_json_accepts_255_byte_key),
        cmocka_unit_test(test_json_auto_unit_boundaries),
        cmocka_unit_test(test_json_time_units_agree),
        cmocka_unit_test(test_json_fraction_truncated_not_rounded),
        cmocka_unit_test(test_json_explicit_units),
        cmocka_unit_test(test_json_rfc3339_times),
        cmocka_unit_test(test_json_rejects_ts_string_that_is_not_a_time),
        cmocka_unit_test(test_json_rejects_ts_of_other_types),
        cmocka_unit_test(test_json_missing_ts_has_no_time),
        cmocka_unit_test(test_json_custom_ts_field),
        cmocka_unit_test(test_json_rejects_not_json),
        cmocka_unit_test(test_json_rejects_array_top_level),
        cmocka_unit_test(test_rejects_invalid_utf8),
        cmocka_unit_test(test_json_rejects_nul_in_string),
        cmocka_unit_test(test_json_rejects_no_fields),
        cmocka_unit_test(test_json_rejects_deep_nesting),
        cmocka_unit_test(test_json_rejects_too_many_fields),
        cmocka_unit_test(test_json_rejects_long_key),
        cmocka_unit_test(test_json_rejects_empty_member_name),
        cmocka_unit_test(test_json_rejects_reserved_field_names),
        cmocka_unit_test(test_json_rejects_duplicate_after_flattening),
        cmocka_unit_test(test_json_rejects_non_finite_numbers),
        cmocka_unit_test(test_rejects_empty_payload),
        cmocka_unit_test(test_rejects_missing_company_or_device),
        cmocka_unit_test(test_reasons_are_one_printable_line),
        cmocka_unit_test(test_auto_format_detects_json_after_blanks),
        cmocka_unit_test(test_forced_line_format_rejects_json),
        cmocka_unit_test(test_line_valid_point_rendered),
        cmocka_unit_test(test_line_spoofed_company_device_topic_replaced),
        cmocka_unit_test(test_line_value_syntax_accepted),
        cmocka_unit_test(test_line_escapes_kept_as_written),
        cmocka_unit_test(test_line_without_timestamp_has_no_time),
        cmocka_unit_test(test_line_timestamp_units),
        cmocka_unit_test(test_line_trailing_newline_accepted),
        cmocka_unit_test(test_line_rejects_several_lines),
        cmocka_unit_test(test_line_rejects_comment),
        cmocka_unit_test(test_line_rejects_unbalanced_quotes),
        cmocka_unit_test(test_line_rejects_missing_fields),
        cmocka_unit_test(test_line_rejects_bad_values),
        cmocka_unit_test(test_line_rejects_bad_timestamp),
        cmocka_unit_test(test_line_rejects_bad_tags),
        cmocka_unit_test(test_line_rejects_bad_field_keys),
        cmocka_unit_test(test_line_rejects_too_many_tags_and_fields),
        cmocka_unit_test(test_point_free_is_safe_twice),
        cmocka_unit_test(test_make_point_allocation_failure_sweep),
        cmocka_unit_test(test_clock_knows_nothing_at_first),
        cmocka_unit_test(test_clock_live_samples_give_offset_within_smallest_delay),
        cmocka_unit_test(test_clock_backlog_burst_does_not_move_offset),
        cmocka_unit_test(test_clock_seed_kept_during_backlog_flush_after_gap),
        cmocka_unit_test(test_clock_smaller_fresh_sample_beats_prior_at_once),
        cmocka_unit_test(test_clock_jump_backwards_followed_within_window),
        cmocka_unit_test(test_clock_jump_forwards_followed_at_once),
        cmocka_unit_test(test_clock_negative_offset_device_ahead),
        cmocka_unit_test(test_clock_quiet_device_keeps_last_offset),
        cmocka_unit_test(test_clock_first_ever_backlog_gives_large_offset_until_live),
        cmocka_unit_test(test_clock_ignores_samples_older_than_the_window),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
