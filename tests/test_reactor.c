/* Reactor core: create/destroy, run and run_once, call-soon, stop, hold,
 * shutdown hooks, the log hook and the error table. Every test runs on the
 * poller named by BRAID_POLLER (tests/meson.build runs the file once per
 * built poller). */
#include <limits.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "braid/braid.h"
#include "braid/testing.h"

/* A log of small integers, used to check the order callbacks ran in. */
typedef struct trace {
  int v[256];
  int n;
} trace;

static void trace_add(trace *t, int x) {
  assert_true(t->n < (int)(sizeof t->v / sizeof t->v[0]));
  t->v[t->n++] = x;
}

static braid_reactor_t *new_reactor(void) {
  braid_reactor_t *r = NULL;
  assert_int_equal(braid_reactor_create(&r, NULL), 0);
  assert_non_null(r);
  return r;
}

static void sleep_ms(unsigned ms) {
  struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
  while (nanosleep(&ts, &ts) != 0)
    ;
}

/* ------------------------------------------------------------------------
 * Create / destroy
 * ------------------------------------------------------------------------ */

static void t_create_destroy(void **st) {
  (void)st;
  braid_reactor_t *r = new_reactor();
  /* The poller in use is the one this run of the suite asked for. */
  const char *want = getenv("BRAID_POLLER");
  if (want != NULL && *want != '\0')
    assert_string_equal(braid_reactor_poller(r), want);
  assert_false(braid_reactor_running(r));
  assert_int_equal(braid_reactor_timer_count(r), 0);
  assert_int_equal(braid_reactor_destroy(r), 0);

  /* A zero-filled options struct means the defaults too. */
  braid_reactor_options o;
  memset(&o, 0, sizeof o);
  assert_int_equal(braid_reactor_create(&r, &o), 0);
  assert_non_null(r);
  assert_int_equal(braid_reactor_destroy(r), 0);
}

static void t_create_null_args(void **st) {
  (void)st;
  assert_int_equal(braid_reactor_create(NULL, NULL), BRAID_EINVAL);
  assert_int_equal(braid_reactor_destroy(NULL), BRAID_EINVAL);
  assert_int_equal(braid_reactor_run(NULL), BRAID_EINVAL);
  assert_int_equal(braid_reactor_run_once(NULL, false), BRAID_EINVAL);
  assert_int_equal(braid_reactor_stop(NULL), BRAID_EINVAL);
  assert_int_equal(braid_reactor_release(NULL), BRAID_EINVAL);
  assert_false(braid_reactor_running(NULL));
  assert_null(braid_reactor_poller(NULL));
  assert_int_equal(braid_reactor_now(NULL), 0);
  assert_int_equal(braid_call_soon(NULL, NULL, NULL), BRAID_EINVAL);
  assert_int_equal(braid_call_from_thread(NULL, NULL, NULL), BRAID_EINVAL);
  braid_reactor_t *r = new_reactor();
  assert_int_equal(braid_call_soon(r, NULL, NULL), BRAID_EINVAL);
  assert_int_equal(braid_call_from_thread(r, NULL, NULL), BRAID_EINVAL);
  assert_int_equal(braid_reactor_destroy(r), 0);
}

typedef struct log_capture {
  int calls;
  braid_log_level level;
  char domain[64];
  char msg[1024];
} log_capture;

static void capture_log(void *arg, braid_log_level level, const char *domain,
                        const char *msg) {
  log_capture *c = arg;
  c->calls++;
  c->level = level;
  snprintf(c->domain, sizeof c->domain, "%s", domain);
  snprintf(c->msg, sizeof c->msg, "%s", msg);
}

static void t_create_unknown_poller_option(void **st) {
  (void)st;
  log_capture cap = {0};
  braid_reactor_options o = {0};
  o.poller = "no-such-poller";
  o.log_cb = capture_log;
  o.log_arg = &cap;
  braid_reactor_t *r = (braid_reactor_t *)&cap; /* must be reset to NULL */
  assert_int_equal(braid_reactor_create(&r, &o), BRAID_ENOTSUP);
  assert_null(r);
  /* The failure is explained through the log hook, naming the poller. */
  assert_int_equal(cap.calls, 1);
  assert_int_equal(cap.level, BRAID_LOG_ERROR);
  assert_non_null(strstr(cap.msg, "no-such-poller"));
}

#ifdef _WIN32
/* The C runtime on Windows has _putenv_s instead of setenv/unsetenv. */
static int setenv(const char *name, const char *value, int overwrite) {
  (void)overwrite;
  return _putenv_s(name, value) == 0 ? 0 : -1;
}
static int unsetenv(const char *name) {
  return _putenv_s(name, "") == 0 ? 0 : -1;
}
#endif

static void t_create_unknown_poller_env(void **st) {
  (void)st;
  const char *old = getenv("BRAID_POLLER");
  char *saved = old != NULL ? strdup(old) : NULL;
  assert_int_equal(setenv("BRAID_POLLER", "bogus", 1), 0);
  log_capture cap = {0};
  braid_reactor_options o = {0};
  o.log_cb = capture_log;
  o.log_arg = &cap;
  braid_reactor_t *r = NULL;
  int rc = braid_reactor_create(&r, &o);

  /* An explicit option wins over the environment. */
  braid_reactor_t *r2 = NULL;
  braid_reactor_options o2 = {0};
  o2.poller = saved != NULL ? saved : "poll";
  int rc2 = braid_reactor_create(&r2, &o2);

  if (saved != NULL) {
    setenv("BRAID_POLLER", saved, 1);
    free(saved);
  } else {
    unsetenv("BRAID_POLLER");
  }
  assert_int_equal(rc, BRAID_ENOTSUP);
  assert_null(r);
  assert_int_equal(cap.calls, 1);
  assert_non_null(strstr(cap.msg, "bogus"));
  assert_int_equal(rc2, 0);
  assert_non_null(r2);
  assert_int_equal(braid_reactor_destroy(r2), 0);
}

