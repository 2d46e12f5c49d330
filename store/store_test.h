/*
 * store_test.h - counters and a fault hook for the store's unit tests.
 *
 * Not for the broker's hot path: store_get_stats takes the store's queue
 * lock. Both functions are called on the loop thread (or the thread that
 * owns the store before store_start).
 */
#ifndef GATEMQ_STORE_TEST_H
#define GATEMQ_STORE_TEST_H

#include <stdint.h>

#include "store/store.h"

typedef struct store_stats {
    uint64_t transactions; /* batches committed */
    uint64_t writes;       /* writes committed (a batch holds one or more) */
    uint64_t failures;     /* batch attempts rolled back and retried */
    uint64_t dropped;      /* writes given up on at close after repeated failures */
} store_stats;

void store_get_stats(store *s, store_stats *out);

/* Make the next n batches fail at COMMIT as an I/O error would: each is
 * rolled back and retried after the usual back-off. */
void store_test_fail_commits(store *s, unsigned n);

#endif
