/*
 * harness.c - see harness.h.
 *
 * Everything the harness creates is kept in one registry so that
 * it_teardown can clean up after a test that failed half-way: cmocka leaves
 * a failing test by longjmp, so no code after the failing check runs.
 * Therefore every function removes an object from the registry before
 * anything that may fail, and frees it only after.
 */
#include "harness.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <libgen.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* ---- failure reporting -------------------------------------------------- */

static const char *here_file = "?";
static int here_line;

void it__here(const char *file, int line)
{
    here_file = file;
    here_line = line;
}

void it_fail(const char *fmt, ...)
{
    char msg[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    print_error("%s:%d: %s\n", here_file, here_line, msg);
    _fail(here_file, here_line);
    abort(); /* not reached: _fail leaves the test */
}

void it_hexdump(const char *label, const uint8_t *p, size_t n)
{
    size_t shown = n > 256 ? 256 : n;
    char line[3 * 256 + 1];
    size_t pos = 0;
    for (size_t i = 0; i < shown; i++)
        pos += (size_t)snprintf(line + pos, sizeof line - pos, "%02x ", p[i]);
    line[pos] = '\0';
    print_error("  %s (%zu bytes): %s%s\n", label, n, line, shown < n ? "..." : "");
}

long it_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000L + ts.tv_nsec / 1000000L;
}

static void sleep_ms(long ms)
{
    struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

bool it_span_eq(mqtt_span s, const char *str)
{
    size_t n = strlen(str);
    return s.len == n && (n == 0 || memcmp(s.ptr, str, n) == 0);
}

char *it_read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap + 1);
    size_t r;
    while (buf && (r = fread(buf + n, 1, cap - n, f)) > 0) {
        n += r;
        if (n == cap) {
            cap *= 2;
            char *nb = realloc(buf, cap + 1);
            if (!nb) {
                free(buf);
                buf = NULL;
            }
            buf = nb;
        }
    }
    fclose(f);
    if (buf)
        buf[n] = '\0';
    if (len)
        *len = n;
    return buf;
}

bool it_file_exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}

bool it_repo_path(const char *rel, char *out, size_t n)
{
    const char *src = getenv("GATEMQ_SRC");
    if (src && *src) {
        int k = snprintf(out, n, "%s/%s", src, rel);
        return k > 0 && (size_t)k < n && it_file_exists(out);
    }
    char dir[PATH_MAX];
    ssize_t len = readlink("/proc/self/exe", dir, sizeof dir - 1);
    if (len <= 0)
        return false;
    dir[len] = '\0';
    for (;;) {
        char *slash = strrchr(dir, '/');
        if (!slash)
            return false;
        *slash = '\0';
        int k = snprintf(out, n, "%s/%s", dir, rel);
        if (k > 0 && (size_t)k < n && it_file_exists(out))
            return true;
        if (!*dir)
            return false;
    }
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    remove(path);
    return 0;
}

