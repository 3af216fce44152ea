/* The I/O layer's contract (core/io.h), driven through the ops table on
 * every poller: datagrams with the platform's buffer and with the caller's,
 * cancel, close with ops pending (each op completes before close_cb),
 * submit after close, cancel of an op that is not pending, BRAID__OPF_DEFER
 * from inside a completion (a later wait()), and a read that completed
 * before its cancel (reported as cancelled; its data goes to the next
 * read). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#ifdef _WIN32
#include <winsock2.h>
#include <ws2tcpip.h>
#else
#include <netinet/in.h>
#include <sys/socket.h>
#include <time.h>
#endif

#include "core/internal.h"

typedef struct rec {
  braid__op op;
  int calls;
  intptr_t st;
  char data[64];
  int order; /* when it completed, among ops and closes */
} rec;

static int g_seq;
static int g_closed_order;
static int g_closes;

static void op_cb(braid__op *op, intptr_t st) {
  rec *r = braid__container_of(op, rec, op);
  r->calls++;
  r->st = st;
  r->order = ++g_seq;
  /* Only reads carry bytes: for a WRITE the same union holds the buffer
   * array, which the platform may have advanced past its end. */
  if (st > 0 && (op->type == BRAID__OP_READ || op->type == BRAID__OP_RECVFROM) &&
      op->u.read.base != NULL) {
    size_t n = (size_t)st < sizeof r->data ? (size_t)st : sizeof r->data;
    memcpy(r->data, op->u.read.base, n);
  }
}

static void close_cb(braid__sock *s) {
  (void)s;
  g_closes++;
  g_closed_order = ++g_seq;
}

static void udp_open(braid_reactor_t *r, braid__sock *s,
                     struct sockaddr_in *a) {
  assert_int_equal(r->io->sock_open(r, s, AF_INET, SOCK_DGRAM), 0);
  memset(a, 0, sizeof *a);
  a->sin_family = AF_INET;
  a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  assert_int_equal(r->io->sock_bind(s, (struct sockaddr *)a, sizeof *a), 0);
  int len = (int)sizeof *a;
  assert_int_equal(r->io->sock_name(s, 0, (struct sockaddr *)a, &len), 0);
  assert_true(a->sin_port != 0);
}

/* Run the loop until `*flag` reaches `want` (bounded). */
static void run_until(braid_reactor_t *r, const int *flag, int want) {
  for (int i = 0; i < 2000 && *flag < want; i++)
    braid_reactor_run_once(r, true);
  assert_int_equal(*flag, want);
}

static void send_dgram(braid_reactor_t *r, braid__sock *s,
                       struct sockaddr_in *to, const char *msg) {
  rec w;
  memset(&w, 0, sizeof w);
  braid__buf b = {(void *)msg, strlen(msg)};
  w.op.type = BRAID__OP_SENDTO;
  w.op.cb = op_cb;
  w.op.u.write.bufs = &b;
  w.op.u.write.nbufs = 1;
  w.op.addr = (struct sockaddr *)to;
  w.op.addrlen = (int)sizeof *to;
  intptr_t st = r->io->submit(s, &w.op);
  if (st == BRAID__PENDING)
    run_until(r, &w.calls, 1);
  else
    w.st = st;
  assert_int_equal(w.st, (intptr_t)strlen(msg));
}

static void recv_dgram(braid_reactor_t *r, braid__sock *s, void *buf,
                       size_t len, const char *want,
                       const struct sockaddr_in *from) {
  rec rd;
  struct sockaddr_storage peer;
  memset(&rd, 0, sizeof rd);
  rd.op.type = BRAID__OP_RECVFROM;
  rd.op.cb = op_cb;
  rd.op.u.read.base = buf;
  rd.op.u.read.len = len;
  rd.op.addr = (struct sockaddr *)&peer;
  rd.op.addrlen = (int)sizeof peer;
  intptr_t st = r->io->submit(s, &rd.op);
  if (st == BRAID__PENDING) {
    run_until(r, &rd.calls, 1);
  } else {
    rd.st = st;
    memcpy(rd.data, rd.op.u.read.base, (size_t)st);
  }
  assert_int_equal(rd.st, (intptr_t)strlen(want));
  assert_memory_equal(rd.data, want, strlen(want));
  if (buf != NULL)
    assert_ptr_equal(rd.op.u.read.base, buf);
  assert_int_equal(((struct sockaddr_in *)&peer)->sin_port, from->sin_port);
}

