/* Child processes (braid/process.h): the argument checks, the reactor's
 * list of children, the protocols of their pipes and the delivery of
 * their ends. The system calls (posix_spawn, waitpid, kill, pipes) are the
 * platform's: core/process_platform.h.
 *
 * Each child's pipes are ordinary pipe transports (core/stream.c).
 *
 * Reaping: the reactor watches SIGCHLD while it has children running and
 * asks for each of its own pids (waitpid(pid, WNOHANG)), never for any
 * child, so the exit of a child that someone else started stays theirs. A
 * pidfd (Linux 5.3+) would save the scan over the children; not done yet.
 *
 * Windows: the I/O layer has no BRAID__CAP_PIPE, so spawning returns
 * BRAID_ENOTSUP and no process ever exists there.
 */
#include "braid/process.h"

#include <string.h>

#include "core/internal.h"
#include "core/process_platform.h"

struct braid_process {
  braid_reactor_t *r;
  struct braid_process *next, *prev;
  braid__handle h;
  long pid;   /* -1 once reaped */
  int status; /* when reaped */
  uint8_t reaped;
  unsigned flags;
  braid_process_ended_cb ended;
  void *arg;
  braid_deferred_t *defs; /* fired with the status */
  size_t ndefs;
};

typedef struct braid__procs {
  braid_signal_t sigchld;
  braid_process_t head; /* sentinel of the live list */
  size_t n;
} braid__procs;

static void braid__procs_unlink(braid_process_t *p) {
  braid__procs *ps = p->r->procs;
  p->prev->next = p->next;
  p->next->prev = p->prev;
  p->next = p->prev = p;
  ps->n--;
  p->r->active_io--;
  braid__handle_remove(&p->h);
  if (ps->n == 0) {
    /* No child left: give SIGCHLD's disposition back. */
    braid_signal_stop(&ps->sigchld);
    p->r->procs = NULL;
    braid_free(ps);
  }
}

static void braid__proc_free(braid_process_t *p) {
  braid_free(p->defs);
  braid_free(p);
}

static void braid__proc_ended(braid_process_t *p, int status) {
  braid__procs_unlink(p);
  if (p->ended != NULL)
    p->ended(p, status, p->arg);
  for (size_t i = 0; i < p->ndefs; i++)
    (void)braid_deferred_callback(p->defs[i], (void *)(intptr_t)status, NULL);
  braid__proc_free(p);
}

/* SIGCHLD (coalesced): ask each of our own children, by pid. The ones that
 * ended are moved to a list of their own first, so that callbacks that
 * spawn or reap others do not disturb the scan. */
static void braid__sigchld_cb(braid_signal_t *s, int signo, unsigned count,
                              void *arg) {
  (void)s;
  (void)signo;
  (void)count;
  braid_reactor_t *r = arg;
  braid__procs *ps = r->procs;
  if (ps == NULL)
    return;
  for (braid_process_t *p = ps->head.next; p != &ps->head; p = p->next) {
    int st;
    /* An error (the child was reaped by someone else's waitpid(-1)) is
     * left like a running child: braid cannot tell how it ended. */
    if (p->reaped || braid__proc_reap(p->pid, &st) != 1)
      continue;
    p->pid = -1;
    p->reaped = 1;
    p->status = st;
  }
  /* Then the callbacks, which may spawn or kill others or free the list
   * (the last child): look the list up again after each. */
  for (;;) {
    ps = r->procs;
    if (ps == NULL)
      return;
    braid_process_t *p = ps->head.next;
    while (p != &ps->head && !p->reaped)
      p = p->next;
    if (p == &ps->head)
      return;
    braid__proc_ended(p, p->status);
  }
}

/* Reactor destroyed with the child running: kill and reap it if asked,
 * else leave it (it is no longer braid's). */
static void braid__proc_abort_h(braid__handle *h) {
  braid_process_t *p = braid__container_of(h, braid_process_t, h);
  if (p->flags & BRAID_PROCESS_KILL_ON_SHUTDOWN)
    braid__proc_kill_wait(p->pid);
  /* unlink removes the handle again: put it back in a list of its own
   * first so the removal is harmless. */
  h->next_ = h->prev_ = h;
  braid__procs_unlink(p);
  braid__proc_free(p);
}

static int braid__procs_get(braid_reactor_t *r) {
  if (r->procs != NULL)
    return 0;
  braid__procs *ps = braid_calloc(1, sizeof *ps);
  if (ps == NULL)
    return BRAID_ENOMEM;
  ps->head.next = ps->head.prev = &ps->head;
  int rc = braid_signal_start(r, &ps->sigchld, braid__proc_sigchld(),
                              braid__sigchld_cb, r);
  if (rc < 0) {
    braid_free(ps);
    return rc;
  }
  r->procs = ps;
  return 0;
}

