/*
 * conn.c - one client connection: socket I/O through a transport, framing,
 * output buffering, timers, and the close/reap life cycle.
 *
 * Reading: bytes are read into the loop's shared scratch buffer and parsed in
 * place; only the tail of an incomplete packet is copied into the
 * connection's own rbuf, so an idle connection holds no read buffer.
 * Writing: packets are appended to wbuf and written once per loop iteration
 * by the broker's prepare hook (many packets per system call), connections
 * in the order their output was first queued; drained buffers are pooled.
 * Closing: conn_close() only marks the connection; conn_reap() releases it
 * from the prepare hook, outside every callback that might still use it.
 */
#include <arpa/inet.h>
#include <assert.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "broker/aclcache.h"
#include "broker/alloc.h"
#include "broker/broker.h"
#include "broker/handle.h"
#include "broker/log.h"
#include "broker/bridge.h"
#include "broker/login.h"
#include "broker/persist.h"
#include "broker/handshake.h"
#include "broker/tls_transport.h"

/* A client that sends requests but never reads the answers (PINGRESP,
 * PUBACK, SUBACK...) would grow its write buffer without bound, one answer
 * per request: its input stops being read while this much output waits, and
 * resumes once the client has read it down to OUTPUT_RESUME_BYTES. */
#define OUTPUT_PAUSE_BYTES (1u << 20)
#define OUTPUT_RESUME_BYTES (256u << 10)

/* ---- plain TCP transport ------------------------------------------------ */

static ptrdiff_t tcp_recv(conn *c, uint8_t *buf, size_t len)
{
    ssize_t n = recv(c->fd, buf, len, 0);
    if (n >= 0)
        return n;
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
        return GMQ_IO_WANT_READ;
    return GMQ_IO_ERROR;
}

static ptrdiff_t tcp_send(conn *c, const uint8_t *buf, size_t len)
{
    ssize_t n = send(c->fd, buf, len, MSG_NOSIGNAL);
    if (n >= 0)
        return n;
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
        return GMQ_IO_WANT_WRITE;
    return GMQ_IO_ERROR;
}

static void tcp_free(conn *c)
{
    (void)c;
}

const transport_ops gmq_tcp_transport = {
    .name = "tcp",
    .recv = tcp_recv,
    .send = tcp_send,
    .pending = NULL,
    .free = tcp_free,
};

/* ---- life cycle ---------------------------------------------------------- */

static void on_read(struct ev_loop *loop, ev_io *w, int revents);
static void on_write(struct ev_loop *loop, ev_io *w, int revents);
static void on_timer(struct ev_loop *loop, ev_timer *w, int revents);
static void wbuf_put(broker *b, uint8_t *p, size_t cap);

static void format_peer(const struct sockaddr *sa, char *out, size_t len)
{
    char host[INET6_ADDRSTRLEN] = "?";
    unsigned port = 0;
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
        inet_ntop(AF_INET, &in->sin_addr, host, sizeof(host));
        port = ntohs(in->sin_port);
        snprintf(out, len, "%s:%u", host, port);
    } else if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
        inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof(host));
        port = ntohs(in6->sin6_port);
        snprintf(out, len, "[%s]:%u", host, port);
    } else {
        snprintf(out, len, "unknown");
    }
}

