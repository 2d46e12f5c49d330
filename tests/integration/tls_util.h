/*
 * tls_util.h - helpers for the TLS, certificate identity, login and reload
 * integration tests (it_tls.c, it_login.c), on top of harness.h.
 *
 * A program that uses them runs with TU_RUN and registers its tests with
 * TU_TEST. The group setup provisions, once per program, a PKI with
 * tools/gatemq-cert in a temporary directory (removed by the group
 * teardown):
 *
 *   tu_pki()      CA, ECDSA server certificate for localhost and 127.0.0.1,
 *                 devices acme/gw-0001, acme/gw-0002, globex/gw-0101,
 *                 acme/gw-revoked (revoked in crl.pem), an expired device
 *                 acme/gw-expired, a device of a foreign CA acme/gw-foreign
 *                 a device without company (no O) gw-noco, acme/gw-ou
 *                 (OU=plant7) and acme/gw-san (SAN URI
 *                 urn:gatemq:company:initech).
 *   tu_company_ca() a separate CA (ca-globex) with device whatever/gw-g1,
 *                 for `company_ca globex`.
 *   tu_pki_rsa()  a copy of it (same CA) whose server key is RSA.
 *
 * Tests never modify these: a test that replaces files the broker reads
 * (CRL, server certificate, password file) works on copies in its own
 * temporary directories (tu_tempdir, tu_pki_copy, tu_tls_from), which the
 * per-test teardown removes.
 *
 * Nothing here sleeps as synchronisation: waiting functions poll a
 * condition (a log line, an output) up to a deadline and fail the test
 * when it passes.
 */
#ifndef GATEMQ_IT_TLS_UTIL_H
#define GATEMQ_IT_TLS_UTIL_H

#include "harness.h"

#include <limits.h>

/* Deadline for a tool run or an awaited condition (ms): generous for TLS
 * handshakes with a sanitizer build on a loaded machine. */
#define TU_TIMEOUT 20000

/* ---- program set-up --------------------------------------------------- */

int tu_group_setup(void **state);
int tu_group_teardown(void **state);
/* it_teardown, then removes this test's tu_tempdir directories. */
int tu_teardown(void **state);
#define TU_TEST(f) cmocka_unit_test_teardown(f, tu_teardown)
#define TU_RUN(tests) cmocka_run_group_tests(tests, tu_group_setup, tu_group_teardown)

/* tools/gatemq-cert of the repository ($GATEMQ_SRC, else found by walking
 * up from this binary). */
const char *tu_cert_script(void);
/* gatemq-passwd: $GATEMQ_BUILD/gatemq-passwd, else next to the broker. */
const char *tu_passwd_bin(void);
const char *tu_pki(void);
const char *tu_pki_rsa(void);
const char *tu_company_ca(void);

/* ---- files ------------------------------------------------------------- */

/* A fresh empty directory, removed with its content at teardown. */
const char *tu_tempdir(void);
/* A copy (cp -a) of a PKI directory in a fresh tu_tempdir; returns the
 * copy's path. Certificates issued there are signed by the same CA. */
const char *tu_pki_copy(const char *pki);
/* Replace dst atomically (write a temporary file, rename) with a copy of
 * src, or with text. */
