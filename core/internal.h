/* braid core internals: the reactor structure and the I/O layer's ops table.
 * Nothing here is public API. See docs/ARCHITECTURE.md. */
#ifndef BRAID_CORE_INTERNAL_H
#define BRAID_CORE_INTERNAL_H

#include <stdarg.h>
#include <stdint.h>

#include "braid/braid.h"
#include "braid/testing.h"
#include "core/io.h"
#include "core/sync.h"

#define BRAID__UNUSED(x) ((void)(x))
#define braid__container_of(ptr, type, member)                                \
  ((type *)((char *)(ptr)-offsetof(type, member)))

/* One queued callback (call-soon and call-from-thread). */
typedef struct braid__call {
  braid_callback_cb cb;
  void *arg;
} braid__call;

/* A call from another thread that never allocates (libuv's uv_async_t):
 * the caller embeds it, and queueing it again before it ran is a no-op.
 * For braid's own threads, which must always reach the loop: a failed
 * braid_call_from_thread() would strand a finished job. */
typedef struct braid__async {
  braid_callback_cb cb;
  void *arg;
  struct braid__async *next; /* guarded by the reactor's tlock */
  int queued;                /* likewise */
} braid__async;

/* One slot of the timer heap. The deadline lives here, next to the
 * pointer, so that sifting compares without touching the timers. */
typedef struct braid__heap_slot {
  uint64_t deadline;
  braid_timer_t *timer;
} braid__heap_slot;

typedef struct braid__hook {
  int id;
  braid_hook_phase phase;
  braid_callback_cb cb;
  void *arg;
} braid__hook;

/* Something the reactor must close if it is destroyed while still open
 * (connections, listeners): an intrusive, circular list. It is the public
 * teardown hook (braid/reactor.h), which modules outside core use too. */
typedef braid_teardown_t braid__handle;

void braid__handle_add(braid_reactor_t *r, braid__handle *h,
                       void (*abort)(braid__handle *h));
void braid__handle_remove(braid__handle *h);

struct braid_reactor {
  /* The I/O layer (one ops table, state owned by it). */
  const braid__io_ops *io;
  void *io_state;

  uint64_t now;
  unsigned flags;
  int running;   /* inside run/run_once */
  int stopping;  /* stop() asked */
  int depth;     /* callback nesting, to refuse destroy from a callback */

  /* Timers: a 4-ary min-heap ordered by (deadline, seq). */
  braid__heap_slot *heap;
  uint32_t heap_len, heap_cap;
  uint32_t timer_seq;
  int in_timer_pass;

  /* Call-soon: a growable ring of calls. */
  braid__call *soon;
  size_t soon_head, soon_len, soon_cap;

  /* Call-from-thread: a locked array swapped out whole by the loop. */
  braid__mutex tlock;
  braid__call *tq;
  size_t tq_len, tq_cap;
  braid__call *tq_spare;
  size_t tq_spare_cap;
  int tq_wake_pending;

  /* Signal watchers on this reactor. */
  braid_signal_t *signals;

  /* core/process.c: children this reactor started and has not reaped
   * (NULL while there are none). */
  struct braid__procs *procs;

  braid__hook *hooks;
  size_t nhooks, hooks_cap;
  int next_hook_id;

  braid__handle handles; /* sentinel */

  size_t holds;
  size_t active_io; /* I/O operations and handles that keep the loop alive */

  /* core/io.c: ops deferred to a later wait() (`io_batch` is what the
   * running wait() works through, `io_later` what waits for the next),
   * ops to complete as cancelled, sockets whose close callback is due. All
   * FIFO, linked through braid__op.next_ / braid__sock.next_closing_. */
  braid__op *io_later, *io_later_tail, *io_batch;
  braid__op *io_cancelled, *io_cancelled_tail;
  braid__sock *io_closing, *io_closing_tail;
  /* core/io_signal.c: this reactor's slot in the signal registry (valid
   * while sig_refs, its watched signals, is not 0). */
  int sig_slot;
  unsigned sig_refs;

  braid_log_cb log_cb;
  void *log_arg;

