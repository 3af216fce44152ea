/* The POSIX readiness engine (see engine.h). Strategy, as Boost.Asio's
 * reactive sockets and mio do it:
 *   - submit tries the syscall at once when the socket is believed ready;
 *     most reads and writes complete inline without touching the poller;
 *   - on EAGAIN the op is queued and the readiness bit cleared; edge
 *     pollers (epoll EPOLLET, kqueue EV_CLEAR) were told about the socket
 *     once at registration, level pollers get their interest updated;
 *   - when the poller reports readiness, queued ops are retried in order
 *     and completed through their callbacks;
 *   - close is deferred: the descriptor is closed at once, but pending ops
 *     are completed with BRAID_ECANCELED and the close callback runs at the
 *     end of the current wait() (core/io.c), so memory named in a batch of
 *     events stays valid until the batch is done.
 * Per-socket state is braid__psock (engine.h), per-op state one queue link
 * (braid__pop), both in the private storage of core/io.h. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>
#include <pthread.h>
#include <signal.h>
#include <time.h>

#include "core/config.h"
#include "platform/posix/engine.h"
#include "platform/posix/sock.h"
#include "platform/posix/watch.h"

#if BRAID_HAVE_EVENTFD
#include <sys/eventfd.h>
#endif
#if BRAID_HAVE_SENDFILE
#include <pthread.h>
#include <signal.h>
#include <sys/sendfile.h>
#endif

#ifndef MSG_NOSIGNAL
#define MSG_NOSIGNAL 0 /* macOS: SO_NOSIGPIPE is set on each socket */
#endif

#define BRAID__IOV_MAX 64

/* An op's record in the engine: its link in the socket's queue. */
typedef struct braid__pop {
  braid__op *next;
} braid__pop;
BRAID__PRIV_FITS(braid__pop, braid__op);

static braid__pop *braid__po(braid__op *op) {
  return BRAID__PRIV(braid__pop, op);
}

static braid__engine *braid__eng(braid_reactor_t *r) {
  return r->io_state;
}

static const braid__poller *const braid__pollers[] = {
#if BRAID_HAVE_EPOLL
    &braid__poller_epoll,
#endif
#if BRAID_HAVE_KQUEUE
    &braid__poller_kqueue,
#endif
#if BRAID_HAVE_POLL
    &braid__poller_poll,
#endif
    NULL};

int braid__timeout_ms(int64_t timeout_ns) {
  if (timeout_ns < 0)
    return -1;
  int64_t ms = (timeout_ns + 999999) / 1000000;
  return ms > INT_MAX ? INT_MAX : (int)ms;
}

/* ------------------------------------------------------------------------
 * Wakeup
 * ------------------------------------------------------------------------ */

static int braid__wake_open(braid__engine *e) {
#if BRAID_HAVE_EVENTFD
  int fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (fd < 0)
    return braid__translate_sys_error(errno);
  e->wake.fd = fd;
  e->wake_wfd = fd;
#else
  int p[2];
  if (pipe(p) < 0)
    return braid__translate_sys_error(errno);
  if (braid__set_nonblock_cloexec(p[0]) < 0 ||
      braid__set_nonblock_cloexec(p[1]) < 0) {
    close(p[0]);
    close(p[1]);
    return BRAID_EIO;
  }
  e->wake.fd = p[0];
  e->wake_wfd = p[1];
#endif
  int rfd = e->wake.fd;
  braid__io_sock_init(e->r, &e->wake, rfd);
  braid__ps(&e->wake)->flags = BRAID__F_WAKE;
  braid__ps(&e->wake)->events = BRAID__S_WANT_READ;
  braid__ps(&e->wake)->slot = -1;
  return 0;
}

static void braid__wake_close(braid__engine *e) {
  if (e->wake_wfd >= 0 && e->wake_wfd != e->wake.fd)
    close(e->wake_wfd);
  if (e->wake.fd >= 0)
    close(e->wake.fd);
  e->wake.fd = -1;
  e->wake_wfd = -1;
}

static void braid__posix_wakeup(braid_reactor_t *r) {
  braid__engine *e = braid__eng(r);
  if (e->poller_wakes)
    e->poller->wake(e);
  else
    braid__posix_wake(e->wake_wfd);
}

