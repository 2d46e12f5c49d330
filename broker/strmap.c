#include "broker/strmap.h"

#include <stdint.h>
#include <string.h>

#include "broker/alloc.h"

static size_t hash(const char *s, size_t len)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a; keys here are not chosen by peers alone */
    for (size_t i = 0; i < len; i++)
        h = (h ^ (uint8_t)s[i]) * 1099511628211ull;
    return (size_t)(h ^ (h >> 29));
}

void *strmap_get(const strmap *m, const char *key, size_t len)
{
    if (!m->cap)
        return NULL;
    size_t mask = m->cap - 1;
    for (size_t i = hash(key, len) & mask; m->slots[i].key; i = (i + 1) & mask)
        if (strncmp(m->slots[i].key, key, len) == 0 && m->slots[i].key[len] == '\0')
            return m->slots[i].value;
    return NULL;
}

static void insert(strmap_slot *slots, size_t cap, const char *key, void *value)
{
    size_t i = hash(key, strlen(key)) & (cap - 1);
    while (slots[i].key)
        i = (i + 1) & (cap - 1);
    slots[i] = (strmap_slot){key, value};
}

int strmap_put(strmap *m, const char *key, void *value)
{
    if ((m->count + 1) * 4 > m->cap * 3) {
        size_t ncap = m->cap ? m->cap * 2 : 32;
        strmap_slot *slots = gmq_calloc(ncap, sizeof(*slots));
        if (!slots)
            return -1;
        for (size_t i = 0; i < m->cap; i++)
            if (m->slots[i].key)
                insert(slots, ncap, m->slots[i].key, m->slots[i].value);
        gmq_free(m->slots);
        m->slots = slots;
        m->cap = ncap;
    }
    insert(m->slots, m->cap, key, value);
    m->count++;
    return 0;
}

void *strmap_del(strmap *m, const char *key)
{
    if (!m->cap)
        return NULL;
    size_t mask = m->cap - 1;
    size_t i = hash(key, strlen(key)) & mask;
    while (m->slots[i].key && strcmp(m->slots[i].key, key) != 0)
        i = (i + 1) & mask;
    if (!m->slots[i].key)
        return NULL;
    void *value = m->slots[i].value;
    m->slots[i] = (strmap_slot){NULL, NULL};
    m->count--;
    /* Backward shift: pull later members of the probe run into the hole
     * when their home slot lies at or before it (cyclically). */
    for (size_t j = (i + 1) & mask; m->slots[j].key; j = (j + 1) & mask) {
        size_t home = hash(m->slots[j].key, strlen(m->slots[j].key)) & mask;
        if (((j - home) & mask) >= ((j - i) & mask)) {
            m->slots[i] = m->slots[j];
            m->slots[j] = (strmap_slot){NULL, NULL};
            i = j;
        }
    }
    return value;
}

void strmap_free(strmap *m)
{
    gmq_free(m->slots);
    m->slots = NULL;
    m->cap = m->count = 0;
}
