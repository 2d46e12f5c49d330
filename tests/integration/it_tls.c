/*
 * it_tls.c - TLS listeners and certificate identity, end to end with real
 * TLS and stock clients (mosquitto_pub, mosquitto_sub, openssl s_client):
 * device logins and client id binding, refused certificates, revocation
 * and the other SIGHUP reloads, server certificate rotation, ECDSA and
 * RSA server keys, protocol versions, suites and curves, session tickets,
 * the handshake timeout and --check-config on TLS files; and, calling
 * auth/tls.c directly, how a configuration holds its EC keys and decides a
 * company CA's company.
 *
 * The PKI is made once per program by tools/gatemq-cert (see tls_util.h);
 * a test that changes files the broker reads works on its own copies.
 * Every test starts its own broker, which also listens on a plain port
 * used by raw clients to publish with a PUBACK as a barrier.
 */
#include "tls_util.h"

#include <signal.h>
#include <unistd.h>

#include <mbedtls/ctr_drbg.h>
#include <mbedtls/ecdsa.h>
#include <mbedtls/entropy.h>
#include <mbedtls/ssl_internal.h> /* mbedtls_ssl_key_cert: the configured key */

#include "auth/tls.h"

/* A broker whose TLS listener requires a client certificate. */
static it_broker *cert_broker(tu_tls *m, uint16_t *port, const char *global)
{
    tu_tls_from(m, tu_pki());
    return tu_start(m, "require_certificate true", global, port);
}

/* After a refusal, the broker still serves plain and TLS clients. */
static void assert_still_serving(it_broker *b, uint16_t port, const char *ca)
{
    it_assert_serving(b);
    tu_dev ok;
    tu_device(&ok, "acme", "gw-0001");
    char *out = NULL;
    int rc = tu_dev_pub(port, ca, &ok, "gw-0001", "it/after", "ok", &out);
    if (rc != 0)
        it_fail("a good device could not publish afterwards (exit %d):\n%s", rc, out);
    free(out);
}

/* A device's connection attempt must fail (mosquitto_pub exits non-zero);
 * the broker log must then hold why. */
static void expect_refused(it_broker *b, uint16_t port, const char *ca, const tu_dev *dev,
                           const char *id, const char *tool_text, const char *log_text)
{
    char *out = NULL;
    int rc = tu_dev_pub(port, ca, dev, id, "it/refused", "x", &out);
    if (rc == 0)
        it_fail("mosquitto_pub succeeded where it must be refused:\n%s", out);
    if (tool_text && !tu_has(out, tool_text))
        it_fail("mosquitto_pub exited %d without \"%s\":\n%s", rc, tool_text, out);
    free(out);
    tu_await_log(b, log_text);
}

/* s_client with stdin at EOF: handshakes, then closes. */
static int s_client(uint16_t port, const char *ca, char **out, ...)
    __attribute__((sentinel));
static int s_client(uint16_t port, const char *ca, char **out, ...)
{
    tu_args a;
    tu_args_init(&a);
    tu_args_add(&a, "openssl", "s_client", "-connect", NULL);
    tu_args_fmt(&a, "127.0.0.1:%u", port);
    tu_args_add(&a, "-CAfile", ca, "-verify_return_error", NULL);
    va_list ap;
    va_start(ap, out);
    const char *s;
    while ((s = va_arg(ap, const char *)) != NULL)
        tu_args_add(&a, s, NULL);
    va_end(ap);
    return tu_run(&a, out);
}

/* ---- devices ---------------------------------------------------------------- */

/* A device publishes over TLS with mosquitto_pub; another device of the
 * same company, subscribed with mosquitto_sub, receives it. Both are
 * identified by their certificate (device id = CN, company = O). */
static void test_device_publishes_over_tls_and_subscriber_device_receives(void **state)
{
    tu_tls m;
    uint16_t port;
    it_broker *b = cert_broker(&m, &port, NULL);
    tu_dev pub, sub;
    tu_device(&sub, "acme", "gw-0001");
    tu_device(&pub, "acme", "gw-0002");
    it_proc *s = tu_sub_start(port, m.ca, &sub, "gw-0001", "plant/line1/temp");
    tu_await_log(b, "gw-0001 connected from 127.0.0.1:");
    tu_log_has(b, "TLS connection from 127.0.0.1:");
    tu_log_has(b, "device gw-0001 of company acme");

    char *out = NULL;
    int rc = tu_dev_pub(port, m.ca, &pub, "gw-0002", "plant/line1/temp", "21.5", &out);
    if (rc != 0)
        it_fail("mosquitto_pub over TLS exited %d:\n%s", rc, out);
    tu_expect_has(out, "received CONNACK (0)", "mosquitto_pub");
    tu_expect_has(out, "received PUBACK", "mosquitto_pub");
    free(out);
    tu_await_output(s, "plant/line1/temp 21.5");
    tu_log_has(b, "device gw-0002 of company acme");
    tu_log_has(b, "(device of acme, clean 1");
    it_proc_free(s);
    it_broker_stop(b);
}

/* A client id other than the certificate's CN: CONNACK 2 (identifier
 * rejected), and the log says why. */
static void test_client_id_differing_from_certificate_cn_gets_connack_2(void **state)
{
    tu_tls m;
    uint16_t port;
    it_broker *b = cert_broker(&m, &port, NULL);
    tu_dev dev;
    tu_device(&dev, "acme", "gw-0001");
    expect_refused(b, port, m.ca, &dev, "gw-0002", "identifier rejected",
                   "refused (CONNACK 2): client id differs from the certificate's device id");
    tu_log_lacks(b, "gw-0002 connected");
    tu_log_lacks(b, "gw-0001 connected");
    assert_still_serving(b, port, m.ca);
    it_broker_stop(b);
}

/* An empty client id (mosquitto_pub without -i sends none) is assigned the
 * device id; the client id equal to the CN is accepted as well. */
static void test_empty_client_id_is_assigned_device_id(void **state)
{
    tu_tls m;
    uint16_t port;
    it_broker *b = cert_broker(&m, &port, NULL);
    tu_dev dev;
    tu_device(&dev, "globex", "gw-0101");
    char *out = NULL;
    int rc = tu_dev_pub(port, m.ca, &dev, NULL, "it/empty", "x", &out);
    if (rc != 0)
        it_fail("mosquitto_pub with an empty client id exited %d:\n%s", rc, out);
    tu_expect_has(out, "Client (null) sending CONNECT", "mosquitto_pub (empty client id)");
    tu_expect_has(out, "received CONNACK (0)", "mosquitto_pub");
    free(out);
    tu_await_log(b, "gw-0101 connected from 127.0.0.1:");
    tu_log_lacks(b, "client auto-");

    rc = tu_dev_pub(port, m.ca, &dev, "gw-0101", "it/empty", "x", &out);
    if (rc != 0)
        it_fail("mosquitto_pub with the device id as client id exited %d:\n%s", rc, out);
    free(out);
    tu_await_log_n(b, "gw-0101 connected from 127.0.0.1:", 2, TU_TIMEOUT);
    it_broker_stop(b);
}

