/*
 * it_telemetry.c - the telemetry bridge and device presence, end to end
 * (docs/telemetry.md): the real broker binary, TLS devices with
 * certificates made by tools/gatemq-cert, a real InfluxDB 1.x (influxd on
 * free loopback ports, influx_util.h) and the broker's own SQLite file.
 *
 * Set-up: the group setup of tenant_util.h (CA, server certificate,
 * devices acme/gw-1, acme/gw-2, acme/gw-3, globex/gw-1, globex/gw-2) and
 * one influxd for the whole program; every test creates its own InfluxDB
 * database and its own temporary directory (persistence_file, file sink),
 * removed by the per-test teardown. Brokers get sys_interval 1,
 * sink_batch_delay 20 and sink_retry_max 1 so that counters and retries
 * show up quickly.
 *
 * Publishers of telemetry are devices: mosquitto_pub with --cafile --cert
 * --key -i <device id>, or the raw TLS client of tenant_util.h. Platform
 * observers (watchers of presence and $SYS) are anonymous clients of the
 * broker's plain loopback listener, which see the internal
 * "<company>/..." topics.
 *
 * Synchronisation: conditions are awaited with deadlines (an InfluxDB
 * COUNT until it matches, a subscriber's next message, a row in the
 * database file). Absence is shown with a marker (something that must come
 * after what must not) wherever possible; the few bounded quiet windows are
 * commented. The presence tests measure when a notification arrives; they
 * need time to pass, and the restart tests keep the broker down for a
 * fixed part of the delay on purpose (commented where it happens).
 *
 * Run: make B=build/x build/x/gatemq build/x/tests/it_telemetry &&
 *      GATEMQ_BIN=build/x/gatemq GATEMQ_BUILD=build/x build/x/tests/it_telemetry
 */
#include "influx_util.h"
#include "tenant_util.h"
#include "tls_util.h"

#include <errno.h>
#include <inttypes.h>
#include <json-c/json.h>
#include <limits.h>
#include <sqlite3.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define N_ELEMS(a) (sizeof(a) / sizeof((a)[0]))

/* Deadline for points to reach InfluxDB or the file sink (ms). */
#define SINK_TIMEOUT 20000
/* Accepted clock-correction error (ms). docs/telemetry.md, "Limits":
 * "Accuracy is the smallest one-way delay among the live messages in the
 * window ... Corrected times are late by that amount, never early." The
 * tests check the exact bound [0, smallest measured round trip of a live
 * message] (a one-way delay is at most the PUBLISH/PUBACK round trip timed
 * from the moment the device time was read), and also that it stays under
 * this second, the doc's "a few to a few hundred milliseconds" with room
 * for a sanitizer build. */
#define CLOCK_TOLERANCE_MS 1000
/* The ms truncation of stored disconnection times may make a restored
 * timer fire up to 1 ms early; a little slack for that. */
#define TIMER_SLACK_MS 5

static influxd ix;
static char tdir[PATH_MAX]; /* this test's temporary directory, or "" */
static int db_counter;

/* ---- program set-up --------------------------------------------------------- */

static int group_setup(void **state)
{
    if (tn_group_setup(state) != 0)
        return -1;
    if (!influxd_binary()) {
        print_error("it_telemetry: influxd is not installed (Debian package influxdb, or "
                    "INFLUXD=/path)\n");
        return -1;
    }
    char err[1024] = "";
    if (influxd_start(&ix, 20000, err, sizeof err) != 0) {
        print_error("it_telemetry: %s\n", err);
        return -1;
    }
    return 0;
}

static int group_teardown(void **state)
{
    influxd_stop(&ix);
    return tn_group_teardown(state);
}

static int teardown(void **state)
{
    int rc = tn_teardown(state);
    if (tdir[0]) {
        it_remove_tree(tdir);
        tdir[0] = '\0';
    }
    /* A test that failed while InfluxDB was halted: bring it back. */
    if (!ix.pid && ix.dir[0]) {
        char err[1024] = "";
        if (influxd_resume(&ix, 20000, err, sizeof err) != 0)
            print_error("it_telemetry: influxd did not come back: %s\n", err);
    }
    return rc;
}

#define TT_TEST(f) cmocka_unit_test_teardown(f, teardown)

/* ---- small utilities ---------------------------------------------------------- */

static int64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void pause_ms(long ms)
{
    struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

/* Let time pass until the monotonic clock reads at least `until` (ms). Not
 * a synchronisation: used where the scenario itself needs time to pass. */
static void pass_time_until(long until)
{
    long now;
    while ((now = it_now_ms()) < until)
        pause_ms(until - now);
}

static const char *test_dir(void)
{
    if (!tdir[0]) {
        char t[] = "/tmp/gatemq-it-tele.XXXXXX";
        if (!mkdtemp(t))
            it_fail("mkdtemp: %s", strerror(errno));
        snprintf(tdir, sizeof tdir, "%s", t);
    }
    return tdir;
}

static const char *db_file(void)
{
    static char path[PATH_MAX + 16];
    snprintf(path, sizeof path, "%s/gatemq.db", test_dir());
    return path;
}

static void rfc3339_ms(int64_t ms, char *out, size_t len)
{
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&t, &tm);
    snprintf(out, len, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1,
             tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)(ms % 1000));
}

/* ---- brokers ------------------------------------------------------------------ */

/* A fresh InfluxDB database for this test; its name goes to name. */
static void new_influx_db__(char *name, size_t n)
{
    snprintf(name, n, "tele%d", ++db_counter);
    char err[1024] = "";
    if (influxd_create_db(&ix, name, err, sizeof err) != 0)
        it_fail("CREATE DATABASE %s: %s", name, err);
}
#define new_influx_db(name) IT__AT(new_influx_db__(name, sizeof(name)))

/* A broker (tn_start: plain anonymous listener + TLS listener requiring a
 * device certificate) with persistence_file in this test's directory,
 * $SYS every second, and sink_line (e.g. "sink file PATH") with
 * telemetry_topic telemetry/#, or no telemetry at all when NULL. */
static it_broker *start_broker__(const char *sink_line, const char *extra, uint16_t *tls)
{
    char conf[2048];
    int n = snprintf(conf, sizeof conf,
                     "persistence_file %s\n"
                     "sys_interval 1\n"
                     "%s%s%s"
                     "%s\n",
                     db_file(),
                     sink_line ? "telemetry_topic telemetry/#\nsink_batch_delay 20\n"
                                 "sink_retry_max 1\n"
                               : "",
                     sink_line ? sink_line : "", sink_line ? "\n" : "", extra ? extra : "");
    if (n < 0 || (size_t)n >= sizeof conf)
        it_fail("configuration too long");
    return tn__start(conf, tls);
}
#define start_broker(sink, extra, tls) IT__AT(start_broker__(sink, extra, tls))

