/* The reactor's thread pool (Twisted's reactor.getThreadPool, deferToThread,
 * blockingCallFromThread). See braid/threadpool.h.
 *
 * Jobs come from the reactor's aux slab and are created and freed only on
 * the reactor thread; workers touch a job only between taking it off the
 * queue and putting it on the done list, both under the pool lock. Results
 * travel back on one intrusive done list: the worker that makes it
 * non-empty asks the reactor (braid_call_from_thread) for one drain, which
 * settles every job on it. So a job costs no allocation after warm-up and
 * a burst of completions costs one wakeup.
 */
#include <stdio.h>
#include <string.h>

#include "core/deferred_internal.h"

#define BRAID__AUX_JOB 3u

enum { BRAID__JOB_QUEUED, BRAID__JOB_RUNNING, BRAID__JOB_DONE };

typedef struct braid__pool braid__pool;

typedef struct braid__job {
  braid__aux hdr;
  struct braid__job *next;
  braid__pool *pool;
  braid__deferred *d; /* referenced until the job is settled */
  braid_work_cb fn;
  void *arg;
  braid_dtor_cb arg_free; /* runs on the reactor thread when the job ends */
  void *value;
  braid_dtor_cb dtor;
  int rc;
  int state; /* guarded by the pool lock */
} braid__job;

_Static_assert(sizeof(braid__job) <= BRAID__AUX_SIZE, "aux too small");

struct braid__pool {
  braid_reactor_t *r;
  braid__mutex lock;
  braid__cond work;
  /* Guarded by lock. */
  braid__job *qhead, *qtail;
  size_t queued;
  braid__job *dhead, *dtail;
  /* Asks the loop to settle finished jobs. Embedded, so that sending it
   * cannot fail: when it went through braid_call_from_thread(), a failed
   * allocation there left the job's deferred unfired and the loop waiting
   * for it for ever (found by tests/test_oom.c). */
  braid__async drain;
  int stopping;
  unsigned nthreads, idle;
  /* Reactor thread only. */
  unsigned min, max;
  braid__thread *threads;
  size_t threads_cap;
  size_t in_flight;
};

/* ------------------------------------------------------------------------
 * Workers
 * ------------------------------------------------------------------------ */

static void braid__pool_drain(braid_reactor_t *r, void *arg);

static void *braid__worker(void *arg) {
  braid__pool *p = arg;
  braid__mutex_lock(&p->lock);
  for (;;) {
    while (!p->stopping && p->qhead == NULL) {
      p->idle++;
      braid__cond_wait(&p->work, &p->lock);
      p->idle--;
    }
    if (p->stopping)
      break; /* jobs still queued are settled by teardown */
    braid__job *j = p->qhead;
    p->qhead = j->next;
    if (p->qhead == NULL)
      p->qtail = NULL;
    p->queued--;
    j->state = BRAID__JOB_RUNNING;
    braid__mutex_unlock(&p->lock);

    void *value = NULL;
    braid_dtor_cb dtor = NULL;
    int rc = j->fn(j->arg, &value, &dtor);

    braid__mutex_lock(&p->lock);
    j->value = value;
    j->dtor = dtor;
    j->rc = rc;
    j->state = BRAID__JOB_DONE;
    j->next = NULL;
    if (p->dtail != NULL)
      p->dtail->next = j;
    else
      p->dhead = j;
    p->dtail = j;
    /* Sent under our lock on purpose: teardown takes this lock before
     * joining, so it cannot miss a drain request in flight. The lock
     * order is pool lock, then the reactor's thread-call lock; the
     * reactor never holds the latter while taking ours. Sending it while
     * it is queued is a no-op. */
    braid__async_send(p->r, &p->drain);
  }
  braid__mutex_unlock(&p->lock);
  return NULL;
}

/* ------------------------------------------------------------------------
 * Settling jobs on the reactor thread
 * ------------------------------------------------------------------------ */

static void braid__job_free(braid__pool *p, braid__job *j) {
  braid__deferred *d = j->d;
  if (j->arg_free != NULL)
    j->arg_free(j->arg);
  braid__aux_free(p->r, j);
  p->in_flight--;
  braid_reactor_release(p->r);
  braid__deferred_unref(d);
}

