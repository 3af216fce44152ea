/* addTimeout, deferLater, DeferredList, gatherResults, race, LoopingCall:
 * all on the deterministic clock. */
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
#include "core/deferred_internal.h"

static int log_errors;
static void cap_log(void *arg, braid_log_level level, const char *domain,
                    const char *msg) {
  (void)arg;
  (void)msg;
  if (level == BRAID_LOG_ERROR && strcmp(domain, "deferred") == 0)
    log_errors++;
}

static braid_reactor_t *mk(void) {
  braid_reactor_t *r;
  assert_int_equal(braid_testing_reactor_create(&r), 0);
  braid_reactor_set_log(r, cap_log, NULL);
  log_errors = 0;
  return r;
}

static void done(braid_reactor_t *r) {
  braid_testing_flush(r, 10);
  assert_int_equal(r->defer != NULL ? r->defer->deferreds.live : 0, 0);
  assert_int_equal(r->defer != NULL ? r->defer->aux.live : 0, 0);
  assert_int_equal(braid_reactor_destroy(r), 0);
  assert_int_equal(log_errors, 0);
}

/* Records the last result of a deferred: value or (domain, code). */
typedef struct seen {
  int called;
  int ok;
  void *value;
  int code;
  char msg[256];
  uint64_t at;
} seen;

static void record(braid_deferred_t d, braid_result_t *res, void *arg) {
  seen *s = arg;
  s->called++;
  s->ok = braid_result_ok(res);
  s->at = braid_reactor_now(braid_deferred_reactor(d));
  if (s->ok) {
    s->value = braid_result_value(res);
  } else {
    s->code = braid_failure_code(braid_result_failure(res));
    braid_failure_format(braid_result_failure(res), s->msg, sizeof s->msg);
    braid_result_set(res, NULL, NULL); /* handled */
  }
}

static braid_deferred_t watch(braid_deferred_t d, seen *s) {
  memset(s, 0, sizeof *s);
  assert_int_equal(braid_deferred_add_both(d, record, s), 0);
  return d;
}

/* ---- addTimeout ---------------------------------------------------------- */

static void t_timeout(void **st) {
  (void)st;
  braid_reactor_t *r = mk();
  braid_deferred_t d;
  seen s;

  /* Times out: ETIMEDOUT whose cause is the cancel. */
  braid_deferred_new(r, &d);
  assert_int_equal(braid_deferred_add_timeout(d, BRAID_MSEC(100), NULL, NULL),
                   0);
  watch(d, &s);
  braid_clock_advance(r, BRAID_MSEC(99));
  assert_int_equal(s.called, 0);
  braid_clock_advance(r, BRAID_MSEC(1));
  assert_int_equal(s.called, 1);
  assert_int_equal(s.code, BRAID_ETIMEDOUT);
  assert_int_equal(s.at, BRAID_MSEC(100));
  assert_non_null(strstr(s.msg, "caused by: deferred cancelled"));
  assert_int_equal(braid_reactor_timer_count(r), 0);

  /* Fires in time: result untouched, timer stopped. */
  braid_deferred_new(r, &d);
  braid_deferred_add_timeout(d, BRAID_MSEC(100), NULL, NULL);
  watch(d, &s);
  braid_clock_advance(r, BRAID_MSEC(50));
  braid_deferred_callback(d, (void *)5, NULL);
  assert_int_equal(s.called, 1);
  assert_ptr_equal(s.value, (void *)5);
  assert_int_equal(braid_reactor_timer_count(r), 0);

  /* Cancelled by the user, not the timer: stays ECANCELED. */
  braid_deferred_new(r, &d);
  braid_deferred_add_timeout(d, BRAID_MSEC(100), NULL, NULL);
  watch(d, &s);
  braid_deferred_cancel(d);
  assert_int_equal(s.code, BRAID_ECANCELED);
  assert_int_equal(braid_reactor_timer_count(r), 0);

  /* A failure of its own before the timeout is not converted. */
  braid_deferred_new(r, &d);
  braid_deferred_add_timeout(d, BRAID_MSEC(100), NULL, NULL);
  watch(d, &s);
  braid_deferred_errback(d, braid_failure_from_code(r, BRAID_ECANCELED));
  assert_int_equal(s.code, BRAID_ECANCELED);

  /* Already fired: the timeout step runs at once; no timer left. */
  braid_deferred_succeed(r, (void *)1, NULL, &d);
  braid_deferred_add_timeout(d, BRAID_MSEC(100), NULL, NULL);
  assert_int_equal(braid_reactor_timer_count(r), 0);
  done(r);
}

