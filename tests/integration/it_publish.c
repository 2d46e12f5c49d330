/*
 * it_publish.c - PUBLISH flows at QoS 0, 1 and 2 with exact acks, QoS
 * downgrade, overlapping subscriptions, ordering and payload sizes.
 *
 * Absence checks use a marker: after the message that must not arrive, the
 * same publisher sends a marker on a topic the receiver is subscribed to,
 * and the receiver's next packet must be the marker. This relies on the
 * broker handling one client's packets in order, which the spec requires
 * per topic [MQTT-4.6.0-6] and this single-threaded broker does across
 * topics.
 */
#include "harness.h"

/* [MQTT-3.3.4-1] QoS 0: the subscriber gets exactly the PUBLISH, with no
 * ack to anyone; [MQTT-4.3.1-1] QoS 0, DUP 0 and [MQTT-2.3.1-5] no packet
 * id. */
static void test_qos0_publish_delivered_exact_bytes(void **state)
{
    it_broker *b = it_broker_start(NULL);
    it_conn *sub = it_client(it_broker_port(b), "sub", true);
    it_subscribe(sub, "a/b", 0);
    it_conn *pub = it_client(it_broker_port(b), "pub", true);
    IT_SEND(pub, 0x30, 0x0a, 0x00, 0x03, 'a', '/', 'b', 'h', 'e', 'l', 'l', 'o');
    IT_EXPECT(sub, 0x30, 0x0a, 0x00, 0x03, 'a', '/', 'b', 'h', 'e', 'l', 'l', 'o');
    it_ping(pub); /* nothing (no PUBACK) came back to the publisher */
    it_broker_stop(b);
}

/* [MQTT-4.3.2-2] QoS 1: PUBACK 40 02 with [MQTT-2.3.1-6] the publisher's
 * packet id. */
static void test_qos1_publish_gets_puback_exact(void **state)
{
    it_broker *b = it_broker_start(NULL);
    it_conn *pub = it_client(it_broker_port(b), "pub", true);
    IT_SEND(pub, 0x32, 0x0c, 0x00, 0x03, 'a', '/', 'b', 0x12, 0x34, 'h', 'e', 'l', 'l',
            'o');
    IT_EXPECT(pub, 0x40, 0x02, 0x12, 0x34);
    it_broker_stop(b);
}

/* [MQTT-4.3.3-2] QoS 2 receiver side: PUBREC 50 02, and after PUBREL
 * [MQTT-3.6.4-1] PUBCOMP 70 02, both with [MQTT-2.3.1-6] the same packet id. */
static void test_qos2_publish_gets_pubrec_then_pubcomp_exact(void **state)
{
    it_broker *b = it_broker_start(NULL);
    it_conn *sub = it_client(it_broker_port(b), "sub", true);
    it_subscribe(sub, "a/b", 2);
    it_conn *pub = it_client(it_broker_port(b), "pub", true);
    IT_SEND(pub, 0x34, 0x0c, 0x00, 0x03, 'a', '/', 'b', 0xbe, 0xef, 'h', 'e', 'l', 'l',
            'o');
    IT_EXPECT(pub, 0x50, 0x02, 0xbe, 0xef);
    IT_SEND(pub, 0x62, 0x02, 0xbe, 0xef);
    IT_EXPECT(pub, 0x70, 0x02, 0xbe, 0xef);
    it_expect_publish(sub, "a/b", "hello", 2, false);
    it_ping(sub);
    it_broker_stop(b);
}

/* [MQTT-4.3.3-2] exactly once: a PUBLISH re-sent with DUP=1 before the
 * PUBREL is acknowledged again with PUBREC but not delivered again. */
static void test_qos2_resent_publish_before_pubrel_delivered_once(void **state)
{
    it_broker *b = it_broker_start(NULL);
    it_conn *sub = it_client(it_broker_port(b), "sub", true);
    it_subscribe(sub, "q2/#", 2);
    it_conn *pub = it_client(it_broker_port(b), "pub", true);
    size_t n;
    uint8_t *first = it_encode_publish("q2/once", "payload", 7, 2, false, false, 7, &n);
    it_send(pub, first, n);
    free(first);
    IT_EXPECT(pub, 0x50, 0x02, 0x00, 0x07);
    uint8_t *again = it_encode_publish("q2/once", "payload", 7, 2, false, true, 7, &n);
    it_send(pub, again, n);
    free(again);
    IT_EXPECT(pub, 0x50, 0x02, 0x00, 0x07);
    IT_SEND(pub, 0x62, 0x02, 0x00, 0x07);
    IT_EXPECT(pub, 0x70, 0x02, 0x00, 0x07);
    it_publish_str(pub, "q2/marker", "m", 2, false);
    it_expect_publish(sub, "q2/once", "payload", 2, false);
    it_expect_publish(sub, "q2/marker", "m", 2, false);
    it_broker_stop(b);
}

