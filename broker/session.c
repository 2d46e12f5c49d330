/*
 * session.c - MQTT session state and delivery to one client.
 *
 * A session outlives its connections when clean session is 0 [MQTT-3.1.2-4]:
 * it keeps the subscriptions, the outgoing QoS 1/2 messages in flight, the
 * messages queued behind the in-flight window or while the client is offline,
 * and the QoS 2 packet ids received but not yet released.
 *
 * Outgoing order: messages leave in the order they were handed to
 * session_deliver, in-flight ones are resent in that order on reconnect
 * [MQTT-4.4.0-1, MQTT-4.6.0-2..4].
 */
#include <assert.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "broker/alloc.h"
#include "broker/broker.h"
#include "broker/log.h"
#include "broker/persist.h"
#include "store/store.h"

/* A QoS 0 message is dropped rather than buffered past this many bytes of
 * unwritten output: a client that does not read must not grow the broker. */
#define QOS0_WBUF_LIMIT (4u * 1024 * 1024)

int session_make_key(char *out, size_t cap, const char *company, const char *id, size_t idlen)
{
    size_t clen = company ? strlen(company) : 0;
    if (clen + 1 + idlen + 1 > cap)
        return -1;
    memcpy(out, company ? company : "", clen);
    out[clen] = '/';
    memcpy(out + clen + 1, id, idlen);
    out[clen + 1 + idlen] = '\0';
    return 0;
}

session *session_new(broker *b, const char *key, size_t keylen)
{
    const char *slash = memchr(key, '/', keylen);
    if (!slash)
        return NULL; /* not a session key */
    session *s = gmq_calloc(1, sizeof(*s));
    if (!s)
        return NULL;
    s->b = b;
    if (!(s->key = gmq_strndup(key, keylen))) {
        gmq_free(s);
        return NULL;
    }
    size_t company_len = (size_t)(slash - key);
    if (company_len && !(s->company = gmq_strndup(key, company_len))) {
        gmq_free(s->key);
        gmq_free(s);
        return NULL;
    }
    s->client_id = s->key + company_len + 1;
    s->topic_prefix_len = company_len ? (uint16_t)(company_len + 1) : 0;
    s->next_id = 1;
    return s;
}

void session_discard(session *s)
{
    persist_session_delete(s);
    session_destroy(s);
}

static void untrack(session *s);
static void unlist_offline(session *s);

void session_destroy(session *s)
{
    broker *b = s->b;
    assert(!s->c);
    untrack(s);
    unlist_offline(s);
    for (size_t i = 0; i < s->nsubs; i++) {
        topictree_remove(b->subs, s->subs[i].filter, strlen(s->subs[i].filter), s);
        gmq_free(s->subs[i].filter);
    }
    gmq_free(s->subs);
    strmap_free(&s->subidx);
    for (size_t i = 0; i < s->ninflight; i++)
        gmq_msg_unref(s->inflight[i].msg);
    gmq_free(s->inflight);
    for (size_t i = 0; i < s->qlen; i++)
        gmq_msg_unref(s->queue[(s->qhead + i) % s->qcap].msg);
    gmq_free(s->queue);
    gmq_free(s->rx_qos2);
    session_map_del(&b->sessions, s);
    gmq_free(s->username);
    gmq_free(s->company);
    gmq_free(s->key);
    gmq_free(s);
}

/* ---- caps on persistent sessions ------------------------------------------- */

/* Persistent sessions of one namespace; the map key is name. */
struct session_count {
    size_t n;
    char name[];
};

static struct session_count *count_of(const broker *b, const char *company)
{
    const char *name = company ? company : "";
    return strmap_get(&b->company_sessions, name, strlen(name));
}

int session_track(session *s)
{
    broker *b = s->b;
    if (s->counted)
        return 0;
    struct session_count *sc = count_of(b, s->company);
    if (!sc) {
        const char *name = s->company ? s->company : "";
        size_t len = strlen(name);
        if (!(sc = gmq_malloc(sizeof(*sc) + len + 1)))
            return -1;
        sc->n = 0;
        memcpy(sc->name, name, len + 1);
        if (strmap_put(&b->company_sessions, sc->name, sc)) {
            gmq_free(sc);
            return -1;
        }
    }
    sc->n++;
    b->persistent_sessions++;
    s->counted = true;
    return 0;
}