int braid_process_spawn(braid_reactor_t *r, const braid_process_options *o,
                        braid_process_t **out) {
  if (out != NULL)
    *out = NULL;
  if (r == NULL || o == NULL || o->file == NULL || o->argv == NULL ||
      o->argv[0] == NULL || (o->extra == NULL && o->n_extra > 0) ||
      o->n_extra > BRAID__PROC_MAX_FDS - 3)
    return BRAID_EINVAL;
  if (!(r->io->caps & BRAID__CAP_PIPE))
    return BRAID_ENOTSUP;
  braid__child_fd m[BRAID__PROC_MAX_FDS];
  braid_protocol_t *proto[BRAID__PROC_MAX_FDS];
  braid__spawn_req req = {.file = o->file,
                          .argv = o->argv,
                          .env = o->env,
                          .cwd = o->cwd,
                          .flags = o->flags,
                          .fds = m,
                          .nfds = 3 + o->n_extra,
                          .max_target = 2};
  for (size_t i = 0; i < req.nfds; i++) {
    const braid_child_fd *c = i < 3 ? &o->stdio[i] : &o->extra[i - 3];
    m[i].target = i < 3 ? (int)i : c->child_fd;
    m[i].kind = c->kind;
    m[i].parent_end = -1;
    m[i].child_reads = i == 0 || (i >= 3 && c->dir == BRAID_PIPE_CHILD_READS);
    proto[i] = c->proto;
    if (m[i].target < 0 || (i >= 3 && m[i].target < 3) ||
        c->kind > BRAID_STDIO_PIPE ||
        (c->kind == BRAID_STDIO_PIPE &&
         (c->proto == NULL || c->proto->ops == NULL)))
      return BRAID_EINVAL;
    for (size_t j = 0; j < i; j++)
      if (m[j].target == m[i].target)
        return BRAID_EINVAL;
    if (m[i].target > req.max_target)
      req.max_target = m[i].target;
  }
  int rc = braid__proc_check(&req);
  if (rc < 0)
    return rc;
  braid_process_t *p = braid_calloc(1, sizeof *p);
  if (p == NULL)
    return BRAID_ENOMEM;
  /* The SIGCHLD watcher starts before the spawn, so a child that ends at
   * once is still counted and delivered from the loop. */
  rc = braid__procs_get(r);
  if (rc == 0)
    rc = braid__proc_spawn(&req, &p->pid);
  if (rc < 0) {
    if (r->procs != NULL && r->procs->n == 0) {
      braid_signal_stop(&r->procs->sigchld);
      braid_free(r->procs);
      r->procs = NULL;
    }
    braid_free(p);
    return rc;
  }
  braid__procs *ps = r->procs;
  p->r = r;
  p->flags = o->flags;
  p->ended = o->ended;
  p->arg = o->arg;
  p->next = &ps->head;
  p->prev = ps->head.prev;
  ps->head.prev->next = p;
  ps->head.prev = p;
  ps->n++;
  r->active_io++; /* a running child keeps the loop alive */
  braid__handle_add(r, &p->h, braid__proc_abort_h);
  /* The pipes become transports. A failure here (out of memory) cannot
   * undo the spawn: that pipe's end is closed, so the child sees the end
   * of input or EPIPE on it, and the process is still reported. */
  for (size_t i = 0; i < req.nfds; i++) {
    int fd = m[i].parent_end;
    if (fd < 0)
      continue;
    braid_transport_t *t;
    int prc = braid_pipe_open(r, m[i].child_reads ? -1 : fd,
                              m[i].child_reads ? fd : -1, proto[i], &t);
    if (prc < 0) {
      braid_reactor_log(r, BRAID_LOG_WARN, "process",
                        "cannot open the pipe of child fd %d: %s", m[i].target,
                        braid_strerror(prc));
      braid__fd_close(fd);
    }
  }
  if (out != NULL)
    *out = p;
  return 0;
}

long braid_process_pid(const braid_process_t *p) {
  return p == NULL ? -1 : p->pid;
}

int braid_process_kill(braid_process_t *p, int signo) {
  if (p == NULL || signo < 0 || signo >= BRAID__SIG_MAX)
    return BRAID_EINVAL;
  if (p->pid <= 0)
    return BRAID_ECLOSED;
  return braid__proc_signal(p->pid, signo);
}

int braid_process_deferred(braid_process_t *p, braid_deferred_t *out) {
  if (p == NULL || out == NULL)
    return BRAID_EINVAL;
  braid_deferred_t *d = braid_realloc(p->defs, (p->ndefs + 1) * sizeof *d);
  if (d == NULL)
    return BRAID_ENOMEM;
  p->defs = d;
  int rc = braid_deferred_new(p->r, &d[p->ndefs]);
  if (rc < 0)
    return rc;
  *out = d[p->ndefs++];
  return 0;
}
