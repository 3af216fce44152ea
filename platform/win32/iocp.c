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
 *     op), and close_cb runs from the wait() after the last one.
 *   - Signals: SIGINT and SIGTERM come from console control events
 *     (SetConsoleCtrlHandler); other signal numbers are BRAID_ENOTSUP.
 *
 * Per-socket platform fields (braid__sock): flags_ holds BRAID__W_*,
 * events_ counts the ops this layer holds for the socket (in the kernel or
 * on the done list), pidx_ is the address family. Per-op private flags
 * share braid__op.flags with BRAID__OPF_*. */
#include <winsock2.h>
#include <windows.h>
#include <mswsock.h>
#include <ws2tcpip.h>
#include <limits.h>
#include <signal.h>
#include <string.h>

#include "core/internal.h"
#include "platform/win32/win32.h"

/* braid__sock.flags_ */
#define BRAID__W_CLOSING 0x1u
#define BRAID__W_SKIP 0x2u  /* FILE_SKIP_COMPLETION_PORT_ON_SUCCESS is set */
#define BRAID__W_BOUND 0x4u /* bound: ConnectEx may be called */
#define BRAID__W_STREAM 0x8u

/* braid__op.flags, above the public BRAID__OPF_* bits */
#define BRAID__OPF_HELD_ 0x10u   /* this layer holds the op */
#define BRAID__OPF_KERNEL_ 0x20u /* an overlapped call is in flight */
#define BRAID__OPF_CANCEL_ 0x40u /* cancel() asked */
#define BRAID__OPF_PROBE_ 0x80u  /* the call in flight is a zero-byte probe */

/* Completion keys. */
#define BRAID__KEY_IO 1
#define BRAID__KEY_WAKE 2

/* A done-list entry whose op has not been started yet (BRAID__OPF_DEFER, or
 * a probe that keeps succeeding with nothing to read). */
#define BRAID__START INTPTR_MIN

#define BRAID__BATCH 128
#define BRAID__WSABUFS 64
#define BRAID__RBUF (64 * 1024)
#define BRAID__ACCEPT_ADDR (sizeof(SOCKADDR_STORAGE) + 16)

typedef struct braid__done {
  braid__op *op;
  intptr_t st;
} braid__done;

/* What an AcceptEx in flight needs until it completes; held in op->next_. */
typedef struct braid__accept_ctx {
  SOCKET fd;
  char addrs[2 * BRAID__ACCEPT_ADDR];
} braid__accept_ctx;

typedef struct braid__iocp {
  braid_reactor_t *r;
  HANDLE port;
  char *rbuf; /* the shared buffer of READ/RECVFROM with base == NULL */
  /* Results to deliver from the next wait(): ops that may not complete
   * inline, and ops started late. */
  braid__done *done;
  size_t done_len, done_cap;
  size_t done_head; /* entries before it were taken by the running pass */
  braid__sock *closing, *closing_tail; /* close_cb due */
  size_t zombies; /* ops of closed sockets still in the kernel */
  LPFN_ACCEPTEX acceptex;
  LPFN_CONNECTEX connectex;
  int sig_slot;
  unsigned sig_refs;
} braid__iocp;

static braid__iocp *braid__st(braid_reactor_t *r) {
  return r->io_state;
}

static intptr_t braid__wsa_error(void) {
  return braid__translate_sys_error(WSAGetLastError());
}

/* ------------------------------------------------------------------------
 * Signals: console control events
 *
 * Console events are process-wide and arrive on a thread Windows creates
 * for the handler, so, as with POSIX signals, the only process-wide state
 * is a delivery counter per signal and the ports of the reactors watching;
 * the handler bumps the counter and wakes each port. Unlike a POSIX signal
 * handler it may take a lock.
 * ------------------------------------------------------------------------ */

#define BRAID__SIG_SLOTS 64

static SRWLOCK braid__sig_lock = SRWLOCK_INIT;
static HANDLE braid__sig_ports[BRAID__SIG_SLOTS];
static unsigned braid__sig_users;
static volatile LONG braid__sig_int, braid__sig_term;

