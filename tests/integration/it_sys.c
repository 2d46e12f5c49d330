/*
 * it_sys.c - the $SYS topics: published (retained) at start, republished
 * every sys_interval, disabled by sys_interval 0, and hidden from
 * wildcard subscriptions by the '$' rule.
 */
#include "harness.h"

static const char *const sys_topics[] = {
    "$SYS/broker/version",
    "$SYS/broker/uptime",
    "$SYS/broker/clients/connected",
    "$SYS/broker/messages/received",
    "$SYS/broker/messages/sent",
    "$SYS/broker/bytes/received",
    "$SYS/broker/bytes/sent",
    "$SYS/broker/retained messages/count",
};
enum { N_SYS = sizeof sys_topics / sizeof *sys_topics };

/* $SYS/broker/version is retained: a subscriber gets it at once with
 * RETAIN=1 [MQTT-3.3.1-8] and a non-empty payload. */
static void test_sys_broker_version_is_retained(void **state)
{
    it_broker *b = it_broker_start("sys_interval 60");
    it_conn *c = it_client(it_broker_port(b), "sys", true);
    it_subscribe(c, "$SYS/broker/version", 0);
    mqtt_publish p;
    it_recv_publish(c, &p, IT_TIMEOUT);
    if (!it_span_eq(p.topic, "$SYS/broker/version") || !p.retain || p.payload.len == 0)
        it_fail("bad $SYS/broker/version: topic '%.*s' retain %d, %zu bytes",
                (int)p.topic.len, (const char *)p.topic.ptr, p.retain, p.payload.len);
    it_broker_stop(b);
}

/* Every documented $SYS topic is published once at start and retained, so
 * "$SYS/#" gets all of them right after subscribing, each non-empty. */
static void test_all_sys_topics_retained_at_start(void **state)
{
    it_broker *b = it_broker_start("sys_interval 60");
    it_conn *c = it_client(it_broker_port(b), "sys", true);
    it_subscribe(c, "$SYS/#", 0);
    bool seen[N_SYS] = { false };
    size_t missing = N_SYS;
    long deadline = it_now_ms() + IT_TIMEOUT;
    while (missing > 0) {
        mqtt_publish p;
        long left = deadline - it_now_ms();
        it_recv_publish(c, &p, left > 0 ? (int)left : 0);
        for (size_t i = 0; i < N_SYS; i++) {
            if (!seen[i] && it_span_eq(p.topic, sys_topics[i])) {
                if (!p.retain || p.payload.len == 0)
                    it_fail("%s: retain %d, %zu bytes", sys_topics[i], p.retain,
                            p.payload.len);
                seen[i] = true;
                missing--;
            }
        }
    }
    it_broker_stop(b);
}

/* With sys_interval 1 the topics are republished: after the retained copy
 * comes a live one (RETAIN=0 [MQTT-3.3.1-9]) within a few seconds. */
static void test_sys_topics_republished_every_interval(void **state)
{
    it_broker *b = it_broker_start("sys_interval 1");
    it_conn *c = it_client(it_broker_port(b), "sys", true);
    it_subscribe(c, "$SYS/broker/uptime", 0);
    mqtt_publish p;
    it_recv_publish(c, &p, IT_TIMEOUT);
    if (!p.retain)
        it_fail("first $SYS/broker/uptime should be the retained copy");
    it_recv_publish(c, &p, IT_TIMEOUT);
    if (!it_span_eq(p.topic, "$SYS/broker/uptime") || p.retain)
        it_fail("expected a live $SYS/broker/uptime update with RETAIN=0");
    it_broker_stop(b);
}

/* sys_interval 0 disables $SYS: nothing retained under $SYS. */
static void test_sys_interval_0_disables_sys(void **state)
{
    it_broker *b = it_broker_start("sys_interval 0");
    it_conn *c = it_client(it_broker_port(b), "sys", true);
    it_subscribe(c, "$SYS/#", 0);
    it_ping(c); /* retained messages would precede the PINGRESP */
    it_broker_stop(b);
}

/* [MQTT-4.7.2-1] "#" does not match topics starting with '$': no retained
 * $SYS on subscribe, and no live $SYS update either. A second client sees
 * the live update happen; then a plain message must be the first thing the
 * "#" subscriber gets. */
static void test_hash_subscriber_does_not_receive_sys(void **state)
{
    it_broker *b = it_broker_start("sys_interval 1");
    uint16_t port = it_broker_port(b);
    it_conn *all = it_client(port, "all", true);
    it_subscribe(all, "#", 0);
    it_ping(all);
    it_conn *watch = it_client(port, "watch", true);
    it_subscribe(watch, "$SYS/broker/uptime", 0);
    mqtt_publish p;
    do
        it_recv_publish(watch, &p, IT_TIMEOUT);
    while (p.retain);
    it_conn *pub = it_client(port, "pub", true);
    it_publish_str(pub, "plain", "first", 0, false);
    it_expect_publish(all, "plain", "first", 0, false);
    it_broker_stop(b);
}

/* [MQTT-4.7.2-1] nor does a filter starting with '+'. */
static void test_plus_subscriber_does_not_receive_sys(void **state)
{
    it_broker *b = it_broker_start("sys_interval 60");
    it_conn *c = it_client(it_broker_port(b), "plus", true);
    it_subscribe(c, "+/broker/version", 0);
    it_ping(c);
    it_broker_stop(b);
}

/* $SYS/broker/clients/connected follows the number of connected clients:
 * with three connected, an update says 3. */
static void test_sys_clients_connected_counts_clients(void **state)
{
    it_broker *b = it_broker_start("sys_interval 1");
    uint16_t port = it_broker_port(b);
    it_conn *c = it_client(port, "counter", true);
    it_client(port, "two", true);
    it_client(port, "three", true);
    it_subscribe(c, "$SYS/broker/clients/connected", 0);
    long deadline = it_now_ms() + IT_TIMEOUT;
    for (;;) {
        mqtt_publish p;
        long left = deadline - it_now_ms();
        it_recv_publish(c, &p, left > 0 ? (int)left : 0);
        if (it_span_eq(p.payload, "3"))
            break;
    }
    it_broker_stop(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        IT_TEST(test_sys_broker_version_is_retained),
        IT_TEST(test_all_sys_topics_retained_at_start),
        IT_TEST(test_sys_topics_republished_every_interval),
        IT_TEST(test_sys_interval_0_disables_sys),
        IT_TEST(test_hash_subscriber_does_not_receive_sys),
        IT_TEST(test_plus_subscriber_does_not_receive_sys),
        IT_TEST(test_sys_clients_connected_counts_clients),
    };
    return IT_RUN(tests);
}
