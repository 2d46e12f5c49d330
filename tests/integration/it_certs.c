/*
 * it_certs.c - tools/gatemq-cert: the certificates it provisions, checked
 * with the openssl command line (chains, subjects, extensions, CRLs,
 * expiry, a foreign CA, dev idempotency, refused names).
 *
 * Every test runs the script into its own fresh temporary directory, which
 * the teardown removes. The repository is found from $GATEMQ_SRC, else by
 * walking up from this binary (<repo>/<build>/tests/it_certs, with <build>
 * build/ or build/asan or deeper) until tools/gatemq-cert exists.
 *
 * No broker is started and nothing sleeps: each tool runs to completion
 * (with a generous deadline, after which it is killed and the test fails).
 */
#include "harness.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <setjmp.h>
#include <cmocka.h>

extern char **environ;

/* Deadline for one tool run (ms): RSA key generation on a loaded machine. */
#define CERT_RUN_TIMEOUT 120000

static char cert_script[PATH_MAX];

/* ---- small helpers -------------------------------------------------------- */

static long cert_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000L + ts.tv_nsec / 1000000L;
}

static char *cert_strdup(const char *s)
{
    char *d = strdup(s);
    assert_non_null(d);
    return d;
}

static char *cert_path(const char *dir, const char *rel)
{
    size_t n = strlen(dir) + strlen(rel) + 2;
    char *p = malloc(n);
    assert_non_null(p);
    snprintf(p, n, "%s/%s", dir, rel);
    return p;
}

/* Whole file into a malloc'd NUL-terminated buffer (*len without the NUL);
 * NULL if it cannot be read. */
static char *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap + 1);
    assert_non_null(buf);
    size_t r;
    while ((r = fread(buf + n, 1, cap - n, f)) > 0) {
        n += r;
        if (n == cap) {
            cap *= 2;
            buf = realloc(buf, cap + 1);
            assert_non_null(buf);
        }
    }
    fclose(f);
    buf[n] = '\0';
    if (len)
        *len = n;
    return buf;
}

static int count_substr(const char *hay, const char *needle)
{
    int n = 0;
    for (const char *p = hay; (p = strstr(p, needle)) != NULL; p += strlen(needle))
        n++;
    return n;
}

/* Find the repository: $GATEMQ_SRC, else walk up from the binary. */
static bool find_repo(void)
{
    return it_repo_path("tools/gatemq-cert", cert_script, sizeof cert_script);
}

/* ---- running tools -------------------------------------------------------- */

/* Run argv (argv[0] looked up in PATH) with stdin /dev/null and stdout and
 * stderr captured together into *out (malloc'd). Returns the exit status, or
 * 128+signal. Fails the test if it cannot spawn or exceeds the deadline. */
