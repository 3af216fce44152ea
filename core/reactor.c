/* The reactor: run loop, call-soon, call-from-thread, signals, hooks. Written
 * once for every OS; all I/O goes through r->io (core/io.h). */
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include "core/config.h"
#include "core/internal.h"

/* ------------------------------------------------------------------------
 * Picking the I/O implementation
 * ------------------------------------------------------------------------ */

typedef struct braid__io_choice {
  const char *name;          /* what BRAID_POLLER / options.poller say */
  const braid__io_ops *ops;  /* who implements it */
} braid__io_choice;

static const braid__io_choice braid__io_choices[] = {
#if BRAID_HAVE_IOCP
    {"iocp", &braid__iocp_io},
#endif
#if BRAID_HAVE_EPOLL
    {"epoll", &braid__posix_io},
#endif
#if BRAID_HAVE_KQUEUE
    {"kqueue", &braid__posix_io},
#endif
#if BRAID_HAVE_POLL
    {"poll", &braid__posix_io},
#endif
#if BRAID_HAVE_URING
    {"uring", &braid__uring_io},
#endif
    {NULL, NULL}};

static int braid__io_pick(braid_reactor_t *r, const char *want) {
  if (want == NULL || *want == '\0')
    want = getenv("BRAID_POLLER");
  if (want == NULL || *want == '\0')
    want = BRAID_DEFAULT_POLLER;
  for (const braid__io_choice *c = braid__io_choices; c->name != NULL; c++) {
    if (strcmp(c->name, want) != 0)
      continue;
    int rc = c->ops->init(r, c->name);
    if (rc == 0) {
      r->io = c->ops;
      return 0;
    }
    /* io_uring may be missing or switched off at run time (an old kernel,
     * /proc/sys/kernel/io_uring_disabled, seccomp): use the first
     * readiness poller instead (epoll on Linux). Not for ENOMEM, which
     * says nothing about io_uring. */
    if (c->ops->caps & BRAID__CAP_COMPLETION && rc != BRAID_ENOMEM &&
        braid__io_choices[0].ops != c->ops) {
      braid_reactor_log(r, BRAID_LOG_WARN, "reactor",
                        "poller \"%s\" is unavailable here (%s); using %s",
                        want, braid_strerror(rc), braid__io_choices[0].name);
      c = braid__io_choices;
      rc = c->ops->init(r, c->name);
      if (rc == 0)
        r->io = c->ops;
    }
    return rc;
  }
  braid_reactor_log(r, BRAID_LOG_ERROR, "reactor",
                    "poller \"%s\" is not built into this braid (have: %s)",
                    want, BRAID_POLLERS_BUILT);
  return BRAID_ENOTSUP;
}

/* ------------------------------------------------------------------------
 * Create / destroy
 * ------------------------------------------------------------------------ */

int braid_reactor_create(braid_reactor_t **out,
                         const braid_reactor_options *opts) {
  static const braid_reactor_options defaults = {0};
  if (out == NULL)
    return BRAID_EINVAL;
  *out = NULL;
  if (opts == NULL)
    opts = &defaults;
  braid_reactor_t *r = braid_calloc(1, sizeof *r);
  if (r == NULL)
    return BRAID_ENOMEM;
  r->flags = opts->flags;
  r->log_cb = opts->log_cb != NULL ? opts->log_cb : braid_log_default;
  r->log_arg = opts->log_cb != NULL ? opts->log_arg : NULL;
  r->next_hook_id = 1;
  r->handles.prev_ = r->handles.next_ = &r->handles;
  if (braid__mutex_init(&r->tlock) != 0) {
    braid_free(r);
    return BRAID_ENOMEM;
  }
  int rc = braid__io_pick(r, opts->poller);
  if (rc < 0) {
    braid__mutex_destroy(&r->tlock);
    braid_free(r);
    return rc;
  }
  r->now = (r->flags & BRAID_REACTOR_MANUAL_CLOCK) ? 0 : braid__hrtime();
  *out = r;
  return 0;
}