/* ------------------------------------------------------------------------
 * run / run_once / call_soon
 * ------------------------------------------------------------------------ */

static void t_run_empty_returns(void **st) {
  (void)st;
  braid_reactor_t *r = new_reactor();
  uint64_t t0 = braid_hrtime();
  assert_int_equal(braid_reactor_run(r), 0);
  assert_false(braid_reactor_running(r));
  /* Nothing to wait for: it must not have blocked. */
  assert_true(braid_hrtime() - t0 < BRAID_MSEC(500));
  assert_int_equal(braid_reactor_destroy(r), 0);
}

typedef struct soon_ctx {
  trace tr;
  braid_reactor_t *r;
  int saw_running;
} soon_ctx;

static soon_ctx *g_soon;

#define SOON_CB(n)                                                             \
  static void soon_##n(braid_reactor_t *r, void *arg) {                        \
    soon_ctx *c = arg;                                                         \
    assert_ptr_equal(r, c->r);                                                 \
    c->saw_running += braid_reactor_running(r);                                \
    trace_add(&c->tr, n);                                                      \
  }
SOON_CB(1)
SOON_CB(2)
SOON_CB(3)

static void soon_record_arg(braid_reactor_t *r, void *arg) {
  (void)r;
  trace_add(&g_soon->tr, (int)(intptr_t)arg);
}

static void t_call_soon_fifo(void **st) {
  (void)st;
  braid_reactor_t *r = new_reactor();
  soon_ctx c = {.r = r};
  g_soon = &c;
  assert_int_equal(braid_call_soon(r, soon_1, &c), 0);
  assert_int_equal(braid_call_soon(r, soon_2, &c), 0);
  assert_int_equal(braid_call_soon(r, soon_3, &c), 0);
  /* Nothing runs until the loop does. */
  assert_int_equal(c.tr.n, 0);
  /* Enough calls to make the queue grow several times while it is
   * wrapped around its ring. */
  for (int i = 100; i < 300; i++)
    assert_int_equal(braid_call_soon(r, soon_record_arg, (void *)(intptr_t)i),
                     0);
  assert_int_equal(braid_reactor_run(r), 0);
  assert_int_equal(c.tr.n, 203);
  assert_int_equal(c.tr.v[0], 1);
  assert_int_equal(c.tr.v[1], 2);
  assert_int_equal(c.tr.v[2], 3);
  for (int i = 0; i < 200; i++)
    assert_int_equal(c.tr.v[3 + i], 100 + i);
  assert_int_equal(c.saw_running, 3);
  assert_int_equal(braid_reactor_destroy(r), 0);
}

/* The ring wraps: callbacks queue more calls while the ring is partly
 * consumed (head != 0), so it grows while wrapped around. Every call gets
 * the next number when queued; FIFO means they run in number order. */
static int g_wrap_next, g_wrap_queued;
static void soon_wrap_check(braid_reactor_t *r, void *arg) {
  int x = (int)(intptr_t)arg;
  assert_int_equal(x, g_wrap_next);
  g_wrap_next++;
  /* Three new calls for every second call: the queue keeps growing. */
  if (x % 2 == 0 && g_wrap_queued < 20000) {
    for (int i = 0; i < 3; i++)
      assert_int_equal(braid_call_soon(r, soon_wrap_check,
                                       (void *)(intptr_t)g_wrap_queued++),
                       0);
  }
}

static void t_call_soon_ring_wrap(void **st) {
  (void)st;
  braid_reactor_t *r = new_reactor();
  g_wrap_next = 0;
  g_wrap_queued = 0;
  for (int i = 0; i < 50; i++)
    assert_int_equal(
        braid_call_soon(r, soon_wrap_check, (void *)(intptr_t)g_wrap_queued++),
        0);
  assert_int_equal(braid_reactor_run(r), 0);
  assert_true(g_wrap_queued >= 20000);
  assert_int_equal(g_wrap_next, g_wrap_queued);
  assert_int_equal(braid_reactor_destroy(r), 0);
}

/* A call-soon queued from a call-soon runs on the next iteration. */
typedef struct nested_ctx {
  int outer, inner;
  int inner_during_pass;
  int passes_before_inner;
} nested_ctx;

static void nested_inner(braid_reactor_t *r, void *arg) {
  (void)r;
  nested_ctx *c = arg;
  c->inner++;
}

static void nested_outer(braid_reactor_t *r, void *arg) {
  nested_ctx *c = arg;
  c->outer++;
  assert_int_equal(braid_call_soon(r, nested_inner, c), 0);
}

static void nested_after(braid_reactor_t *r, void *arg) {
  (void)r;
  nested_ctx *c = arg;
  /* Queued before the pass began, so runs in the same pass as outer and
   * after it: inner must not have run yet. */
  c->inner_during_pass = c->inner;
}

static void t_call_soon_nested_next_iteration(void **st) {
  (void)st;
  braid_reactor_t *r = new_reactor();
  nested_ctx c = {0};
  assert_int_equal(braid_call_soon(r, nested_outer, &c), 0);
  assert_int_equal(braid_call_soon(r, nested_after, &c), 0);
  /* First iteration: outer and after run; inner is queued for later, so
   * work is still pending. */
  assert_int_equal(braid_reactor_run_once(r, false), 1);
  assert_int_equal(c.outer, 1);
  assert_int_equal(c.inner, 0);
  assert_int_equal(c.inner_during_pass, 0);
  /* Second iteration runs inner and leaves nothing. */
  assert_int_equal(braid_reactor_run_once(r, false), 0);
  assert_int_equal(c.inner, 1);
  assert_int_equal(braid_reactor_destroy(r), 0);
}

