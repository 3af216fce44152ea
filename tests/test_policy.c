/* Policies (braid/policy.h): the timeout helper, the policy factory
 * (connection limits in total and per peer, read and write throttling,
 * idle timeout, walking and draining its connections) and the client
 * service (backoff, jitter, reset on success, when_connected, stop),
 * on the manual clock through the iosim, and each over real TCP on
 * 127.0.0.1. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <cmocka.h>

#include "braid/braid.h"
#include "braid/iosim.h"
#include "braid/policy.h"
#include "braid/testing.h"

/* ------------------------------------------------------------------------
 * A recording protocol
 * ------------------------------------------------------------------------ */

typedef struct peer {
  braid_protocol_t p;
  braid_reactor_t *r;
  char log[128];
  size_t nlog;
  char *data;
  size_t ndata, cap;
  int made, lost, lost_reason, eofs, pauses, resumes;
  uint64_t made_at, lost_at, eof_at;
  /* what to do */
  size_t send_on_made;  /* bytes to write in connection_made */
  int close_after_send; /* then close */
  size_t high, low;     /* write limits to set in connection_made */
  int pause_on_data;    /* pause reading after each delivery */
  int freed_by_lost;    /* heap-allocated: free in connection_lost */
  int *lost_counter;
} peer;

static void plog(peer *x, char c) {
  if (x->nlog + 1 < sizeof x->log)
    x->log[x->nlog++] = c;
  x->log[x->nlog] = '\0';
}

static void p_made(braid_protocol_t *p, braid_transport_t *t) {
  peer *x = (peer *)p;
  x->made++;
  x->made_at = braid_reactor_now(x->r);
  plog(x, 'M');
  if (x->high)
    assert_int_equal(braid_transport_set_write_limits(t, x->high, x->low), 0);
  if (x->send_on_made) {
    char *buf = malloc(x->send_on_made);
    for (size_t i = 0; i < x->send_on_made; i++)
      buf[i] = (char)(i % 253);
    assert_int_equal(braid_transport_write(t, buf, x->send_on_made), 0);
    free(buf);
    if (x->close_after_send)
      assert_int_equal(braid_transport_close(t), 0);
  }
}

static void p_data(braid_protocol_t *p, const void *d, size_t len) {
  peer *x = (peer *)p;
  if (x->nlog == 0 || x->log[x->nlog - 1] != 'D')
    plog(x, 'D');
  if (x->ndata + len > x->cap) {
    x->cap = (x->ndata + len) * 2;
    x->data = realloc(x->data, x->cap);
  }
  memcpy(x->data + x->ndata, d, len);
  x->ndata += len;
  if (x->pause_on_data)
    braid_transport_pause_reading(p->transport);
}

static void p_eof(braid_protocol_t *p) {
  peer *x = (peer *)p;
  x->eofs++;
  x->eof_at = braid_reactor_now(x->r);
  plog(x, 'E');
}

static void p_lost(braid_protocol_t *p, int reason) {
  peer *x = (peer *)p;
  x->lost++;
  x->lost_reason = reason;
  x->lost_at = braid_reactor_now(x->r);
  plog(x, 'L');
  if (x->lost_counter != NULL)
    (*x->lost_counter)++;
  if (x->freed_by_lost) {
    free(x->data);
    free(x);
  }
}

static void p_pause(braid_protocol_t *p) {
  peer *x = (peer *)p;
  x->pauses++;
  plog(x, 'P');
}

static void p_resume(braid_protocol_t *p) {
  peer *x = (peer *)p;
  x->resumes++;
  plog(x, 'R');
}

static const braid_protocol_ops p_ops = {
    .connection_made = p_made,
    .data_received = p_data,
    .eof_received = p_eof,
    .connection_lost = p_lost,
    .pause_writing = p_pause,
    .resume_writing = p_resume,
};

static const braid_protocol_ops p_noeof_ops = {
    .connection_made = p_made,
    .data_received = p_data,
    .connection_lost = p_lost,
    .pause_writing = p_pause,
    .resume_writing = p_resume,
};

static void peer_init(peer *x, braid_reactor_t *r) {
  memset(x, 0, sizeof *x);
  x->p.ops = &p_ops;
  x->r = r;
}

static void peer_free(peer *x) {
  free(x->data);
  x->data = NULL;
}

/* A factory of heap peers; a template says what they do, and the last one
 * built is remembered. They free themselves in connection_lost, unless
 * `keep` is set: then they stay readable until pfactory_release. */
typedef struct pfactory {
  braid_factory_t f;
  braid_reactor_t *r;
  peer tmpl;
  peer *last;
  int built, lost, keep;
  braid_addr_t last_peer;
  peer *kept[64];
} pfactory;

static braid_protocol_t *pf_build(braid_factory_t *f, const braid_addr_t *a) {
  pfactory *pf = (pfactory *)f;
  peer *x = malloc(sizeof *x);
  *x = pf->tmpl;
  x->r = pf->r;
  x->freed_by_lost = !pf->keep;
  if (pf->keep) {
    assert_true(pf->built < 64);
    pf->kept[pf->built] = x;
  }
  x->lost_counter = &pf->lost;
  if (x->p.ops == NULL)
    x->p.ops = &p_ops;
  pf->last = x;
  pf->built++;
  pf->last_peer = *a;
  return &x->p;
}

static void pfactory_init(pfactory *pf, braid_reactor_t *r) {
  memset(pf, 0, sizeof *pf);
  pf->f.build = pf_build;
  pf->r = r;
}

static void pfactory_release(pfactory *pf) {
  if (!pf->keep)
    return;
  for (int i = 0; i < pf->built; i++) {
    peer_free(pf->kept[i]);
    free(pf->kept[i]);
  }
  pf->built = pf->lost = 0;
}

static braid_reactor_t *mkreactor(void) {
  braid_reactor_t *r;
  assert_int_equal(braid_testing_reactor_create(&r), 0);
  return r;
}

static void flush_ok(braid_iosim_t *sim) {
  ptrdiff_t n = braid_iosim_flush(sim, 0);
  if (n < 0)
    fail_msg("flush: %s", braid_strerror((int)n));
}

static braid_transport_t *tp(peer *x) {
  return x->p.transport;
}

/* ------------------------------------------------------------------------
 * Timeouts
 * ------------------------------------------------------------------------ */

typedef struct tocount {
  int n;
  uint64_t at;
  braid_reactor_t *r;
} tocount;

static void to_cb(braid_timeout_t *to, void *arg) {
  (void)to;
  tocount *c = arg;
  c->n++;
  c->at = braid_reactor_now(c->r);
}

static void t_timeout_basic(void **st) {
  (void)st;
  braid_reactor_t *r = mkreactor();
  tocount c = {0, 0, r};
  braid_timeout_t to;
  memset(&to, 0, sizeof to);
  assert_int_equal(braid_timeout_set(&to, 5), BRAID_EINVAL); /* not init */
  braid_timeout_init(&to, r, to_cb, &c);
  braid_timeout_reset(&to); /* inactive: nothing */
  assert_int_equal(braid_timeout_period(&to), 0);
  assert_int_equal(braid_reactor_timer_count(r), 0);
  assert_int_equal(braid_timeout_set(&to, BRAID_SEC(10)), 0);
  assert_int_equal(braid_timeout_deadline(&to), BRAID_SEC(10));
  assert_int_equal(braid_clock_advance(r, BRAID_SEC(10) - 1), 0);
  assert_int_equal(c.n, 0);
  assert_int_equal(braid_clock_advance(r, 1), 0);
  assert_int_equal(c.n, 1);
  assert_int_equal(c.at, BRAID_SEC(10));
  /* Once: inactive afterwards, and a reset does not revive it. */
  assert_int_equal(braid_timeout_period(&to), 0);
  braid_timeout_reset(&to);
  assert_int_equal(braid_clock_advance(r, BRAID_SEC(100)), 0);
  assert_int_equal(c.n, 1);
  /* Set replaces; set 0 and cancel make it inactive. */
  assert_int_equal(braid_timeout_set(&to, BRAID_SEC(5)), 0);
  assert_int_equal(braid_timeout_set(&to, BRAID_SEC(8)), 0);
  assert_int_equal(braid_timeout_period(&to), BRAID_SEC(8));
  assert_int_equal(braid_clock_advance(r, BRAID_SEC(7)), 0);
  assert_int_equal(c.n, 1);
  assert_int_equal(braid_clock_advance(r, BRAID_SEC(1)), 0);
  assert_int_equal(c.n, 2);
  assert_int_equal(braid_timeout_set(&to, BRAID_SEC(1)), 0);
  assert_int_equal(braid_timeout_set(&to, 0), 0);
  assert_int_equal(braid_clock_advance(r, BRAID_SEC(2)), 0);
  assert_int_equal(braid_timeout_set(&to, BRAID_SEC(1)), 0);
  braid_timeout_cancel(&to);
  braid_timeout_cancel(&to);
  assert_int_equal(braid_clock_advance(r, BRAID_SEC(2)), 0);
  assert_int_equal(c.n, 2);
  assert_int_equal(braid_reactor_timer_count(r), 0);
  assert_int_equal(braid_reactor_destroy(r), 0);
}

