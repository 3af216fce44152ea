/* Tests for the protocol skeleton of docs/PROTOCOLS.md
 * (examples/proto_skeleton.c), in the shape every protocol's tests take:
 *   - over the iosim pump: every split point, byte at a time, seeded
 *     interleaving of several connections, a peer that never reads;
 *   - over the memory transport on the manual clock: each state's timeout,
 *     to the nanosecond, and the limit on a line;
 *   - the server destroyed in every state, and a graceful drain;
 *   - an attack: a peer doing random things, then going silent (and half
 *     the time not reading), always ends within the timeouts.
 * Only public headers: the skeleton is what a module outside braid would
 * write. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "braid/braid.h"
#include "braid/iosim.h"
#include "braid/testing.h"
#include "../examples/proto_skeleton.h"

#define IDLE_T BRAID_SEC(5)
#define LINE_T BRAID_SEC(2)
#define WRITE_T BRAID_SEC(3)

static braid_reactor_t *mkreactor(void) {
  braid_reactor_t *r;
  assert_int_equal(braid_testing_reactor_create(&r), 0);
  return r;
}

/* The states one connection went through, as "idle line idle ...". */
typedef struct states {
  char seq[512];
  upper_state last;
} states;

static void on_state(void *arg, upper_state from, upper_state to) {
  (void)from;
  states *s = arg;
  size_t n = strlen(s->seq);
  snprintf(s->seq + n, sizeof s->seq - n, "%s%s", n ? " " : "",
           upper_state_name(to));
  s->last = to;
}

static upper_server_t *mkserver(braid_reactor_t *r, states *st,
                                size_t max_line) {
  upper_options o = {0};
  o.max_line = max_line;
  o.idle_timeout = IDLE_T;
  o.line_timeout = LINE_T;
  o.write_timeout = WRITE_T;
  if (st != NULL) {
    memset(st, 0, sizeof *st);
    o.on_state = on_state;
    o.arg = st;
  }
  upper_server_t *s;
  assert_int_equal(upper_server_create(r, &o, &s), 0);
  return s;
}

static upper_stats stats(upper_server_t *s) {
  upper_stats x;
  upper_server_stats(s, &x);
  return x;
}

/* ------------------------------------------------------------------------
 * A client for the iosim: writes its script on connection_made, keeps
 * everything it receives
 * ------------------------------------------------------------------------ */

typedef struct client {
  braid_protocol_t p;
  const char *send;
  size_t send_len;
  int no_read; /* pause reading from the start: a peer that never reads */
  char *got;
  size_t n, cap;
  int made, lost, reason;
} client;

static void cl_made(braid_protocol_t *p, braid_transport_t *t) {
  client *c = BRAID_CONTAINER_OF(p, client, p);
  c->made++;
  if (c->no_read)
    braid_transport_pause_reading(t);
  if (c->send_len > 0)
    assert_int_equal(braid_transport_write(t, c->send, c->send_len), 0);
}

static void cl_data(braid_protocol_t *p, const void *d, size_t len) {
  client *c = BRAID_CONTAINER_OF(p, client, p);
  if (c->n + len > c->cap) {
    c->cap = (c->n + len) * 2;
    c->got = realloc(c->got, c->cap);
    assert_non_null(c->got);
  }
  memcpy(c->got + c->n, d, len);
  c->n += len;
}

static void cl_lost(braid_protocol_t *p, int reason) {
  client *c = BRAID_CONTAINER_OF(p, client, p);
  c->lost++;
  c->reason = reason;
}

static const braid_protocol_ops cl_ops = {.connection_made = cl_made,
                                          .data_received = cl_data,
                                          .connection_lost = cl_lost};

static void cl_init(client *c, const char *send, size_t len) {
  memset(c, 0, sizeof *c);
  c->p.ops = &cl_ops;
  c->send = send;
  c->send_len = len;
}