/* A call-soon that requeues itself forever must not starve the loop:
 * run_once returns after one pass each time. */
static void requeue_forever(braid_reactor_t *r, void *arg) {
  int *n = arg;
  (*n)++;
  assert_int_equal(braid_call_soon(r, requeue_forever, arg), 0);
}

static void t_call_soon_requeue_one_per_pass(void **st) {
  (void)st;
  braid_reactor_t *r = new_reactor();
  int n = 0;
  assert_int_equal(braid_call_soon(r, requeue_forever, &n), 0);
  for (int i = 1; i <= 10; i++) {
    assert_int_equal(braid_reactor_run_once(r, true), 1);
    assert_int_equal(n, i);
  }
  /* Destroy discards the queued call: it never runs again. */
  assert_int_equal(braid_reactor_destroy(r), 0);
  assert_int_equal(n, 10);
}

static void noop_cb(braid_reactor_t *r, void *arg) {
  (void)r;
  int *n = arg;
  if (n != NULL)
    (*n)++;
}

static void t_run_once_values(void **st) {
  (void)st;
  braid_reactor_t *r = new_reactor();
  /* Nothing at all: 0, and block=true must not block. */
  assert_int_equal(braid_reactor_run_once(r, false), 0);
  uint64_t t0 = braid_hrtime();
  assert_int_equal(braid_reactor_run_once(r, true), 0);
  assert_true(braid_hrtime() - t0 < BRAID_MSEC(500));

  /* One call-soon: runs, nothing left. */
  int n = 0;
  assert_int_equal(braid_call_soon(r, noop_cb, &n), 0);
  assert_int_equal(braid_reactor_run_once(r, true), 0);
  assert_int_equal(n, 1);

  /* A hold keeps it alive. */
  braid_reactor_hold(r);
  assert_int_equal(braid_reactor_run_once(r, false), 1);
  assert_int_equal(braid_reactor_release(r), 0);
  assert_int_equal(braid_reactor_run_once(r, false), 0);
  assert_false(braid_reactor_running(r));
  assert_int_equal(braid_reactor_destroy(r), 0);
}

/* run_once(block=true) with only a hold waits until something wakes it:
 * here a call from another thread. */
typedef struct waker {
  braid_reactor_t *r;
  int ran;
  unsigned delay_ms;
} waker;

static void waker_cb(braid_reactor_t *r, void *arg) {
  waker *w = arg;
  assert_ptr_equal(r, w->r);
  w->ran++;
}

static void *waker_thread(void *arg) {
  waker *w = arg;
  sleep_ms(w->delay_ms);
  if (braid_call_from_thread(w->r, waker_cb, w) != 0)
    abort();
  return NULL;
}

static void t_run_once_blocks_until_woken(void **st) {
  (void)st;
  braid_reactor_t *r = new_reactor();
  braid_reactor_hold(r);
  waker w = {.r = r, .delay_ms = 30};
  pthread_t th;
  uint64_t t0 = braid_hrtime();
  assert_int_equal(pthread_create(&th, NULL, waker_thread, &w), 0);
  int rc = 0;
  /* The first iteration may end on the wakeup alone; loop until the call
   * ran, but every iteration must report the hold as pending work. */
  while (w.ran == 0) {
    rc = braid_reactor_run_once(r, true);
    assert_int_equal(rc, 1);
  }
  uint64_t dt = braid_hrtime() - t0;
  assert_int_equal(pthread_join(th, NULL), 0);
  assert_int_equal(w.ran, 1);
  /* It actually blocked rather than spinning back immediately. */
  assert_true(dt >= BRAID_MSEC(25));
  assert_true(dt < BRAID_SEC(5));
  assert_int_equal(braid_reactor_release(r), 0);
  assert_int_equal(braid_reactor_destroy(r), 0);
}

/* ------------------------------------------------------------------------
 * stop
 * ------------------------------------------------------------------------ */

typedef struct stop_ctx {
  int stop_rc, stop_again_rc;
  int after_stop_ran;
} stop_ctx;

static void stop_cb(braid_reactor_t *r, void *arg) {
  stop_ctx *c = arg;
  c->stop_rc = braid_reactor_stop(r);
  /* Already stopping: a second stop is refused. */
  c->stop_again_rc = braid_reactor_stop(r);
  assert_true(braid_reactor_running(r));
}

static void stop_sibling(braid_reactor_t *r, void *arg) {
  (void)r;
  ((stop_ctx *)arg)->after_stop_ran++;
}

static void timer_never(braid_timer_t *t, void *arg) {
  (void)t;
  (void)arg;
  fail_msg("timer must not fire");
}

