/*
 * it_persist.c - durability across kill -9 (persistence_file, SQLite).
 *
 * Every test runs a broker on a database in a temporary directory of its
 * own (not the broker's directory, which it_broker_kill9 removes), kills it
 * with SIGKILL, which leaves it no chance to flush or close anything, and
 * starts a new broker on the same file. What the broker acknowledged before
 * the kill must be there after it, byte for byte; what was removed before it
 * must stay removed.
 *
 * Synchronisation, never by sleeping: an acknowledgement the broker holds
 * until the store commits (PUBACK or PUBREC of a PUBLISH that changed
 * durable state, docs/configuration.md "Persistence") proves that commit.
 * Writes that have no such acknowledgement of their own (SUBSCRIBE,
 * UNSUBSCRIBE, a clean-session CONNECT, a subscriber's PUBACK or PUBREC, a
 * QoS 0 retained message) are made durable with store_barrier(): writes
 * commit in the order they were queued (store/store.h), so the PUBACK of a
 * later retained QoS 1 PUBLISH vouches for every write queued before it.
 *
 * The only timed windows show that something does NOT happen (IT_QUIET).
 */
#include "harness.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

/* it_fail at this line (the harness reports the line of the last harness
 * call otherwise). */
#define P_FAIL(...) (it__here(__FILE__, __LINE__), it_fail(__VA_ARGS__))

/* Longer deadline for the multi-megabyte message (ASan, slow disks). */
#define BIG_TIMEOUT 30000

/* ---- helpers ------------------------------------------------------------ */

/* A database directory that outlives the broker processes of one test; the
 * harness removes it at teardown. conf is the broker's extra config. */
typedef struct pdir {
    char dir[128];
    char db[160];
    char conf[512];
} pdir;

static void pdir_init_at(pdir *d, char *file_in_dir, const char *extra)
{
    char *slash = strrchr(file_in_dir, '/');
    *slash = '\0';
    snprintf(d->dir, sizeof d->dir, "%s", file_in_dir);
    free(file_in_dir);
    snprintf(d->db, sizeof d->db, "%s/gatemq.db", d->dir);
    snprintf(d->conf, sizeof d->conf, "persistence_file %s\n%s", d->db, extra ? extra : "");
}

static void pdir_init(pdir *d, const char *extra)
{
    pdir_init_at(d, it_temp_file("README", "database directory of an it_persist test\n"), extra);
}

/* kill -9, then a new broker on the same database. Client connections of
 * the old broker are left to the caller (close them after this). */
static it_broker *crash_and_restart(it_broker *b, const pdir *d)
{
    it_broker_kill9(b);
    return it_broker_start(d->conf);
}

/* Every write queued before this call is committed when it returns (see the
 * comment at the top). The barrier's own retained message stays on topic
 * "barrier"; no test subscribes to it. */
static void store_barrier(uint16_t port)
{
    it_conn *c = it_client(port, "store-barrier", true);
    it_publish_str(c, "barrier", "everything before me is committed", 1, true);
    it_disconnect(c);
}

/* Send an encoded PUBLISH, freeing the buffer whatever happens. */
static void send_publish(it_conn *c, const char *topic, const void *payload, size_t len,
                         uint8_t qos, bool retain, bool dup, uint16_t id)
{
    size_t n;
    uint8_t *pkt = it_encode_publish(topic, payload, len, qos, retain, dup, id, &n);
    bool ok = it_send_try(c, pkt, n);
    free(pkt);
    if (!ok)
        P_FAIL("send PUBLISH on %s failed: %s", topic, strerror(errno));
}

/* The next packet must be exactly this PUBLISH (flags and packet id too). */
static void expect_publish_exact(it_conn *c, const char *topic, const void *payload,
                                 size_t len, uint8_t qos, bool retain, bool dup, uint16_t id)
{
    size_t n;
    uint8_t *exp = it_encode_publish(topic, payload, len, qos, retain, dup, id, &n);
    static uint8_t copy[4096];
    if (n > sizeof copy) {
        free(exp);
        P_FAIL("expect_publish_exact: %zu bytes is too large", n);
    }
    memcpy(copy, exp, n);
    free(exp);
    it_expect_bytes(c, copy, n, IT_TIMEOUT);
}

static void send_packet_id(it_conn *c, uint8_t first_byte, uint16_t id)
{
    uint8_t pkt[4] = { first_byte, 0x02, (uint8_t)(id >> 8), (uint8_t)id };
    it_send(c, pkt, 4);
}

static void expect_packet_id(it_conn *c, uint8_t first_byte, uint16_t id, int timeout_ms)
{
    uint8_t pkt[4] = { first_byte, 0x02, (uint8_t)(id >> 8), (uint8_t)id };
    it_expect_bytes(c, pkt, 4, timeout_ms);
}

static void print_publish(const char *label, const mqtt_publish *p)
{
    print_error("  %s: topic '%.*s' qos %u retain %d dup %d id %u payload %zu bytes\n", label,
                (int)p->topic.len, (const char *)p->topic.ptr, p->qos, p->retain, p->dup,
                p->packet_id, p->payload.len);
    it_hexdump("payload", p->payload.ptr, p->payload.len);
}

/* For ms milliseconds no PUBLISH (nor anything but PUBREL, answered with
 * PUBCOMP) may arrive on c. */
