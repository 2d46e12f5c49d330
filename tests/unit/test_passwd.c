/* Unit tests for operator passwords (auth/passwd.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "auth/passwd.h"
#include "broker/alloc.h"

/* Real vectors: lines written by `mosquitto_passwd -c -b FILE USER PASS`
 * (mosquitto 2.0.11, which uses 101 iterations), with their passwords. */
#define MOSQ_ALICE "alice:$7$101$wf1TXjcUIq1FwhnR$LxlvQEF8Ganuv2dwhWnTqgtck91ZX7g8JwwND2MOal1IFyjUv+xOrfPqhSW+pM4c0/uVt9fBtkenTau4Z9iOLg=="
#define MOSQ_ALICE_PW "correct horse"
#define MOSQ_BOB "bob:$7$101$0EYOmg2HYjgU0t+M$oNpYY0ncvbINrm3D0OAnGsNYM0nFJ2h3by1XN6JV3x8jh3JqrFUt5nCH/bAUmLwjCBCQWkfIzpFrO7536Z0fPQ=="
#define MOSQ_BOB_PW "hunter2"
/* UTF-8 user name and password. */
#define MOSQ_ZOE "zo\xc3\xab:$7$101$sqFB9t5ldj4XQlLJ$s3mEzV0KfNBg2sO9hEFIwzhS+9cPm749+SdObjyT+2Wnv7l3Jd7IHVOctzIjfabbT/COl+Q/qqkFUGg6Qj47HQ=="
#define MOSQ_ZOE_PW "p\xc3\xa4ssw\xc3\xb6rd \xe2\x9c\x93"
/* `mosquitto_passwd -H sha512`: the old single-round format, not accepted. */
#define MOSQ_CAROL_SHA512 "carol:$6$XGw+I187e0LQ0NJE$EdO95MLcpktn8YIwYP4GTTFZqASu3Ju+NB7LbllB5GQpt663ahCxiIB3hvXcRTW+fInoHlkAHct04szGRPZugQ=="

static char dir[64];
static char err[512];

static const char *hash_part(const char *line)
{
    return strchr(line, ':') + 1;
}

static bool verify_str(const passwd_hash *h, const char *pw)
{
    return passwd_verify(h, (const uint8_t *)pw, strlen(pw));
}

static char *path_of(const char *name)
{
    static char p[160];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    return p;
}

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    assert_int_equal(fclose(f), 0);
}

/* Whole file as a malloc'd string. */
static char *read_file(const char *path)
{
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    char *buf = NULL;
    size_t cap = 0, n = 0, r;
    do {
        if (n + 4096 > cap) {
            cap = cap * 2 + 4096;
            buf = realloc(buf, cap + 1);
            assert_non_null(buf);
        }
        r = fread(buf + n, 1, cap - n, f);
        n += r;
    } while (r > 0);
    fclose(f);
    buf[n] = '\0';
    return buf;
}

static int make_dir(void **state)
{
    (void)state;
    snprintf(dir, sizeof dir, "/tmp/gmq-passwd-XXXXXX");
    return mkdtemp(dir) ? 0 : -1;
}

static int remove_dir(void **state)
{
    (void)state;
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    return system(cmd) == 0 ? 0 : -1;
}

/* ---- one hash ------------------------------------------------------------ */

static void parses_a_line_written_by_mosquitto_passwd(void **state)
{
    (void)state;
    passwd_hash h;
    const char *s = hash_part(MOSQ_ALICE);
    assert_int_equal(passwd_parse_hash(s, strlen(s), &h), PASSWD_OK);
    assert_int_equal(h.iterations, 101);
    assert_int_equal(h.salt_len, 12);
    assert_int_equal(h.hash_len, 64);
    /* "wf1T" decodes to c1 fd 53 */
    assert_int_equal(h.salt[0], 0xc1);
    assert_int_equal(h.salt[1], 0xfd);
    assert_int_equal(h.salt[2], 0x53);
}

static void verifies_the_right_password_of_mosquitto_passwd_lines(void **state)
{
    (void)state;
    static const char *const lines[] = { MOSQ_ALICE, MOSQ_BOB, MOSQ_ZOE };
    static const char *const pws[] = { MOSQ_ALICE_PW, MOSQ_BOB_PW, MOSQ_ZOE_PW };
    for (size_t i = 0; i < 3; i++) {
        passwd_hash h;
        const char *s = hash_part(lines[i]);
        assert_int_equal(passwd_parse_hash(s, strlen(s), &h), PASSWD_OK);
        assert_true(verify_str(&h, pws[i]));
    }
}

static void refuses_wrong_passwords(void **state)
{
    (void)state;
    passwd_hash h;
    const char *s = hash_part(MOSQ_ALICE);
    assert_int_equal(passwd_parse_hash(s, strlen(s), &h), PASSWD_OK);
    assert_false(verify_str(&h, ""));
    assert_false(verify_str(&h, "correct hors"));
    assert_false(verify_str(&h, "correct horse "));
    assert_false(verify_str(&h, "Correct horse"));
    assert_false(verify_str(&h, MOSQ_BOB_PW));
    /* The password is bytes, not a C string: an embedded NUL matters. */
    assert_false(passwd_verify(&h, (const uint8_t *)"correct horse\0x", 15));
}

