/* What each readiness poller must get right about sockets, run on every
 * poller the host builds (BRAID_POLLER): edge-triggered writability under
 * a bulk transfer, the reason a connect fails or a peer resets (kqueue
 * reports these in fflags), the end of input arriving with data still
 * unread (kqueue's EV_EOF), and a socket closed by a callback while its
 * event waits later in the same batch. Peers are plain blocking sockets
 * where the test needs to control exactly what the kernel sees. Every test
 * runs under a watchdog and tears its reactor down. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include "braid/braid.h"

static braid_reactor_t *R;
static braid_timer_t wd;
static int timed_out;

static void wd_cb(braid_timer_t *t, void *arg) {
  (void)t;
  (void)arg;
  timed_out = 1;
  braid_reactor_stop(R);
}

/* Run until a callback stops the reactor or `ms` pass (timed_out). */
static void run_for(unsigned ms) {
  timed_out = 0;
  assert_int_equal(braid_timer_start(R, &wd, BRAID_MSEC(ms), wd_cb, NULL), 0);
  assert_int_equal(braid_reactor_run(R), 0);
  if (braid_timer_active(&wd))
    braid_timer_cancel(&wd);
}

static int setup(void **st) {
  (void)st;
  return braid_reactor_create(&R, NULL);
}

static int teardown(void **st) {
  (void)st;
  int rc = braid_reactor_destroy(R);
  R = NULL;
  return rc;
}

/* One connection's observations; the protocol is embedded. */
typedef struct conn {
  braid_protocol_t p;
  braid_transport_t *t;
  int made, lost, reason, eof;
  size_t got;
  char first[16];
  int echo;          /* write back what arrives */
  size_t stop_after; /* stop the reactor once this much arrived */
  int stop_on_lost, stop_on_made;
  struct conn *close_peer; /* abort this one on the first bytes */
} conn;

static void c_made(braid_protocol_t *p, braid_transport_t *t) {
  conn *c = p->user;
  c->made++;
  c->t = t;
  if (c->stop_on_made)
    braid_reactor_stop(R);
}

static void c_data(braid_protocol_t *p, const void *data, size_t len) {
  conn *c = p->user;
  if (c->got == 0)
    memcpy(c->first, data, len < sizeof c->first ? len : sizeof c->first);
  c->got += len;
  if (c->echo)
    assert_int_equal(braid_transport_write(c->t, data, len), 0);
  if (c->close_peer != NULL && c->close_peer->t != NULL) {
    assert_int_equal(braid_transport_abort(c->close_peer->t), 0);
    c->close_peer = NULL;
  }
  if (c->stop_after > 0 && c->got >= c->stop_after)
    braid_reactor_stop(R);
}

static void c_eof(braid_protocol_t *p) {
  conn *c = p->user;
  c->eof++;
  braid_transport_close(c->t);
}

static void c_lost(braid_protocol_t *p, int reason) {
  conn *c = p->user;
  c->lost++;
  c->reason = reason;
  c->t = NULL;
  if (c->stop_on_lost)
    braid_reactor_stop(R);
}

static const braid_protocol_ops conn_ops = {
    .connection_made = c_made,
    .data_received = c_data,
    .eof_received = c_eof,
    .connection_lost = c_lost,
};

static void conn_init(conn *c) {
  memset(c, 0, sizeof *c);
  c->p.ops = &conn_ops;
  c->p.user = c;
}

/* A listener handing out the conns of `pool` in order. */
typedef struct server {
  braid_factory_t f;
  conn *pool;
  int n, used;
  braid_listener_t *l;
  braid_addr_t addr;
} server;

static braid_protocol_t *srv_build(braid_factory_t *f,
                                   const braid_addr_t *peer) {
  (void)peer;
  server *s = f->user;
  if (s->used == s->n)
    return NULL;
  return &s->pool[s->used++].p;
}

static void server_start(server *s, conn *pool, int n) {
  memset(s, 0, sizeof *s);
  s->f.build = srv_build;
  s->f.user = s;
  s->pool = pool;
  s->n = n;
  braid_addr_t any;
  assert_int_equal(braid_addr_ip(&any, "127.0.0.1", 0), 0);
  assert_int_equal(braid_listen(R, &any, NULL, &s->f, &s->l), 0);
  assert_int_equal(braid_listener_addr(s->l, &s->addr), 0);
}

/* A plain blocking client socket connected to `a`. */
static int raw_connect(const braid_addr_t *a) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  assert_true(fd >= 0);
  assert_int_equal(
      connect(fd, (const struct sockaddr *)a->sa_.bytes, (socklen_t)a->len_),
      0);
  return fd;
}

/* 8 MiB through a braid client and an echoing braid server in one loop:
 * both sides fill their send buffers again and again, so every byte after
 * the first few hundred KiB moves only because the poller reported a new
 * edge of writability (kqueue: EVFILT_WRITE with EV_CLEAR). */
