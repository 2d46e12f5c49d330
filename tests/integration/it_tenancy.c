/*
 * it_tenancy.c - company namespaces, end to end.
 *
 * A device (TLS client certificate: device id = CN, company = O) works
 * inside its company's namespace: what it publishes, subscribes, leaves as
 * a will or retains is stored under "<company>/<topic>" and handed back to
 * the company's devices without the prefix; wildcards never leave the
 * namespace and $SYS is not inside it. A platform-wide client (here: an
 * anonymous client of the plain loopback listener) sees the internal topics.
 *
 * Every test starts its own broker: the harness's plain anonymous listener
 * plus one TLS listener with require_certificate true. The devices
 * acme/gw-1, acme/gw-2, acme/gw-3, globex/gw-1 and globex/gw-2 come from a
 * CA made once by the group setup (gw-1 exists in both companies).
 *
 * Absence is shown without sleeping wherever possible:
 * - a marker: after the message that must not arrive was routed (QoS 1,
 *   PUBACK received), a marker that the receiver is subscribed to is
 *   published; the receiver's next PUBLISH must be the marker, since the
 *   broker's single event loop writes deliveries to one connection in the
 *   order it routes them;
 * - a barrier (PINGREQ / PINGRESP with nothing before it) for what the
 *   broker sends synchronously: retained messages right after SUBACK,
 *   queued messages right after CONNACK.
 *
 * Run: make B=build/x build/x/gatemq build/x/tests/it_tenancy &&
 *      GATEMQ_BIN=build/x/gatemq GATEMQ_BUILD=build/x build/x/tests/it_tenancy
 */
#include "tenant_util.h"

#include <inttypes.h>

#define N_ELEMS(a) (sizeof(a) / sizeof((a)[0]))

/* Marker publishes: pub sends payload on topic (QoS 1, so it is routed once
 * this returns), then sub's next PUBLISH must be exactly it (as expected_topic,
 * QoS 0 if sub subscribed at QoS 0). */
#define MARK(pub, topic, sub, expected_topic) do { \
        tn_publish(pub, topic, "marker", 1, false); \
        tn_expect(sub, expected_topic, "marker", 0, false); \
    } while (0)

/* The filters with which a globex device tries to reach acme's topics. */
static const char *const reach_acme[] = {
    "#", "+/#", "telemetry/#", "acme/#", "+/telemetry/#", "acme/telemetry/x", "marker/#",
};

/* ---- same company ----------------------------------------------------------- */

static void test_same_company_delivery_has_no_prefix(void **state)
{
    (void)state;
    uint16_t tls;
    it_broker *b = tn_start(NULL, &tls);
    tn_conn *gw1 = tn_device(tls, "acme", "gw-1");
    tn_conn *gw2 = tn_device(tls, "acme", "gw-2");
    tn_subscribe(gw1, "telemetry/#", 2);
    tn_publish(gw2, "telemetry/x", "21.5", 0, false);
    tn_expect(gw1, "telemetry/x", "21.5", 0, false);
    tn_publish(gw2, "telemetry/x", "21.6", 1, false);
    tn_expect(gw1, "telemetry/x", "21.6", 1, false);
    tn_publish(gw2, "telemetry/x", "21.7", 2, false);
    tn_expect(gw1, "telemetry/x", "21.7", 2, false);
    tn_barrier(gw1);
    tn_disconnect(gw1);
    tn_disconnect(gw2);
    it_broker_stop(b);
}

/* ---- across companies --------------------------------------------------------- */

static void test_other_company_receives_nothing_of_acme(void **state)
{
    (void)state;
    uint16_t tls;
    it_broker *b = tn_start(NULL, &tls);
    tn_conn *g1 = tn_device(tls, "globex", "gw-1");
    tn_conn *g2 = tn_device(tls, "globex", "gw-2");
    tn_conn *a1 = tn_device(tls, "acme", "gw-1");
    tn_conn *a2 = tn_device(tls, "acme", "gw-2");
    tn_subscribe_n(g1, reach_acme, N_ELEMS(reach_acme), 0);
    tn_subscribe(a1, "#", 0); /* control: acme's own device gets them all */

    for (uint8_t q = 0; q <= 2; q++) {
        tn_publish(a2, "telemetry/x", "acme-secret", q, false);
        tn_publish(a2, "acme/telemetry/x", "acme-secret", q, false);
        tn_publish(a2, "globex/telemetry/x", "acme-secret", q, false);
    }
    for (int i = 0; i < 3; i++) {
        tn_expect(a1, "telemetry/x", "acme-secret", 0, false);
        tn_expect(a1, "acme/telemetry/x", "acme-secret", 0, false);
        tn_expect(a1, "globex/telemetry/x", "acme-secret", 0, false);
    }
    /* Each acme publish was routed before the marker is. */
    MARK(g2, "marker/1", g1, "marker/1");
    tn_barrier(g1);
    tn_disconnect(a1);
    tn_disconnect(a2);
    tn_disconnect(g1);
    tn_disconnect(g2);
    it_broker_stop(b);
}

static void test_foreign_company_topic_lands_in_own_namespace(void **state)
{
    (void)state;
    uint16_t tls;
    it_broker *b = tn_start(NULL, &tls);
    tn_conn *p = tn_platform(it_broker_port(b), "platform-1");
    tn_conn *g1 = tn_device(tls, "globex", "gw-1");
    tn_conn *g2 = tn_device(tls, "globex", "gw-2");
    tn_conn *a1 = tn_device(tls, "acme", "gw-1");
    tn_conn *a2 = tn_device(tls, "acme", "gw-2");
    tn_subscribe(p, "#", 0);
    const char *acme_filters[] = { "#", "telemetry/x", "telemetry/#", "+/telemetry/#",
                                   "acme/telemetry/x", "marker/#" };
    tn_subscribe_n(a1, acme_filters, N_ELEMS(acme_filters), 0);
    tn_subscribe(g2, "acme/telemetry/x", 0);

    tn_publish(g1, "acme/telemetry/x", "from-globex", 1, false);
    /* Inside globex: a literal level "acme" under globex's prefix. */
    tn_expect(p, "globex/acme/telemetry/x", "from-globex", 0, false);
    tn_expect(g2, "acme/telemetry/x", "from-globex", 0, false);
    /* Never in acme's namespace. */
    MARK(a2, "marker/1", a1, "marker/1");
    tn_expect(p, "acme/marker/1", "marker", 0, false);
    tn_barrier(a1);
    tn_barrier(p);
    tn_disconnect(a1);
    tn_disconnect(a2);
    tn_disconnect(g1);
    tn_disconnect(g2);
    tn_disconnect(p);
    it_broker_stop(b);
}

