/* The memory transport: a braid_transport backed by buffers the test drives
 * by hand (see braid/testing.h for the contract). It is written against the
 * public implementation interface only (braid/transport_impl.h), like any
 * module's transport would be, so argument checks, state bits and
 * flow-control marks come from core/transport.c unchanged, and this file
 * shows that interface is enough.
 *
 * Re-entrancy: protocol callbacks may call back into the transport (write,
 * close, pause/resume) and test code inside those callbacks may call the
 * driving functions. Every driving function therefore only records what
 * happened and runs braid__mem_pump() when the outermost one returns; the
 * pump delivers buffered input, EOF and connection_lost in a loop until
 * nothing more can happen. */
#include <stdint.h>
#include <string.h>

#include "braid/alloc.h"
#include "braid/error.h"
#include "braid/log.h"
#include "braid/testing.h"
#include "braid/transport_impl.h"

/* One write made while the consumer was blocked. Copied bytes live right
 * after the header; an owned write points at the caller's memory. */
typedef struct braid__mchunk {
  struct braid__mchunk *next;
  char *data;
  size_t off, len;
  braid_release_cb release;
  void *rarg;
} braid__mchunk;

struct braid_memory_transport {
  braid_transport_t t;
  braid_teardown_t h; /* reactor destruction ends the connection */
  braid_timer_t kick; /* runs the pump for events caused outside drivers */
  braid__mchunk *head, *tail; /* queued output while the consumer is blocked */
  char *val;                  /* the value buffer */
  size_t val_len, val_cap;
  char *in; /* fed while reading was paused */
  size_t in_len, in_cap;
  braid_addr_t local, peer;
  int reason;     /* for connection_lost */
  unsigned depth; /* driving functions and callbacks on the stack */
  uint8_t blocked, lost, lose_pending, eof_fed, eof_done, orphaned, aborted;
};

#define BRAID__M(tp) BRAID_CONTAINER_OF(tp, braid_memory_transport_t, t)

static unsigned braid__mem_state(const braid_memory_transport_t *mt) {
  return braid_transport_impl_state(&mt->t);
}

static void braid__mem_pump(braid_memory_transport_t *mt);

/* ------------------------------------------------------------------------
 * Buffers
 * ------------------------------------------------------------------------ */

static int braid__grow(char **buf, size_t *cap, size_t need) {
  if (need <= *cap)
    return 0;
  size_t ncap = *cap ? *cap : 256;
  while (ncap < need) {
    if (ncap > SIZE_MAX / 2)
      return BRAID_ENOMEM;
    ncap *= 2;
  }
  char *n = braid_realloc(*buf, ncap);
  if (n == NULL)
    return BRAID_ENOMEM;
  *buf = n;
  *cap = ncap;
  return 0;
}

static int braid__val_append(braid_memory_transport_t *mt, const void *data,
                             size_t len) {
  if (len == 0)
    return 0;
  if (mt->val_len + len < mt->val_len)
    return BRAID_ENOMEM;
  int rc = braid__grow(&mt->val, &mt->val_cap, mt->val_len + len);
  if (rc < 0)
    return rc;
  memcpy(mt->val + mt->val_len, data, len);
  mt->val_len += len;
  return 0;
}

/* Drop every queued write, releasing owned memory: the bytes never reach
 * the peer. */
static void braid__mem_drop_queue(braid_memory_transport_t *mt) {
  braid__mchunk *c = mt->head;
  mt->head = mt->tail = NULL;
  braid_transport_impl_set_queued(&mt->t, 0);
  while (c != NULL) {
    braid__mchunk *next = c->next;
    if (c->release != NULL)
      c->release(c->data, c->rarg);
    braid_free(c);
    c = next;
  }
}

