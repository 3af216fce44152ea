/* Call-from-thread and reactors in several threads. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "braid/braid.h"

#include "barrier.h"

static void sleep_ms(unsigned ms) {
  struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
  while (nanosleep(&ts, &ts) != 0)
    ;
}

static braid_reactor_t *new_reactor(void) {
  braid_reactor_t *r = NULL;
  assert_int_equal(braid_reactor_create(&r, NULL), 0);
  return r;
}

/* ------------------------------------------------------------------------
 * Many threads calling into one running reactor
 * ------------------------------------------------------------------------ */

enum { NTHREADS = 8, NCALLS = 20000 };

typedef struct storm {
  braid_reactor_t *r;
  pthread_t loop_thread;
  test_barrier go;
  atomic_int errors;
  /* Loop-thread only: */
  uint8_t seen[NTHREADS][NCALLS];
  int next[NTHREADS];
  long total;
  long wrong_thread, out_of_order, duplicates;
  int release_rc;
} storm;

static storm *g_storm;

#define STORM_ARG(th, seq) ((void *)(uintptr_t)((uintptr_t)(th) << 20 | (seq)))

static void storm_cb(braid_reactor_t *r, void *arg) {
  storm *s = g_storm;
  uintptr_t v = (uintptr_t)arg;
  int th = (int)(v >> 20), seq = (int)(v & 0xfffff);
  /* Counted rather than asserted one by one: 160k asserts would make a
   * failure unreadable; the totals are asserted after run(). */
  if (r != s->r || !pthread_equal(pthread_self(), s->loop_thread))
    s->wrong_thread++;
  if (th < 0 || th >= NTHREADS || seq >= NCALLS) {
    s->duplicates++;
    return;
  }
  if (s->seen[th][seq]++ != 0)
    s->duplicates++;
  if (seq != s->next[th])
    s->out_of_order++;
  s->next[th] = seq + 1;
  if (++s->total == (long)NTHREADS * NCALLS)
    s->release_rc = braid_reactor_release(r);
}

typedef struct storm_worker {
  storm *s;
  int th;
} storm_worker;

static void *storm_thread(void *arg) {
  storm_worker *w = arg;
  test_barrier_wait(&w->s->go);
  for (int i = 0; i < NCALLS; i++)
    if (braid_call_from_thread(w->s->r, storm_cb, STORM_ARG(w->th, i)) != 0)
      atomic_fetch_add(&w->s->errors, 1);
  return NULL;
}

static void t_call_from_thread_storm(void **st) {
  (void)st;
  storm *s = calloc(1, sizeof *s);
  assert_non_null(s);
  g_storm = s;
  s->r = new_reactor();
  s->loop_thread = pthread_self();
  s->release_rc = 1;
  atomic_init(&s->errors, 0);
  /* The hold keeps run() alive while the threads have not called yet;
   * the last call releases it and run() returns. */
  braid_reactor_hold(s->r);
  assert_int_equal(test_barrier_init(&s->go, NTHREADS + 1), 0);
  pthread_t th[NTHREADS];
  storm_worker w[NTHREADS];
  for (int i = 0; i < NTHREADS; i++) {
    w[i] = (storm_worker){s, i};
    assert_int_equal(pthread_create(&th[i], NULL, storm_thread, &w[i]), 0);
  }
  /* Release the workers together, then run while they call. */
  test_barrier_wait(&s->go);
  assert_int_equal(braid_reactor_run(s->r), 0);
  for (int i = 0; i < NTHREADS; i++)
    assert_int_equal(pthread_join(th[i], NULL), 0);
  assert_int_equal(atomic_load(&s->errors), 0);
  assert_int_equal(s->total, (long)NTHREADS * NCALLS);
  assert_int_equal(s->wrong_thread, 0);
  assert_int_equal(s->duplicates, 0);
  assert_int_equal(s->out_of_order, 0);
  assert_int_equal(s->release_rc, 0);
  for (int t = 0; t < NTHREADS; t++) {
    assert_int_equal(s->next[t], NCALLS);
    for (int i = 0; i < NCALLS; i++)
      if (s->seen[t][i] != 1)
        fail_msg("call (%d, %d) ran %d times", t, i, s->seen[t][i]);
  }
  assert_int_equal(braid_reactor_destroy(s->r), 0);
  test_barrier_destroy(&s->go);
  free(s);
}

/* ------------------------------------------------------------------------
 * Wakeups and the queue's edges
 * ------------------------------------------------------------------------ */

