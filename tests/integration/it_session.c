/*
 * it_session.c - persistent sessions (clean session 0): stored
 * subscriptions, offline queueing, redelivery of unacknowledged messages,
 * QoS 2 state across reconnects, and the in-flight / queue limits.
 */
#include "harness.h"

/* [MQTT-3.1.2-4] [MQTT-3.1.2-5] a QoS 1 message published while a
 * persistent client is offline is stored and delivered when it resumes,
 * with [MQTT-3.2.2-2] session present 1. */
static void test_offline_qos1_delivered_on_resume(void **state)
{
    it_broker *b = it_broker_start(NULL);
    uint16_t port = it_broker_port(b);
    it_conn *sub = it_client_sp(port, "persist", false, false);
    it_subscribe(sub, "sess/t", 1);
    it_disconnect(sub);
    it_conn *pub = it_client(port, "pub", true);
    it_publish_str(pub, "sess/t", "while-away", 1, false);
    sub = it_client_sp(port, "persist", false, true);
    it_expect_publish(sub, "sess/t", "while-away", 1, false);
    it_ping(sub);
    it_broker_stop(b);
}

/* QoS 2 messages are queued for offline sessions too, and delivered at
 * QoS 2 [MQTT-3.1.2-5]. */
static void test_offline_qos2_delivered_on_resume(void **state)
{
    it_broker *b = it_broker_start(NULL);
    uint16_t port = it_broker_port(b);
    it_conn *sub = it_client_sp(port, "persist", false, false);
    it_subscribe(sub, "sess/t", 2);
    it_disconnect(sub);
    it_conn *pub = it_client(port, "pub", true);
    it_publish_str(pub, "sess/t", "q2-away", 2, false);
    sub = it_client_sp(port, "persist", false, true);
    it_expect_publish(sub, "sess/t", "q2-away", 2, false);
    it_ping(sub);
    it_broker_stop(b);
}

/* QoS 0 messages are not queued for offline sessions (this broker's
 * choice; [MQTT-3.1.2-5] makes it optional): only the QoS 1 one arrives. */
static void test_offline_qos0_not_queued(void **state)
{
    it_broker *b = it_broker_start(NULL);
    uint16_t port = it_broker_port(b);
    it_conn *sub = it_client_sp(port, "persist", false, false);
    it_subscribe(sub, "sess/t", 1);
    it_disconnect(sub);
    it_conn *pub = it_client(port, "pub", true);
    it_publish_str(pub, "sess/t", "qos0-dropped", 0, false);
    it_publish_str(pub, "sess/t", "qos1-kept", 1, false);
    sub = it_client_sp(port, "persist", false, true);
    it_expect_publish(sub, "sess/t", "qos1-kept", 1, false);
    it_ping(sub);
    it_broker_stop(b);
}

/* [MQTT-3.1.2-4] [MQTT-4.1.0-1] subscriptions are part of the session:
 * after resuming, live messages arrive without subscribing again. */
static void test_subscriptions_survive_resume(void **state)
{
    it_broker *b = it_broker_start(NULL);
    uint16_t port = it_broker_port(b);
    it_conn *sub = it_client_sp(port, "persist", false, false);
    it_subscribe(sub, "sess/t", 1);
    it_disconnect(sub);
    sub = it_client_sp(port, "persist", false, true);
    it_conn *pub = it_client(port, "pub", true);
    it_publish_str(pub, "sess/t", "live", 1, false);
    it_expect_publish(sub, "sess/t", "live", 1, false);
    it_broker_stop(b);
}

/* [MQTT-3.1.2-6] a clean session's subscriptions end with the connection:
 * a later persistent connect finds no session and gets nothing. */
