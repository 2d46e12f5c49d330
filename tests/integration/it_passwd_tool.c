/*
 * Black-box tests of the gatemq-passwd tool: the files it writes are
 * accepted by mosquitto itself (the reference reader of the "$7$" format),
 * and its edits take effect there.
 *
 * The tool is $GATEMQ_BUILD/gatemq-passwd, else ../gatemq-passwd next to
 * this test's directory. mosquitto and mosquitto_pub come from PATH; the
 * tests are skipped if mosquitto is missing.
 */
#include "harness.h"

#include <errno.h>
#include <libgen.h>
#include <limits.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

static char tool[PATH_MAX];
static const char *argv0;

#define RIGHT_PW "Right pw: 7 \xc3\xa4!"
#define OTHER_PW "an0ther-one"

static int group_setup(void **state)
{
    (void)state;
    signal(SIGPIPE, SIG_IGN);
    const char *b = getenv("GATEMQ_BUILD");
    if (b && *b) {
        snprintf(tool, sizeof tool, "%s/gatemq-passwd", b);
    } else {
        char self[PATH_MAX];
        snprintf(self, sizeof self, "%s", argv0);
        snprintf(tool, sizeof tool, "%s/../gatemq-passwd", dirname(self));
    }
    if (access(tool, X_OK) != 0) {
        print_error("tool %s not found: set GATEMQ_BUILD\n", tool);
        return -1;
    }
    return 0;
}

static void need_mosquitto(void)
{
    if (system("command -v mosquitto >/dev/null && command -v mosquitto_pub >/dev/null") != 0)
        skip();
}

/* A fresh directory (removed at teardown) and a password file path in it. */
static char *pw_path(void)
{
    char *placeholder = it_temp_file("placeholder", "");
    char *path = malloc(strlen(placeholder) + 16);
    assert_non_null(path);
    strcpy(path, placeholder);
    strcpy(strrchr(path, '/') + 1, "passwd");
    free(placeholder);
    return path;
}

/* Run the tool with up to five arguments; returns the exit status. The
 * output must never contain a password. */
static int run_tool(const char *a, const char *b, const char *c, const char *d,
                    const char *e, char **out_text)
{
    const char *argv[] = { tool, a, b, c, d, e, NULL };
    char *out = NULL;
    int st = it_run(argv, 30000, &out);
    assert_non_null(out);
    if (strstr(out, RIGHT_PW) || strstr(out, OTHER_PW))
        it_fail("the tool printed a password: %s", out);
    if (out_text)
        *out_text = out;
    else
        free(out);
    return st;
}

typedef struct mosq {
    it_proc *proc;
    uint16_t port;
} mosq;

/* mosquitto on 127.0.0.1 with only password logins. `user root` keeps it
 * from switching to the mosquitto account when the tests run as root,
 * which could not read a 0600 file of ours; as another user it is ignored.
 * Retries if another process took the port first. */
static mosq start_mosquitto(const char *passwd)
{
    for (int attempt = 0; attempt < 5; attempt++) {
        mosq m = { .port = it_free_port() };
        char conf[1024];
        snprintf(conf, sizeof conf,
                 "listener %u 127.0.0.1\nallow_anonymous false\npassword_file %s\n"
                 "user root\nlog_dest stderr\nlog_type all\n",
                 m.port, passwd);
        char *conf_path = it_temp_file("mosquitto.conf", conf);
        const char *argv[] = { "mosquitto", "-c", conf_path, NULL };
        m.proc = it_spawn(argv);
        free(conf_path);
        if (it_proc_wait_output(m.proc, " running", IT_TIMEOUT))
            return m;
        fprintf(stderr, "mosquitto did not start:\n%s\n", it_proc_output(m.proc));
        it_proc_free(m.proc);
    }
    it_fail("mosquitto never started");
}

/* Exit status of one mosquitto_pub login + QoS 1 publish. */
static int pub_as(const mosq *m, const char *user, const char *pw)
{
    char port[8];
    snprintf(port, sizeof port, "%u", m->port);
    const char *argv[] = { "mosquitto_pub", "-V", "mqttv311", "-h", "127.0.0.1", "-p", port,
                           "-u", user, "-P", pw, "-q", "1", "-t", "t", "-m", "m", NULL };
    return it_run(argv, IT_TIMEOUT, NULL);
}

static void mosquitto_accepts_the_right_password_from_a_file_written_with_b(void **state)
{
    (void)state;
    need_mosquitto();
    char *pw = pw_path();
    assert_int_equal(run_tool("-c", "-b", pw, "alice", RIGHT_PW, NULL), 0);
    mosq m = start_mosquitto(pw);
    assert_int_equal(pub_as(&m, "alice", RIGHT_PW), 0);
    it_proc_free(m.proc);
    free(pw);
}

static void mosquitto_refuses_a_wrong_password_from_a_file_written_with_b(void **state)
{
    (void)state;
    need_mosquitto();
    char *pw = pw_path();
    assert_int_equal(run_tool("-c", "-b", pw, "alice", RIGHT_PW, NULL), 0);
    mosq m = start_mosquitto(pw);
    assert_int_not_equal(pub_as(&m, "alice", "Right pw: 7 \xc3\xa4?"), 0);
    assert_int_not_equal(pub_as(&m, "mallory", RIGHT_PW), 0);
    it_proc_free(m.proc);
    free(pw);
}

