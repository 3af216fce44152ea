/* UDP sockets and multicast, on 127.0.0.1 and ::1 only. Every test runs
 * under a watchdog timer and tears its reactor down (leak-checked under
 * ASan and valgrind). Multicast uses TTL 0 so nothing can leave the host. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#ifdef _WIN32
#include <winsock2.h>
#include <windows.h>
#include <ws2tcpip.h>
#else
#include <net/if.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>
#endif

#include "braid/braid.h"
#include "core/internal.h" /* the I/O layer, for the truncation test */

/* The loopback interface for IPv6 multicast, as braid_udp_join_group takes
 * it, and its index (0: none). Windows names interfaces by GUID and braid
 * takes the index there (braid/udp.h); its loopback pseudo-interface has
 * index 1, and so does Linux's lo, which wine's sockets are. */
#ifdef _WIN32
static const char lo_name[] = "1";
static unsigned lo_index(void) {
  return 1;
}
#else
static const char lo_name[] = "lo";
static unsigned lo_index(void) {
  return if_nametoindex("lo");
}
#endif

static braid_reactor_t *R;
static braid_timer_t wd;
static int timed_out;

static void wd_cb(braid_timer_t *t, void *arg) {
  (void)t;
  (void)arg;
  timed_out = 1;
  braid_reactor_stop(R);
}

/* Run until a callback stops the reactor, nothing is left, or `ms` pass
 * (then timed_out is set). */
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

/* One socket's observations. */
typedef struct rx {
  braid_udp_t *u;
  int n, expect;
  char last[512];
  size_t last_len;
  braid_addr_t from;
  int err[8], nerr, stop_on_error;
  int closed;
  int close_on_recv, pause_on_recv;
  int in_order;    /* burst: each datagram carries its index */
  char big[65507]; /* the whole of the last datagram */
  size_t big_len;
} rx;

static void on_dgram(braid_udp_t *u, const void *data, size_t len,
                     const braid_addr_t *from) {
  rx *x = braid_udp_user(u);
  assert_ptr_equal(x->u, u);
  if (x->in_order && len == sizeof(int)) {
    int seq;
    memcpy(&seq, data, sizeof seq);
    if (seq != x->n)
      x->in_order = 0;
  }
  x->n++;
  x->last_len = len < sizeof x->last ? len : sizeof x->last;
  memcpy(x->last, data, x->last_len);
  x->big_len = len < sizeof x->big ? len : sizeof x->big;
  memcpy(x->big, data, x->big_len);
  x->from = *from;
  if (x->close_on_recv)
    assert_int_equal(braid_udp_close(u), 0);
  else if (x->pause_on_recv)
    assert_int_equal(braid_udp_pause(u), 0);
  if (x->n == x->expect)
    braid_reactor_stop(R);
}

static void on_error(braid_udp_t *u, int err) {
  rx *x = braid_udp_user(u);
  if (x->nerr < 8)
    x->err[x->nerr++] = err;
  if (x->stop_on_error)
    braid_reactor_stop(R);
}

static int closes_due; /* stop the reactor when this falls to 0 */

static void on_closed(braid_udp_t *u) {
  rx *x = braid_udp_user(u);
  x->closed++;
  x->u = NULL;
  if (closes_due > 0 && --closes_due == 0 && braid_reactor_running(R))
    braid_reactor_stop(R);
}

static const braid_udp_ops ops = {on_dgram, on_error, on_closed};

static int open_rx(rx *x, const char *ip, uint16_t port,
                   const braid_udp_options *o) {
  braid_addr_t a;
  assert_int_equal(braid_addr_ip(&a, ip, port), 0);
  return braid_udp_open(R, &a, o, &ops, x, &x->u);
}

static void addr_of(rx *x, braid_addr_t *a) {
  assert_int_equal(braid_udp_local_addr(x->u, a), 0);
}

static void assert_same_addr(const braid_addr_t *a, const braid_addr_t *b) {
  char sa[64], sb[64];
  assert_true(braid_addr_format(a, sa, sizeof sa) > 0);
  assert_true(braid_addr_format(b, sb, sizeof sb) > 0);
  assert_string_equal(sa, sb);
}

