/*
 * retain.h - the retained-message store: at most one message per topic name.
 *
 * A tree keyed by topic level, so a subscription's filter finds its retained
 * messages by walking only the branches it can match. The store holds one
 * reference to each message (see msg.h). A store is owned by one thread.
 */
#ifndef GATEMQ_RETAIN_H
#define GATEMQ_RETAIN_H

#include <stdbool.h>
#include <stddef.h>

#include "broker/msg.h"

typedef struct retain_store retain_store;

typedef void (*retain_cb)(gmq_msg *msg, void *arg);

/* NULL on no memory. */
retain_store *retain_new(void);
/* Drops the store's reference to every message and frees the store. */
void retain_free(retain_store *r);

/* Stores msg under msg->topic, taking a new reference and dropping the one
 * held for the message it replaces. A message with an empty payload instead
 * removes the topic's retained message [MQTT-3.3.1-10,11] and is not stored.
 * Returns 0, or -1 on no memory with the store unchanged. */
int retain_set(retain_store *r, gmq_msg *msg);

/* Calls cb for every retained message whose topic matches the valid filter,
 * applying the '$' rule [MQTT-4.7.2-1]. cb may take references (gmq_msg_ref)
 * but must not modify the store. */
void retain_match(const retain_store *r, const char *filter, size_t flen,
                  retain_cb cb, void *arg);

/* Retained message of exactly this topic, or NULL. No reference is taken. */
gmq_msg *retain_get(const retain_store *r, const char *topic, size_t tlen);

size_t retain_count(const retain_store *r);
size_t retain_bytes(const retain_store *r); /* sum of payload sizes */
/* Number of nodes below the root, one per distinct topic prefix: shows that
 * clearing prunes, and sizes the store for stats. */
size_t retain_node_count(const retain_store *r);

#endif
