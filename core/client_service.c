/* The reconnecting client service (braid/policy.h), on public API only. */
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "braid/alloc.h"
#include "braid/endpoint.h"
#include "braid/policy.h"

/* splitmix64 (Steele, Lea, Flood 2014), as in core/iosim.c: the jitter
 * is reproducible from the seed, and every seed (0 included) starts
 * well. */
static uint64_t braid__cs_rand(uint64_t *state) {
  uint64_t z = (*state += UINT64_C(0x9e3779b97f4a7c15));
  z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
  z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
  return z ^ (z >> 31);
}

static uint64_t braid__cs_add_sat(uint64_t a, uint64_t b) {
  return a > UINT64_MAX - b ? UINT64_MAX : a + b;
}

/* ------------------------------------------------------------------------
 * The client service
 * ------------------------------------------------------------------------ */

typedef struct braid__cwait {
  braid_deferred_t d; /* referenced */
  unsigned fail_after;
} braid__cwait;

typedef struct braid__cattempt braid__cattempt;

struct braid_client_service {
  braid_reactor_t *r;
  braid_client_service_options o;
  char *endpoint; /* our copy */
  uint64_t rng;
  braid_timer_t retry, grace;
  braid__cattempt *cur; /* the attempt or connection, at most one */
  braid__cwait *waits;  /* when_connected */
  size_t nwaits, capwaits;
  braid_deferred_t *stops; /* stop deferreds, referenced */
  size_t nstops, capstops;
  braid_client_service_stats st;
  uint8_t running, stopping, started;
  /* User callbacks in progress (factory, protocol, deferreds): a destroy
   * from inside one only marks the service, which goes when they return. */
  unsigned busy;
  uint8_t doomed;
};

/* One attempt: `outer` is what the transport sees; the inner protocol gets
 * every callback as if it were connected directly. */
struct braid__cattempt {
  braid_protocol_t outer;
  braid_protocol_t *inner;
  braid_client_service_t *cs; /* NULL once the service was destroyed */
  braid_transport_t *t;
  uint8_t connected;
};

#define BRAID__CA(p)                                                           \
  ((braid__cattempt *)(void *)((char *)(p)-offsetof(braid__cattempt, outer)))

static void braid__cs_free(braid_client_service_t *cs) {
  braid_free(cs->endpoint);
  braid_free(cs->waits);
  braid_free(cs->stops);
  braid_free(cs);
}

static void braid__cs_leave(braid_client_service_t *cs) {
  if (--cs->busy == 0 && cs->doomed)
    braid__cs_free(cs);
}

/* Settle the when_connected deferreds: all with the protocol (p != NULL),
 * or those whose failure count is reached (all of them for code
 * BRAID_ECANCELED) with a failure. */
static void braid__cs_settle_waits(braid_client_service_t *cs,
                                   braid_protocol_t *p, int code) {
  braid__cwait *fire = cs->waits;
  size_t n = cs->nwaits, keep = 0;
  /* Take the list out: the callbacks may add new ones. */
  cs->waits = NULL;
  cs->nwaits = cs->capwaits = 0;
  for (size_t i = 0; i < n; i++) {
    braid__cwait w = fire[i];
    int go = p != NULL || code == BRAID_ECANCELED ||
             (w.fail_after != 0 && cs->st.failures >= w.fail_after);
    if (!go) {
      fire[keep++] = w;
      continue;
    }
    if (p != NULL)
      braid_deferred_callback(w.d, p, NULL);
    else
      braid_deferred_errback(w.d, braid_failure_new(cs->r, NULL, code, NULL,
                                                    "client service: %s",
                                                    braid_strerror(code)));
    braid_deferred_unref(w.d);
  }
  if (keep == 0) {
    braid_free(fire);
    return;
  }
  /* Put the rest back in front of any added meanwhile. */
  if (cs->nwaits > 0) {
    braid__cwait *all = braid_realloc(fire, (keep + cs->nwaits) * sizeof *all);
    if (all == NULL) {
      /* Cannot merge: fail the ones added meanwhile rather than lose them
       * (their deferreds would never fire). */
      for (size_t i = 0; i < cs->nwaits; i++) {
        braid_deferred_errback(cs->waits[i].d,
                               braid_failure_from_code(cs->r, BRAID_ENOMEM));
        braid_deferred_unref(cs->waits[i].d);
      }
      braid_free(cs->waits);
      cs->waits = fire;
      cs->nwaits = cs->capwaits = keep;
      return;
    }
    memcpy(all + keep, cs->waits, cs->nwaits * sizeof *all);
    braid_free(cs->waits);
    cs->waits = all;
    cs->nwaits += keep;
    cs->capwaits = cs->nwaits;
    return;
  }
  cs->waits = fire;
  cs->nwaits = keep;
  cs->capwaits = n;
}

