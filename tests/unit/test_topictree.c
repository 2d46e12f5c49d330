/*
 * test_topictree.c - unit tests of the subscription index (broker/topictree.c).
 *
 * Subscribers are addresses of the bytes of subs[], so they are distinct
 * valid pointers the tree never dereferences. Matches are collected, sorted
 * and compared as multisets; the randomized test checks the tree against a
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
#include "broker/topictree.h"

#include "topic_ref.h"

static char subs[4096];
#define SUB(i) ((void *)&subs[(i)])
static char crowd[50000]; /* subscribers for the tests of one very shared filter */
#define CROWD(i) ((void *)&crowd[(i)])

/* ---- helpers ---------------------------------------------------------------- */

typedef struct hit {
    void *sub;
    uint8_t qos;
} hit;

typedef struct hits {
    hit *v;
    size_t n, cap;
} hits;

static void collect(void *sub, uint8_t qos, void *arg)
{
    hits *h = arg;
    if (h->n == h->cap) {
        h->cap = h->cap ? h->cap * 2 : 16;
        h->v = realloc(h->v, h->cap * sizeof(*h->v));
        assert_non_null(h->v);
    }
    h->v[h->n++] = (hit){sub, qos};
}

static int hit_cmp(const void *a, const void *b)
{
    const hit *x = a, *y = b;
    if (x->sub != y->sub)
        return (uintptr_t)x->sub < (uintptr_t)y->sub ? -1 : 1;
    return (int)x->qos - (int)y->qos;
}

static void hits_sort(hits *h)
{
    if (h->n)
        qsort(h->v, h->n, sizeof(*h->v), hit_cmp);
}

/* Field by field: hit has padding. */
static bool hits_equal(const hits *a, const hits *b)
{
    if (a->n != b->n)
        return false;
    for (size_t i = 0; i < a->n; i++)
        if (a->v[i].sub != b->v[i].sub || a->v[i].qos != b->v[i].qos)
            return false;
    return true;
}

static void hits_free(hits *h)
{
    free(h->v);
    *h = (hits){0};
}

static hits match(const topictree *t, const char *topic)
{
    hits h = {0};
    topictree_match(t, topic, strlen(topic), collect, &h);
    hits_sort(&h);
    return h;
}

static size_t match_count(const topictree *t, const char *topic)
{
    hits h = match(t, topic);
    size_t n = h.n;
    hits_free(&h);
    return n;
}

/* True when topic is matched exactly once, by sub with qos. */
static bool matched_once_by(const topictree *t, const char *topic, void *sub, uint8_t qos)
{
    hits h = match(t, topic);
    bool ok = h.n == 1 && h.v[0].sub == sub && h.v[0].qos == qos;
    hits_free(&h);
    return ok;
}

static void add(topictree *t, const char *filter, void *sub, uint8_t qos)
{
    assert_int_equal(topictree_add(t, filter, strlen(filter), sub, qos), 0);
}

static bool del(topictree *t, const char *filter, void *sub)
{
    return topictree_remove(t, filter, strlen(filter), sub);
}

/* ---- tests ------------------------------------------------------------------ */

static void test_new_fails_cleanly_without_memory(void **state)
{
    for (unsigned long n = 1;; n++) {
        gmq_alloc_fail_at(n);
        topictree *t = topictree_new();
        gmq_alloc_fail_at(0);
        if (t) {
            assert_int_equal(topictree_count(t), 0);
            topictree_free(t);
            break;
        }
    }
}

static void test_exact_filter_matches_only_same_topic(void **state)
{
    topictree *t = topictree_new();
    add(t, "a/b", SUB(1), 1);
    assert_true(matched_once_by(t, "a/b", SUB(1), 1));
    assert_int_equal(match_count(t, "a"), 0);
    assert_int_equal(match_count(t, "a/b/c"), 0);
    assert_int_equal(match_count(t, "a/bb"), 0);
    assert_int_equal(match_count(t, "A/b"), 0); /* no normalization [MQTT-4.7.3-4] */
    assert_int_equal(topictree_count(t), 1);
    topictree_free(t);
}

