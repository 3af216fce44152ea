/* The io_uring I/O layer: a completion backend implementing braid__io_ops
 * directly (core/io.h), with raw syscalls and no liburing.
 *
 * Requires Linux 5.19: provided buffer rings (IORING_REGISTER_PBUF_RING),
 * cancel-by-descriptor (IORING_ASYNC_CANCEL_FD | _ALL) and cooperative task
 * running all came in 5.19; IORING_FEAT_EXT_ARG (timeouts in
 * io_uring_enter) in 5.11, FAST_POLL in 5.7, NODROP and SUBMIT_STABLE in
 * 5.5. init() probes all of it and returns an error on an older kernel,
 * where io_uring is disabled (/proc/sys/kernel/io_uring_disabled, since
 * 6.6) or filtered by seccomp; the reactor then falls back to epoll.
 *
 * How the pieces map:
 *   - every op is one SQE whose user_data is the op's address; the CQE
 *     completes it. Short stream writes, EAGAIN (a non-blocking descriptor
 *     that io_uring did not poll for us) and an empty buffer ring re-issue
 *     the op from the completion, so core still sees one completion;
 *   - SQEs are only queued while callbacks run and submitted once, by the
 *     io_uring_enter() that also waits (IORING_ENTER_EXT_ARG timeout);
 *   - READ/RECVFROM with read.base == NULL pick a buffer from a provided
 *     buffer ring when data arrives, so idle connections hold none;
 *   - close() queues an ASYNC_CANCEL for each request on the socket
 *     hard-linked to a CLOSE: the descriptor stays ours until the kernel
 *     has cancelled everything on it, and close_cb runs once every op and
 *     the CLOSE have completed (core/io.c counts them);
 *   - the wakeup is an eventfd watched by a multishot POLL_ADD; signal
 *     handlers write to the same eventfd (platform/posix/signal.c).
 * The bookkeeping every platform shares (in-flight counts, close list,
 * cancelled and deferred ops, iovec advancing) is core/io.c's.
 * The rings themselves (setup, mapping, SQEs, buffer rings, entering) are
 * uring_ring.c's. */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "platform/linux/uring.h"
#include "platform/posix/sock.h"

#define BRAID__URING_IOV_MAX 1024 /* UIO_MAXIOV */

/* braid__usock.flags */
#define BRAID__U_SOCKET 0x2u     /* recv/send(MSG_NOSIGNAL), else read/writev */
#define BRAID__U_CLOSE_WAIT 0x4u /* close SQEs not queued yet (SQ full) */
#define BRAID__U_MSHOT 0x8u      /* a multishot ACCEPT is armed */
#define BRAID__U_MSHOT_STOP 0x10u /* ... and asked to stop */
#define BRAID__U_DGRAM 0x20u      /* SOCK_DGRAM */
#define BRAID__U_LISTEN 0x40u     /* listen() was called on it */
#define BRAID__U_UNTRACKED 0x80u  /* see braid__usock.rop */
/* SQEs braid__ur_close_queue may need: a cancel for each direction's op,
 * one for a multishot ACCEPT (or by descriptor), and the CLOSE. */
#define BRAID__U_CLOSE_SQES 4u

/* A socket's record (braid__sock's private storage). */
typedef struct braid__usock {
  unsigned flags; /* BRAID__U_* */
  /* The op the kernel has of the socket for reading (READ, RECVFROM, a
   * single ACCEPT) and for writing (WRITE, SENDTO, CONNECT), so that
   * close() cancels each by its user_data. A cancel by descriptor
   * (IORING_ASYNC_CANCEL_FD) makes the kernel walk every request the ring
   * has in flight, so closing N busy sockets that way cost O(N^2): 43-49 s
   * for 100,000 connections closed in batches of 20,000
   * (tests/test_soak.c), 1.2-1.5 s by user_data. Core keeps one op per
   * direction in flight; should a caller submit a second, the socket is
   * marked BRAID__U_UNTRACKED and cancelled by descriptor as before. */
  braid__op *rop, *wop;
  /* The ACCEPT op waiting for the multishot's next connection (held here,
   * not in the kernel). */
  braid__op *accept;
  struct braid__sock *close_next; /* on braid__uring.close_wait */
} braid__usock;
BRAID__PRIV_FITS(braid__usock, braid__sock);

/* An op's record: its message header while a SENDMSG/RECVMSG is in flight
 * (RECVMSG writes msg_namelen back at completion, so it must live as long
 * as the op), and whether the SQE in flight is a POLL_ADD for it. */
typedef struct braid__uop {
  struct braid__umsg *msg;
  unsigned poll;
} braid__uop;
BRAID__PRIV_FITS(braid__uop, braid__op);

static braid__usock *braid__us(braid__sock *s) {
  return BRAID__PRIV(braid__usock, s);
}
static braid__uop *braid__uo(braid__op *op) {
  return BRAID__PRIV(braid__uop, op);
}

/* user_data of SQEs that are not ops. Ops and sockets are at least 8-byte
 * aligned, so these values and a low tag bit never collide with them. */
#define BRAID__U_UD_IGNORE 0u /* ASYNC_CANCEL results */
#define BRAID__U_UD_WAKE 2u   /* the eventfd poll */
#define BRAID__U_UD_CLOSE 1u  /* tag: (socket address | 1) = its CLOSE */
#define BRAID__U_UD_ACCEPT                                                     \
  2u /* tag: (socket address | 2) = its multishot                              \
        ACCEPT (never equal to WAKE: a socket is                               \
        not at address 0) */