/* A device certificate identifies the client even where passwords are
 * checked: the user name and password it also sends are ignored. */
static void test_device_certificate_ignores_username_and_password(void **state)
{
    const char *dir = tu_tempdir();
    char pw[PATH_MAX], global[PATH_MAX + 64];
    tu_fmt(pw, sizeof pw, "%s/passwd", dir);
    const char *mk[] = { "mosquitto_passwd", "-c", "-b", pw, "alice", "secret", NULL };
    if (it_run(mk, TU_TIMEOUT, NULL) != 0)
        it_fail("mosquitto_passwd failed");
    tu_fmt(global, sizeof global, "password_file %s", pw);
    tu_tls m;
    uint16_t port;
    tu_tls_from(&m, tu_pki());
    it_broker *b = tu_start(&m, "require_certificate false\nallow_anonymous false", global, &port);
    tu_dev dev;
    tu_device(&dev, "acme", "gw-0001");
    tu_args a;
    tu_args_init(&a);
    tu_args_mosq(&a, "mosquitto_pub", port, m.ca, &dev);
    tu_args_add(&a, "-d", "-q", "1", "-t", "it/dev", "-m", "x", "-i", "gw-0001", "-u", "alice",
                "-P", "wrong", NULL);
    char *out = NULL;
    int rc = tu_run(&a, &out);
    if (rc != 0)
        it_fail("device with a wrong password was refused (exit %d):\n%s", rc, out);
    free(out);
    tu_await_log(b, "gw-0001 connected from 127.0.0.1:");
    tu_log_has(b, "(device of acme");
    tu_log_lacks(b, "bad user name or password");
    it_broker_stop(b);
}

/* ---- refused certificates ------------------------------------------------ */

static void test_no_certificate_is_refused_on_require_certificate_listener(void **state)
{
    tu_tls m;
    uint16_t port;
    it_broker *b = cert_broker(&m, &port, NULL);
    expect_refused(b, port, m.ca, NULL, NULL, NULL, "refused: no client certificate");
    tu_log_lacks(b, "connected from");
    assert_still_serving(b, port, m.ca);
    it_broker_stop(b);
}

static void test_certificate_from_another_ca_is_refused(void **state)
{
    tu_tls m;
    uint16_t port;
    it_broker *b = cert_broker(&m, &port, NULL);
    tu_dev dev;
    tu_fmt(dev.crt, sizeof dev.crt, "%s/foreign/devices/acme/gw-foreign.crt", tu_pki());
    tu_fmt(dev.key, sizeof dev.key, "%s/foreign/devices/acme/gw-foreign.key", tu_pki());
    expect_refused(b, port, m.ca, &dev, "gw-foreign", NULL,
                   "refused: client certificate: The certificate is not correctly signed by "
                   "the trusted CA");
    tu_log_lacks(b, "connected from");
    assert_still_serving(b, port, m.ca);
    it_broker_stop(b);
}

/* Where a certificate is optional (require_certificate false, for users
 * who log in with a password), a certificate that is presented must still
 * verify: mbedtls would complete the handshake with an untrusted or expired
 * one, which must not name a device. A client without one is served. */
static void test_unverified_certificate_is_refused_where_certificates_are_optional(void **state)
{
    tu_tls m;
    uint16_t port;
    tu_tls_from(&m, tu_pki());
    it_broker *b = tu_start(&m, "require_certificate false\nallow_anonymous true", NULL, &port);
    tu_dev dev;
    tu_fmt(dev.crt, sizeof dev.crt, "%s/foreign/devices/acme/gw-foreign.crt", tu_pki());
    tu_fmt(dev.key, sizeof dev.key, "%s/foreign/devices/acme/gw-foreign.key", tu_pki());
    expect_refused(b, port, m.ca, &dev, "gw-foreign", NULL,
                   "refused: client certificate: The certificate is not correctly signed by "
                   "the trusted CA");
    tu_device(&dev, "acme", "gw-expired");
    expect_refused(b, port, m.ca, &dev, "gw-expired", NULL,
                   "refused: client certificate: The certificate validity has expired");
    tu_log_lacks(b, "device gw-foreign");
    tu_log_lacks(b, "device gw-expired");
    char *out = NULL;
    int rc = tu_dev_pub(port, m.ca, NULL, "anon-1", "it/anon", "x", &out);
    if (rc != 0)
        it_fail("a client without certificate was not served (exit %d):\n%s", rc, out);
    free(out);
    it_broker_stop(b);
}

static void test_expired_certificate_is_refused(void **state)
{
    tu_tls m;
    uint16_t port;
    it_broker *b = cert_broker(&m, &port, NULL);
    tu_dev dev;
    tu_device(&dev, "acme", "gw-expired");
    expect_refused(b, port, m.ca, &dev, "gw-expired", NULL,
                   "refused: client certificate: The certificate validity has expired");
    tu_log_lacks(b, "connected from");
    assert_still_serving(b, port, m.ca);
    it_broker_stop(b);
}

static void test_certificate_without_company_is_refused(void **state)
{
    tu_tls m;
    uint16_t port;
    it_broker *b = cert_broker(&m, &port, NULL);
    tu_dev dev;
    tu_fmt(dev.crt, sizeof dev.crt, "%s/nocompany/gw-noco.crt", tu_pki());
    tu_fmt(dev.key, sizeof dev.key, "%s/nocompany/gw-noco.key", tu_pki());
    expect_refused(b, port, m.ca, &dev, "gw-noco", NULL,
                   "refused: certificate has no subject O (the company)");
    tu_log_lacks(b, "connected from");
    assert_still_serving(b, port, m.ca);
    it_broker_stop(b);
}

/* A certificate already on the CRL at start is refused at the handshake. */
static void test_certificate_revoked_in_crl_at_start_is_refused(void **state)
{
    tu_tls m;
    uint16_t port;
    it_broker *b = cert_broker(&m, &port, NULL);
    tu_dev dev;
    tu_device(&dev, "acme", "gw-revoked");
    expect_refused(b, port, m.ca, &dev, "gw-revoked", NULL,
                   "refused: client certificate: The certificate has been revoked");
    tu_log_lacks(b, "connected from");
    assert_still_serving(b, port, m.ca);
    it_broker_stop(b);
}

