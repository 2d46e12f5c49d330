#include "broker/worker.h"

#include <pthread.h>

#include "broker/alloc.h"
#include "broker/log.h"

struct worker_pool {
    struct ev_loop *loop;
    ev_async wake; /* a worker finished a job */
    pthread_mutex_t lock;
    pthread_cond_t cond;
    worker_job *todo_head, *todo_tail; /* FIFO, under lock */
    worker_job *finished;              /* LIFO, under lock */
    unsigned backlog;
    bool stopping;
    unsigned nthreads;
    pthread_t *threads;
};

static void *worker_main(void *arg)
{
    worker_pool *p = arg;
    pthread_mutex_lock(&p->lock);
    for (;;) {
        while (!p->todo_head && !p->stopping)
            pthread_cond_wait(&p->cond, &p->lock);
        if (p->stopping)
            break;
        worker_job *j = p->todo_head;
        p->todo_head = j->next;
        if (!p->todo_head)
            p->todo_tail = NULL;
        p->backlog--;
        pthread_mutex_unlock(&p->lock);
        j->run(j);
        pthread_mutex_lock(&p->lock);
        j->next = p->finished;
        p->finished = j;
        ev_async_send(p->loop, &p->wake);
    }
    pthread_mutex_unlock(&p->lock);
    return NULL;
}

/* Call done() for finished jobs, oldest first. */
static void drain(worker_pool *p)
{
    pthread_mutex_lock(&p->lock);
    worker_job *list = p->finished;
    p->finished = NULL;
    pthread_mutex_unlock(&p->lock);
    worker_job *ordered = NULL;
    while (list) {
        worker_job *next = list->next;
        list->next = ordered;
        ordered = list;
        list = next;
    }
    while (ordered) {
        worker_job *next = ordered->next;
        ordered->done(ordered);
        ordered = next;
    }
}

static void on_wake(struct ev_loop *loop, ev_async *w, int revents)
{
    (void)loop;
    (void)revents;
    drain(w->data);
}

worker_pool *worker_pool_new(struct ev_loop *loop, unsigned threads)
{
    worker_pool *p = gmq_calloc(1, sizeof(*p));
    if (!p)
        return NULL;
    p->loop = loop;
    p->threads = gmq_calloc(threads, sizeof(*p->threads));
    if (!p->threads || pthread_mutex_init(&p->lock, NULL)) {
        gmq_free(p->threads);
        gmq_free(p);
        return NULL;
    }
    pthread_cond_init(&p->cond, NULL);
    ev_async_init(&p->wake, on_wake);
    p->wake.data = p;
    ev_async_start(loop, &p->wake);
    for (unsigned i = 0; i < threads; i++) {
        if (pthread_create(&p->threads[i], NULL, worker_main, p)) {
            LOG_ERROR("cannot start worker thread %u", i);
            worker_pool_free(p);
            return NULL;
        }
        p->nthreads++;
    }
    return p;
}

void worker_pool_submit(worker_pool *p, worker_job *j)
{
    j->cancelled = false;
    j->next = NULL;
    pthread_mutex_lock(&p->lock);
    if (p->todo_tail)
        p->todo_tail->next = j;
    else
        p->todo_head = j;
    p->todo_tail = j;
    p->backlog++;
    pthread_cond_signal(&p->cond);
    pthread_mutex_unlock(&p->lock);
}

unsigned worker_pool_backlog(worker_pool *p)
{
    pthread_mutex_lock(&p->lock);
    unsigned n = p->backlog;
    pthread_mutex_unlock(&p->lock);
    return n;
}

void worker_pool_free(worker_pool *p)
{
    if (!p)
        return;
    pthread_mutex_lock(&p->lock);
    p->stopping = true;
    pthread_cond_broadcast(&p->cond);
    worker_job *todo = p->todo_head;
    p->todo_head = p->todo_tail = NULL;
    pthread_mutex_unlock(&p->lock);
    for (unsigned i = 0; i < p->nthreads; i++)
        pthread_join(p->threads[i], NULL);
    drain(p);
    while (todo) {
        worker_job *next = todo->next;
        todo->cancelled = true;
        todo->done(todo);
        todo = next;
    }
    ev_async_stop(p->loop, &p->wake);
    pthread_cond_destroy(&p->cond);
    pthread_mutex_destroy(&p->lock);
    gmq_free(p->threads);
    gmq_free(p);
}
