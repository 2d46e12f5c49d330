/* Unit tests for a connection's cache of allowed publish topics
 * (broker/aclcache.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "broker/aclcache.h"
#include "broker/alloc.h"

static bool allowed(aclcache *c, unsigned gen, const char *topic)
{
    return aclcache_allowed(c, gen, topic, strlen(topic));
}

static void remember(aclcache *c, unsigned gen, const char *topic)
{
    aclcache_remember(c, gen, topic, strlen(topic));
}

static aclcache *new_cache(void)
{
    aclcache *c = aclcache_new();
    assert_non_null(c);
    return c;
}

static void an_empty_cache_allows_nothing(void **state)
{
    (void)state;
    aclcache *c = new_cache();
    assert_false(allowed(c, 0, "a"));
    assert_false(allowed(c, 1, "telemetry/gw-1/temp"));
    aclcache_free(c);
}

static void a_remembered_topic_is_allowed_under_its_generation_only(void **state)
{
    (void)state;
    aclcache *c = new_cache();
    remember(c, 7, "telemetry/gw-1/temp");
    assert_true(allowed(c, 7, "telemetry/gw-1/temp"));
    assert_true(allowed(c, 7, "telemetry/gw-1/temp")); /* a hit does not consume it */
    assert_false(allowed(c, 8, "telemetry/gw-1/temp"));
    assert_false(allowed(c, 6, "telemetry/gw-1/temp"));
    aclcache_free(c);
}

/* A reload bumps the generation: nothing decided under older rules may
 * answer for the new ones, not even after the cache went back to them. */
static void remembering_under_a_new_generation_drops_every_older_entry(void **state)
{
    (void)state;
    aclcache *c = new_cache();
    remember(c, 1, "a/1");
    remember(c, 1, "a/2");
    remember(c, 2, "b");
    assert_true(allowed(c, 2, "b"));
    assert_false(allowed(c, 2, "a/1"));
    assert_false(allowed(c, 2, "a/2"));
    assert_false(allowed(c, 1, "a/1"));
    assert_false(allowed(c, 1, "b"));
    aclcache_free(c);
}

static void topics_are_compared_byte_for_byte(void **state)
{
    (void)state;
    aclcache *c = new_cache();
    remember(c, 1, "status/gw-1");
    static const char *const others[] = {
        "status/gw-2", "status/gw-1/", "status/gw-", "Status/gw-1", "status/gw-11",
        "status", "status/+", "status/#", "/status/gw-1", "status/gw-1 ",
    };
    for (size_t i = 0; i < sizeof others / sizeof *others; i++)
        if (allowed(c, 1, others[i]))
            fail_msg("\"%s\" found after remembering only \"status/gw-1\"", others[i]);
    /* Same bytes up to a NUL: the length counts. */
    assert_false(aclcache_allowed(c, 1, "status/gw-1\0x", 13));
    assert_true(allowed(c, 1, "status/gw-1"));
    aclcache_free(c);
}

static void long_and_empty_topics_are_never_remembered(void **state)
{
    (void)state;
    aclcache *c = new_cache();
    char longest[ACLCACHE_TOPIC_MAX + 2];
    memset(longest, 'x', sizeof longest);
    aclcache_remember(c, 1, longest, ACLCACHE_TOPIC_MAX);
    assert_true(aclcache_allowed(c, 1, longest, ACLCACHE_TOPIC_MAX));
    aclcache_remember(c, 1, longest, ACLCACHE_TOPIC_MAX + 1);
    assert_false(aclcache_allowed(c, 1, longest, ACLCACHE_TOPIC_MAX + 1));
    aclcache_remember(c, 1, "", 0);
    assert_false(aclcache_allowed(c, 1, "", 0));
    aclcache_free(c);
}

/* However many topics a client cycles through, the cache stays one block
 * of ACLCACHE_ENTRIES entries, and the latest topic is always in it. */
static void the_cache_holds_at_most_its_entries_and_the_latest_topic(void **state)
{
    (void)state;
    aclcache *c = new_cache();
    long live = gmq_alloc_live();
    char t[32];
    for (int i = 0; i < 1000; i++) {
        snprintf(t, sizeof t, "telemetry/gw-1/%d", i);
        remember(c, 1, t);
        assert_true(allowed(c, 1, t));
    }
    assert_int_equal(gmq_alloc_live(), live); /* remembering never allocates */
    int hits = 0;
    for (int i = 0; i < 1000; i++) {
        snprintf(t, sizeof t, "telemetry/gw-1/%d", i);
        hits += allowed(c, 1, t);
    }
    assert_true(hits >= 1 && hits <= ACLCACHE_ENTRIES);
    aclcache_free(c);
}

/* The entry replaced is the least recently used of its set: a topic used
 * between any two insertions is never the one evicted, whatever else the
 * client publishes to. */
static void a_topic_in_steady_use_is_never_evicted(void **state)
{
    (void)state;
    aclcache *c = new_cache();
    remember(c, 1, "status/gw-1");
    char t[32];
    for (int i = 0; i < 2000; i++) {
        if (!allowed(c, 1, "status/gw-1"))
            fail_msg("the topic in steady use was evicted after %d other topics", i);
        snprintf(t, sizeof t, "telemetry/gw-1/%d", i);
        remember(c, 1, t);
    }
    aclcache_free(c);
}

/* Remembering a topic that is already there must not take a second entry:
 * with two ways per set, a duplicate would evict the other topic of the set. */
static void remembering_a_topic_twice_keeps_one_entry(void **state)
{
    (void)state;
    aclcache *c = new_cache();
    remember(c, 1, "status/gw-1");
    char t[32];
    for (int i = 0; i < 2000; i++) {
        snprintf(t, sizeof t, "telemetry/gw-1/%d", i);
        remember(c, 1, t);
        remember(c, 1, t);
        if (!allowed(c, 1, t) || !allowed(c, 1, "status/gw-1"))
            fail_msg("two topics did not both fit after %d rounds", i);
    }
    aclcache_free(c);
}

static void a_failed_allocation_returns_null_and_free_accepts_it(void **state)
{
    (void)state;
    long live = gmq_alloc_live();
    gmq_alloc_fail_at(1);
    aclcache *c = aclcache_new();
    gmq_alloc_fail_at(0);
    assert_null(c);
    aclcache_free(NULL);
    assert_int_equal(gmq_alloc_live(), live);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(an_empty_cache_allows_nothing),
        cmocka_unit_test(a_remembered_topic_is_allowed_under_its_generation_only),
        cmocka_unit_test(remembering_under_a_new_generation_drops_every_older_entry),
        cmocka_unit_test(topics_are_compared_byte_for_byte),
        cmocka_unit_test(long_and_empty_topics_are_never_remembered),
        cmocka_unit_test(the_cache_holds_at_most_its_entries_and_the_latest_topic),
        cmocka_unit_test(a_topic_in_steady_use_is_never_evicted),
        cmocka_unit_test(remembering_a_topic_twice_keeps_one_entry),
        cmocka_unit_test(a_failed_allocation_returns_null_and_free_accepts_it),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