static BOOL WINAPI braid__console_handler(DWORD ev) {
  int term = 0;
  switch (ev) {
  case CTRL_C_EVENT:
  case CTRL_BREAK_EVENT:
    InterlockedIncrement(&braid__sig_int);
    break;
  case CTRL_CLOSE_EVENT:
  case CTRL_LOGOFF_EVENT:
  case CTRL_SHUTDOWN_EVENT:
    InterlockedIncrement(&braid__sig_term);
    term = 1;
    break;
  default:
    return FALSE;
  }
  AcquireSRWLockShared(&braid__sig_lock);
  for (int i = 0; i < BRAID__SIG_SLOTS; i++)
    if (braid__sig_ports[i] != NULL)
      PostQueuedCompletionStatus(braid__sig_ports[i], 0, BRAID__KEY_WAKE, NULL);
  ReleaseSRWLockShared(&braid__sig_lock);
  /* Windows ends the process as soon as the handler of a close, logoff or
   * shutdown event returns (and at the latest after about 5 s): give the
   * loop that time to shut down cleanly, as libuv does for SIGHUP. */
  if (term)
    Sleep(5000);
  return TRUE;
}

static int braid__iocp_signal_watch(braid_reactor_t *r, int signo, int on) {
  braid__iocp *e = braid__st(r);
  if (signo != SIGINT && signo != SIGTERM)
    return BRAID_ENOTSUP; /* no console event maps to it */
  int rc = 0;
  AcquireSRWLockExclusive(&braid__sig_lock);
  if (on) {
    if (e->sig_refs == 0) {
      int i = 0;
      while (i < BRAID__SIG_SLOTS && braid__sig_ports[i] != NULL)
        i++;
      if (i == BRAID__SIG_SLOTS) {
        rc = BRAID_ELIMIT; /* more than 64 reactors watching signals */
        goto out;
      }
      if (braid__sig_users == 0 &&
          !SetConsoleCtrlHandler(braid__console_handler, TRUE)) {
        rc = braid__translate_sys_error((int)GetLastError());
        goto out;
      }
      braid__sig_users++;
      braid__sig_ports[i] = e->port;
      e->sig_slot = i;
    }
    e->sig_refs++;
  } else if (e->sig_refs > 0 && --e->sig_refs == 0) {
    braid__sig_ports[e->sig_slot] = NULL;
    e->sig_slot = -1;
    if (--braid__sig_users == 0)
      SetConsoleCtrlHandler(braid__console_handler, FALSE);
  }
out:
  ReleaseSRWLockExclusive(&braid__sig_lock);
  return rc;
}

