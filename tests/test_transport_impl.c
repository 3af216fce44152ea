/* braid/transport_impl.h: a transport written by a module, through the
 * public headers only (this file includes nothing from core/ or platform/).
 *
 * The module is "r13", a layer that applies rot13 to letters in both
 * directions, stacked on another transport as TLS is: a client layer over
 * a connection (or taken over by set_protocol, as STARTTLS), and a server
 * layer built by a wrapping factory. Every promise of the header is
 * checked through it, over the memory transport and over real TCP on every
 * poller; the delivery rules themselves are also checked on a bare
 * transport whose vtable records its calls. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "braid/braid.h"
#include "braid/testing.h"
#include "braid/transport_impl.h"

/* ------------------------------------------------------------------------
 * The r13 layer
 * ------------------------------------------------------------------------ */

static void rot13(char *out, const char *in, size_t len) {
  for (size_t i = 0; i < len; i++) {
    char c = in[i];
    if (c >= 'a' && c <= 'z')
      c = (char)('a' + (c - 'a' + 13) % 26);
    else if (c >= 'A' && c <= 'Z')
      c = (char)('A' + (c - 'A' + 13) % 26);
    out[i] = c;
  }
}

typedef struct r13_factory r13_factory;

typedef struct r13 {
  braid_transport_t t;      /* what the protocol above sees */
  braid_protocol_t lower_p; /* what the lower transport sees */
  braid_transport_t *lower;
  r13_factory *rf; /* server side: builds the protocol above */
  braid_addr_t peer;
  braid_timer_t kick;
  char *held; /* arrived while the protocol above had paused reading */
  size_t held_len;
  int eof_held, lost;
} r13;

struct r13_factory {
  braid_factory_t f;
  braid_factory_t *inner;
  int built, freed;
};

static const braid_transport_vt r13_vt;
static const braid_protocol_ops r13_lower_ops;

#define R13_OF_LOWER(p) BRAID_CONTAINER_OF(p, r13, lower_p)
#define R13(tp) BRAID_CONTAINER_OF(tp, r13, t)

/* Counts of lower-side owned buffers freed, to see each exactly once. */
static int g_down_released;

static void r13_free_down(void *data, void *arg) {
  (void)arg;
  g_down_released++;
  free(data);
}

static void r13_deliver_held(r13 *s) {
  if (s->held != NULL) {
    int rc = braid_transport_deliver_data(&s->t, s->held, s->held_len);
    if (rc == BRAID_EAGAIN)
      return; /* paused again: keep them */
    free(s->held);
    s->held = NULL;
    s->held_len = 0;
  }
  if (s->eof_held && braid_transport_deliver_eof(&s->t) != BRAID_EAGAIN)
    s->eof_held = 0;
}

static void r13_kick_cb(braid_timer_t *t, void *arg) {
  (void)t;
  r13_deliver_held(arg);
}

static int r13_write(braid_transport_t *t, const braid_iovec_t *iov, size_t n,
                     braid_release_cb release, void *arg) {
  r13 *s = R13(t);
  size_t total = 0;
  for (size_t i = 0; i < n; i++)
    total += iov[i].len;
  char *buf = malloc(total);
  if (buf == NULL)
    return BRAID_ENOMEM;
  size_t off = 0;
  for (size_t i = 0; i < n; i++) {
    rot13(buf + off, iov[i].base, iov[i].len);
    off += iov[i].len;
  }
  /* Handed down as owned memory: the lower transport frees it once. */
  int rc =
      braid_transport_write_owned(s->lower, buf, total, r13_free_down, NULL);
  if (rc < 0) {
    free(buf);
    return rc;
  }
  /* The caller's bytes were transformed into our buffer: theirs is free. */
  if (release != NULL)
    release((void *)iov[0].base, arg);
  braid_transport_impl_follow_lower(t, s->lower, 0);
  return 0;
}

static int r13_close(braid_transport_t *t, int how) {
  r13 *s = R13(t);
  if (s->lower == NULL)
    return 0;
  if (how == BRAID_TRANSPORT_ABORT)
    return braid_transport_abort(s->lower);
  if (how == BRAID_TRANSPORT_SHUTDOWN_WRITE)
    return braid_transport_shutdown_write(s->lower);
  return braid_transport_close(s->lower);
}

static int r13_set_reading(braid_transport_t *t, int on) {
  r13 *s = R13(t);
  if (!on)
    return braid_transport_pause_reading(s->lower);
  int rc = braid_transport_resume_reading(s->lower);
  /* Never deliver from inside the protocol's resume call. */
  if ((s->held != NULL || s->eof_held) && !braid_timer_active(&s->kick))
    braid_timer_start(braid_transport_reactor(t), &s->kick, 0, r13_kick_cb, s);
  return rc;
}

static int r13_addr(braid_transport_t *t, int peer, braid_addr_t *out) {
  r13 *s = R13(t);
  return peer ? braid_transport_peer_addr(s->lower, out)
              : braid_transport_local_addr(s->lower, out);
}

static int r13_sockopt(braid_transport_t *t, int opt, int on, unsigned v) {
  r13 *s = R13(t);
  if (opt == BRAID_TRANSPORT_OPT_NODELAY)
    return braid_transport_set_nodelay(s->lower, on);
  return braid_transport_set_keepalive(s->lower, on, v);
}

static void *r13_extra(braid_transport_t *t, const char *name) {
  if (strcmp(name, "r13.name") == 0)
    return (void *)"rot13";
  return braid_transport_extra(R13(t)->lower, name);
}

static const braid_transport_vt r13_vt = {
    .write = r13_write,
    .close = r13_close,
    .set_reading = r13_set_reading,
    .addr = r13_addr,
    .sockopt = r13_sockopt,
    .extra = r13_extra,
};

static void r13_lower_made(braid_protocol_t *p, braid_transport_t *t) {
  r13 *s = R13_OF_LOWER(p);
  s->lower = t;
  /* Every transport (memory, TCP) has the MADE bit up by now. */
  assert_true(braid_transport_impl_state(t) & BRAID_TRANSPORT_MADE);
  if (braid_transport_reactor(&s->t) == NULL)
    braid_transport_impl_set_reactor(&s->t, braid_transport_reactor(t));
  braid_transport_impl_follow_lower(&s->t, t, 0);
  if (s->rf != NULL) { /* server: the protocol above exists from now on */
    braid_protocol_t *up = s->rf->inner->build(s->rf->inner, &s->peer);
    s->rf->built++;
    if (up == NULL || braid_transport_set_protocol(&s->t, up) < 0) {
      braid_transport_abort(t); /* refused, as a listener does */
      return;
    }
  }
  braid_transport_deliver_made(&s->t);
}

static void r13_lower_data(braid_protocol_t *p, const void *data, size_t len) {
  r13 *s = R13_OF_LOWER(p);
  char stackbuf[4096];
  char *buf = len <= sizeof stackbuf ? stackbuf : malloc(len);
  assert_non_null(buf);
  rot13(buf, data, len);
  int rc = s->held == NULL ? braid_transport_deliver_data(&s->t, buf, len)
                           : BRAID_EAGAIN;
  if (rc == BRAID_EAGAIN) { /* keep them, in order, for the resume */
    char *h = realloc(s->held, s->held_len + len);
    assert_non_null(h);
    memcpy(h + s->held_len, buf, len);
    s->held = h;
    s->held_len += len;
  }
  if (buf != stackbuf)
    free(buf);
}

static void r13_lower_eof(braid_protocol_t *p) {
  r13 *s = R13_OF_LOWER(p);
  if (s->held != NULL || braid_transport_deliver_eof(&s->t) == BRAID_EAGAIN)
    s->eof_held = 1;
}

