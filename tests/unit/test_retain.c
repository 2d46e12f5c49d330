/*
 * test_retain.c - unit tests of the retained-message store (broker/retain.c).
 *
 * Messages are made with gmq_msg_new; the tests hold their own reference and
 * check refs to see the store's. Matches are collected as message pointers,
 * sorted and compared; the randomized test checks retain_match against a
 * brute-force matcher (topic_ref.h) written from the spec's rules.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "broker/alloc.h"
#include "broker/msg.h"
#include "broker/retain.h"

#include "topic_ref.h"

/* ---- helpers ---------------------------------------------------------------- */

static gmq_msg *msg(const char *topic, const char *payload)
{
    gmq_msg *m = gmq_msg_new(topic, strlen(topic), (const uint8_t *)payload,
                             strlen(payload), 1, true);
    assert_non_null(m);
    return m;
}

/* Sets a fresh message and drops the test's reference: the store's is the
 * only one left. */
static gmq_msg *put(retain_store *r, const char *topic, const char *payload)
{
    gmq_msg *m = msg(topic, payload);
    assert_int_equal(retain_set(r, m), 0);
    gmq_msg_unref(m);
    return m; /* valid while stored */
}

static void clear(retain_store *r, const char *topic)
{
    gmq_msg *m = msg(topic, "");
    assert_int_equal(retain_set(r, m), 0);
    assert_int_equal(m->refs, 1); /* not stored [MQTT-3.3.1-11] */
    gmq_msg_unref(m);
}

typedef struct found {
    gmq_msg **v;
    size_t n, cap;
} found;

static void collect(gmq_msg *m, void *arg)
{
    found *f = arg;
    if (f->n == f->cap) {
        f->cap = f->cap ? f->cap * 2 : 16;
        f->v = realloc(f->v, f->cap * sizeof(*f->v));
        assert_non_null(f->v);
    }
    f->v[f->n++] = m;
}

static int ptr_cmp(const void *a, const void *b)
{
    uintptr_t x = (uintptr_t)*(gmq_msg *const *)a, y = (uintptr_t)*(gmq_msg *const *)b;
    return x < y ? -1 : x > y;
}

static void found_sort(found *f)
{
    if (f->n)
        qsort(f->v, f->n, sizeof(*f->v), ptr_cmp);
}

static bool found_equal(const found *a, const found *b)
{
    return a->n == b->n && (!a->n || memcmp(a->v, b->v, a->n * sizeof(*a->v)) == 0);
}

static void found_free(found *f)
{
    free(f->v);
    *f = (found){0};
}

static found match(const retain_store *r, const char *filter)
{
    found f = {0};
    retain_match(r, filter, strlen(filter), collect, &f);
    found_sort(&f);
    return f;
}

/* The sorted topics of the messages filter matches, joined by spaces. */
static char *matched_topics(const retain_store *r, const char *filter)
{
    static char buf[1024];
    found f = match(r, filter);
    const char **topics = malloc((f.n + 1) * sizeof(*topics));
    assert_non_null(topics);
    for (size_t i = 0; i < f.n; i++)
        topics[i] = f.v[i]->topic;
    for (size_t i = 1; i < f.n; i++) /* insertion sort: few entries */
        for (size_t j = i; j > 0 && strcmp(topics[j - 1], topics[j]) > 0; j--) {
            const char *tmp = topics[j];
            topics[j] = topics[j - 1];
            topics[j - 1] = tmp;
        }
    size_t off = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < f.n; i++)
        off += (size_t)snprintf(buf + off, sizeof(buf) - off, "%s[%s]", i ? " " : "",
                                topics[i]);
    free(topics);
    found_free(&f);
    return buf;
}

/* ---- tests ------------------------------------------------------------------ */

static void test_new_fails_cleanly_without_memory(void **state)
{
    for (unsigned long n = 1;; n++) {
        gmq_alloc_fail_at(n);
        retain_store *r = retain_new();
        gmq_alloc_fail_at(0);
        if (r) {
            assert_int_equal(retain_count(r), 0);
            retain_free(r);
            break;
        }
    }
}

