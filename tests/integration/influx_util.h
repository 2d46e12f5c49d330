/*
 * influx_util.h - a private InfluxDB 1.x server for tests: influxd started
 * in a temporary directory on free loopback ports, and a few HTTP helpers
 * to create databases and query them.
 *
 * The server gets a minimal configuration written by influxd_start: meta,
 * data and WAL directories inside its temporary directory; HTTP on
 * 127.0.0.1:<free port> without authentication, request logging off; the
 * backup/RPC service (by default *:8088) on 127.0.0.1:<another free port>;
 * usage reporting, the _internal monitor database and continuous queries
 * off. Its output goes to <dir>/influxd.log (influxd_log_tail shows the
 * end, for failure messages). influxd is $INFLUXD when set, else
 * /usr/bin/influxd.
 *
 * The child gets PR_SET_PDEATHSIG, so a test that crashes does not leave a
 * server behind. These functions do not fail the test themselves: they
 * return -1 with err filled, and the caller asserts. Nothing is global:
 * several servers may run at once. Start-up takes well under a second.
 */
#ifndef GATEMQ_IT_INFLUX_UTIL_H
#define GATEMQ_IT_INFLUX_UTIL_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

typedef struct influxd {
    pid_t pid;          /* 0 while not running */
    uint16_t port;      /* HTTP API */
    uint16_t rpc_port;  /* backup/RPC service */
    char dir[256];      /* temporary directory: configuration, data, log */
    char conf[300];
    char log[300];
    char url[64];       /* "http://127.0.0.1:<port>", for sink_influx_open */
} influxd;

/* The influxd binary to run, or NULL when it is not installed. */
const char *influxd_binary(void);

/* Make a temporary directory and configuration, start influxd and wait (at
 * most timeout_ms) until GET /ping answers 204. Retries with other ports
 * when one was taken meanwhile. On failure nothing is left running and the
 * directory is removed; err says why (with the end of the server's log). */
int influxd_start(influxd *ix, long timeout_ms, char *err, size_t errlen);
/* Stop the server (SIGTERM; SIGKILL after 5 s) and keep its directory and
 * ports, so that influxd_resume brings the same data back on the same URL. */
void influxd_halt(influxd *ix);
/* Start a halted server again and wait for /ping as influxd_start does. */
int influxd_resume(influxd *ix, long timeout_ms, char *err, size_t errlen);
/* Stop the server if it runs and remove its directory. Idempotent. */
void influxd_stop(influxd *ix);

/* POST /query with q (and db when non-NULL), timestamps as epoch
 * milliseconds. Returns the HTTP status with *body the response (malloc'd,
 * NUL-terminated; the caller frees it), or -1 with err on a transport
 * error (*body NULL). */
long influxd_query(const influxd *ix, const char *db, const char *q, char **body, char *err,
                   size_t errlen);
/* CREATE DATABASE db: 0, or -1 with err. */
int influxd_create_db(const influxd *ix, const char *db, char *err, size_t errlen);
/* The last bytes of the server's log, NUL-terminated in buf. */
void influxd_log_tail(const influxd *ix, char *buf, size_t len);

#endif