static void test_unsubscribe_affects_only_own_namespace(void **state)
{
    (void)state;
    uint16_t tls;
    it_broker *b = tn_start(NULL, &tls);
    tn_conn *a1 = tn_device(tls, "acme", "gw-1");
    tn_conn *a2 = tn_device(tls, "acme", "gw-2");
    tn_conn *g1 = tn_device(tls, "globex", "gw-1");
    tn_conn *g2 = tn_device(tls, "globex", "gw-2");
    tn_subscribe(a1, "telemetry/#", 0);
    tn_subscribe(a1, "marker/#", 0);
    tn_subscribe(g1, "telemetry/#", 0);
    /* The same relative filter, removed in acme only. */
    tn_unsubscribe(a1, "telemetry/#");
    tn_publish(g2, "telemetry/z", "globex-z", 1, false);
    tn_expect(g1, "telemetry/z", "globex-z", 0, false);
    tn_publish(a2, "telemetry/z", "acme-z", 1, false);
    MARK(a2, "marker/1", a1, "marker/1");
    tn_barrier(a1);
    tn_barrier(g1);
    tn_disconnect(a1);
    tn_disconnect(a2);
    tn_disconnect(g1);
    tn_disconnect(g2);
    it_broker_stop(b);
}

/* ---- retained ------------------------------------------------------------------- */

static void test_retained_not_delivered_to_other_company(void **state)
{
    (void)state;
    uint16_t tls;
    it_broker *b = tn_start(NULL, &tls);
    tn_conn *a2 = tn_device(tls, "acme", "gw-2");
    tn_publish(a2, "config/gw-1/rate", "acme-rate-5", 1, true);
    tn_conn *g1 = tn_device(tls, "globex", "gw-1");
    /* Retained messages are written right after SUBACK, before the broker
     * reads the PINGREQ: the barrier shows that none came. */
    const char *filters[] = { "#", "acme/#", "+/#", "+/config/#", "config/gw-1/rate",
                              "acme/config/gw-1/rate", "+/+/+", "+/+/+/+" };
    for (size_t i = 0; i < N_ELEMS(filters); i++) {
        tn_subscribe(g1, filters[i], 1);
        tn_barrier(g1);
    }
    tn_disconnect(g1);
    tn_disconnect(a2);
    it_broker_stop(b);
}

static void test_retained_delivered_within_company_with_own_value(void **state)
{
    (void)state;
    uint16_t tls;
    it_broker *b = tn_start(NULL, &tls);
    /* The same relative topic retained in both companies. */
    tn_conn *a2 = tn_device(tls, "acme", "gw-2");
    tn_conn *g2 = tn_device(tls, "globex", "gw-2");
    tn_publish(a2, "config/gw-1/rate", "acme-rate-5", 1, true);
    tn_publish(g2, "config/gw-1/rate", "globex-rate-7", 1, true);

    tn_conn *a1 = tn_device(tls, "acme", "gw-1");
    tn_subscribe(a1, "config/gw-1/#", 1);
    tn_expect(a1, "config/gw-1/rate", "acme-rate-5", 1, true);
    tn_barrier(a1);
    tn_conn *g1 = tn_device(tls, "globex", "gw-1");
    tn_subscribe(g1, "#", 1);
    tn_expect(g1, "config/gw-1/rate", "globex-rate-7", 1, true);
    tn_barrier(g1);
    /* The platform sees both under their internal topics. */
    tn_conn *p = tn_platform(it_broker_port(b), "platform-1");
    tn_subscribe(p, "acme/config/gw-1/rate", 1);
    tn_expect(p, "acme/config/gw-1/rate", "acme-rate-5", 1, true);
    tn_subscribe(p, "globex/config/gw-1/rate", 1);
    tn_expect(p, "globex/config/gw-1/rate", "globex-rate-7", 1, true);
    tn_barrier(p);
    tn_disconnect(p);
    tn_disconnect(a1);
    tn_disconnect(g1);
    tn_disconnect(a2);
    tn_disconnect(g2);
    it_broker_stop(b);
}

/* ---- wills -------------------------------------------------------------------- */

static void test_will_published_inside_company_only(void **state)
{
    (void)state;
    uint16_t tls;
    it_broker *b = tn_start(NULL, &tls);
    tn_conn *p = tn_platform(it_broker_port(b), "platform-1");
    tn_subscribe(p, "+/status/#", 0);
    tn_conn *a1 = tn_device(tls, "acme", "gw-1");
    tn_subscribe(a1, "status/#", 1);
    tn_conn *g1 = tn_device(tls, "globex", "gw-1");
    tn_conn *g2 = tn_device(tls, "globex", "gw-2");
    const char *gf[] = { "#", "+/#", "status/#", "acme/#", "acme/status/gw-2", "marker/#" };
    tn_subscribe_n(g1, gf, N_ELEMS(gf), 1);

    tn_conn *a2 = tn_open_tls(tls, "acme", "gw-2");
    it_will w = { .topic = "status/gw-2", .payload = "offline", .qos = 1, .retain = false };
    tn_connect(a2, "gw-2", true, &w);
    tn_drop(a2); /* no DISCONNECT: the will is published */

    tn_expect(a1, "status/gw-2", "offline", 1, false);
    tn_expect(p, "acme/status/gw-2", "offline", 0, false);
    /* The will was routed (acme/gw-1 got it) before the marker. */
    tn_publish(g2, "marker/1", "marker", 1, false);
    tn_expect(g1, "marker/1", "marker", 1, false);
    tn_barrier(g1);
    tn_disconnect(g1);
    tn_disconnect(g2);
    tn_disconnect(a1);
    tn_disconnect(p);
    it_broker_stop(b);
}

