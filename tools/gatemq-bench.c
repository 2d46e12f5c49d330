/*
 * gatemq-bench - an MQTT 3.1.1 load generator for comparing brokers.
 *
 * One process, one thread, one libev loop: on a two-core machine the broker
 * under test gets one core and the generator the other, so a second generator
 * thread would only steal time from the broker and skew its figures. The
 * exception is --handshakes with --procs N: a TLS client spends several ms
 * of CPU on each full handshake, more than the broker does, so one generator
 * core cannot keep a multi-core broker busy; N processes then share the
 * handshakes and the concurrency, start together, and are reported as one.
 *
 * Every publisher i publishes to "<prefix>/<i>". Subscribers subscribe to
 * "<prefix>/0" when there is a single publisher (one-to-one, fan-out) and to
 * "<prefix>/#" otherwise (fan-in), so each subscriber expects every message;
 * with --pairs subscriber i subscribes only to "<prefix>/i". Each payload
 * starts with a 20-byte header (magic, publisher, sequence number, send time
 * in CLOCK_MONOTONIC ns) from which a subscriber derives latency and detects
 * losses and duplicates. Nothing is measured until every CONNACK and SUBACK
 * has arrived.
 *
 * With --json-payload the payload is instead a telemetry reading as a gateway
 * would send it, {"ts":<wall-clock ms>,"seq":N,"v":<float>}; subscribers take
 * the publisher from the topic (PREFIX/i...), "seq" for losses and duplicates,
 * and "ts" for latency (wall clock, so millisecond resolution). --client-id
 * gives the one connection of a run a fixed client id, as a device whose
 * certificate CN must match it needs.
 *
 * A run ends when every expected delivery has arrived, or when nothing has
 * progressed for -T seconds. Missing deliveries are reported as LOST and make
 * the exit status 1: a rate is never printed as if the run were fine.
 *
 * With --tls every connection speaks TLS 1.2 (mbedtls, non-blocking, over the
 * same loop). --handshakes N opens and closes N TLS connections, C at a time,
 * each through TLS handshake, CONNECT and CONNACK (or the handshake alone with
 * --handshake-only); --resume makes them reuse the session ticket of one
 * untimed full handshake. --startup waits for a starting broker and reports
 * when it first accepted a TCP connection, a CONNECT and a SUBSCRIBE.
 *
 * One source address gives at most the ephemeral port range (about 28,000 on
 * Linux) connections to one broker port: runs of more connections to an IPv4
 * loopback broker spread them over 127.0.0.1, 127.0.0.2, ... (--sources).
 *
 * Exit status: 0 success, 1 lost messages or a run-time failure (connection
 * refused, closed by the broker, protocol error), 2 bad usage.
 */
#include <errno.h>
#include <ev.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <mbedtls/ctr_drbg.h>
#include <mbedtls/entropy.h>
#include <mbedtls/error.h>
#include <mbedtls/net_sockets.h>
#include <mbedtls/pk.h>
#include <mbedtls/ssl.h>
#include <mbedtls/x509_crt.h>

#include "mqtt.h"

#define BENCH_MAGIC 0x42514d47u /* "GMQB" little-endian: marks our payloads */
#define BENCH_HDR 20            /* magic u32, publisher u32, seq u32, ts u64 */
#define OUT_HIGH_WATER (64 * 1024) /* stop encoding once this much is unsent */
#define IN_MIN 4096
#define IN_READ_MAX (256 * 1024) /* grow read buffers up to this for big reads */
#define MAX_PENDING_CONNECTS 256 /* stay well under the broker's listen backlog */
#define CONNS_PER_SOURCE 20000  /* connections per loopback source address */
#define PACE_MIN_NS 50000       /* paced runs wake at most every 50 us */
#define HOUSEKEEPING_INTERVAL 0.1

enum role { ROLE_PUB, ROLE_SUB, ROLE_IDLE, ROLE_HS };
enum conn_state { ST_NEW, ST_CONNECTING, ST_TLS, ST_CONNACK, ST_SUBACK, ST_READY };
enum phase { PH_SETUP, PH_RUN, PH_DRAIN, PH_HOLD, PH_DONE };

/* A byte buffer: live data is p[off, len). */
typedef struct bench_buf {
    uint8_t *p;
    size_t off, len, cap;
} bench_buf;

typedef struct conn {
    ev_io io; /* first member: the watcher pointer is the connection pointer */
    int fd;
    uint8_t role, state;
    bool finished; /* publisher: all of its messages sent and acknowledged */
    int events;    /* libev mask currently registered, to skip no-op updates */
    uint32_t index;
    bench_buf in, out;
    /* publisher */
    uint32_t sent;     /* PUBLISH packets encoded */
    uint32_t done;     /* QoS 0: written to the socket; QoS 1/2: acknowledged */
    uint32_t limit;    /* how many to send in total */
    uint32_t inflight; /* QoS 1/2 packets awaiting their final ack */
    uint16_t next_id;
    uint8_t *ids;      /* per packet id: 0 free, 1 awaits PUBACK/PUBREC, 2 PUBCOMP */
    char *topic;
    size_t topic_len;
    /* subscriber: next expected sequence number per publisher */
    uint32_t *next_seq;
    /* --tls */
    mbedtls_ssl_context *ssl;
    size_t tls_write_len; /* a write mbedtls asked to repeat (WANT_WRITE), or 0 */
    bool tls_want_write;  /* the handshake waits for the socket to be writable */
    bool tls_full;        /* the handshake went through the server's certificate */
    bool recycle;         /* --handshakes: done with, close and start over */
} conn;

/* Log-linear latency histogram: exact below 128 ns, then 64 sub-buckets per
 * power of two (about 1.6% resolution) up to 2^64 ns, in 30 KB. Keeping every
 * sample would cost gigabytes in a 1000-subscriber fan-out. */
#define HIST_BUCKETS (59 * 64)
typedef struct hist {
    uint64_t count[HIST_BUCKETS];
    uint64_t n, max;
} hist;

static struct bench {
    /* options */
    const char *host, *port, *prefix;
    unsigned qos, pubs, subs, window, keepalive, idle;
    uint64_t max_outstanding;
    uint32_t count;
    double duration, rate, drain_timeout, setup_timeout;
    size_t size;
    bool json, pairs, idle_mode, have_duration, have_count, have_size;
    bool json_payload;      /* --json-payload: {"ts":..,"seq":..,"v":..} payloads */
    const char *client_id;  /* --client-id: the id of the run's one connection */
    bool retain;            /* --retain: publish retained messages */
    unsigned topics;        /* --topics: topics per publisher (1) */
    const char *username, *password;
    /* TLS */
    bool tls, resume, hs_mode, hs_only;
    const char *cafile, *certfile, *keyfile, *servername;
    unsigned concurrency;
    uint32_t handshakes;
    unsigned procs;         /* --procs: generator processes of --handshakes */
    unsigned sources;       /* --sources: loopback source addresses (0: automatic) */
    int ready_fd, go_fd, result_fd; /* a --procs child's pipes to its parent, or -1 */
    double startup;         /* --startup: wait this long for a starting broker */
    mbedtls_ssl_config tls_conf;
    mbedtls_x509_crt tls_ca, tls_cert;
    mbedtls_pk_context tls_key;
    mbedtls_entropy_context entropy;
    mbedtls_ctr_drbg_context drbg;
    mbedtls_ssl_session session; /* --resume: from the untimed first handshake */
    bool have_session, hs_warmup;
    uint64_t hs_started, hs_done, hs_full;

    struct ev_loop *loop;
    struct addrinfo *addr;
    conn *conns;
    size_t nconns, next_open, pending_connects, ready;
    enum phase phase;
    ev_timer housekeeping, stop;
    ev_io pace, stdin_watch;
    uint8_t *payload;
    double rate_per_pub;

    /* measurements; times are CLOCK_MONOTONIC ns */
    uint64_t t_setup, t_start, t_pub_end, t_last_deliv, t_ready;
    double last_progress, last_ping; /* ev_now() of the last send/ack/delivery */
    unsigned pubs_finished;
    uint64_t sent_total, fanout; /* fanout: deliveries expected per message */
    bool flow_blocked;
    double gen_cpu; /* our own CPU seconds during the run */
    uint64_t received, unique, dups, gaps;
    uint64_t payload_bytes; /* sum of the payload sizes sent (they vary with --json-payload) */
    hist lat;
    char error[256];
} b = {
    .host = "127.0.0.1",
    .port = "1883",
    .qos = 0,
    .pubs = 1,
    .subs = 1,
    .window = 64,
    .max_outstanding = UINT64_MAX, /* unset: sized from -s in setup() */
    .count = 10000,
    .size = 64,
    .drain_timeout = 10,
    .setup_timeout = 60,
    .topics = 1,
    .concurrency = 16,
    .servername = "localhost",
    .procs = 1,
    .ready_fd = -1,
    .go_fd = -1,
    .result_fd = -1,
};

static void pub_fill(conn *c);
static void conn_watch(conn *c);

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static uint64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static double cpu_seconds(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
           (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

static void *xrealloc(void *p, size_t n)
{
    void *q = realloc(p, n ? n : 1);
    if (!q) {
        fprintf(stderr, "gatemq-bench: out of memory\n");
        exit(1);
    }
    return q;
}

static void *xcalloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (!p) {
        fprintf(stderr, "gatemq-bench: out of memory\n");
        exit(1);
    }
    return p;
}

/* Record the first failure and stop the loop; later failures are usually
 * consequences of the first and would only hide it. */
static void fail(const char *fmt, ...)
{
    if (!b.error[0]) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(b.error, sizeof b.error, fmt, ap);
        va_end(ap);
    }
    b.phase = PH_DONE;
    ev_break(b.loop, EVBREAK_ALL);
}

static const char *conn_name(const conn *c, char *buf, size_t cap)
{
    static const char *const roles[] = { "publisher", "subscriber", "idle connection",
                                         "handshake connection" };
    snprintf(buf, cap, "%s %u", roles[c->role], c->index);
    return buf;
}

/* ---- histogram ------------------------------------------------------------ */

static unsigned hist_index(uint64_t v)
{
    if (v < 128)
        return (unsigned)v;
    unsigned msb = 63u - (unsigned)__builtin_clzll(v);
    unsigned shift = msb - 6;
    return shift * 64 + (unsigned)(v >> shift); /* v >> shift is in [64, 128) */
}

/* The middle of bucket idx, in ns. */
static uint64_t hist_value(unsigned idx)
{
    if (idx < 128)
        return idx;
    unsigned shift = idx / 64 - 1;
    uint64_t low = (uint64_t)(idx - shift * 64) << shift;
    return low + ((1ull << shift) >> 1);
}

static void hist_add(hist *h, uint64_t v)
{
    h->count[hist_index(v)]++;
    h->n++;
    if (v > h->max)
        h->max = v;
}

static uint64_t hist_percentile(const hist *h, double p)
{
    if (h->n == 0)
        return 0;
    uint64_t rank = (uint64_t)ceil(p / 100.0 * (double)h->n);
    if (rank == 0)
        rank = 1;
    uint64_t seen = 0;
    for (unsigned i = 0; i < HIST_BUCKETS; i++) {
        seen += h->count[i];
        if (seen >= rank) {
            uint64_t v = hist_value(i);
            return v > h->max ? h->max : v;
        }
    }
    return h->max;
}

/* ---- buffers -------------------------------------------------------------- */

static void buf_reserve(bench_buf *bf, size_t need)
{
    if (bf->cap - bf->len >= need)
        return;
    if (bf->off > 0) { /* reuse consumed space before growing */
        memmove(bf->p, bf->p + bf->off, bf->len - bf->off);
        bf->len -= bf->off;
        bf->off = 0;
        if (bf->cap - bf->len >= need)
            return;
    }
    size_t cap = bf->cap ? bf->cap : IN_MIN;
    while (cap - bf->len < need)
        cap *= 2;
    bf->p = xrealloc(bf->p, cap);
    bf->cap = cap;
}