static void test_clean_session_subscriptions_end_with_connection(void **state)
{
    it_broker *b = it_broker_start(NULL);
    uint16_t port = it_broker_port(b);
    it_conn *c = it_client(port, "ephemeral", true);
    it_subscribe(c, "sess/t", 1);
    it_disconnect(c);
    c = it_client_sp(port, "ephemeral", false, false);
    it_subscribe(c, "marker", 1);
    it_conn *pub = it_client(port, "pub", true);
    it_publish_str(pub, "sess/t", "not-for-you", 1, false);
    it_publish_str(pub, "marker", "m", 1, false);
    it_expect_publish(c, "marker", "m", 1, false);
    it_broker_stop(b);
}

/* [MQTT-3.1.2-6] a clean session ends with its connection also when the
 * connection just drops (no DISCONNECT): nothing is kept for the id. */
static void test_clean_session_discarded_after_abrupt_close(void **state)
{
    it_broker *b = it_broker_start(NULL);
    uint16_t port = it_broker_port(b);
    it_conn *c = it_client(port, "dropper", true);
    it_subscribe(c, "sess/t", 1);
    it_close(c);
    /* The broker may not have seen the drop yet: then this is a takeover,
     * and a clean-session takeover must not resume the session either. */
    c = it_client_sp(port, "dropper", false, false);
    it_subscribe(c, "marker", 1);
    it_conn *pub = it_client(port, "pub", true);
    it_publish_str(pub, "sess/t", "not-for-you", 1, false);
    it_publish_str(pub, "marker", "m", 1, false);
    it_expect_publish(c, "marker", "m", 1, false);
    it_broker_stop(b);
}

/* [MQTT-4.6.0-6] on resume, messages queued while offline come before
 * messages published after the resume. */
static void test_queued_messages_precede_new_ones_on_resume(void **state)
{
    it_broker *b = it_broker_start(NULL);
    uint16_t port = it_broker_port(b);
    it_conn *sub = it_client_sp(port, "persist", false, false);
    it_subscribe(sub, "sess/t", 1);
    it_disconnect(sub);
    it_conn *pub = it_client(port, "pub", true);
    it_publish_str(pub, "sess/t", "old-1", 1, false);
    it_publish_str(pub, "sess/t", "old-2", 1, false);
    sub = it_client_sp(port, "persist", false, true);
    it_publish_str(pub, "sess/t", "new", 1, false);
    it_expect_publish(sub, "sess/t", "old-1", 1, false);
    it_expect_publish(sub, "sess/t", "old-2", 1, false);
    it_expect_publish(sub, "sess/t", "new", 1, false);
    it_broker_stop(b);
}

/* [MQTT-3.1.2-6] reconnecting with clean session 1 throws away the queued
 * messages of the old session. */
static void test_clean_reconnect_discards_queued_messages(void **state)
{
    it_broker *b = it_broker_start(NULL);
    uint16_t port = it_broker_port(b);
    it_conn *sub = it_client_sp(port, "persist", false, false);
    it_subscribe(sub, "sess/t", 1);
    it_disconnect(sub);
    it_conn *pub = it_client(port, "pub", true);
    it_publish_str(pub, "sess/t", "discarded", 1, false);
    sub = it_client_sp(port, "persist", true, false);
    it_ping(sub);
    it_broker_stop(b);
}

/* [MQTT-4.4.0-1] an unacknowledged QoS 1 delivery is re-sent on resume
 * with the original packet id and [MQTT-3.3.1-1] DUP=1: exact bytes. */
