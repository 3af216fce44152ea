/* The I/O simulator (braid/iosim.h): connecting, latency on the manual
 * clock, splitting (every split point of a line protocol, byte at a time),
 * seeded interleaving across connections and its reproducibility, no
 * reordering within a stream, flow control through the window, half-close,
 * close, abort (in-flight bytes dropped), resets, network failure, and the
 * memory transport options the simulator relies on. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "braid/braid.h"
#include "braid/iosim.h"
#include "braid/testing.h"

/* ------------------------------------------------------------------------
 * A recording protocol: logs every callback as a letter (M made, D data,
 * E eof, L lost, P pause_writing, R resume_writing), keeps the bytes and
 * the clock at each delivery, and does what the test asks.
 * ------------------------------------------------------------------------ */

typedef struct rec {
  braid_protocol_t p;
  braid_reactor_t *r;
  char log[256];
  size_t nlog;
  char *data; /* everything received */
  size_t ndata, cap;
  size_t max_chunk, ncalls;
  uint64_t first_at, last_at; /* reactor time of the first/last data */
  int lost, lost_reason, made;
  int echo, shut_on_eof, close_on_eof, abort_on_data, pause_on_data;
  const char *reply_on_eof;
  braid_addr_t made_local, made_peer;
} rec;

static void rec_log(rec *r, char c) {
  if (r->nlog + 1 < sizeof r->log)
    r->log[r->nlog++] = c;
  r->log[r->nlog] = '\0';
}

static void rec_made(braid_protocol_t *p, braid_transport_t *t) {
  rec *r = (rec *)p;
  assert_ptr_equal(p->transport, t);
  r->made++;
  rec_log(r, 'M');
  assert_int_equal(braid_transport_local_addr(t, &r->made_local), 0);
  assert_int_equal(braid_transport_peer_addr(t, &r->made_peer), 0);
}

static void rec_data(braid_protocol_t *p, const void *data, size_t len) {
  rec *r = (rec *)p;
  if (r->nlog == 0 || r->log[r->nlog - 1] != 'D')
    rec_log(r, 'D');
  if (r->ndata + len > r->cap) {
    r->cap = (r->ndata + len) * 2;
    r->data = realloc(r->data, r->cap);
    assert_non_null(r->data);
  }
  memcpy(r->data + r->ndata, data, len);
  if (r->ndata == 0)
    r->first_at = braid_reactor_now(r->r);
  r->last_at = braid_reactor_now(r->r);
  r->ndata += len;
  r->ncalls++;
  if (len > r->max_chunk)
    r->max_chunk = len;
  if (r->echo)
    assert_int_equal(braid_transport_write(p->transport, data, len), 0);
  if (r->pause_on_data)
    assert_int_equal(braid_transport_pause_reading(p->transport), 0);
  if (r->abort_on_data)
    assert_int_equal(braid_transport_abort(p->transport), 0);
}

static void rec_eof(braid_protocol_t *p) {
  rec *r = (rec *)p;
  rec_log(r, 'E');
  if (r->reply_on_eof != NULL)
    assert_int_equal(braid_transport_write(p->transport, r->reply_on_eof,
                                           strlen(r->reply_on_eof)),
                     0);
  if (r->shut_on_eof)
    assert_int_equal(braid_transport_shutdown_write(p->transport), 0);
  if (r->close_on_eof)
    assert_int_equal(braid_transport_close(p->transport), 0);
}

static void rec_lost(braid_protocol_t *p, int reason) {
  rec *r = (rec *)p;
  rec_log(r, 'L');
  r->lost++;
  r->lost_reason = reason;
}

static void rec_pause(braid_protocol_t *p) {
  rec_log((rec *)p, 'P');
}

static void rec_resume(braid_protocol_t *p) {
  rec_log((rec *)p, 'R');
}

static const braid_protocol_ops rec_ops = {
    .connection_made = rec_made,
    .data_received = rec_data,
    .eof_received = rec_eof,
    .connection_lost = rec_lost,
    .pause_writing = rec_pause,
    .resume_writing = rec_resume,
};

/* Not half-close aware: the end of input closes it. */
static const braid_protocol_ops rec_noeof_ops = {
    .connection_made = rec_made,
    .data_received = rec_data,
    .connection_lost = rec_lost,
    .pause_writing = rec_pause,
    .resume_writing = rec_resume,
};

static void rec_init(rec *r, braid_reactor_t *re, const braid_protocol_ops *o) {
  memset(r, 0, sizeof *r);
  r->p.ops = o;
  r->r = re;
}

static void rec_free(rec *r) {
  free(r->data);
  r->data = NULL;
}

static int rec_is(const rec *r, const char *s) {
  return r->ndata == strlen(s) && memcmp(r->data, s, r->ndata) == 0;
}

static braid_transport_t *tp(rec *r) {
  return r->p.transport;
}

static braid_reactor_t *mkreactor(void) {
  braid_reactor_t *re;
  assert_int_equal(braid_testing_reactor_create(&re), 0);
  return re;
}

static braid_iosim_t *mksim(braid_reactor_t *re, const braid_iosim_options *o) {
  braid_iosim_t *sim;
  assert_int_equal(braid_iosim_create(re, o, &sim), 0);
  return sim;
}

static void flush_ok(braid_iosim_t *sim) {
  ptrdiff_t n = braid_iosim_flush(sim, 0);
  if (n < 0)
    fail_msg("flush: %s", braid_strerror((int)n));
}

static void addr_is(const braid_addr_t *a, const char *want) {
  char buf[64];
  braid_addr_format(a, buf, sizeof buf);
  assert_string_equal(buf, want);
}

/* ------------------------------------------------------------------------
 * Connecting
 * ------------------------------------------------------------------------ */

static void t_connect_async_and_echo(void **st) {
  (void)st;
  braid_reactor_t *re = mkreactor();
  braid_iosim_t *sim = mksim(re, NULL);
  rec c, s;
  rec_init(&c, re, &rec_ops);
  rec_init(&s, re, &rec_ops);
  s.echo = 1;
  braid_iosim_conn_t *conn;
  assert_int_equal(braid_iosim_connect(sim, &c.p, &s.p, NULL, NULL, &conn), 0);
  /* Asynchronous, as a real connect: nothing yet. */
  assert_int_equal(c.made + s.made, 0);
  assert_false(braid_iosim_established(conn));
  assert_null(braid_iosim_client(conn));
  assert_int_equal(braid_iosim_pump(sim), 1);
  assert_true(braid_iosim_established(conn));
  assert_int_equal(c.made, 1);
  assert_int_equal(s.made, 1);
  assert_ptr_equal(braid_iosim_server_protocol(conn), &s.p);
  /* The default addresses, already visible in connection_made. */
  addr_is(&c.made_local, "10.0.0.2:40000");
  addr_is(&c.made_peer, "10.0.0.1:8080");
  addr_is(&s.made_local, "10.0.0.1:8080");
  addr_is(&s.made_peer, "10.0.0.2:40000");
  assert_int_equal(braid_transport_write(tp(&c), "ping", 4), 0);
  /* Written bytes wait for the pump. */
  assert_int_equal(s.ndata, 0);
  assert_int_equal(braid_iosim_pump(sim), 1); /* collect + deliver */
  assert_true(rec_is(&s, "ping"));
  assert_int_equal(c.ndata, 0);
  flush_ok(sim);
  assert_true(rec_is(&c, "ping"));
  assert_int_equal(braid_iosim_pump(sim), 0); /* quiet */
  braid_iosim_stats sts;
  assert_int_equal(braid_iosim_stats_get(sim, &sts), 0);
  assert_int_equal(sts.bytes_delivered, 8);
  assert_int_equal(sts.bytes_dropped, 0);
  assert_int_equal(sts.events, 3); /* up, ping, pong */
  assert_int_equal(braid_iosim_destroy(sim), 0);
  assert_int_equal(c.lost, 1);
  assert_int_equal(s.lost, 1);
  assert_int_equal(c.lost_reason, BRAID_ECONNABORTED);
  rec_free(&c);
  rec_free(&s);
  assert_int_equal(braid_reactor_destroy(re), 0);
}