static void t_timeout_reset_is_cheap_and_exact(void **st) {
  (void)st;
  braid_reactor_t *r = mkreactor();
  tocount c = {0, 0, r};
  braid_timeout_t to;
  braid_timeout_init(&to, r, to_cb, &c);
  assert_int_equal(braid_timeout_set(&to, BRAID_SEC(10)), 0);
  /* Activity every second for a minute: never fires, and the reset never
   * adds or moves a timer (one pending all along). */
  for (int i = 0; i < 60; i++) {
    assert_int_equal(braid_clock_advance(r, BRAID_SEC(1)), 0);
    for (int k = 0; k < 100; k++)
      braid_timeout_reset(&to);
    assert_int_equal(braid_reactor_timer_count(r), 1);
  }
  assert_int_equal(c.n, 0);
  assert_int_equal(braid_timeout_deadline(&to), BRAID_SEC(70));
  /* Silence: fires exactly one period after the last reset. */
  assert_int_equal(braid_clock_advance(r, BRAID_SEC(10) - 1), 0);
  assert_int_equal(c.n, 0);
  assert_int_equal(braid_clock_advance(r, 1), 0);
  assert_int_equal(c.n, 1);
  assert_int_equal(c.at, BRAID_SEC(70));
  assert_int_equal(braid_reactor_destroy(r), 0);
}

/* TimeoutMixin in a protocol: a server that resets on every read and
 * aborts the connection when silent for 30 s. */
typedef struct idle_srv {
  peer base;
  braid_timeout_t to;
} idle_srv;

static void is_made(braid_protocol_t *p, braid_transport_t *t) {
  idle_srv *s = (idle_srv *)p;
  p_made(p, t);
  braid_timeout_init(&s->to, braid_transport_reactor(t),
                     braid_timeout_abort_transport, t);
  assert_int_equal(braid_timeout_set(&s->to, BRAID_SEC(30)), 0);
}

static void is_data(braid_protocol_t *p, const void *d, size_t len) {
  idle_srv *s = (idle_srv *)p;
  braid_timeout_reset(&s->to);
  p_data(p, d, len);
}

static void is_lost(braid_protocol_t *p, int reason) {
  idle_srv *s = (idle_srv *)p;
  braid_timeout_cancel(&s->to);
  p_lost(p, reason);
}

static const braid_protocol_ops is_ops = {
    .connection_made = is_made,
    .data_received = is_data,
    .eof_received = p_eof,
    .connection_lost = is_lost,
};

static void t_timeout_in_protocol(void **st) {
  (void)st;
  braid_reactor_t *r = mkreactor();
  braid_iosim_t *sim;
  assert_int_equal(braid_iosim_create(r, NULL, &sim), 0);
  peer c;
  idle_srv s;
  peer_init(&c, r);
  peer_init(&s.base, r);
  s.base.p.ops = &is_ops;
  braid_iosim_conn_t *sc;
  assert_int_equal(braid_iosim_connect(sim, &c.p, &s.base.p, NULL, NULL, &sc),
                   0);
  flush_ok(sim);
  for (int i = 0; i < 5; i++) {
    assert_int_equal(braid_clock_advance(r, BRAID_SEC(20)), 0);
    assert_int_equal(braid_transport_write(tp(&c), "ping", 4), 0);
    flush_ok(sim);
  }
  assert_int_equal(s.base.lost, 0);
  assert_int_equal(s.base.ndata, 20);
  /* Silent from 100 s on: aborted at 130 s, the client reset. */
  assert_int_equal(braid_clock_advance(r, BRAID_SEC(30) - 1), 0);
  flush_ok(sim);
  assert_int_equal(s.base.lost, 0);
  assert_int_equal(braid_clock_advance(r, 1), 0);
  flush_ok(sim);
  assert_int_equal(s.base.lost, 1);
  assert_int_equal(s.base.lost_reason, BRAID_ECONNABORTED);
  assert_int_equal(s.base.lost_at, BRAID_SEC(130));
  assert_int_equal(c.lost_reason, BRAID_ECONNRESET);
  assert_int_equal(braid_iosim_destroy(sim), 0);
  peer_free(&c);
  peer_free(&s.base);
  assert_int_equal(braid_reactor_destroy(r), 0);
}

/* ------------------------------------------------------------------------
 * The policy factory over the iosim
 * ------------------------------------------------------------------------ */

typedef struct pfix {
  braid_reactor_t *r;
  braid_iosim_t *sim;
  pfactory inner;
  braid_factory_t *pf;
  peer clients[8];
  braid_iosim_conn_t *conns[8];
  int n;
} pfix;

static void pfix_init(pfix *x, const braid_policy_options *po,
                      const braid_iosim_options *io) {
  memset(x, 0, sizeof *x);
  x->r = mkreactor();
  assert_int_equal(braid_iosim_create(x->r, io, &x->sim), 0);
  pfactory_init(&x->inner, x->r);
  assert_int_equal(braid_policy_factory_create(x->r, &x->inner.f, po, &x->pf),
                   0);
}

static peer *pfix_connect(pfix *x, const char *ip, uint16_t port) {
  peer *c = &x->clients[x->n];
  peer_init(c, x->r);
  braid_addr_t a;
  if (ip != NULL)
    assert_int_equal(braid_addr_ip(&a, ip, port), 0);
  assert_int_equal(braid_iosim_connect(x->sim, &c->p, NULL, x->pf,
                                       ip != NULL ? &a : NULL, &x->conns[x->n]),
                   0);
  x->n++;
  /* Up before the next one, so that the limits apply in this order. */
  flush_ok(x->sim);
  return c;
}

static void pfix_free(pfix *x) {
  assert_int_equal(braid_iosim_destroy(x->sim), 0);
  assert_int_equal(x->inner.lost, x->inner.built);
  assert_int_equal(braid_policy_factory_destroy(x->pf), 0);
  for (int i = 0; i < x->n; i++)
    peer_free(&x->clients[i]);
  assert_int_equal(braid_reactor_destroy(x->r), 0);
}

static braid_policy_stats pstats(pfix *x) {
  braid_policy_stats s;
  assert_int_equal(braid_policy_factory_stats(x->pf, &s), 0);
  return s;
}

static void t_limit_total(void **st) {
  (void)st;
  braid_policy_options po = {0};
  po.max_connections = 2;
  pfix x;
  pfix_init(&x, &po, NULL);
  x.inner.tmpl.p.ops = &p_noeof_ops; /* closes when the client does */
  peer *a = pfix_connect(&x, NULL, 0);
  peer *b = pfix_connect(&x, NULL, 0);
  peer *c = pfix_connect(&x, NULL, 0);
  flush_ok(x.sim);
  /* The third is closed at once: up, then the end of input. */
  assert_string_equal(a->log, "M");
  assert_string_equal(b->log, "M");
  assert_string_equal(c->log, "ME");
  assert_int_equal(x.inner.built, 2);
  braid_policy_stats s = pstats(&x);
  assert_int_equal(s.open, 2);
  assert_int_equal(s.accepted, 2);
  assert_int_equal(s.refused_total, 1);
  /* One leaves: room for one more, and only one. */
  assert_int_equal(braid_transport_close(tp(a)), 0);
  flush_ok(x.sim);
  assert_int_equal(pstats(&x).open, 1);
  peer *d = pfix_connect(&x, NULL, 0);
  peer *e = pfix_connect(&x, NULL, 0);
  flush_ok(x.sim);
  assert_int_equal(d->eofs + e->eofs, 1);
  assert_int_equal(x.inner.built, 3);
  s = pstats(&x);
  assert_int_equal(s.open, 2);
  assert_int_equal(s.refused_total, 2);
  pfix_free(&x);
}

