/*
 * fuzz_telemetry.c - telemetry payloads made into line-protocol points.
 *
 * The input is a PUBLISH payload. It is parsed as JSON, as line protocol and
 * with AUTO, and once more with rules chosen from the input's last byte
 * (time-stamp member, units). Checks: a point is one NUL-terminated line of
 * valid UTF-8 that carries the broker's tags, its device time is within
 * range; a refusal zeroes the point and says why; AUTO gives exactly what
 * the parser it picks gives.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "broker/telemetry.h"
#include "fuzz_util.h"
#include "mqtt.h"

typedef struct result {
    int rc;
    telemetry_point pt;
} result;

static result make(const telemetry_rules *r, const char *topic, const uint8_t *data, size_t size)
{
    telemetry_input in = { .company = "acme", .device = "gw-1", .topic = topic,
                           .topic_len = strlen(topic), .payload = data, .payload_len = size };
    result res;
    char err[200];
    err[0] = '\0';
    memset(&res.pt, 0xa5, sizeof res.pt);
    res.rc = telemetry_make_point(r, &in, &res.pt, err, sizeof err);
    if (res.rc == TELEMETRY_OK) {
        const telemetry_point *p = &res.pt;
        FUZZ_CHECK(p->line != NULL && strlen(p->line) == p->line_len);
        FUZZ_CHECK(!memchr(p->line, '\n', p->line_len) && !memchr(p->line, '\r', p->line_len));
        FUZZ_CHECK(mqtt_utf8_valid((const uint8_t *)p->line, p->line_len));
        FUZZ_CHECK(strstr(p->line, ",company=acme,device=gw-1,topic=") != NULL);
        FUZZ_CHECK(strchr(p->line, ' ') != NULL); /* tags, then fields */
        if (p->has_time)
            FUZZ_CHECK(p->device_ms >= 0 && p->device_ms <= TELEMETRY_MAX_MS);
    } else {
        FUZZ_CHECK(res.rc == TELEMETRY_EPAYLOAD || res.rc == TELEMETRY_ENOMEM);
        FUZZ_CHECK(res.pt.line == NULL && res.pt.line_len == 0 && !res.pt.has_time);
        FUZZ_CHECK(err[0] != '\0' && memchr(err, '\0', sizeof err));
    }
    return res;
}

static bool same(const result *a, const result *b)
{
    if (a->rc != b->rc)
        return false;
    if (a->rc != TELEMETRY_OK)
        return true;
    return a->pt.line_len == b->pt.line_len && strcmp(a->pt.line, b->pt.line) == 0 &&
           a->pt.has_time == b->pt.has_time &&
           (!a->pt.has_time || a->pt.device_ms == b->pt.device_ms);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char topic[] = "telemetry/gw-1/temp";
    telemetry_rules json = { .format = TELEMETRY_JSON };
    telemetry_rules line = { .format = TELEMETRY_LINE };
    result rj = make(&json, topic, data, size);
    result rl = make(&line, topic, data, size);
    result ra = make(NULL, topic, data, size);

    size_t i = 0;
    while (i < size && (data[i] == ' ' || data[i] == '\t' || data[i] == '\r' || data[i] == '\n'))
        i++;
    bool looks_json = i < size && (data[i] == '{' || data[i] == '[');
    FUZZ_CHECK(same(&ra, looks_json ? &rj : &rl));

    /* Rules from the last byte, and a topic whose first level needs escaping. */
    uint8_t k = size ? data[size - 1] : 0;
    telemetry_rules r = { .format = (enum telemetry_format)(k % 3),
                          .ts_field = (k & 0x08) ? "time_ms" : NULL,
                          .json_unit = (enum telemetry_unit)((k >> 4) % 5),
                          .line_unit = (enum telemetry_unit)((k >> 5) % 5) };
    result rr = make(&r, (k & 0x04) ? "we ird,m\\=x/\x01y" : "/x", data, size);

    telemetry_point_free(&rj.pt);
    telemetry_point_free(&rl.pt);
    telemetry_point_free(&ra.pt);
    telemetry_point_free(&rr.pt);
    telemetry_point_free(&rr.pt); /* documented safe twice */
    return 0;
}