/* The store keeps the message of a retained PUBLISH [MQTT-3.3.1-5]. */
static void test_set_stores_message_under_its_topic(void **state)
{
    retain_store *r = retain_new();
    gmq_msg *m = msg("a/b", "hello");
    assert_int_equal(retain_set(r, m), 0);
    assert_int_equal(m->refs, 2);
    assert_ptr_equal(retain_get(r, "a/b", 3), m);
    assert_null(retain_get(r, "a", 1));
    assert_null(retain_get(r, "a/b/c", 5));
    assert_null(retain_get(r, "a/bb", 4));
    assert_int_equal(retain_count(r), 1);
    assert_int_equal(retain_bytes(r), 5);
    retain_free(r);
    assert_int_equal(m->refs, 1);
    gmq_msg_unref(m);
}

/* A new retained message replaces the topic's previous one [MQTT-3.3.1-5],
 * whose reference is dropped. */
static void test_set_replaces_and_unrefs_previous(void **state)
{
    retain_store *r = retain_new();
    gmq_msg *old = msg("t", "one"), *fresh = msg("t", "three");
    assert_int_equal(retain_set(r, old), 0);
    assert_int_equal(retain_set(r, fresh), 0);
    assert_int_equal(old->refs, 1);
    assert_int_equal(fresh->refs, 2);
    assert_ptr_equal(retain_get(r, "t", 1), fresh);
    assert_int_equal(retain_count(r), 1);
    assert_int_equal(retain_bytes(r), 5);
    gmq_msg_unref(old);
    retain_free(r);
    assert_int_equal(fresh->refs, 1);
    gmq_msg_unref(fresh);
}

static void test_set_same_message_twice_holds_one_reference(void **state)
{
    retain_store *r = retain_new();
    gmq_msg *m = msg("t", "x");
    assert_int_equal(retain_set(r, m), 0);
    assert_int_equal(retain_set(r, m), 0);
    assert_int_equal(m->refs, 2);
    assert_int_equal(retain_count(r), 1);
    assert_int_equal(retain_bytes(r), 1);
    retain_free(r);
    assert_int_equal(m->refs, 1);
    gmq_msg_unref(m);
}

/* An empty retained message removes the topic's retained message
 * [MQTT-3.3.1-10] and is not stored itself [MQTT-3.3.1-11]. */
static void test_empty_payload_clears_topic(void **state)
{
    retain_store *r = retain_new();
    gmq_msg *m = msg("a/b", "data");
    assert_int_equal(retain_set(r, m), 0);
    clear(r, "a/b");
    assert_int_equal(m->refs, 1);
    assert_null(retain_get(r, "a/b", 3));
    assert_int_equal(retain_count(r), 0);
    assert_int_equal(retain_bytes(r), 0);
    assert_string_equal(matched_topics(r, "#"), "");
    gmq_msg_unref(m);
    retain_free(r);
}

static void test_empty_payload_for_unknown_topic_changes_nothing(void **state)
{
    retain_store *r = retain_new();
    put(r, "a/b", "data");
    clear(r, "a");     /* interior node without a message */
    clear(r, "a/c");   /* no such node */
    clear(r, "a/b/c"); /* deeper than any topic */
    assert_int_equal(retain_count(r), 1);
    assert_int_equal(retain_node_count(r), 2);
    assert_string_equal(matched_topics(r, "#"), "[a/b]");
    retain_free(r);
}

static void test_count_and_bytes_follow_set_replace_clear(void **state)
{
    retain_store *r = retain_new();
    put(r, "a", "12345");
    put(r, "b", "1");
    put(r, "a/b", "123");
    assert_int_equal(retain_count(r), 3);
    assert_int_equal(retain_bytes(r), 9);
    put(r, "a", "12");
    assert_int_equal(retain_count(r), 3);
    assert_int_equal(retain_bytes(r), 6);
    clear(r, "b");
    assert_int_equal(retain_count(r), 2);
    assert_int_equal(retain_bytes(r), 5);
    clear(r, "a");
    clear(r, "a/b");
    assert_int_equal(retain_count(r), 0);
    assert_int_equal(retain_bytes(r), 0);
    retain_free(r);
}

static void test_clear_prunes_empty_nodes(void **state)
{
    retain_store *r = retain_new();
    put(r, "a/b/c", "1");
    assert_int_equal(retain_node_count(r), 3);
    put(r, "a/b/d", "1");
    assert_int_equal(retain_node_count(r), 4);
    put(r, "a", "1");
    assert_int_equal(retain_node_count(r), 4);
    clear(r, "a/b/c");
    assert_int_equal(retain_node_count(r), 3);
    clear(r, "a/b/d");
    assert_int_equal(retain_node_count(r), 1); /* "b" went with its last child */
    clear(r, "a");
    assert_int_equal(retain_node_count(r), 0);
    retain_free(r);
}

