/* braid: deferreds (Twisted's Deferred, in C).
 *
 * A deferred is a result that is not there yet. Whoever starts an operation
 * (the producer) creates a deferred and returns it; whoever wants the result
 * (the consumer) adds steps to it; the producer fires it once, with a value
 * (braid_deferred_callback) or a failure (braid_deferred_errback), and the
 * steps run in order:
 *
 *   - Each step is a (callback, errback) pair, each with its own argument.
 *     The callback runs when the current result is a value, the errback when
 *     it is a failure; a missing half passes the result through.
 *   - A step reads the current result and may replace it (braid_result_*).
 *     Whatever the result is when a step returns is the next step's input:
 *     a callback that sets a failure switches the chain to the errback side,
 *     an errback that sets a value switches it back. Within one pair the
 *     errback never sees a failure set by its own callback.
 *   - A step that hands the result over to another deferred
 *     (braid_result_chain) pauses this chain until that inner deferred fires;
 *     the chain then continues with the inner deferred's result. An inner
 *     deferred that has already fired is consumed at once.
 *   - Steps added to a deferred that has fired run at once; steps added
 *     while its chain runs are picked up by the running loop. Neither long
 *     chains nor deeply nested deferreds grow the C stack.
 *
 * All functions here are for the reactor's thread only (see
 * braid/threadpool.h for crossing threads).
 *
 * Where braid departs from Twisted on purpose (lifetime and handles, values
 * moved into DeferredList results, errbacks of unfired deferreds run at
 * reactor destroy, empty lists, errors as codes), docs/DEFERREDS.md lists
 * each case with its reason.
 *
 * ---------------------------------------------------------------------------
 * Handles
 *
 * A braid_deferred_t is a small value, not a pointer: the deferred's slot
 * in its reactor's slab plus the slot's generation when the deferred was
 * made. Copy it, store it, pass it by value; compare two with
 * braid_deferred_same(). A zero-filled handle (BRAID_DEFERRED_INIT,
 * braid_deferred_none()) names no deferred. When a deferred is reclaimed (see
 * "Lifetime"), its slot's generation moves on, so a handle kept past its
 * deferred's life is *stale*, and every function given a stale handle does
 * nothing and says so (BRAID_EINVAL, false or NULL; a value or failure it was
 * to consume is still consumed), also after the slot has been reused for a new
 * deferred: a stale handle never acts on another deferred. Generations are 64
 * bits and do not wrap. braid_deferred_alive() tells whether a handle is stale.
 *
 * Why generation-checked handles rather than handles that keep the
 * deferred alive until their holder drops them: the latter would make
 * every holder of every deferred release it (each forgotten release a
 * leak until reactor destroy, in code that needs no release otherwise),
 * and a handle used after its release would be as stale as a bare
 * pointer. A generation catches every misuse at the cost of one compare of
 * a word on the cache line the call reads anyway, and allocates nothing.
 * Handles must not be used after their reactor is destroyed.
 *
 * ---------------------------------------------------------------------------
 * Lifetime: who frees a deferred
 *
 * Deferreds live in their reactor's slab and are never freed by you. A
 * deferred is freed automatically once it is *finished* (it has fired, its
 * chain has run to the end, it is neither paused nor waiting for an inner
 * deferred) and nobody holds a reference to it; the free happens at the end
 * of the reactor turn in which it finished (a call-soon), never inside a
 * braid call. So:
 *
 *   - A deferred that has not fired is never freed (until reactor destroy):
 *     the producer may keep its handle until it fires it.
 *   - A deferred you were just handed (even one that has already fired, e.g.
 *     from braid_deferred_succeed) stays alive until you return to the
 *     reactor: add your steps right away and you are safe.
 *   - To use a deferred later than that (cancel it from a timer, add steps
 *     to it next turn, fire it after it may have been cancelled), hold a
 *     reference: braid_deferred_ref() now, braid_deferred_unref() when done.
 *     Without one, the handle goes stale (see "Handles") and your calls
 *     fail with BRAID_EINVAL.
 *   - braid_reactor_destroy() cancels every deferred that has not fired (so
 *     their errbacks run, with a BRAID_ECANCELED failure, and can free what
 *     their arguments own), then frees all deferreds, references or not.
 *     Drop your references before destroying the reactor.
 *
 * ---------------------------------------------------------------------------
 * Values and ownership
 *
 * A result is a value (a pointer plus an optional destructor) or a failure
 * (braid/failure.h). The deferred owns its current result:
 *
 *   - braid_deferred_callback(d, value, dtor) gives the value to d (always,
 *     even when it fails: then the value is destroyed at once);
 *     braid_deferred_errback(d, failure) likewise consumes the failure.
 *   - A step only borrows the result it is shown. If the step replaces it
 *     (braid_result_set, braid_result_set_failure, braid_result_chain), the
 *     old one is destroyed (dtor called / failure released) right away;
 *     to keep the old value, take it first with braid_result_take().
 *   - When a deferred is freed, its last result is destroyed. If that last
 *     result is a failure, nobody handled it: it is logged through the
 *     reactor's log hook ("deferred" domain, ERROR level) with its message
 *     and causes (Twisted's "Unhandled error in Deferred"). This holds at
 *     reactor destroy too, whatever the failure's causes (a timeout is
 *     caused by a cancel, and is still an error); only the cancellations
 *     destroy itself makes, and failures made from them while it runs the
 *     errbacks, are logged at DEBUG level.
 *   - A NULL dtor means the deferred does not own the value.
 *   - Step arguments (cb_arg, eb_arg) are never owned by braid.
 */
