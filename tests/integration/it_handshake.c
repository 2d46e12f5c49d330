/*
 * it_handshake.c - full TLS handshakes on handshake threads
 * (tls_handshake_threads, broker/handshake.c).
 *
 * The broker names its handshake threads "gatemq-tls"; the tests read
 * /proc/PID/task to see which threads exist and how much CPU each spent,
 * which is how they tell handshakes that ran on those threads from
 * handshakes that ran on the event loop. Handshake storms come from
 * gatemq-bench (--handshakes N -c C), which fails unless every connection
 * got its CONNACK.
 */
#include "tls_util.h"

#include <dirent.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- helpers ---------------------------------------------------------------- */

static const char *bench_bin(void)
{
    static char path[PATH_MAX];
    const char *build = getenv("GATEMQ_BUILD");
    snprintf(path, sizeof path, "%s/gatemq-bench", build ? build : "build");
    return path;
}

/* A TLS listener without client certificates (the generator has none). */
static it_broker *anon_broker(tu_tls *m, uint16_t *port, const char *global)
{
    tu_tls_from(m, tu_pki());
    return tu_start(m, "require_certificate false\nallow_anonymous true", global, port);
}

/* Threads of the broker: how many are named gatemq-tls, and the CPU ticks
 * (utime + stime) spent by them and by the event loop thread (tid = pid). */
typedef struct thread_cpu {
    int hs_threads;
    long hs_ticks;
    long loop_ticks;
} thread_cpu;

static long task_ticks(pid_t pid, const char *tid)
{
    char path[128], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/task/%s/stat", (int)pid, tid);
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    /* Fields after the parenthesised name: state is field 3, utime 14. */
    char *p = strrchr(buf, ')');
    unsigned long ut = 0, st = 0;
    if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) != 2)
        return 0;
    return (long)(ut + st);
}

static thread_cpu read_threads(const it_broker *b)
{
    thread_cpu t = {0, 0, 0};
    pid_t pid = it_broker_pid(b);
    char dir[64];
    snprintf(dir, sizeof dir, "/proc/%d/task", (int)pid);
    DIR *d = opendir(dir);
    if (!d)
        it_fail("cannot read %s", dir);
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        char path[512], comm[64] = "";
        snprintf(path, sizeof path, "%s/%s/comm", dir, e->d_name);
        FILE *f = fopen(path, "r");
        if (!f)
            continue;
        if (!fgets(comm, sizeof comm, f))
            comm[0] = '\0';
        fclose(f);
        if (strncmp(comm, "gatemq-tls", 10) == 0) {
            t.hs_threads++;
            t.hs_ticks += task_ticks(pid, e->d_name);
        } else if (atoi(e->d_name) == (int)pid) {
            t.loop_ticks = task_ticks(pid, e->d_name);
        }
    }
    closedir(d);
    return t;
}

/* Start n full handshakes + CONNECT/CONNACK, c at a time, against the TLS
 * listener at port; the generator fails unless all succeed. */
static it_proc *spawn_storm(uint16_t port, const char *ca, int n, int c)
{
    char nbuf[16], cbuf[16], pbuf[16];
    snprintf(nbuf, sizeof nbuf, "%d", n);
    snprintf(cbuf, sizeof cbuf, "%d", c);
    snprintf(pbuf, sizeof pbuf, "%u", port);
    const char *argv[] = {bench_bin(), "-p", pbuf, "--tls", "--cafile", ca, "--servername",
                          "localhost", "--handshakes", nbuf, "-c", cbuf, NULL};
    return it_spawn(argv);
}

/* Wait for a storm to end; every handshake of it must have succeeded. */
static void wait_storm(it_proc *storm)
{
    int rc = it_proc_wait(storm, 120000);
    if (rc != 0)
        it_fail("the storm (gatemq-bench --handshakes) exited %d:\n%s", rc,
                it_proc_output(storm));
    it_proc_free(storm);
}

/* A broker with tls_handshake_threads threads (all of them running), and
 * the threads' CPU before and after n full handshakes, 8 at a time. */
static it_broker *storm_on_threads(int threads, int n, thread_cpu *before, thread_cpu *after)
{
    tu_tls m;
    uint16_t port;
    char global[64];
    tu_fmt(global, sizeof global, "tls_handshake_threads %d", threads);
    it_broker *b = anon_broker(&m, &port, global);
    *before = read_threads(b);
    if (before->hs_threads != threads)
        it_fail("%d gatemq-tls threads, expected %d", before->hs_threads, threads);
    wait_storm(spawn_storm(port, m.ca, n, 8));
    *after = read_threads(b);
    return b;
}

/* ---- tests ------------------------------------------------------------------ */

/* With tls_handshake_threads 2 the broker runs two gatemq-tls threads, and
 * the CPU of a burst of full handshakes is spent on them, not on the event
 * loop thread (which only accepts, reads CONNECT and answers). */
static void test_full_handshakes_run_on_handshake_threads(void **state)
{
    thread_cpu before, after;
    it_broker *b = storm_on_threads(2, 60, &before, &after);
    long hs = after.hs_ticks - before.hs_ticks;
    long loop = after.loop_ticks - before.loop_ticks;
    if (hs <= 0 || hs <= loop)
        it_fail("60 full handshakes cost the handshake threads %ld ticks and the loop %ld", hs,
                loop);
    tu_await_log(b, "handed to handshake thread 1");
    tu_await_log(b, "handed to handshake thread 2");
    it_broker_stop(b);
}

/* tls_handshake_threads 0: no handshake thread; handshakes run on the
 * event loop and work as well. */
