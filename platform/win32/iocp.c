/* The Windows I/O layer: an I/O completion port per reactor, and Winsock
 * operations as completions (core/io.h).
 *
 *   - Ops are overlapped Winsock calls (AcceptEx, ConnectEx, WSARecv,
 *     WSASend, WSARecvFrom, WSASendTo) whose OVERLAPPED is embedded in the
 *     braid__op. Sockets are registered with
 *     FILE_SKIP_COMPLETION_PORT_ON_SUCCESS where the provider allows it, so
 *     an op that succeeds at once completes inline and queues nothing.
 *   - wait() takes completions in batches with GetQueuedCompletionStatusEx;
 *     its timeout is the next timer. wakeup() posts a packet with
 *     PostQueuedCompletionStatus.
 *   - READ with read.base == NULL (core's streams): a non-blocking recv()
 *     into a per-reactor buffer, and when nothing is there a zero-byte
 *     WSARecv as a readiness probe, so an idle connection holds no buffer.
 *   - close() cancels with CancelIoEx and closes the socket; every op still
 *     held completes (Windows always delivers a completion for a cancelled
 *     op), and close_cb runs from the wait() after the last one (core/io.c).
 * Socket calls done at once are in sock.c, console events (signals) in
 * signal.c. Per-socket state is braid__wsock (win32.h), per-op state
 * braid__wop below, both in the private storage of core/io.h. */
#include <winsock2.h>
#include <windows.h>
#include <mswsock.h>
#include <ws2tcpip.h>
#include <limits.h>
#include <string.h>

#include "platform/win32/win32.h"

/* Completion key of the sockets' packets (wakeups: BRAID__KEY_WAKE). */
#define BRAID__KEY_IO 1

#define BRAID__BATCH 128
#define BRAID__WSABUFS 64
#define BRAID__RBUF (64 * 1024)
#define BRAID__ACCEPT_ADDR (sizeof(SOCKADDR_STORAGE) + 16)

/* braid__wop.flags */
#define BRAID__WOP_KERNEL 0x1u /* an overlapped call is in flight */
#define BRAID__WOP_PROBE 0x2u  /* the call in flight is a zero-byte probe */

/* An op's record (braid__op's private storage). The OVERLAPPED comes
 * first: a packet names it, and braid__wop_of() finds the op from it. */
typedef struct braid__wop {
  OVERLAPPED ov;
  /* What the call in flight needs until it completes: an AcceptEx's
   * socket and address buffer (braid__accept_ctx), a WSARecvFrom's buffer
   * of its own. */
  void *ctx;
  unsigned flags; /* BRAID__WOP_* */
} braid__wop;
BRAID__PRIV_FITS(braid__wop, braid__op);

static braid__wop *braid__wo(braid__op *op) {
  return BRAID__PRIV(braid__wop, op);
}

static braid__op *braid__wop_of(OVERLAPPED *ov) {
  return (braid__op *)(void *)((char *)ov - offsetof(braid__op, priv_));
}

/* What an AcceptEx in flight needs until it completes. */
typedef struct braid__accept_ctx {
  SOCKET fd;
  char addrs[2 * BRAID__ACCEPT_ADDR];
} braid__accept_ctx;

typedef struct braid__iocp {
  braid_reactor_t *r;
  HANDLE port;
  char *rbuf; /* the shared buffer of READ/RECVFROM with base == NULL */
  LPFN_ACCEPTEX acceptex;
  LPFN_CONNECTEX connectex;
} braid__iocp;

static braid__iocp *braid__st(braid_reactor_t *r) {
  return r->io_state;
}

/* ------------------------------------------------------------------------
 * init / destroy / wakeup
 * ------------------------------------------------------------------------ */

static int braid__iocp_init(braid_reactor_t *r, const char *name) {
  BRAID__UNUSED(name);
  int rc = braid__winsock_init();
  if (rc < 0)
    return rc;
  braid__iocp *e = braid_calloc(1, sizeof *e);
  if (e == NULL)
    return BRAID_ENOMEM;
  e->r = r;
  e->rbuf = braid_malloc(BRAID__RBUF);
  if (e->rbuf == NULL) {
    braid_free(e);
    return BRAID_ENOMEM;
  }
  e->port = CreateIoCompletionPort(INVALID_HANDLE_VALUE, NULL, 0, 1);
  if (e->port == NULL) {
    rc = braid__translate_sys_error((int)GetLastError());
    braid_free(e->rbuf);
    braid_free(e);
    return rc;
  }
  r->io_state = e;
  return 0;
}

