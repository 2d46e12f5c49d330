/*
 * it_review.c - regressions found in review: what one client can do to the
 * broker's memory and event loop.
 */
#include "harness.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

/* ---- helpers ------------------------------------------------------------ */

/* A raw TCP socket the test drives itself (the harness's connections
 * block on send, and these tests need to see where the broker stops). */
static int raw_connect(uint16_t port, int rcvbuf)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    if (rcvbuf)
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0)
        it_fail("connect: %s", strerror(errno));
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd;
}

static void raw_send_all(int fd, const void *buf, size_t n)
{
    const uint8_t *p = buf;
    while (n) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            struct pollfd pfd = {.fd = fd, .events = POLLOUT};
            if (poll(&pfd, 1, IT_TIMEOUT) <= 0)
                it_fail("send blocked for %d ms", IT_TIMEOUT);
            continue;
        }
        if (w <= 0)
            it_fail("send: %s", strerror(errno));
        p += w;
        n -= (size_t)w;
    }
}

/* Read exactly n bytes within the deadline. */
static void raw_recv_all(int fd, uint8_t *buf, size_t n, int timeout_ms)
{
    long deadline = it_now_ms() + timeout_ms;
    while (n) {
        long left = deadline - it_now_ms();
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        if (left <= 0 || poll(&pfd, 1, (int)left) <= 0)
            it_fail("timed out with %zu bytes still to read", n);
        ssize_t r = recv(fd, buf, n, 0);
        if (r <= 0)
            it_fail("recv: %s", r ? strerror(errno) : "EOF");
        buf += r;
        n -= (size_t)r;
    }
}

static size_t connect_packet(uint8_t *buf, const char *id)
{
    return it_raw_connect(buf, "MQTT", 4, 0x02, 0, id, NULL, 0);
}

/* A SUBSCRIBE (or UNSUBSCRIBE) of filters "<prefix><i>" for i in [0, n). */
static uint8_t *encode_filters(bool subscribe, const char *prefix, size_t n, size_t *len)
{
    mqtt_span *f = calloc(n, sizeof *f);
    uint8_t *qos = calloc(n, 1);
    char *names = malloc(n * 32);
    assert_non_null(f);
    assert_non_null(qos);
    assert_non_null(names);
    for (size_t i = 0; i < n; i++) {
        char *s = names + i * 32;
        int l = snprintf(s, 32, "%s%zu", prefix, i);
        f[i] = (mqtt_span){(const uint8_t *)s, (size_t)l};
    }
    size_t size = subscribe ? mqtt_encode_subscribe(NULL, 0, 7, f, qos, n)
                            : mqtt_encode_unsubscribe(NULL, 0, 8, f, n);
    uint8_t *buf = malloc(size);
    assert_non_null(buf);
    if (subscribe)
        mqtt_encode_subscribe(buf, size, 7, f, qos, n);
    else
        mqtt_encode_unsubscribe(buf, size, 8, f, n);
    free(f);
    free(qos);
    free(names);
    *len = size;
    return buf;
}

/* ---- output a client never reads ----------------------------------------- */

/* Every PINGREQ earns a PINGRESP. A client that sends them (or QoS 1
 * PUBLISHes, SUBSCRIBEs...) without reading used to grow its write buffer
 * by the same amount, without bound: 100 MB sent, 100 MB held. Its input is
 * now paused while its output is full, and everything is answered once it
 * reads. */
static void test_client_that_never_reads_cannot_grow_the_broker(void **state)
{
    (void)state;
    it_broker *b = it_broker_start(NULL);
    int fd = raw_connect(it_broker_port(b), 4096);
    uint8_t buf[64];
    raw_send_all(fd, buf, connect_packet(buf, "flooder"));
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);

    enum { CHUNK = 64 * 1024, LIMIT = 64 * 1024 * 1024 };
    uint8_t *pings = malloc(CHUNK);
    assert_non_null(pings);
    for (size_t i = 0; i < CHUNK; i += 2) {
        pings[i] = 0xc0;
        pings[i + 1] = 0x00;
    }
    long rss_before = it_broker_rss_kb(b);
    /* Send until the broker stops taking bytes (a second without room). */
    size_t sent = 0;
    while (sent < LIMIT) {
        ssize_t w = send(fd, pings + sent % CHUNK, CHUNK - sent % CHUNK, MSG_NOSIGNAL);
        if (w > 0) {
            sent += (size_t)w;
            continue;
        }
        if (w < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
            it_fail("send: %s", strerror(errno));
        struct pollfd pfd = {.fd = fd, .events = POLLOUT};
        if (poll(&pfd, 1, 1000) == 0)
            break;
    }
    long rss_after = it_broker_rss_kb(b);
    free(pings);
    if (sent >= LIMIT || rss_after - rss_before > 32 * 1024)
        it_fail("the broker took %zu bytes of PINGREQ from a client that reads nothing "
                "(resident memory %ld kB -> %ld kB)",
                sent, rss_before, rss_after);

    /* Once the client reads, every request is answered, in order. */
    size_t answers = 4 + (sent / 2) * 2;
    uint8_t *got = malloc(answers);
    assert_non_null(got);
    raw_recv_all(fd, got, answers, 4 * IT_TIMEOUT);
    static const uint8_t connack[] = {0x20, 0x02, 0x00, 0x00};
    assert_memory_equal(got, connack, 4);
    for (size_t i = 4; i < answers; i += 2)
        if (got[i] != 0xd0 || got[i + 1] != 0x00)
            it_fail("answer at byte %zu is %02x %02x, not PINGRESP", i, got[i], got[i + 1]);
    free(got);
    close(fd);
    it_assert_serving(b);
    it_broker_stop(b);
}

