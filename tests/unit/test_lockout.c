/* Unit tests for the login lockout arithmetic (auth/lockout.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "auth/lockout.h"
#include "broker/alloc.h"

#define K(s) (s), strlen(s)

static lockout *defaults(void)
{
    lockout *l = lockout_new(LOCKOUT_DEFAULT_THRESHOLD, LOCKOUT_DEFAULT_INITIAL,
                             LOCKOUT_DEFAULT_MAX, 1000);
    assert_non_null(l);
    return l;
}

/* Fail n times at now (the key must not be locked in between). */
static void fail_n(lockout *l, const char *key, unsigned n, double now)
{
    for (unsigned i = 0; i < n; i++)
        assert_true(lockout_fail(l, K(key), now) == 0);
}

static void four_failures_do_not_lock(void **state)
{
    (void)state;
    lockout *l = defaults();
    for (int i = 0; i < 4; i++) {
        assert_true(lockout_fail(l, K("alice"), 100 + i) == 0);
        assert_true(lockout_remaining(l, K("alice"), 100 + i) == 0);
    }
    lockout_free(l);
}

static void the_fifth_failure_locks_for_the_initial_time(void **state)
{
    (void)state;
    lockout *l = defaults();
    fail_n(l, "alice", 4, 100);
    assert_true(lockout_fail(l, K("alice"), 101) == 4.0);
    assert_true(lockout_remaining(l, K("alice"), 101) == 4.0);
    assert_true(lockout_remaining(l, K("alice"), 103.5) == 1.5);
    assert_true(lockout_remaining(l, K("alice"), 105) == 0);
    lockout_free(l);
}

static void failures_during_a_lock_do_not_extend_it(void **state)
{
    (void)state;
    lockout *l = defaults();
    fail_n(l, "alice", 4, 100);
    assert_true(lockout_fail(l, K("alice"), 100) == 4.0);
    for (int i = 0; i < 50; i++)
        assert_true(lockout_fail(l, K("alice"), 100 + i * 0.07) == 0);
    assert_true(lockout_remaining(l, K("alice"), 103) == 1.0);
    assert_true(lockout_remaining(l, K("alice"), 104) == 0);
    /* Nor do they count: the next lock is the doubled one, not more. */
    assert_true(lockout_fail(l, K("alice"), 104) == 8.0);
    lockout_free(l);
}

static void each_failure_after_expiry_doubles_the_lock_up_to_the_cap(void **state)
{
    (void)state;
    lockout *l = defaults();
    double now = 0;
    fail_n(l, "alice", 4, now);
    double want = 4;
    /* 5th: 4 s, 6th: 8 s, 7th: 16 s, ... 14th: 2048 s, then 3600 s. */
    for (int failure = 5; failure <= 20; failure++) {
        double d = lockout_fail(l, K("alice"), now);
        assert_true(d == want);
        assert_true(lockout_remaining(l, K("alice"), now) == want);
        now += d; /* the lock has just expired */
        assert_true(lockout_remaining(l, K("alice"), now) == 0);
        want = want * 2 > 3600 ? 3600 : want * 2;
    }
    lockout_free(l);
}

static void a_success_resets_the_key(void **state)
{
    (void)state;
    lockout *l = defaults();
    fail_n(l, "alice", 4, 0);
    assert_true(lockout_fail(l, K("alice"), 0) == 4.0);
    assert_true(lockout_fail(l, K("alice"), 4) == 8.0);
    lockout_success(l, K("alice"));
    assert_true(lockout_remaining(l, K("alice"), 5) == 0);
    assert_int_equal(lockout_count(l), 0);
    /* A fresh start: four free failures, then the initial lock again. */
    fail_n(l, "alice", 4, 20);
    assert_true(lockout_fail(l, K("alice"), 20) == 4.0);
    lockout_free(l);
}

static void a_success_below_the_threshold_clears_the_count(void **state)
{
    (void)state;
    lockout *l = defaults();
    fail_n(l, "alice", 4, 0);
    lockout_success(l, K("alice"));
    fail_n(l, "alice", 4, 1);
    assert_true(lockout_fail(l, K("alice"), 1) == 4.0);
    lockout_free(l);
}