static void braid__iocp_destroy(braid_reactor_t *r) {
  braid__iocp *e = braid__st(r);
  /* Closed sockets whose cancelled ops have not come back yet (they keep
   * the loop alive): their memory is core's and is freed by their close
   * callbacks, so wait for those completions (they are due: the sockets
   * are closed). Wine 8 delivers them a moment after closesocket(), not
   * inside it. */
  for (int i = 0; i < 200 && r->active_io > 0; i++)
    r->io->wait(r, 10 * 1000000);
  CloseHandle(e->port);
  braid_free(e->rbuf);
  braid_free(e);
  r->io_state = NULL;
}

static const char *braid__iocp_poller_name(const braid_reactor_t *r) {
  BRAID__UNUSED(r);
  return "iocp";
}

static void braid__iocp_wakeup(braid_reactor_t *r) {
  /* A failure here (out of non-paged pool) cannot be reported to the
   * caller's thread; the call stays queued for the next wakeup. */
  PostQueuedCompletionStatus(braid__st(r)->port, 0, BRAID__KEY_WAKE, NULL);
}

static int braid__iocp_backend_fd(const braid_reactor_t *r) {
  BRAID__UNUSED(r);
  return -1; /* a completion port is not a pollable descriptor */
}

static int braid__iocp_signal_watch(braid_reactor_t *r, int signo, int on) {
  return braid__sig_watch(r, (intptr_t)braid__st(r)->port, signo, on);
}

/* ------------------------------------------------------------------------
 * Starting ops. Each returns BRAID__PENDING when an overlapped call is in
 * flight (a completion will come through the port), BRAID__LATER to be
 * started again from the next wait(), else the final status.
 * ------------------------------------------------------------------------ */

/* An overlapped call returned: 0 (done at once) or SOCKET_ERROR. Returns
 * 1 if it completed at once and no packet will be queued, 0 if a packet
 * will come, or a BRAID_E* code. */
static int braid__issued(braid__sock *s, braid__op *op, int rc) {
  if (rc == 0 && (braid__ws(s)->flags & BRAID__W_SKIP))
    return 1;
  if (rc == 0 || WSAGetLastError() == WSA_IO_PENDING) {
    braid__wo(op)->flags |= BRAID__WOP_KERNEL;
    return 0;
  }
  return (int)braid__wsa_error();
}

static intptr_t braid__start_read(braid__iocp *e, braid__sock *s,
                                  braid__op *op) {
  if (op->u.read.base == NULL || op->u.read.base == e->rbuf) {
    /* Up to a few rounds of recv() then probe: a probe that completes at
     * once says data (or the end) is there for the next recv(). */
    for (int round = 0; round < 4; round++) {
      int n = recv(s->fd, e->rbuf, BRAID__RBUF, 0);
      if (n >= 0) {
        op->u.read.base = e->rbuf;
        op->u.read.len = BRAID__RBUF;
        return n;
      }
      if (WSAGetLastError() != WSAEWOULDBLOCK)
        return braid__wsa_error();
      op->u.read.base = NULL;
      braid__wop *wo = braid__wo(op);
      memset(&wo->ov, 0, sizeof wo->ov);
      WSABUF b = {0, NULL};
      DWORD got = 0, fl = 0;
      int rc =
          braid__issued(s, op, WSARecv(s->fd, &b, 1, &got, &fl, &wo->ov, NULL));
      if (rc < 0)
        return rc;
      if (rc == 0) {
        wo->flags |= BRAID__WOP_PROBE;
        return BRAID__PENDING;
      }
    }
    return BRAID__LATER; /* try again from the next wait() */
  }
  OVERLAPPED *ov = &braid__wo(op)->ov;
  memset(ov, 0, sizeof *ov);
  WSABUF b;
  b.buf = op->u.read.base;
  b.len = op->u.read.len > ULONG_MAX ? ULONG_MAX : (ULONG)op->u.read.len;
  DWORD got = 0, fl = 0;
  int rc = braid__issued(s, op, WSARecv(s->fd, &b, 1, &got, &fl, ov, NULL));
  if (rc < 0)
    return rc;
  return rc == 1 ? (intptr_t)got : BRAID__PENDING;
}