static size_t buf_pending(const bench_buf *bf) { return bf->len - bf->off; }

/* Append one encoded packet: encoders return the size they need without
 * writing when the space is short, so measure, reserve, and encode again. */
#define APPEND(bf, encode_into_ptr_cap)                                    \
    do {                                                                   \
        for (;;) {                                                         \
            uint8_t *ptr_ = (bf)->p ? (bf)->p + (bf)->len : NULL;          \
            size_t cap_ = (bf)->p ? (bf)->cap - (bf)->len : 0;             \
            size_t need_ = (encode_into_ptr_cap);                          \
            if (ptr_ && need_ <= cap_) {                                   \
                (bf)->len += need_;                                        \
                break;                                                     \
            }                                                              \
            buf_reserve((bf), need_);                                      \
        }                                                                  \
    } while (0)

/* ---- connections ---------------------------------------------------------- */

static void conn_lost(conn *c, const char *why)
{
    char name[64];
    if (b.phase == PH_DONE)
        return;
    if (c->state == ST_TLS)
        fail("%s: %s during the TLS handshake (broker at %s:%s)",
             conn_name(c, name, sizeof name), why, b.host, b.port);
    else if (c->state < ST_READY && c->state != ST_NEW)
        fail("%s: %s before %s (broker at %s:%s)", conn_name(c, name, sizeof name), why,
             c->state == ST_SUBACK ? "SUBACK" : "CONNACK", b.host, b.port);
    else
        fail("%s: connection lost: %s", conn_name(c, name, sizeof name), why);
}

/* ---- TLS ------------------------------------------------------------------ */

static const char *tls_error(int rc)
{
    static char buf[160];
    mbedtls_strerror(rc, buf, sizeof buf);
    return buf;
}

/* The BIO: a non-blocking socket, as mbedtls_net_send/recv but without
 * SIGPIPE and with the connection at hand. */
static int tls_send(void *ctx, const unsigned char *buf, size_t len)
{
    conn *c = ctx;
    ssize_t n = send(c->fd, buf, len, MSG_NOSIGNAL);
    if (n >= 0)
        return (int)n;
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
        return MBEDTLS_ERR_SSL_WANT_WRITE;
    return MBEDTLS_ERR_NET_SEND_FAILED;
}

static int tls_recv(void *ctx, unsigned char *buf, size_t len)
{
    conn *c = ctx;
    ssize_t n = recv(c->fd, buf, len, 0);
    if (n >= 0)
        return (int)n; /* 0: mbedtls reports MBEDTLS_ERR_SSL_CONN_EOF */
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
        return MBEDTLS_ERR_SSL_WANT_READ;
    return MBEDTLS_ERR_NET_RECV_FAILED;
}

/* Client side of the same profile as the broker's: TLS 1.2, ECDHE with AEAD,
 * curves X25519, P-256, P-384 (mbedtls's default list starts with P-521),
 * session tickets on. Both brokers see the same client hello. */
static void tls_init(void)
{
    static const int suites[] = {
        MBEDTLS_TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        MBEDTLS_TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        MBEDTLS_TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
        MBEDTLS_TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
        MBEDTLS_TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
        MBEDTLS_TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
        0,
    };
    static const mbedtls_ecp_group_id curves[] = {
        MBEDTLS_ECP_DP_CURVE25519, MBEDTLS_ECP_DP_SECP256R1, MBEDTLS_ECP_DP_SECP384R1,
        MBEDTLS_ECP_DP_NONE,
    };
    static const char pers[] = "gatemq-bench";
    int rc;
    mbedtls_ssl_config_init(&b.tls_conf);
    mbedtls_x509_crt_init(&b.tls_ca);
    mbedtls_x509_crt_init(&b.tls_cert);
    mbedtls_pk_init(&b.tls_key);
    mbedtls_entropy_init(&b.entropy);
    mbedtls_ctr_drbg_init(&b.drbg);
    mbedtls_ssl_session_init(&b.session);
    if ((rc = mbedtls_ctr_drbg_seed(&b.drbg, mbedtls_entropy_func, &b.entropy,
                                    (const unsigned char *)pers, sizeof pers - 1)) != 0) {
        fprintf(stderr, "gatemq-bench: random generator: %s\n", tls_error(rc));
        exit(1);
    }
    if ((rc = mbedtls_x509_crt_parse_file(&b.tls_ca, b.cafile)) != 0) {
        fprintf(stderr, "gatemq-bench: --cafile %s: %s\n", b.cafile, tls_error(rc));
        exit(1);
    }
    if (b.certfile) {
        if ((rc = mbedtls_x509_crt_parse_file(&b.tls_cert, b.certfile)) != 0) {
            fprintf(stderr, "gatemq-bench: --cert %s: %s\n", b.certfile, tls_error(rc));
            exit(1);
        }
        if ((rc = mbedtls_pk_parse_keyfile(&b.tls_key, b.keyfile, NULL)) != 0) {
            fprintf(stderr, "gatemq-bench: --key %s: %s\n", b.keyfile, tls_error(rc));
            exit(1);
        }
    }
    if ((rc = mbedtls_ssl_config_defaults(&b.tls_conf, MBEDTLS_SSL_IS_CLIENT,
                                          MBEDTLS_SSL_TRANSPORT_STREAM,
                                          MBEDTLS_SSL_PRESET_DEFAULT)) != 0) {
        fprintf(stderr, "gatemq-bench: TLS configuration: %s\n", tls_error(rc));
        exit(1);
    }
    mbedtls_ssl_conf_rng(&b.tls_conf, mbedtls_ctr_drbg_random, &b.drbg);
    mbedtls_ssl_conf_min_version(&b.tls_conf, MBEDTLS_SSL_MAJOR_VERSION_3,
                                 MBEDTLS_SSL_MINOR_VERSION_3);
    mbedtls_ssl_conf_max_version(&b.tls_conf, MBEDTLS_SSL_MAJOR_VERSION_3,
                                 MBEDTLS_SSL_MINOR_VERSION_3);
    mbedtls_ssl_conf_ciphersuites(&b.tls_conf, suites);
    mbedtls_ssl_conf_curves(&b.tls_conf, curves);
    mbedtls_ssl_conf_session_tickets(&b.tls_conf, MBEDTLS_SSL_SESSION_TICKETS_ENABLED);
    mbedtls_ssl_conf_authmode(&b.tls_conf, MBEDTLS_SSL_VERIFY_REQUIRED);
    mbedtls_ssl_conf_ca_chain(&b.tls_conf, &b.tls_ca, NULL);
    if (b.certfile &&
        (rc = mbedtls_ssl_conf_own_cert(&b.tls_conf, &b.tls_cert, &b.tls_key)) != 0) {
        fprintf(stderr, "gatemq-bench: --cert/--key: %s\n", tls_error(rc));
        exit(1);
    }
}

static void tls_free(void)
{
    mbedtls_ssl_session_free(&b.session);
    mbedtls_ssl_config_free(&b.tls_conf);
    mbedtls_x509_crt_free(&b.tls_ca);
    mbedtls_x509_crt_free(&b.tls_cert);
    mbedtls_pk_free(&b.tls_key);
    mbedtls_ctr_drbg_free(&b.drbg);
    mbedtls_entropy_free(&b.entropy);
}

static void send_connect(conn *c);
static int conn_flush(conn *c);
static void hs_finished(conn *c);

/* Drive the handshake one step at a time: a client that resumes a session
 * goes from ServerHello straight to the server's ChangeCipherSpec (or
 * NewSessionTicket), one that does not passes through the server's
 * Certificate; that is how a full handshake is told from an abbreviated one. */
static void tls_step(conn *c)
{
    while (c->ssl->state != MBEDTLS_SSL_HANDSHAKE_OVER) {
        int rc = mbedtls_ssl_handshake_step(c->ssl);
        if (c->ssl->state == MBEDTLS_SSL_SERVER_CERTIFICATE)
            c->tls_full = true;
        if (rc == MBEDTLS_ERR_SSL_WANT_READ || rc == MBEDTLS_ERR_SSL_WANT_WRITE) {
            c->tls_want_write = rc == MBEDTLS_ERR_SSL_WANT_WRITE;
            conn_watch(c);
            return;
        }
        if (rc == MBEDTLS_ERR_SSL_CONN_EOF) {
            conn_lost(c, "connection closed by the broker");
            return;
        }
        if (rc != 0) {
            uint32_t flags = mbedtls_ssl_get_verify_result(c->ssl);
            char why[256] = "";
            if (flags && flags != (uint32_t)-1)
                mbedtls_x509_crt_verify_info(why, sizeof why, "; ", flags);
            for (char *p = why; *p; p++)
                if (*p == '\n')
                    *p = ' ';
            conn_lost(c, why[0] ? why : tls_error(rc));
            return;
        }
    }
    if (b.resume && !b.have_session && c->tls_full) {
        int rc = mbedtls_ssl_get_session(c->ssl, &b.session);
        if (rc != 0) {
            fail("cannot keep the TLS session: %s", tls_error(rc));
            return;
        }
        b.have_session = true;
    }
    if (b.hs_mode && b.hs_only) {
        c->recycle = true;
        hs_finished(c);
        return;
    }
    send_connect(c);
    if (conn_flush(c) == 0)
        conn_watch(c);
}

static void tls_start(conn *c)
{
    int rc;
    if (!c->ssl) {
        c->ssl = xcalloc(1, sizeof *c->ssl);
        mbedtls_ssl_init(c->ssl);
        if ((rc = mbedtls_ssl_setup(c->ssl, &b.tls_conf)) != 0 ||
            (rc = mbedtls_ssl_set_hostname(c->ssl, b.servername)) != 0) {
            fail("TLS setup: %s", tls_error(rc));
            return;
        }
    } else if ((rc = mbedtls_ssl_session_reset(c->ssl)) != 0) {
        fail("TLS session reset: %s", tls_error(rc));
        return;
    }
    mbedtls_ssl_set_bio(c->ssl, c, tls_send, tls_recv, NULL);
    if (b.resume && b.have_session && (rc = mbedtls_ssl_set_session(c->ssl, &b.session)) != 0) {
        fail("cannot resume the TLS session: %s", tls_error(rc));
        return;
    }
    c->state = ST_TLS;
    c->tls_full = false;
    c->tls_write_len = 0;
    tls_step(c);
}

/* Write what is buffered. Returns -1 if the connection failed (the run is
 * then over), 0 otherwise; unsent bytes stay buffered for EV_WRITE. */
static int conn_flush(conn *c)
{
    while (c->ssl && c->out.off < c->out.len) {
        /* After WANT_WRITE mbedtls holds the record already: the call must be
         * repeated with the same length, and it then reports that length. */
        size_t len = c->tls_write_len ? c->tls_write_len : c->out.len - c->out.off;
        int n = mbedtls_ssl_write(c->ssl, c->out.p + c->out.off, len);
        if (n > 0) {
            c->tls_write_len = 0;
            c->out.off += (size_t)n;
        } else if (n == MBEDTLS_ERR_SSL_WANT_WRITE || n == MBEDTLS_ERR_SSL_WANT_READ) {
            c->tls_write_len = len;
            break;
        } else {
            conn_lost(c, tls_error(n));
            return -1;
        }
    }
    while (!c->ssl && c->out.off < c->out.len) {
        ssize_t n = send(c->fd, c->out.p + c->out.off, c->out.len - c->out.off, MSG_NOSIGNAL);
        if (n > 0) {
            c->out.off += (size_t)n;
        } else if (n < 0 && errno == EINTR) {
            continue;
        } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            break;
        } else {
            conn_lost(c, n < 0 ? strerror(errno) : "write returned 0");
            return -1;
        }
    }
    if (c->out.off == c->out.len)
        c->out.off = c->out.len = 0;
    return 0;
}