/* The same with the InfluxDB sink writing to database db. */
static it_broker *start_influx_broker__(const char *db, const char *extra, uint16_t *tls)
{
    char sink[256];
    snprintf(sink, sizeof sink, "sink influxdb %s %s", ix.url, db);
    return start_broker__(sink, extra, tls);
}
#define start_influx_broker(db, extra, tls) IT__AT(start_influx_broker__(db, extra, tls))

/* ---- mosquitto_pub as a device -------------------------------------------------- */

/* One QoS 1 message with mosquitto_pub -d as device company/id (client id
 * id); returns its exit status, its output in *out (malloc'd). */
static int mosq_pub__(uint16_t tls, const char *company, const char *id, const char *topic,
                      const char *msg, char **out)
{
    tu_dev d;
    tu_device_in(&d, tn_pki(), company, id);
    char ca[PATH_MAX];
    tu__fmt(ca, sizeof ca, "%s/ca.crt", tn_pki());
    return tu__dev_pub(tls, ca, &d, id, topic, msg, out);
}

/* The same, which must succeed with a PUBACK. */
static void mosq_pub_ok__(uint16_t tls, const char *company, const char *id, const char *topic,
                          const char *msg)
{
    char *out = NULL;
    int rc = mosq_pub__(tls, company, id, topic, msg, &out);
    if (rc != 0 || !tu_has(out, "received PUBACK")) {
        print_error("mosquitto_pub output:\n%s\n", out ? out : "");
        free(out);
        it_fail("mosquitto_pub as %s/%s to %s: exit %d, or no PUBACK", company, id, topic, rc);
    }
    free(out);
}
#define mosq_pub_ok(tls, co, id, topic, msg) IT__AT(mosq_pub_ok__(tls, co, id, topic, msg))

/* ---- InfluxDB queries ------------------------------------------------------------ */

/* The first series of a query's answer (NULL: none); the whole answer goes
 * to *root for json_object_put. Fails the test on an error. */
static json_object *influx_series(const char *db, const char *q, json_object **root)
{
    char err[512] = "", *body = NULL;
    long status = influxd_query(&ix, db, q, &body, err, sizeof err);
    if (status != 200) {
        char msg[1024];
        snprintf(msg, sizeof msg, "%s", body ? body : "");
        free(body);
        it_fail("InfluxDB query %s: HTTP %ld %s %s", q, status, err, msg);
    }
    *root = json_tokener_parse(body);
    if (!*root) {
        char msg[1024];
        snprintf(msg, sizeof msg, "%s", body);
        free(body);
        it_fail("InfluxDB query %s: not JSON: %s", q, msg);
    }
    free(body);
    json_object *results, *r0, *series, *e;
    if (!json_object_object_get_ex(*root, "results", &results) ||
        !(r0 = json_object_array_get_idx(results, 0)))
        it_fail("InfluxDB query %s: no results", q);
    if (json_object_object_get_ex(r0, "error", &e))
        it_fail("InfluxDB query %s: %s", q, json_object_get_string(e));
    if (!json_object_object_get_ex(r0, "series", &series))
        return NULL;
    return json_object_array_get_idx(series, 0);
}

static int column_of(json_object *series, const char *name)
{
    json_object *cols;
    if (!json_object_object_get_ex(series, "columns", &cols))
        it_fail("series without columns");
    for (size_t i = 0; i < json_object_array_length(cols); i++)
        if (strcmp(json_object_get_string(json_object_array_get_idx(cols, i)), name) == 0)
            return (int)i;
    it_fail("no column %s in %s", name, json_object_to_json_string(cols));
}

static size_t column_count(json_object *series)
{
    json_object *cols;
    return json_object_object_get_ex(series, "columns", &cols) ? json_object_array_length(cols)
                                                               : 0;
}

static json_object *cell(json_object *series, size_t row, const char *name)
{
    json_object *values, *r;
    if (!json_object_object_get_ex(series, "values", &values) ||
        !(r = json_object_array_get_idx(values, row)))
        it_fail("no row %zu", row);
    return json_object_array_get_idx(r, (size_t)column_of(series, name));
}

static size_t row_count(json_object *series)
{
    json_object *values;
    if (!series || !json_object_object_get_ex(series, "values", &values))
        return 0;
    return json_object_array_length(values);
}

/* The value of column "count" of a COUNT query (0 when nothing matches). */
static int64_t influx_count(const char *db, const char *q)
{
    json_object *root;
    json_object *s = influx_series(db, q, &root);
    int64_t n = s ? json_object_get_int64(cell(s, 0, "count")) : 0;
    json_object_put(root);
    return n;
}

/* Poll the COUNT query q until it gives n; more than n fails at once. */
static void await_count__(const char *db, const char *q, int64_t n, int timeout_ms)
{
    long deadline = it_now_ms() + timeout_ms;
    int64_t got;
    while ((got = influx_count(db, q)) != n) {
        if (got > n)
            it_fail("%s gives %" PRId64 ", more than the %" PRId64 " points written", q, got, n);
        if (it_now_ms() > deadline)
            it_fail("%s gives %" PRId64 " instead of %" PRId64 " after %d ms", q, got, n,
                    timeout_ms);
        pause_ms(50);
    }
}
#define await_count(db, q, n) IT__AT(await_count__(db, q, n, SINK_TIMEOUT))

/* ---- the broker's database file ---------------------------------------------------- */

/* Run q (one optional text parameter ?1) read-only on the broker's
 * database file; the first column of the first row as text into buf.
 * Returns false when there is no row. */
