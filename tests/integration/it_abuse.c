/*
 * it_abuse.c - abuse and resource limits against the real broker: what a
 * hostile or broken peer on the public internet can do, and what it must
 * not achieve.
 *
 * Every test has bystanders: normal clients that must be served throughout
 * (a publish round trip while the attack runs, and after it). Memory is read
 * from /proc/<pid>/status: VmHWM (the peak) must stay within a bound that
 * is far below what the attack would cost if the broker kept what it was
 * sent. Descriptors are counted in /proc/<pid>/fd. Every broker is stopped
 * with SIGTERM and must exit 0, which in the sanitizer build (and under
 * tools/check-valgrind.sh) also fails the test on a leak or memory error.
 *
 * it_limits.c already covers: 100 MB announced before CONNECT,
 * connect_timeout on a silent or half-sent CONNECT, max_connections with 2,
 * max_packet_size, a slow consumer of QoS 0. This file extends those to
 * attacks at scale and over time.
 *
 * No fixed sleeps synchronise: the trickle tests pace their bytes (one per
 * 500 ms is the attack itself) and wait for closes with poll; the few
 * windows that show absence are short, bounded and commented. Deadlines are
 * generous and multiplied by au_slow() under valgrind. Random inputs come
 * from fixed seeds, so a failure replays.
 */
#include "abuse_util.h"

#include <errno.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#define MB (1024L)                    /* kB per MiB, for the /proc figures */
#define SLOW(ms) ((ms) * au_slow())   /* a deadline, stretched under valgrind */

/* ---- small helpers ------------------------------------------------------ */

static mqtt_span sp(const char *s)
{
    return (mqtt_span){ (const uint8_t *)s, strlen(s) };
}

static long hwm_kb(const it_broker *b)
{
    return au_status_kb(it_broker_pid(b), "VmHWM:");
}

/* The broker's peak memory may have grown by at most limit_mb over base_kb
 * (VmRSS taken before the attack). */
static void check_growth(const it_broker *b, long base_kb, long limit_mb, const char *what)
{
    long peak = hwm_kb(b), now = it_broker_rss_kb(b);
    long limit = limit_mb * MB * au_mem_factor();
    if (base_kb <= 0 || peak <= 0)
        it_fail("cannot read the broker's memory from /proc");
    print_message("  %s: VmRSS %ld kB before, %ld kB now, VmHWM %ld kB (bound +%ld kB)\n", what,
                  base_kb, now, peak, limit);
    if (peak - base_kb > limit)
        it_fail("%s: broker peak memory grew by %ld kB (bound %ld kB)", what, peak - base_kb,
                limit);
}

/* Encoded CONNECT (keep alive ka, clean) into a fresh buffer. */
static uint8_t *connect_bytes(const char *id, bool clean, uint16_t ka, size_t *n)
{
    mqtt_connect m = { 0 };
    m.clean_session = clean;
    m.keep_alive = ka;
    m.client_id = sp(id);
    *n = mqtt_encode_connect(NULL, 0, &m);
    uint8_t *buf = malloc(*n);
    mqtt_encode_connect(buf, *n, &m);
    return buf;
}

/* A raw-socket client: CONNECT (clean, keep alive 0) and SUBSCRIBE filter
 * at qos, with the exact CONNACK and SUBACK checked. */
static int sock_client(uint16_t port, const char *id, const char *filter, uint8_t qos,
                       int rcvbuf)
{
    int fd = au_sock(port, rcvbuf);
    size_t n;
    uint8_t *c = connect_bytes(id, true, 0, &n);
    bool ok = au_sock_send_all(fd, c, n, SLOW(IT_TIMEOUT));
    free(c);
    uint8_t ack[5];
    static const uint8_t connack[4] = { 0x20, 0x02, 0x00, 0x00 };
    if (!ok || !au_sock_read_exact(fd, ack, 4, SLOW(IT_TIMEOUT)) || memcmp(ack, connack, 4) != 0)
        it_fail("raw client %s: no CONNACK 0", id);
    if (filter) {
        mqtt_span f = sp(filter);
        uint8_t sub[300];
        n = mqtt_encode_subscribe(sub, sizeof sub, 1, &f, &qos, 1);
        uint8_t suback[5] = { 0x90, 0x03, 0x00, 0x01, qos };
        if (!au_sock_send_all(fd, sub, n, SLOW(IT_TIMEOUT)) ||
            !au_sock_read_exact(fd, ack, 5, SLOW(IT_TIMEOUT)) || memcmp(ack, suback, 5) != 0)
            it_fail("raw client %s: no SUBACK for %s", id, filter);
    }
    return fd;
}

/* Wait until the broker holds exactly want descriptors (connections being
 * reaped); fails with the last count at the deadline. */
static void await_fd_count(const it_broker *b, int want, int timeout_ms)
{
    long deadline = it_now_ms() + timeout_ms;
    int n;
    while ((n = au_fd_count(it_broker_pid(b))) != want) {
        if (it_now_ms() > deadline)
            it_fail("broker holds %d descriptors, expected %d (leak?)", n, want);
        au_pause_ms(10); /* polling a condition */
    }
}

/* ---- 100 MB Remaining Length after CONNECT ----------------------------------- */

/* A connected client announces a 100 MB PUBLISH (over the default 16 MiB
 * max_packet_size) and then keeps streaming its body: the broker closes the
 * connection at the header, never buffers the body, and keeps serving. */
static void test_100mb_remaining_length_after_connect_closed_memory_bounded(void **state)
{
    it_broker *b = it_broker_start(NULL);
    uint16_t port = it_broker_port(b);
    it_conn *sub = it_client(port, "by-sub", true);
    it_subscribe(sub, "by/t", 1);
    it_conn *pub = it_client(port, "by-pub", true);
    au_roundtrip(pub, sub, "by/t");
    long base = it_broker_rss_kb(b);

    it_conn *bad = it_client(port, "liar", true);
    /* PUBLISH QoS 0, Remaining Length 104857600 = 0x80 0x80 0x80 0x32, a
     * topic, then body bytes as fast as the broker takes them. */
    static const uint8_t hdr[] = { 0x30, 0x80, 0x80, 0x80, 0x32, 0x00, 0x03, 'b', 'i', 'g' };
    it_send(bad, hdr, sizeof hdr);
    static uint8_t chunk[64 * 1024];
    memset(chunk, 'z', sizeof chunk);
    size_t sent = 0;
    while (sent < 100u * 1024 * 1024 && it_send_try(bad, chunk, sizeof chunk))
        sent += sizeof chunk;
    if (sent >= 100u * 1024 * 1024)
        it_fail("the broker took the whole 100 MB body");
    mqtt_frame f;
    if (it_recv_frame(bad, &f, SLOW(IT_TIMEOUT)) != -1)
        it_fail("the liar's connection is still open");
    print_message("  body bytes the kernel took before the close: %zu\n", sent);
    it_close(bad);

    au_roundtrip(pub, sub, "by/t");
    it_assert_serving(b);
    check_growth(b, base, 20, "100 MB announced after CONNECT");
    it_broker_stop(b);
}

/* The same with max_packet_size raised to 200 MB, so the header is legal:
 * the broker now has to take the body, but its read buffer follows the bytes
 * received (64 KiB until more arrives): ten peers that announce 100 MB and
 * send 1 MiB each cost about 10 MiB, not 1 GB. (What they cost is freed with
 * their connections: the clean exit checks for leaks.) */
static void test_100mb_announced_within_limit_costs_only_bytes_received(void **state)
{
    it_broker *b = it_broker_start("max_packet_size 209715200");
    uint16_t port = it_broker_port(b);
    it_conn *sub = it_client(port, "by-sub", true);
    it_subscribe(sub, "by/t", 1);
    it_conn *pub = it_client(port, "by-pub", true);
    au_roundtrip(pub, sub, "by/t");
    long base = it_broker_rss_kb(b);

    enum { N = 10 };
    it_conn *bad[N];
    static uint8_t chunk[64 * 1024];
    memset(chunk, 'z', sizeof chunk);
    static const uint8_t hdr[] = { 0x30, 0x80, 0x80, 0x80, 0x32, 0x00, 0x03, 'b', 'i', 'g' };
    for (int i = 0; i < N; i++) {
        char id[24];
        snprintf(id, sizeof id, "big-%d", i);
        bad[i] = it_client(port, id, true);
        it_send(bad[i], hdr, sizeof hdr);
        for (int k = 0; k < 16; k++) /* 1 MiB of the announced 100 */
            it_send(bad[i], chunk, sizeof chunk);
    }
    au_roundtrip(pub, sub, "by/t");
    /* 10 x 1 MiB received: the buffers hold what arrived, not 10 x 100 MB. */
    check_growth(b, base, 40, "10 peers announcing 100 MB, sending 1 MiB each");
    for (int i = 0; i < N; i++)
        it_close(bad[i]);
    it_assert_serving(b);
    it_broker_stop(b);
}

/* ---- slowloris ------------------------------------------------------------------ */

/* One attacking connection: a plain socket (fd) or a TLS client (tls) that
 * is sent bytes[off..len) one byte per tick. */
typedef struct trickler {
    int fd;
    au_tls *tls;
    const uint8_t *bytes;
    size_t len, off;
    long opened;
    long closed_after; /* ms from opened to the close; -1 while open */
} trickler;

/* A bystander's publish round trip, run at every tick; returns its ms. */
typedef long (*bystander_fn)(void *ctx);

static bool trickler_closed_now(trickler *t)
{
    if (t->tls)
        return au_tls_wait_closed(t->tls, 1) >= 0;
    return au_sock_drain(t->fd, NULL) == 1;
}

