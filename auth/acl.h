/*
 * acl.h - who may publish, subscribe and receive what: the ACL engine.
 *
 * Pure: no sockets, no event loop, no globals. acl_load/acl_parse turn an
 * ACL file into an immutable rule set; the acl_check_* functions answer one
 * question about one principal and one topic, and name the rule that
 * decided. docs/acl.md is the operator's guide to the file format; the
 * short version:
 *
 *     company acme
 *       devices                 # every certificate-authenticated device of acme
 *         read   config/%d/#
 *         write  telemetry/%d/#
 *       device gw-0042          # rules for this device, checked before `devices`
 *         read   config/line-3/#
 *       user alice              # alice is an operator of acme
 *         readwrite #
 *     platform
 *       user ingest             # platform-wide: rules in internal topics
 *         read +/telemetry/#
 *     anonymous                 # clients without credentials (dev only)
 *       readwrite test/#
 *
 * Namespaces. A company principal (a device, or a user of a company
 * section) works in its company's namespace: the topics passed to the
 * checks, and the filters of its rules, are client-relative
 * ("telemetry/gw-1/t", which the broker stores as "acme/telemetry/gw-1/t").
 * Platform users and anonymous clients belong to no company: their topics
 * and rules are internal topics. Mapping between the two is the broker's
 * job; this module only compares a topic with the rules written in the same
 * namespace.
 *
 * Evaluation. Deny unless a rule allows. The rules that apply to a
 * principal are its own section (`device X` of its company, or `user X`),
 * then, for a device, its company's `devices` section; for anonymous
 * clients the `anonymous` section. Only rules that concern the operation
 * count (read: read, readwrite, deny, deny read; write: write, readwrite,
 * deny, deny write); among those the first that matches decides:
 *   - publish / read: the rule's filter matches the topic name.
 *   - subscribe: an allowing rule decides "allow" only if its filter covers
 *     the subscription (matches every topic the subscription can match); an
 *     allowing rule that merely overlaps is passed over; a denying rule
 *     decides "deny" as soon as it overlaps (some topic matches both). So an
 *     allowed subscription never delivers a topic that acl_check_read would
 *     refuse.
 * Wildcards in rules follow MQTT [MQTT-4.7]: "a/#" also matches "a", and a
 * rule starting with '+' or '#' does not match a topic starting with '$'.
 *
 * Substitutions: %d device id, %u user name, %c client id, %% a '%'. A
 * value that is NULL, empty, longer than 65535 bytes, not UTF-8, starts with
 * '$' or contains '/', '+' or '#' is unusable: an allowing rule that uses it
 * never matches and a denying rule that uses it matches every topic, so a
 * hostile value can only take access away.
 *
 * Ownership and lifetime. acl_load/acl_parse return a new rule set the
 * caller frees with acl_free. Every pointer this module returns (decision
 * file and rule text, a user's company) points into the rule set and stays
 * valid until acl_free of that set. The principal and the topic passed to a
 * check are only read during the call.
 *
 * Threads. A loaded acl is never modified: any number of threads may run
 * checks on one set concurrently without locking. Reload builds a new set
 * next to the old one; the broker swaps its pointer atomically and frees
 * the old set once no thread still uses it. Parse errors leave *out
 * untouched, so a failed reload cannot disturb the set in force.
 *
 * Errors: functions returning int return 0 (ACL_OK) or a negative acl_err
 * and write a NUL-terminated message into err ("file:line: reason" for
 * file content, "file: reason" for I/O). A failed parse returns no rule
 * set at all: never a partial one.
 *
 * Allocation goes through broker/alloc.h. The checks never allocate.
 */
#ifndef GATEMQ_ACL_H
#define GATEMQ_ACL_H

#include <stdbool.h>
#include <stddef.h>

typedef enum acl_err {
    ACL_OK = 0,
    ACL_E_NOMEM = -1,  /* allocation failed */
    ACL_E_IO = -2,     /* the file could not be read (or is absurdly large) */
    ACL_E_SYNTAX = -3, /* the file content is invalid; err says file:line */
} acl_err;

const char *acl_strerror(int err);

