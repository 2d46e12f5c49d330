#include "auth/tls.h"

#include <stdio.h>
#include <string.h>

#include <mbedtls/ctr_drbg.h>
#include <mbedtls/ecdsa.h>
#include <mbedtls/entropy.h>
#include <mbedtls/error.h>
#include <mbedtls/oid.h>
#include <mbedtls/pk.h>
#include <mbedtls/ssl_ticket.h>
#include <mbedtls/x509_crl.h>

#include "broker/alloc.h"
#include "mqtt.h"

struct tls_rng {
    mbedtls_entropy_context entropy;
    mbedtls_ctr_drbg_context drbg; /* locks itself: MBEDTLS_THREADING_C */
};

struct tls_tickets {
    mbedtls_ssl_ticket_context ctx;
};

typedef struct company_ca {
    char *company;
    mbedtls_x509_crt ca;
} company_ca;

struct tls_server {
    unsigned refs;
    mbedtls_ssl_config conf;
    mbedtls_x509_crt own_cert;
    mbedtls_pk_context own_key;
    mbedtls_x509_crt ca_chain; /* cafile plus every company CA */
    mbedtls_x509_crl crl;
    bool have_crl;
    company_ca *company_cas;
    size_t ncompany_cas;
    tls_company_source company_from;
    char *san_uri_prefix;
    bool require_certificate;
};

/* TLS 1.2 with forward secrecy and AEAD only. */
static const int ciphersuites[] = {
    MBEDTLS_TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
    MBEDTLS_TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
    MBEDTLS_TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
    MBEDTLS_TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
    MBEDTLS_TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
    MBEDTLS_TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
    0,
};

/* Explicit curves: the library's default order starts with P-521, which
 * halves the full-handshake rate for no gain here. The server picks the
 * first curve of this list that the client offers, whatever the client's
 * order. X25519 first: its key pair plus shared secret cost this server
 * about 1,130 us against 1,370 for P-256, whose key generation cannot use
 * a kept generator table (mbedtls loads the curve afresh per handshake and
 * Debian's build has no static tables); putting P-256 first measured
 * 340-440 us more CPU per full handshake (docs/performance.md). */
static const mbedtls_ecp_group_id curves[] = {
    MBEDTLS_ECP_DP_CURVE25519,
    MBEDTLS_ECP_DP_SECP256R1,
    MBEDTLS_ECP_DP_SECP384R1,
    MBEDTLS_ECP_DP_NONE,
};

void tls_error_text(int err, char *buf, size_t len)
{
    mbedtls_strerror(err, buf, len);
}

void tls_verify_reason(uint32_t flags, char *buf, size_t len)
{
    int n = mbedtls_x509_crt_verify_info(buf, len, "", flags);
    if (n <= 0) {
        snprintf(buf, len, "verification flags 0x%x", (unsigned)flags);
        return;
    }
    /* One line: the library separates reasons with newlines. */
    for (char *p = buf; *p; p++)
        if (*p == '\n')
            *p = (p[1] ? ';' : '\0');
}

/* ---- random generator and tickets ---------------------------------------- */

tls_rng *tls_rng_new(void)
{
    tls_rng *r = gmq_calloc(1, sizeof(*r));
    if (!r)
        return NULL;
    mbedtls_entropy_init(&r->entropy);
    mbedtls_ctr_drbg_init(&r->drbg);
    static const unsigned char pers[] = "gatemq";
    if (mbedtls_ctr_drbg_seed(&r->drbg, mbedtls_entropy_func, &r->entropy, pers,
                              sizeof(pers) - 1) != 0) {
        tls_rng_free(r);
        return NULL;
    }
    return r;
}

void tls_rng_free(tls_rng *r)
{
    if (!r)
        return;
    mbedtls_ctr_drbg_free(&r->drbg);
    mbedtls_entropy_free(&r->entropy);
    gmq_free(r);
}