/* ---- company mapping ------------------------------------------------------ */

/* A device connects and the log names its device id and company. */
static void expect_identity(it_broker *b, uint16_t port, const char *ca, const tu_dev *dev,
                            const char *id, const char *company)
{
    char *out = NULL;
    int rc = tu_dev_pub(port, ca, dev, id, "it/company", "x", &out);
    if (rc != 0)
        it_fail("device %s was refused (exit %d):\n%s", id, rc, out);
    free(out);
    char line[256];
    tu_fmt(line, sizeof line, "device %s of company %s", id, company);
    tu_await_log(b, line);
    tu_fmt(line, sizeof line, "%s connected from 127.0.0.1:", id);
    tu_await_log(b, line);
}

/* certificate_company ou: the company is the subject OU; a certificate
 * without OU is refused. */
static void test_certificate_company_ou_takes_company_from_ou(void **state)
{
    tu_tls m;
    uint16_t port;
    it_broker *b = cert_broker(&m, &port, "certificate_company ou");
    tu_dev dev, plain;
    tu_device(&dev, "acme", "gw-ou");
    tu_device(&plain, "acme", "gw-0001");
    expect_identity(b, port, m.ca, &dev, "gw-ou", "plant7");
    expect_refused(b, port, m.ca, &plain, "gw-0001", NULL,
                   "refused: certificate has no subject OU (the company)");
    it_broker_stop(b);
}

/* certificate_company san_uri with a prefix: the company is the rest of
 * the first SAN URI with that prefix; without one, refused. */
static void test_certificate_company_san_uri_takes_company_from_uri(void **state)
{
    tu_tls m;
    uint16_t port;
    it_broker *b = cert_broker(&m, &port,
                               "certificate_company san_uri\n"
                               "certificate_company_uri_prefix urn:gatemq:company:");
    tu_dev dev, plain;
    tu_device(&dev, "acme", "gw-san");
    tu_device(&plain, "acme", "gw-0001");
    expect_identity(b, port, m.ca, &dev, "gw-san", "initech");
    expect_refused(b, port, m.ca, &plain, "gw-0001", NULL,
                   "refused: certificate has no SAN URI starting with 'urn:gatemq:company:'");
    it_broker_stop(b);
}

/* company_ca: a device issued by a company's own CA belongs to that
 * company whatever its O says; devices of the main CA keep theirs. */
static void test_company_ca_decides_company(void **state)
{
    tu_tls m;
    uint16_t port;
    tu_tls_from(&m, tu_pki());
    char keys[PATH_MAX + 64];
    tu_fmt(keys, sizeof keys, "require_certificate true\ncompany_ca globex %s/ca.crt",
           tu_company_ca());
    it_broker *b = tu_start(&m, keys, NULL, &port);
    tu_dev g1, acme;
    tu_device_in(&g1, tu_company_ca(), "whatever", "gw-g1");
    tu_device(&acme, "acme", "gw-0001");
    expect_identity(b, port, m.ca, &g1, "gw-g1", "globex");
    tu_log_lacks(b, "of company whatever");
    expect_identity(b, port, m.ca, &acme, "gw-0001", "acme");
    it_broker_stop(b);
}

/* ---- revocation and reload --------------------------------------------------- */

static const char reloaded[] = ": certificate, key, CAs and CRLs reloaded";

/* A device connected and subscribed; its certificate is revoked and the
 * broker gets SIGHUP: it is disconnected, cannot connect again (refused at
 * the handshake), and another device (same company, so that the test does
 * not depend on namespaces) stays connected and keeps receiving. */
static void test_revoked_device_is_disconnected_at_reload_and_refused_after(void **state)
{
    const char *pki = tu_pki_copy(tu_pki());
    tu_cert("device", pki, "acme", "gw-rev1", NULL);
    tu_tls m;
    uint16_t port;
    tu_tls_from(&m, pki);
    it_broker *b = tu_start(&m, "require_certificate true", NULL, &port);
    tu_dev rev, other;
    tu_device_in(&rev, pki, "acme", "gw-rev1");
    tu_device(&other, "acme", "gw-0001"); /* same CA: the copy shares it */
    it_proc *srev = tu_sub_start(port, m.ca, &rev, "gw-rev1", "it/rev");
    it_proc *soth = tu_sub_start(port, m.ca, &other, "gw-0001", "it/rev");
    tu_dev_publish(port, m.ca, "gw-0002", "it/rev", "before");
    tu_await_output(srev, "it/rev before");
    tu_await_output(soth, "it/rev before");

    tu_cert("revoke", pki, "acme", "gw-rev1", "--reason", "keyCompromise", NULL);
    char crl[PATH_MAX];
    tu_fmt(crl, sizeof crl, "%s/crl.pem", pki);
    tu_copy(crl, m.crl);
    tu_reload(b, reloaded);
    tu_await_log(b, "gw-rev1 (127.0.0.1:");
    tu_await_log(b, "certificate revoked, disconnecting");
    tu_await_log(b, "disconnected: certificate revoked");
    /* mosquitto_sub would reconnect (and be refused) for ever. */
    it_proc_free(srev);

    int before = tu_log_count(b, "The certificate has been revoked");
    char *out = NULL;
    int rc = tu_dev_pub(port, m.ca, &rev, "gw-rev1", "it/rev", "again", &out);
    if (rc == 0)
        it_fail("the revoked device connected again:\n%s", out);
    free(out);
    tu_await_log_n(b, "The certificate has been revoked", before + 1, TU_TIMEOUT);
    tu_log_lacks(b, "it/rev again");

    tu_dev_publish(port, m.ca, "gw-0002", "it/rev", "after");
    tu_await_output(soth, "it/rev after");
    tu_log_lacks(b, "gw-0001 (127.0.0.1");
    it_proc_free(soth);
    it_broker_stop(b);
}

/* SIGHUP with unchanged files reloads them without dropping a live TLS
 * client, which still receives what is published after the reload. */