#define BRAID__U_UD_TAGS 3u

/* A message header for SENDMSG/RECVMSG (see braid__uop): a small free
 * list of them. */
typedef struct braid__umsg {
  struct msghdr mh;
  struct iovec iov;
  struct braid__umsg *next;
} braid__umsg;

/* A connection the multishot ACCEPT took while no op was waiting. */
typedef struct braid__parked {
  braid__sock *s;
  int fd;
  struct braid__parked *next;
} braid__parked;

/* braid__op.addrlen is the socklen_t the kernel writes for ACCEPT. */
_Static_assert(sizeof(int) == sizeof(socklen_t), "socklen_t is int-sized");

static braid__uring *braid__ur(braid_reactor_t *r) {
  return r->io_state;
}

/* The ring an op's platform buffer comes from. */
static braid__ubr *braid__ur_ring(braid__uring *u, const braid__op *op) {
  return op->type == BRAID__OP_RECVFROM ? &u->dbr : &u->sbr;
}

static braid__umsg *braid__ur_umsg(braid__uring *u) {
  braid__umsg *m = u->umsg_free;
  if (m != NULL)
    u->umsg_free = m->next;
  else if ((m = braid_malloc(sizeof *m)) == NULL)
    return NULL;
  memset(m, 0, sizeof *m);
  return m;
}

static void braid__ur_umsg_put(braid__uring *u, braid__umsg *m) {
  m->next = u->umsg_free;
  u->umsg_free = m;
}

/* ------------------------------------------------------------------------
 * Preparing an op's SQE
 * ------------------------------------------------------------------------ */

static int braid__op_reads(const braid__op *op) {
  return op->type == BRAID__OP_READ || op->type == BRAID__OP_ACCEPT ||
         op->type == BRAID__OP_RECVFROM;
}

static uint32_t braid__len32(size_t len) {
  return len > (1u << 30) ? (1u << 30) : (uint32_t)len;
}

/* Queue the SQE that carries op now: a POLL_ADD when braid__uop.poll is
 * set, else the op itself. 0 or BRAID_E*. */
static int braid__ur_prep(braid__uring *u, braid__sock *s, braid__op *op) {
  if (!braid__ur_reserve(u, 1))
    return BRAID_EAGAIN;
  braid__umsg *m = NULL;
  int sock = (braid__us(s)->flags & BRAID__U_SOCKET) != 0;
  if (!braid__uo(op)->poll &&
      (op->type == BRAID__OP_RECVFROM || op->type == BRAID__OP_SENDTO ||
       (op->type == BRAID__OP_WRITE && sock && op->u.write.nbufs > 1))) {
    if ((m = braid__ur_umsg(u)) == NULL)
      return BRAID_ENOMEM;
    braid__uo(op)->msg = m;
  }
  struct io_uring_sqe *sqe = braid__ur_sqe(u);
  sqe->fd = s->fd;
  sqe->user_data = (uint64_t)(uintptr_t)op;
  if (braid__uo(op)->poll) {
    sqe->opcode = IORING_OP_POLL_ADD;
    sqe->poll32_events = braid__op_reads(op) ? POLLIN : POLLOUT;
    return 0;
  }
  switch (op->type) {
  case BRAID__OP_READ:
    /* RECV refuses a non-zero off (it shares the field with addr2). */
    if (sock) {
      sqe->opcode = IORING_OP_RECV;
    } else {
      sqe->opcode = IORING_OP_READ;
      sqe->off = (uint64_t)-1; /* the current position (pipes) */
    }
    if (op->u.read.base == NULL) {
      sqe->flags = IOSQE_BUFFER_SELECT;
      sqe->buf_group = BRAID__URING_BGID;
      sqe->len = BRAID__URING_BUFSZ;
    } else {
      sqe->addr = (uint64_t)(uintptr_t)op->u.read.base;
      sqe->len = braid__len32(op->u.read.len);
    }
    break;
  case BRAID__OP_WRITE: {
    size_t nb = op->u.write.nbufs;
    if (nb > BRAID__URING_IOV_MAX)
      nb = BRAID__URING_IOV_MAX; /* the rest after a short write */
    if (!sock) {
      sqe->opcode = IORING_OP_WRITEV;
      sqe->addr = (uint64_t)(uintptr_t)op->u.write.bufs;
      sqe->len = (uint32_t)nb;
      sqe->off = (uint64_t)-1;
    } else if (m == NULL) {
      /* One buffer: SEND needs no message header. MSG_NOSIGNAL: a write
       * to a reset connection must fail with EPIPE, not kill us. */
      sqe->opcode = IORING_OP_SEND;
      sqe->addr = (uint64_t)(uintptr_t)op->u.write.bufs[0].base;
      sqe->len = braid__len32(op->u.write.bufs[0].len);
      sqe->msg_flags = MSG_NOSIGNAL;
    } else {
      m->mh.msg_iov = (struct iovec *)(void *)op->u.write.bufs;
      m->mh.msg_iovlen = nb;
      sqe->opcode = IORING_OP_SENDMSG;
      sqe->addr = (uint64_t)(uintptr_t)&m->mh;
      sqe->msg_flags = MSG_NOSIGNAL;
    }
    break;
  }
  case BRAID__OP_ACCEPT:
    sqe->opcode = IORING_OP_ACCEPT;
    if (op->addr != NULL) {
      sqe->addr = (uint64_t)(uintptr_t)op->addr;
      sqe->addr2 = (uint64_t)(uintptr_t)&op->addrlen;
    }
    sqe->accept_flags = SOCK_NONBLOCK | SOCK_CLOEXEC;
    break;
  case BRAID__OP_CONNECT:
    sqe->opcode = IORING_OP_CONNECT;
    sqe->addr = (uint64_t)(uintptr_t)op->addr;
    sqe->off = (uint64_t)op->addrlen;
    break;
  case BRAID__OP_RECVFROM:
    m->mh.msg_name = op->addr;
    m->mh.msg_namelen = op->addr != NULL ? (socklen_t)op->addrlen : 0;
    m->mh.msg_iov = &m->iov;
    m->mh.msg_iovlen = 1;
    if (op->u.read.base == NULL) {
      m->iov.iov_len = BRAID__URING_DBUFSZ;
      sqe->flags = IOSQE_BUFFER_SELECT;
      sqe->buf_group = BRAID__URING_DBGID;
    } else {
      m->iov.iov_base = op->u.read.base;
      m->iov.iov_len = op->u.read.len;
    }
    sqe->opcode = IORING_OP_RECVMSG;
    sqe->addr = (uint64_t)(uintptr_t)&m->mh;
    break;
  case BRAID__OP_SENDTO:
    if (op->addr != NULL && op->addrlen > 0) {
      m->mh.msg_name = op->addr;
      m->mh.msg_namelen = (socklen_t)op->addrlen;
    }
    m->mh.msg_iov = (struct iovec *)(void *)op->u.write.bufs;
    m->mh.msg_iovlen = op->u.write.nbufs;
    sqe->opcode = IORING_OP_SENDMSG;
    sqe->addr = (uint64_t)(uintptr_t)&m->mh;
    sqe->msg_flags = MSG_NOSIGNAL;
    break;
  }
  return 0;
}