static void expect_got(const client *c, const char *want) {
  size_t n = strlen(want);
  if (c->n != n || memcmp(c->got, want, n) != 0)
    fail_msg("got %zu bytes \"%.*s\", want \"%s\"", c->n, (int)c->n, c->got,
             want);
}

/* ------------------------------------------------------------------------
 * Every split point, byte at a time, seeded interleaving
 * ------------------------------------------------------------------------ */

static const char IN[] = "hello\r\nWorld 1\r\n\r\nmixed Case\r\nQUIT\r\n";
static const char WANT[] = "HELLO\r\nWORLD 1\r\n\r\nMIXED CASE\r\nBYE\r\n";

/* Toward the server: the first delivery is `at` bytes, then the rest. */
typedef struct split {
  size_t at;
  int first_done;
} split;

static size_t split_chunk(braid_iosim_conn_t *c, braid_iosim_dir dir,
                          size_t avail, void *arg) {
  (void)c;
  split *sp = arg;
  if (dir != BRAID_IOSIM_TO_SERVER || sp->first_done)
    return avail;
  sp->first_done = 1;
  return sp->at;
}

/* Run `nconn` clients, each sending IN, through one simulator. */
static void run_script(braid_reactor_t *r, const braid_iosim_options *o,
                       int nconn) {
  states st;
  upper_server_t *s = mkserver(r, nconn == 1 ? &st : NULL, 0);
  braid_iosim_t *sim;
  assert_int_equal(braid_iosim_create(r, o, &sim), 0);
  client cl[4];
  for (int i = 0; i < nconn; i++) {
    cl_init(&cl[i], IN, sizeof IN - 1);
    assert_int_equal(braid_iosim_connect(sim, &cl[i].p, NULL,
                                         upper_server_factory(s), NULL, NULL),
                     0);
  }
  assert_true(braid_iosim_flush(sim, 0) > 0);
  for (int i = 0; i < nconn; i++) {
    expect_got(&cl[i], WANT);
    assert_int_equal(cl[i].lost, 1);
    assert_int_equal(cl[i].reason, 0);
    free(cl[i].got);
  }
  if (nconn == 1)
    assert_int_equal(st.last, UPPER_CLOSED);
  assert_int_equal(stats(s).open, 0);
  assert_int_equal(stats(s).lines, 5u * (unsigned)nconn);
  assert_int_equal(braid_iosim_destroy(sim), 0);
  upper_server_destroy(s);
}

static void t_every_split_point(void **state) {
  (void)state;
  braid_reactor_t *r = mkreactor();
  const size_t n = sizeof IN - 1;
  for (size_t at = 1; at < n; at++) {
    split sp = {at, 0};
    braid_iosim_options o = {0};
    o.chunk_cb = split_chunk;
    o.chunk_arg = &sp;
    run_script(r, &o, 1);
    assert_true(sp.first_done);
  }
  braid_iosim_options o = {0};
  o.chunk_min = o.chunk_max = 1; /* byte at a time, both ways */
  run_script(r, &o, 1);
  /* Three connections at once under many seeds: random pieces, random
   * latency, deliveries interleaved across connections in seeded order. */
  for (uint64_t seed = 0; seed < 200; seed++) {
    braid_iosim_options ro = {0};
    ro.seed = seed;
    ro.chunk_min = 1;
    ro.chunk_max = 7;
    ro.delay_max = BRAID_MSEC(3);
    run_script(r, &ro, 3);
  }
  assert_int_equal(braid_reactor_destroy(r), 0);
}

/* ------------------------------------------------------------------------
 * Each state's timeout, on the memory transport and the manual clock
 * ------------------------------------------------------------------------ */

typedef struct menv {
  braid_reactor_t *r;
  upper_server_t *s;
  braid_protocol_t *p;
  braid_memory_transport_t *mt;
  states st;
} menv;

