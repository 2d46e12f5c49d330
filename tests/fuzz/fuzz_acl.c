/*
 * fuzz_acl.c - the ACL parser and checks, against a reference evaluator.
 *
 * The input is an ACL file (name "fuzz"). When acl_parse accepts it, the
 * target reads the same text with its own small reader - sections, rules in
 * order - and derives principals (every declared device and user, plus
 * strangers and a user claiming the wrong company, and anonymous clients)
 * and topics and filters (each rule's filter with the principal's values
 * substituted, wildcards filled in or kept). For each principal and each
 * topic or filter, acl_check_publish/read/subscribe must give the verdict
 * and the deciding line of the reference: the principal's sections in order,
 * the first rule concerning the operation that decides (topic: the rule's
 * filter matches; subscribe: an allow rule covers, a deny rule overlaps; a
 * rule using an unusable value decides only to deny). On top: the decision
 * fields are consistent, a rule's text is found in the file, and an allowed
 * subscription never delivers a topic the read check refuses.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "auth/acl.h"
#include "fuzz_util.h"
#include "mqtt.h"

#define MAX_PRINCIPALS 8
#define MAX_PATTERNS 4 /* rule filters topics are derived from */
#define MAX_STRINGS 24
#define STR_CAP 512

enum { OP_READ = 1, OP_WRITE = 2 };
enum { S_GROUP, S_DEVICE, S_USER, S_ANON };

typedef struct word {
    const char *p;
    size_t n;
} word;

typedef struct ref_rule {
    bool allow;
    uint8_t ops;
    word filter;
    int line;
} ref_rule;

typedef struct ref_section {
    int kind;
    int company; /* index into companies, -1 for platform users and anonymous */
    word name;
    size_t first, count;
} ref_section;

typedef struct ref_acl {
    word *companies;
    size_t ncompanies;
    ref_section *sections;
    size_t nsections;
    ref_rule *rules;
    size_t nrules;
} ref_acl;

static bool word_is(const word *w, const char *kw)
{
    return w->n == strlen(kw) && memcmp(w->p, kw, w->n) == 0;
}

static bool word_eq_str(const word *w, const char *s)
{
    return s && strlen(s) == w->n && memcmp(w->p, s, w->n) == 0;
}

static size_t split_words(const char *line, size_t n, word *w, size_t max)
{
    size_t nw = 0, i = 0;
    while (nw < max) {
        while (i < n && (line[i] == ' ' || line[i] == '\t'))
            i++;
        if (i == n)
            break;
        size_t s = i;
        while (i < n && line[i] != ' ' && line[i] != '\t')
            i++;
        w[nw++] = (word){ line + s, i - s };
    }
    return nw;
}

/* Reads a file acl_parse accepted: the structure only, no validation. */
static ref_acl ref_read(const char *text, size_t len)
{
    ref_acl m = { 0 };
    m.companies = calloc(len / 8 + 1, sizeof *m.companies);
    m.sections = calloc(len / 6 + 1, sizeof *m.sections);
    m.rules = calloc(len / 3 + 1, sizeof *m.rules);
    FUZZ_CHECK(m.companies && m.sections && m.rules);
    int company = -1;
    int section = -1;
    int lineno = 0;
    for (size_t pos = 0; pos < len;) {
        const char *line = text + pos;
        const char *nl = memchr(line, '\n', len - pos);
        size_t n = nl ? (size_t)(nl - line) : len - pos;
        pos += n + (nl ? 1 : 0);
        lineno++;
        if (n > 0 && line[n - 1] == '\r')
            n--;
        word w[4];
        size_t nw = split_words(line, n, w, 4);
        if (nw == 0 || w[0].p[0] == '#')
            continue;
        ref_section *s = &m.sections[m.nsections];
        if (word_is(&w[0], "company")) {
            m.companies[m.ncompanies] = w[1];
            company = (int)m.ncompanies++;
            section = -1;
        } else if (word_is(&w[0], "platform")) {
            company = -1;
            section = -1;
        } else if (word_is(&w[0], "anonymous")) {
            *s = (ref_section){ S_ANON, -1, { "", 0 }, m.nrules, 0 };
            section = (int)m.nsections++;
        } else if (word_is(&w[0], "devices")) {
            *s = (ref_section){ S_GROUP, company, { "", 0 }, m.nrules, 0 };
            section = (int)m.nsections++;
        } else if (word_is(&w[0], "device")) {
            *s = (ref_section){ S_DEVICE, company, w[1], m.nrules, 0 };
            section = (int)m.nsections++;
        } else if (word_is(&w[0], "user")) {
            *s = (ref_section){ S_USER, company, w[1], m.nrules, 0 };
            section = (int)m.nsections++;
        } else {
            FUZZ_CHECK(section >= 0);
            ref_rule *r = &m.rules[m.nrules++];
            r->allow = !word_is(&w[0], "deny");
            r->line = lineno;
            const word *act = &w[0];
            size_t fi = 1;
            /* acl_parse refuses "deny read" without a filter, so in an
             * accepted file a second word "read" after deny is the action. */
            if (!r->allow && nw > 2 &&
                (word_is(&w[1], "read") || word_is(&w[1], "write") || word_is(&w[1], "readwrite"))) {
                act = &w[1];
                fi = 2;
            }
            r->ops = word_is(act, "read") ? OP_READ : word_is(act, "write") ? OP_WRITE
                                                                            : OP_READ | OP_WRITE;
            r->filter = w[fi];
            m.sections[section].count++;
        }
    }
    return m;
}