static void braid__cs_fire_stops(braid_client_service_t *cs, int code) {
  braid_deferred_t *list = cs->stops;
  size_t n = cs->nstops;
  cs->stops = NULL;
  cs->nstops = cs->capstops = 0;
  for (size_t i = 0; i < n; i++) {
    if (code == 0)
      braid_deferred_callback(list[i], NULL, NULL);
    else
      braid_deferred_errback(list[i], braid_failure_from_code(cs->r, code));
    braid_deferred_unref(list[i]);
  }
  braid_free(list);
}

/* The delay before retry number n (n >= 1): initial * factor^(n-1), capped,
 * plus the jitter. Computed in double (the factor is one) and clamped. */
static uint64_t braid__cs_delay(braid_client_service_t *cs, unsigned n) {
  double d = (double)cs->o.initial_delay;
  double max = (double)cs->o.max_delay;
  for (unsigned i = 1; i < n && d < max; i++)
    d *= cs->o.factor;
  if (d > max)
    d = max;
  uint64_t delay = (uint64_t)d;
  if (cs->o.jitter != 0) {
    uint64_t j = cs->o.jitter == UINT64_MAX
                     ? braid__cs_rand(&cs->rng)
                     : braid__cs_rand(&cs->rng) % (cs->o.jitter + 1);
    delay = braid__cs_add_sat(delay, j);
  }
  return delay;
}

static void braid__cs_attempt(braid_client_service_t *cs);

static void braid__cs_retry_cb(braid_timer_t *t, void *arg) {
  (void)t;
  braid_client_service_t *cs = arg;
  cs->st.next_attempt = 0;
  cs->busy++;
  braid__cs_attempt(cs);
  braid__cs_leave(cs);
}

static void braid__cs_schedule(braid_client_service_t *cs) {
  if (!cs->running || cs->doomed)
    return;
  unsigned n = cs->st.failures > 0 ? cs->st.failures : 1;
  uint64_t delay = braid__cs_delay(cs, n);
  if (braid_timer_start(cs->r, &cs->retry, delay, braid__cs_retry_cb, cs) < 0) {
    braid_reactor_log(cs->r, BRAID_LOG_ERROR, "client-service",
                      "cannot schedule a reconnect: no memory; stopped");
    cs->running = 0;
    braid__cs_settle_waits(cs, NULL, BRAID_ECANCELED);
    return;
  }
  cs->st.next_attempt = braid_timer_deadline(&cs->retry);
}

/* An attempt failed with `code` (before connecting). */
static void braid__cs_failed(braid_client_service_t *cs, int code) {
  cs->st.failures++;
  braid__cs_settle_waits(cs, NULL, code);
  if (!cs->doomed)
    braid__cs_schedule(cs);
}

static void braid__ca_made(braid_protocol_t *p, braid_transport_t *t) {
  braid__cattempt *a = BRAID__CA(p);
  braid_client_service_t *cs = a->cs;
  a->t = t;
  a->connected = 1;
  braid_protocol_t *inner = a->inner;
  inner->transport = t;
  if (cs != NULL)
    cs->busy++;
  if (inner->ops->connection_made != NULL)
    inner->ops->connection_made(inner, t);
  if (cs == NULL || cs->doomed || cs->stopping || !cs->running) {
    /* Stopped (or destroyed) while this attempt was connecting. */
    braid_transport_abort(t);
  } else if (!braid_transport_closing(t)) {
    cs->st.failures = 0; /* a success resets the backoff */
    cs->st.connections++;
    braid__cs_settle_waits(cs, inner, 0);
  }
  if (cs != NULL)
    braid__cs_leave(cs);
}

