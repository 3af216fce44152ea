/* braid: watching a descriptor someone else owns (a POSIX extension).
 *
 * For adapters that host another event loop inside braid (adapters/glib,
 * braid/glib.h): such a loop hands out descriptors and asks "tell me when
 * this is readable", which braid's completion-shaped I/O (read this, write
 * that) cannot express. Protocols and transports never need it: they see
 * only braid_transport (braid/transport.h).
 *
 * Where: only on the POSIX readiness pollers (epoll, kqueue, poll). On the
 * completion pollers (io_uring, IOCP) and on Windows every call returns
 * BRAID_ENOTSUP; braid_watch_supported() says which beforehand. Hosts that
 * need another loop there use the thread-hosted mode of braid/embed.h.
 *
 * Semantics, chosen to match poll(2) and GLib's GPollFD:
 *   - level-style: while the descriptor is ready for an event in the
 *     interest set, every wait of the reactor reports it, also on the
 *     edge-triggered pollers. braid never reads, writes or probes the
 *     descriptor: it makes no syscall on it, only on the poller;
 *   - borrowed: braid_watch_stop() removes the descriptor from the poller
 *     but never closes it; the owner closes it, after the stop;
 *   - the owner may close the descriptor before the stop, and its number
 *     may then be reused, even by braid for a socket: the stop compares the
 *     file's identity (fstat) with the one it had at start and leaves the
 *     poller's registration alone when it differs, so it never removes
 *     another file's registration. (Closed and reused while still watched,
 *     with no stop in between, the watch silently watches nothing: the
 *     kernel dropped it at close. Stop watches before closing.)
 *   - callbacks run on the loop thread, from inside the reactor's wait.
 */
#ifndef BRAID_WATCH_H
#define BRAID_WATCH_H

#include <stdbool.h>

#include "braid/reactor.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Interest and readiness bits. */
#define BRAID_WATCH_READ 0x1u
#define BRAID_WATCH_WRITE 0x2u
#define BRAID_WATCH_ERROR 0x4u /* error or hang-up; reported always */
#define BRAID_WATCH_HUP 0x8u   /* the peer hung up; reported always */

/* A watch; braid allocates and frees it. */
typedef struct braid_watch braid_watch_t;

/* `events` are the BRAID_WATCH_* bits that are ready, `arg` the one given
 * to braid_watch_start. The callback may call braid_watch_set or
 * braid_watch_stop on this watch or any other. */
typedef void (*braid_watch_cb)(braid_watch_t *w, unsigned events, void *arg);

/* Whether r's poller can watch descriptors (the POSIX readiness pollers);
 * false for NULL. */
bool braid_watch_supported(const braid_reactor_t *r);

/* Start watching `fd` for `events` (BRAID_WATCH_READ / _WRITE; 0 watches
 * for errors and hang-ups only). *out receives the watch. BRAID_EINVAL for
 * NULL r, cb or out or a negative fd, BRAID_ENOTSUP where
 * braid_watch_supported() is false, BRAID_ENOMEM, or the poller's error
 * (epoll refuses regular files: BRAID_EPERM). On error *out is NULL.
 * The watch is stopped by braid_watch_stop, or by braid_reactor_destroy
 * if it is still running then (the callback is not called after that). */
int braid_watch_start(braid_reactor_t *r, int fd, unsigned events,
                      braid_watch_cb cb, void *arg, braid_watch_t **out);

/* Change the interest set. Costs no syscall on poll, one epoll_ctl or one
 * queued kevent change otherwise, and nothing when it did not change.
 * BRAID_EINVAL for NULL. */
int braid_watch_set(braid_watch_t *w, unsigned events);

/* Stop watching and release the watch: the callback is not called after
 * this returns (not even for an event already in the batch being
 * processed), `w` must not be used again, and the descriptor may be closed
 * at once. braid frees its memory itself, once the poller is certain not
 * to name it any more. NULL is a no-op. */
void braid_watch_stop(braid_watch_t *w);

#ifdef __cplusplus
}
#endif
#endif