/* '+' matches exactly one level, including an empty one (section 4.7.1.3). */
static void test_plus_matches_exactly_one_level(void **state)
{
    topictree *t = topictree_new();
    add(t, "a/+/c", SUB(1), 0);
    add(t, "+", SUB(2), 0);
    assert_true(matched_once_by(t, "a/b/c", SUB(1), 0));
    assert_true(matched_once_by(t, "a//c", SUB(1), 0));
    assert_int_equal(match_count(t, "a/c"), 0);
    assert_int_equal(match_count(t, "a/b/x/c"), 0);
    assert_true(matched_once_by(t, "x", SUB(2), 0));
    assert_int_equal(match_count(t, "x/y"), 0);
    assert_int_equal(match_count(t, "/x"), 0);
    topictree_free(t);
}

/* '#' matches any number of following levels (section 4.7.1.2). */
static void test_hash_matches_remaining_levels(void **state)
{
    topictree *t = topictree_new();
    add(t, "a/#", SUB(1), 2);
    assert_true(matched_once_by(t, "a/b", SUB(1), 2));
    assert_true(matched_once_by(t, "a/b/c/d", SUB(1), 2));
    assert_true(matched_once_by(t, "a/", SUB(1), 2));
    assert_int_equal(match_count(t, "b/a"), 0);
    assert_int_equal(match_count(t, "ab"), 0);
    topictree_free(t);
}

/* "a/#" also matches the parent level "a" (section 4.7.1.2, the '#' rule
 * [MQTT-4.7.1-2]). */
static void test_hash_matches_parent_level(void **state)
{
    topictree *t = topictree_new();
    add(t, "a/#", SUB(1), 1);
    add(t, "a/+/#", SUB(2), 1);
    assert_true(matched_once_by(t, "a", SUB(1), 1));
    hits h = match(t, "a/b");
    assert_int_equal(h.n, 2);
    hits_free(&h);
    topictree_free(t);
}

static void test_hash_alone_matches_every_topic(void **state)
{
    topictree *t = topictree_new();
    add(t, "#", SUB(1), 0);
    assert_true(matched_once_by(t, "a", SUB(1), 0));
    assert_true(matched_once_by(t, "/", SUB(1), 0));
    assert_true(matched_once_by(t, "a/b/c", SUB(1), 0));
    assert_true(matched_once_by(t, "a/$b", SUB(1), 0));
    topictree_free(t);
}

/* A topic whose first level starts with '$' is not matched by a filter whose
 * first level is a wildcard [MQTT-4.7.2-1]; other levels are ordinary. */
static void test_dollar_topic_needs_explicit_first_level(void **state)
{
    topictree *t = topictree_new();
    add(t, "#", SUB(1), 0);
    add(t, "+/x", SUB(2), 0);
    add(t, "+/#", SUB(3), 0);
    assert_int_equal(match_count(t, "$SYS/x"), 0);
    assert_int_equal(match_count(t, "$"), 0);
    add(t, "$SYS/#", SUB(4), 1);
    add(t, "$SYS/+", SUB(5), 1);
    add(t, "$SYS/x", SUB(6), 1);
    hits h = match(t, "$SYS/x");
    assert_int_equal(h.n, 3);
    assert_ptr_equal(h.v[0].sub, SUB(4));
    assert_ptr_equal(h.v[1].sub, SUB(5));
    assert_ptr_equal(h.v[2].sub, SUB(6));
    hits_free(&h);
    assert_true(matched_once_by(t, "$SYS", SUB(4), 1));
    h = match(t, "a/$x"); /* '$' past the first level: "#", "+/x"? no, "+/#" */
    assert_int_equal(h.n, 2);
    assert_ptr_equal(h.v[0].sub, SUB(1));
    assert_ptr_equal(h.v[1].sub, SUB(3));
    hits_free(&h);
    h = match(t, "b/x"); /* not a '$' topic: all three wildcard filters */
    assert_int_equal(h.n, 3);
    hits_free(&h);
    topictree_free(t);
}