static void braid__ca_data(braid_protocol_t *p, const void *data, size_t len) {
  braid_protocol_t *inner = BRAID__CA(p)->inner;
  if (inner->ops->data_received != NULL)
    inner->ops->data_received(inner, data, len);
}

static void braid__ca_eof(braid_protocol_t *p) {
  braid_protocol_t *inner = BRAID__CA(p)->inner;
  if (inner->ops->eof_received != NULL)
    inner->ops->eof_received(inner);
  else
    braid_transport_close(inner->transport); /* not half-close aware */
}

static void braid__ca_pause(braid_protocol_t *p) {
  braid_protocol_t *inner = BRAID__CA(p)->inner;
  if (inner->ops->pause_writing != NULL)
    inner->ops->pause_writing(inner);
}

static void braid__ca_resume(braid_protocol_t *p) {
  braid_protocol_t *inner = BRAID__CA(p)->inner;
  if (inner->ops->resume_writing != NULL)
    inner->ops->resume_writing(inner);
}

static void braid__ca_lost(braid_protocol_t *p, int reason) {
  braid__cattempt *a = BRAID__CA(p);
  braid_client_service_t *cs = a->cs;
  braid_protocol_t *inner = a->inner;
  int was_connected = a->connected;
  if (cs != NULL) {
    cs->busy++;
    if (cs->cur == a)
      cs->cur = NULL;
    if (braid_timer_active(&cs->grace))
      braid_timer_cancel(&cs->grace);
  }
  braid_free(a);
  if (inner->ops->connection_lost != NULL)
    inner->ops->connection_lost(inner, reason);
  if (cs == NULL)
    return;
  if (!cs->doomed) {
    if (cs->stopping) {
      cs->stopping = 0;
      braid__cs_fire_stops(cs, 0);
    } else if (!was_connected) {
      braid__cs_failed(cs, reason < 0 ? reason : BRAID_ECONNREFUSED);
    } else {
      braid__cs_schedule(cs);
    }
  }
  braid__cs_leave(cs);
}

static const braid_protocol_ops braid__ca_ops = {
    .connection_made = braid__ca_made,
    .data_received = braid__ca_data,
    .eof_received = braid__ca_eof,
    .connection_lost = braid__ca_lost,
    .pause_writing = braid__ca_pause,
    .resume_writing = braid__ca_resume,
};

/* Build a protocol and start connecting it. Called with cs->busy held. */
static void braid__cs_attempt(braid_client_service_t *cs) {
  if (!cs->running || cs->doomed || cs->cur != NULL)
    return;
  cs->st.attempts++;
  braid_addr_t unspecified;
  memset(&unspecified, 0, sizeof unspecified);
  braid__cattempt *a = braid_calloc(1, sizeof *a);
  if (a == NULL) {
    braid__cs_failed(cs, BRAID_ENOMEM);
    return;
  }
  braid_protocol_t *inner = cs->o.factory->build(cs->o.factory, &unspecified);
  if (inner == NULL) {
    braid_free(a);
    braid__cs_failed(cs, BRAID_ECONNREFUSED);
    return;
  }
  if (cs->doomed || !cs->running) {
    /* The factory stopped or destroyed the service: this protocol never
     * connects, and hears so as a failed connect would tell it. */
    braid_free(a);
    inner->transport = NULL;
    if (inner->ops->connection_lost != NULL)
      inner->ops->connection_lost(inner, BRAID_ECANCELED);
    return;
  }
  a->outer.ops = &braid__ca_ops;
  a->inner = inner;
  a->cs = cs;
  cs->cur = a;
  int rc;
  char err[256] = "";
  if (cs->endpoint != NULL)
    rc =
        braid_endpoint_connect(cs->r, cs->endpoint, &a->outer, err, sizeof err);
  else
    rc = cs->o.connect_cb(cs->r, &a->outer, cs->o.connect_arg);
  if (rc == 0)
    return; /* the attempt reports through its callbacks */
  /* Refused at once, without a callback: tell the protocol as a failed
   * connect would, and count a failure. */
  braid_reactor_log(cs->r, BRAID_LOG_WARN, "client-service",
                    "connect failed at once: %s%s%s", braid_strerror(rc),
                    err[0] ? ": " : "", err);
  cs->cur = NULL;
  braid_free(a);
  inner->transport = NULL;
  if (inner->ops->connection_lost != NULL)
    inner->ops->connection_lost(inner, rc);
  if (!cs->doomed)
    braid__cs_failed(cs, rc);
}

