/*
 * bridge.c - telemetry hook and device presence (see bridge.h).
 */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "broker/alloc.h"
#include "broker/bridge.h"
#include "broker/log.h"
#include "broker/telemetry.h"
#include "store/outbox.h"
#include "store/store.h"

/* What the broker keeps per device: its clock estimate and its presence.
 * Keyed by "<company>/<device id>"; lives until the broker stops. */
typedef struct device_state {
    broker *b;
    char *key;
    const char *company_end; /* the '/' inside key */
    telemetry_clock clock;
    int64_t stored_offset;   /* last offset written to the store */
    int64_t stored_at;       /* when (receive time, ms) */
    bool stored;
    /* presence */
    conn *current;           /* the connection it is on, or NULL */
    bool online;
    bool notified;           /* the offline notification went out */
    int64_t since;           /* ms since the epoch: online or offline since */
    ev_timer timer;          /* fires the offline notification */
} device_state;

/* Write a clock offset at most this often per device, and when it moved. */
#define CLOCK_STORE_INTERVAL_MS 10000

static int64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static device_state *device_get(broker *b, const char *key, bool create)
{
    device_state *d = strmap_get(&b->devices, key, strlen(key));
    if (d || !create)
        return d;
    d = gmq_calloc(1, sizeof(*d));
    if (!d)
        return NULL;
    d->b = b;
    if (!(d->key = gmq_strdup(key)) || strmap_put(&b->devices, d->key, d)) {
        gmq_free(d->key);
        gmq_free(d);
        return NULL;
    }
    d->company_end = strchr(d->key, '/');
    telemetry_clock_init(&d->clock, (int64_t)(b->cfg->clock_window * 1000));
    ev_init(&d->timer, NULL);
    d->timer.data = d;
    return d;
}

/* ---- telemetry ------------------------------------------------------------ */

bool bridge_is_telemetry(const broker *b, const char *topic, size_t len)
{
    for (size_t i = 0; i < b->cfg->ntelemetry_topics; i++) {
        const char *f = b->cfg->telemetry_topics[i];
        if (mqtt_topic_match((const uint8_t *)f, strlen(f), (const uint8_t *)topic, len))
            return true;
    }
    return false;
}

static void store_offset(device_state *d, int64_t offset, int64_t now)
{
    broker *b = d->b;
    if (!b->store)
        return;
    if (d->stored && d->stored_offset == offset)
        return;
    if (d->stored && now - d->stored_at < CLOCK_STORE_INTERVAL_MS)
        return;
    store_put_clock(b->store, d->key, offset, now);
    d->stored = true;
    d->stored_offset = offset;
    d->stored_at = now;
}

void bridge_telemetry(session *s, const char *topic, size_t topic_len, const uint8_t *payload,
                      size_t payload_len)
{
    broker *b = s->b;
    if (!b->store)
        return;
    int64_t now = wall_ms();
    const gmq_config *cfg = b->cfg;
    telemetry_rules rules = {
        .format = (enum telemetry_format)cfg->telemetry_format,
        .ts_field = cfg->telemetry_ts_field ? cfg->telemetry_ts_field : "ts",
        .json_unit = (enum telemetry_unit)cfg->telemetry_json_unit,
        .line_unit = (enum telemetry_unit)cfg->telemetry_line_unit,
    };
    telemetry_input in = {
        .company = s->company,
        .device = s->client_id,
        .topic = topic,
        .topic_len = topic_len,
        .payload = payload,
        .payload_len = payload_len,
    };
    telemetry_point pt;
    char err[256];
    char topic_z[topic_len + 1];
    memcpy(topic_z, topic, topic_len);
    topic_z[topic_len] = '\0';
    int rc = telemetry_make_point(&rules, &in, &pt, err, sizeof(err));
    if (rc == TELEMETRY_ENOMEM) {
        LOG_WARN("client %s: no memory for a telemetry point on %s; dropped", s->client_id,
                 topic_z);
        return;
    }
    if (rc != TELEMETRY_OK) {
        b->tele_bad++;
        LOG_INFO("client %s: telemetry on %s kept as a dead letter: %s", s->client_id, topic_z,
                 err);
        store_put_dead_letter(b->store, s->key, now, topic_z, payload, payload_len, err);
        return;
    }
    int64_t ts = now;
    device_state *d = device_get(b, s->key, true);
    if (pt.has_time && d) {
        telemetry_clock_observe(&d->clock, now, pt.device_ms);
        int64_t offset;
        if (telemetry_clock_offset(&d->clock, now, &offset)) {
            ts = pt.device_ms + offset;
            store_offset(d, offset, now);
        } else {
            ts = pt.device_ms;
        }
    }
    /* The timestamp is fixed here, once: a replay after a crash writes the
     * very same point, which InfluxDB stores once. */
    size_t n = pt.line_len + 24;
    char *line = gmq_malloc(n);
    if (!line) {
        LOG_WARN("client %s: no memory for a telemetry point; dropped", s->client_id);
        telemetry_point_free(&pt);
        return;
    }
    int len = snprintf(line, n, "%.*s %lld", (int)pt.line_len, pt.line, (long long)ts);
    store_put_outbox(b->store, s->key, now, line, (size_t)len);
    b->tele_points++;
    gmq_free(line);
    telemetry_point_free(&pt);
}

