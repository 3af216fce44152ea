/* Stream transports (TCP, Unix) over the I/O layer, listeners and connect.
 *
 * Memory: an idle connection holds one braid__stream (no read buffer: reads
 * use the platform's buffer, see BRAID__OP_READ in core/io.h) plus the
 * protocol. Output that the kernel does not take at once is queued in
 * chunks: copied bytes share fixed-size chunks, zero-copy writes get a
 * chunk header that points at the caller's memory.
 *
 * Every stream's memory lives until its socket's close callback, which the
 * I/O layer runs after the last op completion, so no callback can ever see
 * a freed stream. */
#include <string.h>

#include "braid/process.h"
#include "core/transport.h"

#define BRAID__WBUFS 4
#define BRAID__CHUNK 16384u

/* The most bytes a stream reads in one pass (a completion the loop
 * delivered, and the inline reads that follow it) before its next read is
 * deferred to the next loop iteration (BRAID__OPF_DEFER). Reading until
 * the socket would block let one fast peer hold the loop for as long as it
 * kept the socket full: two flooding connections held single iterations
 * for 25-170 ms (tests/test_fairness.c, epoll), and a 5 ms timer fired up
 * to 150 ms late. libuv reads at most 32 times per event, redis 16 KiB.
 * Four of the readiness engine's 64 KiB reads bound an iteration to a
 * fraction of a millisecond per busy stream, and the extra loop turn (one
 * poll with no timeout) did not change one stream's throughput measurably
 * (bench/echo_load stream). A completion platform that never completes
 * reads inline (io_uring) hands one buffer per iteration anyway. */
#define BRAID__READ_BUDGET (256u * 1024u)

typedef struct braid__chunk {
  struct braid__chunk *next;
  char *data;
  size_t off, len, cap; /* pending bytes are data[off..len) */
  braid_release_cb release; /* zero-copy chunk: give data back */
  void *rarg;
  int file; /* a file chunk (sendfile): data is NULL and the pending
               bytes are the file's [foff + off, foff + len); else -1 */
  uint64_t foff;
} braid__chunk;

typedef struct braid__stream {
  braid_transport_t t;
  braid__handle h;
  braid__sock sock;
  braid__op rop, wop;
  braid__chunk *head, *tail;
  /* Writes and connecting never overlap, so they share memory: an idle
   * connection costs less than 512 bytes of braid state. */
  union {
    braid__buf wbufs[BRAID__WBUFS]; /* the write op in flight */
    struct {
      braid_addr_t *addr;  /* the connect target (allocated) */
      braid_timer_t timer; /* connect timeout */
    } c;                   /* while `connecting` */
  } u;
  size_t rpass; /* bytes read in this pass (BRAID__READ_BUDGET) */
  int reason;   /* for connection_lost */
  uint8_t reading, writing, made, client, closed, shut, timed_out, connecting;
  uint8_t tcp; /* an IP socket: TCP options apply */
  /* Pipes. Bit-fields, so that they fit in the padding at the end and an
   * idle socket stream is no larger for them. */
  unsigned nsocks : 2; /* holds not yet given back (descriptors, and a
                          queued connection_made); the last frees */
  unsigned pipe : 1;   /* a pipe transport: no socket calls */
  unsigned noread : 1; /* a write-only pipe: sock is the write end */
  unsigned wopen : 1;  /* a two-descriptor pipe's write end is open */
  unsigned soon : 1;   /* a pipe's connection_made call is queued */
} braid__stream;

/* One braid_listener_on_close callback. */
typedef struct braid__on_close {
  void (*cb)(void *arg);
  void *arg;
} braid__on_close;

struct braid_listener {
  braid__sock sock;
  braid__handle h;
  braid__op aop;
  braid_reactor_t *r;
  braid_factory_t *f;
  braid_addr_t peer;
  braid_timer_t backoff;
  uint64_t backoff_ns;
  uint8_t accepting, closing;
  uint8_t tcp; /* an IP listener (its connections are TCP) */
  braid__unix_file file; /* a Unix listener's socket file, removed at close */
  braid__on_close *on_close; /* in the order added */
  size_t n_on_close;
};

/* A pipe transport with two descriptors: its write end is a second
 * registered descriptor, allocated with the stream, so that half-closing
 * closes only it. */
typedef struct braid__pipe2 {
  braid__stream s;
  braid__sock wsock;
} braid__pipe2;

/* Where writes go: the socket; a write-only pipe's one descriptor; a
 * two-descriptor pipe's write end while it is open; else nowhere (NULL). */
static braid__sock *braid__stream_ws(braid__stream *s) {
  if (!s->pipe || s->noread)
    return &s->sock;
  if (s->wopen)
    return &((braid__pipe2 *)s)->wsock;
  return NULL;
}

static const braid__transport_vt braid__stream_vt;
static void braid__stream_read(braid__stream *s, int defer);

#define BRAID__S(tp) braid__container_of(tp, braid__stream, t)

/* ------------------------------------------------------------------------
 * Teardown
 * ------------------------------------------------------------------------ */

