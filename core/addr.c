/* Socket addresses: numeric parsing and formatting, no name lookups. */
#include <stdio.h>
#include <string.h>

#ifdef _WIN32
#include <winsock2.h>
#include <ws2tcpip.h>
#include <afunix.h>
#else
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/un.h>
#endif

#include "braid/transport.h"
#include "core/transport.h"

_Static_assert(sizeof(((braid_addr_t *)0)->sa_) >= sizeof(struct sockaddr_storage),
               "braid_addr_t must hold any sockaddr");

struct sockaddr *braid__addr_sa(braid_addr_t *a) {
  return (struct sockaddr *)a->sa_.bytes;
}

const struct sockaddr *braid__addr_csa(const braid_addr_t *a) {
  return (const struct sockaddr *)a->sa_.bytes;
}

int braid_addr_ip(braid_addr_t *out, const char *ip, uint16_t port) {
  if (out == NULL || ip == NULL)
    return BRAID_EINVAL;
  memset(out, 0, sizeof *out);
  char buf[64];
  size_t n = strlen(ip);
  /* "[::1]" is accepted as well as "::1". */
  if (n >= 2 && ip[0] == '[' && ip[n - 1] == ']') {
    if (n - 2 >= sizeof buf)
      return BRAID_EINVAL;
    memcpy(buf, ip + 1, n - 2);
    buf[n - 2] = '\0';
    ip = buf;
  }
  struct sockaddr_in *in4 = (struct sockaddr_in *)out->sa_.bytes;
  if (inet_pton(AF_INET, ip, &in4->sin_addr) == 1) {
    in4->sin_family = AF_INET;
    in4->sin_port = htons(port);
    out->len_ = sizeof *in4;
    return 0;
  }
  struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)out->sa_.bytes;
  memset(out, 0, sizeof *out);
  if (inet_pton(AF_INET6, ip, &in6->sin6_addr) == 1) {
    in6->sin6_family = AF_INET6;
    in6->sin6_port = htons(port);
    out->len_ = sizeof *in6;
    return 0;
  }
  memset(out, 0, sizeof *out);
  return BRAID_EINVAL;
}

int braid_addr_unix(braid_addr_t *out, const char *path) {
  if (out == NULL || path == NULL || *path == '\0')
    return BRAID_EINVAL;
  memset(out, 0, sizeof *out);
  struct sockaddr_un *un = (struct sockaddr_un *)out->sa_.bytes;
  size_t n = strlen(path);
  if (n >= sizeof un->sun_path)
    return BRAID_ENAMETOOLONG;
  un->sun_family = AF_UNIX;
  memcpy(un->sun_path, path, n);
  out->len_ = (uint32_t)(offsetof(struct sockaddr_un, sun_path) + n + 1);
#ifdef __linux__
  /* Linux's abstract namespace: a leading NUL, and the length counts only
   * the name's bytes (no terminator). '@' is the usual spelling. */
  if (path[0] == '@') {
    un->sun_path[0] = '\0';
    out->len_ = (uint32_t)(offsetof(struct sockaddr_un, sun_path) + n);
  }
#endif
  return 0;
}

int braid_addr_family(const braid_addr_t *a) {
  if (a == NULL || a->len_ == 0)
    return 0;
  return braid__addr_csa(a)->sa_family;
}

uint16_t braid_addr_port(const braid_addr_t *a) {
  switch (braid_addr_family(a)) {
  case AF_INET:
    return ntohs(((const struct sockaddr_in *)a->sa_.bytes)->sin_port);
  case AF_INET6:
    return ntohs(((const struct sockaddr_in6 *)a->sa_.bytes)->sin6_port);
  default:
    return 0;
  }
}

int braid_addr_format(const braid_addr_t *a, char *buf, size_t size) {
  if (a == NULL || buf == NULL || size == 0)
    return BRAID_EINVAL;
  char ip[INET6_ADDRSTRLEN];
  int n;
  switch (braid_addr_family(a)) {
  case AF_INET:
    inet_ntop(AF_INET, &((const struct sockaddr_in *)a->sa_.bytes)->sin_addr,
              ip, sizeof ip);
    n = snprintf(buf, size, "%s:%u", ip, braid_addr_port(a));
    break;
  case AF_INET6:
    inet_ntop(AF_INET6,
              &((const struct sockaddr_in6 *)a->sa_.bytes)->sin6_addr, ip,
              sizeof ip);
    n = snprintf(buf, size, "[%s]:%u", ip, braid_addr_port(a));
    break;
  case AF_UNIX: {
    const struct sockaddr_un *un = (const struct sockaddr_un *)a->sa_.bytes;
    size_t plen = a->len_ - offsetof(struct sockaddr_un, sun_path);
    if (plen > 0 && un->sun_path[0] == '\0') /* abstract */
      n = snprintf(buf, size, "unix:@%.*s", (int)(plen - 1), un->sun_path + 1);
    else
      n = snprintf(buf, size, "unix:%s", un->sun_path);
    break;
  }
  default:
    return BRAID_EINVAL;
  }
  if (n < 0)
    return BRAID_EINVAL;
  return (size_t)n >= size ? (int)size - 1 : n;
}
