/*
 * bridge.h - the telemetry bridge hook and device presence.
 *
 * Telemetry: a device's PUBLISH on a configured telemetry topic is routed as
 * usual and also made into a time-series point (broker/telemetry.c): the
 * broker stamps its receive time, corrects the device clock, and appends the
 * point to the store's outbox (so the PUBACK waits for that commit); the
 * outbox drain thread (store/outbox.c) writes it to the sink. A payload that
 * cannot be used goes to the dead-letter table and is still acknowledged.
 *
 * Presence: the broker remembers when each device was last connected. When
 * a device has been offline for offline_notify_after, a retained
 * notification is published in its company's namespace; when it comes back
 * after that, another. Both survive restarts.
 *
 * Everything here runs on the loop thread.
 */
#ifndef GATEMQ_BRIDGE_H
#define GATEMQ_BRIDGE_H

#include "broker/broker.h"

/* Create the device table; open the sink and start the outbox drain (with a
 * store). Call after the store is loaded and before it starts. */
int bridge_init(broker *b);
/* After loading: arm the offline timers of devices known to be offline. */
void bridge_start(broker *b);
/* Stop the drain thread (before the store closes). */
void bridge_stop_outbox(broker *b);
void bridge_free(broker *b);

/* Is this client-relative topic a telemetry topic? */
bool bridge_is_telemetry(const broker *b, const char *topic, size_t len);
/* A device published telemetry (topic client-relative). */
void bridge_telemetry(session *s, const char *topic, size_t topic_len, const uint8_t *payload,
                      size_t payload_len);

/* A device's connection was accepted / ended. */
void bridge_device_online(conn *c);
void bridge_device_offline(conn *c);

/* Restoring from the store (device = "<company>/<device id>"). */
int bridge_load_clock(broker *b, const char *device, int64_t offset_ms, int64_t updated_ms);
int bridge_load_presence(broker *b, const char *device, bool online, int64_t since_ms,
                         bool notified);

/* Counters for $SYS. */
typedef struct bridge_stats {
    uint64_t points, bad_payloads, notifications;
    uint64_t outbox_rows, sent, dead, failures;
    int64_t lag_ms;
    bool sink_up, have_sink;
} bridge_stats;
void bridge_get_stats(broker *b, bridge_stats *out);

#endif
