/*
 * acl.c - ACL files and access checks. See acl.h for the contracts and
 * docs/acl.md for the format.
 *
 * A loaded set keeps the file's bytes (names and rule texts point into them,
 * NUL-terminated in place) and four arrays: rules in file order, the levels
 * of every rule filter, sections (a run of consecutive rules: sections can
 * not be reopened, so each one's rules are contiguous) and companies. Three
 * hash maps find a principal's sections: company name -> company, (company,
 * device id) -> section, user name -> section. A check therefore looks at
 * the principal's own rules only, however large the file.
 */
#include "auth/acl.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "broker/alloc.h"
#include "broker/readfile.h"
#include "mqtt.h"

#define ACL__FILE_MAX (256u * 1024 * 1024)
#define ACL__TOPIC_MAX 65535u
/* Words a statement can need: "deny read FILTER" is three; one more is
 * kept to see what follows. */
#define ACL__MAXW 4

const char *acl_strerror(int err)
{
    switch (err) {
    case ACL_OK: return "success";
    case ACL_E_NOMEM: return "out of memory";
    case ACL_E_IO: return "I/O error";
    case ACL_E_SYNTAX: return "invalid ACL file";
    }
    return "unknown error";
}

/* ---- the loaded set ------------------------------------------------------ */

enum { ACL__LIT, ACL__PLUS, ACL__HASH, ACL__TMPL };
enum { ACL__READ = 1, ACL__WRITE = 2 };
enum { ACL__VAR_D = 1, ACL__VAR_U = 2, ACL__VAR_C = 4 };
enum { ACL__S_GROUP, ACL__S_DEVICE, ACL__S_USER, ACL__S_ANON };

/* One level of a rule filter. TMPL levels hold the raw text with its
 * %-escapes; LIT levels contain no '%' and carry their acl__level_hash, so
 * that most comparisons with a topic's level are one integer comparison. */
typedef struct acl__level {
    const char *p;
    uint32_t len;
    uint32_t hash; /* LIT levels of rules only; 0 otherwise */
    uint8_t kind;
} acl__level;

typedef struct acl__rule {
    uint32_t lv, nlv; /* levels[lv .. lv+nlv) */
    int line;
    uint8_t ops;  /* ACL__READ | ACL__WRITE */
    uint8_t vars; /* ACL__VAR_*: substitutions used (precomputed) */
    bool allow;
    bool first_lit;      /* the first level is a plain literal ... */
    uint32_t first_hash; /* ... with this acl__level_hash: a quick reject */
    const char *text; /* "read config/%d/#", NUL-terminated in acl.text */
} acl__rule;

typedef struct acl__section {
    uint32_t first, count; /* rules[first .. first+count) */
    int line;
    int kind;        /* ACL__S_* */
    int32_t company; /* index, or -1 for platform users and anonymous */
    const char *name;
} acl__section;

typedef struct acl__company {
    const char *name;
    int line;
    int32_t group; /* the `devices` section, or -1 */
} acl__company;

/* Open addressing, linear probing; name == NULL marks an empty slot. Keys
 * are operator data, so a plain FNV-1a hash cannot be steered by clients:
 * a lookup costs at most the longest probe run of the operator's keys. */
typedef struct acl__slot {
    uint64_t hash;
    const char *name;
    uint32_t len;
    uint32_t scope; /* company index + 1 for devices, else 0 */
    uint32_t idx;
} acl__slot;

typedef struct acl__map {
    acl__slot *slots;
    size_t cap, count;
} acl__map;

struct acl {
    char *name;
    char *text;
    acl__rule *rules;
    size_t nrules, caprules;
    acl__level *levels;
    size_t nlevels, caplevels;
    acl__section *sections;
    size_t nsections, capsections;
    acl__company *companies;
    size_t ncompanies, capcompanies;
    acl__map company_map, device_map, user_map;
    int32_t anon; /* section index, or -1 */
    int platform_line, anon_line;
    acl_stats stats;
};

/* Room for one more element of size elem in the array *(T **)pp of capacity
 * *cap with n used. On failure the array and *cap are unchanged. */
static int acl__reserve(void *pp, size_t *cap, size_t n, size_t elem)
{
    if (n < *cap)
        return ACL_OK;
    size_t ncap = *cap ? *cap * 2 : 16;
    if (ncap > SIZE_MAX / elem || ncap > UINT32_MAX)
        return ACL_E_NOMEM;
    void *p;
    memcpy(&p, pp, sizeof p);
    void *np = gmq_realloc(p, ncap * elem);
    if (!np)
        return ACL_E_NOMEM;
    memcpy(pp, &np, sizeof np);
    *cap = ncap;
    return ACL_OK;
}

#define ACL__RESERVE(arr, cap, n) acl__reserve(&(arr), &(cap), (n), sizeof *(arr))

/* FNV-1a of one topic level, to reject most rules without comparing. */
static uint32_t acl__level_hash(const char *s, size_t n)
{
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)s[i];
        h *= 16777619u;
    }
    return h;
}

static uint64_t acl__hash(uint32_t scope, const char *s, size_t n)
{
    uint64_t h = 14695981039346656037ull ^ scope;
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)s[i];
        h *= 1099511628211ull;
    }
    return h ^ (h >> 29);
}

