/*
 * topictree.c - the subscription index (see topictree.h).
 *
 * One node per filter level. A node's exact children live in a child table:
 * up to TT_DENSE_MAX slots it is a packed array scanned linearly, above that
 * an open-addressing hash table with linear probing and backward-shift
 * deletion (no tombstones). The '+' and '#' children have their own fields.
 * Every node holds a vector of (subscriber, qos).
 *
 * The tree owns every node, child table and vector; topictree_free releases
 * them all. Nodes keep a parent pointer so that matching, pruning and freeing
 * walk the tree without recursion and without allocating: a topic or filter
 * of 65535 bytes may have 32768 levels, too many for the C stack.
 *
 * Adding builds the missing nodes as a detached chain and links it only once
 * every allocation has succeeded, so a failed add leaves the tree as it was.
 */
#include "broker/topictree.h"

#include <string.h>

#include "broker/alloc.h"

#define TT_DENSE_MAX 8u /* child tables of at most this many slots are scanned */

enum tt_kind { TT_ROOT, TT_EXACT, TT_PLUS, TT_HASH };

typedef struct tt_sub {
    void *subscriber;
    uint8_t qos;
} tt_sub;

typedef struct tt_node {
    struct tt_node *parent;
    struct tt_node **kids; /* exact children, see the file comment */
    struct tt_node *plus;
    struct tt_node *hash;
    tt_sub *subs;
    uint32_t nkids, kcap;
    uint32_t nsubs, scap;
    uint32_t hv;  /* hash of level */
    uint32_t len; /* length of level */
    uint8_t kind; /* enum tt_kind */
    char level[]; /* not NUL-terminated */
} tt_node;

struct topictree {
    tt_node *root;
    size_t count; /* (filter, subscriber) pairs */
    size_t nodes; /* excluding the root */
};

#define TT_NOT_FOUND UINT32_MAX

static uint32_t level_hash(const char *s, size_t n)
{
    uint32_t h = 2166136261u; /* FNV-1a */
    for (size_t i = 0; i < n; i++) {
        h ^= (uint8_t)s[i];
        h *= 16777619u;
    }
    return h;
}

/* End of the level starting at from: the next '/' or len. */
static size_t level_end(const char *s, size_t len, size_t from)
{
    if (from >= len)
        return len;
    const char *slash = memchr(s + from, '/', len - from);
    return slash ? (size_t)(slash - s) : len;
}

/* Start of the level ending at end (a '/' or the string's length). */
static size_t level_start(const char *s, size_t end)
{
    while (end > 0 && s[end - 1] != '/')
        end--;
    return end;
}

static bool is_level(const char *s, size_t n, char c)
{
    return n == 1 && s[0] == c;
}

/* ---- child table ---------------------------------------------------------- */

static bool kid_is(const tt_node *c, const char *s, size_t n, uint32_t hv)
{
    return c->hv == hv && c->len == n && memcmp(c->level, s, n) == 0;
}

static uint32_t kids_slot(const tt_node *p, const char *s, size_t n, uint32_t hv)
{
    if (p->kcap <= TT_DENSE_MAX) {
        for (uint32_t i = 0; i < p->nkids; i++)
            if (kid_is(p->kids[i], s, n, hv))
                return i;
        return TT_NOT_FOUND;
    }
    uint32_t mask = p->kcap - 1;
    for (uint32_t i = hv & mask; p->kids[i]; i = (i + 1) & mask)
        if (kid_is(p->kids[i], s, n, hv))
            return i;
    return TT_NOT_FOUND;
}

static tt_node *kids_get(const tt_node *p, const char *s, size_t n)
{
    if (!p->nkids)
        return NULL;
    uint32_t i = kids_slot(p, s, n, level_hash(s, n));
    return i == TT_NOT_FOUND ? NULL : p->kids[i];
}

/* Caller guarantees room (kids_reserve). */
static void kids_put(tt_node *p, tt_node *c)
{
    if (p->kcap <= TT_DENSE_MAX) {
        p->kids[p->nkids++] = c;
        return;
    }
    uint32_t mask = p->kcap - 1, i = c->hv & mask;
    while (p->kids[i])
        i = (i + 1) & mask;
    p->kids[i] = c;
    p->nkids++;
}

/* Moves the children into a table of cap slots; -1 with p unchanged on no
 * memory. */
static int kids_rebuild(tt_node *p, uint32_t cap)
{
    tt_node **fresh = gmq_calloc(cap, sizeof(*fresh));
    if (!fresh)
        return -1;
    tt_node **old = p->kids;
    uint32_t oldcap = p->kcap;
    p->kids = fresh;
    p->kcap = cap;
    p->nkids = 0;
    for (uint32_t i = 0; i < oldcap; i++) /* unused slots are NULL in both modes */
        if (old[i])
            kids_put(p, old[i]);
    gmq_free(old);
    return 0;
}