static void braid__chunks_free(braid__stream *s) {
  braid__chunk *c = s->head;
  while (c != NULL) {
    braid__chunk *next = c->next;
    if (c->release != NULL)
      c->release(c->data, c->rarg);
    braid_free(c);
    c = next;
  }
  s->head = s->tail = NULL;
  s->t.queued = 0;
}

static void braid__stream_closed(braid__sock *sock) {
  braid__stream *s = braid__container_of(sock, braid__stream, sock);
  if (--s->nsocks > 0)
    return; /* a pipe's write end is still closing */
  braid_protocol_t *p = s->t.proto;
  braid__handle_remove(&s->h);
  braid__chunks_free(s);
  if (s->connecting) {
    s->connecting = 0;
    if (braid_timer_active(&s->u.c.timer))
      braid_timer_cancel(&s->u.c.timer);
    braid_free(s->u.c.addr);
  }
  if (p != NULL && (s->made || s->client))
    braid_transport_deliver_lost(&s->t, s->reason);
  s->t.reactor->live_streams--;
  braid_free(s);
}

/* A pipe's separate write end closed back: its memory goes now, and the
 * stream's with the last descriptor. */
static void braid__stream_wclosed(braid__sock *ws) {
  braid__pipe2 *p2 = braid__container_of(ws, braid__pipe2, wsock);
  braid__stream_closed(&p2->s.sock);
}

/* Close a pipe's separate write end (half-close, or the whole close). */
static void braid__stream_wshut(braid__stream *s) {
  if (!s->wopen)
    return;
  s->wopen = 0;
  s->t.reactor->io->close(&((braid__pipe2 *)s)->wsock, braid__stream_wclosed);
}

/* Close the socket; connection_lost(s->reason) follows from the I/O
 * layer's close callback. */
static void braid__stream_shut(braid__stream *s) {
  if (s->closed)
    return;
  s->closed = 1;
  braid__stream_wshut(s);
  s->t.reactor->io->close(&s->sock, braid__stream_closed);
}

static void braid__stream_fail(braid__stream *s, int reason) {
  if (s->closed)
    return;
  s->reason = reason;
  s->t.state |= BRAID__T_DEAD;
  braid__stream_shut(s);
}

/* The write queue is empty: finish a pending close or half-close. */
static void braid__stream_idle(braid__stream *s) {
  if (s->closed || s->writing || s->head != NULL)
    return;
  if (s->t.state & BRAID__T_CLOSING) {
    braid__stream_shut(s);
    return;
  }
  if ((s->t.state & BRAID__T_WR_SHUT) && !s->shut) {
    s->shut = 1;
    if (s->pipe) {
      /* A pipe has no shutdown(2): the reader sees the end of input when
       * the write end closes. A write-only pipe has nothing left then. */
      if (s->noread || (s->t.state & BRAID__T_EOF))
        braid__stream_shut(s);
      else
        braid__stream_wshut(s);
      return;
    }
    int rc = s->t.reactor->io->sock_shutdown(&s->sock);
    if (rc < 0)
      braid__stream_fail(s, rc);
    else if (s->t.state & BRAID__T_EOF)
      braid__stream_shut(s); /* both directions are done */
  }
}

/* ------------------------------------------------------------------------
 * Reading
 * ------------------------------------------------------------------------ */

/* A read's result. Pausing cancels the read in flight, and a read that
 * completed before the cancel could take effect still says
 * BRAID_ECANCELED: the I/O layer keeps its bytes for the read after the
 * resume (core/io.h, cancel), so nothing arrives here while paused. */
static void braid__stream_on_read(braid__stream *s, intptr_t st) {
  braid_protocol_t *p = s->t.proto;
  if (st > 0) {
    if (p->ops->data_received != NULL)
      p->ops->data_received(p, s->rop.u.read.base, (size_t)st);
    return;
  }
  if (st == BRAID_ECANCELED)
    return; /* paused or closing; anything it read is kept for the resume */
  if (st < 0) {
    braid__stream_fail(s, (int)st);
    return;
  }
  /* End of input. */
  s->t.state |= BRAID__T_EOF;
  if (p->ops->eof_received == NULL) {
    if (!(s->t.state & (BRAID__T_CLOSING | BRAID__T_DEAD))) {
      s->t.state |= BRAID__T_CLOSING;
      braid__stream_idle(s);
    }
    return;
  }
  p->ops->eof_received(p);
  if (s->shut)
    braid__stream_shut(s);
}

static int braid__stream_may_read(const braid__stream *s) {
  return !s->reading && !s->closed && !s->noread &&
         !(s->t.state & (BRAID__T_READ_PAUSED | BRAID__T_CLOSING |
                         BRAID__T_DEAD | BRAID__T_EOF));
}

static void braid__stream_read_cb(braid__op *op, intptr_t st) {
  braid__stream *s = braid__container_of(op, braid__stream, rop);
  s->reading = 0;
  /* A completion through the loop starts a new pass. */
  s->rpass = st > 0 ? (size_t)st : 0;
  braid__stream_on_read(s, st);
  braid__stream_read(s, 0);
}

