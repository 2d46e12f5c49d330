/*
 * login.h - how a client proves who it is, between CONNECT and CONNACK.
 *
 * Three kinds of principal:
 *  - a device: a TLS client certificate verified at the handshake; its
 *    client id must be its device id (an empty one is given it);
 *  - a user: username and password checked against the password file on a
 *    worker thread, behind the lockout rules;
 *  - anonymous: only where the listener allows it.
 * Exactly one of connect_accept() or a refusal (CONNACK != 0, then close)
 * follows each login_start(), unless the connection closes first.
 */
#ifndef GATEMQ_LOGIN_H
#define GATEMQ_LOGIN_H

#include "broker/broker.h"

/* Decide on a decoded CONNECT (whose protocol level was accepted). */
void login_start(conn *c, const mqtt_connect *m);
/* Forget a running password check of c (c is being freed). */
void login_cancel(conn *c);
/* Load the password file and create the lockout tables and worker pool as
 * the configuration asks. Returns 0, or -1 with the reason logged. */
int login_init(broker *b);
void login_free(broker *b);

/* handle.c: admit the client as a principal of that kind: namespace,
 * session, takeover, CONNACK 0. Takes req. */
void connect_accept(conn *c, connect_req *req, int kind);
/* handle.c: CONNACK rc, then close once written. */
void connect_refuse(conn *c, uint8_t rc, const char *why);
void connect_req_free(connect_req *req);

#endif