tls_tickets *tls_tickets_new(tls_rng *rng)
{
    tls_tickets *t = gmq_calloc(1, sizeof(*t));
    if (!t)
        return NULL;
    mbedtls_ssl_ticket_init(&t->ctx);
    /* Keys rotate every lifetime; a ticket stays valid for one day. */
    if (mbedtls_ssl_ticket_setup(&t->ctx, mbedtls_ctr_drbg_random, &rng->drbg,
                                 MBEDTLS_CIPHER_AES_256_GCM, 86400) != 0) {
        tls_tickets_free(t);
        return NULL;
    }
    return t;
}

void tls_tickets_free(tls_tickets *t)
{
    if (!t)
        return;
    mbedtls_ssl_ticket_free(&t->ctx);
    gmq_free(t);
}

/* ---- server configuration ------------------------------------------------ */

/*
 * Keep an EC key's generator table between handshakes.
 *
 * mbedtls 2.28 speeds up multiples of a curve's generator with a
 * precomputed table that it keeps in the key's group after first use
 * (MBEDTLS_ECP_FIXED_POINT_OPTIM; Debian's build has no static tables). But
 * parsing gives EC keys the type ECKEY, and the library signs and verifies
 * with an ECKEY through a temporary ECDSA copy of it, which starts without
 * the table: every ServerKeyExchange signature and every certificate or CRL
 * signature checked against a CA rebuilt it. Measured on P-256: a
 * signature 750 us instead of 325, a CA's signature check 1,420 us instead
 * of 1,050 (docs/performance.md). An ECDSA-typed key is used in place and
 * keeps its table.
 *
 * The library stores the table in the group on first use without a lock,
 * and full handshakes run on several threads, so the table is built here,
 * while no other thread can see the key; afterwards signing and verifying
 * only read the group. Keys of other types (RSA) are left as they are.
 */
static int ec_key_in_place(mbedtls_pk_context *pk, tls_rng *rng)
{
    if (mbedtls_pk_get_type(pk) != MBEDTLS_PK_ECKEY)
        return 0;
    mbedtls_pk_context ecdsa;
    mbedtls_pk_init(&ecdsa);
    int rc = mbedtls_pk_setup(&ecdsa, mbedtls_pk_info_from_type(MBEDTLS_PK_ECDSA));
    if (rc == 0)
        rc = mbedtls_ecdsa_from_keypair(mbedtls_pk_ec(ecdsa), mbedtls_pk_ec(*pk));
    mbedtls_ecp_group *grp = rc == 0 ? &mbedtls_pk_ec(ecdsa)->grp : NULL;
    if (grp && mbedtls_ecp_get_type(grp) == MBEDTLS_ECP_TYPE_SHORT_WEIERSTRASS) {
        /* Any multiple of the generator builds the table. */
        mbedtls_mpi two;
        mbedtls_ecp_point r;
        mbedtls_mpi_init(&two);
        mbedtls_ecp_point_init(&r);
        rc = mbedtls_mpi_lset(&two, 2);
        if (rc == 0)
            rc = mbedtls_ecp_mul(grp, &r, &two, &grp->G, mbedtls_ctr_drbg_random, &rng->drbg);
        mbedtls_ecp_point_free(&r);
        mbedtls_mpi_free(&two);
    }
    if (rc != 0) {
        mbedtls_pk_free(&ecdsa);
        return rc;
    }
    mbedtls_pk_free(pk);
    *pk = ecdsa;
    return 0;
}

/* Every certificate of a list: the CAs that client certificates and CRLs
 * are checked against. */
static int ec_keys_in_place(mbedtls_x509_crt *chain, tls_rng *rng)
{
    for (mbedtls_x509_crt *c = chain; c && c->raw.p; c = c->next) {
        int rc = ec_key_in_place(&c->pk, rng);
        if (rc != 0)
            return rc;
    }
    return 0;
}

static void server_free(tls_server *t)
{
    mbedtls_ssl_config_free(&t->conf);
    mbedtls_x509_crt_free(&t->own_cert);
    mbedtls_pk_free(&t->own_key);
    mbedtls_x509_crt_free(&t->ca_chain);
    mbedtls_x509_crl_free(&t->crl);
    for (size_t i = 0; i < t->ncompany_cas; i++) {
        gmq_free(t->company_cas[i].company);
        mbedtls_x509_crt_free(&t->company_cas[i].ca);
    }
    gmq_free(t->company_cas);
    gmq_free(t->san_uri_prefix);
    gmq_free(t);
}

