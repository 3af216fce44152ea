/* Transport conformance: TCP and Unix stream sockets over real sockets on
 * loopback (127.0.0.1, ::1) and Unix paths under a private mkdtemp
 * directory. Every test runs its reactor under a watchdog timer, tears it
 * down, and checks that every protocol saw connection_lost exactly once.
 * The poller comes from BRAID_POLLER (tests/meson.build runs this file once
 * per built poller). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "braid/braid.h"

#define WATCHDOG_NS BRAID_SEC(5)
#define CHUNK (64u * 1024u)

/* ------------------------------------------------------------------------
 * Harness: a reactor with a watchdog and a log capture
 * ------------------------------------------------------------------------ */

static char g_tmpdir[64];
static int g_timed_out;
static braid_timer_t g_watchdog;
static char g_log[4096];
static int g_warns;

/* Valgrind runs this suite some 20 times slower: the watchdog allows more
 * time and the bulk test moves less data (BRAID_TEST_SMALL does the same
 * by hand). */
static int under_valgrind(void) {
  const char *preload = getenv("LD_PRELOAD");
  return preload != NULL && strstr(preload, "vgpreload") != NULL;
}

static void watchdog_cb(braid_timer_t *t, void *arg) {
  (void)t;
  g_timed_out = 1;
  /* Without this, the run_once that fired the watchdog could block for
   * good in its wait. */
  braid_reactor_stop(arg);
}

static void log_cb(void *arg, braid_log_level level, const char *domain,
                   const char *msg) {
  (void)arg;
  if (level >= BRAID_LOG_WARN)
    g_warns++;
  size_t n = strlen(g_log);
  snprintf(g_log + n, sizeof g_log - n, "[%s] %s: %s\n",
           braid_log_level_name(level), domain, msg);
}

static braid_reactor_t *reactor_new(void) {
  braid_reactor_t *r = NULL;
  braid_reactor_options o = {0};
  o.log_cb = log_cb;
  assert_int_equal(braid_reactor_create(&r, &o), 0);
  g_timed_out = 0;
  g_log[0] = '\0';
  g_warns = 0;
  memset(&g_watchdog, 0, sizeof g_watchdog);
  assert_int_equal(
      braid_timer_start(r, &g_watchdog,
                        under_valgrind() ? 6 * WATCHDOG_NS : WATCHDOG_NS,
                        watchdog_cb, r),
      0);
  return r;
}

/* Bulk tests move tens of MiB: under sanitizers on a busy machine they need
 * more than the default watchdog, but still a bound. */
static void watchdog_extend(uint64_t ns) {
  assert_int_equal(
      braid_timer_reset(&g_watchdog, under_valgrind() ? 6 * ns : ns), 0);
}

static void reactor_free(braid_reactor_t *r) {
  if (braid_timer_active(&g_watchdog))
    braid_timer_cancel(&g_watchdog);
  assert_int_equal(braid_reactor_destroy(r), 0);
}

/* Run the loop until `cond` holds; fail the test when the watchdog fires. */
#define RUN_UNTIL(r, cond)                                                     \
  do {                                                                         \
    while (!(cond) && !g_timed_out)                                            \
      assert_true(braid_reactor_run_once((r), true) >= 0);                     \
    if (g_timed_out)                                                           \
      fail_msg("watchdog: timed out waiting for %s (line %d)", #cond,          \
               __LINE__);                                                      \
  } while (0)

/* Run the loop without blocking, sleeping up to 1 ms on a raw descriptor
 * between passes: for tests that drive raw sockets by hand. */
static void pump(braid_reactor_t *r, int fd, short events) {
  assert_true(braid_reactor_run_once(r, false) >= 0);
  struct pollfd p = {fd, events, 0};
  if (fd >= 0)
    poll(&p, 1, 1);
}

#define PUMP_UNTIL(r, fd, ev, cond)                                            \
  do {                                                                         \
    while (!(cond) && !g_timed_out)                                            \
      pump((r), (fd), (ev));                                                   \
    if (g_timed_out)                                                           \
      fail_msg("watchdog: timed out waiting for %s (line %d)", #cond,          \
               __LINE__);                                                      \
  } while (0)

/* Run the loop for about `ns` nanoseconds. */
static void run_for(braid_reactor_t *r, uint64_t ns) {
  uint64_t end = braid_hrtime() + ns;
  while (braid_hrtime() < end && !g_timed_out) {
    assert_true(braid_reactor_run_once(r, false) >= 0);
    poll(NULL, 0, 1);
  }
}

/* ------------------------------------------------------------------------
 * A deterministic byte stream (xorshift64*), generated and checked in
 * arbitrary pieces.
 * ------------------------------------------------------------------------ */

typedef struct prng {
  uint64_t s, word;
  unsigned left;
} prng;

static void prng_init(prng *g, uint64_t seed) {
  g->s = seed ? seed : 0x9E3779B97F4A7C15u;
  g->left = 0;
}

static inline unsigned char prng_byte(prng *g) {
  if (g->left == 0) {
    g->s ^= g->s >> 12;
    g->s ^= g->s << 25;
    g->s ^= g->s >> 27;
    g->word = g->s * 2685821657736338717u;
    g->left = 8;
  }
  unsigned char b = (unsigned char)g->word;
  g->word >>= 8;
  g->left--;
  return b;
}

static void prng_fill(prng *g, unsigned char *buf, size_t n) {
  for (size_t i = 0; i < n; i++)
    buf[i] = prng_byte(g);
}

/* Returns the offset of the first mismatch, or n. */
static size_t prng_check(prng *g, const unsigned char *buf, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (buf[i] != prng_byte(g))
      return i;
  return n;
}

/* ------------------------------------------------------------------------
 * A configurable test protocol
 * ------------------------------------------------------------------------ */

typedef struct tp tp;
struct tp {
  braid_protocol_t base;
  braid_transport_t *t;
  int made, lost, reason, eofs, pauses, resumes, datas;
  int data_after_lost;
  /* received bytes, kept when keep_rx */
  int keep_rx;
  unsigned char *rx;
  size_t rxlen, rxcap;
  size_t nrx; /* total received */
  /* verify received bytes against a PRNG stream */
  int verify;
  prng vgen;
  size_t bad_at; /* SIZE_MAX: all good */
  /* send a PRNG stream of `to_send` bytes, honouring pause_writing */
  size_t to_send, sent;
  int honour_pause;
  int writing_paused;
  prng sgen;
  size_t max_queued;
  int close_when_sent;
  /* echo received bytes (pausing reading at the high mark) */
  int echo;
  /* hooks */
  void (*on_made)(tp *);
  void (*on_data)(tp *, const void *, size_t);
  void (*on_eof)(tp *);
  void (*on_lost)(tp *);
  void *user;
  tp *partner;
};

static int g_lost_events; /* connection_lost calls, all protocols */

static void tp_pump(tp *p);

static void tp_made(braid_protocol_t *bp, braid_transport_t *t) {
  tp *p = (tp *)bp;
  assert_int_equal(p->made, 0);
  assert_int_equal(p->lost, 0);
  assert_ptr_equal(bp->transport, t);
  p->made++;
  p->t = t;
  if (p->on_made != NULL)
    p->on_made(p);
  if (p->to_send > 0)
    tp_pump(p);
}

static void tp_data(braid_protocol_t *bp, const void *data, size_t len) {
  tp *p = (tp *)bp;
  assert_true(len > 0);
  if (p->lost)
    p->data_after_lost++;
  p->datas++;
  p->nrx += len;
  if (p->keep_rx) {
    if (p->rxlen + len > p->rxcap) {
      size_t cap = p->rxcap ? p->rxcap : 4096;
      while (cap < p->rxlen + len)
        cap *= 2;
      p->rx = realloc(p->rx, cap);
      assert_non_null(p->rx);
      p->rxcap = cap;
    }
    memcpy(p->rx + p->rxlen, data, len);
    p->rxlen += len;
  }
  if (p->verify && p->bad_at == SIZE_MAX) {
    size_t at = prng_check(&p->vgen, data, len);
    if (at != len)
      p->bad_at = p->nrx - len + at;
  }
  if (p->echo)
    assert_int_equal(braid_transport_write(p->t, data, len), 0);
  if (p->on_data != NULL)
    p->on_data(p, data, len);
}

static void tp_eof(braid_protocol_t *bp) {
  tp *p = (tp *)bp;
  assert_int_equal(p->lost, 0);
  p->eofs++;
  if (p->on_eof != NULL)
    p->on_eof(p);
  else /* Half-close aware, but with nothing more to say: close. */
    assert_int_equal(braid_transport_close(p->t), 0);
}

static void tp_lost(braid_protocol_t *bp, int reason) {
  tp *p = (tp *)bp;
  assert_int_equal(p->lost, 0);
  p->lost++;
  p->reason = reason;
  g_lost_events++;
  if (p->on_lost != NULL)
    p->on_lost(p);
  p->t = NULL;
}

static void tp_pause(braid_protocol_t *bp) {
  tp *p = (tp *)bp;
  assert_int_equal(p->writing_paused, 0);
  p->pauses++;
  p->writing_paused = 1;
  if (p->echo)
    braid_transport_pause_reading(p->t);
}

