/* braid: pipes and child processes as transports (Twisted's spawnProcess
 * and ProcessProtocol, libuv's uv_spawn).
 *
 * POSIX only for now: on Windows every function here returns
 * BRAID_ENOTSUP (CreateProcess with overlapped named pipes is not written
 * yet).
 *
 * A pipe is an ordinary braid transport: write, pause/resume reading,
 * the write-queue marks with pause_writing/resume_writing, half-close
 * (braid_transport_shutdown_write closes the write end, so the reader sees
 * the end of input) all behave as on a TCP stream. A child's standard
 * streams and extra descriptors are pipe transports, each with the
 * protocol given for it.
 */
#ifndef BRAID_PROCESS_H
#define BRAID_PROCESS_H

#include <stddef.h>

#include "braid/deferred.h"
#include "braid/reactor.h"
#include "braid/transport.h"

#ifdef __cplusplus
extern "C" {
#endif

/* A transport over pipe descriptors: read_fd (or -1: write only) and
 * write_fd (or -1: read only), which may be the two ends of different
 * pipes (a child's stdout and stdin), not the same descriptor. braid takes
 * both over (makes them non-blocking and close-on-exec, closes them when
 * the transport closes), except on error, when the caller keeps them.
 * connection_made runs from the loop, never inside this call; *out is the
 * transport (valid until connection_lost returns). Writing to a read-only
 * pipe returns BRAID_ENOTSUP; a write to a pipe whose reader is gone fails
 * the transport with BRAID_EPIPE (never SIGPIPE). BRAID_EINVAL for bad
 * arguments, BRAID_ENOTSUP where the I/O layer cannot (Windows). */
int braid_pipe_open(braid_reactor_t *r, int read_fd, int write_fd,
                    braid_protocol_t *p, braid_transport_t **out);

typedef struct braid_process braid_process_t;

/* What a child's descriptor is connected to. */
typedef enum braid_stdio_kind {
  BRAID_STDIO_DEVNULL = 0, /* /dev/null (the zero value) */
  BRAID_STDIO_INHERIT,     /* the parent's descriptor of the same number */
  BRAID_STDIO_PIPE         /* a pipe to `proto` (a braid transport) */
} braid_stdio_kind;

/* Direction of a BRAID_STDIO_PIPE, from the child's side. For the standard
 * streams it is implied (0: the child reads; 1, 2: the child writes) and
 * this field is ignored. */
typedef enum braid_pipe_dir {
  BRAID_PIPE_CHILD_WRITES = 0, /* the parent's protocol receives data */
  BRAID_PIPE_CHILD_READS       /* the parent's protocol writes data */
} braid_pipe_dir;

typedef struct braid_child_fd {
  int child_fd; /* the descriptor number in the child (>= 0) */
  braid_stdio_kind kind;
  braid_pipe_dir dir;      /* BRAID_STDIO_PIPE of an extra descriptor */
  braid_protocol_t *proto; /* BRAID_STDIO_PIPE: the parent's side */
} braid_child_fd;

/* braid_process_options.flags */
#define BRAID_PROCESS_SETSID 0x1u  /* the child starts a new session */
#define BRAID_PROCESS_SETPGID 0x2u /* the child leads a new process group */
#define BRAID_PROCESS_KILL_ON_SHUTDOWN 0x4u /* SIGKILL it (and reap it) when
                                               the reactor is destroyed
                                               before it ended; otherwise it
                                               is left running, unreaped */

/* A status: the exit code (0..255) when the child exited, or minus the
 * signal number when a signal ended it (-9 for SIGKILL). */
typedef void (*braid_process_ended_cb)(braid_process_t *p, int status,
                                       void *arg);

typedef struct braid_process_options {
  const char *file;   /* the program: a path, or a name looked up in PATH */
  char *const *argv;  /* NULL-terminated; argv[0] included */
  char *const *env;   /* NULL-terminated "K=V" list, or NULL: inherit */
  const char *cwd;    /* NULL: the parent's (BRAID_ENOTSUP where the C
                         library cannot set it for posix_spawn) */
  braid_child_fd stdio[3]; /* stdin, stdout, stderr (child_fd ignored) */
  const braid_child_fd *extra; /* more descriptors (child_fd >= 3) */
  size_t n_extra;
  unsigned flags; /* BRAID_PROCESS_* */
  /* Called once, when the child has been reaped (Twisted's processExited;
   * its pipes end on their own, and may still deliver what the child
   * wrote before). The process handle is freed when it returns. May be
   * NULL. */
  braid_process_ended_cb ended;
  void *arg;
} braid_process_options;

/* Start a child. 0 and *out, or BRAID_E* (BRAID_ENOENT for a program that
 * does not exist, BRAID_EINVAL for bad options, BRAID_ENOTSUP on Windows);
 * on error nothing was started and no protocol is called. The child runs
 * exec only (posix_spawn): no braid code runs in it. No descriptor braid
 * opened reaches it except those mapped here.
 *
 * Reaping: braid waits for its own children by pid only (waitpid(pid),
 * woken by SIGCHLD, which braid watches while it has children running), so
 * it never takes the exit status of a child it did not start. */
int braid_process_spawn(braid_reactor_t *r, const braid_process_options *o,
                        braid_process_t **out);

/* The child's pid. */
long braid_process_pid(const braid_process_t *p);

/* Send signal signo. 0, BRAID_ECLOSED once the child has been reaped (the
 * pid may belong to another process by then, so nothing is sent),
 * BRAID_EINVAL for a bad signal. */
int braid_process_kill(braid_process_t *p, int signo);

/* A deferred that fires with the status (as braid_process_ended_cb, cast
 * to intptr_t in the value) when the child ended. Ask before it ended; one
 * per call. */
int braid_process_deferred(braid_process_t *p, braid_deferred_t *out);

#ifdef __cplusplus
}
#endif

#endif