static void braid__job_settle(braid__pool *p, braid__job *j) {
  braid_deferred_t d = braid__dhandle(j->d);
  j->d->canceller = NULL;
  if (j->rc == 0) {
    /* Consumed even if d was cancelled meanwhile (EALREADY). */
    braid_deferred_callback(d, j->value, j->dtor);
  } else {
    if (j->dtor != NULL)
      j->dtor(j->value);
    braid_deferred_errback(d,
                           braid_failure_new(p->r, BRAID_FAILURE_DOMAIN, j->rc,
                                             NULL, "work in thread failed: %s",
                                             braid_strerror(j->rc)));
  }
  braid__job_free(p, j);
}

static void braid__pool_drain(braid_reactor_t *r, void *arg) {
  braid__pool *p = arg;
  (void)r;
  braid__mutex_lock(&p->lock);
  braid__job *j = p->dhead;
  p->dhead = p->dtail = NULL;
  braid__mutex_unlock(&p->lock);
  while (j != NULL) {
    braid__job *next = j->next;
    braid__job_settle(p, j);
    j = next;
  }
}

/* Cancelling a job's deferred: a job still queued is dropped; one that has
 * started runs on and its result is destroyed when it arrives. */
static void braid__job_cancel(braid_deferred_t d, void *arg) {
  braid__job *j = arg;
  braid__pool *p = j->pool;
  int dropped = 0;
  (void)d;
  braid__mutex_lock(&p->lock);
  if (j->state == BRAID__JOB_QUEUED) {
    braid__job **pp = &p->qhead, *prev = NULL;
    while (*pp != j) {
      prev = *pp;
      pp = &(*pp)->next;
    }
    *pp = j->next;
    if (p->qtail == j)
      p->qtail = prev;
    p->queued--;
    dropped = 1;
  }
  braid__mutex_unlock(&p->lock);
  if (dropped)
    braid__job_free(p, j); /* cancel() holds d; it errbacks it next */
}

/* ------------------------------------------------------------------------
 * The pool
 * ------------------------------------------------------------------------ */

/* Start one worker. Reactor thread. */
static int braid__pool_spawn(braid__pool *p) {
  if (p->nthreads == p->threads_cap) {
    size_t cap = p->threads_cap ? p->threads_cap * 2 : 8;
    braid__thread *t = braid_realloc(p->threads, cap * sizeof *t);
    if (t == NULL)
      return BRAID_ENOMEM;
    p->threads = t;
    p->threads_cap = cap;
  }
  braid__thread t;
  int rc = braid__thread_create(&t, braid__worker, p);
  if (rc < 0)
    return rc;
  braid__mutex_lock(&p->lock);
  p->threads[p->nthreads++] = t;
  braid__mutex_unlock(&p->lock);
  return 0;
}

static braid__pool *braid__pool_get(braid_reactor_t *r, int create) {
  braid__defer_state *ds = braid__ds(r);
  if (ds == NULL)
    return NULL;
  if (ds->pool != NULL || !create)
    return ds->pool;
  braid__pool *p = braid_calloc(1, sizeof *p);
  if (p == NULL)
    return NULL;
  if (braid__mutex_init(&p->lock) != 0) {
    braid_free(p);
    return NULL;
  }
  if (braid__cond_init(&p->work) != 0) {
    braid__mutex_destroy(&p->lock);
    braid_free(p);
    return NULL;
  }
  p->r = r;
  p->drain.cb = braid__pool_drain;
  p->drain.arg = p;
  p->min = 0;
  p->max = 10;
  ds->pool = p;
  return p;
}

int braid_threadpool_configure(braid_reactor_t *r, unsigned min_threads,
                               unsigned max_threads) {
  if (r == NULL || max_threads == 0 || min_threads > max_threads)
    return BRAID_EINVAL;
  braid__pool *p = braid__pool_get(r, 1);
  if (p == NULL)
    return BRAID_ENOMEM;
  if (r->defer->tearing_down)
    return BRAID_ECLOSED;
  p->min = min_threads;
  p->max = max_threads;
  /* Only top up to min if the pool is already in use; otherwise the first
   * job starts them (the pool is lazy). */
  if (p->nthreads > 0)
    while (p->nthreads < p->min && braid__pool_spawn(p) == 0)
      ;
  return 0;
}

int braid_threadpool_stats_get(braid_reactor_t *r,
                               braid_threadpool_stats *out) {
  if (r == NULL || out == NULL)
    return BRAID_EINVAL;
  memset(out, 0, sizeof *out);
  braid__pool *p = r->defer != NULL ? r->defer->pool : NULL;
  if (p == NULL)
    return 0;
  braid__mutex_lock(&p->lock);
  out->threads = p->nthreads;
  out->idle = p->idle;
  out->queued = p->queued;
  braid__mutex_unlock(&p->lock);
  out->in_flight = p->in_flight;
  return 0;
}