typedef struct acl acl;

typedef enum acl_kind {
    ACL_DEVICE,    /* certificate-authenticated device */
    ACL_USER,      /* user name + password (an operator or a service) */
    ACL_ANONYMOUS, /* no credentials: dev/loopback listeners only */
} acl_kind;

/* Who is asking. Strings are NUL-terminated and only read during a call.
 *   device:    company and device from the certificate; client_id equals
 *              the device id (the broker enforces that).
 *   user:      username; company as acl_user_company reported it for the
 *              set being checked (NULL for a platform user). A company that
 *              differs from the set's is denied everything: after a reload
 *              that moved a user, its session must be re-established.
 *   anonymous: only client_id is used.
 * Fields that do not apply may be NULL. A NULL client_id makes %c unusable. */
typedef struct acl_principal {
    acl_kind kind;
    const char *company;
    const char *device;
    const char *username;
    const char *client_id;
} acl_principal;

/* The answer to one check. When a rule decided, file:line is where it is
 * and rule its text as written ("read   config/%d/#", without the comment).
 * When none did, line is 0, rule is NULL and reason says why (e.g. "no rule
 * matched: denied by default"). All pointers live as long as the acl. */
typedef struct acl_decision {
    bool allow;
    const char *file;
    int line;
    const char *rule;
    const char *reason; /* always set: "rule" when a rule decided */
} acl_decision;

/* Read path and parse it (acl_parse with name = path). ACL_E_IO if it
 * cannot be read; files over 256 MB are refused. */
int acl_load(const char *path, acl **out, char *err, size_t errlen);

/* Parse text[0..len) (need not be NUL-terminated; a NUL byte inside is an
 * error). name is used in error messages and decisions, and copied. On
 * success *out is the new set; on error *out is untouched and nothing is
 * leaked. The first error in file order is reported. */
int acl_parse(const char *text, size_t len, const char *name, acl **out,
              char *err, size_t errlen);

/* Frees a; NULL is a no-op. */
void acl_free(acl *a);

/* Which company a user belongs to. false: the user is not in the file (the
 * broker should refuse the login). true: *company is the company name, or
 * NULL for a platform user; valid until acl_free(a). */
bool acl_user_company(const acl *a, const char *user, const char **company);

/* May p publish to topic[0..len)? topic must be a valid topic name (no
 * wildcards) in p's namespace; an invalid one is denied. */
acl_decision acl_check_publish(const acl *a, const acl_principal *p,
                               const char *topic, size_t len);
/* May p subscribe to filter[0..len)? An invalid filter is denied. */
acl_decision acl_check_subscribe(const acl *a, const acl_principal *p,
                                 const char *filter, size_t len);
/* May a message on topic[0..len) be delivered to p (forwarding, retained
 * messages)? The first matching read-related rule decides. */
acl_decision acl_check_read(const acl *a, const acl_principal *p,
                            const char *topic, size_t len);

/* What the file declares, for summaries and metrics. */
typedef struct acl_stats {
    size_t companies;      /* company sections */
    size_t device_groups;  /* `devices` sections */
    size_t devices;        /* `device X` sections */
    size_t users;          /* `user X` sections, company and platform */
    size_t platform_users; /* of which in the platform section */
    bool anonymous;        /* an `anonymous` section exists */
    size_t rules;
} acl_stats;

void acl_get_stats(const acl *a, acl_stats *out);
size_t acl_rule_count(const acl *a);
/* The name given to acl_parse (the path for acl_load). */
const char *acl_file_name(const acl *a);

/* Does filter outer cover filter inner: is every topic name that inner
 * matches also matched by outer (with the '$' rule of [MQTT-4.7.2-1])?
 * "a/#" covers "a", "a/b/+" and "a/#"; "a/+" covers "a/b" but not "a/#".
 * False if either is not a valid filter. */
bool acl_filter_covers(const char *outer, size_t olen, const char *inner, size_t ilen);
/* Is there a topic name both filters match? False if either is invalid. */
bool acl_filter_overlaps(const char *a, size_t alen, const char *b, size_t blen);

#endif
