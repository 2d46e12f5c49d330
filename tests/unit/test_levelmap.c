/*
 * test_levelmap.c - unit tests of the child table (broker/levelmap.c).
 *
 * Items live in a static array of nodes, each embedding a levelmap_item that
 * points at the node's own name, as the trees do. Tests that depend on where
 * items land set a fixed key first, so they see the same layout every run;
 * no test leaves a map holding items across a key change.
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
#include "broker/levelmap.h"

typedef struct node {
    levelmap_item item;
    char name[24];
} node;

enum { MAX_NODES = 2000 };
static node nodes[MAX_NODES];

static const uint8_t key_a[16] = {0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07,
                                  0x08, 0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x0e, 0x0f};
static const uint8_t key_b[16] = {0x0f, 0x0e, 0x0d, 0x0c, 0x0b, 0x0a, 0x09, 0x08,
                                  0x07, 0x06, 0x05, 0x04, 0x03, 0x02, 0x01, 0x00};

/* ---- helpers ---------------------------------------------------------------- */

static node *mk(int i, const char *fmt)
{
    node *n = &nodes[i];
    snprintf(n->name, sizeof(n->name), fmt, i);
    n->item = (levelmap_item){.level = n->name, .len = (uint32_t)strlen(n->name)};
    return n;
}

/* nodes[0..n) with the distinct levels "level<i>". */
static void mk_range(int n)
{
    for (int i = 0; i < n; i++)
        mk(i, "level%d");
}

static node *find(const levelmap *m, const char *level)
{
    levelmap_item *it = levelmap_find(m, level, strlen(level));
    return it ? LEVELMAP_CONTAINER(it, node, item) : NULL;
}

static void insert(levelmap *m, node *n)
{
    assert_int_equal(levelmap_insert(m, &n->item), LEVELMAP_OK);
}

/* Every node in [0, n) is found iff live[i]. */
static void check_live(const levelmap *m, const bool *live, int n)
{
    uint32_t want = 0;
    for (int i = 0; i < n; i++) {
        node *got = find(m, nodes[i].name);
        if (live[i]) {
            assert_ptr_equal(got, &nodes[i]);
            want++;
        } else {
            assert_null(got);
        }
    }
    assert_int_equal(levelmap_count(m), want);
}

static uint32_t rng_state;

static uint32_t rng(void)
{
    uint32_t x = rng_state; /* xorshift32 */
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    return rng_state = x;
}

static void shuffle(int *v, int n)
{
    for (int i = n - 1; i > 0; i--) { /* Fisher-Yates */
        int j = (int)(rng() % (uint32_t)(i + 1)), tmp = v[i];
        v[i] = v[j];
        v[j] = tmp;
    }
}

/* ---- the keyed hash --------------------------------------------------------- */

/* The reference vectors of the SipHash paper: key 00..0f, message 00..(n-1). */
static void test_siphash24_matches_published_vectors(void **state)
{
    uint8_t msg[64];
    for (int i = 0; i < 64; i++)
        msg[i] = (uint8_t)i;
    assert_int_equal(levelmap__siphash(key_a, msg, 0, 2, 4), 0x726fdb47dd0e0e31u);
    assert_int_equal(levelmap__siphash(key_a, msg, 15, 2, 4), 0xa129ca6149be45e5u);
}

/* SipHash-1-3, the variant the tables use, under the all-zero key; values
 * from an independent implementation. Lengths 1, 3, 8 and 15 cover an empty,
 * a full and a partial last word. */
static void test_siphash13_matches_independent_values(void **state)
{
    static const uint8_t zero[16];
    uint8_t msg[16];
    for (int i = 0; i < 16; i++)
        msg[i] = (uint8_t)i;
    assert_int_equal(levelmap__siphash(zero, "a", 1, 1, 3), 0x407448d2b89b1813u);
    assert_int_equal(levelmap__siphash(zero, "abc", 3, 1, 3), 0xc03bc3a0042630f2u);
    assert_int_equal(levelmap__siphash(zero, msg, 8, 1, 3), 0xead411e67ebe2eeau);
    assert_int_equal(levelmap__siphash(zero, msg, 15, 1, 3), 0xf30eb725bb91c9eau);
}

/* The same level hashes differently under another key: a client that does
 * not know the key cannot precompute colliding levels. */