typedef struct wake_ctx {
  braid_reactor_t *r;
  braid_timer_t t;
  int ran, timer_fired, cancel_rc;
  pthread_t loop_thread;
  int on_loop_thread;
} wake_ctx;

static void wake_cancel_cb(braid_reactor_t *r, void *arg) {
  wake_ctx *c = arg;
  assert_ptr_equal(r, c->r);
  c->ran++;
  c->on_loop_thread = pthread_equal(pthread_self(), c->loop_thread);
  c->cancel_rc = braid_timer_cancel(&c->t);
}

static void wake_timer_cb(braid_timer_t *t, void *arg) {
  (void)t;
  ((wake_ctx *)arg)->timer_fired++;
}

static void *wake_thread(void *arg) {
  wake_ctx *c = arg;
  sleep_ms(20);
  if (braid_call_from_thread(c->r, wake_cancel_cb, c) != 0)
    abort();
  return NULL;
}

/* A loop blocked until a far timer wakes for a thread call at once. */
static void t_call_from_thread_wakes_blocked_loop(void **st) {
  (void)st;
  wake_ctx c = {.r = new_reactor(), .loop_thread = pthread_self()};
  c.t = (braid_timer_t)BRAID_TIMER_INIT;
  assert_int_equal(
      braid_timer_start(c.r, &c.t, BRAID_SEC(30), wake_timer_cb, &c), 0);
  pthread_t th;
  uint64_t t0 = braid_hrtime();
  assert_int_equal(pthread_create(&th, NULL, wake_thread, &c), 0);
  assert_int_equal(braid_reactor_run(c.r), 0);
  uint64_t dt = braid_hrtime() - t0;
  assert_int_equal(pthread_join(th, NULL), 0);
  assert_int_equal(c.ran, 1);
  assert_true(c.on_loop_thread);
  assert_int_equal(c.cancel_rc, 0);
  assert_int_equal(c.timer_fired, 0);
  assert_true(dt >= BRAID_MSEC(15));
  assert_true(dt < BRAID_SEC(5));
  assert_int_equal(braid_reactor_destroy(c.r), 0);
}

static void count_cb(braid_reactor_t *r, void *arg) {
  (void)r;
  (*(int *)arg)++;
}

/* From the loop thread itself it queues too, and never runs inline. */
typedef struct self_ctx {
  int n, inner, inner_at_return;
} self_ctx;

static void self_inner(braid_reactor_t *r, void *arg) {
  (void)r;
  ((self_ctx *)arg)->inner++;
}

static void self_outer(braid_reactor_t *r, void *arg) {
  self_ctx *c = arg;
  c->n++;
  assert_int_equal(braid_call_from_thread(r, self_inner, c), 0);
  c->inner_at_return = c->inner;
}

static void t_call_from_thread_edges(void **st) {
  (void)st;
  braid_reactor_t *r = new_reactor();
  /* Queued before run, from the loop thread, with a hold: it runs. */
  int n = 0;
  braid_reactor_hold(r);
  assert_int_equal(braid_call_from_thread(r, count_cb, &n), 0);
  assert_int_equal(braid_reactor_run_once(r, true), 1);
  assert_int_equal(n, 1);
  assert_int_equal(braid_reactor_release(r), 0);

  self_ctx c = {0};
  braid_reactor_hold(r);
  assert_int_equal(braid_call_from_thread(r, self_outer, &c), 0);
  for (int i = 0; i < 100 && c.inner == 0; i++)
    assert_int_equal(braid_reactor_run_once(r, true), 1);
  assert_int_equal(c.n, 1);
  assert_int_equal(c.inner, 1);
  assert_int_equal(c.inner_at_return, 0);
  assert_int_equal(braid_reactor_release(r), 0);

  /* Destroy discards calls that have not run: they never run, and nothing
   * leaks (valgrind and ASan runs check that). */
  int never = 0;
  for (int i = 0; i < 1000; i++)
    assert_int_equal(braid_call_from_thread(r, count_cb, &never), 0);
  assert_int_equal(braid_reactor_destroy(r), 0);
  assert_int_equal(never, 0);
}

/* ------------------------------------------------------------------------
 * Two reactors in two threads, each busy, without interference
 * ------------------------------------------------------------------------ */

enum { PUMP_CALLS = 20000, SOON_CHAIN = 20000, TIMER_CHAIN = 40 };

typedef struct busy {
  braid_reactor_t *r;
  pthread_t loop_thread;
  braid_timer_t timer;
  int id;
  /* Loop thread only: */
  int timers, soons, calls, next_call;
  long foreign; /* callbacks that saw another reactor or thread */
  int misordered;
  int run_rc, create_rc;
  uint64_t last_timer_now;
  int timer_early;
  /* The pump thread: */
  atomic_int pump_errors;
} busy;

