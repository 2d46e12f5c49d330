/* Unit tests for the ACL engine (auth/acl.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "auth/acl.h"
#include "broker/alloc.h"
#include "mqtt.h"

static char err[1024];

/* ---- helpers -------------------------------------------------------------- */

static acl *parse_ok(const char *text)
{
    acl *a = NULL;
    int rc = acl_parse(text, strlen(text), "t.acl", &a, err, sizeof err);
    if (rc != ACL_OK)
        fail_msg("unexpected parse error: %s", err);
    assert_non_null(a);
    return a;
}

/* The parse fails with ACL_E_SYNTAX, returns no set, and err starts with
 * expect (which begins with "t.acl:LINE: "). */
static void expect_error(const char *text, const char *expect)
{
    acl *a = (acl *)(uintptr_t)0x1; /* must stay untouched */
    err[0] = '\0';
    int rc = acl_parse(text, strlen(text), "t.acl", &a, err, sizeof err);
    assert_int_equal(rc, ACL_E_SYNTAX);
    assert_ptr_equal(a, (acl *)(uintptr_t)0x1);
    if (strncmp(err, expect, strlen(expect)) != 0)
        fail_msg("error was \"%s\", expected it to start with \"%s\"", err, expect);
}

static acl_principal device(const char *company, const char *id)
{
    return (acl_principal){ .kind = ACL_DEVICE, .company = company, .device = id,
                            .client_id = id };
}

/* A user with the company the file gives (the broker's way). */
static acl_principal user(const acl *a, const char *name)
{
    acl_principal p = { .kind = ACL_USER, .username = name, .client_id = "cli-1" };
    const char *company = NULL;
    if (acl_user_company(a, name, &company))
        p.company = company;
    return p;
}

static acl_principal anonymous(const char *client_id)
{
    return (acl_principal){ .kind = ACL_ANONYMOUS, .client_id = client_id };
}

static acl_decision pub(const acl *a, acl_principal p, const char *t)
{
    return acl_check_publish(a, &p, t, strlen(t));
}

static acl_decision sub(const acl *a, acl_principal p, const char *f)
{
    return acl_check_subscribe(a, &p, f, strlen(f));
}

static acl_decision rd(const acl *a, acl_principal p, const char *t)
{
    return acl_check_read(a, &p, t, strlen(t));
}

#define ALLOWED_BY(d, ln) expect_decision((d), true, (ln), __LINE__)
#define DENIED_BY(d, ln) expect_decision((d), false, (ln), __LINE__)
#define DENIED(d) expect_decision((d), false, 0, __LINE__)

static void expect_decision(acl_decision d, bool allow, int line, int at)
{
    if (d.allow != allow || d.line != line)
        fail_msg("line %d: got %s by line %d (%s), expected %s by line %d", at,
                 d.allow ? "allow" : "deny", d.line, d.rule ? d.rule : d.reason,
                 allow ? "allow" : "deny", line);
    assert_non_null(d.reason);
    if (line == 0)
        assert_null(d.rule);
    else
        assert_non_null(d.rule);
}

static bool covers(const char *o, const char *i)
{
    return acl_filter_covers(o, strlen(o), i, strlen(i));
}

static bool overlaps(const char *x, const char *y)
{
    return acl_filter_overlaps(x, strlen(x), y, strlen(y));
}

static double now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

/* The sketch of the design, with every kind of section. */
static const char SKETCH[] =
    "company acme\n"                                       /* 1 */
    "  devices                       # every device of acme\n"
    "    read   config/%d/#\n"                             /* 3 */
    "    read   firmware/%d/#\n"                           /* 4 */
    "    write  telemetry/%d/#\n"                          /* 5 */
    "  device gw-0042                # extra rules\n"      /* 6 */
    "    read   config/line-3/#\n"                         /* 7 */
    "  user alice                    # an operator of acme\n"
    "    readwrite #\n"                                    /* 9 */
    "platform\n"                                           /* 10 */
    "  user ingest                   # internal topics\n"  /* 11 */
    "    read +/telemetry/#\n"                             /* 12 */
    "anonymous                       # dev only\n"         /* 13 */
    "  readwrite test/#\n";                                /* 14 */

/* ---- parsing ---------------------------------------------------------------- */

static void the_example_file_parses_and_matches_the_dev_certificates(void **state)
{
    (void)state;
    acl *a = NULL;
    int rc = acl_load("conf/acl.conf", &a, err, sizeof err);
    if (rc != ACL_OK)
        fail_msg("conf/acl.conf (run from the repository root): %s", err);
    acl_stats st;
    acl_get_stats(a, &st);
    assert_int_equal(st.companies, 2);
    assert_int_equal(st.device_groups, 2);
    assert_int_equal(st.devices, 1);
    assert_int_equal(st.users, 3);
    assert_int_equal(st.platform_users, 2);
    assert_false(st.anonymous);
    assert_int_equal(st.rules, acl_rule_count(a));
    assert_string_equal(acl_file_name(a), "conf/acl.conf");

    acl_principal gw1 = device("acme", "gw-0001"), gw101 = device("globex", "gw-0101");
    assert_true(sub(a, gw1, "config/gw-0001/#").allow);
    assert_true(sub(a, gw1, "config/line-3/#").allow);
    assert_true(pub(a, gw1, "telemetry/gw-0001/temp").allow);
    assert_false(pub(a, gw1, "telemetry/gw-0101/temp").allow);
    assert_true(sub(a, gw101, "config/gw-0101/#").allow);
    assert_false(sub(a, gw101, "config/line-3/#").allow);

    const char *company = "x";
    assert_true(acl_user_company(a, "operator", &company));
    assert_string_equal(company, "acme");
    assert_true(acl_user_company(a, "ingest", &company));
    assert_null(company);
    assert_true(sub(a, user(a, "operator"), "telemetry/#").allow);
    assert_false(pub(a, user(a, "operator"), "firmware/gw-0001/image").allow);
    assert_true(sub(a, user(a, "ingest"), "+/telemetry/#").allow);
    assert_true(pub(a, user(a, "firmware"), "acme/firmware/gw-0001/image").allow);
    assert_false(pub(a, user(a, "firmware"), "globex/firmware/gw-0101/image").allow);
    assert_false(pub(a, anonymous("x"), "test/a").allow);
    acl_free(a);
}

static void the_design_sketch_parses_with_trailing_comments(void **state)
{
    (void)state;
    acl *a = parse_ok(SKETCH);
    acl_stats st;
    acl_get_stats(a, &st);
    assert_int_equal(st.companies, 1);
    assert_int_equal(st.device_groups, 1);
    assert_int_equal(st.devices, 1);
    assert_int_equal(st.users, 2);
    assert_int_equal(st.platform_users, 1);
    assert_true(st.anonymous);
    assert_int_equal(acl_rule_count(a), 7);
    acl_free(a);
}

static void comments_blank_lines_and_crlf_are_ignored(void **state)
{
    (void)state;
    acl *a = parse_ok("# head comment\r\n"
                      "\r\n"
                      "   #indented comment\n"
                      "\t\n"
                      "company acme\t# tab before the comment\r\n"
                      "#devices\n"
                      "  devices #no space after the hash\r\n"
                      "    read config/%d/#   # trailing comment\r\n"
                      "    write telemetry/%d/#\r\n");
    assert_int_equal(acl_rule_count(a), 2);
    ALLOWED_BY(sub(a, device("acme", "gw-1"), "config/gw-1/#"), 8);
    acl_decision d = pub(a, device("acme", "gw-1"), "telemetry/gw-1/t");
    ALLOWED_BY(d, 9);
    assert_string_equal(d.rule, "write telemetry/%d/#"); /* no CR */
    acl_free(a);
}

