/* The transport API: argument and state checks and flow control, once for
 * every kind of transport; and the implementation side of
 * braid/transport_impl.h, through which every transport (streams, the
 * memory transport, TLS, modules outside braid) reports its events. */
#include "core/transport.h"

#define BRAID__DEFAULT_HIGH (64u * 1024u)
#define BRAID__DEFAULT_LOW (16u * 1024u)

void braid_transport_init(braid_transport_t *t, const braid_transport_vt *vt,
                          braid_reactor_t *r, braid_protocol_t *p) {
  t->vt = vt;
  t->proto = p;
  t->reactor = r;
  t->queued = 0;
  t->high = BRAID__DEFAULT_HIGH;
  t->low = BRAID__DEFAULT_LOW;
  t->state = 0;
  t->lower = NULL;
}

/* The transport's queue: its own bytes and, for a stacked transport,
 * those of every transport below it (braid_transport_impl_follow_lower). */
static size_t braid__queued(const braid_transport_t *t) {
  size_t n = 0;
  for (; t != NULL; t = t->lower)
    n += t->queued;
  return n;
}

void braid_transport_impl_filled(braid_transport_t *t) {
  if (braid__queued(t) > t->high && !(t->state & BRAID__T_PRODUCER_PAUSED) &&
      !(t->state & BRAID__T_DEAD)) {
    t->state |= BRAID__T_PRODUCER_PAUSED;
    if (t->proto != NULL && t->proto->ops->pause_writing != NULL)
      t->proto->ops->pause_writing(t->proto);
  }
}

void braid_transport_impl_drained(braid_transport_t *t) {
  if (braid__queued(t) <= t->low && (t->state & BRAID__T_PRODUCER_PAUSED)) {
    t->state &= ~BRAID__T_PRODUCER_PAUSED;
    if (t->proto != NULL && t->proto->ops->resume_writing != NULL &&
        !(t->state & (BRAID__T_DEAD | BRAID__T_CLOSING)))
      t->proto->ops->resume_writing(t->proto);
  }
}

static int braid__write_check(braid_transport_t *t) {
  if (t == NULL)
    return BRAID_EINVAL;
  if (t->state & (BRAID__T_CLOSING | BRAID__T_WR_SHUT))
    return BRAID_ECLOSED;
  return 0;
}

int braid_transport_writev(braid_transport_t *t, const braid_iovec_t *iov,
                           size_t n) {
  int rc = braid__write_check(t);
  if (rc < 0)
    return rc;
  if (iov == NULL && n > 0)
    return BRAID_EINVAL;
  /* A failed connection swallows writes until connection_lost runs. */
  if (t->state & BRAID__T_DEAD)
    return 0;
  size_t total = 0;
  for (size_t i = 0; i < n; i++) {
    if (iov[i].base == NULL && iov[i].len > 0)
      return BRAID_EINVAL;
    total += iov[i].len;
  }
  if (total == 0)
    return 0;
  rc = t->vt->write(t, iov, n, NULL, NULL);
  if (rc == 0)
    braid_transport_impl_filled(t);
  return rc;
}

int braid_transport_write(braid_transport_t *t, const void *data,
                          size_t len) {
  braid_iovec_t v = {data, len};
  return braid_transport_writev(t, &v, 1);
}

int braid_transport_write_owned(braid_transport_t *t, void *data, size_t len,
                                braid_release_cb release, void *arg) {
  int rc = braid__write_check(t);
  if (rc < 0)
    return rc;
  if ((data == NULL && len > 0) || release == NULL)
    return BRAID_EINVAL;
  if ((t->state & BRAID__T_DEAD) || len == 0) {
    release(data, arg);
    return 0;
  }
  braid_iovec_t v = {data, len};
  rc = t->vt->write(t, &v, 1, release, arg);
  if (rc == 0)
    braid_transport_impl_filled(t);
  return rc;
}

int braid_transport_sendfile(braid_transport_t *t, int fd, uint64_t offset,
                             size_t len, braid_release_cb release, void *arg) {
  int rc = braid__write_check(t);
  if (rc < 0)
    return rc;
  if (fd < 0 || release == NULL)
    return BRAID_EINVAL;
  if (t->vt->sendfile == NULL)
    return BRAID_ENOTSUP;
  if ((t->state & BRAID__T_DEAD) || len == 0) {
    release(NULL, arg);
    return 0;
  }
  rc = t->vt->sendfile(t, fd, offset, len, release, arg);
  if (rc == 0)
    braid_transport_impl_filled(t);
  return rc;
}