int braid_defer_to_thread(braid_reactor_t *r, braid_work_cb fn, void *arg,
                          braid_deferred_t *out) {
  return braid_defer_to_thread_ex(r, fn, arg, NULL, out);
}

int braid_defer_to_thread_ex(braid_reactor_t *r, braid_work_cb fn, void *arg,
                             braid_dtor_cb arg_free, braid_deferred_t *out) {
  if (out == NULL)
    return BRAID_EINVAL;
  *out = braid_deferred_none();
  if (r == NULL || fn == NULL)
    return BRAID_EINVAL;
  braid__pool *p = braid__pool_get(r, 1);
  if (p == NULL)
    return BRAID_ENOMEM;
  if (r->defer->tearing_down)
    return BRAID_ECLOSED;
  /* Lazy start: min threads with the first job, then one more whenever
   * jobs outnumber idle workers, up to max. */
  while (p->nthreads < p->min && braid__pool_spawn(p) == 0)
    ;
  braid__mutex_lock(&p->lock);
  int need = p->queued + 1 > p->idle && p->nthreads < p->max;
  braid__mutex_unlock(&p->lock);
  if (need) {
    int rc = braid__pool_spawn(p);
    if (rc < 0 && p->nthreads == 0)
      return rc; /* nobody would ever run the job */
  }
  braid__job *j = braid__aux_alloc(r, BRAID__AUX_JOB);
  if (j == NULL)
    return BRAID_ENOMEM;
  braid_deferred_t d;
  int rc = braid_deferred_new_cancellable(r, braid__job_cancel, j, &d);
  if (rc < 0) {
    braid__aux_free(r, j);
    return rc;
  }
  braid_deferred_ref(d);
  j->pool = p;
  j->d = braid__dget(d);
  j->fn = fn;
  j->arg = arg;
  j->arg_free = arg_free;
  j->next = NULL;
  j->state = BRAID__JOB_QUEUED;
  p->in_flight++;
  braid_reactor_hold(r); /* run() must wait for the result */
  braid__mutex_lock(&p->lock);
  if (p->qtail != NULL)
    p->qtail->next = j;
  else
    p->qhead = j;
  p->qtail = j;
  p->queued++;
  braid__cond_signal(&p->work);
  braid__mutex_unlock(&p->lock);
  *out = d;
  return 0;
}

void braid__threadpool_teardown(braid_reactor_t *r, braid__defer_state *ds) {
  braid__pool *p = ds->pool;
  (void)r;
  if (p == NULL)
    return;
  braid__mutex_lock(&p->lock);
  p->stopping = 1;
  braid__cond_broadcast(&p->work);
  braid__mutex_unlock(&p->lock);
  /* Workers finish the job in hand (threads blocked on the reactor were
   * woken by braid__blocking_close) and exit. */
  for (unsigned i = 0; i < p->nthreads; i++)
    braid__thread_join(p->threads[i]);
  /* No worker is left: settle what never ran and what finished but was not
   * delivered. Their deferreds have not fired; teardown cancels them next. */
  /* A drain request still queued would point at freed memory. */
  braid__async_cancel(p->r, &p->drain);
  braid__job *lists[2] = {p->qhead, p->dhead};
  p->qhead = p->qtail = p->dhead = p->dtail = NULL;
  for (int k = 0; k < 2; k++) {
    braid__job *j = lists[k];
    while (j != NULL) {
      braid__job *next = j->next;
      if (j->state == BRAID__JOB_DONE && j->rc == 0 && j->dtor != NULL)
        j->dtor(j->value);
      j->d->canceller = NULL;
      braid__job_free(p, j);
      j = next;
    }
  }
  braid__cond_destroy(&p->work);
  braid__mutex_destroy(&p->lock);
  braid_free(p->threads);
  braid_free(p);
  ds->pool = NULL;
}

/* ------------------------------------------------------------------------
 * Blocking calls from other threads
 * ------------------------------------------------------------------------ */

typedef struct braid__blocking_call {
  struct braid__blocking_call *next; /* r->blocking, under r->tlock */
  braid_reactor_t *r;
  braid__mutex m;
  braid__cond cv;
  int done, rc;
  braid_reactor_call_cb fn;
  void *arg;
  braid_thread_result *out;
} braid__blocking_call;

/* Remove bc from the reactor's list; returns 0 if it was not there (then it
 * was already answered, or the thread gave up at teardown and bc is gone,
 * so it must not be touched). */