void it_remove_tree(const char *dir)
{
    nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* ---- registry ----------------------------------------------------------- */

struct it_broker {
    pid_t pid;
    uint16_t port;
    char dir[64];
    char conf[96];
    char log[96];
};

struct it_conn {
    int fd;
    uint8_t *rbuf; /* bytes received, not yet consumed */
    size_t rlen, rcap;
    uint8_t *frame; /* copy of the last frame handed out */
    size_t frame_cap;
    uint16_t next_id;
    uint8_t awaiting_pubrel[65536 / 8]; /* ids we sent PUBREC for */
};

struct it_proc {
    pid_t pid;
    int out;        /* read end of the output pipe, -1 at EOF */
    char *buf;
    size_t len, cap;
    int status;     /* -1 while running */
};

#define IT_MAX_OBJ 512
static it_broker *brokers[IT_MAX_OBJ];
static it_conn *conns[IT_MAX_OBJ];
static it_proc *procs[IT_MAX_OBJ];
static char *temp_dirs[IT_MAX_OBJ];

static void reg_add(void **table, void *p)
{
    for (size_t i = 0; i < IT_MAX_OBJ; i++) {
        if (!table[i]) {
            table[i] = p;
            return;
        }
    }
    it_fail("harness: more than %d live objects", IT_MAX_OBJ);
}

static void reg_del(void **table, void *p)
{
    for (size_t i = 0; i < IT_MAX_OBJ; i++)
        if (table[i] == p)
            table[i] = NULL;
}

static void remove_dir(const char *dir)
{
    /* Only our own mkdtemp directories, which hold plain files. */
    if (strncmp(dir, "/tmp/gatemq-it.", 15) != 0)
        return;
    DIR *d = opendir(dir);
    if (d) {
        struct dirent *e;
        char path[PATH_MAX];
        while ((e = readdir(d)) != NULL) {
            if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
                continue;
            snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
            unlink(path);
        }
        closedir(d);
    }
    rmdir(dir);
}

static void print_log(const it_broker *b, const char *why)
{
    size_t n;
    char *log = it_read_file(b->log, &n);
    print_error("---- broker log (%s), %s ----\n", b->log, why);
    if (log) {
        const char *start = n > 12000 ? log + n - 12000 : log;
        print_error("%s%s\n", n > 12000 ? "[...]\n" : "", start);
    }
    print_error("---- end of broker log ----\n");
    free(log);
}

int it_teardown(void **state)
{
    (void)state;
    for (size_t i = 0; i < IT_MAX_OBJ; i++) {
        if (conns[i]) {
            it_close(conns[i]);
        }
        if (procs[i]) {
            it_proc_free(procs[i]);
        }
        if (brokers[i]) {
            it_broker *b = brokers[i];
            print_log(b, "broker left running by a test that did not finish");
            it_broker_kill9(b);
        }
        if (temp_dirs[i]) {
            remove_dir(temp_dirs[i]);
            free(temp_dirs[i]);
            temp_dirs[i] = NULL;
        }
    }
    return 0;
}

/* ---- broker process ----------------------------------------------------- */

const char *it_broker_bin(void)
{
    static char path[PATH_MAX];
    const char *env = getenv("GATEMQ_BIN");
    if (env && *env)
        return env;
    if (!path[0]) {
        char self[PATH_MAX];
        ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
        if (n <= 0)
            return "gatemq";
        self[n] = '\0';
        snprintf(path, sizeof path, "%s/../gatemq", dirname(self));
    }
    return path;
}

int it_group_setup(void **state)
{
    (void)state;
    signal(SIGPIPE, SIG_IGN);
    const char *bin = it_broker_bin();
    if (access(bin, X_OK) != 0) {
        print_error("broker binary %s not found: set GATEMQ_BIN\n", bin);
        return -1;
    }
    return 0;
}

/* it_broker_start handles a race for the port by retrying. */
uint16_t it_free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = { .sin_family = AF_INET };
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) != 0 ||
        getsockname(fd, (struct sockaddr *)&a, &len) != 0)
        it_fail("cannot find a free port: %s", strerror(errno));
    close(fd);
    return ntohs(a.sin_port);
}

static bool tcp_probe(uint16_t port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return false;
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(port) };
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    bool ok = connect(fd, (struct sockaddr *)&a, sizeof a) == 0;
    close(fd);
    return ok;
}

static char *make_temp_dir(void)
{
    char tmpl[] = "/tmp/gatemq-it.XXXXXX";
    if (!mkdtemp(tmpl))
        it_fail("mkdtemp: %s", strerror(errno));
    return strdup(tmpl);
}

static pid_t spawn_broker(const it_broker *b)
{
    const char *bin = it_broker_bin();
    pid_t pid = fork();
    if (pid < 0)
        it_fail("fork: %s", strerror(errno));
    if (pid == 0) {
        const char *argv[] = { bin, "-c", b->conf, NULL };
        it_exec_logged(b->log, argv);
    }
    return pid;
}

void it_exec_logged(const char *log_path, const char *const argv[])
{
    int log = open(log_path, O_WRONLY | O_CREAT | O_APPEND, 0644);
    int nul = open("/dev/null", O_RDWR);
    if (log < 0 || nul < 0)
        _exit(126);
    dup2(nul, 0);
    dup2(log, 1);
    dup2(log, 2);
    execv(argv[0], (char *const *)argv);
    fprintf(stderr, "exec %s: %s\n", argv[0], strerror(errno));
    _exit(127);
}