static void test_retained_will_stays_in_company(void **state)
{
    (void)state;
    uint16_t tls;
    it_broker *b = tn_start(NULL, &tls);
    tn_conn *a1 = tn_device(tls, "acme", "gw-1");
    tn_subscribe(a1, "status/#", 1);
    tn_conn *a2 = tn_open_tls(tls, "acme", "gw-2");
    it_will w = { .topic = "status/gw-2", .payload = "gone", .qos = 1, .retain = true };
    tn_connect(a2, "gw-2", true, &w);
    tn_drop(a2);
    tn_expect(a1, "status/gw-2", "gone", 1, false); /* routed and retained */

    tn_conn *g1 = tn_device(tls, "globex", "gw-1");
    const char *gf[] = { "#", "acme/#", "status/#", "+/status/gw-2", "acme/status/gw-2" };
    for (size_t i = 0; i < N_ELEMS(gf); i++) {
        tn_subscribe(g1, gf[i], 1);
        tn_barrier(g1); /* retained messages would precede PINGRESP */
    }
    tn_conn *a3 = tn_device(tls, "acme", "gw-3");
    tn_subscribe(a3, "status/#", 1);
    tn_expect(a3, "status/gw-2", "gone", 1, true);
    tn_conn *p = tn_platform(it_broker_port(b), "platform-1");
    tn_subscribe(p, "+/status/#", 1);
    tn_expect(p, "acme/status/gw-2", "gone", 1, true);
    tn_barrier(p);
    tn_disconnect(p);
    tn_disconnect(a3);
    tn_disconnect(g1);
    tn_disconnect(a1);
    it_broker_stop(b);
}

/* ---- sessions ------------------------------------------------------------------- */

static void test_offline_session_gets_nothing_queued_from_other_company(void **state)
{
    (void)state;
    uint16_t tls;
    it_broker *b = tn_start(NULL, &tls);
    tn_conn *g1 = tn_device_sp(tls, "globex", "gw-1", false, false);
    const char *gf[] = { "#", "+/#", "acme/#", "telemetry/#", "acme/telemetry/x" };
    tn_subscribe_n(g1, gf, N_ELEMS(gf), 1);
    tn_disconnect(g1); /* the persistent session stays, offline */

    tn_conn *a2 = tn_device(tls, "acme", "gw-2");
    tn_publish(a2, "telemetry/x", "acme-q1", 1, false);
    tn_publish(a2, "acme/telemetry/x", "acme-q1", 1, false);
    tn_publish(a2, "telemetry/x", "acme-q2", 2, false);
    /* Control: globex's own message is queued for it. */
    tn_conn *g2 = tn_device(tls, "globex", "gw-2");
    tn_publish(g2, "telemetry/y", "globex-queued", 1, false);

    /* Queued messages are written right after CONNACK. */
    g1 = tn_device_sp(tls, "globex", "gw-1", false, true);
    tn_expect(g1, "telemetry/y", "globex-queued", 1, false);
    tn_barrier(g1);
    tn_disconnect(g1);
    tn_disconnect(g2);
    tn_disconnect(a2);
    it_broker_stop(b);
}

static void test_takeover_in_one_company_leaves_same_client_id_of_other(void **state)
{
    (void)state;
    uint16_t tls;
    it_broker *b = tn_start(NULL, &tls);
    tn_conn *a1 = tn_device(tls, "acme", "gw-1");
    tn_conn *g1 = tn_device(tls, "globex", "gw-1"); /* same client id "gw-1" */
    tn_barrier(a1); /* globex/gw-1 did not take over acme/gw-1 */
    tn_subscribe(g1, "t/#", 1);

    tn_conn *a1b = tn_device(tls, "acme", "gw-1"); /* takes over acme/gw-1 only */
    tn_expect_closed(a1, TN_TIMEOUT);
    tn_barrier(g1);
    tn_conn *g2 = tn_device(tls, "globex", "gw-2");
    tn_publish(g2, "t/1", "still-here", 1, false);
    tn_expect(g1, "t/1", "still-here", 1, false);
    tn_barrier(a1b);
    tn_disconnect(a1b);
    tn_disconnect(g1);
    tn_disconnect(g2);
    it_broker_stop(b);
}

static void test_session_present_is_per_company(void **state)
{
    (void)state;
    uint16_t tls;
    it_broker *b = tn_start(NULL, &tls);
    tn_conn *c = tn_device_sp(tls, "globex", "gw-1", false, false);
    tn_disconnect(c);
    /* Same client id, other company: no session yet. */
    c = tn_device_sp(tls, "acme", "gw-1", false, false);
    tn_disconnect(c);
    c = tn_device_sp(tls, "acme", "gw-1", false, true);
    tn_disconnect(c);
    /* A clean session ends acme's session only. */
    c = tn_device_sp(tls, "acme", "gw-1", true, false);
    tn_disconnect(c);
    c = tn_device_sp(tls, "globex", "gw-1", false, true);
    tn_disconnect(c);
    c = tn_device_sp(tls, "acme", "gw-1", false, false);
    tn_disconnect(c);
    it_broker_stop(b);
}

/* ---- $SYS ---------------------------------------------------------------------- */

