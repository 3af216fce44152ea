/* Embedding: braid driven by a host loop (descriptor mode), braid on a
 * thread of its own handing results to a host (thread-hosted mode), and
 * the per-iteration hooks that let an adapter host another loop inside
 * braid. See include/braid/embed.h. Written once for every OS: the only
 * platform question, whether a pollable descriptor exists, is the
 * BRAID__CAP_EMBED_FD capability and the backend_fd slot. */
#include <string.h>

#include "core/internal.h"

struct braid__embed {
  /* Per-iteration hooks of an adapter hosting another loop. */
  braid_embed_before_cb before;
  braid_embed_after_cb after;
  void *iter_arg;

  /* The host queue: calls for the host thread, swapped out whole by
   * braid_embed_host_drain() like the reactor's thread queue. */
  braid__mutex lock;
  braid__call *hq;
  size_t hq_len, hq_cap;
  int hq_wake_pending;
  braid_embed_wake_cb wake;
  void *wake_arg;

  /* Thread-hosted mode. */
  braid__thread thread;
  int thread_on;
};

/* The embed record, made on first use. Only the loop thread (or, before
 * thread mode starts, the host) calls this; thread-safe users find it
 * already made. */
static struct braid__embed *braid__embed_get(braid_reactor_t *r) {
  if (r->embed != NULL)
    return r->embed;
  struct braid__embed *em = braid_calloc(1, sizeof *em);
  if (em == NULL)
    return NULL;
  if (braid__mutex_init(&em->lock) != 0) {
    braid_free(em);
    return NULL;
  }
  r->embed = em;
  return em;
}

void braid__embed_teardown(braid_reactor_t *r) {
  struct braid__embed *em = r->embed;
  if (em == NULL)
    return;
  braid__mutex_destroy(&em->lock);
  braid_free(em->hq);
  braid_free(em);
  r->embed = NULL;
}

/* ------------------------------------------------------------------------
 * Descriptor mode
 * ------------------------------------------------------------------------ */

void braid__embed_poke(braid_reactor_t *r) {
  /* The poller's own wakeup: the eventfd or pipe registered in the epoll
   * or kqueue set, or kqueue's EVFILT_USER, each of which makes the
   * backend descriptor readable until braid's next wait drains it. */
  r->io->wakeup(r);
}

/* Descriptor mode begins: from now on host code may schedule work that
 * must wake the host. The embed record is made here, on the host's thread,
 * so that braid_embed_host_call() from any thread finds it. */
static void braid__embed_enter(braid_reactor_t *r) {
  if (r->embedded)
    return;
  r->embedded = 1;
  (void)braid__embed_get(r); /* without it, host_call says BRAID_ENOMEM */
}

int braid_embed_fd(braid_reactor_t *r) {
  if (r == NULL)
    return -1;
  braid__embed_enter(r);
  if (!(r->io->caps & BRAID__CAP_EMBED_FD))
    return -1;
  return r->io->backend_fd(r);
}

int64_t braid_embed_timeout(braid_reactor_t *r) {
  if (r == NULL)
    return -1;
  braid__embed_enter(r);
  if (r->soon_len > 0 || r->stopping)
    return 0;
  if (r->io->pending != NULL && r->io->pending(r))
    return 0;
  /* A call from another thread has also woken the descriptor; saying 0
   * spares the host one round trip through its poller. */
  braid__mutex_lock(&r->tlock);
  int queued = r->tq_len > 0;
  braid__mutex_unlock(&r->tlock);
  if (queued)
    return 0;
  uint64_t deadline;
  if ((r->flags & BRAID_REACTOR_MANUAL_CLOCK) ||
      !braid__timers_next(r, &deadline))
    return -1;
  /* Uncached: the host may have spent any time since braid last ran. */
  uint64_t now = braid__hrtime();
  if (deadline <= now)
    return 0;
  uint64_t left = deadline - now;
  return left > (uint64_t)INT64_MAX ? INT64_MAX : (int64_t)left;
}

int braid_embed_run(braid_reactor_t *r) {
  if (r == NULL)
    return BRAID_EINVAL;
  braid__embed_enter(r);
  if (r->running || r->depth > 0)
    return BRAID_EBUSY;
  return braid_reactor_run_once(r, false);
}

/* ------------------------------------------------------------------------
 * Iteration hooks (braid/embed.h)
 * ------------------------------------------------------------------------ */

int braid_embed_set_iteration_hooks(braid_reactor_t *r,
                                    braid_embed_before_cb before,
                                    braid_embed_after_cb after, void *arg) {
  if (r == NULL)
    return BRAID_EINVAL;
  struct braid__embed *em = braid__embed_get(r);
  if (em == NULL)
    return BRAID_ENOMEM;
  if (before != NULL && em->before != NULL)
    return BRAID_EBUSY;
  em->before = before;
  em->after = before != NULL ? after : NULL;
  em->iter_arg = before != NULL ? arg : NULL;
  return 0;
}

