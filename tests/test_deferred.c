/* The deferred engine: chains, failures, chaining, pause, cancel, lifetime,
 * unhandled-failure reporting, teardown, slab allocation. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <cmocka.h>

#include "braid/braid.h"
#include "braid/testing.h"
#include "core/deferred_internal.h"

/* ---- helpers ------------------------------------------------------------ */

typedef struct logcap {
  int errors, debugs;
  char last[1024];
} logcap;

static void cap_log(void *arg, braid_log_level level, const char *domain,
                    const char *msg) {
  logcap *c = arg;
  if (strcmp(domain, "deferred") != 0)
    return;
  if (level == BRAID_LOG_ERROR)
    c->errors++;
  else
    c->debugs++;
  snprintf(c->last, sizeof c->last, "%s", msg);
}

static braid_reactor_t *mk(logcap *c) {
  braid_reactor_t *r;
  assert_int_equal(braid_testing_reactor_create(&r), 0);
  if (c != NULL) {
    memset(c, 0, sizeof *c);
    braid_reactor_set_log(r, cap_log, c);
  }
  return r;
}

static int dtor_count;
static void count_dtor(void *p) {
  (void)p;
  dtor_count++;
}

static size_t live_deferreds(braid_reactor_t *r) {
  return r->defer != NULL ? r->defer->deferreds.live : 0;
}

/* A trace of steps: each step appends a character. */
static char trace[256];
static void tr(char c) {
  size_t n = strlen(trace);
  if (n + 2 > sizeof trace)
    return;
  trace[n] = c;
  trace[n + 1] = '\0';
}

/* Callback: records 'c' and adds 1 to an intptr value. */
static void cb_inc(braid_deferred_t d, braid_result_t *res, void *arg) {
  (void)d;
  (void)arg;
  tr('c');
  braid_result_set(res, (void *)((intptr_t)braid_result_value(res) + 1), NULL);
}
/* Callback that fails with the code in arg. */
static void cb_fail(braid_deferred_t d, braid_result_t *res, void *arg) {
  tr('F');
  braid_result_set_failure(res, braid_failure_new(braid_deferred_reactor(d),
                                                  "test", (int)(intptr_t)arg,
                                                  NULL, "failed on purpose"));
}
/* Errback: records 'e' and recovers with value 100. */
static void eb_recover(braid_deferred_t d, braid_result_t *res, void *arg) {
  (void)d;
  (void)arg;
  tr('e');
  braid_result_set(res, (void *)(intptr_t)100, NULL);
}
/* Errback that only records (passes failure on). */
static void eb_pass(braid_deferred_t d, braid_result_t *res, void *arg) {
  (void)d;
  (void)res;
  (void)arg;
  tr('p');
}

static intptr_t seen_value;
static void cb_record(braid_deferred_t d, braid_result_t *res, void *arg) {
  (void)d;
  (void)arg;
  tr('r');
  seen_value = (intptr_t)braid_result_value(res);
}

/* ---- tests -------------------------------------------------------------- */

static void t_basic_chain(void **st) {
  (void)st;
  logcap c;
  braid_reactor_t *r = mk(&c);
  braid_deferred_t d;
  trace[0] = 0;
  assert_int_equal(braid_deferred_new(r, &d), 0);
  assert_false(braid_deferred_called(d));
  assert_int_equal(braid_deferred_add_callback(d, cb_inc, NULL), 0);
  assert_int_equal(braid_deferred_add_callback(d, cb_inc, NULL), 0);
  assert_int_equal(braid_deferred_add_callback(d, cb_record, NULL), 0);
  assert_string_equal(trace, "");
  assert_int_equal(braid_deferred_callback(d, (void *)(intptr_t)5, NULL), 0);
  assert_string_equal(trace, "ccr");
  assert_int_equal(seen_value, 7);
  assert_true(braid_deferred_called(d));
  /* Added after firing: runs at once, sees the current result. */
  assert_int_equal(braid_deferred_add_callback(d, cb_record, NULL), 0);
  assert_string_equal(trace, "ccrr");
  assert_int_equal(seen_value, 7);
  /* Still valid this turn; freed after the turn. */
  assert_int_equal(live_deferreds(r), 1);
  braid_testing_flush(r, 10);
  assert_int_equal(live_deferreds(r), 0);
  assert_int_equal(c.errors, 0);
  assert_int_equal(braid_reactor_destroy(r), 0);
}

static void t_failure_switching(void **st) {
  (void)st;
  logcap c;
  braid_reactor_t *r = mk(&c);
  braid_deferred_t d;
  trace[0] = 0;
  assert_int_equal(braid_deferred_new(r, &d), 0);
  /* cb fails -> the errback of the SAME pair is skipped (pass-through
   * NULL eb here is irrelevant): next pair's errback sees it. */
  braid_deferred_add_callbacks(d, cb_fail, (void *)7, eb_recover, NULL);
  braid_deferred_add_callbacks(d, cb_inc, NULL, eb_pass, NULL);
  braid_deferred_add_callbacks(d, cb_inc, NULL, eb_recover, NULL);
  braid_deferred_add_callbacks(d, cb_record, NULL, eb_pass, NULL);
  braid_deferred_callback(d, (void *)1, NULL);
  /* F (fail), p (pass on), e (recover to 100), r (record 100). */
  assert_string_equal(trace, "Fper");
  assert_int_equal(seen_value, 100);
  braid_testing_flush(r, 10);
  assert_int_equal(c.errors, 0);
  assert_int_equal(braid_reactor_destroy(r), 0);
}

