/*
 * fuzz_topic.c - topic names, filters and matching, against a reference model.
 *
 * The input is a list of lines: even lines (0, 2, ...) are topic filters, odd
 * lines topic names; line 0 and line 1 are the filter and topic of the simple
 * case, further lines populate the trees with more entries. For every valid
 * (filter, topic) pair the verdict of a plain reference matcher written here
 * (levels split into arrays, compared one by one) must agree with:
 *   - mqtt_topic_match;
 *   - topictree_match over a tree holding every valid filter, each with its
 *     own subscriber: exactly the matching subscribers, once each, with the
 *     QoS of their last subscribe;
 *   - retain_match over a store holding a message on every valid topic:
 *     exactly the matching topics' current messages, once each;
 *   - acl_filter_covers / acl_filter_overlaps with the topic as the inner
 *     filter, and their soundness between two filters.
 * Validity itself is compared with a reference UTF-8 decoder and level rules.
 * Finally every entry is removed again and both trees must be empty.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "auth/acl.h"
#include "broker/levelmap.h"
#include "broker/msg.h"
#include "broker/retain.h"
#include "broker/topictree.h"
#include "fuzz_util.h"
#include "mqtt.h"

#define MAX_LINES 16

/* ---- reference model ------------------------------------------------------ */

/* Decodes code points one at a time and judges each by its value. */
static bool ref_utf8(const uint8_t *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        uint32_t cp;
        size_t k;
        uint8_t b = s[i];
        if (b < 0x80) { cp = b; k = 0; }
        else if ((b & 0xe0) == 0xc0) { cp = b & 0x1f; k = 1; }
        else if ((b & 0xf0) == 0xe0) { cp = b & 0x0f; k = 2; }
        else if ((b & 0xf8) == 0xf0) { cp = b & 0x07; k = 3; }
        else return false;
        if (n - i - 1 < k)
            return false;
        for (size_t j = 1; j <= k; j++) {
            if ((s[i + j] & 0xc0) != 0x80)
                return false;
            cp = cp << 6 | (s[i + j] & 0x3f);
        }
        static const uint32_t min_of[4] = { 0, 0x80, 0x800, 0x10000 };
        if (cp < min_of[k] || cp == 0 || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
            return false;
        i += k + 1;
    }
    return true;
}

typedef struct levels {
    size_t n;
    const uint8_t **p;
    size_t *len;
} levels;

static levels split_levels(const uint8_t *s, size_t n)
{
    levels l = { 0, NULL, NULL };
    size_t count = 1;
    for (size_t i = 0; i < n; i++)
        count += s[i] == '/';
    l.p = malloc(count * sizeof *l.p);
    l.len = malloc(count * sizeof *l.len);
    FUZZ_CHECK(l.p && l.len);
    size_t start = 0;
    for (size_t i = 0; i <= n; i++) {
        if (i < n && s[i] != '/')
            continue;
        l.p[l.n] = s + start;
        l.len[l.n] = i - start;
        l.n++;
        start = i + 1;
    }
    return l;
}

static void levels_free(levels *l)
{
    free(l->p);
    free(l->len);
}

static bool lv_is(const levels *l, size_t i, char c)
{
    return l->len[i] == 1 && l->p[i][0] == c;
}

static bool ref_filter_valid(const uint8_t *s, size_t n)
{
    if (n == 0 || n > 65535 || !ref_utf8(s, n))
        return false;
    levels l = split_levels(s, n);
    bool ok = true;
    for (size_t i = 0; i < l.n && ok; i++) {
        bool wild = memchr(l.p[i], '+', l.len[i]) || memchr(l.p[i], '#', l.len[i]);
        if (wild && !lv_is(&l, i, '+') && !lv_is(&l, i, '#'))
            ok = false;
        if (lv_is(&l, i, '#') && i + 1 != l.n)
            ok = false;
    }
    levels_free(&l);
    return ok;
}

static bool ref_name_valid(const uint8_t *s, size_t n)
{
    return n > 0 && n <= 65535 && ref_utf8(s, n) && !memchr(s, '+', n) && !memchr(s, '#', n);
}

static bool ref_match(const uint8_t *f, size_t fn, const uint8_t *t, size_t tn)
{
    if (t[0] == '$' && (f[0] == '+' || f[0] == '#'))
        return false; /* [MQTT-4.7.2-1] */
    levels fl = split_levels(f, fn), tl = split_levels(t, tn);
    bool m = false;
    size_t i = 0;
    for (;; i++) {
        if (i < fl.n && lv_is(&fl, i, '#')) {
            m = true; /* also the parent: "a/#" matches "a" */
            break;
        }
        if (i == fl.n || i == tl.n) {
            m = i == fl.n && i == tl.n;
            break;
        }
        if (!lv_is(&fl, i, '+') &&
            (fl.len[i] != tl.len[i] || memcmp(fl.p[i], tl.p[i], fl.len[i]) != 0))
            break;
    }
    levels_free(&fl);
    levels_free(&tl);
    return m;
}

