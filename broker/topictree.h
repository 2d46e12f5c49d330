/*
 * topictree.h - the subscription index: topic filters -> subscribers.
 *
 * A tree with one node per topic level; each node's children are found by
 * hashing the level, with the '+' and '#' children kept apart, so matching a
 * topic costs in proportion to its depth (and the wildcard branches it meets),
 * not to the number of subscriptions.
 *
 * Subscribers are opaque pointers owned by the caller; the tree stores them,
 * never dereferences them, and forgets them on topictree_remove. Filters are
 * copied. A tree is owned by one thread (one event loop).
 */
#ifndef GATEMQ_TOPICTREE_H
#define GATEMQ_TOPICTREE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct topictree topictree;

/* Called once per (matching filter, subscriber); a subscriber whose several
 * filters match is reported several times, and the caller folds QoS. */
typedef void (*topictree_cb)(void *subscriber, uint8_t qos, void *arg);

/* NULL on no memory. */
topictree *topictree_new(void);
/* Frees the tree and its copies of filters; subscribers are not touched. */
void topictree_free(topictree *t);

/* Subscribe: adds (filter, subscriber) with qos, or updates the qos when the
 * pair is already there [MQTT-3.8.4-3]. filter must be a valid topic filter.
 * Returns 0, or -1 on no memory with the tree unchanged. */
int topictree_add(topictree *t, const char *filter, size_t flen, void *subscriber,
                  uint8_t qos);
/* Unsubscribe: removes (filter, subscriber); returns true when it was there.
 * Nodes left empty are freed. */
bool topictree_remove(topictree *t, const char *filter, size_t flen, void *subscriber);

/* Calls cb for every subscription whose filter matches the topic name,
 * applying the '$' rule [MQTT-4.7.2-1]. cb must not modify the tree. */
void topictree_match(const topictree *t, const char *topic, size_t tlen,
                     topictree_cb cb, void *arg);

/* Number of (filter, subscriber) pairs. */
size_t topictree_count(const topictree *t);
/* Number of nodes below the root, one per distinct filter prefix: shows that
 * removals prune, and sizes the index for stats. */
size_t topictree_node_count(const topictree *t);

#endif