static void test_reload_with_unchanged_files_keeps_tls_client(void **state)
{
    tu_tls m;
    uint16_t port;
    it_broker *b = cert_broker(&m, &port, NULL);
    tu_dev dev;
    tu_device(&dev, "acme", "gw-0001");
    it_proc *s = tu_sub_start(port, m.ca, &dev, "gw-0001", "it/keep");
    tu_reload(b, reloaded);
    tu_dev_publish(port, m.ca, "gw-0002", "it/keep", "after-reload");
    tu_await_output(s, "it/keep after-reload");
    tu_log_lacks(b, "gw-0001 (127.0.0.1");
    tu_log_has(b, "SIGHUP received");
    tu_await_log_n(b, "gw-0001 connected from", 1, TU_TIMEOUT);
    if (tu_log_count(b, "gw-0001 connected from") != 1)
        it_fail("the client reconnected across the reload");
    it_proc_free(s);
    assert_still_serving(b, port, m.ca);
    it_broker_stop(b);
}

/* A CRL that does not parse at reload: the listener keeps its old TLS
 * material (the old CRL still revokes gw-revoked, good devices still
 * connect), the log says so, live clients stay. */
static void test_reload_with_broken_crl_keeps_old_material(void **state)
{
    tu_tls m;
    uint16_t port;
    it_broker *b = cert_broker(&m, &port, NULL);
    tu_dev dev, revoked;
    tu_device(&dev, "acme", "gw-0001");
    tu_device(&revoked, "acme", "gw-revoked");
    it_proc *s = tu_sub_start(port, m.ca, &dev, "gw-0001", "it/crl");
    tu_write(m.crl, "-----BEGIN X509 CRL-----\nbm90IGEgQ1JM\n-----END X509 CRL-----\n");
    tu_reload(b, "keeps its TLS material: crlfile");
    tu_log_lacks(b, reloaded);

    tu_dev_publish(port, m.ca, "gw-0002", "it/crl", "after-bad-reload");
    tu_await_output(s, "it/crl after-bad-reload");
    tu_log_lacks(b, "gw-0001 (127.0.0.1");
    it_proc_free(s);
    expect_refused(b, port, m.ca, &revoked, "gw-revoked", NULL,
                   "The certificate has been revoked");
    assert_still_serving(b, port, m.ca);

    /* Fixing the file and reloading again takes it. */
    char crl[PATH_MAX];
    tu_fmt(crl, sizeof crl, "%s/crl.pem", tu_pki());
    tu_copy(crl, m.crl);
    tu_reload(b, reloaded);
    it_broker_stop(b);
}

/* A key that does not match the certificate at reload (the key was
 * replaced before the certificate): the listener keeps serving the old
 * pair (ECDSA) and the log says why; once the certificate follows, the
 * next reload takes the new pair (RSA). */
static void test_reload_with_mismatched_key_keeps_old_pair(void **state)
{
    tu_tls m;
    uint16_t port;
    it_broker *b = cert_broker(&m, &port, NULL);
    tu_dev dev;
    tu_device(&dev, "acme", "gw-0001");
    char src[PATH_MAX];
    tu_fmt(src, sizeof src, "%s/server.key", tu_pki_rsa());
    tu_copy(src, m.key);
    tu_reload(b, "keeps its TLS material: keyfile");
    tu_log_has(b, "does not match certfile");
    char *out = NULL;
    int rc = s_client(port, m.ca, &out, "-tls1_2", "-brief", "-cert", dev.crt, "-key", dev.key,
                      NULL);
    if (rc != 0 || !tu_has(out, "Ciphersuite: ECDHE-ECDSA-"))
        it_fail("the old ECDSA pair is not served after a failed reload (exit %d):\n%s", rc,
                out);
    free(out);
    assert_still_serving(b, port, m.ca);

    tu_fmt(src, sizeof src, "%s/server.crt", tu_pki_rsa());
    tu_copy(src, m.cert);
    tu_reload(b, reloaded);
    rc = s_client(port, m.ca, &out, "-tls1_2", "-brief", "-cert", dev.crt, "-key", dev.key,
                  NULL);
    if (rc != 0 || !tu_has(out, "Ciphersuite: ECDHE-RSA-"))
        it_fail("the new RSA pair is not served after the reload (exit %d):\n%s", rc, out);
    free(out);
    it_broker_stop(b);
}

/* Server certificate rotation: a new server certificate from the same CA,
 * SIGHUP; a new connection gets the new certificate and succeeds, and a
 * connection made before stays and keeps receiving. */
static void test_server_certificate_rotation_keeps_old_connection(void **state)
{
    const char *pki = tu_pki_copy(tu_pki());
    tu_tls m;
    uint16_t port;
    tu_tls_from(&m, pki);
    it_broker *b = tu_start(&m, "require_certificate true", NULL, &port);
    tu_dev dev, other;
    tu_device(&dev, "acme", "gw-0001");
    tu_device(&other, "acme", "gw-0002");
    it_proc *s = tu_sub_start(port, m.ca, &dev, "gw-0001", "it/rot");

    /* The certificate the broker serves, by fingerprint. */
    char cmd[4 * PATH_MAX];
    tu_fmt(cmd, sizeof cmd,
           "openssl s_client -connect 127.0.0.1:%u -CAfile %s -cert %s -key %s "
           "</dev/null 2>/dev/null | openssl x509 -noout -fingerprint -sha256",
           port, m.ca, other.crt, other.key);
    const char *served_argv[] = { "sh", "-c", cmd, NULL };
    char *old_fp = NULL, *new_fp = NULL, *file_fp = NULL;
    if (it_run(served_argv, TU_TIMEOUT, &old_fp) != 0 || !tu_has(old_fp, "Fingerprint"))
        it_fail("cannot read the served certificate:\n%s", old_fp);

    tu_cert("server", pki, "localhost", "127.0.0.1", "--force", NULL);
    char src[PATH_MAX];
    tu_fmt(src, sizeof src, "%s/server.key", pki);
    tu_copy(src, m.key);
    tu_fmt(src, sizeof src, "%s/server.crt", pki);
    tu_copy(src, m.cert);
    const char *file_argv[] = { "openssl", "x509", "-in", m.cert, "-noout", "-fingerprint",
                                "-sha256", NULL };
    if (it_run(file_argv, TU_TIMEOUT, &file_fp) != 0)
        it_fail("openssl x509 failed:\n%s", file_fp);
    if (strcmp(old_fp, file_fp) == 0)
        it_fail("gatemq-cert server --force made the same certificate");
    tu_reload(b, reloaded);

    if (it_run(served_argv, TU_TIMEOUT, &new_fp) != 0)
        it_fail("cannot read the served certificate after the reload:\n%s", new_fp);
    if (strcmp(new_fp, file_fp) != 0)
        it_fail("after the reload the broker serves\n%s\ninstead of the new\n%s", new_fp,
                file_fp);
    free(old_fp);
    free(new_fp);
    free(file_fp);

    char *out = NULL;
    int rc = tu_dev_pub(port, m.ca, &other, "gw-0002", "it/rot", "new-connection", &out);
    if (rc != 0)
        it_fail("a new connection after the rotation failed (exit %d):\n%s", rc, out);
    free(out);
    tu_await_output(s, "it/rot new-connection");
    tu_log_lacks(b, "gw-0001 (127.0.0.1");
    it_proc_free(s);
    it_broker_stop(b);
}

