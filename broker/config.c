#include "broker/config.h"

#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "broker/alloc.h"
#include "broker/log.h"
#include "broker/readfile.h"
#include "mqtt.h"

#define MAX_ARGS 8

typedef struct parser {
    const char *name;
    const char *base_dir;
    int line;
    char *err;
    size_t errlen;
} parser;

static int fail(parser *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int fail(parser *p, const char *fmt, ...)
{
    int n = snprintf(p->err, p->errlen, "%s:%d: ", p->name, p->line);
    if (n < 0 || (size_t)n >= p->errlen)
        return -1;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(p->err + n, p->errlen - (size_t)n, fmt, ap);
    va_end(ap);
    return -1;
}

void gmq_config_defaults(gmq_config *c)
{
    memset(c, 0, sizeof(*c));
    c->log_level = GMQ_LOG_NOTICE;
    c->max_packet_size = 16u * 1024 * 1024;
    c->max_connect_size = 64u * 1024;
    c->connect_timeout = 10;
    c->max_connections = 100000;
    c->max_inflight = 20;
    c->max_queued = 1000;
    /* Bounded by default: with 16 MiB packets, max_queued alone lets one
     * offline client pin gigabytes. */
    c->max_queued_bytes = 64u * 1024 * 1024;
    c->max_subscriptions = 100000;
    c->sys_interval = 10;
    c->tls_handshake_timeout = 10;
    c->company_from = GMQ_COMPANY_FROM_O;
    c->auth_threads = 2;
    c->tls_handshake_threads = -1; /* one per online CPU */
    c->lockout_threshold = 5;
    c->lockout_time = 4;
    c->lockout_max_time = 3600;
    c->clock_window = 3600;
    c->sink_batch_size = 5000;
    c->sink_batch_delay_ms = 200;
    c->sink_retry_max = 30;
    c->offline_notify_after = 3600;
    c->telemetry_line_unit = 4; /* TELEMETRY_NS */
    c->store_queue_limit = 64u * 1024 * 1024;
}

void gmq_config_free(gmq_config *c)
{
    for (size_t i = 0; i < c->nlisteners; i++) {
        gmq_listener_cfg *l = &c->listeners[i];
        gmq_free(l->address);
        gmq_free(l->certfile);
        gmq_free(l->keyfile);
        gmq_free(l->cafile);
        gmq_free(l->crlfile);
        for (size_t j = 0; j < l->ncompany_cas; j++) {
            gmq_free(l->company_cas[j].company);
            gmq_free(l->company_cas[j].cafile);
        }
        gmq_free(l->company_cas);
    }
    gmq_free(c->listeners);
    gmq_free(c->company_uri_prefix);
    gmq_free(c->password_file);
    gmq_free(c->persistence_file);
    gmq_free(c->acl_file);
    for (size_t i = 0; i < c->ntelemetry_topics; i++)
        gmq_free(c->telemetry_topics[i]);
    gmq_free(c->telemetry_topics);
    gmq_free(c->telemetry_ts_field);
    gmq_free(c->sink_kind);
    gmq_free(c->sink_target);
    gmq_free(c->sink_db);
    gmq_free(c->presence_topic);
    for (size_t i = 0; i < c->ncompany_delays; i++)
        gmq_free(c->company_delays[i].company);
    gmq_free(c->company_delays);
    for (size_t i = 0; i < c->nanon_deny; i++)
        gmq_free(c->anon_deny[i]);
    gmq_free(c->anon_deny);
    memset(c, 0, sizeof(*c));
}

static int parse_uint(parser *p, const char *key, const char *s, unsigned long long min,
                      unsigned long long max, unsigned long long *out)
{
    char *end;
    errno = 0;
    if (*s == '-' || *s == '+')
        return fail(p, "%s: '%s' is not a non-negative integer", key, s);
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s || *end)
        return fail(p, "%s: '%s' is not a non-negative integer", key, s);
    if (v < min || v > max)
        return fail(p, "%s: %llu is out of range %llu..%llu", key, v, min, max);
    *out = v;
    return 0;
}

static int parse_bool(parser *p, const char *key, const char *s, bool *out)
{
    if (strcmp(s, "true") == 0)
        *out = true;
    else if (strcmp(s, "false") == 0)
        *out = false;
    else
        return fail(p, "%s: expected true or false, got '%s'", key, s);
    return 0;
}

