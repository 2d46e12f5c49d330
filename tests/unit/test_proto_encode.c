/*
 * test_proto_encode.c - encoders: exact spec bytes, and round trips
 * (encode, split, decode, compare fields, re-encode to identical bytes).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "mqtt.h"

#define SPAN(lit) ((mqtt_span){ (const uint8_t *)(lit), sizeof(lit) - 1 })

static void span_eq(mqtt_span got, mqtt_span want)
{
    assert_int_equal(got.len, want.len);
    if (want.len > 0)
        assert_memory_equal(got.ptr, want.ptr, want.len);
}

/* The encoded packet must split whole, as one frame of the given type. */
static mqtt_frame split_whole(const uint8_t *buf, size_t n, uint8_t type)
{
    mqtt_frame f;
    assert_int_equal(mqtt_frame_split(buf, n, SIZE_MAX, &f), (ptrdiff_t)n);
    assert_int_equal(f.type, type);
    return f;
}

/* ---- CONNECT ------------------------------------------------------------ */

static void roundtrip_connect(const mqtt_connect *in)
{
    uint8_t a[512], b[512];
    size_t n = mqtt_encode_connect(a, sizeof a, in);
    assert_true(n <= sizeof a);
    mqtt_frame f = split_whole(a, n, MQTT_CONNECT);
    mqtt_connect out;
    assert_int_equal(mqtt_decode_connect(&f, &out), MQTT_OK);

    span_eq(out.protocol_name, SPAN("MQTT"));
    assert_int_equal(out.protocol_level, 4);
    assert_int_equal(out.clean_session, in->clean_session);
    assert_int_equal(out.will_flag, in->will_flag);
    assert_int_equal(out.will_qos, in->will_qos);
    assert_int_equal(out.will_retain, in->will_retain);
    assert_int_equal(out.has_username, in->has_username);
    assert_int_equal(out.has_password, in->has_password);
    assert_int_equal(out.keep_alive, in->keep_alive);
    span_eq(out.client_id, in->client_id);
    if (in->will_flag) {
        span_eq(out.will_topic, in->will_topic);
        span_eq(out.will_payload, in->will_payload);
    }
    if (in->has_username)
        span_eq(out.username, in->username);
    if (in->has_password)
        span_eq(out.password, in->password);

    assert_int_equal(mqtt_encode_connect(b, sizeof b, &out), n);
    assert_memory_equal(a, b, n);
}

/* Same bytes as the CONNECT vector of the frame tests. */
static void encode_connect_writes_spec_bytes(void **state)
{
    (void)state;
    static const uint8_t want[] = {
        0x10, 0x10, 0x00, 0x04, 'M', 'Q', 'T', 'T', 0x04, 0x02, 0x00, 0x3c,
        0x00, 0x04, 'g', 'a', 't', 'e',
    };
    mqtt_connect c = { .clean_session = true, .keep_alive = 60, .client_id = SPAN("gate") };
    uint8_t buf[64];
    assert_int_equal(mqtt_encode_connect(buf, sizeof buf, &c), sizeof want);
    assert_memory_equal(buf, want, sizeof want);
}

static void encode_connect_minimal_round_trips(void **state)
{
    (void)state;
    mqtt_connect c = { .clean_session = true, .keep_alive = 0, .client_id = SPAN("") };
    roundtrip_connect(&c);
}

/* [MQTT-3.1.3-1]: payload fields in order, each present per its flag. */
static void encode_connect_with_will_and_credentials_round_trips(void **state)
{
    (void)state;
    mqtt_connect c = {
        .clean_session = false, .will_flag = true, .will_qos = 2, .will_retain = true,
        .has_username = true, .has_password = true, .keep_alive = 0xffff,
        .client_id = SPAN("client-\xc3\xa9"), .will_topic = SPAN("dev/1/lwt"),
        .will_payload = SPAN("bye\0\xff"), .username = SPAN("alice"),
        .password = SPAN("\0\x01\x02"),
    };
    roundtrip_connect(&c);
    c.has_password = false;
    c.will_qos = 0;
    c.will_retain = false;
    roundtrip_connect(&c);
}

/* A set protocol level is written as given, so tools can probe a server
 * with a level it must refuse [MQTT-3.1.2-2]. */