/* Trickle one byte every 500 ms into every open connection until all are
 * closed or the deadline passes; a bystander round trip at every tick must
 * stay fast. Pacing by the clock is the attack itself, not synchronisation:
 * between ticks we wait in poll for the broker to close connections. */
static void trickle(trickler *t, size_t n, int timeout_ms, bystander_fn by, void *ctx)
{
    long deadline = it_now_ms() + timeout_ms;
    long worst = 0;
    size_t open = n;
    while (open > 0 && it_now_ms() < deadline) {
        long tick = it_now_ms();
        for (size_t i = 0; i < n; i++) {
            if (t[i].closed_after >= 0)
                continue;
            bool alive = true;
            if (t[i].off < t[i].len) {
                alive = t[i].tls ? au_tls_send(t[i].tls, t[i].bytes + t[i].off, 1)
                                 : au_sock_send(t[i].fd, t[i].bytes + t[i].off, 1);
                t[i].off++;
            }
            if (!alive || trickler_closed_now(&t[i])) {
                t[i].closed_after = it_now_ms() - t[i].opened;
                open--;
            }
        }
        long rt = by(ctx);
        if (rt > worst)
            worst = rt;
        /* Wait for the next tick, noticing closes meanwhile. */
        for (;;) {
            long left = tick + 500 - it_now_ms();
            if (left <= 0 || open == 0)
                break;
            struct pollfd pfd[256];
            nfds_t np = 0;
            for (size_t i = 0; i < n && np < 256; i++)
                if (t[i].closed_after < 0 && !t[i].tls)
                    pfd[np++] = (struct pollfd){ t[i].fd, POLLIN, 0 };
            if (np == 0) {
                au_pause_ms(left < 50 ? left : 50); /* TLS tricklers: checked every 50 ms */
            } else if (poll(pfd, np, (int)left) <= 0) {
                continue;
            }
            for (size_t i = 0; i < n; i++)
                if (t[i].closed_after < 0 && trickler_closed_now(&t[i])) {
                    t[i].closed_after = it_now_ms() - t[i].opened;
                    open--;
                }
        }
    }
    print_message("  %zu trickling connections, slowest bystander round trip %ld ms\n", n, worst);
    if (open > 0)
        it_fail("%zu of %zu trickling connections still open after %d ms", open, n, timeout_ms);
    if (worst > SLOW(2000))
        it_fail("a bystander round trip took %ld ms during the trickle", worst);
}

/* Each connection closed by a timeout of timeout_s seconds: not before
 * (minus scheduling slack), and not long after (plus generous slack). */
static void check_closed_by_timeout(const trickler *t, size_t n, int timeout_s)
{
    /* The broker's timer starts from its loop's cached time, which can lag
     * behind by one busy iteration: a little slack below, a lot above. */
    long lo = timeout_s * 1000L - (au_valgrind() ? 1000 : 250);
    long hi = timeout_s * 1000L + SLOW(3000);
    for (size_t i = 0; i < n; i++) {
        if (t[i].closed_after < lo || t[i].closed_after > hi)
            it_fail("trickling connection %zu closed after %ld ms; expected %d s (sent %zu of "
                    "%zu bytes)", i, t[i].closed_after, timeout_s, t[i].off, t[i].len);
        if (t[i].off >= t[i].len)
            it_fail("trickling connection %zu sent all its bytes", i);
    }
}

typedef struct plain_by {
    it_conn *pub, *sub;
} plain_by;

static long plain_bystander(void *ctx)
{
    plain_by *p = ctx;
    return au_roundtrip(p->pub, p->sub, "by/t");
}

typedef struct tls_by {
    tn_conn *dev;
} tls_by;

static long tls_bystander(void *ctx)
{
    tls_by *p = ctx;
    static unsigned n;
    char payload[48];
    snprintf(payload, sizeof payload, "tls-bystander-%u", n++);
    long t0 = it_now_ms();
    tn_publish(p->dev, "by/t", payload, 1, false);
    tn_expect(p->dev, "by/t", payload, 1, false);
    return it_now_ms() - t0;
}

enum { TRICKLERS = 10 };

/* (a) before CONNECT: a CONNECT sent one byte every 500 ms from its first
 * byte never completes within connect_timeout; each such connection is
 * closed at connect_timeout although it keeps sending. */
static void test_slowloris_before_connect_closed_by_connect_timeout(void **state)
{
    it_broker *b = it_broker_start("connect_timeout 2");
    uint16_t port = it_broker_port(b);
    plain_by by = { it_client(port, "by-pub", true), it_client(port, "by-sub", true) };
    it_subscribe(by.sub, "by/t", 1);
    size_t n;
    uint8_t *connect = connect_bytes("slow-client", true, 0, &n);
    trickler t[TRICKLERS];
    for (int i = 0; i < TRICKLERS; i++)
        t[i] = (trickler){ .fd = au_sock(port, 0), .bytes = connect, .len = n,
                           .opened = it_now_ms(), .closed_after = -1 };
    trickle(t, TRICKLERS, SLOW(15000), plain_bystander, &by);
    free(connect);
    check_closed_by_timeout(t, TRICKLERS, 2);
    if (!it_broker_log_contains(b, "no accepted CONNECT within connect_timeout"))
        it_fail("the log does not say why the connections were closed");
    it_assert_serving(b);
    it_broker_stop(b);
}

/* (c) half a CONNECT: 30 kB of a 60 kB CONNECT (under max_connect_size) at
 * once, then the rest one byte every 500 ms: closed at connect_timeout, and
 * the half-CONNECTs cost the broker what they sent, not more. */
static void test_slowloris_half_connect_closed_by_connect_timeout(void **state)
{
    it_broker *b = it_broker_start("connect_timeout 2");
    uint16_t port = it_broker_port(b);
    plain_by by = { it_client(port, "by-pub", true), it_client(port, "by-sub", true) };
    it_subscribe(by.sub, "by/t", 1);
    long base = it_broker_rss_kb(b);
    /* A CONNECT of about 60 kB: a will with a big message. */
    static char will_msg[59000];
    memset(will_msg, 'w', sizeof will_msg - 1);
    mqtt_connect m = { 0 };
    m.clean_session = true;
    m.client_id = sp("half");
    m.will_flag = true;
    m.will_topic = sp("will/t");
    m.will_payload = sp(will_msg);
    size_t n = mqtt_encode_connect(NULL, 0, &m);
    uint8_t *connect = malloc(n);
    mqtt_encode_connect(connect, n, &m);
    enum { HALF_TRICKLERS = 20 };
    trickler t[HALF_TRICKLERS];
    for (int i = 0; i < HALF_TRICKLERS; i++) {
        t[i] = (trickler){ .fd = au_sock(port, 0), .bytes = connect, .len = n, .off = n / 2,
                           .opened = it_now_ms(), .closed_after = -1 };
        if (!au_sock_send_all(t[i].fd, connect, n / 2, SLOW(IT_TIMEOUT)))
            it_fail("could not send half a CONNECT");
    }
    trickle(t, HALF_TRICKLERS, SLOW(15000), plain_bystander, &by);
    free(connect);
    check_closed_by_timeout(t, HALF_TRICKLERS, 2);
    check_growth(b, base, 20, "20 half CONNECTs of 60 kB");
    it_assert_serving(b);
    it_broker_stop(b);
}

/* (b) during the TLS handshake: a genuine ClientHello sent one byte every
 * 500 ms; tls_handshake_timeout (2 s) closes each connection, well before
 * connect_timeout (30 s) would. A device on the same listener is served
 * throughout. */
static void test_slowloris_tls_handshake_closed_by_handshake_timeout(void **state)
{
    uint16_t tls_port;
    it_broker *b = tn_start("tls_handshake_timeout 2\nconnect_timeout 30", &tls_port);
    tls_by by = { tn_device(tls_port, "acme", "gw-1") };
    tn_subscribe(by.dev, "by/t", 1);
    uint8_t hello[2048];
    size_t n = au_client_hello(hello, sizeof hello);
    if (n < 50 || hello[0] != 0x16)
        it_fail("could not build a ClientHello (%zu bytes)", n);
    trickler t[TRICKLERS];
    for (int i = 0; i < TRICKLERS; i++)
        t[i] = (trickler){ .fd = au_sock(tls_port, 0), .bytes = hello, .len = n,
                           .opened = it_now_ms(), .closed_after = -1 };
    trickle(t, TRICKLERS, SLOW(15000), tls_bystander, &by);
    check_closed_by_timeout(t, TRICKLERS, 2);
    if (!it_broker_log_contains(b, "TLS handshake timeout"))
        it_fail("the log does not say the handshakes timed out");
    tls_bystander(&by);
    tn_disconnect(by.dev);
    it_broker_stop(b);
}

/* After a completed TLS handshake the clock starts again for CONNECT: a
 * device that trickles its CONNECT (one byte per TLS record every 500 ms)
 * is closed at connect_timeout after the handshake. */