it_broker *it__broker_start(const char *extra_config)
{
    it_broker *b = calloc(1, sizeof *b);
    char *dir = make_temp_dir();
    snprintf(b->dir, sizeof b->dir, "%s", dir);
    free(dir);
    snprintf(b->conf, sizeof b->conf, "%s/gatemq.conf", b->dir);
    snprintf(b->log, sizeof b->log, "%s/broker.log", b->dir);
    reg_add((void **)brokers, b);

    /* A port can be taken between it_free_port() and the broker's bind(): then
     * the broker exits early and we try again with another port. */
    for (int attempt = 0; attempt < 3; attempt++) {
        /* Extra listeners picked their ports the same way and have not bound
         * them yet: never hand out one of theirs. */
        char mine[32];
        for (int pick = 0; pick < 100; pick++) {
            b->port = it_free_port();
            snprintf(mine, sizeof mine, "listener %u ", b->port);
            if (!extra_config || !strstr(extra_config, mine))
                break;
        }
        FILE *f = fopen(b->conf, "w");
        if (!f)
            it_fail("cannot write %s: %s", b->conf, strerror(errno));
        fprintf(f, "listener %u 127.0.0.1\nallow_anonymous true\nlog_level debug\n%s\n",
                b->port, extra_config ? extra_config : "");
        fclose(f);
        b->pid = spawn_broker(b);

        long deadline = it_now_ms() + 10000;
        int status;
        for (;;) {
            pid_t w = waitpid(b->pid, &status, WNOHANG);
            if (w == b->pid) {
                b->pid = 0;
                break;
            }
            if (tcp_probe(b->port))
                return b;
            if (it_now_ms() > deadline) {
                print_log(b, "never listened");
                it_fail("broker did not listen on port %u within 10 s", b->port);
            }
            sleep_ms(10); /* polling for readiness, not synchronisation */
        }
        if (attempt == 2 || !it_broker_log_contains(b, "in use")) {
            print_log(b, "exited during start-up");
            it_fail("broker exited during start-up with status %d",
                    WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status));
        }
    }
    return NULL;
}

/* Waits for pid up to deadline; returns the raw wait status or -1. */
static int wait_pid_until(pid_t pid, long deadline)
{
    int status;
    for (;;) {
        pid_t w = waitpid(pid, &status, WNOHANG);
        if (w == pid)
            return status;
        if (w < 0 && errno != EINTR)
            return -1;
        if (it_now_ms() > deadline)
            return -1;
        sleep_ms(5);
    }
}

void it__broker_stop(it_broker *b)
{
    it__broker_stop_with(b, SIGTERM);
}

void it__broker_stop_with(it_broker *b, int sig)
{
    reg_del((void **)brokers, b);
    kill(b->pid, sig);
    /* Generous: the sanitizer build checks for leaks at exit. */
    int status = wait_pid_until(b->pid, it_now_ms() + 15000);
    char why[128];
    bool ok = false;
    if (status == -1) {
        kill(b->pid, SIGKILL);
        waitpid(b->pid, NULL, 0);
        snprintf(why, sizeof why, "no exit within 15 s of signal %d", sig);
    } else if (WIFSIGNALED(status)) {
        snprintf(why, sizeof why, "killed by signal %d after signal %d", WTERMSIG(status), sig);
    } else if (WEXITSTATUS(status) != 0) {
        snprintf(why, sizeof why, "exit status %d after signal %d", WEXITSTATUS(status), sig);
    } else {
        ok = true;
    }
    if (!ok) {
        print_log(b, why);
        /* Keep the directory for inspection. */
        free(b);
        it_fail("broker did not shut down cleanly: %s", why);
    }
    remove_dir(b->dir);
    free(b);
}

void it_broker_kill9(it_broker *b)
{
    reg_del((void **)brokers, b);
    if (b->pid > 0) {
        kill(b->pid, SIGKILL);
        waitpid(b->pid, NULL, 0);
    }
    remove_dir(b->dir);
    free(b);
}

uint16_t it_broker_port(const it_broker *b)
{
    return b->port;
}

pid_t it_broker_pid(const it_broker *b)
{
    return b->pid;
}

bool it_broker_log_contains(const it_broker *b, const char *text)
{
    char *log = it_read_file(b->log, NULL);
    bool found = log && strstr(log, text) != NULL;
    free(log);
    return found;
}

long it_broker_rss_kb(const it_broker *b)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/status", (int)b->pid);
    char *s = it_read_file(path, NULL);
    long kb = 0;
    const char *p = s ? strstr(s, "VmRSS:") : NULL;
    if (p)
        kb = strtol(p + 6, NULL, 10);
    free(s);
    return kb;
}

/* ---- raw connection ----------------------------------------------------- */

int it_tcp_connect_fd(uint16_t port, int sock_flags, int rcvbuf)
{
    int fd = socket(AF_INET, SOCK_STREAM | sock_flags, 0);
    if (fd < 0)
        it_fail("socket: %s", strerror(errno));
    if (rcvbuf > 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(port) };
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        int e = errno;
        close(fd);
        it_fail("connect to port %u: %s", port, strerror(e));
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd;
}