static void close_all(rx **xs, size_t n) {
  closes_due = 0;
  for (size_t i = 0; i < n; i++)
    if (xs[i]->u != NULL) {
      assert_int_equal(braid_udp_close(xs[i]->u), 0);
      closes_due++;
    }
  run_for(5000); /* stopped by the last close callback */
  assert_false(timed_out);
  for (size_t i = 0; i < n; i++)
    assert_int_equal(xs[i]->closed, 1);
}

/* ------------------------------------------------------------------------ */

static void ping_pong(const char *ip) {
  rx a = {0}, b = {0};
  int rc = open_rx(&a, ip, 0, NULL);
  if (rc == BRAID_EAFNOSUPPORT || rc == BRAID_EADDRNOTAVAIL) {
    print_message("%s unavailable here: %s\n", ip, braid_strerror(rc));
    skip();
  }
  assert_int_equal(rc, 0);
  assert_int_equal(open_rx(&b, ip, 0, NULL), 0);
  braid_addr_t aa, ba;
  addr_of(&a, &aa);
  addr_of(&b, &ba);
  assert_true(braid_addr_port(&aa) != 0);
  assert_int_equal(braid_udp_send(a.u, "hello", 5, &ba), 0);
  b.expect = 1;
  run_for(5000);
  assert_false(timed_out);
  assert_int_equal(b.n, 1);
  assert_int_equal(b.last_len, 5);
  assert_memory_equal(b.last, "hello", 5);
  assert_same_addr(&b.from, &aa);
  /* Reply to the from-address, gathering two pieces. */
  braid_iovec_t iov[2] = {{"wor", 3}, {"ld", 2}};
  assert_int_equal(braid_udp_sendv(b.u, iov, 2, &b.from), 0);
  /* An empty datagram is a datagram. */
  assert_int_equal(braid_udp_send(b.u, NULL, 0, &b.from), 0);
  a.expect = 2;
  run_for(5000);
  assert_false(timed_out);
  assert_int_equal(a.n, 2);
  assert_int_equal(a.last_len, 0);
  assert_same_addr(&a.from, &ba);
  assert_int_equal(braid_udp_send_queued(a.u), 0);
  rx *xs[] = {&a, &b};
  close_all(xs, 2);
}

static void t_v4(void **st) {
  (void)st;
  ping_pong("127.0.0.1");
}

static void t_v6(void **st) {
  (void)st;
  ping_pong("::1");
}

/* Datagrams larger than a stream read's chunk, up to IPv4's limit, come
 * whole through the platform's buffer (io_uring's ring buffers are 16
 * KiB: datagrams need their own). */
static void t_large(void **st) {
  (void)st;
  rx a = {0}, b = {0};
  braid_udp_options o = {0};
  o.recv_buffer_size = 1 << 20;
  assert_int_equal(open_rx(&a, "127.0.0.1", 0, NULL), 0);
  assert_int_equal(open_rx(&b, "127.0.0.1", 0, &o), 0);
  braid_addr_t ba;
  addr_of(&b, &ba);
  static char big[65507];
  for (size_t i = 0; i < sizeof big; i++)
    big[i] = (char)(i * 7);
  static const size_t sizes[] = {16385, 40000, sizeof big};
  for (size_t k = 0; k < 3; k++) {
    assert_int_equal(braid_udp_send(a.u, big, sizes[k], &ba), 0);
    b.expect = (int)k + 1;
    run_for(5000);
    assert_false(timed_out);
    assert_int_equal(b.nerr, 0);
    assert_int_equal(b.n, (int)k + 1);
    assert_int_equal(b.big_len, sizes[k]);
    assert_memory_equal(b.big, big, sizes[k]);
  }
  rx *xs[] = {&a, &b};
  close_all(xs, 2);
}