/* Adjacent or outer separators make zero-length levels, which match like any
 * other level (section 4.7.3). */
static void test_empty_levels_are_distinct_levels(void **state)
{
    topictree *t = topictree_new();
    add(t, "/a", SUB(1), 0);
    add(t, "a//b", SUB(2), 0);
    add(t, "a/", SUB(3), 0);
    add(t, "+/a", SUB(4), 0);
    assert_int_equal(match_count(t, "a"), 0);
    hits h = match(t, "/a");
    assert_int_equal(h.n, 2); /* "/a" and "+/a" */
    hits_free(&h);
    assert_true(matched_once_by(t, "a//b", SUB(2), 0));
    assert_int_equal(match_count(t, "a/b"), 0);
    assert_true(matched_once_by(t, "a/", SUB(3), 0));
    add(t, "a/+", SUB(5), 0);
    h = match(t, "a/"); /* "a/" and "a/+" (empty last level) */
    assert_int_equal(h.n, 2);
    hits_free(&h);
    topictree_free(t);
}

/* Subscribing again to the same filter replaces the subscription: the QoS is
 * updated and it is still one subscription [MQTT-3.8.4-3]. */
static void test_readd_updates_qos(void **state)
{
    topictree *t = topictree_new();
    add(t, "a/+", SUB(1), 0);
    size_t nodes = topictree_node_count(t);
    add(t, "a/+", SUB(1), 2);
    assert_int_equal(topictree_count(t), 1);
    assert_int_equal(topictree_node_count(t), nodes);
    assert_true(matched_once_by(t, "a/b", SUB(1), 2));
    add(t, "a/+", SUB(1), 1);
    assert_true(matched_once_by(t, "a/b", SUB(1), 1));
    topictree_free(t);
}

static void test_overlapping_filters_report_each_subscription(void **state)
{
    topictree *t = topictree_new();
    add(t, "a/b", SUB(1), 0);
    add(t, "a/+", SUB(1), 1);
    add(t, "#", SUB(1), 2);
    hits h = match(t, "a/b");
    assert_int_equal(h.n, 3); /* the caller folds QoS */
    assert_int_equal(h.v[0].qos + h.v[1].qos + h.v[2].qos, 3);
    hits_free(&h);
    topictree_free(t);
}

static void test_remove_returns_false_for_unknown_pair(void **state)
{
    topictree *t = topictree_new();
    add(t, "a/b", SUB(1), 0);
    assert_false(del(t, "a/c", SUB(1)));   /* no such filter */
    assert_false(del(t, "a", SUB(1)));     /* interior node, no subscription */
    assert_false(del(t, "a/b/c", SUB(1))); /* deeper than any filter */
    assert_false(del(t, "a/b", SUB(2)));   /* other subscriber */
    assert_false(del(t, "a/+", SUB(1)));
    assert_int_equal(topictree_count(t), 1);
    assert_true(del(t, "a/b", SUB(1)));
    assert_false(del(t, "a/b", SUB(1))); /* twice */
    assert_int_equal(topictree_count(t), 0);
    assert_int_equal(match_count(t, "a/b"), 0);
    topictree_free(t);
}

static void test_remove_prunes_empty_nodes(void **state)
{
    topictree *t = topictree_new();
    add(t, "a/b/c", SUB(1), 0);
    assert_int_equal(topictree_node_count(t), 3);
    add(t, "a/b/d", SUB(1), 0);
    assert_int_equal(topictree_node_count(t), 4);
    add(t, "a/+/#", SUB(1), 0);
    assert_int_equal(topictree_node_count(t), 6);
    add(t, "a", SUB(2), 0);
    assert_int_equal(topictree_node_count(t), 6);

    assert_true(del(t, "a/b/c", SUB(1)));
    assert_int_equal(topictree_node_count(t), 5);
    assert_true(del(t, "a/b/d", SUB(1)));
    assert_int_equal(topictree_node_count(t), 3); /* "b" went with its last child */
    assert_true(del(t, "a/+/#", SUB(1)));
    assert_int_equal(topictree_node_count(t), 1); /* "a" still has a subscription */
    assert_true(del(t, "a", SUB(2)));
    assert_int_equal(topictree_node_count(t), 0);
    assert_int_equal(topictree_count(t), 0);
    topictree_free(t);
}

