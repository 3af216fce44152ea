/* The bookkeeping every I/O implementation shares (core/io.h): submit,
 * cancel and close around the platform's start, abort and shut; in-flight
 * counts and the close list; ops deferred to a later wait(); completions
 * run with the callback depth held; iovec advancing; reads that completed
 * after a cancel.
 *
 * Each of these was written once per backend before (three close lists,
 * three completion paths, three iovec walks, two copies of the "data
 * arrived after the cancel" holding in stream.c and udp.c), and the copies
 * had drifted: IOCP ran ops deferred while it handled completions in the
 * same wait(), against BRAID__OPF_DEFER's promise. */
#include <string.h>

#include "core/internal.h"

/* What a READ or RECVFROM brought after its cancel (see io.h, cancel):
 * kept on the socket for the next read. */
typedef struct braid__held {
  size_t len, off;   /* bytes data[off..len) are still to deliver; a
                        READ holding none is the end of input */
  int addrlen;       /* RECVFROM: the sender, and whether the datagram */
  uint8_t truncated; /* was cut (BRAID__OPF_TRUNCATED) */
  struct sockaddr_storage from;
  char data[];
} braid__held;

static int braid__is_read(const braid__op *op) {
  return op->type == BRAID__OP_READ || op->type == BRAID__OP_RECVFROM;
}

/* ------------------------------------------------------------------------
 * Queues
 * ------------------------------------------------------------------------ */

static void braid__op_append(braid__op **head, braid__op **tail,
                             braid__op *op) {
  op->next_ = NULL;
  if (*tail != NULL)
    (*tail)->next_ = op;
  else
    *head = op;
  *tail = op;
}

/* s has nothing left in flight: its close callback is due. Appended, so
 * close callbacks run in the order the sockets became free. */
static void braid__close_due(braid__sock *s) {
  braid_reactor_t *r = s->reactor;
  s->next_closing_ = NULL;
  if (r->io_closing_tail != NULL)
    r->io_closing_tail->next_closing_ = s;
  else
    r->io_closing = s;
  r->io_closing_tail = s;
}

static void braid__defer(braid__op *op) {
  braid_reactor_t *r = op->sock->reactor;
  op->state_ |= BRAID__OPS_LATER;
  braid__op_append(&r->io_later, &r->io_later_tail, op);
}

void braid__io_later(braid__op *op) {
  braid__defer(op);
}

void braid__io_cancelled(braid__op *op) {
  braid_reactor_t *r = op->sock->reactor;
  braid__op_append(&r->io_cancelled, &r->io_cancelled_tail, op);
}

void braid__io_ref(braid__sock *s) {
  s->inflight_++;
}

void braid__io_unref(braid__sock *s) {
  if (--s->inflight_ == 0 && s->closing_)
    braid__close_due(s);
}

/* ------------------------------------------------------------------------
 * Sockets and ops
 * ------------------------------------------------------------------------ */

void braid__io_sock_init(braid_reactor_t *r, braid__sock *s, braid__fd fd) {
  memset(s, 0, sizeof *s);
  s->fd = fd;
  s->reactor = r;
}

intptr_t braid__io_submit(braid__sock *s, braid__op *op) {
  braid_reactor_t *r = s->reactor;
  op->sock = s;
  if (s->closing_)
    return BRAID_ECLOSED;
  op->state_ = 0;
  intptr_t st;
  /* What a read brought after a cancel comes first, and from the loop:
   * never inline, since a resume that submits this read may be running
   * inside data_received. */
  if (s->held_ != NULL && braid__is_read(op))
    st = BRAID__LATER;
  else
    st = r->io->start(s, op);
  if (st == BRAID__LATER) {
    braid__defer(op);
    st = BRAID__PENDING;
  }
  if (st == BRAID__PENDING) {
    op->state_ |= BRAID__OPS_PENDING;
    s->inflight_++;
    r->active_io++;
  }
  return st;
}

