/*
 * tls_transport.c - the TLS transport: mbedtls over a connection's socket.
 *
 * The handshake runs on a handshake thread (handshake.c), or, without one,
 * inside recv, non-blocking, driven by the connection's read and write
 * watchers; either way only the socket and the mbedtls context are touched
 * until it completes. Then, on the loop thread, conn_tls_established() checks
 * the peer's certificate and reads its identity before any MQTT byte is
 * parsed. The connection holds a reference on the tls_server whose
 * configuration its mbedtls context uses.
 */
#include <errno.h>
#include <sys/socket.h>

#include <mbedtls/error.h>
#include <mbedtls/net_sockets.h>

#include "auth/tls.h"
#include "broker/alloc.h"
#include "broker/broker.h"
#include "broker/log.h"
#include "broker/tls_transport.h"

typedef struct tls_conn {
    mbedtls_ssl_context ssl;
    tls_server *srv;
    bool established;
    /* The device identity read from the peer certificate when the
     * handshake completed, on the thread that ran it (with company CAs it
     * costs a signature check), until the loop takes it; or why it could
     * not be read (NULL: no memory). */
    tls_identity *id;
    char *why;
    size_t write_pending; /* length of a write mbedtls must be re-called with */
} tls_conn;

static int bio_send(void *ctx, const unsigned char *buf, size_t len)
{
    conn *c = ctx;
    ssize_t n = send(c->fd, buf, len, MSG_NOSIGNAL);
    if (n >= 0)
        return (int)n;
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
        return MBEDTLS_ERR_SSL_WANT_WRITE;
    return MBEDTLS_ERR_NET_SEND_FAILED;
}

static int bio_recv(void *ctx, unsigned char *buf, size_t len)
{
    conn *c = ctx;
    ssize_t n = recv(c->fd, buf, len, 0);
    if (n >= 0)
        return (int)n;
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
        return MBEDTLS_ERR_SSL_WANT_READ;
    return MBEDTLS_ERR_NET_RECV_FAILED;
}

static void log_handshake_failure(conn *c, tls_conn *t, int rc)
{
    char text[256];
    uint32_t flags = mbedtls_ssl_get_verify_result(&t->ssl);
    if (rc == MBEDTLS_ERR_X509_CERT_VERIFY_FAILED && flags && flags != (uint32_t)-1) {
        tls_verify_reason(flags, text, sizeof(text));
        LOG_NOTICE("TLS handshake from %s refused: client certificate: %s", c->peer, text);
    } else if (rc == MBEDTLS_ERR_SSL_NO_CLIENT_CERTIFICATE) {
        LOG_NOTICE("TLS handshake from %s refused: no client certificate", c->peer);
    } else {
        tls_error_text(rc, text, sizeof(text));
        LOG_NOTICE("TLS handshake from %s failed: %s", c->peer, text);
    }
}

ptrdiff_t tls_transport_handshake(conn *c)
{
    tls_conn *t = c->tp_ctx;
    int rc = mbedtls_ssl_handshake(&t->ssl);
    if (rc == MBEDTLS_ERR_SSL_WANT_READ)
        return GMQ_IO_WANT_READ;
    if (rc == MBEDTLS_ERR_SSL_WANT_WRITE)
        return GMQ_IO_WANT_WRITE;
    if (rc) {
        log_handshake_failure(c, t, rc);
        return GMQ_IO_ERROR;
    }
    const mbedtls_x509_crt *peer = mbedtls_ssl_get_peer_cert(&t->ssl);
    /* Where a certificate is optional (require_certificate false: users
     * may log in without one), mbedtls completes the handshake even when a
     * presented certificate failed verification; such a certificate names
     * no one. A resumed session carries the result of its first check. */
    uint32_t flags = peer ? mbedtls_ssl_get_verify_result(&t->ssl) : 0;
    if (flags) {
        char text[256];
        tls_verify_reason(flags, text, sizeof(text));
        LOG_NOTICE("TLS handshake from %s refused: client certificate: %s", c->peer, text);
        return GMQ_IO_ERROR;
    }
    t->established = true;
    if (peer && (t->id = gmq_malloc(sizeof(*t->id))) != NULL) {
        char why[256];
        if (tls_server_identity(t->srv, peer, t->id, why, sizeof(why))) {
            gmq_free(t->id);
            t->id = NULL;
            t->why = gmq_strdup(why);
        }
    }
    return 0;
}

