/*
 * test_proto_frame.c - mqtt_frame_split(): fixed header, Remaining Length,
 * size limits, and the need-more / error distinction.
 *
 * Inputs are copied so they end exactly at an unreadable page: a split that
 * looks one byte past what it was given crashes instead of passing.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "mqtt.h"

#include "guard.h"

static ptrdiff_t split_guarded(const uint8_t *bytes, size_t len, size_t max,
                               mqtt_frame *f)
{
    return mqtt_frame_split(at_guard(bytes, len), len, max, f);
}

/* ---- spec vectors, one per packet type ----------------------------------- */

typedef struct vector {
    const uint8_t *bytes;
    size_t len;
    uint8_t type;
    uint8_t flags;
    size_t header_len;
} vector;

#define VEC(arr, t, fl, hl) { arr, sizeof arr, t, fl, hl }

static const uint8_t v_connect[] = {
    0x10, 0x10, 0x00, 0x04, 'M', 'Q', 'T', 'T', 0x04, 0x02, 0x00, 0x3c,
    0x00, 0x04, 'g', 'a', 't', 'e',
};
static const uint8_t v_connack[] = { 0x20, 0x02, 0x00, 0x00 };
static const uint8_t v_publish[] = {
    0x32, 0x0a, 0x00, 0x03, 'a', '/', 'b', 0x00, 0x01, 'h', 'i', '!',
};
static const uint8_t v_puback[] = { 0x40, 0x02, 0x00, 0x01 };
static const uint8_t v_pubrec[] = { 0x50, 0x02, 0x00, 0x01 };
static const uint8_t v_pubrel[] = { 0x62, 0x02, 0x00, 0x01 };
static const uint8_t v_pubcomp[] = { 0x70, 0x02, 0x00, 0x01 };
static const uint8_t v_subscribe[] = {
    0x82, 0x08, 0x00, 0x0a, 0x00, 0x03, 'a', '/', '#', 0x01,
};
static const uint8_t v_suback[] = { 0x90, 0x03, 0x00, 0x0a, 0x01 };
static const uint8_t v_unsubscribe[] = {
    0xa2, 0x07, 0x00, 0x0a, 0x00, 0x03, 'a', '/', '#',
};
static const uint8_t v_unsuback[] = { 0xb0, 0x02, 0x00, 0x0a };
static const uint8_t v_pingreq[] = { 0xc0, 0x00 };
static const uint8_t v_pingresp[] = { 0xd0, 0x00 };
static const uint8_t v_disconnect[] = { 0xe0, 0x00 };

static const vector vec_connect = VEC(v_connect, MQTT_CONNECT, 0, 2);
static const vector vec_connack = VEC(v_connack, MQTT_CONNACK, 0, 2);
static const vector vec_publish = VEC(v_publish, MQTT_PUBLISH, 2, 2);
static const vector vec_puback = VEC(v_puback, MQTT_PUBACK, 0, 2);
static const vector vec_pubrec = VEC(v_pubrec, MQTT_PUBREC, 0, 2);
static const vector vec_pubrel = VEC(v_pubrel, MQTT_PUBREL, 2, 2);
static const vector vec_pubcomp = VEC(v_pubcomp, MQTT_PUBCOMP, 0, 2);
static const vector vec_subscribe = VEC(v_subscribe, MQTT_SUBSCRIBE, 2, 2);
static const vector vec_suback = VEC(v_suback, MQTT_SUBACK, 0, 2);
static const vector vec_unsubscribe = VEC(v_unsubscribe, MQTT_UNSUBSCRIBE, 2, 2);
static const vector vec_unsuback = VEC(v_unsuback, MQTT_UNSUBACK, 0, 2);
static const vector vec_pingreq = VEC(v_pingreq, MQTT_PINGREQ, 0, 2);
static const vector vec_pingresp = VEC(v_pingresp, MQTT_PINGRESP, 0, 2);
static const vector vec_disconnect = VEC(v_disconnect, MQTT_DISCONNECT, 0, 2);