static void t_errback_fire_and_trap(void **st) {
  (void)st;
  logcap c;
  braid_reactor_t *r = mk(&c);
  braid_deferred_t d;
  assert_int_equal(braid_deferred_new(r, &d), 0);
  braid_deferred_errback(d,
                         braid_failure_new(r, "db", 42, NULL, "no row %d", 9));
  const braid_result_t *res = braid_deferred_result(d);
  assert_non_null(res);
  assert_false(braid_result_ok(res));
  assert_true(braid_result_trap(res, "db", 42));
  assert_true(braid_result_trap(res, "db", 0));
  assert_false(braid_result_trap(res, "db", 43));
  assert_false(braid_result_trap(res, NULL, 42));
  assert_string_equal(braid_failure_message(braid_result_failure(res)),
                      "no row 9");
  trace[0] = 0;
  braid_deferred_add_callbacks(d, cb_inc, NULL, eb_recover, NULL);
  assert_string_equal(trace, "e");
  braid_testing_flush(r, 10);
  assert_int_equal(c.errors, 0);
  assert_int_equal(braid_reactor_destroy(r), 0);
}

static void t_failure_object(void **st) {
  (void)st;
  braid_reactor_t *r = mk(NULL);
  braid_failure_t *root = braid_failure_from_code(r, BRAID_ECONNREFUSED);
  assert_string_equal(braid_failure_message(root), "connection refused");
  assert_string_equal(braid_failure_domain(root), BRAID_FAILURE_DOMAIN);
  braid_failure_t *top =
      braid_failure_new(r, "http", 502, root, "upstream %s failed", "db1");
  assert_ptr_equal(braid_failure_cause(top), root);
  assert_true(braid_failure_check(top, "http", 502));
  assert_false(braid_failure_check(top, NULL, BRAID_ECONNREFUSED));
  assert_ptr_equal(braid_failure_find(top, NULL, BRAID_ECONNREFUSED), root);
  assert_null(braid_failure_find(top, NULL, BRAID_ETIMEDOUT));
  char buf[256];
  int n = braid_failure_format(top, buf, sizeof buf);
  assert_string_equal(buf, "upstream db1 failed [http 502]; caused by: "
                           "connection refused [braid -9]");
  assert_int_equal(n, (int)strlen(buf));
  /* Truncation reports the full length. */
  char small[8];
  assert_int_equal(braid_failure_format(top, small, sizeof small), n);
  assert_string_equal(small, "upstrea");
  /* A long message is kept whole. */
  char longmsg[600];
  memset(longmsg, 'x', sizeof longmsg - 1);
  longmsg[sizeof longmsg - 1] = 0;
  braid_failure_t *lf = braid_failure_new(r, "t", 1, NULL, "%s", longmsg);
  assert_int_equal(strlen(braid_failure_message(lf)), 599);
  braid_failure_unref(lf);
  braid_failure_unref(top);
  assert_int_equal(r->defer->failures.live, 0);
  assert_int_equal(braid_reactor_destroy(r), 0);
}

static void t_ownership(void **st) {
  (void)st;
  logcap c;
  braid_reactor_t *r = mk(&c);
  braid_deferred_t d;
  dtor_count = 0;
  /* A value replaced by a step is destroyed at once. */
  assert_int_equal(braid_deferred_new(r, &d), 0);
  braid_deferred_add_callback(d, cb_inc, NULL);
  braid_deferred_callback(d, (void *)1, count_dtor);
  assert_int_equal(dtor_count, 1);
  /* Firing twice: EALREADY, the second value is destroyed, the first kept. */
  assert_int_equal(braid_deferred_new(r, &d), 0);
  assert_int_equal(braid_deferred_callback(d, (void *)1, count_dtor), 0);
  assert_int_equal(braid_deferred_callback(d, (void *)2, count_dtor),
                   BRAID_EALREADY);
  assert_int_equal(dtor_count, 2);
  assert_int_equal(braid_deferred_errback(d, braid_failure_from_code(r, -1)),
                   BRAID_EALREADY);
  assert_ptr_equal(braid_result_value(braid_deferred_result(d)), (void *)1);
  /* The last result is destroyed when the deferred is freed. */
  braid_testing_flush(r, 10);
  assert_int_equal(dtor_count, 3);
  /* A pass-through step and a take. */
  assert_int_equal(braid_deferred_succeed(r, (void *)5, count_dtor, &d), 0);
  braid_deferred_add_callback(d, cb_record, NULL);
  assert_int_equal(dtor_count, 3);
  braid_testing_flush(r, 10);
  assert_int_equal(dtor_count, 4);
  assert_int_equal(c.errors, 0);
  /* No deferred: value still consumed. */
  assert_int_equal(
      braid_deferred_callback(braid_deferred_none(), (void *)1, count_dtor),
      BRAID_EINVAL);
  assert_int_equal(dtor_count, 5);
  assert_int_equal(braid_reactor_destroy(r), 0);
}

/* Adds another step from inside a step, n times: the running loop picks
 * them up; no recursion. */
static int self_adds;
static void cb_self_add(braid_deferred_t d, braid_result_t *res, void *arg) {
  (void)res;
  (void)arg;
  if (++self_adds < 100000)
    assert_int_equal(braid_deferred_add_callback(d, cb_self_add, NULL), 0);
}

static void t_add_during_run(void **st) {
  (void)st;
  braid_reactor_t *r = mk(NULL);
  braid_deferred_t d;
  self_adds = 0;
  assert_int_equal(braid_deferred_succeed(r, NULL, NULL, &d), 0);
  braid_deferred_add_callback(d, cb_self_add, NULL);
  assert_int_equal(self_adds, 100000);
  assert_int_equal(braid_reactor_destroy(r), 0);
}