static void r13_lower_lost(braid_protocol_t *p, int reason) {
  r13 *s = R13_OF_LOWER(p);
  s->lost++;
  /* A server layer whose protocol was never built has nobody to tell;
   * deliver_lost skips a transport without a protocol. */
  braid_transport_deliver_lost(&s->t, reason);
  if (braid_timer_active(&s->kick))
    braid_timer_cancel(&s->kick);
  free(s->held);
  free(s);
}

static void r13_lower_resume(braid_protocol_t *p) {
  r13 *s = R13_OF_LOWER(p);
  braid_transport_impl_follow_lower(&s->t, s->lower, 0);
  braid_transport_impl_drained(&s->t);
}

static const braid_protocol_ops r13_lower_ops = {
    .connection_made = r13_lower_made,
    .data_received = r13_lower_data,
    .eof_received = r13_lower_eof,
    .connection_lost = r13_lower_lost,
    .resume_writing = r13_lower_resume,
};

static r13 *r13_new(braid_reactor_t *r, braid_protocol_t *up) {
  r13 *s = calloc(1, sizeof *s);
  assert_non_null(s);
  braid_transport_init(&s->t, &r13_vt, r, up);
  s->lower_p.ops = &r13_lower_ops;
  if (up != NULL)
    up->transport = &s->t;
  return s;
}

/* Client side over a connection that exists already (STARTTLS-style):
 * the layer takes the lower transport's events from now on. */
static braid_transport_t *r13_start(braid_transport_t *lower,
                                    braid_protocol_t *up) {
  r13 *s = r13_new(braid_transport_reactor(lower), up);
  assert_int_equal(braid_transport_set_protocol(lower, &s->lower_p), 0);
  r13_lower_made(&s->lower_p, lower);
  return &s->t;
}

static braid_protocol_t *r13_build(braid_factory_t *f,
                                   const braid_addr_t *peer) {
  r13_factory *rf = BRAID_CONTAINER_OF(f, r13_factory, f);
  r13 *s = r13_new(NULL, NULL); /* a factory has no reactor */
  s->rf = rf;
  s->peer = *peer;
  return &s->lower_p;
}

static void r13_factory_init(r13_factory *rf, braid_factory_t *inner) {
  memset(rf, 0, sizeof *rf);
  rf->f.build = r13_build;
  rf->inner = inner;
}

/* ------------------------------------------------------------------------
 * A protocol that records what it is told
 * ------------------------------------------------------------------------ */

typedef struct rec {
  braid_protocol_t p;
  int made, lost, lost_reason, eofs, pauses, resumes;
  int eof_bit; /* the EOF state bit was set when eof_received ran */
  char got[1 << 16];
  size_t got_len;
  int pause_in_data; /* pause reading from inside data_received */
  int write_on_eof;  /* reply and shut down writing on EOF */
  int heap;          /* built by a factory: freed in connection_lost */
  int echo;
  int *lost_total;
} rec;

static void rec_made(braid_protocol_t *p, braid_transport_t *t) {
  rec *x = (rec *)p;
  assert_ptr_equal(p->transport, t);
  x->made++;
}

static void rec_data(braid_protocol_t *p, const void *d, size_t n) {
  rec *x = (rec *)p;
  if (x->got_len + n <= sizeof x->got) {
    memcpy(x->got + x->got_len, d, n);
    x->got_len += n;
  }
  if (x->echo)
    assert_int_equal(braid_transport_write(p->transport, d, n), 0);
  if (x->pause_in_data)
    braid_transport_pause_reading(p->transport);
}

static void rec_eof(braid_protocol_t *p) {
  rec *x = (rec *)p;
  x->eofs++;
  x->eof_bit =
      (braid_transport_impl_state(p->transport) & BRAID_TRANSPORT_EOF) != 0;
  if (x->write_on_eof) {
    assert_int_equal(braid_transport_write(p->transport, "bye", 3), 0);
    assert_int_equal(braid_transport_shutdown_write(p->transport), 0);
  }
}

static void rec_lost(braid_protocol_t *p, int reason) {
  rec *x = (rec *)p;
  x->lost++;
  x->lost_reason = reason;
  if (x->lost_total != NULL)
    (*x->lost_total)++;
  if (x->heap)
    free(x);
}

static void rec_pause(braid_protocol_t *p) {
  ((rec *)p)->pauses++;
}

static void rec_resume(braid_protocol_t *p) {
  ((rec *)p)->resumes++;
}

static const braid_protocol_ops rec_ops = {
    rec_made, rec_data, rec_eof, rec_lost, rec_pause, rec_resume,
};
/* Not half-close aware: no eof_received. */
static const braid_protocol_ops rec_noeof_ops = {
    rec_made, rec_data, NULL, rec_lost, rec_pause, rec_resume,
};

/* The lower end of a memory connection until the layer takes it over. */
static const braid_protocol_ops plain_ops = {0};

typedef struct mem_fixture {
  braid_reactor_t *r;
  braid_protocol_t plain;
  braid_memory_transport_t *mt;
  braid_transport_t *lower, *up;
  rec user;
} mem_fixture;

static void mem_setup(mem_fixture *f, const braid_protocol_ops *ops) {
  memset(f, 0, sizeof *f);
  assert_int_equal(braid_testing_reactor_create(&f->r), 0);
  f->plain.ops = &plain_ops;
  assert_int_equal(braid_memory_transport_create(f->r, &f->plain, &f->mt), 0);
  f->lower = braid_memory_transport_transport(f->mt);
  f->user.p.ops = ops;
  f->up = r13_start(f->lower, &f->user.p);
  g_down_released = 0;
}

static void mem_teardown(mem_fixture *f) {
  braid_memory_transport_destroy(f->mt);
  assert_int_equal(braid_reactor_destroy(f->r), 0);
}

static int g_up_released;
static void up_release(void *data, void *arg) {
  assert_ptr_equal(arg, &g_up_released);
  (void)data;
  g_up_released++;
}

/* ------------------------------------------------------------------------
 * Over the memory transport
 * ------------------------------------------------------------------------ */

static void t_mem_made_and_writes(void **state) {
  (void)state;
  mem_fixture f;
  mem_setup(&f, &rec_ops);
  assert_int_equal(f.user.made, 1);
  assert_true(braid_transport_impl_state(f.up) & BRAID_TRANSPORT_MADE);
  assert_ptr_equal(f.user.p.transport, f.up);
  assert_ptr_equal(braid_transport_impl_protocol(f.up), &f.user.p);
  assert_ptr_equal(braid_transport_impl_vt(f.up), &r13_vt);
  assert_ptr_equal(braid_transport_reactor(f.up), f.r);

  /* write, writev, write_owned: transformed and passed down in order. */
  assert_int_equal(braid_transport_write(f.up, "Hello ", 6), 0);
  braid_iovec_t v[2] = {{"wor", 3}, {"ld", 2}};
  assert_int_equal(braid_transport_writev(f.up, v, 2), 0);
  static char owned[] = "!abc";
  g_up_released = 0;
  assert_int_equal(
      braid_transport_write_owned(f.up, owned, 4, up_release, &g_up_released),
      0);
  assert_int_equal(g_up_released, 1);
  size_t len;
  const char *val = braid_memory_transport_value(f.mt, &len);
  assert_int_equal(len, 15);
  assert_memory_equal(val, "Uryyb jbeyq!nop", 15);
  /* Each write went down as owned memory, released once it was written. */
  assert_int_equal(g_down_released, 3);

  /* Core's checks happen before the vtable: a zero-length owned write is
   * released by core, bad arguments are refused without a release. */
  assert_int_equal(
      braid_transport_write_owned(f.up, owned, 0, up_release, &g_up_released),
      0);
  assert_int_equal(g_up_released, 2);
  assert_int_equal(braid_transport_write_owned(f.up, owned, 4, NULL, NULL),
                   BRAID_EINVAL);
  assert_int_equal(braid_transport_write(f.up, NULL, 3), BRAID_EINVAL);
  braid_memory_transport_clear(f.mt);

  /* Reading: bytes from below arrive transformed. */
  assert_int_equal(braid_memory_transport_feed(f.mt, "Uryyb", 5), 0);
  assert_int_equal(f.user.got_len, 5);
  assert_memory_equal(f.user.got, "Hello", 5);
  mem_teardown(&f);
  /* The reactor's teardown ended the connection: lost once, aborted. */
  assert_int_equal(f.user.lost, 1);
  assert_int_equal(f.user.lost_reason, BRAID_ECONNABORTED);
}