static void check_frame(const vector *v, const uint8_t *at, const mqtt_frame *f)
{
    assert_int_equal(f->type, v->type);
    assert_int_equal(f->flags, v->flags);
    assert_int_equal(f->header_len, v->header_len);
    assert_int_equal(f->body_len, v->len - v->header_len);
    assert_ptr_equal(f->body, at + v->header_len);
}

/* A complete packet is returned whole, with the frame pointing into it. */
static void split_whole_packet(void **state)
{
    const vector *v = *state;
    const uint8_t *at = at_guard(v->bytes, v->len);
    mqtt_frame f;
    assert_int_equal(mqtt_frame_split(at, v->len, SIZE_MAX, &f), (ptrdiff_t)v->len);
    check_frame(v, at, &f);
}

/* Every strict prefix needs more; the last byte completes the packet. */
static void split_byte_by_byte_needs_more_until_last_byte(void **state)
{
    const vector *v = *state;
    mqtt_frame f;
    for (size_t k = 0; k < v->len; k++)
        assert_int_equal(split_guarded(v->bytes, k, SIZE_MAX, &f), 0);
    assert_int_equal(split_guarded(v->bytes, v->len, SIZE_MAX, &f), (ptrdiff_t)v->len);
    check_frame(v, guard_end(0) - v->len, &f);
}

/* Bytes of the next packet after a complete one are left for the next call. */
static void split_ignores_bytes_of_the_next_packet(void **state)
{
    const vector *v = *state;
    uint8_t buf[64];
    memcpy(buf, v->bytes, v->len);
    memcpy(buf + v->len, v_connect, sizeof v_connect);
    mqtt_frame f;
    assert_int_equal(mqtt_frame_split(buf, v->len + sizeof v_connect, SIZE_MAX, &f),
                     (ptrdiff_t)v->len);
    check_frame(v, buf, &f);
}

static void split_of_empty_buffer_needs_more(void **state)
{
    (void)state;
    mqtt_frame f;
    assert_int_equal(split_guarded(NULL, 0, SIZE_MAX, &f), 0);
}

/* ---- packet types -------------------------------------------------------- */

/* 2.2.1: types 0 and 15 are reserved; refused on the first byte. */
static void split_rejects_reserved_type_0(void **state)
{
    (void)state;
    mqtt_frame f;
    const uint8_t b[] = { 0x00, 0x00 };
    assert_int_equal(split_guarded(b, 1, SIZE_MAX, &f), MQTT_ERR_TYPE);
    assert_int_equal(split_guarded(b, 2, SIZE_MAX, &f), MQTT_ERR_TYPE);
}

static void split_rejects_reserved_type_15(void **state)
{
    (void)state;
    mqtt_frame f;
    const uint8_t b[] = { 0xf0, 0x00 };
    assert_int_equal(split_guarded(b, 1, SIZE_MAX, &f), MQTT_ERR_TYPE);
    assert_int_equal(split_guarded(b, 2, SIZE_MAX, &f), MQTT_ERR_TYPE);
}

/* ---- reserved flag bits -------------------------------------------------- */

/* Every flags value but the required one is refused on the first byte. */
static void check_only_flags_accepted(unsigned type, unsigned required)
{
    for (unsigned fl = 0; fl < 16; fl++) {
        const uint8_t b[] = { (uint8_t)(type << 4 | fl) };
        mqtt_frame f;
        ptrdiff_t want = fl == required ? 0 : MQTT_ERR_FLAGS;
        assert_int_equal(split_guarded(b, 1, SIZE_MAX, &f), want);
    }
}

/* [MQTT-3.8.1-1] [MQTT-2.2.2-2] */
static void split_rejects_subscribe_flags_other_than_0x2(void **state)
{
    (void)state;
    check_only_flags_accepted(MQTT_SUBSCRIBE, 0x2);
}

