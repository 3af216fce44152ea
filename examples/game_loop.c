/* A "game loop": a fixed 60 Hz frame loop that owns the thread, simulates
 * and renders each frame, and gives braid a non-blocking turn per frame
 * (braid_embed_run), with a TCP server inside braid. Connected clients get
 * the frame counter once a second; what they send is echoed.
 * Usage: game_loop [ENDPOINT] [SECONDS] (default
 * tcp:port=7003:interface=127.0.0.1, run forever).
 *
 * Between frames the loop sleeps; where braid has a descriptor (epoll,
 * kqueue) it sleeps in poll(2) on it instead, so network input is handled
 * as soon as it arrives rather than at the next frame: the frame deadline
 * is the poll timeout, shortened to braid's own timeout. With the poll
 * poller (no descriptor) braid simply runs once per frame. */
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "braid/braid.h"

#define FRAME_NS (BRAID_SEC(1) / 60)

typedef struct client {
  braid_protocol_t p;
  struct client *next, **prevp;
} client;

static client *clients;
static unsigned long frame;

static void on_made(braid_protocol_t *p, braid_transport_t *t) {
  (void)t;
  client *c = (client *)p;
  c->next = clients;
  c->prevp = &clients;
  if (clients != NULL)
    clients->prevp = &c->next;
  clients = c;
}
static void on_data(braid_protocol_t *p, const void *data, size_t len) {
  braid_transport_write(p->transport, data, len);
}
static void on_lost(braid_protocol_t *p, int reason) {
  (void)reason;
  client *c = (client *)p;
  if (c->prevp != NULL) {
    *c->prevp = c->next;
    if (c->next != NULL)
      c->next->prevp = c->prevp;
  }
  free(c);
}
static const braid_protocol_ops ops = {.connection_made = on_made,
                                       .data_received = on_data,
                                       .connection_lost = on_lost};
static braid_protocol_t *build(braid_factory_t *f, const braid_addr_t *peer) {
  (void)f;
  (void)peer;
  client *c = calloc(1, sizeof *c);
  if (c == NULL)
    return NULL;
  c->p.ops = &ops;
  return &c->p;
}

/* A braid timer: once a second, tell every client the frame number. */
static void announce(braid_timer_t *t, void *arg) {
  braid_reactor_t *r = arg;
  char msg[64];
  int n = snprintf(msg, sizeof msg, "frame %lu\n", frame);
  for (client *c = clients; c != NULL; c = c->next)
    braid_transport_write(c->p.transport, msg, (size_t)n);
  braid_timer_start(r, t, BRAID_SEC(1), announce, r);
}

int main(int argc, char **argv) {
  const char *desc = argc > 1 ? argv[1] : "tcp:port=7003:interface=127.0.0.1";
  double seconds = argc > 2 ? atof(argv[2]) : 0;
  braid_reactor_t *r;
  if (braid_reactor_create(&r, NULL) < 0)
    return 1;
  braid_factory_t f = {.build = build};
  braid_listener_t *l;
  char err[128];
  if (braid_endpoint_listen(r, desc, &f, &l, err, sizeof err) < 0) {
    fprintf(stderr, "game_loop: %s: %s\n", desc, err);
    braid_reactor_destroy(r);
    return 1;
  }
  braid_timer_t t = BRAID_TIMER_INIT;
  braid_timer_start(r, &t, BRAID_SEC(1), announce, r);
  int fd = braid_embed_fd(r);
  printf("game_loop: 60 Hz, serving %s (%s)\n", desc,
         fd >= 0 ? "sleeping on braid's descriptor"
                 : "one braid turn per frame");
  uint64_t start = braid_hrtime(), next = start + FRAME_NS;
  uint64_t worst_overrun = 0;
  while (seconds <= 0 || braid_hrtime() - start < (uint64_t)(seconds * 1e9)) {
    /* Simulate and render frame `frame` here. */
    frame++;
    /* Until the next frame is due: let braid run whenever it has work. */
    for (;;) {
      braid_embed_run(r);
      uint64_t now = braid_hrtime();
      if (now >= next)
        break;
      int64_t wait = (int64_t)(next - now);
      int64_t bt = braid_embed_timeout(r);
      if (bt >= 0 && bt < wait)
        wait = bt;
      int ms = (int)((wait + 999999) / 1000000);
      if (fd >= 0) {
        struct pollfd p = {fd, POLLIN, 0};
        poll(&p, 1, ms);
      } else {
        struct timespec ts = {0, (long)wait};
        nanosleep(&ts, NULL);
      }
    }
    uint64_t now = braid_hrtime();
    if (now - next > worst_overrun)
      worst_overrun = now - next;
    next += FRAME_NS;
    if (now > next + 10 * FRAME_NS) /* far behind: drop frames, not time */
      next = now + FRAME_NS;
  }
  printf("game_loop: %lu frames, worst frame start %.3f ms late\n", frame,
         worst_overrun / 1e6);
  braid_timer_cancel(&t);
  braid_listener_close(l);
  braid_reactor_destroy(r);
  return 0;
}