/* ------------------------------------------------------------------------
 * Completions
 * ------------------------------------------------------------------------ */

/* Whether a completion says the op did nothing yet and is to be issued
 * again (or polled for first): a connect still in progress, a descriptor
 * that would block, an empty buffer ring. After a cancel, such a
 * completion means the cancel won, whatever order the kernel posted them
 * in. */
static int braid__ur_unfinished(const braid__op *op, int32_t res, int has_buf) {
  if (op->type == BRAID__OP_CONNECT &&
      (res == -EINPROGRESS || res == -EALREADY))
    return 1;
  if (res == -EAGAIN || res == -EWOULDBLOCK)
    return 1;
  return res == -ENOBUFS && !has_buf && braid__op_reads(op);
}

/* Note op as the socket's op in flight in its direction (see
 * braid__usock.rop). */
static void braid__ur_track(braid__sock *s, braid__op *op) {
  braid__usock *us = braid__us(s);
  braid__op **slot = braid__op_reads(op) ? &us->rop : &us->wop;
  if (*slot == NULL)
    *slot = op;
  else if (*slot != op)
    us->flags |= BRAID__U_UNTRACKED;
}

static void braid__ur_untrack(braid__sock *s, braid__op *op) {
  braid__usock *us = braid__us(s);
  if (us->rop == op)
    us->rop = NULL;
  else if (us->wop == op)
    us->wop = NULL;
}

/* Re-issue op from its own completion (it stays in flight). Returns 1 if
 * it was queued. */
static int braid__ur_again(braid__uring *u, braid__sock *s, braid__op *op) {
  return braid__ur_prep(u, s, op) == 0;
}

