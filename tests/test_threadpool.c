/* The thread pool: deferToThread under load, failures, cancel, shutdown
 * with jobs in flight, blockingCallFromThread. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <stdatomic.h>
#include <time.h>
#include <cmocka.h>

#include "braid/braid.h"
#include "core/deferred_internal.h"

static void sleep_us(long us) {
  struct timespec ts = {us / 1000000, (us % 1000000) * 1000};
  nanosleep(&ts, NULL);
}

static braid_reactor_t *mk(void) {
  braid_reactor_t *r;
  assert_int_equal(braid_reactor_create(&r, NULL), 0);
  return r;
}

/* ---- many concurrent jobs ------------------------------------------------ */

#define NJOBS 5000
static atomic_int ran[NJOBS];
static int delivered[NJOBS];
static int ndelivered;

static int job_double(void *arg, void **value, braid_dtor_cb *dtor) {
  intptr_t i = (intptr_t)arg;
  atomic_fetch_add(&ran[i], 1);
  if (i % 97 == 0)
    sleep_us(50); /* some slow ones, to reorder completions */
  intptr_t *v = malloc(sizeof *v);
  *v = i * 2;
  *value = v;
  *dtor = free;
  return 0;
}

static void on_double(braid_deferred_t d, braid_result_t *res, void *arg) {
  (void)d;
  intptr_t i = (intptr_t)arg;
  intptr_t *v = braid_result_value(res);
  if (v != NULL && *v == i * 2)
    delivered[i]++;
  ndelivered++;
}

static void t_many_jobs(void **st) {
  (void)st;
  braid_reactor_t *r = mk();
  memset(delivered, 0, sizeof delivered);
  for (int i = 0; i < NJOBS; i++)
    atomic_store(&ran[i], 0);
  ndelivered = 0;
  braid_threadpool_stats ps;
  braid_threadpool_stats_get(r, &ps);
  assert_int_equal(ps.threads, 0); /* lazy: nothing before the first job */
  assert_int_equal(braid_threadpool_configure(r, 2, 8), 0);
  braid_threadpool_stats_get(r, &ps);
  assert_int_equal(ps.threads, 0);
  for (intptr_t i = 0; i < NJOBS; i++) {
    braid_deferred_t d;
    assert_int_equal(braid_defer_to_thread(r, job_double, (void *)i, &d), 0);
    assert_int_equal(braid_deferred_add_callback(d, on_double, (void *)i), 0);
  }
  braid_threadpool_stats_get(r, &ps);
  assert_true(ps.threads >= 2 && ps.threads <= 8);
  assert_int_equal(ps.in_flight, NJOBS);
  assert_int_equal(braid_reactor_run(r), 0); /* returns when all are in */
  assert_int_equal(ndelivered, NJOBS);
  for (int i = 0; i < NJOBS; i++) {
    assert_int_equal(atomic_load(&ran[i]), 1);
    assert_int_equal(delivered[i], 1);
  }
  braid_threadpool_stats_get(r, &ps);
  assert_int_equal(ps.in_flight, 0);
  assert_int_equal(ps.queued, 0);
  assert_int_equal(r->defer->deferreds.live, 0);
  assert_int_equal(braid_reactor_destroy(r), 0);
}

/* ---- failures and cancel ------------------------------------------------- */

static int job_fail(void *arg, void **value, braid_dtor_cb *dtor) {
  (void)arg;
  *value = malloc(4); /* set anyway: must be destroyed */
  *dtor = free;
  return BRAID_ENOENT;
}

static atomic_int gate;
static atomic_int started;
static int job_gate(void *arg, void **value, braid_dtor_cb *dtor) {
  (void)arg;
  (void)dtor;
  atomic_fetch_add(&started, 1);
  while (!atomic_load(&gate))
    sleep_us(100);
  *value = (void *)1;
  return 0;
}

static int seen_code;
static void on_any(braid_deferred_t d, braid_result_t *res, void *arg) {
  (void)d;
  (void)arg;
  seen_code =
      braid_result_ok(res) ? 1 : braid_failure_code(braid_result_failure(res));
  braid_result_set(res, NULL, NULL);
}

static void open_gate(braid_reactor_t *r, void *arg) {
  (void)r;
  (void)arg;
  atomic_store(&gate, 1);
}

