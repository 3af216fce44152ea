/* Child processes, the system calls (core/process_platform.h).
 *
 * Spawning is posix_spawn(p): the C library forks (vfork-style on glibc)
 * and execs, so no braid code runs in the child and a threaded parent is
 * safe. Reaping is waitpid(pid, WNOHANG) for one of braid's own pids,
 * never waitpid(-1), so a child someone else started stays theirs. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/internal.h"
#include "core/process_platform.h"

extern char **environ;

#if defined(__GLIBC__) &&                                                      \
    (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 29))
#define BRAID__HAVE_ADDCHDIR 1
#endif

int braid__proc_check(const braid__spawn_req *req) {
#ifndef BRAID__HAVE_ADDCHDIR
  if (req->cwd != NULL)
    return BRAID_ENOTSUP; /* no posix_spawn_file_actions_addchdir_np */
#endif
#ifndef POSIX_SPAWN_SETSID
  if (req->flags & BRAID_PROCESS_SETSID)
    return BRAID_ENOTSUP;
#endif
  (void)req;
  return 0;
}

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

/* The pipes: the parent's end (close-on-exec, made non-blocking later by
 * braid_pipe_open) and the child's (close-on-exec too, moved above every
 * target number so that no dup2 clobbers it; dup2 clears close-on-exec on
 * the copy the child keeps). child_end[i] is -1 where there is no pipe. */
static int braid__proc_pipes(braid__spawn_req *req, int *child_end) {
  for (size_t i = 0; i < req->nfds; i++) {
    braid__child_fd *c = &req->fds[i];
    if (c->kind != BRAID_STDIO_PIPE)
      continue;
    int fds[2];
    int rc = braid__cloexec_pipe(fds);
    if (rc < 0)
      return rc;
    child_end[i] = c->child_reads ? fds[0] : fds[1];
    c->parent_end = c->child_reads ? fds[1] : fds[0];
    if (child_end[i] <= req->max_target) {
      int high = fcntl(child_end[i], F_DUPFD_CLOEXEC, req->max_target + 1);
      if (high < 0)
        return braid__translate_sys_error(errno);
      close(child_end[i]);
      child_end[i] = high;
    }
  }
  return 0;
}

static int braid__proc_actions(const braid__spawn_req *req,
                               const int *child_end,
                               posix_spawn_file_actions_t *fa) {
  for (size_t i = 0; i < req->nfds; i++) {
    const braid__child_fd *c = &req->fds[i];
    int e = 0;
    if (c->kind == BRAID_STDIO_PIPE)
      e = posix_spawn_file_actions_adddup2(fa, child_end[i], c->target);
    else if (c->kind == BRAID_STDIO_DEVNULL)
      e = posix_spawn_file_actions_addopen(fa, c->target, "/dev/null", O_RDWR,
                                           0);
    /* INHERIT: the parent's descriptor of that number, as it is. */
    if (e != 0)
      return braid__translate_sys_error(e);
  }
#ifdef BRAID__HAVE_ADDCHDIR
  if (req->cwd != NULL) {
    int e = posix_spawn_file_actions_addchdir_np(fa, req->cwd);
    if (e != 0)
      return braid__translate_sys_error(e);
  }
#endif
  return 0;
}

static void braid__proc_attrs(const braid__spawn_req *req,
                              posix_spawnattr_t *at) {
  /* The child starts with no signal blocked and every signal at its
   * default action: braid's SIGCHLD handler and a SIGPIPE the application
   * ignores are not the child's business. */
  short fl = POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF;
  sigset_t none, all;
  sigemptyset(&none);
  sigfillset(&all);
  sigdelset(&all, SIGKILL);
  sigdelset(&all, SIGSTOP);
  posix_spawnattr_setsigmask(at, &none);
  posix_spawnattr_setsigdefault(at, &all);
#ifdef POSIX_SPAWN_SETSID
  if (req->flags & BRAID_PROCESS_SETSID)
    fl |= POSIX_SPAWN_SETSID;
#endif
  if (req->flags & BRAID_PROCESS_SETPGID) {
    fl |= POSIX_SPAWN_SETPGROUP;
    posix_spawnattr_setpgroup(at, 0);
  }
  posix_spawnattr_setflags(at, fl);
}

int braid__proc_spawn(braid__spawn_req *req, long *pid) {
  int child_end[BRAID__PROC_MAX_FDS];
  if (req->nfds > BRAID__PROC_MAX_FDS)
    return BRAID_EINVAL;
  for (size_t i = 0; i < req->nfds; i++) {
    child_end[i] = -1;
    req->fds[i].parent_end = -1;
  }
  int rc = braid__proc_pipes(req, child_end);
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
  if (rc == 0)
    rc = braid__proc_actions(req, child_end, &fa);
  if (rc == 0) {
    braid__proc_attrs(req, &at);
    pid_t p;
    char *const *env = req->env != NULL ? req->env : environ;
    int e = strchr(req->file, '/') != NULL
                ? posix_spawn(&p, req->file, &fa, &at, req->argv, env)
                : posix_spawnp(&p, req->file, &fa, &at, req->argv, env);
    if (e != 0)
      rc = braid__translate_sys_error(e);
    else
      *pid = (long)p;
  }
  if (have_fa)
    posix_spawn_file_actions_destroy(&fa);
  if (have_at)
    posix_spawnattr_destroy(&at);
  /* The child has its copies (or there is no child): close ours, and on
   * failure the parent's ends too. */
  for (size_t i = 0; i < req->nfds; i++) {
    if (child_end[i] >= 0)
      close(child_end[i]);
    if (rc < 0 && req->fds[i].parent_end >= 0) {
      close(req->fds[i].parent_end);
      req->fds[i].parent_end = -1;
    }
  }
  return rc;
}

int braid__proc_reap(long pid, int *status) {
  int st;
  pid_t w;
  do
    w = waitpid((pid_t)pid, &st, WNOHANG);
  while (w < 0 && errno == EINTR);
  if (w < 0)
    return braid__translate_sys_error(errno);
  if (w != (pid_t)pid)
    return 0; /* still running (or stopped) */
  *status = WIFSIGNALED(st) ? -WTERMSIG(st) : WEXITSTATUS(st);
  return 1;
}

int braid__proc_signal(long pid, int signo) {
  if (kill((pid_t)pid, signo) < 0)
    return braid__translate_sys_error(errno);
  return 0;
}

void braid__proc_kill_wait(long pid) {
  kill((pid_t)pid, SIGKILL);
  /* SIGKILL cannot be caught: this wait is short. */
  while (waitpid((pid_t)pid, NULL, 0) < 0 && errno == EINTR)
    ;
}

int braid__proc_sigchld(void) {
  return SIGCHLD;
}

void braid__fd_close(int fd) {
  close(fd);
}