/* The timeout's message gives the duration in the unit a person reads,
 * not a count of nanoseconds. */
static void t_timeout_message(void **st) {
  (void)st;
  static const struct {
    uint64_t ns;
    const char *text;
  } cases[] = {
      {BRAID_MSEC(1500), "deferred timed out after 1.5 s"},
      {BRAID_SEC(30), "deferred timed out after 30 s"},
      {BRAID_MSEC(250), "deferred timed out after 250 ms"},
      {1234567, "deferred timed out after 1.235 ms"},
      {BRAID_USEC(20), "deferred timed out after 20 us"},
      {1001, "deferred timed out after 1.001 us"},
      {7, "deferred timed out after 7 ns"},
  };
  braid_reactor_t *r = mk();
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    braid_deferred_t d;
    seen s;
    braid_deferred_new(r, &d);
    assert_int_equal(braid_deferred_add_timeout(d, cases[i].ns, NULL, NULL), 0);
    watch(d, &s);
    braid_clock_advance(r, cases[i].ns);
    assert_int_equal(s.code, BRAID_ETIMEDOUT);
    /* The formatted failure is the message, " [braid -8]", then its cause:
     * the message must be exactly the text. */
    char want[64];
    snprintf(want, sizeof want, "%s [", cases[i].text);
    if (strncmp(s.msg, want, strlen(want)) != 0)
      fail_msg("%llu ns: got \"%s\", want \"%s\"",
               (unsigned long long)cases[i].ns, s.msg, cases[i].text);
  }
  done(r);
}

/* A failure nobody handled is an ERROR line when the reactor is destroyed,
 * even one whose cause chain holds a cancellation: only the cancellations
 * destroy itself makes are expected (DEBUG). */
typedef struct levels {
  int errors, debugs;
  char last_error[512];
} levels;

static void level_log(void *arg, braid_log_level level, const char *domain,
                      const char *msg) {
  levels *lv = arg;
  if (strcmp(domain, "deferred") != 0)
    return;
  if (level == BRAID_LOG_ERROR) {
    lv->errors++;
    snprintf(lv->last_error, sizeof lv->last_error, "%s", msg);
  } else if (level == BRAID_LOG_DEBUG) {
    lv->debugs++;
  }
}

static void t_unhandled_at_destroy(void **st) {
  (void)st;
  braid_reactor_t *r;
  levels lv;
  memset(&lv, 0, sizeof lv);
  assert_int_equal(braid_testing_reactor_create(&r), 0);
  braid_reactor_set_log(r, level_log, &lv);
  /* Timed out during the run, held by a reference, never handled. */
  braid_deferred_t d;
  assert_int_equal(braid_deferred_new(r, &d), 0);
  assert_int_equal(braid_deferred_add_timeout(d, BRAID_MSEC(10), NULL, NULL),
                   0);
  braid_deferred_ref(d);
  braid_clock_advance(r, BRAID_MSEC(10));
  assert_true(
      braid_result_trap(braid_deferred_result(d), NULL, BRAID_ETIMEDOUT));
  /* Cancelled by the user during the run, held, never handled. */
  braid_deferred_t c;
  assert_int_equal(braid_deferred_new(r, &c), 0);
  braid_deferred_ref(c);
  braid_deferred_cancel(c);
  /* Not fired: destroy cancels it; that one is expected. */
  braid_deferred_t p;
  assert_int_equal(braid_deferred_new(r, &p), 0);
  braid_testing_flush(r, 10);
  assert_int_equal(lv.errors, 0);
  assert_int_equal(braid_reactor_destroy(r), 0);
  assert_int_equal(lv.errors, 2);
  assert_int_equal(lv.debugs, 1);
}