static void t_datagrams(void **st) {
  (void)st;
  braid_reactor_t *r = NULL;
  assert_int_equal(braid_reactor_create(&r, NULL), 0);
  braid__sock a, b;
  struct sockaddr_in aa, ba;
  udp_open(r, &a, &aa);
  udp_open(r, &b, &ba);
  /* The platform's buffer, then the caller's, each way. */
  send_dgram(r, &b, &aa, "one");
  recv_dgram(r, &a, NULL, 0, "one", &ba);
  char mine[32];
  send_dgram(r, &a, &ba, "two!");
  recv_dgram(r, &b, mine, sizeof mine, "two!", &aa);
  /* A receive that has to wait for its datagram. */
  rec rd;
  memset(&rd, 0, sizeof rd);
  rd.op.type = BRAID__OP_RECVFROM;
  rd.op.cb = op_cb;
  intptr_t s1 = r->io->submit(&a, &rd.op);
  assert_int_equal(s1, BRAID__PENDING);
  send_dgram(r, &b, &aa, "three");
  run_until(r, &rd.calls, 1);
  assert_int_equal(rd.st, 5);
  assert_memory_equal(rd.data, "three", 5);
  g_closes = 0;
  r->io->close(&a, close_cb);
  r->io->close(&b, close_cb);
  run_until(r, &g_closes, 2);
  assert_int_equal(braid_reactor_destroy(r), 0);
}

static void t_cancel_and_close(void **st) {
  (void)st;
  braid_reactor_t *r = NULL;
  assert_int_equal(braid_reactor_create(&r, NULL), 0);
  braid__sock a;
  struct sockaddr_in aa;
  udp_open(r, &a, &aa);
  rec x, y;
  memset(&x, 0, sizeof x);
  memset(&y, 0, sizeof y);
  x.op.type = y.op.type = BRAID__OP_RECVFROM;
  x.op.cb = y.op.cb = op_cb;
  /* Not pending yet: cancel refuses. */
  assert_int_equal(r->io->cancel(&a, &x.op), BRAID_EINVAL);
  assert_int_equal(r->io->submit(&a, &x.op), BRAID__PENDING);
  assert_int_equal(r->io->cancel(&a, &x.op), 0);
  run_until(r, &x.calls, 1);
  assert_int_equal(x.st, BRAID_ECANCELED);
  /* Close with an op pending: it completes, cancelled, before close_cb;
   * nothing is delivered from inside close(). */
  g_seq = 0;
  g_closes = 0;
  assert_int_equal(r->io->submit(&a, &y.op), BRAID__PENDING);
  r->io->close(&a, close_cb);
  assert_int_equal(y.calls, 0);
  assert_int_equal(g_closes, 0);
  rec z;
  memset(&z, 0, sizeof z);
  z.op.type = BRAID__OP_RECVFROM;
  z.op.cb = op_cb;
  assert_int_equal(r->io->submit(&a, &z.op), BRAID_ECLOSED);
  run_until(r, &g_closes, 1);
  assert_int_equal(y.calls, 1);
  assert_int_equal(y.st, BRAID_ECANCELED);
  assert_true(y.order < g_closed_order);
  assert_int_equal(z.calls, 0);
  assert_int_equal(braid_reactor_destroy(r), 0);
}

