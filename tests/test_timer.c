/* Timers: ordering, cancel/reset/delay, misuse, re-entrancy from timer
 * callbacks, a randomized comparison against a reference model, the manual
 * clock, and one real-clock timing check. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "braid/braid.h"
#include "braid/testing.h"
/* For one white-box test (the sequence-number wrap): in-tree tests link the
 * static library and may look at the reactor's private fields. */
#include "core/internal.h"

static braid_reactor_t *new_reactor(void) {
  braid_reactor_t *r = NULL;
  assert_int_equal(braid_reactor_create(&r, NULL), 0);
  return r;
}

static braid_reactor_t *new_manual(void) {
  braid_reactor_t *r = NULL;
  assert_int_equal(braid_testing_reactor_create(&r), 0);
  assert_non_null(r);
  assert_int_equal(braid_reactor_now(r), 0);
  return r;
}

/* A timer with an identity, and a shared record of what fired and when. */
typedef struct fire_log {
  int id[4096];
  uint64_t now[4096];
  int n;
  braid_reactor_t *r;
} fire_log;

typedef struct tnode {
  braid_timer_t t;
  int id;
  fire_log *log;
} tnode;

static void log_fire(braid_timer_t *t, void *arg) {
  tnode *n = arg;
  assert_ptr_equal(t, &n->t);
  fire_log *l = n->log;
  assert_true(l->n < 4096);
  /* A firing timer is no longer pending. */
  assert_false(braid_timer_active(t));
  assert_int_equal(braid_timer_deadline(t), 0);
  l->id[l->n] = n->id;
  l->now[l->n] = braid_reactor_now(l->r);
  l->n++;
}

static void never_fire(braid_timer_t *t, void *arg) {
  (void)t;
  (void)arg;
  fail_msg("this timer must not fire");
}

/* ------------------------------------------------------------------------
 * Ordering
 * ------------------------------------------------------------------------ */

static void t_order_by_deadline(void **st) {
  (void)st;
  braid_reactor_t *r = new_manual();
  fire_log l = {.r = r};
  static const uint64_t delays[] = {50, 10, 30, 20, 40, 0, 35, 5};
  enum { N = sizeof delays / sizeof delays[0] };
  tnode n[N];
  for (int i = 0; i < N; i++) {
    n[i] = (tnode){BRAID_TIMER_INIT, i, &l};
    assert_int_equal(braid_timer_start(r, &n[i].t, delays[i], log_fire, &n[i]),
                     0);
    assert_true(braid_timer_active(&n[i].t));
    assert_int_equal(braid_timer_deadline(&n[i].t), delays[i]);
  }
  assert_int_equal(braid_reactor_timer_count(r), N);
  assert_int_equal(braid_clock_advance(r, 100), 0);
  assert_int_equal(l.n, N);
  static const int want[] = {5, 7, 1, 3, 2, 6, 4, 0};
  for (int i = 0; i < N; i++) {
    assert_int_equal(l.id[i], want[i]);
    /* The manual clock stands at each timer's deadline while it fires. */
    assert_int_equal(l.now[i], delays[want[i]]);
  }
  assert_int_equal(braid_reactor_now(r), 100);
  assert_int_equal(braid_reactor_timer_count(r), 0);
  assert_int_equal(braid_reactor_destroy(r), 0);
}

static void t_order_real_clock(void **st) {
  (void)st;
  braid_reactor_t *r = new_reactor();
  fire_log l = {.r = r};
  static const uint64_t ms[] = {30, 10, 20, 1, 15};
  enum { N = sizeof ms / sizeof ms[0] };
  tnode n[N];
  uint64_t start = braid_reactor_now(r);
  for (int i = 0; i < N; i++) {
    n[i] = (tnode){BRAID_TIMER_INIT, i, &l};
    assert_int_equal(
        braid_timer_start(r, &n[i].t, BRAID_MSEC(ms[i]), log_fire, &n[i]), 0);
  }
  assert_int_equal(braid_reactor_run(r), 0);
  static const int want[] = {3, 1, 4, 2, 0};
  assert_int_equal(l.n, N);
  for (int i = 0; i < N; i++) {
    assert_int_equal(l.id[i], want[i]);
    /* Never early: the loop's clock has reached the deadline. */
    assert_true(l.now[i] >= start + BRAID_MSEC(ms[want[i]]));
  }
  assert_int_equal(braid_reactor_destroy(r), 0);
}

static void t_fifo_equal_deadlines(void **st) {
  (void)st;
  braid_reactor_t *r = new_manual();
  fire_log l = {.r = r};
  enum { N = 1000 };
  tnode *n = calloc(N, sizeof *n);
  assert_non_null(n);
  /* Two deadlines interleaved: within each, FIFO by start order, across
   * heap growth (N is well above the initial capacity). */
  for (int i = 0; i < N; i++) {
    n[i].id = i;
    n[i].log = &l;
    assert_int_equal(
        braid_timer_start(r, &n[i].t, (i % 2) ? 7 : 3, log_fire, &n[i]), 0);
  }
  assert_int_equal(braid_clock_advance(r, 10), 0);
  assert_int_equal(l.n, N);
  for (int i = 0; i < N / 2; i++) {
    assert_int_equal(l.id[i], 2 * i);
    assert_int_equal(l.now[i], 3);
    assert_int_equal(l.id[N / 2 + i], 2 * i + 1);
    assert_int_equal(l.now[N / 2 + i], 7);
  }
  assert_int_equal(braid_reactor_destroy(r), 0);
  free(n);
}

/* Equal deadlines stay FIFO when the 32-bit insertion counter wraps: the
 * counter is compared by signed difference, not by value. Reaching the wrap
 * honestly would take 2^32 schedules, so the test sets the counter. */
static void t_fifo_across_seq_wrap(void **st) {
  (void)st;
  braid_reactor_t *r = new_manual();
  fire_log l = {.r = r};
  r->timer_seq = UINT32_MAX - 4;
  tnode n[10];
  for (int i = 0; i < 10; i++) {
    n[i] = (tnode){BRAID_TIMER_INIT, i, &l};
    assert_int_equal(braid_timer_start(r, &n[i].t, 5, log_fire, &n[i]), 0);
  }
  assert_int_equal(braid_clock_advance(r, 5), 0);
  assert_int_equal(l.n, 10);
  for (int i = 0; i < 10; i++)
    assert_int_equal(l.id[i], i);
  assert_int_equal(braid_reactor_destroy(r), 0);
}

