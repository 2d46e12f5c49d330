/*
 * tls.h - TLS server material and certificate identity (mbedtls).
 *
 * This module builds what a TLS listener needs - an mbedtls server
 * configuration with the server certificate and key, the client CA chain,
 * the CRLs, the cipher suites and curves - and reads a gateway's identity
 * from its verified certificate. It does no I/O on sockets: connections
 * (broker/tls_transport.c) drive mbedtls over their own sockets.
 *
 * Ownership: a tls_server is reference counted. The listener holds one
 * reference and every TLS connection holds one while its mbedtls context
 * points at the configuration, so a reload can swap in new material while
 * old connections finish with the old. References are taken and dropped on
 * the event loop thread only. tls_rng and tls_tickets live as long as the
 * broker and outlive every tls_server built with them.
 */
#ifndef GATEMQ_TLS_H
#define GATEMQ_TLS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <mbedtls/ssl.h>
#include <mbedtls/x509_crt.h>

/* Longest device id or company name taken from a certificate. */
#define TLS_NAME_MAX 128

typedef struct tls_rng tls_rng;
typedef struct tls_tickets tls_tickets;
typedef struct tls_server tls_server;

/* Where a device's company comes from (the device id is always the CN). */
typedef enum tls_company_source {
    TLS_COMPANY_FROM_O = 0,
    TLS_COMPANY_FROM_OU,
    TLS_COMPANY_FROM_SAN_URI, /* a SAN URI starting with san_uri_prefix */
} tls_company_source;

/* A CA that issues the certificates of one company only. */
typedef struct tls_company_ca {
    const char *company;
    const char *cafile;
} tls_company_ca;

typedef struct tls_settings {
    const char *certfile; /* server chain, PEM */
    const char *keyfile;  /* server key (EC or RSA), PEM */
    const char *cafile;   /* CA(s) for client certificates; may be NULL with company CAs */
    const char *crlfile;  /* optional, PEM; may hold several CRLs */
    bool require_certificate;
    const tls_company_ca *company_cas;
    size_t ncompany_cas;
    tls_company_source company_from;
    const char *san_uri_prefix;
} tls_settings;

/* A thread-safe random generator (CTR-DRBG seeded from the OS). */
tls_rng *tls_rng_new(void);
void tls_rng_free(tls_rng *r);

/* Session ticket keys, shared by every configuration of one listener so a
 * reload does not invalidate the tickets clients hold. */
tls_tickets *tls_tickets_new(tls_rng *rng);
void tls_tickets_free(tls_tickets *t);

/* Load every file named in s and build a configuration. Returns 0, or -1
 * with err naming the file and the reason; nothing is allocated on error. */
int tls_server_new(const tls_settings *s, tls_rng *rng, tls_tickets *tickets,
                   tls_server **out, char *err, size_t errlen);
tls_server *tls_server_ref(tls_server *t);
void tls_server_unref(tls_server *t);
const mbedtls_ssl_config *tls_server_config(const tls_server *t);
bool tls_server_requires_certificate(const tls_server *t);

/* A device's identity, read from its verified certificate. */
typedef struct tls_identity {
    char device[TLS_NAME_MAX + 1];
    char company[TLS_NAME_MAX + 1];
} tls_identity;

/* Fill *out from a peer certificate that the handshake verified. With
 * company CAs, the CA that issued the certificate names the company, even
 * if a CRL lists the certificate (tls_server_is_revoked answers that).
 * Returns 0, or -1 with err saying why (missing CN or company field,
 * characters that cannot be a topic level, no company CA issued it). */
int tls_server_identity(const tls_server *t, const mbedtls_x509_crt *peer, tls_identity *out,
                        char *err, size_t errlen);

/* Is the certificate listed in this configuration's CRLs? */
bool tls_server_is_revoked(const tls_server *t, const mbedtls_x509_crt *peer);

/* Human-readable reasons for certificate verification flags. */
void tls_verify_reason(uint32_t flags, char *buf, size_t len);
/* Human-readable text for an mbedtls error code. */
void tls_error_text(int err, char *buf, size_t len);

#endif