static void test_zero_handshake_threads_handshake_on_the_loop(void **state)
{
    thread_cpu before, after;
    it_broker *b = storm_on_threads(0, 30, &before, &after);
    if (after.loop_ticks <= before.loop_ticks)
        it_fail("30 full handshakes cost the loop thread no CPU");
    tu_log_lacks(b, "handed to handshake thread");
    it_broker_stop(b);
}

/* Devices of two companies handshaking at the same time, on different
 * threads, each get their own identity, and publish in their own company's
 * namespace (a platform subscriber on the plain listener sees the prefix). */
static void test_concurrent_devices_keep_their_identities(void **state)
{
    tu_tls m;
    uint16_t port;
    tu_tls_from(&m, tu_pki());
    it_broker *b = tu_start(&m, "require_certificate true", "tls_handshake_threads 2", &port);
    it_conn *sub = it_client(it_broker_port(b), "platform-sub", true);
    it_subscribe(sub, "+/hs/#", 1);

    const char *ids[] = {"gw-0001", "gw-0002", "gw-0101"};
    const char *cos[] = {"acme", "acme", "globex"};
    enum { ROUNDS = 3 };
    for (int r = 0; r < ROUNDS; r++) {
        it_proc *p[3];
        tu_dev dev[3];
        for (int i = 0; i < 3; i++) {
            tu_device(&dev[i], cos[i], ids[i]);
            tu_args a;
            tu_args_init(&a);
            tu_args_mosq(&a, "mosquitto_pub", port, m.ca, &dev[i]);
            char topic[64];
            tu_fmt(topic, sizeof topic, "hs/%s", ids[i]);
            tu_args_add(&a, "-i", ids[i], "-q", "1", "-t", topic, "-m", cos[i], NULL);
            p[i] = it_spawn(a.v);
        }
        for (int i = 0; i < 3; i++) {
            int rc = it_proc_wait(p[i], TU_TIMEOUT);
            if (rc != 0)
                it_fail("mosquitto_pub as %s/%s exited %d:\n%s", cos[i], ids[i], rc,
                        it_proc_output(p[i]));
            it_proc_free(p[i]);
        }
        /* Order between publishers is free; each arrives once, prefixed. */
        bool seen[3] = {false, false, false};
        for (int k = 0; k < 3; k++) {
            mqtt_publish pub;
            it_recv_publish(sub, &pub, TU_TIMEOUT);
            for (int i = 0; i < 3; i++) {
                char topic[64];
                tu_fmt(topic, sizeof topic, "%s/hs/%s", cos[i], ids[i]);
                if (it_span_eq(pub.topic, topic) && !seen[i]) {
                    seen[i] = true;
                    break;
                }
                if (i == 2)
                    it_fail("unexpected publish %.*s", (int)pub.topic.len,
                            (const char *)pub.topic.ptr);
            }
            it_ack(sub, &pub);
        }
    }
    if (tu_log_count(b, "device gw-0101 of company globex") != ROUNDS ||
        tu_log_count(b, "device gw-0001 of company acme") != ROUNDS ||
        tu_log_count(b, "device gw-0002 of company acme") != ROUNDS)
        it_fail("identities in the log do not match the devices");
    it_close(sub);
    it_broker_stop(b);
}

/* While a storm of full handshakes runs, a plain publisher and subscriber
 * keep exchanging messages, and every handshake of the storm succeeds. */
static void test_routing_goes_on_during_a_handshake_storm(void **state)
{
    tu_tls m;
    uint16_t port;
    it_broker *b = anon_broker(&m, &port, "tls_handshake_threads 2");
    it_conn *sub = it_client(it_broker_port(b), "storm-sub", true);
    it_subscribe(sub, "storm/ping", 1);
    it_conn *pub = it_client(it_broker_port(b), "storm-pub", true);

    it_proc *storm = spawn_storm(port, m.ca, 200, 64);
    tu_await_log(b, "handed to handshake thread");
    int round_trips = 0;
    for (;;) {
        char msg[32];
        snprintf(msg, sizeof msg, "%d", round_trips);
        it_publish(pub, "storm/ping", msg, strlen(msg), 1, false);
        it_expect_publish(sub, "storm/ping", msg, 1, false);
        round_trips++;
        if (it_proc_wait_output(storm, "SUMMARY", 0))
            break;
    }
    wait_storm(storm);
    it_close(pub);
    it_close(sub);
    it_broker_stop(b);
}

/* SIGTERM while connections are stuck half-way through their handshake on
 * the handshake threads: the broker takes them back, closes them, and
 * exits 0 (under the sanitizer build: without leaks). */
static void test_shutdown_with_handshakes_in_flight(void **state)
{
    tu_tls m;
    uint16_t port;
    it_broker *b = anon_broker(&m, &port, "tls_handshake_threads 2\ntls_handshake_timeout 60");
    enum { N = 12 };
    it_conn *c[N];
    for (int i = 0; i < N; i++) {
        c[i] = it_connect(port);
        /* A record header announcing a ClientHello that never comes. */
        IT_SEND(c[i], 0x16, 0x03, 0x01, 0x00, 0x80, 0x01, 0x00);
    }
    tu_await_log_n(b, "handed to handshake thread", N, TU_TIMEOUT);
    it_broker_stop(b);
    for (int i = 0; i < N; i++)
        it_close(c[i]);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        TU_TEST(test_full_handshakes_run_on_handshake_threads),
        TU_TEST(test_zero_handshake_threads_handshake_on_the_loop),
        TU_TEST(test_concurrent_devices_keep_their_identities),
        TU_TEST(test_routing_goes_on_during_a_handshake_storm),
        TU_TEST(test_shutdown_with_handshakes_in_flight),
    };
    return TU_RUN(tests);
}
