/*
 * passwd.c - mosquitto_passwd "$7$" hashes, password files, atomic edits.
 * See passwd.h for the format and the contracts.
 */
#include "auth/passwd.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <mbedtls/md.h>
#include <mbedtls/pkcs5.h>
#include <mbedtls/platform_util.h>

#include "broker/alloc.h"
#include "broker/readfile.h"

/* A password file is operator data, but a mistaken path (a disk image, a
 * device) must not make the broker try to hold gigabytes. 100k users take
 * about 13 MB. */
#define PASSWD__FILE_MAX (256u * 1024 * 1024)

const char *passwd_strerror(int err)
{
    switch (err) {
    case PASSWD_OK: return "success";
    case PASSWD_E_NOMEM: return "out of memory";
    case PASSWD_E_IO: return "I/O error";
    case PASSWD_E_FORMAT: return "malformed line: expected name:$7$iterations$salt$hash";
    case PASSWD_E_TYPE: return "unsupported hash type: only $7$ (PBKDF2-HMAC-SHA512) is accepted";
    case PASSWD_E_BASE64: return "salt or hash is not valid base64";
    case PASSWD_E_ITERATIONS: return "iteration count must be a number from 1 to 1000000";
    case PASSWD_E_LENGTH: return "salt must be 12 bytes and hash 64 bytes";
    case PASSWD_E_NAME: return "invalid user name";
    case PASSWD_E_DUPLICATE: return "duplicate user";
    case PASSWD_E_NOUSER: return "no such user";
    case PASSWD_E_ARG: return "invalid argument";
    case PASSWD_E_CRYPTO: return "key derivation or random source failed";
    }
    return "unknown error";
}

/* ---- base64 (RFC 4648 standard alphabet, '=' padding) ------------------- */

static const char passwd__b64[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static int passwd__b64val(unsigned char c)
{
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
}

/* out must hold (n + 2) / 3 * 4 + 1 bytes. */
static void passwd__b64encode(const uint8_t *in, size_t n, char *out)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16;
        if (i + 1 < n) v |= (uint32_t)in[i + 1] << 8;
        if (i + 2 < n) v |= in[i + 2];
        out[o++] = passwd__b64[(v >> 18) & 63];
        out[o++] = passwd__b64[(v >> 12) & 63];
        out[o++] = i + 1 < n ? passwd__b64[(v >> 6) & 63] : '=';
        out[o++] = i + 2 < n ? passwd__b64[v & 63] : '=';
    }
    out[o] = '\0';
}

/* Strict decode of s[0..len) into out[0..cap): whole quads only, padding
 * only at the end, and the unused bits of the last character zero, so each
 * byte string has exactly one accepted spelling. Returns the decoded length
 * or -1. A result longer than cap is -2 (wrong length, not bad base64). */
static long passwd__b64decode(const char *s, size_t len, uint8_t *out, size_t cap)
{
    if (len == 0 || len % 4 != 0)
        return -1;
    size_t pad = 0;
    if (s[len - 1] == '=') pad++;
    if (s[len - 2] == '=') pad++;
    size_t n = len / 4 * 3 - pad;
    for (size_t i = 0; i < len - pad; i++)
        if (passwd__b64val((unsigned char)s[i]) < 0)
            return -1;
    if (n > cap)
        return -2;
    size_t o = 0;
    for (size_t i = 0; i < len; i += 4) {
        int a = passwd__b64val((unsigned char)s[i]);
        int b = passwd__b64val((unsigned char)s[i + 1]);
        int c = s[i + 2] == '=' ? 0 : passwd__b64val((unsigned char)s[i + 2]);
        int d = s[i + 3] == '=' ? 0 : passwd__b64val((unsigned char)s[i + 3]);
        /* "==" in a middle quad, or "=x" at the end */
        if (a < 0 || b < 0 || c < 0 || d < 0 ||
            (s[i + 2] == '=' && s[i + 3] != '='))
            return -1;
        uint32_t v = (uint32_t)a << 18 | (uint32_t)b << 12 | (uint32_t)c << 6 | (uint32_t)d;
        out[o++] = (uint8_t)(v >> 16);
        if (o < n) out[o++] = (uint8_t)(v >> 8);
        if (o < n) out[o++] = (uint8_t)v;
    }
    if ((pad == 1 && (passwd__b64val((unsigned char)s[len - 2]) & 3)) ||
        (pad == 2 && (passwd__b64val((unsigned char)s[len - 3]) & 15)))
        return -1;
    return (long)n;
}

