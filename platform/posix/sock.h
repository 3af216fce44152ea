/* POSIX socket syscalls shared by the I/O implementations that run on
 * POSIX systems (the readiness engine, io_uring). See sock.c. */
#ifndef BRAID_POSIX_SOCK_H
#define BRAID_POSIX_SOCK_H

#include "core/internal.h"

/* Make fd non-blocking and close-on-exec. 0 or BRAID_E*. */
int braid__set_nonblock_cloexec(int fd);
/* A new non-blocking, close-on-exec socket: the descriptor, or BRAID_E*. */
int braid__sock_socket(int family, int type);

/* Wake a loop through its eventfd or the write end of its pipe: an 8-byte
 * 1 (EAGAIN means it is non-empty already: the loop wakes anyway).
 * Async-signal-safe. */
void braid__posix_wake(int fd);

/* One datagram from op's buffers to op->addr (or the connected peer),
 * without waiting: its size, BRAID_EAGAIN when the send buffer is full, or
 * the kernel's verdict (EMSGSIZE, ENETUNREACH, ECONNREFUSED...). */
intptr_t braid__posix_sendto(int fd, const braid__op *op);

/* Ops-table slots that are plain syscalls (core/io.h). */
void braid__posix_fd_close(braid__fd fd);
int braid__posix_sock_bind(braid__sock *s, const struct sockaddr *a, int len);
int braid__posix_sock_listen(braid__sock *s, int backlog);
int braid__posix_sock_name(braid__sock *s, int peer, struct sockaddr *a,
                           int *len);
int braid__posix_sock_setopt(braid__sock *s, int opt, int value);
int braid__posix_sock_shutdown(braid__sock *s);
int braid__posix_sock_getopt(braid__sock *s, int opt, int *value);
int braid__posix_sock_mcast(braid__sock *s, int op, int family,
                            const struct sockaddr *group,
                            const struct sockaddr *iface4, unsigned ifindex);

#endif