static int add_listener(parser *p, gmq_config *c, char **argv, int argc)
{
    unsigned long long port;
    if (argc < 2 || argc > 3)
        return fail(p, "listener: expected PORT [ADDRESS]");
    if (parse_uint(p, "listener", argv[1], 1, 65535, &port))
        return -1;
    for (size_t i = 0; i < c->nlisteners; i++) {
        const gmq_listener_cfg *o = &c->listeners[i];
        const char *oa = o->address ? o->address : "";
        if (o->port == port && strcmp(oa, argc == 3 ? argv[2] : "") == 0)
            return fail(p, "listener %llu %s is already declared at line %d", port,
                        argc == 3 ? argv[2] : "", o->line);
    }
    gmq_listener_cfg *l = gmq_realloc(c->listeners, (c->nlisteners + 1) * sizeof(*l));
    if (!l)
        return fail(p, "out of memory");
    c->listeners = l;
    l = &c->listeners[c->nlisteners];
    memset(l, 0, sizeof(*l));
    l->port = (uint16_t)port;
    l->line = p->line;
    if (argc == 3 && !(l->address = gmq_strdup(argv[2])))
        return fail(p, "out of memory");
    c->nlisteners++;
    return 0;
}

static int add_deny(parser *p, gmq_config *c, const char *filter)
{
    if (!mqtt_topic_filter_valid((const uint8_t *)filter, strlen(filter)))
        return fail(p, "anonymous_deny_subscribe: '%s' is not a valid topic filter", filter);
    char **v = gmq_realloc(c->anon_deny, (c->nanon_deny + 1) * sizeof(*v));
    if (!v)
        return fail(p, "out of memory");
    c->anon_deny = v;
    if (!(v[c->nanon_deny] = gmq_strdup(filter)))
        return fail(p, "out of memory");
    c->nanon_deny++;
    return 0;
}

/* Replace *slot with path, resolved against the configuration's directory. */
static int set_path(parser *p, const char *key, const char *path, char **slot)
{
    char *v;
    if (path[0] == '/' || !p->base_dir) {
        v = gmq_strdup(path);
    } else {
        size_t n = strlen(p->base_dir) + 1 + strlen(path) + 1;
        if ((v = gmq_malloc(n)))
            snprintf(v, n, "%s/%s", p->base_dir, path);
    }
    if (!v)
        return fail(p, "out of memory");
    if (*slot) {
        gmq_free(v);
        return fail(p, "%s given twice", key);
    }
    *slot = v;
    return 0;
}

static bool usable_company(const char *s)
{
    if (!*s || *s == '$' || strlen(s) > 128 || !mqtt_utf8_valid((const uint8_t *)s, strlen(s)))
        return false;
    return strpbrk(s, "/+#") == NULL;
}

static int add_company_ca(parser *p, gmq_listener_cfg *l, char **argv, int argc)
{
    if (argc != 3)
        return fail(p, "company_ca: expected COMPANY CAFILE");
    if (!usable_company(argv[1]))
        return fail(p, "company_ca: '%s' is not a usable company name", argv[1]);
    for (size_t i = 0; i < l->ncompany_cas; i++)
        if (strcmp(l->company_cas[i].company, argv[1]) == 0)
            return fail(p, "company_ca: %s given twice", argv[1]);
    gmq_company_ca *v = gmq_realloc(l->company_cas, (l->ncompany_cas + 1) * sizeof(*v));
    if (!v)
        return fail(p, "out of memory");
    l->company_cas = v;
    gmq_company_ca *e = &v[l->ncompany_cas];
    memset(e, 0, sizeof(*e));
    l->ncompany_cas++;
    if (!(e->company = gmq_strdup(argv[1])))
        return fail(p, "out of memory");
    return set_path(p, "company_ca", argv[2], &e->cafile);
}

/* Set *out to the index of a among names. */
static int pick(parser *p, const char *key, const char *a, const char *const *names, int n,
                int *out)
{
    for (int i = 0; i < n; i++)
        if (strcmp(a, names[i]) == 0) {
            *out = i;
            return 0;
        }
    return fail(p, "%s: '%s' is not one of the accepted values", key, a);
}

