/*
 * Black-box tests of the gatemq-acl tool: exit codes and exact output of
 * `check` and `test` on real files.
 *
 * The tool is $GATEMQ_BUILD/gatemq-acl, else ../gatemq-acl next to this
 * test's directory.
 */
#include "harness.h"

#include <libgen.h>
#include <limits.h>
#include <signal.h>
#include <unistd.h>

static char tool[PATH_MAX];
static const char *argv0;

static int group_setup(void **state)
{
    (void)state;
    signal(SIGPIPE, SIG_IGN);
    const char *b = getenv("GATEMQ_BUILD");
    if (b && *b) {
        snprintf(tool, sizeof tool, "%s/gatemq-acl", b);
    } else {
        char self[PATH_MAX];
        snprintf(self, sizeof self, "%s", argv0);
        snprintf(tool, sizeof tool, "%s/../gatemq-acl", dirname(self));
    }
    if (access(tool, X_OK) != 0) {
        print_error("tool %s not found: set GATEMQ_BUILD\n", tool);
        return -1;
    }
    return 0;
}

/* The gateway example: line numbers matter to the assertions. */
static const char GOOD[] =
    "company acme\n"                        /* 1 */
    "  devices\n"                           /* 2 */
    "    read   config/%d/#\n"              /* 3 */
    "    write  telemetry/%d/#\n"           /* 4 */
    "  device gw-0001\n"                    /* 5 */
    "    deny   config/gw-0001/secret/#\n"  /* 6 */
    "  user operator\n"                     /* 7 */
    "    readwrite config/#    # all gateways\n"
    "platform\n"                            /* 9 */
    "  user ingest\n"                       /* 10 */
    "    read +/telemetry/#\n"              /* 11 */
    "anonymous\n"                           /* 12 */
    "  readwrite dev/%c/#\n";               /* 13 */

/* Run the tool with up to five arguments (NULL ends the list); returns the
 * exit status and the combined output in *out (malloc'd). */
static int run_tool(const char *a, const char *b, const char *c, const char *d,
                    const char *e, char **out)
{
    const char *argv[] = { tool, a, b, c, d, e, NULL };
    char *text = NULL;
    int st = it_run(argv, IT_TIMEOUT, &text);
    assert_non_null(text);
    *out = text;
    return st;
}

static char *good_file(void)
{
    return it_temp_file("acl.conf", GOOD);
}

/* Output must be exactly expect, with the file path put in for "%s". */
static void expect_output(const char *out, const char *fmt, const char *path)
{
    char want[2048];
    snprintf(want, sizeof want, fmt, path, path);
    if (strcmp(out, want) != 0)
        it_fail("output:\n%s\nexpected:\n%s", out, want);
}

static void check_accepts_a_valid_file_and_prints_a_summary(void **state)
{
    (void)state;
    char *f = good_file(), *out;
    assert_int_equal(run_tool("check", f, NULL, NULL, NULL, &out), 0);
    expect_output(out, "%s: OK: 1 company (1 with a devices section), 1 device section, "
                       "2 users (1 platform-wide), an anonymous section, 6 rules\n", f);
    free(out);
    free(f);
}

static void check_reports_file_line_and_reason_and_exits_1(void **state)
{
    (void)state;
    char *f = it_temp_file("bad.conf", "company acme\n  devices\n    read config/%d/#\n"
                                       "  user alice\n    readwrite #\nplatform\n  user alice\n");
    char *out;
    assert_int_equal(run_tool("check", f, NULL, NULL, NULL, &out), 1);
    expect_output(out, "%s:7: user alice already declared at line 4 (a user belongs to "
                       "exactly one company or to platform)\n", f);
    free(out);
    free(f);
}

static void check_of_an_invalid_filter_names_the_filter(void **state)
{
    (void)state;
    char *f = it_temp_file("bad.conf", "anonymous\n  # fine\n  read a/#/b\n");
    char *out;
    assert_int_equal(run_tool("check", f, NULL, NULL, NULL, &out), 1);
    char want[512];
    snprintf(want, sizeof want, "%s:3: invalid topic filter 'a/#/b'", f);
    assert_non_null(strstr(out, want));
    free(out);
    free(f);
}

static void check_of_a_missing_file_exits_1(void **state)
{
    (void)state;
    char *out;
    assert_int_equal(run_tool("check", "/nonexistent/acl.conf", NULL, NULL, NULL, &out), 1);
    assert_string_equal(out, "/nonexistent/acl.conf: No such file or directory\n");
    free(out);
}

static void test_allow_prints_the_deciding_rule_and_exits_0(void **state)
{
    (void)state;
    char *f = good_file(), *out;
    assert_int_equal(run_tool("test", f, "device:acme/gw-0042", "write", "telemetry/gw-0042/t",
                              &out), 0);
    expect_output(out, "allow\n%s:4: write  telemetry/%%d/#\n", f);
    free(out);
    assert_int_equal(run_tool("test", f, "device:acme/gw-0042", "subscribe", "config/gw-0042/#",
                              &out), 0);
    expect_output(out, "allow\n%s:3: read   config/%%d/#\n", f);
    free(out);
    free(f);
}