static void test_slowloris_connect_over_tls_closed_by_connect_timeout(void **state)
{
    uint16_t tls_port;
    it_broker *b = tn_start("tls_handshake_timeout 30\nconnect_timeout 2", &tls_port);
    tls_by by = { tn_device(tls_port, "acme", "gw-1") };
    tn_subscribe(by.dev, "by/t", 1);
    size_t n;
    uint8_t *connect = connect_bytes("gw-2", true, 0, &n);
    enum { TLS_TRICKLERS = 4 };
    trickler t[TLS_TRICKLERS];
    for (int i = 0; i < TLS_TRICKLERS; i++) {
        t[i] = (trickler){ .fd = -1, .bytes = connect, .len = n, .closed_after = -1 };
        t[i].tls = au_tls_open(tls_port, "acme", "gw-2");
        t[i].opened = it_now_ms(); /* the timer restarted at the handshake's end */
    }
    trickle(t, TLS_TRICKLERS, SLOW(15000), tls_bystander, &by);
    free(connect);
    check_closed_by_timeout(t, TLS_TRICKLERS, 2);
    if (!it_broker_log_contains(b, "no accepted CONNECT within connect_timeout"))
        it_fail("the log does not say why the connections were closed");
    for (int i = 0; i < TLS_TRICKLERS; i++)
        au_tls_free(t[i].tls);
    tls_bystander(&by);
    tn_disconnect(by.dev);
    it_broker_stop(b);
}

/* ---- connection floods ----------------------------------------------------------- */

/* What became of a flood connection that sent CONNECT: 1 accepted
 * (CONNACK 0), 0 closed without a byte, -1 undecided at the deadline. */