/* ---- presence --------------------------------------------------------------- */

static double notify_delay(const broker *b, const device_state *d)
{
    size_t clen = (size_t)(d->company_end - d->key);
    for (size_t i = 0; i < b->cfg->ncompany_delays; i++) {
        const char *c = b->cfg->company_delays[i].company;
        if (strlen(c) == clen && memcmp(c, d->key, clen) == 0)
            return b->cfg->company_delays[i].seconds;
    }
    return b->cfg->offline_notify_after;
}

static void format_time(int64_t ms, char *out, size_t len)
{
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&t, &tm);
    snprintf(out, len, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1,
             tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)(ms % 1000));
}

/* JSON string body: device ids hold no control characters, but may hold
 * quotes and backslashes. */
static void json_escape(const char *s, char *out, size_t len)
{
    size_t o = 0;
    for (; *s && o + 3 < len; s++) {
        if (*s == '"' || *s == '\\')
            out[o++] = '\\';
        out[o++] = *s;
    }
    out[o] = '\0';
}

/* Publish "<company>/<presence_topic>/<device>", retained, QoS 1. */
static void notify(device_state *d, const char *state)
{
    broker *b = d->b;
    const char *level = b->cfg->presence_topic ? b->cfg->presence_topic : "presence";
    const char *device = d->company_end + 1;
    size_t clen = (size_t)(d->company_end - d->key);
    char topic[512];
    int tlen = snprintf(topic, sizeof(topic), "%.*s/%s/%s", (int)clen, d->key, level, device);
    char dev[300], since[64], payload[512];
    json_escape(device, dev, sizeof(dev));
    format_time(d->since, since, sizeof(since));
    int plen = snprintf(payload, sizeof(payload),
                        "{\"device\":\"%s\",\"state\":\"%s\",\"since\":\"%s\",\"since_ms\":%lld}",
                        dev, state, since, (long long)d->since);
    if (tlen <= 0 || (size_t)tlen >= sizeof(topic) || plen <= 0 || (size_t)plen >= sizeof(payload))
        return;
    gmq_msg *m = gmq_msg_new(topic, (size_t)tlen, (const uint8_t *)payload, (size_t)plen, 1, true);
    if (!m)
        return;
    router_publish(b, m);
    gmq_msg_unref(m);
    b->notifications++;
    LOG_INFO("presence: %s is %s since %s", d->key, state, since);
}

static void store_presence(device_state *d)
{
    if (d->b->store)
        store_put_presence(d->b->store, d->key, d->online, d->since, d->notified);
}

static void on_offline_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    device_state *d = w->data;
    if (d->online || d->notified)
        return;
    d->notified = true;
    notify(d, "offline");
    store_presence(d);
}

static void arm_timer(device_state *d, double after)
{
    broker *b = d->b;
    ev_timer_stop(b->loop, &d->timer);
    if (notify_delay(b, d) <= 0)
        return; /* notifications are off for this company */
    if (after < 0)
        after = 0;
    ev_timer_init(&d->timer, on_offline_timer, after, 0);
    d->timer.data = d;
    ev_timer_start(b->loop, &d->timer);
}

static const char *device_key(const conn *c, char *buf, size_t len)
{
    if (!c->identity)
        return NULL;
    snprintf(buf, len, "%s/%s", c->identity->company, c->identity->device);
    return buf;
}

void bridge_device_online(conn *c)
{
    broker *b = c->b;
    char key[2 * TLS_NAME_MAX + 2];
    if (!device_key(c, key, sizeof(key)))
        return;
    device_state *d = device_get(b, key, true);
    if (!d)
        return;
    d->current = c;
    ev_timer_stop(b->loop, &d->timer);
    bool was_notified = d->notified;
    d->online = true;
    d->notified = false;
    d->since = wall_ms();
    /* Back after an offline notification: say so. A device that was away
     * for less than the delay never produced one, so flapping is silent. */
    if (was_notified)
        notify(d, "online");
    store_presence(d);
}

