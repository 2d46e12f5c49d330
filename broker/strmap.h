/*
 * strmap.h - a map from NUL-terminated strings to pointers, with open
 * addressing and backward-shift deletion. The map does not own keys or
 * values: a value's key must stay valid (and unchanged) while it is in the
 * map, typically because the key is stored inside the value. One thread.
 */
#ifndef GATEMQ_STRMAP_H
#define GATEMQ_STRMAP_H

#include <stddef.h>

typedef struct strmap_slot {
    const char *key;
    void *value;
} strmap_slot;

typedef struct strmap {
    strmap_slot *slots;
    size_t cap, count;
} strmap;

/* The value stored under key[0..len), or NULL. */
void *strmap_get(const strmap *m, const char *key, size_t len);
/* Insert (key must not be there yet). Returns 0, or -1 on no memory with
 * the map unchanged. */
int strmap_put(strmap *m, const char *key, void *value);
/* Remove key; returns its value or NULL. */
void *strmap_del(strmap *m, const char *key);
/* Frees the slots (not the keys or values). */
void strmap_free(strmap *m);

#endif