/* End-to-end flow control: deliveries owed to subscribers but not yet
 * received. Without a bound a closed-loop QoS 0 publisher outruns any broker
 * and fills its queue until it drops messages, which measures the queue
 * limit, not the throughput. */
static bool flow_open(void)
{
    return b.max_outstanding == 0 || b.sent_total * b.fanout < b.unique + b.max_outstanding;
}

static bool pub_can_send(const conn *c)
{
    return c->role == ROLE_PUB && b.phase == PH_RUN && c->state == ST_READY &&
           c->sent < c->limit && (b.qos == 0 || c->inflight < b.window) && flow_open();
}

static void conn_watch(conn *c)
{
    if (c->fd < 0)
        return;
    int ev = EV_READ;
    if (c->state == ST_CONNECTING)
        ev = EV_WRITE;
    else if (c->state == ST_TLS)
        ev = c->tls_want_write ? EV_WRITE : EV_READ;
    else if (buf_pending(&c->out) > 0 || (b.rate == 0 && pub_can_send(c)))
        ev |= EV_WRITE; /* closed loop: the socket being writable is the go signal */
    if (ev != c->events) {
        ev_io_stop(b.loop, &c->io);
        ev_io_set(&c->io, c->fd, ev);
        ev_io_start(b.loop, &c->io);
        c->events = ev;
    }
}

static void send_connect(conn *c)
{
    static const char role_letter[] = { 'p', 's', 'i', 'h' };
    char id[24];
    /* Alphanumeric and at most 23 bytes: the only client ids every 3.1.1
     * server must accept [MQTT-3.1.3-5]. */
    int len = snprintf(id, sizeof id, "gb%ld%c%u", (long)getpid() % 10000000,
                       role_letter[c->role], c->index);
    mqtt_connect m = {
        .clean_session = true,
        .keep_alive = (uint16_t)b.keepalive,
        .client_id = { (const uint8_t *)id, (size_t)len },
    };
    if (b.client_id)
        m.client_id = (mqtt_span){ (const uint8_t *)b.client_id, strlen(b.client_id) };
    if (b.username) {
        m.has_username = true;
        m.username = (mqtt_span){ (const uint8_t *)b.username, strlen(b.username) };
    }
    if (b.password) {
        m.has_password = true;
        m.password = (mqtt_span){ (const uint8_t *)b.password, strlen(b.password) };
    }
    APPEND(&c->out, mqtt_encode_connect(ptr_, cap_, &m));
    c->state = ST_CONNACK;
}

static void open_more(void);
static void on_io(EV_P_ ev_io *w, int revents);

static void finish_connect(conn *c)
{
    int err = 0;
    socklen_t len = sizeof err;
    if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
        err = errno;
    if (err) {
        fail("cannot connect to %s:%s: %s", b.host, b.port, strerror(err));
        return;
    }
    if (b.tls) {
        tls_start(c);
        return;
    }
    send_connect(c);
    if (conn_flush(c) == 0)
        conn_watch(c);
}

static void start_connect(conn *c)
{
    c->fd = socket(b.addr->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0) {
        fail("socket: %s%s", strerror(errno),
             errno == EMFILE ? " (raise the open file limit: ulimit -n)" : "");
        return;
    }
    int one = 1; /* latency is measured per message: never let Nagle hold one back */
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (b.sources > 1) {
        /* Slot i connects from 127.0.0.(1 + i % sources). The port is chosen
         * at connect(), for the whole 4-tuple, so every source address gets
         * the full ephemeral range towards the broker's one port. */
        uint32_t k = (uint32_t)((size_t)(c - b.conns) % b.sources);
        struct sockaddr_in src = {
            .sin_family = AF_INET,
            .sin_addr.s_addr = htonl(INADDR_LOOPBACK + k),
        };
        setsockopt(c->fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
        if (bind(c->fd, (struct sockaddr *)&src, sizeof src) < 0) {
            fail("bind to source address 127.0.0.%" PRIu32 ": %s", 1 + k, strerror(errno));
            return;
        }
    }
    b.pending_connects++;
    ev_io_init(&c->io, on_io, c->fd, 0);
    c->events = 0;
    if (connect(c->fd, b.addr->ai_addr, b.addr->ai_addrlen) == 0) {
        if (b.tls) {
            tls_start(c);
            return;
        }
        send_connect(c);
        if (conn_flush(c) == 0)
            conn_watch(c);
    } else if (errno == EINPROGRESS) {
        c->state = ST_CONNECTING;
        conn_watch(c);
    } else {
        fail("cannot connect to %s:%s: %s", b.host, b.port, strerror(errno));
    }
}

static void open_more(void)
{
    while (b.phase == PH_SETUP && b.pending_connects < MAX_PENDING_CONNECTS &&
           b.next_open < b.nconns) {
        start_connect(&b.conns[b.next_open++]);
    }
}

static void start_run(void);

static void conn_ready(conn *c)
{
    c->state = ST_READY;
    b.ready++;
    if (b.ready == b.nconns)
        start_run();
}

/* ---- packet handling ------------------------------------------------------ */

static void check_done(void);

static void pub_check_finished(conn *c)
{
    if (c->finished || c->sent < c->limit || c->done < c->sent || b.phase != PH_RUN)
        return;
    c->finished = true;
    b.pubs_finished++;
    if (b.pubs_finished == b.pubs) {
        b.t_pub_end = now_ns();
        b.phase = PH_DRAIN;
        if (ev_is_active(&b.pace)) {
            ev_io_stop(b.loop, &b.pace);
            close(b.pace.fd);
        }
        check_done(); /* the last ack may arrive after the last delivery */
    }
}

static uint64_t expected_deliveries(void)
{
    uint64_t sent = 0;
    for (unsigned i = 0; i < b.pubs; i++)
        sent += b.conns[i].sent;
    return b.pairs ? sent : sent * b.subs;
}

static void check_done(void)
{
    if (b.phase == PH_DRAIN && b.unique >= expected_deliveries()) {
        b.phase = PH_DONE;
        ev_break(b.loop, EVBREAK_ALL);
    }
}

static void pub_ack(conn *c, const mqtt_frame *f)
{
    char name[64];
    uint16_t id;
    int rc = mqtt_decode_packet_id(f, &id);
    if (rc < 0) {
        fail("%s: bad %s: %s", conn_name(c, name, sizeof name), mqtt_type_name(f->type),
             mqtt_strerror(rc));
        return;
    }
    uint8_t want = f->type == MQTT_PUBCOMP ? 2 : 1;
    bool type_ok = (f->type == MQTT_PUBACK && b.qos == 1) ||
                   (f->type != MQTT_PUBACK && b.qos == 2);
    if (!type_ok || !c->ids || c->ids[id] != want) {
        fail("%s: unexpected %s for packet id %u", conn_name(c, name, sizeof name),
             mqtt_type_name(f->type), id);
        return;
    }
    if (f->type == MQTT_PUBREC) {
        c->ids[id] = 2;
        APPEND(&c->out, mqtt_encode_packet_id(ptr_, cap_, MQTT_PUBREL, id));
        return;
    }
    c->ids[id] = 0;
    c->inflight--;
    c->done++;
}

/* One delivery of publisher pub's message seq, latency lat_ns. */
static void sub_count(conn *c, uint32_t pub, uint32_t seq, uint64_t lat_ns, uint64_t now)
{
    uint32_t *next = &c->next_seq[b.pairs ? 0 : pub];
    b.received++;
    if (seq >= *next) {
        b.unique++;
        b.gaps += seq - *next;
        *next = seq + 1;
    } else {
        b.dups++; /* a redelivery, or a reordering that the gap count shows */
    }
    hist_add(&b.lat, lat_ns);
    b.t_last_deliv = now;
}

/* An unsigned decimal at *pp (advanced past it); -1 if there is none. */
static int parse_decimal(const uint8_t **pp, const uint8_t *end, uint64_t *v)
{
    const uint8_t *p = *pp;
    uint64_t x = 0;
    if (p == end || *p < '0' || *p > '9')
        return -1;
    for (; p < end && *p >= '0' && *p <= '9'; p++) {
        if (x > (UINT64_MAX - 9) / 10)
            return -1;
        x = x * 10 + (uint64_t)(*p - '0');
    }
    *pp = p;
    *v = x;
    return 0;
}

/* A --json-payload message: the publisher index from the topic
 * (PREFIX/i or PREFIX/i/k), "ts" and "seq" from the payload, which starts
 * {"ts":T,"seq":N, exactly as pub_encode_one writes it. */
static int json_payload_parse(const mqtt_publish *p, uint32_t *pub, uint32_t *seq,
                              uint64_t *ts_ms)
{
    size_t plen = strlen(b.prefix);
    const uint8_t *t = p->topic.ptr, *tend = t + p->topic.len;
    if (p->topic.len <= plen + 1 || memcmp(t, b.prefix, plen) != 0 || t[plen] != '/')
        return -1;
    t += plen + 1;
    uint64_t v;
    if (parse_decimal(&t, tend, &v) < 0 || v >= b.pubs || (t != tend && *t != '/'))
        return -1;
    *pub = (uint32_t)v;
    static const char head[] = "{\"ts\":", mid[] = ",\"seq\":";
    const uint8_t *s = p->payload.ptr, *end = s + p->payload.len;
    if (p->payload.len < sizeof head - 1 || memcmp(s, head, sizeof head - 1) != 0)
        return -1;
    s += sizeof head - 1;
    if (parse_decimal(&s, end, ts_ms) < 0)
        return -1;
    if ((size_t)(end - s) < sizeof mid - 1 || memcmp(s, mid, sizeof mid - 1) != 0)
        return -1;
    s += sizeof mid - 1;
    if (parse_decimal(&s, end, &v) < 0 || v > UINT32_MAX)
        return -1;
    *seq = (uint32_t)v;
    return 0;
}

static void sub_publish(conn *c, const mqtt_frame *f, uint64_t now)
{
    char name[64];
    mqtt_publish p;
    int rc = mqtt_decode_publish(f, &p);
    if (rc < 0) {
        fail("%s: bad PUBLISH: %s", conn_name(c, name, sizeof name), mqtt_strerror(rc));
        return;
    }
    if (p.qos == 1)
        APPEND(&c->out, mqtt_encode_packet_id(ptr_, cap_, MQTT_PUBACK, p.packet_id));
    else if (p.qos == 2)
        APPEND(&c->out, mqtt_encode_packet_id(ptr_, cap_, MQTT_PUBREC, p.packet_id));

    uint32_t magic, pub, seq;
    uint64_t ts;
    if (b.json_payload) {
        uint64_t sent_ms;
        if (json_payload_parse(&p, &pub, &seq, &sent_ms) < 0) {
            fail("%s: foreign message on %.*s (not a --json-payload reading under %s)",
                 conn_name(c, name, sizeof name), (int)p.topic.len, (const char *)p.topic.ptr,
                 b.prefix);
            return;
        }
        if (b.pairs && pub != c->index) {
            fail("%s: message of publisher %u on %.*s", conn_name(c, name, sizeof name), pub,
                 (int)p.topic.len, (const char *)p.topic.ptr);
            return;
        }
        /* Wall clock in whole milliseconds at both ends: a latency is off by
         * up to 1 ms either way, which makes only the tails meaningful. */
        uint64_t recv_ms = wall_ms();
        sub_count(c, pub, seq, recv_ms > sent_ms ? (recv_ms - sent_ms) * 1000000u : 0, now);
        return;
    }
    if (p.payload.len < BENCH_HDR) {
        fail("%s: foreign message on %.*s (%zu-byte payload)", conn_name(c, name, sizeof name),
             (int)p.topic.len, (const char *)p.topic.ptr, p.payload.len);
        return;
    }
    memcpy(&magic, p.payload.ptr, 4);
    memcpy(&pub, p.payload.ptr + 4, 4);
    memcpy(&seq, p.payload.ptr + 8, 4);
    memcpy(&ts, p.payload.ptr + 12, 8);
    if (magic != BENCH_MAGIC || pub >= b.pubs || (b.pairs && pub != c->index)) {
        fail("%s: foreign message on %.*s (another client under the same prefix?)",
             conn_name(c, name, sizeof name), (int)p.topic.len, (const char *)p.topic.ptr);
        return;
    }
    sub_count(c, pub, seq, now > ts ? now - ts : 0, now);
}

static void handle_frame(conn *c, const mqtt_frame *f, uint64_t now)
{
    char name[64];
    switch (f->type) {
    case MQTT_CONNACK: {
        mqtt_connack ca;
        int rc = mqtt_decode_connack(f, &ca);
        if (rc < 0 || c->state != ST_CONNACK) {
            fail("%s: bad CONNACK: %s", conn_name(c, name, sizeof name),
                 rc < 0 ? mqtt_strerror(rc) : "unexpected");
            return;
        }
        if (ca.return_code != MQTT_CONNACK_ACCEPTED) {
            static const char *const why[] = { "", "unacceptable protocol version",
                                               "identifier rejected", "server unavailable",
                                               "bad user name or password", "not authorized" };
            fail("%s: broker refused the connection: return code %u (%s)",
                 conn_name(c, name, sizeof name), ca.return_code,
                 ca.return_code < 6 ? why[ca.return_code] : "unknown");
            return;
        }
        b.last_progress = ev_now(b.loop);
        if (c->role == ROLE_HS) {
            c->recycle = true; /* on_io closes it once this read is over */
            return;
        }
        b.pending_connects--;
        if (c->role == ROLE_SUB) {
            char filter[320];
            const char *multi = b.topics > 1 ? "/#" : "";
            int len;
            if (b.pairs)
                len = snprintf(filter, sizeof filter, "%s/%u%s", b.prefix, c->index, multi);
            else if (b.pubs == 1)
                len = snprintf(filter, sizeof filter, "%s/0%s", b.prefix, multi);
            else
                len = snprintf(filter, sizeof filter, "%s/#", b.prefix);
            mqtt_span fs = { (const uint8_t *)filter, (size_t)len };
            uint8_t q = (uint8_t)b.qos;
            APPEND(&c->out, mqtt_encode_subscribe(ptr_, cap_, 1, &fs, &q, 1));
            c->state = ST_SUBACK;
        } else {
            conn_ready(c);
        }
        open_more();
        break;
    }
    case MQTT_SUBACK: {
        mqtt_suback sa;
        int rc = mqtt_decode_suback(f, &sa);
        if (rc < 0 || c->state != ST_SUBACK || sa.codes.len != 1) {
            fail("%s: bad SUBACK: %s", conn_name(c, name, sizeof name),
                 rc < 0 ? mqtt_strerror(rc) : "unexpected");
            return;
        }
        if (sa.codes.ptr[0] == MQTT_SUBACK_FAILURE) {
            fail("%s: broker refused the subscription under %s", conn_name(c, name, sizeof name),
                 b.prefix);
            return;
        }
        b.last_progress = ev_now(b.loop);
        conn_ready(c);
        break;
    }
    case MQTT_PUBLISH:
        if (c->role != ROLE_SUB || c->state != ST_READY) {
            fail("%s: unexpected PUBLISH", conn_name(c, name, sizeof name));
            return;
        }
        sub_publish(c, f, now);
        break;
    case MQTT_PUBREL: {
        uint16_t id;
        int rc = mqtt_decode_packet_id(f, &id);
        if (rc < 0 || c->role != ROLE_SUB) {
            fail("%s: bad PUBREL", conn_name(c, name, sizeof name));
            return;
        }
        APPEND(&c->out, mqtt_encode_packet_id(ptr_, cap_, MQTT_PUBCOMP, id));
        break;
    }
    case MQTT_PUBACK:
    case MQTT_PUBREC:
    case MQTT_PUBCOMP:
        if (c->role != ROLE_PUB) {
            fail("%s: unexpected %s", conn_name(c, name, sizeof name), mqtt_type_name(f->type));
            return;
        }
        pub_ack(c, f);
        break;
    case MQTT_PINGRESP:
        break;
    default:
        fail("%s: unexpected %s from the broker", conn_name(c, name, sizeof name),
             mqtt_type_name(f->type));
        break;
    }
}

static void conn_read(conn *c)
{
    char name[64];
    /* A few reads per wakeup, then let the other connections have a turn;
     * over TLS, read until mbedtls wants more from the socket: what it has
     * decrypted already would not wake the loop again. */
    for (int round = 0; (c->ssl || round < 4) && b.phase != PH_DONE && !c->recycle; round++) {
        bench_buf *in = &c->in;
        size_t want = in->cap < IN_READ_MAX ? in->cap : IN_READ_MAX;
        if (want < IN_MIN)
            want = IN_MIN;
        if (in->cap - in->len < want / 2)
            buf_reserve(in, want / 2);
        size_t room = in->cap - in->len;
        ssize_t n;
        if (c->ssl) {
            int r = mbedtls_ssl_read(c->ssl, in->p + in->len, room);
            if (r == MBEDTLS_ERR_SSL_WANT_READ || r == MBEDTLS_ERR_SSL_WANT_WRITE)
                return;
            if (r == 0 || r == MBEDTLS_ERR_SSL_PEER_CLOSE_NOTIFY || r == MBEDTLS_ERR_SSL_CONN_EOF) {
                n = 0;
            } else if (r < 0) {
                conn_lost(c, tls_error(r));
                return;
            } else {
                n = r;
            }
        } else {
            n = read(c->fd, in->p + in->len, room);
        }
        if (n == 0) {
            conn_lost(c, "connection closed by the broker");
            return;
        }
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno != EAGAIN && errno != EWOULDBLOCK)
                conn_lost(c, strerror(errno));
            return;
        }
        in->len += (size_t)n;
        uint64_t now = now_ns();
        for (;;) {
            mqtt_frame f;
            ptrdiff_t r = mqtt_frame_split(in->p + in->off, in->len - in->off,
                                           b.size + 64 * 1024 + 1024 * 1024, &f);
            if (r == 0)
                break;
            if (r < 0) {
                fail("%s: malformed packet from the broker: %s", conn_name(c, name, sizeof name),
                     mqtt_strerror((int)r));
                return;
            }
            handle_frame(c, &f, now);
            if (b.phase == PH_DONE)
                return;
            in->off += (size_t)r;
            if (c->recycle)
                return;
        }
        if (in->off == in->len)
            in->off = in->len = 0;
        else if (in->len == in->cap)
            buf_reserve(in, in->cap); /* a frame larger than the buffer */
        if ((size_t)n < room && !c->ssl)
            break; /* drained the socket */
        if (in->cap < IN_READ_MAX)
            buf_reserve(in, in->cap); /* busy connection: read bigger chunks */
    }
}