static void ref_free(ref_acl *m)
{
    free(m->companies);
    free(m->sections);
    free(m->rules);
}

/* ---- reference evaluation -------------------------------------------------- */

static bool value_ok(const char *s)
{
    if (!s)
        return false;
    size_t n = strlen(s);
    return n > 0 && n <= 65535 && s[0] != '$' && !strpbrk(s, "/+#") &&
           mqtt_utf8_valid((const uint8_t *)s, n);
}

/* The rule's filter with the principal's values; false when it uses an
 * unusable one (or the result would not fit, which small inputs never hit). */
static bool expand(const word *f, const acl_principal *p, char *out, size_t cap, size_t *outn,
                   bool *unusable)
{
    const char *vd = p->kind == ACL_DEVICE ? p->device : NULL;
    const char *vu = p->kind == ACL_USER ? p->username : NULL;
    size_t o = 0;
    *unusable = false;
    for (size_t i = 0; i < f->n; i++) {
        const char *ins;
        char one[2] = { f->p[i], 0 };
        if (f->p[i] == '%') {
            char c = f->p[++i];
            ins = c == '%' ? "%" : c == 'd' ? vd : c == 'u' ? vu : p->client_id;
            if (c != '%' && !value_ok(ins)) {
                *unusable = true;
                ins = "";
            }
        } else {
            ins = one;
        }
        size_t k = strlen(ins);
        if (cap - o < k)
            return false;
        memcpy(out + o, ins, k);
        o += k;
    }
    *outn = o;
    return true;
}

static size_t sections_of(const ref_acl *m, const acl_principal *p, const ref_section *out[2])
{
    size_t n = 0;
    switch (p->kind) {
    case ACL_DEVICE: {
        if (!p->company || !p->device)
            return 0;
        int c = -1;
        for (size_t i = 0; i < m->ncompanies; i++)
            if (word_eq_str(&m->companies[i], p->company))
                c = (int)i;
        if (c < 0)
            return 0;
        for (size_t i = 0; i < m->nsections; i++)
            if (m->sections[i].kind == S_DEVICE && m->sections[i].company == c &&
                word_eq_str(&m->sections[i].name, p->device))
                out[n++] = &m->sections[i];
        for (size_t i = 0; i < m->nsections; i++)
            if (m->sections[i].kind == S_GROUP && m->sections[i].company == c)
                out[n++] = &m->sections[i];
        return n;
    }
    case ACL_USER:
        for (size_t i = 0; i < m->nsections; i++) {
            const ref_section *s = &m->sections[i];
            if (s->kind != S_USER || !word_eq_str(&s->name, p->username))
                continue;
            bool same = s->company < 0 ? p->company == NULL
                                       : word_eq_str(&m->companies[s->company], p->company);
            if (same)
                out[n++] = s;
            return n;
        }
        return 0;
    case ACL_ANONYMOUS:
        for (size_t i = 0; i < m->nsections; i++)
            if (m->sections[i].kind == S_ANON)
                out[n++] = &m->sections[i];
        return n;
    }
    return 0;
}

/* The verdict; *line is the deciding rule's line or 0. */
static bool ref_check(const ref_acl *m, const acl_principal *p, uint8_t op, bool subscribe,
                      const char *s, size_t len, int *line, bool *undecidable)
{
    *line = 0;
    bool valid = subscribe ? mqtt_topic_filter_valid((const uint8_t *)s, len)
                           : mqtt_topic_name_valid((const uint8_t *)s, len);
    if (!valid)
        return false;
    const ref_section *sec[2];
    size_t nsec = sections_of(m, p, sec);
    static char buf[65536 + 16];
    for (size_t k = 0; k < nsec; k++) {
        for (size_t i = sec[k]->first; i < sec[k]->first + sec[k]->count; i++) {
            const ref_rule *r = &m->rules[i];
            if (!(r->ops & op))
                continue;
            size_t n;
            bool unusable, decides;
            if (!expand(&r->filter, p, buf, sizeof buf, &n, &unusable)) {
                *undecidable = true;
                return false;
            }
            if (unusable)
                decides = !r->allow;
            else if (!subscribe)
                decides = mqtt_topic_match((const uint8_t *)buf, n, (const uint8_t *)s, len);
            else if (r->allow)
                decides = acl_filter_covers(buf, n, s, len);
            else
                decides = acl_filter_overlaps(buf, n, s, len);
            if (decides) {
                *line = r->line;
                return r->allow;
            }
        }
    }
    return false;
}

