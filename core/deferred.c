/* Deferreds: Twisted's Deferred in C. See braid/deferred.h for the
 * semantics; this file is the engine.
 *
 * The run loop follows Twisted's Deferred._runCallbacks (defer.py): one
 * loop processes a stack of deferreds. When a step hands the result to an
 * inner deferred that has not fired, the outer one pauses and the inner one
 * gets a "continue" link; when the inner chain reaches that link, the
 * result moves to the outer deferred, which is pushed on the same loop's
 * stack and resumed there. Steps added to a deferred that is running (or
 * sits on a stack) are picked up by that loop. So neither a 100,000-step
 * chain nor 100,000 nested deferreds use more than one C stack frame of
 * ours; the stack is intrusive (stack_next), so it allocates nothing.
 *
 * Memory: deferreds, links and failures come from per-reactor slabs; a
 * finished deferred is freed by a call-soon at the end of the turn (see
 * "Lifetime" in the header), which is what lets a caller add steps to a
 * deferred that fired before it was handed over.
 */
#include <string.h>

#include "core/deferred_internal.h"

/* ------------------------------------------------------------------------
 * Per-reactor state
 * ------------------------------------------------------------------------ */

braid__defer_state *braid__defer_state_get(braid_reactor_t *r) {
  if (r->defer != NULL)
    return r->defer;
  braid__defer_state *ds = braid_calloc(1, sizeof *ds);
  if (ds == NULL)
    return NULL;
  braid__slab_init(&ds->deferreds, sizeof(struct braid__deferred));
  braid__slab_init(&ds->links, sizeof(braid__link));
  braid__slab_init(&ds->failures, sizeof(struct braid_failure));
  braid__slab_init(&ds->aux, BRAID__AUX_SIZE);
  braid__failure_init_oom(ds, r);
  r->defer = ds;
  return ds;
}

void *braid__aux_alloc(braid_reactor_t *r, uint32_t kind) {
  braid__defer_state *ds = braid__ds(r);
  braid__aux *a = ds != NULL ? braid__slab_alloc(&ds->aux) : NULL;
  if (a == NULL)
    return NULL;
  memset(a, 0, BRAID__AUX_SIZE);
  a->magic = BRAID__LIVE_AUX;
  a->kind = kind;
  return a;
}

void braid__aux_free(braid_reactor_t *r, void *aux) {
  braid__aux *a = aux;
  a->magic = BRAID__DEAD;
  braid__slab_free(&r->defer->aux, a);
}

static void braid__aux_teardown_one(void *obj, void *arg) {
  braid__aux *a = obj;
  (void)arg;
  if (a->magic == BRAID__LIVE_AUX && braid_timer_active(&a->timer))
    braid_timer_cancel(&a->timer);
}

/* ------------------------------------------------------------------------
 * Results
 * ------------------------------------------------------------------------ */

void braid__result_destroy(struct braid_result *res) {
  if (res->failure != NULL)
    braid_failure_unref(res->failure);
  else if (res->dtor != NULL)
    res->dtor(res->value);
  res->value = NULL;
  res->dtor = NULL;
  res->failure = NULL;
}

static inline braid__deferred *braid__res_owner(const braid_result_t *res) {
  return braid__container_of(res, braid__deferred, result);
}

/* A step that called braid_result_chain and then changed its mind. */
static void braid__drop_pending(braid__deferred *d) {
  braid__deferred *inner = d->pending_inner;
  if (inner != NULL) {
    d->pending_inner = NULL;
    braid__deferred_unref(inner);
  }
}

bool braid_result_ok(const braid_result_t *res) {
  return res != NULL && res->failure == NULL;
}

void *braid_result_value(const braid_result_t *res) {
  return res != NULL && res->failure == NULL ? res->value : NULL;
}

braid_failure_t *braid_result_failure(const braid_result_t *res) {
  return res != NULL ? res->failure : NULL;
}

bool braid_result_trap(const braid_result_t *res, const char *domain,
                       int code) {
  return res != NULL && braid_failure_check(res->failure, domain, code);
}

