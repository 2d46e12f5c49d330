/*
 * test_proto_topic.c - UTF-8 validation, topic name and filter rules, and
 * filter matching (MQTT 3.1.1 sections 1.5.3 and 4.7).
 *
 * Strings under test end at an unreadable page, so a validator that looks
 * past a truncated sequence crashes instead of passing.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "mqtt.h"

#include "guard.h" /* two guard pages: a filter and a topic each end at one */

static bool utf8(const char *s, size_t len)
{
    return mqtt_utf8_valid(at_guard_n(0, s, len), len);
}

static bool name_ok(const char *s)
{
    size_t len = strlen(s);
    return mqtt_topic_name_valid(at_guard_n(0, s, len), len);
}

static bool filter_ok(const char *s)
{
    size_t len = strlen(s);
    return mqtt_topic_filter_valid(at_guard_n(0, s, len), len);
}

static bool match(const char *filter, const char *topic)
{
    size_t fl = strlen(filter), tl = strlen(topic);
    assert_true(filter_ok(filter));
    assert_true(name_ok(topic));
    return mqtt_topic_match(at_guard_n(0, filter, fl), fl, at_guard_n(1, topic, tl), tl);
}

#define S(lit) lit, sizeof(lit) - 1

/* ---- UTF-8 -------------------------------------------------------------- */

/* [MQTT-1.5.3-3]: a BOM is an ordinary character, and so are controls. */
static void utf8_accepts_well_formed_sequences(void **state)
{
    (void)state;
    assert_true(utf8(S("")));
    assert_true(utf8(S("plain ascii ~\x7f\x01")));
    assert_true(utf8(S("\xc2\x80\xc3\xa9\xdf\xbf")));              /* U+0080, é, U+07FF */
    assert_true(utf8(S("\xe0\xa0\x80\xe2\x82\xac\xef\xbf\xbf")));  /* U+0800, €, U+FFFF */
    assert_true(utf8(S("\xed\x9f\xbf\xee\x80\x80")));              /* U+D7FF, U+E000 */
    assert_true(utf8(S("\xef\xbb\xbf")));                          /* U+FEFF */
    assert_true(utf8(S("\xf0\x90\x80\x80\xf4\x8f\xbf\xbf")));      /* U+10000, U+10FFFF */
    assert_true(utf8(S("a\xf0\x9f\x98\x80z")));
}

/* [MQTT-1.5.3-1] */
static void utf8_rejects_overlong_encodings(void **state)
{
    (void)state;
    assert_false(utf8(S("\xc0\x80")));
    assert_false(utf8(S("\xc0\xaf")));
    assert_false(utf8(S("\xc1\xbf")));
    assert_false(utf8(S("\xe0\x80\x80")));
    assert_false(utf8(S("\xe0\x9f\xbf")));
    assert_false(utf8(S("\xf0\x80\x80\x80")));
    assert_false(utf8(S("\xf0\x8f\xbf\xbf")));
}

/* [MQTT-1.5.3-1]: U+D800..U+DFFF, alone or paired CESU-style. */
static void utf8_rejects_surrogates(void **state)
{
    (void)state;
    assert_false(utf8(S("\xed\xa0\x80")));
    assert_false(utf8(S("\xed\xaf\xbf")));
    assert_false(utf8(S("\xed\xb0\x80")));
    assert_false(utf8(S("\xed\xbf\xbf")));
    assert_false(utf8(S("\xed\xa0\xbd\xed\xb8\x80")));
}

/* [MQTT-1.5.3-1] */
static void utf8_rejects_code_points_above_10ffff(void **state)
{
    (void)state;
    assert_false(utf8(S("\xf4\x90\x80\x80")));
    assert_false(utf8(S("\xf5\x80\x80\x80")));
    assert_false(utf8(S("\xf7\xbf\xbf\xbf")));
    assert_false(utf8(S("\xf8\x88\x80\x80\x80")));
    assert_false(utf8(S("\xfc\x84\x80\x80\x80\x80")));
    assert_false(utf8(S("\xfe")));
    assert_false(utf8(S("\xff")));
}

/* [MQTT-1.5.3-1]: the string ends, or an ASCII byte comes, mid-sequence. */
static void utf8_rejects_truncated_sequences(void **state)
{
    (void)state;
    assert_false(utf8(S("\xc3")));
    assert_false(utf8(S("\xe2\x82")));
    assert_false(utf8(S("\xe2")));
    assert_false(utf8(S("\xf0\x9f\x98")));
    assert_false(utf8(S("\xf0\x9f")));
    assert_false(utf8(S("ok\xf4")));
    assert_false(utf8(S("\xe2\x82" "A")));
    assert_false(utf8(S("\xf0\x9f\x98" "A")));
}