static void braid__wake_drain(braid__engine *e) {
  char buf[64];
  for (;;) {
    ssize_t n = read(e->wake.fd, buf, sizeof buf);
    if (n > 0 && e->wake.fd == e->wake_wfd)
      break; /* an eventfd is emptied by one read */
    if (n > 0 || (n < 0 && errno == EINTR))
      continue;
    break;
  }
  braid__reactor_wakeup_drain(e->r);
}

void braid__engine_woken(braid__engine *e) {
  braid__reactor_wakeup_drain(e->r);
}

/* Open the wakeup descriptor and register it with the poller. */
static int braid__wake_start(braid__engine *e) {
  int rc = braid__wake_open(e);
  if (rc < 0)
    return rc;
  rc = e->poller->add(e, &e->wake);
  if (rc < 0)
    braid__wake_close(e);
  return rc;
}

/* ------------------------------------------------------------------------
 * init / destroy
 * ------------------------------------------------------------------------ */

static int braid__posix_init(braid_reactor_t *r, const char *name) {
  const braid__poller *p = NULL;
  for (int i = 0; braid__pollers[i] != NULL; i++)
    if (strcmp(braid__pollers[i]->name, name) == 0)
      p = braid__pollers[i];
  if (p == NULL)
    return BRAID_ENOTSUP;
  braid__engine *e = braid_calloc(1, sizeof *e);
  if (e == NULL)
    return BRAID_ENOMEM;
  e->r = r;
  e->poller = p;
  e->rbuf_len = 64 * 1024;
  e->rbuf = braid_malloc(e->rbuf_len);
  if (e->rbuf == NULL) {
    braid_free(e);
    return BRAID_ENOMEM;
  }
  e->wake.fd = -1;
  e->wake_wfd = -1;
  r->io_state = e;
  int rc = p->init(e);
  if (rc < 0)
    goto fail;
  /* A poller with its own wakeup needs no descriptor until a signal is
   * watched (signal handlers can only write(2); see signal.c). */
  if (!e->poller_wakes && (rc = braid__wake_start(e)) < 0)
    goto fail_poller;
  return 0;
fail_poller:
  p->destroy(e);
fail:
  braid_free(e->rbuf);
  braid_free(e);
  r->io_state = NULL;
  return rc;
}

static void braid__posix_destroy(braid_reactor_t *r) {
  braid__engine *e = braid__eng(r);
  if (e->wake.fd >= 0) {
    e->poller->del(e, &e->wake);
    braid__wake_close(e);
  }
  e->poller->destroy(e);
  braid_free(e->rbuf);
  braid_free(e);
  r->io_state = NULL;
}

static const char *braid__posix_poller_name(const braid_reactor_t *r) {
  return ((const braid__engine *)r->io_state)->poller->name;
}

static int braid__posix_backend_fd(const braid_reactor_t *r) {
  const braid__engine *e = r->io_state;
  return e->poller->fd(e);
}

/* ------------------------------------------------------------------------
 * Syscalls for each op type. Each returns a final status, or BRAID_EAGAIN
 * when the op must wait for readiness.
 * ------------------------------------------------------------------------ */

/* A socket error the poller reported (braid__engine_sock_error), taken
 * once like SO_ERROR: the kernel's copy may already be gone. */
static intptr_t braid__take_sock_error(braid__sock *s) {
  int err = braid__ps(s)->err;
  braid__ps(s)->err = 0;
  return braid__translate_sys_error(err);
}

static intptr_t braid__try_read(braid__sock *s, braid__op *op) {
  braid__engine *e = s->reactor->io_state;
  braid__psock *ps = braid__ps(s);
  int shared = op->u.read.base == NULL || op->u.read.base == e->rbuf;
  void *base = shared ? e->rbuf : op->u.read.base;
  size_t len = shared ? e->rbuf_len : op->u.read.len;
  for (;;) {
    ssize_t n = read(s->fd, base, len);
    /* The end of input of a connection the poller saw fail: where the
     * poller consumed SO_ERROR (libkqueue), read() says only 0. */
    if (n == 0 && ps->err != 0)
      return braid__take_sock_error(s);
    if (n >= 0) {
      if (shared) {
        op->u.read.base = e->rbuf;
        op->u.read.len = e->rbuf_len;
      }
      /* A short read from a byte stream emptied the kernel buffer: the
       * next read would only say EAGAIN, so skip it. New data raises a new
       * edge (or a level event). Not after a hang-up: then the next read
       * returns the end of input, and no further edge will announce it. */
      if ((size_t)n < len && n > 0 && (ps->flags & BRAID__F_STREAM) &&
          !(ps->events & BRAID__S_HUP))
        ps->events &= ~BRAID__S_READABLE;
      return n;
    }
    if (errno == EINTR)
      continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK)
      return BRAID_EAGAIN;
    return braid__translate_sys_error(errno);
  }
}

