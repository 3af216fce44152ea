/* braid: running braid inside another event loop (GLib, Qt, a game loop,
 * a GUI toolkit) and running other loops' work inside braid.
 *
 * Two modes.
 *
 * 1. Descriptor mode (epoll, kqueue, io_uring). The host loop owns the
 *    thread and the blocking wait. Each host iteration:
 *
 *        int fd = braid_embed_fd(r);             // once; stays the same
 *        int64_t t = braid_embed_timeout(r);     // ns; 0 ready; -1 no timer
 *        host_wait(fd readable, t rounded up);   // poll, GLib, select ...
 *        braid_embed_run(r);                     // never blocks
 *
 *    braid's callbacks run inside braid_embed_run(), on the host's thread.
 *    Work scheduled from host code between runs (a timer started or moved
 *    earlier, a call-soon, a call from another thread) makes the
 *    descriptor readable, so a host already blocked with a timeout it
 *    computed before that work existed wakes and asks again: a timer added
 *    from a host callback fires on time even where the host computed its
 *    timeout before running that callback (libuv #1651).
 *
 *    Calling any braid_embed_* function of this mode puts the reactor in
 *    embedded mode for the rest of its life; braid_reactor_run() must then
 *    not be used on it.
 *
 * 2. Thread-hosted mode (any poller, and hosts that cannot wait on a
 *    descriptor: IOCP message loops, a braid built with the poll poller,
 *    where braid_embed_fd() returns -1). braid runs braid_reactor_run() on
 *    a thread of its own; see braid_embed_thread_start() for the contract.
 */
#ifndef BRAID_EMBED_H
#define BRAID_EMBED_H

#include <stddef.h>
#include <stdint.h>

#include "braid/reactor.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------------
 * Descriptor mode
 * ------------------------------------------------------------------------ */

/* The poller's descriptor, which becomes readable when braid has work
 * (I/O completions, a wakeup): the epoll, kqueue or io_uring descriptor. Poll
 * it for readability only, never read it, close it or add it to another epoll
 * set with EPOLLET. -1 when the poller has no such descriptor (poll(2), IOCP):
 * use the thread-hosted mode. -1 also for a NULL reactor. */
int braid_embed_fd(braid_reactor_t *r);

/* How long the host may wait before calling braid_embed_run(), in
 * nanoseconds: 0 when braid has work ready now (call-soons, completions or
 * closes queued in the I/O layer, registrations not yet handed to the
 * kernel: then do not block on the descriptor), -1 when braid has no timer
 * and only the descriptor can wake it, else the time to the earliest
 * timer. Hosts that count in milliseconds must round up (a rounded-down
 * wait wakes just before the timer is due and spins). -1 for NULL. */
int64_t braid_embed_timeout(braid_reactor_t *r);

/* Run what is ready without blocking: due timers, call-soons, then one
 * non-blocking wait for I/O whose callbacks run here. Returns 1 if braid
 * still has work that can produce callbacks, 0 if nothing is left, or a
 * negative BRAID_E* code. Not re-entrant: called from inside one of braid's
 * own callbacks (for instance a braid callback that runs a nested host
 * iteration, g_main_context_iteration(), whose braid source dispatches
 * again) it returns BRAID_EBUSY and does nothing; braid runs again at the
 * outer iteration. braid_reactor_stop() inside it runs the shutdown hooks
 * before it returns. */
int braid_embed_run(braid_reactor_t *r);

/* ------------------------------------------------------------------------
 * Thread-hosted mode
 * ------------------------------------------------------------------------ */

/* Called by braid when the host queue goes from empty to non-empty. It
 * runs on whichever thread queued the call (usually braid's thread), so it
 * must be thread-safe and must not block or call back into braid: post a
 * message (PostMessage, PostQueuedCompletionStatus, SetEvent,
 * g_main_context_wakeup, a write to a pipe) that makes the host thread
 * call braid_embed_host_drain(). */
typedef void (*braid_embed_wake_cb)(void *arg);

