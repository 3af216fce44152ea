/* The kqueue poller: FreeBSD, macOS, OpenBSD, NetBSD, DragonFly; on Linux
 * against libkqueue, to run the test suite on kqueue semantics.
 *
 * Every descriptor gets EVFILT_READ and EVFILT_WRITE once, with EV_CLEAR
 * (edge-triggered, BRAID__POLL_EDGE): the engine keeps its own readiness
 * bits, so no change is needed while a connection lives. Registrations are
 * queued in a changelist and handed to the kernel by the next waiting
 * kevent(), so accepting a connection costs no syscall of its own. Only
 * EV_DELETE is applied at once, because the engine closes the descriptor
 * right after del(). The changelist holds at most BRAID__KQ_FLUSH changes:
 * a full one is handed over early (braid__kq_flush), so del(), which
 * drops a closing socket's changes still queued, scans a bounded list. It
 * was unbounded, and opening and closing N sockets within one turn cost
 * O(N^2).
 *
 * Quotes are from FreeBSD's kqueue(2). This file relies on FreeBSD's
 * semantics only; where libkqueue differs (signals coalesce, SO_ERROR is
 * consumed, a descriptor closed without EV_DELETE leaves stale state,
 * EVFILT_WRITE's data counts queued bytes), nothing here depends on it.
 *
 * Signals do not use EVFILT_SIGNAL; they keep signal.c's handler and
 * self-pipe, as on Linux. EVFILT_SIGNAL "has a lower precedence" than
 * sigaction() and only records deliveries, so braid would still have to
 * install a disposition to stop SIGTERM or SIGINT from killing the
 * process, and that handler's write(2) is then the whole cost of the pipe:
 * one write and one read per burst of signals. The handler also keeps the
 * process-wide counters every poller shares (tested on Linux), where
 * EVFILT_SIGNAL's per-kqueue counts would need a second scheme; and
 * libkqueue builds it on signalfd, which needs the signal blocked in every
 * thread. */
#include <sys/types.h> /* before <sys/event.h>: FreeBSD < 12 needs it */

#include <sys/event.h>
#include <sys/time.h>

#include <errno.h>
#include <stdint.h>
#include <time.h>
#include <unistd.h>

#include "platform/posix/engine.h"

/* -DBRAID_KQUEUE_NO_EVFILT_USER builds the pipe wakeup of systems without
 * EVFILT_USER, to test that path where EVFILT_USER exists. */
#if defined(EVFILT_USER) && !defined(BRAID_KQUEUE_NO_EVFILT_USER)
#define BRAID__KQ_USER 1
#else
#define BRAID__KQ_USER 0
#endif

#define BRAID__KQ_BATCH 256
#define BRAID__KQ_FLUSH 256 /* changes queued before an early flush */
#ifdef EV_RECEIPT
#define BRAID__KQ_RECEIPT EV_RECEIPT
#else
#define BRAID__KQ_RECEIPT 0
#endif
#define BRAID__KQ_MAX_WAIT_NS (INT64_C(86400) * 1000000000)

/* The ident of the wakeup's EVFILT_USER event; no descriptor clashes with
 * it because EVFILT_USER idents are a namespace of their own. */
#define BRAID__KQ_WAKE_IDENT 0

/* NetBSD before 10 declares udata as intptr_t, everyone else as void *. */
#if defined(__NetBSD__) && !defined(__NetBSD_Version__)
#include <sys/param.h>
#endif
#if defined(__NetBSD__) && __NetBSD_Version__ < 1000000000
#define BRAID__KQ_UDATA(p) ((intptr_t)(void *)(p))
#define BRAID__KQ_PTR(kev) ((void *)(kev)->udata)
#else
#define BRAID__KQ_UDATA(p) ((void *)(p))
#define BRAID__KQ_PTR(kev) ((kev)->udata)
#endif

typedef struct braid__kq {
  int kq;
  int nchanges; /* queued registrations, flushed by wait() */
  /* Changes the kernel refused when the changelist was flushed early:
   * reported by the next wait() with its events, as they would have been
   * had wait() flushed them (growable; rare). */
  int nfailed, fcap;
  struct kevent *failed;
  struct kevent changes[BRAID__KQ_FLUSH];
  struct kevent receipts[BRAID__KQ_FLUSH]; /* of an early flush */
  struct kevent events[BRAID__KQ_BATCH];
} braid__kq;

