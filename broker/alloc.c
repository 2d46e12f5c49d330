#include "broker/alloc.h"

#include <stdlib.h>
#include <string.h>

/* Fault injection state, per thread so that worker threads never race on it.
 * Only tests set it; the hot path pays one branch. */
static _Thread_local unsigned long fail_at;
static _Thread_local unsigned long counted;
/* Blocks this thread allocated minus blocks it freed: tests compare it
 * before and after an operation to find leaks without a sanitizer. */
static _Thread_local long live;

static int gmq__should_fail(void)
{
    counted++;
    if (fail_at && counted == fail_at) {
        fail_at = 0;
        return 1;
    }
    return 0;
}

void *gmq_malloc(size_t n)
{
    if (gmq__should_fail())
        return NULL;
    void *p = malloc(n ? n : 1);
    live += p != NULL;
    return p;
}

void *gmq_calloc(size_t count, size_t size)
{
    if (gmq__should_fail())
        return NULL;
    void *p = calloc(count ? count : 1, size ? size : 1);
    live += p != NULL;
    return p;
}

void *gmq_realloc(void *p, size_t n)
{
    if (gmq__should_fail())
        return NULL;
    void *np = realloc(p, n ? n : 1);
    live += np != NULL && p == NULL; /* a resize is not a new block */
    return np;
}

void gmq_free(void *p)
{
    live -= p != NULL;
    free(p);
}

char *gmq_strndup(const char *s, size_t len)
{
    char *d = gmq_malloc(len + 1);
    if (!d)
        return NULL;
    memcpy(d, s, len);
    d[len] = '\0';
    return d;
}

char *gmq_strdup(const char *s)
{
    return gmq_strndup(s, strlen(s));
}

int gmq__grow(void **p, size_t *cap, size_t need, size_t elem, size_t initial)
{
    if (need <= *cap)
        return 0;
    size_t ncap = *cap ? *cap : initial;
    while (ncap < need)
        ncap *= 2;
    void *np = gmq_realloc(*p, ncap * elem);
    if (!np)
        return -1;
    *p = np;
    *cap = ncap;
    return 0;
}

void gmq_alloc_fail_at(unsigned long n)
{
    fail_at = n;
    counted = 0;
}

unsigned long gmq_alloc_count(void)
{
    return counted;
}

long gmq_alloc_live(void)
{
    return live;
}