conn *conn_new(broker *b, listener *l, int fd, const struct sockaddr *sa, socklen_t salen)
{
    (void)salen;
    conn *c = gmq_calloc(1, sizeof(*c));
    if (!c)
        return NULL;
    c->b = b;
    c->l = l;
    c->fd = fd;
    c->state = CONN_NEW;
    c->tp = &gmq_tcp_transport;
    c->send_will = true;
    format_peer(sa, c->peer, sizeof(c->peer));

    if (l && l->tls && tls_transport_attach(c, l->tls)) {
        gmq_free(c);
        return NULL;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));

    ev_io_init(&c->rio, on_read, fd, EV_READ);
    ev_io_init(&c->wio, on_write, fd, EV_WRITE);
    c->rio.data = c->wio.data = c->timer.data = c;
    /* Until CONNECT arrives the timer bounds the TLS handshake, then the
     * wait for CONNECT (conn_tls_established restarts it). A handshake
     * thread keeps its own time. */
    ev_timer_init(&c->timer, on_timer,
                  c->tp_ctx ? b->cfg->tls_handshake_timeout : b->cfg->connect_timeout, 0);
    c->last_rx = ev_now(b->loop);
    if (!c->tp_ctx || !b->handshakes || hs_pool_submit(b->handshakes, c)) {
        ev_io_start(b->loop, &c->rio);
        ev_timer_start(b->loop, &c->timer);
    }

    c->next = b->conns;
    if (b->conns)
        b->conns->prev = c;
    b->conns = c;
    b->stats.conns_open++;
    return c;
}

void conn_close(conn *c, const char *reason)
{
    if (c->state == CONN_CLOSING)
        return;
    if (c->hs) {
        /* A handshake thread owns the TLS state: close when it is back. */
        if (!c->hs_close)
            c->hs_close = reason;
        return;
    }
    broker *b = c->b;
    if (c->s)
        LOG_INFO("client %s (%s) disconnected: %s", c->s->client_id, c->peer, reason);
    else
        LOG_INFO("connection from %s closed: %s", c->peer, reason);
    c->state = CONN_CLOSING;
    ev_io_stop(b->loop, &c->rio);
    ev_io_stop(b->loop, &c->wio);
    ev_timer_stop(b->loop, &c->timer);
    c->closing_next = b->closing;
    b->closing = c;
}

/* Called from the prepare hook only. Detaches the session (ending it when it
 * was a clean one), publishes the will of an abnormal close, frees c. */
void conn_reap(conn *c)
{
    broker *b = c->b;
    assert(c->state == CONN_CLOSING);
    if (c->close_after_flush && c->wlen > c->woff)
        c->tp->send(c, c->wbuf + c->woff, c->wlen - c->woff); /* best effort */

    login_cancel(c);
    persist_forget_conn(c);
    if (c->counted && c->identity)
        bridge_device_offline(c);
    gmq_free(c->identity);
    session *s = c->s;
    if (s) {
        s->c = NULL;
        c->s = NULL;
        if (s->clean)
            session_destroy(s);
        else
            session_went_offline(s); /* session_expiry counts from now */
    }
    if (c->counted)
        b->stats.clients_connected--;
    if (c->will) {
        /* [MQTT-3.1.2-8]: published when the connection ends without DISCONNECT. */
        if (c->send_will && !b->stopping)
            router_publish(b, c->will);
        gmq_msg_unref(c->will);
    }
    c->tp->free(c);
    close(c->fd);
    gmq_free(c->rbuf);
    wbuf_put(b, c->wbuf, c->wcap);
    aclcache_free(c->pubcache);
    if (c->prev)
        c->prev->next = c->next;
    else
        b->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    b->stats.conns_open--;
    gmq_free(c);
}

/* Back from a handshake thread (handshake.h). */
void conn_handshake_done(conn *c, enum hs_result r)
{
    broker *b = c->b;
    if (c->hs_close) {
        conn_close(c, c->hs_close);
        return;
    }
    switch (r) {
    case HS_DONE:
        break;
    case HS_FAILED:
        b->stats.tls_handshakes_failed++;
        conn_close(c, "TLS handshake failed");
        return;
    case HS_TIMEOUT:
        conn_close(c, "TLS handshake timeout");
        return;
    case HS_CANCELLED:
        conn_close(c, "broker shutting down");
        return;
    }
    if (tls_transport_established(c)) {
        conn_close(c, "TLS connection refused");
        return;
    }
    /* CONNECT may already sit decrypted in mbedtls, where the socket does
     * not signal it: read now. */
    c->last_rx = ev_now(b->loop);
    ev_io_start(b->loop, &c->rio);
    ev_feed_event(b->loop, &c->rio, EV_READ);
}