static void on_timeout_custom(braid_deferred_t d, braid_result_t *res,
                              void *arg) {
  (void)d;
  braid_result_set(res, arg, NULL);
}

static void t_timeout_custom(void **st) {
  (void)st;
  braid_reactor_t *r = mk();
  braid_deferred_t d;
  seen s;
  braid_deferred_new(r, &d);
  braid_deferred_add_timeout(d, BRAID_SEC(1), on_timeout_custom, (void *)9);
  watch(d, &s);
  braid_clock_advance(r, BRAID_SEC(2));
  assert_true(s.ok);
  assert_ptr_equal(s.value, (void *)9);
  assert_int_equal(s.at, BRAID_SEC(1));
  done(r);
}

/* ---- deferLater ---------------------------------------------------------- */

static int later_runs;
static void later_fn(braid_deferred_t d, braid_result_t *res, void *arg) {
  (void)d;
  later_runs++;
  braid_result_set(res, arg, NULL);
}

static void t_defer_later(void **st) {
  (void)st;
  braid_reactor_t *r = mk();
  braid_deferred_t d;
  seen s;
  later_runs = 0;
  assert_int_equal(
      braid_defer_later(r, BRAID_MSEC(30), later_fn, (void *)4, &d), 0);
  watch(d, &s);
  braid_clock_advance(r, BRAID_MSEC(29));
  assert_int_equal(s.called, 0);
  braid_clock_advance(r, BRAID_MSEC(1));
  assert_int_equal(later_runs, 1);
  assert_ptr_equal(s.value, (void *)4);
  assert_int_equal(s.at, BRAID_MSEC(30));

  /* Cancelled: the timer goes, fn never runs. */
  braid_defer_later(r, BRAID_MSEC(30), later_fn, NULL, &d);
  watch(d, &s);
  assert_int_equal(braid_reactor_timer_count(r), 1);
  braid_deferred_cancel(d);
  assert_int_equal(s.code, BRAID_ECANCELED);
  assert_int_equal(braid_reactor_timer_count(r), 0);
  braid_clock_advance(r, BRAID_SEC(1));
  assert_int_equal(later_runs, 1);

  /* No fn: plain NULL. */
  braid_defer_later(r, 0, NULL, NULL, &d);
  watch(d, &s);
  braid_clock_advance(r, 0);
  assert_int_equal(s.called, 1);
  assert_true(s.ok);
  done(r);
}

/* ---- DeferredList / gather / race -----------------------------------------
 */

static int dtors;
static void count_dtor(void *p) {
  (void)p;
  dtors++;
}

static void mkn(braid_reactor_t *r, braid_deferred_t *ds, size_t n) {
  for (size_t i = 0; i < n; i++)
    assert_int_equal(braid_deferred_new(r, &ds[i]), 0);
}

static void t_list_all(void **st) {
  (void)st;
  braid_reactor_t *r = mk();
  braid_deferred_t ds[3], l;
  seen s;
  dtors = 0;
  mkn(r, ds, 3);
  /* One child fired before the list is made. */
  braid_deferred_callback(ds[1], (void *)11, count_dtor);
  assert_int_equal(braid_deferred_list(r, ds, 3, 0, &l), 0);
  braid_deferred_ref(l);
  braid_deferred_errback(ds[2], braid_failure_from_code(r, BRAID_EIO));
  assert_false(braid_deferred_called(l));
  braid_deferred_callback(ds[0], (void *)10, count_dtor);
  assert_true(braid_deferred_called(l));
  const braid_list_result *lr = braid_result_value(braid_deferred_result(l));
  assert_int_equal(lr->count, 3);
  assert_true(lr->items[0].ok);
  assert_ptr_equal(lr->items[0].value, (void *)10);
  assert_ptr_equal(lr->items[1].value, (void *)11);
  assert_false(lr->items[2].ok);
  assert_int_equal(braid_failure_code(lr->items[2].failure), BRAID_EIO);
  /* Values moved: children's chains continue with NULL. */
  assert_null(braid_result_value(braid_deferred_result(ds[0])));
  assert_int_equal(dtors, 0);
  /* Without CONSUME_ERRORS, the child keeps its failure: handle it. */
  watch(ds[2], &s);
  braid_deferred_unref(l);
  braid_testing_flush(r, 10);
  assert_int_equal(dtors, 2); /* freed with the list result */

  /* Empty list fires at once. */
  assert_int_equal(braid_deferred_list(r, NULL, 0, 0, &l), 0);
  watch(l, &s);
  assert_int_equal(s.called, 1);
  assert_int_equal(((braid_list_result *)s.value)->count, 0);
  done(r);
}