static int load_error(char *err, size_t errlen, const char *what, const char *path, int rc)
{
    char text[160];
    if (rc > 0)
        snprintf(text, sizeof(text), "%d certificate(s) could not be parsed", rc);
    else
        tls_error_text(rc, text, sizeof(text));
    snprintf(err, errlen, "%s %s: %s", what, path, text);
    return -1;
}

int tls_server_new(const tls_settings *s, tls_rng *rng, tls_tickets *tickets,
                   tls_server **out, char *err, size_t errlen)
{
    int rc;
    tls_server *t = gmq_calloc(1, sizeof(*t));
    if (!t) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    t->refs = 1;
    mbedtls_ssl_config_init(&t->conf);
    mbedtls_x509_crt_init(&t->own_cert);
    mbedtls_pk_init(&t->own_key);
    mbedtls_x509_crt_init(&t->ca_chain);
    mbedtls_x509_crl_init(&t->crl);
    t->company_from = s->company_from;
    t->require_certificate = s->require_certificate;

    if (!s->certfile || !s->keyfile) {
        snprintf(err, errlen, "a TLS listener needs certfile and keyfile");
        goto fail;
    }
    if ((rc = mbedtls_x509_crt_parse_file(&t->own_cert, s->certfile)) != 0) {
        load_error(err, errlen, "certfile", s->certfile, rc);
        goto fail;
    }
    if ((rc = mbedtls_pk_parse_keyfile(&t->own_key, s->keyfile, NULL)) != 0) {
        load_error(err, errlen, "keyfile", s->keyfile, rc);
        goto fail;
    }
    if (mbedtls_pk_check_pair(&t->own_cert.pk, &t->own_key) != 0) {
        snprintf(err, errlen, "keyfile %s does not match certfile %s", s->keyfile, s->certfile);
        goto fail;
    }
    if (s->cafile && (rc = mbedtls_x509_crt_parse_file(&t->ca_chain, s->cafile)) != 0) {
        load_error(err, errlen, "cafile", s->cafile, rc);
        goto fail;
    }
    if (s->ncompany_cas) {
        t->company_cas = gmq_calloc(s->ncompany_cas, sizeof(*t->company_cas));
        if (!t->company_cas) {
            snprintf(err, errlen, "out of memory");
            goto fail;
        }
        for (size_t i = 0; i < s->ncompany_cas; i++) {
            company_ca *c = &t->company_cas[i];
            mbedtls_x509_crt_init(&c->ca);
            t->ncompany_cas++;
            if (!(c->company = gmq_strdup(s->company_cas[i].company))) {
                snprintf(err, errlen, "out of memory");
                goto fail;
            }
            const char *path = s->company_cas[i].cafile;
            if ((rc = mbedtls_x509_crt_parse_file(&c->ca, path)) != 0 ||
                (rc = mbedtls_x509_crt_parse_file(&t->ca_chain, path)) != 0) {
                load_error(err, errlen, "company_ca", path, rc);
                goto fail;
            }
        }
    }
    if (s->require_certificate && !s->cafile && !s->ncompany_cas) {
        snprintf(err, errlen, "require_certificate needs cafile or company_ca");
        goto fail;
    }
    if (s->crlfile) {
        if ((rc = mbedtls_x509_crl_parse_file(&t->crl, s->crlfile)) != 0) {
            load_error(err, errlen, "crlfile", s->crlfile, rc);
            goto fail;
        }
        t->have_crl = true;
    }
    if (s->san_uri_prefix && !(t->san_uri_prefix = gmq_strdup(s->san_uri_prefix))) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    if ((rc = ec_key_in_place(&t->own_key, rng)) != 0) {
        load_error(err, errlen, "keyfile", s->keyfile, rc);
        goto fail;
    }
    if ((rc = ec_keys_in_place(&t->ca_chain, rng)) != 0) {
        load_error(err, errlen, "TLS", "CA keys", rc);
        goto fail;
    }
    for (size_t i = 0; i < t->ncompany_cas; i++) {
        if ((rc = ec_keys_in_place(&t->company_cas[i].ca, rng)) != 0) {
            load_error(err, errlen, "company_ca", s->company_cas[i].cafile, rc);
            goto fail;
        }
    }

    mbedtls_ssl_config *conf = &t->conf;
    if ((rc = mbedtls_ssl_config_defaults(conf, MBEDTLS_SSL_IS_SERVER,
                                          MBEDTLS_SSL_TRANSPORT_STREAM,
                                          MBEDTLS_SSL_PRESET_DEFAULT)) != 0) {
        load_error(err, errlen, "TLS", "defaults", rc);
        goto fail;
    }
    mbedtls_ssl_conf_rng(conf, mbedtls_ctr_drbg_random, &rng->drbg);
    mbedtls_ssl_conf_min_version(conf, MBEDTLS_SSL_MAJOR_VERSION_3, MBEDTLS_SSL_MINOR_VERSION_3);
    mbedtls_ssl_conf_max_version(conf, MBEDTLS_SSL_MAJOR_VERSION_3, MBEDTLS_SSL_MINOR_VERSION_3);
    mbedtls_ssl_conf_ciphersuites(conf, ciphersuites);
    mbedtls_ssl_conf_curves(conf, curves);
    mbedtls_ssl_conf_renegotiation(conf, MBEDTLS_SSL_RENEGOTIATION_DISABLED);
    if ((rc = mbedtls_ssl_conf_own_cert(conf, &t->own_cert, &t->own_key)) != 0) {
        load_error(err, errlen, "certfile", s->certfile, rc);
        goto fail;
    }
    if (s->cafile || s->ncompany_cas) {
        mbedtls_ssl_conf_ca_chain(conf, &t->ca_chain, t->have_crl ? &t->crl : NULL);
        mbedtls_ssl_conf_authmode(conf, s->require_certificate ? MBEDTLS_SSL_VERIFY_REQUIRED
                                                               : MBEDTLS_SSL_VERIFY_OPTIONAL);
    } else {
        mbedtls_ssl_conf_authmode(conf, MBEDTLS_SSL_VERIFY_NONE);
    }
    if (tickets)
        mbedtls_ssl_conf_session_tickets_cb(conf, mbedtls_ssl_ticket_write,
                                            mbedtls_ssl_ticket_parse, &tickets->ctx);
    *out = t;
    return 0;
fail:
    server_free(t);
    return -1;
}

