/*
 * server.c - the broker object: listeners, accepting, and the once-per-loop
 * work (reaping closed connections, flushing output).
 */
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "broker/alloc.h"
#include "broker/broker.h"
#include "broker/handshake.h"
#include "broker/log.h"
#include "broker/access.h"
#include "broker/bridge.h"
#include "broker/login.h"
#include "broker/persist.h"

#define SCRATCH_SIZE (64 * 1024)
#define ACCEPTS_PER_CALLBACK 64

static void on_prepare(struct ev_loop *loop, ev_prepare *w, int revents);
static void on_kick(struct ev_loop *loop, ev_idle *w, int revents);

broker *broker_new(struct ev_loop *loop, const gmq_config *cfg)
{
    broker *b = gmq_calloc(1, sizeof(*b));
    if (!b)
        return NULL;
    b->loop = loop;
    b->cfg = cfg;
    b->spare_fd = -1;
    b->subs = topictree_new();
    b->retained = retain_new();
    b->scratch_len = SCRATCH_SIZE;
    b->scratch = gmq_malloc(b->scratch_len);
    if (!b->subs || !b->retained || !b->scratch) {
        broker_free(b);
        return NULL;
    }
    b->started = ev_time();
    b->spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC); /* see on_accept */
    ev_prepare_init(&b->prepare, on_prepare);
    b->prepare.data = b;
    ev_prepare_start(loop, &b->prepare);
    ev_idle_init(&b->kick, on_kick);
    return b;
}

/* ---- accepting ------------------------------------------------------------ */

static void on_accept(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop;
    (void)revents;
    listener *l = w->data;
    broker *b = l->b;
    for (int i = 0; i < ACCEPTS_PER_CALLBACK; i++) {
        struct sockaddr_storage ss;
        socklen_t sl = sizeof(ss);
        int fd = accept4(l->fd, (struct sockaddr *)&ss, &sl, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EMFILE || errno == ENFILE) {
                /* Out of descriptors: the pending connection would keep the
                 * listener readable and the loop spinning. Give back the
                 * spare descriptor, accept the connection and close it at
                 * once, and take the spare again. */
                int err = errno;
                ev_tstamp now = ev_now(b->loop);
                if (now - b->last_emfile_log >= 10) {
                    LOG_WARN("accept: %s; refusing connections until descriptors are free",
                             strerror(err));
                    b->last_emfile_log = now;
                }
                b->stats.connections_refused++;
                if (b->spare_fd >= 0) {
                    close(b->spare_fd);
                    int victim = accept4(l->fd, NULL, NULL, SOCK_CLOEXEC);
                    if (victim >= 0)
                        close(victim);
                    b->spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
                    continue;
                }
            } else if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR &&
                       errno != ECONNABORTED) {
                LOG_WARN("accept: %s", strerror(errno));
            }
            return;
        }
        if (b->stopping ||
            (b->cfg->max_connections && b->stats.conns_open >= b->cfg->max_connections)) {
            b->stats.connections_refused++;
            LOG_DEBUG("connection refused: max_connections (%u) reached",
                      b->cfg->max_connections);
            close(fd);
            continue;
        }
        if (!conn_new(b, l, fd, (struct sockaddr *)&ss, sl)) {
            LOG_WARN("no memory for a new connection");
            close(fd);
        }
    }
}

static int open_listener(listener *l)
{
    const gmq_listener_cfg *lc = l->cfg;
    char port[8];
    snprintf(port, sizeof(port), "%u", lc->port);
    struct addrinfo hints = {.ai_family = AF_UNSPEC,
                             .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICSERV | AI_NUMERICHOST};
    struct addrinfo *res = NULL;
    int rc = getaddrinfo(lc->address, port, &hints, &res);
    if (rc) {
        LOG_ERROR("listener %s:%u: %s", lc->address ? lc->address : "*", lc->port,
                  gai_strerror(rc));
        return -1;
    }
    int fd = -1;
    int err = 0;
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0) {
            err = errno;
            continue;
        }
        int one = 1;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
        if (ai->ai_family == AF_INET6 && !lc->address) {
            int zero = 0; /* one socket for IPv4 and IPv6 */
            setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof(zero));
        }
        if (bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 && listen(fd, 4096) == 0)
            break;
        err = errno;
        close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    if (fd < 0) {
        LOG_ERROR("listener %s:%u: %s", lc->address ? lc->address : "*", lc->port,
                  strerror(err));
        return -1;
    }
    l->fd = fd;
    ev_io_init(&l->io, on_accept, fd, EV_READ);
    l->io.data = l;
    ev_io_start(l->b->loop, &l->io);
    LOG_NOTICE("listening on %s port %u (%s)", lc->address ? lc->address : "all addresses",
               lc->port, l->tls ? "TLS" : "plain MQTT");
    return 0;
}

