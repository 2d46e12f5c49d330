/*
 * harness.h - black-box integration tests: run the real gatemq binary and
 * talk raw MQTT 3.1.1 to it over TCP.
 *
 * Every test starts its own broker (so retained messages, sessions and
 * counters never leak between tests) and stops it at the end with SIGTERM,
 * asserting exit status 0: in the sanitizer build a leak or an ASan report
 * makes that status non-zero, so every test is also a leak check.
 *
 * Nothing here synchronises by sleeping. Functions that expect something
 * wait for it up to a deadline (IT_TIMEOUT, generous for a loaded 2-core
 * machine running ASan); functions that show something does NOT happen watch
 * for IT_QUIET ms, or better, use a barrier (it_ping: the broker answers a
 * PINGREQ only after it has handled everything sent before it).
 *
 * Failures: every checking function fails the current cmocka test, reporting
 * the test's own file and line (the macros below record them) and a hex dump
 * of what arrived. Objects are registered with the harness; it_teardown, run
 * after each test even when it fails, kills leftover brokers and tools,
 * closes leftover connections and prints the log of any broker the test did
 * not stop. Register every test with IT_TEST so that happens.
 *
 * A broker that does not stop cleanly keeps its temporary directory
 * (/tmp/gatemq-it.*, config and log) for inspection; the path is printed.
 *
 * Ownership: it_broker_stop/it_broker_kill9 free the broker, it_close frees a
 * connection, it_proc_free frees a tool process. Pointers returned into a
 * connection (frames, decoded PUBLISH views) stay valid until the next
 * receive on that connection.
 *
 * Absence checks by marker: to show a message is NOT delivered, the same
 * publisher then sends a marker the receiver is subscribed to, and the
 * receiver's next packet must be the marker. The spec orders messages per
 * topic [MQTT-4.6.0-6]; across topics this relies on the broker handling one
 * connection's packets in order, which a single event loop does.
 *
 * Running: tests/run.sh --integration BUILD_DIR, or one program directly:
 *   make B=build/h3 build/h3/gatemq build/h3/tests/it_connect
 *   GATEMQ_BIN=build/h3/gatemq build/h3/tests/it_connect
 */
#ifndef GATEMQ_IT_HARNESS_H
#define GATEMQ_IT_HARNESS_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <setjmp.h>
#include <sys/types.h>
#include <cmocka.h>

#include "mqtt.h"

/* Deadline for anything that must happen (ms). */
#define IT_TIMEOUT 5000
/* How long to watch for something that must not happen (ms). */
#define IT_QUIET 300

/* ---- test registration -------------------------------------------------- */

int it_teardown(void **state);
#define IT_TEST(f) cmocka_unit_test_teardown(f, it_teardown)
/* Group setup: ignores SIGPIPE, checks that the broker binary exists. */
int it_group_setup(void **state);
#define IT_RUN(tests) cmocka_run_group_tests(tests, it_group_setup, NULL)

/* Where the calling test is; set by the macros below. */
void it__here(const char *file, int line);
#define IT__AT(call) (it__here(__FILE__, __LINE__), call)

/* ---- broker process ----------------------------------------------------- */

typedef struct it_broker it_broker;

/* Path of the broker binary: $GATEMQ_BIN, else <dir of this test>/../gatemq. */
const char *it_broker_bin(void);

/* Start a broker on a free port of 127.0.0.1 with a config made of
 * `listener PORT 127.0.0.1`, `allow_anonymous true`, `log_level debug` and
 * the lines of extra_config (may be NULL). Returns once a TCP connect to the
 * port succeeds. Fails the test if the broker exits or never listens. */