static void test_hash_differs_with_different_keys(void **state)
{
    enum { N = 64 };
    uint32_t under_a[N];
    char level[24];
    levelmap_set_key(key_a);
    for (int i = 0; i < N; i++) {
        snprintf(level, sizeof(level), "sensor%d", i);
        under_a[i] = levelmap_hash(level, strlen(level));
    }
    levelmap_set_key(key_b);
    int differ = 0;
    for (int i = 0; i < N; i++) {
        snprintf(level, sizeof(level), "sensor%d", i);
        differ += levelmap_hash(level, strlen(level)) != under_a[i];
    }
    assert_int_equal(differ, N); /* 32-bit hashes: a chance equality is ~2^-26 here */
}

/* A fixed key gives the same hashes again, which is what tests rely on. */
static void test_hash_is_reproducible_under_a_fixed_key(void **state)
{
    levelmap_set_key(key_a);
    uint32_t first = levelmap_hash("sensors", 7);
    levelmap_set_key(key_b);
    assert_int_not_equal(levelmap_hash("sensors", 7), first);
    levelmap_set_key(key_a);
    assert_int_equal(levelmap_hash("sensors", 7), first);
}

/* Levels that are prefixes of each other, or empty, are different keys. */
static void test_hash_separates_prefixes_and_empty_level(void **state)
{
    levelmap_set_key(key_a);
    uint32_t h0 = levelmap_hash("", 0), h1 = levelmap_hash("a", 1);
    uint32_t h2 = levelmap_hash("aa", 2), h8 = levelmap_hash("aaaaaaaa", 8);
    uint32_t h9 = levelmap_hash("aaaaaaaa\0", 9); /* a trailing zero byte counts */
    assert_int_not_equal(h0, h1);
    assert_int_not_equal(h1, h2);
    assert_int_not_equal(h8, h9);
}

/* ---- the table -------------------------------------------------------------- */

static void test_empty_map_finds_nothing(void **state)
{
    levelmap m = {0};
    assert_null(find(&m, "a"));
    assert_null(find(&m, ""));
    assert_null(levelmap_next(&m, NULL));
    assert_null(levelmap_drain(&m));
    assert_int_equal(levelmap_count(&m), 0);
    levelmap_fini(&m);
}

/* Growing from a packed array into a hash table and on through several
 * doublings, every item inserted so far stays findable. */
static void test_insert_then_find_across_array_to_hash_switch(void **state)
{
    enum { N = 1000 };
    bool live[N] = {0};
    levelmap m = {0};
    mk_range(N);
    for (int i = 0; i < N; i++) {
        insert(&m, &nodes[i]);
        live[i] = true;
        if (i < 40 || i % 97 == 0)
            check_live(&m, live, N);
        if (i == (int)LEVELMAP_DENSE_MAX - 1)
            assert_true(m.cap <= LEVELMAP_DENSE_MAX); /* still the array */
        if (i == (int)LEVELMAP_DENSE_MAX)
            assert_true(m.cap > LEVELMAP_DENSE_MAX); /* now hashed */
    }
    check_live(&m, live, N);
    levelmap_fini(&m);
}

/* The empty level and levels that are prefixes of one another are distinct
 * children, in both modes. */
static void test_empty_and_prefix_levels_are_distinct(void **state)
{
    static const char *const names[] = {"", "a", "ab", "abc", "b", "$SYS", "$"};
    enum { K = sizeof(names) / sizeof(names[0]) };
    for (int extra = 0; extra <= 20; extra += 20) { /* dense, then hashed */
        levelmap m = {0};
        for (int i = 0; i < K; i++) {
            snprintf(nodes[i].name, sizeof(nodes[i].name), "%s", names[i]);
            nodes[i].item = (levelmap_item){nodes[i].name, (uint32_t)strlen(names[i]), 0};
            insert(&m, &nodes[i]);
        }
        for (int i = K; i < K + extra; i++)
            insert(&m, mk(i, "x%d"));
        for (int i = 0; i < K; i++)
            assert_ptr_equal(find(&m, names[i]), &nodes[i]);
        assert_null(find(&m, "abcd"));
        assert_null(find(&m, "A"));
        levelmap_fini(&m);
    }
}

/* Removing in a scattered order shrinks the hash table step by step and
 * finally back into the array, and lookups stay right throughout. */
