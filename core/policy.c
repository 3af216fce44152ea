/* Connection policies (braid/policy.h): the timeout helper and the policy
 * factory. The client service is in core/client_service.c.
 *
 * Everything here uses the public API only, as a module outside core
 * would. The policy factory's throttling and idle timeout need a transport
 * of their own between the inner protocol and the real one: that one is
 * written against braid/transport_impl.h (its vtable, the state and queue
 * accessors, and the braid_transport_deliver_* helpers, which apply the
 * transport lifetime rules to the inner protocol), like protocols/tls.
 * Without throttling or an idle timeout there is no such layer: the inner
 * protocol gets the real transport, and the outer protocol only passes
 * the events on and counts. */
#include <string.h>

#include "braid/alloc.h"
#include "braid/error.h"
#include "braid/log.h"
#include "braid/policy.h"
#include "braid/transport_impl.h"

#define BRAID__NS_PER_SEC INT64_C(1000000000)

/* ------------------------------------------------------------------------
 * Timeouts
 * ------------------------------------------------------------------------ */

static uint64_t braid__add_sat(uint64_t a, uint64_t b) {
  return a > UINT64_MAX - b ? UINT64_MAX : a + b;
}

static void braid__timeout_fire(braid_timer_t *t, void *arg) {
  (void)t;
  braid_timeout_t *to = arg;
  uint64_t now = braid_reactor_now(to->reactor_);
  if (now < to->deadline_) {
    /* Activity since the timer was armed moved the deadline: sleep the
     * rest. This is how a reset stays O(1). If the heap cannot grow, fire
     * now: a timeout that never fires would keep a dead peer forever. */
    if (braid_timer_start(to->reactor_, &to->timer_, to->deadline_ - now,
                          braid__timeout_fire, to) == 0)
      return;
  }
  to->period_ = 0;
  to->deadline_ = 0;
  to->cb_(to, to->arg_);
}

void braid_timeout_init(braid_timeout_t *to, braid_reactor_t *r,
                        braid_timeout_cb cb, void *arg) {
  if (to == NULL)
    return;
  memset(to, 0, sizeof *to);
  to->reactor_ = r;
  to->cb_ = cb;
  to->arg_ = arg;
}

int braid_timeout_set(braid_timeout_t *to, uint64_t period) {
  if (to == NULL || to->reactor_ == NULL || to->cb_ == NULL)
    return BRAID_EINVAL;
  braid_timeout_cancel(to);
  if (period == 0)
    return 0;
  int rc = braid_timer_start(to->reactor_, &to->timer_, period,
                             braid__timeout_fire, to);
  if (rc < 0)
    return rc;
  to->period_ = period;
  to->deadline_ = braid__add_sat(braid_reactor_now(to->reactor_), period);
  return 0;
}

void braid_timeout_reset(braid_timeout_t *to) {
  if (to == NULL || to->period_ == 0)
    return;
  to->deadline_ = braid__add_sat(braid_reactor_now(to->reactor_), to->period_);
}

void braid_timeout_cancel(braid_timeout_t *to) {
  if (to == NULL)
    return;
  if (braid_timer_active(&to->timer_))
    braid_timer_cancel(&to->timer_);
  to->period_ = 0;
  to->deadline_ = 0;
}

uint64_t braid_timeout_period(const braid_timeout_t *to) {
  return to != NULL ? to->period_ : 0;
}

uint64_t braid_timeout_deadline(const braid_timeout_t *to) {
  return to != NULL ? to->deadline_ : 0;
}

void braid_timeout_abort_transport(braid_timeout_t *to, void *transport) {
  (void)to;
  braid_transport_abort(transport);
}

/* ------------------------------------------------------------------------
 * Token buckets, in byte-nanoseconds so that every step is exact integer
 * arithmetic: with rate and burst at most 2^32, burst * 1e9 < 2^62 and the
 * products below stay under 2^63.
 * ------------------------------------------------------------------------ */

typedef struct braid__bucket {
  uint64_t rate;  /* bytes per second; 0: unlimited */
  int64_t cap;    /* burst, in byte-ns */
  int64_t tokens; /* byte-ns; below 0 after a read larger than what was
                     there (reads cannot be split) */
  uint64_t last;  /* reactor time of the last refill */
} braid__bucket;

static void braid__bucket_init(braid__bucket *b, uint64_t rate, uint64_t burst,
                               uint64_t now) {
  b->rate = rate;
  b->cap = (int64_t)(burst ? burst : rate) * BRAID__NS_PER_SEC;
  b->tokens = b->cap; /* the first burst passes at once */
  b->last = now;
}

