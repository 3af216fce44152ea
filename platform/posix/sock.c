/* POSIX socket syscalls shared by the readiness engine (engine.c) and the
 * io_uring poller (platform/linux/uring.c): creating a socket, and the
 * slots of the ops table that are plain syscalls done at once (bind,
 * listen, names, options, shutdown, closing an unregistered descriptor). */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stddef.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <string.h>

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

#ifndef MSG_NOSIGNAL
#define MSG_NOSIGNAL 0 /* macOS: SO_NOSIGPIPE is set on each socket */
#endif
#ifndef IOV_MAX
#define IOV_MAX 1024 /* Linux's UIO_MAXIOV */
#endif

/* braid__buf is handed to the kernel as struct iovec: same layout. */
_Static_assert(sizeof(braid__buf) == sizeof(struct iovec) &&
                   offsetof(braid__buf, base) ==
                       offsetof(struct iovec, iov_base) &&
                   offsetof(braid__buf, len) == offsetof(struct iovec, iov_len),
               "braid__buf must match struct iovec");

void braid__posix_wake(int fd) {
  uint64_t one = 1;
  ssize_t n;
  do
    n = write(fd, &one, sizeof one);
  while (n < 0 && errno == EINTR);
}

intptr_t braid__posix_sendto(int fd, const braid__op *op) {
  if (op->u.write.nbufs > IOV_MAX)
    return BRAID_EMSGSIZE;
  struct msghdr mh;
  memset(&mh, 0, sizeof mh);
  mh.msg_iov = (struct iovec *)(void *)op->u.write.bufs;
  mh.msg_iovlen = op->u.write.nbufs;
  if (op->addr != NULL && op->addrlen > 0) {
    mh.msg_name = op->addr;
    mh.msg_namelen = (socklen_t)op->addrlen;
  }
  for (;;) {
    ssize_t w = sendmsg(fd, &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (w >= 0)
      return w;
    if (errno == EINTR)
      continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK)
      return BRAID_EAGAIN;
    return braid__translate_sys_error(errno);
  }
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

static int braid__dgram_opt(braid__sock *s, int opt, int *value, int set);

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
  case BRAID__SO_RCVBUF:
  case BRAID__SO_SNDBUF:
  case BRAID__SO_MULTICAST_TTL:
  case BRAID__SO_MULTICAST_LOOP:
    return braid__dgram_opt(s, opt, &value, 1);
  case BRAID__SO_LINGER0: {
    struct linger lg;
    lg.l_onoff = value != 0;
    lg.l_linger = 0;
    if (setsockopt(s->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg) < 0)
      return braid__translate_sys_error(errno);
    return 0;
  }
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

/* ------------------------------------------------------------------------
 * Datagram socket options and multicast
 * ------------------------------------------------------------------------ */

static int braid__sock_family(braid__sock *s) {
  struct sockaddr_storage ss;
  socklen_t len = sizeof ss;
  if (getsockname(s->fd, (struct sockaddr *)&ss, &len) < 0)
    return braid__translate_sys_error(errno);
  return ss.ss_family;
}

/* IPv4's IP_MULTICAST_TTL and IP_MULTICAST_LOOP take an int on Linux but
 * an unsigned char on the BSDs and macOS (Linux accepts both). */
#ifdef __linux__
typedef int braid__mc4_t;
#else
typedef unsigned char braid__mc4_t;
#endif

/* Set (set = 1) or get the datagram options of sock_setopt/sock_getopt. */
static int braid__dgram_opt(braid__sock *s, int opt, int *value, int set) {
  int level, name, v6 = 0;
  switch (opt) {
  case BRAID__SO_BROADCAST:
    level = SOL_SOCKET;
    name = SO_BROADCAST;
    break;
  case BRAID__SO_RCVBUF:
    level = SOL_SOCKET;
    name = SO_RCVBUF;
    break;
  case BRAID__SO_SNDBUF:
    level = SOL_SOCKET;
    name = SO_SNDBUF;
    break;
  case BRAID__SO_MULTICAST_TTL:
  case BRAID__SO_MULTICAST_LOOP: {
    int fam = braid__sock_family(s);
    if (fam < 0)
      return fam;
    if (fam != AF_INET && fam != AF_INET6)
      return BRAID_EAFNOSUPPORT;
    v6 = fam == AF_INET6;
    level = v6 ? IPPROTO_IPV6 : IPPROTO_IP;
    if (opt == BRAID__SO_MULTICAST_TTL)
      name = v6 ? IPV6_MULTICAST_HOPS : IP_MULTICAST_TTL;
    else
      name = v6 ? IPV6_MULTICAST_LOOP : IP_MULTICAST_LOOP;
    break;
  }
  default:
    return BRAID_EINVAL;
  }
  int rc;
  if (level == IPPROTO_IP) {
    braid__mc4_t c = (braid__mc4_t)*value;
    socklen_t len = sizeof c;
    rc = set ? setsockopt(s->fd, level, name, &c, len)
             : getsockopt(s->fd, level, name, &c, &len);
    if (rc == 0 && !set)
      *value = (int)c;
  } else {
    int v = *value;
    socklen_t len = sizeof v;
    rc = set ? setsockopt(s->fd, level, name, &v, len)
             : getsockopt(s->fd, level, name, &v, &len);
    if (rc == 0 && !set)
      *value = v;
  }
  return rc < 0 ? braid__translate_sys_error(errno) : 0;
}

int braid__posix_sock_getopt(braid__sock *s, int opt, int *value) {
  *value = 0;
  return braid__dgram_opt(s, opt, value, 0);
}

/* ip_mreq (interface by address) for IPv4, which every system has;
 * ipv6_mreq (interface by index) for IPv6. */
int braid__posix_sock_mcast(braid__sock *s, int op, int family,
                            const struct sockaddr *group,
                            const struct sockaddr *iface4, unsigned ifindex) {
  int rc;
  if (family == AF_INET) {
    struct in_addr ifa;
    ifa.s_addr = htonl(INADDR_ANY);
    if (iface4 != NULL)
      ifa = ((const struct sockaddr_in *)iface4)->sin_addr;
    if (op == BRAID__MC_IF) {
      rc = setsockopt(s->fd, IPPROTO_IP, IP_MULTICAST_IF, &ifa, sizeof ifa);
    } else {
      struct ip_mreq mr;
      memset(&mr, 0, sizeof mr);
      mr.imr_multiaddr = ((const struct sockaddr_in *)group)->sin_addr;
      mr.imr_interface = ifa;
      rc = setsockopt(s->fd, IPPROTO_IP,
                      op == BRAID__MC_JOIN ? IP_ADD_MEMBERSHIP
                                           : IP_DROP_MEMBERSHIP,
                      &mr, sizeof mr);
    }
  } else if (family == AF_INET6) {
    if (op == BRAID__MC_IF) {
      rc = setsockopt(s->fd, IPPROTO_IPV6, IPV6_MULTICAST_IF, &ifindex,
                      sizeof ifindex);
    } else {
      struct ipv6_mreq mr;
      memset(&mr, 0, sizeof mr);
      mr.ipv6mr_multiaddr = ((const struct sockaddr_in6 *)group)->sin6_addr;
      mr.ipv6mr_interface = ifindex;
      rc = setsockopt(s->fd, IPPROTO_IPV6,
                      op == BRAID__MC_JOIN ? IPV6_JOIN_GROUP : IPV6_LEAVE_GROUP,
                      &mr, sizeof mr);
    }
  } else {
    return BRAID_EAFNOSUPPORT;
  }
  return rc < 0 ? braid__translate_sys_error(errno) : 0;
}

int braid__posix_sock_shutdown(braid__sock *s) {
  if (shutdown(s->fd, SHUT_WR) < 0)
    return braid__translate_sys_error(errno);
  return 0;
}

int braid__fd_prepare(int fd) {
  return braid__set_nonblock_cloexec(fd);
}
