/*
 * tenant_util.c - see tenant_util.h.
 */
#include "tenant_util.h"
#include "tls_util.h"

#include <errno.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

#include <mbedtls/ctr_drbg.h>
#include <mbedtls/entropy.h>
#include <mbedtls/error.h>
#include <mbedtls/net_sockets.h>
#include <mbedtls/pk.h>
#include <mbedtls/ssl.h>
#include <mbedtls/x509_crt.h>

#define TN_DIR_PREFIX "/tmp/gatemq-tenancy."
#define TN_MAX_CONNS 256

struct tn_conn {
    bool tls;
    int fd; /* plain connections */
    mbedtls_net_context net;
    mbedtls_ssl_context ssl;
    mbedtls_ssl_config conf;
    mbedtls_x509_crt ca, crt;
    mbedtls_pk_context key;
    char name[160];
    uint8_t *rbuf; /* received, not yet split into frames */
    size_t rlen, rcap;
    uint8_t *frame; /* copy of the last frame handed out */
    size_t frame_cap;
    uint16_t next_id;
    tn_msg *inbox; /* PUBLISH packets received, not yet taken */
    size_t in_head, in_len, in_cap;
};

static char tn_root[PATH_MAX];
static char tn_pki_dir[PATH_MAX];
static char tn_script[PATH_MAX];
static tn_conn *tn_conns[TN_MAX_CONNS];

static bool tn_rng_ready;
static mbedtls_entropy_context tn_entropy;
static mbedtls_ctr_drbg_context tn_drbg;

/* ---- program set-up --------------------------------------------------------- */

static bool find_script(void)
{
    return it_repo_path("tools/gatemq-cert", tn_script, sizeof tn_script);
}

/* gatemq-cert with up to 4 arguments after the command and directory. */
static bool cert(const char *cmd, const char *a1, const char *a2, const char *a3)
{
    const char *argv[] = { "sh", tn_script, cmd, tn_pki_dir, a1, a2, a3, NULL };
    char *out = NULL;
    int rc = it__run(argv, 120000, &out);
    if (rc != 0)
        print_error("gatemq-cert %s %s failed (%d):\n%s\n", cmd, a1 ? a1 : "", rc,
                    out ? out : "");
    free(out);
    return rc == 0;
}

int tn_group_setup(void **state)
{
    if (it_group_setup(state) != 0)
        return -1;
    if (!find_script()) {
        print_error("tools/gatemq-cert not found: set GATEMQ_SRC to the repository\n");
        return -1;
    }
    char tmpl[] = TN_DIR_PREFIX "XXXXXX";
    if (!mkdtemp(tmpl)) {
        print_error("mkdtemp: %s\n", strerror(errno));
        return -1;
    }
    snprintf(tn_root, sizeof tn_root, "%s", tmpl);
    snprintf(tn_pki_dir, sizeof tn_pki_dir, "%.4000s/pki", tn_root);
    if (!cert("ca", NULL, NULL, NULL) || !cert("server", "localhost", "127.0.0.1", NULL) ||
        !cert("device", "acme", "gw-1", NULL) || !cert("device", "acme", "gw-2", NULL) ||
        !cert("device", "acme", "gw-3", NULL) || !cert("device", "globex", "gw-1", NULL) ||
        !cert("device", "globex", "gw-2", NULL))
        return -1;
    mbedtls_entropy_init(&tn_entropy);
    mbedtls_ctr_drbg_init(&tn_drbg);
    static const unsigned char pers[] = "gatemq it_tenancy";
    if (mbedtls_ctr_drbg_seed(&tn_drbg, mbedtls_entropy_func, &tn_entropy, pers,
                              sizeof pers - 1) != 0) {
        print_error("mbedtls_ctr_drbg_seed failed\n");
        return -1;
    }
    tn_rng_ready = true;
    return 0;
}

int tn_group_teardown(void **state)
{
    (void)state;
    if (tn_root[0] && strncmp(tn_root, TN_DIR_PREFIX, strlen(TN_DIR_PREFIX)) == 0)
        it_remove_tree(tn_root);
    if (tn_rng_ready) {
        mbedtls_ctr_drbg_free(&tn_drbg);
        mbedtls_entropy_free(&tn_entropy);
        tn_rng_ready = false;
    }
    return 0;
}