static void braid__bucket_refill(braid__bucket *b, uint64_t now) {
  uint64_t elapsed = now - b->last;
  b->last = now;
  if (b->tokens >= b->cap)
    return;
  uint64_t need = (uint64_t)(b->cap - b->tokens);
  /* Compare before multiplying, so that a long idle time cannot overflow. */
  if (elapsed >= (need + b->rate - 1) / b->rate)
    b->tokens = b->cap;
  else
    b->tokens += (int64_t)(elapsed * b->rate);
}

/* Whole bytes available now. */
static uint64_t braid__bucket_bytes(const braid__bucket *b) {
  return b->tokens > 0 ? (uint64_t)(b->tokens / BRAID__NS_PER_SEC) : 0;
}

static void braid__bucket_take(braid__bucket *b, uint64_t bytes) {
  /* Keep the debt bounded: a single read of more than 2^32 bytes counts as
   * 2^32 (the bucket would otherwise overflow long before). */
  if (bytes > BRAID_POLICY_RATE_MAX)
    bytes = BRAID_POLICY_RATE_MAX;
  b->tokens -= (int64_t)bytes * BRAID__NS_PER_SEC;
}

/* Nanoseconds until the bucket holds `bytes` (capped at the burst). */
static uint64_t braid__bucket_wait(const braid__bucket *b, uint64_t bytes) {
  int64_t want = (int64_t)bytes * BRAID__NS_PER_SEC;
  if (want > b->cap)
    want = b->cap;
  if (b->tokens >= want)
    return 0;
  uint64_t deficit = (uint64_t)(want - b->tokens);
  return (deficit + b->rate - 1) / b->rate;
}

/* ------------------------------------------------------------------------
 * The policy factory: types
 * ------------------------------------------------------------------------ */

/* Open connections from one peer host. */
typedef struct braid__ppeer {
  struct braid__ppeer *next;
  size_t count;
  uint32_t hash;
  char key[];
} braid__ppeer;

/* One write held back by the policy transport. */
typedef struct braid__pchunk {
  struct braid__pchunk *next;
  char *data;
  size_t off, len;
  braid_release_cb release; /* NULL: copied, right after this header */
  void *rarg;
} braid__pchunk;

typedef struct braid__pfactory braid__pfactory;

/* One connection: `outer` is the protocol the real transport sees; `t` is
 * the transport the inner protocol sees when `wrapped`. */
typedef struct braid__pconn {
  braid_protocol_t outer;
  braid_transport_t t;
  braid__pfactory *pf;
  braid_protocol_t *inner;
  braid_transport_t *lower;
  struct braid__pconn *prev, *next;
  braid__ppeer *peer;
  braid_timer_t wtimer, rtimer;
  braid_timeout_t idle;
  braid__pchunk *head, *tail;
  size_t wq; /* bytes held back */
  braid__bucket rb, wb;
  uint8_t wrapped;
  uint8_t lost;
  uint8_t lower_paused;   /* the real transport holds bytes (see made) */
  uint8_t lower_rpaused;  /* reading is paused on the real transport */
  uint8_t read_throttled; /* paused by read_rate */
  uint8_t close_pending, shut_pending; /* to pass on once wq is flushed */
  uint8_t done; /* connection_lost has finished: free at the next sweep */
} braid__pconn;

struct braid__pfactory {
  braid_factory_t f;
  braid_reactor_t *r;
  braid_factory_t *inner;
  braid_policy_options o;
  braid_policy_stats st;
  braid__pconn *live; /* open connections (and, during a walk, ones
                         that ended and wait to be freed) */
  braid__ppeer **peers;
  size_t nbuckets, npeers;
  braid_deferred_t *idle; /* when_idle deferreds, referenced */
  size_t nidle, capidle;
  /* Walks (braid_policy_factory_each) in progress: ended connections stay
   * linked until the last walk is over. Callbacks in progress: the
   * factory is not freed under them. */
  int walking, firing;
  uint8_t destroyed;
};

static braid_protocol_t *braid__pf_build(braid_factory_t *f,
                                         const braid_addr_t *peer);

static braid__pfactory *braid__pf(const braid_factory_t *f) {
  if (f == NULL || f->build != braid__pf_build)
    return NULL;
  return BRAID_CONTAINER_OF(f, braid__pfactory, f);
}

/* ------------------------------------------------------------------------
 * Peer hosts
 * ------------------------------------------------------------------------ */

#define BRAID__PEER_KEY_MAX 160

/* The peer's host: its formatted address without the port ("1.2.3.4",
 * "[::1]"); a Unix peer (usually unnamed) is kept whole. */
