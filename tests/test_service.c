/* The service tree (braid/service.h): start order and stop order of a
 * group, rollback when a start fails, the tree's rules, listeners and a
 * client service over real TCP on 127.0.0.1, and the graceful shutdown
 * (stop accepting, drain, let in-flight work finish, abort at the deadline
 * on the manual clock). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <cmocka.h>

#include "braid/braid.h"
#include "braid/service.h"
#include "braid/testing.h"

static braid_reactor_t *mkreactor(void) {
  braid_reactor_t *r;
  assert_int_equal(braid_testing_reactor_create(&r), 0);
  return r;
}

typedef struct done {
  int ok, fail, code;
} done;

static void done_cb(braid_deferred_t d, braid_result_t *res, void *arg) {
  (void)d;
  done *x = arg;
  if (braid_result_ok(res)) {
    x->ok++;
  } else {
    x->fail++;
    x->code = braid_failure_code(braid_result_failure(res));
    braid_result_set(res, NULL, NULL);
  }
}

static void watch(braid_deferred_t d, done *x) {
  memset(x, 0, sizeof *x);
  assert_false(braid_deferred_is_none(d));
  assert_int_equal(braid_deferred_add_both(d, done_cb, x), 0);
}

/* ------------------------------------------------------------------------
 * Custom services: order, rollback, the tree
 * ------------------------------------------------------------------------ */

typedef struct journal {
  char log[256];
} journal;

typedef struct custom {
  journal *j;
  char id;
  int fail_start;
  braid_deferred_t stop; /* a slow stop's deferred, fired by the test */
  uint64_t grace;
  int destroyed;
} custom;

static void jlog(journal *j, char op, char id) {
  size_t n = strlen(j->log);
  if (n + 3 < sizeof j->log) {
    j->log[n] = op;
    j->log[n + 1] = id;
    j->log[n + 2] = '\0';
  }
}

static int c_start(braid_service_t *s, void *arg, char *err, size_t errlen) {
  (void)s;
  custom *c = arg;
  jlog(c->j, '+', c->id);
  if (c->fail_start) {
    snprintf(err, errlen, "boom");
    return BRAID_EADDRINUSE;
  }
  return 0;
}

/* Stops at once (leaves *d none). */
static int c_stop(braid_service_t *s, void *arg, uint64_t grace,
                  braid_deferred_t *d) {
  (void)s;
  (void)d;
  custom *c = arg;
  jlog(c->j, '-', c->id);
  c->grace = grace;
  return 0;
}

static void c_destroy(void *arg) {
  ((custom *)arg)->destroyed++;
}

static braid_service_ops c_ops = {c_start, c_stop, c_destroy};

static braid_service_t *mkcustom(braid_reactor_t *r, const char *name,
                                 custom *c, journal *j, char id) {
  memset(c, 0, sizeof *c);
  c->j = j;
  c->id = id;
  braid_service_t *s;
  assert_int_equal(braid_service_custom_create(r, name, &c_ops, c, &s), 0);
  return s;
}

/* A custom service whose stop takes until the test fires its deferred. */
typedef struct slow {
  custom base;
  braid_reactor_t *r;
} slow;

static int slow_stop(braid_service_t *s, void *arg, uint64_t grace,
                     braid_deferred_t *d) {
  (void)s;
  slow *x = arg;
  jlog(x->base.j, '-', x->base.id);
  x->base.grace = grace;
  assert_int_equal(braid_deferred_new(x->r, d), 0);
  assert_int_equal(braid_deferred_ref(*d), 0);
  x->base.stop = *d;
  return 0;
}

static braid_service_ops slow_ops = {c_start, slow_stop, c_destroy};