/* Room for one more child; hashed tables stay at most 3/4 full. */
static int kids_reserve(tt_node *p)
{
    uint32_t need = p->nkids + 1;
    if (p->kcap <= TT_DENSE_MAX ? need <= p->kcap : need * 4 <= p->kcap * 3)
        return 0;
    if (p->kcap >= UINT32_MAX / 8)
        return -1;
    return kids_rebuild(p, p->kcap ? p->kcap * 2 : 2);
}

static void kids_del(tt_node *p, const tt_node *c)
{
    uint32_t i = kids_slot(p, c->level, c->len, c->hv);
    if (p->kcap <= TT_DENSE_MAX) {
        p->kids[i] = p->kids[--p->nkids];
        p->kids[p->nkids] = NULL;
    } else {
        /* Backward shift: pull later entries of the probe run into the hole
         * unless their home slot lies cyclically in (hole, j]. */
        uint32_t mask = p->kcap - 1, j = i;
        for (;;) {
            j = (j + 1) & mask;
            if (!p->kids[j])
                break;
            uint32_t home = p->kids[j]->hv & mask;
            bool stays = i <= j ? (i < home && home <= j) : (i < home || home <= j);
            if (!stays) {
                p->kids[i] = p->kids[j];
                i = j;
            }
        }
        p->kids[i] = NULL;
        p->nkids--;
    }
    if (p->nkids == 0) {
        gmq_free(p->kids);
        p->kids = NULL;
        p->kcap = 0;
    } else if (p->kcap > TT_DENSE_MAX && p->nkids * 8 <= p->kcap) {
        (void)kids_rebuild(p, p->kcap / 2); /* keeping the big table is fine too */
    }
}

/* ---- nodes ---------------------------------------------------------------- */

static tt_node *node_new(const char *s, size_t n)
{
    tt_node *c = gmq_calloc(1, sizeof(*c) + n);
    if (!c)
        return NULL;
    memcpy(c->level, s, n);
    c->len = (uint32_t)n;
    c->hv = level_hash(s, n);
    c->kind = is_level(s, n, '+') ? TT_PLUS : is_level(s, n, '#') ? TT_HASH : TT_EXACT;
    return c;
}

static tt_node *child_get(const tt_node *p, const char *s, size_t n)
{
    if (is_level(s, n, '+'))
        return p->plus;
    if (is_level(s, n, '#'))
        return p->hash;
    return kids_get(p, s, n);
}

/* An exact child needs kids_reserve(p) first. */
static void child_link(tt_node *p, tt_node *c)
{
    c->parent = p;
    if (c->kind == TT_PLUS)
        p->plus = c;
    else if (c->kind == TT_HASH)
        p->hash = c;
    else
        kids_put(p, c);
}

static void child_unlink(tt_node *p, tt_node *c)
{
    if (c->kind == TT_PLUS)
        p->plus = NULL;
    else if (c->kind == TT_HASH)
        p->hash = NULL;
    else
        kids_del(p, c);
}

static bool node_empty(const tt_node *n)
{
    return !n->nsubs && !n->nkids && !n->plus && !n->hash;
}

/* Frees top and everything below it; returns the number of nodes freed.
 * Children are detached as they are visited, so the walk needs no stack. */
static size_t subtree_free(tt_node *top)
{
    size_t freed = 0;
    tt_node *n = top;
    for (;;) {
        tt_node *c = NULL;
        if (n->plus) {
            c = n->plus;
            n->plus = NULL;
        } else if (n->hash) {
            c = n->hash;
            n->hash = NULL;
        } else {
            while (n->kcap && !n->kids[n->kcap - 1])
                n->kcap--;
            if (n->kcap)
                c = n->kids[--n->kcap];
        }
        if (c) {
            n = c;
            continue;
        }
        tt_node *up = n == top ? NULL : n->parent;
        gmq_free(n->kids);
        gmq_free(n->subs);
        gmq_free(n);
        freed++;
        if (!up)
            return freed;
        n = up;
    }
}

/* ---- subscriptions -------------------------------------------------------- */

static uint32_t subs_find(const tt_node *n, const void *subscriber)
{
    for (uint32_t i = 0; i < n->nsubs; i++)
        if (n->subs[i].subscriber == subscriber)
            return i;
    return TT_NOT_FOUND;
}

/* 1 when the pair existed and its qos was updated, 0 when added, -1 on no
 * memory with n unchanged. */
static int subs_upsert(tt_node *n, void *subscriber, uint8_t qos)
{
    uint32_t i = subs_find(n, subscriber);
    if (i != TT_NOT_FOUND) {
        n->subs[i].qos = qos;
        return 1;
    }
    if (n->nsubs == n->scap) {
        if (n->scap >= UINT32_MAX / 2)
            return -1;
        uint32_t cap = n->scap ? n->scap * 2 : 2;
        tt_sub *v = gmq_realloc(n->subs, cap * sizeof(*v));
        if (!v)
            return -1;
        n->subs = v;
        n->scap = cap;
    }
    n->subs[n->nsubs++] = (tt_sub){subscriber, qos};
    return 0;
}