/* writev(2) has no MSG_NOSIGNAL: writing to a pipe whose reader is gone
 * (a child that closed its stdin or died) raises SIGPIPE, which kills an
 * application that did not ignore it. Block it around the call and
 * swallow the one the call raised, as for sendfile below; the write then
 * fails with EPIPE like a socket's. */
static ssize_t braid__writev_nosigpipe(int fd, const struct iovec *iov,
                                       int n) {
  sigset_t pipe_set, old;
  sigemptyset(&pipe_set);
  sigaddset(&pipe_set, SIGPIPE);
  pthread_sigmask(SIG_BLOCK, &pipe_set, &old);
  ssize_t w = writev(fd, iov, n);
  int err = errno;
  if (w < 0 && err == EPIPE && !sigismember(&old, SIGPIPE)) {
    sigset_t pending;
    struct timespec zero = {0, 0};
    if (sigpending(&pending) == 0 && sigismember(&pending, SIGPIPE))
      sigtimedwait(&pipe_set, NULL, &zero);
  }
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  errno = err;
  return w;
}

/* Write as much of op's buffers as the kernel takes. The buffers are
 * advanced in place (braid__io_advance), so a partial write resumes where
 * it stopped. */
static intptr_t braid__try_write(braid__sock *s, braid__op *op) {
  braid__psock *ps = braid__ps(s);
  size_t nb = braid__io_advance(op, 0); /* skip empty buffers */
  while (nb > 0) {
    struct iovec iov[BRAID__IOV_MAX];
    size_t n = 0, asked = 0;
    for (; n < nb && n < BRAID__IOV_MAX; n++) {
      iov[n].iov_base = op->u.write.bufs[n].base;
      iov[n].iov_len = op->u.write.bufs[n].len;
      asked += iov[n].iov_len;
    }
    ssize_t w;
    if (ps->flags & BRAID__F_SOCKET) {
      struct msghdr mh;
      memset(&mh, 0, sizeof mh);
      mh.msg_iov = iov;
      mh.msg_iovlen = n;
      w = sendmsg(s->fd, &mh, MSG_NOSIGNAL);
    } else {
      w = braid__writev_nosigpipe(s->fd, iov, (int)n);
    }
    if (w < 0) {
      if (errno == EINTR)
        continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK)
        return BRAID_EAGAIN;
      return braid__translate_sys_error(errno);
    }
    nb = braid__io_advance(op, (size_t)w);
    /* A short write to a byte stream means its send buffer is full. */
    if ((size_t)w < asked && (ps->flags & BRAID__F_STREAM)) {
      ps->events &= ~BRAID__S_WRITABLE;
      return nb == 0 ? (intptr_t)op->u.write.done : BRAID_EAGAIN;
    }
  }
  return (intptr_t)op->u.write.done;
}

static intptr_t braid__try_accept(braid__sock *s, braid__op *op) {
  for (;;) {
    socklen_t len = op->addr != NULL ? (socklen_t)op->addrlen : 0;
#if BRAID_HAVE_ACCEPT4
    int fd = accept4(s->fd, op->addr, op->addr ? &len : NULL,
                     SOCK_NONBLOCK | SOCK_CLOEXEC);
#else
    int fd = accept(s->fd, op->addr, op->addr ? &len : NULL);
    if (fd >= 0 && braid__set_nonblock_cloexec(fd) < 0) {
      close(fd);
      continue;
    }
#endif
    if (fd >= 0) {
      op->u.accept.fd = fd;
      op->addrlen = (int)len;
      return 0;
    }
    /* A connection that died in the backlog is not the listener's error. */
    if (errno == EINTR || errno == ECONNABORTED || errno == EPROTO)
      continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK)
      return BRAID_EAGAIN;
    return braid__translate_sys_error(errno);
  }
}

