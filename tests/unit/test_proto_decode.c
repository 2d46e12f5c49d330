/*
 * test_proto_decode.c - the typed decoders: valid packets, each truncation,
 * and each malformed variant the spec names.
 *
 * Every packet is split and decoded where it ends exactly at an unreadable
 * page, so a decoder reading past body_len crashes instead of passing.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "mqtt.h"

#include "guard.h"

/* ---- packet building ----------------------------------------------------- */

typedef struct bytes {
    uint8_t b[1024];
    size_t n;
} bytes;

static void put_u8(bytes *x, uint8_t v)
{
    assert_true(x->n < sizeof x->b);
    x->b[x->n++] = v;
}

static void put_u16(bytes *x, uint16_t v)
{
    put_u8(x, (uint8_t)(v >> 8));
    put_u8(x, (uint8_t)v);
}

static void put_raw(bytes *x, const void *p, size_t n)
{
    assert_true(sizeof x->b - x->n >= n);
    memcpy(x->b + x->n, p, n);
    x->n += n;
}

/* A length-prefixed field; len is given so that NULs can be embedded. */
static void put_str(bytes *x, const char *s, size_t len)
{
    put_u16(x, (uint16_t)len);
    put_raw(x, s, len);
}

#define S(lit) lit, sizeof(lit) - 1

/* Splits first_byte + Remaining Length + body at the guard page. */
static void frame_of(uint8_t first, const bytes *body, mqtt_frame *f)
{
    bytes pkt = { .n = 0 };
    put_u8(&pkt, first);
    size_t rl = body->n;
    do {
        put_u8(&pkt, (uint8_t)((rl & 0x7f) | (rl > 0x7f ? 0x80 : 0)));
        rl >>= 7;
    } while (rl);
    put_raw(&pkt, body->b, body->n);
    const uint8_t *at = at_guard(pkt.b, pkt.n);
    assert_int_equal(mqtt_frame_split(at, pkt.n, SIZE_MAX, f), (ptrdiff_t)pkt.n);
}

/* A frame the splitter would refuse, to check decoders do not rely on it. */
static mqtt_frame raw_frame(uint8_t type, uint8_t flags, const uint8_t *body, size_t n)
{
    return (mqtt_frame){ type, flags, 2, at_guard(body, n), n };
}

static void span_eq(mqtt_span s, const char *want, size_t len)
{
    assert_int_equal(s.len, len);
    assert_memory_equal(s.ptr, want, len);
}

/* ---- CONNECT ------------------------------------------------------------ */

typedef struct connect_parts {
    const char *name;
    size_t name_len;
    uint8_t level;
    uint8_t flags;
    const char *id;
    size_t id_len;
    const char *will_topic;
    size_t will_topic_len;
    const char *will_msg;
    size_t will_msg_len;
    const char *user;
    size_t user_len;
    const char *pass;
    size_t pass_len;
} connect_parts;

/* Fields are written when present, whatever the flags say, so that flags
 * and payload can be made to disagree. */
static bytes connect_body(connect_parts p)
{
    bytes b = { .n = 0 };
    if (p.name == NULL)
        put_str(&b, S("MQTT"));
    else
        put_str(&b, p.name, p.name_len);
    put_u8(&b, p.level ? p.level : 4);
    put_u8(&b, p.flags);
    put_u16(&b, 60);
    put_str(&b, p.id ? p.id : "", p.id_len);
    if (p.will_topic)
        put_str(&b, p.will_topic, p.will_topic_len);
    if (p.will_msg)
        put_str(&b, p.will_msg, p.will_msg_len);
    if (p.user)
        put_str(&b, p.user, p.user_len);
    if (p.pass)
        put_str(&b, p.pass, p.pass_len);
    return b;
}

static int decode_connect_parts(connect_parts p, mqtt_connect *c)
{
    bytes body = connect_body(p);
    mqtt_frame f;
    frame_of(0x10, &body, &f);
    return mqtt_decode_connect(&f, c);
}

/* 3.1.1 fig. 3.6 variable header with a short client id. */
static void decode_connect_minimal(void **state)
{
    (void)state;
    static const uint8_t body[] = {
        0x00, 0x04, 'M', 'Q', 'T', 'T', 0x04, 0x02, 0x00, 0x3c,
        0x00, 0x04, 'g', 'a', 't', 'e',
    };
    bytes b = { .n = 0 };
    put_raw(&b, body, sizeof body);
    mqtt_frame f;
    frame_of(0x10, &b, &f);
    mqtt_connect c;
    assert_int_equal(mqtt_decode_connect(&f, &c), MQTT_OK);
    span_eq(c.protocol_name, S("MQTT"));
    assert_int_equal(c.protocol_level, 4);
    assert_true(c.clean_session);
    assert_false(c.will_flag);
    assert_false(c.has_username);
    assert_false(c.has_password);
    assert_int_equal(c.keep_alive, 60);
    span_eq(c.client_id, S("gate"));
}