/* ---- output ------------------------------------------------------------- */

size_t conn_pending_bytes(const conn *c)
{
    return c->wlen - c->woff;
}

/*
 * Write buffers. A connection holds one only while output waits, so an idle
 * connection holds none. But in a fan-out every subscriber needs one in the
 * same loop iteration and drains it in the prepare hook: a malloc, a few
 * doubling reallocs and a free per subscriber and iteration, and past
 * glibc's trim threshold the freed heap top went back to the kernel only to
 * be faulted in again the next iteration (it cost more CPU than the rest of
 * a fan-out to 100 subscribers). So drained buffers of the pooled sizes
 * (WBUF_MIN << class) wait in a per-broker pool, WPOOL_BYTES in all, and a
 * connection's next buffer starts at the size its last one needed.
 */
#define WBUF_MIN 1024u
#define WPOOL_BYTES (8u << 20)

/* Smallest class of at least n bytes; GMQ_WPOOL_CLASSES when none is. */
static unsigned wbuf_class(size_t n)
{
    unsigned k = 0;
    while (k < GMQ_WPOOL_CLASSES && ((size_t)WBUF_MIN << k) < n)
        k++;
    return k;
}

static uint8_t *wbuf_get(broker *b, unsigned k)
{
    uint8_t *p = b->wpool[k];
    if (!p)
        return gmq_malloc((size_t)WBUF_MIN << k);
    memcpy(&b->wpool[k], p, sizeof(void *)); /* the next spare */
    b->wpool_bytes -= (size_t)WBUF_MIN << k;
    return p;
}

static void wbuf_put(broker *b, uint8_t *p, size_t cap)
{
    unsigned k = wbuf_class(cap);
    if (p && k < GMQ_WPOOL_CLASSES && cap == (size_t)WBUF_MIN << k && !b->stopping &&
        b->wpool_bytes + cap <= WPOOL_BYTES) {
        memcpy(p, &b->wpool[k], sizeof(void *));
        b->wpool[k] = p;
        b->wpool_bytes += cap;
        return;
    }
    gmq_free(p);
}

void conn_wpool_free(broker *b)
{
    for (unsigned k = 0; k < GMQ_WPOOL_CLASSES; k++)
        while (b->wpool[k])
            gmq_free(wbuf_get(b, k));
}

uint8_t *conn_reserve(conn *c, size_t n)
{
    if (c->wcap - c->wlen < n) {
        if (c->woff) {
            memmove(c->wbuf, c->wbuf + c->woff, c->wlen - c->woff);
            c->wlen -= c->woff;
            c->woff = 0;
        }
        if (c->wcap - c->wlen < n) {
            size_t ncap = c->wcap ? c->wcap : (size_t)WBUF_MIN << c->wclass;
            while (ncap - c->wlen < n)
                ncap *= 2;
            unsigned k = wbuf_class(ncap);
            uint8_t *nb;
            if (k < GMQ_WPOOL_CLASSES) {
                if (!(nb = wbuf_get(c->b, k)))
                    return NULL;
                if (c->wlen)
                    memcpy(nb, c->wbuf, c->wlen);
                if (c->wbuf)
                    wbuf_put(c->b, c->wbuf, c->wcap);
            } else if (!(nb = gmq_realloc(c->wbuf, ncap))) {
                return NULL;
            }
            c->wbuf = nb;
            c->wcap = ncap;
        }
    }
    return c->wbuf + c->wlen;
}

void conn_commit(conn *c, size_t n)
{
    assert(c->wcap - c->wlen >= n);
    c->wlen += n;
    if (!c->flush_pending && c->state != CONN_CLOSING) {
        /* Flushed in the order output was first queued: a PUBLISH is routed
         * before its PUBACK is queued, so the subscriber's copy leaves
         * first and does not wait behind the publisher's acknowledgement. */
        broker *b = c->b;
        c->flush_pending = true;
        c->flush_next = NULL;
        if (b->flush)
            b->flush_last->flush_next = c;
        else
            b->flush = c;
        b->flush_last = c;
    }
}

