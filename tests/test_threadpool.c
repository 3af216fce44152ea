#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
static void t_none(void **st) { (void)st; }
int main(void) {
  const struct CMUnitTest tests[] = {cmocka_unit_test(t_none)};
  return cmocka_run_group_tests(tests, NULL, NULL);
}