static int braid__kq_init(braid__engine *e) {
  braid__kq *k = braid_malloc(sizeof *k);
  if (k == NULL)
    return BRAID_ENOMEM;
  k->nchanges = 0;
  k->nfailed = k->fcap = 0;
  k->failed = NULL;
  /* No close-on-exec needed: "The queue is not inherited by a child
   * created with fork(2)." */
  k->kq = kqueue();
  if (k->kq < 0) {
    int rc = braid__translate_sys_error(errno);
    braid_free(k);
    return rc;
  }
  e->pstate = k;
#if BRAID__KQ_USER
  /* FreeBSD 8.1, macOS 10.6, NetBSD 10, libkqueue: wake from other
   * threads with NOTE_TRIGGER instead of a pipe. EV_CLEAR resets the
   * trigger when the event is returned. Where the kernel refuses it, the
   * engine falls back to its pipe. */
  struct kevent kev;
  EV_SET(&kev, BRAID__KQ_WAKE_IDENT, EVFILT_USER, EV_ADD | EV_CLEAR, 0, 0,
         BRAID__KQ_UDATA(NULL));
  if (kevent(k->kq, &kev, 1, NULL, 0, NULL) == 0)
    e->poller_wakes = 1;
#endif
  return 0;
}

static void braid__kq_destroy(braid__engine *e) {
  braid__kq *k = e->pstate;
  close(k->kq);
  braid_free(k->failed);
  braid_free(k);
  e->pstate = NULL;
}

/* A change the kernel refused, for the next wait() to report. */
static void braid__kq_failed(braid__kq *k, const struct kevent *kev, int err) {
  if (k->nfailed == k->fcap) {
    int cap = k->fcap ? k->fcap * 2 : 16;
    struct kevent *f = braid_realloc(k->failed, (size_t)cap * sizeof *f);
    if (f == NULL)
      return; /* it only woke a direction for a retry (braid__kq_event) */
    k->failed = f;
    k->fcap = cap;
  }
  struct kevent *f = &k->failed[k->nfailed++];
  *f = *kev;
  f->flags = EV_ERROR;
  f->data = err;
}

/* Apply the changelist one change at a time, keeping the failures. */
static void braid__kq_apply_each(braid__kq *k) {
  int n = k->nchanges;
  k->nchanges = 0;
  for (int i = 0; i < n; i++) {
    struct kevent kev = k->changes[i];
    kev.flags &= ~BRAID__KQ_RECEIPT;
    if (kevent(k->kq, &kev, 1, NULL, 0, NULL) < 0 && errno != EINTR)
      braid__kq_failed(k, &kev, errno);
  }
}

/* Hand the changelist to the kernel now, outside wait(): no events are
 * taken and nothing is reported until the next wait(). With EV_RECEIPT,
 * "When passed as input, it forces EV_ERROR to always be returned": one
 * receipt per change, in one kevent(), and no pending event is drained. */
static void braid__kq_flush(braid__kq *k) {
#ifdef EV_RECEIPT
  int n = k->nchanges;
  for (int i = 0; i < n; i++)
    k->changes[i].flags |= EV_RECEIPT;
  static const struct timespec zero = {0, 0};
  struct kevent *rcpt = k->receipts;
  int got = kevent(k->kq, k->changes, n, rcpt, n, &zero);
  if (got >= 0 || errno == EINTR) {
    k->nchanges = 0;
    for (int i = 0; i < got; i++)
      if ((rcpt[i].flags & EV_ERROR) && rcpt[i].data != 0)
        braid__kq_failed(k, &rcpt[i], (int)rcpt[i].data);
    return;
  }
#endif
  braid__kq_apply_each(k);
}

/* Queue n changes, all or nothing: a registration is never split between
 * two flushes (see braid__kq_del). */
static void braid__kq_queue(braid__kq *k, const struct kevent *kev, int n) {
  if (k->nchanges + n > BRAID__KQ_FLUSH)
    braid__kq_flush(k);
  for (int i = 0; i < n; i++)
    k->changes[k->nchanges++] = kev[i];
}

