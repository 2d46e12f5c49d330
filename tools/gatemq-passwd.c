/*
 * gatemq-passwd - add, change or delete an operator in a gatemq password
 * file (the mosquitto_passwd "$7$" format, so either tool can edit it).
 *
 *   gatemq-passwd [-c] [-I iterations] FILE USER
 *       Set USER's password. When standard input is a terminal, the password
 *       is asked twice on /dev/tty with echo off. Otherwise one line is read
 *       from standard input (without its newline), for scripts:
 *           printf '%s\n' "$pw" | gatemq-passwd FILE USER
 *   gatemq-passwd [-c] [-I iterations] -b FILE USER PASSWORD
 *       Batch mode, as in mosquitto_passwd. The password is visible to every
 *       user of the machine in the process list and may stay in the shell
 *       history: prefer the stdin form.
 *   gatemq-passwd -D FILE USER
 *       Delete USER.
 *
 *   -c  create FILE, replacing any existing content (default: FILE must
 *       exist). A new file has mode 0600; an existing one keeps its mode
 *       and owner.
 *   -I  PBKDF2 iterations (default 12000).
 *
 * The file is replaced atomically (see passwd_file_update in
 * auth/passwd.h). Exit status 0 on success, 1 on failure, 2 on bad usage.
 * Passwords are never echoed or printed.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <unistd.h>

#include "auth/passwd.h"

/* Longer input is refused rather than cut, so the stored password is
 * always exactly what was typed. */
#define PW_MAX 1024

static void usage(FILE *to)
{
    fprintf(to,
            "usage: gatemq-passwd [-c] [-I iterations] FILE USER\n"
            "       gatemq-passwd [-c] [-I iterations] -b FILE USER PASSWORD\n"
            "       gatemq-passwd -D FILE USER\n"
            "  -c  create FILE (replacing its content if it exists)\n"
            "  -I  PBKDF2-SHA512 iterations (default %u)\n"
            "  -b  take the password from the command line (visible in process lists)\n"
            "  -D  delete USER\n"
            "Without -b the password is asked twice on the terminal, or read as one\n"
            "line from standard input when that is not a terminal.\n",
            PASSWD_DEFAULT_ITERATIONS);
}

/* The terminal state to restore, also from a signal handler: a Ctrl-C at
 * the prompt must not leave the operator's terminal without echo. */
static int tty_fd = -1;
static struct termios tty_saved;
static volatile sig_atomic_t tty_echo_off;

static void tty_restore(void)
{
    if (tty_echo_off) {
        tcsetattr(tty_fd, TCSAFLUSH, &tty_saved);
        tty_echo_off = 0;
    }
}

static void on_signal(int sig)
{
    tty_restore();
    signal(sig, SIG_DFL);
    raise(sig);
}

/* Read one line from fd into buf (without '\n' or "\r\n"). Returns its
 * length, -1 on read error or end of input before any byte, -2 if longer
 * than PW_MAX. */
static long read_line(int fd, char *buf)
{
    size_t n = 0;
    bool any = false, too_long = false;
    for (;;) {
        char c;
        ssize_t r = read(fd, &c, 1);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return -1;
        if (r == 0) {
            if (!any)
                return -1;
            break;
        }
        any = true;
        if (c == '\n')
            break;
        if (n < PW_MAX)
            buf[n++] = c;
        else
            too_long = true;
    }
    if (too_long)
        return -2;
    if (n > 0 && buf[n - 1] == '\r')
        n--;
    return (long)n;
}

static long prompt(const char *text, char *buf)
{
    if (write(tty_fd, text, strlen(text)) < 0)
        return -1;
    return read_line(tty_fd, buf);
}

/* The password from the terminal (asked twice) or from stdin. Returns its
 * length or -1 after printing why. */
