/*
 * sink_influx.c - the InfluxDB 1.x sink: line protocol over HTTP
 * (POST /write?db=..&precision=ms) with libcurl.
 *
 * One easy handle lives as long as the sink, so its connection is kept
 * alive between writes; libcurl reconnects by itself when the server closed
 * it. The handle is set up once; each write only sets the body. Ownership:
 * the sink owns the handle, the header list and the URL; the body is the
 * caller's and is not copied (CURLOPT_POSTFIELDS).
 */
#include <curl/curl.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "broker/alloc.h"
#include "broker/log.h"
#include "broker/readfile.h"
#include "store/sink.h"

#define INFLUX_DEFAULT_TIMEOUT_MS 10000L
/* What we keep of a response body: enough for InfluxDB's error message. */
#define INFLUX_BODY_KEEP 1024

typedef struct sink_influx {
    sink base;
    CURL *curl;
    struct curl_slist *headers;
    char *url;
    char *where; /* the URL without credentials, for messages */
    char curl_err[CURL_ERROR_SIZE];
    /* The response being received. */
    char body[INFLUX_BODY_KEEP + 1];
    size_t body_len;
    char header_err[INFLUX_BODY_KEEP + 1]; /* X-Influxdb-Error */
} sink_influx;

static size_t influx__on_body(char *data, size_t size, size_t nmemb, void *arg)
{
    sink_influx *s = arg;
    size_t n = size * nmemb;
    size_t room = INFLUX_BODY_KEEP - s->body_len;
    size_t take = n < room ? n : room;
    memcpy(s->body + s->body_len, data, take);
    s->body_len += take;
    s->body[s->body_len] = '\0';
    return n; /* the rest is dropped, not an error */
}

static size_t influx__on_header(char *data, size_t size, size_t nmemb, void *arg)
{
    sink_influx *s = arg;
    size_t n = size * nmemb;
    static const char name[] = "x-influxdb-error:";
    if (n > sizeof(name) - 1 && strncasecmp(data, name, sizeof(name) - 1) == 0) {
        const char *v = data + sizeof(name) - 1;
        size_t vlen = n - (sizeof(name) - 1);
        while (vlen && (*v == ' ' || *v == '\t')) {
            v++;
            vlen--;
        }
        while (vlen && (v[vlen - 1] == '\r' || v[vlen - 1] == '\n' || v[vlen - 1] == ' '))
            vlen--;
        if (vlen > INFLUX_BODY_KEEP)
            vlen = INFLUX_BODY_KEEP;
        memcpy(s->header_err, v, vlen);
        s->header_err[vlen] = '\0';
    }
    return n;
}

/* The server's reason: the X-Influxdb-Error header, else the body (for a
 * proxy's answer, say), on one line. */
static void influx__server_message(const sink_influx *s, char *out, size_t outlen)
{
    const char *m = s->header_err[0] ? s->header_err : s->body;
    size_t i = 0;
    if (!outlen)
        return;
    for (; *m && i + 1 < outlen; m++)
        out[i++] = (*m == '\n' || *m == '\r' || *m == '\t') ? ' ' : *m;
    while (i && out[i - 1] == ' ')
        i--;
    out[i] = '\0';
}

static enum sink_result influx__classify(long status)
{
    if (status >= 200 && status < 300)
        return SINK_OK;
    /* Only these say something about the points themselves. */
    if (status == 400 || status == 413 || status == 422)
        return SINK_REJECT;
    return SINK_RETRY;
}

