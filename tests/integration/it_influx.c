/* Integration tests of the InfluxDB sink (store/sink_influx.c) and the
 * outbox drain against a real influxd (InfluxDB 1.x) started on free
 * loopback ports in a temporary directory (influx_util.h). One server
 * serves the group; the test that stops a server has its own.
 *
 * The drain test prints the measured throughput (points/s). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <curl/curl.h>
#include <ftw.h>
#include <json-c/json.h>
#include <sqlite3.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "broker/log.h"
#include "influx_util.h"
#include "store/outbox.h"
#include "store/sink.h"
#include "store/store.h"

#define START_TIMEOUT_MS 20000
#define DB "gatemq_it"

static influxd server;

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int group_setup(void **state)
{
    (void)state;
    char err[1024] = "";
    if (!influxd_binary()) {
        print_error("it_influx: influxd is not installed: these tests need InfluxDB 1.x "
                    "(Debian package influxdb; `make deps` installs it) or INFLUXD=/path\n");
        return -1;
    }
    curl_global_init(CURL_GLOBAL_DEFAULT);
    if (influxd_start(&server, START_TIMEOUT_MS, err, sizeof(err)) ||
        influxd_create_db(&server, DB, err, sizeof(err))) {
        print_error("it_influx: %s\n", err);
        influxd_stop(&server);
        return -1;
    }
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    influxd_stop(&server);
    curl_global_cleanup();
    return 0;
}

static sink *open_sink(const influxd *ix, const char *db)
{
    char err[512] = "";
    sink *s = sink_influx_open(ix->url, db, 5000, err, sizeof(err));
    if (!s)
        fail_msg("sink_influx_open: %s", err);
    return s;
}

/* The first series of a query's answer, or NULL when there is none; the
 * whole answer is returned in *root for json_object_put. */
static json_object *query_series(const char *db, const char *q, json_object **root)
{
    char err[512] = "", *body = NULL;
    long status = influxd_query(&server, db, q, &body, err, sizeof(err));
    if (status != 200)
        fail_msg("query %s: %ld %s %s", q, status, err, body ? body : "");
    *root = json_tokener_parse(body);
    if (!*root)
        fail_msg("query %s: not JSON: %s", q, body);
    free(body);
    json_object *results, *r0, *series;
    if (!json_object_object_get_ex(*root, "results", &results) ||
        !(r0 = json_object_array_get_idx(results, 0)))
        fail_msg("query %s: no results", q);
    if (!json_object_object_get_ex(r0, "series", &series))
        return NULL;
    return json_object_array_get_idx(series, 0);
}

/* Index of column name in a series. */
static int column(json_object *series, const char *name)
{
    json_object *cols;
    assert_true(json_object_object_get_ex(series, "columns", &cols));
    for (size_t i = 0; i < json_object_array_length(cols); i++)
        if (strcmp(json_object_get_string(json_object_array_get_idx(cols, i)), name) == 0)
            return (int)i;
    fail_msg("no column %s", name);
    return -1;
}

static json_object *cell(json_object *series, size_t row, const char *name)
{
    json_object *values, *r;
    assert_true(json_object_object_get_ex(series, "values", &values));
    r = json_object_array_get_idx(values, row);
    assert_non_null(r);
    return json_object_array_get_idx(r, (size_t)column(series, name));
}

static size_t row_count(json_object *series)
{
    json_object *values;
    if (!series || !json_object_object_get_ex(series, "values", &values))
        return 0;
    return json_object_array_length(values);
}

static int64_t count_of(const char *q)
{
    json_object *root;
    json_object *s = query_series(DB, q, &root);
    int64_t n = s ? json_object_get_int64(cell(s, 0, "count")) : 0;
    json_object_put(root);
    return n;
}

/* ---- tests ---------------------------------------------------------------- */