static void t_group_order(void **st) {
  (void)st;
  braid_reactor_t *r = mkreactor();
  journal j = {""};
  custom a, c;
  slow b;
  braid_service_t *g;
  assert_int_equal(braid_service_group_create(r, "app", &g), 0);
  assert_int_equal(braid_service_add(g, mkcustom(r, "a", &a, &j, 'A')), 0);
  memset(&b, 0, sizeof b);
  b.base.j = &j;
  b.base.id = 'B';
  b.r = r;
  braid_service_t *sb;
  assert_int_equal(braid_service_custom_create(r, "b", &slow_ops, &b, &sb), 0);
  assert_int_equal(braid_service_add(g, sb), 0);
  assert_int_equal(braid_service_add(g, mkcustom(r, "c", &c, &j, 'C')), 0);
  char err[128];
  assert_int_equal(braid_service_start(g, err, sizeof err), 0);
  assert_string_equal(j.log, "+A+B+C");
  assert_true(braid_service_running(g));
  assert_true(braid_service_running(sb));
  assert_int_equal(braid_service_start(g, err, sizeof err), BRAID_EALREADY);
  /* Stop: every child at once, asked in reverse order; done when the slow
   * one is. */
  braid_deferred_t d;
  done x;
  assert_int_equal(braid_service_stop(g, BRAID_SEC(5), &d), 0);
  watch(d, &x);
  assert_string_equal(j.log, "+A+B+C-C-B-A");
  assert_int_equal(b.base.grace, BRAID_SEC(5));
  assert_false(braid_service_running(g));
  assert_true(braid_service_stopping(g));
  assert_true(braid_service_stopping(sb));
  assert_false(braid_service_stopping(braid_service_find(g, "a")));
  assert_int_equal(braid_service_start(g, err, sizeof err), BRAID_EBUSY);
  assert_int_equal(x.ok, 0);
  /* A second stop adds a deferred. */
  braid_deferred_t d2;
  done x2;
  assert_int_equal(braid_service_stop(g, BRAID_SEC(5), &d2), 0);
  watch(d2, &x2);
  assert_int_equal(braid_deferred_callback(b.base.stop, NULL, NULL), 0);
  assert_int_equal(braid_deferred_unref(b.base.stop), 0);
  assert_int_equal(x.ok, 1);
  assert_int_equal(x2.ok, 1);
  assert_false(braid_service_stopping(g));
  /* Stopped: stop again completes at once; start again works. */
  assert_int_equal(braid_service_stop(g, 0, &d), 0);
  watch(d, &x);
  assert_int_equal(x.ok, 1);
  assert_int_equal(braid_service_start(g, err, sizeof err), 0);
  assert_string_equal(j.log, "+A+B+C-C-B-A+A+B+C");
  assert_int_equal(braid_service_destroy(g), 0);
  assert_int_equal(a.destroyed + b.base.destroyed + c.destroyed, 3);
  assert_int_equal(braid_reactor_destroy(r), 0);
}

/* A stop deferred stays the service's until the stop is over: cancelled
 * by the caller, it is still a live handle turns later, and goes at the
 * end of the turn the stop completes in. */
static void t_stop_deferred_held_until_fired(void **st) {
  (void)st;
  braid_reactor_t *r = mkreactor();
  journal j = {""};
  slow b;
  memset(&b, 0, sizeof b);
  b.base.j = &j;
  b.base.id = 'B';
  b.r = r;
  braid_service_t *g, *sb;
  assert_int_equal(braid_service_group_create(r, "app", &g), 0);
  assert_int_equal(braid_service_custom_create(r, "b", &slow_ops, &b, &sb), 0);
  assert_int_equal(braid_service_add(g, sb), 0);
  char err[128];
  assert_int_equal(braid_service_start(g, err, sizeof err), 0);
  braid_deferred_t d;
  done x;
  assert_int_equal(braid_service_stop(g, BRAID_SEC(5), &d), 0);
  watch(d, &x);
  assert_int_equal(braid_deferred_cancel(d), 0);
  assert_int_equal(x.fail, 1);
  assert_int_equal(x.code, BRAID_ECANCELED);
  braid_testing_flush(r, 10);
  assert_true(braid_deferred_alive(d));
  assert_true(braid_service_stopping(g));
  assert_int_equal(braid_deferred_callback(b.base.stop, NULL, NULL), 0);
  assert_int_equal(braid_deferred_unref(b.base.stop), 0);
  assert_false(braid_service_stopping(g));
  braid_testing_flush(r, 10);
  assert_false(braid_deferred_alive(d));
  assert_int_equal(x.ok + x.fail, 1);
  assert_int_equal(braid_service_destroy(g), 0);
  assert_int_equal(b.base.destroyed, 1);
  assert_int_equal(braid_reactor_destroy(r), 0);
}

static void t_start_failure_rolls_back(void **st) {
  (void)st;
  braid_reactor_t *r = mkreactor();
  journal j = {""};
  custom a, b, c, pre;
  braid_service_t *g;
  assert_int_equal(braid_service_group_create(r, NULL, &g), 0);
  braid_service_t *sp = mkcustom(r, "pre", &pre, &j, 'P');
  assert_int_equal(braid_service_add(g, sp), 0);
  assert_int_equal(braid_service_add(g, mkcustom(r, "a", &a, &j, 'A')), 0);
  assert_int_equal(braid_service_add(g, mkcustom(r, "b", &b, &j, 'B')), 0);
  assert_int_equal(braid_service_add(g, mkcustom(r, "c", &c, &j, 'C')), 0);
  b.fail_start = 1;
  /* "pre" runs already: it is left alone by the rollback. */
  char err[128];
  assert_int_equal(braid_service_start(sp, err, sizeof err), 0);
  assert_int_equal(braid_service_start(g, err, sizeof err), BRAID_EADDRINUSE);
  assert_string_equal(err, "b: boom");
  assert_string_equal(j.log, "+P+A+B-A");
  assert_false(braid_service_running(g));
  assert_true(braid_service_running(sp));
  assert_false(braid_service_running(braid_service_find(g, "a")));
  /* Fixed, it starts; pre is not started twice. */
  b.fail_start = 0;
  assert_int_equal(braid_service_start(g, err, sizeof err), 0);
  assert_string_equal(j.log, "+P+A+B-A+A+B+C");
  assert_int_equal(braid_service_destroy(g), 0);
  assert_int_equal(braid_reactor_destroy(r), 0);
}