/* [MQTT-3.1.3-1]: client id, will topic, will message, user name, password. */
static void decode_connect_with_will_username_and_password(void **state)
{
    (void)state;
    mqtt_connect c;
    int rc = decode_connect_parts((connect_parts){
        .flags = 0x80 | 0x40 | 0x20 | 0x08 | 0x04,
        .id = S("dev-1"), .will_topic = S("dev/1/status"),
        .will_msg = S("gone\0\xff"), .user = S("alice"), .pass = S("s3\0cr\xfe") }, &c);
    assert_int_equal(rc, MQTT_OK);
    assert_false(c.clean_session);
    assert_true(c.will_flag);
    assert_int_equal(c.will_qos, 1);
    assert_true(c.will_retain);
    assert_true(c.has_username);
    assert_true(c.has_password);
    span_eq(c.client_id, S("dev-1"));
    span_eq(c.will_topic, S("dev/1/status"));
    span_eq(c.will_payload, S("gone\0\xff"));
    span_eq(c.username, S("alice"));
    span_eq(c.password, S("s3\0cr\xfe"));
}

/* [MQTT-3.1.3-3]: present, possibly empty; whether empty is allowed is the
 * server's decision [MQTT-3.1.3-6], not the decoder's. */
static void decode_connect_accepts_empty_client_id(void **state)
{
    (void)state;
    mqtt_connect c;
    assert_int_equal(decode_connect_parts((connect_parts){ .flags = 0x02 }, &c), MQTT_OK);
    assert_int_equal(c.client_id.len, 0);
}

/* [MQTT-3.1.2-1] */
static void decode_connect_rejects_wrong_protocol_name(void **state)
{
    (void)state;
    mqtt_connect c;
    assert_int_equal(decode_connect_parts((connect_parts){
                         .name = S("MQIsdp"), .level = 3, .flags = 2 }, &c),
                     MQTT_ERR_PROTOCOL_NAME);
    assert_int_equal(decode_connect_parts((connect_parts){ .name = S("mqtt"), .flags = 2 }, &c),
                     MQTT_ERR_PROTOCOL_NAME);
    assert_int_equal(decode_connect_parts((connect_parts){ .name = S("MQT"), .flags = 2 }, &c),
                     MQTT_ERR_PROTOCOL_NAME);
    assert_int_equal(decode_connect_parts((connect_parts){ .name = S(""), .flags = 2 }, &c),
                     MQTT_ERR_PROTOCOL_NAME);
}

/* [MQTT-3.1.2-2]: reported apart so the caller can answer CONNACK 1. */
static void decode_connect_rejects_protocol_level_3(void **state)
{
    (void)state;
    mqtt_connect c;
    assert_int_equal(decode_connect_parts((connect_parts){ .level = 3, .flags = 2 }, &c),
                     MQTT_ERR_PROTOCOL_LEVEL);
    assert_int_equal(decode_connect_parts((connect_parts){ .level = 5, .flags = 2 }, &c),
                     MQTT_ERR_PROTOCOL_LEVEL);
}

/* The level is checked before the flags, so even a bad-flag level 3 CONNECT
 * gets the answer its level calls for [MQTT-3.1.2-2]. */
static void decode_connect_checks_level_before_flags(void **state)
{
    (void)state;
    mqtt_connect c;
    assert_int_equal(decode_connect_parts((connect_parts){ .level = 3, .flags = 0x01 }, &c),
                     MQTT_ERR_PROTOCOL_LEVEL);
}

/* [MQTT-3.1.2-3] */
static void decode_connect_rejects_reserved_flag(void **state)
{
    (void)state;
    mqtt_connect c;
    assert_int_equal(decode_connect_parts((connect_parts){ .flags = 0x03 }, &c),
                     MQTT_ERR_FLAGS);
}

/* [MQTT-3.1.2-11] [MQTT-3.1.2-13] */
static void decode_connect_rejects_will_qos_without_will(void **state)
{
    (void)state;
    mqtt_connect c;
    assert_int_equal(decode_connect_parts((connect_parts){ .flags = 0x08 }, &c), MQTT_ERR_FLAGS);
    assert_int_equal(decode_connect_parts((connect_parts){ .flags = 0x10 }, &c), MQTT_ERR_FLAGS);
}

/* [MQTT-3.1.2-15] */
static void decode_connect_rejects_will_retain_without_will(void **state)
{
    (void)state;
    mqtt_connect c;
    assert_int_equal(decode_connect_parts((connect_parts){ .flags = 0x20 }, &c), MQTT_ERR_FLAGS);
}

/* [MQTT-3.1.2-14] */
static void decode_connect_rejects_will_qos_3(void **state)
{
    (void)state;
    mqtt_connect c;
    assert_int_equal(decode_connect_parts((connect_parts){
                         .flags = 0x18 | 0x04, .will_topic = S("w"), .will_msg = S("m") }, &c),
                     MQTT_ERR_QOS);
}

/* [MQTT-3.1.2-22] */
static void decode_connect_rejects_password_without_username(void **state)
{
    (void)state;
    mqtt_connect c;
    assert_int_equal(decode_connect_parts((connect_parts){ .flags = 0x40, .pass = S("p") }, &c),
                     MQTT_ERR_FLAGS);
}