static enum sink_result influx__write(sink *base, const char *body, size_t len, char *err,
                                      size_t errlen)
{
    sink_influx *s = (sink_influx *)base;
    s->body_len = 0;
    s->body[0] = '\0';
    s->header_err[0] = '\0';
    s->curl_err[0] = '\0';
    curl_easy_setopt(s->curl, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
    curl_easy_setopt(s->curl, CURLOPT_POSTFIELDS, len ? body : "");
    CURLcode rc = curl_easy_perform(s->curl);
    if (rc != CURLE_OK) {
        gmq_errf(err, errlen, "%s: %s", s->where,
                    s->curl_err[0] ? s->curl_err : curl_easy_strerror(rc));
        return SINK_RETRY;
    }
    long status = 0;
    curl_easy_getinfo(s->curl, CURLINFO_RESPONSE_CODE, &status);
    enum sink_result r = influx__classify(status);
    if (r != SINK_OK) {
        char msg[INFLUX_BODY_KEEP + 1];
        influx__server_message(s, msg, sizeof(msg));
        gmq_errf(err, errlen, "HTTP %ld: %s", status, msg[0] ? msg : "(no message)");
    }
    return r;
}

static void influx__close(sink *base)
{
    sink_influx *s = (sink_influx *)base;
    if (!s)
        return;
    if (s->curl)
        curl_easy_cleanup(s->curl);
    curl_slist_free_all(s->headers);
    gmq_free(s->url);
    gmq_free(s->where);
    gmq_free(s);
    curl_global_cleanup();
}

static const sink_ops influx__ops = {
    .name = "influxdb",
    .write = influx__write,
    .close = influx__close,
};

/* Check the URL (http or https with a host) and build the write URL, and
 * *where: the same without user and password, for messages. */
static char *influx__write_url(CURL *curl, const char *url, const char *db, char **where,
                               char *err, size_t errlen)
{
    char *out = NULL, *scheme = NULL, *host = NULL, *edb = NULL, *bare = NULL;
    CURLU *u = curl_url();
    if (!u) {
        gmq_errf(err, errlen, "no memory");
        goto done;
    }
    if (curl_url_set(u, CURLUPART_URL, url, 0) != CURLUE_OK ||
        curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK ||
        curl_url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK || !host[0]) {
        gmq_errf(err, errlen, "influxdb: bad URL \"%s\"", url);
        goto done;
    }
    if (strcmp(scheme, "http") != 0 && strcmp(scheme, "https") != 0) {
        gmq_errf(err, errlen, "influxdb: URL \"%s\": the scheme must be http or https", url);
        goto done;
    }
    if (strchr(url, '?') || strchr(url, '#')) {
        gmq_errf(err, errlen, "influxdb: URL \"%s\" must not have a query or fragment", url);
        goto done;
    }
    edb = curl_easy_escape(curl, db, 0);
    if (curl_url_set(u, CURLUPART_USER, NULL, 0) != CURLUE_OK ||
        curl_url_set(u, CURLUPART_PASSWORD, NULL, 0) != CURLUE_OK ||
        curl_url_get(u, CURLUPART_URL, &bare, 0) != CURLUE_OK ||
        !(*where = gmq_strdup(bare)) || !edb) {
        gmq_errf(err, errlen, "no memory");
        goto done;
    }
    size_t ulen = strlen(url);
    while (ulen && url[ulen - 1] == '/')
        ulen--;
    size_t n = ulen + strlen(edb) + sizeof("/write?db=&precision=ms");
    out = gmq_malloc(n);
    if (!out) {
        gmq_errf(err, errlen, "no memory");
        goto done;
    }
    snprintf(out, n, "%.*s/write?db=%s&precision=ms", (int)ulen, url, edb);
done:
    curl_free(bare);
    curl_free(edb);
    curl_free(host);
    curl_free(scheme);
    curl_url_cleanup(u);
    return out;
}

sink *sink_influx_open(const char *url, const char *db, long timeout_ms, char *err,
                       size_t errlen)
{
    if (!url || !db || !db[0]) {
        gmq_errf(err, errlen, "influxdb: a URL and a database name are needed");
        return NULL;
    }
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        gmq_errf(err, errlen, "influxdb: cannot initialise libcurl");
        return NULL;
    }
    sink_influx *s = gmq_calloc(1, sizeof(*s));
    if (!s) {
        gmq_errf(err, errlen, "no memory");
        curl_global_cleanup();
        return NULL;
    }
    s->base.ops = &influx__ops;
    /* From here on influx__close undoes everything, the global init too. */
    s->curl = curl_easy_init();
    if (!s->curl) {
        gmq_errf(err, errlen, "influxdb: cannot create a libcurl handle");
        goto fail;
    }
    s->url = influx__write_url(s->curl, url, db, &s->where, err, errlen);
    if (!s->url)
        goto fail;
    struct curl_slist *h = curl_slist_append(NULL, "Content-Type: text/plain; charset=utf-8");
    if (h) {
        s->headers = h;
        /* No "Expect: 100-continue" round trip before large bodies. */
        h = curl_slist_append(s->headers, "Expect:");
    }
    if (!h) {
        gmq_errf(err, errlen, "no memory");
        goto fail;
    }
    if (timeout_ms <= 0)
        timeout_ms = INFLUX_DEFAULT_TIMEOUT_MS;
    CURL *c = s->curl;
    int bad = 0;
    bad |= curl_easy_setopt(c, CURLOPT_URL, s->url) != CURLE_OK;
    bad |= curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https") != CURLE_OK;
    bad |= curl_easy_setopt(c, CURLOPT_HTTPHEADER, s->headers) != CURLE_OK;
    bad |= curl_easy_setopt(c, CURLOPT_POST, 1L) != CURLE_OK;
    bad |= curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L) != CURLE_OK; /* we are threaded */
    bad |= curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, timeout_ms) != CURLE_OK;
    bad |= curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, timeout_ms) != CURLE_OK;
    bad |= curl_easy_setopt(c, CURLOPT_TCP_KEEPALIVE, 1L) != CURLE_OK;
    bad |= curl_easy_setopt(c, CURLOPT_TCP_NODELAY, 1L) != CURLE_OK;
    bad |= curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L) != CURLE_OK;
    bad |= curl_easy_setopt(c, CURLOPT_ERRORBUFFER, s->curl_err) != CURLE_OK;
    bad |= curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, influx__on_body) != CURLE_OK;
    bad |= curl_easy_setopt(c, CURLOPT_WRITEDATA, s) != CURLE_OK;
    bad |= curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, influx__on_header) != CURLE_OK;
    bad |= curl_easy_setopt(c, CURLOPT_HEADERDATA, s) != CURLE_OK;
    bad |= curl_easy_setopt(c, CURLOPT_USERAGENT, "gatemq") != CURLE_OK;
    if (bad) {
        gmq_errf(err, errlen, "influxdb: this libcurl lacks a needed option");
        goto fail;
    }
    return &s->base;
fail:
    influx__close(&s->base);
    return NULL;
}