/* A TCP pair made through the ops table: listen, accept, connect. */
static void tcp_pair(braid_reactor_t *r, braid__sock *l, braid__sock *c,
                     braid__sock *a) {
  struct sockaddr_in la;
  assert_int_equal(r->io->sock_open(r, l, AF_INET, SOCK_STREAM), 0);
  memset(&la, 0, sizeof la);
  la.sin_family = AF_INET;
  la.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  assert_int_equal(r->io->sock_bind(l, (struct sockaddr *)&la, sizeof la), 0);
  assert_int_equal(r->io->sock_listen(l, 8), 0);
  int len = (int)sizeof la;
  assert_int_equal(r->io->sock_name(l, 0, (struct sockaddr *)&la, &len), 0);
  rec acc, con;
  memset(&acc, 0, sizeof acc);
  memset(&con, 0, sizeof con);
  acc.op.type = BRAID__OP_ACCEPT;
  acc.op.cb = op_cb;
  intptr_t st = r->io->submit(l, &acc.op);
  if (st != BRAID__PENDING) {
    acc.calls = 1;
    acc.st = st;
  }
  assert_int_equal(r->io->sock_open(r, c, AF_INET, SOCK_STREAM), 0);
  con.op.type = BRAID__OP_CONNECT;
  con.op.cb = op_cb;
  con.op.addr = (struct sockaddr *)&la;
  con.op.addrlen = (int)sizeof la;
  st = r->io->submit(c, &con.op);
  if (st != BRAID__PENDING) {
    con.calls = 1;
    con.st = st;
  }
  run_until(r, &con.calls, 1);
  run_until(r, &acc.calls, 1);
  assert_int_equal(con.st, 0);
  assert_int_equal(acc.st, 0);
  assert_int_equal(r->io->sock_adopt(r, a, acc.op.u.accept.fd), 0);
}

/* The peer resets (SO_LINGER 0, close): a read fails with ECONNRESET. */
static void t_reset(void **st) {
  (void)st;
  braid_reactor_t *r = NULL;
  assert_int_equal(braid_reactor_create(&r, NULL), 0);
  braid__sock l, c, a;
  tcp_pair(r, &l, &c, &a);
  rec rd;
  memset(&rd, 0, sizeof rd);
  rd.op.type = BRAID__OP_READ;
  rd.op.cb = op_cb;
  assert_int_equal(r->io->submit(&c, &rd.op), BRAID__PENDING);
  struct linger lg = {1, 0};
  assert_int_equal(
      setsockopt(a.fd, SOL_SOCKET, SO_LINGER, (const char *)&lg, sizeof lg), 0);
  g_closes = 0;
  r->io->close(&a, close_cb);
  run_until(r, &rd.calls, 1);
  assert_int_equal(rd.st, BRAID_ECONNRESET);
  r->io->close(&c, close_cb);
  r->io->close(&l, close_cb);
  run_until(r, &g_closes, 3);
  assert_int_equal(braid_reactor_destroy(r), 0);
}

/* Bytes and the end of input through READ with the caller's buffer and
 * with the platform's, and a WRITE of many buffers. */
static void t_stream_ops(void **st) {
  (void)st;
  braid_reactor_t *r = NULL;
  assert_int_equal(braid_reactor_create(&r, NULL), 0);
  braid__sock l, c, a;
  tcp_pair(r, &l, &c, &a);
  static char big[100][1000];
  braid__buf bufs[100];
  for (int i = 0; i < 100; i++) {
    memset(big[i], 'a' + i % 26, sizeof big[i]);
    bufs[i].base = big[i];
    bufs[i].len = sizeof big[i];
  }
  rec w;
  memset(&w, 0, sizeof w);
  w.op.type = BRAID__OP_WRITE;
  w.op.cb = op_cb;
  w.op.u.write.bufs = bufs;
  w.op.u.write.nbufs = 100;
  intptr_t s1 = r->io->submit(&c, &w.op);
  if (s1 != BRAID__PENDING) {
    w.calls = 1;
    w.st = s1;
  }
  size_t got = 0;
  static char mine[4096];
  int use_mine = 0;
  while (got < sizeof big) {
    rec rd;
    memset(&rd, 0, sizeof rd);
    rd.op.type = BRAID__OP_READ;
    rd.op.cb = op_cb;
    rd.op.u.read.base = use_mine ? mine : NULL;
    rd.op.u.read.len = use_mine ? sizeof mine : 0;
    use_mine = !use_mine;
    intptr_t s2 = r->io->submit(&a, &rd.op);
    if (s2 == BRAID__PENDING) {
      run_until(r, &rd.calls, 1);
      s2 = rd.st;
    }
    assert_true(s2 > 0);
    const char *p = rd.op.u.read.base;
    for (intptr_t i = 0; i < s2; i++)
      assert_int_equal(p[i], 'a' + (int)((got + (size_t)i) / 1000) % 26);
    got += (size_t)s2;
  }
  run_until(r, &w.calls, 1);
  assert_int_equal(w.st, (intptr_t)sizeof big);
  /* The end of input after a shutdown. */
  assert_int_equal(r->io->sock_shutdown(&c), 0);
  rec e;
  memset(&e, 0, sizeof e);
  e.op.type = BRAID__OP_READ;
  e.op.cb = op_cb;
  intptr_t s3 = r->io->submit(&a, &e.op);
  if (s3 == BRAID__PENDING) {
    run_until(r, &e.calls, 1);
    s3 = e.st;
  }
  assert_int_equal(s3, 0);
  g_closes = 0;
  r->io->close(&a, close_cb);
  r->io->close(&c, close_cb);
  r->io->close(&l, close_cb);
  run_until(r, &g_closes, 3);
  assert_int_equal(braid_reactor_destroy(r), 0);
}

