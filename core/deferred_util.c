/* Deferred utilities on top of the engine: addTimeout, deferLater,
 * DeferredList, gatherResults, race and LoopingCall, each following the
 * Twisted function of the same name (twisted/internet/defer.py, task.py).
 * All time comes from the reactor clock, so the manual test clock drives
 * them deterministically. */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "core/deferred_internal.h"

#define BRAID__AUX_TIMEOUT 1u
#define BRAID__AUX_LATER 2u

/* ------------------------------------------------------------------------
 * addTimeout
 * ------------------------------------------------------------------------ */

typedef struct braid__timeout {
  braid__aux hdr; /* hdr.timer is the timeout */
  braid__deferred *d;
  braid_deferred_cb on_timeout;
  void *arg;
  uint64_t timeout;
  int timed_out;
} braid__timeout;

_Static_assert(sizeof(braid__timeout) <= BRAID__AUX_SIZE, "aux too small");

static void braid__timeout_fire(braid_timer_t *t, void *arg) {
  braid__timeout *to = arg;
  (void)t;
  /* The deferred is alive: our step has not run, so it is not finished. */
  to->timed_out = 1;
  braid__deferred_cancel(to->d);
}

/* Write `ns` as a person reads a duration ("1.5 s", "250 ms", "20 us",
 * "7 ns"): the largest unit it reaches, up to three decimals, trailing zeros
 * dropped. Timeouts are given in nanoseconds, but a message that says
 * "1500000000 ns" makes the reader count digits. */
static void braid__fmt_duration(char *buf, size_t size, uint64_t ns) {
  static const struct {
    uint64_t scale;
    const char *unit;
  } units[] = {{1000000000u, "s"}, {1000000u, "ms"}, {1000u, "us"}};
  for (size_t i = 0; i < sizeof units / sizeof units[0]; i++) {
    if (ns < units[i].scale)
      continue;
    /* Rounded to thousandths of the unit, in integers: exact for any
     * uint64_t, where a double would lose the low digits. */
    uint64_t sub = units[i].scale / 1000u;
    uint64_t milli = ns / sub + (ns % sub >= (sub + 1u) / 2u);
    unsigned frac = (unsigned)(milli % 1000u);
    int digits = 3;
    while (digits > 0 && frac % 10u == 0) {
      frac /= 10u;
      digits--;
    }
    if (digits == 0)
      snprintf(buf, size, "%llu %s", (unsigned long long)(milli / 1000u),
               units[i].unit);
    else
      snprintf(buf, size, "%llu.%0*u %s", (unsigned long long)(milli / 1000u),
               digits, frac, units[i].unit);
    return;
  }
  snprintf(buf, size, "%llu ns", (unsigned long long)ns);
}

/* Twisted's convertCancelled + cancelTimeout, as one step (nothing can run
 * between the two there either). */
static void braid__timeout_step(braid_deferred_t d, braid_result_t *res,
                                void *arg) {
  braid__timeout *to = arg;
  braid_reactor_t *r = braid_result_reactor(res);
  if (to->timed_out) {
    if (to->on_timeout != NULL) {
      to->on_timeout(d, res, to->arg);
    } else if (braid_result_trap(res, BRAID_FAILURE_DOMAIN, BRAID_ECANCELED)) {
      braid_failure_t *cancel = braid_failure_ref(braid_result_failure(res));
      char after[32];
      braid__fmt_duration(after, sizeof after, to->timeout);
      braid_result_set_failure(
          res, braid_failure_new(r, BRAID_FAILURE_DOMAIN, BRAID_ETIMEDOUT,
                                 cancel, "deferred timed out after %s", after));
    }
  }
  if (braid_timer_active(&to->hdr.timer))
    braid_timer_cancel(&to->hdr.timer);
  braid__aux_free(r, to);
}

int braid_deferred_add_timeout(braid_deferred_t h, uint64_t timeout,
                               braid_deferred_cb on_timeout, void *arg) {
  braid__deferred *d = braid__dget(h);
  if (d == NULL)
    return BRAID_EINVAL;
  braid__timeout *to = braid__aux_alloc(d->r, BRAID__AUX_TIMEOUT);
  if (to == NULL)
    return BRAID_ENOMEM;
  to->d = d;
  to->on_timeout = on_timeout;
  to->arg = arg;
  to->timeout = timeout;
  int rc =
      braid_timer_start(d->r, &to->hdr.timer, timeout, braid__timeout_fire, to);
  if (rc < 0) {
    braid__aux_free(d->r, to);
    return rc;
  }
  /* If d has fired already the step runs now and stops the timer. */
  rc = braid_deferred_add_both(h, braid__timeout_step, to);
  if (rc < 0) {
    braid_timer_cancel(&to->hdr.timer);
    braid__aux_free(d->r, to);
  }
  return rc;
}