/* Input paused for a full write buffer goes on once the client has read
 * enough of it. */
static void resume_if_drained(conn *c)
{
    if (c->input_paused && c->state != CONN_CLOSING && !c->b->stopping &&
        conn_pending_bytes(c) <= OUTPUT_RESUME_BYTES) {
        c->input_paused = false;
        if (!c->store_paused) /* else the store's release resumes it */
            conn_resume_input(c);
    }
}

int conn_send_packet_id(conn *c, enum mqtt_type type, uint16_t id)
{
    uint8_t *buf = conn_reserve(c, 4);
    if (!buf) {
        conn_close(c, "no memory for output");
        return -1;
    }
    mqtt_encode_packet_id(buf, 4, type, id);
    conn_commit(c, 4);
    return 0;
}

/* Write what is buffered; wait for writability when the socket is full. */
void conn_flush(conn *c)
{
    broker *b = c->b;
    while (c->wlen > c->woff && c->state != CONN_CLOSING) {
        ptrdiff_t n = c->tp->send(c, c->wbuf + c->woff, c->wlen - c->woff);
        if (n > 0) {
            c->woff += (size_t)n;
            b->stats.bytes_sent += (uint64_t)n;
        } else if (n == GMQ_IO_WANT_WRITE) {
            ev_io_start(b->loop, &c->wio);
            resume_if_drained(c);
            return;
        } else if (n == GMQ_IO_WANT_READ) {
            return; /* a TLS transport waits for the peer; rio is running */
        } else {
            conn_close(c, "write error");
            return;
        }
    }
    if (ev_is_active(&c->wio)) /* rarely: most writes take everything at once */
        ev_io_stop(b->loop, &c->wio);
    /* Nothing left: give the buffer back so idle connections stay small,
     * and remember how much this round needed. */
    unsigned k = wbuf_class(c->wlen);
    c->wclass = (uint8_t)(k < GMQ_WPOOL_CLASSES ? k : GMQ_WPOOL_CLASSES - 1);
    wbuf_put(b, c->wbuf, c->wcap);
    c->wbuf = NULL;
    c->woff = c->wlen = c->wcap = 0;
    if (c->close_after_flush)
        conn_close(c, "refused");
    resume_if_drained(c);
}

static void on_write(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)revents;
    conn *c = w->data;
    if (c->read_wants_write) {
        /* The TLS handshake waited for room to send: go on reading. */
        c->read_wants_write = false;
        if (c->wlen == c->woff)
            ev_io_stop(loop, w);
        on_read(loop, &c->rio, EV_READ);
        return;
    }
    conn_flush(c);
}

const char *conn_address(const conn *c, char *buf, size_t len)
{
    snprintf(buf, len, "%s", c->peer);
    char *colon = strrchr(buf, ':');
    if (colon)
        *colon = '\0';
    if (buf[0] == '[') {
        size_t n = strlen(buf);
        if (n >= 2 && buf[n - 1] == ']') {
            memmove(buf, buf + 1, n - 2);
            buf[n - 2] = '\0';
        }
    }
    return buf;
}

/* ---- input -------------------------------------------------------------- */

static size_t packet_limit(const conn *c)
{
    return c->state == CONN_NEW || c->state == CONN_AUTH ? c->b->cfg->max_connect_size
                                                          : c->b->cfg->max_packet_size;
}

/* Handle every whole packet in buf[0..len); returns bytes consumed, or -1
 * when the connection was closed. */
