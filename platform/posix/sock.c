/* POSIX socket syscalls shared by the readiness engine (engine.c) and the
 * io_uring poller (platform/linux/uring.c): creating a socket, and the
 * slots of the ops table that are plain syscalls done at once (bind,
 * listen, names, options, shutdown, closing an unregistered descriptor). */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include "platform/posix/sock.h"

/* Needed only where a descriptor cannot be born non-blocking and
 * close-on-exec: a pipe instead of an eventfd, accept() instead of
 * accept4(), socket() without SOCK_NONBLOCK (macOS). An external function,
 * so it is built everywhere without tripping -Wunused-function. */
int braid__set_nonblock_cloexec(int fd) {
  int fl = fcntl(fd, F_GETFL);
  if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0)
    return braid__translate_sys_error(errno);
  fl = fcntl(fd, F_GETFD);
  if (fl < 0 || fcntl(fd, F_SETFD, fl | FD_CLOEXEC) < 0)
    return braid__translate_sys_error(errno);
  return 0;
}

int braid__sock_socket(int family, int type) {
#ifdef SOCK_NONBLOCK
  int fd = socket(family, type | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return braid__translate_sys_error(errno);
#else
  int fd = socket(family, type, 0);
  if (fd < 0)
    return braid__translate_sys_error(errno);
  int rc0 = braid__set_nonblock_cloexec(fd);
  if (rc0 < 0) {
    close(fd);
    return rc0;
  }
#endif
  return fd;
}

void braid__posix_fd_close(braid__fd fd) {
  close(fd);
}

int braid__posix_sock_bind(braid__sock *s, const struct sockaddr *a, int len) {
  if (bind(s->fd, a, (socklen_t)len) < 0)
    return braid__translate_sys_error(errno);
  return 0;
}

int braid__posix_sock_listen(braid__sock *s, int backlog) {
  if (listen(s->fd, backlog) < 0)
    return braid__translate_sys_error(errno);
  return 0;
}

int braid__posix_sock_name(braid__sock *s, int peer, struct sockaddr *a,
                           int *len) {
  socklen_t l = (socklen_t)*len;
  int rc = peer ? getpeername(s->fd, a, &l) : getsockname(s->fd, a, &l);
  if (rc < 0)
    return braid__translate_sys_error(errno);
  *len = (int)l;
  return 0;
}

static int braid__setopt(int fd, int level, int name, int value) {
  if (setsockopt(fd, level, name, &value, sizeof value) < 0)
    return braid__translate_sys_error(errno);
  return 0;
}

int braid__posix_sock_setopt(braid__sock *s, int opt, int value) {
  switch (opt) {
  case BRAID__SO_REUSEADDR:
    return braid__setopt(s->fd, SOL_SOCKET, SO_REUSEADDR, value);
  case BRAID__SO_REUSEPORT:
#ifdef SO_REUSEPORT
    return braid__setopt(s->fd, SOL_SOCKET, SO_REUSEPORT, value);
#else
    return BRAID_ENOTSUP;
#endif
  case BRAID__SO_V6ONLY:
    return braid__setopt(s->fd, IPPROTO_IPV6, IPV6_V6ONLY, value);
  case BRAID__SO_NODELAY:
    return braid__setopt(s->fd, IPPROTO_TCP, TCP_NODELAY, value);
  case BRAID__SO_BROADCAST:
    return braid__setopt(s->fd, SOL_SOCKET, SO_BROADCAST, value);
  case BRAID__SO_KEEPALIVE: {
    int rc = braid__setopt(s->fd, SOL_SOCKET, SO_KEEPALIVE, value > 0);
    if (rc < 0 || value <= 0)
      return rc;
#if defined(TCP_KEEPIDLE)
    return braid__setopt(s->fd, IPPROTO_TCP, TCP_KEEPIDLE, value);
#elif defined(TCP_KEEPALIVE)
    return braid__setopt(s->fd, IPPROTO_TCP, TCP_KEEPALIVE, value); /* macOS */
#else
    return 0;
#endif
  }
  }
  return BRAID_EINVAL;
}

int braid__posix_sock_shutdown(braid__sock *s) {
  if (shutdown(s->fd, SHUT_WR) < 0)
    return braid__translate_sys_error(errno);
  return 0;
}