static void t_mem_close_flushes(void **state) {
  (void)state;
  mem_fixture f;
  mem_setup(&f, &rec_ops);
  braid_memory_transport_set_consumer_blocked(f.mt, true);
  static char big[100000];
  memset(big, 'a', sizeof big);
  assert_int_equal(braid_transport_write(f.up, big, sizeof big), 0);
  g_up_released = 0;
  static char owned[] = "xyz";
  assert_int_equal(
      braid_transport_write_owned(f.up, owned, 3, up_release, &g_up_released),
      0);
  assert_int_equal(braid_transport_write_queued(f.up), sizeof big + 3);
  assert_int_equal(braid_transport_close(f.up), 0);
  assert_true(braid_transport_closing(f.up));
  assert_true(braid_memory_transport_closing(f.mt));
  /* After close: refused, and the caller keeps its owned memory. */
  assert_int_equal(
      braid_transport_write_owned(f.up, owned, 3, up_release, &g_up_released),
      BRAID_ECLOSED);
  assert_int_equal(braid_transport_write(f.up, "x", 1), BRAID_ECLOSED);
  assert_int_equal(braid_transport_close(f.up), BRAID_ECLOSED);
  assert_int_equal(braid_clock_advance(f.r, 0), 0);
  assert_int_equal(f.user.lost, 0); /* not before the queue is written */
  /* Reading stopped at the close: nothing more is delivered. */
  assert_int_equal(braid_memory_transport_feed(f.mt, "late", 4), BRAID_ECLOSED);
  braid_memory_transport_set_consumer_blocked(f.mt, false);
  size_t len;
  const char *val = braid_memory_transport_value(f.mt, &len);
  assert_int_equal(len, sizeof big + 3);
  assert_int_equal(val[0], 'n');
  assert_memory_equal(val + sizeof big, "klm", 3);
  assert_int_equal(f.user.lost, 1);
  assert_int_equal(f.user.lost_reason, 0);
  assert_int_equal(g_down_released, 2);
  assert_int_equal(g_up_released, 1);
  mem_teardown(&f);
  assert_int_equal(f.user.lost, 1); /* exactly once */
}

static void t_mem_abort(void **state) {
  (void)state;
  mem_fixture f;
  mem_setup(&f, &rec_ops);
  braid_memory_transport_set_consumer_blocked(f.mt, true);
  assert_int_equal(braid_transport_write(f.up, "queued", 6), 0);
  assert_int_equal(g_down_released, 0); /* still queued below */
  assert_int_equal(braid_transport_abort(f.up), 0);
  assert_true(braid_transport_closing(f.up));
  assert_true(braid_memory_transport_aborted(f.mt));
  /* Dropped below, released exactly once. */
  assert_int_equal(g_down_released, 1);
  assert_int_equal(braid_transport_abort(f.up), BRAID_ECLOSED);
  /* Writes after an abort are swallowed until connection_lost. */
  assert_int_equal(braid_transport_write(f.up, "x", 1), BRAID_ECLOSED);
  assert_int_equal(f.user.lost, 0); /* never inside the abort call */
  assert_int_equal(braid_clock_advance(f.r, 0), 0);
  assert_int_equal(f.user.lost, 1);
  assert_int_equal(f.user.lost_reason, BRAID_ECONNABORTED);
  size_t vlen = 1;
  braid_memory_transport_value(f.mt, &vlen);
  assert_int_equal(vlen, 0); /* nothing reached the peer */
  mem_teardown(&f);
  assert_int_equal(f.user.lost, 1);
  assert_int_equal(g_down_released, 1);
}

static void t_mem_half_close(void **state) {
  (void)state;
  /* The protocol shuts down writing, then the peer's EOF arrives: both
   * directions are done and the connection ends cleanly. */
  mem_fixture f;
  mem_setup(&f, &rec_ops);
  assert_int_equal(braid_transport_write(f.up, "abc", 3), 0);
  assert_int_equal(braid_transport_shutdown_write(f.up), 0);
  assert_true(braid_memory_transport_write_shut(f.mt));
  assert_int_equal(braid_transport_write(f.up, "x", 1), BRAID_ECLOSED);
  assert_int_equal(braid_transport_shutdown_write(f.up), BRAID_ECLOSED);
  /* Still reading. */
  assert_int_equal(braid_memory_transport_feed(f.mt, "nop", 3), 0);
  assert_memory_equal(f.user.got, "abc", 3);
  assert_int_equal(f.user.lost, 0);
  assert_int_equal(braid_memory_transport_feed_eof(f.mt), 0);
  assert_int_equal(f.user.eofs, 1);
  assert_true(f.user.eof_bit);
  assert_int_equal(braid_clock_advance(f.r, 0), 0);
  assert_int_equal(f.user.lost, 1);
  assert_int_equal(f.user.lost_reason, 0);
  mem_teardown(&f);

  /* The peer's EOF first: a half-close aware protocol keeps writing, then
   * shuts down writing inside eof_received. */
  mem_setup(&f, &rec_ops);
  f.user.write_on_eof = 1;
  assert_int_equal(braid_memory_transport_feed_eof(f.mt), 0);
  assert_int_equal(f.user.eofs, 1);
  assert_memory_equal(braid_memory_transport_value(f.mt, NULL), "olr", 3);
  assert_true(braid_memory_transport_write_shut(f.mt));
  assert_int_equal(braid_clock_advance(f.r, 0), 0);
  assert_int_equal(f.user.lost, 1);
  assert_int_equal(f.user.lost_reason, 0);
  mem_teardown(&f);

  /* Not half-close aware: the EOF closes the connection after flushing. */
  mem_setup(&f, &rec_noeof_ops);
  assert_int_equal(braid_memory_transport_feed_eof(f.mt), 0);
  /* Nothing was queued: closed at once (the layer is gone already). */
  assert_true(braid_memory_transport_closing(f.mt));
  assert_int_equal(braid_clock_advance(f.r, 0), 0);
  assert_int_equal(f.user.lost, 1);
  assert_int_equal(f.user.lost_reason, 0);
  mem_teardown(&f);
}

