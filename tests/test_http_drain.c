/* braid_http_server_drain (braid/http.h): idle connections close at once,
 * a request in flight finishes with "Connection: close" and then its
 * connection closes, the server's own listeners close. Over memory
 * transports on the manual clock (deterministic), and one real TCP
 * listener. */
#ifdef _WIN32
/* The HTTP server is POSIX only for now (see meson.build). */
int main(void) {
  return 77;
}
#else
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "braid/braid.h"
#include "braid/http.h"
#include "braid/testing.h"

typedef struct fixture {
  braid_reactor_t *r;
  braid_http_server_t *srv;
  braid_http_req_t *held; /* a request /slow has not answered yet */
} fixture;

static void h_fast(braid_http_req_t *req, void *arg) {
  (void)arg;
  braid_http_respond(req, 200, NULL, 0, "fast\n", 5);
}

static void h_slow(braid_http_req_t *req, void *arg) {
  fixture *fx = arg;
  fx->held = req;
}

static void setup_server(fixture *fx) {
  memset(fx, 0, sizeof *fx);
  assert_int_equal(braid_testing_reactor_create(&fx->r), 0);
  braid_http_server_options so = {0};
  so.no_access_log = true;
  assert_int_equal(braid_http_server_create(fx->r, &so, &fx->srv), 0);
  assert_int_equal(braid_http_route(fx->srv, "GET", "/fast", h_fast, fx), 0);
  assert_int_equal(braid_http_route(fx->srv, "GET", "/slow", h_slow, fx), 0);
}

static void teardown_server(fixture *fx) {
  braid_http_server_destroy(fx->srv);
  braid_reactor_destroy(fx->r);
}

static braid_memory_transport_t *connect_mt(fixture *fx) {
  braid_factory_t *f = braid_http_server_factory(fx->srv);
  braid_addr_t peer;
  assert_int_equal(braid_addr_ip(&peer, "127.0.0.1", 40000), 0);
  braid_protocol_t *p = f->build(f, &peer);
  assert_non_null(p);
  braid_memory_transport_t *mt;
  assert_int_equal(braid_memory_transport_create(fx->r, p, &mt), 0);
  return mt;
}

static void feed(braid_memory_transport_t *mt, const char *s) {
  assert_int_equal(braid_memory_transport_feed(mt, s, strlen(s)), 0);
}

/* Whether what the server wrote contains `needle` (the value buffer is
 * not NUL-terminated). */
static bool has(braid_memory_transport_t *mt, const char *needle) {
  size_t len, n = strlen(needle);
  const char *v = braid_memory_transport_value(mt, &len);
  for (size_t i = 0; i + n <= len; i++)
    if (memcmp(v + i, needle, n) == 0)
      return true;
  return false;
}

static void settle(fixture *fx) {
  for (int i = 0; i < 4; i++)
    braid_clock_advance(fx->r, 0);
}

/* Before the drain, keep-alive is the rule; after it, an idle connection
 * closes at once, a request in flight is answered with Connection: close
 * and its connection ends after the response. */