/* ---- one hash ------------------------------------------------------------ */

int passwd_parse_hash(const char *s, size_t len, passwd_hash *out)
{
    if (len < 3 || s[0] != '$')
        return PASSWD_E_FORMAT;
    /* The type tag runs to the second '$'. */
    const char *end = s + len;
    const char *p = memchr(s + 1, '$', len - 1);
    if (!p)
        return PASSWD_E_FORMAT;
    if (p - s != 2 || s[1] != '7')
        return PASSWD_E_TYPE;
    p++;

    const char *q = memchr(p, '$', (size_t)(end - p));
    if (!q)
        return PASSWD_E_FORMAT;
    if (q == p)
        return PASSWD_E_ITERATIONS;
    unsigned long it = 0;
    for (const char *c = p; c < q; c++) {
        if (*c < '0' || *c > '9')
            return PASSWD_E_ITERATIONS;
        it = it * 10 + (unsigned long)(*c - '0');
        if (it > PASSWD_MAX_ITERATIONS)
            return PASSWD_E_ITERATIONS;
    }
    if (it == 0)
        return PASSWD_E_ITERATIONS;
    p = q + 1;

    q = memchr(p, '$', (size_t)(end - p));
    if (!q || memchr(q + 1, '$', (size_t)(end - q - 1)))
        return PASSWD_E_FORMAT;
    uint8_t salt[PASSWD_SALT_LEN + 3], hash[PASSWD_HASH_LEN + 3];
    long sn = passwd__b64decode(p, (size_t)(q - p), salt, sizeof salt);
    long hn = passwd__b64decode(q + 1, (size_t)(end - q - 1), hash, sizeof hash);
    if (sn == -1 || hn == -1)
        return PASSWD_E_BASE64;
    if (sn != PASSWD_SALT_LEN || hn != PASSWD_HASH_LEN)
        return PASSWD_E_LENGTH;

    out->iterations = (unsigned)it;
    memcpy(out->salt, salt, PASSWD_SALT_LEN);
    out->salt_len = PASSWD_SALT_LEN;
    memcpy(out->hash, hash, PASSWD_HASH_LEN);
    out->hash_len = PASSWD_HASH_LEN;
    return PASSWD_OK;
}

int passwd_format(const passwd_hash *h, char *out, size_t outlen)
{
    if (h->iterations == 0 || h->iterations > PASSWD_MAX_ITERATIONS ||
        h->salt_len != PASSWD_SALT_LEN || h->hash_len != PASSWD_HASH_LEN)
        return PASSWD_E_ARG;
    char salt[(PASSWD_SALT_LEN + 2) / 3 * 4 + 1], hash[(PASSWD_HASH_LEN + 2) / 3 * 4 + 1];
    passwd__b64encode(h->salt, h->salt_len, salt);
    passwd__b64encode(h->hash, h->hash_len, hash);
    int n = snprintf(out, outlen, "$7$%u$%s$%s", h->iterations, salt, hash);
    if (n < 0 || (size_t)n >= outlen)
        return PASSWD_E_ARG;
    return PASSWD_OK;
}

/* PBKDF2-HMAC-SHA512. The md context is per call, so threads never share
 * state. */
static int passwd__derive(unsigned iterations, const uint8_t *salt, size_t salt_len,
                          const uint8_t *pw, size_t pwlen, uint8_t out[PASSWD_HASH_LEN])
{
    const mbedtls_md_info_t *info = mbedtls_md_info_from_type(MBEDTLS_MD_SHA512);
    if (!info)
        return PASSWD_E_CRYPTO;
    mbedtls_md_context_t ctx;
    mbedtls_md_init(&ctx);
    int rc = PASSWD_E_CRYPTO;
    if (mbedtls_md_setup(&ctx, info, 1) == 0 &&
        mbedtls_pkcs5_pbkdf2_hmac(&ctx, pw ? pw : (const uint8_t *)"", pwlen,
                                  salt, salt_len, iterations,
                                  PASSWD_HASH_LEN, out) == 0)
        rc = PASSWD_OK;
    mbedtls_md_free(&ctx);
    return rc;
}

