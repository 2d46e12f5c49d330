/*
 * persist.c - the broker's side of the store (see persist.h and store.h).
 */
#include <string.h>
#include <time.h>

#include "broker/alloc.h"
#include "broker/bridge.h"
#include "broker/log.h"
#include "broker/persist.h"
#include "store/store.h"

static bool durable(const session *s)
{
    broker *b = s->b;
    return b->store && !b->loading && !s->clean;
}

void persist_session_new(session *s)
{
    if (durable(s))
        store_put_session(s->b->store, s->key, (int64_t)time(NULL), s->kind, s->username);
}

void persist_session_delete(session *s)
{
    if (durable(s))
        store_del_session(s->b->store, s->key);
}

void persist_session_offline(session *s)
{
    if (durable(s))
        store_put_session_offline(s->b->store, s->key, s->offline_since);
}

void persist_subscription(session *s, const char *filter, uint8_t qos)
{
    if (durable(s))
        store_put_subscription(s->b->store, s->key, filter, qos);
}

void persist_unsubscription(session *s, const char *filter)
{
    if (durable(s))
        store_del_subscription(s->b->store, s->key, filter);
}

void persist_delivery(session *s, uint64_t seq, gmq_msg *m, uint8_t qos, bool retain,
                      uint16_t packet_id, int state, bool first)
{
    if (!durable(s))
        return;
    store *st = s->b->store;
    if (first) {
        /* The message row is written with its first delivery. */
        if (m->store_refs++ == 0)
            store_put_message(st, m->id, m->topic, m->topic_len, m->payload, m->payload_len,
                              m->qos, m->retain);
    }
    store_put_delivery(st, s->key, seq, m->id, qos, retain, packet_id, state);
}

void persist_release(broker *b, gmq_msg *m)
{
    if (!b->store || b->loading || !m || m->store_refs == 0)
        return;
    if (--m->store_refs == 0)
        store_del_message(b->store, m->id);
}

void persist_delivery_done(session *s, uint64_t seq, gmq_msg *m)
{
    if (!durable(s))
        return;
    store_del_delivery(s->b->store, s->key, seq);
    persist_release(s->b, m);
}

void persist_rx_qos2(session *s, uint16_t packet_id, bool add)
{
    if (!durable(s))
        return;
    if (add)
        store_put_rx_qos2(s->b->store, s->key, packet_id);
    else
        store_del_rx_qos2(s->b->store, s->key, packet_id);
}

void persist_retained(broker *b, const gmq_msg *m)
{
    /* $-topics are the broker's own and rebuilt at start. */
    if (!b->store || b->loading || m->topic[0] == '$')
        return;
    if (m->payload_len == 0)
        store_del_retained(b->store, m->topic, m->topic_len);
    else
        store_put_retained(b->store, m->topic, m->topic_len, m->payload, m->payload_len, m->qos);
}

/* ---- acknowledgements after commit ------------------------------------- */

uint64_t persist_mark(const broker *b)
{
    return b->store ? store_last_queued(b->store) : 0;
}

void persist_ack(conn *c, uint8_t type, uint16_t packet_id, uint64_t before, uint64_t after)
{
    broker *b = c->b;
    bool committed = after == before || (b->store && after <= store_last_committed(b->store));
    if (c->nacks == 0 && committed) {
        conn_send_packet_id(c, type, packet_id);
        return;
    }
    if (c->nacks == c->capacks) {
        size_t ncap = c->capacks ? c->capacks * 2 : 8;
        struct pending_ack *v = gmq_malloc(ncap * sizeof(*v));
        if (!v) {
            conn_close(c, "no memory for acknowledgements");
            return;
        }
        for (size_t i = 0; i < c->nacks; i++)
            v[i] = c->acks[(c->ackhead + i) % c->capacks];
        gmq_free(c->acks);
        c->acks = v;
        c->capacks = ncap;
        c->ackhead = 0;
    }
    /* Queued behind earlier ones, whatever each needs [MQTT-4.6.0-2..4]. */
    c->acks[(c->ackhead + c->nacks) % c->capacks] =
        (struct pending_ack){.seq = after, .type = type, .packet_id = packet_id};
    c->nacks++;
    if (!c->ack_waiting) {
        c->ack_waiting = true;
        c->ack_prev = NULL;
        c->ack_next = b->ack_waiters;
        if (b->ack_waiters)
            b->ack_waiters->ack_prev = c;
        b->ack_waiters = c;
    }
}

/* O(1): a crowd of clients waiting for commits may go at once. */
static void unlink_ack_waiter(conn *c)
{
    if (c->ack_prev)
        c->ack_prev->ack_next = c->ack_next;
    else
        c->b->ack_waiters = c->ack_next;
    if (c->ack_next)
        c->ack_next->ack_prev = c->ack_prev;
    c->ack_prev = c->ack_next = NULL;
    c->ack_waiting = false;
}