static void test_remove_keeps_node_with_children(void **state)
{
    topictree *t = topictree_new();
    add(t, "a", SUB(1), 0);
    add(t, "a/b", SUB(2), 0);
    assert_true(del(t, "a", SUB(1)));
    assert_int_equal(topictree_node_count(t), 2);
    assert_int_equal(match_count(t, "a"), 0);
    assert_true(matched_once_by(t, "a/b", SUB(2), 0));
    topictree_free(t);
}

static void test_many_subscribers_on_one_filter(void **state)
{
    enum { N = 2000 };
    topictree *t = topictree_new();
    for (int i = 0; i < N; i++)
        add(t, "x/#", SUB(i), (uint8_t)(i % 3));
    assert_int_equal(topictree_count(t), N);
    hits h = match(t, "x/y");
    assert_int_equal(h.n, N);
    for (int i = 0; i < N; i++) {
        assert_ptr_equal(h.v[i].sub, SUB(i)); /* each exactly once */
        assert_int_equal(h.v[i].qos, i % 3);
    }
    hits_free(&h);
    for (int i = 0; i < N; i += 2)
        assert_true(del(t, "x/#", SUB(i)));
    h = match(t, "x");
    assert_int_equal(h.n, N / 2);
    for (int i = 0; i < N / 2; i++)
        assert_ptr_equal(h.v[i].sub, SUB(2 * i + 1));
    hits_free(&h);
    for (int i = 1; i < N; i += 2)
        assert_true(del(t, "x/#", SUB(i)));
    assert_int_equal(topictree_node_count(t), 0);
    topictree_free(t);
}

/* Every (subscriber, qos) of crowd[0..n) with live[i] set, each exactly once,
 * is what "fleet/7/status" matches; the crowd's filter is "fleet/+/status". */
static void check_crowd(const topictree *t, const bool *live, const uint8_t *qos, size_t n)
{
    hits h = match(t, "fleet/7/status");
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (!live[i])
            continue;
        if (k >= h.n || h.v[k].sub != CROWD(i) || h.v[k].qos != qos[i])
            fail_msg("subscriber %zu: missing, repeated or wrong qos", i);
        k++;
    }
    assert_int_equal(h.n, k);
    hits_free(&h);
}

/* 50000 subscribers on one filter, as when a whole fleet shares a filter:
 * subscribe, resubscribe with new QoS, then unsubscribe them all in a
 * scattered order. Counts and match results stay exact throughout. */
static void test_fifty_thousand_subscribers_on_one_filter(void **state)
{
    enum { N = 50000 };
    static const char filter[] = "fleet/+/status";
    static bool live[N];
    static uint8_t qos[N];
    topictree *t = topictree_new();
    for (size_t i = 0; i < N; i++) {
        qos[i] = (uint8_t)(i % 3);
        add(t, filter, CROWD(i), qos[i]);
        live[i] = true;
    }
    assert_int_equal(topictree_count(t), N);
    assert_int_equal(topictree_node_count(t), 3);
    check_crowd(t, live, qos, N);

    for (size_t i = 0; i < N; i += 7) { /* [MQTT-3.8.4-3]: same pair, new qos */
        qos[i] = (uint8_t)(2 - qos[i]);
        add(t, filter, CROWD(i), qos[i]);
    }
    assert_int_equal(topictree_count(t), N);
    check_crowd(t, live, qos, N);

    size_t left = N;
    for (size_t k = 0; k < N; k++) {
        size_t i = k * 7919 % N; /* 7919 is prime and coprime to N: a permutation */
        if (i % 2 == 0)
            continue;
        assert_true(del(t, filter, CROWD(i)));
        assert_false(del(t, filter, CROWD(i)));
        live[i] = false;
        left--;
    }
    assert_int_equal(topictree_count(t), left);
    assert_int_equal(left, N / 2);
    check_crowd(t, live, qos, N);

    for (size_t k = 0; k < N; k++) {
        size_t i = k * 7919 % N;
        if (live[i]) {
            assert_true(del(t, filter, CROWD(i)));
            live[i] = false;
        }
    }
    assert_int_equal(topictree_count(t), 0);
    assert_int_equal(topictree_node_count(t), 0);
    assert_int_equal(match_count(t, "fleet/7/status"), 0);
    topictree_free(t);
}

