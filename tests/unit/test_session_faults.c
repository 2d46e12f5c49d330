/*
 * test_session_faults.c - allocation-failure sweeps over the session code.
 *
 * In the manner of SQLite's and libuv's out-of-memory tests: a scenario sets
 * up a broker (a real one from broker_new, with no listening socket; its
 * clients are connections over socketpairs, fed packets through
 * handle_packet and read back from the other end), then runs one operation
 * with the Nth allocation failing, for N = 1, 2, ... until the operation
 * completes without reaching an Nth allocation. For every N:
 *  - the operation ends in its documented result: an error code, a CONNACK
 *    refusal, a SUBACK failure code, a closed connection, or a message
 *    dropped and counted in msgs_dropped;
 *  - the structures stay consistent (check_broker), and the same operation
 *    repeated without a failure then completes: every message that was not
 *    counted as dropped reaches its client, in order, QoS 2 exactly once;
 *  - once the broker is freed, every block it allocated is freed
 *    (gmq_alloc_live back where it was; the sanitizer build's leak check
 *    watches the same).
 * Each sweep prints how many allocation points it went through.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <ftw.h>
#include <netinet/in.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "auth/acl.h"
#include "broker/alloc.h"
#include "broker/broker.h"
#include "broker/handle.h"
#include "broker/log.h"
#include "broker/login.h"
#include "broker/persist.h"
#include "store/store.h"

#define MAX_CLIENTS 48
#define MAX_MSGS 64

/* ---- what a client received ---------------------------------------------- */

typedef struct rx_pkt {
    uint8_t type;
    uint16_t id;
    uint8_t qos;
    bool dup, retain;
    uint8_t rc;        /* CONNACK */
    bool present;      /* CONNACK */
    uint8_t codes[64]; /* SUBACK */
    size_t ncodes;
    int idx; /* PUBLISH payload "m<idx>..."; -1: another payload */
    char topic[64];
    char payload[16];
} rx_pkt;

typedef struct client {
    conn *c;  /* NULL once the broker reaped it */
    int peer; /* the test's end of the socketpair */
    uint8_t *in;
    size_t inlen, incap;
    rx_pkt *pkts;
    size_t npkts, cap;
    size_t handled; /* packets settle() has answered */
} client;

typedef struct fx {
    struct ev_loop *loop;
    gmq_config cfg;
    gmq_listener_cfg lcfg;
    listener l;
    broker *b;
    long live0;
    client cl[MAX_CLIENTS];
    size_t ncl;
    const char *acl_text; /* rules to put in force, or NULL */
    char dir[256], db[300];
    bool store; /* persist to db (the store thread is not started: commits
                 * are simulated with persist_committed) */
    int opt;    /* scenario variant */
} fx;

/* ---- fault injection ------------------------------------------------------ */

static void fail_at(unsigned long n)
{
    gmq_alloc_fail_at(n);
}

/* Ends the window; true when the nth allocation was reached (and failed). */
static bool failed(unsigned long n)
{
    bool hit = gmq_alloc_count() >= n;
    gmq_alloc_fail_at(0);
    return hit;
}

typedef bool (*step_fn)(fx *f, unsigned long n);

/* Runs step for n = 1, 2, ... until it no longer reaches its nth
 * allocation; returns the number of allocation points swept. */
static unsigned long sweep(fx *f, const char *name, step_fn step)
{
    unsigned long n = 1;
    while (step(f, n)) {
        n++;
        assert_true(n < 20000);
    }
    print_message("sweep %s: %lu allocation point(s)\n", name, n - 1);
    assert_true(n > 1); /* the operation allocates: something was injected */
    return n - 1;
}

/* ---- the broker ----------------------------------------------------------- */

static int remove_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static fx *fx_new(void)
{
    fx *f = calloc(1, sizeof(*f));
    assert_non_null(f);
    gmq_config_defaults(&f->cfg);
    f->cfg.sys_interval = 0;
    f->lcfg.port = 1883;
    f->lcfg.allow_anonymous = true;
    const char *tmp = getenv("TMPDIR");
    snprintf(f->dir, sizeof(f->dir), "%s/gatemq-faults-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    assert_non_null(mkdtemp(f->dir));
    snprintf(f->db, sizeof(f->db), "%s/gatemq.db", f->dir);
    return f;
}

static void fx_free(fx *f)
{
    nftw(f->dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
    free(f);
}

static void db_remove(fx *f)
{
    char p[320];
    const char *suffix[] = {"", "-wal", "-shm"};
    for (size_t i = 0; i < 3; i++) {
        snprintf(p, sizeof(p), "%s%s", f->db, suffix[i]);
        unlink(p);
    }
}

static void fx_up(fx *f)
{
    f->live0 = gmq_alloc_live();
    f->loop = ev_loop_new(EVFLAG_AUTO);
    assert_non_null(f->loop);
    f->cfg.persistence_file = f->store ? f->db : NULL;
    f->b = broker_new(f->loop, &f->cfg);
    assert_non_null(f->b);
    f->l = (listener){.b = f->b, .cfg = &f->lcfg, .fd = -1};
    if (f->acl_text) {
        char err[256];
        assert_int_equal(acl_parse(f->acl_text, strlen(f->acl_text), "test.acl", &f->b->acl, err,
                                   sizeof(err)),
                         0);
        f->b->acl_gen = 1;
    }
    if (f->store)
        assert_int_equal(persist_open(f->b), 0);
}

/* Frees the broker (committing what it queued to the store) and checks that
 * every block allocated since fx_up was freed. */
static void fx_down(fx *f)
{
    broker_free(f->b);
    f->b = NULL;
    for (size_t i = 0; i < f->ncl; i++) {
        close(f->cl[i].peer);
        free(f->cl[i].in);
        free(f->cl[i].pkts);
    }
    memset(f->cl, 0, sizeof(f->cl));
    f->ncl = 0;
    ev_loop_destroy(f->loop);
    f->loop = NULL;
    assert_int_equal(gmq_alloc_live(), f->live0);
}

/* ---- clients ---------------------------------------------------------------- */

static client *cl_new(fx *f)
{
    assert_true(f->ncl < MAX_CLIENTS);
    client *cl = &f->cl[f->ncl++];
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv), 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(40000)};
    sa.sin_addr.s_addr = htonl(0x7f000001);
    cl->c = conn_new(f->b, &f->l, sv[0], (struct sockaddr *)&sa, sizeof(sa));
    assert_non_null(cl->c);
    cl->peer = sv[1];
    return cl;
}

/* Hands one encoded packet to the broker as conn.c would; false when the
 * connection no longer reads (closed, or refused and flushing). */
static bool cl_feed(fx *f, client *cl, const uint8_t *buf, size_t n)
{
    conn *c = cl->c;
    if (!c || c->state == CONN_CLOSING || c->close_after_flush)
        return false;
    mqtt_frame fr;
    assert_int_equal(mqtt_frame_split(buf, n, f->cfg.max_packet_size, &fr), (ptrdiff_t)n);
    handle_packet(c, &fr);
    return true;
}

static bool cl_open(const client *cl)
{
    return cl->c && cl->c->state == CONN_ACTIVE && !cl->c->close_after_flush;
}

static rx_pkt *pkt_push(client *cl)
{
    if (cl->npkts == cl->cap) {
        cl->cap = cl->cap ? cl->cap * 2 : 32;
        cl->pkts = realloc(cl->pkts, cl->cap * sizeof(*cl->pkts));
        assert_non_null(cl->pkts);
    }
    rx_pkt *p = &cl->pkts[cl->npkts++];
    memset(p, 0, sizeof(*p));
    p->idx = -1;
    return p;
}

/* Reads and decodes what the broker wrote to cl. */
static void cl_read(client *cl)
{
    for (;;) {
        if (cl->incap - cl->inlen < 4096) {
            cl->incap = cl->incap ? cl->incap * 2 : 8192;
            cl->in = realloc(cl->in, cl->incap);
            assert_non_null(cl->in);
        }
        ssize_t r = recv(cl->peer, cl->in + cl->inlen, cl->incap - cl->inlen, MSG_DONTWAIT);
        if (r <= 0) {
            assert_true(r == 0 || errno == EAGAIN || errno == EWOULDBLOCK);
            break;
        }
        cl->inlen += (size_t)r;
    }
    size_t off = 0;
    mqtt_frame fr;
    ptrdiff_t r;
    while ((r = mqtt_frame_split(cl->in + off, cl->inlen - off, 1u << 28, &fr)) > 0) {
        off += (size_t)r;
        rx_pkt *p = pkt_push(cl);
        p->type = fr.type;
        switch (fr.type) {
        case MQTT_CONNACK: {
            mqtt_connack ca;
            assert_int_equal(mqtt_decode_connack(&fr, &ca), 0);
            p->rc = ca.return_code;
            p->present = ca.session_present;
            break;
        }
        case MQTT_SUBACK: {
            mqtt_suback sa;
            assert_int_equal(mqtt_decode_suback(&fr, &sa), 0);
            p->id = sa.packet_id;
            assert_true(sa.codes.len <= sizeof(p->codes));
            memcpy(p->codes, sa.codes.ptr, sa.codes.len);
            p->ncodes = sa.codes.len;
            break;
        }
        case MQTT_PUBLISH: {
            mqtt_publish pub;
            assert_int_equal(mqtt_decode_publish(&fr, &pub), 0);
            p->id = pub.packet_id;
            p->qos = pub.qos;
            p->dup = pub.dup;
            p->retain = pub.retain;
            snprintf(p->topic, sizeof(p->topic), "%.*s", (int)pub.topic.len,
                     (const char *)pub.topic.ptr);
            snprintf(p->payload, sizeof(p->payload), "%.*s", (int)pub.payload.len,
                     (const char *)pub.payload.ptr);
            int idx;
            if (sscanf(p->payload, "m%d", &idx) == 1)
                p->idx = idx;
            break;
        }
        default:
            assert_int_equal(mqtt_decode_packet_id(&fr, &p->id), 0);
            break;
        }
    }
    assert_true(r == 0); /* the broker writes only whole, valid packets */
    memmove(cl->in, cl->in + off, cl->inlen - off);
    cl->inlen -= off;
}