/* Every flag combination over no children fires at once, with a result of
 * no items (count == 0, index == 0); the block still has room for one zero
 * item, so a reader that trusted "count == 1" reads nothing past it. */
static void t_list_empty(void **st) {
  (void)st;
  braid_reactor_t *r = mk();
  braid_deferred_t l;
  seen s;
  for (unsigned flags = 0; flags < 8; flags++) {
    assert_int_equal(braid_deferred_list(r, NULL, 0, flags, &l), 0);
    watch(l, &s);
    assert_int_equal(s.called, 1);
    assert_true(s.ok);
    const braid_list_result *lr = s.value;
    assert_non_null(lr);
    assert_int_equal(lr->count, 0);
    assert_int_equal(lr->index, 0);
    /* The old header promised one item for fire-on-one-callback. */
    assert_false(lr->items[0].ok);
    assert_null(lr->items[0].value);
    assert_null(lr->items[0].failure);
  }
  for (int consume = 0; consume < 2; consume++) {
    assert_int_equal(braid_gather_results(r, NULL, 0, consume, &l), 0);
    watch(l, &s);
    assert_int_equal(s.called, 1);
    assert_int_equal(((const braid_list_result *)s.value)->count, 0);
  }
  assert_int_equal(braid_race(r, NULL, 0, &l), BRAID_EINVAL);
  done(r);
}

static void t_list_fire_on_one(void **st) {
  (void)st;
  braid_reactor_t *r = mk();
  braid_deferred_t ds[3], l;
  seen s;
  size_t idx;
  dtors = 0;

  /* fireOnOneCallback: first success, with its index. */
  mkn(r, ds, 3);
  braid_deferred_list(r, ds, 3, BRAID_LIST_FIRE_ON_ONE_CALLBACK, &l);
  braid_deferred_ref(l);
  braid_deferred_errback(ds[0], braid_failure_from_code(r, BRAID_EIO));
  braid_deferred_add_errback(ds[0], record, &s); /* handle it */
  assert_false(braid_deferred_called(l));
  braid_deferred_callback(ds[2], (void *)22, count_dtor);
  const braid_list_result *lr = braid_result_value(braid_deferred_result(l));
  assert_int_equal(lr->count, 1);
  idx = lr->index;
  assert_int_equal(idx, 2);
  assert_ptr_equal(lr->items[0].value, (void *)22);
  /* A later child keeps its own value. */
  braid_deferred_callback(ds[1], (void *)21, count_dtor);
  braid_deferred_unref(l);
  braid_testing_flush(r, 10);
  assert_int_equal(dtors, 2);

  /* fireOnOneErrback + consumeErrors: FirstError-like failure. */
  mkn(r, ds, 3);
  braid_deferred_list(
      r, ds, 3, BRAID_LIST_FIRE_ON_ONE_ERRBACK | BRAID_LIST_CONSUME_ERRORS, &l);
  watch(l, &s);
  braid_deferred_callback(ds[0], (void *)1, NULL);
  braid_deferred_errback(ds[1], braid_failure_new(r, "db", 7, NULL, "boom"));
  assert_int_equal(s.called, 1);
  assert_int_equal(s.code, 7);
  assert_non_null(strstr(s.msg, "(item 1)"));
  assert_non_null(strstr(s.msg, "caused by: boom [db 7]"));
  /* Consumed: the child's chain now holds NULL, nothing is logged. */
  assert_true(braid_result_ok(braid_deferred_result(ds[1])));
  braid_deferred_errback(ds[2], braid_failure_from_code(r, BRAID_EIO));
  done(r);
}