static void expect_no_publish(it_conn *c, int ms, const char *what)
{
    long deadline = it_now_ms() + ms;
    for (;;) {
        long left = deadline - it_now_ms();
        if (left <= 0)
            return;
        mqtt_frame f;
        int r = it_recv_frame(c, &f, (int)left);
        if (r == 0)
            return;
        if (r < 0)
            P_FAIL("connection closed while showing that %s", what);
        if (f.type == MQTT_PUBREL) {
            uint16_t id;
            if (mqtt_decode_packet_id(&f, &id))
                P_FAIL("bad PUBREL");
            send_packet_id(c, 0x70, id);
            continue;
        }
        it_hexdump("received", f.body - f.header_len, f.header_len + f.body_len);
        P_FAIL("%s, but a %s arrived", what, mqtt_type_name(f.type));
    }
}

/* The broker's log (its stderr, which the harness points at a file). */
static char *broker_log(const it_broker *b)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/fd/2", (int)it_broker_pid(b));
    int fd = open(path, O_RDONLY);
    if (fd < 0)
        return NULL;
    size_t cap = 65536, n = 0;
    char *buf = malloc(cap + 1);
    ssize_t r;
    while ((r = read(fd, buf + n, cap - n)) > 0) {
        n += (size_t)r;
        if (n == cap) {
            cap *= 2;
            buf = realloc(buf, cap + 1);
        }
    }
    close(fd);
    buf[n] = '\0';
    return buf;
}

/* Does one line of the log contain both a and c? */
static bool log_line_has(const it_broker *b, const char *a, const char *c)
{
    char *log = broker_log(b);
    bool found = false;
    for (char *line = log; line && *line && !found;) {
        char *end = strchr(line, '\n');
        if (end)
            *end = '\0';
        found = strstr(line, a) && strstr(line, c);
        line = end ? end + 1 : line + strlen(line);
    }
    free(log);
    return found;
}

/* Names in dir made of prefix and digits only (so "gatemq.db.corrupt-<time>"
 * and not its "-wal" and "-shm" companions): count, first one copied to
 * first. */
static int find_files(const char *dir, const char *prefix, char *first, size_t cap)
{
    DIR *d = opendir(dir);
    if (!d)
        P_FAIL("opendir %s: %s", dir, strerror(errno));
    int count = 0;
    struct dirent *e;
    size_t plen = strlen(prefix);
    while ((e = readdir(d)) != NULL) {
        if (strncmp(e->d_name, prefix, plen) != 0 || e->d_name[plen] == '\0' ||
            strspn(e->d_name + plen, "0123456789") != strlen(e->d_name + plen))
            continue;
        if (count++ == 0 && first)
            snprintf(first, cap, "%s", e->d_name);
    }
    closedir(d);
    return count;
}

static bool file_equals(const char *path, const void *bytes, size_t n)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return false;
    uint8_t *buf = malloc(n + 1);
    size_t got = fread(buf, 1, n + 1, f);
    fclose(f);
    bool eq = got == n && memcmp(buf, bytes, n) == 0;
    free(buf);
    return eq;
}

/* ---- the retained-message data set --------------------------------------- */

#define MAX_RET 512

/* Distinct topics of several shapes: deep, UTF-8, with a space. */
static void ret_topic(unsigned i, char *buf, size_t n)
{
    switch (i % 4) {
    case 0:
        snprintf(buf, n, "ret/%u", i);
        break;
    case 1:
        snprintf(buf, n, "ret/deep/a/b/c/d/%u", i);
        break;
    case 2:
        snprintf(buf, n, "ret/gr\xc3\xb6\xc3\x9f" "e/%u", i);
        break;
    default:
        snprintf(buf, n, "ret/%u/with space", i);
        break;
    }
}

/* Distinct binary payloads of 2..501 bytes, NUL and 0xff bytes included. */
static size_t ret_payload(unsigned i, uint8_t *buf)
{
    size_t len = 2 + (i * 37u) % 500;
    buf[0] = (uint8_t)(i >> 8);
    buf[1] = (uint8_t)i;
    for (size_t k = 2; k < len; k++)
        buf[k] = (uint8_t)(i * 131u + k * 29u + (k >> 3));
    return len;
}

/* Publish n retained QoS 1 messages (waiting for each PUBACK), replace one
 * and clear another; kill -9; restart; a '#' subscriber must get exactly
 * the n messages and the replacement, RETAIN=1, byte for byte. */