static void test_drain_idle_and_in_flight(void **state) {
  (void)state;
  fixture fx;
  setup_server(&fx);
  braid_memory_transport_t *idle = connect_mt(&fx);
  braid_memory_transport_t *busy = connect_mt(&fx);
  braid_memory_transport_t *fresh = connect_mt(&fx);

  /* idle: one request answered with keep-alive, then nothing. */
  feed(idle, "GET /fast HTTP/1.1\r\nHost: a\r\n\r\n");
  settle(&fx);
  assert_true(has(idle, "200 OK"));
  assert_false(has(idle, "Connection: close"));
  assert_false(braid_memory_transport_closing(idle));

  /* busy: a request the handler holds. */
  feed(busy, "GET /slow HTTP/1.1\r\nHost: a\r\n\r\n");
  settle(&fx);
  assert_non_null(fx.held);
  assert_int_equal(braid_http_server_connections(fx.srv), 3);

  assert_int_equal(braid_http_server_drain(fx.srv), 0);
  settle(&fx);
  /* Idle ones (after a response, and never used) close now. */
  assert_true(braid_memory_transport_closing(idle) ||
              braid_memory_transport_disconnected(idle, NULL));
  assert_true(braid_memory_transport_closing(fresh) ||
              braid_memory_transport_disconnected(fresh, NULL));
  assert_false(braid_memory_transport_aborted(idle));
  /* The one in flight is left to finish. */
  assert_false(braid_memory_transport_closing(busy));
  assert_false(braid_memory_transport_disconnected(busy, NULL));
  assert_int_equal(braid_http_server_connections(fx.srv), 1);

  assert_int_equal(braid_http_respond(fx.held, 200, NULL, 0, "slow\n", 5), 0);
  fx.held = NULL;
  settle(&fx);
  assert_true(has(busy, "Connection: close"));
  assert_true(has(busy, "\r\n\r\nslow\n"));
  assert_true(braid_memory_transport_closing(busy) ||
              braid_memory_transport_disconnected(busy, NULL));
  assert_false(braid_memory_transport_aborted(busy));
  assert_int_equal(braid_http_server_connections(fx.srv), 0);

  /* Idempotent. */
  assert_int_equal(braid_http_server_drain(fx.srv), 0);
  braid_memory_transport_destroy(idle);
  braid_memory_transport_destroy(busy);
  braid_memory_transport_destroy(fresh);
  teardown_server(&fx);
}

/* A response whose head went out (keep-alive) before the drain still ends
 * its connection when it finishes; a connection holding part of a head is
 * in flight, gets its answer with Connection: close, then closes. */
static void test_drain_started_and_partial(void **state) {
  (void)state;
  fixture fx;
  setup_server(&fx);
  braid_memory_transport_t *started = connect_mt(&fx);
  braid_memory_transport_t *partial = connect_mt(&fx);
  feed(started, "GET /slow HTTP/1.1\r\nHost: a\r\n\r\n");
  settle(&fx);
  braid_http_req_t *q = fx.held;
  assert_non_null(q);
  assert_int_equal(braid_http_start(q, 200, NULL, 0, 4), 0);
  feed(partial, "GET /fast HTTP/1.1\r\nHo");
  settle(&fx);

  assert_int_equal(braid_http_server_drain(fx.srv), 0);
  settle(&fx);
  assert_false(braid_memory_transport_closing(started));
  assert_false(braid_memory_transport_closing(partial));
  assert_false(braid_memory_transport_disconnected(partial, NULL));

  feed(partial, "st: a\r\n\r\n");
  settle(&fx);
  assert_true(has(partial, "Connection: close"));
  assert_true(has(partial, "fast\n"));
  assert_true(braid_memory_transport_closing(partial) ||
              braid_memory_transport_disconnected(partial, NULL));

  assert_int_equal(braid_http_write(q, "abcd", 4), 0);
  assert_int_equal(braid_http_finish(q), 0);
  settle(&fx);
  assert_false(has(started, "Connection: close"));
  assert_true(braid_memory_transport_closing(started) ||
              braid_memory_transport_disconnected(started, NULL));
  assert_int_equal(braid_http_server_connections(fx.srv), 0);
  braid_memory_transport_destroy(started);
  braid_memory_transport_destroy(partial);
  teardown_server(&fx);
}

/* The server's own listeners close. */
static void test_drain_closes_listeners(void **state) {
  (void)state;
  braid_reactor_t *r;
  assert_int_equal(braid_reactor_create(&r, NULL), 0);
  braid_http_server_t *srv;
  assert_int_equal(braid_http_server_create(r, NULL, &srv), 0);
  char err[128];
  assert_int_equal(braid_http_server_listen(
                       srv, "tcp:port=0:interface=127.0.0.1", err, sizeof err),
                   0);
  braid_addr_t a;
  assert_int_equal(braid_http_server_addr(srv, &a), 0);
  assert_int_equal(braid_http_server_drain(srv), 0);
  /* No listener left to report an address. */
  assert_int_not_equal(braid_http_server_addr(srv, &a), 0);
  braid_http_server_destroy(srv);
  assert_int_equal(braid_http_server_drain(NULL), BRAID_EINVAL);
  braid_reactor_destroy(r);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_drain_idle_and_in_flight),
      cmocka_unit_test(test_drain_started_and_partial),
      cmocka_unit_test(test_drain_closes_listeners),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
#endif