/* Start a thread running braid_reactor_run(r). The reactor is held alive
 * (braid_reactor_hold) until braid_embed_thread_stop().
 *
 * Threading contract, from the moment this returns:
 *   - r belongs to braid's thread. The host thread may call only the
 *     thread-safe functions: braid_call_from_thread() (to run anything on
 *     braid's thread: start transports, timers, ...),
 *     braid_embed_host_call(), braid_embed_host_drain(),
 *     braid_embed_thread_stop().
 *   - braid's callbacks hand results to the host with
 *     braid_embed_host_call(); those calls run on the host thread, inside
 *     braid_embed_host_drain(), in the order they were queued, and may use
 *     r only through the same thread-safe functions.
 *   - memory passed between the threads is owned by whoever the callback
 *     arguments say; both queues order everything a thread did before
 *     queueing before everything the callback does (a mutex handoff).
 * Returns 0, BRAID_EBUSY if the reactor is running or already hosted,
 * BRAID_EINVAL for NULL r or wake, BRAID_ENOMEM, or a thread error. */
int braid_embed_thread_start(braid_reactor_t *r, braid_embed_wake_cb wake,
                             void *arg);

/* Thread-safe: queue cb(r, arg) to run on the host thread, in
 * braid_embed_host_drain(); the first call after a drain calls the wake
 * callback. Also usable in descriptor mode, once a braid_embed_* call made
 * the reactor embedded (worker threads handing results to a host that
 * drains after each braid_embed_run()); no wake callback is called there.
 * BRAID_EINVAL for NULL arguments or a reactor in neither mode,
 * BRAID_ENOMEM. */
int braid_embed_host_call(braid_reactor_t *r, braid_callback_cb cb, void *arg);

/* Host thread: run the calls queued by braid_embed_host_call(). Calls they
 * queue wait for the next drain (and wake the host again). Returns how
 * many ran. */
size_t braid_embed_host_drain(braid_reactor_t *r);

/* Host thread: stop braid's thread (braid_reactor_stop() on it, after the
 * calls queued before this one have run) and join it. Afterwards r is the
 * host thread's again: it may be destroyed, or run. Calls braid queued for
 * the host and not drained yet stay queued: drain them, or destroy drops
 * them. BRAID_EINVAL if no thread was started. */
int braid_embed_thread_stop(braid_reactor_t *r);

/* ------------------------------------------------------------------------
 * Hosting another loop inside braid (iteration hooks)
 *
 * The reverse direction: braid_reactor_run() owns the thread and another
 * loop's sources must run inside it (adapters/glib hosts a GMainContext
 * this way, with braid/watch.h for the other loop's descriptors). Every
 * iteration of the reactor (braid_reactor_run, _run_once, braid_embed_run)
 * calls, on the loop thread:
 *   before(r, timeout, arg)  right before the I/O wait, with the timeout
 *                            braid computed (ns; -1 forever, 0 no wait).
 *                            It returns the timeout to wait with, which
 *                            can only shorten braid's: a longer one (or
 *                            -1 when braid's is finite) is ignored, so
 *                            braid's timers and ready work are never late;
 *   after(r, arg)            once the wait's callbacks have run.
 * Both run as braid callbacks: braid_reactor_destroy and a nested run
 * from inside them return BRAID_EBUSY. One set of hooks per reactor.
 * ------------------------------------------------------------------------ */

typedef int64_t (*braid_embed_before_cb)(braid_reactor_t *r, int64_t timeout,
                                         void *arg);
typedef void (*braid_embed_after_cb)(braid_reactor_t *r, void *arg);

/* Install the hooks (after may be NULL); before == NULL removes them
 * (then after and arg are ignored). BRAID_EINVAL for NULL r, BRAID_EBUSY
 * if hooks are installed already (remove them first), BRAID_ENOMEM. */
int braid_embed_set_iteration_hooks(braid_reactor_t *r,
                                    braid_embed_before_cb before,
                                    braid_embed_after_cb after, void *arg);

#ifdef __cplusplus
}
#endif
#endif