/* [MQTT-3.3.1-3] DUP on an outgoing PUBLISH says whether the broker is
 * re-sending it; it is not copied from the incoming PUBLISH. */
static void test_incoming_dup_not_copied_to_subscribers(void **state)
{
    it_broker *b = it_broker_start(NULL);
    it_conn *sub = it_client(it_broker_port(b), "sub", true);
    it_subscribe(sub, "dup/t", 1);
    it_conn *pub = it_client(it_broker_port(b), "pub", true);
    size_t n;
    uint8_t *pkt = it_encode_publish("dup/t", "resent", 6, 1, false, true, 3, &n);
    it_send(pub, pkt, n);
    free(pkt);
    IT_EXPECT(pub, 0x40, 0x02, 0x00, 0x03);
    it_expect_publish(sub, "dup/t", "resent", 1, false); /* checks DUP 0 */
    it_broker_stop(b);
}

/* [MQTT-3.6.4-1] a PUBREL is answered with PUBCOMP even for an unknown id
 * (the state may already be gone after a reconnect). */
static void test_pubrel_for_unknown_id_gets_pubcomp(void **state)
{
    it_broker *b = it_broker_start(NULL);
    it_conn *c = it_client(it_broker_port(b), "rel", true);
    IT_SEND(c, 0x62, 0x02, 0x01, 0x02);
    IT_EXPECT(c, 0x70, 0x02, 0x01, 0x02);
    it_broker_stop(b);
}

/* [MQTT-3.8.4-6] delivered QoS = min(published QoS, granted QoS): three
 * subscribers at QoS 0, 1, 2 each get QoS 0, 1, 2 publications. */
static void test_delivery_qos_is_min_of_publish_and_subscription(void **state)
{
    it_broker *b = it_broker_start(NULL);
    uint16_t port = it_broker_port(b);
    it_conn *sub[3];
    char id[32];
    for (int s = 0; s < 3; s++) {
        snprintf(id, sizeof id, "sub-q%d", s);
        sub[s] = it_client(port, id, true);
        it_subscribe(sub[s], "qos/t", (uint8_t)s);
    }
    it_conn *pub = it_client(port, "pub", true);
    for (int q = 0; q < 3; q++) {
        char payload[32];
        snprintf(payload, sizeof payload, "pub-q%d", q);
        it_publish_str(pub, "qos/t", payload, (uint8_t)q, false);
        for (int s = 0; s < 3; s++)
            it_expect_publish(sub[s], "qos/t", payload, (uint8_t)(q < s ? q : s), false);
    }
    for (int s = 0; s < 3; s++)
        it_ping(sub[s]);
    it_broker_stop(b);
}

/* [MQTT-2.3.1-1] a QoS 1 delivery carries a non-zero packet id, and the
 * broker waits for its PUBACK (the next delivery gets a different id while
 * the first is unacknowledged [MQTT-2.3.1-2], [MQTT-2.3.1-4]);
 * [MQTT-4.3.2-1] a fresh id, QoS 1, DUP 0. */
static void test_qos1_deliveries_use_distinct_nonzero_ids(void **state)
{
    it_broker *b = it_broker_start(NULL);
    it_conn *sub = it_client(it_broker_port(b), "sub", true);
    it_subscribe(sub, "ids/t", 1);
    it_conn *pub = it_client(it_broker_port(b), "pub", true);
    it_publish_str(pub, "ids/t", "one", 1, false);
    it_publish_str(pub, "ids/t", "two", 1, false);
    mqtt_publish p;
    it_recv_publish(sub, &p, IT_TIMEOUT);
    uint16_t id1 = p.packet_id;
    assert_true(it_span_eq(p.payload, "one"));
    assert_int_equal(p.qos, 1);
    assert_false(p.dup);
    it_recv_publish(sub, &p, IT_TIMEOUT);
    uint16_t id2 = p.packet_id;
    assert_true(it_span_eq(p.payload, "two"));
    assert_int_equal(p.qos, 1);
    assert_false(p.dup);
    assert_int_not_equal(id1, 0);
    assert_int_not_equal(id2, 0);
    assert_int_not_equal(id1, id2);
    uint8_t ack[4] = { 0x40, 0x02, (uint8_t)(id1 >> 8), (uint8_t)id1 };
    it_send(sub, ack, 4);
    ack[2] = (uint8_t)(id2 >> 8);
    ack[3] = (uint8_t)id2;
    it_send(sub, ack, 4);
    it_ping(sub);
    it_broker_stop(b);
}