int braid_transport_close(braid_transport_t *t) {
  if (t == NULL)
    return BRAID_EINVAL;
  if (t->state & (BRAID__T_CLOSING | BRAID__T_DEAD))
    return BRAID_ECLOSED;
  t->state |= BRAID__T_CLOSING;
  return t->vt->close(t, BRAID__CLOSE);
}

int braid_transport_abort(braid_transport_t *t) {
  if (t == NULL)
    return BRAID_EINVAL;
  if (t->state & BRAID__T_DEAD)
    return BRAID_ECLOSED;
  t->state |= BRAID__T_DEAD | BRAID__T_CLOSING;
  return t->vt->close(t, BRAID__ABORT);
}

int braid_transport_shutdown_write(braid_transport_t *t) {
  int rc = braid__write_check(t);
  if (rc < 0)
    return rc;
  if (t->state & BRAID__T_DEAD)
    return BRAID_ECLOSED;
  t->state |= BRAID__T_WR_SHUT;
  return t->vt->close(t, BRAID__SHUTDOWN_WRITE);
}

int braid_transport_pause_reading(braid_transport_t *t) {
  if (t == NULL)
    return BRAID_EINVAL;
  if (t->state & BRAID__T_READ_PAUSED)
    return 0;
  t->state |= BRAID__T_READ_PAUSED;
  return t->vt->set_reading(t, 0);
}

int braid_transport_resume_reading(braid_transport_t *t) {
  if (t == NULL)
    return BRAID_EINVAL;
  if (!(t->state & BRAID__T_READ_PAUSED))
    return 0;
  t->state &= ~BRAID__T_READ_PAUSED;
  return t->vt->set_reading(t, 1);
}

int braid_transport_local_addr(braid_transport_t *t, braid_addr_t *out) {
  if (t == NULL || out == NULL)
    return BRAID_EINVAL;
  return t->vt->addr != NULL ? t->vt->addr(t, 0, out) : BRAID_ENOTSUP;
}

int braid_transport_peer_addr(braid_transport_t *t, braid_addr_t *out) {
  if (t == NULL || out == NULL)
    return BRAID_EINVAL;
  return t->vt->addr != NULL ? t->vt->addr(t, 1, out) : BRAID_ENOTSUP;
}

int braid_transport_set_nodelay(braid_transport_t *t, bool on) {
  if (t == NULL)
    return BRAID_EINVAL;
  return t->vt->sockopt != NULL ? t->vt->sockopt(t, BRAID__T_NODELAY, on, 0)
                                : BRAID_ENOTSUP;
}

int braid_transport_set_keepalive(braid_transport_t *t, bool on,
                                  unsigned idle_seconds) {
  if (t == NULL)
    return BRAID_EINVAL;
  return t->vt->sockopt != NULL
             ? t->vt->sockopt(t, BRAID__T_KEEPALIVE, on, idle_seconds)
             : BRAID_ENOTSUP;
}

int braid_transport_set_write_limits(braid_transport_t *t, size_t high,
                                     size_t low) {
  if (t == NULL || low > high)
    return BRAID_EINVAL;
  t->high = high;
  t->low = low;
  /* A stacked transport keeps its lower one's marks at its low mark (see
   * braid_transport_impl_follow_lower). */
  if (t->lower != NULL && (t->lower->high != low || t->lower->low != low))
    braid_transport_set_write_limits(t->lower, low, low);
  braid_transport_impl_filled(t);
  braid_transport_impl_drained(t);
  return 0;
}

bool braid_transport_closing(const braid_transport_t *t) {
  return t == NULL || (t->state & (BRAID__T_CLOSING | BRAID__T_DEAD)) != 0;
}

size_t braid_transport_write_queued(const braid_transport_t *t) {
  return braid__queued(t);
}

braid_reactor_t *braid_transport_reactor(const braid_transport_t *t) {
  return t != NULL ? t->reactor : NULL;
}

int braid_transport_set_protocol(braid_transport_t *t, braid_protocol_t *p) {
  if (t == NULL || p == NULL || p->ops == NULL)
    return BRAID_EINVAL;
  if (t->state & BRAID_TRANSPORT_LOST)
    return BRAID_ECLOSED;
  t->proto = p;
  p->transport = t;
  return 0;
}

void *braid_transport_extra(braid_transport_t *t, const char *name) {
  if (t == NULL || name == NULL || t->vt->extra == NULL)
    return NULL;
  return t->vt->extra(t, name);
}

/* ------------------------------------------------------------------------
 * The implementation side (braid/transport_impl.h)
 * ------------------------------------------------------------------------ */

unsigned braid_transport_impl_state(const braid_transport_t *t) {
  return t != NULL ? t->state : 0;
}

braid_protocol_t *braid_transport_impl_protocol(const braid_transport_t *t) {
  return t != NULL ? t->proto : NULL;
}

