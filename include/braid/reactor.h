/* braid: the reactor.
 *
 * A reactor is one event loop: it runs callbacks on one thread (the thread
 * that calls braid_reactor_run), fires timers, delivers signals and thread
 * calls, and drives the I/O layer. A process may hold any number of
 * reactors, one per thread; no state is shared between them except the
 * process-wide signal dispositions that the OS itself keeps.
 *
 * Unless a function says it is thread-safe, call it only on the reactor's
 * thread (or before the reactor runs).
 *
 * Time is a uint64_t count of nanoseconds on a monotonic clock.
 */
#ifndef BRAID_REACTOR_H
#define BRAID_REACTOR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "braid/error.h"
#include "braid/log.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct braid_reactor braid_reactor_t;

#define BRAID_NSEC(n) ((uint64_t)(n))
#define BRAID_USEC(n) ((uint64_t)(n) * 1000u)
#define BRAID_MSEC(n) ((uint64_t)(n) * 1000000u)
#define BRAID_SEC(n) ((uint64_t)(n) * 1000000000u)

/* A plain callback: call soon, call from thread, shutdown hooks. */
typedef void (*braid_callback_cb)(braid_reactor_t *r, void *arg);

/* ------------------------------------------------------------------------
 * Creating and running
 * ------------------------------------------------------------------------ */

typedef enum braid_reactor_flags {
  /* Timers follow a clock that only braid_clock_advance() moves (see
   * braid/testing.h); I/O still works. For deterministic tests. */
  BRAID_REACTOR_MANUAL_CLOCK = 1u << 0
} braid_reactor_flags;

/* Options for braid_reactor_create(). A zero-filled struct (or NULL) means
 * the defaults. */
typedef struct braid_reactor_options {
  /* Poller name: "epoll", "poll", ... NULL means the environment variable
   * BRAID_POLLER if set, else the build's default. An unknown or unbuilt
   * name fails with BRAID_ENOTSUP. */
  const char *poller;
  unsigned flags;          /* braid_reactor_flags */
  braid_log_cb log_cb;     /* NULL: braid_log_default */
  void *log_arg;
} braid_reactor_options;

/* Create a reactor. On success *out is set and 0 returned; otherwise a
 * BRAID_E* code and *out is left NULL. */
int braid_reactor_create(braid_reactor_t **out,
                         const braid_reactor_options *opts);

/* Destroy a reactor that is not running, releasing everything that still
 * lives on it, in this order: teardown hooks run (see "Teardown hooks"
 * below); connections still open are aborted and listeners closed, and
 * the I/O layer runs until those closes complete, so the protocol of
 * every connection still open gets connection_lost (BRAID_ECONNABORTED)
 * before this returns; signal watchers are stopped; the
 * thread pool's workers finish the job in hand and are joined; deferreds
 * that have not fired are cancelled (their errbacks run, with
 * BRAID_ECANCELED, so they can free what they own) and then freed; pending
 * timers are dropped (their callbacks never run) and queued call-soon and
 * thread calls discarded. Caller-owned handles (timers, signal watchers)
 * may be freed by the caller afterwards. Calling it from inside a callback
 * of the same reactor returns BRAID_EBUSY. NULL: BRAID_EINVAL. */
int braid_reactor_destroy(braid_reactor_t *r);

/* Run until braid_reactor_stop() is called or nothing is left that could
 * produce a callback (no pending timer, call-soon, I/O operation, active
 * signal watcher or hold). Returns 0, or BRAID_EBUSY if already running
 * (re-entrant run from a callback is refused), or a poller error. */
int braid_reactor_run(braid_reactor_t *r);

/* Run one loop iteration: due timers, queued call-soons, then one wait for
 * I/O that blocks (if `block` and nothing is ready) until the next timer or
 * event. Returns 1 if work is still pending afterwards, 0 if the reactor has
 * nothing left, or a negative BRAID_E* code. */
int braid_reactor_run_once(braid_reactor_t *r, bool block);

/* Ask a running reactor to stop: the current iteration finishes, the
 * before-shutdown hooks run, ready call-soons queued by them run, then the
 * after-shutdown hooks, and braid_reactor_run() returns. Returns
 * BRAID_ENOTRUNNING if the reactor is not running (or already stopping).
 * Not thread-safe: from another thread, use braid_call_from_thread() with a
 * callback that calls stop. */
int braid_reactor_stop(braid_reactor_t *r);

/* Whether braid_reactor_run() / run_once is executing. */
bool braid_reactor_running(const braid_reactor_t *r);

/* Keep the reactor alive with nothing else pending (e.g. while other
 * threads will call braid_call_from_thread). Counted; each hold needs one
 * release. release with no hold returns BRAID_EINVAL. */
void braid_reactor_hold(braid_reactor_t *r);
int braid_reactor_release(braid_reactor_t *r);

/* The name of the poller in use: "epoll", "poll", ... */
const char *braid_reactor_poller(const braid_reactor_t *r);

