/*
 * it_retain_will.c - retained messages (set, replace, clear, RETAIN flag on
 * delivery) and will messages (when published, with which QoS and RETAIN).
 */
#include "harness.h"

/* [MQTT-3.3.1-6] a new subscription gets the retained message, with
 * [MQTT-3.3.1-8] RETAIN=1. Exact bytes: 31 len topic payload. */
static void test_retained_delivered_on_subscribe_with_retain_1(void **state)
{
    it_broker *b = it_broker_start(NULL);
    it_conn *pub = it_client(it_broker_port(b), "pub", true);
    it_publish_str(pub, "r/t", "kept", 0, true);
    it_conn *sub = it_client(it_broker_port(b), "sub", true);
    it_subscribe(sub, "r/t", 0);
    IT_EXPECT(sub, 0x31, 0x09, 0x00, 0x03, 'r', '/', 't', 'k', 'e', 'p', 't');
    it_ping(sub);
    it_broker_stop(b);
}

/* [MQTT-3.3.1-9] a live delivery to an existing subscription has RETAIN=0
 * even though it was published with RETAIN=1. */
static void test_retained_publish_forwarded_live_with_retain_0(void **state)
{
    it_broker *b = it_broker_start(NULL);
    it_conn *sub = it_client(it_broker_port(b), "sub", true);
    it_subscribe(sub, "r/t", 1);
    it_conn *pub = it_client(it_broker_port(b), "pub", true);
    it_publish_str(pub, "r/t", "live", 1, true);
    it_expect_publish(sub, "r/t", "live", 1, false);
    it_broker_stop(b);
}

/* [MQTT-3.3.1-5] a newer retained message replaces the stored one. */
static void test_retained_replaced_by_newer(void **state)
{
    it_broker *b = it_broker_start(NULL);
    it_conn *pub = it_client(it_broker_port(b), "pub", true);
    it_publish_str(pub, "r/t", "old", 1, true);
    it_publish_str(pub, "r/t", "new", 1, true);
    it_conn *sub = it_client(it_broker_port(b), "sub", true);
    it_subscribe(sub, "r/t", 1);
    it_expect_publish(sub, "r/t", "new", 1, true);
    it_ping(sub);
    it_broker_stop(b);
}

/* [MQTT-3.3.1-10] a retained publish with an empty payload removes the
 * retained message; [MQTT-3.3.1-11] and is not itself stored. */
static void test_retained_cleared_by_empty_payload(void **state)
{
    it_broker *b = it_broker_start(NULL);
    it_conn *pub = it_client(it_broker_port(b), "pub", true);
    it_publish_str(pub, "r/t", "gone-soon", 1, true);
    it_publish(pub, "r/t", "", 0, 1, true);
    it_conn *sub = it_client(it_broker_port(b), "sub", true);
    it_subscribe(sub, "r/t", 1);
    it_ping(sub); /* retained messages are sent before the PINGREQ is handled */
    it_broker_stop(b);
}

/* [MQTT-3.3.1-10] the empty retained publish is still forwarded to
 * existing subscribers as a normal (RETAIN=0) message. */
static void test_empty_retained_publish_forwarded_to_subscribers(void **state)
{
    it_broker *b = it_broker_start(NULL);
    it_conn *sub = it_client(it_broker_port(b), "sub", true);
    it_subscribe(sub, "r/t", 1);
    it_conn *pub = it_client(it_broker_port(b), "pub", true);
    it_publish(pub, "r/t", "", 0, 1, true);
    it_expect_publish(sub, "r/t", "", 1, false);
    it_broker_stop(b);
}

/* [MQTT-3.3.1-7] a QoS 0 retained publish replaces a QoS 1 one. */
static void test_qos0_retained_replaces_qos1_retained(void **state)
{
    it_broker *b = it_broker_start(NULL);
    it_conn *pub = it_client(it_broker_port(b), "pub", true);
    it_publish_str(pub, "r/t", "q1", 1, true);
    it_publish_str(pub, "r/t", "q0", 0, true);
    it_ping(pub); /* the QoS 0 publish has been handled */
    it_conn *sub = it_client(it_broker_port(b), "sub", true);
    it_subscribe(sub, "r/t", 2);
    it_expect_publish(sub, "r/t", "q0", 0, true);
    it_ping(sub);
    it_broker_stop(b);
}

/* [MQTT-3.8.4-6] a retained message is sent at min(stored QoS, granted). */
static void test_retained_qos_is_min_of_stored_and_granted(void **state)
{
    it_broker *b = it_broker_start(NULL);
    it_conn *pub = it_client(it_broker_port(b), "pub", true);
    it_publish_str(pub, "r/t", "two", 2, true);
    it_conn *sub = it_client(it_broker_port(b), "sub", true);
    it_subscribe(sub, "r/t", 1);
    it_expect_publish(sub, "r/t", "two", 1, true);
    it_broker_stop(b);
}