static void t_refused_and_custom_addr(void **st) {
  (void)st;
  braid_reactor_t *re = mkreactor();
  braid_iosim_options o = {0};
  o.delay_min = o.delay_max = BRAID_MSEC(7);
  braid_addr_ip(&o.server_addr, "::1", 25);
  braid_iosim_t *sim = mksim(re, &o);
  rec c;
  rec_init(&c, re, &rec_ops);
  /* Nobody listens: refused one delay later, without connection_made. */
  braid_iosim_conn_t *conn;
  assert_int_equal(braid_iosim_connect(sim, &c.p, NULL, NULL, NULL, &conn), 0);
  assert_int_equal(braid_iosim_pump(sim), 0);
  assert_int_equal(braid_clock_advance(re, BRAID_MSEC(6)), 0);
  assert_int_equal(braid_iosim_pump(sim), 0);
  assert_int_equal(braid_clock_advance(re, BRAID_MSEC(1)), 0);
  assert_int_equal(braid_iosim_pump(sim), 1);
  assert_string_equal(c.log, "L");
  assert_int_equal(c.lost_reason, BRAID_ECONNREFUSED);
  assert_int_equal(braid_iosim_break(conn, BRAID_ECONNRESET), BRAID_ECLOSED);
  /* A given client address and the server address from the options. */
  rec c2, s2;
  rec_init(&c2, re, &rec_ops);
  rec_init(&s2, re, &rec_ops);
  braid_addr_t ca;
  braid_addr_ip(&ca, "2001:db8::7", 5555);
  assert_int_equal(braid_iosim_connect(sim, &c2.p, &s2.p, NULL, &ca, &conn), 0);
  assert_int_equal(braid_iosim_conn_id(conn), 1);
  flush_ok(sim);
  assert_int_equal(braid_reactor_now(re), BRAID_MSEC(14));
  addr_is(&c2.made_local, "[2001:db8::7]:5555");
  addr_is(&c2.made_peer, "[::1]:25");
  addr_is(&s2.made_peer, "[2001:db8::7]:5555");
  assert_int_equal(braid_iosim_destroy(sim), 0);
  assert_int_equal(c.lost, 1); /* not told twice */
  assert_int_equal(c2.lost, 1);
  assert_int_equal(s2.lost, 1);
  rec_free(&c2);
  rec_free(&s2);
  assert_int_equal(braid_reactor_destroy(re), 0);
}

/* A factory that builds recs, or refuses (NULL) when told to. */
typedef struct recfactory {
  braid_factory_t f;
  braid_reactor_t *r;
  rec made[8];
  int n, refuse;
  braid_addr_t peers[8];
  const braid_protocol_ops *ops;
} recfactory;

static braid_protocol_t *rf_build(braid_factory_t *f,
                                  const braid_addr_t *peer) {
  recfactory *rf = (recfactory *)f;
  if (rf->refuse || rf->n == 8)
    return NULL;
  rf->peers[rf->n] = *peer;
  rec *r = &rf->made[rf->n++];
  rec_init(r, rf->r, rf->ops != NULL ? rf->ops : &rec_ops);
  return &r->p;
}

static void rf_init(recfactory *rf, braid_reactor_t *re) {
  memset(rf, 0, sizeof *rf);
  rf->f.build = rf_build;
  rf->r = re;
}

static void rf_free(recfactory *rf) {
  for (int i = 0; i < rf->n; i++)
    rec_free(&rf->made[i]);
}

static void t_factory_and_refusal(void **st) {
  (void)st;
  braid_reactor_t *re = mkreactor();
  braid_iosim_t *sim = mksim(re, NULL);
  recfactory rf;
  rf_init(&rf, re);
  rec c;
  rec_init(&c, re, &rec_ops);
  braid_iosim_conn_t *conn;
  assert_int_equal(braid_iosim_connect(sim, &c.p, NULL, &rf.f, NULL, &conn), 0);
  flush_ok(sim);
  assert_int_equal(rf.n, 1);
  addr_is(&rf.peers[0], "10.0.0.2:40000");
  assert_ptr_equal(braid_iosim_server_protocol(conn), &rf.made[0].p);
  assert_int_equal(rf.made[0].made, 1);
  /* Refused by the factory: up, then the end of input at once; writing
   * into the closed socket then earns a reset. */
  rf.refuse = 1;
  rec c2;
  rec_init(&c2, re, &rec_ops);
  assert_int_equal(braid_iosim_connect(sim, &c2.p, NULL, &rf.f, NULL, &conn),
                   0);
  flush_ok(sim);
  assert_null(braid_iosim_server(conn));
  assert_null(braid_iosim_server_protocol(conn));
  assert_false(braid_iosim_established(conn));
  assert_string_equal(c2.log, "ME");
  assert_int_equal(braid_transport_write(tp(&c2), "x", 1), 0);
  flush_ok(sim);
  assert_string_equal(c2.log, "MEL");
  assert_int_equal(c2.lost_reason, BRAID_ECONNRESET);
  braid_iosim_stats sts;
  braid_iosim_stats_get(sim, &sts);
  assert_int_equal(sts.bytes_dropped, 1);
  assert_int_equal(sts.resets, 1);
  /* A client that is not half-close aware closes on that end of input. */
  rec c3;
  rec_init(&c3, re, &rec_noeof_ops);
  assert_int_equal(braid_iosim_connect(sim, &c3.p, NULL, &rf.f, NULL, &conn),
                   0);
  flush_ok(sim);
  assert_string_equal(c3.log, "ML");
  assert_int_equal(c3.lost_reason, 0);
  assert_int_equal(braid_iosim_destroy(sim), 0);
  assert_int_equal(c.lost + c2.lost + c3.lost + rf.made[0].lost, 4);
  rec_free(&c);
  rec_free(&c2);
  rec_free(&c3);
  rf_free(&rf);
  assert_int_equal(braid_reactor_destroy(re), 0);
}

/* ------------------------------------------------------------------------
 * Latency, splitting, ordering
 * ------------------------------------------------------------------------ */

