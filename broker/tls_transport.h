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

/* One step of c's handshake: 0 when it completed, GMQ_IO_WANT_READ or
 * GMQ_IO_WANT_WRITE, or GMQ_IO_ERROR (logged). Touches only c's socket, its
 * TLS state and its peer name, and reads its tls_server (immutable), so a
 * handshake thread may call it while the loop leaves c alone. On completion
 * it also reads the device identity from the peer certificate. */
ptrdiff_t tls_transport_handshake(conn *c);

/* On the loop thread, after tls_transport_handshake returned 0: check the
 * peer certificate (conn_tls_established). Returns 0, or -1 to refuse. */
int tls_transport_established(conn *c);

/* login.c: the handshake of c completed; check the peer certificate
 * (revocation, expiry) and record the device identity id read from it
 * (allocated; taken over, or freed on refusal; NULL: unusable, why says
 * why). Returns 0, or -1 to refuse the connection. */
int conn_tls_established(conn *c, const tls_server *srv, const mbedtls_x509_crt *peer,
                         tls_identity *id, const char *why);

#endif