static long get_password(char *pw)
{
    if (!isatty(STDIN_FILENO)) {
        long n = read_line(STDIN_FILENO, pw);
        if (n == -1)
            fprintf(stderr, "gatemq-passwd: no password on standard input\n");
        return n == -2 ? (fprintf(stderr, "gatemq-passwd: password longer than %d bytes\n",
                                  PW_MAX), -1) : n;
    }
    tty_fd = open("/dev/tty", O_RDWR | O_CLOEXEC);
    if (tty_fd < 0) {
        fprintf(stderr, "gatemq-passwd: cannot open /dev/tty: %s\n", strerror(errno));
        return -1;
    }
    if (tcgetattr(tty_fd, &tty_saved) != 0) {
        fprintf(stderr, "gatemq-passwd: cannot read terminal settings: %s\n", strerror(errno));
        close(tty_fd);
        return -1;
    }
    struct sigaction sa = { .sa_handler = on_signal };
    sigemptyset(&sa.sa_mask);
    int sigs[] = { SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGTSTP };
    for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++)
        sigaction(sigs[i], &sa, NULL);

    struct termios quiet = tty_saved;
    quiet.c_lflag &= (tcflag_t)~ECHO;
    quiet.c_lflag |= ECHONL; /* the newline still shows: the prompt moves on */
    tty_echo_off = 1;
    long n = -1;
    static char again[PW_MAX];
    if (tcsetattr(tty_fd, TCSAFLUSH, &quiet) != 0) {
        fprintf(stderr, "gatemq-passwd: cannot turn echo off: %s\n", strerror(errno));
        tty_echo_off = 0;
    } else {
        n = prompt("Password: ", pw);
        long m = n >= 0 ? prompt("Reenter password: ", again) : -1;
        tty_restore();
        if (n == -2 || m == -2) {
            fprintf(stderr, "gatemq-passwd: password longer than %d bytes\n", PW_MAX);
            n = -1;
        } else if (n < 0 || m < 0) {
            fprintf(stderr, "gatemq-passwd: no password entered\n");
            n = -1;
        } else if (n != m || memcmp(pw, again, (size_t)n) != 0) {
            fprintf(stderr, "gatemq-passwd: passwords do not match\n");
            n = -1;
        }
    }
    explicit_bzero(again, sizeof again);
    close(tty_fd);
    return n;
}

int main(int argc, char **argv)
{
    bool create = false, del = false, batch = false;
    unsigned iterations = PASSWD_DEFAULT_ITERATIONS;
    int opt;
    while ((opt = getopt(argc, argv, "cDbI:h")) != -1) {
        switch (opt) {
        case 'c': create = true; break;
        case 'D': del = true; break;
        case 'b': batch = true; break;
        case 'I': {
            char *end;
            errno = 0;
            unsigned long v = strtoul(optarg, &end, 10);
            if (errno || *end || end == optarg || optarg[0] == '-' || v == 0 ||
                v > PASSWD_MAX_ITERATIONS) {
                fprintf(stderr, "gatemq-passwd: -I wants a number from 1 to %u\n",
                        PASSWD_MAX_ITERATIONS);
                return 2;
            }
            iterations = (unsigned)v;
            break;
        }
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    int nargs = argc - optind;
    if ((del && (create || batch || nargs != 2)) || (!del && nargs != (batch ? 3 : 2))) {
        usage(stderr);
        return 2;
    }
    const char *file = argv[optind], *user = argv[optind + 1];
    char err[512];

    if (del) {
        if (passwd_file_update(file, user, strlen(user), NULL, false, err, sizeof err) != 0) {
            fprintf(stderr, "gatemq-passwd: %s\n", err);
            return 1;
        }
        return 0;
    }
    /* Check the name before asking for a password the operator would
     * otherwise type for nothing. */
    if (!passwd_name_valid(user, strlen(user))) {
        fprintf(stderr, "gatemq-passwd: invalid user name: it must be non-empty, without ':', "
                        "control characters, a leading '#' or surrounding blanks\n");
        return 1;
    }

    static char pw[PW_MAX];
    long n;
    if (batch) {
        n = (long)strlen(argv[optind + 2]);
        if (n > PW_MAX) {
            fprintf(stderr, "gatemq-passwd: password longer than %d bytes\n", PW_MAX);
            return 1;
        }
        memcpy(pw, argv[optind + 2], (size_t)n);
    } else {
        n = get_password(pw);
        if (n < 0)
            return 1;
    }
    if (n == 0) {
        fprintf(stderr, "gatemq-passwd: empty password refused\n");
        return 1;
    }

    char hash[PASSWD_STR_MAX];
    int rc = passwd_make(hash, sizeof hash, (const uint8_t *)pw, (size_t)n, iterations);
    explicit_bzero(pw, sizeof pw);
    if (rc != 0) {
        fprintf(stderr, "gatemq-passwd: %s\n", passwd_strerror(rc));
        return 1;
    }
    if (passwd_file_update(file, user, strlen(user), hash, create, err, sizeof err) != 0) {
        fprintf(stderr, "gatemq-passwd: %s\n", err);
        return 1;
    }
    return 0;
}