/* ------------------------------------------------------------------------
 * deferLater
 * ------------------------------------------------------------------------ */

typedef struct braid__later {
  braid__aux hdr;
  braid__deferred *d; /* alive: it has not fired */
} braid__later;

static void braid__later_fire(braid_timer_t *t, void *arg) {
  braid__later *l = arg;
  braid__deferred *d = l->d;
  (void)t;
  braid__aux_free(d->r, l);
  braid_deferred_callback(braid__dhandle(d), NULL, NULL);
}

static void braid__later_cancel(braid_deferred_t d, void *arg) {
  braid__later *l = arg;
  braid_timer_cancel(&l->hdr.timer);
  braid__aux_free(braid_deferred_reactor(d), l);
  /* Not firing d: cancel() errbacks it with BRAID_ECANCELED. */
}

int braid_defer_later(braid_reactor_t *r, uint64_t delay, braid_deferred_cb fn,
                      void *arg, braid_deferred_t *out) {
  if (out == NULL)
    return BRAID_EINVAL;
  *out = braid_deferred_none();
  if (r == NULL)
    return BRAID_EINVAL;
  braid__later *l = braid__aux_alloc(r, BRAID__AUX_LATER);
  if (l == NULL)
    return BRAID_ENOMEM;
  braid_deferred_t d;
  int rc = braid_deferred_new_cancellable(r, braid__later_cancel, l, &d);
  if (rc == 0 && fn != NULL)
    rc = braid_deferred_add_callback(d, fn, arg);
  if (rc == 0)
    rc = braid_timer_start(r, &l->hdr.timer, delay, braid__later_fire, l);
  if (rc < 0) {
    braid__aux_free(r, l);
    braid__deferred *o = braid__dget(d);
    if (o != NULL) {
      o->canceller = NULL;
      /* Fire it so that it is freed; its fn never runs (errback side). */
      braid_deferred_errback(d, braid_failure_from_code(r, rc));
      braid_result_set(&o->result, NULL, NULL);
    }
    return rc;
  }
  l->d = braid__dget(d);
  *out = d;
  return 0;
}

/* ------------------------------------------------------------------------
 * DeferredList and gatherResults
 * ------------------------------------------------------------------------ */

typedef struct braid__dlist braid__dlist;

typedef struct braid__dlist_kid {
  braid__dlist *l;
  size_t index;
  braid__deferred *child; /* referenced until it reports, then NULL */
} braid__dlist_kid;

struct braid__dlist {
  braid_deferred_t d; /* the list's deferred; used only until it fires */
  braid_reactor_t *r;
  size_t n, finished;
  unsigned flags;
  int fired;              /* d has been fired (or cancelled) */
  int busy;               /* inside the canceller: do not free */
  braid_list_result *res; /* owned here until handed to d */
  braid__dlist_kid kids[];
};

static void braid__list_result_free(void *p) {
  braid_list_result *lr = p;
  if (lr == NULL)
    return;
  for (size_t i = 0; i < lr->count; i++) {
    braid_list_item *it = &lr->items[i];
    if (it->failure != NULL)
      braid_failure_unref(it->failure);
    else if (it->dtor != NULL)
      it->dtor(it->value);
  }
  braid_free(lr);
}

static braid_list_result *braid__list_result_new(size_t n) {
  /* Room for at least one item, zero-filled: an empty list's result has
   * count 0, and code that reads items[0] without looking at count (a
   * fire-on-one-callback winner) reads "no value, no failure" instead of
   * running off the block. */
  braid_list_result *lr =
      braid_calloc(1, sizeof *lr + (n > 0 ? n : 1) * sizeof(braid_list_item));
  if (lr != NULL) {
    lr->count = n;
    lr->index = n;
  }
  return lr;
}

static void braid__dlist_maybe_free(braid__dlist *l) {
  if (l->finished == l->n && l->fired && !l->busy) {
    braid__list_result_free(l->res);
    braid_free(l);
  }
}

