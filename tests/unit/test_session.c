/* Unit tests for session bookkeeping that needs no connection: the client id
 * map, subscriptions kept in step with the topic tree, QoS 2 receipt ids. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "broker/alloc.h"
#include "broker/broker.h"

static void count_match(void *subscriber, uint8_t qos, void *arg)
{
    (void)subscriber;
    (void)qos;
    (*(int *)arg)++;
}

static broker *fake_broker(void)
{
    broker *b = calloc(1, sizeof(*b));
    assert_non_null(b);
    b->subs = topictree_new();
    b->retained = retain_new();
    static gmq_config cfg;
    gmq_config_defaults(&cfg);
    b->cfg = &cfg;
    return b;
}

static void free_fake_broker(broker *b)
{
    topictree_free(b->subs);
    retain_free(b->retained);
    session_map_free(&b->sessions);
    free(b);
}

static session *add_session(broker *b, const char *id)
{
    session *s = session_new(b, id, strlen(id));
    assert_non_null(s);
    assert_int_equal(session_map_put(&b->sessions, s), 0);
    return s;
}

static void session_key_names_company_and_client(void **state)
{
    (void)state;
    char key[64];
    assert_int_equal(session_make_key(key, sizeof(key), "acme", "gw-1", 4), 0);
    assert_string_equal(key, "acme/gw-1");
    assert_int_equal(session_make_key(key, sizeof(key), NULL, "ingest-1", 8), 0);
    assert_string_equal(key, "/ingest-1");
    /* A platform client id that looks like a company key stays apart. */
    assert_int_equal(session_make_key(key, sizeof(key), NULL, "acme/gw-1", 9), 0);
    assert_string_equal(key, "/acme/gw-1");
    assert_int_equal(session_make_key(key, 8, "acme", "gw-1", 4), -1);
    broker *b = fake_broker();
    session *s = session_new(b, "/acme/gw-1", 10);
    assert_string_equal(s->client_id, "acme/gw-1");
    assert_int_equal(s->topic_prefix_len, 0); /* no company: internal topics */
    session_destroy(s);
    assert_null(session_new(b, "no-slash", 8));
    free_fake_broker(b);
}

static void map_finds_every_session_by_id(void **state)
{
    (void)state;
    broker *b = fake_broker();
    char id[32];
    for (int i = 0; i < 1000; i++) {
        snprintf(id, sizeof(id), "acme/gw-%d", i);
        add_session(b, id);
    }
    assert_int_equal(b->sessions.count, 1000);
    for (int i = 0; i < 1000; i++) {
        snprintf(id, sizeof(id), "acme/gw-%d", i);
        session *s = session_map_get(&b->sessions, id, strlen(id));
        assert_non_null(s);
        assert_string_equal(s->key, id);
        assert_string_equal(s->client_id, id + 5); /* the client's own id */
        assert_int_equal(s->topic_prefix_len, 5); /* "acme/" */
    }
    assert_null(session_map_get(&b->sessions, "acme/gw-1000", 12));
    /* The same client id in another company is another session. */
    assert_null(session_map_get(&b->sessions, "globex/gw-1", 11));
    /* A prefix of a stored id is a different id. */
    assert_null(session_map_get(&b->sessions, "acme/gw-1", 8));
    for (int i = 0; i < 1000; i++) {
        snprintf(id, sizeof(id), "acme/gw-%d", i);
        session_destroy(session_map_get(&b->sessions, id, strlen(id)));
    }
    assert_int_equal(b->sessions.count, 0);
    free_fake_broker(b);
}

/* Deleting in random order exercises the backward shift across wrapped
 * probe runs: every remaining id must stay reachable after each delete. */
static void map_delete_keeps_remaining_reachable(void **state)
{
    (void)state;
    broker *b = fake_broker();
    enum { N = 600 };
    session *all[N];
    char id[32];
    for (int i = 0; i < N; i++) {
        snprintf(id, sizeof(id), "/c%d", i * 7919);
        all[i] = add_session(b, id);
    }
    srand(7);
    for (int i = N - 1; i > 0; i--) {
        int j = rand() % (i + 1);
        session *t = all[i];
        all[i] = all[j];
        all[j] = t;
    }
    for (int i = 0; i < N; i++) {
        session_destroy(all[i]);
        for (int k = i + 1; k < N; k += 37) {
            const char *cid = all[k]->key;
            assert_ptr_equal(session_map_get(&b->sessions, cid, strlen(cid)), all[k]);
        }
    }
    assert_int_equal(b->sessions.count, 0);
    free_fake_broker(b);
}

