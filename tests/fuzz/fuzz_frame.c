/*
 * fuzz_frame.c - the MQTT codec: framing, every decoder, and a round trip
 * through the encoders.
 *
 * The input is a byte stream as a socket would deliver it. It is split with
 * several size limits; each complete frame goes to its type's decoder. For
 * every packet that decodes, the fields are encoded again and the result is
 * split and decoded once more:
 *   - the second decode must succeed with identical fields;
 *   - the re-encoded body must equal the input body byte for byte, and the
 *     whole packet must too when the input's Remaining Length was minimal
 *     (the only freedom 3.1.1 leaves a sender).
 * The framer is also held to its contract: a frame found in a stream is
 * "need more" (0) for every shorter prefix, and a frame accepted under one
 * limit is accepted identically under a larger one.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_util.h"
#include "mqtt.h"

static const size_t limits[] = { 2, 5, 64, 300, 4096, SIZE_MAX };
#define NLIMITS (sizeof limits / sizeof limits[0])

static bool span_eq(mqtt_span a, mqtt_span b)
{
    return a.len == b.len && (a.len == 0 || memcmp(a.ptr, b.ptr, a.len) == 0);
}

/* The re-encoded packet must frame as one whole packet of the same type. */
static mqtt_frame reframe(const uint8_t *buf, size_t n, const mqtt_frame *orig)
{
    mqtt_frame g;
    ptrdiff_t rc = mqtt_frame_split(buf, n, SIZE_MAX, &g);
    FUZZ_CHECK(rc > 0 && (size_t)rc == n);
    FUZZ_CHECK(g.type == orig->type && g.flags == orig->flags);
    FUZZ_CHECK(g.body_len == orig->body_len);
    FUZZ_CHECK(g.body_len == 0 || memcmp(g.body, orig->body, g.body_len) == 0);
    FUZZ_CHECK(g.header_len == 1 + mqtt_remaining_length_size(g.body_len));
    return g;
}

/* Encoded bytes against the input frame: the body always, the header when
 * the input spelled its Remaining Length minimally. */
static void same_bytes(const uint8_t *enc, size_t n, const uint8_t *in, const mqtt_frame *f)
{
    bool canonical = f->header_len == 1 + mqtt_remaining_length_size(f->body_len);
    if (canonical) {
        FUZZ_CHECK(n == f->header_len + f->body_len);
        FUZZ_CHECK(memcmp(enc, in, n) == 0);
    }
}

static uint8_t *alloc_exact(size_t n)
{
    uint8_t *p = malloc(n ? n : 1);
    FUZZ_CHECK(p != NULL);
    return p;
}

static void roundtrip_connect(const uint8_t *in, const mqtt_frame *f)
{
    mqtt_connect c, d;
    if (mqtt_decode_connect(f, &c) != MQTT_OK)
        return;
    FUZZ_CHECK(c.protocol_level == 4);
    size_t n = mqtt_encode_connect(NULL, 0, &c);
    uint8_t *buf = alloc_exact(n);
    FUZZ_CHECK(mqtt_encode_connect(buf, n, &c) == n);
    mqtt_frame g = reframe(buf, n, f);
    FUZZ_CHECK(mqtt_decode_connect(&g, &d) == MQTT_OK);
    FUZZ_CHECK(span_eq(c.protocol_name, d.protocol_name));
    FUZZ_CHECK(c.protocol_level == d.protocol_level);
    FUZZ_CHECK(c.clean_session == d.clean_session && c.will_flag == d.will_flag);
    FUZZ_CHECK(c.will_qos == d.will_qos && c.will_retain == d.will_retain);
    FUZZ_CHECK(c.has_username == d.has_username && c.has_password == d.has_password);
    FUZZ_CHECK(c.keep_alive == d.keep_alive);
    FUZZ_CHECK(span_eq(c.client_id, d.client_id));
    FUZZ_CHECK(span_eq(c.will_topic, d.will_topic));
    FUZZ_CHECK(span_eq(c.will_payload, d.will_payload));
    FUZZ_CHECK(span_eq(c.username, d.username));
    FUZZ_CHECK(span_eq(c.password, d.password));
    same_bytes(buf, n, in, f);
    free(buf);
}

static void roundtrip_connack(const uint8_t *in, const mqtt_frame *f)
{
    mqtt_connack c, d;
    if (mqtt_decode_connack(f, &c) != MQTT_OK)
        return;
    uint8_t buf[4];
    FUZZ_CHECK(mqtt_encode_connack(buf, sizeof buf, c.session_present, c.return_code) == 4);
    mqtt_frame g = reframe(buf, 4, f);
    FUZZ_CHECK(mqtt_decode_connack(&g, &d) == MQTT_OK);
    FUZZ_CHECK(c.session_present == d.session_present && c.return_code == d.return_code);
    same_bytes(buf, 4, in, f);
}

