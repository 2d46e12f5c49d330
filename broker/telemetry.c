/*
 * telemetry.c - a gateway's telemetry payload made into one InfluxDB
 * line-protocol point, and the correction of the gateway's clock.
 *
 * PAYLOAD RULES (docs/telemetry.md, "Payloads", says the same for operators)
 *
 * Choosing the parser: rules->format JSON or LINE forces one. AUTO looks at
 * the first byte after blanks (space, tab, CR, LF): '{' or '[' means JSON,
 * anything else line protocol. Either way the whole payload must be valid
 * UTF-8 without U+0000, and not empty.
 *
 * JSON
 * - One JSON value (json-c in strict mode: no trailing commas, no leading
 *   zeros, only blanks after the value), nested at most TELEMETRY_JSON_DEPTH
 *   (16) objects/arrays deep, and that value an object.
 * - The device time is the top-level member named rules->ts_field ("ts").
 *   Absent or null: no device time (has_time false). A number: a time in
 *   rules->json_unit; AUTO decides by magnitude v: v < 1e11 seconds,
 *   v < 1e14 milliseconds, v < 1e17 microseconds, else nanoseconds (so
 *   1733300000, 1733300000123, 1733300000123456 and 1733300000123456789 are
 *   the same instant). Fractions and exponents are allowed (1733300000.5,
 *   1.7333e12); the decimal text is converted exactly, not through a
 *   double. A string: an RFC 3339 date-time,
 *   YYYY-MM-DD('T'|'t'|' ')hh:mm:ss[.digits]('Z'|'z'|+hh:mm|-hh:mm), with
 *   real calendar dates; a leap second (ss = 60) counts as the first
 *   instant of the next minute. Rejected: any other type or string, a
 *   negative or non-finite number, an integer beyond 64 bits, a time after
 *   9999-12-31T23:59:59.999Z. Precision is the millisecond: anything finer
 *   is truncated. The member is never a field; members of that name inside
 *   nested objects are ordinary fields.
 * - Every other member is a field, in document order (a member given twice
 *   counts once, with its last value):
 *     number       -> float field, shortest text that reads back as the
 *                     same double (21, 21.5, 1e+21). Always a float:
 *                     InfluxDB fixes a field's type at its first write and
 *                     rejects later points of another type, and JSON does
 *                     not tell 21 from 21.0, so an integer field would
 *                     flip type whenever a reading happens to be whole.
 *                     Integers beyond 2^53 lose precision. NaN, Infinity,
 *                     1e999 and integers beyond 64 bits are rejected.
 *     true, false  -> boolean field.
 *     string       -> string field in double quotes; '\' and '"' are
 *                     escaped with a backslash, LF and CR become the two
 *                     characters \n and \r (a point is one line), so they
 *                     are stored as those two characters. "\u0000" is
 *                     rejected.
 *     null         -> no field.
 *     object       -> its members flattened with '_': {"a":{"b":1}} gives
 *                     a_b=1, to any depth.
 *     array        -> its elements flattened by index: {"v":[1,2]} gives
 *                     v_0=1,v_1=2; {"v":[[1]]} gives v_0_0=1. An empty
 *                     array or object gives no field.
 * - Field keys: an empty member name, a flattened key longer than
 *   TELEMETRY_MAX_KEY (255) bytes, the keys time, _field and _measurement
 *   (InfluxDB refuses them), and two fields ending up with the same key
 *   ({"a_b":1,"a":{"b":2}}) are rejected. At most TELEMETRY_MAX_FIELDS (256)
 *   fields; at least one.
 * - Measurement: the first level of the client-relative topic (up to the
 *   first '/'); "telemetry" when that level is empty (topic "/x"). Tags:
 *   company, device and topic (the whole client-relative topic), always
 *   from the broker. Nothing in a JSON payload becomes a tag.
 *
 * LINE PROTOCOL (InfluxDB 1.x syntax)
 * - One point per message: one line, optionally ended by LF or CRLF; any
 *   other CR or LF is rejected. Leading and trailing spaces are ignored; a
 *   comment line ('#') is rejected.
 * - measurement[,tagkey=tagvalue...] fieldkey=value[,fieldkey=value...]
 *   [timestamp], sections separated by one or more spaces. In the
 *   measurement, tag keys, tag values and field keys a backslash escapes the
 *   next byte; a backslash at the end of the line is rejected. Required:
 *   a measurement, non-empty tag keys and values (no unescaped '=' in a
 *   value), at least one field. Field values: float
 *   (-?(digits[.digits]|.digits)([eE][+-]?digits)?, finite), integer
 *   (-?digits 'i', 64-bit), unsigned (digits 'u', 64-bit), string ("..."
 *   where \" and \\ are escapes; an unterminated string is rejected),
 *   boolean (t T true True TRUE f F false False FALSE).
 * - Timestamp: optional integer in rules->line_unit (AUTO: nanoseconds);
 *   negative, fractional or after 9999-12-31T23:59:59.999Z is rejected;
 *   truncated to the millisecond.
 * - At most TELEMETRY_MAX_TAGS (64) tags and 256 fields, keys at most 255
 *   bytes as written; a repeated tag key or field key, and the keys time,
 *   _field and _measurement, are rejected.
 * - Rendering: the measurement as written; then company, device and topic
 *   from the broker; then the device's other tags as written, in their
 *   order; tags named company, device or topic in the payload are dropped,
 *   so a gateway cannot file points under another company. Then the fields
 *   as written. The timestamp goes to device_ms, not into the line.
 *
 * ESCAPING of the text the broker writes (measurement from the topic, tag
 * values, JSON field keys): the measurement escapes ',', ' ' and '\'; tag
 * keys, tag values and field keys escape ',', '=', ' ' and '\' with a
 * backslash. Control characters U+0001..U+001F and U+007F cannot be written
 * there in line protocol and become '_'. (InfluxDB 1.x stores an escaped
 * backslash as written, i.e. doubled; newer parsers store one.)
 *
 * CLOCK CORRECTION: see the section before telemetry_clock_init.
 */
#include "broker/telemetry.h"

#include <errno.h>
#include <inttypes.h>
#include <json-c/json.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "broker/alloc.h"
#include "mqtt.h"

static const char *const reserved_keys[] = {"time", "_field", "_measurement"};
static const char fallback_measurement[] = "telemetry";