static void sleep_ms(unsigned ms) {
#ifdef _WIN32
  Sleep(ms);
#else
  struct timespec ts = {0, (long)ms * 1000000L};
  nanosleep(&ts, NULL);
#endif
}

/* A datagram straight from the socket, outside the I/O layer: sending
 * through it may run the loop (a completion platform), which would handle
 * the receive these tests want to catch in flight. */
static void send_raw(braid__sock *s, const struct sockaddr_in *to,
                     const char *msg) {
  assert_int_equal(sendto(s->fd, msg, (int)strlen(msg), 0,
                          (const struct sockaddr *)to, (int)sizeof *to),
                   (int)strlen(msg));
}

/* One wait() of the I/O layer, as the loop runs it, counted. */
static int g_waits;

static void wait_once(braid_reactor_t *r, int64_t timeout) {
  r->depth++;
  r->io->wait(r, timeout);
  r->depth--;
  g_waits++;
}

static void wait_until(braid_reactor_t *r, const int *flag, int want) {
  for (int i = 0; i < 500 && *flag < want; i++)
    wait_once(r, BRAID_MSEC(10));
  assert_int_equal(*flag, want);
}

/* BRAID__OPF_DEFER promises a later wait() than the one whose callback
 * submitted the op, even when the op could complete at once: otherwise a
 * stream over its read budget would read again before the timers ran. */
typedef struct deferrer {
  rec x, y;
  braid__sock *s;
  int x_wait, y_wait;
  intptr_t y_submit;
} deferrer;

static deferrer g_def;

static void y_cb(braid__op *op, intptr_t st) {
  op_cb(op, st);
  g_def.y_wait = g_waits;
}

static void x_cb(braid__op *op, intptr_t st) {
  op_cb(op, st);
  g_def.x_wait = g_waits;
  /* The next datagram is already in the socket: ready at once. */
  g_def.y.op.type = BRAID__OP_RECVFROM;
  g_def.y.op.flags = BRAID__OPF_DEFER;
  g_def.y.op.cb = y_cb;
  braid_reactor_t *r = g_def.s->reactor;
  g_def.y_submit = r->io->submit(g_def.s, &g_def.y.op);
}

