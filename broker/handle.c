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
#include "broker/access.h"
#include "broker/bridge.h"
#include "broker/login.h"
#include "broker/persist.h"

static void violation(conn *c, const char *what, int err)
{
    char why[128];
    snprintf(why, sizeof(why), "protocol violation: %s%s%s", what, err ? ": " : "",
             err ? mqtt_strerror(err) : "");
    conn_close(c, why);
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

/* The company whose namespace a client of that kind works in (NULL: the
 * internal topics themselves). False when a user is unknown to the ACL. */
static bool principal_company(conn *c, connect_req *req, int kind, const char **company)
{
    *company = NULL;
    if (kind == PRINCIPAL_DEVICE) {
        *company = c->identity->company;
        return true;
    }
    if (kind == PRINCIPAL_USER)
        return access_user_company(c->b, req->username, company);
    return true;
}

void connect_accept(conn *c, connect_req *req, int kind)
{
    broker *b = c->b;
    const char *company;
    if (!principal_company(c, req, kind, &company)) {
        char why[200];
        snprintf(why, sizeof(why), "user %s has no entry in the ACL file", req->username);
        connect_req_free(req);
        connect_refuse(c, MQTT_CONNACK_NOT_AUTHORIZED, why);
        return;
    }
    char key[TLS_NAME_MAX + 2 + 512];
    size_t plen = company ? strlen(company) + 1 : 0;
    if (session_make_key(key, sizeof(key), company, req->client_id, strlen(req->client_id))) {
        connect_req_free(req);
        connect_refuse(c, MQTT_CONNACK_ID_REJECTED, "client id too long");
        return;
    }
    /* $-topics are the broker's: no client may put a will there either. */
    if (req->will && req->will->topic[0] == '$') {
        connect_req_free(req);
        connect_refuse(c, MQTT_CONNACK_NOT_AUTHORIZED, "will topic starts with '$'");
        return;
    }
    /* The will lives in the client's namespace like everything it sends. */
    if (req->will && plen) {
        gmq_msg *w = req->will;
        if (plen + w->topic_len > UINT16_MAX) {
            connect_req_free(req);
            connect_refuse(c, MQTT_CONNACK_NOT_AUTHORIZED, "will topic too long");
            return;
        }
        req->will = gmq_msg_new_prefixed(key, plen, w->topic, w->topic_len, w->payload,
                                         w->payload_len, w->qos, w->retain);
        gmq_msg_unref(w);
        if (!req->will) {
            connect_req_free(req);
            connect_refuse(c, MQTT_CONNACK_UNAVAILABLE, "no memory for the will");
            return;
        }
    }
    size_t keylen = strlen(key);
    /* Copied before a take-over touches the existing connection and
     * session: a refusal for want of memory must leave both as they were. */
    char *username = NULL;
    if (kind == PRINCIPAL_USER && !(username = gmq_strdup(req->username))) {
        connect_req_free(req);
        connect_refuse(c, MQTT_CONNACK_UNAVAILABLE, "no memory for the session");
        return;
    }

    /* A new persistent session must fit the caps, so that a client making
     * up ids cannot fill memory and disk; resuming one never counts. This
     * is decided before a take-over touches the existing connection. */
    session *s = session_map_get(&b->sessions, key, keylen);
    char why[256];
    if (!req->clean && (!s || s->clean) && session_cap_reached(b, company, why, sizeof(why))) {
        b->stats.sessions_refused++;
        gmq_free(username);
        connect_req_free(req);
        connect_refuse(c, MQTT_CONNACK_UNAVAILABLE, why);
        return;
    }

    /* Take over: the same client id already connected is disconnected
     * [MQTT-3.1.4-2]; its will is published as for any abnormal close. */
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
        s = session_new(b, key, keylen);
        if (s)
            s->clean = req->clean;
        if (!s || session_map_put(&b->sessions, s) || (!s->clean && session_track(s))) {
            if (s)
                session_destroy(s);
            gmq_free(username);
            connect_req_free(req);
            connect_refuse(c, MQTT_CONNACK_UNAVAILABLE, "no memory for the session");
            return;
        }
        s->acl_gen = b->acl_gen; /* no subscriptions yet: all checked */
    }
    s->kind = (uint8_t)kind;
    s->anonymous = kind == PRINCIPAL_ANONYMOUS;
    gmq_free(s->username);
    s->username = username;
    /* Who the session belongs to, and when it was last seen. */
    persist_session_new(s);
    session_came_online(s);
    s->c = c;
    c->s = s;
    c->will = req->will;
    req->will = NULL;
    c->state = CONN_ACTIVE;
    c->counted = true;
    b->stats.clients_connected++;
    send_connack(c, present, MQTT_CONNACK_ACCEPTED); /* [MQTT-3.2.2-1..3] */
    conn_start_keepalive(c, req->keepalive);
    LOG_INFO("client %s connected from %s (%s%s%s%s, clean %d, keep alive %u, session present %d)",
             s->client_id, c->peer,
             kind == PRINCIPAL_DEVICE ? "device" : kind == PRINCIPAL_USER ? "user " : "anonymous",
             kind == PRINCIPAL_USER ? req->username : "", company ? " of " : "",
             company ? company : "", req->clean, req->keepalive, present);
    if (kind == PRINCIPAL_DEVICE)
        bridge_device_online(c);
    connect_req_free(req);
    if (present) {
        access_recheck_session(s); /* rules may have changed while it was away */
        session_resume(s);
    }
}

