/* The memory transport (braid/testing.h): delivery, pausing, EOF, close
 * and abort, flow control marks, write_owned releases, addresses, and the
 * exactly-once connection_lost rule. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "braid/braid.h"
#include "braid/testing.h"

/* A protocol that records every callback as one letter (M made, D data,
 * E eof, L lost, P pause_writing, R resume_writing) and the bytes it got,
 * and does what the test asks in data_received. */
typedef struct rec {
  braid_protocol_t p;
  char log[64];
  size_t nlog;
  char data[256];
  size_t ndata;
  int lost_reason;
  int lost_count;
  int close_on_data, abort_on_data, pause_on_data, shut_on_eof;
  int echo;
} rec;

static void rec_log(rec *r, char c) {
  if (r->nlog + 1 < sizeof r->log)
    r->log[r->nlog++] = c;
  r->log[r->nlog] = '\0';
}

static void rec_made(braid_protocol_t *p, braid_transport_t *t) {
  rec *r = (rec *)p;
  assert_ptr_equal(p->transport, t);
  rec_log(r, 'M');
}

static void rec_data(braid_protocol_t *p, const void *data, size_t len) {
  rec *r = (rec *)p;
  rec_log(r, 'D');
  assert_true(r->ndata + len <= sizeof r->data);
  memcpy(r->data + r->ndata, data, len);
  r->ndata += len;
  if (r->echo)
    assert_int_equal(braid_transport_write(p->transport, data, len), 0);
  if (r->pause_on_data)
    braid_transport_pause_reading(p->transport);
  if (r->close_on_data)
    assert_int_equal(braid_transport_close(p->transport), 0);
  if (r->abort_on_data)
    assert_int_equal(braid_transport_abort(p->transport), 0);
}

static void rec_eof(braid_protocol_t *p) {
  rec *r = (rec *)p;
  rec_log(r, 'E');
  if (r->shut_on_eof)
    assert_int_equal(braid_transport_shutdown_write(p->transport), 0);
}