/* A watch of a borrowed descriptor (BRAID__F_LEVEL): both filters without
 * EV_CLEAR, so they stay level-triggered, enabled as WANT_* says. Queued
 * like every registration. */
static void braid__kq_level(braid__kq *k, braid__sock *s, unsigned add) {
  struct kevent kev[2];
  unsigned r =
      (braid__cps(s)->events & BRAID__S_WANT_READ) ? EV_ENABLE : EV_DISABLE;
  unsigned w =
      (braid__cps(s)->events & BRAID__S_WANT_WRITE) ? EV_ENABLE : EV_DISABLE;
  EV_SET(&kev[0], (uintptr_t)s->fd, EVFILT_WRITE, add | w, 0, 0,
         BRAID__KQ_UDATA(s));
  EV_SET(&kev[1], (uintptr_t)s->fd, EVFILT_READ, add | r, 0, 0,
         BRAID__KQ_UDATA(s));
  braid__kq_queue(k, kev, 2);
}

static int braid__kq_add(braid__engine *e, braid__sock *s) {
  braid__kq *k = e->pstate;
  struct kevent kev[2];
  int n = 0;
  if (braid__cps(s)->flags & BRAID__F_LEVEL) {
    braid__kq_level(k, s, EV_ADD);
    return 0;
  }
  /* The wakeup pipe's read end is never written to; on FreeBSD,
   * EVFILT_WRITE on it would watch the other end. */
  if (!(braid__cps(s)->flags & BRAID__F_WAKE))
    EV_SET(&kev[n++], (uintptr_t)s->fd, EVFILT_WRITE, EV_ADD | EV_CLEAR, 0, 0,
           BRAID__KQ_UDATA(s));
  /* The read filter goes last. kqueue(2) does not care, but libkqueue
   * (2.7, Linux) merges both filters into one epoll registration that
   * keeps EPOLLRDHUP only when the read filter is added last; without it,
   * data and a FIN that arrived together come without EV_EOF, and after
   * the short read that drains the data no edge ever announces the end of
   * input. */
  EV_SET(&kev[n++], (uintptr_t)s->fd, EVFILT_READ, EV_ADD | EV_CLEAR, 0, 0,
         BRAID__KQ_UDATA(s));
  braid__kq_queue(k, kev, n);
  /* An EV_ADD checks the filter at once, so readiness that arrived before
   * the changelist is flushed is reported by that kevent(): no edge is
   * lost. */
  return 0;
}

static void braid__kq_update(braid__engine *e, braid__sock *s) {
  /* Only level watches (BRAID__F_LEVEL) get here: sockets are registered
   * once with EV_CLEAR (BRAID__POLL_EDGE). */
  if (braid__cps(s)->flags & BRAID__F_LEVEL)
    braid__kq_level(e->pstate, s, 0);
}

/* Drop the entries of list[0..*n) that name s; whether there were any. */
static int braid__kq_forget(struct kevent *list, int *n, braid__sock *s) {
  int found = 0, j = 0;
  for (int i = 0; i < *n; i++) {
    if (BRAID__KQ_PTR(&list[i]) == (void *)s) {
      found = 1;
      continue;
    }
    list[j++] = list[i];
  }
  *n = j;
  return found;
}