static void test_sys_invisible_to_devices_visible_to_platform(void **state)
{
    (void)state;
    uint16_t tls;
    it_broker *b = tn_start("sys_interval 1", &tls);
    tn_conn *a1 = tn_device(tls, "acme", "gw-1");
    const char *f[] = { "$SYS/#", "$SYS/broker/version", "$SYS/broker/uptime", "#", "+/#" };
    for (size_t i = 0; i < N_ELEMS(f); i++) {
        tn_subscribe(a1, f[i], 0);
        tn_barrier(a1); /* the retained $SYS topics would precede PINGRESP */
    }
    tn_conn *p = tn_platform(it_broker_port(b), "platform-1");
    tn_subscribe(p, "$SYS/broker/version", 0);
    tn_msg m;
    if (tn_recv(p, &m, TN_TIMEOUT) != 1)
        it_fail("platform client: no $SYS/broker/version");
    bool ok = strcmp(m.topic, "$SYS/broker/version") == 0 &&
              strncmp(m.payload, "gatemq ", 7) == 0 && m.retain;
    if (!ok)
        print_error("  received '%s' '%s' retain %d\n", m.topic, m.payload, m.retain);
    tn_msg_free(&m);
    if (!ok)
        it_fail("platform client: expected the retained $SYS/broker/version");
    /* A periodic update (RETAIN 0) reaches the platform; the device, routed
     * to in the same pass, still has nothing before PINGRESP. */
    tn_subscribe(p, "$SYS/broker/uptime", 0);
    for (;;) {
        if (tn_recv(p, &m, TN_TIMEOUT) != 1)
            it_fail("platform client: no periodic $SYS/broker/uptime");
        bool periodic = !m.retain && strcmp(m.topic, "$SYS/broker/uptime") == 0;
        tn_msg_free(&m);
        if (periodic)
            break;
    }
    tn_barrier(a1);
    tn_disconnect(a1);
    tn_disconnect(p);
    it_broker_stop(b);
}

/* ---- platform-wide clients -------------------------------------------------------- */

static void test_platform_wildcard_spans_companies(void **state)
{
    (void)state;
    uint16_t tls;
    it_broker *b = tn_start(NULL, &tls);
    tn_conn *p = tn_platform(it_broker_port(b), "ingest");
    tn_subscribe(p, "+/telemetry/#", 1);
    tn_conn *a2 = tn_device(tls, "acme", "gw-2");
    tn_conn *g1 = tn_device(tls, "globex", "gw-1");
    tn_publish(a2, "telemetry/x", "acme-21", 1, false);
    tn_publish(g1, "telemetry/x", "globex-22", 1, false);
    tn_publish(a2, "config/x", "not-telemetry", 1, false);
    tn_publish(g1, "telemetry/gw-1/temp", "globex-23", 0, false);
    tn_expect(p, "acme/telemetry/x", "acme-21", 1, false);
    tn_expect(p, "globex/telemetry/x", "globex-22", 1, false);
    tn_expect(p, "globex/telemetry/gw-1/temp", "globex-23", 0, false);
    tn_barrier(p);
    tn_disconnect(p);
    tn_disconnect(a2);
    tn_disconnect(g1);
    it_broker_stop(b);
}

static void test_platform_publish_reaches_only_named_company(void **state)
{
    (void)state;
    uint16_t tls;
    it_broker *b = tn_start(NULL, &tls);
    tn_conn *a1 = tn_device(tls, "acme", "gw-1");
    tn_conn *g1 = tn_device(tls, "globex", "gw-1");
    tn_subscribe(a1, "config/gw-1/#", 1);
    const char *gf[] = { "config/gw-1/#", "marker/#" };
    tn_subscribe_n(g1, gf, 2, 1);
    tn_conn *p = tn_platform(it_broker_port(b), "operator");
    tn_publish(p, "acme/config/gw-1/rate", "10", 1, false);
    tn_expect(a1, "config/gw-1/rate", "10", 1, false);
    tn_publish(p, "globex/marker/1", "marker", 1, false);
    tn_expect(g1, "marker/1", "marker", 1, false);
    tn_barrier(g1);
    tn_barrier(a1);
    tn_disconnect(p);
    tn_disconnect(a1);
    tn_disconnect(g1);
    it_broker_stop(b);
}

/* ---- odd topics ------------------------------------------------------------------ */

/* globex/gw-1 and the platform watch everything; acme must reach neither
 * (the platform only through acme's prefix). */
typedef struct watchers {
    tn_conn *g1, *g2, *p, *a1, *a2;
} watchers;

static void watch(watchers *w, it_broker *b, uint16_t tls)
{
    static const char *const gf[] = {
        "#", "+", "+/#", "/#", "+/+", "/+", "//#", "+/+/+", "acme/#", "/acme/#", "globex/#",
        "$SYS/#", "$x/#", "+/$x", "+/$SYS/#", "a/+", "telemetry/+", "\xe6\x97\xa5\xe6\x9c\xac/#",
        "marker/#",
    };
    w->p = tn_platform(it_broker_port(b), "platform-1");
    tn_subscribe(w->p, "+/#", 0);
    tn_subscribe(w->p, "#", 0);
    w->g1 = tn_device(tls, "globex", "gw-1");
    w->g2 = tn_device(tls, "globex", "gw-2");
    tn_subscribe_n(w->g1, gf, N_ELEMS(gf), 0);
    w->a1 = tn_device(tls, "acme", "gw-1");
    w->a2 = tn_device(tls, "acme", "gw-2");
    tn_subscribe(w->a1, "#", 0);
    tn_subscribe(w->a1, "/#", 0);
}

/* acme/gw-2 publishes each topic (QoS 1); acme/gw-1 must get it unchanged,
 * the platform as acme/<topic>; topics starting with '$' are dropped. */
static void publish_all(watchers *w, const char *const *topics, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        char payload[32];
        snprintf(payload, sizeof payload, "acme-%zu", i);
        tn_publish(w->a2, topics[i], payload, 1, false);
    }
    for (size_t i = 0; i < n; i++) {
        if (topics[i][0] == '$')
            continue;
        char payload[32], internal[512];
        snprintf(payload, sizeof payload, "acme-%zu", i);
        snprintf(internal, sizeof internal, "acme/%s", topics[i]);
        tn_expect(w->a1, topics[i], payload, 0, false);
        tn_expect(w->p, internal, payload, 0, false);
    }
}