/* Keep one read submitted while reading is wanted. Inline completions are
 * handled in this loop, not by recursion; once the pass has read its
 * budget, the next read waits for the next loop iteration. */
static void braid__stream_read(braid__stream *s, int defer) {
  while (braid__stream_may_read(s)) {
    if (s->rpass >= BRAID__READ_BUDGET)
      defer = 1;
    s->rop.type = BRAID__OP_READ;
    s->rop.flags = defer ? BRAID__OPF_DEFER : 0;
    s->rop.cb = braid__stream_read_cb;
    s->rop.u.read.base = NULL;
    s->rop.u.read.len = 0;
    intptr_t st = s->t.reactor->io->submit(&s->sock, &s->rop);
    if (st == BRAID__PENDING) {
      s->reading = 1;
      return;
    }
    if (st > 0)
      s->rpass += (size_t)st;
    braid__stream_on_read(s, st);
  }
}

/* ------------------------------------------------------------------------
 * Writing
 * ------------------------------------------------------------------------ */

/* Drop `n` written bytes from the head of the queue. */
static void braid__stream_consume(braid__stream *s, size_t n) {
  s->t.queued -= n;
  while (n > 0) {
    braid__chunk *c = s->head;
    size_t take = c->len - c->off;
    if (take > n)
      take = n;
    c->off += take;
    n -= take;
    /* Drained chunks are freed at once, so an idle connection holds no
     * output memory. */
    if (c->off == c->len) {
      s->head = c->next;
      if (s->head == NULL)
        s->tail = NULL;
      if (c->release != NULL)
        c->release(c->data, c->rarg);
      braid_free(c);
    }
  }
}

static void braid__stream_flush(braid__stream *s);

static void braid__stream_write_cb(braid__op *op, intptr_t st) {
  braid__stream *s = braid__container_of(op, braid__stream, wop);
  s->writing = 0;
  if (s->closed)
    return;
  if (st < 0) {
    braid__stream_fail(s, (int)st);
    return;
  }
  braid__stream_consume(s, (size_t)st);
  braid_transport_impl_drained(&s->t);
  braid__stream_flush(s);
}

static int braid__stream_has_output(const braid__stream *s) {
  return s->head != NULL;
}

static void braid__stream_flush(braid__stream *s) {
  while (!s->writing && !s->closed && braid__stream_has_output(s)) {
    size_t n = 0;
    for (braid__chunk *c = s->head; c != NULL && n < BRAID__WBUFS;
         c = c->next) {
      if (c->len == c->off)
        continue;
      if (c->file >= 0)
        break; /* sent by its own op, after the bytes before it */
      s->u.wbufs[n].base = c->data + c->off;
      s->u.wbufs[n].len = c->len - c->off;
      n++;
    }
    s->wop.type = BRAID__OP_WRITE;
    s->wop.flags = 0;
    s->wop.cb = braid__stream_write_cb;
    s->wop.u.write.bufs = s->u.wbufs;
    s->wop.u.write.nbufs = n;
    s->wop.u.write.done = 0;
    if (n == 0) {
      /* The queue starts with a file chunk: let the kernel send it. */
      braid__chunk *c = s->head;
      while (c->len == c->off)
        c = c->next;
      s->wop.type = BRAID__OP_SENDFILE;
      s->wop.u.sendfile.file = c->file;
      s->wop.u.sendfile.offset = c->foff + c->off;
      s->wop.u.sendfile.len = c->len - c->off;
      s->wop.u.sendfile.done = 0;
    }
    intptr_t st = s->t.reactor->io->submit(braid__stream_ws(s), &s->wop);
    if (st == BRAID__PENDING) {
      s->writing = 1;
      return;
    }
    if (st < 0) {
      braid__stream_fail(s, (int)st);
      return;
    }
    braid__stream_consume(s, (size_t)st);
    braid_transport_impl_drained(&s->t);
  }
  braid__stream_idle(s);
}

static braid__chunk *braid__chunk_new(size_t cap) {
  braid__chunk *c = braid_malloc(sizeof *c + cap);
  if (c == NULL)
    return NULL;
  c->next = NULL;
  c->data = (char *)(c + 1);
  c->off = c->len = 0;
  c->cap = cap;
  c->release = NULL;
  c->rarg = NULL;
  c->file = -1;
  c->foff = 0;
  return c;
}

static void braid__chunk_append(braid__stream *s, braid__chunk *c) {
  if (s->tail != NULL)
    s->tail->next = c;
  else
    s->head = c;
  s->tail = c;
}