/* [MQTT-4.3.3-1] QoS 2 sender side (broker to subscriber): PUBLISH with
 * DUP 0, then after our PUBREC exactly PUBREL 62 02 ID; after our PUBCOMP
 * nothing more. */
static void test_qos2_delivery_flow_to_subscriber_exact(void **state)
{
    it_broker *b = it_broker_start(NULL);
    it_conn *sub = it_client(it_broker_port(b), "sub", true);
    it_subscribe(sub, "q2/t", 2);
    it_conn *pub = it_client(it_broker_port(b), "pub", true);
    it_publish_str(pub, "q2/t", "exactly", 2, false);
    mqtt_publish p;
    it_recv_publish(sub, &p, IT_TIMEOUT);
    assert_int_equal(p.qos, 2);
    assert_false(p.dup);
    assert_int_not_equal(p.packet_id, 0);
    uint8_t hi = (uint8_t)(p.packet_id >> 8), lo = (uint8_t)p.packet_id;
    uint8_t pubrec[4] = { 0x50, 0x02, hi, lo };
    it_send(sub, pubrec, 4);
    uint8_t pubrel[4] = { 0x62, 0x02, hi, lo };
    it_expect_bytes(sub, pubrel, 4, IT_TIMEOUT);
    uint8_t pubcomp[4] = { 0x70, 0x02, hi, lo };
    it_send(sub, pubcomp, 4);
    it_ping(sub);
    it_broker_stop(b);
}

/* [MQTT-3.3.5-1] overlapping subscriptions: delivered at the maximum QoS
 * of the matching ones. The spec lets a server send extra copies; this
 * broker promises exactly one. */
static void test_overlapping_subscriptions_deliver_once_at_max_qos(void **state)
{
    it_broker *b = it_broker_start(NULL);
    it_conn *sub = it_client(it_broker_port(b), "sub", true);
    static const char *const filters[] = { "ov/+", "ov/#", "ov/x", "marker" };
    static const uint8_t qos[] = { 0, 2, 1, 2 };
    it_subscribe_n(sub, filters, qos, 4, qos);
    it_conn *pub = it_client(it_broker_port(b), "pub", true);
    it_publish_str(pub, "ov/x", "once", 2, false);
    it_publish_str(pub, "marker", "m", 2, false);
    it_expect_publish(sub, "ov/x", "once", 2, false);
    it_expect_publish(sub, "marker", "m", 2, false);
    it_broker_stop(b);
}

/* Same with QoS 1 published: max granted is 2, so delivery is QoS 1. */
static void test_overlapping_subscriptions_capped_by_publish_qos(void **state)
{
    it_broker *b = it_broker_start(NULL);
    it_conn *sub = it_client(it_broker_port(b), "sub", true);
    static const char *const filters[] = { "ov/#", "ov/y", "marker" };
    static const uint8_t qos[] = { 0, 2, 1 };
    it_subscribe_n(sub, filters, qos, 3, qos);
    it_conn *pub = it_client(it_broker_port(b), "pub", true);
    it_publish_str(pub, "ov/y", "once", 1, false);
    it_publish_str(pub, "marker", "m", 1, false);
    it_expect_publish(sub, "ov/y", "once", 1, false);
    it_expect_publish(sub, "marker", "m", 1, false);
    it_broker_stop(b);
}

/* [MQTT-4.6.0-5] [MQTT-4.6.0-6] many QoS 1 messages from one publisher, sent without
 * waiting for acks, reach the subscriber in order; PUBACKs come back in
 * order [MQTT-4.6.0-2]. More messages than the in-flight window, so the
 * broker's queueing is exercised too. */
static void test_many_qos1_messages_arrive_in_order(void **state)
{
    enum { N = 300 };
    it_broker *b = it_broker_start("max_inflight_messages 20\nmax_queued_messages 1000");
    it_conn *sub = it_client(it_broker_port(b), "sub", true);
    it_subscribe(sub, "order/t", 1);
    it_conn *pub = it_client(it_broker_port(b), "pub", true);
    for (int i = 0; i < N; i++) {
        char payload[32];
        snprintf(payload, sizeof payload, "m%04d", i);
        size_t n;
        uint8_t *pkt = it_encode_publish("order/t", payload, strlen(payload), 1, false,
                                         false, (uint16_t)(i + 1), &n);
        it_send(pub, pkt, n);
        free(pkt);
    }
    for (int i = 0; i < N; i++) {
        uint8_t ack[4] = { 0x40, 0x02, (uint8_t)((i + 1) >> 8), (uint8_t)(i + 1) };
        it_expect_bytes(pub, ack, 4, IT_TIMEOUT);
    }
    for (int i = 0; i < N; i++) {
        char payload[32];
        snprintf(payload, sizeof payload, "m%04d", i);
        it_expect_publish(sub, "order/t", payload, 1, false);
    }
    it_ping(sub);
    it_broker_stop(b);
}