static size_t braid__wsabufs(braid__op *op, WSABUF *w) {
  braid__io_advance(op, 0); /* skip empty buffers */
  size_t n = 0;
  for (; n < op->u.write.nbufs && n < BRAID__WSABUFS; n++) {
    braid__buf *b = &op->u.write.bufs[n];
    w[n].buf = b->base;
    w[n].len = b->len > ULONG_MAX ? ULONG_MAX : (ULONG)b->len;
  }
  return n;
}

static intptr_t braid__start_write(braid__sock *s, braid__op *op) {
  for (;;) {
    WSABUF w[BRAID__WSABUFS];
    size_t n = braid__wsabufs(op, w);
    if (n == 0)
      return (intptr_t)op->u.write.done;
    OVERLAPPED *ov = &braid__wo(op)->ov;
    memset(ov, 0, sizeof *ov);
    DWORD sent = 0;
    int rc =
        braid__issued(s, op, WSASend(s->fd, w, (DWORD)n, &sent, 0, ov, NULL));
    if (rc < 0)
      return rc;
    if (rc == 0)
      return BRAID__PENDING;
    braid__io_advance(op, sent);
  }
}

/* BRAID__OPF_TRY: a plain non-blocking send (no OVERLAPPED, so no
 * completion packet), for the transports' write-through-at-once path. */
static intptr_t braid__try_write(braid__sock *s, braid__op *op) {
  WSABUF w[BRAID__WSABUFS];
  size_t n = braid__wsabufs(op, w);
  if (n == 0)
    return 0;
  DWORD sent = 0;
  if (WSASend(s->fd, w, (DWORD)n, &sent, 0, NULL, NULL) != 0)
    return WSAGetLastError() == WSAEWOULDBLOCK ? 0 : braid__wsa_error();
  return (intptr_t)sent;
}

static int braid__ext_fn(SOCKET fd, GUID guid, void **fn) {
  DWORD got = 0;
  if (WSAIoctl(fd, SIO_GET_EXTENSION_FUNCTION_POINTER, &guid, sizeof guid, fn,
               sizeof *fn, &got, NULL, NULL) != 0)
    return (int)braid__wsa_error();
  return 0;
}

static intptr_t braid__finish_accept(braid__sock *s, braid__op *op,
                                     braid__accept_ctx *c) {
  SOCKET fd = c->fd;
  braid_free(c);
  braid__wo(op)->ctx = NULL;
  /* Without it the accepted socket has no local/peer address and
   * shutdown() fails. */
  if (setsockopt(fd, SOL_SOCKET, SO_UPDATE_ACCEPT_CONTEXT, (char *)&s->fd,
                 sizeof s->fd) != 0) {
    intptr_t rc = braid__wsa_error();
    closesocket(fd);
    /* A connection reset while it waited in the backlog: Windows fails
     * the AcceptEx itself (ERROR_NETNAME_DELETED), wine 8 completes it and
     * fails here with WSAENOTCONN. Either way it is gone, and it is no
     * error of the listener's: the callers take the next one. */
    if (rc == BRAID_ENOTCONN || rc == BRAID_ECONNRESET)
      rc = BRAID_ECONNABORTED;
    return rc;
  }
  if (op->addr != NULL) {
    int len = op->addrlen;
    op->addrlen = getpeername(fd, op->addr, &len) == 0 ? len : 0;
  }
  op->u.accept.fd = fd;
  return 0;
}

static intptr_t braid__start_accept(braid__iocp *e, braid__sock *s,
                                    braid__op *op) {
  if (e->acceptex == NULL) {
    GUID g = WSAID_ACCEPTEX;
    int rc = braid__ext_fn(s->fd, g, (void **)&e->acceptex);
    if (rc < 0)
      return rc;
  }
  for (;;) {
    braid__accept_ctx *c = braid_malloc(sizeof *c);
    if (c == NULL)
      return BRAID_ENOMEM;
    c->fd = WSASocketW(braid__ws(s)->family, SOCK_STREAM, IPPROTO_TCP, NULL, 0,
                       WSA_FLAG_OVERLAPPED | WSA_FLAG_NO_HANDLE_INHERIT);
    if (c->fd == INVALID_SOCKET) {
      braid_free(c);
      return braid__wsa_error();
    }
    braid__wop *wo = braid__wo(op);
    wo->ctx = c;
    memset(&wo->ov, 0, sizeof wo->ov);
    DWORD got = 0;
    BOOL ok = e->acceptex(s->fd, c->fd, c->addrs, 0, BRAID__ACCEPT_ADDR,
                          BRAID__ACCEPT_ADDR, &got, &wo->ov);
    int rc = braid__issued(s, op, ok ? 0 : SOCKET_ERROR);
    if (rc == 0)
      return BRAID__PENDING;
    if (rc == 1) {
      intptr_t st = braid__finish_accept(s, op, c);
      if (st != BRAID_ECONNABORTED)
        return st;
      continue; /* gone before it was accepted: take the next one */
    }
    closesocket(c->fd);
    braid_free(c);
    wo->ctx = NULL;
    /* A connection reset while in the backlog is not the listener's
     * error: take the next one. */
    if (rc != BRAID_ECONNRESET && rc != BRAID_ECONNABORTED)
      return rc;
  }
}