/* [MQTT-1.5.3-1] */
static void utf8_rejects_stray_continuation_bytes(void **state)
{
    (void)state;
    assert_false(utf8(S("\x80")));
    assert_false(utf8(S("\xbf")));
    assert_false(utf8(S("a\x80" "b")));
    assert_false(utf8(S("\xc3\xa9\xa9")));
}

/* [MQTT-1.5.3-2] */
static void utf8_rejects_nul(void **state)
{
    (void)state;
    assert_false(utf8(S("\0")));
    assert_false(utf8(S("a\0b")));
    assert_false(utf8(S("ab\0")));
}

/* ---- topic names --------------------------------------------------------- */

static void topic_name_accepts_valid_names(void **state)
{
    (void)state;
    static const char *const ok[] = {
        "a", "/", "a/b", "/finance", "finance/", "a//b", "$SYS/broker", " ",
        "sport/tennis/player1", "Accounts payable", "caf\xc3\xa9/\xe2\x82\xac",
    };
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++)
        assert_true(name_ok(ok[i]));
}

/* [MQTT-4.7.1-1] [MQTT-3.3.2-2] */
static void topic_name_rejects_wildcards(void **state)
{
    (void)state;
    static const char *const bad[] = { "#", "+", "a/#", "a/+", "a+", "a#b", "+/b" };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_false(name_ok(bad[i]));
}

/* [MQTT-4.7.3-1] */
static void topic_name_rejects_empty(void **state)
{
    (void)state;
    assert_false(name_ok(""));
}

/* [MQTT-4.7.3-3] */
static void topic_name_and_filter_limited_to_65535_bytes(void **state)
{
    (void)state;
    uint8_t *s = malloc(65536);
    assert_non_null(s);
    memset(s, 'a', 65536);
    assert_true(mqtt_topic_name_valid(s, 65535));
    assert_false(mqtt_topic_name_valid(s, 65536));
    assert_true(mqtt_topic_filter_valid(s, 65535));
    assert_false(mqtt_topic_filter_valid(s, 65536));
    free(s);
}

/* [MQTT-4.7.3-2] [MQTT-1.5.3-1] */
static void topic_name_rejects_invalid_utf8_and_nul(void **state)
{
    (void)state;
    assert_false(mqtt_topic_name_valid(at_guard_n(0, S("a\0")), 2));
    assert_false(mqtt_topic_name_valid(at_guard_n(0, S("a/\xc0\xaf")), 4));
    assert_false(mqtt_topic_name_valid(at_guard_n(0, S("a/\xe2\x82")), 4));
}

/* ---- topic filters ------------------------------------------------------- */

/* 4.7.1.2, 4.7.1.3: the spec's valid filter examples and edge shapes. */
static void topic_filter_accepts_valid_filters(void **state)
{
    (void)state;
    static const char *const ok[] = {
        "#", "+", "+/+", "/+", "+/", "sport/#", "sport/tennis/#", "+/tennis/#",
        "sport/+/player1", "sport/tennis/+", "/", "a//b", "$SYS/#", "a/+/+/#",
        "a", "/#",
    };
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++)
        assert_true(filter_ok(ok[i]));
}

/* [MQTT-4.7.1-2] */
static void topic_filter_rejects_misplaced_multilevel_wildcard(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "a/#/b", "a#", "sport/tennis#", "#/", "#/a", "##", "#a", "a/#/#", "+#",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_false(filter_ok(bad[i]));
}

/* [MQTT-4.7.1-3] */
static void topic_filter_rejects_single_level_wildcard_mixed_into_level(void **state)
{
    (void)state;
    static const char *const bad[] = { "a+/b", "sport+", "+a", "a/+b/c", "++", "a/b+" };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_false(filter_ok(bad[i]));
}

/* [MQTT-4.7.3-1] [MQTT-4.7.3-2] [MQTT-1.5.3-1] */
static void topic_filter_rejects_empty_invalid_utf8_and_nul(void **state)
{
    (void)state;
    assert_false(filter_ok(""));
    assert_false(mqtt_topic_filter_valid(at_guard_n(0, S("+/\0")), 3));
    assert_false(mqtt_topic_filter_valid(at_guard_n(0, S("#\xff")), 2));
    assert_false(mqtt_topic_filter_valid(at_guard_n(0, S("a/\xf0\x9f")), 4));
}

