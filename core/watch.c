/* Watching borrowed descriptors (braid/watch.h): the public face of the
 * POSIX engine's watch extension (platform/posix/watch.h), which has the
 * semantics; this file adds the allocation, the argument checks and the
 * stop at reactor teardown. Other I/O layers have no watches. */
#include "braid/watch.h"
#include "core/internal.h"

#ifndef _WIN32

#include "platform/posix/watch.h"

struct braid_watch {
  braid__posix_watch pw; /* the engine's record */
  braid_teardown_t td;   /* stops the watch if the reactor goes first */
  braid_watch_cb cb;
  void *arg;
};

bool braid_watch_supported(const braid_reactor_t *r) {
  return braid__posix_watch_supported(r) != 0;
}

static void braid__watch_event(braid__posix_watch *pw, unsigned ev) {
  braid_watch_t *w = BRAID_CONTAINER_OF(pw, braid_watch_t, pw);
  /* The engine's bits are the public ones (checked below). */
  w->cb(w, ev, w->arg);
}

_Static_assert(BRAID__WATCH_READ == BRAID_WATCH_READ &&
                   BRAID__WATCH_WRITE == BRAID_WATCH_WRITE &&
                   BRAID__WATCH_ERROR == BRAID_WATCH_ERROR &&
                   BRAID__WATCH_HUP == BRAID_WATCH_HUP,
               "the engine's watch bits are braid/watch.h's");

/* The engine no longer names the record: the memory can go. */
static void braid__watch_stopped(braid__posix_watch *pw) {
  braid_free(BRAID_CONTAINER_OF(pw, braid_watch_t, pw));
}

static void braid__watch_teardown(braid_teardown_t *td) {
  braid_watch_t *w = BRAID_CONTAINER_OF(td, braid_watch_t, td);
  braid__posix_watch_stop(&w->pw, braid__watch_stopped);
}

int braid_watch_start(braid_reactor_t *r, int fd, unsigned events,
                      braid_watch_cb cb, void *arg, braid_watch_t **out) {
  if (out != NULL)
    *out = NULL;
  if (r == NULL || fd < 0 || cb == NULL || out == NULL)
    return BRAID_EINVAL;
  if (!braid__posix_watch_supported(r))
    return BRAID_ENOTSUP;
  braid_watch_t *w = braid_calloc(1, sizeof *w);
  if (w == NULL)
    return BRAID_ENOMEM;
  w->cb = cb;
  w->arg = arg;
  int rc = braid__posix_watch_start(
      r, &w->pw, fd, events & (BRAID_WATCH_READ | BRAID_WATCH_WRITE),
      braid__watch_event);
  if (rc < 0) {
    braid_free(w); /* never registered: nothing names it */
    return rc;
  }
  braid_teardown_add(r, &w->td, braid__watch_teardown);
  *out = w;
  return 0;
}

int braid_watch_set(braid_watch_t *w, unsigned events) {
  if (w == NULL)
    return BRAID_EINVAL;
  braid__posix_watch_set(&w->pw,
                         events & (BRAID_WATCH_READ | BRAID_WATCH_WRITE));
  return 0;
}

void braid_watch_stop(braid_watch_t *w) {
  if (w == NULL)
    return;
  braid_teardown_remove(&w->td);
  braid__posix_watch_stop(&w->pw, braid__watch_stopped);
}

#else /* _WIN32: IOCP has no readiness to watch. */

bool braid_watch_supported(const braid_reactor_t *r) {
  (void)r;
  return false;
}

int braid_watch_start(braid_reactor_t *r, int fd, unsigned events,
                      braid_watch_cb cb, void *arg, braid_watch_t **out) {
  (void)events, (void)arg;
  if (out != NULL)
    *out = NULL;
  if (r == NULL || fd < 0 || cb == NULL || out == NULL)
    return BRAID_EINVAL;
  return BRAID_ENOTSUP;
}

int braid_watch_set(braid_watch_t *w, unsigned events) {
  (void)w, (void)events;
  return BRAID_EINVAL; /* no watch can exist */
}

void braid_watch_stop(braid_watch_t *w) {
  (void)w;
}

#endif