/* ---- errors ------------------------------------------------------------- */

static int tele__fail(int code, char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int tele__fail(int code, char *err, size_t errlen, const char *fmt, ...)
{
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
        /* One printable line: reasons go to logs and the dead-letter table. */
        size_t n = strlen(err);
        for (size_t i = 0; i < n; i++) {
            if ((unsigned char)err[i] < 0x20 || err[i] == 0x7f)
                err[i] = '?';
        }
        /* no UTF-8 sequence cut short by the truncation */
        size_t i = n;
        while (i > 0 && ((unsigned char)err[i - 1] & 0xc0) == 0x80)
            i--;
        if (i > 0 && (unsigned char)err[i - 1] >= 0xc0) {
            unsigned char lead = (unsigned char)err[i - 1];
            size_t want = lead >= 0xf0 ? 4 : lead >= 0xe0 ? 3 : 2;
            if (n - (i - 1) < want)
                err[i - 1] = '\0';
        }
    }
    return code;
}

#define BAD(...) tele__fail(TELEMETRY_EPAYLOAD, __VA_ARGS__)

/* Bytes of s[0..n) quoted in a reason: at most 40, ending on a UTF-8
 * character boundary. Use as "%.*s", QUOTE(s, n), s. */
static int tele__quote_len(const char *s, size_t n)
{
    size_t len = n < 40 ? n : 40;
    while (len > 0 && len < n && ((unsigned char)s[len] & 0xc0) == 0x80)
        len--;
    return (int)len;
}
#define QUOTE(s, n) tele__quote_len((s), (n))

/* ---- output buffer ------------------------------------------------------ */

typedef struct tele__buf {
    char *p;
    size_t len, cap;
    bool oom; /* an allocation failed: everything after is dropped */
} tele__buf;

static bool tele__reserve(tele__buf *b, size_t more)
{
    if (b->oom)
        return false;
    if (b->cap - b->len > more)
        return true; /* room for the bytes and the final NUL */
    size_t cap = b->cap ? b->cap : 128;
    while (cap - b->len <= more) {
        if (cap > SIZE_MAX / 2) {
            b->oom = true;
            return false;
        }
        cap *= 2;
    }
    char *p = gmq_realloc(b->p, cap);
    if (!p) {
        b->oom = true;
        return false;
    }
    b->p = p;
    b->cap = cap;
    return true;
}

static void tele__put(tele__buf *b, const void *s, size_t n)
{
    if (!tele__reserve(b, n))
        return;
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void tele__putc(tele__buf *b, char c)
{
    tele__put(b, &c, 1);
}

enum { ESC_MEASUREMENT, ESC_KEY };

/* A name or tag value for line protocol: specials escaped with a backslash,
 * control characters replaced (see ESCAPING above). */
static void tele__put_name(tele__buf *b, const char *s, size_t n, int kind)
{
    /* Reserve the worst case once: every byte escaped. */
    if (!tele__reserve(b, 2 * n))
        return;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x20 || c == 0x7f) {
            c = '_';
        } else if (c == ',' || c == ' ' || c == '\\' || (c == '=' && kind == ESC_KEY)) {
            b->p[b->len++] = '\\';
        }
        b->p[b->len++] = (char)c;
    }
    b->p[b->len] = '\0';
}

static void tele__put_string_value(tele__buf *b, const char *s, size_t n)
{
    if (!tele__reserve(b, 2 * n + 2))
        return;
    b->p[b->len++] = '"';
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (c == '"' || c == '\\') {
            b->p[b->len++] = '\\';
        } else if (c == '\n' || c == '\r') {
            b->p[b->len++] = '\\';
            c = c == '\n' ? 'n' : 'r';
        }
        b->p[b->len++] = c;
    }
    b->p[b->len++] = '"';
    b->p[b->len] = '\0';
}

/* Shortest "%g" text that reads back as v exactly. */
static void tele__put_double(tele__buf *b, double v)
{
    /* The shortest text that reads back as v. A value that a shorter
     * decimal already represents prints that way at 15 digits (%g drops the
     * trailing zeros, and a double is too precise for the 15th digit to
     * round differently), so start there: at most three tries, where going
     * up from 1 digit cost a profile's quarter of the broker's time. */
    char text[40];
    for (int prec = 15; prec <= 17; prec++) {
        snprintf(text, sizeof(text), "%.*g", prec, v);
        if (strtod(text, NULL) == v)
            break;
    }
    tele__put(b, text, strlen(text));
}

/* "measurement,company=..,device=..,topic=.." */
static void tele__put_head(tele__buf *b, const char *meas, size_t meas_len, bool meas_raw,
                           const telemetry_input *in)
{
    if (meas_raw)
        tele__put(b, meas, meas_len);
    else
        tele__put_name(b, meas, meas_len, ESC_MEASUREMENT);
    tele__put(b, ",company=", 9);
    tele__put_name(b, in->company, strlen(in->company), ESC_KEY);
    tele__put(b, ",device=", 8);
    tele__put_name(b, in->device, strlen(in->device), ESC_KEY);
    tele__put(b, ",topic=", 7);
    tele__put_name(b, in->topic, in->topic_len, ESC_KEY);
}

static bool tele__reserved_key(const char *k, size_t n)
{
    for (size_t i = 0; i < sizeof(reserved_keys) / sizeof(reserved_keys[0]); i++) {
        if (strlen(reserved_keys[i]) == n && memcmp(reserved_keys[i], k, n) == 0)
            return true;
    }
    return false;
}

/* ---- device time -------------------------------------------------------- */

static const int64_t pow10_tab[19] = {
    INT64_C(1), INT64_C(10), INT64_C(100),
    INT64_C(1000), INT64_C(10000), INT64_C(100000),
    INT64_C(1000000), INT64_C(10000000), INT64_C(100000000),
    INT64_C(1000000000), INT64_C(10000000000), INT64_C(100000000000),
    INT64_C(1000000000000), INT64_C(10000000000000), INT64_C(100000000000000),
    INT64_C(1000000000000000), INT64_C(10000000000000000), INT64_C(100000000000000000),
    INT64_C(1000000000000000000),
};

/* A decimal number as digits * 10^exp with at most 18 significant digits;
 * dropped digits lie far below the millisecond for any time in range. */