static intptr_t braid__finish_connect(braid__sock *s) {
  /* Without it getpeername() and shutdown() fail on the socket. */
  if (setsockopt(s->fd, SOL_SOCKET, SO_UPDATE_CONNECT_CONTEXT, NULL, 0) != 0)
    return braid__wsa_error();
  return 0;
}

/* Connecting a datagram socket only sets its peer: a plain connect(),
 * done at once (ConnectEx takes connection-oriented sockets only). From
 * then on an ICMP port unreachable is worth reporting, as POSIX systems do
 * for connected sockets: SIO_UDP_CONNRESET back on. */
static intptr_t braid__connect_dgram(braid__sock *s, braid__op *op) {
  if (connect(s->fd, op->addr, op->addrlen) != 0)
    return braid__wsa_error();
  braid__ws(s)->flags |= BRAID__W_BOUND;
  BOOL on = TRUE;
  DWORD got = 0;
  WSAIoctl(s->fd, SIO_UDP_CONNRESET, &on, sizeof on, NULL, 0, &got, NULL, NULL);
  return 0;
}

static intptr_t braid__start_connect(braid__iocp *e, braid__sock *s,
                                     braid__op *op) {
  braid__wsock *ws = braid__ws(s);
  if (!(ws->flags & BRAID__W_STREAM))
    return braid__connect_dgram(s, op);
  if (e->connectex == NULL) {
    GUID g = WSAID_CONNECTEX;
    int rc = braid__ext_fn(s->fd, g, (void **)&e->connectex);
    if (rc < 0)
      return rc;
  }
  if (!(ws->flags & BRAID__W_BOUND)) {
    /* ConnectEx, unlike connect(), needs a bound socket: the wildcard
     * address and an ephemeral port. */
    struct sockaddr_storage any;
    memset(&any, 0, sizeof any);
    any.ss_family = (ADDRESS_FAMILY)op->addr->sa_family;
    int len = any.ss_family == AF_INET6 ? (int)sizeof(struct sockaddr_in6)
                                        : (int)sizeof(struct sockaddr_in);
    if (bind(s->fd, (struct sockaddr *)&any, len) != 0)
      return braid__wsa_error();
    ws->flags |= BRAID__W_BOUND;
  }
  OVERLAPPED *ov = &braid__wo(op)->ov;
  memset(ov, 0, sizeof *ov);
  BOOL ok = e->connectex(s->fd, op->addr, op->addrlen, NULL, 0, NULL, ov);
  int rc = braid__issued(s, op, ok ? 0 : SOCKET_ERROR);
  if (rc < 0)
    return rc;
  return rc == 0 ? BRAID__PENDING : braid__finish_connect(s);
}

/* A datagram socket's error as io.h reports it. With SIO_UDP_CONNRESET on
 * (connected sockets only, see braid__iocp_sock_adopt), Windows reports an
 * ICMP port unreachable as WSAECONNRESET; POSIX says ECONNREFUSED. */
static intptr_t braid__dgram_error(intptr_t st) {
  return st == BRAID_ECONNRESET ? BRAID_ECONNREFUSED : st;
}

/* A datagram of `n` bytes arrived in the op's own buffer (braid__wop.ctx):
 * copy what fits into where the op reads (the shared buffer, or the
 * caller's), mark a cut-off tail, free the buffer. */
