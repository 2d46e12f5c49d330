/*
 * topic_ref.h - shared helpers for the unit tests that check topic matching
 * against a reference: a brute-force MQTT 3.1.1 matcher and a seeded
 * generator of random topics and filters.
 *
 * Header-only: every definition is static, so each test program that includes
 * it gets its own copy (including its own rng_state). Seed rng_state with a
 * nonzero value before calling rng(), random_topic() or random_filter().
 *
 *   ref_match(filter, topic)  true when filter matches topic ([MQTT-4.7])
 *   rng()                     next value of a xorshift32 generator
 *   random_topic(buf, cap)    1-5 levels drawn from a small alphabet that
 *                             includes the empty level and '$' levels
 *   random_filter(buf, cap)   the same, with '+' levels and a trailing '#'
 */
#ifndef GATEMQ_TESTS_UNIT_TOPIC_REF_H
#define GATEMQ_TESTS_UNIT_TOPIC_REF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

/* Brute-force reference, straight from [MQTT-4.7]: compare level by level. */
static inline bool ref_match(const char *filter, const char *topic)
{
    if (topic[0] == '$' && (filter[0] == '+' || filter[0] == '#'))
        return false;
    const char *f = filter, *t = topic;
    for (;;) {
        size_t fl = strcspn(f, "/"), tl = strcspn(t, "/");
        if (fl == 1 && f[0] == '#')
            return true;
        if (!(fl == 1 && f[0] == '+') && (fl != tl || memcmp(f, t, fl) != 0))
            return false;
        bool fmore = f[fl] == '/', tmore = t[tl] == '/';
        if (!tmore)
            return !fmore || strcmp(f + fl, "/#") == 0;
        if (!fmore)
            return false;
        f += fl + 1;
        t += tl + 1;
    }
}

static uint32_t rng_state;

static inline uint32_t rng(void)
{
    uint32_t x = rng_state; /* xorshift32 */
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    return rng_state = x;
}

static const char *const alphabet[] = {"a", "b", "c", "", "$x", "$SYS", "ab"};
#define ALPHABET_N (sizeof(alphabet) / sizeof(alphabet[0]))

static inline void random_topic(char *buf, size_t cap)
{
    size_t depth = 1 + rng() % 5, off = 0;
    for (size_t i = 0; i < depth; i++)
        off += (size_t)snprintf(buf + off, cap - off, "%s%s", i ? "/" : "",
                                alphabet[rng() % ALPHABET_N]);
}

static inline void random_filter(char *buf, size_t cap)
{
    size_t depth = 1 + rng() % 5, off = 0;
    for (size_t i = 0; i < depth; i++) {
        const char *lvl = rng() % 4 == 0 ? "+" : alphabet[rng() % ALPHABET_N];
        if (i == depth - 1 && rng() % 4 == 0)
            lvl = "#";
        off += (size_t)snprintf(buf + off, cap - off, "%s%s", i ? "/" : "", lvl);
    }
}

#endif /* GATEMQ_TESTS_UNIT_TOPIC_REF_H */