static void rec_lost(braid_protocol_t *p, int reason) {
  rec *r = (rec *)p;
  rec_log(r, 'L');
  r->lost_reason = reason;
  r->lost_count++;
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

/* The same without eof_received (not half-close aware). */
static const braid_protocol_ops rec_noeof_ops = {
    .connection_made = rec_made,
    .data_received = rec_data,
    .connection_lost = rec_lost,
};

typedef struct fixture {
  braid_reactor_t *r;
  rec p;
  braid_memory_transport_t *mt;
  braid_transport_t *t;
} fixture;

static void setup_ops(fixture *f, const braid_protocol_ops *ops) {
  memset(f, 0, sizeof *f);
  assert_int_equal(braid_testing_reactor_create(&f->r), 0);
  f->p.p.ops = ops;
  assert_int_equal(braid_memory_transport_create(f->r, &f->p.p, &f->mt), 0);
  f->t = braid_memory_transport_transport(f->mt);
  assert_non_null(f->t);
}

static void teardown(fixture *f) {
  assert_int_equal(braid_memory_transport_destroy(f->mt), 0);
  assert_int_equal(f->p.lost_count, 1);
  assert_int_equal(braid_reactor_destroy(f->r), 0);
}

static void value_is(fixture *f, const char *want) {
  size_t len;
  const char *v = braid_memory_transport_value(f->mt, &len);
  assert_int_equal(len, strlen(want));
  assert_memory_equal(v, want, len);
}

static void t_made_feed_write(void **st) {
  (void)st;
  fixture f;
  setup_ops(&f, &rec_ops);
  assert_string_equal(f.p.log, "M");
  f.p.echo = 1;
  assert_int_equal(braid_memory_transport_feed(f.mt, "hello", 5), 0);
  assert_int_equal(braid_memory_transport_feed(f.mt, "", 0), 0);
  assert_string_equal(f.p.log, "MD");
  value_is(&f, "hello");
  braid_iovec_t iov[2] = {{"ab", 2}, {"cd", 2}};
  assert_int_equal(braid_transport_writev(f.t, iov, 2), 0);
  value_is(&f, "helloabcd");
  braid_memory_transport_clear(f.mt);
  value_is(&f, "");
  assert_false(braid_memory_transport_disconnected(f.mt, NULL));
  teardown(&f);
  /* destroy ended the connection it found open */
  assert_int_equal(f.p.lost_reason, BRAID_ECONNABORTED);
}

static void t_feed_is_zero_copy(void **st) {
  (void)st;
  /* data_received sees the caller's bytes, as a stream transport hands out
   * its read buffer; a protocol that keeps pointers past the call is
   * wrong, and this lets tests notice (e.g. under a guard page). */
  fixture f;
  setup_ops(&f, &rec_ops);
  static const char msg[] = "xyz";
  assert_int_equal(braid_memory_transport_feed(f.mt, msg, 3), 0);
  assert_memory_equal(f.p.data, "xyz", 3);
  teardown(&f);
}

static void t_pause_buffers_input(void **st) {
  (void)st;
  fixture f;
  setup_ops(&f, &rec_ops);
  f.p.pause_on_data = 1;
  assert_int_equal(braid_memory_transport_feed(f.mt, "one", 3), 0);
  assert_true(braid_memory_transport_reading_paused(f.mt));
  assert_int_equal(braid_memory_transport_feed(f.mt, "two", 3), 0);
  assert_int_equal(braid_memory_transport_feed(f.mt, "three", 5), 0);
  assert_int_equal(braid_memory_transport_feed_eof(f.mt), 0);
  assert_string_equal(f.p.log, "MD");
  assert_int_equal(braid_memory_transport_pending_input(f.mt), 8);
  /* Resuming from test code (outside any driver) is delivered by the
   * reactor, never from inside resume_reading. */
  f.p.pause_on_data = 0;
  assert_int_equal(braid_transport_resume_reading(f.t), 0);
  assert_string_equal(f.p.log, "MD");
  assert_int_equal(braid_clock_advance(f.r, 0), 0);
  /* one chunk with both buffered feeds, then the EOF */
  assert_string_equal(f.p.log, "MDDE");
  assert_int_equal(f.p.ndata, 11);
  assert_memory_equal(f.p.data, "onetwothree", 11);
  assert_int_equal(braid_memory_transport_pending_input(f.mt), 0);
  teardown(&f);
}

static void t_eof_half_close(void **st) {
  (void)st;
  fixture f;
  setup_ops(&f, &rec_ops);
  assert_int_equal(braid_memory_transport_feed_eof(f.mt), 0);
  assert_string_equal(f.p.log, "ME");
  assert_int_equal(braid_memory_transport_feed_eof(f.mt), BRAID_ECLOSED);
  assert_int_equal(braid_memory_transport_feed(f.mt, "x", 1), BRAID_ECLOSED);
  /* half-close aware: may keep writing */
  assert_int_equal(braid_transport_write(f.t, "bye", 3), 0);
  assert_false(braid_memory_transport_disconnected(f.mt, NULL));
  /* shutting down the other direction completes the close */
  assert_int_equal(braid_transport_shutdown_write(f.t), 0);
  assert_true(braid_memory_transport_write_shut(f.mt));
  assert_int_equal(braid_transport_write(f.t, "x", 1), BRAID_ECLOSED);
  assert_int_equal(braid_clock_advance(f.r, 0), 0);
  int reason = 1;
  assert_true(braid_memory_transport_disconnected(f.mt, &reason));
  assert_int_equal(reason, 0);
  assert_string_equal(f.p.log, "MEL");
  value_is(&f, "bye");
  teardown(&f);
}

static void t_eof_shut_inside_callback(void **st) {
  (void)st;
  fixture f;
  setup_ops(&f, &rec_ops);
  f.p.shut_on_eof = 1;
  assert_int_equal(braid_memory_transport_feed_eof(f.mt), 0);
  /* caused inside a driver: delivered before feed_eof returned */
  assert_string_equal(f.p.log, "MEL");
  assert_int_equal(f.p.lost_reason, 0);
  teardown(&f);
}

static void t_eof_not_half_close_aware(void **st) {
  (void)st;
  fixture f;
  setup_ops(&f, &rec_noeof_ops);
  assert_int_equal(braid_memory_transport_set_consumer_blocked(f.mt, true), 0);
  assert_int_equal(braid_transport_write(f.t, "tail", 4), 0);
  assert_int_equal(braid_memory_transport_feed_eof(f.mt), 0);
  /* closing, but the queued bytes are flushed first */
  assert_true(braid_memory_transport_closing(f.mt));
  assert_false(braid_memory_transport_disconnected(f.mt, NULL));
  assert_int_equal(braid_memory_transport_set_consumer_blocked(f.mt, false), 0);
  value_is(&f, "tail");
  assert_string_equal(f.p.log, "ML");
  assert_int_equal(f.p.lost_reason, 0);
  teardown(&f);
}

static void t_close_inside_data(void **st) {
  (void)st;
  fixture f;
  setup_ops(&f, &rec_ops);
  f.p.close_on_data = 1;
  f.p.echo = 1;
  assert_int_equal(braid_memory_transport_feed(f.mt, "q", 1), 0);
  assert_true(braid_memory_transport_closing(f.mt));
  assert_true(braid_memory_transport_disconnected(f.mt, NULL));
  assert_string_equal(f.p.log, "MDL");
  value_is(&f, "q");
  /* the state checks of core/transport.c apply */
  assert_int_equal(braid_transport_write(f.t, "x", 1), BRAID_ECLOSED);
  assert_int_equal(braid_transport_close(f.t), BRAID_ECLOSED);
  assert_int_equal(braid_memory_transport_feed(f.mt, "x", 1), BRAID_ECLOSED);
  assert_int_equal(braid_memory_transport_lose(f.mt, BRAID_ECONNRESET),
                   BRAID_ECLOSED);
  teardown(&f);
  assert_int_equal(f.p.lost_reason, 0);
}

static void t_close_from_outside_is_deferred(void **st) {
  (void)st;
  fixture f;
  setup_ops(&f, &rec_ops);
  assert_int_equal(braid_transport_close(f.t), 0);
  assert_true(braid_memory_transport_closing(f.mt));
  assert_false(braid_memory_transport_disconnected(f.mt, NULL));
  assert_int_equal(braid_clock_advance(f.r, 0), 0);
  assert_true(braid_memory_transport_disconnected(f.mt, NULL));
  assert_string_equal(f.p.log, "ML");
  teardown(&f);
}

static void t_close_waits_for_flush(void **st) {
  (void)st;
  fixture f;
  setup_ops(&f, &rec_ops);
  assert_int_equal(braid_memory_transport_set_consumer_blocked(f.mt, true), 0);
  assert_int_equal(braid_transport_write(f.t, "abcdef", 6), 0);
  assert_int_equal(braid_transport_write_queued(f.t), 6);
  assert_int_equal(braid_transport_close(f.t), 0);
  assert_int_equal(braid_clock_advance(f.r, 0), 0);
  assert_false(braid_memory_transport_disconnected(f.mt, NULL));
  assert_int_equal(braid_memory_transport_drain(f.mt, 4), 4);
  value_is(&f, "abcd");
  assert_false(braid_memory_transport_disconnected(f.mt, NULL));
  assert_int_equal(braid_memory_transport_drain(f.mt, 100), 2);
  value_is(&f, "abcdef");
  assert_true(braid_memory_transport_disconnected(f.mt, NULL));
  assert_string_equal(f.p.log, "ML");
  teardown(&f);
}

static void t_abort_drops_queue(void **st) {
  (void)st;
  fixture f;
  setup_ops(&f, &rec_ops);
  assert_int_equal(braid_memory_transport_set_consumer_blocked(f.mt, true), 0);
  assert_int_equal(braid_transport_write(f.t, "lost", 4), 0);
  f.p.abort_on_data = 1;
  assert_int_equal(braid_memory_transport_feed(f.mt, "x", 1), 0);
  assert_true(braid_memory_transport_aborted(f.mt));
  assert_false(braid_memory_transport_closing(f.mt));
  int reason;
  assert_true(braid_memory_transport_disconnected(f.mt, &reason));
  assert_int_equal(reason, BRAID_ECONNABORTED);
  assert_int_equal(braid_transport_write_queued(f.t), 0);
  assert_int_equal(braid_memory_transport_set_consumer_blocked(f.mt, false), 0);
  value_is(&f, "");
  assert_int_equal(braid_transport_abort(f.t), BRAID_ECLOSED);
  teardown(&f);
}

static void t_lose(void **st) {
  (void)st;
  fixture f;
  setup_ops(&f, &rec_ops);
  assert_int_equal(braid_memory_transport_lose(f.mt, 1), BRAID_EINVAL);
  assert_int_equal(braid_memory_transport_lose(f.mt, BRAID_ECONNRESET), 0);
  assert_string_equal(f.p.log, "ML");
  assert_int_equal(f.p.lost_reason, BRAID_ECONNRESET);
  /* connection_lost runs once: a second drop is refused */
  assert_int_equal(braid_memory_transport_lose(f.mt, 0), BRAID_ECLOSED);
  teardown(&f);
}

/* write_owned: release runs when the bytes are written or dropped. */
static int released;
static void count_release(void *data, void *arg) {
  (void)data;
  released += *(int *)arg;
}

static void t_write_owned(void **st) {
  (void)st;
  fixture f;
  setup_ops(&f, &rec_ops);
  int one = 1;
  released = 0;
  char *a = strdup("owned");
  assert_int_equal(braid_transport_write_owned(f.t, a, 5, count_release, &one),
                   0);
  assert_int_equal(released, 1); /* copied to the value at once */
  value_is(&f, "owned");
  free(a);

  assert_int_equal(braid_memory_transport_set_consumer_blocked(f.mt, true), 0);
  static char b[] = "later";
  assert_int_equal(braid_transport_write_owned(f.t, b, 5, count_release, &one),
                   0);
  assert_int_equal(released, 1); /* still referenced */
  assert_int_equal(braid_transport_write_queued(f.t), 5);
  assert_int_equal(braid_memory_transport_drain(f.mt, 2), 2);
  assert_int_equal(released, 1); /* partly written */
  assert_int_equal(braid_memory_transport_drain(f.mt, 3), 3);
  assert_int_equal(released, 2);
  value_is(&f, "ownedlater");

  /* dropped by destroy */
  static char c[] = "never";
  assert_int_equal(braid_transport_write_owned(f.t, c, 5, count_release, &one),
                   0);
  assert_int_equal(released, 2);
  teardown(&f);
  assert_int_equal(released, 3);
}

static void t_flow_control_marks(void **st) {
  (void)st;
  fixture f;
  setup_ops(&f, &rec_ops);
  assert_int_equal(braid_transport_set_write_limits(f.t, 10, 4), 0);
  assert_int_equal(braid_memory_transport_set_consumer_blocked(f.mt, true), 0);
  assert_int_equal(braid_transport_write(f.t, "0123456789", 10), 0);
  assert_string_equal(f.p.log, "M"); /* at the mark, not past it */
  assert_int_equal(braid_transport_write(f.t, "a", 1), 0);
  assert_string_equal(f.p.log, "MP");
  assert_true(braid_memory_transport_writing_paused(f.mt));
  assert_int_equal(braid_transport_write(f.t, "b", 1), 0);
  assert_string_equal(f.p.log, "MP"); /* once */
  /* 12 queued: draining to 5 is above low, to 4 resumes */
  assert_int_equal(braid_memory_transport_drain(f.mt, 7), 7);
  assert_string_equal(f.p.log, "MP");
  assert_int_equal(braid_memory_transport_drain(f.mt, 1), 1);
  assert_string_equal(f.p.log, "MPR");
  assert_false(braid_memory_transport_writing_paused(f.mt));
  assert_int_equal(braid_memory_transport_set_consumer_blocked(f.mt, false), 0);
  value_is(&f, "0123456789ab");
  assert_int_equal(braid_transport_write_queued(f.t), 0);
  /* unblocked writes go straight through and never pause */
  char big[100];
  memset(big, 'z', sizeof big);
  assert_int_equal(braid_transport_write(f.t, big, sizeof big), 0);
  assert_string_equal(f.p.log, "MPR");
  teardown(&f);
}

static void t_addresses(void **st) {
  (void)st;
  fixture f;
  setup_ops(&f, &rec_ops);
  braid_addr_t a;
  char buf[64];
  assert_int_equal(braid_transport_local_addr(f.t, &a), 0);
  assert_true(braid_addr_format(&a, buf, sizeof buf) > 0);
  assert_string_equal(buf, "10.0.0.1:12345");
  assert_int_equal(braid_transport_peer_addr(f.t, &a), 0);
  assert_true(braid_addr_format(&a, buf, sizeof buf) > 0);
  assert_string_equal(buf, "192.168.1.1:54321");
  braid_addr_t p;
  assert_int_equal(braid_addr_ip(&p, "::1", 8080), 0);
  assert_int_equal(braid_memory_transport_set_addrs(f.mt, NULL, &p), 0);
  assert_int_equal(braid_transport_peer_addr(f.t, &a), 0);
  assert_true(braid_addr_format(&a, buf, sizeof buf) > 0);
  assert_string_equal(buf, "[::1]:8080");
  assert_int_equal(braid_transport_set_nodelay(f.t, true), 0);
  assert_ptr_equal(braid_transport_reactor(f.t), f.r);
  teardown(&f);
}

static void t_reactor_destroy_first(void **st) {
  (void)st;
  fixture f;
  setup_ops(&f, &rec_ops);
  /* a pending deferred event, so the kick timer is armed */
  assert_int_equal(braid_transport_close(f.t), 0);
  assert_int_equal(braid_reactor_destroy(f.r), 0);
  assert_int_equal(f.p.lost_count, 1);
  assert_int_equal(f.p.lost_reason, BRAID_ECONNABORTED);
  assert_int_equal(braid_memory_transport_destroy(f.mt), 0);
  assert_int_equal(f.p.lost_count, 1);
}

/* A protocol that frees itself in connection_lost, the usual ownership. */
static void free_lost(braid_protocol_t *p, int reason) {
  (void)reason;
  free(p);
}
static void close_data(braid_protocol_t *p, const void *d, size_t n) {
  (void)d;
  (void)n;
  braid_transport_close(p->transport);
  /* still valid here: connection_lost is never nested in close */
  p->user = p;
}
static void nop_made(braid_protocol_t *p, braid_transport_t *t) {
  (void)p;
  (void)t;
}
static const braid_protocol_ops selffree_ops = {
    .connection_made = nop_made,
    .data_received = close_data,
    .connection_lost = free_lost,
};

static void t_protocol_frees_itself(void **st) {
  (void)st;
  braid_reactor_t *r;
  assert_int_equal(braid_testing_reactor_create(&r), 0);
  braid_protocol_t *p = calloc(1, sizeof *p);
  p->ops = &selffree_ops;
  braid_memory_transport_t *mt;
  assert_int_equal(braid_memory_transport_create(r, p, &mt), 0);
  assert_int_equal(braid_memory_transport_feed(mt, "x", 1), 0);
  assert_true(braid_memory_transport_disconnected(mt, NULL));
  assert_int_equal(braid_memory_transport_destroy(mt), 0);
  assert_int_equal(braid_reactor_destroy(r), 0);
}

static void t_bad_args(void **st) {
  (void)st;
  braid_reactor_t *r;
  assert_int_equal(braid_testing_reactor_create(&r), 0);
  braid_memory_transport_t *mt = (void *)1;
  braid_protocol_t p = {0};
  assert_int_equal(braid_memory_transport_create(NULL, &p, &mt), BRAID_EINVAL);
  assert_int_equal(braid_memory_transport_create(r, &p, &mt), BRAID_EINVAL);
  assert_int_equal(braid_memory_transport_feed(NULL, "x", 1), BRAID_EINVAL);
  assert_int_equal(braid_memory_transport_destroy(NULL), 0);
  assert_int_equal(braid_reactor_destroy(r), 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(t_made_feed_write),
      cmocka_unit_test(t_feed_is_zero_copy),
      cmocka_unit_test(t_pause_buffers_input),
      cmocka_unit_test(t_eof_half_close),
      cmocka_unit_test(t_eof_shut_inside_callback),
      cmocka_unit_test(t_eof_not_half_close_aware),
      cmocka_unit_test(t_close_inside_data),
      cmocka_unit_test(t_close_from_outside_is_deferred),
      cmocka_unit_test(t_close_waits_for_flush),
      cmocka_unit_test(t_abort_drops_queue),
      cmocka_unit_test(t_lose),
      cmocka_unit_test(t_write_owned),
      cmocka_unit_test(t_flow_control_marks),
      cmocka_unit_test(t_addresses),
      cmocka_unit_test(t_reactor_destroy_first),
      cmocka_unit_test(t_protocol_frees_itself),
      cmocka_unit_test(t_bad_args),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
