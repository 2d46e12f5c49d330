/*
 * login.c - authentication between CONNECT and CONNACK (see login.h).
 */
#include <stdio.h>
#include <string.h>

#include <mbedtls/x509.h>

#include "auth/lockout.h"
#include "auth/passwd.h"
#include "broker/alloc.h"
#include "broker/log.h"
#include "broker/login.h"
#include "broker/tls_transport.h"
#include "broker/worker.h"

/* Client ids we accept are at most this long; longer ones get CONNACK 2
 * ([MQTT-3.1.3-5] lets a server choose). */
#define MAX_CLIENT_ID 256
/* Keys remembered per lockout table; the oldest unlocked ones go first. */
#define LOCKOUT_ENTRIES 100000

struct auth_job {
    worker_job base;
    conn *c;               /* NULL once the connection went away */
    bool known;            /* the user is in the password file */
    passwd_hash hash;      /* copy: the file may be reloaded meanwhile */
    unsigned burn_iterations;
    uint8_t *password;
    size_t password_len;
    bool ok;
};

/* ---- certificates ---------------------------------------------------------- */

int conn_tls_established(conn *c, const tls_server *srv, const mbedtls_x509_crt *peer,
                         tls_identity *id, const char *why)
{
    conn_restart_connect_timer(c);
    if (!peer)
        return 0; /* no certificate: a user or anonymous client */
    /* A resumed session skips verification: check what can have changed. */
    /* The listener's material may have been reloaded since the handshake
     * started: its CRLs count as well. */
    const tls_server *now = c->l && c->l->tls ? c->l->tls : srv;
    const char *refusal = NULL;
    if (tls_server_is_revoked(srv, peer) || (now != srv && tls_server_is_revoked(now, peer)))
        refusal = "client certificate is revoked";
    else if (mbedtls_x509_time_is_past(&peer->valid_to))
        refusal = "client certificate has expired";
    else if (!id)
        refusal = why;
    if (refusal) {
        LOG_NOTICE("TLS connection from %s refused: %s", c->peer, refusal);
        gmq_free(id);
        return -1;
    }
    c->identity = id;
    LOG_INFO("TLS connection from %s: device %s of company %s", c->peer, id->device, id->company);
    return 0;
}

/* ---- requests -------------------------------------------------------------- */

void connect_req_free(connect_req *req)
{
    if (!req)
        return;
    gmq_free(req->client_id);
    gmq_free(req->username);
    gmq_msg_unref(req->will);
    gmq_free(req);
}

static connect_req *make_req(const mqtt_connect *m, const char *id, size_t idlen)
{
    connect_req *req = gmq_calloc(1, sizeof(*req));
    if (!req)
        return NULL;
    req->clean = m->clean_session;
    req->keepalive = m->keep_alive;
    if (!(req->client_id = gmq_strndup(id, idlen)))
        goto fail;
    if (m->has_username &&
        !(req->username = gmq_strndup((const char *)m->username.ptr, m->username.len)))
        goto fail;
    if (m->will_flag &&
        !(req->will = gmq_msg_new((const char *)m->will_topic.ptr, m->will_topic.len,
                                  m->will_payload.ptr, m->will_payload.len, m->will_qos,
                                  m->will_retain)))
        goto fail;
    return req;
fail:
    connect_req_free(req);
    return NULL;
}

static void assign_client_id(broker *b, char *out, size_t len)
{
    /* Unique within this run; clean sessions (the only ones that get
     * assigned ids) end with their connection, so a later run may reuse. */
    snprintf(out, len, "auto-%llu", (unsigned long long)++b->next_auto_id);
}

/* ---- passwords ------------------------------------------------------------- */

static void auth_run(worker_job *j)
{
    auth_job *a = (auth_job *)j;
    if (a->known)
        a->ok = passwd_verify(&a->hash, a->password, a->password_len);
    else
        passwd_burn(a->burn_iterations, a->password, a->password_len); /* same cost */
    memset(a->password, 0, a->password_len);
}

static void auth_job_free(auth_job *a)
{
    if (a->password) {
        memset(a->password, 0, a->password_len);
        gmq_free(a->password);
    }
    gmq_free(a);
}

