/*
 * passwd.h - operator passwords in the mosquitto_passwd "$7$" format.
 *
 * A password file holds one user per line:
 *
 *     name:$7$<iterations>$<base64 salt>$<base64 hash>
 *
 * hash = PBKDF2-HMAC-SHA512(password, salt, iterations, 64 bytes), the salt
 * is 12 random bytes, and both are standard base64 with '=' padding, which
 * is what mosquitto_passwd writes (16 and 88 characters). Blank lines and
 * lines whose first non-blank character is '#' are ignored. A trailing CR
 * (a file edited on Windows) is tolerated. Anything else that does not
 * parse is an error naming file:line: refusing the whole file is safer than
 * silently dropping a user, which would look like a wrong password.
 *
 * Nothing here touches sockets or the event loop. Key derivation is slow by
 * design (milliseconds): the broker runs passwd_verify/passwd_burn on a
 * worker thread. All functions are thread-safe: none keeps shared state, and
 * a loaded passwd_file is read-only, so any number of threads may look up
 * in it concurrently.
 *
 * Errors: every function returning int returns 0 (PASSWD_OK) on success or
 * a negative passwd_err. passwd_strerror() names the code; functions that
 * take err/errlen also write a full message (with file:line where there is
 * one) into err, always NUL-terminated, and leave outputs untouched.
 *
 * Allocation goes through broker/alloc.h, except the small HMAC state that
 * mbedtls allocates itself inside passwd_verify/passwd_burn/passwd_make.
 */
#ifndef GATEMQ_PASSWD_H
#define GATEMQ_PASSWD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* What gatemq writes. Any stored count in [1, PASSWD_MAX_ITERATIONS] is
 * accepted, so files from mosquitto_passwd (which writes 101) still work. */
#define PASSWD_DEFAULT_ITERATIONS 12000u
/* Above this one login would cost the worker pool seconds: such a line is a
 * typo or an attempt to stall the broker, so it is refused at load. */
#define PASSWD_MAX_ITERATIONS 1000000u
#define PASSWD_SALT_LEN 12
#define PASSWD_HASH_LEN 64
/* Room for the longest "$7$..." string passwd_make/passwd_format write,
 * NUL included: "$7$" + 7 digits + "$" + 16 + "$" + 88 + NUL, rounded up. */
#define PASSWD_STR_MAX 128

typedef enum passwd_err {
    PASSWD_OK = 0,
    PASSWD_E_NOMEM = -1,       /* allocation failed */
    PASSWD_E_IO = -2,          /* open/read/write/fsync/rename failed */
    PASSWD_E_FORMAT = -3,      /* not name:$type$... or fields missing */
    PASSWD_E_TYPE = -4,        /* a hash type other than $7$ (e.g. $6$) */
    PASSWD_E_BASE64 = -5,      /* salt or hash is not valid base64 */
    PASSWD_E_ITERATIONS = -6,  /* iteration count 0, not a number, or absurd */
    PASSWD_E_LENGTH = -7,      /* salt not 12 bytes or hash not 64 bytes */
    PASSWD_E_NAME = -8,        /* empty or unusable user name */
    PASSWD_E_DUPLICATE = -9,   /* the same user on two lines */
    PASSWD_E_NOUSER = -10,     /* delete of a user that is not in the file */
    PASSWD_E_ARG = -11,        /* output buffer too small, bad argument */
    PASSWD_E_CRYPTO = -12,     /* mbedtls or the random source failed */
} passwd_err;

const char *passwd_strerror(int err);

/* One stored password: a plain value with no pointers, so a caller may copy
 * it (e.g. into a job for a worker thread) and drop the file it came from. */
typedef struct passwd_hash {
    unsigned iterations;
    uint8_t salt[PASSWD_SALT_LEN];
    size_t salt_len;
    uint8_t hash[PASSWD_HASH_LEN];
    size_t hash_len;
} passwd_hash;

/* Parse s[0..len), the part of a line after "name:" (no newline), into *out.
 * Strict: exactly "$7$", decimal iterations, '$', base64 salt, '$', base64
 * hash, nothing after. On error *out is unspecified. */