static void encode_connect_writes_given_protocol_level(void **state)
{
    (void)state;
    mqtt_connect c = { .protocol_name = SPAN("MQTT"), .protocol_level = 3,
                       .client_id = SPAN("x") };
    uint8_t buf[64];
    size_t n = mqtt_encode_connect(buf, sizeof buf, &c);
    mqtt_frame f = split_whole(buf, n, MQTT_CONNECT);
    mqtt_connect out;
    assert_int_equal(mqtt_decode_connect(&f, &out), MQTT_ERR_PROTOCOL_LEVEL);
}

/* ---- CONNACK ------------------------------------------------------------ */

/* 3.2: 0x20 0x02, acknowledge flags, return code. */
static void encode_connack_writes_spec_bytes(void **state)
{
    (void)state;
    uint8_t buf[4];
    assert_int_equal(mqtt_encode_connack(buf, sizeof buf, true, 0), 4);
    assert_memory_equal(buf, "\x20\x02\x01\x00", 4);
    assert_int_equal(mqtt_encode_connack(buf, sizeof buf, false, MQTT_CONNACK_BAD_PROTOCOL), 4);
    assert_memory_equal(buf, "\x20\x02\x00\x01", 4);
}

static void encode_connack_round_trips(void **state)
{
    (void)state;
    for (uint8_t rc = 0; rc <= MQTT_CONNACK_NOT_AUTHORIZED; rc++) {
        for (int sp = 0; sp <= (rc == 0); sp++) { /* [MQTT-3.2.2-4] */
            uint8_t a[4], b[4];
            size_t n = mqtt_encode_connack(a, sizeof a, sp, rc);
            mqtt_frame f = split_whole(a, n, MQTT_CONNACK);
            mqtt_connack out;
            assert_int_equal(mqtt_decode_connack(&f, &out), MQTT_OK);
            assert_int_equal(out.session_present, sp);
            assert_int_equal(out.return_code, rc);
            assert_int_equal(mqtt_encode_connack(b, sizeof b, out.session_present,
                                                 out.return_code), n);
            assert_memory_equal(a, b, n);
        }
    }
}

/* ---- PUBLISH ------------------------------------------------------------ */

static void roundtrip_publish(const mqtt_publish *in, uint8_t *a, uint8_t *b, size_t cap)
{
    size_t n = mqtt_encode_publish(a, cap, in);
    assert_true(n <= cap);
    mqtt_frame f = split_whole(a, n, MQTT_PUBLISH);
    mqtt_publish out;
    assert_int_equal(mqtt_decode_publish(&f, &out), MQTT_OK);
    span_eq(out.topic, in->topic);
    span_eq(out.payload, in->payload);
    assert_int_equal(out.qos, in->qos);
    assert_int_equal(out.dup, in->dup);
    assert_int_equal(out.retain, in->retain);
    assert_int_equal(out.packet_id, in->qos ? in->packet_id : 0);
    assert_int_equal(mqtt_encode_publish(b, cap, &out), n);
    assert_memory_equal(a, b, n);
}

/* 3.3.1: DUP, QoS and RETAIN in the fixed header; the id only for QoS > 0. */
static void encode_publish_round_trips_every_qos_and_flag(void **state)
{
    (void)state;
    uint8_t a[256], b[256];
    for (uint8_t qos = 0; qos <= 2; qos++) {
        for (int dup = 0; dup <= (qos > 0); dup++) { /* [MQTT-3.3.1-2] */
            for (int retain = 0; retain <= 1; retain++) {
                mqtt_publish p = { .topic = SPAN("a/b/c"), .payload = SPAN("hello\0world"),
                                   .qos = qos, .dup = dup, .retain = retain,
                                   .packet_id = qos ? 0x8001 : 0 };
                roundtrip_publish(&p, a, b, sizeof a);
            }
        }
    }
}

static void encode_publish_with_empty_payload_round_trips(void **state)
{
    (void)state;
    uint8_t a[64], b[64];
    mqtt_publish p = { .topic = SPAN("t"), .qos = 1, .packet_id = 1 };
    roundtrip_publish(&p, a, b, sizeof a);
}

/* 3.3: 0x30 | flags, topic, packet id, payload. */
static void encode_publish_writes_spec_bytes(void **state)
{
    (void)state;
    static const uint8_t want[] = {
        0x32, 0x0a, 0x00, 0x03, 'a', '/', 'b', 0x00, 0x01, 'h', 'i', '!',
    };
    mqtt_publish p = { .topic = SPAN("a/b"), .payload = SPAN("hi!"), .qos = 1, .packet_id = 1 };
    uint8_t buf[64];
    assert_int_equal(mqtt_encode_publish(buf, sizeof buf, &p), sizeof want);
    assert_memory_equal(buf, want, sizeof want);
}