static void t_bad_args(void **st) {
  (void)st;
  rx a = {0};
  braid_addr_t v6, v4, mine;
  assert_int_equal(braid_addr_ip(&v6, "::1", 9), 0);
  assert_int_equal(braid_addr_ip(&v4, "127.0.0.1", 9), 0);
  assert_int_equal(braid_udp_open(R, NULL, NULL, &ops, &a, &a.u), BRAID_EINVAL);
  assert_null(a.u);
  assert_int_equal(open_rx(&a, "127.0.0.1", 0, NULL), 0);
  addr_of(&a, &mine);
  /* A second socket on the same port without reuse. */
  rx b = {0};
  char ip[] = "127.0.0.1";
  assert_int_equal(open_rx(&b, ip, braid_addr_port(&mine), NULL),
                   BRAID_EADDRINUSE);
  assert_null(b.u);
  assert_int_equal(braid_udp_send(a.u, "x", 1, &v6), BRAID_EAFNOSUPPORT);
  assert_int_equal(braid_udp_send(a.u, "x", 1, NULL), BRAID_ENOTCONN);
  static char big[70000];
  assert_int_equal(braid_udp_send(a.u, big, sizeof big, &v4), BRAID_EMSGSIZE);
  /* Larger than IPv4 allows (65507), refused by the kernel. */
  assert_int_equal(braid_udp_send(a.u, big, 65508, &mine), BRAID_EMSGSIZE);
  assert_int_equal(braid_udp_peer_addr(a.u, &v4), BRAID_ENOTCONN);
  assert_int_equal(braid_udp_set_multicast_ttl(a.u, 256), BRAID_EINVAL);
  assert_int_equal(braid_udp_join_group(a.u, &v6, NULL), BRAID_EAFNOSUPPORT);
  assert_int_equal(braid_udp_set_multicast_interface(a.u, "not-an-ip"),
                   BRAID_EINVAL);
  rx *xs[] = {&a};
  close_all(xs, 1);
}

/* ------------------------------------------------------------------------ */

#define BURST 200

static void t_burst(void **st) {
  (void)st;
  rx a = {0}, b = {0};
  braid_udp_options o = {0};
  o.recv_buffer_size = 1 << 20; /* hold the whole burst (capped by the OS) */
  assert_int_equal(open_rx(&a, "127.0.0.1", 0, NULL), 0);
  assert_int_equal(open_rx(&b, "127.0.0.1", 0, &o), 0);
  braid_addr_t ba;
  addr_of(&b, &ba);
  for (int round = 0; round < 2; round++) {
    b.n = 0;
    b.in_order = 1;
    b.expect = BURST;
    for (int i = 0; i < BURST; i++)
      assert_int_equal(braid_udp_send(a.u, &i, sizeof i, &ba), 0);
    /* One loop iteration: one pass over b, which must stop well before
     * the burst is drained, so that other sockets and timers get a turn. */
    assert_true(braid_reactor_run_once(R, true) >= 0);
    if (round == 0 && b.n == 0) /* the first receive was still deferred */
      assert_true(braid_reactor_run_once(R, true) >= 0);
    assert_true(b.n > 0);
    assert_true(b.n < BURST);
    run_for(5000);
    assert_false(timed_out);
    assert_int_equal(b.n, BURST);
    assert_true(b.in_order);
  }
  rx *xs[] = {&a, &b};
  close_all(xs, 2);
}

/* ------------------------------------------------------------------------ */

static void t_connected(void **st) {
  (void)st;
  rx a = {0}, b = {0}, c = {0};
  assert_int_equal(open_rx(&a, "127.0.0.1", 0, NULL), 0);
  assert_int_equal(open_rx(&b, "127.0.0.1", 0, NULL), 0);
  assert_int_equal(open_rx(&c, "127.0.0.1", 0, NULL), 0);
  braid_addr_t aa, ba, ca, peer;
  addr_of(&a, &aa);
  addr_of(&b, &ba);
  addr_of(&c, &ca);
  /* c's datagram is already in a's receive queue when a connects: it must
   * be filtered too. */
  assert_int_equal(braid_udp_send(c.u, "early", 5, &aa), 0);
  assert_int_equal(braid_udp_connect(a.u, &ba), 0);
  assert_int_equal(braid_udp_peer_addr(a.u, &peer), 0);
  assert_same_addr(&peer, &ba);
  assert_int_equal(braid_udp_send(a.u, "x", 1, &ca), BRAID_EISCONN);
  assert_int_equal(braid_udp_send(a.u, "to-b", 4, NULL), 0);
  assert_int_equal(braid_udp_send(a.u, "to-b2", 5, &ba), 0);
  b.expect = 2;
  run_for(5000);
  assert_false(timed_out);
  assert_int_equal(b.n, 2);
  assert_same_addr(&b.from, &aa);
  assert_int_equal(braid_udp_send(c.u, "from-c", 6, &aa), 0);
  assert_int_equal(braid_udp_send(b.u, "from-b", 6, &aa), 0);
  run_for(200);
  assert_true(timed_out);
  assert_int_equal(a.n, 1);
  assert_int_equal(a.last_len, 6);
  assert_memory_equal(a.last, "from-b", 6);
  assert_same_addr(&a.from, &ba);
  rx *xs[] = {&a, &b, &c};
  close_all(xs, 3);
}

