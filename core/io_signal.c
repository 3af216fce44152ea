/* The process-wide signal registry (core/io.h), shared by every platform.
 *
 * Signal dispositions (and Windows' console control events) are
 * process-wide by nature; this file keeps the only process-wide state braid
 * has, and keeps it small: a delivery counter per signal and a table of
 * wakeup targets, one per reactor that watches any signal. The platform's
 * handler calls braid__sig_deliver(), which bumps the counter and wakes
 * every registered target through braid__sig_notify() (on POSIX a write(2),
 * which with lock-free atomics is all a signal handler may do); each
 * reactor then compares counters with what its watchers last saw. Many
 * reactors in many threads may watch the same signal; each sees it.
 *
 * A slot being released is emptied first, then the releaser waits until no
 * handler is inside it, so a handler never wakes a target (a descriptor
 * number) that was closed and reused. */
#include <stdatomic.h>

#include "core/internal.h"

#define BRAID__SIG_SLOTS 64
#define BRAID__SIG_FREE ((intptr_t)-1)

typedef struct braid__sig_slot {
  _Atomic intptr_t target;
  atomic_int busy;
} braid__sig_slot;

static braid__sig_slot braid__sig_slots[BRAID__SIG_SLOTS];
static atomic_uint braid__sig_counts[BRAID__SIG_MAX];
static braid__mutex braid__sig_lock = BRAID__MUTEX_INIT;
/* Guarded by braid__sig_lock: */
static int braid__sig_inited;
static int braid__sig_watchers[BRAID__SIG_MAX];

void braid__sig_deliver(int signo) {
  if (signo > 0 && signo < BRAID__SIG_MAX)
    atomic_fetch_add(&braid__sig_counts[signo], 1u);
  for (int i = 0; i < BRAID__SIG_SLOTS; i++) {
    braid__sig_slot *sl = &braid__sig_slots[i];
    atomic_fetch_add(&sl->busy, 1);
    intptr_t t = atomic_load(&sl->target);
    if (t != BRAID__SIG_FREE)
      braid__sig_notify(t);
    atomic_fetch_sub(&sl->busy, 1);
  }
}

unsigned braid__io_signal_count(braid_reactor_t *r, int signo) {
  BRAID__UNUSED(r);
  if (signo <= 0 || signo >= BRAID__SIG_MAX)
    return 0;
  return atomic_load(&braid__sig_counts[signo]);
}

static int braid__sig_claim(braid_reactor_t *r, intptr_t target) {
  for (int i = 0; i < BRAID__SIG_SLOTS; i++) {
    intptr_t expect = BRAID__SIG_FREE;
    if (atomic_compare_exchange_strong(&braid__sig_slots[i].target, &expect,
                                       target)) {
      r->sig_slot = i;
      return 0;
    }
  }
  return BRAID_ELIMIT; /* more than 64 reactors watching signals */
}

static void braid__sig_release(braid_reactor_t *r) {
  braid__sig_slot *sl = &braid__sig_slots[r->sig_slot];
  atomic_store(&sl->target, BRAID__SIG_FREE);
  while (atomic_load(&sl->busy) != 0)
    ; /* a handler is inside this slot: it finishes in a few instructions */
  r->sig_slot = -1;
}

int braid__sig_watch(braid_reactor_t *r, intptr_t target, int signo, int on) {
  if (signo <= 0 || signo >= BRAID__SIG_MAX)
    return BRAID_EINVAL;
  int rc = 0;
  braid__mutex_lock(&braid__sig_lock);
  if (!braid__sig_inited) {
    for (int i = 0; i < BRAID__SIG_SLOTS; i++)
      atomic_store(&braid__sig_slots[i].target, BRAID__SIG_FREE);
    braid__sig_inited = 1;
  }
  if (on) {
    if (r->sig_refs == 0 && (rc = braid__sig_claim(r, target)) < 0)
      goto out;
    if (braid__sig_watchers[signo] == 0 &&
        (rc = braid__sig_install(signo)) < 0) {
      if (r->sig_refs == 0)
        braid__sig_release(r);
      goto out;
    }
    braid__sig_watchers[signo]++;
    r->sig_refs++;
  } else if (r->sig_refs > 0) {
    if (--braid__sig_watchers[signo] == 0)
      braid__sig_uninstall(signo);
    if (--r->sig_refs == 0)
      braid__sig_release(r);
  }
out:
  braid__mutex_unlock(&braid__sig_lock);
  return rc;
}