/* ---- PUBLISH and its acknowledgements ------------------------------------ */

/* False when there was no memory to publish the message (nothing was
 * routed): a QoS 1/2 PUBLISH is then not acknowledged, so that its client
 * sends it again. Refused topics are acknowledged and dropped: true. */
static bool route(conn *c, const mqtt_publish *p)
{
    broker *b = c->b;
    session *s = c->s;
    const char *topic = (const char *)p->topic.ptr;
    if (p->topic.len && topic[0] == '$') {
        /* $-topics belong to the server [MQTT-4.7.2-1 and 4.7.2 note]. */
        LOG_DEBUG("client %s: publish to %.*s ignored ($-topic)", s->client_id, (int)p->topic.len,
                  topic);
        return true;
    }
    if (s->topic_prefix_len + p->topic.len > UINT16_MAX) {
        LOG_INFO("client %s: publish dropped: topic too long inside its namespace", s->client_id);
        return true;
    }
    if (!access_publish(s, topic, p->topic.len)) {
        /* MQTT 3.1.1 has no refusal: acknowledged and dropped. */
        LOG_NOTICE("client %s: publish to %.*s denied", s->client_id, (int)p->topic.len, topic);
        b->stats.msgs_denied++;
        return true;
    }
    /* The company prefix is the first part of the session key. */
    gmq_msg *m = gmq_msg_new_prefixed(s->key, s->topic_prefix_len, topic, p->topic.len,
                                      p->payload.ptr, p->payload.len, p->qos, p->retain);
    if (!m) {
        b->stats.msgs_dropped++;
        LOG_WARN("client %s: no memory, message on %.*s dropped", c->s->client_id,
                 (int)p->topic.len, (const char *)p->topic.ptr);
        return false;
    }
    int rc = router_publish(b, m);
    gmq_msg_unref(m);
    if (rc)
        return false;
    /* Telemetry is routed as usual and also becomes a durable point; only
     * once published, since a PUBLISH that was not is sent again and would
     * make a second point. Still before the PUBACK/PUBREC: the caller's
     * persist_ack waits for the outbox row to commit too. */
    if (s->kind == PRINCIPAL_DEVICE && bridge_is_telemetry(b, topic, p->topic.len))
        bridge_telemetry(s, topic, p->topic.len, p->payload.ptr, p->payload.len);
    return true;
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
        if (!route(c, &p)) {
            conn_close(c, "no memory for a message"); /* unacknowledged: sent again */
            return;
        }
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
            if (!route(c, &p)) {
                /* Not routed: its resend must be, so the id is forgotten. */
                session_rx_qos2_del(c->s, p.packet_id);
                conn_close(c, "no memory for a message");
                return;
            }
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
    char *internal = NULL; /* prefix + filter, reused */
    size_t internal_cap = 0;
    while (mqtt_subscribe_next(&sub, &pos, &e)) {
        const char *filter = (const char *)e.filter.ptr;
        size_t ilen = s->topic_prefix_len + e.filter.len;
        codes[i] = MQTT_SUBACK_FAILURE;
        if (ilen > UINT16_MAX) {
            LOG_INFO("client %s: subscription refused: filter too long inside its namespace",
                     s->client_id);
        } else if (!access_subscribe(s, filter, e.filter.len)) {
            LOG_NOTICE("client %s: subscription to %.*s refused", s->client_id, (int)e.filter.len,
                       filter);
        } else if (GMQ_GROW(internal, internal_cap, ilen + 1, 64)) {
            LOG_WARN("client %s: no memory for a subscription", s->client_id);
        } else {
            /* Wildcards never leave the namespace: the prefix is a literal level. */
            memcpy(internal, s->key, s->topic_prefix_len);
            memcpy(internal + s->topic_prefix_len, filter, e.filter.len);
            internal[ilen] = '\0';
            if (session_subscribe(s, internal, ilen, e.qos) == 0)
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
        if (codes[i] != MQTT_SUBACK_FAILURE) {
            size_t ilen = s->topic_prefix_len + e.filter.len;
            memcpy(internal, s->key, s->topic_prefix_len);
            memcpy(internal + s->topic_prefix_len, e.filter.ptr, e.filter.len);
            router_send_retained(b, s, internal, ilen, codes[i]);
        }
        i++;
    }
    gmq_free(internal);
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
    session *s = c->s;
    size_t pos = 0;
    mqtt_sub_entry e;
    char *internal = NULL;
    size_t internal_cap = 0;
    while (mqtt_unsubscribe_next(&uns, &pos, &e)) {
        size_t ilen = s->topic_prefix_len + e.filter.len;
        if (GMQ_GROW(internal, internal_cap, ilen + 1, 64)) {
            gmq_free(internal);
            conn_close(c, "no memory for UNSUBSCRIBE");
            return;
        }
        memcpy(internal, s->key, s->topic_prefix_len);
        memcpy(internal + s->topic_prefix_len, e.filter.ptr, e.filter.len);
        session_unsubscribe(s, internal, ilen);
    }
    gmq_free(internal);
    conn_send_packet_id(c, MQTT_UNSUBACK, uns.packet_id); /* [MQTT-3.10.4-4,5] */
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