/* [MQTT-3.10.1-1] [MQTT-2.2.2-2] */
static void split_rejects_unsubscribe_flags_other_than_0x2(void **state)
{
    (void)state;
    check_only_flags_accepted(MQTT_UNSUBSCRIBE, 0x2);
}

/* [MQTT-3.6.1-1] [MQTT-2.2.2-2] */
static void split_rejects_pubrel_flags_other_than_0x2(void **state)
{
    (void)state;
    check_only_flags_accepted(MQTT_PUBREL, 0x2);
}

/* [MQTT-2.2.2-1] [MQTT-2.2.2-2]: all other non-PUBLISH types carry 0. */
static void split_rejects_nonzero_flags_on_other_types(void **state)
{
    (void)state;
    const unsigned types[] = {
        MQTT_CONNECT, MQTT_CONNACK, MQTT_PUBACK, MQTT_PUBREC, MQTT_PUBCOMP,
        MQTT_SUBACK, MQTT_UNSUBACK, MQTT_PINGREQ, MQTT_PINGRESP, MQTT_DISCONNECT,
    };
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++)
        check_only_flags_accepted(types[i], 0);
}

/* PUBLISH flags are DUP/QoS/RETAIN; their rules belong to its decoder. */
static void split_accepts_any_publish_flags(void **state)
{
    (void)state;
    for (unsigned fl = 0; fl < 16; fl++) {
        const uint8_t b[] = { (uint8_t)(0x30 | fl), 0x00 };
        mqtt_frame f;
        assert_int_equal(split_guarded(b, 2, SIZE_MAX, &f), 2);
        assert_int_equal(f.flags, fl);
    }
}

/* ---- Remaining Length ---------------------------------------------------- */

/* 2.2.3 table 2.4: the boundaries of each field size. */
static void split_decodes_remaining_length_boundaries(void **state)
{
    (void)state;
    static const struct {
        uint8_t enc[4];
        size_t n;
        size_t value;
    } cases[] = {
        { { 0x00 }, 1, 0 },
        { { 0x7f }, 1, 127 },
        { { 0x80, 0x01 }, 2, 128 },
        { { 0xff, 0x7f }, 2, 16383 },
        { { 0x80, 0x80, 0x01 }, 3, 16384 },
        { { 0xff, 0xff, 0x7f }, 3, 2097151 },
        { { 0x80, 0x80, 0x80, 0x01 }, 4, 2097152 },
        { { 0xff, 0xff, 0xff, 0x7f }, 4, 268435455 },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        size_t total = 1 + cases[i].n + cases[i].value;
        uint8_t *buf = calloc(1, total);
        assert_non_null(buf);
        buf[0] = 0x30;
        memcpy(buf + 1, cases[i].enc, cases[i].n);
        mqtt_frame f;
        /* Header alone: the length is known but the body is missing. */
        assert_int_equal(mqtt_frame_split(buf, 1 + cases[i].n, SIZE_MAX, &f),
                         cases[i].value ? 0 : (ptrdiff_t)total);
        assert_int_equal(mqtt_frame_split(buf, total - (cases[i].value ? 1 : 0),
                                          SIZE_MAX, &f),
                         cases[i].value ? 0 : (ptrdiff_t)total);
        assert_int_equal(mqtt_frame_split(buf, total, SIZE_MAX, &f), (ptrdiff_t)total);
        assert_int_equal(f.header_len, 1 + cases[i].n);
        assert_int_equal(f.body_len, cases[i].value);
        assert_int_equal(mqtt_remaining_length_size(cases[i].value), cases[i].n);
        free(buf);
    }
}

/* 2.2.3: four length bytes at most. The fourth byte's continuation
 * bit already makes the field invalid, so the error comes with it and with
 * the fifth byte alike, never as need-more. */