/* ---- deep chains and nests on a small stack ----------------------------- */

#define DEEP 100000

static void cb_count(braid_deferred_t d, braid_result_t *res, void *arg) {
  (void)d;
  (void)arg;
  braid_result_set(res, (void *)((intptr_t)braid_result_value(res) + 1), NULL);
}

static braid_deferred_t *nest;
/* Step i of deferred i returns deferred i+1 (not fired yet). */
static void cb_nest(braid_deferred_t d, braid_result_t *res, void *arg) {
  (void)d;
  intptr_t i = (intptr_t)arg;
  /* No cmocka assert here: this runs on another thread. */
  if (braid_result_chain(res, nest[i + 1]) != 0)
    abort();
}

static void *deep_body(void *arg) {
  int *ok = arg;
  braid_reactor_t *r;
  if (braid_testing_reactor_create(&r) != 0)
    return NULL;
  /* 1. A chain of 100,000 steps. */
  braid_deferred_t d;
  braid_deferred_new(r, &d);
  for (int i = 0; i < DEEP; i++)
    braid_deferred_add_callback(d, cb_count, NULL);
  braid_deferred_callback(d, (void *)0, NULL);
  intptr_t v1 = (intptr_t)braid_result_value(braid_deferred_result(d));

  /* 2. 100,000 nested deferreds: d[i]'s step waits for d[i+1]; firing the
   * innermost unwinds them all. Each outer adds one count step after the
   * wait, so the final value counts how many resumed. */
  nest = malloc((DEEP + 1) * sizeof *nest);
  for (int i = 0; i <= DEEP; i++)
    braid_deferred_new(r, &nest[i]);
  braid_deferred_t outer = nest[0];
  braid_deferred_ref(outer);
  for (int i = 0; i < DEEP; i++) {
    braid_deferred_add_callback(nest[i], cb_nest, (void *)(intptr_t)i);
    braid_deferred_add_callback(nest[i], cb_count, NULL);
  }
  for (int i = 0; i < DEEP; i++)
    braid_deferred_callback(nest[i], NULL, NULL); /* pauses on nest[i+1] */
  braid_deferred_callback(nest[DEEP], (void *)0, NULL);
  intptr_t v2 = (intptr_t)braid_result_value(braid_deferred_result(outer));

  /* 3. Cancelling the outermost of a paused nest cancels the innermost. */
  for (int i = 0; i <= DEEP; i++)
    braid_deferred_new(r, &nest[i]);
  outer = nest[0];
  braid_deferred_ref(outer);
  for (int i = 0; i < DEEP; i++)
    braid_deferred_add_callback(nest[i], cb_nest, (void *)(intptr_t)i);
  for (int i = 0; i < DEEP; i++)
    braid_deferred_callback(nest[i], NULL, NULL);
  braid_deferred_cancel(nest[0]);
  int v3 =
      braid_result_trap(braid_deferred_result(outer), NULL, BRAID_ECANCELED);
  braid_result_set((braid_result_t *)braid_deferred_result(outer), NULL, NULL);
  braid_deferred_unref(outer);
  braid_testing_flush(r, 10);
  size_t left = live_deferreds(r);
  free(nest);
  braid_reactor_destroy(r);
  *ok = v1 == DEEP && v2 == DEEP && v3 && left == 1; /* the first `outer` */
  if (!*ok)
    fprintf(stderr, "v1=%ld v2=%ld v3=%d left=%zu\n", (long)v1, (long)v2, v3,
            left);
  return NULL;
}

static void t_deep_small_stack(void **st) {
  (void)st;
  /* 256 KiB is far below what 100,000 recursive frames would need (and
   * sanitizers inflate frames), so this fails if anything recurses. */
  pthread_attr_t a;
  pthread_attr_init(&a);
  pthread_attr_setstacksize(&a, 256 * 1024);
  pthread_t t;
  int ok = 0;
  assert_int_equal(pthread_create(&t, &a, deep_body, &ok), 0);
  pthread_join(t, NULL);
  pthread_attr_destroy(&a);
  assert_true(ok);
}

/* ---- chaining ----------------------------------------------------------- */

static braid_deferred_t inner_d;
static void cb_chain_inner(braid_deferred_t d, braid_result_t *res, void *arg) {
  (void)d;
  (void)arg;
  tr('i');
  assert_int_equal(braid_result_chain(res, inner_d), 0);
}