/* 3.1.1 has no "no local": a client subscribed to a topic gets its own
 * publications [MQTT-3.3.5-1 applies to every matching subscriber]. */
static void test_publisher_receives_own_message(void **state)
{
    it_broker *b = it_broker_start(NULL);
    it_conn *c = it_client(it_broker_port(b), "echo", true);
    it_subscribe(c, "self/t", 0);
    it_publish_str(c, "self/t", "me", 0, false);
    it_expect_publish(c, "self/t", "me", 0, false);
    it_broker_stop(b);
}

/* A QoS 1 publication nobody subscribes to is still acknowledged. */
static void test_publish_without_subscribers_is_acknowledged(void **state)
{
    it_broker *b = it_broker_start(NULL);
    it_conn *pub = it_client(it_broker_port(b), "pub", true);
    it_publish_str(pub, "nobody/home", "x", 1, false);
    it_publish_str(pub, "nobody/home", "x", 2, false);
    it_broker_stop(b);
}

/* A zero-length payload is a valid message [MQTT-3.3.3]. */
static void test_empty_payload_delivered(void **state)
{
    it_broker *b = it_broker_start(NULL);
    it_conn *sub = it_client(it_broker_port(b), "sub", true);
    it_subscribe(sub, "empty/t", 1);
    it_conn *pub = it_client(it_broker_port(b), "pub", true);
    it_publish(pub, "empty/t", "", 0, 1, false);
    it_expect_publish(sub, "empty/t", "", 1, false);
    it_broker_stop(b);
}

/* A payload much larger than a socket buffer arrives intact: partial reads
 * and writes on both sides. */
static void test_large_payload_delivered_intact(void **state)
{
    enum { N = 512 * 1024 };
    it_broker *b = it_broker_start("max_packet_size 1048576");
    it_conn *sub = it_client(it_broker_port(b), "sub", true);
    it_subscribe(sub, "big/t", 1);
    it_conn *pub = it_client(it_broker_port(b), "pub", true);
    char *payload = malloc(N + 1);
    for (size_t i = 0; i < N; i++)
        payload[i] = (char)('a' + (i * 7 + i / 251) % 26);
    payload[N] = '\0';
    it_publish(pub, "big/t", payload, N, 1, false);
    mqtt_publish p;
    it_recv_publish(sub, &p, IT_TIMEOUT);
    bool same = p.payload.len == N && memcmp(p.payload.ptr, payload, N) == 0;
    free(payload);
    if (!same)
        it_fail("large payload differs (got %zu bytes)", p.payload.len);
    it_ack(sub, &p);
    it_ping(sub);
    it_broker_stop(b);
}

/* [MQTT-4.5.0-1] one publication reaches every one of many subscribers. */
static void test_fanout_to_many_subscribers(void **state)
{
    enum { N = 40 };
    it_broker *b = it_broker_start(NULL);
    it_conn *sub[N];
    for (int i = 0; i < N; i++) {
        char id[32];
        snprintf(id, sizeof id, "fan-%d", i);
        sub[i] = it_client(it_broker_port(b), id, true);
        it_subscribe(sub[i], "fan/#", 1);
    }
    it_conn *pub = it_client(it_broker_port(b), "pub", true);
    it_publish_str(pub, "fan/out", "all", 1, false);
    for (int i = 0; i < N; i++)
        it_expect_publish(sub[i], "fan/out", "all", 1, false);
    it_broker_stop(b);
}

/* Section 4.2: packets are a byte stream; any split is legal. Thirty QoS 1
 * PUBLISHes of growing size are sent as one stream cut into chunks of 1 to
 * 7 bytes (cuts land inside headers, Remaining Length fields and
 * payloads); every one is acknowledged and delivered, in order. */
