/*
 * mqtt.h - a pure MQTT 3.1.1 codec.
 *
 * Everything here is a function over byte spans: no I/O, no allocation, no
 * globals.  Decoded structures point into the caller's buffer and stay valid
 * exactly as long as that buffer does.  Decoders validate wire input and
 * return a negative mqtt_err on anything the spec forbids; encoders write our
 * own data and assert on programming errors.
 *
 * Two stages, as the spec's framing suggests:
 *   1. mqtt_frame_split() finds one complete packet in a byte stream and
 *      checks the fixed header (type, reserved flags, Remaining Length).
 *   2. mqtt_decode_<type>() parses the variable header and payload of a frame.
 */
#ifndef GATEMQ_MQTT_H
#define GATEMQ_MQTT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Control packet types [MQTT-2.2.1]. 0 and 15 are reserved. */
enum mqtt_type {
    MQTT_CONNECT = 1,
    MQTT_CONNACK = 2,
    MQTT_PUBLISH = 3,
    MQTT_PUBACK = 4,
    MQTT_PUBREC = 5,
    MQTT_PUBREL = 6,
    MQTT_PUBCOMP = 7,
    MQTT_SUBSCRIBE = 8,
    MQTT_SUBACK = 9,
    MQTT_UNSUBSCRIBE = 10,
    MQTT_UNSUBACK = 11,
    MQTT_PINGREQ = 12,
    MQTT_PINGRESP = 13,
    MQTT_DISCONNECT = 14,
};

/* Errors: 0 is success; every error is negative so that mqtt_frame_split()
 * can return "bytes consumed" (> 0), "need more" (0) or an error (< 0). */
typedef enum mqtt_err {
    MQTT_OK = 0,
    MQTT_ERR_MALFORMED = -1,      /* truncated field, bad length, trailing bytes */
    MQTT_ERR_REMLEN = -2,         /* Remaining Length longer than 4 bytes */
    MQTT_ERR_TOO_LARGE = -3,      /* packet larger than the caller's limit */
    MQTT_ERR_FLAGS = -4,          /* reserved fixed-header or connect flag bits */
    MQTT_ERR_TYPE = -5,           /* reserved packet type 0 or 15 */
    MQTT_ERR_UTF8 = -6,           /* ill-formed UTF-8 or U+0000 [MQTT-1.5.3-1,2] */
    MQTT_ERR_TOPIC = -7,          /* invalid topic name or topic filter */
    MQTT_ERR_QOS = -8,            /* QoS 3 */
    MQTT_ERR_PACKET_ID = -9,      /* packet identifier 0 where one is required */
    MQTT_ERR_PROTOCOL_NAME = -10, /* CONNECT protocol name is not "MQTT" */
    MQTT_ERR_PROTOCOL_LEVEL = -11,/* CONNECT protocol level is not 4 (CONNACK 1) */
    MQTT_ERR_EMPTY = -12,         /* SUBSCRIBE/UNSUBSCRIBE without any filter */
} mqtt_err;

/* Human-readable name of an error, for logs. Never NULL. */
const char *mqtt_strerror(int err);
/* Name of a packet type ("CONNECT", ...), "RESERVED" for 0 and 15. */
const char *mqtt_type_name(unsigned type);

/* CONNACK return codes [MQTT-3.2.2.3]. */
enum mqtt_connack_rc {
    MQTT_CONNACK_ACCEPTED = 0,
    MQTT_CONNACK_BAD_PROTOCOL = 1,
    MQTT_CONNACK_ID_REJECTED = 2,
    MQTT_CONNACK_UNAVAILABLE = 3,
    MQTT_CONNACK_BAD_CREDENTIALS = 4,
    MQTT_CONNACK_NOT_AUTHORIZED = 5,
};

#define MQTT_SUBACK_FAILURE 0x80
#define MQTT_MAX_REMAINING_LENGTH 268435455u /* 4 bytes of 7 bits */
#define MQTT_MAX_HEADER 5                    /* 1 type byte + 4 length bytes */

/* A view of bytes owned by someone else; strings are not NUL-terminated. */
typedef struct mqtt_span {
    const uint8_t *ptr;
    size_t len;
} mqtt_span;