static void keys_are_independent(void **state)
{
    (void)state;
    lockout *l = defaults();
    fail_n(l, "alice", 4, 0);
    assert_true(lockout_fail(l, K("alice"), 0) == 4.0);
    assert_true(lockout_remaining(l, K("bob"), 0) == 0);
    fail_n(l, "bob", 4, 1);
    assert_true(lockout_remaining(l, K("bob"), 1) == 0);
    /* Keys are bytes: a prefix or a NUL-extended name is another key. */
    assert_true(lockout_remaining(l, K("alic"), 1) == 0);
    assert_true(lockout_remaining(l, "alice\0", 6, 1) == 0);
    lockout_success(l, K("bob"));
    assert_true(lockout_remaining(l, K("alice"), 1) == 3.0);
    lockout_free(l);
}

static void threshold_initial_and_cap_are_configurable(void **state)
{
    (void)state;
    lockout *l = lockout_new(2, 1.5, 5, 10);
    assert_non_null(l);
    assert_true(lockout_fail(l, K("k"), 0) == 0);
    assert_true(lockout_fail(l, K("k"), 0) == 1.5);
    assert_true(lockout_fail(l, K("k"), 1.5) == 3.0);
    assert_true(lockout_fail(l, K("k"), 4.5) == 5.0);
    assert_true(lockout_fail(l, K("k"), 9.5) == 5.0);
    lockout_free(l);
}

static void refuses_senseless_parameters(void **state)
{
    (void)state;
    assert_null(lockout_new(0, 4, 3600, 10));
    assert_null(lockout_new(5, 0, 3600, 10));
    assert_null(lockout_new(5, -1, 3600, 10));
    assert_null(lockout_new(5, 4, 3, 10));
    assert_null(lockout_new(5, 4, 3600, 0));
    assert_null(lockout_new(5, 0.0 / 0.0, 3600, 10));
    assert_null(lockout_new(5, 4, 1.0 / 0.0, 10));
}

static void never_tracks_more_than_max_entries(void **state)
{
    (void)state;
    lockout *l = lockout_new(5, 4, 3600, 100);
    assert_non_null(l);
    for (int i = 0; i < 10000; i++) {
        char key[32];
        snprintf(key, sizeof key, "10.0.%d.%d", i / 256, i % 256);
        assert_true(lockout_fail(l, K(key), i) == 0);
        assert_true(lockout_count(l) <= 100);
    }
    assert_int_equal(lockout_count(l), 100);
    lockout_free(l);
}

static void eviction_keeps_locked_keys_and_drops_the_oldest_unlocked(void **state)
{
    (void)state;
    lockout *l = lockout_new(5, 100, 3600, 10);
    assert_non_null(l);
    /* t=0: "locked" is locked until 100. */
    fail_n(l, "locked", 4, 0);
    assert_true(lockout_fail(l, K("locked"), 0) == 100);
    /* t=1..9: nine keys with one failure each fill the table. */
    for (int i = 1; i <= 9; i++) {
        char key[16];
        snprintf(key, sizeof key, "k%d", i);
        assert_true(lockout_fail(l, K(key), i) == 0);
    }
    assert_int_equal(lockout_count(l), 10);
    /* Twenty newcomers: each evicts the oldest unlocked key, never the
     * locked one, although it was touched first. */
    for (int i = 0; i < 20; i++) {
        char key[16];
        snprintf(key, sizeof key, "n%d", i);
        assert_true(lockout_fail(l, K(key), 10 + i) == 0);
        assert_int_equal(lockout_count(l), 10);
        assert_true(lockout_remaining(l, K("locked"), 10 + i) == 90 - i);
    }
    /* The survivors are the nine newest newcomers: each has one failure
     * on record, so its 5th failure is the 4th from now. As they are
     * tracked already, these failures evict nothing. */
    for (int i = 11; i < 20; i++) {
        char key[16];
        snprintf(key, sizeof key, "n%d", i);
        fail_n(l, key, 3, 30);
        assert_true(lockout_fail(l, K(key), 30) == 100);
    }
    assert_int_equal(lockout_count(l), 10);
    assert_true(lockout_remaining(l, K("locked"), 30) == 70);
    lockout_free(l);
}

static void when_all_are_locked_the_soonest_to_expire_is_evicted(void **state)
{
    (void)state;
    lockout *l = lockout_new(1, 10, 3600, 3);
    assert_non_null(l);
    assert_true(lockout_fail(l, K("a"), 0) == 10);  /* until 10 */
    assert_true(lockout_fail(l, K("b"), 0) == 10);  /* until 10 */
    assert_true(lockout_fail(l, K("b"), 10) == 20); /* until 30 */
    assert_true(lockout_fail(l, K("c"), 5) == 10);  /* until 15 */
    /* At 8 every entry is locked; "a" ends soonest and goes. */
    assert_true(lockout_fail(l, K("d"), 8) == 10);
    assert_int_equal(lockout_count(l), 3);
    assert_true(lockout_remaining(l, K("a"), 8) == 0);
    assert_true(lockout_remaining(l, K("b"), 8) == 22);
    assert_true(lockout_remaining(l, K("c"), 8) == 7);
    assert_true(lockout_remaining(l, K("d"), 8) == 10);
    lockout_free(l);
}

