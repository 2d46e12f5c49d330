/*
 * lockout.c - see lockout.h for the rule.
 *
 * Entries live in a chained hash table (lookup) and in a binary min-heap
 * ordered by "last relevant time" = max(last failure, end of lock), which
 * is the eviction order. The heap key of an entry changes only when the
 * entry is touched, so one sift per failure keeps it exact.
 */
#include "auth/lockout.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <sys/random.h>

#include "broker/alloc.h"

typedef struct lockout__entry {
    struct lockout__entry *next; /* hash chain */
    uint64_t hash;
    size_t heap_idx;
    unsigned fails;              /* consecutive failures, saturating */
    double lock_until;           /* locked while now < lock_until */
    double last_lock;            /* duration of the last lock, 0 if none */
    double relevant;             /* heap key: max(last failure, lock_until) */
    size_t key_len;
    char key[];
} lockout__entry;

struct lockout {
    unsigned threshold;
    double initial, max_lock;
    size_t max_entries;
    uint64_t k0, k1;             /* SipHash key */
    lockout__entry **buckets;
    size_t nbuckets;             /* power of two */
    lockout__entry **heap;
    size_t count, heap_cap;
};

/* ---- SipHash-2-4: keyed, so remote users cannot pick colliding names ---- */

#define LOCKOUT__ROTL(x, b) (uint64_t)(((x) << (b)) | ((x) >> (64 - (b))))
#define LOCKOUT__ROUND(v0, v1, v2, v3) do {                                   \
        v0 += v1; v1 = LOCKOUT__ROTL(v1, 13); v1 ^= v0; v0 = LOCKOUT__ROTL(v0, 32); \
        v2 += v3; v3 = LOCKOUT__ROTL(v3, 16); v3 ^= v2;                      \
        v0 += v3; v3 = LOCKOUT__ROTL(v3, 21); v3 ^= v0;                      \
        v2 += v1; v1 = LOCKOUT__ROTL(v1, 17); v1 ^= v2; v2 = LOCKOUT__ROTL(v2, 32); \
    } while (0)

static uint64_t lockout__siphash(uint64_t k0, uint64_t k1, const uint8_t *p, size_t n)
{
    uint64_t v0 = k0 ^ 0x736f6d6570736575ULL, v1 = k1 ^ 0x646f72616e646f6dULL;
    uint64_t v2 = k0 ^ 0x6c7967656e657261ULL, v3 = k1 ^ 0x7465646279746573ULL;
    uint64_t b = (uint64_t)n << 56;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t m = 0;
        for (int j = 7; j >= 0; j--)
            m = m << 8 | p[i + (size_t)j];
        v3 ^= m;
        LOCKOUT__ROUND(v0, v1, v2, v3);
        LOCKOUT__ROUND(v0, v1, v2, v3);
        v0 ^= m;
    }
    for (size_t j = 0; i + j < n; j++)
        b |= (uint64_t)p[i + j] << (8 * j);
    v3 ^= b;
    LOCKOUT__ROUND(v0, v1, v2, v3);
    LOCKOUT__ROUND(v0, v1, v2, v3);
    v0 ^= b;
    v2 ^= 0xff;
    for (int r = 0; r < 4; r++)
        LOCKOUT__ROUND(v0, v1, v2, v3);
    return v0 ^ v1 ^ v2 ^ v3;
}

/* ---- heap ------------------------------------------------------------- */

static void lockout__heap_set(lockout *l, size_t i, lockout__entry *e)
{
    l->heap[i] = e;
    e->heap_idx = i;
}

static void lockout__sift(lockout *l, size_t i)
{
    lockout__entry *e = l->heap[i];
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (l->heap[parent]->relevant <= e->relevant)
            break;
        lockout__heap_set(l, i, l->heap[parent]);
        i = parent;
    }
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= l->count)
            break;
        if (c + 1 < l->count && l->heap[c + 1]->relevant < l->heap[c]->relevant)
            c++;
        if (e->relevant <= l->heap[c]->relevant)
            break;
        lockout__heap_set(l, i, l->heap[c]);
        i = c;
    }
    lockout__heap_set(l, i, e);
}

/* ---- table -------------------------------------------------------------- */

static size_t lockout__cut(size_t len)
{
    return len > LOCKOUT_KEY_MAX ? LOCKOUT_KEY_MAX : len;
}

static lockout__entry *lockout__find(const lockout *l, const char *key, size_t len,
                                     uint64_t h)
{
    for (lockout__entry *e = l->buckets[h & (l->nbuckets - 1)]; e; e = e->next)
        if (e->hash == h && e->key_len == len && memcmp(e->key, key, len) == 0)
            return e;
    return NULL;
}

/* Unlink e from its chain and the heap, and free it. */
static void lockout__remove(lockout *l, lockout__entry *e)
{
    lockout__entry **pp = &l->buckets[e->hash & (l->nbuckets - 1)];
    while (*pp != e)
        pp = &(*pp)->next;
    *pp = e->next;

    size_t i = e->heap_idx;
    l->count--;
    if (i != l->count) {
        lockout__heap_set(l, i, l->heap[l->count]);
        lockout__sift(l, i);
    }
    gmq_free(e);
}

