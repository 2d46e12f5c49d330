/*
 * frame.c - MQTT 3.1.1 fixed header: packet splitting, Remaining Length,
 * and names for types and errors.
 */
#include "mqtt.h"

#include <assert.h>

/* Fixed-header flags each type must carry [MQTT-2.2.2-1]; PUBLISH carries
 * DUP/QoS/RETAIN instead and is checked by its decoder. */
static int required_flags(unsigned type)
{
    switch (type) {
    case MQTT_PUBREL:
    case MQTT_SUBSCRIBE:
    case MQTT_UNSUBSCRIBE:
        return 0x2; /* [MQTT-3.6.1-1], [MQTT-3.8.1-1], [MQTT-3.10.1-1] */
    case MQTT_PUBLISH:
        return -1;
    default:
        return 0;
    }
}

/* Body size a type must have, or -1 when it varies. */
static long fixed_body_len(unsigned type)
{
    switch (type) {
    case MQTT_CONNACK:     /* 3.2.1 */
    case MQTT_PUBACK:      /* 3.4.1 */
    case MQTT_PUBREC:      /* 3.5.1 */
    case MQTT_PUBREL:      /* 3.6.1 */
    case MQTT_PUBCOMP:     /* 3.7.1 */
    case MQTT_UNSUBACK:    /* 3.11.1 */
        return 2;
    case MQTT_PINGREQ:     /* 3.12.1 */
    case MQTT_PINGRESP:    /* 3.13.1 */
    case MQTT_DISCONNECT:  /* 3.14.1 */
        return 0;
    default:
        return -1;
    }
}

ptrdiff_t mqtt_frame_split(const uint8_t *buf, size_t len, size_t max_size,
                           mqtt_frame *out)
{
    assert(buf != NULL || len == 0);
    assert(out != NULL);
    if (len == 0)
        return 0;

    /* Everything that can be judged from the first byte is judged before
     * waiting for more, so garbage is refused on its first byte. */
    unsigned type = buf[0] >> 4;
    unsigned flags = buf[0] & 0x0f;
    if (type == 0 || type == 15)
        return MQTT_ERR_TYPE;
    int want = required_flags(type);
    if (want >= 0 && flags != (unsigned)want)
        return MQTT_ERR_FLAGS; /* [MQTT-2.2.2-2] */

    /* Remaining Length (2.2.3): at most four bytes of seven bits. A
     * continuation bit on the fourth byte can only announce a fifth, so it
     * is an error right away rather than a wait for a byte that cannot help.
     * Non-minimal encodings (e.g. 0x80 0x00) are accepted: 3.1.1, unlike
     * MQTT 5, has no statement forbidding them. */
    size_t value = 0;
    size_t i = 1;
    for (;;) {
        if (i >= len)
            return 0;
        uint8_t b = buf[i];
        value |= (size_t)(b & 0x7f) << (7 * (i - 1));
        i++;
        if (!(b & 0x80))
            break;
        if (i == MQTT_MAX_HEADER)
            return MQTT_ERR_REMLEN;
    }
    size_t header_len = i;

    /* Checked before the body arrives so a bogus length costs nothing. */
    if (value > max_size || header_len > max_size - value)
        return MQTT_ERR_TOO_LARGE;
    long body = fixed_body_len(type);
    if (body >= 0 && value != (size_t)body)
        return MQTT_ERR_MALFORMED;

    if (len - header_len < value)
        return 0;

    out->type = (uint8_t)type;
    out->flags = (uint8_t)flags;
    out->header_len = header_len;
    out->body = buf + header_len;
    out->body_len = value;
    return (ptrdiff_t)(header_len + value);
}

size_t mqtt_remaining_length_size(size_t n)
{
    assert(n <= MQTT_MAX_REMAINING_LENGTH);
    if (n < 128u)
        return 1;
    if (n < 16384u)
        return 2;
    if (n < 2097152u)
        return 3;
    return 4;
}

const char *mqtt_strerror(int err)
{
    switch (err) {
    case MQTT_OK: return "success";
    case MQTT_ERR_MALFORMED: return "malformed packet";
    case MQTT_ERR_REMLEN: return "remaining length longer than 4 bytes";
    case MQTT_ERR_TOO_LARGE: return "packet too large";
    case MQTT_ERR_FLAGS: return "reserved flag bits set";
    case MQTT_ERR_TYPE: return "reserved packet type";
    case MQTT_ERR_UTF8: return "invalid UTF-8 string";
    case MQTT_ERR_TOPIC: return "invalid topic";
    case MQTT_ERR_QOS: return "invalid QoS";
    case MQTT_ERR_PACKET_ID: return "packet identifier 0";
    case MQTT_ERR_PROTOCOL_NAME: return "protocol name is not MQTT";
    case MQTT_ERR_PROTOCOL_LEVEL: return "unsupported protocol level";
    case MQTT_ERR_EMPTY: return "no topic filter";
    default: return "unknown error";
    }
}

const char *mqtt_type_name(unsigned type)
{
    static const char *const names[16] = {
        "RESERVED", "CONNECT", "CONNACK", "PUBLISH", "PUBACK", "PUBREC",
        "PUBREL", "PUBCOMP", "SUBSCRIBE", "SUBACK", "UNSUBSCRIBE", "UNSUBACK",
        "PINGREQ", "PINGRESP", "DISCONNECT", "RESERVED",
    };
    return type < 16 ? names[type] : "UNKNOWN";
}