/* Send to the connected peer until a refusal is reported, through error()
 * or by a send itself: braid/udp.h allows either, and wine 8, unlike Linux
 * and Windows, reports the ICMP port unreachable only to the next send.
 * Returns how many sends it took. */
static int knock_until_refused(rx *a) {
  for (int i = 1; i <= 20; i++) {
    int before = a->nerr;
    int rc = braid_udp_send(a->u, "knock", 5, NULL);
    if (rc == BRAID_ECONNREFUSED)
      return i;
    assert_int_equal(rc, 0);
    run_for(250);
    if (a->nerr > before) {
      assert_int_equal(a->nerr, before + 1);
      return i;
    }
  }
  fail_msg("no refusal reported");
  return 0;
}

static void t_refused(void **st) {
  (void)st;
  rx a = {0}, d = {0};
  assert_int_equal(open_rx(&a, "127.0.0.1", 0, NULL), 0);
  assert_int_equal(open_rx(&d, "127.0.0.1", 0, NULL), 0);
  braid_addr_t da;
  addr_of(&d, &da);
  rx *ds[] = {&d};
  close_all(ds, 1); /* nothing listens on da now */
  assert_int_equal(braid_udp_connect(a.u, &da), 0);
  a.stop_on_error = 1;
  knock_until_refused(&a);
  /* Reported once: the next send goes out (and is refused in turn), the
   * socket keeps working. */
  assert_true(knock_until_refused(&a) >= 2 || a.nerr == 2);
  for (int i = 0; i < a.nerr; i++)
    assert_int_equal(a.err[i], BRAID_ECONNREFUSED);
  rx *xs[] = {&a};
  close_all(xs, 1);
}

static void t_broadcast(void **st) {
  (void)st;
  rx a = {0}, b = {0};
  braid_udp_options o = {0};
  o.broadcast = true;
  assert_int_equal(open_rx(&a, "127.0.0.1", 0, NULL), 0);
  assert_int_equal(open_rx(&b, "127.0.0.1", 0, &o), 0);
  assert_int_equal(braid_udp_get_broadcast(a.u), 0);
  assert_int_equal(braid_udp_get_broadcast(b.u), 1);
  assert_int_equal(braid_udp_set_broadcast(a.u, true), 0);
  assert_int_equal(braid_udp_get_broadcast(a.u), 1);
  assert_int_equal(braid_udp_set_broadcast(a.u, false), 0);
  assert_int_equal(braid_udp_get_broadcast(a.u), 0);
  rx *xs[] = {&a, &b};
  close_all(xs, 2);
}

/* Every braid_udp_options field at once: the socket opens with each in
 * effect and carries datagrams both ways. reuse_port is refused with
 * BRAID_ENOTSUP where the OS has no SO_REUSEPORT (Windows); reuse_addr
 * lets a second socket bind the same port. */
static void options(const char *ip) {
  rx a = {0}, b = {0}, c = {0};
  braid_udp_options o = {0};
  o.send_queue_limit = 4096;
  o.recv_buffer_size = 1 << 16;
  o.send_buffer_size = 1 << 16;
  o.reuse_addr = true;
  o.reuse_port = true;
  o.ipv6_only = true;
  o.broadcast = true;
  int rc = open_rx(&a, ip, 0, &o);
  if (rc == BRAID_EAFNOSUPPORT || rc == BRAID_EADDRNOTAVAIL) {
    print_message("%s unavailable here: %s\n", ip, braid_strerror(rc));
    skip();
  }
  if (rc == BRAID_ENOTSUP) {
    assert_null(a.u);
    print_message("no SO_REUSEPORT here\n");
    o.reuse_port = false;
    rc = open_rx(&a, ip, 0, &o);
  }
  assert_int_equal(rc, 0);
  assert_int_equal(braid_udp_get_broadcast(a.u), 1);
  braid_addr_t aa, ca;
  addr_of(&a, &aa);
  assert_int_equal(open_rx(&b, ip, braid_addr_port(&aa), &o), 0);
  assert_int_equal(open_rx(&c, ip, 0, NULL), 0);
  addr_of(&c, &ca);
  assert_int_equal(braid_udp_send(a.u, "opts", 4, &ca), 0);
  c.expect = 1;
  run_for(5000);
  assert_false(timed_out);
  assert_int_equal(c.n, 1);
  assert_memory_equal(c.last, "opts", 4);
  /* With b gone, a alone holds the port and gets what is sent to it. */
  rx *bs[] = {&b};
  close_all(bs, 1);
  assert_int_equal(braid_udp_send(c.u, "back", 4, &aa), 0);
  a.expect = 1;
  run_for(5000);
  assert_false(timed_out);
  assert_int_equal(a.n, 1);
  assert_memory_equal(a.last, "back", 4);
  rx *xs[] = {&a, &c};
  close_all(xs, 2);
}