static bool sql_text(const char *q, const char *param, char *buf, size_t n)
{
    sqlite3 *db = NULL;
    if (sqlite3_open_v2(db_file(), &db, SQLITE_OPEN_READONLY, NULL) != SQLITE_OK) {
        char msg[256];
        snprintf(msg, sizeof msg, "%s", db ? sqlite3_errmsg(db) : "?");
        sqlite3_close(db);
        it_fail("open %s: %s", db_file(), msg);
    }
    sqlite3_busy_timeout(db, 5000);
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(db, q, -1, &st, NULL) != SQLITE_OK) {
        char msg[256];
        snprintf(msg, sizeof msg, "%s", sqlite3_errmsg(db));
        sqlite3_close(db);
        it_fail("prepare %s: %s", q, msg);
    }
    if (param)
        sqlite3_bind_text(st, 1, param, -1, SQLITE_TRANSIENT);
    int rc = sqlite3_step(st);
    bool row = rc == SQLITE_ROW;
    if (row) {
        const unsigned char *t = sqlite3_column_text(st, 0);
        snprintf(buf, n, "%s", t ? (const char *)t : "");
    } else if (rc != SQLITE_DONE) {
        char msg[256];
        snprintf(msg, sizeof msg, "%s", sqlite3_errmsg(db));
        sqlite3_finalize(st);
        sqlite3_close(db);
        it_fail("step %s: %s", q, msg);
    }
    sqlite3_finalize(st);
    sqlite3_close(db);
    return row;
}

/* Poll q until its first column reads expected. */
static void await_sql__(const char *q, const char *param, const char *expected, int timeout_ms)
{
    long deadline = it_now_ms() + timeout_ms;
    char got[1024] = "";
    for (;;) {
        bool row = sql_text(q, param, got, sizeof got);
        if (row && strcmp(got, expected) == 0)
            return;
        if (it_now_ms() > deadline)
            it_fail("%s gives %s%s%s instead of '%s' after %d ms", q, row ? "'" : "no row",
                    row ? got : "", row ? "'" : "", expected, timeout_ms);
        pause_ms(20);
    }
}
#define await_sql(q, param, expected) IT__AT(await_sql__(q, param, expected, TN_TIMEOUT))

/* ---- subscribers ------------------------------------------------------------------- */

/* A platform client of b's plain listener subscribed (QoS 1) to filter. */
static tn_conn *watcher__(it_broker *b, const char *id, const char *filter)
{
    tn_conn *w = tn__platform(it_broker_port(b), id);
    const char *f = filter;
    tn__subscribe_n(w, &f, 1, 1);
    return w;
}
#define watcher(b, id, filter) IT__AT(watcher__(b, id, filter))

/* Read w (subscribed to $SYS topics, which the broker republishes every
 * sys_interval) until topic carries value; with live_only, only a live
 * update (RETAIN 0, i.e. published after the subscription) counts. */
static void await_sys__(tn_conn *w, const char *topic, const char *value, bool live_only,
                        int timeout_ms)
{
    long deadline = it_now_ms() + timeout_ms;
    char last[128] = "(nothing)";
    for (;;) {
        long left = deadline - it_now_ms();
        tn_msg m;
        int r = left > 0 ? tn_recv(w, &m, (int)left) : 0;
        if (r < 0)
            it_fail("%s: connection closed while waiting for %s = %s", tn_name(w), topic, value);
        if (r == 0)
            it_fail("%s is still %s, not %s, after %d ms", topic, last, value, timeout_ms);
        if (strcmp(m.topic, topic) == 0) {
            bool hit = strcmp(m.payload, value) == 0 && (!live_only || !m.retain);
            snprintf(last, sizeof last, "'%s'%s", m.payload, m.retain ? " (retained)" : "");
            tn_msg_free(&m);
            if (hit)
                return;
            continue;
        }
        tn_msg_free(&m);
    }
}
#define await_sys(w, topic, value) IT__AT(await_sys__(w, topic, value, false, TN_TIMEOUT))
#define await_sys_live(w, topic, value) IT__AT(await_sys__(w, topic, value, true, TN_TIMEOUT))

/* ---- presence notifications ---------------------------------------------------------- */

/* A received PUBLISH, copied. */
typedef struct pmsg {
    char topic[256];
    char payload[512];
    uint8_t qos;
    bool retain;
} pmsg;

/* m must be a presence notification on topic: QoS 1, RETAIN retain, and a
 * payload of exactly the documented members {"device", "state", "since",
 * "since_ms"} with since_ms in [lo, hi] and since its RFC 3339 form.
 * Returns since_ms. */
static int64_t check_presence__(const pmsg *m, const char *topic, const char *device,
                                const char *state, int64_t lo, int64_t hi, bool retain)
{
    if (strcmp(m->topic, topic) != 0)
        it_fail("presence notification on '%s' (payload %s), expected topic '%s'", m->topic,
                m->payload, topic);
    if (m->qos != 1 || m->retain != retain)
        it_fail("presence notification %s with QoS %u RETAIN %d, expected QoS 1 RETAIN %d",
                m->payload, m->qos, m->retain, retain);
    json_object *o = json_tokener_parse(m->payload);
    if (!o || !json_object_is_type(o, json_type_object)) {
        json_object_put(o);
        it_fail("presence payload is not a JSON object: %s", m->payload);
    }
    json_object *jd, *js, *jsince, *jms;
    bool ok = json_object_object_length(o) == 4 && json_object_object_get_ex(o, "device", &jd) &&
              json_object_is_type(jd, json_type_string) &&
              json_object_object_get_ex(o, "state", &js) &&
              json_object_is_type(js, json_type_string) &&
              json_object_object_get_ex(o, "since", &jsince) &&
              json_object_is_type(jsince, json_type_string) &&
              json_object_object_get_ex(o, "since_ms", &jms) &&
              json_object_is_type(jms, json_type_int);
    if (!ok) {
        json_object_put(o);
        it_fail("presence payload lacks the documented members: %s", m->payload);
    }
    int64_t since = json_object_get_int64(jms);
    char want_since[64];
    rfc3339_ms(since, want_since, sizeof want_since);
    bool good = strcmp(json_object_get_string(jd), device) == 0 &&
                strcmp(json_object_get_string(js), state) == 0 &&
                strcmp(json_object_get_string(jsince), want_since) == 0;
    json_object_put(o);
    if (!good)
        it_fail("presence payload %s: expected device %s, state %s, since %s", m->payload, device,
                state, want_since);
    if (since < lo || since > hi)
        it_fail("presence payload %s: since_ms %" PRId64 " outside [%" PRId64 ", %" PRId64 "]",
                m->payload, since, lo, hi);
    return since;
}
#define check_presence(m, topic, dev, st, lo, hi, retain) \
    IT__AT(check_presence__(m, topic, dev, st, lo, hi, retain))

/* Receive the next PUBLISH on w within timeout_ms into m (a copy: the
 * received message is freed at once, so a failing check leaks nothing);
 * fails otherwise. */