it_broker *it__broker_start(const char *extra_config);
#define it_broker_start(extra) IT__AT(it__broker_start(extra))
/* SIGTERM, wait, assert exit status 0 (printing the log otherwise); frees b. */
void it__broker_stop(it_broker *b);
#define it_broker_stop(b) IT__AT(it__broker_stop(b))
/* Same with another signal (SIGINT). */
void it__broker_stop_with(it_broker *b, int sig);
#define it_broker_stop_with(b, sig) IT__AT(it__broker_stop_with(b, sig))
/* SIGKILL and reap; no status check; frees b. */
void it_broker_kill9(it_broker *b);
uint16_t it_broker_port(const it_broker *b);
pid_t it_broker_pid(const it_broker *b);
/* Does the broker's log (its stderr) contain text? */
bool it_broker_log_contains(const it_broker *b, const char *text);
/* Resident memory of the broker in kB, from /proc (0 if unknown). */
long it_broker_rss_kb(const it_broker *b);

/* ---- raw connection ----------------------------------------------------- */

typedef struct it_conn it_conn;

/* TCP connection to 127.0.0.1:port with Nagle off. Fails the test if refused. */
it_conn *it__connect(uint16_t port);
#define it_connect(port) IT__AT(it__connect(port))
void it_close(it_conn *c);
/* Half-close: shutdown(SHUT_WR), the connection stays readable. */
void it_shutdown_write(it_conn *c);
/* Send all n bytes; fails the test on error. */
void it__send(it_conn *c, const void *bytes, size_t n);
#define it_send(c, bytes, n) IT__AT(it__send(c, bytes, n))
/* Send, reporting failure (EPIPE, reset) instead of failing the test. */
bool it_send_try(it_conn *c, const void *bytes, size_t n);

/* Receive one whole packet. Returns 1 with *f pointing into the connection
 * (valid until the next receive on c), 0 on timeout, -1 if the peer closed
 * or reset. Fails the test if the bytes are not a valid MQTT frame. */
int it_recv_frame(it_conn *c, mqtt_frame *f, int timeout_ms);
/* The next packet must be exactly these bytes. */
void it__expect_bytes(it_conn *c, const void *expected, size_t n, int timeout_ms);
#define it_expect_bytes(c, e, n, t) IT__AT(it__expect_bytes(c, e, n, t))
/* Same, bytes given as a literal: IT_EXPECT(c, 0x20, 0x02, 0x00, 0x00). */
#define IT_EXPECT(c, ...) do { \
        static const uint8_t it__e[] = { __VA_ARGS__ }; \
        it_expect_bytes(c, it__e, sizeof it__e, IT_TIMEOUT); \
    } while (0)
#define IT_SEND(c, ...) do { \
        static const uint8_t it__s[] = { __VA_ARGS__ }; \
        it_send(c, it__s, sizeof it__s); \
    } while (0)
/* The peer must close (EOF or reset) within timeout_ms without sending a
 * single byte first. Returns the elapsed time in ms. */
long it__expect_closed(it_conn *c, int timeout_ms);
#define it_expect_closed(c, t) IT__AT(it__expect_closed(c, t))
/* Nothing at all may arrive for ms milliseconds, and c stays open. */
void it__expect_silence(it_conn *c, int ms);
#define it_expect_silence(c, ms) IT__AT(it__expect_silence(c, ms))

/* ---- MQTT helpers ------------------------------------------------------- */

typedef struct it_will {
    const char *topic;
    const char *payload;
    uint8_t qos;
    bool retain;
} it_will;

/* Send CONNECT (protocol "MQTT" level 4). will may be NULL. */
void it__send_connect(it_conn *c, const char *client_id, bool clean,
                      uint16_t keepalive, const it_will *will);
#define it_send_connect(c, id, clean, ka, will) \
    IT__AT(it__send_connect(c, id, clean, ka, will))
/* Send CONNECT and expect exactly CONNACK 20 02 SP 00; returns SP. */
bool it__mqtt_connect(it_conn *c, const char *client_id, bool clean,
                      uint16_t keepalive, const it_will *will);
#define it_mqtt_connect(c, id, clean, ka, will) \
    IT__AT(it__mqtt_connect(c, id, clean, ka, will))
