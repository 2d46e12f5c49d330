/*
 * tenant_util.h - helpers for the company namespace tests (it_tenancy.c), on
 * top of harness.h: a certificate authority with a few devices made once per
 * program, and a raw MQTT 3.1.1 client that speaks either TLS (mbedtls, as a
 * device with its own certificate and key) or plain TCP (the broker's
 * anonymous loopback listener: a platform-wide client).
 *
 * A program that uses them runs with TN_RUN and registers its tests with
 * TN_TEST. The group setup creates, with tools/gatemq-cert in a temporary
 * directory removed by the group teardown, a CA, a server certificate for
 * localhost / 127.0.0.1 and the devices acme/gw-1, acme/gw-2, acme/gw-3,
 * globex/gw-1 and globex/gw-2 (gw-1 exists in both companies on purpose).
 *
 * The client: every PUBLISH that arrives is decoded, acknowledged at once
 * (PUBACK for QoS 1, PUBREC for QoS 2, PUBCOMP when the PUBREL comes) and
 * kept, in arrival order, in the connection's inbox. Functions that wait for
 * another packet (CONNACK, SUBACK, PUBACK, PINGRESP...) put the PUBLISH
 * packets met on the way into the inbox, so a publisher that is also a
 * subscriber loses nothing. tn_recv takes from the inbox first.
 *
 * Absence: tn_expect_quiet shows that nothing arrives for a short bounded
 * window; tn_barrier (PINGREQ, the broker answers after it handled all that
 * the connection sent before) shows that nothing was delivered up to that
 * point, which is exact for what the broker sends synchronously (retained
 * messages after SUBACK, queued messages after CONNACK).
 *
 * Nothing here sleeps as synchronisation. Failures fail the current test at
 * the caller's line (the macros record it). tn_teardown, run after each test,
 * closes the connections a failed test left open, then runs it_teardown.
 *
 * Password users (it_acl.c, it_sessions_cap.c: companies named by users in
 * an ACL file): tn_passwd_file writes a password file and tn_login logs in
 * with a harness connection. These need neither TN_RUN nor the CA.
 */
#ifndef GATEMQ_IT_TENANT_UTIL_H
#define GATEMQ_IT_TENANT_UTIL_H

#include "harness.h"

/* Deadline for something that must happen (ms): TLS with a sanitizer build
 * on a loaded 2-core machine. */
#define TN_TIMEOUT 10000

/* ---- program set-up ------------------------------------------------------ */

int tn_group_setup(void **state);
int tn_group_teardown(void **state);
int tn_teardown(void **state);
#define TN_TEST(f) cmocka_unit_test_teardown(f, tn_teardown)
#define TN_RUN(tests) cmocka_run_group_tests(tests, tn_group_setup, tn_group_teardown)

/* The CA directory made by the group setup. */
const char *tn_pki(void);

/* A broker with the harness's plain anonymous listener (it_broker_port) and
 * one TLS listener (require_certificate true, CA and CRL of tn_pki()),
 * whose port goes to *tls_port. extra: more global config lines (or NULL). */
it_broker *tn__start(const char *extra, uint16_t *tls_port);
#define tn_start(extra, port) IT__AT(tn__start(extra, port))

/* ---- connections ------------------------------------------------------------ */

typedef struct tn_conn tn_conn;

/* One received PUBLISH; topic and payload are NUL-terminated copies. */
typedef struct tn_msg {
    char *topic;
    size_t topic_len;
    char *payload;
    size_t payload_len;
    uint8_t qos;
    bool retain;
    bool dup;
} tn_msg;
void tn_msg_free(tn_msg *m);

/* TLS connection as device company/device (handshake done, no CONNECT yet). */
tn_conn *tn__open_tls(uint16_t port, const char *company, const char *device);
#define tn_open_tls(port, co, dev) IT__AT(tn__open_tls(port, co, dev))
/* Plain TCP connection (no CONNECT yet). */
tn_conn *tn__open_plain(uint16_t port);
#define tn_open_plain(port) IT__AT(tn__open_plain(port))
/* A name for messages: "acme/gw-1" or "platform". */
const char *tn_name(const tn_conn *c);

/* CONNECT (keep alive 0) and expect CONNACK accepted; returns session present. */
bool tn__connect(tn_conn *c, const char *client_id, bool clean, const it_will *will);
#define tn_connect(c, id, clean, will) IT__AT(tn__connect(c, id, clean, will))
/* tn_open_tls + tn_connect with client id = device id; asserts session present. */
tn_conn *tn__device(uint16_t port, const char *company, const char *device, bool clean,
                    bool expect_sp);
#define tn_device(port, co, dev) IT__AT(tn__device(port, co, dev, true, false))
#define tn_device_sp(port, co, dev, clean, sp) IT__AT(tn__device(port, co, dev, clean, sp))
/* tn_open_plain + tn_connect (clean session). */
tn_conn *tn__platform(uint16_t port, const char *client_id);
#define tn_platform(port, id) IT__AT(tn__platform(port, id))