static const acl__slot *acl__map_find(const acl__map *m, uint32_t scope, const char *s,
                                      size_t n)
{
    if (m->count == 0 || n > UINT32_MAX)
        return NULL;
    uint64_t h = acl__hash(scope, s, n);
    size_t mask = m->cap - 1;
    for (size_t i = (size_t)h & mask;; i = (i + 1) & mask) {
        const acl__slot *sl = &m->slots[i];
        if (!sl->name)
            return NULL;
        if (sl->hash == h && sl->scope == scope && sl->len == n && memcmp(sl->name, s, n) == 0)
            return sl;
    }
}

static void acl__map_place(acl__slot *slots, size_t cap, const acl__slot *e)
{
    size_t mask = cap - 1;
    size_t i = (size_t)e->hash & mask;
    while (slots[i].name)
        i = (i + 1) & mask;
    slots[i] = *e;
}

/* Insert a key known to be absent. Kept at most half full. */
static int acl__map_put(acl__map *m, uint32_t scope, const char *s, size_t n, uint32_t idx)
{
    if ((m->count + 1) * 2 > m->cap) {
        size_t ncap = m->cap ? m->cap * 2 : 16;
        acl__slot *ns = gmq_calloc(ncap, sizeof *ns);
        if (!ns)
            return ACL_E_NOMEM;
        for (size_t i = 0; i < m->cap; i++)
            if (m->slots[i].name)
                acl__map_place(ns, ncap, &m->slots[i]);
        gmq_free(m->slots);
        m->slots = ns;
        m->cap = ncap;
    }
    acl__slot e = { .hash = acl__hash(scope, s, n), .name = s, .len = (uint32_t)n,
                    .scope = scope, .idx = idx };
    acl__map_place(m->slots, m->cap, &e);
    m->count++;
    return ACL_OK;
}

void acl_free(acl *a)
{
    if (!a)
        return;
    gmq_free(a->name);
    gmq_free(a->text);
    gmq_free(a->rules);
    gmq_free(a->levels);
    gmq_free(a->sections);
    gmq_free(a->companies);
    gmq_free(a->company_map.slots);
    gmq_free(a->device_map.slots);
    gmq_free(a->user_map.slots);
    gmq_free(a);
}

/* ---- parsing ------------------------------------------------------------- */

typedef struct acl__word {
    char *p;
    size_t n;
} acl__word;

enum { ACL__CTX_NONE, ACL__CTX_COMPANY, ACL__CTX_PLATFORM, ACL__CTX_ANON };

typedef struct acl__parser {
    acl *a;
    int line;
    char *err;
    size_t errlen;
    int ctx;         /* ACL__CTX_*: the enclosing company, platform or anonymous */
    int32_t company; /* with ACL__CTX_COMPANY */
    int32_t section; /* the principal section rules go to, or -1 */
} acl__parser;

static int acl__fail(acl__parser *ps, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* "file:line: message", returns ACL_E_SYNTAX. */
static int acl__fail(acl__parser *ps, const char *fmt, ...)
{
    if (ps->err && ps->errlen > 0) {
        int n = snprintf(ps->err, ps->errlen, "%s:%d: ", ps->a->name, ps->line);
        if (n >= 0 && (size_t)n < ps->errlen) {
            va_list ap;
            va_start(ap, fmt);
            vsnprintf(ps->err + n, ps->errlen - (size_t)n, fmt, ap);
            va_end(ap);
        }
    }
    return ACL_E_SYNTAX;
}

/* Words are quoted in messages; a long one is cut. */
#define ACL__Q(w) (int)((w).n > 80 ? 80 : (w).n), (w).p

static bool acl__word_is(const acl__word *w, const char *kw)
{
    size_t n = strlen(kw);
    return w->n == n && memcmp(w->p, kw, n) == 0;
}

static bool acl__has_ctl(const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)p[i] < 0x20 || p[i] == 0x7f)
            return true;
    return false;
}

/* Why name p[0..n) cannot be a topic level, or NULL if it can. Company
 * names and device ids become levels of internal topics. */
static const char *acl__level_name_problem(const char *p, size_t n)
{
    if (n == 0)
        return "it is empty";
    if (p[0] == '$')
        return "it starts with '$'";
    if (memchr(p, '/', n) || memchr(p, '+', n) || memchr(p, '#', n))
        return "it contains '/', '+' or '#'";
    if (acl__has_ctl(p, n))
        return "it contains a control character";
    if (!mqtt_utf8_valid((const uint8_t *)p, n))
        return "it is not valid UTF-8";
    return NULL;
}

/* After the need words of a statement only a comment may follow. */
static int acl__expect_end(acl__parser *ps, const acl__word *w, size_t nw, size_t need,
                           const char *after)
{
    if (nw > need && w[need].p[0] != '#')
        return acl__fail(ps, "unexpected '%.*s' after %s (a comment starts with '#')",
                         ACL__Q(w[need]), after);
    return ACL_OK;
}

/* The name word of `company NAME`, `device ID`, `user NAME`. A word that
 * starts with '#' would be read as a comment by a human, so it is not taken
 * as a name. */
static int acl__name_word(acl__parser *ps, const acl__word *w, size_t nw, const char *what)
{
    if (nw < 2 || w[1].p[0] == '#')
        return acl__fail(ps, "missing %s name", what);
    int rc = acl__expect_end(ps, w, nw, 2, "the name");
    if (rc != ACL_OK)
        return rc;
    w[1].p[w[1].n] = '\0';
    return ACL_OK;
}