static void t_mem_pause_reading(void **state) {
  (void)state;
  mem_fixture f;
  mem_setup(&f, &rec_ops);
  /* Down: the protocol's pause reaches the lower transport. */
  assert_int_equal(braid_transport_pause_reading(f.up), 0);
  assert_true(braid_memory_transport_reading_paused(f.mt));
  assert_int_equal(braid_memory_transport_feed(f.mt, "nop", 3), 0);
  assert_int_equal(braid_memory_transport_feed_eof(f.mt), 0);
  assert_int_equal(f.user.got_len, 0);
  assert_int_equal(f.user.eofs, 0);
  assert_int_equal(braid_transport_resume_reading(f.up), 0);
  assert_false(braid_memory_transport_reading_paused(f.mt));
  assert_int_equal(f.user.got_len, 0); /* never inside the resume call */
  assert_int_equal(braid_clock_advance(f.r, 0), 0);
  assert_int_equal(f.user.got_len, 3);
  assert_memory_equal(f.user.got, "abc", 3);
  assert_int_equal(f.user.eofs, 1);
  mem_teardown(&f);

  /* Paused inside data_received while the lower side still delivers: the
   * layer holds what arrives (deliver_data says BRAID_EAGAIN) and hands
   * it over, in order and before the EOF, after the resume. */
  mem_setup(&f, &rec_ops);
  f.user.pause_in_data = 1;
  r13 *s = R13(f.up);
  r13_lower_data(&s->lower_p, "nop", 3); /* as the lower transport would */
  r13_lower_data(&s->lower_p, "qrs", 3);
  r13_lower_eof(&s->lower_p);
  assert_int_equal(f.user.got_len, 3);
  assert_int_equal(f.user.eofs, 0);
  f.user.pause_in_data = 0;
  assert_int_equal(braid_transport_resume_reading(f.up), 0);
  assert_int_equal(braid_clock_advance(f.r, 0), 0);
  assert_int_equal(f.user.got_len, 6);
  assert_memory_equal(f.user.got, "abcdef", 6);
  assert_int_equal(f.user.eofs, 1);
  mem_teardown(&f);
}

static void t_mem_flow_control(void **state) {
  (void)state;
  mem_fixture f;
  mem_setup(&f, &rec_ops);
  assert_int_equal(braid_transport_set_write_limits(f.up, 100, 40), 0);
  size_t hi, lo;
  braid_transport_impl_limits(f.up, &hi, &lo);
  assert_int_equal(hi, 100);
  assert_int_equal(lo, 40);
  /* The layer follows the lower transport: core set the lower marks to
   * the upper low mark at once. */
  braid_transport_impl_limits(f.lower, &hi, &lo);
  assert_int_equal(hi, 40);
  assert_int_equal(lo, 40);
  braid_memory_transport_set_consumer_blocked(f.mt, true);
  static char buf[150];
  memset(buf, 'a', sizeof buf);
  assert_int_equal(braid_transport_write(f.up, buf, 80), 0);
  assert_int_equal(f.user.pauses, 0);
  assert_int_equal(braid_transport_write(f.up, buf, 70), 0);
  /* Up: past the high mark, the protocol above is paused, once. */
  assert_int_equal(f.user.pauses, 1);
  assert_true(braid_transport_impl_state(f.up) & BRAID_TRANSPORT_WRITE_PAUSED);
  assert_int_equal(braid_transport_write_queued(f.up), 150);
  assert_int_equal(braid_transport_write(f.up, buf, 10), 0);
  assert_int_equal(f.user.pauses, 1);
  /* Draining to above the low mark resumes nothing, and the upper queue
   * (the lower one, counted live) is right without any event... */
  assert_int_equal(braid_memory_transport_drain(f.mt, 100), 100);
  assert_int_equal(braid_transport_write_queued(f.up), 60);
  assert_int_equal(f.user.resumes, 0);
  /* ...reaching it does, once. */
  assert_int_equal(braid_memory_transport_drain(f.mt, 20), 20);
  assert_int_equal(braid_transport_write_queued(f.up), 40);
  assert_int_equal(f.user.resumes, 1);
  assert_false(braid_transport_impl_state(f.up) & BRAID_TRANSPORT_WRITE_PAUSED);
  assert_int_equal(braid_memory_transport_drain(f.mt, 100), 40);
  assert_int_equal(f.user.resumes, 1);
  assert_int_equal(braid_transport_write_queued(f.up), 0);
  mem_teardown(&f);
}

static void t_mem_addrs_options_extras(void **state) {
  (void)state;
  mem_fixture f;
  mem_setup(&f, &rec_ops);
  braid_addr_t l, p, got;
  braid_addr_ip(&l, "127.0.0.1", 1111);
  braid_addr_ip(&p, "::1", 2222);
  braid_memory_transport_set_addrs(f.mt, &l, &p);
  assert_int_equal(braid_transport_local_addr(f.up, &got), 0);
  assert_int_equal(braid_addr_port(&got), 1111);
  assert_int_equal(braid_transport_peer_addr(f.up, &got), 0);
  assert_int_equal(braid_addr_port(&got), 2222);
  assert_int_equal(braid_addr_family(&got), braid_addr_family(&p));
  assert_int_equal(braid_transport_local_addr(f.up, NULL), BRAID_EINVAL);
  assert_int_equal(braid_transport_set_nodelay(f.up, true), 0);
  assert_int_equal(braid_transport_set_keepalive(f.up, true, 30), 0);
  /* Its own extra, and the lower transport's (none) for other names. */
  assert_string_equal(braid_transport_extra(f.up, "r13.name"), "rot13");
  assert_null(braid_transport_extra(f.up, "tls.alpn"));
  assert_null(braid_transport_extra(f.lower, "r13.name"));
  assert_null(braid_transport_extra(NULL, "r13.name"));
  assert_null(braid_transport_extra(f.up, NULL));
  /* A layer over a layer: names pass down. */
  rec top;
  memset(&top, 0, sizeof top);
  top.p.ops = &rec_ops;
  braid_transport_t *up2 = r13_start(f.up, &top.p);
  assert_string_equal(braid_transport_extra(up2, "r13.name"), "rot13");
  assert_int_equal(braid_transport_write(up2, "abc", 3), 0);
  /* rot13 twice is the identity. */
  assert_memory_equal(braid_memory_transport_value(f.mt, NULL), "abc", 3);
  assert_int_equal(braid_memory_transport_feed(f.mt, "xyz", 3), 0);
  assert_memory_equal(top.got, "xyz", 3);
  assert_int_equal(braid_transport_peer_addr(up2, &got), 0);
  assert_int_equal(braid_addr_port(&got), 2222);
  mem_teardown(&f);
  /* The user protocol of the middle layer was replaced by the top layer
   * (set_protocol): it hears nothing; the top protocol hears the end. */
  assert_int_equal(top.lost, 1);
  assert_int_equal(f.user.lost, 0);
}

/* The lower side fails: connection_lost with its reason, once. */
static void t_mem_lost_reason(void **state) {
  (void)state;
  mem_fixture f;
  mem_setup(&f, &rec_ops);
  assert_int_equal(braid_memory_transport_lose(f.mt, BRAID_ECONNRESET), 0);
  assert_int_equal(f.user.lost, 1);
  assert_int_equal(f.user.lost_reason, BRAID_ECONNRESET);
  mem_teardown(&f);
  assert_int_equal(f.user.lost, 1);
}

/* STARTTLS-style handover from inside a callback, and the server side: a
 * wrapping factory over the memory transport. */
static braid_protocol_t *rec_build(braid_factory_t *f,
                                   const braid_addr_t *peer) {
  (void)peer;
  if (f->user == NULL)
    return NULL; /* refusing */
  rec *x = calloc(1, sizeof *x);
  assert_non_null(x);
  x->p.ops = &rec_ops;
  x->heap = 1;
  x->lost_total = f->user;
  return &x->p;
}