int braid_client_service_create(braid_reactor_t *r,
                                const braid_client_service_options *opts,
                                braid_client_service_t **out, char *err,
                                size_t errlen) {
  if (out != NULL)
    *out = NULL;
  if (err != NULL && errlen > 0)
    err[0] = '\0';
  if (r == NULL || opts == NULL || out == NULL || opts->factory == NULL ||
      opts->factory->build == NULL ||
      (opts->endpoint == NULL) == (opts->connect_cb == NULL) ||
      !(opts->factor == 0 || opts->factor >= 1.0)) {
    if (err != NULL && errlen > 0)
      snprintf(err, errlen,
               "client service: need a factory, and either an "
               "endpoint or a connect callback; factor >= 1");
    return BRAID_EINVAL;
  }
  if (opts->endpoint != NULL) {
    braid_endpoint_t ep;
    int rc = braid_endpoint_parse(&ep, opts->endpoint, false, err, errlen);
    if (rc < 0)
      return rc;
  }
  braid_client_service_t *cs = braid_calloc(1, sizeof *cs);
  if (cs == NULL)
    return BRAID_ENOMEM;
  cs->r = r;
  cs->o = *opts;
  if (opts->endpoint != NULL) {
    size_t n = strlen(opts->endpoint) + 1;
    cs->endpoint = braid_malloc(n);
    if (cs->endpoint == NULL) {
      braid_free(cs);
      return BRAID_ENOMEM;
    }
    memcpy(cs->endpoint, opts->endpoint, n);
  }
  cs->o.endpoint = cs->endpoint;
  if (cs->o.initial_delay == 0)
    cs->o.initial_delay = BRAID_SEC(1);
  if (cs->o.factor == 0)
    cs->o.factor = 1.5;
  if (cs->o.max_delay == 0)
    cs->o.max_delay = BRAID_SEC(60);
  if (cs->o.max_delay < cs->o.initial_delay)
    cs->o.max_delay = cs->o.initial_delay;
  cs->rng = cs->o.seed;
  *out = cs;
  return 0;
}

int braid_client_service_start(braid_client_service_t *cs) {
  if (cs == NULL || cs->doomed)
    return BRAID_EINVAL;
  if (cs->running)
    return BRAID_EALREADY;
  if (cs->stopping)
    return BRAID_EBUSY;
  cs->running = 1;
  cs->started = 1;
  cs->st.failures = 0;
  cs->busy++;
  braid__cs_attempt(cs);
  braid__cs_leave(cs);
  return 0;
}

static void braid__cs_grace_cb(braid_timer_t *t, void *arg) {
  (void)t;
  braid_client_service_t *cs = arg;
  if (cs->cur != NULL && cs->cur->connected)
    braid_transport_abort(cs->cur->t);
}

/* Room for one more stop deferred. */
static int braid__cs_stops_room(braid_client_service_t *cs) {
  if (cs->nstops < cs->capstops)
    return 0;
  size_t cap = cs->capstops ? cs->capstops * 2 : 2;
  braid_deferred_t *n = braid_realloc(cs->stops, cap * sizeof *n);
  if (n == NULL)
    return BRAID_ENOMEM;
  cs->stops = n;
  cs->capstops = cap;
  return 0;
}

