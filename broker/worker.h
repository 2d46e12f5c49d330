/*
 * worker.h - a small thread pool for work that must not run on the event
 * loop thread (password key derivation, reloading files).
 *
 * A job's run() executes on a worker thread and must not touch anything the
 * loop owns; its done() then executes on the loop thread, which owns the job
 * again and frees it. Jobs still queued when the pool is freed are not run:
 * their done() is called with `cancelled` set.
 */
#ifndef GATEMQ_WORKER_H
#define GATEMQ_WORKER_H

#include <ev.h>
#include <stdbool.h>

typedef struct worker_job worker_job;
struct worker_job {
    void (*run)(worker_job *j);
    void (*done)(worker_job *j);
    bool cancelled;
    worker_job *next; /* the pool's */
};

typedef struct worker_pool worker_pool;

/* Starts `threads` threads. NULL on failure (nothing left running). */
worker_pool *worker_pool_new(struct ev_loop *loop, unsigned threads);
/* Queue j; j must stay valid until its done() is called. Loop thread only. */
void worker_pool_submit(worker_pool *p, worker_job *j);
/* Jobs waiting to run (for $SYS and tests). */
unsigned worker_pool_backlog(worker_pool *p);
/* Stop: running jobs finish, queued ones are cancelled; every done() is
 * called before this returns. Loop thread only. */
void worker_pool_free(worker_pool *p);

#endif