static void untrack(session *s)
{
    broker *b = s->b;
    if (!s->counted)
        return;
    s->counted = false;
    b->persistent_sessions--;
    struct session_count *sc = count_of(b, s->company);
    assert(sc && sc->n > 0);
    if (--sc->n == 0) {
        strmap_del(&b->company_sessions, sc->name);
        gmq_free(sc);
    }
}

bool session_cap_reached(const broker *b, const char *company, char *why, size_t len)
{
    const gmq_config *cfg = b->cfg;
    if (cfg->max_sessions && b->persistent_sessions >= cfg->max_sessions) {
        snprintf(why, len, "max_sessions (%u) persistent sessions reached (company %s)",
                 cfg->max_sessions, company ? company : "(none)");
        return true;
    }
    const struct session_count *sc = count_of(b, company);
    if (cfg->max_sessions_per_company && sc && sc->n >= cfg->max_sessions_per_company) {
        snprintf(why, len, "company %s has max_sessions_per_company (%u) persistent sessions",
                 company ? company : "(none)", cfg->max_sessions_per_company);
        return true;
    }
    return false;
}

/* ---- expiry of offline persistent sessions ----------------------------------
 *
 * b->offline lists the persistent sessions whose client is away, oldest
 * first: a session joins at the tail when its client goes (times only grow,
 * see session_went_offline) and leaves when it comes back or ends, so the
 * sweep looks only at sessions that are due, never at every session. */

static void unlist_offline(session *s)
{
    broker *b = s->b;
    if (!s->offline_listed)
        return;
    if (s->offline_prev)
        s->offline_prev->offline_next = s->offline_next;
    else
        b->offline_head = s->offline_next;
    if (s->offline_next)
        s->offline_next->offline_prev = s->offline_prev;
    else
        b->offline_tail = s->offline_prev;
    s->offline_prev = s->offline_next = NULL;
    s->offline_listed = false;
}

static int64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void session_went_offline(session *s)
{
    session_offline_since(s, wall_ms());
}

void session_offline_since(session *s, int64_t since_ms)
{
    broker *b = s->b;
    assert(!s->clean && !s->c);
    unlist_offline(s);
    /* A wall clock stepped back must not break the order; while restoring,
     * session_sort_offline orders the list afterwards. */
    if (!b->loading && b->offline_tail && since_ms < b->offline_tail->offline_since)
        since_ms = b->offline_tail->offline_since;
    s->offline_since = since_ms;
    s->offline_prev = b->offline_tail;
    s->offline_next = NULL;
    if (b->offline_tail)
        b->offline_tail->offline_next = s;
    else
        b->offline_head = s;
    b->offline_tail = s;
    s->offline_listed = true;
    persist_session_offline(s);
}

void session_came_online(session *s)
{
    unlist_offline(s);
    s->offline_since = 0;
}

/* Merge sort of the list by offline_since: no allocation, O(n log n). */
static session *merge_sorted(session *a, session *b)
{
    session head = {0}, *t = &head;
    while (a && b) {
        session **from = a->offline_since <= b->offline_since ? &a : &b;
        t->offline_next = *from;
        t = *from;
        *from = (*from)->offline_next;
    }
    t->offline_next = a ? a : b;
    return head.offline_next;
}

static session *sort_list(session *list)
{
    if (!list || !list->offline_next)
        return list;
    session *slow = list, *fast = list->offline_next;
    while (fast && fast->offline_next) {
        slow = slow->offline_next;
        fast = fast->offline_next->offline_next;
    }
    session *second = slow->offline_next;
    slow->offline_next = NULL;
    return merge_sorted(sort_list(list), sort_list(second));
}

void session_sort_offline(broker *b)
{
    b->offline_head = sort_list(b->offline_head);
    session *prev = NULL;
    for (session *s = b->offline_head; s; s = s->offline_next) {
        s->offline_prev = prev;
        prev = s;
    }
    b->offline_tail = prev;
}