static void a_hash_in_the_filter_position_is_the_filter_not_a_comment(void **state)
{
    (void)state;
    acl *a = parse_ok("company acme\n"
                      "  user alice\n"
                      "    deny write #   # the hash before this comment is the filter\n"
                      "    read #\n");
    acl_principal alice = user(a, "alice");
    DENIED_BY(pub(a, alice, "x/y"), 3);
    ALLOWED_BY(sub(a, alice, "#"), 4);
    acl_free(a);
}

static void an_empty_file_is_valid_and_denies_everything(void **state)
{
    (void)state;
    acl *a = parse_ok("");
    assert_int_equal(acl_rule_count(a), 0);
    DENIED(pub(a, device("acme", "gw-1"), "a"));
    DENIED(sub(a, anonymous("c"), "#"));
    const char *c;
    assert_false(acl_user_company(a, "alice", &c));
    acl_free(a);
}

/* Sections but no rule anywhere: checks deny (and form no pointer into the
 * empty rule array; the fuzzer found that under UBSan). */
static void sections_without_rules_deny_everything(void **state)
{
    (void)state;
    acl *a = parse_ok("company acme\n  devices\n  user alice\nplatform\n  user ingest\nanonymous\n");
    assert_int_equal(acl_rule_count(a), 0);
    DENIED(pub(a, device("acme", "gw-1"), "a"));
    DENIED(sub(a, anonymous("c"), "#"));
    acl_free(a);
}

static void a_file_without_final_newline_keeps_its_last_rule(void **state)
{
    (void)state;
    acl *a = parse_ok("anonymous\n  read x/#");
    ALLOWED_BY(rd(a, anonymous("c"), "x/y"), 2);
    acl_free(a);
}

static void rule_texts_are_kept_as_written_without_comments(void **state)
{
    (void)state;
    acl *a = parse_ok("anonymous\n  deny   read   x/#  # no\n  readwrite x/#\n");
    acl_decision d = rd(a, anonymous("c"), "x/1");
    DENIED_BY(d, 2);
    assert_string_equal(d.rule, "deny   read   x/#");
    assert_string_equal(d.file, "t.acl");
    assert_string_equal(d.reason, "rule");
    acl_free(a);
}

/* ---- errors ---------------------------------------------------------------- */

static void error_unknown_keyword(void **state)
{
    (void)state;
    expect_error("company acme\n  devices\n    reed config/#\n",
                 "t.acl:3: unknown keyword 'reed'");
    expect_error("Company acme\n", "t.acl:1: unknown keyword 'Company'");
    expect_error("company acme\n  group x\n", "t.acl:2: unknown keyword 'group'");
}

static void error_rule_outside_a_principal_section(void **state)
{
    (void)state;
    expect_error("read #\n", "t.acl:1: rule outside a principal section");
    expect_error("company acme\n  read #\n", "t.acl:2: rule outside a principal section");
    expect_error("platform\n  read #\n", "t.acl:2: rule outside a principal section");
    expect_error("company acme\n devices\n  read a\ncompany b\n  write a\n",
                 "t.acl:5: rule outside a principal section");
}

static void error_invalid_topic_filter(void **state)
{
    (void)state;
    expect_error("anonymous\n  read a/#/b\n", "t.acl:2: invalid topic filter 'a/#/b'");
    expect_error("anonymous\n  read a+\n", "t.acl:2: invalid topic filter 'a+'");
    expect_error("anonymous\n  read #x\n", "t.acl:2: invalid topic filter '#x'");
    expect_error("company a\n devices\n  read config/%d#\n",
                 "t.acl:3: invalid topic filter 'config/%d#'");
    expect_error("company a\n devices\n  read config/+%d/x\n",
                 "t.acl:3: invalid topic filter 'config/+%d/x'");
    expect_error("anonymous\n  read a/\xff\n", "t.acl:2: invalid topic filter");
    expect_error("anonymous\n  read a\x01\n", "t.acl:2: control character in topic filter");
}

static void error_unknown_or_incomplete_substitution(void **state)
{
    (void)state;
    expect_error("anonymous\n  read a/%x\n", "t.acl:2: unknown substitution '%x'");
    expect_error("anonymous\n  read a/%\n", "t.acl:2: '%' at the end of topic filter 'a/%'");
    expect_error("anonymous\n  read %D/a\n", "t.acl:2: unknown substitution '%D'");
}

static void error_substitution_the_section_cannot_have(void **state)
{
    (void)state;
    expect_error("company a\n devices\n  read x/%u\n",
                 "t.acl:3: %u in a device section: only users have a user name");
    expect_error("company a\n device d\n  read x/%u\n",
                 "t.acl:3: %u in a device section");
    expect_error("company a\n user u\n  read x/%d\n",
                 "t.acl:3: %d in a user section: only devices have a device id");
    expect_error("platform\n user u\n  read x/%d\n", "t.acl:3: %d in a user section");
    expect_error("anonymous\n  read x/%u\n", "t.acl:2: %u in a anonymous section");
    expect_error("anonymous\n  read x/%d\n", "t.acl:2: %d in a anonymous section");
}

static void error_company_name_not_usable_as_a_topic_level(void **state)
{
    (void)state;
    expect_error("company $sys\n", "t.acl:1: company name '$sys' is not usable as a topic "
                 "level: it starts with '$'");
    expect_error("company a/b\n", "t.acl:1: company name 'a/b' is not usable");
    expect_error("company a+b\n", "t.acl:1: company name 'a+b' is not usable");
    expect_error("company a#b\n", "t.acl:1: company name 'a#b' is not usable");
    expect_error("company a\x7f\n", "t.acl:1: company name 'a\x7f' is not usable as a topic "
                 "level: it contains a control character");
    expect_error("company \xc3\x28\n", "t.acl:1: company name '\xc3\x28' is not usable as a "
                 "topic level: it is not valid UTF-8");
    expect_error("company\n", "t.acl:1: missing company name");
    expect_error("company   # acme\n", "t.acl:1: missing company name");
}

static void error_device_id_not_usable_as_a_topic_level(void **state)
{
    (void)state;
    expect_error("company a\n  device gw/1\n", "t.acl:2: device id 'gw/1' can never be");
    expect_error("company a\n  device $gw\n", "t.acl:2: device id '$gw' can never be");
    expect_error("company a\n  device\n", "t.acl:2: missing device name");
}

static void error_bad_user_names(void **state)
{
    (void)state;
    expect_error("platform\n  user\n", "t.acl:2: missing user name");
    expect_error("platform\n  user #admin\n", "t.acl:2: missing user name");
    expect_error("platform\n  user a:b\n", "t.acl:2: user name 'a:b' contains ':'");
    expect_error("platform\n  user a\x01\n", "t.acl:2: user name 'a\x01' is not valid UTF-8 or "
                 "contains a control character");
}

static void error_a_user_declared_twice(void **state)
{
    (void)state;
    expect_error("company a\n  user alice\n  user alice\n",
                 "t.acl:3: user alice already declared at line 2 (a user belongs to exactly "
                 "one company or to platform)");
    expect_error("company a\n  user alice\ncompany b\n  user alice\n",
                 "t.acl:4: user alice already declared at line 2");
    expect_error("platform\n  user alice\ncompany b\n  user alice\n",
                 "t.acl:4: user alice already declared at line 2");
}

static void error_duplicate_sections(void **state)
{
    (void)state;
    expect_error("company a\ncompany b\ncompany a\n",
                 "t.acl:3: company a already declared at line 1");
    expect_error("platform\nplatform\n", "t.acl:2: platform already declared at line 1");
    expect_error("anonymous\nanonymous\n", "t.acl:2: anonymous already declared at line 1");
    expect_error("company a\n devices\n  read x\n devices\n",
                 "t.acl:4: devices of company a already declared at line 2");
    expect_error("company a\n device d\n device e\n device d\n",
                 "t.acl:4: device d of company a already declared at line 2");
}