/* Copy bytes into the queue's tail chunk and new chunks. All or nothing. */
static int braid__stream_copy(braid__stream *s, const braid_iovec_t *iov,
                              size_t n, size_t skip) {
  size_t total = 0;
  for (size_t i = 0; i < n; i++)
    total += iov[i].len;
  total -= skip;
  braid__chunk *tail = s->tail;
  size_t room = tail != NULL && tail->release == NULL ? tail->cap - tail->len : 0;
  braid__chunk *first_new = NULL, *last_new = NULL;
  if (total > room) {
    size_t need = total - room;
    first_new = last_new = braid__chunk_new(need > BRAID__CHUNK ? need : BRAID__CHUNK);
    if (first_new == NULL)
      return BRAID_ENOMEM;
  }
  braid__chunk *dst = room > 0 ? tail : first_new;
  for (size_t i = 0; i < n; i++) {
    const char *src = iov[i].base;
    size_t len = iov[i].len;
    if (skip >= len) {
      skip -= len;
      continue;
    }
    src += skip;
    len -= skip;
    skip = 0;
    while (len > 0) {
      if (dst->len == dst->cap)
        dst = first_new;
      size_t take = dst->cap - dst->len;
      if (take > len)
        take = len;
      memcpy(dst->data + dst->len, src, take);
      dst->len += take;
      src += take;
      len -= take;
    }
  }
  if (last_new != NULL)
    braid__chunk_append(s, first_new);
  s->t.queued += total;
  return 0;
}

static int braid__stream_write(braid_transport_t *t, const braid_iovec_t *iov,
                               size_t n, braid_release_cb release, void *arg) {
  braid__stream *s = BRAID__S(t);
  size_t total = 0, done = 0;
  for (size_t i = 0; i < n; i++)
    total += iov[i].len;
  if (s->closed || braid__stream_ws(s) == NULL) {
    /* A read-only pipe has nowhere to write: the bytes are dropped like
     * those written to a transport that closed under the caller. */
    if (release != NULL)
      release((void *)iov[0].base, arg);
    return s->closed ? 0 : BRAID_ENOTSUP;
  }
  /* Nothing queued: try to write straight from the caller's memory. */
  if (!s->writing && !braid__stream_has_output(s) && n <= BRAID__WBUFS &&
      (t->reactor->io->caps & BRAID__CAP_TRY_WRITE)) {
    for (size_t i = 0; i < n; i++) {
      s->u.wbufs[i].base = (void *)iov[i].base;
      s->u.wbufs[i].len = iov[i].len;
    }
    s->wop.type = BRAID__OP_WRITE;
    s->wop.flags = BRAID__OPF_TRY;
    s->wop.cb = braid__stream_write_cb;
    s->wop.u.write.bufs = s->u.wbufs;
    s->wop.u.write.nbufs = n;
    s->wop.u.write.done = 0;
    intptr_t st = t->reactor->io->submit(braid__stream_ws(s), &s->wop);
    if (st < 0) {
      if (release != NULL)
        release((void *)iov[0].base, arg);
      braid__stream_fail(s, (int)st);
      return 0;
    }
    done = (size_t)st;
    if (done == total) {
      if (release != NULL)
        release((void *)iov[0].base, arg);
      return 0;
    }
  }
  if (release != NULL) {
    braid__chunk *c = braid_malloc(sizeof *c);
    if (c == NULL && done > 0) {
      /* Part of the message is on the wire and the rest cannot be queued:
       * the byte stream is broken, so the connection fails rather than
       * the caller being told nothing was sent. */
      release((void *)iov[0].base, arg);
      braid__stream_fail(s, BRAID_ENOMEM);
      return 0;
    }
    if (c == NULL)
      return BRAID_ENOMEM; /* nothing was sent; the caller keeps the data */
    c->next = NULL;
    c->data = (char *)iov[0].base;
    c->off = done;
    c->len = c->cap = iov[0].len;
    c->release = release;
    c->rarg = arg;
    c->file = -1;
    c->foff = 0;
    braid__chunk_append(s, c);
    t->queued += total - done;
  } else {
    int rc = braid__stream_copy(s, iov, n, done);
    if (rc < 0 && done > 0) {
      braid__stream_fail(s, rc); /* as above: the stream is broken */
      return 0;
    }
    if (rc < 0)
      return rc;
  }
  braid__stream_flush(s);
  return 0;
}

/* Only where the I/O layer has BRAID__OP_SENDFILE; otherwise the caller
 * reads the file itself (BRAID_ENOTSUP). */
static int braid__stream_sendfile(braid_transport_t *t, int fd, uint64_t offset,
                                  size_t len, braid_release_cb release,
                                  void *arg) {
  braid__stream *s = BRAID__S(t);
  if (!(t->reactor->io->caps & BRAID__CAP_SENDFILE) || s->pipe)
    return BRAID_ENOTSUP;
  if (s->closed) {
    release(NULL, arg);
    return 0;
  }
  braid__chunk *c = braid_malloc(sizeof *c);
  if (c == NULL)
    return BRAID_ENOMEM;
  c->next = NULL;
  c->data = NULL;
  c->off = 0;
  c->len = c->cap = len;
  c->release = release;
  c->rarg = arg;
  c->file = fd;
  c->foff = offset;
  braid__chunk_append(s, c);
  t->queued += len;
  braid__stream_flush(s);
  return 0;
}

