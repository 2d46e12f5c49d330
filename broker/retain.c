/*
 * retain.c - the retained-message store (see retain.h).
 *
 * One node per topic level, each holding at most one message. A node's
 * children live in a child table: up to RT_DENSE_MAX slots a packed array
 * scanned linearly, above that an open-addressing hash table with linear
 * probing and backward-shift deletion. Topic names have no wildcards, so
 * every child is an exact one. (The table mirrors the one in topictree.c;
 * the two differ only in node type.)
 *
 * The store owns every node and table and one reference to each message it
 * holds. Nodes keep a parent pointer so that matching, pruning and freeing
 * walk the tree without recursion and without allocating: a topic of 65535
 * bytes may have 32768 levels, too many for the C stack.
 *
 * Setting builds the missing nodes as a detached chain and links it only
 * once every allocation has succeeded, so a failed set leaves the store as
 * it was.
 */
#include "broker/retain.h"

#include <string.h>

#include "broker/alloc.h"

#define RT_DENSE_MAX 8u /* child tables of at most this many slots are scanned */
#define RT_NOT_FOUND UINT32_MAX

typedef struct rt_node {
    struct rt_node *parent;
    struct rt_node **kids;
    gmq_msg *msg;
    uint32_t nkids, kcap;
    uint32_t hv;  /* hash of level */
    uint32_t len; /* length of level */
    char level[]; /* not NUL-terminated */
} rt_node;

struct retain_store {
    rt_node *root;
    size_t count;
    size_t bytes;
    size_t nodes; /* excluding the root */
};

static uint32_t level_hash(const char *s, size_t n)
{
    uint32_t h = 2166136261u; /* FNV-1a */
    for (size_t i = 0; i < n; i++) {
        h ^= (uint8_t)s[i];
        h *= 16777619u;
    }
    return h;
}

static size_t level_end(const char *s, size_t len, size_t from)
{
    if (from >= len)
        return len;
    const char *slash = memchr(s + from, '/', len - from);
    return slash ? (size_t)(slash - s) : len;
}

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

static bool kid_is(const rt_node *c, const char *s, size_t n, uint32_t hv)
{
    return c->hv == hv && c->len == n && memcmp(c->level, s, n) == 0;
}

static uint32_t kids_slot(const rt_node *p, const char *s, size_t n, uint32_t hv)
{
    if (p->kcap <= RT_DENSE_MAX) {
        for (uint32_t i = 0; i < p->nkids; i++)
            if (kid_is(p->kids[i], s, n, hv))
                return i;
        return RT_NOT_FOUND;
    }
    uint32_t mask = p->kcap - 1;
    for (uint32_t i = hv & mask; p->kids[i]; i = (i + 1) & mask)
        if (kid_is(p->kids[i], s, n, hv))
            return i;
    return RT_NOT_FOUND;
}

static rt_node *kids_get(const rt_node *p, const char *s, size_t n)
{
    if (!p->nkids)
        return NULL;
    uint32_t i = kids_slot(p, s, n, level_hash(s, n));
    return i == RT_NOT_FOUND ? NULL : p->kids[i];
}

static void kids_put(rt_node *p, rt_node *c)
{
    if (p->kcap <= RT_DENSE_MAX) {
        p->kids[p->nkids++] = c;
        return;
    }
    uint32_t mask = p->kcap - 1, i = c->hv & mask;
    while (p->kids[i])
        i = (i + 1) & mask;
    p->kids[i] = c;
    p->nkids++;
}