/* ------------------------------------------------------------------------
 * cancel / reset / delay
 * ------------------------------------------------------------------------ */

static void t_cancel(void **st) {
  (void)st;
  braid_reactor_t *r = new_manual();
  fire_log l = {.r = r};
  enum { N = 200 };
  tnode n[N];
  for (int i = 0; i < N; i++) {
    n[i] = (tnode){BRAID_TIMER_INIT, i, &l};
    /* Deadlines in a scrambled order so cancels hit every heap position. */
    assert_int_equal(braid_timer_start(r, &n[i].t, (uint64_t)((i * 37) % N) + 1,
                                       log_fire, &n[i]),
                     0);
  }
  size_t left = N;
  for (int i = 0; i < N; i += 3) {
    assert_int_equal(braid_timer_cancel(&n[i].t), 0);
    left--;
    assert_false(braid_timer_active(&n[i].t));
    assert_int_equal(braid_timer_deadline(&n[i].t), 0);
    assert_int_equal(braid_reactor_timer_count(r), left);
  }
  assert_int_equal(braid_clock_advance(r, N + 1), 0);
  assert_int_equal(l.n, (int)left);
  /* Survivors fired in deadline order, and no cancelled one fired. */
  for (int k = 0; k < l.n; k++) {
    assert_int_not_equal(l.id[k] % 3, 0);
    assert_int_equal(l.now[k], (uint64_t)((l.id[k] * 37) % N) + 1);
    if (k > 0)
      assert_true(l.now[k] > l.now[k - 1]);
  }
  assert_int_equal(braid_reactor_destroy(r), 0);
}

static void t_reset(void **st) {
  (void)st;
  braid_reactor_t *r = new_manual();
  fire_log l = {.r = r};
  tnode a = {BRAID_TIMER_INIT, 1, &l}, b = {BRAID_TIMER_INIT, 2, &l},
        c = {BRAID_TIMER_INIT, 3, &l};
  assert_int_equal(braid_timer_start(r, &a.t, 10, log_fire, &a), 0);
  assert_int_equal(braid_timer_start(r, &b.t, 20, log_fire, &b), 0);
  assert_int_equal(braid_timer_start(r, &c.t, 30, log_fire, &c), 0);
  assert_int_equal(braid_clock_advance(r, 5), 0);
  assert_int_equal(l.n, 0);
  /* Later: a is now due at 5 + 40 = 45. */
  assert_int_equal(braid_timer_reset(&a.t, 40), 0);
  assert_int_equal(braid_timer_deadline(&a.t), 45);
  /* Earlier: c is now due at 5 + 1 = 6. */
  assert_int_equal(braid_timer_reset(&c.t, 1), 0);
  assert_int_equal(braid_timer_deadline(&c.t), 6);
  /* Same deadline as b: reset counts as scheduling anew, so b (scheduled
   * earlier) fires first. */
  assert_int_equal(braid_timer_start(r, &b.t, 1, log_fire, &b), BRAID_EBUSY);
  assert_int_equal(braid_timer_reset(&b.t, 15), 0);
  assert_int_equal(braid_timer_deadline(&b.t), 20);
  tnode d = {BRAID_TIMER_INIT, 4, &l};
  assert_int_equal(braid_timer_start(r, &d.t, 15, log_fire, &d), 0);
  assert_int_equal(braid_timer_reset(&b.t, 15), 0); /* b now after d */
  assert_int_equal(braid_reactor_timer_count(r), 4);
  assert_int_equal(braid_clock_advance(r, 100), 0);
  assert_int_equal(l.n, 4);
  int want_id[] = {3, 4, 2, 1};
  uint64_t want_at[] = {6, 20, 20, 45};
  for (int i = 0; i < 4; i++) {
    assert_int_equal(l.id[i], want_id[i]);
    assert_int_equal(l.now[i], want_at[i]);
  }
  assert_int_equal(braid_reactor_destroy(r), 0);
}

static void t_delay(void **st) {
  (void)st;
  braid_reactor_t *r = new_manual();
  fire_log l = {.r = r};
  assert_int_equal(braid_clock_advance(r, 1000), 0);
  tnode a = {BRAID_TIMER_INIT, 1, &l}, b = {BRAID_TIMER_INIT, 2, &l},
        c = {BRAID_TIMER_INIT, 3, &l}, d = {BRAID_TIMER_INIT, 4, &l};
  assert_int_equal(braid_timer_start(r, &a.t, 100, log_fire, &a), 0);
  assert_int_equal(braid_timer_start(r, &b.t, 100, log_fire, &b), 0);
  assert_int_equal(braid_timer_start(r, &c.t, 500, log_fire, &c), 0);
  assert_int_equal(braid_timer_start(r, &d.t, 500, log_fire, &d), 0);
  /* Positive: later. */
  assert_int_equal(braid_timer_delay(&a.t, 50), 0);
  assert_int_equal(braid_timer_deadline(&a.t), 1150);
  /* Negative: earlier. */
  assert_int_equal(braid_timer_delay(&b.t, -60), 0);
  assert_int_equal(braid_timer_deadline(&b.t), 1040);
  /* Negative past zero: clamped to 0, never wrapped to a huge deadline. */
  assert_int_equal(braid_timer_delay(&c.t, -5000), 0);
  assert_int_equal(braid_timer_deadline(&c.t), 0);
  assert_int_equal(braid_timer_delay(&d.t, INT64_MIN), 0);
  assert_int_equal(braid_timer_deadline(&d.t), 0);
  /* Zero: the deadline stays. */
  assert_int_equal(braid_timer_delay(&a.t, 0), 0);
  assert_int_equal(braid_timer_deadline(&a.t), 1150);
  /* c and d are overdue now: the next advance fires them (c first, it was
   * moved first) at the current time, then b, then a. */
  assert_int_equal(braid_clock_advance(r, 0), 0);
  assert_int_equal(l.n, 2);
  assert_int_equal(l.id[0], 3);
  assert_int_equal(l.id[1], 4);
  assert_int_equal(l.now[0], 1000);
  assert_int_equal(braid_clock_advance(r, 200), 0);
  assert_int_equal(l.n, 4);
  assert_int_equal(l.id[2], 2);
  assert_int_equal(l.now[2], 1040);
  assert_int_equal(l.id[3], 1);
  assert_int_equal(l.now[3], 1150);

  /* Saturation at the far end: no overflow back to an early deadline. */
  tnode e = {BRAID_TIMER_INIT, 5, &l};
  assert_int_equal(braid_timer_start(r, &e.t, UINT64_MAX, never_fire, NULL), 0);
  assert_int_equal(braid_timer_deadline(&e.t), UINT64_MAX);
  assert_int_equal(braid_timer_delay(&e.t, INT64_MAX), 0);
  assert_int_equal(braid_timer_deadline(&e.t), UINT64_MAX);
  assert_int_equal(braid_timer_reset(&e.t, UINT64_MAX - 1), 0);
  assert_int_equal(braid_timer_deadline(&e.t), UINT64_MAX);
  assert_int_equal(braid_clock_advance(r, BRAID_SEC(1000000)), 0);
  assert_true(braid_timer_active(&e.t));
  assert_int_equal(braid_timer_cancel(&e.t), 0);
  assert_int_equal(braid_reactor_destroy(r), 0);
}