/* One loop iteration: output is written, closed connections are reaped
 * (wills published); then every client reads. */
static void fx_run(fx *f)
{
    ev_run(f->loop, EVRUN_NOWAIT);
    for (size_t i = 0; i < f->ncl; i++) {
        client *cl = &f->cl[i];
        if (cl->c) {
            bool alive = false;
            for (conn *c = f->b->conns; c; c = c->next)
                alive |= c == cl->c;
            if (!alive)
                cl->c = NULL;
        }
        cl_read(cl);
    }
}

/* The last packet of a type that cl received, or NULL. */
static rx_pkt *last_of(client *cl, uint8_t type)
{
    for (size_t i = cl->npkts; i-- > 0;)
        if (cl->pkts[i].type == type)
            return &cl->pkts[i];
    return NULL;
}

static size_t count_of(const client *cl, uint8_t type)
{
    size_t n = 0;
    for (size_t i = 0; i < cl->npkts; i++)
        n += cl->pkts[i].type == type;
    return n;
}

/* ---- sending packets ------------------------------------------------------------ */

static void send_connect(fx *f, client *cl, const char *id, bool clean, const char *will_topic)
{
    mqtt_connect m = {
        .clean_session = clean,
        .client_id = {(const uint8_t *)id, strlen(id)},
    };
    if (will_topic) {
        m.will_flag = true;
        m.will_qos = 1;
        m.will_retain = true;
        m.will_topic = (mqtt_span){(const uint8_t *)will_topic, strlen(will_topic)};
        m.will_payload = (mqtt_span){(const uint8_t *)"gone", 4};
    }
    uint8_t buf[512];
    size_t n = mqtt_encode_connect(buf, sizeof(buf), &m);
    assert_true(n <= sizeof(buf));
    cl_feed(f, cl, buf, n);
}

static void send_subscribe(fx *f, client *cl, uint16_t pid, const char *const *filters,
                           const uint8_t *qos, size_t nf)
{
    mqtt_span spans[64];
    assert_true(nf <= 64);
    for (size_t i = 0; i < nf; i++)
        spans[i] = (mqtt_span){(const uint8_t *)filters[i], strlen(filters[i])};
    uint8_t buf[4096];
    size_t n = mqtt_encode_subscribe(buf, sizeof(buf), pid, spans, qos, nf);
    assert_true(n <= sizeof(buf));
    cl_feed(f, cl, buf, n);
}

static void send_unsubscribe(fx *f, client *cl, uint16_t pid, const char *const *filters,
                             size_t nf)
{
    mqtt_span spans[64];
    assert_true(nf <= 64);
    for (size_t i = 0; i < nf; i++)
        spans[i] = (mqtt_span){(const uint8_t *)filters[i], strlen(filters[i])};
    uint8_t buf[4096];
    size_t n = mqtt_encode_unsubscribe(buf, sizeof(buf), pid, spans, nf);
    assert_true(n <= sizeof(buf));
    cl_feed(f, cl, buf, n);
}

static void send_publish(fx *f, client *cl, const char *topic, const char *payload, uint8_t qos,
                         bool retain, uint16_t pid)
{
    mqtt_publish p = {
        .topic = {(const uint8_t *)topic, strlen(topic)},
        .payload = {(const uint8_t *)payload, strlen(payload)},
        .qos = qos,
        .retain = retain,
        .packet_id = qos ? pid : 0,
    };
    uint8_t buf[512];
    size_t n = mqtt_encode_publish(buf, sizeof(buf), &p);
    assert_true(n <= sizeof(buf));
    cl_feed(f, cl, buf, n);
}

static void send_ack(fx *f, client *cl, enum mqtt_type type, uint16_t id)
{
    uint8_t buf[4];
    mqtt_encode_packet_id(buf, sizeof(buf), type, id);
    cl_feed(f, cl, buf, 4);
}

static void send_disconnect(fx *f, client *cl)
{
    uint8_t buf[2];
    mqtt_encode_empty(buf, sizeof(buf), MQTT_DISCONNECT);
    cl_feed(f, cl, buf, 2);
}

/* A client that connects without any failure: returns session present. */
static bool cl_connect(fx *f, client *cl, const char *id, bool clean)
{
    send_connect(f, cl, id, clean, NULL);
    fx_run(f);
    rx_pkt *ca = last_of(cl, MQTT_CONNACK);
    assert_non_null(ca);
    assert_int_equal(ca->rc, MQTT_CONNACK_ACCEPTED);
    return ca->present;
}

/* An admitted user, as login.c hands it over after a password check. */
static connect_req *user_req(const char *id, const char *user, bool clean, bool will)
{
    connect_req *req = gmq_calloc(1, sizeof(*req));
    assert_non_null(req);
    req->client_id = gmq_strdup(id);
    req->username = gmq_strdup(user);
    req->clean = clean;
    if (will)
        req->will = gmq_msg_new("status/w", 8, (const uint8_t *)"gone", 4, 1, true);
    assert_true(req->client_id && req->username && (!will || req->will));
    return req;
}

/* ---- a well-behaved receiving application ------------------------------------ */

/* What one client id's application saw, across its connections. */
typedef struct tracker {
    int got[MAX_MSGS];       /* receipts per message */
    uint8_t qos[MAX_MSGS];   /* QoS it arrived with */
    int order[MAX_MSGS * 4]; /* first receipts, in order */
    size_t norder;
    uint16_t awaiting[128]; /* QoS 2 ids received, PUBREL not yet [MQTT-4.3.3-2] */
    size_t nawaiting;
} tracker;

static bool awaiting_has(const tracker *t, uint16_t id)
{
    for (size_t i = 0; i < t->nawaiting; i++)
        if (t->awaiting[i] == id)
            return true;
    return false;
}

/* Acknowledges everything cl receives, as a client does, until nothing more
 * arrives or the connection is gone. */
static void settle(fx *f, client *cl, tracker *t)
{
    for (int round = 0; round < 1000; round++) {
        fx_run(f);
        if (cl->handled == cl->npkts)
            return;
        while (cl->handled < cl->npkts) {
            rx_pkt p = cl->pkts[cl->handled++];
            if (p.type == MQTT_PUBLISH && p.idx >= 0) {
                assert_true(p.idx < MAX_MSGS);
                bool dup2 = p.qos == 2 && awaiting_has(t, p.id);
                if (!dup2) {
                    if (t->got[p.idx]++ == 0)
                        t->order[t->norder++] = p.idx;
                    t->qos[p.idx] = p.qos;
                }
                if (p.qos == 1) {
                    send_ack(f, cl, MQTT_PUBACK, p.id);
                } else if (p.qos == 2) {
                    if (!dup2) {
                        assert_true(t->nawaiting < 128);
                        t->awaiting[t->nawaiting++] = p.id;
                    }
                    send_ack(f, cl, MQTT_PUBREC, p.id);
                }
            } else if (p.type == MQTT_PUBREL) {
                for (size_t i = 0; i < t->nawaiting; i++)
                    if (t->awaiting[i] == p.id) {
                        t->awaiting[i] = t->awaiting[--t->nawaiting];
                        break;
                    }
                send_ack(f, cl, MQTT_PUBCOMP, p.id);
            }
        }
    }
    fail_msg("settle: the exchange does not end");
}

/* Every message 0..n-1 reached the application, unless one of `dropped`
 * others did not; first receipts in publish order; QoS 2 exactly once. */
static void tracker_check(const tracker *t, int n, uint64_t dropped)
{
    uint64_t missing = 0;
    for (int i = 0; i < n; i++) {
        if (t->got[i] == 0)
            missing++;
        else if (t->qos[i] == 2)
            assert_int_equal(t->got[i], 1);
    }
    assert_int_equal(missing, dropped);
    for (size_t i = 1; i < t->norder; i++)
        assert_true(t->order[i - 1] < t->order[i]); /* [MQTT-4.6.0-5] */
}

/* ---- consistency ------------------------------------------------------------- */

typedef struct seen {
    const session *s;
    bool found;
} seen;

static void on_seen(void *subscriber, uint8_t qos, void *arg)
{
    (void)qos;
    seen *sn = arg;
    sn->found |= subscriber == sn->s;
}

static void count_retained(gmq_msg *m, void *arg)
{
    (void)m;
    (*(size_t *)arg)++;
}

/* A topic the filter matches: '+' and '#' levels become "x". */
static void topic_for(const char *filter, char *out, size_t cap)
{
    size_t j = 0;
    for (size_t i = 0; filter[i] && j + 2 < cap; i++)
        out[j++] = filter[i] == '+' || filter[i] == '#' ? 'x' : filter[i];
    out[j] = '\0';
}

/* A value of b->company_sessions, as session.c lays it out. */
struct session_count_view {
    size_t n;
    char name[];
};

/* Persistent sessions counted in the namespace name ("" for none). */
static size_t counted_in(const broker *b, const char *name)
{
    size_t n = 0;
    for (size_t i = 0; i < b->sessions.cap; i++) {
        const session *s = b->sessions.slots[i].value;
        if (b->sessions.slots[i].key && s->counted &&
            strcmp(s->company ? s->company : "", name) == 0)
            n++;
    }
    return n;
}

/* The caps' counts and the offline list (session_expiry) agree with the
 * sessions: every persistent session is counted once, in all and in its
 * namespace; the offline list holds exactly the persistent sessions
 * without a connection, oldest first, its links consistent both ways. */