/* Replace the log handler (NULL restores braid_log_default). */
void braid_reactor_set_log(braid_reactor_t *r, braid_log_cb cb, void *arg);

/* Log through the reactor's handler, printf-style. */
void braid_reactor_log(braid_reactor_t *r, braid_log_level level,
                       const char *domain, const char *fmt, ...)
#if defined(__MINGW32__) && !defined(__clang__)
    /* braid formats with mingw's C99 printf (__USE_MINGW_ANSI_STDIO), not
     * msvcrt's, so %zu and %lld are checked as on other systems (clang
     * checks printf that way on mingw already). */
    __attribute__((format(gnu_printf, 4, 5)))
#elif defined(__GNUC__) || defined(__clang__)
    __attribute__((format(printf, 4, 5)))
#endif
    ;

/* The reactor's idea of "now": monotonic nanoseconds, cached at the start
 * of each loop iteration (and after each wait). With a manual clock, the
 * value braid_clock_advance() has reached. */
uint64_t braid_reactor_now(const braid_reactor_t *r);

/* Refresh the cached time (no effect with a manual clock). */
void braid_reactor_update_time(braid_reactor_t *r);

/* The OS monotonic clock in nanoseconds, uncached. */
uint64_t braid_hrtime(void);

/* ------------------------------------------------------------------------
 * Call soon and call from thread
 * ------------------------------------------------------------------------ */

/* Run cb(r, arg) on the next loop iteration, in FIFO order with other
 * call-soons. A call-soon queued from inside a call-soon runs on the next
 * iteration, never in the same pass. BRAID_ENOMEM if the queue cannot grow;
 * BRAID_EINVAL for NULL r or cb. */
int braid_call_soon(braid_reactor_t *r, braid_callback_cb cb, void *arg);

/* Thread-safe: queue cb(r, arg) to run on the reactor's thread and wake the
 * reactor. Calls from one thread run in the order they were made. The
 * reactor must outlive the call (destroying it discards calls not yet run).
 * BRAID_ENOMEM if the queue cannot grow; BRAID_EINVAL for NULL r or cb. */
int braid_call_from_thread(braid_reactor_t *r, braid_callback_cb cb,
                           void *arg);

/* ------------------------------------------------------------------------
 * Timers ("call later", Twisted's IDelayedCall)
 *
 * A braid_timer_t is owned by the caller: embed it in your own struct, so
 * that scheduling a timer never allocates. A zero-filled timer is valid
 * (inactive, bound to no reactor). Timers with equal deadlines fire in the
 * order they were scheduled.
 * ------------------------------------------------------------------------ */

typedef struct braid_timer braid_timer_t;
typedef void (*braid_timer_cb)(braid_timer_t *t, void *arg);

struct braid_timer {
  /* All fields are private; read them through the functions below. */
  braid_reactor_t *reactor_;
  braid_timer_cb cb_;
  void *arg_;
  uint32_t state_; /* 0 idle, 1..N pending at heap slot state_-1, or a final state */
  uint32_t seq_;   /* insertion order, for FIFO among equal deadlines */
};

#define BRAID_TIMER_INIT {0, 0, 0, 0, 0}

/* Schedule cb(t, arg) to run `delay` nanoseconds after braid_reactor_now().
 * A timer that fired or was cancelled may be started again.
 * BRAID_EBUSY if it is already pending (use reset), BRAID_EINVAL for NULL
 * arguments, BRAID_ENOMEM if the timer heap cannot grow. */
int braid_timer_start(braid_reactor_t *r, braid_timer_t *t, uint64_t delay,
                      braid_timer_cb cb, void *arg);

/* Cancel a pending timer: its callback will not run. BRAID_EALREADY if it
 * already fired, BRAID_ECANCELED if it was already cancelled, BRAID_EINVAL
 * if it was never started. */
int braid_timer_cancel(braid_timer_t *t);

/* Reschedule a pending timer to fire `delay` ns from now (Twisted's
 * reset()). Same errors as cancel. */
int braid_timer_reset(braid_timer_t *t, uint64_t delay);

/* Move a pending timer's deadline by `delta` ns (negative: earlier;
 * Twisted's delay()). The deadline never goes below 0. Same errors as
 * cancel. */
int braid_timer_delay(braid_timer_t *t, int64_t delta);

/* Whether the timer is pending (Twisted's active()). */
bool braid_timer_active(const braid_timer_t *t);

/* The pending timer's deadline on the reactor clock, or 0 when inactive. */
uint64_t braid_timer_deadline(const braid_timer_t *t);

/* Number of pending timers on the reactor. */
size_t braid_reactor_timer_count(const braid_reactor_t *r);

/* ------------------------------------------------------------------------
 * Signals
 *
 * A signal watcher turns a POSIX signal into an ordinary callback on the
 * reactor's thread. Every reactor with a watcher for a signal sees each
 * delivery; deliveries that arrive faster than the loop turns are
 * coalesced (count > 1). While any watcher for a signal exists in the
 * process, braid owns that signal's disposition; when the last one stops,
 * the previous disposition is restored. SIGINT, SIGTERM, SIGHUP, SIGCHLD,
 * SIGUSR1, SIGUSR2, SIGWINCH, SIGQUIT are accepted; platforms that lack one
 * return BRAID_ENOTSUP.
 * ------------------------------------------------------------------------ */