void braid_result_set(braid_result_t *res, void *value, braid_dtor_cb dtor) {
  if (res == NULL) {
    if (dtor != NULL)
      dtor(value);
    return;
  }
  braid__drop_pending(braid__res_owner(res));
  if (res->failure == NULL && res->dtor == NULL) {
    /* Nothing owned to destroy: the common case of plain values. */
    res->value = value;
    res->dtor = dtor;
    return;
  }
  if (res->failure == NULL && res->value == value && res->dtor == dtor)
    return;
  struct braid_result old = *res;
  res->value = value;
  res->dtor = dtor;
  res->failure = NULL;
  braid__result_destroy(&old);
}

void braid_result_set_failure(braid_result_t *res, braid_failure_t *f) {
  if (res == NULL) {
    braid_failure_unref(f);
    return;
  }
  braid__deferred *d = braid__res_owner(res);
  braid__drop_pending(d);
  f = braid__failure_or_oom(d->r, f);
  if (res->failure == f) {
    braid_failure_unref(f); /* it already held a reference to f */
    return;
  }
  struct braid_result old = *res;
  res->value = NULL;
  res->dtor = NULL;
  res->failure = f;
  braid__result_destroy(&old);
}

void braid_result_fail(braid_result_t *res, int code) {
  if (res == NULL)
    return;
  braid_result_set_failure(
      res, braid_failure_from_code(braid__res_owner(res)->r, code));
}

void *braid_result_take(braid_result_t *res, braid_dtor_cb *dtor) {
  if (res == NULL || res->failure != NULL) {
    if (dtor != NULL)
      *dtor = NULL;
    return NULL;
  }
  void *v = res->value;
  if (dtor != NULL)
    *dtor = res->dtor;
  res->value = NULL;
  res->dtor = NULL;
  return v;
}

int braid_result_chain(braid_result_t *res, braid_deferred_t inner_h) {
  braid__deferred *inner = braid__dget(inner_h);
  if (res == NULL || inner == NULL)
    return BRAID_EINVAL;
  braid__deferred *d = braid__res_owner(res);
  if (inner == d || inner->r != d->r)
    return BRAID_EINVAL;
  inner->refs++; /* before dropping anything: inner may be the old result */
  braid__drop_pending(d);
  braid__result_destroy(res);
  d->pending_inner = inner;
  return 0;
}

braid_reactor_t *braid_result_reactor(const braid_result_t *res) {
  return res != NULL ? braid__res_owner(res)->r : NULL;
}

/* ------------------------------------------------------------------------
 * Freeing
 * ------------------------------------------------------------------------ */

static inline int braid__finished(const braid__deferred *d) {
  return (d->flags & (BRAID__D_CALLED | BRAID__D_RUNNING |
                      BRAID__D_ON_STACK)) == BRAID__D_CALLED &&
         d->head == NULL && d->paused == 0;
}

static void braid__log_unhandled(braid_reactor_t *r, braid__defer_state *ds,
                                 const braid_failure_t *f) {
  char buf[900];
  braid_failure_format(f, buf, sizeof buf);
  /* At reactor destroy, the cancellations destroy itself made (and
   * failures that wrap one) are expected and only worth a debug line. Any
   * other failure is a real loss, whatever its causes: a timeout or a
   * cancel that happened while the reactor ran and that nobody handled is
   * an error, though its chain holds a BRAID_ECANCELED too. */
  braid_log_level level = BRAID_LOG_ERROR;
  if (ds->tearing_down) {
    for (const braid_failure_t *c = f; c != NULL; c = c->cause) {
      if ((c->flags & BRAID__F_TEARDOWN) &&
          braid_failure_check(c, BRAID_FAILURE_DOMAIN, BRAID_ECANCELED)) {
        level = BRAID_LOG_DEBUG;
        break;
      }
    }
  }
  braid_reactor_log(r, level, "deferred", "Unhandled error in deferred: %s",
                    buf);
}

