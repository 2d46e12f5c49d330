/*
 * retain.c - the retained-message store (see retain.h).
 *
 * One node per topic level, each holding at most one message. A node's
 * children live in its levelmap (see levelmap.h). Topic names have no
 * wildcards, so every child is an exact one.
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
#include "broker/levelmap.h"

typedef struct rt_node {
    struct rt_node *parent;
    levelmap kids;
    gmq_msg *msg;
    levelmap_item item; /* this node's entry in its parent's kids */
    char level[];       /* not NUL-terminated */
} rt_node;

#define RT_NODE(it) LEVELMAP_CONTAINER(it, rt_node, item)

struct retain_store {
    rt_node *root;
    size_t count;
    size_t bytes;
    size_t nodes; /* excluding the root */
};


/* ---- children ------------------------------------------------------------ */

static rt_node *kid_get(const rt_node *p, const char *s, size_t n)
{
    levelmap_item *it = levelmap_find(&p->kids, s, n);
    return it ? RT_NODE(it) : NULL;
}

/* The first child after c in p's slot order (the first of all when c is
 * NULL), or NULL. With skip_dollar, children whose level starts with '$' are
 * passed over. */
static rt_node *kid_after(const rt_node *p, const rt_node *c, bool skip_dollar)
{
    const levelmap_item *it = c ? &c->item : NULL;
    while ((it = levelmap_next(&p->kids, it)))
        if (!(skip_dollar && it->len && it->level[0] == '$'))
            return RT_NODE(it);
    return NULL;
}

/* 0, or -1 on no memory with p unchanged. p has no child of c's level. */
static int kid_link(rt_node *p, rt_node *c)
{
    c->parent = p;
    return levelmap_insert(&p->kids, &c->item) == LEVELMAP_OK ? 0 : -1;
}

/* ---- nodes ---------------------------------------------------------------- */

static rt_node *node_new(const char *s, size_t n)
{
    rt_node *c = gmq_calloc(1, sizeof(*c) + n);
    if (!c)
        return NULL;
    memcpy(c->level, s, n);
    c->item.level = c->level;
    c->item.len = (uint32_t)n;
    return c;
}

static void node_free(rt_node *n)
{
    levelmap_fini(&n->kids);
    gmq_free(n);
}

/* Frees top and everything below it, dropping the messages' references.
 * Children are detached as they are visited, so the walk needs no stack. */
static void subtree_free(rt_node *top)
{
    rt_node *n = top;
    for (;;) {
        levelmap_item *it = levelmap_drain(&n->kids);
        if (it) {
            n = RT_NODE(it);
            continue;
        }
        rt_node *up = n == top ? NULL : n->parent;
        gmq_msg_unref(n->msg);
        node_free(n);
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
        n = kid_get(n, topic + s, e - s);
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
    while (n != r->root && !n->msg && !levelmap_count(&n->kids)) {
        rt_node *p = n->parent;
        levelmap_remove(&p->kids, &n->item);
        node_free(n);
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
        } else if (kid_link(tail, c) != 0) {
            node_free(c);
            goto fail;
        }
        tail = c;
        built++;
    }
    if (kid_link(n, head) != 0) /* the last step that can fail */
        goto fail;
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
        if (!(c = kid_get(n, topic + s, e - s)))
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
    const rt_node *n = kid_after(top, NULL, skip_dollar);
    while (n) {
        if (n->msg)
            cb(n->msg, arg);
        const rt_node *c = kid_after(n, NULL, false);
        if (c) {
            n = c;
            continue;
        }
        for (;;) {
            const rt_node *p = n->parent;
            if ((c = kid_after(p, n, skip_dollar && p == top))) {
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
                    c = kid_after(n, NULL, n == root);
                } else {
                    c = kid_get(n, filter + f, e - f);
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
        if (is_level(filter + f, e - f, '+') && (c = kid_after(p, n, p == root))) {
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
