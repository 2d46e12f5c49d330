#include "broker/alloc.h"

#include <stdlib.h>
#include <string.h>

/* Fault injection state, per thread so that worker threads never race on it.
 * Only tests set it; the hot path pays one branch. */
static _Thread_local unsigned long fail_at;
static _Thread_local unsigned long counted;

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
    return malloc(n ? n : 1);
}

void *gmq_calloc(size_t count, size_t size)
{
    if (gmq__should_fail())
        return NULL;
    return calloc(count ? count : 1, size ? size : 1);
}

void *gmq_realloc(void *p, size_t n)
{
    if (gmq__should_fail())
        return NULL;
    return realloc(p, n ? n : 1);
}

void gmq_free(void *p)
{
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