static void test_unacked_qos1_redelivered_with_dup_on_resume(void **state)
{
    it_broker *b = it_broker_start(NULL);
    uint16_t port = it_broker_port(b);
    it_conn *sub = it_client_sp(port, "flaky", false, false);
    it_subscribe(sub, "sess/t", 1);
    it_conn *pub = it_client(port, "pub", true);
    it_publish_str(pub, "sess/t", "again", 1, false);
    mqtt_publish p;
    it_recv_publish(sub, &p, IT_TIMEOUT);
    assert_false(p.dup);
    uint16_t id = p.packet_id;
    it_close(sub); /* no PUBACK, no DISCONNECT */
    sub = it_connect(port);
    assert_true(it_mqtt_connect(sub, "flaky", false, 0, NULL));
    /* 3A: PUBLISH DUP QoS 1; 0x0f = 2+6 topic, 2 id, 5 payload. */
    uint8_t exp[] = { 0x3a, 0x0f, 0x00, 0x06, 's', 'e', 's', 's', '/', 't',
                      (uint8_t)(id >> 8), (uint8_t)id, 'a', 'g', 'a', 'i', 'n' };
    it_expect_bytes(sub, exp, sizeof exp, IT_TIMEOUT);
    uint8_t puback[4] = { 0x40, 0x02, (uint8_t)(id >> 8), (uint8_t)id };
    it_send(sub, puback, 4);
    it_ping(sub);
    /* Acknowledged now: a further resume re-sends nothing. */
    it_disconnect(sub);
    sub = it_client_sp(port, "flaky", false, true);
    it_ping(sub);
    it_broker_stop(b);
}

/* [MQTT-4.6.0-1] several unacknowledged QoS 1 deliveries are re-sent on
 * resume in their original order, with their original ids and DUP=1. */
static void test_unacked_messages_resent_in_original_order(void **state)
{
    it_broker *b = it_broker_start(NULL);
    uint16_t port = it_broker_port(b);
    it_conn *sub = it_client_sp(port, "flaky", false, false);
    it_subscribe(sub, "sess/t", 1);
    it_conn *pub = it_client(port, "pub", true);
    static const char *const msgs[] = { "first", "second", "third" };
    uint16_t ids[3];
    for (int i = 0; i < 3; i++)
        it_publish_str(pub, "sess/t", msgs[i], 1, false);
    for (int i = 0; i < 3; i++) {
        mqtt_publish p;
        it_recv_publish(sub, &p, IT_TIMEOUT);
        if (!it_span_eq(p.payload, msgs[i]))
            it_fail("delivery %d out of order", i);
        ids[i] = p.packet_id;
    }
    it_close(sub);
    sub = it_connect(port);
    assert_true(it_mqtt_connect(sub, "flaky", false, 0, NULL));
    for (int i = 0; i < 3; i++) {
        mqtt_publish p;
        it_recv_publish(sub, &p, IT_TIMEOUT);
        if (!it_span_eq(p.payload, msgs[i]) || p.packet_id != ids[i] || !p.dup || p.qos != 1)
            it_fail("re-sent %d: '%.*s' id %u dup %d (expected '%s' id %u dup 1)", i,
                    (int)p.payload.len, (const char *)p.payload.ptr, p.packet_id, p.dup,
                    msgs[i], ids[i]);
        it_ack(sub, &p);
    }
    it_ping(sub);
    it_broker_stop(b);
}

/* [MQTT-4.4.0-1] a QoS 2 delivery whose PUBREC arrived but whose PUBCOMP
 * did not: on resume the broker re-sends the PUBREL (62 02 ID), not the
 * PUBLISH. */
static void test_pubrel_resent_on_resume(void **state)
{
    it_broker *b = it_broker_start(NULL);
    uint16_t port = it_broker_port(b);
    it_conn *sub = it_client_sp(port, "flaky", false, false);
    it_subscribe(sub, "sess/t", 2);
    it_conn *pub = it_client(port, "pub", true);
    it_publish_str(pub, "sess/t", "q2", 2, false);
    mqtt_publish p;
    it_recv_publish(sub, &p, IT_TIMEOUT);
    uint16_t id = p.packet_id;
    uint8_t hi = (uint8_t)(id >> 8), lo = (uint8_t)id;
    uint8_t pubrec[4] = { 0x50, 0x02, hi, lo };
    uint8_t pubrel[4] = { 0x62, 0x02, hi, lo };
    uint8_t pubcomp[4] = { 0x70, 0x02, hi, lo };
    it_send(sub, pubrec, 4);
    it_expect_bytes(sub, pubrel, 4, IT_TIMEOUT);
    it_close(sub); /* no PUBCOMP */
    sub = it_connect(port);
    assert_true(it_mqtt_connect(sub, "flaky", false, 0, NULL));
    it_expect_bytes(sub, pubrel, 4, IT_TIMEOUT);
    it_send(sub, pubcomp, 4);
    it_ping(sub);
    it_broker_stop(b);
}