static void tp_resume(braid_protocol_t *bp) {
  tp *p = (tp *)bp;
  assert_int_equal(p->writing_paused, 1);
  p->resumes++;
  p->writing_paused = 0;
  if (p->echo)
    braid_transport_resume_reading(p->t);
  if (p->to_send > 0)
    tp_pump(p);
}

static const braid_protocol_ops tp_ops = {
    .connection_made = tp_made,
    .data_received = tp_data,
    .eof_received = tp_eof,
    .connection_lost = tp_lost,
    .pause_writing = tp_pause,
    .resume_writing = tp_resume,
};

/* The same without eof_received: braid closes after the peer's EOF. */
static const braid_protocol_ops tp_ops_noeof = {
    .connection_made = tp_made,
    .data_received = tp_data,
    .connection_lost = tp_lost,
    .pause_writing = tp_pause,
    .resume_writing = tp_resume,
};

static void tp_init(tp *p, int with_eof) {
  memset(p, 0, sizeof *p);
  p->base.ops = with_eof ? &tp_ops : &tp_ops_noeof;
  p->bad_at = SIZE_MAX;
}

static void tp_fini(tp *p) {
  free(p->rx);
  p->rx = NULL;
}

/* Write the PRNG stream while the transport lets us. */
static void tp_pump(tp *p) {
  unsigned char buf[CHUNK];
  while (p->t != NULL && p->sent < p->to_send &&
         !(p->honour_pause && p->writing_paused)) {
    size_t n = p->to_send - p->sent;
    if (n > sizeof buf)
      n = sizeof buf;
    prng_fill(&p->sgen, buf, n);
    assert_int_equal(braid_transport_write(p->t, buf, n), 0);
    p->sent += n;
    size_t q = braid_transport_write_queued(p->t);
    if (q > p->max_queued)
      p->max_queued = q;
  }
  if (p->t != NULL && p->sent == p->to_send && p->close_when_sent) {
    p->close_when_sent = 0;
    assert_int_equal(braid_transport_close(p->t), 0);
  }
}

/* ------------------------------------------------------------------------
 * A factory that builds tp protocols from a template and keeps them
 * ------------------------------------------------------------------------ */

#define MAX_SERVED 16

typedef struct server {
  braid_factory_t f;
  tp tmpl; /* copied into each new protocol */
  int with_eof;
  int refuse; /* build returns NULL */
  tp *conns[MAX_SERVED];
  int n;
  braid_addr_t last_peer;
} server;

static braid_protocol_t *server_build(braid_factory_t *f,
                                      const braid_addr_t *peer) {
  server *s = (server *)f;
  assert_non_null(peer);
  s->last_peer = *peer;
  if (s->refuse) {
    s->n++;
    return NULL;
  }
  assert_true(s->n < MAX_SERVED);
  tp *p = malloc(sizeof *p);
  assert_non_null(p);
  *p = s->tmpl;
  p->base.ops = s->with_eof ? &tp_ops : &tp_ops_noeof;
  p->bad_at = SIZE_MAX;
  s->conns[s->n++] = p;
  return &p->base;
}

static void server_init(server *s, int with_eof) {
  memset(s, 0, sizeof *s);
  s->f.build = server_build;
  s->with_eof = with_eof;
  tp_init(&s->tmpl, with_eof);
}

/* Check every served protocol saw connection_lost once, and free them. */
static void server_fini(server *s) {
  for (int i = 0; i < s->n && !s->refuse; i++) {
    assert_int_equal(s->conns[i]->lost, 1);
    assert_int_equal(s->conns[i]->data_after_lost, 0);
    tp_fini(s->conns[i]);
    free(s->conns[i]);
  }
  s->n = 0;
}

static int server_all_lost(const server *s) {
  for (int i = 0; i < s->n; i++)
    if (!s->conns[i]->lost)
      return 0;
  return 1;
}

static braid_listener_t *listen_on(braid_reactor_t *r, const braid_addr_t *a,
                                   server *s, braid_addr_t *bound) {
  braid_listener_t *l = NULL;
  int rc = braid_listen(r, a, NULL, &s->f, &l);
  if (rc != 0)
    fail_msg("braid_listen: %s", braid_strerror(rc));
  assert_int_equal(braid_listener_addr(l, bound), 0);
  return l;
}

static braid_listener_t *listen_ip(braid_reactor_t *r, const char *ip,
                                   server *s, braid_addr_t *bound) {
  braid_addr_t a;
  assert_int_equal(braid_addr_ip(&a, ip, 0), 0);
  braid_listener_t *l = listen_on(r, &a, s, bound);
  assert_int_not_equal(braid_addr_port(bound), 0);
  return l;
}

static void unix_path(char *buf, size_t n, const char *name) {
  snprintf(buf, n, "%s/%s", g_tmpdir, name);
  unlink(buf);
}

/* ------------------------------------------------------------------------
 * Raw POSIX sockets for the other end where braid must not be both ends
 * ------------------------------------------------------------------------ */

static void set_nonblock(int fd) {
  int fl = fcntl(fd, F_GETFL);
  assert_true(fl >= 0);
  assert_int_equal(fcntl(fd, F_SETFL, fl | O_NONBLOCK), 0);
}

/* A raw socket connected (maybe still in progress) to `a`. */
static int raw_connect(const braid_addr_t *a) {
  int fam = braid_addr_family(a);
  int fd = socket(fam, SOCK_STREAM | SOCK_CLOEXEC, 0);
  assert_true(fd >= 0);
  set_nonblock(fd);
  socklen_t len = fam == AF_INET    ? sizeof(struct sockaddr_in)
                  : fam == AF_INET6 ? sizeof(struct sockaddr_in6)
                                    : sizeof(struct sockaddr_un);
  int rc = connect(fd, (const struct sockaddr *)a, len);
  assert_true(rc == 0 || errno == EINPROGRESS);
  return fd;
}

/* A raw listener on 127.0.0.1, port 0. */
static int raw_listen(int backlog, braid_addr_t *bound) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  assert_true(fd >= 0);
  struct sockaddr_in sin;
  memset(&sin, 0, sizeof sin);
  sin.sin_family = AF_INET;
  sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  assert_int_equal(bind(fd, (struct sockaddr *)&sin, sizeof sin), 0);
  assert_int_equal(listen(fd, backlog), 0);
  socklen_t len = sizeof sin;
  assert_int_equal(getsockname(fd, (struct sockaddr *)&sin, &len), 0);
  assert_int_equal(braid_addr_ip(bound, "127.0.0.1", ntohs(sin.sin_port)), 0);
  return fd;
}

static void raw_linger0_close(int fd) {
  struct linger lg = {1, 0};
  assert_int_equal(setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg), 0);
  close(fd);
}

/* ------------------------------------------------------------------------
 * Echo round trips on every address family
 * ------------------------------------------------------------------------ */

static void echo_roundtrip(const braid_addr_t *listen_addr, int is_tcp) {
  braid_reactor_t *r = reactor_new();
  server srv;
  server_init(&srv, 1);
  srv.tmpl.echo = 1;
  braid_addr_t bound;
  braid_listener_t *l = listen_on(r, listen_addr, &srv, &bound);
  assert_int_equal(braid_addr_family(&bound), braid_addr_family(listen_addr));

  tp c;
  tp_init(&c, 1);
  c.keep_rx = 1;
  assert_int_equal(braid_connect(r, &bound, NULL, &c.base), 0);
  assert_int_equal(c.made, 0); /* never from inside braid_connect */
  RUN_UNTIL(r, c.made && srv.n == 1 && srv.conns[0]->made);

  static const char msg[] = "hello, braid";
  assert_int_equal(braid_transport_write(c.t, msg, sizeof msg), 0);
  RUN_UNTIL(r, c.rxlen == sizeof msg);
  assert_memory_equal(c.rx, msg, sizeof msg);

  /* Addresses: the client's peer is the listener, the server's peer is the
   * client's local address. */
  braid_addr_t cl, cp, sl, sp;
  char b1[128], b2[128];
  assert_int_equal(braid_transport_local_addr(c.t, &cl), 0);
  assert_int_equal(braid_transport_peer_addr(c.t, &cp), 0);
  assert_int_equal(braid_transport_local_addr(srv.conns[0]->t, &sl), 0);
  assert_int_equal(braid_transport_peer_addr(srv.conns[0]->t, &sp), 0);
  assert_true(braid_addr_format(&cp, b1, sizeof b1) > 0);
  assert_true(braid_addr_format(&bound, b2, sizeof b2) > 0);
  assert_string_equal(b1, b2);
  assert_true(braid_addr_format(&sl, b1, sizeof b1) > 0);
  assert_string_equal(b1, b2);
  if (is_tcp) {
    assert_true(braid_addr_format(&cl, b1, sizeof b1) > 0);
    assert_true(braid_addr_format(&sp, b2, sizeof b2) > 0);
    assert_string_equal(b1, b2);
    assert_true(braid_addr_format(&srv.last_peer, b2, sizeof b2) > 0);
    assert_string_equal(b1, b2);
    assert_int_equal(braid_addr_port(&cp), braid_addr_port(&bound));
  }

  /* Socket options: TCP only. */
  int want = is_tcp ? 0 : BRAID_ENOTSUP;
  assert_int_equal(braid_transport_set_nodelay(c.t, true), want);
  assert_int_equal(braid_transport_set_nodelay(c.t, false), want);
  assert_int_equal(braid_transport_set_keepalive(c.t, true, 30), want);
  assert_int_equal(braid_transport_set_keepalive(c.t, true, 0), want);
  assert_int_equal(braid_transport_set_keepalive(c.t, false, 0), want);
  assert_int_equal(braid_transport_set_nodelay(srv.conns[0]->t, true), want);
  assert_ptr_equal(braid_transport_reactor(c.t), r);

  /* A second round trip after the options. */
  assert_int_equal(braid_transport_write(c.t, msg, sizeof msg), 0);
  RUN_UNTIL(r, c.rxlen == 2 * sizeof msg);

  /* Clean close from the client: both ends see connection_lost(0). */
  assert_int_equal(braid_transport_close(c.t), 0);
  RUN_UNTIL(r, c.lost && srv.conns[0]->lost);
  assert_int_equal(c.reason, 0);
  assert_int_equal(srv.conns[0]->reason, 0);
  assert_int_equal(srv.conns[0]->eofs, 1);

  assert_int_equal(braid_listener_close(l), 0);
  reactor_free(r);
  server_fini(&srv);
  tp_fini(&c);
}

