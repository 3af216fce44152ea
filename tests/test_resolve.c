/* Name resolution on the thread pool, and client endpoints with names.
 * Only "localhost" and numeric hosts are used: they resolve from
 * /etc/hosts or without any lookup, so no query leaves this machine. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "braid/braid.h"

typedef struct outcome {
  int done;
  int err;
  braid_addr_list_t *list;
} outcome;

static void on_ok(braid_deferred_t d, braid_result_t *res, void *arg) {
  (void)d;
  outcome *o = arg;
  braid_dtor_cb dtor;
  o->list = braid_result_take(res, &dtor);
  o->done = 1;
}

static void on_err(braid_deferred_t d, braid_result_t *res, void *arg) {
  (void)d;
  outcome *o = arg;
  o->err = braid_failure_code(braid_result_failure(res));
  braid_result_set(res, NULL, NULL);
  o->done = 1;
}

static void run_until(braid_reactor_t *r, int *flag) {
  for (int i = 0; i < 2000 && !*flag; i++)
    braid_reactor_run_once(r, true);
}

static void t_numeric(void **st) {
  (void)st;
  braid_reactor_t *r;
  assert_int_equal(braid_reactor_create(&r, NULL), 0);
  outcome o = {0};
  braid_deferred_t d;
  assert_int_equal(braid_resolve(r, "::1", 443, 0, &d), 0);
  assert_int_equal(braid_deferred_add_callbacks(d, on_ok, &o, on_err, &o), 0);
  assert_true(o.done); /* numeric: answered at once, no thread */
  assert_non_null(o.list);
  assert_int_equal(o.list->count, 1);
  assert_int_equal(braid_addr_family(&o.list->addr[0]), AF_INET6);
  assert_int_equal(braid_addr_port(&o.list->addr[0]), 443);
  braid_free(o.list);
  /* A family that does not match the numeric address. */
  outcome o2 = {0};
  assert_int_equal(braid_resolve(r, "127.0.0.1", 1, AF_INET6, &d), 0);
  assert_int_equal(braid_deferred_add_callbacks(d, on_ok, &o2, on_err, &o2), 0);
  assert_int_equal(o2.err, BRAID_EAFNOSUPPORT);
  assert_int_equal(braid_reactor_destroy(r), 0);
}

static void t_localhost(void **st) {
  (void)st;
  braid_reactor_t *r;
  assert_int_equal(braid_reactor_create(&r, NULL), 0);
  outcome o = {0};
  braid_deferred_t d;
  assert_int_equal(braid_resolve(r, "localhost", 8080, AF_INET, &d), 0);
  assert_int_equal(braid_deferred_add_callbacks(d, on_ok, &o, on_err, &o), 0);
  assert_false(o.done); /* a name goes to a worker thread */
  run_until(r, &o.done);
  assert_true(o.done);
  assert_int_equal(o.err, 0);
  assert_non_null(o.list);
  assert_true(o.list->count >= 1);
  char buf[64];
  assert_true(braid_addr_format(&o.list->addr[0], buf, sizeof buf) > 0);
  assert_string_equal(buf, "127.0.0.1:8080");
  braid_free(o.list);
  assert_int_equal(braid_reactor_destroy(r), 0);
}

static void t_bad_args(void **st) {
  (void)st;
  braid_reactor_t *r;
  braid_deferred_t d;
  assert_int_equal(braid_reactor_create(&r, NULL), 0);
  assert_int_equal(braid_resolve(NULL, "x", 1, 0, &d), BRAID_EINVAL);
  assert_int_equal(braid_resolve(r, NULL, 1, 0, &d), BRAID_EINVAL);
  assert_int_equal(braid_resolve(r, "", 1, 0, &d), BRAID_EINVAL);
  assert_int_equal(braid_resolve(r, "x", 1, 12345, &d), BRAID_EINVAL);
  char big[400];
  memset(big, 'a', sizeof big - 1);
  big[sizeof big - 1] = '\0';
  assert_int_equal(braid_resolve(r, big, 1, 0, &d), BRAID_EINVAL);
  assert_int_equal(braid_reactor_destroy(r), 0);
}

/* Destroying the reactor while a lookup is in flight: the deferred is
 * cancelled, nothing leaks. */
static void t_destroy_in_flight(void **st) {
  (void)st;
  braid_reactor_t *r;
  assert_int_equal(braid_reactor_create(&r, NULL), 0);
  outcome o = {0};
  braid_deferred_t d;
  assert_int_equal(braid_resolve(r, "localhost", 1, 0, &d), 0);
  assert_int_equal(braid_deferred_add_callbacks(d, on_ok, &o, on_err, &o), 0);
  assert_int_equal(braid_reactor_destroy(r), 0);
  assert_true(o.done);
  if (o.list != NULL) /* the lookup may have finished first */
    braid_free(o.list);
  else
    assert_int_equal(o.err, BRAID_ECANCELED);
}