/* ------------------------------------------------------------------------
 * The rest of the vtable
 * ------------------------------------------------------------------------ */

static int braid__stream_close(braid_transport_t *t, int how) {
  braid__stream *s = BRAID__S(t);
  if (s->closed)
    return 0;
  switch (how) {
  case BRAID__ABORT:
    s->reason = BRAID_ECONNABORTED;
    /* A plain close() would send a FIN, and the peer would take the
     * truncated output for a complete reply. Abort means the peer must
     * see a reset (Twisted's abortConnection, libuv's uv_tcp_close_reset),
     * so linger 0 first. Best effort: the close happens anyway. */
    if (s->tcp)
      (void)t->reactor->io->sock_setopt(&s->sock, BRAID__SO_LINGER0, 1);
    braid__stream_shut(s);
    return 0;
  case BRAID__CLOSE:
    if (s->reading)
      t->reactor->io->cancel(&s->sock, &s->rop);
    braid__stream_idle(s);
    return 0;
  case BRAID__SHUTDOWN_WRITE:
    braid__stream_idle(s);
    return 0;
  }
  return BRAID_EINVAL;
}

static int braid__stream_set_reading(braid_transport_t *t, int on) {
  braid__stream *s = BRAID__S(t);
  if (s->closed)
    return 0;
  if (!on) {
    if (s->reading)
      t->reactor->io->cancel(&s->sock, &s->rop);
    return 0;
  }
  /* Resume may be called from inside a data_received: deferring the read
   * keeps callbacks from nesting and the shared read buffer intact. What a
   * read cancelled by the pause brought comes first (core/io.h). */
  braid__stream_read(s, 1);
  return 0;
}

static int braid__stream_addr(braid_transport_t *t, int peer,
                              braid_addr_t *out) {
  braid__stream *s = BRAID__S(t);
  if (s->closed)
    return BRAID_ECLOSED;
  if (s->pipe)
    return BRAID_ENOTSUP;
  memset(out, 0, sizeof *out);
  int len = (int)sizeof out->sa_;
  int rc = t->reactor->io->sock_name(&s->sock, peer, braid__addr_sa(out), &len);
  if (rc == 0)
    out->len_ = (uint32_t)len;
  return rc;
}

static int braid__stream_sockopt(braid_transport_t *t, int opt, int on,
                                 unsigned value) {
  braid__stream *s = BRAID__S(t);
  if (s->closed)
    return BRAID_ECLOSED;
  /* TCP options on a Unix socket: the kernel refuses TCP_NODELAY, but
   * Linux accepts SO_KEEPALIVE on any socket, so "keepalive off" would
   * succeed and "on" would half-apply before TCP_KEEPIDLE failed. Answer
   * for every option and every OS alike, as documented. */
  if (!s->tcp || s->pipe)
    return BRAID_ENOTSUP;
  const braid__io_ops *io = t->reactor->io;
  if (opt == BRAID__T_NODELAY)
    return io->sock_setopt(&s->sock, BRAID__SO_NODELAY, on);
  return io->sock_setopt(&s->sock, BRAID__SO_KEEPALIVE,
                         on ? (int)(value ? value : 1) : 0);
}

static const braid__transport_vt braid__stream_vt = {
    .write = braid__stream_write,
    .close = braid__stream_close,
    .set_reading = braid__stream_set_reading,
    .addr = braid__stream_addr,
    .sockopt = braid__stream_sockopt,
    .sendfile = braid__stream_sendfile,
};

/* Reactor teardown with the connection still open. */
static void braid__stream_abort_h(braid__handle *h) {
  braid__stream *s = braid__container_of(h, braid__stream, h);
  /* Reactor teardown drops queued calls: a pipe's pending
   * connection_made call no longer holds the stream. */
  if (s->soon) {
    s->soon = 0;
    s->t.proto = NULL; /* never made: no connection_lost either */
    if (s->closed) {
      braid__stream_closed(&s->sock); /* the last hold: frees s */
      return;
    }
    s->nsocks--;
  }
  s->t.state |= BRAID__T_DEAD | BRAID__T_CLOSING;
  if (!s->closed) {
    s->reason = BRAID_ECONNABORTED;
    braid__stream_shut(s);
  }
}

static void braid__stream_made(braid__stream *s) {
  braid_protocol_t *p = s->t.proto;
  s->made = 1;
  s->t.state |= BRAID_TRANSPORT_MADE; /* as braid_transport_deliver_made */
  p->transport = &s->t;
  if (p->ops->connection_made != NULL)
    p->ops->connection_made(p, &s->t);
  braid__stream_read(s, 0);
}

/* ------------------------------------------------------------------------
 * Listening
 * ------------------------------------------------------------------------ */

static void braid__listener_accept(braid_listener_t *l);

static void braid__listener_closed(braid__sock *sock) {
  braid_listener_t *l = braid__container_of(sock, braid_listener_t, sock);
  braid__handle_remove(&l->h);
  l->r->live_listeners--;
  braid_free(l->on_close);
  braid_free(l);
}