static ptrdiff_t process(conn *c, const uint8_t *buf, size_t len)
{
    size_t off = 0;
    /* While a password is checked nothing after CONNECT is acted on. */
    while (off < len && c->state != CONN_CLOSING && c->state != CONN_AUTH &&
           !c->close_after_flush && !c->store_paused &&
           conn_pending_bytes(c) < OUTPUT_PAUSE_BYTES) {
        mqtt_frame f;
        ptrdiff_t r = mqtt_frame_split(buf + off, len - off, packet_limit(c), &f);
        if (r == 0)
            break;
        if (r < 0) {
            char why[96];
            snprintf(why, sizeof(why), "malformed packet: %s", mqtt_strerror((int)r));
            conn_close(c, why);
            return -1;
        }
        uint64_t mark = persist_mark(c->b);
        handle_packet(c, &f);
        off += (size_t)r;
        persist_throttle(c, mark); /* the store's backpressure: may pause c */
    }
    if (c->state == CONN_ACTIVE && conn_pending_bytes(c) >= OUTPUT_PAUSE_BYTES &&
        !c->input_paused) {
        c->input_paused = true; /* conn_flush resumes */
        ev_io_stop(c->b->loop, &c->rio);
    }
    return c->state == CONN_CLOSING ? -1 : (ptrdiff_t)off;
}

/* Size of the packet starting at buf when its fixed header is complete,
 * else 0. The header was already checked by mqtt_frame_split. */
static size_t peek_packet_size(const uint8_t *buf, size_t len)
{
    size_t value = 0;
    for (size_t i = 1; i < len && i <= 4; i++) {
        value |= (size_t)(buf[i] & 0x7f) << (7 * (i - 1));
        if (!(buf[i] & 0x80))
            return 1 + i + value;
    }
    return 0;
}

/* Keep the unparsed tail buf[0..len) in c->rbuf, sized for the whole packet
 * when its header tells (bounded by the packet limit already checked). */
static int keep_tail(conn *c, const uint8_t *buf, size_t len)
{
    /* Memory follows the bytes actually received: a peer announcing a large
     * packet gets at most 64 KiB until it sends more. */
    size_t want = peek_packet_size(buf, len);
    if (want > 65536)
        want = 65536;
    if (want < len)
        want = len;
    if (c->rcap < want) {
        size_t ncap = want < 1024 ? 1024 : want;
        uint8_t *nb = gmq_malloc(ncap);
        if (!nb)
            return -1;
        gmq_free(c->rbuf);
        c->rbuf = nb;
        c->rcap = ncap;
    }
    memmove(c->rbuf, buf, len);
    c->rlen = len;
    return 0;
}

static void on_read(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)revents;
    conn *c = w->data;
    broker *b = c->b;
    if (c->input_paused || c->store_paused)
        return; /* a fed event or the TLS write watcher: a resume reads on */
    /* Bounded rounds per callback keep one busy client from starving others. */
    for (int round = 0; round < 8 && c->state != CONN_CLOSING; round++) {
        uint8_t *dst;
        size_t room;
        if (c->rlen) {
            size_t limit = packet_limit(c);
            if (c->rlen == c->rcap) {
                size_t ncap = c->rcap * 2 < limit ? c->rcap * 2 : limit;
                uint8_t *nb = ncap > c->rcap ? gmq_realloc(c->rbuf, ncap) : NULL;
                if (!nb) {
                    conn_close(c, "no memory for input");
                    return;
                }
                c->rbuf = nb;
                c->rcap = ncap;
            }
            dst = c->rbuf + c->rlen;
            room = c->rcap - c->rlen;
        } else {
            dst = b->scratch;
            room = b->scratch_len;
        }
        ptrdiff_t n = c->tp->recv(c, dst, room);
        if (n == 0) {
            conn_close(c, "connection closed by peer");
            return;
        }
        if (n == GMQ_IO_WANT_READ)
            return;
        if (n == GMQ_IO_WANT_WRITE) {
            c->read_wants_write = true;
            ev_io_start(loop, &c->wio);
            return;
        }
        if (n < 0) {
            bool handshake = c->tp_ctx && !c->tls_done;
            if (handshake)
                b->stats.tls_handshakes_failed++;
            conn_close(c, handshake ? "TLS handshake failed" : "read error");
            return;
        }
        b->stats.bytes_received += (uint64_t)n;
        c->last_rx = ev_now(loop);

        ptrdiff_t used;
        if (c->rlen) {
            c->rlen += (size_t)n;
            if ((used = process(c, c->rbuf, c->rlen)) < 0)
                return;
            c->rlen -= (size_t)used;
            if (c->rlen)
                memmove(c->rbuf, c->rbuf + used, c->rlen);
            else {
                gmq_free(c->rbuf);
                c->rbuf = NULL;
                c->rcap = 0;
            }
        } else {
            if ((used = process(c, dst, (size_t)n)) < 0)
                return;
            if ((size_t)used < (size_t)n && keep_tail(c, dst + used, (size_t)n - (size_t)used)) {
                conn_close(c, "no memory for input");
                return;
            }
        }
        if (c->input_paused || c->store_paused)
            return; /* what was read and not handled waits in rbuf */
        bool more = c->tp->pending && c->tp->pending(c);
        if ((size_t)n < room && !more)
            return; /* drained the socket */
    }
    /* Out of rounds: data already decrypted would not wake the watcher. */
    if (c->state != CONN_CLOSING && !c->input_paused && !c->store_paused && c->tp->pending &&
        c->tp->pending(c))
        ev_feed_event(loop, &c->rio, EV_READ);
}

