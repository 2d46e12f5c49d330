/*
 * it_connect.c - CONNECT / CONNACK, session flags, takeover, keep alive,
 * PINGREQ and DISCONNECT, against the real broker.
 */
#include "harness.h"

#include <string.h>

/* CONNECT "MQTT" level 4, clean session, keep alive 60, client id "abc",
 * spelled out so the first test depends on no encoder. */
static const uint8_t connect_abc[] = {
    0x10, 0x0f, 0x00, 0x04, 'M', 'Q', 'T', 'T', 0x04, 0x02, 0x00, 0x3c,
    0x00, 0x03, 'a', 'b', 'c',
};

/* [MQTT-3.2.0-1] CONNACK is the first packet from the server;
 * [MQTT-3.2.2-1] session present 0 with clean session; [MQTT-3.1.4-4]
 * return code 0 for a valid CONNECT. */
static void test_connack_accepted_is_20_02_00_00(void **state)
{
    it_broker *b = it_broker_start(NULL);
    it_conn *c = it_connect(it_broker_port(b));
    it_send(c, connect_abc, sizeof connect_abc);
    IT_EXPECT(c, 0x20, 0x02, 0x00, 0x00);
    it_ping(c);
    it_broker_stop(b);
}

/* [MQTT-3.1.2-2] unsupported level: CONNACK 0x01, then close. */
static void test_protocol_level_3_gets_connack_01_then_close(void **state)
{
    it_broker *b = it_broker_start(NULL);
    it_conn *c = it_connect(it_broker_port(b));
    uint8_t buf[64];
    size_t n = it_raw_connect(buf, "MQTT", 3, 0x02, 60, "lvl3", NULL, 0);
    it_send(c, buf, n);
    IT_EXPECT(c, 0x20, 0x02, 0x00, 0x01);
    it_expect_closed(c, IT_TIMEOUT);
    it_assert_serving(b);
    it_broker_stop(b);
}

/* [MQTT-3.1.2-2] also for a level from the future. */
static void test_protocol_level_5_gets_connack_01_then_close(void **state)
{
    it_broker *b = it_broker_start(NULL);
    it_conn *c = it_connect(it_broker_port(b));
    uint8_t buf[64];
    size_t n = it_raw_connect(buf, "MQTT", 5, 0x02, 60, "lvl5", NULL, 0);
    it_send(c, buf, n);
    IT_EXPECT(c, 0x20, 0x02, 0x00, 0x01);
    it_expect_closed(c, IT_TIMEOUT);
    it_broker_stop(b);
}

/* [MQTT-3.1.2-1] [MQTT-3.1.4-1] a protocol name other than "MQTT": close,
 * no CONNACK. */
static void test_wrong_protocol_name_closes_without_reply(void **state)
{
    it_broker *b = it_broker_start(NULL);
    it_conn *c = it_connect(it_broker_port(b));
    uint8_t buf[64];
    size_t n = it_raw_connect(buf, "MQTX", 4, 0x02, 60, "badname", NULL, 0);
    it_send(c, buf, n);
    it_expect_closed(c, IT_TIMEOUT);
    it_assert_serving(b);
    it_broker_stop(b);
}

/* [MQTT-3.1.2-1] the 3.1 name "MQIsdp" is not accepted either. */
static void test_protocol_name_mqisdp_closes_without_reply(void **state)
{
    it_broker *b = it_broker_start(NULL);
    it_conn *c = it_connect(it_broker_port(b));
    uint8_t buf[64];
    size_t n = it_raw_connect(buf, "MQIsdp", 4, 0x02, 60, "mqisdp", NULL, 0);
    it_send(c, buf, n);
    it_expect_closed(c, IT_TIMEOUT);
    it_broker_stop(b);
}

/* [MQTT-3.1.0-2] a second CONNECT is a protocol violation. */
static void test_second_connect_closes(void **state)
{
    it_broker *b = it_broker_start(NULL);
    it_conn *c = it_client(it_broker_port(b), "twice", true);
    it_send_connect(c, "twice", true, 0, NULL);
    it_expect_closed(c, IT_TIMEOUT);
    it_assert_serving(b);
    it_broker_stop(b);
}