/* Move up to `max` queued bytes into the value buffer. */
static ptrdiff_t braid__mem_move(braid_memory_transport_t *mt, size_t max) {
  size_t moved = 0;
  while (mt->head != NULL && moved < max) {
    braid__mchunk *c = mt->head;
    size_t take = c->len - c->off;
    if (take > max - moved)
      take = max - moved;
    int rc = braid__val_append(mt, c->data + c->off, take);
    if (rc < 0)
      return moved > 0 ? (ptrdiff_t)moved : rc;
    c->off += take;
    moved += take;
    braid_transport_impl_set_queued(
        &mt->t, braid_transport_write_queued(&mt->t) - take);
    if (c->off == c->len) {
      mt->head = c->next;
      if (mt->head == NULL)
        mt->tail = NULL;
      if (c->release != NULL)
        c->release(c->data, c->rarg);
      braid_free(c);
    }
  }
  return (ptrdiff_t)moved;
}

/* ------------------------------------------------------------------------
 * Ending the connection
 * ------------------------------------------------------------------------ */

static void braid__mem_finish(braid_memory_transport_t *mt, int reason) {
  if (mt->lost)
    return;
  mt->lost = 1;
  mt->reason = reason;
  braid_transport_impl_fail(&mt->t);
  braid__mem_drop_queue(mt);
  if (!mt->orphaned && braid_timer_active(&mt->kick))
    braid_timer_cancel(&mt->kick);
  if (!mt->orphaned) {
    braid_teardown_remove(&mt->h);
    mt->orphaned = 1; /* nothing left to do on the reactor */
  }
  mt->depth++;
  braid_transport_deliver_lost(&mt->t, reason);
  mt->depth--;
}

/* Reactor destruction with the connection still up. */
static void braid__mem_abort_h(braid_teardown_t *h) {
  braid_memory_transport_t *mt =
      BRAID_CONTAINER_OF(h, braid_memory_transport_t, h);
  /* The reactor already unlinked h; finish must not unlink it again. */
  if (braid_timer_active(&mt->kick))
    braid_timer_cancel(&mt->kick);
  mt->orphaned = 1;
  braid__mem_finish(mt, BRAID_ECONNABORTED);
}

/* ------------------------------------------------------------------------
 * The pump
 * ------------------------------------------------------------------------ */

static int braid__mem_may_read(const braid_memory_transport_t *mt) {
  return !mt->lost && braid_transport_impl_reading(&mt->t);
}

static void braid__mem_pump(braid_memory_transport_t *mt) {
  mt->depth++;
  while (!mt->lost) {
    /* The deliveries read the protocol at every step: a callback may hand
     * the connection to another one (STARTTLS puts the TLS layer there,
     * braid/tls.h). */
    unsigned st = braid__mem_state(mt);
    if (mt->lose_pending) {
      braid__mem_finish(mt, mt->reason);
      break;
    }
    if (mt->aborted) {
      braid__mem_finish(mt, BRAID_ECONNABORTED);
      break;
    }
    if (mt->in_len > 0 && braid__mem_may_read(mt)) {
      /* Detach the buffer first: data_received may feed more (from test
       * code in a callback), which must not move the bytes it reads. */
      char *buf = mt->in;
      size_t len = mt->in_len;
      mt->in = NULL;
      mt->in_len = mt->in_cap = 0;
      braid_transport_deliver_data(&mt->t, buf, len);
      braid_free(buf);
      continue;
    }
    if (mt->eof_fed && !mt->eof_done && mt->in_len == 0 &&
        braid__mem_may_read(mt)) {
      mt->eof_done = 1;
      /* A protocol without eof_received, or one that shut down writing
       * too, is closed by core: the CLOSING case below finishes it. */
      braid_transport_deliver_eof(&mt->t);
      continue;
    }
    if (mt->head == NULL &&
        ((st & BRAID_TRANSPORT_CLOSING) ||
         ((st & BRAID_TRANSPORT_WRITE_SHUT) && (st & BRAID_TRANSPORT_EOF)))) {
      /* Everything was flushed, or both directions are shut. */
      braid__mem_finish(mt, 0);
      break;
    }
    break;
  }
  mt->depth--;
}

static void braid__mem_kick_cb(braid_timer_t *t, void *arg) {
  (void)t;
  braid__mem_pump(arg);
}

