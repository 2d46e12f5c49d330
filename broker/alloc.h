/*
 * alloc.h - the one allocation wrapper every module of gatemq uses.
 *
 * Tests may make the Nth allocation from now on fail (gmq_alloc_fail_at) to
 * check that callers clean up and report an error. Returned memory is freed
 * with gmq_free; gmq_free(NULL) is a no-op. On failure NULL is returned and
 * nothing is leaked.
 */
#ifndef GATEMQ_ALLOC_H
#define GATEMQ_ALLOC_H

#include <stddef.h>

void *gmq_malloc(size_t n);
void *gmq_calloc(size_t count, size_t size);
void *gmq_realloc(void *p, size_t n);
void gmq_free(void *p);
/* Copy of s[0..len) with a terminating NUL. */
char *gmq_strndup(const char *s, size_t len);
char *gmq_strdup(const char *s);

/* Make room in a growable array *p of capacity *cap for need elements of
 * elem bytes, doubling from initial. Returns 0, or -1 on no memory with *p
 * and *cap unchanged. Use through GMQ_GROW. */
int gmq__grow(void **p, size_t *cap, size_t need, size_t elem, size_t initial);
#define GMQ_GROW(arr, cap, need, initial)                                      \
    gmq__grow((void **)&(arr), &(cap), (need), sizeof(*(arr)), (initial))

/* Fault injection for tests: the nth allocation counted from this call
 * (1 = the next one) fails, and every one after it succeeds again.
 * n = 0 turns injection off. Applies to the calling thread only. */
void gmq_alloc_fail_at(unsigned long n);
/* Allocations made since the last gmq_alloc_fail_at() call. */
unsigned long gmq_alloc_count(void);
/* Blocks allocated minus blocks freed by the calling thread since it
 * started. Tests compare it before and after an operation: equal means
 * nothing leaked, provided the thread frees what it allocates (a block
 * handed to another thread to free shows up as a leak here). */
long gmq_alloc_live(void);

#endif