/* ---- publishing ----------------------------------------------------------- */

static void pub_encode_one(conn *c)
{
    uint16_t id = 0;
    if (b.qos > 0) {
        /* A free id always exists: the window is at most 65535 and id 0 is
         * never used [MQTT-2.3.1-1]. */
        do {
            c->next_id = (uint16_t)(c->next_id + 1);
        } while (c->next_id == 0 || c->ids[c->next_id]);
        id = c->next_id;
        c->ids[id] = 1;
        c->inflight++;
    }
    uint32_t magic = BENCH_MAGIC, seq = c->sent;
    size_t size = b.size;
    if (b.json_payload) {
        /* A reading that varies: 15.00 .. 24.99, the same sequence for every
         * publisher. */
        int n = snprintf((char *)b.payload, b.size, "{\"ts\":%" PRIu64 ",\"seq\":%" PRIu32
                         ",\"v\":%u.%02u}", wall_ms(), seq, 15u + seq % 1000u / 100u,
                         seq % 100u);
        size = (size_t)n;
    } else {
        uint64_t ts = now_ns();
        memcpy(b.payload, &magic, 4);
        memcpy(b.payload + 4, &c->index, 4);
        memcpy(b.payload + 8, &seq, 4);
        memcpy(b.payload + 12, &ts, 8);
    }
    b.payload_bytes += size;
    mqtt_publish p = {
        .topic = { (const uint8_t *)c->topic, c->topic_len },
        .payload = { b.payload, size },
        .qos = (uint8_t)b.qos,
        .retain = b.retain,
        .packet_id = id,
    };
    char topic[340];
    if (b.topics > 1) { /* --topics K: PREFIX/i/0 .. PREFIX/i/K-1, in turn */
        int n = snprintf(topic, sizeof topic, "%s/%u", c->topic, seq % b.topics);
        p.topic = (mqtt_span){ (const uint8_t *)topic, (size_t)n };
    }
    APPEND(&c->out, mqtt_encode_publish(ptr_, cap_, &p));
    c->sent++;
    b.sent_total++;
}

/* How many messages publisher c should have sent by now in a paced run.
 * Publisher i runs i/P of a period behind publisher 0, so that P publishers
 * do not all fire on the same tick. */
static uint32_t pace_due(const conn *c)
{
    double elapsed = (double)(now_ns() - b.t_start) / 1e9;
    double due = floor(elapsed * b.rate_per_pub + (double)c->index / b.pubs) + 1;
    return due > 4e9 ? UINT32_MAX - 1 : (uint32_t)due;
}

/* Encode as many messages as the limit, the pace, the window and the
 * high-water mark allow, then write them. Closed-loop runs come back here
 * each time the socket is writable, so the kernel's buffer paces them. */
static void pub_fill(conn *c)
{
    if (c->fd < 0 || c->state != ST_READY)
        return;
    uint32_t target = c->limit;
    if (b.rate > 0) {
        uint32_t due = pace_due(c);
        if (due < target)
            target = due;
    }
    uint32_t before = c->sent;
    while (b.phase == PH_RUN && c->sent < target && buf_pending(&c->out) < OUT_HIGH_WATER &&
           (b.qos == 0 || c->inflight < b.window) && flow_open())
        pub_encode_one(c);
    if (!flow_open())
        b.flow_blocked = true;
    if (c->sent != before)
        b.last_progress = ev_now(b.loop);
    if (conn_flush(c) < 0)
        return;
    if (b.qos == 0 && buf_pending(&c->out) == 0)
        c->done = c->sent;
    pub_check_finished(c);
}

static void on_io(EV_P_ ev_io *w, int revents)
{
    conn *c = (conn *)w;
    (void)loop;
    if (c->state == ST_CONNECTING) {
        finish_connect(c);
        return;
    }
    if (c->state == ST_TLS) {
        tls_step(c);
        return;
    }
    if (c->role == ROLE_HS) {
        if (revents & EV_READ)
            conn_read(c);
        if (b.phase == PH_DONE)
            return;
        if (c->recycle)
            hs_finished(c);
        else if (conn_flush(c) == 0)
            conn_watch(c);
        return;
    }
    uint32_t before = c->done;
    uint64_t unique = b.unique;
    if (revents & EV_READ)
        conn_read(c);
    if (b.phase == PH_DONE)
        return;
    if (c->role == ROLE_PUB)
        pub_fill(c); /* acks may have opened the window; writable means room */
    else if (conn_flush(c) < 0)
        return;
    if (b.phase == PH_DONE)
        return;
    if (c->done != before || b.unique != unique || (revents & EV_WRITE))
        b.last_progress = ev_now(b.loop);
    if (c->role == ROLE_SUB) {
        check_done();
        /* Resume blocked publishers once half the allowance has drained, not
         * after every delivery: waking all of them costs P calls. */
        if (b.flow_blocked && b.phase == PH_RUN &&
            b.sent_total * b.fanout + b.max_outstanding / 2 <= b.unique + b.max_outstanding) {
            b.flow_blocked = false;
            for (unsigned i = 0; i < b.pubs && b.phase == PH_RUN; i++) {
                pub_fill(&b.conns[i]);
                conn_watch(&b.conns[i]);
            }
        }
    }
    conn_watch(c);
}

