/*
 * router.c - from one published message to every matching session.
 */
#include "broker/access.h"
#include "broker/broker.h"
#include "broker/log.h"

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

void router_publish(broker *b, gmq_msg *m)
{
    match_ctx ctx = {.gen = ++b->match_gen, .head = NULL};
    m->id = ++b->next_msg_id;
    topictree_match(b->subs, m->topic, m->topic_len, on_match, &ctx);
    /* session_deliver never closes connections or ends sessions, so the
     * list stays valid while we walk it. */
    for (session *s = ctx.head; s; s = s->match_next) {
        if (!access_read(s, m))
            continue;
        uint8_t qos = m->qos < s->match_qos ? m->qos : s->match_qos;
        /* Forwarded to existing subscribers with RETAIN 0 [MQTT-3.3.1-9]. */
        session_deliver(s, m, qos, false);
    }
}

typedef struct retained_ctx {
    session *s;
    uint8_t granted;
} retained_ctx;

static void on_retained(gmq_msg *m, void *arg)
{
    retained_ctx *ctx = arg;
    if (!access_read(ctx->s, m))
        return;
    uint8_t qos = m->qos < ctx->granted ? m->qos : ctx->granted;
    /* Sent because of a new subscription: RETAIN 1 [MQTT-3.3.1-8]. */
    session_deliver(ctx->s, m, qos, true);
}

void router_send_retained(broker *b, session *s, const char *filter, size_t flen,
                          uint8_t granted)
{
    retained_ctx ctx = {.s = s, .granted = granted};
    retain_match(b->retained, filter, flen, on_retained, &ctx);
}