static void t_echo_ipv4(void **st) {
  (void)st;
  braid_addr_t a;
  assert_int_equal(braid_addr_ip(&a, "127.0.0.1", 0), 0);
  echo_roundtrip(&a, 1);
}

static void t_echo_ipv6(void **st) {
  (void)st;
  braid_addr_t a;
  assert_int_equal(braid_addr_ip(&a, "::1", 0), 0);
  echo_roundtrip(&a, 1);
}

static void t_echo_unix(void **st) {
  (void)st;
  char path[128];
  unix_path(path, sizeof path, "echo.sock");
  braid_addr_t a;
  assert_int_equal(braid_addr_unix(&a, path), 0);
  echo_roundtrip(&a, 0);
  unlink(path);
}

static void t_echo_unix_abstract(void **st) {
  (void)st;
#ifdef __linux__
  char name[64];
  snprintf(name, sizeof name, "@braid-test-%ld", (long)getpid());
  braid_addr_t a;
  assert_int_equal(braid_addr_unix(&a, name), 0);
  echo_roundtrip(&a, 0);
  char buf[128];
  assert_true(braid_addr_format(&a, buf, sizeof buf) > 0);
  char want[128];
  snprintf(want, sizeof want, "unix:%s", name);
  assert_string_equal(buf, want);
#else
  skip();
#endif
}

/* ------------------------------------------------------------------------
 * Bulk data and flow control
 * ------------------------------------------------------------------------ */

/* 64 MiB of a PRNG stream through a braid echo server, verified byte by
 * byte; the sender honours pause_writing. */
static void t_large_transfer(void **st) {
  (void)st;
  size_t total = 64u << 20;
  const char *small = getenv("BRAID_TEST_SMALL");
  if ((small != NULL && *small != '\0') || under_valgrind())
    total = 8u << 20;
  braid_reactor_t *r = reactor_new();
  watchdog_extend(BRAID_SEC(20));
  server srv;
  server_init(&srv, 0);
  srv.tmpl.echo = 1;
  braid_addr_t bound;
  braid_listener_t *l = listen_ip(r, "127.0.0.1", &srv, &bound);
  tp c;
  tp_init(&c, 1);
  c.verify = 1;
  prng_init(&c.vgen, 42);
  prng_init(&c.sgen, 42);
  c.to_send = total;
  c.honour_pause = 1;
  assert_int_equal(braid_connect(r, &bound, NULL, &c.base), 0);
  RUN_UNTIL(r, c.nrx == total || c.lost || c.bad_at != SIZE_MAX);
  assert_int_equal(c.bad_at, SIZE_MAX);
  assert_int_equal(c.lost, 0);
  assert_int_equal(c.nrx, total);
  /* Both ends had to wait on each other with 64 MiB in flight. */
  assert_true(c.pauses > 0);
  assert_int_equal(c.resumes, c.pauses);
  /* All written: nothing is queued anywhere. */
  assert_int_equal(braid_transport_write_queued(c.t), 0);
  assert_int_equal(braid_transport_write_queued(srv.conns[0]->t), 0);
  /* The sender's queue stayed bounded by its high mark plus one write. */
  assert_true(c.max_queued <= 64u * 1024u + CHUNK);
  assert_int_equal(braid_transport_close(c.t), 0);
  RUN_UNTIL(r, c.lost && srv.conns[0]->lost);
  assert_int_equal(c.reason, 0);
  assert_int_equal(srv.conns[0]->reason, 0);
  braid_listener_close(l);
  reactor_free(r);
  server_fini(&srv);
}

/* set_write_limits: argument errors; pause_writing and resume_writing
 * follow the marks, including when the marks move. */
static void t_write_limits(void **st) {
  (void)st;
  braid_reactor_t *r = reactor_new();
  braid_addr_t bound;
  int lfd = raw_listen(8, &bound);
  tp c;
  tp_init(&c, 1);
  assert_int_equal(braid_connect(r, &bound, NULL, &c.base), 0);
  RUN_UNTIL(r, c.made);
  int pfd = accept(lfd, NULL, NULL);
  assert_true(pfd >= 0);
  set_nonblock(pfd);

  assert_int_equal(braid_transport_set_write_limits(NULL, 10, 1), BRAID_EINVAL);
  assert_int_equal(braid_transport_set_write_limits(c.t, 10, 20), BRAID_EINVAL);
  assert_int_equal(braid_transport_set_write_limits(c.t, 0, 0), 0);
  assert_int_equal(braid_transport_write_queued(c.t), 0);
  assert_int_equal(c.pauses, 0);

  /* The peer does not read: 16 MiB cannot all be taken by the kernel. */
  size_t big = 16u << 20;
  unsigned char *buf = calloc(1, big);
  assert_non_null(buf);
  assert_int_equal(braid_transport_write(c.t, buf, big), 0);
  size_t q = braid_transport_write_queued(c.t);
  assert_true(q > 0 && q <= big);
  assert_int_equal(c.pauses, 1); /* queued > high (0) */
  /* Raising the high mark does not resume (the queue is above low). */
  assert_int_equal(braid_transport_set_write_limits(c.t, 2 * big, 0), 0);
  assert_int_equal(c.resumes, 0);
  /* Writing more does not pause twice. */
  assert_int_equal(braid_transport_write(c.t, buf, 1000), 0);
  assert_int_equal(c.pauses, 1);
  assert_int_equal(braid_transport_write_queued(c.t), q + 1000);
  /* Raising the low mark above the queue resumes at once. */
  assert_int_equal(braid_transport_set_write_limits(c.t, 2 * big, 2 * big), 0);
  assert_int_equal(c.resumes, 1);
  /* Dropping the high mark below the queue pauses at once. */
  assert_int_equal(braid_transport_set_write_limits(c.t, 1, 0), 0);
  assert_int_equal(c.pauses, 2);

  /* Read everything: the queue drains to 0 and resume_writing follows. */
  size_t want = big + 1000, got = 0;
  while (got < want && !g_timed_out) {
    pump(r, pfd, POLLIN);
    ssize_t n = recv(pfd, buf, big, 0);
    if (n > 0)
      got += (size_t)n;
  }
  assert_int_equal(got, want);
  RUN_UNTIL(r, braid_transport_write_queued(c.t) == 0 && c.resumes == 2);
  free(buf);
  assert_int_equal(braid_transport_close(c.t), 0);
  RUN_UNTIL(r, c.lost);
  assert_int_equal(c.reason, 0);
  close(pfd);
  close(lfd);
  reactor_free(r);
}

/* The server writes 32 MiB to a client that has paused reading. The
 * server honours pause_writing, so its queue never grows past the high
 * mark plus one write; when the client reads again everything arrives. */
static void slow_reader_made(tp *p) {
  braid_transport_pause_reading(p->t);
}

static void t_slow_reader(void **st) {
  (void)st;
  size_t total = 32u << 20;
  braid_reactor_t *r = reactor_new();
  watchdog_extend(BRAID_SEC(20));
  server srv;
  server_init(&srv, 1);
  srv.tmpl.to_send = total;
  srv.tmpl.honour_pause = 1;
  srv.tmpl.close_when_sent = 1;
  prng_init(&srv.tmpl.sgen, 7);
  braid_addr_t bound;
  braid_listener_t *l = listen_ip(r, "127.0.0.1", &srv, &bound);
  tp c;
  tp_init(&c, 1);
  c.verify = 1;
  prng_init(&c.vgen, 7);
  c.on_made = slow_reader_made;
  assert_int_equal(braid_connect(r, &bound, NULL, &c.base), 0);
  RUN_UNTIL(r, srv.n == 1 && srv.conns[0]->pauses == 1);
  tp *s = srv.conns[0];
  /* Wait until the kernel's socket buffers are full. A readiness engine
   * writes straight to the kernel (BRAID__CAP_TRY_WRITE), so they are
   * full by the first pause. A completion platform (io_uring) queues
   * every write and sends it from the loop, as io.h allows: the first
   * pause comes while the kernel's buffers are still empty, and the queue
   * drains into them, resuming and pausing the writer, until they fill. */
  size_t last;
  do {
    last = s->sent;
    run_for(r, BRAID_MSEC(50));
  } while (s->sent != last && !g_timed_out);
  int resumes = s->resumes;
  /* Let the loop spin a while: nothing may move. */
  run_for(r, BRAID_MSEC(50));
  assert_int_equal(c.nrx, 0);
  assert_true(s->sent < total);
  assert_int_equal(s->sent, last);
  assert_true(s->writing_paused);
  assert_true(s->max_queued <= 64u * 1024u + CHUNK);
  assert_true(braid_transport_write_queued(s->t) <= 64u * 1024u + CHUNK);
  assert_int_equal(s->resumes, resumes);
  /* Read again: everything arrives, in order, then the server's close. */
  assert_int_equal(braid_transport_resume_reading(c.t), 0);
  RUN_UNTIL(r, c.lost);
  assert_int_equal(c.reason, 0);
  assert_int_equal(c.nrx, total);
  assert_int_equal(c.bad_at, SIZE_MAX);
  assert_int_equal(c.eofs, 1);
  assert_true(s->resumes > 0);
  assert_true(s->max_queued <= 64u * 1024u + CHUNK);
  RUN_UNTIL(r, s->lost);
  assert_int_equal(s->reason, 0);
  braid_listener_close(l);
  reactor_free(r);
  server_fini(&srv);
}

