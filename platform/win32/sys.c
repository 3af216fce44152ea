/* Windows primitives core needs: the clock (QueryPerformanceCounter), a
 * mutex (SRW lock), a condition variable, threads, Winsock start-up and the
 * mapping of Win32 / Winsock error codes to BRAID_E*. */
#include <winsock2.h>
#include <windows.h>
#include <errno.h>
#include <process.h>
#include <stdlib.h>

#include "core/internal.h"
#include "platform/win32/win32.h"

/* ------------------------------------------------------------------------
 * Clock
 * ------------------------------------------------------------------------ */

static INIT_ONCE braid__qpc_once = INIT_ONCE_STATIC_INIT;
static uint64_t braid__qpc_freq;

static BOOL CALLBACK braid__qpc_init(PINIT_ONCE once, PVOID arg, PVOID *ctx) {
  (void)once;
  (void)arg;
  (void)ctx;
  LARGE_INTEGER f;
  /* Never fails on Windows XP and later, per its documentation. */
  QueryPerformanceFrequency(&f);
  braid__qpc_freq = (uint64_t)f.QuadPart;
  return TRUE;
}

uint64_t braid__hrtime(void) {
  InitOnceExecuteOnce(&braid__qpc_once, braid__qpc_init, NULL, NULL);
  LARGE_INTEGER c;
  QueryPerformanceCounter(&c);
  uint64_t t = (uint64_t)c.QuadPart, f = braid__qpc_freq;
  /* Split, so that t * 1e9 cannot overflow for a counter running at 10 MHz
   * (the usual frequency on Windows 10) after a month of uptime. */
  return t / f * 1000000000u + t % f * 1000000000u / f;
}

/* ------------------------------------------------------------------------
 * Mutex, condition variable, threads
 * ------------------------------------------------------------------------ */

int braid__mutex_init(braid__mutex *m) {
  InitializeSRWLock(m);
  return 0;
}
void braid__mutex_destroy(braid__mutex *m) {
  (void)m;
} /* SRW locks hold nothing */
void braid__mutex_lock(braid__mutex *m) {
  AcquireSRWLockExclusive(m);
}
void braid__mutex_unlock(braid__mutex *m) {
  ReleaseSRWLockExclusive(m);
}

int braid__cond_init(braid__cond *c) {
  InitializeConditionVariable(c);
  return 0;
}
void braid__cond_destroy(braid__cond *c) {
  (void)c;
}
void braid__cond_wait(braid__cond *c, braid__mutex *m) {
  SleepConditionVariableSRW(c, m, INFINITE, 0);
}
void braid__cond_signal(braid__cond *c) {
  WakeConditionVariable(c);
}
void braid__cond_broadcast(braid__cond *c) {
  WakeAllConditionVariable(c);
}

typedef struct braid__thread_start {
  void *(*fn)(void *);
  void *arg;
} braid__thread_start;

static unsigned __stdcall braid__thread_main(void *p) {
  braid__thread_start st = *(braid__thread_start *)p;
  free(p);
  st.fn(st.arg);
  return 0;
}

int braid__thread_create(braid__thread *t, void *(*fn)(void *), void *arg) {
  /* The C library's malloc, not braid_malloc: this small block is the
   * platform's, as pthread_create's own allocations are on POSIX. */
  braid__thread_start *st = malloc(sizeof *st);
  if (st == NULL)
    return BRAID_ENOMEM;
  st->fn = fn;
  st->arg = arg;
  /* _beginthreadex rather than CreateThread: it sets up the C runtime's
   * per-thread state (errno, strtok, locale) the thread pool's jobs may
   * use. */
  uintptr_t h = _beginthreadex(NULL, 0, braid__thread_main, st, 0, NULL);
  if (h == 0) {
    int rc = errno == EAGAIN ? BRAID_EAGAIN : BRAID_ENOMEM;
    free(st);
    return rc;
  }
  *t = (HANDLE)h;
  return 0;
}

int braid__thread_join(braid__thread t) {
  DWORD rc = WaitForSingleObject(t, INFINITE);
  CloseHandle(t);
  return rc == WAIT_OBJECT_0 ? 0 : BRAID_EINVAL;
}

/* ------------------------------------------------------------------------
 * Winsock
 * ------------------------------------------------------------------------ */

static INIT_ONCE braid__wsa_once = INIT_ONCE_STATIC_INIT;
static int braid__wsa_rc;

static BOOL CALLBACK braid__wsa_start(PINIT_ONCE once, PVOID arg, PVOID *ctx) {
  (void)once;
  (void)arg;
  (void)ctx;
  WSADATA d;
  int rc = WSAStartup(MAKEWORD(2, 2), &d);
  /* Never paired with WSACleanup: other reactors, and the thread pool's
   * getaddrinfo, may use Winsock until the process exits. */
  braid__wsa_rc = rc == 0 ? 0 : braid__translate_sys_error(rc);
  return TRUE;
}

int braid__winsock_init(void) {
  InitOnceExecuteOnce(&braid__wsa_once, braid__wsa_start, NULL, NULL);
  return braid__wsa_rc;
}

/* Winsock (WSAE*) and Win32 (ERROR_*) codes share one number space, so one
 * switch maps both. */