static void split_rejects_five_byte_remaining_length(void **state)
{
    (void)state;
    const uint8_t b[] = { 0x30, 0xff, 0xff, 0xff, 0xff, 0x01, 0x00 };
    mqtt_frame f;
    for (size_t k = 0; k < 5; k++)
        assert_int_equal(split_guarded(b, k, SIZE_MAX, &f), 0);
    for (size_t k = 5; k <= sizeof b; k++)
        assert_int_equal(split_guarded(b, k, SIZE_MAX, &f), MQTT_ERR_REMLEN);
}

static void split_rejects_five_byte_remaining_length_of_small_value(void **state)
{
    (void)state;
    const uint8_t b[] = { 0xc0, 0x80, 0x80, 0x80, 0x80, 0x00 };
    mqtt_frame f;
    assert_int_equal(split_guarded(b, sizeof b, SIZE_MAX, &f), MQTT_ERR_REMLEN);
}

/* 3.1.1 does not require the shortest encoding; see frame.c. */
static void split_accepts_non_minimal_remaining_length(void **state)
{
    (void)state;
    const uint8_t b[] = { 0xc0, 0x80, 0x00 };
    mqtt_frame f;
    assert_int_equal(split_guarded(b, sizeof b, SIZE_MAX, &f), 3);
    assert_int_equal(f.header_len, 3);
    assert_int_equal(f.body_len, 0);
}

/* ---- size limit ---------------------------------------------------------- */

/* A 100 MB announcement costs five bytes, not 100 MB. */
static void split_refuses_too_large_packet_once_length_is_known(void **state)
{
    (void)state;
    size_t n = 100u * 1024 * 1024;
    uint8_t b[5] = { 0x30 };
    for (size_t i = 1; i < 5; i++) {
        b[i] = (uint8_t)((n & 0x7f) | (i < 4 ? 0x80 : 0));
        n >>= 7;
    }
    assert_int_equal(n, 0);
    mqtt_frame f;
    for (size_t k = 0; k < 5; k++)
        assert_int_equal(split_guarded(b, k, 1024, &f), 0);
    assert_int_equal(split_guarded(b, 5, 1024, &f), MQTT_ERR_TOO_LARGE);
}

/* The limit counts the fixed header too: exactly max_size is allowed. */
static void split_limit_counts_header_and_body(void **state)
{
    (void)state;
    mqtt_frame f;
    assert_int_equal(split_guarded(v_publish, sizeof v_publish, sizeof v_publish, &f),
                     (ptrdiff_t)sizeof v_publish);
    assert_int_equal(split_guarded(v_publish, 2, sizeof v_publish - 1, &f),
                     MQTT_ERR_TOO_LARGE);
    assert_int_equal(split_guarded(v_pingreq, 2, 2, &f), 2);
    assert_int_equal(split_guarded(v_pingreq, 2, 1, &f), MQTT_ERR_TOO_LARGE);
}

/* ---- fixed body sizes ---------------------------------------------------- */

/* 3.12.1, 3.13.1, 3.14.1: no variable header, no payload. */
static void split_rejects_body_on_ping_and_disconnect(void **state)
{
    (void)state;
    const uint8_t types[] = { 0xc0, 0xd0, 0xe0 };
    for (size_t i = 0; i < 3; i++) {
        const uint8_t b[] = { types[i], 0x01, 0x00 };
        mqtt_frame f;
        assert_int_equal(split_guarded(b, 2, SIZE_MAX, &f), MQTT_ERR_MALFORMED);
        assert_int_equal(split_guarded(b, 3, SIZE_MAX, &f), MQTT_ERR_MALFORMED);
    }
}

/* 3.2.1, 3.4.1, 3.5.1, 3.6.1, 3.7.1, 3.11.1: Remaining Length is 2. */
static void split_rejects_ack_with_body_other_than_2_bytes(void **state)
{
    (void)state;
    const uint8_t firsts[] = { 0x20, 0x40, 0x50, 0x62, 0x70, 0xb0 };
    for (size_t i = 0; i < sizeof firsts; i++) {
        for (uint8_t rl = 0; rl < 5; rl++) {
            if (rl == 2)
                continue;
            const uint8_t b[] = { firsts[i], rl };
            mqtt_frame f;
            assert_int_equal(split_guarded(b, 2, SIZE_MAX, &f), MQTT_ERR_MALFORMED);
        }
    }
}