static void formats_a_parsed_hash_back_to_the_same_text(void **state)
{
    (void)state;
    static const char *const lines[] = { MOSQ_ALICE, MOSQ_BOB, MOSQ_ZOE };
    for (size_t i = 0; i < 3; i++) {
        passwd_hash h;
        char out[PASSWD_STR_MAX];
        const char *s = hash_part(lines[i]);
        assert_int_equal(passwd_parse_hash(s, strlen(s), &h), PASSWD_OK);
        assert_int_equal(passwd_format(&h, out, sizeof out), PASSWD_OK);
        assert_string_equal(out, s);
    }
}

static void format_refuses_a_too_small_buffer(void **state)
{
    (void)state;
    passwd_hash h;
    char out[PASSWD_STR_MAX];
    const char *s = hash_part(MOSQ_ALICE);
    assert_int_equal(passwd_parse_hash(s, strlen(s), &h), PASSWD_OK);
    assert_int_equal(passwd_format(&h, out, strlen(s)), PASSWD_E_ARG);
    assert_int_equal(passwd_format(&h, out, strlen(s) + 1), PASSWD_OK);
}

static void made_hash_parses_and_verifies(void **state)
{
    (void)state;
    char out[PASSWD_STR_MAX];
    passwd_hash h;
    assert_int_equal(passwd_make(out, sizeof out, (const uint8_t *)"s3cret", 6,
                                 PASSWD_DEFAULT_ITERATIONS), PASSWD_OK);
    assert_memory_equal(out, "$7$12000$", 9);
    assert_int_equal(strlen(out), 9 + 16 + 1 + 88);
    assert_int_equal(passwd_parse_hash(out, strlen(out), &h), PASSWD_OK);
    assert_int_equal(h.iterations, 12000);
    assert_true(verify_str(&h, "s3cret"));
    assert_false(verify_str(&h, "s3creT"));
}

static void made_hash_round_trips_with_different_iteration_counts(void **state)
{
    (void)state;
    static const unsigned counts[] = { 1, 2, 101, 1000, 20000 };
    for (size_t i = 0; i < sizeof counts / sizeof counts[0]; i++) {
        char out[PASSWD_STR_MAX];
        passwd_hash h;
        assert_int_equal(passwd_make(out, sizeof out, (const uint8_t *)"pw", 2, counts[i]),
                         PASSWD_OK);
        assert_int_equal(passwd_parse_hash(out, strlen(out), &h), PASSWD_OK);
        assert_int_equal(h.iterations, counts[i]);
        assert_true(verify_str(&h, "pw"));
        /* The count is part of the hash: the same salt with another count
         * does not verify. */
        h.iterations++;
        assert_false(verify_str(&h, "pw"));
    }
}

static void made_hashes_use_a_fresh_salt_each_time(void **state)
{
    (void)state;
    char a[PASSWD_STR_MAX], b[PASSWD_STR_MAX];
    assert_int_equal(passwd_make(a, sizeof a, (const uint8_t *)"pw", 2, 1), PASSWD_OK);
    assert_int_equal(passwd_make(b, sizeof b, (const uint8_t *)"pw", 2, 1), PASSWD_OK);
    assert_string_not_equal(a, b);
}

static void make_refuses_zero_and_absurd_iteration_counts(void **state)
{
    (void)state;
    char out[PASSWD_STR_MAX];
    assert_int_equal(passwd_make(out, sizeof out, (const uint8_t *)"pw", 2, 0),
                     PASSWD_E_ITERATIONS);
    assert_int_equal(passwd_make(out, sizeof out, (const uint8_t *)"pw", 2,
                                 PASSWD_MAX_ITERATIONS + 1), PASSWD_E_ITERATIONS);
}

static void burn_runs_for_any_iteration_count(void **state)
{
    (void)state;
    passwd_burn(PASSWD_DEFAULT_ITERATIONS, (const uint8_t *)"guess", 5);
    passwd_burn(0, (const uint8_t *)"guess", 5); /* falls back to the default */
    passwd_burn(1, NULL, 0);
}

