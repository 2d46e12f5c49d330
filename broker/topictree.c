/*
 * topictree.c - the subscription index (see topictree.h).
 *
 * One node per filter level. A node's exact children live in its levelmap
 * (see levelmap.h); the '+' and '#' children have their own fields.
 *
 * Every node holds a vector of (subscriber, qos), reported in order by
 * matching. A filter such as "sensors/#" may be shared by a great many
 * subscribers, and a mass disconnect removes them one by one, so finding a
 * subscriber must not scan the vector: past TT_SUBS_SCAN entries the node
 * also keeps an open-addressing index from subscriber pointer to vector
 * position, and removal moves the last entry into the hole. Adding and
 * removing are then O(1) expected at any size.
 *
 * The tree owns every node, child table, vector and index; topictree_free
 * releases them all. Nodes keep a parent pointer so that matching, pruning
 * and freeing walk the tree without recursion and without allocating: a
 * topic or filter of 65535 bytes may have 32768 levels, too many for the C
 * stack.
 *
 * Adding builds the missing nodes as a detached chain and links it only once
 * every allocation has succeeded, so a failed add leaves the tree as it was.
 */
#include "broker/topictree.h"

#include <string.h>

#include "broker/alloc.h"
#include "broker/levelmap.h"

#define TT_NOT_FOUND UINT32_MAX
#define TT_SUBS_SCAN 16u /* vectors up to this long are searched without an index */
#define TT_IDX_MIN 64u   /* first index size: a quarter full when it is built */

enum tt_kind { TT_ROOT, TT_EXACT, TT_PLUS, TT_HASH };

typedef struct tt_sub {
    void *subscriber;
    uint8_t qos;
} tt_sub;

/* The subscriptions of one filter. idx is NULL while the vector is short;
 * otherwise it has icap slots (a power of two, at most half full), each 0 or
 * a vector position plus one, placed by linear probing from the subscriber's
 * home slot. */
typedef struct tt_subs {
    tt_sub *v;
    uint32_t *idx;
    uint32_t n, cap;
    uint32_t icap;
} tt_subs;

typedef struct tt_node {
    struct tt_node *parent;
    levelmap kids; /* exact children */
    struct tt_node *plus;
    struct tt_node *hash;
    tt_subs subs;
    levelmap_item item; /* this node's entry in its parent's kids */
    uint8_t kind;       /* enum tt_kind */
    char level[];       /* not NUL-terminated */
} tt_node;

#define TT_NODE(it) LEVELMAP_CONTAINER(it, tt_node, item)

struct topictree {
    tt_node *root;
    size_t count; /* (filter, subscriber) pairs */
    size_t nodes; /* excluding the root */
};


/* ---- nodes ---------------------------------------------------------------- */

static tt_node *node_new(const char *s, size_t n)
{
    tt_node *c = gmq_calloc(1, sizeof(*c) + n);
    if (!c)
        return NULL;
    memcpy(c->level, s, n);
    c->item.level = c->level;
    c->item.len = (uint32_t)n;
    c->kind = is_level(s, n, '+') ? TT_PLUS : is_level(s, n, '#') ? TT_HASH : TT_EXACT;
    return c;
}

static void node_free(tt_node *n)
{
    levelmap_fini(&n->kids);
    gmq_free(n->subs.v);
    gmq_free(n->subs.idx);
    gmq_free(n);
}

static tt_node *exact_child(const tt_node *p, const char *s, size_t n)
{
    levelmap_item *it = levelmap_find(&p->kids, s, n);
    return it ? TT_NODE(it) : NULL;
}

static tt_node *child_get(const tt_node *p, const char *s, size_t n)
{
    if (is_level(s, n, '+'))
        return p->plus;
    if (is_level(s, n, '#'))
        return p->hash;
    return exact_child(p, s, n);
}

/* 0, or -1 on no memory with p unchanged. p has no child of c's level. */
static int child_link(tt_node *p, tt_node *c)
{
    c->parent = p;
    if (c->kind == TT_PLUS)
        p->plus = c;
    else if (c->kind == TT_HASH)
        p->hash = c;
    else if (levelmap_insert(&p->kids, &c->item) != LEVELMAP_OK)
        return -1;
    return 0;
}

