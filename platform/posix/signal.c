/* POSIX signals: the handler of the process's signal registry
 * (core/io_signal.c), shared by the readiness engine and io_uring.
 *
 * The registry knows reactors by their wakeup descriptor (an eventfd, or
 * the write end of a pipe); the handler counts the delivery and writes to
 * every registered descriptor, the only async-signal-safe way to wake a
 * loop. */
#include <errno.h>
#include <signal.h>
#include <string.h>

#include "core/internal.h"
#include "platform/posix/sock.h"


/* Guarded by the registry's lock (install and uninstall run under it). */
static struct sigaction braid__sig_old[BRAID__SIG_MAX];

static void braid__sig_handler(int signo) {
  int saved = errno;
  braid__sig_deliver(signo);
  errno = saved;
}

void braid__sig_notify(intptr_t target) {
  braid__posix_wake((int)target);
}

int braid__sig_install(int signo) {
  if (signo >= BRAID__SIG_MAX)
    return BRAID_EINVAL;
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = braid__sig_handler;
  sigfillset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;
#ifdef SA_NOCLDSTOP
  if (signo == SIGCHLD)
    sa.sa_flags |= SA_NOCLDSTOP;
#endif
  if (sigaction(signo, &sa, &braid__sig_old[signo]) < 0)
    return braid__translate_sys_error(errno);
  return 0;
}

void braid__sig_uninstall(int signo) {
  sigaction(signo, &braid__sig_old[signo], NULL);
}