/* pause_reading / resume_reading from inside data_received: the server
 * pauses on every delivery and resumes from a timer or at once; every byte
 * arrives in order. */
typedef struct pr_state {
  braid_timer_t timer;
  tp *p;
  int toggles;
} pr_state;

static void pr_resume_cb(braid_timer_t *t, void *arg) {
  (void)t;
  pr_state *ps = arg;
  if (ps->p->t != NULL)
    assert_int_equal(braid_transport_resume_reading(ps->p->t), 0);
}

static void pr_on_data(tp *p, const void *data, size_t len) {
  (void)data;
  (void)len;
  pr_state *ps = p->user;
  ps->p = p;
  ps->toggles++;
  assert_int_equal(braid_transport_pause_reading(p->t), 0);
  assert_int_equal(braid_transport_pause_reading(p->t), 0); /* idempotent */
  if (ps->toggles % 3 == 0) {
    /* Resume inside the same callback. */
    assert_int_equal(braid_transport_resume_reading(p->t), 0);
  } else if (!braid_timer_active(&ps->timer)) {
    assert_int_equal(braid_timer_start(braid_transport_reactor(p->t),
                                       &ps->timer, BRAID_USEC(200),
                                       pr_resume_cb, ps),
                     0);
  }
}

static void t_pause_resume_reading(void **st) {
  (void)st;
  size_t total = 4u << 20;
  braid_reactor_t *r = reactor_new();
  pr_state ps;
  memset(&ps, 0, sizeof ps);
  server srv;
  server_init(&srv, 0);
  srv.tmpl.verify = 1;
  prng_init(&srv.tmpl.vgen, 99);
  srv.tmpl.on_data = pr_on_data;
  srv.tmpl.user = &ps;
  braid_addr_t bound;
  braid_listener_t *l = listen_ip(r, "127.0.0.1", &srv, &bound);
  tp c;
  tp_init(&c, 1);
  c.to_send = total;
  c.honour_pause = 1;
  c.close_when_sent = 1;
  prng_init(&c.sgen, 99);
  assert_int_equal(braid_connect(r, &bound, NULL, &c.base), 0);
  RUN_UNTIL(r, srv.n == 1 && srv.conns[0]->lost && c.lost);
  tp *s = srv.conns[0];
  assert_int_equal(s->nrx, total);
  assert_int_equal(s->bad_at, SIZE_MAX);
  assert_true(ps.toggles > 3);
  assert_int_equal(s->reason, 0);
  assert_int_equal(c.reason, 0);
  if (braid_timer_active(&ps.timer))
    braid_timer_cancel(&ps.timer);
  braid_listener_close(l);
  reactor_free(r);
  server_fini(&srv);
}

/* ------------------------------------------------------------------------
 * Closing: half-close, EOF without eof_received, flush, abort, misuse
 * ------------------------------------------------------------------------ */

static void hc_server_eof(tp *p) {
  /* Reply with what we got, after the peer's EOF, then close. */
  assert_int_equal(braid_transport_write(p->t, "reply:", 6), 0);
  assert_int_equal(braid_transport_write(p->t, p->rx, p->rxlen), 0);
  assert_int_equal(braid_transport_close(p->t), 0);
}

/* pause_reading from outside the read callback while a read is in flight
 * and its data has already arrived: on a completion platform the read can
 * beat its cancel (io.h: an op that completed first keeps its result).
 * data_received must still wait for the resume, and nothing is lost. */
static void t_pause_inflight_read(void **st) {
  (void)st;
  braid_reactor_t *r = reactor_new();
  server srv;
  server_init(&srv, 1);
  srv.tmpl.keep_rx = 1;
  braid_addr_t bound;
  braid_listener_t *l = listen_ip(r, "127.0.0.1", &srv, &bound);
  int fd = raw_connect(&bound);
  PUMP_UNTIL(r, fd, 0, srv.n == 1 && srv.conns[0]->made);
  tp *s = srv.conns[0];
  run_for(r, BRAID_MSEC(5)); /* the server's read is in flight now */
  assert_int_equal(send(fd, "abc", 3, 0), 3);
  poll(NULL, 0, 10); /* the data reaches the server's socket */
  assert_int_equal(braid_transport_pause_reading(s->t), 0);
  run_for(r, BRAID_MSEC(50));
  assert_int_equal(s->datas, 0);
  assert_int_equal(send(fd, "def", 3, 0), 3);
  close(fd); /* the EOF waits for the resume too */
  run_for(r, BRAID_MSEC(20));
  assert_int_equal(s->datas, 0);
  assert_int_equal(s->eofs, 0);
  assert_int_equal(braid_transport_resume_reading(s->t), 0);
  RUN_UNTIL(r, s->lost);
  assert_int_equal(s->rxlen, 6);
  assert_memory_equal(s->rx, "abcdef", 6);
  assert_int_equal(s->eofs, 1);
  assert_int_equal(s->reason, 0);
  braid_listener_close(l);
  reactor_free(r);
  server_fini(&srv);
}

static void t_half_close(void **st) {
  (void)st;
  braid_reactor_t *r = reactor_new();
  server srv;
  server_init(&srv, 1);
  srv.tmpl.keep_rx = 1;
  srv.tmpl.on_eof = hc_server_eof;
  braid_addr_t bound;
  braid_listener_t *l = listen_ip(r, "127.0.0.1", &srv, &bound);
  tp c;
  tp_init(&c, 1);
  c.keep_rx = 1;
  assert_int_equal(braid_connect(r, &bound, NULL, &c.base), 0);
  RUN_UNTIL(r, c.made);
  assert_int_equal(braid_transport_write(c.t, "question", 8), 0);
  assert_int_equal(braid_transport_shutdown_write(c.t), 0);
  /* The writing side is shut. */
  assert_int_equal(braid_transport_write(c.t, "x", 1), BRAID_ECLOSED);
  assert_int_equal(braid_transport_shutdown_write(c.t), BRAID_ECLOSED);
  RUN_UNTIL(r, c.lost);
  assert_int_equal(c.reason, 0);
  assert_int_equal(c.eofs, 1);
  assert_int_equal(c.rxlen, 14);
  assert_memory_equal(c.rx, "reply:question", 14);
  RUN_UNTIL(r, srv.conns[0]->lost);
  assert_int_equal(srv.conns[0]->eofs, 1);
  assert_int_equal(srv.conns[0]->reason, 0);
  braid_listener_close(l);
  reactor_free(r);
  server_fini(&srv);
  tp_fini(&c);
}

/* A protocol without eof_received is closed after the peer's EOF, once
 * what it wrote has been flushed. */
static void eofauto_on_data(tp *p, const void *data, size_t len) {
  (void)data;
  (void)len;
  if (p->to_send == 0) {
    p->to_send = 2u << 20;
    tp_pump(p);
  }
}

static void t_eof_autoclose(void **st) {
  (void)st;
  braid_reactor_t *r = reactor_new();
  server srv;
  server_init(&srv, 0); /* no eof_received */
  srv.tmpl.on_data = eofauto_on_data;
  prng_init(&srv.tmpl.sgen, 5);
  braid_addr_t bound;
  braid_listener_t *l = listen_ip(r, "127.0.0.1", &srv, &bound);
  tp c;
  tp_init(&c, 1);
  c.verify = 1;
  prng_init(&c.vgen, 5);
  assert_int_equal(braid_connect(r, &bound, NULL, &c.base), 0);
  RUN_UNTIL(r, c.made);
  assert_int_equal(braid_transport_write(c.t, "go", 2), 0);
  assert_int_equal(braid_transport_shutdown_write(c.t), 0);
  RUN_UNTIL(r, c.lost);
  assert_int_equal(c.reason, 0);
  assert_int_equal(c.nrx, 2u << 20);
  assert_int_equal(c.bad_at, SIZE_MAX);
  assert_int_equal(c.eofs, 1);
  RUN_UNTIL(r, srv.conns[0]->lost);
  assert_int_equal(srv.conns[0]->reason, 0);
  braid_listener_close(l);
  reactor_free(r);
  server_fini(&srv);
}