static void test_deny_by_a_rule_prints_that_rule_and_exits_1(void **state)
{
    (void)state;
    char *f = good_file(), *out;
    assert_int_equal(run_tool("test", f, "device:acme/gw-0001", "read", "config/gw-0001/secret/k",
                              &out), 1);
    expect_output(out, "deny\n%s:6: deny   config/gw-0001/secret/#\n", f);
    free(out);
    /* The deny overlaps the subscription, so the whole subscription is refused. */
    assert_int_equal(run_tool("test", f, "device:acme/gw-0001", "subscribe", "config/gw-0001/#",
                              &out), 1);
    expect_output(out, "deny\n%s:6: deny   config/gw-0001/secret/#\n", f);
    free(out);
    free(f);
}

static void test_default_deny_says_no_rule_matched_and_exits_1(void **state)
{
    (void)state;
    char *f = good_file(), *out;
    assert_int_equal(run_tool("test", f, "device:acme/gw-0042", "write", "config/gw-0042/x",
                              &out), 1);
    assert_string_equal(out, "deny\nno rule matched: denied by default\n");
    free(out);
    assert_int_equal(run_tool("test", f, "device:globex/gw-0101", "read", "config/gw-0101/x",
                              &out), 1);
    assert_string_equal(out, "deny\nno rule matched: denied by default\n");
    free(out);
    free(f);
}

static void test_a_user_gets_its_company_from_the_file(void **state)
{
    (void)state;
    char *f = good_file(), *out;
    assert_int_equal(run_tool("test", f, "user:operator", "write", "config/gw-0001/rate", &out),
                     0);
    expect_output(out, "allow\n%s:8: readwrite config/#\n", f);
    free(out);
    assert_int_equal(run_tool("test", f, "user:ingest", "subscribe", "+/telemetry/#", &out), 0);
    expect_output(out, "allow\n%s:11: read +/telemetry/#\n", f);
    free(out);
    assert_int_equal(run_tool("test", f, "user:ingest", "subscribe", "#", &out), 1);
    free(out);
    assert_int_equal(run_tool("test", f, "user:mallory", "read", "x", &out), 1);
    assert_string_equal(out, "deny\nuser not in the ACL file: denied\n");
    free(out);
    free(f);
}

static void test_client_option_sets_the_client_id(void **state)
{
    (void)state;
    char *f = good_file(), *out;
    assert_int_equal(run_tool("test", f, "anonymous,client=c7", "write", "dev/c7/x", &out), 0);
    expect_output(out, "allow\n%s:13: readwrite dev/%%c/#\n", f);
    free(out);
    assert_int_equal(run_tool("test", f, "anonymous,client=c7", "write", "dev/c8/x", &out), 1);
    free(out);
    assert_int_equal(run_tool("test", f, "anonymous", "write", "dev/c7/x", &out), 1);
    free(out);
    /* A hostile client id cannot widen the rule. */
    assert_int_equal(run_tool("test", f, "anonymous,client=+", "subscribe", "dev/+/x", &out), 1);
    free(out);
    free(f);
}

static void bad_usage_and_unloadable_files_exit_2(void **state)
{
    (void)state;
    char *f = good_file(), *out;
    assert_int_equal(run_tool(NULL, NULL, NULL, NULL, NULL, &out), 2);
    free(out);
    assert_int_equal(run_tool("check", NULL, NULL, NULL, NULL, &out), 2);
    free(out);
    assert_int_equal(run_tool("test", f, "anonymous", "delete", "x", &out), 2);
    free(out);
    assert_int_equal(run_tool("test", f, "robot:x", "read", "x", &out), 2);
    free(out);
    assert_int_equal(run_tool("test", f, "device:acme", "read", "x", &out), 2);
    free(out);
    assert_int_equal(run_tool("test", f, "anonymous", "read", "a/+", &out), 2);
    free(out);
    assert_int_equal(run_tool("test", f, "anonymous", "subscribe", "a/#/b", &out), 2);
    free(out);
    assert_int_equal(run_tool("test", "/nonexistent/acl.conf", "anonymous", "read", "x", &out), 2);
    free(out);
    char *bad = it_temp_file("bad.conf", "anonymous\n  reed x\n");
    assert_int_equal(run_tool("test", bad, "anonymous", "read", "x", &out), 2);
    char want[512];
    snprintf(want, sizeof want, "%s:2: unknown keyword 'reed'", bad);
    assert_non_null(strstr(out, want));
    free(out);
    free(bad);
    free(f);
}

int main(int argc, char **argv)
{
    (void)argc;
    argv0 = argv[0];
    const struct CMUnitTest tests[] = {
        IT_TEST(check_accepts_a_valid_file_and_prints_a_summary),
        IT_TEST(check_reports_file_line_and_reason_and_exits_1),
        IT_TEST(check_of_an_invalid_filter_names_the_filter),
        IT_TEST(check_of_a_missing_file_exits_1),
        IT_TEST(test_allow_prints_the_deciding_rule_and_exits_0),
        IT_TEST(test_deny_by_a_rule_prints_that_rule_and_exits_1),
        IT_TEST(test_default_deny_says_no_rule_matched_and_exits_1),
        IT_TEST(test_a_user_gets_its_company_from_the_file),
        IT_TEST(test_client_option_sets_the_client_id),
        IT_TEST(bad_usage_and_unloadable_files_exit_2),
    };
    return cmocka_run_group_tests(tests, group_setup, NULL);
}
