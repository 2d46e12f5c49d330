/*
 * tls_util.c - see tls_util.h.
 */
#include "tls_util.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <signal.h>
#include <stdarg.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define TU_DIR_PREFIX "/tmp/gatemq-tls."
#define TU_MAX_DIRS 64

static char tu_script[PATH_MAX];
static char tu_passwd[PATH_MAX];
static char tu_root[PATH_MAX];   /* group temporary directory */
static char tu_pki_dir[PATH_MAX];
static char tu_pki_rsa_dir[PATH_MAX];
static char *tu_dirs[TU_MAX_DIRS]; /* per-test directories */

/* ---- small things -------------------------------------------------------- */

void tu_poll_pause(void)
{
    struct timespec ts = { 0, 10 * 1000000L };
    nanosleep(&ts, NULL);
}

bool tu_has(const char *hay, const char *needle)
{
    return hay && strstr(hay, needle) != NULL;
}

void tu__expect_has(const char *out, const char *text, const char *what)
{
    if (!tu_has(out, text))
        it_fail("%s: expected \"%s\" in:\n%s", what, text, out ? out : "(nothing)");
}

void tu__fmt(char *buf, size_t n, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int k = vsnprintf(buf, n, fmt, ap);
    va_end(ap);
    if (k < 0 || (size_t)k >= n)
        it_fail("string too long for its buffer: %s", fmt);
}

static void remove_tree(const char *dir)
{
    /* Only directories this file created. */
    if (strncmp(dir, TU_DIR_PREFIX, strlen(TU_DIR_PREFIX)) != 0)
        return;
    it_remove_tree(dir);
}

static bool make_dir(char *out, size_t n)
{
    char tmpl[] = TU_DIR_PREFIX "XXXXXX";
    if (!mkdtemp(tmpl))
        return false;
    snprintf(out, n, "%s", tmpl);
    return true;
}

/* ---- locating things ------------------------------------------------------ */

static bool find_repo(void)
{
    return it_repo_path("tools/gatemq-cert", tu_script, sizeof tu_script);
}

static void find_passwd(void)
{
    const char *build = getenv("GATEMQ_BUILD");
    if (build && *build) {
        snprintf(tu_passwd, sizeof tu_passwd, "%s/gatemq-passwd", build);
        return;
    }
    char bin[PATH_MAX];
    snprintf(bin, sizeof bin, "%s", it_broker_bin());
    snprintf(tu_passwd, sizeof tu_passwd, "%s/gatemq-passwd", dirname(bin));
}

const char *tu_cert_script(void)
{
    return tu_script;
}

const char *tu_passwd_bin(void)
{
    return tu_passwd;
}

const char *tu_pki(void)
{
    return tu_pki_dir;
}

const char *tu_pki_rsa(void)
{
    return tu_pki_rsa_dir;
}

const char *tu_company_ca(void)
{
    static char dir[PATH_MAX];
    snprintf(dir, sizeof dir, "%.4000s/ca-globex", tu_root);
    return dir;
}

/* ---- tools ------------------------------------------------------------- */

void tu_args_init(tu_args *a)
{
    a->n = 0;
    a->used = 0;
    a->v[0] = NULL;
}

static void args_push(tu_args *a, const char *s)
{
    size_t len = strlen(s) + 1;
    if (a->n + 1 >= (int)(sizeof a->v / sizeof a->v[0]) || a->used + len > sizeof a->pool)
        it_fail("too many arguments for a tu_args");
    memcpy(a->pool + a->used, s, len);
    a->v[a->n++] = a->pool + a->used;
    a->v[a->n] = NULL;
    a->used += len;
}

void tu__args_add(tu_args *a, ...)
{
    va_list ap;
    va_start(ap, a);
    const char *s;
    while ((s = va_arg(ap, const char *)) != NULL)
        args_push(a, s);
    va_end(ap);
}

void tu__args_fmt(tu_args *a, const char *fmt, ...)
{
    char buf[PATH_MAX + 64];
    va_list ap;
    va_start(ap, fmt);
    int k = vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    if (k < 0 || (size_t)k >= sizeof buf)
        it_fail("argument too long");
    args_push(a, buf);
}

void tu__args_mosq(tu_args *a, const char *tool, uint16_t port, const char *ca,
                   const tu_dev *dev)
{
    if (strcmp(tool, "mosquitto_sub") == 0)
        tu__args_add(a, "stdbuf", "-oL", NULL);
    tu__args_add(a, tool, "-h", "127.0.0.1", NULL);
    tu__args_fmt(a, "-p");
    tu__args_fmt(a, "%u", port);
    tu__args_add(a, "--cafile", ca, NULL);
    if (dev)
        tu__args_add(a, "--cert", dev->crt, "--key", dev->key, NULL);
}