#ifndef BRAID_DEFERRED_H
#define BRAID_DEFERRED_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "braid/failure.h"
#include "braid/reactor.h"

#ifdef __cplusplus
extern "C" {
#endif

struct braid__deferred; /* private */

/* A handle to a deferred (see "Handles"). All fields private. */
typedef struct braid_deferred {
  struct braid__deferred *slot_;
  uint64_t gen_;
} braid_deferred_t;

/* The handle that names no deferred, for initialisers; a zero-filled
 * handle is the same. */
#define BRAID_DEFERRED_INIT                                                    \
  { 0, 0 }

typedef struct braid_result braid_result_t;

/* The handle that names no deferred, as a value. */
static inline braid_deferred_t braid_deferred_none(void) {
  braid_deferred_t d = BRAID_DEFERRED_INIT;
  return d;
}

/* Whether d is the handle that names no deferred (as zero-filled ones
 * are). A stale handle is not none: see braid_deferred_alive(). */
static inline bool braid_deferred_is_none(braid_deferred_t d) {
  return d.slot_ == 0;
}

/* Whether a and b are the same handle (the same deferred, or both none). */
static inline bool braid_deferred_same(braid_deferred_t a, braid_deferred_t b) {
  return a.slot_ == b.slot_ && a.gen_ == b.gen_;
}

/* Destroys an owned value. braid_free and free fit. */
typedef void (*braid_dtor_cb)(void *value);

/* A step: `d` is the deferred whose chain is running, `res` its current
 * result (valid only during the call), `arg` the argument given when the
 * step was added. Read the result with braid_result_value/failure and
 * replace it with braid_result_set*; doing nothing passes it on. */
typedef void (*braid_deferred_cb)(braid_deferred_t d, braid_result_t *res,
                                  void *arg);

/* Called by braid_deferred_cancel() on a deferred that has not fired. It
 * should stop the operation behind `d` and may fire `d` (with anything);
 * if it does not, `d` is errbacked with a BRAID_ECANCELED failure. */
typedef void (*braid_canceller_cb)(braid_deferred_t d, void *arg);

/* ------------------------------------------------------------------------
 * The current result, inside a step
 * ------------------------------------------------------------------------ */

/* Whether the result is a value (not a failure). */
bool braid_result_ok(const braid_result_t *res);

/* The value (NULL when the result is a failure). Borrowed. */
void *braid_result_value(const braid_result_t *res);

/* The failure (NULL when the result is a value). Borrowed: take a
 * reference to keep it, e.g. as the cause of a new failure. */
braid_failure_t *braid_result_failure(const braid_result_t *res);

/* Whether the result is a failure matching (domain, code) as
 * braid_failure_check() does. An errback traps like Twisted's
 * failure.trap(): if this returns false, return without touching the
 * result and the failure goes on down the chain. */
bool braid_result_trap(const braid_result_t *res, const char *domain, int code);

/* Replace the result with a value that the deferred owns if dtor != NULL.
 * Setting the value and dtor it already has changes nothing. */
void braid_result_set(braid_result_t *res, void *value, braid_dtor_cb dtor);

/* Replace the result with a failure (consumed; NULL: out of memory). */
void braid_result_set_failure(braid_result_t *res, braid_failure_t *f);

/* Shorthand: set a braid-domain failure for a BRAID_E* code. */
void braid_result_fail(braid_result_t *res, int code);

/* Take the value out: returns it and stores its dtor in *dtor (if dtor is
 * not NULL); you own it now. The result becomes a NULL value. On a failure
 * result, returns NULL and changes nothing. */
void *braid_result_take(braid_result_t *res, braid_dtor_cb *dtor);

/* Wait for `inner`: the current result is destroyed, this chain pauses, and
 * when `inner` fires the chain continues with inner's result (which inner
 * then no longer has: steps added to inner later see a NULL value).
 * Twisted's "return a Deferred from a callback". The chain holds a reference
 * on `inner` until then. BRAID_EINVAL (result unchanged) if inner is none
 * or stale, belongs to another reactor, or is the deferred running this
 * step. */
int braid_result_chain(braid_result_t *res, braid_deferred_t inner);

/* The reactor the result's deferred belongs to. */
braid_reactor_t *braid_result_reactor(const braid_result_t *res);

/* ------------------------------------------------------------------------
 * Creating and firing
 * ------------------------------------------------------------------------ */

/* A new deferred that has not fired, in *out. BRAID_ENOMEM, BRAID_EINVAL
 * (then *out is none). */
int braid_deferred_new(braid_reactor_t *r, braid_deferred_t *out);

/* Same, with a canceller (Twisted's Deferred(canceller)). */
int braid_deferred_new_cancellable(braid_reactor_t *r,
                                   braid_canceller_cb canceller, void *arg,
                                   braid_deferred_t *out);

/* A deferred that has already fired with this value / failure (Twisted's
 * succeed() / fail()). The value or failure is consumed even on error. */
int braid_deferred_succeed(braid_reactor_t *r, void *value, braid_dtor_cb dtor,
                           braid_deferred_t *out);
int braid_deferred_fail(braid_reactor_t *r, braid_failure_t *f,
                        braid_deferred_t *out);

/* Fire with a value / a failure and run the chain. The value / failure is
 * consumed in every case. Returns 0, BRAID_EALREADY if the deferred has
 * already fired (Twisted's AlreadyCalledError; the deferred is unchanged),
 * BRAID_ECANCELED if it was cancelled without a canceller (Twisted silently
 * drops that one late result; so does this, but tells you), BRAID_EINVAL for
 * a none or stale d. */
int braid_deferred_callback(braid_deferred_t d, void *value,
                            braid_dtor_cb dtor);
int braid_deferred_errback(braid_deferred_t d, braid_failure_t *f);

/* ------------------------------------------------------------------------
 * Adding steps. All return 0, BRAID_EINVAL, or BRAID_ENOMEM (then nothing
 * was added). On a deferred that has fired (and is not paused) the new step
 * runs before the call returns.
 * ------------------------------------------------------------------------ */

int braid_deferred_add_callbacks(braid_deferred_t d, braid_deferred_cb cb,
                                 void *cb_arg, braid_deferred_cb eb,
                                 void *eb_arg);
int braid_deferred_add_callback(braid_deferred_t d, braid_deferred_cb cb,
                                void *arg);
int braid_deferred_add_errback(braid_deferred_t d, braid_deferred_cb eb,
                               void *arg);
/* The same function as both callback and errback, with one argument. */
int braid_deferred_add_both(braid_deferred_t d, braid_deferred_cb fn,
                            void *arg);

/* Twisted's chainDeferred: when `d` fires, fire `other` with d's result
 * (the result moves to `other`; d's chain continues with a NULL value).
 * `other` is referenced until then. A line of chained deferreds of any
 * length runs without growing the C stack. If `other` has already fired
 * when d's result reaches it, d's chain continues instead with a
 * BRAID_EALREADY failure (Twisted's AlreadyCalledError) whose cause is
 * d's failure, if d failed (a value is destroyed); like any failure, it is
 * reported if nobody handles it. The one exception is Twisted's too: a
 * deferred cancelled without a canceller eats one late result silently,
 * and d goes on with a NULL value. */
int braid_deferred_chain_deferred(braid_deferred_t d, braid_deferred_t other);

/* ------------------------------------------------------------------------
 * Control
 * ------------------------------------------------------------------------ */

/* Stop running steps until as many unpauses as pauses. Counted. */
int braid_deferred_pause(braid_deferred_t d);
/* BRAID_EINVAL if not paused. Resumes the chain when the count is 0. */
int braid_deferred_unpause(braid_deferred_t d);

/* Twisted's cancel(): on a deferred that has not fired, run its canceller
 * and, if that did not fire it, errback it with a BRAID_ECANCELED failure;
 * on one whose chain is waiting for an inner deferred, cancel the inner
 * one; otherwise nothing. Returns 0 or BRAID_EINVAL. */
int braid_deferred_cancel(braid_deferred_t d);

/* Keep `d` alive beyond the current turn (see "Lifetime"). */
int braid_deferred_ref(braid_deferred_t d);
/* BRAID_EINVAL if you hold no reference. A finished deferred whose last
 * reference goes is freed at the end of the turn. */
int braid_deferred_unref(braid_deferred_t d);

/* Whether d names a deferred that has not been reclaimed: false for a
 * none or stale handle (see "Handles"). */
bool braid_deferred_alive(braid_deferred_t d);
/* Whether callback/errback has been called (Twisted's `called`). */
bool braid_deferred_called(braid_deferred_t d);
/* Whether the chain is paused (explicitly or waiting for an inner one). */
bool braid_deferred_paused(braid_deferred_t d);
/* The current result after firing (borrowed, valid while d is alive; NULL
 * before firing). */
const braid_result_t *braid_deferred_result(braid_deferred_t d);
braid_reactor_t *braid_deferred_reactor(braid_deferred_t d);

/* ------------------------------------------------------------------------
 * Time (on the reactor clock, so the manual test clock drives them)
 * ------------------------------------------------------------------------ */

/* Twisted's addTimeout(): if `d` has not fired `timeout` ns from now, it is
 * cancelled; if that cancel produced a BRAID_ECANCELED failure, the failure
 * becomes BRAID_ETIMEDOUT (with the cancel failure as its cause), or, when
 * on_timeout is given, on_timeout(d, res, arg) runs instead to turn the
 * result into whatever it likes. Only a cancel caused by the timer is
 * converted. The timer stops when `d` fires. Adds one step to d. */
int braid_deferred_add_timeout(braid_deferred_t d, uint64_t timeout,
                               braid_deferred_cb on_timeout, void *arg);

/* Twisted's deferLater(): a deferred that fires `delay` ns from now. Its
 * first step is fn(d, res, arg) with a NULL value (omit fn for a plain NULL
 * result). Cancelling it stops the timer and fn never runs. */
int braid_defer_later(braid_reactor_t *r, uint64_t delay, braid_deferred_cb fn,
                      void *arg, braid_deferred_t *out);

/* ------------------------------------------------------------------------
 * Many deferreds: DeferredList, gatherResults, race
 * ------------------------------------------------------------------------ */

/* One child's outcome. `value` is owned by the list result when dtor is set
 * (set dtor to NULL after taking the value out); `failure` is a reference
 * owned by the list result. */
typedef struct braid_list_item {
  bool ok;
  void *value;
  braid_dtor_cb dtor;
  braid_failure_t *failure;
} braid_list_item;

/* The value a list, gather or race fires with (its dtor frees it and every
 * item). For a full list, items[i] is child i and index == count. When a
 * fire-on-one-callback list or a race fires for a winner, count == 1,
 * items[0] is the winner and `index` its position. A list over no
 * children, whatever its flags, fires with count == 0 and index == 0: no
 * item exists. (items[] always has room for one item, zero-filled when
 * count == 0, so that code reading items[0] without checking count reads
 * "no value, no failure" rather than past the block.) */
typedef struct braid_list_result {
  size_t count;
  size_t index;
  braid_list_item items[];
} braid_list_result;

typedef enum braid_list_flags {
  BRAID_LIST_FIRE_ON_ONE_CALLBACK = 1u << 0,
  BRAID_LIST_FIRE_ON_ONE_ERRBACK = 1u << 1,
  /* A child's failure is replaced by a NULL value in the child's own chain
   * once recorded, so it is not reported as unhandled. */
  BRAID_LIST_CONSUME_ERRORS = 1u << 2
} braid_list_flags;

/* Twisted's DeferredList over n children. Each child's value moves into
 * the list's result (the child's chain continues with a NULL value);
 * failures are shared (referenced). Fires with a braid_list_result when
 * every child has fired; or, with FIRE_ON_ONE_CALLBACK, on the first
 * success (count 1); with FIRE_ON_ONE_ERRBACK, errbacks on the first
 * failure with a failure of the same domain and code whose cause is the
 * child's failure (Twisted's FirstError). n == 0 (ds may then be NULL):
 * the list fires at once with a result of no items (count 0, index 0),
 * for every combination of flags; Twisted does the same except with
 * fireOnOneCallback, where its empty list never fires (a leak in C).
 * Cancelling the list cancels every child that has not fired. Each child
 * is referenced until it reports. */
int braid_deferred_list(braid_reactor_t *r, const braid_deferred_t *ds,
                        size_t n, unsigned flags, braid_deferred_t *out);

/* Twisted's gatherResults(): a list with FIRE_ON_ONE_ERRBACK whose result
 * is a braid_list_result of n values in order (n == 0: count 0, at once). */
int braid_gather_results(braid_reactor_t *r, const braid_deferred_t *ds,
                         size_t n, bool consume_errors, braid_deferred_t *out);

/* Twisted's race(): fires with the first child to succeed (a
 * braid_list_result with count 1 and its index) and cancels all the others;
 * if every child fails, errbacks with a failure (domain and code of the
 * first child failure, which is its cause). n == 0: BRAID_EINVAL. */
int braid_race(braid_reactor_t *r, const braid_deferred_t *ds, size_t n,
               braid_deferred_t *out);

/* ------------------------------------------------------------------------
 * LoopingCall
 * ------------------------------------------------------------------------ */

typedef struct braid_looping_call braid_looping_call_t;

/* One call of a looping call. `count` is the number of intervals that have
 * elapsed since the previous call (1 normally; more when the loop fell
 * behind and intervals were skipped: Twisted's LoopingCall.withCount).
 * Return braid_deferred_none() when done, or a deferred to make the loop
 * wait for it (the next call is scheduled when it succeeds; if it fails the
 * loop stops and its deferred errbacks with that failure). */
typedef braid_deferred_t (*braid_looping_cb)(braid_looping_call_t *lc,
                                             uint64_t count, void *arg);

/* Caller-owned, like a timer: embed it; zero-filled (or
 * BRAID_LOOPING_CALL_INIT) is valid. It must stay alive while running. */
struct braid_looping_call {
  /* All fields private. */
  braid_timer_t timer_;
  braid_reactor_t *reactor_;
  braid_looping_cb fn_;
  void *arg_;
  braid_deferred_t deferred_; /* fires when the loop stops */
  uint64_t interval_, start_, last_;
  int running_, run_at_start_, have_last_, waiting_;
};

#define BRAID_LOOPING_CALL_INIT                                                \
  { BRAID_TIMER_INIT, 0, 0, 0, BRAID_DEFERRED_INIT, 0, 0, 0, 0, 0, 0, 0 }

/* Start calling fn every `interval` ns, the first time now (run_now) or one
 * interval from now. Calls are scheduled on the interval grid that starts
 * now: when a call (or the deferred it returned) ends late, the next call
 * is at the next grid point and the missed ones are skipped, as Twisted
 * does. *out (out may be NULL) receives a deferred that fires with `lc` (not
 * owned) when the loop is stopped, or errbacks if a call fails; the loop
 * holds a reference on it until it fires, and cancelling it stops the loop
 * (errback BRAID_ECANCELED). BRAID_EBUSY if lc is running. */
int braid_looping_call_start(braid_reactor_t *r, braid_looping_call_t *lc,
                             uint64_t interval, bool run_now,
                             braid_looping_cb fn, void *arg,
                             braid_deferred_t *out);

/* Stop the loop: its deferred fires now, or, if a call's deferred is still
 * outstanding, when that one fires. BRAID_EINVAL if not running. */
int braid_looping_call_stop(braid_looping_call_t *lc);

bool braid_looping_call_running(const braid_looping_call_t *lc);

#ifdef __cplusplus
}
#endif
#endif