static int set_sink(parser *p, gmq_config *c, char **argv, int argc)
{
    if (c->sink_kind)
        return fail(p, "sink given twice");
    if (argc == 4 && strcmp(argv[1], "influxdb") == 0) {
        if (strncmp(argv[2], "http://", 7) != 0 && strncmp(argv[2], "https://", 8) != 0)
            return fail(p, "sink influxdb: '%s' is not an http:// or https:// URL", argv[2]);
        if (!(c->sink_kind = gmq_strdup("influxdb")) || !(c->sink_target = gmq_strdup(argv[2])) ||
            !(c->sink_db = gmq_strdup(argv[3])))
            return fail(p, "out of memory");
        return 0;
    }
    if (argc == 3 && strcmp(argv[1], "file") == 0) {
        if (!(c->sink_kind = gmq_strdup("file")))
            return fail(p, "out of memory");
        return set_path(p, "sink file", argv[2], &c->sink_target);
    }
    return fail(p, "sink: expected 'influxdb URL DATABASE' or 'file PATH'");
}

static int add_company_delay(parser *p, gmq_config *c, char **argv, int argc)
{
    unsigned long long v;
    if (argc != 3)
        return fail(p, "company_offline_notify_after: expected COMPANY SECONDS");
    if (!usable_company(argv[1]))
        return fail(p, "company_offline_notify_after: '%s' is not a usable company name", argv[1]);
    if (parse_uint(p, argv[0], argv[2], 0, 365 * 86400, &v))
        return -1;
    struct gmq_company_delay *d =
        gmq_realloc(c->company_delays, (c->ncompany_delays + 1) * sizeof(*d));
    if (!d)
        return fail(p, "out of memory");
    c->company_delays = d;
    d[c->ncompany_delays].seconds = (double)v;
    if (!(d[c->ncompany_delays].company = gmq_strdup(argv[1])))
        return fail(p, "out of memory");
    c->ncompany_delays++;
    return 0;
}