static void retained_survive_kill9(const char *extra, unsigned n)
{
    static bool seen[MAX_RET];
    static uint8_t payload[600];
    char topic[64];
    assert_true(n <= MAX_RET);
    memset(seen, 0, sizeof seen);

    pdir d;
    pdir_init(&d, extra);
    it_broker *b = it_broker_start(d.conf);
    it_conn *pub = it_client(it_broker_port(b), "ret-pub", true);
    for (unsigned i = 0; i < n; i++) {
        ret_topic(i, topic, sizeof topic);
        size_t len = ret_payload(i, payload);
        it_publish(pub, topic, payload, len, 1, true);
    }
    it_publish_str(pub, "ret-special/replaced", "old value", 1, true);
    it_publish_str(pub, "ret-special/replaced", "newest value", 1, true);
    it_publish_str(pub, "ret-special/cleared", "cleared before the crash", 1, true);
    it_publish(pub, "ret-special/cleared", "", 0, 1, true);

    b = crash_and_restart(b, &d);
    it_close(pub);

    it_conn *sub = it_client(it_broker_port(b), "ret-sub", true);
    it_subscribe(sub, "#", 1);
    bool replaced_seen = false;
    for (unsigned got = 0; got < n + 1; got++) {
        mqtt_publish p;
        it_recv_publish(sub, &p, IT_TIMEOUT);
        if (!p.retain || p.qos != 1 || p.dup) {
            print_publish("received", &p);
            P_FAIL("retained message %u after restart: expected QoS 1, RETAIN 1, DUP 0", got);
        }
        if (it_span_eq(p.topic, "ret-special/replaced")) {
            if (replaced_seen || !it_span_eq(p.payload, "newest value")) {
                print_publish("received", &p);
                P_FAIL("replaced retained message: expected 'newest value' once");
            }
            replaced_seen = true;
        } else if (it_span_eq(p.topic, "ret-special/cleared")) {
            print_publish("received", &p);
            P_FAIL("a retained message cleared before kill -9 came back");
        } else {
            unsigned i;
            for (i = 0; i < n; i++) {
                ret_topic(i, topic, sizeof topic);
                if (it_span_eq(p.topic, topic))
                    break;
            }
            if (i == n) {
                print_publish("received", &p);
                P_FAIL("retained message on a topic never published");
            }
            size_t len = ret_payload(i, payload);
            if (seen[i] || p.payload.len != len || memcmp(p.payload.ptr, payload, len) != 0) {
                print_publish("received", &p);
                it_hexdump("expected payload", payload, len);
                P_FAIL("retained message %u (%s): %s", i, topic,
                        seen[i] ? "received twice" : "payload differs");
            }
            seen[i] = true;
        }
        it_ack(sub, &p);
    }
    /* All n + 1 received and acknowledged: anything more (the cleared one)
     * would be sent before the PINGRESP. */
    it_ping(sub);
    it_disconnect(sub);
    it_broker_stop(b);
}

/* ---- retained messages ---------------------------------------------------- */

/* Acknowledged retained QoS 1 messages survive kill -9 byte for byte with
 * RETAIN=1; a replaced one keeps its newest value; a cleared one (empty
 * payload) stays cleared. */
static void test_acked_retained_qos1_messages_survive_kill9(void **state)
{
    retained_survive_kill9(NULL, 200);
}

/* The same with persistence_sync full (fsync per commit group). */
static void test_acked_retained_messages_survive_kill9_with_sync_full(void **state)
{
    retained_survive_kill9("persistence_sync full", 50);
}

/* A retained message of several megabytes (a firmware image) survives
 * kill -9 byte for byte. */
#define FW_SIZE (6u * 1024u * 1024u + 12345u)
static void test_multi_megabyte_retained_message_survives_kill9(void **state)
{
    static uint8_t fw[FW_SIZE];
    uint64_t x = 0x9e3779b97f4a7c15ull;
    for (size_t i = 0; i < FW_SIZE; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        fw[i] = (uint8_t)(x >> 32);
    }
    const char *topic = "fw/device-x/image";

    pdir d;
    pdir_init(&d, "max_packet_size 8388608");
    it_broker *b = it_broker_start(d.conf);
    it_conn *pub = it_client(it_broker_port(b), "fw-pub", true);
    send_publish(pub, topic, fw, FW_SIZE, 1, true, false, 1);
    expect_packet_id(pub, 0x40, 1, BIG_TIMEOUT);

    b = crash_and_restart(b, &d);
    it_close(pub);

    it_conn *sub = it_client(it_broker_port(b), "fw-sub", true);
    it_subscribe(sub, "fw/#", 1);
    mqtt_publish p;
    it_recv_publish(sub, &p, BIG_TIMEOUT);
    if (!it_span_eq(p.topic, topic) || p.qos != 1 || !p.retain || p.dup ||
        p.payload.len != FW_SIZE) {
        print_publish("received", &p);
        P_FAIL("firmware after restart: expected %s, %u bytes, QoS 1, RETAIN 1", topic,
                FW_SIZE);
    }
    if (memcmp(p.payload.ptr, fw, FW_SIZE) != 0) {
        size_t i = 0;
        while (p.payload.ptr[i] == fw[i])
            i++;
        P_FAIL("firmware after restart differs from byte %zu on", i);
    }
    it_ack(sub, &p);
    it_ping(sub);
    it_disconnect(sub);
    it_broker_stop(b);
}

/* QoS 0 retained messages are stored too: once a later retained QoS 1
 * PUBLISH is acknowledged (its write commits after theirs), they survive
 * kill -9, and are delivered at their QoS 0. */
