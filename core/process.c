/* Child processes (braid/process.h).
 *
 * Spawning is posix_spawn(p): the C library forks (vfork-style on glibc)
 * and execs, so no braid code runs in the child and a threaded parent is
 * safe. Each child's pipes are ordinary pipe transports (core/stream.c).
 *
 * Reaping: the reactor watches SIGCHLD while it has children running and
 * calls waitpid(pid, WNOHANG) for each of its own pids, never waitpid(-1),
 * so the exit of a child that someone else started stays theirs. A
 * pidfd (Linux 5.3+) would save the scan over the children; not done yet.
 *
 * Windows: every function returns BRAID_ENOTSUP.
 */
#include "braid/process.h"

#include <string.h>

#include "core/internal.h"

#ifdef _WIN32

int braid_process_spawn(braid_reactor_t *r, const braid_process_options *o,
                        braid_process_t **out) {
  (void)r;
  (void)o;
  if (out != NULL)
    *out = NULL;
  return BRAID_ENOTSUP;
}
long braid_process_pid(const braid_process_t *p) {
  (void)p;
  return -1;
}
int braid_process_kill(braid_process_t *p, int signo) {
  (void)p;
  (void)signo;
  return BRAID_ENOTSUP;
}
int braid_process_deferred(braid_process_t *p, braid_deferred_t *out) {
  (void)p;
  (void)out;
  return BRAID_ENOTSUP;
}

#else

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

/* The most descriptors a child may have mapped (the three standard ones
 * and the extras). An explicit limit rather than an allocation per spawn. */
#define BRAID__PROC_MAX_FDS 64

struct braid_process {
  braid_reactor_t *r;
  struct braid_process *next, *prev;
  braid__handle h;
  pid_t pid;    /* -1 once reaped */
  int status;   /* when reaped */
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

static int braid__wait_status(int st) {
  if (WIFSIGNALED(st))
    return -WTERMSIG(st);
  return WEXITSTATUS(st);
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
    pid_t w;
    do
      w = waitpid(p->pid, &st, WNOHANG);
    while (w < 0 && errno == EINTR);
    if (w != p->pid)
      continue; /* still running (or stopped) */
    p->pid = -1;
    p->reaped = 1;
    p->status = braid__wait_status(st);
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
  if (p->flags & BRAID_PROCESS_KILL_ON_SHUTDOWN) {
    kill(p->pid, SIGKILL);
    /* SIGKILL cannot be caught: this wait is short. */
    while (waitpid(p->pid, NULL, 0) < 0 && errno == EINTR)
      ;
  }
  /* unlink removes the handle again: put it back in a list of its own
   * first so the removal is harmless. */
  h->next_ = h->prev_ = h;
  braid__procs_unlink(p);
  braid__proc_free(p);
}

/* One child descriptor's pipe: the parent's end (close-on-exec, made
 * non-blocking by braid_pipe_open) and the child's (close-on-exec too,
 * moved above every target number so that no dup2 clobbers it; dup2
 * clears close-on-exec on the copy the child keeps). */
typedef struct braid__fdmap {
  int target;
  int child_end;  /* -1 for /dev/null or inherit */
  int parent_end; /* -1 unless a pipe */
  int child_reads;
  braid_stdio_kind kind;
  braid_protocol_t *proto;
} braid__fdmap;

static int braid__cloexec_pipe(int fds[2]) {
#ifdef __linux__
  if (pipe2(fds, O_CLOEXEC) < 0)
    return braid__translate_sys_error(errno);
#else
  if (pipe(fds) < 0)
    return braid__translate_sys_error(errno);
  fcntl(fds[0], F_SETFD, FD_CLOEXEC);
  fcntl(fds[1], F_SETFD, FD_CLOEXEC);
#endif
  return 0;
}

static void braid__fdmaps_close(braid__fdmap *m, size_t n) {
  for (size_t i = 0; i < n; i++) {
    if (m[i].child_end >= 0)
      close(m[i].child_end);
    if (m[i].parent_end >= 0)
      close(m[i].parent_end);
    m[i].child_end = m[i].parent_end = -1;
  }
}

static int braid__procs_get(braid_reactor_t *r) {
  if (r->procs != NULL)
    return 0;
  braid__procs *ps = braid_calloc(1, sizeof *ps);
  if (ps == NULL)
    return BRAID_ENOMEM;
  ps->head.next = ps->head.prev = &ps->head;
  int rc = braid_signal_start(r, &ps->sigchld, SIGCHLD, braid__sigchld_cb, r);
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
  braid__fdmap m[BRAID__PROC_MAX_FDS];
  size_t n = 3 + o->n_extra;
  int max_target = 2;
  for (size_t i = 0; i < n; i++) {
    const braid_child_fd *c = i < 3 ? &o->stdio[i] : &o->extra[i - 3];
    m[i].target = i < 3 ? (int)i : c->child_fd;
    m[i].kind = c->kind;
    m[i].proto = c->proto;
    m[i].child_end = m[i].parent_end = -1;
    m[i].child_reads = i == 0 || (i >= 3 && c->dir == BRAID_PIPE_CHILD_READS);
    if (m[i].target < 0 || (i >= 3 && m[i].target < 3) ||
        c->kind > BRAID_STDIO_PIPE ||
        (c->kind == BRAID_STDIO_PIPE && (c->proto == NULL || c->proto->ops == NULL)))
      return BRAID_EINVAL;
    for (size_t j = 0; j < i; j++)
      if (m[j].target == m[i].target)
        return BRAID_EINVAL;
    if (m[i].target > max_target)
      max_target = m[i].target;
  }
#if !(defined(__GLIBC__) &&                                                    \
      (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 29)))
  if (o->cwd != NULL)
    return BRAID_ENOTSUP; /* no posix_spawn_file_actions_addchdir_np */
