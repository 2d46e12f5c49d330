/*
 * encode.c - MQTT 3.1.1 packet writers.
 *
 * Each encoder first computes the packet's size; when cap is smaller nothing
 * is written and the size is returned, so cap 0 measures. Inputs are ours,
 * so rule violations are asserted rather than reported.
 */
#include "mqtt.h"

#include <assert.h>
#include <string.h>

/* A writer that trusts its caller to have sized the buffer. */
typedef struct writer {
    uint8_t *p;
    size_t pos;
    size_t cap;
} writer;

static void put_u8(writer *w, uint8_t v)
{
    assert(w->pos < w->cap);
    w->p[w->pos++] = v;
}

static void put_u16(writer *w, uint16_t v)
{
    put_u8(w, (uint8_t)(v >> 8));
    put_u8(w, (uint8_t)(v & 0xff));
}

static void put_raw(writer *w, const uint8_t *s, size_t n)
{
    assert(w->cap - w->pos >= n);
    if (n > 0)
        memcpy(w->p + w->pos, s, n);
    w->pos += n;
}

static void put_bytes(writer *w, mqtt_span s)
{
    assert(s.len <= 65535);
    put_u16(w, (uint16_t)s.len);
    put_raw(w, s.ptr, s.len);
}

/* Fixed header with the Remaining Length of 2.2.3. */
static void put_header(writer *w, unsigned type, unsigned flags, size_t remaining)
{
    assert(remaining <= MQTT_MAX_REMAINING_LENGTH);
    put_u8(w, (uint8_t)(type << 4 | flags));
    do {
        uint8_t b = remaining & 0x7f;
        remaining >>= 7;
        put_u8(w, remaining ? (uint8_t)(b | 0x80) : b);
    } while (remaining);
}

static size_t packet_size(size_t remaining)
{
    assert(remaining <= MQTT_MAX_REMAINING_LENGTH);
    return 1 + mqtt_remaining_length_size(remaining) + remaining;
}

static size_t string_size(mqtt_span s)
{
    assert(s.len <= 65535);
    assert(s.ptr != NULL || s.len == 0);
    return 2 + s.len;
}

/* ---- CONNECT ------------------------------------------------------------ */

static const uint8_t protocol_mqtt[4] = { 'M', 'Q', 'T', 'T' };

size_t mqtt_encode_connect(uint8_t *buf, size_t cap, const mqtt_connect *c)
{
    assert(c != NULL);
    /* An unset protocol name/level means the standard "MQTT" level 4; a set
     * one is written as given so tools can probe a server's refusal. */
    mqtt_span name = c->protocol_name;
    if (name.ptr == NULL)
        name = (mqtt_span){ protocol_mqtt, sizeof protocol_mqtt };
    uint8_t level = c->protocol_level ? c->protocol_level : 4;

    assert(c->will_qos <= 2);
    assert(c->will_flag || (c->will_qos == 0 && !c->will_retain)); /* [MQTT-3.1.2-11,13] */
    assert(!c->has_password || c->has_username);                    /* [MQTT-3.1.2-22] */
    assert(mqtt_utf8_valid(c->client_id.ptr, c->client_id.len));

    size_t rem = string_size(name) + 1 + 1 + 2 + string_size(c->client_id);
    if (c->will_flag) {
        assert(mqtt_topic_name_valid(c->will_topic.ptr, c->will_topic.len));
        rem += string_size(c->will_topic) + string_size(c->will_payload);
    }
    if (c->has_username) {
        assert(mqtt_utf8_valid(c->username.ptr, c->username.len));
        rem += string_size(c->username);
    }
    if (c->has_password)
        rem += string_size(c->password);
    size_t size = packet_size(rem);
    if (cap < size)
        return size;

    uint8_t flags = (uint8_t)((c->clean_session ? 0x02 : 0) |
                              (c->will_flag ? 0x04 : 0) |
                              (c->will_qos << 3) |
                              (c->will_retain ? 0x20 : 0) |
                              (c->has_password ? 0x40 : 0) |
                              (c->has_username ? 0x80 : 0));
    writer w = { buf, 0, cap };
    put_header(&w, MQTT_CONNECT, 0, rem);
    put_bytes(&w, name);
    put_u8(&w, level);
    put_u8(&w, flags);
    put_u16(&w, c->keep_alive);
    put_bytes(&w, c->client_id);
    if (c->will_flag) {
        put_bytes(&w, c->will_topic);
        put_bytes(&w, c->will_payload);
    }
    if (c->has_username)
        put_bytes(&w, c->username);
    if (c->has_password)
        put_bytes(&w, c->password);
    assert(w.pos == size);
    return size;
}

size_t mqtt_encode_connack(uint8_t *buf, size_t cap, bool session_present,
                           uint8_t return_code)
{
    assert(return_code <= MQTT_CONNACK_NOT_AUTHORIZED);
    assert(!session_present || return_code == MQTT_CONNACK_ACCEPTED); /* [MQTT-3.2.2-4] */
    if (cap < 4)
        return 4;
    writer w = { buf, 0, cap };
    put_header(&w, MQTT_CONNACK, 0, 2);
    put_u8(&w, session_present ? 1 : 0);
    put_u8(&w, return_code);
    return 4;
}

/* ---- PUBLISH ------------------------------------------------------------ */

/* Sizes of the part before the payload and of the whole packet; the
 * Remaining Length counts the payload either way. */