static void t_tree_rules(void **st) {
  (void)st;
  braid_reactor_t *r = mkreactor();
  journal j = {""};
  custom a, a2, x;
  braid_service_t *g, *g2;
  assert_int_equal(braid_service_group_create(r, "root", &g), 0);
  assert_int_equal(braid_service_group_create(r, "sub", &g2), 0);
  braid_service_t *sa = mkcustom(r, "a", &a, &j, 'A');
  braid_service_t *sa2 = mkcustom(r, "a", &a2, &j, 'a');
  braid_service_t *sx = mkcustom(r, NULL, &x, &j, 'X');
  assert_int_equal(braid_service_add(sa, sx), BRAID_EINVAL); /* not a group */
  assert_int_equal(braid_service_add(g, g), BRAID_EINVAL);
  assert_int_equal(braid_service_add(g, g2), 0);
  assert_int_equal(braid_service_add(g2, g), BRAID_EINVAL); /* a cycle */
  assert_int_equal(braid_service_add(g2, sa), 0);
  assert_int_equal(braid_service_add(g2, sa2), BRAID_EEXIST);
  assert_int_equal(braid_service_add(g, sa), BRAID_EINVAL); /* has a parent */
  assert_int_equal(braid_service_add(g2, sx), 0);           /* unnamed: fine */
  assert_ptr_equal(braid_service_find(g2, "a"), sa);
  assert_null(braid_service_find(g, "a")); /* direct children only */
  assert_ptr_equal(braid_service_find(g, "sub"), g2);
  assert_ptr_equal(braid_service_parent(sa), g2);
  assert_string_equal(braid_service_name(g2), "sub");
  assert_null(braid_service_name(sx));
  assert_int_equal(braid_service_destroy(sa), BRAID_EINVAL);
  char err[64];
  assert_int_equal(braid_service_start(g, err, sizeof err), 0);
  assert_string_equal(j.log, "+A+X");
  assert_int_equal(braid_service_add(g, sa2), BRAID_EBUSY);
  /* Nested stop: done at once (nothing slow). */
  braid_deferred_t d;
  done dn;
  assert_int_equal(braid_service_stop(g, 0, &d), 0);
  watch(d, &dn);
  assert_int_equal(dn.ok, 1);
  assert_string_equal(j.log, "+A+X-X-A");
  assert_int_equal(braid_service_destroy(g), 0);
  assert_int_equal(a.destroyed + x.destroyed, 2);
  assert_int_equal(braid_service_destroy(sa2), 0);
  assert_int_equal(a2.destroyed, 1);
  /* Bad arguments. */
  braid_service_t *s;
  braid_service_ops noops = {NULL, NULL, NULL};
  assert_int_equal(braid_service_custom_create(r, "n", &noops, NULL, &s),
                   BRAID_EINVAL);
  assert_int_equal(braid_service_group_create(NULL, "n", &s), BRAID_EINVAL);
  assert_int_equal(braid_service_start(NULL, err, sizeof err), BRAID_EINVAL);
  assert_int_equal(braid_service_stop(NULL, 0, NULL), BRAID_EINVAL);
  assert_int_equal(braid_service_destroy(NULL), 0);
  assert_int_equal(braid_service_listener_addr(NULL, NULL), BRAID_EINVAL);
  assert_int_equal(braid_reactor_destroy(r), 0);
}

/* Destroying a tree while a child still stops: the stop fails with
 * ECANCELED, and nothing is touched afterwards (ASan checks). */