/* close() with a large queue: everything arrives before the FIN. */
static void t_close_flushes(void **st) {
  (void)st;
  size_t total = 8u << 20;
  braid_reactor_t *r = reactor_new();
  server srv;
  server_init(&srv, 1);
  srv.tmpl.to_send = total; /* all at once, ignoring pause_writing */
  srv.tmpl.close_when_sent = 1;
  prng_init(&srv.tmpl.sgen, 11);
  braid_addr_t bound;
  braid_listener_t *l = listen_ip(r, "127.0.0.1", &srv, &bound);
  tp c;
  tp_init(&c, 1);
  c.verify = 1;
  prng_init(&c.vgen, 11);
  assert_int_equal(braid_connect(r, &bound, NULL, &c.base), 0);
  RUN_UNTIL(r, srv.n == 1 && srv.conns[0]->made);
  tp *s = srv.conns[0];
  assert_true(s->max_queued > 0); /* it really had to queue */
  /* Closing: reading stopped, writes refused, queue still draining. */
  assert_int_equal(braid_transport_write(s->t, "x", 1), BRAID_ECLOSED);
  RUN_UNTIL(r, c.lost);
  assert_int_equal(c.reason, 0);
  assert_int_equal(c.eofs, 1);
  assert_int_equal(c.nrx, total);
  assert_int_equal(c.bad_at, SIZE_MAX);
  RUN_UNTIL(r, s->lost);
  assert_int_equal(s->reason, 0);
  braid_listener_close(l);
  reactor_free(r);
  server_fini(&srv);
}

/* abort(): queued output is dropped, the peer sees a reset, the aborter
 * gets connection_lost(BRAID_ECONNABORTED). */
static void abort_family(const char *ip) {
  braid_reactor_t *r = reactor_new();
  server srv;
  server_init(&srv, 1);
  srv.tmpl.to_send = 8u << 20; /* queued; the client is not reading */
  braid_addr_t bound;
  braid_listener_t *l = listen_ip(r, ip, &srv, &bound);
  tp c;
  tp_init(&c, 1);
  c.on_made = slow_reader_made; /* pause reading */
  assert_int_equal(braid_connect(r, &bound, NULL, &c.base), 0);
  RUN_UNTIL(r, srv.n == 1 && srv.conns[0]->made && c.made);
  tp *s = srv.conns[0];
  assert_true(braid_transport_write_queued(s->t) > 0);
  assert_int_equal(braid_transport_abort(s->t), 0);
  assert_int_equal(braid_transport_abort(s->t), BRAID_ECLOSED);
  assert_int_equal(braid_transport_close(s->t), BRAID_ECLOSED);
  /* Writes after abort are refused. */
  assert_int_equal(braid_transport_write(s->t, "x", 1), BRAID_ECLOSED);
  RUN_UNTIL(r, s->lost);
  assert_int_equal(s->reason, BRAID_ECONNABORTED);
  assert_int_equal(braid_transport_resume_reading(c.t), 0);
  RUN_UNTIL(r, c.lost);
  assert_int_equal(c.reason, BRAID_ECONNRESET);
  assert_int_equal(c.eofs, 0);
  braid_listener_close(l);
  reactor_free(r);
  server_fini(&srv);
}

static void t_abort(void **st) {
  (void)st;
  abort_family("127.0.0.1");
}

/* The same seen by a raw socket: recv() fails with ECONNRESET. */
static void t_abort_raw_peer(void **st) {
  (void)st;
  braid_reactor_t *r = reactor_new();
  server srv;
  server_init(&srv, 1);
  braid_addr_t bound;
  braid_listener_t *l = listen_ip(r, "127.0.0.1", &srv, &bound);
  int fd = raw_connect(&bound);
  PUMP_UNTIL(r, fd, 0, srv.n == 1 && srv.conns[0]->made);
  assert_int_equal(braid_transport_write(srv.conns[0]->t, "abc", 3), 0);
  assert_int_equal(braid_transport_abort(srv.conns[0]->t), 0);
  RUN_UNTIL(r, srv.conns[0]->lost);
  assert_int_equal(srv.conns[0]->reason, BRAID_ECONNABORTED);
  char buf[16];
  ssize_t n;
  int tries = 0;
  do {
    n = recv(fd, buf, sizeof buf, 0);
    if (n < 0 && errno == EAGAIN)
      pump(r, fd, POLLIN);
  } while (n < 0 && errno == EAGAIN && ++tries < 1000);
  /* The 3 bytes may or may not have been sent before the reset; the reset
   * must come, never a clean EOF. */
  if (n == 3)
    n = recv(fd, buf, sizeof buf, 0);
  assert_int_equal(n, -1);
  assert_int_equal(errno, ECONNRESET);
  close(fd);
  braid_listener_close(l);
  reactor_free(r);
  server_fini(&srv);
}

static void release_count(void *data, void *arg) {
  (void)data;
  ++*(int *)arg;
}

/* Misuse after close: every call says BRAID_ECLOSED, nothing crashes. */
static void t_after_close(void **st) {
  (void)st;
  braid_reactor_t *r = reactor_new();
  server srv;
  server_init(&srv, 1);
  braid_addr_t bound;
  braid_listener_t *l = listen_ip(r, "127.0.0.1", &srv, &bound);
  tp c;
  tp_init(&c, 1);
  assert_int_equal(braid_connect(r, &bound, NULL, &c.base), 0);
  RUN_UNTIL(r, c.made);
  assert_int_equal(braid_transport_close(c.t), 0);
  assert_int_equal(braid_transport_close(c.t), BRAID_ECLOSED);
  assert_int_equal(braid_transport_write(c.t, "x", 1), BRAID_ECLOSED);
  braid_iovec_t iov[2] = {{"a", 1}, {"b", 1}};
  assert_int_equal(braid_transport_writev(c.t, iov, 2), BRAID_ECLOSED);
  assert_int_equal(braid_transport_shutdown_write(c.t), BRAID_ECLOSED);
  int released = 0;
  char mem[4] = "abc";
  assert_int_equal(
      braid_transport_write_owned(c.t, mem, 3, release_count, &released),
      BRAID_ECLOSED);
  assert_int_equal(released, 0); /* on error, the caller keeps it */
  /* abort after close is allowed (it cuts the flush short). */
  assert_int_equal(braid_transport_abort(c.t), 0);
  assert_int_equal(braid_transport_abort(c.t), BRAID_ECLOSED);
  RUN_UNTIL(r, c.lost);
  RUN_UNTIL(r, srv.n == 1 && srv.conns[0]->lost);
  /* NULL arguments. */
  assert_int_equal(braid_transport_write(NULL, "x", 1), BRAID_EINVAL);
  assert_int_equal(braid_transport_close(NULL), BRAID_EINVAL);
  assert_int_equal(braid_transport_abort(NULL), BRAID_EINVAL);
  assert_int_equal(braid_transport_write_queued(NULL), 0);
  braid_listener_close(l);
  assert_int_equal(braid_listener_close(NULL), BRAID_EINVAL);
  reactor_free(r);
  server_fini(&srv);
}

/* ------------------------------------------------------------------------
 * Connecting: refused, timed out
 * ------------------------------------------------------------------------ */

static void t_refused(void **st) {
  (void)st;
  braid_reactor_t *r = reactor_new();
  /* A port that was just ours and is now closed. */
  braid_addr_t a;
  int fd = raw_listen(1, &a);
  close(fd);
  tp c;
  tp_init(&c, 1);
  assert_int_equal(braid_connect(r, &a, NULL, &c.base), 0);
  RUN_UNTIL(r, c.lost);
  assert_int_equal(c.made, 0);
  assert_int_equal(c.reason, BRAID_ECONNREFUSED);
  /* A Unix path with nobody listening. */
  char path[128];
  unix_path(path, sizeof path, "nobody.sock");
  assert_int_equal(braid_addr_unix(&a, path), 0);
  tp u;
  tp_init(&u, 1);
  assert_int_equal(braid_connect(r, &a, NULL, &u.base), 0);
  RUN_UNTIL(r, u.lost);
  assert_int_equal(u.made, 0);
  assert_int_equal(u.reason, BRAID_ENOENT);
  reactor_free(r);
}

/* A connect that never completes, on loopback only: a raw listener with a
 * backlog of 0 whose accept queue is full drops further SYNs (Linux
 * tcp_conn_request: sk_acceptq_is_full), so the next connect stays in
 * SYN-SENT until the SYN is retransmitted a second later. */
static void t_connect_timeout(void **st) {
  (void)st;
  braid_reactor_t *r = reactor_new();
  braid_addr_t a;
  int lfd = raw_listen(0, &a);
  int fds[16], n = 0, hung = 0;
  while (n < 16 && !hung) {
    fds[n] = raw_connect(&a);
    struct pollfd p = {fds[n], POLLOUT, 0};
    hung = poll(&p, 1, 50) == 0;
    n++;
  }
  if (!hung) {
    for (int i = 0; i < n; i++)
      close(fds[i]);
    close(lfd);
    reactor_free(r);
    skip();
  }
  tp c;
  tp_init(&c, 1);
  braid_connect_options o = {0};
  o.timeout = BRAID_MSEC(100);
  uint64_t t0 = braid_hrtime();
  assert_int_equal(braid_connect(r, &a, &o, &c.base), 0);
  RUN_UNTIL(r, c.lost);
  uint64_t took = braid_hrtime() - t0;
  assert_int_equal(c.made, 0);
  assert_int_equal(c.reason, BRAID_ETIMEDOUT);
  assert_true(took >= BRAID_MSEC(90));
  assert_true(took < BRAID_SEC(1));
  for (int i = 0; i < n; i++)
    close(fds[i]);
  close(lfd);
  reactor_free(r);
}