/* 2.2.3 table 2.4: the Remaining Length takes the fewest bytes. */
static void encode_publish_remaining_length_boundaries(void **state)
{
    (void)state;
    static const struct { size_t rem; size_t rl_bytes; } cases[] = {
        { 127, 1 }, { 128, 2 }, { 16383, 2 }, { 16384, 3 }, { 2097151, 3 }, { 2097152, 4 },
    };
    size_t var = 2 + 1; /* topic "t", QoS 0 */
    uint8_t *payload = calloc(1, 2097152);
    uint8_t *a = malloc(2097152 + 16), *b = malloc(2097152 + 16);
    assert_non_null(payload);
    assert_non_null(a);
    assert_non_null(b);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        mqtt_publish p = { .topic = SPAN("t"),
                           .payload = { payload, cases[i].rem - var } };
        size_t n = mqtt_encode_publish(a, 2097152 + 16, &p);
        assert_int_equal(n, 1 + cases[i].rl_bytes + cases[i].rem);
        mqtt_frame f = split_whole(a, n, MQTT_PUBLISH);
        assert_int_equal(f.header_len, 1 + cases[i].rl_bytes);
        assert_int_equal(f.body_len, cases[i].rem);
        roundtrip_publish(&p, a, b, 2097152 + 16);
    }
    free(payload);
    free(a);
    free(b);
}

/* The header alone plus the payload is byte for byte the whole packet. */
static void encode_publish_header_then_payload_equals_whole_packet(void **state)
{
    (void)state;
    uint8_t payload[300];
    memset(payload, 0x5a, sizeof payload);
    mqtt_publish p = { .topic = SPAN("x/y"), .payload = { payload, sizeof payload },
                       .qos = 2, .packet_id = 9, .retain = true };
    uint8_t whole[512], split[512];
    size_t n = mqtt_encode_publish(whole, sizeof whole, &p);
    size_t h = mqtt_encode_publish_header(split, sizeof split, &p);
    assert_int_equal(h, 1 + 2 + 2 + 3 + 2); /* two length bytes: 309 > 127 */
    assert_int_equal(n, h + sizeof payload);
    memcpy(split + h, payload, sizeof payload);
    assert_memory_equal(whole, split, n);
}

/* ---- acks --------------------------------------------------------------- */

/* 3.4-3.7, 3.11: two bytes of packet id; PUBREL carries flags 0x2 [MQTT-3.6.1-1]. */
static void encode_packet_id_writes_spec_bytes_for_every_ack_type(void **state)
{
    (void)state;
    static const struct { enum mqtt_type type; uint8_t first; } acks[] = {
        { MQTT_PUBACK, 0x40 }, { MQTT_PUBREC, 0x50 }, { MQTT_PUBREL, 0x62 },
        { MQTT_PUBCOMP, 0x70 }, { MQTT_UNSUBACK, 0xb0 },
    };
    for (size_t i = 0; i < sizeof acks / sizeof acks[0]; i++) {
        uint8_t buf[4];
        assert_int_equal(mqtt_encode_packet_id(buf, sizeof buf, acks[i].type, 0x0a0b), 4);
        const uint8_t want[] = { acks[i].first, 0x02, 0x0a, 0x0b };
        assert_memory_equal(buf, want, 4);
    }
}

static void encode_packet_id_round_trips_every_ack_type(void **state)
{
    (void)state;
    static const enum mqtt_type types[] = {
        MQTT_PUBACK, MQTT_PUBREC, MQTT_PUBREL, MQTT_PUBCOMP, MQTT_UNSUBACK,
    };
    static const uint16_t ids[] = { 1, 0x00ff, 0x0100, 0xffff };
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++) {
        for (size_t j = 0; j < sizeof ids / sizeof ids[0]; j++) {
            uint8_t a[4], b[4];
            size_t n = mqtt_encode_packet_id(a, sizeof a, types[i], ids[j]);
            mqtt_frame f = split_whole(a, n, (uint8_t)types[i]);
            uint16_t id;
            assert_int_equal(mqtt_decode_packet_id(&f, &id), MQTT_OK);
            assert_int_equal(id, ids[j]);
            assert_int_equal(mqtt_encode_packet_id(b, sizeof b, types[i], id), n);
            assert_memory_equal(a, b, n);
        }
    }
}