int64_t braid__embed_before_wait(braid_reactor_t *r, int64_t timeout) {
  struct braid__embed *em = r->embed;
  if (em->before == NULL)
    return timeout;
  r->depth++;
  int64_t t = em->before(r, timeout, em->iter_arg);
  r->depth--;
  /* Only shorter: braid's own timers and ready work still count. */
  if (timeout < 0 || (t >= 0 && t < timeout))
    return t;
  return timeout;
}

void braid__embed_after_wait(braid_reactor_t *r) {
  struct braid__embed *em = r->embed;
  if (em->after == NULL)
    return;
  r->depth++;
  em->after(r, em->iter_arg);
  r->depth--;
}

/* ------------------------------------------------------------------------
 * The host queue and thread-hosted mode
 * ------------------------------------------------------------------------ */

int braid_embed_host_call(braid_reactor_t *r, braid_callback_cb cb, void *arg) {
  if (r == NULL || cb == NULL || r->embed == NULL)
    return BRAID_EINVAL;
  struct braid__embed *em = r->embed;
  int wake = 0;
  braid__mutex_lock(&em->lock);
  if (em->hq_len == em->hq_cap) {
    size_t cap = em->hq_cap ? em->hq_cap * 2 : 64;
    braid__call *q = braid_realloc(em->hq, cap * sizeof *q);
    if (q == NULL) {
      braid__mutex_unlock(&em->lock);
      return BRAID_ENOMEM;
    }
    em->hq = q;
    em->hq_cap = cap;
  }
  em->hq[em->hq_len].cb = cb;
  em->hq[em->hq_len].arg = arg;
  em->hq_len++;
  /* Only the first call after a drain wakes the host. */
  if (!em->hq_wake_pending) {
    em->hq_wake_pending = 1;
    wake = 1;
  }
  braid_embed_wake_cb wcb = em->wake;
  void *warg = em->wake_arg;
  braid__mutex_unlock(&em->lock);
  /* Outside the lock: the host's wake may take locks of its own. */
  if (wake && wcb != NULL)
    wcb(warg);
  return 0;
}

size_t braid_embed_host_drain(braid_reactor_t *r) {
  if (r == NULL || r->embed == NULL)
    return 0;
  struct braid__embed *em = r->embed;
  size_t ran = 0;
  braid__mutex_lock(&em->lock);
  braid__call *q = em->hq;
  size_t n = em->hq_len;
  em->hq = NULL;
  em->hq_len = em->hq_cap = 0;
  em->hq_wake_pending = 0;
  braid__mutex_unlock(&em->lock);
  /* Taken whole: calls these queue land in a fresh array, run by the
   * next drain after their own wake. */
  for (size_t i = 0; i < n; i++) {
    q[i].cb(r, q[i].arg);
    ran++;
  }
  braid_free(q);
  return ran;
}

static void *braid__embed_thread_main(void *arg) {
  braid_reactor_t *r = arg;
  braid_reactor_run(r);
  return NULL;
}

int braid_embed_thread_start(braid_reactor_t *r, braid_embed_wake_cb wake,
                             void *arg) {
  if (r == NULL || wake == NULL)
    return BRAID_EINVAL;
  if (r->running || (r->embed != NULL && r->embed->thread_on))
    return BRAID_EBUSY;
  struct braid__embed *em = braid__embed_get(r);
  if (em == NULL)
    return BRAID_ENOMEM;
  braid__mutex_lock(&em->lock);
  em->wake = wake;
  em->wake_arg = arg;
  braid__mutex_unlock(&em->lock);
  /* The hold keeps run() going with nothing else pending, until stop. */
  braid_reactor_hold(r);
  int rc = braid__thread_create(&em->thread, braid__embed_thread_main, r);
  if (rc != 0) {
    braid_reactor_release(r);
    return rc < 0 ? rc : BRAID_EIO;
  }
  em->thread_on = 1;
  return 0;
}

static void braid__embed_thread_quit(braid_reactor_t *r, void *arg) {
  BRAID__UNUSED(arg);
  braid_reactor_release(r);
  braid_reactor_stop(r);
}

int braid_embed_thread_stop(braid_reactor_t *r) {
  if (r == NULL || r->embed == NULL || !r->embed->thread_on)
    return BRAID_EINVAL;
  struct braid__embed *em = r->embed;
  int rc = braid_call_from_thread(r, braid__embed_thread_quit, NULL);
  if (rc < 0)
    return rc;
  braid__thread_join(em->thread);
  em->thread_on = 0;
  return 0;
}
