/*
 * it_backpressure.c - the store's backpressure (store_queue_limit) against
 * the real broker: clients that write to the durable store faster than the
 * disk commits must not grow the broker's memory, must not lose anything,
 * and must not slow down the clients that do not write.
 *
 * The store is made slower than any client on purpose: the broker runs with
 * GATEMQ_TEST_STORE_DELAY_US (a test-only knob of store/store.c: its thread
 * sleeps that long before each commit), whatever the disk under the test,
 * and with a small store_queue_limit so that the limit is reached at once.
 * The flooder streams 64 KiB QoS 0 retained messages, which have no
 * acknowledgement to wait for: only the backpressure can stop it, by not
 * reading its socket (its sends then block: TCP pushes back).
 *
 * Memory is read from /proc/<pid>/status (VmHWM, the peak) as in it_abuse.
 * Synchronisation: the PUBACK of a retained QoS 1 PUBLISH is sent after its
 * commit, and writes commit in queue order, so the flooder's own retained
 * QoS 1 PUBLISH after the flood proves every earlier write committed. No
 * sleeps: the flooder polls its socket, bystanders wait for their packets.
 */
#include "abuse_util.h"

#include <errno.h>
#include <poll.h>
#include <stddef.h>
#include <sys/socket.h>
#include <unistd.h>

#define MB (1024L)                  /* kB per MiB, for the /proc figures */
#define SLOW(ms) ((ms) * au_slow()) /* a deadline, stretched under valgrind */

/* The ASan quarantine of the brokers started here (main sets it): still a
 * use-after-free detector, and the memory bound allows for it. */
#if defined(__SANITIZE_ADDRESS__)
#define ASAN_QUARANTINE_MB 8
#else
#define ASAN_QUARANTINE_MB 0
#endif

#define PAYLOAD (64 * 1024)
#define TOPICS 16 /* the flood cycles over these, so retained memory stays small */
/* The bystanders' round trips (clean sessions, not retained): nothing for
 * the store. */
#define LIVE "live/check"

/* ---- helpers ------------------------------------------------------------ */

/* A database directory that outlives the broker processes of one test. */
typedef struct pdir {
    char dir[128];
    char conf[512];
} pdir;

static void pdir_init(pdir *d, const char *extra)
{
    char *file = it_temp_file("README", "database directory of an it_backpressure test\n");
    char *slash = strrchr(file, '/');
    *slash = '\0';
    snprintf(d->dir, sizeof d->dir, "%s", file);
    free(file);
    snprintf(d->conf, sizeof d->conf, "persistence_file %s/gatemq.db\n%s", d->dir, extra);
}

static mqtt_span sp(const char *s)
{
    return (mqtt_span){ (const uint8_t *)s, strlen(s) };
}

/* Payload of flood message i: a header naming it, then bytes derived from i. */
static void fill_payload(uint8_t *p, unsigned i)
{
    int n = snprintf((char *)p, 32, "flood message %u;", i);
    for (size_t j = (size_t)n; j < PAYLOAD; j++)
        p[j] = (uint8_t)(i * 131u + j * 7u);
}

static void flood_topic(char *buf, size_t n, unsigned i)
{
    snprintf(buf, n, "flood/%u", i % TOPICS);
}

/* A raw flooding client on a non-blocking socket, so the test can see the
 * broker stop reading it and serve others meanwhile. */
typedef struct flooder {
    int fd;
    unsigned next, total; /* messages started, to send */
    uint8_t *pkt;         /* the message being sent */
    size_t len, off;
    unsigned blocked;     /* times the socket was full (TCP pushed back) */
    uint8_t payload[PAYLOAD];
} flooder;

/* One flooder at a time, static so that a failed test leaks nothing but
 * its socket, which au_teardown closes. */
static flooder the_flooder;

static flooder *flooder_open(uint16_t port, const char *id, uint16_t keepalive, unsigned total)
{
    flooder *f = &the_flooder;
    free(f->pkt);
    memset(f, 0, offsetof(flooder, payload));
    f->fd = au_sock(port, 0);
    f->total = total;
    mqtt_connect m = { 0 };
    m.clean_session = true;
    m.keep_alive = keepalive;
    m.client_id = sp(id);
    uint8_t buf[64];
    size_t n = mqtt_encode_connect(buf, sizeof buf, &m);
    uint8_t ack[4];
    static const uint8_t connack[4] = { 0x20, 0x02, 0x00, 0x00 };
    if (!au_sock_send_all(f->fd, buf, n, SLOW(IT_TIMEOUT)) ||
        !au_sock_read_exact(f->fd, ack, 4, SLOW(IT_TIMEOUT)) || memcmp(ack, connack, 4) != 0)
        it_fail("flooder %s: no CONNACK 0", id);
    return f;
}