/* ------------------------------------------------------------------------
 * Misuse
 * ------------------------------------------------------------------------ */

static void count_fire(braid_timer_t *t, void *arg) {
  (void)t;
  (*(int *)arg)++;
}

static void t_misuse(void **st) {
  (void)st;
  braid_reactor_t *r = new_manual();
  braid_reactor_t *r2 = new_manual();
  int fired = 0;

  /* Never started (zero-filled): EINVAL, and nothing changes. */
  braid_timer_t z;
  memset(&z, 0, sizeof z);
  assert_int_equal(braid_timer_cancel(&z), BRAID_EINVAL);
  assert_int_equal(braid_timer_reset(&z, 5), BRAID_EINVAL);
  assert_int_equal(braid_timer_delay(&z, 5), BRAID_EINVAL);
  assert_false(braid_timer_active(&z));
  assert_int_equal(braid_timer_deadline(&z), 0);
  braid_timer_t zi = BRAID_TIMER_INIT;
  assert_int_equal(braid_timer_cancel(&zi), BRAID_EINVAL);

  /* NULLs. */
  assert_int_equal(braid_timer_cancel(NULL), BRAID_EINVAL);
  assert_int_equal(braid_timer_reset(NULL, 1), BRAID_EINVAL);
  assert_int_equal(braid_timer_delay(NULL, 1), BRAID_EINVAL);
  assert_false(braid_timer_active(NULL));
  assert_int_equal(braid_timer_deadline(NULL), 0);
  assert_int_equal(braid_timer_start(NULL, &z, 1, count_fire, &fired),
                   BRAID_EINVAL);
  assert_int_equal(braid_timer_start(r, NULL, 1, count_fire, &fired),
                   BRAID_EINVAL);
  assert_int_equal(braid_timer_start(r, &z, 1, NULL, &fired), BRAID_EINVAL);
  assert_int_equal(braid_reactor_timer_count(NULL), 0);
  assert_int_equal(braid_reactor_timer_count(r), 0);

  /* Start while pending: EBUSY, on the same or another reactor, and the
   * original schedule is untouched. */
  braid_timer_t t = BRAID_TIMER_INIT;
  assert_int_equal(braid_timer_start(r, &t, 10, count_fire, &fired), 0);
  assert_int_equal(braid_timer_start(r, &t, 99, count_fire, &fired),
                   BRAID_EBUSY);
  assert_int_equal(braid_timer_start(r2, &t, 1, count_fire, &fired),
                   BRAID_EBUSY);
  assert_int_equal(braid_timer_deadline(&t), 10);
  assert_int_equal(braid_reactor_timer_count(r), 1);
  assert_int_equal(braid_reactor_timer_count(r2), 0);

  /* Cancel twice. */
  assert_int_equal(braid_timer_cancel(&t), 0);
  assert_int_equal(braid_timer_cancel(&t), BRAID_ECANCELED);
  assert_int_equal(braid_timer_reset(&t, 1), BRAID_ECANCELED);
  assert_int_equal(braid_timer_delay(&t, 1), BRAID_ECANCELED);
  assert_int_equal(braid_reactor_timer_count(r), 0);
  assert_int_equal(braid_clock_advance(r, 100), 0);
  assert_int_equal(fired, 0);

  /* Restart after cancel, let it fire, then misuse after fire. */
  assert_int_equal(braid_timer_start(r, &t, 10, count_fire, &fired), 0);
  assert_int_equal(braid_clock_advance(r, 10), 0);
  assert_int_equal(fired, 1);
  assert_int_equal(braid_timer_cancel(&t), BRAID_EALREADY);
  assert_int_equal(braid_timer_reset(&t, 1), BRAID_EALREADY);
  assert_int_equal(braid_timer_delay(&t, 1), BRAID_EALREADY);
  assert_false(braid_timer_active(&t));
  assert_int_equal(braid_reactor_timer_count(r), 0);

  /* Restart after fire: a fresh schedule, and it fires again. It may even
   * move to another reactor. */
  assert_int_equal(braid_timer_start(r, &t, 5, count_fire, &fired), 0);
  assert_int_equal(braid_timer_deadline(&t), braid_reactor_now(r) + 5);
  assert_int_equal(braid_clock_advance(r, 5), 0);
  assert_int_equal(fired, 2);
  assert_int_equal(braid_timer_start(r2, &t, 5, count_fire, &fired), 0);
  assert_int_equal(braid_reactor_timer_count(r2), 1);
  assert_int_equal(braid_clock_advance(r, 100), 0);
  assert_int_equal(fired, 2);
  assert_int_equal(braid_clock_advance(r2, 5), 0);
  assert_int_equal(fired, 3);

  assert_int_equal(braid_reactor_destroy(r), 0);
  assert_int_equal(braid_reactor_destroy(r2), 0);
}