static int kids_rebuild(rt_node *p, uint32_t cap)
{
    rt_node **fresh = gmq_calloc(cap, sizeof(*fresh));
    if (!fresh)
        return -1;
    rt_node **old = p->kids;
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

static int kids_reserve(rt_node *p)
{
    uint32_t need = p->nkids + 1;
    if (p->kcap <= RT_DENSE_MAX ? need <= p->kcap : need * 4 <= p->kcap * 3)
        return 0;
    if (p->kcap >= UINT32_MAX / 8)
        return -1;
    return kids_rebuild(p, p->kcap ? p->kcap * 2 : 2);
}

static void kids_del(rt_node *p, const rt_node *c)
{
    uint32_t i = kids_slot(p, c->level, c->len, c->hv);
    if (p->kcap <= RT_DENSE_MAX) {
        p->kids[i] = p->kids[--p->nkids];
        p->kids[p->nkids] = NULL;
    } else {
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
    } else if (p->kcap > RT_DENSE_MAX && p->nkids * 8 <= p->kcap) {
        (void)kids_rebuild(p, p->kcap / 2); /* keeping the big table is fine too */
    }
}

/* First child in slot order after slot from (inclusive), or NULL. With
 * skip_dollar, children whose level starts with '$' are passed over. */
static rt_node *kids_from(const rt_node *p, uint32_t from, bool skip_dollar)
{
    for (uint32_t i = from; i < p->kcap; i++) {
        const rt_node *c = p->kids[i];
        if (c && !(skip_dollar && c->len && c->level[0] == '$'))
            return p->kids[i];
    }
    return NULL;
}

static rt_node *kids_after(const rt_node *p, const rt_node *c, bool skip_dollar)
{
    return kids_from(p, kids_slot(p, c->level, c->len, c->hv) + 1, skip_dollar);
}

/* ---- nodes ---------------------------------------------------------------- */

static rt_node *node_new(const char *s, size_t n)
{
    rt_node *c = gmq_calloc(1, sizeof(*c) + n);
    if (!c)
        return NULL;
    memcpy(c->level, s, n);
    c->len = (uint32_t)n;
    c->hv = level_hash(s, n);
    return c;
}

/* Frees top and everything below it, dropping the messages' references.
 * Children are detached as they are visited, so the walk needs no stack. */
static void subtree_free(rt_node *top)
{
    rt_node *n = top;
    for (;;) {
        while (n->kcap && !n->kids[n->kcap - 1])
            n->kcap--;
        if (n->kcap) {
            n = n->kids[--n->kcap];
            continue;
        }
        rt_node *up = n == top ? NULL : n->parent;
        gmq_msg_unref(n->msg);
        gmq_free(n->kids);
        gmq_free(n);
        if (!up)
            return;
        n = up;
    }
}

static rt_node *find(const retain_store *r, const char *topic, size_t tlen)
{
    rt_node *n = r->root;
    for (size_t s = 0, e; n && s <= tlen; s = e + 1) {
        e = level_end(topic, tlen, s);
        n = kids_get(n, topic + s, e - s);
    }
    return n;
}

/* ---- public API ----------------------------------------------------------- */

retain_store *retain_new(void)
{
    retain_store *r = gmq_calloc(1, sizeof(*r));
    if (!r)
        return NULL;
    r->root = gmq_calloc(1, sizeof(*r->root));
    if (!r->root) {
        gmq_free(r);
        return NULL;
    }
    return r;
}

void retain_free(retain_store *r)
{
    if (!r)
        return;
    subtree_free(r->root);
    gmq_free(r);
}

static void clear(retain_store *r, const char *topic, size_t tlen)
{
    rt_node *n = find(r, topic, tlen);
    if (!n || !n->msg)
        return;
    r->count--;
    r->bytes -= n->msg->payload_len;
    gmq_msg_unref(n->msg);
    n->msg = NULL;
    while (n != r->root && !n->msg && !n->nkids) {
        rt_node *p = n->parent;
        kids_del(p, n);
        gmq_free(n);
        r->nodes--;
        n = p;
    }
}

/* Creates the levels of topic from offset s on below n, which has no child
 * for the level at s. Returns the node of the whole topic, or NULL on no
 * memory with the store unchanged: the new levels are built detached and
 * linked only once all allocations have succeeded. */
static rt_node *path_make(retain_store *r, rt_node *n, const char *topic, size_t tlen,
                          size_t s)
{
    rt_node *head = NULL, *tail = NULL, *c;
    size_t built = 0;
    for (size_t e; s <= tlen; s = e + 1) {
        e = level_end(topic, tlen, s);
        if (!(c = node_new(topic + s, e - s)))
            goto fail;
        if (!tail) {
            head = c;
        } else if (kids_reserve(tail) != 0) {
            gmq_free(c);
            goto fail;
        } else {
            c->parent = tail;
            kids_put(tail, c);
        }
        tail = c;
        built++;
    }
    if (kids_reserve(n) != 0)
        goto fail;
    head->parent = n;
    kids_put(n, head);
    r->nodes += built;
    return tail;

fail:
    if (head)
        subtree_free(head);
    return NULL;
}

int retain_set(retain_store *r, gmq_msg *msg)
{
    const char *topic = msg->topic;
    size_t tlen = msg->topic_len;
    if (msg->payload_len == 0) { /* [MQTT-3.3.1-10,11] */
        clear(r, topic, tlen);
        return 0;
    }

    rt_node *n = r->root, *c;
    size_t s = 0, e;
    for (; s <= tlen; s = e + 1) {
        e = level_end(topic, tlen, s);
        if (!(c = kids_get(n, topic + s, e - s)))
            break;
        n = c;
    }
    if (s <= tlen && !(n = path_make(r, n, topic, tlen, s)))
        return -1;

    gmq_msg_ref(msg); /* before the unref: msg may be the one it replaces */
    if (n->msg) {
        r->count--;
        r->bytes -= n->msg->payload_len;
        gmq_msg_unref(n->msg);
    }
    n->msg = msg;
    r->count++;
    r->bytes += msg->payload_len;
    return 0;
}

/*
 * Depth-first over the nodes a prefix of the filter matches. At node n, whose
 * levels match the filter before offset f: an exact level goes to one child,
 * '+' to each child in turn, '#' reports n and its whole subtree. Going back
 * up recomputes the parent's offset from the filter and, under '+', finds the
 * next sibling from the child's own slot, so the walk keeps no stack.
 */
static void report_subtree(const rt_node *top, bool skip_dollar, retain_cb cb, void *arg)
{
    const rt_node *n = kids_from(top, 0, skip_dollar);
    while (n) {
        if (n->msg)
            cb(n->msg, arg);
        const rt_node *c = kids_from(n, 0, false);
        if (c) {
            n = c;
            continue;
        }
        for (;;) {
            const rt_node *p = n->parent;
            if ((c = kids_after(p, n, skip_dollar && p == top))) {
                n = c;
                break;
            }
            if (p == top) {
                n = NULL;
                break;
            }
            n = p;
        }
    }
}

void retain_match(const retain_store *r, const char *filter, size_t flen,
                  retain_cb cb, void *arg)
{
    const rt_node *root = r->root, *n = root, *c;
    size_t f = 0, e;
    bool up = false;

    for (;;) {
        c = NULL;
        if (!up) {
            if (f > flen) {
                if (n->msg)
                    cb(n->msg, arg);
                up = true;
            } else {
                e = level_end(filter, flen, f);
                /* A leading wildcard does not match topics starting with '$'
                 * [MQTT-4.7.2-1]; "a/#" matches "a" [MQTT-4.7.1-2]. */
                if (is_level(filter + f, e - f, '#')) {
                    if (n->msg)
                        cb(n->msg, arg);
                    report_subtree(n, n == root, cb, arg);
                    up = true;
                } else if (is_level(filter + f, e - f, '+')) {
                    c = kids_from(n, 0, n == root);
                } else {
                    c = kids_get(n, filter + f, e - f);
                }
                if (!up && c) {
                    n = c;
                    f = e + 1;
                    continue;
                }
                up = true;
            }
        }
        if (n == root)
            return;
        const rt_node *p = n->parent;
        e = f - 1;
        f = level_start(filter, e);
        if (is_level(filter + f, e - f, '+') && (c = kids_after(p, n, p == root))) {
            n = c;
            f = e + 1;
            up = false;
            continue;
        }
        n = p;
    }
}

gmq_msg *retain_get(const retain_store *r, const char *topic, size_t tlen)
{
    const rt_node *n = find(r, topic, tlen);
    return n ? n->msg : NULL;
}

size_t retain_count(const retain_store *r)
{
    return r->count;
}

size_t retain_bytes(const retain_store *r)
{
    return r->bytes;
}

size_t retain_node_count(const retain_store *r)
{
    return r->nodes;
}