static void braid__dlist_step(braid_deferred_t d, braid_result_t *res,
                              void *arg) {
  braid__dlist_kid *kid = arg;
  braid__dlist *l = kid->l;
  braid__deferred *child = kid->child;
  int ok = braid_result_ok(res);
  (void)d;
  kid->child = NULL;
  l->finished++;
  if (!l->fired) {
    braid_list_item *it = &l->res->items[kid->index];
    it->ok = ok;
    if (ok)
      it->value = braid_result_take(res, &it->dtor);
    else
      it->failure = braid_failure_ref(braid_result_failure(res));

    if (ok && (l->flags & BRAID_LIST_FIRE_ON_ONE_CALLBACK)) {
      braid_list_result *one = braid__list_result_new(1);
      l->fired = 1;
      if (one == NULL) {
        braid_deferred_errback(l->d, NULL);
      } else {
        one->items[0] = *it;
        one->index = kid->index;
        memset(it, 0, sizeof *it);
        braid_deferred_callback(l->d, one, braid__list_result_free);
      }
    } else if (!ok && (l->flags & BRAID_LIST_FIRE_ON_ONE_ERRBACK)) {
      braid_failure_t *cf = it->failure;
      l->fired = 1;
      braid_deferred_errback(
          l->d,
          braid_failure_new(l->r, cf->domain, cf->code, braid_failure_ref(cf),
                            "first error in deferred list (item %zu): %s",
                            kid->index, cf->msg));
    } else if (l->finished == l->n) {
      braid_list_result *all = l->res;
      l->res = NULL;
      l->fired = 1;
      braid_deferred_callback(l->d, all, braid__list_result_free);
    }
  }
  if (!ok && (l->flags & BRAID_LIST_CONSUME_ERRORS))
    braid_result_set(res, NULL, NULL);
  braid__deferred_unref(child);
  braid__dlist_maybe_free(l);
}

static void braid__dlist_cancel(braid_deferred_t d, void *arg) {
  braid__dlist *l = arg;
  (void)d;
  /* Cancelling a child runs its steps, ours included, which may fire the
   * list and would free l: hold it. */
  l->busy = 1;
  for (size_t i = 0; i < l->n; i++)
    if (l->kids[i].child != NULL)
      braid__deferred_cancel(l->kids[i].child);
  l->busy = 0;
  /* If the children did not fire the list, cancel() errbacks it now. */
  l->fired = 1;
  braid__dlist_maybe_free(l);
}

int braid_deferred_list(braid_reactor_t *r, const braid_deferred_t *ds,
                        size_t n, unsigned flags, braid_deferred_t *out) {
  if (out == NULL)
    return BRAID_EINVAL;
  *out = braid_deferred_none();
  if (r == NULL || (n > 0 && ds == NULL))
    return BRAID_EINVAL;
  for (size_t i = 0; i < n; i++) {
    braid__deferred *c = braid__dget(ds[i]);
    if (c == NULL || c->r != r)
      return BRAID_EINVAL;
  }
  braid__dlist *l = braid_calloc(1, sizeof *l + n * sizeof(braid__dlist_kid));
  if (l == NULL)
    return BRAID_ENOMEM;
  l->res = braid__list_result_new(n);
  if (l->res == NULL) {
    braid_free(l);
    return BRAID_ENOMEM;
  }
  l->r = r;
  l->n = n;
  l->flags = flags;
  braid_deferred_t d;
  int rc = braid_deferred_new_cancellable(r, braid__dlist_cancel, l, &d);
  if (rc < 0) {
    braid__list_result_free(l->res);
    braid_free(l);
    return rc;
  }
  l->d = d;
  /* Links first (the only step that can fail), so that a failure leaves
   * the children untouched. */
  braid__link **links = NULL;
  if (n > 0) {
    links = braid_malloc(n * sizeof *links);
    if (links == NULL)
      rc = BRAID_ENOMEM;
    for (size_t i = 0; rc == 0 && i < n; i++) {
      links[i] = braid__slab_alloc(&r->defer->links);
      if (links[i] == NULL) {
        for (size_t j = 0; j < i; j++)
          braid__slab_free(&r->defer->links, links[j]);
        rc = BRAID_ENOMEM;
      }
    }
  }
  if (rc < 0) {
    braid__deferred *o = braid__dget(d);
    braid_free(links);
    o->canceller = NULL;
    l->fired = 1;
    braid_deferred_errback(d, NULL);
    braid_result_set(&o->result, NULL, NULL);
    braid__list_result_free(l->res);
    braid_free(l);
    return rc;
  }
  for (size_t i = 0; i < n; i++) {
    l->kids[i].l = l;
    l->kids[i].index = i;
    l->kids[i].child = braid__dget(ds[i]);
    l->kids[i].child->refs++;
  }
  *out = d;
  if (n == 0) {
    /* Every empty list fires at once with a result of no items (count 0,
     * index 0), whatever its flags. Twisted fires DeferredList([]) with []
     * too, but leaves one with fireOnOneCallback unfired forever: no child
     * can ever succeed. In C a deferred that never fires is a leak (and a
     * caller waiting forever) until teardown, so braid fires that one as
     * well: "nothing to wait for" is an answer, and count 0 says it. */
    braid_list_result *all = l->res;
    l->res = NULL;
    l->fired = 1;
    braid_deferred_callback(d, all, braid__list_result_free);
    braid__dlist_maybe_free(l);
    return 0;
  }
  /* Hold l while adding: children that have fired report at once, and the
   * last of them would free l under our feet. */
  l->busy = 1;
  for (size_t i = 0; i < n; i++) {
    links[i]->cb = links[i]->eb = braid__dlist_step;
    links[i]->cb_arg = links[i]->eb_arg = &l->kids[i];
  }
  for (size_t i = 0; i < n; i++) {
    braid__deferred_append(l->kids[i].child, links[i]);
  }
  braid_free(links);
  l->busy = 0;
  braid__dlist_maybe_free(l);
  return 0;
}

