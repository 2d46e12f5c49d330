/* Unit tests for the telemetry outbox drain (store/outbox.c) and the file
 * sink (store/sink_file.c), with a scripted fake sink. Each test has its
 * own temporary directory and a real database made by store_open, so the
 * schema is the broker's. Rows are put into the outbox through a separate
 * SQLite connection (or the store thread, where the wake-up from a commit
 * is the point). Nothing sleeps as synchronisation: tests poll for a
 * condition with a deadline. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "broker/log.h"
#include "store/outbox.h"
#include "store/sink.h"
#include "store/store.h"

#include "tempdir.h"

/* Deadline for anything that must happen (sanitizer builds on a loaded
 * machine are slow). */
#define DEADLINE_MS 10000

static int64_t mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static int64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void nap(void)
{
    struct timespec ts = {0, 2 * 1000000};
    nanosleep(&ts, NULL);
}

/* ---- the fake sink -------------------------------------------------------- */

#define FAKE_MAX_CALLS 256

typedef struct fake_call {
    char *body;
    size_t len;
    int64_t at_us;
    enum sink_result result;
} fake_call;

typedef struct fake_sink {
    sink base;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    fake_call calls[FAKE_MAX_CALLS];
    size_t ncalls;
    enum sink_result script[16]; /* results of the first nscript calls */
    size_t nscript;
    enum sink_result dflt;       /* then this */
    const char *reject_if;       /* REJECT any body containing this */
    size_t hold_at;              /* block call number hold_at (1-based) until released */
    bool in_hold;
    bool closed;
} fake_sink;

static enum sink_result fake_write(sink *base, const char *body, size_t len, char *err,
                                   size_t errlen)
{
    fake_sink *f = (fake_sink *)base;
    pthread_mutex_lock(&f->lock);
    size_t n = f->ncalls + 1;
    if (f->hold_at && n == f->hold_at) {
        f->in_hold = true;
        while (f->hold_at == n)
            pthread_cond_wait(&f->cond, &f->lock);
        f->in_hold = false;
    }
    enum sink_result r = n <= f->nscript ? f->script[n - 1] : f->dflt;
    if (f->reject_if && memmem(body, len, f->reject_if, strlen(f->reject_if)))
        r = SINK_REJECT;
    if (r == SINK_REJECT)
        snprintf(err, errlen, "unable to parse '%s'", f->reject_if ? f->reject_if : "?");
    else if (r == SINK_RETRY)
        snprintf(err, errlen, "connection refused (scripted)");
    if (f->ncalls < FAKE_MAX_CALLS) {
        fake_call *c = &f->calls[f->ncalls];
        c->body = malloc(len + 1);
        memcpy(c->body, body, len);
        c->body[len] = '\0';
        c->len = len;
        c->at_us = mono_us();
        c->result = r;
    }
    f->ncalls = n;
    pthread_mutex_unlock(&f->lock);
    return r;
}

static void fake_close(sink *base)
{
    fake_sink *f = (fake_sink *)base;
    pthread_mutex_lock(&f->lock);
    f->closed = true;
    pthread_mutex_unlock(&f->lock);
}

static const sink_ops fake_ops = {.name = "fake", .write = fake_write, .close = fake_close};

static fake_sink *fake_new(void)
{
    fake_sink *f = calloc(1, sizeof(*f));
    f->base.ops = &fake_ops;
    pthread_mutex_init(&f->lock, NULL);
    pthread_cond_init(&f->cond, NULL);
    f->dflt = SINK_OK;
    return f;
}

static void fake_release(fake_sink *f)
{
    pthread_mutex_lock(&f->lock);
    f->hold_at = 0;
    pthread_cond_broadcast(&f->cond);
    pthread_mutex_unlock(&f->lock);
}

static size_t fake_ncalls(fake_sink *f)
{
    pthread_mutex_lock(&f->lock);
    size_t n = f->ncalls;
    pthread_mutex_unlock(&f->lock);
    return n;
}