static void t_destroy_while_stopping(void **st) {
  (void)st;
  braid_reactor_t *r = mkreactor();
  journal j = {""};
  slow b;
  memset(&b, 0, sizeof b);
  b.base.j = &j;
  b.base.id = 'B';
  b.r = r;
  braid_service_t *g, *sb;
  assert_int_equal(braid_service_group_create(r, "g", &g), 0);
  assert_int_equal(braid_service_custom_create(r, "b", &slow_ops, &b, &sb), 0);
  assert_int_equal(braid_service_add(g, sb), 0);
  char err[64];
  assert_int_equal(braid_service_start(g, err, sizeof err), 0);
  braid_deferred_t d;
  done x;
  assert_int_equal(braid_service_stop(g, BRAID_SEC(1), &d), 0);
  watch(d, &x);
  assert_int_equal(braid_service_destroy(g), 0);
  assert_int_equal(x.fail, 1);
  assert_int_equal(x.code, BRAID_ECANCELED);
  assert_int_equal(b.base.destroyed, 1);
  /* The custom service's stop finishing late finds nothing to hurt. */
  assert_int_equal(braid_deferred_callback(b.base.stop, NULL, NULL), 0);
  assert_int_equal(braid_deferred_unref(b.base.stop), 0);
  assert_int_equal(braid_reactor_destroy(r), 0);
}

/* Callbacks that destroy the whole tree from inside a start or a stop. */
typedef struct killer {
  custom base;
  braid_service_t **root;
  int on_start;
} killer;

static int k_start(braid_service_t *s, void *arg, char *err, size_t errlen) {
  killer *k = arg;
  int rc = c_start(s, arg, err, errlen);
  if (k->on_start)
    assert_int_equal(braid_service_destroy(*k->root), 0);
  return rc;
}

static int k_stop(braid_service_t *s, void *arg, uint64_t grace,
                  braid_deferred_t *d) {
  killer *k = arg;
  c_stop(s, arg, grace, d);
  if (!k->on_start)
    assert_int_equal(braid_service_destroy(*k->root), 0);
  return 0;
}

static braid_service_ops k_ops = {k_start, k_stop, c_destroy};

static void t_destroy_from_callbacks(void **st) {
  (void)st;
  braid_reactor_t *r = mkreactor();
  for (int on_start = 1; on_start >= 0; on_start--) {
    journal j = {""};
    custom a, c;
    killer k;
    memset(&k, 0, sizeof k);
    k.base.j = &j;
    k.base.id = 'K';
    k.on_start = on_start;
    braid_service_t *g, *sk;
    k.root = &g;
    assert_int_equal(braid_service_group_create(r, "g", &g), 0);
    assert_int_equal(braid_service_add(g, mkcustom(r, "a", &a, &j, 'A')), 0);
    assert_int_equal(braid_service_custom_create(r, "k", &k_ops, &k, &sk), 0);
    assert_int_equal(braid_service_add(g, sk), 0);
    assert_int_equal(braid_service_add(g, mkcustom(r, "c", &c, &j, 'C')), 0);
    char err[64];
    if (on_start) {
      /* Destroyed while starting: the rest is not started. */
      assert_int_equal(braid_service_start(g, err, sizeof err),
                       BRAID_ECANCELED);
      assert_string_equal(j.log, "+A+K");
    } else {
      assert_int_equal(braid_service_start(g, err, sizeof err), 0);
      braid_deferred_t d;
      done x;
      assert_int_equal(braid_service_stop(g, 0, &d), 0);
      watch(d, &x);
      /* C stopped, then K destroyed the tree: A was never asked. */
      assert_string_equal(j.log, "+A+K+C-C-K");
      assert_int_equal(x.fail, 1);
      assert_int_equal(x.code, BRAID_ECANCELED);
    }
    assert_int_equal(a.destroyed + k.base.destroyed + c.destroyed, 3);
  }
  assert_int_equal(braid_reactor_destroy(r), 0);
}

/* ------------------------------------------------------------------------
 * Listeners and clients over real TCP on 127.0.0.1 (the manual clock
 * drives the deadlines; the loop runs for real I/O, bounded in real time)
 * ------------------------------------------------------------------------ */

static void nap(void) {
  struct timespec ts = {0, 1000000};
  nanosleep(&ts, NULL);
}