/* Destroying a reactor drops its pending timers: they never run, and they
 * are left cancelled so that their owners can still query and reuse them. */
static void t_destroy_drops_pending(void **st) {
  (void)st;
  braid_reactor_t *r = new_reactor();
  braid_timer_t t[100];
  for (int i = 0; i < 100; i++) {
    t[i] = (braid_timer_t)BRAID_TIMER_INIT;
    assert_int_equal(braid_timer_start(r, &t[i], (uint64_t)i, never_fire, NULL),
                     0);
  }
  assert_int_equal(braid_reactor_destroy(r), 0);
  for (int i = 0; i < 100; i++) {
    assert_false(braid_timer_active(&t[i]));
    assert_int_equal(braid_timer_cancel(&t[i]), BRAID_ECANCELED);
  }
  /* Reusable on a new reactor. */
  r = new_reactor();
  int fired = 0;
  assert_int_equal(braid_timer_start(r, &t[0], 0, count_fire, &fired), 0);
  assert_int_equal(braid_reactor_run(r), 0);
  assert_int_equal(fired, 1);
  assert_int_equal(braid_reactor_destroy(r), 0);
}

/* When the heap cannot grow, start fails with ENOMEM and the timer is left
 * not pending; timers already scheduled are unaffected. */
static int g_fail_alloc;
static void *fail_malloc(size_t n) {
  return g_fail_alloc ? NULL : malloc(n);
}
static void *fail_realloc(void *p, size_t n) {
  return g_fail_alloc ? NULL : realloc(p, n);
}
static void *fail_calloc(size_t c, size_t n) {
  return g_fail_alloc ? NULL : calloc(c, n);
}

static void t_oom_heap(void **st) {
  (void)st;
  braid_reactor_t *r = new_manual();
  assert_int_equal(
      braid_set_allocator(fail_malloc, fail_realloc, fail_calloc, free), 0);
  fire_log l = {.r = r};
  enum { N = 300 };
  tnode *n = calloc(N, sizeof *n);
  assert_non_null(n);
  int started = 0, rc = 0;
  /* Fill whatever capacity exists, then fail the growth. */
  assert_int_equal(braid_timer_start(r, &n[0].t, 1, log_fire, &n[0]), 0);
  n[0].id = 0;
  n[0].log = &l;
  started = 1;
  g_fail_alloc = 1;
  for (; started < N; started++) {
    n[started].id = started;
    n[started].log = &l;
    rc = braid_timer_start(r, &n[started].t, 1, log_fire, &n[started]);
    if (rc != 0)
      break;
  }
  g_fail_alloc = 0;
  braid_reset_allocator();
  assert_int_equal(rc, BRAID_ENOMEM);
  assert_true(started < N);
  tnode *failed = &n[started];
  assert_false(braid_timer_active(&failed->t));
  assert_int_equal(braid_timer_cancel(&failed->t), BRAID_EINVAL);
  assert_int_equal(braid_reactor_timer_count(r), (size_t)started);
  /* Allocation works again: the failed timer can be started. */
  assert_int_equal(braid_timer_start(r, &failed->t, 1, log_fire, failed), 0);
  assert_int_equal(braid_clock_advance(r, 1), 0);
  assert_int_equal(l.n, started + 1);
  for (int i = 0; i <= started; i++)
    assert_int_equal(l.id[i], i);
  assert_int_equal(braid_reactor_destroy(r), 0);
  free(n);
}

/* ------------------------------------------------------------------------
 * Re-entrancy: what a timer callback may do to timers
 * ------------------------------------------------------------------------ */

typedef struct reent {
  braid_reactor_t *r;
  braid_timer_t a, b, c, d, e;
  int a_fired, b_fired, c_fired, d_fired, e_fired;
  int cancel_rc, start_rc, reset_rc;
  int order[8];
  int norder;
} reent;

static void re_b(braid_timer_t *t, void *arg) {
  (void)t;
  ((reent *)arg)->b_fired++;
}

static void re_c(braid_timer_t *t, void *arg) {
  (void)t;
  reent *x = arg;
  x->c_fired++;
  x->order[x->norder++] = 'c';
}

static void re_d(braid_timer_t *t, void *arg) {
  (void)t;
  reent *x = arg;
  x->d_fired++;
  x->order[x->norder++] = 'd';
}

static void re_e(braid_timer_t *t, void *arg) {
  (void)t;
  ((reent *)arg)->e_fired++;
}

static void re_a(braid_timer_t *t, void *arg) {
  (void)t;
  reent *x = arg;
  x->a_fired++;
  x->order[x->norder++] = 'a';
  /* b is due in this very pass: cancelling it must stop it firing. */
  x->cancel_rc = braid_timer_cancel(&x->b);
  /* A 0-delay timer started here waits for the next pass. */
  x->start_rc = braid_timer_start(x->r, &x->c, 0, re_c, x);
  /* e is due in this pass too: pushing it into the future defers it. */
  x->reset_rc = braid_timer_reset(&x->e, BRAID_SEC(3600));
}

