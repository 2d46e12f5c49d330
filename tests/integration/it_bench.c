/*
 * it_bench.c - the load generator's multi-process and multi-address modes
 * (tools/gatemq-bench.c, --procs and --sources), which the benchmark's
 * handshake, storm and 50,000-connection rows rely on.
 *
 * The broker's debug log names every accepted client and its peer address
 * ("client ID connected from ADDR:PORT"), which is how the tests see how
 * many connections arrived and from where. Nothing sleeps: the generator
 * runs to completion, then the log is awaited.
 */
#include "tls_util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *bench_bin(void)
{
    static char path[PATH_MAX];
    const char *build = getenv("GATEMQ_BUILD");
    snprintf(path, sizeof path, "%s/gatemq-bench", build ? build : "build");
    return path;
}

/* A TLS listener without client certificates (the generator has none). */
static it_broker *anon_broker(tu_tls *m, uint16_t *port)
{
    tu_tls_from(m, tu_pki());
    return tu_start(m, "require_certificate false\nallow_anonymous true", NULL, port);
}

/* gatemq-bench against port with the given options (NULL-terminated). */
static int bench(uint16_t port, char **out, const char *opt, ...) __attribute__((sentinel));
static int bench(uint16_t port, char **out, const char *opt, ...)
{
    tu_args a;
    tu_args_init(&a);
    tu_args_add(&a, bench_bin(), NULL);
    tu_args_fmt(&a, "-p");
    tu_args_fmt(&a, "%u", port);
    va_list ap;
    va_start(ap, opt);
    for (const char *s = opt; s; s = va_arg(ap, const char *))
        tu_args_add(&a, s, NULL);
    va_end(ap);
    return tu_run(&a, out);
}

/* --procs 2: two processes share the handshakes; their results add up to
 * one report. With --resume each process first does its own untimed full
 * handshake, so the broker sees one connection more per process than the
 * timed count: two here, where one process would make one. */
static void test_procs_share_handshakes_and_report_the_sum(void **state)
{
    tu_tls m;
    uint16_t port;
    it_broker *b = anon_broker(&m, &port);
    char *out = NULL;
    int rc = bench(port, &out, "--tls", "--cafile", m.ca, "--handshakes", "41", "-c", "5",
                   "--procs", "2", "--resume", NULL);
    if (rc != 0)
        it_fail("gatemq-bench --procs 2 exited %d:\n%s", rc, out ? out : "");
    tu_expect_has(out, "result=OK", "summary");
    tu_expect_has(out, " done=41 ", "handshakes of both processes");
    tu_expect_has(out, " resumed=41 ", "resumed handshakes of both processes");
    tu_expect_has(out, " concurrency=5 procs=2 ", "concurrency and processes");
    free(out);
    tu_await_log_n(b, "connected from 127.0.0.1:", 43, TU_TIMEOUT);
    int n = tu_log_count(b, "connected from 127.0.0.1:");
    if (n != 43)
        it_fail("the broker accepted %d clients, expected 41 timed + 2 warm-ups", n);
    it_broker_stop(b);
}

/* A failure in a child (nothing listens on the port) fails the run, and the
 * child's reason reaches the parent's report. */
static void test_procs_report_a_child_failure(void **state)
{
    tu_tls m;
    tu_tls_from(&m, tu_pki());
    char *out = NULL;
    char port[16];
    int rc = it_run(((const char *[]){bench_bin(), "--free-port", NULL}), 10000, &out);
    if (rc != 0 || !out)
        it_fail("gatemq-bench --free-port exited %d", rc);
    tu_fmt(port, sizeof port, "%d", atoi(out));
    free(out);
    out = NULL;
    rc = bench((uint16_t)atoi(port), &out, "--tls", "--cafile", m.ca, "--handshakes", "4", "-c",
               "2", "--procs", "2", NULL);
    if (rc != 1)
        it_fail("gatemq-bench --procs 2 against a closed port exited %d:\n%s", rc,
                out ? out : "");
    tu_expect_has(out, "result=FAILED", "summary");
    tu_expect_has(out, "cannot connect", "the child's reason");
    free(out);
}

/* --procs with a mode it does not apply to, or more processes than
 * handshakes, is bad usage. */
static void test_procs_bad_usage(void **state)
{
    char *out = NULL;
    int rc = bench(1883, &out, "--idle", "2", "--procs", "2", NULL);
    if (rc != 2)
        it_fail("--idle with --procs exited %d:\n%s", rc, out ? out : "");
    free(out);
    out = NULL;
    rc = bench(1883, &out, "--tls", "--cafile", "/dev/null", "--handshakes", "1", "--procs", "2",
               NULL);
    if (rc != 2)
        it_fail("--procs 2 with one handshake exited %d:\n%s", rc, out ? out : "");
    free(out);
}

/* --sources 3: connection i comes from 127.0.0.(1 + i % 3), so six idle
 * connections arrive two from each address. */
static void test_sources_spread_connections_over_loopback_addresses(void **state)
{
    it_broker *b = it_broker_start(NULL);
    char *out = NULL;
    int rc = bench(it_broker_port(b), &out, "--idle", "6", "--sources", "3", "-d", "0", NULL);
    if (rc != 0)
        it_fail("gatemq-bench --idle 6 --sources 3 exited %d:\n%s", rc, out ? out : "");
    free(out);
    tu_await_log_n(b, "connected from 127.0.0.1:", 2, TU_TIMEOUT);
    tu_await_log_n(b, "connected from 127.0.0.2:", 2, TU_TIMEOUT);
    tu_await_log_n(b, "connected from 127.0.0.3:", 2, TU_TIMEOUT);
    if (tu_log_count(b, "connected from 127.0.0.4:") != 0)
        it_fail("a connection came from 127.0.0.4 with --sources 3");
    it_broker_stop(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        TU_TEST(test_procs_share_handshakes_and_report_the_sum),
        TU_TEST(test_procs_report_a_child_failure),
        TU_TEST(test_procs_bad_usage),
        TU_TEST(test_sources_spread_connections_over_loopback_addresses),
    };
    return TU_RUN(tests);
}