#define SPIN_UNTIL(r, cond)                                                    \
  do {                                                                         \
    uint64_t end_ = braid_hrtime() + BRAID_SEC(10);                            \
    while (!(cond) && braid_hrtime() < end_) {                                 \
      assert_true(braid_reactor_run_once((r), false) >= 0);                    \
      nap();                                                                   \
    }                                                                          \
    if (!(cond))                                                               \
      fail_msg("timed out waiting for %s (line %d)", #cond, __LINE__);         \
  } while (0)

static void spin_for(braid_reactor_t *r, unsigned ms) {
  uint64_t end = braid_hrtime() + BRAID_MSEC(ms);
  while (braid_hrtime() < end) {
    assert_true(braid_reactor_run_once(r, false) >= 0);
    nap();
  }
}

/* A client: records what it gets. */
typedef struct cli {
  braid_protocol_t p;
  char data[256];
  size_t ndata;
  int made, lost, lost_reason, eof;
} cli;

static void cl_made(braid_protocol_t *p, braid_transport_t *t) {
  (void)t;
  ((cli *)p)->made++;
}

static void cl_data(braid_protocol_t *p, const void *d, size_t len) {
  cli *c = (cli *)p;
  if (c->ndata + len < sizeof c->data) {
    memcpy(c->data + c->ndata, d, len);
    c->ndata += len;
    c->data[c->ndata] = '\0';
  }
}

static void cl_eof(braid_protocol_t *p) {
  ((cli *)p)->eof++;
}

static void cl_lost(braid_protocol_t *p, int reason) {
  cli *c = (cli *)p;
  c->lost++;
  c->lost_reason = reason;
}

static const braid_protocol_ops cl_ops = {
    .connection_made = cl_made,
    .data_received = cl_data,
    .eof_received = cl_eof,
    .connection_lost = cl_lost,
};

static void cli_connect(braid_reactor_t *r, cli *c, const braid_addr_t *a) {
  memset(c, 0, sizeof *c);
  c->p.ops = &cl_ops;
  assert_int_equal(braid_connect(r, a, NULL, &c->p), 0);
}

/* Server protocols, heap-allocated by a factory and freed in
 * connection_lost. They echo; on drain, a "quick" one closes at once, a
 * "worker" finishes its job after `work` ns of the clock (writes "done"
 * and closes), a "stubborn" one ignores it. */
typedef struct srvfactory srvfactory;

typedef struct srv {
  braid_protocol_t p;
  srvfactory *f;
  braid_timer_t job;
} srv;

struct srvfactory {
  braid_factory_t f;
  braid_reactor_t *r;
  int kind; /* 0 quick, 1 worker, 2 stubborn */
  uint64_t work;
  int built, lost, drained;
};

static void sv_data(braid_protocol_t *p, const void *d, size_t len) {
  braid_transport_write(p->transport, d, len);
}

static void sv_lost(braid_protocol_t *p, int reason) {
  (void)reason;
  srv *s = (srv *)p;
  if (braid_timer_active(&s->job))
    braid_timer_cancel(&s->job);
  s->f->lost++;
  free(s);
}

static const braid_protocol_ops sv_ops = {
    .data_received = sv_data,
    .connection_lost = sv_lost, /* no eof_received: closes on EOF */
};

static braid_protocol_t *sv_build(braid_factory_t *f, const braid_addr_t *a) {
  (void)a;
  srv *s = calloc(1, sizeof *s);
  s->p.ops = &sv_ops;
  s->f = (srvfactory *)f;
  s->f->built++;
  return &s->p;
}

static void sf_init(srvfactory *f, braid_reactor_t *r, int kind) {
  memset(f, 0, sizeof *f);
  f->f.build = sv_build;
  f->r = r;
  f->kind = kind;
}

static void job_done(braid_timer_t *t, void *arg) {
  (void)t;
  srv *s = arg;
  braid_transport_write(s->p.transport, "done", 4);
  braid_transport_close(s->p.transport);
}

static void drain_cb(braid_protocol_t *p, braid_transport_t *t, void *arg) {
  srvfactory *f = arg;
  srv *s = (srv *)p;
  f->drained++;
  if (f->kind == 0)
    braid_transport_close(t);
  else if (f->kind == 1)
    braid_timer_start(f->r, &s->job, f->work, job_done, s);
}

static braid_service_t *mklistener(braid_reactor_t *r, const char *name,
                                   srvfactory *f,
                                   braid_service_listener_options *o) {
  braid_service_listener_options lo = {0};
  if (o == NULL)
    o = &lo;
  o->drain = drain_cb;
  o->drain_arg = f;
  braid_service_t *s;
  char err[128];
  assert_int_equal(
      braid_service_listener_create(r, name, "tcp:port=0:interface=127.0.0.1",
                                    &f->f, o, &s, err, sizeof err),
      0);
  return s;
}

static void t_graceful_stop_tcp(void **st) {
  (void)st;
  braid_reactor_t *r = mkreactor();
  srvfactory quick, stubborn;
  sf_init(&quick, r, 0);
  sf_init(&stubborn, r, 2);
  braid_service_t *g;
  assert_int_equal(braid_service_group_create(r, "app", &g), 0);
  braid_service_t *lq = mklistener(r, "quick", &quick, NULL);
  braid_service_t *ls = mklistener(r, "stubborn", &stubborn, NULL);
  assert_int_equal(braid_service_add(g, lq), 0);
  assert_int_equal(braid_service_add(g, ls), 0);
  assert_int_equal(braid_service_listener_addr(lq, NULL), BRAID_EINVAL);
  braid_addr_t aq, as;
  assert_int_equal(braid_service_listener_addr(lq, &aq), BRAID_ECLOSED);
  char err[128];
  assert_int_equal(braid_service_start(g, err, sizeof err), 0);
  assert_int_equal(braid_service_listener_addr(lq, &aq), 0);
  assert_int_equal(braid_service_listener_addr(ls, &as), 0);
  assert_true(braid_addr_port(&aq) != 0);
  cli c1, c2, c3;
  cli_connect(r, &c1, &aq);
  cli_connect(r, &c2, &aq);
  cli_connect(r, &c3, &as);
  SPIN_UNTIL(r, c1.made && c2.made && c3.made &&
                    braid_service_connections(g) == 3);
  braid_transport_write(c1.p.transport, "hello", 5);
  SPIN_UNTIL(r, c1.ndata == 5);
  assert_string_equal(c1.data, "hello");
  /* Stop with 5 s of grace. */
  braid_deferred_t d;
  done x;
  assert_int_equal(braid_service_stop(g, BRAID_SEC(5), &d), 0);
  watch(d, &x);
  /* No longer accepting. */
  assert_int_equal(braid_service_listener_addr(lq, &aq), BRAID_ECLOSED);
  cli late;
  cli_connect(r, &late, &aq);
  SPIN_UNTIL(r, late.lost == 1);
  assert_int_equal(late.made, 0);
  assert_int_equal(late.lost_reason, BRAID_ECONNREFUSED);
  /* The quick ones closed on drain; the stubborn one stays. */
  assert_int_equal(quick.drained, 2);
  assert_int_equal(stubborn.drained, 1);
  SPIN_UNTIL(r, c1.eof && c2.eof);
  SPIN_UNTIL(r, quick.lost == 2);
  spin_for(r, 30);
  assert_int_equal(c3.lost, 0);
  assert_int_equal(x.ok, 0);
  assert_int_equal(braid_service_connections(g), 1);
  /* A nanosecond before the deadline: nothing. At it: aborted. */
  assert_int_equal(braid_clock_advance(r, BRAID_SEC(5) - 1), 0);
  spin_for(r, 10);
  assert_int_equal(x.ok, 0);
  assert_int_equal(braid_clock_advance(r, 1), 0);
  SPIN_UNTIL(r, x.ok == 1);
  assert_int_equal(braid_service_aborted(g), 1);
  assert_int_equal(braid_service_aborted(ls), 1);
  assert_int_equal(braid_service_connections(g), 0);
  SPIN_UNTIL(r, c3.lost == 1);
  assert_true(c3.lost_reason < 0); /* a reset, not a clean end */
  assert_int_equal(stubborn.lost, 1);
  assert_false(braid_service_stopping(g));
  assert_int_equal(c1.lost + c2.lost, 0); /* half-open: their turn */
  braid_transport_close(c1.p.transport);
  braid_transport_close(c2.p.transport);
  SPIN_UNTIL(r, c1.lost && c2.lost);
  assert_int_equal(c1.lost_reason, 0);
  assert_int_equal(braid_service_destroy(g), 0);
  assert_int_equal(braid_reactor_destroy(r), 0);
}

static void t_in_flight_work_finishes(void **st) {
  (void)st;
  braid_reactor_t *r = mkreactor();
  srvfactory worker;
  sf_init(&worker, r, 1);
  worker.work = BRAID_SEC(2);
  braid_service_t *l = mklistener(r, "work", &worker, NULL);
  char err[128];
  assert_int_equal(braid_service_start(l, err, sizeof err), 0);
  braid_addr_t a;
  assert_int_equal(braid_service_listener_addr(l, &a), 0);
  cli c;
  cli_connect(r, &c, &a);
  SPIN_UNTIL(r, braid_service_connections(l) == 1 && c.made);
  braid_deferred_t d;
  done x;
  assert_int_equal(braid_service_stop(l, BRAID_SEC(10), &d), 0);
  watch(d, &x);
  spin_for(r, 20);
  assert_int_equal(x.ok, 0);
  /* The job ends at 2 s: its reply arrives and the stop completes then,
   * well within the grace; nothing was aborted. */
  assert_int_equal(braid_clock_advance(r, BRAID_SEC(2)), 0);
  SPIN_UNTIL(r, x.ok == 1);
  SPIN_UNTIL(r, c.eof == 1);
  assert_string_equal(c.data, "done");
  braid_transport_close(c.p.transport);
  SPIN_UNTIL(r, c.lost == 1);
  assert_int_equal(c.lost_reason, 0);
  assert_int_equal(braid_service_aborted(l), 0);
  /* The old deadline is gone: a restarted listener keeps its new
   * connections past it. */
  assert_int_equal(braid_service_start(l, err, sizeof err), 0);
  assert_int_equal(braid_service_listener_addr(l, &a), 0);
  cli c2;
  cli_connect(r, &c2, &a);
  SPIN_UNTIL(r, braid_service_connections(l) == 1 && c2.made);
  assert_int_equal(braid_clock_advance(r, BRAID_SEC(20)), 0);
  spin_for(r, 20);
  assert_int_equal(c2.lost, 0);
  assert_int_equal(braid_service_destroy(l), 0);
  SPIN_UNTIL(r, c2.lost == 1);
  SPIN_UNTIL(r, worker.lost == 2);
  assert_int_equal(braid_reactor_destroy(r), 0);
}

/* A client service in the tree, connecting to the tree's own listener. */
typedef struct cfix {
  braid_service_t *listener;
  int attempts;
} cfix;

static int cfix_connect(braid_reactor_t *r, braid_protocol_t *p, void *arg) {
  cfix *x = arg;
  x->attempts++;
  braid_addr_t a;
  int rc = braid_service_listener_addr(x->listener, &a);
  if (rc < 0)
    return rc;
  return braid_connect(r, &a, NULL, p);
}

typedef struct clifactory {
  braid_factory_t f;
  cli made[4];
  int n;
} clifactory;

static braid_protocol_t *clf_build(braid_factory_t *f, const braid_addr_t *a) {
  (void)a;
  clifactory *cf = (clifactory *)f;
  assert_true(cf->n < 4);
  cli *c = &cf->made[cf->n++];
  memset(c, 0, sizeof *c);
  c->p.ops = &cl_ops;
  return &c->p;
}

static void t_client_in_tree(void **st) {
  (void)st;
  braid_reactor_t *r = mkreactor();
  srvfactory quick;
  sf_init(&quick, r, 0);
  cfix cx = {NULL, 0};
  clifactory cf;
  memset(&cf, 0, sizeof cf);
  cf.f.build = clf_build;
  braid_service_t *g;
  assert_int_equal(braid_service_group_create(r, "app", &g), 0);
  cx.listener = mklistener(r, "server", &quick, NULL);
  assert_int_equal(braid_service_add(g, cx.listener), 0);
  braid_client_service_options co = {0};
  co.connect_cb = cfix_connect;
  co.connect_arg = &cx;
  co.factory = &cf.f;
  braid_service_t *sc;
  char err[128];
  assert_int_equal(
      braid_service_client_create(r, "client", &co, &sc, err, sizeof err), 0);
  assert_int_equal(braid_service_add(g, sc), 0);
  assert_non_null(braid_service_client(sc));
  assert_null(braid_service_client(g));
  assert_null(braid_service_listener_factory(sc));
  assert_non_null(braid_service_listener_factory(cx.listener));
  braid_deferred_t d;
  done conn;
  assert_int_equal(
      braid_client_service_when_connected(braid_service_client(sc), 0, &d), 0);
  watch(d, &conn);
  /* Started in order: the listener before the client that needs it. */
  assert_int_equal(braid_service_start(g, err, sizeof err), 0);
  SPIN_UNTIL(r, conn.ok == 1 && braid_service_connections(g) == 2);
  assert_int_equal(cx.attempts, 1);
  /* Stop: the client closes, the server side follows; done when both are
   * gone. */
  done x;
  assert_int_equal(braid_service_stop(g, BRAID_SEC(5), &d), 0);
  watch(d, &x);
  SPIN_UNTIL(r, x.ok == 1);
  assert_int_equal(braid_service_connections(g), 0);
  assert_int_equal(cf.made[0].lost, 1);
  assert_int_equal(braid_service_aborted(g), 0);
  SPIN_UNTIL(r, quick.lost == 1);
  assert_int_equal(braid_service_destroy(g), 0);
  assert_int_equal(braid_reactor_destroy(r), 0);
}

/* A scheme a module adds to the reactor (braid/endpoint.h): it gets the
 * description, and listens on loopback. */
static int fwd_listen(braid_reactor_t *r, const char *desc, braid_factory_t *f,
                      braid_listener_t **out, char *err, size_t errlen,
                      void *arg) {
  int *calls = arg;
  (*calls)++;
  assert_string_equal(desc, "fwd:anything");
  return braid_endpoint_listen(r, "tcp:port=0:interface=127.0.0.1", f, out, err,
                               errlen);
}

static const braid_endpoint_scheme fwd_scheme = {fwd_listen, NULL};

static void t_listener_policy_and_errors(void **st) {
  (void)st;
  braid_reactor_t *r = mkreactor();
  srvfactory quick;
  sf_init(&quick, r, 0);
  char err[160];
  braid_service_t *s;
  /* A description that does not parse, named in the message. */
  assert_int_equal(braid_service_listener_create(r, "x", "tcp:port=abc",
                                                 &quick.f, NULL, &s, err,
                                                 sizeof err),
                   BRAID_EINVAL);
  assert_null(s);
  assert_non_null(strstr(err, "abc"));
  /* tls: descriptions are the TLS layer's: accepted here, checked (and
   * named in the message) when the listener starts. */
  assert_int_equal(
      braid_service_listener_create(
          r, "t",
          "tls:port=0:interface=127.0.0.1:certificate=/nonexistent/c.pem",
          &quick.f, NULL, &s, err, sizeof err),
      0);
  assert_true(braid_service_start(s, err, sizeof err) < 0);
  assert_non_null(strstr(err, "t: listener tls:port=0"));
  assert_false(braid_service_running(s));
  assert_int_equal(braid_service_destroy(s), 0);
  /* So are the schemes other modules add; an unknown type is refused at
   * once. */
  int fwd_calls = 0;
  assert_int_equal(braid_endpoint_add_scheme(r, "fwd", &fwd_scheme, &fwd_calls),
                   0);
  assert_int_equal(braid_service_listener_create(r, "f", "fwd:anything",
                                                 &quick.f, NULL, &s, err,
                                                 sizeof err),
                   0);
  assert_int_equal(braid_service_start(s, err, sizeof err), 0);
  assert_int_equal(fwd_calls, 1);
  braid_addr_t fa;
  assert_int_equal(braid_service_listener_addr(s, &fa), 0);
  assert_int_equal(braid_service_destroy(s), 0);
  assert_int_equal(braid_service_listener_create(r, "u", "tpc:8080", &quick.f,
                                                 NULL, &s, err, sizeof err),
                   BRAID_EINVAL);
  assert_non_null(strstr(err, "unknown endpoint type 'tpc'"));
  braid_service_listener_options lo = {0};
  lo.policy.write_rate = UINT64_MAX;
  assert_int_equal(
      braid_service_listener_create(r, "x", "tcp:port=0:interface=127.0.0.1",
                                    &quick.f, &lo, &s, err, sizeof err),
      BRAID_EINVAL);
  /* A port in use: the start fails and says which listener. */
  lo.policy.write_rate = 0;
  lo.policy.max_connections = 1;
  braid_service_t *l1 = mklistener(r, "one", &quick, &lo);
  assert_int_equal(braid_service_start(l1, err, sizeof err), 0);
  braid_addr_t a;
  assert_int_equal(braid_service_listener_addr(l1, &a), 0);
  char desc[80];
  snprintf(desc, sizeof desc, "tcp:port=%u:interface=127.0.0.1",
           braid_addr_port(&a));
  braid_service_t *g, *l2;
  assert_int_equal(braid_service_group_create(r, "app", &g), 0);
  assert_int_equal(braid_service_listener_create(r, "two", desc, &quick.f, NULL,
                                                 &l2, err, sizeof err),
                   0);
  assert_int_equal(braid_service_add(g, l2), 0);
  int rc = braid_service_start(g, err, sizeof err);
  assert_int_equal(rc, BRAID_EADDRINUSE);
  assert_non_null(strstr(err, "two: listener tcp:port="));
  assert_non_null(strstr(err, braid_strerror(BRAID_EADDRINUSE)));
  /* The listener's policy: one connection at a time. */
  cli c1, c2;
  cli_connect(r, &c1, &a);
  SPIN_UNTIL(r, c1.made && braid_service_connections(l1) == 1);
  cli_connect(r, &c2, &a);
  SPIN_UNTIL(r, c2.eof == 1); /* refused: closed at once */
  assert_int_equal(c2.ndata, 0);
  assert_int_equal(c2.lost, 0);
  braid_policy_stats ps;
  assert_int_equal(
      braid_policy_factory_stats(braid_service_listener_factory(l1), &ps), 0);
  assert_int_equal(ps.refused_total, 1);
  /* Destroying a running listener aborts its connection. */
  assert_int_equal(braid_service_destroy(l1), 0);
  SPIN_UNTIL(r, c1.lost == 1);
  assert_true(c1.lost_reason < 0);
  braid_transport_abort(c2.p.transport);
  SPIN_UNTIL(r, c2.lost == 1);
  SPIN_UNTIL(r, quick.lost == quick.built);
  assert_int_equal(braid_service_destroy(g), 0);
  assert_int_equal(braid_reactor_destroy(r), 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(t_group_order),
      cmocka_unit_test(t_stop_deferred_held_until_fired),
      cmocka_unit_test(t_start_failure_rolls_back),
      cmocka_unit_test(t_tree_rules),
      cmocka_unit_test(t_destroy_while_stopping),
      cmocka_unit_test(t_destroy_from_callbacks),
      cmocka_unit_test(t_graceful_stop_tcp),
      cmocka_unit_test(t_in_flight_work_finishes),
      cmocka_unit_test(t_client_in_tree),
      cmocka_unit_test(t_listener_policy_and_errors),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