static void t_stop_from_callback(void **st) {
  (void)st;
  braid_reactor_t *r = new_reactor();
  stop_ctx c = {0};
  /* The hold and the long timer would keep run() alive forever: only
   * stop() can end it. */
  braid_reactor_hold(r);
  braid_timer_t t = BRAID_TIMER_INIT;
  assert_int_equal(braid_timer_start(r, &t, BRAID_SEC(3600), timer_never, NULL),
                   0);
  assert_int_equal(braid_call_soon(r, stop_cb, &c), 0);
  assert_int_equal(braid_call_soon(r, stop_sibling, &c), 0);
  uint64_t t0 = braid_hrtime();
  assert_int_equal(braid_reactor_run(r), 0);
  assert_true(braid_hrtime() - t0 < BRAID_SEC(2));
  assert_int_equal(c.stop_rc, 0);
  assert_int_equal(c.stop_again_rc, BRAID_ENOTRUNNING);
  /* The current iteration finished: the call queued after stop_cb ran. */
  assert_int_equal(c.after_stop_ran, 1);
  assert_false(braid_reactor_running(r));
  /* After run() returned, stop is refused again. */
  assert_int_equal(braid_reactor_stop(r), BRAID_ENOTRUNNING);
  /* The timer is still pending; the reactor can run again. */
  assert_true(braid_timer_active(&t));
  assert_int_equal(braid_call_soon(r, stop_cb, &c), 0);
  assert_int_equal(braid_reactor_run(r), 0);
  assert_int_equal(c.stop_rc, 0);
  assert_int_equal(braid_reactor_release(r), 0);
  assert_int_equal(braid_timer_cancel(&t), 0);
  assert_int_equal(braid_reactor_destroy(r), 0);
}

static void t_stop_not_running(void **st) {
  (void)st;
  braid_reactor_t *r = new_reactor();
  assert_int_equal(braid_reactor_stop(r), BRAID_ENOTRUNNING);
  assert_int_equal(braid_reactor_destroy(r), 0);
}

static void stop_in_run_once(braid_reactor_t *r, void *arg) {
  (void)arg;
  assert_int_equal(braid_reactor_stop(r), 0);
}

static void after_hook_count(braid_reactor_t *r, void *arg) {
  (void)r;
  (*(int *)arg)++;
}

static void t_stop_inside_run_once(void **st) {
  (void)st;
  braid_reactor_t *r = new_reactor();
  int after = 0;
  assert_true(braid_reactor_add_hook(r, BRAID_AFTER_SHUTDOWN, after_hook_count,
                                     &after) > 0);
  assert_int_equal(braid_call_soon(r, stop_in_run_once, NULL), 0);
  assert_int_equal(braid_reactor_run_once(r, false), 0);
  /* stop inside run_once also runs the shutdown sequence. */
  assert_int_equal(after, 1);
  assert_false(braid_reactor_running(r));
  assert_int_equal(braid_reactor_destroy(r), 0);
}

/* ------------------------------------------------------------------------
 * Re-entrancy
 * ------------------------------------------------------------------------ */

typedef struct reent_ctx {
  braid_reactor_t *r;
  int run_rc, run_once_rc, destroy_rc, ran;
} reent_ctx;

static void reent_cb(braid_reactor_t *r, void *arg) {
  reent_ctx *c = arg;
  c->ran++;
  c->run_rc = braid_reactor_run(r);
  c->run_once_rc = braid_reactor_run_once(r, false);
  c->destroy_rc = braid_reactor_destroy(r);
}

static void reent_timer(braid_timer_t *t, void *arg) {
  (void)t;
  reent_cb(((reent_ctx *)arg)->r, arg);
}

static void t_reentrant_run_and_destroy(void **st) {
  (void)st;
  braid_reactor_t *r = new_reactor();
  reent_ctx c = {0};
  assert_int_equal(braid_call_soon(r, reent_cb, &c), 0);
  assert_int_equal(braid_reactor_run(r), 0);
  assert_int_equal(c.ran, 1);
  assert_int_equal(c.run_rc, BRAID_EBUSY);
  assert_int_equal(c.run_once_rc, BRAID_EBUSY);
  assert_int_equal(c.destroy_rc, BRAID_EBUSY);

  /* The same from a call-soon flushed outside run (no loop running): run
   * would nest inside the flush, and destroy would free the reactor under
   * the caller. Destroy must be refused there too. */
  reent_ctx c2 = {0};
  assert_int_equal(braid_call_soon(r, reent_cb, &c2), 0);
  assert_int_equal(braid_testing_flush(r, 1), 1);
  assert_int_equal(c2.destroy_rc, BRAID_EBUSY);

  /* And from a timer callback, run by the loop. */
  reent_ctx c3 = {.r = r};
  braid_timer_t t = BRAID_TIMER_INIT;
  assert_int_equal(braid_timer_start(r, &t, 0, reent_timer, &c3), 0);
  assert_int_equal(braid_reactor_run(r), 0);
  assert_int_equal(c3.ran, 1);
  assert_int_equal(c3.run_rc, BRAID_EBUSY);
  assert_int_equal(c3.run_once_rc, BRAID_EBUSY);
  assert_int_equal(c3.destroy_rc, BRAID_EBUSY);

  /* The reactor survived all of it. */
  int n = 0;
  assert_int_equal(braid_call_soon(r, noop_cb, &n), 0);
  assert_int_equal(braid_reactor_run(r), 0);
  assert_int_equal(n, 1);
  assert_int_equal(braid_reactor_destroy(r), 0);
}

/* ------------------------------------------------------------------------
 * hold / release
 * ------------------------------------------------------------------------ */

typedef struct hold_ctx {
  int step;
  int release_rc[3];
} hold_ctx;

static void hold_step(braid_reactor_t *r, void *arg) {
  hold_ctx *c = arg;
  c->release_rc[c->step] = braid_reactor_release(r);
  c->step++;
  /* After the second release there is no hold left: the third release
   * is refused, and with nothing queued run() returns. */
  if (c->step < 3)
    assert_int_equal(braid_call_soon(r, hold_step, c), 0);
}

