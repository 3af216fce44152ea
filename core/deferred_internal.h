/* Internals shared by core/deferred.c, core/deferred_util.c,
 * core/failure.c and core/threadpool.c. Not public API. */
#ifndef BRAID_CORE_DEFERRED_INTERNAL_H
#define BRAID_CORE_DEFERRED_INTERNAL_H

#include "braid/deferred.h"
#include "braid/threadpool.h"
#include "core/internal.h"
#include "core/slab.h"

/* Objects in the slabs carry a state word that is not their first word
 * (the free list overwrites that one), so that teardown can tell live
 * objects from free ones and API calls can catch many stale pointers. */
#define BRAID__LIVE_DEFERRED 0x44656665u /* "Defe" */
#define BRAID__LIVE_FAILURE 0x4661696cu  /* "Fail" */
#define BRAID__DEAD 0xdeadu

struct braid_result {
  void *value;
  braid_dtor_cb dtor;
  braid_failure_t *failure; /* non-NULL: the result is this failure */
};

/* One step of a chain: a (callback, errback) pair. NULL halves pass the
 * result through. */
typedef struct braid__link {
  struct braid__link *next;
  braid_deferred_cb cb, eb;
  void *cb_arg, *eb_arg;
} braid__link;

/* Deferred flags. */
#define BRAID__D_CALLED 1u    /* callback/errback happened */
#define BRAID__D_RUNNING 2u   /* one of its steps is executing */
#define BRAID__D_ON_STACK 4u  /* on a run loop's stack (being processed) */
#define BRAID__D_ON_REAP 8u   /* on the reactor's reap list */
#define BRAID__D_SUPPRESS 16u /* cancelled without canceller: eat one fire */

/* A deferred's slot. Public handles (braid_deferred_t) name one by its
 * address and its generation; internally, slots are used directly. */
typedef struct braid__deferred braid__deferred;
struct braid__deferred {
  braid__link *head; /* first word: reused by the slab's free list */
  uint32_t magic;
  uint32_t refs;
  /* Bumped each time the slot is freed, so that handles to the deferred
   * that lived here stop matching. Kept readable (not poisoned under ASan)
   * in a free slot, since a stale handle is checked against it. */
  uint64_t gen;
  braid__link *tail;
  struct braid_result result;
  braid_reactor_t *r;
  braid__deferred *waiting_on;    /* inner deferred the chain waits for */
  braid__deferred *pending_inner; /* set by braid_result_chain in a step */
  braid__deferred *stack_next;    /* run loop stack */
  braid__deferred *reap_next;     /* reap list */
  braid_canceller_cb canceller;
  void *canceller_arg;
  uint32_t paused;
  uint32_t flags;
};

/* 128 bytes: a slab size class with no waste. */
_Static_assert(sizeof(struct braid__deferred) <= 128, "deferred grew");

/* Failure flags. */
#define BRAID__F_TEARDOWN 1u /* made while its reactor was being destroyed */

struct braid_failure {
  struct braid_failure *cause; /* first word: reused by the free list */
  uint32_t magic;
  uint32_t refs; /* UINT32_MAX: immortal (the preallocated ENOMEM one) */
  int code;
  uint32_t flags; /* BRAID__F_* */
  const char *domain;
  braid_reactor_t *r;
  char *msg; /* points at inline_msg or at a braid_malloc'd string */
  char inline_msg[152];
};

/* Size class of the auxiliary slab (timeouts, deferLater, thread jobs). */
#define BRAID__AUX_SIZE 128u
#define BRAID__LIVE_AUX 0x41757821u /* "Aux!" */

/* Every auxiliary object starts with this header. Its timer slot lets
 * teardown cancel timers that live in aux objects before the slab is
 * freed: the reactor's timer heap points into them, and clearing the heap
 * after the slab was freed would write to freed memory. */
typedef struct braid__aux {
  void *link_; /* free list */
  uint32_t magic;
  uint32_t kind;
  braid_timer_t timer;
} braid__aux;

struct braid__pool;

/* Per-reactor state of deferreds and friends, made on first use. */
typedef struct braid__defer_state {
  braid__slab deferreds;
  braid__slab links;
  braid__slab failures;
  braid__slab aux;
  braid__deferred *reap; /* finished deferreds to free at turn end */
  int reap_scheduled;
  int tearing_down;
  struct braid_failure oom; /* handed out when a failure can't be made */
  struct braid__pool *pool; /* core/threadpool.c, NULL until first use */
} braid__defer_state;

/* The reactor's state, created if needed. NULL when out of memory. */
braid__defer_state *braid__defer_state_get(braid_reactor_t *r);

static inline braid__defer_state *braid__ds(braid_reactor_t *r) {
  return r->defer != NULL ? r->defer : braid__defer_state_get(r);
}

/* core/failure.c */
void braid__failure_init_oom(braid__defer_state *ds, braid_reactor_t *r);
/* Release heap messages of failures still alive at teardown. */
void braid__failures_teardown(braid__defer_state *ds);
static inline braid_failure_t *braid__failure_or_oom(braid_reactor_t *r,
                                                     braid_failure_t *f) {
  return f != NULL ? f : &braid__ds(r)->oom;
}

/* core/deferred.c */
void *braid__aux_alloc(braid_reactor_t *r, uint32_t kind);
void braid__aux_free(braid_reactor_t *r, void *aux);
/* The deferred a handle names, or NULL for a none or stale handle. A freed
 * slot's generation has moved past every handle made for it. */
static inline braid__deferred *braid__dget(braid_deferred_t h) {
  braid__deferred *d = h.slot_;
  return d != NULL && d->gen == h.gen_ ? d : NULL;
}
/* The handle of a live deferred. */
static inline braid_deferred_t braid__dhandle(braid__deferred *d) {
  braid_deferred_t h = {d, d->gen};
  return h;
}
void braid__result_destroy(struct braid_result *res);
/* Append a filled link (next is set here) and run it if d has fired. */
void braid__deferred_append(braid__deferred *d, braid__link *l);
/* Reference counting and cancel on slots (see the public functions). */
void braid__deferred_unref(braid__deferred *d);
void braid__deferred_cancel(braid__deferred *d);

/* core/threadpool.c: called from teardown. */
void braid__blocking_close(braid_reactor_t *r);
void braid__threadpool_teardown(braid_reactor_t *r, braid__defer_state *ds);

#endif