static void points_are_stored_with_tags_fields_and_ms_timestamps(void **state)
{
    (void)state;
    sink *s = open_sink(&server, DB);
    const char body[] =
        "machine,company=acme,device=gw-1,topic=telemetry/press temp=21.5,count=3i,ok=true,"
        "label=\"line 4\" 1700000000123\n"
        "machine,company=acme,device=gw-1,topic=telemetry/press temp=22.25,count=4i,ok=false,"
        "label=\"line 4\" 1700000000456\n"
        "machine,company=globex,device=gw-1,topic=telemetry/press temp=-3,count=5i,ok=true,"
        "label=\"a \\\"quoted\\\" label\" 1700000000789\n";
    char err[512] = "";
    assert_int_equal(sink_write(s, body, strlen(body), err, sizeof(err)), SINK_OK);
    sink_close(s);

    json_object *root;
    json_object *series =
        query_series(DB, "SELECT * FROM machine WHERE company = 'acme' ORDER BY time", &root);
    assert_non_null(series);
    assert_int_equal(row_count(series), 2);
    assert_int_equal(json_object_get_int64(cell(series, 0, "time")), 1700000000123LL);
    assert_int_equal(json_object_get_int64(cell(series, 1, "time")), 1700000000456LL);
    assert_string_equal(json_object_get_string(cell(series, 0, "company")), "acme");
    assert_string_equal(json_object_get_string(cell(series, 0, "device")), "gw-1");
    assert_string_equal(json_object_get_string(cell(series, 0, "topic")), "telemetry/press");
    assert_true(json_object_get_double(cell(series, 0, "temp")) == 21.5);
    assert_true(json_object_get_double(cell(series, 1, "temp")) == 22.25);
    assert_int_equal(json_object_get_int64(cell(series, 0, "count")), 3);
    assert_true(json_object_get_boolean(cell(series, 0, "ok")));
    assert_false(json_object_get_boolean(cell(series, 1, "ok")));
    assert_string_equal(json_object_get_string(cell(series, 0, "label")), "line 4");
    json_object_put(root);

    series = query_series(DB, "SELECT * FROM machine WHERE company = 'globex'", &root);
    assert_non_null(series);
    assert_int_equal(row_count(series), 1);
    assert_int_equal(json_object_get_int64(cell(series, 0, "time")), 1700000000789LL);
    assert_string_equal(json_object_get_string(cell(series, 0, "label")), "a \"quoted\" label");
    json_object_put(root);
}

static void bad_point_is_rejected_with_the_servers_message(void **state)
{
    (void)state;
    sink *s = open_sink(&server, DB);
    char err[512] = "";
    const char unparsable[] = "reject_m,company=acme,device=gw-1 v= 1700000000000\n";
    assert_int_equal(sink_write(s, unparsable, strlen(unparsable), err, sizeof(err)),
                     SINK_REJECT);
    if (!strstr(err, "HTTP 400") || !strstr(err, "unable to parse"))
        fail_msg("reason: %s", err);

    /* Parsable, but a string where the field holds floats. */
    const char first[] = "reject_m,company=acme,device=gw-1 v=1 1700000000000\n";
    const char conflict[] = "reject_m,company=acme,device=gw-1 v=\"text\" 1700000000001\n";
    assert_int_equal(sink_write(s, first, strlen(first), err, sizeof(err)), SINK_OK);
    assert_int_equal(sink_write(s, conflict, strlen(conflict), err, sizeof(err)), SINK_REJECT);
    if (!strstr(err, "field type conflict"))
        fail_msg("reason: %s", err);
    /* The connection is still good for the next write. */
    assert_int_equal(sink_write(s, first, strlen(first), err, sizeof(err)), SINK_OK);
    sink_close(s);
}

static void unknown_database_is_retry_not_reject(void **state)
{
    (void)state;
    /* A configuration fault says nothing about the points: they must wait
     * for the database, not go to the dead letters. */
    sink *s = open_sink(&server, "no such db");
    char err[512] = "";
    const char body[] = "m,company=acme,device=gw-1 v=1 1700000000000\n";
    assert_int_equal(sink_write(s, body, strlen(body), err, sizeof(err)), SINK_RETRY);
    if (!strstr(err, "404") || !strstr(err, "database not found"))
        fail_msg("reason: %s", err);
    sink_close(s);
}

static void same_points_written_twice_are_stored_once(void **state)
{
    (void)state;
    sink *s = open_sink(&server, DB);
    char err[512] = "";
    const char body[] = "replay,company=acme,device=gw-2 v=1 1700000001000\n"
                        "replay,company=acme,device=gw-2 v=2 1700000002000\n";
    assert_int_equal(sink_write(s, body, strlen(body), err, sizeof(err)), SINK_OK);
    assert_int_equal(sink_write(s, body, strlen(body), err, sizeof(err)), SINK_OK);
    sink_close(s);
    assert_int_equal(count_of("SELECT count(v) FROM replay"), 2);
}

static void stopped_influxd_gives_retry_and_the_sink_recovers(void **state)
{
    (void)state;
    influxd own;
    char err[1024] = "";
    if (influxd_start(&own, START_TIMEOUT_MS, err, sizeof(err)))
        fail_msg("%s", err);
    sink *s = open_sink(&own, "down");
    const char body[] = "m,company=acme,device=gw-1 v=1 1700000000000\n";
    assert_int_equal(influxd_create_db(&own, "down", err, sizeof(err)), 0);
    assert_int_equal(sink_write(s, body, strlen(body), err, sizeof(err)), SINK_OK);
    influxd_halt(&own);
    err[0] = '\0';
    assert_int_equal(sink_write(s, body, strlen(body), err, sizeof(err)), SINK_RETRY);
    assert_true(err[0] != '\0');
    if (influxd_resume(&own, START_TIMEOUT_MS, err, sizeof(err))) {
        sink_close(s);
        influxd_stop(&own);
        fail_msg("%s", err);
    }
    assert_int_equal(sink_write(s, body, strlen(body), err, sizeof(err)), SINK_OK);
    sink_close(s);
    influxd_stop(&own);
}