static void menv_start(menv *m, size_t max_line, int blocked) {
  m->r = mkreactor();
  m->s = mkserver(m->r, &m->st, max_line);
  m->p = upper_server_factory(m->s)->build(upper_server_factory(m->s), NULL);
  assert_non_null(m->p);
  braid_memory_transport_options mo = {0};
  mo.consumer_blocked = blocked != 0;
  assert_int_equal(braid_memory_transport_create_ex(m->r, m->p, &mo, &m->mt),
                   0);
  assert_int_equal(m->st.last, UPPER_IDLE);
}

static void menv_end(menv *m) {
  braid_memory_transport_destroy(m->mt);
  upper_server_destroy(m->s);
  assert_int_equal(braid_reactor_destroy(m->r), 0);
}

static void feed(menv *m, const char *s) {
  assert_int_equal(braid_memory_transport_feed(m->mt, s, strlen(s)), 0);
}

static void advance(menv *m, uint64_t ns) {
  assert_int_equal(braid_clock_advance(m->r, ns), 0);
}

/* Events the transport defers (connection_lost after a close made from a
 * timer) are delivered now. */
static int gone(menv *m, int *reason) {
  braid_memory_transport_run_pending(m->mt);
  return braid_memory_transport_disconnected(m->mt, reason);
}

static void expect_wrote(menv *m, const char *want) {
  size_t n;
  const char *v = braid_memory_transport_value(m->mt, &n);
  if (n != strlen(want) || memcmp(v, want, n) != 0)
    fail_msg("wrote \"%.*s\", want \"%s\"", (int)n, v, want);
}

static void t_idle_timeout(void **state) {
  (void)state;
  menv m;
  menv_start(&m, 0, 0);
  advance(&m, IDLE_T - 1);
  assert_false(gone(&m, NULL));
  advance(&m, 1);
  int reason = -1;
  assert_true(gone(&m, &reason));
  assert_int_equal(reason, 0);
  expect_wrote(&m, ""); /* a quiet close */
  assert_int_equal(stats(m.s).timeouts[UPPER_IDLE], 1);
  assert_string_equal(m.st.seq, "idle closing closed");
  menv_end(&m);
}

/* Slowloris: a byte every half second does not push the line's timeout
 * back; it runs from the line's first byte. */
static void t_line_timeout(void **state) {
  (void)state;
  menv m;
  menv_start(&m, 0, 0);
  advance(&m, BRAID_SEC(1)); /* idle for a while: that clock is separate */
  feed(&m, "a");
  assert_int_equal(m.st.last, UPPER_LINE);
  for (int i = 0; i < 3; i++) {
    advance(&m, BRAID_MSEC(500));
    feed(&m, "b");
  }
  advance(&m, LINE_T - BRAID_MSEC(1500) - 1);
  assert_int_equal(m.st.last, UPPER_LINE);
  advance(&m, 1);
  assert_true(gone(&m, NULL));
  expect_wrote(&m, "ERR timeout\r\n");
  assert_int_equal(stats(m.s).timeouts[UPPER_LINE], 1);
  menv_end(&m);
}

/* A line's timer ends with it: the next line's starts at its own first
 * byte, also when it came in the same read. */
static void t_line_timer_per_line(void **state) {
  (void)state;
  menv m;
  menv_start(&m, 0, 0);
  feed(&m, "a");
  advance(&m, LINE_T - 1);
  feed(&m, "\r\nb");
  expect_wrote(&m, "A\r\n");
  assert_string_equal(m.st.seq, "idle line idle line");
  advance(&m, LINE_T - 1);
  assert_false(gone(&m, NULL));
  feed(&m, "\r\n");
  expect_wrote(&m, "A\r\nB\r\n");
  assert_int_equal(m.st.last, UPPER_IDLE);
  menv_end(&m);
}

/* The limit applies before the delimiter arrives: nothing longer than
 * max_line is ever held for one line. */
