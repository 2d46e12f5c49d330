/*
 * lockout.h - login lockout arithmetic: which keys are refused, and for how
 * long, after repeated failed logins.
 *
 * A table maps a key (a user name, or a source address: the broker keeps one
 * table of each) to its state. Time is whatever the caller passes as `now`,
 * in seconds, from a clock that never goes backwards (the event loop's
 * monotonic time); this module never reads a clock, so tests drive it
 * exactly.
 *
 * The rule, for one key, with threshold T, initial lock I and cap M:
 *
 *   - Each failed login the caller reports (lockout_fail) while the key is
 *     not locked adds one to the key's count of consecutive failures.
 *   - The failure that brings the count to T locks the key for I seconds
 *     from `now`.
 *   - While locked (now < end of lock) the caller refuses attempts without
 *     checking the password. Such attempts are not failures: a lockout_fail
 *     during a lock changes nothing and returns 0, so hammering a locked key
 *     does not extend its lock.
 *   - Each failure after a lock has expired, while the count is still >= T
 *     (no success in between), locks again for twice the previous lock,
 *     capped at M: I, 2I, 4I, ... M, M, ...
 *   - A successful login (lockout_success) forgets the key: count 0, no
 *     lock, next lock I again.
 *
 * With the defaults (T=5, I=4 s, M=3600 s): failures 1-4 lock nothing, the
 * 5th locks for 4 s, the 6th (after those 4 s) for 8 s, the 7th for 16 s,
 * ... the 15th and later for 3600 s.
 *
 * Memory is bounded: at most max_entries keys are tracked. To track a new
 * key in a full table, the entry that has mattered least recently is
 * forgotten: the one whose max(last failure, end of lock) is oldest. An
 * unlocked entry therefore always goes before a locked one; only when every
 * entry is locked is the one whose lock ends soonest dropped. Each entry
 * costs about 100 bytes plus its key. Keys longer than LOCKOUT_KEY_MAX bytes
 * are cut to their first LOCKOUT_KEY_MAX bytes, so such keys sharing a
 * prefix share one entry: that can only make lockout stricter, and it keeps
 * a 64 KB MQTT user name from costing 64 KB per entry.
 *
 * Lookups are O(1) (a hash table with a per-table random key, so chosen
 * user names cannot force collisions), failures and successes O(log n).
 *
 * Not thread-safe: one table belongs to one thread (the event loop; these
 * calls are cheap). Keys are copied; the caller keeps ownership of its
 * buffers.
 */
#ifndef GATEMQ_LOCKOUT_H
#define GATEMQ_LOCKOUT_H

#include <stddef.h>

#define LOCKOUT_DEFAULT_THRESHOLD 5u
#define LOCKOUT_DEFAULT_INITIAL 4.0
#define LOCKOUT_DEFAULT_MAX 3600.0
#define LOCKOUT_KEY_MAX 256
/* lockout_fail's result when the failure could not be recorded. */
#define LOCKOUT_NOMEM (-1.0)

typedef struct lockout lockout;

/* A new empty table, freed with lockout_free. NULL if out of memory or if
 * the arguments make no sense: threshold 0, initial not > 0, max_lock <
 * initial, a non-finite duration, or max_entries 0. */
lockout *lockout_new(unsigned threshold, double initial, double max_lock,
                     size_t max_entries);

/* Seconds until key[0..len) may try again; 0 if it is not locked now. */
double lockout_remaining(const lockout *l, const char *key, size_t len, double now);

/* Record a failed login for key[0..len) at now. Returns the duration of
 * the lock this failure started (> 0), or 0 if it started none (below the
 * threshold, or the key was already locked: see the rule above), or
 * LOCKOUT_NOMEM if a new key could not be tracked (the table is unchanged). */
double lockout_fail(lockout *l, const char *key, size_t len, double now);

/* A successful login for key[0..len): forget it. No-op for unknown keys. */
void lockout_success(lockout *l, const char *key, size_t len);

/* Number of keys tracked (never more than max_entries). */
size_t lockout_count(const lockout *l);

/* Frees l and every entry; NULL is a no-op. */
void lockout_free(lockout *l);

#endif