int tu__run(tu_args *a, char **out)
{
    return it__run(a->v, TU_TIMEOUT, out);
}

void tu__await_output(it_proc *p, const char *text, int timeout_ms)
{
    if (!it_proc_wait_output(p, text, timeout_ms))
        it_fail("no \"%s\" within %d ms in the output:\n%s", text, timeout_ms,
                it_proc_output(p));
}

it_proc *tu__sub_start(uint16_t port, const char *ca, const tu_dev *dev, const char *id,
                       const char *topic)
{
    tu_args a;
    tu_args_init(&a);
    tu__args_mosq(&a, "mosquitto_sub", port, ca, dev);
    tu__args_add(&a, "-d", "-v", "-q", "1", "-t", topic, NULL);
    if (id)
        tu__args_add(&a, "-i", id, NULL);
    it_proc *p = it__spawn(a.v);
    tu__await_output(p, "received SUBACK", TU_TIMEOUT);
    return p;
}

int tu__dev_pub(uint16_t port, const char *ca, const tu_dev *dev, const char *id,
                const char *topic, const char *msg, char **out)
{
    tu_args a;
    tu_args_init(&a);
    tu__args_mosq(&a, "mosquitto_pub", port, ca, dev);
    tu__args_add(&a, "-d", "-q", "1", "-t", topic, "-m", msg, NULL);
    if (id)
        tu__args_add(&a, "-i", id, NULL);
    return tu__run(&a, out);
}

int tu__user_pub(uint16_t port, const char *ca, const char *user, const char *password,
                 const char *topic, const char *msg, char **out)
{
    tu_args a;
    tu_args_init(&a);
    tu__args_mosq(&a, "mosquitto_pub", port, ca, NULL);
    tu__args_add(&a, "-d", "-q", "1", "-t", topic, "-m", msg, "-u", user, "-P", password,
                 NULL);
    return tu__run(&a, out);
}

void tu__dev_publish(uint16_t port, const char *ca, const char *id, const char *topic,
                     const char *msg)
{
    tu_dev d;
    tu_device(&d, "acme", id);
    char *out = NULL;
    int rc = tu__dev_pub(port, ca, &d, id, topic, msg, &out);
    if (rc != 0 || !tu_has(out, "received PUBACK")) {
        print_error("mosquitto_pub output:\n%s\n", out ? out : "");
        free(out);
        it_fail("device %s could not publish to %s (exit %d)", id, topic, rc);
    }
    free(out);
}

void tu__plain_publish(it_broker *b, const char *topic, const char *msg)
{
    static unsigned n;
    char id[32];
    snprintf(id, sizeof id, "tu-plain-pub-%u", n++);
    it_conn *c = it__client(it_broker_port(b), id, true, false);
    it__publish(c, topic, msg, strlen(msg), 1, false);
    it__disconnect(c);
}

/* gatemq-cert with a NULL-terminated argument list; status and output. */
static int cert_vrun(char **out, const char *first, va_list ap)
{
    tu_args a;
    tu_args_init(&a);
    tu__args_add(&a, "sh", tu_script, first, NULL);
    const char *s;
    while ((s = va_arg(ap, const char *)) != NULL)
        args_push(&a, s);
    /* RSA key generation on a loaded machine: be generous. */
    return it__run(a.v, 120000, out);
}

void tu__cert(const char *arg, ...)
{
    va_list ap;
    va_start(ap, arg);
    char *out = NULL;
    int rc = cert_vrun(&out, arg, ap);
    va_end(ap);
    if (rc != 0) {
        print_error("gatemq-cert output:\n%s\n", out ? out : "");
        free(out);
        it_fail("gatemq-cert %s exited %d", arg, rc);
    }
    free(out);
}

/* ---- files --------------------------------------------------------------- */

const char *tu_tempdir(void)
{
    char dir[PATH_MAX];
    if (!make_dir(dir, sizeof dir))
        it_fail("mkdtemp: %s", strerror(errno));
    for (size_t i = 0; i < TU_MAX_DIRS; i++) {
        if (!tu_dirs[i]) {
            tu_dirs[i] = strdup(dir);
            return tu_dirs[i];
        }
    }
    remove_tree(dir);
    it_fail("more than %d temporary directories in one test", TU_MAX_DIRS);
}