/* braid_connect_options.bind: the local address is used; a bind that
 * fails is returned at once and no callback runs. */
static void t_connect_bind(void **st) {
  (void)st;
  braid_reactor_t *r = reactor_new();
  server srv;
  server_init(&srv, 1);
  braid_addr_t bound;
  braid_listener_t *l = listen_ip(r, "127.0.0.1", &srv, &bound);
  /* A free local port: bind a raw socket to port 0, note it, close it. */
  braid_addr_t local;
  int tmp = raw_listen(1, &local);
  close(tmp);
  tp c;
  tp_init(&c, 1);
  braid_connect_options o = {0};
  o.bind = &local;
  assert_int_equal(braid_connect(r, &bound, &o, &c.base), 0);
  RUN_UNTIL(r, c.made && srv.n == 1 && srv.conns[0]->made);
  braid_addr_t got;
  assert_int_equal(braid_transport_local_addr(c.t, &got), 0);
  assert_int_equal(braid_addr_port(&got), braid_addr_port(&local));
  assert_int_equal(braid_transport_peer_addr(srv.conns[0]->t, &got), 0);
  assert_int_equal(braid_addr_port(&got), braid_addr_port(&local));
  /* The listener's own address is taken. */
  tp d;
  tp_init(&d, 1);
  o.bind = &bound;
  assert_int_equal(braid_connect(r, &bound, &o, &d.base), BRAID_EADDRINUSE);
  /* Bad arguments. */
  braid_addr_t none;
  memset(&none, 0, sizeof none);
  assert_int_equal(braid_connect(r, &none, NULL, &d.base), BRAID_EINVAL);
  assert_int_equal(braid_connect(NULL, &bound, NULL, &d.base), BRAID_EINVAL);
  assert_int_equal(braid_connect(r, &bound, NULL, NULL), BRAID_EINVAL);
  braid_listener_t *l2 = NULL;
  assert_int_equal(braid_listen(r, &none, NULL, &srv.f, &l2), BRAID_EINVAL);
  assert_int_equal(braid_listen(r, &bound, NULL, &srv.f, &l2),
                   BRAID_EADDRINUSE);
  assert_null(l2);
  run_for(r, BRAID_MSEC(5));
  assert_int_equal(d.made + d.lost, 0);
  assert_int_equal(braid_transport_close(c.t), 0);
  RUN_UNTIL(r, c.lost && srv.conns[0]->lost);
  braid_listener_close(l);
  reactor_free(r);
  assert_int_equal(d.made + d.lost, 0);
  server_fini(&srv);
}

/* ------------------------------------------------------------------------
 * Errors while writing
 * ------------------------------------------------------------------------ */

/* The peer resets while braid has a lot queued: connection_lost with
 * ECONNRESET or EPIPE, and no SIGPIPE (the default disposition, which
 * would kill this process, stays installed). */
static void t_peer_reset_mid_write(void **st) {
  (void)st;
  signal(SIGPIPE, SIG_DFL);
  braid_reactor_t *r = reactor_new();
  server srv;
  server_init(&srv, 1);
  srv.tmpl.to_send = 16u << 20; /* ignores pause_writing */
  braid_addr_t bound;
  braid_listener_t *l = listen_ip(r, "127.0.0.1", &srv, &bound);
  int fd = raw_connect(&bound);
  PUMP_UNTIL(r, fd, 0, srv.n == 1 && srv.conns[0]->made);
  tp *s = srv.conns[0];
  assert_true(braid_transport_write_queued(s->t) > 0);
  /* Read a little, so the connection is known to carry data. */
  char buf[4096];
  PUMP_UNTIL(r, fd, POLLIN, recv(fd, buf, sizeof buf, 0) > 0);
  raw_linger0_close(fd);
  RUN_UNTIL(r, s->lost);
  assert_true(s->reason == BRAID_ECONNRESET || s->reason == BRAID_EPIPE);
  /* Writes between the failure and connection_lost are dropped quietly;
   * afterwards the transport is gone. */
  braid_listener_close(l);
  reactor_free(r);
  server_fini(&srv);
}

/* A client that keeps writing into a connection the peer reset: still no
 * SIGPIPE, and the write error is reported once. */
static void reset_writer_data(tp *p, const void *d, size_t n) {
  (void)d;
  (void)n;
  (void)p;
}

static void t_write_after_peer_reset(void **st) {
  (void)st;
  signal(SIGPIPE, SIG_DFL);
  braid_reactor_t *r = reactor_new();
  braid_addr_t a;
  int lfd = raw_listen(4, &a);
  tp c;
  tp_init(&c, 1);
  c.on_data = reset_writer_data;
  assert_int_equal(braid_connect(r, &a, NULL, &c.base), 0);
  RUN_UNTIL(r, c.made);
  int pfd = accept(lfd, NULL, NULL);
  assert_true(pfd >= 0);
  raw_linger0_close(pfd);
  /* Keep writing small pieces until braid notices. */
  char buf[1024] = {0};
  while (!c.lost && !g_timed_out) {
    int rc = braid_transport_write(c.t, buf, sizeof buf);
    assert_true(rc == 0);
    assert_true(braid_reactor_run_once(r, false) >= 0);
  }
  assert_int_equal(c.lost, 1);
  assert_true(c.reason == BRAID_ECONNRESET || c.reason == BRAID_EPIPE);
  close(lfd);
  reactor_free(r);
}

/* ------------------------------------------------------------------------
 * Zero-copy writes
 * ------------------------------------------------------------------------ */

typedef struct owned {
  int released;
  size_t queued_at_release;
  braid_transport_t *t;
} owned;

static void owned_release(void *data, void *arg) {
  owned *o = arg;
  assert_non_null(data);
  o->released++;
  if (o->t != NULL)
    o->queued_at_release = braid_transport_write_queued(o->t);
}

static void t_write_owned(void **st) {
  (void)st;
  braid_reactor_t *r = reactor_new();
  server srv;
  server_init(&srv, 1);
  srv.tmpl.verify = 1;
  prng_init(&srv.tmpl.vgen, 3);
  braid_addr_t bound;
  braid_listener_t *l = listen_ip(r, "127.0.0.1", &srv, &bound);
  tp c;
  tp_init(&c, 1);
  assert_int_equal(braid_connect(r, &bound, NULL, &c.base), 0);
  RUN_UNTIL(r, c.made && srv.n == 1);

  /* Small: written at once, released at once. */
  prng g;
  prng_init(&g, 3);
  unsigned char small[100];
  prng_fill(&g, small, sizeof small);
  owned o1 = {0, 0, c.t};
  assert_int_equal(
      braid_transport_write_owned(c.t, small, sizeof small, owned_release, &o1),
      0);
  /* Big: cannot be written at once; released once, when fully written. */
  size_t big = 16u << 20;
  unsigned char *mem = malloc(big);
  assert_non_null(mem);
  prng_fill(&g, mem, big);
  owned o2 = {0, 0, c.t};
  assert_int_equal(
      braid_transport_write_owned(c.t, mem, big, owned_release, &o2), 0);
  assert_int_equal(o2.released, 0);
  assert_true(braid_transport_write_queued(c.t) > 0);
  RUN_UNTIL(r, o2.released && srv.conns[0]->nrx == big + sizeof small);
  assert_int_equal(o1.released, 1);
  assert_int_equal(o2.released, 1);
  assert_int_equal(o2.queued_at_release, 0);
  assert_int_equal(srv.conns[0]->bad_at, SIZE_MAX);
  /* Zero length and bad arguments. */
  owned o3 = {0, 0, NULL};
  assert_int_equal(braid_transport_write_owned(c.t, mem, 0, owned_release, &o3),
                   0);
  assert_int_equal(o3.released, 1);
  assert_int_equal(braid_transport_write_owned(c.t, mem, 1, NULL, NULL),
                   BRAID_EINVAL);
  assert_int_equal(
      braid_transport_write_owned(c.t, NULL, 1, owned_release, &o3),
      BRAID_EINVAL);
  assert_int_equal(o3.released, 1);
  assert_int_equal(braid_transport_close(c.t), 0);
  RUN_UNTIL(r, c.lost && srv.conns[0]->lost);
  assert_int_equal(o2.released, 1);
  free(mem);
  braid_listener_close(l);
  reactor_free(r);
  server_fini(&srv);
}

