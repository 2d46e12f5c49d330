/*
 * aclcache.c - recently allowed publish topics of one connection (see
 * aclcache.h).
 */
#include "broker/aclcache.h"

#include <stdint.h>
#include <string.h>

#include "broker/alloc.h"

#define ACLCACHE__WAYS 2
#define ACLCACHE__SETS (ACLCACHE_ENTRIES / ACLCACHE__WAYS)

_Static_assert(ACLCACHE__WAYS == 2, "the replacement bit assumes two ways");
_Static_assert((ACLCACHE__SETS & (ACLCACHE__SETS - 1)) == 0, "sets must be a power of two");
_Static_assert(ACLCACHE_TOPIC_MAX <= UINT16_MAX, "topic length must fit an entry");

typedef struct aclcache__entry {
    uint32_t hash;
    uint16_t len; /* 0: empty */
    char topic[ACLCACHE_TOPIC_MAX];
} aclcache__entry;

struct aclcache {
    unsigned gen;                     /* generation of every non-empty entry */
    uint8_t victim[ACLCACHE__SETS];   /* per set: the way to replace next */
    aclcache__entry e[ACLCACHE__SETS][ACLCACHE__WAYS];
};

/* Eight bytes at a time: topics are short and this runs on every PUBLISH.
 * Not keyed (see aclcache.h). */
static uint32_t aclcache__hash(const char *s, size_t n)
{
    uint64_t h = 0x9e3779b97f4a7c15ull ^ n;
    for (; n >= 8; s += 8, n -= 8) {
        uint64_t w;
        memcpy(&w, s, 8);
        h = (h ^ w) * 0xff51afd7ed558ccdull;
        h ^= h >> 32;
    }
    uint64_t w = 0;
    for (size_t i = 0; i < n; i++)
        w |= (uint64_t)(unsigned char)s[i] << (8 * i);
    h = (h ^ w) * 0xc4ceb9fe1a85ec53ull;
    h ^= h >> 29;
    return (uint32_t)h;
}

aclcache *aclcache_new(void)
{
    return gmq_calloc(1, sizeof(aclcache));
}

void aclcache_free(aclcache *c)
{
    gmq_free(c);
}

bool aclcache_allowed(aclcache *c, unsigned gen, const char *topic, size_t len)
{
    if (c->gen != gen || len == 0 || len > ACLCACHE_TOPIC_MAX)
        return false;
    uint32_t h = aclcache__hash(topic, len);
    unsigned set = h & (ACLCACHE__SETS - 1);
    for (unsigned w = 0; w < ACLCACHE__WAYS; w++) {
        const aclcache__entry *e = &c->e[set][w];
        if (e->len == len && e->hash == h && memcmp(e->topic, topic, len) == 0) {
            c->victim[set] = (uint8_t)(w ^ 1);
            return true;
        }
    }
    return false;
}

void aclcache_remember(aclcache *c, unsigned gen, const char *topic, size_t len)
{
    if (len == 0 || len > ACLCACHE_TOPIC_MAX)
        return;
    if (c->gen != gen) {
        memset(c, 0, sizeof(*c));
        c->gen = gen;
    }
    uint32_t h = aclcache__hash(topic, len);
    unsigned set = h & (ACLCACHE__SETS - 1);
    unsigned way = c->victim[set];
    for (unsigned w = 0; w < ACLCACHE__WAYS; w++) {
        const aclcache__entry *e = &c->e[set][w];
        if (e->len == len && e->hash == h && memcmp(e->topic, topic, len) == 0) {
            way = w; /* already there: just mark it used */
            break;
        }
        if (e->len == 0 && c->e[set][way].len != 0)
            way = w;
    }
    aclcache__entry *e = &c->e[set][way];
    e->hash = h;
    e->len = (uint16_t)len;
    memcpy(e->topic, topic, len);
    c->victim[set] = (uint8_t)(way ^ 1);
}
