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

#include <ftw.h>
#include <time.h>

#include "broker/alloc.h"
#include "broker/broker.h"
#include "broker/persist.h"
#include "store/store.h"

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

/* Persistent sessions count against the caps per namespace and in all;
 * a session leaves the count when it ends, and a namespace whose last one
 * ended leaves the map. */
static void caps_count_persistent_sessions_per_company(void **state)
{
    (void)state;
    broker *b = fake_broker();
    gmq_config *cfg = (gmq_config *)b->cfg;
    cfg->max_sessions = 4;
    cfg->max_sessions_per_company = 2;
    char why[256];
    session *a1 = add_session(b, "acme/gw-1"), *a2 = add_session(b, "acme/gw-2");
    assert_int_equal(session_track(a1), 0);
    assert_false(session_cap_reached(b, "acme", why, sizeof(why)));
    assert_int_equal(session_track(a2), 0);
    assert_int_equal(session_track(a2), 0); /* once only */
    assert_int_equal(b->persistent_sessions, 2);
    assert_true(session_cap_reached(b, "acme", why, sizeof(why)));
    assert_non_null(strstr(why, "company acme"));
    assert_non_null(strstr(why, "max_sessions_per_company (2)"));
    assert_false(session_cap_reached(b, "globex", why, sizeof(why)));
    assert_false(session_cap_reached(b, NULL, why, sizeof(why)));
    /* Sessions of no company are one namespace too. */
    session *p1 = add_session(b, "/svc-1"), *p2 = add_session(b, "/svc-2");
    assert_int_equal(session_track(p1), 0);
    assert_int_equal(session_track(p2), 0);
    assert_true(session_cap_reached(b, NULL, why, sizeof(why)));
    /* The broker-wide cap applies to every company. */
    assert_true(session_cap_reached(b, "globex", why, sizeof(why)));
    assert_non_null(strstr(why, "max_sessions (4)"));
    /* An untracked (clean) session counts for nothing. */
    session *clean = add_session(b, "acme/tmp");
    clean->clean = true;
    session_destroy(clean);
    assert_int_equal(b->persistent_sessions, 4);
    session_destroy(a1);
    assert_int_equal(b->persistent_sessions, 3);
    assert_false(session_cap_reached(b, "acme", why, sizeof(why)));
    assert_false(session_cap_reached(b, "globex", why, sizeof(why)));
    session_destroy(a2);
    session_destroy(p1);
    session_destroy(p2);
    assert_int_equal(b->persistent_sessions, 0);
    assert_int_equal(b->company_sessions.count, 0);
    strmap_free(&b->company_sessions);
    free_fake_broker(b);
}

static void expect_offline_order(broker *b, const char *const *keys, size_t n)
{
    session *prev = NULL, *s = b->offline_head;
    for (size_t i = 0; i < n; i++, prev = s, s = s->offline_next) {
        assert_non_null(s);
        assert_string_equal(s->key, keys[i]);
        assert_ptr_equal(s->offline_prev, prev);
    }
    assert_null(s);
    assert_ptr_equal(b->offline_tail, prev);
}

/* The offline list is kept oldest first (restored sessions are sorted once
 * loaded), and the sweep discards only the sessions that are due, at most
 * max per call. */
static void expiry_discards_oldest_offline_sessions_first(void **state)
{
    (void)state;
    broker *b = fake_broker();
    ((gmq_config *)b->cfg)->session_expiry = 10;
    static const int64_t since[] = {3000, 1000, 5000, 2000, 4000};
    session *s[5];
    char key[32];
    b->loading = true; /* as when restoring: any order */
    for (int i = 0; i < 5; i++) {
        snprintf(key, sizeof(key), "acme/s%d", i);
        s[i] = add_session(b, key);
        assert_int_equal(session_track(s[i]), 0);
        session_offline_since(s[i], since[i]);
    }
    b->loading = false;
    session_sort_offline(b);
    expect_offline_order(b, (const char *const[]){"acme/s1", "acme/s3", "acme/s0", "acme/s4",
                                                  "acme/s2"},
                         5);
    /* At 12.5 s, the sessions offline since 1 s and 2 s are due. */
    assert_int_equal(session_expire(b, 12500, 100), 2);
    assert_null(session_map_get(&b->sessions, "acme/s1", 7));
    assert_null(session_map_get(&b->sessions, "acme/s3", 7));
    assert_int_equal(b->stats.sessions_expired, 2);
    assert_int_equal(b->persistent_sessions, 3);
    /* A client that came back leaves the list and is never expired. */
    session_came_online(s[0]);
    expect_offline_order(b, (const char *const[]){"acme/s4", "acme/s2"}, 2);
    assert_int_equal(session_expire(b, 100000, 1), 1); /* at most max */
    expect_offline_order(b, (const char *const[]){"acme/s2"}, 1);
    /* A wall clock stepped back does not break the order. */
    session_offline_since(s[0], 4000);
    expect_offline_order(b, (const char *const[]){"acme/s2", "acme/s0"}, 2);
    assert_true(s[0]->offline_since == 5000);
    assert_int_equal(session_expire(b, 14999, 100), 0);
    assert_int_equal(session_expire(b, 15000, 100), 2);
    assert_null(b->offline_head);
    assert_int_equal(b->sessions.count, 0);
    assert_int_equal(b->persistent_sessions, 0);
    /* Expiry off: nothing is ever due. */
    ((gmq_config *)b->cfg)->session_expiry = 0;
    session *t = add_session(b, "/t");
    session_offline_since(t, 1);
    assert_int_equal(session_expire(b, INT64_MAX / 2, 100), 0);
    session_destroy(t);
    assert_null(b->offline_head);
    strmap_free(&b->company_sessions);
    free_fake_broker(b);
}