/* [MQTT-3.3.1-6] a wildcard subscription gets the retained message of
 * every matching topic (in any order), and only those. */
static void test_wildcard_subscribe_gets_every_matching_retained(void **state)
{
    it_broker *b = it_broker_start(NULL);
    it_conn *pub = it_client(it_broker_port(b), "pub", true);
    it_publish_str(pub, "w/1", "one", 1, true);
    it_publish_str(pub, "w/2", "two", 1, true);
    it_publish_str(pub, "w/3/deep", "three", 1, true);
    it_publish_str(pub, "other", "no", 1, true);
    it_conn *sub = it_client(it_broker_port(b), "sub", true);
    it_subscribe(sub, "w/+", 1);
    bool seen1 = false, seen2 = false;
    for (int i = 0; i < 2; i++) {
        mqtt_publish p;
        it_recv_publish(sub, &p, IT_TIMEOUT);
        if (!p.retain || p.qos != 1)
            it_fail("retained delivery with RETAIN %d QoS %u", p.retain, p.qos);
        if (it_span_eq(p.topic, "w/1") && it_span_eq(p.payload, "one") && !seen1)
            seen1 = true;
        else if (it_span_eq(p.topic, "w/2") && it_span_eq(p.payload, "two") && !seen2)
            seen2 = true;
        else
            it_fail("unexpected retained message on '%.*s'", (int)p.topic.len,
                    (const char *)p.topic.ptr);
        it_ack(sub, &p);
    }
    it_ping(sub);
    it_broker_stop(b);
}

/* Retained messages are sent again for every new subscription, also when
 * the same client subscribes again [MQTT-3.8.4-3]. */
static void test_resubscribe_resends_retained(void **state)
{
    it_broker *b = it_broker_start(NULL);
    it_conn *pub = it_client(it_broker_port(b), "pub", true);
    it_publish_str(pub, "r/t", "again", 0, true);
    it_conn *sub = it_client(it_broker_port(b), "sub", true);
    it_subscribe(sub, "r/t", 0);
    it_expect_publish(sub, "r/t", "again", 0, true);
    it_subscribe(sub, "r/t", 0);
    it_expect_publish(sub, "r/t", "again", 0, true);
    it_broker_stop(b);
}

/* [MQTT-3.3.1-12] a RETAIN=0 publish is not stored and leaves the retained
 * message of its topic alone. */
static void test_non_retained_publish_keeps_retained_message(void **state)
{
    it_broker *b = it_broker_start(NULL);
    it_conn *pub = it_client(it_broker_port(b), "pub", true);
    it_publish_str(pub, "r/t", "retained", 1, true);
    it_publish_str(pub, "r/t", "transient", 1, false);
    it_conn *sub = it_client(it_broker_port(b), "sub", true);
    it_subscribe(sub, "r/t", 1);
    it_expect_publish(sub, "r/t", "retained", 1, true);
    it_ping(sub);
    it_broker_stop(b);
}

/* [MQTT-3.1.2-7] retained messages are not session state: they outlive the
 * publisher's (clean) session. */
static void test_retained_outlives_publisher_session(void **state)
{
    it_broker *b = it_broker_start(NULL);
    it_conn *pub = it_client(it_broker_port(b), "pub", true);
    it_publish_str(pub, "r/t", "lasting", 1, true);
    it_disconnect(pub);
    it_conn *sub = it_client(it_broker_port(b), "sub", true);
    it_subscribe(sub, "r/t", 1);
    it_expect_publish(sub, "r/t", "lasting", 1, true);
    it_broker_stop(b);
}

/* ---- will messages ------------------------------------------------------ */

/* [MQTT-3.1.2-8] the will is published when the network connection closes
 * without DISCONNECT, with its own QoS ([MQTT-3.1.2-14]: QoS 1, capped by
 * nothing here since the subscription is QoS 2). */
static void test_will_published_on_socket_close(void **state)
{
    it_broker *b = it_broker_start(NULL);
    it_conn *sub = it_client(it_broker_port(b), "sub", true);
    it_subscribe(sub, "will/t", 2);
    it_conn *w = it_connect(it_broker_port(b));
    it_will will = { "will/t", "gone", 1, false };
    it_mqtt_connect(w, "mortal", true, 0, &will);
    it_ping(w);
    it_close(w);
    it_expect_publish(sub, "will/t", "gone", 1, false);
    it_broker_stop(b);
}