static void t_hold_release(void **st) {
  (void)st;
  braid_reactor_t *r = new_reactor();
  assert_int_equal(braid_reactor_release(r), BRAID_EINVAL);
  braid_reactor_hold(r);
  braid_reactor_hold(r);
  hold_ctx c = {0};
  assert_int_equal(braid_call_soon(r, hold_step, &c), 0);
  assert_int_equal(braid_reactor_run(r), 0);
  assert_int_equal(c.step, 3);
  assert_int_equal(c.release_rc[0], 0);
  assert_int_equal(c.release_rc[1], 0);
  assert_int_equal(c.release_rc[2], BRAID_EINVAL);
  assert_int_equal(braid_reactor_release(r), BRAID_EINVAL);
  assert_int_equal(braid_reactor_destroy(r), 0);
}

/* A reactor held by a hold and released by a thread call (via the loop). */
static void release_from_thread_cb(braid_reactor_t *r, void *arg) {
  int *n = arg;
  (*n)++;
  assert_int_equal(braid_reactor_release(r), 0);
}

typedef struct rel_thread {
  braid_reactor_t *r;
  int *n;
} rel_thread;

static void *release_thread(void *arg) {
  rel_thread *rt = arg;
  sleep_ms(20);
  if (braid_call_from_thread(rt->r, release_from_thread_cb, rt->n) != 0)
    abort();
  return NULL;
}

static void t_hold_keeps_run_alive(void **st) {
  (void)st;
  braid_reactor_t *r = new_reactor();
  int n = 0;
  rel_thread rt = {r, &n};
  braid_reactor_hold(r);
  pthread_t th;
  uint64_t t0 = braid_hrtime();
  assert_int_equal(pthread_create(&th, NULL, release_thread, &rt), 0);
  assert_int_equal(braid_reactor_run(r), 0);
  uint64_t dt = braid_hrtime() - t0;
  assert_int_equal(pthread_join(th, NULL), 0);
  assert_int_equal(n, 1);
  assert_true(dt >= BRAID_MSEC(15));
  assert_int_equal(braid_reactor_destroy(r), 0);
}

/* ------------------------------------------------------------------------
 * Shutdown hooks
 * ------------------------------------------------------------------------ */

static trace *g_hooks;

static void hook_soon(braid_reactor_t *r, void *arg) {
  (void)r;
  trace_add(g_hooks, (int)(intptr_t)arg);
}

/* Each hook records its number; before-hooks also queue a call-soon that
 * records number + 100, and that call-soon queues another (number + 200)
 * to check that follow-ups of follow-ups still run before the after
 * hooks. */
static void hook_soon_chain(braid_reactor_t *r, void *arg) {
  int x = (int)(intptr_t)arg;
  trace_add(g_hooks, x);
  assert_int_equal(braid_call_soon(r, hook_soon, (void *)(intptr_t)(x + 100)),
                   0);
}

static void hook_before(braid_reactor_t *r, void *arg) {
  int x = (int)(intptr_t)arg;
  trace_add(g_hooks, x);
  /* The loop is still running during before-hooks. */
  assert_true(braid_reactor_running(r));
  assert_int_equal(
      braid_call_soon(r, hook_soon_chain, (void *)(intptr_t)(x + 100)), 0);
}

static void hook_after(braid_reactor_t *r, void *arg) {
  (void)r;
  trace_add(g_hooks, (int)(intptr_t)arg);
}

static void hook_stop(braid_reactor_t *r, void *arg) {
  (void)arg;
  assert_int_equal(braid_reactor_stop(r), 0);
}

static void t_hooks_order(void **st) {
  (void)st;
  braid_reactor_t *r = new_reactor();
  trace tr = {0};
  g_hooks = &tr;
  /* Interleave phases when adding: order within a phase is the order
   * added. */
  int a1 = braid_reactor_add_hook(r, BRAID_AFTER_SHUTDOWN, hook_after,
                                  (void *)(intptr_t)21);
  int b1 = braid_reactor_add_hook(r, BRAID_BEFORE_SHUTDOWN, hook_before,
                                  (void *)(intptr_t)1);
  int a2 = braid_reactor_add_hook(r, BRAID_AFTER_SHUTDOWN, hook_after,
                                  (void *)(intptr_t)22);
  int b2 = braid_reactor_add_hook(r, BRAID_BEFORE_SHUTDOWN, hook_before,
                                  (void *)(intptr_t)2);
  int b3 = braid_reactor_add_hook(r, BRAID_BEFORE_SHUTDOWN, hook_before,
                                  (void *)(intptr_t)3);
  assert_true(a1 > 0 && b1 > 0 && a2 > 0 && b2 > 0 && b3 > 0);
  /* Ids are distinct. */
  int ids[] = {a1, b1, a2, b2, b3};
  for (int i = 0; i < 5; i++)
    for (int j = i + 1; j < 5; j++)
      assert_int_not_equal(ids[i], ids[j]);
  /* remove_hook: b3 never runs. */
  assert_int_equal(braid_reactor_remove_hook(r, b3), 0);
  assert_int_equal(braid_reactor_remove_hook(r, b3), BRAID_EINVAL);

  /* No hook runs when run() ends because nothing is left. */
  assert_int_equal(braid_reactor_run(r), 0);
  assert_int_equal(tr.n, 0);

  braid_reactor_hold(r);
  assert_int_equal(braid_call_soon(r, hook_stop, NULL), 0);
  assert_int_equal(braid_reactor_run(r), 0);
  int want[] = {1, 2, 101, 102, 201, 202, 21, 22};
  assert_int_equal(tr.n, 8);
  for (int i = 0; i < 8; i++)
    assert_int_equal(tr.v[i], want[i]);
  assert_int_equal(braid_reactor_release(r), 0);
  assert_int_equal(braid_reactor_destroy(r), 0);
}

