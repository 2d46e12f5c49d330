/*
 * msg.h - an application message shared by every subscriber it goes to.
 *
 * A message is immutable once made and reference counted: the router, every
 * session queue holding it, and the retained store each own one reference.
 * The last gmq_msg_unref frees it. Topic is the internal topic (with the
 * company prefix, once tenancy exists), NUL-terminated.
 */
#ifndef GATEMQ_MSG_H
#define GATEMQ_MSG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct gmq_msg {
    unsigned refs;
    uint8_t qos;       /* QoS it was published with */
    bool retain;       /* RETAIN flag it was published with */
    uint16_t topic_len;
    uint32_t payload_len;
    uint64_t id;       /* broker-wide sequence number, 0 until assigned */
    uint32_t store_refs; /* delivery rows in the store that need it */
    char *topic;       /* points into the same allocation */
    uint8_t *payload;  /* points into the same allocation; NULL when empty */
} gmq_msg;

/* New message with refs = 1, topic and payload copied. NULL on no memory. */
gmq_msg *gmq_msg_new(const char *topic, size_t topic_len, const uint8_t *payload,
                     size_t payload_len, uint8_t qos, bool retain);
static inline gmq_msg *gmq_msg_ref(gmq_msg *m)
{
    m->refs++;
    return m;
}
void gmq_msg_unref(gmq_msg *m);
/* Like gmq_msg_new with topic = prefix followed by topic. */
gmq_msg *gmq_msg_new_prefixed(const char *prefix, size_t prefix_len, const char *topic,
                              size_t topic_len, const uint8_t *payload, size_t payload_len,
                              uint8_t qos, bool retain);

#endif