static void t_bulk_echo(void **st) {
  (void)st;
  enum { TOTAL = 8 << 20, CHUNK = 64 << 10 };
  conn sc, cc;
  conn_init(&sc);
  conn_init(&cc);
  sc.echo = 1;
  server s;
  server_start(&s, &sc, 1);
  cc.stop_after = TOTAL;
  assert_int_equal(braid_connect(R, &s.addr, NULL, &cc.p), 0);
  cc.stop_on_made = 1;
  run_for(5000);
  assert_false(timed_out);
  assert_int_equal(cc.made, 1);
  cc.stop_on_made = 0;
  char *buf = malloc(CHUNK);
  assert_non_null(buf);
  memset(buf, 'x', CHUNK);
  for (size_t sent = 0; sent < TOTAL; sent += CHUNK)
    assert_int_equal(braid_transport_write(cc.t, buf, CHUNK), 0);
  free(buf);
  run_for(20000);
  assert_false(timed_out);
  assert_int_equal(cc.got, TOTAL);
  assert_int_equal(sc.got, TOTAL);
  braid_transport_close(cc.t);
  sc.stop_on_lost = 1;
  run_for(5000);
  assert_false(timed_out);
  assert_int_equal(cc.lost, 1);
  assert_int_equal(cc.reason, 0);
  assert_int_equal(sc.lost, 1);
  assert_int_equal(braid_listener_close(s.l), 0);
}

/* Nothing listens: the connect fails with ECONNREFUSED, the reason kqueue
 * hands over in fflags with EV_EOF on EVFILT_WRITE. */
static void t_connect_refused(void **st) {
  (void)st;
  conn sc, cc;
  conn_init(&sc);
  conn_init(&cc);
  server s;
  server_start(&s, &sc, 1);
  braid_addr_t gone = s.addr;
  assert_int_equal(braid_listener_close(s.l), 0);
  cc.stop_on_lost = 1;
  assert_int_equal(braid_connect(R, &gone, NULL, &cc.p), 0);
  run_for(5000);
  assert_false(timed_out);
  assert_int_equal(cc.made, 0);
  assert_int_equal(cc.lost, 1);
  assert_int_equal(cc.reason, BRAID_ECONNREFUSED);
}

/* The peer resets the connection (SO_LINGER 0): connection_lost says
 * ECONNRESET, not a clean end, on every poller. */
static void t_peer_reset(void **st) {
  (void)st;
  conn sc;
  conn_init(&sc);
  server s;
  server_start(&s, &sc, 1);
  int fd = raw_connect(&s.addr);
  sc.stop_on_made = 1;
  run_for(5000);
  assert_false(timed_out);
  assert_int_equal(sc.made, 1);
  sc.stop_on_made = 0;
  struct linger lg = {1, 0};
  assert_int_equal(setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg), 0);
  close(fd);
  sc.stop_on_lost = 1;
  run_for(5000);
  assert_false(timed_out);
  assert_int_equal(sc.lost, 1);
  assert_int_equal(sc.reason, BRAID_ECONNRESET);
  assert_int_equal(braid_listener_close(s.l), 0);
}

/* Data and the end of input arrive before the loop looks: both must be
 * delivered, in order ("It is possible for EOF to be returned ... while
 * there is still data pending in the socket buffer", kqueue(2)). */
static void t_eof_with_data(void **st) {
  (void)st;
  conn sc;
  conn_init(&sc);
  server s;
  server_start(&s, &sc, 1);
  int fd = raw_connect(&s.addr);
  sc.stop_on_made = 1;
  run_for(5000);
  assert_false(timed_out);
  sc.stop_on_made = 0;
  assert_int_equal(write(fd, "hello", 5), 5);
  assert_int_equal(shutdown(fd, SHUT_WR), 0);
  sc.stop_on_lost = 1;
  run_for(5000);
  assert_false(timed_out);
  assert_int_equal(sc.got, 5);
  assert_memory_equal(sc.first, "hello", 5);
  assert_int_equal(sc.eof, 1);
  assert_int_equal(sc.lost, 1);
  assert_int_equal(sc.reason, 0);
  close(fd);
  assert_int_equal(braid_listener_close(s.l), 0);
}

/* Two connections readable in the same batch; whichever is seen first
 * aborts the other, whose event is still queued: it must not be
 * delivered, and the aborted connection is lost exactly once. */
static void t_close_other_in_batch(void **st) {
  (void)st;
  conn sc[2];
  conn_init(&sc[0]);
  conn_init(&sc[1]);
  sc[0].close_peer = &sc[1];
  sc[1].close_peer = &sc[0];
  server s;
  server_start(&s, sc, 2);
  int fd0 = raw_connect(&s.addr), fd1 = raw_connect(&s.addr);
  run_for(300);
  assert_int_equal(sc[0].made + sc[1].made, 2);
  /* Both become readable before the loop runs again. */
  assert_int_equal(write(fd0, "a", 1), 1);
  assert_int_equal(write(fd1, "b", 1), 1);
  usleep(20000);
  run_for(300);
  assert_true(timed_out);
  assert_int_equal(sc[0].got + sc[1].got, 1);
  assert_int_equal(sc[0].lost + sc[1].lost, 1);
  conn *alive = sc[0].lost ? &sc[1] : &sc[0];
  conn *dead = sc[0].lost ? &sc[0] : &sc[1];
  assert_int_equal(dead->got, 0);
  assert_int_equal(dead->reason, BRAID_ECONNABORTED);
  braid_transport_close(alive->t);
  alive->stop_on_lost = 1;
  run_for(5000);
  assert_int_equal(alive->lost, 1);
  close(fd0);
  close(fd1);
  assert_int_equal(braid_listener_close(s.l), 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(t_bulk_echo, setup, teardown),
      cmocka_unit_test_setup_teardown(t_connect_refused, setup, teardown),
      cmocka_unit_test_setup_teardown(t_peer_reset, setup, teardown),
      cmocka_unit_test_setup_teardown(t_eof_with_data, setup, teardown),
      cmocka_unit_test_setup_teardown(t_close_other_in_batch, setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