int broker_load_tls(broker *b, const gmq_listener_cfg *lc, tls_tickets *tickets,
                    tls_server **out, char *err, size_t errlen)
{
    const gmq_config *cfg = b->cfg;
    tls_company_ca cas[lc->ncompany_cas ? lc->ncompany_cas : 1];
    for (size_t i = 0; i < lc->ncompany_cas; i++)
        cas[i] = (tls_company_ca){lc->company_cas[i].company, lc->company_cas[i].cafile};
    tls_settings ts = {
        .certfile = lc->certfile,
        .keyfile = lc->keyfile,
        .cafile = lc->cafile,
        .crlfile = lc->crlfile,
        .require_certificate = lc->require_certificate,
        .company_cas = cas,
        .ncompany_cas = lc->ncompany_cas,
        .company_from = cfg->company_from == GMQ_COMPANY_FROM_OU        ? TLS_COMPANY_FROM_OU
                        : cfg->company_from == GMQ_COMPANY_FROM_SAN_URI ? TLS_COMPANY_FROM_SAN_URI
                                                                        : TLS_COMPANY_FROM_O,
        .san_uri_prefix = cfg->company_uri_prefix,
    };
    return tls_server_new(&ts, b->rng, tickets, out, err, errlen);
}

int broker_prepare(broker *b)
{
    const gmq_config *cfg = b->cfg;
    b->listeners = gmq_calloc(cfg->nlisteners, sizeof(*b->listeners));
    if (!b->listeners)
        return -1;
    for (size_t i = 0; i < cfg->nlisteners; i++) {
        listener *l = &b->listeners[i];
        l->b = b;
        l->cfg = &cfg->listeners[i];
        l->fd = -1;
        b->nlisteners++;
        if (!l->cfg->certfile)
            continue;
        if (!b->rng && !(b->rng = tls_rng_new())) {
            LOG_ERROR("cannot seed the random generator");
            return -1;
        }
        if (!(l->tickets = tls_tickets_new(b->rng))) {
            LOG_ERROR("cannot create session ticket keys");
            return -1;
        }
        char err[512];
        if (broker_load_tls(b, l->cfg, l->tickets, &l->tls, err, sizeof(err))) {
            LOG_ERROR("listener %u (line %d): %s", l->cfg->port, l->cfg->line, err);
            return -1;
        }
    }
    if (b->rng && cfg->tls_handshake_threads != 0) {
        unsigned n = cfg->tls_handshake_threads < 0 ? hs_default_threads()
                                                    : (unsigned)cfg->tls_handshake_threads;
        if (!(b->handshakes = hs_pool_new(b, n, cfg->tls_handshake_timeout)))
            return -1;
    }
    if (login_init(b))
        return -1;
    return access_init(b);
}

int broker_listen(broker *b)
{
    for (size_t i = 0; i < b->nlisteners; i++)
        if (open_listener(&b->listeners[i]))
            return -1;
    return 0;
}

/* ---- once per loop iteration ------------------------------------------- */

/* Runs once after on_prepare gave up on pending events: an active idle
 * watcher makes the next poll return at once. */
static void on_kick(struct ev_loop *loop, ev_idle *w, int revents)
{
    (void)revents;
    ev_idle_stop(loop, w);
}