/* Something happened that the pump must look at. Inside a driving
 * function the pump runs when it returns; outside, on the next turn of
 * the reactor, so the protocol never sees callbacks nest inside its own
 * calls. */
static void braid__mem_schedule(braid_memory_transport_t *mt) {
  if (mt->depth > 0 || mt->lost || mt->orphaned ||
      braid_timer_active(&mt->kick))
    return;
  braid_reactor_t *r = braid_transport_reactor(&mt->t);
  if (braid_timer_start(r, &mt->kick, 0, braid__mem_kick_cb, mt) < 0)
    braid_reactor_log(r, BRAID_LOG_ERROR, "memtransport",
                      "cannot schedule deferred events");
}

/* Driving functions bracket their work with enter/leave. */
static void braid__mem_enter(braid_memory_transport_t *mt) {
  mt->depth++;
}

static void braid__mem_leave(braid_memory_transport_t *mt) {
  if (--mt->depth == 0)
    braid__mem_pump(mt);
}

/* ------------------------------------------------------------------------
 * The vtable
 * ------------------------------------------------------------------------ */

static int braid__mem_write(braid_transport_t *t, const braid_iovec_t *iov,
                            size_t n, braid_release_cb release, void *arg) {
  braid_memory_transport_t *mt = BRAID__M(t);
  size_t total = 0;
  for (size_t i = 0; i < n; i++)
    total += iov[i].len;
  if (mt->lost) {
    if (release != NULL)
      release((void *)iov[0].base, arg);
    return 0;
  }
  if (!mt->blocked && mt->head == NULL) {
    size_t old = mt->val_len;
    for (size_t i = 0; i < n; i++) {
      int rc = braid__val_append(mt, iov[i].base, iov[i].len);
      if (rc < 0) {
        mt->val_len = old; /* all or nothing, as the error return says */
        return rc;
      }
    }
    if (release != NULL)
      release((void *)iov[0].base, arg);
    return 0;
  }
  braid__mchunk *c;
  if (release != NULL) {
    c = braid_malloc(sizeof *c);
    if (c == NULL)
      return BRAID_ENOMEM;
    c->data = (char *)iov[0].base;
    c->release = release;
    c->rarg = arg;
  } else {
    c = braid_malloc(sizeof *c + total);
    if (c == NULL)
      return BRAID_ENOMEM;
    c->data = (char *)(c + 1);
    size_t off = 0;
    for (size_t i = 0; i < n; i++) {
      if (iov[i].len > 0)
        memcpy(c->data + off, iov[i].base, iov[i].len);
      off += iov[i].len;
    }
    c->release = NULL;
    c->rarg = NULL;
  }
  c->next = NULL;
  c->off = 0;
  c->len = total;
  if (mt->tail != NULL)
    mt->tail->next = c;
  else
    mt->head = c;
  mt->tail = c;
  braid_transport_impl_set_queued(t, braid_transport_write_queued(t) + total);
  return 0;
}

static int braid__mem_close(braid_transport_t *t, int how) {
  braid_memory_transport_t *mt = BRAID__M(t);
  if (mt->lost)
    return 0;
  if (how == BRAID_TRANSPORT_ABORT) {
    mt->aborted = 1;
    braid__mem_drop_queue(mt);
  }
  braid__mem_schedule(mt);
  return 0;
}

static int braid__mem_set_reading(braid_transport_t *t, int on) {
  braid_memory_transport_t *mt = BRAID__M(t);
  if (on && (mt->in_len > 0 || (mt->eof_fed && !mt->eof_done)))
    braid__mem_schedule(mt);
  return 0;
}

static int braid__mem_addr(braid_transport_t *t, int peer, braid_addr_t *out) {
  braid_memory_transport_t *mt = BRAID__M(t);
  if (mt->lost)
    return BRAID_ECLOSED;
  *out = peer ? mt->peer : mt->local;
  return 0;
}

/* The memory transport pretends to be TCP: socket options succeed and do
 * nothing, so protocols that set them run unchanged under test. */