#endif
#ifndef POSIX_SPAWN_SETSID
  if (o->flags & BRAID_PROCESS_SETSID)
    return BRAID_ENOTSUP;
#endif
  braid_process_t *p = braid_calloc(1, sizeof *p);
  if (p == NULL)
    return BRAID_ENOMEM;
  int rc = braid__procs_get(r);
  if (rc < 0) {
    braid_free(p);
    return rc;
  }
  /* From here the reactor's process list exists; a failure below must
   * free it again when this was the first child. */
  for (size_t i = 0; i < n && rc == 0; i++) {
    if (m[i].kind != BRAID_STDIO_PIPE)
      continue;
    int fds[2];
    rc = braid__cloexec_pipe(fds);
    if (rc < 0)
      break;
    m[i].child_end = m[i].child_reads ? fds[0] : fds[1];
    m[i].parent_end = m[i].child_reads ? fds[1] : fds[0];
    if (m[i].child_end <= max_target) {
      int high = fcntl(m[i].child_end, F_DUPFD_CLOEXEC, max_target + 1);
      if (high < 0) {
        rc = braid__translate_sys_error(errno);
        break;
      }
      close(m[i].child_end);
      m[i].child_end = high;
    }
  }
  posix_spawn_file_actions_t fa;
  posix_spawnattr_t at;
  int have_fa = 0, have_at = 0;
  if (rc == 0) {
    rc = posix_spawn_file_actions_init(&fa) == 0 ? 0 : BRAID_ENOMEM;
    have_fa = rc == 0;
  }
  if (rc == 0) {
    rc = posix_spawnattr_init(&at) == 0 ? 0 : BRAID_ENOMEM;
    have_at = rc == 0;
  }
  for (size_t i = 0; i < n && rc == 0; i++) {
    int e = 0;
    if (m[i].kind == BRAID_STDIO_PIPE)
      e = posix_spawn_file_actions_adddup2(&fa, m[i].child_end, m[i].target);
    else if (m[i].kind == BRAID_STDIO_DEVNULL)
      e = posix_spawn_file_actions_addopen(&fa, m[i].target, "/dev/null",
                                           O_RDWR, 0);
    /* INHERIT: the parent's descriptor of that number, as it is. */
    if (e != 0)
      rc = braid__translate_sys_error(e);
  }
#if defined(__GLIBC__) &&                                                      \
    (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 29))
  if (rc == 0 && o->cwd != NULL) {
    int e = posix_spawn_file_actions_addchdir_np(&fa, o->cwd);
    if (e != 0)
      rc = braid__translate_sys_error(e);
  }
#endif
  if (rc == 0) {
    /* The child starts with no signal blocked and every signal at its
     * default action: braid's SIGCHLD handler and a SIGPIPE the
     * application ignores are not the child's business. */
    short fl = POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF;
    sigset_t none, all;
    sigemptyset(&none);
    sigfillset(&all);
    sigdelset(&all, SIGKILL);
    sigdelset(&all, SIGSTOP);
    posix_spawnattr_setsigmask(&at, &none);
    posix_spawnattr_setsigdefault(&at, &all);
#ifdef POSIX_SPAWN_SETSID
    if (o->flags & BRAID_PROCESS_SETSID)
      fl |= POSIX_SPAWN_SETSID;
#endif
    if (o->flags & BRAID_PROCESS_SETPGID) {
      fl |= POSIX_SPAWN_SETPGROUP;
      posix_spawnattr_setpgroup(&at, 0);
    }
    posix_spawnattr_setflags(&at, fl);
    pid_t pid;
    char *const *env = o->env != NULL ? o->env : environ;
    int e = strchr(o->file, '/') != NULL
                ? posix_spawn(&pid, o->file, &fa, &at, o->argv, env)
                : posix_spawnp(&pid, o->file, &fa, &at, o->argv, env);
    if (e != 0)
      rc = braid__translate_sys_error(e);
    else
      p->pid = pid;
  }
  if (have_fa)
    posix_spawn_file_actions_destroy(&fa);
  if (have_at)
    posix_spawnattr_destroy(&at);
  /* The child has its copies (or there is no child): close ours. */
  for (size_t i = 0; i < n; i++) {
    if (m[i].child_end >= 0)
      close(m[i].child_end);
    m[i].child_end = -1;
  }
  if (rc < 0) {
    braid__fdmaps_close(m, n);
    if (r->procs->n == 0) {
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
  for (size_t i = 0; i < n; i++) {
    if (m[i].parent_end < 0)
      continue;
    braid_transport_t *t;
    int prc = braid_pipe_open(r, m[i].child_reads ? -1 : m[i].parent_end,
                              m[i].child_reads ? m[i].parent_end : -1,
                              m[i].proto, &t);
    if (prc < 0) {
      braid_reactor_log(r, BRAID_LOG_WARN, "process",
                        "cannot open the pipe of child fd %d: %s",
                        m[i].target, braid_strerror(prc));
      close(m[i].parent_end);
    }
    m[i].parent_end = -1;
  }
  if (out != NULL)
    *out = p;
  /* The child may have ended before the watcher could see a SIGCHLD for
   * it? No: the watcher was started before the spawn, so its SIGCHLD is
   * counted and delivered from the loop. */
  return 0;
}

long braid_process_pid(const braid_process_t *p) {
  return p == NULL ? -1 : (long)p->pid;
}

int braid_process_kill(braid_process_t *p, int signo) {
  if (p == NULL || signo < 0 || signo >= BRAID__SIG_MAX)
    return BRAID_EINVAL;
  if (p->pid <= 0)
    return BRAID_ECLOSED;
  if (kill(p->pid, signo) < 0)
    return braid__translate_sys_error(errno);
  return 0;
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

#endif