static void the_same_device_id_in_two_companies_is_two_devices(void **state)
{
    (void)state;
    acl *a = parse_ok("company a\n device d\n  read x\ncompany b\n device d\n  read y\n");
    ALLOWED_BY(rd(a, device("a", "d"), "x"), 3);
    DENIED(rd(a, device("a", "d"), "y"));
    ALLOWED_BY(rd(a, device("b", "d"), "y"), 6);
    acl_free(a);
}

static void error_sections_in_the_wrong_place(void **state)
{
    (void)state;
    expect_error("devices\n", "t.acl:1: devices outside a company section");
    expect_error("platform\n  devices\n", "t.acl:2: devices outside a company section");
    expect_error("platform\n  device gw\n", "t.acl:2: device outside a company section");
    expect_error("anonymous\n  device gw\n", "t.acl:2: device outside a company section");
    expect_error("user alice\n", "t.acl:1: user outside a company or platform section");
    expect_error("anonymous\n  user alice\n", "t.acl:2: user outside a company or platform");
}

static void error_missing_filter_or_extra_words(void **state)
{
    (void)state;
    expect_error("anonymous\n  read\n", "t.acl:2: missing topic filter after 'read'");
    expect_error("anonymous\n  deny read\n", "t.acl:2: missing topic filter after 'read'");
    expect_error("anonymous\n  read a b\n", "t.acl:2: unexpected 'b' after the topic filter "
                 "(a comment starts with '#')");
    expect_error("anonymous\n  read # all topics\n", "t.acl:2: unexpected 'all'");
    expect_error("company a\n  devices x\n", "t.acl:2: unexpected 'x' after devices");
    expect_error("platform x\n", "t.acl:1: unexpected 'x' after platform");
    expect_error("company a b\n", "t.acl:1: unexpected 'b' after the name");
    expect_error("anonymous\n  deny write a b c d e f\n", "t.acl:2: unexpected 'b'");
}

static void error_nul_byte(void **state)
{
    (void)state;
    static const char text[] = "anonymous\n  read a\0b\n";
    acl *a = NULL;
    assert_int_equal(acl_parse(text, sizeof text - 1, "t.acl", &a, err, sizeof err),
                     ACL_E_SYNTAX);
    assert_null(a);
    assert_string_equal(err, "t.acl:2: NUL byte in the file");
}

static void the_first_error_in_file_order_is_reported(void **state)
{
    (void)state;
    expect_error("company a\n user u\n  read x\n  bogus\ncompany a\n",
                 "t.acl:4: unknown keyword 'bogus'");
}

static void a_missing_file_is_an_io_error(void **state)
{
    (void)state;
    acl *a = NULL;
    assert_int_equal(acl_load("/nonexistent/acl.conf", &a, err, sizeof err), ACL_E_IO);
    assert_null(a);
    assert_string_equal(err, "/nonexistent/acl.conf: No such file or directory");
    assert_int_equal(acl_load("/", &a, err, sizeof err), ACL_E_IO);
    assert_null(a);
}

static void a_loaded_file_reports_errors_with_its_path(void **state)
{
    (void)state;
    char path[] = "/tmp/gatemq-acl-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    const char text[] = "company acme\n  devices\n    raed x\n";
    assert_int_equal(write(fd, text, sizeof text - 1), (ssize_t)(sizeof text - 1));
    close(fd);
    acl *a = NULL;
    assert_int_equal(acl_load(path, &a, err, sizeof err), ACL_E_SYNTAX);
    char expect[128];
    snprintf(expect, sizeof expect, "%s:3: unknown keyword 'raed'", path);
    assert_int_equal(strncmp(err, expect, strlen(expect)), 0);
    unlink(path);
}

/* ---- principals and default deny ------------------------------------------- */

static void everything_is_denied_unless_a_rule_allows(void **state)
{
    (void)state;
    acl *a = parse_ok(SKETCH);
    acl_decision d = pub(a, device("acme", "gw-1"), "config/gw-1/x");
    DENIED(d);
    assert_string_equal(d.reason, "no rule matched: denied by default");
    DENIED(pub(a, device("initech", "gw-1"), "telemetry/gw-1/x")); /* unknown company */
    DENIED(rd(a, user(a, "ingest"), "acme/config/gw-1"));
    acl_free(a);
}

static void devices_rules_apply_to_every_device_of_the_company(void **state)
{
    (void)state;
    acl *a = parse_ok(SKETCH);
    for (int i = 0; i < 3; i++) {
        const char *id = (const char *[]){ "gw-1", "gw-0042", "sensor-9" }[i];
        char t[64];
        snprintf(t, sizeof t, "telemetry/%s/temp", id);
        ALLOWED_BY(pub(a, device("acme", id), t), 5);
        snprintf(t, sizeof t, "config/%s/#", id);
        ALLOWED_BY(sub(a, device("acme", id), t), 3);
    }
    DENIED(pub(a, device("acme", "gw-1"), "telemetry/gw-2/temp"));
    acl_free(a);
}

static void a_device_section_is_checked_before_devices(void **state)
{
    (void)state;
    acl *a = parse_ok("company acme\n"
                      "  devices\n"
                      "    read config/%d/#\n"        /* 3 */
                      "    read config/line-3/#\n"    /* 4 */
                      "  device gw-7\n"
                      "    deny config/line-3/#\n"    /* 6 */
                      "    read config/shared/#\n");  /* 7 */
    acl_principal gw7 = device("acme", "gw-7"), gw8 = device("acme", "gw-8");
    DENIED_BY(rd(a, gw7, "config/line-3/speed"), 6);
    ALLOWED_BY(rd(a, gw8, "config/line-3/speed"), 4);
    ALLOWED_BY(rd(a, gw7, "config/shared/x"), 7);
    DENIED(rd(a, gw8, "config/shared/x"));
    ALLOWED_BY(rd(a, gw7, "config/gw-7/x"), 3); /* then its company's devices */
    acl_free(a);
}

static void a_device_of_another_company_gets_nothing_from_these_rules(void **state)
{
    (void)state;
    acl *a = parse_ok("company acme\n  devices\n    readwrite #\n");
    DENIED(pub(a, device("globex", "gw-1"), "x"));
    ALLOWED_BY(pub(a, device("acme", "gw-1"), "x"), 3);
    acl_free(a);
}

static void an_incomplete_device_principal_is_denied(void **state)
{
    (void)state;
    acl *a = parse_ok("company acme\n  devices\n    readwrite #\n");
    DENIED(pub(a, device(NULL, "gw-1"), "x"));
    DENIED(pub(a, device("acme", NULL), "x"));
    acl_free(a);
}

static void a_user_gets_its_section_and_company(void **state)
{
    (void)state;
    acl *a = parse_ok(SKETCH);
    const char *company = NULL;
    assert_true(acl_user_company(a, "alice", &company));
    assert_string_equal(company, "acme");
    ALLOWED_BY(pub(a, user(a, "alice"), "anything/at/all"), 9);
    ALLOWED_BY(sub(a, user(a, "alice"), "#"), 9);
    assert_false(acl_user_company(a, "mallory", &company));
    acl_free(a);
}

static void an_unknown_user_is_denied(void **state)
{
    (void)state;
    acl *a = parse_ok(SKETCH);
    acl_principal p = { .kind = ACL_USER, .company = "acme", .username = "mallory" };
    acl_decision d = acl_check_publish(a, &p, "a", 1);
    DENIED(d);
    assert_string_equal(d.reason, "user not in the ACL file: denied");
    p.username = NULL;
    DENIED(acl_check_publish(a, &p, "a", 1));
    acl_free(a);
}