const char *tu_pki_copy(const char *pki)
{
    const char *dir = tu_tempdir();
    char src[PATH_MAX], dst[PATH_MAX];
    tu__fmt(src, sizeof src, "%s/.", pki);
    tu__fmt(dst, sizeof dst, "%s/pki", dir);
    const char *argv[] = { "cp", "-a", src, dst, NULL };
    char *out = NULL;
    int rc = it__run(argv, TU_TIMEOUT, &out);
    if (rc != 0) {
        print_error("cp output:\n%s\n", out ? out : "");
        free(out);
        it_fail("cp -a %s %s exited %d", src, dst, rc);
    }
    free(out);
    /* Stored next to the directory name: a stable pointer for the test. */
    for (size_t i = 0; i < TU_MAX_DIRS; i++) {
        if (tu_dirs[i] == dir) {
            char *longer = realloc(tu_dirs[i], strlen(dst) + 1);
            if (!longer)
                it_fail("out of memory");
            strcpy(longer, dst);
            tu_dirs[i] = longer;
            return longer;
        }
    }
    it_fail("temporary directory vanished");
}

static void write_atomic(const char *path, const char *data, size_t n)
{
    char tmp[PATH_MAX + 16];
    tu__fmt(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = fopen(tmp, "wb");
    if (!f)
        it_fail("cannot write %s: %s", tmp, strerror(errno));
    bool ok = fwrite(data, 1, n, f) == n;
    ok = fclose(f) == 0 && ok;
    if (!ok || rename(tmp, path) != 0)
        it_fail("cannot write %s: %s", path, strerror(errno));
}

void tu__copy(const char *src, const char *dst)
{
    size_t n;
    char *data = it_read_file(src, &n);
    if (!data)
        it_fail("cannot read %s: %s", src, strerror(errno));
    char tmp[PATH_MAX + 16];
    tu__fmt(tmp, sizeof tmp, "%s.tmp", dst);
    FILE *f = fopen(tmp, "wb");
    bool ok = f && fwrite(data, 1, n, f) == n;
    if (f)
        ok = fclose(f) == 0 && ok;
    free(data);
    if (!ok || rename(tmp, dst) != 0)
        it_fail("cannot copy %s to %s: %s", src, dst, strerror(errno));
}

void tu__write(const char *path, const char *text)
{
    write_atomic(path, text, strlen(text));
}

void tu_device_in(tu_dev *d, const char *pki, const char *company, const char *id)
{
    tu__fmt(d->crt, sizeof d->crt, "%s/devices/%s/%s.crt", pki, company, id);
    tu__fmt(d->key, sizeof d->key, "%s/devices/%s/%s.key", pki, company, id);
}

void tu_device(tu_dev *d, const char *company, const char *id)
{
    tu_device_in(d, tu_pki_dir, company, id);
}

void tu__tls_from(tu_tls *m, const char *pki)
{
    snprintf(m->dir, sizeof m->dir, "%s", tu_tempdir());
    char src[PATH_MAX];
    tu__fmt(m->cert, sizeof m->cert, "%s/server.crt", m->dir);
    tu__fmt(m->key, sizeof m->key, "%s/server.key", m->dir);
    tu__fmt(m->ca, sizeof m->ca, "%s/ca.crt", m->dir);
    tu__fmt(m->crl, sizeof m->crl, "%s/crl.pem", m->dir);
    tu__fmt(src, sizeof src, "%s/server.crt", pki);
    tu__copy(src, m->cert);
    tu__fmt(src, sizeof src, "%s/server.key", pki);
    tu__copy(src, m->key);
    tu__fmt(src, sizeof src, "%s/ca.crt", pki);
    tu__copy(src, m->ca);
    tu__fmt(src, sizeof src, "%s/crl.pem", pki);
    tu__copy(src, m->crl);
}

/* ---- broker -------------------------------------------------------------- */

it_broker *tu__start(const tu_tls *m, const char *listener_keys, const char *global,
                     uint16_t *tls_port)
{
    uint16_t port = it_free_port();
    size_t n = 4 * PATH_MAX + 256 + (listener_keys ? strlen(listener_keys) : 0) +
               (global ? strlen(global) : 0);
    char *conf = malloc(n);
    if (!conf)
        it_fail("out of memory");
    snprintf(conf, n,
             "listener %u 127.0.0.1\n"
             "certfile %s\nkeyfile %s\ncafile %s\ncrlfile %s\n"
             "%s\n%s\n",
             port, m->cert, m->key, m->ca, m->crl, listener_keys ? listener_keys : "",
             global ? global : "");
    it_broker *b = it__broker_start(conf);
    free(conf);
    /* The plain listener answering does not mean the TLS one listens. */
    char line[64];
    snprintf(line, sizeof line, "port %u (TLS)", port);
    tu__await_log_n(b, line, 1, TU_TIMEOUT);
    *tls_port = port;
    return b;
}

int tu_log_count(const it_broker *b, const char *text)
{
    /* The broker's stderr is its log file: read it through /proc. */
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/fd/2", (int)it_broker_pid(b));
    char *log = it_read_file(path, NULL);
    if (!log)
        return it_broker_log_contains(b, text) ? 1 : 0;
    int count = 0;
    for (const char *p = log; (p = strstr(p, text)) != NULL; p += strlen(text))
        count++;
    free(log);
    return count;
}

void tu__await_log_n(const it_broker *b, const char *text, int n, int timeout_ms)
{
    long deadline = it_now_ms() + timeout_ms;
    while (tu_log_count(b, text) < n) {
        if (it_now_ms() > deadline)
            it_fail("the broker log does not hold \"%s\" %d time(s) within %d ms", text, n,
                    timeout_ms);
        tu_poll_pause();
    }
}

void tu__log_has(const it_broker *b, const char *text, bool expected)
{
    if (it_broker_log_contains(b, text) != expected)
        it_fail("the broker log %s \"%s\"", expected ? "does not hold" : "holds", text);
}

void tu__reload(const it_broker *b, const char *done)
{
    int before = tu_log_count(b, done);
    if (kill(it_broker_pid(b), SIGHUP) != 0)
        it_fail("kill SIGHUP: %s", strerror(errno));
    tu__await_log_n(b, done, before + 1, TU_TIMEOUT);
}

/* ---- program set-up --------------------------------------------------------- */

int tu_teardown(void **state)
{
    it_teardown(state);
    for (size_t i = 0; i < TU_MAX_DIRS; i++) {
        if (tu_dirs[i]) {
            /* A PKI copy is stored as <dir>/pki: remove <dir>. */
            char dir[PATH_MAX];
            snprintf(dir, sizeof dir, "%s", tu_dirs[i]);
            char *rest = strchr(dir + strlen(TU_DIR_PREFIX), '/');
            if (rest)
                *rest = '\0';
            remove_tree(dir);
            free(tu_dirs[i]);
            tu_dirs[i] = NULL;
        }
    }
    return 0;
}

int tu_group_setup(void **state)
{
    if (it_group_setup(state) != 0)
        return -1;
    if (!find_repo()) {
        print_error("tools/gatemq-cert not found: set GATEMQ_SRC to the repository\n");
        return -1;
    }
    find_passwd();
    if (access(tu_passwd, X_OK) != 0) {
        print_error("%s not found: set GATEMQ_BUILD to the build directory\n", tu_passwd);
        return -1;
    }
    if (!make_dir(tu_root, sizeof tu_root)) {
        print_error("mkdtemp: %s\n", strerror(errno));
        return -1;
    }
    tu__fmt(tu_pki_dir, sizeof tu_pki_dir, "%s/pki", tu_root);
    tu__fmt(tu_pki_rsa_dir, sizeof tu_pki_rsa_dir, "%s/pki-rsa", tu_root);
    const char *p = tu_pki_dir;
    tu__cert("ca", p, NULL);
    tu__cert("server", p, "localhost", "127.0.0.1", NULL);
    tu__cert("device", p, "acme", "gw-0001", NULL);
    tu__cert("device", p, "acme", "gw-0002", NULL);
    tu__cert("device", p, "globex", "gw-0101", NULL);
    tu__cert("device", p, "acme", "gw-revoked", NULL);
    tu__cert("revoke", p, "acme", "gw-revoked", NULL);
    tu__cert("expired", p, "acme", "gw-expired", NULL);
    tu__cert("foreign", p, "acme", "gw-foreign", NULL);
    tu__cert("nocompany", p, "gw-noco", NULL);
    tu__cert("device", p, "acme", "gw-ou", "--ou", "plant7", NULL);
    tu__cert("device", p, "acme", "gw-san", "--san-uri", "urn:gatemq:company:initech", NULL);
    /* A CA of its own for company_ca; the O it writes is not the company. */
    char co[PATH_MAX];
    tu__fmt(co, sizeof co, "%s/ca-globex", tu_root);
    tu__cert("ca", co, "--name", "globex devices CA", NULL);
    tu__cert("device", co, "whatever", "gw-g1", NULL);
    /* The same CA with an RSA server key. */
    const char *cp[] = { "cp", "-a", tu_pki_dir, tu_pki_rsa_dir, NULL };
    char *out = NULL;
    int rc = it__run(cp, TU_TIMEOUT, &out);
    free(out);
    if (rc != 0) {
        print_error("cp -a %s %s failed\n", tu_pki_dir, tu_pki_rsa_dir);
        return -1;
    }
    tu__cert("server", tu_pki_rsa_dir, "localhost", "127.0.0.1", "--rsa", "--force", NULL);
    return 0;
}

int tu_group_teardown(void **state)
{
    (void)state;
    if (tu_root[0])
        remove_tree(tu_root);
    return 0;
}