static int acl__new_section(acl__parser *ps, int kind, int32_t company, const char *name)
{
    acl *a = ps->a;
    if (ACL__RESERVE(a->sections, a->capsections, a->nsections) != ACL_OK)
        return ACL_E_NOMEM;
    acl__section *s = &a->sections[a->nsections];
    *s = (acl__section){ .first = (uint32_t)a->nrules, .line = ps->line, .kind = kind,
                         .company = company, .name = name };
    ps->section = (int32_t)a->nsections++;
    return ACL_OK;
}

static int acl__stmt_company(acl__parser *ps, const acl__word *w, size_t nw)
{
    acl *a = ps->a;
    int rc = acl__name_word(ps, w, nw, "company");
    if (rc != ACL_OK)
        return rc;
    const char *why = acl__level_name_problem(w[1].p, w[1].n);
    if (why)
        return acl__fail(ps, "company name '%.*s' is not usable as a topic level: %s",
                         ACL__Q(w[1]), why);
    const acl__slot *dup = acl__map_find(&a->company_map, 0, w[1].p, w[1].n);
    if (dup)
        return acl__fail(ps, "company %s already declared at line %d (a section cannot be reopened)",
                         w[1].p, a->companies[dup->idx].line);
    if (ACL__RESERVE(a->companies, a->capcompanies, a->ncompanies) != ACL_OK ||
        acl__map_put(&a->company_map, 0, w[1].p, w[1].n, (uint32_t)a->ncompanies) != ACL_OK)
        return ACL_E_NOMEM;
    a->companies[a->ncompanies] = (acl__company){ .name = w[1].p, .line = ps->line, .group = -1 };
    ps->ctx = ACL__CTX_COMPANY;
    ps->company = (int32_t)a->ncompanies++;
    ps->section = -1;
    a->stats.companies++;
    return ACL_OK;
}

static int acl__stmt_platform(acl__parser *ps, const acl__word *w, size_t nw)
{
    int rc = acl__expect_end(ps, w, nw, 1, "platform");
    if (rc != ACL_OK)
        return rc;
    if (ps->a->platform_line)
        return acl__fail(ps, "platform already declared at line %d (a section cannot be reopened)",
                         ps->a->platform_line);
    ps->a->platform_line = ps->line;
    ps->ctx = ACL__CTX_PLATFORM;
    ps->section = -1;
    return ACL_OK;
}

static int acl__stmt_anonymous(acl__parser *ps, const acl__word *w, size_t nw)
{
    acl *a = ps->a;
    int rc = acl__expect_end(ps, w, nw, 1, "anonymous");
    if (rc != ACL_OK)
        return rc;
    if (a->anon_line)
        return acl__fail(ps, "anonymous already declared at line %d (a section cannot be reopened)",
                         a->anon_line);
    if (acl__new_section(ps, ACL__S_ANON, -1, "anonymous") != ACL_OK)
        return ACL_E_NOMEM;
    a->anon_line = ps->line;
    a->anon = ps->section;
    a->stats.anonymous = true;
    ps->ctx = ACL__CTX_ANON;
    return ACL_OK;
}

static int acl__stmt_devices(acl__parser *ps, const acl__word *w, size_t nw)
{
    acl *a = ps->a;
    int rc = acl__expect_end(ps, w, nw, 1, "devices");
    if (rc != ACL_OK)
        return rc;
    if (ps->ctx != ACL__CTX_COMPANY)
        return acl__fail(ps, "devices outside a company section (devices belong to a company)");
    acl__company *c = &a->companies[ps->company];
    if (c->group >= 0)
        return acl__fail(ps, "devices of company %s already declared at line %d "
                         "(a section cannot be reopened)", c->name, a->sections[c->group].line);
    if (acl__new_section(ps, ACL__S_GROUP, ps->company, "devices") != ACL_OK)
        return ACL_E_NOMEM;
    a->companies[ps->company].group = ps->section;
    a->stats.device_groups++;
    return ACL_OK;
}

static int acl__stmt_device(acl__parser *ps, const acl__word *w, size_t nw)
{
    acl *a = ps->a;
    if (ps->ctx != ACL__CTX_COMPANY)
        return acl__fail(ps, "device outside a company section (devices belong to a company)");
    int rc = acl__name_word(ps, w, nw, "device");
    if (rc != ACL_OK)
        return rc;
    const char *why = acl__level_name_problem(w[1].p, w[1].n);
    if (why)
        return acl__fail(ps, "device id '%.*s' can never be a certificate's device id: %s",
                         ACL__Q(w[1]), why);
    uint32_t scope = (uint32_t)ps->company + 1;
    const acl__slot *dup = acl__map_find(&a->device_map, scope, w[1].p, w[1].n);
    if (dup)
        return acl__fail(ps, "device %s of company %s already declared at line %d "
                         "(a section cannot be reopened)", w[1].p,
                         a->companies[ps->company].name, a->sections[dup->idx].line);
    if (acl__map_put(&a->device_map, scope, w[1].p, w[1].n, (uint32_t)a->nsections) != ACL_OK ||
        acl__new_section(ps, ACL__S_DEVICE, ps->company, w[1].p) != ACL_OK)
        return ACL_E_NOMEM;
    a->stats.devices++;
    return ACL_OK;
}