/* Random subscribe, resubscribe and unsubscribe on one filter, so the
 * subscriber index is built, grown, shrunk and dropped many times over while
 * removals keep moving the last entry into holes; compared with a plain
 * array of what should be there. */
static void test_random_churn_on_one_filter_matches_reference(void **state)
{
    enum { POOL = 3000, PHASE = 20000, OPS = 9 * PHASE };
    static const char filter[] = "fleet/+/status";
    static bool live[POOL];
    static uint8_t qos[POOL];
    memset(live, 0, sizeof(live));
    size_t count = 0;
    rng_state = 0xc0ffee11u;
    topictree *t = topictree_new();
    for (int op = 0; op < OPS; op++) {
        /* Phases: fill most of the pool, empty nearly all of it (dropping
         * the index), then churn a few dozen around the index threshold. */
        int phase = op / PHASE % 3;
        size_t i = rng() % (phase == 2 ? 40u : (uint32_t)POOL);
        uint32_t add_in_20 = phase == 0 ? 15 : phase == 1 ? 0 : 10;
        if (rng() % 20 < add_in_20) {
            qos[i] = (uint8_t)(rng() % 3);
            add(t, filter, CROWD(i), qos[i]);
            count += !live[i];
            live[i] = true;
        } else {
            assert_int_equal(del(t, filter, CROWD(i)), live[i]);
            count -= live[i];
            live[i] = false;
        }
        assert_int_equal(topictree_count(t), count);
        if (op % 5000 == 0)
            check_crowd(t, live, qos, POOL);
    }
    check_crowd(t, live, qos, POOL);
    topictree_free(t);
}

/* Churn at the densest load the subscriber index allows: at most 32
 * subscribers, so its 64 slots stay up to half full and probe runs often
 * wrap past the end of the table, which deletion must handle. Each round
 * uses a fresh block of addresses for a different layout. */
static void test_dense_index_churn_keeps_every_subscriber(void **state)
{
    enum { SET = 32, ROUNDS = 200, OPS = 2000 };
    static const char filter[] = "fleet/+/status";
    bool live[SET];
    uint8_t qos[SET];
    rng_state = 0x5eed1234u;
    topictree *t = topictree_new();
    for (int round = 0; round < ROUNDS; round++) {
        size_t base = (size_t)round * SET;
        size_t count = 0;
        memset(live, 0, sizeof(live));
        for (int op = 0; op < OPS; op++) {
            size_t i = rng() % SET;
            if (rng() % 4) {
                qos[i] = (uint8_t)(rng() % 3);
                add(t, filter, CROWD(base + i), qos[i]);
                count += !live[i];
                live[i] = true;
            } else {
                assert_int_equal(del(t, filter, CROWD(base + i)), live[i]);
                count -= live[i];
                live[i] = false;
            }
            assert_int_equal(topictree_count(t), count);
        }
        for (size_t i = 0; i < SET; i++)
            if (live[i])
                assert_true(del(t, filter, CROWD(base + i)));
        assert_int_equal(topictree_count(t), 0);
    }
    topictree_free(t);
}

/* Subscribing many to one filter while allocations fail, through the
 * building and every growth of the subscriber index: each failure returns -1
 * and the tree matches and counts exactly as before. */