static int braid__bc_unlink(braid_reactor_t *r, braid__blocking_call *bc) {
  int found = 0;
  braid__mutex_lock(&r->tlock);
  for (braid__blocking_call **pp = &r->blocking; *pp != NULL;
       pp = &(*pp)->next) {
    if (*pp == bc) {
      *pp = bc->next;
      found = 1;
      break;
    }
  }
  braid__mutex_unlock(&r->tlock);
  return found;
}

static void braid__bc_wake(braid__blocking_call *bc, int rc) {
  braid__mutex_lock(&bc->m);
  bc->rc = rc;
  bc->done = 1;
  braid__cond_signal(&bc->cv);
  braid__mutex_unlock(&bc->m); /* bc may be gone from here on */
}

static void braid__bc_step(braid_deferred_t d, braid_result_t *res, void *arg) {
  braid__blocking_call *bc = arg;
  (void)d;
  if (!braid__bc_unlink(braid_result_reactor(res), bc))
    return;
  braid_thread_result *out = bc->out;
  int rc = 0;
  if (braid_result_ok(res)) {
    out->value = braid_result_take(res, &out->dtor);
  } else {
    braid_failure_t *f = braid_result_failure(res);
    out->domain = braid_failure_domain(f);
    out->code = braid_failure_code(f);
    braid_failure_format(f, out->message, sizeof out->message);
    rc = braid_failure_check(f, BRAID_FAILURE_DOMAIN, 0) && out->code < 0
             ? out->code
             : BRAID_EUNKNOWN;
    braid_result_set(res, NULL, NULL); /* handled: by the other thread */
  }
  braid__bc_wake(bc, rc);
}

static void braid__bc_start(braid_reactor_t *r, void *arg) {
  braid__blocking_call *bc = arg;
  braid_deferred_t d = BRAID_DEFERRED_INIT;
  int rc = bc->fn(r, bc->arg, &d);
  if (rc == 0 && braid_deferred_is_none(d))
    rc = BRAID_EINVAL;
  if (rc == 0)
    rc = braid_deferred_add_both(d, braid__bc_step, bc);
  if (rc < 0 && braid__bc_unlink(r, bc)) {
    snprintf(bc->out->message, sizeof bc->out->message, "%s",
             braid_strerror(rc));
    bc->out->domain = BRAID_FAILURE_DOMAIN;
    bc->out->code = rc;
    braid__bc_wake(bc, rc);
  }
}

int braid_blocking_call_from_thread(braid_reactor_t *r,
                                    braid_reactor_call_cb fn, void *arg,
                                    braid_thread_result *out) {
  if (r == NULL || fn == NULL || out == NULL)
    return BRAID_EINVAL;
  memset(out, 0, sizeof *out);
  braid__blocking_call bc;
  memset(&bc, 0, sizeof bc);
  bc.r = r;
  bc.fn = fn;
  bc.arg = arg;
  bc.out = out;
  if (braid__mutex_init(&bc.m) != 0)
    return BRAID_ENOMEM;
  if (braid__cond_init(&bc.cv) != 0) {
    braid__mutex_destroy(&bc.m);
    return BRAID_ENOMEM;
  }
  int rc = 0;
  braid__mutex_lock(&r->tlock);
  if (r->blocking_closed) {
    rc = BRAID_ECANCELED;
  } else {
    bc.next = r->blocking;
    r->blocking = &bc;
  }
  braid__mutex_unlock(&r->tlock);
  if (rc == 0) {
    rc = braid_call_from_thread(r, braid__bc_start, &bc);
    if (rc < 0) {
      braid__bc_unlink(r, &bc);
    } else {
      braid__mutex_lock(&bc.m);
      while (!bc.done)
        braid__cond_wait(&bc.cv, &bc.m);
      braid__mutex_unlock(&bc.m);
      rc = bc.rc;
    }
  }
  if (rc == BRAID_ECANCELED && out->message[0] == '\0') {
    out->domain = BRAID_FAILURE_DOMAIN;
    out->code = rc;
    snprintf(out->message, sizeof out->message, "reactor destroyed");
  }
  braid__cond_destroy(&bc.cv);
  braid__mutex_destroy(&bc.m);
  return rc;
}

void braid__blocking_close(braid_reactor_t *r) {
  braid__mutex_lock(&r->tlock);
  r->blocking_closed = 1;
  braid__blocking_call *bc = r->blocking;
  r->blocking = NULL;
  while (bc != NULL) {
    braid__blocking_call *next = bc->next; /* read before waking it */
    braid__bc_wake(bc, BRAID_ECANCELED);
    bc = next;
  }
  braid__mutex_unlock(&r->tlock);
}