static int acl__stmt_user(acl__parser *ps, const acl__word *w, size_t nw)
{
    acl *a = ps->a;
    if (ps->ctx != ACL__CTX_COMPANY && ps->ctx != ACL__CTX_PLATFORM)
        return acl__fail(ps, "user outside a company or platform section");
    int rc = acl__name_word(ps, w, nw, "user");
    if (rc != ACL_OK)
        return rc;
    if (acl__has_ctl(w[1].p, w[1].n) || !mqtt_utf8_valid((const uint8_t *)w[1].p, w[1].n))
        return acl__fail(ps, "user name '%.*s' is not valid UTF-8 or contains a control character",
                         ACL__Q(w[1]));
    if (memchr(w[1].p, ':', w[1].n))
        return acl__fail(ps, "user name '%.*s' contains ':', which the password file cannot hold",
                         ACL__Q(w[1]));
    const acl__slot *dup = acl__map_find(&a->user_map, 0, w[1].p, w[1].n);
    if (dup)
        return acl__fail(ps, "user %s already declared at line %d (a user belongs to exactly "
                         "one company or to platform)", w[1].p, a->sections[dup->idx].line);
    int32_t company = ps->ctx == ACL__CTX_COMPANY ? ps->company : -1;
    if (acl__map_put(&a->user_map, 0, w[1].p, w[1].n, (uint32_t)a->nsections) != ACL_OK ||
        acl__new_section(ps, ACL__S_USER, company, w[1].p) != ACL_OK)
        return ACL_E_NOMEM;
    a->stats.users++;
    if (company < 0)
        a->stats.platform_users++;
    return ACL_OK;
}

/* Check the %-escapes of a rule filter against what the section's
 * principals have; sets *vars. */
static int acl__scan_subst(acl__parser *ps, const acl__word *f, int kind, uint8_t *vars)
{
    *vars = 0;
    for (size_t i = 0; i < f->n; i++) {
        if (f->p[i] != '%')
            continue;
        if (i + 1 == f->n)
            return acl__fail(ps, "'%%' at the end of topic filter '%.*s' (write %%%% for a '%%')",
                             ACL__Q(*f));
        char c = f->p[++i];
        switch (c) {
        case '%':
            break;
        case 'd':
            if (kind == ACL__S_USER || kind == ACL__S_ANON)
                return acl__fail(ps, "%%d in a %s section: only devices have a device id",
                                 kind == ACL__S_USER ? "user" : "anonymous");
            *vars |= ACL__VAR_D;
            break;
        case 'u':
            if (kind != ACL__S_USER)
                return acl__fail(ps, "%%u in a %s section: only users have a user name",
                                 kind == ACL__S_ANON ? "anonymous" : "device");
            *vars |= ACL__VAR_U;
            break;
        case 'c':
            *vars |= ACL__VAR_C;
            break;
        default:
            return acl__fail(ps, "unknown substitution '%%%c' in topic filter '%.*s' "
                             "(use %%d, %%u, %%c, or %%%% for a '%%')",
                             (unsigned char)c >= 0x20 && c != 0x7f ? c : '?', ACL__Q(*f));
        }
    }
    return ACL_OK;
}

static int acl__add_levels(acl *a, const char *p, size_t n, acl__rule *r)
{
    r->lv = (uint32_t)a->nlevels;
    r->nlv = 0;
    size_t start = 0;
    for (size_t i = 0; i <= n; i++) {
        if (i < n && p[i] != '/')
            continue;
        if (ACL__RESERVE(a->levels, a->caplevels, a->nlevels) != ACL_OK)
            return ACL_E_NOMEM;
        acl__level *l = &a->levels[a->nlevels++];
        l->p = p + start;
        l->len = (uint32_t)(i - start);
        if (l->len == 1 && l->p[0] == '+')
            l->kind = ACL__PLUS;
        else if (l->len == 1 && l->p[0] == '#')
            l->kind = ACL__HASH;
        else if (memchr(l->p, '%', l->len))
            l->kind = ACL__TMPL;
        else
            l->kind = ACL__LIT;
        l->hash = l->kind == ACL__LIT ? acl__level_hash(l->p, l->len) : 0;
        r->nlv++;
        start = i + 1;
    }
    return ACL_OK;
}

