/* influx_util.c - a private influxd for tests (see influx_util.h). */
#include "influx_util.h"
#include "harness.h"

#include <arpa/inet.h>
#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static long ix_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void ix_nap_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000};
    nanosleep(&ts, NULL);
}

const char *influxd_binary(void)
{
    const char *bin = getenv("INFLUXD");
    if (!bin || !*bin)
        bin = "/usr/bin/influxd";
    return access(bin, X_OK) == 0 ? bin : NULL;
}

static uint16_t ix_free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof(a);
    uint16_t port = 0;
    if (fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0 &&
        getsockname(fd, (struct sockaddr *)&a, &len) == 0)
        port = ntohs(a.sin_port);
    if (fd >= 0)
        close(fd);
    return port;
}

void influxd_log_tail(const influxd *ix, char *buf, size_t len)
{
    buf[0] = '\0';
    int fd = open(ix->log, O_RDONLY);
    if (fd < 0 || len < 2) {
        if (fd >= 0)
            close(fd);
        return;
    }
    off_t end = lseek(fd, 0, SEEK_END);
    off_t from = end > (off_t)(len - 1) ? end - (off_t)(len - 1) : 0;
    ssize_t n = pread(fd, buf, len - 1, from);
    buf[n > 0 ? n : 0] = '\0';
    close(fd);
}

/* ---- HTTP ----------------------------------------------------------------- */

typedef struct ix_buf {
    char *p;
    size_t len;
} ix_buf;

static size_t ix_collect(char *data, size_t size, size_t nmemb, void *arg)
{
    ix_buf *b = arg;
    size_t n = size * nmemb;
    char *p = realloc(b->p, b->len + n + 1);
    if (!p)
        return 0;
    memcpy(p + b->len, data, n);
    b->len += n;
    p[b->len] = '\0';
    b->p = p;
    return n;
}

/* GET (form NULL) or POST form to url; returns the status, or -1. */
static long ix_http(const char *url, const char *form, char **body, long timeout_ms, char *err,
                    size_t errlen)
{
    ix_buf b = {0};
    long status = -1;
    char cerr[CURL_ERROR_SIZE] = "";
    CURL *c = curl_easy_init();
    if (!c) {
        snprintf(err, errlen, "curl_easy_init failed");
        return -1;
    }
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, timeout_ms);
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, cerr);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, ix_collect);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
    if (form)
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, form);
    CURLcode rc = curl_easy_perform(c);
    if (rc == CURLE_OK) {
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    } else {
        snprintf(err, errlen, "%s: %s", url, cerr[0] ? cerr : curl_easy_strerror(rc));
    }
    curl_easy_cleanup(c);
    if (status < 0 || !body) {
        free(b.p);
        b.p = NULL;
    } else if (!b.p) {
        b.p = calloc(1, 1);
    }
    if (body)
        *body = b.p;
    return status;
}

long influxd_query(const influxd *ix, const char *db, const char *q, char **body, char *err,
                   size_t errlen)
{
    CURL *c = curl_easy_init();
    char *eq = c ? curl_easy_escape(c, q, 0) : NULL;
    char *edb = c && db ? curl_easy_escape(c, db, 0) : NULL;
    long status = -1;
    if (!eq || (db && !edb)) {
        snprintf(err, errlen, "no memory");
    } else {
        size_t n = strlen(eq) + (edb ? strlen(edb) : 0) + 32;
        char *form = malloc(n);
        char url[128];
        snprintf(form, n, "q=%s&epoch=ms%s%s", eq, edb ? "&db=" : "", edb ? edb : "");
        snprintf(url, sizeof(url), "%s/query", ix->url);
        status = ix_http(url, form, body, 10000, err, errlen);
        free(form);
    }
    curl_free(eq);
    curl_free(edb);
    if (c)
        curl_easy_cleanup(c);
    return status;
}

int influxd_create_db(const influxd *ix, const char *db, char *err, size_t errlen)
{
    char q[256], *body = NULL;
    snprintf(q, sizeof(q), "CREATE DATABASE \"%s\"", db);
    long status = influxd_query(ix, NULL, q, &body, err, errlen);
    int rc = 0;
    if (status != 200 || !body || strstr(body, "\"error\"")) {
        if (status >= 0)
            snprintf(err, errlen, "CREATE DATABASE %s: HTTP %ld: %s", db, status,
                     body ? body : "");
        rc = -1;
    }
    free(body);
    return rc;
}

/* ---- the process ---------------------------------------------------------- */

static int ix_write_conf(const influxd *ix, char *err, size_t errlen)
{
    FILE *f = fopen(ix->conf, "w");
    if (!f) {
        snprintf(err, errlen, "cannot write %s: %s", ix->conf, strerror(errno));
        return -1;
    }
    fprintf(f,
            "reporting-disabled = true\n"
            "bind-address = \"127.0.0.1:%u\"\n"
            "[meta]\n"
            "  dir = \"%s/meta\"\n"
            "  logging-enabled = false\n"
            "[data]\n"
            "  dir = \"%s/data\"\n"
            "  wal-dir = \"%s/wal\"\n"
            "  query-log-enabled = false\n"
            "[monitor]\n"
            "  store-enabled = false\n"
            "[continuous_queries]\n"
            "  enabled = false\n"
            "[http]\n"
            "  enabled = true\n"
            "  bind-address = \"127.0.0.1:%u\"\n"
            "  auth-enabled = false\n"
            "  log-enabled = false\n"
            "  unix-socket-enabled = false\n",
            ix->rpc_port, ix->dir, ix->dir, ix->dir, ix->port);
    if (fclose(f) != 0) {
        snprintf(err, errlen, "cannot write %s: %s", ix->conf, strerror(errno));
        return -1;
    }
    return 0;
}