static int braid__mem_sockopt(braid_transport_t *t, int opt, int on,
                              unsigned value) {
  (void)opt;
  (void)on;
  (void)value;
  return BRAID__M(t)->lost ? BRAID_ECLOSED : 0;
}

static const braid_transport_vt braid__mem_vt = {
    .write = braid__mem_write,
    .close = braid__mem_close,
    .set_reading = braid__mem_set_reading,
    .addr = braid__mem_addr,
    .sockopt = braid__mem_sockopt,
};

/* ------------------------------------------------------------------------
 * The test-facing API
 * ------------------------------------------------------------------------ */

int braid_memory_transport_create(braid_reactor_t *r, braid_protocol_t *p,
                                  braid_memory_transport_t **out) {
  return braid_memory_transport_create_ex(r, p, NULL, out);
}

int braid_memory_transport_create_ex(braid_reactor_t *r, braid_protocol_t *p,
                                     const braid_memory_transport_options *opts,
                                     braid_memory_transport_t **out) {
  if (r == NULL || p == NULL || p->ops == NULL || out == NULL)
    return BRAID_EINVAL;
  *out = NULL;
  braid_memory_transport_t *mt = braid_calloc(1, sizeof *mt);
  if (mt == NULL)
    return BRAID_ENOMEM;
  braid_transport_init(&mt->t, &braid__mem_vt, r, p);
  braid_addr_ip(&mt->local, "10.0.0.1", 12345);
  braid_addr_ip(&mt->peer, "192.168.1.1", 54321);
  if (opts != NULL) {
    if (opts->local != NULL)
      mt->local = *opts->local;
    if (opts->peer != NULL)
      mt->peer = *opts->peer;
    mt->blocked = opts->consumer_blocked;
  }
  braid_teardown_add(r, &mt->h, braid__mem_abort_h);
  *out = mt;
  braid__mem_enter(mt);
  braid_transport_deliver_made(&mt->t);
  braid__mem_leave(mt);
  return 0;
}

int braid_memory_transport_destroy(braid_memory_transport_t *mt) {
  if (mt == NULL)
    return 0;
  if (mt->depth > 0)
    return BRAID_EBUSY;
  braid__mem_finish(mt, BRAID_ECONNABORTED);
  braid__mem_drop_queue(mt);
  braid_free(mt->val);
  braid_free(mt->in);
  braid_free(mt);
  return 0;
}

braid_transport_t *
braid_memory_transport_transport(braid_memory_transport_t *mt) {
  return mt != NULL ? &mt->t : NULL;
}

int braid_memory_transport_run_pending(braid_memory_transport_t *mt) {
  if (mt == NULL)
    return BRAID_EINVAL;
  if (mt->depth > 0)
    return BRAID_EBUSY;
  if (mt->lost || mt->orphaned || !braid_timer_active(&mt->kick))
    return 0;
  braid_timer_cancel(&mt->kick);
  braid__mem_pump(mt);
  return 0;
}

int braid_memory_transport_feed(braid_memory_transport_t *mt, const void *data,
                                size_t len) {
  if (mt == NULL || (data == NULL && len > 0))
    return BRAID_EINVAL;
  if (mt->lost || mt->eof_fed ||
      (braid__mem_state(mt) & (BRAID_TRANSPORT_CLOSING | BRAID_TRANSPORT_DEAD)))
    return BRAID_ECLOSED;
  if (len == 0)
    return 0;
  /* Fed from inside a callback (test code in a protocol's callback): keep
   * the bytes for the pump, as real transports never nest data_received
   * inside another callback. */
  int direct = mt->depth == 0 && mt->in_len == 0 && braid__mem_may_read(mt);
  int rc = 0;
  braid__mem_enter(mt);
  if (direct) {
    braid_transport_deliver_data(&mt->t, data, len);
  } else {
    /* Paused, or earlier bytes still wait: keep the order. */
    rc = braid__grow(&mt->in, &mt->in_cap, mt->in_len + len);
    if (rc == 0) {
      memcpy(mt->in + mt->in_len, data, len);
      mt->in_len += len;
    }
  }
  braid__mem_leave(mt);
  return rc;
}