/* ---- keys, versions, suites, tickets ------------------------------------------ */

/* A full device round trip over TLS, and the suite openssl negotiated. */
static void key_type_works(const char *pki, const char *suite)
{
    tu_tls m;
    uint16_t port;
    tu_tls_from(&m, pki);
    it_broker *b = tu_start(&m, "require_certificate true", NULL, &port);
    tu_dev sub, pub;
    tu_device(&sub, "acme", "gw-0001");
    tu_device(&pub, "acme", "gw-0002");
    it_proc *s = tu_sub_start(port, m.ca, &sub, "gw-0001", "it/key");
    char *out = NULL;
    int rc = tu_dev_pub(port, m.ca, &pub, "gw-0002", "it/key", "signed", &out);
    if (rc != 0)
        it_fail("mosquitto_pub exited %d:\n%s", rc, out);
    free(out);
    tu_await_output(s, "it/key signed");
    it_proc_free(s);
    rc = s_client(port, m.ca, &out, "-tls1_2", "-brief", "-cert", pub.crt, "-key", pub.key,
                  NULL);
    if (rc != 0)
        it_fail("openssl s_client exited %d:\n%s", rc, out);
    tu_expect_has(out, suite, "s_client -brief");
    tu_expect_has(out, "Verification: OK", "s_client -brief");
    free(out);
    it_broker_stop(b);
}

static void test_ecdsa_server_key_works(void **state)
{
    key_type_works(tu_pki(), "Ciphersuite: ECDHE-ECDSA-");
}

static void test_rsa_server_key_works(void **state)
{
    key_type_works(tu_pki_rsa(), "Ciphersuite: ECDHE-RSA-");
}

/* A TLS 1.1 client is refused by the server (protocol version alert). */
static void test_tls11_is_refused(void **state)
{
    tu_tls m;
    uint16_t port;
    it_broker *b = cert_broker(&m, &port, NULL);
    char *out = NULL;
    /* SECLEVEL=0 so that openssl 3 really offers TLS 1.1. */
    int rc = s_client(port, m.ca, &out, "-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0", NULL);
    if (rc == 0)
        it_fail("a TLS 1.1 handshake succeeded:\n%s", out);
    if (tu_has(out, "Cipher is ECDHE") || !tu_has(out, "alert protocol version"))
        it_fail("expected a protocol version alert from the server:\n%s", out);
    free(out);
    tu_await_log(b, "Handshake protocol not within min/max boundaries");
    assert_still_serving(b, port, m.ca);
    it_broker_stop(b);
}

/* TLS 1.2 negotiates an ECDHE suite with an AEAD cipher. */
static void test_tls12_negotiates_ecdhe_aead_suite(void **state)
{
    tu_tls m;
    uint16_t port;
    tu_tls_from(&m, tu_pki());
    it_broker *b = tu_start(&m, "require_certificate false\nallow_anonymous true", NULL, &port);
    char *out = NULL;
    int rc = s_client(port, m.ca, &out, "-tls1_2", "-brief", NULL);
    if (rc != 0)
        it_fail("openssl s_client -tls1_2 exited %d:\n%s", rc, out);
    tu_expect_has(out, "Protocol version: TLSv1.2", "s_client -brief");
    tu_expect_has(out, "Ciphersuite: ECDHE-", "s_client -brief");
    if (!tu_has(out, "GCM") && !tu_has(out, "CHACHA20"))
        it_fail("not an AEAD suite:\n%s", out);
    free(out);
    it_broker_stop(b);
}

/* The server picks the ECDHE curve by its own order (X25519, P-256, P-384:
 * the cheapest for it first), not by the client's; a client without
 * X25519 still gets P-256. (The ECDSA P-256 server certificate needs
 * P-256 in the client's list in any case: TLS 1.2 applies the list to the
 * certificate's curve too.) */
static void test_ecdhe_curve_follows_server_preference(void **state)
{
    static const struct {
        const char *offered;
        const char *key;
    } cases[] = {
        {"P-256:X25519", "Server Temp Key: X25519"},
        {"P-384:P-256", "Server Temp Key: ECDH, prime256v1"},
        {"P-256", "Server Temp Key: ECDH, prime256v1"},
    };
    tu_tls m;
    uint16_t port;
    tu_tls_from(&m, tu_pki());
    it_broker *b = tu_start(&m, "require_certificate false\nallow_anonymous true", NULL, &port);
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char *out = NULL;
        int rc = s_client(port, m.ca, &out, "-tls1_2", "-brief", "-groups", cases[i].offered, NULL);
        if (rc != 0)
            it_fail("s_client -groups %s exited %d:\n%s", cases[i].offered, rc, out);
        tu_expect_has(out, cases[i].key, cases[i].offered);
        free(out);
    }
    it_broker_stop(b);
}

/* An EC key of the configuration (server key, CAs, company CAs) is held
 * as an ECDSA key whose group keeps the generator's precomputed table,
 * built at load: handshakes then sign and check CA signatures without
 * rebuilding it. The converted keys still sign, verify and check the
 * chain and CRL; an RSA server key is left as it is. */
