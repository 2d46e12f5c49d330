/*
 * tempdir.h - a fresh temporary directory per test, for the unit tests that
 * open a real database (the store, the outbox).
 *
 *   tempdir_make(dir, cap, name)  creates $TMPDIR/name-XXXXXX (/tmp without
 *                                 TMPDIR) and writes its path into dir
 *   tempdir_remove(dir)           removes it with everything below it
 *
 * Header-only, as the other shared unit-test helpers: test programs link
 * only their own object and the core library.
 */
#ifndef GATEMQ_TESTS_UNIT_TEMPDIR_H
#define GATEMQ_TESTS_UNIT_TEMPDIR_H

#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>

/* 0, or -1 if the directory could not be made (or the path does not fit). */
static inline int tempdir_make(char *dir, size_t cap, const char *name)
{
    const char *tmp = getenv("TMPDIR");
    int n = snprintf(dir, cap, "%s/%s-XXXXXX", tmp && *tmp ? tmp : "/tmp", name);
    if (n < 0 || (size_t)n >= cap)
        return -1;
    return mkdtemp(dir) ? 0 : -1;
}

static inline int tempdir_remove_entry(const char *path, const struct stat *sb, int flag,
                                       struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static inline int tempdir_remove(const char *dir)
{
    return nftw(dir, tempdir_remove_entry, 16, FTW_DEPTH | FTW_PHYS);
}

#endif /* GATEMQ_TESTS_UNIT_TEMPDIR_H */