static int cancels;
static void count_cancel(braid_deferred_t d, void *arg) {
  (void)d;
  (void)arg;
  cancels++;
}

static void t_list_cancel(void **st) {
  (void)st;
  braid_reactor_t *r = mk();
  braid_deferred_t ds[3], l;
  seen s;
  cancels = 0;
  for (int i = 0; i < 3; i++)
    braid_deferred_new_cancellable(r, count_cancel, NULL, &ds[i]);
  braid_deferred_callback(ds[0], (void *)1, NULL);
  braid_deferred_list(r, ds, 3, BRAID_LIST_CONSUME_ERRORS, &l);
  watch(l, &s);
  braid_deferred_cancel(l);
  assert_int_equal(cancels, 2); /* only the two that had not fired */
  assert_int_equal(s.called, 1);
  assert_true(s.ok); /* the list of results, two of them cancellations */
  done(r);
}

static void t_gather(void **st) {
  (void)st;
  braid_reactor_t *r = mk();
  braid_deferred_t ds[4], g;
  seen s;
  mkn(r, ds, 4);
  braid_gather_results(r, ds, 4, false, &g);
  braid_deferred_ref(g);
  for (int i = 3; i >= 0; i--)
    braid_deferred_callback(ds[i], (void *)(intptr_t)(i * 10), NULL);
  const braid_list_result *lr = braid_result_value(braid_deferred_result(g));
  assert_int_equal(lr->count, 4);
  for (int i = 0; i < 4; i++)
    assert_ptr_equal(lr->items[i].value, (void *)(intptr_t)(i * 10));
  braid_deferred_unref(g);

  mkn(r, ds, 2);
  braid_gather_results(r, ds, 2, true, &g);
  watch(g, &s);
  braid_deferred_errback(ds[1], braid_failure_from_code(r, BRAID_EPIPE));
  assert_int_equal(s.code, BRAID_EPIPE);
  braid_deferred_callback(ds[0], (void *)1, count_dtor);
  done(r);
}

static void t_race(void **st) {
  (void)st;
  braid_reactor_t *r = mk();
  braid_deferred_t ds[3], w;
  seen s;
  cancels = 0;
  dtors = 0;
  for (int i = 0; i < 3; i++)
    braid_deferred_new_cancellable(r, count_cancel, NULL, &ds[i]);
  assert_int_equal(braid_race(r, ds, 3, &w), 0);
  braid_deferred_ref(w);
  braid_deferred_errback(ds[0], braid_failure_from_code(r, BRAID_EIO));
  assert_false(braid_deferred_called(w));
  braid_deferred_callback(ds[1], (void *)5, count_dtor);
  const braid_list_result *lr = braid_result_value(braid_deferred_result(w));
  assert_int_equal(lr->index, 1);
  assert_ptr_equal(lr->items[0].value, (void *)5);
  assert_int_equal(cancels, 1); /* ds[2], the only one still pending */
  braid_deferred_unref(w);
  braid_testing_flush(r, 10);
  assert_int_equal(dtors, 1);

  /* All fail: failure with the first failure as cause. */
  mkn(r, ds, 2);
  braid_race(r, ds, 2, &w);
  watch(w, &s);
  braid_deferred_errback(ds[1], braid_failure_new(r, "x", 3, NULL, "first"));
  braid_deferred_errback(ds[0], braid_failure_new(r, "x", 4, NULL, "second"));
  assert_int_equal(s.code, 3);
  assert_non_null(strstr(s.msg, "all 2 deferreds in race failed"));

  /* Cancelling the race cancels every child. */
  cancels = 0;
  for (int i = 0; i < 3; i++)
    braid_deferred_new_cancellable(r, count_cancel, NULL, &ds[i]);
  braid_race(r, ds, 3, &w);
  watch(w, &s);
  braid_deferred_cancel(w);
  assert_int_equal(cancels, 3);
  assert_int_equal(s.code, BRAID_ECANCELED);
  assert_int_equal(braid_race(r, ds, 0, &w), BRAID_EINVAL);
  done(r);
}

