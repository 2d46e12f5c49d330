/*
 * it_limits.c - malformed packets and resource limits.
 *
 * A protocol violation closes the offending connection without a reply
 * [MQTT-4.8.0-1]; every other client must keep being served. Each
 * violation test therefore has a bystander subscribed before the offence,
 * and a publish round trip to it afterwards.
 */
#include "harness.h"

#include <signal.h>

/* [MQTT-4.8.0-1] connect an offender (after CONNECT unless before_connect),
 * send pkt, expect a silent close of that connection only, then show the
 * bystander is still served. */
static void check_violation(const char *extra_config, const uint8_t *pkt, size_t n,
                            bool before_connect)
{
    it_broker *b = it_broker_start(extra_config);
    uint16_t port = it_broker_port(b);
    it_conn *by = it_client(port, "bystander", true);
    it_subscribe(by, "by/t", 1);
    it_conn *bad = it_connect(port);
    if (!before_connect)
        it_mqtt_connect(bad, "offender", true, 0, NULL);
    it_send(bad, pkt, n);
    it_expect_closed(bad, IT_TIMEOUT);
    it_conn *pub = it_client(port, "pub", true);
    it_publish_str(pub, "by/t", "still-served", 1, false);
    it_expect_publish(by, "by/t", "still-served", 1, false);
    it_broker_stop(b);
}

#define VIOLATION(...) do { \
        static const uint8_t pkt[] = { __VA_ARGS__ }; \
        check_violation(NULL, pkt, sizeof pkt, false); \
    } while (0)

/* [MQTT-3.3.1-4] PUBLISH with both QoS bits set. */
static void test_publish_qos3_closes(void **state)
{
    VIOLATION(0x36, 0x07, 0x00, 0x03, 'a', '/', 'b', 0x00, 0x01);
}

/* [MQTT-3.3.2-2] a topic name must not contain '+'. */
static void test_publish_topic_with_plus_closes(void **state)
{
    VIOLATION(0x30, 0x06, 0x00, 0x03, 'a', '/', '+', 'x');
}

/* [MQTT-3.3.2-2] a topic name must not contain '#'. */
static void test_publish_topic_with_hash_closes(void **state)
{
    VIOLATION(0x30, 0x06, 0x00, 0x03, 'a', '/', '#', 'x');
}

/* [MQTT-1.5.3-1] ill-formed UTF-8 in a topic name (overlong encoding of
 * '/': C0 AF). */
static void test_publish_topic_invalid_utf8_closes(void **state)
{
    VIOLATION(0x30, 0x07, 0x00, 0x04, 'a', 0xc0, 0xaf, 'b', 'x');
}

/* [MQTT-1.5.3-1] a UTF-16 surrogate (ED A0 80) is not valid UTF-8. */
static void test_publish_topic_with_surrogate_closes(void **state)
{
    VIOLATION(0x30, 0x07, 0x00, 0x04, 'a', 0xed, 0xa0, 0x80, 'x');
}

/* [MQTT-1.5.3-2] U+0000 in a topic name. */
static void test_publish_topic_with_nul_closes(void **state)
{
    VIOLATION(0x30, 0x06, 0x00, 0x03, 'a', 0x00, 'b', 'x');
}

/* [MQTT-4.7.3-1] a topic name is at least one character. */
static void test_publish_empty_topic_closes(void **state)
{
    VIOLATION(0x30, 0x03, 0x00, 0x00, 'x');
}

/* [MQTT-3.3.1-2] DUP must be 0 for QoS 0. */
static void test_publish_qos0_with_dup_closes(void **state)
{
    VIOLATION(0x38, 0x04, 0x00, 0x01, 'a', 'x');
}

/* [MQTT-2.3.1-1] QoS 1 PUBLISH with packet id 0. */
static void test_publish_qos1_packet_id_0_closes(void **state)
{
    VIOLATION(0x32, 0x06, 0x00, 0x01, 'a', 0x00, 0x00, 'x');
}

/* Section 1.5.3: a string length running past the end of the packet. */
static void test_publish_topic_length_past_packet_closes(void **state)
{
    VIOLATION(0x30, 0x04, 0x00, 0x10, 'a', 'b');
}