/* ---- derived principals, topics and filters ------------------------------ */

typedef struct strset {
    char s[MAX_STRINGS][STR_CAP];
    size_t n[MAX_STRINGS];
    size_t count;
} strset;

static void add_str(strset *ss, const char *p, size_t n)
{
    if (ss->count == MAX_STRINGS || n >= STR_CAP)
        return;
    for (size_t i = 0; i < ss->count; i++)
        if (ss->n[i] == n && memcmp(ss->s[i], p, n) == 0)
            return;
    memcpy(ss->s[ss->count], p, n);
    ss->s[ss->count][n] = '\0';
    ss->n[ss->count++] = n;
}

/* From filter f: f itself, f with '+' filled ("x") and a trailing '#'
 * dropped (the parent level) or filled ("x/y"). */
static void derive(strset *topics, strset *filters, const char *f, size_t n)
{
    char t1[STR_CAP], t2[STR_CAP];
    size_t a = 0, b = 0;
    if (n + 4 >= STR_CAP)
        return;
    add_str(filters, f, n);
    add_str(topics, f, n);
    for (size_t i = 0; i < n; i++) {
        bool lv_start = i == 0 || f[i - 1] == '/';
        bool lv_end = i + 1 == n || f[i + 1] == '/';
        if (lv_start && lv_end && f[i] == '+') {
            t1[a++] = 'x';
            t2[b++] = 'x';
        } else if (lv_start && lv_end && f[i] == '#') {
            if (a > 0)
                a--; /* "a/#" -> "a" */
            memcpy(t2 + b, "x/y", 3);
            b += 3;
        } else {
            t1[a++] = f[i];
            t2[b++] = f[i];
        }
    }
    if (a > 0)
        add_str(topics, t1, a);
    add_str(topics, t2, b);
}

typedef struct principals {
    acl_principal p[MAX_PRINCIPALS];
    char store[MAX_PRINCIPALS][3][STR_CAP];
    size_t n;
} principals;

static const char *keep(principals *ps, int slot, const word *w)
{
    if (!w)
        return NULL;
    size_t n = w->n < STR_CAP ? w->n : STR_CAP - 1;
    memcpy(ps->store[ps->n][slot], w->p, n);
    ps->store[ps->n][slot][n] = '\0';
    return ps->store[ps->n][slot];
}

static void add_principal(principals *ps, acl_kind kind, const word *company,
                          const word *name, const word *client_id)
{
    if (ps->n == MAX_PRINCIPALS)
        return;
    acl_principal *p = &ps->p[ps->n];
    const char *nm = keep(ps, 1, name);
    *p = (acl_principal){ .kind = kind, .company = keep(ps, 0, company),
                          .device = kind == ACL_DEVICE ? nm : NULL,
                          .username = kind == ACL_USER ? nm : NULL,
                          .client_id = keep(ps, 2, client_id) };
    ps->n++;
}

static void derive_principals(const ref_acl *m, principals *ps)
{
    static const word stranger = { "stranger", 8 }, wrong = { "no-such-company", 15 },
                      cid = { "client-1", 8 }, dollar = { "$bad", 4 };
    for (size_t i = 0; i < m->nsections && ps->n + 3 <= MAX_PRINCIPALS; i++) {
        const ref_section *s = &m->sections[i];
        const word *co = s->company >= 0 ? &m->companies[s->company] : NULL;
        switch (s->kind) {
        case S_DEVICE:
            add_principal(ps, ACL_DEVICE, co, &s->name, &s->name);
            break;
        case S_GROUP:
            add_principal(ps, ACL_DEVICE, co, &stranger, &stranger);
            add_principal(ps, ACL_DEVICE, co, &dollar, &dollar);
            break;
        case S_USER:
            add_principal(ps, ACL_USER, co, &s->name, &cid);
            add_principal(ps, ACL_USER, co ? NULL : &wrong, &s->name, NULL);
            break;
        case S_ANON:
            add_principal(ps, ACL_ANONYMOUS, NULL, NULL, &cid);
            add_principal(ps, ACL_ANONYMOUS, NULL, NULL, NULL);
            break;
        }
    }
    add_principal(ps, ACL_USER, NULL, &stranger, &cid);
}

/* ---- the checks ------------------------------------------------------------ */