/* 3.1.3: the payload ends with the last field its flags announce. */
static void decode_connect_rejects_trailing_bytes(void **state)
{
    (void)state;
    mqtt_connect c;
    /* A user name without its flag is just trailing bytes. */
    assert_int_equal(decode_connect_parts((connect_parts){ .user = S("u") }, &c),
                     MQTT_ERR_MALFORMED);
    bytes body = connect_body((connect_parts){ .id = S("x") });
    put_u8(&body, 0);
    mqtt_frame f;
    frame_of(0x10, &body, &f);
    assert_int_equal(mqtt_decode_connect(&f, &c), MQTT_ERR_MALFORMED);
}

/* Any prefix of a full CONNECT is a truncated field, never a success. */
static void decode_connect_rejects_truncation_at_every_byte(void **state)
{
    (void)state;
    bytes full = connect_body((connect_parts){
        .flags = 0xc0 | 0x04, .id = S("id"), .will_topic = S("w/t"),
        .will_msg = S("msg"), .user = S("u"), .pass = S("pw") });
    mqtt_connect c;
    for (size_t k = 0; k < full.n; k++) {
        bytes part = full;
        part.n = k;
        mqtt_frame f;
        frame_of(0x10, &part, &f);
        assert_int_equal(mqtt_decode_connect(&f, &c), MQTT_ERR_MALFORMED);
    }
}

/* [MQTT-1.5.3-1] [MQTT-3.1.3-4] */
static void decode_connect_rejects_invalid_utf8_client_id(void **state)
{
    (void)state;
    mqtt_connect c;
    assert_int_equal(decode_connect_parts((connect_parts){ .id = S("a\xc0\x80") }, &c),
                     MQTT_ERR_UTF8);
    assert_int_equal(decode_connect_parts((connect_parts){ .id = S("\xed\xa0\x80") }, &c),
                     MQTT_ERR_UTF8);
}

/* [MQTT-1.5.3-2] */
static void decode_connect_rejects_nul_in_client_id(void **state)
{
    (void)state;
    mqtt_connect c;
    assert_int_equal(decode_connect_parts((connect_parts){ .id = S("a\0b") }, &c),
                     MQTT_ERR_UTF8);
}

/* [MQTT-3.1.3-11] [MQTT-1.5.3-1] [MQTT-1.5.3-2] */
static void decode_connect_rejects_invalid_utf8_username(void **state)
{
    (void)state;
    mqtt_connect c;
    assert_int_equal(decode_connect_parts((connect_parts){
                         .flags = 0x80, .user = S("\xf4\x90\x80\x80") }, &c),
                     MQTT_ERR_UTF8);
    assert_int_equal(decode_connect_parts((connect_parts){ .flags = 0x80, .user = S("u\0") }, &c),
                     MQTT_ERR_UTF8);
}

/* [MQTT-3.1.3-10] and the topic name rules [MQTT-4.7.1-1] [MQTT-4.7.3-1]. */
static void decode_connect_rejects_invalid_will_topic(void **state)
{
    (void)state;
    mqtt_connect c;
    assert_int_equal(decode_connect_parts((connect_parts){
                         .flags = 0x04, .will_topic = S("a/+"), .will_msg = S("") }, &c),
                     MQTT_ERR_TOPIC);
    assert_int_equal(decode_connect_parts((connect_parts){
                         .flags = 0x04, .will_topic = S(""), .will_msg = S("") }, &c),
                     MQTT_ERR_TOPIC);
    assert_int_equal(decode_connect_parts((connect_parts){
                         .flags = 0x04, .will_topic = S("a\xff"), .will_msg = S("") }, &c),
                     MQTT_ERR_UTF8);
}

/* 2.2.2: CONNECT's fixed-header flags are reserved. */
static void decode_connect_rejects_fixed_header_flags(void **state)
{
    (void)state;
    bytes body = connect_body((connect_parts){ .flags = 2 });
    mqtt_frame f = raw_frame(MQTT_CONNECT, 0x1, body.b, body.n);
    mqtt_connect c;
    assert_int_equal(mqtt_decode_connect(&f, &c), MQTT_ERR_FLAGS);
}

/* ---- CONNACK ------------------------------------------------------------ */

static int decode_connack_body(uint8_t ack, uint8_t code, mqtt_connack *out)
{
    bytes b = { .n = 0 };
    put_u8(&b, ack);
    put_u8(&b, code);
    mqtt_frame f;
    frame_of(0x20, &b, &f);
    return mqtt_decode_connack(&f, out);
}

static void decode_connack_reads_session_present_and_code(void **state)
{
    (void)state;
    mqtt_connack a;
    assert_int_equal(decode_connack_body(0x01, 0x00, &a), MQTT_OK);
    assert_true(a.session_present);
    assert_int_equal(a.return_code, 0);
    for (uint8_t rc = 0; rc <= MQTT_CONNACK_NOT_AUTHORIZED; rc++) {
        assert_int_equal(decode_connack_body(0x00, rc, &a), MQTT_OK);
        assert_false(a.session_present);
        assert_int_equal(a.return_code, rc);
    }
}

