/*
 * guard.h - unreadable ("guard") pages for the protocol unit tests.
 *
 * A test copies its input so that the input's last byte is the last readable
 * byte before a PROT_NONE page; code under test that reads one byte past what
 * it was given then crashes instead of passing.
 *
 * The mapping holds up to GUARD_MAX slots, each a readable page followed by a
 * guard page, so a test can place several inputs (say a filter and a topic)
 * that each end at their own guard page.
 *
 *   guard_setup / guard_teardown    cmocka group fixtures for one slot
 *   guard_setup2                    group fixture for two slots
 *   guard_setup_n(n)                maps n slots (1..GUARD_MAX)
 *   guard_end(which)                first unreadable byte of slot which
 *   at_guard_n(which, src, len)     copies src to end at slot which's guard
 *   at_guard(src, len)              the same for slot 0
 *
 * Header-only: the state is static, so each test program has its own. Include
 * it after <cmocka.h> (assert_true is used to reject oversized inputs).
 */
#ifndef GATEMQ_TESTS_UNIT_GUARD_H
#define GATEMQ_TESTS_UNIT_GUARD_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define GUARD_MAX 2u

static uint8_t *guard_base;
static size_t guard_page_size;
static unsigned guard_slots;

static inline int guard_setup_n(unsigned n)
{
    if (n == 0 || n > GUARD_MAX)
        return -1;
    guard_page_size = (size_t)sysconf(_SC_PAGESIZE);
    void *p = mmap(NULL, 2 * n * guard_page_size, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        return -1;
    guard_base = p;
    guard_slots = n;
    for (unsigned i = 0; i < n; i++)
        if (mprotect(guard_base + (2 * i + 1) * guard_page_size, guard_page_size,
                     PROT_NONE) != 0)
            return -1;
    return 0;
}

static inline int guard_setup(void **state)
{
    (void)state;
    return guard_setup_n(1);
}

static inline int guard_setup2(void **state)
{
    (void)state;
    return guard_setup_n(2);
}

static inline int guard_teardown(void **state)
{
    (void)state;
    return munmap(guard_base, 2 * guard_slots * guard_page_size);
}

/* The first unreadable byte of slot which. */
static inline uint8_t *guard_end(unsigned which)
{
    assert_true(which < guard_slots);
    return guard_base + (2 * which + 1) * guard_page_size;
}

/* Copies src so that its last byte is the last readable one of slot which. */
static inline const uint8_t *at_guard_n(unsigned which, const void *src, size_t len)
{
    assert_true(len <= guard_page_size);
    uint8_t *dst = guard_end(which) - len;
    if (len > 0)
        memcpy(dst, src, len);
    return dst;
}

static inline const uint8_t *at_guard(const void *src, size_t len)
{
    return at_guard_n(0, src, len);
}

#endif /* GATEMQ_TESTS_UNIT_GUARD_H */