static void t_fixed_delay_timing(void **st) {
  (void)st;
  braid_reactor_t *re = mkreactor();
  braid_iosim_options o = {0};
  o.delay_min = o.delay_max = BRAID_MSEC(10);
  braid_iosim_t *sim = mksim(re, &o);
  rec c, s;
  rec_init(&c, re, &rec_ops);
  rec_init(&s, re, &rec_ops);
  s.echo = 1;
  assert_int_equal(braid_iosim_connect(sim, &c.p, &s.p, NULL, NULL, NULL), 0);
  flush_ok(sim);
  assert_int_equal(braid_reactor_now(re), BRAID_MSEC(10)); /* connect */
  assert_int_equal(braid_transport_write(tp(&c), "hi", 2), 0);
  flush_ok(sim);
  /* One way 10 ms, the echo 10 ms back. */
  assert_int_equal(s.first_at, BRAID_MSEC(20));
  assert_int_equal(c.first_at, BRAID_MSEC(30));
  assert_true(rec_is(&c, "hi"));
  braid_iosim_stats sts;
  braid_iosim_stats_get(sim, &sts);
  assert_int_equal(sts.clock_advances, 3);
  assert_int_equal(braid_iosim_destroy(sim), 0);
  rec_free(&c);
  rec_free(&s);
  assert_int_equal(braid_reactor_destroy(re), 0);
}

/* A protocol timer and a slow network: the timer fires first, on the
 * clock, while the pump advances it. */
typedef struct timed {
  rec base;
  braid_timer_t timer;
  uint64_t fired_at;
  size_t data_when_fired;
} timed;

static void timed_fire(braid_timer_t *t, void *arg) {
  (void)t;
  timed *x = arg;
  x->fired_at = braid_reactor_now(x->base.r);
  x->data_when_fired = x->base.ndata;
}

static void t_timers_interleave_with_delivery(void **st) {
  (void)st;
  braid_reactor_t *re = mkreactor();
  braid_iosim_options o = {0};
  o.delay_min = o.delay_max = BRAID_MSEC(10);
  braid_iosim_t *sim = mksim(re, &o);
  rec c;
  timed s;
  rec_init(&c, re, &rec_ops);
  rec_init(&s.base, re, &rec_ops);
  assert_int_equal(braid_iosim_connect(sim, &c.p, &s.base.p, NULL, NULL, NULL),
                   0);
  flush_ok(sim);
  memset(&s.timer, 0, sizeof s.timer);
  assert_int_equal(
      braid_timer_start(re, &s.timer, BRAID_MSEC(5), timed_fire, &s), 0);
  assert_int_equal(braid_transport_write(tp(&c), "late", 4), 0);
  flush_ok(sim);
  assert_int_equal(s.fired_at, BRAID_MSEC(15));
  assert_int_equal(s.data_when_fired, 0);
  assert_int_equal(s.base.first_at, BRAID_MSEC(20));
  assert_int_equal(braid_iosim_destroy(sim), 0);
  rec_free(&c);
  rec_free(&s.base);
  assert_int_equal(braid_reactor_destroy(re), 0);
}

static void t_random_delay_keeps_stream_order(void **st) {
  (void)st;
  braid_reactor_t *re = mkreactor();
  braid_iosim_options o = {0};
  o.seed = 42;
  o.delay_min = BRAID_MSEC(1);
  o.delay_max = BRAID_MSEC(50);
  o.chunk_min = 1;
  o.chunk_max = 7;
  braid_iosim_t *sim = mksim(re, &o);
  rec c, s;
  rec_init(&c, re, &rec_ops);
  rec_init(&s, re, &rec_ops);
  assert_int_equal(braid_iosim_connect(sim, &c.p, &s.p, NULL, NULL, NULL), 0);
  flush_ok(sim);
  /* 200 batches, each taken by its own pump a millisecond apart, each with
   * its own drawn delay: later ones often draw shorter delays, and must
   * still arrive after the earlier ones. */
  char want[201];
  for (int i = 0; i < 200; i++) {
    want[i] = (char)('a' + i % 26);
    assert_int_equal(braid_transport_write(tp(&c), &want[i], 1), 0);
    assert_true(braid_iosim_pump(sim) >= 0);
    assert_int_equal(braid_clock_advance(re, BRAID_MSEC(1)), 0);
  }
  want[200] = '\0';
  flush_ok(sim);
  assert_true(rec_is(&s, want));
  assert_true(s.max_chunk <= 7);
  assert_int_equal(braid_iosim_destroy(sim), 0);
  rec_free(&c);
  rec_free(&s);
  assert_int_equal(braid_reactor_destroy(re), 0);
}

static void t_byte_at_a_time(void **st) {
  (void)st;
  braid_reactor_t *re = mkreactor();
  braid_iosim_options o = {0};
  o.chunk_min = o.chunk_max = 1;
  braid_iosim_t *sim = mksim(re, &o);
  rec c, s;
  rec_init(&c, re, &rec_ops);
  rec_init(&s, re, &rec_ops);
  s.echo = 1;
  assert_int_equal(braid_iosim_connect(sim, &c.p, &s.p, NULL, NULL, NULL), 0);
  flush_ok(sim);
  const char *msg = "byte by byte, both ways";
  assert_int_equal(braid_transport_write(tp(&c), msg, strlen(msg)), 0);
  flush_ok(sim);
  assert_true(rec_is(&s, msg));
  assert_true(rec_is(&c, msg));
  assert_int_equal(s.ncalls, strlen(msg));
  assert_int_equal(c.ncalls, strlen(msg));
  assert_int_equal(s.max_chunk, 1);
  assert_int_equal(braid_iosim_destroy(sim), 0);
  rec_free(&c);
  rec_free(&s);
  assert_int_equal(braid_reactor_destroy(re), 0);
}

/* ------------------------------------------------------------------------
 * The line receiver (protocols/basic) at every split point
 * ------------------------------------------------------------------------ */

typedef struct lproto {
  braid_line_receiver_t lr;
  char lines[512];
  size_t nlines_len;
  int nlines, echo, lost, lost_reason, eof;
} lproto;

static void lp_line(braid_line_receiver_t *lr, const char *line, size_t len) {
  lproto *l = (lproto *)lr;
  int n = snprintf(l->lines + l->nlines_len, sizeof l->lines - l->nlines_len,
                   "[%.*s]", (int)len, line);
  assert_true(n > 0 && (size_t)n < sizeof l->lines - l->nlines_len);
  l->nlines_len += (size_t)n;
  l->nlines++;
  if (l->echo)
    assert_int_equal(braid_line_receiver_send_line(lr, line, len), 0);
}

static void lp_eof(braid_line_receiver_t *lr) {
  lproto *l = (lproto *)lr;
  l->eof++;
  braid_transport_close(braid_line_receiver_transport(lr));
}

static void lp_lost(braid_line_receiver_t *lr, int reason) {
  lproto *l = (lproto *)lr;
  l->lost++;
  l->lost_reason = reason;
}

static const braid_line_receiver_ops lp_ops = {
    .line_received = lp_line,
    .eof_received = lp_eof,
    .connection_lost = lp_lost,
};

static void lp_init(lproto *l, int echo) {
  memset(l, 0, sizeof *l);
  braid_line_receiver_init(&l->lr, &lp_ops, NULL);
  l->echo = echo;
}

/* A chunk script: sizes to deliver in order, in either direction; when it
 * runs out, everything due goes at once. */
typedef struct script {
  size_t sizes[8];
  size_t n, at;
  size_t calls;
} script;

static size_t script_chunk(braid_iosim_conn_t *c, braid_iosim_dir dir,
                           size_t avail, void *arg) {
  (void)c;
  (void)dir;
  script *s = arg;
  s->calls++;
  return s->at < s->n ? s->sizes[s->at++] : avail;
}