static void braid__listener_backoff_cb(braid_timer_t *t, void *arg) {
  (void)t;
  braid__listener_accept(arg);
}

/* Returns 1 to keep accepting. */
static int braid__listener_on_accept(braid_listener_t *l, intptr_t st) {
  braid_reactor_t *r = l->r;
  if (st == BRAID_ECANCELED)
    return 0;
  if (st < 0) {
    /* Out of descriptors or memory: keep serving what is open and try
     * again later, backing off up to a second. The connections waiting in
     * the backlog are not lost. */
    l->backoff_ns = l->backoff_ns ? l->backoff_ns * 2 : BRAID_MSEC(10);
    if (l->backoff_ns > BRAID_SEC(1))
      l->backoff_ns = BRAID_SEC(1);
    braid_reactor_log(r, BRAID_LOG_WARN, "listener",
                      "accept failed: %s; retrying in %llu ms",
                      braid_strerror((int)st),
                      (unsigned long long)(l->backoff_ns / 1000000u));
    braid_timer_start(r, &l->backoff, l->backoff_ns,
                      braid__listener_backoff_cb, l);
    return 0;
  }
  l->backoff_ns = 0;
  l->peer.len_ = (uint32_t)l->aop.addrlen;
  braid__stream *s = braid_calloc(1, sizeof *s);
  if (s == NULL) {
    r->io->fd_close(l->aop.u.accept.fd);
    return braid__listener_on_accept(l, BRAID_ENOMEM);
  }
  int rc = r->io->sock_adopt(r, &s->sock, l->aop.u.accept.fd);
  if (rc < 0) {
    braid_reactor_log(r, BRAID_LOG_WARN, "listener",
                      "cannot register accepted socket: %s",
                      braid_strerror(rc));
    r->io->fd_close(l->aop.u.accept.fd);
    braid_free(s);
    return 1;
  }
  r->live_streams++;
  s->nsocks = 1;
  braid__handle_add(r, &s->h, braid__stream_abort_h);
  s->tcp = l->tcp;
  braid_protocol_t *p = l->f->build(l->f, &l->peer);
  braid_transport_init(&s->t, &braid__stream_vt, r, p);
  if (p == NULL) {
    braid__stream_shut(s); /* refused */
    return !l->closing;
  }
  braid__stream_made(s);
  return !l->closing;
}

static void braid__listener_accept_cb(braid__op *op, intptr_t st) {
  braid_listener_t *l = braid__container_of(op, braid_listener_t, aop);
  l->accepting = 0;
  if (braid__listener_on_accept(l, st))
    braid__listener_accept(l);
}

static void braid__listener_accept(braid_listener_t *l) {
  while (!l->accepting && !l->closing) {
    l->aop.type = BRAID__OP_ACCEPT;
    l->aop.flags = 0;
    l->aop.cb = braid__listener_accept_cb;
    l->aop.addr = braid__addr_sa(&l->peer);
    l->aop.addrlen = (int)sizeof l->peer.sa_;
    intptr_t st = l->r->io->submit(&l->sock, &l->aop);
    if (st == BRAID__PENDING) {
      l->accepting = 1;
      return;
    }
    if (!braid__listener_on_accept(l, st))
      return;
  }
}

static void braid__listener_abort_h(braid__handle *h) {
  braid_listener_close(braid__container_of(h, braid_listener_t, h));
}

static int braid__addr_ok(const braid_addr_t *a) {
  int fam = braid_addr_family(a);
  return fam == AF_INET || fam == AF_INET6 || fam == AF_UNIX;
}

int braid_listen(braid_reactor_t *r, const braid_addr_t *addr,
                 const braid_listen_options *opts, braid_factory_t *f,
                 braid_listener_t **out) {
  static const braid_listen_options defaults = {0};
  if (r == NULL || addr == NULL || f == NULL || f->build == NULL ||
      out == NULL || !braid__addr_ok(addr))
    return BRAID_EINVAL;
  *out = NULL;
  if (opts == NULL)
    opts = &defaults;
  int fam = braid_addr_family(addr);
  if (fam == AF_UNIX && !(r->io->caps & BRAID__CAP_UNIX))
    return BRAID_ENOTSUP;
  braid_listener_t *l = braid_calloc(1, sizeof *l);
  if (l == NULL)
    return BRAID_ENOMEM;
  l->r = r;
  l->f = f;
  l->tcp = fam != AF_UNIX;
  const braid__io_ops *io = r->io;
  int rc = io->sock_open(r, &l->sock, fam, SOCK_STREAM);
  if (rc < 0) {
    braid_free(l);
    return rc;
  }
  r->live_listeners++;
  if (fam != AF_UNIX && !opts->no_reuse_addr)
    rc = io->sock_setopt(&l->sock, BRAID__SO_REUSEADDR, 1);
  if (rc == 0 && opts->reuse_port)
    rc = io->sock_setopt(&l->sock, BRAID__SO_REUSEPORT, 1);
  if (rc == 0 && fam == AF_INET6)
    rc = io->sock_setopt(&l->sock, BRAID__SO_V6ONLY, opts->ipv6_only);
  if (rc == 0)
    rc = io->sock_bind(&l->sock, braid__addr_csa(addr), (int)addr->len_);
  if (rc == 0 && fam == AF_UNIX)
    braid__unix_file_note(&l->file, braid__addr_csa(addr), (int)addr->len_);
  if (rc == 0)
    rc = io->sock_listen(&l->sock, opts->backlog > 0 ? opts->backlog : 511);
  if (rc < 0) {
    braid__unix_file_remove(&l->file);
    io->close(&l->sock, braid__listener_closed);
    return rc;
  }
  braid__handle_add(r, &l->h, braid__listener_abort_h);
  braid__listener_accept(l);
  *out = l;
  return 0;
}