/* 3.2.2.1: bits 7-1 of the acknowledge flags are reserved. */
static void decode_connack_rejects_reserved_ack_flags(void **state)
{
    (void)state;
    mqtt_connack a;
    for (unsigned bit = 1; bit < 8; bit++)
        assert_int_equal(decode_connack_body((uint8_t)(1u << bit), 0, &a), MQTT_ERR_FLAGS);
}

/* [MQTT-3.2.2-4] */
static void decode_connack_rejects_session_present_on_refusal(void **state)
{
    (void)state;
    mqtt_connack a;
    assert_int_equal(decode_connack_body(0x01, MQTT_CONNACK_NOT_AUTHORIZED, &a),
                     MQTT_ERR_MALFORMED);
}

/* 3.2.2.3: return codes 6-255 are reserved. */
static void decode_connack_rejects_reserved_return_code(void **state)
{
    (void)state;
    mqtt_connack a;
    assert_int_equal(decode_connack_body(0, 6, &a), MQTT_ERR_MALFORMED);
    assert_int_equal(decode_connack_body(0, 0xff, &a), MQTT_ERR_MALFORMED);
}

static void decode_connack_rejects_truncated_body(void **state)
{
    (void)state;
    const uint8_t body[] = { 0x00 };
    mqtt_connack a;
    for (size_t k = 0; k <= 1; k++) {
        mqtt_frame f = raw_frame(MQTT_CONNACK, 0, body, k);
        assert_int_equal(mqtt_decode_connack(&f, &a), MQTT_ERR_MALFORMED);
    }
}

/* ---- PUBLISH ------------------------------------------------------------ */

static int decode_publish_parts(uint8_t flags, const char *topic, size_t tlen,
                                int packet_id, const char *payload, size_t plen,
                                mqtt_publish *p)
{
    bytes b = { .n = 0 };
    put_str(&b, topic, tlen);
    if (packet_id >= 0)
        put_u16(&b, (uint16_t)packet_id);
    put_raw(&b, payload, plen);
    mqtt_frame f;
    frame_of((uint8_t)(0x30 | flags), &b, &f);
    return mqtt_decode_publish(&f, p);
}

static void decode_publish_qos0_has_no_packet_id(void **state)
{
    (void)state;
    mqtt_publish p;
    assert_int_equal(decode_publish_parts(0, S("a/b"), -1, S("\0\x01hello"), &p), MQTT_OK);
    span_eq(p.topic, S("a/b"));
    span_eq(p.payload, S("\0\x01hello"));
    assert_int_equal(p.qos, 0);
    assert_int_equal(p.packet_id, 0);
    assert_false(p.dup);
    assert_false(p.retain);
}

static void decode_publish_qos1_and_qos2_read_packet_id(void **state)
{
    (void)state;
    mqtt_publish p;
    assert_int_equal(decode_publish_parts(0x2, S("t"), 0x1234, S("x"), &p), MQTT_OK);
    assert_int_equal(p.qos, 1);
    assert_int_equal(p.packet_id, 0x1234);
    span_eq(p.payload, S("x"));
    assert_int_equal(decode_publish_parts(0x4, S("t"), 0xffff, S(""), &p), MQTT_OK);
    assert_int_equal(p.qos, 2);
    assert_int_equal(p.packet_id, 0xffff);
}

static void decode_publish_reads_dup_and_retain(void **state)
{
    (void)state;
    mqtt_publish p;
    assert_int_equal(decode_publish_parts(0x8 | 0x2 | 0x1, S("t"), 7, S("x"), &p), MQTT_OK);
    assert_true(p.dup);
    assert_true(p.retain);
    assert_int_equal(p.qos, 1);
}

/* 3.3.3: a zero-length payload is valid. */
static void decode_publish_accepts_empty_payload(void **state)
{
    (void)state;
    mqtt_publish p;
    assert_int_equal(decode_publish_parts(0x1, S("t"), -1, S(""), &p), MQTT_OK);
    assert_int_equal(p.payload.len, 0);
}

/* [MQTT-3.3.1-4] */
static void decode_publish_rejects_qos_3(void **state)
{
    (void)state;
    mqtt_publish p;
    assert_int_equal(decode_publish_parts(0x6, S("t"), 1, S(""), &p), MQTT_ERR_QOS);
}

/* [MQTT-3.3.1-2] */
static void decode_publish_rejects_dup_with_qos_0(void **state)
{
    (void)state;
    mqtt_publish p;
    assert_int_equal(decode_publish_parts(0x8, S("t"), -1, S(""), &p), MQTT_ERR_FLAGS);
}

/* [MQTT-3.3.2-2] [MQTT-4.7.1-1] */
static void decode_publish_rejects_wildcards_in_topic(void **state)
{
    (void)state;
    static const char *const bad[] = { "+", "#", "a/+", "a/#", "a+", "sport/#/x", "+/b" };
    mqtt_publish p;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_int_equal(decode_publish_parts(0, bad[i], strlen(bad[i]), -1, S(""), &p),
                         MQTT_ERR_TOPIC);
}

/* [MQTT-4.7.3-1] */
static void decode_publish_rejects_zero_length_topic(void **state)
{
    (void)state;
    mqtt_publish p;
    assert_int_equal(decode_publish_parts(0, S(""), -1, S("x"), &p), MQTT_ERR_TOPIC);
}