/* Each malformed hash part and the error it gets. */
static const struct {
    const char *hash;
    int rc;
} bad_hashes[] = {
    { "", PASSWD_E_FORMAT },
    { "7$101$wf1TXjcUIq1FwhnR$AAAA", PASSWD_E_FORMAT },
    { "$7", PASSWD_E_FORMAT },
    { "$7$", PASSWD_E_FORMAT },
    { "$7$101", PASSWD_E_FORMAT },
    { "$7$101$wf1TXjcUIq1FwhnR", PASSWD_E_FORMAT },
    { "$6$XGw+I187e0LQ0NJE$EdO95MLcpktn8YIwYP4GTTFZqASu3Ju+NB7LbllB5GQpt663ahCxiIB3hvXcRTW+fInoHlkAHct04szGRPZugQ==",
      PASSWD_E_TYPE },
    { "$77$101$wf1TXjcUIq1FwhnR$AAAA", PASSWD_E_TYPE },
    { "$$101$wf1TXjcUIq1FwhnR$AAAA", PASSWD_E_TYPE },
    { "$7$$wf1TXjcUIq1FwhnR$AAAA", PASSWD_E_ITERATIONS },
    { "$7$0$wf1TXjcUIq1FwhnR$LxlvQEF8Ganuv2dwhWnTqgtck91ZX7g8JwwND2MOal1IFyjUv+xOrfPqhSW+pM4c0/uVt9fBtkenTau4Z9iOLg==",
      PASSWD_E_ITERATIONS },
    { "$7$-1$wf1TXjcUIq1FwhnR$AAAA", PASSWD_E_ITERATIONS },
    { "$7$ 101$wf1TXjcUIq1FwhnR$AAAA", PASSWD_E_ITERATIONS },
    { "$7$1000001$wf1TXjcUIq1FwhnR$AAAA", PASSWD_E_ITERATIONS },
    { "$7$99999999999999999999999$wf1TXjcUIq1FwhnR$AAAA", PASSWD_E_ITERATIONS },
    /* '*' is not base64 */
    { "$7$101$wf1TXjcUIq1Fwhn*$LxlvQEF8Ganuv2dwhWnTqgtck91ZX7g8JwwND2MOal1IFyjUv+xOrfPqhSW+pM4c0/uVt9fBtkenTau4Z9iOLg==",
      PASSWD_E_BASE64 },
    /* padding missing */
    { "$7$101$wf1TXjcUIq1FwhnR$LxlvQEF8Ganuv2dwhWnTqgtck91ZX7g8JwwND2MOal1IFyjUv+xOrfPqhSW+pM4c0/uVt9fBtkenTau4Z9iOLg",
      PASSWD_E_BASE64 },
    /* padding in the middle */
    { "$7$101$wf1T==cUIq1FwhnR$LxlvQEF8Ganuv2dwhWnTqgtck91ZX7g8JwwND2MOal1IFyjUv+xOrfPqhSW+pM4c0/uVt9fBtkenTau4Z9iOLg==",
      PASSWD_E_BASE64 },
    /* non-zero unused bits before the padding ('h' instead of 'g') */
    { "$7$101$wf1TXjcUIq1FwhnR$LxlvQEF8Ganuv2dwhWnTqgtck91ZX7g8JwwND2MOal1IFyjUv+xOrfPqhSW+pM4c0/uVt9fBtkenTau4Z9iOLh==",
      PASSWD_E_BASE64 },
    /* URL-safe alphabet */
    { "$7$101$wf1TXjcUIq1FwhnR$LxlvQEF8Ganuv2dwhWnTqgtck91ZX7g8JwwND2MOal1IFyjUv-xOrfPqhSW+pM4c0/uVt9fBtkenTau4Z9iOLg==",
      PASSWD_E_BASE64 },
    /* salt of 15 bytes */
    { "$7$101$wf1TXjcUIq1FwhnRAAAA$LxlvQEF8Ganuv2dwhWnTqgtck91ZX7g8JwwND2MOal1IFyjUv+xOrfPqhSW+pM4c0/uVt9fBtkenTau4Z9iOLg==",
      PASSWD_E_LENGTH },
    /* salt of 9 bytes */
    { "$7$101$wf1TXjcUIq1F$LxlvQEF8Ganuv2dwhWnTqgtck91ZX7g8JwwND2MOal1IFyjUv+xOrfPqhSW+pM4c0/uVt9fBtkenTau4Z9iOLg==",
      PASSWD_E_LENGTH },
    /* hash of 63 bytes */
    { "$7$101$wf1TXjcUIq1FwhnR$LxlvQEF8Ganuv2dwhWnTqgtck91ZX7g8JwwND2MOal1IFyjUv+xOrfPqhSW+pM4c0/uVt9fBtkenTau4Z9iO",
      PASSWD_E_LENGTH },
    /* hash of 66 bytes */
    { "$7$101$wf1TXjcUIq1FwhnR$LxlvQEF8Ganuv2dwhWnTqgtck91ZX7g8JwwND2MOal1IFyjUv+xOrfPqhSW+pM4c0/uVt9fBtkenTau4Z9iOLgAA",
      PASSWD_E_LENGTH },
    { "$7$101$wf1TXjcUIq1FwhnR$LxlvQEF8Ganuv2dwhWnTqgtck91ZX7g8JwwND2MOal1IFyjUv+xOrfPqhSW+pM4c0/uVt9fBtkenTau4Z9iOLg==$",
      PASSWD_E_FORMAT },
    { "$7$101$wf1TXjcUIq1FwhnR$$LxlvQEF8Ganuv2dwhWnTqgtck91ZX7g8JwwND2MOal1IFyjUv+xOrfPqhSW+pM4c0/uVt9fBtkenTau4Z9iOLg==",
      PASSWD_E_FORMAT },
};

static void refuses_every_malformed_hash(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof bad_hashes / sizeof bad_hashes[0]; i++) {
        passwd_hash h;
        int rc = passwd_parse_hash(bad_hashes[i].hash, strlen(bad_hashes[i].hash), &h);
        if (rc != bad_hashes[i].rc)
            fail_msg("%s: got %d, want %d", bad_hashes[i].hash, rc, bad_hashes[i].rc);
    }
}