/* [MQTT-3.1.0-1] the first packet must be CONNECT: a PINGREQ gets no
 * PINGRESP, just a close. */
static void test_first_packet_pingreq_closes(void **state)
{
    it_broker *b = it_broker_start(NULL);
    it_conn *c = it_connect(it_broker_port(b));
    IT_SEND(c, 0xc0, 0x00);
    it_expect_closed(c, IT_TIMEOUT);
    it_assert_serving(b);
    it_broker_stop(b);
}

/* [MQTT-3.1.0-1] nor may a PUBLISH come first; it must not be routed. */
static void test_first_packet_publish_closes_and_is_not_delivered(void **state)
{
    it_broker *b = it_broker_start(NULL);
    it_conn *sub = it_client(it_broker_port(b), "watcher", true);
    it_subscribe(sub, "early/#", 0);
    it_conn *c = it_connect(it_broker_port(b));
    size_t n;
    uint8_t *pkt = it_encode_publish("early/t", "x", 1, 0, false, false, 0, &n);
    it_send(c, pkt, n);
    free(pkt);
    it_expect_closed(c, IT_TIMEOUT);
    /* The watcher's own message is the first thing it gets. */
    it_publish_str(sub, "early/t", "own", 0, false);
    it_expect_publish(sub, "early/t", "own", 0, false);
    it_broker_stop(b);
}

/* [MQTT-3.1.2-3] the reserved connect flag (bit 0) must be 0; no return
 * code fits, so no CONNACK [MQTT-3.2.2-6]. */
static void test_reserved_connect_flag_closes(void **state)
{
    it_broker *b = it_broker_start(NULL);
    it_conn *c = it_connect(it_broker_port(b));
    uint8_t buf[64];
    size_t n = it_raw_connect(buf, "MQTT", 4, 0x03, 60, "reserved", NULL, 0);
    it_send(c, buf, n);
    it_expect_closed(c, IT_TIMEOUT);
    it_broker_stop(b);
}

/* [MQTT-2.2.2-2] CONNECT fixed-header flags are reserved (0). */
static void test_connect_fixed_header_flags_close(void **state)
{
    it_broker *b = it_broker_start(NULL);
    it_conn *c = it_connect(it_broker_port(b));
    uint8_t buf[sizeof connect_abc];
    memcpy(buf, connect_abc, sizeof buf);
    buf[0] = 0x12;
    it_send(c, buf, sizeof buf);
    it_expect_closed(c, IT_TIMEOUT);
    it_broker_stop(b);
}

/* [MQTT-3.1.2-13] will QoS must be 0 when the will flag is 0. */
static void test_will_qos_without_will_flag_closes(void **state)
{
    it_broker *b = it_broker_start(NULL);
    it_conn *c = it_connect(it_broker_port(b));
    uint8_t buf[64];
    size_t n = it_raw_connect(buf, "MQTT", 4, 0x02 | 0x08, 60, "willqos", NULL, 0);
    it_send(c, buf, n);
    it_expect_closed(c, IT_TIMEOUT);
    it_broker_stop(b);
}

/* [MQTT-3.1.2-15] will retain must be 0 when the will flag is 0. */
static void test_will_retain_without_will_flag_closes(void **state)
{
    it_broker *b = it_broker_start(NULL);
    it_conn *c = it_connect(it_broker_port(b));
    uint8_t buf[64];
    size_t n = it_raw_connect(buf, "MQTT", 4, 0x02 | 0x20, 60, "willret", NULL, 0);
    it_send(c, buf, n);
    it_expect_closed(c, IT_TIMEOUT);
    it_broker_stop(b);
}

/* [MQTT-3.1.2-14] will QoS 3 is invalid. */
static void test_will_qos_3_closes(void **state)
{
    it_broker *b = it_broker_start(NULL);
    it_conn *c = it_connect(it_broker_port(b));
    static const uint8_t will[] = { 0x00, 0x01, 'w', 0x00, 0x01, 'x' };
    uint8_t buf[64];
    size_t n = it_raw_connect(buf, "MQTT", 4, 0x02 | 0x04 | 0x18, 60, "willq3", will,
                              sizeof will);
    it_send(c, buf, n);
    it_expect_closed(c, IT_TIMEOUT);
    it_broker_stop(b);
}