static void braid__deferred_free(braid__defer_state *ds, braid__deferred *d) {
  if (d->result.failure != NULL)
    braid__log_unhandled(d->r, ds, d->result.failure);
  braid__result_destroy(&d->result);
  /* Links are left only when teardown frees a deferred whose chain could
   * not finish (paused for good). */
  while (d->head != NULL) {
    braid__link *l = d->head;
    d->head = l->next;
    braid__slab_free(&ds->links, l);
  }
  if (d->pending_inner != NULL)
    braid__drop_pending(d);
  d->magic = BRAID__DEAD;
  d->gen++; /* every handle to this deferred is stale from here on */
  braid__slab_free(&ds->deferreds, d);
  BRAID__UNPOISON(&d->gen, sizeof d->gen);
}

static void braid__reap_cb(braid_reactor_t *r, void *arg) {
  braid__defer_state *ds = arg;
  (void)r;
  braid__deferred *d;
  /* Re-read the head each time: a destructor run by a free may finish
   * other deferreds, which join the list and go in this same pass. */
  while ((d = ds->reap) != NULL) {
    ds->reap = d->reap_next;
    d->flags &= ~BRAID__D_ON_REAP;
    if (d->refs == 0 && braid__finished(d))
      braid__deferred_free(ds, d);
  }
  ds->reap_scheduled = 0;
}

/* Queue `d` to be freed at the end of the turn if nothing keeps it. */
static inline void braid__maybe_reap(braid__deferred *d) {
  if (d->refs != 0 || !braid__finished(d) || (d->flags & BRAID__D_ON_REAP))
    return;
  braid__defer_state *ds = d->r->defer;
  d->flags |= BRAID__D_ON_REAP;
  d->reap_next = ds->reap;
  ds->reap = d;
  if (!ds->reap_scheduled && !ds->tearing_down) {
    /* If the call-soon queue cannot grow, the list waits for the next
     * successful scheduling (or for teardown). */
    if (braid_call_soon(d->r, braid__reap_cb, ds) == 0)
      ds->reap_scheduled = 1;
  }
}

/* ------------------------------------------------------------------------
 * The run loop
 * ------------------------------------------------------------------------ */

/* The marker for "pass the result to the outer deferred" links; never
 * called. */
static void braid__continue_step(braid_deferred_t d, braid_result_t *res,
                                 void *arg) {
  (void)d;
  (void)res;
  (void)arg;
}

/* The marker for braid_deferred_chain_deferred links (arg: the deferred to
 * fire); never called either: the run loop fires the target itself and
 * pushes it on its own stack, so that a line of a million chained
 * deferreds uses one C frame, as nested ones do. */
static void braid__chain_step(braid_deferred_t d, braid_result_t *res,
                              void *arg) {
  (void)d;
  (void)res;
  (void)arg;
}

static int braid__settle(braid__deferred *d, struct braid_result *res);