static void parse_reads_only_the_given_length(void **state)
{
    (void)state;
    /* The hash part followed by bytes that must not be looked at, the end
     * of the input being the end of a heap block (ASan checks). */
    const char *s = hash_part(MOSQ_BOB);
    size_t n = strlen(s);
    char *copy = malloc(n);
    assert_non_null(copy);
    memcpy(copy, s, n);
    passwd_hash h;
    assert_int_equal(passwd_parse_hash(copy, n, &h), PASSWD_OK);
    for (size_t k = 0; k < n; k++)
        assert_int_not_equal(passwd_parse_hash(copy, k, &h), PASSWD_OK);
    free(copy);
}

/* ---- loaded files ----------------------------------------------------------- */

static void loads_users_skipping_comments_and_blank_lines(void **state)
{
    (void)state;
    const char *p = path_of("ok");
    write_file(p, "# operators\n\n" MOSQ_ALICE "\n   \n  # indented comment\n" MOSQ_BOB "\n"
                  MOSQ_ZOE);
    passwd_file *f = NULL;
    assert_int_equal(passwd_file_load(p, &f, err, sizeof err), PASSWD_OK);
    assert_int_equal(passwd_file_count(f), 3);
    const passwd_hash *h = passwd_file_lookup(f, "bob", 3);
    assert_non_null(h);
    assert_true(verify_str(h, MOSQ_BOB_PW));
    h = passwd_file_lookup(f, "zo\xc3\xab", 4);
    assert_non_null(h);
    assert_true(verify_str(h, MOSQ_ZOE_PW));
    assert_null(passwd_file_lookup(f, "carol", 5));
    passwd_file_free(f);
}

static void loads_crlf_lines_and_blanks_around_fields(void **state)
{
    (void)state;
    const char *p = path_of("crlf");
    /* mosquitto's reader trims blanks around both fields too. */
    write_file(p, "alice : $7$101$wf1TXjcUIq1FwhnR$LxlvQEF8Ganuv2dwhWnTqgtck91ZX7g8JwwND2MOal1IFy"
                  "jUv+xOrfPqhSW+pM4c0/uVt9fBtkenTau4Z9iOLg==\t\r\n" MOSQ_BOB "\r\n");
    passwd_file *f = NULL;
    assert_int_equal(passwd_file_load(p, &f, err, sizeof err), PASSWD_OK);
    assert_non_null(passwd_file_lookup(f, "alice", 5));
    assert_true(verify_str(passwd_file_lookup(f, "alice", 5), MOSQ_ALICE_PW));
    assert_non_null(passwd_file_lookup(f, "bob", 3));
    passwd_file_free(f);
}

static void loads_an_empty_file_with_no_users(void **state)
{
    (void)state;
    const char *p = path_of("empty");
    write_file(p, "");
    passwd_file *f = NULL;
    assert_int_equal(passwd_file_load(p, &f, err, sizeof err), PASSWD_OK);
    assert_int_equal(passwd_file_count(f), 0);
    assert_null(passwd_file_lookup(f, "alice", 5));
    assert_int_equal(passwd_file_typical_iterations(f), PASSWD_DEFAULT_ITERATIONS);
    passwd_file_free(f);
}

static void lookup_is_exact_and_case_sensitive(void **state)
{
    (void)state;
    const char *p = path_of("exact");
    write_file(p, MOSQ_ALICE "\n" MOSQ_BOB "\n");
    passwd_file *f = NULL;
    assert_int_equal(passwd_file_load(p, &f, err, sizeof err), PASSWD_OK);
    assert_non_null(passwd_file_lookup(f, "alice", 5));
    assert_null(passwd_file_lookup(f, "Alice", 5));
    assert_null(passwd_file_lookup(f, "alic", 4));
    assert_null(passwd_file_lookup(f, "alicex", 6));
    assert_null(passwd_file_lookup(f, "alice\0", 6));
    assert_null(passwd_file_lookup(f, "", 0));
    passwd_file_free(f);
}

static void reports_a_missing_file_by_path(void **state)
{
    (void)state;
    passwd_file *f = (passwd_file *)0x1;
    const char *p = path_of("no-such-file");
    assert_int_equal(passwd_file_load(p, &f, err, sizeof err), PASSWD_E_IO);
    assert_ptr_equal(f, (passwd_file *)0x1); /* untouched on error */
    assert_non_null(strstr(err, p));
    assert_non_null(strstr(err, "No such file"));
}

/* A malformed line, placed as line 4 after a comment, a valid user and a
 * blank line, and the words the error must contain. */
