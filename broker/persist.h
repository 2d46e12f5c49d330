/*
 * persist.h - what the broker tells the store, and when acknowledgements
 * may leave.
 *
 * Every function is a no-op without a store, while the store is being
 * loaded, and (for session state) for clean sessions, which never outlive
 * their connection. Writes are queued, never waited for: a QoS 1/2 PUBLISH
 * that caused writes is acknowledged once they commit (persist_ack).
 */
#ifndef GATEMQ_PERSIST_H
#define GATEMQ_PERSIST_H

#include "broker/broker.h"

struct pending_ack {
    uint64_t seq; /* store sequence number that must commit first */
    uint8_t type; /* MQTT_PUBACK, MQTT_PUBREC, MQTT_PUBCOMP */
    uint16_t packet_id;
};

void persist_session_new(session *s);
void persist_session_delete(session *s);
/* The client of s went away at s->offline_since (for session_expiry). */
void persist_session_offline(session *s);
void persist_subscription(session *s, const char *filter, uint8_t qos);
void persist_unsubscription(session *s, const char *filter);
/* A delivery row: first is true when (s, seq) is new, so the message gains
 * a store reference (and is stored with its first one). */
void persist_delivery(session *s, uint64_t seq, gmq_msg *m, uint8_t qos, bool retain,
                      uint16_t packet_id, int state, bool first);
/* The delivery (s, seq) is over; m (NULL when already released) loses its
 * store reference. */
void persist_delivery_done(session *s, uint64_t seq, gmq_msg *m);
/* m is no longer needed by the delivery that referenced it (PUBREC). */
void persist_release(broker *b, gmq_msg *m);
void persist_rx_qos2(session *s, uint16_t packet_id, bool add);
/* Retained message set (or cleared, for an empty payload). */
void persist_retained(broker *b, const gmq_msg *m);

/* Store sequence number of the last write queued; 0 without a store. */
uint64_t persist_mark(const broker *b);
/* Send the acknowledgement now, or once writes up to `after` (a mark taken
 * after the writes) commit, keeping the order of c's acknowledgements. */
void persist_ack(conn *c, uint8_t type, uint16_t packet_id, uint64_t before, uint64_t after);
/* The store committed up to seq: release the acknowledgements it vouches for. */
void persist_committed(broker *b, uint64_t seq);
/* Drop c's held acknowledgements and its place among the connections
 * paused for the store (c is being freed). */
void persist_forget_conn(conn *c);

/* Backpressure from the store (store_queue_limit, docs/security.md): c has
 * just handled one packet, begun at store mark `before`. If that packet
 * queued durable writes while the store's queue is congested, c's input is
 * paused (c->store_paused) until the queue falls to half the limit; then
 * every connection so paused is resumed. Returns true when c is paused. */
bool persist_throttle(conn *c, uint64_t before);

/* Open the store and restore retained messages, persistent sessions,
 * clock offsets and presence; then (after bridge_init) start its thread. */
int persist_open(broker *b);
int persist_start(broker *b);
void persist_close(broker *b);

#endif