static const char LINES_IN[] = "HELO a.example\r\nMAIL\r\n\r\nlast one\r\n";
static const char LINES_WANT[] = "[HELO a.example][MAIL][][last one]";

/* Send LINES_IN from a line client to an echoing line server, delivering
 * each direction in pieces of the given sizes, and check both ends. */
static void run_lines(braid_reactor_t *re, braid_iosim_options *o) {
  braid_iosim_t *sim = mksim(re, o);
  lproto cl, sv;
  lp_init(&cl, 0);
  lp_init(&sv, 1);
  assert_int_equal(
      braid_iosim_connect(sim, &cl.lr.proto, &sv.lr.proto, NULL, NULL, NULL),
      0);
  flush_ok(sim);
  braid_transport_t *t = braid_line_receiver_transport(&cl.lr);
  assert_int_equal(braid_transport_write(t, LINES_IN, sizeof LINES_IN - 1), 0);
  assert_int_equal(braid_transport_shutdown_write(t), 0);
  flush_ok(sim);
  assert_string_equal(sv.lines, LINES_WANT);
  assert_string_equal(cl.lines, LINES_WANT);
  /* The server closed on the end of input; the client got its own. */
  assert_int_equal(sv.eof, 1);
  assert_int_equal(cl.eof, 1);
  assert_int_equal(sv.lost, 1);
  assert_int_equal(sv.lost_reason, 0);
  assert_int_equal(cl.lost, 1);
  assert_int_equal(cl.lost_reason, 0);
  assert_int_equal(braid_iosim_destroy(sim), 0);
}

static void t_line_every_split_point(void **st) {
  (void)st;
  braid_reactor_t *re = mkreactor();
  const size_t n = sizeof LINES_IN - 1;
  size_t runs = 0;
  /* Two pieces at every point, and three pieces at every pair of points:
   * the same script applies to the echo, which is written line by line
   * and so splits differently. */
  for (size_t i = 1; i < n; i++) {
    for (size_t j = 0; j < n - i; j++) {
      script sc = {{i, j ? j : n, n}, 3, 0, 0};
      braid_iosim_options o = {0};
      o.chunk_cb = script_chunk;
      o.chunk_arg = &sc;
      run_lines(re, &o);
      assert_true(sc.calls >= 2);
      runs++;
    }
  }
  assert_int_equal(runs, (n - 1) * n / 2);
  /* Byte at a time. */
  braid_iosim_options o = {0};
  o.chunk_min = o.chunk_max = 1;
  run_lines(re, &o);
  /* And random splits with random latency under 100 seeds. */
  for (uint64_t seed = 0; seed < 100; seed++) {
    braid_iosim_options r = {0};
    r.seed = seed;
    r.chunk_min = 1;
    r.chunk_max = 9;
    r.delay_max = BRAID_MSEC(3);
    run_lines(re, &r);
  }
  assert_int_equal(braid_reactor_destroy(re), 0);
}

/* ------------------------------------------------------------------------
 * Interleaving across connections, and reproducibility
 * ------------------------------------------------------------------------ */

typedef struct trace {
  char ev[4096];
  size_t n;
} trace;

static void trace_cb(braid_iosim_conn_t *c, braid_iosim_event ev,
                     braid_iosim_dir dir, size_t len, void *arg) {
  trace *tr = arg;
  int k = snprintf(tr->ev + tr->n, sizeof tr->ev - tr->n, "%u%c%c%zu ",
                   braid_iosim_conn_id(c), "?CRDEXP"[ev],
                   dir == BRAID_IOSIM_TO_SERVER ? '>' : '<', len);
  if (k > 0 && (size_t)k < sizeof tr->ev - tr->n)
    tr->n += (size_t)k;
}

/* The order in which the servers saw their first bytes, as conn ids. */
typedef struct order {
  char seq[64];
  size_t n;
} order;

typedef struct oproto {
  braid_protocol_t p;
  order *o;
  char id;
  size_t got;
} oproto;

static void op_data(braid_protocol_t *p, const void *d, size_t len) {
  (void)d;
  oproto *x = (oproto *)p;
  x->got += len;
  if (x->o->n + 1 < sizeof x->o->seq)
    x->o->seq[x->o->n++] = x->id;
}

static const braid_protocol_ops op_ops = {.data_received = op_data};

/* Four connections, each client writing three batches at once; returns the
 * trace and the order of deliveries. */
static void run_four(uint64_t seed, trace *tr, order *ord, int random_delay) {
  braid_reactor_t *re = mkreactor();
  braid_iosim_options o = {0};
  o.seed = seed;
  o.chunk_min = 1;
  o.chunk_max = 5;
  if (random_delay)
    o.delay_max = BRAID_MSEC(4);
  o.trace_cb = trace_cb;
  o.trace_arg = tr;
  memset(tr, 0, sizeof *tr);
  memset(ord, 0, sizeof *ord);
  braid_iosim_t *sim = mksim(re, &o);
  rec c[4];
  oproto s[4];
  for (int i = 0; i < 4; i++) {
    rec_init(&c[i], re, &rec_ops);
    s[i].p.ops = &op_ops;
    s[i].o = ord;
    s[i].id = (char)('0' + i);
    s[i].got = 0;
    assert_int_equal(
        braid_iosim_connect(sim, &c[i].p, &s[i].p, NULL, NULL, NULL), 0);
  }
  flush_ok(sim);
  for (int i = 0; i < 4; i++)
    assert_int_equal(braid_transport_write(tp(&c[i]), "abcdefghij", 10), 0);
  flush_ok(sim);
  for (int i = 0; i < 4; i++)
    assert_int_equal(s[i].got, 10);
  assert_int_equal(braid_iosim_destroy(sim), 0);
  for (int i = 0; i < 4; i++)
    rec_free(&c[i]);
  assert_int_equal(braid_reactor_destroy(re), 0);
}

/* Whether the sequence has one connection's deliveries split by another's. */
static int interleaved(const order *o) {
  for (size_t i = 0; i + 2 < o->n; i++)
    for (size_t j = i + 1; j + 1 < o->n; j++)
      if (o->seq[j] != o->seq[i])
        for (size_t k = j + 1; k < o->n; k++)
          if (o->seq[k] == o->seq[i])
            return 1;
  return 0;
}

static void t_same_seed_same_interleaving(void **st) {
  (void)st;
  for (int delay = 0; delay < 2; delay++) {
    trace a, b;
    order oa, ob;
    run_four(7, &a, &oa, delay);
    run_four(7, &b, &ob, delay);
    assert_string_equal(a.ev, b.ev);
    assert_string_equal(oa.seq, ob.seq);
    /* Without latency all four batches are due at once and the seeded
     * choice interleaves their chunks; with latency each batch has its
     * own due time, and the order between connections follows it. */
    if (delay == 0)
      assert_true(interleaved(&oa));
    /* Other seeds give other orders (at least one of ten differs). */
    int differ = 0;
    for (uint64_t seed = 100; seed < 110; seed++) {
      trace c;
      order oc;
      run_four(seed, &c, &oc, delay);
      differ += strcmp(oc.seq, oa.seq) != 0;
    }
    assert_true(differ > 0);
  }
}

/* ------------------------------------------------------------------------
 * Flow control
 * ------------------------------------------------------------------------ */