static void on_pace(EV_P_ ev_io *w, int revents)
{
    uint64_t expirations;
    (void)loop, (void)revents;
    if (read(w->fd, &expirations, sizeof expirations) < 0)
        return; /* EAGAIN: a spurious wakeup */
    for (unsigned i = 0; i < b.pubs && b.phase == PH_RUN; i++) {
        pub_fill(&b.conns[i]);
        conn_watch(&b.conns[i]);
    }
}

/* -d: stop publishing; what was sent still has to arrive. */
static void on_stop(EV_P_ ev_timer *w, int revents)
{
    (void)loop, (void)w, (void)revents;
    if (b.phase == PH_HOLD) {
        b.phase = PH_DONE;
        ev_break(b.loop, EVBREAK_ALL);
        return;
    }
    for (unsigned i = 0; i < b.pubs; i++) {
        conn *c = &b.conns[i];
        c->limit = c->sent;
        pub_fill(c);
        if (b.phase == PH_DONE)
            return;
        conn_watch(c);
    }
    check_done();
}

static void on_stdin(EV_P_ ev_io *w, int revents)
{
    char buf[512];
    (void)revents;
    ssize_t n = read(w->fd, buf, sizeof buf);
    if (n > 0 || (n < 0 && (errno == EINTR || errno == EAGAIN)))
        return;
    ev_io_stop(EV_A_ w);
    b.phase = PH_DONE;
    ev_break(EV_A_ EVBREAK_ALL);
}

static void start_run(void)
{
    b.t_ready = now_ns();
    b.last_progress = ev_now(b.loop);
    if (b.idle_mode) {
        printf("ready %zu\n", b.nconns);
        fflush(stdout);
        b.phase = PH_HOLD;
        if (b.have_duration) {
            ev_timer_init(&b.stop, on_stop, b.duration, 0);
            ev_timer_start(b.loop, &b.stop);
        } else {
            ev_io_init(&b.stdin_watch, on_stdin, 0, EV_READ);
            ev_io_start(b.loop, &b.stdin_watch);
        }
        return;
    }
    b.phase = PH_RUN;
    b.t_start = now_ns();
    b.gen_cpu = cpu_seconds();
    if (b.have_duration) {
        ev_timer_init(&b.stop, on_stop, b.duration, 0);
        ev_timer_start(b.loop, &b.stop);
    }
    if (b.rate > 0) {
        /* A timerfd, not an ev_timer: epoll timeouts have millisecond
         * resolution, and a 1 ms tick at 10k msg/s sends bursts of ten whose
         * queueing would show up as broker latency. */
        double gap_ns = 1e9 / b.rate;
        long long ns = gap_ns < PACE_MIN_NS ? PACE_MIN_NS : (long long)gap_ns;
        struct itimerspec its = {
            .it_interval = { ns / 1000000000, ns % 1000000000 },
            .it_value = { 0, 1 },
        };
        int fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
        if (fd < 0 || timerfd_settime(fd, 0, &its, NULL) < 0) {
            fail("timerfd: %s", strerror(errno));
            return;
        }
        ev_io_init(&b.pace, on_pace, fd, EV_READ);
        ev_io_start(b.loop, &b.pace);
    } else {
        for (unsigned i = 0; i < b.pubs && b.phase == PH_RUN; i++) {
            pub_fill(&b.conns[i]);
            conn_watch(&b.conns[i]);
        }
    }
}

/* ---- handshakes ----------------------------------------------------------- */

static void hs_next(conn *c)
{
    if (b.phase == PH_RUN && b.hs_started < b.handshakes) {
        b.hs_started++;
        start_connect(c);
    }
}

/* A --procs child: tell the parent that the untimed part is over, and wait
 * until it says go (closes the pipe) so that all children start together.
 * Blocking is fine: the only connection so far, the warm-up, is closed. */
static void hs_barrier(void)
{
    if (b.ready_fd < 0)
        return;
    char ch = 'r';
    ssize_t n;
    do
        n = write(b.ready_fd, &ch, 1);
    while (n < 0 && errno == EINTR);
    close(b.ready_fd);
    b.ready_fd = -1;
    do
        n = read(b.go_fd, &ch, 1);
    while (n < 0 && errno == EINTR);
    close(b.go_fd);
    b.go_fd = -1;
    ev_now_update(b.loop);
}

static void hs_timed_start(void)
{
    hs_barrier();
    b.t_start = now_ns();
    b.gen_cpu = cpu_seconds();
    b.last_progress = ev_now(b.loop);
    for (size_t i = 0; i < b.nconns && b.phase == PH_RUN; i++)
        hs_next(&b.conns[i]);
}

static void hs_run(void)
{
    b.phase = PH_RUN;
    if (b.resume) { /* one untimed full handshake provides the session */
        b.hs_warmup = true;
        start_connect(&b.conns[0]);
        return;
    }
    hs_timed_start();
}

/* A connection got its CONNACK (or finished its handshake): say goodbye,
 * close it, and start the next one in its slot. */
static void hs_finished(conn *c)
{
    if (!b.hs_only) {
        uint8_t disc[2];
        size_t n = mqtt_encode_empty(disc, sizeof disc, MQTT_DISCONNECT);
        (void)mbedtls_ssl_write(c->ssl, disc, n);
    }
    (void)mbedtls_ssl_close_notify(c->ssl);
    ev_io_stop(b.loop, &c->io);
    close(c->fd);
    c->fd = -1;
    c->events = 0;
    c->state = ST_NEW;
    c->recycle = false;
    c->in.off = c->in.len = c->out.off = c->out.len = 0;
    c->tls_write_len = 0;
    b.last_progress = ev_now(b.loop);
    if (b.hs_warmup) {
        b.hs_warmup = false;
        hs_timed_start();
        return;
    }
    b.hs_done++;
    if (c->tls_full)
        b.hs_full++;
    if (b.hs_done == b.handshakes) {
        b.t_last_deliv = now_ns();
        b.phase = PH_DONE;
        ev_break(b.loop, EVBREAK_ALL);
        return;
    }
    hs_next(c);
}

static void on_housekeeping(EV_P_ ev_timer *w, int revents)
{
    (void)w, (void)revents;
    double now = ev_now(EV_A);
    if (b.phase == PH_SETUP && now - b.last_progress > b.setup_timeout) {
        fail("no progress for %.0f s: %zu of %zu clients ready (connected%s)", b.setup_timeout,
             b.ready, b.nconns, b.subs && !b.idle_mode ? ", subscribed" : "");
        return;
    }
    if ((b.phase == PH_RUN || b.phase == PH_DRAIN) && now - b.last_progress > b.drain_timeout) {
        b.phase = PH_DONE; /* the report shows what is missing */
        ev_break(EV_A_ EVBREAK_ALL);
        return;
    }
    if (b.keepalive > 0 && now - b.last_ping >= b.keepalive / 2.0) {
        b.last_ping = now;
        for (size_t i = 0; i < b.nconns; i++) {
            conn *c = &b.conns[i];
            if (c->state != ST_READY || c->fd < 0)
                continue;
            APPEND(&c->out, mqtt_encode_empty(ptr_, cap_, MQTT_PINGREQ));
            if (conn_flush(c) < 0)
                return;
            conn_watch(c);
        }
    }
}

/* ---- setup and report ----------------------------------------------------- */

static void usage(FILE *f)
{
    fprintf(f,
        "usage: gatemq-bench [options]\n"
        "  -h HOST        broker host (127.0.0.1)\n"
        "  -p PORT        broker port (1883)\n"
        "  -q QOS         0, 1 or 2 (0)\n"
        "  -P N           publishers (1)\n"
        "  -S N           subscribers (1); each receives every publisher's messages\n"
        "  -n N           messages per publisher (10000)\n"
        "  -d SECONDS     publish for this long instead of -n; with --idle, hold this long\n"
        "  -s BYTES       payload size, >= %d (64)\n"
        "  -r RATE        total messages/s, paced; 0 = as fast as possible (0)\n"
        "  -w N           QoS 1/2 messages in flight per publisher (64)\n"
        "  -o N           at most N deliveries outstanding (published, not yet\n"
        "                 received) over all subscribers; 0 = unbounded\n"
        "                 (default: 1 MiB worth, at least 64)\n"
        "  -t PREFIX      topic prefix (bench/<pid>); publisher i uses PREFIX/i\n"
        "  -k SECONDS     keep alive (0 = none)\n"
        "  -T SECONDS     give up after this long without progress (10)\n"
        "  --pairs        subscriber i receives only publisher i (needs -P = -S)\n"
        "  --json         print the result as one JSON object\n"
        "  --json-payload publish telemetry readings {\"ts\":<wall-clock ms>,\"seq\":N,\"v\":X}\n"
        "                 (about 50 bytes) instead of -s bytes of binary header and filler\n"
        "  --client-id ID client id of the run's only connection (e.g. a device's CN)\n"
        "  --idle N       open N idle connections, print \"ready N\", hold them until\n"
        "                 stdin reaches EOF (or -d SECONDS), then close them\n"
        "  --retain       publish retained messages\n"
        "  --topics K     publisher i cycles over PREFIX/i/0 .. PREFIX/i/K-1 (1: PREFIX/i)\n"
        "  -u, --username USER, --password PASS   log in with a user name and password\n"
        "  --tls          TLS 1.2 for every connection (needs --cafile)\n"
        "  --cafile FILE  CA certificate(s) the broker's certificate must chain to\n"
        "  --cert FILE --key FILE   client certificate and key\n"
        "  --servername NAME   name the server certificate must carry, and SNI (localhost)\n"
        "  --handshakes N open and close N TLS connections, -c at a time: handshake,\n"
        "                 CONNECT, CONNACK, DISCONNECT, close; reports handshakes/s\n"
        "  --handshake-only   with --handshakes: close right after the handshake\n"
        "  --resume       resume the session (ticket) of one untimed full handshake\n"
        "  -c N           concurrent connections of --handshakes (16)\n"
        "  --procs N      --handshakes in N generator processes, each with its share of\n"
        "                 the handshakes and of -c, started together (1)\n"
        "  --sources N    connect from N loopback addresses 127.0.0.1 .. 127.0.0.N in\n"
        "                 turn (default: one per %d connections to an IPv4 loopback\n"
        "                 broker, since one address has about 28,000 ports)\n"
        "  --startup SECONDS   wait up to SECONDS for a starting broker; report when it\n"
        "                 first accepted a TCP connection, CONNECT and SUBSCRIBE\n"
        "  --free-port    print a currently free TCP port on 127.0.0.1 and exit\n"
        "  --help         this text\n"
        "Exit status: 0 ok, 1 lost messages or failure, 2 bad usage.\n",
        BENCH_HDR, CONNS_PER_SOURCE);
}

static void bad_usage(const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "gatemq-bench: ");
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\n(try --help)\n");
    exit(2);
}

static unsigned long parse_uint(const char *opt, const char *s, unsigned long min,
                                unsigned long max)
{
    char *end;
    errno = 0;
    unsigned long v = strtoul(s, &end, 10);
    if (errno || end == s || *end || s[0] == '-' || v < min || v > max)
        bad_usage("%s wants an integer in %lu..%lu, not '%s'", opt, min, max, s);
    return v;
}

static double parse_double(const char *opt, const char *s, double min, double max)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !(v >= min && v <= max))
        bad_usage("%s wants a number in %g..%g, not '%s'", opt, min, max, s);
    return v;
}

static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t len = sizeof sa;
    if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0 ||
        getsockname(fd, (struct sockaddr *)&sa, &len) < 0) {
        fprintf(stderr, "gatemq-bench: cannot find a free port: %s\n", strerror(errno));
        return 1;
    }
    printf("%u\n", ntohs(sa.sin_port));
    close(fd);
    return 0;
}