/* read F | write F | readwrite F | deny [read|write|readwrite] F */
static int acl__stmt_rule(acl__parser *ps, const acl__word *w, size_t nw)
{
    acl *a = ps->a;
    if (ps->section < 0)
        return acl__fail(ps, "rule outside a principal section (start one with devices, "
                         "device ID, user NAME or anonymous)");
    bool allow = !acl__word_is(&w[0], "deny");
    uint8_t ops = ACL__READ | ACL__WRITE;
    size_t fi = 1;
    const acl__word *act = &w[0];
    if (!allow && nw > 1 && (acl__word_is(&w[1], "read") || acl__word_is(&w[1], "write") ||
                             acl__word_is(&w[1], "readwrite"))) {
        act = &w[1];
        fi = 2;
    }
    if (acl__word_is(act, "read"))
        ops = ACL__READ;
    else if (acl__word_is(act, "write"))
        ops = ACL__WRITE;
    if (nw <= fi)
        return acl__fail(ps, "missing topic filter after '%.*s'", ACL__Q(w[fi - 1]));
    const acl__word *f = &w[fi];
    int rc = acl__expect_end(ps, w, nw, fi + 1, "the topic filter");
    if (rc != ACL_OK)
        return rc;
    if (acl__has_ctl(f->p, f->n))
        return acl__fail(ps, "control character in topic filter '%.*s'", ACL__Q(*f));
    int kind = a->sections[ps->section].kind;
    uint8_t vars;
    rc = acl__scan_subst(ps, f, kind, &vars);
    if (rc != ACL_OK)
        return rc;
    /* Substituted values never contain '/', '+' or '#' (acl__value_ok), so
     * the template is a valid filter exactly when every expansion is. */
    if (!mqtt_topic_filter_valid((const uint8_t *)f->p, f->n))
        return acl__fail(ps, "invalid topic filter '%.*s' ('+' and '#' must fill a whole level, "
                         "'#' only as the last one; valid UTF-8, at most 65535 bytes)",
                         ACL__Q(*f));
    if (ACL__RESERVE(a->rules, a->caprules, a->nrules) != ACL_OK)
        return ACL_E_NOMEM;
    acl__rule *r = &a->rules[a->nrules];
    *r = (acl__rule){ .line = ps->line, .ops = ops, .vars = vars, .allow = allow,
                      .text = w[0].p };
    if (acl__add_levels(a, f->p, f->n, r) != ACL_OK)
        return ACL_E_NOMEM;
    const acl__level *l0 = &a->levels[r->lv];
    r->first_lit = l0->kind == ACL__LIT;
    r->first_hash = acl__level_hash(l0->p, l0->len);
    f->p[f->n] = '\0'; /* ends the rule text */
    a->nrules++;
    a->sections[ps->section].count++;
    a->stats.rules++;
    return ACL_OK;
}

static int acl__statement(acl__parser *ps, const acl__word *w, size_t nw)
{
    if (acl__word_is(&w[0], "read") || acl__word_is(&w[0], "write") ||
        acl__word_is(&w[0], "readwrite") || acl__word_is(&w[0], "deny"))
        return acl__stmt_rule(ps, w, nw);
    if (acl__word_is(&w[0], "company"))
        return acl__stmt_company(ps, w, nw);
    if (acl__word_is(&w[0], "devices"))
        return acl__stmt_devices(ps, w, nw);
    if (acl__word_is(&w[0], "device"))
        return acl__stmt_device(ps, w, nw);
    if (acl__word_is(&w[0], "user"))
        return acl__stmt_user(ps, w, nw);
    if (acl__word_is(&w[0], "platform"))
        return acl__stmt_platform(ps, w, nw);
    if (acl__word_is(&w[0], "anonymous"))
        return acl__stmt_anonymous(ps, w, nw);
    return acl__fail(ps, "unknown keyword '%.*s' (expected company, platform, anonymous, "
                     "devices, device, user, read, write, readwrite or deny)", ACL__Q(w[0]));
}

static bool acl__blank(char c)
{
    return c == ' ' || c == '\t';
}

/* Split line[0..len) into at most ACL__MAXW words; returns how many. */
static size_t acl__words(char *line, size_t len, acl__word *w)
{
    size_t nw = 0, i = 0;
    while (nw < ACL__MAXW) {
        while (i < len && acl__blank(line[i]))
            i++;
        if (i == len)
            break;
        size_t s = i;
        while (i < len && !acl__blank(line[i]))
            i++;
        w[nw++] = (acl__word){ line + s, i - s };
    }
    return nw;
}

int acl_parse(const char *text, size_t len, const char *name, acl **out,
              char *err, size_t errlen)
{
    if (!name)
        name = "acl";
    acl *a = gmq_calloc(1, sizeof *a);
    if (!a) {
        gmq_errf(err, errlen, "%s: out of memory", name);
        return ACL_E_NOMEM;
    }
    a->anon = -1;
    acl__parser ps = { .a = a, .err = err, .errlen = errlen, .section = -1, .company = -1 };
    int rc = ACL_E_NOMEM;
    a->name = gmq_strdup(name);
    a->text = gmq_strndup(text, len);
    if (!a->name || !a->text)
        goto fail;

    size_t pos = 0;
    rc = ACL_OK;
    while (rc == ACL_OK && pos < len) {
        char *line = a->text + pos;
        char *nl = memchr(line, '\n', len - pos);
        size_t n = nl ? (size_t)(nl - line) : len - pos;
        pos += n + (nl ? 1 : 0);
        ps.line++;
        if (memchr(line, '\0', n)) {
            rc = acl__fail(&ps, "NUL byte in the file");
            break;
        }
        if (n > 0 && line[n - 1] == '\r')
            n--;
        acl__word w[ACL__MAXW];
        size_t nw = acl__words(line, n, w);
        if (nw == 0 || w[0].p[0] == '#')
            continue;
        rc = acl__statement(&ps, w, nw);
    }
    if (rc == ACL_OK) {
        *out = a;
        return ACL_OK;
    }
fail:
    if (rc == ACL_E_NOMEM)
        gmq_errf(err, errlen, "%s: out of memory", name);
    acl_free(a);
    return rc;
}

/* The whole file into a fresh buffer (gmq_free). */
static int acl__read_all(const char *path, char **out, size_t *outlen, char *err,
                         size_t errlen)
{
    int rc = gmq_read_file(path, ACL__FILE_MAX, out, outlen, err, errlen);
    return rc == GMQ_READ_OK ? ACL_OK : rc == GMQ_READ_NOMEM ? ACL_E_NOMEM : ACL_E_IO;
}