static void t_limit_per_peer(void **st) {
  (void)st;
  braid_policy_options po = {0};
  po.max_per_peer = 2;
  pfix x;
  pfix_init(&x, &po, NULL);
  pfix_connect(&x, "10.0.0.5", 1000);
  pfix_connect(&x, "10.0.0.5", 1001);
  peer *third = pfix_connect(&x, "10.0.0.5", 1002); /* same host */
  peer *other = pfix_connect(&x, "10.0.0.6", 1000);
  pfix_connect(&x, "2001:db8::1", 7);
  pfix_connect(&x, "2001:db8::1", 8);
  peer *v6third = pfix_connect(&x, "2001:db8::1", 9);
  flush_ok(x.sim);
  assert_string_equal(third->log, "ME");
  assert_string_equal(other->log, "M");
  assert_string_equal(v6third->log, "ME");
  braid_policy_stats s = pstats(&x);
  assert_int_equal(s.open, 5);
  assert_int_equal(s.refused_peer, 2);
  assert_int_equal(s.refused_total, 0);
  braid_addr_t q;
  braid_addr_ip(&q, "10.0.0.5", 9999); /* the port does not matter */
  assert_int_equal(braid_policy_factory_peer_count(x.pf, &q), 2);
  braid_addr_ip(&q, "10.0.0.6", 1);
  assert_int_equal(braid_policy_factory_peer_count(x.pf, &q), 1);
  braid_addr_ip(&q, "10.0.0.7", 1);
  assert_int_equal(braid_policy_factory_peer_count(x.pf, &q), 0);
  braid_addr_ip(&q, "2001:db8::1", 1);
  assert_int_equal(braid_policy_factory_peer_count(x.pf, &q), 2);
  /* The factory saw the real peer address (with its port). */
  char buf[64];
  braid_addr_format(&x.inner.last_peer, buf, sizeof buf);
  assert_string_equal(buf, "[2001:db8::1]:8");
  /* One from 10.0.0.5 leaves: another from there gets in. */
  assert_int_equal(braid_transport_abort(tp(&x.clients[0])), 0);
  flush_ok(x.sim);
  braid_addr_ip(&q, "10.0.0.5", 0);
  assert_int_equal(braid_policy_factory_peer_count(x.pf, &q), 1);
  peer *again = pfix_connect(&x, "10.0.0.5", 1003);
  flush_ok(x.sim);
  assert_string_equal(again->log, "M");
  assert_int_equal(braid_policy_factory_peer_count(x.pf, &q), 2);
  pfix_free(&x);
}

static void t_passthrough_without_rates(void **st) {
  (void)st;
  for (int wrapped = 0; wrapped < 2; wrapped++) {
    braid_policy_options po = {0};
    po.max_connections = 5;
    if (wrapped)
      po.write_rate = 1u << 20;
    pfix x;
    pfix_init(&x, &po, NULL);
    x.inner.tmpl.send_on_made = 100;
    peer *c = pfix_connect(&x, NULL, 0);
    flush_ok(x.sim);
    braid_transport_t *lower =
        braid_memory_transport_transport(braid_iosim_server(x.conns[0]));
    /* Limits alone need no transport in between; a rate does. */
    if (wrapped)
      assert_ptr_not_equal(x.inner.last->p.transport, lower);
    else
      assert_ptr_equal(x.inner.last->p.transport, lower);
    assert_int_equal(c->ndata, 100);
    /* Either way the inner protocol can write, close, and the peer's
     * address reaches it. */
    braid_addr_t a;
    assert_int_equal(braid_transport_peer_addr(x.inner.last->p.transport, &a),
                     0);
    assert_int_equal(braid_addr_port(&a), 40000);
    assert_int_equal(
        braid_transport_set_nodelay(x.inner.last->p.transport, true), 0);
    assert_int_equal(braid_transport_write(x.inner.last->p.transport, "!", 1),
                     0);
    assert_int_equal(braid_transport_close(x.inner.last->p.transport), 0);
    flush_ok(x.sim);
    assert_int_equal(c->ndata, 101);
    assert_string_equal(c->log, "MDE");
    assert_int_equal(x.inner.lost, 1);
    pfix_free(&x);
  }
}

/* Write throttling: 1000 B/s with a 1000-byte burst. */
static void t_write_throttle(void **st) {
  (void)st;
  braid_policy_options po = {0};
  po.write_rate = 1000;
  pfix x;
  pfix_init(&x, &po, NULL);
  x.inner.tmpl.send_on_made = 3500;
  x.inner.tmpl.close_after_send = 1;
  x.inner.tmpl.high = 1500; /* flow control against what is held back */
  x.inner.tmpl.low = 600;
  peer *c = pfix_connect(&x, NULL, 0);
  flush_ok(x.sim);
  peer *s = x.inner.last;
  /* The burst at once; the rest waits, and the producer is paused. */
  assert_int_equal(c->ndata, 1000);
  assert_string_equal(s->log, "MP");
  /* Then 1000 a second: 1000 at 1 s, 1000 at 2 s, and the last 500 as
   * soon as the bucket holds them, at 2.5 s. Nothing a nanosecond
   * earlier. */
  static const struct {
    uint64_t at;
    size_t before, after;
  } steps[] = {{BRAID_SEC(1), 1000, 2000},
               {BRAID_SEC(2), 2000, 3000},
               {BRAID_MSEC(2500), 3000, 3500}};
  for (int i = 0; i < 3; i++) {
    uint64_t now = braid_reactor_now(x.r);
    assert_int_equal(braid_clock_advance(x.r, steps[i].at - 1 - now), 0);
    flush_ok(x.sim);
    assert_int_equal(c->ndata, steps[i].before);
    assert_int_equal(braid_clock_advance(x.r, 1), 0);
    flush_ok(x.sim);
    assert_int_equal(c->ndata, steps[i].after);
  }
  /* The bytes are the ones written, and the close came after them. */
  for (size_t i = 0; i < c->ndata; i++)
    assert_int_equal((unsigned char)c->data[i], i % 253);
  assert_string_equal(c->log, "MDE");
  assert_int_equal(c->eof_at, BRAID_MSEC(2500));
  assert_int_equal(x.inner.lost, 1);
  braid_policy_stats st2 = pstats(&x);
  assert_int_equal(st2.bytes_written, 3500);
  assert_int_equal(st2.write_waits, 3);
  pfix_free(&x);
}

static void t_write_throttle_flow_control(void **st) {
  (void)st;
  braid_policy_options po = {0};
  po.write_rate = 1000;
  pfix x;
  pfix_init(&x, &po, NULL);
  x.inner.tmpl.send_on_made = 3500;
  x.inner.tmpl.high = 1500;
  x.inner.tmpl.low = 600;
  pfix_connect(&x, NULL, 0);
  flush_ok(x.sim);
  peer *s = x.inner.last;
  /* 2500 held back > 1500: paused. 1500 after a second: still paused.
   * 500 after two: resumed. */
  assert_string_equal(s->log, "MP");
  assert_int_equal(braid_clock_advance(x.r, BRAID_SEC(1)), 0);
  flush_ok(x.sim);
  assert_string_equal(s->log, "MP");
  assert_int_equal(braid_clock_advance(x.r, BRAID_SEC(1)), 0);
  flush_ok(x.sim);
  assert_string_equal(s->log, "MPR");
  assert_int_equal(braid_transport_write_queued(s->p.transport), 500);
  pfix_free(&x);
}

/* Read throttling: 1000 B/s, the client sends 5000 bytes at once, the
 * network delivers 500 at a time. */
static void t_read_throttle(void **st) {
  (void)st;
  braid_policy_options po = {0};
  po.read_rate = 1000;
  braid_iosim_options io = {0};
  io.chunk_min = io.chunk_max = 500;
  pfix x;
  pfix_init(&x, &po, &io);
  peer *c = pfix_connect(&x, NULL, 0);
  flush_ok(x.sim);
  peer *s = x.inner.last;
  char buf[5000];
  memset(buf, 'r', sizeof buf);
  assert_int_equal(braid_transport_write(tp(c), buf, sizeof buf), 0);
  /* 1000 of burst + one 500 read into debt; then 500 every half second. */
  size_t want = 1500;
  for (int step = 0; step <= 8; step++) {
    flush_ok(x.sim);
    if (s->ndata != want)
      fail_msg("at %d ms: %zu read, want %zu", step * 500, s->ndata, want);
    assert_int_equal(braid_clock_advance(x.r, BRAID_MSEC(499)), 0);
    flush_ok(x.sim);
    assert_int_equal(s->ndata, want); /* nothing early */
    assert_int_equal(braid_clock_advance(x.r, BRAID_MSEC(1)), 0);
    if (want < 5000)
      want += 500;
  }
  assert_int_equal(s->ndata, 5000);
  braid_policy_stats ps = pstats(&x);
  assert_int_equal(ps.read_pauses, 8);
  assert_int_equal(ps.bytes_read, 5000);
  pfix_free(&x);
}

/* The inner protocol's own pause wins over the end of a read throttle. */
static void t_read_throttle_respects_inner_pause(void **st) {
  (void)st;
  braid_policy_options po = {0};
  po.read_rate = 1000;
  braid_iosim_options io = {0};
  io.chunk_min = io.chunk_max = 1500;
  pfix x;
  pfix_init(&x, &po, &io);
  x.inner.tmpl.pause_on_data = 1;
  peer *c = pfix_connect(&x, NULL, 0);
  flush_ok(x.sim);
  peer *s = x.inner.last;
  char buf[3000];
  memset(buf, 'q', sizeof buf);
  assert_int_equal(braid_transport_write(tp(c), buf, sizeof buf), 0);
  flush_ok(x.sim);
  assert_int_equal(s->ndata, 1500); /* throttled (-500) and paused */
  assert_int_equal(braid_clock_advance(x.r, BRAID_SEC(2)), 0);
  flush_ok(x.sim);
  assert_int_equal(s->ndata, 1500); /* throttle over, still paused */
  assert_int_equal(braid_transport_resume_reading(s->p.transport), 0);
  flush_ok(x.sim);
  assert_int_equal(s->ndata, 3000);
  pfix_free(&x);
}

