/* Child processes (core/process_platform.h): not on Windows yet. The I/O
 * layer has no BRAID__CAP_PIPE there, so core answers BRAID_ENOTSUP
 * before calling any of these. */
#include "core/internal.h"
#include "core/process_platform.h"

int braid__proc_check(const braid__spawn_req *req) {
  (void)req;
  return BRAID_ENOTSUP;
}

int braid__proc_spawn(braid__spawn_req *req, long *pid) {
  (void)req;
  (void)pid;
  return BRAID_ENOTSUP;
}

int braid__proc_reap(long pid, int *status) {
  (void)pid;
  (void)status;
  return BRAID_ENOTSUP;
}

int braid__proc_signal(long pid, int signo) {
  (void)pid;
  (void)signo;
  return BRAID_ENOTSUP;
}

void braid__proc_kill_wait(long pid) {
  (void)pid;
}

int braid__proc_sigchld(void) {
  return -1;
}

void braid__fd_close(int fd) {
  (void)fd;
}
