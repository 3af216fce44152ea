/* Declarations shared by the Windows platform files (iocp.c, sock.c,
 * signal.c, sys.c). */
#ifndef BRAID_PLATFORM_WIN32_H
#define BRAID_PLATFORM_WIN32_H

#include "core/internal.h"

/* Start Winsock 2.2 once per process (WSAStartup); 0 or BRAID_E*. Every
 * reactor calls it; the first call does the work. */
int braid__winsock_init(void);

/* The last Winsock error as BRAID_E*. */
intptr_t braid__wsa_error(void);

/* braid__wsock.flags */
#define BRAID__W_SKIP 0x2u  /* FILE_SKIP_COMPLETION_PORT_ON_SUCCESS is set */
#define BRAID__W_BOUND 0x4u /* bound: ConnectEx may be called */
#define BRAID__W_STREAM 0x8u

/* A socket's record (braid__sock's private storage). */
typedef struct braid__wsock {
  unsigned flags; /* BRAID__W_* */
  int family;     /* from the socket's protocol info */
} braid__wsock;
BRAID__PRIV_FITS(braid__wsock, braid__sock);

static inline braid__wsock *braid__ws(braid__sock *s) {
  return BRAID__PRIV(braid__wsock, s);
}

/* Ops-table slots that are plain Winsock calls (sock.c). */
void braid__iocp_fd_close(braid__fd fd);
int braid__iocp_sock_bind(braid__sock *s, const struct sockaddr *a, int len);
int braid__iocp_sock_listen(braid__sock *s, int backlog);
int braid__iocp_sock_name(braid__sock *s, int peer, struct sockaddr *a,
                          int *len);
int braid__iocp_sock_getopt(braid__sock *s, int opt, int *value);
int braid__iocp_sock_setopt(braid__sock *s, int opt, int value);
int braid__iocp_sock_mcast(braid__sock *s, int op, int family,
                           const struct sockaddr *group,
                           const struct sockaddr *iface4, unsigned ifindex);
int braid__iocp_sock_shutdown(braid__sock *s);

/* signal.c: the completion key of a wakeup packet, which the console
 * handler posts to the port of each reactor watching signals. */
#define BRAID__KEY_WAKE 2

#endif