bool passwd_verify(const passwd_hash *h, const uint8_t *pw, size_t pwlen)
{
    if (h->hash_len != PASSWD_HASH_LEN || h->salt_len > sizeof h->salt ||
        h->iterations == 0)
        return false;
    uint8_t key[PASSWD_HASH_LEN];
    if (passwd__derive(h->iterations, h->salt, h->salt_len, pw, pwlen, key) != 0)
        return false;
    /* Every byte is compared whatever the earlier ones were, so the time
     * taken does not say how long a prefix matched. */
    volatile uint8_t diff = 0;
    for (size_t i = 0; i < PASSWD_HASH_LEN; i++)
        diff |= key[i] ^ h->hash[i];
    mbedtls_platform_zeroize(key, sizeof key);
    return diff == 0;
}

void passwd_burn(unsigned iterations, const uint8_t *pw, size_t pwlen)
{
    static const uint8_t salt[PASSWD_SALT_LEN] = { 0 };
    uint8_t key[PASSWD_HASH_LEN];
    if (iterations == 0 || iterations > PASSWD_MAX_ITERATIONS)
        iterations = PASSWD_DEFAULT_ITERATIONS;
    (void)passwd__derive(iterations, salt, sizeof salt, pw, pwlen, key);
    mbedtls_platform_zeroize(key, sizeof key);
}

static int passwd__random(uint8_t *buf, size_t n)
{
    size_t got = 0;
    while (got < n) {
        ssize_t r = getrandom(buf + got, n - got, 0);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return PASSWD_E_CRYPTO;
        }
        got += (size_t)r;
    }
    return PASSWD_OK;
}

int passwd_make(char *out, size_t outlen, const uint8_t *pw, size_t pwlen,
                unsigned iterations)
{
    if (iterations == 0 || iterations > PASSWD_MAX_ITERATIONS)
        return PASSWD_E_ITERATIONS;
    passwd_hash h = { .iterations = iterations, .salt_len = PASSWD_SALT_LEN,
                      .hash_len = PASSWD_HASH_LEN };
    int rc = passwd__random(h.salt, sizeof h.salt);
    if (rc == 0)
        rc = passwd__derive(iterations, h.salt, h.salt_len, pw, pwlen, h.hash);
    if (rc == 0)
        rc = passwd_format(&h, out, outlen);
    mbedtls_platform_zeroize(h.hash, sizeof h.hash);
    return rc;
}

bool passwd_name_valid(const char *name, size_t len)
{
    if (len == 0 || name[0] == '#' || name[0] == ' ' || name[0] == '\t' ||
        name[len - 1] == ' ' || name[len - 1] == '\t')
        return false;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)name[i];
        if (c == ':' || c < 0x20 || c == 0x7f)
            return false;
    }
    return true;
}

/* ---- lines --------------------------------------------------------------- */

/* One line of a buffer: [start, start+len) without its '\n'; *next is where
 * the following line starts. */
static bool passwd__next_line(const char *buf, size_t n, size_t *pos,
                              const char **line, size_t *len)
{
    if (*pos >= n)
        return false;
    const char *s = buf + *pos;
    const char *nl = memchr(s, '\n', n - *pos);
    *line = s;
    *len = nl ? (size_t)(nl - s) : n - *pos;
    *pos += *len + (nl ? 1 : 0);
    return true;
}

static bool passwd__blank(char c)
{
    return c == ' ' || c == '\t';
}

/* Trim blanks (and a CR at the end, for CRLF files) off s[0..*len). The
 * blanks are trimmed because mosquitto's own reader trims them: a file it
 * accepts should load here too. */