static void test_clear_keeps_node_with_children(void **state)
{
    retain_store *r = retain_new();
    put(r, "a", "1");
    gmq_msg *m = put(r, "a/b", "2");
    clear(r, "a");
    assert_int_equal(retain_node_count(r), 2);
    assert_null(retain_get(r, "a", 1));
    assert_ptr_equal(retain_get(r, "a/b", 3), m);
    retain_free(r);
}

/* A new subscription gets the retained message of every matching topic
 * [MQTT-3.3.1-6]: exact filters find one topic. */
static void test_match_exact_filter_finds_one_topic(void **state)
{
    retain_store *r = retain_new();
    put(r, "a/b", "1");
    put(r, "a/c", "1");
    put(r, "a", "1");
    assert_string_equal(matched_topics(r, "a/b"), "[a/b]");
    assert_string_equal(matched_topics(r, "a"), "[a]");
    assert_string_equal(matched_topics(r, "a/x"), "");
    assert_string_equal(matched_topics(r, "a/b/c"), "");
    retain_free(r);
}

static void test_match_plus_visits_every_child_of_its_level(void **state)
{
    retain_store *r = retain_new();
    put(r, "a/b/x", "1");
    put(r, "a/c/x", "1");
    put(r, "a//x", "1");
    put(r, "a/d", "1");
    put(r, "a/d/x/y", "1");
    assert_string_equal(matched_topics(r, "a/+/x"), "[a//x] [a/b/x] [a/c/x]");
    assert_string_equal(matched_topics(r, "a/+"), "[a/d]");
    assert_string_equal(matched_topics(r, "+/+/+"), "[a//x] [a/b/x] [a/c/x]");
    assert_string_equal(matched_topics(r, "+"), "");
    retain_free(r);
}

/* '#' matches the level it follows and everything below it (section 4.7.1.2,
 * the '#' rule [MQTT-4.7.1-2]). */
static void test_match_hash_includes_parent_level(void **state)
{
    retain_store *r = retain_new();
    put(r, "a", "1");
    put(r, "a/b", "1");
    put(r, "a/b/c", "1");
    put(r, "ab", "1");
    assert_string_equal(matched_topics(r, "a/#"), "[a] [a/b] [a/b/c]");
    assert_string_equal(matched_topics(r, "a/b/#"), "[a/b] [a/b/c]");
    assert_string_equal(matched_topics(r, "#"), "[a] [a/b] [a/b/c] [ab]");
    assert_string_equal(matched_topics(r, "a/+/#"), "[a/b] [a/b/c]");
    assert_string_equal(matched_topics(r, "x/#"), "");
    retain_free(r);
}

/* A filter starting with a wildcard does not match topics starting with '$'
 * [MQTT-4.7.2-1]; past the first level '$' is ordinary. */
static void test_match_dollar_topics_need_explicit_first_level(void **state)
{
    retain_store *r = retain_new();
    put(r, "$SYS/x", "1");
    put(r, "$", "1");
    put(r, "a/$x", "1");
    assert_string_equal(matched_topics(r, "#"), "[a/$x]");
    assert_string_equal(matched_topics(r, "+/x"), "");
    assert_string_equal(matched_topics(r, "+"), "");
    assert_string_equal(matched_topics(r, "+/+"), "[a/$x]");
    assert_string_equal(matched_topics(r, "$SYS/#"), "[$SYS/x]");
    assert_string_equal(matched_topics(r, "$SYS/+"), "[$SYS/x]");
    assert_string_equal(matched_topics(r, "$"), "[$]");
    retain_free(r);
}

/* The '$' rule still holds when the first level is wide enough to be hashed:
 * wildcards walk the children in table order and must pass over every '$'
 * child wherever it lands, including first and last [MQTT-4.7.2-1]. */