static intptr_t braid__finish_connect(braid__sock *s) {
  int err = 0;
  socklen_t len = sizeof err;
  if (getsockopt(s->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
    err = errno;
  braid__ps(s)->flags &= ~BRAID__F_CONNECTING;
  /* libkqueue reads SO_ERROR itself to fill in fflags, which clears it;
   * the poller passed it on (braid__engine_sock_error). */
  if (err == 0 && braid__ps(s)->err != 0)
    return braid__take_sock_error(s);
  braid__ps(s)->err = 0;
  return err == 0 ? 0 : braid__translate_sys_error(err);
}

/* recvmsg rather than recvfrom: msg_flags says MSG_TRUNC when the datagram
 * did not fit, on Linux, the BSDs and macOS alike (only Linux also takes
 * MSG_TRUNC as an input flag). */
static intptr_t braid__try_recvfrom(braid__sock *s, braid__op *op) {
  braid__engine *e = s->reactor->io_state;
  int shared = op->u.read.base == NULL || op->u.read.base == e->rbuf;
  struct iovec iov;
  iov.iov_base = shared ? e->rbuf : op->u.read.base;
  iov.iov_len = shared ? e->rbuf_len : op->u.read.len;
  op->flags &= ~BRAID__OPF_TRUNCATED;
  for (;;) {
    struct msghdr mh;
    memset(&mh, 0, sizeof mh);
    mh.msg_iov = &iov;
    mh.msg_iovlen = 1;
    mh.msg_name = op->addr;
    mh.msg_namelen = op->addr != NULL ? (socklen_t)op->addrlen : 0;
    ssize_t n = recvmsg(s->fd, &mh, 0);
    if (n >= 0) {
      op->addrlen = (int)mh.msg_namelen;
      if (mh.msg_flags & MSG_TRUNC)
        op->flags |= BRAID__OPF_TRUNCATED;
      if (shared) {
        op->u.read.base = e->rbuf;
        op->u.read.len = e->rbuf_len;
      }
      return n;
    }
    if (errno == EINTR)
      continue;
    /* An ICMP error on a connected datagram socket (ECONNREFUSED) that
     * the poller consumed with SO_ERROR: report it once, as the kernel
     * would have, and keep the socket. */
    if ((errno == EAGAIN || errno == EWOULDBLOCK) && braid__ps(s)->err != 0)
      return braid__take_sock_error(s);
    if (errno == EAGAIN || errno == EWOULDBLOCK)
      return BRAID_EAGAIN;
    return braid__translate_sys_error(errno);
  }
}

/* Linux sendfile(2) from a regular file to a stream socket: the kernel
 * copies page-cache pages, so a large static file never passes through
 * user memory. Like a write, the op completes when every byte is sent. */
#if BRAID_HAVE_SENDFILE
#define BRAID__POSIX_CAP_SENDFILE BRAID__CAP_SENDFILE
static intptr_t braid__try_sendfile_(braid__sock *s, braid__op *op) {
  while (op->u.sendfile.len > 0) {
    off_t off = (off_t)op->u.sendfile.offset;
    /* Linux sends at most 0x7ffff000 bytes per call. */
    size_t ask =
        op->u.sendfile.len < 0x7ffff000u ? op->u.sendfile.len : 0x7ffff000u;
    ssize_t w = sendfile(s->fd, op->u.sendfile.file, &off, ask);
    if (w < 0) {
      if (errno == EINTR)
        continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) {
        braid__ps(s)->events &= ~BRAID__S_WRITABLE;
        return BRAID_EAGAIN;
      }
      return braid__translate_sys_error(errno);
    }
    if (w == 0)
      return BRAID_EIO; /* the file shrank under us: never spin */
    op->u.sendfile.offset += (uint64_t)w;
    op->u.sendfile.len -= (size_t)w;
    op->u.sendfile.done += (size_t)w;
  }
  return (intptr_t)op->u.sendfile.done;
}

/* sendfile(2) has no MSG_NOSIGNAL: writing to a connection the peer reset
 * raises SIGPIPE, which kills an application that did not ignore it. Block
 * it around the call and swallow the one the call raised. */
static intptr_t braid__try_sendfile(braid__sock *s, braid__op *op) {
  sigset_t pipe_set, old;
  sigemptyset(&pipe_set);
  sigaddset(&pipe_set, SIGPIPE);
  pthread_sigmask(SIG_BLOCK, &pipe_set, &old);
  intptr_t st = braid__try_sendfile_(s, op);
  if (st == BRAID_EPIPE && !sigismember(&old, SIGPIPE)) {
    sigset_t pending;
    struct timespec zero = {0, 0};
    if (sigpending(&pending) == 0 && sigismember(&pending, SIGPIPE))
      sigtimedwait(&pipe_set, NULL, &zero);
  }
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  return st;
}
#else
#define BRAID__POSIX_CAP_SENDFILE 0
#endif

static intptr_t braid__try(braid__sock *s, braid__op *op) {
  switch (op->type) {
  case BRAID__OP_READ:
    return braid__try_read(s, op);
  case BRAID__OP_WRITE:
    return braid__try_write(s, op);
  case BRAID__OP_ACCEPT:
    return braid__try_accept(s, op);
  case BRAID__OP_CONNECT:
    return braid__finish_connect(s);
  case BRAID__OP_RECVFROM:
    return braid__try_recvfrom(s, op);
  case BRAID__OP_SENDTO:
    return braid__posix_sendto(s->fd, op);
#if BRAID_HAVE_SENDFILE
  case BRAID__OP_SENDFILE:
    return braid__try_sendfile(s, op);
#endif
  }
  return BRAID_EINVAL;
}

static int braid__is_read_op(const braid__op *op) {
  return op->type == BRAID__OP_READ || op->type == BRAID__OP_ACCEPT ||
         op->type == BRAID__OP_RECVFROM;
}

/* ------------------------------------------------------------------------
 * Queues and interest
 * ------------------------------------------------------------------------ */

static void braid__interest(braid__engine *e, braid__sock *s) {
  if (e->poller->caps & BRAID__POLL_EDGE)
    return;
  braid__psock *ps = braid__ps(s);
  unsigned want =
      (ps->rq ? BRAID__S_WANT_READ : 0) | (ps->wq ? BRAID__S_WANT_WRITE : 0);
  unsigned have = ps->events & (BRAID__S_WANT_READ | BRAID__S_WANT_WRITE);
  if (want != have) {
    ps->events =
        (ps->events & ~(BRAID__S_WANT_READ | BRAID__S_WANT_WRITE)) | want;
    e->poller->update(e, s);
  }
}

static void braid__enqueue(braid__sock *s, braid__op *op) {
  braid__psock *ps = braid__ps(s);
  braid__po(op)->next = NULL;
  if (braid__is_read_op(op)) {
    braid__op **p = &ps->rq;
    while (*p != NULL)
      p = &braid__po(*p)->next;
    *p = op;
  } else {
    if (ps->wq == NULL)
      ps->wq = op;
    else
      braid__po(ps->wq_tail)->next = op;
    ps->wq_tail = op;
  }
}

static intptr_t braid__posix_start(braid__sock *s, braid__op *op) {
  braid__engine *e = braid__eng(s->reactor);
  braid__psock *ps = braid__ps(s);
  if (op->type == BRAID__OP_CONNECT) {
    if (ps->flags & BRAID__F_CONNECTING)
      return BRAID_EALREADY;
    int rc;
    do
      rc = connect(s->fd, op->addr, (socklen_t)op->addrlen);
    while (rc < 0 && errno == EINTR);
    if (rc == 0)
      return 0;
    if (errno != EINPROGRESS)
      return braid__translate_sys_error(errno);
    ps->flags |= BRAID__F_CONNECTING;
    ps->events &= ~BRAID__S_WRITABLE;
    braid__enqueue(s, op);
    braid__interest(e, s);
    return BRAID__PENDING;
  }
  int reads = braid__is_read_op(op);
  unsigned bit = reads ? BRAID__S_READABLE : BRAID__S_WRITABLE;
  if ((reads ? ps->rq : ps->wq) == NULL && (ps->events & bit)) {
    /* Ready now, and an edge poller will not say so again: core retries
     * it from the next wait(). */
    if (op->flags & BRAID__OPF_DEFER)
      return BRAID__LATER;
    intptr_t st = braid__try(s, op);
    if (st == BRAID_EAGAIN)
      ps->events &= ~bit;
    if (op->flags & BRAID__OPF_TRY)
      return st == BRAID_EAGAIN ? (intptr_t)op->u.write.done : st;
    if (st != BRAID_EAGAIN)
      return st;
  } else if (op->flags & BRAID__OPF_TRY) {
    return 0;
  }
  braid__enqueue(s, op);
  braid__interest(e, s);
  return BRAID__PENDING;
}

static int braid__unlink(braid__op **head, braid__op **tail, braid__op *op) {
  braid__op *prev = NULL;
  for (braid__op *p = *head; p != NULL; prev = p, p = braid__po(p)->next) {
    if (p != op)
      continue;
    if (prev == NULL)
      *head = braid__po(p)->next;
    else
      braid__po(prev)->next = braid__po(p)->next;
    if (tail != NULL && *tail == op)
      *tail = prev;
    return 1;
  }
  return 0;
}

static int braid__posix_abort(braid__sock *s, braid__op *op) {
  braid__psock *ps = braid__ps(s);
  if (!braid__unlink(&ps->rq, NULL, op) &&
      !braid__unlink(&ps->wq, &ps->wq_tail, op))
    return BRAID_EINVAL;
  if (op->type == BRAID__OP_CONNECT)
    ps->flags &= ~BRAID__F_CONNECTING;
  braid__io_cancelled(op);
  braid__interest(braid__eng(s->reactor), s);
  return 0;
}

/* Retry the queued ops of one direction while the socket stays ready. A
 * callback may close s: closing_ stops the loop. */
static void braid__run_queue(braid__sock *s, int reads) {
  braid__psock *ps = braid__ps(s);
  unsigned bit = reads ? BRAID__S_READABLE : BRAID__S_WRITABLE;
  while (!s->closing_ && (ps->events & bit)) {
    braid__op *op = reads ? ps->rq : ps->wq;
    if (op == NULL)
      break;
    intptr_t st = braid__try(s, op);
    if (st == BRAID_EAGAIN) {
      ps->events &= ~bit;
      break;
    }
    if (reads)
      ps->rq = braid__po(op)->next;
    else if ((ps->wq = braid__po(op)->next) == NULL)
      ps->wq_tail = NULL;
    braid__io_complete(op, st);
  }
}

void braid__engine_sock_error(braid__sock *s, int syserr) {
  braid__ps(s)->err = syserr; /* the latest, as SO_ERROR would hold */
}

void braid__engine_ready(braid__engine *e, braid__sock *s, unsigned ev) {
  /* The first event of a batch refreshes the reactor's clock, so that
   * callbacks (and the timers they start) see the time after the wait
   * rather than before it, at one clock read per batch. */
  if (!e->time_fresh) {
    braid_reactor_update_time(e->r);
    e->time_fresh = 1;
  }
  braid__psock *ps = braid__ps(s);
  if (s->closing_)
    return; /* closed by an earlier callback in this batch */
  if (ps->flags & BRAID__F_WAKE) {
    braid__wake_drain(e);
    return;
  }
  if (ps->flags & BRAID__F_WATCH) {
    braid__posix_watch *w = braid__container_of(s, braid__posix_watch, sock_);
    unsigned got = 0;
    if (ev & BRAID__EV_READ)
      got |= BRAID__WATCH_READ;
    if (ev & BRAID__EV_WRITE)
      got |= BRAID__WATCH_WRITE;
    if (ev & BRAID__EV_ERROR)
      got |= BRAID__WATCH_ERROR;
    if (ev & BRAID__EV_HUP)
      got |= BRAID__WATCH_HUP;
    e->r->depth++;
    w->cb_(w, got);
    e->r->depth--;
    return;
  }
  if (ev & (BRAID__EV_READ | BRAID__EV_ERROR | BRAID__EV_HUP))
    ps->events |= BRAID__S_READABLE;
  if (ev & (BRAID__EV_HUP | BRAID__EV_ERROR))
    ps->events |= BRAID__S_HUP;
  if (ev & (BRAID__EV_WRITE | BRAID__EV_ERROR))
    ps->events |= BRAID__S_WRITABLE;
  braid__run_queue(s, 0);
  braid__run_queue(s, 1);
  if (!s->closing_)
    braid__interest(e, s);
}

static int braid__posix_wait(braid_reactor_t *r, int64_t timeout_ns) {
  braid__engine *e = braid__eng(r);
  /* Ops deferred before this wait() (core/io.c) run after the events; ops
   * deferred by the callbacks of this wait() wait for the next one, so that
   * a stream that used up its read budget (core/stream.c) lets the timers
   * and the other sockets have their turn first. */
  timeout_ns = braid__io_wait_begin(r, timeout_ns);
  e->time_fresh = 0;
  int rc = e->poller->wait(e, timeout_ns);
  braid__io_wait_end(r);
  return rc;
}

/* ------------------------------------------------------------------------
 * Sockets
 * ------------------------------------------------------------------------ */

static void braid__sock_prepare(braid_reactor_t *r, braid__sock *s, int fd) {
  braid__io_sock_init(r, s, fd);
  braid__psock *ps = braid__ps(s);
  ps->slot = -1;
  /* Unknown readiness counts as ready: the first op tries the syscall. */
  ps->events = BRAID__S_READABLE | BRAID__S_WRITABLE;
  int type = 0;
  socklen_t len = sizeof type;
  if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) == 0) {
    ps->flags |= BRAID__F_SOCKET;
    if (type == SOCK_STREAM)
      ps->flags |= BRAID__F_STREAM;
#ifdef SO_NOSIGPIPE
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_NOSIGPIPE, &one, sizeof one);
#endif
  } else {
    /* A pipe is a byte stream too: a short read or write means empty or
     * full. */
    struct stat st;
    if (fstat(fd, &st) == 0 && S_ISFIFO(st.st_mode))
      ps->flags |= BRAID__F_STREAM;
  }
}

