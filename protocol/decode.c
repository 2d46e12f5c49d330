/*
 * decode.c - MQTT 3.1.1 variable headers and payloads.
 *
 * Every read goes through a bounds-checked cursor over the frame body, so a
 * short field is MQTT_ERR_MALFORMED and never a read past body_len.
 */
#include "mqtt.h"

#include <assert.h>
#include <string.h>

typedef struct cursor {
    const uint8_t *p;
    size_t len;
    size_t pos;
} cursor;

static cursor cursor_of(const mqtt_frame *f)
{
    assert(f->body != NULL || f->body_len == 0);
    return (cursor){ f->body, f->body_len, 0 };
}

static size_t cur_left(const cursor *c)
{
    return c->len - c->pos;
}

static int cur_u8(cursor *c, uint8_t *v)
{
    if (cur_left(c) < 1)
        return MQTT_ERR_MALFORMED;
    *v = c->p[c->pos++];
    return MQTT_OK;
}

/* Two-byte integers are big-endian (1.5.2). */
static int cur_u16(cursor *c, uint16_t *v)
{
    if (cur_left(c) < 2)
        return MQTT_ERR_MALFORMED;
    *v = (uint16_t)((c->p[c->pos] << 8) | c->p[c->pos + 1]);
    c->pos += 2;
    return MQTT_OK;
}

/* Length-prefixed bytes: strings (1.5.3) and binary fields (3.1.3.3, 3.1.3.5)
 * share the layout. */
static int cur_bytes(cursor *c, mqtt_span *s)
{
    uint16_t n;
    int rc = cur_u16(c, &n);
    if (rc < 0)
        return rc;
    if (cur_left(c) < n)
        return MQTT_ERR_MALFORMED;
    s->ptr = c->p + c->pos;
    s->len = n;
    c->pos += n;
    return MQTT_OK;
}

static int cur_string(cursor *c, mqtt_span *s)
{
    int rc = cur_bytes(c, s);
    if (rc < 0)
        return rc;
    return mqtt_utf8_valid(s->ptr, s->len) ? MQTT_OK : MQTT_ERR_UTF8;
}

/* Strings are checked as UTF-8 first so that an encoding fault and a topic
 * rule fault report distinct errors. */
static int cur_topic_name(cursor *c, mqtt_span *s)
{
    int rc = cur_string(c, s);
    if (rc < 0)
        return rc;
    return mqtt_topic_name_valid(s->ptr, s->len) ? MQTT_OK : MQTT_ERR_TOPIC;
}

static int cur_topic_filter(cursor *c, mqtt_span *s)
{
    int rc = cur_string(c, s);
    if (rc < 0)
        return rc;
    return mqtt_topic_filter_valid(s->ptr, s->len) ? MQTT_OK : MQTT_ERR_TOPIC;
}

static int cur_packet_id(cursor *c, uint16_t *id)
{
    int rc = cur_u16(c, id);
    if (rc < 0)
        return rc;
    return *id != 0 ? MQTT_OK : MQTT_ERR_PACKET_ID; /* [MQTT-2.3.1-1] */
}

/* ---- CONNECT ------------------------------------------------------------ */

enum {
    CONNECT_RESERVED = 0x01,
    CONNECT_CLEAN = 0x02,
    CONNECT_WILL = 0x04,
    CONNECT_WILL_QOS = 0x18,
    CONNECT_WILL_RETAIN = 0x20,
    CONNECT_PASSWORD = 0x40,
    CONNECT_USERNAME = 0x80,
};

static int connect_flags(uint8_t fl, mqtt_connect *out)
{
    if (fl & CONNECT_RESERVED)
        return MQTT_ERR_FLAGS; /* [MQTT-3.1.2-3] */
    out->clean_session = fl & CONNECT_CLEAN;
    out->will_flag = fl & CONNECT_WILL;
    out->will_qos = (uint8_t)((fl & CONNECT_WILL_QOS) >> 3);
    out->will_retain = fl & CONNECT_WILL_RETAIN;
    out->has_password = fl & CONNECT_PASSWORD;
    out->has_username = fl & CONNECT_USERNAME;
    if (!out->will_flag && (out->will_qos != 0 || out->will_retain))
        return MQTT_ERR_FLAGS; /* [MQTT-3.1.2-11], [MQTT-3.1.2-13], [MQTT-3.1.2-15] */
    if (out->will_qos == 3)
        return MQTT_ERR_QOS; /* [MQTT-3.1.2-14] */
    if (out->has_password && !out->has_username)
        return MQTT_ERR_FLAGS; /* [MQTT-3.1.2-22] */
    return MQTT_OK;
}

