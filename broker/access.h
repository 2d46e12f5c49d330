/*
 * access.h - who may publish, subscribe and read what: the company
 * namespaces' access rules (auth/acl) applied to sessions.
 *
 * Topics and filters given here are client-relative: what the client wrote,
 * before its company prefix. Without an ACL file every principal may do
 * everything inside its own namespace (and anonymous clients may not
 * subscribe to the configured anonymous_deny_subscribe filters); with one,
 * access is denied unless a rule allows it.
 */
#ifndef GATEMQ_ACCESS_H
#define GATEMQ_ACCESS_H

#include "broker/broker.h"

/* A user's company from the ACL file (NULL: platform-wide). False when an
 * ACL file is in force and does not name the user. */
bool access_user_company(broker *b, const char *user, const char **company);
bool access_publish(session *s, const char *topic, size_t len);
bool access_subscribe(session *s, const char *filter, size_t len);
/* May s receive m (an internal topic within its namespace)? */
bool access_read(session *s, const gmq_msg *m);
/* Remove the subscriptions of s that the rules in force forbid. */
void access_recheck_session(session *s);
/* The same for every session (after the rules changed, and at start for
 * restored sessions); users that the new rules move to another company are
 * disconnected and their persistent sessions in the old company discarded
 * (from the store too). */
void access_recheck_all(broker *b);
/* Load the ACL file the configuration names. Returns 0, or -1 logged. */
int access_init(broker *b);
void access_free(broker *b);

#endif