static void test_add_failure_with_indexed_subscribers_leaves_tree_unchanged(void **state)
{
    enum { N = 300 };
    size_t failed = 0;
    topictree *t = topictree_new();
    for (size_t k = 0; k < N; k++) {
        unsigned long n;
        for (n = 1; n < 100; n++) {
            hits before = match(t, "a/b");
            gmq_alloc_fail_at(n);
            int rc = topictree_add(t, "a/b", 3, CROWD(k), 1);
            gmq_alloc_fail_at(0);
            if (rc == 0) {
                hits_free(&before);
                break;
            }
            assert_int_equal(rc, -1);
            failed++;
            hits after = match(t, "a/b");
            assert_true(hits_equal(&after, &before));
            assert_int_equal(topictree_count(t), k);
            hits_free(&before);
            hits_free(&after);
        }
        assert_true(n < 100);
    }
    assert_int_equal(topictree_count(t), N);
    assert_true(failed >= 10); /* vector doublings and index builds fail */
    topictree_free(t);
}

/* Unsubscribing never fails: when shrinking the vector or its index finds
 * no memory, the subscription is still gone and the rest still match. */
static void test_remove_without_memory_still_removes(void **state)
{
    enum { N = 300 };
    static bool live[N];
    static uint8_t qos[N];
    topictree *t = topictree_new();
    for (size_t i = 0; i < N; i++) {
        qos[i] = 1;
        live[i] = true;
        add(t, "fleet/+/status", CROWD(i), 1);
    }
    for (size_t i = 0; i < N; i++) {
        gmq_alloc_fail_at(1);
        assert_true(del(t, "fleet/+/status", CROWD(i)));
        gmq_alloc_fail_at(0);
        live[i] = false;
        assert_int_equal(topictree_count(t), N - i - 1);
        if (i % 23 == 0)
            check_crowd(t, live, qos, N);
    }
    assert_int_equal(topictree_node_count(t), 0);
    topictree_free(t);
}

/* Thousands of siblings: the child table grows into a hash table and shrinks
 * back while every lookup keeps finding the right child. */
static void test_wide_node_survives_growth_and_removal(void **state)
{
    enum { N = 3000 };
    char name[32];
    topictree *t = topictree_new();
    for (int i = 0; i < N; i++) {
        snprintf(name, sizeof(name), "w/%d", i);
        add(t, name, SUB(i), 0);
    }
    assert_int_equal(topictree_node_count(t), N + 1);
    for (int i = 0; i < N; i++) {
        snprintf(name, sizeof(name), "w/%d", i);
        assert_true(matched_once_by(t, name, SUB(i), 0));
    }
    /* remove in a scattered order, checking the survivors as we go */
    for (int k = 0; k < N; k++) {
        int i = (k * 7) % N; /* 7 and 3000 are coprime: a permutation */
        snprintf(name, sizeof(name), "w/%d", i);
        assert_true(del(t, name, SUB(i)));
        assert_int_equal(match_count(t, name), 0);
        if (k % 97 == 0)
            for (int j = k + 1; j < N; j++) {
                int other = (j * 7) % N;
                snprintf(name, sizeof(name), "w/%d", other);
                assert_true(matched_once_by(t, name, SUB(other), 0));
            }
    }
    assert_int_equal(topictree_node_count(t), 0);
    topictree_free(t);
}

/* Many small hashed child tables (9 to 12 children in 16 slots) emptied in
 * random order: probe runs often wrap past the table's end, which deletion
 * must handle. */
static void test_small_hashed_tables_survive_random_removal(void **state)
{
    enum { PARENTS = 300, KIDS = 12 };
    char name[32];
    rng_state = 0x1234567u;
    topictree *t = topictree_new();
    for (int p = 0; p < PARENTS; p++) {
        int order[KIDS];
        bool live[KIDS];
        for (int i = 0; i < KIDS; i++) {
            snprintf(name, sizeof(name), "p%d/%d", p, i);
            add(t, name, SUB(i), 0);
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
            assert_true(del(t, name, SUB(order[k])));
            live[order[k]] = false;
            for (int i = 0; i < KIDS; i++) {
                snprintf(name, sizeof(name), "p%d/%d", p, i);
                assert_int_equal(match_count(t, name), live[i] ? 1 : 0);
            }
        }
    }
    assert_int_equal(topictree_node_count(t), 0);
    topictree_free(t);
}

/* 65535 bytes of "+/+/..." give 32768 levels: matching, removing and freeing
 * must not recurse per level. */