/* [MQTT-3.3.2-1] [MQTT-1.5.3-1] [MQTT-1.5.3-2] */
static void decode_publish_rejects_invalid_utf8_topic(void **state)
{
    (void)state;
    mqtt_publish p;
    assert_int_equal(decode_publish_parts(0, S("a/\xe0\x80\xaf"), -1, S(""), &p), MQTT_ERR_UTF8);
    assert_int_equal(decode_publish_parts(0, S("a/\xe2\x82"), -1, S(""), &p), MQTT_ERR_UTF8);
    assert_int_equal(decode_publish_parts(0, S("a\0b"), -1, S(""), &p), MQTT_ERR_UTF8);
}

/* [MQTT-2.3.1-1] */
static void decode_publish_rejects_packet_id_0_with_qos_above_0(void **state)
{
    (void)state;
    mqtt_publish p;
    assert_int_equal(decode_publish_parts(0x2, S("t"), 0, S("x"), &p), MQTT_ERR_PACKET_ID);
    assert_int_equal(decode_publish_parts(0x4, S("t"), 0, S("x"), &p), MQTT_ERR_PACKET_ID);
}

static void decode_publish_rejects_truncated_variable_header(void **state)
{
    (void)state;
    static const uint8_t full[] = { 0x00, 0x03, 'a', '/', 'b', 0x00, 0x01 };
    mqtt_publish p;
    for (size_t k = 0; k < sizeof full; k++) {
        bytes b = { .n = 0 };
        put_raw(&b, full, k);
        mqtt_frame f;
        frame_of(0x32, &b, &f);
        assert_int_equal(mqtt_decode_publish(&f, &p), MQTT_ERR_MALFORMED);
    }
}

/* ---- SUBSCRIBE ---------------------------------------------------------- */

static int decode_subscribe_one(const char *filter, size_t len, uint8_t qos,
                                mqtt_subscribe *s)
{
    bytes b = { .n = 0 };
    put_u16(&b, 10);
    put_str(&b, filter, len);
    put_u8(&b, qos);
    mqtt_frame f;
    frame_of(0x82, &b, &f);
    return mqtt_decode_subscribe(&f, s);
}

static void decode_subscribe_walks_entries(void **state)
{
    (void)state;
    bytes b = { .n = 0 };
    put_u16(&b, 42);
    put_str(&b, S("sport/tennis/+"));
    put_u8(&b, 0);
    put_str(&b, S("#"));
    put_u8(&b, 1);
    put_str(&b, S("/"));
    put_u8(&b, 2);
    mqtt_frame f;
    frame_of(0x82, &b, &f);
    mqtt_subscribe s;
    assert_int_equal(mqtt_decode_subscribe(&f, &s), MQTT_OK);
    assert_int_equal(s.packet_id, 42);
    assert_int_equal(s.count, 3);

    size_t pos = 0;
    mqtt_sub_entry e;
    assert_true(mqtt_subscribe_next(&s, &pos, &e));
    span_eq(e.filter, S("sport/tennis/+"));
    assert_int_equal(e.qos, 0);
    assert_true(mqtt_subscribe_next(&s, &pos, &e));
    span_eq(e.filter, S("#"));
    assert_int_equal(e.qos, 1);
    assert_true(mqtt_subscribe_next(&s, &pos, &e));
    span_eq(e.filter, S("/"));
    assert_int_equal(e.qos, 2);
    assert_false(mqtt_subscribe_next(&s, &pos, &e));
}

/* [MQTT-3.8.3-3] */
static void decode_subscribe_rejects_no_filters(void **state)
{
    (void)state;
    bytes b = { .n = 0 };
    put_u16(&b, 1);
    mqtt_frame f;
    frame_of(0x82, &b, &f);
    mqtt_subscribe s;
    assert_int_equal(mqtt_decode_subscribe(&f, &s), MQTT_ERR_EMPTY);
}

/* [MQTT-2.3.1-1] */
static void decode_subscribe_rejects_packet_id_0(void **state)
{
    (void)state;
    bytes b = { .n = 0 };
    put_u16(&b, 0);
    put_str(&b, S("a"));
    put_u8(&b, 0);
    mqtt_frame f;
    frame_of(0x82, &b, &f);
    mqtt_subscribe s;
    assert_int_equal(mqtt_decode_subscribe(&f, &s), MQTT_ERR_PACKET_ID);
}

/* [MQTT-3-8.3-4] */
static void decode_subscribe_rejects_qos_3(void **state)
{
    (void)state;
    mqtt_subscribe s;
    assert_int_equal(decode_subscribe_one(S("a"), 3, &s), MQTT_ERR_QOS);
}

/* [MQTT-3-8.3-4] */
static void decode_subscribe_rejects_reserved_bits_in_qos_byte(void **state)
{
    (void)state;
    mqtt_subscribe s;
    for (unsigned bit = 2; bit < 8; bit++)
        assert_int_equal(decode_subscribe_one(S("a"), (uint8_t)(1u << bit), &s),
                         MQTT_ERR_FLAGS);
}

