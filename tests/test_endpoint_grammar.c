/* Endpoint descriptions (braid/endpoint.h): the grammar, and the inputs
 * the fuzz target (tests/fuzz/fuzz_endpoint.c) found wrong, kept here so
 * they stay fixed without running the fuzzer. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>
#include <cmocka.h>

#include "braid/braid.h"

static void t_server(void **st) {
  (void)st;
  braid_endpoint_t ep;
  char err[128];
  assert_int_equal(braid_endpoint_parse(&ep,
                                        "tcp:port=8080:interface=127.0.0.1:"
                                        "backlog=128:reuseport=1",
                                        true, err, sizeof err),
                   0);
  assert_int_equal(ep.kind, BRAID_ENDPOINT_TCP);
  assert_int_equal(ep.port, 8080);
  assert_string_equal(ep.host, "127.0.0.1");
  assert_int_equal(ep.backlog, 128);
  assert_true(ep.reuse_port);
  assert_int_equal(braid_endpoint_parse(&ep, "tcp6:port=0:interface=\\:\\:1",
                                        true, err, sizeof err),
                   0);
  assert_string_equal(ep.host, "::1");
  /* An empty interface is "all interfaces" for a server. */
  assert_int_equal(
      braid_endpoint_parse(&ep, "tcp:port=1:interface=", true, err, sizeof err),
      0);
  assert_string_equal(ep.host, "");
}

static void t_client(void **st) {
  (void)st;
  braid_endpoint_t ep;
  char err[128];
  assert_int_equal(
      braid_endpoint_parse(&ep, "tcp:127.0.0.1:80", false, err, sizeof err), 0);
  assert_string_equal(ep.host, "127.0.0.1");
  assert_int_equal(ep.port, 80);
  assert_int_equal(braid_endpoint_parse(&ep, "tcp:host=h:port=1:timeout=1.5",
                                        false, err, sizeof err),
                   0);
  assert_true(ep.timeout == 1500000000u);
}

/* Found by fuzz_endpoint: a client with an empty host ("tcp::80", or a
 * trailing empty part after the port) parsed, and connected to 0.0.0.0. */
static void t_client_empty_host(void **st) {
  (void)st;
  braid_endpoint_t ep;
  char err[128];
  static const char *const bad[] = {
      "tcp::80", "tcp:port=78:", "tcp:host=:port=80", "tcp6::1"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    err[0] = '\0';
    assert_int_equal(braid_endpoint_parse(&ep, bad[i], false, err, sizeof err),
                     BRAID_EINVAL);
    assert_non_null(strstr(err, "host"));
  }
}

/* The error message is truncated to fit and always NUL-terminated. */
static void t_error_truncated(void **st) {
  (void)st;
  braid_endpoint_t ep;
  char err[8];
  memset(err, 'X', sizeof err);
  assert_int_equal(braid_endpoint_parse(&ep, "bogus:1", true, err, sizeof err),
                   BRAID_EINVAL);
  assert_non_null(memchr(err, '\0', sizeof err));
  assert_int_equal(braid_endpoint_parse(&ep, "bogus:1", true, NULL, 0),
                   BRAID_EINVAL);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(t_server),
      cmocka_unit_test(t_client),
      cmocka_unit_test(t_client_empty_host),
      cmocka_unit_test(t_error_truncated),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