static void test_match_dollar_rule_over_hashed_first_level(void **state)
{
    enum { N = 40 };
    char topic[32];
    retain_store *r = retain_new();
    for (int i = 0; i < N; i++) {
        snprintf(topic, sizeof(topic), i % 2 ? "$d%d" : "t%d", i);
        put(r, topic, "x");
        snprintf(topic, sizeof(topic), i % 2 ? "$d%d/x" : "t%d/x", i);
        put(r, topic, "x");
    }
    found f = match(r, "+");
    assert_int_equal(f.n, N / 2);
    found_free(&f);
    f = match(r, "+/x");
    assert_int_equal(f.n, N / 2);
    found_free(&f);
    f = match(r, "#");
    assert_int_equal(f.n, N); /* t<i> and t<i>/x for the even i */
    for (size_t i = 0; i < f.n; i++)
        assert_int_equal(f.v[i]->topic[0], 't');
    found_free(&f);
    assert_string_equal(matched_topics(r, "$d7/#"), "[$d7] [$d7/x]");
    retain_free(r);
}

/* Adjacent or outer separators make zero-length levels (section 4.7.3). */
static void test_match_empty_levels_are_distinct_levels(void **state)
{
    retain_store *r = retain_new();
    put(r, "/a", "1");
    put(r, "a/", "1");
    put(r, "a//b", "1");
    put(r, "a", "1");
    assert_string_equal(matched_topics(r, "+/a"), "[/a]");
    assert_string_equal(matched_topics(r, "a/+"), "[a/]");
    assert_string_equal(matched_topics(r, "a/+/b"), "[a//b]");
    assert_string_equal(matched_topics(r, "a/"), "[a/]");
    assert_string_equal(matched_topics(r, "/#"), "[/a]");
    assert_null(retain_get(r, "a/b", 3));
    retain_free(r);
}

static void test_free_drops_every_reference(void **state)
{
    enum { N = 100 };
    gmq_msg *m[N];
    char topic[32];
    retain_store *r = retain_new();
    for (int i = 0; i < N; i++) {
        snprintf(topic, sizeof(topic), "t/%d/%d", i % 7, i);
        m[i] = msg(topic, "x");
        assert_int_equal(retain_set(r, m[i]), 0);
    }
    retain_free(r);
    for (int i = 0; i < N; i++) {
        assert_int_equal(m[i]->refs, 1);
        gmq_msg_unref(m[i]);
    }
}

/* Thousands of sibling topics: the child table grows into a hash table and
 * shrinks back; '+' and '#' still see every child exactly once. */
static void test_wide_level_survives_growth_and_removal(void **state)
{
    enum { N = 3000 };
    char topic[32];
    retain_store *r = retain_new();
    for (int i = 0; i < N; i++) {
        snprintf(topic, sizeof(topic), "w/%d", i);
        put(r, topic, "x");
    }
    found f = match(r, "w/+");
    assert_int_equal(f.n, N);
    for (size_t i = 1; i < f.n; i++)
        assert_ptr_not_equal(f.v[i - 1], f.v[i]);
    found_free(&f);
    for (int k = 0; k < N; k++) {
        int i = (k * 7) % N; /* 7 and 3000 are coprime: a permutation */
        snprintf(topic, sizeof(topic), "w/%d", i);
        clear(r, topic);
        assert_null(retain_get(r, topic, strlen(topic)));
        if (k % 97 == 0) {
            for (int j = k + 1; j < N; j++) {
                snprintf(topic, sizeof(topic), "w/%d", (j * 7) % N);
                assert_non_null(retain_get(r, topic, strlen(topic)));
            }
            f = match(r, "w/#");
            assert_int_equal(f.n, (size_t)(N - k - 1));
            found_free(&f);
        }
    }
    assert_int_equal(retain_node_count(r), 0);
    retain_free(r);
}

/* Many small hashed child tables (9 to 12 children in 16 slots) emptied in
 * random order: probe runs often wrap past the table's end, which deletion
 * must handle. */
static void test_small_hashed_tables_survive_random_clear(void **state)
{
    enum { PARENTS = 300, KIDS = 12 };
    char name[32];
    rng_state = 0x7654321u;
    retain_store *r = retain_new();
    for (int p = 0; p < PARENTS; p++) {
        int order[KIDS];
        bool live[KIDS];
        for (int i = 0; i < KIDS; i++) {
            snprintf(name, sizeof(name), "p%d/%d", p, i);
            put(r, name, "x");
            order[i] = i;
            live[i] = true;
        }
        for (int i = KIDS - 1; i > 0; i--) { /* Fisher-Yates */
            int j = (int)(rng() % (uint32_t)(i + 1)), tmp = order[i];
            order[i] = order[j];
            order[j] = tmp;
        }
        for (int k = 0; k < KIDS; k++) {
            snprintf(name, sizeof(name), "p%d/%d", p, order[k]);
            clear(r, name);
            live[order[k]] = false;
            for (int i = 0; i < KIDS; i++) {
                snprintf(name, sizeof(name), "p%d/%d", p, i);
                assert_true((retain_get(r, name, strlen(name)) != NULL) == live[i]);
            }
            snprintf(name, sizeof(name), "p%d/+", p);
            found f = match(r, name);
            assert_int_equal(f.n, (size_t)(KIDS - k - 1));
            found_free(&f);
        }
    }
    assert_int_equal(retain_node_count(r), 0);
    retain_free(r);
}

