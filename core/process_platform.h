/* What core/process.c asks of the platform (platform/posix/process.c,
 * platform/win32/process.c): the system calls that start, reap and signal
 * a child. Core keeps the argument checks, the bookkeeping, the protocols
 * and the deferreds. */
#ifndef BRAID_CORE_PROCESS_PLATFORM_H
#define BRAID_CORE_PROCESS_PLATFORM_H

#include <stddef.h>

#include "braid/process.h"

/* The most descriptors a child may have mapped (the three standard ones
 * and the extras). An explicit limit rather than an allocation per spawn. */
#define BRAID__PROC_MAX_FDS 64

/* One descriptor of the child, checked by core. */
typedef struct braid__child_fd {
  int target;      /* its number in the child */
  int child_reads; /* a pipe the child reads (else one it writes) */
  braid_stdio_kind kind;
  int parent_end; /* out: braid's end of the pipe (close-on-exec), or -1 */
} braid__child_fd;

typedef struct braid__spawn_req {
  const char *file;
  char *const *argv;
  char *const *env; /* NULL: the parent's */
  const char *cwd;  /* NULL: the parent's */
  unsigned flags;   /* BRAID_PROCESS_* */
  braid__child_fd *fds;
  size_t nfds;
  int max_target; /* the highest fds[i].target */
} braid__spawn_req;

/* BRAID_ENOTSUP when this platform cannot honour req's options (cwd,
 * SETSID), checked before anything is created; else 0. */
int braid__proc_check(const braid__spawn_req *req);

/* Create the pipes and start the child. 0, *pid and each pipe's
 * parent_end, or BRAID_E* (BRAID_ENOENT for a missing program) with every
 * descriptor it opened closed again. */
int braid__proc_spawn(braid__spawn_req *req, long *pid);

/* Has child pid ended? 1 and *status (the exit code, or minus the signal
 * that killed it), 0 while it runs, BRAID_E* if it cannot be waited for. */
int braid__proc_reap(long pid, int *status);

/* Send signo to pid. 0 or BRAID_E*. */
int braid__proc_signal(long pid, int signo);

/* SIGKILL pid and wait until it has gone (reactor teardown). */
void braid__proc_kill_wait(long pid);

/* The signal that reports a child's end (SIGCHLD), or -1 where there is
 * none. */
int braid__proc_sigchld(void);

/* Close a descriptor braid owns (a pipe end no transport took). */
void braid__fd_close(int fd);

#endif