void persist_committed(broker *b, uint64_t seq)
{
    conn *next;
    for (conn *c = b->ack_waiters; c; c = next) {
        next = c->ack_next;
        while (c->nacks && c->acks[c->ackhead].seq <= seq && c->state != CONN_CLOSING) {
            struct pending_ack a = c->acks[c->ackhead];
            c->ackhead = (c->ackhead + 1) % c->capacks;
            c->nacks--;
            conn_send_packet_id(c, a.type, a.packet_id);
        }
        if (c->nacks == 0)
            unlink_ack_waiter(c);
    }
}

void persist_forget_conn(conn *c)
{
    if (c->store_paused) {
        /* O(1): a crowd of paused clients may go at once. */
        if (c->store_paused_prev)
            c->store_paused_prev->store_paused_next = c->store_paused_next;
        else
            c->b->store_paused = c->store_paused_next;
        if (c->store_paused_next)
            c->store_paused_next->store_paused_prev = c->store_paused_prev;
        c->store_paused_prev = c->store_paused_next = NULL;
        c->store_paused = false;
    }
    if (c->ack_waiting)
        unlink_ack_waiter(c);
    gmq_free(c->acks);
    c->acks = NULL;
    c->nacks = c->capacks = c->ackhead = 0;
}

static void on_commit(void *arg, uint64_t seq)
{
    persist_committed(arg, seq);
}

/* ---- backpressure ------------------------------------------------------------
 *
 * Policy: a connection is paused when a packet it sent queued durable
 * writes while the queue is over the limit; it is not read again until the
 * queue is back at half the limit. Why this and not pausing every client:
 * the clients that do not write to the store (subscribers, QoS 0 and 1
 * traffic between clean sessions, PINGREQ) cost the queue nothing and keep
 * being served at full speed while the writers wait; and whoever adds to
 * the queue, in any packet (retained PUBLISH, messages for offline
 * persistent sessions, telemetry, SUBSCRIBE of a persistent session), is
 * stopped, so no kind of write escapes the bound. A paused client is just
 * not read: TCP pushes back on it, nothing it sent is dropped, and its keep
 * alive does not run out (conn.c on_timer). Over the limit, the queue grows
 * by at most one packet's writes per connection. */

bool persist_throttle(conn *c, uint64_t before)
{
    broker *b = c->b;
    if (!b->store || c->state != CONN_ACTIVE || c->store_paused ||
        store_last_queued(b->store) == before || !store_congested(b->store))
        return c->store_paused;
    c->store_paused = true;
    c->store_paused_prev = NULL;
    c->store_paused_next = b->store_paused;
    if (b->store_paused)
        b->store_paused->store_paused_prev = c;
    b->store_paused = c;
    ev_io_stop(b->loop, &c->rio);
    b->stats.store_pauses++;
    ev_tstamp now = ev_now(b->loop);
    if (b->store_warned == 0 || now - b->store_warned >= 60) {
        b->store_warned = now;
        LOG_WARN("persistence: %zu bytes wait for the disk, over store_queue_limit (%zu): "
                 "clients that write are not read until half of it is committed",
                 store_queued_bytes(b->store), b->cfg->store_queue_limit);
    }
    LOG_DEBUG("client %s: input paused until the store catches up",
              c->s ? c->s->client_id : c->peer);
    return true;
}

/* The store's queue fell to the low mark: read the paused clients again.
 * conn_resume_input acts on what each had buffered (which may pause it
 * again) and feeds a read event, so no client waits for new bytes. */
static void on_drained(void *arg)
{
    broker *b = arg;
    if (b->stopping)
        return;
    size_t resumed = 0;
    /* Detached first: a client resumed here may be paused again at once
     * (onto a new list). Nothing is freed while we walk (closes are reaped
     * later, so persist_forget_conn never sees the detached list). */
    conn *list = b->store_paused;
    b->store_paused = NULL;
    while (list) {
        conn *c = list;
        list = c->store_paused_next;
        c->store_paused_prev = c->store_paused_next = NULL;
        c->store_paused = false;
        if (c->state == CONN_CLOSING)
            continue;
        resumed++;
        if (!c->input_paused)
            conn_resume_input(c);
    }
    if (resumed)
        LOG_DEBUG("persistence: store queue down to %zu bytes: %zu client(s) read again",
                  store_queued_bytes(b->store), resumed);
}

/* ---- restoring at start --------------------------------------------------- */

/* Messages by id while loading: open addressing over a power-of-two table. */
typedef struct load_ctx {
    broker *b;
    gmq_msg **slots;
    size_t cap, count;
    uint64_t max_id;
    session *cur;
    size_t sessions, deliveries, retained, expired;
    int64_t now_ms; /* wall clock at start */
} load_ctx;