void bridge_device_offline(conn *c)
{
    broker *b = c->b;
    char key[2 * TLS_NAME_MAX + 2];
    if (!device_key(c, key, sizeof(key)))
        return;
    device_state *d = device_get(b, key, false);
    if (!d || d->current != c)
        return; /* taken over: the device is still online */
    if (b->stopping)
        return; /* stored as online: it counts as offline from the next start */
    d->current = NULL;
    d->online = false;
    d->notified = false;
    d->since = wall_ms();
    store_presence(d);
    if (!b->stopping)
        arm_timer(d, notify_delay(b, d));
}

/* ---- restoring --------------------------------------------------------------- */

int bridge_load_clock(broker *b, const char *device, int64_t offset_ms, int64_t updated_ms)
{
    device_state *d = device_get(b, device, true);
    if (!d)
        return -1;
    telemetry_clock_seed(&d->clock, offset_ms);
    d->stored = true;
    d->stored_offset = offset_ms;
    d->stored_at = updated_ms;
    return 0;
}

int bridge_load_presence(broker *b, const char *device, bool online, int64_t since_ms,
                         bool notified)
{
    if (!strchr(device, '/'))
        return 0;
    device_state *d = device_get(b, device, true);
    if (!d)
        return -1;
    if (online) {
        /* It was connected when the broker went down: offline from now. */
        d->online = false;
        d->notified = false;
        d->since = wall_ms();
        store_presence(d);
    } else {
        d->online = false;
        d->notified = notified;
        d->since = since_ms;
    }
    return 0;
}

void bridge_start(broker *b)
{
    /* Timers count from the loop's cached time, stale by the whole start-up
     * (certificates, the database): refresh it so deadlines hold. */
    ev_now_update(b->loop);
    int64_t now = wall_ms();
    for (size_t i = 0; i < b->devices.cap; i++) {
        device_state *d = b->devices.slots[i].value;
        if (!d || d->online || d->notified)
            continue;
        /* The timer survives the restart: it fires when it would have. */
        arm_timer(d, notify_delay(b, d) - (double)(now - d->since) / 1000.0);
    }
}

/* ---- set-up -------------------------------------------------------------------- */

int bridge_init(broker *b)
{
    const gmq_config *cfg = b->cfg;
    if (!cfg->sink_kind || !b->store)
        return 0;
    char err[512];
    sink *sk = strcmp(cfg->sink_kind, "influxdb") == 0
                   ? sink_influx_open(cfg->sink_target, cfg->sink_db, 10000, err, sizeof(err))
                   : sink_file_open(cfg->sink_target, err, sizeof(err));
    if (!sk) {
        LOG_ERROR("telemetry sink: %s", err);
        return -1;
    }
    outbox_options o = {
        .batch_rows = cfg->sink_batch_size,
        .batch_bytes = 1u << 20,
        .batch_delay_ms = cfg->sink_batch_delay_ms,
        .retry_min_ms = 500,
        .retry_max_ms = (long)cfg->sink_retry_max * 1000,
    };
    if (!(b->outbox = outbox_start(store_path(b->store), sk, &o, err, sizeof(err)))) {
        LOG_ERROR("telemetry outbox: %s", err);
        return -1;
    }
    store_on_outbox_commit(b->store, outbox_on_commit, b->outbox);
    LOG_NOTICE("telemetry: %zu topic filter(s), sink %s %s", cfg->ntelemetry_topics,
               cfg->sink_kind, cfg->sink_target);
    return 0;
}

void bridge_free(broker *b)
{
    for (size_t i = 0; i < b->devices.cap; i++) {
        device_state *d = b->devices.slots[i].value;
        if (!d)
            continue;
        ev_timer_stop(b->loop, &d->timer);
        gmq_free(d->key);
        gmq_free(d);
    }
    strmap_free(&b->devices);
}

void bridge_stop_outbox(broker *b)
{
    if (b->outbox) {
        outbox_stop(b->outbox);
        b->outbox = NULL;
    }
}

void bridge_get_stats(broker *b, bridge_stats *out)
{
    memset(out, 0, sizeof(*out));
    out->points = b->tele_points;
    out->bad_payloads = b->tele_bad;
    out->notifications = b->notifications;
    if (b->outbox) {
        outbox_stats os;
        outbox_get_stats(b->outbox, &os);
        out->have_sink = true;
        out->outbox_rows = os.rows;
        out->sent = os.sent;
        out->dead = os.dead;
        out->failures = os.failures;
        out->lag_ms = os.lag_ms;
        out->sink_up = os.sink_up;
    }
}