/* SUBSCRIBE n filters at qos, expect SUBACK with exactly the granted qos
 * for each. */
void tn__subscribe_n(tn_conn *c, const char *const *filters, size_t n, uint8_t qos);
#define tn_subscribe_n(c, f, n, q) IT__AT(tn__subscribe_n(c, f, n, q))
#define tn_subscribe(c, f, q) do { \
        const char *tn__f = (f); \
        tn_subscribe_n(c, &tn__f, 1, q); \
    } while (0)
/* UNSUBSCRIBE one filter, expect UNSUBACK. */
void tn__unsubscribe(tn_conn *c, const char *filter);
#define tn_unsubscribe(c, f) IT__AT(tn__unsubscribe(c, f))
/* PUBLISH (topic and payload C strings) and complete the sender's side:
 * QoS 1 waits for PUBACK, QoS 2 for PUBREC / PUBCOMP. After a QoS 1 or 2
 * publish returns, the broker has routed the message. */
void tn__publish(tn_conn *c, const char *topic, const char *payload, uint8_t qos,
                 bool retain);
#define tn_publish(c, t, p, q, r) IT__AT(tn__publish(c, t, p, q, r))

/* Next PUBLISH (inbox first): 1, 0 on timeout, -1 if the connection closed. */
int tn_recv(tn_conn *c, tn_msg *m, int timeout_ms);
/* The next PUBLISH must be exactly this (DUP 0). */
void tn__expect(tn_conn *c, const char *topic, const char *payload, uint8_t qos, bool retain);
#define tn_expect(c, t, p, q, r) IT__AT(tn__expect(c, t, p, q, r))
/* Nothing may arrive for ms (a short bounded window showing absence). */
void tn__expect_quiet(tn_conn *c, int ms);
#define tn_expect_quiet(c, ms) IT__AT(tn__expect_quiet(c, ms))
/* PINGREQ; PINGRESP must come with no PUBLISH before it (and the inbox must
 * be empty). */
void tn__barrier(tn_conn *c);
#define tn_barrier(c) IT__AT(tn__barrier(c))
/* PINGREQ / PINGRESP, keeping PUBLISH packets met on the way in the inbox. */
void tn__ping(tn_conn *c);
#define tn_ping(c) IT__AT(tn__ping(c))
/* Messages waiting in the inbox. */
size_t tn_inbox_len(const tn_conn *c);

/* DISCONNECT, wait for the broker to close, free c. */
void tn__disconnect(tn_conn *c);
#define tn_disconnect(c) IT__AT(tn__disconnect(c))
/* Close the socket without DISCONNECT (nor TLS close_notify); frees c. */
void tn_drop(tn_conn *c);
/* The broker must close c within timeout_ms; PUBLISH packets before the
 * close fail the test. Frees c. */
void tn__expect_closed(tn_conn *c, int timeout_ms);
#define tn_expect_closed(c, t) IT__AT(tn__expect_closed(c, t))
/* Send bytes as they are (e.g. a PUBLISH with an invalid topic). */
void tn__send_raw(tn_conn *c, const void *bytes, size_t n);
#define tn_send_raw(c, b, n) IT__AT(tn__send_raw(c, b, n))
/* Build a PUBLISH / SUBSCRIBE byte for byte without validating the topic
 * or filter; returns a malloc'd buffer and its size in *n. */
uint8_t *tn_raw_publish(const char *topic, const char *payload, uint8_t qos, uint16_t id,
                        size_t *n);
uint8_t *tn_raw_subscribe(const char *filter, uint8_t qos, uint16_t id, size_t *n);

/* ---- password users ------------------------------------------------------------ */

/* A password file (a harness temp file, removed at teardown) with users[0..n),
 * each with password, written by gatemq-passwd ($GATEMQ_BUILD, else build/)
 * with 1000 iterations so that logins stay fast under the sanitizer build.
 * Returns its path (malloc'd; the caller frees it). */
char *tn__passwd_file(const char *const *users, size_t n, const char *password);
#define tn_passwd_file(users, n, pw) IT__AT(tn__passwd_file(users, n, pw))
/* CONNECT (keep alive 0) on a new harness connection to port as user with
 * password (user NULL: anonymous, neither given), and expect exactly CONNACK
 * with session present sp and return code rc. Returns the connection, also
 * when refused (the broker then closes it; the caller frees it). */
it_conn *tn__login(uint16_t port, const char *user, const char *password,
                   const char *client_id, bool clean, bool sp, uint8_t rc);
#define tn_login(port, user, pw, id, clean, sp, rc) \
    IT__AT(tn__login(port, user, pw, id, clean, sp, rc))

#endif