static int64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int remove_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

/* A broker restoring the store at path, with session_expiry 1 h. */
static broker *restored_broker(struct ev_loop *loop, gmq_config *cfg, const char *path)
{
    gmq_config_defaults(cfg);
    cfg->session_expiry = 3600;
    cfg->persistence_file = (char *)path;
    broker *b = broker_new(loop, cfg);
    assert_non_null(b);
    assert_int_equal(persist_open(b), 0);
    return b;
}

/* A stored offline time still to come (the clock was stepped back, or the
 * database comes from another host) is restored as the time of the start,
 * and written back so: kept, it would be the offline list's tail, every
 * client leaving later would be dated after it, and none would expire
 * before it. */
static void restored_offline_time_in_the_future_counts_from_start(void **state)
{
    (void)state;
    char dir[256], path[300], err[256];
    const char *tmp = getenv("TMPDIR");
    snprintf(dir, sizeof(dir), "%s/gatemq-sess-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof(path), "%s/gatemq.db", dir);
    int64_t t0 = wall_ms();
    store *st = store_open(path, STORE_SYNC_NORMAL, err, sizeof(err));
    assert_non_null(st);
    assert_int_equal(store_put_session(st, "/future", t0 / 1000, PRINCIPAL_ANONYMOUS, NULL), 0);
    assert_int_equal(store_put_session_offline(st, "/future", t0 + 86400000), 0); /* a day on */
    assert_int_equal(store_put_session(st, "/past", t0 / 1000, PRINCIPAL_ANONYMOUS, NULL), 0);
    assert_int_equal(store_put_session_offline(st, "/past", t0 - 5000), 0);
    store_close(st); /* commits */

    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    gmq_config cfg;
    broker *b = restored_broker(loop, &cfg, path);
    int64_t t1 = wall_ms();
    session *future = session_map_get(&b->sessions, "/future", 7);
    session *past = session_map_get(&b->sessions, "/past", 5);
    assert_true(future && past);
    assert_true(future->offline_since >= t0 && future->offline_since <= t1);
    assert_int_equal(past->offline_since, t0 - 5000);
    assert_ptr_equal(b->offline_head, past);
    assert_ptr_equal(b->offline_tail, future);
    broker_free(b); /* commits what the restore wrote */

    /* Restored again: the stored time is the first start's, and a client
     * leaving now is dated now, so all expire on time. */
    b = restored_broker(loop, &cfg, path);
    future = session_map_get(&b->sessions, "/future", 7);
    assert_non_null(future);
    assert_true(future->offline_since >= t0 && future->offline_since <= t1);
    session *later = session_new(b, "/later", 6);
    assert_non_null(later);
    assert_int_equal(session_map_put(&b->sessions, later), 0);
    assert_int_equal(session_track(later), 0);
    int64_t t2 = wall_ms();
    session_went_offline(later);
    assert_true(later->offline_since >= t2 && later->offline_since <= wall_ms());
    assert_ptr_equal(b->offline_tail, later);
    assert_int_equal(session_expire(b, t2 + 3600000 + 1000, 100), 3);
    assert_null(b->offline_head);
    broker_free(b);
    ev_loop_destroy(loop);
    nftw(dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
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
        cmocka_unit_test(caps_count_persistent_sessions_per_company),
        cmocka_unit_test(expiry_discards_oldest_offline_sessions_first),
        cmocka_unit_test(restored_offline_time_in_the_future_counts_from_start),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