int braid_listener_addr(const braid_listener_t *l, braid_addr_t *out) {
  if (l == NULL || out == NULL)
    return BRAID_EINVAL;
  memset(out, 0, sizeof *out);
  int len = (int)sizeof out->sa_;
  int rc = l->r->io->sock_name((braid__sock *)&l->sock, 0,
                               braid__addr_sa(out), &len);
  if (rc == 0)
    out->len_ = (uint32_t)len;
  return rc;
}

int braid_listener_close(braid_listener_t *l) {
  if (l == NULL)
    return BRAID_EINVAL;
  if (l->closing)
    return BRAID_ECLOSED;
  l->closing = 1;
  if (braid_timer_active(&l->backoff))
    braid_timer_cancel(&l->backoff);
  /* The path goes before the socket: from now on a connect gets ENOENT
   * instead of a refusal, and the path can be bound again at once. */
  braid__unix_file_remove(&l->file);
  l->r->io->close(&l->sock, braid__listener_closed);
  /* The listener's memory lives until the close completes, so the array
   * is still there while the callbacks run (and cannot grow: adding is
   * refused once closing). */
  for (size_t i = 0; i < l->n_on_close; i++)
    l->on_close[i].cb(l->on_close[i].arg);
  return 0;
}

int braid_listener_on_close(braid_listener_t *l, void (*cb)(void *arg),
                            void *arg) {
  if (l == NULL || cb == NULL)
    return BRAID_EINVAL;
  if (l->closing)
    return BRAID_ECLOSED;
  braid__on_close *n =
      braid_realloc(l->on_close, (l->n_on_close + 1) * sizeof *n);
  if (n == NULL)
    return BRAID_ENOMEM;
  n[l->n_on_close].cb = cb;
  n[l->n_on_close].arg = arg;
  l->on_close = n;
  l->n_on_close++;
  return 0;
}

/* ------------------------------------------------------------------------
 * Connecting
 * ------------------------------------------------------------------------ */

static void braid__connect_done(braid__stream *s, intptr_t st) {
  s->writing = 0;
  if (s->connecting) {
    s->connecting = 0;
    if (braid_timer_active(&s->u.c.timer))
      braid_timer_cancel(&s->u.c.timer);
    braid_free(s->u.c.addr);
    s->u.c.addr = NULL;
  }
  if (st == BRAID_ECANCELED && s->timed_out)
    st = BRAID_ETIMEDOUT;
  if (st < 0) {
    braid__stream_fail(s, (int)st);
    return;
  }
  braid__stream_made(s);
}

static void braid__connect_cb(braid__op *op, intptr_t st) {
  braid__connect_done(braid__container_of(op, braid__stream, wop), st);
}

static void braid__connect_soon(braid_reactor_t *r, void *arg) {
  (void)r;
  braid__stream *s = arg;
  braid__connect_done(s, s->reason);
}

static void braid__connect_timeout(braid_timer_t *t, void *arg) {
  (void)t;
  braid__stream *s = arg;
  s->timed_out = 1;
  s->t.reactor->io->cancel(&s->sock, &s->wop);
}