static void test_deepest_filter_matches_without_recursion(void **state)
{
    enum { LEVELS = 32768, LEN = 2 * LEVELS - 1 };
    char *filter = malloc(LEN + 1), *topic = malloc(LEN + 1);
    assert_non_null(filter);
    assert_non_null(topic);
    for (size_t i = 0; i < LEN; i++) {
        filter[i] = i % 2 ? '/' : '+';
        topic[i] = i % 2 ? '/' : 'a';
    }
    filter[LEN] = topic[LEN] = '\0';
    topictree *t = topictree_new();
    add(t, filter, SUB(1), 1);
    filter[LEN - 1] = '#';
    add(t, filter, SUB(2), 1); /* 32767 x "+" then "#" */
    assert_int_equal(topictree_node_count(t), LEVELS + 1);
    hits h = match(t, topic);
    assert_int_equal(h.n, 2);
    hits_free(&h);
    topic[LEN - 2] = '\0'; /* one level less: only the '#' filter, via its parent */
    assert_true(matched_once_by(t, topic, SUB(2), 1));
    assert_true(del(t, filter, SUB(2)));
    topictree_free(t); /* still 32768 levels deep */
    free(filter);
    free(topic);
}

typedef struct entry {
    char filter[64];
    void *sub;
    uint8_t qos;
    bool live;
} entry;

static void check_against_reference(const topictree *t, const entry *e, size_t ne,
                                    int topics)
{
    char topic[64];
    hits want = {0};
    for (int k = 0; k < topics; k++) {
        random_topic(topic, sizeof(topic));
        want.n = 0;
        for (size_t i = 0; i < ne; i++)
            if (e[i].live && ref_match(e[i].filter, topic))
                collect(e[i].sub, e[i].qos, &want);
        hits_sort(&want);
        hits got = match(t, topic);
        if (!hits_equal(&got, &want))
            fail_msg("topic \"%s\": %zu matches, reference %zu", topic, got.n, want.n);
        hits_free(&got);
    }
    hits_free(&want);
}

static void test_random_filters_match_like_reference(void **state)
{
    enum { FILTERS = 3000, TOPICS = 1000 };
    entry *e = calloc(FILTERS, sizeof(*e));
    assert_non_null(e);
    size_t ne = 0, live = 0;
    rng_state = 0x9e3779b9u;
    topictree *t = topictree_new();
    for (int k = 0; k < FILTERS; k++) {
        char filter[64];
        random_filter(filter, sizeof(filter));
        void *sub = SUB(rng() % 200); /* small pool: some pairs repeat */
        uint8_t qos = (uint8_t)(rng() % 3);
        add(t, filter, sub, qos);
        size_t i = 0;
        while (i < ne && !(e[i].sub == sub && strcmp(e[i].filter, filter) == 0))
            i++;
        if (i == ne) {
            snprintf(e[ne].filter, sizeof(e[ne].filter), "%s", filter);
            e[ne].sub = sub;
            e[ne].live = true;
            ne++;
            live++;
        }
        e[i].qos = qos;
    }
    assert_int_equal(topictree_count(t), live);
    check_against_reference(t, e, ne, TOPICS);

    for (size_t i = 0; i < ne; i++) /* remove about half, and one unknown pair each */
        if (rng() % 2) {
            assert_true(del(t, e[i].filter, e[i].sub));
            e[i].live = false;
            live--;
            assert_false(del(t, e[i].filter, e[i].sub));
        }
    assert_int_equal(topictree_count(t), live);
    check_against_reference(t, e, ne, TOPICS);

    for (size_t i = 0; i < ne; i++)
        if (e[i].live)
            assert_true(del(t, e[i].filter, e[i].sub));
    assert_int_equal(topictree_count(t), 0);
    assert_int_equal(topictree_node_count(t), 0);
    topictree_free(t);
    free(e);
}

/* Everything topictree_match reports for a fixed set of topics, with the
 * counters: if an add fails, this must not change. */