typedef struct braid_signal braid_signal_t;
typedef void (*braid_signal_cb)(braid_signal_t *s, int signo, unsigned count,
                                void *arg);

struct braid_signal {
  /* All fields are private. */
  braid_reactor_t *reactor_;
  braid_signal_cb cb_;
  void *arg_;
  braid_signal_t *next_;
  int signo_;
  unsigned seen_; /* delivery count last seen */
  int active_;
};

/* Start watching `signo`. BRAID_EBUSY if `s` is already active, BRAID_EINVAL
 * for NULL arguments or a signal not in the list above, BRAID_ENOTSUP where
 * the platform lacks the signal. */
int braid_signal_start(braid_reactor_t *r, braid_signal_t *s, int signo,
                       braid_signal_cb cb, void *arg);

/* Stop watching. BRAID_EINVAL if not active. */
int braid_signal_stop(braid_signal_t *s);

/* ------------------------------------------------------------------------
 * Shutdown hooks (Twisted's before/after "shutdown" system event triggers)
 * ------------------------------------------------------------------------ */

typedef enum braid_hook_phase {
  BRAID_BEFORE_SHUTDOWN = 0, /* the loop still runs: I/O and call-soon work */
  BRAID_AFTER_SHUTDOWN = 1   /* the loop has stopped; last words only */
} braid_hook_phase;

/* Run cb(r, arg) in `phase` when the reactor stops, in the order added.
 * Returns a positive hook id, or BRAID_EINVAL / BRAID_ENOMEM. */
int braid_reactor_add_hook(braid_reactor_t *r, braid_hook_phase phase,
                           braid_callback_cb cb, void *arg);

/* Remove a hook by id. BRAID_EINVAL if no such hook. */
int braid_reactor_remove_hook(braid_reactor_t *r, int id);

/* ------------------------------------------------------------------------
 * Teardown hooks
 *
 * For modules that own things living on a reactor (clients with pools of
 * connections, transports, registries): braid_reactor_destroy() calls each
 * registered hook once, so that the module can abort what it holds and
 * free it, instead of leaking it. The caller owns the braid_teardown_t
 * (embed it in the object it belongs to): registering never allocates and
 * never fails.
 *
 * Order: hooks run first in braid_reactor_destroy(), in the order they were
 * added (braid's own connections and listeners are hooks too, and a hook
 * added by a callback during teardown runs as well), then the I/O layer
 * runs until every close they caused has completed (so connections aborted
 * by a hook deliver connection_lost), then deferreds are cancelled and
 * timers dropped. Inside a hook the reactor still works: timers may be
 * cancelled, transports aborted, memory freed (including the hook's own).
 * ------------------------------------------------------------------------ */

typedef struct braid_teardown braid_teardown_t;
typedef void (*braid_teardown_cb)(braid_teardown_t *td);

struct braid_teardown {
  /* All fields are private. Zero-filled means "not registered". */
  braid_teardown_t *prev_, *next_;
  braid_teardown_cb cb_;
};

/* Register `td`: cb(td) runs once when r is destroyed, unless td is
 * removed first. td must stay valid until it ran or was removed, and must
 * not be registered already. Both NULL-safe (nothing happens). */
void braid_teardown_add(braid_reactor_t *r, braid_teardown_t *td,
                        braid_teardown_cb cb);

/* Unregister `td`. A no-op for one that is not registered (never added,
 * removed, zero-filled, or already run: it is unregistered before its
 * callback runs), so an object's free path may always call it. */
void braid_teardown_remove(braid_teardown_t *td);

/* ------------------------------------------------------------------------
 * Live object counts
 *
 * What the reactor holds right now, for leak checks in long-running tests
 * and for a server's own monitoring: each count goes back to zero once its
 * objects are closed and their callbacks have run.
 * ------------------------------------------------------------------------ */

typedef struct braid_reactor_stats {
  size_t streams;      /* TCP/Unix connections, from connect/accept until
                          connection_lost has run and the memory is freed */
  size_t listeners;    /* listeners not yet freed */
  size_t udp;          /* UDP sockets not yet freed */
  size_t timers;       /* pending timers */
  size_t call_soons;   /* queued call-soons */
  size_t thread_calls; /* queued call-from-thread calls not yet run */
  size_t signals;      /* active signal watchers */
  size_t deferreds;    /* live deferreds (braid/deferred.h) */
  size_t pool_jobs;    /* thread pool jobs whose deferred has not fired */
  size_t holds;        /* braid_reactor_hold() not yet released */
} braid_reactor_stats;

/* Fill *out with the counts above. BRAID_EINVAL for NULL arguments. */
int braid_reactor_stats_get(braid_reactor_t *r, braid_reactor_stats *out);

#ifdef __cplusplus
}
#endif
#endif