static void parse_args(int argc, char **argv)
{
    enum { OPT_JSON = 256, OPT_IDLE, OPT_PAIRS, OPT_FREE_PORT, OPT_HELP, OPT_RETAIN, OPT_TOPICS,
           OPT_USERNAME, OPT_PASSWORD, OPT_TLS, OPT_CAFILE, OPT_CERT, OPT_KEY, OPT_SERVERNAME,
           OPT_HANDSHAKES, OPT_HS_ONLY, OPT_RESUME, OPT_STARTUP, OPT_JSON_PAYLOAD,
           OPT_CLIENT_ID, OPT_PROCS, OPT_SOURCES };
    static const struct option longopts[] = {
        { "retain", no_argument, NULL, OPT_RETAIN },
        { "topics", required_argument, NULL, OPT_TOPICS },
        { "username", required_argument, NULL, OPT_USERNAME },
        { "password", required_argument, NULL, OPT_PASSWORD },
        { "tls", no_argument, NULL, OPT_TLS },
        { "cafile", required_argument, NULL, OPT_CAFILE },
        { "cert", required_argument, NULL, OPT_CERT },
        { "key", required_argument, NULL, OPT_KEY },
        { "servername", required_argument, NULL, OPT_SERVERNAME },
        { "handshakes", required_argument, NULL, OPT_HANDSHAKES },
        { "handshake-only", no_argument, NULL, OPT_HS_ONLY },
        { "resume", no_argument, NULL, OPT_RESUME },
        { "procs", required_argument, NULL, OPT_PROCS },
        { "sources", required_argument, NULL, OPT_SOURCES },
        { "startup", required_argument, NULL, OPT_STARTUP },
        { "json", no_argument, NULL, OPT_JSON },
        { "json-payload", no_argument, NULL, OPT_JSON_PAYLOAD },
        { "client-id", required_argument, NULL, OPT_CLIENT_ID },
        { "idle", required_argument, NULL, OPT_IDLE },
        { "pairs", no_argument, NULL, OPT_PAIRS },
        { "free-port", no_argument, NULL, OPT_FREE_PORT },
        { "help", no_argument, NULL, OPT_HELP },
        { NULL, 0, NULL, 0 },
    };
    int opt;
    opterr = 0;
    while ((opt = getopt_long(argc, argv, ":h:p:q:P:S:n:d:s:r:w:o:t:k:T:c:u:", longopts, NULL)) != -1) {
        switch (opt) {
        case 'h': b.host = optarg; break;
        case 'p': parse_uint("-p", optarg, 1, 65535); b.port = optarg; break;
        case 'q': b.qos = (unsigned)parse_uint("-q", optarg, 0, 2); break;
        case 'P': b.pubs = (unsigned)parse_uint("-P", optarg, 0, 1000000); break;
        case 'S': b.subs = (unsigned)parse_uint("-S", optarg, 0, 1000000); break;
        case 'n':
            b.count = (uint32_t)parse_uint("-n", optarg, 1, UINT32_MAX - 1);
            b.have_count = true;
            break;
        case 'd':
            b.duration = parse_double("-d", optarg, 0, 1e7);
            b.have_duration = true;
            break;
        case 's':
            b.size = parse_uint("-s", optarg, BENCH_HDR, 16u << 20);
            b.have_size = true;
            break;
        case 'r': b.rate = parse_double("-r", optarg, 0, 1e9); break;
        case 'w': b.window = (unsigned)parse_uint("-w", optarg, 1, 65535); break;
        case 'o': b.max_outstanding = parse_uint("-o", optarg, 0, ULONG_MAX); break;
        case 't': b.prefix = optarg; break;
        case 'k': b.keepalive = (unsigned)parse_uint("-k", optarg, 0, 65535); break;
        case 'T': b.drain_timeout = parse_double("-T", optarg, 0.1, 1e6); break;
        case 'c': b.concurrency = (unsigned)parse_uint("-c", optarg, 1, 100000); break;
        case 'u':
        case OPT_USERNAME: b.username = optarg; break;
        case OPT_PASSWORD: b.password = optarg; break;
        case OPT_RETAIN: b.retain = true; break;
        case OPT_TOPICS: b.topics = (unsigned)parse_uint("--topics", optarg, 1, 100000000); break;
        case OPT_TLS: b.tls = true; break;
        case OPT_CAFILE: b.cafile = optarg; break;
        case OPT_CERT: b.certfile = optarg; break;
        case OPT_KEY: b.keyfile = optarg; break;
        case OPT_SERVERNAME: b.servername = optarg; break;
        case OPT_HANDSHAKES:
            b.handshakes = (uint32_t)parse_uint("--handshakes", optarg, 1, UINT32_MAX - 1);
            b.hs_mode = true;
            break;
        case OPT_HS_ONLY: b.hs_only = true; break;
        case OPT_RESUME: b.resume = true; break;
        case OPT_PROCS: b.procs = (unsigned)parse_uint("--procs", optarg, 1, 64); break;
        case OPT_SOURCES: b.sources = (unsigned)parse_uint("--sources", optarg, 1, 255); break;
        case OPT_STARTUP: b.startup = parse_double("--startup", optarg, 0.01, 1e6); break;
        case OPT_JSON: b.json = true; break;
        case OPT_JSON_PAYLOAD: b.json_payload = true; break;
        case OPT_CLIENT_ID:
            if (strlen(optarg) > 65535)
                bad_usage("--client-id is longer than 65535 bytes");
            b.client_id = optarg;
            break;
        case OPT_PAIRS: b.pairs = true; break;
        case OPT_IDLE:
            b.idle = (unsigned)parse_uint("--idle", optarg, 0, 10000000);
            b.idle_mode = true;
            break;
        case OPT_FREE_PORT: exit(free_port());
        case OPT_HELP: usage(stdout); exit(0);
        case ':': bad_usage("option %s needs a value", argv[optind - 1]); break;
        default: bad_usage("unknown option %s", argv[optind - 1]); break;
        }
    }
    if (optind < argc)
        bad_usage("unexpected argument '%s'", argv[optind]);
    if (b.tls && !b.cafile)
        bad_usage("--tls needs --cafile");
    if (!b.tls && (b.cafile || b.certfile || b.hs_mode || b.resume))
        bad_usage("--cafile, --cert, --key, --handshakes and --resume need --tls");
    if (!b.certfile != !b.keyfile)
        bad_usage("give --cert and --key together");
    if (b.hs_only && !b.hs_mode)
        bad_usage("--handshake-only needs --handshakes");
    if (b.procs > 1 && !b.hs_mode)
        bad_usage("--procs applies to --handshakes only");
    if (b.procs > 1 && (b.procs > b.handshakes || b.procs > b.concurrency))
        bad_usage("--procs %u needs at least as many handshakes and -c (%" PRIu32 ", %u)",
                  b.procs, b.handshakes, b.concurrency);
    if (b.hs_mode && b.idle_mode)
        bad_usage("give either --handshakes or --idle, not both");
    if (b.startup > 0 && (b.tls || b.idle_mode))
        bad_usage("--startup probes plain MQTT only");
    if (b.json_payload && (b.have_size || b.idle_mode || b.hs_mode || b.startup > 0))
        bad_usage("--json-payload sets its own payload: not with -s, --idle, --handshakes, --startup");
    if (b.client_id && b.startup > 0)
        bad_usage("--client-id does not apply to --startup");
    if (b.idle_mode || b.hs_mode || b.startup > 0)
        return;
    if (b.have_count && b.have_duration)
        bad_usage("give either -n or -d, not both");
    if (b.pubs == 0)
        bad_usage("-P must be at least 1");
    if (b.pairs && b.pubs != b.subs)
        bad_usage("--pairs needs as many subscribers as publishers (-P %u, -S %u)", b.pubs, b.subs);
    if (b.have_duration && b.duration <= 0)
        bad_usage("-d must be positive");
    if (b.prefix) {
        size_t n = strlen(b.prefix);
        if (n == 0 || n > 256 || !mqtt_topic_name_valid((const uint8_t *)b.prefix, n))
            bad_usage("-t '%s' is not a valid topic prefix (1..256 bytes, no wildcards)",
                      b.prefix);
    }
}

/* Descriptors are the first limit a 10k-connection run meets: take the hard
 * limit, which needs no privilege. */
static void raise_nofile(size_t need)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
        return;
    if (rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
        getrlimit(RLIMIT_NOFILE, &rl);
    }
    if (rl.rlim_cur != RLIM_INFINITY && need > rl.rlim_cur) {
        fprintf(stderr,
                "gatemq-bench: %zu connections need %zu descriptors but the limit is %llu "
                "(raise the hard limit: ulimit -Hn)\n",
                need - 16, need, (unsigned long long)rl.rlim_cur);
        exit(1);
    }
}

static void setup(void)
{
    struct addrinfo hints = { .ai_socktype = SOCK_STREAM, .ai_family = AF_UNSPEC };
    int rc = getaddrinfo(b.host, b.port, &hints, &b.addr);
    if (rc != 0) {
        fprintf(stderr, "gatemq-bench: cannot resolve %s: %s\n", b.host, gai_strerror(rc));
        exit(1);
    }
    static char prefix[32];
    if (!b.prefix) { /* a per-process prefix keeps concurrent runs apart */
        snprintf(prefix, sizeof prefix, "bench/%ld", (long)getpid());
        b.prefix = prefix;
    }
    if (b.tls)
        tls_init();
    if (b.hs_mode)
        b.nconns = b.concurrency < b.handshakes ? b.concurrency : b.handshakes;
    else
        b.nconns = b.idle_mode ? b.idle : (size_t)b.pubs + b.subs;
    if (b.client_id && (b.hs_mode ? b.concurrency > 1 : b.nconns != 1)) {
        /* Two connections with one id would take each other's session over. */
        fprintf(stderr, "gatemq-bench: --client-id needs a run of one connection (-P 1 -S 0, "
                        "--idle 1, or --handshakes with -c 1)\n");
        exit(2);
    }
    bool loopback4 = b.addr->ai_family == AF_INET &&
                     ntohl(((struct sockaddr_in *)b.addr->ai_addr)->sin_addr.s_addr) >> 24 == 127;
    if (b.sources == 0 && loopback4 && b.nconns > CONNS_PER_SOURCE) {
        size_t n = (b.nconns + CONNS_PER_SOURCE - 1) / CONNS_PER_SOURCE;
        b.sources = n > 255 ? 255 : (unsigned)n;
    }
    if (b.sources > 1 && !loopback4) {
        fprintf(stderr, "gatemq-bench: --sources needs a broker on an IPv4 loopback address\n");
        exit(2);
    }
    raise_nofile(b.nconns + 16);
    b.conns = xcalloc(b.nconns, sizeof *b.conns);
    for (size_t i = 0; i < b.nconns; i++) {
        conn *c = &b.conns[i];
        c->fd = -1;
        if (b.hs_mode) {
            c->role = ROLE_HS;
            c->index = (uint32_t)i;
        } else if (b.idle_mode) {
            c->role = ROLE_IDLE;
            c->index = (uint32_t)i;
        } else if (i < b.pubs) {
            c->role = ROLE_PUB;
            c->index = (uint32_t)i;
            c->limit = b.have_duration ? UINT32_MAX - 1 : b.count;
            char t[320];
            int n = snprintf(t, sizeof t, "%s/%u", b.prefix, c->index);
            c->topic = strdup(t);
            c->topic_len = (size_t)n;
            if (!c->topic) {
                fprintf(stderr, "gatemq-bench: out of memory\n");
                exit(1);
            }
            if (b.qos > 0)
                c->ids = xcalloc(65536, 1);
        } else {
            c->role = ROLE_SUB;
            c->index = (uint32_t)(i - b.pubs);
            c->next_seq = xcalloc(b.pairs ? 1 : b.pubs, sizeof *c->next_seq);
        }
    }
    if (b.json_payload)
        b.size = 96; /* the buffer; readings take about 50 bytes of it */
    b.payload = xcalloc(1, b.size);
    for (size_t i = BENCH_HDR; i < b.size; i++)
        b.payload[i] = (uint8_t)('a' + i % 26);
    b.rate_per_pub = b.rate / (b.pubs ? b.pubs : 1);
    b.fanout = b.pairs ? 1 : b.subs;
    /* 1 MiB of outstanding payload keeps a fast broker busy for milliseconds
     * while staying under the output buffer at which a broker may drop QoS 0
     * messages to a slow reader (MQTT allows it; gatemq does at 4 MiB). */
    if (b.max_outstanding == UINT64_MAX) {
        b.max_outstanding = (1u << 20) / (b.size + 32);
        if (b.max_outstanding < 64)
            b.max_outstanding = 64;
    }
}