/* ---- LoopingCall ----------------------------------------------------------
 */

typedef struct lcrec {
  int calls;
  uint64_t at[64];
  uint64_t count[64];
  uint64_t busy; /* advance the clock by this inside the call */
  braid_reactor_t *r;
  braid_deferred_t wait; /* returned to the loop when set */
  int fail_at;
} lcrec;

static braid_deferred_t lc_fn(braid_looping_call_t *lc, uint64_t count,
                              void *arg) {
  lcrec *x = arg;
  (void)lc;
  int i = x->calls++;
  if (i < 64) {
    x->at[i] = braid_reactor_now(x->r);
    x->count[i] = count;
  }
  if (x->fail_at && x->calls == x->fail_at) {
    braid_deferred_t d;
    braid_deferred_fail(x->r, braid_failure_new(x->r, "job", 1, NULL, "bad"),
                        &d);
    return d;
  }
  if (!braid_deferred_is_none(x->wait)) {
    braid_deferred_t w = x->wait;
    x->wait = braid_deferred_none();
    return w;
  }
  return braid_deferred_none();
}

static void t_looping(void **st) {
  (void)st;
  braid_reactor_t *r = mk();
  braid_looping_call_t lc = BRAID_LOOPING_CALL_INIT;
  lcrec x;
  memset(&x, 0, sizeof x);
  x.r = r;
  braid_deferred_t d;
  seen s;
  assert_int_equal(
      braid_looping_call_start(r, &lc, BRAID_MSEC(10), true, lc_fn, &x, &d), 0);
  watch(d, &s);
  assert_int_equal(x.calls, 1);
  assert_int_equal(x.count[0], 1);
  assert_int_equal(braid_looping_call_start(r, &lc, 1, true, lc_fn, &x, NULL),
                   BRAID_EBUSY);
  braid_clock_advance(r, BRAID_MSEC(30));
  assert_int_equal(x.calls, 4);
  assert_int_equal(x.at[3], BRAID_MSEC(30));
  /* Fall behind: jump 35 ms. One call, at 65, reporting 3 slots elapsed
   * (40, 50, 60 were missed), and the grid is kept: next call at 70. */
  r->now += BRAID_MSEC(35); /* a stall: time moves, timers did not run */
  braid_clock_advance(r, 0);
  assert_int_equal(x.calls, 5);
  assert_int_equal(x.at[4], BRAID_MSEC(65));
  assert_int_equal(x.count[4], 3);
  braid_clock_advance(r, BRAID_MSEC(5));
  assert_int_equal(x.calls, 6);
  assert_int_equal(x.at[5], BRAID_MSEC(70));
  assert_int_equal(x.count[5], 1);

  /* A call that returns a deferred: the loop waits for it. */
  braid_deferred_new(r, &x.wait);
  braid_deferred_t w = x.wait;
  braid_clock_advance(r, BRAID_MSEC(10)); /* call 7 at 80 */
  assert_int_equal(x.calls, 7);
  braid_clock_advance(r, BRAID_MSEC(25)); /* nothing: waiting */
  assert_int_equal(x.calls, 7);
  braid_deferred_callback(w, NULL, NULL); /* at 105: next at 110 */
  braid_clock_advance(r, BRAID_MSEC(5));
  assert_int_equal(x.calls, 8);
  assert_int_equal(x.at[7], BRAID_MSEC(110));
  assert_int_equal(x.count[7], 3); /* 90, 100 skipped */

  /* Stop: the deferred fires with lc. */
  assert_int_equal(braid_looping_call_stop(&lc), 0);
  assert_int_equal(s.called, 1);
  assert_ptr_equal(s.value, &lc);
  assert_int_equal(braid_looping_call_stop(&lc), BRAID_EINVAL);
  braid_clock_advance(r, BRAID_SEC(1));
  assert_int_equal(x.calls, 8);
  done(r);
}