static int run_argv(const char *const argv[], char **out)
{
    int pfd[2];
    assert_int_equal(pipe2(pfd, O_CLOEXEC), 0);

    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_adddup2(&fa, pfd[1], 1);
    posix_spawn_file_actions_adddup2(&fa, pfd[1], 2);
    pid_t pid;
    int rc = posix_spawnp(&pid, argv[0], &fa, NULL, (char *const *)argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    close(pfd[1]);
    if (rc != 0) {
        close(pfd[0]);
        print_error("cannot run %s: %s\n", argv[0], strerror(rc));
        fail();
    }

    size_t cap = 4096, n = 0;
    char *buf = malloc(cap + 1);
    assert_non_null(buf);
    long deadline = cert_now_ms() + CERT_RUN_TIMEOUT;
    bool timed_out = false;
    for (;;) {
        long left = deadline - cert_now_ms();
        if (left <= 0) {
            timed_out = true;
            break;
        }
        struct pollfd p = {.fd = pfd[0], .events = POLLIN};
        int pr = poll(&p, 1, (int)left);
        if (pr < 0 && errno == EINTR)
            continue;
        if (pr <= 0)
            continue;
        if (n == cap) {
            cap *= 2;
            buf = realloc(buf, cap + 1);
            assert_non_null(buf);
        }
        ssize_t r = read(pfd[0], buf + n, cap - n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        n += (size_t)r;
    }
    close(pfd[0]);
    buf[n] = '\0';
    if (timed_out)
        kill(pid, SIGKILL);
    int status;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    if (timed_out) {
        print_error("%s did not finish within %d ms; output:\n%s\n", argv[0], CERT_RUN_TIMEOUT,
                    buf);
        free(buf);
        fail();
    }
    if (out)
        *out = buf;
    else
        free(buf);
    if (WIFEXITED(status))
        return WEXITSTATUS(status);
    return 128 + WTERMSIG(status);
}

#define MAX_ARGS 32

static int run_va(const char *first, const char *second, va_list ap, char **out)
{
    const char *argv[MAX_ARGS + 1];
    int n = 0;
    argv[n++] = first;
    if (second)
        argv[n++] = second;
    const char *a;
    while ((a = va_arg(ap, const char *)) != NULL) {
        assert_true(n < MAX_ARGS);
        argv[n++] = a;
    }
    argv[n] = NULL;
    return run_argv(argv, out);
}

/* gatemq-cert ARGS... NULL, through /bin/sh (an exec bit lost in a copy does
 * not matter). Returns the exit status; *out gets the output if out. */
static int cert(char **out, ...)
{
    va_list ap;
    va_start(ap, out);
    int rc = run_va("/bin/sh", cert_script, ap, out);
    va_end(ap);
    return rc;
}

/* openssl ARGS... NULL. */
static int ossl(char **out, ...)
{
    va_list ap;
    va_start(ap, out);
    int rc = run_va("openssl", NULL, ap, out);
    va_end(ap);
    return rc;
}

/* Fail with the output unless the status is as expected. */
static void expect_status(int rc, int want, const char *out, const char *what, int line)
{
    bool ok = want < 0 ? rc != 0 : rc == want;
    if (!ok) {
        print_error("line %d: %s: exit status %d, expected %s%d; output:\n%s\n", line, what, rc,
                    want < 0 ? "non-zero, not " : "", want < 0 ? 0 : want, out ? out : "");
        fail();
    }
}
#define EXPECT_OK(rc, out, what) expect_status(rc, 0, out, what, __LINE__)
#define EXPECT_FAIL(rc, out, what) expect_status(rc, -1, out, what, __LINE__)

static void expect_contains(const char *hay, const char *needle, int line)
{
    if (!hay || !strstr(hay, needle)) {
        print_error("line %d: expected to find \"%s\" in:\n%s\n", line, needle, hay ? hay : "");
        fail();
    }
}
#define EXPECT_CONTAINS(hay, needle) expect_contains(hay, needle, __LINE__)

static void expect_lacks(const char *hay, const char *needle, int line)
{
    if (hay && strstr(hay, needle)) {
        print_error("line %d: did not expect \"%s\" in:\n%s\n", line, needle, hay);
        fail();
    }
}
#define EXPECT_LACKS(hay, needle) expect_lacks(hay, needle, __LINE__)

/* ---- fixture: a fresh temporary directory per test ----------------------- */

typedef struct fixture {
    char dir[PATH_MAX];  /* the temporary directory */
    char *pki;           /* <dir>/pki: the CA directory under test */
} fixture;

static int group_setup(void **state)
{
    if (!find_repo()) {
        fprintf(stderr, "it_certs: cannot find tools/gatemq-cert (set GATEMQ_SRC)\n");
        return -1;
    }
    return 0;
}

static int setup(void **state)
{
    fixture *fx = calloc(1, sizeof *fx);
    if (!fx)
        return -1;
    const char *tmp = getenv("TMPDIR");
    snprintf(fx->dir, sizeof fx->dir, "%s/gatemq-it-certs.XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(fx->dir)) {
        free(fx);
        return -1;
    }
    fx->pki = cert_path(fx->dir, "pki");
    *state = fx;
    return 0;
}

static int teardown(void **state)
{
    fixture *fx = *state;
    if (!fx)
        return 0;
    it_remove_tree(fx->dir);
    free(fx->pki);
    free(fx);
    return 0;
}

#define CERT_TEST(f) cmocka_unit_test_setup_teardown(f, setup, teardown)

/* ---- shared steps ---------------------------------------------------------- */

static void make_ca(const fixture *fx)
{
    char *out = NULL;
    int rc = cert(&out, "ca", fx->pki, NULL);
    EXPECT_OK(rc, out, "gatemq-cert ca");
    free(out);
}

static void make_device(const fixture *fx, const char *company, const char *device)
{
    char *out = NULL;
    int rc = cert(&out, "device", fx->pki, company, device, NULL);
    EXPECT_OK(rc, out, "gatemq-cert device");
    free(out);
}

/* <pki>/devices/COMPANY/DEVICE.EXT */
static char *device_file(const fixture *fx, const char *company, const char *device,
                         const char *ext)
{
    char rel[PATH_MAX];
    snprintf(rel, sizeof rel, "devices/%s/%s.%s", company, device, ext);
    return cert_path(fx->pki, rel);
}

/* openssl verify -CAfile <cafile> [extra...] <crt>: exit status, output. */
static int verify(const char *cafile, const char *crt, char **out)
{
    return ossl(out, "verify", "-CAfile", cafile, crt, NULL);
}

static void expect_verifies(const fixture *fx, const char *crt, const char *purpose)
{
    char *ca = cert_path(fx->pki, "ca.crt"), *out = NULL;
    int rc = ossl(&out, "verify", "-CAfile", ca, "-purpose", purpose, crt, NULL);
    EXPECT_OK(rc, out, "openssl verify");
    EXPECT_CONTAINS(out, ": OK");
    free(out);
    free(ca);
}

/* Subject in RFC 2253 form (most specific first: "CN=x,O=y"). */
static char *subject_of(const char *crt)
{
    char *out = NULL;
    int rc = ossl(&out, "x509", "-in", crt, "-noout", "-subject", "-nameopt", "RFC2253", NULL);
    EXPECT_OK(rc, out, "openssl x509 -subject");
    char *nl = strchr(out, '\n');
    if (nl)
        *nl = '\0';
    return out;
}

static void expect_subject(const char *crt, const char *want)
{
    char *s = subject_of(crt);
    if (strcmp(s, want) != 0) {
        print_error("%s: subject \"%s\", expected \"%s\"\n", crt, s, want);
        free(s);
        fail();
    }
    free(s);
}

static char *x509_text(const char *crt)
{
    char *out = NULL;
    int rc = ossl(&out, "x509", "-in", crt, "-noout", "-text", NULL);
    EXPECT_OK(rc, out, "openssl x509 -text");
    return out;
}

static void expect_mode_0600(const char *path)
{
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    if ((st.st_mode & 07777) != 0600) {
        print_error("%s: mode %04o, expected 0600\n", path, (unsigned)(st.st_mode & 07777));
        fail();
    }
}

/* ---- tests ------------------------------------------------------------------ */

static void test_help_documents_every_command(void **state)
{
    char *out = NULL;
    int rc = cert(&out, "--help", NULL);
    EXPECT_OK(rc, out, "gatemq-cert --help");
    static const char *const words[] = {"ca DIR", "server DIR", "device DIR", "revoke DIR",
                                        "crl DIR", "dev DIR", "expired DIR", "foreign DIR",
                                        "nocompany DIR", "--rsa", "--san-uri", "--ou",
                                        "Test helpers"};
    for (size_t i = 0; i < sizeof words / sizeof words[0]; i++)
        EXPECT_CONTAINS(out, words[i]);
    free(out);

    rc = cert(&out, "frobnicate", NULL);
    EXPECT_FAIL(rc, out, "unknown command");
    EXPECT_CONTAINS(out, "unknown command");
    free(out);
}

/* ca: ca.key 0600, self-signed EC P-256 CA with keyCertSign+cRLSign, an
 * empty CRL; a second `ca` is refused and leaves the CA untouched. */
static void test_ca_created_once_and_never_overwritten(void **state)
{
    fixture *fx = *state;
    char *out = NULL;
    int rc = cert(&out, "ca", fx->pki, "--name", "Plant CA", "--days", "30", NULL);
    EXPECT_OK(rc, out, "gatemq-cert ca");
    free(out);

    char *key = cert_path(fx->pki, "ca.key"), *crt = cert_path(fx->pki, "ca.crt");
    expect_mode_0600(key);
    expect_subject(crt, "subject=CN=Plant CA");
    rc = verify(crt, crt, &out);
    EXPECT_OK(rc, out, "CA verifies itself");
    free(out);
    char *text = x509_text(crt);
    EXPECT_CONTAINS(text, "CA:TRUE");
    EXPECT_CONTAINS(text, "Certificate Sign, CRL Sign");
    EXPECT_CONTAINS(text, "prime256v1");
    free(text);

    size_t len1, len2;
    char *before = read_file(crt, &len1);
    char *keybefore = read_file(key, NULL);
    assert_non_null(before);
    rc = cert(&out, "ca", fx->pki, NULL);
    EXPECT_FAIL(rc, out, "second gatemq-cert ca");
    EXPECT_CONTAINS(out, "already has a CA");
    free(out);
    char *after = read_file(crt, &len2);
    char *keyafter = read_file(key, NULL);
    assert_int_equal(len1, len2);
    assert_memory_equal(before, after, len1);
    assert_string_equal(keybefore, keyafter);
    free(before), free(after), free(keybefore), free(keyafter);

    char *crl = cert_path(fx->pki, "crl.pem");
    rc = ossl(&out, "crl", "-in", crl, "-noout", "-text", NULL);
    EXPECT_OK(rc, out, "openssl crl");
    EXPECT_CONTAINS(out, "Version 2");
    EXPECT_CONTAINS(out, "No Revoked Certificates");
    free(out);
    free(crl), free(key), free(crt);
}

/* device: O=COMPANY, CN=DEVICE_ID, clientAuth, chains to the CA, key 0600;
 * --ou and --san-uri land in the certificate; re-issuing is refused. */
static void test_device_subject_chain_and_usage(void **state)
{
    fixture *fx = *state;
    make_ca(fx);
    make_device(fx, "acme", "gw-0001");

    char *crt = device_file(fx, "acme", "gw-0001", "crt");
    char *key = device_file(fx, "acme", "gw-0001", "key");
    expect_verifies(fx, crt, "sslclient");
    expect_subject(crt, "subject=CN=gw-0001,O=acme");
    expect_mode_0600(key);
    char *text = x509_text(crt);
    EXPECT_CONTAINS(text, "TLS Web Client Authentication");
    EXPECT_LACKS(text, "TLS Web Server Authentication");
    EXPECT_CONTAINS(text, "CA:FALSE");
    EXPECT_CONTAINS(text, "prime256v1");
    free(text);

    /* The key belongs to the certificate. */
    char *pub1 = NULL, *pub2 = NULL;
    EXPECT_OK(ossl(&pub1, "x509", "-in", crt, "-noout", "-pubkey", NULL), pub1, "x509 -pubkey");
    EXPECT_OK(ossl(&pub2, "pkey", "-in", key, "-pubout", NULL), pub2, "pkey -pubout");
    assert_string_equal(pub1, pub2);
    free(pub1), free(pub2);

    char *out = NULL;
    int rc = cert(&out, "device", fx->pki, "acme", "gw-0001", NULL);
    EXPECT_FAIL(rc, out, "re-issuing an existing device");
    EXPECT_CONTAINS(out, "already exists");
    free(out);

    rc = cert(&out, "device", fx->pki, "acme", "gw-0002", "--ou", "line-3", "--san-uri",
              "urn:gatemq:company:acme", "--days", "10", NULL);
    EXPECT_OK(rc, out, "device with --ou --san-uri");
    free(out);
    char *crt2 = device_file(fx, "acme", "gw-0002", "crt");
    expect_verifies(fx, crt2, "sslclient");
    expect_subject(crt2, "subject=CN=gw-0002,OU=line-3,O=acme");
    text = x509_text(crt2);
    EXPECT_CONTAINS(text, "URI:urn:gatemq:company:acme");
    free(text);
    free(crt2), free(crt), free(key);
}

/* --rsa gives RSA 2048 keys for the CA and a device. */
static void test_rsa_keys(void **state)
{
    fixture *fx = *state;
    char *out = NULL;
    int rc = cert(&out, "ca", fx->pki, "--rsa", NULL);
    EXPECT_OK(rc, out, "ca --rsa");
    free(out);
    rc = cert(&out, "device", fx->pki, "globex", "gw-0101", "--rsa", NULL);
    EXPECT_OK(rc, out, "device --rsa");
    free(out);
    char *ca = cert_path(fx->pki, "ca.crt");
    char *crt = device_file(fx, "globex", "gw-0101", "crt");
    expect_verifies(fx, crt, "sslclient");
    char *text = x509_text(ca);
    EXPECT_CONTAINS(text, "rsaEncryption");
    EXPECT_CONTAINS(text, "(2048 bit)");
    free(text);
    text = x509_text(crt);
    EXPECT_CONTAINS(text, "rsaEncryption");
    EXPECT_CONTAINS(text, "(2048 bit)");
    free(text);
    free(ca), free(crt);
}

/* server: SANs for names and IPs, serverAuth, chain file leaf + CA. */
static void test_server_sans_and_chain(void **state)
{
    fixture *fx = *state;
    make_ca(fx);
    char *out = NULL;
    int rc = cert(&out, "server", fx->pki, "localhost", "broker.example.com", "--ip",
                  "127.0.0.1", "--ip", "::1", NULL);
    EXPECT_OK(rc, out, "gatemq-cert server");
    free(out);

    char *crt = cert_path(fx->pki, "server.crt"), *key = cert_path(fx->pki, "server.key");
    char *ca = cert_path(fx->pki, "ca.crt");
    expect_verifies(fx, crt, "sslserver");
    expect_mode_0600(key);
    expect_subject(crt, "subject=CN=localhost");
    char *text = x509_text(crt);
    EXPECT_CONTAINS(text, "TLS Web Server Authentication");
    EXPECT_CONTAINS(text, "DNS:localhost");
    EXPECT_CONTAINS(text, "DNS:broker.example.com");
    EXPECT_CONTAINS(text, "IP Address:127.0.0.1");
    EXPECT_CONTAINS(text, "IP Address:0:0:0:0:0:0:0:1");
    free(text);

    static const char *const checks[][2] = {
        {"-verify_hostname", "localhost"},
        {"-verify_hostname", "broker.example.com"},
        {"-verify_ip", "127.0.0.1"},
        {"-verify_ip", "::1"},
    };
    for (size_t i = 0; i < sizeof checks / sizeof checks[0]; i++) {
        rc = ossl(&out, "verify", "-CAfile", ca, checks[i][0], checks[i][1], crt, NULL);
        EXPECT_OK(rc, out, checks[i][1]);
        free(out);
    }
    rc = ossl(&out, "verify", "-CAfile", ca, "-verify_hostname", "other.example.com", crt, NULL);
    EXPECT_FAIL(rc, out, "a name not in the SANs");
    free(out);

    /* Chain-ready: the server certificate, then the CA certificate. */
    char *chain = read_file(crt, NULL), *cacert = read_file(ca, NULL);
    assert_non_null(chain);
    assert_int_equal(count_substr(chain, "-----BEGIN CERTIFICATE-----"), 2);
    EXPECT_CONTAINS(chain, cacert);
    assert_true(strstr(chain, cacert) != chain);
    free(chain), free(cacert);

    /* Not replaced without --force; replaced with it. */
    rc = cert(&out, "server", fx->pki, "localhost", NULL);
    EXPECT_FAIL(rc, out, "server again without --force");
    EXPECT_CONTAINS(out, "--force");
    free(out);
    rc = cert(&out, "server", fx->pki, "mqtt.example.com", "--force", NULL);
    EXPECT_OK(rc, out, "server --force");
    free(out);
    expect_subject(crt, "subject=CN=mqtt.example.com");
    free(crt), free(key), free(ca);
}

/* revoke: the revoked device fails `verify -crl_check`, the other passes;
 * the CRL is a PEM X.509 v2 CRL listing the serial. */
static void test_revoked_device_fails_crl_check(void **state)
{
    fixture *fx = *state;
    make_ca(fx);
    make_device(fx, "acme", "gw-0001");
    make_device(fx, "acme", "gw-0002");
    char *ca = cert_path(fx->pki, "ca.crt"), *crl = cert_path(fx->pki, "crl.pem");
    char *c1 = device_file(fx, "acme", "gw-0001", "crt");
    char *c2 = device_file(fx, "acme", "gw-0002", "crt");

    /* Before: both pass with the (empty) CRL. */
    char *out = NULL;
    int rc = ossl(&out, "verify", "-crl_check", "-CAfile", ca, "-CRLfile", crl, c1, NULL);
    EXPECT_OK(rc, out, "verify -crl_check before revoke");
    free(out);

    rc = cert(&out, "revoke", fx->pki, "acme", "gw-0001", "--reason", "keyCompromise", NULL);
    EXPECT_OK(rc, out, "gatemq-cert revoke");
    free(out);

    rc = ossl(&out, "verify", "-crl_check", "-CAfile", ca, "-CRLfile", crl, c1, NULL);
    EXPECT_FAIL(rc, out, "verify -crl_check of the revoked device");
    EXPECT_CONTAINS(out, "certificate revoked");
    free(out);
    rc = ossl(&out, "verify", "-crl_check", "-CAfile", ca, "-CRLfile", crl, c2, NULL);
    EXPECT_OK(rc, out, "verify -crl_check of the other device");
    free(out);

    char *serial = NULL;
    rc = ossl(&serial, "x509", "-in", c1, "-noout", "-serial", NULL);
    EXPECT_OK(rc, serial, "x509 -serial");
    char *nl = strchr(serial, '\n');
    if (nl)
        *nl = '\0';
    char *pem = read_file(crl, NULL);
    assert_non_null(pem);
    assert_true(strncmp(pem, "-----BEGIN X509 CRL-----", 24) == 0);
    free(pem);
    rc = ossl(&out, "crl", "-in", crl, "-noout", "-text", NULL);
    EXPECT_OK(rc, out, "openssl crl -text");
    EXPECT_CONTAINS(out, "Version 2");
    EXPECT_CONTAINS(out, "CRL Number");
    EXPECT_CONTAINS(out, serial + strlen("serial="));
    EXPECT_CONTAINS(out, "Key Compromise");
    free(out);
    rc = ossl(&out, "crl", "-in", crl, "-noout", "-verify", "-CAfile", ca, NULL);
    EXPECT_OK(rc, out, "CRL signed by the CA");
    free(out);

    /* Revoking again is harmless; `crl` regenerates and keeps the entry. */
    rc = cert(&out, "revoke", fx->pki, "acme", "gw-0001", NULL);
    EXPECT_OK(rc, out, "second revoke");
    EXPECT_CONTAINS(out, "already revoked");
    free(out);
    rc = cert(&out, "crl", fx->pki, "--crl-days", "7", NULL);
    EXPECT_OK(rc, out, "gatemq-cert crl");
    free(out);
    rc = ossl(&out, "verify", "-crl_check", "-CAfile", ca, "-CRLfile", crl, c1, NULL);
    EXPECT_FAIL(rc, out, "still revoked after crl");
    free(out);
    rc = ossl(&out, "verify", "-crl_check", "-CAfile", ca, "-CRLfile", crl, c2, NULL);
    EXPECT_OK(rc, out, "other still good after crl");
    free(out);

    rc = cert(&out, "revoke", fx->pki, "acme", "gw-9999", NULL);
    EXPECT_FAIL(rc, out, "revoking an unknown device");
    EXPECT_CONTAINS(out, "no such device certificate");
    free(out);
    free(serial), free(ca), free(crl), free(c1), free(c2);
}

/* expired: signed by the CA, subject as a device, but past its notAfter. */
static void test_expired_device_is_reported_expired(void **state)
{
    fixture *fx = *state;
    make_ca(fx);
    char *out = NULL;
    int rc = cert(&out, "expired", fx->pki, "acme", "gw-old", NULL);
    EXPECT_OK(rc, out, "gatemq-cert expired");
    free(out);
    char *crt = device_file(fx, "acme", "gw-old", "crt");
    char *ca = cert_path(fx->pki, "ca.crt");
    expect_subject(crt, "subject=CN=gw-old,O=acme");
    rc = verify(ca, crt, &out);
    EXPECT_FAIL(rc, out, "verify an expired certificate");
    EXPECT_CONTAINS(out, "certificate has expired");
    free(out);
    rc = ossl(&out, "x509", "-in", crt, "-noout", "-checkend", "0", NULL);
    EXPECT_FAIL(rc, out, "x509 -checkend 0");
    free(out);
    /* Only the dates are wrong: without the time check it verifies. */
    rc = ossl(&out, "verify", "-no_check_time", "-CAfile", ca, crt, NULL);
    EXPECT_OK(rc, out, "verify -no_check_time");
    free(out);
    free(crt), free(ca);
}

/* foreign: a certificate from another CA (same CA name, other key) does not
 * verify against DIR/ca.crt, but does against its own CA. */
static void test_foreign_device_does_not_verify(void **state)
{
    fixture *fx = *state;
    make_ca(fx);
    char *out = NULL;
    int rc = cert(&out, "foreign", fx->pki, "acme", "gw-0001", NULL);
    EXPECT_OK(rc, out, "gatemq-cert foreign");
    free(out);
    char *crt = cert_path(fx->pki, "foreign/devices/acme/gw-0001.crt");
    char *ca = cert_path(fx->pki, "ca.crt");
    char *fca = cert_path(fx->pki, "foreign/ca.crt");
    expect_subject(crt, "subject=CN=gw-0001,O=acme");
    rc = verify(ca, crt, &out);
    EXPECT_FAIL(rc, out, "foreign certificate against the real CA");
    free(out);
    rc = verify(fca, crt, &out);
    EXPECT_OK(rc, out, "foreign certificate against its own CA");
    free(out);
    /* The throwaway CA impersonates the real one's name. */
    char *s1 = subject_of(ca), *s2 = subject_of(fca);
    assert_string_equal(s1, s2);
    char *a = read_file(ca, NULL), *b = read_file(fca, NULL);
    assert_string_not_equal(a, b);
    free(s1), free(s2), free(a), free(b);
    free(crt), free(ca), free(fca);
}

/* nocompany: CN only, still chains to the CA. */
static void test_nocompany_has_no_o(void **state)
{
    fixture *fx = *state;
    make_ca(fx);
    char *out = NULL;
    int rc = cert(&out, "nocompany", fx->pki, "gw-lost", NULL);
    EXPECT_OK(rc, out, "gatemq-cert nocompany");
    free(out);
    char *crt = cert_path(fx->pki, "nocompany/gw-lost.crt");
    expect_verifies(fx, crt, "sslclient");
    expect_subject(crt, "subject=CN=gw-lost");
    free(crt);
}

/* Names that cannot be a topic level (or a file name) are refused with a
 * clear message, and nothing is written. */
static void test_bad_company_and_device_names_refused(void **state)
{
    fixture *fx = *state;
    make_ca(fx);
    static const char *const bad[] = {
        "", "a/b", "a+b", "a#b", "#", "+", "a b", "a\tb", "a\nb", "a\x01z", "a\x7fz",
        "$SYS", ".", "..", "\xff\xfe",
        "x123456789012345678901234567890123456789012345678901234567890abcd",
    };
    char *devices = cert_path(fx->pki, "devices");
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char *out = NULL;
        int rc = cert(&out, "device", fx->pki, bad[i], "gw-1", NULL);
        if (rc == 0 || !strstr(out, "COMPANY")) {
            print_error("company #%zu \"%s\": exit %d, output:\n%s\n", i, bad[i], rc, out);
            fail();
        }
        free(out);
        rc = cert(&out, "device", fx->pki, "acme", bad[i], NULL);
        if (rc == 0 || !strstr(out, "DEVICE_ID")) {
            print_error("device id #%zu \"%s\": exit %d, output:\n%s\n", i, bad[i], rc, out);
            fail();
        }
        free(out);
        assert_false(it_file_exists(devices));
    }
    /* The refusal names the rule. */
    char *out = NULL;
    int rc = cert(&out, "device", fx->pki, "ac/me", "gw-1", NULL);
    EXPECT_FAIL(rc, out, "slash in company");
    EXPECT_CONTAINS(out, "topic level");
    free(out);
    /* Good names, non-ASCII UTF-8 included, are accepted. */
    make_device(fx, "m\xc3\xbcller_AG", "gw-0001.a");
    char *crt = device_file(fx, "m\xc3\xbcller_AG", "gw-0001.a", "crt");
    expect_verifies(fx, crt, "sslclient");
    char *text = NULL;
    rc = ossl(&text, "x509", "-in", crt, "-noout", "-subject", "-nameopt", "RFC2253,-esc_msb",
              NULL);
    EXPECT_OK(rc, text, "subject");
    EXPECT_CONTAINS(text, "O=m\xc3\xbcller_AG");
    free(text);
    free(crt), free(devices);
}

static void test_usage_errors(void **state)
{
    fixture *fx = *state;
    char *out = NULL;
    int rc = cert(&out, "device", fx->pki, "acme", "gw-1", NULL);
    EXPECT_FAIL(rc, out, "device without a CA");
    EXPECT_CONTAINS(out, "no such directory");
    free(out);
    make_ca(fx);
    rc = cert(&out, "device", fx->pki, "acme", "gw-1", "--days", "soon", NULL);
    assert_int_equal(rc, 2);
    EXPECT_CONTAINS(out, "--days");
    free(out);
    rc = cert(&out, "device", fx->pki, "acme", NULL);
    assert_int_equal(rc, 2);
    EXPECT_CONTAINS(out, "usage");
    free(out);
    rc = cert(&out, "ca", fx->pki, "--ip", "1.2.3.4", NULL);
    assert_int_equal(rc, 2);
    EXPECT_CONTAINS(out, "does not apply");
    free(out);
    rc = cert(&out, "server", fx->pki, "bad_host!", NULL);
    EXPECT_FAIL(rc, out, "bad host name");
    free(out);
    rc = cert(&out, "device", fx->pki, "acme", "gw-1", "--san-uri", "no uri,DNS:evil", NULL);
    EXPECT_FAIL(rc, out, "bad SAN URI");
    free(out);
    char *empty = cert_path(fx->dir, "empty");
    assert_int_equal(mkdir(empty, 0755), 0);
    rc = cert(&out, "device", empty, "acme", "gw-1", NULL);
    EXPECT_FAIL(rc, out, "device in a directory without a CA");
    EXPECT_CONTAINS(out, "has no CA");
    free(out);
    free(empty);
}

/* ---- dev ------------------------------------------------------------------- */

typedef struct snap_file {
    char *path;
    char *data;
    size_t len;
    mode_t mode;
} snap_file;

static snap_file *snap_files;
static size_t snap_n;

static int snap_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)ftw;
    if (flag != FTW_F)
        return 0;
    snap_file *v = realloc(snap_files, (snap_n + 1) * sizeof *v);
    if (!v)
        return -1;
    snap_files = v;
    snap_file *f = &snap_files[snap_n++];
    f->path = cert_strdup(path);
    f->data = read_file(path, &f->len);
    f->mode = st->st_mode;
    return f->data ? 0 : -1;
}

