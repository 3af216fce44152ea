/* braid: threads as a source of deferreds (Twisted's deferToThread and
 * blockingCallFromThread).
 *
 * Each reactor has its own thread pool, started lazily by the first
 * braid_defer_to_thread() (no thread exists before), growing on demand up
 * to its maximum, and stopped by braid_reactor_destroy(), which joins every
 * worker: a job that is running then finishes first (it cannot be
 * interrupted), jobs not yet started are dropped, results that arrived but
 * were not yet delivered are destroyed (their dtor runs), and the deferreds
 * of all those jobs are cancelled like every other pending deferred. While
 * jobs are in flight the reactor stays alive (braid_reactor_run does not
 * return for lack of work).
 */
#ifndef BRAID_THREADPOOL_H
#define BRAID_THREADPOOL_H

#include "braid/deferred.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Set the pool size: `min_threads` are started with the pool, up to
 * `max_threads` exist at once (defaults 0 and 10, as in Twisted). May be
 * called at any time on the reactor thread; lowering max does not stop
 * running threads. BRAID_EINVAL if max_threads is 0 or below min. */
int braid_threadpool_configure(braid_reactor_t *r, unsigned min_threads,
                               unsigned max_threads);

typedef struct braid_threadpool_stats {
  unsigned threads; /* workers alive */
  unsigned idle;    /* of which waiting for work */
  size_t queued;    /* jobs not yet started */
  size_t in_flight; /* jobs submitted whose deferred has not fired yet */
} braid_threadpool_stats;

/* A snapshot of the pool (zeros if it never started). */
int braid_threadpool_stats_get(braid_reactor_t *r, braid_threadpool_stats *out);

/* Work for a worker thread. Runs on a pool thread, so it must not touch the
 * reactor except through thread-safe calls. Return 0 and set *value (and
 * *dtor if the deferred is to own it) for success, or a negative BRAID_E*
 * code (the deferred errbacks with it; a *value set anyway is destroyed). */
typedef int (*braid_work_cb)(void *arg, void **value, braid_dtor_cb *dtor);

/* Run fn(arg) on a worker; *out receives a deferred that fires on the
 * reactor thread with the result. Submitting allocates nothing after
 * warm-up. Cancelling the deferred drops the job if it has not started;
 * once started, the job runs to the end and its result is destroyed.
 * BRAID_EINVAL, BRAID_ENOMEM, BRAID_ECLOSED (reactor being destroyed), or
 * the error of creating the first worker thread. */
int braid_defer_to_thread(braid_reactor_t *r, braid_work_cb fn, void *arg,
                          braid_deferred_t *out);

/* The same, and arg_free(arg) runs on the reactor thread once the job is
 * over in every case: settled, dropped by a cancel before it started, or
 * discarded at reactor destroy. If this call fails, arg_free is not
 * called. */
int braid_defer_to_thread_ex(braid_reactor_t *r, braid_work_cb fn, void *arg,
                             braid_dtor_cb arg_free, braid_deferred_t *out);

/* Runs on the reactor thread on behalf of another thread: start something
 * and give back a deferred for its result in *out (already fired is fine:
 * braid_deferred_succeed). Return 0, or a negative code to fail the call. */
typedef int (*braid_reactor_call_cb)(braid_reactor_t *r, void *arg,
                                     braid_deferred_t *out);

/* What braid_blocking_call_from_thread() brings back. On success `value`
 * and `dtor` are yours (call dtor(value) when done, if dtor is set). On
 * failure, the failure's domain (a literal), code and formatted message. */
typedef struct braid_thread_result {
  void *value;
  braid_dtor_cb dtor;
  const char *domain;
  int code;
  char message[200];
} braid_thread_result;

/* Thread-safe; call it from any thread but the reactor's own (that would
 * wait for itself forever). Runs fn on the reactor thread, waits for the
 * deferred it returns to fire, and fills *out. Returns 0 on success; on
 * failure, the failure's code if it is a negative braid-domain code, else
 * BRAID_EUNKNOWN (details in *out); BRAID_ECANCELED if the reactor is
 * being destroyed (destroy wakes every waiting caller, which then returns
 * without touching the reactor again); BRAID_EINVAL, BRAID_ENOMEM. The
 * reactor must exist when the call begins. */
int braid_blocking_call_from_thread(braid_reactor_t *r,
                                    braid_reactor_call_cb fn, void *arg,
                                    braid_thread_result *out);

#ifdef __cplusplus
}
#endif
#endif