static void recv_msg__(tn_conn *w, pmsg *m, int timeout_ms, const char *what)
{
    tn_msg t;
    int r = tn_recv(w, &t, timeout_ms);
    if (r <= 0)
        it_fail("%s: %s within %d ms", what, r == 0 ? "nothing" : "connection closed", timeout_ms);
    snprintf(m->topic, sizeof m->topic, "%s", t.topic);
    snprintf(m->payload, sizeof m->payload, "%s", t.payload);
    m->qos = t.qos;
    m->retain = t.retain;
    tn_msg_free(&t);
}
#define recv_msg(w, m, t, what) IT__AT(recv_msg__(w, m, t, what))

/* ================================================================================= */
/* ---- telemetry to InfluxDB -------------------------------------------------------- */

/* A JSON message of a device with a correct clock becomes one point with
 * the broker's tags and the corrected time. With a single sample the
 * offset is that sample (receive - device time), so the stored time is the
 * receive time: at or after the device time, and no later than the moment
 * mosquitto_pub had its PUBACK. */
static void test_json_point_lands_with_company_device_topic_tags_and_corrected_time(void **state)
{
    (void)state;
    char db[32];
    new_influx_db(db);
    uint16_t tls;
    it_broker *b = start_influx_broker(db, NULL, &tls);

    int64_t ts = wall_ms();
    char msg[160];
    snprintf(msg, sizeof msg, "{\"ts\": %" PRId64 ", \"temp\": 21.5, \"state\": \"run\"}", ts);
    mosq_pub_ok(tls, "acme", "gw-1", "telemetry/gw-1/temp", msg);
    int64_t acked = wall_ms();

    await_count(db, "SELECT COUNT(temp) FROM telemetry", 1);
    json_object *root;
    json_object *s = influx_series(db, "SELECT * FROM telemetry", &root);
    assert_non_null(s);
    assert_int_equal(row_count(s), 1);
    /* time, the three tags, the two fields: "ts" is not a field, and nothing
     * else became a tag. */
    assert_int_equal(column_count(s), 6);
    assert_string_equal(json_object_get_string(cell(s, 0, "company")), "acme");
    assert_string_equal(json_object_get_string(cell(s, 0, "device")), "gw-1");
    assert_string_equal(json_object_get_string(cell(s, 0, "topic")), "telemetry/gw-1/temp");
    assert_true(json_object_get_double(cell(s, 0, "temp")) == 21.5);
    assert_string_equal(json_object_get_string(cell(s, 0, "state")), "run");
    int64_t t = json_object_get_int64(cell(s, 0, "time"));
    json_object_put(root);
    if (t < ts || t > acked || t - ts > CLOCK_TOLERANCE_MS)
        it_fail("stored time %" PRId64 " is %+" PRId64 " ms from the device time %" PRId64
                "; expected within [0, %" PRId64 "] (the delivery delay)",
                t, t - ts, ts, acked - ts);
    it_broker_stop(b);
}

/* A gateway whose clock is off by skew_ms (device clock = true time +
 * skew) sends live points (device time = now by its clock), then a backlog
 * of 50 points from 1 to 2 days ago by its clock. Every point must land at
 * its true time: device time - skew, late by at most the smallest delay of
 * a live message (docs: "Accuracy"), never early. */
static void clock_skew_case(int64_t skew_ms)
{
    enum { LIVE = 5, BACKLOG = 50, BACKLOG_SEQ0 = 100 };
    const int64_t day = 86400000;
    char db[32];
    new_influx_db(db);
    uint16_t tls;
    it_broker *b = start_influx_broker(db, NULL, &tls);
    tn_conn *gw = tn_device(tls, "acme", "gw-2");

    int64_t sent[LIVE], acked[LIVE], min_rtt = INT64_MAX;
    char topic[64], msg[160];
    for (int i = 0; i < LIVE; i++) {
        /* One topic (series) per live point: two points stored in the same
         * millisecond must not merge into one. */
        snprintf(topic, sizeof topic, "telemetry/gw-2/live/%d", i);
        sent[i] = wall_ms();
        snprintf(msg, sizeof msg, "{\"ts\": %" PRId64 ", \"seq\": %d}", sent[i] + skew_ms, i);
        tn_publish(gw, topic, msg, 1, false);
        acked[i] = wall_ms();
        if (acked[i] - sent[i] < min_rtt)
            min_rtt = acked[i] - sent[i];
    }
    int64_t device_now = wall_ms() + skew_ms;
    int64_t backlog[BACKLOG];
    for (int j = 0; j < BACKLOG; j++) {
        backlog[j] = device_now - day - j * (day / BACKLOG);
        snprintf(msg, sizeof msg, "{\"ts\": %" PRId64 ", \"seq\": %d}", backlog[j],
                 BACKLOG_SEQ0 + j);
        tn_publish(gw, "telemetry/gw-2/backlog", msg, 1, false);
    }

    await_count(db, "SELECT COUNT(seq) FROM telemetry", LIVE + BACKLOG);
    json_object *root;
    json_object *s = influx_series(db, "SELECT seq FROM telemetry", &root);
    assert_int_equal(row_count(s), LIVE + BACKLOG);
    bool seen[BACKLOG_SEQ0 + BACKLOG] = { false };
    for (size_t r = 0; r < row_count(s); r++) {
        int seq = json_object_get_int(cell(s, r, "seq"));
        int64_t t = json_object_get_int64(cell(s, r, "time"));
        int64_t truth, bound;
        if (seq >= 0 && seq < LIVE) {
            /* Its offset is the smallest sample so far, its own included. */
            truth = sent[seq];
            bound = acked[seq] - sent[seq];
        } else if (seq >= BACKLOG_SEQ0 && seq < BACKLOG_SEQ0 + BACKLOG) {
            /* Backlog samples are a day too large: the live minimum stays. */
            truth = backlog[seq - BACKLOG_SEQ0] - skew_ms;
            bound = min_rtt;
        } else {
            json_object_put(root);
            it_fail("unexpected point seq %d", seq);
        }
        if (seen[seq]) {
            json_object_put(root);
            it_fail("point seq %d stored twice", seq);
        }
        seen[seq] = true;
        int64_t err = t - truth;
        if (err < 0 || err > bound || err > CLOCK_TOLERANCE_MS) {
            json_object_put(root);
            it_fail("clock %+" PRId64 " ms: point seq %d stored at %" PRId64 ", %+" PRId64
                    " ms from its true time %" PRId64 "; allowed [0, %" PRId64 "] ms",
                    skew_ms, seq, t, err, truth, bound < CLOCK_TOLERANCE_MS ? bound
                                                                           : CLOCK_TOLERANCE_MS);
        }
    }
    json_object_put(root);
    tn_disconnect(gw);
    it_broker_stop(b);
}