int mqtt_decode_connect(const mqtt_frame *f, mqtt_connect *out)
{
    assert(f != NULL && out != NULL);
    assert(f->type == MQTT_CONNECT);
    if (f->flags != 0)
        return MQTT_ERR_FLAGS;
    memset(out, 0, sizeof *out);
    cursor c = cursor_of(f);
    int rc;
    uint8_t fl;

    /* 3.1.2.1: compared as raw bytes, so "MQIsdp" of 3.1 is a name error. */
    if ((rc = cur_bytes(&c, &out->protocol_name)) < 0)
        return rc;
    if (out->protocol_name.len != 4 || memcmp(out->protocol_name.ptr, "MQTT", 4) != 0)
        return MQTT_ERR_PROTOCOL_NAME;
    if ((rc = cur_u8(&c, &out->protocol_level)) < 0)
        return rc;
    if (out->protocol_level != 4)
        return MQTT_ERR_PROTOCOL_LEVEL; /* [MQTT-3.1.2-2] */
    if ((rc = cur_u8(&c, &fl)) < 0 || (rc = connect_flags(fl, out)) < 0)
        return rc;
    if ((rc = cur_u16(&c, &out->keep_alive)) < 0)
        return rc;

    /* Payload order is fixed [MQTT-3.1.3-1]; the client id is always
     * present, possibly empty [MQTT-3.1.3-3]. */
    if ((rc = cur_string(&c, &out->client_id)) < 0)
        return rc;
    if (out->will_flag) {
        if ((rc = cur_topic_name(&c, &out->will_topic)) < 0) /* [MQTT-3.1.3-10] */
            return rc;
        if ((rc = cur_bytes(&c, &out->will_payload)) < 0)
            return rc;
    }
    if (out->has_username && (rc = cur_string(&c, &out->username)) < 0) /* [MQTT-3.1.3-11] */
        return rc;
    if (out->has_password && (rc = cur_bytes(&c, &out->password)) < 0)
        return rc;
    return cur_left(&c) == 0 ? MQTT_OK : MQTT_ERR_MALFORMED;
}

/* ---- CONNACK ------------------------------------------------------------ */

int mqtt_decode_connack(const mqtt_frame *f, mqtt_connack *out)
{
    assert(f != NULL && out != NULL);
    assert(f->type == MQTT_CONNACK);
    if (f->flags != 0)
        return MQTT_ERR_FLAGS;
    if (f->body_len != 2)
        return MQTT_ERR_MALFORMED;
    uint8_t ack = f->body[0];
    uint8_t code = f->body[1];
    if (ack & 0xfe)
        return MQTT_ERR_FLAGS; /* 3.2.2.1: bits 7-1 reserved */
    if (code > MQTT_CONNACK_NOT_AUTHORIZED)
        return MQTT_ERR_MALFORMED; /* 3.2.2.3: 6-255 reserved */
    if ((ack & 1) && code != MQTT_CONNACK_ACCEPTED)
        return MQTT_ERR_MALFORMED; /* [MQTT-3.2.2-4] */
    out->session_present = ack & 1;
    out->return_code = code;
    return MQTT_OK;
}

/* ---- PUBLISH ------------------------------------------------------------ */

int mqtt_decode_publish(const mqtt_frame *f, mqtt_publish *out)
{
    assert(f != NULL && out != NULL);
    assert(f->type == MQTT_PUBLISH);
    memset(out, 0, sizeof *out);
    out->retain = f->flags & 0x1;
    out->qos = (uint8_t)((f->flags >> 1) & 0x3);
    out->dup = f->flags & 0x8;
    if (out->qos == 3)
        return MQTT_ERR_QOS; /* [MQTT-3.3.1-4] */
    if (out->qos == 0 && out->dup)
        return MQTT_ERR_FLAGS; /* [MQTT-3.3.1-2] */

    cursor c = cursor_of(f);
    int rc;
    if ((rc = cur_topic_name(&c, &out->topic)) < 0) /* [MQTT-3.3.2-1], [MQTT-3.3.2-2] */
        return rc;
    if (out->qos > 0 && (rc = cur_packet_id(&c, &out->packet_id)) < 0)
        return rc;
    out->payload.ptr = c.p + c.pos;
    out->payload.len = cur_left(&c);
    return MQTT_OK;
}

/* ---- SUBSCRIBE / UNSUBSCRIBE -------------------------------------------- */