static int directive(parser *p, gmq_config *c, char **argv, int argc)
{
    const char *k = argv[0];
    unsigned long long v;
    gmq_listener_cfg *l = c->nlisteners ? &c->listeners[c->nlisteners - 1] : NULL;

    if (strcmp(k, "listener") == 0)
        return add_listener(p, c, argv, argc);
    if (strcmp(k, "sink") == 0)
        return set_sink(p, c, argv, argc);
    if (strcmp(k, "company_offline_notify_after") == 0)
        return add_company_delay(p, c, argv, argc);
    if (strcmp(k, "company_ca") == 0) {
        if (!l)
            return fail(p, "%s must follow a listener line", k);
        return add_company_ca(p, l, argv, argc);
    }
    if (argc != 2)
        return fail(p, "%s: expected exactly one value", k);
    const char *a = argv[1];

    if (strcmp(k, "allow_anonymous") == 0) {
        if (!l)
            return fail(p, "%s must follow a listener line", k);
        return parse_bool(p, k, a, &l->allow_anonymous);
    }
    static const struct {
        const char *key;
        size_t off;
    } listener_paths[] = {
        {"certfile", offsetof(gmq_listener_cfg, certfile)},
        {"keyfile", offsetof(gmq_listener_cfg, keyfile)},
        {"cafile", offsetof(gmq_listener_cfg, cafile)},
        {"crlfile", offsetof(gmq_listener_cfg, crlfile)},
    };
    for (size_t i = 0; i < sizeof(listener_paths) / sizeof(listener_paths[0]); i++) {
        if (strcmp(k, listener_paths[i].key) == 0) {
            if (!l)
                return fail(p, "%s must follow a listener line", k);
            return set_path(p, k, a, (char **)((char *)l + listener_paths[i].off));
        }
    }
    if (strcmp(k, "require_certificate") == 0) {
        if (!l)
            return fail(p, "%s must follow a listener line", k);
        return parse_bool(p, k, a, &l->require_certificate);
    }
    if (strcmp(k, "password_file") == 0)
        return set_path(p, k, a, &c->password_file);
    if (strcmp(k, "persistence_file") == 0)
        return set_path(p, k, a, &c->persistence_file);
    if (strcmp(k, "acl_file") == 0)
        return set_path(p, k, a, &c->acl_file);
    if (strcmp(k, "telemetry_topic") == 0) {
        if (!mqtt_topic_filter_valid((const uint8_t *)a, strlen(a)) || a[0] == '$')
            return fail(p, "telemetry_topic: '%s' is not a usable topic filter", a);
        char **t = gmq_realloc(c->telemetry_topics, (c->ntelemetry_topics + 1) * sizeof(*t));
        if (!t)
            return fail(p, "out of memory");
        c->telemetry_topics = t;
        if (!(t[c->ntelemetry_topics] = gmq_strdup(a)))
            return fail(p, "out of memory");
        c->ntelemetry_topics++;
        return 0;
    }
    if (strcmp(k, "telemetry_format") == 0) {
        static const char *const names[] = {"auto", "json", "line"};
        return pick(p, k, a, names, 3, &c->telemetry_format);
    }
    if (strcmp(k, "telemetry_timestamp_unit") == 0) {
        static const char *const names[] = {"auto", "s", "ms", "us", "ns"};
        return pick(p, k, a, names, 5, &c->telemetry_json_unit);
    }
    if (strcmp(k, "telemetry_line_precision") == 0) {
        static const char *const names[] = {"auto", "s", "ms", "us", "ns"};
        if (pick(p, k, a, names, 5, &c->telemetry_line_unit))
            return -1;
        if (c->telemetry_line_unit == 0)
            c->telemetry_line_unit = 4; /* line protocol's own default: ns */
        return 0;
    }
    if (strcmp(k, "telemetry_timestamp_field") == 0) {
        gmq_free(c->telemetry_ts_field);
        if (!(c->telemetry_ts_field = gmq_strdup(a)))
            return fail(p, "out of memory");
        return 0;
    }
    if (strcmp(k, "clock_window") == 0) {
        if (parse_uint(p, k, a, 60, 30 * 86400, &v))
            return -1;
        c->clock_window = (double)v;
        return 0;
    }
    if (strcmp(k, "sink_batch_size") == 0) {
        if (parse_uint(p, k, a, 1, 1000000, &v))
            return -1;
        c->sink_batch_size = (unsigned)v;
        return 0;
    }
    if (strcmp(k, "sink_batch_delay") == 0) {
        if (parse_uint(p, k, a, 0, 60000, &v))
            return -1;
        c->sink_batch_delay_ms = (unsigned)v;
        return 0;
    }
    if (strcmp(k, "sink_retry_max") == 0) {
        if (parse_uint(p, k, a, 1, 3600, &v))
            return -1;
        c->sink_retry_max = (unsigned)v;
        return 0;
    }
    if (strcmp(k, "offline_notify_after") == 0) {
        if (parse_uint(p, k, a, 0, 365 * 86400, &v))
            return -1;
        c->offline_notify_after = (double)v;
        return 0;
    }
    if (strcmp(k, "presence_topic") == 0) {
        if (!usable_company(a))
            return fail(p, "presence_topic: '%s' is not usable as one topic level", a);
        gmq_free(c->presence_topic);
        if (!(c->presence_topic = gmq_strdup(a)))
            return fail(p, "out of memory");
        return 0;
    }
    if (strcmp(k, "persistence_sync") == 0) {
        if (strcmp(a, "normal") == 0)
            c->persistence_sync_full = false;
        else if (strcmp(a, "full") == 0)
            c->persistence_sync_full = true;
        else
            return fail(p, "persistence_sync: expected normal or full, got '%s'", a);
        return 0;
    }
    if (strcmp(k, "store_queue_limit") == 0) {
        /* No "off": an unbounded queue is what the limit exists to prevent. */
        if (parse_uint(p, k, a, 65536, (unsigned long long)SIZE_MAX / 2, &v))
            return -1;
        c->store_queue_limit = (size_t)v;
        return 0;
    }
    if (strcmp(k, "certificate_company") == 0) {
        if (strcmp(a, "o") == 0 || strcmp(a, "O") == 0)
            c->company_from = GMQ_COMPANY_FROM_O;
        else if (strcmp(a, "ou") == 0 || strcmp(a, "OU") == 0)
            c->company_from = GMQ_COMPANY_FROM_OU;
        else if (strcmp(a, "san_uri") == 0)
            c->company_from = GMQ_COMPANY_FROM_SAN_URI;
        else
            return fail(p, "certificate_company: expected o, ou or san_uri, got '%s'", a);
        return 0;
    }
    if (strcmp(k, "certificate_company_uri_prefix") == 0) {
        gmq_free(c->company_uri_prefix);
        if (!(c->company_uri_prefix = gmq_strdup(a)))
            return fail(p, "out of memory");
        return 0;
    }
    if (strcmp(k, "tls_handshake_timeout") == 0) {
        if (parse_uint(p, k, a, 1, 3600, &v))
            return -1;
        c->tls_handshake_timeout = (double)v;
        return 0;
    }
    if (strcmp(k, "tls_handshake_threads") == 0) {
        if (strcmp(a, "auto") == 0) {
            c->tls_handshake_threads = -1;
            return 0;
        }
        if (parse_uint(p, k, a, 0, 64, &v))
            return -1;
        c->tls_handshake_threads = (int)v;
        return 0;
    }
    if (strcmp(k, "auth_threads") == 0) {
        if (parse_uint(p, k, a, 1, 64, &v))
            return -1;
        c->auth_threads = (unsigned)v;
        return 0;
    }
    if (strcmp(k, "lockout_threshold") == 0) {
        if (parse_uint(p, k, a, 1, 1000, &v))
            return -1;
        c->lockout_threshold = (unsigned)v;
        return 0;
    }
    if (strcmp(k, "lockout_time") == 0) {
        if (parse_uint(p, k, a, 1, 3600, &v))
            return -1;
        c->lockout_time = (double)v;
        return 0;
    }
    if (strcmp(k, "lockout_max_time") == 0) {
        if (parse_uint(p, k, a, 1, 7 * 86400, &v))
            return -1;
        c->lockout_max_time = (double)v;
        return 0;
    }
    if (strcmp(k, "log_level") == 0) {
        if ((c->log_level = gmq_log_level_parse(a)) < 0)
            return fail(p, "log_level: expected error, warning, notice, info or debug, got '%s'", a);
        return 0;
    }
    if (strcmp(k, "max_packet_size") == 0) {
        if (parse_uint(p, k, a, 16, MQTT_MAX_REMAINING_LENGTH + MQTT_MAX_HEADER, &v))
            return -1;
        c->max_packet_size = (size_t)v;
        return 0;
    }
    if (strcmp(k, "max_connect_size") == 0) {
        if (parse_uint(p, k, a, 16, MQTT_MAX_REMAINING_LENGTH + MQTT_MAX_HEADER, &v))
            return -1;
        c->max_connect_size = (size_t)v;
        return 0;
    }
    if (strcmp(k, "connect_timeout") == 0) {
        if (parse_uint(p, k, a, 1, 3600, &v))
            return -1;
        c->connect_timeout = (double)v;
        return 0;
    }
    if (strcmp(k, "max_connections") == 0) {
        if (parse_uint(p, k, a, 0, 10000000, &v))
            return -1;
        c->max_connections = (unsigned)v;
        return 0;
    }
    if (strcmp(k, "max_inflight_messages") == 0) {
        if (parse_uint(p, k, a, 1, 65535, &v))
            return -1;
        c->max_inflight = (unsigned)v;
        return 0;
    }
    if (strcmp(k, "max_queued_messages") == 0) {
        if (parse_uint(p, k, a, 0, 100000000, &v))
            return -1;
        c->max_queued = (unsigned)v;
        return 0;
    }
    if (strcmp(k, "max_subscriptions") == 0) {
        if (parse_uint(p, k, a, 0, 100000000, &v))
            return -1;
        c->max_subscriptions = (unsigned)v;
        return 0;
    }
    if (strcmp(k, "max_sessions") == 0) {
        if (parse_uint(p, k, a, 0, 100000000, &v))
            return -1;
        c->max_sessions = (unsigned)v;
        return 0;
    }
    if (strcmp(k, "max_sessions_per_company") == 0) {
        if (parse_uint(p, k, a, 0, 100000000, &v))
            return -1;
        c->max_sessions_per_company = (unsigned)v;
        return 0;
    }
    if (strcmp(k, "session_expiry") == 0) {
        if (parse_uint(p, k, a, 0, 10ull * 365 * 86400, &v))
            return -1;
        c->session_expiry = (double)v;
        return 0;
    }
    if (strcmp(k, "max_queued_bytes") == 0) {
        if (parse_uint(p, k, a, 0, (unsigned long long)SIZE_MAX / 2, &v))
            return -1;
        c->max_queued_bytes = (size_t)v;
        return 0;
    }
    if (strcmp(k, "sys_interval") == 0) {
        if (parse_uint(p, k, a, 0, 86400, &v))
            return -1;
        c->sys_interval = (unsigned)v;
        return 0;
    }
    if (strcmp(k, "anonymous_deny_subscribe") == 0)
        return add_deny(p, c, a);
    return fail(p, "unknown key '%s'", k);
}

