/* Winsock calls done at once, shared through the ops table of the IOCP
 * layer (core/io.h): binding, listening, names, options, multicast,
 * shutdown, and closing a descriptor that was never registered. Every
 * overlapped operation is in iocp.c. */
#include <winsock2.h>
#include <windows.h>
#include <mswsock.h>
#include <ws2tcpip.h>
#include <limits.h>
#include <string.h>

#include "core/internal.h"
#include "platform/win32/win32.h"

intptr_t braid__wsa_error(void) {
  return braid__translate_sys_error(WSAGetLastError());
}

void braid__iocp_fd_close(braid__fd fd) {
  closesocket(fd);
}

int braid__iocp_sock_bind(braid__sock *s, const struct sockaddr *a, int len) {
  if (bind(s->fd, a, len) != 0)
    return (int)braid__wsa_error();
  braid__ws(s)->flags |= BRAID__W_BOUND;
  return 0;
}

int braid__iocp_sock_listen(braid__sock *s, int backlog) {
  if (listen(s->fd, backlog) != 0)
    return (int)braid__wsa_error();
  return 0;
}

int braid__iocp_sock_name(braid__sock *s, int peer, struct sockaddr *a,
                          int *len) {
  int rc = peer ? getpeername(s->fd, a, len) : getsockname(s->fd, a, len);
  return rc == 0 ? 0 : (int)braid__wsa_error();
}

static int braid__setopt(SOCKET fd, int level, int name, int value) {
  if (setsockopt(fd, level, name, (const char *)&value, sizeof value) != 0)
    return (int)braid__wsa_error();
  return 0;
}

/* The level and name of a datagram option that sock_setopt and
 * sock_getopt share; 0 or BRAID_E*. Every one of them takes a DWORD on
 * Windows, IP_MULTICAST_TTL and IP_MULTICAST_LOOP included (POSIX systems
 * differ there: the BSDs want an unsigned char). */
static int braid__dgram_opt(braid__sock *s, int opt, int *level, int *name) {
  int family = braid__ws(s)->family;
  int v6 = family == AF_INET6;
  switch (opt) {
  case BRAID__SO_BROADCAST:
    *level = SOL_SOCKET;
    *name = SO_BROADCAST;
    return 0;
  case BRAID__SO_RCVBUF:
    *level = SOL_SOCKET;
    *name = SO_RCVBUF;
    return 0;
  case BRAID__SO_SNDBUF:
    *level = SOL_SOCKET;
    *name = SO_SNDBUF;
    return 0;
  case BRAID__SO_MULTICAST_TTL:
  case BRAID__SO_MULTICAST_LOOP:
    if (family != AF_INET && family != AF_INET6)
      return BRAID_EAFNOSUPPORT;
    *level = v6 ? IPPROTO_IPV6 : IPPROTO_IP;
    if (opt == BRAID__SO_MULTICAST_TTL)
      *name = v6 ? IPV6_MULTICAST_HOPS : IP_MULTICAST_TTL;
    else
      *name = v6 ? IPV6_MULTICAST_LOOP : IP_MULTICAST_LOOP;
    return 0;
  }
  return BRAID_EINVAL;
}

int braid__iocp_sock_getopt(braid__sock *s, int opt, int *value) {
  *value = 0;
  int level, name;
  int rc = braid__dgram_opt(s, opt, &level, &name);
  if (rc < 0)
    return rc;
  DWORD v = 0;
  int len = (int)sizeof v;
  if (getsockopt(s->fd, level, name, (char *)&v, &len) != 0)
    return (int)braid__wsa_error();
  /* A provider that answers with fewer bytes (a BOOL as one char) filled
   * only the low ones of the zeroed DWORD. */
  *value = v > INT_MAX ? INT_MAX : (int)v;
  return 0;
}