static void t_hooks_bad_args(void **st) {
  (void)st;
  braid_reactor_t *r = new_reactor();
  assert_int_equal(
      braid_reactor_add_hook(NULL, BRAID_BEFORE_SHUTDOWN, hook_after, NULL),
      BRAID_EINVAL);
  assert_int_equal(braid_reactor_add_hook(r, BRAID_BEFORE_SHUTDOWN, NULL, NULL),
                   BRAID_EINVAL);
  assert_int_equal(
      braid_reactor_add_hook(r, (braid_hook_phase)7, hook_after, NULL),
      BRAID_EINVAL);
  assert_int_equal(braid_reactor_remove_hook(r, 0), BRAID_EINVAL);
  assert_int_equal(braid_reactor_remove_hook(r, -1), BRAID_EINVAL);
  assert_int_equal(braid_reactor_remove_hook(r, 12345), BRAID_EINVAL);
  assert_int_equal(braid_reactor_remove_hook(NULL, 1), BRAID_EINVAL);
  /* Many hooks: the table grows and every id stays removable. */
  int ids[40];
  for (int i = 0; i < 40; i++) {
    ids[i] = braid_reactor_add_hook(r, BRAID_AFTER_SHUTDOWN, hook_after, NULL);
    assert_true(ids[i] > 0);
  }
  for (int i = 39; i >= 0; i -= 2)
    assert_int_equal(braid_reactor_remove_hook(r, ids[i]), 0);
  for (int i = 0; i < 40; i += 2)
    assert_int_equal(braid_reactor_remove_hook(r, ids[i]), 0);
  for (int i = 0; i < 40; i++)
    assert_int_equal(braid_reactor_remove_hook(r, ids[i]), BRAID_EINVAL);
  assert_int_equal(braid_reactor_destroy(r), 0);
}

/* A hook that removes itself (a one-shot hook) or adds another while the
 * hooks run: every other hook of the phase still runs exactly once, and
 * hooks added during the run wait for the next shutdown. */
typedef struct selfrm {
  trace tr;
  int id_a, id_c;
  braid_reactor_t *r;
} selfrm;

static selfrm *g_selfrm;

static void hook_late(braid_reactor_t *r, void *arg) {
  (void)r;
  trace_add(&g_selfrm->tr, (int)(intptr_t)arg);
}

static void hook_rm_self(braid_reactor_t *r, void *arg) {
  (void)arg;
  trace_add(&g_selfrm->tr, 1);
  assert_int_equal(braid_reactor_remove_hook(r, g_selfrm->id_a), 0);
  assert_true(braid_reactor_add_hook(r, BRAID_BEFORE_SHUTDOWN, hook_late,
                                     (void *)(intptr_t)9) > 0);
}

static void hook_two(braid_reactor_t *r, void *arg) {
  (void)r;
  (void)arg;
  trace_add(&g_selfrm->tr, 2);
}

static void hook_three(braid_reactor_t *r, void *arg) {
  (void)arg;
  trace_add(&g_selfrm->tr, 3);
  /* Removing itself as the last one must not disturb anything either. */
  assert_int_equal(braid_reactor_remove_hook(r, g_selfrm->id_c), 0);
}

static void t_hooks_remove_self_during_shutdown(void **st) {
  (void)st;
  braid_reactor_t *r = new_reactor();
  selfrm s = {.r = r};
  g_selfrm = &s;
  s.id_a = braid_reactor_add_hook(r, BRAID_BEFORE_SHUTDOWN, hook_rm_self, NULL);
  assert_true(braid_reactor_add_hook(r, BRAID_BEFORE_SHUTDOWN, hook_two, NULL) >
              0);
  s.id_c = braid_reactor_add_hook(r, BRAID_BEFORE_SHUTDOWN, hook_three, NULL);
  assert_true(s.id_a > 0 && s.id_c > 0);
  braid_reactor_hold(r);
  assert_int_equal(braid_call_soon(r, hook_stop, NULL), 0);
  assert_int_equal(braid_reactor_run(r), 0);
  assert_int_equal(s.tr.n, 3);
  assert_int_equal(s.tr.v[0], 1);
  assert_int_equal(s.tr.v[1], 2);
  assert_int_equal(s.tr.v[2], 3);
  /* Second shutdown: only the hooks still registered (two, late). */
  assert_int_equal(braid_call_soon(r, hook_stop, NULL), 0);
  assert_int_equal(braid_reactor_run(r), 0);
  assert_int_equal(s.tr.n, 5);
  assert_int_equal(s.tr.v[3], 2);
  assert_int_equal(s.tr.v[4], 9);
  assert_int_equal(braid_reactor_release(r), 0);
  assert_int_equal(braid_reactor_destroy(r), 0);
}

/* ------------------------------------------------------------------------
 * Log hook
 * ------------------------------------------------------------------------ */

