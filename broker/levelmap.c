/*
 * levelmap.c - the child table of the topic trees (see levelmap.h).
 *
 * Dense mode (cap <= LEVELMAP_DENSE_MAX): items are packed in slots
 * [0, count) and the rest are NULL. Hashed mode: cap is a power of two, an
 * item lives in the probe run starting at its home slot (hash & (cap - 1)),
 * and at least a quarter of the slots are NULL, so every probe ends. Unused
 * slots are NULL in both modes, which lets a rebuild read either one.
 */
#include "broker/levelmap.h"

#include <assert.h>
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "broker/alloc.h"

#define LM_NOT_FOUND UINT32_MAX
#define LM_CAP_MAX (1u << 30) /* a larger table could not double in a uint32_t */

/* ---- SipHash ---------------------------------------------------------------- */

static uint64_t lm__k0, lm__k1;
static pthread_once_t lm__key_once = PTHREAD_ONCE_INIT;

static uint64_t lm__le64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

static uint64_t lm__rotl(uint64_t x, unsigned b)
{
    return x << b | x >> (64 - b);
}

static void lm__sipround(uint64_t v[4])
{
    v[0] += v[1];
    v[1] = lm__rotl(v[1], 13) ^ v[0];
    v[0] = lm__rotl(v[0], 32);
    v[2] += v[3];
    v[3] = lm__rotl(v[3], 16) ^ v[2];
    v[0] += v[3];
    v[3] = lm__rotl(v[3], 21) ^ v[0];
    v[2] += v[1];
    v[1] = lm__rotl(v[1], 17) ^ v[2];
    v[2] = lm__rotl(v[2], 32);
}

static uint64_t lm__siphash(uint64_t k0, uint64_t k1, const uint8_t *p, size_t n,
                            unsigned crounds, unsigned drounds)
{
    /* The initial constants spell "somepseudorandomlygeneratedbytes". */
    uint64_t v[4] = {k0 ^ 0x736f6d6570736575u, k1 ^ 0x646f72616e646f6du,
                     k0 ^ 0x6c7967656e657261u, k1 ^ 0x7465646279746573u};
    size_t whole = n - n % 8;
    for (size_t i = 0; i < whole; i += 8) {
        uint64_t m = lm__le64(p + i);
        v[3] ^= m;
        for (unsigned r = 0; r < crounds; r++)
            lm__sipround(v);
        v[0] ^= m;
    }
    /* The last word carries the leftover bytes and the length mod 256, so
     * inputs that differ only in trailing zero bytes hash differently. */
    uint64_t last = (uint64_t)n << 56;
    for (size_t i = 0; i < n % 8; i++)
        last |= (uint64_t)p[whole + i] << (8 * i);
    v[3] ^= last;
    for (unsigned r = 0; r < crounds; r++)
        lm__sipround(v);
    v[0] ^= last;
    v[2] ^= 0xff;
    for (unsigned r = 0; r < drounds; r++)
        lm__sipround(v);
    return v[0] ^ v[1] ^ v[2] ^ v[3];
}

uint64_t levelmap__siphash(const uint8_t key[16], const void *data, size_t len,
                           unsigned crounds, unsigned drounds)
{
    return lm__siphash(lm__le64(key), lm__le64(key + 8), data, len, crounds, drounds);
}

static void lm__key_init(void)
{
    uint8_t key[16];
    size_t got = 0;
    while (got < sizeof(key)) {
        ssize_t r = getrandom(key + got, sizeof(key) - got, 0);
        if (r > 0)
            got += (size_t)r;
        else if (r < 0 && errno != EINTR)
            break;
    }
    if (got < sizeof(key)) {
        /* Only where the system call is missing or filtered. The broker must
         * still run; a key from clocks, pid and a stack address is weaker but
         * still unknown to a remote client. */
        struct timespec rt = {0}, mono = {0};
        clock_gettime(CLOCK_REALTIME, &rt);
        clock_gettime(CLOCK_MONOTONIC, &mono);
        uint64_t seed[4] = {(uint64_t)rt.tv_sec, (uint64_t)rt.tv_nsec,
                            (uint64_t)mono.tv_nsec ^ (uint64_t)getpid() << 32,
                            (uint64_t)(uintptr_t)&rt};
        uint64_t a = lm__siphash(0, 0, (const uint8_t *)seed, sizeof(seed), 2, 4);
        uint64_t b = lm__siphash(a, 1, (const uint8_t *)seed, sizeof(seed), 2, 4);
        memcpy(key, &a, 8);
        memcpy(key + 8, &b, 8);
    }
    lm__k0 = lm__le64(key);
    lm__k1 = lm__le64(key + 8);
}

uint32_t levelmap_hash(const char *level, size_t len)
{
    (void)pthread_once(&lm__key_once, lm__key_init);
    uint64_t h = lm__siphash(lm__k0, lm__k1, (const uint8_t *)level, len, 1, 3);
    return (uint32_t)(h ^ h >> 32);
}

void levelmap_set_key(const uint8_t key[16])
{
    (void)pthread_once(&lm__key_once, lm__key_init); /* so it cannot overwrite ours */
    lm__k0 = lm__le64(key);
    lm__k1 = lm__le64(key + 8);
}

/* ---- the table -------------------------------------------------------------- */