static void test_clock_5_min_behind_live_and_backlog_land_at_true_times(void **state)
{
    (void)state;
    clock_skew_case(-5 * 60 * 1000);
}

static void test_clock_5_min_ahead_live_and_backlog_land_at_true_times(void **state)
{
    (void)state;
    clock_skew_case(5 * 60 * 1000);
}

/* A payload that cannot be parsed: acknowledged (the gateway must not
 * retry it forever), routed as usual, counted in
 * $SYS/broker/telemetry/bad_payloads, kept in dead_letters with a reason,
 * and no point. */
static void test_unparseable_payload_is_acked_routed_counted_and_dead_lettered(void **state)
{
    (void)state;
    char db[32];
    new_influx_db(db);
    uint16_t tls;
    it_broker *b = start_influx_broker(db, NULL, &tls);
    tn_conn *w = watcher(b, "watcher", "acme/telemetry/#");
    tn_conn *sys = watcher(b, "sys", "$SYS/broker/telemetry/bad_payloads");
    await_sys(sys, "$SYS/broker/telemetry/bad_payloads", "0");

    const char bad[] = "{\"ts\": 1733300000123, \"temp\": 21.5,}"; /* trailing comma */
    char *out = NULL;
    int rc = mosq_pub__(tls, "acme", "gw-1", "telemetry/gw-1/bad", bad, &out);
    bool acked = tu_has(out, "received PUBACK");
    if (rc != 0 || !acked) {
        print_error("mosquitto_pub output:\n%s\n", out ? out : "");
        free(out);
        it_fail("an unparseable telemetry payload was not acknowledged (exit %d)", rc);
    }
    free(out);
    tn_expect(w, "acme/telemetry/gw-1/bad", bad, 1, false);
    await_sys(sys, "$SYS/broker/telemetry/bad_payloads", "1");

    await_sql("SELECT COUNT(*) FROM dead_letters", NULL, "1");
    char got[1024];
    assert_true(sql_text("SELECT device || ' ' || topic FROM dead_letters", NULL, got,
                         sizeof got));
    assert_string_equal(got, "acme/gw-1 telemetry/gw-1/bad");
    assert_true(sql_text("SELECT CAST(payload AS TEXT) FROM dead_letters", NULL, got, sizeof got));
    assert_string_equal(got, bad);
    assert_true(sql_text("SELECT reason FROM dead_letters", NULL, got, sizeof got));
    if (strlen(got) < 5)
        it_fail("dead letter without a usable reason: '%s'", got);

    /* No point: a good message afterwards is the only one that arrives
     * (the outbox drains in id order, so an earlier point would have come
     * with or before it). */
    mosq_pub_ok(tls, "acme", "gw-1", "telemetry/gw-1/ok", "{\"temp\": 1}");
    await_count(db, "SELECT COUNT(temp) FROM telemetry", 1);
    json_object *root;
    json_object *s = influx_series(db, "SELECT * FROM telemetry", &root);
    assert_int_equal(row_count(s), 1);
    assert_string_equal(json_object_get_string(cell(s, 0, "topic")), "telemetry/gw-1/ok");
    json_object_put(root);
    it_broker_stop(b);
}

/* Exactly once through a sink outage and a kill -9: with InfluxDB down,
 * N points acknowledged one by one (half before the crash, half after the
 * restart on the same database file) all reach InfluxDB once it is back,
 * none twice, and the outbox empties. */
static void test_sink_outage_and_kill9_deliver_every_point_exactly_once(void **state)
{
    (void)state;
    enum { N = 200 };
    char db[32];
    new_influx_db(db);
    influxd_halt(&ix); /* the sink is down from the start */
    uint16_t tls;
    it_broker *b = start_influx_broker(db, NULL, &tls);
    tn_conn *gw = tn_device(tls, "acme", "gw-1");
    char topic[64], msg[64];
    /* One topic (series) per point: points stored in the same millisecond
     * stay distinct, so a lost point and a re-stamped duplicate both show
     * in the count. (A replay of the very same line is stored once by
     * InfluxDB: that is the design.) */
    for (int i = 0; i < N / 2; i++) {
        snprintf(topic, sizeof topic, "telemetry/gw-1/p%d", i);
        snprintf(msg, sizeof msg, "{\"seq\": %d}", i);
        tn_publish(gw, topic, msg, 1, false); /* returns on PUBACK: durable */
    }
    it_broker_kill9(b);
    tn_drop(gw);

    b = start_influx_broker(db, NULL, &tls);
    tn_conn *sys = watcher(b, "sys", "$SYS/broker/telemetry/#");
    gw = tn_device(tls, "acme", "gw-1");
    for (int i = N / 2; i < N; i++) {
        snprintf(topic, sizeof topic, "telemetry/gw-1/p%d", i);
        snprintf(msg, sizeof msg, "{\"seq\": %d}", i);
        tn_publish(gw, topic, msg, 1, false);
    }
    char n_str[16];
    snprintf(n_str, sizeof n_str, "%d", N);
    /* All N wait in the outbox, those from before the crash included. */
    await_sys(sys, "$SYS/broker/telemetry/outbox", n_str);
    await_sys(sys, "$SYS/broker/telemetry/sink", "down");

    char err[1024] = "";
    if (influxd_resume(&ix, 20000, err, sizeof err) != 0)
        it_fail("influxd_resume: %s", err);
    await_count(db, "SELECT COUNT(seq) FROM telemetry", N);
    await_sys(sys, "$SYS/broker/telemetry/outbox", "0");

    json_object *root;
    json_object *s = influx_series(db, "SELECT seq FROM telemetry", &root);
    assert_int_equal(row_count(s), N);
    int times[N] = { 0 };
    for (size_t r = 0; r < row_count(s); r++) {
        int seq = json_object_get_int(cell(s, r, "seq"));
        if (seq < 0 || seq >= N || times[seq]++) {
            json_object_put(root);
            it_fail("seq %d stored more than once or unexpected", seq);
        }
    }
    json_object_put(root);
    /* Still N once the outbox is empty: nothing was written twice late. */
    assert_int_equal(influx_count(db, "SELECT COUNT(seq) FROM telemetry"), N);
    tn_disconnect(gw);
    it_broker_stop(b);
}

