/* Unit tests for the store's backpressure (store/store.h "backpressure"):
 * the high/low water logic on its own, then the store's count of queued
 * bytes and the release it reports from its thread through the loop. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "store/store.h"

#include "tempdir.h"

/* ---- the marks alone -------------------------------------------------------- */

static void test_watermark_congested_from_high_mark_on(void **state)
{
    (void)state;
    store_watermark w = {.high = 1000, .low = 500};
    assert_false(store_watermark_rise(&w, 0));
    assert_false(store_watermark_rise(&w, 999));
    assert_true(store_watermark_rise(&w, 1000));
    assert_true(w.congested);
}

static void test_watermark_stays_congested_between_the_marks(void **state)
{
    (void)state;
    store_watermark w = {.high = 1000, .low = 500};
    assert_true(store_watermark_rise(&w, 1500));
    /* Commits bring it down, but not to the low mark: still congested. */
    assert_false(store_watermark_fall(&w, 999));
    assert_false(store_watermark_fall(&w, 501));
    assert_true(w.congested);
    /* A write queued meanwhile below the high mark does not clear it either:
     * only the commit side releases, or a release could be missed. */
    assert_true(store_watermark_rise(&w, 600));
    assert_true(store_watermark_rise(&w, 0));
    assert_true(w.congested);
}

static void test_watermark_release_reported_once_at_low_mark(void **state)
{
    (void)state;
    store_watermark w = {.high = 1000, .low = 500};
    assert_true(store_watermark_rise(&w, 1000));
    assert_true(store_watermark_fall(&w, 500));
    assert_false(w.congested);
    /* Further commits report nothing more. */
    assert_false(store_watermark_fall(&w, 100));
    assert_false(store_watermark_fall(&w, 0));
    /* Between the marks without having reached the high one: not congested. */
    assert_false(store_watermark_rise(&w, 700));
    assert_false(store_watermark_fall(&w, 0));
    /* A second episode is reported again. */
    assert_true(store_watermark_rise(&w, 5000));
    assert_true(store_watermark_fall(&w, 0));
}

static void test_watermark_without_high_mark_never_congested(void **state)
{
    (void)state;
    store_watermark w = {0};
    assert_false(store_watermark_rise(&w, SIZE_MAX));
    assert_false(store_watermark_fall(&w, 0));
}

/* ---- the store's queue ------------------------------------------------------ */

typedef struct fixture {
    char dir[256];
    char path[300];
    struct ev_loop *loop;
    store *s;
    unsigned drained;
    size_t bytes_at_drain;
    uint64_t committed;
    uint64_t target;
    bool reached;              /* on_commit reported target */
    unsigned drained_at_target; /* drained when it did */
} fixture;

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof(*f));
    if (tempdir_make(f->dir, sizeof(f->dir), "gatemq-storeq") != 0) {
        free(f);
        return -1;
    }
    snprintf(f->path, sizeof(f->path), "%s/gatemq.db", f->dir);
    f->loop = ev_loop_new(EVFLAG_AUTO);
    char err[512] = "";
    f->s = store_open(f->path, STORE_SYNC_NORMAL, err, sizeof(err));
    if (!f->s) {
        print_error("store_open: %s\n", err);
        return -1;
    }
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    store_close(f->s);
    tempdir_remove(f->dir);
    ev_loop_destroy(f->loop);
    free(f);
    return 0;
}

static void on_drained(void *arg)
{
    fixture *f = arg;
    f->drained++;
    f->bytes_at_drain = store_queued_bytes(f->s);
}

static void on_commit(void *arg, uint64_t seq)
{
    fixture *f = arg;
    f->committed = seq;
    if (seq >= f->target && !f->reached) {
        f->reached = true;
        f->drained_at_target = f->drained;
        ev_break(f->loop, EVBREAK_ONE);
    }
}

static void on_deadline(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)w;
    (void)revents;
    ev_break(loop, EVBREAK_ONE);
}

/* Run the loop until every write queued so far is reported committed. */
static void run_until_committed(fixture *f)
{
    f->target = store_last_queued(f->s);
    f->reached = false;
    ev_timer deadline;
    ev_timer_init(&deadline, on_deadline, 20.0, 0);
    ev_timer_start(f->loop, &deadline);
    while (f->committed < f->target && ev_is_active(&deadline))
        ev_run(f->loop, EVRUN_ONCE);
    ev_timer_stop(f->loop, &deadline);
    assert_true(f->committed >= f->target);
}

static void put_retained(fixture *f, unsigned i, size_t payload_len)
{
    char topic[32];
    snprintf(topic, sizeof(topic), "t/%u", i);
    uint8_t *payload = malloc(payload_len);
    memset(payload, (int)i, payload_len);
    assert_int_equal(store_put_retained(f->s, topic, strlen(topic), payload, payload_len, 0), 0);
    free(payload);
}