it_conn *it__connect(uint16_t port)
{
    int fd = it_tcp_connect_fd(port, 0, 0);
    /* A broker that stops reading must fail the test, not hang it. */
    struct timeval tv = { 10, 0 };
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    it_conn *c = calloc(1, sizeof *c);
    c->fd = fd;
    c->next_id = 1;
    reg_add((void **)conns, c);
    return c;
}

void it_close(it_conn *c)
{
    if (!c)
        return;
    reg_del((void **)conns, c);
    close(c->fd);
    free(c->rbuf);
    free(c->frame);
    free(c);
}

void it_shutdown_write(it_conn *c)
{
    shutdown(c->fd, SHUT_WR);
}

bool it_send_try(it_conn *c, const void *bytes, size_t n)
{
    return it_send_fd(c->fd, bytes, n);
}

bool it_send_fd(int fd, const void *bytes, size_t n)
{
    const uint8_t *p = bytes;
    while (n > 0) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return false;
        p += w;
        n -= (size_t)w;
    }
    return true;
}

void it__send(it_conn *c, const void *bytes, size_t n)
{
    if (!it_send_try(c, bytes, n))
        it_fail("send of %zu bytes failed: %s", n, strerror(errno));
}

/* Read whatever is available before deadline into c->rbuf.
 * Returns > 0 bytes read, 0 on timeout, -1 on EOF or reset. */