static void child_unlink(tt_node *p, tt_node *c)
{
    if (c->kind == TT_PLUS)
        p->plus = NULL;
    else if (c->kind == TT_HASH)
        p->hash = NULL;
    else
        levelmap_remove(&p->kids, &c->item);
}

static bool node_empty(const tt_node *n)
{
    return !n->subs.n && !levelmap_count(&n->kids) && !n->plus && !n->hash;
}

/* Frees top and everything below it; returns the number of nodes freed.
 * Children are detached as they are visited, so the walk needs no stack. */
static size_t subtree_free(tt_node *top)
{
    size_t freed = 0;
    tt_node *n = top;
    for (;;) {
        tt_node *c = NULL;
        levelmap_item *it;
        if (n->plus) {
            c = n->plus;
            n->plus = NULL;
        } else if (n->hash) {
            c = n->hash;
            n->hash = NULL;
        } else if ((it = levelmap_drain(&n->kids))) {
            c = TT_NODE(it);
        }
        if (c) {
            n = c;
            continue;
        }
        tt_node *up = n == top ? NULL : n->parent;
        node_free(n);
        freed++;
        if (!up)
            return freed;
        n = up;
    }
}

/* ---- subscriptions -------------------------------------------------------- */

/* Subscribers are pointers from the broker's own allocator, never chosen by a
 * client, so a multiplicative hash suffices; the product's upper half mixes
 * every bit of the address, including the low ones that alignment fixes. */
static uint32_t sub_home(const void *subscriber, uint32_t mask)
{
    uint64_t x = (uint64_t)(uintptr_t)subscriber * 0x9e3779b97f4a7c15u;
    return (uint32_t)(x >> 32) & mask;
}

/* Vector position of subscriber, or TT_NOT_FOUND. When the vector is indexed
 * and the subscriber found, *slot gets its index slot. */
static uint32_t subs_find(const tt_subs *s, const void *subscriber, uint32_t *slot)
{
    if (!s->idx) {
        for (uint32_t i = 0; i < s->n; i++)
            if (s->v[i].subscriber == subscriber)
                return i;
        return TT_NOT_FOUND;
    }
    uint32_t mask = s->icap - 1;
    for (uint32_t i = sub_home(subscriber, mask); s->idx[i]; i = (i + 1) & mask) {
        uint32_t pos = s->idx[i] - 1;
        if (s->v[pos].subscriber == subscriber) {
            *slot = i;
            return pos;
        }
    }
    return TT_NOT_FOUND;
}

static void idx_put(uint32_t *idx, uint32_t mask, const void *subscriber, uint32_t pos)
{
    uint32_t i = sub_home(subscriber, mask);
    while (idx[i])
        i = (i + 1) & mask;
    idx[i] = pos + 1;
}

/* Indexes the whole vector in a fresh table of cap slots; -1 with s unchanged
 * on no memory. */
static int idx_rebuild(tt_subs *s, uint32_t cap)
{
    uint32_t *idx = gmq_calloc(cap, sizeof(*idx));
    if (!idx)
        return -1;
    for (uint32_t pos = 0; pos < s->n; pos++)
        idx_put(idx, cap - 1, s->v[pos].subscriber, pos);
    gmq_free(s->idx);
    s->idx = idx;
    s->icap = cap;
    return 0;
}

/* Empties index slot i by backward shift (as in levelmap.c): later entries of
 * the probe run move into the hole unless their home lies in (hole, j]. */
static void idx_del(tt_subs *s, uint32_t i)
{
    uint32_t mask = s->icap - 1, j = i;
    for (;;) {
        j = (j + 1) & mask;
        if (!s->idx[j])
            break;
        uint32_t home = sub_home(s->v[s->idx[j] - 1].subscriber, mask);
        bool stays = i <= j ? (i < home && home <= j) : (i < home || home <= j);
        if (!stays) {
            s->idx[i] = s->idx[j];
            i = j;
        }
    }
    s->idx[i] = 0;
}

