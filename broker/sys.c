/*
 * sys.c - $SYS/broker/... status topics, retained and refreshed every
 * sys_interval seconds.
 */
#include <stdio.h>
#include <string.h>

#include "broker/bridge.h"
#include "broker/broker.h"
#include "broker/log.h"
#include "broker/version.h"
#include "store/store.h"

static void publish_text(broker *b, const char *topic, const char *text)
{
    gmq_msg *m = gmq_msg_new(topic, strlen(topic), (const uint8_t *)text, strlen(text), 0, true);
    if (!m)
        return;
    router_publish(b, m); /* retained; $-topics are not stored */
    gmq_msg_unref(m);
}

static void publish_u64(broker *b, const char *topic, unsigned long long v)
{
    char buf[32];
    snprintf(buf, sizeof(buf), "%llu", v);
    publish_text(b, topic, buf);
}

void sys_publish(broker *b)
{
    const broker_stats *st = &b->stats;
    char buf[64];
    publish_text(b, "$SYS/broker/version", "gatemq " GATEMQ_VERSION);
    snprintf(buf, sizeof(buf), "%llu seconds",
             (unsigned long long)(ev_now(b->loop) - b->started));
    publish_text(b, "$SYS/broker/uptime", buf);
    publish_u64(b, "$SYS/broker/clients/connected", st->clients_connected);
    publish_u64(b, "$SYS/broker/messages/received", st->msgs_received);
    publish_u64(b, "$SYS/broker/messages/sent", st->msgs_sent);
    publish_u64(b, "$SYS/broker/messages/dropped", st->msgs_dropped);
    publish_u64(b, "$SYS/broker/messages/denied", st->msgs_denied);
    publish_u64(b, "$SYS/broker/bytes/received", st->bytes_received);
    publish_u64(b, "$SYS/broker/bytes/sent", st->bytes_sent);
    publish_u64(b, "$SYS/broker/connections/refused", st->connections_refused);
    publish_u64(b, "$SYS/broker/tls/handshakes_failed", st->tls_handshakes_failed);
    publish_u64(b, "$SYS/broker/logins/failed", st->auth_failures);
    publish_u64(b, "$SYS/broker/logins/lockouts", st->lockouts);
    publish_u64(b, "$SYS/broker/sessions/persistent", b->persistent_sessions);
    publish_u64(b, "$SYS/broker/sessions/refused", st->sessions_refused);
    publish_u64(b, "$SYS/broker/sessions/expired", st->sessions_expired);
    if (b->store) {
        /* Writes waiting for the disk, and how often clients were paused
         * because too many did (store_queue_limit). */
        publish_u64(b, "$SYS/broker/store/queued_bytes", store_queued_bytes(b->store));
        publish_u64(b, "$SYS/broker/store/queued_writes", store_backlog(b->store));
        publish_u64(b, "$SYS/broker/store/pauses", st->store_pauses);
    }
    bridge_stats bs;
    bridge_get_stats(b, &bs);
    publish_u64(b, "$SYS/broker/telemetry/points", bs.points);
    publish_u64(b, "$SYS/broker/telemetry/bad_payloads", bs.bad_payloads);
    publish_u64(b, "$SYS/broker/presence/notifications", bs.notifications);
    if (bs.have_sink) {
        publish_u64(b, "$SYS/broker/telemetry/outbox", bs.outbox_rows);
        publish_u64(b, "$SYS/broker/telemetry/sink_lag_ms", (unsigned long long)bs.lag_ms);
        publish_u64(b, "$SYS/broker/telemetry/sent", bs.sent);
        publish_u64(b, "$SYS/broker/telemetry/dead", bs.dead);
        publish_u64(b, "$SYS/broker/telemetry/sink_failures", bs.failures);
        publish_text(b, "$SYS/broker/telemetry/sink", bs.sink_up ? "up" : "down");
    }
    /* Counted after the updates above, and including itself. */
    static const char count_topic[] = "$SYS/broker/retained messages/count";
    size_t n = retain_count(b->retained);
    if (!retain_get(b->retained, count_topic, sizeof(count_topic) - 1))
        n++;
    publish_u64(b, count_topic, n);
}

static void on_sys_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    sys_publish(w->data);
}

void sys_start(broker *b)
{
    if (!b->cfg->sys_interval)
        return;
    sys_publish(b);
    ev_timer_init(&b->sys_timer, on_sys_timer, b->cfg->sys_interval, b->cfg->sys_interval);
    b->sys_timer.data = b;
    ev_timer_start(b->loop, &b->sys_timer);
}
