#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include "braid/braid.h"
static void t_create(void **st) {
  (void)st;
  braid_reactor_t *r;
  assert_int_equal(braid_reactor_create(&r, NULL), 0);
  assert_int_equal(braid_reactor_destroy(r), 0);
}
int main(void) {
  const struct CMUnitTest tests[] = {cmocka_unit_test(t_create)};
  return cmocka_run_group_tests(tests, NULL, NULL);
}