static void conn_free(tn_conn *c);

int tn_teardown(void **state)
{
    for (size_t i = 0; i < TN_MAX_CONNS; i++)
        if (tn_conns[i])
            conn_free(tn_conns[i]);
    return it_teardown(state);
}

const char *tn_pki(void)
{
    return tn_pki_dir;
}

it_broker *tn__start(const char *extra, uint16_t *tls_port)
{
    tu_tls m;
    memset(&m, 0, sizeof m);
    snprintf(m.dir, sizeof m.dir, "%s", tn_pki_dir);
    tu__fmt(m.cert, sizeof m.cert, "%s/server.crt", tn_pki_dir);
    tu__fmt(m.key, sizeof m.key, "%s/server.key", tn_pki_dir);
    tu__fmt(m.ca, sizeof m.ca, "%s/ca.crt", tn_pki_dir);
    tu__fmt(m.crl, sizeof m.crl, "%s/crl.pem", tn_pki_dir);
    return tu__start(&m, "require_certificate true", extra, tls_port);
}

/* ---- connections: set-up and teardown ---------------------------------------- */

static void reg_add(tn_conn *c)
{
    for (size_t i = 0; i < TN_MAX_CONNS; i++) {
        if (!tn_conns[i]) {
            tn_conns[i] = c;
            return;
        }
    }
    it_fail("tenant_util: more than %d live connections", TN_MAX_CONNS);
}

static void reg_del(tn_conn *c)
{
    for (size_t i = 0; i < TN_MAX_CONNS; i++)
        if (tn_conns[i] == c)
            tn_conns[i] = NULL;
}

void tn_msg_free(tn_msg *m)
{
    free(m->topic);
    free(m->payload);
    m->topic = m->payload = NULL;
}

static void conn_free(tn_conn *c)
{
    if (!c)
        return;
    reg_del(c);
    if (c->tls) {
        mbedtls_ssl_free(&c->ssl);
        mbedtls_ssl_config_free(&c->conf);
        mbedtls_x509_crt_free(&c->ca);
        mbedtls_x509_crt_free(&c->crt);
        mbedtls_pk_free(&c->key);
        mbedtls_net_free(&c->net); /* closes the socket, no close_notify */
    } else if (c->fd >= 0) {
        close(c->fd);
    }
    for (size_t i = 0; i < c->in_len; i++)
        tn_msg_free(&c->inbox[(c->in_head + i) % c->in_cap]);
    free(c->inbox);
    free(c->rbuf);
    free(c->frame);
    free(c);
}

static tn_conn *conn_new(void)
{
    tn_conn *c = calloc(1, sizeof *c);
    if (!c)
        it_fail("out of memory");
    c->fd = -1;
    c->next_id = 1;
    reg_add(c);
    return c;
}

static void tls_fail(const char *what, int rc)
{
    char text[200];
    mbedtls_strerror(rc, text, sizeof text);
    it_fail("%s: -0x%04x %s", what, (unsigned)-rc, text);
}

