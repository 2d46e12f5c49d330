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

typedef struct gmq_listener_cfg {
    char *address; /* NULL: all addresses */
    uint16_t port;
    bool allow_anonymous;
    int line; /* where it was declared, for messages */
} gmq_listener_cfg;

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
    size_t max_queued_bytes; /* per client, 0: unlimited */
    unsigned sys_interval;   /* seconds between $SYS updates, 0: off */
    char **anon_deny;        /* filters anonymous clients may not subscribe to */
    size_t nanon_deny;
} gmq_config;

/* The configuration used when no file is given: conf/dev.conf, compiled in. */
extern const char gmq_config_default_text[];

void gmq_config_defaults(gmq_config *c);
/* Parse text (name is used in messages). Returns 0 or -1 with err set. */
int gmq_config_parse(const char *text, const char *name, gmq_config *out, char *err,
                     size_t errlen);
/* Read and parse a file. Returns 0 or -1 with err set. */
int gmq_config_load(const char *path, gmq_config *out, char *err, size_t errlen);
void gmq_config_free(gmq_config *c);

#endif