int braid_gather_results(braid_reactor_t *r, const braid_deferred_t *ds,
                         size_t n, bool consume_errors, braid_deferred_t *out) {
  unsigned flags = BRAID_LIST_FIRE_ON_ONE_ERRBACK;
  if (consume_errors)
    flags |= BRAID_LIST_CONSUME_ERRORS;
  return braid_deferred_list(r, ds, n, flags, out);
}

/* ------------------------------------------------------------------------
 * race
 * ------------------------------------------------------------------------ */

typedef struct braid__race braid__race;
typedef struct braid__race_kid {
  braid__race *rc;
  size_t index;
  braid__deferred *child; /* referenced until it reports, then NULL */
} braid__race_kid;

struct braid__race {
  braid_deferred_t d;
  braid_reactor_t *r;
  size_t n, reported, failed;
  int fired, busy;
  braid_failure_t *first_failure;
  braid__race_kid kids[];
};

static void braid__race_maybe_free(braid__race *rc) {
  if (rc->reported == rc->n && rc->fired && !rc->busy) {
    braid_failure_unref(rc->first_failure);
    braid_free(rc);
  }
}

static void braid__race_cancel_others(braid__race *rc) {
  rc->busy = 1;
  for (size_t i = 0; i < rc->n; i++)
    if (rc->kids[i].child != NULL)
      braid__deferred_cancel(rc->kids[i].child);
  rc->busy = 0;
}

static void braid__race_step(braid_deferred_t d, braid_result_t *res,
                             void *arg) {
  braid__race_kid *kid = arg;
  braid__race *rc = kid->rc;
  braid__deferred *child = kid->child;
  (void)d;
  kid->child = NULL;
  rc->reported++;
  if (braid_result_ok(res)) {
    if (!rc->fired) {
      braid_list_result *one = braid__list_result_new(1);
      rc->fired = 1;
      if (one == NULL) {
        braid_deferred_errback(rc->d, NULL);
      } else {
        one->index = kid->index;
        one->items[0].ok = true;
        one->items[0].value = braid_result_take(res, &one->items[0].dtor);
        braid_deferred_callback(rc->d, one, braid__list_result_free);
      }
      braid__race_cancel_others(rc);
    }
  } else {
    rc->failed++;
    if (rc->first_failure == NULL)
      rc->first_failure = braid_failure_ref(braid_result_failure(res));
    if (rc->failed == rc->n && !rc->fired) {
      braid_failure_t *ff = rc->first_failure;
      rc->fired = 1;
      braid_deferred_errback(
          rc->d,
          braid_failure_new(rc->r, ff->domain, ff->code, braid_failure_ref(ff),
                            "all %zu deferreds in race failed", rc->n));
    }
  }
  /* Like Twisted's race, whose steps return None: the children's own
   * chains continue with nothing, so losers' failures are not reported. */
  braid_result_set(res, NULL, NULL);
  braid__deferred_unref(child);
  braid__race_maybe_free(rc);
}