static void test_qos0_retained_messages_survive_kill9(void **state)
{
    enum { N = 50 };
    static bool seen[N];
    memset(seen, 0, sizeof seen);
    char topic[32], payload[48];

    pdir d;
    pdir_init(&d, NULL);
    it_broker *b = it_broker_start(d.conf);
    it_conn *pub = it_client(it_broker_port(b), "q0-pub", true);
    for (unsigned i = 0; i < N; i++) {
        snprintf(topic, sizeof topic, "q0/%u", i);
        snprintf(payload, sizeof payload, "qos 0 retained value %u", i);
        it_publish_str(pub, topic, payload, 0, true);
    }
    it_publish_str(pub, "q0-after", "qos 1 after the qos 0 ones", 1, true);

    b = crash_and_restart(b, &d);
    it_close(pub);

    it_conn *sub = it_client(it_broker_port(b), "q0-sub", true);
    it_subscribe(sub, "#", 1);
    bool after_seen = false;
    for (unsigned got = 0; got < N + 1; got++) {
        mqtt_publish p;
        it_recv_publish(sub, &p, IT_TIMEOUT);
        if (!p.retain || p.dup) {
            print_publish("received", &p);
            P_FAIL("expected RETAIN 1, DUP 0");
        }
        if (it_span_eq(p.topic, "q0-after")) {
            if (after_seen || p.qos != 1 || !it_span_eq(p.payload, "qos 1 after the qos 0 ones")) {
                print_publish("received", &p);
                P_FAIL("the QoS 1 retained message differs or came twice");
            }
            after_seen = true;
        } else {
            unsigned i;
            if (p.topic.len < 4 || memcmp(p.topic.ptr, "q0/", 3) != 0 ||
                sscanf((const char *)p.topic.ptr + 3, "%u", &i) != 1 || i >= N) {
                print_publish("received", &p);
                P_FAIL("retained message on a topic never published");
            }
            snprintf(topic, sizeof topic, "q0/%u", i);
            snprintf(payload, sizeof payload, "qos 0 retained value %u", i);
            if (seen[i] || p.qos != 0 || !it_span_eq(p.topic, topic) ||
                !it_span_eq(p.payload, payload)) {
                print_publish("received", &p);
                P_FAIL("QoS 0 retained message %u: expected '%s' at QoS 0, once", i, payload);
            }
            seen[i] = true;
        }
        it_ack(sub, &p);
    }
    it_ping(sub);
    it_disconnect(sub);
    it_broker_stop(b);
}

/* A retained will, published when its client's connection breaks, is a
 * retained message like any other: it survives kill -9. */
static void test_retained_will_survives_kill9(void **state)
{
    pdir d;
    pdir_init(&d, NULL);
    it_broker *b = it_broker_start(d.conf);
    uint16_t port = it_broker_port(b);
    it_conn *watch = it_client(port, "will-watch", true);
    it_subscribe(watch, "wills/dev1", 1);
    it_conn *dev = it_connect(port);
    it_will will = { .topic = "wills/dev1", .payload = "dev1 went away", .qos = 1, .retain = true };
    it_mqtt_connect(dev, "dev1", true, 0, &will);
    it_close(dev); /* no DISCONNECT: the will is published */
    it_expect_publish(watch, "wills/dev1", "dev1 went away", 1, false);
    store_barrier(port);

    b = crash_and_restart(b, &d);
    it_close(watch);

    it_conn *sub = it_client(it_broker_port(b), "will-sub", true);
    it_subscribe(sub, "wills/#", 1);
    it_expect_publish(sub, "wills/dev1", "dev1 went away", 1, true);
    it_ping(sub);
    it_disconnect(sub);
    it_broker_stop(b);
}

/* ---- persistent sessions --------------------------------------------------- */

/* Messages queued for an offline persistent session, each acknowledged to
 * the publisher, survive kill -9: the client resumes with session present
 * 1 and receives all of them, in order, DUP=0 (never sent before). */
static void test_offline_session_queue_survives_kill9(void **state)
{
    enum { N = 100 };
    char topic[32], payload[48];
    pdir d;
    pdir_init(&d, NULL);
    it_broker *b = it_broker_start(d.conf);
    uint16_t port = it_broker_port(b);
    it_conn *a = it_client_sp(port, "offline-a", false, false);
    it_subscribe(a, "t/#", 1);
    it_disconnect(a);
    it_conn *pub = it_client(port, "offline-pub", true);
    for (unsigned i = 0; i < N; i++) {
        snprintf(topic, sizeof topic, "t/%u", i % 7);
        snprintf(payload, sizeof payload, "queued message %u", i);
        it_publish_str(pub, topic, payload, 1, false);
    }

    b = crash_and_restart(b, &d);
    it_close(pub);

    a = it_client_sp(it_broker_port(b), "offline-a", false, true);
    for (unsigned i = 0; i < N; i++) {
        snprintf(topic, sizeof topic, "t/%u", i % 7);
        snprintf(payload, sizeof payload, "queued message %u", i);
        it_expect_publish(a, topic, payload, 1, false);
    }
    it_ping(a);
    it_disconnect(a);
    it_broker_stop(b);
}

/* Queued messages survive two crashes with more queued in between: the
 * restored session keeps queueing durably, in order, without the new
 * messages overwriting the restored ones. */
static void test_offline_session_queue_survives_two_kill9s(void **state)
{
    enum { N = 30 };
    char payload[48];
    pdir d;
    pdir_init(&d, NULL);
    it_broker *b = it_broker_start(d.conf);
    it_conn *a = it_client_sp(it_broker_port(b), "twice-a", false, false);
    it_subscribe(a, "two/t", 1);
    it_disconnect(a);
    for (unsigned round = 0; round < 2; round++) {
        it_conn *pub = it_client(it_broker_port(b), "twice-pub", true);
        for (unsigned i = round * N; i < (round + 1) * N; i++) {
            snprintf(payload, sizeof payload, "message %u", i);
            it_publish_str(pub, "two/t", payload, 1, false);
        }
        b = crash_and_restart(b, &d);
        it_close(pub);
    }
    a = it_client_sp(it_broker_port(b), "twice-a", false, true);
    for (unsigned i = 0; i < 2 * N; i++) {
        snprintf(payload, sizeof payload, "message %u", i);
        it_expect_publish(a, "two/t", payload, 1, false);
    }
    it_ping(a);
    it_disconnect(a);
    it_broker_stop(b);
}