static void t_looping_fail_and_cancel(void **st) {
  (void)st;
  braid_reactor_t *r = mk();
  braid_looping_call_t lc = BRAID_LOOPING_CALL_INIT;
  lcrec x;
  braid_deferred_t d;
  seen s;
  memset(&x, 0, sizeof x);
  x.r = r;
  x.fail_at = 3;
  braid_looping_call_start(r, &lc, BRAID_SEC(1), false, lc_fn, &x, &d);
  watch(d, &s);
  assert_int_equal(x.calls, 0);
  braid_clock_advance(r, BRAID_SEC(10));
  assert_int_equal(x.calls, 3);
  assert_int_equal(x.at[0], BRAID_SEC(1));
  assert_int_equal(s.code, 1);
  assert_false(braid_looping_call_running(&lc));

  /* Cancelling its deferred stops the loop. */
  memset(&x, 0, sizeof x);
  x.r = r;
  braid_looping_call_start(r, &lc, BRAID_SEC(1), true, lc_fn, &x, &d);
  watch(d, &s);
  braid_deferred_cancel(d);
  assert_int_equal(s.code, BRAID_ECANCELED);
  assert_false(braid_looping_call_running(&lc));
  braid_clock_advance(r, BRAID_SEC(10));
  assert_int_equal(x.calls, 1);

  /* Stop while a call's deferred is outstanding: fires when it does. */
  memset(&x, 0, sizeof x);
  x.r = r;
  braid_deferred_new(r, &x.wait);
  braid_deferred_t w = x.wait;
  braid_looping_call_start(r, &lc, BRAID_SEC(1), true, lc_fn, &x, &d);
  watch(d, &s);
  braid_looping_call_stop(&lc);
  assert_int_equal(s.called, 0);
  braid_deferred_callback(w, NULL, NULL);
  assert_int_equal(s.called, 1);
  assert_ptr_equal(s.value, &lc);
  done(r);
}

/* Teardown with everything pending: timers in aux objects, lists, a loop. */
static void t_teardown_everything(void **st) {
  (void)st;
  braid_reactor_t *r = mk();
  braid_deferred_t ds[3], d;
  braid_looping_call_t lc = BRAID_LOOPING_CALL_INIT;
  lcrec x;
  memset(&x, 0, sizeof x);
  x.r = r;
  mkn(r, ds, 3);
  braid_deferred_list(r, ds, 3, BRAID_LIST_CONSUME_ERRORS, &d);
  braid_deferred_add_timeout(d, BRAID_SEC(5), NULL, NULL);
  braid_defer_later(r, BRAID_SEC(3), NULL, NULL, &d);
  braid_deferred_new(r, &d);
  braid_deferred_callback(d, malloc(32), free);
  braid_deferred_t in;
  braid_deferred_new(r, &in);
  braid_deferred_pause(in);
  braid_deferred_callback(in, malloc(8), free);
  braid_deferred_add_timeout(in, BRAID_SEC(1), NULL, NULL); /* never runs */
  braid_looping_call_start(r, &lc, BRAID_SEC(1), true, lc_fn, &x, NULL);
  assert_int_equal(braid_reactor_destroy(r), 0);
  assert_int_equal(log_errors, 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(t_timeout),
      cmocka_unit_test(t_timeout_message),
      cmocka_unit_test(t_timeout_custom),
      cmocka_unit_test(t_unhandled_at_destroy),
      cmocka_unit_test(t_defer_later),
      cmocka_unit_test(t_list_all),
      cmocka_unit_test(t_list_empty),
      cmocka_unit_test(t_list_fire_on_one),
      cmocka_unit_test(t_list_cancel),
      cmocka_unit_test(t_gather),
      cmocka_unit_test(t_race),
      cmocka_unit_test(t_looping),
      cmocka_unit_test(t_looping_fail_and_cancel),
      cmocka_unit_test(t_teardown_everything),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