static void t_chaining(void **st) {
  (void)st;
  logcap c;
  braid_reactor_t *r = mk(&c);
  braid_deferred_t d;
  /* Unfired inner: the outer pauses until it fires. */
  trace[0] = 0;
  braid_deferred_new(r, &inner_d);
  braid_deferred_new(r, &d);
  braid_deferred_add_callback(d, cb_chain_inner, NULL);
  braid_deferred_add_callback(d, cb_inc, NULL);
  braid_deferred_add_callback(d, cb_record, NULL);
  braid_deferred_callback(d, (void *)1, NULL);
  assert_string_equal(trace, "i");
  assert_true(braid_deferred_paused(d));
  braid_deferred_callback(inner_d, (void *)10, NULL);
  assert_string_equal(trace, "icr");
  assert_int_equal(seen_value, 11);

  /* Twisted's order when the inner one has steps after the hand-over: the
   * outer chain resumes first, then the inner's own later steps run (with
   * a NULL result). */
  trace[0] = 0;
  braid_deferred_new(r, &inner_d);
  braid_deferred_new(r, &d);
  braid_deferred_add_callback(d, cb_chain_inner, NULL);
  braid_deferred_add_callback(d, cb_inc, NULL);
  braid_deferred_callback(d, (void *)1, NULL);
  braid_deferred_add_callback(inner_d, cb_record, NULL);
  seen_value = -1;
  braid_deferred_callback(inner_d, (void *)10, NULL);
  assert_string_equal(trace, "icr");
  assert_int_equal(seen_value, 0);
  assert_ptr_equal(braid_result_value(braid_deferred_result(d)), (void *)11);
  assert_false(braid_deferred_paused(d));
  /* The inner one's result moved out: it now holds NULL. */
  assert_null(braid_result_value(braid_deferred_result(inner_d)));

  /* Already fired inner: consumed at once. */
  trace[0] = 0;
  braid_deferred_succeed(r, (void *)20, NULL, &inner_d);
  braid_deferred_new(r, &d);
  braid_deferred_add_callback(d, cb_chain_inner, NULL);
  braid_deferred_add_callback(d, cb_record, NULL);
  braid_deferred_callback(d, NULL, NULL);
  assert_string_equal(trace, "ir");
  assert_int_equal(seen_value, 20);

  /* A failing inner switches the outer to its errbacks. */
  trace[0] = 0;
  braid_deferred_new(r, &inner_d);
  braid_deferred_new(r, &d);
  braid_deferred_add_callback(d, cb_chain_inner, NULL);
  braid_deferred_add_callbacks(d, cb_inc, NULL, eb_recover, NULL);
  braid_deferred_callback(d, NULL, NULL);
  braid_deferred_errback(inner_d, braid_failure_from_code(r, BRAID_EIO));
  assert_string_equal(trace, "ie");

  /* chain_deferred: d's result goes to other. */
  braid_deferred_t other;
  braid_deferred_new(r, &d);
  braid_deferred_new(r, &other);
  assert_int_equal(braid_deferred_chain_deferred(d, other), 0);
  trace[0] = 0;
  braid_deferred_add_callback(other, cb_record, NULL);
  braid_deferred_callback(d, (void *)33, NULL);
  assert_int_equal(seen_value, 33);
  assert_int_equal(braid_deferred_chain_deferred(d, d), BRAID_EINVAL);

  braid_testing_flush(r, 10);
  assert_int_equal(live_deferreds(r), 0);
  assert_int_equal(c.errors, 0);
  assert_int_equal(braid_reactor_destroy(r), 0);
}

/* ---- chain_deferred: long lines, and into a fired deferred --------------- */

#define CHAIN_LINKS 1000000

static void *chain_body(void *arg) {
  int *ok = arg;
  braid_reactor_t *r;
  if (braid_testing_reactor_create(&r) != 0)
    return NULL;
  /* d[0] -> d[1] -> ... -> d[N]: each fires the next with its result. */
  braid_deferred_t *ds = malloc((CHAIN_LINKS + 1) * sizeof *ds);
  if (ds == NULL)
    return NULL;
  int bad = 0;
  for (int i = 0; i <= CHAIN_LINKS; i++)
    bad |= braid_deferred_new(r, &ds[i]) != 0;
  braid_deferred_t last = ds[CHAIN_LINKS];
  braid_deferred_ref(last);
  for (int i = 0; i < CHAIN_LINKS; i++)
    bad |= braid_deferred_chain_deferred(ds[i], ds[i + 1]) != 0;
  bad |= braid_deferred_callback(ds[0], (void *)(intptr_t)77, NULL) != 0;
  intptr_t v = (intptr_t)braid_result_value(braid_deferred_result(last));
  int called = braid_deferred_called(last);
  braid_deferred_unref(last);
  free(ds);
  braid_testing_flush(r, 10);
  size_t left = live_deferreds(r);
  braid_reactor_destroy(r);
  *ok = !bad && called && v == 77 && left == 0;
  if (!*ok)
    fprintf(stderr, "bad=%d called=%d v=%ld left=%zu\n", bad, called, (long)v,
            left);
  return NULL;
}

static void t_chain_deferred_small_stack(void **st) {
  (void)st;
  /* A million chained deferreds on 256 KiB: one recursive frame per link
   * would need hundreds of megabytes. */
  pthread_attr_t a;
  pthread_attr_init(&a);
  pthread_attr_setstacksize(&a, 256 * 1024);
  pthread_t t;
  int ok = 0;
  assert_int_equal(pthread_create(&t, &a, chain_body, &ok), 0);
  pthread_join(t, NULL);
  pthread_attr_destroy(&a);
  assert_true(ok);
}

static braid_failure_t *kept_failure;
static void eb_keep(braid_deferred_t d, braid_result_t *res, void *arg) {
  (void)d;
  (void)arg;
  tr('k');
  kept_failure = braid_failure_ref(braid_result_failure(res));
  braid_result_set(res, NULL, NULL);
}