static size_t id_slot(const load_ctx *l, uint64_t id)
{
    uint64_t h = id * 0x9e3779b97f4a7c15ull;
    return (size_t)(h >> 7) & (l->cap - 1);
}

static int msgmap_put(load_ctx *l, gmq_msg *m)
{
    if ((l->count + 1) * 2 > l->cap) {
        size_t ncap = l->cap ? l->cap * 2 : 1024;
        gmq_msg **slots = gmq_calloc(ncap, sizeof(*slots));
        if (!slots)
            return -1;
        gmq_msg **old = l->slots;
        size_t ocap = l->cap;
        l->slots = slots;
        l->cap = ncap;
        for (size_t i = 0; i < ocap; i++)
            if (old[i]) {
                size_t j = id_slot(l, old[i]->id);
                while (l->slots[j])
                    j = (j + 1) & (l->cap - 1);
                l->slots[j] = old[i];
            }
        gmq_free(old);
    }
    size_t j = id_slot(l, m->id);
    while (l->slots[j])
        j = (j + 1) & (l->cap - 1);
    l->slots[j] = m;
    l->count++;
    return 0;
}

static gmq_msg *msgmap_get(const load_ctx *l, uint64_t id)
{
    if (!l->cap)
        return NULL;
    for (size_t j = id_slot(l, id); l->slots[j]; j = (j + 1) & (l->cap - 1))
        if (l->slots[j]->id == id)
            return l->slots[j];
    return NULL;
}

static int load_message(void *arg, uint64_t id, const char *topic, size_t topic_len,
                        const uint8_t *payload, size_t payload_len, uint8_t qos, bool retain)
{
    load_ctx *l = arg;
    gmq_msg *m = gmq_msg_new(topic, topic_len, payload, payload_len, qos, retain);
    if (!m)
        return -1;
    m->id = id;
    if (id > l->max_id)
        l->max_id = id;
    if (msgmap_put(l, m)) {
        gmq_msg_unref(m);
        return -1;
    }
    return 0;
}

static int load_retained(void *arg, const char *topic, size_t topic_len, const uint8_t *payload,
                         size_t payload_len, uint8_t qos)
{
    load_ctx *l = arg;
    gmq_msg *m = gmq_msg_new(topic, topic_len, payload, payload_len, qos, true);
    if (!m)
        return -1;
    /* Messages come first, so max_id already covers every stored id. */
    m->id = ++l->max_id;
    int rc = retain_set(l->b->retained, m);
    gmq_msg_unref(m);
    l->retained++;
    return rc;
}

static session *find_session(load_ctx *l, const char *client_id)
{
    if (l->cur && strcmp(l->cur->key, client_id) == 0)
        return l->cur;
    l->cur = session_map_get(&l->b->sessions, client_id, strlen(client_id));
    return l->cur;
}

static int load_session(void *arg, const char *client_id, int64_t last_seen, int kind,
                        const char *username, int64_t offline_since)
{
    load_ctx *l = arg;
    broker *b = l->b;
    (void)last_seen;
    double expiry = b->cfg->session_expiry;
    l->cur = NULL;
    if (expiry > 0 && offline_since && l->now_ms - offline_since >= (int64_t)(expiry * 1000)) {
        /* Expired while the broker was down: its rows are skipped as orphans
         * (and its messages removed as unreferenced) below. */
        LOG_INFO("client %s: persistent session expired after %.0f s offline", client_id,
                 (double)(l->now_ms - offline_since) / 1000.0);
        store_del_session(b->store, client_id);
        l->expired++;
        b->stats.sessions_expired++;
        return 0;
    }
    session *s = session_new(b, client_id, strlen(client_id));
    if (!s)
        return -1;
    s->clean = false;
    s->kind = kind >= PRINCIPAL_ANONYMOUS && kind <= PRINCIPAL_DEVICE ? (uint8_t)kind
                                                                       : PRINCIPAL_UNKNOWN;
    s->anonymous = s->kind == PRINCIPAL_ANONYMOUS;
    if (username && !(s->username = gmq_strdup(username))) {
        session_destroy(s);
        return -1;
    }
    if (session_map_put(&b->sessions, s) || session_track(s)) {
        session_destroy(s);
        return -1;
    }
    /* Its client was connected when the broker stopped without saying when
     * it left (a crash): it counts as gone now, and that is recorded. A
     * time still to come (the clock was stepped back, or the database comes
     * from another host) counts as now too: kept as is, it would sit at the
     * tail of the offline list, and every client leaving later would be
     * dated after it (session_offline_since), none expiring before it. */
    if (!offline_since || offline_since > l->now_ms) {
        offline_since = l->now_ms;
        store_put_session_offline(b->store, s->key, offline_since);
    }
    session_offline_since(s, offline_since);
    l->cur = s;
    l->sessions++;
    return 0;
}