/* Section 2.2.3: Remaining Length uses at most 4 bytes; a 5th
 * continuation byte is malformed (not "need more"). */
static void test_remaining_length_of_5_bytes_closes(void **state)
{
    VIOLATION(0x30, 0xff, 0xff, 0xff, 0xff, 0x01);
}

/* [MQTT-2.2.2-2] PINGREQ with a reserved flag bit set. */
static void test_pingreq_with_flags_closes(void **state)
{
    VIOLATION(0xc1, 0x00);
}

/* Section 3.12: PINGREQ has no variable header or payload. */
static void test_pingreq_with_body_closes(void **state)
{
    VIOLATION(0xc0, 0x01, 0x00);
}

/* [MQTT-3.8.1-1] SUBSCRIBE fixed-header flags must be 0010. */
static void test_subscribe_with_flags_0_closes(void **state)
{
    VIOLATION(0x80, 0x06, 0x00, 0x01, 0x00, 0x01, 'a', 0x00);
}

/* [MQTT-3.10.1-1] UNSUBSCRIBE fixed-header flags must be 0010. */
static void test_unsubscribe_with_flags_0_closes(void **state)
{
    VIOLATION(0xa0, 0x05, 0x00, 0x01, 0x00, 0x01, 'a');
}

/* [MQTT-3.6.1-1] PUBREL fixed-header flags must be 0010. */
static void test_pubrel_with_flags_0_closes(void **state)
{
    VIOLATION(0x60, 0x02, 0x00, 0x01);
}

/* [MQTT-3.8.3-3] a SUBSCRIBE needs at least one filter. */
static void test_subscribe_without_filters_closes(void **state)
{
    VIOLATION(0x82, 0x02, 0x00, 0x01);
}

/* [MQTT-3.10.3-2] an UNSUBSCRIBE needs at least one filter. */
static void test_unsubscribe_without_filters_closes(void **state)
{
    VIOLATION(0xa2, 0x02, 0x00, 0x01);
}

/* [MQTT-3.8.3-4] (printed "MQTT-3-8.3-4" in the spec): requested QoS 3. */
static void test_subscribe_requested_qos_3_closes(void **state)
{
    VIOLATION(0x82, 0x06, 0x00, 0x01, 0x00, 0x01, 'a', 0x03);
}

/* [MQTT-3.8.3-4] (printed "MQTT-3-8.3-4" in the spec): reserved bits of
 * the requested QoS byte set. */
static void test_subscribe_reserved_qos_bits_closes(void **state)
{
    VIOLATION(0x82, 0x06, 0x00, 0x01, 0x00, 0x01, 'a', 0x41);
}

/* [MQTT-4.7.1-2] '#' must be last: "a/#/b". */
static void test_subscribe_hash_not_last_closes(void **state)
{
    VIOLATION(0x82, 0x0a, 0x00, 0x01, 0x00, 0x05, 'a', '/', '#', '/', 'b', 0x00);
}

/* [MQTT-4.7.1-3] '+' must occupy a whole level: "a+". */
static void test_subscribe_plus_inside_level_closes(void **state)
{
    VIOLATION(0x82, 0x07, 0x00, 0x01, 0x00, 0x02, 'a', '+', 0x00);
}

/* [MQTT-4.7.3-1] a topic filter is at least one character. */
static void test_subscribe_empty_filter_closes(void **state)
{
    VIOLATION(0x82, 0x05, 0x00, 0x01, 0x00, 0x00, 0x00);
}

/* [MQTT-4.7.1-2] UNSUBSCRIBE filters follow the same rules: "a/#/b". */
static void test_unsubscribe_invalid_filter_closes(void **state)
{
    VIOLATION(0xa2, 0x09, 0x00, 0x01, 0x00, 0x05, 'a', '/', '#', '/', 'b');
}

/* [MQTT-2.3.1-1] SUBSCRIBE with packet id 0. */
static void test_subscribe_packet_id_0_closes(void **state)
{
    VIOLATION(0x82, 0x06, 0x00, 0x00, 0x00, 0x01, 'a', 0x00);
}