static void t_mem_wrapped_factory(void **state) {
  (void)state;
  braid_reactor_t *r;
  assert_int_equal(braid_testing_reactor_create(&r), 0);
  int lost_total = 0;
  braid_factory_t inner = {rec_build, &lost_total};
  r13_factory rf;
  r13_factory_init(&rf, &inner);
  braid_addr_t peer;
  braid_addr_ip(&peer, "127.0.0.1", 9);
  braid_protocol_t *lp = rf.f.build(&rf.f, &peer);
  assert_non_null(lp);
  assert_int_equal(rf.built, 0); /* the inner protocol waits for the layer */
  braid_memory_transport_t *mt;
  assert_int_equal(braid_memory_transport_create(r, lp, &mt), 0);
  assert_int_equal(rf.built, 1);
  r13 *s = R13_OF_LOWER(lp);
  rec *x = (rec *)braid_transport_impl_protocol(&s->t);
  assert_non_null(x);
  assert_int_equal(x->made, 1);
  /* The reactor came from the lower transport. */
  assert_ptr_equal(braid_transport_reactor(&s->t), r);
  assert_int_equal(braid_memory_transport_feed(mt, "uv", 2), 0);
  assert_memory_equal(x->got, "hi", 2);
  assert_int_equal(braid_transport_close(&s->t), 0);
  assert_int_equal(braid_clock_advance(r, 0), 0);
  assert_int_equal(lost_total, 1);
  braid_memory_transport_destroy(mt);

  /* The inner factory refuses: the lower connection is aborted. */
  inner.user = NULL;
  lp = rf.f.build(&rf.f, &peer);
  assert_int_equal(braid_memory_transport_create(r, lp, &mt), 0);
  assert_true(braid_memory_transport_aborted(mt));
  int reason = 0;
  assert_int_equal(braid_clock_advance(r, 0), 0);
  assert_true(braid_memory_transport_disconnected(mt, &reason));
  assert_int_equal(reason, BRAID_ECONNABORTED);
  braid_memory_transport_destroy(mt);
  assert_int_equal(lost_total, 1);
  assert_int_equal(braid_reactor_destroy(r), 0);
}

/* ------------------------------------------------------------------------
 * The delivery rules, on a bare transport whose vtable records its calls
 * ------------------------------------------------------------------------ */

typedef struct bare {
  braid_transport_t t;
  int writes, closes[3], reads_on, reads_off;
  size_t bytes;
} bare;

static int bare_write(braid_transport_t *t, const braid_iovec_t *iov, size_t n,
                      braid_release_cb release, void *arg) {
  bare *b = BRAID_CONTAINER_OF(t, bare, t);
  b->writes++;
  for (size_t i = 0; i < n; i++)
    b->bytes += iov[i].len;
  if (release != NULL)
    release((void *)iov[0].base, arg);
  braid_transport_impl_set_queued(t, b->bytes);
  return 0;
}

static int bare_close(braid_transport_t *t, int how) {
  bare *b = BRAID_CONTAINER_OF(t, bare, t);
  assert_true(how >= 0 && how <= 2);
  b->closes[how]++;
  return 0;
}

static int bare_set_reading(braid_transport_t *t, int on) {
  bare *b = BRAID_CONTAINER_OF(t, bare, t);
  if (on)
    b->reads_on++;
  else
    b->reads_off++;
  return 0;
}

static const braid_transport_vt bare_vt = {
    .write = bare_write,
    .close = bare_close,
    .set_reading = bare_set_reading,
};

static void bare_init(bare *b, rec *x, const braid_protocol_ops *ops) {
  memset(b, 0, sizeof *b);
  memset(x, 0, sizeof *x);
  x->p.ops = ops;
  braid_transport_init(&b->t, &bare_vt, NULL, &x->p);
}

static void t_bare_deliveries(void **state) {
  (void)state;
  bare b;
  rec x;
  bare_init(&b, &x, &rec_ops);
  assert_int_equal(braid_transport_impl_state(&b.t), 0);
  assert_true(braid_transport_impl_reading(&b.t));
  assert_null(braid_transport_reactor(&b.t));
  /* Made: once, with p->transport set. */
  assert_int_equal(braid_transport_deliver_made(&b.t), 0);
  assert_int_equal(x.made, 1);
  assert_ptr_equal(x.p.transport, &b.t);
  assert_int_equal(braid_transport_deliver_made(&b.t), BRAID_EALREADY);
  assert_int_equal(x.made, 1);
  /* Data: delivered, held back while paused, refused once closing. */
  assert_int_equal(braid_transport_deliver_data(&b.t, "ab", 2), 0);
  assert_int_equal(braid_transport_deliver_data(&b.t, "", 0), 0);
  assert_int_equal(braid_transport_deliver_data(&b.t, NULL, 1), BRAID_EINVAL);
  assert_int_equal(braid_transport_pause_reading(&b.t), 0);
  assert_int_equal(braid_transport_pause_reading(&b.t), 0);
  assert_int_equal(b.reads_off, 1); /* only on a change */
  assert_false(braid_transport_impl_reading(&b.t));
  assert_int_equal(braid_transport_deliver_data(&b.t, "cd", 2), BRAID_EAGAIN);
  assert_int_equal(braid_transport_deliver_eof(&b.t), BRAID_EAGAIN);
  assert_int_equal(x.got_len, 2);
  assert_int_equal(x.eofs, 0);
  assert_int_equal(braid_transport_resume_reading(&b.t), 0);
  assert_int_equal(braid_transport_resume_reading(&b.t), 0);
  assert_int_equal(b.reads_on, 1);
  /* EOF: once. */
  assert_int_equal(braid_transport_deliver_eof(&b.t), 0);
  assert_int_equal(x.eofs, 1);
  assert_int_equal(braid_transport_deliver_eof(&b.t), BRAID_EALREADY);
  assert_int_equal(x.eofs, 1);
  assert_int_equal(b.closes[BRAID_TRANSPORT_CLOSE], 0); /* half-close aware */
  /* Shutting down writing after the EOF is up to the transport (both
   * directions done); closing stops deliveries. */
  assert_int_equal(braid_transport_close(&b.t), 0);
  assert_int_equal(b.closes[BRAID_TRANSPORT_CLOSE], 1);
  assert_int_equal(braid_transport_deliver_data(&b.t, "ef", 2), BRAID_ECLOSED);
  assert_int_equal(x.got_len, 2);
  /* Abort after close: the vtable hears both, once each. */
  assert_int_equal(braid_transport_abort(&b.t), 0);
  assert_int_equal(braid_transport_abort(&b.t), BRAID_ECLOSED);
  assert_int_equal(b.closes[BRAID_TRANSPORT_ABORT], 1);
  /* Lost: exactly once. */
  assert_int_equal(braid_transport_deliver_lost(&b.t, BRAID_ECONNABORTED), 0);
  assert_int_equal(braid_transport_deliver_lost(&b.t, 0), BRAID_EALREADY);
  assert_int_equal(x.lost, 1);
  assert_int_equal(x.lost_reason, BRAID_ECONNABORTED);
  assert_true(braid_transport_impl_state(&b.t) & BRAID_TRANSPORT_LOST);
  rec y;
  memset(&y, 0, sizeof y);
  y.p.ops = &rec_ops;
  assert_int_equal(braid_transport_set_protocol(&b.t, &y.p), BRAID_ECLOSED);
  assert_int_equal(braid_transport_deliver_made(NULL), BRAID_EINVAL);
  assert_int_equal(braid_transport_deliver_lost(NULL, 0), BRAID_EINVAL);
}