static void t_chain_into_fired(void **st) {
  (void)st;
  logcap c;
  braid_reactor_t *r = mk(&c);
  braid_deferred_t a, b;
  /* Twisted: b.errback(f) runs a.errback(f), which raises
   * AlreadyCalledError; that failure goes down b's chain. Here it is
   * BRAID_EALREADY, with b's own failure as its cause. */
  assert_int_equal(braid_deferred_new(r, &a), 0);
  assert_int_equal(braid_deferred_new(r, &b), 0);
  assert_int_equal(braid_deferred_callback(a, (void *)1, NULL), 0);
  assert_int_equal(braid_deferred_chain_deferred(b, a), 0);
  trace[0] = 0;
  kept_failure = NULL;
  braid_deferred_add_errback(b, eb_keep, NULL);
  assert_int_equal(
      braid_deferred_errback(b, braid_failure_new(r, "db", 5, NULL, "b's own")),
      0);
  assert_string_equal(trace, "k");
  assert_non_null(kept_failure);
  assert_true(braid_failure_check(kept_failure, NULL, BRAID_EALREADY));
  assert_true(braid_failure_check(braid_failure_cause(kept_failure), "db", 5));
  braid_failure_unref(kept_failure);
  /* a is untouched. */
  assert_ptr_equal(braid_result_value(braid_deferred_result(a)), (void *)1);

  /* A value chained into a fired deferred: destroyed, and EALREADY goes on;
   * left unhandled, it is reported. */
  dtor_count = 0;
  assert_int_equal(braid_deferred_new(r, &a), 0);
  assert_int_equal(braid_deferred_new(r, &b), 0);
  assert_int_equal(braid_deferred_callback(a, (void *)1, NULL), 0);
  assert_int_equal(braid_deferred_chain_deferred(b, a), 0);
  assert_int_equal(braid_deferred_callback(b, (void *)2, count_dtor), 0);
  assert_int_equal(dtor_count, 1);
  assert_true(
      braid_result_trap(braid_deferred_result(b), NULL, BRAID_EALREADY));
  assert_int_equal(c.errors, 0);
  braid_testing_flush(r, 10);
  assert_int_equal(c.errors, 1);
  assert_non_null(strstr(c.last, "already called"));

  /* Unhandled with a failure: the report names both. */
  assert_int_equal(braid_deferred_new(r, &a), 0);
  assert_int_equal(braid_deferred_new(r, &b), 0);
  assert_int_equal(
      braid_deferred_errback(a, braid_failure_from_code(r, BRAID_EIO)), 0);
  braid_deferred_add_errback(a, eb_recover, NULL);
  assert_int_equal(braid_deferred_chain_deferred(b, a), 0);
  braid_deferred_errback(b, braid_failure_new(r, "db", 6, NULL, "lost row"));
  braid_testing_flush(r, 10);
  assert_int_equal(c.errors, 2);
  assert_non_null(strstr(c.last, "already called"));
  assert_non_null(strstr(c.last, "lost row"));

  /* Twisted's one exception: a deferred cancelled without a canceller
   * silently eats one late result, chained or not. */
  assert_int_equal(braid_deferred_new(r, &a), 0);
  assert_int_equal(braid_deferred_new(r, &b), 0);
  braid_deferred_add_errback(a, eb_recover, NULL);
  braid_deferred_cancel(a);
  assert_int_equal(braid_deferred_chain_deferred(b, a), 0);
  braid_deferred_callback(b, (void *)3, NULL);
  assert_true(braid_result_ok(braid_deferred_result(b)));
  braid_testing_flush(r, 10);
  assert_int_equal(c.errors, 2);
  assert_int_equal(live_deferreds(r), 0);
  assert_int_equal(braid_reactor_destroy(r), 0);
}

static void t_pause(void **st) {
  (void)st;
  braid_reactor_t *r = mk(NULL);
  braid_deferred_t d;
  trace[0] = 0;
  braid_deferred_new(r, &d);
  braid_deferred_add_callback(d, cb_inc, NULL);
  braid_deferred_pause(d);
  braid_deferred_pause(d);
  braid_deferred_callback(d, (void *)1, NULL);
  assert_string_equal(trace, "");
  braid_deferred_add_callback(d, cb_record, NULL);
  assert_string_equal(trace, "");
  assert_int_equal(braid_deferred_unpause(d), 0);
  assert_string_equal(trace, "");
  assert_int_equal(braid_deferred_unpause(d), 0);
  assert_string_equal(trace, "cr");
  assert_int_equal(seen_value, 2);
  assert_int_equal(braid_deferred_unpause(d), BRAID_EINVAL);
  assert_int_equal(braid_reactor_destroy(r), 0);
}

/* ---- cancel ------------------------------------------------------------- */

static int canceller_calls;
static void canceller_fires(braid_deferred_t d, void *arg) {
  canceller_calls++;
  if (arg != NULL)
    braid_deferred_callback(d, arg, NULL);
}

static void t_cancel(void **st) {
  (void)st;
  logcap c;
  braid_reactor_t *r = mk(&c);
  braid_deferred_t d;
  dtor_count = 0;
  trace[0] = 0;
  /* No canceller: errback with ECANCELED; one late fire is suppressed. */
  braid_deferred_new(r, &d);
  braid_deferred_add_errback(d, eb_recover, NULL);
  assert_int_equal(braid_deferred_cancel(d), 0);
  assert_string_equal(trace, "e");
  assert_int_equal(braid_deferred_callback(d, (void *)1, count_dtor),
                   BRAID_ECANCELED);
  assert_int_equal(braid_deferred_callback(d, (void *)1, count_dtor),
                   BRAID_EALREADY);
  assert_int_equal(dtor_count, 2);
  /* Cancelling a fired deferred does nothing. */
  assert_int_equal(braid_deferred_cancel(d), 0);

  /* A canceller that does not fire: errback anyway; later fire EALREADY. */
  canceller_calls = 0;
  braid_deferred_new_cancellable(r, canceller_fires, NULL, &d);
  braid_deferred_ref(d);
  braid_deferred_cancel(d);
  assert_int_equal(canceller_calls, 1);
  assert_true(
      braid_result_trap(braid_deferred_result(d), NULL, BRAID_ECANCELED));
  assert_int_equal(braid_deferred_callback(d, NULL, NULL), BRAID_EALREADY);
  braid_deferred_add_errback(d, eb_recover, NULL);
  braid_deferred_unref(d);
  /* A canceller that fires: its result stands. */
  braid_deferred_new_cancellable(r, canceller_fires, (void *)77, &d);
  braid_deferred_cancel(d);
  assert_int_equal(canceller_calls, 2);
  assert_ptr_equal(braid_result_value(braid_deferred_result(d)), (void *)77);

  /* Cancelling a chain paused on an inner deferred cancels the inner. */
  braid_deferred_t in;
  canceller_calls = 0;
  braid_deferred_new_cancellable(r, canceller_fires, NULL, &inner_d);
  in = inner_d;
  braid_deferred_new(r, &d);
  braid_deferred_add_callback(d, cb_chain_inner, NULL);
  trace[0] = 0;
  braid_deferred_add_callbacks(d, cb_inc, NULL, eb_recover, NULL);
  braid_deferred_callback(d, NULL, NULL);
  braid_deferred_cancel(d);
  assert_int_equal(canceller_calls, 1);
  assert_true(braid_deferred_called(in));
  assert_string_equal(trace, "ie");

  braid_testing_flush(r, 10);
  assert_int_equal(c.errors, 0);
  assert_int_equal(braid_reactor_destroy(r), 0);
}