size_t session_expire(broker *b, int64_t now_ms, size_t max)
{
    double expiry = b->cfg->session_expiry;
    if (expiry <= 0)
        return 0;
    int64_t limit = (int64_t)(expiry * 1000);
    size_t n = 0;
    while (n < max && b->offline_head && now_ms - b->offline_head->offline_since >= limit) {
        session *s = b->offline_head;
        LOG_INFO("client %s: persistent session%s%s expired after %.0f s offline", s->client_id,
                 s->company ? " of " : "", s->company ? s->company : "",
                 (double)(now_ms - s->offline_since) / 1000.0);
        session_discard(s);
        b->stats.sessions_expired++;
        n++;
    }
    return n;
}

/* Sessions discarded per sweep at most, so that a mass expiry (a fleet that
 * went away together) cannot hold the loop: the rest go on the next ticks. */
#define EXPIRE_PER_SWEEP 10000

static void on_expiry_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    broker *b = w->data;
    size_t n = session_expire(b, wall_ms(), EXPIRE_PER_SWEEP);
    if (n)
        LOG_NOTICE("session_expiry: %zu persistent session(s) offline for %.0f s or more "
                   "discarded",
                   n, b->cfg->session_expiry);
}

void session_expiry_start(broker *b)
{
    double expiry = b->cfg->session_expiry;
    if (expiry <= 0)
        return;
    /* A session lives at most a tenth of the expiry (or a minute) longer. */
    double every = expiry / 10 < 60 ? expiry / 10 : 60;
    ev_timer_init(&b->expiry_timer, on_expiry_timer, every, every);
    b->expiry_timer.data = b;
    ev_timer_start(b->loop, &b->expiry_timer);
}

/* ---- session map ------------------------------------------------------------ */

session *session_map_get(const session_map *m, const char *key, size_t len)
{
    return strmap_get(m, key, len);
}

int session_map_put(session_map *m, session *s)
{
    return strmap_put(m, s->key, s);
}

void session_map_del(session_map *m, session *s)
{
    if (strmap_get(m, s->key, strlen(s->key)) == s)
        strmap_del(m, s->key);
}

void session_map_free(session_map *m)
{
    strmap_free(m);
}

/* ---- subscriptions ----------------------------------------------------- */

/* Position of filter in s->subs, or -1. */
static ptrdiff_t sub_find(const session *s, const char *filter, size_t flen)
{
    uintptr_t pos = (uintptr_t)strmap_get(&s->subidx, filter, flen);
    return pos ? (ptrdiff_t)(pos - 1) : -1;
}

int session_subscribe(session *s, const char *filter, size_t flen, uint8_t qos)
{
    ptrdiff_t at = sub_find(s, filter, flen);
    if (at >= 0) {
        session_sub *e = &s->subs[at];
        /* Same filter: replace the subscription [MQTT-3.8.4-3]. */
        if (topictree_add(s->b->subs, filter, flen, s, qos))
            return -1;
        e->qos = qos;
        persist_subscription(s, e->filter, qos);
        return 0;
    }
    unsigned max = s->b->cfg->max_subscriptions;
    if (max && s->nsubs >= max && !s->b->loading) {
        LOG_INFO("client %s: subscription refused: max_subscriptions (%u) reached", s->client_id,
                 max);
        return -1;
    }
    if (GMQ_GROW(s->subs, s->capsubs, s->nsubs + 1, 4))
        return -1;
    char *copy = gmq_strndup(filter, flen);
    if (!copy)
        return -1;
    if (strmap_put(&s->subidx, copy, (void *)(uintptr_t)(s->nsubs + 1))) {
        gmq_free(copy);
        return -1;
    }
    if (topictree_add(s->b->subs, filter, flen, s, qos)) {
        strmap_del(&s->subidx, copy);
        gmq_free(copy);
        return -1;
    }
    s->subs[s->nsubs++] = (session_sub){.filter = copy, .qos = qos};
    persist_subscription(s, copy, qos);
    return 0;
}