int braid__io_cancel(braid__sock *s, braid__op *op) {
  if (!(op->state_ & BRAID__OPS_PENDING) || op->sock != s)
    return BRAID_EINVAL;
  if (op->state_ & BRAID__OPS_CANCEL)
    return 0; /* asked already; the completion is on its way */
  op->state_ |= BRAID__OPS_CANCEL;
  if (op->state_ & BRAID__OPS_LATER)
    return 0; /* core's own: its wait() completes it as cancelled */
  int rc = s->reactor->io->abort(s, op);
  if (rc < 0)
    op->state_ &= (uint8_t)~BRAID__OPS_CANCEL;
  return rc;
}

void braid__io_close(braid__sock *s, braid__close_cb cb) {
  if (s->closing_)
    return;
  braid_reactor_t *r = s->reactor;
  s->closing_ = 1;
  s->close_cb = cb;
  r->active_io++;       /* until close_cb */
  braid_free(s->held_); /* no read will come for it */
  s->held_ = NULL;
  r->io->shut(s);
  if (s->inflight_ == 0)
    braid__close_due(s);
}

/* A read completed with data, or the end of input, after its cancel: keep
 * it for the next read. Returns the status to report: BRAID_ECANCELED, or
 * BRAID_ENOMEM where a stream's bytes could not be kept (dropping them
 * would corrupt the stream; a datagram is dropped, as a full receive buffer
 * would have). */
static intptr_t braid__hold(braid__sock *s, braid__op *op, intptr_t st) {
  braid__held *h = braid_malloc(sizeof *h + (size_t)st);
  if (h == NULL)
    return op->type == BRAID__OP_READ ? BRAID_ENOMEM : BRAID_ECANCELED;
  h->len = (size_t)st;
  h->off = 0;
  h->addrlen = 0;
  h->truncated = (op->flags & BRAID__OPF_TRUNCATED) != 0;
  if (op->type == BRAID__OP_RECVFROM && op->addr != NULL) {
    size_t n = (size_t)op->addrlen;
    if (n > sizeof h->from)
      n = sizeof h->from;
    memcpy(&h->from, op->addr, n);
    h->addrlen = (int)n;
  }
  if (st > 0)
    memcpy(h->data, op->u.read.base, (size_t)st);
  s->held_ = h;
  return BRAID_ECANCELED;
}

void braid__io_complete(braid__op *op, intptr_t st) {
  braid__sock *s = op->sock;
  braid_reactor_t *r = s->reactor;
  int closing = s->closing_;
  if (closing) {
    /* Everything pending at close completes as cancelled, on every
     * platform, whatever the kernel managed to do meanwhile. */
    if (op->type == BRAID__OP_ACCEPT && st >= 0)
      r->io->fd_close(op->u.accept.fd);
    st = BRAID_ECANCELED;
  } else if ((op->state_ & BRAID__OPS_CANCEL) && st >= 0 &&
             braid__is_read(op) && s->held_ == NULL) {
    st = braid__hold(s, op, st);
  }
  op->state_ = 0;
  s->inflight_--;
  r->active_io--;
  r->depth++;
  op->cb(op, st);
  r->depth--;
  /* A close() inside the callback with nothing else in flight queued the
   * socket itself; queue it here only if it was closed before. */
  if (closing && s->inflight_ == 0)
    braid__close_due(s);
}