static void braid__kq_del(braid__engine *e, braid__sock *s) {
  braid__kq *k = e->pstate;
  /* A registration still in the changelist never reached the kernel: drop
   * it, so that it is not applied to a reused descriptor number. Both
   * lists are short: the changelist is bounded (BRAID__KQ_FLUSH), refused
   * changes are rare. */
  int queued = braid__kq_forget(k->changes, &k->nchanges, s);
  braid__kq_forget(k->failed, &k->nfailed, s);
  /* fd -1: a watch whose descriptor was closed (and maybe reused) under
   * it; the kernel dropped its knotes at close. A socket's registration is
   * queued whole, so one with changes queued has none in the kernel; not
   * so a level watch, whose update()s queue more after its add() may have
   * been flushed: it is deleted either way (ENOENT is harmless). */
  if (s->fd < 0 || (queued && !(braid__cps(s)->flags & BRAID__F_LEVEL)))
    return;
  /* "Calling close() on a file descriptor will remove any kevents that
   * reference the descriptor", so on the BSDs this is belt and braces;
   * libkqueue keeps stale state for a descriptor closed without it. It
   * cannot wait for the next kevent(): the engine closes fd next. */
  struct kevent kev[2];
  int n = 0;
  EV_SET(&kev[n++], (uintptr_t)s->fd, EVFILT_READ, EV_DELETE, 0, 0,
         BRAID__KQ_UDATA(NULL));
  if (!(braid__cps(s)->flags & BRAID__F_WAKE))
    EV_SET(&kev[n++], (uintptr_t)s->fd, EVFILT_WRITE, EV_DELETE, 0, 0,
           BRAID__KQ_UDATA(NULL));
#ifdef EV_RECEIPT
  /* "When passed as input, it forces EV_ERROR to always be returned": one
   * receipt per change, so a failed first delete cannot stop the second
   * and no pending event is drained into this call. */
  struct kevent rcpt[2];
  for (int i = 0; i < n; i++)
    kev[i].flags |= EV_RECEIPT;
  static const struct timespec zero = {0, 0};
  kevent(k->kq, kev, n, rcpt, n, &zero);
#else
  for (int i = 0; i < n; i++)
    kevent(k->kq, &kev[i], 1, NULL, 0, NULL);
#endif
}

/* What one returned kevent means to the engine. */
static void braid__kq_event(braid__engine *e, const struct kevent *kev) {
  braid__sock *s = BRAID__KQ_PTR(kev);
#if BRAID__KQ_USER
  if (kev->filter == EVFILT_USER) {
    braid__engine_woken(e);
    return;
  }
#endif
  if (s == NULL)
    return;
  if (kev->flags & EV_ERROR) {
    /* A queued registration failed: "the event will be placed in the
     * eventlist with EV_ERROR set in flags and the system error in data".
     * Wake that direction, so that its pending ops retry their syscalls
     * and fail with the descriptor's error if it has one. Not a hang-up:
     * FreeBSD refuses EVFILT_WRITE on some descriptors (the read end of a
     * pipe) that are otherwise fine. */
    if (kev->data != 0)
      braid__engine_ready(
          e, s, kev->filter == EVFILT_READ ? BRAID__EV_READ : BRAID__EV_WRITE);
    return;
  }
  unsigned ev = 0;
  if (kev->filter == EVFILT_READ) {
    ev |= BRAID__EV_READ;
    /* "If the read direction of the socket has shutdown, then the filter
     * also sets EV_EOF in flags, and returns the socket error (if any) in
     * fflags. It is possible for EOF to be returned while there is still
     * data pending": HUP, not ERROR, so the data is read first. */
    if (kev->flags & EV_EOF)
      ev |= BRAID__EV_HUP;
  } else if (kev->filter == EVFILT_WRITE) {
    /* EV_EOF here means no more can be sent: the peer is gone or this
     * side shut down writing. A write then fails with EPIPE, and the read
     * filter reports the peer's end of input on its own. */
    ev |= BRAID__EV_WRITE;
  } else {
    return;
  }
  /* "For sockets, the low water mark and socket error handling is
   * identical to the EVFILT_READ case": a failed connect shows up as
   * EV_EOF on EVFILT_WRITE with the error in fflags. */
  if ((kev->flags & EV_EOF) && kev->fflags != 0) {
    braid__engine_sock_error(s, (int)kev->fflags);
    ev |= BRAID__EV_ERROR;
  }
  braid__engine_ready(e, s, ev);
}

