/*
 * handle.c - the broker's side of MQTT 3.1.1, one function per packet type.
 *
 * Every function here receives a frame already split and size-checked; it
 * decodes it, and on any protocol violation closes the one connection
 * [MQTT-4.8.0-1]. Replies are queued with conn_reserve/conn_commit and
 * written by the loop.
 */
#include <stdio.h>
#include <string.h>

#include "broker/alloc.h"
#include "broker/handle.h"
#include "broker/log.h"
#include "broker/login.h"
#include "broker/persist.h"

static void violation(conn *c, const char *what, int err)
{
    char why[128];
    snprintf(why, sizeof(why), "protocol violation: %s%s%s", what, err ? ": " : "",
             err ? mqtt_strerror(err) : "");
    conn_close(c, why);
}

static void send_packet_id(conn *c, enum mqtt_type type, uint16_t id)
{
    uint8_t *buf = conn_reserve(c, 4);
    if (!buf) {
        conn_close(c, "no memory for output");
        return;
    }
    mqtt_encode_packet_id(buf, 4, type, id);
    conn_commit(c, 4);
}

static void send_connack(conn *c, bool present, uint8_t rc)
{
    uint8_t *buf = conn_reserve(c, 4);
    if (!buf) {
        conn_close(c, "no memory for output");
        return;
    }
    mqtt_encode_connack(buf, 4, present, rc);
    conn_commit(c, 4);
}

/* Answer CONNECT with a refusal, then close once it is written [MQTT-3.2.2-5]. */
void connect_refuse(conn *c, uint8_t rc, const char *why)
{
    LOG_NOTICE("connection from %s refused (CONNACK %u): %s", c->peer, rc, why);
    send_connack(c, false, rc);
    c->close_after_flush = true;
    c->send_will = false;
    ev_io_stop(c->b->loop, &c->rio); /* nothing more is read from it */
}

/* ---- CONNECT ------------------------------------------------------------- */

static void handle_connect(conn *c, const mqtt_frame *f)
{
    mqtt_connect m;
    int err = mqtt_decode_connect(f, &m);
    if (err == MQTT_ERR_PROTOCOL_LEVEL) {
        connect_refuse(c, MQTT_CONNACK_BAD_PROTOCOL, "unsupported protocol level"); /* [MQTT-3.1.2-2] */
        return;
    }
    if (err) {
        violation(c, "CONNECT", err);
        return;
    }
    login_start(c, &m);
}

void connect_accept(conn *c, connect_req *req, bool anonymous)
{
    broker *b = c->b;
    const char *id = req->client_id;
    size_t idlen = strlen(id);

    /* Take over: the same client id already connected is disconnected
     * [MQTT-3.1.4-2]; its will is published as for any abnormal close. */
    session *s = session_map_get(&b->sessions, id, idlen);
    if (s && s->c) {
        conn *old = s->c;
        LOG_INFO("client %s: taken over by a new connection from %s", s->client_id, c->peer);
        conn_close(old, "session taken over");
        old->s = NULL;
        s->c = NULL;
    }
    bool present = false;
    if (s && (req->clean || s->clean)) {
        /* [MQTT-3.1.2-6]: a clean session starts afresh. */
        session_discard(s);
        s = NULL;
    }
    if (s) {
        present = true; /* [MQTT-3.2.2-2] */
    } else {
        s = session_new(b, id, idlen);
        if (!s || session_map_put(&b->sessions, s)) {
            if (s)
                session_destroy(s);
            connect_req_free(req);
            connect_refuse(c, MQTT_CONNACK_UNAVAILABLE, "no memory for the session");
            return;
        }
    }
    if (!present) {
        s->clean = req->clean;
        persist_session_new(s);
    }
    s->anonymous = anonymous;
    s->c = c;
    c->s = s;
    c->will = req->will;
    req->will = NULL;
    c->state = CONN_ACTIVE;
    c->counted = true;
    b->stats.clients_connected++;
    send_connack(c, present, MQTT_CONNACK_ACCEPTED); /* [MQTT-3.2.2-1..3] */
    conn_start_keepalive(c, req->keepalive);
    LOG_INFO("client %s connected from %s (%s%s%s, clean %d, keep alive %u, session present %d)",
             s->client_id, c->peer,
             c->identity ? "device of " : req->username ? "user " : "anonymous",
             c->identity ? c->identity->company : req->username ? req->username : "",
             "", req->clean, req->keepalive, present);
    connect_req_free(req);
    if (present)
        session_resume(s);
}