int tls_transport_established(conn *c)
{
    tls_conn *t = c->tp_ctx;
    tls_identity *id = t->id;
    t->id = NULL;
    int rc = conn_tls_established(c, t->srv, mbedtls_ssl_get_peer_cert(&t->ssl), id,
                                  t->why ? t->why : "no memory for its identity");
    gmq_free(t->why);
    t->why = NULL;
    return rc;
}

static ptrdiff_t tls_recv(conn *c, uint8_t *buf, size_t len)
{
    tls_conn *t = c->tp_ctx;
    if (!t->established) {
        ptrdiff_t rc = tls_transport_handshake(c);
        if (rc)
            return rc;
        if (tls_transport_established(c))
            return GMQ_IO_ERROR;
    }
    int rc = mbedtls_ssl_read(&t->ssl, buf, len);
    if (rc > 0)
        return rc;
    if (rc == MBEDTLS_ERR_SSL_WANT_READ)
        return GMQ_IO_WANT_READ;
    if (rc == MBEDTLS_ERR_SSL_WANT_WRITE)
        return GMQ_IO_WANT_WRITE;
    if (rc == 0 || rc == MBEDTLS_ERR_SSL_PEER_CLOSE_NOTIFY)
        return 0;
    if (rc != MBEDTLS_ERR_NET_RECV_FAILED) {
        char text[160];
        tls_error_text(rc, text, sizeof(text));
        LOG_INFO("TLS read from %s: %s", c->peer, text);
    }
    return GMQ_IO_ERROR;
}

static ptrdiff_t tls_send(conn *c, const uint8_t *buf, size_t len)
{
    tls_conn *t = c->tp_ctx;
    if (!t->established)
        return GMQ_IO_WANT_READ; /* nothing is sent before the handshake ends */
    /* After WANT_WRITE mbedtls holds an encrypted record of the first
     * write_pending bytes and must be called again with that length. */
    if (t->write_pending)
        len = t->write_pending;
    int rc = mbedtls_ssl_write(&t->ssl, buf, len);
    if (rc >= 0) {
        t->write_pending = 0;
        return rc;
    }
    if (rc == MBEDTLS_ERR_SSL_WANT_WRITE || rc == MBEDTLS_ERR_SSL_WANT_READ) {
        if (!t->write_pending) {
            int max = mbedtls_ssl_get_max_out_record_payload(&t->ssl);
            t->write_pending = max > 0 && (size_t)max < len ? (size_t)max : len;
        }
        return rc == MBEDTLS_ERR_SSL_WANT_WRITE ? GMQ_IO_WANT_WRITE : GMQ_IO_WANT_READ;
    }
    return GMQ_IO_ERROR;
}

static bool tls_pending(conn *c)
{
    tls_conn *t = c->tp_ctx;
    return t->established && mbedtls_ssl_get_bytes_avail(&t->ssl) > 0;
}

static void tls_free(conn *c)
{
    tls_conn *t = c->tp_ctx;
    if (!t)
        return;
    if (t->established)
        mbedtls_ssl_close_notify(&t->ssl); /* best effort, non-blocking */
    mbedtls_ssl_free(&t->ssl);
    gmq_free(t->id);
    gmq_free(t->why);
    tls_server_unref(t->srv);
    gmq_free(t);
    c->tp_ctx = NULL;
}

const transport_ops gmq_tls_transport = {
    .name = "tls",
    .recv = tls_recv,
    .send = tls_send,
    .pending = tls_pending,
    .free = tls_free,
};

int tls_transport_attach(conn *c, tls_server *srv)
{
    tls_conn *t = gmq_calloc(1, sizeof(*t));
    if (!t)
        return -1;
    mbedtls_ssl_init(&t->ssl);
    if (mbedtls_ssl_setup(&t->ssl, tls_server_config(srv)) != 0) {
        mbedtls_ssl_free(&t->ssl);
        gmq_free(t);
        return -1;
    }
    mbedtls_ssl_set_bio(&t->ssl, c, bio_send, bio_recv, NULL);
    t->srv = tls_server_ref(srv);
    c->tp = &gmq_tls_transport;
    c->tp_ctx = t;
    return 0;
}

const mbedtls_x509_crt *tls_transport_peer_cert(const conn *c)
{
    if (c->tp != &gmq_tls_transport)
        return NULL;
    const tls_conn *t = c->tp_ctx;
    return t->established ? mbedtls_ssl_get_peer_cert(&t->ssl) : NULL;
}