/* [MQTT-3.1.2-22] a password flag without the user name flag. */
static void test_password_without_username_closes(void **state)
{
    it_broker *b = it_broker_start(NULL);
    it_conn *c = it_connect(it_broker_port(b));
    static const uint8_t pw[] = { 0x00, 0x02, 'p', 'w' };
    uint8_t buf[64];
    size_t n = it_raw_connect(buf, "MQTT", 4, 0x02 | 0x40, 60, "pwonly", pw, sizeof pw);
    it_send(c, buf, n);
    it_expect_closed(c, IT_TIMEOUT);
    it_broker_stop(b);
}

/* [MQTT-1.5.3-1] a client id that is not UTF-8 (0xff never is). */
static void test_client_id_invalid_utf8_closes(void **state)
{
    it_broker *b = it_broker_start(NULL);
    it_conn *c = it_connect(it_broker_port(b));
    uint8_t buf[64];
    size_t n = it_raw_connect(buf, "MQTT", 4, 0x02, 60, "ab\xff", NULL, 0);
    it_send(c, buf, n);
    it_expect_closed(c, IT_TIMEOUT);
    it_broker_stop(b);
}

/* [MQTT-3.1.2-9] will flag 1 but no will topic and message in the
 * payload: malformed, closed without CONNACK. */
static void test_will_flag_without_will_fields_closes(void **state)
{
    it_broker *b = it_broker_start(NULL);
    it_conn *c = it_connect(it_broker_port(b));
    uint8_t buf[64];
    size_t n = it_raw_connect(buf, "MQTT", 4, 0x02 | 0x04, 60, "nowill", NULL, 0);
    it_send(c, buf, n);
    it_expect_closed(c, IT_TIMEOUT);
    it_broker_stop(b);
}

/* [MQTT-3.1.2-19] user name flag 1 but no user name in the payload. */
static void test_username_flag_without_username_closes(void **state)
{
    it_broker *b = it_broker_start(NULL);
    it_conn *c = it_connect(it_broker_port(b));
    uint8_t buf[64];
    size_t n = it_raw_connect(buf, "MQTT", 4, 0x02 | 0x80, 60, "nouser", NULL, 0);
    it_send(c, buf, n);
    it_expect_closed(c, IT_TIMEOUT);
    it_broker_stop(b);
}

/* [MQTT-3.1.2-21] password flag 1 but no password after the user name. */
static void test_password_flag_without_password_closes(void **state)
{
    it_broker *b = it_broker_start(NULL);
    it_conn *c = it_connect(it_broker_port(b));
    static const uint8_t user[] = { 0x00, 0x01, 'u' };
    uint8_t buf[64];
    size_t n = it_raw_connect(buf, "MQTT", 4, 0x02 | 0x80 | 0x40, 60, "nopass", user,
                              sizeof user);
    it_send(c, buf, n);
    it_expect_closed(c, IT_TIMEOUT);
    it_broker_stop(b);
}

/* [MQTT-3.1.2-18] [MQTT-3.1.2-20] user name and password flags 0 but a
 * user name in the payload: trailing bytes, malformed. */
static void test_username_without_flag_closes(void **state)
{
    it_broker *b = it_broker_start(NULL);
    it_conn *c = it_connect(it_broker_port(b));
    static const uint8_t user[] = { 0x00, 0x01, 'u' };
    uint8_t buf[64];
    size_t n = it_raw_connect(buf, "MQTT", 4, 0x02, 60, "extra", user, sizeof user);
    it_send(c, buf, n);
    it_expect_closed(c, IT_TIMEOUT);
    it_broker_stop(b);
}

/* [MQTT-3.1.4-5] after refusing a CONNECT the server processes nothing
 * else the client sent: a PUBLISH right behind a refused CONNECT (same
 * segment) is not delivered. */