static int flood_outcome(int fd, int timeout_ms)
{
    uint8_t ack[4];
    static const uint8_t connack[4] = { 0x20, 0x02, 0x00, 0x00 };
    long deadline = it_now_ms() + timeout_ms;
    size_t got = 0;
    while (got < 4) {
        ssize_t r = recv(fd, ack + got, 4 - got, MSG_DONTWAIT);
        if (r > 0) {
            got += (size_t)r;
            continue;
        }
        if (r == 0 || (r < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
            if (got)
                it_fail("flood connection closed after %zu bytes of an answer", got);
            return 0;
        }
        long left = deadline - it_now_ms();
        if (left <= 0)
            return -1;
        struct pollfd pfd = { fd, POLLIN, 0 };
        poll(&pfd, 1, (int)left);
    }
    if (memcmp(ack, connack, 4) != 0) {
        it_hexdump("received", ack, 4);
        it_fail("flood connection got something other than CONNACK 0");
    }
    return 1;
}

/* max_connections 50, two bystanders connected, then 200 connections at
 * once, each sending CONNECT: exactly 48 are served, 152 are closed at
 * once (counted in $SYS/broker/connections/refused); the bystanders are
 * served during the flood; once the flood ends the broker holds exactly
 * the descriptors it held before and accepts new clients. */
static void test_connection_flood_beyond_max_connections_refused_then_recovered(void **state)
{
    it_broker *b = it_broker_start("max_connections 50\nconnect_timeout 60\nsys_interval 1");
    uint16_t port = it_broker_port(b);
    it_conn *sub = it_client(port, "by-sub", true);
    it_subscribe(sub, "by/t", 1);
    it_conn *pub = it_client(port, "by-pub", true);
    au_roundtrip(pub, sub, "by/t");
    unsigned long long refused0 = au_sys_value(b, "$SYS/broker/connections/refused");
    int fds0 = au_fd_count(it_broker_pid(b));

    enum { FLOOD = 200 };
    int fd[FLOOD];
    for (int i = 0; i < FLOOD; i++) {
        char id[24];
        snprintf(id, sizeof id, "flood-%d", i);
        fd[i] = au_sock(port, 0);
        size_t n;
        uint8_t *c = connect_bytes(id, true, 0, &n);
        (void)au_sock_send(fd[i], c, n); /* a refused one may be closed already */
        free(c);
    }
    int accepted = 0, refused = 0;
    for (int i = 0; i < FLOOD; i++) {
        int o = flood_outcome(fd[i], SLOW(IT_TIMEOUT));
        if (o < 0)
            it_fail("flood connection %d neither served nor closed", i);
        if (o)
            accepted++;
        else
            refused++;
    }
    print_message("  flood: %d served, %d refused\n", accepted, refused);
    if (accepted != 48 || refused != FLOOD - 48)
        it_fail("flood: %d served, %d refused; expected 48 and %d", accepted, refused,
                FLOOD - 48);
    /* At the limit: the bystanders are served, a newcomer is refused. */
    au_roundtrip(pub, sub, "by/t");
    int extra = au_sock(port, 0);
    size_t n;
    uint8_t *c = connect_bytes("extra", true, 0, &n);
    (void)au_sock_send(extra, c, n);
    free(c);
    if (flood_outcome(extra, SLOW(IT_TIMEOUT)) != 0)
        it_fail("a newcomer was let in beyond max_connections");
    au_sock_close(extra);

    for (int i = 0; i < FLOOD; i++)
        au_sock_close(fd[i]);
    await_fd_count(b, fds0, SLOW(IT_TIMEOUT));
    it_assert_serving(b);
    au_roundtrip(pub, sub, "by/t");
    unsigned long long refused1 = au_sys_value(b, "$SYS/broker/connections/refused");
    if (refused1 - refused0 != (unsigned long long)(FLOOD - 48 + 1))
        it_fail("$SYS/broker/connections/refused grew by %llu; expected %d", refused1 - refused0,
                FLOOD - 48 + 1);
    await_fd_count(b, fds0, SLOW(IT_TIMEOUT));
    it_broker_stop(b);
}

/* The broker's own descriptor limit (RLIMIT_NOFILE 64, inherited from this
 * test) is lower than the flood, and max_connections does not stop it
 * (0: no limit): accept() fails with EMFILE. The broker must keep serving
 * its clients, must not spin on the listening socket that stays readable,
 * nor flood its log; once the flood ends it accepts again. */
static void test_fd_exhaustion_flood_keeps_serving_without_spinning(void **state)
{
    struct rlimit old, low;
    getrlimit(RLIMIT_NOFILE, &old);
    low = old;
    low.rlim_cur = 64;
    if (setrlimit(RLIMIT_NOFILE, &low) != 0)
        it_fail("setrlimit: %s", strerror(errno));
    it_broker *b = it_broker_start("max_connections 0\nconnect_timeout 60\nsys_interval 1");
    setrlimit(RLIMIT_NOFILE, &old); /* the broker keeps the low limit */
    uint16_t port = it_broker_port(b);
    it_conn *sub = it_client(port, "by-sub", true);
    it_subscribe(sub, "by/t", 1);
    it_conn *pub = it_client(port, "by-pub", true);
    au_roundtrip(pub, sub, "by/t");
    int fds0 = au_fd_count(it_broker_pid(b));

    enum { FLOOD = 150 };
    int fd[FLOOD];
    for (int i = 0; i < FLOOD; i++)
        fd[i] = au_sock(port, 0); /* the kernel completes them in the backlog */
    /* Watch the broker for a bounded window while the flood waits: CPU time
     * it burns and log lines it writes. */
    long cpu0 = au_cpu_ms(it_broker_pid(b));
    long log0 = au_log_bytes(it_broker_pid(b));
    long t0 = it_now_ms();
    for (int i = 0; i < 4; i++)
        au_roundtrip(pub, sub, "by/t");
    au_pause_ms(1000); /* bounded window: what the broker does while saturated */
    long window = it_now_ms() - t0;
    long cpu = au_cpu_ms(it_broker_pid(b)) - cpu0;
    long logged = au_log_bytes(it_broker_pid(b)) - log0;
    print_message("  saturated for %ld ms: broker used %ld ms of CPU, logged %ld bytes, holds "
                  "%d fds\n", window, cpu, logged, au_fd_count(it_broker_pid(b)));
    /* Four round trips and an idle second cost a few ms of CPU and a few
     * log lines; a watcher re-armed on a listening socket that stays
     * readable costs all the CPU, and a log line per turn fills the disk. */
    if (cpu > SLOW(400) || logged > 16384)
        it_fail("while out of descriptors the broker used %ld ms of CPU in %ld ms and logged "
                "%ld bytes (busy loop on the listening socket?)", cpu, window, logged);
    for (int i = 0; i < FLOOD; i++)
        au_sock_close(fd[i]);
    await_fd_count(b, fds0, SLOW(IT_TIMEOUT));
    it_assert_serving(b);
    it_broker_stop(b);
}

/* ---- a subscriber that never reads ------------------------------------------------ */

enum { FLOOD_PAYLOAD = 65536 };

/* A flood payload: "<tag>-<n>-" then 'x' up to FLOOD_PAYLOAD bytes. */
static char *flood_payload(const char *tag, int n)
{
    static char buf[FLOOD_PAYLOAD + 1];
    memset(buf, 'x', FLOOD_PAYLOAD);
    buf[FLOOD_PAYLOAD] = '\0';
    int k = snprintf(buf, 32, "%s-%d-", tag, n);
    buf[k] = 'x'; /* snprintf's NUL */
    return buf;
}

/* QoS 0: n messages in batches of 16 (1 MiB); the fast subscriber takes
 * each batch whole before the next, so its own output never nears the
 * 4 MiB QoS 0 limit and it must receive every one. */
static void flood_qos0(it_conn *pub, it_conn *fast, int n)
{
    for (int i = 0; i < n; i += 16) {
        for (int k = i; k < i + 16 && k < n; k++)
            it_publish_str(pub, "flood/t", flood_payload("q0", k), 0, false);
        for (int k = i; k < i + 16 && k < n; k++)
            it_expect_publish(fast, "flood/t", flood_payload("q0", k), 0, false);
    }
}

/* QoS 1: n messages, each acknowledged (so routed) before the next; the
 * fast subscriber receives and acknowledges each. */
static void flood_qos1(it_conn *pub, it_conn *fast, int n)
{
    for (int k = 0; k < n; k++) {
        it_publish_str(pub, "flood/t", flood_payload("q1", k), 1, false);
        it_expect_publish(fast, "flood/t", flood_payload("q1", k), 1, false);
    }
}

/* A subscriber (QoS 1, small receive window) that never reads, while a
 * publisher sends 100 MB of QoS 0 and then 25 MB of QoS 1 to its filter.
 * QoS 0 past the 4 MiB of unwritten output is dropped; QoS 1 is capped at
 * max_inflight_messages (20) written plus max_queued_messages (100)
 * queued, every further one dropped and counted: exactly 400 - 120. The
 * broker's peak memory stays far below the 125 MB that went through, and
 * a fast subscriber on the same filter receives every message. */
static void test_non_reading_subscriber_queue_bounded_by_max_queued_messages(void **state)
{
    it_broker *b = it_broker_start("max_inflight_messages 20\nmax_queued_messages 100\n"
                                   "sys_interval 1");
    uint16_t port = it_broker_port(b);
    int slow = sock_client(port, "slow", "flood/#", 1, 4096);
    it_conn *fast = it_client(port, "fast", true);
    it_subscribe(fast, "flood/#", 1);
    it_conn *pub = it_client(port, "flood-pub", true);
    unsigned long long d0 = au_sys_value(b, "$SYS/broker/messages/dropped");
    long base = it_broker_rss_kb(b);

    enum { N0 = 1600, N1 = 400 };
    flood_qos0(pub, fast, N0);
    it_ping(pub);
    unsigned long long d1 = au_sys_value(b, "$SYS/broker/messages/dropped");
    print_message("  QoS 0: %d x 64 KiB sent, %llu dropped for the non-reader\n", N0, d1 - d0);
    /* At most 4 MiB + one message of output and the kernel's buffers
     * (a few MB) reached the non-reader: most of 100 MB was dropped. */
    if (d1 - d0 < (unsigned long long)N0 / 2)
        it_fail("only %llu of %d QoS 0 messages were dropped for a client that never reads",
                d1 - d0, N0);
    check_growth(b, base, 40, "100 MB of QoS 0 towards a non-reader");

    flood_qos1(pub, fast, N1);
    unsigned long long d2 = au_sys_value(b, "$SYS/broker/messages/dropped");
    print_message("  QoS 1: %d x 64 KiB sent, %llu dropped for the non-reader\n", N1, d2 - d1);
    if (d2 - d1 != (unsigned long long)(N1 - 20 - 100))
        it_fail("QoS 1 towards the non-reader: %llu dropped, expected %d (20 in flight, 100 "
                "queued)", d2 - d1, N1 - 120);
    check_growth(b, base, 48, "then 25 MB of QoS 1 towards the non-reader");

    it_assert_serving(b);
    au_sock_close(slow);
    it_disconnect(fast);
    it_disconnect(pub);
    it_broker_stop(b);
}

/* The same with max_queued_messages 0 (no count limit) and max_queued_bytes
 * 1 MiB: 16 payloads of 64 KiB fit the queue, behind 20 in flight; of 300
 * QoS 1 messages exactly 264 are dropped. */
static void test_non_reading_subscriber_queue_bounded_by_max_queued_bytes(void **state)
{
    it_broker *b = it_broker_start("max_inflight_messages 20\nmax_queued_messages 0\n"
                                   "max_queued_bytes 1048576\nsys_interval 1");
    uint16_t port = it_broker_port(b);
    int slow = sock_client(port, "slow", "flood/#", 1, 4096);
    it_conn *fast = it_client(port, "fast", true);
    it_subscribe(fast, "flood/#", 1);
    it_conn *pub = it_client(port, "flood-pub", true);
    unsigned long long d0 = au_sys_value(b, "$SYS/broker/messages/dropped");
    long base = it_broker_rss_kb(b);

    enum { N1 = 300 };
    flood_qos1(pub, fast, N1);
    unsigned long long d1 = au_sys_value(b, "$SYS/broker/messages/dropped");
    print_message("  QoS 1: %d x 64 KiB sent, %llu dropped for the non-reader\n", N1, d1 - d0);
    if (d1 - d0 != (unsigned long long)(N1 - 20 - 16))
        it_fail("QoS 1 towards the non-reader: %llu dropped, expected %d (20 in flight, 16 x "
                "64 KiB queued)", d1 - d0, N1 - 36);
    check_growth(b, base, 24, "20 MB of QoS 1 towards a non-reader, 1 MiB queue");

    it_assert_serving(b);
    au_sock_close(slow);
    it_disconnect(fast);
    it_disconnect(pub);
    it_broker_stop(b);
}

/* ---- many subscriptions, deep and long topics ------------------------------------ */

/* SUBSCRIBE (or UNSUBSCRIBE when qos is NULL) the filters f[0..n) in one
 * packet with raw bytes, and expect the exact SUBACK (all granted at
 * *qos) or UNSUBACK within timeout_ms. Returns the time it took. */
static long sub_many(it_conn *c, const mqtt_span *f, size_t n, const uint8_t *qos,
                     int timeout_ms)
{
    uint16_t id = it_next_id(c);
    uint8_t *q = NULL;
    size_t len;
    if (qos) {
        q = malloc(n);
        memset(q, *qos, n);
        len = mqtt_encode_subscribe(NULL, 0, id, f, q, n);
    } else {
        len = mqtt_encode_unsubscribe(NULL, 0, id, f, n);
    }
    uint8_t *buf = malloc(len);
    if (qos)
        mqtt_encode_subscribe(buf, len, id, f, q, n);
    else
        mqtt_encode_unsubscribe(buf, len, id, f, n);
    long t0 = it_now_ms();
    it_send(c, buf, len);
    free(buf);
    uint8_t *exp = malloc(n + 8);
    size_t e = 0;
    if (qos) {
        exp[e++] = 0x90;
        size_t rem = 2 + n;
        do {
            uint8_t byte = rem & 0x7f;
            rem >>= 7;
            exp[e++] = rem ? (uint8_t)(byte | 0x80) : byte;
        } while (rem);
        exp[e++] = (uint8_t)(id >> 8);
        exp[e++] = (uint8_t)id;
        memcpy(exp + e, q, n);
        e += n;
    } else {
        uint8_t un[4] = { 0xb0, 0x02, (uint8_t)(id >> 8), (uint8_t)id };
        memcpy(exp, un, 4);
        e = 4;
    }
    it_expect_bytes(c, exp, e, timeout_ms);
    free(exp);
    free(q);
    return it_now_ms() - t0;
}

/* One client subscribes to 20 000 distinct filters in 5 SUBSCRIBE packets
 * of 4000: every one is granted, each packet is handled quickly (others
 * keep being served), publishes to any of them are routed, memory stays
 * bounded; then it unsubscribes from all in 5 packets and nothing is
 * routed to it any more. */
static void test_20000_subscriptions_of_one_client_still_route(void **state)
{
    it_broker *b = it_broker_start(NULL);
    uint16_t port = it_broker_port(b);
    it_conn *by_sub = it_client(port, "by-sub", true);
    it_subscribe(by_sub, "by/t", 1);
    it_conn *pub = it_client(port, "pub", true);
    it_conn *many = it_client(port, "many", true);
    it_subscribe(many, "marker", 1);
    long base = it_broker_rss_kb(b);

    enum { NSUB = 20000, PER = 4000 };
    static char names[NSUB][24];
    static mqtt_span f[NSUB];
    for (int i = 0; i < NSUB; i++) {
        snprintf(names[i], sizeof names[i], "many/%d/%s", i, i % 3 ? "x" : "+");
        f[i] = sp(names[i]);
    }
    const uint8_t qos1 = 1;
    long worst = 0;
    for (int i = 0; i < NSUB; i += PER) {
        long ms = sub_many(many, f + i, PER, &qos1, SLOW(30000));
        if (ms > worst)
            worst = ms;
        au_roundtrip(pub, by_sub, "by/t");
    }
    print_message("  slowest SUBSCRIBE of %d filters: %ld ms\n", PER, worst);
    check_growth(b, base, 30, "20 000 subscriptions");
    static const int probe[] = { 0, 1, 9999, 12345, 19999 };
    for (size_t k = 0; k < sizeof probe / sizeof *probe; k++) {
        char topic[32], payload[32];
        snprintf(topic, sizeof topic, "many/%d/x", probe[k]);
        snprintf(payload, sizeof payload, "to-%d", probe[k]);
        it_publish_str(pub, topic, payload, 1, false);
        it_expect_publish(many, topic, payload, 1, false);
    }
    /* A single level under a '+' filter: many/<3k>/+ matches many/<3k>/y. */
    it_publish_str(pub, "many/300/y", "plus", 1, false);
    it_expect_publish(many, "many/300/y", "plus", 1, false);
    /* A handled SUBSCRIBE should not stall the loop: the bound is generous
     * (a linear scan per filter makes this quadratic in the filters). */
    if (worst > SLOW(2000))
        it_fail("a SUBSCRIBE of %d filters kept the broker busy for %ld ms", PER, worst);

    for (int i = 0; i < NSUB; i += PER)
        sub_many(many, f + i, PER, NULL, SLOW(30000));
    it_publish_str(pub, "many/12345/x", "gone", 1, false);
    it_publish_str(pub, "marker", "after-unsubscribe", 1, false);
    it_expect_publish(many, "marker", "after-unsubscribe", 1, false);
    it_assert_serving(b);
    it_disconnect(many);
    it_broker_stop(b);
}

/* A string of n copies of unit separated by '/' (n levels). */
static char *levels(const char *unit, size_t n)
{
    size_t u = strlen(unit);
    char *t = malloc(n * (u + 1) + 1);
    size_t pos = 0;
    for (size_t i = 0; i < n; i++) {
        if (i)
            t[pos++] = '/';
        memcpy(t + pos, unit, u);
        pos += u;
    }
    t[pos] = '\0';
    return t;
}

/* A topic of 10 000 levels: subscribed exactly, with 10 000 '+' levels and
 * with "d/d/#", published retained at QoS 1: each matching subscriber gets
 * it once, a filter one level deeper does not, a late subscriber gets the
 * retained copy. Then the extreme: 65 535 '/' (65 536 empty levels, the
 * longest topic) published retained and subscribed; cleared again. No
 * crash (the trees walk without recursion), bounded memory. */
static void test_10000_level_topic_published_and_subscribed(void **state)
{
    it_broker *b = it_broker_start(NULL);
    uint16_t port = it_broker_port(b);
    long base = it_broker_rss_kb(b);
    char *topic = levels("d", 10000);
    char *plus = levels("+", 10000);
    size_t tlen = strlen(topic);
    char *deeper = malloc(tlen + 3);
    snprintf(deeper, tlen + 3, "%s/d", topic);

    it_conn *exact = it_client(port, "exact", true);
    it_subscribe(exact, topic, 1);
    it_conn *wild = it_client(port, "wild", true);
    it_subscribe(wild, plus, 1);
    it_conn *hash = it_client(port, "hash", true);
    it_subscribe(hash, "d/d/#", 1);
    it_conn *deep = it_client(port, "deeper", true);
    it_subscribe(deep, deeper, 1);
    it_subscribe(deep, "marker", 1);
    it_conn *pub = it_client(port, "pub", true);

    it_publish_str(pub, topic, "deep", 1, true);
    it_expect_publish(exact, topic, "deep", 1, false);
    it_expect_publish(wild, topic, "deep", 1, false);
    it_expect_publish(hash, topic, "deep", 1, false);
    it_publish_str(pub, "marker", "m", 1, false);
    it_expect_publish(deep, "marker", "m", 1, false); /* not the deep one first */
    it_conn *late = it_client(port, "late", true);
    it_subscribe(late, topic, 1);
    it_expect_publish(late, topic, "deep", 1, true);

    /* 65 535 slashes: the longest topic name, 65 536 empty levels. */
    char *slashes = malloc(65536);
    memset(slashes, '/', 65535);
    slashes[65535] = '\0';
    it_conn *all = it_client(port, "all", true);
    it_subscribe(all, "#", 0);
    it_expect_publish(all, topic, "deep", 0, true); /* the retained one so far */
    it_conn *sl = it_client(port, "slashes", true);
    it_subscribe(sl, slashes, 2);
    it_publish_str(pub, slashes, "slashes", 2, true);
    it_expect_publish(sl, slashes, "slashes", 2, false);
    it_expect_publish(all, slashes, "slashes", 0, false);
    it_ping(sl);
    it_conn *late2 = it_client(port, "late2", true);
    it_subscribe(late2, slashes, 1);
    it_expect_publish(late2, slashes, "slashes", 1, true);
    check_growth(b, base, 40, "10 000 and 65 536 levels");

    /* Clear both retained messages and drop the subscriptions: the trees
     * prune 65 536 levels without recursion. */
    it_unsubscribe(sl, slashes);
    it_unsubscribe(late2, slashes);
    it_unsubscribe(exact, topic);
    it_unsubscribe(wild, plus);
    it_unsubscribe(hash, "d/d/#");
    it_unsubscribe(late, topic);
    it_publish(pub, slashes, "", 0, 1, true);
    it_expect_publish(all, slashes, "", 0, false);
    it_publish(pub, topic, "", 0, 1, true);
    it_expect_publish(all, topic, "", 0, false);
    it_conn *after = it_client(port, "after", true);
    it_subscribe(after, "#", 0); /* only $SYS-free retained: none left of ours */
    it_subscribe(after, "marker", 1);
    it_publish_str(pub, "marker", "m2", 1, false);
    it_expect_publish(after, "marker", "m2", 1, false);
    it_assert_serving(b);
    free(topic);
    free(plus);
    free(deeper);
    free(slashes);
    it_broker_stop(b);
}

/* A single-level topic of 60 000 bytes: subscribed exactly (QoS 2), with
 * '+' (QoS 1) and '#' (QoS 0), published retained at QoS 2: each gets it
 * once at its QoS; a late subscriber gets the retained copy; the longest
 * topic name (65 535 bytes) also goes through. */
static void test_60kb_topic_published_and_subscribed(void **state)
{
    it_broker *b = it_broker_start(NULL);
    uint16_t port = it_broker_port(b);
    long base = it_broker_rss_kb(b);
    char *topic = malloc(65536);
    memset(topic, 'x', 65535);
    topic[65535] = '\0';
    topic[60000] = '\0';

    it_conn *exact = it_client(port, "exact", true);
    it_subscribe(exact, topic, 2);
    it_conn *plus = it_client(port, "plus", true);
    it_subscribe(plus, "+", 1);
    it_conn *hash = it_client(port, "hash", true);
    it_subscribe(hash, "#", 0);
    it_conn *pub = it_client(port, "pub", true);
    it_publish_str(pub, topic, "long", 2, true);
    it_expect_publish(exact, topic, "long", 2, false);
    it_ping(exact); /* completes the QoS 2 delivery */
    it_expect_publish(plus, topic, "long", 1, false);
    it_expect_publish(hash, topic, "long", 0, false);
    it_conn *late = it_client(port, "late", true);
    it_subscribe(late, topic, 1);
    it_expect_publish(late, topic, "long", 1, true);

    topic[60000] = 'x'; /* now 65 535 bytes */
    it_publish_str(pub, topic, "longest", 1, false);
    it_expect_publish(plus, topic, "longest", 1, false);
    it_expect_publish(hash, topic, "longest", 0, false);
    check_growth(b, base, 20, "60 kB and 64 kB topics");
    topic[60000] = '\0';
    it_publish(pub, topic, "", 0, 1, true); /* clear the retained one */
    it_assert_serving(b);
    free(topic);
    it_broker_stop(b);
}

/* Inside a company the internal topic ("acme/" + the device's topic) may
 * not exceed 65 535 bytes: a device's topic of 65 530 bytes is routed
 * (internal 65 535), one of 65 531 is acknowledged and dropped. */
static void test_device_topic_over_namespace_limit_acknowledged_and_dropped(void **state)
{
    uint16_t tls_port;
    it_broker *b = tn_start(NULL, &tls_port);
    tn_conn *plat = tn_platform(it_broker_port(b), "platform");
    tn_subscribe(plat, "acme/#", 1);
    tn_conn *dev = tn_device(tls_port, "acme", "gw-1");
    char *topic = malloc(65536);
    memset(topic, 't', 65531);
    topic[65531] = '\0';
    tn_publish(dev, topic, "too-long", 1, false); /* PUBACK, then dropped */
    topic[65530] = '\0';
    tn_publish(dev, topic, "fits", 1, false);
    char *internal = malloc(65536);
    snprintf(internal, 65536, "acme/%s", topic);
    tn_expect(plat, internal, "fits", 1, false); /* not the dropped one first */
    free(topic);
    free(internal);
    tn_disconnect(dev);
    tn_disconnect(plat);
    it_broker_stop(b);
}

/* ---- random input ---------------------------------------------------------------- */

typedef struct bytes {
    uint8_t *p;
    size_t len, cap;
} bytes;

static void put(bytes *b, const void *p, size_t n)
{
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 1024;
        while (cap < b->len + n)
            cap *= 2;
        b->p = realloc(b->p, cap);
        b->cap = cap;
    }
    memcpy(b->p + b->len, p, n);
    b->len += n;
}

