/* Exit 0 when braid can use io_uring on this host (the reactor keeps the
 * "uring" poller instead of falling back), 1 otherwise. */
#include <stdio.h>
#include <string.h>

#include "braid/braid.h"

int main(void) {
  braid_reactor_options o = {0};
  o.poller = "uring";
  braid_reactor_t *r = NULL;
  if (braid_reactor_create(&r, &o) != 0)
    return 1;
  int ok = strcmp(braid_reactor_poller(r), "uring") == 0;
  braid_reactor_destroy(r);
  return ok ? 0 : 1;
}