static void subscriptions_follow_the_topic_tree(void **state)
{
    (void)state;
    broker *b = fake_broker();
    session *s = add_session(b, "/gw-1");
    assert_int_equal(session_subscribe(s, "a/+", 3, 1), 0);
    assert_int_equal(session_subscribe(s, "a/#", 3, 2), 0);
    /* Same filter again replaces, not adds [MQTT-3.8.4-3]. */
    assert_int_equal(session_subscribe(s, "a/+", 3, 0), 0);
    assert_int_equal(s->nsubs, 2);
    assert_int_equal(topictree_count(b->subs), 2);
    int n = 0;
    topictree_match(b->subs, "a/b", 3, count_match, &n);
    assert_int_equal(n, 2);
    assert_true(session_unsubscribe(s, "a/#", 3));
    assert_false(session_unsubscribe(s, "a/#", 3));
    assert_int_equal(topictree_count(b->subs), 1);
    /* Ending the session removes what is left from the tree. */
    session_destroy(s);
    assert_int_equal(topictree_count(b->subs), 0);
    free_fake_broker(b);
}

static void qos2_receipt_ids_are_a_set(void **state)
{
    (void)state;
    broker *b = fake_broker();
    session *s = add_session(b, "/gw-2");
    for (uint16_t id = 1; id <= 100; id++)
        assert_int_equal(session_rx_qos2_add(s, id), 0);
    assert_true(session_rx_qos2_has(s, 50));
    session_rx_qos2_del(s, 50);
    assert_false(session_rx_qos2_has(s, 50));
    assert_true(session_rx_qos2_has(s, 100));
    session_rx_qos2_del(s, 50); /* unknown id: nothing happens */
    assert_int_equal(s->nrx_qos2, 99);
    session_destroy(s);
    free_fake_broker(b);
}

/* Offline persistent session: QoS 1/2 messages queue up to the limit, QoS 0
 * are not kept, and drops are counted. */
static void offline_session_queues_up_to_the_limit(void **state)
{
    (void)state;
    broker *b = fake_broker();
    gmq_config cfg;
    gmq_config_defaults(&cfg);
    cfg.max_queued = 3;
    b->cfg = &cfg;
    session *s = add_session(b, "/gw-3");
    gmq_msg *m = gmq_msg_new("t", 1, (const uint8_t *)"x", 1, 1, false);
    session_deliver(s, m, 0, false);
    assert_int_equal(s->qlen, 0);
    for (int i = 0; i < 5; i++)
        session_deliver(s, m, 1, false);
    assert_int_equal(s->qlen, 3);
    assert_int_equal(s->qbytes, 3);
    assert_int_equal(b->stats.msgs_dropped, 3); /* one QoS 0, two over the limit */
    assert_int_equal(m->refs, 4);
    gmq_msg_unref(m);
    session_destroy(s);
    free_fake_broker(b);
}

static void allocation_failures_leave_session_consistent(void **state)
{
    (void)state;
    broker *b = fake_broker();
    session *s = add_session(b, "/gw-4");
    for (unsigned long n = 1;; n++) {
        gmq_alloc_fail_at(n);
        int rc = session_subscribe(s, "x/y/z", 5, 1);
        gmq_alloc_fail_at(0);
        if (rc == 0)
            break;
        assert_int_equal(s->nsubs, 0);
        assert_int_equal(topictree_count(b->subs), 0);
        assert_true(n < 50);
    }
    assert_int_equal(s->nsubs, 1);
    session_destroy(s);
    free_fake_broker(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(session_key_names_company_and_client),
        cmocka_unit_test(map_finds_every_session_by_id),
        cmocka_unit_test(map_delete_keeps_remaining_reachable),
        cmocka_unit_test(subscriptions_follow_the_topic_tree),
        cmocka_unit_test(qos2_receipt_ids_are_a_set),
        cmocka_unit_test(offline_session_queues_up_to_the_limit),
        cmocka_unit_test(allocation_failures_leave_session_consistent),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
