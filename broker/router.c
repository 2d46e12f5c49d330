/*
 * router.c - from one published message to every matching session.
 */
#include "broker/access.h"
#include "broker/broker.h"
#include "broker/log.h"
#include "broker/persist.h"

#include <string.h>

#include "broker/alloc.h"

/* The encoding buffer of fan-out (broker.enc) is kept up to this size. */
#define ENC_KEEP_BYTES (64u << 10)

typedef struct match_ctx {
    uint64_t gen;
    session *head;
} match_ctx;

/* Fold overlapping subscriptions of one session into one delivery at the
 * highest granted QoS [MQTT-3.3.5-1]. */
static void on_match(void *subscriber, uint8_t qos, void *arg)
{
    match_ctx *ctx = arg;
    session *s = subscriber;
    if (s->match_gen != ctx->gen) {
        s->match_gen = ctx->gen;
        s->match_qos = qos;
        s->match_next = ctx->head;
        ctx->head = s;
    } else if (qos > s->match_qos) {
        s->match_qos = qos;
    }
}

/* Is m inside the namespace of s, as a topic its client may see?
 * A company's filter "acme/#" also matches "acme" itself, and "acme/+"
 * matches "acme/" (an empty level): neither is a topic of the company's
 * client. And the '$' rule holds inside a namespace as the client sees it:
 * a client-relative topic starting with '$' is matched only by filters
 * whose first level is literal [MQTT-4.7.2-1]; *qos is lowered to what
 * those filters granted. */
static bool visible_to(const session *s, const gmq_msg *m, uint8_t *qos)
{
    size_t p = s->topic_prefix_len;
    if (!p)
        return true;
    if (m->topic_len <= p || memcmp(m->topic, s->key, p) != 0)
        return false;
    const char *rel = m->topic + p;
    if (rel[0] != '$')
        return true;
    bool any = false;
    uint8_t best = 0;
    for (size_t i = 0; i < s->nsubs; i++) {
        const char *f = s->subs[i].filter + p;
        if (f[0] == '+' || f[0] == '#')
            continue;
        if (mqtt_topic_match((const uint8_t *)f, strlen(f), (const uint8_t *)rel,
                             m->topic_len - p)) {
            any = true;
            if (s->subs[i].qos > best)
                best = s->subs[i].qos;
        }
    }
    if (any && best < *qos)
        *qos = best;
    return any;
}

int router_publish(broker *b, gmq_msg *m)
{
    /* A retained message replaces (or, empty, clears) the topic's retained
     * one, durably, before it is routed [MQTT-3.3.1-5, 3.3.1-10,11]. One
     * that cannot be retained is not routed either: its publisher, not
     * acknowledged, sends it again, and it is then retained and routed
     * once (a QoS 2 subscriber must not get it twice). */
    if (m->retain) {
        if (retain_set(b->retained, m)) {
            b->stats.msgs_dropped++;
            LOG_WARN("no memory to retain a message on %s; not published", m->topic);
            return -1;
        }
        persist_retained(b, m);
    }
    match_ctx ctx = {.gen = ++b->match_gen, .head = NULL};
    m->id = ++b->next_msg_id;
    topictree_match(b->subs, m->topic, m->topic_len, on_match, &ctx);
    /* Many subscribers: encode the PUBLISH once and copy it (write_publish). */
    if (ctx.head && ctx.head->match_next)
        b->enc.m = m;
    /* session_deliver may mark a connection closing (no memory) but never
     * frees one or ends a session, so the list stays valid while we walk it. */
    for (session *s = ctx.head; s; s = s->match_next) {
        uint8_t granted = s->match_qos;
        if (!visible_to(s, m, &granted) || !access_read(s, m))
            continue;
        uint8_t qos = m->qos < granted ? m->qos : granted;
        /* Forwarded to existing subscribers with RETAIN 0 [MQTT-3.3.1-9]. */
        session_deliver(s, m, qos, false);
    }
    b->enc.m = NULL;
    b->enc.valid = false;
    if (b->enc.cap > ENC_KEEP_BYTES) { /* an unusually large message */
        gmq_free(b->enc.buf);
        b->enc.buf = NULL;
        b->enc.cap = 0;
    }
    return 0;
}

typedef struct retained_ctx {
    session *s;
    uint8_t granted;
} retained_ctx;

static void on_retained(gmq_msg *m, void *arg)
{
    retained_ctx *ctx = arg;
    uint8_t granted = ctx->granted;
    if (!visible_to(ctx->s, m, &granted) || !access_read(ctx->s, m))
        return;
    uint8_t qos = m->qos < granted ? m->qos : granted;
    /* Sent because of a new subscription: RETAIN 1 [MQTT-3.3.1-8]. */
    session_deliver(ctx->s, m, qos, true);
}

void router_send_retained(broker *b, session *s, const char *filter, size_t flen,
                          uint8_t granted)
{
    retained_ctx ctx = {.s = s, .granted = granted};
    retain_match(b->retained, filter, flen, on_retained, &ctx);
}