tn_conn *tn__open_tls(uint16_t port, const char *company, const char *device)
{
    tn_conn *c = conn_new();
    c->tls = true;
    snprintf(c->name, sizeof c->name, "%s/%s", company, device);
    mbedtls_net_init(&c->net);
    mbedtls_ssl_init(&c->ssl);
    mbedtls_ssl_config_init(&c->conf);
    mbedtls_x509_crt_init(&c->ca);
    mbedtls_x509_crt_init(&c->crt);
    mbedtls_pk_init(&c->key);

    char path[PATH_MAX];
    int rc;
    tu__fmt(path, sizeof path, "%s/ca.crt", tn_pki_dir);
    if ((rc = mbedtls_x509_crt_parse_file(&c->ca, path)) != 0)
        tls_fail(path, rc);
    tu__fmt(path, sizeof path, "%s/devices/%s/%s.crt", tn_pki_dir, company, device);
    if ((rc = mbedtls_x509_crt_parse_file(&c->crt, path)) != 0)
        tls_fail(path, rc);
    tu__fmt(path, sizeof path, "%s/devices/%s/%s.key", tn_pki_dir, company, device);
    if ((rc = mbedtls_pk_parse_keyfile(&c->key, path, NULL)) != 0)
        tls_fail(path, rc);

    if ((rc = mbedtls_ssl_config_defaults(&c->conf, MBEDTLS_SSL_IS_CLIENT,
                                          MBEDTLS_SSL_TRANSPORT_STREAM,
                                          MBEDTLS_SSL_PRESET_DEFAULT)) != 0)
        tls_fail("mbedtls_ssl_config_defaults", rc);
    mbedtls_ssl_conf_authmode(&c->conf, MBEDTLS_SSL_VERIFY_REQUIRED);
    mbedtls_ssl_conf_ca_chain(&c->conf, &c->ca, NULL);
    if ((rc = mbedtls_ssl_conf_own_cert(&c->conf, &c->crt, &c->key)) != 0)
        tls_fail("mbedtls_ssl_conf_own_cert", rc);
    mbedtls_ssl_conf_rng(&c->conf, mbedtls_ctr_drbg_random, &tn_drbg);
    mbedtls_ssl_conf_read_timeout(&c->conf, TN_TIMEOUT);
    if ((rc = mbedtls_ssl_setup(&c->ssl, &c->conf)) != 0)
        tls_fail("mbedtls_ssl_setup", rc);
    if ((rc = mbedtls_ssl_set_hostname(&c->ssl, "localhost")) != 0)
        tls_fail("mbedtls_ssl_set_hostname", rc);

    char portstr[8];
    snprintf(portstr, sizeof portstr, "%u", port);
    if ((rc = mbedtls_net_connect(&c->net, "127.0.0.1", portstr, MBEDTLS_NET_PROTO_TCP)) != 0)
        tls_fail("connect", rc);
    int one = 1;
    setsockopt(c->net.fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    /* A broker that stops reading must fail the test, not hang it. */
    struct timeval tv = { 10, 0 };
    setsockopt(c->net.fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    mbedtls_ssl_set_bio(&c->ssl, &c->net, mbedtls_net_send, NULL, mbedtls_net_recv_timeout);
    long deadline = it_now_ms() + TN_TIMEOUT;
    while ((rc = mbedtls_ssl_handshake(&c->ssl)) != 0) {
        if ((rc != MBEDTLS_ERR_SSL_WANT_READ && rc != MBEDTLS_ERR_SSL_WANT_WRITE) ||
            it_now_ms() > deadline)
            tls_fail("TLS handshake", rc);
    }
    return c;
}

tn_conn *tn__open_plain(uint16_t port)
{
    tn_conn *c = conn_new();
    snprintf(c->name, sizeof c->name, "platform");
    c->fd = socket(AF_INET, SOCK_STREAM, 0);
    if (c->fd < 0)
        it_fail("socket: %s", strerror(errno));
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(port) };
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(c->fd, (struct sockaddr *)&a, sizeof a) != 0)
        it_fail("connect to port %u: %s", port, strerror(errno));
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct timeval tv = { 10, 0 };
    setsockopt(c->fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    return c;
}

const char *tn_name(const tn_conn *c)
{
    return c->name;
}

void tn_drop(tn_conn *c)
{
    conn_free(c);
}

/* ---- connections: bytes --------------------------------------------------------- */

static bool send_all(tn_conn *c, const void *bytes, size_t n)
{
    const uint8_t *p = bytes;
    while (n > 0) {
        if (c->tls) {
            int w = mbedtls_ssl_write(&c->ssl, p, n);
            if (w == MBEDTLS_ERR_SSL_WANT_READ || w == MBEDTLS_ERR_SSL_WANT_WRITE)
                continue;
            if (w <= 0)
                return false;
            p += w;
            n -= (size_t)w;
        } else {
            return it_send_fd(c->fd, p, n);
        }
    }
    return true;
}

void tn__send_raw(tn_conn *c, const void *bytes, size_t n)
{
    if (!send_all(c, bytes, n))
        it_fail("%s: send of %zu bytes failed", c->name, n);
}

/* Read what is available before deadline into rbuf: > 0 bytes, 0 timeout,
 * -1 closed or reset. */
static int fill(tn_conn *c, long deadline)
{
    if (c->rcap - c->rlen < 16384) {
        size_t ncap = c->rcap ? c->rcap * 2 : 65536;
        uint8_t *nb = realloc(c->rbuf, ncap);
        if (!nb)
            it_fail("out of memory");
        c->rbuf = nb;
        c->rcap = ncap;
    }
    for (;;) {
        long left = deadline - it_now_ms();
        if (left < 1)
            left = 1; /* 0 would mean "wait forever" to mbedtls */
        if (c->tls) {
            if (mbedtls_ssl_get_bytes_avail(&c->ssl) == 0)
                mbedtls_ssl_conf_read_timeout(&c->conf, (uint32_t)left);
            int r = mbedtls_ssl_read(&c->ssl, c->rbuf + c->rlen, c->rcap - c->rlen);
            if (r == MBEDTLS_ERR_SSL_WANT_READ || r == MBEDTLS_ERR_SSL_WANT_WRITE)
                continue;
            if (r == MBEDTLS_ERR_SSL_TIMEOUT)
                return 0;
            if (r <= 0)
                return -1;
            c->rlen += (size_t)r;
            return r;
        }
        struct pollfd pfd = { c->fd, POLLIN, 0 };
        int pr = poll(&pfd, 1, (int)left);
        if (pr < 0 && errno == EINTR)
            continue;
        if (pr == 0)
            return 0;
        ssize_t r = recv(c->fd, c->rbuf + c->rlen, c->rcap - c->rlen, 0);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return -1;
        c->rlen += (size_t)r;
        return (int)r;
    }
}

/* One whole frame: 1 (f points into c->frame), 0 timeout, -1 closed. */
static int next_frame(tn_conn *c, mqtt_frame *f, long deadline)
{
    for (;;) {
        mqtt_frame tmp;
        ptrdiff_t r = mqtt_frame_split(c->rbuf, c->rlen, (size_t)MQTT_MAX_REMAINING_LENGTH + 5,
                                       &tmp);
        if (r < 0) {
            it_hexdump("received", c->rbuf, c->rlen);
            it_fail("%s: broker sent an invalid frame: %s", c->name, mqtt_strerror((int)r));
        }
        if (r > 0) {
            if (c->frame_cap < (size_t)r) {
                uint8_t *nf = realloc(c->frame, (size_t)r);
                if (!nf)
                    it_fail("out of memory");
                c->frame = nf;
                c->frame_cap = (size_t)r;
            }
            memcpy(c->frame, c->rbuf, (size_t)r);
            *f = tmp;
            f->body = c->frame + tmp.header_len;
            memmove(c->rbuf, c->rbuf + r, c->rlen - (size_t)r);
            c->rlen -= (size_t)r;
            return 1;
        }
        int got = fill(c, deadline);
        if (got <= 0)
            return got;
    }
}

static char *dup_span(mqtt_span s)
{
    char *p = malloc(s.len + 1);
    if (!p)
        it_fail("out of memory");
    if (s.len)
        memcpy(p, s.ptr, s.len);
    p[s.len] = '\0';
    return p;
}

static void inbox_push(tn_conn *c, const mqtt_publish *p)
{
    if (c->in_len == c->in_cap) {
        size_t ncap = c->in_cap ? c->in_cap * 2 : 16;
        tn_msg *v = malloc(ncap * sizeof *v);
        if (!v)
            it_fail("out of memory");
        for (size_t i = 0; i < c->in_len; i++)
            v[i] = c->inbox[(c->in_head + i) % c->in_cap];
        free(c->inbox);
        c->inbox = v;
        c->in_cap = ncap;
        c->in_head = 0;
    }
    tn_msg *m = &c->inbox[(c->in_head + c->in_len) % c->in_cap];
    m->topic = dup_span(p->topic);
    m->topic_len = p->topic.len;
    m->payload = dup_span(p->payload);
    m->payload_len = p->payload.len;
    m->qos = p->qos;
    m->retain = p->retain;
    m->dup = p->dup;
    c->in_len++;
}

static bool inbox_pop(tn_conn *c, tn_msg *m)
{
    if (!c->in_len)
        return false;
    *m = c->inbox[c->in_head];
    c->in_head = (c->in_head + 1) % c->in_cap;
    c->in_len--;
    return true;
}

size_t tn_inbox_len(const tn_conn *c)
{
    return c->in_len;
}

static void send_id(tn_conn *c, uint8_t first, uint16_t id)
{
    uint8_t b[4] = { first, 0x02, (uint8_t)(id >> 8), (uint8_t)id };
    tn__send_raw(c, b, 4);
}

/* Read one frame. A PUBLISH is decoded, acknowledged and put in the inbox; a
 * PUBREL is answered. Returns the frame's type (f filled), 0 on timeout, -1
 * when the connection closed. */
static int step(tn_conn *c, mqtt_frame *f, long deadline)
{
    int r = next_frame(c, f, deadline);
    if (r <= 0)
        return r;
    if (f->type == MQTT_PUBLISH) {
        mqtt_publish p;
        int err = mqtt_decode_publish(f, &p);
        if (err) {
            it_hexdump("received", f->body - f->header_len, f->header_len + f->body_len);
            it_fail("%s: broker sent a PUBLISH that does not decode: %s", c->name,
                    mqtt_strerror(err));
        }
        inbox_push(c, &p);
        if (p.qos == 1)
            send_id(c, 0x40, p.packet_id);
        else if (p.qos == 2)
            send_id(c, 0x50, p.packet_id);
    } else if (f->type == MQTT_PUBREL) {
        uint16_t id;
        if (mqtt_decode_packet_id(f, &id))
            it_fail("%s: bad PUBREL", c->name);
        send_id(c, 0x70, id);
    }
    return f->type;
}

/* The next packet other than PUBLISH / PUBREL. */
static void await_packet(tn_conn *c, mqtt_frame *f, const char *what)
{
    long deadline = it_now_ms() + TN_TIMEOUT;
    for (;;) {
        int t = step(c, f, deadline);
        if (t == 0)
            it_fail("%s: no %s within %d ms", c->name, what, TN_TIMEOUT);
        if (t < 0)
            it_fail("%s: connection closed while waiting for %s", c->name, what);
        if (t != MQTT_PUBLISH && t != MQTT_PUBREL)
            return;
    }
}

static void expect_packet(tn_conn *c, const uint8_t *exp, size_t n, const char *what)
{
    mqtt_frame f;
    await_packet(c, &f, what);
    const uint8_t *raw = f.body - f.header_len;
    size_t len = f.header_len + f.body_len;
    if (len != n || memcmp(raw, exp, n) != 0) {
        it_hexdump("expected", exp, n);
        it_hexdump("received", raw, len);
        it_fail("%s: expected %s", c->name, what);
    }
}

static uint16_t next_id(tn_conn *c)
{
    uint16_t id = c->next_id++;
    if (c->next_id == 0)
        c->next_id = 1;
    return id;
}

static mqtt_span span_of(const char *s)
{
    return (mqtt_span){ (const uint8_t *)s, s ? strlen(s) : 0 };
}

/* ---- MQTT ------------------------------------------------------------------ */

bool tn__connect(tn_conn *c, const char *client_id, bool clean, const it_will *will)
{
    mqtt_connect m = { 0 };
    m.clean_session = clean;
    m.keep_alive = 0;
    m.client_id = span_of(client_id ? client_id : "");
    if (will) {
        m.will_flag = true;
        m.will_qos = will->qos;
        m.will_retain = will->retain;
        m.will_topic = span_of(will->topic);
        m.will_payload = span_of(will->payload);
    }
    size_t n = mqtt_encode_connect(NULL, 0, &m);
    uint8_t *buf = malloc(n);
    mqtt_encode_connect(buf, n, &m);
    bool ok = send_all(c, buf, n);
    free(buf);
    if (!ok)
        it_fail("%s: send CONNECT failed", c->name);
    mqtt_frame f;
    long deadline = it_now_ms() + TN_TIMEOUT;
    int t = step(c, &f, deadline);
    if (t <= 0)
        it_fail("%s: no CONNACK for client id '%s': %s", c->name, client_id,
                t == 0 ? "timeout" : "connection closed");
    const uint8_t *raw = f.body - f.header_len;
    if (t != MQTT_CONNACK || f.header_len != 2 || f.body_len != 2 || raw[0] != 0x20 ||
        f.body[0] > 1 || f.body[1] != 0) {
        it_hexdump("received", raw, f.header_len + f.body_len);
        it_fail("%s: expected CONNACK 20 02 0x 00 for client id '%s'", c->name, client_id);
    }
    return f.body[0] == 1;
}

tn_conn *tn__device(uint16_t port, const char *company, const char *device, bool clean,
                    bool expect_sp)
{
    tn_conn *c = tn__open_tls(port, company, device);
    bool sp = tn__connect(c, device, clean, NULL);
    if (sp != expect_sp)
        it_fail("%s: CONNACK session present %d, expected %d", c->name, sp, expect_sp);
    return c;
}

tn_conn *tn__platform(uint16_t port, const char *client_id)
{
    tn_conn *c = tn__open_plain(port);
    if (tn__connect(c, client_id, true, NULL))
        it_fail("platform client %s: session present with clean session", client_id);
    snprintf(c->name, sizeof c->name, "platform %s", client_id);
    return c;
}

void tn__subscribe_n(tn_conn *c, const char *const *filters, size_t n, uint8_t qos)
{
    if (n == 0 || n > 64)
        it_fail("tenant_util: 1..64 filters per SUBSCRIBE");
    mqtt_span spans[64];
    uint8_t q[64];
    for (size_t i = 0; i < n; i++) {
        spans[i] = span_of(filters[i]);
        q[i] = qos;
    }
    uint16_t id = next_id(c);
    size_t len = mqtt_encode_subscribe(NULL, 0, id, spans, q, n);
    uint8_t *buf = malloc(len);
    mqtt_encode_subscribe(buf, len, id, spans, q, n);
    bool ok = send_all(c, buf, len);
    free(buf);
    if (!ok)
        it_fail("%s: send SUBSCRIBE failed", c->name);
    uint8_t exp[4 + 64];
    exp[0] = 0x90;
    exp[1] = (uint8_t)(2 + n);
    exp[2] = (uint8_t)(id >> 8);
    exp[3] = (uint8_t)id;
    memset(exp + 4, qos, n);
    expect_packet(c, exp, 4 + n, "SUBACK granting every filter");
}

void tn__unsubscribe(tn_conn *c, const char *filter)
{
    mqtt_span s = span_of(filter);
    uint16_t id = next_id(c);
    size_t len = mqtt_encode_unsubscribe(NULL, 0, id, &s, 1);
    uint8_t *buf = malloc(len);
    mqtt_encode_unsubscribe(buf, len, id, &s, 1);
    bool ok = send_all(c, buf, len);
    free(buf);
    if (!ok)
        it_fail("%s: send UNSUBSCRIBE failed", c->name);
    uint8_t exp[4] = { 0xb0, 0x02, (uint8_t)(id >> 8), (uint8_t)id };
    expect_packet(c, exp, 4, "UNSUBACK");
}

void tn__publish(tn_conn *c, const char *topic, const char *payload, uint8_t qos, bool retain)
{
    uint16_t id = qos ? next_id(c) : 0;
    mqtt_publish p = { .topic = span_of(topic),
                       .payload = span_of(payload),
                       .qos = qos,
                       .retain = retain,
                       .packet_id = id };
    size_t n = mqtt_encode_publish(NULL, 0, &p);
    uint8_t *buf = malloc(n);
    mqtt_encode_publish(buf, n, &p);
    bool ok = send_all(c, buf, n);
    free(buf);
    if (!ok)
        it_fail("%s: send PUBLISH failed", c->name);
    uint8_t hi = (uint8_t)(id >> 8), lo = (uint8_t)id;
    if (qos == 1) {
        uint8_t puback[4] = { 0x40, 0x02, hi, lo };
        expect_packet(c, puback, 4, "PUBACK");
    } else if (qos == 2) {
        uint8_t pubrec[4] = { 0x50, 0x02, hi, lo };
        uint8_t pubcomp[4] = { 0x70, 0x02, hi, lo };
        expect_packet(c, pubrec, 4, "PUBREC");
        send_id(c, 0x62, id);
        expect_packet(c, pubcomp, 4, "PUBCOMP");
    }
}

int tn_recv(tn_conn *c, tn_msg *m, int timeout_ms)
{
    long deadline = it_now_ms() + timeout_ms;
    for (;;) {
        if (inbox_pop(c, m))
            return 1;
        mqtt_frame f;
        int t = step(c, &f, deadline);
        if (t <= 0)
            return t;
        if (t != MQTT_PUBLISH && t != MQTT_PUBREL) {
            it_hexdump("received", f.body - f.header_len, f.header_len + f.body_len);
            it_fail("%s: expected PUBLISH, got %s", c->name, mqtt_type_name(f.type));
        }
    }
}

void tn__expect(tn_conn *c, const char *topic, const char *payload, uint8_t qos, bool retain)
{
    tn_msg m;
    int r = tn_recv(c, &m, TN_TIMEOUT);
    if (r <= 0)
        it_fail("%s: %s instead of PUBLISH '%s' '%s'", c->name,
                r == 0 ? "nothing within the deadline" : "connection closed", topic, payload);
    bool same = strcmp(m.topic, topic) == 0 && m.topic_len == strlen(topic) &&
                strcmp(m.payload, payload) == 0 && m.payload_len == strlen(payload) &&
                m.qos == qos && m.retain == retain && !m.dup;
    if (!same) {
        print_error("  expected: topic '%s' payload '%s' qos %u retain %d dup 0\n", topic,
                    payload, qos, retain);
        print_error("  received: topic '%s' payload '%s' qos %u retain %d dup %d\n", m.topic,
                    m.payload, m.qos, m.retain, m.dup);
        tn_msg_free(&m);
        it_fail("%s: PUBLISH differs from the expected one", c->name);
    }
    tn_msg_free(&m);
}

static void fail_publish(tn_conn *c, const char *why)
{
    tn_msg m;
    if (inbox_pop(c, &m)) {
        print_error("  %s received: topic '%s' payload '%s' qos %u retain %d\n", c->name,
                    m.topic, m.payload, m.qos, m.retain);
        tn_msg_free(&m);
    }
    it_fail("%s: %s", c->name, why);
}

void tn__expect_quiet(tn_conn *c, int ms)
{
    if (c->in_len)
        fail_publish(c, "expected nothing, but a PUBLISH had already arrived");
    long deadline = it_now_ms() + ms;
    mqtt_frame f;
    int t = step(c, &f, deadline);
    if (t == 0)
        return;
    if (t < 0)
        it_fail("%s: expected nothing, but the broker closed the connection", c->name);
    if (t == MQTT_PUBLISH)
        fail_publish(c, "expected nothing, but a PUBLISH arrived");
    it_hexdump("received", f.body - f.header_len, f.header_len + f.body_len);
    it_fail("%s: expected nothing, got %s", c->name, mqtt_type_name(f.type));
}

static void ping(tn_conn *c, bool strict)
{
    if (strict && c->in_len)
        fail_publish(c, "a PUBLISH arrived before the barrier");
    static const uint8_t pingreq[2] = { 0xc0, 0x00 };
    tn__send_raw(c, pingreq, 2);
    static const uint8_t pingresp[2] = { 0xd0, 0x00 };
    expect_packet(c, pingresp, 2, "PINGRESP");
    if (strict && c->in_len)
        fail_publish(c, "a PUBLISH arrived before PINGRESP");
}

void tn__barrier(tn_conn *c)
{
    ping(c, true);
}

void tn__ping(tn_conn *c)
{
    ping(c, false);
}

void tn__expect_closed(tn_conn *c, int timeout_ms)
{
    long deadline = it_now_ms() + timeout_ms;
    for (;;) {
        mqtt_frame f;
        int t = step(c, &f, deadline);
        if (t < 0)
            break;
        if (t == 0)
            it_fail("%s: still open after %d ms", c->name, timeout_ms);
        if (t == MQTT_PUBLISH)
            fail_publish(c, "expected the connection to close, but a PUBLISH arrived");
        if (t != MQTT_PUBREL) {
            it_hexdump("received", f.body - f.header_len, f.header_len + f.body_len);
            it_fail("%s: expected the connection to close, got %s", c->name,
                    mqtt_type_name(f.type));
        }
    }
    conn_free(c);
}

void tn__disconnect(tn_conn *c)
{
    static const uint8_t disconnect[2] = { 0xe0, 0x00 };
    tn__send_raw(c, disconnect, 2);
    tn__expect_closed(c, TN_TIMEOUT);
}

/* ---- raw packets ------------------------------------------------------------ */

static size_t put_remaining(uint8_t *p, size_t r)
{
    size_t n = 0;
    do {
        uint8_t byte = r & 0x7f;
        r >>= 7;
        p[n++] = r ? (uint8_t)(byte | 0x80) : byte;
    } while (r);
    return n;
}

uint8_t *tn_raw_publish(const char *topic, const char *payload, uint8_t qos, uint16_t id,
                        size_t *n)
{
    size_t tlen = strlen(topic), plen = strlen(payload);
    size_t rem = 2 + tlen + (qos ? 2 : 0) + plen;
    uint8_t *b = malloc(5 + rem);
    if (!b)
        it_fail("out of memory");
    size_t pos = 0;
    b[pos++] = (uint8_t)(0x30 | (qos << 1));
    pos += put_remaining(b + pos, rem);
    b[pos++] = (uint8_t)(tlen >> 8);
    b[pos++] = (uint8_t)tlen;
    memcpy(b + pos, topic, tlen);
    pos += tlen;
    if (qos) {
        b[pos++] = (uint8_t)(id >> 8);
        b[pos++] = (uint8_t)id;
    }
    memcpy(b + pos, payload, plen);
    *n = pos + plen;
    return b;
}

uint8_t *tn_raw_subscribe(const char *filter, uint8_t qos, uint16_t id, size_t *n)
{
    size_t flen = strlen(filter);
    size_t rem = 2 + 2 + flen + 1;
    uint8_t *b = malloc(5 + rem);
    if (!b)
        it_fail("out of memory");
    size_t pos = 0;
    b[pos++] = 0x82;
    pos += put_remaining(b + pos, rem);
    b[pos++] = (uint8_t)(id >> 8);
    b[pos++] = (uint8_t)id;
    b[pos++] = (uint8_t)(flen >> 8);
    b[pos++] = (uint8_t)flen;
    memcpy(b + pos, filter, flen);
    pos += flen;
    b[pos++] = qos;
    *n = pos;
    return b;
}

/* ---- password users ------------------------------------------------------------ */

char *tn__passwd_file(const char *const *users, size_t n, const char *password)
{
    const char *build = getenv("GATEMQ_BUILD");
    char tool[512];
    snprintf(tool, sizeof tool, "%s/gatemq-passwd", build ? build : "build");
    char *path = it_temp_file("passwd", "");
    for (size_t i = 0; i < n; i++) {
        const char *argv[] = { tool, "-I", "1000", "-b", path, users[i], password, NULL };
        char *out = NULL;
        int rc = it_run(argv, IT_TIMEOUT, &out);
        if (rc != 0)
            it_fail("gatemq-passwd failed (%d): %s", rc, out ? out : "");
        free(out);
    }
    return path;
}

it_conn *tn__login(uint16_t port, const char *user, const char *password,
                   const char *client_id, bool clean, bool sp, uint8_t rc)
{
    it_conn *c = it_connect(port);
    mqtt_connect m = {
        .protocol_name = span_of("MQTT"),
        .protocol_level = 4,
        .clean_session = clean,
        .client_id = span_of(client_id),
        .has_username = user != NULL,
        .username = span_of(user),
        .has_password = user != NULL,
        .password = span_of(user ? password : NULL),
    };
    uint8_t buf[256];
    size_t n = mqtt_encode_connect(buf, sizeof buf, &m);
    it_send(c, buf, n);
    uint8_t connack[4] = { 0x20, 0x02, sp, rc };
    it_expect_bytes(c, connack, sizeof connack, IT_TIMEOUT);
    return c;
}