static void t_fail_and_cancel(void **st) {
  (void)st;
  braid_reactor_t *r = mk();
  braid_deferred_t d, queued;
  braid_threadpool_configure(r, 0, 1);
  seen_code = 0;
  braid_defer_to_thread(r, job_fail, NULL, &d);
  braid_deferred_add_both(d, on_any, NULL);
  braid_reactor_run(r);
  assert_int_equal(seen_code, BRAID_ENOENT);

  /* One worker, held by a gated job; a second job waits in the queue and is
   * cancelled there: it never runs. */
  atomic_store(&gate, 0);
  atomic_store(&started, 0);
  braid_defer_to_thread(r, job_gate, NULL, &d);
  braid_deferred_add_both(d, on_any, NULL);
  braid_defer_to_thread(r, job_gate, NULL, &queued);
  int cancelled = 0;
  braid_deferred_add_both(queued, on_any, NULL);
  while (atomic_load(&started) == 0)
    sleep_us(100);
  braid_deferred_cancel(queued);
  cancelled = seen_code;
  assert_int_equal(cancelled, BRAID_ECANCELED);
  /* Cancel the running one: it finishes, its result is dropped. */
  braid_deferred_cancel(d);
  assert_int_equal(seen_code, BRAID_ECANCELED);
  braid_call_soon(r, open_gate, NULL);
  braid_reactor_run(r);
  assert_int_equal(atomic_load(&started), 1);
  braid_threadpool_stats ps;
  braid_threadpool_stats_get(r, &ps);
  assert_int_equal(ps.in_flight, 0);
  assert_int_equal(braid_reactor_destroy(r), 0);
}

/* ---- shutdown with jobs in flight ---------------------------------------- */

static int ctx_freed;
static void free_ctx(braid_deferred_t d, braid_result_t *res, void *arg) {
  (void)d;
  free(arg);
  ctx_freed++;
  if (braid_result_trap(res, NULL, BRAID_ECANCELED))
    braid_result_set(res, NULL, NULL);
}

static int job_slow(void *arg, void **value, braid_dtor_cb *dtor) {
  (void)arg;
  sleep_us(2000);
  *value = malloc(64);
  *dtor = free;
  return 0;
}

static void t_shutdown_in_flight(void **st) {
  (void)st;
  braid_reactor_t *r = mk();
  braid_threadpool_configure(r, 4, 4);
  ctx_freed = 0;
  for (int i = 0; i < 200; i++) {
    braid_deferred_t d;
    assert_int_equal(braid_defer_to_thread(r, job_slow, NULL, &d), 0);
    braid_deferred_add_both(d, free_ctx, malloc(16));
  }
  /* Let some finish and some be undelivered, then destroy. */
  sleep_us(5000);
  braid_reactor_run_once(r, false);
  sleep_us(3000);
  assert_int_equal(braid_reactor_destroy(r), 0);
  assert_int_equal(ctx_freed, 200);
}

/* ---- blockingCallFromThread -----------------------------------------------
 */

static int on_reactor_succeed(braid_reactor_t *r, void *arg,
                              braid_deferred_t *out) {
  intptr_t *v = malloc(sizeof *v);
  *v = (intptr_t)arg + 1;
  return braid_deferred_succeed(r, v, free, out);
}

static int on_reactor_later(braid_reactor_t *r, void *arg,
                            braid_deferred_t *out) {
  (void)arg;
  return braid_defer_later(r, BRAID_MSEC(2), NULL, NULL, out);
}

static int on_reactor_fail(braid_reactor_t *r, void *arg,
                           braid_deferred_t *out) {
  (void)arg;
  return braid_deferred_fail(r, braid_failure_new(r, "app", 5, NULL, "nope"),
                             out);
}

/* A worker job that calls back into the reactor three times. */
static int job_blocking(void *arg, void **value, braid_dtor_cb *dtor) {
  braid_reactor_t *r = arg;
  braid_thread_result tr;
  int rc =
      braid_blocking_call_from_thread(r, on_reactor_succeed, (void *)41, &tr);
  if (rc != 0 || *(intptr_t *)tr.value != 42)
    return BRAID_EPROTO;
  tr.dtor(tr.value);
  rc = braid_blocking_call_from_thread(r, on_reactor_later, NULL, &tr);
  if (rc != 0 || tr.value != NULL)
    return BRAID_EPROTO;
  rc = braid_blocking_call_from_thread(r, on_reactor_fail, NULL, &tr);
  if (rc != BRAID_EUNKNOWN || tr.code != 5 || strcmp(tr.domain, "app") != 0 ||
      strstr(tr.message, "nope") == NULL)
    return BRAID_EPROTO;
  *value = (void *)7;
  *dtor = NULL;
  return 0;
}