/* A QoS 1 message in flight to a connected persistent client (received,
 * not acknowledged) is redelivered after kill -9 with DUP=1, the same
 * packet id and the same payload. */
static void test_inflight_qos1_redelivered_with_dup_after_kill9(void **state)
{
    const char *payload = "in flight when the broker died";
    pdir d;
    pdir_init(&d, NULL);
    it_broker *b = it_broker_start(d.conf);
    uint16_t port = it_broker_port(b);
    it_conn *a = it_client_sp(port, "inflight-a", false, false);
    it_subscribe(a, "inf/t", 1);
    it_conn *pub = it_client(port, "inflight-pub", true);
    it_publish_str(pub, "inf/t", payload, 1, false);
    mqtt_publish p;
    it_recv_publish(a, &p, IT_TIMEOUT);
    if (!it_span_eq(p.topic, "inf/t") || !it_span_eq(p.payload, payload) || p.qos != 1 ||
        p.dup || p.retain) {
        print_publish("received", &p);
        P_FAIL("first delivery differs");
    }
    uint16_t id = p.packet_id; /* no PUBACK */

    b = crash_and_restart(b, &d);
    it_close(a);
    it_close(pub);

    a = it_client_sp(it_broker_port(b), "inflight-a", false, true);
    expect_publish_exact(a, "inf/t", payload, strlen(payload), 1, false, true, id);
    send_packet_id(a, 0x40, id);
    it_ping(a);
    it_disconnect(a);
    it_broker_stop(b);
}

/* A delivery the client acknowledged before the crash (its PUBACK
 * committed, as the barrier shows) is not delivered again after kill -9. */
static void test_acknowledged_delivery_not_redelivered_after_kill9(void **state)
{
    pdir d;
    pdir_init(&d, NULL);
    it_broker *b = it_broker_start(d.conf);
    uint16_t port = it_broker_port(b);
    it_conn *a = it_client_sp(port, "acked-a", false, false);
    it_subscribe(a, "acked/t", 1);
    it_conn *pub = it_client(port, "acked-pub", true);
    it_publish_str(pub, "acked/t", "done with this one", 1, false);
    it_expect_publish(a, "acked/t", "done with this one", 1, false); /* PUBACKs it */
    it_ping(a); /* the PUBACK has been handled */
    store_barrier(port);

    b = crash_and_restart(b, &d);
    it_close(a);
    it_close(pub);

    a = it_client_sp(it_broker_port(b), "acked-a", false, true);
    it_ping(a);
    expect_no_publish(a, IT_QUIET, "an acknowledged delivery must not come back");
    it_disconnect(a);
    it_broker_stop(b);
}

/* QoS 2, publisher side: P's PUBLISH (id 7) was answered with PUBREC, then
 * the broker was killed. After the restart P resends it with DUP=1 (allowed
 * before PUBREL), gets PUBREC, PUBREL, PUBCOMP; the persistent subscriber
 * (subscribed before, offline meanwhile, so a second routing of the resend
 * would queue a second copy behind the first) receives it exactly once. */
static void test_qos2_publish_resent_after_kill9_delivered_once(void **state)
{
    const char *payload = "exactly once across a crash";
    size_t len = strlen(payload);
    pdir d;
    pdir_init(&d, NULL);
    it_broker *b = it_broker_start(d.conf);
    uint16_t port = it_broker_port(b);
    it_conn *s = it_client_sp(port, "q2-sub", false, false);
    it_subscribe(s, "q2/t", 2);
    it_disconnect(s);
    it_conn *p = it_client_sp(port, "q2-pub", false, false);
    send_publish(p, "q2/t", payload, len, 2, false, false, 7);
    IT_EXPECT(p, 0x50, 0x02, 0x00, 0x07); /* PUBREC 7, after the commit */

    b = crash_and_restart(b, &d);
    it_close(p);
    port = it_broker_port(b);

    p = it_client_sp(port, "q2-pub", false, true);
    send_publish(p, "q2/t", payload, len, 2, false, true, 7);
    IT_EXPECT(p, 0x50, 0x02, 0x00, 0x07);
    IT_SEND(p, 0x62, 0x02, 0x00, 0x07);
    IT_EXPECT(p, 0x70, 0x02, 0x00, 0x07);
    it_ping(p);

    s = it_client_sp(port, "q2-sub", false, true);
    mqtt_publish m;
    it_recv_publish(s, &m, IT_TIMEOUT);
    if (!it_span_eq(m.topic, "q2/t") || !it_span_eq(m.payload, payload) || m.qos != 2 ||
        m.dup || m.retain) {
        print_publish("received", &m);
        P_FAIL("expected q2/t '%s' QoS 2, DUP 0, RETAIN 0", payload);
    }
    it_ack(s, &m);
    expect_no_publish(s, IT_QUIET, "the QoS 2 message must arrive exactly once");
    it_ping(s);
    it_disconnect(s);
    it_disconnect(p);
    it_broker_stop(b);
}