static void check_decision(const acl *a, const acl_decision *d, const char *text, size_t len)
{
    FUZZ_CHECK(d->reason != NULL);
    FUZZ_CHECK(d->file == acl_file_name(a));
    if (d->rule) {
        FUZZ_CHECK(d->line > 0 && strcmp(d->reason, "rule") == 0);
        FUZZ_CHECK(memmem(text, len, d->rule, strlen(d->rule)) != NULL);
    } else {
        FUZZ_CHECK(d->line == 0 && !d->allow);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *text = (const char *)data;
    acl *a = NULL;
    char err[256];
    err[0] = 'x';
    if (acl_parse(text, size, "fuzz", &a, err, sizeof err) != ACL_OK) {
        FUZZ_CHECK(a == NULL && memchr(err, '\0', sizeof err) && err[0] != '\0');
        return 0;
    }
    FUZZ_CHECK(a != NULL && strcmp(acl_file_name(a), "fuzz") == 0);

    ref_acl m = ref_read(text, size);
    FUZZ_CHECK(acl_rule_count(a) == m.nrules);
    acl_stats st;
    acl_get_stats(a, &st);
    FUZZ_CHECK(st.rules == m.nrules && st.companies == m.ncompanies);

    principals *ps = calloc(1, sizeof *ps);
    strset *topics = calloc(1, sizeof *topics), *filters = calloc(1, sizeof *filters);
    FUZZ_CHECK(ps && topics && filters);
    derive_principals(&m, ps);

    /* Users resolve to the company of their section. */
    for (size_t i = 0; i < m.nsections; i++) {
        const ref_section *s = &m.sections[i];
        if (s->kind != S_USER || s->name.n >= STR_CAP)
            continue;
        char name[STR_CAP];
        memcpy(name, s->name.p, s->name.n);
        name[s->name.n] = '\0';
        const char *co = "unset";
        FUZZ_CHECK(acl_user_company(a, name, &co));
        if (s->company < 0)
            FUZZ_CHECK(co == NULL);
        else
            FUZZ_CHECK(word_eq_str(&m.companies[s->company], co));
    }

    static const char *const fixed[] = { "#", "+", "+/+", "$SYS/x", "x", "x/y" };
    for (size_t i = 0; i < sizeof fixed / sizeof fixed[0]; i++)
        derive(topics, filters, fixed[i], strlen(fixed[i]));
    for (size_t k = 0; k < ps->n; k++) {
        for (size_t i = 0, used = 0; i < m.nrules && used < MAX_PATTERNS; i++, used++) {
            char buf[STR_CAP];
            size_t n;
            bool unusable;
            if (expand(&m.rules[i].filter, &ps->p[k], buf, sizeof buf, &n, &unusable))
                derive(topics, filters, buf, n);
        }
    }

    for (size_t k = 0; k < ps->n; k++) {
        const acl_principal *p = &ps->p[k];
        for (size_t i = 0; i < topics->count; i++) {
            const char *t = topics->s[i];
            size_t tn = topics->n[i];
            acl_decision dp = acl_check_publish(a, p, t, tn);
            acl_decision dr = acl_check_read(a, p, t, tn);
            check_decision(a, &dp, text, size);
            check_decision(a, &dr, text, size);
            int line;
            bool undecidable = false;
            bool want = ref_check(&m, p, OP_WRITE, false, t, tn, &line, &undecidable);
            if (!undecidable)
                FUZZ_CHECK(dp.allow == want && dp.line == line);
            undecidable = false;
            want = ref_check(&m, p, OP_READ, false, t, tn, &line, &undecidable);
            if (!undecidable)
                FUZZ_CHECK(dr.allow == want && dr.line == line);
        }
        for (size_t i = 0; i < filters->count; i++) {
            const char *f = filters->s[i];
            size_t fn = filters->n[i];
            acl_decision ds = acl_check_subscribe(a, p, f, fn);
            check_decision(a, &ds, text, size);
            int line;
            bool undecidable = false;
            bool want = ref_check(&m, p, OP_READ, true, f, fn, &line, &undecidable);
            if (!undecidable)
                FUZZ_CHECK(ds.allow == want && ds.line == line);
            if (!ds.allow)
                continue;
            /* An allowed subscription delivers only what read allows. */
            for (size_t j = 0; j < topics->count; j++) {
                const char *t = topics->s[j];
                size_t tn = topics->n[j];
                if (!mqtt_topic_name_valid((const uint8_t *)t, tn) ||
                    !mqtt_topic_match((const uint8_t *)f, fn, (const uint8_t *)t, tn))
                    continue;
                FUZZ_CHECK(acl_check_read(a, p, t, tn).allow);
            }
        }
    }

    free(ps);
    free(topics);
    free(filters);
    ref_free(&m);
    acl_free(a);
    return 0;
}