/* One complete packet located inside the caller's buffer. */
typedef struct mqtt_frame {
    uint8_t type;        /* enum mqtt_type */
    uint8_t flags;       /* low nibble of the first byte */
    size_t header_len;   /* fixed header: 2..5 bytes */
    const uint8_t *body; /* variable header + payload, body_len bytes */
    size_t body_len;     /* the Remaining Length */
} mqtt_frame;

/*
 * Find one packet at the start of buf[0..len).
 * Returns the whole packet's size (> 0) and fills *out when it is complete;
 * 0 when more bytes are needed (the header may be incomplete, or the body);
 * a negative mqtt_err when the bytes can never form a valid packet.
 * max_size bounds header + body; it is checked as soon as the Remaining Length
 * is known, so a huge declared length is refused before its body arrives.
 * Checks: reserved types, the fixed-header flag bits of every type except
 * PUBLISH [MQTT-2.2.2-1,2], a 5th length byte [MQTT-2.2.3], and that
 * PINGREQ/PINGRESP/DISCONNECT have no body and ack packets exactly 2 bytes.
 */
ptrdiff_t mqtt_frame_split(const uint8_t *buf, size_t len, size_t max_size,
                           mqtt_frame *out);

/* Number of bytes of a Remaining Length field for value n (1..4). */
size_t mqtt_remaining_length_size(size_t n);

/* ---- decoded packets ---------------------------------------------------- */

typedef struct mqtt_connect {
    mqtt_span protocol_name;
    uint8_t protocol_level;
    bool clean_session;
    bool will_flag;
    uint8_t will_qos;
    bool will_retain;
    bool has_username;
    bool has_password;
    uint16_t keep_alive;
    mqtt_span client_id;    /* may be empty */
    mqtt_span will_topic;   /* valid only with will_flag */
    mqtt_span will_payload; /* valid only with will_flag */
    mqtt_span username;     /* valid only with has_username */
    mqtt_span password;     /* valid only with has_password; binary */
} mqtt_connect;

typedef struct mqtt_connack {
    bool session_present;
    uint8_t return_code;
} mqtt_connack;

typedef struct mqtt_publish {
    mqtt_span topic;
    mqtt_span payload;
    uint8_t qos;
    bool dup;
    bool retain;
    uint16_t packet_id; /* 0 for QoS 0 */
} mqtt_publish;

/* SUBSCRIBE / UNSUBSCRIBE payloads are validated whole by the decoder and
 * then walked with mqtt_subscribe_next() / mqtt_unsubscribe_next(). */
typedef struct mqtt_subscribe {
    uint16_t packet_id;
    mqtt_span entries; /* the raw, already validated payload */
    size_t count;      /* number of filters, >= 1 */
} mqtt_subscribe;

typedef struct mqtt_sub_entry {
    mqtt_span filter;
    uint8_t qos; /* requested QoS; always 0 for UNSUBSCRIBE entries */
} mqtt_sub_entry;

typedef struct mqtt_suback {
    uint16_t packet_id;
    mqtt_span codes; /* one return code byte per filter */
} mqtt_suback;

/*
 * Decoders. Each takes a frame of the matching type from mqtt_frame_split()
 * and returns MQTT_OK or a negative mqtt_err. On error *out is unspecified.
 *
 * mqtt_decode_connect: protocol name "MQTT" (else MQTT_ERR_PROTOCOL_NAME),
 *   level 4 (else MQTT_ERR_PROTOCOL_LEVEL, checked right after the name so the
 *   caller can answer CONNACK 1 [MQTT-3.1.2-2]), reserved flag 0 [MQTT-3.1.2-3],
 *   will QoS/retain 0 without will [MQTT-3.1.2-11,13], will QoS != 3, password
 *   only with username [MQTT-3.1.2-22], UTF-8 strings valid, will topic a valid
 *   topic name, no trailing bytes. Client id rules are the caller's (CONNACK 2).
 * mqtt_decode_publish: QoS != 3, DUP 0 for QoS 0 [MQTT-3.3.1-2], topic a valid
 *   name without wildcards [MQTT-3.3.2-2], packet id != 0 for QoS > 0.
 * mqtt_decode_subscribe: flags 0x2, packet id != 0, >= 1 entry [MQTT-3.8.3-3],
 *   valid filters, requested QoS 0..2 and reserved bits 0 [MQTT-3-8.3-4].
 * mqtt_decode_unsubscribe: flags 0x2, packet id != 0, >= 1 valid filter.
 * mqtt_decode_packet_id: PUBACK, PUBREC, PUBREL, PUBCOMP, UNSUBACK: body of
 *   exactly 2 bytes and id != 0.
 */
