/*
 * levelmap.h - the child table of the topic trees: topic level -> child.
 *
 * Internal to the broker: topictree.c and retain.c index each node's exact
 * children with it. Up to LEVELMAP_DENSE_MAX slots the table is a packed
 * array scanned linearly (most nodes have few children and pay no hashing on
 * lookup); above that it is an open-addressing hash table with linear probing
 * and backward-shift deletion, grown at 3/4 load and shrunk at 1/8.
 *
 * Levels come from clients, so the hash is keyed with a per-process random
 * secret (SipHash-1-3 under a key read once from getrandom(2)): without the
 * key a client cannot choose levels that collide, and so cannot turn a wide
 * node into a linear scan.
 *
 * The map is intrusive. The caller embeds a levelmap_item in each child and
 * points it at the child's level bytes; the map stores item pointers.
 *   - Ownership: the map owns only its slot array, freed when it empties or
 *     by levelmap_fini. It never frees, copies or moves items or their level
 *     bytes; the caller frees children after removing or draining them.
 *   - Validity: an item pointer returned by a lookup stays valid for as long
 *     as the caller keeps that child. An item's level bytes must not change,
 *     and the item must not move, while it is in a map. Iteration order is
 *     stable only while the map is not modified.
 *   - Errors: levelmap_insert fails only for lack of memory and then leaves
 *     the map exactly as it was. Removal never fails (shrinking is
 *     best-effort and keeps the larger table if memory is short).
 *   - Threads: a map belongs to one thread. The hash key is process-wide and
 *     set up once, safely from any thread.
 *
 * Zeroed memory is an empty map, so nodes allocated with gmq_calloc need no
 * set-up call. The struct is visible only so that it can be embedded: its
 * fields are private to levelmap.c.
 */
#ifndef GATEMQ_LEVELMAP_H
#define GATEMQ_LEVELMAP_H

#include <stdbool.h>
#include <stddef.h>
#include <string.h>
#include <stdint.h>

#define LEVELMAP_DENSE_MAX 8u /* tables of at most this many slots are scanned */

enum levelmap_err {
    LEVELMAP_OK = 0,
    LEVELMAP_ENOMEM = -1, /* no memory, or the table cannot grow any further */
};

typedef struct levelmap_item {
    const char *level; /* not NUL-terminated; set by the caller before insert */
    uint32_t len;      /* set by the caller before insert */
    uint32_t hash;     /* set by levelmap_insert */
} levelmap_item;

typedef struct levelmap {
    levelmap_item **slots;
    uint32_t count, cap;
} levelmap;

/* The structure of the given type that embeds item as the named member. */
#define LEVELMAP_CONTAINER(item, type, member) \
    ((type *)(void *)((char *)(item) - offsetof(type, member)))

static inline uint32_t levelmap_count(const levelmap *m)
{
    return m->count;
}

/* Frees the slot array and leaves m empty; the items are not touched. */
void levelmap_fini(levelmap *m);

/* The item whose level equals level[0..len), or NULL. */
levelmap_item *levelmap_find(const levelmap *m, const char *level, size_t len);

/* Adds it, whose level and len the caller has set and which no item of m
 * equals. Returns LEVELMAP_OK, or LEVELMAP_ENOMEM with m unchanged. */
int levelmap_insert(levelmap *m, levelmap_item *it);

/* Removes it, which must be in m. */
void levelmap_remove(levelmap *m, levelmap_item *it);

/* Iteration in slot order: the first item when prev is NULL, else the one
 * after prev (which must be in m); NULL at the end. O(1) expected per step
 * plus the empty slots passed over. */
levelmap_item *levelmap_next(const levelmap *m, const levelmap_item *prev);

/* Teardown without recursion or allocation: removes and returns some item,
 * or NULL once m is empty (its slot array then freed). After the first call,
 * m accepts only levelmap_drain and levelmap_fini until drain returns NULL:
 * draining does not keep the hash layout that lookups rely on, which is what
 * makes emptying a table of n slots cost O(n) in all. */
levelmap_item *levelmap_drain(levelmap *m);

/* ---- the keyed hash --------------------------------------------------------- */

/* Hash of a level under the process key (SipHash-1-3, folded to 32 bits).
 * The first call reads the key with getrandom(2). */
uint32_t levelmap_hash(const char *level, size_t len);

/* Replaces the process key, for tests that want reproducible hashes. Call it
 * while no map holds an item (stored hashes are not recomputed) and while no
 * other thread hashes. */
void levelmap_set_key(const uint8_t key[16]);

/* Internal, exposed for the published test vectors: SipHash-c-d of data under
 * key, both read little-endian as the algorithm specifies. */
uint64_t levelmap__siphash(const uint8_t key[16], const void *data, size_t len,
                           unsigned crounds, unsigned drounds);

/* ---- topic levels: shared by the trees built on this map ---------------- */

/* End of the level starting at from: the next '/' or len. */
static inline size_t level_end(const char *s, size_t len, size_t from)
{
    if (from >= len)
        return len;
    const char *slash = memchr(s + from, '/', len - from);
    return slash ? (size_t)(slash - s) : len;
}

/* Start of the level ending at end (a '/' or the string's length). */
static inline size_t level_start(const char *s, size_t end)
{
    while (end > 0 && s[end - 1] != '/')
        end--;
    return end;
}

/* Is s[0..n) exactly the one-character level c ('+' or '#')? */
static inline bool is_level(const char *s, size_t n, char c)
{
    return n == 1 && s[0] == c;
}

#endif
