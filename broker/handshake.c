/*
 * handshake.c - full TLS handshakes on threads of their own (handshake.h).
 *
 * Each thread waits in an epoll set of its own. The loop thread queues a
 * job on the least busy thread's inbox and wakes it (an eventfd); the
 * thread adds the job's socket to its set, steps mbedtls whenever the socket
 * is ready until the handshake ends or its deadline passes, removes the
 * socket from its set, and only then puts the job on the pool's finished
 * list and wakes the loop thread (an ev_async), which gives the connection
 * back to conn.c. Removing the socket before the hand-back matters: after
 * it, the thread holds nothing that refers to the descriptor, which the
 * loop may close and the kernel reuse at once. (A libev loop per thread
 * would not do: libev takes a stopped descriptor out of its epoll set only
 * lazily, on a later event.) Jobs are allocated and freed on the loop thread
 * only. Every handshake has the same timeout, so the live list, in arrival
 * order, is also in deadline order.
 */
#include "broker/handshake.h"

#include <errno.h>
#include <pthread.h>
#include <string.h>
#include <stdint.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "broker/alloc.h"
#include "broker/log.h"
#include "broker/tls_transport.h"

typedef struct hs_thread hs_thread;

typedef struct hs_job {
    conn *c;
    hs_thread *th;
    double deadline;   /* CLOCK_MONOTONIC seconds */
    uint32_t events;   /* EPOLLIN or EPOLLOUT, as registered */
    enum hs_result result;
    struct hs_job *next;      /* inbox or finished list */
    struct hs_job *live_prev; /* the thread's live list, oldest first */
    struct hs_job *live_next;
} hs_job;

struct hs_thread {
    hs_pool *pool;
    pthread_t tid;
    bool started;
    int epfd, wakefd;
    hs_job *inbox;  /* LIFO, under pool->lock */
    bool stopping;  /* under pool->lock */
    hs_job *live_head, *live_tail; /* this thread's own */
    unsigned load;  /* jobs given and not yet back; loop thread's */
};

struct hs_pool {
    broker *b;
    double timeout;
    ev_async done; /* on the broker's loop */
    pthread_mutex_t lock;
    hs_job *finished; /* LIFO, under lock */
    unsigned active;  /* loop thread's */
    unsigned nthreads;
    hs_thread *threads;
};

unsigned hs_default_threads(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n < 1 ? 1 : n > 64 ? 64 : (unsigned)n;
}

/* A list pushed LIFO (inbox, finished list), oldest first. */
static hs_job *reversed(hs_job *list)
{
    hs_job *ordered = NULL;
    while (list) {
        hs_job *next = list->next;
        list->next = ordered;
        ordered = list;
        list = next;
    }
    return ordered;
}

/* ---- on a handshake thread ------------------------------------------------ */

static double mono_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static void finish(hs_job *j, enum hs_result r)
{
    hs_thread *th = j->th;
    epoll_ctl(th->epfd, EPOLL_CTL_DEL, j->c->fd, NULL);
    if (j->live_prev)
        j->live_prev->live_next = j->live_next;
    else
        th->live_head = j->live_next;
    if (j->live_next)
        j->live_next->live_prev = j->live_prev;
    else
        th->live_tail = j->live_prev;
    j->result = r;
    hs_pool *p = th->pool;
    pthread_mutex_lock(&p->lock);
    j->next = p->finished;
    p->finished = j;
    pthread_mutex_unlock(&p->lock);
    ev_async_send(p->b->loop, &p->done);
}

static void step(hs_job *j)
{
    ptrdiff_t rc = tls_transport_handshake(j->c);
    uint32_t want = rc == GMQ_IO_WANT_READ ? EPOLLIN : rc == GMQ_IO_WANT_WRITE ? EPOLLOUT : 0;
    if (!want) {
        finish(j, rc == 0 ? HS_DONE : HS_FAILED);
        return;
    }
    if (want != j->events) {
        struct epoll_event ev = {.events = want, .data.ptr = j};
        if (epoll_ctl(j->th->epfd, EPOLL_CTL_MOD, j->c->fd, &ev)) {
            finish(j, HS_FAILED);
            return;
        }
        j->events = want;
    }
}

/* Take the inbox; returns whether the pool is stopping. */
static bool take_inbox(hs_thread *th)
{
    uint64_t n;
    (void)!read(th->wakefd, &n, sizeof n);
    hs_pool *p = th->pool;
    pthread_mutex_lock(&p->lock);
    hs_job *in = th->inbox;
    th->inbox = NULL;
    bool stopping = th->stopping;
    pthread_mutex_unlock(&p->lock);
    /* The inbox is LIFO: reverse it so the live list stays in arrival order. */
    hs_job *ordered = reversed(in);
    double deadline = mono_now() + p->timeout;
    while (ordered) {
        hs_job *j = ordered;
        ordered = j->next;
        j->deadline = deadline;
        j->live_prev = th->live_tail;
        j->live_next = NULL;
        if (th->live_tail)
            th->live_tail->live_next = j;
        else
            th->live_head = j;
        th->live_tail = j;
        j->events = EPOLLIN; /* the client speaks first */
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = j};
        if (epoll_ctl(th->epfd, EPOLL_CTL_ADD, j->c->fd, &ev))
            finish(j, HS_FAILED);
    }
    return stopping;
}