static void test_packets_after_refused_connect_are_ignored(void **state)
{
    it_broker *b = it_broker_start(NULL);
    it_conn *sub = it_client(it_broker_port(b), "watcher", true);
    it_subscribe(sub, "after/#", 0);
    it_conn *c = it_connect(it_broker_port(b));
    uint8_t buf[64];
    size_t n = it_raw_connect(buf, "MQTT", 3, 0x02, 60, "refused", NULL, 0);
    static const uint8_t publish[] = { 0x30, 0x09, 0x00, 0x07, 'a', 'f', 't', 'e', 'r',
                                       '/', 'x' };
    memcpy(buf + n, publish, sizeof publish);
    it_send(c, buf, n + sizeof publish);
    IT_EXPECT(c, 0x20, 0x02, 0x00, 0x01);
    it_expect_closed(c, IT_TIMEOUT);
    it_conn *pub = it_client(it_broker_port(b), "pub", true);
    it_publish_str(pub, "after/marker", "m", 0, false);
    it_expect_publish(sub, "after/marker", "m", 0, false);
    it_broker_stop(b);
}

/* [MQTT-3.1.3-6] an empty client id with clean session 1 is accepted. */
static void test_empty_client_id_with_clean_session_accepted(void **state)
{
    it_broker *b = it_broker_start(NULL);
    it_conn *c = it_connect(it_broker_port(b));
    uint8_t buf[64];
    size_t n = it_raw_connect(buf, "MQTT", 4, 0x02, 60, "", NULL, 0);
    it_send(c, buf, n);
    IT_EXPECT(c, 0x20, 0x02, 0x00, 0x00);
    it_ping(c);
    it_broker_stop(b);
}

/* [MQTT-3.1.3-6] the server assigns each empty-id client a unique id, so a
 * second one does not take over the first one's session. */
static void test_empty_client_ids_do_not_take_over_each_other(void **state)
{
    it_broker *b = it_broker_start(NULL);
    it_conn *c1 = it_client(it_broker_port(b), "", true);
    it_subscribe(c1, "anon/t", 0);
    it_conn *c2 = it_client(it_broker_port(b), "", true);
    it_ping(c1);
    it_publish_str(c2, "anon/t", "to-c1", 0, false);
    it_expect_publish(c1, "anon/t", "to-c1", 0, false);
    it_ping(c2);
    it_broker_stop(b);
}

/* [MQTT-3.1.3-8] empty client id with clean session 0: CONNACK 0x02 and
 * close [MQTT-3.1.3-9] [MQTT-3.2.2-5]. */
static void test_empty_client_id_without_clean_session_gets_connack_02(void **state)
{
    it_broker *b = it_broker_start(NULL);
    it_conn *c = it_connect(it_broker_port(b));
    uint8_t buf[64];
    size_t n = it_raw_connect(buf, "MQTT", 4, 0x00, 60, "", NULL, 0);
    it_send(c, buf, n);
    IT_EXPECT(c, 0x20, 0x02, 0x00, 0x02);
    it_expect_closed(c, IT_TIMEOUT);
    it_assert_serving(b);
    it_broker_stop(b);
}

/* [MQTT-3.1.3-5] a 23-character id of 0-9a-zA-Z is always accepted; a
 * longer one too, since this server allows it (rc 0 expected). */
static void test_long_client_ids_accepted(void **state)
{
    it_broker *b = it_broker_start(NULL);
    it_conn *c1 = it_client(it_broker_port(b), "abcdefghijklmnopqrstuvw", true);
    char id[200];
    memset(id, 'x', sizeof id - 1);
    id[sizeof id - 1] = '\0';
    it_conn *c2 = it_client(it_broker_port(b), id, true);
    it_ping(c1);
    it_ping(c2);
    it_broker_stop(b);
}

/* [MQTT-3.2.2-1] clean session 1 always answers session present 0, even
 * when a stored session existed (which it discards). */