/* Aborted with the owned memory still queued: released exactly once. */
static void t_write_owned_abort(void **st) {
  (void)st;
  braid_reactor_t *r = reactor_new();
  braid_addr_t a;
  int lfd = raw_listen(4, &a);
  tp c;
  tp_init(&c, 1);
  assert_int_equal(braid_connect(r, &a, NULL, &c.base), 0);
  RUN_UNTIL(r, c.made);
  int pfd = accept(lfd, NULL, NULL);
  assert_true(pfd >= 0);
  size_t big = 16u << 20;
  unsigned char *mem = calloc(1, big);
  assert_non_null(mem);
  owned o = {0, 0, NULL};
  owned o2 = {0, 0, NULL};
  assert_int_equal(
      braid_transport_write_owned(c.t, mem, big, owned_release, &o), 0);
  assert_int_equal(
      braid_transport_write_owned(c.t, mem, big / 2, owned_release, &o2), 0);
  assert_int_equal(o.released, 0);
  assert_int_equal(o2.released, 0);
  assert_int_equal(braid_transport_abort(c.t), 0);
  RUN_UNTIL(r, c.lost);
  assert_int_equal(c.reason, BRAID_ECONNABORTED);
  assert_int_equal(o.released, 1);
  assert_int_equal(o2.released, 1);
  free(mem);
  close(pfd);
  close(lfd);
  reactor_free(r);
}

/* ------------------------------------------------------------------------
 * Listeners: refusing factories, running out of descriptors
 * ------------------------------------------------------------------------ */

static void t_factory_refuses(void **st) {
  (void)st;
  braid_reactor_t *r = reactor_new();
  server srv;
  server_init(&srv, 1);
  srv.refuse = 1;
  braid_addr_t bound;
  braid_listener_t *l = listen_ip(r, "127.0.0.1", &srv, &bound);
  tp c;
  tp_init(&c, 1);
  assert_int_equal(braid_connect(r, &bound, NULL, &c.base), 0);
  RUN_UNTIL(r, c.lost);
  assert_int_equal(srv.n, 1);
  /* The connection itself was made, then closed by the server. */
  assert_int_equal(c.made, 1);
  assert_true(c.reason == 0 || c.reason == BRAID_ECONNRESET);
  /* The listener keeps serving. */
  srv.refuse = 0;
  srv.n = 0;
  srv.tmpl.echo = 1;
  tp c2;
  tp_init(&c2, 1);
  assert_int_equal(braid_connect(r, &bound, NULL, &c2.base), 0);
  RUN_UNTIL(r, c2.made);
  assert_int_equal(braid_transport_write(c2.t, "hi", 2), 0);
  RUN_UNTIL(r, c2.nrx == 2);
  braid_transport_close(c2.t);
  RUN_UNTIL(r, c2.lost && srv.conns[0]->lost);
  braid_listener_close(l);
  reactor_free(r);
  server_fini(&srv);
}

/* accept() fails with EMFILE: the listener logs a warning, backs off,
 * keeps serving the open connection, and accepts the waiting one once a
 * descriptor is free. */
static struct rlimit g_nofile;
static int g_nofile_saved;

/* Runs even when the test fails, so later tests get descriptors. */
static int restore_nofile(void **st) {
  (void)st;
  if (g_nofile_saved)
    setrlimit(RLIMIT_NOFILE, &g_nofile);
  g_nofile_saved = 0;
  return 0;
}

static void t_accept_emfile(void **st) {
  (void)st;
  /* Valgrind emulates RLIMIT_NOFILE: the kernel's accept() succeeds and
   * valgrind closes the new descriptor, so the waiting connection is lost
   * rather than left in the backlog. Nothing to learn about braid there. */
  if (under_valgrind())
    skip();
  braid_reactor_t *r = reactor_new();
  server srv;
  server_init(&srv, 1);
  srv.tmpl.echo = 1;
  braid_addr_t bound;
  braid_listener_t *l = listen_ip(r, "127.0.0.1", &srv, &bound);
  tp c;
  tp_init(&c, 1);
  assert_int_equal(braid_connect(r, &bound, NULL, &c.base), 0);
  RUN_UNTIL(r, c.made && srv.n == 1);

  /* The raw client and a spare descriptor are made before the limit. */
  int spare = open("/dev/null", O_RDONLY | O_CLOEXEC);
  assert_true(spare >= 0);
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  assert_true(fd >= 0);
  /* The lowest free descriptor: with the soft limit there, no descriptor
   * can be made. */
  int probe = dup(0);
  assert_true(probe >= 0);
  close(probe);
  struct rlimit lim;
  assert_int_equal(getrlimit(RLIMIT_NOFILE, &g_nofile), 0);
  g_nofile_saved = 1;
  lim = g_nofile;
  lim.rlim_cur = (rlim_t)probe;
  if (setrlimit(RLIMIT_NOFILE, &lim) != 0) {
    close(fd);
    close(spare);
    braid_transport_abort(c.t);
    braid_listener_close(l);
    reactor_free(r);
    server_fini(&srv);
    skip();
  }
  probe = dup(0);
  int dup_errno = errno;
  if (probe >= 0)
    close(probe);

  set_nonblock(fd);
  int rc =
      connect(fd, (const struct sockaddr *)&bound, sizeof(struct sockaddr_in));
  assert_true(rc == 0 || errno == EINPROGRESS);
  PUMP_UNTIL(r, fd, 0, g_warns > 0);
  assert_int_equal(srv.n, 1);
  /* The open connection is still served. */
  assert_int_equal(braid_transport_write(c.t, "ping", 4), 0);
  RUN_UNTIL(r, c.nrx == 4);
  assert_int_equal(srv.n, 1);
  /* A descriptor comes free: the waiting connection is accepted. */
  close(spare);
  PUMP_UNTIL(r, fd, 0, srv.n == 2 && srv.conns[1]->made);
  restore_nofile(NULL);
  assert_int_equal(probe, -1);
  assert_int_equal(dup_errno, EMFILE);
  assert_non_null(strstr(g_log, "[WARN] listener: accept failed"));
  assert_non_null(strstr(g_log, braid_strerror(BRAID_EMFILE)));
  /* And it works. */
  assert_int_equal(send(fd, "pong", 4, 0), 4);
  char buf[8];
  ssize_t n = -1;
  PUMP_UNTIL(r, fd, POLLIN, (n = recv(fd, buf, sizeof buf, 0)) == 4);
  assert_memory_equal(buf, "pong", 4);
  close(fd);
  braid_transport_close(c.t);
  RUN_UNTIL(r, c.lost && srv.conns[0]->lost && srv.conns[1]->lost);
  braid_listener_close(l);
  reactor_free(r);
  server_fini(&srv);
}

/* ------------------------------------------------------------------------
 * Reactor teardown with everything open
 * ------------------------------------------------------------------------ */

static void t_destroy_open(void **st) {
  (void)st;
  braid_reactor_t *r = reactor_new();
  server srv;
  server_init(&srv, 1);
  srv.tmpl.echo = 1;
  braid_addr_t bound, ubound;
  braid_listener_t *l = listen_ip(r, "127.0.0.1", &srv, &bound);
  char path[128];
  unix_path(path, sizeof path, "destroy.sock");
  braid_addr_t ua;
  assert_int_equal(braid_addr_unix(&ua, path), 0);
  braid_listener_t *ul = listen_on(r, &ua, &srv, &ubound);
  (void)ul;
  (void)l;
  tp c[4];
  for (int i = 0; i < 4; i++) {
    tp_init(&c[i], 1);
    assert_int_equal(
        braid_connect(r, i % 2 ? &ubound : &bound, NULL, &c[i].base), 0);
  }
  RUN_UNTIL(r, c[0].made && c[1].made && c[2].made && c[3].made && srv.n == 4);
  /* One with reading paused, one with owned memory queued, one closing
   * with a queue to flush, and one connect still in flight. */
  braid_transport_pause_reading(c[0].t);
  size_t big = 16u << 20;
  unsigned char *mem = calloc(1, big);
  assert_non_null(mem);
  braid_transport_pause_reading(c[2].t);
  owned o = {0, 0, NULL};
  assert_int_equal(
      braid_transport_write_owned(c[1].t, mem, big, owned_release, &o), 0);
  assert_int_equal(braid_transport_write(c[2].t, mem, big), 0);
  assert_int_equal(braid_transport_close(c[2].t), 0);
  tp late, late_unix;
  tp_init(&late, 1);
  tp_init(&late_unix, 1);
  assert_int_equal(braid_connect(r, &bound, NULL, &late.base), 0);
  assert_int_equal(braid_connect(r, &ubound, NULL, &late_unix.base), 0);
  int before = g_lost_events;
  if (braid_timer_active(&g_watchdog))
    braid_timer_cancel(&g_watchdog);
  assert_int_equal(braid_reactor_destroy(r), 0);
  /* Every protocol heard of it, exactly once. */
  for (int i = 0; i < 4; i++) {
    assert_int_equal(c[i].lost, 1);
    if (i != 2)
      assert_int_equal(c[i].reason, BRAID_ECONNABORTED);
  }
  assert_int_equal(late.lost, 1);
  assert_int_equal(late.reason, BRAID_ECONNABORTED);
  assert_int_equal(late_unix.lost, 1);
  assert_int_equal(late_unix.reason, BRAID_ECONNABORTED);
  assert_int_equal(late_unix.made, 0);
  for (int i = 0; i < srv.n; i++)
    assert_int_equal(srv.conns[i]->reason, BRAID_ECONNABORTED);
  assert_int_equal(g_lost_events - before, 6 + srv.n);
  assert_int_equal(o.released, 1);
  free(mem);
  unlink(path);
  server_fini(&srv);
}

