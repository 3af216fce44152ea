/* POSIX signals for the readiness engine.
 *
 * Signal dispositions are process-wide by nature; this file keeps the only
 * process-wide state braid has, and keeps it small: a delivery counter per
 * signal and a table of wakeup descriptors, one per reactor that watches
 * any signal. The handler bumps the counter and writes to every registered
 * descriptor (write(2) and lock-free atomics are async-signal-safe); each
 * reactor then compares counters with what its watchers last saw. Many
 * reactors in many threads may watch the same signal; each sees it.
 *
 * The registry knows reactors only by their wakeup descriptor, so the
 * readiness engine and io_uring (which registers the eventfd it polls)
 * share it.
 *
 * A slot being released is set to -1 first, then the releaser waits until
 * no handler is inside it, so a handler can never write to a descriptor
 * number that was closed and reused. */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <string.h>
#include <unistd.h>

#include "platform/posix/engine.h"
#include "platform/posix/signal.h"

#define BRAID__SIG_MAX 65 /* signal numbers braid accepts are all below */
#define BRAID__SIG_SLOTS 64

typedef struct braid__sig_slot {
  atomic_int fd;
  atomic_int busy;
} braid__sig_slot;

static braid__sig_slot braid__sig_slots[BRAID__SIG_SLOTS];
static atomic_uint braid__sig_counts[BRAID__SIG_MAX];
static pthread_mutex_t braid__sig_lock = PTHREAD_MUTEX_INITIALIZER;
static int braid__sig_inited;
/* Guarded by braid__sig_lock: */
static int braid__sig_watchers[BRAID__SIG_MAX];
static struct sigaction braid__sig_old[BRAID__SIG_MAX];

static void braid__sig_handler(int signo) {
  int saved = errno;
  if (signo > 0 && signo < BRAID__SIG_MAX)
    atomic_fetch_add(&braid__sig_counts[signo], 1u);
  uint64_t one = 1;
  for (int i = 0; i < BRAID__SIG_SLOTS; i++) {
    braid__sig_slot *sl = &braid__sig_slots[i];
    atomic_fetch_add(&sl->busy, 1);
    int fd = atomic_load(&sl->fd);
    if (fd >= 0) {
      ssize_t n = write(fd, &one, sizeof one);
      (void)n; /* a full pipe already wakes the loop */
    }
    atomic_fetch_sub(&sl->busy, 1);
  }
  errno = saved;
}

unsigned braid__sig_count(int signo) {
  if (signo <= 0 || signo >= BRAID__SIG_MAX)
    return 0;
  return atomic_load(&braid__sig_counts[signo]);
}

static int braid__sig_claim(int fd, int *slot) {
  for (int i = 0; i < BRAID__SIG_SLOTS; i++) {
    int expect = -1;
    if (atomic_compare_exchange_strong(&braid__sig_slots[i].fd, &expect, fd)) {
      *slot = i;
      return 0;
    }
  }
  return BRAID_ELIMIT; /* more than 64 reactors watching signals */
}

static void braid__sig_release(int *slot) {
  braid__sig_slot *sl = &braid__sig_slots[*slot];
  atomic_store(&sl->fd, -1);
  while (atomic_load(&sl->busy) != 0)
    ; /* a handler is inside this slot: it finishes in a few instructions */
  *slot = -1;
}

int braid__sig_watch_fd(int wake_fd, int *slot, unsigned *refs, int signo,
                        int on) {
  if (signo <= 0 || signo >= BRAID__SIG_MAX)
    return BRAID_EINVAL;
  int rc = 0;
  pthread_mutex_lock(&braid__sig_lock);
  if (!braid__sig_inited) {
    for (int i = 0; i < BRAID__SIG_SLOTS; i++)
      atomic_store(&braid__sig_slots[i].fd, -1);
    braid__sig_inited = 1;
  }
  if (on) {
    if (*refs == 0 && (rc = braid__sig_claim(wake_fd, slot)) < 0)
      goto out;
    if (braid__sig_watchers[signo] == 0) {
      struct sigaction sa;
      memset(&sa, 0, sizeof sa);
      sa.sa_handler = braid__sig_handler;
      sigfillset(&sa.sa_mask);
      sa.sa_flags = SA_RESTART;
#ifdef SA_NOCLDSTOP
      if (signo == SIGCHLD)
        sa.sa_flags |= SA_NOCLDSTOP;
#endif
      if (sigaction(signo, &sa, &braid__sig_old[signo]) < 0) {
        rc = braid__translate_sys_error(errno);
        if (*refs == 0)
          braid__sig_release(slot);
        goto out;
      }
    }
    braid__sig_watchers[signo]++;
    (*refs)++;
  } else {
    if (--braid__sig_watchers[signo] == 0)
      sigaction(signo, &braid__sig_old[signo], NULL);
    if (--*refs == 0)
      braid__sig_release(slot);
  }
out:
  pthread_mutex_unlock(&braid__sig_lock);
  return rc;
}

int braid__sig_watch(braid__engine *e, int signo, int on) {
  return braid__sig_watch_fd(e->wake_wfd, &e->sig_slot, &e->sig_refs, signo,
                             on);
}