/* ---- names --------------------------------------------------------------- */

static void strerror_names_every_error(void **state)
{
    (void)state;
    for (int e = MQTT_OK; e >= MQTT_ERR_EMPTY; e--) {
        const char *s = mqtt_strerror(e);
        assert_non_null(s);
        assert_string_not_equal(s, mqtt_strerror(1));
    }
    assert_non_null(mqtt_strerror(-1000));
    assert_string_equal(mqtt_strerror(MQTT_ERR_TOO_LARGE), "packet too large");
}

static void type_name_names_every_type(void **state)
{
    (void)state;
    assert_string_equal(mqtt_type_name(MQTT_CONNECT), "CONNECT");
    assert_string_equal(mqtt_type_name(MQTT_UNSUBSCRIBE), "UNSUBSCRIBE");
    assert_string_equal(mqtt_type_name(MQTT_DISCONNECT), "DISCONNECT");
    assert_string_equal(mqtt_type_name(0), "RESERVED");
    assert_string_equal(mqtt_type_name(15), "RESERVED");
    for (unsigned t = 0; t < 300; t++)
        assert_non_null(mqtt_type_name(t));
}

/* One named test per packet type, sharing the test body. */
#define PER_TYPE(fn, v) { #fn "/" #v, fn, NULL, NULL, (void *)&vec_##v }
#define ALL_TYPES(fn)                                                          \
    PER_TYPE(fn, connect), PER_TYPE(fn, connack), PER_TYPE(fn, publish),       \
    PER_TYPE(fn, puback), PER_TYPE(fn, pubrec), PER_TYPE(fn, pubrel),          \
    PER_TYPE(fn, pubcomp), PER_TYPE(fn, subscribe), PER_TYPE(fn, suback),      \
    PER_TYPE(fn, unsubscribe), PER_TYPE(fn, unsuback), PER_TYPE(fn, pingreq),  \
    PER_TYPE(fn, pingresp), PER_TYPE(fn, disconnect)

int main(void)
{
    const struct CMUnitTest tests[] = {
        ALL_TYPES(split_whole_packet),
        ALL_TYPES(split_byte_by_byte_needs_more_until_last_byte),
        ALL_TYPES(split_ignores_bytes_of_the_next_packet),
        cmocka_unit_test(split_of_empty_buffer_needs_more),
        cmocka_unit_test(split_rejects_reserved_type_0),
        cmocka_unit_test(split_rejects_reserved_type_15),
        cmocka_unit_test(split_rejects_subscribe_flags_other_than_0x2),
        cmocka_unit_test(split_rejects_unsubscribe_flags_other_than_0x2),
        cmocka_unit_test(split_rejects_pubrel_flags_other_than_0x2),
        cmocka_unit_test(split_rejects_nonzero_flags_on_other_types),
        cmocka_unit_test(split_accepts_any_publish_flags),
        cmocka_unit_test(split_decodes_remaining_length_boundaries),
        cmocka_unit_test(split_rejects_five_byte_remaining_length),
        cmocka_unit_test(split_rejects_five_byte_remaining_length_of_small_value),
        cmocka_unit_test(split_accepts_non_minimal_remaining_length),
        cmocka_unit_test(split_refuses_too_large_packet_once_length_is_known),
        cmocka_unit_test(split_limit_counts_header_and_body),
        cmocka_unit_test(split_rejects_body_on_ping_and_disconnect),
        cmocka_unit_test(split_rejects_ack_with_body_other_than_2_bytes),
        cmocka_unit_test(strerror_names_every_error),
        cmocka_unit_test(type_name_names_every_type),
    };
    return cmocka_run_group_tests(tests, guard_setup, guard_teardown);
}