static int remove_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static void outbox_drains_to_influxdb_with_bad_rows_dead_lettered(void **state)
{
    (void)state;
    /* GATEMQ_IT_DRAIN_POINTS raises the count for a steadier figure. */
    const char *env = getenv("GATEMQ_IT_DRAIN_POINTS");
    const int N = env && atoi(env) > 20000 ? atoi(env) : 20000, BAD = 12345;
    char dir[] = "/tmp/gatemq-it-outbox-XXXXXX", path[128], err[512] = "";
    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof(path), "%s/gatemq.db", dir);
    store *st = store_open(path, STORE_SYNC_NORMAL, err, sizeof(err));
    assert_non_null(st);
    store_close(st);

    /* N rows as the broker writes them: one device per company of ten,
     * distinct millisecond timestamps; one row InfluxDB cannot parse. */
    sqlite3 *db;
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    sqlite3_stmt *ins;
    assert_int_equal(sqlite3_prepare_v2(db,
                                        "INSERT INTO outbox(received, device, line) "
                                        "VALUES(?1, ?2, ?3)",
                                        -1, &ins, NULL),
                     SQLITE_OK);
    assert_int_equal(sqlite3_exec(db, "BEGIN", NULL, NULL, NULL), SQLITE_OK);
    for (int i = 0; i < N; i++) {
        char line[256], device[64];
        snprintf(device, sizeof(device), "co%d/gw-%d", i % 10, i % 10);
        if (i == BAD)
            snprintf(line, sizeof(line), "drain,company=co%d,device=gw-%d v= %lld", i % 10,
                     i % 10, 1700000000000LL + i);
        else
            snprintf(line, sizeof(line),
                     "drain,company=co%d,device=gw-%d,topic=telemetry/x v=%d.5,n=%di %lld",
                     i % 10, i % 10, i, i, 1700000000000LL + i);
        sqlite3_bind_int64(ins, 1, 1700000000000LL + i);
        sqlite3_bind_text(ins, 2, device, -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(ins, 3, line, -1, SQLITE_TRANSIENT);
        assert_int_equal(sqlite3_step(ins), SQLITE_DONE);
        sqlite3_reset(ins);
    }
    sqlite3_finalize(ins);
    assert_int_equal(sqlite3_exec(db, "COMMIT", NULL, NULL, NULL), SQLITE_OK);

    int64_t t0 = mono_ms();
    outbox *ob = outbox_start(path, open_sink(&server, DB), NULL, err, sizeof(err));
    if (!ob)
        fail_msg("outbox_start: %s", err);
    outbox_stats stats;
    for (;;) {
        outbox_get_stats(ob, &stats);
        if (stats.sent + stats.dead == (uint64_t)N)
            break;
        if (mono_ms() - t0 > 25000 + N / 10)
            fail_msg("drained %llu of %d in time", (unsigned long long)stats.sent, N);
        usleep(2000);
    }
    int64_t took = mono_ms() - t0;
    outbox_stop(ob);
    print_message("outbox -> InfluxDB: %d points in %lld ms = %.0f points/s "
                  "(batches of 5000, one bad point bisected out)\n",
                  N - 1, (long long)took, (N - 1) * 1000.0 / (double)(took ? took : 1));
    assert_int_equal(stats.sent, N - 1);
    assert_int_equal(stats.dead, 1);

    sqlite3_stmt *q;
    assert_int_equal(sqlite3_prepare_v2(db, "SELECT (SELECT count(*) FROM outbox), "
                                            "(SELECT count(*) FROM dead_letters)",
                                        -1, &q, NULL),
                     SQLITE_OK);
    assert_int_equal(sqlite3_step(q), SQLITE_ROW);
    assert_int_equal(sqlite3_column_int(q, 0), 0);
    assert_int_equal(sqlite3_column_int(q, 1), 1);
    sqlite3_finalize(q);
    sqlite3_close(db);
    nftw(dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);

    assert_int_equal(count_of("SELECT count(n) FROM drain"), N - 1);
    assert_int_equal(count_of("SELECT count(n) FROM drain WHERE company = 'co3'"), N / 10);
}

int main(void)
{
    gmq_log_set_level(getenv("GATEMQ_TEST_LOG") ? GMQ_LOG_DEBUG : GMQ_LOG_WARNING);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(points_are_stored_with_tags_fields_and_ms_timestamps),
        cmocka_unit_test(bad_point_is_rejected_with_the_servers_message),
        cmocka_unit_test(unknown_database_is_retry_not_reject),
        cmocka_unit_test(same_points_written_twice_are_stored_once),
        cmocka_unit_test(stopped_influxd_gives_retry_and_the_sink_recovers),
        cmocka_unit_test(outbox_drains_to_influxdb_with_bad_rows_dead_lettered),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