/* ---- many subscriptions in one session ----------------------------------- */

/* Each new filter used to be compared with every subscription the session
 * already had: one SUBSCRIBE of n filters cost O(n^2), and a 16 MB packet
 * (about two million filters) held the event loop for hours. */
static void test_subscribe_of_many_filters_does_not_stall_the_loop(void **state)
{
    (void)state;
    it_broker *b = it_broker_start(NULL);
    it_conn *c = it_client(it_broker_port(b), "many", true);
    enum { N = 80000 };
    size_t len;
    uint8_t *sub = encode_filters(true, "many/", N, &len);
    long t0 = it_now_ms();
    it_send(c, sub, len);
    free(sub);
    mqtt_frame f;
    assert_int_equal(it_recv_frame(c, &f, 4 * IT_TIMEOUT), 1);
    long ms = it_now_ms() - t0;
    assert_int_equal(f.type, MQTT_SUBACK);
    assert_int_equal(f.body_len, 2 + N);
    if (ms > 4000)
        it_fail("SUBACK for %d filters took %ld ms", N, ms);

    /* The index stays right as subscriptions come and go: unsubscribing the
     * first moves the last into its place. */
    it_unsubscribe(c, "many/0");
    it_conn *p = it_client(it_broker_port(b), "pub", true);
    it_publish_str(p, "many/0", "gone", 0, false);
    it_publish_str(p, "many/79999", "moved", 0, false);
    it_expect_publish(c, "many/79999", "moved", 0, false);
    it_unsubscribe(c, "many/79999");
    it_publish_str(p, "many/79999", "gone", 0, false);
    it_publish_str(p, "many/1", "marker", 0, false);
    it_expect_publish(c, "many/1", "marker", 0, false);

    /* And an UNSUBSCRIBE of them all is linear too. */
    uint8_t *uns = encode_filters(false, "many/", N, &len);
    t0 = it_now_ms();
    it_send(c, uns, len);
    free(uns);
    IT_EXPECT(c, 0xb0, 0x02, 0x00, 0x08);
    ms = it_now_ms() - t0;
    if (ms > 4000)
        it_fail("UNSUBACK for %d filters took %ld ms", N, ms);
    it_publish_str(p, "many/2", "gone", 0, false);
    it_ping(c);
    it_expect_silence(c, IT_QUIET);
    it_disconnect(p);
    it_disconnect(c);
    it_assert_serving(b);
    it_broker_stop(b);
}

/* max_subscriptions caps one session's subscriptions: past it a new filter
 * gets 0x80, replacing a filter it already has still works, and the
 * subscriptions it holds keep delivering. */
static void test_max_subscriptions_refuses_further_filters(void **state)
{
    it_broker *b = it_broker_start("max_subscriptions 3");
    it_conn *c = it_client(it_broker_port(b), "many", true);
    const char *f[] = {"a/1", "a/2", "a/3", "a/4", "a/1"};
    uint8_t q[] = {1, 1, 1, 1, 0};
    uint8_t codes[] = {0x01, 0x01, 0x01, 0x80, 0x00};
    it_subscribe_n(c, f, q, 5, codes);
    it_conn *p = it_client(it_broker_port(b), "pub", true);
    it_publish_str(p, "a/4", "refused", 0, false);
    it_publish_str(p, "a/3", "kept", 0, false);
    it_expect_publish(c, "a/3", "kept", 0, false); /* and not the a/4 one before it */
    it_broker_stop(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        IT_TEST(test_client_that_never_reads_cannot_grow_the_broker),
        IT_TEST(test_subscribe_of_many_filters_does_not_stall_the_loop),
        IT_TEST(test_max_subscriptions_refuses_further_filters),
    };
    return IT_RUN(tests);
}