static const char *passwd__trim(const char *s, size_t *len)
{
    size_t n = *len;
    while (n > 0 && (passwd__blank(s[n - 1]) || s[n - 1] == '\r'))
        n--;
    while (n > 0 && passwd__blank(*s)) {
        s++;
        n--;
    }
    *len = n;
    return s;
}

/* Classify a line. Returns false for blank and comment lines; otherwise
 * sets the trimmed name, and the trimmed hash part after the first ':' with
 * *has_colon telling whether there was one. */
static bool passwd__split(const char *line, size_t len, const char **name, size_t *name_len,
                          const char **rest, size_t *rest_len, bool *has_colon)
{
    const char *s = passwd__trim(line, &len);
    if (len == 0 || s[0] == '#')
        return false;
    const char *colon = memchr(s, ':', len);
    *has_colon = colon != NULL;
    size_t nl = colon ? (size_t)(colon - s) : len;
    *name = passwd__trim(s, &nl);
    *name_len = nl;
    if (colon) {
        size_t rl = len - (size_t)(colon + 1 - s);
        *rest = passwd__trim(colon + 1, &rl);
        *rest_len = rl;
    } else {
        *rest = s + len;
        *rest_len = 0;
    }
    return true;
}

/* Whole file into a fresh buffer (gmq_free). */
static int passwd__read_all(const char *path, char **out, size_t *outlen,
                            char *err, size_t errlen)
{
    int rc = gmq_read_file(path, PASSWD__FILE_MAX, out, outlen, err, errlen);
    return rc == GMQ_READ_OK ? PASSWD_OK : rc == GMQ_READ_NOMEM ? PASSWD_E_NOMEM : PASSWD_E_IO;
}

/* ---- loaded file ----------------------------------------------------------- */

typedef struct passwd__entry {
    const char *name; /* into passwd_file.buf, not NUL-terminated */
    size_t name_len;
    unsigned line;
    passwd_hash h;
} passwd__entry;

struct passwd_file {
    char *buf;           /* the file's bytes; names point into it */
    passwd__entry *e;    /* sorted by name for bsearch */
    size_t n;
    unsigned typical_iterations;
};

static int passwd__namecmp(const char *a, size_t al, const char *b, size_t bl)
{
    int c = memcmp(a, b, al < bl ? al : bl);
    if (c)
        return c;
    return al < bl ? -1 : al > bl;
}

static int passwd__entrycmp(const void *a, const void *b)
{
    const passwd__entry *x = a, *y = b;
    return passwd__namecmp(x->name, x->name_len, y->name, y->name_len);
}

static int passwd__uintcmp(const void *a, const void *b)
{
    unsigned x = *(const unsigned *)a, y = *(const unsigned *)b;
    return x < y ? -1 : x > y;
}

/* The most common iteration count: an unknown user then costs what most
 * known users cost. */
static int passwd__typical(passwd_file *f)
{
    f->typical_iterations = PASSWD_DEFAULT_ITERATIONS;
    if (f->n == 0)
        return PASSWD_OK;
    unsigned *v = gmq_malloc(f->n * sizeof *v);
    if (!v)
        return PASSWD_E_NOMEM;
    for (size_t i = 0; i < f->n; i++)
        v[i] = f->e[i].h.iterations;
    qsort(v, f->n, sizeof *v, passwd__uintcmp);
    size_t best = 0;
    for (size_t i = 0, j; i < f->n; i = j) {
        for (j = i; j < f->n && v[j] == v[i]; j++)
            ;
        if (j - i > best) {
            best = j - i;
            f->typical_iterations = v[i];
        }
    }
    gmq_free(v);
    return PASSWD_OK;
}

/* After sorting, equal names are adjacent. Report the duplicate that comes
 * first in the file: the run whose second-lowest line is lowest. */