/* ---- stale handles ----------------------------------------------------- */

static int stale_runs;
static void cb_stale(braid_deferred_t d, braid_result_t *res, void *arg) {
  (void)d;
  (void)res;
  (void)arg;
  stale_runs++;
}
static void canceller_count(braid_deferred_t d, void *arg) {
  (void)d;
  (*(int *)arg)++;
}

static braid_deferred_t stale_target;
static int chain_rc;
static void cb_chain_stale(braid_deferred_t d, braid_result_t *res, void *arg) {
  (void)d;
  (void)arg;
  chain_rc = braid_result_chain(res, stale_target);
}

/* Every entry point refuses `s` and does nothing; what it was to consume is
 * consumed. */
static void assert_stale(braid_reactor_t *r, braid_deferred_t s) {
  dtor_count = 0;
  assert_false(braid_deferred_alive(s));
  assert_false(braid_deferred_is_none(s));
  assert_int_equal(braid_deferred_add_callback(s, cb_stale, NULL),
                   BRAID_EINVAL);
  assert_int_equal(braid_deferred_add_errback(s, cb_stale, NULL), BRAID_EINVAL);
  assert_int_equal(braid_deferred_add_both(s, cb_stale, NULL), BRAID_EINVAL);
  assert_int_equal(
      braid_deferred_add_callbacks(s, cb_stale, NULL, cb_stale, NULL),
      BRAID_EINVAL);
  assert_int_equal(braid_deferred_callback(s, (void *)1, count_dtor),
                   BRAID_EINVAL);
  assert_int_equal(dtor_count, 1);
  assert_int_equal(braid_deferred_errback(s, braid_failure_from_code(r, -1)),
                   BRAID_EINVAL);
  assert_int_equal(braid_deferred_cancel(s), BRAID_EINVAL);
  assert_int_equal(braid_deferred_pause(s), BRAID_EINVAL);
  assert_int_equal(braid_deferred_unpause(s), BRAID_EINVAL);
  assert_int_equal(braid_deferred_ref(s), BRAID_EINVAL);
  assert_int_equal(braid_deferred_unref(s), BRAID_EINVAL);
  assert_false(braid_deferred_called(s));
  assert_false(braid_deferred_paused(s));
  assert_null(braid_deferred_result(s));
  assert_null(braid_deferred_reactor(s));
  assert_int_equal(braid_deferred_add_timeout(s, BRAID_SEC(1), NULL, NULL),
                   BRAID_EINVAL);
  braid_deferred_t x, out;
  assert_int_equal(braid_deferred_new(r, &x), 0);
  assert_int_equal(braid_deferred_chain_deferred(s, x), BRAID_EINVAL);
  assert_int_equal(braid_deferred_chain_deferred(x, s), BRAID_EINVAL);
  braid_deferred_t two[2] = {x, s};
  assert_int_equal(braid_deferred_list(r, two, 2, 0, &out), BRAID_EINVAL);
  assert_int_equal(braid_race(r, two, 2, &out), BRAID_EINVAL);
  stale_target = s;
  chain_rc = 0;
  braid_deferred_add_callback(x, cb_chain_stale, NULL);
  braid_deferred_callback(x, NULL, NULL);
  assert_int_equal(chain_rc, BRAID_EINVAL);
  assert_false(braid_deferred_paused(x));
}

/* A new deferred in the slot that `old` named. That slot is on the free
 * list, and the slab hands out every free slot before it grows, so this
 * finds it without the slab growing. The misses are fired, to be reclaimed
 * at the end of the turn. */
static braid_deferred_t new_in_slot(braid_reactor_t *r, braid_deferred_t old,
                                    int *cancels) {
  size_t pages = r->defer->deferreds.npages;
  for (;;) {
    braid_deferred_t e;
    assert_int_equal(
        braid_deferred_new_cancellable(r, canceller_count, cancels, &e), 0);
    if (e.slot_ == old.slot_)
      return e;
    assert_int_equal(r->defer->deferreds.npages, pages);
    braid_deferred_callback(e, NULL, NULL);
  }
}