/* Writes 4 KiB at a time until told to pause, and again on resume, until
 * `total` bytes are written. */
typedef struct producer {
  rec base;
  size_t total, written;
  int paused, pauses, resumes;
} producer;

static void prod_fill(producer *pr) {
  static char block[4096];
  while (!pr->paused && pr->written < pr->total) {
    size_t n = pr->total - pr->written;
    if (n > sizeof block)
      n = sizeof block;
    for (size_t i = 0; i < n; i++)
      block[i] = (char)((pr->written + i) % 251);
    assert_int_equal(braid_transport_write(pr->base.p.transport, block, n), 0);
    pr->written += n;
  }
}

static void prod_pause(braid_protocol_t *p) {
  producer *pr = (producer *)p;
  pr->paused = 1;
  pr->pauses++;
}

static void prod_resume(braid_protocol_t *p) {
  producer *pr = (producer *)p;
  pr->paused = 0;
  pr->resumes++;
  prod_fill(pr);
}

static const braid_protocol_ops prod_ops = {
    .connection_made = rec_made,
    .data_received = rec_data,
    .eof_received = rec_eof,
    .connection_lost = rec_lost,
    .pause_writing = prod_pause,
    .resume_writing = prod_resume,
};

static void t_flow_control_window(void **st) {
  (void)st;
  braid_reactor_t *re = mkreactor();
  braid_iosim_options o = {0};
  o.window = 16384;
  o.chunk_max = 3000;
  o.seed = 3;
  braid_iosim_t *sim = mksim(re, &o);
  producer c;
  rec s;
  rec_init(&c.base, re, &prod_ops);
  c.total = 300000;
  c.written = 0;
  c.paused = c.pauses = c.resumes = 0;
  rec_init(&s, re, &rec_ops);
  braid_iosim_conn_t *conn;
  assert_int_equal(braid_iosim_connect(sim, &c.base.p, &s.p, NULL, NULL, &conn),
                   0);
  flush_ok(sim);
  /* The reader pauses: the window fills, then the sender's queue passes
   * its 64 KiB mark and the producer is paused. */
  assert_int_equal(braid_transport_pause_reading(tp(&s)), 0);
  prod_fill(&c);
  assert_int_equal(c.pauses, 1);
  flush_ok(sim);
  assert_int_equal(s.ndata, 0);
  assert_int_equal(braid_iosim_in_flight(conn, BRAID_IOSIM_TO_SERVER), 16384);
  assert_true(braid_memory_transport_writing_paused(braid_iosim_client(conn)));
  assert_int_equal(braid_transport_write_queued(tp(&c.base)),
                   c.written - 16384);
  assert_true(c.written < c.total);
  /* Nothing was delivered while paused, not even into the memory
   * transport's own buffer. */
  assert_int_equal(
      braid_memory_transport_pending_input(braid_iosim_server(conn)), 0);
  /* Resume: everything arrives, in order, and the producer was resumed
   * (more than once: pauses and resumes alternate as the queue moves). */
  assert_int_equal(braid_transport_resume_reading(tp(&s)), 0);
  flush_ok(sim);
  assert_int_equal(c.written, c.total);
  assert_int_equal(s.ndata, c.total);
  for (size_t i = 0; i < s.ndata; i++)
    if ((unsigned char)s.data[i] != i % 251)
      fail_msg("byte %zu out of order", i);
  assert_true(c.resumes >= 1);
  assert_int_equal(c.pauses, c.resumes);
  assert_true(s.max_chunk <= 3000);
  assert_int_equal(braid_iosim_in_flight(conn, BRAID_IOSIM_TO_SERVER), 0);
  assert_int_equal(braid_iosim_destroy(sim), 0);
  rec_free(&c.base);
  rec_free(&s);
  assert_int_equal(braid_reactor_destroy(re), 0);
}

/* A reader that pauses itself after every delivery and is resumed by the
 * test: exactly one delivery per resume. */
static void t_pause_inside_data_received(void **st) {
  (void)st;
  braid_reactor_t *re = mkreactor();
  braid_iosim_options o = {0};
  o.chunk_min = o.chunk_max = 4;
  braid_iosim_t *sim = mksim(re, &o);
  rec c, s;
  rec_init(&c, re, &rec_ops);
  rec_init(&s, re, &rec_ops);
  s.pause_on_data = 1;
  assert_int_equal(braid_iosim_connect(sim, &c.p, &s.p, NULL, NULL, NULL), 0);
  flush_ok(sim);
  assert_int_equal(braid_transport_write(tp(&c), "0123456789ab", 12), 0);
  assert_int_equal(braid_transport_shutdown_write(tp(&c)), 0);
  for (int i = 1; i <= 3; i++) {
    flush_ok(sim);
    assert_int_equal(s.ndata, 4u * (unsigned)i);
    assert_int_equal(s.ncalls, (size_t)i);
    assert_int_equal(braid_transport_resume_reading(tp(&s)), 0);
  }
  flush_ok(sim);
  /* The end of input waited behind the pauses too. */
  assert_string_equal(s.log, "MDE");
  assert_true(rec_is(&s, "0123456789ab"));
  assert_int_equal(braid_iosim_destroy(sim), 0);
  rec_free(&c);
  rec_free(&s);
  assert_int_equal(braid_reactor_destroy(re), 0);
}

/* ------------------------------------------------------------------------
 * Closing
 * ------------------------------------------------------------------------ */

static void t_half_close(void **st) {
  (void)st;
  braid_reactor_t *re = mkreactor();
  braid_iosim_options o = {0};
  o.delay_min = o.delay_max = BRAID_MSEC(1);
  braid_iosim_t *sim = mksim(re, &o);
  rec c, s;
  rec_init(&c, re, &rec_ops);
  rec_init(&s, re, &rec_ops);
  s.reply_on_eof = "response";
  s.shut_on_eof = 1;
  braid_iosim_conn_t *conn;
  assert_int_equal(braid_iosim_connect(sim, &c.p, &s.p, NULL, NULL, &conn), 0);
  flush_ok(sim);
  assert_int_equal(braid_transport_write(tp(&c), "request", 7), 0);
  assert_int_equal(braid_transport_shutdown_write(tp(&c)), 0);
  flush_ok(sim);
  /* The server read the request and the end of input, and still wrote its
   * response; the client got it and then the server's end of input, and
   * both directions being shut, both connections ended cleanly. */
  assert_true(rec_is(&s, "request"));
  assert_true(rec_is(&c, "response"));
  assert_string_equal(s.log, "MDEL");
  assert_string_equal(c.log, "MDEL");
  assert_int_equal(s.lost_reason, 0);
  assert_int_equal(c.lost_reason, 0);
  assert_int_equal(braid_iosim_destroy(sim), 0);
  rec_free(&c);
  rec_free(&s);
  assert_int_equal(braid_reactor_destroy(re), 0);
}