bool session_unsubscribe(session *s, const char *filter, size_t flen)
{
    ptrdiff_t at = sub_find(s, filter, flen);
    if (at < 0)
        return false;
    session_sub *e = &s->subs[at];
    topictree_remove(s->b->subs, filter, flen, s);
    persist_unsubscription(s, e->filter);
    strmap_del(&s->subidx, e->filter);
    gmq_free(e->filter);
    s->subs[at] = s->subs[--s->nsubs];
    if ((size_t)at < s->nsubs) {
        /* The last one moved into the hole: re-point its index entry. A
         * delete then a put into a map that just lost two keys never grows
         * it, so this cannot fail. */
        strmap_del(&s->subidx, s->subs[at].filter);
        int rc = strmap_put(&s->subidx, s->subs[at].filter, (void *)(uintptr_t)(at + 1));
        assert(rc == 0);
        (void)rc;
    }
    return true;
}

/* ---- sending ----------------------------------------------------------- */

static bool online(const session *s)
{
    return s->c && s->c->state == CONN_ACTIVE;
}

static int write_publish(session *s, gmq_msg *m, uint8_t qos, uint16_t id, bool dup,
                         bool retain)
{
    /* A company's client sees its topics without the company prefix; every
     * message it can match carries that prefix (its filters all do). */
    assert(m->topic_len > s->topic_prefix_len &&
           memcmp(m->topic, s->key, s->topic_prefix_len) == 0);
    struct pub_encoding *enc = &s->b->enc;
    bool cached = enc->m == m; /* routed to several sessions: see router_publish */
    if (cached && enc->valid && enc->prefix == s->topic_prefix_len && enc->qos == qos &&
        enc->dup == dup && enc->retain == retain) {
        /* The same bytes as for the last subscriber but the packet id. */
        uint8_t *buf = conn_reserve(s->c, enc->len);
        if (!buf)
            return -1;
        memcpy(buf, enc->buf, enc->len);
        if (qos) {
            /* The id follows the topic, just before the payload. */
            size_t at = enc->len - m->payload_len - 2;
            buf[at] = (uint8_t)(id >> 8);
            buf[at + 1] = (uint8_t)(id & 0xff);
        }
        conn_commit(s->c, enc->len);
        s->b->stats.msgs_sent++;
        return 0;
    }
    mqtt_publish p = {
        .topic = {(const uint8_t *)m->topic + s->topic_prefix_len,
                  m->topic_len - s->topic_prefix_len},
        .payload = {m->payload, m->payload_len},
        .qos = qos,
        .dup = dup,
        .retain = retain,
        .packet_id = id,
    };
    size_t n = mqtt_encode_publish(NULL, 0, &p);
    uint8_t *buf = conn_reserve(s->c, n);
    if (!buf)
        return -1;
    mqtt_encode_publish(buf, n, &p);
    if (cached) {
        /* Keep a copy for the next subscriber; without memory, no copy. */
        enc->valid = false;
        if (GMQ_GROW(enc->buf, enc->cap, n, n) == 0) {
            memcpy(enc->buf, buf, n);
            *enc = (struct pub_encoding){
                .m = m, .valid = true, .dup = dup, .retain = retain, .qos = qos,
                .prefix = s->topic_prefix_len, .len = n, .buf = enc->buf, .cap = enc->cap};
        }
    }
    conn_commit(s->c, n);
    s->b->stats.msgs_sent++;
    return 0;
}

static bool id_in_flight(const session *s, uint16_t id)
{
    for (size_t i = 0; i < s->ninflight; i++)
        if (s->inflight[i].packet_id == id)
            return true;
    return false;
}

static uint16_t next_packet_id(session *s)
{
    /* The window is at most 65535 entries, so a free id always exists. */
    for (;;) {
        uint16_t id = s->next_id++;
        if (s->next_id == 0)
            s->next_id = 1;
        if (id && !id_in_flight(s, id))
            return id;
    }
}

/* Put a QoS 1/2 message in flight and send it. seq is its delivery number;
 * was_queued says it already has a (queued) row in the store. */