static void record_failure(broker *b, lockout *l, const char *what, const char *key)
{
    double lock = lockout_fail(l, key, strlen(key), ev_now(b->loop));
    if (lock > 0) {
        b->stats.lockouts++;
        LOG_WARN("login lockout: %s %s locked for %.0f s after repeated failures", what, key,
                 lock);
    }
}

static void auth_done(worker_job *j)
{
    auth_job *a = (auth_job *)j;
    conn *c = a->c;
    if (!c || j->cancelled) {
        auth_job_free(a);
        return;
    }
    if (c->state == CONN_CLOSING) {
        /* Closed (e.g. by its connect timeout) and not reaped yet: never
         * revive it. The reap would cancel the job; this only keeps that
         * true whatever order the loop runs its watchers in. */
        c->auth = NULL;
        auth_job_free(a);
        return;
    }
    broker *b = c->b;
    c->auth = NULL;
    connect_req *req = c->pending;
    c->pending = NULL;
    char addr[64];
    conn_address(c, addr, sizeof(addr));
    if (a->ok) {
        lockout_success(b->lock_users, req->username, strlen(req->username));
        lockout_success(b->lock_addrs, addr, strlen(addr));
        auth_job_free(a);
        c->state = CONN_NEW;
        connect_accept(c, req, PRINCIPAL_USER);
        conn_resume_input(c);
        return;
    }
    b->stats.auth_failures++;
    record_failure(b, b->lock_users, "user", req->username);
    record_failure(b, b->lock_addrs, "address", addr);
    char why[200];
    snprintf(why, sizeof(why), "bad user name or password for %s", req->username);
    c->state = CONN_NEW;
    connect_refuse(c, MQTT_CONNACK_BAD_CREDENTIALS, why);
    connect_req_free(req);
    auth_job_free(a);
}

/* Check the password off the loop; the connection waits in CONN_AUTH. */
static void start_password_check(conn *c, connect_req *req, const mqtt_connect *m)
{
    broker *b = c->b;
    char addr[64];
    conn_address(c, addr, sizeof(addr));
    double now = ev_now(b->loop);
    double wait_user = lockout_remaining(b->lock_users, req->username, strlen(req->username), now);
    double wait_addr = lockout_remaining(b->lock_addrs, addr, strlen(addr), now);
    if (wait_user > 0 || wait_addr > 0) {
        char why[200];
        snprintf(why, sizeof(why), "%s %s is locked out for %.0f s more",
                 wait_user > 0 ? "user" : "address", wait_user > 0 ? req->username : addr,
                 wait_user > 0 ? wait_user : wait_addr);
        connect_req_free(req);
        connect_refuse(c, MQTT_CONNACK_NOT_AUTHORIZED, why);
        return;
    }
    auth_job *a = gmq_calloc(1, sizeof(*a));
    if (!a || !(a->password = gmq_malloc(m->has_password ? m->password.len : 1))) {
        gmq_free(a);
        connect_req_free(req);
        connect_refuse(c, MQTT_CONNACK_UNAVAILABLE, "no memory for the login");
        return;
    }
    a->base.run = auth_run;
    a->base.done = auth_done;
    a->c = c;
    a->password_len = m->has_password ? m->password.len : 0;
    if (a->password_len)
        memcpy(a->password, m->password.ptr, a->password_len);
    const passwd_hash *h = passwd_file_lookup(b->passwords, req->username, strlen(req->username));
    if (h) {
        a->known = true;
        a->hash = *h;
    } else {
        a->burn_iterations = passwd_file_typical_iterations(b->passwords);
    }
    c->state = CONN_AUTH;
    c->pending = req;
    c->auth = a;
    ev_io_stop(b->loop, &c->rio); /* read on once the check is done */
    worker_pool_submit(b->workers, &a->base);
}

void login_cancel(conn *c)
{
    if (c->auth) {
        c->auth->c = NULL; /* the job frees itself when it reports back */
        c->auth = NULL;
    }
    connect_req_free(c->pending);
    c->pending = NULL;
}

/* ---- the decision ---------------------------------------------------------- */