static int fill(it_conn *c, long deadline)
{
    for (;;) {
        long left = deadline - it_now_ms();
        if (left < 0)
            left = 0;
        struct pollfd pfd = { c->fd, POLLIN, 0 };
        int r = poll(&pfd, 1, (int)left);
        if (r < 0 && errno == EINTR)
            continue;
        if (r == 0)
            return 0;
        if (c->rcap - c->rlen < 65536) {
            size_t ncap = c->rcap ? c->rcap * 2 : 131072;
            c->rbuf = realloc(c->rbuf, ncap);
            c->rcap = ncap;
        }
        ssize_t n = recv(c->fd, c->rbuf + c->rlen, c->rcap - c->rlen, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        c->rlen += (size_t)n;
        return (int)n;
    }
}

static void consume(it_conn *c, size_t n)
{
    memmove(c->rbuf, c->rbuf + n, c->rlen - n);
    c->rlen -= n;
}

int it_recv_frame(it_conn *c, mqtt_frame *f, int timeout_ms)
{
    long deadline = it_now_ms() + timeout_ms;
    for (;;) {
        mqtt_frame tmp;
        ptrdiff_t r = mqtt_frame_split(c->rbuf, c->rlen, (size_t)MQTT_MAX_REMAINING_LENGTH + 5,
                                       &tmp);
        if (r < 0) {
            it_hexdump("received", c->rbuf, c->rlen);
            it_fail("broker sent an invalid frame: %s", mqtt_strerror((int)r));
        }
        if (r > 0) {
            if (c->frame_cap < (size_t)r) {
                c->frame = realloc(c->frame, (size_t)r);
                c->frame_cap = (size_t)r;
            }
            memcpy(c->frame, c->rbuf, (size_t)r);
            *f = tmp;
            f->body = c->frame + tmp.header_len;
            consume(c, (size_t)r);
            return 1;
        }
        int got = fill(c, deadline);
        if (got == 0)
            return 0;
        if (got < 0)
            return -1;
    }
}

void it__expect_bytes(it_conn *c, const void *expected, size_t n, int timeout_ms)
{
    long deadline = it_now_ms() + timeout_ms;
    while (c->rlen < n) {
        int got = fill(c, deadline);
        if (got <= 0) {
            it_hexdump("expected", expected, n);
            it_hexdump("received", c->rbuf, c->rlen);
            it_fail("%s before the expected %zu bytes arrived",
                    got == 0 ? "timeout" : "connection closed", n);
        }
    }
    if (memcmp(c->rbuf, expected, n) != 0) {
        it_hexdump("expected", expected, n);
        it_hexdump("received", c->rbuf, c->rlen);
        it_fail("received bytes differ from the expected ones");
    }
    consume(c, n);
}

long it__expect_closed(it_conn *c, int timeout_ms)
{
    long start = it_now_ms();
    long deadline = start + timeout_ms;
    for (;;) {
        if (c->rlen > 0) {
            it_hexdump("received", c->rbuf, c->rlen);
            it_fail("expected the broker to close without a reply, but it sent bytes");
        }
        int got = fill(c, deadline);
        if (got < 0)
            return it_now_ms() - start;
        if (got == 0)
            it_fail("connection still open after %d ms", timeout_ms);
    }
}

void it__expect_silence(it_conn *c, int ms)
{
    long deadline = it_now_ms() + ms;
    if (c->rlen == 0) {
        int got = fill(c, deadline);
        if (got < 0)
            it_fail("expected silence, but the broker closed the connection");
    }
    if (c->rlen > 0) {
        it_hexdump("received", c->rbuf, c->rlen);
        it_fail("expected silence for %d ms, but the broker sent bytes", ms);
    }
}

/* ---- MQTT helpers ------------------------------------------------------- */

static mqtt_span span_of(const char *s)
{
    return (mqtt_span){ (const uint8_t *)s, s ? strlen(s) : 0 };
}

uint16_t it_next_id(it_conn *c)
{
    uint16_t id = c->next_id++;
    if (c->next_id == 0)
        c->next_id = 1;
    return id;
}

static void send_encoded(it_conn *c, size_t (*enc)(uint8_t *, size_t, const void *),
                         const void *arg)
{
    size_t n = enc(NULL, 0, arg);
    uint8_t *buf = malloc(n);
    enc(buf, n, arg);
    bool ok = it_send_try(c, buf, n);
    free(buf);
    if (!ok)
        it_fail("send failed: %s", strerror(errno));
}

static size_t enc_connect(uint8_t *b, size_t cap, const void *a)
{
    return mqtt_encode_connect(b, cap, a);
}

void it__send_connect(it_conn *c, const char *client_id, bool clean, uint16_t keepalive,
                      const it_will *will)
{
    mqtt_connect m = { 0 };
    m.clean_session = clean;
    m.keep_alive = keepalive;
    m.client_id = span_of(client_id ? client_id : "");
    if (will) {
        m.will_flag = true;
        m.will_qos = will->qos;
        m.will_retain = will->retain;
        m.will_topic = span_of(will->topic);
        m.will_payload = span_of(will->payload);
    }
    send_encoded(c, enc_connect, &m);
}

bool it__mqtt_connect(it_conn *c, const char *client_id, bool clean, uint16_t keepalive,
                      const it_will *will)
{
    it__send_connect(c, client_id, clean, keepalive, will);
    mqtt_frame f;
    int r = it_recv_frame(c, &f, IT_TIMEOUT);
    if (r != 1)
        it_fail("no CONNACK for client '%s': %s", client_id,
                r == 0 ? "timeout" : "connection closed");
    const uint8_t *raw = f.body - f.header_len;
    if (f.type != MQTT_CONNACK || f.header_len != 2 || f.body_len != 2 || raw[0] != 0x20 ||
        f.body[0] > 1 || f.body[1] != 0) {
        it_hexdump("received", raw, f.header_len + f.body_len);
        it_fail("expected CONNACK 20 02 0x 00 for client '%s'", client_id);
    }
    return f.body[0] == 1;
}

it_conn *it__client(uint16_t port, const char *client_id, bool clean, bool expect_sp)
{
    it_conn *c = it__connect(port);
    bool sp = it__mqtt_connect(c, client_id, clean, 0, NULL);
    if (sp != expect_sp)
        it_fail("client '%s': CONNACK session present %d, expected %d", client_id, sp,
                expect_sp);
    return c;
}

void it__subscribe_n(it_conn *c, const char *const *filters, const uint8_t *qos, size_t n,
                     const uint8_t *codes)
{
    mqtt_span spans[16];
    if (n > 16)
        it_fail("harness: at most 16 filters per SUBSCRIBE");
    for (size_t i = 0; i < n; i++)
        spans[i] = span_of(filters[i]);
    uint16_t id = it_next_id(c);
    size_t len = mqtt_encode_subscribe(NULL, 0, id, spans, qos, n);
    uint8_t *buf = malloc(len);
    mqtt_encode_subscribe(buf, len, id, spans, qos, n);
    bool ok = it_send_try(c, buf, len);
    free(buf);
    if (!ok)
        it_fail("send SUBSCRIBE failed: %s", strerror(errno));
    /* [MQTT-3.8.4-1] SUBACK, [MQTT-3.8.4-2] same packet id, [MQTT-3.8.4-5]
     * one return code per filter, in order. */
    uint8_t exp[4 + 16];
    exp[0] = 0x90;
    exp[1] = (uint8_t)(2 + n);
    exp[2] = (uint8_t)(id >> 8);
    exp[3] = (uint8_t)id;
    memcpy(exp + 4, codes, n);
    it__expect_bytes(c, exp, 4 + n, IT_TIMEOUT);
}

void it__subscribe(it_conn *c, const char *filter, uint8_t qos)
{
    it__subscribe_n(c, &filter, &qos, 1, &qos);
}

void it__unsubscribe(it_conn *c, const char *filter)
{
    mqtt_span s = span_of(filter);
    uint16_t id = it_next_id(c);
    uint8_t buf[70000];
    size_t len = mqtt_encode_unsubscribe(buf, sizeof buf, id, &s, 1);
    it__send(c, buf, len);
    uint8_t exp[4] = { 0xb0, 0x02, (uint8_t)(id >> 8), (uint8_t)id }; /* [MQTT-3.10.4-4] */
    it__expect_bytes(c, exp, 4, IT_TIMEOUT);
}

size_t it_raw_connect(uint8_t *buf, const char *name, uint8_t level, uint8_t flags,
                      uint16_t keepalive, const char *client_id, const uint8_t *extra,
                      size_t extra_len)
{
    size_t nlen = strlen(name), idlen = strlen(client_id);
    size_t rem = 2 + nlen + 1 + 1 + 2 + 2 + idlen + extra_len;
    size_t pos = 0;
    buf[pos++] = 0x10;
    size_t r = rem;
    do {
        uint8_t byte = r & 0x7f;
        r >>= 7;
        buf[pos++] = r ? (uint8_t)(byte | 0x80) : byte;
    } while (r);
    buf[pos++] = (uint8_t)(nlen >> 8);
    buf[pos++] = (uint8_t)nlen;
    memcpy(buf + pos, name, nlen);
    pos += nlen;
    buf[pos++] = level;
    buf[pos++] = flags;
    buf[pos++] = (uint8_t)(keepalive >> 8);
    buf[pos++] = (uint8_t)keepalive;
    buf[pos++] = (uint8_t)(idlen >> 8);
    buf[pos++] = (uint8_t)idlen;
    memcpy(buf + pos, client_id, idlen);
    pos += idlen;
    if (extra_len)
        memcpy(buf + pos, extra, extra_len);
    return pos + extra_len;
}

uint8_t *it_encode_publish(const char *topic, const void *payload, size_t len, uint8_t qos,
                           bool retain, bool dup, uint16_t id, size_t *out_len)
{
    mqtt_publish p = { .topic = span_of(topic),
                       .payload = { payload, len },
                       .qos = qos,
                       .dup = dup,
                       .retain = retain,
                       .packet_id = qos ? id : 0 };
    size_t n = mqtt_encode_publish(NULL, 0, &p);
    uint8_t *buf = malloc(n);
    mqtt_encode_publish(buf, n, &p);
    *out_len = n;
    return buf;
}

uint16_t it__publish(it_conn *c, const char *topic, const void *payload, size_t len,
                     uint8_t qos, bool retain)
{
    uint16_t id = qos ? it_next_id(c) : 0;
    size_t n;
    uint8_t *buf = it_encode_publish(topic, payload, len, qos, retain, false, id, &n);
    bool ok = it_send_try(c, buf, n);
    free(buf);
    if (!ok)
        it_fail("send PUBLISH failed: %s", strerror(errno));
    uint8_t hi = (uint8_t)(id >> 8), lo = (uint8_t)id;
    if (qos == 1) {
        uint8_t puback[4] = { 0x40, 0x02, hi, lo }; /* [MQTT-4.3.2-2] */
        it__expect_bytes(c, puback, 4, IT_TIMEOUT);
    } else if (qos == 2) {
        uint8_t pubrec[4] = { 0x50, 0x02, hi, lo }; /* [MQTT-4.3.3-2] */
        uint8_t pubrel[4] = { 0x62, 0x02, hi, lo }; /* [MQTT-3.6.1-1] */
        uint8_t pubcomp[4] = { 0x70, 0x02, hi, lo }; /* [MQTT-3.6.4-1] */
        it__expect_bytes(c, pubrec, 4, IT_TIMEOUT);
        it__send(c, pubrel, 4);
        it__expect_bytes(c, pubcomp, 4, IT_TIMEOUT);
    }
    return id;
}

static void answer_pubrel(it_conn *c, const mqtt_frame *f)
{
    uint16_t id;
    int err = mqtt_decode_packet_id(f, &id);
    if (err)
        it_fail("bad PUBREL: %s", mqtt_strerror(err));
    if (!(c->awaiting_pubrel[id / 8] & (1u << (id % 8))))
        it_fail("PUBREL for packet id %u that was never PUBREC'd", id);
    c->awaiting_pubrel[id / 8] &= (uint8_t) ~(1u << (id % 8));
    uint8_t pubcomp[4] = { 0x70, 0x02, (uint8_t)(id >> 8), (uint8_t)id };
    it__send(c, pubcomp, 4);
}

static void fail_unexpected(const mqtt_frame *f, const char *wanted)
{
    it_hexdump("received", f->body - f->header_len, f->header_len + f->body_len);
    it_fail("expected %s, got %s", wanted, mqtt_type_name(f->type));
}

void it__recv_publish(it_conn *c, mqtt_publish *p, int timeout_ms)
{
    long deadline = it_now_ms() + timeout_ms;
    for (;;) {
        mqtt_frame f;
        long left = deadline - it_now_ms();
        int r = it_recv_frame(c, &f, left > 0 ? (int)left : 0);
        if (r == 0)
            it_fail("no PUBLISH within %d ms", timeout_ms);
        if (r < 0)
            it_fail("connection closed while waiting for a PUBLISH");
        if (f.type == MQTT_PUBREL) {
            answer_pubrel(c, &f);
            continue;
        }
        if (f.type != MQTT_PUBLISH)
            fail_unexpected(&f, "PUBLISH");
        int err = mqtt_decode_publish(&f, p);
        if (err) {
            it_hexdump("received", f.body - f.header_len, f.header_len + f.body_len);
            it_fail("broker sent a PUBLISH that does not decode: %s", mqtt_strerror(err));
        }
        return;
    }
}

void it_ack(it_conn *c, const mqtt_publish *p)
{
    uint8_t ack[4] = { 0, 0x02, (uint8_t)(p->packet_id >> 8), (uint8_t)p->packet_id };
    if (p->qos == 1) {
        ack[0] = 0x40;
        it__send(c, ack, 4);
    } else if (p->qos == 2) {
        ack[0] = 0x50;
        c->awaiting_pubrel[p->packet_id / 8] |= (uint8_t)(1u << (p->packet_id % 8));
        it__send(c, ack, 4);
    }
}

uint16_t it__expect_publish(it_conn *c, const char *topic, const char *payload, uint8_t qos,
                            bool retain)
{
    mqtt_publish p;
    it__recv_publish(c, &p, IT_TIMEOUT);
    if (!it_span_eq(p.topic, topic) || !it_span_eq(p.payload, payload) || p.qos != qos ||
        p.retain != retain || p.dup) {
        print_error("  expected: topic '%s' payload '%s' qos %u retain %d dup 0\n", topic,
                    payload, qos, retain);
        print_error("  received: topic '%.*s' payload '%.*s' qos %u retain %d dup %d\n",
                    (int)p.topic.len, (const char *)p.topic.ptr,
                    (int)(p.payload.len > 200 ? 200 : p.payload.len),
                    (const char *)p.payload.ptr, p.qos, p.retain, p.dup);
        it_fail("PUBLISH differs from the expected one");
    }
    it_ack(c, &p);
    return p.packet_id;
}

void it__ping(it_conn *c)
{
    static const uint8_t pingreq[2] = { 0xc0, 0x00 };
    it__send(c, pingreq, 2);
    long deadline = it_now_ms() + IT_TIMEOUT;
    for (;;) {
        mqtt_frame f;
        long left = deadline - it_now_ms();
        int r = it_recv_frame(c, &f, left > 0 ? (int)left : 0);
        if (r == 0)
            it_fail("no PINGRESP within %d ms", IT_TIMEOUT);
        if (r < 0)
            it_fail("connection closed while waiting for PINGRESP");
        if (f.type == MQTT_PUBREL) {
            answer_pubrel(c, &f);
            continue;
        }
        const uint8_t *raw = f.body - f.header_len;
        if (f.type != MQTT_PINGRESP || raw[0] != 0xd0 || raw[1] != 0x00) /* [MQTT-3.12.4-1] */
            fail_unexpected(&f, "PINGRESP d0 00");
        return;
    }
}

void it__disconnect(it_conn *c)
{
    static const uint8_t disconnect[2] = { 0xe0, 0x00 };
    it__send(c, disconnect, 2);
    it__expect_closed(c, IT_TIMEOUT);
    it_close(c);
}

void it__assert_serving(it_broker *b)
{
    static unsigned n;
    char sid[32], pid[32], payload[32];
    snprintf(sid, sizeof sid, "serving-sub-%u", n);
    snprintf(pid, sizeof pid, "serving-pub-%u", n);
    snprintf(payload, sizeof payload, "still-serving-%u", n++);
    it_conn *sub = it__client(b->port, sid, true, false);
    it__subscribe(sub, "it/serving", 1);
    it_conn *pub = it__client(b->port, pid, true, false);
    it__publish(pub, "it/serving", payload, strlen(payload), 1, false);
    it__expect_publish(sub, "it/serving", payload, 1, false);
    it__disconnect(pub);
    it__disconnect(sub);
}

/* ---- external tools ----------------------------------------------------- */

it_proc *it__spawn(const char *const argv[])
{
    int fds[2];
    if (pipe(fds) != 0)
        it_fail("pipe: %s", strerror(errno));
    pid_t pid = fork();
    if (pid < 0)
        it_fail("fork: %s", strerror(errno));
    if (pid == 0) {
        int nul = open("/dev/null", O_RDONLY);
        dup2(nul, 0);
        dup2(fds[1], 1);
        dup2(fds[1], 2);
        close(fds[0]);
        close(fds[1]);
        execvp(argv[0], (char *const *)argv);
        fprintf(stderr, "exec %s: %s\n", argv[0], strerror(errno));
        _exit(127);
    }
    close(fds[1]);
    fcntl(fds[0], F_SETFL, O_NONBLOCK);
    it_proc *p = calloc(1, sizeof *p);
    p->pid = pid;
    p->out = fds[0];
    p->status = -1;
    p->cap = 4096;
    p->buf = malloc(p->cap);
    p->buf[0] = '\0';
    reg_add((void **)procs, p);
    return p;
}

/* Read output until deadline or EOF; true at EOF. */
static bool pump(it_proc *p, long deadline, const char *until)
{
    while (p->out >= 0) {
        if (until && strstr(p->buf, until))
            return false;
        long left = deadline - it_now_ms();
        if (left < 0)
            return false;
        struct pollfd pfd = { p->out, POLLIN, 0 };
        int r = poll(&pfd, 1, (int)left);
        if (r < 0 && errno == EINTR)
            continue;
        if (r == 0)
            return false;
        if (p->cap - p->len < 4096) {
            p->cap *= 2;
            p->buf = realloc(p->buf, p->cap);
        }
        ssize_t n = read(p->out, p->buf + p->len, p->cap - p->len - 1);
        if (n < 0 && (errno == EINTR || errno == EAGAIN))
            continue;
        if (n <= 0) {
            close(p->out);
            p->out = -1;
            break;
        }
        p->len += (size_t)n;
        p->buf[p->len] = '\0';
    }
    return true;
}

bool it_proc_wait_output(it_proc *p, const char *text, int timeout_ms)
{
    pump(p, it_now_ms() + timeout_ms, text);
    return strstr(p->buf, text) != NULL;
}

int it__proc_wait(it_proc *p, int timeout_ms)
{
    long deadline = it_now_ms() + timeout_ms;
    pump(p, deadline, NULL);
    if (p->status < 0) {
        int status = wait_pid_until(p->pid, deadline);
        if (status == -1) {
            kill(p->pid, SIGKILL);
            waitpid(p->pid, NULL, 0);
            p->status = 137;
            print_error("  output: %s\n", p->buf);
            it_fail("process %d did not exit within %d ms", (int)p->pid, timeout_ms);
        }
        p->status = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    }
    pump(p, it_now_ms() + 1000, NULL); /* output written just before exit */
    return p->status;
}

const char *it_proc_output(it_proc *p)
{
    return p->buf;
}

void it_proc_free(it_proc *p)
{
    if (!p)
        return;
    reg_del((void **)procs, p);
    if (p->status < 0) {
        kill(p->pid, SIGKILL);
        waitpid(p->pid, NULL, 0);
    }
    if (p->out >= 0)
        close(p->out);
    free(p->buf);
    free(p);
}

int it__run(const char *const argv[], int timeout_ms, char **out)
{
    it_proc *p = it__spawn(argv);
    int status = it__proc_wait(p, timeout_ms);
    if (out)
        *out = strdup(p->buf);
    it_proc_free(p);
    return status;
}

char *it_temp_file(const char *name, const char *text)
{
    char *dir = make_temp_dir();
    reg_add((void **)temp_dirs, dir);
    size_t n = strlen(dir) + strlen(name) + 2;
    char *path = malloc(n);
    snprintf(path, n, "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    if (!f)
        it_fail("cannot write %s: %s", path, strerror(errno));
    fputs(text, f);
    fclose(f);
    return path;
}