static void braid__race_cancel(braid_deferred_t d, void *arg) {
  braid__race *rc = arg;
  (void)d;
  braid__race_cancel_others(rc);
  rc->fired = 1;
  braid__race_maybe_free(rc);
}

int braid_race(braid_reactor_t *r, const braid_deferred_t *ds, size_t n,
               braid_deferred_t *out) {
  if (out == NULL)
    return BRAID_EINVAL;
  *out = braid_deferred_none();
  if (r == NULL || n == 0 || ds == NULL)
    return BRAID_EINVAL;
  for (size_t i = 0; i < n; i++) {
    braid__deferred *c = braid__dget(ds[i]);
    if (c == NULL || c->r != r)
      return BRAID_EINVAL;
  }
  braid__race *rc = braid_calloc(1, sizeof *rc + n * sizeof(braid__race_kid));
  if (rc == NULL)
    return BRAID_ENOMEM;
  rc->r = r;
  rc->n = n;
  braid_deferred_t d;
  int err = braid_deferred_new_cancellable(r, braid__race_cancel, rc, &d);
  if (err < 0) {
    braid_free(rc);
    return err;
  }
  rc->d = d;
  for (size_t i = 0; i < n; i++) {
    rc->kids[i].rc = rc;
    rc->kids[i].index = i;
    rc->kids[i].child = braid__dget(ds[i]);
    rc->kids[i].child->refs++;
  }
  *out = d;
  rc->busy = 1;
  for (size_t i = 0; i < n; i++) {
    err = braid_deferred_add_both(ds[i], braid__race_step, &rc->kids[i]);
    if (err < 0) {
      /* Out of memory: count the child as failed so the race completes. */
      braid__deferred *c = rc->kids[i].child;
      rc->kids[i].child = NULL;
      rc->reported++;
      rc->failed++;
      braid__deferred_unref(c);
      if (rc->failed == n && !rc->fired) {
        rc->fired = 1;
        braid_deferred_errback(d, NULL);
      }
    }
  }
  rc->busy = 0;
  braid__race_maybe_free(rc);
  return 0;
}

/* ------------------------------------------------------------------------
 * LoopingCall
 * ------------------------------------------------------------------------ */

static void braid__lc_call(braid_looping_call_t *lc);

static void braid__lc_timer(braid_timer_t *t, void *arg) {
  (void)t;
  braid__lc_call(arg);
}

/* The loop is over: fire its deferred (once) with lc or with a failure. */
static void braid__lc_finish(braid_looping_call_t *lc, braid_failure_t *f) {
  braid_deferred_t d = lc->deferred_;
  lc->running_ = 0;
  if (braid_deferred_is_none(d)) {
    braid_failure_unref(f);
    return;
  }
  lc->deferred_ = braid_deferred_none();
  braid__dget(d)->canceller = NULL; /* alive: the loop holds a reference */
  if (f != NULL)
    braid_deferred_errback(d, f);
  else
    braid_deferred_callback(d, lc, NULL);
  braid_deferred_unref(d);
}

/* Twisted's _scheduleFrom: the next call is at the next point of the
 * interval grid that started at start_, never "interval after the last
 * call", so late calls do not drift and missed points are skipped. */
static void braid__lc_schedule_from(braid_looping_call_t *lc, uint64_t when) {
  uint64_t delay = 0;
  if (lc->interval_ > 0) {
    uint64_t running_for = when - lc->start_;
    delay = lc->interval_ - running_for % lc->interval_;
  }
  int rc =
      braid_timer_start(lc->reactor_, &lc->timer_, delay, braid__lc_timer, lc);
  if (rc < 0)
    braid__lc_finish(lc, braid_failure_from_code(lc->reactor_, rc));
}

static void braid__lc_done(braid_looping_call_t *lc) {
  lc->waiting_ = 0;
  if (lc->running_)
    braid__lc_schedule_from(lc, braid_reactor_now(lc->reactor_));
  else
    braid__lc_finish(lc, NULL);
}

static void braid__lc_step_ok(braid_deferred_t d, braid_result_t *res,
                              void *arg) {
  (void)d;
  braid_result_set(res, NULL, NULL);
  braid__lc_done(arg);
}