static bool passwd__find_duplicate(const passwd_file *f, unsigned *first, unsigned *second,
                                   const passwd__entry **which)
{
    bool found = false;
    for (size_t i = 0, j; i < f->n; i = j) {
        unsigned lo = f->e[i].line, lo2 = UINT_MAX;
        for (j = i + 1; j < f->n && passwd__entrycmp(&f->e[i], &f->e[j]) == 0; j++) {
            unsigned l = f->e[j].line;
            if (l < lo) {
                lo2 = lo;
                lo = l;
            } else if (l < lo2) {
                lo2 = l;
            }
        }
        if (j - i > 1 && (!found || lo2 < *second)) {
            found = true;
            *first = lo;
            *second = lo2;
            *which = &f->e[i];
        }
    }
    return found;
}

int passwd_file_load(const char *path, passwd_file **out, char *err, size_t errlen)
{
    passwd_file *f = gmq_calloc(1, sizeof *f);
    if (!f) {
        gmq_errf(err, errlen, "%s: out of memory", path);
        return PASSWD_E_NOMEM;
    }
    size_t len = 0, cap = 0;
    int rc = passwd__read_all(path, &f->buf, &len, err, errlen);
    if (rc != 0)
        goto fail;

    size_t pos = 0;
    unsigned lineno = 0;
    const char *line;
    size_t llen;
    while (passwd__next_line(f->buf, len, &pos, &line, &llen)) {
        lineno++;
        const char *name, *rest;
        size_t name_len, rest_len;
        bool colon;
        if (!passwd__split(line, llen, &name, &name_len, &rest, &rest_len, &colon))
            continue;
        if (!colon) {
            gmq_errf(err, errlen, "%s:%u: missing ':' between user name and hash",
                           path, lineno);
            rc = PASSWD_E_FORMAT;
            goto fail;
        }
        if (!passwd_name_valid(name, name_len)) {
            gmq_errf(err, errlen, "%s:%u: %s", path, lineno,
                           name_len ? "invalid user name (control character)"
                                    : "empty user name");
            rc = PASSWD_E_NAME;
            goto fail;
        }
        if (f->n == cap) {
            size_t ncap = cap ? cap * 2 : 64;
            passwd__entry *ne = gmq_realloc(f->e, ncap * sizeof *ne);
            if (!ne) {
                gmq_errf(err, errlen, "%s: out of memory", path);
                rc = PASSWD_E_NOMEM;
                goto fail;
            }
            f->e = ne;
            cap = ncap;
        }
        passwd__entry *e = &f->e[f->n];
        rc = passwd_parse_hash(rest, rest_len, &e->h);
        if (rc != 0) {
            gmq_errf(err, errlen, "%s:%u: user '%.*s': %s", path, lineno,
                           (int)(name_len > 64 ? 64 : name_len), name, passwd_strerror(rc));
            goto fail;
        }
        e->name = name;
        e->name_len = name_len;
        e->line = lineno;
        f->n++;
    }

    if (f->n > 1)
        qsort(f->e, f->n, sizeof *f->e, passwd__entrycmp);
    unsigned first = 0, second = 0;
    const passwd__entry *dup;
    if (passwd__find_duplicate(f, &first, &second, &dup)) {
        gmq_errf(err, errlen, "%s:%u: duplicate user '%.*s' (first on line %u)",
                       path, second, (int)(dup->name_len > 64 ? 64 : dup->name_len),
                       dup->name, first);
        rc = PASSWD_E_DUPLICATE;
        goto fail;
    }
    rc = passwd__typical(f);
    if (rc != 0) {
        gmq_errf(err, errlen, "%s: out of memory", path);
        goto fail;
    }
    *out = f;
    return PASSWD_OK;

fail:
    passwd_file_free(f);
    return rc;
}

const passwd_hash *passwd_file_lookup(const passwd_file *f, const char *name, size_t len)
{
    size_t lo = 0, hi = f->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = passwd__namecmp(name, len, f->e[mid].name, f->e[mid].name_len);
        if (c == 0)
            return &f->e[mid].h;
        if (c < 0)
            hi = mid;
        else
            lo = mid + 1;
    }
    return NULL;
}

size_t passwd_file_count(const passwd_file *f)
{
    return f->n;
}

unsigned passwd_file_typical_iterations(const passwd_file *f)
{
    return f->typical_iterations;
}

