/* The I/O layer's interface: what core asks of a platform.
 *
 * The layer is completion-shaped. Core submits an operation (accept,
 * connect, read into a buffer, write iovecs, datagram send/receive) on a
 * socket; the platform completes it exactly once, with a status:
 *
 *   - inline: submit() returns the final status (>= 0 bytes or a BRAID_E*
 *     code) and will never call op->cb. Readiness engines do this when the
 *     syscall succeeds at once; IOCP does it with
 *     FILE_SKIP_COMPLETION_PORT_ON_SUCCESS.
 *   - later: submit() returns BRAID__PENDING and op->cb(op, status) runs
 *     from inside wait(), on the loop thread.
 *
 * Between submit and completion the platform owns the op and the memory it
 * points at (buffers, the address); core must not touch or free them.
 * cancel() makes a pending op complete (later, through cb) with
 * BRAID_ECANCELED unless it completed first; a read that completed first
 * is reported as cancelled all the same, and its bytes go to the next read
 * submitted on the socket (see cancel below). close() cancels everything
 * pending on the socket, closes it, and calls close_cb from a later wait()
 * after the last op completion, so memory may be freed there. See
 * docs/ARCHITECTURE.md.
 *
 * Two halves: the platform's (platform/: syscalls, one implementation per
 * poller, the ops table below) and the bookkeeping every platform needs,
 * written once in core/io.c (the end of this file): submit, cancel and close
 * themselves, in-flight counts, the close list, ops deferred to a later
 * wait(), completion with the callback depth held, iovec advancing, and
 * reads that completed after a cancel. core/io_signal.c holds the process's
 * signal registry. A platform only starts, cancels and finishes syscalls and
 * reports each completion to braid__io_complete().
 */
#ifndef BRAID_CORE_IO_H
#define BRAID_CORE_IO_H

#include <stddef.h>
#include <stdint.h>

#ifdef _WIN32
#include <winsock2.h>
#include <ws2tcpip.h>
typedef SOCKET braid__fd;
#define BRAID__BAD_FD INVALID_SOCKET
#else
#include <sys/socket.h>
typedef int braid__fd;
#define BRAID__BAD_FD (-1)
#endif

typedef struct braid_reactor braid_reactor_t;

/* submit() returns this when the op will complete through its callback.
 * It must be a value no completion can have: it was 1, so a read or
 * write of exactly one byte that completed inline looked pending, its
 * data was never delivered and the socket never read or wrote again (a
 * client typing a request one byte at a time hung the HTTP server). */
#define BRAID__PENDING INTPTR_MIN

/* An implementation's start() returns this for an op it wants started
 * again from a later wait() (BRAID__OPF_DEFER; IOCP's readiness probe that
 * keeps finding nothing). core/io.c queues the op, reports it to the caller
 * as BRAID__PENDING, and calls start() again, with BRAID__OPF_DEFER
 * cleared, from the next wait(). Never a status, never seen by callers. */
#define BRAID__LATER (INTPTR_MIN + 1)

/* A buffer for scatter/gather writes. */
typedef struct braid__buf {
  void *base;
  size_t len;
} braid__buf;

typedef enum braid__op_type {
  BRAID__OP_READ = 1,  /* recv into read.base/len; 0 means end of input */
  BRAID__OP_WRITE,     /* send all of write.bufs; status = bytes sent */
  BRAID__OP_ACCEPT,    /* accept one connection into accept.fd */
  BRAID__OP_CONNECT,   /* connect to addr */
  BRAID__OP_RECVFROM,  /* one datagram into read.base/len, sender into addr */
  BRAID__OP_SENDTO,    /* one datagram from write.bufs to addr */
  BRAID__OP_SENDFILE   /* send all of sendfile.len bytes of the file
                          sendfile.file from sendfile.offset (only with
                          BRAID__CAP_SENDFILE); status = bytes sent */
} braid__op_type;