/* 65535 bytes of "a/a/..." give 32768 levels: setting, matching, clearing and
 * freeing must not recurse per level. */
static void test_deepest_topic_without_recursion(void **state)
{
    enum { LEVELS = 32768, LEN = 2 * LEVELS - 1 };
    char *topic = malloc(LEN + 1), *filter = malloc(LEN + 1);
    assert_non_null(topic);
    assert_non_null(filter);
    for (size_t i = 0; i < LEN; i++) {
        topic[i] = i % 2 ? '/' : 'a';
        filter[i] = i % 2 ? '/' : '+';
    }
    topic[LEN] = filter[LEN] = '\0';
    retain_store *r = retain_new();
    gmq_msg *deep = put(r, topic, "x");
    assert_int_equal(retain_node_count(r), LEVELS);
    found f = match(r, filter);
    assert_int_equal(f.n, 1);
    assert_ptr_equal(f.v[0], deep);
    found_free(&f);
    f = match(r, "#");
    assert_int_equal(f.n, 1);
    found_free(&f);
    gmq_msg *m = gmq_msg_new(topic, 3, (const uint8_t *)"y", 1, 0, true); /* "a/a" */
    assert_non_null(m);
    assert_int_equal(retain_set(r, m), 0);
    f = match(r, "a/#");
    assert_int_equal(f.n, 2);
    found_free(&f);
    clear(r, topic);
    assert_int_equal(retain_node_count(r), 2); /* pruned back up to "a/a" */
    put(r, topic, "z");
    retain_free(r); /* 32768 levels deep again */
    assert_int_equal(m->refs, 1);
    gmq_msg_unref(m);
    free(topic);
    free(filter);
}

typedef struct entry {
    char topic[64];
    gmq_msg *msg; /* NULL when cleared */
} entry;

static void check_against_reference(const retain_store *r, const entry *e, size_t ne,
                                    int filters)
{
    char filter[64];
    found want = {0};
    for (int k = 0; k < filters; k++) {
        random_filter(filter, sizeof(filter));
        want.n = 0;
        for (size_t i = 0; i < ne; i++)
            if (e[i].msg && ref_match(filter, e[i].topic))
                collect(e[i].msg, &want);
        found_sort(&want);
        found got = match(r, filter);
        if (!found_equal(&got, &want))
            fail_msg("filter \"%s\": %zu matches, reference %zu", filter, got.n, want.n);
        found_free(&got);
    }
    found_free(&want);
}

static void test_random_topics_match_like_reference(void **state)
{
    enum { SETS = 4000, FILTERS = 2000 };
    entry *e = calloc(SETS, sizeof(*e));
    assert_non_null(e);
    size_t ne = 0, live = 0, bytes = 0;
    rng_state = 0x2545f491u;
    retain_store *r = retain_new();
    for (int k = 0; k < SETS; k++) {
        char topic[64];
        random_topic(topic, sizeof(topic));
        size_t i = 0;
        while (i < ne && strcmp(e[i].topic, topic) != 0)
            i++;
        if (i == ne)
            snprintf(e[ne++].topic, sizeof(e[0].topic), "%s", topic);
        if (e[i].msg) {
            live--;
            bytes -= e[i].msg->payload_len;
        }
        if (rng() % 4 == 0) {
            clear(r, topic);
            e[i].msg = NULL;
        } else {
            e[i].msg = put(r, topic, rng() % 2 ? "xx" : "yyyyy");
            live++;
            bytes += e[i].msg->payload_len;
        }
    }
    assert_int_equal(retain_count(r), live);
    assert_int_equal(retain_bytes(r), bytes);
    for (size_t i = 0; i < ne; i++)
        assert_ptr_equal(retain_get(r, e[i].topic, strlen(e[i].topic)), e[i].msg);
    check_against_reference(r, e, ne, FILTERS);

    for (size_t i = 0; i < ne; i++)
        if (e[i].msg) {
            clear(r, e[i].topic);
            e[i].msg = NULL;
        }
    assert_int_equal(retain_count(r), 0);
    assert_int_equal(retain_bytes(r), 0);
    assert_int_equal(retain_node_count(r), 0);
    retain_free(r);
    free(e);
}