/* QoS 2, subscriber side: S received the PUBLISH, sent PUBREC and got
 * PUBREL; the broker is killed before S sends PUBCOMP. After the restart
 * the broker resends the PUBREL, not the PUBLISH [MQTT-4.3.3-1]. */
static void test_qos2_pubrel_resent_not_publish_after_kill9(void **state)
{
    pdir d;
    pdir_init(&d, NULL);
    it_broker *b = it_broker_start(d.conf);
    uint16_t port = it_broker_port(b);
    it_conn *s = it_client_sp(port, "q2s-sub", false, false);
    it_subscribe(s, "q2s/t", 2);
    it_conn *pub = it_client(port, "q2s-pub", true);
    it_publish_str(pub, "q2s/t", "handed over", 2, false);
    mqtt_publish m;
    it_recv_publish(s, &m, IT_TIMEOUT);
    if (!it_span_eq(m.topic, "q2s/t") || !it_span_eq(m.payload, "handed over") || m.qos != 2 ||
        m.dup) {
        print_publish("received", &m);
        P_FAIL("first delivery differs");
    }
    uint16_t id = m.packet_id;
    send_packet_id(s, 0x50, id);               /* PUBREC */
    expect_packet_id(s, 0x62, id, IT_TIMEOUT); /* PUBREL; no PUBCOMP */
    store_barrier(port); /* the broker's "PUBREC received" state is committed */

    b = crash_and_restart(b, &d);
    it_close(s);
    it_close(pub);

    s = it_client_sp(it_broker_port(b), "q2s-sub", false, true);
    expect_packet_id(s, 0x62, id, IT_TIMEOUT); /* PUBREL again, not PUBLISH */
    send_packet_id(s, 0x70, id);               /* PUBCOMP */
    it_ping(s);
    expect_no_publish(s, IT_QUIET, "the PUBLISH must not be resent after its PUBREC");
    it_disconnect(s);
    it_broker_stop(b);
}

/* UNSUBSCRIBE is durable: after kill -9 the removed subscription is not
 * restored, the other one is. */
static void test_unsubscribe_survives_kill9(void **state)
{
    pdir d;
    pdir_init(&d, NULL);
    it_broker *b = it_broker_start(d.conf);
    uint16_t port = it_broker_port(b);
    it_conn *a = it_client_sp(port, "unsub-a", false, false);
    it_subscribe(a, "u/removed", 1);
    it_subscribe(a, "u/kept", 1);
    it_unsubscribe(a, "u/removed");
    it_disconnect(a);
    store_barrier(port);

    b = crash_and_restart(b, &d);
    port = it_broker_port(b);

    a = it_client_sp(port, "unsub-a", false, true);
    it_conn *pub = it_client(port, "unsub-pub", true);
    it_publish_str(pub, "u/removed", "to the removed filter", 1, false);
    it_publish_str(pub, "u/kept", "to the kept filter", 1, false);
    it_expect_publish(a, "u/kept", "to the kept filter", 1, false);
    it_ping(a);
    it_disconnect(a);
    it_disconnect(pub);
    it_broker_stop(b);
}

/* A reconnect with clean session 1 discards the persistent session
 * durably: after kill -9 neither its subscription nor its queued message
 * comes back, and a clean-0 connect finds no session, while an identical
 * session that was not discarded is restored. */
static void test_clean_session_discard_survives_kill9(void **state)
{
    pdir d;
    pdir_init(&d, NULL);
    it_broker *b = it_broker_start(d.conf);
    uint16_t port = it_broker_port(b);
    it_conn *a = it_client_sp(port, "cleaned-a", false, false);
    it_subscribe(a, "c/t", 1);
    it_disconnect(a);
    /* The control: an identical session that is not discarded. */
    it_conn *k = it_client_sp(port, "kept-k", false, false);
    it_subscribe(k, "c/t", 1);
    it_disconnect(k);
    it_conn *pub = it_client(port, "cleaned-pub", true);
    it_publish_str(pub, "c/t", "queued, then discarded", 1, false);
    a = it_client_sp(port, "cleaned-a", true, false);
    it_ping(a);
    it_disconnect(a);
    store_barrier(port);

    b = crash_and_restart(b, &d);
    it_close(pub);
    port = it_broker_port(b);

    k = it_client_sp(port, "kept-k", false, true);
    it_expect_publish(k, "c/t", "queued, then discarded", 1, false);
    a = it_client_sp(port, "cleaned-a", false, false); /* session present 0 */
    it_ping(a);                                         /* no queued message */
    pub = it_client(port, "cleaned-pub", true);
    it_publish_str(pub, "c/t", "to a discarded subscription", 1, false);
    it_expect_publish(k, "c/t", "to a discarded subscription", 1, false);
    it_ping(a);
    expect_no_publish(a, IT_QUIET, "the discarded subscription must not be restored");
    it_disconnect(a);
    it_disconnect(k);
    it_disconnect(pub);
    it_broker_stop(b);
}

/* ---- the database file ------------------------------------------------------ */

/* Look for the one "gatemq.db.corrupt-*" file in d, check it holds
 * exactly the old bytes, and that the log names it in an error line. */