static size_t braid__peer_key(const braid_addr_t *a, char *buf) {
  int n = a != NULL ? braid_addr_format(a, buf, BRAID__PEER_KEY_MAX) : -1;
  if (n < 0) {
    buf[0] = '\0';
    return 0;
  }
  size_t len = strlen(buf);
  if (strncmp(buf, "unix:", 5) != 0) {
    char *colon = strrchr(buf, ':');
    if (colon != NULL) {
      *colon = '\0';
      len = (size_t)(colon - buf);
    }
  }
  return len;
}

/* FNV-1a: short keys, no adversary who can pick them beyond their own
 * address (and chains only cost time in proportion to connections). */
static uint32_t braid__hash(const char *s, size_t n) {
  uint32_t h = 2166136261u;
  for (size_t i = 0; i < n; i++) {
    h ^= (unsigned char)s[i];
    h *= 16777619u;
  }
  return h;
}

static braid__ppeer *braid__peer_find(const braid__pfactory *pf,
                                      const char *key, size_t n, uint32_t h) {
  if (pf->nbuckets == 0)
    return NULL;
  for (braid__ppeer *p = pf->peers[h & (pf->nbuckets - 1)]; p != NULL;
       p = p->next)
    if (p->hash == h && strcmp(p->key, key) == 0 && strlen(p->key) == n)
      return p;
  return NULL;
}

static braid__ppeer *braid__peer_add(braid__pfactory *pf, const char *key,
                                     size_t n, uint32_t h) {
  if (pf->npeers + 1 > pf->nbuckets) {
    size_t nb = pf->nbuckets ? pf->nbuckets * 2 : 16;
    braid__ppeer **tab = braid_calloc(nb, sizeof *tab);
    if (tab == NULL)
      return NULL;
    for (size_t i = 0; i < pf->nbuckets; i++) {
      braid__ppeer *p = pf->peers[i];
      while (p != NULL) {
        braid__ppeer *next = p->next;
        p->next = tab[p->hash & (nb - 1)];
        tab[p->hash & (nb - 1)] = p;
        p = next;
      }
    }
    braid_free(pf->peers);
    pf->peers = tab;
    pf->nbuckets = nb;
  }
  braid__ppeer *p = braid_malloc(sizeof *p + n + 1);
  if (p == NULL)
    return NULL;
  p->count = 0;
  p->hash = h;
  memcpy(p->key, key, n + 1);
  p->next = pf->peers[h & (pf->nbuckets - 1)];
  pf->peers[h & (pf->nbuckets - 1)] = p;
  pf->npeers++;
  return p;
}

static void braid__peer_remove(braid__pfactory *pf, braid__ppeer *pe) {
  braid__ppeer **pp = &pf->peers[pe->hash & (pf->nbuckets - 1)];
  while (*pp != pe)
    pp = &(*pp)->next;
  *pp = pe->next;
  pf->npeers--;
  braid_free(pe);
}

/* ------------------------------------------------------------------------
 * The factory's lifetime
 * ------------------------------------------------------------------------ */

static void braid__pf_free(braid__pfactory *pf) {
  for (size_t i = 0; i < pf->nbuckets; i++) {
    braid__ppeer *p = pf->peers[i];
    while (p != NULL) {
      braid__ppeer *next = p->next;
      braid_free(p);
      p = next;
    }
  }
  braid_free(pf->peers);
  braid_free(pf->idle);
  braid_free(pf);
}

static void braid__pf_maybe_free(braid__pfactory *pf) {
  if (pf->destroyed && pf->st.open == 0 && pf->walking == 0 && pf->firing == 0)
    braid__pf_free(pf);
}

/* Fire the when_idle deferreds (value NULL), or fail them with `code`. The
 * list is taken out first: their callbacks may ask for new ones. */
static void braid__pf_fire_idle(braid__pfactory *pf, int code) {
  braid_deferred_t *list = pf->idle;
  size_t n = pf->nidle;
  pf->idle = NULL;
  pf->nidle = pf->capidle = 0;
  pf->firing++;
  for (size_t i = 0; i < n; i++) {
    if (code == 0)
      braid_deferred_callback(list[i], NULL, NULL);
    else
      braid_deferred_errback(list[i], braid_failure_from_code(pf->r, code));
    braid_deferred_unref(list[i]);
  }
  pf->firing--;
  braid_free(list);
}

/* ------------------------------------------------------------------------
 * The policy transport
 * ------------------------------------------------------------------------ */

static void braid__pc_drop_queue(braid__pconn *pc) {
  braid__pchunk *c = pc->head;
  pc->head = pc->tail = NULL;
  pc->wq = 0;
  while (c != NULL) {
    braid__pchunk *next = c->next;
    if (c->release != NULL)
      c->release(c->data, c->rarg);
    braid_free(c);
    c = next;
  }
}