tls_server *tls_server_ref(tls_server *t)
{
    t->refs++;
    return t;
}

void tls_server_unref(tls_server *t)
{
    if (t && --t->refs == 0)
        server_free(t);
}

const mbedtls_ssl_config *tls_server_config(const tls_server *t)
{
    return &t->conf;
}

bool tls_server_requires_certificate(const tls_server *t)
{
    return t->require_certificate;
}

/* ---- identity ------------------------------------------------------------ */

/* A name becomes one topic level: it must be valid UTF-8 and hold no level
 * separator, wildcard or control character. */
static bool usable_name(const unsigned char *p, size_t len)
{
    if (len == 0 || len > TLS_NAME_MAX || !mqtt_utf8_valid(p, len))
        return false;
    for (size_t i = 0; i < len; i++)
        if (p[i] == '/' || p[i] == '+' || p[i] == '#' || p[i] < 0x20 || p[i] == 0x7f)
            return false;
    return p[0] != '$';
}

static const mbedtls_x509_buf *subject_field(const mbedtls_x509_name *n, const char *oid,
                                             size_t oidlen)
{
    for (; n; n = n->next)
        if (n->oid.len == oidlen && memcmp(n->oid.p, oid, oidlen) == 0)
            return &n->val;
    return NULL;
}

static int copy_name(char *dst, const unsigned char *p, size_t len, const char *what, char *err,
                     size_t errlen)
{
    if (!usable_name(p, len)) {
        snprintf(err, errlen, "certificate %s is empty, too long, or not usable as a topic level",
                 what);
        return -1;
    }
    memcpy(dst, p, len);
    dst[len] = '\0';
    return 0;
}