static void t_bare_eof_closes(void **state) {
  (void)state;
  bare b;
  rec x;
  /* Not half-close aware: the EOF closes (vtable CLOSE, once). */
  bare_init(&b, &x, &rec_noeof_ops);
  braid_transport_deliver_made(&b.t);
  assert_int_equal(braid_transport_deliver_eof(&b.t), 0);
  assert_int_equal(b.closes[BRAID_TRANSPORT_CLOSE], 1);
  assert_true(braid_transport_closing(&b.t));
  assert_int_equal(braid_transport_close(&b.t), BRAID_ECLOSED);
  assert_int_equal(b.closes[BRAID_TRANSPORT_CLOSE], 1);

  /* Shut down for writing, then the EOF: both directions are done. */
  bare_init(&b, &x, &rec_ops);
  braid_transport_deliver_made(&b.t);
  assert_int_equal(braid_transport_shutdown_write(&b.t), 0);
  assert_int_equal(b.closes[BRAID_TRANSPORT_SHUTDOWN_WRITE], 1);
  assert_int_equal(b.closes[BRAID_TRANSPORT_CLOSE], 0);
  assert_int_equal(braid_transport_deliver_eof(&b.t), 0);
  assert_int_equal(x.eofs, 1);
  assert_int_equal(b.closes[BRAID_TRANSPORT_CLOSE], 1);

  /* Shut down inside eof_received: the same. */
  bare_init(&b, &x, &rec_ops);
  x.write_on_eof = 1;
  braid_transport_deliver_made(&b.t);
  assert_int_equal(braid_transport_deliver_eof(&b.t), 0);
  assert_int_equal(b.closes[BRAID_TRANSPORT_SHUTDOWN_WRITE], 1);
  assert_int_equal(b.closes[BRAID_TRANSPORT_CLOSE], 1);

  /* Closed before it was made (a client): made is not delivered, lost is;
   * EOF is not delivered to a closing transport. */
  bare_init(&b, &x, &rec_ops);
  assert_int_equal(braid_transport_close(&b.t), 0);
  assert_int_equal(braid_transport_deliver_made(&b.t), BRAID_ECLOSED);
  assert_int_equal(x.made, 0);
  assert_ptr_equal(x.p.transport, &b.t);
  assert_int_equal(braid_transport_deliver_eof(&b.t), BRAID_ECLOSED);
  assert_int_equal(x.eofs, 0);
  assert_int_equal(braid_transport_deliver_lost(&b.t, 0), 0);
  assert_int_equal(x.lost, 1);
}

static void t_bare_fail_and_flow(void **state) {
  (void)state;
  bare b;
  rec x;
  bare_init(&b, &x, &rec_ops);
  braid_transport_deliver_made(&b.t);
  assert_int_equal(braid_transport_set_write_limits(&b.t, 10, 4), 0);
  assert_int_equal(braid_transport_set_write_limits(&b.t, 3, 4), BRAID_EINVAL);
  assert_int_equal(braid_transport_write(&b.t, "0123456789", 10), 0);
  assert_int_equal(x.pauses, 0); /* at the mark is not past it */
  assert_int_equal(braid_transport_write(&b.t, "a", 1), 0);
  assert_int_equal(x.pauses, 1);
  assert_int_equal(braid_transport_write(&b.t, "b", 1), 0);
  assert_int_equal(x.pauses, 1);
  /* The implementation's queue falls: resume only at the low mark. */
  braid_transport_impl_set_queued(&b.t, 5);
  braid_transport_impl_drained(&b.t);
  assert_int_equal(x.resumes, 0);
  assert_int_equal(braid_transport_write_queued(&b.t), 5);
  braid_transport_impl_set_queued(&b.t, 4);
  braid_transport_impl_drained(&b.t);
  braid_transport_impl_drained(&b.t);
  assert_int_equal(x.resumes, 1);
  /* A queue grown by the implementation itself (framing bytes). */
  braid_transport_impl_set_queued(&b.t, 11);
  braid_transport_impl_filled(&b.t);
  assert_int_equal(x.pauses, 2);
  /* Failure: writes are taken and dropped without reaching the vtable,
   * owned memory is released by core, no resume is sent any more. */
  braid_transport_impl_fail(&b.t);
  assert_true(braid_transport_closing(&b.t));
  assert_false(braid_transport_impl_reading(&b.t));
  int writes = b.writes;
  assert_int_equal(braid_transport_write(&b.t, "c", 1), 0);
  g_up_released = 0;
  static char owned[] = "o";
  assert_int_equal(
      braid_transport_write_owned(&b.t, owned, 1, up_release, &g_up_released),
      0);
  assert_int_equal(g_up_released, 1);
  assert_int_equal(b.writes, writes);
  braid_transport_impl_set_queued(&b.t, 0);
  braid_transport_impl_drained(&b.t);
  assert_int_equal(x.resumes, 1);
  assert_int_equal(braid_transport_deliver_data(&b.t, "x", 1), BRAID_ECLOSED);
  assert_int_equal(braid_transport_close(&b.t), BRAID_ECLOSED);
  /* Optional slots absent: ENOTSUP, NULL. */
  braid_addr_t a;
  assert_int_equal(braid_transport_peer_addr(&b.t, &a), BRAID_ENOTSUP);
  assert_int_equal(braid_transport_set_nodelay(&b.t, true), BRAID_ENOTSUP);
  assert_int_equal(braid_transport_sendfile(&b.t, 0, 0, 1, up_release, NULL),
                   BRAID_ENOTSUP);
  assert_null(braid_transport_extra(&b.t, "r13.name"));
  /* follow_lower without a lower transport: only its own bytes. */
  braid_transport_impl_follow_lower(&b.t, NULL, 7);
  assert_int_equal(braid_transport_write_queued(&b.t), 7);
  assert_int_equal(braid_transport_deliver_lost(&b.t, BRAID_EPIPE), 0);
  assert_int_equal(x.lost, 1);
  assert_int_equal(x.lost_reason, BRAID_EPIPE);
  /* NULL-safe readers. */
  assert_int_equal(braid_transport_impl_state(NULL), 0);
  assert_null(braid_transport_impl_protocol(NULL));
  assert_null(braid_transport_impl_vt(NULL));
  assert_false(braid_transport_impl_reading(NULL));
}

/* ------------------------------------------------------------------------
 * Over TCP, on every poller
 * ------------------------------------------------------------------------ */

#define TCP_MORE ((size_t)1 << 20)
#define TCP_CAP ((size_t)64 << 20)

typedef struct tcp_world {
  braid_reactor_t *r;
  braid_timer_t watchdog;
  int timed_out;
  int server_lost, client_done;
} tcp_world;

static void watchdog_cb(braid_timer_t *t, void *arg) {
  (void)t;
  tcp_world *w = arg;
  w->timed_out = 1;
  braid_reactor_stop(w->r);
}

/* Server: an echo with flow control both ways (it pauses reading while
 * its own writes are paused), half-close aware: on EOF it shuts down. */
typedef struct srv {
  braid_protocol_t p;
  tcp_world *w;
  int made, lost, pauses, resumes, eofs;
  size_t got;
  braid_addr_t peer;
  int peer_rc, waiting;
} srv;

static int g_cli_pauses; /* the client was paused (its writes backed up) */

static srv g_srv;

static void srv_made(braid_protocol_t *p, braid_transport_t *t) {
  srv *s = (srv *)p;
  s->made++;
  /* Not reading until the client is paused: its writes must back up
   * through the kernel's buffers into the layers' queues. (The client may
   * have filled them before the accept completed.) */
  if (g_cli_pauses == 0) {
    assert_int_equal(braid_transport_pause_reading(t), 0);
    s->waiting = 1;
  }
  s->peer_rc = braid_transport_peer_addr(t, &s->peer);
  assert_string_equal(braid_transport_extra(t, "r13.name"), "rot13");
  assert_int_equal(braid_transport_set_nodelay(t, true), 0);
  braid_transport_set_write_limits(t, 64 * 1024, 16 * 1024);
}

static void srv_data(braid_protocol_t *p, const void *d, size_t n) {
  srv *s = (srv *)p;
  const char *c = d;
  for (size_t i = 0; i < n; i++) /* the client sends letters only */
    assert_true(c[i] >= 'a' && c[i] <= 'z');
  s->got += n;
  assert_int_equal(braid_transport_write(p->transport, d, n), 0);
}

static void srv_eof(braid_protocol_t *p) {
  srv *s = (srv *)p;
  s->eofs++;
  assert_int_equal(braid_transport_shutdown_write(p->transport), 0);
}