static void braid__run(braid__deferred *start) {
  if (start->flags & (BRAID__D_RUNNING | BRAID__D_ON_STACK))
    return; /* the loop that has it will pick up what changed */
  braid__defer_state *ds = start->r->defer;
  braid__deferred *stack = start;
  start->stack_next = NULL;
  start->flags |= BRAID__D_ON_STACK;

  while (stack != NULL) {
    braid__deferred *cur = stack;
    int finished = 1;
    while (cur->paused == 0 && cur->head != NULL) {
      braid__link *l = cur->head;
      cur->head = l->next;
      if (cur->head == NULL)
        cur->tail = NULL;
      braid_deferred_cb fn;
      void *arg;
      if (cur->result.failure == NULL) {
        fn = l->cb;
        arg = l->cb_arg;
      } else {
        fn = l->eb;
        arg = l->eb_arg;
      }
      braid__slab_free(&ds->links, l);

      if (fn == braid__continue_step) {
        /* Hand the result to the outer deferred and resume it here. */
        braid__deferred *outer = arg;
        outer->result = cur->result;
        cur->result.value = NULL;
        cur->result.dtor = NULL;
        cur->result.failure = NULL;
        outer->waiting_on = NULL;
        outer->paused--;
        cur->refs--; /* the outer chain's reference on us */
        if (cur->head == NULL) {
          /* Nothing else to do here: replace rather than push, so that a
           * long line of nested deferreds keeps the stack one deep. */
          stack = cur->stack_next;
          cur->flags &= ~BRAID__D_ON_STACK;
          braid__maybe_reap(cur);
        }
        outer->stack_next = stack;
        outer->flags |= BRAID__D_ON_STACK;
        stack = outer;
        finished = 0;
        break;
      }
      if (fn == braid__chain_step) {
        /* Twisted's chainDeferred: the result moves to `other`, and this
         * chain goes on with None, or with AlreadyCalledError (the result
         * it could not deliver as its cause) when `other` had fired. */
        braid__deferred *other = arg;
        struct braid_result moved = cur->result;
        cur->result.value = NULL;
        cur->result.dtor = NULL;
        cur->result.failure = NULL;
        int rc = braid__settle(other, &moved);
        other->refs--; /* the link's reference; other is reaped later */
        if (rc == BRAID_EALREADY) {
          braid_failure_t *cause = moved.failure;
          moved.failure = NULL;
          braid__result_destroy(&moved);
          cur->result.failure = braid__failure_or_oom(
              cur->r, braid_failure_new(
                          cur->r, BRAID_FAILURE_DOMAIN, BRAID_EALREADY, cause,
                          "already called: chain_deferred target had "
                          "fired before its source did"));
        }
        if (rc != 0) {
          braid__maybe_reap(other);
          continue;
        }
        if (cur->head == NULL) {
          /* As for the continue link: replace rather than push. */
          stack = cur->stack_next;
          cur->flags &= ~BRAID__D_ON_STACK;
          braid__maybe_reap(cur);
        }
        other->stack_next = stack;
        other->flags |= BRAID__D_ON_STACK;
        stack = other;
        finished = 0;
        break;
      }
      if (fn == NULL)
        continue; /* pass-through half */

      cur->flags |= BRAID__D_RUNNING;
      fn(braid__dhandle(cur), &cur->result, arg);
      cur->flags &= ~BRAID__D_RUNNING;

      braid__deferred *inner = cur->pending_inner;
      if (inner == NULL)
        continue;
      cur->pending_inner = NULL;
      if ((inner->flags & BRAID__D_CALLED) && inner->paused == 0) {
        /* Already fired and not waiting itself: take its result now. */
        cur->result = inner->result;
        inner->result.value = NULL;
        inner->result.dtor = NULL;
        inner->result.failure = NULL;
        braid__deferred_unref(inner);
        continue;
      }
      /* Wait for it: the continue link is added to the inner deferred
       * directly (not through add_callbacks) so that nothing runs now. */
      braid__link *c = braid__slab_alloc(&ds->links);
      if (c == NULL) {
        braid__deferred_unref(inner);
        braid_result_set_failure(&cur->result, NULL);
        continue;
      }
      c->next = NULL;
      c->cb = c->eb = braid__continue_step;
      c->cb_arg = c->eb_arg = cur;
      if (inner->tail != NULL)
        inner->tail->next = c;
      else
        inner->head = c;
      inner->tail = c;
      cur->waiting_on = inner;
      cur->paused++;
      break;
    }
    if (finished && stack == cur) {
      stack = cur->stack_next;
      cur->flags &= ~BRAID__D_ON_STACK;
      braid__maybe_reap(cur);
    }
  }
}

/* ------------------------------------------------------------------------
 * Creating and firing
 * ------------------------------------------------------------------------ */

static inline braid__deferred *braid__alloc(braid_reactor_t *r) {
  braid__defer_state *ds = braid__ds(r);
  if (ds == NULL)
    return NULL;
  braid__deferred *d = braid__slab_alloc(&ds->deferreds);
  if (d == NULL)
    return NULL;
  /* One compound literal: the compiler turns it into a few wide stores.
   * The generation is the slot's, not the deferred's: it carries over. */
  *d = (struct braid__deferred){
      .magic = BRAID__LIVE_DEFERRED, .gen = d->gen, .r = r};
  return d;
}