int braid_client_service_stop(braid_client_service_t *cs, uint64_t grace,
                              braid_deferred_t *out) {
  if (out != NULL)
    *out = braid_deferred_none();
  if (cs == NULL || cs->doomed)
    return BRAID_EINVAL;
  braid_deferred_t d = BRAID_DEFERRED_INIT;
  if (out != NULL) {
    /* Room first, so that running out of memory is an error return in
     * the usual case rather than a deferred that fails. */
    if (braid__cs_stops_room(cs) < 0)
      return BRAID_ENOMEM;
    int rc = braid_deferred_new(cs->r, &d);
    if (rc < 0)
      return rc;
    *out = d;
  }
  cs->busy++;
  cs->running = 0;
  if (braid_timer_active(&cs->retry))
    braid_timer_cancel(&cs->retry);
  cs->st.next_attempt = 0;
  braid__cs_settle_waits(cs, NULL, BRAID_ECANCELED);
  if (cs->doomed) {
    /* A when_connected callback destroyed the service. */
    if (!braid_deferred_is_none(d))
      braid_deferred_callback(d, NULL, NULL);
  } else if (cs->cur == NULL) {
    cs->stopping = 0;
    if (!braid_deferred_is_none(d))
      braid_deferred_callback(d, NULL, NULL);
  } else {
    cs->stopping = 1;
    if (!braid_deferred_is_none(d)) {
      /* The when_connected callbacks above may have stopped the service
       * again, with deferreds of their own, and used up the room made
       * for this one. */
      if (braid__cs_stops_room(cs) < 0) {
        braid_deferred_errback(d, braid_failure_from_code(cs->r, BRAID_ENOMEM));
      } else {
        braid_deferred_ref(d);
        cs->stops[cs->nstops++] = d;
      }
    }
    braid__cattempt *a = cs->cur;
    if (a->connected) {
      if (grace == 0) {
        braid_transport_abort(a->t);
      } else {
        braid_transport_close(a->t);
        if (grace != UINT64_MAX && !braid_timer_active(&cs->grace))
          braid_timer_start(cs->r, &cs->grace, grace, braid__cs_grace_cb, cs);
      }
    }
    /* Still connecting: made aborts it. */
  }
  braid__cs_leave(cs);
  return 0;
}

int braid_client_service_when_connected(braid_client_service_t *cs,
                                        unsigned fail_after,
                                        braid_deferred_t *out) {
  if (out != NULL)
    *out = braid_deferred_none();
  if (cs == NULL || out == NULL || cs->doomed)
    return BRAID_EINVAL;
  if (cs->nwaits == cs->capwaits) {
    size_t cap = cs->capwaits ? cs->capwaits * 2 : 4;
    braid__cwait *n = braid_realloc(cs->waits, cap * sizeof *n);
    if (n == NULL)
      return BRAID_ENOMEM;
    cs->waits = n;
    cs->capwaits = cap;
  }
  braid_deferred_t d;
  int rc = braid_deferred_new(cs->r, &d);
  if (rc < 0)
    return rc;
  *out = d;
  braid__cattempt *a = cs->cur;
  if (a != NULL && a->connected && !braid_transport_closing(a->t) &&
      cs->running) {
    braid_deferred_callback(d, a->inner, NULL);
    return 0;
  }
  if (cs->started && !cs->running) {
    braid_deferred_errback(d, braid_failure_from_code(cs->r, BRAID_ECANCELED));
    return 0;
  }
  braid_deferred_ref(d);
  cs->waits[cs->nwaits].d = d;
  cs->waits[cs->nwaits++].fail_after = fail_after;
  return 0;
}

braid_protocol_t *braid_client_service_protocol(braid_client_service_t *cs) {
  if (cs == NULL || cs->cur == NULL || !cs->cur->connected)
    return NULL;
  return cs->cur->inner;
}

bool braid_client_service_running(const braid_client_service_t *cs) {
  return cs != NULL && cs->running;
}

int braid_client_service_stats_get(const braid_client_service_t *cs,
                                   braid_client_service_stats *out) {
  if (cs == NULL || out == NULL)
    return BRAID_EINVAL;
  *out = cs->st;
  return 0;
}

void braid_client_service_destroy(braid_client_service_t *cs) {
  if (cs == NULL || cs->doomed)
    return;
  cs->busy++;
  cs->doomed = 1;
  cs->running = 0;
  if (braid_timer_active(&cs->retry))
    braid_timer_cancel(&cs->retry);
  if (braid_timer_active(&cs->grace))
    braid_timer_cancel(&cs->grace);
  braid__cattempt *a = cs->cur;
  cs->cur = NULL;
  if (a != NULL) {
    /* The attempt outlives the service: it frees itself in its
     * connection_lost. */
    a->cs = NULL;
    if (a->connected)
      braid_transport_abort(a->t);
  }
  braid__cs_settle_waits(cs, NULL, BRAID_ECANCELED);
  braid__cs_fire_stops(cs, BRAID_ECANCELED);
  braid__cs_leave(cs);
}