static void test_ec_keys_keep_generator_table(void **state)
{
    tu_tls m;
    tu_tls_from(&m, tu_pki());
    char cca[PATH_MAX];
    tu_fmt(cca, sizeof cca, "%s/ca.crt", tu_company_ca());
    tls_company_ca co = {"globex", cca};
    tls_settings s = {.certfile = m.cert, .keyfile = m.key, .cafile = m.ca, .crlfile = m.crl,
                      .company_cas = &co, .ncompany_cas = 1};
    tls_rng *rng = tls_rng_new();
    assert_non_null(rng);
    tls_server *t = NULL;
    char err[512];
    if (tls_server_new(&s, rng, NULL, &t, err, sizeof err))
        it_fail("tls_server_new: %s", err);
    const mbedtls_ssl_config *conf = tls_server_config(t);
    mbedtls_entropy_context entropy;
    mbedtls_ctr_drbg_context drbg;
    mbedtls_entropy_init(&entropy);
    mbedtls_ctr_drbg_init(&drbg);
    assert_int_equal(mbedtls_ctr_drbg_seed(&drbg, mbedtls_entropy_func, &entropy, NULL, 0), 0);

    mbedtls_pk_context *key = conf->key_cert->key;
    assert_int_equal(mbedtls_pk_get_type(key), MBEDTLS_PK_ECDSA);
    assert_non_null(mbedtls_pk_ec(*key)->grp.T);
    unsigned char hash[32] = {1, 2, 3}, sig[MBEDTLS_ECDSA_MAX_LEN];
    size_t slen = 0;
    assert_int_equal(mbedtls_pk_sign(key, MBEDTLS_MD_SHA256, hash, sizeof hash, sig, &slen,
                                     mbedtls_ctr_drbg_random, &drbg),
                     0);
    assert_int_equal(mbedtls_pk_verify(&conf->key_cert->cert->pk, MBEDTLS_MD_SHA256, hash,
                                       sizeof hash, sig, slen),
                     0);

    int ncas = 0;
    for (const mbedtls_x509_crt *ca = conf->ca_chain; ca && ca->raw.p; ca = ca->next, ncas++) {
        assert_int_equal(mbedtls_pk_get_type(&ca->pk), MBEDTLS_PK_ECDSA);
        assert_non_null(mbedtls_pk_ec(ca->pk)->grp.T);
    }
    assert_int_equal(ncas, 2); /* cafile and the company CA */

    /* A device of the main CA verifies against the chain and the CRL; a
     * revoked one is reported revoked. */
    tu_dev good, revoked;
    tu_device(&good, "acme", "gw-0001");
    tu_device(&revoked, "acme", "gw-revoked");
    mbedtls_x509_crt dev;
    uint32_t flags = 0;
    mbedtls_x509_crt_init(&dev);
    assert_int_equal(mbedtls_x509_crt_parse_file(&dev, good.crt), 0);
    assert_int_equal(mbedtls_x509_crt_verify(&dev, conf->ca_chain, conf->ca_crl, NULL, &flags,
                                             NULL, NULL),
                     0);
    mbedtls_x509_crt_free(&dev);
    mbedtls_x509_crt_init(&dev);
    assert_int_equal(mbedtls_x509_crt_parse_file(&dev, revoked.crt), 0);
    assert_int_not_equal(mbedtls_x509_crt_verify(&dev, conf->ca_chain, conf->ca_crl, NULL,
                                                 &flags, NULL, NULL),
                         0);
    assert_true(flags & MBEDTLS_X509_BADCERT_REVOKED);
    mbedtls_x509_crt_free(&dev);

    /* The company CA's own copy decides the company. */
    tu_dev g1;
    tu_device_in(&g1, tu_company_ca(), "whatever", "gw-g1");
    mbedtls_x509_crt_init(&dev);
    assert_int_equal(mbedtls_x509_crt_parse_file(&dev, g1.crt), 0);
    tls_identity id;
    if (tls_server_identity(t, &dev, &id, err, sizeof err))
        it_fail("tls_server_identity: %s", err);
    assert_string_equal(id.company, "globex");
    mbedtls_x509_crt_free(&dev);
    tls_server_unref(t);
    mbedtls_ctr_drbg_free(&drbg);
    mbedtls_entropy_free(&entropy);

    /* RSA server key: not an EC key, left alone. */
    tu_tls r;
    tu_tls_from(&r, tu_pki_rsa());
    tls_settings rs = {.certfile = r.cert, .keyfile = r.key};
    if (tls_server_new(&rs, rng, NULL, &t, err, sizeof err))
        it_fail("tls_server_new (RSA): %s", err);
    assert_int_equal(mbedtls_pk_get_type(tls_server_config(t)->key_cert->key), MBEDTLS_PK_RSA);
    tls_server_unref(t);
    tls_rng_free(rng);
}

/* With company CAs the issuing CA decides the company even of a
 * certificate its CRL lists: the identity does not check CRLs again (the
 * handshake and tls_server_is_revoked do), so it never falls back to the
 * subject's O for a company CA's certificate. */
static void test_company_ca_decides_company_of_listed_certificate(void **state)
{
    const char *co = tu_pki_copy(tu_company_ca());
    tu_cert("revoke", co, "whatever", "gw-g1", NULL);
    tu_tls m;
    tu_tls_from(&m, tu_pki());
    char cca[PATH_MAX], crl[PATH_MAX];
    tu_fmt(cca, sizeof cca, "%s/ca.crt", co);
    tu_fmt(crl, sizeof crl, "%s/crl.pem", co);
    tls_company_ca ca = {"globex", cca};
    tls_settings s = {.certfile = m.cert, .keyfile = m.key, .cafile = m.ca, .crlfile = crl,
                      .company_cas = &ca, .ncompany_cas = 1};
    tls_rng *rng = tls_rng_new();
    assert_non_null(rng);
    tls_server *t = NULL;
    char err[512];
    if (tls_server_new(&s, rng, NULL, &t, err, sizeof err))
        it_fail("tls_server_new: %s", err);
    tu_dev g1;
    tu_device_in(&g1, co, "whatever", "gw-g1");
    mbedtls_x509_crt dev;
    mbedtls_x509_crt_init(&dev);
    assert_int_equal(mbedtls_x509_crt_parse_file(&dev, g1.crt), 0);
    assert_true(tls_server_is_revoked(t, &dev));
    tls_identity id;
    if (tls_server_identity(t, &dev, &id, err, sizeof err))
        it_fail("tls_server_identity: %s", err);
    assert_string_equal(id.device, "gw-g1");
    assert_string_equal(id.company, "globex");
    mbedtls_x509_crt_free(&dev);
    tls_server_unref(t);
    tls_rng_free(rng);
}

/* A client offering only a CBC suite finds nothing in common. */
static void test_tls12_cbc_only_client_is_refused(void **state)
{
    tu_tls m;
    uint16_t port;
    tu_tls_from(&m, tu_pki());
    it_broker *b = tu_start(&m, "require_certificate false\nallow_anonymous true", NULL, &port);
    char *out = NULL;
    int rc = s_client(port, m.ca, &out, "-tls1_2", "-cipher",
                      "ECDHE-ECDSA-AES128-SHA256:ECDHE-ECDSA-AES128-SHA", NULL);
    if (rc == 0)
        it_fail("a CBC-only client negotiated:\n%s", out);
    free(out);
    tu_await_log(b, "TLS handshake from 127.0.0.1:");
    tu_log_has(b, "connection from 127.0.0.1:");
    tu_log_has(b, "closed: TLS handshake failed");
    it_broker_stop(b);
}