static int load_subscription(void *arg, const char *client_id, const char *filter, uint8_t qos)
{
    session *s = find_session(arg, client_id);
    if (!s)
        return 0; /* an orphan row: its session is gone */
    return session_subscribe(s, filter, strlen(filter), qos);
}

static int load_delivery(void *arg, const char *client_id, uint64_t seq, uint64_t msg_id,
                         uint8_t qos, bool retain, uint16_t packet_id, int state)
{
    load_ctx *l = arg;
    session *s = find_session(l, client_id);
    if (!s)
        return 0;
    gmq_msg *m = msgmap_get(l, msg_id);
    if (!m && state != STORE_WAIT_PUBCOMP) {
        LOG_WARN("store: delivery %llu of %s refers to a missing message; skipped",
                 (unsigned long long)seq, client_id);
        return 0;
    }
    l->deliveries++;
    return session_restore_delivery(s, state == STORE_WAIT_PUBCOMP ? NULL : m, seq, qos, retain,
                                    packet_id, state);
}

static int load_rx_qos2(void *arg, const char *client_id, uint16_t packet_id)
{
    session *s = find_session(arg, client_id);
    return s ? session_rx_qos2_add(s, packet_id) : 0;
}

static int load_clock(void *arg, const char *device, int64_t offset_ms, int64_t updated_ms)
{
    load_ctx *l = arg;
    return bridge_load_clock(l->b, device, offset_ms, updated_ms);
}

static int load_presence(void *arg, const char *device, bool online, int64_t since_ms,
                         bool notified)
{
    load_ctx *l = arg;
    return bridge_load_presence(l->b, device, online, since_ms, notified);
}

int persist_open(broker *b)
{
    const gmq_config *cfg = b->cfg;
    if (!cfg->persistence_file)
        return 0;
    char err[512];
    b->store = store_open(cfg->persistence_file,
                          cfg->persistence_sync_full ? STORE_SYNC_FULL : STORE_SYNC_NORMAL, err,
                          sizeof(err));
    if (!b->store) {
        LOG_ERROR("persistence: %s", err);
        return -1;
    }
    static const store_load_cb cb = {
        .message = load_message,
        .retained = load_retained,
        .session = load_session,
        .subscription = load_subscription,
        .delivery = load_delivery,
        .rx_qos2 = load_rx_qos2,
        .clock = load_clock,
        .presence = load_presence,
    };
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    load_ctx l = {.b = b, .now_ms = (int64_t)now.tv_sec * 1000 + now.tv_nsec / 1000000};
    b->loading = true;
    int rc = store_load(b->store, &cb, &l, err, sizeof(err));
    b->loading = false;
    session_sort_offline(b); /* restored in key order */
    if (rc)
        LOG_ERROR("persistence: loading %s: %s", cfg->persistence_file, err);
    /* Ids continue after every stored one; messages no delivery needs any
     * more (left by a crash) are deleted. */
    b->next_msg_id = l.max_id;
    size_t orphans = 0;
    for (size_t i = 0; i < l.cap; i++) {
        gmq_msg *m = l.slots[i];
        if (!m)
            continue;
        if (m->store_refs == 0 && rc == 0) {
            store_del_message(b->store, m->id);
            orphans++;
        }
        gmq_msg_unref(m);
    }
    gmq_free(l.slots);
    if (rc)
        return -1;
    LOG_NOTICE("persistence: %s: %zu retained message(s), %zu persistent session(s), %zu "
               "queued or in-flight message(s)%s",
               cfg->persistence_file, l.retained, l.sessions, l.deliveries,
               orphans ? " (unreferenced messages removed)" : "");
    if (l.expired)
        LOG_NOTICE("session_expiry: %zu persistent session(s) offline for %.0f s or more "
                   "discarded",
                   l.expired, cfg->session_expiry);
    /* Sessions stored under a larger cap are kept; new ones wait for room. */
    if (cfg->max_sessions && b->persistent_sessions > cfg->max_sessions)
        LOG_WARN("persistence: %zu persistent sessions restored, more than max_sessions (%u): "
                 "new ones are refused until some end",
                 b->persistent_sessions, cfg->max_sessions);
    return 0;
}

int persist_start(broker *b)
{
    if (b->store)
        store_set_queue_limit(b->store, b->cfg->store_queue_limit, b->cfg->store_queue_limit / 2,
                              on_drained, b);
    if (b->store && store_start(b->store, b->loop, on_commit, b)) {
        LOG_ERROR("persistence: cannot start the store thread");
        return -1;
    }
    return 0;
}

void persist_close(broker *b)
{
    if (!b->store)
        return;
    store_close(b->store); /* commits everything queued */
    b->store = NULL;
}