static void t_reentrant_cancel_start_reset(void **st) {
  (void)st;
  braid_reactor_t *r = new_reactor();
  reent x = {.r = r};
  x.a = x.b = x.c = x.d = x.e = (braid_timer_t)BRAID_TIMER_INIT;
  /* All due at once; a was scheduled first so it fires first. */
  assert_int_equal(braid_timer_start(r, &x.a, 0, re_a, &x), 0);
  assert_int_equal(braid_timer_start(r, &x.b, 0, re_b, &x), 0);
  assert_int_equal(braid_timer_start(r, &x.d, 0, re_d, &x), 0);
  assert_int_equal(braid_timer_start(r, &x.e, 0, re_e, &x), 0);
  /* One iteration: a and d fire; b was cancelled; c is started but must
   * not fire in the same pass; e was pushed out. */
  assert_int_equal(braid_reactor_run_once(r, false), 1);
  assert_int_equal(x.a_fired, 1);
  assert_int_equal(x.cancel_rc, 0);
  assert_int_equal(x.start_rc, 0);
  assert_int_equal(x.reset_rc, 0);
  assert_int_equal(x.b_fired, 0);
  assert_int_equal(x.d_fired, 1);
  assert_int_equal(x.c_fired, 0);
  assert_int_equal(x.e_fired, 0);
  assert_true(braid_timer_active(&x.c));
  assert_true(braid_timer_active(&x.e));
  assert_false(braid_timer_active(&x.b));
  /* A later iteration fires c (not blocking: e would hold it an hour). */
  for (int i = 0; i < 1000 && x.c_fired == 0; i++)
    assert_int_equal(braid_reactor_run_once(r, false), 1);
  assert_int_equal(x.c_fired, 1);
  assert_int_equal(x.norder, 3);
  assert_int_equal(x.order[0], 'a');
  assert_int_equal(x.order[1], 'd');
  assert_int_equal(x.order[2], 'c');
  assert_int_equal(braid_timer_cancel(&x.e), 0);
  assert_int_equal(braid_timer_cancel(&x.b), BRAID_ECANCELED);
  assert_int_equal(braid_reactor_run(r), 0);
  assert_int_equal(x.e_fired, 0);
  assert_int_equal(braid_reactor_destroy(r), 0);
}

/* A timer that reschedules itself with zero delay fires once per pass, so
 * it cannot starve the loop: a call-soon keeps getting its turn. */
typedef struct selfre {
  braid_reactor_t *r;
  braid_timer_t t;
  int fired, soon_ran, limit;
  int cancel_rc, reset_rc, delay_rc, start_rc;
} selfre;

static void selfre_cb(braid_timer_t *t, void *arg) {
  selfre *s = arg;
  s->fired++;
  /* Inside its own callback the timer has fired: it is not pending. */
  assert_false(braid_timer_active(t));
  s->cancel_rc = braid_timer_cancel(t);
  s->reset_rc = braid_timer_reset(t, 0);
  s->delay_rc = braid_timer_delay(t, 0);
  if (s->fired < s->limit)
    s->start_rc = braid_timer_start(s->r, t, 0, selfre_cb, s);
}

static void selfre_soon(braid_reactor_t *r, void *arg) {
  selfre *s = arg;
  s->soon_ran++;
  if (s->fired < s->limit)
    assert_int_equal(braid_call_soon(r, selfre_soon, s), 0);
}

static void t_reentrant_self_reschedule(void **st) {
  (void)st;
  braid_reactor_t *r = new_reactor();
  selfre s = {.r = r, .limit = 50};
  s.t = (braid_timer_t)BRAID_TIMER_INIT;
  assert_int_equal(braid_timer_start(r, &s.t, 0, selfre_cb, &s), 0);
  assert_int_equal(braid_call_soon(r, selfre_soon, &s), 0);
  /* Each iteration fires the timer at most once. */
  int iters = 0;
  while (s.fired < s.limit) {
    int before = s.fired;
    assert_true(braid_reactor_run_once(r, true) >= 0);
    assert_true(s.fired - before <= 1);
    iters++;
    assert_true(iters < 1000);
  }
  assert_int_equal(s.cancel_rc, BRAID_EALREADY);
  assert_int_equal(s.reset_rc, BRAID_EALREADY);
  assert_int_equal(s.delay_rc, BRAID_EALREADY);
  assert_int_equal(s.start_rc, 0);
  /* The call-soon chain ran alongside, once per iteration. */
  assert_true(s.soon_ran >= s.limit - 1);
  assert_int_equal(braid_reactor_run(r), 0);
  assert_int_equal(s.fired, s.limit);
  assert_int_equal(braid_reactor_destroy(r), 0);
}

/* A callback that starts many timers, growing the heap while the pass that
 * runs it is still walking the heap. */
typedef struct grow {
  braid_reactor_t *r;
  fire_log *l;
  tnode *n;
  int count;
} grow;

static void grow_cb(braid_timer_t *t, void *arg) {
  (void)t;
  grow *g = arg;
  for (int i = 0; i < g->count; i++) {
    g->n[i] = (tnode){BRAID_TIMER_INIT, i, g->l};
    assert_int_equal(braid_timer_start(g->r, &g->n[i].t, 0, log_fire, &g->n[i]),
                     0);
  }
}

static void t_reentrant_heap_growth(void **st) {
  (void)st;
  braid_reactor_t *r = new_manual();
  fire_log l = {.r = r};
  grow g = {.r = r, .l = &l, .count = 1000};
  g.n = calloc((size_t)g.count, sizeof *g.n);
  assert_non_null(g.n);
  braid_timer_t t = BRAID_TIMER_INIT;
  assert_int_equal(braid_timer_start(r, &t, 10, grow_cb, &g), 0);
  assert_int_equal(braid_clock_advance(r, 10), 0);
  /* Zero delay in a timer pass: due 1 ns later, so not within advance(10)
   * that ends exactly at 10. */
  assert_int_equal(l.n, 0);
  assert_int_equal(braid_reactor_timer_count(r), (size_t)g.count);
  assert_int_equal(braid_clock_advance(r, 1), 0);
  assert_int_equal(l.n, g.count);
  for (int i = 0; i < g.count; i++) {
    assert_int_equal(l.id[i], i);
    assert_int_equal(l.now[i], 11);
  }
  assert_int_equal(braid_reactor_destroy(r), 0);
  free(g.n);
}

/* ------------------------------------------------------------------------
 * Randomized: ~100k timers against a reference model
 *
 * The model is deliberately simple and unlike the library: a binary
 * min-heap of (deadline, seq, id) entries with lazy deletion (an entry is
 * stale when the timer was cancelled or rescheduled since). Every firing is
 * checked against the model's minimum as it happens, and every operation's
 * return code against the model's state. Random operations run both
 * between clock advances and inside timer callbacks.
 * ------------------------------------------------------------------------ */

enum { M_IDLE, M_PENDING, M_FIRED, M_CANCELLED };