static void braid__ur_op_done(braid__uring *u, braid__op *op, int32_t res,
                              uint32_t cflags) {
  braid__sock *s = op->sock;
  braid__uop *uo = braid__uo(op);
  int closing = s->closing_;
  int has_buf = (cflags & IORING_CQE_F_BUFFER) != 0;
  unsigned bid = cflags >> IORING_CQE_BUFFER_SHIFT;
  int was_poll = uo->poll != 0;
  uo->poll = 0;
  if (uo->msg != NULL) {
    braid__umsg *m = uo->msg;
    uo->msg = NULL;
    if (op->type == BRAID__OP_RECVFROM && res >= 0) {
      op->addrlen = (int)m->mh.msg_namelen;
      /* RECVMSG copies msg_flags back like recvmsg(2) does: MSG_TRUNC
       * says the datagram did not fit (res is what was kept). */
      if (m->mh.msg_flags & MSG_TRUNC)
        op->flags |= BRAID__OPF_TRUNCATED;
    }
    braid__ur_umsg_put(u, m);
  }

  if (closing || braid__io_cancel_asked(op)) {
    /* Cancelled (or closing) before this completion was handled: the
     * retries below are not made, so a status that only asked for one
     * (an empty buffer ring when more sockets had data than there are
     * buffers, EAGAIN, a connect in progress) ends the op as cancelled.
     * Passed on as it was, -ENOBUFS killed a connection that a proxy had
     * merely paused, and a connect's timeout reported EINPROGRESS. */
    if ((was_poll && res >= 0) || braid__ur_unfinished(op, res, has_buf))
      res = -ECANCELED; /* the op itself never ran, or did nothing */
    else if (op->type == BRAID__OP_WRITE && res > 0)
      op->u.write.done += (size_t)res;
  } else if (was_poll) {
    if (res >= 0 && op->type == BRAID__OP_CONNECT) {
      int err = 0;
      socklen_t len = sizeof err;
      if (getsockopt(s->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
        err = errno;
      res = -err;
    } else if (res >= 0) {
      if (braid__ur_again(u, s, op))
        return;      /* ready: now the op itself */
      res = -ENOMEM; /* could not queue it (SQ full, no memory) */
    }
  } else {
    int again = 0;
    if (braid__ur_unfinished(op, res, has_buf)) {
      /* A kernel may report the non-blocking connect's progress instead
       * of polling for it, and a non-blocking descriptor io_uring does
       * not poll for us (reads and writes of pipes opened O_NONBLOCK)
       * says EAGAIN: poll, then retry. An empty buffer ring (-ENOBUFS):
       * buffers come back as completions are handled, so the retry,
       * issued at the next wait(), finds one. */
      if (res != -ENOBUFS)
        uo->poll = 1;
      again = 1;
    } else if (op->type == BRAID__OP_WRITE && res > 0) {
      /* Count what was written, advance the buffers in place, and go on
       * with the rest after a short write. */
      again = braid__io_advance(op, (size_t)res) > 0;
      res = 0;
    }
    if (again && braid__ur_again(u, s, op))
      return;
  }

  /* Final (core/io.c turns every completion of a closing socket into
   * BRAID_ECANCELED and closes what an ACCEPT took). */
  braid__ur_untrack(s, op);
  intptr_t st = res >= 0 ? (intptr_t)res : braid__translate_sys_error(-res);
  if (res >= 0) {
    switch (op->type) {
    case BRAID__OP_READ:
    case BRAID__OP_RECVFROM:
      if (has_buf) {
        braid__ubr *ring = braid__ur_ring(u, op);
        op->u.read.base = ring->bufs + (size_t)bid * ring->size;
        op->u.read.len = ring->size;
      } else if (op->u.read.base == NULL) {
        /* An empty datagram takes no buffer from the ring, but io.h
         * promises a buffer: never hand NULL to datagram_received (a
         * memcpy of 0 bytes from NULL is still undefined behaviour). */
        op->u.read.base = braid__ur_ring(u, op)->bufs;
        op->u.read.len = 0;
      }
      break;
    case BRAID__OP_WRITE:
      st = (intptr_t)op->u.write.done;
      break;
    case BRAID__OP_ACCEPT:
      op->u.accept.fd = res;
      st = 0;
      break;
    default:
      break;
    }
  }
  braid__ubr *ring = has_buf ? braid__ur_ring(u, op) : NULL;
  braid__io_complete(op, st);
  /* The bytes were valid during the callback only. */
  if (ring != NULL)
    braid__ur_buf_put(ring, bid);
}

/* ------------------------------------------------------------------------
 * Multishot ACCEPT (Linux 5.19): one SQE keeps accepting, one CQE with
 * IORING_CQE_F_MORE per connection, instead of one SQE per connection. It
 * cannot report peer addresses (every connection would write the same
 * buffer before we read it), so the peer is read with getpeername() when
 * the op wants it. The ACCEPT op core submits waits in braid__usock.accept
 * for the next
 * CQE; a connection that arrives with no op waiting is parked for the
 * next submit, and the multishot is stopped so that further connections
 * stay in the kernel's backlog.
 * ------------------------------------------------------------------------ */

static int braid__ur_mshot_arm(braid__uring *u, braid__sock *s) {
  if (!braid__ur_reserve(u, 1))
    return BRAID_ENOMEM;
  struct io_uring_sqe *sqe = braid__ur_sqe(u);
  sqe->opcode = IORING_OP_ACCEPT;
  sqe->fd = s->fd;
  sqe->ioprio = IORING_ACCEPT_MULTISHOT;
  sqe->accept_flags = SOCK_NONBLOCK | SOCK_CLOEXEC;
  sqe->user_data = (uint64_t)(uintptr_t)s | BRAID__U_UD_ACCEPT;
  braid__us(s)->flags |= BRAID__U_MSHOT;
  braid__io_ref(s);
  return 0;
}

static void braid__ur_mshot_stop(braid__uring *u, braid__sock *s) {
  braid__usock *us = braid__us(s);
  if (!(us->flags & BRAID__U_MSHOT) || (us->flags & BRAID__U_MSHOT_STOP) ||
      !braid__ur_reserve(u, 1))
    return;
  us->flags |= BRAID__U_MSHOT_STOP;
  struct io_uring_sqe *sqe = braid__ur_sqe(u);
  sqe->opcode = IORING_OP_ASYNC_CANCEL;
  sqe->fd = -1;
  sqe->addr = (uint64_t)(uintptr_t)s | BRAID__U_UD_ACCEPT;
  sqe->user_data = BRAID__U_UD_IGNORE;
}

static void braid__ur_accept_fill(braid__op *op, int fd) {
  op->u.accept.fd = fd;
  if (op->addr != NULL) {
    socklen_t len = (socklen_t)op->addrlen;
    if (getpeername(fd, op->addr, &len) < 0)
      len = 0;
    op->addrlen = (int)len;
  }
}

static int braid__ur_unpark(braid__uring *u, braid__sock *s) {
  for (braid__parked **p = &u->parked; *p != NULL; p = &(*p)->next) {
    if ((*p)->s != s)
      continue;
    braid__parked *k = *p;
    int fd = k->fd;
    *p = k->next;
    braid_free(k);
    return fd;
  }
  return -1;
}

/* Park a connection for the listener's next submit. */
static int braid__ur_park(braid__uring *u, braid__sock *s, int fd) {
  braid__parked *k = braid_malloc(sizeof *k);
  if (k == NULL)
    return BRAID_ENOMEM;
  k->s = s;
  k->fd = fd;
  k->next = u->parked;
  u->parked = k;
  return 0;
}

/* RLIMIT_NOFILE as accept(2) would apply it now. The kernel reads the
 * limit when an ACCEPT SQE is prepared, so a multishot ACCEPT, prepared
 * once, keeps allocating under the limit of the moment it was armed: a
 * limit lowered since would never make it fail with EMFILE. */
static int braid__ur_over_nofile(int fd) {
  struct rlimit rl;
  return getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY &&
         (rlim_t)fd >= rl.rlim_cur;
}

/* A parked connection's descriptor under the current limit: itself, or
 * the lowest free number (as accept(2) picks one) by F_DUPFD, which fails
 * with EMFILE while no number under the limit is free. */
static int braid__ur_fit_nofile(int fd) {
  if (!braid__ur_over_nofile(fd))
    return fd;
  int nfd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
  if (nfd < 0)
    return braid__translate_sys_error(errno);
  close(fd);
  return nfd;
}

static void braid__ur_accept_cqe(braid__uring *u, braid__sock *s, int32_t res,
                                 uint32_t cflags) {
  braid__usock *us = braid__us(s);
  if (!(cflags & IORING_CQE_F_MORE)) {
    us->flags &= ~(BRAID__U_MSHOT | BRAID__U_MSHOT_STOP);
    braid__io_unref(s);
  }
  if (s->closing_) {
    if (res >= 0)
      close(res); /* accepted after close: nobody will take it */
    return;
  }
  braid__op *op = us->accept;
  if (res < 0) {
    if (op == NULL)
      return; /* the next submit arms it again */
    if (res == -EINVAL && !u->no_mshot) {
      /* A kernel that has no multishot accept for this socket: single
       * ACCEPTs from now on; this op becomes one (still in flight). */
      u->no_mshot = 1;
      us->accept = NULL;
      if (braid__ur_prep(u, s, op) == 0) {
        braid__ur_track(s, op);
        return;
      }
      braid__io_complete(op, BRAID_ENOMEM);
      return;
    }
    if (res == -ECANCELED && !(us->flags & BRAID__U_MSHOT)) {
      /* We stopped it, but an op has come to wait since. */
      if (braid__ur_mshot_arm(u, s) == 0)
        return;
      res = -ENOMEM;
    }
    us->accept = NULL; /* EMFILE and friends: core backs off, submits again */
    braid__io_complete(op, braid__translate_sys_error(-res));
    return;
  }
  if (op == NULL || braid__ur_over_nofile(res)) {
    /* No op waiting, or a descriptor accept(2) could not have made under
     * today's RLIMIT_NOFILE (see braid__ur_over_nofile). The connection
     * cannot go back to the backlog, so it waits here, and the rest stay
     * in the kernel's backlog. The waiting op fails with EMFILE like
     * accept(2): core backs off and submits again, and the parked
     * connection is handed out once a descriptor under the limit is
     * free. */
    if (braid__ur_park(u, s, res) < 0)
      close(res); /* the peer sees a reset; nothing else can be done */
    braid__ur_mshot_stop(u, s);
    if (op != NULL) {
      us->accept = NULL;
      braid__io_complete(op, BRAID_EMFILE);
    }
    return;
  }
  us->accept = NULL;
  braid__ur_accept_fill(op, res);
  braid__io_complete(op, 0);
  /* Core submits the next accept from its callback; if it did not (it is
   * backing off), leave further connections in the backlog. */
  if (us->accept == NULL && !s->closing_)
    braid__ur_mshot_stop(u, s);
}

static intptr_t braid__ur_accept_submit(braid__uring *u, braid__sock *s,
                                        braid__op *op) {
  braid__usock *us = braid__us(s);
  int fd = braid__ur_unpark(u, s);
  if (fd >= 0) {
    int nfd = braid__ur_fit_nofile(fd);
    if (nfd < 0) { /* EMFILE still: it stays parked, first in line */
      if (braid__ur_park(u, s, fd) < 0)
        close(fd);
      return nfd;
    }
    braid__ur_accept_fill(op, nfd);
    return 0;
  }
  if (us->accept != NULL)
    return BRAID_EBUSY; /* one waiting accept per listener */
  if (!(us->flags & BRAID__U_MSHOT) && braid__ur_mshot_arm(u, s) < 0)
    return BRAID_ENOMEM;
  us->accept = op;
  return BRAID__PENDING;
}

static void braid__ur_wake(braid__uring *u, int32_t res, uint32_t cflags);

static void braid__ur_cqe(braid__uring *u, uint64_t ud, int32_t res,
                          uint32_t cflags) {
  if (ud == BRAID__U_UD_IGNORE)
    return;
  if (ud == BRAID__U_UD_WAKE) {
    braid__ur_wake(u, res, cflags);
    return;
  }
  braid__sock *s = (braid__sock *)(uintptr_t)(ud & ~(uint64_t)3);
  switch (ud & BRAID__U_UD_TAGS) {
  case BRAID__U_UD_CLOSE:
    braid__io_unref(s);
    return;
  case BRAID__U_UD_ACCEPT:
    braid__ur_accept_cqe(u, s, res, cflags);
    return;
  }
  braid__ur_op_done(u, (braid__op *)(uintptr_t)ud, res, cflags);
}

/* ------------------------------------------------------------------------
 * Wakeup
 * ------------------------------------------------------------------------ */

static int braid__ur_wake_arm(braid__uring *u) {
  if (!braid__ur_reserve(u, 1))
    return BRAID_EAGAIN;
  struct io_uring_sqe *sqe = braid__ur_sqe(u);
  sqe->opcode = IORING_OP_POLL_ADD;
  sqe->fd = u->wake_fd;
  sqe->poll32_events = POLLIN;
  sqe->len = IORING_POLL_ADD_MULTI; /* Linux 5.13 */
  sqe->user_data = BRAID__U_UD_WAKE;
  return 0;
}

static void braid__ur_wake(braid__uring *u, int32_t res, uint32_t cflags) {
  uint64_t v;
  /* Empty the counter before running what it announced, so that a wakeup
   * that comes during the drain is not lost. */
  ssize_t n = read(u->wake_fd, &v, sizeof v);
  (void)n;
  /* A multishot poll ends (no IORING_CQE_F_MORE) on an error or when the
   * kernel could not post a completion: arm it again. */
  if (!(cflags & IORING_CQE_F_MORE) || res < 0)
    braid__ur_wake_arm(u);
  braid__reactor_wakeup_drain(u->r);
}

static void braid__uring_wakeup(braid_reactor_t *r) {
  braid__posix_wake(braid__ur(r)->wake_fd);
}

/* ------------------------------------------------------------------------
 * init / destroy
 * ------------------------------------------------------------------------ */

static int braid__uring_init(braid_reactor_t *r, const char *name) {
  BRAID__UNUSED(name);
  braid__uring *u = braid_calloc(1, sizeof *u);
  if (u == NULL)
    return BRAID_ENOMEM;
  u->r = r;
  u->fd = -1;
  u->wake_fd = -1;
  int rc = braid__ur_open(u);
  if (rc < 0)
    goto fail;
  u->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (u->wake_fd < 0) {
    rc = braid__translate_sys_error(errno);
    goto fail;
  }
  r->io_state = u;
  if ((rc = braid__ur_wake_arm(u)) < 0)
    goto fail;
  return 0;
fail:
  r->io_state = NULL;
  braid__ur_close(u);
  if (u->wake_fd >= 0)
    close(u->wake_fd);
  braid_free(u);
  return rc;
}

static void braid__uring_destroy(braid_reactor_t *r) {
  braid__uring *u = braid__ur(r);
  /* The reactor stopped its signal watchers before (sig_refs is 0), so
   * no handler writes to wake_fd any more. */
  /* Closing the ring cancels the wakeup poll; the buffers are unmapped
   * after it, once the kernel no longer references them. */
  braid__ur_close(u);
  close(u->wake_fd);
  while (u->parked != NULL) { /* none: their listeners were closed */
    braid__parked *k = u->parked;
    u->parked = k->next;
    close(k->fd);
    braid_free(k);
  }
  while (u->umsg_free != NULL) {
    braid__umsg *m = u->umsg_free;
    u->umsg_free = m->next;
    braid_free(m);
  }
  braid_free(u);
  r->io_state = NULL;
}

static const char *braid__uring_poller_name(const braid_reactor_t *r) {
  BRAID__UNUSED(r);
  return "uring";
}

static int braid__uring_backend_fd(const braid_reactor_t *r) {
  return ((const braid__uring *)r->io_state)->fd;
}

/* For embedding hosts (core/io.h): what makes wait() not block, plus SQEs
 * queued but not yet handed to the kernel, which the ring descriptor
 * cannot announce, and task work the kernel runs only on the next enter
 * (IORING_SQ_TASKRUN). */
static int braid__uring_pending(const braid_reactor_t *r) {
  braid__uring *u = r->io_state;
  return braid__io_busy(r) || u->close_wait != NULL ||
         braid__ur_ring_pending(u);
}

/* ------------------------------------------------------------------------
 * wait
 * ------------------------------------------------------------------------ */

static void braid__ur_close_queue(braid__uring *u, braid__sock *s);

static int braid__uring_wait(braid_reactor_t *r, int64_t timeout_ns) {
  braid__uring *u = braid__ur(r);
  /* Closes that found the SQ full. */
  while (u->close_wait != NULL && braid__ur_space(u) >= BRAID__U_CLOSE_SQES) {
    braid__sock *s = u->close_wait;
    u->close_wait = braid__us(s)->close_next;
    braid__ur_close_queue(u, s);
  }
  unsigned cq_ready = braid__ur_cq_ready(u);
  timeout_ns = braid__io_wait_begin(r, timeout_ns);
  if (cq_ready > 0 || u->close_wait != NULL)
    timeout_ns = 0;
  int err = braid__ur_submit_wait(u, timeout_ns);
  /* Callbacks (and the timers they start) see the time after the wait,
   * not the time before it. */
  braid_reactor_update_time(u->r);
  /* Run the completions posted so far; ones posted while their callbacks
   * run (or by a submission flushed because the SQ was full) wait for the
   * next wait(). Each op completes at most once per wait(), so this is
   * bounded by the ops in flight, and a socket that keeps completing (a
   * flooding peer, a retry) cannot keep the timers from running. */
  unsigned head = atomic_load_explicit(u->cq_head, memory_order_relaxed);
  unsigned tail = atomic_load_explicit(u->cq_tail, memory_order_acquire);
  while (head != tail) {
    struct io_uring_cqe *c = &u->cqes[head & u->cq_mask];
    uint64_t ud = c->user_data;
    int32_t res = c->res;
    uint32_t cf = c->flags;
    head++;
    atomic_store_explicit(u->cq_head, head, memory_order_release);
    braid__ur_cqe(u, ud, res, cf);
  }
  /* Deferred ops, cancelled ops and close callbacks (core/io.c). */
  braid__io_wait_end(r);
  return err;
}

/* ------------------------------------------------------------------------
 * Ops
 * ------------------------------------------------------------------------ */

/* BRAID__OPF_TRY for a datagram: one non-blocking sendmsg(2) now. Unlike
 * a stream write, a datagram send never waits for the peer and is whole
 * or nothing, and the kernel's verdict (EMSGSIZE, ENETUNREACH, EACCES, a
 * pending ECONNREFUSED) is what braid_udp_send() must return; an SQE would
 * turn those into a later error() callback. EAGAIN (a full send buffer) is
 * "not sent": core queues the datagram and submits it as an SQE. Core
 * tries only with nothing of its own queued or in flight, so this cannot
 * overtake an earlier datagram. */
static intptr_t braid__ur_try_sendto(braid__sock *s, braid__op *op) {
  intptr_t st = braid__posix_sendto(s->fd, op);
  return st == BRAID_EAGAIN ? 0 : st;
}

/* CONNECT on a datagram socket only sets the default peer and its filter:
 * connect(2) never waits, so it is done at once. Through an SQE it would
 * take effect only at the next wait(), and until then getpeername() says
 * ENOTCONN and sends without an address fail. */
static intptr_t braid__ur_dgram_connect(braid__sock *s, braid__op *op) {
  int rc;
  do
    rc = connect(s->fd, op->addr, (socklen_t)op->addrlen);
  while (rc < 0 && errno == EINTR);
  return rc == 0 ? 0 : braid__translate_sys_error(errno);
}

static intptr_t braid__uring_start(braid__sock *s, braid__op *op) {
  braid__uring *u = braid__ur(s->reactor);
  braid__uop *uo = braid__uo(op);
  uo->msg = NULL;
  uo->poll = 0;
  if (op->type == BRAID__OP_WRITE) {
    /* No synchronous writes here (no BRAID__CAP_TRY_WRITE). */
    if (op->flags & BRAID__OPF_TRY)
      return 0;
    if (braid__io_advance(op, 0) == 0)
      return (intptr_t)op->u.write.done;
  }
  if (op->type == BRAID__OP_SENDTO && op->u.write.nbufs > BRAID__URING_IOV_MAX)
    return BRAID_EMSGSIZE;
  if (op->type == BRAID__OP_SENDTO && (op->flags & BRAID__OPF_TRY))
    return braid__ur_try_sendto(s, op);
  if (op->type == BRAID__OP_CONNECT && (braid__us(s)->flags & BRAID__U_DGRAM))
    return braid__ur_dgram_connect(s, op);
  /* BRAID__OPF_DEFER needs nothing: an SQE queued now is submitted by the
   * next wait(), and its completion handled by the one after. */
  op->flags &= (uint8_t)~BRAID__OPF_TRUNCATED;
  if (op->type == BRAID__OP_ACCEPT && !u->no_mshot)
    return braid__ur_accept_submit(u, s, op);
  int rc = braid__ur_prep(u, s, op);
  if (rc < 0)
    return rc == BRAID_EAGAIN ? BRAID_ENOMEM : rc;
  braid__ur_track(s, op);
  return BRAID__PENDING;
}

static int braid__uring_abort(braid__sock *s, braid__op *op) {
  braid__uring *u = braid__ur(s->reactor);
  braid__usock *us = braid__us(s);
  if (us->accept == op) { /* a held accept: complete it from wait() */
    us->accept = NULL;
    braid__io_cancelled(op);
    braid__ur_mshot_stop(u, s);
    return 0;
  }
  if (!braid__ur_reserve(u, 1))
    return BRAID_ENOMEM;
  /* Matched by user_data: whatever SQE carries the op now (the op, or the
   * poll before a retry) is cancelled. */
  struct io_uring_sqe *sqe = braid__ur_sqe(u);
  sqe->opcode = IORING_OP_ASYNC_CANCEL;
  sqe->fd = -1;
  sqe->addr = (uint64_t)(uintptr_t)op;
  sqe->user_data = BRAID__U_UD_IGNORE;
  return 0;
}

/* Queue ASYNC_CANCELs of the socket's requests hard-linked to CLOSE(fd):
 * the descriptor number stays ours until every request on it is
 * cancelled, so a cancel cannot hit a socket that reused the number.
 * HARDLINK, since a cancel that found nothing (-ENOENT) must not sever the
 * chain. Each request is cancelled by its user_data (see
 * braid__usock.rop); only a socket with untracked requests is cancelled by
 * descriptor. */
static void braid__ur_close_queue(braid__uring *u, braid__sock *s) {
  braid__usock *us = braid__us(s);
  us->flags &= ~BRAID__U_CLOSE_WAIT;
  uint64_t ud[3];
  unsigned n = 0;
  if (!(us->flags & BRAID__U_UNTRACKED)) {
    if (us->rop != NULL)
      ud[n++] = (uint64_t)(uintptr_t)us->rop;
    if (us->wop != NULL)
      ud[n++] = (uint64_t)(uintptr_t)us->wop;
    if (us->flags & BRAID__U_MSHOT)
      ud[n++] = (uint64_t)(uintptr_t)s | BRAID__U_UD_ACCEPT;
  }
  for (unsigned i = 0; i < n; i++) {
    struct io_uring_sqe *sqe = braid__ur_sqe(u);
    sqe->opcode = IORING_OP_ASYNC_CANCEL;
    sqe->fd = -1;
    sqe->addr = ud[i];
    sqe->flags = IOSQE_IO_HARDLINK;
    sqe->user_data = BRAID__U_UD_IGNORE;
  }
  if (us->flags & BRAID__U_UNTRACKED) {
    struct io_uring_sqe *sqe = braid__ur_sqe(u);
    sqe->opcode = IORING_OP_ASYNC_CANCEL;
    sqe->fd = s->fd;
    sqe->cancel_flags = IORING_ASYNC_CANCEL_FD | IORING_ASYNC_CANCEL_ALL;
    sqe->flags = IOSQE_IO_HARDLINK;
    sqe->user_data = BRAID__U_UD_IGNORE;
  }
  struct io_uring_sqe *sqe = braid__ur_sqe(u);
  sqe->opcode = IORING_OP_CLOSE;
  sqe->fd = s->fd;
  sqe->user_data = (uint64_t)(uintptr_t)s | BRAID__U_UD_CLOSE;
  s->fd = -1;
}

static void braid__uring_shut(braid__sock *s) {
  braid__uring *u = braid__ur(s->reactor);
  braid__usock *us = braid__us(s);
  braid__io_ref(s);         /* the CLOSE */
  if (us->accept != NULL) { /* a held accept */
    braid__io_cancelled(us->accept);
    us->accept = NULL;
  }
  int fd;
  while ((fd = braid__ur_unpark(u, s)) >= 0)
    close(fd);
  /* The CLOSE below runs only at the next wait(), and the socket lives on
   * until the kernel drops the multishot ACCEPT's reference to it: a
   * listener closed now would meanwhile still complete handshakes, so a
   * connect made right after close() would succeed and then be reset
   * instead of being refused, as it is after close(2) on the readiness
   * engine. shutdown(SHUT_RD) stops listening at once (Linux: the
   * listener leaves LISTEN, its backlog is reset, the ACCEPT fails). */
  if (us->flags & BRAID__U_LISTEN)
    (void)shutdown(s->fd, SHUT_RD);
  if (braid__ur_reserve(u, BRAID__U_CLOSE_SQES)) {
    braid__ur_close_queue(u, s);
  } else {
    us->flags |= BRAID__U_CLOSE_WAIT;
    us->close_next = u->close_wait;
    u->close_wait = s;
  }
}

/* ------------------------------------------------------------------------
 * Sockets: plain syscalls from platform/posix/sock.c
 * ------------------------------------------------------------------------ */

static int braid__uring_sock_adopt(braid_reactor_t *r, braid__sock *s,
                                   braid__fd fd) {
  braid__io_sock_init(r, s, fd);
  int type = 0;
  socklen_t len = sizeof type;
  if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) == 0) {
    braid__us(s)->flags |= BRAID__U_SOCKET;
    if (type == SOCK_DGRAM)
      braid__us(s)->flags |= BRAID__U_DGRAM;
  }
  return 0;
}