  /* --- deferreds, failures, thread pool (core/deferred*.c, threadpool.c) ---
   * Their state, made on first use and freed by
   * braid__deferred_reactor_teardown(). */
  struct braid__defer_state *defer;
  /* Threads blocked in braid_blocking_call_from_thread(), guarded by tlock,
   * so that destroy can wake them; closed once destroy has begun. */
  struct braid__blocking_call *blocking;
  int blocking_closed;

  /* Live objects, counted from allocation to free, for
   * braid_reactor_stats() (core/stats.c): soak tests check they return to
   * zero, which catches a leak long before the process runs out of memory. */
  size_t live_streams, live_listeners, live_udp;

  /* Queued braid__async calls (guarded by tlock). */
  braid__async *async;

  /* --- embedding (core/embed.c) ---
   * Set once a braid_embed_* function was called: a host loop, not
   * braid_reactor_run(), decides when braid runs, so scheduling work from
   * host code must wake the host's wait (braid__embed_note). */
  int embedded;
  /* Thread-hosted mode and the GLib host's per-iteration hooks; NULL until
   * used, freed by braid__embed_teardown(). */
  struct braid__embed *embed;

  /* Endpoint schemes added by modules (core/endpoint.c); NULL until the
   * first, freed by a teardown hook. */
  struct braid__ep_schemes *ep_schemes;
};

/* core/endpoint.c: whether `desc` names a scheme of another module (TLS,
 * or one added to r with braid_endpoint_add_scheme), which that module
 * parses, rather than one of core's types. */
bool braid__endpoint_is_scheme(braid_reactor_t *r, const char *desc);

/* core/timer.c */
void braid__timers_run(braid_reactor_t *r, uint64_t now);
int braid__timers_next(const braid_reactor_t *r, uint64_t *deadline);
void braid__timers_clear(braid_reactor_t *r);

/* core/deferred.c: called by braid_reactor_destroy() before timers are
 * cleared: wakes threads blocked on the reactor, joins the thread pool,
 * cancels deferreds that have not fired, reports unhandled failures and
 * frees every deferred. */
void braid__deferred_reactor_teardown(braid_reactor_t *r);

/* core/reactor.c: called by the I/O layer when its wakeup fired, on the
 * loop thread: drains thread calls and checks signal deliveries. */
void braid__reactor_wakeup_drain(braid_reactor_t *r);
/* Thread-safe: queue a->cb(r, a->arg) for the loop (once, however often it
 * is sent before it runs) and wake it. Never fails. */
void braid__async_send(braid_reactor_t *r, braid__async *a);
/* Take `a` off the queue if it is there; for its owner's teardown. */
void braid__async_cancel(braid_reactor_t *r, braid__async *a);

/* core/embed.c: wake the host loop of an embedded reactor (its wait on the
 * backend descriptor) so that it asks braid for a new timeout. */
void braid__embed_poke(braid_reactor_t *r);
/* core/embed.c: per-iteration hooks of an adapter hosting another loop
 * (the GLib host), called from braid__iterate() around the I/O wait. */
int64_t braid__embed_before_wait(braid_reactor_t *r, int64_t timeout);
void braid__embed_after_wait(braid_reactor_t *r);
/* core/embed.c: called by braid_reactor_destroy(). */
void braid__embed_teardown(braid_reactor_t *r);

uint64_t braid__hrtime(void);

/* Work was scheduled (a timer that became the earliest, a call-soon). An
 * embedded reactor outside its own dispatch is not running, so the host
 * may be blocked with a timeout computed before this work existed: wake
 * it (the libuv #1651 bug). Inside braid's dispatch the loop recomputes
 * its timeout itself. For other reactors this is one predictable branch. */
static inline void braid__embed_note(braid_reactor_t *r) {
  if (r->embedded && !r->running)
    braid__embed_poke(r);
}

/* A timer is being scheduled. Outside braid's dispatch, an embedded
 * reactor's cached "now" dates from braid's last run, which may be long
 * ago (the host ran its own callbacks meanwhile): refresh it, so that a
 * delay counts from the moment the host asked, not from the past. */
static inline void braid__embed_clock(braid_reactor_t *r) {
  if (r->embedded && !r->running && !(r->flags & BRAID_REACTOR_MANUAL_CLOCK))
    r->now = braid__hrtime();
}

/* platform: monotonic clock. */
uint64_t braid__hrtime(void);

#endif