/* What the store shows from outside: its counters and every message "#" and
 * the '$' filters match. */
static found snapshot(const retain_store *r)
{
    found f = {0};
    retain_match(r, "#", 1, collect, &f);
    retain_match(r, "$SYS/#", 6, collect, &f);
    collect((gmq_msg *)(uintptr_t)retain_count(r), &f);
    collect((gmq_msg *)(uintptr_t)retain_bytes(r), &f);
    collect((gmq_msg *)(uintptr_t)retain_node_count(r), &f);
    return f;
}

/* For each set, fail the 1st, 2nd, ... allocation until it succeeds: every
 * failure returns -1 with the store and the message unchanged; leaks show
 * under ASan. */
static void test_set_failure_leaves_store_unchanged(void **state)
{
    char topics[80][32];
    size_t nt = 0, failed = 0;
    snprintf(topics[nt++], 32, "a/b");
    snprintf(topics[nt++], 32, "a/b"); /* replace: no allocation */
    snprintf(topics[nt++], 32, "a/b/c/d");
    for (int i = 0; i < 40; i++)       /* dense table, then hashed growth */
        snprintf(topics[nt++], 32, "w/%d", i);
    snprintf(topics[nt++], 32, "$SYS/x");
    snprintf(topics[nt++], 32, "/");
    snprintf(topics[nt++], 32, "d/e/f/g");

    retain_store *r = retain_new();
    for (size_t k = 0; k < nt; k++) {
        gmq_msg *m = msg(topics[k], "payload");
        unsigned long n;
        for (n = 1; n < 100; n++) {
            found before = snapshot(r);
            gmq_alloc_fail_at(n);
            int rc = retain_set(r, m);
            gmq_alloc_fail_at(0);
            if (rc == 0) {
                found_free(&before);
                break;
            }
            assert_int_equal(rc, -1);
            assert_int_equal(m->refs, 1);
            failed++;
            found after = snapshot(r);
            assert_true(found_equal(&after, &before));
            found_free(&before);
            found_free(&after);
        }
        assert_true(n < 100);
        assert_int_equal(m->refs, 2);
        assert_ptr_equal(retain_get(r, topics[k], strlen(topics[k])), m);
        gmq_msg_unref(m);
    }
    assert_int_equal(retain_count(r), nt - 1);
    assert_true(failed >= nt - 1); /* every set but the replace allocates here */
    retain_free(r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_new_fails_cleanly_without_memory),
        cmocka_unit_test(test_set_stores_message_under_its_topic),
        cmocka_unit_test(test_set_replaces_and_unrefs_previous),
        cmocka_unit_test(test_set_same_message_twice_holds_one_reference),
        cmocka_unit_test(test_empty_payload_clears_topic),
        cmocka_unit_test(test_empty_payload_for_unknown_topic_changes_nothing),
        cmocka_unit_test(test_count_and_bytes_follow_set_replace_clear),
        cmocka_unit_test(test_clear_prunes_empty_nodes),
        cmocka_unit_test(test_clear_keeps_node_with_children),
        cmocka_unit_test(test_match_exact_filter_finds_one_topic),
        cmocka_unit_test(test_match_plus_visits_every_child_of_its_level),
        cmocka_unit_test(test_match_hash_includes_parent_level),
        cmocka_unit_test(test_match_dollar_topics_need_explicit_first_level),
        cmocka_unit_test(test_match_dollar_rule_over_hashed_first_level),
        cmocka_unit_test(test_match_empty_levels_are_distinct_levels),
        cmocka_unit_test(test_free_drops_every_reference),
        cmocka_unit_test(test_wide_level_survives_growth_and_removal),
        cmocka_unit_test(test_small_hashed_tables_survive_random_clear),
        cmocka_unit_test(test_deepest_topic_without_recursion),
        cmocka_unit_test(test_random_topics_match_like_reference),
        cmocka_unit_test(test_set_failure_leaves_store_unchanged),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