void login_start(conn *c, const mqtt_connect *m)
{
    broker *b = c->b;
    const char *id = (const char *)m->client_id.ptr;
    size_t idlen = m->client_id.len;
    char autoid[64];

    if (c->identity) {
        /* A device: its client id is its device id; username and password
         * are ignored. */
        const char *dev = c->identity->device;
        if (idlen == 0) {
            if (!m->clean_session) {
                /* The spec leaves no room here, even for a device. */
                connect_refuse(c, MQTT_CONNACK_ID_REJECTED, "empty client id without clean session"); /* [MQTT-3.1.3-8] */
                return;
            }
            id = dev;
            idlen = strlen(dev);
        } else if (idlen != strlen(dev) || memcmp(id, dev, idlen) != 0) {
            connect_refuse(c, MQTT_CONNACK_ID_REJECTED, "client id differs from the certificate's device id");
            return;
        }
    } else if (idlen == 0) {
        if (!m->clean_session) {
            connect_refuse(c, MQTT_CONNACK_ID_REJECTED, "empty client id without clean session"); /* [MQTT-3.1.3-8] */
            return;
        }
        assign_client_id(b, autoid, sizeof(autoid)); /* [MQTT-3.1.3-6] */
        id = autoid;
        idlen = strlen(autoid);
    }
    if (idlen > MAX_CLIENT_ID) {
        connect_refuse(c, MQTT_CONNACK_ID_REJECTED, "client id too long"); /* [MQTT-3.1.3-9] */
        return;
    }
    connect_req *req = make_req(m, id, idlen);
    if (!req) {
        connect_refuse(c, MQTT_CONNACK_UNAVAILABLE, "no memory for the connection");
        return;
    }
    if (c->identity) {
        gmq_free(req->username);
        req->username = NULL;
        connect_accept(c, req, PRINCIPAL_DEVICE);
        return;
    }
    bool anonymous_ok = c->l && c->l->cfg->allow_anonymous;
    if (m->has_username && b->passwords) {
        start_password_check(c, req, m);
        return;
    }
    if (anonymous_ok) {
        /* Without a password file a user name proves nothing. */
        connect_accept(c, req, PRINCIPAL_ANONYMOUS);
        return;
    }
    connect_req_free(req);
    if (m->has_username)
        connect_refuse(c, MQTT_CONNACK_BAD_CREDENTIALS, "no password file to check the login against");
    else if (c->l && c->l->tls && tls_server_requires_certificate(c->l->tls))
        connect_refuse(c, MQTT_CONNACK_NOT_AUTHORIZED, "no client certificate");
    else
        connect_refuse(c, MQTT_CONNACK_NOT_AUTHORIZED, "anonymous access is off on this listener");
}

/* ---- set-up ---------------------------------------------------------------- */

int login_init(broker *b)
{
    const gmq_config *cfg = b->cfg;
    b->lock_users = lockout_new(cfg->lockout_threshold, cfg->lockout_time, cfg->lockout_max_time,
                                LOCKOUT_ENTRIES);
    b->lock_addrs = lockout_new(cfg->lockout_threshold, cfg->lockout_time, cfg->lockout_max_time,
                                LOCKOUT_ENTRIES);
    if (!b->lock_users || !b->lock_addrs) {
        LOG_ERROR("cannot create the lockout tables");
        return -1;
    }
    /* Password checks and reloads run here, never on the loop thread. */
    if (!(b->workers = worker_pool_new(b->loop, cfg->auth_threads))) {
        LOG_ERROR("cannot start the worker threads");
        return -1;
    }
    if (!cfg->password_file)
        return 0;
    char err[512];
    if (passwd_file_load(cfg->password_file, &b->passwords, err, sizeof(err))) {
        LOG_ERROR("password file: %s", err);
        return -1;
    }
    LOG_NOTICE("password file %s: %zu user(s)", cfg->password_file,
               passwd_file_count(b->passwords));
    return 0;
}

void login_free(broker *b)
{
    worker_pool_free(b->workers); /* reports (cancelled) jobs before returning */
    b->workers = NULL;
    passwd_file_free(b->passwords);
    b->passwords = NULL;
    lockout_free(b->lock_users);
    lockout_free(b->lock_addrs);
    b->lock_users = b->lock_addrs = NULL;
}
