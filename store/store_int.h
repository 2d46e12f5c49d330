/*
 * store_int.h - shared by the files of store/ only: the database file (store_db.c).
 */
#ifndef GATEMQ_STORE_INT_H
#define GATEMQ_STORE_INT_H

#include <sqlite3.h>
#include <stddef.h>

#include "broker/readfile.h"
#include "store/store.h"

/* Open path with an integrity check, moving a damaged file (and its -wal,
 * -shm) aside to "<path>.corrupt-<unix time>" with an error logged and
 * starting afresh; set WAL mode and the synchronous level; create or migrate
 * the schema. Returns the handle (the caller closes it), or NULL with err
 * filled: not writable, unreadable, or a schema newer than this build. */
sqlite3 *store__db_open(const char *path, enum store_sync sync, char *err, size_t errlen);


#endif