static void t_idle_timeout(void **st) {
  (void)st;
  braid_policy_options po = {0};
  po.idle_timeout = BRAID_SEC(5);
  pfix x;
  pfix_init(&x, &po, NULL);
  peer *c = pfix_connect(&x, NULL, 0);
  flush_ok(x.sim);
  peer *s = x.inner.last;
  /* A read at 2 s and a write at 6 s keep it open... */
  assert_int_equal(braid_clock_advance(x.r, BRAID_SEC(2)), 0);
  assert_int_equal(braid_transport_write(tp(c), "hi", 2), 0);
  flush_ok(x.sim);
  assert_int_equal(braid_clock_advance(x.r, BRAID_SEC(4)), 0);
  flush_ok(x.sim);
  assert_int_equal(s->lost, 0);
  assert_int_equal(braid_transport_write(s->p.transport, "yo", 2), 0);
  flush_ok(x.sim);
  /* ...until 11 s, five seconds after the write. */
  assert_int_equal(braid_clock_advance(x.r, BRAID_SEC(5) - 1), 0);
  flush_ok(x.sim);
  assert_int_equal(s->lost, 0);
  assert_int_equal(braid_clock_advance(x.r, 1), 0);
  flush_ok(x.sim);
  assert_int_equal(x.inner.lost, 1);
  assert_int_equal(c->lost_reason, BRAID_ECONNRESET);
  assert_int_equal(c->ndata, 2);
  assert_int_equal(pstats(&x).timed_out, 1);
  pfix_free(&x);
}

/* A protocol that is not half-close aware, behind the policy transport,
 * is closed on the end of input after its held-back bytes go out. */
static void t_eof_closes_after_flush(void **st) {
  (void)st;
  braid_policy_options po = {0};
  po.write_rate = 1000;
  pfix x;
  pfix_init(&x, &po, NULL);
  x.inner.tmpl.p.ops = &p_noeof_ops;
  x.inner.tmpl.send_on_made = 1500;
  peer *c = pfix_connect(&x, NULL, 0);
  flush_ok(x.sim);
  assert_int_equal(braid_transport_shutdown_write(tp(c)), 0);
  flush_ok(x.sim);
  assert_int_equal(c->ndata, 1000);
  assert_int_equal(x.inner.lost, 0);
  assert_int_equal(braid_clock_advance(x.r, BRAID_SEC(1)), 0);
  flush_ok(x.sim);
  assert_int_equal(c->ndata, 1500);
  assert_string_equal(c->log, "MDEL");
  assert_int_equal(x.inner.lost, 1);
  pfix_free(&x);
}

static void abort_visit(braid_protocol_t *p, braid_transport_t *t, void *arg) {
  (void)p;
  (*(int *)arg)++;
  assert_int_equal(braid_transport_abort(t), 0);
}

typedef struct donecount {
  int ok, fail, code;
} donecount;

static void done_cb(braid_deferred_t d, braid_result_t *res, void *arg) {
  (void)d;
  donecount *c = arg;
  if (braid_result_ok(res)) {
    c->ok++;
  } else {
    c->fail++;
    c->code = braid_failure_code(braid_result_failure(res));
    braid_result_set(res, NULL, NULL); /* handled */
  }
}

static void t_each_and_when_idle(void **st) {
  (void)st;
  braid_policy_options po = {0};
  po.idle_timeout = BRAID_SEC(60); /* wrapped */
  pfix x;
  pfix_init(&x, &po, NULL);
  donecount idle = {0, 0, 0};
  braid_deferred_t d;
  /* Idle at once when nothing is open. */
  assert_int_equal(braid_policy_factory_when_idle(x.pf, &d), 0);
  assert_int_equal(braid_deferred_add_both(d, done_cb, &idle), 0);
  assert_int_equal(idle.ok, 1);
  for (int i = 0; i < 3; i++)
    pfix_connect(&x, NULL, 0);
  flush_ok(x.sim);
  assert_int_equal(braid_policy_factory_when_idle(x.pf, &d), 0);
  assert_int_equal(braid_deferred_add_both(d, done_cb, &idle), 0);
  assert_int_equal(idle.ok, 1);
  int visited = 0;
  assert_int_equal(braid_policy_factory_each(x.pf, abort_visit, &visited), 0);
  assert_int_equal(visited, 3);
  assert_int_equal(idle.ok, 1);
  flush_ok(x.sim);
  assert_int_equal(idle.ok, 2);
  assert_int_equal(x.inner.lost, 3);
  for (int i = 0; i < 3; i++)
    assert_int_equal(x.clients[i].lost_reason, BRAID_ECONNRESET);
  visited = 0;
  assert_int_equal(braid_policy_factory_each(x.pf, abort_visit, &visited), 0);
  assert_int_equal(visited, 0);
  pfix_free(&x);
}

/* The factory keeps its when_idle deferred alive until it fires it: one
 * that the caller cancelled stays a live handle across turns (the late
 * fire is dropped) and goes at the end of the turn it is fired in. */
static void t_when_idle_held_until_fired(void **st) {
  (void)st;
  braid_policy_options po = {0};
  pfix x;
  pfix_init(&x, &po, NULL);
  pfix_connect(&x, NULL, 0);
  donecount idle = {0, 0, 0};
  braid_deferred_t d;
  assert_int_equal(braid_policy_factory_when_idle(x.pf, &d), 0);
  assert_int_equal(braid_deferred_add_both(d, done_cb, &idle), 0);
  assert_int_equal(braid_deferred_cancel(d), 0);
  assert_int_equal(idle.fail, 1);
  assert_int_equal(idle.code, BRAID_ECANCELED);
  braid_testing_flush(x.r, 10);
  assert_true(braid_deferred_alive(d));
  int visited = 0;
  assert_int_equal(braid_policy_factory_each(x.pf, abort_visit, &visited), 0);
  assert_int_equal(visited, 1);
  flush_ok(x.sim);
  braid_policy_stats ps;
  assert_int_equal(braid_policy_factory_stats(x.pf, &ps), 0);
  assert_int_equal(ps.open, 0);
  braid_testing_flush(x.r, 10);
  assert_false(braid_deferred_alive(d));
  assert_int_equal(idle.ok + idle.fail, 1);
  pfix_free(&x);
}

static void t_destroy_with_open_connections(void **st) {
  (void)st;
  braid_policy_options po = {0};
  po.write_rate = 100;
  pfix x;
  pfix_init(&x, &po, NULL);
  x.inner.tmpl.send_on_made = 250;
  x.inner.tmpl.close_after_send = 1;
  peer *c = pfix_connect(&x, NULL, 0);
  flush_ok(x.sim);
  donecount idle = {0, 0, 0};
  braid_deferred_t d;
  assert_int_equal(braid_policy_factory_when_idle(x.pf, &d), 0);
  assert_int_equal(braid_deferred_add_both(d, done_cb, &idle), 0);
  assert_int_equal(braid_policy_factory_destroy(x.pf), 0);
  assert_int_equal(idle.fail, 1);
  assert_int_equal(idle.code, BRAID_ECANCELED);
  /* The open connection goes on, throttled, to its end. */
  assert_int_equal(braid_clock_advance(x.r, BRAID_SEC(2)), 0);
  flush_ok(x.sim);
  assert_int_equal(c->ndata, 250);
  assert_int_equal(x.inner.lost, 1);
  assert_int_equal(braid_iosim_destroy(x.sim), 0);
  peer_free(c);
  assert_int_equal(braid_reactor_destroy(x.r), 0);
}

static void t_policy_bad_args(void **st) {
  (void)st;
  braid_reactor_t *r = mkreactor();
  pfactory inner;
  pfactory_init(&inner, r);
  braid_factory_t *f;
  braid_policy_options po = {0};
  assert_int_equal(braid_policy_factory_create(NULL, &inner.f, &po, &f),
                   BRAID_EINVAL);
  assert_int_equal(braid_policy_factory_create(r, NULL, &po, &f), BRAID_EINVAL);
  po.write_rate = BRAID_POLICY_RATE_MAX + 1;
  assert_int_equal(braid_policy_factory_create(r, &inner.f, &po, &f),
                   BRAID_EINVAL);
  po.write_rate = 0;
  po.read_burst = 10; /* a burst without a rate */
  assert_int_equal(braid_policy_factory_create(r, &inner.f, &po, &f),
                   BRAID_EINVAL);
  po.read_burst = 0;
  po.read_rate = BRAID_POLICY_RATE_MAX; /* the largest accepted */
  po.read_burst = BRAID_POLICY_RATE_MAX;
  assert_int_equal(braid_policy_factory_create(r, &inner.f, &po, &f), 0);
  braid_policy_stats s;
  assert_int_equal(braid_policy_factory_stats(&inner.f, &s), BRAID_EINVAL);
  assert_int_equal(braid_policy_factory_destroy(&inner.f), BRAID_EINVAL);
  assert_int_equal(braid_policy_factory_each(f, NULL, NULL), BRAID_EINVAL);
  assert_int_equal(braid_policy_factory_peer_count(&inner.f, NULL), 0);
  assert_int_equal(braid_policy_factory_destroy(f), 0);
  assert_int_equal(braid_policy_factory_destroy(NULL), 0);
  assert_int_equal(braid_reactor_destroy(r), 0);
}