void passwd_file_free(passwd_file *f)
{
    if (!f)
        return;
    gmq_free(f->e);
    gmq_free(f->buf);
    gmq_free(f);
}

/* ---- editing --------------------------------------------------------------- */

static int passwd__write_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0)
            return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Append s[0..n) to a growing buffer. */
static int passwd__append(char **buf, size_t *len, size_t *cap, const char *s, size_t n)
{
    if (*len + n > *cap) {
        size_t ncap = *cap ? *cap : 256;
        while (ncap < *len + n)
            ncap *= 2;
        char *nb = gmq_realloc(*buf, ncap);
        if (!nb)
            return PASSWD_E_NOMEM;
        *buf = nb;
        *cap = ncap;
    }
    memcpy(*buf + *len, s, n);
    *len += n;
    return PASSWD_OK;
}

/* The new content: old with user name's lines replaced by "name:hash" (the
 * first) or dropped (the rest, or all when deleting). */
static int passwd__edit(const char *old, size_t oldlen, const char *name, size_t name_len,
                        const char *hash, char **out, size_t *outlen, bool *found)
{
    char *buf = NULL;
    size_t len = 0, cap = 0, pos = 0;
    const char *line;
    size_t llen;
    int rc = PASSWD_OK;
    *found = false;
    while (rc == 0 && passwd__next_line(old, oldlen, &pos, &line, &llen)) {
        const char *lname, *rest;
        size_t lname_len, rest_len;
        bool colon;
        bool ours = passwd__split(line, llen, &lname, &lname_len, &rest, &rest_len, &colon) &&
                    colon && passwd__namecmp(lname, lname_len, name, name_len) == 0;
        if (!ours) {
            /* Byte for byte, with the newline it had (the last line may
             * have none). */
            bool had_nl = line + llen < old + oldlen;
            rc = passwd__append(&buf, &len, &cap, line, llen + (had_nl ? 1 : 0));
            continue;
        }
        if (hash && !*found) {
            rc = passwd__append(&buf, &len, &cap, name, name_len);
            if (rc == 0) rc = passwd__append(&buf, &len, &cap, ":", 1);
            if (rc == 0) rc = passwd__append(&buf, &len, &cap, hash, strlen(hash));
            if (rc == 0) rc = passwd__append(&buf, &len, &cap, "\n", 1);
        }
        *found = true;
    }
    if (rc == 0 && hash && !*found) {
        if (len > 0 && buf[len - 1] != '\n')
            rc = passwd__append(&buf, &len, &cap, "\n", 1);
        if (rc == 0) rc = passwd__append(&buf, &len, &cap, name, name_len);
        if (rc == 0) rc = passwd__append(&buf, &len, &cap, ":", 1);
        if (rc == 0) rc = passwd__append(&buf, &len, &cap, hash, strlen(hash));
        if (rc == 0) rc = passwd__append(&buf, &len, &cap, "\n", 1);
    }
    if (rc != 0) {
        gmq_free(buf);
        return rc;
    }
    *out = buf;
    *outlen = len;
    return PASSWD_OK;
}

/* Write content to a temporary file next to target and rename it over
 * target. st: the existing file's attributes to keep, or NULL for a new
 * file (mode 0600: it holds password hashes). */