static int braid__uring_sock_listen(braid__sock *s, int backlog) {
  int rc = braid__posix_sock_listen(s, backlog);
  if (rc == 0)
    braid__us(s)->flags |= BRAID__U_LISTEN; /* see braid__uring_shut */
  return rc;
}

static int braid__uring_sock_open(braid_reactor_t *r, braid__sock *s,
                                  int family, int type) {
  int fd = braid__sock_socket(family, type);
  if (fd < 0)
    return fd;
  return braid__uring_sock_adopt(r, s, fd);
}

static int braid__uring_signal_watch(braid_reactor_t *r, int signo, int on) {
  return braid__sig_watch(r, braid__ur(r)->wake_fd, signo, on);
}

const braid__io_ops braid__uring_io = {
    .name = "uring",
    .caps = BRAID__CAP_SIGNALS | BRAID__CAP_UNIX | BRAID__CAP_COMPLETION |
            BRAID__CAP_EMBED_FD | BRAID__CAP_TRY_SENDTO,
    .init = braid__uring_init,
    .destroy = braid__uring_destroy,
    .poller_name = braid__uring_poller_name,
    .wait = braid__uring_wait,
    .wakeup = braid__uring_wakeup,
    .signal_watch = braid__uring_signal_watch,
    .signal_count = braid__io_signal_count,
    .sock_open = braid__uring_sock_open,
    .sock_adopt = braid__uring_sock_adopt,
    .fd_close = braid__posix_fd_close,
    .sock_bind = braid__posix_sock_bind,
    .sock_listen = braid__uring_sock_listen,
    .sock_name = braid__posix_sock_name,
    .sock_setopt = braid__posix_sock_setopt,
    .sock_getopt = braid__posix_sock_getopt,
    .sock_mcast = braid__posix_sock_mcast,
    .sock_shutdown = braid__posix_sock_shutdown,
    .submit = braid__io_submit,
    .cancel = braid__io_cancel,
    .close = braid__io_close,
    .start = braid__uring_start,
    .abort = braid__uring_abort,
    .shut = braid__uring_shut,
    .backend_fd = braid__uring_backend_fd,
    .pending = braid__uring_pending,
};