/* ------------------------------------------------------------------------
 * The client service on the iosim
 * ------------------------------------------------------------------------ */

typedef struct csfix {
  braid_reactor_t *r;
  braid_iosim_t *sim;
  pfactory clients; /* builds the client protocols */
  pfactory servers; /* builds the server side, when listening */
  int listening;
  uint64_t attempt_at[32];
  int attempts;
  braid_iosim_conn_t *last_conn;
  braid_client_service_t *cs;
  int sync_error; /* connect_cb fails at once with this */
} csfix;

static int cs_connect(braid_reactor_t *r, braid_protocol_t *p, void *arg) {
  csfix *x = arg;
  if (x->attempts < 32)
    x->attempt_at[x->attempts] = braid_reactor_now(r);
  x->attempts++;
  if (x->sync_error)
    return x->sync_error;
  return braid_iosim_connect(x->sim, p, NULL,
                             x->listening ? &x->servers.f : NULL, NULL,
                             &x->last_conn);
}

static void csfix_init(csfix *x, braid_client_service_options *o,
                       const braid_iosim_options *io) {
  memset(x, 0, sizeof *x);
  x->r = mkreactor();
  assert_int_equal(braid_iosim_create(x->r, io, &x->sim), 0);
  pfactory_init(&x->clients, x->r);
  pfactory_init(&x->servers, x->r);
  x->clients.keep = 1;
  o->connect_cb = cs_connect;
  o->connect_arg = x;
  o->factory = &x->clients.f;
  char err[128];
  assert_int_equal(
      braid_client_service_create(x->r, o, &x->cs, err, sizeof err), 0);
}

static void csfix_free(csfix *x) {
  braid_client_service_destroy(x->cs);
  assert_int_equal(braid_iosim_destroy(x->sim), 0);
  assert_int_equal(x->clients.lost, x->clients.built);
  assert_int_equal(x->servers.lost, x->servers.built);
  pfactory_release(&x->clients);
  assert_int_equal(braid_reactor_destroy(x->r), 0);
}

static braid_client_service_stats csstats(csfix *x) {
  braid_client_service_stats s;
  assert_int_equal(braid_client_service_stats_get(x->cs, &s), 0);
  return s;
}

/* Flush, then move the clock to the next retry; n times. */
static void cs_steps(csfix *x, int n) {
  for (int i = 0; i < n; i++) {
    flush_ok(x->sim);
    uint64_t next = csstats(x).next_attempt;
    assert_true(next > braid_reactor_now(x->r));
    assert_int_equal(braid_clock_advance(x->r, next - braid_reactor_now(x->r)),
                     0);
  }
  flush_ok(x->sim);
}

static void t_cs_backoff(void **st) {
  (void)st;
  braid_client_service_options o = {0};
  o.initial_delay = BRAID_SEC(1);
  o.factor = 2.0;
  o.max_delay = BRAID_SEC(10);
  csfix x;
  csfix_init(&x, &o, NULL);
  assert_false(braid_client_service_running(x.cs));
  assert_int_equal(braid_client_service_start(x.cs), 0);
  assert_int_equal(braid_client_service_start(x.cs), BRAID_EALREADY);
  assert_true(braid_client_service_running(x.cs));
  cs_steps(&x, 6);
  /* 0, then +1, +2, +4, +8, +10 (capped), +10. */
  static const uint64_t want[] = {0, 1, 3, 7, 15, 25, 35};
  assert_int_equal(x.attempts, 7);
  for (int i = 0; i < 7; i++)
    assert_int_equal(x.attempt_at[i], BRAID_SEC(want[i]));
  braid_client_service_stats s = csstats(&x);
  assert_int_equal(s.failures, 7);
  assert_int_equal(s.attempts, 7);
  assert_int_equal(s.connections, 0);
  assert_int_equal(s.next_attempt, BRAID_SEC(45));
  /* Every failed attempt's protocol heard of it, without a connection. */
  assert_int_equal(x.clients.built, 7);
  assert_int_equal(x.clients.lost, 7);
  assert_string_equal(x.clients.last->log, "L");
  csfix_free(&x);
}

static void run_jitter(uint64_t seed, uint64_t *times) {
  braid_client_service_options o = {0};
  o.initial_delay = BRAID_SEC(1);
  o.factor = 2.0;
  o.max_delay = BRAID_SEC(4);
  o.jitter = BRAID_MSEC(500);
  o.seed = seed;
  csfix x;
  csfix_init(&x, &o, NULL);
  assert_int_equal(braid_client_service_start(x.cs), 0);
  cs_steps(&x, 5);
  memcpy(times, x.attempt_at, 6 * sizeof *times);
  csfix_free(&x);
}

static void t_cs_jitter_seeded(void **st) {
  (void)st;
  uint64_t a[6], b[6], c[6];
  run_jitter(1, a);
  run_jitter(1, b);
  assert_memory_equal(a, b, sizeof a);
  static const uint64_t base[] = {0, 1, 2, 4, 4, 4};
  int differ = 0;
  for (uint64_t seed = 2; seed < 6; seed++) {
    run_jitter(seed, c);
    differ += memcmp(a, c, sizeof a) != 0;
    for (int i = 1; i < 6; i++) {
      uint64_t d = c[i] - c[i - 1];
      assert_true(d >= BRAID_SEC(base[i]));
      assert_true(d <= BRAID_SEC(base[i]) + BRAID_MSEC(500));
    }
  }
  assert_true(differ > 0);
}

typedef struct whenrec {
  int ok, fail, code;
  braid_protocol_t *p;
} whenrec;

static void when_cb(braid_deferred_t d, braid_result_t *res, void *arg) {
  (void)d;
  whenrec *w = arg;
  if (braid_result_ok(res)) {
    w->ok++;
    w->p = braid_result_value(res);
  } else {
    w->fail++;
    w->code = braid_failure_code(braid_result_failure(res));
    braid_result_set(res, NULL, NULL);
  }
}

static void t_cs_reset_on_success(void **st) {
  (void)st;
  braid_client_service_options o = {0};
  o.initial_delay = BRAID_SEC(1);
  o.factor = 2.0;
  csfix x;
  csfix_init(&x, &o, NULL);
  whenrec w = {0, 0, 0, NULL};
  braid_deferred_t d;
  assert_int_equal(braid_client_service_when_connected(x.cs, 0, &d), 0);
  assert_int_equal(braid_deferred_add_both(d, when_cb, &w), 0);
  assert_int_equal(braid_client_service_start(x.cs), 0);
  cs_steps(&x, 2); /* attempts at 0, 1, 3 fail */
  assert_int_equal(w.ok + w.fail, 0);
  x.listening = 1;
  assert_int_equal(braid_clock_advance(x.r, BRAID_SEC(4)), 0); /* at 7 s */
  flush_ok(x.sim);
  assert_int_equal(x.attempt_at[3], BRAID_SEC(7));
  assert_int_equal(w.ok, 1);
  assert_ptr_equal(w.p, &x.clients.last->p);
  assert_ptr_equal(braid_client_service_protocol(x.cs), w.p);
  braid_client_service_stats s = csstats(&x);
  assert_int_equal(s.failures, 0);
  assert_int_equal(s.connections, 1);
  assert_int_equal(s.next_attempt, 0);
  /* Connected: when_connected fires at once. */
  whenrec w2 = {0, 0, 0, NULL};
  assert_int_equal(braid_client_service_when_connected(x.cs, 0, &d), 0);
  assert_int_equal(braid_deferred_add_both(d, when_cb, &w2), 0);
  assert_int_equal(w2.ok, 1);
  /* The connection drops at 10 s: the retry comes one initial delay later
   * (the backoff was reset), and connects. */
  assert_int_equal(braid_clock_advance(x.r, BRAID_SEC(3)), 0);
  assert_int_equal(braid_iosim_break(x.last_conn, BRAID_ECONNRESET), 0);
  assert_null(braid_client_service_protocol(x.cs));
  assert_int_equal(csstats(&x).next_attempt, BRAID_SEC(11));
  assert_int_equal(braid_clock_advance(x.r, BRAID_SEC(1)), 0);
  flush_ok(x.sim);
  assert_int_equal(x.attempts, 5);
  assert_int_equal(x.attempt_at[4], BRAID_SEC(11));
  assert_int_equal(csstats(&x).connections, 2);
  assert_non_null(braid_client_service_protocol(x.cs));
  csfix_free(&x);
}