/* Checks that need the whole file. */
static int check_whole(parser *p, gmq_config *c)
{
    if (c->nlisteners == 0)
        return fail(p, "no listener configured");
    for (size_t i = 0; i < c->nlisteners; i++) {
        gmq_listener_cfg *l = &c->listeners[i];
        p->line = l->line;
        bool tls = l->certfile || l->keyfile;
        if (tls && (!l->certfile || !l->keyfile))
            return fail(p, "listener %u: certfile and keyfile go together", l->port);
        if (!tls && (l->cafile || l->crlfile || l->require_certificate || l->ncompany_cas))
            return fail(p, "listener %u: cafile, crlfile, require_certificate and company_ca "
                           "need a TLS listener (certfile and keyfile)", l->port);
        if (l->require_certificate && !l->cafile && !l->ncompany_cas)
            return fail(p, "listener %u: require_certificate needs cafile or company_ca", l->port);
    }
    if (c->ntelemetry_topics && !c->persistence_file)
        return fail(p, "telemetry_topic needs persistence_file: the outbox lives in the database");
    if (c->sink_kind && !c->ntelemetry_topics)
        return fail(p, "sink without any telemetry_topic");
    if (c->lockout_time > c->lockout_max_time)
        return fail(p, "lockout_time (%.0f) is longer than lockout_max_time (%.0f)",
                    c->lockout_time, c->lockout_max_time);
    if (c->company_from == GMQ_COMPANY_FROM_SAN_URI && !c->company_uri_prefix)
        return fail(p, "certificate_company san_uri needs certificate_company_uri_prefix");
    return 0;
}