static void test_session_present_0_on_clean_session(void **state)
{
    it_broker *b = it_broker_start(NULL);
    it_conn *c = it_client(it_broker_port(b), "sp-clean", false);
    it_subscribe(c, "sp/t", 1);
    it_disconnect(c);
    c = it_client_sp(it_broker_port(b), "sp-clean", true, false);
    it_disconnect(c);
    it_broker_stop(b);
}

/* [MQTT-3.2.2-3] clean session 0 without a stored session: present 0. */
static void test_session_present_0_on_first_persistent_connect(void **state)
{
    it_broker *b = it_broker_start(NULL);
    it_conn *c = it_client_sp(it_broker_port(b), "sp-first", false, false);
    it_disconnect(c);
    it_broker_stop(b);
}

/* [MQTT-3.2.2-2] clean session 0 with a stored session: present 1. */
static void test_session_present_1_on_resumed_session(void **state)
{
    it_broker *b = it_broker_start(NULL);
    it_conn *c = it_client_sp(it_broker_port(b), "sp-resume", false, false);
    it_disconnect(c);
    c = it_connect(it_broker_port(b));
    it_send_connect(c, "sp-resume", false, 0, NULL);
    IT_EXPECT(c, 0x20, 0x02, 0x01, 0x00);
    it_disconnect(c);
    it_broker_stop(b);
}

/* [MQTT-3.1.2-6] [MQTT-3.1.4-3] a clean-session connection discards the
 * stored session: a later persistent connect finds none. */
static void test_clean_session_discards_stored_session(void **state)
{
    it_broker *b = it_broker_start(NULL);
    uint16_t port = it_broker_port(b);
    it_conn *c = it_client_sp(port, "discard", false, false);
    it_disconnect(c);
    c = it_client_sp(port, "discard", true, false);
    it_disconnect(c);
    c = it_client_sp(port, "discard", false, false);
    it_disconnect(c);
    it_broker_stop(b);
}

/* [MQTT-3.1.4-2] a second connection with the same client id: the server
 * closes the first one and serves the second. */
static void test_session_takeover_closes_first_connection(void **state)
{
    it_broker *b = it_broker_start(NULL);
    it_conn *first = it_client(it_broker_port(b), "takeover", true);
    it_conn *second = it_client(it_broker_port(b), "takeover", true);
    it_expect_closed(first, IT_TIMEOUT);
    it_ping(second);
    it_broker_stop(b);
}

/* [MQTT-3.12.4-1] PINGREQ is answered with exactly D0 00. */
static void test_pingreq_gets_pingresp_d0_00(void **state)
{
    it_broker *b = it_broker_start(NULL);
    it_conn *c = it_client(it_broker_port(b), "pinger", true);
    IT_SEND(c, 0xc0, 0x00);
    IT_EXPECT(c, 0xd0, 0x00);
    it_broker_stop(b);
}

/* [MQTT-3.14.4-1..3] after DISCONNECT the server closes the connection. */
static void test_disconnect_closes_connection(void **state)
{
    it_broker *b = it_broker_start(NULL);
    it_conn *c = it_client(it_broker_port(b), "leaver", true);
    IT_SEND(c, 0xe0, 0x00);
    it_expect_closed(c, IT_TIMEOUT);
    it_assert_serving(b);
    it_broker_stop(b);
}

/* [MQTT-3.1.2-24] no packet for 1.5x the keep alive: the server closes.
 * Keep alive 1 s: the close must come after about 1.5 s, not before the
 * keep alive itself has run out and not much later. */
static void test_keepalive_expiry_closes_at_1_5x(void **state)
{
    it_broker *b = it_broker_start(NULL);
    it_conn *c = it_connect(it_broker_port(b));
    it_mqtt_connect(c, "sleepy", true, 1, NULL);
    long ms = it_expect_closed(c, 5000);
    if (ms < 1250 || ms > 3500)
        it_fail("closed after %ld ms; expected about 1500 ms", ms);
    it_broker_stop(b);
}

/* [MQTT-3.1.2-23] sending packets (PINGREQ) keeps the connection alive
 * past 1.5x the keep alive. The pauses pace the client like a real one;
 * they synchronise nothing. */