static int passwd__replace(const char *target, const char *content, size_t len,
                           const struct stat *st, char *err, size_t errlen)
{
    size_t tl = strlen(target);
    char *tmp = gmq_malloc(tl + sizeof ".XXXXXX");
    if (!tmp) {
        gmq_errf(err, errlen, "out of memory");
        return PASSWD_E_NOMEM;
    }
    memcpy(tmp, target, tl);
    memcpy(tmp + tl, ".XXXXXX", sizeof ".XXXXXX");

    bool created = false;
    const char *what = "create temporary file";
    int fd = mkostemp(tmp, O_CLOEXEC);
    if (fd < 0)
        goto fail;
    created = true;
    what = "set mode of temporary file";
    if (fchmod(fd, st ? (st->st_mode & 07777) : 0600) != 0)
        goto fail;
    if (st) {
        /* Run as root on a file the broker's user owns, the new file must
         * stay readable by the broker. */
        struct stat ts;
        what = "keep owner and group";
        if (fstat(fd, &ts) != 0)
            goto fail;
        if ((ts.st_uid != st->st_uid || ts.st_gid != st->st_gid) &&
            fchown(fd, st->st_uid, st->st_gid) != 0)
            goto fail;
    }
    what = "write temporary file";
    if (passwd__write_all(fd, content, len) != 0)
        goto fail;
    what = "fsync temporary file";
    if (fsync(fd) != 0)
        goto fail;
    what = "close temporary file";
    int cfd = fd;
    fd = -1;
    if (close(cfd) != 0)
        goto fail;
    what = "rename temporary file";
    if (rename(tmp, target) != 0)
        goto fail;

    /* Make the rename itself durable. Best effort: the new file is already
     * in place, and some file systems refuse fsync on a directory. */
    char *slash = strrchr(tmp, '/');
    if (slash == tmp)
        slash[1] = '\0';
    else if (slash)
        *slash = '\0';
    else
        strcpy(tmp, ".");
    int dfd = open(tmp, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        (void)fsync(dfd);
        close(dfd);
    }
    gmq_free(tmp);
    return PASSWD_OK;

fail:
    gmq_errf(err, errlen, "%s: cannot %s: %s", target, what, strerror(errno));
    if (fd >= 0)
        close(fd);
    if (created)
        unlink(tmp);
    gmq_free(tmp);
    return PASSWD_E_IO;
}

int passwd_file_update(const char *path, const char *name, size_t len,
                       const char *hash, bool create, char *err, size_t errlen)
{
    if (!passwd_name_valid(name, len)) {
        gmq_errf(err, errlen, "invalid user name: it must be non-empty, without ':', "
                       "control characters, a leading '#' or surrounding blanks");
        return PASSWD_E_NAME;
    }
    if (!hash && create) {
        gmq_errf(err, errlen, "cannot delete a user while creating a file");
        return PASSWD_E_ARG;
    }
    if (hash) {
        passwd_hash h;
        int prc = passwd_parse_hash(hash, strlen(hash), &h);
        if (prc != 0) {
            gmq_errf(err, errlen, "bad hash: %s", passwd_strerror(prc));
            return prc;
        }
    }

    /* Edit the file a symbolic link points to, so the link survives. */
    char resolved[PATH_MAX];
    const char *target = path;
    struct stat st;
    bool exists = false;
    if (lstat(path, &st) == 0) {
        if (S_ISLNK(st.st_mode)) {
            if (!realpath(path, resolved) || stat(resolved, &st) != 0) {
                gmq_errf(err, errlen, "%s: %s", path, strerror(errno));
                return PASSWD_E_IO;
            }
            target = resolved;
        }
        if (!S_ISREG(st.st_mode)) {
            gmq_errf(err, errlen, "%s: not a regular file", path);
            return PASSWD_E_IO;
        }
        exists = true;
    } else if (errno != ENOENT || !create) {
        gmq_errf(err, errlen, "%s: %s%s", path, strerror(errno),
                       errno == ENOENT ? " (create it with -c)" : "");
        return PASSWD_E_IO;
    }

    char *old = NULL, *content = NULL;
    size_t oldlen = 0, clen = 0;
    bool found = false;
    int rc = PASSWD_OK;
    if (exists && !create)
        rc = passwd__read_all(target, &old, &oldlen, err, errlen);
    if (rc == 0) {
        rc = passwd__edit(old, oldlen, name, len, hash, &content, &clen, &found);
        if (rc != 0)
            gmq_errf(err, errlen, "out of memory");
    }
    if (rc == 0 && !hash && !found) {
        gmq_errf(err, errlen, "%s: no user '%.*s'", path,
                       (int)(len > 64 ? 64 : len), name);
        rc = PASSWD_E_NOUSER;
    }
    if (rc == 0)
        rc = passwd__replace(target, content ? content : "", clen, exists ? &st : NULL,
                             err, errlen);
    gmq_free(content);
    gmq_free(old);
    return rc;
}