static unsigned braid__iocp_signal_count(braid_reactor_t *r, int signo) {
  BRAID__UNUSED(r);
  if (signo == SIGINT)
    return (unsigned)InterlockedCompareExchange(&braid__sig_int, 0, 0);
  if (signo == SIGTERM)
    return (unsigned)InterlockedCompareExchange(&braid__sig_term, 0, 0);
  return 0;
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
  e->sig_slot = -1;
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
  /* Closed sockets whose cancelled ops have not come back yet: their memory
   * is core's and is freed by their close callbacks, so wait for those
   * completions (they are due: the sockets are closed). Wine 8 delivers them
   * a moment after closesocket(), not inside it. */
  for (int i = 0; i < 200 && e->zombies > 0; i++)
    r->io->wait(r, 10 * 1000000);
  if (e->sig_refs > 0) {
    e->sig_refs = 1;
    braid__iocp_signal_watch(r, SIGINT, 0);
  }
  CloseHandle(e->port);
  braid_free(e->done);
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

static int braid__iocp_pending(const braid_reactor_t *r) {
  const braid__iocp *e = r->io_state;
  /* Results and close callbacks queued for the next wait(), which then
   * does not block (braid__iocp_wait uses a zero timeout for them). */
  return e->done_len > 0 || e->closing != NULL;
}

/* ------------------------------------------------------------------------
 * Bookkeeping: holding, delivering, closing
 * ------------------------------------------------------------------------ */

static void braid__hold(braid__sock *s, braid__op *op) {
  op->flags |= BRAID__OPF_HELD_;
  s->events_++;
  s->reactor->active_io++;
}

static int braid__done_push(braid__iocp *e, braid__op *op, intptr_t st) {
  if (e->done_len == e->done_cap) {
    size_t cap = e->done_cap ? e->done_cap * 2 : 32;
    braid__done *d = braid_realloc(e->done, cap * sizeof *d);
    if (d == NULL)
      return BRAID_ENOMEM;
    e->done = d;
    e->done_cap = cap;
  }
  e->done[e->done_len].op = op;
  e->done[e->done_len].st = st;
  e->done_len++;
  return 0;
}

static void braid__closing_push(braid__iocp *e, braid__sock *s) {
  s->next_closing_ = NULL;
  if (e->closing_tail != NULL)
    e->closing_tail->next_closing_ = s;
  else
    e->closing = s;
  e->closing_tail = s;
}

/* The op's final status goes to its callback; a closed socket whose last
 * op this was gets its close callback at the end of this wait(). */
static void braid__deliver(braid__iocp *e, braid__op *op, intptr_t st) {
  braid__sock *s = op->sock;
  braid_reactor_t *r = e->r;
  int was_closing = (s->flags_ & BRAID__W_CLOSING) != 0;
  if (was_closing) {
    /* Everything pending at close completes as cancelled, as on the POSIX
     * engine, whatever the kernel managed to do meanwhile. */
    if (op->type == BRAID__OP_ACCEPT && st == 0)
      closesocket(op->u.accept.fd);
    st = BRAID_ECANCELED;
  }
  op->flags &= (uint8_t) ~(BRAID__OPF_HELD_ | BRAID__OPF_KERNEL_ |
                           BRAID__OPF_CANCEL_ | BRAID__OPF_PROBE_);
  s->events_--;
  r->active_io--;
  r->depth++;
  op->cb(op, st);
  r->depth--;
  /* A close() inside the callback with nothing else held has queued the
   * socket itself; queue it here only if it was closed before. */
  if (was_closing && s->events_ == 0)
    braid__closing_push(e, s);
}

/* ------------------------------------------------------------------------
 * Starting ops. Each returns BRAID__PENDING when an overlapped call is in
 * flight (a completion will come through the port), else the final status.
 * ------------------------------------------------------------------------ */

/* An overlapped call returned: 0 (done at once) or SOCKET_ERROR. Returns
 * 1 if it completed at once and no packet will be queued, 0 if a packet
 * will come, or a BRAID_E* code. */
static int braid__issued(braid__sock *s, braid__op *op, int rc) {
  if (rc == 0 && (s->flags_ & BRAID__W_SKIP))
    return 1;
  if (rc == 0 || WSAGetLastError() == WSA_IO_PENDING) {
    op->flags |= BRAID__OPF_KERNEL_;
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
      memset(&op->ov_, 0, sizeof op->ov_);
      WSABUF b = {0, NULL};
      DWORD got = 0, fl = 0;
      int rc = braid__issued(s, op,
                             WSARecv(s->fd, &b, 1, &got, &fl, &op->ov_, NULL));
      if (rc < 0)
        return rc;
      if (rc == 0) {
        op->flags |= BRAID__OPF_PROBE_;
        return BRAID__PENDING;
      }
    }
    return BRAID__START; /* retry from the done list */
  }
  memset(&op->ov_, 0, sizeof op->ov_);
  WSABUF b;
  b.buf = op->u.read.base;
  b.len = op->u.read.len > ULONG_MAX ? ULONG_MAX : (ULONG)op->u.read.len;
  DWORD got = 0, fl = 0;
  int rc =
      braid__issued(s, op, WSARecv(s->fd, &b, 1, &got, &fl, &op->ov_, NULL));
  if (rc < 0)
    return rc;
  return rc == 1 ? (intptr_t)got : BRAID__PENDING;
}

/* Drop `n` sent bytes from the front of a write op's buffers. */
static void braid__advance(braid__op *op, size_t n) {
  op->u.write.done += n;
  while (n > 0 && op->u.write.nbufs > 0) {
    braid__buf *b = op->u.write.bufs;
    size_t take = n < b->len ? n : b->len;
    b->base = (char *)b->base + take;
    b->len -= take;
    n -= take;
    if (b->len == 0) {
      op->u.write.bufs++;
      op->u.write.nbufs--;
    }
  }
}