static void long_keys_share_an_entry_by_their_prefix(void **state)
{
    (void)state;
    lockout *l = defaults();
    char a[LOCKOUT_KEY_MAX + 10], b[LOCKOUT_KEY_MAX + 10];
    memset(a, 'x', sizeof a);
    memcpy(b, a, sizeof b);
    b[sizeof b - 1] = 'y';
    for (int i = 0; i < 4; i++)
        assert_true(lockout_fail(l, a, sizeof a, 0) == 0);
    assert_true(lockout_fail(l, b, sizeof b, 0) == 4.0);
    assert_true(lockout_remaining(l, a, sizeof a, 0) == 4.0);
    assert_true(lockout_remaining(l, a, LOCKOUT_KEY_MAX - 1, 0) == 0);
    lockout_free(l);
}

static void survives_allocation_failures_unchanged(void **state)
{
    (void)state;
    lockout *l = lockout_new(2, 4, 3600, 1000);
    assert_non_null(l);
    for (int i = 0; i < 200; i++) {
        char key[16];
        snprintf(key, sizeof key, "user%d", i);
        size_t before = lockout_count(l);
        /* Fail the entry's allocation, or the second one: the heap's or
         * the buckets' growth (the latter only lengthens chains). */
        gmq_alloc_fail_at(1 + (unsigned long)(i % 2));
        double d = lockout_fail(l, K(key), i);
        gmq_alloc_fail_at(0);
        if (d == LOCKOUT_NOMEM) {
            assert_int_equal(lockout_count(l), before);
            assert_true(lockout_fail(l, K(key), i) == 0);
        }
        assert_int_equal(lockout_count(l), before + 1);
    }
    lockout_free(l);

    for (unsigned long n = 1; n < 4; n++) {
        gmq_alloc_fail_at(n);
        lockout *m = lockout_new(5, 4, 3600, 10);
        gmq_alloc_fail_at(0);
        assert_true(n <= 2 ? m == NULL : m != NULL);
        lockout_free(m);
    }
}

static void many_keys_stay_consistent_under_churn(void **state)
{
    (void)state;
    /* A pseudo-random mix of failures, successes and queries over more keys
     * than fit, checked against the rule for the keys that stay tracked. */
    lockout *l = lockout_new(3, 1, 64, 500);
    assert_non_null(l);
    uint32_t x = 12345;
    double now = 0;
    for (int i = 0; i < 200000; i++) {
        x = x * 1103515245u + 12345u;
        char key[16];
        snprintf(key, sizeof key, "k%u", (x >> 8) % 2000);
        now += 0.001;
        switch ((x >> 4) % 8) {
        case 0:
            lockout_success(l, K(key));
            assert_true(lockout_remaining(l, K(key), now) == 0);
            break;
        default: {
            double rem = lockout_remaining(l, K(key), now);
            double d = lockout_fail(l, K(key), now);
            if (rem > 0)
                assert_true(d == 0);
            assert_true(d == 0 || (d >= 1 && d <= 64));
            break;
        }
        }
        assert_true(lockout_count(l) <= 500);
    }
    lockout_free(l);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(four_failures_do_not_lock),
        cmocka_unit_test(the_fifth_failure_locks_for_the_initial_time),
        cmocka_unit_test(failures_during_a_lock_do_not_extend_it),
        cmocka_unit_test(each_failure_after_expiry_doubles_the_lock_up_to_the_cap),
        cmocka_unit_test(a_success_resets_the_key),
        cmocka_unit_test(a_success_below_the_threshold_clears_the_count),
        cmocka_unit_test(keys_are_independent),
        cmocka_unit_test(threshold_initial_and_cap_are_configurable),
        cmocka_unit_test(refuses_senseless_parameters),
        cmocka_unit_test(never_tracks_more_than_max_entries),
        cmocka_unit_test(eviction_keeps_locked_keys_and_drops_the_oldest_unlocked),
        cmocka_unit_test(when_all_are_locked_the_soonest_to_expire_is_evicted),
        cmocka_unit_test(long_keys_share_an_entry_by_their_prefix),
        cmocka_unit_test(survives_allocation_failures_unchanged),
        cmocka_unit_test(many_keys_stay_consistent_under_churn),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