typedef struct m_entry {
  uint64_t deadline, seq;
  uint32_t id;
} m_entry;

typedef struct model {
  braid_reactor_t *r;
  uint32_t ntimers;
  braid_timer_t *t;
  uint8_t *state;
  uint64_t *seq;
  uint64_t *deadline;
  uint32_t *fires;
  m_entry *heap;
  size_t heap_len, heap_cap;
  uint64_t next_seq;
  uint64_t now;
  size_t pending;
  uint64_t rng;
  uint64_t total_fired;
} model;

static model *g_model;

static uint64_t m_rand(model *m) {
  /* xorshift64*: fixed seed, so a failure reproduces. */
  m->rng ^= m->rng >> 12;
  m->rng ^= m->rng << 25;
  m->rng ^= m->rng >> 27;
  return m->rng * 2685821657736338717ull;
}

static int m_less(const m_entry *a, const m_entry *b) {
  return a->deadline != b->deadline ? a->deadline < b->deadline
                                    : a->seq < b->seq;
}

static void m_push(model *m, uint32_t id) {
  if (m->heap_len == m->heap_cap) {
    m->heap_cap = m->heap_cap ? m->heap_cap * 2 : 1024;
    m->heap = realloc(m->heap, m->heap_cap * sizeof *m->heap);
    assert_non_null(m->heap);
  }
  size_t i = m->heap_len++;
  m_entry e = {m->deadline[id], m->seq[id], id};
  while (i > 0 && m_less(&e, &m->heap[(i - 1) / 2])) {
    m->heap[i] = m->heap[(i - 1) / 2];
    i = (i - 1) / 2;
  }
  m->heap[i] = e;
}

static void m_pop(model *m) {
  m_entry e = m->heap[--m->heap_len];
  size_t i = 0;
  for (;;) {
    size_t c = 2 * i + 1;
    if (c >= m->heap_len)
      break;
    if (c + 1 < m->heap_len && m_less(&m->heap[c + 1], &m->heap[c]))
      c++;
    if (!m_less(&m->heap[c], &e))
      break;
    m->heap[i] = m->heap[c];
    i = c;
  }
  if (m->heap_len > 0)
    m->heap[i] = e;
}

/* The model's next timer to fire, dropping stale entries; NULL if none. */
static const m_entry *m_top(model *m) {
  while (m->heap_len > 0) {
    const m_entry *e = &m->heap[0];
    if (m->state[e->id] == M_PENDING && m->seq[e->id] == e->seq)
      return e;
    m_pop(m);
  }
  return NULL;
}

static void m_fire(braid_timer_t *t, void *arg);

static void m_schedule(model *m, uint32_t id, uint64_t deadline) {
  m->deadline[id] = deadline;
  m->seq[id] = m->next_seq++;
  m_push(m, id);
}

/* One random operation on a random timer. `in_cb`: we are inside a timer
 * callback, where a zero delay means "next pass" (1 ns later). */
static void m_random_op(model *m, int in_cb) {
  uint32_t id = (uint32_t)(m_rand(m) % m->ntimers);
  braid_timer_t *t = &m->t[id];
  uint64_t roll = m_rand(m);
  int op = (int)(roll % 4);
  uint64_t delay = (roll >> 8) % 8 == 0 ? 0 : (roll >> 16) % 1000;
  int64_t delta = (int64_t)((roll >> 32) % 1001) - 500;
  int st = m->state[id];
  int want, rc;
  switch (op) {
  case 0: /* start */
    want = st == M_PENDING ? BRAID_EBUSY : 0;
    rc = braid_timer_start(m->r, t, delay, m_fire, m);
    assert_int_equal(rc, want);
    if (rc == 0) {
      m->state[id] = M_PENDING;
      m->pending++;
      m_schedule(m, id, m->now + (delay == 0 && in_cb ? 1 : delay));
    }
    break;
  default: {
    want = st == M_PENDING ? 0
           : st == M_IDLE  ? BRAID_EINVAL
           : st == M_FIRED ? BRAID_EALREADY
                           : BRAID_ECANCELED;
    if (op == 1) {
      rc = braid_timer_cancel(t);
      assert_int_equal(rc, want);
      if (rc == 0) {
        m->state[id] = M_CANCELLED;
        m->pending--;
      }
    } else if (op == 2) {
      rc = braid_timer_reset(t, delay);
      assert_int_equal(rc, want);
      if (rc == 0)
        m_schedule(m, id, m->now + (delay == 0 && in_cb ? 1 : delay));
    } else {
      rc = braid_timer_delay(t, delta);
      assert_int_equal(rc, want);
      if (rc == 0) {
        uint64_t d = m->deadline[id];
        d = delta < 0 ? ((uint64_t)-delta > d ? 0 : d - (uint64_t)-delta)
                      : d + (uint64_t)delta;
        m_schedule(m, id, d);
      }
    }
  }
  }
  assert_int_equal(braid_timer_active(t), m->state[id] == M_PENDING);
  if (m->state[id] == M_PENDING)
    assert_int_equal(braid_timer_deadline(t), m->deadline[id]);
}

static void m_fire(braid_timer_t *t, void *arg) {
  model *m = arg;
  uint32_t id = (uint32_t)(t - m->t);
  assert_true(id < m->ntimers);
  const m_entry *e = m_top(m);
  assert_non_null(e);
  /* The library fires exactly the timer the model says is next. */
  if (e->id != id)
    fail_msg("fired timer %u, model expected %u (deadline %llu vs %llu)", id,
             e->id, (unsigned long long)m->deadline[id],
             (unsigned long long)e->deadline);
  if (e->deadline > m->now)
    m->now = e->deadline;
  assert_int_equal(braid_reactor_now(m->r), m->now);
  m_pop(m);
  m->state[id] = M_FIRED;
  m->pending--;
  m->fires[id]++;
  m->total_fired++;
  if (m_rand(m) % 4 == 0) {
    m_random_op(m, 1);
    m_random_op(m, 1);
  }
}