typedef struct tele__dec {
    int64_t digits; /* 0 .. 10^18 - 1 */
    int ndigits;    /* significant digits in `digits` (0 for zero) */
    long exp;
    bool neg;
} tele__dec;

/* JSON number grammar, the whole string. */
static bool tele__dec_parse(const char *s, tele__dec *d)
{
    *d = (tele__dec){0};
    const char *p = s;
    if (*p == '-') {
        d->neg = true;
        p++;
    }
    bool any = false;
    for (; *p >= '0' && *p <= '9'; p++) {
        any = true;
        if (d->digits == 0 && *p == '0')
            continue;
        if (d->ndigits < 18) {
            d->digits = d->digits * 10 + (*p - '0');
            d->ndigits++;
        } else {
            d->exp++;
        }
    }
    if (*p == '.') {
        p++;
        for (; *p >= '0' && *p <= '9'; p++) {
            any = true;
            if (d->ndigits >= 18)
                continue;
            if (d->digits != 0 || *p != '0') {
                d->digits = d->digits * 10 + (*p - '0');
                d->ndigits++;
            }
            d->exp--;
        }
    }
    if (!any)
        return false;
    if (*p == 'e' || *p == 'E') {
        p++;
        bool eneg = false;
        if (*p == '+' || *p == '-')
            eneg = *p++ == '-';
        if (!(*p >= '0' && *p <= '9'))
            return false;
        long e = 0;
        for (; *p >= '0' && *p <= '9'; p++) {
            if (e < 100000)
                e = e * 10 + (*p - '0');
        }
        d->exp += eneg ? -e : e;
    }
    return *p == '\0';
}

/* Magnitude ranges of TELEMETRY_UNIT_AUTO, as a count of integer digits:
 * v < 1e11 is seconds, < 1e14 milliseconds, < 1e17 microseconds. */
static enum telemetry_unit tele__auto_unit(const tele__dec *d)
{
    if (d->digits == 0)
        return TELEMETRY_S;
    long magnitude = d->ndigits + d->exp; /* 10^(m-1) <= v < 10^m */
    if (magnitude <= 11)
        return TELEMETRY_S;
    if (magnitude <= 14)
        return TELEMETRY_MS;
    if (magnitude <= 17)
        return TELEMETRY_US;
    return TELEMETRY_NS;
}

static int tele__unit_shift(enum telemetry_unit u)
{
    switch (u) {
    case TELEMETRY_S:
        return 3;
    case TELEMETRY_MS:
        return 0;
    case TELEMETRY_US:
        return -3;
    default:
        return -6;
    }
}

/* floor(d in unit u, as milliseconds); false when out of 0..MAX_MS. */
static bool tele__dec_to_ms(const tele__dec *d, enum telemetry_unit u, int64_t *ms)
{
    if (d->digits == 0) {
        *ms = 0;
        return true;
    }
    if (d->neg)
        return false;
    if (u == TELEMETRY_UNIT_AUTO)
        u = tele__auto_unit(d);
    long x = d->exp + tele__unit_shift(u);
    if (x >= 0) {
        /* TELEMETRY_MAX_MS < 10^15: more digits than that is out of range */
        if (d->ndigits + x > 15)
            return false;
        *ms = d->digits * pow10_tab[x];
    } else {
        *ms = -x >= 19 ? 0 : d->digits / pow10_tab[-x];
    }
    return *ms <= TELEMETRY_MAX_MS;
}

static int64_t tele__days_from_civil(int64_t y, unsigned m, unsigned d)
{
    y -= m <= 2;
    const int64_t era = (y >= 0 ? y : y - 399) / 400;
    const unsigned yoe = (unsigned)(y - era * 400);
    const unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + (int64_t)doe - 719468;
}

static bool tele__digits(const char *s, int n, int *v)
{
    *v = 0;
    for (int i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        *v = *v * 10 + (s[i] - '0');
    }
    return true;
}

/* RFC 3339 section 5.6 date-time, the whole of s[0..n). */
static bool tele__rfc3339_ms(const char *s, size_t n, int64_t *ms)
{
    int y, mo, d, h, mi, sec;
    if (n < 20 || !tele__digits(s, 4, &y) || s[4] != '-' || !tele__digits(s + 5, 2, &mo) ||
        s[7] != '-' || !tele__digits(s + 8, 2, &d) ||
        (s[10] != 'T' && s[10] != 't' && s[10] != ' ') || !tele__digits(s + 11, 2, &h) ||
        s[13] != ':' || !tele__digits(s + 14, 2, &mi) || s[16] != ':' ||
        !tele__digits(s + 17, 2, &sec))
        return false;
    static const int mdays[12] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    if (mo < 1 || mo > 12 || d < 1 || d > mdays[mo - 1] || (mo == 2 && d == 29 && !leap) ||
        h > 23 || mi > 59 || sec > 60)
        return false;
    size_t i = 19;
    int64_t frac_ms = 0;
    if (i < n && s[i] == '.') {
        size_t start = ++i;
        for (; i < n && s[i] >= '0' && s[i] <= '9'; i++) {
            if (i - start < 3)
                frac_ms = frac_ms * 10 + (s[i] - '0');
        }
        if (i == start)
            return false;
        for (size_t k = i - start; k < 3; k++)
            frac_ms *= 10;
    }
    int64_t offset_s = 0;
    if (i < n && (s[i] == 'Z' || s[i] == 'z')) {
        i++;
    } else if (i < n && (s[i] == '+' || s[i] == '-')) {
        int oh, om;
        if (n - i < 6 || !tele__digits(s + i + 1, 2, &oh) || s[i + 3] != ':' ||
            !tele__digits(s + i + 4, 2, &om) || oh > 23 || om > 59)
            return false;
        offset_s = (int64_t)oh * 3600 + om * 60;
        if (s[i] == '-')
            offset_s = -offset_s;
        i += 6;
    } else {
        return false;
    }
    if (i != n)
        return false;
    int64_t t = tele__days_from_civil(y, (unsigned)mo, (unsigned)d) * 86400 + h * 3600 +
                mi * 60 + sec - offset_s;
    *ms = t * 1000 + frac_ms;
    return *ms >= 0 && *ms <= TELEMETRY_MAX_MS;
}

