/* The POSIX readiness engine: turns readiness (epoll, kqueue, poll) into the
 * completion-shaped I/O layer of core/io.h. A readiness poller is one small
 * file implementing braid__poller; everything else (trying syscalls first,
 * queues of pending operations, wakeups) is here once, and what every
 * platform shares (deferred ops and closes, signals) in core/io.c and
 * core/io_signal.c. */
#ifndef BRAID_POSIX_ENGINE_H
#define BRAID_POSIX_ENGINE_H

#include "core/internal.h"

/* Readiness bits reported by pollers to braid__engine_ready(). */
#define BRAID__EV_READ 0x1u
#define BRAID__EV_WRITE 0x2u
#define BRAID__EV_ERROR 0x4u /* error or hang-up: wake both directions */
#define BRAID__EV_HUP 0x8u   /* the peer shut down (EPOLLRDHUP, EV_EOF) */

/* braid__psock.events: what the engine believes and what it asked for. */
#define BRAID__S_READABLE 0x01u   /* a read would not block (or unknown) */
#define BRAID__S_WRITABLE 0x02u   /* a write would not block (or unknown) */
#define BRAID__S_WANT_READ 0x04u  /* interest registered with a level poller */
#define BRAID__S_WANT_WRITE 0x08u
#define BRAID__S_HUP 0x10u        /* the poller saw the peer hang up */

/* braid__psock.flags */
#define BRAID__F_SOCKET 0x02u     /* a socket (sendmsg with MSG_NOSIGNAL) */
#define BRAID__F_CONNECTING 0x04u
#define BRAID__F_WAKE 0x08u       /* the engine's own wakeup descriptor */
#define BRAID__F_STREAM 0x10u     /* a byte stream: a short read or write
                                     means the kernel buffer is drained or
                                     full, so readiness is cleared without
                                     an extra EAGAIN syscall */

/* braid__psock.flags of a braid__posix_watch (watch.h): a borrowed
 * descriptor, reported to its callback, never closed by the engine; and
 * watched with level-triggered interest (WANT_* bits), even on edge
 * pollers. */
#define BRAID__F_WATCH 0x40u
#define BRAID__F_LEVEL 0x80u

/* Poller capabilities. */
#define BRAID__POLL_EDGE 0x1u /* interest is registered once; edges report
                                 every new readiness (epoll EPOLLET, kqueue
                                 EV_CLEAR); update() is never called */

/* The engine's record of a socket, in braid__sock's private storage. */
typedef struct braid__psock {
  unsigned flags;               /* BRAID__F_* */
  unsigned events;              /* BRAID__S_* */
  braid__op *rq;                /* pending reads and accepts */
  braid__op *wq, *wq_tail;      /* pending writes and connects */
  int slot;                     /* the poller's index for it (poll's pollfd
                                   slot), or -1 */
  int err;                      /* the socket error a poller reported with a
                                   hang-up (kqueue's fflags on EV_EOF) */
} braid__psock;
BRAID__PRIV_FITS(braid__psock, braid__sock);

static inline braid__psock *braid__ps(braid__sock *s) {
  return BRAID__PRIV(braid__psock, s);
}
static inline const braid__psock *braid__cps(const braid__sock *s) {
  return BRAID__PRIV(const braid__psock, s);
}

typedef struct braid__engine braid__engine;

/* A readiness poller. Each slot is called on the loop thread only. */
typedef struct braid__poller {
  /* "epoll", "kqueue", "poll". */
  const char *name;
  /* BRAID__POLL_* flags. */
  unsigned caps;
  /* Create the kernel object; keep private state in e->pstate. */
  int (*init)(braid__engine *e);
  /* Close the kernel object and free e->pstate. */
  void (*destroy)(braid__engine *e);
  /* Start watching s->fd. Edge pollers watch both directions; level
   * pollers watch what the WANT_* bits of braid__ps(s)->events say. A socket flagged
   * BRAID__F_LEVEL is watched level-triggered for its WANT_* bits on
   * every poller, and update() is called for it on edge pollers too. */
  int (*add)(braid__engine *e, braid__sock *s);
  /* Level pollers, and BRAID__F_LEVEL sockets on any poller: WANT_* bits
   * changed. May be batched until wait. */
  void (*update)(braid__engine *e, braid__sock *s);
  /* Stop watching s->fd; called before the descriptor is closed. */
  void (*del)(braid__engine *e, braid__sock *s);
  /* Wait up to timeout_ns (-1 forever) and call braid__engine_ready() for
   * each descriptor that became ready. */
  int (*wait)(braid__engine *e, int64_t timeout_ns);
  /* The pollable descriptor of the kernel object, or -1. */
  int (*fd)(const braid__engine *e);
  /* Optional (NULL: none): the poller's own wakeup (kqueue's EVFILT_USER).
   * Thread-safe: make a concurrent or the next wait() return; that wait()
   * then calls braid__engine_woken(). Used only when init() set
   * e->poller_wakes, so a poller can fall back at run time. Otherwise the
   * engine wakes the poller through an eventfd or a pipe it registers. */
  void (*wake)(braid__engine *e);
  /* Optional (NULL: never): nonzero when registrations are queued that the
   * kernel object does not hold yet, so a host polling fd() would miss
   * their events until the next wait(). */
  int (*pending)(const braid__engine *e);
} braid__poller;

struct braid__engine {
  braid_reactor_t *r;
  const braid__poller *poller;
  void *pstate;
  int poller_wakes;   /* set by poller init: poller->wake() wakes it */
  braid__sock wake;   /* read end of the wakeup eventfd / pipe; with
                         poller_wakes, opened only for signal delivery */
  int wake_wfd;       /* write end (same fd for an eventfd), or -1 */
  char *rbuf;             /* shared read buffer for READ with base NULL */
  int time_fresh;         /* the clock was refreshed in this wait() */
  size_t rbuf_len;
};

/* Called by pollers for every ready descriptor. s may have been closed by
 * an earlier callback in the same batch: the engine checks. */
void braid__engine_ready(braid__engine *e, braid__sock *s, unsigned ev);

/* Called by a poller with its own wakeup (poller->wake) when it fired:
 * runs the calls queued from other threads and delivers signals. */
void braid__engine_woken(braid__engine *e);

/* Called by a poller before braid__engine_ready() when the kernel handed
 * it the socket's pending error along with a hang-up (kqueue: fflags on
 * EV_EOF). Where reading the event consumed SO_ERROR (libkqueue on Linux),
 * this is the only record of why a connect failed or a connection died. */
void braid__engine_sock_error(braid__sock *s, int syserr);

/* Convert a timeout for a millisecond API (epoll_wait, poll), rounding up
 * so that a wait never ends before the timer it waits for is due. */
int braid__timeout_ms(int64_t timeout_ns);

extern const braid__poller braid__poller_epoll;
extern const braid__poller braid__poller_kqueue;
extern const braid__poller braid__poller_poll;

#endif
