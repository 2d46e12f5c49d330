#include "broker/msg.h"

#include <assert.h>
#include <string.h>

#include "broker/alloc.h"

gmq_msg *gmq_msg_new(const char *topic, size_t topic_len, const uint8_t *payload,
                     size_t payload_len, uint8_t qos, bool retain)
{
    return gmq_msg_new_prefixed("", 0, topic, topic_len, payload, payload_len, qos, retain);
}

gmq_msg *gmq_msg_new_prefixed(const char *prefix, size_t prefix_len, const char *topic,
                              size_t topic_len, const uint8_t *payload, size_t payload_len,
                              uint8_t qos, bool retain)
{
    /* Callers keep internal topics within the wire limit, so every
     * subscriber, platform-wide ones included, can be sent them. */
    assert(prefix_len + topic_len <= UINT16_MAX && payload_len <= UINT32_MAX && qos <= 2);
    topic_len += prefix_len;
    gmq_msg *m = gmq_malloc(sizeof(*m) + topic_len + 1 + payload_len);
    if (!m)
        return NULL;
    m->refs = 1;
    m->qos = qos;
    m->retain = retain;
    m->topic_len = (uint16_t)topic_len;
    m->payload_len = (uint32_t)payload_len;
    m->id = 0;
    m->store_refs = 0;
    m->topic = (char *)(m + 1);
    memcpy(m->topic, prefix, prefix_len);
    memcpy(m->topic + prefix_len, topic, topic_len - prefix_len);
    m->topic[topic_len] = '\0';
    m->payload = payload_len ? (uint8_t *)m->topic + topic_len + 1 : NULL;
    if (payload_len)
        memcpy(m->payload, payload, payload_len);
    return m;
}

void gmq_msg_unref(gmq_msg *m)
{
    if (!m)
        return;
    assert(m->refs > 0);
    if (--m->refs == 0)
        gmq_free(m);
}