/* [MQTT-4.7.1-2] [MQTT-4.7.1-3] [MQTT-4.7.3-1] */
static void decode_subscribe_rejects_invalid_filters(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "a+/b", "a/#/b", "a#", "#/a", "+a", "a/b+", "##", "++", "a/+#", "",
    };
    mqtt_subscribe s;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_int_equal(decode_subscribe_one(bad[i], strlen(bad[i]), 0, &s), MQTT_ERR_TOPIC);
}

/* [MQTT-3.8.3-1] [MQTT-1.5.3-1] [MQTT-1.5.3-2] */
static void decode_subscribe_rejects_invalid_utf8_filter(void **state)
{
    (void)state;
    mqtt_subscribe s;
    assert_int_equal(decode_subscribe_one(S("a/\xc1\xbf"), 0, &s), MQTT_ERR_UTF8);
    assert_int_equal(decode_subscribe_one(S("a/\0"), 0, &s), MQTT_ERR_UTF8);
}

/* A prefix that cuts an entry is malformed; one that drops every entry is
 * the empty-list error. */
static void decode_subscribe_rejects_truncated_entry(void **state)
{
    (void)state;
    static const uint8_t full[] = { 0x00, 0x0a, 0x00, 0x03, 'a', '/', 'b', 0x01 };
    mqtt_subscribe s;
    for (size_t k = 0; k < sizeof full; k++) {
        bytes b = { .n = 0 };
        put_raw(&b, full, k);
        mqtt_frame f;
        frame_of(0x82, &b, &f);
        assert_int_equal(mqtt_decode_subscribe(&f, &s), k == 2 ? MQTT_ERR_EMPTY
                                                               : MQTT_ERR_MALFORMED);
    }
}

/* [MQTT-3.8.1-1] */
static void decode_subscribe_rejects_flags_other_than_0x2(void **state)
{
    (void)state;
    static const uint8_t body[] = { 0x00, 0x0a, 0x00, 0x01, 'a', 0x00 };
    mqtt_frame f = raw_frame(MQTT_SUBSCRIBE, 0x0, body, sizeof body);
    mqtt_subscribe s;
    assert_int_equal(mqtt_decode_subscribe(&f, &s), MQTT_ERR_FLAGS);
}

/* ---- UNSUBSCRIBE -------------------------------------------------------- */

static int decode_unsubscribe_one(const char *filter, size_t len, mqtt_subscribe *s)
{
    bytes b = { .n = 0 };
    put_u16(&b, 10);
    put_str(&b, filter, len);
    mqtt_frame f;
    frame_of(0xa2, &b, &f);
    return mqtt_decode_unsubscribe(&f, s);
}

static void decode_unsubscribe_walks_entries(void **state)
{
    (void)state;
    bytes b = { .n = 0 };
    put_u16(&b, 7);
    put_str(&b, S("a/+/c"));
    put_str(&b, S("$SYS/#"));
    mqtt_frame f;
    frame_of(0xa2, &b, &f);
    mqtt_subscribe s;
    assert_int_equal(mqtt_decode_unsubscribe(&f, &s), MQTT_OK);
    assert_int_equal(s.packet_id, 7);
    assert_int_equal(s.count, 2);
    size_t pos = 0;
    mqtt_sub_entry e;
    assert_true(mqtt_unsubscribe_next(&s, &pos, &e));
    span_eq(e.filter, S("a/+/c"));
    assert_int_equal(e.qos, 0);
    assert_true(mqtt_unsubscribe_next(&s, &pos, &e));
    span_eq(e.filter, S("$SYS/#"));
    assert_false(mqtt_unsubscribe_next(&s, &pos, &e));
}

/* [MQTT-3.10.3-2] */
static void decode_unsubscribe_rejects_no_filters(void **state)
{
    (void)state;
    bytes b = { .n = 0 };
    put_u16(&b, 1);
    mqtt_frame f;
    frame_of(0xa2, &b, &f);
    mqtt_subscribe s;
    assert_int_equal(mqtt_decode_unsubscribe(&f, &s), MQTT_ERR_EMPTY);
}

/* [MQTT-2.3.1-1] */
static void decode_unsubscribe_rejects_packet_id_0(void **state)
{
    (void)state;
    bytes b = { .n = 0 };
    put_u16(&b, 0);
    put_str(&b, S("a"));
    mqtt_frame f;
    frame_of(0xa2, &b, &f);
    mqtt_subscribe s;
    assert_int_equal(mqtt_decode_unsubscribe(&f, &s), MQTT_ERR_PACKET_ID);
}

/* [MQTT-4.7.1-2] [MQTT-4.7.1-3] [MQTT-4.7.3-1] */
static void decode_unsubscribe_rejects_invalid_filters(void **state)
{
    (void)state;
    static const char *const bad[] = { "a+/b", "a/#/b", "a#", "" };
    mqtt_subscribe s;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_int_equal(decode_unsubscribe_one(bad[i], strlen(bad[i]), &s), MQTT_ERR_TOPIC);
}