static void t_line_too_long(void **state) {
  (void)state;
  menv m;
  menv_start(&m, 8, 0);
  feed(&m, "12345678\r\n");
  expect_wrote(&m, "12345678\r\n");
  /* Nine bytes could still be eight and a CR; ten cannot. */
  feed(&m, "123456789");
  expect_wrote(&m, "12345678\r\n");
  feed(&m, "0");
  expect_wrote(&m, "12345678\r\nERR line too long\r\n");
  /* The close completes inside the feed: the peer reads at once. */
  assert_string_equal(m.st.seq, "idle line closing closed");
  assert_int_equal(stats(m.s).too_long, 1);
  assert_true(gone(&m, NULL));
  menv_end(&m);
}

/* A peer that pipelines and does not read: answers stop at the transport's
 * high mark, reading stops, and the connection is dropped at the write
 * timeout. */
static void t_stalled_timeout(void **state) {
  (void)state;
  menv m;
  menv_start(&m, 0, 1);
  assert_int_equal(braid_transport_set_write_limits(
                       braid_memory_transport_transport(m.mt), 64, 16),
                   0);
  char many[1000];
  for (int i = 0; i < 100; i++)
    memcpy(many + i * 10, "abcdefgh\r\n", 10);
  assert_int_equal(braid_memory_transport_feed(m.mt, many, sizeof many), 0);
  assert_int_equal(m.st.last, UPPER_STALLED);
  assert_true(braid_memory_transport_reading_paused(m.mt));
  /* 10-byte answers: the one that passes 64 bytes is the last. */
  assert_int_equal(stats(m.s).lines, 7);
  advance(&m, WRITE_T - 1);
  assert_false(gone(&m, NULL));
  assert_int_equal(stats(m.s).lines, 7);
  advance(&m, 1);
  int reason = 0;
  assert_true(gone(&m, &reason));
  assert_int_equal(reason, BRAID_ECONNABORTED);
  assert_int_equal(stats(m.s).timeouts[UPPER_STALLED], 1);
  menv_end(&m);
}

/* The same peer starts reading: every held line is answered, in order. */
static void t_stalled_resumes(void **state) {
  (void)state;
  menv m;
  menv_start(&m, 0, 1);
  assert_int_equal(braid_transport_set_write_limits(
                       braid_memory_transport_transport(m.mt), 64, 16),
                   0);
  char many[1001], want[1001]; /* snprintf writes a NUL after the last */
  for (int i = 0; i < 100; i++) {
    snprintf(many + i * 10, 11, "line %03d\r\n", i);
    snprintf(want + i * 10, 11, "LINE %03d\r\n", i);
  }
  assert_int_equal(braid_memory_transport_feed(m.mt, many, 1000), 0);
  assert_int_equal(m.st.last, UPPER_STALLED);
  advance(&m, WRITE_T - 1);
  assert_int_equal(braid_memory_transport_set_consumer_blocked(m.mt, false), 0);
  advance(&m, 0); /* the kept bytes come back on the next turn */
  expect_wrote(&m, want);
  assert_int_equal(stats(m.s).lines, 100);
  assert_int_equal(m.st.last, UPPER_IDLE);
  assert_false(gone(&m, NULL));
  menv_end(&m);
}

/* Closing waits for the peer to take BYE; a peer that never does is
 * dropped at the write timeout. */
static void t_closing_timeout(void **state) {
  (void)state;
  menv m;
  menv_start(&m, 0, 1);
  feed(&m, "QUIT\r\n");
  assert_int_equal(m.st.last, UPPER_CLOSING);
  advance(&m, WRITE_T - 1);
  assert_false(gone(&m, NULL));
  advance(&m, 1);
  int reason = 0;
  assert_true(gone(&m, &reason));
  assert_int_equal(reason, BRAID_ECONNABORTED);
  assert_int_equal(stats(m.s).timeouts[UPPER_CLOSING], 1);
  menv_end(&m);
}

/* ------------------------------------------------------------------------
 * Never reading, over the iosim
 * ------------------------------------------------------------------------ */