int braid__translate_sys_error(int e) {
  switch (e) {
  case 0:
    return 0;
  case WSAEINVAL:
  case ERROR_INVALID_PARAMETER:
  case WSAEFAULT:
    return BRAID_EINVAL;
  case WSAENOBUFS:
  case ERROR_NOT_ENOUGH_MEMORY:
  case ERROR_OUTOFMEMORY:
    return BRAID_ENOMEM;
  case WSAEALREADY:
    return BRAID_EALREADY;
  case ERROR_OPERATION_ABORTED:
  case WSAECANCELLED:
  case WSA_E_CANCELLED:
    return BRAID_ECANCELED;
  case ERROR_BUSY:
    return BRAID_EBUSY;
  case WSAEOPNOTSUPP:
  case WSAEPROTONOSUPPORT:
  case WSAESOCKTNOSUPPORT:
  case WSAEPFNOSUPPORT:
  case ERROR_NOT_SUPPORTED:
  case ERROR_CALL_NOT_IMPLEMENTED:
    return BRAID_ENOTSUP;
  case WSAETIMEDOUT:
  case ERROR_SEM_TIMEOUT:
  case WAIT_TIMEOUT:
    return BRAID_ETIMEDOUT;
  case WSAECONNREFUSED:
  case ERROR_CONNECTION_REFUSED:
  case ERROR_PORT_UNREACHABLE:
    return BRAID_ECONNREFUSED;
  case WSAECONNRESET:
  case WSAENETRESET:
  case ERROR_NETNAME_DELETED:
    return BRAID_ECONNRESET;
  case WSAECONNABORTED:
  case ERROR_CONNECTION_ABORTED:
  case WSAEDISCON:
    return BRAID_ECONNABORTED;
  case WSAESHUTDOWN:
  case ERROR_BROKEN_PIPE:
    return BRAID_EPIPE;
  case WSAEADDRINUSE:
    return BRAID_EADDRINUSE;
  case WSAEADDRNOTAVAIL:
    return BRAID_EADDRNOTAVAIL;
  case WSAEAFNOSUPPORT:
    return BRAID_EAFNOSUPPORT;
  case WSAEACCES:
  case ERROR_ACCESS_DENIED:
    return BRAID_EACCES;
  case WSAEWOULDBLOCK:
  case WSAEINPROGRESS:
    return BRAID_EAGAIN;
  case WSAENOTSOCK:
    return BRAID_ENOTSOCK;
  case ERROR_INVALID_HANDLE:
    return BRAID_EBADF;
  case WSAEMFILE:
  case ERROR_TOO_MANY_OPEN_FILES:
    return BRAID_EMFILE;
  case ERROR_FILE_NOT_FOUND:
  case ERROR_PATH_NOT_FOUND:
    return BRAID_ENOENT;
  case ERROR_ALREADY_EXISTS:
  case ERROR_FILE_EXISTS:
    return BRAID_EEXIST;
  case WSAEHOSTUNREACH:
  case WSAEHOSTDOWN:
  case ERROR_HOST_UNREACHABLE:
    return BRAID_EHOSTUNREACH;
  case WSAENETUNREACH:
  case ERROR_NETWORK_UNREACHABLE:
    return BRAID_ENETUNREACH;
  case WSAENETDOWN:
    return BRAID_ENETDOWN;
  case WSAENOTCONN:
    return BRAID_ENOTCONN;
  case WSAEISCONN:
    return BRAID_EISCONN;
  case WSAEINTR:
    return BRAID_EINTR;
  case WSAEMSGSIZE:
  case ERROR_MORE_DATA:
    return BRAID_EMSGSIZE;
  case ERROR_DISK_FULL:
    return BRAID_ENOSPC;
  case WSAENAMETOOLONG:
  case ERROR_FILENAME_EXCED_RANGE:
    return BRAID_ENAMETOOLONG;
  case WSAHOST_NOT_FOUND:
  case WSANO_DATA:
    return BRAID_ENOTFOUND;
  case WSASYSNOTREADY:
  case WSAVERNOTSUPPORTED:
  case WSANOTINITIALISED:
    return BRAID_EIO;
  default:
    return BRAID_EUNKNOWN;
  }
}

/* Windows' AF_UNIX sockets are files too, but their identity (the file
 * index) needs the reparse point opened by handle; until that is written,
 * nothing is removed, as before. */
void braid__unix_file_note(braid__unix_file *f, const struct sockaddr *sa,
                           int len) {
  (void)sa;
  (void)len;
  f->path = NULL;
}

void braid__unix_file_remove(braid__unix_file *f) {
  f->path = NULL;
}

/* Interface names for IPv6 multicast. Windows names interfaces by GUID;
 * braid accepts the numeric index there ("12"), which is what
 * if_nametoindex would give, without pulling in iphlpapi. */
int braid__if_index(const char *name, unsigned *index) {
  unsigned v = 0;
  if (name == NULL || *name == '\0')
    return BRAID_ENOENT;
  for (const char *p = name; *p != '\0'; p++) {
    if (*p < '0' || *p > '9' || v > 429496729u)
      return BRAID_ENOENT;
    v = v * 10u + (unsigned)(*p - '0');
  }
  if (v == 0)
    return BRAID_ENOENT;
  *index = v;
  return 0;
}
