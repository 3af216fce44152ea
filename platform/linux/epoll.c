/* The epoll poller (Linux 2.6.27+ for epoll_create1).
 *
 * Every descriptor is registered once, edge-triggered, for both directions
 * (EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET): the engine keeps its own
 * readiness bits and clears them on EAGAIN, so no epoll_ctl(MOD) is ever
 * needed while a connection lives. One ADD and one DEL per descriptor. */
#include <errno.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <time.h>
#include <unistd.h>

#include "core/config.h"

#include "platform/posix/engine.h"

#define BRAID__EPOLL_BATCH 256

typedef struct braid__epoll {
  int epfd;
  int no_pwait2; /* the kernel lacks epoll_pwait2 (before Linux 5.11) */
  struct epoll_event events[BRAID__EPOLL_BATCH];
} braid__epoll;

static int braid__epoll_init(braid__engine *e) {
  braid__epoll *ep = braid_malloc(sizeof *ep);
  if (ep == NULL)
    return BRAID_ENOMEM;
  ep->no_pwait2 = 0;
  ep->epfd = epoll_create1(EPOLL_CLOEXEC);
  if (ep->epfd < 0) {
    int rc = braid__translate_sys_error(errno);
    braid_free(ep);
    return rc;
  }
  e->pstate = ep;
  return 0;
}

static void braid__epoll_destroy(braid__engine *e) {
  braid__epoll *ep = e->pstate;
  close(ep->epfd);
  braid_free(ep);
  e->pstate = NULL;
}

/* A watch of a borrowed descriptor (BRAID__F_LEVEL) is level-triggered
 * for its WANT_* bits, since nobody tells the engine when its owner has
 * drained it; everything else is edge-triggered for both directions. */
static uint32_t braid__epoll_mask(const braid__sock *s) {
  /* The wakeup eventfd is only ever read. Watching it for EPOLLOUT too
   * would queue a spurious event after every drain, since reading an
   * eventfd makes it writable again, a new edge: one extra trip through
   * epoll_wait per wakeup, and an embedding host would see braid's
   * descriptor readable right after braid ran. */
  const braid__psock *ps = braid__cps(s);
  if (ps->flags & BRAID__F_WAKE)
    return EPOLLIN | EPOLLET;
  if (!(ps->flags & BRAID__F_LEVEL))
    return EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET;
  return ((ps->events & BRAID__S_WANT_READ) ? (uint32_t)EPOLLIN : 0u) |
         ((ps->events & BRAID__S_WANT_WRITE) ? (uint32_t)EPOLLOUT : 0u);
}

static int braid__epoll_add(braid__engine *e, braid__sock *s) {
  braid__epoll *ep = e->pstate;
  struct epoll_event ev;
  ev.events = braid__epoll_mask(s);
  ev.data.ptr = s;
  if (epoll_ctl(ep->epfd, EPOLL_CTL_ADD, s->fd, &ev) < 0)
    return braid__translate_sys_error(errno);
  return 0;
}

static void braid__epoll_update(braid__engine *e, braid__sock *s) {
  /* Only level watches (BRAID__F_LEVEL) get here: sockets are
   * edge-triggered (BRAID__POLL_EDGE) and never change interest. */
  braid__epoll *ep = e->pstate;
  struct epoll_event ev;
  ev.events = braid__epoll_mask(s);
  ev.data.ptr = s;
  epoll_ctl(ep->epfd, EPOLL_CTL_MOD, s->fd, &ev);
}

static void braid__epoll_del(braid__engine *e, braid__sock *s) {
  braid__epoll *ep = e->pstate;
  /* Kernels before 2.6.9 require a non-NULL event pointer even for DEL. A
   * descriptor that was dup()ed stays in the interest list after close(),
   * so remove it explicitly rather than rely on close. */
  struct epoll_event ev = {0};
  if (s->fd >= 0) /* -1: a watch whose descriptor was closed under it */
    epoll_ctl(ep->epfd, EPOLL_CTL_DEL, s->fd, &ev);
}

static int braid__epoll_wait(braid__engine *e, int64_t timeout_ns) {
  braid__epoll *ep = e->pstate;
  int n = -1;
#if BRAID_HAVE_EPOLL_PWAIT2
  /* epoll_wait counts in milliseconds, so a timer due in 200 us would be
   * fired up to 1 ms late; epoll_pwait2 (Linux 5.11) takes nanoseconds. */
  if (timeout_ns > 0 && !ep->no_pwait2) {
    struct timespec ts;
    ts.tv_sec = (time_t)(timeout_ns / 1000000000);
    ts.tv_nsec = (long)(timeout_ns % 1000000000);
    n = epoll_pwait2(ep->epfd, ep->events, BRAID__EPOLL_BATCH, &ts, NULL);
    if (n < 0 && errno == ENOSYS)
      ep->no_pwait2 = 1;
  }
  if (timeout_ns <= 0 || ep->no_pwait2)
#endif
    n = epoll_wait(ep->epfd, ep->events, BRAID__EPOLL_BATCH,
                   braid__timeout_ms(timeout_ns));
  if (n < 0)
    return errno == EINTR ? 0 : braid__translate_sys_error(errno);
  for (int i = 0; i < n; i++) {
    uint32_t got = ep->events[i].events;
    unsigned ev = 0;
    if (got & EPOLLIN)
      ev |= BRAID__EV_READ;
    if (got & EPOLLRDHUP)
      ev |= BRAID__EV_HUP;
    if (got & EPOLLOUT)
      ev |= BRAID__EV_WRITE;
    if (got & (EPOLLERR | EPOLLHUP))
      ev |= BRAID__EV_ERROR;
    braid__engine_ready(e, ep->events[i].data.ptr, ev);
  }
  return 0;
}

static int braid__epoll_fd(const braid__engine *e) {
  return ((const braid__epoll *)e->pstate)->epfd;
}

const braid__poller braid__poller_epoll = {
    .name = "epoll",
    .caps = BRAID__POLL_EDGE,
    .init = braid__epoll_init,
    .destroy = braid__epoll_destroy,
    .add = braid__epoll_add,
    .update = braid__epoll_update,
    .del = braid__epoll_del,
    .wait = braid__epoll_wait,
    .fd = braid__epoll_fd,
};