/* Resume reading after a password check or a pause: act on what arrived
 * meanwhile. */
void conn_resume_input(conn *c)
{
    if (c->state == CONN_CLOSING)
        return;
    if (c->rlen) {
        ptrdiff_t used = process(c, c->rbuf, c->rlen);
        if (used < 0)
            return;
        c->rlen -= (size_t)used;
        if (c->rlen) {
            memmove(c->rbuf, c->rbuf + used, c->rlen);
        } else {
            gmq_free(c->rbuf); /* as on_read does: idle connections hold none */
            c->rbuf = NULL;
            c->rcap = 0;
        }
    }
    /* What was buffered may have paused input again: then the watcher stays
     * stopped (a running one would spin on a readable socket). */
    if (!c->close_after_flush && c->state != CONN_CLOSING && !c->input_paused &&
        !c->store_paused) {
        ev_io_start(c->b->loop, &c->rio);
        ev_feed_event(c->b->loop, &c->rio, EV_READ);
    }
}

/* ---- timers ------------------------------------------------------------- */

void conn_start_keepalive(conn *c, uint16_t keepalive)
{
    broker *b = c->b;
    ev_timer_stop(b->loop, &c->timer);
    c->keepalive = keepalive;
    if (keepalive == 0)
        return; /* [MQTT-3.1.2-24] does not apply: keep alive is off */
    ev_timer_set(&c->timer, keepalive * 1.5, 0);
    ev_timer_start(b->loop, &c->timer);
}

static void on_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)revents;
    conn *c = w->data;
    if (c->state == CONN_NEW || c->state == CONN_AUTH) {
        conn_close(c, c->tp_ctx && !c->tls_done ? "TLS handshake timeout"
                                                : "no accepted CONNECT within connect_timeout");
        return;
    }
    /* One and a half keep alive periods without a packet [MQTT-3.1.2-24]. */
    ev_tstamp timeout = c->keepalive * 1.5;
    ev_tstamp left = c->last_rx + timeout - ev_now(loop);
    if (left <= 0 && (c->input_paused || c->store_paused)) {
        /* We stopped reading, not the client: its PINGREQs may be waiting. */
        LOG_DEBUG("client %s: keep alive ran out while the broker was not reading it; waiting",
                  c->s ? c->s->client_id : c->peer);
        left = timeout;
    } else if (left <= 0) {
        conn_close(c, "keep alive timeout");
        return;
    }
    ev_timer_set(w, left, 0);
    ev_timer_start(loop, w);
}

/* The TLS handshake is done: from now on the timer waits for CONNECT. */
void conn_restart_connect_timer(conn *c)
{
    c->tls_done = true;
    ev_timer_stop(c->b->loop, &c->timer);
    ev_timer_set(&c->timer, c->b->cfg->connect_timeout, 0);
    ev_timer_start(c->b->loop, &c->timer);
}
