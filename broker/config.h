/*
 * config.h - the broker's configuration file.
 *
 * One directive per line: a key and its arguments separated by blanks; '#'
 * starts a comment. `listener PORT [ADDRESS]` opens a listener section: the
 * listener keys after it apply to it. Every other key is global. See
 * docs/configuration.md for the reference.
 *
 * A gmq_config owns all its strings; gmq_config_free releases them. On a parse
 * error the output is left freed (nothing to release) and err holds
 * "FILE:LINE: reason".
 */
#ifndef GATEMQ_CONFIG_H
#define GATEMQ_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* A company whose devices' certificates come from their own CA. */
typedef struct gmq_company_ca {
    char *company;
    char *cafile;
} gmq_company_ca;

typedef struct gmq_listener_cfg {
    char *address; /* NULL: all addresses */
    uint16_t port;
    bool allow_anonymous;
    int line; /* where it was declared, for messages */
    /* TLS: the listener speaks TLS when certfile is set. Paths are resolved
     * against the configuration file's directory. */
    char *certfile, *keyfile, *cafile, *crlfile;
    bool require_certificate;
    gmq_company_ca *company_cas;
    size_t ncompany_cas;
} gmq_listener_cfg;

enum gmq_company_source { GMQ_COMPANY_FROM_O, GMQ_COMPANY_FROM_OU, GMQ_COMPANY_FROM_SAN_URI };

typedef struct gmq_config {
    gmq_listener_cfg *listeners;
    size_t nlisteners;
    int log_level;
    size_t max_packet_size;  /* any packet, header included */
    size_t max_connect_size; /* any packet before CONNECT is accepted */
    double connect_timeout;  /* seconds to wait for CONNECT */
    unsigned max_connections;/* 0: unlimited */
    unsigned max_inflight;   /* outgoing QoS 1/2 awaiting ack, per client */
    unsigned max_queued;     /* QoS 1/2 waiting behind the window or offline */
    size_t max_queued_bytes; /* per client, 0: unlimited (default 64 MiB) */
    unsigned max_subscriptions; /* per session, 0: unlimited */
    unsigned max_sessions;   /* persistent sessions in the broker, 0: unlimited */
    unsigned max_sessions_per_company; /* persistent sessions per namespace, 0: unlimited */
    double session_expiry;   /* seconds a persistent session outlives its client, 0: no end */
    unsigned sys_interval;   /* seconds between $SYS updates, 0: off */
    char **anon_deny;        /* filters anonymous clients may not subscribe to */
    size_t nanon_deny;

    double tls_handshake_timeout;     /* seconds for a TLS handshake */
    int company_from;                 /* enum gmq_company_source */
    char *company_uri_prefix;         /* with GMQ_COMPANY_FROM_SAN_URI */
    char *password_file;              /* NULL: no password logins */
    unsigned auth_threads;            /* password-check worker threads */
    int tls_handshake_threads;        /* 0: on the loop; -1: one per CPU */
    unsigned lockout_threshold;       /* failed logins before a lock */
    double lockout_time;              /* first lock, seconds; doubles */
    double lockout_max_time;          /* cap of a lock, seconds */
    char *persistence_file;           /* NULL: nothing survives a restart */
    char *acl_file;                   /* NULL: no access rules within namespaces */

    /* Telemetry bridge. */
    char **telemetry_topics;          /* client-relative filters */
    size_t ntelemetry_topics;
    int telemetry_format;             /* enum telemetry_format */
    char *telemetry_ts_field;         /* "ts" */
    int telemetry_json_unit;          /* enum telemetry_unit */
    int telemetry_line_unit;          /* enum telemetry_unit */
    double clock_window;              /* seconds */
    char *sink_kind;                  /* "influxdb" or "file"; NULL: none */
    char *sink_target;                /* URL or path */
    char *sink_db;                    /* InfluxDB database */
    unsigned sink_batch_size;
    unsigned sink_batch_delay_ms;
    unsigned sink_retry_max;          /* seconds */
    /* Presence. */
    double offline_notify_after;      /* seconds; 0: off */
    char *presence_topic;             /* first level of notifications: "presence" */
    struct gmq_company_delay {
        char *company;
        double seconds;
    } *company_delays;                /* per-company offline_notify_after */
    size_t ncompany_delays;
    bool persistence_sync_full;       /* fsync every commit (power-loss safe) */
    size_t store_queue_limit;         /* bytes of uncommitted writes before writers pause */
} gmq_config;

/* The configuration used when no file is given: conf/dev.conf, compiled in. */
extern const char gmq_config_default_text[];

void gmq_config_defaults(gmq_config *c);
/* Parse text (name is used in messages; relative paths in it are resolved
 * against base_dir, NULL meaning the current directory). Returns 0 or -1
 * with err set. */
int gmq_config_parse(const char *text, const char *name, const char *base_dir,
                     gmq_config *out, char *err, size_t errlen);
/* Read and parse a file. Returns 0 or -1 with err set. */
int gmq_config_load(const char *path, gmq_config *out, char *err, size_t errlen);
void gmq_config_free(gmq_config *c);

#endif