static void srv_lost(braid_protocol_t *p, int reason) {
  srv *s = (srv *)p;
  s->lost++;
  s->w->server_lost++;
  assert_int_equal(reason, 0);
}

static void srv_pause(braid_protocol_t *p) {
  srv *s = (srv *)p;
  s->pauses++;
  braid_transport_pause_reading(p->transport);
}

static void srv_resume(braid_protocol_t *p) {
  srv *s = (srv *)p;
  s->resumes++;
  braid_transport_resume_reading(p->transport);
}

static const braid_protocol_ops srv_ops = {
    srv_made, srv_data, srv_eof, srv_lost, srv_pause, srv_resume,
};

static braid_protocol_t *srv_build(braid_factory_t *f,
                                   const braid_addr_t *peer) {
  (void)peer;
  memset(&g_srv, 0, sizeof g_srv);
  g_srv.p.ops = &srv_ops;
  g_srv.w = f->user;
  return &g_srv.p;
}

/* Client: writes a letter pattern as fast as flow control lets it until
 * it has been paused once (the kernel's buffers and then the layers'
 * queues filled up: the server does not read until then), then TCP_MORE
 * bytes more, checks the echo byte for byte, shuts down writing and waits
 * for the server's EOF. TCP_CAP bounds a kernel that buffers everything. */
typedef struct cli {
  braid_protocol_t p;
  tcp_world *w;
  braid_protocol_t lower_p; /* the plain connection before the layer */
  braid_transport_t *up;
  size_t sent, got, limit;
  int paused, pauses, resumes, eofs, lost, lost_reason, made, bad, shut;
} cli;

static char pattern_at(size_t i) {
  return (char)('a' + (i ^ (i >> 9)) % 26);
}

static void srv_go(void) {
  if (g_srv.waiting) {
    g_srv.waiting = 0;
    braid_transport_resume_reading(g_srv.p.transport);
  }
}

static void cli_pump(cli *c) {
  char buf[16384];
  while (!c->paused && c->sent < c->limit) {
    size_t n = c->limit - c->sent;
    if (n > sizeof buf)
      n = sizeof buf;
    for (size_t i = 0; i < n; i++)
      buf[i] = pattern_at(c->sent + i);
    assert_int_equal(braid_transport_write(c->up, buf, n), 0);
    c->sent += n;
  }
  if (c->sent == c->limit && !c->shut) {
    c->shut = 1;
    srv_go(); /* never paused: let the server read anyway */
    assert_int_equal(braid_transport_shutdown_write(c->up), 0);
  }
}

static void cli_made(braid_protocol_t *p, braid_transport_t *t) {
  cli *c = (cli *)p;
  c->made++;
  c->limit = TCP_CAP;
  c->up = t;
  braid_transport_set_write_limits(t, 64 * 1024, 16 * 1024);
  cli_pump(c);
}

static void cli_data(braid_protocol_t *p, const void *d, size_t n) {
  cli *c = (cli *)p;
  const char *s = d;
  for (size_t i = 0; i < n; i++)
    if (s[i] != pattern_at(c->got + i))
      c->bad++;
  c->got += n;
}

static void cli_eof(braid_protocol_t *p) {
  cli *c = (cli *)p;
  c->eofs++;
}

static void cli_lost(braid_protocol_t *p, int reason) {
  cli *c = (cli *)p;
  c->lost++;
  c->lost_reason = reason;
  c->w->client_done = 1;
}

static void cli_pause(braid_protocol_t *p) {
  cli *c = (cli *)p;
  c->paused = 1;
  c->pauses++;
  if (g_cli_pauses++ == 0) {
    c->limit = c->sent + TCP_MORE;
    srv_go(); /* now the server may read (and echo) */
  }
}

static void cli_resume(braid_protocol_t *p) {
  cli *c = (cli *)p;
  c->paused = 0;
  c->resumes++;
  cli_pump(c);
}

static const braid_protocol_ops cli_ops = {
    cli_made, cli_data, cli_eof, cli_lost, cli_pause, cli_resume,
};

/* The client's plain connection: the layer takes it over in
 * connection_made, as a STARTTLS client would. */
static void cli_lower_made(braid_protocol_t *p, braid_transport_t *t) {
  cli *c = BRAID_CONTAINER_OF(p, cli, lower_p);
  r13_start(t, &c->p);
}

static void cli_lower_lost(braid_protocol_t *p, int reason) {
  cli *c = BRAID_CONTAINER_OF(p, cli, lower_p);
  c->lost_reason = reason; /* the connect failed */
  c->w->client_done = 1;
}

static const braid_protocol_ops cli_lower_ops = {
    .connection_made = cli_lower_made,
    .connection_lost = cli_lower_lost,
};

static int g_factory_freed;
static void on_listener_closed(void *arg) {
  r13_factory *rf = arg;
  rf->freed++;
  g_factory_freed++;
}

static void t_tcp_echo(void **state) {
  (void)state;
  tcp_world w;
  memset(&w, 0, sizeof w);
  assert_int_equal(braid_reactor_create(&w.r, NULL), 0);
  braid_factory_t inner = {srv_build, &w};
  r13_factory rf;
  r13_factory_init(&rf, &inner);
  braid_addr_t a;
  braid_addr_ip(&a, "127.0.0.1", 0);
  braid_listener_t *l;
  assert_int_equal(braid_listen(w.r, &a, NULL, &rf.f, &l), 0);
  g_factory_freed = 0;
  assert_int_equal(braid_listener_on_close(l, on_listener_closed, &rf), 0);
  assert_int_equal(braid_listener_addr(l, &a), 0);
  cli c;
  memset(&c, 0, sizeof c);
  c.p.ops = &cli_ops;
  c.lower_p.ops = &cli_lower_ops;
  c.w = &w;
  g_cli_pauses = 0;
  memset(&g_srv, 0, sizeof g_srv);
  g_down_released = 0;
  assert_int_equal(braid_connect(w.r, &a, NULL, &c.lower_p), 0);
  assert_int_equal(
      braid_timer_start(w.r, &w.watchdog, BRAID_SEC(60), watchdog_cb, &w), 0);
  while (!w.timed_out && !(w.client_done && w.server_lost))
    assert_true(braid_reactor_run_once(w.r, true) >= 0);
  assert_false(w.timed_out);
  /* Everything came back, transformed twice (identity), in order. */
  assert_int_equal(c.bad, 0);
  assert_true(c.sent > TCP_MORE);
  assert_int_equal(c.got, c.sent);
  assert_int_equal(g_srv.got, c.sent);
  assert_int_equal(c.made, 1);
  assert_int_equal(c.eofs, 1);
  assert_int_equal(c.lost, 1);
  assert_int_equal(c.lost_reason, 0);
  assert_int_equal(g_srv.made, 1);
  assert_int_equal(g_srv.eofs, 1);
  assert_int_equal(g_srv.lost, 1);
  /* Flow control was exercised both ways and balanced. */
  assert_true(c.pauses >= 1);
  assert_int_equal(c.pauses, c.resumes);
  assert_true(g_srv.resumes <= g_srv.pauses);
  /* The server saw the client's address through the layer. */
  assert_int_equal(g_srv.peer_rc, 0);
  char peer[64];
  braid_addr_format(&g_srv.peer, peer, sizeof peer);
  assert_memory_equal(peer, "127.0.0.1:", 10);
  /* Every buffer handed down as owned memory was released. */
  assert_true(g_down_released > 0);
  assert_int_equal(rf.built, 1);
  assert_int_equal(braid_listener_close(l), 0);
  assert_int_equal(g_factory_freed, 1);
  assert_int_equal(rf.freed, 1);
  braid_timer_cancel(&w.watchdog);
  for (int i = 0; i < 100 && braid_reactor_run_once(w.r, false) > 0; i++)
    ;
  assert_int_equal(braid_reactor_destroy(w.r), 0);
}