static void a_user_whose_company_differs_from_the_file_is_denied(void **state)
{
    (void)state;
    acl *a = parse_ok(SKETCH);
    acl_principal alice = { .kind = ACL_USER, .company = "globex", .username = "alice" };
    DENIED(acl_check_publish(a, &alice, "a", 1));
    alice.company = NULL; /* as if a platform user */
    DENIED(acl_check_publish(a, &alice, "a", 1));
    acl_principal ingest = { .kind = ACL_USER, .company = "acme", .username = "ingest" };
    DENIED(acl_check_read(a, &ingest, "acme/telemetry/x", 16));
    acl_free(a);
}

static void a_platform_user_works_on_internal_topics(void **state)
{
    (void)state;
    acl *a = parse_ok(SKETCH);
    acl_principal ingest = user(a, "ingest");
    assert_null(ingest.company);
    ALLOWED_BY(sub(a, ingest, "+/telemetry/#"), 12);
    ALLOWED_BY(sub(a, ingest, "acme/telemetry/#"), 12);
    ALLOWED_BY(sub(a, ingest, "globex/telemetry/gw-1/temp"), 12);
    ALLOWED_BY(rd(a, ingest, "acme/telemetry/gw-1/temp"), 12);
    DENIED(sub(a, ingest, "#"));
    DENIED(sub(a, ingest, "acme/#"));
    DENIED(rd(a, ingest, "acme/config/gw-1"));
    DENIED(pub(a, ingest, "acme/telemetry/gw-1/temp"));
    acl_free(a);
}

static void anonymous_clients_get_the_anonymous_section_only(void **state)
{
    (void)state;
    acl *a = parse_ok(SKETCH);
    ALLOWED_BY(pub(a, anonymous("c1"), "test/a"), 14);
    ALLOWED_BY(sub(a, anonymous(NULL), "test/#"), 14);
    DENIED(pub(a, anonymous("c1"), "acme/telemetry/x"));
    acl_free(a);
    a = parse_ok("company acme\n devices\n  readwrite #\n");
    DENIED(pub(a, anonymous("c1"), "test/a"));
    acl_free(a);
}

/* ---- actions and order ------------------------------------------------------ */

static void each_action_concerns_only_its_operations(void **state)
{
    (void)state;
    acl *a = parse_ok("anonymous\n"
                      "  read r/#\n"       /* 2 */
                      "  write w/#\n"      /* 3 */
                      "  readwrite rw/#\n" /* 4 */
                      "  write #\n");      /* 5 */
    acl_principal p = anonymous("c");
    ALLOWED_BY(rd(a, p, "r/1"), 2);
    ALLOWED_BY(pub(a, p, "r/1"), 5); /* the read rule does not decide a write */
    ALLOWED_BY(pub(a, p, "w/1"), 3);
    DENIED(rd(a, p, "w/1"));         /* nor a write rule a read */
    ALLOWED_BY(rd(a, p, "rw/1"), 4);
    ALLOWED_BY(pub(a, p, "rw/1"), 4);
    acl_free(a);
}

static void the_first_matching_rule_decides(void **state)
{
    (void)state;
    acl *a = parse_ok("anonymous\n"
                      "  deny   secret/#\n"     /* 2 */
                      "  readwrite #\n"         /* 3 */
                      "  deny   public/#\n");   /* 4: never reached */
    acl_principal p = anonymous("c");
    DENIED_BY(pub(a, p, "secret/x"), 2);
    DENIED_BY(rd(a, p, "secret"), 2); /* "secret/#" matches "secret" */
    ALLOWED_BY(pub(a, p, "public/x"), 3);
    ALLOWED_BY(rd(a, p, "secretary"), 3);
    acl_free(a);
}

static void deny_read_and_deny_write_forbid_one_direction(void **state)
{
    (void)state;
    acl *a = parse_ok("anonymous\n"
                      "  deny read  cmd/#\n"         /* 2 */
                      "  deny write log/#\n"         /* 3 */
                      "  deny readwrite read\n"      /* 4: the topic "read" */
                      "  readwrite #\n");            /* 5 */
    acl_principal p = anonymous("c");
    DENIED_BY(rd(a, p, "cmd/x"), 2);
    ALLOWED_BY(pub(a, p, "cmd/x"), 5);
    DENIED_BY(pub(a, p, "log/x"), 3);
    ALLOWED_BY(rd(a, p, "log/x"), 5);
    DENIED_BY(pub(a, p, "read"), 4);
    DENIED_BY(rd(a, p, "read"), 4);
    acl_free(a);
}

static void wildcard_rules_do_not_match_dollar_topics(void **state)
{
    (void)state;
    acl *a = parse_ok("platform\n user mon\n  read $SYS/#\n  readwrite #\n  read +/x\n");
    acl_principal mon = user(a, "mon");
    DENIED(pub(a, mon, "$SYS/broker/uptime"));
    ALLOWED_BY(rd(a, mon, "$SYS/broker/uptime"), 3);
    ALLOWED_BY(sub(a, mon, "$SYS/#"), 3);
    DENIED(rd(a, mon, "$x/x"));
    acl_free(a);
}

/* ---- substitutions --------------------------------------------------------- */

static void substitutions_expand_to_the_principals_values(void **state)
{
    (void)state;
    acl *a = parse_ok("company acme\n"
                      "  devices\n"
                      "    write t/%d/%c\n"          /* 3 */
                      "    read  cfg/dev-%d/#\n"     /* 4: inside a level */
                      "  user op\n"
                      "    write u/%u/%c/#\n"        /* 6 */
                      "anonymous\n"
                      "    write a/%c\n");           /* 8 */
    acl_principal gw = device("acme", "gw-1");
    ALLOWED_BY(pub(a, gw, "t/gw-1/gw-1"), 3);
    DENIED(pub(a, gw, "t/gw-2/gw-1"));
    DENIED(pub(a, gw, "t/gw-1/gw-"));
    ALLOWED_BY(rd(a, gw, "cfg/dev-gw-1/x"), 4);
    DENIED(rd(a, gw, "cfg/dev-gw-1x/x"));
    DENIED(rd(a, gw, "cfg/gw-1/x"));
    ALLOWED_BY(pub(a, user(a, "op"), "u/op/cli-1/z"), 6);
    DENIED(pub(a, user(a, "op"), "u/op/cli-2/z"));
    ALLOWED_BY(pub(a, anonymous("c9"), "a/c9"), 8);
    DENIED(pub(a, anonymous("c9"), "a/c8"));
    acl_free(a);
}

static void percent_percent_is_a_literal_percent(void **state)
{
    (void)state;
    acl *a = parse_ok("anonymous\n  read a/100%%/%c\n");
    ALLOWED_BY(rd(a, anonymous("x"), "a/100%/x"), 2);
    DENIED(rd(a, anonymous("x"), "a/100%%/x"));
    acl_free(a);
}

/* Values chosen to widen a rule if they were pasted in: each must leave
 * the client with no more than a well-behaved value would give. */
static void hostile_substituted_values_never_widen_access(void **state)
{
    (void)state;
    acl *a = parse_ok("platform\n"
                      "  user a/+\n"
                      "    readwrite home/%u/#\n"        /* 3 */
                      "  user $SYS\n"
                      "    readwrite %u/#\n"             /* 5 */
                      "anonymous\n"
                      "    readwrite c/%c/#\n");         /* 7 */
    acl_principal u = user(a, "a/+");
    DENIED(sub(a, u, "home/a/+/#"));
    DENIED(sub(a, u, "home/a/x/#"));
    DENIED(pub(a, u, "home/a/x/y"));
    DENIED(rd(a, user(a, "$SYS"), "$SYS/broker/uptime"));
    static const char *bad[] = { "#", "+", "", "x/y", "$SYS", "a#", "b+", NULL };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        acl_principal p = anonymous(bad[i]);
        DENIED(sub(a, p, "c/#"));
        DENIED(sub(a, p, "c/+/#"));
        DENIED(pub(a, p, "c/x/y"));
        DENIED(rd(a, p, "c/x/y"));
        DENIED(pub(a, p, "c//y"));
    }
    char *longid = malloc(70000);
    assert_non_null(longid);
    memset(longid, 'x', 69999);
    longid[69999] = '\0';
    DENIED(pub(a, anonymous(longid), "c/xxx"));
    free(longid);
    ALLOWED_BY(pub(a, anonymous("ok"), "c/ok/y"), 7);
    acl_free(a);
}