/* Let the held call go on and hold call n instead. */
static void fake_hold_next(fake_sink *f, size_t n)
{
    pthread_mutex_lock(&f->lock);
    f->hold_at = n;
    pthread_cond_broadcast(&f->cond);
    pthread_mutex_unlock(&f->lock);
}

static bool fake_held(fake_sink *f)
{
    pthread_mutex_lock(&f->lock);
    bool h = f->in_hold;
    pthread_mutex_unlock(&f->lock);
    return h;
}

static void fake_free(fake_sink *f)
{
    for (size_t i = 0; i < f->ncalls && i < FAKE_MAX_CALLS; i++)
        free(f->calls[i].body);
    pthread_cond_destroy(&f->cond);
    pthread_mutex_destroy(&f->lock);
    free(f);
}

static size_t count_lines(const char *s)
{
    size_t n = 0;
    for (; *s; s++)
        n += *s == '\n';
    return n;
}

/* How many times line (with its '\n') appears in the bodies the sink took. */
static size_t times_delivered(fake_sink *f, const char *line)
{
    char needle[512];
    snprintf(needle, sizeof(needle), "%s\n", line);
    size_t n = 0;
    for (size_t i = 0; i < f->ncalls; i++) {
        if (f->calls[i].result != SINK_OK)
            continue;
        /* lines start the body or follow a '\n' */
        const char *b = f->calls[i].body;
        for (const char *p = b; (p = strstr(p, needle)); p++)
            if (p == b || p[-1] == '\n')
                n++;
    }
    return n;
}

/* ---- fixture -------------------------------------------------------------- */

typedef struct fixture {
    char dir[256];
    char path[300];
    sqlite3 *db; /* the test's own connection */
    fake_sink *fake;
    outbox *ob;
} fixture;

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof(*f));
    if (tempdir_make(f->dir, sizeof(f->dir), "gatemq-outbox") != 0) {
        free(f);
        return -1;
    }
    snprintf(f->path, sizeof(f->path), "%s/gatemq.db", f->dir);
    char err[256];
    store *s = store_open(f->path, STORE_SYNC_NORMAL, err, sizeof(err));
    if (!s) {
        print_error("store_open: %s\n", err);
        return -1;
    }
    store_close(s);
    if (sqlite3_open(f->path, &f->db) != SQLITE_OK)
        return -1;
    sqlite3_busy_timeout(f->db, 5000);
    f->fake = fake_new();
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    if (f->fake)
        fake_release(f->fake);
    outbox_stop(f->ob);
    if (f->fake)
        fake_free(f->fake);
    sqlite3_close(f->db);
    tempdir_remove(f->dir);
    free(f);
    return 0;
}

static void start(fixture *f, const outbox_options *o)
{
    char err[512] = "";
    f->ob = outbox_start(f->path, &f->fake->base, o, err, sizeof(err));
    if (!f->ob)
        fail_msg("outbox_start: %s", err);
}

static void stop(fixture *f)
{
    outbox_stop(f->ob);
    f->ob = NULL;
}

static void line_for(char *buf, size_t len, int i)
{
    snprintf(buf, len, "cpu,company=acme,device=gw-1 v=%di %lld", i, 1700000000000LL + i);
}

static void insert_line(fixture *f, const char *device, int64_t received, const char *line)
{
    sqlite3_stmt *st;
    assert_int_equal(sqlite3_prepare_v2(f->db,
                                        "INSERT INTO outbox(received, device, line) "
                                        "VALUES(?1, ?2, ?3)",
                                        -1, &st, NULL),
                     SQLITE_OK);
    sqlite3_bind_int64(st, 1, received);
    sqlite3_bind_text(st, 2, device, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, line, -1, SQLITE_STATIC);
    assert_int_equal(sqlite3_step(st), SQLITE_DONE);
    sqlite3_finalize(st);
}