static void t_options_v4(void **st) {
  (void)st;
  options("127.0.0.1");
}

static void t_options_v6(void **st) {
  (void)st;
  options("::1");
}

/* ------------------------------------------------------------------------ */

/* A group of this process's own. Linux delivers a group's datagrams to
 * every socket bound to the group and port once any socket on the host
 * has joined it (IP_MULTICAST_ALL is on by default), so with one group
 * for all, a run on another poller in parallel kept the member receiving
 * after it had left. */
static void group_of_process(int v6, char *out, size_t len) {
#ifdef _WIN32
  unsigned id = (unsigned)GetCurrentProcessId();
#else
  unsigned id = (unsigned)getpid();
#endif
  if (v6)
    snprintf(out, len, "ff01::1:%x", id & 0xffffu);
  else
    snprintf(out, len, "239.255.%u.%u", (id >> 8) & 0xffu, id & 0xffu);
}

static void mcast(int v6) {
  char group_ip[64];
  group_of_process(v6, group_ip, sizeof group_ip);
  const char *iface = v6 ? lo_name : "127.0.0.1";
  if (v6 && lo_index() == 0) {
    print_message("no interface called %s\n", lo_name);
    skip();
  }
  rx m = {0}, s = {0};
  braid_udp_options o = {0};
  o.reuse_addr = true;
  /* The member binds the group address itself rather than a wildcard, so
   * it never listens on anything but loopback traffic to the group. */
  braid_addr_t g;
  assert_int_equal(braid_addr_ip(&g, group_ip, 0), 0);
  if (v6)
    ((struct sockaddr_in6 *)g.sa_.bytes)->sin6_scope_id = lo_index();
  int rc = braid_udp_open(R, &g, &o, &ops, &m, &m.u);
  if (rc < 0) {
    print_message("cannot bind %s: %s\n", group_ip, braid_strerror(rc));
    skip();
  }
  assert_int_equal(open_rx(&s, v6 ? "::1" : "127.0.0.1", 0, NULL), 0);
  braid_addr_t ma, sa;
  addr_of(&m, &ma);
  addr_of(&s, &sa);
  rc = braid_udp_join_group(m.u, &g, iface);
  rx *xs[] = {&m, &s};
  if (rc < 0) {
    close_all(xs, 2);
    print_message("kernel refuses to join %s on %s: %s\n", group_ip, iface,
                  braid_strerror(rc));
    skip();
  }
  assert_int_equal(braid_udp_join_group(m.u, &g, iface) < 0, 1); /* twice */
  assert_int_equal(braid_udp_set_multicast_interface(s.u, iface), 0);
  assert_int_equal(braid_udp_set_multicast_ttl(s.u, 0), 0);
  assert_int_equal(braid_udp_get_multicast_ttl(s.u), 0);
  assert_int_equal(braid_udp_set_multicast_ttl(s.u, 3), 0);
  assert_int_equal(braid_udp_get_multicast_ttl(s.u), 3);
  assert_int_equal(braid_udp_set_multicast_ttl(s.u, 0), 0); /* host only */
  assert_int_equal(braid_udp_set_multicast_loopback(s.u, false), 0);
  assert_int_equal(braid_udp_get_multicast_loopback(s.u), 0);
  assert_int_equal(braid_udp_set_multicast_loopback(s.u, true), 0);
  assert_int_equal(braid_udp_get_multicast_loopback(s.u), 1);
  braid_addr_t to = ma; /* the group and the member's port */
  rc = braid_udp_send(s.u, "to-group", 8, &to);
  if (rc == BRAID_ENETUNREACH || rc == BRAID_EHOSTUNREACH) {
    close_all(xs, 2);
    print_message("kernel cannot route %s through %s: %s\n", group_ip, iface,
                  braid_strerror(rc));
    skip();
  }
  assert_int_equal(rc, 0);
  m.expect = 1;
  run_for(5000);
  assert_false(timed_out);
  assert_int_equal(m.n, 1);
  assert_memory_equal(m.last, "to-group", 8);
  assert_same_addr(&m.from, &sa);
  assert_int_equal(braid_udp_leave_group(m.u, &g, iface), 0);
  assert_int_equal(braid_udp_send(s.u, "after", 5, &to), 0);
  run_for(200);
  assert_true(timed_out);
  assert_int_equal(m.n, 1);
  close_all(xs, 2);
}