static void t_close_flushes_then_eof(void **st) {
  (void)st;
  braid_reactor_t *re = mkreactor();
  braid_iosim_options o = {0};
  o.chunk_max = 2;
  braid_iosim_t *sim = mksim(re, &o);
  rec c, s;
  rec_init(&c, re, &rec_noeof_ops);
  rec_init(&s, re, &rec_ops);
  assert_int_equal(braid_iosim_connect(sim, &c.p, &s.p, NULL, NULL, NULL), 0);
  flush_ok(sim);
  assert_int_equal(braid_transport_write(tp(&s), "goodbye", 7), 0);
  assert_int_equal(braid_transport_close(tp(&s)), 0);
  flush_ok(sim);
  /* Every byte before the close arrived, then the end of input, which the
   * client (not half-close aware) answered by closing. */
  assert_true(rec_is(&c, "goodbye"));
  assert_string_equal(c.log, "MDL");
  assert_int_equal(c.lost_reason, 0);
  assert_string_equal(s.log, "ML");
  assert_int_equal(s.lost_reason, 0);
  assert_int_equal(braid_iosim_destroy(sim), 0);
  rec_free(&c);
  rec_free(&s);
  assert_int_equal(braid_reactor_destroy(re), 0);
}

static void t_abort_drops_in_flight(void **st) {
  (void)st;
  braid_reactor_t *re = mkreactor();
  braid_iosim_options o = {0};
  o.delay_min = o.delay_max = BRAID_MSEC(10);
  trace tr;
  memset(&tr, 0, sizeof tr);
  o.trace_cb = trace_cb;
  o.trace_arg = &tr;
  braid_iosim_t *sim = mksim(re, &o);
  rec c, s;
  rec_init(&c, re, &rec_ops);
  rec_init(&s, re, &rec_ops);
  braid_iosim_conn_t *conn;
  assert_int_equal(braid_iosim_connect(sim, &c.p, &s.p, NULL, NULL, &conn), 0);
  flush_ok(sim);
  /* Both sides write; the pump takes the bytes onto the wire (in flight
   * for 10 ms); then the client aborts before they arrive. */
  assert_int_equal(braid_transport_write(tp(&c), "abcdef", 6), 0);
  assert_int_equal(braid_transport_write(tp(&s), "xyz", 3), 0);
  assert_int_equal(braid_iosim_pump(sim), 1);
  assert_int_equal(braid_iosim_in_flight(conn, BRAID_IOSIM_TO_SERVER), 6);
  assert_int_equal(braid_iosim_in_flight(conn, BRAID_IOSIM_TO_CLIENT), 3);
  assert_int_equal(braid_clock_advance(re, BRAID_MSEC(5)), 0);
  assert_int_equal(braid_transport_abort(tp(&c)), 0);
  flush_ok(sim);
  assert_int_equal(s.ndata, 0);
  assert_int_equal(c.ndata, 0);
  assert_string_equal(c.log, "ML");
  assert_int_equal(c.lost_reason, BRAID_ECONNABORTED);
  assert_string_equal(s.log, "ML");
  assert_int_equal(s.lost_reason, BRAID_ECONNRESET);
  /* The reset travels with the latency: 5 ms (abort) + 10 ms. */
  assert_int_equal(braid_reactor_now(re), BRAID_MSEC(25));
  braid_iosim_stats sts;
  braid_iosim_stats_get(sim, &sts);
  assert_int_equal(sts.bytes_dropped, 9);
  assert_int_equal(sts.bytes_delivered, 0);
  assert_int_equal(sts.resets, 1);
  assert_non_null(strstr(tr.ev, "0P>6 0P<3 0X>0 "));
  assert_int_equal(braid_iosim_in_flight(conn, BRAID_IOSIM_TO_SERVER), 0);
  assert_int_equal(braid_iosim_destroy(sim), 0);
  rec_free(&c);
  rec_free(&s);
  assert_int_equal(braid_reactor_destroy(re), 0);
}

static void t_abort_inside_data_received(void **st) {
  (void)st;
  braid_reactor_t *re = mkreactor();
  braid_iosim_options o = {0};
  o.chunk_min = o.chunk_max = 3;
  braid_iosim_t *sim = mksim(re, &o);
  rec c, s;
  rec_init(&c, re, &rec_ops);
  rec_init(&s, re, &rec_ops);
  s.abort_on_data = 1;
  assert_int_equal(braid_iosim_connect(sim, &c.p, &s.p, NULL, NULL, NULL), 0);
  flush_ok(sim);
  assert_int_equal(braid_transport_write(tp(&c), "123456789", 9), 0);
  flush_ok(sim);
  /* The first 3 bytes were read, the server aborted, the other 6 were
   * dropped, and the client was reset. */
  assert_true(rec_is(&s, "123"));
  assert_int_equal(s.lost_reason, BRAID_ECONNABORTED);
  assert_int_equal(c.lost_reason, BRAID_ECONNRESET);
  braid_iosim_stats sts;
  braid_iosim_stats_get(sim, &sts);
  assert_int_equal(sts.bytes_dropped, 6);
  assert_int_equal(braid_iosim_destroy(sim), 0);
  rec_free(&c);
  rec_free(&s);
  assert_int_equal(braid_reactor_destroy(re), 0);
}

static void t_write_after_peer_closed_resets(void **st) {
  (void)st;
  braid_reactor_t *re = mkreactor();
  braid_iosim_t *sim = mksim(re, NULL);
  rec c, s;
  rec_init(&c, re, &rec_ops); /* half-close aware: stays open on EOF */
  rec_init(&s, re, &rec_ops);
  assert_int_equal(braid_iosim_connect(sim, &c.p, &s.p, NULL, NULL, NULL), 0);
  flush_ok(sim);
  assert_int_equal(braid_transport_close(tp(&s)), 0);
  flush_ok(sim);
  assert_string_equal(s.log, "ML");
  assert_string_equal(c.log, "ME");
  /* Writing to a socket that is fully closed: the peer answers with a
   * reset, as TCP does. */
  assert_int_equal(braid_transport_write(tp(&c), "anyone?", 7), 0);
  flush_ok(sim);
  assert_string_equal(c.log, "MEL");
  assert_int_equal(c.lost_reason, BRAID_ECONNRESET);
  assert_int_equal(s.ndata, 0);
  assert_int_equal(braid_iosim_destroy(sim), 0);
  rec_free(&c);
  rec_free(&s);
  assert_int_equal(braid_reactor_destroy(re), 0);
}

static void t_break(void **st) {
  (void)st;
  braid_reactor_t *re = mkreactor();
  braid_iosim_options o = {0};
  o.delay_min = o.delay_max = BRAID_MSEC(2);
  braid_iosim_t *sim = mksim(re, &o);
  rec c, s, c2;
  rec_init(&c, re, &rec_ops);
  rec_init(&s, re, &rec_ops);
  rec_init(&c2, re, &rec_ops);
  braid_iosim_conn_t *conn, *pending;
  assert_int_equal(braid_iosim_connect(sim, &c.p, &s.p, NULL, NULL, &conn), 0);
  flush_ok(sim);
  assert_int_equal(braid_transport_write(tp(&c), "in flight", 9), 0);
  assert_int_equal(braid_iosim_pump(sim), 1);
  assert_int_equal(braid_iosim_break(conn, 0), BRAID_EINVAL);
  assert_int_equal(braid_iosim_break(conn, BRAID_ETIMEDOUT), 0);
  assert_string_equal(c.log, "ML");
  assert_string_equal(s.log, "ML");
  assert_int_equal(c.lost_reason, BRAID_ETIMEDOUT);
  assert_int_equal(s.lost_reason, BRAID_ETIMEDOUT);
  assert_int_equal(braid_iosim_break(conn, BRAID_ETIMEDOUT), BRAID_ECLOSED);
  flush_ok(sim);
  assert_int_equal(s.ndata, 0);
  /* While connecting, only the client exists. */
  assert_int_equal(braid_iosim_connect(sim, &c2.p, &s.p, NULL, NULL, &pending),
                   0);
  assert_int_equal(braid_iosim_break(pending, BRAID_EHOSTUNREACH), 0);
  assert_string_equal(c2.log, "L");
  assert_int_equal(c2.lost_reason, BRAID_EHOSTUNREACH);
  flush_ok(sim);
  assert_string_equal(c2.log, "L");
  assert_int_equal(braid_iosim_destroy(sim), 0);
  assert_int_equal(c.lost + s.lost + c2.lost, 3);
  rec_free(&c);
  rec_free(&s);
  rec_free(&c2);
  assert_int_equal(braid_reactor_destroy(re), 0);
}