static void check_moved_aside(const it_broker *b, const char *dir, const void *old, size_t n)
{
    char name[256], path[512];
    int count = find_files(dir, "gatemq.db.corrupt-", name, sizeof name);
    if (count != 1)
        P_FAIL("expected one gatemq.db.corrupt-* file in %s, found %d", dir, count);
    snprintf(path, sizeof path, "%s/%s", dir, name);
    if (!file_equals(path, old, n))
        P_FAIL("%s does not hold the %zu bytes of the corrupt database", path, n);
    if (!log_line_has(b, name, "error:"))
        P_FAIL("no error line in the log naming %s", name);
}

/* A database file full of garbage: the broker starts anyway, serves
 * clients, moves the file aside to gatemq.db.corrupt-<time> (contents
 * intact) and says so in an error line of its log. */
static void test_garbage_database_moved_aside_broker_serves(void **state)
{
    static char garbage[16384];
    for (size_t i = 0; i + 1 < sizeof garbage; i++)
        garbage[i] = "this is not an SQLite database, just garbage.\n"[i % 46];
    garbage[sizeof garbage - 1] = '\0';
    pdir d;
    pdir_init_at(&d, it_temp_file("gatemq.db", garbage), NULL);
    it_broker *b = it_broker_start(d.conf);
    it_assert_serving(b);
    check_moved_aside(b, d.dir, garbage, strlen(garbage));
    it_broker_stop(b);
}

/* A real database whose pages were overwritten (the header intact, so it
 * opens, but the integrity check fails): moved aside, the broker starts on
 * a fresh empty database and serves. */
static void test_database_with_corrupt_pages_moved_aside_broker_serves(void **state)
{
    pdir d;
    pdir_init(&d, NULL);
    it_broker *b = it_broker_start(d.conf);
    it_conn *pub = it_client(it_broker_port(b), "pages-pub", true);
    for (unsigned i = 0; i < 20; i++) {
        char topic[32];
        snprintf(topic, sizeof topic, "pages/%u", i);
        it_publish_str(pub, topic, "lost with the corrupt file", 1, true);
    }
    it_disconnect(pub);
    it_broker_stop(b); /* clean stop: everything is in the main file */

    struct stat st;
    if (stat(d.db, &st) != 0 || st.st_size <= 100)
        P_FAIL("%s missing or too small after a clean stop", d.db);
    char wal[200], shm[200];
    snprintf(wal, sizeof wal, "%s-wal", d.db);
    snprintf(shm, sizeof shm, "%s-shm", d.db);
    unlink(wal);
    unlink(shm);
    size_t n = (size_t)st.st_size;
    uint8_t *bytes = malloc(n);
    FILE *f = fopen(d.db, "r+b");
    if (!f || fread(bytes, 1, n, f) != n) {
        free(bytes);
        if (f)
            fclose(f);
        P_FAIL("cannot read %s", d.db);
    }
    memset(bytes + 100, 0xa5, n - 100); /* every page after the file header */
    rewind(f);
    bool ok = fwrite(bytes, 1, n, f) == n;
    ok = fclose(f) == 0 && ok;
    if (!ok) {
        free(bytes);
        P_FAIL("cannot write %s", d.db);
    }

    b = it_broker_start(d.conf);
    it_assert_serving(b);
    char name[256], path[512];
    int count = find_files(d.dir, "gatemq.db.corrupt-", name, sizeof name);
    snprintf(path, sizeof path, "%s/%s", d.dir, name);
    bool same = count == 1 && file_equals(path, bytes, n);
    free(bytes);
    if (count != 1)
        P_FAIL("expected one gatemq.db.corrupt-* file in %s, found %d", d.dir, count);
    if (!same)
        P_FAIL("%s does not hold the bytes of the corrupt database", path);
    if (!log_line_has(b, name, "error:"))
        P_FAIL("no error line in the log naming %s", name);
    /* A fresh, empty database: none of the old retained messages. */
    it_conn *sub = it_client(it_broker_port(b), "pages-sub", true);
    it_subscribe(sub, "pages/#", 1);
    it_ping(sub);
    it_disconnect(sub);
    it_broker_stop(b);
}

/* After a corrupt file was moved aside, the fresh database is a working
 * one: a retained message acknowledged on it survives kill -9, and the
 * restart moves nothing else aside. */
static void test_fresh_database_after_corruption_is_durable(void **state)
{
    pdir d;
    pdir_init_at(&d, it_temp_file("gatemq.db", "garbage, not a database\n"), NULL);
    it_broker *b = it_broker_start(d.conf);
    it_conn *pub = it_client(it_broker_port(b), "fresh-pub", true);
    it_publish_str(pub, "fresh/t", "stored in the fresh database", 1, true);

    b = crash_and_restart(b, &d);
    it_close(pub);

    int count = find_files(d.dir, "gatemq.db.corrupt-", NULL, 0);
    if (count != 1)
        P_FAIL("expected exactly one gatemq.db.corrupt-* file after the restart, found %d",
                count);
    it_conn *sub = it_client(it_broker_port(b), "fresh-sub", true);
    it_subscribe(sub, "fresh/#", 1);
    it_expect_publish(sub, "fresh/t", "stored in the fresh database", 1, true);
    it_ping(sub);
    it_disconnect(sub);
    it_broker_stop(b);
}

/* ---- acknowledgements --------------------------------------------------------- */

/* With persistence on (and a persistent session in the store), 1000
 * pipelined QoS 1 publishes to a topic no persistent session subscribes to
 * all get their PUBACK, in order. Not a timing test. */
