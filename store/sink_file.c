/*
 * sink_file.c - the file sink: line protocol appended to a file, fsynced
 * per write. For debugging, and for tests and sites without InfluxDB.
 *
 * The sink owns its descriptor and path copy. A write either lands whole
 * and synced (OK) or, on an I/O error, the file is cut back to its length
 * before the write and RETRY is returned, so a retried batch does not
 * follow a torn copy of itself.
 */
#include <errno.h>
#include <stdbool.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "broker/alloc.h"
#include "store/sink.h"

typedef struct sink_file {
    sink base;
    int fd;
    char *path;
} sink_file;

static int file__write_all(int fd, const char *p, size_t n)
{
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

static enum sink_result file__write(sink *base, const char *body, size_t len, char *err,
                                    size_t errlen)
{
    sink_file *s = (sink_file *)base;
    struct stat st;
    if (fstat(s->fd, &st) != 0) {
        snprintf(err, errlen, "%s: %s", s->path, strerror(errno));
        return SINK_RETRY;
    }
    /* O_APPEND: we are the only writer, so the data lands at st_size. */
    bool newline = len && body[len - 1] != '\n';
    if (file__write_all(s->fd, body, len) == 0 && (!newline || file__write_all(s->fd, "\n", 1) == 0) &&
        fsync(s->fd) == 0)
        return SINK_OK;
    int e = errno;
    snprintf(err, errlen, "%s: %s", s->path, strerror(e));
    if (ftruncate(s->fd, st.st_size) != 0 || fsync(s->fd) != 0) {
        /* The torn tail stays; the retry appends whole lines after it. */
    }
    return SINK_RETRY;
}

static void file__close(sink *base)
{
    sink_file *s = (sink_file *)base;
    if (!s)
        return;
    if (s->fd >= 0)
        close(s->fd);
    gmq_free(s->path);
    gmq_free(s);
}

static const sink_ops file__ops = {
    .name = "file",
    .write = file__write,
    .close = file__close,
};

/* A file just created is durable only once its directory entry is. */
static void file__sync_dir(const char *path)
{
    char *copy = gmq_strdup(path);
    if (!copy)
        return;
    int dfd = open(dirname(copy), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        (void)fsync(dfd);
        close(dfd);
    }
    gmq_free(copy);
}

sink *sink_file_open(const char *path, char *err, size_t errlen)
{
    sink_file *s = gmq_calloc(1, sizeof(*s));
    if (!s) {
        snprintf(err, errlen, "no memory");
        return NULL;
    }
    s->base.ops = &file__ops;
    s->fd = -1;
    s->path = gmq_strdup(path);
    if (!s->path) {
        snprintf(err, errlen, "no memory");
        goto fail;
    }
    bool existed = access(path, F_OK) == 0;
    s->fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
    if (s->fd < 0) {
        snprintf(err, errlen, "cannot open %s: %s", path, strerror(errno));
        goto fail;
    }
    if (!existed)
        file__sync_dir(path);
    return &s->base;
fail:
    file__close(&s->base);
    return NULL;
}