/* What the inner protocol's flow control sees: what is held back here
 * plus what the real transport holds. */
static void braid__pc_sync_queued(braid__pconn *pc) {
  braid_transport_impl_set_queued(&pc->t, pc->wq +
                                              braid_transport_write_queued(
                                                  pc->lower));
}

static void braid__pc_update_reading(braid__pconn *pc) {
  if (pc->lost)
    return;
  int want = (braid_transport_impl_state(&pc->t) &
              BRAID_TRANSPORT_READ_PAUSED) ||
             pc->read_throttled;
  if (want == pc->lower_rpaused)
    return;
  pc->lower_rpaused = (uint8_t)want;
  if (want)
    braid_transport_pause_reading(pc->lower);
  else
    braid_transport_resume_reading(pc->lower);
}

static void braid__pc_wtimer_cb(braid_timer_t *t, void *arg);

/* Pass held-back bytes on while the real transport takes them (it holds
 * nothing: see made) and the write bucket allows; then the close or
 * shutdown the inner protocol asked for meanwhile. */
static void braid__pc_flush(braid__pconn *pc) {
  braid__pfactory *pf = pc->pf;
  uint64_t now = braid_reactor_now(braid_transport_reactor(&pc->t));
  while (pc->head != NULL && !pc->lower_paused && !pc->lost) {
    braid__pchunk *c = pc->head;
    size_t n = c->len - c->off;
    if (pc->wb.rate != 0) {
      braid__bucket_refill(&pc->wb, now);
      uint64_t avail = braid__bucket_bytes(&pc->wb);
      if (avail == 0) {
        if (!braid_timer_active(&pc->wtimer)) {
          pf->st.write_waits++;
          uint64_t wait = braid__bucket_wait(&pc->wb, n);
          if (braid_timer_start(braid_transport_reactor(&pc->t), &pc->wtimer, wait ? wait : 1,
                                braid__pc_wtimer_cb, pc) < 0) {
            /* Without a timer the bytes would never leave: give up the
             * connection rather than hang it. */
            braid_reactor_log(braid_transport_reactor(&pc->t), BRAID_LOG_ERROR, "policy",
                              "cannot schedule throttled write; aborting");
            braid__pc_drop_queue(pc);
            braid_transport_abort(pc->lower);
          }
        }
        return;
      }
      if (n > avail)
        n = (size_t)avail;
    }
    int rc;
    int handed = 0;
    if (c->release != NULL && c->off == 0 && n == c->len) {
      rc = braid_transport_write_owned(pc->lower, c->data, n, c->release,
                                       c->rarg);
      handed = rc == 0;
    } else {
      rc = braid_transport_write(pc->lower, c->data + c->off, n);
    }
    if (rc < 0) {
      braid_reactor_log(braid_transport_reactor(&pc->t), BRAID_LOG_ERROR, "policy",
                        "write to the connection failed: %s; aborting",
                        braid_strerror(rc));
      braid__pc_drop_queue(pc);
      braid_transport_abort(pc->lower);
      return;
    }
    if (pc->wb.rate != 0)
      braid__bucket_take(&pc->wb, n);
    pf->st.bytes_written += n;
    c->off += n;
    pc->wq -= n;
    if (c->off == c->len) {
      pc->head = c->next;
      if (pc->head == NULL)
        pc->tail = NULL;
      if (c->release != NULL && !handed)
        c->release(c->data, c->rarg);
      braid_free(c);
    }
  }
  if (pc->head == NULL && !pc->lost) {
    if (pc->close_pending) {
      pc->close_pending = pc->shut_pending = 0;
      braid_transport_close(pc->lower);
    } else if (pc->shut_pending) {
      pc->shut_pending = 0;
      braid_transport_shutdown_write(pc->lower);
    }
  }
}

/* After an event outside the inner protocol's own calls: pass bytes on and
 * tell the inner protocol if it may write again. */
static void braid__pc_progress(braid__pconn *pc) {
  braid__pc_flush(pc);
  if (pc->lost)
    return;
  braid__pc_sync_queued(pc);
  braid_transport_impl_drained(&pc->t);
}

static void braid__pc_wtimer_cb(braid_timer_t *t, void *arg) {
  (void)t;
  braid__pc_progress(arg);
}

static void braid__pc_rtimer_cb(braid_timer_t *t, void *arg) {
  (void)t;
  braid__pconn *pc = arg;
  pc->read_throttled = 0;
  braid__pc_update_reading(pc);
}