static void a_deny_rule_with_an_unusable_value_denies(void **state)
{
    (void)state;
    acl *a = parse_ok("anonymous\n"
                      "  deny private/%c/#\n"      /* 2 */
                      "  readwrite #\n");          /* 3 */
    DENIED_BY(pub(a, anonymous("a/b"), "public/x"), 2);
    DENIED_BY(rd(a, anonymous("#"), "public/x"), 2);
    DENIED_BY(sub(a, anonymous(""), "public/#"), 2);
    ALLOWED_BY(pub(a, anonymous("ok"), "public/x"), 3);
    DENIED_BY(pub(a, anonymous("ok"), "private/ok/x"), 2);
    acl_free(a);
}

/* ---- covers / overlaps ------------------------------------------------------- */

static const struct { const char *outer, *inner; bool covers; } COVERS[] = {
    { "config/gw-1/#", "config/gw-1/#", true },
    { "config/gw-1/#", "config/gw-1/a", true },
    { "config/gw-1/#", "config/gw-1/+/b", true },
    { "config/gw-1/#", "config/gw-1/+", true },
    { "config/gw-1/#", "config/gw-1", true }, /* '#' matches the parent level */
    { "config/gw-1/#", "config/#", false },
    { "config/gw-1/#", "+/gw-1/#", false },
    { "config/gw-1/#", "#", false },
    { "config/gw-1/#", "config/+/a", false },
    { "config/gw-1/#", "config", false },
    { "#", "#", true },
    { "#", "a/+/#", true },
    { "#", "/", true },
    { "#", "$SYS/#", false },
    { "#", "$SYS", false },
    { "+/#", "$SYS/x", false },
    { "+/#", "+/x", true },
    { "+/#", "+", true },
    { "+/#", "#", false },
    { "$SYS/#", "$SYS/a/b", true },
    { "$SYS/#", "#", false },
    { "+", "a", true },
    { "+", "+", true },
    { "+", "a/b", false },
    { "+", "#", false },
    { "+", "$a", false },
    { "$a/+", "$a/b", true },
    { "a/+", "a/#", false },
    { "a/+", "a/+", true },
    { "a/+", "a", false },
    { "a/+", "a/", true },
    { "a/+/#", "a", false },
    { "a/+/#", "a/b", true },
    { "a/+/#", "a/+", true },
    { "a", "a", true },
    { "a", "a/b", false },
    { "a", "a/#", false },
    { "a", "+", false },
    { "a/b", "a", false },
    { "a/+/b", "a//b", true },
    { "a//b", "a/+/b", false },
    { "+/+", "/x", true },
    { "/#", "/a", true },
    { "a/#", "a/#", true },
    { "a/#", "b/#", false },
};

static void covers_truth_table(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof COVERS / sizeof *COVERS; i++)
        if (covers(COVERS[i].outer, COVERS[i].inner) != COVERS[i].covers)
            fail_msg("covers(%s, %s) should be %d", COVERS[i].outer, COVERS[i].inner,
                     COVERS[i].covers);
    assert_false(covers("a/#/b", "a"));
    assert_false(covers("#", "a+"));
}

static const struct { const char *a, *b; bool overlap; } OVERLAPS[] = {
    { "a/#", "a", true },
    { "a/+", "a/#", true },
    { "a/+", "b/#", false },
    { "+/x", "a/+", true },
    { "#", "$SYS/#", false },
    { "+/#", "$SYS/x", false },
    { "$SYS/#", "$SYS/+", true },
    { "a/b", "a/c", false },
    { "a", "a/+", false },
    { "a/+", "a/+/c", false },
    { "a/+/#", "a", false },
    { "a/#", "a/b/c", true },
    { "#", "#", true },
    { "+", "+", true },
    { "+", "#", true },
    { "a/b/c", "+/+/+", true },
    { "a/b", "+/+/+", false },
    { "x/#", "+/y", true },
};

static void overlaps_truth_table_and_symmetry(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof OVERLAPS / sizeof *OVERLAPS; i++) {
        if (overlaps(OVERLAPS[i].a, OVERLAPS[i].b) != OVERLAPS[i].overlap ||
            overlaps(OVERLAPS[i].b, OVERLAPS[i].a) != OVERLAPS[i].overlap)
            fail_msg("overlaps(%s, %s) should be %d", OVERLAPS[i].a, OVERLAPS[i].b,
                     OVERLAPS[i].overlap);
    }
}

static const char *FILTERS[] = {
    "#", "+", "+/#", "+/+", "a", "a/#", "a/+", "a/b", "a/+/c", "a/b/#", "+/b/#",
    "$SYS/#", "$SYS/+", "+/+/+", "/", "/#", "a//c", "a/+/#", "$a", "b/+", "a/b/c",
};
static const char *TOPICS[] = {
    "a", "b", "a/b", "a/c", "a/b/c", "a/x/c", "a//c", "/", "/a", "$SYS", "$SYS/x",
    "$SYS/x/y", "$a", "b/b", "b/b/c", "a/b/c/d", "x/y/z", "a/",
};

static void covers_and_overlaps_agree_with_mqtt_topic_match_on_topic_names(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof FILTERS / sizeof *FILTERS; i++)
        for (size_t j = 0; j < sizeof TOPICS / sizeof *TOPICS; j++) {
            const char *f = FILTERS[i], *t = TOPICS[j];
            bool m = mqtt_topic_match((const uint8_t *)f, strlen(f), (const uint8_t *)t,
                                      strlen(t));
            if (covers(f, t) != m || overlaps(f, t) != m)
                fail_msg("%s vs %s: match %d covers %d overlaps %d", f, t, m, covers(f, t),
                         overlaps(f, t));
        }
}

/* covers(o, i) must mean: every topic of the universe i matches, o matches;
 * overlaps: some topic of the universe matches both. Checked on a universe
 * rich enough to contain a witness for each pair here. */
static void covers_and_overlaps_agree_with_brute_force_over_topics(void **state)
{
    (void)state;
    size_t nf = sizeof FILTERS / sizeof *FILTERS, nt = sizeof TOPICS / sizeof *TOPICS;
    for (size_t i = 0; i < nf; i++)
        for (size_t j = 0; j < nf; j++) {
            const char *o = FILTERS[i], *in = FILTERS[j];
            bool all = true, some = false;
            for (size_t k = 0; k < nt; k++) {
                const char *t = TOPICS[k];
                bool mi = mqtt_topic_match((const uint8_t *)in, strlen(in),
                                           (const uint8_t *)t, strlen(t));
                bool mo = mqtt_topic_match((const uint8_t *)o, strlen(o),
                                           (const uint8_t *)t, strlen(t));
                if (mi && !mo)
                    all = false;
                if (mi && mo)
                    some = true;
            }
            /* covers may only be true where brute force agrees; the universe
             * is finite, so "all" can be true where covers is rightly false. */
            if (covers(o, in) && !all)
                fail_msg("covers(%s, %s) but a topic of the second escapes the first", o, in);
            if (some && !overlaps(o, in))
                fail_msg("%s and %s share a topic but overlaps() says no", o, in);
        }
}

/* ---- subscribe ---------------------------------------------------------------- */