/* 1 when the pair existed and its qos was updated, 0 when added, -1 on no
 * memory with s unchanged (a grown vector's extra room is not a change). */
static int subs_upsert(tt_subs *s, void *subscriber, uint8_t qos)
{
    uint32_t slot = 0;
    uint32_t pos = subs_find(s, subscriber, &slot);
    if (pos != TT_NOT_FOUND) {
        s->v[pos].qos = qos;
        return 1;
    }
    uint32_t need = s->n + 1;
    if (need > s->cap) {
        if (s->cap >= UINT32_MAX / 4)
            return -1;
        uint32_t cap = s->cap ? s->cap * 2 : 2;
        tt_sub *v = gmq_realloc(s->v, cap * sizeof(*v));
        if (!v)
            return -1;
        s->v = v;
        s->cap = cap;
    }
    if (need > TT_SUBS_SCAN && (uint64_t)need * 2 > s->icap &&
        (s->icap >= UINT32_MAX / 2 ||
         idx_rebuild(s, s->icap ? s->icap * 2 : TT_IDX_MIN) != 0))
        return -1;
    s->v[s->n] = (tt_sub){subscriber, qos};
    if (s->idx)
        idx_put(s->idx, s->icap - 1, subscriber, s->n);
    s->n++;
    return 0;
}

/* Removes the entry at vector position pos, whose index slot (when indexed)
 * is slot, by moving the last entry into its place. */
static void subs_del(tt_subs *s, uint32_t pos, uint32_t slot)
{
    uint32_t last = s->n - 1;
    if (s->idx) {
        idx_del(s, slot);
        if (pos != last) {
            uint32_t moved = 0;
            (void)subs_find(s, s->v[last].subscriber, &moved);
            s->idx[moved] = pos + 1;
        }
    }
    s->v[pos] = s->v[last];
    s->n = last;

    if (s->n == 0) {
        gmq_free(s->v);
        gmq_free(s->idx);
        *s = (tt_subs){0};
        return;
    }
    /* Shrinking is best-effort: keeping the larger vector or index is fine. */
    if (s->idx && s->n <= TT_SUBS_SCAN / 2) { /* hysteresis: rebuilt above TT_SUBS_SCAN */
        gmq_free(s->idx);
        s->idx = NULL;
        s->icap = 0;
    } else if (s->idx && s->icap > TT_IDX_MIN && s->n * 8 <= s->icap) {
        (void)idx_rebuild(s, s->icap / 2);
    }
    if (s->cap > 8 && s->n * 4 <= s->cap) {
        tt_sub *v = gmq_realloc(s->v, s->cap / 2 * sizeof(*v));
        if (v) {
            s->v = v;
            s->cap /= 2;
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
        int rc = subs_upsert(&n->subs, subscriber, qos);
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
        } else if (child_link(tail, c) != 0) {
            node_free(c);
            goto fail;
        }
        tail = c;
        built++;
    }
    if (subs_upsert(&tail->subs, subscriber, qos) < 0)
        goto fail;
    if (child_link(n, head) != 0) /* the last step that can fail */
        goto fail;
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
    uint32_t slot = 0; /* set only when the vector is indexed */
    uint32_t pos = subs_find(&n->subs, subscriber, &slot);
    if (pos == TT_NOT_FOUND)
        return false;
    subs_del(&n->subs, pos, slot);
    t->count--;
    while (n != t->root && node_empty(n)) {
        tt_node *p = n->parent;
        child_unlink(p, n);
        node_free(n);
        t->nodes--;
        n = p;
    }
    return true;
}

static void report(const tt_node *n, topictree_cb cb, void *arg)
{
    for (uint32_t i = 0; i < n->subs.n; i++)
        cb(n->subs.v[i].subscriber, n->subs.v[i].qos, arg);
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
                if ((c = exact_child(n, topic + s, e - s))) {
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
