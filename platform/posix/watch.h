/* A POSIX platform extension: watch a descriptor someone else owns for
 * readiness, through the reactor's poller.
 *
 * This exists for adapters that host another event loop inside braid (the
 * GLib host, adapters/glib): such a loop hands out descriptors and asks
 * "tell me when this is readable", which the completion-shaped I/O layer of
 * core/io.h cannot express. Its public face is braid/watch.h (core/watch.c,
 * the only user of this header); it is never used by transports or
 * protocols (they see only braid_transport), and exists only where the
 * readiness engine does (not on IOCP or io_uring).
 *
 * Semantics, chosen to match poll(2) and GLib's GPollFD:
 *   - level-style: while the descriptor is ready for an event in the
 *     interest set, every wait() of the reactor reports it, even on
 *     edge-triggered pollers (epoll and kqueue register a watch without
 *     EPOLLET / EV_CLEAR). The engine never reads, writes or probes the
 *     descriptor: it makes no syscall on it, only on the poller;
 *   - borrowed: stop() removes the descriptor from the poller but never
 *     closes it; the owner closes it, after stop();
 *   - the owner may close the descriptor before stop(), and its number may
 *     then be reused, even by braid for a socket: stop() compares the
 *     file's identity (fstat) with the one it had at start and leaves the
 *     poller's registration alone when it differs, so it never removes a
 *     socket's registration. (Closed and reused while still watched, with
 *     no stop() in between, the watch silently watches nothing: epoll and
 *     kqueue dropped it at close. An owner that closes descriptors must
 *     stop their watches first, as GLib's sources do by leaving the list.)
 *   - stop() is deferred like a socket close: the callback is not called
 *     after stop() returns, and `stopped` runs from a later wait(), so the
 *     watch's memory may be freed there (an event for it may still sit in
 *     the poller's batch being processed). */
#ifndef BRAID_POSIX_WATCH_H
#define BRAID_POSIX_WATCH_H

#include "core/internal.h"

/* Interest and readiness bits. */
#define BRAID__WATCH_READ 0x1u
#define BRAID__WATCH_WRITE 0x2u
#define BRAID__WATCH_ERROR 0x4u /* error or hang-up; reported always */
#define BRAID__WATCH_HUP 0x8u   /* the peer hung up */

typedef struct braid__posix_watch braid__posix_watch;
typedef void (*braid__posix_watch_cb)(braid__posix_watch *w, unsigned ev);
typedef void (*braid__posix_watch_stopped_cb)(braid__posix_watch *w);

struct braid__posix_watch {
  braid__sock sock_; /* private: the engine's record */
  braid__posix_watch_cb cb_;
  braid__posix_watch_stopped_cb stopped_;
  unsigned long long dev_, ino_; /* private: what fd named at start */
  void *data;                    /* the owner's */
};

/* Whether r's I/O layer is the POSIX readiness engine, the only one with
 * watches (not io_uring or IOCP). */
int braid__posix_watch_supported(const braid_reactor_t *r);

/* Start watching fd for `events` (BRAID__WATCH_READ / _WRITE). cb runs on
 * the loop thread from inside the reactor's wait. BRAID_ENOTSUP where the
 * reactor's I/O layer is not the POSIX readiness engine. */
int braid__posix_watch_start(braid_reactor_t *r, braid__posix_watch *w, int fd,
                             unsigned events, braid__posix_watch_cb cb);

/* Change the interest set (no syscall on poll; one epoll_ctl, or one queued
 * kevent change, otherwise; nothing when it did not change). */
void braid__posix_watch_set(braid__posix_watch *w, unsigned events);

/* Stop watching (see above); `stopped` may be NULL. */
void braid__posix_watch_stop(braid__posix_watch *w,
                             braid__posix_watch_stopped_cb stopped);

#endif