static int braid__posix_sock_adopt(braid_reactor_t *r, braid__sock *s,
                                   braid__fd fd) {
  braid__engine *e = braid__eng(r);
  braid__sock_prepare(r, s, fd);
  int rc = e->poller->add(e, s);
  if (rc < 0)
    s->fd = -1; /* the caller still owns fd */
  return rc;
}

static int braid__posix_sock_open(braid_reactor_t *r, braid__sock *s,
                                  int family, int type) {
  int fd = braid__sock_socket(family, type);
  if (fd < 0)
    return fd;
  int rc = braid__posix_sock_adopt(r, s, fd);
  if (rc < 0)
    close(fd);
  return rc;
}

static void braid__posix_shut(braid__sock *s) {
  braid__engine *e = braid__eng(s->reactor);
  braid__psock *ps = braid__ps(s);
  e->poller->del(e, s);
  if (!(ps->flags & BRAID__F_WATCH)) /* a watch's descriptor is borrowed */
    close(s->fd);
  s->fd = -1;
  /* Pending ops complete with BRAID_ECANCELED before the close callback
   * (core/io.c). */
  for (braid__op *op = ps->rq, *next; op != NULL; op = next) {
    next = braid__po(op)->next;
    braid__io_cancelled(op);
  }
  for (braid__op *op = ps->wq, *next; op != NULL; op = next) {
    next = braid__po(op)->next;
    braid__io_cancelled(op);
  }
  ps->rq = ps->wq = ps->wq_tail = NULL;
  ps->flags &= ~BRAID__F_CONNECTING;
}