static void check_counts_and_offline_list(broker *b)
{
    size_t counted = 0, away = 0;
    for (size_t i = 0; i < b->sessions.cap; i++) {
        if (!b->sessions.slots[i].key)
            continue;
        const session *s = b->sessions.slots[i].value;
        assert_int_equal(s->counted, !s->clean);
        counted += s->counted;
        if (s->counted) {
            const char *name = s->company ? s->company : "";
            assert_non_null(strmap_get(&b->company_sessions, name, strlen(name)));
        }
        bool offline = !s->clean && !s->c;
        assert_int_equal(s->offline_listed, offline);
        if (!offline) {
            assert_int_equal(s->offline_since, 0);
            assert_null(s->offline_prev);
            assert_null(s->offline_next);
        }
        away += offline;
    }
    assert_int_equal(b->persistent_sessions, counted);
    size_t total = 0;
    for (size_t i = 0; i < b->company_sessions.cap; i++) {
        if (!b->company_sessions.slots[i].key)
            continue;
        const struct session_count_view *sc = b->company_sessions.slots[i].value;
        assert_string_equal(b->company_sessions.slots[i].key, sc->name);
        assert_true(sc->n > 0); /* an emptied namespace leaves the map */
        assert_int_equal(sc->n, counted_in(b, sc->name));
        total += sc->n;
    }
    assert_int_equal(total, counted);
    size_t listed = 0;
    const session *prev = NULL;
    for (const session *o = b->offline_head; o; prev = o, o = o->offline_next) {
        assert_true(listed < away); /* no cycle, nothing extra */
        assert_ptr_equal(o->offline_prev, prev);
        assert_true(o->offline_listed && !o->clean && !o->c);
        assert_ptr_equal(session_map_get(&b->sessions, o->key, strlen(o->key)), o);
        if (prev)
            assert_true(prev->offline_since <= o->offline_since);
        listed++;
    }
    assert_ptr_equal(b->offline_tail, prev);
    assert_int_equal(listed, away);
}

/* The invariants of sessions, the subscription tree and the retained
 * store that every operation must keep, failed or not. */
static void check_broker(broker *b)
{
    check_counts_and_offline_list(b);
    size_t subs = 0;
    for (size_t i = 0; i < b->sessions.cap; i++) {
        if (!b->sessions.slots[i].key)
            continue;
        session *s = b->sessions.slots[i].value;
        assert_string_equal(b->sessions.slots[i].key, s->key);
        assert_ptr_equal(s->b, b);
        if (s->c)
            assert_ptr_equal(s->c->s, s);
        /* Subscriptions: the index, the vector and the tree agree. */
        assert_int_equal(s->subidx.count, s->nsubs);
        for (size_t k = 0; k < s->nsubs; k++) {
            const char *flt = s->subs[k].filter;
            assert_int_equal((uintptr_t)strmap_get(&s->subidx, flt, strlen(flt)), k + 1);
            char topic[256];
            topic_for(flt, topic, sizeof(topic));
            seen sn = {s, false};
            topictree_match(b->subs, topic, strlen(topic), on_seen, &sn);
            assert_true(sn.found);
        }
        subs += s->nsubs;
        /* The queue: within its ring, bytes summed, in delivery order. */
        assert_true(s->qlen <= s->qcap);
        size_t bytes = 0;
        uint64_t last = 0;
        for (size_t k = 0; k < s->qlen; k++) {
            const queued *q = &s->queue[(s->qhead + k) % s->qcap];
            assert_non_null(q->msg);
            assert_true(q->msg->refs > 0);
            assert_true(q->seq > last);
            last = q->seq;
            bytes += q->msg->payload_len;
        }
        assert_int_equal(bytes, s->qbytes);
        if (b->cfg->max_queued)
            assert_true(s->qlen <= b->cfg->max_queued);
        if (b->cfg->max_queued_bytes)
            assert_true(s->qbytes <= b->cfg->max_queued_bytes);
        /* In flight: distinct packet ids, sent before anything queued. */
        for (size_t k = 0; k < s->ninflight; k++) {
            const outmsg *o = &s->inflight[k];
            assert_true(o->packet_id != 0);
            assert_true(o->msg || o->state == OUT_WAIT_PUBCOMP);
            if (s->qlen)
                assert_true(o->seq < s->queue[s->qhead].seq);
            for (size_t j = 0; j < k; j++)
                assert_true(s->inflight[j].packet_id != o->packet_id);
        }
    }
    assert_int_equal(subs, topictree_count(b->subs));
    if (subs == 0)
        assert_int_equal(topictree_node_count(b->subs), 0);
    size_t retained = 0;
    retain_match(b->retained, "#", 1, count_retained, &retained);
    assert_int_equal(retained, retain_count(b->retained));
    if (retained == 0)
        assert_int_equal(retain_node_count(b->retained), 0);
}

static session *find(fx *f, const char *key)
{
    return session_map_get(&f->b->sessions, key, strlen(key));
}

static bool payload_is(const gmq_msg *m, const char *text)
{
    return m->payload_len == strlen(text) && memcmp(m->payload, text, m->payload_len) == 0;
}

/* Messages m<i> on topic, made outside any failure window; qos_mode 3
 * alternates QoS 1 and 2. Payloads are pad bytes longer: large ones make
 * the write buffer grow while they are sent. */
static void make_msgs_padded(gmq_msg **m, int n, const char *topic, int qos_mode, int pad)
{
    for (int i = 0; i < n; i++) {
        char payload[1100];
        assert_true(pad <= 1024);
        /* Lengths vary so that byte limits bite at different counts. */
        int len = snprintf(payload, sizeof(payload), "m%03d%.*s%*s", i, i % 7, "-------", pad, "");
        uint8_t qos = qos_mode == 3 ? (uint8_t)(1 + i % 2) : (uint8_t)qos_mode;
        m[i] = gmq_msg_new(topic, strlen(topic), (const uint8_t *)payload, (size_t)len, qos,
                           false);
        assert_non_null(m[i]);
    }
}

static void make_msgs(gmq_msg **m, int n, const char *topic, int qos_mode)
{
    make_msgs_padded(m, n, topic, qos_mode, 0);
}

static void unref_msgs(gmq_msg **m, int n)
{
    for (int i = 0; i < n; i++)
        gmq_msg_unref(m[i]);
}

/* The store committed everything queued: held acknowledgements go out. */
static void commit_all(fx *f)
{
    if (f->b->store)
        persist_committed(f->b, store_last_queued(f->b->store));
}

/* ==== session create + add to the map ======================================== */

/* opt 0: persistent session; opt 1: clean session with a will. */
static bool step_connect(fx *f, unsigned long n)
{
    fx_up(f);
    client *a = cl_new(f);
    bool clean = f->opt == 1;
    fail_at(n);
    send_connect(f, a, "gw-1", clean, clean ? "status/gw-1" : NULL);
    bool hit = failed(n);
    conn *c = a->c;
    session *s = find(f, "/gw-1");
    if (c->state == CONN_ACTIVE) {
        assert_non_null(s);
        assert_ptr_equal(s->c, c);
        assert_ptr_equal(c->s, s);
        assert_int_equal(s->clean, clean);
        assert_int_equal(f->b->stats.clients_connected, 1);
        assert_true(!clean || c->will);
    } else {
        /* Refused (CONNACK 3 then close), or closed for want of output. */
        assert_true(c->state == CONN_CLOSING || c->close_after_flush);
        assert_true(!s || !s->c || s->c == c);
    }
    fx_run(f);
    rx_pkt *ca = last_of(a, MQTT_CONNACK);
    assert_true(count_of(a, MQTT_CONNACK) <= 1);
    if (ca && ca->rc == MQTT_CONNACK_ACCEPTED) {
        assert_false(ca->present);
        assert_non_null(a->c);
    } else {
        if (ca)
            assert_int_equal(ca->rc, MQTT_CONNACK_UNAVAILABLE);
        assert_null(a->c);
        assert_int_equal(f->b->stats.clients_connected, 0);
    }
    check_broker(f->b);
    /* A persistent session exists iff it was made; a clean one never
     * outlives its connection. */
    s = find(f, "/gw-1");
    bool kept = s != NULL;
    if (clean)
        assert_true(!kept || a->c);
    /* The next CONNECT of the same client works. */
    client *b = cl_new(f);
    assert_int_equal(cl_connect(f, b, "gw-1", false), kept && !clean);
    assert_null(a->c); /* taken over, when it was still there */
    check_broker(f->b);
    fx_down(f);
    return hit;
}

static void connect_makes_a_session_or_refuses_cleanly(void **state)
{
    (void)state;
    fx *f = fx_new();
    f->opt = 0;
    sweep(f, "connect, persistent session", step_connect);
    f->opt = 1;
    sweep(f, "connect, clean session with a will", step_connect);
    fx_free(f);
}

/* ==== takeover ======================================================================= */

static const char *const ACL_ACME = "company acme\n"
                                    "  user alice\n"
                                    "    readwrite #\n";

#define TAKEOVER_MSGS 5

/* User alice of acme, persistent, with two subscriptions, two messages in
 * flight and three queued, connected on the first client. */
static client *takeover_setup(fx *f, gmq_msg **m)
{
    f->cfg.max_inflight = 2;
    client *a = cl_new(f);
    connect_accept(a->c, user_req("alice-1", "alice", false, false), PRINCIPAL_USER);
    fx_run(f);
    assert_int_equal(last_of(a, MQTT_CONNACK)->rc, 0);
    const char *filters[] = {"a/#", "b/+"};
    const uint8_t qos[] = {1, 2};
    send_subscribe(f, a, 1, filters, qos, 2);
    make_msgs_padded(m, TAKEOVER_MSGS, "acme/a/x", 1, 700);
    /* One at a time: no write buffer so far held two of them. */
    for (int i = 0; i < TAKEOVER_MSGS; i++) {
        router_publish(f->b, m[i]);
        fx_run(f);
    }
    session *s = find(f, "acme/alice-1");
    assert_non_null(s);
    assert_int_equal(s->ninflight, 2);
    assert_int_equal(s->qlen, 3);
    return a;
}