int braid_reactor_destroy(braid_reactor_t *r) {
  if (r == NULL)
    return BRAID_EINVAL;
  if (r->running || r->depth > 0)
    return BRAID_EBUSY;
  /* Connections and listeners still open are aborted (their protocols see
   * connection_lost), and the I/O layer is run until every close has
   * completed, so nothing is leaked. */
  while (r->handles.next_ != &r->handles) {
    braid__handle *h = r->handles.next_;
    braid_teardown_cb cb = h->cb_;
    braid__handle_remove(h); /* first: cb may free h */
    r->depth++;
    cb(h);
    r->depth--;
  }
  for (int i = 0; i < 1000 && r->active_io > 0; i++) {
    r->depth++;
    r->io->wait(r, 0);
    r->depth--;
  }
  while (r->signals != NULL)
    braid_signal_stop(r->signals);
  /* Deferreds first: cancelling them runs errbacks that may still stop
   * timers and queue calls, which are dropped just below. */
  braid__deferred_reactor_teardown(r);
  braid__embed_teardown(r);
  braid__timers_clear(r);
  r->io->destroy(r);
  braid_free(r->soon);
  braid_free(r->tq);
  braid_free(r->tq_spare);
  braid_free(r->hooks);
  braid__mutex_destroy(&r->tlock);
  braid_free(r);
  return 0;
}

void braid__handle_add(braid_reactor_t *r, braid__handle *h,
                       void (*abort)(braid__handle *h)) {
  h->cb_ = abort;
  h->next_ = &r->handles;
  h->prev_ = r->handles.prev_;
  r->handles.prev_->next_ = h;
  r->handles.prev_ = h;
}

void braid__handle_remove(braid__handle *h) {
  if (h->next_ == NULL)
    return;
  h->prev_->next_ = h->next_;
  h->next_->prev_ = h->prev_;
  h->next_ = h->prev_ = NULL;
}

void braid_teardown_add(braid_reactor_t *r, braid_teardown_t *td,
                        braid_teardown_cb cb) {
  if (r == NULL || td == NULL || cb == NULL)
    return;
  braid__handle_add(r, td, cb);
}

void braid_teardown_remove(braid_teardown_t *td) {
  if (td != NULL)
    braid__handle_remove(td);
}

/* ------------------------------------------------------------------------
 * Time
 * ------------------------------------------------------------------------ */

uint64_t braid_hrtime(void) { return braid__hrtime(); }

uint64_t braid_reactor_now(const braid_reactor_t *r) {
  return r != NULL ? r->now : 0;
}

void braid_reactor_update_time(braid_reactor_t *r) {
  if (r != NULL && !(r->flags & BRAID_REACTOR_MANUAL_CLOCK))
    r->now = braid__hrtime();
}

/* ------------------------------------------------------------------------
 * Call soon
 * ------------------------------------------------------------------------ */

int braid_call_soon(braid_reactor_t *r, braid_callback_cb cb, void *arg) {
  if (r == NULL || cb == NULL)
    return BRAID_EINVAL;
  if (r->soon_len == r->soon_cap) {
    size_t cap = r->soon_cap ? r->soon_cap * 2 : 64;
    braid__call *q = braid_malloc(cap * sizeof *q);
    if (q == NULL)
      return BRAID_ENOMEM;
    /* Unroll the ring into the new array, oldest first. */
    for (size_t i = 0; i < r->soon_len; i++)
      q[i] = r->soon[(r->soon_head + i) % r->soon_cap];
    braid_free(r->soon);
    r->soon = q;
    r->soon_cap = cap;
    r->soon_head = 0;
  }
  size_t tail = (r->soon_head + r->soon_len) % r->soon_cap;
  r->soon[tail].cb = cb;
  r->soon[tail].arg = arg;
  r->soon_len++;
  if (r->soon_len == 1)
    braid__embed_note(r);
  return 0;
}

/* Run the call-soons queued before this pass began; those they queue wait
 * for the next pass. Returns how many ran. */
static size_t braid__soon_run(braid_reactor_t *r) {
  size_t n = r->soon_len;
  for (size_t i = 0; i < n; i++) {
    braid__call c = r->soon[r->soon_head];
    r->soon_head = (r->soon_head + 1) % r->soon_cap;
    r->soon_len--;
    r->depth++;
    c.cb(r, c.arg);
    r->depth--;
  }
  return n;
}

/* ------------------------------------------------------------------------
 * Call from thread
 * ------------------------------------------------------------------------ */