static int send_inflight(session *s, gmq_msg *m, uint8_t qos, bool retain, uint64_t seq,
                         bool was_queued)
{
    if (GMQ_GROW(s->inflight, s->capinflight, s->ninflight + 1, 8))
        return -1;
    uint16_t id = next_packet_id(s);
    if (write_publish(s, m, qos, id, false, retain))
        return -1;
    s->inflight[s->ninflight++] = (outmsg){
        .msg = gmq_msg_ref(m),
        .seq = seq,
        .packet_id = id,
        .qos = qos,
        .state = qos == 1 ? OUT_WAIT_PUBACK : OUT_WAIT_PUBREC,
        .retain = retain,
    };
    persist_delivery(s, seq, m, qos, retain, id, qos == 1 ? STORE_WAIT_PUBACK : STORE_WAIT_PUBREC,
                     !was_queued);
    return 0;
}

static bool queue_full(const session *s, const gmq_msg *m)
{
    const gmq_config *cfg = s->b->cfg;
    if (cfg->max_queued && s->qlen >= cfg->max_queued)
        return true;
    if (cfg->max_queued_bytes && s->qbytes + m->payload_len > cfg->max_queued_bytes)
        return true;
    return false;
}

static int enqueue(session *s, gmq_msg *m, uint8_t qos, bool retain, uint64_t seq)
{
    if (s->qlen == s->qcap) {
        size_t ncap = s->qcap ? s->qcap * 2 : 8;
        queued *v = gmq_malloc(ncap * sizeof(*v));
        if (!v)
            return -1;
        for (size_t i = 0; i < s->qlen; i++)
            v[i] = s->queue[(s->qhead + i) % s->qcap];
        gmq_free(s->queue);
        s->queue = v;
        s->qcap = ncap;
        s->qhead = 0;
    }
    s->queue[(s->qhead + s->qlen) % s->qcap] =
        (queued){.msg = gmq_msg_ref(m), .seq = seq, .qos = qos, .retain = retain};
    s->qlen++;
    s->qbytes += m->payload_len;
    return 0;
}

void session_deliver(session *s, gmq_msg *m, uint8_t qos, bool retain)
{
    broker *b = s->b;
    if (qos == 0) {
        /* QoS 0 is not kept for offline clients [MQTT-3.1.2-5 allows it]. */
        if (!online(s) || conn_pending_bytes(s->c) > QOS0_WBUF_LIMIT ||
            write_publish(s, m, 0, 0, false, retain)) {
            b->stats.msgs_dropped++;
        }
        return;
    }
    uint64_t seq = ++s->next_seq;
    if (online(s) && s->qlen == 0 && s->ninflight < b->cfg->max_inflight) {
        if (send_inflight(s, m, qos, retain, seq, false) == 0)
            return;
    }
    if (queue_full(s, m) || enqueue(s, m, qos, retain, seq)) {
        b->stats.msgs_dropped++;
        LOG_DEBUG("client %s: queue full, message on %s dropped", s->client_id, m->topic);
        return;
    }
    persist_delivery(s, seq, m, qos, retain, 0, STORE_QUEUED, true);
    session_pump(s);
}

void session_pump(session *s)
{
    while (online(s) && s->qlen && s->ninflight < s->b->cfg->max_inflight) {
        queued q = s->queue[s->qhead];
        if (send_inflight(s, q.msg, q.qos, q.retain, q.seq, true)) {
            /* No memory: it stays queued and is tried again on the next
             * acknowledgement. With none to come, the connection is closed
             * instead, and the client's reconnection resumes the queue. */
            if (s->ninflight == 0)
                conn_close(s->c, "no memory for output");
            return;
        }
        s->qhead = (s->qhead + 1) % s->qcap;
        s->qlen--;
        s->qbytes -= q.msg->payload_len;
        gmq_msg_unref(q.msg);
    }
}

void session_resume(session *s)
{
    /* Resend unacknowledged PUBLISH (DUP=1) and PUBREL, in original order
     * [MQTT-4.4.0-1, MQTT-3.3.1-1]. */
    for (size_t i = 0; i < s->ninflight && online(s); i++) {
        outmsg *o = &s->inflight[i];
        if (o->state == OUT_WAIT_PUBCOMP)
            conn_send_packet_id(s->c, MQTT_PUBREL, o->packet_id); /* closes c on failure */
        else if (write_publish(s, o->msg, o->qos, o->packet_id, true, o->retain))
            /* A message left out would wait for the next connection while
             * later ones overtake it: end this one, the next resends all. */
            conn_close(s->c, "no memory for output");
    }
    session_pump(s);
}