static void test_remove_shrinks_back_to_array(void **state)
{
    enum { N = 1000 };
    bool live[N];
    int order[N];
    levelmap m = {0};
    mk_range(N);
    for (int i = 0; i < N; i++) {
        insert(&m, &nodes[i]);
        live[i] = true;
        order[i] = i;
    }
    uint32_t biggest = m.cap;
    rng_state = 0x2545f491u;
    shuffle(order, N);
    for (int k = 0; k < N; k++) {
        levelmap_remove(&m, &nodes[order[k]].item);
        live[order[k]] = false;
        if (k % 61 == 0 || k > N - 20)
            check_live(&m, live, N);
        if (levelmap_count(&m) == 2)
            assert_true(m.cap <= LEVELMAP_DENSE_MAX); /* back to the array */
    }
    assert_true(biggest >= N);
    assert_int_equal(levelmap_count(&m), 0);
    assert_null(m.slots); /* an emptied map holds no memory */
}

/* Levels chosen (under a fixed key) to have home slots at the end and at the
 * start of a 16-slot table, so probe runs wrap around to slot 0 and hold
 * entries from both sides of the wrap: removing them in any order must keep
 * every survivor reachable. */
static void test_remove_handles_probe_runs_that_wrap(void **state)
{
    enum { K = 12 };
    int picked = 0;
    levelmap_set_key(key_a);
    for (int i = 0; picked < K; i++) {
        assert_true(i < 100000);
        node *n = &nodes[picked];
        snprintf(n->name, sizeof(n->name), "w%d", i);
        uint32_t home = levelmap_hash(n->name, strlen(n->name)) & 15;
        if (home >= 13 || home <= 1) {
            n->item = (levelmap_item){n->name, (uint32_t)strlen(n->name), 0};
            picked++;
        }
    }
    rng_state = 0x9e3779b9u;
    for (int round = 0; round < 50; round++) {
        levelmap m = {0};
        bool live[K];
        int order[K];
        for (int i = 0; i < K; i++) {
            insert(&m, &nodes[i]);
            live[i] = true;
            order[i] = i;
        }
        assert_int_equal(m.cap, 16);
        shuffle(order, K);
        for (int k = 0; k < K; k++) {
            levelmap_remove(&m, &nodes[order[k]].item);
            live[order[k]] = false;
            check_live(&m, live, K);
        }
    }
}

/* Iteration reports every item exactly once, in both modes. */
static void test_next_visits_every_item_once(void **state)
{
    static const int sizes[] = {1, 5, 8, 9, 300};
    for (size_t s = 0; s < sizeof(sizes) / sizeof(sizes[0]); s++) {
        int n = sizes[s];
        int seen[300] = {0};
        levelmap m = {0};
        mk_range(n);
        for (int i = 0; i < n; i++)
            insert(&m, &nodes[i]);
        int visited = 0;
        for (levelmap_item *it = levelmap_next(&m, NULL); it; it = levelmap_next(&m, it)) {
            node *nd = LEVELMAP_CONTAINER(it, node, item);
            seen[nd - nodes]++;
            visited++;
        }
        assert_int_equal(visited, n);
        for (int i = 0; i < n; i++)
            assert_int_equal(seen[i], 1);
        levelmap_fini(&m);
    }
}

/* Draining hands back every item once and leaves an empty map with no
 * memory, ready for reuse. */
static void test_drain_returns_every_item_once(void **state)
{
    enum { N = 500 };
    int seen[N] = {0};
    levelmap m = {0};
    mk_range(N);
    for (int i = 0; i < N; i++)
        insert(&m, &nodes[i]);
    levelmap_item *it;
    int drained = 0;
    while ((it = levelmap_drain(&m))) {
        seen[LEVELMAP_CONTAINER(it, node, item) - nodes]++;
        drained++;
    }
    assert_int_equal(drained, N);
    for (int i = 0; i < N; i++)
        assert_int_equal(seen[i], 1);
    assert_int_equal(levelmap_count(&m), 0);
    assert_null(m.slots);
    insert(&m, &nodes[0]); /* reusable */
    assert_ptr_equal(find(&m, nodes[0].name), &nodes[0]);
    levelmap_fini(&m);
}

/* Removal leaves no trace behind: draining afterwards hands back exactly the
 * items still in the map, in both modes. */