static intptr_t braid__recvfrom_copy(braid__iocp *e, braid__op *op,
                                     intptr_t n) {
  char *buf = braid__wo(op)->ctx;
  braid__wo(op)->ctx = NULL;
  if (op->u.read.base == NULL) {
    op->u.read.base = e->rbuf;
    op->u.read.len = BRAID__RBUF;
  }
  if (n > 0 && (size_t)n > op->u.read.len) {
    op->flags |= BRAID__OPF_TRUNCATED;
    n = (intptr_t)op->u.read.len;
  }
  if (n > 0)
    memcpy(op->u.read.base, buf, (size_t)n);
  braid_free(buf);
  return n;
}

static intptr_t braid__start_recvfrom(braid__iocp *e, braid__sock *s,
                                      braid__op *op) {
  if (op->u.read.base == e->rbuf)
    op->u.read.base = NULL;
  char *dst = op->u.read.base != NULL ? op->u.read.base : e->rbuf;
  size_t cap = op->u.read.base != NULL ? op->u.read.len : BRAID__RBUF;
  /* A datagram already there comes with a plain non-blocking recvfrom():
   * no OVERLAPPED, so no completion packet to account for. A datagram
   * larger than the buffer fills it and fails with WSAEMSGSIZE, its tail
   * discarded, as MSG_TRUNC reports on POSIX. */
  int alen = op->addr != NULL ? op->addrlen : 0;
  int n = recvfrom(s->fd, dst, cap > INT_MAX ? INT_MAX : (int)cap, 0, op->addr,
                   op->addr != NULL ? &alen : NULL);
  if (n < 0 && WSAGetLastError() == WSAEMSGSIZE) {
    op->flags |= BRAID__OPF_TRUNCATED;
    n = cap > INT_MAX ? INT_MAX : (int)cap;
  }
  if (n >= 0) {
    op->u.read.base = dst;
    op->u.read.len = cap;
    op->addrlen = alen;
    return n;
  }
  if (WSAGetLastError() != WSAEWOULDBLOCK)
    return braid__dgram_error(braid__wsa_error());
  /* None yet: wait with an overlapped receive into a buffer of the op's
   * own, large enough for any datagram (64 KiB > 65,527 bytes, the
   * largest UDP payload over IPv6 without jumbograms). Datagrams cannot
   * be probed for with a zero-byte receive, which would consume one with
   * WSAEMSGSIZE, and a receive that can be too small completes with
   * STATUS_BUFFER_OVERFLOW, a warning for which a completion packet may
   * be queued even when the call itself already failed. */
  char *buf = braid_malloc(BRAID__RBUF);
  if (buf == NULL)
    return BRAID_ENOMEM;
  braid__wop *wo = braid__wo(op);
  wo->ctx = buf;
  memset(&wo->ov, 0, sizeof wo->ov);
  WSABUF b;
  b.buf = buf;
  b.len = BRAID__RBUF;
  DWORD got = 0, fl = 0;
  int rc = braid__issued(s, op,
                         WSARecvFrom(s->fd, &b, 1, &got, &fl, op->addr,
                                     op->addr != NULL ? &op->addrlen : NULL,
                                     &wo->ov, NULL));
  if (rc == 0)
    return BRAID__PENDING;
  intptr_t st = rc == 1 ? (intptr_t)got : braid__dgram_error(rc);
  return braid__recvfrom_copy(e, op, st);
}

static intptr_t braid__start_sendto(braid__sock *s, braid__op *op) {
  WSABUF w[BRAID__WSABUFS];
  if (op->u.write.nbufs > BRAID__WSABUFS)
    return BRAID_EMSGSIZE;
  for (size_t i = 0; i < op->u.write.nbufs; i++) {
    w[i].buf = op->u.write.bufs[i].base;
    w[i].len = (ULONG)op->u.write.bufs[i].len;
  }
  OVERLAPPED *ov = &braid__wo(op)->ov;
  memset(ov, 0, sizeof *ov);
  DWORD sent = 0;
  int alen = op->addr != NULL ? op->addrlen : 0;
  int rc = braid__issued(s, op,
                         WSASendTo(s->fd, w, (DWORD)op->u.write.nbufs, &sent, 0,
                                   op->addr, alen, ov, NULL));
  if (rc < 0)
    return braid__dgram_error(rc);
  return rc == 0 ? BRAID__PENDING : (intptr_t)sent;
}