/* opt 0: the new connection resumes the session; opt 1: it asks for a
 * clean one. */
static bool step_takeover(fx *f, unsigned long n)
{
    f->acl_text = ACL_ACME;
    fx_up(f);
    gmq_msg *m[TAKEOVER_MSGS];
    client *a = takeover_setup(f, m);
    client *b = cl_new(f);
    bool clean = f->opt == 1;
    connect_req *req = user_req("alice-1", "alice", clean, true);
    /* The resumed session sends all five at once: its write buffer grows
     * past every size used so far. */
    f->cfg.max_inflight = 10;
    fail_at(n);
    connect_accept(b->c, req, PRINCIPAL_USER);
    bool hit = failed(n);
    session *s = find(f, "acme/alice-1");
    if (b->c->state == CONN_ACTIVE && !b->c->close_after_flush) {
        /* Taken over [MQTT-3.1.4-2]. */
        assert_non_null(s);
        assert_ptr_equal(s->c, b->c);
        assert_int_equal(a->c->state, CONN_CLOSING);
        assert_string_equal(s->username, "alice");
        assert_string_equal(b->c->will->topic, "acme/status/w"); /* in its namespace */
        assert_int_equal(s->nsubs, clean ? 0 : 2);
    } else if (s) {
        /* Refused, or closed for want of output. A session kept is whole,
         * still alice's. */
        assert_int_equal(s->kind, PRINCIPAL_USER);
        assert_string_equal(s->username, "alice");
        if (!clean) {
            assert_int_equal(s->nsubs, 2);
            assert_int_equal(s->ninflight + s->qlen, TAKEOVER_MSGS);
        }
    }
    fx_run(f);
    check_broker(f->b);
    rx_pkt *ca = last_of(b, MQTT_CONNACK);
    if (ca && ca->rc == 0)
        assert_int_equal(ca->present, !clean);
    else if (ca)
        assert_int_equal(ca->rc, MQTT_CONNACK_UNAVAILABLE);
    if (clean) {
        /* Refused before the takeover: the old session goes on whole.
         * Otherwise it ended, and its messages with it. */
        s = find(f, "acme/alice-1");
        bool old_on = cl_open(a);
        if (old_on)
            assert_true(s && s->c == a->c && s->nsubs == 2);
        for (int i = 0; i < TAKEOVER_MSGS; i++)
            assert_int_equal(m[i]->refs, 1 + old_on);
    }
    /* The client comes back (on a fresh connection when it lost both) and
     * gets every message exactly in order. */
    tracker t = {0};
    if (!clean) {
        for (size_t i = 0; i < a->npkts; i++)
            if (a->pkts[i].type == MQTT_PUBLISH && t.got[a->pkts[i].idx]++ == 0)
                t.order[t.norder++] = a->pkts[i].idx;
        client *live = cl_open(a) ? a : cl_open(b) ? b : NULL;
        if (!live) {
            live = cl_new(f);
            connect_accept(live->c, user_req("alice-1", "alice", false, false), PRINCIPAL_USER);
        }
        live->handled = live == a ? a->npkts : 0;
        if (live == a) /* its two in flight are still unacknowledged */
            for (size_t i = 0; i < a->npkts; i++)
                if (a->pkts[i].type == MQTT_PUBLISH)
                    send_ack(f, a, MQTT_PUBACK, a->pkts[i].id);
        settle(f, live, &t);
        assert_int_equal(last_of(live, MQTT_CONNACK)->rc, 0);
        tracker_check(&t, TAKEOVER_MSGS, 0);
        s = find(f, "acme/alice-1");
        assert_int_equal(s->ninflight + s->qlen, 0);
        assert_string_equal(s->username, "alice");
    }
    check_broker(f->b);
    unref_msgs(m, TAKEOVER_MSGS);
    fx_down(f);
    return hit;
}

static void takeover_keeps_or_replaces_the_session_whole(void **state)
{
    (void)state;
    fx *f = fx_new();
    f->opt = 0;
    sweep(f, "takeover, session resumed", step_takeover);
    f->opt = 1;
    sweep(f, "takeover, clean session", step_takeover);
    fx_free(f);
}

/* ==== subscribe ========================================================================= */

typedef struct sub_case {
    const char *name;
    const char *const *filters;
    const uint8_t *qos;
    size_t n;
    size_t distinct;
} sub_case;

static const char *const ONE_FILTER[] = {"a/b"};
static const uint8_t ONE_QOS[] = {1};
static const char *const OVERLAP_FILTERS[] = {"a/#", "a/+", "a/b", "+/b", "#", "a/b"};
static const uint8_t OVERLAP_QOS[] = {1, 2, 0, 1, 0, 2};
static char many_buf[40][16];
static const char *many_filters[40];
static uint8_t many_qos[40];

static sub_case sub_cases[3];

static void sub_cases_init(void)
{
    for (int i = 0; i < 40; i++) {
        /* Shared prefixes, wildcards, and new branches of the tree. */
        snprintf(many_buf[i], sizeof(many_buf[i]), i % 5 == 0 ? "a/%d/+" : i % 7 == 0 ? "n%d/#" : "a/b/%d", i);
        many_filters[i] = many_buf[i];
        many_qos[i] = (uint8_t)(i % 3);
    }
    sub_cases[0] = (sub_case){"one filter", ONE_FILTER, ONE_QOS, 1, 1};
    sub_cases[1] = (sub_case){"40 filters", many_filters, many_qos, 40, 40};
    sub_cases[2] = (sub_case){"overlapping filters", OVERLAP_FILTERS, OVERLAP_QOS, 6, 5};
}

static bool filter_matches(const char *flt, const char *topic)
{
    return mqtt_topic_match((const uint8_t *)flt, strlen(flt), (const uint8_t *)topic,
                            strlen(topic));
}

static const char *const RETAINED_TOPICS[] = {"a/b", "a/c", "x/y", "a/b/3", "a/10/z"};
#define NRETAINED 5

static bool step_subscribe(fx *f, unsigned long n)
{
    const sub_case *sc = &sub_cases[f->opt];
    f->cfg.max_inflight = 1000; /* every retained message goes out at once */
    fx_up(f);
    /* Retained messages the new subscriptions receive [MQTT-3.3.1-6]. */
    for (int i = 0; i < NRETAINED; i++) {
        gmq_msg *r = gmq_msg_new(RETAINED_TOPICS[i], strlen(RETAINED_TOPICS[i]),
                                 (const uint8_t *)"r", 1, 1, true);
        router_publish(f->b, r);
        gmq_msg_unref(r);
    }
    client *a = cl_new(f);
    cl_connect(f, a, "gw-s", false);
    session *s = find(f, "/gw-s");
    uint64_t sent0 = f->b->stats.msgs_sent;
    fail_at(n);
    send_subscribe(f, a, 7, sc->filters, sc->qos, sc->n);
    bool hit = failed(n);
    fx_run(f);
    check_broker(f->b);
    rx_pkt *ack = last_of(a, MQTT_SUBACK);
    /* Granted filters are subscribed at the QoS granted, refused ones not;
     * without a SUBACK the connection was closed. */
    size_t expect_retained = 0;
    if (ack) {
        assert_int_equal(ack->ncodes, sc->n);
        for (size_t i = 0; i < sc->n; i++) {
            const char *flt = sc->filters[i];
            if (ack->codes[i] != MQTT_SUBACK_FAILURE) {
                assert_int_equal(ack->codes[i], sc->qos[i]);
                for (int r = 0; r < NRETAINED; r++)
                    expect_retained += filter_matches(flt, RETAINED_TOPICS[r]);
            }
            /* The last entry granted for a filter decides its QoS; a
             * filter never granted is not subscribed. */
            int last_granted = -1;
            for (size_t j = 0; j < sc->n; j++)
                if (strcmp(sc->filters[j], flt) == 0 && ack->codes[j] != MQTT_SUBACK_FAILURE)
                    last_granted = sc->qos[j];
            uintptr_t at = (uintptr_t)strmap_get(&s->subidx, flt, strlen(flt));
            if (last_granted < 0)
                assert_int_equal(at, 0);
            else
                assert_int_equal(s->subs[at - 1].qos, last_granted);
        }
        /* Every retained message owed was sent, queued, or dropped and
         * counted. */
        assert_int_equal(f->b->stats.msgs_sent - sent0 + s->qlen + f->b->stats.msgs_dropped,
                         expect_retained);
    } else {
        assert_null(a->c);
        assert_true(s->nsubs <= sc->distinct);
    }
    /* Subscribing again, without failures, grants everything. */
    client *live = a->c ? a : cl_new(f);
    if (live != a)
        assert_true(cl_connect(f, live, "gw-s", false));
    size_t before = live->npkts;
    send_subscribe(f, live, 8, sc->filters, sc->qos, sc->n);
    fx_run(f);
    ack = last_of(live, MQTT_SUBACK);
    assert_true(live->npkts > before && ack && ack->id == 8);
    for (size_t i = 0; i < sc->n; i++)
        assert_int_equal(ack->codes[i], sc->qos[i]);
    assert_int_equal(s->nsubs, sc->distinct);
    check_broker(f->b);
    /* Overlapping subscriptions still fold into one delivery at the
     * highest QoS granted [MQTT-3.3.5-1]. */
    gmq_msg *m = gmq_msg_new("a/b", 3, (const uint8_t *)"m0", 2, 2, false);
    size_t pubs = count_of(live, MQTT_PUBLISH);
    router_publish(f->b, m);
    gmq_msg_unref(m);
    fx_run(f);
    int best = -1;
    for (size_t i = 0; i < sc->n; i++)
        if (filter_matches(sc->filters[i], "a/b") && sc->qos[i] > best)
            best = sc->qos[i];
    if (best < 0) {
        assert_int_equal(count_of(live, MQTT_PUBLISH), pubs);
    } else {
        assert_int_equal(count_of(live, MQTT_PUBLISH), pubs + 1);
        assert_int_equal(last_of(live, MQTT_PUBLISH)->qos, best);
    }
    fx_down(f);
    return hit;
}