/* ---- PUBLISH and its acknowledgements ------------------------------------ */

static void route(conn *c, const mqtt_publish *p)
{
    broker *b = c->b;
    if (p->topic.len && p->topic.ptr[0] == '$') {
        /* $-topics belong to the server [MQTT-4.7.2-1 and 4.7.2 note]. */
        LOG_DEBUG("client %s: publish to %.*s ignored ($-topic)", c->s->client_id,
                  (int)p->topic.len, (const char *)p->topic.ptr);
        return;
    }
    gmq_msg *m = gmq_msg_new((const char *)p->topic.ptr, p->topic.len, p->payload.ptr,
                             p->payload.len, p->qos, p->retain);
    if (!m) {
        b->stats.msgs_dropped++;
        LOG_WARN("client %s: no memory, message on %.*s dropped", c->s->client_id,
                 (int)p->topic.len, (const char *)p->topic.ptr);
        return;
    }
    if (p->retain) { /* [MQTT-3.3.1-5, 3.3.1-10,11] */
        if (retain_set(b->retained, m))
            LOG_WARN("no memory to retain a message on %s", m->topic);
        else
            persist_retained(b, m);
    }
    router_publish(b, m);
    gmq_msg_unref(m);
}

static void handle_publish(conn *c, const mqtt_frame *f)
{
    mqtt_publish p;
    int err = mqtt_decode_publish(f, &p);
    if (err) {
        violation(c, "PUBLISH", err);
        return;
    }
    c->b->stats.msgs_received++;
    /* What the PUBLISH changed in the store (retained message, deliveries to
     * persistent sessions, QoS 2 state) commits before it is acknowledged. */
    uint64_t before = persist_mark(c->b);
    switch (p.qos) {
    case 0:
        route(c, &p);
        break;
    case 1:
        route(c, &p);
        persist_ack(c, MQTT_PUBACK, p.packet_id, before, persist_mark(c->b)); /* [MQTT-4.3.2-2] */
        break;
    case 2:
        /* Exactly once: a PUBLISH whose id awaits PUBREL is a resend and is
         * not routed again [MQTT-4.3.3-2]. */
        if (!session_rx_qos2_has(c->s, p.packet_id)) {
            if (session_rx_qos2_add(c->s, p.packet_id)) {
                conn_close(c, "no memory for QoS 2 state");
                return;
            }
            route(c, &p);
        }
        persist_ack(c, MQTT_PUBREC, p.packet_id, before, persist_mark(c->b));
        break;
    }
}

static void handle_ack(conn *c, const mqtt_frame *f)
{
    uint16_t id;
    int err = mqtt_decode_packet_id(f, &id);
    if (err) {
        violation(c, mqtt_type_name(f->type), err);
        return;
    }
    switch (f->type) {
    case MQTT_PUBREL:
        /* [MQTT-4.3.3-2]: release the id and answer PUBCOMP, known or not. */
        session_rx_qos2_del(c->s, id);
        persist_ack(c, MQTT_PUBCOMP, id, 0, 0); /* after earlier held ones */
        break;
    default:
        if (session_ack(c->s, f->type, id))
            conn_close(c, "no memory for output");
        break;
    }
}

/* ---- SUBSCRIBE / UNSUBSCRIBE ---------------------------------------------- */

static bool denied_to_anonymous(const broker *b, const mqtt_span *filter)
{
    for (size_t i = 0; i < b->cfg->nanon_deny; i++) {
        const char *d = b->cfg->anon_deny[i];
        if (strlen(d) == filter->len && memcmp(d, filter->ptr, filter->len) == 0)
            return true;
    }
    return false;
}