static void roundtrip_publish(const uint8_t *in, const mqtt_frame *f)
{
    mqtt_publish p, d;
    if (mqtt_decode_publish(f, &p) != MQTT_OK)
        return;
    FUZZ_CHECK(p.qos <= 2 && (p.qos == 0) == (p.packet_id == 0));
    size_t n = mqtt_encode_publish(NULL, 0, &p);
    uint8_t *buf = alloc_exact(n);
    FUZZ_CHECK(mqtt_encode_publish(buf, n, &p) == n);
    mqtt_frame g = reframe(buf, n, f);
    FUZZ_CHECK(mqtt_decode_publish(&g, &d) == MQTT_OK);
    FUZZ_CHECK(span_eq(p.topic, d.topic) && span_eq(p.payload, d.payload));
    FUZZ_CHECK(p.qos == d.qos && p.dup == d.dup && p.retain == d.retain);
    FUZZ_CHECK(p.packet_id == d.packet_id);
    same_bytes(buf, n, in, f);

    /* The split writer (header, then the shared payload) gives the same bytes. */
    size_t h = mqtt_encode_publish_header(NULL, 0, &p);
    FUZZ_CHECK(h + p.payload.len == n);
    uint8_t *hb = alloc_exact(h);
    FUZZ_CHECK(mqtt_encode_publish_header(hb, h, &p) == h);
    FUZZ_CHECK(memcmp(hb, buf, h) == 0);
    free(hb);
    free(buf);
}

/* SUBSCRIBE and UNSUBSCRIBE: walk the entries, encode them, compare walks. */
static void roundtrip_filters(const uint8_t *in, const mqtt_frame *f, bool sub)
{
    mqtt_subscribe s, d;
    int rc = sub ? mqtt_decode_subscribe(f, &s) : mqtt_decode_unsubscribe(f, &s);
    if (rc != MQTT_OK)
        return;
    FUZZ_CHECK(s.count >= 1 && s.packet_id != 0);
    mqtt_span *filters = calloc(s.count, sizeof *filters);
    uint8_t *qos = calloc(s.count, 1);
    FUZZ_CHECK(filters && qos);
    size_t pos = 0, k = 0;
    mqtt_sub_entry e;
    while (sub ? mqtt_subscribe_next(&s, &pos, &e) : mqtt_unsubscribe_next(&s, &pos, &e)) {
        FUZZ_CHECK(k < s.count);
        FUZZ_CHECK(mqtt_topic_filter_valid(e.filter.ptr, e.filter.len));
        FUZZ_CHECK(e.qos <= 2 && (sub || e.qos == 0));
        filters[k] = e.filter;
        qos[k] = e.qos;
        k++;
    }
    FUZZ_CHECK(k == s.count && pos == s.entries.len);

    size_t n = sub ? mqtt_encode_subscribe(NULL, 0, s.packet_id, filters, qos, k)
                   : mqtt_encode_unsubscribe(NULL, 0, s.packet_id, filters, k);
    uint8_t *buf = alloc_exact(n);
    FUZZ_CHECK((sub ? mqtt_encode_subscribe(buf, n, s.packet_id, filters, qos, k)
                    : mqtt_encode_unsubscribe(buf, n, s.packet_id, filters, k)) == n);
    mqtt_frame g = reframe(buf, n, f);
    rc = sub ? mqtt_decode_subscribe(&g, &d) : mqtt_decode_unsubscribe(&g, &d);
    FUZZ_CHECK(rc == MQTT_OK);
    FUZZ_CHECK(d.packet_id == s.packet_id && d.count == s.count);
    pos = 0;
    for (size_t i = 0; i < k; i++) {
        bool more = sub ? mqtt_subscribe_next(&d, &pos, &e) : mqtt_unsubscribe_next(&d, &pos, &e);
        FUZZ_CHECK(more);
        FUZZ_CHECK(span_eq(e.filter, filters[i]) && e.qos == qos[i]);
    }
    FUZZ_CHECK(!(sub ? mqtt_subscribe_next(&d, &pos, &e) : mqtt_unsubscribe_next(&d, &pos, &e)));
    same_bytes(buf, n, in, f);
    free(buf);
    free(qos);
    free(filters);
}

static void roundtrip_suback(const uint8_t *in, const mqtt_frame *f)
{
    mqtt_suback s, d;
    if (mqtt_decode_suback(f, &s) != MQTT_OK)
        return;
    size_t n = mqtt_encode_suback(NULL, 0, s.packet_id, s.codes.ptr, s.codes.len);
    uint8_t *buf = alloc_exact(n);
    FUZZ_CHECK(mqtt_encode_suback(buf, n, s.packet_id, s.codes.ptr, s.codes.len) == n);
    mqtt_frame g = reframe(buf, n, f);
    FUZZ_CHECK(mqtt_decode_suback(&g, &d) == MQTT_OK);
    FUZZ_CHECK(d.packet_id == s.packet_id && span_eq(d.codes, s.codes));
    same_bytes(buf, n, in, f);
    free(buf);
}