static void t_log_hook(void **st) {
  (void)st;
  log_capture first = {0}, second = {0};
  braid_reactor_options o = {0};
  o.log_cb = capture_log;
  o.log_arg = &first;
  braid_reactor_t *r = NULL;
  assert_int_equal(braid_reactor_create(&r, &o), 0);
  braid_reactor_log(r, BRAID_LOG_WARN, "test", "value=%d name=%s", 42, "x");
  assert_int_equal(first.calls, 1);
  assert_int_equal(first.level, BRAID_LOG_WARN);
  assert_string_equal(first.domain, "test");
  assert_string_equal(first.msg, "value=42 name=x");

  /* Replacing the handler: the old one is not called any more, and every
   * level reaches the handler (filtering is the default handler's job). */
  braid_reactor_set_log(r, capture_log, &second);
  braid_reactor_log(r, BRAID_LOG_DEBUG, "dom", "debug %s", "line");
  assert_int_equal(first.calls, 1);
  assert_int_equal(second.calls, 1);
  assert_int_equal(second.level, BRAID_LOG_DEBUG);
  assert_string_equal(second.domain, "dom");
  assert_string_equal(second.msg, "debug line");

  /* A long message is truncated, not overflowed. */
  char big[3000];
  memset(big, 'a', sizeof big - 1);
  big[sizeof big - 1] = '\0';
  braid_reactor_log(r, BRAID_LOG_INFO, "dom", "%s", big);
  assert_int_equal(second.calls, 2);
  assert_true(strlen(second.msg) > 0 && strlen(second.msg) < sizeof big - 1);
  assert_int_equal(second.msg[0], 'a');

  /* NULL restores the default handler: ours is no longer called. */
  braid_reactor_set_log(r, NULL, NULL);
  braid_reactor_log(r, BRAID_LOG_DEBUG, "dom", "to the default handler");
  assert_int_equal(second.calls, 2);
  assert_int_equal(first.calls, 1);
  assert_int_equal(braid_reactor_destroy(r), 0);

  assert_string_equal(braid_log_level_name(BRAID_LOG_DEBUG), "DEBUG");
  assert_string_equal(braid_log_level_name(BRAID_LOG_INFO), "INFO");
  assert_string_equal(braid_log_level_name(BRAID_LOG_WARN), "WARN");
  assert_string_equal(braid_log_level_name(BRAID_LOG_ERROR), "ERROR");
}

/* ------------------------------------------------------------------------
 * Out of memory: braid's allocator is swapped for one that fails after a
 * budget of successful allocations (libuv's test-loop-oom.c approach).
 * Leaks on the failure paths show up in the valgrind and ASan runs.
 * ------------------------------------------------------------------------ */

static long g_budget = -1; /* allocations left; -1: unlimited */

static int oom_take(void) {
  if (g_budget < 0)
    return 1;
  if (g_budget == 0)
    return 0;
  g_budget--;
  return 1;
}
static void *oom_malloc(size_t n) {
  return oom_take() ? malloc(n) : NULL;
}
static void *oom_realloc(void *p, size_t n) {
  return oom_take() ? realloc(p, n) : NULL;
}
static void *oom_calloc(size_t c, size_t n) {
  return oom_take() ? calloc(c, n) : NULL;
}

static void oom_install(long budget) {
  g_budget = budget;
  assert_int_equal(
      braid_set_allocator(oom_malloc, oom_realloc, oom_calloc, free), 0);
}

static void oom_remove(void) {
  braid_reset_allocator();
  g_budget = -1;
}

static void t_oom_create(void **st) {
  (void)st;
  assert_int_equal(braid_set_allocator(NULL, realloc, calloc, free),
                   BRAID_EINVAL);
  /* Every allocation create makes fails in turn: each failure is clean,
   * and with enough budget it succeeds. */
  int succeeded = 0;
  for (long budget = 0; budget < 50 && !succeeded; budget++) {
    oom_install(budget);
    braid_reactor_t *r = (braid_reactor_t *)&budget;
    int rc = braid_reactor_create(&r, NULL);
    oom_remove();
    if (rc == 0) {
      succeeded = 1;
      assert_non_null(r);
      assert_int_equal(braid_reactor_destroy(r), 0);
    } else {
      assert_int_equal(rc, BRAID_ENOMEM);
      assert_null(r);
    }
  }
  assert_true(succeeded);
}

static void t_oom_queues(void **st) {
  (void)st;
  braid_reactor_t *r = new_reactor();
  int n = 0;
  oom_install(0);
  /* The first call-soon needs the queue: refused, nothing queued. */
  assert_int_equal(braid_call_soon(r, noop_cb, &n), BRAID_ENOMEM);
  assert_int_equal(braid_call_from_thread(r, noop_cb, &n), BRAID_ENOMEM);
  assert_int_equal(
      braid_reactor_add_hook(r, BRAID_AFTER_SHUTDOWN, after_hook_count, &n),
      BRAID_ENOMEM);
  /* With one allocation allowed, the queue fills to its first capacity,
   * then refuses; everything accepted still runs, in order. */
  g_budget = 1;
  int accepted = 0, rc;
  while ((rc = braid_call_soon(r, noop_cb, &n)) == 0)
    accepted++;
  assert_int_equal(rc, BRAID_ENOMEM);
  assert_true(accepted > 0);
  oom_remove();
  assert_int_equal(braid_reactor_run(r), 0);
  assert_int_equal(n, accepted);
  assert_int_equal(braid_reactor_destroy(r), 0);
}

/* ------------------------------------------------------------------------
 * Errors
 * ------------------------------------------------------------------------ */

typedef struct err_row {
  int code;
  const char *name;
  const char *msg;
} err_row;

static const err_row err_rows[] = {
#define ROW(name, val, msg) {val, #name, msg},
    BRAID_ERRNO_MAP(ROW)
#undef ROW
};

