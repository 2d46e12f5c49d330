/*
 * tls_transport.h - TLS connections (see tls_transport.c).
 */
#ifndef GATEMQ_TLS_TRANSPORT_H
#define GATEMQ_TLS_TRANSPORT_H

#include "auth/tls.h"
#include "broker/broker.h"

extern const transport_ops gmq_tls_transport;

/* Make c a TLS connection using srv's configuration (takes a reference).
 * Returns 0, or -1 on no memory with c unchanged. */
int tls_transport_attach(conn *c, tls_server *srv);

/* The verified peer certificate of an established TLS connection, or NULL.
 * Valid while c lives. */
const mbedtls_x509_crt *tls_transport_peer_cert(const conn *c);

/* conn.c: the handshake of c completed; check the peer certificate and
 * record the device identity. Returns 0, or -1 to refuse the connection. */
int conn_tls_established(conn *c, const tls_server *srv, const mbedtls_x509_crt *peer);

#endif