static void teardown(void)
{
    if (ev_is_active(&b.pace)) {
        ev_io_stop(b.loop, &b.pace);
        close(b.pace.fd);
    }
    uint8_t disc[2];
    size_t n = mqtt_encode_empty(disc, sizeof disc, MQTT_DISCONNECT);
    for (size_t i = 0; i < b.nconns; i++) {
        conn *c = &b.conns[i];
        bool tls = c->ssl != NULL;
        if (tls && c->fd >= 0 && c->state == ST_READY && buf_pending(&c->out) == 0) {
            (void)mbedtls_ssl_write(c->ssl, disc, n);
            (void)mbedtls_ssl_close_notify(c->ssl);
        }
        if (c->ssl) {
            mbedtls_ssl_free(c->ssl);
            free(c->ssl);
            c->ssl = NULL;
        }
        /* Buffers first: a closed connection (fd -1) may still hold them. */
        free(c->in.p);
        free(c->out.p);
        free(c->ids);
        free(c->topic);
        free(c->next_seq);
        if (c->fd < 0)
            continue;
        /* A DISCONNECT after a half-written packet would corrupt the stream. */
        if (!tls && c->state == ST_READY && buf_pending(&c->out) == 0)
            (void)!send(c->fd, disc, n, MSG_NOSIGNAL | MSG_DONTWAIT);
        ev_io_stop(b.loop, &c->io);
        close(c->fd);
        c->fd = -1;
    }
    free(b.conns);
    free(b.payload);
    freeaddrinfo(b.addr);
    if (b.tls)
        tls_free();
}

static double rate_of(uint64_t n, uint64_t from, uint64_t to)
{
    return to > from ? (double)n * 1e9 / (double)(to - from) : 0;
}

/* Error texts may quote topics: escape them for --json. */
static void print_json_string(const char *s)
{
    putchar('"');
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\')
            printf("\\%c", ch);
        else if (ch < 0x20)
            printf("\\u%04x", ch);
        else
            putchar(ch);
    }
    putchar('"');
}

static int report_idle(void)
{
    double secs = b.t_ready ? (double)(b.t_ready - b.t_setup) / 1e9 : 0;
    bool ok = !b.error[0];
    if (b.json) {
        printf("{\"mode\":\"idle\",\"ok\":%s,\"connections\":%zu,\"connected\":%zu,"
               "\"connect_seconds\":%.3f,\"error\":",
               ok ? "true" : "false", b.nconns, b.ready, secs);
        print_json_string(b.error);
        printf("}\n");
    } else {
        if (b.ready == b.nconns)
            printf("  connected   %zu idle connections in %.3f s\n", b.nconns, secs);
        printf("SUMMARY mode=idle ok=%d connections=%zu connected=%zu connect_s=%.3f\n", ok,
               b.nconns, b.ready, secs);
    }
    if (!ok)
        fprintf(stderr, "gatemq-bench: %s\n", b.error);
    return ok ? 0 : 1;
}

static int report_hs(void)
{
    bool ok = !b.error[0] && b.hs_done == b.handshakes;
    double secs = b.t_last_deliv > b.t_start && b.t_start ? (double)(b.t_last_deliv - b.t_start) / 1e9
                                                           : 0;
    double rate = secs > 0 ? (double)b.hs_done / secs : 0;
    /* With --procs: the mean share of one core per generator process. */
    double gen_busy = secs > 0 ? b.gen_cpu / secs / b.procs : 0;
    uint64_t resumed = b.hs_done - b.hs_full;
    const char *what = b.hs_only ? "TLS handshake" : "TLS handshake + CONNECT/CONNACK";
    if (b.json) {
        printf("{\"mode\":\"handshakes\",\"ok\":%s,\"what\":\"%s\",\"handshakes\":%" PRIu32
               ",\"done\":%" PRIu64 ",\"full\":%" PRIu64 ",\"resumed\":%" PRIu64
               ",\"concurrency\":%zu,\"procs\":%u,\"seconds\":%.6f,\"rate\":%.1f,"
               "\"generator_busy\":%.2f,\"error\":",
               ok ? "true" : "false", what, b.handshakes, b.hs_done, b.hs_full, resumed, b.nconns,
               b.procs, secs, rate, gen_busy);
        print_json_string(b.error);
        printf("}\n");
    } else {
        printf("gatemq-bench %s:%s %s, %zu at a time%s\n", b.host, b.port, what, b.nconns,
               b.resume ? ", resuming one session" : "");
        if (b.procs > 1)
            printf("  processes   %u, from the first connect of any to the last CONNACK of any\n",
                   b.procs);
        printf("  completed   %" PRIu64 " of %" PRIu32 " in %.3f s: %.0f/s (%" PRIu64
               " full, %" PRIu64 " resumed)\n",
               b.hs_done, b.handshakes, secs, rate, b.hs_full, resumed);
        printf("  generator   %.0f%% of one core%s%s\n", gen_busy * 100,
               b.procs > 1 ? " per process" : "",
               gen_busy > 0.9 ? " (saturated: the broker may be faster than shown)" : "");
        if (b.resume && b.hs_done && resumed < b.hs_done)
            printf("  note        the broker resumed only %" PRIu64 " of %" PRIu64 " sessions\n",
                   resumed, b.hs_done);
        printf("SUMMARY mode=handshakes result=%s handshakes=%" PRIu32 " done=%" PRIu64
               " full=%" PRIu64 " resumed=%" PRIu64 " concurrency=%zu procs=%u seconds=%.3f"
               " rate=%.1f gen_busy=%.2f\n",
               ok ? "OK" : "FAILED", b.handshakes, b.hs_done, b.hs_full, resumed, b.nconns,
               b.procs, secs, rate, gen_busy);
    }
    if (b.error[0])
        fprintf(stderr, "gatemq-bench: %s\n", b.error);
    else if (!ok)
        fprintf(stderr, "gatemq-bench: no progress for %.0f s: %" PRIu64 " of %" PRIu32
                " handshakes completed\n", b.drain_timeout, b.hs_done, b.handshakes);
    return ok ? 0 : 1;
}

/* ---- --procs: handshakes in several processes ------------------------------ */

/* A child's result, one line in one write (shorter than PIPE_BUF, so lines of
 * several children never interleave): start and end of its timed part
 * (CLOCK_MONOTONIC ns, the same clock in every process), handshakes done and
 * full, CPU seconds, then the error text (empty when it succeeded). */
static void hs_child_report(void)
{
    char line[512];
    int n = snprintf(line, sizeof line, "R %" PRIu64 " %" PRIu64 " %" PRIu64 " %" PRIu64
                     " %.6f %.300s\n", b.t_start, b.t_last_deliv, b.hs_done, b.hs_full,
                     b.gen_cpu, b.error);
    if (n > 0 && (size_t)n < sizeof line)
        (void)!write(b.result_fd, line, (size_t)n);
    close(b.result_fd);
}

/* Fork --procs children, each with its share of the handshakes and of -c;
 * release them together once every one has finished its untimed warm-up, and
 * report the sum of their results over the span from the first child's first
 * connect to the last child's last CONNACK. Returns -1 in a child (which then
 * runs as a generator of its own), the exit status in the parent. */
static int hs_fork(void)
{
    int ready[2], go[2], res[2];
    if (pipe2(ready, O_CLOEXEC) < 0 || pipe2(go, O_CLOEXEC) < 0 || pipe2(res, O_CLOEXEC) < 0) {
        fprintf(stderr, "gatemq-bench: pipe: %s\n", strerror(errno));
        return 1;
    }
    fflush(stdout);
    fflush(stderr);
    unsigned started = 0;
    for (unsigned i = 0; i < b.procs; i++) {
        pid_t pid = fork();
        if (pid < 0) {
            fprintf(stderr, "gatemq-bench: fork: %s\n", strerror(errno));
            break;
        }
        if (pid == 0) {
            close(ready[0]);
            close(go[1]);
            close(res[0]);
            b.ready_fd = ready[1];
            b.go_fd = go[0];
            b.result_fd = res[1];
            b.handshakes = b.handshakes / b.procs + (i < b.handshakes % b.procs);
            b.concurrency = b.concurrency / b.procs + (i < b.concurrency % b.procs);
            b.procs = 1;
            return -1;
        }
        started++;
    }
    close(ready[1]);
    close(go[0]);
    close(res[1]);
    /* Wait for every child's ready byte; one that exits first has failed
     * (its result says why), and the others are let go at once. */
    unsigned ready_n = 0, exited = 0;
    while (ready_n < started && exited == 0) {
        struct pollfd pfd = { .fd = ready[0], .events = POLLIN };
        if (poll(&pfd, 1, 100) > 0) {
            char buf[64];
            ssize_t n = read(ready[0], buf, sizeof buf);
            if (n > 0)
                ready_n += (unsigned)n;
            else if (n == 0)
                break; /* every child has exited */
        }
        int st;
        while (waitpid(-1, &st, WNOHANG) > 0)
            exited++;
    }
    close(go[1]); /* go */
    close(ready[0]);

    FILE *f = fdopen(res[0], "r");
    char line[600];
    unsigned reports = 0;
    uint64_t t_first = 0, t_last = 0;
    b.hs_done = b.hs_full = 0;
    b.gen_cpu = 0;
    while (f && fgets(line, sizeof line, f)) {
        uint64_t ts, te, done, full;
        double cpu;
        int off = 0;
        if (sscanf(line, "R %" SCNu64 " %" SCNu64 " %" SCNu64 " %" SCNu64 " %lf %n", &ts, &te,
                   &done, &full, &cpu, &off) < 5)
            continue;
        reports++;
        if (ts && (!t_first || ts < t_first))
            t_first = ts;
        if (te > t_last)
            t_last = te;
        b.hs_done += done;
        b.hs_full += full;
        b.gen_cpu += cpu;
        line[strcspn(line, "\n")] = 0;
        if (!b.error[0] && line[off])
            snprintf(b.error, sizeof b.error, "%s", line + off);
    }
    if (f)
        fclose(f);
    while (wait(NULL) > 0)
        ;
    if (!b.error[0] && reports < b.procs)
        snprintf(b.error, sizeof b.error, "%u of %u generator processes reported no result",
                 b.procs - reports, b.procs);
    b.t_start = t_first;
    b.t_last_deliv = t_last;
    b.nconns = b.concurrency < b.handshakes ? b.concurrency : b.handshakes;
    return report_hs();
}

/* ---- --startup: a blocking probe of a starting broker ---------------------- */

/* Read one packet into buf (cap bytes) before the deadline. Returns its frame
 * size, 0 when the broker closed the connection or the time ran out, -1 when
 * it is malformed. */
static ptrdiff_t probe_read(int fd, uint8_t *buf, size_t cap, size_t *len, mqtt_frame *f,
                            uint64_t deadline)
{
    for (;;) {
        ptrdiff_t r = mqtt_frame_split(buf, *len, cap, f);
        if (r != 0)
            return r;
        uint64_t now = now_ns();
        if (now >= deadline || *len == cap)
            return 0;
        struct pollfd pfd = { .fd = fd, .events = POLLIN };
        int ms = (int)((deadline - now) / 1000000) + 1;
        if (poll(&pfd, 1, ms) < 0 && errno != EINTR)
            return 0;
        ssize_t n = read(fd, buf + *len, cap - *len);
        if (n == 0 || (n < 0 && errno != EINTR && errno != EAGAIN))
            return 0;
        if (n > 0)
            *len += (size_t)n;
    }
}