/* ---- JSON --------------------------------------------------------------- */

typedef struct tele__json {
    tele__buf *out;
    char *err;
    size_t errlen;
    const char *ts_field;
    char key[TELEMETRY_MAX_KEY + 1]; /* flattened name being built */
    size_t nfields;
    size_t key_off[TELEMETRY_MAX_FIELDS]; /* rendered keys in out, for duplicates */
    size_t key_len[TELEMETRY_MAX_FIELDS];
} tele__json;

static int tele__json_ts(tele__json *j, json_object *v, enum telemetry_unit unit,
                         telemetry_point *pt)
{
    const char *ts = j->ts_field;
    switch (json_object_get_type(v)) {
    case json_type_null:
        return TELEMETRY_OK;
    case json_type_string: {
        const char *s = json_object_get_string(v);
        size_t n = (size_t)json_object_get_string_len(v);
        if (!tele__rfc3339_ms(s, n, &pt->device_ms))
            return BAD(j->err, j->errlen, "\"%s\" is a string but not an RFC 3339 time in "
                       "1970..9999: \"%.*s\"", ts, QUOTE(s, n), s);
        pt->has_time = true;
        return TELEMETRY_OK;
    }
    case json_type_int:
        if (json_object_get_int64(v) == INT64_MIN || json_object_get_uint64(v) == UINT64_MAX)
            return BAD(j->err, j->errlen, "\"%s\" is out of range", ts);
        break;
    case json_type_double:
        if (!isfinite(json_object_get_double(v)))
            return BAD(j->err, j->errlen, "\"%s\" is not a finite number", ts);
        break;
    default:
        return BAD(j->err, j->errlen, "\"%s\" is neither a number nor an RFC 3339 time", ts);
    }
    /* Numbers: json-c keeps the text of a parsed double, so the conversion
     * is exact from the digits the device sent. */
    const char *text = json_object_to_json_string_ext(v, JSON_C_TO_STRING_PLAIN);
    tele__dec d;
    if (!text)
        return tele__fail(TELEMETRY_ENOMEM, j->err, j->errlen, "out of memory");
    if (!tele__dec_parse(text, &d))
        return BAD(j->err, j->errlen, "\"%s\" is not a usable number: %.*s", ts,
                   QUOTE(text, strlen(text)), text);
    if (d.neg && d.digits != 0)
        return BAD(j->err, j->errlen, "\"%s\" is negative", ts);
    if (!tele__dec_to_ms(&d, unit, &pt->device_ms))
        return BAD(j->err, j->errlen, "\"%s\" is after 9999-12-31 in its unit: %.*s", ts,
                   QUOTE(text, strlen(text)), text);
    pt->has_time = true;
    return TELEMETRY_OK;
}

/* Append name to the flattened key of length base: "base_name". */
static int tele__json_key(tele__json *j, size_t base, const char *name, size_t nlen,
                          size_t *keylen)
{
    if (nlen == 0)
        return BAD(j->err, j->errlen, "empty member name%s%.*s%s", base ? " in \"" : "",
                   QUOTE(j->key, base), j->key, base ? "\"" : "");
    size_t len = base + (base ? 1 : 0) + nlen;
    if (len > TELEMETRY_MAX_KEY)
        return BAD(j->err, j->errlen, "field name longer than %d bytes: \"%.*s...\"",
                   TELEMETRY_MAX_KEY, QUOTE(j->key, base), j->key);
    if (base)
        j->key[base] = '_';
    memcpy(j->key + len - nlen, name, nlen);
    j->key[len] = '\0';
    *keylen = len;
    return TELEMETRY_OK;
}

/* Key and '=' of the next field; checks the limits. */
static int tele__json_field_key(tele__json *j, size_t keylen)
{
    tele__buf *b = j->out;
    if (j->nfields == TELEMETRY_MAX_FIELDS)
        return BAD(j->err, j->errlen, "more than %d fields", TELEMETRY_MAX_FIELDS);
    if (tele__reserved_key(j->key, keylen))
        return BAD(j->err, j->errlen, "field name \"%s\" is reserved by InfluxDB", j->key);
    if (j->nfields)
        tele__putc(b, ',');
    size_t off = b->len;
    tele__put_name(b, j->key, keylen, ESC_KEY);
    if (b->oom)
        return tele__fail(TELEMETRY_ENOMEM, j->err, j->errlen, "out of memory");
    size_t len = b->len - off;
    for (size_t i = 0; i < j->nfields; i++) {
        if (j->key_len[i] == len && memcmp(b->p + j->key_off[i], b->p + off, len) == 0)
            return BAD(j->err, j->errlen, "two fields named \"%.*s\" after flattening",
                       QUOTE(b->p + off, len), b->p + off);
    }
    j->key_off[j->nfields] = off;
    j->key_len[j->nfields] = len;
    j->nfields++;
    tele__putc(b, '=');
    return TELEMETRY_OK;
}

static int tele__json_object(tele__json *j, json_object *o, size_t base, bool top);

static int tele__json_value(tele__json *j, json_object *v, size_t keylen)
{
    int rc;
    switch (json_object_get_type(v)) {
    case json_type_null:
        return TELEMETRY_OK;
    case json_type_object:
        return tele__json_object(j, v, keylen, false);
    case json_type_array: {
        size_t n = json_object_array_length(v);
        for (size_t i = 0; i < n; i++) {
            char idx[24];
            size_t ilen = (size_t)snprintf(idx, sizeof(idx), "%zu", i);
            size_t child;
            if ((rc = tele__json_key(j, keylen, idx, ilen, &child)) ||
                (rc = tele__json_value(j, json_object_array_get_idx(v, i), child)))
                return rc;
            j->key[keylen] = '\0';
        }
        return TELEMETRY_OK;
    }
    case json_type_boolean:
        if ((rc = tele__json_field_key(j, keylen)))
            return rc;
        if (json_object_get_boolean(v))
            tele__put(j->out, "true", 4);
        else
            tele__put(j->out, "false", 5);
        break;
    case json_type_int:
        if (json_object_get_int64(v) == INT64_MIN || json_object_get_uint64(v) == UINT64_MAX)
            return BAD(j->err, j->errlen, "\"%.*s\": number out of range",
                       QUOTE(j->key, keylen), j->key);
        if ((rc = tele__json_field_key(j, keylen)))
            return rc;
        tele__put_double(j->out, json_object_get_double(v));
        break;
    case json_type_double: {
        double d = json_object_get_double(v);
        if (!isfinite(d))
            return BAD(j->err, j->errlen, "\"%.*s\": not a finite number",
                       QUOTE(j->key, keylen), j->key);
        if ((rc = tele__json_field_key(j, keylen)))
            return rc;
        tele__put_double(j->out, d);
        break;
    }
    case json_type_string: {
        const char *s = json_object_get_string(v);
        size_t n = (size_t)json_object_get_string_len(v);
        if (!mqtt_utf8_valid((const uint8_t *)s, n))
            return BAD(j->err, j->errlen, "\"%.*s\": string holds U+0000 or invalid UTF-8",
                       QUOTE(j->key, keylen), j->key);
        if ((rc = tele__json_field_key(j, keylen)))
            return rc;
        tele__put_string_value(j->out, s, n);
        break;
    }
    }
    return j->out->oom ? tele__fail(TELEMETRY_ENOMEM, j->err, j->errlen, "out of memory")
                       : TELEMETRY_OK;
}

