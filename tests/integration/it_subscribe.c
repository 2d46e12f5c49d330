/*
 * it_subscribe.c - SUBSCRIBE / SUBACK, UNSUBSCRIBE / UNSUBACK, topic
 * matching and the anonymous_deny_subscribe policy.
 *
 * Absence checks use a marker from the same publisher, as in it_publish.c.
 */
#include "harness.h"

/* Publishes topic then a marker from pub; sub's next message must be the
 * marker: topic was not delivered. */
static void expect_not_delivered(it_conn *pub, it_conn *sub, const char *topic)
{
    it_publish_str(pub, topic, "must-not-arrive", 0, false);
    it_publish_str(pub, "marker", "m", 0, false);
    it_expect_publish(sub, "marker", "m", 0, false);
}

/* [MQTT-3.8.4-1] SUBACK answers SUBSCRIBE with [MQTT-3.8.4-2] [MQTT-2.3.1-7]
 * the same id and [MQTT-3.8.4-5] one code per filter in order;
 * [MQTT-3.9.3-1]; [MQTT-3.8.4-4] one combined SUBACK. */
static void test_suback_grants_requested_qos_per_filter_exact(void **state)
{
    it_broker *b = it_broker_start(NULL);
    it_conn *c = it_client(it_broker_port(b), "sub", true);
    /* SUBSCRIBE id 0x0102: "a" q0, "b/+" q1, "c/#" q2. */
    IT_SEND(c, 0x82, 0x12, 0x01, 0x02, 0x00, 0x01, 'a', 0x00, 0x00, 0x03, 'b', '/', '+',
            0x01, 0x00, 0x03, 'c', '/', '#', 0x02);
    IT_EXPECT(c, 0x90, 0x05, 0x01, 0x02, 0x00, 0x01, 0x02);
    it_broker_stop(b);
}

/* anonymous_deny_subscribe: an anonymous client gets 0x80 [MQTT-3.9.3-2]
 * for exactly that filter, the others are granted. */
static void test_anonymous_deny_subscribe_gets_0x80_for_that_filter(void **state)
{
    it_broker *b = it_broker_start("anonymous_deny_subscribe test/nosubscribe");
    it_conn *c = it_client(it_broker_port(b), "anon", true);
    static const char *const filters[] = { "test/a", "test/nosubscribe", "test/#" };
    static const uint8_t qos[] = { 0, 1, 2 };
    static const uint8_t codes[] = { 0x00, 0x80, 0x02 };
    it_subscribe_n(c, filters, qos, 3, codes);
    it_broker_stop(b);
}

/* A refused filter gets no messages: "test/nosubscribe" denied, "marker"
 * granted; a publication to the denied topic is not delivered. */
static void test_denied_filter_receives_nothing(void **state)
{
    it_broker *b = it_broker_start("anonymous_deny_subscribe test/nosubscribe");
    it_conn *c = it_client(it_broker_port(b), "anon", true);
    static const char *const filters[] = { "test/nosubscribe", "marker" };
    static const uint8_t qos[] = { 0, 0 };
    static const uint8_t codes[] = { 0x80, 0x00 };
    it_subscribe_n(c, filters, qos, 2, codes);
    it_conn *pub = it_client(it_broker_port(b), "pub", true);
    expect_not_delivered(pub, c, "test/nosubscribe");
    it_broker_stop(b);
}

/* The deny list is repeatable and each entry applies. */
static void test_anonymous_deny_subscribe_repeatable(void **state)
{
    it_broker *b = it_broker_start("anonymous_deny_subscribe deny/one\n"
                                   "anonymous_deny_subscribe deny/two");
    it_conn *c = it_client(it_broker_port(b), "anon", true);
    static const char *const filters[] = { "deny/one", "deny/two", "deny/three" };
    static const uint8_t qos[] = { 1, 1, 1 };
    static const uint8_t codes[] = { 0x80, 0x80, 0x01 };
    it_subscribe_n(c, filters, qos, 3, codes);
    it_broker_stop(b);
}

/* [MQTT-3.10.4-4] UNSUBACK B0 02 with [MQTT-2.3.1-7] the same id;
 * [MQTT-3.10.4-2] no new messages for that filter afterwards. */