/* A telemetry PUBLISH is routed like any other: a device of the same
 * company subscribed to telemetry/# gets it (and the point is written). */
static void test_telemetry_is_routed_to_a_subscriber_of_the_same_company(void **state)
{
    (void)state;
    char db[32];
    new_influx_db(db);
    uint16_t tls;
    it_broker *b = start_influx_broker(db, NULL, &tls);
    tn_conn *sub = tn_device(tls, "acme", "gw-2");
    tn_subscribe(sub, "telemetry/#", 1);
    const char msg[] = "{\"temp\": 20.5}";
    mosq_pub_ok(tls, "acme", "gw-1", "telemetry/gw-1/temp", msg);
    tn_expect(sub, "telemetry/gw-1/temp", msg, 1, false);
    await_count(db, "SELECT COUNT(temp) FROM telemetry", 1);
    tn_disconnect(sub);
    it_broker_stop(b);
}

/* Only devices produce telemetry: an anonymous platform client publishing
 * on telemetry/# (its own or a company's) gives no point. */
static void test_platform_client_on_telemetry_topic_produces_no_point(void **state)
{
    (void)state;
    char db[32];
    new_influx_db(db);
    uint16_t tls;
    it_broker *b = start_influx_broker(db, NULL, &tls);
    tn_conn *p = tn_platform(it_broker_port(b), "platform-pub");
    tn_publish(p, "telemetry/gw-1/temp", "{\"temp\": 1}", 1, false);
    tn_publish(p, "acme/telemetry/gw-1/temp", "{\"temp\": 2}", 1, false);
    /* Marker: a device's point published after them. The outbox drains in
     * id order, so a point of the platform client would come with or
     * before it. */
    mosq_pub_ok(tls, "acme", "gw-1", "telemetry/gw-1/temp", "{\"temp\": 3}");
    await_count(db, "SELECT COUNT(temp) FROM telemetry", 1);
    json_object *root;
    json_object *s = influx_series(db, "SELECT temp, device FROM telemetry", &root);
    assert_int_equal(row_count(s), 1);
    assert_true(json_object_get_double(cell(s, 0, "temp")) == 3);
    assert_string_equal(json_object_get_string(cell(s, 0, "device")), "gw-1");
    json_object_put(root);
    s = influx_series(db, "SHOW MEASUREMENTS", &root);
    assert_int_equal(row_count(s), 1);
    assert_string_equal(json_object_get_string(cell(s, 0, "name")), "telemetry");
    json_object_put(root);
    tn_conn *sys = watcher(b, "sys", "$SYS/broker/telemetry/points");
    await_sys(sys, "$SYS/broker/telemetry/points", "1");
    tn_disconnect(p);
    it_broker_stop(b);
}

/* ---- file sink ------------------------------------------------------------------------ */

static int count_lines(const char *s)
{
    int n = 0;
    for (; s && *s; s++)
        n += *s == '\n';
    return n;
}

/* line must be prefix followed by a timestamp in [lo, hi]. */
static void check_lp_line__(const char *line, size_t len, const char *prefix, int64_t lo,
                            int64_t hi)
{
    size_t pl = strlen(prefix);
    if (len <= pl || memcmp(line, prefix, pl) != 0)
        it_fail("file sink line\n  %.*s\nexpected\n  %s<time>", (int)len, line, prefix);
    char *end;
    long long t = strtoll(line + pl, &end, 10);
    if (end != line + len || t < lo || t > hi)
        it_fail("file sink line %.*s: time not in [%" PRId64 ", %" PRId64 "]", (int)len, line,
                lo, hi);
}
#define check_lp_line(line, len, prefix, lo, hi) \
    IT__AT(check_lp_line__(line, len, prefix, lo, hi))

/* `sink file PATH`: the points arrive as InfluxDB line protocol with the
 * broker's tags first and a millisecond timestamp, one line each. */
static void test_file_sink_gets_points_as_line_protocol(void **state)
{
    (void)state;
    char path[PATH_MAX + 16], sink[PATH_MAX + 32];
    snprintf(path, sizeof path, "%s/points.lp", test_dir());
    snprintf(sink, sizeof sink, "sink file %s", path);
    uint16_t tls;
    it_broker *b = start_broker(sink, NULL, &tls);
    tn_conn *gw = tn_device(tls, "acme", "gw-1");

    int64_t t0 = wall_ms();
    char msg[200];
    snprintf(msg, sizeof msg, "{\"ts\": %" PRId64 ", \"temp\": 21.5, \"state\": \"run\"}", t0);
    tn_publish(gw, "telemetry/gw-1/temp", msg, 1, false);
    int64_t t1 = wall_ms();
    int64_t t2 = wall_ms();
    snprintf(msg, sizeof msg,
             "weather,site=north temp=21.5,ok=true,count=3i,state=\"run\" %" PRId64 "000000", t2);
    tn_publish(gw, "telemetry/gw-1/lp", msg, 1, false);
    int64_t t3 = wall_ms();

    long deadline = it_now_ms() + SINK_TIMEOUT;
    char *text;
    while (count_lines(text = it_read_file(path, NULL)) < 2) {
        if (it_now_ms() > deadline) {
            print_error("file sink holds:\n%s\n", text ? text : "(no file)");
            free(text);
            it_fail("the file sink did not get 2 lines within %d ms", SINK_TIMEOUT);
        }
        free(text);
        pause_ms(20);
    }
    if (count_lines(text) != 2) {
        print_error("file sink holds:\n%s\n", text);
        free(text);
        it_fail("the file sink holds more than the 2 points");
    }
    char *nl = strchr(text, '\n');
    /* Correct clock: device time + the smallest delay seen, as above. */
    check_lp_line(text, (size_t)(nl - text),
                  "telemetry,company=acme,device=gw-1,topic=telemetry/gw-1/temp "
                  "temp=21.5,state=\"run\" ",
                  t0, t1);
    char *l2 = nl + 1;
    check_lp_line(l2, strlen(l2) - 1,
                  "weather,company=acme,device=gw-1,topic=telemetry/gw-1/lp,site=north "
                  "temp=21.5,ok=true,count=3i,state=\"run\" ",
                  t2, t3);
    free(text);
    tn_disconnect(gw);
    it_broker_stop(b);
}

/* ---- presence ------------------------------------------------------------------------ */