static int snap_cmp(const void *a, const void *b)
{
    return strcmp(((const snap_file *)a)->path, ((const snap_file *)b)->path);
}

/* Every regular file under dir, sorted by path. */
static snap_file *snapshot(const char *dir, size_t *n)
{
    snap_files = NULL;
    snap_n = 0;
    assert_int_equal(nftw(dir, snap_entry, 16, FTW_PHYS), 0);
    qsort(snap_files, snap_n, sizeof *snap_files, snap_cmp);
    *n = snap_n;
    return snap_files;
}

static void snapshot_free(snap_file *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(s[i].path), free(s[i].data);
    free(s);
}

/* dev: CA, server for localhost/127.0.0.1/::1, acme/gw-0001, globex/gw-0101,
 * CRL; the printed commands name the files; a second run changes nothing. */
static void test_dev_setup_is_idempotent(void **state)
{
    fixture *fx = *state;
    char *out1 = NULL, *out2 = NULL;
    int rc = cert(&out1, "dev", fx->pki, NULL);
    EXPECT_OK(rc, out1, "first gatemq-cert dev");

    char *ca = cert_path(fx->pki, "ca.crt"), *srv = cert_path(fx->pki, "server.crt");
    expect_verifies(fx, srv, "sslserver");
    static const char *const where[][2] = {{"-verify_hostname", "localhost"},
                                          {"-verify_ip", "127.0.0.1"},
                                          {"-verify_ip", "::1"}};
    for (size_t i = 0; i < 3; i++) {
        char *o = NULL;
        rc = ossl(&o, "verify", "-CAfile", ca, where[i][0], where[i][1], srv, NULL);
        EXPECT_OK(rc, o, where[i][1]);
        free(o);
    }
    static const char *const devs[][2] = {{"acme", "gw-0001"}, {"globex", "gw-0101"}};
    for (size_t i = 0; i < 2; i++) {
        char *crt = device_file(fx, devs[i][0], devs[i][1], "crt");
        char want[128];
        snprintf(want, sizeof want, "subject=CN=%s,O=%s", devs[i][1], devs[i][0]);
        expect_verifies(fx, crt, "sslclient");
        expect_subject(crt, want);
        char *crl = cert_path(fx->pki, "crl.pem"), *o = NULL;
        rc = ossl(&o, "verify", "-crl_check", "-CAfile", ca, "-CRLfile", crl, crt, NULL);
        EXPECT_OK(rc, o, "dev device against the dev CRL");
        free(o), free(crl);

        /* The printed command lines use exactly these files. */
        char *key = device_file(fx, devs[i][0], devs[i][1], "key");
        char line[PATH_MAX * 3];
        snprintf(line, sizeof line, "--cafile %s --cert %s --key %s -i %s", ca, crt, key,
                 devs[i][1]);
        EXPECT_CONTAINS(out1, line);
        free(key), free(crt);
    }
    EXPECT_CONTAINS(out1, "mosquitto_pub -h 127.0.0.1 -p 8883 ");
    EXPECT_CONTAINS(out1, "mosquitto_sub -h 127.0.0.1 -p 8883 ");

    size_t n1, n2;
    snap_file *s1 = snapshot(fx->pki, &n1);
    rc = cert(&out2, "dev", fx->pki, NULL);
    EXPECT_OK(rc, out2, "second gatemq-cert dev");
    snap_file *s2 = snapshot(fx->pki, &n2);
    assert_int_equal(n1, n2);
    for (size_t i = 0; i < n1; i++) {
        assert_string_equal(s1[i].path, s2[i].path);
        if (s1[i].len != s2[i].len || memcmp(s1[i].data, s2[i].data, s1[i].len) != 0 ||
            s1[i].mode != s2[i].mode) {
            print_error("%s changed on the second dev run\n", s1[i].path);
            fail();
        }
    }
    /* The second run only prints: the same commands, nothing created. */
    EXPECT_LACKS(out2, "created");
    const char *cmds1 = strstr(out1, "mosquitto_"), *cmds2 = strstr(out2, "mosquitto_");
    assert_non_null(cmds1);
    assert_non_null(cmds2);
    assert_string_equal(cmds1, cmds2);
    snapshot_free(s1, n1);
    snapshot_free(s2, n2);
    free(out1), free(out2), free(ca), free(srv);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        CERT_TEST(test_help_documents_every_command),
        CERT_TEST(test_ca_created_once_and_never_overwritten),
        CERT_TEST(test_device_subject_chain_and_usage),
        CERT_TEST(test_rsa_keys),
        CERT_TEST(test_server_sans_and_chain),
        CERT_TEST(test_revoked_device_fails_crl_check),
        CERT_TEST(test_expired_device_is_reported_expired),
        CERT_TEST(test_foreign_device_does_not_verify),
        CERT_TEST(test_nocompany_has_no_o),
        CERT_TEST(test_bad_company_and_device_names_refused),
        CERT_TEST(test_usage_errors),
        CERT_TEST(test_dev_setup_is_idempotent),
    };
    return cmocka_run_group_tests(tests, group_setup, NULL);
}