static const struct {
    const char *line;
    int rc;
    const char *words;
} bad_lines[] = {
    { "dave $7$101$wf1TXjcUIq1FwhnR$AAAA", PASSWD_E_FORMAT, "missing ':'" },
    { "dave", PASSWD_E_FORMAT, "missing ':'" },
    { ":$7$101$wf1TXjcUIq1FwhnR$AAAA", PASSWD_E_NAME, "empty user name" },
    { "  :" "$7$101$wf1TXjcUIq1FwhnR$AAAA", PASSWD_E_NAME, "empty user name" },
    { "da\x01ve:$7$101$wf1TXjcUIq1FwhnR$AAAA", PASSWD_E_NAME, "invalid user name" },
    { "dave:", PASSWD_E_FORMAT, "'dave': malformed" },
    { "dave:secret", PASSWD_E_FORMAT, "'dave': malformed" },
    { MOSQ_CAROL_SHA512, PASSWD_E_TYPE, "'carol': unsupported hash type" },
    { "dave:$7$0$wf1TXjcUIq1FwhnR$LxlvQEF8Ganuv2dwhWnTqgtck91ZX7g8JwwND2MOal1IFyjUv+xOrfPqhSW+pM4c0/uVt9fBtkenTau4Z9iOLg==",
      PASSWD_E_ITERATIONS, "iteration count" },
    { "dave:$7$5000000$wf1TXjcUIq1FwhnR$LxlvQEF8Ganuv2dwhWnTqgtck91ZX7g8JwwND2MOal1IFyjUv+xOrfPqhSW+pM4c0/uVt9fBtkenTau4Z9iOLg==",
      PASSWD_E_ITERATIONS, "iteration count" },
    { "dave:$7$101$wf1TXjcUIq1Fwh!R$LxlvQEF8Ganuv2dwhWnTqgtck91ZX7g8JwwND2MOal1IFyjUv+xOrfPqhSW+pM4c0/uVt9fBtkenTau4Z9iOLg==",
      PASSWD_E_BASE64, "base64" },
    { "dave:$7$101$wf1TXjcUIq1FwhnR$LxlvQEF8Ganuv2dwhWnTqgtck91ZX7g8JwwND2MOal1IFyjUv+xOrfPqhSW+pM4c0/uVt9fBtkenTau4Z9iOLg=",
      PASSWD_E_BASE64, "base64" },
    { "dave:$7$101$wf1TXjcUIq1F$LxlvQEF8Ganuv2dwhWnTqgtck91ZX7g8JwwND2MOal1IFyjUv+xOrfPqhSW+pM4c0/uVt9fBtkenTau4Z9iOLg==",
      PASSWD_E_LENGTH, "salt must be 12 bytes" },
    { "dave:$7$101$wf1TXjcUIq1FwhnR$LxlvQEF8Ganuv2dwhWnTqgtck91ZX7g8JwwND2MOal1IFyjUv+xOrfPqhSW+pM4c0/uVt9fBtkenTau4Z9iO",
      PASSWD_E_LENGTH, "hash 64 bytes" },
    { "dave:$7$101$wf1TXjcUIq1FwhnR$LxlvQEF8Ganuv2dwhWnTqgtck91ZX7g8JwwND2MOal1IFyjUv+xOrfPqhSW+pM4c0/uVt9fBtkenTau4Z9iOLg== x",
      PASSWD_E_BASE64, "base64" },
    { MOSQ_ALICE, PASSWD_E_DUPLICATE, "duplicate user 'alice' (first on line 2)" },
};

static void refuses_every_malformed_line_naming_file_and_line(void **state)
{
    (void)state;
    const char *p = path_of("bad");
    for (size_t i = 0; i < sizeof bad_lines / sizeof bad_lines[0]; i++) {
        char text[1024], want[256];
        snprintf(text, sizeof text, "# users\n" MOSQ_ALICE "\n\n%s\n" MOSQ_BOB "\n",
                 bad_lines[i].line);
        write_file(p, text);
        passwd_file *f = NULL;
        err[0] = '\0';
        int rc = passwd_file_load(p, &f, err, sizeof err);
        snprintf(want, sizeof want, "%s:4: ", p);
        if (rc != bad_lines[i].rc || strncmp(err, want, strlen(want)) != 0 ||
            !strstr(err, bad_lines[i].words))
            fail_msg("line %s: rc %d (want %d), error \"%s\" (want \"%s...%s\")",
                     bad_lines[i].line, rc, bad_lines[i].rc, err, want, bad_lines[i].words);
        assert_null(f);
    }
}

static void reports_the_first_duplicate_in_file_order(void **state)
{
    (void)state;
    const char *p = path_of("dups");
    /* bob repeats at line 3, alice at line 4: bob is reported, although
     * alice sorts first. */
    write_file(p, MOSQ_BOB "\n" MOSQ_ALICE "\n" MOSQ_BOB "\n" MOSQ_ALICE "\n");
    passwd_file *f = NULL;
    assert_int_equal(passwd_file_load(p, &f, err, sizeof err), PASSWD_E_DUPLICATE);
    assert_non_null(strstr(err, ":3: duplicate user 'bob' (first on line 1)"));
}

static void looks_up_every_user_among_a_hundred_thousand(void **state)
{
    (void)state;
    enum { N = 100000 };
    const char *p = path_of("many");
    FILE *out = fopen(p, "w");
    assert_non_null(out);
    /* Out of order on purpose, and names that are prefixes of each other. */
    for (unsigned i = 0; i < N; i++)
        fprintf(out, "user%u:%s\n", (i * 7919u) % N, hash_part(MOSQ_BOB));
    assert_int_equal(fclose(out), 0);

    passwd_file *f = NULL;
    assert_int_equal(passwd_file_load(p, &f, err, sizeof err), PASSWD_OK);
    assert_int_equal(passwd_file_count(f), N);
    for (unsigned i = 0; i < N; i++) {
        char name[32];
        int n = snprintf(name, sizeof name, "user%u", i);
        const passwd_hash *h = passwd_file_lookup(f, name, (size_t)n);
        if (!h)
            fail_msg("%s not found", name);
        assert_int_equal(h->iterations, 101);
    }
    assert_null(passwd_file_lookup(f, "user", 4));
    assert_null(passwd_file_lookup(f, "user100000", 10));
    assert_null(passwd_file_lookup(f, "user00", 6));
    passwd_file_free(f);
}