/* offline_notify_after 2: a device that disconnects gives exactly one
 * retained offline notification on <company>/presence/<device>, not before
 * 2 s; when it comes back, an online one. */
static void test_offline_notification_once_after_delay_then_online_on_return(void **state)
{
    (void)state;
    const long delay = 2000;
    uint16_t tls;
    it_broker *b = start_broker(NULL, "offline_notify_after 2", &tls);
    tn_conn *w = watcher(b, "watcher", "+/presence/#");
    tn_conn *gw = tn_device(tls, "acme", "gw-1");
    tn_ping(gw);

    int64_t wall_lo = wall_ms();
    long t_disc = it_now_ms();
    tn_disconnect(gw);
    int64_t wall_hi = wall_ms();

    pmsg m;
    recv_msg(w, &m, (int)delay + TN_TIMEOUT, "offline notification");
    long after = it_now_ms() - t_disc;
    int64_t since = check_presence(&m, "acme/presence/gw-1", "gw-1", "offline", wall_lo, wall_hi,
                                   false);
    char payload[512];
    snprintf(payload, sizeof payload, "%s", m.payload);
    if (after < delay - TIMER_SLACK_MS || after > delay + TN_TIMEOUT / 2)
        it_fail("offline notification %ld ms after the disconnection, expected %ld ms", after,
                delay);
    /* Exactly one: nothing else for a short bounded window (a second timer
     * would have fired together with the first). */
    tn_expect_quiet(w, 500);

    /* Retained: a later platform subscriber gets it, and so does a device of
     * the company, inside its namespace. */
    tn_conn *late = watcher(b, "late", "+/presence/#");
    tn_expect(late, "acme/presence/gw-1", payload, 1, true);
    tn_barrier(late);
    tn_disconnect(late);
    tn_conn *gw2 = tn_device(tls, "acme", "gw-2");
    tn_subscribe(gw2, "presence/#", 1);
    tn_expect(gw2, "presence/gw-1", payload, 1, true);
    tn_barrier(gw2);

    /* Back: an online notification. */
    wall_lo = wall_ms();
    gw = tn_device(tls, "acme", "gw-1");
    wall_hi = wall_ms();
    recv_msg(w, &m, TN_TIMEOUT, "online notification");
    int64_t back = check_presence(&m, "acme/presence/gw-1", "gw-1", "online", wall_lo, wall_hi,
                                  false);
    assert_true(back >= since);
    recv_msg(gw2, &m, TN_TIMEOUT, "online notification inside the namespace");
    check_presence(&m, "presence/gw-1", "gw-1", "online", wall_lo, wall_hi, false);
    late = watcher(b, "late2", "+/presence/#");
    recv_msg(late, &m, TN_TIMEOUT, "retained online notification");
    check_presence(&m, "acme/presence/gw-1", "gw-1", "online", back, back, true);
    it_broker_stop(b);
}

/* company_offline_notify_after overrides offline_notify_after for one
 * company: acme's device is announced after 2 s, globex's after 1 s. */
static void test_company_offline_notify_after_overrides_the_global_delay(void **state)
{
    (void)state;
    uint16_t tls;
    it_broker *b = start_broker(NULL,
                                "offline_notify_after 1\n"
                                "company_offline_notify_after acme 2",
                                &tls);
    tn_conn *w = watcher(b, "watcher", "+/presence/#");
    tn_conn *a = tn_device(tls, "acme", "gw-1");
    tn_conn *g = tn_device(tls, "globex", "gw-1");
    int64_t wall_lo = wall_ms();
    long t0 = it_now_ms();
    tn_disconnect(a);
    tn_disconnect(g);
    int64_t wall_hi = wall_ms();

    pmsg m;
    recv_msg(w, &m, 1000 + TN_TIMEOUT, "globex's notification");
    long t_g = it_now_ms() - t0;
    check_presence(&m, "globex/presence/gw-1", "gw-1", "offline", wall_lo, wall_hi, false);
    recv_msg(w, &m, 2000 + TN_TIMEOUT, "acme's notification");
    long t_a = it_now_ms() - t0;
    check_presence(&m, "acme/presence/gw-1", "gw-1", "offline", wall_lo, wall_hi, false);
    if (t_g < 1000 - TIMER_SLACK_MS || t_a < 2000 - TIMER_SLACK_MS)
        it_fail("notifications after %ld ms (globex, 1 s) and %ld ms (acme, 2 s)", t_g, t_a);
    it_broker_stop(b);
}

/* The flapping rule: a device that drops and reconnects within the delay
 * (DISCONNECT, a dropped socket, a takeover by its own new connection),
 * again and again for longer than the delay, produces no notification. */
static void test_flapping_device_produces_no_notification(void **state)
{
    (void)state;
    const long delay = 2000;
    uint16_t tls;
    it_broker *b = start_broker(NULL, "offline_notify_after 2", &tls);
    tn_conn *w = watcher(b, "watcher", "+/presence/#");
    tn_conn *gw = tn_device(tls, "acme", "gw-1");
    long t_first = it_now_ms(), t_last = t_first;
    int cycles = 0;
    /* Flap for 1.5 delays: a timer of an early disconnection that a
     * reconnection failed to cancel fires within this time. */
    while (it_now_ms() - t_first < delay * 3 / 2 || cycles < 6) {
        t_last = it_now_ms();
        switch (cycles % 3) {
        case 0:
            tn_disconnect(gw);
            gw = tn_device(tls, "acme", "gw-1");
            break;
        case 1:
            tn_drop(gw);
            gw = tn_device(tls, "acme", "gw-1");
            break;
        default: {
            tn_conn *next = tn_device(tls, "acme", "gw-1"); /* takes over */
            tn_expect_closed(gw, TN_TIMEOUT);
            gw = next;
            break;
        }
        }
        cycles++;
        tn_ping(gw);
    }
    /* Bounded window: until the delay has passed since the last drop, so a
     * timer of any of them would have fired. */
    long quiet = t_last + delay + 300 - it_now_ms();
    if (quiet > 0)
        tn_expect_quiet(w, (int)quiet);
    tn_barrier(w);
    /* Marker: a real disconnection now; the watcher's first message must be
     * its notification, for this disconnection. */
    int64_t wall_lo = wall_ms();
    tn_disconnect(gw);
    int64_t wall_hi = wall_ms();
    pmsg m;
    recv_msg(w, &m, (int)delay + TN_TIMEOUT, "offline notification after the flapping");
    check_presence(&m, "acme/presence/gw-1", "gw-1", "offline", wall_lo, wall_hi, false);
    print_message("flapping: %d reconnections in %ld ms\n", cycles, t_last - t_first);
    it_broker_stop(b);
}