static intptr_t braid__start(braid__iocp *e, braid__sock *s, braid__op *op) {
  switch (op->type) {
  case BRAID__OP_READ:
    return braid__start_read(e, s, op);
  case BRAID__OP_WRITE:
    return braid__start_write(s, op);
  case BRAID__OP_ACCEPT:
    return braid__start_accept(e, s, op);
  case BRAID__OP_CONNECT:
    return braid__start_connect(e, s, op);
  case BRAID__OP_RECVFROM:
    return braid__start_recvfrom(e, s, op);
  case BRAID__OP_SENDTO:
    return braid__start_sendto(s, op);
  }
  return BRAID_EINVAL;
}

/* ------------------------------------------------------------------------
 * start / abort (core/io.c does submit and cancel around them)
 * ------------------------------------------------------------------------ */

static intptr_t braid__iocp_start(braid__sock *s, braid__op *op) {
  braid__wop *wo = braid__wo(op);
  wo->ctx = NULL;
  wo->flags = 0;
  if (op->type == BRAID__OP_WRITE && (op->flags & BRAID__OPF_TRY))
    return braid__try_write(s, op);
  /* Started by the next wait() (core/io.c), so never inline. */
  if (op->flags & BRAID__OPF_DEFER)
    return BRAID__LATER;
  return braid__start(braid__st(s->reactor), s, op);
}

static int braid__iocp_abort(braid__sock *s, braid__op *op) {
  /* ERROR_NOT_FOUND: the completion is already queued; it is delivered
   * as it is ("unless it completed first"). */
  if ((braid__wo(op)->flags & BRAID__WOP_KERNEL) && s->fd != INVALID_SOCKET)
    CancelIoEx((HANDLE)s->fd, &braid__wo(op)->ov);
  return 0;
}

/* ------------------------------------------------------------------------
 * Completions
 * ------------------------------------------------------------------------ */

/* The status of a failed overlapped call, as a BRAID_E* code. The packet
 * carries an NTSTATUS; WSAGetOverlappedResult turns it into the Winsock
 * code. Any failure counts, whatever the code: wine 8.0 completes a
 * WSARecv pending at closesocket() with 0x8000000A, Windows with 995. */
static intptr_t braid__ov_error(braid__sock *s, braid__op *op) {
  if (braid__io_cancel_asked(op))
    return BRAID_ECANCELED;
  DWORD got = 0, fl = 0;
  if (s->fd == INVALID_SOCKET ||
      WSAGetOverlappedResult(s->fd, &braid__wo(op)->ov, &got, FALSE, &fl))
    return BRAID_ECONNABORTED;
  int rc = (int)braid__wsa_error();
  return rc == BRAID_EUNKNOWN ? BRAID_ECONNABORTED : rc;
}

/* A packet for op. Core (braid__io_complete) turns a closing socket's
 * completions into BRAID_ECANCELED and closes what an accept took. */
static void braid__iocp_complete(braid__iocp *e, braid__op *op, BOOL ok,
                                 DWORD bytes) {
  braid__sock *s = op->sock;
  braid__wop *wo = braid__wo(op);
  wo->flags &= ~BRAID__WOP_KERNEL;
  int closing = s->closing_;
  int cancel = closing || braid__io_cancel_asked(op);
  intptr_t st;
  switch (op->type) {
  case BRAID__OP_READ:
    if (wo->flags & BRAID__WOP_PROBE) {
      wo->flags &= ~BRAID__WOP_PROBE;
      /* Nothing was read yet, so a cancelled probe loses no data. */
      if (cancel) {
        st = BRAID_ECANCELED;
        break;
      }
      if (!ok) {
        st = braid__ov_error(s, op);
        break;
      }
      st = braid__start_read(e, s, op);
      if (st == BRAID__PENDING)
        return; /* woken for nothing: probing again */
      if (st == BRAID__LATER) {
        braid__io_later(op);
        return;
      }
      break;
    }
    st = ok ? (intptr_t)bytes : braid__ov_error(s, op);
    break;
  case BRAID__OP_WRITE:
    if (!ok) {
      st = braid__ov_error(s, op);
      break;
    }
    if (braid__io_advance(op, bytes) == 0 || closing) {
      st = (intptr_t)op->u.write.done;
      break;
    }
    if (braid__io_cancel_asked(op)) {
      st = BRAID_ECANCELED;
      break;
    }
    st = braid__start_write(s, op);
    if (st == BRAID__PENDING)
      return;
    break;
  case BRAID__OP_ACCEPT: {
    braid__accept_ctx *c = wo->ctx;
    if (!ok || cancel) {
      st = ok ? BRAID_ECANCELED : braid__ov_error(s, op);
      closesocket(c->fd);
      braid_free(c);
      wo->ctx = NULL;
      if (!cancel && (st == BRAID_ECONNRESET || st == BRAID_ECONNABORTED)) {
        st = braid__start_accept(e, s, op); /* a backlog casualty */
        if (st == BRAID__PENDING)
          return;
      }
      break;
    }
    st = braid__finish_accept(s, op, c);
    if (st == BRAID_ECONNABORTED) {
      st = braid__start_accept(e, s, op); /* see braid__finish_accept */
      if (st == BRAID__PENDING)
        return;
    }
    break;
  }
  case BRAID__OP_CONNECT:
    if (!ok)
      st = braid__ov_error(s, op);
    else
      st = closing ? BRAID_ECANCELED : braid__finish_connect(s);
    break;
  case BRAID__OP_RECVFROM:
    /* Into the op's own buffer: copied to where the op reads. */
    st = ok ? (intptr_t)bytes : braid__dgram_error(braid__ov_error(s, op));
    st = braid__recvfrom_copy(e, op, st);
    break;
  default: /* SENDTO */
    st = ok ? (intptr_t)bytes : braid__dgram_error(braid__ov_error(s, op));
    break;
  }
  braid__io_complete(op, st);
}