static void a_password_read_from_stdin_and_other_iterations_work_in_mosquitto(void **state)
{
    (void)state;
    need_mosquitto();
    char *pw = pw_path();
    assert_int_equal(run_tool("-c", "-b", pw, "alice", RIGHT_PW, NULL), 0);
    /* Not a terminal: one line from stdin, and a non-default count. */
    const char *argv[] = { "sh", "-c", "printf '%s\\n' \"$0\" | \"$1\" -I 3000 \"$2\" bob",
                           OTHER_PW, tool, pw, NULL };
    char *out = NULL;
    assert_int_equal(it_run(argv, 30000, &out), 0);
    assert_null(strstr(out, OTHER_PW));
    free(out);

    mosq m = start_mosquitto(pw);
    assert_int_equal(pub_as(&m, "bob", OTHER_PW), 0);
    assert_int_equal(pub_as(&m, "alice", RIGHT_PW), 0);
    assert_int_not_equal(pub_as(&m, "bob", RIGHT_PW), 0);
    it_proc_free(m.proc);
    free(pw);
}

static void a_deleted_user_can_no_longer_log_in(void **state)
{
    (void)state;
    need_mosquitto();
    char *pw = pw_path();
    assert_int_equal(run_tool("-c", "-b", pw, "alice", RIGHT_PW, NULL), 0);
    assert_int_equal(run_tool("-b", pw, "bob", OTHER_PW, NULL, NULL), 0);
    assert_int_equal(run_tool("-D", pw, "alice", NULL, NULL, NULL), 0);
    mosq m = start_mosquitto(pw);
    assert_int_not_equal(pub_as(&m, "alice", RIGHT_PW), 0);
    assert_int_equal(pub_as(&m, "bob", OTHER_PW), 0);
    it_proc_free(m.proc);
    free(pw);
}

static void a_changed_password_replaces_the_old_one(void **state)
{
    (void)state;
    need_mosquitto();
    char *pw = pw_path();
    assert_int_equal(run_tool("-c", "-b", pw, "alice", RIGHT_PW, NULL), 0);
    assert_int_equal(run_tool("-b", pw, "alice", OTHER_PW, NULL, NULL), 0);
    mosq m = start_mosquitto(pw);
    assert_int_equal(pub_as(&m, "alice", OTHER_PW), 0);
    assert_int_not_equal(pub_as(&m, "alice", RIGHT_PW), 0);
    it_proc_free(m.proc);
    free(pw);
}

static void a_created_file_has_mode_0600(void **state)
{
    (void)state;
    char *pw = pw_path();
    assert_int_equal(run_tool("-c", "-b", pw, "alice", RIGHT_PW, NULL), 0);
    struct stat st;
    assert_int_equal(stat(pw, &st), 0);
    assert_int_equal(st.st_mode & 07777, 0600);
    free(pw);
}

static void editing_a_missing_file_without_c_fails_clearly(void **state)
{
    (void)state;
    char *pw = pw_path();
    char *out = NULL;
    assert_int_equal(run_tool("-b", pw, "alice", RIGHT_PW, NULL, &out), 1);
    assert_non_null(strstr(out, "-c"));
    free(out);
    assert_int_not_equal(access(pw, F_OK), 0);
    free(pw);
}

static void deleting_a_missing_user_fails_clearly(void **state)
{
    (void)state;
    char *pw = pw_path();
    char *out = NULL;
    assert_int_equal(run_tool("-c", "-b", pw, "alice", RIGHT_PW, NULL), 0);
    assert_int_equal(run_tool("-D", pw, "bob", NULL, NULL, &out), 1);
    assert_non_null(strstr(out, "no user 'bob'"));
    free(out);
    free(pw);
}

static void bad_usage_exits_with_status_2(void **state)
{
    (void)state;
    char *pw = pw_path();
    assert_int_equal(run_tool("-D", "-b", pw, "alice", NULL, NULL), 2);
    assert_int_equal(run_tool(pw, NULL, NULL, NULL, NULL, NULL), 2);
    assert_int_equal(run_tool("-I", "0", pw, "alice", NULL, NULL), 2);
    assert_int_equal(run_tool("-I", "12x", pw, "alice", NULL, NULL), 2);
    free(pw);
}

static void an_empty_password_is_refused(void **state)
{
    (void)state;
    char *pw = pw_path();
    char *out = NULL;
    assert_int_equal(run_tool("-c", "-b", pw, "alice", "", &out), 1);
    assert_non_null(strstr(out, "empty password"));
    free(out);
    /* stdin is /dev/null under the harness: no line at all */
    assert_int_equal(run_tool("-c", pw, "alice", NULL, NULL, NULL), 1);
    assert_int_not_equal(access(pw, F_OK), 0);
    free(pw);
}

int main(int argc, char **argv)
{
    (void)argc;
    argv0 = argv[0];
    const struct CMUnitTest tests[] = {
        IT_TEST(mosquitto_accepts_the_right_password_from_a_file_written_with_b),
        IT_TEST(mosquitto_refuses_a_wrong_password_from_a_file_written_with_b),
        IT_TEST(a_password_read_from_stdin_and_other_iterations_work_in_mosquitto),
        IT_TEST(a_deleted_user_can_no_longer_log_in),
        IT_TEST(a_changed_password_replaces_the_old_one),
        IT_TEST(a_created_file_has_mode_0600),
        IT_TEST(editing_a_missing_file_without_c_fails_clearly),
        IT_TEST(deleting_a_missing_user_fails_clearly),
        IT_TEST(bad_usage_exits_with_status_2),
        IT_TEST(an_empty_password_is_refused),
    };
    return cmocka_run_group_tests(tests, group_setup, NULL);
}