/* Section 2.2.1: packet types 0 and 15 are reserved. */
static void test_reserved_packet_type_0_closes(void **state)
{
    VIOLATION(0x00, 0x00);
}

static void test_reserved_packet_type_15_closes(void **state)
{
    VIOLATION(0xf0, 0x00);
}

/* Section 4.8: a server-to-client packet (CONNACK) from a client. */
static void test_client_sending_connack_closes(void **state)
{
    VIOLATION(0x20, 0x02, 0x00, 0x00);
}

/* Section 4.8: a SUBACK from a client. */
static void test_client_sending_suback_closes(void **state)
{
    VIOLATION(0x90, 0x03, 0x00, 0x01, 0x00);
}

/* [MQTT-3.3.2-2] a will topic is a topic name: no wildcards (checked
 * before the CONNECT is accepted, so no CONNACK). */
static void test_will_topic_with_wildcard_closes(void **state)
{
    static const uint8_t will[] = { 0x00, 0x03, 'w', '/', '#', 0x00, 0x01, 'x' };
    uint8_t pkt[64];
    size_t n = it_raw_connect(pkt, "MQTT", 4, 0x02 | 0x04, 0, "wildwill", will, sizeof will);
    check_violation(NULL, pkt, n, true);
}

/* [MQTT-3.1.0-1] before CONNECT: a SUBSCRIBE as first packet. */
static void test_subscribe_before_connect_closes(void **state)
{
    static const uint8_t pkt[] = { 0x82, 0x06, 0x00, 0x01, 0x00, 0x01, 'a', 0x00 };
    check_violation(NULL, pkt, sizeof pkt, true);
}

/* ---- limits ------------------------------------------------------------- */

/* Pre-auth cap: a first packet announcing 100 MB is refused as soon as its
 * header arrives, without waiting for (or allocating) the body. */
static void test_100mb_first_packet_closed_at_once(void **state)
{
    it_broker *b = it_broker_start(NULL);
    long rss_before = it_broker_rss_kb(b);
    it_conn *c = it_connect(it_broker_port(b));
    /* CONNECT, Remaining Length 104857600 = 0x80 0x80 0x80 0x32. */
    IT_SEND(c, 0x10, 0x80, 0x80, 0x80, 0x32);
    long ms = it_expect_closed(c, 2000);
    long rss_after = it_broker_rss_kb(b);
    if (rss_before > 0 && rss_after - rss_before > 50 * 1024)
        it_fail("broker grew by %ld kB after a 100 MB announcement", rss_after - rss_before);
    (void)ms;
    it_assert_serving(b);
    it_broker_stop(b);
}

/* The same for a CONNECT that really is bigger than max_connect_size. */
static void test_connect_larger_than_max_connect_size_closes(void **state)
{
    it_broker *b = it_broker_start("max_connect_size 256");
    it_conn *c = it_connect(it_broker_port(b));
    char id[400];
    memset(id, 'i', sizeof id - 1);
    id[sizeof id - 1] = '\0';
    it_send_connect(c, id, true, 0, NULL);
    it_expect_closed(c, IT_TIMEOUT);
    /* A CONNECT under the cap is fine. */
    it_conn *ok = it_client(it_broker_port(b), "small", true);
    it_ping(ok);
    it_broker_stop(b);
}

/* max_packet_size: a PUBLISH over the limit closes the connection; one
 * under it is delivered; others keep being served. */
static void test_max_packet_size_exceeded_closes(void **state)
{
    it_broker *b = it_broker_start("max_packet_size 1024");
    uint16_t port = it_broker_port(b);
    it_conn *sub = it_client(port, "sub", true);
    it_subscribe(sub, "big/t", 0);
    it_conn *pub = it_client(port, "pub", true);
    char payload[2049];
    memset(payload, 'p', sizeof payload - 1);
    payload[900] = '\0';
    it_publish_str(pub, "big/t", payload, 0, false);
    it_expect_publish(sub, "big/t", payload, 0, false);
    payload[900] = 'p';
    payload[2048] = '\0';
    size_t n;
    uint8_t *pkt = it_encode_publish("big/t", payload, 2048, 0, false, false, 0, &n);
    bool sent = it_send_try(pub, pkt, n); /* the broker may close mid-packet */
    free(pkt);
    (void)sent;
    it_expect_closed(pub, IT_TIMEOUT);
    it_ping(sub);
    it_assert_serving(b);
    it_broker_stop(b);
}