/* [MQTT-4.3.3-2] [MQTT-4.4.0-1] the broker's receiver-side QoS 2 state
 * survives a publisher reconnect: the publisher got PUBREC, lost the
 * connection, resumes and sends PUBREL; it gets PUBCOMP and the message
 * reaches the subscriber exactly once. */
static void test_inbound_qos2_completes_after_publisher_resume(void **state)
{
    it_broker *b = it_broker_start(NULL);
    uint16_t port = it_broker_port(b);
    it_conn *sub = it_client(port, "sub", true);
    it_subscribe(sub, "sess/q2", 2);
    it_conn *pub = it_client_sp(port, "pub-q2", false, false);
    size_t n;
    uint8_t *pkt = it_encode_publish("sess/q2", "once", 4, 2, false, false, 9, &n);
    it_send(pub, pkt, n);
    free(pkt);
    IT_EXPECT(pub, 0x50, 0x02, 0x00, 0x09);
    it_close(pub);
    pub = it_connect(port);
    assert_true(it_mqtt_connect(pub, "pub-q2", false, 0, NULL));
    IT_SEND(pub, 0x62, 0x02, 0x00, 0x09);
    IT_EXPECT(pub, 0x70, 0x02, 0x00, 0x09);
    it_publish_str(pub, "sess/q2", "marker", 2, false);
    it_expect_publish(sub, "sess/q2", "once", 2, false);
    it_expect_publish(sub, "sess/q2", "marker", 2, false);
    it_broker_stop(b);
}

/* [MQTT-3.1.4-2] [MQTT-4.1.0-2] takeover by a persistent connection keeps
 * the session:
 * the old connection is closed, the new one gets session present 1 and
 * the subscription. */
static void test_takeover_keeps_persistent_session(void **state)
{
    it_broker *b = it_broker_start(NULL);
    uint16_t port = it_broker_port(b);
    it_conn *first = it_client_sp(port, "dup-id", false, false);
    it_subscribe(first, "sess/t", 1);
    it_conn *second = it_client_sp(port, "dup-id", false, true);
    it_expect_closed(first, IT_TIMEOUT);
    it_conn *pub = it_client(port, "pub", true);
    it_publish_str(pub, "sess/t", "to-second", 1, false);
    it_expect_publish(second, "sess/t", "to-second", 1, false);
    it_broker_stop(b);
}

/* max_inflight_messages 2: with no acks, exactly two QoS 1 deliveries are
 * outstanding; each PUBACK releases the next, in order [MQTT-4.6.0-6]. */
static void test_max_inflight_messages_limits_unacked_deliveries(void **state)
{
    it_broker *b = it_broker_start("max_inflight_messages 2");
    uint16_t port = it_broker_port(b);
    it_conn *sub = it_client(port, "slow", true);
    it_subscribe(sub, "in/t", 1);
    it_conn *pub = it_client(port, "pub", true);
    static const char *const msgs[] = { "m1", "m2", "m3", "m4" };
    for (int i = 0; i < 4; i++)
        it_publish_str(pub, "in/t", msgs[i], 1, false);
    mqtt_publish p;
    uint16_t ids[4];
    for (int i = 0; i < 2; i++) {
        it_recv_publish(sub, &p, IT_TIMEOUT);
        if (!it_span_eq(p.payload, msgs[i]))
            it_fail("delivery %d out of order", i);
        ids[i] = p.packet_id;
    }
    /* A third delivery would be immediate; a short watch shows it is held. */
    it_expect_silence(sub, IT_QUIET);
    for (int i = 2; i < 4; i++) {
        uint8_t puback[4] = { 0x40, 0x02, (uint8_t)(ids[i - 2] >> 8), (uint8_t)ids[i - 2] };
        it_send(sub, puback, 4);
        it_recv_publish(sub, &p, IT_TIMEOUT);
        if (!it_span_eq(p.payload, msgs[i]))
            it_fail("delivery %d out of order", i);
        ids[i] = p.packet_id;
    }
    it_broker_stop(b);
}

