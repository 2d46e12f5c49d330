/*
 * topic.c - UTF-8 strings, topic names and filters, and filter matching
 * (MQTT 3.1.1 sections 1.5.3 and 4.7).
 */
#include "mqtt.h"

#include <assert.h>
#include <string.h>

/* Well-formed sequences per Unicode table 3-7; the second byte's range
 * depends on the lead byte, which is what rules out overlongs, surrogates
 * (ED A0..BF) and code points past U+10FFFF (F4 90.., F5..FF). */
bool mqtt_utf8_valid(const uint8_t *s, size_t len)
{
    assert(s != NULL || len == 0);
    size_t i = 0;
    while (i < len) {
        uint8_t b = s[i];
        if (b < 0x80) {
            if (b == 0)
                return false; /* [MQTT-1.5.3-2] */
            i++;
            continue;
        }
        size_t n;
        uint8_t lo = 0x80, hi = 0xbf;
        if (b >= 0xc2 && b <= 0xdf) {
            n = 1;
        } else if (b >= 0xe0 && b <= 0xef) {
            n = 2;
            if (b == 0xe0)
                lo = 0xa0;
            else if (b == 0xed)
                hi = 0x9f;
        } else if (b >= 0xf0 && b <= 0xf4) {
            n = 3;
            if (b == 0xf0)
                lo = 0x90;
            else if (b == 0xf4)
                hi = 0x8f;
        } else {
            return false; /* continuation byte, C0/C1 overlong, or F5..FF */
        }
        if (len - i - 1 < n)
            return false;
        if (s[i + 1] < lo || s[i + 1] > hi)
            return false;
        for (size_t k = 2; k <= n; k++)
            if ((s[i + k] & 0xc0) != 0x80)
                return false;
        i += n + 1;
    }
    return true;
}

bool mqtt_topic_name_valid(const uint8_t *s, size_t len)
{
    if (len == 0 || len > 65535)
        return false; /* [MQTT-4.7.3-1], [MQTT-4.7.3-3] */
    if (memchr(s, '+', len) || memchr(s, '#', len))
        return false; /* [MQTT-4.7.1-1] */
    return mqtt_utf8_valid(s, len);
}

bool mqtt_topic_filter_valid(const uint8_t *s, size_t len)
{
    if (len == 0 || len > 65535)
        return false; /* [MQTT-4.7.3-1], [MQTT-4.7.3-3] */
    size_t start = 0;
    for (size_t i = 0; i <= len; i++) {
        if (i < len && s[i] != '/')
            continue;
        /* Level s[start..i): a wildcard must fill it alone. */
        for (size_t k = start; k < i; k++) {
            if (s[k] == '+' && i - start != 1)
                return false; /* [MQTT-4.7.1-3] */
            if (s[k] == '#' && (i - start != 1 || i != len))
                return false; /* [MQTT-4.7.1-2] */
        }
        start = i + 1;
    }
    return mqtt_utf8_valid(s, len);
}

/* Advances over one level; *pos == len + 1 once the last level is taken,
 * which keeps a trailing empty level ("a/") distinct from no level. */
static bool next_level(const uint8_t *s, size_t len, size_t *pos,
                       const uint8_t **lv, size_t *lvlen)
{
    if (*pos > len)
        return false;
    const uint8_t *start = s + *pos;
    const uint8_t *slash = memchr(start, '/', len - *pos);
    size_t n = slash ? (size_t)(slash - start) : len - *pos;
    *lv = start;
    *lvlen = n;
    *pos += n + 1;
    return true;
}

bool mqtt_topic_match(const uint8_t *filter, size_t flen, const uint8_t *topic,
                      size_t tlen)
{
    assert(filter != NULL && flen > 0);
    assert(topic != NULL && tlen > 0);
    /* [MQTT-4.7.2-1]: leading wildcards skip "$" topics such as $SYS. */
    if (topic[0] == '$' && (filter[0] == '+' || filter[0] == '#'))
        return false;
    size_t fp = 0, tp = 0;
    for (;;) {
        const uint8_t *fl, *tl;
        size_t fll, tll;
        bool fhas = next_level(filter, flen, &fp, &fl, &fll);
        bool thas = next_level(topic, tlen, &tp, &tl, &tll);
        if (!fhas)
            return !thas;
        /* '#' also matches the parent level: "a/#" matches "a" [MQTT-4.7.1-2]. */
        if (fll == 1 && fl[0] == '#')
            return true;
        if (!thas)
            return false;
        if (fll == 1 && fl[0] == '+')
            continue;
        if (fll != tll || memcmp(fl, tl, fll) != 0)
            return false;
    }
}