static void t_defer_from_completion(void **st) {
  (void)st;
  braid_reactor_t *r = NULL;
  assert_int_equal(braid_reactor_create(&r, NULL), 0);
  braid__sock a, b;
  struct sockaddr_in aa, ba;
  udp_open(r, &a, &aa);
  udp_open(r, &b, &ba);
  memset(&g_def, 0, sizeof g_def);
  g_def.s = &a;
  g_def.x.op.type = BRAID__OP_RECVFROM;
  g_def.x.op.cb = x_cb;
  /* Pending: nothing has been sent yet. */
  assert_int_equal(r->io->submit(&a, &g_def.x.op), BRAID__PENDING);
  send_raw(&b, &aa, "one");
  send_raw(&b, &aa, "two");
  sleep_ms(20); /* both in a's receive queue before the first wait */
  g_waits = 0;
  wait_until(r, &g_def.x.calls, 1);
  assert_int_equal(g_def.x.st, 3);
  assert_int_equal(g_def.y_submit, BRAID__PENDING);
  wait_until(r, &g_def.y.calls, 1);
  assert_int_equal(g_def.y.st, 3);
  assert_memory_equal(g_def.y.data, "two", 3);
  assert_true(g_def.y_wait > g_def.x_wait);
  g_closes = 0;
  r->io->close(&a, close_cb);
  r->io->close(&b, close_cb);
  wait_until(r, &g_closes, 2);
  assert_int_equal(braid_reactor_destroy(r), 0);
}

/* A receive that the platform completed before its cancel could take
 * effect (a completion platform: the kernel had the data in the op's
 * buffer already) is reported as cancelled, so a paused transport never
 * sees data, and the datagram goes to the next receive, with its sender:
 * nothing is lost. On a readiness engine the cancel always wins and the
 * datagram simply waits in the kernel; the outcome is the same. */
static void t_cancel_keeps_data(void **st) {
  (void)st;
  braid_reactor_t *r = NULL;
  assert_int_equal(braid_reactor_create(&r, NULL), 0);
  braid__sock a, b;
  struct sockaddr_in aa, ba;
  udp_open(r, &a, &aa);
  udp_open(r, &b, &ba);
  for (int round = 0; round < 2; round++) {
    rec x;
    struct sockaddr_storage xfrom;
    memset(&x, 0, sizeof x);
    x.op.type = BRAID__OP_RECVFROM;
    x.op.cb = op_cb;
    x.op.addr = (struct sockaddr *)&xfrom; /* where the sender is kept */
    x.op.addrlen = (int)sizeof xfrom;
    assert_int_equal(r->io->submit(&a, &x.op), BRAID__PENDING);
    wait_once(r, 0); /* a completion platform hands the op to the kernel */
    send_raw(&b, &aa, round ? "later" : "late");
    sleep_ms(50); /* time for the kernel to complete the receive */
    assert_int_equal(r->io->cancel(&a, &x.op), 0);
    wait_until(r, &x.calls, 1);
    assert_int_equal(x.st, BRAID_ECANCELED);
    /* The next receive gets the datagram: the platform's buffer in round
     * 0, the caller's in round 1. */
    rec y;
    char mine[16];
    struct sockaddr_storage from;
    memset(&y, 0, sizeof y);
    memset(&from, 0, sizeof from);
    y.op.type = BRAID__OP_RECVFROM;
    y.op.cb = op_cb;
    y.op.u.read.base = round ? mine : NULL;
    y.op.u.read.len = round ? sizeof mine : 0;
    y.op.addr = (struct sockaddr *)&from;
    y.op.addrlen = (int)sizeof from;
    intptr_t sy = r->io->submit(&a, &y.op);
    if (sy == BRAID__PENDING) {
      wait_until(r, &y.calls, 1);
    } else {
      y.st = sy;
      memcpy(y.data, y.op.u.read.base, (size_t)sy);
    }
    const char *want = round ? "later" : "late";
    assert_int_equal(y.st, (intptr_t)strlen(want));
    assert_memory_equal(y.data, want, strlen(want));
    assert_int_equal(((struct sockaddr_in *)&from)->sin_port, ba.sin_port);
    assert_false(y.op.flags & BRAID__OPF_TRUNCATED);
  }
  g_closes = 0;
  r->io->close(&a, close_cb);
  r->io->close(&b, close_cb);
  wait_until(r, &g_closes, 2);
  assert_int_equal(braid_reactor_destroy(r), 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(t_datagrams),
      cmocka_unit_test(t_cancel_and_close),
      cmocka_unit_test(t_reset),
      cmocka_unit_test(t_stream_ops),
      cmocka_unit_test(t_defer_from_completion),
      cmocka_unit_test(t_cancel_keeps_data),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