static void t_mcast_v4(void **st) {
  (void)st;
  mcast(0);
}

static void t_mcast_v6(void **st) {
  (void)st;
  mcast(1);
}

/* ------------------------------------------------------------------------ */

static void resume_cb(braid_timer_t *t, void *arg) {
  (void)t;
  assert_int_equal(braid_udp_resume(((rx *)arg)->u), 0);
}

static void t_pause(void **st) {
  (void)st;
  rx a = {0}, b = {0};
  assert_int_equal(open_rx(&a, "127.0.0.1", 0, NULL), 0);
  assert_int_equal(open_rx(&b, "127.0.0.1", 0, NULL), 0);
  braid_addr_t ba;
  addr_of(&b, &ba);
  assert_int_equal(braid_udp_pause(b.u), 0);
  assert_int_equal(braid_udp_pause(b.u), 0);
  for (int i = 0; i < 3; i++)
    assert_int_equal(braid_udp_send(a.u, &i, sizeof i, &ba), 0);
  run_for(100);
  assert_true(timed_out);
  assert_int_equal(b.n, 0);
  /* Resume, but pause again from inside each datagram_received; a timer
   * resumes. Each turn delivers exactly one. */
  b.pause_on_recv = 1;
  b.in_order = 1;
  assert_int_equal(braid_udp_resume(b.u), 0);
  run_for(100);
  assert_int_equal(b.n, 1);
  braid_timer_t t = BRAID_TIMER_INIT;
  assert_int_equal(braid_timer_start(R, &t, BRAID_MSEC(1), resume_cb, &b), 0);
  run_for(100);
  assert_int_equal(b.n, 2);
  b.pause_on_recv = 0;
  b.expect = 3;
  assert_int_equal(braid_udp_resume(b.u), 0);
  run_for(5000);
  assert_false(timed_out);
  assert_int_equal(b.n, 3);
  assert_true(b.in_order);
  rx *xs[] = {&a, &b};
  close_all(xs, 2);
}

static void t_close_in_callback(void **st) {
  (void)st;
  rx a = {0}, b = {0};
  assert_int_equal(open_rx(&a, "127.0.0.1", 0, NULL), 0);
  assert_int_equal(open_rx(&b, "127.0.0.1", 0, NULL), 0);
  braid_addr_t ba;
  addr_of(&b, &ba);
  for (int i = 0; i < 5; i++)
    assert_int_equal(braid_udp_send(a.u, &i, sizeof i, &ba), 0);
  b.close_on_recv = 1;
  closes_due = 2;
  assert_int_equal(braid_udp_close(a.u), 0);
  assert_int_equal(braid_udp_close(a.u), BRAID_ECLOSED);
  run_for(5000); /* stopped when both are closed */
  assert_false(timed_out);
  assert_int_equal(b.n, 1);
  assert_int_equal(b.closed, 1);
  assert_int_equal(a.closed, 1);
}

static void t_destroy_open(void **st) {
  (void)st;
  rx a = {0}, b = {0};
  assert_int_equal(open_rx(&a, "127.0.0.1", 0, NULL), 0);
  assert_int_equal(
      open_rx(&b, "::1", 0, NULL) == 0 ? 0 : open_rx(&b, "127.0.0.1", 0, NULL),
      0);
  braid_addr_t ba;
  addr_of(&b, &ba);
  assert_int_equal(braid_udp_pause(a.u), 0);
  /* Destroyed with sockets open, a paused one and one with a datagram
   * waiting: both are closed, their closed() runs, nothing leaks. */
  assert_int_equal(braid_udp_send(a.u, "x", 1, &ba) <= 0, 1);
  assert_int_equal(braid_reactor_destroy(R), 0);
  assert_int_equal(braid_reactor_create(&R, NULL), 0);
  assert_int_equal(a.closed, 1);
  assert_int_equal(b.closed, 1);
}