static void t_cs_when_connected_fail_after(void **st) {
  (void)st;
  braid_client_service_options o = {0};
  csfix x;
  csfix_init(&x, &o, NULL);
  whenrec w1 = {0, 0, 0, NULL}, w2 = {0, 0, 0, NULL}, w0 = {0, 0, 0, NULL};
  braid_deferred_t d;
  assert_int_equal(braid_client_service_when_connected(x.cs, 1, &d), 0);
  assert_int_equal(braid_deferred_add_both(d, when_cb, &w1), 0);
  assert_int_equal(braid_client_service_when_connected(x.cs, 3, &d), 0);
  assert_int_equal(braid_deferred_add_both(d, when_cb, &w2), 0);
  assert_int_equal(braid_client_service_when_connected(x.cs, 0, &d), 0);
  assert_int_equal(braid_deferred_add_both(d, when_cb, &w0), 0);
  assert_int_equal(braid_client_service_start(x.cs), 0);
  flush_ok(x.sim);
  assert_int_equal(w1.fail, 1);
  assert_int_equal(w1.code, BRAID_ECONNREFUSED);
  assert_int_equal(w2.fail, 0);
  cs_steps(&x, 2);
  assert_int_equal(w2.fail, 1);
  assert_int_equal(w0.fail, 0);
  /* Stopping cancels the rest, and later ones fail at once. */
  braid_deferred_t stop;
  assert_int_equal(braid_client_service_stop(x.cs, 0, &stop), 0);
  assert_true(braid_deferred_called(stop));
  assert_int_equal(w0.fail, 1);
  assert_int_equal(w0.code, BRAID_ECANCELED);
  whenrec w3 = {0, 0, 0, NULL};
  assert_int_equal(braid_client_service_when_connected(x.cs, 0, &d), 0);
  assert_int_equal(braid_deferred_add_both(d, when_cb, &w3), 0);
  assert_int_equal(w3.fail, 1);
  /* Nothing more is tried. */
  assert_int_equal(csstats(&x).next_attempt, 0);
  int before = x.attempts;
  assert_int_equal(braid_clock_advance(x.r, BRAID_SEC(3600)), 0);
  flush_ok(x.sim);
  assert_int_equal(x.attempts, before);
  csfix_free(&x);
}

static void t_cs_sync_connect_error(void **st) {
  (void)st;
  braid_client_service_options o = {0};
  csfix x;
  csfix_init(&x, &o, NULL);
  x.sync_error = BRAID_ENOMEM;
  assert_int_equal(braid_client_service_start(x.cs), 0);
  /* The protocol heard of it as a failed connect; a retry is scheduled. */
  assert_int_equal(x.clients.lost, 1);
  assert_int_equal(x.clients.last->lost_reason, BRAID_ENOMEM);
  assert_int_equal(csstats(&x).failures, 1);
  assert_int_equal(csstats(&x).next_attempt, BRAID_SEC(1));
  x.sync_error = 0;
  x.listening = 1;
  assert_int_equal(braid_clock_advance(x.r, BRAID_SEC(1)), 0);
  flush_ok(x.sim);
  assert_int_equal(csstats(&x).connections, 1);
  csfix_free(&x);
}

static void t_cs_stop_graceful_then_abort(void **st) {
  (void)st;
  braid_client_service_options o = {0};
  braid_iosim_options io = {0};
  io.window = 1000;
  csfix x;
  csfix_init(&x, &o, &io);
  x.listening = 1;
  x.servers.tmpl.pause_on_data = 1; /* the server stops reading */
  assert_int_equal(braid_client_service_start(x.cs), 0);
  flush_ok(x.sim);
  peer *c = x.clients.last;
  char big[5000];
  memset(big, 'z', sizeof big);
  assert_int_equal(braid_transport_write(tp(c), big, sizeof big), 0);
  flush_ok(x.sim);
  /* Stop with 5 s of grace: the close waits for bytes the peer does not
   * read; at 5 s the connection is aborted and the stop completes. */
  donecount done = {0, 0, 0};
  braid_deferred_t d;
  assert_int_equal(braid_client_service_stop(x.cs, BRAID_SEC(5), &d), 0);
  assert_int_equal(braid_deferred_add_both(d, done_cb, &done), 0);
  assert_int_equal(braid_client_service_start(x.cs), BRAID_EBUSY);
  flush_ok(x.sim);
  assert_int_equal(done.ok, 0);
  assert_int_equal(braid_clock_advance(x.r, BRAID_SEC(5)), 0);
  flush_ok(x.sim);
  assert_int_equal(done.ok, 1);
  assert_int_equal(c->lost_reason, BRAID_ECONNABORTED);
  assert_int_equal(c->lost_at, BRAID_SEC(5));
  /* It can start again. */
  x.servers.tmpl.pause_on_data = 0;
  assert_int_equal(braid_client_service_start(x.cs), 0);
  flush_ok(x.sim);
  assert_int_equal(csstats(&x).connections, 2);
  /* A clean stop: closed at once, done when the close completes. */
  donecount done2 = {0, 0, 0};
  assert_int_equal(braid_client_service_stop(x.cs, BRAID_SEC(5), &d), 0);
  assert_int_equal(braid_deferred_add_both(d, done_cb, &done2), 0);
  flush_ok(x.sim);
  assert_int_equal(done2.ok, 1);
  assert_int_equal(x.clients.last->lost_reason, 0);
  assert_int_equal(braid_reactor_now(x.r), BRAID_SEC(5));
  csfix_free(&x);
}

/* The client service keeps its when_connected and stop deferreds alive
 * until it fires them, also after the caller cancelled them; then they go
 * at the end of that turn. */
static void t_cs_deferreds_held_until_fired(void **st) {
  (void)st;
  braid_client_service_options o = {0};
  braid_iosim_options io = {0};
  io.window = 1000;
  csfix x;
  csfix_init(&x, &o, &io);
  /* when_connected, cancelled while nothing listens. */
  whenrec w = {0, 0, 0, NULL};
  braid_deferred_t d;
  assert_int_equal(braid_client_service_when_connected(x.cs, 0, &d), 0);
  assert_int_equal(braid_deferred_add_both(d, when_cb, &w), 0);
  assert_int_equal(braid_deferred_cancel(d), 0);
  assert_int_equal(w.fail, 1);
  assert_int_equal(w.code, BRAID_ECANCELED);
  assert_int_equal(braid_client_service_start(x.cs), 0);
  flush_ok(x.sim);
  braid_testing_flush(x.r, 10);
  assert_int_equal(csstats(&x).failures, 1);
  assert_true(braid_deferred_alive(d));
  x.listening = 1;
  x.servers.tmpl.pause_on_data = 1; /* the server stops reading */
  assert_int_equal(braid_clock_advance(x.r, BRAID_SEC(1)), 0);
  flush_ok(x.sim);
  assert_int_equal(csstats(&x).connections, 1);
  braid_testing_flush(x.r, 10);
  assert_false(braid_deferred_alive(d));
  assert_int_equal(w.ok + w.fail, 1);
  /* stop, cancelled while the close waits for bytes the peer does not
   * read. */
  char big[5000];
  memset(big, 'z', sizeof big);
  assert_int_equal(braid_transport_write(tp(x.clients.last), big, sizeof big),
                   0);
  flush_ok(x.sim);
  donecount done = {0, 0, 0};
  assert_int_equal(braid_client_service_stop(x.cs, UINT64_MAX, &d), 0);
  assert_int_equal(braid_deferred_add_both(d, done_cb, &done), 0);
  assert_int_equal(braid_deferred_cancel(d), 0);
  assert_int_equal(done.fail, 1);
  assert_int_equal(braid_clock_advance(x.r, BRAID_SEC(10)), 0);
  flush_ok(x.sim);
  braid_testing_flush(x.r, 10);
  assert_true(braid_deferred_alive(d));
  assert_int_equal(braid_client_service_stop(x.cs, 0, NULL), 0);
  flush_ok(x.sim);
  assert_int_equal(x.clients.last->lost_reason, BRAID_ECONNABORTED);
  braid_testing_flush(x.r, 10);
  assert_false(braid_deferred_alive(d));
  assert_int_equal(done.ok + done.fail, 1);
  csfix_free(&x);
}

/* A when_connected errback that stops the service again, with a deferred
 * of its own. */
typedef struct restop {
  braid_client_service_t *cs;
  braid_deferred_t d;
  donecount done;
  int code;
} restop;