static void subscribe_grants_or_refuses_each_filter_cleanly(void **state)
{
    (void)state;
    sub_cases_init();
    fx *f = fx_new();
    for (int i = 0; i < 3; i++) {
        f->opt = i;
        char name[64];
        snprintf(name, sizeof(name), "subscribe, %s", sub_cases[i].name);
        sweep(f, name, step_subscribe);
    }
    fx_free(f);
}

/* The subscription limit holds whatever fails. */
static bool step_subscribe_limit(fx *f, unsigned long n)
{
    f->cfg.max_subscriptions = 10;
    fx_up(f);
    client *a = cl_new(f);
    cl_connect(f, a, "gw-l", false);
    fail_at(n);
    send_subscribe(f, a, 1, many_filters, many_qos, 40);
    bool hit = failed(n);
    fx_run(f);
    check_broker(f->b);
    session *s = find(f, "/gw-l");
    assert_true(s->nsubs <= 10);
    rx_pkt *ack = last_of(a, MQTT_SUBACK);
    if (ack) {
        size_t granted = 0;
        for (size_t i = 0; i < 40; i++)
            granted += ack->codes[i] != MQTT_SUBACK_FAILURE;
        assert_int_equal(granted, s->nsubs);
    }
    fx_down(f);
    f->cfg.max_subscriptions = 100000;
    return hit;
}

static void subscription_limit_holds_under_failures(void **state)
{
    (void)state;
    sub_cases_init();
    fx *f = fx_new();
    sweep(f, "subscribe past max_subscriptions", step_subscribe_limit);
    fx_free(f);
}

/* ==== unsubscribe ======================================================================= */

/* opt 0: every filter; opt 1: every other one (the last moves into holes). */
static bool step_unsubscribe(fx *f, unsigned long n)
{
    fx_up(f);
    client *a = cl_new(f);
    cl_connect(f, a, "gw-u", false);
    send_subscribe(f, a, 1, many_filters, many_qos, 40);
    session *s = find(f, "/gw-u");
    assert_int_equal(s->nsubs, 40);
    const char *drop[41];
    size_t nd = 0;
    for (size_t i = 0; i < 40; i += f->opt ? 2 : 1)
        drop[nd++] = many_filters[i];
    drop[nd++] = "never/subscribed";
    size_t keep = 40 - (nd - 1);
    fail_at(n);
    send_unsubscribe(f, a, 2, drop, nd);
    bool hit = failed(n);
    fx_run(f);
    check_broker(f->b);
    rx_pkt *ack = last_of(a, MQTT_UNSUBACK);
    if (ack) {
        assert_int_equal(ack->id, 2);
        assert_int_equal(s->nsubs, keep);
    } else {
        assert_null(a->c); /* closed for want of memory */
        assert_true(s->nsubs >= keep);
    }
    for (size_t i = 0; i < 40; i++) {
        const char *flt = many_filters[i];
        bool kept = strmap_get(&s->subidx, flt, strlen(flt)) != NULL;
        if (f->opt && i % 2)
            assert_true(kept);
    }
    /* Unsubscribing again, without failures, removes the rest. */
    client *live = a->c ? a : cl_new(f);
    if (live != a)
        assert_true(cl_connect(f, live, "gw-u", false));
    send_unsubscribe(f, live, 3, drop, nd);
    fx_run(f);
    assert_int_equal(last_of(live, MQTT_UNSUBACK)->id, 3);
    assert_int_equal(s->nsubs, keep);
    check_broker(f->b);
    fx_down(f);
    return hit;
}

static void unsubscribe_removes_from_session_and_tree_together(void **state)
{
    (void)state;
    sub_cases_init();
    fx *f = fx_new();
    f->opt = 0;
    sweep(f, "unsubscribe, all filters", step_unsubscribe);
    f->opt = 1;
    sweep(f, "unsubscribe, every other filter", step_unsubscribe);
    fx_free(f);
}

/* ==== queueing to an offline session ===================================================== */

#define QUEUE_MSGS 30

/* opt 0: QoS 1 against max_queued; opt 1: QoS 2 against max_queued_bytes;
 * opt 2: mixed QoS, no limit reached. With f->store, every delivery is
 * also written to the store. */
static bool step_offline_queue(fx *f, unsigned long n)
{
    f->cfg.max_queued = f->opt == 0 ? 24 : 1000;
    f->cfg.max_queued_bytes = f->opt == 1 ? 150 : 64u << 20;
    if (f->store)
        db_remove(f);
    fx_up(f);
    client *a = cl_new(f);
    cl_connect(f, a, "gw-q", false);
    const char *filters[] = {"q/#"};
    const uint8_t qos[] = {2};
    send_subscribe(f, a, 1, filters, qos, 1);
    send_disconnect(f, a);
    fx_run(f);
    session *s = find(f, "/gw-q");
    assert_null(s->c);
    gmq_msg *m[QUEUE_MSGS];
    make_msgs(m, QUEUE_MSGS, "q/t", f->opt == 0 ? 1 : f->opt == 1 ? 2 : 3);
    fail_at(n);
    for (int i = 0; i < QUEUE_MSGS; i++)
        router_publish(f->b, m[i]);
    bool hit = failed(n);
    check_broker(f->b);
    /* Each message is queued, or dropped and counted [limits: max_queued,
     * max_queued_bytes]. */
    uint64_t dropped = f->b->stats.msgs_dropped;
    assert_int_equal(s->qlen + dropped, QUEUE_MSGS);
    for (int i = 0; i < QUEUE_MSGS; i++) {
        bool in = false;
        for (size_t k = 0; k < s->qlen; k++)
            in |= s->queue[(s->qhead + k) % s->qcap].msg == m[i];
        assert_int_equal(m[i]->refs, 1 + in);
    }
    if (f->opt == 0)
        assert_true(dropped >= QUEUE_MSGS - 24);
    /* The client comes back and receives every queued message, in order. */
    client *b = cl_new(f);
    assert_true(cl_connect(f, b, "gw-q", false));
    tracker t = {0};
    settle(f, b, &t);
    tracker_check(&t, QUEUE_MSGS, dropped);
    assert_int_equal(s->qlen + s->ninflight, 0);
    check_broker(f->b);
    unref_msgs(m, QUEUE_MSGS);
    fx_down(f);
    return hit;
}

/* The client of an offline session with 30 messages queued comes back:
 * whatever fails, it gets all of them, in order (on a later connection if
 * this one is closed for want of memory). */
static bool step_reconnect(fx *f, unsigned long n)
{
    f->cfg.max_inflight = 4;
    if (f->store)
        db_remove(f);
    fx_up(f);
    client *a = cl_new(f);
    cl_connect(f, a, "gw-c", false);
    const char *filters[] = {"q/#"};
    const uint8_t qos[] = {2};
    send_subscribe(f, a, 1, filters, qos, 1);
    send_disconnect(f, a);
    fx_run(f);
    gmq_msg *m[QUEUE_MSGS];
    make_msgs_padded(m, QUEUE_MSGS, "q/t", 3, 300);
    for (int i = 0; i < QUEUE_MSGS; i++)
        router_publish(f->b, m[i]);
    session *s = find(f, "/gw-c");
    assert_int_equal(s->qlen, QUEUE_MSGS);
    client *b = cl_new(f);
    tracker t = {0};
    fail_at(n);
    send_connect(f, b, "gw-c", false, NULL);
    settle(f, b, &t);
    bool hit = failed(n);
    check_broker(f->b);
    assert_int_equal(f->b->stats.msgs_dropped, 0); /* queued ones are kept */
    if (!cl_open(b)) {
        client *c = cl_new(f);
        assert_true(cl_connect(f, c, "gw-c", false));
        settle(f, c, &t);
    }
    tracker_check(&t, QUEUE_MSGS, 0);
    assert_int_equal(s->qlen + s->ninflight, 0);
    check_broker(f->b);
    unref_msgs(m, QUEUE_MSGS);
    fx_down(f);
    return hit;
}

static void reconnect_delivers_every_queued_message(void **state)
{
    (void)state;
    fx *f = fx_new();
    sweep(f, "reconnect and drain the queue", step_reconnect);
    f->store = true;
    sweep(f, "reconnect and drain the queue, persistent", step_reconnect);
    fx_free(f);
}

static void offline_queue_drops_and_counts_what_it_cannot_keep(void **state)
{
    (void)state;
    fx *f = fx_new();
    const char *names[] = {"offline queue, QoS 1 to max_queued",
                           "offline queue, QoS 2 to max_queued_bytes",
                           "offline queue, mixed QoS"};
    for (int i = 0; i < 3; i++) {
        f->opt = i;
        sweep(f, names[i], step_offline_queue);
    }
    f->store = true;
    f->opt = 2;
    sweep(f, "offline queue, mixed QoS, persistent", step_offline_queue);
    fx_free(f);
}

/* ==== delivering and acknowledging in flight ==================================================== */

#define FLIGHT_MSGS 12