static void braid__lc_step_err(braid_deferred_t d, braid_result_t *res,
                               void *arg) {
  braid_looping_call_t *lc = arg;
  (void)d;
  braid_failure_t *f = braid_failure_ref(braid_result_failure(res));
  braid_result_set(res, NULL, NULL);
  lc->waiting_ = 0;
  braid__lc_finish(lc, f);
}

/* intervalOf() in Twisted: which grid slot `t` falls in; signed, because
 * the slot before start is -1 when the first call runs at start. */
static int64_t braid__lc_slot(const braid_looping_call_t *lc, uint64_t t) {
  return (int64_t)(t - lc->start_) / (int64_t)lc->interval_;
}

static void braid__lc_call(braid_looping_call_t *lc) {
  uint64_t now = braid_reactor_now(lc->reactor_);
  uint64_t count = 1;
  if (lc->interval_ > 0) {
    uint64_t last = lc->last_;
    if (!lc->have_last_) {
      last = lc->start_;
      if (lc->run_at_start_)
        last -= lc->interval_;
    }
    int64_t n = braid__lc_slot(lc, now) - braid__lc_slot(lc, last);
    if (n <= 0) {
      /* Twisted's withCount skips the call when no slot has passed. */
      braid__lc_done(lc);
      return;
    }
    count = (uint64_t)n;
  }
  lc->last_ = now;
  lc->have_last_ = 1;
  lc->waiting_ = 1;
  braid_deferred_t w = lc->fn_(lc, count, lc->arg_);
  if (braid_deferred_is_none(w)) {
    braid__lc_done(lc);
    return;
  }
  if (braid_deferred_add_callbacks(w, braid__lc_step_ok, lc, braid__lc_step_err,
                                   lc) < 0) {
    lc->waiting_ = 0;
    braid__lc_finish(lc, braid_failure_from_code(lc->reactor_, BRAID_ENOMEM));
  }
}

static void braid__lc_cancel(braid_deferred_t d, void *arg) {
  braid_looping_call_t *lc = arg;
  /* Not in Twisted (whose LoopingCall deferred has no canceller and keeps
   * looping when cancelled): in C, cancelling the deferred is the one way
   * teardown can stop a loop, so it stops the loop. cancel() errbacks d. */
  lc->running_ = 0;
  lc->deferred_ = braid_deferred_none();
  if (braid_timer_active(&lc->timer_))
    braid_timer_cancel(&lc->timer_);
  braid_deferred_unref(d);
}

int braid_looping_call_start(braid_reactor_t *r, braid_looping_call_t *lc,
                             uint64_t interval, bool run_now,
                             braid_looping_cb fn, void *arg,
                             braid_deferred_t *out) {
  if (out != NULL)
    *out = braid_deferred_none();
  if (r == NULL || lc == NULL || fn == NULL)
    return BRAID_EINVAL;
  if (lc->running_ || lc->waiting_ || !braid_deferred_is_none(lc->deferred_))
    return BRAID_EBUSY;
  braid_deferred_t d;
  int rc = braid_deferred_new_cancellable(r, braid__lc_cancel, lc, &d);
  if (rc < 0)
    return rc;
  braid_deferred_ref(d); /* the loop's reference, dropped when it fires d */
  lc->reactor_ = r;
  lc->fn_ = fn;
  lc->arg_ = arg;
  lc->deferred_ = d;
  lc->interval_ = interval;
  lc->start_ = braid_reactor_now(r);
  lc->last_ = 0;
  lc->have_last_ = 0;
  lc->run_at_start_ = run_now;
  lc->running_ = 1;
  lc->waiting_ = 0;
  if (out != NULL)
    *out = d;
  if (run_now)
    braid__lc_call(lc);
  else
    braid__lc_schedule_from(lc, lc->start_);
  return 0;
}

int braid_looping_call_stop(braid_looping_call_t *lc) {
  if (lc == NULL || !lc->running_)
    return BRAID_EINVAL;
  lc->running_ = 0;
  if (braid_timer_active(&lc->timer_)) {
    braid_timer_cancel(&lc->timer_);
    braid__lc_finish(lc, NULL);
  }
  /* Otherwise a call's deferred is outstanding; its step finishes. */
  return 0;
}

bool braid_looping_call_running(const braid_looping_call_t *lc) {
  return lc != NULL && lc->running_;
}