static int braid__pc_write(braid_transport_t *t, const braid_iovec_t *iov,
                           size_t n, braid_release_cb release, void *arg) {
  braid__pconn *pc = BRAID_CONTAINER_OF(t, braid__pconn, t);
  size_t total = 0;
  for (size_t i = 0; i < n; i++)
    total += iov[i].len;
  braid_timeout_reset(&pc->idle);
  int direct = pc->head == NULL && !pc->lower_paused;
  if (direct && pc->wb.rate != 0) {
    braid__bucket_refill(&pc->wb, braid_reactor_now(braid_transport_reactor(t)));
    direct = braid__bucket_bytes(&pc->wb) >= total;
  }
  /* Nothing held back and the bucket allows it all: straight through,
   * without a copy. */
  if (direct) {
    int rc = release != NULL
                 ? braid_transport_write_owned(pc->lower, (void *)iov[0].base,
                                               total, release, arg)
                 : braid_transport_writev(pc->lower, iov, n);
    if (rc == 0) {
      if (pc->wb.rate != 0)
        braid__bucket_take(&pc->wb, total);
      pc->pf->st.bytes_written += total;
      braid__pc_sync_queued(pc);
    }
    return rc;
  }
  braid__pchunk *c;
  if (release != NULL) {
    c = braid_malloc(sizeof *c);
    if (c == NULL)
      return BRAID_ENOMEM;
    c->data = (char *)iov[0].base;
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
  }
  c->next = NULL;
  c->off = 0;
  c->len = total;
  c->release = release;
  c->rarg = arg;
  if (pc->tail != NULL)
    pc->tail->next = c;
  else
    pc->head = c;
  pc->tail = c;
  pc->wq += total;
  /* No resume_writing from inside the inner protocol's own write: only
   * pass bytes on; braid_transport_write then checks the high mark. */
  braid__pc_flush(pc);
  braid__pc_sync_queued(pc);
  return 0;
}

static int braid__pc_close(braid_transport_t *t, int how) {
  braid__pconn *pc = BRAID_CONTAINER_OF(t, braid__pconn, t);
  if (pc->lost)
    return 0;
  switch (how) {
  case BRAID_TRANSPORT_ABORT:
    braid__pc_drop_queue(pc);
    if (braid_timer_active(&pc->wtimer))
      braid_timer_cancel(&pc->wtimer);
    braid_transport_abort(pc->lower);
    break;
  case BRAID_TRANSPORT_CLOSE:
    pc->close_pending = 1;
    braid__pc_flush(pc);
    break;
  default: /* BRAID_TRANSPORT_SHUTDOWN_WRITE */
    pc->shut_pending = 1;
    braid__pc_flush(pc);
    break;
  }
  return 0;
}

static int braid__pc_set_reading(braid_transport_t *t, int on) {
  (void)on; /* the state bit already says it */
  braid__pc_update_reading(BRAID_CONTAINER_OF(t, braid__pconn, t));
  return 0;
}

static int braid__pc_addr(braid_transport_t *t, int peer, braid_addr_t *out) {
  braid__pconn *pc = BRAID_CONTAINER_OF(t, braid__pconn, t);
  if (pc->lost)
    return BRAID_ECLOSED;
  return peer ? braid_transport_peer_addr(pc->lower, out)
              : braid_transport_local_addr(pc->lower, out);
}

static int braid__pc_sockopt(braid_transport_t *t, int opt, int on,
                             unsigned value) {
  braid__pconn *pc = BRAID_CONTAINER_OF(t, braid__pconn, t);
  if (pc->lost)
    return BRAID_ECLOSED;
  if (opt == BRAID_TRANSPORT_OPT_NODELAY)
    return braid_transport_set_nodelay(pc->lower, on);
  return braid_transport_set_keepalive(pc->lower, on, value);
}

static int braid__pc_sendfile(braid_transport_t *t, int fd, uint64_t offset,
                              size_t len, braid_release_cb release, void *arg) {
  braid__pconn *pc = BRAID_CONTAINER_OF(t, braid__pconn, t);
  /* The kernel sends a file unmetered, and it must follow what is held
   * back here: only pass it on when neither is in the way. */
  if (pc->wb.rate != 0 || pc->head != NULL)
    return BRAID_ENOTSUP;
  int rc = braid_transport_sendfile(pc->lower, fd, offset, len, release, arg);
  if (rc == 0) {
    braid_timeout_reset(&pc->idle);
    pc->pf->st.bytes_written += len;
    braid__pc_sync_queued(pc);
  }
  return rc;
}