/* ---- SUBSCRIBE / UNSUBSCRIBE / SUBACK ------------------------------------ */

static const mqtt_span filters[] = {
    { (const uint8_t *)"sport/tennis/+", 14 },
    { (const uint8_t *)"#", 1 },
    { (const uint8_t *)"$SYS/broker/#", 13 },
    { (const uint8_t *)"/", 1 },
};
static const uint8_t filter_qos[] = { 0, 1, 2, 1 };
#define NFILTERS (sizeof filters / sizeof filters[0])

/* [MQTT-3.8.1-1]: flags 0x2; 3.8.3: filter then requested QoS. */
static void encode_subscribe_round_trips(void **state)
{
    (void)state;
    uint8_t a[256], b[256];
    size_t n = mqtt_encode_subscribe(a, sizeof a, 77, filters, filter_qos, NFILTERS);
    assert_int_equal(a[0], 0x82);
    mqtt_frame f = split_whole(a, n, MQTT_SUBSCRIBE);
    mqtt_subscribe s;
    assert_int_equal(mqtt_decode_subscribe(&f, &s), MQTT_OK);
    assert_int_equal(s.packet_id, 77);
    assert_int_equal(s.count, NFILTERS);

    mqtt_span got[NFILTERS];
    uint8_t got_qos[NFILTERS];
    size_t pos = 0, i = 0;
    mqtt_sub_entry e;
    while (mqtt_subscribe_next(&s, &pos, &e)) {
        assert_true(i < NFILTERS);
        span_eq(e.filter, filters[i]);
        assert_int_equal(e.qos, filter_qos[i]);
        got[i] = e.filter;
        got_qos[i] = e.qos;
        i++;
    }
    assert_int_equal(i, NFILTERS);
    assert_int_equal(mqtt_encode_subscribe(b, sizeof b, s.packet_id, got, got_qos, i), n);
    assert_memory_equal(a, b, n);
}

/* [MQTT-3.10.1-1]: flags 0x2; 3.10.3: filters only. */
static void encode_unsubscribe_round_trips(void **state)
{
    (void)state;
    uint8_t a[256], b[256];
    size_t n = mqtt_encode_unsubscribe(a, sizeof a, 0xfffe, filters, NFILTERS);
    assert_int_equal(a[0], 0xa2);
    mqtt_frame f = split_whole(a, n, MQTT_UNSUBSCRIBE);
    mqtt_subscribe s;
    assert_int_equal(mqtt_decode_unsubscribe(&f, &s), MQTT_OK);
    assert_int_equal(s.packet_id, 0xfffe);
    assert_int_equal(s.count, NFILTERS);

    mqtt_span got[NFILTERS];
    size_t pos = 0, i = 0;
    mqtt_sub_entry e;
    while (mqtt_unsubscribe_next(&s, &pos, &e)) {
        assert_true(i < NFILTERS);
        span_eq(e.filter, filters[i]);
        got[i++] = e.filter;
    }
    assert_int_equal(i, NFILTERS);
    assert_int_equal(mqtt_encode_unsubscribe(b, sizeof b, s.packet_id, got, i), n);
    assert_memory_equal(a, b, n);
}

/* 3.9: packet id, then one return code per filter [MQTT-3.9.3-1]. */
static void encode_suback_round_trips(void **state)
{
    (void)state;
    static const uint8_t codes[] = { 0x00, 0x01, 0x02, MQTT_SUBACK_FAILURE };
    uint8_t a[16], b[16];
    size_t n = mqtt_encode_suback(a, sizeof a, 10, codes, sizeof codes);
    assert_int_equal(n, 8);
    assert_memory_equal(a, "\x90\x06\x00\x0a\x00\x01\x02\x80", 8);
    mqtt_frame f = split_whole(a, n, MQTT_SUBACK);
    mqtt_suback s;
    assert_int_equal(mqtt_decode_suback(&f, &s), MQTT_OK);
    assert_int_equal(s.packet_id, 10);
    span_eq(s.codes, (mqtt_span){ codes, sizeof codes });
    assert_int_equal(mqtt_encode_suback(b, sizeof b, s.packet_id, s.codes.ptr, s.codes.len), n);
    assert_memory_equal(a, b, n);
}

/* ---- PINGREQ / PINGRESP / DISCONNECT ------------------------------------- */