static int braid__posix_signal_watch(braid_reactor_t *r, int signo, int on) {
  braid__engine *e = braid__eng(r);
  /* The handler wakes reactors by write(2) to a descriptor, the only
   * async-signal-safe way; a poller that wakes itself otherwise (kqueue's
   * EVFILT_USER, not safe in a handler under libkqueue) gets the pipe now,
   * and keeps it until destroy. */
  if (on && e->wake.fd < 0) {
    int rc = braid__wake_start(e);
    if (rc < 0)
      return rc;
  }
  return braid__sig_watch(r, e->wake_wfd, signo, on);
}

static int braid__posix_pending(const braid_reactor_t *r) {
  const braid__engine *e = r->io_state;
  if (braid__io_busy(r))
    return 1;
  return e->poller->pending != NULL && e->poller->pending(e);
}

/* ------------------------------------------------------------------------
 * Watching borrowed descriptors (watch.h)
 * ------------------------------------------------------------------------ */

static unsigned braid__watch_want(unsigned events) {
  return ((events & BRAID__WATCH_READ) ? BRAID__S_WANT_READ : 0) |
         ((events & BRAID__WATCH_WRITE) ? BRAID__S_WANT_WRITE : 0);
}

int braid__posix_watch_supported(const braid_reactor_t *r) {
  return r != NULL && r->io == &braid__posix_io;
}