/* max_queued_messages 3: of five QoS 1 messages published while offline,
 * three are kept (in publication order) and delivered on resume. */
static void test_max_queued_messages_caps_offline_queue(void **state)
{
    it_broker *b = it_broker_start("max_queued_messages 3\nmax_inflight_messages 10");
    uint16_t port = it_broker_port(b);
    it_conn *sub = it_client_sp(port, "queued", false, false);
    it_subscribe(sub, "q/t", 1);
    it_disconnect(sub);
    it_conn *pub = it_client(port, "pub", true);
    for (int i = 0; i < 5; i++) {
        char payload[32];
        snprintf(payload, sizeof payload, "q%d", i);
        it_publish_str(pub, "q/t", payload, 1, false);
    }
    sub = it_client_sp(port, "queued", false, true);
    int last = -1;
    for (int i = 0; i < 3; i++) {
        mqtt_publish p;
        it_recv_publish(sub, &p, IT_TIMEOUT);
        int k = p.payload.len == 2 ? p.payload.ptr[1] - '0' : -1;
        if (k <= last || k > 4)
            it_fail("queued message %d is '%.*s', out of order", i, (int)p.payload.len,
                    (const char *)p.payload.ptr);
        last = k;
        it_ack(sub, &p);
    }
    it_ping(sub); /* and no fourth one */
    it_broker_stop(b);
}

/* [MQTT-3.1.3-2] many persistent sessions resumed after a disconnect each
 * get their own queued message: sessions are keyed by client id. */
static void test_each_session_gets_its_own_queue(void **state)
{
    enum { N = 10 };
    it_broker *b = it_broker_start(NULL);
    uint16_t port = it_broker_port(b);
    char id[32], topic[32];
    for (int i = 0; i < N; i++) {
        snprintf(id, sizeof id, "s%d", i);
        snprintf(topic, sizeof topic, "own/%d", i);
        it_conn *c = it_client_sp(port, id, false, false);
        it_subscribe(c, topic, 1);
        it_disconnect(c);
    }
    it_conn *pub = it_client(port, "pub", true);
    for (int i = 0; i < N; i++) {
        snprintf(topic, sizeof topic, "own/%d", i);
        it_publish_str(pub, topic, topic, 1, false);
    }
    for (int i = 0; i < N; i++) {
        snprintf(id, sizeof id, "s%d", i);
        snprintf(topic, sizeof topic, "own/%d", i);
        it_conn *c = it_client_sp(port, id, false, true);
        it_expect_publish(c, topic, topic, 1, false);
        it_ping(c);
    }
    it_broker_stop(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        IT_TEST(test_offline_qos1_delivered_on_resume),
        IT_TEST(test_offline_qos2_delivered_on_resume),
        IT_TEST(test_offline_qos0_not_queued),
        IT_TEST(test_subscriptions_survive_resume),
        IT_TEST(test_clean_session_subscriptions_end_with_connection),
        IT_TEST(test_clean_reconnect_discards_queued_messages),
        IT_TEST(test_clean_session_discarded_after_abrupt_close),
        IT_TEST(test_queued_messages_precede_new_ones_on_resume),
        IT_TEST(test_unacked_qos1_redelivered_with_dup_on_resume),
        IT_TEST(test_unacked_messages_resent_in_original_order),
        IT_TEST(test_pubrel_resent_on_resume),
        IT_TEST(test_inbound_qos2_completes_after_publisher_resume),
        IT_TEST(test_takeover_keeps_persistent_session),
        IT_TEST(test_max_inflight_messages_limits_unacked_deliveries),
        IT_TEST(test_max_queued_messages_caps_offline_queue),
        IT_TEST(test_each_session_gets_its_own_queue),
    };
    return IT_RUN(tests);
}
