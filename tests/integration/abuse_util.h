/*
 * abuse_util.h - helpers for the abuse and resource-limit tests
 * (it_abuse.c), on top of harness.h and tenant_util.h.
 *
 * What the harness does not offer and these tests need:
 *  - the broker's memory and descriptors from /proc (VmRSS, VmHWM, the
 *    number of open fds), to show that an attack costs bounded memory and
 *    leaks no descriptor;
 *  - many plain sockets at once (hundreds, more than the harness registry
 *    holds), sent to and watched without blocking, so a test can trickle
 *    bytes into dozens of connections and see each one close;
 *  - a TLS client that sends arbitrary bytes after the handshake and then
 *    only waits for the broker to close, whatever it answers in between
 *    (the tenant_util client fails on unexpected packets, which random
 *    traffic produces on purpose);
 *  - a genuine TLS ClientHello, to trickle into a TLS listener;
 *  - a deterministic random generator (fixed seed: a failure replays);
 *  - probes shared with the store backpressure tests (it_backpressure.c):
 *    a bystanders' round trip, the current value of a $SYS counter, and a
 *    smaller ASan quarantine for the brokers a program starts.
 *
 * Sockets and TLS clients are registered: au_teardown (the per-test
 * teardown of AU_TEST) closes what a failed test left open, then runs the
 * tenant_util and harness teardowns.
 *
 * Slow runs: when GATEMQ_IT_VALGRIND is set (tools/check-valgrind.sh sets
 * it), au_slow() is a factor (10) the tests multiply their deadlines by,
 * and au_mem_factor() (3) the factor for memory bounds: memcheck's shadow
 * memory and its queue of freed blocks count in the broker's VmRSS.
 */
#ifndef GATEMQ_IT_ABUSE_UTIL_H
#define GATEMQ_IT_ABUSE_UTIL_H

#include "harness.h"
#include "tenant_util.h"

int au_teardown(void **state);
#define AU_TEST(f) cmocka_unit_test_teardown(f, au_teardown)

/* ---- slow runs ----------------------------------------------------------- */

bool au_valgrind(void);
int au_slow(void);
int au_mem_factor(void);

/* Sleep ms: only inside loops that poll a condition up to a deadline, or
 * to pace an attack (a byte every 500 ms). */
void au_pause_ms(long ms);

/* In the sanitizer build ASan keeps up to 256 MB of freed blocks in
 * quarantine (to catch use after free), which would show as broker growth
 * in every memory bound. Gives the brokers this program starts from now on
 * a quarantine of mb MB instead: still a use-after-free detector, no longer
 * a memory hog. Only children read the changed environment; options given
 * later win, so the caller's ASAN_OPTIONS stay. Does nothing without ASan. */
void au_limit_asan_quarantine(int mb);

/* ---- /proc ---------------------------------------------------------------- */

/* A "Key:" line of /proc/pid/status in kB ("VmRSS:", "VmHWM:"); 0 if unknown. */
long au_status_kb(pid_t pid, const char *key);
/* Size in bytes of the file behind pid's stderr (the broker's log); -1 if
 * unknown. Cheap at any size, unlike searching the text. */
long au_log_bytes(pid_t pid);
/* CPU time (user + system) pid has used so far, in ms; -1 if unknown. */
long au_cpu_ms(pid_t pid);
/* Open descriptors of pid (entries of /proc/pid/fd); -1 if unknown. */
int au_fd_count(pid_t pid);

/* ---- deterministic randomness --------------------------------------------- */

typedef struct au_rng {
    uint64_t s;
} au_rng;
void au_rng_seed(au_rng *r, uint64_t seed);
uint32_t au_rand(au_rng *r);
/* Uniform in [0, n). */
uint32_t au_below(au_rng *r, uint32_t n);
void au_rand_bytes(au_rng *r, uint8_t *p, size_t n);

/* ---- plain sockets ----------------------------------------------------------- */

/* TCP connection to 127.0.0.1:port (Nagle off, blocking connect, then
 * non-blocking). rcvbuf > 0 sets SO_RCVBUF before connecting (a small
 * window makes a non-reading client's backlog pile up in the broker rather
 * than in the kernel). Fails the test if the connect fails. */
int au__sock(uint16_t port, int rcvbuf);
#define au_sock(port, rcvbuf) IT__AT(au__sock(port, rcvbuf))
void au_sock_close(int fd);
/* Send what the socket takes without blocking; false once the peer closed
 * or reset (EPIPE, ECONNRESET). */
bool au_sock_send(int fd, const void *p, size_t n);
/* Send all n bytes, waiting for room up to timeout_ms; false if the peer
 * closed, reset, or the deadline passed. */
bool au_sock_send_all(int fd, const void *p, size_t n, int timeout_ms);
/* Read exactly n bytes before the deadline; false on close or timeout. */
bool au_sock_read_exact(int fd, uint8_t *buf, size_t n, int timeout_ms);
/* Read and discard what has arrived. Returns 1 when the peer has closed
 * (EOF or reset), 0 while it is open. *got (may be NULL) is increased by
 * the bytes read. */
int au_sock_drain(int fd, size_t *got);
/* Wait until the peer closes, reading and discarding what arrives; the
 * elapsed ms, or -1 at the deadline. */
long au_sock_wait_closed(int fd, int timeout_ms);

/* ---- probes through the harness client --------------------------------------- */

/* A QoS 1 publish round trip on topic between two bystanders (pub's
 * message must reach sub, which subscribed to topic); its duration in ms. */
long au__roundtrip(it_conn *pub, it_conn *sub, const char *topic);
#define au_roundtrip(pub, sub, topic) IT__AT(au__roundtrip(pub, sub, topic))
/* The current value of a numeric $SYS topic: a fresh client subscribes,
 * skips the retained copy (possibly older than what the caller did) and
 * takes the next periodic update, which the broker published after
 * everything the caller waited for. Needs a small sys_interval. */
unsigned long long au__sys_value(it_broker *b, const char *topic);
#define au_sys_value(b, topic) IT__AT(au__sys_value(b, topic))

/* ---- TLS clients ----------------------------------------------------------- */

typedef struct au_tls au_tls;

/* TLS connection to 127.0.0.1:port as device company/device of tn_pki(),
 * handshake done. Fails the test on any error. */
au_tls *au__tls_open(uint16_t port, const char *company, const char *device);
#define au_tls_open(port, co, dev) IT__AT(au__tls_open(port, co, dev))
/* Send bytes over TLS; false once the broker closed. */
bool au_tls_send(au_tls *t, const void *p, size_t n);
/* Read and discard until the broker closes: the elapsed ms, or -1 at the
 * deadline. */
long au_tls_wait_closed(au_tls *t, int timeout_ms);
void au_tls_free(au_tls *t);

/* A TLS 1.2 ClientHello as mbedtls sends it (first flight of a client),
 * written into buf; returns its length (0 on failure). */
size_t au_client_hello(uint8_t *buf, size_t cap);

#endif