static void restop_cb(braid_deferred_t d, braid_result_t *res, void *arg) {
  (void)d;
  restop *x = arg;
  x->code =
      braid_result_ok(res) ? 0 : braid_failure_code(braid_result_failure(res));
  braid_result_set(res, NULL, NULL);
  assert_int_equal(braid_client_service_stop(x->cs, UINT64_MAX, &x->d), 0);
  assert_int_equal(braid_deferred_add_both(x->d, done_cb, &x->done), 0);
}

/* Stops made from the when_connected errbacks of a stop all complete,
 * with the outer one, when the connection ends; none takes the outer
 * stop's place in the list of stop deferreds. */
static void t_cs_stop_from_when_connected(void **st) {
  (void)st;
  braid_client_service_options o = {0};
  csfix x;
  csfix_init(&x, &o, NULL);
  x.listening = 1;
  /* While the attempt connects, these wait. */
  assert_int_equal(braid_client_service_start(x.cs), 0);
  restop rs[2];
  memset(rs, 0, sizeof rs);
  braid_deferred_t d;
  for (int i = 0; i < 2; i++) {
    rs[i].cs = x.cs;
    assert_int_equal(braid_client_service_when_connected(x.cs, 0, &d), 0);
    assert_int_equal(braid_deferred_add_both(d, restop_cb, &rs[i]), 0);
  }
  donecount done = {0, 0, 0};
  assert_int_equal(braid_client_service_stop(x.cs, UINT64_MAX, &d), 0);
  assert_int_equal(braid_deferred_add_both(d, done_cb, &done), 0);
  for (int i = 0; i < 2; i++) {
    assert_int_equal(rs[i].code, BRAID_ECANCELED);
    assert_int_equal(rs[i].done.ok, 0);
  }
  assert_int_equal(done.ok, 0);
  flush_ok(x.sim); /* connected, and aborted at once */
  assert_int_equal(x.clients.last->lost_reason, BRAID_ECONNABORTED);
  assert_int_equal(done.ok, 1);
  for (int i = 0; i < 2; i++)
    assert_int_equal(rs[i].done.ok, 1);
  csfix_free(&x);
}

static void t_cs_stop_while_connecting(void **st) {
  (void)st;
  braid_client_service_options o = {0};
  braid_iosim_options io = {0};
  io.delay_min = io.delay_max = BRAID_SEC(1);
  csfix x;
  csfix_init(&x, &o, &io);
  x.listening = 1;
  assert_int_equal(braid_client_service_start(x.cs), 0);
  donecount done = {0, 0, 0};
  braid_deferred_t d;
  assert_int_equal(braid_client_service_stop(x.cs, BRAID_SEC(30), &d), 0);
  assert_int_equal(braid_deferred_add_both(d, done_cb, &done), 0);
  assert_int_equal(done.ok, 0);
  flush_ok(x.sim);
  /* It connected at 1 s and was aborted then. */
  assert_int_equal(done.ok, 1);
  assert_string_equal(x.clients.last->log, "ML");
  assert_int_equal(x.clients.last->lost_reason, BRAID_ECONNABORTED);
  assert_int_equal(csstats(&x).connections, 0);
  assert_int_equal(x.attempts, 1);
  csfix_free(&x);
}

static void t_cs_destroy_connected(void **st) {
  (void)st;
  braid_client_service_options o = {0};
  csfix x;
  csfix_init(&x, &o, NULL);
  x.listening = 1;
  assert_int_equal(braid_client_service_start(x.cs), 0);
  flush_ok(x.sim);
  whenrec w = {0, 0, 0, NULL};
  braid_deferred_t d;
  assert_int_equal(braid_client_service_stop(x.cs, UINT64_MAX, &d), 0);
  assert_int_equal(braid_deferred_add_both(d, when_cb, &w), 0);
  peer *c = x.clients.last;
  /* Destroyed with the connection closing: aborted, the pending stop
   * fails, and the protocol still gets its connection_lost. */
  braid_client_service_destroy(x.cs);
  x.cs = NULL;
  assert_int_equal(w.fail, 1);
  assert_int_equal(w.code, BRAID_ECANCELED);
  flush_ok(x.sim);
  assert_int_equal(c->lost, 1);
  assert_int_equal(c->lost_reason, BRAID_ECONNABORTED);
  assert_int_equal(x.clients.lost, 1);
  csfix_free(&x);
}

static void t_cs_bad_args(void **st) {
  (void)st;
  braid_reactor_t *r = mkreactor();
  pfactory f;
  pfactory_init(&f, r);
  braid_client_service_t *cs;
  char err[200];
  braid_client_service_options o = {0};
  o.factory = &f.f;
  assert_int_equal(braid_client_service_create(r, &o, &cs, err, sizeof err),
                   BRAID_EINVAL); /* neither endpoint nor callback */
  assert_null(cs);
  o.endpoint = "tcp:host=:port=x";
  assert_int_equal(braid_client_service_create(r, &o, &cs, err, sizeof err),
                   BRAID_EINVAL);
  assert_true(strlen(err) > 0);
  o.endpoint = "tcp:127.0.0.1:9";
  o.factor = 0.5;
  assert_int_equal(braid_client_service_create(r, &o, &cs, err, sizeof err),
                   BRAID_EINVAL);
  o.factor = 0;
  o.factory = NULL;
  assert_int_equal(braid_client_service_create(r, &o, &cs, err, sizeof err),
                   BRAID_EINVAL);
  assert_int_equal(braid_client_service_start(NULL), BRAID_EINVAL);
  assert_int_equal(braid_client_service_stop(NULL, 0, NULL), BRAID_EINVAL);
  braid_client_service_destroy(NULL);
  assert_int_equal(braid_reactor_destroy(r), 0);
}

/* ------------------------------------------------------------------------
 * Over real TCP on 127.0.0.1 (the manual clock still drives the policy
 * timers; the loop runs for real I/O, bounded in real time)
 * ------------------------------------------------------------------------ */

static void nap(void) {
  struct timespec ts = {0, 1000000};
  nanosleep(&ts, NULL);
}