static void put_remaining(bytes *b, size_t r)
{
    do {
        uint8_t byte = r & 0x7f;
        r >>= 7;
        byte = r ? (uint8_t)(byte | 0x80) : byte;
        put(b, &byte, 1);
    } while (r);
}

/* A short random topic (or filter, with wildcards) under fz/. */
static void rand_topic(au_rng *r, char *out, size_t cap, bool filter)
{
    static const char *const lv[] = { "a", "b", "c", "x", "long-level-name", "$x", "" };
    static const char *const wl[] = { "+", "#" };
    size_t pos = (size_t)snprintf(out, cap, "fz");
    int n = 1 + (int)au_below(r, 4);
    for (int i = 0; i < n && pos + 24 < cap; i++) {
        const char *l = lv[au_below(r, 7)];
        if (filter && au_below(r, 4) == 0)
            l = i == n - 1 ? wl[au_below(r, 2)] : "+";
        pos += (size_t)snprintf(out + pos, cap - pos, "/%s", l);
    }
}

/* One packet "built from the codec": a well-formed packet of a random type
 * with random flags, ids, QoS, topics and payload sizes, which is then, one
 * time in three, damaged (a byte flipped, the Remaining Length changed, the
 * flags replaced). Or plain random bytes with a random header. */
static void rand_packet(au_rng *r, bytes *out)
{
    uint8_t buf[4096];
    size_t n = 0;
    char t[128];
    uint16_t id = (uint16_t)(au_below(r, 8) == 0 ? 0 : 1 + au_below(r, 65535));
    switch (au_below(r, 10)) {
    case 0:
    case 1: { /* PUBLISH */
        rand_topic(r, t, sizeof t, false);
        uint8_t payload[1024];
        size_t plen = au_below(r, 4) ? au_below(r, 64) : au_below(r, sizeof payload);
        au_rand_bytes(r, payload, plen);
        uint8_t qos = (uint8_t)au_below(r, 3);
        mqtt_publish pb = { .topic = sp(t), .payload = { payload, plen }, .qos = qos,
                            .dup = qos && au_below(r, 2), .retain = au_below(r, 8) == 0,
                            .packet_id = qos ? (id ? id : 1) : 0 };
        n = mqtt_encode_publish(buf, sizeof buf, &pb);
        break;
    }
    case 2: { /* SUBSCRIBE */
        char fs[4][128];
        mqtt_span f[4];
        uint8_t q[4];
        size_t k = 1 + au_below(r, 4);
        for (size_t i = 0; i < k; i++) {
            rand_topic(r, fs[i], sizeof fs[i], true);
            f[i] = sp(fs[i]);
            q[i] = (uint8_t)au_below(r, 3);
        }
        n = mqtt_encode_subscribe(buf, sizeof buf, id ? id : 1, f, q, k);
        break;
    }
    case 3: { /* UNSUBSCRIBE */
        rand_topic(r, t, sizeof t, true);
        mqtt_span f = sp(t);
        n = mqtt_encode_unsubscribe(buf, sizeof buf, id ? id : 1, &f, 1);
        break;
    }
    case 4: /* PUBACK, PUBREC, PUBREL, PUBCOMP */
        n = mqtt_encode_packet_id(buf, sizeof buf, (enum mqtt_type)(MQTT_PUBACK + au_below(r, 4)),
                                  id ? id : 1);
        break;
    case 5: /* PINGREQ; rarely DISCONNECT (a clean end is fine too) */
        n = mqtt_encode_empty(buf, sizeof buf, au_below(r, 16) ? MQTT_PINGREQ : MQTT_DISCONNECT);
        break;
    case 6: { /* a second CONNECT, or a server-to-client packet */
        static const uint8_t sc[][5] = { { 0x20, 0x02, 0x00, 0x00 }, { 0x90, 0x03, 0x00, 0x01, 0x00 },
                                         { 0xb0, 0x02, 0x00, 0x01 }, { 0xd0, 0x00 } };
        static const size_t scn[] = { 4, 5, 4, 2 };
        if (au_below(r, 2)) {
            size_t k;
            uint8_t *c = connect_bytes("again", true, 0, &k);
            memcpy(buf, c, k);
            free(c);
            n = k;
        } else {
            size_t k = au_below(r, 4);
            memcpy(buf, sc[k], scn[k]);
            n = scn[k];
        }
        break;
    }
    default: { /* random type and flags, random length and body */
        size_t body = au_below(r, 3) ? au_below(r, 32) : au_below(r, 600);
        bytes tmp = { 0 };
        uint8_t first = (uint8_t)au_rand(r);
        put(&tmp, &first, 1);
        put_remaining(&tmp, body);
        uint8_t rb[600];
        au_rand_bytes(r, rb, body);
        put(&tmp, rb, body);
        put(out, tmp.p, tmp.len);
        free(tmp.p);
        return;
    }
    }
    if (au_below(r, 3) == 0 && n > 0) {
        switch (au_below(r, 3)) {
        case 0: /* flip a byte */
            buf[au_below(r, (uint32_t)n)] ^= (uint8_t)(1 + au_below(r, 255));
            break;
        case 1: /* another Remaining Length, single byte */
            if (n > 1 && buf[1] < 0x80)
                buf[1] = (uint8_t)au_below(r, 128);
            break;
        default: /* other flags */
            buf[0] = (uint8_t)((buf[0] & 0xf0) | au_below(r, 16));
            break;
        }
    }
    put(out, buf, n);
}