static void roundtrip_packet_id(const uint8_t *in, const mqtt_frame *f)
{
    uint16_t id, id2;
    if (mqtt_decode_packet_id(f, &id) != MQTT_OK)
        return;
    FUZZ_CHECK(id != 0);
    uint8_t buf[4];
    FUZZ_CHECK(mqtt_encode_packet_id(buf, sizeof buf, (enum mqtt_type)f->type, id) == 4);
    mqtt_frame g = reframe(buf, 4, f);
    FUZZ_CHECK(mqtt_decode_packet_id(&g, &id2) == MQTT_OK && id2 == id);
    same_bytes(buf, 4, in, f);
}

static void roundtrip_empty(const uint8_t *in, const mqtt_frame *f)
{
    /* The framer already checked flags 0 and an empty body. */
    FUZZ_CHECK(f->flags == 0 && f->body_len == 0);
    uint8_t buf[2];
    FUZZ_CHECK(mqtt_encode_empty(buf, sizeof buf, (enum mqtt_type)f->type) == 2);
    reframe(buf, 2, f);
    same_bytes(buf, 2, in, f);
}

static void decode_frame(const uint8_t *in, const mqtt_frame *f)
{
    switch (f->type) {
    case MQTT_CONNECT: roundtrip_connect(in, f); break;
    case MQTT_CONNACK: roundtrip_connack(in, f); break;
    case MQTT_PUBLISH: roundtrip_publish(in, f); break;
    case MQTT_SUBSCRIBE: roundtrip_filters(in, f, true); break;
    case MQTT_UNSUBSCRIBE: roundtrip_filters(in, f, false); break;
    case MQTT_SUBACK: roundtrip_suback(in, f); break;
    case MQTT_PUBACK:
    case MQTT_PUBREC:
    case MQTT_PUBREL:
    case MQTT_PUBCOMP:
    case MQTT_UNSUBACK: roundtrip_packet_id(in, f); break;
    case MQTT_PINGREQ:
    case MQTT_PINGRESP:
    case MQTT_DISCONNECT: roundtrip_empty(in, f); break;
    default: FUZZ_CHECK(!"the framer passed a reserved type");
    }
}

/* The framer's contract for one frame found at buf under limit. */
static void check_frame(const uint8_t *buf, size_t len, size_t limit, ptrdiff_t rc,
                        const mqtt_frame *f)
{
    size_t n = (size_t)rc;
    FUZZ_CHECK(n <= len && n <= limit);
    FUZZ_CHECK(f->header_len >= 2 && f->header_len <= MQTT_MAX_HEADER);
    FUZZ_CHECK(f->header_len + f->body_len == n);
    FUZZ_CHECK(f->body == buf + f->header_len);
    FUZZ_CHECK(f->type == buf[0] >> 4 && f->flags == (buf[0] & 0x0f));
    FUZZ_CHECK(f->type >= MQTT_CONNECT && f->type <= MQTT_DISCONNECT);

    /* Every shorter prefix needs more; checking all is quadratic, so the
     * header region and the last byte stand for them. */
    mqtt_frame p;
    for (size_t k = 0; k < n && k <= MQTT_MAX_HEADER + 1; k++)
        FUZZ_CHECK(mqtt_frame_split(buf, k, limit, &p) == 0);
    FUZZ_CHECK(mqtt_frame_split(buf, n - 1, limit, &p) == 0);

    /* A larger limit finds the same frame. */
    FUZZ_CHECK(mqtt_frame_split(buf, len, SIZE_MAX, &p) == rc);
    FUZZ_CHECK(p.header_len == f->header_len && p.body_len == f->body_len);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    for (size_t li = 0; li < NLIMITS; li++) {
        size_t limit = limits[li];
        size_t off = 0;
        while (off < size) {
            mqtt_frame f;
            ptrdiff_t rc = mqtt_frame_split(data + off, size - off, limit, &f);
            if (rc <= 0) {
                FUZZ_CHECK(rc >= MQTT_ERR_EMPTY);
                /* Errors come from the header alone, so they do not depend
                 * on how much of the body has arrived. */
                if (rc < 0 && rc != MQTT_ERR_TOO_LARGE)
                    FUZZ_CHECK(mqtt_frame_split(data + off, size - off, SIZE_MAX, &f) == rc);
                break;
            }
            check_frame(data + off, size - off, limit, rc, &f);
            /* Decoding under every limit would repeat the same work: the
             * frames are the same, so decode them once, under no limit. */
            if (limit == SIZE_MAX)
                decode_frame(data + off, &f);
            off += (size_t)rc;
        }
    }
    return 0;
}