static void publish_sizes(const mqtt_publish *p, size_t *head, size_t *rem)
{
    assert(p != NULL);
    assert(p->qos <= 2);                                  /* [MQTT-3.3.1-4] */
    assert(p->qos > 0 || !p->dup);                        /* [MQTT-3.3.1-2] */
    assert(p->qos == 0 || p->packet_id != 0);             /* [MQTT-2.3.1-1] */
    assert(mqtt_topic_name_valid(p->topic.ptr, p->topic.len)); /* [MQTT-3.3.2-2] */
    assert(p->payload.ptr != NULL || p->payload.len == 0);

    size_t var = string_size(p->topic) + (p->qos > 0 ? 2 : 0);
    assert(p->payload.len <= MQTT_MAX_REMAINING_LENGTH - var);
    *rem = var + p->payload.len;
    *head = 1 + mqtt_remaining_length_size(*rem) + var;
}

static void publish_write_header(writer *w, const mqtt_publish *p, size_t rem)
{
    unsigned flags = (p->dup ? 0x8u : 0) | (unsigned)p->qos << 1 | (p->retain ? 0x1u : 0);
    put_header(w, MQTT_PUBLISH, flags, rem);
    put_bytes(w, p->topic);
    if (p->qos > 0)
        put_u16(w, p->packet_id);
}

size_t mqtt_encode_publish_header(uint8_t *buf, size_t cap, const mqtt_publish *p)
{
    size_t head, rem;
    publish_sizes(p, &head, &rem);
    if (cap < head)
        return head;
    writer w = { buf, 0, cap };
    publish_write_header(&w, p, rem);
    assert(w.pos == head);
    return head;
}

size_t mqtt_encode_publish(uint8_t *buf, size_t cap, const mqtt_publish *p)
{
    size_t head, rem;
    publish_sizes(p, &head, &rem);
    size_t size = head + p->payload.len;
    if (cap < size)
        return size;
    writer w = { buf, 0, cap };
    publish_write_header(&w, p, rem);
    put_raw(&w, p->payload.ptr, p->payload.len);
    assert(w.pos == size);
    return size;
}

/* ---- acks, SUBSCRIBE, UNSUBSCRIBE, SUBACK, empty packets --------------- */

size_t mqtt_encode_packet_id(uint8_t *buf, size_t cap, enum mqtt_type type,
                             uint16_t packet_id)
{
    assert(type == MQTT_PUBACK || type == MQTT_PUBREC || type == MQTT_PUBREL ||
           type == MQTT_PUBCOMP || type == MQTT_UNSUBACK);
    assert(packet_id != 0); /* [MQTT-2.3.1-1] */
    if (cap < 4)
        return 4;
    writer w = { buf, 0, cap };
    put_header(&w, type, type == MQTT_PUBREL ? 0x2 : 0, 2); /* [MQTT-3.6.1-1] */
    put_u16(&w, packet_id);
    return 4;
}

static size_t encode_filters(uint8_t *buf, size_t cap, enum mqtt_type type,
                             uint16_t packet_id, const mqtt_span *filters,
                             const uint8_t *qos, size_t n)
{
    assert(packet_id != 0);          /* [MQTT-2.3.1-1] */
    assert(n > 0 && filters != NULL); /* [MQTT-3.8.3-3], [MQTT-3.10.3-2] */
    size_t rem = 2;
    for (size_t i = 0; i < n; i++) {
        assert(mqtt_topic_filter_valid(filters[i].ptr, filters[i].len));
        assert(qos == NULL || qos[i] <= 2);
        rem += string_size(filters[i]) + (qos ? 1 : 0);
        assert(rem <= MQTT_MAX_REMAINING_LENGTH);
    }
    size_t size = packet_size(rem);
    if (cap < size)
        return size;
    writer w = { buf, 0, cap };
    put_header(&w, type, 0x2, rem); /* [MQTT-3.8.1-1], [MQTT-3.10.1-1] */
    put_u16(&w, packet_id);
    for (size_t i = 0; i < n; i++) {
        put_bytes(&w, filters[i]);
        if (qos)
            put_u8(&w, qos[i]);
    }
    assert(w.pos == size);
    return size;
}

size_t mqtt_encode_subscribe(uint8_t *buf, size_t cap, uint16_t packet_id,
                             const mqtt_span *filters, const uint8_t *qos, size_t n)
{
    assert(qos != NULL);
    return encode_filters(buf, cap, MQTT_SUBSCRIBE, packet_id, filters, qos, n);
}

size_t mqtt_encode_unsubscribe(uint8_t *buf, size_t cap, uint16_t packet_id,
                               const mqtt_span *filters, size_t n)
{
    return encode_filters(buf, cap, MQTT_UNSUBSCRIBE, packet_id, filters, NULL, n);
}

size_t mqtt_encode_suback(uint8_t *buf, size_t cap, uint16_t packet_id,
                          const uint8_t *codes, size_t n)
{
    assert(packet_id != 0);
    assert(n > 0 && codes != NULL);
    for (size_t i = 0; i < n; i++)
        assert(codes[i] <= 2 || codes[i] == MQTT_SUBACK_FAILURE); /* [MQTT-3.9.3-2] */
    assert(n <= MQTT_MAX_REMAINING_LENGTH - 2);
    size_t rem = 2 + n;
    size_t size = packet_size(rem);
    if (cap < size)
        return size;
    writer w = { buf, 0, cap };
    put_header(&w, MQTT_SUBACK, 0, rem);
    put_u16(&w, packet_id);
    put_raw(&w, codes, n);
    return size;
}

size_t mqtt_encode_empty(uint8_t *buf, size_t cap, enum mqtt_type type)
{
    assert(type == MQTT_PINGREQ || type == MQTT_PINGRESP || type == MQTT_DISCONNECT);
    if (cap < 2)
        return 2;
    writer w = { buf, 0, cap };
    put_header(&w, type, 0, 0);
    return 2;
}