static const braid_transport_vt braid__pol_vt = {
    .write = braid__pc_write,
    .close = braid__pc_close,
    .set_reading = braid__pc_set_reading,
    .addr = braid__pc_addr,
    .sockopt = braid__pc_sockopt,
    .sendfile = braid__pc_sendfile,
};

/* ------------------------------------------------------------------------
 * The outer protocol: what the real transport calls
 * ------------------------------------------------------------------------ */

#define BRAID__PC(p) BRAID_CONTAINER_OF(p, braid__pconn, outer)

static void braid__pc_idle_cb(braid_timeout_t *to, void *arg) {
  (void)to;
  braid__pconn *pc = arg;
  if (pc->lost)
    return;
  pc->pf->st.timed_out++;
  /* The inner protocol's transport is dead from now on: its writes are
   * swallowed until connection_lost, as after any failure. */
  braid_transport_impl_fail(&pc->t);
  braid__pc_drop_queue(pc);
  braid_transport_abort(pc->lower);
}

static void braid__pc_made(braid_protocol_t *p, braid_transport_t *lower) {
  braid__pconn *pc = BRAID__PC(p);
  braid__pfactory *pf = pc->pf;
  pc->lower = lower;
  braid_protocol_t *inner = pc->inner;
  if (pc->wrapped) {
    braid_reactor_t *r = braid_transport_reactor(lower);
    uint64_t now = braid_reactor_now(r);
    braid_transport_init(&pc->t, &braid__pol_vt, r, inner);
    /* Marks at zero: the real transport reports pause_writing whenever it
     * holds a byte and resume_writing once it holds none, so this layer
     * knows exactly when it may pass more on, and keeps the queue itself. */
    braid_transport_set_write_limits(lower, 0, 0);
    braid__bucket_init(&pc->rb, pf->o.read_rate, pf->o.read_burst, now);
    braid__bucket_init(&pc->wb, pf->o.write_rate, pf->o.write_burst, now);
    braid_timeout_init(&pc->idle, r, braid__pc_idle_cb, pc);
    if (pf->o.idle_timeout != 0 &&
        braid_timeout_set(&pc->idle, pf->o.idle_timeout) < 0)
      braid_reactor_log(r, BRAID_LOG_ERROR, "policy",
                        "cannot arm the idle timeout");
    braid_transport_deliver_made(&pc->t); /* sets inner->transport */
    return;
  }
  inner->transport = lower;
  if (inner->ops->connection_made != NULL)
    inner->ops->connection_made(inner, lower);
}

/* The inner protocol closed or failed: it reads nothing more. */
static int braid__pc_done(const braid__pconn *pc) {
  return pc->wrapped && (braid_transport_impl_state(&pc->t) &
                         (BRAID_TRANSPORT_CLOSING | BRAID_TRANSPORT_DEAD));
}

static void braid__pc_data(braid_protocol_t *p, const void *data, size_t len) {
  braid__pconn *pc = BRAID__PC(p);
  braid_protocol_t *inner = pc->inner;
  if (braid__pc_done(pc))
    return; /* reading has stopped */
  braid_timeout_reset(&pc->idle);
  pc->pf->st.bytes_read += len;
  /* Wrapped, reading is paused on the real transport whenever the inner
   * protocol paused it, so the delivery is never refused for a pause. */
  if (pc->wrapped)
    braid_transport_deliver_data(&pc->t, data, len);
  else if (inner->ops->data_received != NULL)
    inner->ops->data_received(inner, data, len);
  if (pc->rb.rate == 0 || pc->lost)
    return;
  braid__bucket_refill(&pc->rb, braid_reactor_now(braid_transport_reactor(&pc->t)));
  braid__bucket_take(&pc->rb, len);
  if (pc->rb.tokens >= 0 || pc->read_throttled)
    return;
  /* Read more than the rate allows: stop reading until the debt is paid. */
  pc->read_throttled = 1;
  pc->pf->st.read_pauses++;
  braid__pc_update_reading(pc);
  uint64_t wait = braid__bucket_wait(&pc->rb, 0);
  if (braid_timer_start(braid_transport_reactor(&pc->t), &pc->rtimer, wait ? wait : 1,
                        braid__pc_rtimer_cb, pc) < 0) {
    pc->read_throttled = 0; /* better unthrottled than stalled forever */
    braid__pc_update_reading(pc);
  }
}

static void braid__pc_eof(braid_protocol_t *p) {
  braid__pconn *pc = BRAID__PC(p);
  braid_protocol_t *inner = pc->inner;
  if (braid__pc_done(pc))
    return;
  /* Core closes a protocol that is not half-close aware. */
  if (pc->wrapped)
    braid_transport_deliver_eof(&pc->t);
  else if (inner->ops->eof_received != NULL)
    inner->ops->eof_received(inner);
  else
    braid_transport_close(inner->transport); /* not half-close aware */
}