/* ------------------------------------------------------------------------
 * The I/O layer directly: a datagram larger than the receive buffer.
 * ------------------------------------------------------------------------ */

static intptr_t trunc_status;
static int trunc_done;

static void trunc_cb(braid__op *op, intptr_t status) {
  (void)op;
  trunc_status = status;
  trunc_done = 1;
  braid_reactor_stop(R);
}

static void sock_closed(braid__sock *s) {
  (void)s;
}

static void t_truncated(void **st) {
  (void)st;
  const braid__io_ops *io = R->io;
  braid__sock s;
  assert_int_equal(io->sock_open(R, &s, AF_INET, SOCK_DGRAM), 0);
  braid_addr_t a;
  assert_int_equal(braid_addr_ip(&a, "127.0.0.1", 0), 0);
  assert_int_equal(
      io->sock_bind(&s, (struct sockaddr *)a.sa_.bytes, (int)a.len_), 0);
  int len = (int)sizeof a.sa_;
  assert_int_equal(io->sock_name(&s, 0, (struct sockaddr *)a.sa_.bytes, &len),
                   0);
  a.len_ = (uint32_t)len;
  rx x = {0};
  assert_int_equal(open_rx(&x, "127.0.0.1", 0, NULL), 0);
  char big[100];
  memset(big, 'z', sizeof big);
  assert_int_equal(braid_udp_send(x.u, big, sizeof big, &a), 0);
  assert_int_equal(braid_udp_send(x.u, big, 10, &a), 0);
  char buf[10];
  braid_addr_t from;
  for (int round = 0; round < 2; round++) {
    braid__op op;
    memset(&op, 0, sizeof op);
    op.type = BRAID__OP_RECVFROM;
    op.cb = trunc_cb;
    op.u.read.base = buf;
    op.u.read.len = sizeof buf;
    op.addr = (struct sockaddr *)from.sa_.bytes;
    op.addrlen = (int)sizeof from.sa_;
    trunc_done = 0;
    intptr_t rc = io->submit(&s, &op);
    if (rc == BRAID__PENDING) {
      run_for(5000);
      assert_true(trunc_done);
      rc = trunc_status;
    }
    assert_int_equal(rc, 10);
    assert_memory_equal(buf, big, 10);
    if (round == 0)
      assert_true(op.flags & BRAID__OPF_TRUNCATED);
    else
      assert_false(op.flags & BRAID__OPF_TRUNCATED); /* exactly full */
  }
  io->close(&s, sock_closed);
  rx *xs[] = {&x};
  close_all(xs, 1);
}

/* ------------------------------------------------------------------------
 * The send queue. Loopback UDP never makes a sender wait (lo has no
 * queue, so the kernel never says EAGAIN), so sends are held back by an
 * I/O layer double that wraps the real one.
 * ------------------------------------------------------------------------ */

static const braid__io_ops *real_io;
static braid__io_ops holding_io;
static int holding;
static braid__op *held;

static intptr_t holding_submit(braid__sock *s, braid__op *op) {
  if (holding && op->type == BRAID__OP_SENDTO) {
    if (op->flags & BRAID__OPF_TRY)
      return 0;        /* "the kernel took nothing" */
    assert_null(held); /* one send in flight at a time */
    op->sock = s;
    held = op;
    return BRAID__PENDING;
  }
  return real_io->submit(s, op);
}

/* Complete the held send for real; the queue behind it flushes. A
 * readiness engine sends at once and the status is handed to the
 * callback here; a completion platform (io_uring) may answer PENDING to
 * any op, as io.h allows, and then calls the callback itself from wait():
 * run the loop until the queue has drained. */
static void release_held(braid_udp_t *u) {
  holding = 0;
  braid__op *op = held;
  held = NULL;
  intptr_t st = real_io->submit(op->sock, op);
  if (st != BRAID__PENDING)
    op->cb(op, st);
  for (int i = 0; i < 1000 && braid_udp_send_queued(u) > 0; i++)
    assert_true(braid_reactor_run_once(R, true) >= 0);
}