const braid_transport_vt *braid_transport_impl_vt(const braid_transport_t *t) {
  return t != NULL ? t->vt : NULL;
}

void braid_transport_impl_limits(const braid_transport_t *t, size_t *high,
                                 size_t *low) {
  if (high != NULL)
    *high = t != NULL ? t->high : 0;
  if (low != NULL)
    *low = t != NULL ? t->low : 0;
}

/* Deliveries of data and EOF stop at a pause and for good at close, abort,
 * failure or the end. */
#define BRAID__T_NO_READ                                                       \
  (BRAID__T_CLOSING | BRAID__T_DEAD | BRAID_TRANSPORT_LOST)

bool braid_transport_impl_reading(const braid_transport_t *t) {
  return t != NULL && !(t->state & (BRAID__T_NO_READ | BRAID__T_READ_PAUSED));
}

void braid_transport_impl_set_reactor(braid_transport_t *t,
                                      braid_reactor_t *r) {
  if (t != NULL)
    t->reactor = r;
}

void braid_transport_impl_fail(braid_transport_t *t) {
  if (t != NULL)
    t->state |= BRAID__T_DEAD;
}

void braid_transport_impl_set_queued(braid_transport_t *t, size_t bytes) {
  if (t != NULL)
    t->queued = bytes;
}

void braid_transport_impl_follow_lower(braid_transport_t *t,
                                       braid_transport_t *lower, size_t own) {
  if (t == NULL)
    return;
  t->lower = lower;
  t->queued = own;
  /* The lower transport pauses its protocol (the layer) above t's low mark
   * and resumes it at that mark, so its resume_writing arrives exactly
   * when t's queue (the lower one plus the layer's own bytes) may have
   * fallen back to t's low mark. */
  if (lower != NULL && (lower->high != t->low || lower->low != t->low))
    braid_transport_set_write_limits(lower, t->low, t->low);
}

int braid_transport_deliver_made(braid_transport_t *t) {
  if (t == NULL || t->proto == NULL)
    return BRAID_EINVAL;
  if (t->state & BRAID_TRANSPORT_MADE)
    return BRAID_EALREADY;
  braid_protocol_t *p = t->proto;
  p->transport = t;
  /* A client's transport exists from the connect call on, and its
   * protocol may close it before the connection is up: then it is not
   * told that the connection was made, only that it was lost. */
  if (t->state & BRAID__T_NO_READ)
    return BRAID_ECLOSED;
  t->state |= BRAID_TRANSPORT_MADE;
  if (p->ops->connection_made != NULL)
    p->ops->connection_made(p, t);
  return 0;
}

int braid_transport_deliver_data(braid_transport_t *t, const void *data,
                                 size_t len) {
  if (t == NULL || (data == NULL && len > 0))
    return BRAID_EINVAL;
  if (t->state & BRAID__T_NO_READ)
    return BRAID_ECLOSED;
  if (t->state & BRAID__T_READ_PAUSED)
    return BRAID_EAGAIN;
  braid_protocol_t *p = t->proto;
  if (len > 0 && p != NULL && p->ops->data_received != NULL)
    p->ops->data_received(p, data, len);
  return 0;
}

int braid_transport_deliver_eof(braid_transport_t *t) {
  if (t == NULL)
    return BRAID_EINVAL;
  if (t->state & BRAID__T_EOF)
    return BRAID_EALREADY;
  if (t->state & BRAID__T_NO_READ)
    return BRAID_ECLOSED;
  if (t->state & BRAID__T_READ_PAUSED)
    return BRAID_EAGAIN;
  t->state |= BRAID__T_EOF;
  braid_protocol_t *p = t->proto;
  if (p == NULL || p->ops->eof_received == NULL) {
    /* Not half-close aware: closed after flushing, as Twisted does. */
    braid_transport_close(t);
    return 0;
  }
  p->ops->eof_received(p);
  /* Both directions are done once the protocol has shut down writing too
   * (before the EOF or inside eof_received). */
  if ((t->state & BRAID__T_WR_SHUT) &&
      !(t->state & (BRAID__T_CLOSING | BRAID__T_DEAD)))
    braid_transport_close(t);
  return 0;
}

int braid_transport_deliver_lost(braid_transport_t *t, int reason) {
  if (t == NULL)
    return BRAID_EINVAL;
  if (t->state & BRAID_TRANSPORT_LOST)
    return BRAID_EALREADY;
  t->state |= BRAID__T_DEAD | BRAID_TRANSPORT_LOST;
  t->lower = NULL; /* going away with this transport, or gone already */
  braid_protocol_t *p = t->proto;
  if (p != NULL && p->ops->connection_lost != NULL)
    p->ops->connection_lost(p, reason);
  return 0;
}
