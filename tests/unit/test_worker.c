/* Unit tests for the worker pool (broker/worker.c): jobs run off the loop
 * thread and report back on it, in order per submission when one thread. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <pthread.h>
#include <stdlib.h>

#include <cmocka.h>

#include "broker/worker.h"

typedef struct test_job {
    worker_job base;
    int index;
    pthread_t ran_on;
    int *done_order;
    int *ndone;
    struct ev_loop *loop;
    int expected;
} test_job;

static void job_run(worker_job *j)
{
    test_job *t = (test_job *)j;
    t->ran_on = pthread_self();
}

static void job_done(worker_job *j)
{
    test_job *t = (test_job *)j;
    t->done_order[(*t->ndone)++] = t->index;
    if (*t->ndone == t->expected)
        ev_break(t->loop, EVBREAK_ALL);
}

static void jobs_run_off_the_loop_thread_and_report_in_order(void **state)
{
    (void)state;
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    worker_pool *p = worker_pool_new(loop, 1);
    assert_non_null(p);
    enum { N = 50 };
    test_job jobs[N];
    int order[N], ndone = 0;
    for (int i = 0; i < N; i++) {
        jobs[i] = (test_job){.base = {.run = job_run, .done = job_done}, .index = i,
                             .done_order = order, .ndone = &ndone, .loop = loop, .expected = N};
        worker_pool_submit(p, &jobs[i].base);
    }
    ev_run(loop, 0); /* returns when the last done() breaks it */
    assert_int_equal(ndone, N);
    for (int i = 0; i < N; i++) {
        assert_int_equal(order[i], i);
        assert_false(pthread_equal(jobs[i].ran_on, pthread_self()));
        assert_false(jobs[i].base.cancelled);
    }
    worker_pool_free(p);
    ev_loop_destroy(loop);
}

static void many_threads_finish_every_job(void **state)
{
    (void)state;
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    worker_pool *p = worker_pool_new(loop, 4);
    assert_non_null(p);
    enum { N = 400 };
    test_job *jobs = calloc(N, sizeof(*jobs));
    int *order = calloc(N, sizeof(int)), ndone = 0;
    for (int i = 0; i < N; i++) {
        jobs[i] = (test_job){.base = {.run = job_run, .done = job_done}, .index = i,
                             .done_order = order, .ndone = &ndone, .loop = loop, .expected = N};
        worker_pool_submit(p, &jobs[i].base);
    }
    ev_run(loop, 0);
    assert_int_equal(ndone, N);
    int *seen = calloc(N, sizeof(int));
    for (int i = 0; i < N; i++)
        seen[order[i]]++;
    for (int i = 0; i < N; i++)
        assert_int_equal(seen[i], 1);
    assert_int_equal(worker_pool_backlog(p), 0);
    worker_pool_free(p);
    ev_loop_destroy(loop);
    free(seen);
    free(order);
    free(jobs);
}

/* Freeing the pool calls done() for every job, run or cancelled. */
static void free_reports_every_job(void **state)
{
    (void)state;
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    worker_pool *p = worker_pool_new(loop, 1);
    enum { N = 100 };
    test_job jobs[N];
    int order[N], ndone = 0;
    for (int i = 0; i < N; i++) {
        jobs[i] = (test_job){.base = {.run = job_run, .done = job_done}, .index = i,
                             .done_order = order, .ndone = &ndone, .loop = loop, .expected = -1};
        worker_pool_submit(p, &jobs[i].base);
    }
    worker_pool_free(p);
    assert_int_equal(ndone, N);
    ev_loop_destroy(loop);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(jobs_run_off_the_loop_thread_and_report_in_order),
        cmocka_unit_test(many_threads_finish_every_job),
        cmocka_unit_test(free_reports_every_job),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