int gmq_config_parse(const char *text, const char *name, const char *base_dir,
                     gmq_config *out, char *err, size_t errlen)
{
    parser p = {.name = name, .base_dir = base_dir, .line = 0, .err = err, .errlen = errlen};
    gmq_config_defaults(out);
    const char *s = text;
    char buf[4096];
    while (*s) {
        const char *eol = strchr(s, '\n');
        size_t n = eol ? (size_t)(eol - s) : strlen(s);
        p.line++;
        if (n >= sizeof(buf)) {
            fail(&p, "line longer than %zu bytes", sizeof(buf) - 1);
            goto error;
        }
        memcpy(buf, s, n);
        buf[n] = '\0';
        s += n + (eol ? 1 : 0);

        /* A comment is a whole line starting with '#', or a '#' standing
         * alone after a blank; '#' inside a value ("a/#") is data. */
        for (char *h = buf; (h = strchr(h, '#')); h++) {
            bool line_start = strspn(buf, " \t") == (size_t)(h - buf);
            bool alone = h > buf && (h[-1] == ' ' || h[-1] == '\t') &&
                         (h[1] == ' ' || h[1] == '\t' || h[1] == '\r');
            if (line_start || alone) {
                *h = '\0';
                break;
            }
        }
        char *argv[MAX_ARGS + 1];
        int argc = 0;
        for (char *save = NULL, *t = strtok_r(buf, " \t\r", &save); t;
             t = strtok_r(NULL, " \t\r", &save)) {
            if (argc == MAX_ARGS) {
                fail(&p, "too many values");
                goto error;
            }
            argv[argc++] = t;
        }
        if (argc == 0)
            continue;
        if (directive(&p, out, argv, argc))
            goto error;
    }
    if (check_whole(&p, out))
        goto error;
    return 0;
error:
    gmq_config_free(out);
    return -1;
}

int gmq_config_load(const char *path, gmq_config *out, char *err, size_t errlen)
{
    char *text = NULL;
    size_t len;
    if (gmq_read_file(path, 64u * 1024 * 1024, &text, &len, err, errlen) != GMQ_READ_OK)
        return -1;
    int rc = -1;
    char *dir = NULL;
    if (memchr(text, '\0', len)) {
        snprintf(err, errlen, "%s: contains a NUL byte", path);
        goto out;
    }
    if (!(dir = gmq_strdup(path))) {
        snprintf(err, errlen, "%s: out of memory", path);
        goto out;
    }
    char *slash = strrchr(dir, '/');
    if (slash)
        *slash = '\0';
    rc = gmq_config_parse(text, path, slash ? dir : NULL, out, err, errlen);
out:
    gmq_free(dir);
    gmq_free(text);
    return rc;
}