/* One attempt: connect, CONNECT, CONNACK, SUBSCRIBE, SUBACK. Fills the times
 * (ns after t0) reached so far; returns 0 when all were reached. */
static int probe_once(uint64_t t0, uint64_t deadline, uint64_t *t_listen, uint64_t *t_connack,
                      uint64_t *t_suback)
{
    int fd = socket(b.addr->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(fd, b.addr->ai_addr, b.addr->ai_addrlen) < 0) {
        close(fd);
        return -1;
    }
    if (!*t_listen)
        *t_listen = now_ns() - t0;
    uint8_t out[512], in[4096];
    size_t inlen = 0;
    mqtt_frame f;
    char id[24];
    int idlen = snprintf(id, sizeof id, "gb%ldprobe", (long)getpid() % 10000000);
    mqtt_connect m = {
        .clean_session = true,
        .client_id = { (const uint8_t *)id, (size_t)idlen },
        .has_username = b.username != NULL,
        .username = { (const uint8_t *)b.username, b.username ? strlen(b.username) : 0 },
        .has_password = b.password != NULL,
        .password = { (const uint8_t *)b.password, b.password ? strlen(b.password) : 0 },
    };
    size_t n = mqtt_encode_connect(out, sizeof out, &m);
    int rc = -1;
    mqtt_connack ca;
    if (n > sizeof out || send(fd, out, n, MSG_NOSIGNAL) != (ssize_t)n)
        goto done;
    ptrdiff_t r = probe_read(fd, in, sizeof in, &inlen, &f, deadline);
    if (r <= 0 || f.type != MQTT_CONNACK || mqtt_decode_connack(&f, &ca) < 0 ||
        ca.return_code != MQTT_CONNACK_ACCEPTED)
        goto done;
    *t_connack = now_ns() - t0;
    memmove(in, in + r, inlen - (size_t)r);
    inlen -= (size_t)r;
    char filter[320];
    int flen = snprintf(filter, sizeof filter, "%s/startup-probe", b.prefix);
    mqtt_span fs = { (const uint8_t *)filter, (size_t)flen };
    uint8_t q = 0;
    n = mqtt_encode_subscribe(out, sizeof out, 1, &fs, &q, 1);
    if (n > sizeof out || send(fd, out, n, MSG_NOSIGNAL) != (ssize_t)n)
        goto done;
    r = probe_read(fd, in, sizeof in, &inlen, &f, deadline);
    if (r <= 0 || f.type != MQTT_SUBACK)
        goto done;
    *t_suback = now_ns() - t0;
    n = mqtt_encode_empty(out, sizeof out, MQTT_DISCONNECT);
    (void)!send(fd, out, n, MSG_NOSIGNAL);
    rc = 0;
done:
    close(fd);
    return rc;
}

/* Retry every 2 ms until the broker answers or the time is up. The times
 * count from this process's start, which the caller places right after the
 * broker's. */
static int startup_probe(void)
{
    uint64_t t0 = now_ns(), deadline = t0 + (uint64_t)(b.startup * 1e9);
    uint64_t t_listen = 0, t_connack = 0, t_suback = 0;
    unsigned attempts = 0;
    while (now_ns() < deadline) {
        attempts++;
        if (probe_once(t0, deadline, &t_listen, &t_connack, &t_suback) == 0)
            break;
        usleep(2000);
    }
    bool ok = t_suback != 0;
    printf("SUMMARY mode=startup ok=%d listen_s=%.3f connack_s=%.3f suback_s=%.3f attempts=%u\n",
           ok, (double)t_listen / 1e9, (double)t_connack / 1e9, (double)t_suback / 1e9, attempts);
    if (!ok)
        fprintf(stderr, "gatemq-bench: no SUBACK from %s:%s within %.1f s\n", b.host, b.port,
                b.startup);
    return ok ? 0 : 1;
}

static int report(void)
{
    uint64_t sent = 0, done = 0;
    for (unsigned i = 0; i < b.pubs; i++) {
        sent += b.conns[i].sent;
        done += b.conns[i].done;
    }
    uint64_t expected = expected_deliveries();
    uint64_t lost = expected > b.unique ? expected - b.unique : 0;
    bool started = b.t_start != 0;
    uint64_t t_pub_end = b.t_pub_end ? b.t_pub_end : now_ns();
    double pub_secs = started ? (double)(t_pub_end - b.t_start) / 1e9 : 0;
    double deliv_secs = b.t_last_deliv ? (double)(b.t_last_deliv - b.t_start) / 1e9 : 0;
    double pub_rate = started ? rate_of(done, b.t_start, t_pub_end) : 0;
    double deliv_rate = b.t_last_deliv ? rate_of(b.unique, b.t_start, b.t_last_deliv) : 0;
    double p50 = (double)hist_percentile(&b.lat, 50) / 1e3;
    double p99 = (double)hist_percentile(&b.lat, 99) / 1e3;
    double p999 = (double)hist_percentile(&b.lat, 99.9) / 1e3;
    double pmax = (double)b.lat.max / 1e3;
    /* Exactly once means no duplicate may reach a QoS 2 subscriber [MQTT-4.3.3]. */
    bool dup_error = b.qos == 2 && b.dups > 0;
    bool unacked = done < sent;
    /* --json-payload: readings vary in length; show their mean */
    size_t size = b.json_payload ? (sent ? (size_t)(b.payload_bytes / sent) : 0) : b.size;
    const char *result = b.error[0]   ? "FAILED"
                         : !started   ? "FAILED"
                         : lost       ? "LOST"
                         : dup_error  ? "DUPLICATES"
                         : unacked    ? "UNACKED"
                                      : "OK";
    bool ok = strcmp(result, "OK") == 0;
    /* A paced publisher that falls behind sends a catch-up burst: its
     * latencies then measure the backlog, not the broker at that rate. */
    bool behind = b.rate > 0 && started && pub_rate < 0.95 * b.rate;
    /* Share of one core this generator used while the run lasted: near 1.0
     * the figures are a floor set by the generator, not by the broker. */
    uint64_t t_end = b.t_last_deliv > t_pub_end ? b.t_last_deliv : t_pub_end;
    double gen_busy = started && t_end > b.t_start ? b.gen_cpu * 1e9 / (double)(t_end - b.t_start)
                                                   : 0;

    if (b.json) {
        printf("{\"result\":\"%s\",\"qos\":%u,\"publishers\":%u,\"subscribers\":%u,"
               "\"payload\":%zu,\"rate_target\":%.0f,\"window\":%u,\"paced\":%s,\"behind\":%s,"
               "\"published\":%" PRIu64 ",\"acknowledged\":%" PRIu64 ",\"expected\":%" PRIu64
               ",\"received\":%" PRIu64 ",\"lost\":%" PRIu64 ",\"duplicates\":%" PRIu64
               ",\"gaps\":%" PRIu64 ",\"publish_seconds\":%.6f,\"deliver_seconds\":%.6f,"
               "\"publish_rate\":%.1f,\"delivery_rate\":%.1f,\"latency_us\":{\"p50\":%.1f,"
               "\"p99\":%.1f,\"p99.9\":%.1f,\"max\":%.1f},\"generator_busy\":%.2f,\"error\":",
               result, b.qos, b.pubs, b.subs, size, b.rate, b.window,
               b.rate > 0 ? "true" : "false", behind ? "true" : "false", sent, done, expected, b.unique, lost, b.dups,
               b.gaps, pub_secs, deliv_secs, pub_rate, deliv_rate, p50, p99, p999, pmax, gen_busy);
        print_json_string(b.error);
        printf("}\n");
    } else if (!started) {
        printf("SUMMARY result=%s\n", result); /* the cause goes to stderr */
    } else {
        printf("gatemq-bench %s:%s qos %u, %u publisher(s) -> %u subscriber(s)%s, %zu-byte "
               "%spayload, ",
               b.host, b.port, b.qos, b.pubs, b.subs, b.pairs ? " in pairs" : "", size,
               b.json_payload ? "JSON " : "");
        if (b.rate > 0)
            printf("paced at %.0f msg/s\n", b.rate);
        else if (b.qos > 0)
            printf("closed loop, window %u\n", b.window);
        else
            printf("closed loop\n");
        printf("  published   %" PRIu64 " msgs in %.3f s: %.0f msg/s\n", done, pub_secs,
               pub_rate);
        printf("  delivered   %" PRIu64 " of %" PRIu64 " expected in %.3f s: %.0f "
               "deliveries/s (duplicates %" PRIu64 ")\n",
               b.unique, expected, deliv_secs, deliv_rate, b.dups);
        printf("  latency     p50 %.0f us, p99 %.0f us, p99.9 %.0f us, max %.0f us%s\n", p50,
               p99, p999, pmax, b.rate > 0 ? "" : " (closed loop: includes queueing)");
        printf("  generator   %.0f%% of one core%s\n", gen_busy * 100,
               gen_busy > 0.9 ? " (saturated: the broker may be faster than shown)" : "");
        if (behind)
            printf("  note        publishers reached only %.0f of %.0f msg/s; latencies include "
                   "their catch-up\n", pub_rate, b.rate);
        if (lost)
            printf("  LOST        %" PRIu64 " of %" PRIu64 " deliveries never arrived\n", lost,
                   expected);
        if (unacked && !lost)
            printf("  UNACKED     %" PRIu64 " of %" PRIu64 " publishes never acknowledged\n",
                   sent - done, sent);
        printf("  result      %s\n", result);
        printf("SUMMARY result=%s qos=%u pubs=%u subs=%u size=%zu rate=%.0f published=%" PRIu64
               " expected=%" PRIu64 " received=%" PRIu64 " lost=%" PRIu64 " dups=%" PRIu64
               " pub_rate=%.1f deliv_rate=%.1f p50_us=%.1f p99_us=%.1f p999_us=%.1f"
               " max_us=%.1f behind=%d gen_busy=%.2f\n",
               result, b.qos, b.pubs, b.subs, size, b.rate, done, expected, b.unique, lost,
               b.dups, pub_rate, deliv_rate, p50, p99, p999, pmax, behind, gen_busy);
    }
    if (b.error[0])
        fprintf(stderr, "gatemq-bench: %s\n", b.error);
    else if (!ok)
        fprintf(stderr, "gatemq-bench: %s: %" PRIu64 " of %" PRIu64 " deliveries received\n",
                result, b.unique, expected);
    return ok ? 0 : 1;
}

int main(int argc, char **argv)
{
    parse_args(argc, argv);
    signal(SIGPIPE, SIG_IGN);
    if (b.procs > 1) {
        int rc = hs_fork();
        if (rc >= 0)
            return rc;
    }
    setup();
    if (b.startup > 0) {
        int rc = startup_probe();
        teardown();
        return rc;
    }

    b.loop = ev_default_loop(EVFLAG_AUTO);
    if (!b.loop) {
        fprintf(stderr, "gatemq-bench: cannot create the event loop\n");
        return 1;
    }
    b.phase = PH_SETUP;
    b.t_setup = now_ns();
    b.last_progress = b.last_ping = ev_now(b.loop);
    ev_timer_init(&b.housekeeping, on_housekeeping, HOUSEKEEPING_INTERVAL,
                  HOUSEKEEPING_INTERVAL);
    ev_timer_start(b.loop, &b.housekeeping);
    if (b.hs_mode)
        hs_run();
    else if (b.nconns == 0)
        start_run();
    else
        open_more();
    if (b.phase != PH_DONE)
        ev_run(b.loop, 0);
    b.gen_cpu = cpu_seconds() - b.gen_cpu;

    if (b.result_fd >= 0) { /* a --procs child: the parent reports */
        hs_child_report();
        teardown();
        return b.error[0] || b.hs_done != b.handshakes;
    }
    int rc = b.hs_mode ? report_hs() : b.idle_mode ? report_idle() : report();
    teardown();
    return rc;
}