/* A connection's whole random sequence: a valid CONNECT (keep alive 1, so
 * a sequence that leaves the broker waiting for more bytes is closed after
 * 1.5 s of silence), 1..20 random packets, then a reserved packet type so
 * that every sequence ends in a violation if nothing before did. */
static void rand_sequence(au_rng *r, bytes *out, const char *client_id)
{
    size_t n;
    uint8_t *c = connect_bytes(client_id, au_below(r, 2), 1, &n);
    put(out, c, n);
    free(c);
    int k = 1 + (int)au_below(r, 20);
    for (int i = 0; i < k; i++)
        rand_packet(r, out);
    static const uint8_t reserved[2] = { 0xf0, 0x00 };
    put(out, reserved, 2);
}

/* Pure garbage: 1..1024 random bytes; half of them start like a CONNECT
 * (type 1, random length and body), the rest with any first byte. */
static void rand_garbage(au_rng *r, bytes *out)
{
    uint8_t g[1024];
    size_t n = 1 + au_below(r, sizeof g);
    au_rand_bytes(r, g, n);
    if (au_below(r, 2))
        g[0] = 0x10;
    put(out, g, n);
}

/* Send data in random chunks (so the broker sees packets split anywhere). */
static bool send_chunks(au_rng *r, int fd, au_tls *tls, const bytes *data)
{
    size_t off = 0;
    while (off < data->len) {
        size_t k = 1 + au_below(r, 200);
        if (k > data->len - off)
            k = data->len - off;
        bool ok = tls ? au_tls_send(tls, data->p + off, k)
                      : au_sock_send_all(fd, data->p + off, k, SLOW(IT_TIMEOUT));
        if (!ok)
            return false; /* closed on a violation: fine */
        off += k;
    }
    return true;
}

enum { RAND_BATCH = 100 };

/* Plain listener: 300 connections of garbage and 300 of random packet
 * sequences, in batches of 100 at once. Each offender is closed within
 * connect_timeout (1 s) or 1.5 keep alive periods, plus slack; a bystander
 * is served after every batch; the broker exits 0 at the end (leaks and
 * memory errors fail it in the sanitizer and valgrind runs). */
static void test_random_bytes_and_packets_on_plain_listener_closed(void **state)
{
    it_broker *b = it_broker_start("connect_timeout 1\nlog_level notice");
    uint16_t port = it_broker_port(b);
    it_conn *sub = it_client(port, "by-sub", true);
    it_subscribe(sub, "by/t", 1);
    it_conn *pub = it_client(port, "by-pub", true);
    long base = it_broker_rss_kb(b);
    int fds0 = au_fd_count(it_broker_pid(b));
    au_rng r;
    au_rng_seed(&r, 0x5eed0001);
    int total = au_valgrind() ? 100 : 300;
    long slowest = 0;
    for (int kind = 0; kind < 2; kind++) {
        for (int done = 0; done < total; done += RAND_BATCH) {
            int fd[RAND_BATCH];
            for (int i = 0; i < RAND_BATCH; i++) {
                bytes data = { 0 };
                char id[32];
                snprintf(id, sizeof id, "fz-%d", (int)au_below(&r, 40));
                if (kind == 0)
                    rand_garbage(&r, &data);
                else
                    rand_sequence(&r, &data, id);
                fd[i] = au_sock(port, 0);
                (void)send_chunks(&r, fd[i], NULL, &data);
                free(data.p);
            }
            for (int i = 0; i < RAND_BATCH; i++) {
                long ms = au_sock_wait_closed(fd[i], SLOW(8000));
                if (ms < 0)
                    it_fail("%s connection %d of batch %d still open",
                            kind ? "random sequence" : "garbage", i, done / RAND_BATCH);
                if (ms > slowest)
                    slowest = ms;
                au_sock_close(fd[i]);
            }
            au_roundtrip(pub, sub, "by/t");
        }
    }
    print_message("  %d garbage and %d random-sequence connections closed; slowest close %ld "
                  "ms after the last byte\n", total, total, slowest);
    await_fd_count(b, fds0, SLOW(IT_TIMEOUT));
    check_growth(b, base, 40, "random input");
    it_assert_serving(b);
    it_broker_stop(b);
}

/* TLS listener: 200 connections of garbage (half after a genuine
 * ClientHello), then random packet sequences over completed handshakes
 * (device acme/gw-1..3, client ids the device's own or empty). Each
 * offender is closed; a device of another company is served throughout;
 * the broker exits 0. */
static void test_random_bytes_and_packets_on_tls_listener_closed(void **state)
{
    uint16_t tls_port;
    it_broker *b = tn_start("connect_timeout 1\ntls_handshake_timeout 1\nlog_level notice",
                            &tls_port);
    tls_by by = { tn_device(tls_port, "globex", "gw-1") };
    tn_subscribe(by.dev, "by/t", 1);
    int fds0 = au_fd_count(it_broker_pid(b));
    long base = it_broker_rss_kb(b);
    au_rng r;
    au_rng_seed(&r, 0x5eed0002);
    uint8_t hello[2048];
    size_t hlen = au_client_hello(hello, sizeof hello);
    if (hlen < 50)
        it_fail("could not build a ClientHello");
    int total = au_valgrind() ? 50 : 200;
    for (int done = 0; done < total; done += RAND_BATCH) {
        int fd[RAND_BATCH];
        for (int i = 0; i < RAND_BATCH; i++) {
            bytes data = { 0 };
            if (au_below(&r, 2))
                put(&data, hello, hlen);
            rand_garbage(&r, &data);
            if (au_below(&r, 4) == 0)
                data.p[0] = 0x16; /* a handshake record header with a random length */
            fd[i] = au_sock(tls_port, 0);
            (void)send_chunks(&r, fd[i], NULL, &data);
            free(data.p);
        }
        for (int i = 0; i < RAND_BATCH; i++) {
            if (au_sock_wait_closed(fd[i], SLOW(8000)) < 0)
                it_fail("TLS garbage connection %d of batch %d still open", i, done / RAND_BATCH);
            au_sock_close(fd[i]);
        }
        tls_bystander(&by);
    }
    int sessions = au_valgrind() ? 8 : 40;
    for (int i = 0; i < sessions; i++) {
        static const char *const devs[] = { "gw-1", "gw-2", "gw-3" };
        const char *dev = devs[au_below(&r, 3)];
        au_tls *t = au_tls_open(tls_port, "acme", dev);
        bytes data = { 0 };
        rand_sequence(&r, &data, au_below(&r, 4) ? dev : "");
        (void)send_chunks(&r, -1, t, &data);
        free(data.p);
        if (au_tls_wait_closed(t, SLOW(8000)) < 0)
            it_fail("TLS random-sequence connection %d still open", i);
        au_tls_free(t);
        if (i % 10 == 9)
            tls_bystander(&by);
    }
    tls_bystander(&by);
    tn_disconnect(by.dev);
    await_fd_count(b, fds0 - 1, SLOW(IT_TIMEOUT));
    check_growth(b, base, 40, "random input over TLS");
    it_broker_stop(b);
}