int braid_deferred_new_cancellable(braid_reactor_t *r,
                                   braid_canceller_cb canceller, void *arg,
                                   braid_deferred_t *out) {
  if (out == NULL)
    return BRAID_EINVAL;
  *out = braid_deferred_none();
  if (r == NULL)
    return BRAID_EINVAL;
  braid__deferred *d = braid__alloc(r);
  if (d == NULL)
    return BRAID_ENOMEM;
  d->canceller = canceller;
  d->canceller_arg = arg;
  *out = braid__dhandle(d);
  return 0;
}

int braid_deferred_new(braid_reactor_t *r, braid_deferred_t *out) {
  return braid_deferred_new_cancellable(r, NULL, NULL, out);
}

/* Give d its first result, without running anything. On BRAID_EALREADY,
 * *res is left to the caller; on BRAID_ECANCELED (the one late result
 * Twisted eats after a cancel without a canceller, _suppressAlreadyCalled)
 * it has been destroyed. */
static int braid__settle(braid__deferred *d, struct braid_result *res) {
  if (d->flags & BRAID__D_CALLED) {
    if (d->flags & BRAID__D_SUPPRESS) {
      d->flags &= ~BRAID__D_SUPPRESS;
      braid__result_destroy(res);
      return BRAID_ECANCELED;
    }
    return BRAID_EALREADY;
  }
  d->flags |= BRAID__D_CALLED;
  d->result = *res;
  return 0;
}

static int braid__fire(braid__deferred *d, struct braid_result res) {
  int rc = braid__settle(d, &res);
  if (rc == BRAID_EALREADY)
    braid__result_destroy(&res);
  if (rc != 0)
    return rc;
  braid__run(d);
  /* An empty chain finishes here rather than in the loop. */
  braid__maybe_reap(d);
  return 0;
}

int braid_deferred_callback(braid_deferred_t h, void *value,
                            braid_dtor_cb dtor) {
  struct braid_result res = {value, dtor, NULL};
  braid__deferred *d = braid__dget(h);
  if (d == NULL) {
    braid__result_destroy(&res);
    return BRAID_EINVAL;
  }
  return braid__fire(d, res);
}

static int braid__errback(braid__deferred *d, braid_failure_t *f) {
  struct braid_result res = {NULL, NULL, braid__failure_or_oom(d->r, f)};
  return braid__fire(d, res);
}

int braid_deferred_errback(braid_deferred_t h, braid_failure_t *f) {
  braid__deferred *d = braid__dget(h);
  if (d == NULL) {
    braid_failure_unref(f);
    return BRAID_EINVAL;
  }
  return braid__errback(d, f);
}

int braid_deferred_succeed(braid_reactor_t *r, void *value, braid_dtor_cb dtor,
                           braid_deferred_t *out) {
  int rc = braid_deferred_new(r, out);
  if (rc < 0) {
    if (dtor != NULL)
      dtor(value);
    return rc;
  }
  return braid_deferred_callback(*out, value, dtor);
}

int braid_deferred_fail(braid_reactor_t *r, braid_failure_t *f,
                        braid_deferred_t *out) {
  int rc = braid_deferred_new(r, out);
  if (rc < 0) {
    braid_failure_unref(f);
    return rc;
  }
  return braid_deferred_errback(*out, f);
}

/* ------------------------------------------------------------------------
 * Adding steps
 * ------------------------------------------------------------------------ */

void braid__deferred_append(braid__deferred *d, braid__link *l) {
  l->next = NULL;
  if (d->tail != NULL)
    d->tail->next = l;
  else
    d->head = l;
  d->tail = l;
  if ((d->flags & BRAID__D_CALLED) && d->paused == 0) {
    braid__run(d);
    braid__maybe_reap(d);
  }
}