static void t_blocking_call(void **st) {
  (void)st;
  braid_reactor_t *r = mk();
  seen_code = 0;
  for (int i = 0; i < 8; i++) {
    braid_deferred_t d;
    braid_defer_to_thread(r, job_blocking, r, &d);
    braid_deferred_add_both(d, on_any, NULL);
  }
  braid_reactor_run(r);
  assert_int_equal(seen_code, 1);
  assert_int_equal(braid_reactor_destroy(r), 0);
}

static int on_reactor_never(braid_reactor_t *r, void *arg,
                            braid_deferred_t *out) {
  (void)arg;
  atomic_fetch_add(&started, 1);
  return braid_deferred_new(r, out);
}

static atomic_int worker_rc;
static int job_blocking_never(void *arg, void **value, braid_dtor_cb *dtor) {
  braid_thread_result tr;
  (void)value;
  (void)dtor;
  atomic_store(&worker_rc, braid_blocking_call_from_thread(
                               arg, on_reactor_never, NULL, &tr));
  return 0;
}

static void *blocker_thread(void *arg) {
  braid_reactor_t *r = arg;
  braid_thread_result tr;
  intptr_t rc = braid_blocking_call_from_thread(r, on_reactor_never, NULL, &tr);
  return (void *)rc;
}

static void t_blocking_call_destroy(void **st) {
  (void)st;
  /* A foreign thread and a pool worker wait on the reactor forever; destroy
   * must wake both with ECANCELED and join the worker. */
  braid_reactor_t *r = mk();
  atomic_store(&started, 0);
  pthread_t t;
  pthread_create(&t, NULL, blocker_thread, r);
  braid_deferred_t d;
  atomic_store(&worker_rc, 1);
  braid_defer_to_thread(r, job_blocking_never, r, &d);
  while (atomic_load(&started) < 2) {
    braid_reactor_run_once(r, false);
    sleep_us(200);
  }
  assert_int_equal(braid_reactor_destroy(r), 0);
  void *rc;
  pthread_join(t, &rc);
  assert_int_equal((intptr_t)rc, BRAID_ECANCELED);
  assert_int_equal(atomic_load(&worker_rc), BRAID_ECANCELED);
}

/* A call a job makes with braid_call_from_thread() before it returns runs
 * before the job's deferred fires: the job's completion reaches the loop
 * after everything it queued. */
static int order_log[4];
static int order_len;
static braid_reactor_t *order_r;
static void order_note(braid_reactor_t *r, void *arg) {
  (void)r;
  order_log[order_len++] = (int)(intptr_t)arg;
}
static int job_posts(void *arg, void **value, braid_dtor_cb *dtor) {
  (void)arg;
  (void)value;
  (void)dtor;
  assert_int_equal(braid_call_from_thread(order_r, order_note, (void *)1), 0);
  return 0;
}
static void on_posted(braid_deferred_t d, braid_result_t *res, void *arg) {
  (void)d;
  (void)res;
  (void)arg;
  order_log[order_len++] = 2;
}

static void t_calls_before_completion(void **st) {
  (void)st;
  for (int i = 0; i < 50; i++) {
    order_r = mk();
    order_len = 0;
    braid_deferred_t d;
    assert_int_equal(braid_defer_to_thread(order_r, job_posts, NULL, &d), 0);
    assert_int_equal(braid_deferred_add_callback(d, on_posted, NULL), 0);
    assert_int_equal(braid_reactor_run(order_r), 0);
    assert_int_equal(order_len, 2);
    assert_int_equal(order_log[0], 1);
    assert_int_equal(order_log[1], 2);
    assert_int_equal(braid_reactor_destroy(order_r), 0);
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(t_many_jobs),
      cmocka_unit_test(t_fail_and_cancel),
      cmocka_unit_test(t_shutdown_in_flight),
      cmocka_unit_test(t_blocking_call),
      cmocka_unit_test(t_blocking_call_destroy),
      cmocka_unit_test(t_calls_before_completion),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