int acl_load(const char *path, acl **out, char *err, size_t errlen)
{
    char *buf = NULL;
    size_t len = 0;
    int rc = acl__read_all(path, &buf, &len, err, errlen);
    if (rc == ACL_OK)
        rc = acl_parse(buf, len, path, out, err, errlen);
    gmq_free(buf);
    return rc;
}

/* ---- queries ------------------------------------------------------------- */

void acl_get_stats(const acl *a, acl_stats *out)
{
    *out = a->stats;
}

size_t acl_rule_count(const acl *a)
{
    return a->nrules;
}

const char *acl_file_name(const acl *a)
{
    return a->name;
}

bool acl_user_company(const acl *a, const char *user, const char **company)
{
    if (!user)
        return false;
    const acl__slot *s = acl__map_find(&a->user_map, 0, user, strlen(user));
    if (!s)
        return false;
    int32_t c = a->sections[s->idx].company;
    *company = c < 0 ? NULL : a->companies[c].name;
    return true;
}

/* ---- matching ------------------------------------------------------------ */

/* Substitution values of one check; index 0 %d, 1 %u, 2 %c. */
typedef struct acl__vals {
    const char *v[3];
    size_t n[3];
} acl__vals;

/* Can s be substituted into a filter without widening it? It must stay
 * inside one level and be a possible topic level. */
static bool acl__value_ok(const char *s, size_t *n)
{
    if (!s)
        return false;
    size_t len = strnlen(s, ACL__TOPIC_MAX + 1);
    *n = len;
    if (len == 0 || len > ACL__TOPIC_MAX || s[0] == '$')
        return false;
    for (size_t i = 0; i < len; i++)
        if (s[i] == '/' || s[i] == '+' || s[i] == '#')
            return false;
    return mqtt_utf8_valid((const uint8_t *)s, len);
}

/* Is template level l, with values v, byte-equal to s[0..n)? */
static bool acl__tmpl_eq(const acl__level *l, const acl__vals *v, const char *s, size_t n)
{
    size_t j = 0;
    for (size_t i = 0; i < l->len; i++) {
        char c = l->p[i];
        if (c == '%') {
            c = l->p[++i];
            if (c != '%') {
                int k = c == 'd' ? 0 : c == 'u' ? 1 : 2;
                size_t vl = v->n[k];
                if (n - j < vl || memcmp(s + j, v->v[k], vl) != 0)
                    return false;
                j += vl;
                continue;
            }
        }
        if (j == n || s[j] != c)
            return false;
        j++;
    }
    return j == n;
}

/* Topic levels are short: a loop beats a call to memcmp. */
static bool acl__bytes_eq(const char *a, const char *b, size_t n)
{
    if (n > 16)
        return memcmp(a, b, n) == 0;
    for (size_t i = 0; i < n; i++)
        if (a[i] != b[i])
            return false;
    return true;
}

static bool acl__level_eq(const acl__level *l, const acl__vals *v, const char *s, size_t n)
{
    if (l->kind == ACL__TMPL)
        return acl__tmpl_eq(l, v, s, n);
    return l->len == n && acl__bytes_eq(l->p, s, n);
}

/* A topic name split once per check, so that each rule compares levels
 * rather than searching for slashes again. Topics deeper than
 * ACL__SPLIT_MAX levels take the general path (acl__covers). */
#define ACL__SPLIT_MAX 32

typedef struct acl__tlevel {
    const char *p;
    uint32_t len;
    uint32_t hash; /* acl__level_hash */
} acl__tlevel;

/* Levels of topic name s[0..len) into t; false if there are more than
 * ACL__SPLIT_MAX. */
static bool acl__split(const char *s, size_t len, acl__tlevel *t, size_t *nt)
{
    size_t n = 0, start = 0;
    uint32_t h = 2166136261u;
    for (size_t i = 0;; i++) {
        if (i < len && s[i] != '/') {
            h ^= (unsigned char)s[i];
            h *= 16777619u;
            continue;
        }
        if (n == ACL__SPLIT_MAX)
            return false;
        t[n++] = (acl__tlevel){ s + start, (uint32_t)(i - start), h };
        if (i == len)
            break;
        start = i + 1;
        h = 2166136261u;
    }
    *nt = n;
    return true;
}

/* Does the rule filter lv[0..nlv), with values v, match the split topic
 * name t[0..nt)? dollar: the topic starts with '$'. The same answer as
 * acl__covers with the topic as inner. */
static bool acl__matches(const acl__level *lv, size_t nlv, const acl__vals *v,
                         const acl__tlevel *t, size_t nt, bool dollar)
{
    for (size_t i = 0;; i++) {
        if (i == nlv)
            return i == nt;
        const acl__level *l = &lv[i];
        if (l->kind == ACL__HASH) /* this level and all below, and the parent */
            return !(i == 0 && dollar); /* [MQTT-4.7.2-1] */
        if (i == nt)
            return false;
        if (l->kind == ACL__PLUS) {
            if (i == 0 && dollar)
                return false;
        } else if (l->kind == ACL__LIT) {
            if (l->hash != t[i].hash || l->len != t[i].len || !acl__bytes_eq(l->p, t[i].p, l->len))
                return false;
        } else if (!acl__tmpl_eq(l, v, t[i].p, t[i].len)) {
            return false;
        }
    }
}

