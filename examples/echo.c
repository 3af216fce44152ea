#include <stdio.h>
#include <stdlib.h>
#include "braid/braid.h"

static void on_data(braid_protocol_t *p, const void *data, size_t len) {
  braid_transport_write(p->transport, data, len);  /* echo it back */
}
static void on_lost(braid_protocol_t *p, int reason) { (void)reason; free(p); }
static const braid_protocol_ops echo = {.data_received = on_data,
                                        .connection_lost = on_lost};

static braid_protocol_t *build(braid_factory_t *f, const braid_addr_t *peer) {
  (void)f, (void)peer;
  braid_protocol_t *p = calloc(1, sizeof *p);      /* one per connection */
  if (p) p->ops = &echo;
  return p;
}

int main(void) {
  braid_reactor_t *r;
  braid_listener_t *l;
  braid_factory_t f = {.build = build};
  char err[128];
  int rc = braid_reactor_create(&r, NULL);
  if (rc < 0) return fprintf(stderr, "echo: %s\n", braid_strerror(rc)), 1;
  rc = braid_endpoint_listen(r, "tcp:port=7000:interface=127.0.0.1", &f, &l,
                             err, sizeof err);
  if (rc < 0) fprintf(stderr, "echo: %s\n", err);  /* e.g. port taken */
  else braid_reactor_run(r);                        /* until stopped */
  braid_reactor_destroy(r);
  return rc < 0;
}
