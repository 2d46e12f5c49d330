/*
 * aclcache.h - the topics one connection was recently allowed to publish to.
 *
 * A client publishes to the same few topics again and again (a gateway's
 * telemetry and status topics), and every PUBLISH under an ACL file needs
 * the answer "may this principal write here". The answer only changes when
 * the rules do, so the broker keeps, per connection, the last topics the
 * rules in force allowed, and asks the ACL engine only about the others.
 *
 * Validity. Every entry belongs to one ACL generation (broker.acl_gen,
 * bumped each time new rules are swapped in): a lookup under any other
 * generation finds nothing, and the first store under a new generation
 * drops every older entry. So a reload takes effect for the very next
 * PUBLISH, whatever the cache held. The principal is fixed for the life of
 * a connection, which is why the cache belongs to the connection and not to
 * the session (a session may be taken over by another user of its company).
 *
 * Only allowed topics are kept: a denied PUBLISH is logged, and the log line
 * costs far more than the check, so caching denials would buy nothing.
 *
 * Bounds. ACLCACHE_ENTRIES entries (2-way set associative, least recently
 * used way replaced), each holding a topic of at most ACLCACHE_TOPIC_MAX
 * bytes; longer topics are never cached and always checked. One cache is a
 * single block of about 1 KB, allocated on a connection's first allowed
 * PUBLISH under an ACL file (idle connections and brokers without ACL pay
 * nothing). The hash that places topics is not keyed: a client that chooses
 * topics colliding in one set only evicts its own entries.
 *
 * Ownership: aclcache_new returns a cache the caller frees with
 * aclcache_free. Topics are copied; the caller's bytes are only read during
 * a call. One thread.
 */
#ifndef GATEMQ_ACLCACHE_H
#define GATEMQ_ACLCACHE_H

#include <stdbool.h>
#include <stddef.h>

#define ACLCACHE_ENTRIES 16
#define ACLCACHE_TOPIC_MAX 58

typedef struct aclcache aclcache;

/* A new, empty cache, or NULL without memory. */
aclcache *aclcache_new(void);
/* Frees c; NULL is a no-op. */
void aclcache_free(aclcache *c);
/* Was topic[0..len) remembered as allowed under generation gen? */
bool aclcache_allowed(aclcache *c, unsigned gen, const char *topic, size_t len);
/* Remember that topic[0..len) is allowed under generation gen, replacing
 * the least recently used entry of its set. Entries of another generation
 * are dropped first. Topics longer than ACLCACHE_TOPIC_MAX (or empty) are
 * not remembered. */
void aclcache_remember(aclcache *c, unsigned gen, const char *topic, size_t len);

#endif