int mqtt_decode_connect(const mqtt_frame *f, mqtt_connect *out);
int mqtt_decode_connack(const mqtt_frame *f, mqtt_connack *out);
int mqtt_decode_publish(const mqtt_frame *f, mqtt_publish *out);
int mqtt_decode_subscribe(const mqtt_frame *f, mqtt_subscribe *out);
int mqtt_decode_suback(const mqtt_frame *f, mqtt_suback *out);
int mqtt_decode_unsubscribe(const mqtt_frame *f, mqtt_subscribe *out);
int mqtt_decode_packet_id(const mqtt_frame *f, uint16_t *packet_id);

/* Walk the entries of a decoded SUBSCRIBE / UNSUBSCRIBE. *pos starts at 0.
 * Returns true and fills *e while entries remain. */
bool mqtt_subscribe_next(const mqtt_subscribe *s, size_t *pos, mqtt_sub_entry *e);
bool mqtt_unsubscribe_next(const mqtt_subscribe *s, size_t *pos, mqtt_sub_entry *e);

/*
 * Encoders. Each writes one whole packet into buf[0..cap) and returns its size.
 * When cap is too small nothing is written and the needed size is returned, so
 * a call with cap 0 measures. Inputs are our own data: invalid ones assert.
 */
size_t mqtt_encode_connect(uint8_t *buf, size_t cap, const mqtt_connect *c);
size_t mqtt_encode_connack(uint8_t *buf, size_t cap, bool session_present,
                           uint8_t return_code);
size_t mqtt_encode_publish(uint8_t *buf, size_t cap, const mqtt_publish *p);
/* PUBLISH fixed header + topic + packet id, without the payload: lets a
 * caller send one shared payload after a per-subscriber header. */
size_t mqtt_encode_publish_header(uint8_t *buf, size_t cap, const mqtt_publish *p);
/* PUBACK, PUBREC, PUBREL (flags 0x2 set automatically), PUBCOMP, UNSUBACK. */
size_t mqtt_encode_packet_id(uint8_t *buf, size_t cap, enum mqtt_type type,
                             uint16_t packet_id);
/* SUBSCRIBE from n filters; qos[i] is the requested QoS of filter i. */
size_t mqtt_encode_subscribe(uint8_t *buf, size_t cap, uint16_t packet_id,
                             const mqtt_span *filters, const uint8_t *qos, size_t n);
size_t mqtt_encode_unsubscribe(uint8_t *buf, size_t cap, uint16_t packet_id,
                               const mqtt_span *filters, size_t n);
size_t mqtt_encode_suback(uint8_t *buf, size_t cap, uint16_t packet_id,
                          const uint8_t *codes, size_t n);
/* PINGREQ, PINGRESP, DISCONNECT: two bytes. */
size_t mqtt_encode_empty(uint8_t *buf, size_t cap, enum mqtt_type type);

/* ---- strings and topics ------------------------------------------------- */

/* Well-formed UTF-8 [MQTT-1.5.3-1]: no overlongs, no surrogates, nothing past
 * U+10FFFF, and no U+0000 [MQTT-1.5.3-2]. */
bool mqtt_utf8_valid(const uint8_t *s, size_t len);
/* Topic name: 1..65535 bytes, valid UTF-8, no '+' or '#' [MQTT-4.7.3-1, 4.7.1-1]. */
bool mqtt_topic_name_valid(const uint8_t *s, size_t len);
/* Topic filter: 1..65535 bytes, valid UTF-8, '#' alone in the last level,
 * '+' alone in its level [MQTT-4.7.1-2,3]. */
bool mqtt_topic_filter_valid(const uint8_t *s, size_t len);
/* Does a valid filter match a valid topic name? Applies the '$' rule: a
 * filter starting with '#' or '+' does not match a topic starting with '$'
 * [MQTT-4.7.2-1]; "a/#" matches "a" [MQTT-4.7.1-2]. */
bool mqtt_topic_match(const uint8_t *filter, size_t flen, const uint8_t *topic,
                      size_t tlen);

#endif