static void test_stream_cut_at_arbitrary_points(void **state)
{
    enum { N = 30 };
    it_broker *b = it_broker_start(NULL);
    it_conn *sub = it_client(it_broker_port(b), "sub", true);
    it_subscribe(sub, "chunk/t", 1);
    it_conn *pub = it_client(it_broker_port(b), "pub", true);
    size_t cap = 1 << 20, len = 0;
    uint8_t *stream = malloc(cap);
    char *payload = malloc(4096);
    for (int i = 0; i < N; i++) {
        size_t plen = (size_t)i * 67; /* crosses the 1-to-2-byte length boundary */
        memset(payload, 'a' + i % 26, plen);
        size_t n;
        uint8_t *pkt = it_encode_publish("chunk/t", payload, plen, 1, false, false,
                                         (uint16_t)(i + 1), &n);
        memcpy(stream + len, pkt, n);
        len += n;
        free(pkt);
    }
    for (size_t off = 0, k = 0; off < len; k++) {
        size_t step = 1 + (k * 5 + off) % 7;
        if (step > len - off)
            step = len - off;
        it_send(pub, stream + off, step);
        off += step;
    }
    free(stream);
    for (int i = 0; i < N; i++) {
        uint8_t ack[4] = { 0x40, 0x02, 0x00, (uint8_t)(i + 1) };
        it_expect_bytes(pub, ack, 4, IT_TIMEOUT);
    }
    for (int i = 0; i < N; i++) {
        size_t plen = (size_t)i * 67;
        memset(payload, 'a' + i % 26, plen);
        payload[plen] = '\0';
        it_expect_publish(sub, "chunk/t", payload, 1, false);
    }
    free(payload);
    it_broker_stop(b);
}

/* [MQTT-1.5.3] topics are UTF-8: multi-byte characters (2, 3 and 4 bytes)
 * route and arrive unchanged. */
static void test_utf8_topic_round_trip(void **state)
{
    static const char topic[] = "temp\xc3\xa9rature/\xe6\x97\xa5\xe6\x9c\xac/\xf0\x9f\x98\x80";
    it_broker *b = it_broker_start(NULL);
    it_conn *sub = it_client(it_broker_port(b), "sub", true);
    it_subscribe(sub, "temp\xc3\xa9rature/+/\xf0\x9f\x98\x80", 1);
    it_conn *pub = it_client(it_broker_port(b), "pub", true);
    it_publish_str(pub, topic, "unicode", 1, false);
    it_expect_publish(sub, topic, "unicode", 1, false);
    it_broker_stop(b);
}

/* A topic of 500 levels (1000 bytes) is matched by "#" and by its exact
 * name. */
static void test_deep_topic_round_trip(void **state)
{
    char topic[1001];
    for (int i = 0; i < 500; i++) {
        topic[2 * i] = (char)('a' + i % 26);
        topic[2 * i + 1] = '/';
    }
    topic[999] = '\0';
    it_broker *b = it_broker_start(NULL);
    it_conn *all = it_client(it_broker_port(b), "all", true);
    it_subscribe(all, "#", 0);
    it_conn *exact = it_client(it_broker_port(b), "exact", true);
    it_subscribe(exact, topic, 0);
    it_conn *pub = it_client(it_broker_port(b), "pub", true);
    it_publish_str(pub, topic, "deep", 0, false);
    it_expect_publish(all, topic, "deep", 0, false);
    it_expect_publish(exact, topic, "deep", 0, false);
    it_broker_stop(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        IT_TEST(test_qos0_publish_delivered_exact_bytes),
        IT_TEST(test_qos1_publish_gets_puback_exact),
        IT_TEST(test_qos2_publish_gets_pubrec_then_pubcomp_exact),
        IT_TEST(test_qos2_resent_publish_before_pubrel_delivered_once),
        IT_TEST(test_incoming_dup_not_copied_to_subscribers),
        IT_TEST(test_pubrel_for_unknown_id_gets_pubcomp),
        IT_TEST(test_delivery_qos_is_min_of_publish_and_subscription),
        IT_TEST(test_qos1_deliveries_use_distinct_nonzero_ids),
        IT_TEST(test_qos2_delivery_flow_to_subscriber_exact),
        IT_TEST(test_overlapping_subscriptions_deliver_once_at_max_qos),
        IT_TEST(test_overlapping_subscriptions_capped_by_publish_qos),
        IT_TEST(test_many_qos1_messages_arrive_in_order),
        IT_TEST(test_publisher_receives_own_message),
        IT_TEST(test_publish_without_subscribers_is_acknowledged),
        IT_TEST(test_empty_payload_delivered),
        IT_TEST(test_large_payload_delivered_intact),
        IT_TEST(test_fanout_to_many_subscribers),
        IT_TEST(test_stream_cut_at_arbitrary_points),
        IT_TEST(test_utf8_topic_round_trip),
        IT_TEST(test_deep_topic_round_trip),
    };
    return IT_RUN(tests);
}