/* A session ticket from a first handshake resumes a second one. */
static void ticket_resumes(bool with_cert)
{
    tu_tls m;
    uint16_t port;
    tu_tls_from(&m, tu_pki());
    it_broker *b = tu_start(&m,
                            with_cert ? "require_certificate true"
                                      : "require_certificate false\nallow_anonymous true",
                            NULL, &port);
    tu_dev dev;
    tu_device(&dev, "acme", "gw-0001");
    char sess[PATH_MAX];
    tu_fmt(sess, sizeof sess, "%s/session.pem", tu_tempdir());
    char *out = NULL;
    int rc = with_cert ? s_client(port, m.ca, &out, "-tls1_2", "-sess_out", sess, "-cert",
                                  dev.crt, "-key", dev.key, NULL)
                       : s_client(port, m.ca, &out, "-tls1_2", "-sess_out", sess, NULL);
    if (rc != 0 || !tu_has(out, "New, TLSv1.2"))
        it_fail("first handshake (exit %d):\n%s", rc, out);
    tu_expect_has(out, "TLS session ticket", "first handshake");
    free(out);
    rc = with_cert ? s_client(port, m.ca, &out, "-tls1_2", "-sess_in", sess, "-cert", dev.crt,
                              "-key", dev.key, NULL)
                   : s_client(port, m.ca, &out, "-tls1_2", "-sess_in", sess, NULL);
    if (rc != 0 || !tu_has(out, "Reused, TLSv1.2"))
        it_fail("second handshake did not resume (exit %d):\n%s", rc, out);
    free(out);
    if (with_cert)
        tu_await_log_n(b, "device gw-0001 of company acme", 2, TU_TIMEOUT);
    it_broker_stop(b);
}

static void test_session_ticket_resumes_without_client_certificate(void **state)
{
    ticket_resumes(false);
}

static void test_session_ticket_resumes_with_client_certificate(void **state)
{
    ticket_resumes(true);
}

/* A resumed session skips certificate verification: a device revoked
 * since its ticket was issued must still be refused. */
static void test_resumed_session_of_revoked_device_is_refused(void **state)
{
    const char *pki = tu_pki_copy(tu_pki());
    tu_cert("device", pki, "acme", "gw-tick", NULL);
    tu_tls m;
    uint16_t port;
    tu_tls_from(&m, pki);
    it_broker *b = tu_start(&m, "require_certificate true", NULL, &port);
    tu_dev dev;
    tu_device_in(&dev, pki, "acme", "gw-tick");
    char sess[PATH_MAX];
    tu_fmt(sess, sizeof sess, "%s/session.pem", tu_tempdir());
    char *out = NULL;
    int rc = s_client(port, m.ca, &out, "-tls1_2", "-sess_out", sess, "-cert", dev.crt, "-key",
                      dev.key, NULL);
    if (rc != 0 || !tu_has(out, "New, TLSv1.2"))
        it_fail("first handshake (exit %d):\n%s", rc, out);
    free(out);
    tu_await_log(b, "device gw-tick of company acme");

    tu_cert("revoke", pki, "acme", "gw-tick", NULL);
    char crl[PATH_MAX];
    tu_fmt(crl, sizeof crl, "%s/crl.pem", pki);
    tu_copy(crl, m.crl);
    tu_reload(b, reloaded);

    rc = s_client(port, m.ca, &out, "-tls1_2", "-sess_in", sess, "-cert", dev.crt, "-key",
                  dev.key, NULL);
    /* The ticket is still good (keys survive a reload): the handshake
     * resumes, and only the broker's own check can refuse the device. */
    tu_expect_has(out, "Reused, TLSv1.2", "resumed handshake");
    free(out);
    tu_await_log(b, "refused: client certificate is revoked");
    if (tu_log_count(b, "device gw-tick of company acme") != 1)
        it_fail("the revoked device was identified again");
    it_broker_stop(b);
}

/* ---- handshake timeout --------------------------------------------------- */

/* A TCP connection that never starts the handshake is closed after
 * tls_handshake_timeout (1 s), well before connect_timeout (60 s), which
 * is longer than the wait here; meanwhile and afterwards others are
 * served. */
static void test_stalled_handshake_is_closed_after_tls_handshake_timeout(void **state)
{
    tu_tls m;
    uint16_t port;
    it_broker *b = cert_broker(&m, &port, "tls_handshake_timeout 1\nconnect_timeout 60");
    long t0 = it_now_ms();
    it_conn *stalled = it_connect(port);
    /* While it waits, a device is served over TLS. */
    tu_dev dev;
    tu_device(&dev, "acme", "gw-0001");
    char *out = NULL;
    int rc = tu_dev_pub(port, m.ca, &dev, "gw-0001", "it/hs", "x", &out);
    if (rc != 0)
        it_fail("a device was not served during a stalled handshake (exit %d):\n%s", rc, out);
    free(out);
    it_expect_closed(stalled, TU_TIMEOUT);
    long elapsed = it_now_ms() - t0;
    it_close(stalled);
    if (elapsed < 900)
        it_fail("closed after %ld ms, before tls_handshake_timeout (1 s)", elapsed);
    tu_await_log(b, "closed: TLS handshake timeout");
    assert_still_serving(b, port, m.ca);
    it_broker_stop(b);
}

/* Bytes of a handshake that starts and then stalls do not extend the
 * deadline: the connection is closed after tls_handshake_timeout too. */
static void test_partial_handshake_is_closed_after_tls_handshake_timeout(void **state)
{
    tu_tls m;
    uint16_t port;
    it_broker *b = cert_broker(&m, &port, "tls_handshake_timeout 1\nconnect_timeout 60");
    long t0 = it_now_ms();
    it_conn *stalled = it_connect(port);
    /* A TLS record header announcing a ClientHello that never comes. */
    IT_SEND(stalled, 0x16, 0x03, 0x01, 0x00, 0x80, 0x01, 0x00);
    it_expect_closed(stalled, TU_TIMEOUT);
    long elapsed = it_now_ms() - t0;
    it_close(stalled);
    if (elapsed < 900)
        it_fail("closed after %ld ms, before tls_handshake_timeout (1 s)", elapsed);
    tu_await_log(b, "closed: TLS handshake timeout");
    assert_still_serving(b, port, m.ca);
    it_broker_stop(b);
}