int braid__posix_watch_start(braid_reactor_t *r, braid__posix_watch *w, int fd,
                             unsigned events, braid__posix_watch_cb cb) {
  if (r == NULL || w == NULL || fd < 0 || cb == NULL)
    return BRAID_EINVAL;
  if (r->io != &braid__posix_io)
    return BRAID_ENOTSUP;
  braid__engine *e = braid__eng(r);
  braid__sock *s = &w->sock_;
  braid__io_sock_init(r, s, fd);
  braid__psock *ps = braid__ps(s);
  ps->slot = -1;
  /* Level-triggered for the interest set: the owner (GLib) may leave the
   * descriptor ready across iterations and expects to hear so again, and
   * the engine may not probe a descriptor it does not own to find out. */
  ps->flags = BRAID__F_WATCH | BRAID__F_LEVEL;
  ps->events = braid__watch_want(events);
  w->cb_ = cb;
  w->stopped_ = NULL;
  struct stat st;
  if (fstat(fd, &st) < 0)
    return braid__translate_sys_error(errno);
  w->dev_ = (unsigned long long)st.st_dev;
  w->ino_ = (unsigned long long)st.st_ino;
  int rc = e->poller->add(e, s);
  if (rc < 0)
    s->fd = -1;
  return rc;
}

void braid__posix_watch_set(braid__posix_watch *w, unsigned events) {
  braid__sock *s = &w->sock_;
  braid__psock *ps = braid__ps(s);
  if (s->closing_)
    return;
  unsigned want = braid__watch_want(events);
  unsigned have = ps->events & (BRAID__S_WANT_READ | BRAID__S_WANT_WRITE);
  if (want == have)
    return;
  ps->events =
      (ps->events & ~(BRAID__S_WANT_READ | BRAID__S_WANT_WRITE)) | want;
  braid__engine *e = braid__eng(s->reactor);
  e->poller->update(e, s);
}