static void *thread_main(void *arg)
{
    hs_thread *th = arg;
    struct epoll_event evs[64];
    bool stopping = false;
    while (!stopping) {
        int wait_ms = -1;
        if (th->live_head) {
            double left = th->live_head->deadline - mono_now();
            wait_ms = left <= 0 ? 0 : (int)(left * 1000) + 1;
        }
        int n = epoll_wait(th->epfd, evs, 64, wait_ms);
        if (n < 0 && errno != EINTR) {
            LOG_ERROR("handshake thread: epoll_wait: %s", strerror(errno));
            n = 0;
        }
        /* One event per descriptor per batch: a job finished by its own
         * event does not come up again in this batch. */
        for (int i = 0; i < n; i++) {
            if (evs[i].data.ptr == NULL)
                stopping |= take_inbox(th);
            else
                step(evs[i].data.ptr);
        }
        double now = mono_now();
        while (th->live_head && th->live_head->deadline <= now)
            finish(th->live_head, HS_TIMEOUT);
    }
    while (th->live_head)
        finish(th->live_head, HS_CANCELLED);
    return NULL;
}

/* ---- on the loop thread ----------------------------------------------------- */

/* Give finished connections back, oldest first. */
static void drain(hs_pool *p)
{
    pthread_mutex_lock(&p->lock);
    hs_job *list = p->finished;
    p->finished = NULL;
    pthread_mutex_unlock(&p->lock);
    hs_job *ordered = reversed(list);
    while (ordered) {
        hs_job *j = ordered;
        ordered = j->next;
        conn *c = j->c;
        enum hs_result r = j->result;
        j->th->load--;
        p->active--;
        gmq_free(j);
        c->hs = NULL;
        conn_handshake_done(c, r);
    }
}

static void on_done(struct ev_loop *loop, ev_async *w, int revents)
{
    (void)loop;
    (void)revents;
    drain(w->data);
}

static void wake(hs_thread *th)
{
    uint64_t one = 1;
    (void)!write(th->wakefd, &one, sizeof one);
}

hs_pool *hs_pool_new(broker *b, unsigned threads, double timeout)
{
    if (threads == 0)
        return NULL;
    hs_pool *p = gmq_calloc(1, sizeof(*p));
    if (!p)
        return NULL;
    p->b = b;
    p->timeout = timeout;
    p->threads = gmq_calloc(threads, sizeof(*p->threads));
    if (!p->threads || pthread_mutex_init(&p->lock, NULL)) {
        gmq_free(p->threads);
        gmq_free(p);
        return NULL;
    }
    ev_async_init(&p->done, on_done);
    p->done.data = p;
    ev_async_start(b->loop, &p->done);
    for (unsigned i = 0; i < threads; i++) {
        hs_thread *th = &p->threads[i];
        th->pool = p;
        th->epfd = epoll_create1(EPOLL_CLOEXEC);
        th->wakefd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
        p->nthreads++;
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
        if (th->epfd < 0 || th->wakefd < 0 ||
            epoll_ctl(th->epfd, EPOLL_CTL_ADD, th->wakefd, &ev))
            break;
        if (pthread_create(&th->tid, NULL, thread_main, th))
            break;
        th->started = true;
        pthread_setname_np(th->tid, "gatemq-tls"); /* top, ps -L, /proc/PID/task */
    }
    if (p->nthreads < threads || !p->threads[p->nthreads - 1].started) {
        LOG_ERROR("cannot start %u TLS handshake threads", threads);
        hs_pool_free(p);
        return NULL;
    }
    return p;
}

int hs_pool_submit(hs_pool *p, conn *c)
{
    hs_job *j = gmq_calloc(1, sizeof(*j));
    if (!j)
        return -1;
    hs_thread *th = &p->threads[0];
    for (unsigned i = 1; i < p->nthreads; i++)
        if (p->threads[i].load < th->load)
            th = &p->threads[i];
    j->c = c;
    j->th = th;
    c->hs = j;
    th->load++;
    p->active++;
    pthread_mutex_lock(&p->lock);
    j->next = th->inbox;
    th->inbox = j;
    pthread_mutex_unlock(&p->lock);
    wake(th);
    LOG_DEBUG("TLS handshake of %s handed to handshake thread %u", c->peer,
              (unsigned)(th - p->threads) + 1);
    return 0;
}

unsigned hs_pool_active(const hs_pool *p)
{
    return p ? p->active : 0;
}

void hs_pool_free(hs_pool *p)
{
    if (!p)
        return;
    for (unsigned i = 0; i < p->nthreads; i++) {
        hs_thread *th = &p->threads[i];
        pthread_mutex_lock(&p->lock);
        th->stopping = true;
        pthread_mutex_unlock(&p->lock);
        if (th->started) {
            wake(th);
            pthread_join(th->tid, NULL);
        }
        if (th->epfd >= 0)
            close(th->epfd);
        if (th->wakefd >= 0)
            close(th->wakefd);
    }
    /* Every job is on the finished list now. */
    drain(p);
    ev_async_stop(p->b->loop, &p->done);
    pthread_mutex_destroy(&p->lock);
    gmq_free(p->threads);
    gmq_free(p);
}