int passwd_parse_hash(const char *s, size_t len, passwd_hash *out);

/* Write h as "$7$..." into out (NUL-terminated). PASSWD_E_ARG if outlen is
 * too small (PASSWD_STR_MAX always suffices) or h is not well formed. */
int passwd_format(const passwd_hash *h, char *out, size_t outlen);

/* Does pw[0..pwlen) match h? Derives the key (slow) and compares in
 * constant time. False also if derivation fails. */
bool passwd_verify(const passwd_hash *h, const uint8_t *pw, size_t pwlen);

/* The same derivation as passwd_verify with a fixed salt and the result
 * thrown away: call it for a user who does not exist, with the iteration
 * count of real users (passwd_file_typical_iterations), so the reply time
 * does not tell which user names exist. */
void passwd_burn(unsigned iterations, const uint8_t *pw, size_t pwlen);

/* A fresh hash of pw with a random 12-byte salt from getrandom(2), written
 * into out as "$7$..." (the part after "name:"). iterations must be in
 * [1, PASSWD_MAX_ITERATIONS]; pass PASSWD_DEFAULT_ITERATIONS normally. */
int passwd_make(char *out, size_t outlen, const uint8_t *pw, size_t pwlen,
                unsigned iterations);

/* Is name[0..len) a user name this module can store? Not empty, no ':'
 * (the field separator), no control characters (a newline would split the
 * line), no leading '#' (a comment) and no leading or trailing blank (the
 * MQTT user name would then never match what an operator sees). */
bool passwd_name_valid(const char *name, size_t len);

/* ---- loaded password file (the broker's view) --------------------------- */

typedef struct passwd_file passwd_file;

/* Read and check every line of path. On success *out is a new file object
 * the caller frees with passwd_file_free. On error *out is left untouched,
 * nothing is leaked, and err holds "path:line: reason" (or "path: reason"
 * for I/O errors). A duplicate user is reported at its second line. */
int passwd_file_load(const char *path, passwd_file **out, char *err, size_t errlen);

/* The hash stored for name[0..len) (exact, case-sensitive), or NULL. The
 * pointer is valid until passwd_file_free(f). O(log n). */
const passwd_hash *passwd_file_lookup(const passwd_file *f, const char *name, size_t len);

/* Number of users. */
size_t passwd_file_count(const passwd_file *f);

/* The iteration count most users of f have (PASSWD_DEFAULT_ITERATIONS for an
 * empty file): what passwd_burn should spend for an unknown user. */
unsigned passwd_file_typical_iterations(const passwd_file *f);

/* Frees f; NULL is a no-op. */
void passwd_file_free(passwd_file *f);

/* ---- editing (the gatemq-passwd tool's view) ---------------------------- */

/* Set (hash != NULL) or delete (hash == NULL) user name[0..len) in the file
 * at path, where hash is a "$7$..." string (checked with passwd_parse_hash).
 *
 * Setting replaces the user's first line in place, or appends a line if the
 * user is new. Every other line (comments, blanks, other users, even lines
 * this module would refuse) is kept byte for byte; further lines of the
 * same user are dropped. Deleting a user who is not there is
 * PASSWD_E_NOUSER.
 *
 * create: start from an empty file instead of reading path (which need not
 * exist), as for a first user; otherwise path must exist. create with a NULL
 * hash is PASSWD_E_ARG.
 *
 * The new content goes to a temporary file in the same directory, which is
 * fsynced and renamed over path, and the directory is fsynced: a crash
 * leaves either the old or the new file, never a torn one. A new file gets
 * mode 0600; an existing file keeps its mode, owner and group (if the owner
 * cannot be kept, nothing is changed and the call fails). A symbolic link
 * at path is followed, so the link stays. Two editors racing on one file
 * may lose one update: run one at a time. On error the file is unchanged
 * and err holds the reason. */
int passwd_file_update(const char *path, const char *name, size_t len,
                       const char *hash, bool create, char *err, size_t errlen);

#endif