static size_t braid__wsabufs(braid__op *op, WSABUF *w) {
  while (op->u.write.nbufs > 0 && op->u.write.bufs->len == 0) {
    op->u.write.bufs++;
    op->u.write.nbufs--;
  }
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
    memset(&op->ov_, 0, sizeof op->ov_);
    DWORD sent = 0;
    int rc = braid__issued(
        s, op, WSASend(s->fd, w, (DWORD)n, &sent, 0, &op->ov_, NULL));
    if (rc < 0)
      return rc;
    if (rc == 0)
      return BRAID__PENDING;
    braid__advance(op, sent);
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
  op->next_ = NULL;
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
    c->fd = WSASocketW(s->pidx_, SOCK_STREAM, IPPROTO_TCP, NULL, 0,
                       WSA_FLAG_OVERLAPPED | WSA_FLAG_NO_HANDLE_INHERIT);
    if (c->fd == INVALID_SOCKET) {
      braid_free(c);
      return braid__wsa_error();
    }
    op->next_ = (braid__op *)(void *)c; /* see braid__accept_ctx */
    memset(&op->ov_, 0, sizeof op->ov_);
    DWORD got = 0;
    BOOL ok = e->acceptex(s->fd, c->fd, c->addrs, 0, BRAID__ACCEPT_ADDR,
                          BRAID__ACCEPT_ADDR, &got, &op->ov_);
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
    op->next_ = NULL;
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
  s->flags_ |= BRAID__W_BOUND;
  BOOL on = TRUE;
  DWORD got = 0;
  WSAIoctl(s->fd, SIO_UDP_CONNRESET, &on, sizeof on, NULL, 0, &got, NULL, NULL);
  return 0;
}