/* ------------------------------------------------------------------------
 * Driving rules and limits
 * ------------------------------------------------------------------------ */

typedef struct reenter {
  rec base;
  braid_iosim_t *sim;
  int pump_rc, flush_rc, destroy_rc, connect_rc;
} reenter;

static void re_data(braid_protocol_t *p, const void *d, size_t len) {
  reenter *x = (reenter *)p;
  rec_data(p, d, len);
  x->pump_rc = braid_iosim_pump(x->sim);
  x->flush_rc = (int)braid_iosim_flush(x->sim, 0);
  x->destroy_rc = braid_iosim_destroy(x->sim);
  rec other;
  rec_init(&other, x->base.r, &rec_ops);
  x->connect_rc = braid_iosim_connect(x->sim, &other.p, NULL, NULL, NULL, NULL);
}

static const braid_protocol_ops re_ops = {
    .connection_made = rec_made,
    .data_received = re_data,
    .connection_lost = rec_lost,
};

static void t_no_reentry(void **st) {
  (void)st;
  braid_reactor_t *re = mkreactor();
  braid_iosim_t *sim = mksim(re, NULL);
  rec c;
  reenter s;
  rec_init(&c, re, &rec_ops);
  rec_init(&s.base, re, &re_ops);
  s.sim = sim;
  assert_int_equal(braid_iosim_connect(sim, &c.p, &s.base.p, NULL, NULL, NULL),
                   0);
  flush_ok(sim);
  assert_int_equal(braid_transport_write(tp(&c), "x", 1), 0);
  flush_ok(sim);
  assert_int_equal(s.pump_rc, BRAID_EBUSY);
  assert_int_equal(s.flush_rc, BRAID_EBUSY);
  assert_int_equal(s.destroy_rc, BRAID_EBUSY);
  assert_int_equal(s.connect_rc, BRAID_EBUSY);
  assert_int_equal(braid_iosim_destroy(sim), 0);
  rec_free(&c);
  rec_free(&s.base);
  assert_int_equal(braid_reactor_destroy(re), 0);
}

static void t_flush_step_bound(void **st) {
  (void)st;
  braid_reactor_t *re = mkreactor();
  braid_iosim_t *sim = mksim(re, NULL);
  rec c, s;
  rec_init(&c, re, &rec_ops);
  rec_init(&s, re, &rec_ops);
  c.echo = s.echo = 1; /* ping-pong forever */
  assert_int_equal(braid_iosim_connect(sim, &c.p, &s.p, NULL, NULL, NULL), 0);
  assert_int_equal(braid_iosim_flush(sim, 0), 1);
  assert_int_equal(braid_transport_write(tp(&c), "ball", 4), 0);
  assert_int_equal(braid_iosim_flush(sim, 500), BRAID_ELIMIT);
  assert_int_equal(s.ncalls + c.ncalls, 500);
  assert_int_equal(braid_iosim_destroy(sim), 0);
  rec_free(&c);
  rec_free(&s);
  assert_int_equal(braid_reactor_destroy(re), 0);
}

static void t_needs_manual_clock_for_delay(void **st) {
  (void)st;
  braid_reactor_t *re;
  assert_int_equal(braid_reactor_create(&re, NULL), 0);
  braid_iosim_options o = {0};
  o.delay_min = BRAID_SEC(1);
  braid_iosim_t *sim = mksim(re, &o);
  rec c, s;
  rec_init(&c, re, &rec_ops);
  rec_init(&s, re, &rec_ops);
  assert_int_equal(braid_iosim_connect(sim, &c.p, &s.p, NULL, NULL, NULL), 0);
  assert_int_equal(braid_iosim_flush(sim, 0), BRAID_EINVAL);
  assert_int_equal(c.made, 0);
  assert_int_equal(braid_iosim_destroy(sim), 0);
  assert_string_equal(c.log, "L"); /* aborted while connecting */
  assert_int_equal(c.lost_reason, BRAID_ECONNABORTED);
  assert_int_equal(s.lost, 0); /* never came up */
  /* Without delay, a real clock works. */
  sim = mksim(re, NULL);
  rec_init(&c, re, &rec_ops);
  rec_init(&s, re, &rec_ops);
  s.echo = 1;
  assert_int_equal(braid_iosim_connect(sim, &c.p, &s.p, NULL, NULL, NULL), 0);
  flush_ok(sim);
  assert_int_equal(braid_transport_write(tp(&c), "real", 4), 0);
  flush_ok(sim);
  assert_true(rec_is(&c, "real"));
  assert_int_equal(braid_iosim_destroy(sim), 0);
  rec_free(&c);
  rec_free(&s);
  assert_int_equal(braid_reactor_destroy(re), 0);
}

/* A protocol closing from a timer (outside any pump): the memory
 * transport's deferred event is run by flush, and the close travels. */
static void close_from_timer(braid_timer_t *t, void *arg) {
  (void)t;
  rec *r = arg;
  assert_int_equal(braid_transport_write(r->p.transport, "bye", 3), 0);
  assert_int_equal(braid_transport_close(r->p.transport), 0);
}

static void t_close_from_timer(void **st) {
  (void)st;
  braid_reactor_t *re = mkreactor();
  braid_iosim_t *sim = mksim(re, NULL);
  rec c, s;
  rec_init(&c, re, &rec_noeof_ops);
  rec_init(&s, re, &rec_ops);
  assert_int_equal(braid_iosim_connect(sim, &c.p, &s.p, NULL, NULL, NULL), 0);
  flush_ok(sim);
  braid_timer_t tm = BRAID_TIMER_INIT;
  assert_int_equal(
      braid_timer_start(re, &tm, BRAID_MSEC(3), close_from_timer, &s), 0);
  flush_ok(sim); /* nothing to do yet: flush does not run ahead of timers */
  assert_int_equal(braid_reactor_now(re), 0);
  assert_int_equal(braid_clock_advance(re, BRAID_MSEC(3)), 0);
  flush_ok(sim);
  assert_true(rec_is(&c, "bye"));
  assert_string_equal(c.log, "MDL");
  assert_string_equal(s.log, "ML");
  assert_int_equal(braid_iosim_destroy(sim), 0);
  rec_free(&c);
  rec_free(&s);
  assert_int_equal(braid_reactor_destroy(re), 0);
}

/* A server protocol that frees itself in connection_lost, and has no
 * other callback (every one may be NULL). */