int braid_deferred_add_callbacks(braid_deferred_t h, braid_deferred_cb cb,
                                 void *cb_arg, braid_deferred_cb eb,
                                 void *eb_arg) {
  braid__deferred *d = braid__dget(h);
  if (d == NULL)
    return BRAID_EINVAL;
  braid__link *l = braid__slab_alloc(&d->r->defer->links);
  if (l == NULL)
    return BRAID_ENOMEM;
  l->cb = cb;
  l->eb = eb;
  l->cb_arg = cb_arg;
  l->eb_arg = eb_arg;
  braid__deferred_append(d, l);
  return 0;
}

int braid_deferred_add_callback(braid_deferred_t d, braid_deferred_cb cb,
                                void *arg) {
  return braid_deferred_add_callbacks(d, cb, arg, NULL, NULL);
}

int braid_deferred_add_errback(braid_deferred_t d, braid_deferred_cb eb,
                               void *arg) {
  return braid_deferred_add_callbacks(d, NULL, NULL, eb, arg);
}

int braid_deferred_add_both(braid_deferred_t d, braid_deferred_cb fn,
                            void *arg) {
  return braid_deferred_add_callbacks(d, fn, arg, fn, arg);
}

int braid_deferred_chain_deferred(braid_deferred_t h, braid_deferred_t oh) {
  braid__deferred *d = braid__dget(h), *other = braid__dget(oh);
  if (d == NULL || other == NULL || d == other || d->r != other->r)
    return BRAID_EINVAL;
  braid__link *l = braid__slab_alloc(&d->r->defer->links);
  if (l == NULL)
    return BRAID_ENOMEM;
  other->refs++; /* dropped by the run loop when the link runs */
  l->cb = l->eb = braid__chain_step;
  l->cb_arg = l->eb_arg = other;
  braid__deferred_append(d, l);
  return 0;
}

/* ------------------------------------------------------------------------
 * Control
 * ------------------------------------------------------------------------ */

int braid_deferred_pause(braid_deferred_t h) {
  braid__deferred *d = braid__dget(h);
  if (d == NULL)
    return BRAID_EINVAL;
  d->paused++;
  return 0;
}

int braid_deferred_unpause(braid_deferred_t h) {
  braid__deferred *d = braid__dget(h);
  if (d == NULL || d->paused == 0)
    return BRAID_EINVAL;
  if (--d->paused == 0 && (d->flags & BRAID__D_CALLED)) {
    braid__run(d);
    braid__maybe_reap(d);
  }
  return 0;
}

void braid__deferred_cancel(braid__deferred *d) {
  /* A chain waiting for an inner deferred cancels the inner one instead
   * (Twisted's cancel() on a deferred whose result is a Deferred). Walk to
   * the innermost here rather than recursing, for deep nests. */
  while ((d->flags & BRAID__D_CALLED) && d->waiting_on != NULL)
    d = d->waiting_on;
  if (d->flags & BRAID__D_CALLED)
    return;
  if (d->canceller != NULL) {
    /* Keep d across the canceller, which may fire and unref it. */
    d->refs++;
    braid_canceller_cb c = d->canceller;
    d->canceller = NULL; /* runs at most once */
    c(braid__dhandle(d), d->canceller_arg);
    d->refs--;
  } else {
    d->flags |= BRAID__D_SUPPRESS;
  }
  if (!(d->flags & BRAID__D_CALLED))
    braid__errback(d, braid_failure_new(d->r, BRAID_FAILURE_DOMAIN,
                                        BRAID_ECANCELED, NULL,
                                        "deferred cancelled"));
  braid__maybe_reap(d);
}

int braid_deferred_cancel(braid_deferred_t h) {
  braid__deferred *d = braid__dget(h);
  if (d == NULL)
    return BRAID_EINVAL;
  braid__deferred_cancel(d);
  return 0;
}

int braid_deferred_ref(braid_deferred_t h) {
  braid__deferred *d = braid__dget(h);
  if (d == NULL)
    return BRAID_EINVAL;
  d->refs++;
  return 0;
}

