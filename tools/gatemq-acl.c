/*
 * gatemq-acl - check an ACL file, and ask it what a principal may do.
 *
 *   gatemq-acl check FILE
 *       Parse FILE as the broker would on start or SIGHUP. On success print a
 *       summary and exit 0; otherwise print "FILE:LINE: reason" on stderr
 *       and exit 1.
 *   gatemq-acl test FILE PRINCIPAL read|write|subscribe TOPIC
 *       Print "allow" or "deny" on the first line and, on the second, the
 *       rule that decided ("FILE:LINE: rule text") or why nothing did ("no
 *       rule matched: denied by default"). Exit 0 for allow, 1 for deny.
 *       PRINCIPAL is one of
 *           device:COMPANY/DEVICE_ID   a certificate device (client id = device id)
 *           user:NAME                  a user; its company comes from FILE
 *           anonymous                  a client without credentials
 *       optionally followed by ",client=ID" to set the client id (%c). TOPIC
 *       is in the principal's namespace: client-relative for a company's
 *       devices and users, internal ("acme/telemetry/...") for platform
 *       users and anonymous clients. read = delivery of a message on TOPIC,
 *       write = publish to TOPIC, subscribe = a subscription to filter TOPIC.
 *
 * Exit status 2: bad usage, or (for test) a FILE that does not load.
 */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "auth/acl.h"
#include "mqtt.h"

static void usage(FILE *to)
{
    fprintf(to,
            "usage: gatemq-acl check FILE\n"
            "       gatemq-acl test FILE PRINCIPAL read|write|subscribe TOPIC\n"
            "PRINCIPAL: device:COMPANY/DEVICE_ID, user:NAME or anonymous,\n"
            "           optionally followed by ,client=CLIENT_ID\n"
            "check exits 0 if FILE is valid, 1 if not; test exits 0 for allow, 1 for\n"
            "deny; both exit 2 on bad usage (test also if FILE does not load).\n");
}

static int cmd_check(const char *path)
{
    acl *a = NULL;
    char err[1024];
    if (acl_load(path, &a, err, sizeof err) != ACL_OK) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    acl_stats st;
    acl_get_stats(a, &st);
    printf("%s: OK: %zu compan%s (%zu with a devices section), %zu device section%s, "
           "%zu user%s (%zu platform-wide), %s, %zu rule%s\n",
           path, st.companies, st.companies == 1 ? "y" : "ies", st.device_groups,
           st.devices, st.devices == 1 ? "" : "s", st.users, st.users == 1 ? "" : "s",
           st.platform_users, st.anonymous ? "an anonymous section" : "no anonymous section",
           st.rules, st.rules == 1 ? "" : "s");
    acl_free(a);
    return 0;
}

/* Parse PRINCIPAL into *p, pointing into buf (a writable copy). */
static bool parse_principal(char *buf, const acl *a, acl_principal *p)
{
    *p = (acl_principal){ 0 };
    char *client = strstr(buf, ",client=");
    if (client) {
        *client = '\0';
        p->client_id = client + strlen(",client=");
    }
    if (strcmp(buf, "anonymous") == 0) {
        p->kind = ACL_ANONYMOUS;
        return true;
    }
    if (strncmp(buf, "device:", 7) == 0) {
        char *slash = strchr(buf + 7, '/');
        if (!slash || slash == buf + 7 || slash[1] == '\0')
            return false;
        *slash = '\0';
        p->kind = ACL_DEVICE;
        p->company = buf + 7;
        p->device = slash + 1;
        if (!client)
            p->client_id = p->device; /* the broker enforces client id = device id */
        return true;
    }
    if (strncmp(buf, "user:", 5) == 0 && buf[5] != '\0') {
        p->kind = ACL_USER;
        p->username = buf + 5;
        const char *company = NULL;
        if (acl_user_company(a, p->username, &company))
            p->company = company;
        return true;
    }
    return false;
}

static int cmd_test(const char *path, const char *principal, const char *op, const char *topic)
{
    enum { READ, WRITE, SUBSCRIBE } kind;
    if (strcmp(op, "read") == 0) {
        kind = READ;
    } else if (strcmp(op, "write") == 0 || strcmp(op, "publish") == 0) {
        kind = WRITE;
    } else if (strcmp(op, "subscribe") == 0) {
        kind = SUBSCRIBE;
    } else {
        fprintf(stderr, "gatemq-acl: unknown operation '%s': read, write or subscribe\n", op);
        return 2;
    }
    size_t tlen = strlen(topic);
    if (kind == SUBSCRIBE ? !mqtt_topic_filter_valid((const uint8_t *)topic, tlen)
                          : !mqtt_topic_name_valid((const uint8_t *)topic, tlen)) {
        fprintf(stderr, "gatemq-acl: '%s' is not a valid topic %s\n", topic,
                kind == SUBSCRIBE ? "filter" : "name (wildcards only with subscribe)");
        return 2;
    }

    acl *a = NULL;
    char err[1024];
    if (acl_load(path, &a, err, sizeof err) != ACL_OK) {
        fprintf(stderr, "%s\n", err);
        return 2;
    }
    int rc = 2;
    char *buf = strdup(principal);
    acl_principal p;
    if (!buf) {
        fprintf(stderr, "gatemq-acl: out of memory\n");
    } else if (!parse_principal(buf, a, &p)) {
        fprintf(stderr, "gatemq-acl: bad principal '%s': expected device:COMPANY/DEVICE_ID, "
                        "user:NAME or anonymous, optionally with ,client=ID\n", principal);
    } else {
        acl_decision d = kind == READ    ? acl_check_read(a, &p, topic, tlen)
                       : kind == WRITE   ? acl_check_publish(a, &p, topic, tlen)
                                         : acl_check_subscribe(a, &p, topic, tlen);
        printf("%s\n", d.allow ? "allow" : "deny");
        if (d.line > 0)
            printf("%s:%d: %s\n", d.file, d.line, d.rule);
        else
            printf("%s\n", d.reason);
        rc = d.allow ? 0 : 1;
    }
    free(buf);
    acl_free(a);
    return rc;
}

int main(int argc, char **argv)
{
    if (argc == 2 && (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0)) {
        usage(stdout);
        return 0;
    }
    if (argc == 3 && strcmp(argv[1], "check") == 0)
        return cmd_check(argv[2]);
    if (argc == 6 && strcmp(argv[1], "test") == 0)
        return cmd_test(argv[2], argv[3], argv[4], argv[5]);
    usage(stderr);
    return 2;
}