/* A client endpoint with a host name connects to a braid server. */
typedef struct conn {
  braid_protocol_t p;
  int made, lost, reason;
  char got[16];
  size_t ngot;
} conn;

static void c_made(braid_protocol_t *p, braid_transport_t *t) {
  conn *c = (conn *)p;
  c->made = 1;
  braid_transport_write(t, "hello", 5);
}
static void c_data(braid_protocol_t *p, const void *data, size_t len) {
  conn *c = (conn *)p;
  if (c->ngot + len <= sizeof c->got) {
    memcpy(c->got + c->ngot, data, len);
    c->ngot += len;
  }
  if (c->ngot == 5)
    braid_transport_close(p->transport);
}
static void c_lost(braid_protocol_t *p, int reason) {
  conn *c = (conn *)p;
  c->lost = 1;
  c->reason = reason;
}
static const braid_protocol_ops c_ops = {.connection_made = c_made,
                                         .data_received = c_data,
                                         .connection_lost = c_lost};

static void s_data(braid_protocol_t *p, const void *data, size_t len) {
  braid_transport_write(p->transport, data, len);
}
static void s_lost(braid_protocol_t *p, int reason) {
  (void)reason;
  free(p);
}
static const braid_protocol_ops s_ops = {.data_received = s_data,
                                         .connection_lost = s_lost};
static braid_protocol_t *s_build(braid_factory_t *f, const braid_addr_t *a) {
  (void)f;
  (void)a;
  braid_protocol_t *p = calloc(1, sizeof *p);
  p->ops = &s_ops;
  return p;
}

static void t_endpoint_name(void **st) {
  (void)st;
  braid_reactor_t *r;
  assert_int_equal(braid_reactor_create(&r, NULL), 0);
  braid_factory_t f = {s_build, NULL};
  braid_listener_t *l;
  char err[200];
  assert_int_equal(braid_endpoint_listen(r, "tcp:port=0:interface=127.0.0.1",
                                         &f, &l, err, sizeof err),
                   0);
  braid_addr_t a;
  assert_int_equal(braid_listener_addr(l, &a), 0);
  char desc[128];
  snprintf(desc, sizeof desc, "tcp:host=localhost:port=%u:timeout=5",
           braid_addr_port(&a));
  conn c = {.p = {.ops = &c_ops}};
  assert_int_equal(braid_endpoint_connect(r, desc, &c.p, err, sizeof err), 0);
  run_until(r, &c.lost);
  assert_true(c.made);
  assert_true(c.lost);
  assert_int_equal(c.reason, 0);
  assert_int_equal(c.ngot, 5);
  assert_memory_equal(c.got, "hello", 5);
  braid_listener_close(l);
  assert_int_equal(braid_reactor_destroy(r), 0);
}

/* Every resolved address refuses: the protocol hears the last error once. */
static void t_endpoint_name_refused(void **st) {
  (void)st;
  braid_reactor_t *r;
  assert_int_equal(braid_reactor_create(&r, NULL), 0);
  /* Find a port nobody listens on: bind, read it, close. */
  braid_factory_t f = {s_build, NULL};
  braid_listener_t *l;
  char err[200];
  assert_int_equal(braid_endpoint_listen(r, "tcp:port=0:interface=127.0.0.1",
                                         &f, &l, err, sizeof err),
                   0);
  braid_addr_t a;
  assert_int_equal(braid_listener_addr(l, &a), 0);
  braid_listener_close(l);
  for (int i = 0; i < 5; i++)
    braid_reactor_run_once(r, false);
  char desc[128];
  snprintf(desc, sizeof desc, "tcp:localhost:%u", braid_addr_port(&a));
  conn c = {.p = {.ops = &c_ops}};
  assert_int_equal(braid_endpoint_connect(r, desc, &c.p, err, sizeof err), 0);
  run_until(r, &c.lost);
  assert_false(c.made);
  assert_true(c.lost);
  assert_int_equal(c.reason, BRAID_ECONNREFUSED);
  assert_int_equal(braid_reactor_destroy(r), 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(t_numeric),
      cmocka_unit_test(t_localhost),
      cmocka_unit_test(t_bad_args),
      cmocka_unit_test(t_destroy_in_flight),
      cmocka_unit_test(t_endpoint_name),
      cmocka_unit_test(t_endpoint_name_refused),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