static int company_from_san(const tls_server *t, const mbedtls_x509_crt *peer, char *dst,
                            char *err, size_t errlen)
{
    size_t plen = t->san_uri_prefix ? strlen(t->san_uri_prefix) : 0;
    for (const mbedtls_x509_sequence *s = &peer->subject_alt_names; s && s->buf.p; s = s->next) {
        if ((s->buf.tag & MBEDTLS_ASN1_TAG_VALUE_MASK) != MBEDTLS_X509_SAN_UNIFORM_RESOURCE_IDENTIFIER)
            continue;
        if (s->buf.len > plen && memcmp(s->buf.p, t->san_uri_prefix, plen) == 0)
            return copy_name(dst, s->buf.p + plen, s->buf.len - plen, "SAN URI company", err,
                             errlen);
    }
    snprintf(err, errlen, "certificate has no SAN URI starting with '%s'",
             t->san_uri_prefix ? t->san_uri_prefix : "");
    return -1;
}

int tls_server_identity(const tls_server *t, const mbedtls_x509_crt *peer, tls_identity *out,
                        char *err, size_t errlen)
{
    const mbedtls_x509_buf *cn = subject_field(&peer->subject, MBEDTLS_OID_AT_CN,
                                               MBEDTLS_OID_SIZE(MBEDTLS_OID_AT_CN));
    if (!cn) {
        snprintf(err, errlen, "certificate has no subject CN (the device id)");
        return -1;
    }
    if (copy_name(out->device, cn->p, cn->len, "CN", err, errlen))
        return -1;

    /* A company CA decides the company of what it issued. */
    for (size_t i = 0; i < t->ncompany_cas; i++) {
        const company_ca *c = &t->company_cas[i];
        for (const mbedtls_x509_crt *ca = &c->ca; ca && ca->raw.p; ca = ca->next) {
            if (ca->subject_raw.len != peer->issuer_raw.len ||
                memcmp(ca->subject_raw.p, peer->issuer_raw.p, peer->issuer_raw.len) != 0)
                continue;
            /* Did this CA sign it? Without the CRLs: the handshake checked
             * them, tls_server_is_revoked checks them for resumed sessions,
             * and verifying a CRL's signature here again would cost a
             * second signature check (about 1 ms on the loop thread). */
            uint32_t flags = 0;
            if (mbedtls_x509_crt_verify((mbedtls_x509_crt *)peer, (mbedtls_x509_crt *)&c->ca,
                                        NULL, NULL, &flags, NULL, NULL) == 0) {
                snprintf(out->company, sizeof(out->company), "%s", c->company);
                return 0;
            }
        }
    }
    switch (t->company_from) {
    case TLS_COMPANY_FROM_O:
    case TLS_COMPANY_FROM_OU: {
        bool o = t->company_from == TLS_COMPANY_FROM_O;
        const mbedtls_x509_buf *f =
            o ? subject_field(&peer->subject, MBEDTLS_OID_AT_ORGANIZATION,
                              MBEDTLS_OID_SIZE(MBEDTLS_OID_AT_ORGANIZATION))
              : subject_field(&peer->subject, MBEDTLS_OID_AT_ORG_UNIT,
                              MBEDTLS_OID_SIZE(MBEDTLS_OID_AT_ORG_UNIT));
        if (!f) {
            snprintf(err, errlen, "certificate has no subject %s (the company)", o ? "O" : "OU");
            return -1;
        }
        return copy_name(out->company, f->p, f->len, o ? "O" : "OU", err, errlen);
    }
    case TLS_COMPANY_FROM_SAN_URI:
        return company_from_san(t, peer, out->company, err, errlen);
    }
    return -1;
}

bool tls_server_is_revoked(const tls_server *t, const mbedtls_x509_crt *peer)
{
    if (!t->have_crl)
        return false;
    /* Only a CRL from the certificate's own issuer can revoke it. */
    for (const mbedtls_x509_crl *crl = &t->crl; crl && crl->raw.p; crl = crl->next) {
        if (crl->issuer_raw.len != peer->issuer_raw.len ||
            memcmp(crl->issuer_raw.p, peer->issuer_raw.p, peer->issuer_raw.len) != 0)
            continue;
        mbedtls_x509_crl one = *crl;
        one.next = NULL;
        if (mbedtls_x509_crt_is_revoked(peer, &one))
            return true;
    }
    return false;
}