static bool lm__dense(const levelmap *m)
{
    return m->cap <= LEVELMAP_DENSE_MAX;
}

static bool lm__same_level(const levelmap_item *it, const char *s, size_t n)
{
    return it->len == n && memcmp(it->level, s, n) == 0;
}

/* Slot holding exactly this item, found by address. */
static uint32_t lm__slot_of(const levelmap *m, const levelmap_item *it)
{
    if (lm__dense(m)) {
        for (uint32_t i = 0; i < m->count; i++)
            if (m->slots[i] == it)
                return i;
        return LM_NOT_FOUND;
    }
    uint32_t mask = m->cap - 1;
    for (uint32_t i = it->hash & mask; m->slots[i]; i = (i + 1) & mask)
        if (m->slots[i] == it)
            return i;
    return LM_NOT_FOUND;
}

/* Caller guarantees room. */
static void lm__put(levelmap *m, levelmap_item *it)
{
    if (lm__dense(m)) {
        m->slots[m->count++] = it;
        return;
    }
    uint32_t mask = m->cap - 1, i = it->hash & mask;
    while (m->slots[i])
        i = (i + 1) & mask;
    m->slots[i] = it;
    m->count++;
}

/* Moves the items into a table of cap slots; LEVELMAP_ENOMEM with m unchanged. */
static int lm__rebuild(levelmap *m, uint32_t cap)
{
    levelmap_item **fresh = gmq_calloc(cap, sizeof(*fresh));
    if (!fresh)
        return LEVELMAP_ENOMEM;
    levelmap_item **old = m->slots;
    uint32_t oldcap = m->cap;
    m->slots = fresh;
    m->cap = cap;
    m->count = 0;
    for (uint32_t i = 0; i < oldcap; i++)
        if (old[i])
            lm__put(m, old[i]);
    gmq_free(old);
    return LEVELMAP_OK;
}

void levelmap_fini(levelmap *m)
{
    gmq_free(m->slots);
    *m = (levelmap){0};
}

levelmap_item *levelmap_find(const levelmap *m, const char *level, size_t len)
{
    if (!m->count)
        return NULL;
    if (lm__dense(m)) { /* no hashing: a short scan is cheaper */
        for (uint32_t i = 0; i < m->count; i++)
            if (lm__same_level(m->slots[i], level, len))
                return m->slots[i];
        return NULL;
    }
    uint32_t hv = levelmap_hash(level, len), mask = m->cap - 1;
    for (uint32_t i = hv & mask; m->slots[i]; i = (i + 1) & mask)
        if (m->slots[i]->hash == hv && lm__same_level(m->slots[i], level, len))
            return m->slots[i];
    return NULL;
}

int levelmap_insert(levelmap *m, levelmap_item *it)
{
    uint32_t need = m->count + 1;
    bool room = lm__dense(m) ? need <= m->cap : (uint64_t)need * 4 <= (uint64_t)m->cap * 3;
    if (!room) {
        if (m->cap >= LM_CAP_MAX || lm__rebuild(m, m->cap ? m->cap * 2 : 2) != 0)
            return LEVELMAP_ENOMEM;
    }
    /* Hashed even in dense mode: growing into hashed mode then needs no
     * rehash, and so cannot fail halfway. */
    it->hash = levelmap_hash(it->level, it->len);
    lm__put(m, it);
    return LEVELMAP_OK;
}

void levelmap_remove(levelmap *m, levelmap_item *it)
{
    uint32_t i = lm__slot_of(m, it);
    assert(i != LM_NOT_FOUND);
    if (lm__dense(m)) {
        m->slots[i] = m->slots[--m->count];
        m->slots[m->count] = NULL;
    } else {
        /* Backward shift: pull later entries of the probe run into the hole
         * unless their home slot lies cyclically in (hole, j]. No tombstones,
         * so lookups never slow down with churn. */
        uint32_t mask = m->cap - 1, j = i;
        for (;;) {
            j = (j + 1) & mask;
            if (!m->slots[j])
                break;
            uint32_t home = m->slots[j]->hash & mask;
            bool stays = i <= j ? (i < home && home <= j) : (i < home || home <= j);
            if (!stays) {
                m->slots[i] = m->slots[j];
                i = j;
            }
        }
        m->slots[i] = NULL;
        m->count--;
    }
    if (m->count == 0)
        levelmap_fini(m);
    else if (!lm__dense(m) && m->count * 8 <= m->cap)
        (void)lm__rebuild(m, m->cap / 2); /* keeping the big table is fine too */
}

levelmap_item *levelmap_next(const levelmap *m, const levelmap_item *prev)
{
    uint32_t from = 0;
    if (prev) {
        uint32_t i = lm__slot_of(m, prev);
        assert(i != LM_NOT_FOUND);
        from = i + 1;
    }
    uint32_t end = lm__dense(m) ? m->count : m->cap;
    for (uint32_t i = from; i < end; i++)
        if (m->slots[i])
            return m->slots[i];
    return NULL;
}

levelmap_item *levelmap_drain(levelmap *m)
{
    if (!m->count)
        return NULL;
    /* cap doubles as the cursor: slots at or above it are already taken. */
    while (!m->slots[m->cap - 1])
        m->cap--;
    levelmap_item *it = m->slots[--m->cap];
    if (--m->count == 0)
        levelmap_fini(m);
    return it;
}