static void typical_iterations_is_the_most_common_count(void **state)
{
    (void)state;
    const char *p = path_of("typical");
    char text[2048], a[PASSWD_STR_MAX], b[PASSWD_STR_MAX], c[PASSWD_STR_MAX];
    assert_int_equal(passwd_make(a, sizeof a, (const uint8_t *)"x", 1, 7), PASSWD_OK);
    assert_int_equal(passwd_make(b, sizeof b, (const uint8_t *)"x", 1, 7), PASSWD_OK);
    assert_int_equal(passwd_make(c, sizeof c, (const uint8_t *)"x", 1, 9), PASSWD_OK);
    snprintf(text, sizeof text, MOSQ_ALICE "\nu1:%s\nu2:%s\nu3:%s\n", a, b, c);
    write_file(p, text);
    passwd_file *f = NULL;
    assert_int_equal(passwd_file_load(p, &f, err, sizeof err), PASSWD_OK);
    assert_int_equal(passwd_file_typical_iterations(f), 7);
    passwd_file_free(f);
}

static void load_cleans_up_after_every_allocation_failure(void **state)
{
    (void)state;
    const char *p = path_of("oom");
    FILE *out = fopen(p, "w");
    assert_non_null(out);
    /* Enough users for the entry array to grow several times. */
    for (unsigned i = 0; i < 300; i++)
        fprintf(out, "# %u\nuser%u:%s\n", i, i, hash_part(MOSQ_BOB));
    assert_int_equal(fclose(out), 0);

    unsigned long n;
    for (n = 1; n < 1000; n++) {
        passwd_file *f = NULL;
        gmq_alloc_fail_at(n);
        int rc = passwd_file_load(p, &f, err, sizeof err);
        gmq_alloc_fail_at(0);
        if (rc == PASSWD_OK) {
            assert_int_equal(passwd_file_count(f), 300);
            passwd_file_free(f);
            break;
        }
        assert_int_equal(rc, PASSWD_E_NOMEM);
        assert_null(f);
        assert_non_null(strstr(err, "out of memory"));
    }
    assert_true(n > 3); /* the sweep did fail some allocations */
    assert_true(n < 1000);
}

/* ---- editing ---------------------------------------------------------------- */

/* A file with a comment, a blank line, odd spacing, a line this module
 * would refuse, and two users: everything but the edited user must stay. */
#define KEEP_HEAD "# operators of plant 7\n\n  # spaced comment  \nnot a user line\n"
#define KEEP_TAIL "# end\n"

static void adds_a_user_keeping_other_lines_byte_for_byte(void **state)
{
    (void)state;
    const char *p = path_of("add");
    write_file(p, KEEP_HEAD MOSQ_ALICE "\n" MOSQ_BOB "\n" KEEP_TAIL);
    char hash[PASSWD_STR_MAX];
    assert_int_equal(passwd_make(hash, sizeof hash, (const uint8_t *)"new", 3, 5), PASSWD_OK);
    assert_int_equal(passwd_file_update(p, "carol", 5, hash, false, err, sizeof err), PASSWD_OK);

    char want[2048];
    snprintf(want, sizeof want, KEEP_HEAD MOSQ_ALICE "\n" MOSQ_BOB "\n" KEEP_TAIL "carol:%s\n",
             hash);
    char *got = read_file(p);
    assert_string_equal(got, want);
    free(got);
}

static void adds_a_newline_before_appending_to_an_unterminated_last_line(void **state)
{
    (void)state;
    const char *p = path_of("nonl");
    write_file(p, MOSQ_ALICE);
    char hash[PASSWD_STR_MAX], want[1024];
    assert_int_equal(passwd_make(hash, sizeof hash, (const uint8_t *)"new", 3, 5), PASSWD_OK);
    assert_int_equal(passwd_file_update(p, "carol", 5, hash, false, err, sizeof err), PASSWD_OK);
    snprintf(want, sizeof want, MOSQ_ALICE "\ncarol:%s\n", hash);
    char *got = read_file(p);
    assert_string_equal(got, want);
    free(got);
}

static void changes_a_user_in_place(void **state)
{
    (void)state;
    const char *p = path_of("change");
    write_file(p, KEEP_HEAD MOSQ_ALICE "\n" MOSQ_BOB "\n" KEEP_TAIL);
    char hash[PASSWD_STR_MAX], want[2048];
    assert_int_equal(passwd_make(hash, sizeof hash, (const uint8_t *)"new", 3, 5), PASSWD_OK);
    assert_int_equal(passwd_file_update(p, "alice", 5, hash, false, err, sizeof err), PASSWD_OK);
    snprintf(want, sizeof want, KEEP_HEAD "alice:%s\n" MOSQ_BOB "\n" KEEP_TAIL, hash);
    char *got = read_file(p);
    assert_string_equal(got, want);
    free(got);

    passwd_file *f = NULL;
    write_file(p, want + strlen(KEEP_HEAD)); /* the loader refuses "not a user line" */
    assert_int_equal(passwd_file_load(p, &f, err, sizeof err), PASSWD_OK);
    assert_true(verify_str(passwd_file_lookup(f, "alice", 5), "new"));
    assert_false(verify_str(passwd_file_lookup(f, "alice", 5), MOSQ_ALICE_PW));
    passwd_file_free(f);
}