/* ---- matching ------------------------------------------------------------ */

/* 4.7.1.2 examples, and "#" also matching the parent level [MQTT-4.7.1-2]. */
static void match_multilevel_wildcard_spec_examples(void **state)
{
    (void)state;
    assert_true(match("sport/tennis/player1/#", "sport/tennis/player1"));
    assert_true(match("sport/tennis/player1/#", "sport/tennis/player1/ranking"));
    assert_true(match("sport/tennis/player1/#", "sport/tennis/player1/score/wimbledon"));
    assert_true(match("sport/#", "sport"));
    assert_false(match("sport/tennis/player1/#", "sport/tennis/player2"));
    assert_false(match("sport/tennis/player1/#", "sport/tennis"));
}

/* [MQTT-4.7.1-2] */
static void match_multilevel_wildcard_matches_parent_level(void **state)
{
    (void)state;
    assert_true(match("a/#", "a"));
    assert_true(match("a/#", "a/"));
    assert_true(match("a/#", "a/b/c"));
    assert_false(match("a/#", "ab"));
    assert_false(match("a/#", "b"));
    assert_true(match("/#", "/"));
    assert_true(match("+/#", "a"));
}

static void match_hash_alone_matches_every_topic_not_starting_with_dollar(void **state)
{
    (void)state;
    assert_true(match("#", "a"));
    assert_true(match("#", "/"));
    assert_true(match("#", "a/b/c/d"));
    assert_true(match("#", "/finance"));
}

/* 4.7.1.3 examples. */
static void match_single_level_wildcard_spec_examples(void **state)
{
    (void)state;
    assert_true(match("sport/tennis/+", "sport/tennis/player1"));
    assert_true(match("sport/tennis/+", "sport/tennis/player2"));
    assert_false(match("sport/tennis/+", "sport/tennis/player1/ranking"));
    assert_false(match("sport/+", "sport"));
    assert_true(match("sport/+", "sport/"));
    assert_true(match("+/tennis/#", "sport/tennis/player1"));
    assert_true(match("sport/+/player1", "sport/tennis/player1"));
}

/* 4.7.1.3: "+" matches an empty level: "/finance" is "" then "finance". */
static void match_single_level_wildcard_matches_empty_levels(void **state)
{
    (void)state;
    assert_true(match("+/+", "/finance"));
    assert_true(match("/+", "/finance"));
    assert_false(match("+", "/finance"));
    assert_true(match("+/+", "/"));
    assert_true(match("a/+/c", "a//c"));
    assert_true(match("+/", "a/"));
    assert_false(match("+/", "a"));
}

/* [MQTT-4.7.2-1] and the 4.7.2 examples. */
static void match_leading_wildcards_skip_dollar_topics(void **state)
{
    (void)state;
    assert_false(match("#", "$SYS/broker/clients"));
    assert_false(match("+/monitor/Clients", "$SYS/monitor/Clients"));
    assert_false(match("+", "$SYS"));
    assert_false(match("+/#", "$SYS/x"));
    assert_true(match("$SYS/#", "$SYS/monitor/Clients"));
    assert_true(match("$SYS/monitor/+", "$SYS/monitor/Clients"));
    assert_true(match("$SYS/#", "$SYS"));
    assert_true(match("a/+", "a/$x"));
    assert_true(match("a/#", "a/$x/y"));
}

/* 4.7.3: exact byte comparison; no case folding, slashes are significant. */
static void match_literal_levels_compare_bytes_exactly(void **state)
{
    (void)state;
    assert_false(match("ACCOUNTS", "Accounts"));
    assert_true(match("Accounts payable", "Accounts payable"));
    assert_false(match("a/b", "a/b/"));
    assert_false(match("a/b/", "a/b"));
    assert_false(match("a", "/a"));
    assert_true(match("/a", "/a"));
    assert_false(match("a/b", "a/bc"));
    assert_false(match("a/bc", "a/b"));
    assert_true(match("caf\xc3\xa9", "caf\xc3\xa9"));
}

/* ---- randomized comparison with a reference matcher ---------------------- */

/* Character-level recursion, deliberately unlike the level iterator under
 * test: '+' swallows up to the next '/', a trailing "/#" may swallow nothing. */