int braid_memory_transport_feed_eof(braid_memory_transport_t *mt) {
  if (mt == NULL)
    return BRAID_EINVAL;
  if (mt->lost || mt->eof_fed)
    return BRAID_ECLOSED;
  mt->eof_fed = 1;
  braid__mem_enter(mt);
  braid__mem_leave(mt);
  return 0;
}

int braid_memory_transport_lose(braid_memory_transport_t *mt, int reason) {
  if (mt == NULL || reason > 0)
    return BRAID_EINVAL;
  if (mt->lost || mt->lose_pending)
    return BRAID_ECLOSED;
  mt->lose_pending = 1;
  mt->reason = reason;
  braid_transport_impl_fail(&mt->t);
  braid__mem_drop_queue(mt);
  braid__mem_enter(mt);
  braid__mem_leave(mt);
  return 0;
}

const void *braid_memory_transport_value(const braid_memory_transport_t *mt,
                                         size_t *len) {
  if (len != NULL)
    *len = mt != NULL ? mt->val_len : 0;
  return mt != NULL && mt->val != NULL ? mt->val : "";
}

void braid_memory_transport_clear(braid_memory_transport_t *mt) {
  if (mt != NULL)
    mt->val_len = 0;
}

int braid_memory_transport_set_consumer_blocked(braid_memory_transport_t *mt,
                                                bool blocked) {
  if (mt == NULL)
    return BRAID_EINVAL;
  mt->blocked = blocked;
  if (blocked)
    return 0;
  ptrdiff_t rc = braid_memory_transport_drain(mt, SIZE_MAX);
  return rc < 0 ? (int)rc : 0;
}

ptrdiff_t braid_memory_transport_drain(braid_memory_transport_t *mt,
                                       size_t max) {
  if (mt == NULL)
    return BRAID_EINVAL;
  braid__mem_enter(mt);
  ptrdiff_t moved = braid__mem_move(mt, max);
  if (moved > 0)
    braid_transport_impl_drained(&mt->t);
  braid__mem_leave(mt);
  return moved;
}

int braid_memory_transport_set_addrs(braid_memory_transport_t *mt,
                                     const braid_addr_t *local,
                                     const braid_addr_t *peer) {
  if (mt == NULL)
    return BRAID_EINVAL;
  if (local != NULL)
    mt->local = *local;
  if (peer != NULL)
    mt->peer = *peer;
  return 0;
}

bool braid_memory_transport_disconnected(const braid_memory_transport_t *mt,
                                         int *reason) {
  if (reason != NULL)
    *reason = 0;
  if (mt == NULL || !mt->lost)
    return false;
  if (reason != NULL)
    *reason = mt->reason;
  return true;
}

bool braid_memory_transport_closing(const braid_memory_transport_t *mt) {
  return mt != NULL && (braid__mem_state(mt) & BRAID_TRANSPORT_CLOSING) &&
         !mt->aborted;
}

bool braid_memory_transport_aborted(const braid_memory_transport_t *mt) {
  return mt != NULL && mt->aborted;
}

bool braid_memory_transport_write_shut(const braid_memory_transport_t *mt) {
  return mt != NULL && (braid__mem_state(mt) & BRAID_TRANSPORT_WRITE_SHUT);
}

bool braid_memory_transport_reading_paused(const braid_memory_transport_t *mt) {
  return mt != NULL && (braid__mem_state(mt) & BRAID_TRANSPORT_READ_PAUSED);
}

bool braid_memory_transport_writing_paused(const braid_memory_transport_t *mt) {
  return mt != NULL && (braid__mem_state(mt) & BRAID_TRANSPORT_WRITE_PAUSED);
}

size_t
braid_memory_transport_pending_input(const braid_memory_transport_t *mt) {
  return mt != NULL ? mt->in_len : 0;
}