static void unwatch(watchers *w)
{
    /* Everything of acme was routed before this marker. */
    tn_publish(w->g2, "marker/end", "marker", 1, false);
    tn_expect(w->g1, "marker/end", "marker", 0, false);
    tn_expect(w->p, "globex/marker/end", "marker", 0, false);
    tn_barrier(w->g1);
    tn_barrier(w->p);
    tn_barrier(w->a1);
    tn_disconnect(w->g1);
    tn_disconnect(w->g2);
    tn_disconnect(w->a1);
    tn_disconnect(w->a2);
    tn_disconnect(w->p);
}

static void test_slashes_and_empty_levels_stay_in_company(void **state)
{
    (void)state;
    uint16_t tls;
    it_broker *b = tn_start(NULL, &tls);
    watchers w;
    watch(&w, b, tls);
    static const char *const topics[] = {
        "/", "//", "///", "/telemetry", "telemetry/", "a//b", "/acme/x", "acme", "acme/",
        "acme//", "globex", "globex/", "globex/x", "/globex", "//globex/x", "../globex/x",
        "globex/../acme/x",
    };
    publish_all(&w, topics, N_ELEMS(topics));
    unwatch(&w);
    it_broker_stop(b);
}

static void test_dollar_levels_stay_in_company(void **state)
{
    (void)state;
    uint16_t tls;
    it_broker *b = tn_start(NULL, &tls);
    watchers w;
    watch(&w, b, tls);
    static const char *const topics[] = {
        "a/$x", "a/$SYS/broker/version", "telemetry/$share/x", "x$/y", "$x/y",
        "$SYS/broker/version", "$", "$/x", "globex/$SYS/x",
    };
    publish_all(&w, topics, N_ELEMS(topics));
    unwatch(&w);
    it_broker_stop(b);
}

static void test_utf8_levels_stay_in_company(void **state)
{
    (void)state;
    uint16_t tls;
    it_broker *b = tn_start(NULL, &tls);
    watchers w;
    watch(&w, b, tls);
    static const char *const topics[] = {
        "\xe6\x97\xa5\xe6\x9c\xac/\xe6\xb8\xa9\xe5\xba\xa6", /* 日本/温度 */
        "\xc3\xbc/\xc3\xb6",                                 /* ü/ö */
        "\xf0\x9f\x98\x80",                                  /* an emoji */
        "\xef\xbb\xbf/x",                                    /* U+FEFF, kept as is */
        "a\xcc\x81",                                         /* a + combining acute */
        "\xef\xbd\x87\xef\xbd\x8c\xef\xbd\x8f\xef\xbd\x82\xef\xbd\x85\xef\xbd\x98/x", /* fullwidth globex */
        "globex\xe2\x80\x8b/x",                              /* zero-width space */
        "\xe2\x80\x8eglobex/x",                              /* left-to-right mark */
        "globe\xd1\x85/x",                                   /* Cyrillic x */
        "\xf4\x8f\xbf\xbf/\xee\x80\x80",                     /* U+10FFFF, private use */
    };
    publish_all(&w, topics, N_ELEMS(topics));
    unwatch(&w);
    it_broker_stop(b);
}

static void test_wildcard_topic_names_close_without_crossing(void **state)
{
    (void)state;
    uint16_t tls;
    it_broker *b = tn_start(NULL, &tls);
    watchers w;
    watch(&w, b, tls);
    static const char *const bad[] = {
        "telemetry/+", "#", "+", "+/telemetry/x", "globex/#", "globex/+/x", "a#", "/+",
    };
    for (size_t i = 0; i < N_ELEMS(bad); i++) {
        tn_conn *a3 = tn_device(tls, "acme", "gw-3");
        size_t n;
        uint8_t *pkt = tn_raw_publish(bad[i], "bad", 1, 1, &n);
        tn_send_raw(a3, pkt, n);
        free(pkt);
        /* [MQTT-3.3.2-2]: a protocol violation, the connection closes. */
        tn_expect_closed(a3, TN_TIMEOUT);
    }
    unwatch(&w);
    it_broker_stop(b);
}

static void test_invalid_filters_close_without_crossing(void **state)
{
    (void)state;
    uint16_t tls;
    it_broker *b = tn_start(NULL, &tls);
    static const char *const bad[] = {
        "#/telemetry", "acme/#/x", "a+/b", "+acme/#", "acme/#x", "##", "+#", "",
    };
    /* A persistent session would keep anything a refused SUBSCRIBE left. */
    tn_conn *g1 = tn_device_sp(tls, "globex", "gw-1", false, false);
    for (size_t i = 0; i < N_ELEMS(bad); i++) {
        size_t n;
        uint8_t *pkt = tn_raw_subscribe(bad[i], 0, 1, &n);
        tn_send_raw(g1, pkt, n);
        free(pkt);
        tn_expect_closed(g1, TN_TIMEOUT);
        g1 = tn_device_sp(tls, "globex", "gw-1", false, true);
    }
    tn_subscribe(g1, "marker/#", 0);
    tn_conn *a2 = tn_device(tls, "acme", "gw-2");
    tn_publish(a2, "telemetry/x", "acme", 1, false);
    tn_publish(a2, "acme/x", "acme", 1, false);
    tn_publish(a2, "x", "acme", 1, false);
    tn_conn *g2 = tn_device(tls, "globex", "gw-2");
    MARK(g2, "marker/1", g1, "marker/1");
    tn_barrier(g1);
    tn_disconnect(g1);
    tn_disconnect(g2);
    tn_disconnect(a2);
    it_broker_stop(b);
}

/* [MQTT-4.7.2-1] as the device sees it: a platform client may publish to
 * acme/$x/y, which an acme device sees as $x/y; its filters starting with a
 * wildcard must not match it. */