static void test_pingreq_keeps_connection_alive(void **state)
{
    it_broker *b = it_broker_start(NULL);
    it_conn *c = it_connect(it_broker_port(b));
    it_mqtt_connect(c, "awake", true, 1, NULL);
    long end = it_now_ms() + 2600;
    while (it_now_ms() < end) {
        it_expect_silence(c, 500);
        it_ping(c);
    }
    it_broker_stop(b);
}

/* Section 2.2.3 / 4.2: a packet may arrive in any number of TCP segments;
 * here the CONNECT comes one byte per segment. */
static void test_connect_split_into_single_bytes_accepted(void **state)
{
    it_broker *b = it_broker_start(NULL);
    it_conn *c = it_connect(it_broker_port(b));
    for (size_t i = 0; i < sizeof connect_abc; i++) {
        it_send(c, connect_abc + i, 1);
        if (i + 1 < sizeof connect_abc)
            it_expect_silence(c, 20); /* forces separate segments */
    }
    IT_EXPECT(c, 0x20, 0x02, 0x00, 0x00);
    it_broker_stop(b);
}

/* Several packets in one segment are all handled, in order. */
static void test_connect_and_pingreq_in_one_segment(void **state)
{
    it_broker *b = it_broker_start(NULL);
    it_conn *c = it_connect(it_broker_port(b));
    uint8_t buf[sizeof connect_abc + 2];
    memcpy(buf, connect_abc, sizeof connect_abc);
    buf[sizeof connect_abc] = 0xc0;
    buf[sizeof connect_abc + 1] = 0x00;
    it_send(c, buf, sizeof buf);
    IT_EXPECT(c, 0x20, 0x02, 0x00, 0x00, 0xd0, 0x00);
    it_broker_stop(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        IT_TEST(test_connack_accepted_is_20_02_00_00),
        IT_TEST(test_protocol_level_3_gets_connack_01_then_close),
        IT_TEST(test_protocol_level_5_gets_connack_01_then_close),
        IT_TEST(test_wrong_protocol_name_closes_without_reply),
        IT_TEST(test_protocol_name_mqisdp_closes_without_reply),
        IT_TEST(test_second_connect_closes),
        IT_TEST(test_first_packet_pingreq_closes),
        IT_TEST(test_first_packet_publish_closes_and_is_not_delivered),
        IT_TEST(test_reserved_connect_flag_closes),
        IT_TEST(test_connect_fixed_header_flags_close),
        IT_TEST(test_will_qos_without_will_flag_closes),
        IT_TEST(test_will_retain_without_will_flag_closes),
        IT_TEST(test_will_qos_3_closes),
        IT_TEST(test_password_without_username_closes),
        IT_TEST(test_client_id_invalid_utf8_closes),
        IT_TEST(test_will_flag_without_will_fields_closes),
        IT_TEST(test_username_flag_without_username_closes),
        IT_TEST(test_password_flag_without_password_closes),
        IT_TEST(test_username_without_flag_closes),
        IT_TEST(test_packets_after_refused_connect_are_ignored),
        IT_TEST(test_empty_client_id_with_clean_session_accepted),
        IT_TEST(test_empty_client_ids_do_not_take_over_each_other),
        IT_TEST(test_empty_client_id_without_clean_session_gets_connack_02),
        IT_TEST(test_long_client_ids_accepted),
        IT_TEST(test_session_present_0_on_clean_session),
        IT_TEST(test_session_present_0_on_first_persistent_connect),
        IT_TEST(test_session_present_1_on_resumed_session),
        IT_TEST(test_clean_session_discards_stored_session),
        IT_TEST(test_session_takeover_closes_first_connection),
        IT_TEST(test_pingreq_gets_pingresp_d0_00),
        IT_TEST(test_disconnect_closes_connection),
        IT_TEST(test_keepalive_expiry_closes_at_1_5x),
        IT_TEST(test_pingreq_keeps_connection_alive),
        IT_TEST(test_connect_split_into_single_bytes_accepted),
        IT_TEST(test_connect_and_pingreq_in_one_segment),
    };
    return IT_RUN(tests);
}