int braid_call_from_thread(braid_reactor_t *r, braid_callback_cb cb,
                           void *arg) {
  if (r == NULL || cb == NULL)
    return BRAID_EINVAL;
  int wake = 0;
  braid__mutex_lock(&r->tlock);
  if (r->tq_len == r->tq_cap) {
    size_t cap = r->tq_cap ? r->tq_cap * 2 : 64;
    braid__call *q = braid_realloc(r->tq, cap * sizeof *q);
    if (q == NULL) {
      braid__mutex_unlock(&r->tlock);
      return BRAID_ENOMEM;
    }
    r->tq = q;
    r->tq_cap = cap;
  }
  r->tq[r->tq_len].cb = cb;
  r->tq[r->tq_len].arg = arg;
  r->tq_len++;
  /* Only the first call after a drain needs to wake the loop. */
  if (!r->tq_wake_pending) {
    r->tq_wake_pending = 1;
    wake = 1;
  }
  braid__mutex_unlock(&r->tlock);
  if (wake)
    r->io->wakeup(r);
  return 0;
}

/* Deliver pending signal counts to watchers. A callback may stop any
 * watcher, so after each callback the scan starts over; `seen_` is updated
 * before the call, so every watcher is called at most once per change. */
static void braid__signals_dispatch(braid_reactor_t *r) {
  braid_signal_t *s = r->signals;
  while (s != NULL) {
    unsigned count = r->io->signal_count(r, s->signo_);
    if (count == s->seen_) {
      s = s->next_;
      continue;
    }
    unsigned delta = count - s->seen_;
    s->seen_ = count;
    r->depth++;
    s->cb_(s, s->signo_, delta, s->arg_);
    r->depth--;
    s = r->signals;
  }
}

void braid__async_send(braid_reactor_t *r, braid__async *a) {
  int wake = 0;
  braid__mutex_lock(&r->tlock);
  if (!a->queued) {
    a->queued = 1;
    a->next = r->async;
    r->async = a;
    if (!r->tq_wake_pending) {
      r->tq_wake_pending = 1;
      wake = 1;
    }
  }
  braid__mutex_unlock(&r->tlock);
  if (wake)
    r->io->wakeup(r);
}

void braid__async_cancel(braid_reactor_t *r, braid__async *a) {
  braid__mutex_lock(&r->tlock);
  for (braid__async **pp = &r->async; *pp != NULL; pp = &(*pp)->next)
    if (*pp == a) {
      *pp = a->next;
      break;
    }
  a->queued = 0;
  braid__mutex_unlock(&r->tlock);
}

void braid__reactor_wakeup_drain(braid_reactor_t *r) {
  braid__mutex_lock(&r->tlock);
  /* The async calls run after the queued calls, in the order sent (the
   * list is LIFO), so that a call a pool job made before it finished still
   * runs before the job's deferred fires, as when both were queued calls.
   * They stay marked queued, so no sender touches their links, until each
   * is unmarked (under the lock) just before it runs; a send from then on
   * queues it again for the next drain. */
  braid__async *a = r->async, *rev = NULL;
  r->async = NULL;
  while (a != NULL) {
    braid__async *next = a->next;
    a->next = rev;
    rev = a;
    a = next;
  }
  /* Swap the queue with the spare array so that other threads can keep
   * queueing while this thread runs what it took. */
  braid__call *q = r->tq;
  size_t n = r->tq_len, cap = r->tq_cap;
  r->tq = r->tq_spare;
  r->tq_cap = r->tq_spare_cap;
  r->tq_len = 0;
  r->tq_spare = q;
  r->tq_spare_cap = cap;
  r->tq_wake_pending = 0;
  braid__mutex_unlock(&r->tlock);
  for (size_t i = 0; i < n; i++) {
    r->depth++;
    q[i].cb(r, q[i].arg);
    r->depth--;
  }
  while (rev != NULL) {
    braid__mutex_lock(&r->tlock);
    braid__async *next = rev->next;
    rev->queued = 0;
    braid__mutex_unlock(&r->tlock);
    r->depth++;
    rev->cb(r, rev->arg);
    r->depth--;
    rev = next;
  }
  if (r->signals != NULL)
    braid__signals_dispatch(r);
}

/* ------------------------------------------------------------------------
 * Running
 * ------------------------------------------------------------------------ */

static int braid__alive(braid_reactor_t *r) {
  if (r->soon_len > 0 || r->holds > 0 || r->active_io > 0 ||
      r->signals != NULL)
    return 1;
  /* A manual clock never moves by itself: its timers give run() no reason
   * to wait. */
  if (r->heap_len > 0 && !(r->flags & BRAID_REACTOR_MANUAL_CLOCK))
    return 1;
  /* A call queued by another thread that the loop has not run yet. Checked
   * last, under the lock, since it is the rare reason to stay alive. */
  braid__mutex_lock(&r->tlock);
  int queued = r->tq_len > 0 || r->async != NULL;
  braid__mutex_unlock(&r->tlock);
  return queued;
}

