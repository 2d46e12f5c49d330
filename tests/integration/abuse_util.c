/*
 * abuse_util.c - see abuse_util.h.
 */
#include "abuse_util.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <mbedtls/ctr_drbg.h>
#include <mbedtls/entropy.h>
#include <mbedtls/error.h>
#include <mbedtls/net_sockets.h>
#include <mbedtls/pk.h>
#include <mbedtls/ssl.h>
#include <mbedtls/x509_crt.h>

#define AU_MAX_SOCKS 4096
#define AU_MAX_TLS 256

static int au_socks[AU_MAX_SOCKS]; /* fd + 1; 0: free */
static au_tls *au_tlss[AU_MAX_TLS];

/* ---- slow runs ------------------------------------------------------------ */

bool au_valgrind(void)
{
    const char *v = getenv("GATEMQ_IT_VALGRIND");
    return v && *v && strcmp(v, "0") != 0;
}

int au_slow(void)
{
    return au_valgrind() ? 10 : 1;
}

int au_mem_factor(void)
{
    return au_valgrind() ? 3 : 1;
}

void au_pause_ms(long ms)
{
    struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

void au_limit_asan_quarantine(int mb)
{
#if defined(__SANITIZE_ADDRESS__)
    const char *old = getenv("ASAN_OPTIONS");
    char buf[2048];
    snprintf(buf, sizeof buf, "quarantine_size_mb=%d%s%s", mb, old && *old ? ":" : "",
             old ? old : "");
    setenv("ASAN_OPTIONS", buf, 1);
#else
    (void)mb;
#endif
}

/* ---- /proc ---------------------------------------------------------------- */

long au_status_kb(pid_t pid, const char *key)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    long kb = 0;
    size_t klen = strlen(key);
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, key, klen) == 0) {
            kb = strtol(line + klen, NULL, 10);
            break;
        }
    }
    fclose(f);
    return kb;
}

long au_log_bytes(pid_t pid)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/fd/2", (int)pid);
    struct stat st;
    return stat(path, &st) == 0 ? (long)st.st_size : -1;
}

long au_cpu_ms(pid_t pid)
{
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    /* Fields after the command name (which may hold blanks): state is 3rd,
     * utime the 14th, stime the 15th. */
    const char *p = strrchr(buf, ')');
    if (!p)
        return -1;
    unsigned long ut = 0, st = 0;
    if (sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) != 2)
        return -1;
    long hz = sysconf(_SC_CLK_TCK);
    return (long)((ut + st) * 1000 / (unsigned long)(hz > 0 ? hz : 100));
}

int au_fd_count(pid_t pid)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/fd", (int)pid);
    DIR *d = opendir(path);
    if (!d)
        return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        if (e->d_name[0] != '.')
            n++;
    closedir(d);
    return n;
}

/* ---- randomness (splitmix64) ---------------------------------------------- */

void au_rng_seed(au_rng *r, uint64_t seed)
{
    r->s = seed;
}

uint32_t au_rand(au_rng *r)
{
    uint64_t z = (r->s += 0x9e3779b97f4a7c15u);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
    return (uint32_t)((z ^ (z >> 31)) >> 32);
}

uint32_t au_below(au_rng *r, uint32_t n)
{
    return n ? (uint32_t)(((uint64_t)au_rand(r) * n) >> 32) : 0;
}

void au_rand_bytes(au_rng *r, uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        p[i] = (uint8_t)au_rand(r);
}

/* ---- plain sockets ------------------------------------------------------------ */

static void sock_reg(int fd)
{
    for (size_t i = 0; i < AU_MAX_SOCKS; i++)
        if (!au_socks[i]) {
            au_socks[i] = fd + 1;
            return;
        }
    close(fd);
    it_fail("abuse_util: more than %d sockets", AU_MAX_SOCKS);
}

int au__sock(uint16_t port, int rcvbuf)
{
    int fd = it_tcp_connect_fd(port, SOCK_CLOEXEC, rcvbuf);
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    sock_reg(fd);
    return fd;
}

void au_sock_close(int fd)
{
    if (fd < 0)
        return;
    for (size_t i = 0; i < AU_MAX_SOCKS; i++)
        if (au_socks[i] == fd + 1)
            au_socks[i] = 0;
    close(fd);
}