static void subs_del(tt_node *n, uint32_t i)
{
    n->subs[i] = n->subs[--n->nsubs];
    if (n->nsubs == 0) {
        gmq_free(n->subs);
        n->subs = NULL;
        n->scap = 0;
    } else if (n->scap > 8 && n->nsubs * 4 <= n->scap) {
        tt_sub *v = gmq_realloc(n->subs, n->scap / 2 * sizeof(*v));
        if (v) { /* keeping the larger vector is fine too */
            n->subs = v;
            n->scap /= 2;
        }
    }
}

/* ---- public API ----------------------------------------------------------- */

topictree *topictree_new(void)
{
    topictree *t = gmq_calloc(1, sizeof(*t));
    if (!t)
        return NULL;
    t->root = gmq_calloc(1, sizeof(*t->root));
    if (!t->root) {
        gmq_free(t);
        return NULL;
    }
    t->root->kind = TT_ROOT;
    return t;
}

void topictree_free(topictree *t)
{
    if (!t)
        return;
    subtree_free(t->root);
    gmq_free(t);
}

int topictree_add(topictree *t, const char *filter, size_t flen, void *subscriber,
                  uint8_t qos)
{
    tt_node *n = t->root, *c;
    size_t s = 0, e;
    for (; s <= flen; s = e + 1) {
        e = level_end(filter, flen, s);
        if (!(c = child_get(n, filter + s, e - s)))
            break;
        n = c;
    }
    if (s > flen) {
        int rc = subs_upsert(n, subscriber, qos);
        if (rc == 0)
            t->count++;
        return rc < 0 ? -1 : 0;
    }

    /* Levels s.. are new: build them detached, then link under n. */
    tt_node *head = NULL, *tail = NULL;
    size_t built = 0;
    for (; s <= flen; s = e + 1) {
        e = level_end(filter, flen, s);
        if (!(c = node_new(filter + s, e - s)))
            goto fail;
        if (!tail) {
            head = c;
        } else if (c->kind == TT_EXACT && kids_reserve(tail) != 0) {
            gmq_free(c);
            goto fail;
        } else {
            child_link(tail, c);
        }
        tail = c;
        built++;
    }
    if (subs_upsert(tail, subscriber, qos) < 0)
        goto fail;
    if (head->kind == TT_EXACT && kids_reserve(n) != 0)
        goto fail;
    child_link(n, head);
    t->nodes += built;
    t->count++;
    return 0;

fail:
    if (head)
        subtree_free(head);
    return -1;
}

bool topictree_remove(topictree *t, const char *filter, size_t flen, void *subscriber)
{
    tt_node *n = t->root;
    for (size_t s = 0, e; s <= flen; s = e + 1) {
        e = level_end(filter, flen, s);
        if (!(n = child_get(n, filter + s, e - s)))
            return false;
    }
    uint32_t i = subs_find(n, subscriber);
    if (i == TT_NOT_FOUND)
        return false;
    subs_del(n, i);
    t->count--;
    while (n != t->root && node_empty(n)) {
        tt_node *p = n->parent;
        child_unlink(p, n);
        gmq_free(n);
        t->nodes--;
        n = p;
    }
    return true;
}

static void report(const tt_node *n, topictree_cb cb, void *arg)
{
    for (uint32_t i = 0; i < n->nsubs; i++)
        cb(n->subs[i].subscriber, n->subs[i].qos, arg);
}

/*
 * Depth-first over the nodes that match a prefix of the topic. At node n,
 * whose levels match the topic before offset s, the '#' child matches
 * whatever follows, the exact child and then the '+' child continue with the
 * next level. Going back up recomputes the parent's offset from the topic, so
 * the walk keeps no stack; each level is scanned a bounded number of times.
 */
void topictree_match(const topictree *t, const char *topic, size_t tlen,
                     topictree_cb cb, void *arg)
{
    const tt_node *root = t->root, *n = root, *c;
    /* A leading wildcard does not match a topic starting with '$' [MQTT-4.7.2-1]. */
    bool dollar = tlen > 0 && topic[0] == '$';
    size_t s = 0, e = 0;
    enum { ENTER, NEXT_PLUS, UP } step = ENTER;

    for (;;) {
        if (step == ENTER) {
            if (s > tlen) {
                report(n, cb, arg);
                if (n->hash) /* "a/#" matches "a" [MQTT-4.7.1-2] */
                    report(n->hash, cb, arg);
                step = UP;
            } else {
                e = level_end(topic, tlen, s);
                if (n->hash && !(n == root && dollar))
                    report(n->hash, cb, arg);
                if ((c = kids_get(n, topic + s, e - s))) {
                    n = c;
                    s = e + 1;
                    continue;
                }
                step = NEXT_PLUS;
            }
        }
        if (step == NEXT_PLUS) {
            if (n->plus && !(n == root && dollar)) {
                n = n->plus;
                s = e + 1;
                step = ENTER;
                continue;
            }
            step = UP;
        }
        if (n == root)
            return;
        step = n->kind == TT_EXACT ? NEXT_PLUS : UP;
        e = s - 1;
        s = level_start(topic, e);
        n = n->parent;
    }
}

size_t topictree_count(const topictree *t)
{
    return t->count;
}

size_t topictree_node_count(const topictree *t)
{
    return t->nodes;
}