/* [MQTT-3.1.2-8] a client that half-closes (shutdown of its sending side,
 * still reading) without DISCONNECT has ended the connection abnormally:
 * the broker closes it and publishes the will. */
static void test_will_published_on_half_close(void **state)
{
    it_broker *b = it_broker_start(NULL);
    it_conn *sub = it_client(it_broker_port(b), "sub", true);
    it_subscribe(sub, "will/t", 1);
    it_conn *w = it_connect(it_broker_port(b));
    it_will will = { "will/t", "half", 1, false };
    it_mqtt_connect(w, "halfway", true, 0, &will);
    it_shutdown_write(w);
    it_expect_closed(w, IT_TIMEOUT);
    it_expect_publish(sub, "will/t", "half", 1, false);
    it_broker_stop(b);
}

/* [MQTT-3.1.2-8] also when the server closes the connection because the
 * keep alive ran out [MQTT-3.1.2-24]. */
static void test_will_published_on_keepalive_timeout(void **state)
{
    it_broker *b = it_broker_start(NULL);
    it_conn *sub = it_client(it_broker_port(b), "sub", true);
    it_subscribe(sub, "will/t", 0);
    it_conn *w = it_connect(it_broker_port(b));
    it_will will = { "will/t", "timed-out", 0, false };
    it_mqtt_connect(w, "sleeper", true, 1, &will);
    long start = it_now_ms();
    mqtt_publish p;
    it_recv_publish(sub, &p, 6000);
    long ms = it_now_ms() - start;
    if (!it_span_eq(p.topic, "will/t") || !it_span_eq(p.payload, "timed-out") || p.qos != 0)
        it_fail("unexpected will message");
    if (ms < 1250)
        it_fail("will published after %ld ms, before 1.5x keep alive", ms);
    it_expect_closed(w, IT_TIMEOUT);
    it_broker_stop(b);
}

/* [MQTT-3.1.2-8] also when the server closes the connection because of a
 * protocol error (here a QoS 3 PUBLISH). */
static void test_will_published_on_protocol_violation(void **state)
{
    it_broker *b = it_broker_start(NULL);
    it_conn *sub = it_client(it_broker_port(b), "sub", true);
    it_subscribe(sub, "will/t", 1);
    it_conn *w = it_connect(it_broker_port(b));
    it_will will = { "will/t", "violated", 1, false };
    it_mqtt_connect(w, "rulebreaker", true, 0, &will);
    IT_SEND(w, 0x36, 0x05, 0x00, 0x01, 'x', 0x00, 0x01);
    it_expect_closed(w, IT_TIMEOUT);
    it_expect_publish(sub, "will/t", "violated", 1, false);
    it_broker_stop(b);
}

/* [MQTT-3.1.2-10] [MQTT-3.14.4-3] after DISCONNECT the will is discarded. */
static void test_will_not_published_after_disconnect(void **state)
{
    it_broker *b = it_broker_start(NULL);
    it_conn *sub = it_client(it_broker_port(b), "sub", true);
    it_subscribe(sub, "will/t", 0);
    it_conn *w = it_connect(it_broker_port(b));
    it_will will = { "will/t", "should-not", 0, false };
    it_mqtt_connect(w, "polite", true, 0, &will);
    it_disconnect(w);
    /* A marker published after the connection is gone arrives first. */
    it_conn *pub = it_client(it_broker_port(b), "pub", true);
    it_publish_str(pub, "will/t", "marker", 0, false);
    it_expect_publish(sub, "will/t", "marker", 0, false);
    it_ping(sub);
    it_broker_stop(b);
}

/* [MQTT-3.1.2-12] will flag 0: nothing is published when the connection
 * drops. A "#" subscriber's first message is a later marker. */
static void test_no_will_published_without_will_flag(void **state)
{
    it_broker *b = it_broker_start(NULL);
    it_conn *sub = it_client(it_broker_port(b), "sub", true);
    it_subscribe(sub, "#", 0);
    it_conn *w = it_client(it_broker_port(b), "willless", true);
    it_ping(w);
    it_close(w);
    /* The drop reached the broker before the marker's publisher even
     * connected, so a will (wrongly) published for it would come first. */
    it_conn *pub = it_client(it_broker_port(b), "pub", true);
    it_publish_str(pub, "marker", "m", 0, false);
    it_expect_publish(sub, "marker", "m", 0, false);
    it_broker_stop(b);
}

/* [MQTT-3.14.1-1] a DISCONNECT with reserved flag bits is a protocol
 * violation, not a DISCONNECT: the connection is closed and the will is
 * published [MQTT-3.1.2-8]. */