/* [MQTT-3.10.3-1] [MQTT-1.5.3-1] [MQTT-1.5.3-2] */
static void decode_unsubscribe_rejects_invalid_utf8_filter(void **state)
{
    (void)state;
    mqtt_subscribe s;
    assert_int_equal(decode_unsubscribe_one(S("\xf8\x88\x80\x80\x80"), &s), MQTT_ERR_UTF8);
    assert_int_equal(decode_unsubscribe_one(S("\0"), &s), MQTT_ERR_UTF8);
}

static void decode_unsubscribe_rejects_truncated_entry(void **state)
{
    (void)state;
    static const uint8_t full[] = { 0x00, 0x0a, 0x00, 0x03, 'a', '/', 'b' };
    mqtt_subscribe s;
    for (size_t k = 0; k < sizeof full; k++) {
        bytes b = { .n = 0 };
        put_raw(&b, full, k);
        mqtt_frame f;
        frame_of(0xa2, &b, &f);
        assert_int_equal(mqtt_decode_unsubscribe(&f, &s), k == 2 ? MQTT_ERR_EMPTY
                                                                 : MQTT_ERR_MALFORMED);
    }
}

/* [MQTT-3.10.1-1] */
static void decode_unsubscribe_rejects_flags_other_than_0x2(void **state)
{
    (void)state;
    static const uint8_t body[] = { 0x00, 0x0a, 0x00, 0x01, 'a' };
    mqtt_frame f = raw_frame(MQTT_UNSUBSCRIBE, 0x0, body, sizeof body);
    mqtt_subscribe s;
    assert_int_equal(mqtt_decode_unsubscribe(&f, &s), MQTT_ERR_FLAGS);
}

/* ---- SUBACK ------------------------------------------------------------- */

static int decode_suback_bytes(const uint8_t *body, size_t n, mqtt_suback *out)
{
    bytes b = { .n = 0 };
    put_raw(&b, body, n);
    mqtt_frame f;
    frame_of(0x90, &b, &f);
    return mqtt_decode_suback(&f, out);
}

static void decode_suback_reads_codes(void **state)
{
    (void)state;
    static const uint8_t body[] = { 0x00, 0x0a, 0x00, 0x01, 0x02, 0x80 };
    mqtt_suback a;
    assert_int_equal(decode_suback_bytes(body, sizeof body, &a), MQTT_OK);
    assert_int_equal(a.packet_id, 10);
    span_eq(a.codes, (const char *)body + 2, 4);
}

/* [MQTT-3.9.3-2] */
static void decode_suback_rejects_reserved_code(void **state)
{
    (void)state;
    static const uint8_t body[] = { 0x00, 0x0a, 0x00, 0x03 };
    mqtt_suback a;
    assert_int_equal(decode_suback_bytes(body, sizeof body, &a), MQTT_ERR_MALFORMED);
}

static void decode_suback_rejects_missing_codes(void **state)
{
    (void)state;
    static const uint8_t body[] = { 0x00, 0x0a };
    mqtt_suback a;
    for (size_t k = 0; k <= sizeof body; k++)
        assert_int_equal(decode_suback_bytes(body, k, &a), MQTT_ERR_MALFORMED);
}

/* [MQTT-2.3.1-1] */
static void decode_suback_rejects_packet_id_0(void **state)
{
    (void)state;
    static const uint8_t body[] = { 0x00, 0x00, 0x00 };
    mqtt_suback a;
    assert_int_equal(decode_suback_bytes(body, sizeof body, &a), MQTT_ERR_PACKET_ID);
}

/* ---- two-byte acks ------------------------------------------------------ */

static const uint8_t ack_first[] = { 0x40, 0x50, 0x62, 0x70, 0xb0 };

static void decode_packet_id_reads_every_ack_type(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof ack_first; i++) {
        bytes b = { .n = 0 };
        put_u16(&b, 0xbeef);
        mqtt_frame f;
        frame_of(ack_first[i], &b, &f);
        uint16_t id = 0;
        assert_int_equal(mqtt_decode_packet_id(&f, &id), MQTT_OK);
        assert_int_equal(id, 0xbeef);
    }
}

/* [MQTT-2.3.1-1] */
static void decode_packet_id_rejects_0(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof ack_first; i++) {
        bytes b = { .n = 0 };
        put_u16(&b, 0);
        mqtt_frame f;
        frame_of(ack_first[i], &b, &f);
        uint16_t id;
        assert_int_equal(mqtt_decode_packet_id(&f, &id), MQTT_ERR_PACKET_ID);
    }
}

static void decode_packet_id_rejects_body_other_than_2_bytes(void **state)
{
    (void)state;
    static const uint8_t body[] = { 0x00, 0x01, 0x00 };
    for (size_t i = 0; i < sizeof ack_first; i++) {
        uint8_t type = ack_first[i] >> 4, flags = ack_first[i] & 0xf;
        for (size_t k = 0; k <= sizeof body; k++) {
            if (k == 2)
                continue;
            mqtt_frame f = raw_frame(type, flags, body, k);
            uint16_t id;
            assert_int_equal(mqtt_decode_packet_id(&f, &id), MQTT_ERR_MALFORMED);
        }
    }
}

