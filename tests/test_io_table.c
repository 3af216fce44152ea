/* The I/O layer's ops table (core/io.h), on every poller: every slot is
 * filled, and the socket options and multicast calls behind the slots do
 * what core/io.h says. Core calls each slot without a NULL check: IOCP once
 * had no sock_getopt and no sock_mcast (braid_udp_get_broadcast and
 * multicast crashed on Windows), set no linger-0 (an abort sent a FIN, not
 * the documented reset) and no buffer sizes (a UDP open with them failed).
 * Loopback only; multicast is joined on 127.0.0.1 and nothing is sent. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "braid/braid.h"
#include "core/internal.h" /* the reactor's ops table */

static braid_reactor_t *R;

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

/* ------------------------------------------------------------------------ */

typedef void (*any_fn)(void);

/* Every function slot of braid__io_ops, by name. */
#define SLOT(x)                                                                \
  { #x, (any_fn)io->x }

static void t_slots(void **st) {
  (void)st;
  const braid__io_ops *io = R->io;
  assert_non_null(io->name);
  assert_true(io->name[0] != '\0');
  const struct {
    const char *name;
    any_fn fn;
  } slots[] = {
      SLOT(init),         SLOT(destroy),       SLOT(poller_name),
      SLOT(wait),         SLOT(wakeup),        SLOT(signal_watch),
      SLOT(signal_count), SLOT(sock_open),     SLOT(sock_adopt),
      SLOT(fd_close),     SLOT(sock_bind),     SLOT(sock_listen),
      SLOT(sock_name),    SLOT(sock_setopt),   SLOT(sock_getopt),
      SLOT(sock_mcast),   SLOT(sock_shutdown), SLOT(submit),
      SLOT(cancel),       SLOT(close),         SLOT(start),
      SLOT(abort),        SLOT(shut),          SLOT(backend_fd),
      SLOT(pending),
  };
  size_t n = sizeof slots / sizeof slots[0];
  /* The list above covers the whole table: a slot added to core/io.h
   * fails here until it is listed (and so checked). */
  assert_int_equal(offsetof(braid__io_ops, init) + n * sizeof(any_fn),
                   sizeof(braid__io_ops));
  int missing = 0;
  for (size_t i = 0; i < n; i++)
    if (slots[i].fn == NULL) {
      print_message("%s: slot %s is NULL\n", io->name, slots[i].name);
      missing++;
    }
  assert_int_equal(missing, 0);
}

/* ------------------------------------------------------------------------
 * Datagram options through the table, IPv4 and IPv6
 * ------------------------------------------------------------------------ */

static int closed_count;

static void count_closed(braid__sock *s) {
  (void)s;
  closed_count++;
}

static void close_sock(braid__sock *s) {
  int before = closed_count;
  R->io->close(s, count_closed);
  for (int i = 0; i < 1000 && closed_count == before; i++)
    assert_true(braid_reactor_run_once(R, false) >= 0);
  assert_int_equal(closed_count, before + 1);
}

/* Open a datagram socket bound to `ip` port 0, or return nonzero (with a
 * message) where the host has no such address. */
static int dgram_open(braid__sock *s, const char *ip) {
  braid_addr_t a;
  assert_int_equal(braid_addr_ip(&a, ip, 0), 0);
  int rc = R->io->sock_open(R, s, braid_addr_family(&a), SOCK_DGRAM);
  if (rc == BRAID_EAFNOSUPPORT) {
    print_message("%s unavailable here: %s\n", ip, braid_strerror(rc));
    return 1;
  }
  assert_int_equal(rc, 0);
  rc = R->io->sock_bind(s, (const struct sockaddr *)(const void *)a.sa_.bytes,
                        (int)a.len_);
  if (rc == BRAID_EADDRNOTAVAIL) {
    print_message("%s unavailable here: %s\n", ip, braid_strerror(rc));
    close_sock(s);
    return 1;
  }
  assert_int_equal(rc, 0);
  return 0;
}

static int getopt_of(braid__sock *s, int opt) {
  int v = -12345;
  assert_int_equal(R->io->sock_getopt(s, opt, &v), 0);
  assert_true(v >= 0);
  return v;
}

/* A buffer size set is in effect: the kernel reports at least what was
 * asked (Linux doubles it for its bookkeeping, Windows keeps it), and a
 * second, smaller size changes what it reports. */
static void check_bufsize(braid__sock *s, int opt) {
  assert_int_equal(R->io->sock_setopt(s, opt, 65536), 0);
  int big = getopt_of(s, opt);
  assert_true(big >= 65536);
  assert_int_equal(R->io->sock_setopt(s, opt, 16384), 0);
  int small = getopt_of(s, opt);
  assert_true(small >= 16384);
  assert_true(small < big);
}

static void dgram_opts(const char *ip) {
  const braid__io_ops *io = R->io;
  braid__sock s;
  if (dgram_open(&s, ip) != 0)
    skip();
  assert_int_equal(getopt_of(&s, BRAID__SO_BROADCAST), 0);
  assert_int_equal(io->sock_setopt(&s, BRAID__SO_BROADCAST, 1), 0);
  assert_true(getopt_of(&s, BRAID__SO_BROADCAST) != 0);
  assert_int_equal(io->sock_setopt(&s, BRAID__SO_BROADCAST, 0), 0);
  assert_int_equal(getopt_of(&s, BRAID__SO_BROADCAST), 0);

  check_bufsize(&s, BRAID__SO_RCVBUF);
  check_bufsize(&s, BRAID__SO_SNDBUF);

  assert_int_equal(io->sock_setopt(&s, BRAID__SO_MULTICAST_TTL, 7), 0);
  assert_int_equal(getopt_of(&s, BRAID__SO_MULTICAST_TTL), 7);
  assert_int_equal(io->sock_setopt(&s, BRAID__SO_MULTICAST_TTL, 0), 0);
  assert_int_equal(getopt_of(&s, BRAID__SO_MULTICAST_TTL), 0);

  assert_int_equal(io->sock_setopt(&s, BRAID__SO_MULTICAST_LOOP, 0), 0);
  assert_int_equal(getopt_of(&s, BRAID__SO_MULTICAST_LOOP), 0);
  assert_int_equal(io->sock_setopt(&s, BRAID__SO_MULTICAST_LOOP, 1), 0);
  assert_int_equal(getopt_of(&s, BRAID__SO_MULTICAST_LOOP), 1);

  /* Options sock_getopt does not read, and ones that do not exist. */
  int v = 1;
  assert_int_equal(io->sock_getopt(&s, BRAID__SO_NODELAY, &v), BRAID_EINVAL);
  assert_int_equal(io->sock_getopt(&s, 999, &v), BRAID_EINVAL);
  assert_int_equal(io->sock_setopt(&s, 999, 1), BRAID_EINVAL);

  /* Multicast: the interface for sending, with the kernel's choice and
   * with loopback's; an address family the call does not know. */
  int v6 = strchr(ip, ':') != NULL;
  braid_addr_t lo;
  assert_int_equal(braid_addr_ip(&lo, "127.0.0.1", 0), 0);
  const struct sockaddr *lo4 =
      (const struct sockaddr *)(const void *)lo.sa_.bytes;
  int fam = v6 ? AF_INET6 : AF_INET;
  assert_int_equal(io->sock_mcast(&s, BRAID__MC_IF, fam, NULL, NULL, 0), 0);
  if (!v6)
    assert_int_equal(io->sock_mcast(&s, BRAID__MC_IF, fam, NULL, lo4, 0), 0);
  assert_int_equal(io->sock_mcast(&s, BRAID__MC_IF, AF_UNSPEC, NULL, NULL, 0),
                   BRAID_EAFNOSUPPORT);
  close_sock(&s);
}

static void t_dgram_opts_v4(void **st) {
  (void)st;
  dgram_opts("127.0.0.1");
}

static void t_dgram_opts_v6(void **st) {
  (void)st;
  dgram_opts("::1");
}

/* Joining and leaving an IPv4 group on the loopback interface through
 * sock_mcast: a second join and a leave of a group not joined fail. */
static void t_mcast_membership(void **st) {
  (void)st;
  const braid__io_ops *io = R->io;
  braid__sock s;
  assert_int_equal(dgram_open(&s, "127.0.0.1"), 0);
  braid_addr_t g, lo;
  assert_int_equal(braid_addr_ip(&g, "239.254.77.89", 0), 0);
  assert_int_equal(braid_addr_ip(&lo, "127.0.0.1", 0), 0);
  const struct sockaddr *gs =
      (const struct sockaddr *)(const void *)g.sa_.bytes;
  const struct sockaddr *ls =
      (const struct sockaddr *)(const void *)lo.sa_.bytes;
  int rc = io->sock_mcast(&s, BRAID__MC_JOIN, AF_INET, gs, ls, 0);
  if (rc < 0) {
    close_sock(&s);
    print_message("kernel refuses to join 239.254.77.89 on 127.0.0.1: %s\n",
                  braid_strerror(rc));
    skip();
  }
  assert_true(io->sock_mcast(&s, BRAID__MC_JOIN, AF_INET, gs, ls, 0) < 0);
  assert_int_equal(io->sock_mcast(&s, BRAID__MC_LEAVE, AF_INET, gs, ls, 0), 0);
  assert_true(io->sock_mcast(&s, BRAID__MC_LEAVE, AF_INET, gs, ls, 0) < 0);
  close_sock(&s);
}

/* ------------------------------------------------------------------------
 * Stream options: each BRAID__SO_* for streams is accepted on a TCP socket
 * ------------------------------------------------------------------------ */

static void t_stream_opts(void **st) {
  (void)st;
  const braid__io_ops *io = R->io;
  braid__sock s;
  int rc = io->sock_open(R, &s, AF_INET6, SOCK_STREAM);
  int v6 = rc == 0;
  if (!v6)
    assert_int_equal(io->sock_open(R, &s, AF_INET, SOCK_STREAM), 0);
  assert_int_equal(io->sock_setopt(&s, BRAID__SO_REUSEADDR, 1), 0);
  rc = io->sock_setopt(&s, BRAID__SO_REUSEPORT, 1);
  assert_true(rc == 0 || rc == BRAID_ENOTSUP); /* "where the OS has it" */
  if (v6)
    assert_int_equal(io->sock_setopt(&s, BRAID__SO_V6ONLY, 1), 0);
  assert_int_equal(io->sock_setopt(&s, BRAID__SO_NODELAY, 1), 0);
  assert_int_equal(io->sock_setopt(&s, BRAID__SO_KEEPALIVE, 30), 0);
  assert_int_equal(io->sock_setopt(&s, BRAID__SO_KEEPALIVE, 0), 0);
  assert_int_equal(io->sock_setopt(&s, BRAID__SO_LINGER0, 1), 0);
  assert_int_equal(io->sock_setopt(&s, BRAID__SO_LINGER0, 0), 0);
  assert_int_equal(io->sock_setopt(&s, BRAID__SO_RCVBUF, 65536), 0);
  assert_int_equal(io->sock_setopt(&s, BRAID__SO_SNDBUF, 65536), 0);
  close_sock(&s);
}

/* ------------------------------------------------------------------------
 * Linger 0 on the wire: braid_transport_abort() resets the connection, so
 * the peer loses it with BRAID_ECONNRESET, not an orderly end of input.
 * ------------------------------------------------------------------------ */

typedef struct peer {
  braid_protocol_t p;
  int made, lost, reason;
  int server; /* aborts when the client's first bytes arrive */
} peer;

static int lost_total;

/* The client writes once it is connected, so that it is connected for
 * sure when the server aborts. */
static void on_made(braid_protocol_t *p, braid_transport_t *t) {
  peer *pp = (peer *)p;
  pp->made++;
  if (!pp->server)
    assert_int_equal(braid_transport_write(t, "x", 1), 0);
}

static void on_data(braid_protocol_t *p, const void *d, size_t n) {
  (void)d;
  (void)n;
  if (((peer *)p)->server)
    assert_int_equal(braid_transport_abort(p->transport), 0);
}

static void on_lost(braid_protocol_t *p, int reason) {
  peer *pp = (peer *)p;
  pp->lost++;
  pp->reason = reason;
  lost_total++;
}

static const braid_protocol_ops peer_ops = {on_made, on_data, NULL,
                                            on_lost, NULL,    NULL};

static peer server_peer;

static braid_protocol_t *build(braid_factory_t *f, const braid_addr_t *a) {
  (void)f;
  (void)a;
  memset(&server_peer, 0, sizeof server_peer);
  server_peer.p.ops = &peer_ops;
  server_peer.server = 1;
  return &server_peer.p;
}

static int timed_out;

static void wd_cb(braid_timer_t *t, void *arg) {
  (void)t;
  (void)arg;
  timed_out = 1;
}

static void t_abort_resets(void **st) {
  (void)st;
  braid_factory_t f = {0};
  f.build = build;
  braid_listener_t *l;
  braid_addr_t a;
  assert_int_equal(braid_addr_ip(&a, "127.0.0.1", 0), 0);
  assert_int_equal(braid_listen(R, &a, NULL, &f, &l), 0);
  assert_int_equal(braid_listener_addr(l, &a), 0);
  peer client = {0};
  client.p.ops = &peer_ops;
  lost_total = 0;
  timed_out = 0;
  assert_int_equal(braid_connect(R, &a, NULL, &client.p), 0);
  braid_timer_t wd = BRAID_TIMER_INIT;
  assert_int_equal(braid_timer_start(R, &wd, BRAID_SEC(10), wd_cb, NULL), 0);
  while (lost_total < 2 && !timed_out)
    assert_true(braid_reactor_run_once(R, true) >= 0);
  braid_timer_cancel(&wd);
  assert_false(timed_out);
  assert_int_equal(server_peer.lost, 1);
  assert_int_equal(server_peer.reason, BRAID_ECONNABORTED);
  assert_int_equal(client.made, 1);
  assert_int_equal(client.lost, 1);
  /* A FIN would read as an end of input: a loss with reason 0. */
  assert_int_equal(client.reason, BRAID_ECONNRESET);
  assert_int_equal(braid_listener_close(l), 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(t_slots, setup, teardown),
      cmocka_unit_test_setup_teardown(t_dgram_opts_v4, setup, teardown),
      cmocka_unit_test_setup_teardown(t_dgram_opts_v6, setup, teardown),
      cmocka_unit_test_setup_teardown(t_mcast_membership, setup, teardown),
      cmocka_unit_test_setup_teardown(t_stream_opts, setup, teardown),
      cmocka_unit_test_setup_teardown(t_abort_resets, setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
