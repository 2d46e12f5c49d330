/*
 * fuzz_config.c - the configuration parser.
 *
 * The input is a configuration file (a NUL-terminated copy is parsed). On
 * success the result must satisfy what the parser promises the broker: at
 * least one listener, TLS settings only on TLS listeners, valid topic
 * filters, relative paths resolved against the base directory. On failure
 * the message must be "fuzz:LINE: ..." and nothing is left to free. The
 * same text parsed twice gives the same verdict.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "broker/config.h"
#include "fuzz_util.h"
#include "mqtt.h"

static void check_path(const char *p)
{
    FUZZ_CHECK(p == NULL || p[0] == '/');
}

static void check_filter(const char *f)
{
    FUZZ_CHECK(f && mqtt_topic_filter_valid((const uint8_t *)f, strlen(f)));
}

static void check_config(const gmq_config *c)
{
    FUZZ_CHECK(c->nlisteners >= 1 && c->listeners != NULL);
    FUZZ_CHECK(c->log_level >= 0 && c->log_level <= 4);
    for (size_t i = 0; i < c->nlisteners; i++) {
        const gmq_listener_cfg *l = &c->listeners[i];
        FUZZ_CHECK(l->port != 0 && l->line > 0);
        FUZZ_CHECK(!l->certfile == !l->keyfile);
        if (!l->certfile)
            FUZZ_CHECK(!l->cafile && !l->crlfile && !l->require_certificate && !l->ncompany_cas);
        check_path(l->certfile);
        check_path(l->keyfile);
        check_path(l->cafile);
        check_path(l->crlfile);
        for (size_t k = 0; k < l->ncompany_cas; k++) {
            FUZZ_CHECK(l->company_cas[k].company && l->company_cas[k].company[0]);
            check_path(l->company_cas[k].cafile);
        }
        for (size_t k = 0; k < i; k++) {
            const gmq_listener_cfg *o = &c->listeners[k];
            FUZZ_CHECK(o->port != l->port || strcmp(o->address ? o->address : "",
                                                    l->address ? l->address : "") != 0);
        }
    }
    check_path(c->password_file);
    check_path(c->persistence_file);
    check_path(c->acl_file);
    for (size_t i = 0; i < c->nanon_deny; i++)
        check_filter(c->anon_deny[i]);
    for (size_t i = 0; i < c->ntelemetry_topics; i++)
        check_filter(c->telemetry_topics[i]);
    FUZZ_CHECK(!c->ntelemetry_topics || c->persistence_file);
    FUZZ_CHECK(!c->sink_kind || c->ntelemetry_topics);
    FUZZ_CHECK(c->lockout_time <= c->lockout_max_time);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = malloc(size + 1);
    FUZZ_CHECK(text != NULL);
    memcpy(text, data, size);
    text[size] = '\0';

    gmq_config c;
    char err[512];
    err[0] = '\0';
    int rc = gmq_config_parse(text, "fuzz", "/base", &c, err, sizeof err);
    size_t nlisteners = 0;
    if (rc == 0) {
        check_config(&c);
        nlisteners = c.nlisteners;
        gmq_config_free(&c);
    } else {
        FUZZ_CHECK(rc == -1);
        FUZZ_CHECK(strncmp(err, "fuzz:", 5) == 0 && memchr(err, '\0', sizeof err));
    }

    /* No base directory: the verdict must not change. */
    gmq_config d;
    char err2[512];
    int rc2 = gmq_config_parse(text, "fuzz", NULL, &d, err2, sizeof err2);
    FUZZ_CHECK(rc2 == rc);
    if (rc2 == 0) {
        FUZZ_CHECK(d.nlisteners == nlisteners);
        gmq_config_free(&d);
    }
    free(text);
    return 0;
}