int braid_connect(braid_reactor_t *r, const braid_addr_t *addr,
                  const braid_connect_options *opts, braid_protocol_t *p) {
  if (r == NULL || addr == NULL || p == NULL || p->ops == NULL ||
      !braid__addr_ok(addr))
    return BRAID_EINVAL;
  int fam = braid_addr_family(addr);
  if (fam == AF_UNIX && !(r->io->caps & BRAID__CAP_UNIX))
    return BRAID_ENOTSUP;
  braid__stream *s = braid_calloc(1, sizeof *s);
  if (s == NULL)
    return BRAID_ENOMEM;
  const braid__io_ops *io = r->io;
  int rc = io->sock_open(r, &s->sock, fam, SOCK_STREAM);
  if (rc < 0) {
    braid_free(s);
    return rc;
  }
  r->live_streams++;
  s->nsocks = 1;
  braid_transport_init(&s->t, &braid__stream_vt, r, p);
  braid__handle_add(r, &s->h, braid__stream_abort_h);
  s->client = 1;
  s->tcp = fam != AF_UNIX;
  if (opts != NULL && opts->bind != NULL) {
    rc = io->sock_bind(&s->sock, braid__addr_csa(opts->bind),
                       (int)opts->bind->len_);
    if (rc < 0) {
      s->t.proto = NULL; /* no callbacks for an error returned here */
      braid__stream_shut(s);
      return rc;
    }
  }
  s->u.c.addr = braid_malloc(sizeof *addr);
  if (s->u.c.addr == NULL) {
    s->t.proto = NULL;
    braid__stream_shut(s);
    return BRAID_ENOMEM;
  }
  *s->u.c.addr = *addr;
  s->u.c.timer = (braid_timer_t)BRAID_TIMER_INIT;
  s->connecting = 1;
  s->wop.type = BRAID__OP_CONNECT;
  s->wop.flags = 0;
  s->wop.cb = braid__connect_cb;
  s->wop.addr = braid__addr_sa(s->u.c.addr);
  s->wop.addrlen = (int)addr->len_;
  intptr_t st = io->submit(&s->sock, &s->wop);
  if (st == BRAID__PENDING) {
    s->writing = 1;
    if (opts != NULL && opts->timeout > 0) {
      /* Timers count from the loop's cached time, which is as old as the
       * last iteration: a connect started after a long stretch of work
       * outside the loop would time out early (or at once). The timeout
       * is promised from this call, so add the staleness. A manual clock
       * is left alone: tests move it by hand. */
      uint64_t delay = opts->timeout;
      if (!(r->flags & BRAID_REACTOR_MANUAL_CLOCK)) {
        uint64_t now = braid__hrtime();
        if (now > r->now && delay + (now - r->now) > delay)
          delay += now - r->now;
      }
      braid_timer_start(r, &s->u.c.timer, delay, braid__connect_timeout, s);
    }
    return 0;
  }
  /* Completed at once (Unix sockets usually do): report it from the loop,
   * never from inside this call. */
  s->reason = (int)st;
  rc = braid_call_soon(r, braid__connect_soon, s);
  if (rc < 0) {
    s->t.proto = NULL;
    braid__stream_shut(s);
    return rc;
  }
  return 0;
}

/* ------------------------------------------------------------------------
 * Pipes
 * ------------------------------------------------------------------------ */

/* The pending call holds the stream like a descriptor (nsocks), so that a
 * transport closed before it runs is freed only here. */
static void braid__pipe_soon(braid_reactor_t *r, void *arg) {
  (void)r;
  braid__stream *s = arg;
  s->soon = 0;
  if (s->closed) {
    braid__stream_closed(&s->sock);
    return;
  }
  s->nsocks--;
  braid__stream_made(s);
}

int braid_pipe_open(braid_reactor_t *r, int read_fd, int write_fd,
                    braid_protocol_t *p, braid_transport_t **out) {
  if (out != NULL)
    *out = NULL;
  if (r == NULL || p == NULL || p->ops == NULL ||
      (read_fd < 0 && write_fd < 0) || read_fd == write_fd)
    return BRAID_EINVAL;
  if (!(r->io->caps & BRAID__CAP_PIPE))
    return BRAID_ENOTSUP;
  int two = read_fd >= 0 && write_fd >= 0;
  braid__stream *s =
      braid_calloc(1, two ? sizeof(braid__pipe2) : sizeof(braid__stream));
  if (s == NULL)
    return BRAID_ENOMEM;
  /* The engine needs non-blocking descriptors; both are close-on-exec so
   * that no child spawned later inherits them. */
  int rc = read_fd >= 0 ? braid__fd_prepare(read_fd) : 0;
  if (rc == 0 && write_fd >= 0)
    rc = braid__fd_prepare(write_fd);
  if (rc == 0)
    rc = r->io->sock_adopt(r, &s->sock,
                           (braid__fd)(read_fd >= 0 ? read_fd : write_fd));
  if (rc < 0) {
    braid_free(s);
    return rc;
  }
  r->live_streams++;
  s->nsocks = 1;
  s->pipe = 1;
  s->noread = read_fd < 0;
  braid_transport_init(&s->t, &braid__stream_vt, r, p);
  braid__handle_add(r, &s->h, braid__stream_abort_h);
  if (two) {
    braid__sock *ws = &((braid__pipe2 *)s)->wsock;
    rc = r->io->sock_adopt(r, ws, (braid__fd)write_fd);
    if (rc < 0) {
      s->t.proto = NULL;
      braid__stream_shut(s); /* closes read_fd; write_fd stays the caller's */
      return rc;
    }
    s->wopen = 1;
    s->nsocks = 2;
  }
  /* connection_made from the loop, never from inside this call (as for a
   * connect that completes at once). */
  s->client = 1;
  rc = braid_call_soon(r, braid__pipe_soon, s);
  if (rc < 0) {
    s->t.proto = NULL;
    braid__stream_shut(s);
    return rc;
  }
  s->nsocks++;
  s->soon = 1;
  *out = &s->t;
  return 0;
}