/* Messages of mixed QoS to an online client with a window of 3, which
 * acknowledges as they come (PUBACK; PUBREC, PUBREL, PUBCOMP). */
static bool step_inflight(fx *f, unsigned long n)
{
    f->cfg.max_inflight = 3;
    if (f->store)
        db_remove(f);
    fx_up(f);
    client *a = cl_new(f);
    cl_connect(f, a, "gw-d", false);
    const char *filters[] = {"d/#"};
    const uint8_t qos[] = {2};
    send_subscribe(f, a, 1, filters, qos, 1);
    fx_run(f);
    a->handled = a->npkts;
    session *s = find(f, "/gw-d");
    gmq_msg *m[FLIGHT_MSGS];
    make_msgs_padded(m, FLIGHT_MSGS, "d/t", 3, f->opt ? 900 : 0);
    tracker t = {0};
    fail_at(n);
    for (int i = 0; i < FLIGHT_MSGS; i++) {
        router_publish(f->b, m[i]);
        if (i % 4 == 3)
            settle(f, a, &t);
    }
    settle(f, a, &t);
    bool hit = failed(n);
    check_broker(f->b);
    uint64_t dropped = f->b->stats.msgs_dropped;
    /* A connection closed for want of output leaves the rest in the
     * session: the client reconnects and finishes. */
    if (!a->c) {
        client *b = cl_new(f);
        assert_true(cl_connect(f, b, "gw-d", false));
        settle(f, b, &t);
    }
    tracker_check(&t, FLIGHT_MSGS, dropped);
    assert_int_equal(s->qlen + s->ninflight, 0);
    for (int i = 0; i < FLIGHT_MSGS; i++)
        assert_int_equal(m[i]->refs, 1);
    check_broker(f->b);
    unref_msgs(m, FLIGHT_MSGS);
    fx_down(f);
    return hit;
}

static void inflight_window_survives_failures_without_losing_messages(void **state)
{
    (void)state;
    fx *f = fx_new();
    sweep(f, "deliver and acknowledge in flight", step_inflight);
    f->opt = 1;
    sweep(f, "deliver and acknowledge in flight, large messages", step_inflight);
    f->opt = 0;
    f->store = true;
    sweep(f, "deliver and acknowledge in flight, persistent", step_inflight);
    fx_free(f);
}

/* ==== retained messages through PUBLISH ========================================================= */

/* opt 0: replace "r/1"; opt 1: set a new deep topic; opt 2: delete "r/1"
 * (empty payload). Published with QoS 1 by another client; a subscriber
 * of r/# receives it. */
static bool step_retained(fx *f, unsigned long n)
{
    if (f->store)
        db_remove(f);
    fx_up(f);
    gmq_msg *old = gmq_msg_new("r/1", 3, (const uint8_t *)"old", 3, 1, true);
    router_publish(f->b, old);
    client *sub = cl_new(f);
    cl_connect(f, sub, "gw-r", false);
    const char *filters[] = {"r/#"};
    const uint8_t qos[] = {1};
    send_subscribe(f, sub, 1, filters, qos, 1);
    client *pub = cl_new(f);
    cl_connect(f, pub, "pub", true);
    fx_run(f);
    session *s = find(f, "/gw-r");
    size_t got0 = count_of(sub, MQTT_PUBLISH); /* the retained "old" */
    const char *topic = f->opt == 1 ? "r/2/x/y/z" : "r/1";
    const char *payload = f->opt == 2 ? "" : "new";
    fail_at(n);
    send_publish(f, pub, topic, payload, 1, true, 9);
    bool hit = failed(n);
    commit_all(f);
    fx_run(f);
    check_broker(f->b);
    gmq_msg *now = retain_get(f->b->retained, topic, strlen(topic));
    uint64_t dropped = f->b->stats.msgs_dropped;
    /* The store changed entirely or not at all. */
    if (f->opt == 2)
        assert_true(!now || now == old);
    else if (now && now != old)
        assert_true(payload_is(now, "new"));
    else
        assert_ptr_equal(now, f->opt == 0 ? old : NULL);
    size_t want = f->opt == 1 ? 1u + (now != NULL) : f->opt == 2 ? (now != NULL) : 1u;
    assert_int_equal(retain_count(f->b->retained), want);
    size_t got = count_of(sub, MQTT_PUBLISH) - got0;
    rx_pkt *ack = last_of(pub, MQTT_PUBACK);
    bool published = f->opt == 2 ? now == NULL : now && now != old;
    if (published) {
        /* The subscriber gets it, or its copy was dropped and counted; the
         * publisher is answered unless closed for want of memory. */
        assert_int_equal(got + s->qlen + dropped, 1);
        assert_true(!pub->c || (ack && ack->id == 9));
    } else {
        /* No memory for the message or to retain it: published to no one,
         * counted, and not acknowledged, so that the client sends it again
         * (a dropped QoS 1 message must not be acknowledged). */
        assert_int_equal(got + s->qlen, 0);
        assert_int_equal(dropped, 1);
        assert_null(pub->c);
        assert_true(!ack || ack->id != 9);
    }
    /* Publishing again, without failures, works. */
    if (!pub->c) {
        pub = cl_new(f);
        cl_connect(f, pub, "pub", true);
    }
    send_publish(f, pub, topic, payload, 1, true, 10);
    commit_all(f);
    fx_run(f);
    assert_int_equal(last_of(pub, MQTT_PUBACK)->id, 10);
    now = retain_get(f->b->retained, topic, strlen(topic));
    if (f->opt == 2)
        assert_null(now);
    else
        assert_true(payload_is(now, "new"));
    check_broker(f->b);
    gmq_msg_unref(old);
    fx_down(f);
    return hit;
}

static void retained_store_changes_whole_or_not_at_all(void **state)
{
    (void)state;
    fx *f = fx_new();
    const char *names[] = {"retained replace", "retained set, new branch",
                           "retained delete"};
    for (int i = 0; i < 3; i++) {
        f->opt = i;
        sweep(f, names[i], step_retained);
    }
    f->store = true;
    f->opt = 0;
    sweep(f, "retained replace, persistent", step_retained);
    fx_free(f);
}

/* ==== routing one publish to many sessions ======================================================== */

#define FAN 30

/* 10 online QoS 0 subscribers, 10 online QoS 1, 5 offline persistent ones
 * and 5 online ones whose two filters overlap; the publisher sends QoS 2. */
static session *fan_session(fx *f, int i)
{
    char key[16];
    snprintf(key, sizeof(key), "/s%02d", i);
    session *s = find(f, key);
    assert_non_null(s);
    return s;
}

static bool step_fanout(fx *f, unsigned long n)
{
    fx_up(f);
    client *subs[FAN];
    for (int i = 0; i < FAN; i++) {
        char id[16];
        snprintf(id, sizeof(id), "s%02d", i);
        subs[i] = cl_new(f);
        cl_connect(f, subs[i], id, false);
        if (i < 10) {
            const char *flt[] = {"f/#"};
            const uint8_t q[] = {0};
            send_subscribe(f, subs[i], 1, flt, q, 1);
        } else if (i < 25) {
            const char *flt[] = {"f/+"};
            const uint8_t q[] = {1};
            send_subscribe(f, subs[i], 1, flt, q, 1);
            if (i >= 20)
                send_disconnect(f, subs[i]);
        } else {
            const char *flt[] = {"f/#", "f/x"};
            const uint8_t q[] = {0, 2};
            send_subscribe(f, subs[i], 1, flt, q, 2);
        }
    }
    client *pub = cl_new(f);
    cl_connect(f, pub, "pub", true);
    fx_run(f);
    uint64_t sent0 = f->b->stats.msgs_sent;
    fail_at(n);
    send_publish(f, pub, "f/x", "m0", 2, false, 5);
    bool hit = failed(n);
    check_broker(f->b);
    /* Every subscriber got it once (written, in flight or queued), or it
     * was dropped and counted; or the publisher was closed before routing
     * (no QoS 2 state: it will send again). */
    size_t nqueued = 0, held = 0;
    for (int i = 0; i < FAN; i++) {
        session *s = fan_session(f, i);
        nqueued += s->qlen;
        held += s->qlen + s->ninflight;
        assert_true(s->qlen + s->ninflight <= 1);
        if (i >= 25 && s->ninflight)
            assert_int_equal(s->inflight[0].qos, 2); /* folded [MQTT-3.3.5-1] */
    }
    uint64_t written = f->b->stats.msgs_sent - sent0, dropped = f->b->stats.msgs_dropped;
    if (pub->c->state == CONN_CLOSING && !session_rx_qos2_has(find(f, "/pub"), 5)) {
        /* No memory for its QoS 2 state or for the message: nothing was
         * routed, nothing acknowledged, and the id is not kept, so that
         * the client's resend is routed [MQTT-4.3.3-2]. */
        assert_int_equal(written + held, 0);
        assert_true(dropped <= 1);
    } else {
        assert_int_equal(written + nqueued + dropped, FAN);
    }
    fx_run(f);
    for (int i = 0; i < FAN; i++)
        assert_true(count_of(subs[i], MQTT_PUBLISH) <= 1);
    /* The next publish, without failures, reaches all of them. */
    if (!pub->c) {
        pub = cl_new(f);
        cl_connect(f, pub, "pub", true);
    }
    sent0 = f->b->stats.msgs_sent;
    size_t queued0 = 0;
    for (int i = 20; i < 25; i++)
        queued0 += fan_session(f, i)->qlen;
    send_publish(f, pub, "f/x", "m1", 2, false, 6);
    size_t queued1 = 0;
    for (int i = 20; i < 25; i++)
        queued1 += fan_session(f, i)->qlen;
    assert_int_equal(f->b->stats.msgs_sent - sent0 + queued1 - queued0, FAN);
    check_broker(f->b);
    fx_down(f);
    return hit;
}