static bool ref_rec(const char *f, const char *t)
{
    if (*f == '\0')
        return *t == '\0';
    if (*f == '#')
        return true;
    if (f[0] == '/' && f[1] == '#' && *t == '\0')
        return true;
    if (*f == '+') {
        const char *end = strchr(t, '/');
        return ref_rec(f + 1, end ? end : t + strlen(t));
    }
    if (*t == '\0' || *f != *t)
        return false;
    return ref_rec(f + 1, t + 1);
}

static bool ref_match(const char *f, const char *t)
{
    if (t[0] == '$' && (f[0] == '+' || f[0] == '#'))
        return false;
    return ref_rec(f, t);
}

static uint64_t rng_state;

static uint32_t rng(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (uint32_t)(rng_state >> 11);
}

static void random_levels(char *out, size_t cap, const char *const *pool,
                          size_t pool_n, bool filter)
{
    size_t n = 1 + rng() % 4;
    out[0] = '\0';
    for (size_t i = 0; i < n; i++) {
        if (i > 0)
            strncat(out, "/", cap - strlen(out) - 1);
        if (filter && i == n - 1 && rng() % 4 == 0)
            strncat(out, "#", cap - strlen(out) - 1);
        else
            strncat(out, pool[rng() % pool_n], cap - strlen(out) - 1);
    }
}

static void match_agrees_with_reference_on_random_pairs(void **state)
{
    (void)state;
    static const char *const topic_pool[] = { "a", "b", "ab", "", "$s", "$" };
    static const char *const filter_pool[] = { "a", "b", "ab", "", "$s", "+", "+", "$" };
    rng_state = 0x9e3779b97f4a7c15u;
    size_t matched = 0, tried = 0;
    for (int i = 0; i < 200000; i++) {
        char f[64], t[64];
        random_levels(f, sizeof f, filter_pool, sizeof filter_pool / sizeof *filter_pool, true);
        random_levels(t, sizeof t, topic_pool, sizeof topic_pool / sizeof *topic_pool, false);
        if (f[0] == '\0' || t[0] == '\0')
            continue; /* zero-length names and filters are invalid [MQTT-4.7.3-1] */
        assert_true(mqtt_topic_filter_valid((const uint8_t *)f, strlen(f)));
        assert_true(mqtt_topic_name_valid((const uint8_t *)t, strlen(t)));
        bool want = ref_match(f, t);
        bool got = mqtt_topic_match((const uint8_t *)f, strlen(f), (const uint8_t *)t,
                                    strlen(t));
        if (want != got)
            fail_msg("filter \"%s\" topic \"%s\": want %d got %d", f, t, want, got);
        matched += got;
        tried++;
    }
    /* Both outcomes must be well represented for the comparison to mean much. */
    assert_true(matched > tried / 20);
    assert_true(matched < tried - tried / 20);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(utf8_accepts_well_formed_sequences),
        cmocka_unit_test(utf8_rejects_overlong_encodings),
        cmocka_unit_test(utf8_rejects_surrogates),
        cmocka_unit_test(utf8_rejects_code_points_above_10ffff),
        cmocka_unit_test(utf8_rejects_truncated_sequences),
        cmocka_unit_test(utf8_rejects_stray_continuation_bytes),
        cmocka_unit_test(utf8_rejects_nul),
        cmocka_unit_test(topic_name_accepts_valid_names),
        cmocka_unit_test(topic_name_rejects_wildcards),
        cmocka_unit_test(topic_name_rejects_empty),
        cmocka_unit_test(topic_name_and_filter_limited_to_65535_bytes),
        cmocka_unit_test(topic_name_rejects_invalid_utf8_and_nul),
        cmocka_unit_test(topic_filter_accepts_valid_filters),
        cmocka_unit_test(topic_filter_rejects_misplaced_multilevel_wildcard),
        cmocka_unit_test(topic_filter_rejects_single_level_wildcard_mixed_into_level),
        cmocka_unit_test(topic_filter_rejects_empty_invalid_utf8_and_nul),
        cmocka_unit_test(match_multilevel_wildcard_spec_examples),
        cmocka_unit_test(match_multilevel_wildcard_matches_parent_level),
        cmocka_unit_test(match_hash_alone_matches_every_topic_not_starting_with_dollar),
        cmocka_unit_test(match_single_level_wildcard_spec_examples),
        cmocka_unit_test(match_single_level_wildcard_matches_empty_levels),
        cmocka_unit_test(match_leading_wildcards_skip_dollar_topics),
        cmocka_unit_test(match_literal_levels_compare_bytes_exactly),
        cmocka_unit_test(match_agrees_with_reference_on_random_pairs),
    };
    return cmocka_run_group_tests(tests, guard_setup2, guard_teardown);
}