/* Levels of a plain filter or topic, one at a time. */
typedef struct acl__cursor {
    const char *s;
    size_t len, pos; /* pos > len: exhausted */
} acl__cursor;

static bool acl__next(acl__cursor *c, acl__level *out)
{
    if (c->pos > c->len)
        return false;
    const char *p = c->s + c->pos;
    const char *slash = memchr(p, '/', c->len - c->pos);
    size_t n = slash ? (size_t)(slash - p) : c->len - c->pos;
    c->pos += n + 1;
    out->p = p;
    out->len = (uint32_t)n;
    out->kind = n == 1 && p[0] == '+' ? ACL__PLUS : n == 1 && p[0] == '#' ? ACL__HASH : ACL__LIT;
    return true;
}

/* The outer side of a comparison: a rule's levels with the check's values,
 * or (lv == NULL) a plain filter walked by a cursor. */
typedef struct acl__outer {
    const acl__level *lv;
    size_t nlv, i;
    const acl__vals *vals;
    acl__cursor cur;
} acl__outer;

static bool acl__outer_next(acl__outer *o, acl__level *out)
{
    if (!o->lv)
        return acl__next(&o->cur, out);
    if (o->i == o->nlv)
        return false;
    *out = o->lv[o->i++];
    return true;
}

/* A first level that only a topic starting with '$' can have. */
static bool acl__dollar(const acl__level *l)
{
    return l->kind != ACL__PLUS && l->kind != ACL__HASH && l->len > 0 && l->p[0] == '$';
}

/* Every topic inner matches is matched by outer. With a topic name as
 * inner this is "outer matches the topic". */
static bool acl__covers(acl__outer *o, const char *inner, size_t ilen)
{
    acl__cursor ic = { inner, ilen, 0 };
    acl__level ol, il;
    for (bool first = true;; first = false) {
        bool ho = acl__outer_next(o, &ol), hi = acl__next(&ic, &il);
        if (!ho)
            return !hi;
        if (ol.kind == ACL__HASH) /* this level and all below, and the parent */
            return !(first && hi && acl__dollar(&il)); /* [MQTT-4.7.2-1] */
        if (!hi)
            return false;
        if (il.kind == ACL__HASH)
            return false; /* inner reaches deeper than a single outer level */
        if (ol.kind == ACL__PLUS) {
            if (first && acl__dollar(&il))
                return false;
        } else if (il.kind != ACL__LIT || !acl__level_eq(&ol, o->vals, il.p, il.len)) {
            return false;
        }
    }
}

/* Some topic name matches both. */
static bool acl__overlaps(acl__outer *o, const char *b, size_t blen)
{
    acl__cursor bc = { b, blen, 0 };
    acl__level al, bl;
    for (bool first = true;; first = false) {
        bool ha = acl__outer_next(o, &al), hb = acl__next(&bc, &bl);
        if (!ha || !hb) /* "a/#" also matches "a" */
            return ha == hb || (ha ? al.kind : bl.kind) == ACL__HASH;
        bool wa = al.kind == ACL__PLUS || al.kind == ACL__HASH;
        bool wb = bl.kind == ACL__PLUS || bl.kind == ACL__HASH;
        if (first && ((wa && acl__dollar(&bl)) || (wb && acl__dollar(&al))))
            return false; /* [MQTT-4.7.2-1] */
        if (al.kind == ACL__HASH || bl.kind == ACL__HASH)
            return true;
        if (!wa && !wb && !acl__level_eq(&al, o->vals, bl.p, bl.len))
            return false;
    }
}

bool acl_filter_covers(const char *outer, size_t olen, const char *inner, size_t ilen)
{
    if (!mqtt_topic_filter_valid((const uint8_t *)outer, olen) ||
        !mqtt_topic_filter_valid((const uint8_t *)inner, ilen))
        return false;
    acl__outer o = { .cur = { outer, olen, 0 } };
    return acl__covers(&o, inner, ilen);
}

bool acl_filter_overlaps(const char *a, size_t alen, const char *b, size_t blen)
{
    if (!mqtt_topic_filter_valid((const uint8_t *)a, alen) ||
        !mqtt_topic_filter_valid((const uint8_t *)b, blen))
        return false;
    acl__outer o = { .cur = { a, alen, 0 } };
    return acl__overlaps(&o, b, blen);
}

/* ---- checks -------------------------------------------------------------- */

static const char ACL__NO_RULE[] = "no rule matched: denied by default";

static acl_decision acl__deny(const acl *a, const char *reason)
{
    return (acl_decision){ .allow = false, .file = a->name, .line = 0, .reason = reason };
}

/* The principal's sections in evaluation order; returns how many, or sets
 * *reason when the principal itself is refused. */
