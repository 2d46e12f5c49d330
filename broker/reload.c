/*
 * reload.c - SIGHUP: reload the files the configuration names.
 *
 * Certificates, keys, CRLs, the password file and the ACL file are read and parsed on a
 * worker thread (the loop never waits on disk), then swapped in on the loop
 * thread. Each part is all or nothing: a part that fails to load keeps what
 * is in force and its error is logged. Listeners, ports and limits are not
 * reloaded; they need a restart.
 */
#include <string.h>

#include <mbedtls/x509_crt.h>

#include "auth/acl.h"
#include "auth/passwd.h"
#include "broker/access.h"
#include "broker/alloc.h"
#include "broker/broker.h"
#include "broker/log.h"
#include "broker/tls_transport.h"
#include "broker/worker.h"

typedef struct reload_job {
    worker_job base;
    broker *b;
    size_t nlisteners;
    tls_server **tls; /* new material per listener, NULL when none or failed */
    char **tls_err;
    passwd_file *passwords;
    char pw_err[512];
    bool pw_failed;
    acl *acl;
    char acl_err[512];
    bool acl_failed;
} reload_job;

/* Worker thread: only reads the configuration (immutable while running). */
static void reload_run(worker_job *j)
{
    reload_job *r = (reload_job *)j;
    broker *b = r->b;
    for (size_t i = 0; i < r->nlisteners; i++) {
        const listener *l = &b->listeners[i];
        if (!l->cfg->certfile)
            continue;
        char err[512];
        if (broker_load_tls(b, l->cfg, l->tickets, &r->tls[i], err, sizeof(err)))
            r->tls_err[i] = gmq_strdup(err);
    }
    if (b->cfg->password_file &&
        passwd_file_load(b->cfg->password_file, &r->passwords, r->pw_err, sizeof(r->pw_err)))
        r->pw_failed = true;
    /* A broken ACL file never fails open: the rules in force stay. */
    if (b->cfg->acl_file && acl_load(b->cfg->acl_file, &r->acl, r->acl_err, sizeof(r->acl_err)))
        r->acl_failed = true;
}

static void free_job(reload_job *r)
{
    for (size_t i = 0; i < r->nlisteners; i++) {
        tls_server_unref(r->tls[i]);
        gmq_free(r->tls_err[i]);
    }
    gmq_free(r->tls);
    gmq_free(r->tls_err);
    passwd_file_free(r->passwords);
    acl_free(r->acl);
    gmq_free(r);
}

/* Close connections whose certificate a newly loaded CRL revokes. Those
 * still on a handshake thread are not ours to look at: they are checked
 * against the listener's current CRLs too when they come back
 * (conn_tls_established). */
static void drop_revoked(broker *b)
{
    for (conn *c = b->conns; c; c = c->next) {
        if (c->state == CONN_CLOSING || c->hs || !c->l || !c->l->tls)
            continue;
        const mbedtls_x509_crt *peer = tls_transport_peer_cert(c);
        if (peer && tls_server_is_revoked(c->l->tls, peer)) {
            LOG_NOTICE("client %s (%s): certificate revoked, disconnecting",
                       c->s ? c->s->client_id : "(not connected)", c->peer);
            conn_close(c, "certificate revoked");
        }
    }
}

static void reload_done(worker_job *j)
{
    reload_job *r = (reload_job *)j;
    broker *b = r->b;
    b->reloading = false;
    if (j->cancelled) {
        free_job(r);
        return;
    }
    for (size_t i = 0; i < r->nlisteners; i++) {
        listener *l = &b->listeners[i];
        if (r->tls_err[i]) {
            LOG_ERROR("reload: listener %u keeps its TLS material: %s", l->cfg->port,
                      r->tls_err[i]);
        } else if (r->tls[i]) {
            tls_server_unref(l->tls); /* connections keep theirs until they end */
            l->tls = r->tls[i];
            r->tls[i] = NULL;
            LOG_NOTICE("reload: listener %u: certificate, key, CAs and CRLs reloaded",
                       l->cfg->port);
        }
    }
    if (r->pw_failed) {
        LOG_ERROR("reload: keeping the password file in force: %s", r->pw_err);
    } else if (r->passwords) {
        passwd_file_free(b->passwords);
        b->passwords = r->passwords;
        r->passwords = NULL;
        LOG_NOTICE("reload: password file: %zu user(s)", passwd_file_count(b->passwords));
    }
    if (r->acl_failed) {
        LOG_ERROR("reload: keeping the ACL in force: %s", r->acl_err);
    } else if (r->acl) {
        /* The swap is one pointer store on the loop thread: every check
         * sees either the old rules or the new. */
        acl *old = b->acl;
        b->acl = r->acl;
        r->acl = old;
        b->acl_gen++;
        LOG_NOTICE("reload: ACL %s: %zu rule(s)", b->cfg->acl_file, acl_rule_count(b->acl));
        access_recheck_all(b);
    }
    drop_revoked(b);
    b->reload_count++;
    free_job(r);
    if (b->reload_again) {
        b->reload_again = false;
        broker_reload(b);
    }
}

void broker_reload(broker *b)
{
    if (b->reloading) {
        b->reload_again = true; /* a second SIGHUP during a reload: one more */
        return;
    }
    reload_job *r = gmq_calloc(1, sizeof(*r));
    if (r) {
        r->nlisteners = b->nlisteners;
        r->tls = gmq_calloc(b->nlisteners ? b->nlisteners : 1, sizeof(*r->tls));
        r->tls_err = gmq_calloc(b->nlisteners ? b->nlisteners : 1, sizeof(*r->tls_err));
    }
    if (!r || !r->tls || !r->tls_err) {
        LOG_ERROR("reload: out of memory");
        if (r) {
            gmq_free(r->tls);
            gmq_free(r->tls_err);
            gmq_free(r);
        }
        return;
    }
    LOG_NOTICE("reload: reading certificates, CRLs, the password file and the ACL file");
    r->base.run = reload_run;
    r->base.done = reload_done;
    r->b = b;
    b->reloading = true;
    worker_pool_submit(b->workers, &r->base);
}