static int braid__iocp_wait(braid_reactor_t *r, int64_t timeout_ns) {
  braid__iocp *e = braid__st(r);
  /* Ops deferred before this wait() run after its completions, those the
   * completions' callbacks defer in the next one (BRAID__OPF_DEFER). */
  timeout_ns = braid__io_wait_begin(r, timeout_ns);
  DWORD ms;
  if (timeout_ns < 0)
    ms = INFINITE;
  else {
    int64_t m = (timeout_ns + 999999) / 1000000;
    ms = m >= (int64_t)INFINITE ? INFINITE - 1 : (DWORD)m;
  }
  OVERLAPPED_ENTRY ents[BRAID__BATCH];
  ULONG n = 0;
  int rc = 0;
  if (!GetQueuedCompletionStatusEx(e->port, ents, BRAID__BATCH, &n, ms,
                                   FALSE)) {
    DWORD err = GetLastError();
    n = 0;
    /* WAIT_TIMEOUT is the timeout; WAIT_IO_COMPLETION cannot happen with
     * fAlertable FALSE but is harmless. */
    if (err != WAIT_TIMEOUT && err != WAIT_IO_COMPLETION)
      rc = braid__translate_sys_error((int)err);
  }
  /* Callbacks (and the timers they start) see the time after the wait. */
  braid_reactor_update_time(e->r);
  int woken = 0;
  for (ULONG i = 0; i < n; i++) {
    if (ents[i].lpCompletionKey == BRAID__KEY_WAKE) {
      woken = 1;
      continue;
    }
    OVERLAPPED *ov = ents[i].lpOverlapped;
    /* The packet's status is the NTSTATUS left in OVERLAPPED.Internal;
     * anything but STATUS_SUCCESS (0) is a failure or an abort. */
    braid__iocp_complete(e, braid__wop_of(ov), ov->Internal == 0,
                         ents[i].dwNumberOfBytesTransferred);
  }
  if (woken)
    braid__reactor_wakeup_drain(r);
  braid__io_wait_end(r);
  return rc;
}

/* ------------------------------------------------------------------------
 * Sockets
 * ------------------------------------------------------------------------ */