/* ---- the input as lines ----------------------------------------------------- */

typedef struct line {
    const uint8_t *p;
    size_t n;
    bool valid;
} line;

typedef struct model {
    line filter[MAX_LINES];
    size_t nf;
    line topic[MAX_LINES];
    size_t nt;
    size_t uniq[MAX_LINES]; /* topic i's first equal topic */
    bool match[MAX_LINES][MAX_LINES]; /* reference verdict: filter i, topic j */
    gmq_msg *cur[MAX_LINES];    /* current retained message of a first topic */
    size_t cur_len[MAX_LINES];  /* its payload size (the store may free it) */
} model;

static bool line_eq(const line *a, const line *b)
{
    return a->n == b->n && memcmp(a->p, b->p, a->n) == 0;
}

/* ---- callbacks -------------------------------------------------------------- */

typedef struct tt_seen {
    unsigned hits[MAX_LINES];
    uint8_t qos[MAX_LINES];
} tt_seen;

static void tt_cb(void *subscriber, uint8_t qos, void *arg)
{
    tt_seen *s = arg;
    uintptr_t id = (uintptr_t)subscriber;
    FUZZ_CHECK(id >= 1 && id <= MAX_LINES);
    s->hits[id - 1]++;
    s->qos[id - 1] = qos;
}

typedef struct rt_seen {
    const model *m;
    unsigned hits[MAX_LINES];
} rt_seen;

static void rt_cb(gmq_msg *msg, void *arg)
{
    rt_seen *s = arg;
    for (size_t i = 0; i < s->m->nt; i++) {
        if (s->m->cur[i] == msg) {
            s->hits[i]++;
            return;
        }
    }
    FUZZ_CHECK(!"retain_match reported a message the store should not hold");
}

