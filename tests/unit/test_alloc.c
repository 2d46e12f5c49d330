/* Unit tests for the allocation wrapper (broker/alloc.c): fault injection
 * and growable arrays. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "broker/alloc.h"

static void fail_at_fails_exactly_the_nth_allocation(void **state)
{
    (void)state;
    gmq_alloc_fail_at(3);
    void *a = gmq_malloc(8), *b = gmq_calloc(1, 8), *c = gmq_malloc(8), *d = gmq_malloc(8);
    assert_non_null(a);
    assert_non_null(b);
    assert_null(c);
    assert_non_null(d); /* only the third fails */
    assert_int_equal(gmq_alloc_count(), 4);
    gmq_alloc_fail_at(0);
    gmq_free(a);
    gmq_free(b);
    gmq_free(d);
}

static void grow_doubles_from_initial_and_keeps_contents(void **state)
{
    (void)state;
    int *v = NULL;
    size_t cap = 0;
    for (int i = 0; i < 100; i++) {
        assert_int_equal(GMQ_GROW(v, cap, (size_t)i + 1, 4), 0);
        v[i] = i;
    }
    assert_int_equal(cap, 128); /* 4, 8, ..., 128 */
    for (int i = 0; i < 100; i++)
        assert_int_equal(v[i], i);
    assert_int_equal(GMQ_GROW(v, cap, 10, 4), 0); /* enough room: nothing to do */
    assert_int_equal(cap, 128);
    gmq_free(v);
}

static void grow_failure_leaves_array_unchanged(void **state)
{
    (void)state;
    char *v = NULL;
    size_t cap = 0;
    assert_int_equal(GMQ_GROW(v, cap, 3, 4), 0);
    v[0] = 'x';
    char *before = v;
    gmq_alloc_fail_at(1);
    assert_int_equal(GMQ_GROW(v, cap, 100, 4), -1);
    gmq_alloc_fail_at(0);
    assert_ptr_equal(v, before);
    assert_int_equal(cap, 4);
    assert_int_equal(v[0], 'x');
    gmq_free(v);
}

static void live_counts_blocks_not_bytes_nor_resizes(void **state)
{
    (void)state;
    long base = gmq_alloc_live();
    void *a = gmq_malloc(8), *b = gmq_calloc(2, 8), *c = gmq_realloc(NULL, 8);
    assert_int_equal(gmq_alloc_live(), base + 3);
    c = gmq_realloc(c, 4096); /* a resize is the same block */
    assert_non_null(c);
    assert_int_equal(gmq_alloc_live(), base + 3);
    gmq_alloc_fail_at(1);
    assert_null(gmq_malloc(8)); /* a failed allocation is no block */
    gmq_alloc_fail_at(0);
    assert_int_equal(gmq_alloc_live(), base + 3);
    gmq_free(NULL);
    gmq_free(a);
    gmq_free(b);
    gmq_free(c);
    assert_int_equal(gmq_alloc_live(), base);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(fail_at_fails_exactly_the_nth_allocation),
        cmocka_unit_test(grow_doubles_from_initial_and_keeps_contents),
        cmocka_unit_test(grow_failure_leaves_array_unchanged),
        cmocka_unit_test(live_counts_blocks_not_bytes_nor_resizes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