/* [MQTT-3.6.1-1] */
static void decode_packet_id_rejects_pubrel_without_flags_0x2(void **state)
{
    (void)state;
    static const uint8_t body[] = { 0x00, 0x01 };
    mqtt_frame f = raw_frame(MQTT_PUBREL, 0x0, body, sizeof body);
    uint16_t id;
    assert_int_equal(mqtt_decode_packet_id(&f, &id), MQTT_ERR_FLAGS);
    f = raw_frame(MQTT_PUBACK, 0x2, body, sizeof body);
    assert_int_equal(mqtt_decode_packet_id(&f, &id), MQTT_ERR_FLAGS);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(decode_connect_minimal),
        cmocka_unit_test(decode_connect_with_will_username_and_password),
        cmocka_unit_test(decode_connect_accepts_empty_client_id),
        cmocka_unit_test(decode_connect_rejects_wrong_protocol_name),
        cmocka_unit_test(decode_connect_rejects_protocol_level_3),
        cmocka_unit_test(decode_connect_checks_level_before_flags),
        cmocka_unit_test(decode_connect_rejects_reserved_flag),
        cmocka_unit_test(decode_connect_rejects_will_qos_without_will),
        cmocka_unit_test(decode_connect_rejects_will_retain_without_will),
        cmocka_unit_test(decode_connect_rejects_will_qos_3),
        cmocka_unit_test(decode_connect_rejects_password_without_username),
        cmocka_unit_test(decode_connect_rejects_trailing_bytes),
        cmocka_unit_test(decode_connect_rejects_truncation_at_every_byte),
        cmocka_unit_test(decode_connect_rejects_invalid_utf8_client_id),
        cmocka_unit_test(decode_connect_rejects_nul_in_client_id),
        cmocka_unit_test(decode_connect_rejects_invalid_utf8_username),
        cmocka_unit_test(decode_connect_rejects_invalid_will_topic),
        cmocka_unit_test(decode_connect_rejects_fixed_header_flags),
        cmocka_unit_test(decode_connack_reads_session_present_and_code),
        cmocka_unit_test(decode_connack_rejects_reserved_ack_flags),
        cmocka_unit_test(decode_connack_rejects_session_present_on_refusal),
        cmocka_unit_test(decode_connack_rejects_reserved_return_code),
        cmocka_unit_test(decode_connack_rejects_truncated_body),
        cmocka_unit_test(decode_publish_qos0_has_no_packet_id),
        cmocka_unit_test(decode_publish_qos1_and_qos2_read_packet_id),
        cmocka_unit_test(decode_publish_reads_dup_and_retain),
        cmocka_unit_test(decode_publish_accepts_empty_payload),
        cmocka_unit_test(decode_publish_rejects_qos_3),
        cmocka_unit_test(decode_publish_rejects_dup_with_qos_0),
        cmocka_unit_test(decode_publish_rejects_wildcards_in_topic),
        cmocka_unit_test(decode_publish_rejects_zero_length_topic),
        cmocka_unit_test(decode_publish_rejects_invalid_utf8_topic),
        cmocka_unit_test(decode_publish_rejects_packet_id_0_with_qos_above_0),
        cmocka_unit_test(decode_publish_rejects_truncated_variable_header),
        cmocka_unit_test(decode_subscribe_walks_entries),
        cmocka_unit_test(decode_subscribe_rejects_no_filters),
        cmocka_unit_test(decode_subscribe_rejects_packet_id_0),
        cmocka_unit_test(decode_subscribe_rejects_qos_3),
        cmocka_unit_test(decode_subscribe_rejects_reserved_bits_in_qos_byte),
        cmocka_unit_test(decode_subscribe_rejects_invalid_filters),
        cmocka_unit_test(decode_subscribe_rejects_invalid_utf8_filter),
        cmocka_unit_test(decode_subscribe_rejects_truncated_entry),
        cmocka_unit_test(decode_subscribe_rejects_flags_other_than_0x2),
        cmocka_unit_test(decode_unsubscribe_walks_entries),
        cmocka_unit_test(decode_unsubscribe_rejects_no_filters),
        cmocka_unit_test(decode_unsubscribe_rejects_packet_id_0),
        cmocka_unit_test(decode_unsubscribe_rejects_invalid_filters),
        cmocka_unit_test(decode_unsubscribe_rejects_invalid_utf8_filter),
        cmocka_unit_test(decode_unsubscribe_rejects_truncated_entry),
        cmocka_unit_test(decode_unsubscribe_rejects_flags_other_than_0x2),
        cmocka_unit_test(decode_suback_reads_codes),
        cmocka_unit_test(decode_suback_rejects_reserved_code),
        cmocka_unit_test(decode_suback_rejects_missing_codes),
        cmocka_unit_test(decode_suback_rejects_packet_id_0),
        cmocka_unit_test(decode_packet_id_reads_every_ack_type),
        cmocka_unit_test(decode_packet_id_rejects_0),
        cmocka_unit_test(decode_packet_id_rejects_body_other_than_2_bytes),
        cmocka_unit_test(decode_packet_id_rejects_pubrel_without_flags_0x2),
    };
    return cmocka_run_group_tests(tests, guard_setup, guard_teardown);
}