static void t_stale_handle(void **st) {
  (void)st;
  logcap c;
  braid_reactor_t *r = mk(&c);
  braid_deferred_t d, e;
  stale_runs = 0;
  assert_int_equal(braid_deferred_succeed(r, NULL, NULL, &d), 0);
  assert_true(braid_deferred_alive(d));
  braid_testing_flush(r, 10); /* reclaimed */
  assert_int_equal(live_deferreds(r), 0);
  assert_stale(r, d);
  braid_testing_flush(r, 10);

  /* The slot is reused, over and over: the old handle never matches.
   * (assert_stale itself makes a deferred, which reuses the slot too.) */
  int cancels = 0;
  for (int round = 0; round < 1000; round++) {
    e = new_in_slot(r, d, &cancels);
    assert_false(braid_deferred_same(d, e));
    assert_true(braid_deferred_alive(e));
    assert_stale(r, d);
    /* e is untouched: no step, no pause, no cancel, no reference. */
    assert_false(braid_deferred_called(e));
    assert_false(braid_deferred_paused(e));
    assert_int_equal(cancels, 0);
    assert_int_equal(braid_deferred_unref(e), BRAID_EINVAL);
    assert_int_equal(braid_deferred_callback(e, (void *)7, NULL), 0);
    assert_int_equal(stale_runs, 0);
    assert_ptr_equal(braid_result_value(braid_deferred_result(e)), (void *)7);
    braid_testing_flush(r, 10);
    assert_false(braid_deferred_alive(e));
  }

  /* A handle kept with a reference stays alive across turns; once the
   * reference goes, it goes stale at the end of that turn. */
  assert_int_equal(braid_deferred_succeed(r, (void *)3, NULL, &d), 0);
  braid_deferred_ref(d);
  braid_testing_flush(r, 10);
  assert_true(braid_deferred_alive(d));
  assert_int_equal(braid_deferred_add_callback(d, cb_stale, NULL), 0);
  assert_int_equal(stale_runs, 1);
  braid_deferred_unref(d);
  assert_true(braid_deferred_alive(d)); /* until the end of the turn */
  braid_testing_flush(r, 10);
  assert_false(braid_deferred_alive(d));

  /* The none handle names nothing, and is what zero-filling gives. */
  braid_deferred_t none = BRAID_DEFERRED_INIT, zero;
  memset(&zero, 0, sizeof zero);
  assert_true(braid_deferred_is_none(none));
  assert_true(braid_deferred_same(none, zero));
  assert_true(braid_deferred_same(none, braid_deferred_none()));
  assert_false(braid_deferred_alive(none));
  assert_int_equal(braid_deferred_add_callback(none, cb_stale, NULL),
                   BRAID_EINVAL);
  assert_int_equal(stale_runs, 1);
  braid_testing_flush(r, 10);
  assert_int_equal(c.errors, 0);
  assert_int_equal(live_deferreds(r), 0);
  assert_int_equal(braid_reactor_destroy(r), 0);
}

/* ---- unhandled failures and teardown ------------------------------------ */

static void t_unhandled_logged(void **st) {
  (void)st;
  logcap c;
  braid_reactor_t *r = mk(&c);
  braid_deferred_t d;
  /* Freed at end of turn with a failure: reported with its message. */
  braid_deferred_fail(r, braid_failure_new(r, "db", 3, NULL, "lost row %d", 4),
                      &d);
  assert_int_equal(c.errors, 0);
  braid_testing_flush(r, 10);
  assert_int_equal(c.errors, 1);
  assert_non_null(strstr(c.last, "lost row 4"));
  /* Handled ones are not. */
  braid_deferred_fail(r, braid_failure_from_code(r, BRAID_EIO), &d);
  braid_deferred_add_errback(d, eb_recover, NULL);
  braid_testing_flush(r, 10);
  assert_int_equal(c.errors, 1);
  /* A referenced, failed deferred at reactor destroy is reported too, and
   * so is one whose failure was the cause of another. */
  braid_deferred_fail(r, braid_failure_new(r, "app", 9, NULL, "held failure"),
                      &d);
  braid_deferred_ref(d);
  braid_testing_flush(r, 10);
  assert_int_equal(c.errors, 1);
  assert_int_equal(braid_reactor_destroy(r), 0);
  assert_int_equal(c.errors, 2);
  assert_non_null(strstr(c.last, "held failure"));
}

typedef struct ctx {
  int *freed;
} ctx;
/* The typical C pattern: the errback frees the context of the operation. */
static void eb_free_ctx(braid_deferred_t d, braid_result_t *res, void *arg) {
  (void)d;
  ctx *x = arg;
  if (braid_result_trap(res, NULL, BRAID_ECANCELED))
    braid_result_set(res, NULL, NULL);
  (*x->freed)++;
  free(x);
}
static void cb_free_ctx(braid_deferred_t d, braid_result_t *res, void *arg) {
  (void)d;
  (void)res;
  ctx *x = arg;
  (*x->freed)++;
  free(x);
}

static void t_teardown_pending(void **st) {
  (void)st;
  logcap c;
  braid_reactor_t *r = mk(&c);
  int freed = 0;
  dtor_count = 0;
  for (int i = 0; i < 1000; i++) {
    braid_deferred_t d;
    braid_deferred_new(r, &d);
    ctx *x = malloc(sizeof *x);
    x->freed = &freed;
    braid_deferred_add_callbacks(d, cb_free_ctx, x, eb_free_ctx, x);
    if (i % 3 == 0) {
      /* Some are waiting on inner deferreds, some hold values. */
      braid_deferred_t o;
      braid_deferred_new(r, &o);
      inner_d = d;
      braid_deferred_add_callback(o, cb_chain_inner, NULL);
      braid_deferred_callback(o, (void *)1, count_dtor);
    }
  }
  /* Some fired ones with owned values that nobody collected. */
  for (int i = 0; i < 10; i++) {
    braid_deferred_t d;
    braid_deferred_succeed(r, malloc(16), free, &d);
    braid_deferred_ref(d);
  }
  assert_int_equal(braid_reactor_destroy(r), 0);
  assert_int_equal(freed, 1000);
  assert_int_equal(dtor_count, 334);
  assert_int_equal(c.errors, 0);
}

