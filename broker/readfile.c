#include "broker/readfile.h"

#include <errno.h>
#include <stdarg.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "broker/alloc.h"

void gmq_errf(char *err, size_t errlen, const char *fmt, ...)
{
    if (!err || errlen == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

int gmq_read_file(const char *path, size_t max, char **out, size_t *len, char *err,
                  size_t errlen)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return GMQ_READ_IO;
    }
    int rc = GMQ_READ_OK;
    char *buf = NULL;
    size_t n = 0, cap = 0, first = 4096;
    struct stat st;
    if (fstat(fd, &st) == 0) {
        if (S_ISDIR(st.st_mode)) {
            snprintf(err, errlen, "%s: is a directory", path);
            close(fd);
            return GMQ_READ_IO;
        }
        /* Room for the whole file and the NUL: end of file is then seen
         * without growing again. */
        if (S_ISREG(st.st_mode) && st.st_size > 0 && (unsigned long long)st.st_size < max)
            first = (size_t)st.st_size + 2;
    }
    for (;;) {
        if (n > max) {
            snprintf(err, errlen, "%s: file too large (more than %zu bytes)", path, max);
            rc = GMQ_READ_IO;
            break;
        }
        /* Always at least one byte to read into, and one for the NUL. */
        if (GMQ_GROW(buf, cap, n + 2, first)) {
            snprintf(err, errlen, "%s: out of memory", path);
            rc = GMQ_READ_NOMEM;
            break;
        }
        ssize_t r = read(fd, buf + n, cap - n - 1);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            snprintf(err, errlen, "%s: %s", path, strerror(errno));
            rc = GMQ_READ_IO;
            break;
        }
        if (r == 0)
            break;
        n += (size_t)r;
    }
    close(fd);
    if (rc != GMQ_READ_OK) {
        gmq_free(buf);
        return rc;
    }
    buf[n] = '\0';
    *out = buf;
    *len = n;
    return GMQ_READ_OK;
}