/* Double the bucket array while it is smaller than the entry count and the
 * table's bound. Failing to grow only lengthens chains. */
static void lockout__maybe_grow(lockout *l)
{
    if (l->count < l->nbuckets || l->nbuckets >= l->max_entries ||
        l->nbuckets > SIZE_MAX / 2 / sizeof *l->buckets)
        return;
    size_t nb = l->nbuckets * 2;
    lockout__entry **b = gmq_calloc(nb, sizeof *b);
    if (!b)
        return;
    for (size_t i = 0; i < l->nbuckets; i++) {
        lockout__entry *e = l->buckets[i];
        while (e) {
            lockout__entry *next = e->next;
            e->next = b[e->hash & (nb - 1)];
            b[e->hash & (nb - 1)] = e;
            e = next;
        }
    }
    gmq_free(l->buckets);
    l->buckets = b;
    l->nbuckets = nb;
}

lockout *lockout_new(unsigned threshold, double initial, double max_lock,
                     size_t max_entries)
{
    if (threshold == 0 || !isfinite(initial) || !isfinite(max_lock) || !(initial > 0) ||
        max_lock < initial || max_entries == 0 ||
        max_entries > SIZE_MAX / 2 / sizeof(lockout__entry *))
        return NULL;
    lockout *l = gmq_calloc(1, sizeof *l);
    if (!l)
        return NULL;
    l->threshold = threshold;
    l->initial = initial;
    l->max_lock = max_lock;
    l->max_entries = max_entries;
    l->nbuckets = 16;
    l->buckets = gmq_calloc(l->nbuckets, sizeof *l->buckets);
    if (!l->buckets) {
        gmq_free(l);
        return NULL;
    }
    /* Without randomness the table still works; only its resistance to
     * chosen collisions is lost, so a failure here is not fatal. */
    uint64_t k[2] = { (uint64_t)(uintptr_t)l, 0x9e3779b97f4a7c15ULL };
    while (getrandom(k, sizeof k, GRND_NONBLOCK) < 0 && errno == EINTR)
        ;
    l->k0 = k[0];
    l->k1 = k[1];
    return l;
}

double lockout_remaining(const lockout *l, const char *key, size_t len, double now)
{
    len = lockout__cut(len);
    const lockout__entry *e =
        lockout__find(l, key, len, lockout__siphash(l->k0, l->k1, (const uint8_t *)key, len));
    return e && now < e->lock_until ? e->lock_until - now : 0;
}

double lockout_fail(lockout *l, const char *key, size_t len, double now)
{
    len = lockout__cut(len);
    uint64_t h = lockout__siphash(l->k0, l->k1, (const uint8_t *)key, len);
    lockout__entry *e = lockout__find(l, key, len, h);
    if (e && now < e->lock_until)
        return 0;

    if (!e) {
        /* Allocate before evicting, so that a failure leaves the table as
         * it was. */
        e = gmq_malloc(sizeof *e + len);
        if (!e)
            return LOCKOUT_NOMEM;
        if (l->count == l->heap_cap && l->count < l->max_entries) {
            size_t cap = l->heap_cap ? l->heap_cap * 2 : 16;
            if (cap > l->max_entries)
                cap = l->max_entries;
            lockout__entry **heap = gmq_realloc(l->heap, cap * sizeof *heap);
            if (!heap) {
                gmq_free(e);
                return LOCKOUT_NOMEM;
            }
            l->heap = heap;
            l->heap_cap = cap;
        }
        if (l->count == l->max_entries)
            lockout__remove(l, l->heap[0]);
        memset(e, 0, sizeof *e);
        e->hash = h;
        e->key_len = len;
        memcpy(e->key, key, len);
        e->relevant = now;
        e->next = l->buckets[h & (l->nbuckets - 1)];
        l->buckets[h & (l->nbuckets - 1)] = e;
        lockout__heap_set(l, l->count++, e);
        lockout__maybe_grow(l);
    }

    if (e->fails < UINT_MAX)
        e->fails++;
    double d = 0;
    if (e->fails >= l->threshold) {
        d = e->last_lock > 0 ? e->last_lock * 2 : l->initial;
        if (d > l->max_lock)
            d = l->max_lock;
        e->last_lock = d;
        e->lock_until = now + d;
    }
    e->relevant = now + d;
    lockout__sift(l, e->heap_idx);
    return d;
}

void lockout_success(lockout *l, const char *key, size_t len)
{
    len = lockout__cut(len);
    lockout__entry *e =
        lockout__find(l, key, len, lockout__siphash(l->k0, l->k1, (const uint8_t *)key, len));
    if (e)
        lockout__remove(l, e);
}

size_t lockout_count(const lockout *l)
{
    return l->count;
}

void lockout_free(lockout *l)
{
    if (!l)
        return;
    for (size_t i = 0; i < l->count; i++)
        gmq_free(l->heap[i]);
    gmq_free(l->heap);
    gmq_free(l->buckets);
    gmq_free(l);
}