static void m_advance(model *m, uint64_t delta) {
  /* m_fire moves m->now along to each deadline during the advance; the
   * advance ends at its target whatever fired. */
  uint64_t target = m->now + delta;
  assert_int_equal(braid_clock_advance(m->r, delta), 0);
  assert_true(m->now <= target);
  m->now = target;
  assert_int_equal(braid_reactor_now(m->r), m->now);
  /* Nothing due is left behind. */
  const m_entry *e = m_top(m);
  if (e != NULL)
    assert_true(e->deadline > m->now);
  assert_int_equal(braid_reactor_timer_count(m->r), m->pending);
}

static void t_random_vs_model(void **st) {
  (void)st;
  model m;
  memset(&m, 0, sizeof m);
  g_model = &m;
  m.r = new_manual();
  m.ntimers = 100000;
  m.rng = 0x9e3779b97f4a7c15ull;
  const char *seed = getenv("BRAID_TEST_SEED");
  if (seed != NULL)
    m.rng = strtoull(seed, NULL, 0) | 1;
  m.t = calloc(m.ntimers, sizeof *m.t);
  m.state = calloc(m.ntimers, 1);
  m.seq = calloc(m.ntimers, sizeof *m.seq);
  m.deadline = calloc(m.ntimers, sizeof *m.deadline);
  m.fires = calloc(m.ntimers, sizeof *m.fires);
  assert_true(m.t && m.state && m.seq && m.deadline && m.fires);

  /* Start every timer, with many equal deadlines (delays below 50000). */
  for (uint32_t i = 0; i < m.ntimers; i++) {
    uint64_t d = m_rand(&m) % 50000;
    assert_int_equal(braid_timer_start(m.r, &m.t[i], d, m_fire, &m), 0);
    m.state[i] = M_PENDING;
    m.pending++;
    m_schedule(&m, i, d);
  }
  assert_int_equal(braid_reactor_timer_count(m.r), m.ntimers);
  /* Rounds of random operations, each followed by a random advance. */
  for (int round = 0; round < 300; round++) {
    for (int k = 0; k < 600; k++)
      m_random_op(&m, 0);
    m_advance(&m, m_rand(&m) % 400);
  }
  /* Drain: everything still pending fires, exactly once more. */
  m_advance(&m, 10000000);
  assert_int_equal(m.pending, 0);
  assert_int_equal(braid_reactor_timer_count(m.r), 0);
  /* Set check: every timer's fire count matches its state history. */
  uint64_t sum = 0;
  for (uint32_t i = 0; i < m.ntimers; i++) {
    sum += m.fires[i];
    if (m.state[i] == M_FIRED)
      assert_true(m.fires[i] >= 1);
    assert_false(braid_timer_active(&m.t[i]));
  }
  assert_int_equal(sum, m.total_fired);
  /* Most of the 100k timers did fire: the test exercised the heap. */
  assert_true(m.total_fired > 90000);
  assert_int_equal(braid_reactor_destroy(m.r), 0);
  free(m.t);
  free(m.state);
  free(m.seq);
  free(m.deadline);
  free(m.fires);
  free(m.heap);
}

/* ------------------------------------------------------------------------
 * The manual clock
 * ------------------------------------------------------------------------ */

typedef struct chain {
  braid_reactor_t *r;
  braid_timer_t t[4];
  uint64_t at[4];
  int n;
  int soon_n;
  uint64_t soon_at[8];
} chain;

static void chain_soon2(braid_reactor_t *r, void *arg) {
  chain *c = arg;
  c->soon_at[c->soon_n++] = braid_reactor_now(r);
}

static void chain_soon(braid_reactor_t *r, void *arg) {
  chain *c = arg;
  c->soon_at[c->soon_n++] = braid_reactor_now(r);
  /* A call-soon queued by a call-soon is flushed by advance as well. */
  assert_int_equal(braid_call_soon(r, chain_soon2, c), 0);
}

static void chain_cb(braid_timer_t *t, void *arg) {
  chain *c = arg;
  int i = (int)(t - c->t);
  c->at[i] = braid_reactor_now(c->r);
  c->n++;
  /* Each link schedules the next 5 ns later; the last link queues a
   * call-soon instead. */
  if (i + 1 < 4)
    assert_int_equal(braid_timer_start(c->r, &c->t[i + 1], 5, chain_cb, c), 0);
  else
    assert_int_equal(braid_call_soon(c->r, chain_soon, c), 0);
}

static void t_manual_clock_advance(void **st) {
  (void)st;
  braid_reactor_t *r = new_manual();
  chain c = {.r = r};
  for (int i = 0; i < 4; i++)
    c.t[i] = (braid_timer_t)BRAID_TIMER_INIT;
  assert_int_equal(braid_timer_start(r, &c.t[0], 10, chain_cb, &c), 0);

  /* Short of the deadline: nothing fires, time moves exactly. */
  assert_int_equal(braid_clock_advance(r, 9), 0);
  assert_int_equal(braid_reactor_now(r), 9);
  assert_int_equal(c.n, 0);
  /* Real time passing and loop iterations do not move a manual clock. */
  braid_reactor_update_time(r);
  assert_int_equal(braid_reactor_run_once(r, false), 0);
  assert_int_equal(braid_reactor_now(r), 9);
  assert_int_equal(c.n, 0);

  /* To 22: fires at 10, then the timers scheduled during the advance at 15
   * and 20; the one at 25 is beyond. */
  assert_int_equal(braid_clock_advance(r, 13), 0);
  assert_int_equal(braid_reactor_now(r), 22);
  assert_int_equal(c.n, 3);
  assert_int_equal(c.at[0], 10);
  assert_int_equal(c.at[1], 15);
  assert_int_equal(c.at[2], 20);
  assert_true(braid_timer_active(&c.t[3]));
  assert_int_equal(braid_timer_deadline(&c.t[3]), 25);
  assert_int_equal(c.soon_n, 0);

  /* The last link queues a call-soon, which queues another: advance runs
   * both before returning. */
  assert_int_equal(braid_clock_advance(r, 100), 0);
  assert_int_equal(c.n, 4);
  assert_int_equal(c.at[3], 25);
  assert_int_equal(c.soon_n, 2);
  assert_true(c.soon_at[0] >= 25);
  assert_true(c.soon_at[1] >= 25);
  assert_int_equal(braid_reactor_now(r), 122);

  /* A call-soon queued before an advance with no timers runs too. */
  assert_int_equal(braid_call_soon(r, chain_soon2, &c), 0);
  assert_int_equal(braid_clock_advance(r, 0), 0);
  assert_int_equal(c.soon_n, 3);
  assert_int_equal(braid_reactor_destroy(r), 0);
}

