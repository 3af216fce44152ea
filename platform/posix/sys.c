/* POSIX primitives core needs: the clock, a mutex, threads, and errno
 * translation. */
#include <errno.h>
#include <net/if.h>
#include <netdb.h>
#include <pthread.h>
#include <stddef.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "core/internal.h"

uint64_t braid__hrtime(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

int braid__mutex_init(braid__mutex *m) {
  return pthread_mutex_init(m, NULL) == 0 ? 0 : BRAID_ENOMEM;
}
void braid__mutex_destroy(braid__mutex *m) { pthread_mutex_destroy(m); }
void braid__mutex_lock(braid__mutex *m) { pthread_mutex_lock(m); }
void braid__mutex_unlock(braid__mutex *m) { pthread_mutex_unlock(m); }

int braid__thread_create(braid__thread *t, void *(*fn)(void *), void *arg) {
  int rc = pthread_create(t, NULL, fn, arg);
  return rc == 0 ? 0 : braid__translate_sys_error(rc);
}

int braid__thread_join(braid__thread t) {
  int rc = pthread_join(t, NULL);
  return rc == 0 ? 0 : braid__translate_sys_error(rc);
}

int braid__cond_init(braid__cond *c) {
  return pthread_cond_init(c, NULL) == 0 ? 0 : BRAID_ENOMEM;
}
void braid__cond_destroy(braid__cond *c) { pthread_cond_destroy(c); }
void braid__cond_wait(braid__cond *c, braid__mutex *m) {
  pthread_cond_wait(c, m);
}
void braid__cond_signal(braid__cond *c) { pthread_cond_signal(c); }
void braid__cond_broadcast(braid__cond *c) { pthread_cond_broadcast(c); }

int braid__translate_sys_error(int e) {
  switch (e) {
  case 0:
    return 0;
  case EINVAL:
    return BRAID_EINVAL;
  case ENOMEM:
  case ENOBUFS:
    return BRAID_ENOMEM;
  case EALREADY:
    return BRAID_EALREADY;
  case ECANCELED:
    return BRAID_ECANCELED;
  case EBUSY:
    return BRAID_EBUSY;
  case ENOTSUP:
#if defined(EOPNOTSUPP) && EOPNOTSUPP != ENOTSUP
  case EOPNOTSUPP:
#endif
  case ENOSYS:
  case EPROTONOSUPPORT:
    return BRAID_ENOTSUP;
  case ETIMEDOUT:
    return BRAID_ETIMEDOUT;
  case ECONNREFUSED:
    return BRAID_ECONNREFUSED;
  case ECONNRESET:
    return BRAID_ECONNRESET;
  case ECONNABORTED:
    return BRAID_ECONNABORTED;
  case EPIPE:
    return BRAID_EPIPE;
  case EADDRINUSE:
    return BRAID_EADDRINUSE;
  case EADDRNOTAVAIL:
    return BRAID_EADDRNOTAVAIL;
  case EAFNOSUPPORT:
    return BRAID_EAFNOSUPPORT;
  case EACCES:
    return BRAID_EACCES;
  case EAGAIN:
#if EWOULDBLOCK != EAGAIN
  case EWOULDBLOCK:
#endif
    return BRAID_EAGAIN;
  case EBADF:
    return BRAID_EBADF;
  case EMFILE:
    return BRAID_EMFILE;
  case ENFILE:
    return BRAID_ENFILE;
  case ENOENT:
    return BRAID_ENOENT;
  case EEXIST:
    return BRAID_EEXIST;
  case EHOSTUNREACH:
    return BRAID_EHOSTUNREACH;
  case ENETUNREACH:
    return BRAID_ENETUNREACH;
  case ENETDOWN:
    return BRAID_ENETDOWN;
  case ENOTCONN:
    return BRAID_ENOTCONN;
  case EISCONN:
    return BRAID_EISCONN;
  case EINTR:
    return BRAID_EINTR;
  case EIO:
    return BRAID_EIO;
  case ERANGE:
    return BRAID_ERANGE;
  case EMSGSIZE:
    return BRAID_EMSGSIZE;
  case ENOSPC:
    return BRAID_ENOSPC;
  case ENAMETOOLONG:
    return BRAID_ENAMETOOLONG;
  case EPERM:
    return BRAID_EPERM;
  case ENOTSOCK:
    return BRAID_ENOTSOCK;
  case EPROTO:
    return BRAID_EPROTO;
  default:
    return BRAID_EUNKNOWN;
  }
}

void braid__unix_file_note(braid__unix_file *f, const struct sockaddr *sa,
                           int len) {
  const struct sockaddr_un *un = (const struct sockaddr_un *)sa;
  size_t off = offsetof(struct sockaddr_un, sun_path);
  f->path = NULL;
  if (sa->sa_family != AF_UNIX || len <= (int)off || un->sun_path[0] == '\0')
    return; /* unnamed, or Linux's abstract namespace: no file */
  size_t n = strnlen(un->sun_path, (size_t)len - off);
  struct stat st;
  char *path = braid_malloc(n + 1);
  if (path == NULL)
    return;
  memcpy(path, un->sun_path, n);
  path[n] = '\0';
  if (lstat(path, &st) != 0 || !S_ISSOCK(st.st_mode)) {
    braid_free(path);
    return;
  }
  f->path = path;
  f->dev = (uint64_t)st.st_dev;
  f->ino = (uint64_t)st.st_ino;
}

void braid__unix_file_remove(braid__unix_file *f) {
  if (f->path == NULL)
    return;
  /* Between this check and the unlink another process could replace the
   * file; POSIX has no unlink-if-same, and a program that rebinds a path
   * it is still closing is racing itself anyway. */
  struct stat st;
  if (lstat(f->path, &st) == 0 && S_ISSOCK(st.st_mode) &&
      (uint64_t)st.st_dev == f->dev && (uint64_t)st.st_ino == f->ino)
    unlink(f->path);
  braid_free(f->path);
  f->path = NULL;
}

int braid__if_index(const char *name, unsigned *index) {
  unsigned i = if_nametoindex(name);
  if (i == 0)
    return BRAID_ENOENT;
  *index = i;
  return 0;
}