/* ------------------------------------------------------------------------
 * Stale events (GUIDE item 11): a callback closes another connection that
 * is ready in the same batch.
 * ------------------------------------------------------------------------ */

static void stale_on_data(tp *p, const void *d, size_t n) {
  (void)d;
  (void)n;
  int how = *(int *)p->user;
  tp *other = p->partner;
  if (other->t == NULL || other->lost)
    return;
  if (how == 0)
    assert_int_equal(braid_transport_abort(other->t), 0);
  else
    assert_int_equal(braid_transport_close(other->t), 0);
}

static void stale_case(int how) {
  braid_reactor_t *r = reactor_new();
  server srv;
  server_init(&srv, 1);
  srv.tmpl.on_data = stale_on_data;
  srv.tmpl.user = &how;
  braid_addr_t bound;
  braid_listener_t *l = listen_ip(r, "127.0.0.1", &srv, &bound);
  enum { N = 8 };
  int fds[N];
  for (int i = 0; i < N; i++)
    fds[i] = raw_connect(&bound);
  PUMP_UNTIL(r, -1, 0, srv.n == N);
  for (int i = 0; i < N; i++) {
    RUN_UNTIL(r, srv.conns[i]->made);
    srv.conns[i]->partner = srv.conns[(i + 1) % N];
  }
  /* Every connection becomes readable before the loop runs again. */
  for (int i = 0; i < N; i++)
    assert_int_equal(send(fds[i], "data", 4, 0), 4);
  /* And the listener too, with a connection that gets closed below. */
  int extra = raw_connect(&bound);
  run_for(r, BRAID_MSEC(20));
  int got = 0, lost = 0;
  for (int i = 0; i < N; i++) {
    got += srv.conns[i]->datas > 0;
    lost += srv.conns[i]->lost;
  }
  assert_true(got >= 1);
  if (how == 0) {
    /* An aborted connection never delivers data afterwards. */
    for (int i = 0; i < N; i++)
      if (srv.conns[i]->lost)
        assert_int_equal(srv.conns[i]->reason, BRAID_ECONNABORTED);
    assert_true(lost >= 1);
  }
  for (int i = 0; i < N; i++)
    close(fds[i]);
  close(extra);
  RUN_UNTIL(r, server_all_lost(&srv));
  braid_listener_close(l);
  reactor_free(r);
  server_fini(&srv);
}

static void t_stale_events_abort(void **st) {
  (void)st;
  stale_case(0);
}

static void t_stale_events_close(void **st) {
  (void)st;
  stale_case(1);
}

/* The same with deferred reads: resume_reading on sockets that are
 * already readable queues them for the next wait(), and a callback run from
 * that queue closes other sockets, one of them on the same queue and one
 * not. Every other connection must still get its data, and every closed one
 * its connection_lost. */
typedef struct resume_all {
  braid_timer_t timer;
  server *srv;
  int n;
} resume_all;

static void resume_all_cb(braid_timer_t *t, void *arg) {
  (void)t;
  resume_all *ra = arg;
  for (int i = 0; i < ra->n; i++)
    assert_int_equal(braid_transport_resume_reading(ra->srv->conns[i]->t), 0);
}

static void stale_ready_on_data(tp *p, const void *d, size_t n) {
  (void)d;
  (void)n;
  tp **victims = p->user;
  for (int i = 0; victims != NULL && victims[i] != NULL; i++)
    if (victims[i]->t != NULL && !victims[i]->lost)
      braid_transport_abort(victims[i]->t);
}

static void t_stale_ready_list(void **st) {
  (void)st;
  braid_reactor_t *r = reactor_new();
  server srv;
  server_init(&srv, 1);
  srv.tmpl.on_made = slow_reader_made; /* pause reading */
  srv.tmpl.on_data = stale_ready_on_data;
  braid_addr_t bound;
  braid_listener_t *l = listen_ip(r, "127.0.0.1", &srv, &bound);
  enum { N = 4 };
  int fds[N];
  for (int i = 0; i < N; i++)
    fds[i] = raw_connect(&bound);
  PUMP_UNTIL(r, -1, 0, srv.n == N);
  for (int i = 0; i < N; i++) {
    RUN_UNTIL(r, srv.conns[i]->made);
    assert_int_equal(send(fds[i], "data", 4, 0), 4);
  }
  run_for(r, BRAID_MSEC(5));
  /* 0, 1 and 2 are resumed together and so queued together; 3 is not.
   * Whichever of 0 and 2 reads first aborts 1 (queued, in the middle)
   * and then 3 (not queued). */
  tp *victims[] = {srv.conns[1], srv.conns[3], NULL};
  srv.conns[0]->user = victims;
  srv.conns[2]->user = victims;
  resume_all ra;
  memset(&ra, 0, sizeof ra);
  ra.srv = &srv;
  ra.n = 3;
  assert_int_equal(braid_timer_start(r, &ra.timer, 0, resume_all_cb, &ra), 0);
  RUN_UNTIL(r, srv.conns[0]->datas == 1 && srv.conns[2]->datas == 1 &&
                   srv.conns[1]->lost && srv.conns[3]->lost);
  assert_int_equal(srv.conns[1]->reason, BRAID_ECONNABORTED);
  assert_int_equal(srv.conns[3]->reason, BRAID_ECONNABORTED);
  for (int i = 0; i < N; i++)
    close(fds[i]);
  RUN_UNTIL(r, server_all_lost(&srv));
  braid_listener_close(l);
  reactor_free(r);
  server_fini(&srv);
}

/* A callback closes the listener while the listener is ready in the same
 * batch. */
static braid_listener_t *g_close_me;
static void close_listener_on_data(tp *p, const void *d, size_t n) {
  (void)p;
  (void)d;
  (void)n;
  if (g_close_me != NULL) {
    assert_int_equal(braid_listener_close(g_close_me), 0);
    g_close_me = NULL;
  }
}

static void t_stale_listener(void **st) {
  (void)st;
  braid_reactor_t *r = reactor_new();
  server srv;
  server_init(&srv, 1);
  srv.tmpl.on_data = close_listener_on_data;
  braid_addr_t bound;
  braid_listener_t *l = listen_ip(r, "127.0.0.1", &srv, &bound);
  int fd = raw_connect(&bound);
  PUMP_UNTIL(r, fd, 0, srv.n == 1 && srv.conns[0]->made);
  g_close_me = l;
  assert_int_equal(send(fd, "x", 1, 0), 1);
  int fd2 = raw_connect(&bound);
  run_for(r, BRAID_MSEC(20));
  assert_null(g_close_me);
  assert_true(srv.n <= 2);
  close(fd);
  close(fd2);
  RUN_UNTIL(r, srv.conns[0]->lost && (srv.n < 2 || srv.conns[1]->lost));
  reactor_free(r);
  server_fini(&srv);
}

/* ------------------------------------------------------------------------ */

static int setup_dir(void **st) {
  (void)st;
  snprintf(g_tmpdir, sizeof g_tmpdir, "/tmp/braid-tcp-XXXXXX");
  return mkdtemp(g_tmpdir) != NULL ? 0 : -1;
}

static int teardown_dir(void **st) {
  (void)st;
  /* Sockets left behind by a failed test. */
  DIR *d = opendir(g_tmpdir);
  if (d != NULL) {
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
      char path[512];
      if (e->d_name[0] == '.')
        continue;
      snprintf(path, sizeof path, "%s/%s", g_tmpdir, e->d_name);
      unlink(path);
    }
    closedir(d);
  }
  return rmdir(g_tmpdir);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(t_echo_ipv4),
      cmocka_unit_test(t_echo_ipv6),
      cmocka_unit_test(t_echo_unix),
      cmocka_unit_test(t_echo_unix_abstract),
      cmocka_unit_test(t_large_transfer),
      cmocka_unit_test(t_write_limits),
      cmocka_unit_test(t_slow_reader),
      cmocka_unit_test(t_pause_resume_reading),
      cmocka_unit_test(t_pause_inflight_read),
      cmocka_unit_test(t_half_close),
      cmocka_unit_test(t_eof_autoclose),
      cmocka_unit_test(t_close_flushes),
      cmocka_unit_test(t_abort),
      cmocka_unit_test(t_abort_raw_peer),
      cmocka_unit_test(t_after_close),
      cmocka_unit_test(t_refused),
      cmocka_unit_test(t_connect_timeout),
      cmocka_unit_test(t_connect_bind),
      cmocka_unit_test(t_peer_reset_mid_write),
      cmocka_unit_test(t_write_after_peer_reset),
      cmocka_unit_test(t_write_owned),
      cmocka_unit_test(t_write_owned_abort),
      cmocka_unit_test(t_factory_refuses),
      cmocka_unit_test_teardown(t_accept_emfile, restore_nofile),
      cmocka_unit_test(t_destroy_open),
      cmocka_unit_test(t_stale_events_abort),
      cmocka_unit_test(t_stale_events_close),
      cmocka_unit_test(t_stale_listener),
      cmocka_unit_test(t_stale_ready_list),
  };
  printf("poller: %s\n",
         getenv("BRAID_POLLER") ? getenv("BRAID_POLLER") : "(default)");
  return cmocka_run_group_tests(tests, setup_dir, teardown_dir);
}
