/* braid: UDP sockets and IP multicast (Twisted's DatagramProtocol).
 *
 * A UDP socket is a handle with three callbacks: datagram_received for
 * each datagram, error for errors that do not end the socket, closed once
 * at the end. It receives from the moment it is opened until it is paused
 * or closed (while receiving, it keeps braid_reactor_run() running, as a
 * listener does); each readiness event delivers many datagrams (up to an
 * internal cap, then the loop serves other sockets and comes back).
 *
 * Receiving uses the reactor's shared read buffer: an idle UDP socket
 * holds no buffer. That buffer is 64 KiB on the POSIX engine, larger than
 * any UDP datagram over IPv4 or IPv6 without jumbograms. A datagram that
 * does not fit the platform's buffer (possible where the platform's
 * buffers are smaller) is not delivered cut short: it is dropped and
 * reported through error() as BRAID_EMSGSIZE.
 *
 * Sending copies: braid tries the send at once (one syscall, no copy, on
 * the POSIX engine); a datagram the kernel cannot take now is copied into
 * a send queue and sent, in order, when the socket becomes writable. The
 * queue is bounded (braid_udp_options.send_queue_limit); past the limit a
 * send is refused with BRAID_ELIMIT and the datagram dropped, as a full
 * router queue would drop it. UDP gives no delivery guarantee anyway.
 *
 * Lifetime: braid_udp_close() (or braid_reactor_destroy() on a socket
 * still open) stops everything at once and drops queued datagrams;
 * closed() follows from the loop (from inside destroy, in that case), and
 * after it returns the handle is gone.
 *
 * Addresses: 127.0.0.1 or ::1-style braid_addr_t (braid/transport.h).
 * Interfaces for multicast are given as strings: for IPv4 the numeric
 * address of the interface ("127.0.0.1"), for IPv6 an interface name
 * ("lo", "eth0") or index ("1"). NULL lets the kernel choose.
 */
#ifndef BRAID_UDP_H
#define BRAID_UDP_H

#include <stdbool.h>
#include <stddef.h>

#include "braid/reactor.h"
#include "braid/transport.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct braid_udp braid_udp_t;

typedef struct braid_udp_ops {
  /* One datagram arrived from `from`. `data` is valid only during the
   * call. Required. The handle may be closed or paused from here. */
  void (*datagram_received)(braid_udp_t *u, const void *data, size_t len,
                            const braid_addr_t *from);
  /* An error that does not end the socket: BRAID_ECONNREFUSED when a
   * connected socket's peer answered with ICMP port unreachable (Linux,
   * the BSDs and macOS report this only for connected sockets),
   * BRAID_EMSGSIZE for a truncated datagram (see above), and failures of
   * datagrams that were queued and sent later. Optional (NULL: logged at
   * BRAID_LOG_WARN). */
  void (*error)(braid_udp_t *u, int err);
  /* Last call: the socket is closed and the handle is freed after this
   * returns. Optional. */
  void (*closed)(braid_udp_t *u);
} braid_udp_ops;

/* A zero-filled struct (or NULL) means the defaults. */
typedef struct braid_udp_options {
  size_t send_queue_limit; /* bytes queued before sends fail with
                              BRAID_ELIMIT; 0: 256 KiB. A datagram is
                              always accepted into an empty queue. */
  int recv_buffer_size;    /* SO_RCVBUF in bytes; 0: the system's */
  int send_buffer_size;    /* SO_SNDBUF in bytes; 0: the system's */
  bool reuse_addr;         /* SO_REUSEADDR: several sockets may bind one port
                              (multicast receivers usually want it) */
  bool reuse_port;         /* SO_REUSEPORT, where the OS has it */
  bool ipv6_only;          /* IPV6_V6ONLY for an IPv6 socket */
  bool broadcast;          /* SO_BROADCAST (see braid_udp_set_broadcast) */
} braid_udp_options;

/* Open a UDP socket bound to `bind` (an IPv4 or IPv6 address; port 0 for
 * any port) and start receiving. `ops` must outlive the socket; `user` is
 * yours (braid_udp_user). No callback runs from inside this call. Returns
 * 0 and sets *out, or a BRAID_E* code (BRAID_EADDRINUSE, ...) and *out is
 * NULL. */
int braid_udp_open(braid_reactor_t *r, const braid_addr_t *bind,
                   const braid_udp_options *opts, const braid_udp_ops *ops,
                   void *user, braid_udp_t **out);