static size_t acl__sections_of(const acl *a, const acl_principal *p, const acl__section *out[2],
                               const char **reason)
{
    size_t n = 0;
    const acl__slot *s;
    switch (p->kind) {
    case ACL_DEVICE:
        if (!p->company || !p->device) {
            *reason = "device without a company or device id: denied";
            return 0;
        }
        s = acl__map_find(&a->company_map, 0, p->company, strlen(p->company));
        if (!s)
            return 0;
        const acl__company *c = &a->companies[s->idx];
        const acl__slot *d = acl__map_find(&a->device_map, s->idx + 1, p->device, strlen(p->device));
        if (d)
            out[n++] = &a->sections[d->idx];
        if (c->group >= 0)
            out[n++] = &a->sections[c->group];
        return n;
    case ACL_USER:
        if (!p->username || !(s = acl__map_find(&a->user_map, 0, p->username, strlen(p->username)))) {
            *reason = "user not in the ACL file: denied";
            return 0;
        }
        const acl__section *u = &a->sections[s->idx];
        if (u->company < 0 ? p->company != NULL
                           : !p->company || strcmp(p->company, a->companies[u->company].name) != 0) {
            *reason = "the user's company is not the one the ACL file gives: denied";
            return 0;
        }
        out[n++] = u;
        return n;
    case ACL_ANONYMOUS:
        if (a->anon >= 0)
            out[n++] = &a->sections[a->anon];
        return n;
    }
    *reason = "unknown principal kind: denied";
    return 0;
}

/* Which substitution values p has that are unusable (ACL__VAR_* mask). */
static uint8_t acl__values(const acl_principal *p, acl__vals *v)
{
    uint8_t bad = 0;
    const char *src[3] = { p->kind == ACL_DEVICE ? p->device : NULL,
                           p->kind == ACL_USER ? p->username : NULL, p->client_id };
    for (int k = 0; k < 3; k++) {
        v->v[k] = src[k];
        v->n[k] = 0;
        if (!acl__value_ok(src[k], &v->n[k]))
            bad |= (uint8_t)(1u << k);
    }
    return bad;
}

static acl_decision acl__check(const acl *a, const acl_principal *p, uint8_t op,
                               bool subscribe, const char *s, size_t len)
{
    const char *reason = ACL__NO_RULE;
    const acl__section *sec[2];
    size_t nsec = acl__sections_of(a, p, sec, &reason);
    /* The principal's values are looked at only once a rule uses one. */
    acl__vals vals = { 0 };
    uint8_t bad = 0;
    bool have_vals = false;
    bool partial = false;
    acl__tlevel tl[ACL__SPLIT_MAX];
    size_t ntl = 0;
    bool split = !subscribe && acl__split(s, len, tl, &ntl);
    bool dollar = len > 0 && s[0] == '$';
    /* A rule whose first level is a literal other than s's cannot match,
     * cover or overlap s, unless s starts with a wildcard. */
    bool quick;
    uint32_t h0;
    if (split) {
        quick = true; /* a topic name has no wildcard */
        h0 = tl[0].hash;
    } else {
        const char *slash = memchr(s, '/', len);
        size_t l0 = slash ? (size_t)(slash - s) : len;
        quick = !(l0 == 1 && (s[0] == '+' || s[0] == '#'));
        h0 = acl__level_hash(s, l0);
    }
    for (size_t k = 0; k < nsec; k++) {
        if (sec[k]->count == 0)
            continue; /* and a file without rules has no rule array at all */
        const acl__rule *r = a->rules + sec[k]->first;
        for (const acl__rule *end = r + sec[k]->count; r < end; r++) {
            if (!(r->ops & op))
                continue;
            if (r->vars && !have_vals) {
                bad = acl__values(p, &vals);
                have_vals = true;
            }
            acl__outer o = { .lv = a->levels + r->lv, .nlv = r->nlv, .vals = &vals };
            bool decides;
            if (r->vars & bad)
                decides = !r->allow; /* an unusable value only ever takes access away */
            else if (quick && r->first_lit && r->first_hash != h0)
                decides = false;
            else if (split)
                decides = acl__matches(o.lv, r->nlv, &vals, tl, ntl, dollar);
            else if (!r->allow)
                decides = subscribe ? acl__overlaps(&o, s, len) : acl__covers(&o, s, len);
            else if (!subscribe)
                decides = acl__covers(&o, s, len);
            else if (acl__covers(&o, s, len))
                decides = true;
            else {
                o.i = 0;
                partial |= acl__overlaps(&o, s, len);
                decides = false;
            }
            if (decides)
                return (acl_decision){ .allow = r->allow, .file = a->name, .line = r->line,
                                       .rule = r->text, .reason = "rule" };
        }
    }
    if (partial)
        reason = "no single rule covers the whole filter: denied by default";
    return acl__deny(a, reason);
}

acl_decision acl_check_publish(const acl *a, const acl_principal *p, const char *topic,
                               size_t len)
{
    if (!mqtt_topic_name_valid((const uint8_t *)topic, len))
        return acl__deny(a, "invalid topic name: denied");
    return acl__check(a, p, ACL__WRITE, false, topic, len);
}

acl_decision acl_check_read(const acl *a, const acl_principal *p, const char *topic, size_t len)
{
    if (!mqtt_topic_name_valid((const uint8_t *)topic, len))
        return acl__deny(a, "invalid topic name: denied");
    return acl__check(a, p, ACL__READ, false, topic, len);
}

acl_decision acl_check_subscribe(const acl *a, const acl_principal *p, const char *filter,
                                 size_t len)
{
    if (!mqtt_topic_filter_valid((const uint8_t *)filter, len))
        return acl__deny(a, "invalid topic filter: denied");
    return acl__check(a, p, ACL__READ, true, filter, len);
}
