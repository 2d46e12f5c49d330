/* Unit tests for the fan-out path: a message routed to several sessions is
 * encoded once per variant and copied, and must give every subscriber the
 * bytes it would get encoded alone (topic in its namespace, its QoS, its
 * packet id); drained write buffers go to the broker's pool and a
 * connection's next buffer starts at the size its last one needed. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "broker/alloc.h"
#include "broker/broker.h"

static gmq_config cfg;

static broker *fake_broker(void)
{
    broker *b = calloc(1, sizeof(*b));
    assert_non_null(b);
    b->subs = topictree_new();
    b->retained = retain_new();
    gmq_config_defaults(&cfg);
    b->cfg = &cfg;
    return b;
}

/* A session online on a connection that is never flushed: its output
 * stays in c->wbuf for the test to read. */
static session *online_session(broker *b, const char *key, const char *filter, uint8_t qos)
{
    session *s = session_new(b, key, strlen(key));
    assert_non_null(s);
    assert_int_equal(session_map_put(&b->sessions, s), 0);
    assert_int_equal(session_subscribe(s, filter, strlen(filter), qos), 0);
    conn *c = calloc(1, sizeof(*c));
    assert_non_null(c);
    c->b = b;
    c->fd = -1;
    c->state = CONN_ACTIVE;
    c->tp = &gmq_tcp_transport;
    c->s = s;
    s->c = c;
    return s;
}

static void drop_output(conn *c)
{
    gmq_free(c->wbuf); /* not pooled: these buffers bypass conn_flush */
    c->wbuf = NULL;
    c->woff = c->wlen = c->wcap = 0;
}

static void free_fake_broker(broker *b, session **ss, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        conn *c = ss[i]->c;
        drop_output(c);
        ss[i]->c = NULL;
        free(c);
        session_destroy(ss[i]);
    }
    topictree_free(b->subs);
    retain_free(b->retained);
    session_map_free(&b->sessions);
    conn_wpool_free(b);
    gmq_free(b->enc.buf);
    free(b);
}

/* What s must have been sent for m: the PUBLISH encoded for it alone. */
static void expect_publish(session *s, const gmq_msg *m, uint8_t qos, uint16_t id)
{
    size_t p = s->topic_prefix_len;
    mqtt_publish pub = {
        .topic = {(const uint8_t *)m->topic + p, m->topic_len - p},
        .payload = {m->payload, m->payload_len},
        .qos = qos,
        .packet_id = id,
    };
    uint8_t want[512];
    size_t n = mqtt_encode_publish(want, sizeof(want), &pub);
    assert_true(n <= sizeof(want));
    conn *c = s->c;
    assert_int_equal(c->wlen - c->woff, n);
    assert_memory_equal(c->wbuf + c->woff, want, n);
}

static uint16_t last_id(const session *s)
{
    assert_true(s->ninflight > 0);
    return s->inflight[s->ninflight - 1].packet_id;
}

static void each_subscriber_gets_its_own_encoding(void **state)
{
    (void)state;
    broker *b = fake_broker();
    session *ss[10];
    /* Platform-wide and company clients, every QoS, packet ids that differ
     * in both bytes, and two of each kind in a row (subscribers of one
     * filter are matched in the order they subscribed), so that copies are
     * made for every kind. */
    ss[0] = online_session(b, "/p0", "acme/line/#", 0);
    ss[1] = online_session(b, "/p1", "acme/line/#", 0);
    ss[2] = online_session(b, "/p2", "acme/line/+", 1);
    ss[3] = online_session(b, "/p3", "acme/line/+", 1);
    ss[4] = online_session(b, "/p4", "acme/line/temp", 2);
    ss[5] = online_session(b, "/p5", "acme/line/temp", 2);
    ss[6] = online_session(b, "acme/gw-1", "acme/+/temp", 1);
    ss[7] = online_session(b, "acme/gw-2", "acme/+/temp", 1);
    ss[8] = online_session(b, "acme/gw-3", "acme/line/temp", 0);
    ss[9] = online_session(b, "acme/gw-4", "acme/line/temp", 0);
    static const uint16_t first_id[10] = {0, 0, 100, 0x1234, 7000, 0x0a0b,
                                          0xfffe, 0x3344, 0, 0};
    for (size_t i = 0; i < 10; i++)
        if (first_id[i])
            ss[i]->next_id = first_id[i];

    static const uint8_t payload[] = "21.5 degrees, and then some bytes";
    gmq_msg *m = gmq_msg_new("acme/line/temp", 14, payload, sizeof(payload), 2, false);
    assert_non_null(m);
    router_publish(b, m);
    static const uint8_t qos[10] = {0, 0, 1, 1, 2, 2, 1, 1, 0, 0};
    for (size_t i = 0; i < 10; i++)
        expect_publish(ss[i], m, qos[i], first_id[i]);
    /* Nothing of this message is left to be copied into the next one. */
    assert_null(b->enc.m);
    assert_false(b->enc.valid);
    gmq_msg_unref(m);

    /* A second message, other payload, QoS 1: the same kinds again. */
    for (size_t i = 0; i < 10; i++)
        drop_output(ss[i]->c);
    gmq_msg *m2 = gmq_msg_new("acme/line/temp", 14, (const uint8_t *)"x", 1, 1, false);
    assert_non_null(m2);
    router_publish(b, m2);
    for (size_t i = 0; i < 10; i++) {
        uint16_t id = qos[i] ? last_id(ss[i]) : 0;
        if (qos[i])
            assert_int_equal(id, first_id[i] == 0xffff ? 1 : first_id[i] + 1);
        expect_publish(ss[i], m2, qos[i] ? 1 : 0, id);
    }
    gmq_msg_unref(m2);
    free_fake_broker(b, ss, 10);
}