typedef struct selffree {
  braid_protocol_t p;
  int *lost;
} selffree;

static void sf_lost(braid_protocol_t *p, int reason) {
  (void)reason;
  selffree *x = (selffree *)p;
  (*x->lost)++;
  free(x);
}

static const braid_protocol_ops sf_ops = {.connection_lost = sf_lost};

typedef struct sffactory {
  braid_factory_t f;
  int lost;
} sffactory;

static braid_protocol_t *sf_build(braid_factory_t *f, const braid_addr_t *a) {
  (void)a;
  selffree *x = calloc(1, sizeof *x);
  x->p.ops = &sf_ops;
  x->lost = &((sffactory *)f)->lost;
  return &x->p;
}

static void t_self_freeing_protocols(void **st) {
  (void)st;
  braid_reactor_t *re = mkreactor();
  braid_iosim_options o = {0};
  o.seed = 9;
  o.delay_max = BRAID_MSEC(2);
  braid_iosim_t *sim = mksim(re, &o);
  sffactory f = {{sf_build, NULL}, 0};
  rec c[6];
  braid_iosim_conn_t *conn[6];
  for (int i = 0; i < 6; i++) {
    rec_init(&c[i], re, &rec_ops);
    assert_int_equal(
        braid_iosim_connect(sim, &c[i].p, NULL, &f.f, NULL, &conn[i]), 0);
  }
  flush_ok(sim);
  /* Three end cleanly, one aborts, one breaks; one stays up until the
   * simulator goes. */
  for (int i = 0; i < 3; i++)
    assert_int_equal(braid_transport_close(tp(&c[i])), 0);
  assert_int_equal(braid_transport_abort(tp(&c[3])), 0);
  assert_int_equal(braid_iosim_break(conn[4], BRAID_ECONNRESET), 0);
  flush_ok(sim);
  assert_int_equal(f.lost, 5);
  assert_int_equal(braid_iosim_destroy(sim), 0);
  assert_int_equal(f.lost, 6);
  for (int i = 0; i < 6; i++) {
    assert_int_equal(c[i].lost, 1);
    rec_free(&c[i]);
  }
  assert_int_equal(braid_reactor_destroy(re), 0);
}

static void t_memory_transport_options(void **st) {
  (void)st;
  braid_reactor_t *re = mkreactor();
  rec r;
  rec_init(&r, re, &rec_ops);
  r.p.ops = &rec_ops;
  braid_addr_t l, p;
  braid_addr_ip(&l, "127.0.0.1", 1);
  braid_addr_ip(&p, "127.0.0.2", 2);
  braid_memory_transport_options o = {&l, &p, true};
  braid_memory_transport_t *mt;
  assert_int_equal(braid_memory_transport_create_ex(re, &r.p, &o, &mt), 0);
  addr_is(&r.made_local, "127.0.0.1:1");
  addr_is(&r.made_peer, "127.0.0.2:2");
  /* Blocked from the start: a write queues instead of reaching the value. */
  braid_transport_t *t = braid_memory_transport_transport(mt);
  assert_int_equal(braid_transport_write(t, "abc", 3), 0);
  size_t len;
  braid_memory_transport_value(mt, &len);
  assert_int_equal(len, 0);
  assert_int_equal(braid_transport_write_queued(t), 3);
  assert_int_equal(braid_memory_transport_drain(mt, 2), 2);
  braid_memory_transport_value(mt, &len);
  assert_int_equal(len, 2);
  assert_int_equal(braid_memory_transport_destroy(mt), 0);
  assert_int_equal(braid_memory_transport_create_ex(re, &r.p, NULL, NULL),
                   BRAID_EINVAL);
  assert_int_equal(braid_reactor_destroy(re), 0);
}

static void t_bad_args(void **st) {
  (void)st;
  braid_reactor_t *re = mkreactor();
  braid_iosim_t *sim;
  assert_int_equal(braid_iosim_create(NULL, NULL, &sim), BRAID_EINVAL);
  assert_null(sim);
  assert_int_equal(braid_iosim_create(re, NULL, NULL), BRAID_EINVAL);
  sim = mksim(re, NULL);
  rec c, s;
  rec_init(&c, re, &rec_ops);
  rec_init(&s, re, &rec_ops);
  recfactory rf;
  rf_init(&rf, re);
  braid_protocol_t noops = {0};
  assert_int_equal(braid_iosim_connect(sim, NULL, &s.p, NULL, NULL, NULL),
                   BRAID_EINVAL);
  assert_int_equal(braid_iosim_connect(sim, &noops, &s.p, NULL, NULL, NULL),
                   BRAID_EINVAL);
  assert_int_equal(braid_iosim_connect(sim, &c.p, &noops, NULL, NULL, NULL),
                   BRAID_EINVAL);
  assert_int_equal(braid_iosim_connect(sim, &c.p, &s.p, &rf.f, NULL, NULL),
                   BRAID_EINVAL);
  assert_int_equal(braid_iosim_connect(sim, &c.p, &c.p, NULL, NULL, NULL),
                   BRAID_EINVAL);
  assert_int_equal(braid_iosim_pump(NULL), BRAID_EINVAL);
  assert_int_equal(braid_iosim_flush(NULL, 0), BRAID_EINVAL);
  assert_int_equal(braid_iosim_break(NULL, BRAID_ECONNRESET), BRAID_EINVAL);
  assert_int_equal(braid_iosim_stats_get(sim, NULL), BRAID_EINVAL);
  assert_null(braid_iosim_client(NULL));
  assert_int_equal(braid_iosim_in_flight(NULL, BRAID_IOSIM_TO_SERVER), 0);
  assert_int_equal(braid_iosim_flush(sim, 0), 0); /* nothing to do */
  assert_int_equal(braid_iosim_destroy(sim), 0);
  assert_int_equal(braid_iosim_destroy(NULL), 0);
  assert_int_equal(c.lost + s.lost, 0);
  assert_int_equal(braid_reactor_destroy(re), 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(t_connect_async_and_echo),
      cmocka_unit_test(t_refused_and_custom_addr),
      cmocka_unit_test(t_factory_and_refusal),
      cmocka_unit_test(t_fixed_delay_timing),
      cmocka_unit_test(t_timers_interleave_with_delivery),
      cmocka_unit_test(t_random_delay_keeps_stream_order),
      cmocka_unit_test(t_byte_at_a_time),
      cmocka_unit_test(t_line_every_split_point),
      cmocka_unit_test(t_same_seed_same_interleaving),
      cmocka_unit_test(t_flow_control_window),
      cmocka_unit_test(t_pause_inside_data_received),
      cmocka_unit_test(t_half_close),
      cmocka_unit_test(t_close_flushes_then_eof),
      cmocka_unit_test(t_abort_drops_in_flight),
      cmocka_unit_test(t_abort_inside_data_received),
      cmocka_unit_test(t_write_after_peer_closed_resets),
      cmocka_unit_test(t_break),
      cmocka_unit_test(t_no_reentry),
      cmocka_unit_test(t_flush_step_bound),
      cmocka_unit_test(t_needs_manual_clock_for_delay),
      cmocka_unit_test(t_close_from_timer),
      cmocka_unit_test(t_self_freeing_protocols),
      cmocka_unit_test(t_memory_transport_options),
      cmocka_unit_test(t_bad_args),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