static void fanout_accounts_for_every_subscriber(void **state)
{
    (void)state;
    fx *f = fx_new();
    sweep(f, "router_publish to 30 sessions", step_fanout);
    fx_free(f);
}

/* ==== ending a session ========================================================================= */

/* A clean session with 20 subscriptions and a retained will closes
 * abnormally: the session ends and the will goes to a subscriber. */
static bool step_session_end(fx *f, unsigned long n)
{
    sub_cases_init();
    fx_up(f);
    client *w = cl_new(f);
    client *a = cl_new(f);
    cl_connect(f, w, "watch", false);
    const char *flt[] = {"status/#"};
    const uint8_t q[] = {1};
    send_subscribe(f, w, 1, flt, q, 1);
    send_connect(f, a, "gw-e", true, "status/gw-e");
    send_subscribe(f, a, 1, many_filters, many_qos, 20);
    fx_run(f);
    assert_int_equal(last_of(a, MQTT_CONNACK)->rc, 0);
    size_t wpubs = count_of(w, MQTT_PUBLISH);
    conn_close(a->c, "test: connection lost");
    fail_at(n);
    fx_run(f); /* reaps it */
    bool hit = failed(n);
    assert_null(a->c);
    assert_null(find(f, "/gw-e"));
    assert_int_equal(topictree_count(f->b->subs), 1);
    check_broker(f->b);
    session *ws = find(f, "/watch");
    gmq_msg *will = retain_get(f->b->retained, "status/gw-e", 11);
    size_t got = count_of(w, MQTT_PUBLISH) - wpubs;
    assert_int_equal(got + ws->qlen + f->b->stats.msgs_dropped, 1);
    if (will)
        assert_true(payload_is(will, "gone"));
    fx_down(f);
    return hit;
}

static void session_end_frees_everything_and_publishes_the_will(void **state)
{
    (void)state;
    fx *f = fx_new();
    sweep(f, "session end with a will", step_session_end);
    fx_free(f);
}

/* ==== the caps on persistent sessions ======================================================= */

/* acme is at max_sessions_per_company 2: alice-1 offline, alice-2
 * connected. opt 0: a CONNECT for a new persistent session alice-3 is
 * refused (CONNACK 3, counted); opt 1: alice-1 resumes (a cap never
 * refuses that). Whatever fails, the counts stay 2 and alice-1 stays
 * whole. */
static bool step_cap(fx *f, unsigned long n)
{
    f->acl_text = ACL_ACME;
    f->cfg.max_sessions_per_company = 2;
    fx_up(f);
    client *a1 = cl_new(f), *a2 = cl_new(f);
    connect_accept(a1->c, user_req("alice-1", "alice", false, false), PRINCIPAL_USER);
    connect_accept(a2->c, user_req("alice-2", "alice", false, false), PRINCIPAL_USER);
    const char *filters[] = {"a/#"};
    const uint8_t qos[] = {1};
    send_subscribe(f, a1, 1, filters, qos, 1);
    send_disconnect(f, a1);
    fx_run(f);
    session *s1 = find(f, "acme/alice-1");
    assert_true(s1 && !s1->c && s1->nsubs == 1);
    assert_int_equal(f->b->persistent_sessions, 2);
    bool resume = f->opt == 1;
    client *c = cl_new(f);
    connect_req *req = user_req(resume ? "alice-1" : "alice-3", "alice", false, true);
    uint64_t refused0 = f->b->stats.sessions_refused;
    fail_at(n);
    connect_accept(c->c, req, PRINCIPAL_USER);
    bool hit = failed(n);
    fx_run(f);
    check_broker(f->b);
    assert_int_equal(f->b->persistent_sessions, 2);
    assert_ptr_equal(find(f, "acme/alice-1"), s1);
    assert_int_equal(s1->nsubs, 1);
    assert_non_null(find(f, "acme/alice-2"));
    assert_true(cl_open(a2));
    rx_pkt *ca = last_of(c, MQTT_CONNACK);
    uint64_t refused = f->b->stats.sessions_refused - refused0;
    if (!resume) {
        /* For the cap (counted) or for want of memory: never a session. */
        assert_null(find(f, "acme/alice-3"));
        assert_null(c->c);
        assert_true(!ca || ca->rc == MQTT_CONNACK_UNAVAILABLE);
        assert_true(refused <= 1);
        if (!hit)
            assert_true(ca && refused == 1);
    } else {
        assert_int_equal(refused, 0);
        if (ca && ca->rc == MQTT_CONNACK_ACCEPTED) {
            assert_true(ca->present);
            assert_true(!c->c || s1->c == c->c);
        } else {
            assert_true(!ca || ca->rc == MQTT_CONNACK_UNAVAILABLE);
        }
        if (!c->c)
            assert_null(s1->c);
    }
    /* Without failures: alice-1 resumes; once a clean CONNECT ended it,
     * alice-3 fits. */
    client *r = cl_new(f);
    connect_accept(r->c, user_req("alice-1", "alice", false, false), PRINCIPAL_USER);
    fx_run(f);
    assert_true(last_of(r, MQTT_CONNACK)->present);
    client *x = cl_new(f);
    connect_accept(x->c, user_req("alice-1", "alice", true, false), PRINCIPAL_USER);
    client *y = cl_new(f);
    connect_accept(y->c, user_req("alice-3", "alice", false, false), PRINCIPAL_USER);
    fx_run(f);
    assert_int_equal(last_of(y, MQTT_CONNACK)->rc, MQTT_CONNACK_ACCEPTED);
    assert_int_equal(f->b->persistent_sessions, 2);
    check_broker(f->b);
    fx_down(f);
    return hit;
}

static void session_caps_refuse_whole_under_failures(void **state)
{
    (void)state;
    fx *f = fx_new();
    f->opt = 0;
    sweep(f, "connect refused at max_sessions_per_company", step_cap);
    f->opt = 1;
    sweep(f, "connect resuming at max_sessions_per_company", step_cap);
    fx_free(f);
}

/* ==== session expiry ======================================================================== */

#define EXPIRE_N 6

static int64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Six persistent sessions subscribed to q/#, in the store, went offline
 * 65, 64, 63, 7, 6 and 5 s ago; a seventh stays connected; a QoS 1
 * message waits in each. session_expiry 60: session_expire discards the
 * first three (opt 1: at most two per call, then the third), whatever
 * fails; and a deletion the store could not queue does not bring one
 * back: at the next start it is expired again. */
static bool step_expire(fx *f, unsigned long n)
{
    db_remove(f);
    f->cfg.session_expiry = 60;
    fx_up(f);
    const char *filters[] = {"q/#"};
    const uint8_t qos[] = {1};
    session *s[EXPIRE_N];
    for (int i = 0; i < EXPIRE_N; i++) {
        char id[16];
        snprintf(id, sizeof(id), "e%d", i);
        client *cl = cl_new(f);
        cl_connect(f, cl, id, false);
        send_subscribe(f, cl, 1, filters, qos, 1);
        send_disconnect(f, cl);
    }
    client *stay = cl_new(f);
    cl_connect(f, stay, "stay", false);
    send_subscribe(f, stay, 1, filters, qos, 1);
    fx_run(f);
    /* Back-dated as a restore would (times before the tail's are kept
     * only while loading), and in the store for the restart below. */
    int64_t now = wall_ms();
    f->b->loading = true;
    for (int i = 0; i < EXPIRE_N; i++) {
        char key[16];
        snprintf(key, sizeof(key), "/e%d", i);
        s[i] = find(f, key);
        assert_true(s[i] && !s[i]->c);
        int64_t since = now - (i < 3 ? 65000 - i * 1000 : 10000 - i * 1000);
        session_offline_since(s[i], since);
        store_put_session_offline(f->b->store, key, since);
    }
    f->b->loading = false;
    session_sort_offline(f->b);
    gmq_msg *m = gmq_msg_new("q/x", 3, (const uint8_t *)"m0", 2, 1, false);
    assert_non_null(m);
    router_publish(f->b, m);
    fx_run(f);
    assert_int_equal(m->refs, 2 + EXPIRE_N);
    check_broker(f->b);
    fail_at(n);
    size_t k = session_expire(f->b, now, f->opt ? 2 : 100);
    bool hit = failed(n);
    check_broker(f->b);
    assert_int_equal(k, f->opt ? 2 : 3);
    if (f->opt)
        assert_int_equal(session_expire(f->b, now, 100), 1);
    check_broker(f->b);
    assert_int_equal(f->b->stats.sessions_expired, 3);
    for (int i = 0; i < EXPIRE_N; i++) {
        char key[16];
        snprintf(key, sizeof(key), "/e%d", i);
        assert_true(i < 3 ? find(f, key) == NULL : find(f, key) == s[i]);
    }
    assert_non_null(find(f, "/stay"));
    assert_int_equal(f->b->persistent_sessions, EXPIRE_N - 3 + 1);
    assert_int_equal(m->refs, 2 + EXPIRE_N - 3); /* the expired copies are freed */
    assert_int_equal(session_expire(f->b, now, 100), 0);
    gmq_msg_unref(m);
    fx_down(f); /* commits */
    /* Restarted: the three that were not due are back, the others never. */
    fx_up(f);
    check_broker(f->b);
    assert_int_equal(f->b->sessions.count, EXPIRE_N - 3 + 1);
    for (int i = 3; i < EXPIRE_N; i++) {
        char key[16];
        snprintf(key, sizeof(key), "/e%d", i);
        assert_non_null(find(f, key));
    }
    fx_down(f);
    f->cfg.session_expiry = 0;
    return hit;
}

