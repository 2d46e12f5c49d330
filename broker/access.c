/*
 * access.c - access rules applied to sessions (see access.h).
 */
#include <string.h>

#include "auth/acl.h"
#include "broker/access.h"
#include "broker/aclcache.h"
#include "broker/alloc.h"
#include "broker/log.h"

bool access_user_company(broker *b, const char *user, const char **company)
{
    *company = NULL;
    if (!b->acl)
        return true; /* without rules, users are platform-wide */
    return acl_user_company(b->acl, user, company);
}

/* The ACL's view of a session's principal. False for a session restored
 * from the store without a recorded principal: it is checked again when
 * its client comes back. */
static bool principal_of(const session *s, acl_principal *p)
{
    switch (s->kind) {
    case PRINCIPAL_DEVICE:
        p->kind = ACL_DEVICE;
        break;
    case PRINCIPAL_USER:
        p->kind = ACL_USER;
        break;
    case PRINCIPAL_ANONYMOUS:
        p->kind = ACL_ANONYMOUS;
        break;
    default:
        return false;
    }
    p->company = s->company;
    p->device = s->kind == PRINCIPAL_DEVICE ? s->client_id : NULL;
    p->username = s->username;
    p->client_id = s->client_id;
    return true;
}

static bool denied_to_anonymous(const broker *b, const char *filter, size_t len)
{
    for (size_t i = 0; i < b->cfg->nanon_deny; i++) {
        const char *d = b->cfg->anon_deny[i];
        if (strlen(d) == len && memcmp(d, filter, len) == 0)
            return true;
    }
    return false;
}

static void log_denial(const session *s, const char *what, const char *topic, size_t len,
                       const acl_decision *d)
{
    if (d->line)
        LOG_NOTICE("client %s: %s %.*s denied by %s:%d (%s)", s->client_id, what, (int)len, topic,
                   d->file, d->line, d->rule ? d->rule : "");
    else
        LOG_NOTICE("client %s: %s %.*s denied: %s", s->client_id, what, (int)len, topic,
                   d->reason ? d->reason : "no rule allows it");
}

bool access_publish(session *s, const char *topic, size_t len)
{
    broker *b = s->b;
    acl_principal p;
    if (!b->acl || !principal_of(s, &p))
        return true;
    /* Clients repeat their topics: the connection remembers what the rules
     * of this generation allowed (aclcache.h), so a reload takes effect for
     * the next PUBLISH. */
    conn *c = s->c;
    if (c && c->pubcache && aclcache_allowed(c->pubcache, b->acl_gen, topic, len))
        return true;
    acl_decision d = acl_check_publish(b->acl, &p, topic, len);
    if (!d.allow) {
        log_denial(s, "publish to", topic, len, &d);
        return false;
    }
    if (c && len <= ACLCACHE_TOPIC_MAX && (c->pubcache || (c->pubcache = aclcache_new())))
        aclcache_remember(c->pubcache, b->acl_gen, topic, len);
    return true;
}

bool access_subscribe(session *s, const char *filter, size_t len)
{
    broker *b = s->b;
    if (s->anonymous && denied_to_anonymous(b, filter, len))
        return false;
    acl_principal p;
    if (!b->acl || !principal_of(s, &p))
        return true;
    acl_decision d = acl_check_subscribe(b->acl, &p, filter, len);
    if (!d.allow)
        log_denial(s, "subscription to", filter, len, &d);
    return d.allow;
}

bool access_read(session *s, const gmq_msg *m)
{
    acl_principal p;
    if (!s->b->acl || !principal_of(s, &p))
        return true;
    /* A subscription is allowed only when one allowing rule covers it with
     * no earlier deny overlapping it, so the first rule matching any topic
     * it can match allows reading: while every subscription of s was
     * checked against the rules in force, the answer is known. */
    if (s->acl_gen == s->b->acl_gen)
        return true;
    const char *topic = m->topic + s->topic_prefix_len;
    size_t len = m->topic_len - s->topic_prefix_len;
    return acl_check_read(s->b->acl, &p, topic, len).allow;
}

void access_recheck_session(session *s)
{
    for (size_t i = 0; i < s->nsubs;) {
        const char *f = s->subs[i].filter + s->topic_prefix_len;
        if (access_subscribe(s, f, strlen(f))) {
            i++;
            continue;
        }
        LOG_NOTICE("client %s: subscription %s removed: no longer allowed", s->client_id, f);
        session_unsubscribe(s, s->subs[i].filter, strlen(s->subs[i].filter));
    }
    acl_principal p;
    if (principal_of(s, &p))
        s->acl_gen = s->b->acl_gen;
}

void access_recheck_all(broker *b)
{
    /* Collect first: unsubscribing never ends a session, but keep the walk
     * independent of the map's layout anyway. */
    size_t n = 0;
    session **all = gmq_malloc((b->sessions.count ? b->sessions.count : 1) * sizeof(*all));
    if (!all) {
        LOG_ERROR("access: no memory to re-check subscriptions after a reload");
        return;
    }
    for (size_t i = 0; i < b->sessions.cap; i++)
        if (b->sessions.slots[i].key)
            all[n++] = b->sessions.slots[i].value;
    for (size_t i = 0; i < n; i++) {
        session *s = all[i];
        /* A user the new rules move to another company (or drop) must
         * reconnect into its new namespace. */
        if (s->kind == PRINCIPAL_USER && b->acl && s->username) {
            const char *company = NULL;
            bool known = acl_user_company(b->acl, s->username, &company);
            bool same = known && ((!company && !s->company) ||
                                  (company && s->company && strcmp(company, s->company) == 0));
            if (!same && s->c) {
                LOG_NOTICE("client %s: user %s %s by the new ACL; disconnecting", s->client_id,
                           s->username, known ? "moved to another company" : "removed");
                conn_close(s->c, "user's company changed");
            }
            if (!same && known && !s->clean) {
                /* Its client will never find it again (sessions are keyed
                 * in the new namespace): do not keep it in the old one,
                 * holding messages and a cap slot. A user merely removed
                 * keeps it, in case the user is named again. */
                LOG_NOTICE("client %s: persistent session of user %s in company %s discarded: "
                           "the user moved to %s",
                           s->client_id, s->username, s->company ? s->company : "(none)",
                           company ? company : "the platform");
                if (s->c) {
                    s->c->s = NULL; /* closing: its reap must not see it */
                    s->c = NULL;
                }
                session_discard(s);
                continue;
            }
            if (!same && s->c)
                continue;
        }
        access_recheck_session(s);
    }
    gmq_free(all);
}

int access_init(broker *b)
{
    if (!b->cfg->acl_file)
        return 0;
    char err[512];
    if (acl_load(b->cfg->acl_file, &b->acl, err, sizeof(err))) {
        LOG_ERROR("ACL: %s", err);
        return -1;
    }
    b->acl_gen = 1;
    LOG_NOTICE("ACL %s: %zu rule(s)", b->cfg->acl_file, acl_rule_count(b->acl));
    return 0;
}

void access_free(broker *b)
{
    acl_free(b->acl);
    b->acl = NULL;
}