static int braid__iocp_sock_adopt(braid_reactor_t *r, braid__sock *s,
                                  braid__fd fd) {
  braid__iocp *e = braid__st(r);
  braid__io_sock_init(r, s, fd);
  braid__wsock *ws = braid__ws(s);
  WSAPROTOCOL_INFOW info;
  int len = (int)sizeof info;
  if (getsockopt(fd, SOL_SOCKET, SO_PROTOCOL_INFOW, (char *)&info, &len) != 0)
    goto fail;
  ws->family = info.iAddressFamily;
  if (info.iSocketType == SOCK_STREAM)
    ws->flags |= BRAID__W_STREAM;
  /* Non-blocking, for the recv() after a probe and for OPF_TRY sends;
   * overlapped calls are not affected by it. */
  u_long one = 1;
  if (ioctlsocket(fd, FIONBIO, &one) != 0)
    goto fail;
  if (CreateIoCompletionPort((HANDLE)fd, e->port, BRAID__KEY_IO, 0) == NULL) {
    s->fd = INVALID_SOCKET;
    return braid__translate_sys_error((int)GetLastError());
  }
  /* Skipping the port on immediate success is only safe when the
   * provider's handles are real kernel (IFS) handles; a layered service
   * provider may complete through the port anyway (see libuv's
   * uv__tcp_non_ifs_lsp). */
  if ((info.dwServiceFlags1 & XP1_IFS_HANDLES) &&
      SetFileCompletionNotificationModes((HANDLE)fd,
                                         FILE_SKIP_COMPLETION_PORT_ON_SUCCESS |
                                             FILE_SKIP_SET_EVENT_ON_HANDLE))
    ws->flags |= BRAID__W_SKIP;
  if (info.iSocketType == SOCK_DGRAM) {
    /* Windows reports an ICMP port unreachable for an earlier sendto() as
     * WSAECONNRESET on the next receive; POSIX does not for an unconnected
     * socket (braid__connect_dgram turns it back on). */
    BOOL off = FALSE;
    DWORD got = 0;
    WSAIoctl(fd, SIO_UDP_CONNRESET, &off, sizeof off, NULL, 0, &got, NULL,
             NULL);
  }
  return 0;
fail:
  s->fd = INVALID_SOCKET;
  return (int)braid__wsa_error();
}

static int braid__iocp_sock_open(braid_reactor_t *r, braid__sock *s, int family,
                                 int type) {
  if (family == AF_UNIX)
    return BRAID_ENOTSUP; /* see BRAID__CAP_UNIX below */
  SOCKET fd = WSASocketW(family, type, 0, NULL, 0,
                         WSA_FLAG_OVERLAPPED | WSA_FLAG_NO_HANDLE_INHERIT);
  if (fd == INVALID_SOCKET)
    return (int)braid__wsa_error();
  int rc = braid__iocp_sock_adopt(r, s, fd);
  if (rc < 0)
    closesocket(fd);
  return rc;
}

static void braid__iocp_shut(braid__sock *s) {
  /* Every op in the kernel comes back through the port, aborted; core
   * holds the close callback until the last one has. */
  if (s->fd != INVALID_SOCKET) {
    /* closesocket() alone also aborts pending calls; CancelIoEx first makes
     * the abort explicit for every op, as on Windows 8 and later. */
    CancelIoEx((HANDLE)s->fd, NULL);
    closesocket(s->fd);
    s->fd = INVALID_SOCKET;
  }
}

const braid__io_ops braid__iocp_io = {
    .name = "iocp",
    /* No BRAID__CAP_UNIX: AF_UNIX exists from Windows 10 1803 but has no
     * AcceptEx/ConnectEx, and wine 8 has no AF_UNIX at all. No
     * BRAID__CAP_EMBED_FD: a port is not a descriptor. Signals: SIGINT and
     * SIGTERM only (signal_watch says BRAID_ENOTSUP for the rest). */
    .caps = BRAID__CAP_SIGNALS | BRAID__CAP_COMPLETION | BRAID__CAP_TRY_WRITE,
    .init = braid__iocp_init,
    .destroy = braid__iocp_destroy,
    .poller_name = braid__iocp_poller_name,
    .wait = braid__iocp_wait,
    .wakeup = braid__iocp_wakeup,
    .signal_watch = braid__iocp_signal_watch,
    .signal_count = braid__io_signal_count,
    .sock_open = braid__iocp_sock_open,
    .sock_adopt = braid__iocp_sock_adopt,
    .fd_close = braid__iocp_fd_close,
    .sock_bind = braid__iocp_sock_bind,
    .sock_listen = braid__iocp_sock_listen,
    .sock_name = braid__iocp_sock_name,
    .sock_setopt = braid__iocp_sock_setopt,
    .sock_getopt = braid__iocp_sock_getopt,
    .sock_mcast = braid__iocp_sock_mcast,
    .sock_shutdown = braid__iocp_sock_shutdown,
    .submit = braid__io_submit,
    .cancel = braid__io_cancel,
    .close = braid__io_close,
    .start = braid__iocp_start,
    .abort = braid__iocp_abort,
    .shut = braid__iocp_shut,
    .backend_fd = braid__iocp_backend_fd,
    /* Ops and close callbacks queued for the next wait() (core/io.c),
     * which then does not block. */
    .pending = braid__io_busy,
};