static hits snapshot(const topictree *t)
{
    static const char *const probes[] = {"a", "a/b", "a/b/c", "x/y", "$SYS/x", "/", "w/5",
                                         "w/17", "d/e/f/g", "a/"};
    hits h = {0};
    for (size_t i = 0; i < sizeof(probes) / sizeof(probes[0]); i++)
        topictree_match(t, probes[i], strlen(probes[i]), collect, &h);
    collect((void *)(uintptr_t)topictree_count(t), 0, &h);
    collect((void *)(uintptr_t)topictree_node_count(t), 0, &h);
    return h;
}

/* For each add, fail the 1st, 2nd, ... allocation until it succeeds: every
 * failure returns -1 with the tree unchanged; leaks show under ASan. */
static void test_add_failure_leaves_tree_unchanged(void **state)
{
    char filters[80][32];
    size_t nf = 0;
    snprintf(filters[nf++], 32, "a/b/+/c/#");
    for (int i = 0; i < 20; i++) /* 20 subscribers on one filter: vector growth */
        snprintf(filters[nf++], 32, "a/b");
    for (int i = 0; i < 40; i++) /* 40 siblings: dense table, then hashed growth */
        snprintf(filters[nf++], 32, "w/%d", i);
    snprintf(filters[nf++], 32, "#");
    snprintf(filters[nf++], 32, "+/+");
    snprintf(filters[nf++], 32, "$SYS/#");
    snprintf(filters[nf++], 32, "d/e/f/g");
    snprintf(filters[nf++], 32, "/");

    size_t failed = 0;
    topictree *t = topictree_new();
    for (size_t k = 0; k < nf; k++) {
        unsigned long n;
        for (n = 1; n < 100; n++) {
            hits before = snapshot(t);
            gmq_alloc_fail_at(n);
            int rc = topictree_add(t, filters[k], strlen(filters[k]), SUB(k), 1);
            gmq_alloc_fail_at(0);
            if (rc == 0) {
                hits_free(&before);
                break;
            }
            assert_int_equal(rc, -1);
            failed++;
            hits after = snapshot(t);
            assert_true(hits_equal(&after, &before));
            hits_free(&before);
            hits_free(&after);
        }
        assert_true(n < 100);
        assert_int_equal(topictree_count(t), k + 1);
    }
    assert_int_equal(topictree_count(t), nf);
    assert_true(failed >= nf); /* every add allocates at least once here */
    topictree_free(t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_new_fails_cleanly_without_memory),
        cmocka_unit_test(test_exact_filter_matches_only_same_topic),
        cmocka_unit_test(test_plus_matches_exactly_one_level),
        cmocka_unit_test(test_hash_matches_remaining_levels),
        cmocka_unit_test(test_hash_matches_parent_level),
        cmocka_unit_test(test_hash_alone_matches_every_topic),
        cmocka_unit_test(test_dollar_topic_needs_explicit_first_level),
        cmocka_unit_test(test_empty_levels_are_distinct_levels),
        cmocka_unit_test(test_readd_updates_qos),
        cmocka_unit_test(test_overlapping_filters_report_each_subscription),
        cmocka_unit_test(test_remove_returns_false_for_unknown_pair),
        cmocka_unit_test(test_remove_prunes_empty_nodes),
        cmocka_unit_test(test_remove_keeps_node_with_children),
        cmocka_unit_test(test_many_subscribers_on_one_filter),
        cmocka_unit_test(test_fifty_thousand_subscribers_on_one_filter),
        cmocka_unit_test(test_random_churn_on_one_filter_matches_reference),
        cmocka_unit_test(test_dense_index_churn_keeps_every_subscriber),
        cmocka_unit_test(test_add_failure_with_indexed_subscribers_leaves_tree_unchanged),
        cmocka_unit_test(test_remove_without_memory_still_removes),
        cmocka_unit_test(test_wide_node_survives_growth_and_removal),
        cmocka_unit_test(test_small_hashed_tables_survive_random_removal),
        cmocka_unit_test(test_deepest_filter_matches_without_recursion),
        cmocka_unit_test(test_random_filters_match_like_reference),
        cmocka_unit_test(test_add_failure_leaves_tree_unchanged),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
