/* braid's echo server for bench/run.py and bench/callgrind.sh: the same
 * protocol as `braid echo` (bin/braid.c), plus TCP_NODELAY on every
 * accepted connection, which `braid echo` does not set. Every peer sets it
 * (bench/echo_libuv.c, echo_libevent.c, echo_libev.c), so braid sets it
 * here too and the comparison stays symmetric.
 *
 * Why it is fast, i.e. what it avoids: nothing beyond braid's own API used
 * plainly. braid's stream reads into the reactor's shared read buffer and
 * braid_transport_write tries the socket first, queuing (with a copy) only
 * what the kernel refuses; flow control pauses reading at the write
 * queue's high-water mark, as in `braid echo`.
 *
 * Usage: echo_braid PORT   (BRAID_POLLER picks the poller) */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>

#include "braid/braid.h"

static void echo_made(braid_protocol_t *p, braid_transport_t *t) {
  (void)p;
  braid_transport_set_nodelay(t, true);
}

static void echo_data(braid_protocol_t *p, const void *data, size_t len) {
  braid_transport_write(p->transport, data, len);
}

static void echo_lost(braid_protocol_t *p, int reason) {
  (void)reason;
  free(p);
}

static void echo_pause(braid_protocol_t *p) {
  braid_transport_pause_reading(p->transport);
}

static void echo_resume(braid_protocol_t *p) {
  braid_transport_resume_reading(p->transport);
}

static const braid_protocol_ops echo_ops = {
    .connection_made = echo_made,
    .data_received = echo_data,
    .connection_lost = echo_lost,
    .pause_writing = echo_pause,
    .resume_writing = echo_resume,
};

static braid_protocol_t *echo_build(braid_factory_t *f,
                                    const braid_addr_t *peer) {
  (void)f;
  (void)peer;
  braid_protocol_t *p = calloc(1, sizeof *p);
  if (p != NULL)
    p->ops = &echo_ops;
  return p;
}

static void on_stop(braid_signal_t *s, int signo, unsigned count, void *arg) {
  (void)s;
  (void)signo;
  (void)count;
  braid_reactor_stop(arg);
}

int main(int argc, char **argv) {
  char ep[96], err[256];
  snprintf(ep, sizeof ep, "tcp:port=%d:interface=127.0.0.1",
           argc > 1 ? atoi(argv[1]) : 7000);
  braid_reactor_t *r;
  if (braid_reactor_create(&r, NULL) < 0) {
    fprintf(stderr, "echo_braid: cannot create a reactor\n");
    return 1;
  }
  braid_factory_t f = {echo_build, NULL};
  braid_listener_t *l;
  if (braid_endpoint_listen(r, ep, &f, &l, err, sizeof err) < 0) {
    fprintf(stderr, "echo_braid: %s\n", err);
    braid_reactor_destroy(r);
    return 1;
  }
  /* SIGTERM stops the loop so that a callgrind run ends with its counts
   * written, as bench/run.py stops every server with SIGTERM. */
  braid_signal_t sterm = {0}, sint = {0};
  braid_signal_start(r, &sterm, SIGTERM, on_stop, r);
  braid_signal_start(r, &sint, SIGINT, on_stop, r);
  int rc = braid_reactor_run(r);
  braid_signal_stop(&sterm);
  braid_signal_stop(&sint);
  braid_reactor_destroy(r);
  return rc < 0 ? 1 : 0;
}