static void test_device_wildcards_skip_dollar_topics_in_namespace(void **state)
{
    (void)state;
    uint16_t tls;
    it_broker *b = tn_start(NULL, &tls);
    tn_conn *a1 = tn_device(tls, "acme", "gw-1");
    const char *af[] = { "#", "+/y", "+/+", "marker/#" };
    tn_subscribe_n(a1, af, N_ELEMS(af), 0);
    tn_conn *a3 = tn_device(tls, "acme", "gw-3");
    tn_subscribe(a3, "$x/#", 0);
    tn_conn *p = tn_platform(it_broker_port(b), "operator");
    tn_publish(p, "acme/$x/y", "dollar", 1, false);
    tn_expect(a3, "$x/y", "dollar", 0, false); /* routed, and matched by $x/# */
    tn_publish(p, "acme/marker/1", "marker", 1, false);
    tn_expect(a1, "marker/1", "marker", 0, false);
    tn_barrier(a1);
    tn_disconnect(a1);
    tn_disconnect(a3);
    tn_disconnect(p);
    it_broker_stop(b);
}

/* The internal topic "acme" (one level, no '/') is not inside acme's
 * namespace "acme/...": nothing an acme device could be sent. */
static void test_platform_publish_to_bare_company_topic_not_delivered(void **state)
{
    (void)state;
    uint16_t tls;
    it_broker *b = tn_start(NULL, &tls);
    tn_conn *a1 = tn_device(tls, "acme", "gw-1");
    tn_subscribe(a1, "#", 0);
    tn_conn *p = tn_platform(it_broker_port(b), "operator");
    tn_publish(p, "acme", "bare", 1, false);
    tn_publish(p, "acme/marker/1", "marker", 1, false);
    tn_expect(a1, "marker/1", "marker", 0, false);
    tn_barrier(a1);
    tn_disconnect(a1);
    tn_disconnect(p);
    it_broker_stop(b);
}

/* "acme/" would be the empty topic inside acme, which is no topic name
 * [MQTT-4.7.3-1]: nothing to deliver to an acme device. */
static void test_platform_publish_to_company_slash_not_delivered(void **state)
{
    (void)state;
    uint16_t tls;
    it_broker *b = tn_start(NULL, &tls);
    tn_conn *a1 = tn_device(tls, "acme", "gw-1");
    const char *af[] = { "#", "+", "marker/#" };
    tn_subscribe_n(a1, af, N_ELEMS(af), 0);
    tn_conn *p = tn_platform(it_broker_port(b), "operator");
    tn_publish(p, "acme/", "empty-rest", 1, false);
    tn_publish(p, "acme/marker/1", "marker", 1, false);
    tn_expect(a1, "marker/1", "marker", 0, false);
    tn_barrier(a1);
    tn_disconnect(a1);
    tn_disconnect(p);
    it_broker_stop(b);
}

static void test_retained_bare_company_topic_not_sent_to_device(void **state)
{
    (void)state;
    uint16_t tls;
    it_broker *b = tn_start(NULL, &tls);
    tn_conn *p = tn_platform(it_broker_port(b), "operator");
    tn_publish(p, "acme", "bare-retained", 1, true);
    tn_publish(p, "acme/", "empty-rest-retained", 1, true);
    tn_conn *a1 = tn_device(tls, "acme", "gw-1");
    tn_subscribe(a1, "#", 1);
    tn_barrier(a1);
    tn_subscribe(a1, "+", 1);
    tn_barrier(a1);
    tn_disconnect(a1);
    tn_disconnect(p);
    it_broker_stop(b);
}

/* ---- randomized ------------------------------------------------------------------- */

#define R_SEED 0x7e7a9c1dULL
#define R_DEVICES 5
#define R_FILTERS 8
#define R_PUBLISHES 420
#define R_MAX_MSGS (R_PUBLISHES)

static uint64_t r_state;

static uint32_t rnd(void)
{
    /* xorshift64*: fixed seed, same sequence on every run */
    r_state ^= r_state >> 12;
    r_state ^= r_state << 25;
    r_state ^= r_state >> 27;
    return (uint32_t)((r_state * 0x2545F4914F6CDD1DULL) >> 32);
}

/* Literal levels: empty, the company names, $-levels, UTF-8. */
static const char *const r_levels[] = {
    "", "acme", "globex", "$SYS", "$x", "a", "telemetry", "x$",
    "\xc3\xbc",                 /* ü */
    "\xe6\x97\xa5\xe6\x9c\xac", /* 日本 */
    "\xf0\x9f\x98\x80",         /* emoji */
};

/* A random topic name (wildcards false) or filter of 1..3 levels, valid by
 * construction: in a filter a level is '+' 40% of the time, and 30% of
 * filters end with '#' (which may be the only level); never empty. */
static void r_gen(char *out, size_t cap, bool wildcards)
{
    for (;;) {
        size_t n = 1 + rnd() % 3, pos = 0;
        bool hash = wildcards && rnd() % 10 < 3;
        if (hash && rnd() % 3 == 0)
            n = 0;
        out[0] = '\0';
        for (size_t i = 0; i < n; i++) {
            const char *lv = wildcards && rnd() % 10 < 4 ? "+"
                                                         : r_levels[rnd() % N_ELEMS(r_levels)];
            pos += (size_t)snprintf(out + pos, cap - pos, "%s%s", i ? "/" : "", lv);
        }
        if (hash)
            pos += (size_t)snprintf(out + pos, cap - pos, "%s#", n ? "/" : "");
        if (pos > 0)
            return;
    }
}

/* The reference matcher of MQTT 3.1.1 section 4.7, written independently of
 * the broker's: '+' one level, '#' the rest including the parent level, no
 * leading wildcard matches a topic starting with '$'. */
static bool ref_match(const char *filter, const char *topic)
{
    if (topic[0] == '$' && (filter[0] == '+' || filter[0] == '#'))
        return false;
    const char *f = filter, *t = topic;
    for (;;) {
        size_t fl = strcspn(f, "/"), tl = strcspn(t, "/");
        if (fl == 1 && f[0] == '#')
            return true;
        if (!(fl == 1 && f[0] == '+') && (fl != tl || memcmp(f, t, fl) != 0))
            return false;
        bool fend = f[fl] == '\0', tend = t[tl] == '\0';
        if (fend && tend)
            return true;
        if (tend)
            return strcmp(f + fl, "/#") == 0;
        if (fend)
            return false;
        f += fl + 1;
        t += tl + 1;
    }
}