static int braid__kq_wait(braid__engine *e, int64_t timeout_ns) {
  braid__kq *k = e->pstate;
  /* kevent() takes a timespec: timers are waited for to the nanosecond,
   * not rounded up to a millisecond as with epoll_wait() and poll(). Waits
   * are capped at 24 hours, as FreeBSD does by itself ("longer timeouts
   * will be silently reinterpreted as 24 hours"): the other systems do not
   * all document their limit, and a capped wait only costs the loop one
   * more iteration a day. */
  struct timespec ts, *tp = NULL;
  if (timeout_ns > BRAID__KQ_MAX_WAIT_NS)
    timeout_ns = BRAID__KQ_MAX_WAIT_NS;
  if (timeout_ns >= 0) {
    ts.tv_sec = (time_t)(timeout_ns / 1000000000);
    ts.tv_nsec = (long)(timeout_ns % 1000000000);
    tp = &ts;
  }
  int nchanges = k->nchanges;
  int n = kevent(k->kq, k->changes, nchanges, k->events, BRAID__KQ_BATCH, tp);
  int rc = 0;
  if (n < 0) {
    int err = errno;
    n = 0;
    /* "When kevent() call fails with EINTR error, all changes in the
     * changelist have been applied." Otherwise with changes queued and no
     * room to report which one failed (more than a batch of errors):
     * apply them one at a time and report the failures. */
    if (err == EINTR)
      k->nchanges = 0;
    else if (nchanges > 0)
      braid__kq_apply_each(k);
    else
      rc = braid__translate_sys_error(err);
  } else {
    k->nchanges = 0;
  }
  /* Changes refused by an early flush or one at a time, then the events.
   * A callback may queue new registrations (or flush them early) and close
   * sockets named later in this batch; the engine skips events for
   * closing sockets, whose memory lives until the end of the engine's
   * wait(). */
  while (k->nfailed > 0) {
    struct kevent kev = k->failed[--k->nfailed];
    braid__kq_event(e, &kev);
  }
  for (int i = 0; i < n; i++)
    braid__kq_event(e, &k->events[i]);
  return rc;
}

static int braid__kq_fd(const braid__engine *e) {
  return ((const braid__kq *)e->pstate)->kq;
}

static int braid__kq_pending(const braid__engine *e) {
  const braid__kq *k = e->pstate;
  return k->nchanges > 0 || k->nfailed > 0;
}

#if BRAID__KQ_USER
static void braid__kq_wake(braid__engine *e) {
  /* Called from any thread. kevent() on one kqueue from several threads
   * is safe in the kernel and in libkqueue; this touches no changelist. */
  braid__kq *k = e->pstate;
  struct kevent kev;
  EV_SET(&kev, BRAID__KQ_WAKE_IDENT, EVFILT_USER, 0, NOTE_TRIGGER, 0,
         BRAID__KQ_UDATA(NULL));
  int rc;
  do
    rc = kevent(k->kq, &kev, 1, NULL, 0, NULL);
  while (rc < 0 && errno == EINTR);
}
#endif

const braid__poller braid__poller_kqueue = {
    .name = "kqueue",
    /* EV_CLEAR: reported once per change of state. */
    .caps = BRAID__POLL_EDGE,
    /* kqueue(), and the EVFILT_USER wakeup where the system has it. */
    .init = braid__kq_init,
    /* close(kq), which drops every registration left. */
    .destroy = braid__kq_destroy,
    /* Queue EVFILT_READ and EVFILT_WRITE with EV_CLEAR for the next wait. */
    .add = braid__kq_add,
    /* Unused by edge pollers. */
    .update = braid__kq_update,
    /* EV_DELETE at once (the descriptor is closed next). */
    .del = braid__kq_del,
    /* Flush the changelist and wait, in one kevent(). */
    .wait = braid__kq_wait,
    /* The kqueue descriptor, pollable for readability by a host loop.
     * Registrations queued since the last wait() are not in it yet: an
     * embedding API must flush them (a wait with timeout 0) before the
     * host blocks on it, as libuv's uv_backend_fd() users must. */
    .fd = braid__kq_fd,
    /* Registrations still in the changelist, or refused ones to report:
     * an embedding host must let braid run (braid_embed_timeout() says 0)
     * before it blocks on fd. */
    .pending = braid__kq_pending,
#if BRAID__KQ_USER
    /* NOTE_TRIGGER on the EVFILT_USER event, from any thread. */
    .wake = braid__kq_wake,
#else
    /* No EVFILT_USER in <sys/event.h> (NetBSD before 10, for one): the
     * engine's pipe wakes kevent(). */
    .wake = NULL,
#endif
};