static outmsg *find_inflight(session *s, uint16_t id, size_t *index)
{
    for (size_t i = 0; i < s->ninflight; i++)
        if (s->inflight[i].packet_id == id) {
            *index = i;
            return &s->inflight[i];
        }
    return NULL;
}

static void remove_inflight(session *s, size_t i)
{
    persist_delivery_done(s, s->inflight[i].seq, s->inflight[i].msg);
    gmq_msg_unref(s->inflight[i].msg);
    memmove(&s->inflight[i], &s->inflight[i + 1],
            (s->ninflight - i - 1) * sizeof(s->inflight[0]));
    s->ninflight--;
}

int session_ack(session *s, uint8_t type, uint16_t id)
{
    size_t i;
    outmsg *o = find_inflight(s, id, &i);
    switch (type) {
    case MQTT_PUBACK:
        if (o && o->state == OUT_WAIT_PUBACK) {
            remove_inflight(s, i);
            session_pump(s);
        }
        return 0;
    case MQTT_PUBREC:
        if (o && (o->state == OUT_WAIT_PUBREC || o->state == OUT_WAIT_PUBCOMP)) {
            /* The receiver owns the message now; keep only the id [MQTT-4.3.3-1]. */
            if (o->msg) {
                persist_delivery(s, o->seq, o->msg, o->qos, o->retain, id, STORE_WAIT_PUBCOMP,
                                 false);
                persist_release(s->b, o->msg);
                gmq_msg_unref(o->msg);
                o->msg = NULL;
            }
            o->state = OUT_WAIT_PUBCOMP;
            return conn_send_packet_id(s->c, MQTT_PUBREL, id);
        }
        return 0;
    case MQTT_PUBCOMP:
        if (o && o->state == OUT_WAIT_PUBCOMP) {
            remove_inflight(s, i);
            session_pump(s);
        }
        return 0;
    default:
        return 0;
    }
}

/* ---- QoS 2 receipt ----------------------------------------------------- */

bool session_rx_qos2_has(const session *s, uint16_t id)
{
    for (size_t i = 0; i < s->nrx_qos2; i++)
        if (s->rx_qos2[i] == id)
            return true;
    return false;
}

int session_rx_qos2_add(session *s, uint16_t id)
{
    if (GMQ_GROW(s->rx_qos2, s->caprx_qos2, s->nrx_qos2 + 1, 4))
        return -1;
    s->rx_qos2[s->nrx_qos2++] = id;
    persist_rx_qos2(s, id, true);
    return 0;
}

void session_rx_qos2_del(session *s, uint16_t id)
{
    for (size_t i = 0; i < s->nrx_qos2; i++)
        if (s->rx_qos2[i] == id) {
            s->rx_qos2[i] = s->rx_qos2[--s->nrx_qos2];
            persist_rx_qos2(s, id, false);
            return;
        }
}

/* ---- restoring from the store ---------------------------------------------- */

int session_restore_delivery(session *s, gmq_msg *m, uint64_t seq, uint8_t qos, bool retain,
                             uint16_t packet_id, int state)
{
    if (seq >= s->next_seq)
        s->next_seq = seq;
    if (state == STORE_QUEUED) {
        if (enqueue(s, m, qos, retain, seq))
            return -1;
        m->store_refs++;
        return 0;
    }
    if (GMQ_GROW(s->inflight, s->capinflight, s->ninflight + 1, 8))
        return -1;
    s->inflight[s->ninflight++] = (outmsg){
        .msg = m ? gmq_msg_ref(m) : NULL,
        .seq = seq,
        .packet_id = packet_id,
        .qos = qos,
        .state = state == STORE_WAIT_PUBACK   ? OUT_WAIT_PUBACK
                 : state == STORE_WAIT_PUBREC ? OUT_WAIT_PUBREC
                                              : OUT_WAIT_PUBCOMP,
        .retain = retain,
    };
    if (m)
        m->store_refs++;
    return 0;
}
