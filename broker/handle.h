/*
 * handle.h - what the broker does with each packet a client sends.
 */
#ifndef GATEMQ_HANDLE_H
#define GATEMQ_HANDLE_H

#include "broker/broker.h"

/* Act on one complete packet from c. May queue output on c or on other
 * connections, and may mark c (or, on takeover, another conn) closing. */
void handle_packet(conn *c, const mqtt_frame *f);

/* conn.c: switch c's timer from connect timeout to keep alive. */
void conn_start_keepalive(conn *c, uint16_t keepalive);

#endif