/* Once the handshake is done, tls_handshake_timeout no longer applies: a
 * client idle for 2 s before sending CONNECT is not closed by it (it goes
 * away by itself; connect_timeout is 10 s). */
static void test_completed_handshake_is_not_closed_by_handshake_timeout(void **state)
{
    tu_tls m;
    uint16_t port;
    tu_tls_from(&m, tu_pki());
    it_broker *b = tu_start(&m, "require_certificate false\nallow_anonymous true",
                            "tls_handshake_timeout 1", &port);
    char cmd[2 * PATH_MAX];
    /* The client itself stays idle for 2 s (its stdin ends then). */
    tu_fmt(cmd, sizeof cmd,
           "sleep 2 | openssl s_client -tls1_2 -connect 127.0.0.1:%u -CAfile %s", port, m.ca);
    const char *argv[] = { "sh", "-c", cmd, NULL };
    char *out = NULL;
    int rc = it_run(argv, TU_TIMEOUT, &out);
    if (rc != 0 || !tu_has(out, "New, TLSv1.2"))
        it_fail("s_client exited %d:\n%s", rc, out);
    free(out);
    tu_await_log(b, "closed: connection closed by peer");
    tu_log_lacks(b, "TLS handshake timeout");
    it_broker_stop(b);
}

/* ---- --check-config ----------------------------------------------------------- */

static void check_config_fails(const char *certfile, const char *keyfile, const char *expect1,
                               const char *expect2)
{
    char conf[4 * PATH_MAX];
    tu_fmt(conf, sizeof conf,
           "listener 8883 127.0.0.1\ncertfile %s\nkeyfile %s\ncafile %s/ca.crt\n"
           "require_certificate true\n",
           certfile, keyfile, tu_pki());
    char *path = it_temp_file("gatemq.conf", conf);
    const char *argv[] = { it_broker_bin(), "-c", path, "--check-config", NULL };
    char *out = NULL;
    int rc = it_run(argv, TU_TIMEOUT, &out);
    free(path);
    if (rc != 1)
        it_fail("--check-config exited %d (expected 1):\n%s", rc, out);
    tu_expect_has(out, expect1, "--check-config");
    tu_expect_has(out, expect2, "--check-config");
    tu_expect_has(out, "listener 8883", "--check-config");
    if (tu_has(out, "configuration OK"))
        it_fail("--check-config claims OK:\n%s", out);
    free(out);
}

static void test_check_config_reports_missing_certfile(void **state)
{
    char key[PATH_MAX];
    tu_fmt(key, sizeof key, "%s/server.key", tu_pki());
    check_config_fails("/nonexistent/gatemq/server.crt", key,
                       "certfile /nonexistent/gatemq/server.crt", "");
}

static void test_check_config_reports_key_not_matching_certificate(void **state)
{
    char cert[PATH_MAX], key[PATH_MAX];
    tu_fmt(cert, sizeof cert, "%s/server.crt", tu_pki());
    tu_fmt(key, sizeof key, "%s/devices/acme/gw-0001.key", tu_pki());
    check_config_fails(cert, key, "does not match certfile", key);
}

static void test_check_config_accepts_valid_tls_listener(void **state)
{
    char conf[4 * PATH_MAX];
    tu_fmt(conf, sizeof conf,
           "listener 8883 127.0.0.1\ncertfile %s/server.crt\nkeyfile %s/server.key\n"
           "cafile %s/ca.crt\ncrlfile %s/crl.pem\nrequire_certificate true\n",
           tu_pki(), tu_pki(), tu_pki(), tu_pki());
    char *path = it_temp_file("gatemq.conf", conf);
    const char *argv[] = { it_broker_bin(), "-c", path, "--check-config", NULL };
    char *out = NULL;
    int rc = it_run(argv, TU_TIMEOUT, &out);
    free(path);
    if (rc != 0 || !tu_has(out, "configuration OK"))
        it_fail("--check-config exited %d:\n%s", rc, out);
    free(out);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        TU_TEST(test_device_publishes_over_tls_and_subscriber_device_receives),
        TU_TEST(test_client_id_differing_from_certificate_cn_gets_connack_2),
        TU_TEST(test_empty_client_id_is_assigned_device_id),
        TU_TEST(test_device_certificate_ignores_username_and_password),
        TU_TEST(test_no_certificate_is_refused_on_require_certificate_listener),
        TU_TEST(test_certificate_from_another_ca_is_refused),
        TU_TEST(test_unverified_certificate_is_refused_where_certificates_are_optional),
        TU_TEST(test_expired_certificate_is_refused),
        TU_TEST(test_certificate_without_company_is_refused),
        TU_TEST(test_certificate_revoked_in_crl_at_start_is_refused),
        TU_TEST(test_certificate_company_ou_takes_company_from_ou),
        TU_TEST(test_certificate_company_san_uri_takes_company_from_uri),
        TU_TEST(test_company_ca_decides_company),
        TU_TEST(test_revoked_device_is_disconnected_at_reload_and_refused_after),
        TU_TEST(test_reload_with_unchanged_files_keeps_tls_client),
        TU_TEST(test_reload_with_broken_crl_keeps_old_material),
        TU_TEST(test_reload_with_mismatched_key_keeps_old_pair),
        TU_TEST(test_server_certificate_rotation_keeps_old_connection),
        TU_TEST(test_ecdsa_server_key_works),
        TU_TEST(test_rsa_server_key_works),
        TU_TEST(test_tls11_is_refused),
        TU_TEST(test_tls12_negotiates_ecdhe_aead_suite),
        TU_TEST(test_tls12_cbc_only_client_is_refused),
        TU_TEST(test_ecdhe_curve_follows_server_preference),
        TU_TEST(test_ec_keys_keep_generator_table),
        TU_TEST(test_company_ca_decides_company_of_listed_certificate),
        TU_TEST(test_session_ticket_resumes_without_client_certificate),
        TU_TEST(test_session_ticket_resumes_with_client_certificate),
        TU_TEST(test_resumed_session_of_revoked_device_is_refused),
        TU_TEST(test_stalled_handshake_is_closed_after_tls_handshake_timeout),
        TU_TEST(test_partial_handshake_is_closed_after_tls_handshake_timeout),
        TU_TEST(test_completed_handshake_is_not_closed_by_handshake_timeout),
        TU_TEST(test_check_config_reports_missing_certfile),
        TU_TEST(test_check_config_reports_key_not_matching_certificate),
        TU_TEST(test_check_config_accepts_valid_tls_listener),
    };
    return TU_RUN(tests);
}
