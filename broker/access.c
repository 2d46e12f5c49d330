/*
 * access.c - access rules applied to sessions (see access.h).
 */
#include <string.h>

#include "broker/access.h"
#include "broker/log.h"

bool access_user_company(broker *b, const char *user, const char **company)
{
    (void)b;
    (void)user;
    *company = NULL;
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

bool access_publish(session *s, const char *topic, size_t len)
{
    (void)s;
    (void)topic;
    (void)len;
    return true;
}

bool access_subscribe(session *s, const char *filter, size_t len)
{
    if (s->anonymous && denied_to_anonymous(s->b, filter, len))
        return false;
    return true;
}

bool access_read(session *s, const gmq_msg *m)
{
    (void)s;
    (void)m;
    return true;
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
}

void access_recheck_all(broker *b)
{
    for (size_t i = 0; i < b->sessions.cap; i++)
        if (b->sessions.slots[i])
            access_recheck_session(b->sessions.slots[i]);
}
