/* The portable poll() poller, for any POSIX system.
 *
 * Level-triggered: a descriptor's events in the pollfd array follow the
 * engine's WANT_* bits, updated in place (no syscall) and therefore batched
 * into the next poll() for free. Removal during a batch only marks the slot
 * (fd = -1, which poll() ignores); the array is compacted before the next
 * wait, so indexes named in the running batch stay valid. */
#include <errno.h>
#include <poll.h>
#include <string.h>

#include "platform/posix/engine.h"

typedef struct braid__pollset {
  struct pollfd *fds;
  braid__sock **socks;
  size_t len, cap;
  size_t dead; /* slots marked for removal */
} braid__pollset;

static int braid__poll_init(braid__engine *e) {
  braid__pollset *ps = braid_calloc(1, sizeof *ps);
  if (ps == NULL)
    return BRAID_ENOMEM;
  e->pstate = ps;
  return 0;
}

static void braid__poll_destroy(braid__engine *e) {
  braid__pollset *ps = e->pstate;
  braid_free(ps->fds);
  braid_free(ps->socks);
  braid_free(ps);
  e->pstate = NULL;
}

static short braid__poll_events(const braid__sock *s) {
  short ev = 0;
  if (braid__cps(s)->events & BRAID__S_WANT_READ)
    ev |= POLLIN;
  if (braid__cps(s)->events & BRAID__S_WANT_WRITE)
    ev |= POLLOUT;
  return ev;
}

/* poll() reports POLLHUP and POLLERR even for a slot asking for no events,
 * which would spin the loop on a hung-up socket that nobody reads. A slot
 * with no interest therefore holds a negative descriptor, which poll()
 * skips entirely (POSIX: "If the value of fd is less than 0, events shall
 * be ignored"). */
static void braid__poll_set(struct pollfd *p, const braid__sock *s) {
  p->events = braid__poll_events(s);
  p->fd = p->events != 0 ? s->fd : -1 - s->fd;
}

static int braid__poll_add(braid__engine *e, braid__sock *s) {
  braid__pollset *ps = e->pstate;
  if (ps->len == ps->cap) {
    size_t cap = ps->cap ? ps->cap * 2 : 64;
    struct pollfd *f = braid_realloc(ps->fds, cap * sizeof *f);
    if (f == NULL)
      return BRAID_ENOMEM;
    ps->fds = f;
    braid__sock **k = braid_realloc(ps->socks, cap * sizeof *k);
    if (k == NULL)
      return BRAID_ENOMEM;
    ps->socks = k;
    ps->cap = cap;
  }
  size_t i = ps->len++;
  braid__poll_set(&ps->fds[i], s);
  ps->fds[i].revents = 0;
  ps->socks[i] = s;
  braid__ps(s)->slot = (int)i;
  return 0;
}

static void braid__poll_update(braid__engine *e, braid__sock *s) {
  braid__pollset *ps = e->pstate;
  int i = braid__ps(s)->slot;
  if (i >= 0)
    braid__poll_set(&ps->fds[i], s);
}

static void braid__poll_del(braid__engine *e, braid__sock *s) {
  braid__pollset *ps = e->pstate;
  int i = braid__ps(s)->slot;
  if (i < 0)
    return;
  ps->fds[i].fd = -1;
  ps->fds[i].events = 0;
  ps->fds[i].revents = 0;
  ps->socks[i] = NULL;
  braid__ps(s)->slot = -1;
  ps->dead++;
}

static void braid__poll_compact(braid__pollset *ps) {
  size_t j = 0;
  for (size_t i = 0; i < ps->len; i++) {
    if (ps->socks[i] == NULL)
      continue;
    ps->fds[j] = ps->fds[i];
    ps->socks[j] = ps->socks[i];
    braid__ps(ps->socks[j])->slot = (int)j;
    j++;
  }
  ps->len = j;
  ps->dead = 0;
}

static int braid__poll_wait(braid__engine *e, int64_t timeout_ns) {
  braid__pollset *ps = e->pstate;
  if (ps->dead > 0)
    braid__poll_compact(ps);
  int n = poll(ps->fds, (nfds_t)ps->len, braid__timeout_ms(timeout_ns));
  if (n < 0)
    return errno == EINTR ? 0 : braid__translate_sys_error(errno);
  /* Slots added by callbacks during this loop start with revents 0. */
  size_t len = ps->len;
  for (size_t i = 0; i < len && n > 0; i++) {
    short got = ps->fds[i].revents;
    if (got == 0 || ps->socks[i] == NULL)
      continue;
    n--;
    ps->fds[i].revents = 0;
    unsigned ev = 0;
    if (got & POLLIN)
      ev |= BRAID__EV_READ;
    if (got & POLLOUT)
      ev |= BRAID__EV_WRITE;
    if (got & (POLLERR | POLLHUP | POLLNVAL))
      ev |= BRAID__EV_ERROR;
#ifdef POLLRDHUP
    if (got & POLLRDHUP)
      ev |= BRAID__EV_HUP;
#endif
    braid__engine_ready(e, ps->socks[i], ev);
  }
  return 0;
}

static int braid__poll_fd(const braid__engine *e) {
  (void)e;
  return -1; /* poll() has no kernel object to hand to a host loop */
}

const braid__poller braid__poller_poll = {
    .name = "poll",
    .caps = 0,
    .init = braid__poll_init,
    .destroy = braid__poll_destroy,
    .add = braid__poll_add,
    .update = braid__poll_update,
    .del = braid__poll_del,
    .wait = braid__poll_wait,
    .fd = braid__poll_fd,
};