/* it_connect + it_mqtt_connect with keep alive 0 (never times out) and no
 * will; asserts session present == expect_sp. */
it_conn *it__client(uint16_t port, const char *client_id, bool clean, bool expect_sp);
#define it_client(port, id, clean) IT__AT(it__client(port, id, clean, false))
#define it_client_sp(port, id, clean, sp) IT__AT(it__client(port, id, clean, sp))

/* SUBSCRIBE one filter; expect SUBACK 90 03 ID granted, granted == qos. */
void it__subscribe(it_conn *c, const char *filter, uint8_t qos);
#define it_subscribe(c, f, q) IT__AT(it__subscribe(c, f, q))
/* SUBSCRIBE n filters; expect SUBACK with exactly codes[0..n). */
void it__subscribe_n(it_conn *c, const char *const *filters, const uint8_t *qos,
                     size_t n, const uint8_t *codes);
#define it_subscribe_n(c, f, q, n, codes) IT__AT(it__subscribe_n(c, f, q, n, codes))
/* UNSUBSCRIBE one filter; expect UNSUBACK B0 02 ID. */
void it__unsubscribe(it_conn *c, const char *filter);
#define it_unsubscribe(c, f) IT__AT(it__unsubscribe(c, f))

/* PUBLISH and run the sender's side of the QoS flow with exact acks:
 * QoS 1 expects 40 02 ID; QoS 2 expects 50 02 ID, sends PUBREL, expects
 * 70 02 ID. Returns the packet id used (0 for QoS 0). */
uint16_t it__publish(it_conn *c, const char *topic, const void *payload, size_t len,
                     uint8_t qos, bool retain);
#define it_publish(c, t, p, len, q, r) IT__AT(it__publish(c, t, p, len, q, r))
#define it_publish_str(c, t, s, q, r) IT__AT(it__publish(c, t, s, strlen(s), q, r))
/* A CONNECT written byte for byte with no validation, so tests can send
 * what the codec's encoder refuses: any protocol name, level and flags.
 * The payload is the client id followed by extra[0..extra_len) (will
 * topic/message, user name... already length-prefixed by the caller).
 * Returns the size; buf must hold 5 + 12 + strlen(name) + ids + extra. */
size_t it_raw_connect(uint8_t *buf, const char *name, uint8_t level, uint8_t flags,
                      uint16_t keepalive, const char *client_id, const uint8_t *extra,
                      size_t extra_len);
/* Encode a PUBLISH into a fresh malloc'd buffer (for raw sends). */
uint8_t *it_encode_publish(const char *topic, const void *payload, size_t len,
                           uint8_t qos, bool retain, bool dup, uint16_t id,
                           size_t *out_len);
/* Next packet id of this connection (1, 2, ... skipping 0). */
uint16_t it_next_id(it_conn *c);

/* Receive the next PUBLISH (answering PUBRELs of earlier QoS 2 deliveries
 * with PUBCOMP on the way) without acknowledging it. Fails the test on
 * timeout, close, or any other packet. *p points into c. */
void it__recv_publish(it_conn *c, mqtt_publish *p, int timeout_ms);
#define it_recv_publish(c, p, t) IT__AT(it__recv_publish(c, p, t))
/* Receiver's side of the QoS flow for p: PUBACK for QoS 1; PUBREC for QoS 2
 * (the PUBREL is answered later by the receive functions, or by it_ping). */
void it_ack(it_conn *c, const mqtt_publish *p);
/* Receive the next PUBLISH, check topic, payload, QoS and RETAIN (DUP must
 * be 0), acknowledge it; returns its packet id. */
uint16_t it__expect_publish(it_conn *c, const char *topic, const char *payload,
                            uint8_t qos, bool retain);
#define it_expect_publish(c, t, p, q, r) IT__AT(it__expect_publish(c, t, p, q, r))
/* PINGREQ, expect exactly D0 00: also a barrier, since the broker answers
 * only after handling what was sent before. PUBRELs met on the way are
 * answered; any other packet fails the test. */