#define SPIN_UNTIL(r, cond)                                                    \
  do {                                                                         \
    uint64_t end_ = braid_hrtime() + BRAID_SEC(10);                            \
    while (!(cond) && braid_hrtime() < end_) {                                 \
      assert_true(braid_reactor_run_once((r), false) >= 0);                    \
      nap();                                                                   \
    }                                                                          \
    if (!(cond))                                                               \
      fail_msg("timed out waiting for %s (line %d)", #cond, __LINE__);         \
  } while (0)

/* Run the loop for about `ms` of real time. */
static void spin_for(braid_reactor_t *r, unsigned ms) {
  uint64_t end = braid_hrtime() + BRAID_MSEC(ms);
  while (braid_hrtime() < end) {
    assert_true(braid_reactor_run_once(r, false) >= 0);
    nap();
  }
}

static void t_tcp_policy(void **st) {
  (void)st;
  braid_reactor_t *r = mkreactor();
  pfactory inner;
  pfactory_init(&inner, r);
  inner.tmpl.send_on_made = 3000;
  inner.tmpl.close_after_send = 1;
  braid_policy_options po = {0};
  po.max_connections = 1;
  po.write_rate = 1000;
  braid_factory_t *pf;
  assert_int_equal(braid_policy_factory_create(r, &inner.f, &po, &pf), 0);
  braid_addr_t a;
  braid_addr_ip(&a, "127.0.0.1", 0);
  braid_listener_t *l;
  assert_int_equal(braid_listen(r, &a, NULL, pf, &l), 0);
  assert_int_equal(braid_listener_addr(l, &a), 0);
  peer c1, c2;
  peer_init(&c1, r);
  peer_init(&c2, r);
  c2.p.ops = &p_noeof_ops; /* closes on the end of input */
  assert_int_equal(braid_connect(r, &a, NULL, &c1.p), 0);
  SPIN_UNTIL(r, c1.ndata == 1000);
  /* The second connection is over the limit: closed at once. */
  assert_int_equal(braid_connect(r, &a, NULL, &c2.p), 0);
  SPIN_UNTIL(r, c2.lost == 1);
  assert_int_equal(c2.made, 1);
  assert_int_equal(c2.ndata, 0);
  assert_int_equal(c2.lost_reason, 0);
  /* The first gets nothing more until the (manual) clock moves. */
  spin_for(r, 50);
  assert_int_equal(c1.ndata, 1000);
  assert_int_equal(braid_clock_advance(r, BRAID_SEC(1)), 0);
  SPIN_UNTIL(r, c1.ndata == 2000);
  assert_int_equal(braid_clock_advance(r, BRAID_SEC(1)), 0);
  SPIN_UNTIL(r, c1.eofs == 1);
  assert_int_equal(c1.ndata, 3000);
  SPIN_UNTIL(r, inner.lost == 1);
  braid_policy_stats s;
  assert_int_equal(braid_policy_factory_stats(pf, &s), 0);
  assert_int_equal(s.refused_total, 1);
  assert_int_equal(s.bytes_written, 3000);
  assert_int_equal(s.open, 0);
  assert_int_equal(braid_listener_close(l), 0);
  assert_int_equal(braid_transport_close(tp(&c1)), 0);
  SPIN_UNTIL(r, c1.lost == 1);
  assert_int_equal(braid_policy_factory_destroy(pf), 0);
  peer_free(&c1);
  peer_free(&c2);
  assert_int_equal(braid_reactor_destroy(r), 0);
}

/* Read throttling and the idle timeout on a real stream: the debt a big
 * read leaves pauses the socket until the clock has paid it. */
static void t_tcp_read_throttle_idle(void **st) {
  (void)st;
  braid_reactor_t *r = mkreactor();
  pfactory inner;
  pfactory_init(&inner, r);
  inner.keep = 1;
  braid_policy_options po = {0};
  po.read_rate = 1000;
  po.idle_timeout = BRAID_SEC(30);
  braid_factory_t *pf;
  assert_int_equal(braid_policy_factory_create(r, &inner.f, &po, &pf), 0);
  braid_addr_t a;
  braid_addr_ip(&a, "127.0.0.1", 0);
  braid_listener_t *l;
  assert_int_equal(braid_listen(r, &a, NULL, pf, &l), 0);
  assert_int_equal(braid_listener_addr(l, &a), 0);
  peer c;
  peer_init(&c, r);
  assert_int_equal(braid_connect(r, &a, NULL, &c.p), 0);
  SPIN_UNTIL(r, c.made == 1 && inner.built == 1);
  peer *s = inner.kept[0];
  char buf[3000];
  memset(buf, 'x', sizeof buf);
  assert_int_equal(braid_transport_write(tp(&c), buf, sizeof buf), 0);
  /* However the kernel splits it, reading stops once the 1000-byte burst
   * is exceeded, so at least 1001 and at most all 3000 arrive. */
  SPIN_UNTIL(r, s->ndata > 1000);
  spin_for(r, 30);
  size_t first = s->ndata;
  braid_policy_stats ps;
  assert_int_equal(braid_policy_factory_stats(pf, &ps), 0);
  assert_int_equal(ps.read_pauses, 1);
  if (first < 3000) {
    /* The rest waits for the clock. */
    assert_int_equal(braid_clock_advance(r, BRAID_SEC(3)), 0);
    SPIN_UNTIL(r, s->ndata == 3000);
  }
  /* In debt now (the last read took more than the bucket held): new bytes
   * wait until the clock has paid it. */
  assert_int_equal(braid_transport_write(tp(&c), "late", 4), 0);
  spin_for(r, 30);
  assert_int_equal(s->ndata, 3000);
  assert_int_equal(braid_clock_advance(r, BRAID_SEC(2)), 0);
  SPIN_UNTIL(r, s->ndata == 3004);
  /* Then silence: the idle timeout aborts it 30 s after the last read. */
  assert_int_equal(braid_clock_advance(r, BRAID_SEC(30) - 1), 0);
  spin_for(r, 20);
  assert_int_equal(s->lost, 0);
  assert_int_equal(braid_clock_advance(r, 1), 0);
  SPIN_UNTIL(r, c.lost == 1 && s->lost == 1);
  assert_int_equal(s->lost_reason, BRAID_ECONNABORTED);
  assert_true(c.lost_reason < 0);
  assert_int_equal(braid_policy_factory_stats(pf, &ps), 0);
  assert_int_equal(ps.timed_out, 1);
  assert_int_equal(braid_listener_close(l), 0);
  assert_int_equal(braid_policy_factory_destroy(pf), 0);
  pfactory_release(&inner);
  peer_free(&c);
  assert_int_equal(braid_reactor_destroy(r), 0);
}

static void t_tcp_client_service(void **st) {
  (void)st;
  braid_reactor_t *r = mkreactor();
  /* A port that nobody listens on yet: bind one, note it, close it. */
  braid_addr_t a;
  braid_addr_ip(&a, "127.0.0.1", 0);
  pfactory servers;
  pfactory_init(&servers, r);
  servers.tmpl.p.ops = &p_noeof_ops; /* closes when the client does */
  braid_listener_t *l;
  assert_int_equal(braid_listen(r, &a, NULL, &servers.f, &l), 0);
  assert_int_equal(braid_listener_addr(l, &a), 0);
  assert_int_equal(braid_listener_close(l), 0);
  char desc[64];
  snprintf(desc, sizeof desc, "tcp:127.0.0.1:%u", braid_addr_port(&a));
  pfactory clients;
  pfactory_init(&clients, r);
  braid_client_service_options o = {0};
  o.endpoint = desc;
  o.factory = &clients.f;
  o.initial_delay = BRAID_SEC(2);
  braid_client_service_t *cs;
  char err[128];
  assert_int_equal(braid_client_service_create(r, &o, &cs, err, sizeof err), 0);
  whenrec w = {0, 0, 0, NULL};
  braid_deferred_t d;
  assert_int_equal(braid_client_service_when_connected(cs, 0, &d), 0);
  assert_int_equal(braid_deferred_add_both(d, when_cb, &w), 0);
  assert_int_equal(braid_client_service_start(cs), 0);
  /* Refused: a retry two (manual) seconds later. */
  SPIN_UNTIL(r, clients.lost == 1);
  assert_int_equal(clients.built, 1);
  braid_client_service_stats s;
  assert_int_equal(braid_client_service_stats_get(cs, &s), 0);
  assert_int_equal(s.failures, 1);
  assert_int_equal(s.next_attempt, BRAID_SEC(2));
  /* Listen again on that port, let the clock reach the retry. */
  braid_listen_options lo = {0};
  int rc = braid_listen(r, &a, &lo, &servers.f, &l);
  if (rc == BRAID_EADDRINUSE) {
    /* Someone took the port meanwhile: nothing to test here. */
    braid_client_service_destroy(cs);
    assert_int_equal(braid_reactor_destroy(r), 0);
    skip();
  }
  assert_int_equal(rc, 0);
  assert_int_equal(braid_clock_advance(r, BRAID_SEC(2)), 0);
  SPIN_UNTIL(r, w.ok == 1);
  assert_ptr_equal(w.p, &clients.last->p);
  SPIN_UNTIL(r, servers.built == 1);
  assert_int_equal(braid_client_service_stats_get(cs, &s), 0);
  assert_int_equal(s.connections, 1);
  assert_int_equal(s.failures, 0);
  /* Stop: closes the connection; done when it is gone. */
  donecount done = {0, 0, 0};
  assert_int_equal(braid_client_service_stop(cs, BRAID_SEC(5), &d), 0);
  assert_int_equal(braid_deferred_add_both(d, done_cb, &done), 0);
  SPIN_UNTIL(r, done.ok == 1);
  assert_int_equal(clients.lost, 2);
  SPIN_UNTIL(r, servers.lost == 1);
  assert_int_equal(braid_listener_close(l), 0);
  braid_client_service_destroy(cs);
  assert_int_equal(braid_reactor_destroy(r), 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(t_timeout_basic),
      cmocka_unit_test(t_timeout_reset_is_cheap_and_exact),
      cmocka_unit_test(t_timeout_in_protocol),
      cmocka_unit_test(t_limit_total),
      cmocka_unit_test(t_limit_per_peer),
      cmocka_unit_test(t_passthrough_without_rates),
      cmocka_unit_test(t_write_throttle),
      cmocka_unit_test(t_write_throttle_flow_control),
      cmocka_unit_test(t_read_throttle),
      cmocka_unit_test(t_read_throttle_respects_inner_pause),
      cmocka_unit_test(t_idle_timeout),
      cmocka_unit_test(t_eof_closes_after_flush),
      cmocka_unit_test(t_each_and_when_idle),
      cmocka_unit_test(t_when_idle_held_until_fired),
      cmocka_unit_test(t_destroy_with_open_connections),
      cmocka_unit_test(t_policy_bad_args),
      cmocka_unit_test(t_cs_backoff),
      cmocka_unit_test(t_cs_jitter_seeded),
      cmocka_unit_test(t_cs_reset_on_success),
      cmocka_unit_test(t_cs_when_connected_fail_after),
      cmocka_unit_test(t_cs_sync_connect_error),
      cmocka_unit_test(t_cs_stop_graceful_then_abort),
      cmocka_unit_test(t_cs_deferreds_held_until_fired),
      cmocka_unit_test(t_cs_stop_from_when_connected),
      cmocka_unit_test(t_cs_stop_while_connecting),
      cmocka_unit_test(t_cs_destroy_connected),
      cmocka_unit_test(t_cs_bad_args),
      cmocka_unit_test(t_tcp_policy),
      cmocka_unit_test(t_tcp_read_throttle_idle),
      cmocka_unit_test(t_tcp_client_service),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
