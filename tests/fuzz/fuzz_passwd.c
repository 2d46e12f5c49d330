/*
 * fuzz_passwd.c - the password-file hash parser and loader.
 *
 * The whole input goes to passwd_parse_hash; an accepted hash must format
 * back to the same text (base64 is parsed strictly, so each value has one
 * spelling; only leading zeros of the iteration count may differ) and parse
 * back to the same value. The input is also loaded as a whole password file
 * through passwd_file_load. The loader only takes a path, so the file lives
 * in one memfd created at start-up and rewritten for every input, and is
 * opened as /proc/self/fd/N: no disk, no temporary names. An accepted file
 * is compared with a reference reader: same number of users, every user
 * found with the hash of its line, the typical iteration count the most
 * common one (the smallest among ties).
 */
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "auth/passwd.h"
#include "fuzz_util.h"

static int file_fd = -1;
static char file_path[64];

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    file_fd = memfd_create("fuzz_passwd", MFD_CLOEXEC);
    FUZZ_CHECK(file_fd >= 0);
    snprintf(file_path, sizeof file_path, "/proc/self/fd/%d", file_fd);
    return 0;
}

static bool hash_eq(const passwd_hash *a, const passwd_hash *b)
{
    return a->iterations == b->iterations && a->salt_len == b->salt_len &&
           a->hash_len == b->hash_len && memcmp(a->salt, b->salt, a->salt_len) == 0 &&
           memcmp(a->hash, b->hash, a->hash_len) == 0;
}

static void check_hash(const char *s, size_t len)
{
    passwd_hash h, h2;
    if (passwd_parse_hash(s, len, &h) != PASSWD_OK)
        return;
    FUZZ_CHECK(h.iterations >= 1 && h.iterations <= PASSWD_MAX_ITERATIONS);
    FUZZ_CHECK(h.salt_len == PASSWD_SALT_LEN && h.hash_len == PASSWD_HASH_LEN);
    char out[PASSWD_STR_MAX];
    FUZZ_CHECK(passwd_format(&h, out, sizeof out) == PASSWD_OK);
    FUZZ_CHECK(passwd_parse_hash(out, strlen(out), &h2) == PASSWD_OK && hash_eq(&h, &h2));
    bool leading_zero = len > 3 && s[3] == '0';
    if (!leading_zero)
        FUZZ_CHECK(strlen(out) == len && memcmp(out, s, len) == 0);
}

static bool blank(char c)
{
    return c == ' ' || c == '\t';
}

static const char *trim(const char *s, size_t *n)
{
    while (*n > 0 && (blank(s[*n - 1]) || s[*n - 1] == '\r'))
        (*n)--;
    while (*n > 0 && blank(*s)) {
        s++;
        (*n)--;
    }
    return s;
}

static int cmp_unsigned(const void *a, const void *b)
{
    unsigned x = *(const unsigned *)a, y = *(const unsigned *)b;
    return x < y ? -1 : x > y;
}

/* The file was accepted: every non-blank, non-comment line is name:hash. */
static void check_file(const passwd_file *f, const char *buf, size_t len)
{
    size_t users = 0;
    unsigned *its = malloc((len / 2 + 1) * sizeof *its);
    FUZZ_CHECK(its != NULL);
    for (size_t pos = 0; pos < len;) {
        const char *line = buf + pos;
        const char *nl = memchr(line, '\n', len - pos);
        size_t n = nl ? (size_t)(nl - line) : len - pos;
        pos += n + (nl ? 1 : 0);
        const char *s = trim(line, &n);
        if (n == 0 || s[0] == '#')
            continue;
        const char *colon = memchr(s, ':', n);
        FUZZ_CHECK(colon != NULL);
        size_t nn = (size_t)(colon - s), rn = n - nn - 1;
        const char *name = trim(s, &nn), *rest = trim(colon + 1, &rn);
        FUZZ_CHECK(passwd_name_valid(name, nn));
        passwd_hash h;
        FUZZ_CHECK(passwd_parse_hash(rest, rn, &h) == PASSWD_OK);
        const passwd_hash *got = passwd_file_lookup(f, name, nn);
        FUZZ_CHECK(got != NULL && hash_eq(got, &h));
        its[users++] = h.iterations;
    }
    FUZZ_CHECK(passwd_file_count(f) == users);
    unsigned typical = PASSWD_DEFAULT_ITERATIONS;
    qsort(its, users, sizeof *its, cmp_unsigned);
    for (size_t i = 0, j, best = 0; i < users; i = j) {
        for (j = i; j < users && its[j] == its[i]; j++)
            ;
        if (j - i > best) {
            best = j - i;
            typical = its[i];
        }
    }
    FUZZ_CHECK(passwd_file_typical_iterations(f) == typical);
    FUZZ_CHECK(passwd_file_lookup(f, "", 0) == NULL);
    free(its);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *s = (const char *)data;
    check_hash(s, size);

    FUZZ_CHECK(ftruncate(file_fd, 0) == 0);
    FUZZ_CHECK(pwrite(file_fd, data, size, 0) == (ssize_t)size);
    passwd_file *f = NULL;
    char err[256];
    err[0] = '\0';
    int rc = passwd_file_load(file_path, &f, err, sizeof err);
    if (rc == PASSWD_OK) {
        FUZZ_CHECK(f != NULL);
        check_file(f, s, size);
        passwd_file_free(f);
    } else {
        FUZZ_CHECK(f == NULL && rc < 0 && err[0] != '\0');
        FUZZ_CHECK(strncmp(err, file_path, strlen(file_path)) == 0);
        FUZZ_CHECK(rc != PASSWD_E_IO && rc != PASSWD_E_NOMEM);
    }
    return 0;
}