/* ---- slab: zero allocations in steady state ------------------------------ */

static size_t n_alloc, n_free;
static void *cnt_malloc(size_t n) {
  n_alloc++;
  return malloc(n);
}
static void *cnt_realloc(void *p, size_t n) {
  n_alloc++;
  return realloc(p, n);
}
static void *cnt_calloc(size_t a, size_t b) {
  n_alloc++;
  return calloc(a, b);
}
static void cnt_free(void *p) {
  n_free++;
  free(p);
}

static void cb_chain_fresh(braid_deferred_t d, braid_result_t *res, void *arg) {
  (void)arg;
  braid_deferred_t in;
  if (braid_deferred_new(braid_deferred_reactor(d), &in) == 0 &&
      braid_deferred_callback(in, (void *)3, NULL) == 0)
    braid_result_chain(res, in);
}

static void one_round(braid_reactor_t *r, int n) {
  for (int i = 0; i < n; i++) {
    braid_deferred_t d, e;
    braid_deferred_new(r, &d);
    braid_deferred_add_callback(d, cb_inc, NULL);
    braid_deferred_add_callbacks(d, cb_chain_fresh, NULL, eb_recover, NULL);
    braid_deferred_new(r, &e);
    inner_d = e;
    braid_deferred_add_callback(d, cb_chain_inner, NULL);
    braid_deferred_add_callback(d, cb_fail, (void *)5);
    braid_deferred_add_errback(d, eb_recover, NULL);
    braid_deferred_callback(d, (void *)1, NULL);
    braid_deferred_callback(e, (void *)2, NULL);
    braid_deferred_t c;
    braid_deferred_new(r, &c);
    braid_deferred_cancel(c);
    braid_deferred_add_errback(c, eb_recover, NULL);
  }
  braid_testing_flush(r, 10);
}

static void t_zero_alloc(void **st) {
  (void)st;
  assert_int_equal(
      braid_set_allocator(cnt_malloc, cnt_realloc, cnt_calloc, cnt_free), 0);
  braid_reactor_t *r;
  assert_int_equal(braid_testing_reactor_create(&r), 0);
  trace[0] = 0;
  one_round(r, 500); /* warm-up: slabs grow, call-soon queue grows */
  size_t a0 = n_alloc, f0 = n_free;
  for (int k = 0; k < 20; k++) {
    trace[0] = 0;
    one_round(r, 500);
  }
  size_t da = n_alloc - a0, df = n_free - f0;
  assert_int_equal(live_deferreds(r), 0);
  assert_int_equal(braid_reactor_destroy(r), 0);
  braid_reset_allocator();
  assert_int_equal(da, 0);
  assert_int_equal(df, 0);
  /* Every allocation was given back. */
  assert_int_equal(n_alloc, n_free);
}

/* ---- slab out of memory -------------------------------------------------- */

static int fail_allocs;
static void *oom_malloc(size_t n) {
  return fail_allocs ? NULL : malloc(n);
}
static void *oom_realloc(void *p, size_t n) {
  return fail_allocs ? NULL : realloc(p, n);
}
static void *oom_calloc(size_t a, size_t b) {
  return fail_allocs ? NULL : calloc(a, b);
}

static void t_oom(void **st) {
  (void)st;
  logcap c;
  braid_set_allocator(oom_malloc, oom_realloc, oom_calloc, free);
  braid_reactor_t *r = mk(&c);
  braid_deferred_t d, keep;
  braid_deferred_new(r, &keep);
  fail_allocs = 1;
  /* Exhaust the first page, then creation fails cleanly. */
  int rc = 0;
  for (int i = 0; i < 100000 && rc == 0; i++) {
    rc = braid_deferred_new(r, &d);
    if (rc == 0)
      braid_deferred_callback(d, NULL, NULL);
  }
  assert_int_equal(rc, BRAID_ENOMEM);
  assert_true(braid_deferred_is_none(d));
  /* A failure that cannot be made is the preallocated ENOMEM one. */
  braid_failure_t *f = NULL;
  for (int i = 0; i < 100000; i++) {
    f = braid_failure_new(r, "x", 1, f, "chain");
    if (f == NULL)
      break;
  }
  assert_null(f);
  braid_deferred_add_errback(keep, eb_recover, NULL);
  assert_int_equal(braid_deferred_errback(keep, NULL), 0);
  fail_allocs = 0;
  braid_testing_flush(r, 10);
  assert_int_equal(braid_reactor_destroy(r), 0);
  braid_reset_allocator();
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(t_basic_chain),
      cmocka_unit_test(t_failure_switching),
      cmocka_unit_test(t_errback_fire_and_trap),
      cmocka_unit_test(t_failure_object),
      cmocka_unit_test(t_ownership),
      cmocka_unit_test(t_add_during_run),
      cmocka_unit_test(t_deep_small_stack),
      cmocka_unit_test(t_chaining),
      cmocka_unit_test(t_chain_into_fired),
      cmocka_unit_test(t_chain_deferred_small_stack),
      cmocka_unit_test(t_pause),
      cmocka_unit_test(t_cancel),
      cmocka_unit_test(t_stale_handle),
      cmocka_unit_test(t_unhandled_logged),
      cmocka_unit_test(t_teardown_pending),
      cmocka_unit_test(t_zero_alloc),
      cmocka_unit_test(t_oom),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