bool au_sock_send(int fd, const void *p, size_t n)
{
    const uint8_t *b = p;
    while (n > 0) {
        ssize_t w = send(fd, b, n, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return true; /* full: the rest is dropped, the peer is still there */
        if (w <= 0)
            return false;
        b += w;
        n -= (size_t)w;
    }
    return true;
}

bool au_sock_send_all(int fd, const void *p, size_t n, int timeout_ms)
{
    const uint8_t *b = p;
    long deadline = it_now_ms() + timeout_ms;
    while (n > 0) {
        ssize_t w = send(fd, b, n, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            long left = deadline - it_now_ms();
            if (left <= 0)
                return false;
            struct pollfd pfd = { fd, POLLOUT, 0 };
            poll(&pfd, 1, (int)left);
            continue;
        }
        if (w <= 0)
            return false;
        b += w;
        n -= (size_t)w;
    }
    return true;
}

bool au_sock_read_exact(int fd, uint8_t *buf, size_t n, int timeout_ms)
{
    long deadline = it_now_ms() + timeout_ms;
    size_t got = 0;
    while (got < n) {
        ssize_t r = recv(fd, buf + got, n - got, MSG_DONTWAIT);
        if (r > 0) {
            got += (size_t)r;
            continue;
        }
        if (r == 0 || (r < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR))
            return false;
        long left = deadline - it_now_ms();
        if (left <= 0)
            return false;
        struct pollfd pfd = { fd, POLLIN, 0 };
        poll(&pfd, 1, (int)left);
    }
    return true;
}

int au_sock_drain(int fd, size_t *got)
{
    uint8_t buf[65536];
    for (;;) {
        ssize_t r = recv(fd, buf, sizeof buf, MSG_DONTWAIT);
        if (r > 0) {
            if (got)
                *got += (size_t)r;
            continue;
        }
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return 0;
        return 1; /* EOF, reset */
    }
}

long au_sock_wait_closed(int fd, int timeout_ms)
{
    long start = it_now_ms(), deadline = start + timeout_ms;
    for (;;) {
        if (au_sock_drain(fd, NULL))
            return it_now_ms() - start;
        long left = deadline - it_now_ms();
        if (left <= 0)
            return -1;
        struct pollfd pfd = { fd, POLLIN, 0 };
        poll(&pfd, 1, (int)left);
    }
}

/* ---- probes through the harness client ------------------------------------------ */

long au__roundtrip(it_conn *pub, it_conn *sub, const char *topic)
{
    static unsigned n;
    char payload[48];
    snprintf(payload, sizeof payload, "bystander-%u", n++);
    long t0 = it_now_ms();
    it_publish_str(pub, topic, payload, 1, false);
    it_expect_publish(sub, topic, payload, 1, false);
    return it_now_ms() - t0;
}

unsigned long long au__sys_value(it_broker *b, const char *topic)
{
    static unsigned n;
    char id[32];
    snprintf(id, sizeof id, "sys-watch-%u", n++);
    it_conn *w = it_client(it_broker_port(b), id, true);
    it_subscribe(w, topic, 0);
    mqtt_publish p;
    it_recv_publish(w, &p, IT_TIMEOUT * au_slow());
    if (!p.retain)
        it_fail("first %s message is not the retained one", topic);
    it_recv_publish(w, &p, IT_TIMEOUT * au_slow());
    if (p.retain || !it_span_eq(p.topic, topic))
        it_fail("expected a live update of %s", topic);
    char text[32];
    size_t len = p.payload.len < sizeof text - 1 ? p.payload.len : sizeof text - 1;
    memcpy(text, p.payload.ptr, len);
    text[len] = '\0';
    unsigned long long v = strtoull(text, NULL, 10);
    it_disconnect(w);
    return v;
}

/* ---- TLS ------------------------------------------------------------------------ */

struct au_tls {
    mbedtls_net_context net;
    mbedtls_ssl_context ssl;
    mbedtls_ssl_config conf;
    mbedtls_x509_crt ca, crt;
    mbedtls_pk_context key;
};

static bool rng_ready;
static mbedtls_entropy_context entropy;
static mbedtls_ctr_drbg_context drbg;

static void rng_init(void)
{
    if (rng_ready)
        return;
    mbedtls_entropy_init(&entropy);
    mbedtls_ctr_drbg_init(&drbg);
    static const unsigned char pers[] = "gatemq it_abuse";
    if (mbedtls_ctr_drbg_seed(&drbg, mbedtls_entropy_func, &entropy, pers, sizeof pers - 1))
        it_fail("mbedtls_ctr_drbg_seed failed");
    rng_ready = true;
}

static void tls_fail(const char *what, int rc)
{
    char text[200];
    mbedtls_strerror(rc, text, sizeof text);
    it_fail("%s: -0x%04x %s", what, (unsigned)-rc, text);
}

static void tls_reg(au_tls *t, bool add)
{
    for (size_t i = 0; i < AU_MAX_TLS; i++) {
        if (add && !au_tlss[i]) {
            au_tlss[i] = t;
            return;
        }
        if (!add && au_tlss[i] == t)
            au_tlss[i] = NULL;
    }
    if (add)
        it_fail("abuse_util: more than %d TLS clients", AU_MAX_TLS);
}

void au_tls_free(au_tls *t)
{
    if (!t)
        return;
    tls_reg(t, false);
    mbedtls_ssl_free(&t->ssl);
    mbedtls_ssl_config_free(&t->conf);
    mbedtls_x509_crt_free(&t->ca);
    mbedtls_x509_crt_free(&t->crt);
    mbedtls_pk_free(&t->key);
    mbedtls_net_free(&t->net);
    free(t);
}

au_tls *au__tls_open(uint16_t port, const char *company, const char *device)
{
    rng_init();
    au_tls *t = calloc(1, sizeof *t);
    if (!t)
        it_fail("out of memory");
    mbedtls_net_init(&t->net);
    mbedtls_ssl_init(&t->ssl);
    mbedtls_ssl_config_init(&t->conf);
    mbedtls_x509_crt_init(&t->ca);
    mbedtls_x509_crt_init(&t->crt);
    mbedtls_pk_init(&t->key);
    tls_reg(t, true);

    char path[PATH_MAX];
    int rc;
    snprintf(path, sizeof path, "%s/ca.crt", tn_pki());
    if ((rc = mbedtls_x509_crt_parse_file(&t->ca, path)) != 0)
        tls_fail(path, rc);
    snprintf(path, sizeof path, "%s/devices/%s/%s.crt", tn_pki(), company, device);
    if ((rc = mbedtls_x509_crt_parse_file(&t->crt, path)) != 0)
        tls_fail(path, rc);
    snprintf(path, sizeof path, "%s/devices/%s/%s.key", tn_pki(), company, device);
    if ((rc = mbedtls_pk_parse_keyfile(&t->key, path, NULL)) != 0)
        tls_fail(path, rc);
    if ((rc = mbedtls_ssl_config_defaults(&t->conf, MBEDTLS_SSL_IS_CLIENT,
                                          MBEDTLS_SSL_TRANSPORT_STREAM,
                                          MBEDTLS_SSL_PRESET_DEFAULT)) != 0)
        tls_fail("mbedtls_ssl_config_defaults", rc);
    mbedtls_ssl_conf_authmode(&t->conf, MBEDTLS_SSL_VERIFY_REQUIRED);
    mbedtls_ssl_conf_ca_chain(&t->conf, &t->ca, NULL);
    if ((rc = mbedtls_ssl_conf_own_cert(&t->conf, &t->crt, &t->key)) != 0)
        tls_fail("mbedtls_ssl_conf_own_cert", rc);
    mbedtls_ssl_conf_rng(&t->conf, mbedtls_ctr_drbg_random, &drbg);
    mbedtls_ssl_conf_read_timeout(&t->conf, (uint32_t)(TN_TIMEOUT * au_slow()));
    if ((rc = mbedtls_ssl_setup(&t->ssl, &t->conf)) != 0)
        tls_fail("mbedtls_ssl_setup", rc);
    if ((rc = mbedtls_ssl_set_hostname(&t->ssl, "localhost")) != 0)
        tls_fail("mbedtls_ssl_set_hostname", rc);
    char portstr[8];
    snprintf(portstr, sizeof portstr, "%u", port);
    if ((rc = mbedtls_net_connect(&t->net, "127.0.0.1", portstr, MBEDTLS_NET_PROTO_TCP)) != 0)
        tls_fail("connect", rc);
    int one = 1;
    setsockopt(t->net.fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct timeval tv = { 10, 0 };
    setsockopt(t->net.fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    mbedtls_ssl_set_bio(&t->ssl, &t->net, mbedtls_net_send, NULL, mbedtls_net_recv_timeout);
    long deadline = it_now_ms() + (long)TN_TIMEOUT * au_slow();
    while ((rc = mbedtls_ssl_handshake(&t->ssl)) != 0) {
        if ((rc != MBEDTLS_ERR_SSL_WANT_READ && rc != MBEDTLS_ERR_SSL_WANT_WRITE) ||
            it_now_ms() > deadline)
            tls_fail("TLS handshake", rc);
    }
    return t;
}

bool au_tls_send(au_tls *t, const void *p, size_t n)
{
    const uint8_t *b = p;
    while (n > 0) {
        int w = mbedtls_ssl_write(&t->ssl, b, n);
        if (w == MBEDTLS_ERR_SSL_WANT_READ || w == MBEDTLS_ERR_SSL_WANT_WRITE)
            continue;
        if (w <= 0)
            return false;
        b += w;
        n -= (size_t)w;
    }
    return true;
}

long au_tls_wait_closed(au_tls *t, int timeout_ms)
{
    long start = it_now_ms(), deadline = start + timeout_ms;
    uint8_t buf[16384];
    for (;;) {
        long left = deadline - it_now_ms();
        if (left <= 0)
            return -1;
        mbedtls_ssl_conf_read_timeout(&t->conf, (uint32_t)left);
        int r = mbedtls_ssl_read(&t->ssl, buf, sizeof buf);
        if (r > 0 || r == MBEDTLS_ERR_SSL_WANT_READ || r == MBEDTLS_ERR_SSL_WANT_WRITE)
            continue;
        if (r == MBEDTLS_ERR_SSL_TIMEOUT)
            return -1;
        return it_now_ms() - start; /* close_notify, EOF, reset */
    }
}

/* ---- ClientHello ------------------------------------------------------------- */

typedef struct capture {
    uint8_t *buf;
    size_t cap, len;
} capture;

static int capture_send(void *ctx, const unsigned char *p, size_t n)
{
    capture *c = ctx;
    if (c->len + n > c->cap)
        return MBEDTLS_ERR_SSL_BUFFER_TOO_SMALL;
    memcpy(c->buf + c->len, p, n);
    c->len += n;
    return (int)n;
}

static int capture_recv(void *ctx, unsigned char *p, size_t n)
{
    (void)ctx;
    (void)p;
    (void)n;
    return MBEDTLS_ERR_SSL_WANT_READ; /* the server's answer never comes */
}

size_t au_client_hello(uint8_t *buf, size_t cap)
{
    rng_init();
    mbedtls_ssl_context ssl;
    mbedtls_ssl_config conf;
    mbedtls_ssl_init(&ssl);
    mbedtls_ssl_config_init(&conf);
    capture c = { buf, cap, 0 };
    size_t len = 0;
    if (mbedtls_ssl_config_defaults(&conf, MBEDTLS_SSL_IS_CLIENT, MBEDTLS_SSL_TRANSPORT_STREAM,
                                    MBEDTLS_SSL_PRESET_DEFAULT) == 0) {
        mbedtls_ssl_conf_authmode(&conf, MBEDTLS_SSL_VERIFY_NONE);
        mbedtls_ssl_conf_rng(&conf, mbedtls_ctr_drbg_random, &drbg);
        if (mbedtls_ssl_setup(&ssl, &conf) == 0 &&
            mbedtls_ssl_set_hostname(&ssl, "localhost") == 0) {
            mbedtls_ssl_set_bio(&ssl, &c, capture_send, capture_recv, NULL);
            /* Non-blocking: the first call writes the ClientHello, then
             * wants the ServerHello. A few calls at most. */
            for (int i = 0; i < 8 && c.len == 0; i++)
                if (mbedtls_ssl_handshake(&ssl) != MBEDTLS_ERR_SSL_WANT_WRITE)
                    break;
            len = c.len;
        }
    }
    mbedtls_ssl_free(&ssl);
    mbedtls_ssl_config_free(&conf);
    return len;
}

/* ---- teardown ------------------------------------------------------------------- */

int au_teardown(void **state)
{
    for (size_t i = 0; i < AU_MAX_SOCKS; i++)
        if (au_socks[i]) {
            close(au_socks[i] - 1);
            au_socks[i] = 0;
        }
    for (size_t i = 0; i < AU_MAX_TLS; i++)
        if (au_tlss[i])
            au_tls_free(au_tlss[i]);
    return tn_teardown(state);
}