static void braid__watch_closed(braid__sock *s) {
  braid__posix_watch *w = braid__container_of(s, braid__posix_watch, sock_);
  if (w->stopped_ != NULL)
    w->stopped_(w);
}

void braid__posix_watch_stop(braid__posix_watch *w,
                             braid__posix_watch_stopped_cb stopped) {
  if (w->sock_.closing_)
    return;
  w->stopped_ = stopped;
  /* The owner closed the descriptor already and the number now names
   * another file (maybe a socket of braid's own): the kernel dropped the
   * watch's registration at close, and a removal by number would remove
   * the new file's. The poller then only forgets its bookkeeping (fd -1:
   * poll's slot, kqueue's queued changes). */
  struct stat st;
  if (fstat(w->sock_.fd, &st) < 0 || (unsigned long long)st.st_dev != w->dev_ ||
      (unsigned long long)st.st_ino != w->ino_)
    w->sock_.fd = -1;
  /* The socket close path, which skips close(2) for a watch: the record
   * stays valid until the end of the wait that may still name it. */
  braid__io_close(&w->sock_, braid__watch_closed);
}

const braid__io_ops braid__posix_io = {
    .name = "posix",
    .caps = BRAID__CAP_SIGNALS | BRAID__CAP_UNIX | BRAID__CAP_EMBED_FD |
            BRAID__CAP_TRY_WRITE | BRAID__POSIX_CAP_SENDFILE | BRAID__CAP_PIPE |
            BRAID__CAP_TRY_SENDTO,
    .init = braid__posix_init,
    .destroy = braid__posix_destroy,
    .poller_name = braid__posix_poller_name,
    .wait = braid__posix_wait,
    .wakeup = braid__posix_wakeup,
    .signal_watch = braid__posix_signal_watch,
    .signal_count = braid__io_signal_count,
    .sock_open = braid__posix_sock_open,
    .sock_adopt = braid__posix_sock_adopt,
    .fd_close = braid__posix_fd_close,
    .sock_bind = braid__posix_sock_bind,
    .sock_listen = braid__posix_sock_listen,
    .sock_name = braid__posix_sock_name,
    .sock_setopt = braid__posix_sock_setopt,
    .sock_getopt = braid__posix_sock_getopt,
    .sock_mcast = braid__posix_sock_mcast,
    .sock_shutdown = braid__posix_sock_shutdown,
    .submit = braid__io_submit,
    .cancel = braid__io_cancel,
    .close = braid__io_close,
    .start = braid__posix_start,
    .abort = braid__posix_abort,
    .shut = braid__posix_shut,
    .backend_fd = braid__posix_backend_fd,
    .pending = braid__posix_pending,
};