static void test_1000_qos1_publishes_all_acknowledged(void **state)
{
    enum { N = 1000 };
    pdir d;
    pdir_init(&d, NULL);
    it_broker *b = it_broker_start(d.conf);
    uint16_t port = it_broker_port(b);
    it_conn *by = it_client_sp(port, "bystander", false, false);
    it_subscribe(by, "other/#", 1);
    it_disconnect(by);

    static uint8_t buf[N * 64];
    size_t pos = 0;
    for (unsigned i = 1; i <= N; i++) {
        char payload[32];
        snprintf(payload, sizeof payload, "fast %u", i);
        size_t n;
        uint8_t *pkt = it_encode_publish("fast/t", payload, strlen(payload), 1, false, false,
                                         (uint16_t)i, &n);
        memcpy(buf + pos, pkt, n);
        pos += n;
        free(pkt);
    }
    it_conn *pub = it_client(port, "fast-pub", true);
    it_send(pub, buf, pos);
    long deadline = it_now_ms() + BIG_TIMEOUT;
    for (unsigned i = 1; i <= N; i++) {
        mqtt_frame f;
        long left = deadline - it_now_ms();
        int r = it_recv_frame(pub, &f, left > 0 ? (int)left : 0);
        if (r != 1)
            P_FAIL("PUBACK %u of %d: %s", i, N, r == 0 ? "timeout" : "connection closed");
        const uint8_t *raw = f.body - f.header_len;
        if (f.header_len + f.body_len != 4 || raw[0] != 0x40 || raw[1] != 0x02 ||
            raw[2] != (uint8_t)(i >> 8) || raw[3] != (uint8_t)i) {
            it_hexdump("received", raw, f.header_len + f.body_len);
            P_FAIL("expected PUBACK 40 02 for id %u", i);
        }
    }
    it_ping(pub);
    it_disconnect(pub);
    it_broker_stop(b);
}

/* Acknowledgements keep the order of the packets they answer even when
 * some wait for a commit (retained) and others need none: pipelined
 * retained and plain QoS 1 and plain QoS 2 publishes get PUBACK/PUBREC in
 * exactly their order. */
static void test_acks_keep_order_when_some_wait_for_commit(void **state)
{
    enum { N = 300 };
    pdir d;
    pdir_init(&d, NULL);
    it_broker *b = it_broker_start(d.conf);
    static uint8_t buf[N * 64], exp[N * 4];
    size_t pos = 0;
    for (unsigned i = 1; i <= N; i++) {
        char topic[32];
        bool retain = i % 3 == 0;
        uint8_t qos = i % 5 == 1 ? 2 : 1;
        if (retain)
            snprintf(topic, sizeof topic, "order/ret/%u", i);
        else
            snprintf(topic, sizeof topic, "order/plain");
        size_t n;
        uint8_t *pkt = it_encode_publish(topic, "x", 1, qos, retain, false, (uint16_t)i, &n);
        memcpy(buf + pos, pkt, n);
        pos += n;
        free(pkt);
        exp[(i - 1) * 4] = qos == 1 ? 0x40 : 0x50;
        exp[(i - 1) * 4 + 1] = 0x02;
        exp[(i - 1) * 4 + 2] = (uint8_t)(i >> 8);
        exp[(i - 1) * 4 + 3] = (uint8_t)i;
    }
    it_conn *pub = it_client(it_broker_port(b), "order-pub", true);
    it_send(pub, buf, pos);
    it_expect_bytes(pub, exp, sizeof exp, BIG_TIMEOUT);
    for (unsigned i = 1; i <= N; i++) {
        if (i % 5 != 1)
            continue;
        send_packet_id(pub, 0x62, (uint16_t)i);
        expect_packet_id(pub, 0x70, (uint16_t)i, IT_TIMEOUT);
    }
    it_ping(pub);
    it_disconnect(pub);
    it_broker_stop(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        IT_TEST(test_acked_retained_qos1_messages_survive_kill9),
        IT_TEST(test_acked_retained_messages_survive_kill9_with_sync_full),
        IT_TEST(test_multi_megabyte_retained_message_survives_kill9),
        IT_TEST(test_qos0_retained_messages_survive_kill9),
        IT_TEST(test_retained_will_survives_kill9),
        IT_TEST(test_offline_session_queue_survives_kill9),
        IT_TEST(test_offline_session_queue_survives_two_kill9s),
        IT_TEST(test_inflight_qos1_redelivered_with_dup_after_kill9),
        IT_TEST(test_acknowledged_delivery_not_redelivered_after_kill9),
        IT_TEST(test_qos2_publish_resent_after_kill9_delivered_once),
        IT_TEST(test_qos2_pubrel_resent_not_publish_after_kill9),
        IT_TEST(test_unsubscribe_survives_kill9),
        IT_TEST(test_clean_session_discard_survives_kill9),
        IT_TEST(test_garbage_database_moved_aside_broker_serves),
        IT_TEST(test_database_with_corrupt_pages_moved_aside_broker_serves),
        IT_TEST(test_fresh_database_after_corruption_is_durable),
        IT_TEST(test_1000_qos1_publishes_all_acknowledged),
        IT_TEST(test_acks_keep_order_when_some_wait_for_commit),
    };
    return IT_RUN(tests);
}