static void requeue_soon(braid_reactor_t *r, void *arg) {
  int *n = arg;
  (*n)++;
  assert_int_equal(braid_call_soon(r, requeue_soon, arg), 0);
}

static void soon_count(braid_reactor_t *r, void *arg) {
  (void)r;
  (*(int *)arg)++;
}

static void t_manual_clock_misc(void **st) {
  (void)st;
  /* Advance needs a manual clock. */
  braid_reactor_t *real = new_reactor();
  uint64_t before = braid_reactor_now(real);
  assert_int_equal(braid_clock_advance(real, 10), BRAID_EINVAL);
  assert_true(braid_reactor_now(real) - before < BRAID_SEC(1));
  assert_int_equal(braid_clock_advance(NULL, 10), BRAID_EINVAL);
  assert_int_equal(braid_reactor_destroy(real), 0);

  braid_reactor_t *r = new_manual();
  /* The flag through the options works the same as the helper. */
  braid_reactor_t *r2 = NULL;
  braid_reactor_options o = {0};
  o.flags = BRAID_REACTOR_MANUAL_CLOCK;
  assert_int_equal(braid_reactor_create(&r2, &o), 0);
  assert_int_equal(braid_reactor_now(r2), 0);
  assert_int_equal(braid_clock_advance(r2, 7), 0);
  assert_int_equal(braid_reactor_now(r2), 7);
  assert_int_equal(braid_reactor_destroy(r2), 0);

  /* Zero delay outside a timer pass: due right now. */
  braid_timer_t t = BRAID_TIMER_INIT;
  int fired = 0;
  assert_int_equal(braid_clock_advance(r, 1000), 0);
  assert_int_equal(braid_timer_start(r, &t, 0, count_fire, &fired), 0);
  assert_int_equal(braid_timer_deadline(&t), 1000);
  assert_int_equal(braid_clock_advance(r, 0), 0);
  assert_int_equal(fired, 1);

  /* A manual clock's timers alone do not keep run() going (the clock
   * never moves by itself), but run() does fire what is already due. */
  assert_int_equal(braid_timer_start(r, &t, 50, count_fire, &fired), 0);
  assert_int_equal(braid_reactor_run(r), 0);
  assert_int_equal(fired, 1);
  assert_true(braid_timer_active(&t));
  assert_int_equal(braid_clock_advance(r, 50), 0);
  assert_int_equal(fired, 2);

  /* braid_testing_flush: counts what ran and honours its pass limit. */
  int n = 0, m = 0;
  assert_int_equal(braid_call_soon(r, requeue_soon, &n), 0);
  assert_int_equal(braid_call_soon(r, soon_count, &m), 0);
  assert_int_equal(braid_testing_flush(r, 3), 4);
  assert_int_equal(n, 3);
  assert_int_equal(m, 1);
  assert_int_equal(braid_testing_flush(r, 0), 0);
  assert_int_equal(braid_testing_flush(NULL, 5), 0);
  assert_int_equal(n, 3);

  /* The clock saturates instead of wrapping. */
  assert_int_equal(braid_clock_advance(r, UINT64_MAX), 0);
  assert_int_equal(braid_reactor_now(r), UINT64_MAX);
  assert_int_equal(braid_clock_advance(r, 5), 0);
  assert_int_equal(braid_reactor_now(r), UINT64_MAX);
  /* Destroy discards the self-requeueing call-soon. */
  assert_int_equal(braid_reactor_destroy(r), 0);
}

/* ------------------------------------------------------------------------
 * Real clock
 * ------------------------------------------------------------------------ */

typedef struct real20 {
  braid_reactor_t *r;
  uint64_t fired_at, loop_now;
} real20;

static void real20_cb(braid_timer_t *t, void *arg) {
  (void)t;
  real20 *x = arg;
  x->fired_at = braid_hrtime();
  x->loop_now = braid_reactor_now(x->r);
}

static void t_real_clock_20ms(void **st) {
  (void)st;
  braid_reactor_t *r = new_reactor();
  real20 x = {.r = r};
  braid_timer_t t = BRAID_TIMER_INIT;
  uint64_t t0 = braid_hrtime();
  braid_reactor_update_time(r);
  assert_int_equal(braid_timer_start(r, &t, BRAID_MSEC(20), real20_cb, &x), 0);
  uint64_t deadline = braid_timer_deadline(&t);
  assert_true(deadline >= t0 + BRAID_MSEC(20));
  assert_int_equal(braid_reactor_run(r), 0);
  assert_true(x.fired_at != 0);
  uint64_t dt = x.fired_at - t0;
  assert_true(dt >= BRAID_MSEC(20));
  assert_true(dt < BRAID_MSEC(500));
  assert_true(x.loop_now >= deadline);
  assert_int_equal(braid_reactor_destroy(r), 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(t_order_by_deadline),
      cmocka_unit_test(t_order_real_clock),
      cmocka_unit_test(t_fifo_equal_deadlines),
      cmocka_unit_test(t_fifo_across_seq_wrap),
      cmocka_unit_test(t_cancel),
      cmocka_unit_test(t_reset),
      cmocka_unit_test(t_delay),
      cmocka_unit_test(t_misuse),
      cmocka_unit_test(t_destroy_drops_pending),
      cmocka_unit_test(t_oom_heap),
      cmocka_unit_test(t_reentrant_cancel_start_reset),
      cmocka_unit_test(t_reentrant_self_reschedule),
      cmocka_unit_test(t_reentrant_heap_growth),
      cmocka_unit_test(t_random_vs_model),
      cmocka_unit_test(t_manual_clock_advance),
      cmocka_unit_test(t_manual_clock_misc),
      cmocka_unit_test(t_real_clock_20ms),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