int braid__iocp_sock_setopt(braid__sock *s, int opt, int value) {
  switch (opt) {
  case BRAID__SO_RCVBUF:
  case BRAID__SO_SNDBUF:
  case BRAID__SO_MULTICAST_TTL:
  case BRAID__SO_MULTICAST_LOOP: {
    int level, name;
    int rc = braid__dgram_opt(s, opt, &level, &name);
    if (rc < 0)
      return rc;
    if (opt == BRAID__SO_MULTICAST_LOOP)
      value = value != 0;
    return braid__setopt(s->fd, level, name, value);
  }
  case BRAID__SO_LINGER0: {
    /* Linger on with a zero timeout: closesocket() then resets the
     * connection (RST) and drops unsent data, instead of the graceful
     * FIN that Windows sends by default. */
    struct linger lg;
    lg.l_onoff = value != 0;
    lg.l_linger = 0;
    if (setsockopt(s->fd, SOL_SOCKET, SO_LINGER, (const char *)&lg,
                   sizeof lg) != 0)
      return (int)braid__wsa_error();
    return 0;
  }
  case BRAID__SO_REUSEADDR:
    /* What POSIX listeners want from SO_REUSEADDR (binding while old
     * connections sit in TIME_WAIT) is Windows' default; Windows'
     * SO_REUSEADDR would let another socket steal the port instead. On a
     * datagram socket it is what POSIX gives: several sockets (multicast
     * receivers) bound to one port, as braid_udp_options.reuse_addr says. */
    if (braid__ws(s)->flags & BRAID__W_STREAM)
      return 0;
    return braid__setopt(s->fd, SOL_SOCKET, SO_REUSEADDR, value);
  case BRAID__SO_REUSEPORT:
    return BRAID_ENOTSUP;
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
    /* The idle time; TCP_KEEPIDLE exists only from Windows 10 1709. */
    struct tcp_keepalive ka = {1, (ULONG)value * 1000u, 1000u};
    DWORD got = 0;
    if (WSAIoctl(s->fd, SIO_KEEPALIVE_VALS, &ka, sizeof ka, NULL, 0, &got, NULL,
                 NULL) != 0)
      return (int)braid__wsa_error();
    return 0;
  }
  }
  return BRAID_EINVAL;
}

/* ip_mreq (interface by address) for IPv4, ipv6_mreq (interface by
 * index) for IPv6: the same structures as POSIX, under Windows' option
 * names (IPV6_ADD_MEMBERSHIP is POSIX's IPV6_JOIN_GROUP). */
int braid__iocp_sock_mcast(braid__sock *s, int op, int family,
                           const struct sockaddr *group,
                           const struct sockaddr *iface4, unsigned ifindex) {
  int rc;
  if (family == AF_INET) {
    struct in_addr ifa;
    ifa.s_addr = htonl(INADDR_ANY);
    if (iface4 != NULL)
      ifa = ((const struct sockaddr_in *)(const void *)iface4)->sin_addr;
    if (op == BRAID__MC_IF) {
      rc = setsockopt(s->fd, IPPROTO_IP, IP_MULTICAST_IF, (const char *)&ifa,
                      sizeof ifa);
    } else {
      struct ip_mreq mr;
      memset(&mr, 0, sizeof mr);
      mr.imr_multiaddr =
          ((const struct sockaddr_in *)(const void *)group)->sin_addr;
      mr.imr_interface = ifa;
      rc = setsockopt(s->fd, IPPROTO_IP,
                      op == BRAID__MC_JOIN ? IP_ADD_MEMBERSHIP
                                           : IP_DROP_MEMBERSHIP,
                      (const char *)&mr, sizeof mr);
    }
  } else if (family == AF_INET6) {
    if (op == BRAID__MC_IF) {
      DWORD index = ifindex;
      rc = setsockopt(s->fd, IPPROTO_IPV6, IPV6_MULTICAST_IF,
                      (const char *)&index, sizeof index);
    } else {
      struct ipv6_mreq mr;
      memset(&mr, 0, sizeof mr);
      mr.ipv6mr_multiaddr =
          ((const struct sockaddr_in6 *)(const void *)group)->sin6_addr;
      mr.ipv6mr_interface = ifindex;
      rc = setsockopt(s->fd, IPPROTO_IPV6,
                      op == BRAID__MC_JOIN ? IPV6_ADD_MEMBERSHIP
                                           : IPV6_DROP_MEMBERSHIP,
                      (const char *)&mr, sizeof mr);
    }
  } else {
    return BRAID_EAFNOSUPPORT;
  }
  return rc == 0 ? 0 : (int)braid__wsa_error();
}

int braid__iocp_sock_shutdown(braid__sock *s) {
  if (shutdown(s->fd, SD_SEND) != 0)
    return (int)braid__wsa_error();
  return 0;
}

/* Pipes are not braid transports on Windows yet (no BRAID__CAP_PIPE). */
int braid__fd_prepare(int fd) {
  (void)fd;
  return BRAID_ENOTSUP;
}