static void test_disconnect_with_reserved_flags_publishes_will(void **state)
{
    it_broker *b = it_broker_start(NULL);
    it_conn *sub = it_client(it_broker_port(b), "sub", true);
    it_subscribe(sub, "will/t", 0);
    it_conn *w = it_connect(it_broker_port(b));
    it_will will = { "will/t", "bad-disconnect", 0, false };
    it_mqtt_connect(w, "sloppy", true, 0, &will);
    IT_SEND(w, 0xe1, 0x00);
    it_expect_closed(w, IT_TIMEOUT);
    it_expect_publish(sub, "will/t", "bad-disconnect", 0, false);
    it_broker_stop(b);
}

/* [MQTT-3.1.2-17] will retain 1: the will is stored as retained, so a later
 * subscriber gets it with RETAIN=1, while the live subscriber got RETAIN=0
 * [MQTT-3.3.1-9]. */
static void test_will_with_retain_is_stored_as_retained(void **state)
{
    it_broker *b = it_broker_start(NULL);
    it_conn *sub = it_client(it_broker_port(b), "sub", true);
    it_subscribe(sub, "will/status", 1);
    it_conn *w = it_connect(it_broker_port(b));
    it_will will = { "will/status", "offline", 1, true };
    it_mqtt_connect(w, "device", true, 0, &will);
    it_ping(w);
    it_close(w);
    it_expect_publish(sub, "will/status", "offline", 1, false);
    it_conn *late = it_client(it_broker_port(b), "late", true);
    it_subscribe(late, "will/status", 1);
    it_expect_publish(late, "will/status", "offline", 1, true);
    it_broker_stop(b);
}

/* [MQTT-3.1.2-16] will retain 0: not stored as retained. */
static void test_will_without_retain_is_not_retained(void **state)
{
    it_broker *b = it_broker_start(NULL);
    it_conn *sub = it_client(it_broker_port(b), "sub", true);
    it_subscribe(sub, "will/status", 1);
    it_conn *w = it_connect(it_broker_port(b));
    it_will will = { "will/status", "offline", 1, false };
    it_mqtt_connect(w, "device", true, 0, &will);
    it_ping(w);
    it_close(w);
    it_expect_publish(sub, "will/status", "offline", 1, false);
    it_conn *late = it_client(it_broker_port(b), "late", true);
    it_subscribe(late, "will/status", 1);
    it_ping(late);
    it_broker_stop(b);
}

/* [MQTT-3.1.2-14] will QoS 2 is delivered at QoS 2 to a QoS 2 subscriber. */
static void test_will_qos2_delivered_at_qos2(void **state)
{
    it_broker *b = it_broker_start(NULL);
    it_conn *sub = it_client(it_broker_port(b), "sub", true);
    it_subscribe(sub, "will/t", 2);
    it_conn *w = it_connect(it_broker_port(b));
    it_will will = { "will/t", "q2", 2, false };
    it_mqtt_connect(w, "q2will", true, 0, &will);
    it_ping(w);
    it_close(w);
    it_expect_publish(sub, "will/t", "q2", 2, false);
    it_ping(sub);
    it_broker_stop(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        IT_TEST(test_retained_delivered_on_subscribe_with_retain_1),
        IT_TEST(test_retained_publish_forwarded_live_with_retain_0),
        IT_TEST(test_retained_replaced_by_newer),
        IT_TEST(test_retained_cleared_by_empty_payload),
        IT_TEST(test_empty_retained_publish_forwarded_to_subscribers),
        IT_TEST(test_qos0_retained_replaces_qos1_retained),
        IT_TEST(test_retained_qos_is_min_of_stored_and_granted),
        IT_TEST(test_wildcard_subscribe_gets_every_matching_retained),
        IT_TEST(test_resubscribe_resends_retained),
        IT_TEST(test_non_retained_publish_keeps_retained_message),
        IT_TEST(test_retained_outlives_publisher_session),
        IT_TEST(test_will_published_on_socket_close),
        IT_TEST(test_will_published_on_half_close),
        IT_TEST(test_will_published_on_keepalive_timeout),
        IT_TEST(test_will_published_on_protocol_violation),
        IT_TEST(test_will_not_published_after_disconnect),
        IT_TEST(test_no_will_published_without_will_flag),
        IT_TEST(test_disconnect_with_reserved_flags_publishes_will),
        IT_TEST(test_will_with_retain_is_stored_as_retained),
        IT_TEST(test_will_without_retain_is_not_retained),
        IT_TEST(test_will_qos2_delivered_at_qos2),
    };
    return IT_RUN(tests);
}