/* Without memory for the shared copy every subscriber encodes its own. */
static void no_memory_for_the_copy_still_delivers(void **state)
{
    (void)state;
    broker *b = fake_broker();
    session *ss[3];
    ss[0] = online_session(b, "/a", "t/#", 1);
    ss[1] = online_session(b, "/b", "t/#", 1);
    ss[2] = online_session(b, "/c", "t/#", 1);
    for (size_t i = 0; i < 3; i++) /* output buffers exist: only the copy can fail */
        assert_non_null(conn_reserve(ss[i]->c, 4096));
    gmq_msg *m = gmq_msg_new("t/x", 3, (const uint8_t *)"v", 1, 1, false);
    assert_non_null(m);
    /* The allocations of one delivery: the in-flight array, then the copy. */
    gmq_alloc_fail_at(2);
    router_publish(b, m);
    gmq_alloc_fail_at(0);
    for (size_t i = 0; i < 3; i++)
        expect_publish(ss[i], m, 1, last_id(ss[i]));
    gmq_msg_unref(m);
    free_fake_broker(b, ss, 3);
}

/* After a flush the buffer goes to the pool; the next one has the size the
 * last one needed, so a steady fan-out neither allocates nor regrows. */
static void drained_buffers_are_pooled_and_sized(void **state)
{
    (void)state;
    broker *b = fake_broker();
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    conn *c = calloc(1, sizeof(*c));
    assert_non_null(c);
    c->b = b;
    c->fd = sv[0];
    c->state = CONN_ACTIVE;
    c->tp = &gmq_tcp_transport;

    for (int i = 0; i < 5; i++) { /* 5000 bytes: four doublings from 1 KiB */
        uint8_t *p = conn_reserve(c, 1000);
        assert_non_null(p);
        memset(p, 'a' + i, 1000);
        conn_commit(c, 1000);
    }
    assert_int_equal(c->wcap, 8192);
    assert_ptr_equal(b->flush, c);
    b->flush = NULL;
    c->flush_pending = false;
    conn_flush(c);
    assert_null(c->wbuf); /* an idle connection holds no buffer */
    assert_int_equal(conn_pending_bytes(c), 0);
    /* The buffers it outgrew went to the pool too. */
    assert_int_equal(b->wpool_bytes, 1024 + 2048 + 4096 + 8192);
    char got[5000];
    assert_int_equal(recv(sv[1], got, sizeof(got), MSG_WAITALL), 5000);
    assert_int_equal(got[0], 'a');
    assert_int_equal(got[4999], 'e');

    /* The next round starts at 8 KiB, taken from the pool. */
    unsigned long before = gmq_alloc_count();
    uint8_t *p = conn_reserve(c, 10);
    assert_non_null(p);
    assert_int_equal(gmq_alloc_count(), before);
    assert_int_equal(c->wcap, 8192);
    assert_int_equal(b->wpool_bytes, 1024 + 2048 + 4096);
    conn_commit(c, 10);
    b->flush = NULL;
    c->flush_pending = false;
    conn_flush(c);
    /* A small round: the hint comes back down to 1 KiB. */
    p = conn_reserve(c, 10);
    assert_non_null(p);
    assert_int_equal(gmq_alloc_count(), before);
    assert_int_equal(c->wcap, 1024);
    assert_int_equal(b->wpool_bytes, 2048 + 4096 + 8192);

    gmq_free(c->wbuf);
    close(sv[0]);
    close(sv[1]);
    free(c);
    conn_wpool_free(b);
    assert_int_equal(b->wpool_bytes, 0);
    topictree_free(b->subs);
    retain_free(b->retained);
    free(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(each_subscriber_gets_its_own_encoding),
        cmocka_unit_test(no_memory_for_the_copy_still_delivers),
        cmocka_unit_test(drained_buffers_are_pooled_and_sized),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