static int tele__json_object(tele__json *j, json_object *o, size_t base, bool top)
{
    struct json_object_iterator it = json_object_iter_begin(o);
    struct json_object_iterator end = json_object_iter_end(o);
    for (; !json_object_iter_equal(&it, &end); json_object_iter_next(&it)) {
        const char *name = json_object_iter_peek_name(&it);
        if (top && strcmp(name, j->ts_field) == 0)
            continue;
        size_t keylen;
        int rc = tele__json_key(j, base, name, strlen(name), &keylen);
        if (rc == TELEMETRY_OK)
            rc = tele__json_value(j, json_object_iter_peek_value(&it), keylen);
        if (rc)
            return rc;
        j->key[base] = '\0';
    }
    return TELEMETRY_OK;
}

static bool tele__blank(char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

static int tele__from_json(const telemetry_rules *r, const telemetry_input *in, tele__buf *out,
                           telemetry_point *pt, char *err, size_t errlen)
{
    const char *s = (const char *)in->payload;
    size_t n = in->payload_len;
    if (n > INT_MAX)
        return BAD(err, errlen, "payload too large for the JSON parser");
    /* json-c's depth counts one more than the containers it allows. */
    json_tokener *tok = json_tokener_new_ex(TELEMETRY_JSON_DEPTH + 1);
    if (!tok)
        return tele__fail(TELEMETRY_ENOMEM, err, errlen, "out of memory");
    json_tokener_set_flags(tok, JSON_TOKENER_STRICT | JSON_TOKENER_VALIDATE_UTF8);

    int rc = TELEMETRY_OK;
    tele__json jctx, *j = &jctx; /* about 4 KiB, like the line parser's tables */
    json_object *root = json_tokener_parse_ex(tok, s, (int)n);
    enum json_tokener_error jerr = json_tokener_get_error(tok);
    size_t at = json_tokener_get_parse_end(tok);
    if (jerr == json_tokener_continue) {
        /* A bare number has no end of its own; the NUL ends it. */
        root = json_tokener_parse_ex(tok, "", 1);
        jerr = json_tokener_get_error(tok);
        at = n;
    }
    if (jerr == json_tokener_error_depth) {
        rc = BAD(err, errlen, "JSON nested deeper than %d levels", TELEMETRY_JSON_DEPTH);
        goto done;
    }
    if (jerr != json_tokener_success || !root) {
        rc = BAD(err, errlen, "not JSON: %s at byte %zu", json_tokener_error_desc(jerr), at);
        goto done;
    }
    if (!json_object_is_type(root, json_type_object)) {
        rc = BAD(err, errlen, "JSON payload is not an object");
        goto done;
    }

    j->out = out;
    j->err = err;
    j->errlen = errlen;
    j->ts_field = r->ts_field && r->ts_field[0] ? r->ts_field : "ts";
    j->key[0] = '\0';
    j->nfields = 0;

    json_object *ts;
    if (json_object_object_get_ex(root, j->ts_field, &ts) &&
        (rc = tele__json_ts(j, ts, r->json_unit, pt)))
        goto done;

    const char *topic = in->topic;
    const char *slash = memchr(topic, '/', in->topic_len);
    size_t level = slash ? (size_t)(slash - topic) : in->topic_len;
    if (level == 0)
        tele__put_head(out, fallback_measurement, sizeof(fallback_measurement) - 1, false, in);
    else
        tele__put_head(out, topic, level, false, in);
    tele__putc(out, ' ');
    if ((rc = tele__json_object(j, root, 0, true)))
        goto done;
    if (j->nfields == 0) {
        rc = BAD(err, errlen, "no fields: the JSON object has no member but \"%s\" and nulls",
                 j->ts_field);
        goto done;
    }
    if (out->oom)
        rc = tele__fail(TELEMETRY_ENOMEM, err, errlen, "out of memory");
done:
    json_object_put(root);
    json_tokener_free(tok);
    return rc;
}

/* ---- line protocol ------------------------------------------------------ */

typedef struct tele__span {
    const char *p;
    size_t n;
} tele__span;

typedef struct tele__line {
    const char *s, *end;
    char *err;
    size_t errlen;
} tele__line;

/* Up to the first unescaped byte of stop (or the end). false: the line
 * ends inside an escape. */
static bool tele__scan(const tele__line *l, const char **pp, const char *stop)
{
    const char *p = *pp;
    while (p < l->end && !strchr(stop, *p)) {
        if (*p == '\\') {
            if (l->end - p < 2) {
                *pp = p;
                return false;
            }
            p += 2;
        } else {
            p++;
        }
    }
    *pp = p;
    return true;
}

static bool tele__span_is(tele__span k, const char *word)
{
    return strlen(word) == k.n && memcmp(k.p, word, k.n) == 0;
}

static bool tele__span_eq(tele__span a, tele__span b)
{
    return a.n == b.n && memcmp(a.p, b.p, a.n) == 0;
}

static int tele__check_key(const tele__line *l, tele__span k, const char *what)
{
    if (k.n == 0)
        return BAD(l->err, l->errlen, "line protocol: empty %s key", what);
    if (k.n > TELEMETRY_MAX_KEY)
        return BAD(l->err, l->errlen, "line protocol: %s key longer than %d bytes", what,
                   TELEMETRY_MAX_KEY);
    if (tele__reserved_key(k.p, k.n))
        return BAD(l->err, l->errlen, "line protocol: %s key \"%.*s\" is reserved by InfluxDB",
                   what, (int)k.n, k.p);
    return TELEMETRY_OK;
}

static bool tele__all_digits(const char *p, const char *e)
{
    if (p == e)
        return false;
    for (; p < e; p++) {
        if (*p < '0' || *p > '9')
            return false;
    }
    return true;
}

/* A field value that is not a string: boolean, integer, unsigned or float. */
static bool tele__plain_value(const char *p, size_t n)
{
    static const char *const bools[] = {"t", "T", "true", "True", "TRUE",
                                        "f", "F", "false", "False", "FALSE"};
    for (size_t i = 0; i < sizeof(bools) / sizeof(bools[0]); i++) {
        if (strlen(bools[i]) == n && memcmp(bools[i], p, n) == 0)
            return true;
    }
    char text[64];
    if (n == 0 || n >= sizeof(text))
        return false;
    memcpy(text, p, n);
    text[n] = '\0';
    char *e;
    errno = 0;
    if (text[n - 1] == 'i') {
        const char *digits = text[0] == '-' ? text + 1 : text;
        if (!tele__all_digits(digits, text + n - 1))
            return false;
        (void)strtoll(text, &e, 10);
        return errno == 0;
    }
    if (text[n - 1] == 'u') {
        if (!tele__all_digits(text, text + n - 1))
            return false;
        (void)strtoull(text, &e, 10);
        return errno == 0;
    }
    /* -?(digits[.digits]|.digits)([eE][+-]?digits)? */
    const char *q = text + (text[0] == '-');
    const char *int_start = q;
    while (*q >= '0' && *q <= '9')
        q++;
    bool any = q > int_start;
    if (*q == '.') {
        const char *frac = ++q;
        while (*q >= '0' && *q <= '9')
            q++;
        any = any || q > frac;
    }
    if (!any)
        return false;
    if (*q == 'e' || *q == 'E') {
        q++;
        if (*q == '+' || *q == '-')
            q++;
        const char *exp = q;
        while (*q >= '0' && *q <= '9')
            q++;
        if (q == exp)
            return false;
    }
    if (*q != '\0')
        return false;
    return isfinite(strtod(text, &e));
}

static int tele__line_time(const tele__line *l, const char *p, const char *e,
                           enum telemetry_unit unit, telemetry_point *pt)
{
    if (*p == '-')
        return BAD(l->err, l->errlen, "line protocol: negative timestamp");
    if (!tele__all_digits(p, e))
        return BAD(l->err, l->errlen, "line protocol: timestamp is not an integer: \"%.*s\"",
                   QUOTE(p, (size_t)(e - p)), p);
    int64_t v = 0;
    for (; p < e; p++) {
        if (v > (INT64_MAX - (*p - '0')) / 10)
            return BAD(l->err, l->errlen, "line protocol: timestamp out of range");
        v = v * 10 + (*p - '0');
    }
    switch (unit) {
    case TELEMETRY_S:
        v = v > TELEMETRY_MAX_MS / 1000 ? TELEMETRY_MAX_MS + 1 : v * 1000;
        break;
    case TELEMETRY_MS:
        break;
    case TELEMETRY_US:
        v /= 1000;
        break;
    default: /* AUTO and NS: InfluxDB's default precision */
        v /= 1000000;
        break;
    }
    if (v > TELEMETRY_MAX_MS)
        return BAD(l->err, l->errlen, "line protocol: timestamp after 9999-12-31");
    pt->has_time = true;
    pt->device_ms = v;
    return TELEMETRY_OK;
}

static int tele__from_line(const telemetry_rules *r, const telemetry_input *in, tele__buf *out,
                           telemetry_point *pt, char *err, size_t errlen)
{
    tele__line l = {(const char *)in->payload, (const char *)in->payload + in->payload_len,
                    err, errlen};
    if (l.end > l.s && l.end[-1] == '\n') {
        l.end--;
        if (l.end > l.s && l.end[-1] == '\r')
            l.end--;
    }
    if (memchr(l.s, '\n', (size_t)(l.end - l.s)) || memchr(l.s, '\r', (size_t)(l.end - l.s)))
        return BAD(err, errlen, "line protocol: more than one line; send one point per message");
    const char *p = l.s;
    while (p < l.end && *p == ' ')
        p++;
    while (l.end > p && l.end[-1] == ' ' && (l.end - p < 2 || l.end[-2] != '\\'))
        l.end--;
    if (p == l.end)
        return BAD(err, errlen, "line protocol: empty line");
    if (*p == '#')
        return BAD(err, errlen, "line protocol: a comment, not a point");

    /* measurement */
    tele__span meas = {p, 0};
    if (!tele__scan(&l, &p, ", "))
        return BAD(err, errlen, "line protocol: line ends in a backslash");
    meas.n = (size_t)(p - meas.p);
    if (meas.n == 0)
        return BAD(err, errlen, "line protocol: no measurement");

    /* tags: [tag_start, value end) as written, and the key */
    tele__span tag[TELEMETRY_MAX_TAGS], tag_key[TELEMETRY_MAX_TAGS];
    size_t ntags = 0;
    while (p < l.end && *p == ',') {
        const char *k = ++p;
        if (!tele__scan(&l, &p, "=, "))
            return BAD(err, errlen, "line protocol: line ends in a backslash");
        if (p == k)
            return BAD(err, errlen, "line protocol: empty tag key");
        if (p == l.end || *p != '=')
            return BAD(err, errlen, "line protocol: tag \"%.*s\" without '='",
                       QUOTE(k, (size_t)(p - k)), k);
        tele__span key = {k, (size_t)(p - k)};
        int rc = tele__check_key(&l, key, "tag");
        if (rc)
            return rc;
        const char *v = ++p;
        if (!tele__scan(&l, &p, "=, "))
            return BAD(err, errlen, "line protocol: line ends in a backslash");
        if (p < l.end && *p == '=')
            return BAD(err, errlen, "line protocol: unescaped '=' in the value of tag \"%.*s\"",
                       QUOTE(key.p, key.n), key.p);
        if (p == v)
            return BAD(err, errlen, "line protocol: tag \"%.*s\" without value",
                       QUOTE(key.p, key.n), key.p);
        if (ntags == TELEMETRY_MAX_TAGS)
            return BAD(err, errlen, "line protocol: more than %d tags", TELEMETRY_MAX_TAGS);
        for (size_t i = 0; i < ntags; i++) {
            if (tele__span_eq(tag_key[i], key))
                return BAD(err, errlen, "line protocol: tag \"%.*s\" given twice",
                           QUOTE(key.p, key.n), key.p);
        }
        tag_key[ntags] = key;
        tag[ntags++] = (tele__span){k, (size_t)(p - k)};
    }
    if (p == l.end)
        return BAD(err, errlen, "line protocol: no fields");
    while (p < l.end && *p == ' ')
        p++;

    /* fields */
    tele__span field_key[TELEMETRY_MAX_FIELDS];
    size_t nfields = 0;
    const char *fields = p;
    for (;;) {
        const char *k = p;
        if (!tele__scan(&l, &p, "=, "))
            return BAD(err, errlen, "line protocol: line ends in a backslash");
        if (p == l.end || *p != '=')
            return BAD(err, errlen, "line protocol: field \"%.*s\" without value",
                       QUOTE(k, (size_t)(p - k)), k);
        tele__span key = {k, (size_t)(p - k)};
        int rc = tele__check_key(&l, key, "field");
        if (rc)
            return rc;
        const char *v = ++p;
        if (p < l.end && *p == '"') {
            for (p++;; p++) {
                if (p >= l.end)
                    return BAD(err, errlen, "line protocol: unbalanced quotes in field \"%.*s\"",
                               QUOTE(key.p, key.n), key.p);
                if (*p == '\\')
                    p++;
                else if (*p == '"')
                    break;
            }
            p++;
            if (p < l.end && *p != ',' && *p != ' ')
                return BAD(err, errlen, "line protocol: text after the string of field \"%.*s\"",
                           QUOTE(key.p, key.n), key.p);
        } else {
            while (p < l.end && *p != ',' && *p != ' ')
                p++;
            if (!tele__plain_value(v, (size_t)(p - v)))
                return BAD(err, errlen, "line protocol: field \"%.*s\" has a bad value \"%.*s\"",
                           QUOTE(key.p, key.n), key.p, QUOTE(v, (size_t)(p - v)), v);
        }
        if (nfields == TELEMETRY_MAX_FIELDS)
            return BAD(err, errlen, "line protocol: more than %d fields", TELEMETRY_MAX_FIELDS);
        for (size_t i = 0; i < nfields; i++) {
            if (tele__span_eq(field_key[i], key))
                return BAD(err, errlen, "line protocol: field \"%.*s\" given twice",
                           QUOTE(key.p, key.n), key.p);
        }
        field_key[nfields++] = key;
        if (p < l.end && *p == ',') {
            p++;
            continue;
        }
        break;
    }
    tele__span field_set = {fields, (size_t)(p - fields)};

    /* timestamp */
    while (p < l.end && *p == ' ')
        p++;
    if (p < l.end) {
        const char *t = p;
        while (p < l.end && *p != ' ')
            p++;
        int rc = tele__line_time(&l, t, p, r->line_unit, pt);
        if (rc)
            return rc;
        if (p != l.end)
            return BAD(err, errlen, "line protocol: text after the timestamp");
    }

    tele__put_head(out, meas.p, meas.n, true, in);
    for (size_t i = 0; i < ntags; i++) {
        if (tele__span_is(tag_key[i], "company") || tele__span_is(tag_key[i], "device") ||
            tele__span_is(tag_key[i], "topic"))
            continue;
        tele__putc(out, ',');
        tele__put(out, tag[i].p, tag[i].n);
    }
    tele__putc(out, ' ');
    tele__put(out, field_set.p, field_set.n);
    return out->oom ? tele__fail(TELEMETRY_ENOMEM, err, errlen, "out of memory") : TELEMETRY_OK;
}

/* ---- the point ---------------------------------------------------------- */

int telemetry_make_point(const telemetry_rules *r, const telemetry_input *in,
                         telemetry_point *out, char *err, size_t errlen)
{
    static const telemetry_rules defaults = {0};
    if (!r)
        r = &defaults;
    *out = (telemetry_point){0};
    if (err && errlen)
        err[0] = '\0';
    if (!in->company || !in->company[0])
        return BAD(err, errlen, "no company to tag the point with");
    if (!in->device || !in->device[0])
        return BAD(err, errlen, "no device to tag the point with");
    if (!in->topic || in->topic_len == 0)
        return BAD(err, errlen, "no topic");
    if (in->payload_len == 0)
        return BAD(err, errlen, "empty payload");
    if (!mqtt_utf8_valid(in->payload, in->payload_len))
        return BAD(err, errlen, "payload is not valid UTF-8 (or holds U+0000)");

    enum telemetry_format f = r->format;
    if (f == TELEMETRY_AUTO) {
        size_t i = 0;
        while (i < in->payload_len && tele__blank((char)in->payload[i]))
            i++;
        f = i < in->payload_len && (in->payload[i] == '{' || in->payload[i] == '[')
                ? TELEMETRY_JSON
                : TELEMETRY_LINE;
    }
    tele__buf b = {0};
    telemetry_point pt = {0};
    int rc = f == TELEMETRY_JSON ? tele__from_json(r, in, &b, &pt, err, errlen)
                                 : tele__from_line(r, in, &b, &pt, err, errlen);
    if (rc) {
        gmq_free(b.p);
        return rc;
    }
    pt.line = b.p;
    pt.line_len = b.len;
    *out = pt;
    return TELEMETRY_OK;
}

void telemetry_point_free(telemetry_point *p)
{
    if (!p)
        return;
    gmq_free(p->line);
    *p = (telemetry_point){0};
}

/* ---- clock correction ----------------------------------------------------
 *
 * A sample is s = receive - device for one message. With a true offset T
 * (device clock + T = broker clock) and a one-way delay D >= 0 (network,
 * queues, backlog), s = T + D: every sample is an upper bound of T, and
 * the smallest sample of a window is the best bound, off by the smallest
 * delay seen. Backlog messages have large D and never pull the minimum.
 *
 * The window is TELEMETRY_CLOCK_BUCKETS buckets of bucket_ms = window/6
 * of receive time; a bucket holds the smallest sample and the first and
 * last receive time seen in it. At time now the live buckets are the
 * current one and the five before it (5/6 to 6/6 of a window of history);
 * older ones are reused, so old samples expire.
 *
 * The prior: an offset from before. telemetry_clock_seed sets it (the
 * persisted offset); observe also sets it to the window's minimum whenever
 * the window is established (its samples span at least a third of the
 * window), so a device that goes quiet and comes back keeps its last good
 * offset. And a sample below the prior lowers it at once (it is a better
 * bound, whatever else happens).
 *
 * The offset: the live minimum when the live samples span at least a third
 * of the window, or when there is no prior, or when it is below the prior;
 * else the prior. So a gateway that reconnects after weeks and flushes its
 * backlog first keeps its prior offset until live messages lower the
 * minimum or a third of a window of samples has been seen.
 *
 * Limits: the accuracy is the smallest one-way delay among the live
 * messages of the window. A device whose first-ever messages are backlog
 * (no prior) gets an offset too large until live data arrives; so does a
 * prior-less device after a backlog flush lasting more than a third of a
 * window with no live message in it. A device clock that jumps backwards
 * (samples grow) is followed once the samples before the jump leave the
 * window, within one window; one that jumps forwards (samples shrink), at
 * once. Negative offsets (device clock ahead) are ordinary. A device that
 * sends less than once per third of a window never establishes a window: it
 * keeps a seeded prior (lowered by smaller samples), or, without one, the
 * live minimum.
 */

static int64_t tele__floor_div(int64_t a, int64_t b)
{
    int64_t q = a / b;
    return (a % b != 0 && (a < 0) != (b < 0)) ? q - 1 : q;
}

static size_t tele__slot(int64_t index)
{
    int64_t m = index % TELEMETRY_CLOCK_BUCKETS;
    return (size_t)(m < 0 ? m + TELEMETRY_CLOCK_BUCKETS : m);
}

typedef struct tele__fresh {
    bool any;
    int64_t min, first, last;
} tele__fresh;

static tele__fresh tele__live(const telemetry_clock *c, int64_t now_ms)
{
    tele__fresh f = {0};
    if (c->bucket_ms <= 0)
        return f; /* never initialised: no samples */
    int64_t oldest = (tele__floor_div(now_ms, c->bucket_ms) - (TELEMETRY_CLOCK_BUCKETS - 1)) *
                     c->bucket_ms;
    for (size_t i = 0; i < TELEMETRY_CLOCK_BUCKETS; i++) {
        if (!c->bucket_used[i] || c->bucket_start[i] < oldest)
            continue;
        if (!f.any) {
            f = (tele__fresh){true, c->bucket_min[i], c->bucket_first[i], c->bucket_last[i]};
            continue;
        }
        if (c->bucket_min[i] < f.min)
            f.min = c->bucket_min[i];
        if (c->bucket_first[i] < f.first)
            f.first = c->bucket_first[i];
        if (c->bucket_last[i] > f.last)
            f.last = c->bucket_last[i];
    }
    return f;
}

static bool tele__established(const telemetry_clock *c, const tele__fresh *f)
{
    return f->any && (f->last - f->first) * 3 >= c->window_ms;
}

void telemetry_clock_init(telemetry_clock *c, int64_t window_ms)
{
    /* Far beyond any useful window; keeps the arithmetic in range. */
    const int64_t max_window = INT64_C(366) * 24 * 3600 * 1000;
    if (window_ms <= 0)
        window_ms = TELEMETRY_CLOCK_WINDOW_MS;
    if (window_ms > max_window)
        window_ms = max_window;
    *c = (telemetry_clock){0};
    c->window_ms = window_ms;
    c->bucket_ms = (window_ms + TELEMETRY_CLOCK_BUCKETS - 1) / TELEMETRY_CLOCK_BUCKETS;
}

void telemetry_clock_seed(telemetry_clock *c, int64_t offset_ms)
{
    c->have_prior = true;
    c->prior_ms = offset_ms;
}

/* Into the bucket of its receive time; false when that bucket has already
 * been reused for a later one (the sample is older than the window). */
static bool tele__insert(telemetry_clock *c, int64_t receive_ms, int64_t s)
{
    int64_t index = tele__floor_div(receive_ms, c->bucket_ms);
    int64_t start = index * c->bucket_ms;
    size_t i = tele__slot(index);
    if (!c->bucket_used[i] || c->bucket_start[i] < start) {
        c->bucket_used[i] = true;
        c->bucket_start[i] = start;
        c->bucket_min[i] = s;
        c->bucket_first[i] = c->bucket_last[i] = receive_ms;
        return true;
    }
    if (c->bucket_start[i] > start)
        return false;
    if (s < c->bucket_min[i])
        c->bucket_min[i] = s;
    if (receive_ms < c->bucket_first[i])
        c->bucket_first[i] = receive_ms;
    if (receive_ms > c->bucket_last[i])
        c->bucket_last[i] = receive_ms;
    return true;
}

void telemetry_clock_observe(telemetry_clock *c, int64_t receive_ms, int64_t device_ms)
{
    int64_t s;
    if (c->bucket_ms <= 0 || __builtin_sub_overflow(receive_ms, device_ms, &s))
        return;
    if (!tele__insert(c, receive_ms, s))
        return;
    if (c->have_prior && s < c->prior_ms)
        c->prior_ms = s;
    /* An established window becomes the prior, kept once the window has
     * moved on (a quiet device, a backlog after a gap). */
    tele__fresh f = tele__live(c, receive_ms);
    if (tele__established(c, &f)) {
        c->have_prior = true;
        c->prior_ms = f.min;
    }
}

bool telemetry_clock_offset(const telemetry_clock *c, int64_t now_ms, int64_t *offset_ms)
{
    tele__fresh f = tele__live(c, now_ms);
    if (f.any && (!c->have_prior || f.min < c->prior_ms || tele__established(c, &f))) {
        *offset_ms = f.min;
        return true;
    }
    if (c->have_prior) {
        *offset_ms = c->prior_ms;
        return true;
    }
    return false;
}