/* max_packet_size is enforced on the announced length: a header claiming
 * 10 MB is refused without its body. */
static void test_announced_size_over_max_packet_size_closes(void **state)
{
    it_broker *b = it_broker_start("max_packet_size 1024");
    it_conn *c = it_client(it_broker_port(b), "liar", true);
    /* PUBLISH QoS 0, Remaining Length 10485760 = 0x80 0x80 0x80 0x05. */
    IT_SEND(c, 0x30, 0x80, 0x80, 0x80, 0x05);
    it_expect_closed(c, 2000);
    it_broker_stop(b);
}

/* connect_timeout: a connection that never sends CONNECT is closed after
 * about connect_timeout seconds (not before). */
static void test_connect_timeout_closes_silent_connection(void **state)
{
    it_broker *b = it_broker_start("connect_timeout 1");
    it_conn *c = it_connect(it_broker_port(b));
    long ms = it_expect_closed(c, 5000);
    if (ms < 900 || ms > 4000)
        it_fail("silent connection closed after %ld ms; expected about 1000", ms);
    it_broker_stop(b);
}

/* connect_timeout also covers a CONNECT that starts but never completes. */
static void test_connect_timeout_closes_partial_connect(void **state)
{
    it_broker *b = it_broker_start("connect_timeout 1");
    it_conn *c = it_connect(it_broker_port(b));
    IT_SEND(c, 0x10, 0x0f, 0x00, 0x04, 'M', 'Q');
    long ms = it_expect_closed(c, 5000);
    if (ms < 900 || ms > 4000)
        it_fail("partial CONNECT closed after %ld ms; expected about 1000", ms);
    it_broker_stop(b);
}

/* connect_timeout does not apply once CONNECT is accepted (keep alive 0:
 * nothing else may close it). The watch is bounded: twice the timeout. */
static void test_connect_timeout_does_not_close_connected_client(void **state)
{
    it_broker *b = it_broker_start("connect_timeout 1");
    it_conn *c = it_client(it_broker_port(b), "patient", true);
    it_expect_silence(c, 2000);
    it_ping(c);
    it_broker_stop(b);
}

/* max_connections 2: a third connection is refused (closed, possibly after
 * CONNACK 0x03 "server unavailable"); once one closes, a new one is let in. */
static void test_max_connections_refuses_extra_connection(void **state)
{
    it_broker *b = it_broker_start("max_connections 2");
    uint16_t port = it_broker_port(b);
    it_conn *a = it_client(port, "a", true);
    it_conn *c2 = it_client(port, "b", true);
    it_conn *extra = it_connect(port);
    uint8_t buf[64];
    size_t n = it_raw_connect(buf, "MQTT", 4, 0x02, 0, "extra", NULL, 0);
    (void)it_send_try(extra, buf, n); /* may already be closed */
    mqtt_frame f;
    int r = it_recv_frame(extra, &f, IT_TIMEOUT);
    if (r == 1) {
        const uint8_t *raw = f.body - f.header_len;
        if (f.type != MQTT_CONNACK || f.body_len != 2 || raw[2] != 0x00 || raw[3] != 0x03) {
            it_hexdump("received", raw, f.header_len + f.body_len);
            it_fail("extra connection was not refused");
        }
        it_expect_closed(extra, IT_TIMEOUT);
    } else if (r == 0) {
        it_fail("extra connection neither refused nor answered");
    }
    it_ping(a);
    it_ping(c2);
    it_disconnect(a);
    it_conn *d = it_client(port, "d", true);
    it_ping(d);
    it_broker_stop(b);
}

/* Many connections that open and vanish without a word leave the broker
 * healthy (each is reaped; no descriptor or memory leak: the clean exit
 * at stop is checked under ASan). */