/* 3.12-3.14: type byte and a zero Remaining Length. */
static void encode_empty_writes_two_bytes_for_each_type(void **state)
{
    (void)state;
    static const struct { enum mqtt_type type; uint8_t first; } e[] = {
        { MQTT_PINGREQ, 0xc0 }, { MQTT_PINGRESP, 0xd0 }, { MQTT_DISCONNECT, 0xe0 },
    };
    for (size_t i = 0; i < 3; i++) {
        uint8_t buf[2];
        assert_int_equal(mqtt_encode_empty(buf, sizeof buf, e[i].type), 2);
        assert_int_equal(buf[0], e[i].first);
        assert_int_equal(buf[1], 0);
        mqtt_frame f = split_whole(buf, 2, (uint8_t)e[i].type);
        assert_int_equal(f.body_len, 0);
    }
}

/* ---- capacity ------------------------------------------------------------ */

/* Each encoder: cap 0 measures, a cap one short writes nothing, and the
 * measured size is what a sufficient cap then writes. */
#define CHECK_CAP(call_with_cap)                                               \
    do {                                                                       \
        uint8_t buf_[512];                                                     \
        uint8_t *buf = NULL;                                                   \
        size_t cap = 0;                                                        \
        size_t need = (call_with_cap);                                         \
        assert_true(need > 0 && need < sizeof buf_);                           \
        memset(buf_, 0xee, sizeof buf_);                                       \
        buf = buf_;                                                            \
        cap = need - 1;                                                        \
        assert_int_equal((call_with_cap), need);                               \
        for (size_t k_ = 0; k_ < sizeof buf_; k_++)                            \
            assert_int_equal(buf_[k_], 0xee);                                  \
        cap = need;                                                            \
        assert_int_equal((call_with_cap), need);                               \
        assert_int_equal(buf_[need], 0xee);                                    \
    } while (0)

static void encoders_with_small_cap_write_nothing_and_return_size(void **state)
{
    (void)state;
    mqtt_connect c = { .will_flag = true, .will_topic = SPAN("w"), .will_payload = SPAN("m"),
                       .has_username = true, .username = SPAN("u"), .client_id = SPAN("c") };
    mqtt_publish p = { .topic = SPAN("t"), .payload = SPAN("payload"), .qos = 1,
                       .packet_id = 5 };
    static const uint8_t codes[] = { 0, 1 };
    CHECK_CAP(mqtt_encode_connect(buf, cap, &c));
    CHECK_CAP(mqtt_encode_connack(buf, cap, false, 0));
    CHECK_CAP(mqtt_encode_publish(buf, cap, &p));
    CHECK_CAP(mqtt_encode_publish_header(buf, cap, &p));
    CHECK_CAP(mqtt_encode_packet_id(buf, cap, MQTT_PUBREL, 3));
    CHECK_CAP(mqtt_encode_subscribe(buf, cap, 1, filters, filter_qos, NFILTERS));
    CHECK_CAP(mqtt_encode_unsubscribe(buf, cap, 1, filters, NFILTERS));
    CHECK_CAP(mqtt_encode_suback(buf, cap, 1, codes, sizeof codes));
    CHECK_CAP(mqtt_encode_empty(buf, cap, MQTT_PINGREQ));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(encode_connect_writes_spec_bytes),
        cmocka_unit_test(encode_connect_minimal_round_trips),
        cmocka_unit_test(encode_connect_with_will_and_credentials_round_trips),
        cmocka_unit_test(encode_connect_writes_given_protocol_level),
        cmocka_unit_test(encode_connack_writes_spec_bytes),
        cmocka_unit_test(encode_connack_round_trips),
        cmocka_unit_test(encode_publish_round_trips_every_qos_and_flag),
        cmocka_unit_test(encode_publish_with_empty_payload_round_trips),
        cmocka_unit_test(encode_publish_writes_spec_bytes),
        cmocka_unit_test(encode_publish_remaining_length_boundaries),
        cmocka_unit_test(encode_publish_header_then_payload_equals_whole_packet),
        cmocka_unit_test(encode_packet_id_writes_spec_bytes_for_every_ack_type),
        cmocka_unit_test(encode_packet_id_round_trips_every_ack_type),
        cmocka_unit_test(encode_subscribe_round_trips),
        cmocka_unit_test(encode_unsubscribe_round_trips),
        cmocka_unit_test(encode_suback_round_trips),
        cmocka_unit_test(encode_empty_writes_two_bytes_for_each_type),
        cmocka_unit_test(encoders_with_small_cap_write_nothing_and_return_size),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
