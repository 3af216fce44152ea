/* Signals on Windows: console control events, delivered through the
 * process's signal registry (core/io_signal.c).
 *
 * Console events are process-wide and arrive on a thread Windows creates
 * for the handler: CTRL_C and CTRL_BREAK count as SIGINT; CTRL_CLOSE,
 * CTRL_LOGOFF and CTRL_SHUTDOWN as SIGTERM. The registry knows each
 * watching reactor by its completion port, and the handler wakes it with a
 * packet. Other signal numbers have no console event: BRAID_ENOTSUP. */
#include <winsock2.h>
#include <windows.h>
#include <signal.h>

#include "platform/win32/win32.h"

/* SIGINT and SIGTERM each installed at most once (under the registry's
 * lock); the handler is registered with Windows while either is. */
static int braid__sig_installed;

static BOOL WINAPI braid__console_handler(DWORD ev) {
  int term = 0;
  switch (ev) {
  case CTRL_C_EVENT:
  case CTRL_BREAK_EVENT:
    braid__sig_deliver(SIGINT);
    break;
  case CTRL_CLOSE_EVENT:
  case CTRL_LOGOFF_EVENT:
  case CTRL_SHUTDOWN_EVENT:
    braid__sig_deliver(SIGTERM);
    term = 1;
    break;
  default:
    return FALSE;
  }
  /* Windows ends the process as soon as the handler of a close, logoff or
   * shutdown event returns (and at the latest after about 5 s): give the
   * loop that time to shut down cleanly, as libuv does for SIGHUP. */
  if (term)
    Sleep(5000);
  return TRUE;
}

void braid__sig_notify(intptr_t target) {
  PostQueuedCompletionStatus((HANDLE)target, 0, BRAID__KEY_WAKE, NULL);
}

int braid__sig_install(int signo) {
  if (signo != SIGINT && signo != SIGTERM)
    return BRAID_ENOTSUP; /* no console event maps to it */
  if (braid__sig_installed++ == 0 &&
      !SetConsoleCtrlHandler(braid__console_handler, TRUE)) {
    braid__sig_installed = 0;
    return braid__translate_sys_error((int)GetLastError());
  }
  return 0;
}

void braid__sig_uninstall(int signo) {
  BRAID__UNUSED(signo);
  if (--braid__sig_installed == 0)
    SetConsoleCtrlHandler(braid__console_handler, FALSE);
}