/* A plain TCP client talking to the layered server sees rot13 on the wire
 * both ways: the layer is really in the byte stream. */
typedef struct raw {
  braid_protocol_t p;
  tcp_world *w;
  char got[16];
  size_t got_len;
  int lost;
} raw;

static void raw_made(braid_protocol_t *p, braid_transport_t *t) {
  (void)p;
  assert_int_equal(braid_transport_write(t, "uryyb", 5), 0);
}

static void raw_data(braid_protocol_t *p, const void *d, size_t n) {
  raw *x = (raw *)p;
  if (x->got_len + n <= sizeof x->got) {
    memcpy(x->got + x->got_len, d, n);
    x->got_len += n;
  }
  if (x->got_len >= 5)
    braid_transport_abort(p->transport);
}

static void raw_lost(braid_protocol_t *p, int reason) {
  raw *x = (raw *)p;
  (void)reason;
  x->lost++;
  x->w->client_done = 1;
}

static const braid_protocol_ops raw_ops = {
    .connection_made = raw_made,
    .data_received = raw_data,
    .connection_lost = raw_lost,
};

typedef struct seen {
  braid_protocol_t p;
  char got[16];
  size_t got_len;
  int lost, lost_reason;
  tcp_world *w;
} seen;

static void seen_data(braid_protocol_t *p, const void *d, size_t n) {
  seen *x = (seen *)p;
  if (x->got_len + n <= sizeof x->got) {
    memcpy(x->got + x->got_len, d, n);
    x->got_len += n;
  }
  assert_int_equal(braid_transport_write(p->transport, d, n), 0);
}

static void seen_lost(braid_protocol_t *p, int reason) {
  seen *x = (seen *)p;
  x->lost++;
  x->lost_reason = reason;
  x->w->server_lost++;
}

static const braid_protocol_ops seen_ops = {
    .data_received = seen_data,
    .connection_lost = seen_lost,
};

static seen g_seen;

static braid_protocol_t *seen_build(braid_factory_t *f,
                                    const braid_addr_t *peer) {
  (void)peer;
  memset(&g_seen, 0, sizeof g_seen);
  g_seen.p.ops = &seen_ops;
  g_seen.w = f->user;
  return &g_seen.p;
}

static void t_tcp_on_the_wire(void **state) {
  (void)state;
  tcp_world w;
  memset(&w, 0, sizeof w);
  assert_int_equal(braid_reactor_create(&w.r, NULL), 0);
  braid_factory_t inner = {seen_build, &w};
  r13_factory rf;
  r13_factory_init(&rf, &inner);
  braid_addr_t a;
  braid_addr_ip(&a, "127.0.0.1", 0);
  braid_listener_t *l;
  assert_int_equal(braid_listen(w.r, &a, NULL, &rf.f, &l), 0);
  assert_int_equal(braid_listener_addr(l, &a), 0);
  raw x;
  memset(&x, 0, sizeof x);
  x.p.ops = &raw_ops;
  x.w = &w;
  assert_int_equal(braid_connect(w.r, &a, NULL, &x.p), 0);
  assert_int_equal(
      braid_timer_start(w.r, &w.watchdog, BRAID_SEC(30), watchdog_cb, &w), 0);
  while (!w.timed_out && !(w.client_done && w.server_lost))
    assert_true(braid_reactor_run_once(w.r, true) >= 0);
  assert_false(w.timed_out);
  assert_int_equal(g_seen.got_len, 5);
  assert_memory_equal(g_seen.got, "hello", 5); /* decoded by the layer */
  assert_int_equal(x.got_len, 5);
  assert_memory_equal(x.got, "uryyb", 5); /* encoded by the layer */
  assert_int_equal(x.lost, 1);
  /* The client aborted: the server's protocol hears it once, through the
   * layer (as a reset; wine reports the aborted socket as an end of input,
   * which closes the protocol cleanly). */
  assert_int_equal(g_seen.lost, 1);
  assert_int_equal(braid_listener_close(l), 0);
  braid_timer_cancel(&w.watchdog);
  for (int i = 0; i < 100 && braid_reactor_run_once(w.r, false) > 0; i++)
    ;
  assert_int_equal(braid_reactor_destroy(w.r), 0);
}

/* Reactor teardown with a layered TCP connection open: connection_lost
 * once for the protocols above both layers, the listener's close hook
 * runs, nothing leaked (ASan, valgrind). */
typedef struct starter {
  braid_protocol_t lower_p;
  braid_protocol_t *up;
} starter;

static void starter_made(braid_protocol_t *p, braid_transport_t *t) {
  starter *st = BRAID_CONTAINER_OF(p, starter, lower_p);
  r13_start(t, st->up);
}

static const braid_protocol_ops starter_ops = {
    .connection_made = starter_made,
};

static void t_tcp_teardown(void **state) {
  (void)state;
  tcp_world w;
  memset(&w, 0, sizeof w);
  assert_int_equal(braid_reactor_create(&w.r, NULL), 0);
  braid_factory_t inner = {seen_build, &w};
  r13_factory rf;
  r13_factory_init(&rf, &inner);
  braid_addr_t a;
  braid_addr_ip(&a, "127.0.0.1", 0);
  braid_listener_t *l;
  assert_int_equal(braid_listen(w.r, &a, NULL, &rf.f, &l), 0);
  g_factory_freed = 0;
  assert_int_equal(braid_listener_on_close(l, on_listener_closed, &rf), 0);
  assert_int_equal(braid_listener_addr(l, &a), 0);
  memset(&g_seen, 0, sizeof g_seen);
  rec user;
  memset(&user, 0, sizeof user);
  user.p.ops = &rec_ops;
  starter st = {{&starter_ops, NULL, NULL}, &user.p};
  assert_int_equal(braid_connect(w.r, &a, NULL, &st.lower_p), 0);
  assert_int_equal(
      braid_timer_start(w.r, &w.watchdog, BRAID_SEC(30), watchdog_cb, &w), 0);
  /* Until both layers are up, and a byte went through both. */
  int sent = 0;
  while (!w.timed_out && g_seen.got_len == 0) {
    if (user.made && !sent) {
      assert_int_equal(braid_transport_write(user.p.transport, "x", 1), 0);
      sent = 1;
    }
    assert_true(braid_reactor_run_once(w.r, true) >= 0);
  }
  assert_false(w.timed_out);
  braid_timer_cancel(&w.watchdog);
  assert_int_equal(braid_reactor_destroy(w.r), 0);
  assert_int_equal(user.made, 1);
  assert_int_equal(user.lost, 1);
  assert_int_equal(g_seen.lost, 1);
  assert_int_equal(g_factory_freed, 1); /* the listener closed at teardown */
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(t_mem_made_and_writes),
      cmocka_unit_test(t_mem_close_flushes),
      cmocka_unit_test(t_mem_abort),
      cmocka_unit_test(t_mem_half_close),
      cmocka_unit_test(t_mem_pause_reading),
      cmocka_unit_test(t_mem_flow_control),
      cmocka_unit_test(t_mem_addrs_options_extras),
      cmocka_unit_test(t_mem_lost_reason),
      cmocka_unit_test(t_mem_wrapped_factory),
      cmocka_unit_test(t_bare_deliveries),
      cmocka_unit_test(t_bare_eof_closes),
      cmocka_unit_test(t_bare_fail_and_flow),
      cmocka_unit_test(t_tcp_echo),
      cmocka_unit_test(t_tcp_on_the_wire),
      cmocka_unit_test(t_tcp_teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