/* Every byte a write holds counts until it commits: the payload and its
 * bookkeeping; then the count is back to zero. */
static void test_queued_bytes_count_writes_until_they_commit(void **state)
{
    fixture *f = *state;
    assert_int_equal(store_queued_bytes(f->s), 0);
    put_retained(f, 0, 10000);
    size_t one = store_queued_bytes(f->s);
    assert_true(one >= 10000);
    assert_true(one < 10000 + 1024);
    put_retained(f, 1, 10000);
    assert_int_equal(store_queued_bytes(f->s), 2 * one);
    assert_int_equal(store_backlog(f->s), 2);
    assert_int_equal(store_start(f->s, f->loop, on_commit, f), 0);
    run_until_committed(f);
    assert_int_equal(store_queued_bytes(f->s), 0);
    assert_int_equal(store_backlog(f->s), 0);
}

/* Writes queued past the high mark make the queue congested; once the
 * store thread has committed them, the loop hears of it through the commit
 * wake-up: on_drained runs once, with the queue at or below the low mark,
 * and no later than the on_commit that reports the last of them (the run
 * stops at that on_commit: a release reported only by a later wake-up is
 * not counted). */
static void test_congested_queue_released_once_after_commit(void **state)
{
    fixture *f = *state;
    store_set_queue_limit(f->s, 50000, 25000, on_drained, f);
    /* Each batch waits 20 ms before its commit, so that the second episode
     * below congests however the two threads are scheduled. */
    setenv("GATEMQ_TEST_STORE_DELAY_US", "20000", 1);
    for (unsigned i = 0; i < 4; i++) {
        put_retained(f, i, 10000);
        assert_false(store_congested(f->s));
    }
    put_retained(f, 4, 10000);
    assert_true(store_congested(f->s));
    put_retained(f, 5, 10000);
    assert_true(store_congested(f->s));
    assert_int_equal(f->drained, 0);

    assert_int_equal(store_start(f->s, f->loop, on_commit, f), 0);
    unsetenv("GATEMQ_TEST_STORE_DELAY_US"); /* read by store_start */
    run_until_committed(f);
    assert_int_equal(f->drained_at_target, 1);
    assert_int_equal(f->drained, 1);
    assert_true(f->bytes_at_drain <= 25000);
    assert_false(store_congested(f->s));

    /* Below the high mark again: no congestion, no further release. */
    put_retained(f, 6, 10000);
    assert_false(store_congested(f->s));
    run_until_committed(f);
    assert_int_equal(f->drained, 1);

    /* A second episode, while the thread runs, is released again. The
     * thread commits as the writes come, so queue until congested (five
     * writes within one 20 ms batch delay; 100 writes is twenty times the
     * limit). */
    for (unsigned i = 7; i < 107 && !store_congested(f->s); i++)
        put_retained(f, i, 10000);
    assert_true(store_congested(f->s));
    run_until_committed(f);
    assert_int_equal(f->drained_at_target, 2);
    assert_int_equal(f->drained, 2);
    assert_false(store_congested(f->s));
}

/* One write larger than the whole limit congests the queue on its own and
 * is still committed (never refused), then released. */
static void test_single_write_over_the_limit_is_committed_then_released(void **state)
{
    fixture *f = *state;
    store_set_queue_limit(f->s, 65536, 32768, on_drained, f);
    put_retained(f, 0, 200000);
    assert_true(store_congested(f->s));
    assert_int_equal(store_start(f->s, f->loop, on_commit, f), 0);
    run_until_committed(f);
    assert_int_equal(f->drained, 1);
    assert_int_equal(store_queued_bytes(f->s), 0);
}

/* Without a limit (high 0) nothing is ever congested. */
static void test_no_limit_never_congested(void **state)
{
    fixture *f = *state;
    for (unsigned i = 0; i < 20; i++)
        put_retained(f, i, 100000);
    assert_false(store_congested(f->s));
    assert_int_equal(store_start(f->s, f->loop, on_commit, f), 0);
    run_until_committed(f);
    assert_int_equal(f->drained, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_watermark_congested_from_high_mark_on),
        cmocka_unit_test(test_watermark_stays_congested_between_the_marks),
        cmocka_unit_test(test_watermark_release_reported_once_at_low_mark),
        cmocka_unit_test(test_watermark_without_high_mark_never_congested),
        cmocka_unit_test_setup_teardown(test_queued_bytes_count_writes_until_they_commit, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_congested_queue_released_once_after_commit, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(
            test_single_write_over_the_limit_is_committed_then_released, setup, teardown),
        cmocka_unit_test_setup_teardown(test_no_limit_never_congested, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