static void busy_check(busy *b, braid_reactor_t *r) {
  if (r != b->r || !pthread_equal(pthread_self(), b->loop_thread))
    b->foreign++;
}

static void busy_timer(braid_timer_t *t, void *arg) {
  busy *b = arg;
  if (t != &b->timer)
    b->foreign++;
  busy_check(b, b->r);
  uint64_t now = braid_reactor_now(b->r);
  /* Each link is 200 us after the previous one: the loop clock must show
   * at least that. */
  if (b->timers > 0 && now < b->last_timer_now + BRAID_USEC(200))
    b->timer_early++;
  b->last_timer_now = now;
  if (++b->timers < TIMER_CHAIN)
    if (braid_timer_start(b->r, t, BRAID_USEC(200), busy_timer, b) != 0)
      b->foreign++;
}

static void busy_soon(braid_reactor_t *r, void *arg) {
  busy *b = arg;
  busy_check(b, r);
  if (++b->soons < SOON_CHAIN)
    if (braid_call_soon(r, busy_soon, b) != 0)
      b->foreign++;
}

typedef struct busy_call {
  busy *b;
  int seq;
} busy_call;

static void busy_thread_call(braid_reactor_t *r, void *arg) {
  busy_call *c = arg;
  busy *b = c->b;
  busy_check(b, r);
  if (c->seq != b->next_call)
    b->misordered++;
  b->next_call = c->seq + 1;
  if (++b->calls == PUMP_CALLS)
    braid_reactor_release(r);
}

static void *busy_pump(void *arg) {
  busy *b = arg;
  /* The calls' arguments live in an array owned by the pump; the loop
   * reads them before the pump's caller frees it (after run returns). */
  busy_call *calls = malloc(PUMP_CALLS * sizeof *calls);
  if (calls == NULL)
    abort();
  for (int i = 0; i < PUMP_CALLS; i++) {
    calls[i] = (busy_call){b, i};
    if (braid_call_from_thread(b->r, busy_thread_call, &calls[i]) != 0)
      atomic_fetch_add(&b->pump_errors, 1);
  }
  return calls;
}

static void *busy_loop(void *arg) {
  busy *b = arg;
  b->loop_thread = pthread_self();
  /* Each reactor is created, run and destroyed in its own thread. */
  b->create_rc = braid_reactor_create(&b->r, NULL);
  if (b->create_rc != 0)
    return NULL;
  braid_reactor_hold(b->r);
  b->timer = (braid_timer_t)BRAID_TIMER_INIT;
  if (braid_timer_start(b->r, &b->timer, BRAID_USEC(200), busy_timer, b) != 0 ||
      braid_call_soon(b->r, busy_soon, b) != 0)
    b->foreign++;
  pthread_t pump;
  if (pthread_create(&pump, NULL, busy_pump, b) != 0)
    abort();
  b->run_rc = braid_reactor_run(b->r);
  void *calls = NULL;
  pthread_join(pump, &calls);
  free(calls);
  braid_reactor_destroy(b->r);
  return NULL;
}

static void t_two_reactors_two_threads(void **st) {
  (void)st;
  busy b[2];
  memset(b, 0, sizeof b);
  pthread_t th[2];
  for (int i = 0; i < 2; i++) {
    b[i].id = i;
    atomic_init(&b[i].pump_errors, 0);
    b[i].run_rc = 1;
    assert_int_equal(pthread_create(&th[i], NULL, busy_loop, &b[i]), 0);
  }
  for (int i = 0; i < 2; i++)
    assert_int_equal(pthread_join(th[i], NULL), 0);
  for (int i = 0; i < 2; i++) {
    assert_int_equal(b[i].create_rc, 0);
    assert_int_equal(b[i].run_rc, 0);
    assert_int_equal(b[i].timers, TIMER_CHAIN);
    assert_int_equal(b[i].soons, SOON_CHAIN);
    assert_int_equal(b[i].calls, PUMP_CALLS);
    assert_int_equal(b[i].foreign, 0);
    assert_int_equal(b[i].misordered, 0);
    assert_int_equal(b[i].timer_early, 0);
    assert_int_equal(atomic_load(&b[i].pump_errors), 0);
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(t_call_from_thread_storm),
      cmocka_unit_test(t_call_from_thread_wakes_blocked_loop),
      cmocka_unit_test(t_call_from_thread_edges),
      cmocka_unit_test(t_two_reactors_two_threads),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