static void flooder_close(flooder *f)
{
    au_sock_close(f->fd);
    free(f->pkt);
    f->pkt = NULL;
}

static bool flooder_done(const flooder *f)
{
    return f->next == f->total && f->off == f->len;
}

/* Send what the socket takes now, message after message. Returns false
 * when the socket is full (or everything is sent). */
static bool flooder_pump(flooder *f)
{
    for (;;) {
        if (f->off == f->len) {
            if (f->next == f->total)
                return false;
            char topic[32];
            flood_topic(topic, sizeof topic, f->next);
            fill_payload(f->payload, f->next);
            free(f->pkt);
            f->pkt = it_encode_publish(topic, f->payload, PAYLOAD, 0, true, false, 0, &f->len);
            f->off = 0;
            f->next++;
        }
        ssize_t w = send(f->fd, f->pkt + f->off, f->len - f->off, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (w > 0) {
            f->off += (size_t)w;
            continue;
        }
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            f->blocked++;
            return false;
        }
        it_fail("flooder: send failed after %u messages: %s", f->next,
                w == 0 ? "closed" : strerror(errno));
    }
}

/* Wait until the flooder's socket takes bytes again (or ms pass). */
static void flooder_wait_writable(flooder *f, int ms)
{
    struct pollfd pfd = { f->fd, POLLOUT, 0 };
    poll(&pfd, 1, ms);
}

/* After the flood, on the flooder's own connection: a retained QoS 1
 * PUBLISH whose PUBACK proves every write queued before it committed. */
static void flooder_barrier(flooder *f, int timeout_ms)
{
    size_t n;
    uint8_t *pkt = it_encode_publish("flood/done", "all sent", 8, 1, true, false, 1, &n);
    bool ok = au_sock_send_all(f->fd, pkt, n, timeout_ms);
    free(pkt);
    uint8_t ack[4];
    static const uint8_t puback[4] = { 0x40, 0x02, 0x00, 0x01 };
    if (!ok || !au_sock_read_exact(f->fd, ack, 4, timeout_ms) || memcmp(ack, puback, 4) != 0)
        it_fail("flooder: no PUBACK for the retained QoS 1 after the flood");
}

/* PINGREQ on the flooder's connection: the answer comes only once the
 * broker has read and handled everything sent before it. */
static void flooder_ping(flooder *f, int timeout_ms)
{
    static const uint8_t pingreq[2] = { 0xc0, 0x00 };
    static const uint8_t pingresp[2] = { 0xd0, 0x00 };
    uint8_t got[2];
    if (!au_sock_send_all(f->fd, pingreq, 2, timeout_ms) ||
        !au_sock_read_exact(f->fd, got, 2, timeout_ms) || memcmp(got, pingresp, 2) != 0)
        it_fail("flooder: no PINGRESP after the flood (closed, or never read again?)");
}

/* Every flood topic holds, retained, the last message sent to it, byte
 * for byte; and the barrier's message is there too when one was sent. */
static void check_retained(it_broker *b, unsigned total, bool barrier)
{
    static uint8_t want[PAYLOAD];
    bool seen[TOPICS] = { false };
    it_conn *c = it_client(it_broker_port(b), "retained-check", true);
    it_subscribe(c, "flood/#", 0);
    for (unsigned got = 0; got < TOPICS + (barrier ? 1u : 0u); got++) {
        mqtt_publish p;
        it_recv_publish(c, &p, SLOW(IT_TIMEOUT));
        if (!p.retain)
            it_fail("retained check: a message without RETAIN");
        if (it_span_eq(p.topic, "flood/done")) {
            if (!barrier || !it_span_eq(p.payload, "all sent"))
                it_fail("retained check: flood/done differs");
            continue;
        }
        unsigned k;
        if (p.topic.len < 7 || sscanf((const char *)p.topic.ptr + 6, "%u", &k) != 1 ||
            k >= TOPICS || seen[k])
            it_fail("retained check: unexpected topic %.*s", (int)p.topic.len,
                    (const char *)p.topic.ptr);
        seen[k] = true;
        unsigned last = total - 1 - ((total - 1 - k) % TOPICS); /* the last i with i % TOPICS == k */
        fill_payload(want, last);
        if (p.payload.len != PAYLOAD || memcmp(p.payload.ptr, want, PAYLOAD) != 0)
            it_fail("retained check: flood/%u holds '%.24s' (%zu bytes), expected message %u", k,
                    (const char *)p.payload.ptr, p.payload.len, last);
    }
    it_ping(c); /* and nothing else is retained there */
    it_disconnect(c);
}