static intptr_t braid__start_connect(braid__iocp *e, braid__sock *s,
                                     braid__op *op) {
  if (!(s->flags_ & BRAID__W_STREAM))
    return braid__connect_dgram(s, op);
  if (e->connectex == NULL) {
    GUID g = WSAID_CONNECTEX;
    int rc = braid__ext_fn(s->fd, g, (void **)&e->connectex);
    if (rc < 0)
      return rc;
  }
  if (!(s->flags_ & BRAID__W_BOUND)) {
    /* ConnectEx, unlike connect(), needs a bound socket: the wildcard
     * address and an ephemeral port. */
    struct sockaddr_storage any;
    memset(&any, 0, sizeof any);
    any.ss_family = (ADDRESS_FAMILY)op->addr->sa_family;
    int len = any.ss_family == AF_INET6 ? (int)sizeof(struct sockaddr_in6)
                                        : (int)sizeof(struct sockaddr_in);
    if (bind(s->fd, (struct sockaddr *)&any, len) != 0)
      return braid__wsa_error();
    s->flags_ |= BRAID__W_BOUND;
  }
  memset(&op->ov_, 0, sizeof op->ov_);
  BOOL ok = e->connectex(s->fd, op->addr, op->addrlen, NULL, 0, NULL, &op->ov_);
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

/* A datagram of `n` bytes arrived in the op's own buffer (op->next_):
 * copy what fits into where the op reads (the shared buffer, or the
 * caller's), mark a cut-off tail, free the buffer. */
static intptr_t braid__recvfrom_copy(braid__iocp *e, braid__op *op,
                                     intptr_t n) {
  char *buf = (char *)(void *)op->next_;
  op->next_ = NULL;
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
  op->next_ = (braid__op *)(void *)buf;
  memset(&op->ov_, 0, sizeof op->ov_);
  WSABUF b;
  b.buf = buf;
  b.len = BRAID__RBUF;
  DWORD got = 0, fl = 0;
  int rc = braid__issued(s, op,
                         WSARecvFrom(s->fd, &b, 1, &got, &fl, op->addr,
                                     op->addr != NULL ? &op->addrlen : NULL,
                                     &op->ov_, NULL));
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
  memset(&op->ov_, 0, sizeof op->ov_);
  DWORD sent = 0;
  int alen = op->addr != NULL ? op->addrlen : 0;
  int rc = braid__issued(s, op,
                         WSASendTo(s->fd, w, (DWORD)op->u.write.nbufs, &sent, 0,
                                   op->addr, alen, &op->ov_, NULL));
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
 * submit / cancel
 * ------------------------------------------------------------------------ */

static intptr_t braid__iocp_submit(braid__sock *s, braid__op *op) {
  braid__iocp *e = braid__st(s->reactor);
  op->sock = s;
  op->flags &= BRAID__OPF_TRY | BRAID__OPF_DEFER;
  op->next_ = NULL;
  if (s->flags_ & BRAID__W_CLOSING)
    return BRAID_ECLOSED;
  if (op->type == BRAID__OP_WRITE && (op->flags & BRAID__OPF_TRY))
    return braid__try_write(s, op);
  intptr_t st;
  if (op->flags & BRAID__OPF_DEFER) {
    st = BRAID__START;
  } else {
    st = braid__start(e, s, op);
    if (st == BRAID__PENDING) {
      braid__hold(s, op);
      return BRAID__PENDING;
    }
    if (st != BRAID__START)
      return st;
  }
  int rc = braid__done_push(e, op, st);
  if (rc < 0)
    return rc;
  braid__hold(s, op);
  return BRAID__PENDING;
}

static int braid__iocp_cancel(braid__sock *s, braid__op *op) {
  if (!(op->flags & BRAID__OPF_HELD_) || op->sock != s)
    return BRAID_EINVAL;
  op->flags |= BRAID__OPF_CANCEL_;
  /* ERROR_NOT_FOUND: the completion is already queued; it is delivered
   * as it is ("unless it completed first"). */
  if ((op->flags & BRAID__OPF_KERNEL_) && s->fd != INVALID_SOCKET)
    CancelIoEx((HANDLE)s->fd, &op->ov_);
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
  if (op->flags & BRAID__OPF_CANCEL_)
    return BRAID_ECANCELED;
  DWORD got = 0, fl = 0;
  if (s->fd == INVALID_SOCKET ||
      WSAGetOverlappedResult(s->fd, &op->ov_, &got, FALSE, &fl))
    return BRAID_ECONNABORTED;
  int rc = (int)braid__wsa_error();
  return rc == BRAID_EUNKNOWN ? BRAID_ECONNABORTED : rc;
}

static void braid__iocp_complete(braid__iocp *e, braid__op *op, BOOL ok,
                                 DWORD bytes) {
  braid__sock *s = op->sock;
  op->flags &= (uint8_t)~BRAID__OPF_KERNEL_;
  int closing = (s->flags_ & BRAID__W_CLOSING) != 0;
  if (closing)
    e->zombies--;
  int cancel = closing || (op->flags & BRAID__OPF_CANCEL_);
  intptr_t st;
  switch (op->type) {
  case BRAID__OP_READ:
    if (op->flags & BRAID__OPF_PROBE_) {
      op->flags &= (uint8_t)~BRAID__OPF_PROBE_;
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
      if (st == BRAID__START && braid__done_push(e, op, st) == 0)
        return;
      if (st == BRAID__START)
        st = BRAID_ENOMEM;
      break;
    }
    st = ok ? (intptr_t)bytes : braid__ov_error(s, op);
    break;
  case BRAID__OP_WRITE:
    if (!ok) {
      st = braid__ov_error(s, op);
      break;
    }
    braid__advance(op, bytes);
    if (op->u.write.nbufs == 0 || closing) {
      st = (intptr_t)op->u.write.done;
      break;
    }
    if (op->flags & BRAID__OPF_CANCEL_) {
      st = BRAID_ECANCELED;
      break;
    }
    st = braid__start_write(s, op);
    if (st == BRAID__PENDING)
      return;
    break;
  case BRAID__OP_ACCEPT: {
    braid__accept_ctx *c = (braid__accept_ctx *)(void *)op->next_;
    if (!ok || cancel) {
      st = ok ? BRAID_ECANCELED : braid__ov_error(s, op);
      closesocket(c->fd);
      braid_free(c);
      op->next_ = NULL;
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
  braid__deliver(e, op, st);
}

/* Deliver the done list as it stood on entry; entries added meanwhile wait
 * for the next wait(). */
static void braid__run_done(braid__iocp *e) {
  size_t n = e->done_len;
  for (size_t i = 0; i < n; i++) {
    braid__op *op = e->done[i].op;
    intptr_t st = e->done[i].st;
    e->done_head = i + 1;
    braid__sock *s = op->sock;
    if (st == BRAID__START) {
      if ((s->flags_ & BRAID__W_CLOSING) || (op->flags & BRAID__OPF_CANCEL_))
        st = BRAID_ECANCELED;
      else {
        st = braid__start(e, s, op);
        if (st == BRAID__PENDING)
          continue; /* the kernel has it now */
        if (st == BRAID__START) {
          if (braid__done_push(e, op, st) == 0)
            continue;
          st = BRAID_ENOMEM;
        }
      }
    }
    braid__deliver(e, op, st);
  }
  memmove(e->done, e->done + n, (e->done_len - n) * sizeof *e->done);
  e->done_len -= n;
  e->done_head = 0;
}

static int braid__iocp_wait(braid_reactor_t *r, int64_t timeout_ns) {
  braid__iocp *e = braid__st(r);
  if (e->done_len > 0 || e->closing != NULL)
    timeout_ns = 0;
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
    braid__op *op = braid__container_of(ents[i].lpOverlapped, braid__op, ov_);
    /* The packet's status is the NTSTATUS left in OVERLAPPED.Internal;
     * anything but STATUS_SUCCESS (0) is a failure or an abort. */
    braid__iocp_complete(e, op, op->ov_.Internal == 0,
                         ents[i].dwNumberOfBytesTransferred);
  }
  if (woken)
    braid__reactor_wakeup_drain(r);
  braid__run_done(e);
  while (e->closing != NULL) {
    braid__sock *s = e->closing;
    e->closing = s->next_closing_;
    if (e->closing == NULL)
      e->closing_tail = NULL;
    r->active_io--;
    if (s->close_cb != NULL) {
      r->depth++;
      s->close_cb(s);
      r->depth--;
    }
  }
  return rc;
}

/* ------------------------------------------------------------------------
 * Sockets
 * ------------------------------------------------------------------------ */

static int braid__iocp_sock_adopt(braid_reactor_t *r, braid__sock *s,
                                  braid__fd fd) {
  braid__iocp *e = braid__st(r);
  memset(s, 0, sizeof *s);
  s->fd = fd;
  s->reactor = r;
  WSAPROTOCOL_INFOW info;
  int len = (int)sizeof info;
  if (getsockopt(fd, SOL_SOCKET, SO_PROTOCOL_INFOW, (char *)&info, &len) != 0)
    goto fail;
  s->pidx_ = info.iAddressFamily;
  if (info.iSocketType == SOCK_STREAM)
    s->flags_ |= BRAID__W_STREAM;
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
    s->flags_ |= BRAID__W_SKIP;
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

static void braid__iocp_close(braid__sock *s, braid__close_cb cb) {
  braid__iocp *e = braid__st(s->reactor);
  if (s->flags_ & BRAID__W_CLOSING)
    return;
  s->flags_ |= BRAID__W_CLOSING;
  s->close_cb = cb;
  s->reactor->active_io++;
  if (s->fd != INVALID_SOCKET) {
    /* closesocket() alone also aborts pending calls; CancelIoEx first makes
     * the abort explicit for every op, as on Windows 8 and later. */
    CancelIoEx((HANDLE)s->fd, NULL);
    closesocket(s->fd);
    s->fd = INVALID_SOCKET;
  }
  if (s->events_ == 0) {
    braid__closing_push(e, s);
    return;
  }
  /* Ops on the done list are delivered as cancelled by the next wait();
   * ops in the kernel come back through the port. */
  size_t in_kernel = s->events_;
  for (size_t i = e->done_head; i < e->done_len; i++)
    if (e->done[i].op->sock == s)
      in_kernel--;
  e->zombies += in_kernel;
}

static void braid__iocp_fd_close(braid__fd fd) {
  closesocket(fd);
}

static int braid__iocp_sock_bind(braid__sock *s, const struct sockaddr *a,
                                 int len) {
  if (bind(s->fd, a, len) != 0)
    return (int)braid__wsa_error();
  s->flags_ |= BRAID__W_BOUND;
  return 0;
}

static int braid__iocp_sock_listen(braid__sock *s, int backlog) {
  if (listen(s->fd, backlog) != 0)
    return (int)braid__wsa_error();
  return 0;
}

static int braid__iocp_sock_name(braid__sock *s, int peer, struct sockaddr *a,
                                 int *len) {
  int rc = peer ? getpeername(s->fd, a, len) : getsockname(s->fd, a, len);
  return rc == 0 ? 0 : (int)braid__wsa_error();
}

static int braid__setopt(SOCKET fd, int level, int name, int value) {
  if (setsockopt(fd, level, name, (const char *)&value, sizeof value) != 0)
    return (int)braid__wsa_error();
  return 0;
}

/* The level and name of a datagram option that sock_setopt and
 * sock_getopt share; 0 or BRAID_E*. Every one of them takes a DWORD on
 * Windows, IP_MULTICAST_TTL and IP_MULTICAST_LOOP included (POSIX systems
 * differ there: the BSDs want an unsigned char). */
static int braid__dgram_opt(braid__sock *s, int opt, int *level, int *name) {
  int v6 = s->pidx_ == AF_INET6;
  switch (opt) {
  case BRAID__SO_BROADCAST:
    *level = SOL_SOCKET;
    *name = SO_BROADCAST;
    return 0;
  case BRAID__SO_RCVBUF:
    *level = SOL_SOCKET;
    *name = SO_RCVBUF;
    return 0;
  case BRAID__SO_SNDBUF:
    *level = SOL_SOCKET;
    *name = SO_SNDBUF;
    return 0;
  case BRAID__SO_MULTICAST_TTL:
  case BRAID__SO_MULTICAST_LOOP:
    /* pidx_ is the socket's family, taken from its protocol info. */
    if (s->pidx_ != AF_INET && s->pidx_ != AF_INET6)
      return BRAID_EAFNOSUPPORT;
    *level = v6 ? IPPROTO_IPV6 : IPPROTO_IP;
    if (opt == BRAID__SO_MULTICAST_TTL)
      *name = v6 ? IPV6_MULTICAST_HOPS : IP_MULTICAST_TTL;
    else
      *name = v6 ? IPV6_MULTICAST_LOOP : IP_MULTICAST_LOOP;
    return 0;
  }
  return BRAID_EINVAL;
}

static int braid__iocp_sock_getopt(braid__sock *s, int opt, int *value) {
  *value = 0;
  int level, name;
  int rc = braid__dgram_opt(s, opt, &level, &name);
  if (rc < 0)
    return rc;
  DWORD v = 0;
  int len = (int)sizeof v;
  if (getsockopt(s->fd, level, name, (char *)&v, &len) != 0)
    return (int)braid__wsa_error();
  /* A provider that answers with fewer bytes (a BOOL as one char) filled
   * only the low ones of the zeroed DWORD. */
  *value = v > INT_MAX ? INT_MAX : (int)v;
  return 0;
}

static int braid__iocp_sock_setopt(braid__sock *s, int opt, int value) {
  switch (opt) {
  case BRAID__SO_RCVBUF:
  case BRAID__SO_SNDBUF:
  case BRAID__SO_MULTICAST_TTL:
  case BRAID__SO_MULTICAST_LOOP: {
    int level, name;
    int rc = braid__dgram_opt(s, opt, &level, &name);
    if (rc < 0)
      return rc;
    if (opt == BRAID__SO_MULTICAST_LOOP)
      value = value != 0;
    return braid__setopt(s->fd, level, name, value);
  }
  case BRAID__SO_LINGER0: {
    /* Linger on with a zero timeout: closesocket() then resets the
     * connection (RST) and drops unsent data, instead of the graceful
     * FIN that Windows sends by default. */
    struct linger lg;
    lg.l_onoff = value != 0;
    lg.l_linger = 0;
    if (setsockopt(s->fd, SOL_SOCKET, SO_LINGER, (const char *)&lg,
                   sizeof lg) != 0)
      return (int)braid__wsa_error();
    return 0;
  }
  case BRAID__SO_REUSEADDR:
    /* What POSIX listeners want from SO_REUSEADDR (binding while old
     * connections sit in TIME_WAIT) is Windows' default; Windows'
     * SO_REUSEADDR would let another socket steal the port instead. On a
     * datagram socket it is what POSIX gives: several sockets (multicast
     * receivers) bound to one port, as braid_udp_options.reuse_addr says. */
    if (s->flags_ & BRAID__W_STREAM)
      return 0;
    return braid__setopt(s->fd, SOL_SOCKET, SO_REUSEADDR, value);
  case BRAID__SO_REUSEPORT:
    return BRAID_ENOTSUP;
  case BRAID__SO_V6ONLY:
    return braid__setopt(s->fd, IPPROTO_IPV6, IPV6_V6ONLY, value);
  case BRAID__SO_NODELAY:
    return braid__setopt(s->fd, IPPROTO_TCP, TCP_NODELAY, value);
  case BRAID__SO_BROADCAST:
    return braid__setopt(s->fd, SOL_SOCKET, SO_BROADCAST, value);
  case BRAID__SO_KEEPALIVE: {
    int rc = braid__setopt(s->fd, SOL_SOCKET, SO_KEEPALIVE, value > 0);
    if (rc < 0 || value <= 0)
      return rc;
    /* The idle time; TCP_KEEPIDLE exists only from Windows 10 1709. */
    struct tcp_keepalive ka = {1, (ULONG)value * 1000u, 1000u};
    DWORD got = 0;
    if (WSAIoctl(s->fd, SIO_KEEPALIVE_VALS, &ka, sizeof ka, NULL, 0, &got, NULL,
                 NULL) != 0)
      return (int)braid__wsa_error();
    return 0;
  }
  }
  return BRAID_EINVAL;
}

/* ip_mreq (interface by address) for IPv4, ipv6_mreq (interface by
 * index) for IPv6: the same structures as POSIX, under Windows' option
 * names (IPV6_ADD_MEMBERSHIP is POSIX's IPV6_JOIN_GROUP). */
static int braid__iocp_sock_mcast(braid__sock *s, int op, int family,
                                  const struct sockaddr *group,
                                  const struct sockaddr *iface4,
                                  unsigned ifindex) {
  int rc;
  if (family == AF_INET) {
    struct in_addr ifa;
    ifa.s_addr = htonl(INADDR_ANY);
    if (iface4 != NULL)
      ifa = ((const struct sockaddr_in *)(const void *)iface4)->sin_addr;
    if (op == BRAID__MC_IF) {
      rc = setsockopt(s->fd, IPPROTO_IP, IP_MULTICAST_IF, (const char *)&ifa,
                      sizeof ifa);
    } else {
      struct ip_mreq mr;
      memset(&mr, 0, sizeof mr);
      mr.imr_multiaddr =
          ((const struct sockaddr_in *)(const void *)group)->sin_addr;
      mr.imr_interface = ifa;
      rc = setsockopt(s->fd, IPPROTO_IP,
                      op == BRAID__MC_JOIN ? IP_ADD_MEMBERSHIP
                                           : IP_DROP_MEMBERSHIP,
                      (const char *)&mr, sizeof mr);
    }
  } else if (family == AF_INET6) {
    if (op == BRAID__MC_IF) {
      DWORD index = ifindex;
      rc = setsockopt(s->fd, IPPROTO_IPV6, IPV6_MULTICAST_IF,
                      (const char *)&index, sizeof index);
    } else {
      struct ipv6_mreq mr;
      memset(&mr, 0, sizeof mr);
      mr.ipv6mr_multiaddr =
          ((const struct sockaddr_in6 *)(const void *)group)->sin6_addr;
      mr.ipv6mr_interface = ifindex;
      rc = setsockopt(s->fd, IPPROTO_IPV6,
                      op == BRAID__MC_JOIN ? IPV6_ADD_MEMBERSHIP
                                           : IPV6_DROP_MEMBERSHIP,
                      (const char *)&mr, sizeof mr);
    }
  } else {
    return BRAID_EAFNOSUPPORT;
  }
  return rc == 0 ? 0 : (int)braid__wsa_error();
}

static int braid__iocp_sock_shutdown(braid__sock *s) {
  if (shutdown(s->fd, SD_SEND) != 0)
    return (int)braid__wsa_error();
  return 0;
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
    .signal_count = braid__iocp_signal_count,
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
    .submit = braid__iocp_submit,
    .cancel = braid__iocp_cancel,
    .close = braid__iocp_close,
    .backend_fd = braid__iocp_backend_fd,
    .pending = braid__iocp_pending,
};
