/* braid echo: every byte received is sent back (RFC 862 over TCP, or any
 * stream endpoint). Flow control: when the peer reads slower than it
 * sends, the connection's own reading pauses at the write queue's
 * high-water mark, so memory stays bounded. */
#include <stdlib.h>

#include "bin/runner.h"

/* Replies go out at once: an echo answers small messages, which Nagle's
 * algorithm would hold back until the previous reply is acknowledged
 * (a delayed ACK can add up to 40 ms on Linux). Not every stream has the
 * option (Unix sockets: BRAID_ENOTSUP), which is fine. */
static void echo_made(braid_protocol_t *p, braid_transport_t *t) {
  (void)p;
  (void)braid_transport_set_nodelay(t, true);
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

/* A graceful stop: an echo session has no request to finish, so what is
 * in flight is what it was sent and has not echoed yet; closing sends
 * that first (braid_transport_close flushes the queue). */
static void echo_drain(braid_protocol_t *p, braid_transport_t *t, void *arg) {
  (void)p;
  (void)arg;
  braid_transport_close(t);
}

static int echo_main(int argc, char **argv, braid_runner_t *rt) {
  int rc = braid_runner_parse(rt, argc, argv, NULL);
  if (rc != BRAID_RUNNER_GO)
    return rc;
  braid_factory_t f = {echo_build, NULL};
  braid_service_listener_options lo = {0};
  lo.drain = echo_drain;
  size_t n;
  const char *const *eps = braid_runner_endpoints(rt, NULL, &n);
  for (size_t i = 0; i < n; i++)
    if ((rc = braid_runner_listen(rt, eps[i], &f, &lo, "listening on ")) != 0)
      return rc;
  return braid_runner_run(rt);
}

const braid_command braid_cmd_echo = {
    .name = "echo",
    .summary = "an echo server: every byte goes back to its sender",
    .usage = "usage: braid echo [--listen ENDPOINT]... [OPTIONS]\n"
             "Echo every byte back to its sender. On SIGTERM or SIGINT each\n"
             "connection is closed once what it sent has been echoed.\n",
    .flags = BRAID_CMD_SERVE,
    .listen_default = "tcp:7000",
    .main = echo_main,
};