/* Private storage. Each I/O implementation keeps its per-socket and per-op
 * state in a struct of its own, declared in its own file, and reaches it
 * through BRAID__PRIV() into these opaque words; BRAID__PRIV_FITS() checks
 * at compile time that the struct fits. Rather than a union of every
 * implementation's structs declared here: io_uring's and IOCP's records
 * (an OVERLAPPED, kernel ring bookkeeping) stay out of core, core cannot
 * read another layer's fields by mistake, and a new poller touches no core
 * header. Before this, a handful of shared fields meant something different
 * on every backend (one int was a poll slot, an in-flight count and an
 * address family; one pointer a queue link, a message header, an accept
 * context or a buffer).
 *
 * Sizes: the POSIX engine's socket record is the largest (two queues,
 * readiness bits, the poll slot, a pending error); an op needs a queue link
 * on the engine and a message header pointer on io_uring, and on Windows
 * IOCP's OVERLAPPED (32 bytes on x64) and its context. */
typedef union braid__priv {
  void *p;
  uint64_t u;
} braid__priv;
#define BRAID__SOCK_PRIV 6
#ifdef _WIN32
#define BRAID__OP_PRIV 6
#else
#define BRAID__OP_PRIV 2
#endif
#define BRAID__PRIV(type, obj) ((type *)(void *)(obj)->priv_)
#define BRAID__PRIV_FITS(type, obj_type)                                       \
  _Static_assert(sizeof(type) <= sizeof(((obj_type *)0)->priv_) &&             \
                     _Alignof(type) <= _Alignof(braid__priv),                  \
                 #type " must fit the private storage of " #obj_type)

typedef struct braid__sock braid__sock;
typedef struct braid__op braid__op;

/* status: bytes transferred (>= 0) or a BRAID_E* code. */
typedef void (*braid__op_cb)(braid__op *op, intptr_t status);
typedef void (*braid__close_cb)(braid__sock *s);

/* braid__op.flags */
#define BRAID__OPF_TRY 0x1u /* WRITE: write what the kernel takes now and
                               return that count inline (maybe 0); never
                               pending. Completion platforms that cannot
                               write synchronously return 0.
                               SENDTO: the same; a datagram goes whole or
                               not at all, so the result is its size or 0
                               (do not TRY an empty datagram). */

#define BRAID__OPF_DEFER 0x2u /* never complete inline: complete from the
                                 next wait(), even if ready now; when
                                 submitted from a callback that a wait()
                                 runs, from a later wait() than that one,
                                 so that the loop's timers and call-soons
                                 run first. For submits made inside
                                 another op's callback where an inline
                                 completion would nest callbacks
                                 (resume_reading), and for a stream or
                                 UDP socket that used up its read budget
                                 for this loop iteration (fairness). */

#define BRAID__OPF_TRUNCATED 0x4u /* RECVFROM, set by the platform on
                                     completion: the datagram was larger
                                     than the buffer and its tail was
                                     discarded (MSG_TRUNC). */

/* braid__op.state_ (core/io.c's; the platform may read them through the
 * functions at the end of this file) */
#define BRAID__OPS_PENDING 0x1u /* submitted, not completed yet */
#define BRAID__OPS_LATER 0x2u   /* on core's queue for a later wait() */
#define BRAID__OPS_CANCEL 0x4u  /* cancel() asked */

struct braid__op {
  braid__op_cb cb;
  braid__sock *sock; /* set by submit */
  uint8_t type;
  uint8_t flags;  /* BRAID__OPF_* (core sets flags before each submit) */
  uint8_t state_; /* core/io.c's: BRAID__OPS_* */
  /* READ / RECVFROM with read.base == NULL: the platform supplies the
   * buffer (a per-reactor one on readiness engines, a provided-buffer ring
   * on io_uring) and sets read.base to it on completion; the bytes are
   * valid only until the next op is submitted or the callback returns.
   * Idle connections then hold no read buffer at all. */
  union {
    struct {
      void *base;
      size_t len;
    } read;
    struct {
      braid__buf *bufs; /* the platform advances through these in place */
      size_t nbufs;
      size_t done; /* bytes written so far */
    } write;
    struct {
      braid__fd fd; /* the accepted socket, on success */
    } accept;
    struct {
      int file;        /* a regular file's descriptor, owned by the caller */
      uint64_t offset; /* where the next byte comes from; advanced */
      size_t len;      /* bytes still to send; decremented */
      size_t done;     /* bytes sent so far */
    } sendfile;
  } u;
  /* CONNECT/SENDTO target, or RECVFROM/ACCEPT storage for the peer
   * (addrlen in: capacity, out: length). Caller-owned; may be NULL for
   * ACCEPT/RECVFROM. */
  struct sockaddr *addr;
  int addrlen;
  braid__op *next_;                  /* core/io.c's queue link */
  braid__priv priv_[BRAID__OP_PRIV]; /* the implementation's (see above) */
};

/* A socket as the platform sees it. Embedded in core's transports. */
struct braid__sock {
  braid__fd fd;
  braid_reactor_t *reactor;
  braid__close_cb close_cb;
  /* core/io.c's: ops the platform holds for this socket, plus requests of
   * its own that must finish before close_cb (braid__io_ref); the socket's
   * close list link; bytes a read brought after a cancel (braid__held). */
  unsigned inflight_;
  uint8_t closing_;
  braid__sock *next_closing_;
  struct braid__held *held_;
  braid__priv priv_[BRAID__SOCK_PRIV]; /* the implementation's */
};

/* Capabilities (branch on these, never on platform names). */
enum braid__io_caps {
  BRAID__CAP_SIGNALS = 1u << 0,    /* signals can be watched (IOCP: SIGINT
                                      and SIGTERM, as console events;
                                      signal_watch refuses the rest) */
  BRAID__CAP_UNIX = 1u << 1,       /* AF_UNIX stream sockets */
  BRAID__CAP_COMPLETION = 1u << 2, /* native completion (IOCP, io_uring) */
  BRAID__CAP_EMBED_FD = 1u << 3,   /* backend_fd() is pollable */
  BRAID__CAP_TRY_WRITE = 1u << 4,  /* BRAID__OPF_TRY writes can succeed */
  BRAID__CAP_SENDFILE = 1u << 5,   /* BRAID__OP_SENDFILE: the kernel copies
                                      file pages to a stream socket (Linux
                                      sendfile(2)); without it, callers read
                                      the file into memory and write it */
  BRAID__CAP_PIPE = 1u << 7,      /* sock_adopt takes a pipe or FIFO
                                      descriptor (non-blocking, made so by
                                      braid__fd_prepare) and reads and writes
                                      it with read/write, not recv/send */
  BRAID__CAP_TRY_SENDTO = 1u << 6  /* BRAID__OPF_TRY SENDTOs can succeed:
                                      the kernel's verdict on a datagram
                                      (sent, or EMSGSIZE, ENETUNREACH...)
                                      comes back inline. Separate from
                                      TRY_WRITE: a completion platform may
                                      batch stream writes yet still send a
                                      datagram at once. */
};

/* Options for sock_setopt. */
enum braid__sockopt {
  BRAID__SO_REUSEADDR = 1,
  BRAID__SO_REUSEPORT,
  BRAID__SO_V6ONLY,
  BRAID__SO_NODELAY,
  BRAID__SO_KEEPALIVE, /* value: idle seconds, 0 = off */
  BRAID__SO_BROADCAST,
  BRAID__SO_LINGER0, /* value 1: close() resets the connection (TCP RST)
                       instead of a FIN after the queued bytes */
  /* Datagram sockets. The engine finds the socket's family itself. */
  BRAID__SO_RCVBUF,         /* bytes */
  BRAID__SO_SNDBUF,         /* bytes */
  BRAID__SO_MULTICAST_TTL,  /* IPv4 TTL / IPv6 hop limit, 0..255 */
  BRAID__SO_MULTICAST_LOOP  /* 1: a host's own multicast is looped back */
};

/* Operations of sock_mcast. */
enum braid__mcast_op {
  BRAID__MC_JOIN = 1, /* join `group` on the interface */
  BRAID__MC_LEAVE,    /* leave it */
  BRAID__MC_IF        /* send multicast through the interface (group NULL) */
};

/* The ops table. One per I/O implementation: the POSIX readiness engine
 * (over epoll, kqueue or poll), io_uring, IOCP. */
typedef struct braid__io_ops {
  /* Short name for logs and braid_reactor_poller(). */
  const char *name;
  /* braid__io_caps. */
  unsigned caps;
  /* Set up state for r (r->io_state); `poller` picks a sub-poller where
   * the implementation has several (the POSIX engine: "epoll", "poll").
   * Returns 0 or BRAID_E*; BRAID_ENOTSUP when this host lacks it. */
  int (*init)(braid_reactor_t *r, const char *poller);
  /* Release everything init made. Every socket has been closed before. */
  void (*destroy)(braid_reactor_t *r);
  /* The name of the sub-poller in use. */
  const char *(*poller_name)(const braid_reactor_t *r);
  /* Wait up to timeout_ns (-1: forever, 0: poll) for completions and run
   * their callbacks, then run close callbacks. Calls
   * braid__reactor_wakeup_drain() when the wakeup fired. */
  int (*wait)(braid_reactor_t *r, int64_t timeout_ns);
  /* Thread-safe: make a concurrent or next wait() return soon. */
  void (*wakeup)(braid_reactor_t *r);
  /* Start (on=1) or stop (on=0) delivery of signo to this reactor. Only
   * with BRAID__CAP_SIGNALS. The implementation names how the process's
   * signal registry wakes it (braid__sig_watch) and refuses what it cannot
   * deliver. */
  int (*signal_watch)(braid_reactor_t *r, int signo, int on);
  /* Delivery count of signo since the process started watching it:
   * braid__io_signal_count (core/io_signal.c) everywhere. */
  unsigned (*signal_count)(braid_reactor_t *r, int signo);

  /* Sockets. open creates a non-blocking, close-on-exec socket and
   * registers it; adopt registers an existing one (from accept). */
  int (*sock_open)(braid_reactor_t *r, braid__sock *s, int family, int type);
  int (*sock_adopt)(braid_reactor_t *r, braid__sock *s, braid__fd fd);
  /* Close a descriptor that was never registered (an accepted socket
   * braid could not take on). */
  void (*fd_close)(braid__fd fd);
  /* Plain socket syscalls, done at once (no completion). */
  int (*sock_bind)(braid__sock *s, const struct sockaddr *a, int len);
  int (*sock_listen)(braid__sock *s, int backlog);
  /* Local (peer = 0) or peer (peer = 1) address; *len in/out. */
  int (*sock_name)(braid__sock *s, int peer, struct sockaddr *a, int *len);
  /* A BRAID__SO_* option. */
  int (*sock_setopt)(braid__sock *s, int opt, int value);
  /* Read a BRAID__SO_* option back (BRAID__SO_BROADCAST,
   * BRAID__SO_RCVBUF, BRAID__SO_SNDBUF, BRAID__SO_MULTICAST_TTL,
   * BRAID__SO_MULTICAST_LOOP). */
  int (*sock_getopt)(braid__sock *s, int opt, int *value);
  /* Multicast (braid__mcast_op) on a datagram socket of `family`. The
   * interface is `iface4` for IPv4 (NULL: the kernel's choice) and
   * `ifindex` for IPv6 (0: the kernel's choice). */
  int (*sock_mcast)(braid__sock *s, int op, int family,
                    const struct sockaddr *group,
                    const struct sockaddr *iface4, unsigned ifindex);
  /* Shut down the writing side (FIN). */
  int (*sock_shutdown)(braid__sock *s);
  /* Submit an op on s: returns BRAID__PENDING or the inline status.
   * braid__io_submit (core/io.c) in every table: it refuses a closing
   * socket, counts the op in flight and serves deferred ops and held reads,
   * calling start() for the rest. A slot, not a direct call, so that tests
   * can stand in for the I/O layer. */
  intptr_t (*submit)(braid__sock *s, braid__op *op);
  /* Cancel a pending op: it completes later with BRAID_ECANCELED unless it
   * completed first; 0, or BRAID_EINVAL if it is not pending. A READ or
   * RECVFROM that completed first with data (or the end of input) is
   * reported as cancelled anyway, never lost: core keeps what it brought
   * (a datagram with its sender, when the cancelled op had addr storage)
   * and hands it to the next read submitted on the socket, from a later
   * wait(). So a transport paused with a read in flight never sees data
   * before it resumes. braid__io_cancel (core/io.c) in every table; it
   * calls abort() for ops the platform holds. */
  int (*cancel)(braid__sock *s, braid__op *op);
  /* Cancel all pending ops on s, close it, call close_cb from a later
   * wait() after the last op completion. braid__io_close (core/io.c) in
   * every table; it calls shut(). */
  void (*close)(braid__sock *s, braid__close_cb cb);
  /* The implementation's side of submit: start op on s (not closing; op
   * and s set up by core). Returns BRAID__PENDING (the op is the
   * platform's until it reports braid__io_complete()), BRAID__LATER, or the
   * inline status. */
  intptr_t (*start)(braid__sock *s, braid__op *op);
  /* The implementation's side of cancel, for an op it holds: make it
   * complete soon with BRAID_ECANCELED (braid__io_cancelled() for an op it
   * holds itself, a kernel cancel otherwise). 0 or BRAID_E*. */
  int (*abort)(braid__sock *s, braid__op *op);
  /* The implementation's side of close: cancel every op it holds for s
   * (each still completes, as above), stop watching and close the
   * descriptor. Requests of its own still in the kernel hold the close
   * callback back through braid__io_ref(). */
  void (*shut)(braid__sock *s);
  /* The pollable descriptor behind wait(), or -1 (for embedding). */
  int (*backend_fd)(const braid_reactor_t *r);
  /* Nonzero when the next wait() has work it will do without waiting:
   * completions or closes queued for it, deferred ops on ready sockets,
   * registrations not yet handed to the kernel (kqueue's changelist). An
   * embedding host must then not block on backend_fd. */
  int (*pending)(const braid_reactor_t *r);
} braid__io_ops;

/* The I/O implementations built into this library. */
extern const braid__io_ops braid__posix_io; /* epoll / kqueue / poll */
extern const braid__io_ops braid__iocp_io;  /* Windows I/O completion ports */
extern const braid__io_ops braid__uring_io; /* Linux io_uring */

/* The index of the network interface called `name` ("lo", "eth0"), or
 * BRAID_ENOENT. */
int braid__if_index(const char *name, unsigned *index);

/* The file a Unix stream listener created by binding: its path and the
 * identity (device, inode) the socket had then. Closing the listener
 * removes the file only while that path still names that socket: a
 * program that moved on (chdir with a relative path) or another process
 * that replaced the file since keeps what is there now. */
typedef struct braid__unix_file {
  char *path; /* NULL: nothing to remove */
  uint64_t dev, ino;
} braid__unix_file;

/* Remember the file behind `sa` (a Unix address just bound). Nothing is
 * remembered for an abstract name, where the platform cannot tell a
 * file's identity (Windows), or without memory for the path. */
void braid__unix_file_note(braid__unix_file *f, const struct sockaddr *sa,
                           int len);

/* Remove the file noted if it is still the same socket, and forget it.
 * Safe on a zero-filled one and to repeat. */
void braid__unix_file_remove(braid__unix_file *f);

/* POSIX: make descriptor fd non-blocking and close-on-exec (a pipe end
 * braid is handed). 0 or BRAID_E*; BRAID_ENOTSUP on Windows. */
int braid__fd_prepare(int fd);

/* Map the platform's last error (errno, WSAGetLastError) to BRAID_E*. */
int braid__translate_sys_error(int syserr);

/* ------------------------------------------------------------------------
 * core/io.c: the bookkeeping every I/O implementation shares. The platform
 * calls these; core calls submit/cancel/close through the table.
 * ------------------------------------------------------------------------ */

intptr_t braid__io_submit(braid__sock *s, braid__op *op);
int braid__io_cancel(braid__sock *s, braid__op *op);
void braid__io_close(braid__sock *s, braid__close_cb cb);

/* Make s a fresh, open socket of r on descriptor fd (sock_open and
 * sock_adopt call it before their own setup). */
void braid__io_sock_init(braid_reactor_t *r, braid__sock *s, braid__fd fd);

/* The platform is done with op: run op->cb(op, st) now, with the reactor's
 * callback depth held, and settle the counts. On a closing socket every
 * completion is BRAID_ECANCELED (an accepted descriptor is closed); a read
 * that completed with data after a cancel is reported as cancelled and
 * its data kept (see cancel). */
void braid__io_complete(braid__op *op, intptr_t st);
/* Complete op with BRAID_ECANCELED at the end of this wait() (or the next,
 * outside one), before the close callbacks: for an op the platform held
 * itself (a queue, a parked accept), which no kernel completion will end. */
void braid__io_cancelled(braid__op *op);
/* From a completion: start op again from the next wait() (it stays
 * pending), as if start() had said BRAID__LATER. */
void braid__io_later(braid__op *op);
/* A request of the platform's own on s (io_uring's CLOSE, its multishot
 * ACCEPT) that close_cb must wait for; unref when it completed. */
void braid__io_ref(braid__sock *s);
void braid__io_unref(braid__sock *s);

/* wait() calls begin first, with its timeout: returns 0 when core has work
 * that must not wait (ops deferred to this wait(), cancelled ops, close
 * callbacks), else timeout; it takes the deferred ops queued so far as
 * this wait()'s batch, so that ops deferred while it runs callbacks wait
 * for the next one (BRAID__OPF_DEFER). After handling its completions,
 * wait() calls end: runs the batch, the cancelled ops, and the close
 * callbacks of sockets with nothing left in flight. */
int64_t braid__io_wait_begin(braid_reactor_t *r, int64_t timeout);
void braid__io_wait_end(braid_reactor_t *r);
/* Nonzero when the next wait() has core work to do (for pending()). */
int braid__io_busy(const braid_reactor_t *r);

/* Whether cancel() was asked for op, which is pending (a closing socket's
 * ops are all cancelled too: check s->closing_). */
static inline int braid__io_cancel_asked(const braid__op *op) {
  return (op->state_ & BRAID__OPS_CANCEL) != 0;
}

/* WRITE: `n` more bytes were sent; drop them from the front of the op's
 * buffers and count them in u.write.done. Returns the buffers left (empty
 * ones skipped). */
size_t braid__io_advance(braid__op *op, size_t n);

/* core/io_signal.c: the process-wide signal registry. Signal dispositions
 * are process-wide, so this is the only process-wide state braid keeps: a
 * delivery counter per signal and the wakeup targets of the reactors that
 * watch any. `target` is how the platform wakes the reactor from its
 * handler (a descriptor on POSIX, a completion port on Windows). 0 or
 * BRAID_E*. */
int braid__sig_watch(braid_reactor_t *r, intptr_t target, int signo, int on);
#define BRAID__SIG_MAX 65 /* signal numbers braid accepts are all below */
/* From the platform's handler (async-signal-safe on POSIX): count one
 * delivery of signo and wake every watching reactor. */
void braid__sig_deliver(int signo);
unsigned braid__io_signal_count(braid_reactor_t *r, int signo);
/* Provided by the platform for the registry: install the process's handler
 * for signo (the first watcher in the process) and put the old disposition
 * back (the last one gone); wake one target from the handler. */
int braid__sig_install(int signo);
void braid__sig_uninstall(int signo);
void braid__sig_notify(intptr_t target);

#endif