static void test_drain_after_removals_returns_only_remaining(void **state)
{
    static const int sizes[] = {6, 100};
    for (size_t s = 0; s < sizeof(sizes) / sizeof(sizes[0]); s++) {
        int n = sizes[s];
        int seen[100] = {0};
        levelmap m = {0};
        mk_range(n);
        for (int i = 0; i < n; i++)
            insert(&m, &nodes[i]);
        for (int i = 0; i < n; i += 3)
            levelmap_remove(&m, &nodes[i].item);
        levelmap_item *it;
        while ((it = levelmap_drain(&m)))
            seen[LEVELMAP_CONTAINER(it, node, item) - nodes]++;
        for (int i = 0; i < n; i++)
            assert_int_equal(seen[i], i % 3 ? 1 : 0);
        assert_null(m.slots);
    }
}

/* For each insert, fail the 1st, 2nd, ... allocation until it succeeds:
 * every failure returns LEVELMAP_ENOMEM with the map exactly as before (same
 * table, same slots, same count); leaks show under ASan. */
static void test_insert_failure_leaves_map_unchanged(void **state)
{
    enum { N = 200 };
    static levelmap_item *before[512];
    bool live[N] = {0};
    int failed = 0;
    levelmap m = {0};
    mk_range(N);
    for (int i = 0; i < N; i++) {
        unsigned long n;
        for (n = 1; n < 10; n++) {
            levelmap snap = m;
            assert_true(snap.cap <= 512);
            if (snap.cap)
                memcpy(before, m.slots, snap.cap * sizeof(*before));
            gmq_alloc_fail_at(n);
            int rc = levelmap_insert(&m, &nodes[i].item);
            gmq_alloc_fail_at(0);
            if (rc == LEVELMAP_OK)
                break;
            assert_int_equal(rc, LEVELMAP_ENOMEM);
            failed++;
            assert_ptr_equal(m.slots, snap.slots);
            assert_int_equal(m.cap, snap.cap);
            assert_int_equal(m.count, snap.count);
            if (snap.cap)
                assert_memory_equal(m.slots, before, snap.cap * sizeof(*before));
            check_live(&m, live, N);
        }
        assert_true(n < 10);
        live[i] = true;
    }
    check_live(&m, live, N);
    /* One failure per growth: 0->2->4->8 (array), ->16->...->512 (hashed). */
    assert_int_equal(failed, 9);
    levelmap_fini(&m);
}

/* Shrinking needs memory; when there is none the item is still removed and
 * the map keeps its larger table. */
static void test_remove_without_memory_keeps_larger_table(void **state)
{
    enum { N = 200 };
    bool live[N];
    levelmap m = {0};
    mk_range(N);
    for (int i = 0; i < N; i++) {
        insert(&m, &nodes[i]);
        live[i] = true;
    }
    uint32_t cap = m.cap;
    for (int i = 0; i < N - 1; i++) {
        gmq_alloc_fail_at(1);
        levelmap_remove(&m, &nodes[i].item);
        gmq_alloc_fail_at(0);
        live[i] = false;
        if (i % 17 == 0)
            check_live(&m, live, N);
    }
    check_live(&m, live, N);
    assert_int_equal(m.cap, cap); /* every shrink failed */
    levelmap_remove(&m, &nodes[N - 1].item);
    assert_null(m.slots); /* the last removal frees without allocating */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_siphash24_matches_published_vectors),
        cmocka_unit_test(test_siphash13_matches_independent_values),
        cmocka_unit_test(test_hash_differs_with_different_keys),
        cmocka_unit_test(test_hash_is_reproducible_under_a_fixed_key),
        cmocka_unit_test(test_hash_separates_prefixes_and_empty_level),
        cmocka_unit_test(test_empty_map_finds_nothing),
        cmocka_unit_test(test_insert_then_find_across_array_to_hash_switch),
        cmocka_unit_test(test_empty_and_prefix_levels_are_distinct),
        cmocka_unit_test(test_remove_shrinks_back_to_array),
        cmocka_unit_test(test_remove_handles_probe_runs_that_wrap),
        cmocka_unit_test(test_next_visits_every_item_once),
        cmocka_unit_test(test_drain_returns_every_item_once),
        cmocka_unit_test(test_drain_after_removals_returns_only_remaining),
        cmocka_unit_test(test_insert_failure_leaves_map_unchanged),
        cmocka_unit_test(test_remove_without_memory_keeps_larger_table),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