void braid__deferred_unref(braid__deferred *d) {
  if (--d->refs == 0)
    braid__maybe_reap(d);
}

int braid_deferred_unref(braid_deferred_t h) {
  braid__deferred *d = braid__dget(h);
  if (d == NULL || d->refs == 0)
    return BRAID_EINVAL;
  braid__deferred_unref(d);
  return 0;
}

bool braid_deferred_alive(braid_deferred_t h) {
  return braid__dget(h) != NULL;
}

bool braid_deferred_called(braid_deferred_t h) {
  braid__deferred *d = braid__dget(h);
  return d != NULL && (d->flags & BRAID__D_CALLED);
}

bool braid_deferred_paused(braid_deferred_t h) {
  braid__deferred *d = braid__dget(h);
  return d != NULL && d->paused > 0;
}

const braid_result_t *braid_deferred_result(braid_deferred_t h) {
  braid__deferred *d = braid__dget(h);
  if (d == NULL || !(d->flags & BRAID__D_CALLED))
    return NULL;
  return &d->result;
}

braid_reactor_t *braid_deferred_reactor(braid_deferred_t h) {
  braid__deferred *d = braid__dget(h);
  return d != NULL ? d->r : NULL;
}

/* ------------------------------------------------------------------------
 * Reactor teardown
 * ------------------------------------------------------------------------ */

typedef struct braid__teardown_pass {
  braid__deferred **list;
  size_t n, cap;
  int oom;
} braid__teardown_pass;

static void braid__collect_unfired(void *obj, void *arg) {
  braid__deferred *d = obj;
  braid__teardown_pass *p = arg;
  if (d->magic != BRAID__LIVE_DEFERRED || (d->flags & BRAID__D_CALLED))
    return;
  if (p->n == p->cap) {
    size_t cap = p->cap ? p->cap * 2 : 64;
    braid__deferred **l = braid_realloc(p->list, cap * sizeof *l);
    if (l == NULL) {
      p->oom = 1;
      return;
    }
    p->list = l;
    p->cap = cap;
  }
  d->refs++; /* stays valid while earlier cancels run */
  p->list[p->n++] = d;
}

static void braid__free_live(void *obj, void *arg) {
  braid__deferred *d = obj;
  if (d->magic == BRAID__LIVE_DEFERRED)
    braid__deferred_free(arg, d);
}

void braid__deferred_reactor_teardown(braid_reactor_t *r) {
  braid__blocking_close(r);
  braid__defer_state *ds = r->defer;
  if (ds == NULL)
    return;
  r->depth++; /* errbacks run now; destroy from inside them is refused */
  ds->tearing_down = 1;
  braid__threadpool_teardown(r, ds);

  /* Cancel what has not fired, so that errbacks can release what their
   * arguments own. Cancelling may create and cancel more deferreds; a few
   * passes settle any sane program. Collected first, then cancelled, since
   * cancelling mutates the slab being walked. */
  braid__teardown_pass p = {NULL, 0, 0, 0};
  for (int pass = 0; pass < 16; pass++) {
    p.n = 0;
    braid__slab_each(&ds->deferreds, braid__collect_unfired, &p);
    for (size_t i = 0; i < p.n; i++) {
      braid__deferred_cancel(p.list[i]);
      p.list[i]->refs--;
    }
    if (p.n == 0 || p.oom)
      break;
  }
  braid_free(p.list);

  /* Free everything, references or not, reporting unhandled failures. */
  braid__slab_each(&ds->deferreds, braid__free_live, ds);
  braid__failures_teardown(ds);
  braid__slab_each(&ds->aux, braid__aux_teardown_one, NULL);
  braid__slab_destroy(&ds->deferreds);
  braid__slab_destroy(&ds->links);
  braid__slab_destroy(&ds->failures);
  braid__slab_destroy(&ds->aux);
  r->defer = NULL;
  braid_free(ds);
  r->depth--;
}