static void session_expiry_discards_whole_under_failures(void **state)
{
    (void)state;
    fx *f = fx_new();
    f->store = true;
    f->opt = 0;
    sweep(f, "session_expire", step_expire);
    f->opt = 1;
    sweep(f, "session_expire, two per sweep", step_expire);
    fx_free(f);
}

/* ==== telemetry ============================================================================= */

static const char *const ACL_TELEMETRY = "company acme\n"
                                         "  devices\n"
                                         "    readwrite telemetry/%d/#\n";
static char *telemetry_topics[] = {"telemetry/#"};

/* Device gw-t of acme (as a verified certificate names it) connects with
 * a persistent session. */
static client *device_connect(fx *f)
{
    client *cl = cl_new(f);
    tls_identity *id = gmq_calloc(1, sizeof(*id));
    connect_req *req = gmq_calloc(1, sizeof(*req));
    assert_true(id && req);
    strcpy(id->device, "gw-t");
    strcpy(id->company, "acme");
    cl->c->identity = id; /* freed with the connection */
    req->client_id = gmq_strdup("gw-t");
    assert_non_null(req->client_id);
    connect_accept(cl->c, req, PRINCIPAL_DEVICE);
    fx_run(f);
    assert_int_equal(last_of(cl, MQTT_CONNACK)->rc, MQTT_CONNACK_ACCEPTED);
    return cl;
}

/* Rows in a table of the store (read after fx_down committed it). */
static int64_t db_rows(fx *f, const char *table)
{
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open_v2(f->db, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    char sql[64];
    snprintf(sql, sizeof(sql), "SELECT count(*) FROM %s", table);
    sqlite3_stmt *st = NULL;
    assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    int64_t n = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    sqlite3_close(db);
    return n;
}

/* A device publishes one telemetry message with QoS 2 and RETAIN 1 (no
 * memory to retain it makes router_publish fail), then completes the
 * exchange as a client does: resending the PUBLISH until it gets PUBREC
 * (reconnecting when closed), then PUBREL until PUBCOMP. The outbox never
 * holds the point twice [MQTT-4.3.3-2]; it holds it once unless its own
 * allocation failed (dropped and logged: nothing can be routed again to
 * make it). */
static bool step_telemetry(fx *f, unsigned long n)
{
    db_remove(f);
    f->acl_text = ACL_TELEMETRY;
    f->cfg.telemetry_topics = telemetry_topics;
    f->cfg.ntelemetry_topics = 1;
    fx_up(f);
    client *d = device_connect(f);
    const char *topic = "telemetry/gw-t/temp", *payload = "{\"temp\": 21.5}";
    fail_at(n);
    send_publish(f, d, topic, payload, 2, true, 7);
    bool hit = failed(n);
    commit_all(f);
    fx_run(f);
    check_broker(f->b);
    rx_pkt *rec = last_of(d, MQTT_PUBREC);
    if (!rec || rec->id != 7) {
        /* Not acknowledged: sent again, on a new connection if need be. */
        if (!cl_open(d))
            d = device_connect(f);
        send_publish(f, d, topic, payload, 2, true, 7);
        commit_all(f);
        fx_run(f);
        rec = last_of(d, MQTT_PUBREC);
        assert_true(rec && rec->id == 7);
    }
    if (!cl_open(d))
        d = device_connect(f);
    send_ack(f, d, MQTT_PUBREL, 7);
    commit_all(f);
    fx_run(f);
    rx_pkt *comp = last_of(d, MQTT_PUBCOMP);
    assert_true(comp && comp->id == 7);
    gmq_msg *r = retain_get(f->b->retained, "acme/telemetry/gw-t/temp", 24);
    assert_true(r && payload_is(r, payload));
    check_broker(f->b);
    fx_down(f);
    int64_t points = db_rows(f, "outbox") + db_rows(f, "dead_letters");
    assert_true(points <= 1);
    if (!hit)
        assert_int_equal(points, 1);
    f->cfg.telemetry_topics = NULL;
    f->cfg.ntelemetry_topics = 0;
    return hit;
}

static void telemetry_point_stored_at_most_once_under_failures(void **state)
{
    (void)state;
    fx *f = fx_new();
    f->store = true;
    sweep(f, "telemetry publish, QoS 2", step_telemetry);
    fx_free(f);
}

/* ==== restoring sessions from the store ========================================================= */

typedef struct restored {
    size_t sessions, subs, inflight, queued, rx, retained, pubcomp;
} restored;

static restored snapshot(broker *b)
{
    restored r = {0};
    for (size_t i = 0; i < b->sessions.cap; i++) {
        if (!b->sessions.slots[i].key)
            continue;
        session *s = b->sessions.slots[i].value;
        r.sessions++;
        r.subs += s->nsubs;
        r.inflight += s->ninflight;
        r.queued += s->qlen;
        r.rx += s->nrx_qos2;
        for (size_t k = 0; k < s->ninflight; k++)
            r.pubcomp += s->inflight[k].state == OUT_WAIT_PUBCOMP;
    }
    r.retained = retain_count(b->retained);
    return r;
}

/* Writes a store with two persistent sessions: subscriptions, messages in
 * flight (one past PUBREC), queued ones, QoS 2 receipts, retained ones. */
static restored restore_write(fx *f)
{
    f->cfg.max_inflight = 3;
    db_remove(f);
    fx_up(f);
    for (int i = 0; i < 3; i++) {
        gmq_msg *r = gmq_msg_new(RETAINED_TOPICS[i], strlen(RETAINED_TOPICS[i]),
                                 (const uint8_t *)"r", 1, 1, true);
        router_publish(f->b, r);
        gmq_msg_unref(r);
    }
    const char *ids[] = {"gw-a", "gw-b"};
    for (int k = 0; k < 2; k++) {
        client *a = cl_new(f);
        cl_connect(f, a, ids[k], false);
        const char *filters[] = {"p/#", "p/+", "z/1"};
        const uint8_t qos[] = {2, 1, 0};
        send_subscribe(f, a, 1, filters, qos, 3);
        send_publish(f, a, "z/9", "in", 2, false, 40 + (uint16_t)k); /* awaits PUBREL */
    }
    gmq_msg *m[8];
    make_msgs(m, 8, "p/t", 3);
    for (int i = 0; i < 8; i++)
        router_publish(f->b, m[i]);
    fx_run(f);
    /* gw-a: PUBREC for its first QoS 2 message; gw-b goes offline. */
    client *a = &f->cl[0];
    for (size_t i = 0; i < a->npkts; i++)
        if (a->pkts[i].type == MQTT_PUBLISH && a->pkts[i].qos == 2) {
            send_ack(f, a, MQTT_PUBREC, a->pkts[i].id);
            break;
        }
    send_disconnect(f, &f->cl[1]);
    fx_run(f);
    restored want = snapshot(f->b);
    assert_int_equal(want.pubcomp, 1);
    assert_true(want.queued > 0 && want.inflight > 0 && want.rx == 2);
    unref_msgs(m, 8);
    fx_down(f); /* commits */
    return want;
}

static restored restore_want;

static bool step_restore(fx *f, unsigned long n)
{
    f->live0 = gmq_alloc_live();
    f->loop = ev_loop_new(EVFLAG_AUTO);
    f->cfg.persistence_file = f->db;
    f->b = broker_new(f->loop, &f->cfg);
    assert_non_null(f->b);
    fail_at(n);
    int rc = persist_open(f->b);
    bool hit = failed(n);
    /* The documented failure: -1 (logged), and the broker does not start.
     * Whatever was restored until then is freed with the broker. */
    if (rc == 0) {
        restored got = snapshot(f->b);
        assert_memory_equal(&got, &restore_want, sizeof(got));
        check_broker(f->b);
    } else {
        assert_int_equal(rc, -1);
    }
    fx_down(f);
    return hit;
}

static void restore_from_store_fails_whole_and_frees_everything(void **state)
{
    (void)state;
    fx *f = fx_new();
    f->store = true;
    restore_want = restore_write(f);
    sweep(f, "restore from the store", step_restore);
    /* A failed load never changes the file: a last one restores it all,
     * and the session resumes with its messages. */
    f->cfg.max_inflight = 3;
    fx_up(f);
    restored got = snapshot(f->b);
    assert_memory_equal(&got, &restore_want, sizeof(got));
    client *b = cl_new(f);
    assert_true(cl_connect(f, b, "gw-b", false));
    tracker t = {0};
    settle(f, b, &t);
    tracker_check(&t, 8, 0);
    fx_down(f);
    fx_free(f);
}

int main(void)
{
    /* Failures are expected here by the thousand: keep the log quiet. */
    gmq_log_set_level(-1);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(connect_makes_a_session_or_refuses_cleanly),
        cmocka_unit_test(takeover_keeps_or_replaces_the_session_whole),
        cmocka_unit_test(subscribe_grants_or_refuses_each_filter_cleanly),
        cmocka_unit_test(subscription_limit_holds_under_failures),
        cmocka_unit_test(unsubscribe_removes_from_session_and_tree_together),
        cmocka_unit_test(offline_queue_drops_and_counts_what_it_cannot_keep),
        cmocka_unit_test(reconnect_delivers_every_queued_message),
        cmocka_unit_test(inflight_window_survives_failures_without_losing_messages),
        cmocka_unit_test(retained_store_changes_whole_or_not_at_all),
        cmocka_unit_test(fanout_accounts_for_every_subscriber),
        cmocka_unit_test(session_end_frees_everything_and_publishes_the_will),
        cmocka_unit_test(session_caps_refuse_whole_under_failures),
        cmocka_unit_test(session_expiry_discards_whole_under_failures),
        cmocka_unit_test(telemetry_point_stored_at_most_once_under_failures),
        cmocka_unit_test(restore_from_store_fails_whole_and_frees_everything),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
