/*
 * readfile.h - read a whole configuration-sized file into memory: the one
 * reader behind the config, password and ACL files.
 */
#ifndef GATEMQ_READFILE_H
#define GATEMQ_READFILE_H

#include <stddef.h>

enum { GMQ_READ_OK = 0, GMQ_READ_IO = -1, GMQ_READ_NOMEM = -2 };

/* Read path whole (at most max bytes) into a new buffer with a NUL after
 * the last byte; the caller frees *out with gmq_free. Returns GMQ_READ_OK,
 * or GMQ_READ_IO (cannot open or read, a directory, larger than max) or
 * GMQ_READ_NOMEM with err holding "path: reason" and nothing allocated. */
/* Format an error message into err[0..errlen) the way every loader and
 * parser reports one; nothing when err is NULL or errlen 0. */
void gmq_errf(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

int gmq_read_file(const char *path, size_t max, char **out, size_t *len, char *err,
                  size_t errlen);

#endif