/* Rows from..to-1 with line_for(i), in one transaction. */
static void insert_rows(fixture *f, int from, int to, int64_t received)
{
    char line[256];
    assert_int_equal(sqlite3_exec(f->db, "BEGIN", NULL, NULL, NULL), SQLITE_OK);
    for (int i = from; i < to; i++) {
        line_for(line, sizeof(line), i);
        insert_line(f, "acme/gw-1", received, line);
    }
    assert_int_equal(sqlite3_exec(f->db, "COMMIT", NULL, NULL, NULL), SQLITE_OK);
}

static int64_t query_int(fixture *f, const char *sql)
{
    sqlite3_stmt *st;
    assert_int_equal(sqlite3_prepare_v2(f->db, sql, -1, &st, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    int64_t v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return v;
}

static int64_t outbox_rows(fixture *f)
{
    return query_int(f, "SELECT count(*) FROM outbox");
}

static outbox_stats stats_of(fixture *f)
{
    outbox_stats s;
    outbox_get_stats(f->ob, &s);
    return s;
}

/* Poll cond until it holds or DEADLINE_MS pass. */
#define AWAIT(cond)                                                                           \
    do {                                                                                      \
        int64_t await_end_ = mono_us() + (int64_t)DEADLINE_MS * 1000;                         \
        while (!(cond)) {                                                                     \
            if (mono_us() > await_end_)                                                       \
                fail_msg("timed out waiting for: %s", #cond);                                 \
            nap();                                                                            \
        }                                                                                     \
    } while (0)

/* ---- tests ---------------------------------------------------------------- */

static void rows_written_before_start_are_drained(void **state)
{
    fixture *f = *state;
    /* Through the store, as the broker writes them; committed at close. */
    char err[256];
    store *s = store_open(f->path, STORE_SYNC_NORMAL, err, sizeof(err));
    assert_non_null(s);
    char line[256];
    for (int i = 0; i < 10; i++) {
        line_for(line, sizeof(line), i);
        assert_int_equal(store_put_outbox(s, "acme/gw-1", wall_ms(), line, strlen(line)), 0);
    }
    store_close(s);
    assert_int_equal(outbox_rows(f), 10);

    start(f, &(outbox_options){.poll_ms = 60000});
    AWAIT(stats_of(f).sent == 10);
    assert_int_equal(outbox_rows(f), 0);
    stop(f);
    for (int i = 0; i < 10; i++) {
        line_for(line, sizeof(line), i);
        assert_int_equal(times_delivered(f->fake, line), 1);
    }
}

static void batches_respect_batch_rows_in_id_order(void **state)
{
    fixture *f = *state;
    insert_rows(f, 0, 25, wall_ms());
    start(f, &(outbox_options){.batch_rows = 10});
    AWAIT(stats_of(f).sent == 25);
    stop(f);
    assert_int_equal(f->fake->ncalls, 3);
    assert_int_equal(count_lines(f->fake->calls[0].body), 10);
    assert_int_equal(count_lines(f->fake->calls[1].body), 10);
    assert_int_equal(count_lines(f->fake->calls[2].body), 5);
    /* The bodies together are the lines in id order. */
    char expect[8192] = "", line[256], all[8192] = "";
    for (int i = 0; i < 25; i++) {
        line_for(line, sizeof(line), i);
        strcat(expect, line);
        strcat(expect, "\n");
    }
    for (int i = 0; i < 3; i++)
        strcat(all, f->fake->calls[i].body);
    assert_string_equal(all, expect);
}

static void batches_respect_batch_bytes(void **state)
{
    fixture *f = *state;
    char small[100], big[501];
    /* 99 characters + '\n' = 100 bytes; the big one alone exceeds the bound. */
    memset(small, 's', 99);
    small[99] = '\0';
    memset(big, 'b', 500);
    big[500] = '\0';
    for (int i = 0; i < 4; i++)
        insert_line(f, "acme/gw-1", wall_ms(), small);
    insert_line(f, "acme/gw-1", wall_ms(), big);
    for (int i = 0; i < 2; i++)
        insert_line(f, "acme/gw-1", wall_ms(), small);
    start(f, &(outbox_options){.batch_bytes = 350});
    AWAIT(stats_of(f).sent == 7);
    stop(f);
    assert_int_equal(f->fake->ncalls, 4);
    size_t expect_lines[] = {3, 1, 1, 2};
    for (int i = 0; i < 4; i++) {
        assert_int_equal(count_lines(f->fake->calls[i].body), expect_lines[i]);
        if (i != 2)
            assert_true(f->fake->calls[i].len <= 350);
    }
    assert_int_equal(f->fake->calls[2].len, 501); /* the big line went alone */
}

static void rows_are_deleted_only_after_the_sink_said_ok(void **state)
{
    fixture *f = *state;
    insert_rows(f, 0, 5, wall_ms());
    f->fake->hold_at = 1;
    start(f, NULL);
    AWAIT(fake_held(f->fake));
    assert_int_equal(outbox_rows(f), 5); /* written, not yet acknowledged */
    fake_release(f->fake);
    AWAIT(outbox_rows(f) == 0);
    AWAIT(stats_of(f).sent == 5);
}

static void retry_keeps_rows_and_backs_off_doubling_to_the_cap(void **state)
{
    fixture *f = *state;
    insert_rows(f, 0, 5, wall_ms());
    f->fake->script[0] = f->fake->script[1] = f->fake->script[2] = SINK_RETRY;
    f->fake->nscript = 3;
    f->fake->hold_at = 4;
    start(f, &(outbox_options){.retry_min_ms = 20, .retry_max_ms = 50});
    AWAIT(fake_held(f->fake));
    /* Three failures behind us: every row still waits. */
    assert_int_equal(outbox_rows(f), 5);
    outbox_stats st = stats_of(f);
    assert_int_equal(st.failures, 3);
    assert_false(st.sink_up);
    assert_int_equal(st.sent, 0);
    fake_release(f->fake);
    AWAIT(stats_of(f).sent == 5);
    assert_int_equal(outbox_rows(f), 0);
    stop(f);
    assert_int_equal(f->fake->ncalls, 4);
    /* The same batch each time, after 20, 40, then 50 ms (capped). */
    int64_t want_ms[] = {20, 40, 50};
    for (int i = 1; i < 4; i++) {
        assert_string_equal(f->fake->calls[i].body, f->fake->calls[0].body);
        int64_t gap = f->fake->calls[i].at_us - f->fake->calls[i - 1].at_us;
        if (gap < want_ms[i - 1] * 1000 - 1000)
            fail_msg("retry %d came after %lld us, before the %lld ms back-off", i,
                     (long long)gap, (long long)want_ms[i - 1]);
    }
    assert_int_equal(count_lines(f->fake->calls[0].body), 5);
}

static void reject_bisects_down_to_the_bad_row(void **state)
{
    fixture *f = *state;
    char line[256];
    const char *bad = "cpu,company=acme,device=gw-1 v=BAD 1700000000010";
    assert_int_equal(sqlite3_exec(f->db, "BEGIN", NULL, NULL, NULL), SQLITE_OK);
    for (int i = 0; i < 16; i++) {
        line_for(line, sizeof(line), i);
        insert_line(f, "acme/gw-1", wall_ms(), i == 10 ? bad : line);
    }
    assert_int_equal(sqlite3_exec(f->db, "COMMIT", NULL, NULL, NULL), SQLITE_OK);
    f->fake->reject_if = "BAD";
    start(f, NULL);
    AWAIT(stats_of(f).dead == 1 && stats_of(f).sent == 15);
    assert_int_equal(outbox_rows(f), 0);
    outbox_stats st = stats_of(f);
    assert_true(st.sink_up);
    assert_int_equal(st.failures, 0);
    stop(f);

    /* Every good row exactly once, the bad one never. */
    for (int i = 0; i < 16; i++) {
        line_for(line, sizeof(line), i);
        assert_int_equal(times_delivered(f->fake, i == 10 ? bad : line), i == 10 ? 0 : 1);
    }
    /* Halving a batch of 16 finds one bad row in 2 * log2(16) + 1 writes. */
    assert_true(f->fake->ncalls <= 9);

    sqlite3_stmt *q;
    assert_int_equal(sqlite3_prepare_v2(f->db,
                                        "SELECT device, topic, payload, reason, at "
                                        "FROM dead_letters",
                                        -1, &q, NULL),
                     SQLITE_OK);
    assert_int_equal(sqlite3_step(q), SQLITE_ROW);
    assert_string_equal((const char *)sqlite3_column_text(q, 0), "acme/gw-1");
    assert_int_equal(sqlite3_column_type(q, 1), SQLITE_NULL);
    assert_int_equal(sqlite3_column_type(q, 2), SQLITE_BLOB);
    assert_int_equal(sqlite3_column_bytes(q, 2), strlen(bad));
    assert_memory_equal(sqlite3_column_blob(q, 2), bad, strlen(bad));
    assert_string_equal((const char *)sqlite3_column_text(q, 3), "fake: unable to parse 'BAD'");
    assert_true(sqlite3_column_int64(q, 4) > wall_ms() - 60000);
    assert_int_equal(sqlite3_step(q), SQLITE_DONE);
    sqlite3_finalize(q);
}

static void reject_of_several_bad_rows_dead_letters_each(void **state)
{
    fixture *f = *state;
    char line[256];
    assert_int_equal(sqlite3_exec(f->db, "BEGIN", NULL, NULL, NULL), SQLITE_OK);
    for (int i = 0; i < 9; i++) {
        line_for(line, sizeof(line), i);
        if (i == 0 || i == 4 || i == 8)
            snprintf(line, sizeof(line), "cpu,company=acme,device=gw-1 v=BAD%d 1", i);
        insert_line(f, "acme/gw-1", wall_ms(), line);
    }
    assert_int_equal(sqlite3_exec(f->db, "COMMIT", NULL, NULL, NULL), SQLITE_OK);
    f->fake->reject_if = "BAD";
    start(f, NULL);
    AWAIT(stats_of(f).dead == 3 && stats_of(f).sent == 6);
    stop(f);
    assert_int_equal(outbox_rows(f), 0);
    assert_int_equal(query_int(f, "SELECT count(*) FROM dead_letters"), 3);
    assert_int_equal(query_int(f, "SELECT count(*) FROM dead_letters WHERE "
                                  "CAST(payload AS TEXT) LIKE '%v=BAD%'"),
                     3);
    for (int i = 1; i < 8; i++) {
        if (i == 4)
            continue;
        line_for(line, sizeof(line), i);
        assert_int_equal(times_delivered(f->fake, line), 1);
    }
}

static void stop_during_backoff_returns_promptly(void **state)
{
    fixture *f = *state;
    insert_rows(f, 0, 5, wall_ms());
    f->fake->dflt = SINK_RETRY;
    start(f, &(outbox_options){.retry_min_ms = 60000, .retry_max_ms = 60000});
    AWAIT(stats_of(f).failures == 1);
    int64_t t0 = mono_us();
    stop(f);
    int64_t took_ms = (mono_us() - t0) / 1000;
    if (took_ms > 1000)
        fail_msg("outbox_stop took %lld ms during a 60 s back-off", (long long)took_ms);
    assert_true(f->fake->closed);
    assert_int_equal(f->fake->ncalls, 1);
    assert_int_equal(outbox_rows(f), 5); /* kept for the next start */
}

static void a_sink_that_keeps_failing_is_logged_once_not_per_attempt(void **state)
{
    fixture *f = *state;
    char logpath[400];
    snprintf(logpath, sizeof(logpath), "%s/stderr.log", f->dir);
    insert_rows(f, 0, 2, wall_ms());
    f->fake->dflt = SINK_RETRY;
    fflush(stderr);
    int saved = dup(2);
    FILE *log = fopen(logpath, "w");
    dup2(fileno(log), 2);
    gmq_log_set_level(GMQ_LOG_INFO);
    start(f, &(outbox_options){.retry_min_ms = 1, .retry_max_ms = 1});
    AWAIT(stats_of(f).failures >= 50);
    pthread_mutex_lock(&f->fake->lock);
    f->fake->dflt = SINK_OK;
    pthread_mutex_unlock(&f->fake->lock);
    AWAIT(stats_of(f).sent == 2);
    stop(f);
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    fclose(log);
    gmq_log_set_level(getenv("GATEMQ_TEST_LOG") ? GMQ_LOG_DEBUG : GMQ_LOG_ERROR);

    char text[8192] = "";
    FILE *in = fopen(logpath, "r");
    text[fread(text, 1, sizeof(text) - 1, in)] = '\0';
    fclose(in);
    size_t failed = 0, still = 0, back = 0;
    for (const char *p = text; (p = strstr(p, "sink fake failed")); p++)
        failed++;
    for (const char *p = text; (p = strstr(p, "still failing")); p++)
        still++;
    for (const char *p = text; (p = strstr(p, "sink fake is back")); p++)
        back++;
    if (failed != 1 || still != 0 || back != 1)
        fail_msg("log has %zu failure, %zu repeat and %zu recovery line(s):\n%s", failed, still,
                 back, text);
}

static void stats_report_waiting_rows_lag_and_sink_state(void **state)
{
    fixture *f = *state;
    insert_rows(f, 0, 5, wall_ms() - 5000);
    f->fake->script[0] = SINK_RETRY;
    f->fake->nscript = 1;
    f->fake->hold_at = 1;
    start(f, &(outbox_options){.retry_min_ms = 10});
    AWAIT(fake_held(f->fake));
    outbox_stats st = stats_of(f);
    assert_int_equal(st.rows, 5); /* counted at start */
    assert_true(st.sink_up);      /* nothing failed yet */
    assert_int_equal(st.failures, 0);
    fake_hold_next(f->fake, 2);   /* the first write fails, the second waits */
    AWAIT(fake_ncalls(f->fake) == 1 && fake_held(f->fake));
    st = stats_of(f);
    assert_int_equal(st.rows, 5);
    assert_true(st.lag_ms >= 5000 && st.lag_ms < 60000);
    assert_int_equal(st.sent, 0);
    assert_int_equal(st.failures, 1);
    assert_int_equal(st.dead, 0);
    assert_false(st.sink_up);
    fake_release(f->fake);
    AWAIT(stats_of(f).sent == 5);
    AWAIT(stats_of(f).rows == 0);
    st = stats_of(f);
    assert_int_equal(st.lag_ms, 0);
    assert_true(st.sink_up);
    assert_int_equal(st.failures, 1);
}

static void on_commit_ignored(void *arg, uint64_t seq)
{
    (void)arg;
    (void)seq;
}

static void store_commit_wakes_the_drain(void **state)
{
    fixture *f = *state;
    char err[256];
    store *s = store_open(f->path, STORE_SYNC_NORMAL, err, sizeof(err));
    assert_non_null(s);
    /* Without the wake-up nothing would look for rows for a minute. */
    start(f, &(outbox_options){.poll_ms = 60000});
    store_on_outbox_commit(s, outbox_on_commit, f->ob);
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    assert_int_equal(store_start(s, loop, on_commit_ignored, NULL), 0);
    char line[256];
    for (int i = 0; i < 3; i++) {
        line_for(line, sizeof(line), i);
        assert_int_equal(store_put_outbox(s, "acme/gw-1", wall_ms(), line, strlen(line)), 0);
    }
    AWAIT(stats_of(f).sent == 3);
    store_close(s);
    ev_loop_destroy(loop);
    stop(f);
    assert_int_equal(outbox_rows(f), 0);
}

static void lone_row_is_written_without_the_batch_delay(void **state)
{
    fixture *f = *state;
    start(f, &(outbox_options){.batch_delay_ms = 5000, .poll_ms = 60000});
    insert_rows(f, 0, 1, wall_ms());
    int64_t t0 = mono_us();
    outbox_wake(f->ob);
    AWAIT(stats_of(f).sent == 1);
    int64_t took_ms = (mono_us() - t0) / 1000;
    if (took_ms >= 2500)
        fail_msg("a lone row waited %lld ms: the batch delay applied", (long long)took_ms);
}

static void steady_wakes_gather_rows_into_one_batch(void **state)
{
    fixture *f = *state;
    start(f, &(outbox_options){.batch_delay_ms = 500, .poll_ms = 60000});
    outbox_wake(f->ob);
    outbox_wake(f->ob);
    insert_rows(f, 0, 1, wall_ms());
    outbox_wake(f->ob);
    insert_rows(f, 1, 5, wall_ms());
    outbox_wake(f->ob);
    AWAIT(stats_of(f).sent == 5);
    stop(f);
    assert_int_equal(f->fake->ncalls, 1);
    assert_int_equal(count_lines(f->fake->calls[0].body), 5);
}

static void ids_starting_over_after_the_table_ran_empty_are_drained_in_order(void **state)
{
    fixture *f = *state;
    start(f, &(outbox_options){.poll_ms = 60000});
    insert_rows(f, 0, 1, wall_ms());
    outbox_wake(f->ob);
    AWAIT(stats_of(f).sent == 1);
    AWAIT(outbox_rows(f) == 0);
    /* SQLite numbers the rows of an empty table from 1 again: the new rows
     * get ids 1 and 2, at and below the last id sent. */
    insert_rows(f, 1, 3, wall_ms());
    assert_int_equal(query_int(f, "SELECT min(id) FROM outbox"), 1);
    outbox_wake(f->ob);
    AWAIT(stats_of(f).sent == 3);
    stop(f);
    char expect[600], l1[256], l2[256];
    line_for(l1, sizeof(l1), 1);
    line_for(l2, sizeof(l2), 2);
    snprintf(expect, sizeof(expect), "%s\n%s\n", l1, l2);
    assert_int_equal(f->fake->ncalls, 2);
    assert_string_equal(f->fake->calls[1].body, expect);
}

static void start_fails_without_an_outbox_table_and_closes_the_sink(void **state)
{
    fixture *f = *state;
    char path[400], err[512] = "";
    snprintf(path, sizeof(path), "%s/plain.db", f->dir);
    sqlite3 *db;
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db, "CREATE TABLE t(x)", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
    assert_null(outbox_start(path, &f->fake->base, NULL, err, sizeof(err)));
    assert_non_null(strstr(err, "outbox"));
    assert_true(f->fake->closed);

    fake_sink *g = fake_new();
    snprintf(path, sizeof(path), "%s/missing/none.db", f->dir);
    assert_null(outbox_start(path, &g->base, NULL, err, sizeof(err)));
    assert_non_null(strstr(err, "cannot open"));
    assert_true(g->closed);
    fake_free(g);
}

static void file_sink_writes_exactly_the_lines(void **state)
{
    fixture *f = *state;
    char path[400], err[256], line[256];
    snprintf(path, sizeof(path), "%s/points.lp", f->dir);
    sink *fs = sink_file_open(path, err, sizeof(err));
    assert_non_null(fs);
    insert_rows(f, 0, 7, wall_ms());
    f->ob = outbox_start(f->path, fs, &(outbox_options){.batch_rows = 3}, err, sizeof(err));
    assert_non_null(f->ob);
    AWAIT(stats_of(f).sent == 7);
    stop(f);
    char expect[4096] = "", got[4096] = "";
    for (int i = 0; i < 7; i++) {
        line_for(line, sizeof(line), i);
        strcat(expect, line);
        strcat(expect, "\n");
    }
    FILE *in = fopen(path, "r");
    assert_non_null(in);
    size_t n = fread(got, 1, sizeof(got) - 1, in);
    fclose(in);
    got[n] = '\0';
    assert_string_equal(got, expect);
}

static void file_sink_appends_and_ends_each_write_with_a_newline(void **state)
{
    fixture *f = *state;
    char path[400], err[256] = "", got[256] = "";
    snprintf(path, sizeof(path), "%s/points.lp", f->dir);
    FILE *out = fopen(path, "w");
    fputs("old 1\n", out);
    fclose(out);
    sink *fs = sink_file_open(path, err, sizeof(err));
    assert_non_null(fs);
    assert_int_equal(sink_write(fs, "a v=1 1", 7, err, sizeof(err)), SINK_OK);
    assert_int_equal(sink_write(fs, "b v=2 2\nc v=3 3\n", 16, err, sizeof(err)), SINK_OK);
    sink_close(fs);
    FILE *in = fopen(path, "r");
    got[fread(got, 1, sizeof(got) - 1, in)] = '\0';
    fclose(in);
    assert_string_equal(got, "old 1\na v=1 1\nb v=2 2\nc v=3 3\n");
}

static void file_sink_open_fails_in_a_missing_directory(void **state)
{
    fixture *f = *state;
    char path[400], err[256] = "";
    snprintf(path, sizeof(path), "%s/missing/points.lp", f->dir);
    assert_null(sink_file_open(path, err, sizeof(err)));
    assert_non_null(strstr(err, "cannot open"));
}

static void influx_sink_refuses_bad_urls(void **state)
{
    (void)state;
    char err[256] = "";
    const char *bad[] = {"ftp://127.0.0.1:8086", "not a url", "http://", "http://h:1/x?y=1"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        err[0] = '\0';
        sink *s = sink_influx_open(bad[i], "db", 1000, err, sizeof(err));
        if (s)
            fail_msg("accepted %s", bad[i]);
        assert_true(err[0] != '\0');
    }
    assert_null(sink_influx_open("http://127.0.0.1:8086", "", 1000, err, sizeof(err)));
    sink *s = sink_influx_open("http://u:p@127.0.0.1:8086/", "my db&x", 1000, err, sizeof(err));
    assert_non_null(s);
    sink_close(s);
}

static void influx_sink_unreachable_server_is_retry(void **state)
{
    (void)state;
    /* A port just freed, with nobody listening. */
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t alen = sizeof(a);
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &alen), 0);
    close(fd);
    char url[64], err[512] = "";
    snprintf(url, sizeof(url), "http://u:secret@127.0.0.1:%u", ntohs(a.sin_port));
    sink *s = sink_influx_open(url, "db", 2000, err, sizeof(err));
    assert_non_null(s);
    assert_int_equal(sink_write(s, "m v=1 1\n", 8, err, sizeof(err)), SINK_RETRY);
    assert_true(err[0] != '\0');
    assert_null(strstr(err, "secret")); /* credentials stay out of messages */
    sink_close(s);
}

#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)

int main(void)
{
    gmq_log_set_level(getenv("GATEMQ_TEST_LOG") ? GMQ_LOG_DEBUG : GMQ_LOG_ERROR);
    const struct CMUnitTest tests[] = {
        T(rows_written_before_start_are_drained),
        T(batches_respect_batch_rows_in_id_order),
        T(batches_respect_batch_bytes),
        T(rows_are_deleted_only_after_the_sink_said_ok),
        T(retry_keeps_rows_and_backs_off_doubling_to_the_cap),
        T(reject_bisects_down_to_the_bad_row),
        T(reject_of_several_bad_rows_dead_letters_each),
        T(stop_during_backoff_returns_promptly),
        T(stats_report_waiting_rows_lag_and_sink_state),
        T(a_sink_that_keeps_failing_is_logged_once_not_per_attempt),
        T(store_commit_wakes_the_drain),
        T(lone_row_is_written_without_the_batch_delay),
        T(steady_wakes_gather_rows_into_one_batch),
        T(ids_starting_over_after_the_table_ran_empty_are_drained_in_order),
        T(start_fails_without_an_outbox_table_and_closes_the_sink),
        T(file_sink_writes_exactly_the_lines),
        T(file_sink_appends_and_ends_each_write_with_a_newline),
        T(file_sink_open_fails_in_a_missing_directory),
        T(influx_sink_refuses_bad_urls),
        T(influx_sink_unreachable_server_is_retry),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
