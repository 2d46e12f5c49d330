/*
 * fuzz_util.h - what the fuzz targets share: an oracle check that aborts.
 *
 * libFuzzer records an abort as a crash and saves the input, so a failed
 * check is reported exactly like a sanitizer finding. The message names the
 * check so that a crash file explains itself when replayed.
 */
#ifndef GATEMQ_FUZZ_UTIL_H
#define GATEMQ_FUZZ_UTIL_H

#include <stdio.h>
#include <stdlib.h>

#define FUZZ_CHECK(cond)                                                         \
    do {                                                                         \
        if (!(cond)) {                                                           \
            fprintf(stderr, "%s:%d: oracle check failed: %s\n", __FILE__,        \
                    __LINE__, #cond);                                            \
            abort();                                                             \
        }                                                                        \
    } while (0)

#endif