static void changing_a_user_drops_its_duplicate_lines(void **state)
{
    (void)state;
    const char *p = path_of("dupedit");
    write_file(p, MOSQ_ALICE "\n" MOSQ_BOB "\n" MOSQ_ALICE "\n");
    char hash[PASSWD_STR_MAX], want[1024];
    assert_int_equal(passwd_make(hash, sizeof hash, (const uint8_t *)"new", 3, 5), PASSWD_OK);
    assert_int_equal(passwd_file_update(p, "alice", 5, hash, false, err, sizeof err), PASSWD_OK);
    snprintf(want, sizeof want, "alice:%s\n" MOSQ_BOB "\n", hash);
    char *got = read_file(p);
    assert_string_equal(got, want);
    free(got);
}

static void deletes_a_user_keeping_other_lines(void **state)
{
    (void)state;
    const char *p = path_of("delete");
    write_file(p, KEEP_HEAD MOSQ_ALICE "\n" MOSQ_BOB "\n" KEEP_TAIL);
    assert_int_equal(passwd_file_update(p, "alice", 5, NULL, false, err, sizeof err), PASSWD_OK);
    char *got = read_file(p);
    assert_string_equal(got, KEEP_HEAD MOSQ_BOB "\n" KEEP_TAIL);
    free(got);
}

static void deleting_a_missing_user_fails_and_leaves_the_file(void **state)
{
    (void)state;
    const char *p = path_of("delete-missing");
    write_file(p, MOSQ_ALICE "\n");
    assert_int_equal(passwd_file_update(p, "bob", 3, NULL, false, err, sizeof err),
                     PASSWD_E_NOUSER);
    assert_non_null(strstr(err, "no user 'bob'"));
    char *got = read_file(p);
    assert_string_equal(got, MOSQ_ALICE "\n");
    free(got);
}

static void create_makes_a_new_file_with_mode_0600(void **state)
{
    (void)state;
    const char *p = path_of("created");
    char hash[PASSWD_STR_MAX], want[256];
    mode_t old = umask(0);
    assert_int_equal(passwd_make(hash, sizeof hash, (const uint8_t *)"pw", 2, 5), PASSWD_OK);
    assert_int_equal(passwd_file_update(p, "alice", 5, hash, true, err, sizeof err), PASSWD_OK);
    umask(old);
    struct stat st;
    assert_int_equal(stat(p, &st), 0);
    assert_int_equal(st.st_mode & 07777, 0600);
    snprintf(want, sizeof want, "alice:%s\n", hash);
    char *got = read_file(p);
    assert_string_equal(got, want);
    free(got);
}

static void create_replaces_existing_content_but_keeps_the_mode(void **state)
{
    (void)state;
    const char *p = path_of("recreated");
    write_file(p, MOSQ_ALICE "\n" MOSQ_BOB "\n");
    assert_int_equal(chmod(p, 0640), 0);
    char hash[PASSWD_STR_MAX], want[256];
    assert_int_equal(passwd_make(hash, sizeof hash, (const uint8_t *)"pw", 2, 5), PASSWD_OK);
    assert_int_equal(passwd_file_update(p, "carol", 5, hash, true, err, sizeof err), PASSWD_OK);
    struct stat st;
    assert_int_equal(stat(p, &st), 0);
    assert_int_equal(st.st_mode & 07777, 0640);
    snprintf(want, sizeof want, "carol:%s\n", hash);
    char *got = read_file(p);
    assert_string_equal(got, want);
    free(got);
}

static void update_without_create_needs_an_existing_file(void **state)
{
    (void)state;
    const char *p = path_of("absent");
    char hash[PASSWD_STR_MAX];
    assert_int_equal(passwd_make(hash, sizeof hash, (const uint8_t *)"pw", 2, 5), PASSWD_OK);
    assert_int_equal(passwd_file_update(p, "alice", 5, hash, false, err, sizeof err),
                     PASSWD_E_IO);
    assert_non_null(strstr(err, "-c"));
    assert_int_equal(access(p, F_OK), -1);
}

static void update_edits_the_target_of_a_symbolic_link(void **state)
{
    (void)state;
    char target[160];
    snprintf(target, sizeof target, "%s", path_of("real"));
    const char *link = path_of("link");
    write_file(target, MOSQ_ALICE "\n");
    assert_int_equal(symlink("real", link), 0);
    assert_int_equal(passwd_file_update(link, "alice", 5, NULL, false, err, sizeof err),
                     PASSWD_OK);
    struct stat st;
    assert_int_equal(lstat(link, &st), 0);
    assert_true(S_ISLNK(st.st_mode));
    char *got = read_file(target);
    assert_string_equal(got, "");
    free(got);
}