/* The next read after a cancel gets what the cancelled one brought. */
static intptr_t braid__unhold(braid__sock *s, braid__op *op,
                              braid__held **done) {
  braid__held *h = s->held_;
  size_t n = h->len - h->off;
  if (op->u.read.base == NULL) {
    /* Lent, like a platform buffer, for the length of the callback. */
    op->u.read.base = h->data + h->off;
    op->u.read.len = n;
  } else if (n > op->u.read.len) {
    if (op->type == BRAID__OP_RECVFROM)
      h->truncated = 1; /* a datagram goes whole or cut */
    n = op->u.read.len;
  }
  if (op->u.read.base != h->data + h->off && n > 0)
    memcpy(op->u.read.base, h->data + h->off, n);
  if (op->type == BRAID__OP_RECVFROM) {
    op->flags &= (uint8_t)~BRAID__OPF_TRUNCATED;
    if (h->truncated)
      op->flags |= BRAID__OPF_TRUNCATED;
    if (op->addr != NULL) {
      int len = h->addrlen < op->addrlen ? h->addrlen : op->addrlen;
      memcpy(op->addr, &h->from, (size_t)len);
      op->addrlen = h->addrlen;
    }
    h->off = h->len;
  } else {
    h->off += n;
  }
  /* A stream read with a smaller buffer leaves the rest held. The data
   * must outlive the callback, which may close the socket: it leaves the
   * socket first and is freed after. */
  if (h->off == h->len || op->type == BRAID__OP_RECVFROM) {
    s->held_ = NULL;
    *done = h;
  }
  return (intptr_t)n;
}

/* ------------------------------------------------------------------------
 * wait()
 * ------------------------------------------------------------------------ */

int braid__io_busy(const braid_reactor_t *r) {
  return r->io_later != NULL || r->io_cancelled != NULL ||
         r->io_closing != NULL;
}

int64_t braid__io_wait_begin(braid_reactor_t *r, int64_t timeout) {
  if (braid__io_busy(r))
    timeout = 0;
  r->io_batch = r->io_later;
  r->io_later = r->io_later_tail = NULL;
  return timeout;
}

/* The ops deferred before this wait() began: started now (or completed as
 * cancelled); what they defer in turn waits for the next wait(). */
static void braid__run_batch(braid_reactor_t *r) {
  braid__op *op;
  while ((op = r->io_batch) != NULL) {
    r->io_batch = op->next_;
    op->next_ = NULL;
    op->state_ &= (uint8_t)~BRAID__OPS_LATER;
    braid__sock *s = op->sock;
    if (s->closing_ || (op->state_ & BRAID__OPS_CANCEL)) {
      braid__io_complete(op, BRAID_ECANCELED);
      continue;
    }
    braid__held *done = NULL;
    intptr_t st;
    if (s->held_ != NULL && braid__is_read(op)) {
      st = braid__unhold(s, op, &done);
    } else {
      op->flags &= (uint8_t)~BRAID__OPF_DEFER;
      st = r->io->start(s, op);
    }
    if (st == BRAID__LATER)
      braid__defer(op);
    else if (st != BRAID__PENDING)
      braid__io_complete(op, st);
    braid_free(done);
  }
}

void braid__io_wait_end(braid_reactor_t *r) {
  braid__run_batch(r);
  /* Cancelled ops, then the close callbacks they made due; a callback may
   * cancel or close more. */
  while (r->io_cancelled != NULL || r->io_closing != NULL) {
    braid__op *op;
    while ((op = r->io_cancelled) != NULL) {
      r->io_cancelled = op->next_;
      if (r->io_cancelled == NULL)
        r->io_cancelled_tail = NULL;
      op->next_ = NULL;
      braid__io_complete(op, BRAID_ECANCELED);
    }
    braid__sock *s = r->io_closing;
    if (s != NULL) {
      r->io_closing = s->next_closing_;
      if (r->io_closing == NULL)
        r->io_closing_tail = NULL;
      r->active_io--;
      if (s->close_cb != NULL) {
        r->depth++;
        s->close_cb(s);
        r->depth--;
      }
    }
  }
}

/* ------------------------------------------------------------------------
 * Writes
 * ------------------------------------------------------------------------ */

size_t braid__io_advance(braid__op *op, size_t n) {
  op->u.write.done += n;
  braid__buf *b = op->u.write.bufs;
  size_t nb = op->u.write.nbufs;
  while (nb > 0 && (n > 0 || b->len == 0)) {
    size_t take = n < b->len ? n : b->len;
    b->base = (char *)b->base + take;
    b->len -= take;
    n -= take;
    if (b->len == 0) {
      b++;
      nb--;
    }
  }
  op->u.write.bufs = b;
  op->u.write.nbufs = nb;
  return nb;
}