static pid_t ix_spawn(const influxd *ix, const char *bin)
{
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid != 0)
        return pid;
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent)
        _exit(125);
    const char *argv[] = { bin, "run", "-config", ix->conf, NULL };
    it_exec_logged(ix->log, argv);
}

static void ix_kill(influxd *ix)
{
    if (ix->pid <= 0)
        return;
    kill(ix->pid, SIGTERM);
    long deadline = ix_now_ms() + 5000;
    for (;;) {
        pid_t w = waitpid(ix->pid, NULL, WNOHANG);
        if (w == ix->pid || (w < 0 && errno == ECHILD))
            break;
        if (ix_now_ms() > deadline) {
            kill(ix->pid, SIGKILL);
            waitpid(ix->pid, NULL, 0);
            break;
        }
        ix_nap_ms(10);
    }
    ix->pid = 0;
}

/* Spawn and wait for /ping. 1: up; 0: exited early (port taken?); -1: error. */
static int ix_launch(influxd *ix, long timeout_ms, char *err, size_t errlen)
{
    const char *bin = influxd_binary();
    if (!bin) {
        snprintf(err, errlen, "influxd is not installed (apt-get install influxdb, or set "
                              "INFLUXD to its path)");
        return -1;
    }
    ix->pid = ix_spawn(ix, bin);
    if (ix->pid < 0) {
        ix->pid = 0;
        snprintf(err, errlen, "fork: %s", strerror(errno));
        return -1;
    }
    char ping[96], why[256] = "";
    snprintf(ping, sizeof(ping), "%s/ping", ix->url);
    long deadline = ix_now_ms() + timeout_ms;
    for (;;) {
        int status;
        if (waitpid(ix->pid, &status, WNOHANG) == ix->pid) {
            ix->pid = 0;
            return 0;
        }
        if (ix_http(ping, NULL, NULL, 1000, why, sizeof(why)) == 204)
            return 1;
        if (ix_now_ms() > deadline) {
            char tail[600];
            influxd_log_tail(ix, tail, sizeof(tail));
            snprintf(err, errlen, "influxd did not answer %s within %ld ms (%s); log: %s", ping,
                     timeout_ms, why, tail);
            ix_kill(ix);
            return -1;
        }
        ix_nap_ms(20);
    }
}

static int ix_remove_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

int influxd_start(influxd *ix, long timeout_ms, char *err, size_t errlen)
{
    memset(ix, 0, sizeof(*ix));
    const char *tmp = getenv("TMPDIR");
    snprintf(ix->dir, sizeof(ix->dir), "%s/gatemq-influxd-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(ix->dir)) {
        snprintf(err, errlen, "mkdtemp: %s", strerror(errno));
        ix->dir[0] = '\0';
        return -1;
    }
    snprintf(ix->conf, sizeof(ix->conf), "%s/influxdb.conf", ix->dir);
    snprintf(ix->log, sizeof(ix->log), "%s/influxd.log", ix->dir);
    int up = 0;
    for (int attempt = 0; attempt < 3 && up == 0; attempt++) {
        ix->port = ix_free_port();
        ix->rpc_port = ix_free_port();
        if (!ix->port || !ix->rpc_port || ix->port == ix->rpc_port) {
            snprintf(err, errlen, "cannot find free ports");
            up = -1;
            break;
        }
        snprintf(ix->url, sizeof(ix->url), "http://127.0.0.1:%u", ix->port);
        if (ix_write_conf(ix, err, errlen)) {
            up = -1;
            break;
        }
        up = ix_launch(ix, timeout_ms, err, errlen);
        if (up == 0) {
            char tail[600];
            influxd_log_tail(ix, tail, sizeof(tail));
            snprintf(err, errlen, "influxd exited at start; log: %s", tail);
        }
    }
    if (up != 1) {
        influxd_stop(ix);
        return -1;
    }
    return 0;
}

void influxd_halt(influxd *ix)
{
    ix_kill(ix);
}

int influxd_resume(influxd *ix, long timeout_ms, char *err, size_t errlen)
{
    if (ix->pid)
        return 0;
    int up = ix_launch(ix, timeout_ms, err, errlen);
    if (up == 0) {
        char tail[600];
        influxd_log_tail(ix, tail, sizeof(tail));
        snprintf(err, errlen, "influxd exited at restart; log: %s", tail);
    }
    return up == 1 ? 0 : -1;
}

void influxd_stop(influxd *ix)
{
    ix_kill(ix);
    if (ix->dir[0])
        nftw(ix->dir, ix_remove_entry, 16, FTW_DEPTH | FTW_PHYS);
    ix->dir[0] = '\0';
}