/* Validates the whole payload once, so the walkers below can trust it. */
static int decode_filters(const mqtt_frame *f, mqtt_subscribe *out, bool with_qos)
{
    if (f->flags != 0x2)
        return MQTT_ERR_FLAGS; /* [MQTT-3.8.1-1], [MQTT-3.10.1-1] */
    memset(out, 0, sizeof *out);
    cursor c = cursor_of(f);
    int rc;
    if ((rc = cur_packet_id(&c, &out->packet_id)) < 0)
        return rc;
    out->entries.ptr = c.p + c.pos;
    out->entries.len = cur_left(&c);
    if (cur_left(&c) == 0)
        return MQTT_ERR_EMPTY; /* [MQTT-3.8.3-3], [MQTT-3.10.3-2] */
    while (cur_left(&c) > 0) {
        mqtt_span filter;
        if ((rc = cur_topic_filter(&c, &filter)) < 0)
            return rc;
        if (with_qos) {
            uint8_t q;
            if ((rc = cur_u8(&c, &q)) < 0)
                return rc;
            if (q & 0xfc)
                return MQTT_ERR_FLAGS; /* [MQTT-3-8.3-4] reserved bits */
            if (q == 3)
                return MQTT_ERR_QOS; /* [MQTT-3-8.3-4] */
        }
        out->count++;
    }
    return MQTT_OK;
}

int mqtt_decode_subscribe(const mqtt_frame *f, mqtt_subscribe *out)
{
    assert(f != NULL && out != NULL);
    assert(f->type == MQTT_SUBSCRIBE);
    return decode_filters(f, out, true);
}

int mqtt_decode_unsubscribe(const mqtt_frame *f, mqtt_subscribe *out)
{
    assert(f != NULL && out != NULL);
    assert(f->type == MQTT_UNSUBSCRIBE);
    return decode_filters(f, out, false);
}

static bool next_entry(const mqtt_subscribe *s, size_t *pos, mqtt_sub_entry *e,
                       bool with_qos)
{
    assert(s != NULL && pos != NULL && e != NULL);
    const uint8_t *p = s->entries.ptr;
    size_t len = s->entries.len;
    if (*pos >= len)
        return false;
    /* The decoder validated the payload: a short entry here is our bug. */
    assert(len - *pos >= 2);
    size_t n = (size_t)p[*pos] << 8 | p[*pos + 1];
    size_t need = 2 + n + (with_qos ? 1 : 0);
    assert(len - *pos >= need);
    e->filter.ptr = p + *pos + 2;
    e->filter.len = n;
    e->qos = with_qos ? p[*pos + 2 + n] : 0;
    *pos += need;
    return true;
}

bool mqtt_subscribe_next(const mqtt_subscribe *s, size_t *pos, mqtt_sub_entry *e)
{
    return next_entry(s, pos, e, true);
}

bool mqtt_unsubscribe_next(const mqtt_subscribe *s, size_t *pos, mqtt_sub_entry *e)
{
    return next_entry(s, pos, e, false);
}

/* ---- SUBACK and two-byte acks ------------------------------------------- */

int mqtt_decode_suback(const mqtt_frame *f, mqtt_suback *out)
{
    assert(f != NULL && out != NULL);
    assert(f->type == MQTT_SUBACK);
    if (f->flags != 0)
        return MQTT_ERR_FLAGS;
    cursor c = cursor_of(f);
    int rc;
    if ((rc = cur_packet_id(&c, &out->packet_id)) < 0)
        return rc;
    /* One code per filter of a SUBSCRIBE, which has at least one. */
    if (cur_left(&c) == 0)
        return MQTT_ERR_MALFORMED;
    out->codes.ptr = c.p + c.pos;
    out->codes.len = cur_left(&c);
    for (size_t i = 0; i < out->codes.len; i++) {
        uint8_t code = out->codes.ptr[i];
        if (code > 2 && code != MQTT_SUBACK_FAILURE)
            return MQTT_ERR_MALFORMED; /* [MQTT-3.9.3-2] */
    }
    return MQTT_OK;
}

int mqtt_decode_packet_id(const mqtt_frame *f, uint16_t *packet_id)
{
    assert(f != NULL && packet_id != NULL);
    assert(f->type == MQTT_PUBACK || f->type == MQTT_PUBREC ||
           f->type == MQTT_PUBREL || f->type == MQTT_PUBCOMP ||
           f->type == MQTT_UNSUBACK);
    if (f->flags != (f->type == MQTT_PUBREL ? 0x2 : 0))
        return MQTT_ERR_FLAGS; /* [MQTT-3.6.1-1] */
    if (f->body_len != 2)
        return MQTT_ERR_MALFORMED;
    cursor c = cursor_of(f);
    return cur_packet_id(&c, packet_id);
}