static void subscribe_is_allowed_when_a_read_rule_covers_the_filter(void **state)
{
    (void)state;
    acl *a = parse_ok(SKETCH);
    acl_principal gw = device("acme", "gw-1");
    ALLOWED_BY(sub(a, gw, "config/gw-1/#"), 3);
    ALLOWED_BY(sub(a, gw, "config/gw-1/a"), 3);
    ALLOWED_BY(sub(a, gw, "config/gw-1/+/b"), 3);
    ALLOWED_BY(sub(a, gw, "config/gw-1"), 3);
    acl_free(a);
}

static void subscribe_is_refused_when_the_filter_reaches_beyond_the_rule(void **state)
{
    (void)state;
    acl *a = parse_ok(SKETCH);
    acl_principal gw = device("acme", "gw-1");
    acl_decision d = sub(a, gw, "config/#");
    DENIED(d);
    assert_string_equal(d.reason, "no single rule covers the whole filter: denied by default");
    DENIED(sub(a, gw, "+/gw-1/#"));
    DENIED(sub(a, gw, "#"));
    d = sub(a, gw, "telemetry/gw-1/#"); /* a write rule only */
    DENIED(d);
    assert_string_equal(d.reason, "no rule matched: denied by default");
    acl_free(a);
}

static void subscribe_is_refused_when_an_earlier_deny_overlaps(void **state)
{
    (void)state;
    acl *a = parse_ok("anonymous\n"
                      "  deny read config/secret/#\n"   /* 2 */
                      "  read config/#\n");             /* 3 */
    acl_principal p = anonymous("c");
    DENIED_BY(sub(a, p, "config/#"), 2);
    DENIED_BY(sub(a, p, "config/+/x"), 2);
    DENIED_BY(sub(a, p, "+/secret"), 2);
    ALLOWED_BY(sub(a, p, "config/public/#"), 3); /* disjoint from the deny */
    acl_free(a);
}

static void subscribe_plus_level_overlapping_a_deny_parent_is_refused(void **state)
{
    (void)state;
    /* "config/secret/#" also matches "config/secret", which "config/+" can match. */
    acl *a = parse_ok("anonymous\n  deny read config/secret/x\n  read config/#\n");
    acl_principal p = anonymous("c");
    ALLOWED_BY(sub(a, p, "config/+"), 3);
    DENIED_BY(sub(a, p, "config/+/x"), 2);
    acl_free(a);
    a = parse_ok("anonymous\n  deny read config/secret/#\n  read config/#\n");
    DENIED_BY(sub(a, p, "config/+"), 2);
    acl_free(a);
}

static void subscribe_allowed_by_an_earlier_covering_rule_ignores_later_denies(void **state)
{
    (void)state;
    acl *a = parse_ok("anonymous\n  read a/b/#\n  deny a/#\n  read #\n");
    acl_principal p = anonymous("c");
    ALLOWED_BY(sub(a, p, "a/b/#"), 2);
    DENIED_BY(sub(a, p, "a/#"), 3);
    ALLOWED_BY(sub(a, p, "b/#"), 4);
    acl_free(a);
}

static void subscribe_needs_one_rule_to_cover_the_whole_filter(void **state)
{
    (void)state;
    /* "a" and "a/+/#" together cover "a/#", but no single rule does:
     * refusing is the documented, conservative answer. */
    acl *a = parse_ok("anonymous\n  read a\n  read a/+/#\n");
    acl_principal p = anonymous("c");
    DENIED(sub(a, p, "a/#"));
    ALLOWED_BY(sub(a, p, "a/x/#"), 3);
    acl_free(a);
}

/* Property: an allowed subscription never delivers a topic that read
 * refuses, over random rule lists built from a small vocabulary. */
static void an_allowed_subscription_only_matches_readable_topics(void **state)
{
    (void)state;
    static const char *vocab[] = { "a/#", "a/+", "a/b", "+/b", "a/b/#", "#", "+/+/c",
                                   "b/#", "a", "a/+/c" };
    static const char *acts[] = { "read", "deny", "deny read", "write" };
    uint32_t seed = 12345;
    size_t nf = sizeof FILTERS / sizeof *FILTERS, nt = sizeof TOPICS / sizeof *TOPICS;
    for (int round = 0; round < 300; round++) {
        char text[1024] = "anonymous\n";
        int nrules = 1 + round % 5;
        for (int r = 0; r < nrules; r++) {
            seed = seed * 1103515245u + 12345u;
            const char *act = acts[(seed >> 16) % 4];
            seed = seed * 1103515245u + 12345u;
            const char *f = vocab[(seed >> 16) % (sizeof vocab / sizeof *vocab)];
            size_t n = strlen(text);
            snprintf(text + n, sizeof text - n, "  %s %s\n", act, f);
        }
        acl *a = parse_ok(text);
        acl_principal p = anonymous("c");
        for (size_t i = 0; i < nf; i++) {
            if (!sub(a, p, FILTERS[i]).allow)
                continue;
            for (size_t k = 0; k < nt; k++) {
                const char *t = TOPICS[k];
                if (mqtt_topic_match((const uint8_t *)FILTERS[i], strlen(FILTERS[i]),
                                     (const uint8_t *)t, strlen(t)) &&
                    !rd(a, p, t).allow)
                    fail_msg("rules:\n%ssubscribe %s allowed but read %s denied", text,
                             FILTERS[i], t);
            }
        }
        acl_free(a);
    }
}

/* ---- read at delivery, invalid input ----------------------------------------- */

static void read_at_delivery_is_decided_by_the_first_matching_rule(void **state)
{
    (void)state;
    acl *a = parse_ok("company acme\n"
                      "  user op\n"
                      "    deny read telemetry/+/raw/#\n"   /* 3 */
                      "    read telemetry/#\n");            /* 4 */
    acl_principal op = user(a, "op");
    /* The subscription "telemetry/#" is refused (the deny overlaps), but a
     * narrower one is allowed; read decides each delivered message. */
    DENIED_BY(sub(a, op, "telemetry/#"), 3);
    ALLOWED_BY(sub(a, op, "telemetry/gw-1/temp"), 4);
    ALLOWED_BY(rd(a, op, "telemetry/gw-1/temp"), 4);
    DENIED_BY(rd(a, op, "telemetry/gw-1/raw/x"), 3);
    DENIED_BY(rd(a, op, "telemetry/gw-1/raw"), 3);
    DENIED(rd(a, op, "config/gw-1"));
    acl_free(a);
}

/* "l0/l1/.../l<n-1>", with the last level replaced by last when given. */
static char *levels(int n, const char *each, const char *last)
{
    size_t cap = (size_t)n * 8 + 16, len = 0;
    char *t = malloc(cap);
    assert_non_null(t);
    for (int i = 0; i < n; i++) {
        const char *sep = i ? "/" : "";
        if (i == n - 1 && last)
            len += (size_t)snprintf(t + len, cap - len, "%s%s", sep, last);
        else if (each)
            len += (size_t)snprintf(t + len, cap - len, "%s%s", sep, each);
        else
            len += (size_t)snprintf(t + len, cap - len, "%sl%d", sep, i);
    }
    return t;
}

/* Publish and read checks split a topic name into levels once (up to a
 * fixed depth) and take the general path for deeper ones: at every depth,
 * around that bound too, a rule must match exactly the topics MQTT says
 * its filter matches, for allowing and denying rules alike. */