/* Close: stop receiving, drop queued datagrams, closed() follows from the
 * loop. BRAID_ECLOSED if already closing. May be called from any of the
 * socket's callbacks. */
int braid_udp_close(braid_udp_t *u);

/* Send one datagram to `to`, or to the connected peer when `to` is NULL
 * (after braid_udp_connect, `to` must be NULL or the peer). The data is
 * copied or sent before this returns. Returns 0 when sent or queued, or:
 *   BRAID_ENOTCONN     `to` is NULL on a socket that is not connected
 *   BRAID_EISCONN      `to` is not the connected peer
 *   BRAID_EAFNOSUPPORT `to` is not of the socket's family
 *   BRAID_EMSGSIZE     larger than 65535 bytes or than the kernel allows
 *   BRAID_ELIMIT       the send queue is full: the datagram was dropped
 *   BRAID_ECONNREFUSED an earlier datagram of a connected socket was
 *                      refused; this one was not sent (each refusal is
 *                      reported once: here or through error())
 *   BRAID_EACCES       a broadcast address without SO_BROADCAST
 *   BRAID_ECLOSED, BRAID_ENOMEM, or another error from the kernel.
 * A datagram that was queued and fails later is reported through error().
 */
int braid_udp_send(braid_udp_t *u, const void *data, size_t len,
                   const braid_addr_t *to);
/* The same, gathering one datagram from n pieces. */
int braid_udp_sendv(braid_udp_t *u, const braid_iovec_t *iov, size_t n,
                    const braid_addr_t *to);

/* Bytes waiting in the send queue. */
size_t braid_udp_send_queued(const braid_udp_t *u);

/* Connected UDP: send to `peer` without naming it, and receive only its
 * datagrams (the kernel filters; braid also drops any datagram from
 * another address that was queued before the connect). ICMP errors for
 * the peer are reported (BRAID_ECONNREFUSED). May be called again to
 * change the peer. BRAID_EBUSY while datagrams are queued for sending. */
int braid_udp_connect(braid_udp_t *u, const braid_addr_t *peer);

/* The bound address (with the real port after binding port 0), and the
 * connected peer (BRAID_ENOTCONN if none). */
int braid_udp_local_addr(const braid_udp_t *u, braid_addr_t *out);
int braid_udp_peer_addr(const braid_udp_t *u, braid_addr_t *out);

/* SO_BROADCAST: allow sending to broadcast addresses. get returns 1, 0 or
 * a BRAID_E* code. */
int braid_udp_set_broadcast(braid_udp_t *u, bool on);
int braid_udp_get_broadcast(const braid_udp_t *u);

/* Join or leave the multicast `group` (port ignored; same family as the
 * socket) on interface `iface` (see the top of this file; for IPv6, NULL
 * uses the group address's scope id, if any). A socket receives a group's
 * datagrams when it is bound to the group's port on the wildcard address
 * or on the group address itself. */
int braid_udp_join_group(braid_udp_t *u, const braid_addr_t *group,
                         const char *iface);
int braid_udp_leave_group(braid_udp_t *u, const braid_addr_t *group,
                          const char *iface);

/* Multicast sending: the TTL (IPv4) or hop limit (IPv6), 0..255; 1 by
 * default, 0 keeps datagrams on this host. get returns it or a BRAID_E*
 * code. */
int braid_udp_set_multicast_ttl(braid_udp_t *u, int ttl);
int braid_udp_get_multicast_ttl(const braid_udp_t *u);

/* Whether this host's own members receive what it sends to a group (on by
 * default). get returns 1, 0 or a BRAID_E* code. */
int braid_udp_set_multicast_loopback(braid_udp_t *u, bool on);
int braid_udp_get_multicast_loopback(const braid_udp_t *u);

/* The interface multicast is sent through (NULL: the kernel's choice). */
int braid_udp_set_multicast_interface(braid_udp_t *u, const char *iface);

/* Stop / restart delivering datagrams. While paused, datagrams wait in the
 * kernel's receive buffer (and are dropped by the kernel when it is full).
 * A paused socket with nothing queued to send does not keep
 * braid_reactor_run() running. Pausing twice is the same as once. */
int braid_udp_pause(braid_udp_t *u);
int braid_udp_resume(braid_udp_t *u);

void *braid_udp_user(const braid_udp_t *u);
braid_reactor_t *braid_udp_reactor(const braid_udp_t *u);

#ifdef __cplusplus
}
#endif
#endif