static void braid__pc_pause(braid_protocol_t *p) {
  braid__pconn *pc = BRAID__PC(p);
  if (pc->wrapped) {
    pc->lower_paused = 1;
  } else if (pc->inner->ops->pause_writing != NULL) {
    pc->inner->ops->pause_writing(pc->inner);
  }
}

static void braid__pc_resume(braid_protocol_t *p) {
  braid__pconn *pc = BRAID__PC(p);
  if (pc->wrapped) {
    pc->lower_paused = 0;
    braid__pc_progress(pc);
  } else if (pc->inner->ops->resume_writing != NULL) {
    pc->inner->ops->resume_writing(pc->inner);
  }
}

static void braid__pc_unlink(braid__pfactory *pf, braid__pconn *pc) {
  if (pc->prev != NULL)
    pc->prev->next = pc->next;
  else
    pf->live = pc->next;
  if (pc->next != NULL)
    pc->next->prev = pc->prev;
}

static void braid__pc_lost(braid_protocol_t *p, int reason) {
  braid__pconn *pc = BRAID__PC(p);
  braid__pfactory *pf = pc->pf;
  pc->lost = 1;
  if (braid_timer_active(&pc->wtimer))
    braid_timer_cancel(&pc->wtimer);
  if (braid_timer_active(&pc->rtimer))
    braid_timer_cancel(&pc->rtimer);
  braid_timeout_cancel(&pc->idle);
  braid__pc_drop_queue(pc);
  pf->st.open--;
  if (--pc->peer->count == 0)
    braid__peer_remove(pf, pc->peer);
  pc->peer = NULL;
  pf->firing++; /* the callbacks may destroy the factory */
  braid_protocol_t *inner = pc->inner;
  if (pc->wrapped)
    braid_transport_deliver_lost(&pc->t, reason);
  else if (inner->ops->connection_lost != NULL)
    inner->ops->connection_lost(inner, reason);
  if (pf->st.open == 0 && pf->nidle > 0)
    braid__pf_fire_idle(pf, 0);
  pf->firing--;
  if (pf->walking == 0) {
    braid__pc_unlink(pf, pc);
    braid_free(pc);
  } else {
    pc->done = 1; /* a walk is on: it frees this when it ends */
  }
  braid__pf_maybe_free(pf);
}

static const braid_protocol_ops braid__pc_ops = {
    .connection_made = braid__pc_made,
    .data_received = braid__pc_data,
    .eof_received = braid__pc_eof,
    .connection_lost = braid__pc_lost,
    .pause_writing = braid__pc_pause,
    .resume_writing = braid__pc_resume,
};

/* ------------------------------------------------------------------------
 * The policy factory: API
 * ------------------------------------------------------------------------ */

static braid_protocol_t *braid__pf_build(braid_factory_t *f,
                                         const braid_addr_t *peer) {
  braid__pfactory *pf = BRAID_CONTAINER_OF(f, braid__pfactory, f);
  if (pf->destroyed)
    return NULL;
  if (pf->o.max_connections != 0 && pf->st.open >= pf->o.max_connections) {
    pf->st.refused_total++;
    return NULL;
  }
  char key[BRAID__PEER_KEY_MAX];
  size_t klen = braid__peer_key(peer, key);
  uint32_t h = braid__hash(key, klen);
  braid__ppeer *pe = braid__peer_find(pf, key, klen, h);
  if (pf->o.max_per_peer != 0 && pe != NULL &&
      pe->count >= pf->o.max_per_peer) {
    pf->st.refused_peer++;
    return NULL;
  }
  /* Everything that can fail is allocated before the inner protocol is
   * built, which could not be handed back. */
  braid__pconn *pc = braid_calloc(1, sizeof *pc);
  if (pc == NULL)
    return NULL;
  if (pe == NULL && (pe = braid__peer_add(pf, key, klen, h)) == NULL) {
    braid_free(pc);
    return NULL;
  }
  braid_protocol_t *inner = pf->inner->build(pf->inner, peer);
  if (inner == NULL) {
    if (pe->count == 0)
      braid__peer_remove(pf, pe);
    braid_free(pc);
    return NULL;
  }
  pe->count++;
  pf->st.open++;
  pf->st.accepted++;
  pc->outer.ops = &braid__pc_ops;
  pc->pf = pf;
  pc->inner = inner;
  pc->peer = pe;
  pc->wrapped =
      pf->o.read_rate != 0 || pf->o.write_rate != 0 || pf->o.idle_timeout != 0;
  pc->next = pf->live;
  if (pf->live != NULL)
    pf->live->prev = pc;
  pf->live = pc;
  return &pc->outer;
}