static void topic_checks_agree_with_mqtt_topic_match_at_every_depth(void **state)
{
    (void)state;
    static const int depths[] = { 1, 2, 31, 32, 33, 40 };
    enum { ND = sizeof depths / sizeof *depths };
    char *deep_topics[ND], *deep_filters[ND * 6];
    size_t nf = 0;
    for (int i = 0; i < ND; i++) {
        int d = depths[i];
        deep_topics[i] = levels(d, NULL, NULL);
        deep_filters[nf++] = levels(d, NULL, NULL);          /* exact */
        deep_filters[nf++] = levels(d, NULL, "#");           /* its parent and below */
        deep_filters[nf++] = levels(d, "+", NULL);           /* "+/.../+/l<d-1>" */
        deep_filters[nf++] = levels(d, NULL, "other");       /* differs in the last level */
        deep_filters[nf++] = levels(d + 1, NULL, "#");       /* matches the topic itself */
        char *near = levels(d, NULL, NULL);                  /* its last byte differs */
        near[strlen(near) - 1]++;
        deep_filters[nf++] = near;
    }
    const char *topics[64], *filters[64];
    size_t nt = 0, nfl = 0;
    for (size_t i = 0; i < sizeof TOPICS / sizeof *TOPICS; i++)
        topics[nt++] = TOPICS[i];
    for (int i = 0; i < ND; i++)
        topics[nt++] = deep_topics[i];
    for (size_t i = 0; i < sizeof FILTERS / sizeof *FILTERS; i++)
        filters[nfl++] = FILTERS[i];
    for (size_t i = 0; i < nf; i++)
        filters[nfl++] = deep_filters[i];

    acl_principal p = anonymous("l0");
    char text[1024];
    for (size_t i = 0; i < nfl; i++) {
        const char *f = filters[i];
        snprintf(text, sizeof text, "anonymous\n  readwrite %s\n", f);
        acl *allow = parse_ok(text);
        snprintf(text, sizeof text, "anonymous\n  deny %s\n  readwrite #\n", f);
        acl *deny = parse_ok(text);
        for (size_t j = 0; j < nt; j++) {
            const char *t = topics[j];
            bool m = mqtt_topic_match((const uint8_t *)f, strlen(f), (const uint8_t *)t,
                                      strlen(t));
            bool plain = t[0] != '$'; /* "readwrite #" does not reach $-topics */
            if (pub(allow, p, t).allow != m || rd(allow, p, t).allow != m)
                fail_msg("readwrite %s and topic %s: match %d", f, t, m);
            if (pub(deny, p, t).allow != (!m && plain) || rd(deny, p, t).allow != (!m && plain))
                fail_msg("deny %s then readwrite #, topic %s: match %d", f, t, m);
        }
        acl_free(allow);
        acl_free(deny);
    }
    /* A substituted first level, on both paths. */
    acl *a = parse_ok("anonymous\n  readwrite %c/#\n");
    for (size_t j = 0; j < nt; j++) {
        const char *t = topics[j];
        bool m = strncmp(t, "l0/", 3) == 0 || strcmp(t, "l0") == 0;
        if (pub(a, p, t).allow != m)
            fail_msg("readwrite %%c/# with client id l0 and topic %s: expected %d", t, m);
    }
    acl_free(a);
    for (int i = 0; i < ND; i++)
        free(deep_topics[i]);
    for (size_t i = 0; i < nf; i++)
        free(deep_filters[i]);
}

static void invalid_topics_and_filters_are_denied(void **state)
{
    (void)state;
    acl *a = parse_ok("anonymous\n  readwrite #\n");
    acl_principal p = anonymous("c");
    acl_decision d = pub(a, p, "a/+");
    DENIED(d);
    assert_string_equal(d.reason, "invalid topic name: denied");
    DENIED(rd(a, p, "a/#"));
    DENIED(pub(a, p, ""));
    d = sub(a, p, "a/#/b");
    DENIED(d);
    assert_string_equal(d.reason, "invalid topic filter: denied");
    DENIED(sub(a, p, "a\xff"));
    ALLOWED_BY(sub(a, p, "a/#"), 2);
    acl_free(a);
}

static void checks_never_allocate(void **state)
{
    (void)state;
    acl *a = parse_ok(SKETCH);
    gmq_alloc_fail_at(0);
    (void)pub(a, device("acme", "gw-0042"), "telemetry/gw-0042/t");
    (void)sub(a, device("acme", "gw-0042"), "config/line-3/#");
    (void)rd(a, user(a, "ingest"), "acme/telemetry/x");
    (void)sub(a, anonymous("c"), "#");
    assert_int_equal(gmq_alloc_count(), 0);
    acl_free(a);
}

/* ---- scale ----------------------------------------------------------------------- */

#define SCALE_COMPANIES 1000

/* 1000 companies x 10 rules + 1 platform rule: 10001 rules. Company i:
 * line 1 + 15 i is its `company` line. */
static char *ten_thousand_rules(void)
{
    size_t cap = (size_t)SCALE_COMPANIES * 400 + 256, n = 0;
    char *t = malloc(cap);
    assert_non_null(t);
    for (int i = 0; i < SCALE_COMPANIES; i++)
        n += (size_t)snprintf(t + n, cap - n,
                              "company c%04d\n"                      /* +0 */
                              "  devices\n"                          /* +1 */
                              "    deny write telemetry/%%d/locked/#\n"
                              "    read config/%%d/#\n"              /* +3 */
                              "    read firmware/%%d/#\n"
                              "    write telemetry/%%d/#\n"          /* +5 */
                              "    write status/%%d\n"
                              "  device gw-1\n"
                              "    read config/line-%d/#\n"          /* +8 */
                              "  device gw-2\n"
                              "    read config/line-%d/#\n"          /* +10 */
                              "  user op-%04d\n"
                              "    read telemetry/#\n"               /* +12 */
                              "    readwrite config/#\n"             /* +13 */
                              "    read status/#\n",                 /* +14 */
                              i, i, i + 1, i);
    n += (size_t)snprintf(t + n, cap - n, "platform\n  user ingest\n    read +/telemetry/#\n");
    assert_true(n < cap);
    return t;
}

static void ten_thousand_rules_load_and_check_correctly_and_fast(void **state)
{
    (void)state;
    char *text = ten_thousand_rules();
    double t0 = now_ns();
    acl *a = parse_ok(text);
    double load_ms = (now_ns() - t0) / 1e6;
    assert_int_equal(acl_rule_count(a), SCALE_COMPANIES * 10 + 1);

    int base = 1 + 15 * 500;
    acl_principal gw = device("c0500", "gw-1"), gw9 = device("c0500", "gw-9");
    ALLOWED_BY(pub(a, gw, "telemetry/gw-1/temp"), base + 5);
    DENIED_BY(pub(a, gw, "telemetry/gw-1/locked/x"), base + 2);
    ALLOWED_BY(sub(a, gw, "config/line-500/#"), base + 8);
    DENIED(sub(a, gw9, "config/line-500/#"));
    DENIED(sub(a, gw, "config/line-501/#"));
    ALLOWED_BY(sub(a, gw9, "config/gw-9/#"), base + 3);
    acl_principal op = user(a, "op-0999");
    assert_string_equal(op.company, "c0999");
    ALLOWED_BY(pub(a, op, "config/gw-1/x"), 1 + 15 * 999 + 13);
    ALLOWED_BY(rd(a, user(a, "ingest"), "c0001/telemetry/gw-1/t"), 1 + 15 * SCALE_COMPANIES + 2);

    const int iters = 200000;
    const char *topic = "telemetry/gw-1/temp";
    size_t tl = strlen(topic);
    bool ok = true;
    t0 = now_ns();
    for (int i = 0; i < iters; i++)
        ok &= acl_check_publish(a, &gw, topic, tl).allow;
    double pub_ns = (now_ns() - t0) / iters;
    assert_true(ok);
    const char *filter = "config/line-500/#";
    size_t fl = strlen(filter);
    t0 = now_ns();
    for (int i = 0; i < iters; i++)
        ok &= acl_check_subscribe(a, &gw, filter, fl).allow;
    double sub_ns = (now_ns() - t0) / iters;
    assert_true(ok);
    const char *miss = "nothing/matches/here";
    size_t ml = strlen(miss);
    t0 = now_ns();
    for (int i = 0; i < iters; i++)
        ok &= !acl_check_read(a, &gw, miss, ml).allow;
    double miss_ns = (now_ns() - t0) / iters;
    assert_true(ok);
    print_message("    10001 rules: load %.1f ms; publish %.0f ns, subscribe %.0f ns, "
                  "read miss (all 7 rules) %.0f ns per check\n", load_ms, pub_ns, sub_ns,
                  miss_ns);
    acl_free(a);
    free(text);
}