static void t_never_reading_iosim(void **state) {
  (void)state;
  braid_reactor_t *r = mkreactor();
  states st;
  upper_server_t *s = mkserver(r, &st, 0);
  enum { LINES = 100000 };
  char *in = malloc(LINES * 6);
  assert_non_null(in);
  for (size_t i = 0; i < LINES; i++)
    memcpy(in + i * 6, "line\r\n", 6);
  braid_iosim_options o = {0};
  o.window = 4096;
  braid_iosim_t *sim;
  assert_int_equal(braid_iosim_create(r, &o, &sim), 0);
  client cl;
  cl_init(&cl, in, LINES * 6);
  cl.no_read = 1;
  assert_int_equal(braid_iosim_connect(sim, &cl.p, NULL,
                                       upper_server_factory(s), NULL, NULL),
                   0);
  assert_true(braid_iosim_flush(sim, 0) > 0);
  assert_int_equal(st.last, UPPER_STALLED);
  /* At most the window in flight plus the server's high mark (64 KiB) of
   * 6-byte answers: the rest of the input is not even parsed. */
  uint64_t answered = stats(s).lines;
  assert_true(answered <= (4096 + 65536) / 6 + 1);
  assert_int_equal(cl.n, 0);
  assert_int_equal(braid_clock_advance(r, WRITE_T), 0);
  assert_true(braid_iosim_flush(sim, 0) >= 0);
  assert_int_equal(cl.lost, 1);
  assert_int_equal(cl.reason, BRAID_ECONNRESET);
  assert_int_equal(stats(s).timeouts[UPPER_STALLED], 1);
  assert_int_equal(stats(s).lines, answered);
  assert_int_equal(stats(s).open, 0);
  assert_int_equal(braid_iosim_destroy(sim), 0);
  upper_server_destroy(s);
  free(in);
  free(cl.got);
  assert_int_equal(braid_reactor_destroy(r), 0);
}

/* ------------------------------------------------------------------------
 * Shutdown in every state, and a graceful drain
 * ------------------------------------------------------------------------ */

static void reach(menv *m, upper_state want) {
  switch (want) {
  case UPPER_LINE:
    feed(m, "par");
    break;
  case UPPER_STALLED: {
    braid_transport_set_write_limits(braid_memory_transport_transport(m->mt), 4,
                                     1);
    feed(m, "one\r\ntwo\r\n");
    break;
  }
  case UPPER_CLOSING:
    feed(m, "QUIT\r\n");
    break;
  case UPPER_ABORTED:
    /* Stalled, then its timeout: the abort is done, connection_lost not
     * yet delivered (a zero-delay timer, due a nanosecond later). */
    reach(m, UPPER_STALLED);
    advance(m, WRITE_T);
    break;
  default:
    break;
  }
  assert_int_equal(m->st.last, want);
}

static void t_destroy_each(void **state) {
  (void)state;
  static const upper_state each[] = {UPPER_IDLE, UPPER_LINE, UPPER_STALLED,
                                     UPPER_CLOSING, UPPER_ABORTED};
  for (size_t i = 0; i < sizeof each / sizeof each[0]; i++) {
    menv m;
    menv_start(&m, 0, 1);
    reach(&m, each[i]);
    upper_server_destroy(m.s);
    m.s = NULL;
    advance(&m, 0);
    advance(&m, 1);
    int reason = 0;
    if (!gone(&m, &reason))
      fail_msg("%s: still connected", upper_state_name(each[i]));
    assert_int_equal(reason, BRAID_ECONNABORTED);
    assert_int_equal(m.st.last, UPPER_CLOSED);
    menv_end(&m);
  }
  /* Built, not connected yet: aborted when the transport comes. */
  menv m;
  m.r = mkreactor();
  m.s = mkserver(m.r, &m.st, 0);
  m.p = upper_server_factory(m.s)->build(upper_server_factory(m.s), NULL);
  upper_server_destroy(m.s);
  m.s = NULL;
  assert_int_equal(braid_memory_transport_create(m.r, m.p, &m.mt), 0);
  advance(&m, 0);
  int reason = 0;
  assert_true(gone(&m, &reason));
  assert_int_equal(reason, BRAID_ECONNABORTED);
  menv_end(&m);
}