static void test_abrupt_disconnects_are_reaped(void **state)
{
    it_broker *b = it_broker_start(NULL);
    for (int i = 0; i < 50; i++) {
        it_conn *c = it_connect(it_broker_port(b));
        if (i % 2) {
            char id[32];
            snprintf(id, sizeof id, "gone-%d", i);
            it_mqtt_connect(c, id, i % 4 == 1, 0, NULL);
            it_subscribe(c, "reap/#", (uint8_t)(i % 3));
        }
        it_close(c);
    }
    it_assert_serving(b);
    it_broker_stop(b);
}

/* A client that stops reading while messages pile up for it does not stall
 * the broker for others. The slow subscriber's socket buffers fill; the
 * broker must keep serving the rest. */
static void test_slow_consumer_does_not_block_others(void **state)
{
    it_broker *b = it_broker_start("max_queued_messages 100\nmax_packet_size 1048576");
    uint16_t port = it_broker_port(b);
    it_conn *slow = it_client(port, "slow", true);
    it_subscribe(slow, "flood/t", 0);
    it_conn *pub = it_client(port, "pub", true);
    static char payload[64 * 1024];
    memset(payload, 'f', sizeof payload);
    for (int i = 0; i < 64; i++) /* 4 MB towards a reader that never reads */
        it_publish(pub, "flood/t", payload, sizeof payload, 0, false);
    it_ping(pub);
    it_assert_serving(b);
    it_close(slow);
    it_broker_stop(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        IT_TEST(test_publish_qos3_closes),
        IT_TEST(test_publish_topic_with_plus_closes),
        IT_TEST(test_publish_topic_with_hash_closes),
        IT_TEST(test_publish_topic_invalid_utf8_closes),
        IT_TEST(test_publish_topic_with_surrogate_closes),
        IT_TEST(test_publish_topic_with_nul_closes),
        IT_TEST(test_publish_empty_topic_closes),
        IT_TEST(test_publish_qos0_with_dup_closes),
        IT_TEST(test_publish_qos1_packet_id_0_closes),
        IT_TEST(test_publish_topic_length_past_packet_closes),
        IT_TEST(test_remaining_length_of_5_bytes_closes),
        IT_TEST(test_pingreq_with_flags_closes),
        IT_TEST(test_pingreq_with_body_closes),
        IT_TEST(test_subscribe_with_flags_0_closes),
        IT_TEST(test_unsubscribe_with_flags_0_closes),
        IT_TEST(test_pubrel_with_flags_0_closes),
        IT_TEST(test_subscribe_without_filters_closes),
        IT_TEST(test_unsubscribe_without_filters_closes),
        IT_TEST(test_subscribe_requested_qos_3_closes),
        IT_TEST(test_subscribe_reserved_qos_bits_closes),
        IT_TEST(test_subscribe_hash_not_last_closes),
        IT_TEST(test_subscribe_plus_inside_level_closes),
        IT_TEST(test_subscribe_packet_id_0_closes),
        IT_TEST(test_subscribe_empty_filter_closes),
        IT_TEST(test_unsubscribe_invalid_filter_closes),
        IT_TEST(test_will_topic_with_wildcard_closes),
        IT_TEST(test_reserved_packet_type_0_closes),
        IT_TEST(test_reserved_packet_type_15_closes),
        IT_TEST(test_client_sending_connack_closes),
        IT_TEST(test_client_sending_suback_closes),
        IT_TEST(test_subscribe_before_connect_closes),
        IT_TEST(test_100mb_first_packet_closed_at_once),
        IT_TEST(test_connect_larger_than_max_connect_size_closes),
        IT_TEST(test_max_packet_size_exceeded_closes),
        IT_TEST(test_announced_size_over_max_packet_size_closes),
        IT_TEST(test_connect_timeout_closes_silent_connection),
        IT_TEST(test_connect_timeout_closes_partial_connect),
        IT_TEST(test_connect_timeout_does_not_close_connected_client),
        IT_TEST(test_max_connections_refuses_extra_connection),
        IT_TEST(test_abrupt_disconnects_are_reaped),
        IT_TEST(test_slow_consumer_does_not_block_others),
    };
    return IT_RUN(tests);
}