typedef struct r_client {
    tn_conn *c;
    const char *company; /* NULL: platform */
    char filters[R_FILTERS][128];
    bool *got;       /* per message: received */
    bool *expected;  /* per message: expected */
    size_t nexpected, nreceived;
} r_client;

typedef struct r_msg {
    int publisher;       /* index in the clients */
    char topic[160];     /* as published */
    char internal[176];  /* internal topic, "" when the broker drops it */
    const char *company; /* of the internal topic's namespace, NULL if none */
    char rel[160];       /* topic inside that company */
} r_msg;

static bool any_match(const r_client *c, const char *topic)
{
    for (size_t i = 0; i < R_FILTERS; i++)
        if (ref_match(c->filters[i], topic))
            return true;
    return false;
}

static void test_randomized_namespaces_never_cross(void **state)
{
    (void)state;
    r_state = R_SEED;
    uint16_t tls;
    it_broker *b = tn_start(NULL, &tls);
    static const char *const who[R_DEVICES][2] = {
        { "acme", "gw-1" }, { "acme", "gw-2" }, { "acme", "gw-3" },
        { "globex", "gw-1" }, { "globex", "gw-2" },
    };
    enum { NCLIENTS = R_DEVICES + 1, PLATFORM = R_DEVICES };
    static r_client cl[NCLIENTS];
    static r_msg msgs[R_MAX_MSGS];
    memset(cl, 0, sizeof cl);
    for (int i = 0; i < NCLIENTS; i++) {
        cl[i].got = calloc(R_MAX_MSGS, sizeof(bool));
        cl[i].expected = calloc(R_MAX_MSGS, sizeof(bool));
        if (i < R_DEVICES) {
            cl[i].company = who[i][0];
            cl[i].c = tn_device(tls, who[i][0], who[i][1]);
            for (int k = 0; k < R_FILTERS; k++)
                r_gen(cl[i].filters[k], sizeof cl[i].filters[k], true);
        } else {
            cl[i].c = tn_platform(it_broker_port(b), "platform-random");
            static const char *const heads[] = { "acme/", "globex/", "+/", "" };
            for (int k = 0; k < R_FILTERS; k++) {
                char f[100];
                r_gen(f, sizeof f, true);
                snprintf(cl[i].filters[k], sizeof cl[i].filters[k], "%s%s",
                         heads[rnd() % N_ELEMS(heads)], f);
            }
        }
        const char *fs[R_FILTERS];
        for (int k = 0; k < R_FILTERS; k++)
            fs[k] = cl[i].filters[k];
        tn_subscribe_n(cl[i].c, fs, R_FILTERS, 0);
    }

    /* Publishers: acme/gw-1, acme/gw-2, globex/gw-1, globex/gw-2, platform. */
    static const int publishers[] = { 0, 1, 3, 4, PLATFORM };
    size_t same_company = 0, would_cross = 0, dropped = 0;
    for (size_t m = 0; m < R_PUBLISHES; m++) {
        r_msg *msg = &msgs[m];
        msg->publisher = publishers[rnd() % N_ELEMS(publishers)];
        msg->company = NULL;
        msg->internal[0] = msg->rel[0] = '\0';
        if (msg->publisher != PLATFORM) {
            r_gen(msg->topic, sizeof msg->topic, false);
            if (msg->topic[0] != '$') { /* $-topics are dropped [MQTT-4.7.2] */
                msg->company = cl[msg->publisher].company;
                snprintf(msg->rel, sizeof msg->rel, "%s", msg->topic);
                snprintf(msg->internal, sizeof msg->internal, "%s/%s", msg->company,
                         msg->topic);
            }
        } else {
            /* Into a company (the part inside never starts with '$' nor is
             * empty: see the dedicated tests), or outside any company. */
            int kind = (int)(rnd() % 3);
            char t[140];
            do
                r_gen(t, sizeof t, false);
            while (kind < 2 ? t[0] == '$'
                            : (strcmp(t, "acme") == 0 || strcmp(t, "globex") == 0 ||
                               strncmp(t, "acme/", 5) == 0 || strncmp(t, "globex/", 7) == 0));
            if (kind < 2) {
                msg->company = kind == 0 ? "acme" : "globex";
                snprintf(msg->rel, sizeof msg->rel, "%s", t);
                snprintf(msg->topic, sizeof msg->topic, "%s/%s", msg->company, t);
            } else {
                snprintf(msg->topic, sizeof msg->topic, "%s", t);
            }
            if (msg->topic[0] != '$')
                snprintf(msg->internal, sizeof msg->internal, "%s", msg->topic);
        }
        if (!msg->internal[0])
            dropped++;
        /* The model: who must get it. */
        for (int i = 0; i < NCLIENTS; i++) {
            bool e;
            if (!msg->internal[0]) {
                e = false;
            } else if (i == PLATFORM) {
                e = any_match(&cl[i], msg->internal);
            } else if (msg->company) {
                bool matches = any_match(&cl[i], msg->rel);
                e = matches && strcmp(cl[i].company, msg->company) == 0;
                if (matches && !e)
                    would_cross++;
            } else {
                e = false;
            }
            cl[i].expected[m] = e;
            if (e) {
                cl[i].nexpected++;
                if (i != PLATFORM)
                    same_company++;
            }
        }
        char payload[32];
        snprintf(payload, sizeof payload, "r%zu", m);
        tn_publish(cl[msg->publisher].c, msg->topic, payload, 1, false);
    }
    print_message("randomized: seed %#" PRIx64 ", %d publishes (%zu dropped as $-topics), "
                  "%zu expected device deliveries, %zu that would cross companies, "
                  "%zu expected platform deliveries\n",
                  (uint64_t)R_SEED, R_PUBLISHES, dropped, same_company, would_cross,
                  cl[PLATFORM].nexpected);

    /* Every publish was routed (PUBACK). Collect until each client has all
     * it expects; check each delivery on arrival. */
    size_t violations = 0;
    for (int i = 0; i < NCLIENTS; i++) {
        r_client *c = &cl[i];
        long deadline = it_now_ms() + TN_TIMEOUT;
        while (c->nreceived < c->nexpected) {
            long left = deadline - it_now_ms();
            tn_msg m;
            if (left <= 0 || tn_recv(c->c, &m, (int)left) != 1)
                break;
            char *end = m.payload;
            unsigned long idx = m.payload[0] == 'r' ? strtoul(m.payload + 1, &end, 10) : 0;
            const char *why = NULL;
            if (m.payload[0] != 'r' || *end || idx >= R_PUBLISHES) {
                why = "unknown payload";
            } else {
                r_msg *msg = &msgs[idx];
                const char *want = i == PLATFORM ? msg->internal : msg->rel;
                if (i != PLATFORM && (!msg->company || strcmp(msg->company, c->company) != 0))
                    why = "CROSSED INTO ANOTHER COMPANY";
                else if (strcmp(m.topic, want) != 0)
                    why = "topic differs from the expected one";
                else if (!c->expected[idx])
                    why = "matches none of the subscriber's filters";
                else if (c->got[idx])
                    why = "delivered twice";
                if (!why) {
                    c->got[idx] = true;
                    c->nreceived++;
                }
            }
            if (why) {
                if (violations++ < 20)
                    print_error("  %s received '%s' payload '%s': %s (published '%s' by %s)\n",
                                tn_name(c->c), m.topic, m.payload, why,
                                idx < R_PUBLISHES ? msgs[idx].topic : "?",
                                idx < R_PUBLISHES ? tn_name(cl[msgs[idx].publisher].c) : "?");
            }
            tn_msg_free(&m);
        }
        if (c->nreceived < c->nexpected) {
            size_t shown = 0;
            for (size_t m = 0; m < R_PUBLISHES && shown < 10; m++) {
                if (c->expected[m] && !c->got[m]) {
                    print_error("  %s missed '%s' (r%zu by %s)\n", tn_name(c->c),
                                msgs[m].topic, m, tn_name(cl[msgs[m].publisher].c));
                    shown++;
                }
            }
            violations += c->nexpected - c->nreceived;
        }
    }
    if (violations == 0) {
        /* Nothing else may be on its way: all was routed before PINGREQ. */
        for (int i = 0; i < NCLIENTS; i++) {
            tn_msg m;
            /* tn_ping keeps what arrives before PINGRESP in the inbox. */
            tn_ping(cl[i].c);
            while (tn_inbox_len(cl[i].c) && tn_recv(cl[i].c, &m, 0) == 1) {
                if (violations++ < 20)
                    print_error("  %s received unexpected '%s' payload '%s'\n",
                                tn_name(cl[i].c), m.topic, m.payload);
                tn_msg_free(&m);
            }
        }
    }
    for (int i = 0; i < NCLIENTS; i++) {
        free(cl[i].got);
        free(cl[i].expected);
        cl[i].got = cl[i].expected = NULL;
    }
    if (violations || getenv("IT_TENANCY_VERBOSE")) {
        for (int i = 0; i < NCLIENTS; i++) {
            print_error("  %s filters:", tn_name(cl[i].c));
            for (int k = 0; k < R_FILTERS; k++)
                print_error(" '%s'", cl[i].filters[k]);
            print_error("\n");
        }
    }
    if (violations)
        it_fail("randomized (seed %#" PRIx64 "): %zu violations (first ones above)",
                (uint64_t)R_SEED, violations);
    /* The run must have exercised both sides. */
    if (same_company < 150 || would_cross < 150 || cl[PLATFORM].nexpected < 50)
        it_fail("randomized: too few cases (%zu same-company, %zu would-cross, %zu platform)",
                same_company, would_cross, cl[PLATFORM].nexpected);
    for (int i = 0; i < NCLIENTS; i++)
        tn_disconnect(cl[i].c);
    it_broker_stop(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        TN_TEST(test_same_company_delivery_has_no_prefix),
        TN_TEST(test_other_company_receives_nothing_of_acme),
        TN_TEST(test_foreign_company_topic_lands_in_own_namespace),
        TN_TEST(test_unsubscribe_affects_only_own_namespace),
        TN_TEST(test_retained_not_delivered_to_other_company),
        TN_TEST(test_retained_delivered_within_company_with_own_value),
        TN_TEST(test_will_published_inside_company_only),
        TN_TEST(test_retained_will_stays_in_company),
        TN_TEST(test_offline_session_gets_nothing_queued_from_other_company),
        TN_TEST(test_takeover_in_one_company_leaves_same_client_id_of_other),
        TN_TEST(test_session_present_is_per_company),
        TN_TEST(test_sys_invisible_to_devices_visible_to_platform),
        TN_TEST(test_platform_wildcard_spans_companies),
        TN_TEST(test_platform_publish_reaches_only_named_company),
        TN_TEST(test_slashes_and_empty_levels_stay_in_company),
        TN_TEST(test_dollar_levels_stay_in_company),
        TN_TEST(test_utf8_levels_stay_in_company),
        TN_TEST(test_wildcard_topic_names_close_without_crossing),
        TN_TEST(test_invalid_filters_close_without_crossing),
        TN_TEST(test_device_wildcards_skip_dollar_topics_in_namespace),
        TN_TEST(test_platform_publish_to_bare_company_topic_not_delivered),
        TN_TEST(test_platform_publish_to_company_slash_not_delivered),
        TN_TEST(test_retained_bare_company_topic_not_sent_to_device),
        TN_TEST(test_randomized_namespaces_never_cross),
    };
    return TN_RUN(tests);
}