static void test_unsubscribe_gets_unsuback_and_stops_delivery(void **state)
{
    it_broker *b = it_broker_start(NULL);
    it_conn *c = it_client(it_broker_port(b), "sub", true);
    it_subscribe(c, "u/t", 0);
    it_subscribe(c, "marker", 0);
    it_conn *pub = it_client(it_broker_port(b), "pub", true);
    it_publish_str(pub, "u/t", "before", 0, false);
    it_expect_publish(c, "u/t", "before", 0, false);
    /* UNSUBSCRIBE id 0x4242 "u/t". */
    IT_SEND(c, 0xa2, 0x07, 0x42, 0x42, 0x00, 0x03, 'u', '/', 't');
    IT_EXPECT(c, 0xb0, 0x02, 0x42, 0x42);
    expect_not_delivered(pub, c, "u/t");
    it_broker_stop(b);
}

/* [MQTT-3.10.4-6] an UNSUBSCRIBE of several filters removes each and is
 * answered by one UNSUBACK. */
static void test_unsubscribe_several_filters_one_unsuback(void **state)
{
    it_broker *b = it_broker_start(NULL);
    it_conn *c = it_client(it_broker_port(b), "sub", true);
    it_subscribe(c, "u/1", 0);
    it_subscribe(c, "u/2", 0);
    it_subscribe(c, "marker", 0);
    /* UNSUBSCRIBE id 0x0033 "u/1" "u/2". */
    IT_SEND(c, 0xa2, 0x0c, 0x00, 0x33, 0x00, 0x03, 'u', '/', '1', 0x00, 0x03, 'u', '/',
            '2');
    IT_EXPECT(c, 0xb0, 0x02, 0x00, 0x33);
    it_conn *pub = it_client(it_broker_port(b), "pub", true);
    it_publish_str(pub, "u/1", "no", 0, false);
    expect_not_delivered(pub, c, "u/2");
    it_broker_stop(b);
}

/* [MQTT-3.10.4-3] unsubscribing does not abandon a QoS 2 delivery already
 * under way: the PUBREL still follows our PUBREC. */
static void test_unsubscribe_completes_inflight_qos2_delivery(void **state)
{
    it_broker *b = it_broker_start(NULL);
    it_conn *c = it_client(it_broker_port(b), "sub", true);
    it_subscribe(c, "u/q2", 2);
    it_conn *pub = it_client(it_broker_port(b), "pub", true);
    it_publish_str(pub, "u/q2", "in-flight", 2, false);
    mqtt_publish p;
    it_recv_publish(c, &p, IT_TIMEOUT);
    uint8_t hi = (uint8_t)(p.packet_id >> 8), lo = (uint8_t)p.packet_id;
    it_unsubscribe(c, "u/q2");
    uint8_t pubrec[4] = { 0x50, 0x02, hi, lo };
    it_send(c, pubrec, 4);
    uint8_t pubrel[4] = { 0x62, 0x02, hi, lo };
    it_expect_bytes(c, pubrel, 4, IT_TIMEOUT);
    uint8_t pubcomp[4] = { 0x70, 0x02, hi, lo };
    it_send(c, pubcomp, 4);
    it_ping(c);
    it_broker_stop(b);
}

/* [MQTT-3.8.4-4] a SUBSCRIBE naming one filter twice acts as two
 * SUBSCRIBEs in a row: the second replaces the first [MQTT-3.8.4-3], so
 * delivery happens once, at the second QoS. */
static void test_same_filter_twice_in_one_subscribe(void **state)
{
    it_broker *b = it_broker_start(NULL);
    it_conn *c = it_client(it_broker_port(b), "sub", true);
    static const char *const filters[] = { "twice/t", "twice/t", "marker" };
    static const uint8_t qos[] = { 0, 2, 2 };
    it_subscribe_n(c, filters, qos, 3, qos);
    it_conn *pub = it_client(it_broker_port(b), "pub", true);
    it_publish_str(pub, "twice/t", "x", 2, false);
    it_publish_str(pub, "marker", "m", 2, false);
    it_expect_publish(c, "twice/t", "x", 2, false);
    it_expect_publish(c, "marker", "m", 2, false);
    it_broker_stop(b);
}

/* [MQTT-3.10.4-5] UNSUBACK even when no filter matched. */
static void test_unsubscribe_unknown_filter_gets_unsuback(void **state)
{
    it_broker *b = it_broker_start(NULL);
    it_conn *c = it_client(it_broker_port(b), "sub", true);
    it_unsubscribe(c, "never/subscribed");
    it_ping(c);
    it_broker_stop(b);
}

/* [MQTT-3.10.4-1] filters are compared character by character: unsubscribing
 * "u/+" does not remove "u/#". */