static uint8_t qos_of(size_t i)
{
    return (uint8_t)(i % 3);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    /* A fixed hash key makes every run reproducible (read-only afterwards). */
    static const uint8_t key[16] = { 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16 };
    levelmap_set_key(key);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    model m;
    memset(&m, 0, sizeof m);
    size_t pos = 0;
    for (size_t k = 0; k < 2 * MAX_LINES && pos <= size; k++) {
        const uint8_t *nl = size > pos ? memchr(data + pos, '\n', size - pos) : NULL;
        size_t n = nl ? (size_t)(nl - (data + pos)) : size - pos;
        line l = { data + pos, n, false };
        if (k % 2 == 0) {
            l.valid = mqtt_topic_filter_valid(l.p, l.n);
            FUZZ_CHECK(l.valid == ref_filter_valid(l.p, l.n));
            m.filter[m.nf++] = l;
        } else {
            l.valid = mqtt_topic_name_valid(l.p, l.n);
            FUZZ_CHECK(l.valid == ref_name_valid(l.p, l.n));
            FUZZ_CHECK(!l.valid || mqtt_topic_filter_valid(l.p, l.n));
            m.topic[m.nt++] = l;
        }
        FUZZ_CHECK(mqtt_utf8_valid(l.p, l.n) == ref_utf8(l.p, l.n));
        if (!nl)
            break;
        pos += n + 1;
    }

    /* The reference verdicts, once: the checks below consult them often. */
    for (size_t i = 0; i < m.nf; i++)
        for (size_t j = 0; j < m.nt; j++)
            m.match[i][j] = m.filter[i].valid && m.topic[j].valid &&
                            ref_match(m.filter[i].p, m.filter[i].n, m.topic[j].p, m.topic[j].n);

    /* The trees: every valid filter subscribed twice (the second subscribe
     * only updates the QoS), a retained message on every valid topic (a
     * repeated topic replaces the message). */
    topictree *tree = topictree_new();
    retain_store *rs = retain_new();
    FUZZ_CHECK(tree && rs);
    size_t nsubs = 0;
    for (size_t i = 0; i < m.nf; i++) {
        if (!m.filter[i].valid)
            continue;
        void *sub = (void *)(uintptr_t)(i + 1);
        const char *f = (const char *)m.filter[i].p;
        FUZZ_CHECK(topictree_add(tree, f, m.filter[i].n, sub, 2 - qos_of(i)) == 0);
        FUZZ_CHECK(topictree_add(tree, f, m.filter[i].n, sub, qos_of(i)) == 0);
        nsubs++;
    }
    FUZZ_CHECK(topictree_count(tree) == nsubs);
    size_t nret = 0, bytes = 0;
    for (size_t i = 0; i < m.nt; i++) {
        m.uniq[i] = i;
        for (size_t j = 0; j < i; j++) {
            if (line_eq(&m.topic[i], &m.topic[j])) {
                m.uniq[i] = j;
                break;
            }
        }
        if (!m.topic[i].valid)
            continue;
        size_t u = m.uniq[i];
        gmq_msg *msg = gmq_msg_new((const char *)m.topic[i].p, m.topic[i].n,
                                   (const uint8_t *)"v", 1 + i % 2, 0, true);
        FUZZ_CHECK(msg != NULL);
        FUZZ_CHECK(retain_set(rs, msg) == 0);
        if (m.cur[u])
            bytes -= m.cur_len[u];
        else
            nret++;
        bytes += msg->payload_len;
        m.cur[u] = msg; /* the store's reference keeps it alive */
        m.cur_len[u] = msg->payload_len;
        gmq_msg_unref(msg);
    }
    FUZZ_CHECK(retain_count(rs) == nret && retain_bytes(rs) == bytes);

    for (size_t j = 0; j < m.nt; j++) {
        const line *t = &m.topic[j];
        if (!t->valid)
            continue;
        FUZZ_CHECK(retain_get(rs, (const char *)t->p, t->n) == m.cur[m.uniq[j]]);
        tt_seen seen;
        memset(&seen, 0, sizeof seen);
        topictree_match(tree, (const char *)t->p, t->n, tt_cb, &seen);
        for (size_t i = 0; i < m.nf; i++) {
            const line *f = &m.filter[i];
            if (!f->valid) {
                FUZZ_CHECK(seen.hits[i] == 0);
                continue;
            }
            bool want = m.match[i][j];
            FUZZ_CHECK(mqtt_topic_match(f->p, f->n, t->p, t->n) == want);
            FUZZ_CHECK(seen.hits[i] == (want ? 1u : 0u));
            FUZZ_CHECK(!want || seen.qos[i] == qos_of(i));
            const char *fs = (const char *)f->p, *ts = (const char *)t->p;
            FUZZ_CHECK(acl_filter_covers(fs, f->n, ts, t->n) == want);
            FUZZ_CHECK(acl_filter_overlaps(fs, f->n, ts, t->n) == want);
            FUZZ_CHECK(acl_filter_overlaps(ts, t->n, fs, f->n) == want);
        }
    }

    for (size_t i = 0; i < m.nf; i++) {
        const line *f = &m.filter[i];
        if (!f->valid)
            continue;
        rt_seen seen;
        memset(&seen, 0, sizeof seen);
        seen.m = &m;
        retain_match(rs, (const char *)f->p, f->n, rt_cb, &seen);
        for (size_t j = 0; j < m.nt; j++) {
            const line *t = &m.topic[j];
            if (!t->valid || m.uniq[j] != j) {
                FUZZ_CHECK(seen.hits[j] == 0);
                continue;
            }
            bool want = m.match[i][j];
            FUZZ_CHECK(seen.hits[j] == (want ? 1u : 0u));
        }

        /* Two filters: covers and overlaps must be sound on every topic. */
        const char *a = (const char *)f->p;
        FUZZ_CHECK(acl_filter_covers(a, f->n, a, f->n));
        for (size_t k = 0; k < m.nf; k++) {
            const line *g = &m.filter[k];
            if (!g->valid)
                continue;
            const char *b = (const char *)g->p;
            bool cov = acl_filter_covers(a, f->n, b, g->n);
            bool ovl = acl_filter_overlaps(a, f->n, b, g->n);
            FUZZ_CHECK(ovl == acl_filter_overlaps(b, g->n, a, f->n));
            FUZZ_CHECK(!cov || ovl); /* every valid filter matches some topic */
            for (size_t j = 0; j < m.nt; j++) {
                const line *t = &m.topic[j];
                if (!t->valid)
                    continue;
                bool ma = m.match[i][j], mb = m.match[k][j];
                FUZZ_CHECK(!(cov && mb) || ma);
                FUZZ_CHECK(!(ma && mb) || ovl);
            }
        }
    }

    /* Tear down entry by entry: both trees must prune to nothing. */
    for (size_t i = 0; i < m.nf; i++) {
        if (!m.filter[i].valid)
            continue;
        void *sub = (void *)(uintptr_t)(i + 1);
        const char *f = (const char *)m.filter[i].p;
        FUZZ_CHECK(topictree_remove(tree, f, m.filter[i].n, sub));
        FUZZ_CHECK(!topictree_remove(tree, f, m.filter[i].n, sub));
    }
    FUZZ_CHECK(topictree_count(tree) == 0 && topictree_node_count(tree) == 0);
    for (size_t i = 0; i < m.nt; i++) {
        if (!m.topic[i].valid || m.uniq[i] != i)
            continue;
        gmq_msg *clear = gmq_msg_new((const char *)m.topic[i].p, m.topic[i].n, NULL, 0, 0, true);
        FUZZ_CHECK(clear != NULL);
        FUZZ_CHECK(retain_set(rs, clear) == 0);
        gmq_msg_unref(clear);
        FUZZ_CHECK(retain_get(rs, (const char *)m.topic[i].p, m.topic[i].n) == NULL);
    }
    FUZZ_CHECK(retain_count(rs) == 0 && retain_bytes(rs) == 0);
    FUZZ_CHECK(retain_node_count(rs) == 0);
    topictree_free(tree);
    retain_free(rs);
    return 0;
}
