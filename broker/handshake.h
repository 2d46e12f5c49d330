/*
 * handshake.h - full TLS handshakes on threads of their own.
 *
 * A full handshake costs the broker milliseconds of elliptic-curve
 * arithmetic (mbedtls), a thousand times what routing a message costs. Run
 * on the event loop, a reconnect storm of thousands of gateways would hold up
 * every message of every connected client and use one core only. So a TLS
 * connection is handed, right after accept, to one of a few handshake
 * threads, each with its own libev loop, which drives the handshake over the
 * connection's socket and hands the connection back through an ev_async when
 * it is done, failed or timed out.
 *
 * Ownership: while a connection is away (c->hs != NULL) the handshake
 * thread owns its TLS state and socket; the loop touches nothing of it but
 * c->hs and leaves every other field alone until the connection is back.
 * Everything else - certificate identity, revocation, timers, MQTT - stays
 * on the loop thread.
 */
#ifndef GATEMQ_HANDSHAKE_H
#define GATEMQ_HANDSHAKE_H

#include "broker/broker.h"

typedef struct hs_pool hs_pool;

/* How a handshake away from the loop ended. */
enum hs_result { HS_DONE, HS_FAILED, HS_TIMEOUT, HS_CANCELLED };

/* Start `threads` handshake threads for b (timeout in seconds per
 * handshake). NULL on failure, with nothing left running. */
hs_pool *hs_pool_new(broker *b, unsigned threads, double timeout);

/* Hand the TLS connection c to a handshake thread. Returns 0, or -1 (no
 * memory) with c untouched: the caller then handshakes on the loop. */
int hs_pool_submit(hs_pool *p, conn *c);

/* Handshakes away from the loop right now (for $SYS and tests). */
unsigned hs_pool_active(const hs_pool *p);

/* Stop every thread; connections still handshaking come back cancelled
 * (conn_handshake_done is called for each) before this returns. */
void hs_pool_free(hs_pool *p);

/* The number of handshake threads when the configuration does not say:
 * one per online CPU. */
unsigned hs_default_threads(void);

/* conn.c: connection c is back on the loop after its handshake ended with
 * result r; it goes on with MQTT or is closed. */
void conn_handshake_done(conn *c, enum hs_result r);

#endif