static void t_drain(void **state) {
  (void)state;
  menv m;
  menv_start(&m, 0, 0);
  upper_server_drain(m.p, braid_memory_transport_transport(m.mt), m.s);
  expect_wrote(&m, "BYE\r\n");
  advance(&m, 0);
  assert_true(gone(&m, NULL));
  menv_end(&m);
  /* Busy with a line: it is answered first. */
  menv_start(&m, 0, 0);
  feed(&m, "ab");
  upper_server_drain(m.p, braid_memory_transport_transport(m.mt), m.s);
  expect_wrote(&m, "");
  feed(&m, "c\r\nnot answered\r\n");
  expect_wrote(&m, "ABC\r\nBYE\r\n");
  advance(&m, 0);
  assert_true(gone(&m, NULL));
  menv_end(&m);
}

/* ------------------------------------------------------------------------
 * An attack: random pieces, then silence, half the time without reading
 * ------------------------------------------------------------------------ */

static const char *const pieces[] = {
    "hello\r\n",
    "x",
    "\r",
    "\n",
    "a b c",
    "QUIT\r\n",
    "0123456789012345678901234567890123456789\r\n", /* too long at 32 */
};

static void t_random_then_silent(void **state) {
  (void)state;
  braid_reactor_t *r = mkreactor();
  uint64_t rs = 1;
  for (uint64_t seed = 1; seed <= 300; seed++) {
    upper_server_t *s = mkserver(r, NULL, 32);
    char in[512];
    size_t n = 0;
    for (int k = 0; k < 12; k++) {
      rs = rs * 6364136223846793005ull + 1442695040888963407ull;
      const char *pc = pieces[(rs >> 33) % (sizeof pieces / sizeof *pieces)];
      size_t l = strlen(pc);
      memcpy(in + n, pc, l);
      n += l;
    }
    braid_iosim_options o = {0};
    o.seed = seed;
    o.chunk_min = 1;
    o.chunk_max = 5;
    o.delay_max = BRAID_MSEC(200);
    o.window = 64;
    braid_iosim_t *sim;
    assert_int_equal(braid_iosim_create(r, &o, &sim), 0);
    client cl;
    cl_init(&cl, in, n);
    cl.no_read = (int)(seed & 1);
    assert_int_equal(braid_iosim_connect(sim, &cl.p, NULL,
                                         upper_server_factory(s), NULL, NULL),
                     0);
    /* The peer is silent from now on: within the longest chain of
     * timeouts (a line, then closing) the server lets go. */
    assert_true(braid_iosim_flush(sim, 0) >= 0);
    for (int step = 0; step < 4 && stats(s).open > 0; step++) {
      assert_int_equal(braid_clock_advance(r, IDLE_T), 0);
      assert_true(braid_iosim_flush(sim, 0) >= 0);
    }
    if (stats(s).open != 0)
      fail_msg("seed %llu: a connection outlived every timeout",
               (unsigned long long)seed);
    /* A client that reads sees the end too (one that does not read is
     * not told of an orderly close: its EOF waits behind its pause). */
    if (!cl.no_read)
      assert_int_equal(cl.lost, 1);
    assert_int_equal(braid_iosim_destroy(sim), 0);
    assert_int_equal(cl.lost, 1);
    upper_server_destroy(s);
    free(cl.got);
  }
  assert_int_equal(braid_reactor_destroy(r), 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(t_every_split_point),
      cmocka_unit_test(t_idle_timeout),
      cmocka_unit_test(t_line_timeout),
      cmocka_unit_test(t_line_timer_per_line),
      cmocka_unit_test(t_line_too_long),
      cmocka_unit_test(t_stalled_timeout),
      cmocka_unit_test(t_stalled_resumes),
      cmocka_unit_test(t_closing_timeout),
      cmocka_unit_test(t_never_reading_iosim),
      cmocka_unit_test(t_destroy_each),
      cmocka_unit_test(t_drain),
      cmocka_unit_test(t_random_then_silent),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