/* ---- tests ---------------------------------------------------------------- */

/* 64 MiB of 64 KiB QoS 0 retained messages into a store that commits one
 * group every 20 ms, with store_queue_limit 1 MiB: the flooder is paused
 * (TCP pushes back on it), the broker's peak memory stays far below what
 * the queue would hold unbounded, two bystanders keep their round trips
 * going throughout, $SYS counts the pauses and shows the queue, and after
 * the flood every topic retains its last message, also after kill -9. */
static void test_retained_qos0_flood_bounded_by_store_queue_limit(void **state)
{
    enum { TOTAL = 1024 }; /* 64 MiB */
    setenv("GATEMQ_TEST_STORE_DELAY_US", "20000", 1);
    pdir d;
    pdir_init(&d, "store_queue_limit 1048576\nsys_interval 1\n");
    it_broker *b = it_broker_start(d.conf);
    unsetenv("GATEMQ_TEST_STORE_DELAY_US");
    uint16_t port = it_broker_port(b);

    it_conn *sub = it_client(port, "bystander-sub", true);
    it_subscribe(sub, "live/#", 1);
    it_conn *pub = it_client(port, "bystander-pub", true);
    au_roundtrip(pub, sub, LIVE);
    long base = it_broker_rss_kb(b);

    flooder *f = flooder_open(port, "flooder", 0, TOTAL);
    long start = it_now_ms(), deadline = start + SLOW(120000), worst = 0;
    unsigned rounds_pushed_back = 0;
    while (!flooder_done(f)) {
        if (flooder_pump(f))
            continue;
        if (flooder_done(f))
            break;
        /* The flooder's socket is full: the broker is not reading it. Others
         * must be served meanwhile. */
        long rt = au_roundtrip(pub, sub, LIVE);
        worst = rt > worst ? rt : worst;
        rounds_pushed_back++;
        if (it_now_ms() > deadline)
            it_fail("flood not through after %ld ms: %u of %u messages started",
                    it_now_ms() - start, f->next, TOTAL);
        flooder_wait_writable(f, 5);
    }
    flooder_barrier(f, SLOW(30000));
    long took = it_now_ms() - start;

    long peak = au_status_kb(it_broker_pid(b), "VmHWM:");
    /* 1 MiB of queue, 1 MiB of retained messages, SQLite's page cache:
     * a few MiB (unbounded, the queue alone would take most of the 64). */
    long bound = 16 * MB * au_mem_factor() + ASAN_QUARANTINE_MB * MB;
    print_message("  %u x 64 KiB in %ld ms; socket full %u times, %u bystander round trips "
                  "meanwhile (worst %ld ms); VmRSS %ld kB before, VmHWM %ld kB (bound +%ld kB)\n",
                  TOTAL, took, f->blocked, rounds_pushed_back, worst, base, peak, bound);
    if (base <= 0 || peak <= 0)
        it_fail("cannot read the broker's memory from /proc");
    if (peak - base > bound)
        it_fail("broker peak memory grew by %ld kB during the flood (bound %ld kB)", peak - base,
                bound);
    if (rounds_pushed_back < 10)
        it_fail("only %u bystander round trips while the flooder was pushed back",
                rounds_pushed_back);

    unsigned long long pauses = au_sys_value(b, "$SYS/broker/store/pauses");
    if (pauses == 0)
        it_fail("$SYS/broker/store/pauses is 0 after the flood");
    unsigned long long queued = au_sys_value(b, "$SYS/broker/store/queued_bytes");
    if (queued != 0)
        it_fail("$SYS/broker/store/queued_bytes is %llu after the last commit", queued);
    print_message("  $SYS/broker/store/pauses %llu\n", pauses);

    check_retained(b, TOTAL, true);
    au_roundtrip(pub, sub, LIVE);
    flooder_close(f);
    it_close(pub);
    it_close(sub);

    it_broker_kill9(b);
    b = it_broker_start(d.conf);
    check_retained(b, TOTAL, true);
    it_assert_serving(b);
    it_broker_stop(b);
}

/* A client the broker stopped reading for the store is not closed by its
 * keep alive (1 s, so 1.5 s without a packet), however long the pause: the
 * store commits once per 2 s, so the flooder waits about that long. Its
 * input resumes by itself (PINGREQ answered after the flood), and its
 * messages survive a restart. */