static void test_unsubscribe_removes_only_identical_filter(void **state)
{
    it_broker *b = it_broker_start(NULL);
    it_conn *c = it_client(it_broker_port(b), "sub", true);
    it_subscribe(c, "u/#", 0);
    it_subscribe(c, "u/+", 0);
    it_unsubscribe(c, "u/+");
    it_conn *pub = it_client(it_broker_port(b), "pub", true);
    it_publish_str(pub, "u/x", "still", 0, false);
    it_expect_publish(c, "u/x", "still", 0, false);
    it_ping(c);
    it_broker_stop(b);
}

/* [MQTT-3.8.4-3] subscribing again to the same filter replaces the
 * subscription (new QoS), and messages are not duplicated. */
static void test_resubscribe_replaces_qos(void **state)
{
    it_broker *b = it_broker_start(NULL);
    it_conn *c = it_client(it_broker_port(b), "sub", true);
    it_subscribe(c, "re/t", 2);
    it_subscribe(c, "re/t", 0);
    it_subscribe(c, "marker", 0);
    it_conn *pub = it_client(it_broker_port(b), "pub", true);
    it_publish_str(pub, "re/t", "x", 2, false);
    it_publish_str(pub, "marker", "m", 0, false);
    it_expect_publish(c, "re/t", "x", 0, false);
    it_expect_publish(c, "marker", "m", 0, false);
    it_broker_stop(b);
}

/* [MQTT-4.7.1-3] '+' matches exactly one level; [MQTT-3.3.2-3] the topic
 * name sent is the published one, which matches the filter. */
static void test_plus_matches_exactly_one_level(void **state)
{
    it_broker *b = it_broker_start(NULL);
    it_conn *c = it_client(it_broker_port(b), "sub", true);
    it_subscribe(c, "sport/+/player", 0);
    it_subscribe(c, "marker", 0);
    it_conn *pub = it_client(it_broker_port(b), "pub", true);
    it_publish_str(pub, "sport/tennis/player", "yes", 0, false);
    it_expect_publish(c, "sport/tennis/player", "yes", 0, false);
    expect_not_delivered(pub, c, "sport/player");
    expect_not_delivered(pub, c, "sport/a/b/player");
    it_broker_stop(b);
}

/* [MQTT-4.7.1-2] '#' matches the parent level and every level below. */
static void test_hash_matches_parent_and_children(void **state)
{
    it_broker *b = it_broker_start(NULL);
    it_conn *c = it_client(it_broker_port(b), "sub", true);
    it_subscribe(c, "sport/#", 0);
    it_conn *pub = it_client(it_broker_port(b), "pub", true);
    it_publish_str(pub, "sport", "parent", 0, false);
    it_publish_str(pub, "sport/a", "child", 0, false);
    it_publish_str(pub, "sport/a/b/c", "deep", 0, false);
    it_expect_publish(c, "sport", "parent", 0, false);
    it_expect_publish(c, "sport/a", "child", 0, false);
    it_expect_publish(c, "sport/a/b/c", "deep", 0, false);
    it_broker_stop(b);
}

/* Section 4.7.1.3: "+" does not match "/finance" (two levels), "+/+" and
 * "/+" do. */
static void test_plus_counts_empty_leading_level(void **state)
{
    it_broker *b = it_broker_start(NULL);
    it_conn *one = it_client(it_broker_port(b), "one", true);
    it_subscribe(one, "+", 0);
    it_subscribe(one, "marker", 0);
    it_conn *two = it_client(it_broker_port(b), "two", true);
    it_subscribe(two, "/+", 0);
    it_conn *pub = it_client(it_broker_port(b), "pub", true);
    it_publish_str(pub, "/finance", "f", 0, false);
    it_expect_publish(two, "/finance", "f", 0, false);
    it_publish_str(pub, "marker", "m", 0, false);
    it_expect_publish(one, "marker", "m", 0, false);
    it_broker_stop(b);
}

/* [MQTT-4.7.3-4] topic names and filters are case sensitive. */
static void test_topic_matching_is_case_sensitive(void **state)
{
    it_broker *b = it_broker_start(NULL);
    it_conn *c = it_client(it_broker_port(b), "sub", true);
    it_subscribe(c, "Case/T", 0);
    it_subscribe(c, "marker", 0);
    it_conn *pub = it_client(it_broker_port(b), "pub", true);
    expect_not_delivered(pub, c, "case/t");
    it_publish_str(pub, "Case/T", "exact", 0, false);
    it_expect_publish(c, "Case/T", "exact", 0, false);
    it_broker_stop(b);
}