int braid_policy_factory_create(braid_reactor_t *r, braid_factory_t *inner,
                                const braid_policy_options *opts,
                                braid_factory_t **out) {
  if (out != NULL)
    *out = NULL;
  if (r == NULL || inner == NULL || inner->build == NULL || out == NULL)
    return BRAID_EINVAL;
  braid_policy_options o = {0};
  if (opts != NULL)
    o = *opts;
  if (o.read_rate > BRAID_POLICY_RATE_MAX ||
      o.write_rate > BRAID_POLICY_RATE_MAX ||
      o.read_burst > BRAID_POLICY_RATE_MAX ||
      o.write_burst > BRAID_POLICY_RATE_MAX ||
      (o.read_burst != 0 && o.read_rate == 0) ||
      (o.write_burst != 0 && o.write_rate == 0))
    return BRAID_EINVAL;
  braid__pfactory *pf = braid_calloc(1, sizeof *pf);
  if (pf == NULL)
    return BRAID_ENOMEM;
  pf->f.build = braid__pf_build;
  pf->r = r;
  pf->inner = inner;
  pf->o = o;
  *out = &pf->f;
  return 0;
}

int braid_policy_factory_destroy(braid_factory_t *f) {
  if (f == NULL)
    return 0;
  braid__pfactory *pf = braid__pf(f);
  if (pf == NULL || pf->destroyed)
    return BRAID_EINVAL;
  pf->destroyed = 1;
  braid__pf_fire_idle(pf, BRAID_ECANCELED);
  braid__pf_maybe_free(pf);
  return 0;
}

int braid_policy_factory_stats(const braid_factory_t *f,
                               braid_policy_stats *out) {
  const braid__pfactory *pf = braid__pf(f);
  if (pf == NULL || out == NULL)
    return BRAID_EINVAL;
  *out = pf->st;
  return 0;
}

size_t braid_policy_factory_peer_count(const braid_factory_t *f,
                                       const braid_addr_t *peer) {
  const braid__pfactory *pf = braid__pf(f);
  if (pf == NULL || peer == NULL)
    return 0;
  char key[BRAID__PEER_KEY_MAX];
  size_t klen = braid__peer_key(peer, key);
  const braid__ppeer *pe =
      braid__peer_find(pf, key, klen, braid__hash(key, klen));
  return pe != NULL ? pe->count : 0;
}

int braid_policy_factory_each(braid_factory_t *f, braid_policy_visit_cb fn,
                              void *arg) {
  braid__pfactory *pf = braid__pf(f);
  if (pf == NULL || fn == NULL)
    return BRAID_EINVAL;
  /* New connections go to the front, so walking from the front in one
   * pass never meets one accepted during the walk. Ended ones stay linked
   * (walking > 0) and are swept afterwards. */
  pf->walking++;
  for (braid__pconn *pc = pf->live; pc != NULL; pc = pc->next)
    if (!pc->lost && pc->inner->transport != NULL)
      fn(pc->inner, pc->inner->transport, arg);
  pf->walking--;
  if (pf->walking == 0) {
    braid__pconn *pc = pf->live;
    while (pc != NULL) {
      braid__pconn *next = pc->next;
      if (pc->done) {
        braid__pc_unlink(pf, pc);
        braid_free(pc);
      }
      pc = next;
    }
  }
  braid__pf_maybe_free(pf);
  return 0;
}

int braid_policy_factory_when_idle(braid_factory_t *f, braid_deferred_t *out) {
  braid__pfactory *pf = braid__pf(f);
  if (out != NULL)
    *out = braid_deferred_none();
  if (pf == NULL || out == NULL || pf->destroyed)
    return BRAID_EINVAL;
  /* Room first, so that no deferred is made that could not be kept. */
  if (pf->st.open > 0 && pf->nidle == pf->capidle) {
    size_t cap = pf->capidle ? pf->capidle * 2 : 4;
    braid_deferred_t *n = braid_realloc(pf->idle, cap * sizeof *n);
    if (n == NULL)
      return BRAID_ENOMEM;
    pf->idle = n;
    pf->capidle = cap;
  }
  braid_deferred_t d;
  int rc = braid_deferred_new(pf->r, &d);
  if (rc < 0)
    return rc;
  if (pf->st.open == 0) {
    braid_deferred_callback(d, NULL, NULL);
    *out = d;
    return 0;
  }
  braid_deferred_ref(d);
  pf->idle[pf->nidle++] = d;
  *out = d;
  return 0;
}