/* ---- disconnects at every point of the QoS 1 and QoS 2 flows ------------------------ */

/* The flows run with persistent sessions (clean session 0) on both sides
 * and max_inflight_messages 1: a delivery left in flight by mistake would
 * hold back every later message to that subscriber, so the marker that
 * ends each test also proves nothing leaked. Each flow runs twice: with
 * sessions in memory (the client reconnects to the same broker), and with
 * persistence_file and a broker restart (SIGTERM, start) between the
 * disconnect and the reconnect. */
typedef struct flow {
    it_broker *b;
    bool store;
    char cfg[600];
} flow;

static void flow_start(flow *fl, bool store)
{
    fl->store = store;
    snprintf(fl->cfg, sizeof fl->cfg, "max_inflight_messages 1\n");
    if (store) {
        char *marker = it_temp_file("dir", "");
        char *slash = strrchr(marker, '/');
        *slash = '\0';
        size_t k = strlen(fl->cfg);
        snprintf(fl->cfg + k, sizeof fl->cfg - k, "persistence_file %s/gatemq.db\n", marker);
        free(marker);
    }
    fl->b = it_broker_start(fl->cfg);
}

static uint16_t flow_port(const flow *fl)
{
    return it_broker_port(fl->b);
}

/* With the store: stop (SIGTERM, exit 0) and start again on the same file. */
static void flow_restart(flow *fl)
{
    if (!fl->store)
        return;
    it_broker_stop(fl->b);
    fl->b = it_broker_start(fl->cfg);
}

static void send_id(it_conn *c, uint8_t first, uint16_t id)
{
    uint8_t p[4] = { first, 0x02, (uint8_t)(id >> 8), (uint8_t)id };
    it_send(c, p, 4);
}

static void expect_id(it_conn *c, uint8_t first, uint16_t id)
{
    uint8_t p[4] = { first, 0x02, (uint8_t)(id >> 8), (uint8_t)id };
    it_expect_bytes(c, p, 4, SLOW(IT_TIMEOUT));
}

static void send_publish(it_conn *c, const char *topic, const char *payload, uint8_t qos,
                         bool dup, uint16_t id)
{
    size_t n;
    uint8_t *p = it_encode_publish(topic, payload, strlen(payload), qos, false, dup, id, &n);
    it_send(c, p, n);
    free(p);
}

/* Half-close and wait for the broker to close, ignoring what it sends: the
 * broker has then handled every byte sent before. */
static void drop_after_write(it_conn *c)
{
    it_shutdown_write(c);
    mqtt_frame f;
    long deadline = it_now_ms() + SLOW(IT_TIMEOUT);
    int r;
    while ((r = it_recv_frame(c, &f, SLOW(IT_TIMEOUT))) == 1 && it_now_ms() < deadline) {
    }
    if (r != -1)
        it_fail("the broker did not close a half-closed connection");
    it_close(c);
}

/* The subscriber's next PUBLISH, not acknowledged. */
static uint16_t next_publish(it_conn *c, const char *topic, const char *payload, uint8_t qos,
                             int dup)
{
    mqtt_publish p;
    it_recv_publish(c, &p, SLOW(IT_TIMEOUT));
    if (!it_span_eq(p.topic, topic) || !it_span_eq(p.payload, payload) || p.qos != qos ||
        (dup >= 0 && p.dup != (dup != 0))) {
        print_error("  expected topic %s payload %s qos %u dup %d; got %.*s %.*s qos %u dup %d\n",
                    topic, payload, qos, dup, (int)p.topic.len, (const char *)p.topic.ptr,
                    (int)p.payload.len, (const char *)p.payload.ptr, p.qos, p.dup);
        it_fail("unexpected PUBLISH");
    }
    return p.packet_id;
}

/* Receive until the PUBLISH on "q/marker" (acknowledging everything and
 * completing QoS 2 flows on the way); returns how many PUBLISH packets
 * carried payload. */
static int count_until_marker(it_conn *sub, const char *payload, const char *marker)
{
    int count = 0;
    long deadline = it_now_ms() + SLOW(IT_TIMEOUT);
    for (;;) {
        mqtt_frame f;
        long left = deadline - it_now_ms();
        int r = it_recv_frame(sub, &f, left > 0 ? (int)left : 0);
        if (r != 1)
            it_fail("no marker '%s' (%s)", marker, r == 0 ? "timeout" : "closed");
        uint16_t id;
        if (f.type == MQTT_PUBREL) {
            mqtt_decode_packet_id(&f, &id);
            send_id(sub, 0x70, id);
            continue;
        }
        mqtt_publish p;
        if (f.type != MQTT_PUBLISH || mqtt_decode_publish(&f, &p) != 0) {
            it_hexdump("received", f.body - f.header_len, f.header_len + f.body_len);
            it_fail("expected PUBLISH or PUBREL");
        }
        bool is_marker = it_span_eq(p.topic, "q/marker") && it_span_eq(p.payload, marker);
        if (!is_marker && !(it_span_eq(p.topic, "q/t") && it_span_eq(p.payload, payload))) {
            print_error("  got %.*s '%.*s'\n", (int)p.topic.len, (const char *)p.topic.ptr,
                        (int)p.payload.len, (const char *)p.payload.ptr);
            it_fail("unexpected PUBLISH while waiting for marker '%s'", marker);
        }
        if (p.qos == 1)
            send_id(sub, 0x40, p.packet_id);
        else if (p.qos == 2)
            send_id(sub, 0x50, p.packet_id);
        if (is_marker)
            break;
        count++;
    }
    /* Complete the marker's own QoS flow (PUBREL for QoS 2) and show the
     * broker has nothing else: PINGRESP comes next. */
    static const uint8_t ping[2] = { 0xc0, 0x00 };
    it_send(sub, ping, 2);
    for (;;) {
        mqtt_frame f;
        if (it_recv_frame(sub, &f, SLOW(IT_TIMEOUT)) != 1)
            it_fail("no PINGRESP after the marker");
        if (f.type == MQTT_PINGRESP)
            return count;
        uint16_t id;
        if (f.type != MQTT_PUBREL || mqtt_decode_packet_id(&f, &id) != 0) {
            it_hexdump("received", f.body - f.header_len, f.header_len + f.body_len);
            it_fail("unexpected packet after the marker");
        }
        send_id(sub, 0x70, id);
    }
}

/* A persistent subscriber of q/t (at qos) and q/marker (QoS 1). */
static it_conn *flow_sub(flow *fl, uint8_t qos, bool sp)
{
    it_conn *sub = it_client_sp(flow_port(fl), "flow-sub", false, sp);
    if (!sp) {
        it_subscribe(sub, "q/t", qos);
        it_subscribe(sub, "q/marker", 1);
    }
    return sub;
}

/* A marker on q/marker from a fresh clean client: it ends what
 * count_until_marker counts. */
static void mark(flow *fl, const char *marker)
{
    it_conn *m = it_client(flow_port(fl), "flow-mark", true);
    it_publish_str(m, "q/marker", marker, 1, false);
    it_disconnect(m);
}

/* With the store, the restart closed the subscriber: reconnect it (its
 * session is present). In memory it stays connected. */
static it_conn *flow_restart_sub(flow *fl, it_conn *sub, uint8_t qos)
{
    if (!fl->store)
        return sub;
    flow_restart(fl);
    it_close(sub);
    return flow_sub(fl, qos, true);
}

/* After a QoS 2 flow on packet id 7 completed, the id is free again: a new
 * message with the same id is delivered, not taken for a resend. */
static void qos2_id_reusable(flow *fl, it_conn *pub, it_conn *sub)
{
    send_publish(pub, "q/t", "m-reused-id", 2, false, 7);
    expect_id(pub, 0x50, 7);
    send_id(pub, 0x62, 7);
    expect_id(pub, 0x70, 7);
    mark(fl, "reuse");
    if (count_until_marker(sub, "m-reused-id", "reuse") != 1)
        it_fail("a new QoS 2 message reusing a completed packet id was not delivered once");
}

enum pub_drop { AFTER_PUBLISH, AFTER_PUBREC, AFTER_PUBREL };

/* Publisher side. The publisher (persistent session) sends PUBLISH id 7 at
 * qos and loses its connection at the given point; the subscriber takes
 * what was routed; (store: the broker restarts;) the publisher reconnects
 * (session present) and completes the flow as the spec says: resend
 * PUBLISH with DUP (QoS 1, and QoS 2 before PUBREC), or resend PUBREL. The
 * subscriber gets the message at least once (QoS 1: once or twice) or
 * exactly once (QoS 2). */