static void handle_subscribe(conn *c, const mqtt_frame *f)
{
    broker *b = c->b;
    session *s = c->s;
    mqtt_subscribe sub;
    int err = mqtt_decode_subscribe(f, &sub);
    if (err) {
        violation(c, "SUBSCRIBE", err);
        return;
    }
    uint8_t *codes = gmq_malloc(sub.count);
    if (!codes) {
        conn_close(c, "no memory for SUBACK");
        return;
    }
    size_t pos = 0, i = 0;
    mqtt_sub_entry e;
    while (mqtt_subscribe_next(&sub, &pos, &e)) {
        const char *filter = (const char *)e.filter.ptr;
        if (s->anonymous && denied_to_anonymous(b, &e.filter)) {
            codes[i] = MQTT_SUBACK_FAILURE;
            LOG_INFO("client %s: subscription to %.*s refused", s->client_id, (int)e.filter.len,
                     filter);
        } else if (session_subscribe(s, filter, e.filter.len, e.qos)) {
            codes[i] = MQTT_SUBACK_FAILURE;
        } else {
            codes[i] = e.qos; /* granted = requested; we support QoS 2 [MQTT-3.9.3-1] */
        }
        i++;
    }
    size_t n = mqtt_encode_suback(NULL, 0, sub.packet_id, codes, sub.count);
    uint8_t *buf = conn_reserve(c, n);
    if (!buf) {
        gmq_free(codes);
        conn_close(c, "no memory for output");
        return;
    }
    mqtt_encode_suback(buf, n, sub.packet_id, codes, sub.count); /* [MQTT-3.8.4-1,4,5] */
    conn_commit(c, n);
    /* Retained messages after the SUBACK, for each granted filter, including
     * one that replaced an existing subscription [MQTT-3.8.4-3]. */
    pos = 0;
    i = 0;
    while (mqtt_subscribe_next(&sub, &pos, &e)) {
        if (codes[i] != MQTT_SUBACK_FAILURE)
            router_send_retained(b, s, (const char *)e.filter.ptr, e.filter.len, codes[i]);
        i++;
    }
    gmq_free(codes);
}

static void handle_unsubscribe(conn *c, const mqtt_frame *f)
{
    mqtt_subscribe uns;
    int err = mqtt_decode_unsubscribe(f, &uns);
    if (err) {
        violation(c, "UNSUBSCRIBE", err);
        return;
    }
    size_t pos = 0;
    mqtt_sub_entry e;
    while (mqtt_unsubscribe_next(&uns, &pos, &e))
        session_unsubscribe(c->s, (const char *)e.filter.ptr, e.filter.len);
    send_packet_id(c, MQTT_UNSUBACK, uns.packet_id); /* [MQTT-3.10.4-4,5] */
}

/* ---- dispatch ------------------------------------------------------------- */

void handle_packet(conn *c, const mqtt_frame *f)
{
    if (c->state == CONN_NEW) {
        if (f->type != MQTT_CONNECT) {
            violation(c, "first packet is not CONNECT", 0); /* [MQTT-3.1.0-1] */
            return;
        }
        handle_connect(c, f);
        return;
    }
    switch (f->type) {
    case MQTT_PUBLISH:
        handle_publish(c, f);
        break;
    case MQTT_PUBACK:
    case MQTT_PUBREC:
    case MQTT_PUBREL:
    case MQTT_PUBCOMP:
        handle_ack(c, f);
        break;
    case MQTT_SUBSCRIBE:
        handle_subscribe(c, f);
        break;
    case MQTT_UNSUBSCRIBE:
        handle_unsubscribe(c, f);
        break;
    case MQTT_PINGREQ: {
        uint8_t *buf = conn_reserve(c, 2); /* [MQTT-3.12.4-1] */
        if (!buf) {
            conn_close(c, "no memory for output");
            return;
        }
        mqtt_encode_empty(buf, 2, MQTT_PINGRESP);
        conn_commit(c, 2);
        break;
    }
    case MQTT_DISCONNECT:
        /* A clean end: the will is discarded [MQTT-3.14.4-3]. */
        c->send_will = false;
        conn_close(c, "client sent DISCONNECT");
        break;
    case MQTT_CONNECT:
        violation(c, "second CONNECT", 0); /* [MQTT-3.1.0-2] */
        break;
    default:
        /* CONNACK, SUBACK, UNSUBACK, PINGRESP only travel to clients. */
        violation(c, mqtt_type_name(f->type), 0);
        break;
    }
}