void tu__copy(const char *src, const char *dst);
#define tu_copy(src, dst) IT__AT(tu__copy(src, dst))
void tu__write(const char *path, const char *text);
#define tu_write(path, text) IT__AT(tu__write(path, text))
/* snprintf into buf, failing the test if it does not fit. */
void tu__fmt(char *buf, size_t n, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
#define tu_fmt(buf, n, ...) IT__AT(tu__fmt(buf, n, __VA_ARGS__))

/* A device's certificate and key. */
typedef struct tu_dev {
    char crt[PATH_MAX];
    char key[PATH_MAX];
} tu_dev;
/* pki/devices/COMPANY/ID.{crt,key} */
void tu_device_in(tu_dev *d, const char *pki, const char *company, const char *id);
/* The same in the shared tu_pki(). */
void tu_device(tu_dev *d, const char *company, const char *id);
/* Run gatemq-cert with the arguments (NULL-terminated); fail the test
 * unless it exits 0. */
void tu__cert(const char *arg, ...) __attribute__((sentinel));
#define tu_cert(...) IT__AT(tu__cert(__VA_ARGS__))

/* The files a TLS listener reads, copied from a PKI directory into a fresh
 * tu_tempdir so the test can replace them before a reload. */
typedef struct tu_tls {
    char dir[PATH_MAX];
    char cert[PATH_MAX]; /* server.crt (chain) */
    char key[PATH_MAX];  /* server.key */
    char ca[PATH_MAX];   /* ca.crt */
    char crl[PATH_MAX];  /* crl.pem */
} tu_tls;
void tu__tls_from(tu_tls *m, const char *pki);
#define tu_tls_from(m, pki) IT__AT(tu__tls_from(m, pki))

/* ---- broker ------------------------------------------------------------ */

/* Start a broker (plain listener as in it_broker_start) with a second,
 * TLS, listener on 127.0.0.1 with certfile, keyfile, cafile and crlfile
 * from m, followed by listener_keys (more keys of that listener, may be
 * NULL) and then global (global keys, may be NULL). Returns once the TLS
 * listener listens; *tls_port receives its port. */
it_broker *tu__start(const tu_tls *m, const char *listener_keys, const char *global,
                     uint16_t *tls_port);
#define tu_start(m, lk, g, port) IT__AT(tu__start(m, lk, g, port))
/* How many times text occurs in the broker's log so far. */
int tu_log_count(const it_broker *b, const char *text);
/* Wait until the log holds text at least n times. */
void tu__await_log_n(const it_broker *b, const char *text, int n, int timeout_ms);
#define tu_await_log_n(b, text, n, t) IT__AT(tu__await_log_n(b, text, n, t))
#define tu_await_log(b, text) IT__AT(tu__await_log_n(b, text, 1, TU_TIMEOUT))
/* The log must (not) hold text. */
void tu__log_has(const it_broker *b, const char *text, bool expected);
#define tu_log_has(b, text) IT__AT(tu__log_has(b, text, true))
#define tu_log_lacks(b, text) IT__AT(tu__log_has(b, text, false))
/* SIGHUP, then wait until the log holds one more line containing done. */
void tu__reload(const it_broker *b, const char *done);
#define tu_reload(b, done) IT__AT(tu__reload(b, done))

/* ---- tools -------------------------------------------------------------- */

/* An argument vector built piece by piece; strings are copied. */
typedef struct tu_args {
    const char *v[64];
    char pool[32768];
    size_t used;
    int n;
} tu_args;
void tu_args_init(tu_args *a);
/* Append arguments (NULL-terminated). */
void tu__args_add(tu_args *a, ...) __attribute__((sentinel));
#define tu_args_add(a, ...) IT__AT(tu__args_add(a, __VA_ARGS__))
/* Append a printf-formatted argument. */
void tu__args_fmt(tu_args *a, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
#define tu_args_fmt(a, ...) IT__AT(tu__args_fmt(a, __VA_ARGS__))
/* mosquitto_pub / mosquitto_sub arguments: tool -h 127.0.0.1 -p PORT
 * --cafile CA [--cert CRT --key KEY] (dev may be NULL). For mosquitto_sub
 * the line is prefixed with stdbuf -oL so its output arrives line by line. */
void tu__args_mosq(tu_args *a, const char *tool, uint16_t port, const char *ca,
                   const tu_dev *dev);
#define tu_args_mosq(a, tool, port, ca, dev) IT__AT(tu__args_mosq(a, tool, port, ca, dev))

/* Start mosquitto_sub -d -v on topic (QoS 1) as device dev with client id
 * id (NULL: none, i.e. empty) and wait for its SUBACK. */
it_proc *tu__sub_start(uint16_t port, const char *ca, const tu_dev *dev, const char *id,
                       const char *topic);
#define tu_sub_start(port, ca, dev, id, topic) IT__AT(tu__sub_start(port, ca, dev, id, topic))
/* Wait until p's output holds text; fail the test otherwise. */
void tu__await_output(it_proc *p, const char *text, int timeout_ms);
#define tu_await_output(p, text) IT__AT(tu__await_output(p, text, TU_TIMEOUT))
/* Run argv to completion; returns the exit status, *out the output
 * (malloc'd). */
int tu__run(tu_args *a, char **out);
#define tu_run(a, out) IT__AT(tu__run(a, out))
/* mosquitto_pub -d one QoS 1 message as a device (id NULL: no -i). */
int tu__dev_pub(uint16_t port, const char *ca, const tu_dev *dev, const char *id,
                const char *topic, const char *msg, char **out);
#define tu_dev_pub(port, ca, dev, id, topic, msg, out) \
    IT__AT(tu__dev_pub(port, ca, dev, id, topic, msg, out))
/* mosquitto_pub -d one QoS 1 message with a user name and password. */
int tu__user_pub(uint16_t port, const char *ca, const char *user, const char *password,
                 const char *topic, const char *msg, char **out);
#define tu_user_pub(port, ca, user, pw, topic, msg, out) \
    IT__AT(tu__user_pub(port, ca, user, pw, topic, msg, out))
/* mosquitto_pub one QoS 1 message as device acme/ID of the shared PKI
 * (client id ID); fails the test unless it exits 0. The PUBACK it waits
 * for means the message was routed. Devices of one company share a
 * namespace, so this reaches acme's subscribers whatever the namespacing. */
void tu__dev_publish(uint16_t port, const char *ca, const char *id, const char *topic,
                     const char *msg);
#define tu_dev_publish(port, ca, id, topic, msg) IT__AT(tu__dev_publish(port, ca, id, topic, msg))
/* Publish QoS 1 on the broker's plain listener with a raw client, so the
 * message is routed before this returns (PUBACK). */
void tu__plain_publish(it_broker *b, const char *topic, const char *msg);
#define tu_plain_publish(b, topic, msg) IT__AT(tu__plain_publish(b, topic, msg))

/* Does hay contain needle? (NULL hay: no.) */
bool tu_has(const char *hay, const char *needle);
/* Fail the test, showing out, unless it contains text. */
void tu__expect_has(const char *out, const char *text, const char *what);
#define tu_expect_has(out, text, what) IT__AT(tu__expect_has(out, text, what))

/* Sleep (only inside polling loops that check a condition). */
void tu_poll_pause(void);

#endif