static void test_keepalive_spares_client_paused_for_store(void **state)
{
    enum { TOTAL = 20 }; /* 1.25 MiB: one pause over the 1 MiB limit */
    setenv("GATEMQ_TEST_STORE_DELAY_US", "2000000", 1);
    pdir d;
    pdir_init(&d, "store_queue_limit 1048576\n");
    it_broker *b = it_broker_start(d.conf);
    unsetenv("GATEMQ_TEST_STORE_DELAY_US");
    uint16_t port = it_broker_port(b);

    flooder *f = flooder_open(port, "ka-flooder", 1, TOTAL);
    long start = it_now_ms(), deadline = start + SLOW(60000);
    while (!flooder_done(f)) {
        if (!flooder_pump(f) && !flooder_done(f))
            flooder_wait_writable(f, 100);
        if (it_now_ms() > deadline)
            it_fail("flood not through: %u of %u messages started", f->next, TOTAL);
    }
    flooder_ping(f, SLOW(30000));
    print_message("  %u x 64 KiB and PINGRESP in %ld ms (keep alive 1 s)\n", TOTAL,
                  it_now_ms() - start);
    /* The case under test did happen: the keep-alive timer ran out while
     * the broker was not reading the flooder, and spared it. */
    if (!it_broker_log_contains(b, "keep alive ran out while the broker was not reading"))
        it_fail("the flooder was never paused past its keep-alive timeout");
    if (it_broker_log_contains(b, "keep alive timeout"))
        it_fail("a keep alive timeout was logged");
    static const uint8_t disconnect[2] = { 0xe0, 0x00 };
    if (!au_sock_send_all(f->fd, disconnect, 2, SLOW(IT_TIMEOUT)) ||
        au_sock_wait_closed(f->fd, SLOW(IT_TIMEOUT)) < 0)
        it_fail("flooder: DISCONNECT not followed by a close");
    flooder_close(f);
    it_broker_stop(b); /* a clean stop commits everything queued */

    b = it_broker_start(d.conf);
    check_retained(b, TOTAL, false);
    it_broker_stop(b);
}

/* Wait until the broker's log contains text (polling the file). */
static void await_log(it_broker *b, const char *text, int timeout_ms)
{
    long deadline = it_now_ms() + timeout_ms;
    while (!it_broker_log_contains(b, text)) {
        if (it_now_ms() > deadline)
            it_fail("the broker never logged '%s'", text);
        au_pause_ms(10); /* polling a condition */
    }
}

/* A client closed while paused for the store (here: taken over by a new
 * connection with its client id) leaves the list of paused clients: the
 * release that follows must not touch it (the sanitizer build would report
 * the use after free), and the new connection floods, is paused and
 * resumed in turn. */
static void test_client_taken_over_while_paused_for_store(void **state)
{
    enum { TOTAL = 20 };
    setenv("GATEMQ_TEST_STORE_DELAY_US", "1000000", 1);
    pdir d;
    pdir_init(&d, "store_queue_limit 1048576\n");
    it_broker *b = it_broker_start(d.conf);
    unsetenv("GATEMQ_TEST_STORE_DELAY_US");
    uint16_t port = it_broker_port(b);

    flooder *f = flooder_open(port, "twin", 0, TOTAL);
    long deadline = it_now_ms() + SLOW(IT_TIMEOUT);
    while (!it_broker_log_contains(b, "client twin: input paused")) {
        if (!flooder_pump(f))
            flooder_wait_writable(f, 10);
        if (it_now_ms() > deadline)
            it_fail("the first twin was never paused (%u messages started)", f->next);
    }
    int old_fd = f->fd;
    f->fd = -1;
    flooder_close(f);

    /* The second twin takes the session over while the first is paused. */
    f = flooder_open(port, "twin", 0, TOTAL);
    await_log(b, "client twin: taken over", SLOW(IT_TIMEOUT));
    if (au_sock_wait_closed(old_fd, SLOW(IT_TIMEOUT)) < 0)
        it_fail("the first twin was not closed by the take-over");
    au_sock_close(old_fd);
    deadline = it_now_ms() + SLOW(60000);
    while (!flooder_done(f)) {
        if (!flooder_pump(f) && !flooder_done(f))
            flooder_wait_writable(f, 100);
        if (it_now_ms() > deadline)
            it_fail("second flood not through: %u of %u messages started", f->next, TOTAL);
    }
    flooder_ping(f, SLOW(30000));
    flooder_close(f);
    it_assert_serving(b);
    it_broker_stop(b);
}

int main(void)
{
    au_limit_asan_quarantine(ASAN_QUARANTINE_MB);
    const struct CMUnitTest tests[] = {
        AU_TEST(test_retained_qos0_flood_bounded_by_store_queue_limit),
        AU_TEST(test_keepalive_spares_client_paused_for_store),
        AU_TEST(test_client_taken_over_while_paused_for_store),
    };
    return IT_RUN(tests);
}