static void t_errors(void **st) {
  (void)st;
  size_t n = sizeof err_rows / sizeof err_rows[0];
  assert_int_equal(n, 41);
  for (size_t i = 0; i < n; i++) {
    const err_row *e = &err_rows[i];
    /* Codes are negative, dense from -1 and in table order, so that they
     * can never be confused with a success value or a byte count. */
    assert_int_equal(e->code, -(int)(i + 1));
    assert_string_equal(braid_err_name(e->code), e->name);
    assert_string_equal(braid_strerror(e->code), e->msg);
    assert_true(strlen(braid_strerror(e->code)) > 0);
    assert_string_not_equal(braid_strerror(e->code), "unknown error");
    for (size_t j = 0; j < i; j++) {
      assert_string_not_equal(braid_err_name(e->code),
                              braid_err_name(err_rows[j].code));
      assert_string_not_equal(braid_strerror(e->code),
                              braid_strerror(err_rows[j].code));
    }
  }
  /* Spot checks against the documented names, independent of the table. */
  assert_string_equal(braid_err_name(BRAID_ECONNREFUSED), "ECONNREFUSED");
  assert_string_equal(braid_err_name(BRAID_EINVAL), "EINVAL");
  assert_string_equal(braid_err_name(BRAID_EUNKNOWN), "EUNKNOWN");
  assert_string_equal(braid_strerror(BRAID_ENOMEM), "out of memory");
  assert_string_equal(braid_strerror(BRAID_EOF), "end of file");

  int unknown[] = {0, 1, 42, -42, -1000, INT_MIN, INT_MAX};
  for (size_t i = 0; i < sizeof unknown / sizeof unknown[0]; i++) {
    assert_string_equal(braid_strerror(unknown[i]), "unknown error");
    assert_string_equal(braid_err_name(unknown[i]), "UNKNOWN");
  }
}

/* ---- teardown hooks (braid_teardown_add) -------------------------------- */

typedef struct td_rec {
  braid_teardown_t td;
  int *order; /* where to record the call */
  int *n;
  int id;
  int heap;              /* free itself in the callback */
  struct td_rec *remove; /* remove this one from the callback */
  struct td_rec *add;    /* add this one from the callback */
  braid_reactor_t *r;
} td_rec;

static void td_cb(braid_teardown_t *td) {
  td_rec *x = BRAID_CONTAINER_OF(td, td_rec, td);
  x->order[(*x->n)++] = x->id;
  if (x->remove != NULL)
    braid_teardown_remove(&x->remove->td);
  if (x->add != NULL)
    braid_teardown_add(x->r, &x->add->td, td_cb);
  /* Unregistered before the call: removing itself is a no-op. */
  braid_teardown_remove(td);
  if (x->heap)
    free(x);
}

static void t_teardown_hooks(void **state) {
  (void)state;
  braid_reactor_t *r;
  assert_int_equal(braid_reactor_create(&r, NULL), 0);
  int order[8] = {0}, n = 0;
  td_rec a = {.order = order, .n = &n, .id = 1, .r = r};
  td_rec b = {.order = order, .n = &n, .id = 2, .r = r};
  td_rec c = {.order = order, .n = &n, .id = 3, .r = r};
  td_rec d = {.order = order, .n = &n, .id = 4, .r = r};
  td_rec late = {.order = order, .n = &n, .id = 5, .r = r};
  td_rec never = {.order = order, .n = &n, .id = 6, .r = r};
  td_rec *h = calloc(1, sizeof *h);
  assert_non_null(h);
  h->order = order, h->n = &n, h->id = 7, h->heap = 1, h->r = r;
  /* Removing one that is not registered (zero-filled) is a no-op. */
  td_rec z;
  memset(&z, 0, sizeof z);
  braid_teardown_remove(&z.td);
  braid_teardown_remove(NULL);
  braid_teardown_add(NULL, &z.td, td_cb); /* ignored */
  braid_teardown_add(r, &a.td, td_cb);
  braid_teardown_add(r, &b.td, td_cb);
  braid_teardown_add(r, &never.td, td_cb);
  braid_teardown_add(r, &c.td, td_cb);
  braid_teardown_add(r, &h->td, td_cb);
  braid_teardown_add(r, &d.td, td_cb);
  braid_teardown_remove(&never.td);
  braid_teardown_remove(&never.td); /* twice: still a no-op */
  b.remove = &d; /* a hook removes a later one: it never runs */
  c.add = &late; /* a hook added during teardown runs too */
  /* Running the reactor does not call them. */
  assert_int_equal(braid_reactor_run(r), 0);
  assert_int_equal(n, 0);
  assert_int_equal(braid_reactor_destroy(r), 0);
  assert_int_equal(n, 5);
  assert_int_equal(order[0], 1);
  assert_int_equal(order[1], 2);
  assert_int_equal(order[2], 3);
  assert_int_equal(order[3], 7); /* freed itself (ASan checks) */
  assert_int_equal(order[4], 5);
  /* Run hooks are unregistered: removing them afterwards is harmless. */
  braid_teardown_remove(&a.td);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(t_create_destroy),
      cmocka_unit_test(t_create_null_args),
      cmocka_unit_test(t_create_unknown_poller_option),
      cmocka_unit_test(t_create_unknown_poller_env),
      cmocka_unit_test(t_run_empty_returns),
      cmocka_unit_test(t_call_soon_fifo),
      cmocka_unit_test(t_call_soon_ring_wrap),
      cmocka_unit_test(t_call_soon_nested_next_iteration),
      cmocka_unit_test(t_call_soon_requeue_one_per_pass),
      cmocka_unit_test(t_run_once_values),
      cmocka_unit_test(t_run_once_blocks_until_woken),
      cmocka_unit_test(t_stop_from_callback),
      cmocka_unit_test(t_stop_not_running),
      cmocka_unit_test(t_stop_inside_run_once),
      cmocka_unit_test(t_reentrant_run_and_destroy),
      cmocka_unit_test(t_hold_release),
      cmocka_unit_test(t_hold_keeps_run_alive),
      cmocka_unit_test(t_hooks_order),
      cmocka_unit_test(t_hooks_bad_args),
      cmocka_unit_test(t_hooks_remove_self_during_shutdown),
      cmocka_unit_test(t_log_hook),
      cmocka_unit_test(t_oom_create),
      cmocka_unit_test(t_oom_queues),
      cmocka_unit_test(t_errors),
      cmocka_unit_test(t_teardown_hooks),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