/* Worst case: one principal with 10000 rules, the match in the last one. */
static void one_section_with_ten_thousand_rules_still_works(void **state)
{
    (void)state;
    size_t cap = 10000 * 40 + 64, n = 0;
    char *t = malloc(cap);
    assert_non_null(t);
    n += (size_t)snprintf(t + n, cap - n, "anonymous\n");
    for (int i = 0; i < 10000; i++)
        n += (size_t)snprintf(t + n, cap - n, "  read area-%d/+/x/#\n", i);
    acl *a = parse_ok(t);
    acl_principal p = anonymous("c");
    ALLOWED_BY(rd(a, p, "area-9999/q/x/y"), 10001);
    const int iters = 2000;
    double t0 = now_ns();
    bool ok = true;
    for (int i = 0; i < iters; i++)
        ok &= acl_check_read(a, &p, "area-9999/q/x/y", 15).allow;
    assert_true(ok);
    print_message("    one section of 10000 rules, last one matches: %.0f ns per check\n",
                  (now_ns() - t0) / iters);
    acl_free(a);
    free(t);
}

/* ---- allocation failure ------------------------------------------------------------ */

static void every_allocation_failure_in_parse_is_reported_without_a_leak(void **state)
{
    (void)state;
    unsigned long n;
    for (n = 1; n < 10000; n++) {
        acl *a = NULL;
        gmq_alloc_fail_at(n);
        int rc = acl_parse(SKETCH, strlen(SKETCH), "t.acl", &a, err, sizeof err);
        gmq_alloc_fail_at(0);
        if (rc == ACL_OK) {
            assert_int_equal(acl_rule_count(a), 7);
            acl_free(a);
            break;
        }
        assert_int_equal(rc, ACL_E_NOMEM);
        assert_null(a);
        assert_string_equal(err, "t.acl: out of memory");
    }
    assert_true(n > 10); /* the sweep did fail allocations of every kind */
    assert_true(n < 10000);
}

static void every_allocation_failure_in_load_is_reported_without_a_leak(void **state)
{
    (void)state;
    unsigned long n;
    for (n = 1; n < 10000; n++) {
        acl *a = NULL;
        gmq_alloc_fail_at(n);
        int rc = acl_load("conf/acl.conf", &a, err, sizeof err);
        gmq_alloc_fail_at(0);
        if (rc == ACL_OK) {
            acl_free(a);
            break;
        }
        assert_int_equal(rc, ACL_E_NOMEM);
        assert_null(a);
    }
    assert_true(n > 10 && n < 10000);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(the_example_file_parses_and_matches_the_dev_certificates),
        cmocka_unit_test(the_design_sketch_parses_with_trailing_comments),
        cmocka_unit_test(comments_blank_lines_and_crlf_are_ignored),
        cmocka_unit_test(a_hash_in_the_filter_position_is_the_filter_not_a_comment),
        cmocka_unit_test(an_empty_file_is_valid_and_denies_everything),
        cmocka_unit_test(sections_without_rules_deny_everything),
        cmocka_unit_test(a_file_without_final_newline_keeps_its_last_rule),
        cmocka_unit_test(rule_texts_are_kept_as_written_without_comments),
        cmocka_unit_test(error_unknown_keyword),
        cmocka_unit_test(error_rule_outside_a_principal_section),
        cmocka_unit_test(error_invalid_topic_filter),
        cmocka_unit_test(error_unknown_or_incomplete_substitution),
        cmocka_unit_test(error_substitution_the_section_cannot_have),
        cmocka_unit_test(error_company_name_not_usable_as_a_topic_level),
        cmocka_unit_test(error_device_id_not_usable_as_a_topic_level),
        cmocka_unit_test(error_bad_user_names),
        cmocka_unit_test(error_a_user_declared_twice),
        cmocka_unit_test(error_duplicate_sections),
        cmocka_unit_test(the_same_device_id_in_two_companies_is_two_devices),
        cmocka_unit_test(error_sections_in_the_wrong_place),
        cmocka_unit_test(error_missing_filter_or_extra_words),
        cmocka_unit_test(error_nul_byte),
        cmocka_unit_test(the_first_error_in_file_order_is_reported),
        cmocka_unit_test(a_missing_file_is_an_io_error),
        cmocka_unit_test(a_loaded_file_reports_errors_with_its_path),
        cmocka_unit_test(everything_is_denied_unless_a_rule_allows),
        cmocka_unit_test(devices_rules_apply_to_every_device_of_the_company),
        cmocka_unit_test(a_device_section_is_checked_before_devices),
        cmocka_unit_test(a_device_of_another_company_gets_nothing_from_these_rules),
        cmocka_unit_test(an_incomplete_device_principal_is_denied),
        cmocka_unit_test(a_user_gets_its_section_and_company),
        cmocka_unit_test(an_unknown_user_is_denied),
        cmocka_unit_test(a_user_whose_company_differs_from_the_file_is_denied),
        cmocka_unit_test(a_platform_user_works_on_internal_topics),
        cmocka_unit_test(anonymous_clients_get_the_anonymous_section_only),
        cmocka_unit_test(each_action_concerns_only_its_operations),
        cmocka_unit_test(the_first_matching_rule_decides),
        cmocka_unit_test(deny_read_and_deny_write_forbid_one_direction),
        cmocka_unit_test(wildcard_rules_do_not_match_dollar_topics),
        cmocka_unit_test(substitutions_expand_to_the_principals_values),
        cmocka_unit_test(percent_percent_is_a_literal_percent),
        cmocka_unit_test(hostile_substituted_values_never_widen_access),
        cmocka_unit_test(a_deny_rule_with_an_unusable_value_denies),
        cmocka_unit_test(covers_truth_table),
        cmocka_unit_test(overlaps_truth_table_and_symmetry),
        cmocka_unit_test(covers_and_overlaps_agree_with_mqtt_topic_match_on_topic_names),
        cmocka_unit_test(covers_and_overlaps_agree_with_brute_force_over_topics),
        cmocka_unit_test(subscribe_is_allowed_when_a_read_rule_covers_the_filter),
        cmocka_unit_test(subscribe_is_refused_when_the_filter_reaches_beyond_the_rule),
        cmocka_unit_test(subscribe_is_refused_when_an_earlier_deny_overlaps),
        cmocka_unit_test(subscribe_plus_level_overlapping_a_deny_parent_is_refused),
        cmocka_unit_test(subscribe_allowed_by_an_earlier_covering_rule_ignores_later_denies),
        cmocka_unit_test(subscribe_needs_one_rule_to_cover_the_whole_filter),
        cmocka_unit_test(an_allowed_subscription_only_matches_readable_topics),
        cmocka_unit_test(read_at_delivery_is_decided_by_the_first_matching_rule),
        cmocka_unit_test(topic_checks_agree_with_mqtt_topic_match_at_every_depth),
        cmocka_unit_test(invalid_topics_and_filters_are_denied),
        cmocka_unit_test(checks_never_allocate),
        cmocka_unit_test(ten_thousand_rules_load_and_check_correctly_and_fast),
        cmocka_unit_test(one_section_with_ten_thousand_rules_still_works),
        cmocka_unit_test(every_allocation_failure_in_parse_is_reported_without_a_leak),
        cmocka_unit_test(every_allocation_failure_in_load_is_reported_without_a_leak),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