/* Empty levels are levels: "a//b" is matched by "a/+/b". */
static void test_empty_level_matched_by_plus(void **state)
{
    it_broker *b = it_broker_start(NULL);
    it_conn *c = it_client(it_broker_port(b), "sub", true);
    it_subscribe(c, "a/+/b", 0);
    it_conn *pub = it_client(it_broker_port(b), "pub", true);
    it_publish_str(pub, "a//b", "e", 0, false);
    it_expect_publish(c, "a//b", "e", 0, false);
    it_broker_stop(b);
}

/* A single-level "#" matches everything that does not start with '$'. */
static void test_hash_alone_matches_every_topic(void **state)
{
    it_broker *b = it_broker_start(NULL);
    it_conn *c = it_client(it_broker_port(b), "sub", true);
    it_subscribe(c, "#", 1);
    it_conn *pub = it_client(it_broker_port(b), "pub", true);
    it_publish_str(pub, "x", "1", 1, false);
    it_publish_str(pub, "/y/z", "2", 1, false);
    it_expect_publish(c, "x", "1", 1, false);
    it_expect_publish(c, "/y/z", "2", 1, false);
    it_broker_stop(b);
}

/* A subscription survives many unrelated subscribes and unsubscribes by
 * other clients (the subscription tree keeps shared nodes alive). */
static void test_other_clients_unsubscribing_keeps_subscription(void **state)
{
    it_broker *b = it_broker_start(NULL);
    it_conn *keep = it_client(it_broker_port(b), "keep", true);
    it_subscribe(keep, "tree/+/leaf", 1);
    it_conn *other = it_client(it_broker_port(b), "other", true);
    it_subscribe(other, "tree/+/leaf", 1);
    it_subscribe(other, "tree/a/leaf", 1);
    it_unsubscribe(other, "tree/+/leaf");
    it_unsubscribe(other, "tree/a/leaf");
    it_disconnect(other);
    it_conn *pub = it_client(it_broker_port(b), "pub", true);
    it_publish_str(pub, "tree/a/leaf", "alive", 1, false);
    it_expect_publish(keep, "tree/a/leaf", "alive", 1, false);
    it_broker_stop(b);
}

/* A client with a thousand subscriptions gets a message on each, and
 * dropping the connection frees them all (checked by the clean exit at stop
 * in the sanitizer build). */
static void test_thousand_subscriptions_then_abrupt_close(void **state)
{
    enum { N = 1000 };
    it_broker *b = it_broker_start(NULL);
    it_conn *c = it_client(it_broker_port(b), "many", true);
    char filter[32];
    for (int i = 0; i < N; i += 10) {
        const char *filters[10];
        char names[10][32];
        uint8_t qos[10];
        for (int k = 0; k < 10; k++) {
            snprintf(names[k], sizeof names[k], "many/%d/+", i + k);
            filters[k] = names[k];
            qos[k] = (uint8_t)((i + k) % 3);
        }
        it_subscribe_n(c, filters, qos, 10, qos);
    }
    it_conn *pub = it_client(it_broker_port(b), "pub", true);
    for (int i = 0; i < N; i += 97) {
        snprintf(filter, sizeof filter, "many/%d/x", i);
        it_publish_str(pub, filter, "hit", 2, false);
        it_expect_publish(c, filter, "hit", (uint8_t)(i % 3), false);
    }
    it_close(c);
    it_assert_serving(b);
    it_broker_stop(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        IT_TEST(test_suback_grants_requested_qos_per_filter_exact),
        IT_TEST(test_anonymous_deny_subscribe_gets_0x80_for_that_filter),
        IT_TEST(test_denied_filter_receives_nothing),
        IT_TEST(test_anonymous_deny_subscribe_repeatable),
        IT_TEST(test_unsubscribe_gets_unsuback_and_stops_delivery),
        IT_TEST(test_unsubscribe_several_filters_one_unsuback),
        IT_TEST(test_unsubscribe_completes_inflight_qos2_delivery),
        IT_TEST(test_same_filter_twice_in_one_subscribe),
        IT_TEST(test_unsubscribe_unknown_filter_gets_unsuback),
        IT_TEST(test_unsubscribe_removes_only_identical_filter),
        IT_TEST(test_resubscribe_replaces_qos),
        IT_TEST(test_plus_matches_exactly_one_level),
        IT_TEST(test_hash_matches_parent_and_children),
        IT_TEST(test_plus_counts_empty_leading_level),
        IT_TEST(test_topic_matching_is_case_sensitive),
        IT_TEST(test_empty_level_matched_by_plus),
        IT_TEST(test_hash_alone_matches_every_topic),
        IT_TEST(test_other_clients_unsubscribing_keeps_subscription),
        IT_TEST(test_thousand_subscriptions_then_abrupt_close),
    };
    return IT_RUN(tests);
}