/* Write what callbacks queued, then reap closed connections. The flush list
 * is emptied before any reap, so it never holds a freed connection:
 * connections closed while others are reaped (a will delivered to a client
 * that then fails) wait on the closing list for the next pass, whose flush
 * comes first. Reaping can publish wills (more output) and flushing can
 * close connections, so repeat until both lists are empty. */
static void flush_and_reap(broker *b)
{
    while (b->closing || b->flush) {
        while (b->flush) {
            conn *c = b->flush;
            b->flush = c->flush_next;
            c->flush_pending = false;
            if (c->state != CONN_CLOSING)
                conn_flush(c);
        }
        conn *closing = b->closing;
        b->closing = NULL;
        while (closing) {
            conn *c = closing;
            closing = c->closing_next;
            conn_reap(c);
        }
    }
}

static void on_prepare(struct ev_loop *loop, ev_prepare *w, int revents)
{
    (void)revents;
    broker *b = w->data;
    /* A flush that drained a paused client's output resumes its input with
     * a fed read event. Run such events here, a few rounds: run only after
     * this hook, their answers (a PINGRESP) would wait in the buffer while
     * the loop blocks in its poll until some other event came. Past the
     * rounds, the kick makes that poll return at once instead, so one busy
     * client cannot keep the loop from polling, timers and the hand-backs of
     * other threads. */
    for (int round = 0;; round++) {
        flush_and_reap(b);
        if (!ev_pending_count(loop))
            break;
        if (round == 4) {
            ev_idle_start(loop, &b->kick);
            break;
        }
        ev_invoke_pending(loop);
    }
}

/* Stop accepting and close every connection; wills are not published when
 * the broker itself goes down. */
void broker_shutdown(broker *b)
{
    b->stopping = true;
    for (size_t i = 0; i < b->nlisteners; i++) {
        if (b->listeners[i].fd >= 0) {
            ev_io_stop(b->loop, &b->listeners[i].io);
            close(b->listeners[i].fd);
            b->listeners[i].fd = -1;
        }
    }
    ev_timer_stop(b->loop, &b->sys_timer);
    ev_timer_stop(b->loop, &b->expiry_timer);
    /* Connections still handshaking come back cancelled (and are closed). */
    hs_pool_free(b->handshakes);
    b->handshakes = NULL;
    for (conn *c = b->conns; c; c = c->next) {
        if (c->state != CONN_CLOSING && c->wlen > c->woff)
            conn_flush(c);
        conn_close(c, "broker shutting down");
    }
    on_prepare(b->loop, &b->prepare, 0);
}

void broker_free(broker *b)
{
    if (!b)
        return;
    if (b->conns || b->handshakes)
        broker_shutdown(b);
    ev_prepare_stop(b->loop, &b->prepare);
    ev_idle_stop(b->loop, &b->kick);
    /* Remaining persistent sessions. session_destroy edits the map, so
     * detach the slot array first. */
    strmap_slot *slots = b->sessions.slots;
    size_t cap = b->sessions.cap;
    memset(&b->sessions, 0, sizeof(b->sessions));
    for (size_t i = 0; i < cap; i++)
        if (slots[i].key) {
            session *s = slots[i].value;
            s->c = NULL;
            session_destroy(s);
        }
    gmq_free(slots);
    strmap_free(&b->company_sessions); /* emptied by session_destroy */
    /* The store's last commits wake the drain: close the store first. */
    persist_close(b);
    bridge_stop_outbox(b);
    bridge_free(b);
    login_free(b);
    access_free(b);
    for (size_t i = 0; i < b->nlisteners; i++) {
        if (b->listeners[i].fd >= 0)
            close(b->listeners[i].fd);
        tls_server_unref(b->listeners[i].tls);
        tls_tickets_free(b->listeners[i].tickets);
    }
    gmq_free(b->listeners);
    tls_rng_free(b->rng);
    if (b->spare_fd >= 0)
        close(b->spare_fd);
    if (b->subs)
        topictree_free(b->subs);
    if (b->retained)
        retain_free(b->retained);
    gmq_free(b->scratch);
    conn_wpool_free(b);
    gmq_free(b->enc.buf);
    gmq_free(b);
}