/* A device offline with its timer pending when the broker goes down (kill9:
 * SIGKILL, else SIGTERM): after the restart the notification fires once, at
 * the original deadline (disconnection + delay), not a full delay after the
 * restart, and not again after another restart. */
static void restart_case(bool kill9)
{
    const long delay = 4000;
    const long down_until = 1500; /* restart 1.5 s into the delay */
    const char *conf = "offline_notify_after 4";
    uint16_t tls;
    it_broker *b = start_broker(NULL, conf, &tls);
    tn_conn *gw = tn_device(tls, "acme", "gw-1");
    tn_ping(gw);
    int64_t wall_lo = wall_ms();
    long t_disc = it_now_ms();
    tn_disconnect(gw);
    int64_t wall_hi = wall_ms();
    if (kill9) {
        /* Only what is committed survives SIGKILL: wait for the row. */
        await_sql("SELECT online || ' ' || notified FROM presence WHERE device = ?1",
                  "acme/gw-1", "0 0");
        it_broker_kill9(b);
    } else {
        it_broker_stop(b);
    }
    /* Deliberate: the broker stays down until 1.5 s of the 4 s delay have
     * passed, so that "the original deadline" (4 s) and "a full delay after
     * the restart" (5.5 s or more) are well apart. */
    pass_time_until(t_disc + down_until);
    long t_restart = it_now_ms();
    b = start_broker(NULL, conf, &tls);
    tn_conn *w = watcher(b, "watcher", "+/presence/#");
    long t_sub = it_now_ms() - t_disc;
    if (t_sub > delay - 200)
        it_fail("the restart took until %ld ms of the %ld ms delay: too slow to time the "
                "notification", t_sub, delay);

    pmsg m;
    recv_msg(w, &m, (int)delay + TN_TIMEOUT, "offline notification after the restart");
    long after = it_now_ms() - t_disc;
    int64_t since = check_presence(&m, "acme/presence/gw-1", "gw-1", "offline", wall_lo, wall_hi,
                                   false);
    long full_after_restart = t_restart - t_disc + delay;
    if (after < delay - TIMER_SLACK_MS || after >= full_after_restart - 500)
        it_fail("notification %ld ms after the disconnection: expected the original deadline "
                "%ld ms, well before a full delay after the restart (%ld ms)",
                after, delay, full_after_restart);
    /* Once in this run: nothing more for a short bounded window. */
    tn_expect_quiet(w, 500);
    await_sql("SELECT notified FROM presence WHERE device = ?1", "acme/gw-1", "1");

    /* Not again after another restart. */
    if (kill9)
        it_broker_kill9(b);
    else
        it_broker_stop(b);
    b = start_broker(NULL, conf, &tls);
    tn_conn *sys = watcher(b, "sys", "$SYS/broker/presence/notifications");
    w = watcher(b, "watcher2", "+/presence/#");
    recv_msg(w, &m, TN_TIMEOUT, "retained offline notification");
    check_presence(&m, "acme/presence/gw-1", "gw-1", "offline", since, since, true);
    /* A timer due at start fires at once; the first live $SYS update comes
     * a second after the start, so it counts any such firing. */
    await_sys_live(sys, "$SYS/broker/presence/notifications", "0");
    tn_barrier(w);
    it_broker_stop(b);
}

static void test_pending_offline_timer_survives_sigterm_restart_and_fires_once(void **state)
{
    (void)state;
    restart_case(false);
}

static void test_pending_offline_timer_survives_kill9_restart_and_fires_once(void **state)
{
    (void)state;
    restart_case(true);
}

/* docs/telemetry.md: "A device that was connected when the broker stopped
 * counts as disconnected from the broker's start." Checked for a clean
 * stop (SIGTERM): the notification's since is the restart, and it comes a
 * full delay after it. */
static void test_device_connected_at_sigterm_counts_offline_from_restart(void **state)
{
    (void)state;
    const long delay = 2000;
    const char *conf = "offline_notify_after 2";
    uint16_t tls;
    it_broker *b = start_broker(NULL, conf, &tls);
    tn_conn *gw = tn_device(tls, "acme", "gw-1");
    tn_ping(gw);
    long t_stop = it_now_ms();
    it_broker_stop(b);
    tn_drop(gw);
    /* Deliberate: the broker stays down for 1 s, so that the stop and the
     * start are well apart. */
    pass_time_until(t_stop + 1000);
    int64_t wall_start = wall_ms();
    long t_start = it_now_ms();
    b = start_broker(NULL, conf, &tls);
    int64_t wall_started = wall_ms();
    tn_conn *w = watcher(b, "watcher", "+/presence/#");
    pmsg m;
    recv_msg(w, &m, (int)delay + TN_TIMEOUT, "offline notification");
    long after = it_now_ms() - t_start;
    check_presence(&m, "acme/presence/gw-1", "gw-1", "offline", wall_start, wall_started,
                   false);
    if (after < delay - TIMER_SLACK_MS)
        it_fail("notification %ld ms after the restart, expected %ld ms", after, delay);
    it_broker_stop(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        TT_TEST(test_json_point_lands_with_company_device_topic_tags_and_corrected_time),
        TT_TEST(test_clock_5_min_behind_live_and_backlog_land_at_true_times),
        TT_TEST(test_clock_5_min_ahead_live_and_backlog_land_at_true_times),
        TT_TEST(test_unparseable_payload_is_acked_routed_counted_and_dead_lettered),
        TT_TEST(test_sink_outage_and_kill9_deliver_every_point_exactly_once),
        TT_TEST(test_telemetry_is_routed_to_a_subscriber_of_the_same_company),
        TT_TEST(test_platform_client_on_telemetry_topic_produces_no_point),
        TT_TEST(test_file_sink_gets_points_as_line_protocol),
        TT_TEST(test_offline_notification_once_after_delay_then_online_on_return),
        TT_TEST(test_company_offline_notify_after_overrides_the_global_delay),
        TT_TEST(test_flapping_device_produces_no_notification),
        TT_TEST(test_pending_offline_timer_survives_sigterm_restart_and_fires_once),
        TT_TEST(test_pending_offline_timer_survives_kill9_restart_and_fires_once),
        TT_TEST(test_device_connected_at_sigterm_counts_offline_from_restart),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