static void pub_flow(bool store, uint8_t qos, enum pub_drop at)
{
    flow fl;
    flow_start(&fl, store);
    it_conn *sub = flow_sub(&fl, 2, false);
    it_conn *pub = it_client(flow_port(&fl), "flow-pub", false);
    send_publish(pub, "q/t", "m", qos, false, 7);
    if (at == AFTER_PUBLISH) {
        drop_after_write(pub); /* the broker read the PUBLISH, then EOF */
    } else {
        expect_id(pub, 0x50, 7); /* PUBREC */
        if (at == AFTER_PUBREL) {
            send_id(pub, 0x62, 7);
            drop_after_write(pub); /* PUBCOMP unseen */
        } else {
            it_close(pub); /* PUBREL never sent */
        }
    }
    mark(&fl, "before");
    int before = count_until_marker(sub, "m", "before");
    sub = flow_restart_sub(&fl, sub, 2);

    pub = it_client_sp(flow_port(&fl), "flow-pub", false, true);
    if (at == AFTER_PUBLISH) {
        send_publish(pub, "q/t", "m", qos, true, 7); /* [MQTT-4.4.0-1] resend, DUP 1 */
        if (qos == 1) {
            expect_id(pub, 0x40, 7);
        } else {
            expect_id(pub, 0x50, 7);
            send_id(pub, 0x62, 7);
            expect_id(pub, 0x70, 7);
        }
    } else {
        send_id(pub, 0x62, 7); /* resend PUBREL */
        expect_id(pub, 0x70, 7);
    }
    mark(&fl, "after");
    int after = count_until_marker(sub, "m", "after");
    print_message("  delivered %d time(s) before the reconnect, %d after\n", before, after);
    if (qos == 1 && (before + after < 1 || before + after > 2))
        it_fail("QoS 1 message delivered %d times; expected at least once (1 or 2)",
                before + after);
    if (qos == 2 && before + after != 1)
        it_fail("QoS 2 message delivered %d times; expected exactly once", before + after);
    if (qos == 2)
        qos2_id_reusable(&fl, pub, sub);
    it_disconnect(pub);
    it_disconnect(sub);
    it_broker_stop(fl.b);
}

enum sub_drop { BEFORE_PUBACK, SUB_AFTER_PUBREC, BEFORE_PUBCOMP };

/* Subscriber side. The subscriber (persistent session, subscribed at qos)
 * receives a message and loses its connection at the given point; (store:
 * the broker restarts;) it reconnects (session present) and the broker
 * completes the flow: the PUBLISH again with DUP and the same id when
 * PUBACK never came (QoS 1), PUBREL (never the PUBLISH) once PUBREC had
 * arrived (QoS 2). Then the marker comes next: no third copy, nothing left
 * in flight. */
static void sub_flow(bool store, uint8_t qos, enum sub_drop at)
{
    flow fl;
    flow_start(&fl, store);
    it_conn *sub = flow_sub(&fl, qos, false);
    it_conn *pub = it_client(flow_port(&fl), "flow-pub", true);
    it_publish_str(pub, "q/t", "m", qos, false);
    it_disconnect(pub);
    uint16_t id = next_publish(sub, "q/t", "m", qos, 0);
    if (at == BEFORE_PUBACK) {
        it_close(sub);
    } else if (at == SUB_AFTER_PUBREC) {
        send_id(sub, 0x50, id);
        drop_after_write(sub); /* the broker read the PUBREC; its PUBREL is unseen */
    } else {
        send_id(sub, 0x50, id);
        expect_id(sub, 0x62, id); /* PUBREL arrived; PUBCOMP never sent */
        it_close(sub);
    }
    flow_restart(&fl);
    sub = it_client_sp(flow_port(&fl), "flow-sub", false, true);
    if (at == BEFORE_PUBACK) {
        uint16_t again = next_publish(sub, "q/t", "m", 1, 1); /* DUP 1 [MQTT-3.3.1-1] */
        if (again != id)
            it_fail("redelivered with packet id %u, first sent with %u", again, id);
        send_id(sub, 0x40, id);
    } else {
        expect_id(sub, 0x62, id); /* PUBREL, not the PUBLISH [MQTT-4.3.3-1] */
        send_id(sub, 0x70, id);
    }
    mark(&fl, "after");
    int extra = count_until_marker(sub, "m", "after");
    if (extra)
        it_fail("the message came %d more time(s) after the flow completed", extra);
    it_disconnect(sub);
    it_broker_stop(fl.b);
}

static void test_qos1_publisher_lost_after_publish_delivered_at_least_once(void **s)
{
    pub_flow(false, 1, AFTER_PUBLISH);
}
static void test_qos2_publisher_lost_after_publish_delivered_exactly_once(void **s)
{
    pub_flow(false, 2, AFTER_PUBLISH);
}
static void test_qos2_publisher_lost_after_pubrec_delivered_exactly_once(void **s)
{
    pub_flow(false, 2, AFTER_PUBREC);
}
static void test_qos2_publisher_lost_after_pubrel_delivered_exactly_once(void **s)
{
    pub_flow(false, 2, AFTER_PUBREL);
}
static void test_qos1_subscriber_lost_before_puback_gets_dup_redelivery(void **s)
{
    sub_flow(false, 1, BEFORE_PUBACK);
}
static void test_qos2_subscriber_lost_after_pubrec_gets_pubrel_not_publish(void **s)
{
    sub_flow(false, 2, SUB_AFTER_PUBREC);
}
static void test_qos2_subscriber_lost_before_pubcomp_gets_pubrel_again(void **s)
{
    sub_flow(false, 2, BEFORE_PUBCOMP);
}
static void test_qos1_publisher_lost_after_publish_across_restart(void **s)
{
    pub_flow(true, 1, AFTER_PUBLISH);
}
static void test_qos2_publisher_lost_after_publish_across_restart(void **s)
{
    pub_flow(true, 2, AFTER_PUBLISH);
}
static void test_qos2_publisher_lost_after_pubrec_across_restart(void **s)
{
    pub_flow(true, 2, AFTER_PUBREC);
}
static void test_qos2_publisher_lost_after_pubrel_across_restart(void **s)
{
    pub_flow(true, 2, AFTER_PUBREL);
}
static void test_qos1_subscriber_lost_before_puback_across_restart(void **s)
{
    sub_flow(true, 1, BEFORE_PUBACK);
}
static void test_qos2_subscriber_lost_after_pubrec_across_restart(void **s)
{
    sub_flow(true, 2, SUB_AFTER_PUBREC);
}
static void test_qos2_subscriber_lost_before_pubcomp_across_restart(void **s)
{
    sub_flow(true, 2, BEFORE_PUBCOMP);
}

int main(void)
{
    /* A TLS handshake alone frees two 16 KiB record buffers: with ASan's
     * default quarantine every memory bound here would fail. */
    au_limit_asan_quarantine(16);
    const struct CMUnitTest tests[] = {
        AU_TEST(test_100mb_remaining_length_after_connect_closed_memory_bounded),
        AU_TEST(test_100mb_announced_within_limit_costs_only_bytes_received),
        AU_TEST(test_slowloris_before_connect_closed_by_connect_timeout),
        AU_TEST(test_slowloris_half_connect_closed_by_connect_timeout),
        AU_TEST(test_slowloris_tls_handshake_closed_by_handshake_timeout),
        AU_TEST(test_slowloris_connect_over_tls_closed_by_connect_timeout),
        AU_TEST(test_connection_flood_beyond_max_connections_refused_then_recovered),
        AU_TEST(test_fd_exhaustion_flood_keeps_serving_without_spinning),
        AU_TEST(test_non_reading_subscriber_queue_bounded_by_max_queued_messages),
        AU_TEST(test_non_reading_subscriber_queue_bounded_by_max_queued_bytes),
        AU_TEST(test_20000_subscriptions_of_one_client_still_route),
        AU_TEST(test_10000_level_topic_published_and_subscribed),
        AU_TEST(test_60kb_topic_published_and_subscribed),
        AU_TEST(test_device_topic_over_namespace_limit_acknowledged_and_dropped),
        AU_TEST(test_random_bytes_and_packets_on_plain_listener_closed),
        AU_TEST(test_random_bytes_and_packets_on_tls_listener_closed),
        AU_TEST(test_qos1_publisher_lost_after_publish_delivered_at_least_once),
        AU_TEST(test_qos2_publisher_lost_after_publish_delivered_exactly_once),
        AU_TEST(test_qos2_publisher_lost_after_pubrec_delivered_exactly_once),
        AU_TEST(test_qos2_publisher_lost_after_pubrel_delivered_exactly_once),
        AU_TEST(test_qos1_subscriber_lost_before_puback_gets_dup_redelivery),
        AU_TEST(test_qos2_subscriber_lost_after_pubrec_gets_pubrel_not_publish),
        AU_TEST(test_qos2_subscriber_lost_before_pubcomp_gets_pubrel_again),
        AU_TEST(test_qos1_publisher_lost_after_publish_across_restart),
        AU_TEST(test_qos2_publisher_lost_after_publish_across_restart),
        AU_TEST(test_qos2_publisher_lost_after_pubrec_across_restart),
        AU_TEST(test_qos2_publisher_lost_after_pubrel_across_restart),
        AU_TEST(test_qos1_subscriber_lost_before_puback_across_restart),
        AU_TEST(test_qos2_subscriber_lost_after_pubrec_across_restart),
        AU_TEST(test_qos2_subscriber_lost_before_pubcomp_across_restart),
    };
    /* IT_ABUSE_FILTER=pattern runs the matching tests only (cmocka globbing). */
    const char *filter = getenv("IT_ABUSE_FILTER");
    if (filter && *filter)
        cmocka_set_test_filter(filter);
    return TN_RUN(tests);
}