static void update_refuses_bad_names_and_hashes(void **state)
{
    (void)state;
    const char *p = path_of("refuse");
    write_file(p, MOSQ_ALICE "\n");
    const char *h = hash_part(MOSQ_BOB);
    assert_int_equal(passwd_file_update(p, "", 0, h, false, err, sizeof err), PASSWD_E_NAME);
    assert_int_equal(passwd_file_update(p, "a:b", 3, h, false, err, sizeof err), PASSWD_E_NAME);
    assert_int_equal(passwd_file_update(p, "a\nb", 3, h, false, err, sizeof err), PASSWD_E_NAME);
    assert_int_equal(passwd_file_update(p, "#a", 2, h, false, err, sizeof err), PASSWD_E_NAME);
    assert_int_equal(passwd_file_update(p, " a", 2, h, false, err, sizeof err), PASSWD_E_NAME);
    assert_int_equal(passwd_file_update(p, "a\t", 2, h, false, err, sizeof err), PASSWD_E_NAME);
    assert_int_equal(passwd_file_update(p, "b", 1, "$6$x$y", false, err, sizeof err),
                     PASSWD_E_TYPE);
    assert_int_equal(passwd_file_update(p, "b", 1, NULL, true, err, sizeof err), PASSWD_E_ARG);
    char *got = read_file(p);
    assert_string_equal(got, MOSQ_ALICE "\n");
    free(got);
}

static void update_leaves_the_file_unchanged_after_any_allocation_failure(void **state)
{
    (void)state;
    const char *p = path_of("oom-edit");
    const char *before = KEEP_HEAD MOSQ_ALICE "\n" MOSQ_BOB "\n" KEEP_TAIL;
    write_file(p, before);
    const char *h = hash_part(MOSQ_ZOE);
    unsigned long n;
    for (n = 1; n < 100; n++) {
        gmq_alloc_fail_at(n);
        int rc = passwd_file_update(p, "alice", 5, h, false, err, sizeof err);
        gmq_alloc_fail_at(0);
        if (rc == PASSWD_OK)
            break;
        assert_int_equal(rc, PASSWD_E_NOMEM);
        char *got = read_file(p);
        assert_string_equal(got, before);
        free(got);
    }
    assert_true(n > 1 && n < 100);
    /* No temporary file is left behind. */
    char cmd[256];
    snprintf(cmd, sizeof cmd, "ls '%s' | grep -q 'oom-edit\\.'", dir);
    assert_int_not_equal(system(cmd), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(parses_a_line_written_by_mosquitto_passwd),
        cmocka_unit_test(verifies_the_right_password_of_mosquitto_passwd_lines),
        cmocka_unit_test(refuses_wrong_passwords),
        cmocka_unit_test(formats_a_parsed_hash_back_to_the_same_text),
        cmocka_unit_test(format_refuses_a_too_small_buffer),
        cmocka_unit_test(made_hash_parses_and_verifies),
        cmocka_unit_test(made_hash_round_trips_with_different_iteration_counts),
        cmocka_unit_test(made_hashes_use_a_fresh_salt_each_time),
        cmocka_unit_test(make_refuses_zero_and_absurd_iteration_counts),
        cmocka_unit_test(burn_runs_for_any_iteration_count),
        cmocka_unit_test(refuses_every_malformed_hash),
        cmocka_unit_test(parse_reads_only_the_given_length),
        cmocka_unit_test(loads_users_skipping_comments_and_blank_lines),
        cmocka_unit_test(loads_crlf_lines_and_blanks_around_fields),
        cmocka_unit_test(loads_an_empty_file_with_no_users),
        cmocka_unit_test(lookup_is_exact_and_case_sensitive),
        cmocka_unit_test(reports_a_missing_file_by_path),
        cmocka_unit_test(refuses_every_malformed_line_naming_file_and_line),
        cmocka_unit_test(reports_the_first_duplicate_in_file_order),
        cmocka_unit_test(looks_up_every_user_among_a_hundred_thousand),
        cmocka_unit_test(typical_iterations_is_the_most_common_count),
        cmocka_unit_test(load_cleans_up_after_every_allocation_failure),
        cmocka_unit_test(adds_a_user_keeping_other_lines_byte_for_byte),
        cmocka_unit_test(adds_a_newline_before_appending_to_an_unterminated_last_line),
        cmocka_unit_test(changes_a_user_in_place),
        cmocka_unit_test(changing_a_user_drops_its_duplicate_lines),
        cmocka_unit_test(deletes_a_user_keeping_other_lines),
        cmocka_unit_test(deleting_a_missing_user_fails_and_leaves_the_file),
        cmocka_unit_test(create_makes_a_new_file_with_mode_0600),
        cmocka_unit_test(create_replaces_existing_content_but_keeps_the_mode),
        cmocka_unit_test(update_without_create_needs_an_existing_file),
        cmocka_unit_test(update_edits_the_target_of_a_symbolic_link),
        cmocka_unit_test(update_refuses_bad_names_and_hashes),
        cmocka_unit_test(update_leaves_the_file_unchanged_after_any_allocation_failure),
    };
    return cmocka_run_group_tests(tests, make_dir, remove_dir);
}