static int braid__iterate(braid_reactor_t *r, int block) {
  braid_reactor_update_time(r);
  braid__timers_run(r, r->now);
  braid__soon_run(r);

  int64_t timeout = 0;
  if (block && r->soon_len == 0 && !r->stopping && braid__alive(r)) {
    uint64_t deadline;
    if ((r->flags & BRAID_REACTOR_MANUAL_CLOCK) ||
        !braid__timers_next(r, &deadline))
      timeout = -1;
    else {
      braid_reactor_update_time(r);
      timeout = deadline > r->now ? (int64_t)(deadline - r->now) : 0;
    }
  }
  if (r->embed != NULL)
    timeout = braid__embed_before_wait(r, timeout);
  int rc = r->io->wait(r, timeout);
  braid_reactor_update_time(r);
  if (r->embed != NULL)
    braid__embed_after_wait(r);
  return rc;
}

static void braid__run_hooks(braid_reactor_t *r, braid_hook_phase phase) {
  /* A hook may add or remove hooks, itself included. Ones added now do not
   * run. Walking by index alone would skip the hook after one that removed
   * itself (remove_hook shifts the array down), so after each call the walk
   * resumes at the first hook whose id is above the one just run: the
   * array stays sorted by id because hooks are appended with rising ids
   * and removal preserves order. */
  int last_id = r->next_hook_id;
  size_t i = 0;
  while (i < r->nhooks) {
    braid__hook h = r->hooks[i];
    if (h.id >= last_id)
      break;
    if (h.phase != phase) {
      i++;
      continue;
    }
    r->depth++;
    h.cb(r, h.arg);
    r->depth--;
    for (i = 0; i < r->nhooks && r->hooks[i].id <= h.id; i++)
      ;
  }
}

/* stop() was called: before-hooks, their follow-up call-soons, after-hooks. */
static void braid__shutdown(braid_reactor_t *r) {
  braid__run_hooks(r, BRAID_BEFORE_SHUTDOWN);
  for (int pass = 0; pass < 16 && r->soon_len > 0; pass++)
    braid__iterate(r, 0);
  braid__run_hooks(r, BRAID_AFTER_SHUTDOWN);
  r->stopping = 0;
}

int braid_reactor_run(braid_reactor_t *r) {
  if (r == NULL)
    return BRAID_EINVAL;
  if (r->running)
    return BRAID_EBUSY;
  r->running = 1;
  int rc = 0;
  while (!r->stopping && braid__alive(r)) {
    rc = braid__iterate(r, 1);
    if (rc < 0)
      break;
  }
  if (r->stopping)
    braid__shutdown(r);
  r->running = 0;
  return rc < 0 ? rc : 0;
}

int braid_reactor_run_once(braid_reactor_t *r, bool block) {
  if (r == NULL)
    return BRAID_EINVAL;
  if (r->running)
    return BRAID_EBUSY;
  r->running = 1;
  int rc = braid__iterate(r, block);
  if (r->stopping)
    braid__shutdown(r);
  r->running = 0;
  if (rc < 0)
    return rc;
  return braid__alive(r);
}

int braid_reactor_stop(braid_reactor_t *r) {
  if (r == NULL)
    return BRAID_EINVAL;
  if (!r->running || r->stopping)
    return BRAID_ENOTRUNNING;
  r->stopping = 1;
  return 0;
}

bool braid_reactor_running(const braid_reactor_t *r) {
  return r != NULL && r->running;
}

void braid_reactor_hold(braid_reactor_t *r) {
  if (r != NULL)
    r->holds++;
}

int braid_reactor_release(braid_reactor_t *r) {
  if (r == NULL || r->holds == 0)
    return BRAID_EINVAL;
  r->holds--;
  return 0;
}

const char *braid_reactor_poller(const braid_reactor_t *r) {
  return r != NULL ? r->io->poller_name(r) : NULL;
}

/* ------------------------------------------------------------------------
 * Signals
 * ------------------------------------------------------------------------ */

static int braid__signal_supported(int signo) {
  switch (signo) {
  case SIGINT:
  case SIGTERM:
#ifdef SIGHUP
  case SIGHUP:
#endif
#ifdef SIGCHLD
  case SIGCHLD:
#endif
#ifdef SIGUSR1
  case SIGUSR1:
#endif
#ifdef SIGUSR2
  case SIGUSR2:
#endif
#ifdef SIGWINCH
  case SIGWINCH:
#endif
#ifdef SIGQUIT
  case SIGQUIT:
#endif
    return 1;
  default:
    return 0;
  }
}