static void t_send_queue(void **st) {
  (void)st;
  real_io = R->io;
  holding_io = *real_io;
  holding_io.submit = holding_submit;
  R->io = &holding_io;
  rx a = {0}, b = {0};
  braid_udp_options o = {0};
  o.send_queue_limit = 3 * sizeof(int) + 65508;
  assert_int_equal(open_rx(&a, "127.0.0.1", 0, &o), 0);
  assert_int_equal(open_rx(&b, "127.0.0.1", 0, NULL), 0);
  braid_addr_t ba;
  addr_of(&b, &ba);
  holding = 1;
  static char big[65508]; /* over IPv4's limit: fails when sent */
  int i = 0;
  assert_int_equal(braid_udp_send(a.u, &i, sizeof i, &ba), 0);
  i = 1;
  assert_int_equal(braid_udp_send(a.u, &i, sizeof i, &ba), 0);
  assert_int_equal(braid_udp_send(a.u, big, sizeof big, &ba), 0);
  i = 2;
  assert_int_equal(braid_udp_send(a.u, &i, sizeof i, &ba), 0);
  assert_int_equal(braid_udp_send_queued(a.u), 3 * sizeof i + sizeof big);
  /* Full: dropped, and said so. */
  assert_int_equal(braid_udp_send(a.u, &i, sizeof i, &ba), BRAID_ELIMIT);
  assert_int_equal(braid_udp_connect(a.u, &ba), BRAID_EBUSY);
  assert_int_equal(b.n, 0);
  b.in_order = 1;
  release_held(a.u);
  assert_int_equal(braid_udp_send_queued(a.u), 0);
  assert_int_equal(a.nerr, 1);
  assert_int_equal(a.err[0], BRAID_EMSGSIZE);
  /* Where release_held ran the loop, b may have everything already. */
  if (b.n < 3) {
    b.expect = 3;
    run_for(5000);
    assert_false(timed_out);
  }
  assert_int_equal(b.n, 3);
  assert_true(b.in_order);
  /* Closing with a send in flight and one queued: the in-flight one is
   * cancelled (the double does what the platform's close does), the
   * queued one dropped, and nothing leaks. */
  holding = 1;
  assert_int_equal(braid_udp_send(a.u, &i, sizeof i, &ba), 0);
  assert_int_equal(braid_udp_send(a.u, &i, sizeof i, &ba), 0);
  assert_non_null(held);
  assert_int_equal(braid_udp_send_queued(a.u), 2 * sizeof i);
  closes_due = 2;
  assert_int_equal(braid_udp_close(a.u), 0);
  assert_int_equal(braid_udp_close(b.u), 0);
  braid__op *op = held;
  held = NULL;
  op->cb(op, BRAID_ECANCELED);
  run_for(5000);
  assert_false(timed_out);
  assert_int_equal(a.closed, 1);
  assert_int_equal(b.closed, 1);
  assert_int_equal(a.nerr, 1);
  R->io = real_io;
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(t_v4, setup, teardown),
      cmocka_unit_test_setup_teardown(t_v6, setup, teardown),
      cmocka_unit_test_setup_teardown(t_large, setup, teardown),
      cmocka_unit_test_setup_teardown(t_bad_args, setup, teardown),
      cmocka_unit_test_setup_teardown(t_burst, setup, teardown),
      cmocka_unit_test_setup_teardown(t_connected, setup, teardown),
      cmocka_unit_test_setup_teardown(t_refused, setup, teardown),
      cmocka_unit_test_setup_teardown(t_broadcast, setup, teardown),
      cmocka_unit_test_setup_teardown(t_options_v4, setup, teardown),
      cmocka_unit_test_setup_teardown(t_options_v6, setup, teardown),
      cmocka_unit_test_setup_teardown(t_mcast_v4, setup, teardown),
      cmocka_unit_test_setup_teardown(t_mcast_v6, setup, teardown),
      cmocka_unit_test_setup_teardown(t_pause, setup, teardown),
      cmocka_unit_test_setup_teardown(t_close_in_callback, setup, teardown),
      cmocka_unit_test_setup_teardown(t_destroy_open, setup, teardown),
      cmocka_unit_test_setup_teardown(t_truncated, setup, teardown),
      cmocka_unit_test_setup_teardown(t_send_queue, setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