void it__ping(it_conn *c);
#define it_ping(c) IT__AT(it__ping(c))
/* DISCONNECT, then wait for the broker to close [MQTT-3.14.4-1]; frees c. */
void it__disconnect(it_conn *c);
#define it_disconnect(c) IT__AT(it__disconnect(c))
/* Is the broker still serving? A fresh client subscribes, publishes QoS 1
 * to itself and must receive it. */
void it__assert_serving(it_broker *b);
#define it_assert_serving(b) IT__AT(it__assert_serving(b))

/* ---- external tools (mosquitto_pub, mosquitto_sub, the broker CLI) ------- */

typedef struct it_proc it_proc;

/* Spawn argv (argv[0] looked up in PATH), stdout and stderr captured
 * together; stdin is /dev/null. */
it_proc *it__spawn(const char *const argv[]);
#define it_spawn(argv) IT__AT(it__spawn(argv))
/* Wait until the captured output contains text; false at the deadline. */
bool it_proc_wait_output(it_proc *p, const char *text, int timeout_ms);
/* Wait for exit; returns the exit status, or 128+signal. Kills the process
 * and fails the test at the deadline. */
int it__proc_wait(it_proc *p, int timeout_ms);
#define it_proc_wait(p, t) IT__AT(it__proc_wait(p, t))
/* Output so far, NUL-terminated; valid until the next call on p. */
const char *it_proc_output(it_proc *p);
void it_proc_free(it_proc *p);
/* Spawn, wait, copy the output into *out (malloc'd, may be NULL). */
int it__run(const char *const argv[], int timeout_ms, char **out);
#define it_run(argv, t, out) IT__AT(it__run(argv, t, out))

/* Write text to a new file in a fresh temporary directory; returns its path
 * (malloc'd). The harness removes it at teardown. */
char *it_temp_file(const char *name, const char *text);

/* ---- utilities ---------------------------------------------------------- */

/* Monotonic clock in ms. */
long it_now_ms(void);
/* Fail the test with a printf-style message at the recorded location. */
void it_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
/* Print a hex dump to the cmocka error stream. */
void it_hexdump(const char *label, const uint8_t *p, size_t n);
/* Compare a span with a C string. */
bool it_span_eq(mqtt_span s, const char *str);
/* Does path exist (stat succeeds)? */
bool it_file_exists(const char *path);
/* Whole file into a malloc'd NUL-terminated buffer (*len, if not NULL, gets
 * the size without the NUL); NULL if it cannot be read. */
char *it_read_file(const char *path, size_t *len);
/* Path of rel (e.g. "tools/gatemq-cert") in the source tree, into out[n]:
 * under $GATEMQ_SRC if set, else in the nearest directory above this test
 * binary that has it. False if it does not exist or does not fit. */
bool it_repo_path(const char *rel, char *out, size_t n);
/* Remove dir and everything under it (no symlinks followed). The caller
 * checks that dir is its own. */
void it_remove_tree(const char *dir);
/* A port of 127.0.0.1 the kernel just handed out (free unless someone races
 * for it); fails the test if there is none. */
uint16_t it_free_port(void);
/* A TCP socket (SOCK_STREAM | sock_flags) connected to 127.0.0.1:port with
 * Nagle off, SO_RCVBUF set first if rcvbuf > 0. Fails the test if refused. */
int it_tcp_connect_fd(uint16_t port, int sock_flags, int rcvbuf);
/* In a forked child: stdin from /dev/null, stdout and stderr appended to
 * log_path, then exec argv[0] (a path, no PATH lookup). Never returns: exit
 * status 126 if the files cannot be opened, 127 if exec fails. */
void it_exec_logged(const char *log_path, const char *const argv[]) __attribute__((noreturn));
/* Send all n bytes on fd (EINTR retried); false on error or reset. */
bool it_send_fd(int fd, const void *bytes, size_t n);

#endif