int braid_signal_start(braid_reactor_t *r, braid_signal_t *s, int signo,
                       braid_signal_cb cb, void *arg) {
  if (r == NULL || s == NULL || cb == NULL || !braid__signal_supported(signo))
    return BRAID_EINVAL;
  if (s->active_)
    return BRAID_EBUSY;
  if (!(r->io->caps & BRAID__CAP_SIGNALS))
    return BRAID_ENOTSUP;
  int rc = r->io->signal_watch(r, signo, 1);
  if (rc < 0)
    return rc;
  s->reactor_ = r;
  s->cb_ = cb;
  s->arg_ = arg;
  s->signo_ = signo;
  s->seen_ = r->io->signal_count(r, signo);
  s->active_ = 1;
  s->next_ = r->signals;
  r->signals = s;
  return 0;
}

int braid_signal_stop(braid_signal_t *s) {
  if (s == NULL || !s->active_)
    return BRAID_EINVAL;
  braid_reactor_t *r = s->reactor_;
  for (braid_signal_t **p = &r->signals; *p != NULL; p = &(*p)->next_) {
    if (*p == s) {
      *p = s->next_;
      break;
    }
  }
  s->active_ = 0;
  s->next_ = NULL;
  r->io->signal_watch(r, s->signo_, 0);
  return 0;
}

/* ------------------------------------------------------------------------
 * Shutdown hooks
 * ------------------------------------------------------------------------ */

int braid_reactor_add_hook(braid_reactor_t *r, braid_hook_phase phase,
                           braid_callback_cb cb, void *arg) {
  if (r == NULL || cb == NULL ||
      (phase != BRAID_BEFORE_SHUTDOWN && phase != BRAID_AFTER_SHUTDOWN))
    return BRAID_EINVAL;
  if (r->nhooks == r->hooks_cap) {
    size_t cap = r->hooks_cap ? r->hooks_cap * 2 : 8;
    braid__hook *h = braid_realloc(r->hooks, cap * sizeof *h);
    if (h == NULL)
      return BRAID_ENOMEM;
    r->hooks = h;
    r->hooks_cap = cap;
  }
  braid__hook *h = &r->hooks[r->nhooks++];
  h->id = r->next_hook_id++;
  h->phase = phase;
  h->cb = cb;
  h->arg = arg;
  return h->id;
}

int braid_reactor_remove_hook(braid_reactor_t *r, int id) {
  if (r == NULL)
    return BRAID_EINVAL;
  for (size_t i = 0; i < r->nhooks; i++) {
    if (r->hooks[i].id == id) {
      memmove(&r->hooks[i], &r->hooks[i + 1],
              (r->nhooks - i - 1) * sizeof r->hooks[0]);
      r->nhooks--;
      return 0;
    }
  }
  return BRAID_EINVAL;
}

/* ------------------------------------------------------------------------
 * Test doubles: the manual clock
 * ------------------------------------------------------------------------ */

int braid_testing_reactor_create(braid_reactor_t **out) {
  braid_reactor_options o = {0};
  o.flags = BRAID_REACTOR_MANUAL_CLOCK;
  return braid_reactor_create(out, &o);
}

size_t braid_testing_flush(braid_reactor_t *r, unsigned limit) {
  size_t ran = 0;
  if (r == NULL)
    return 0;
  for (unsigned pass = 0; pass < limit && r->soon_len > 0; pass++)
    ran += braid__soon_run(r);
  return ran;
}

int braid_clock_advance(braid_reactor_t *r, uint64_t delta) {
  if (r == NULL || !(r->flags & BRAID_REACTOR_MANUAL_CLOCK))
    return BRAID_EINVAL;
  uint64_t target = r->now + delta < r->now ? UINT64_MAX : r->now + delta;
  /* Step from deadline to deadline, so that callbacks see the time they
   * were due at and timers they schedule are relative to it. */
  uint64_t deadline;
  while (braid__timers_next(r, &deadline) && deadline <= target) {
    if (deadline > r->now)
      r->now = deadline;
    braid__timers_run(r, r->now);
    braid_testing_flush(r, 1000);
  }
  r->now = target;
  braid_testing_flush(r, 1000);
  return 0;
}
