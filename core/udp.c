/* UDP sockets over the I/O layer (see braid/udp.h).
 *
 * One RECVFROM op is kept submitted while receiving, with read.base NULL
 * so the platform lends its shared buffer for the length of one callback.
 * Inline completions are handled in a loop, not by recursion; after
 * BRAID__UDP_BATCH datagrams in one pass the next receive is submitted
 * with BRAID__OPF_DEFER, so a flooded socket cannot starve the others.
 *
 * One SENDTO op is in flight at a time. A send first tries the kernel
 * (BRAID__OPF_TRY: whole datagram or nothing, never pending) straight from
 * the caller's memory; only what the kernel refuses is copied into the
 * queue.
 *
 * The handle's memory lives until its socket's close callback, which the
 * I/O layer runs after the last op completion. */
#include <stdlib.h>
#include <string.h>

#ifdef _WIN32
#include <winsock2.h>
#include <ws2tcpip.h>
#else
#include <netinet/in.h>
#include <sys/socket.h>
#endif

#include "braid/udp.h"
#include "core/transport.h"

#define BRAID__UDP_BATCH 64u  /* datagrams per readiness event */
#define BRAID__UDP_IOV 16u    /* pieces sent without flattening */
#define BRAID__UDP_MAX 65535u /* no UDP datagram is larger */
#define BRAID__UDP_QLIMIT (256u * 1024u)

/* A datagram waiting in the send queue. `to` has len_ 0 on a connected
 * socket. */
typedef struct braid__dgram {
  struct braid__dgram *next;
  size_t len;
  braid_addr_t to;
  char data[];
} braid__dgram;

struct braid_udp {
  braid__sock sock;
  braid__handle h;
  braid__op rop, wop;
  braid_reactor_t *r;
  const braid_udp_ops *ops;
  void *user;
  braid_addr_t from; /* rop's peer storage */
  braid_addr_t peer; /* the connected peer */
  braid__dgram *head, *tail;
  size_t queued, limit;
  braid__buf wbuf; /* the queued send in flight */
  int family;
  unsigned batch; /* datagrams delivered in this pass */
  uint8_t reading, writing, paused, closing, connected, opened;
};

static void braid__udp_read(braid_udp_t *u, int defer);

/* ------------------------------------------------------------------------
 * Errors and teardown
 * ------------------------------------------------------------------------ */

static void braid__udp_error(braid_udp_t *u, int err) {
  if (u->closing)
    return;
  if (u->ops->error != NULL) {
    u->ops->error(u, err);
    return;
  }
  braid_reactor_log(u->r, BRAID_LOG_WARN, "udp", "%s", braid_strerror(err));
}

static void braid__udp_queue_free(braid_udp_t *u) {
  braid__dgram *d = u->head;
  while (d != NULL) {
    braid__dgram *next = d->next;
    braid_free(d);
    d = next;
  }
  u->head = u->tail = NULL;
  u->queued = 0;
}

static void braid__udp_closed(braid__sock *sock) {
  braid_udp_t *u = braid__container_of(sock, braid_udp_t, sock);
  braid__handle_remove(&u->h);
  braid__udp_queue_free(u);
  if (u->opened && u->ops->closed != NULL)
    u->ops->closed(u);
  u->r->live_udp--;
  braid_free(u);
}

static void braid__udp_abort_h(braid__handle *h) {
  braid_udp_close(braid__container_of(h, braid_udp_t, h));
}

/* ------------------------------------------------------------------------
 * Receiving
 * ------------------------------------------------------------------------ */

/* Same family, port and address (the scope id and flow label do not
 * matter for telling peers apart here). */
static int braid__udp_addr_eq(const braid_addr_t *a, const braid_addr_t *b) {
  int fam = braid_addr_family(a);
  if (fam != braid_addr_family(b) || braid_addr_port(a) != braid_addr_port(b))
    return 0;
  if (fam == AF_INET)
    return memcmp(&((const struct sockaddr_in *)a->sa_.bytes)->sin_addr,
                  &((const struct sockaddr_in *)b->sa_.bytes)->sin_addr,
                  sizeof(struct in_addr)) == 0;
  if (fam == AF_INET6)
    return memcmp(&((const struct sockaddr_in6 *)a->sa_.bytes)->sin6_addr,
                  &((const struct sockaddr_in6 *)b->sa_.bytes)->sin6_addr,
                  sizeof(struct in6_addr)) == 0;
  return 0;
}

/* A receive's result. Pausing cancels the receive in flight; one that
 * completed before the cancel could take effect still says
 * BRAID_ECANCELED, and the I/O layer keeps its datagram for the receive
 * after the resume (core/io.h, cancel), so braid/udp.h's "no delivery
 * while paused" holds on every platform. */
static void braid__udp_on_read(braid_udp_t *u, intptr_t st) {
  if (st == BRAID_ECANCELED)
    return; /* paused or closing */
  if (st < 0) {
    braid__udp_error(u, (int)st);
    return;
  }
  if (u->rop.flags & BRAID__OPF_TRUNCATED) {
    braid__udp_error(u, BRAID_EMSGSIZE);
    return;
  }
  u->from.len_ = (uint32_t)u->rop.addrlen;
  /* connect() filters in the kernel from then on, but datagrams that were
   * already in the receive queue stay there (Linux, the BSDs). */
  if (u->connected && !braid__udp_addr_eq(&u->from, &u->peer))
    return;
  u->ops->datagram_received(u, u->rop.u.read.base, (size_t)st, &u->from);
}

static int braid__udp_may_read(const braid_udp_t *u) {
  return !u->reading && !u->paused && !u->closing;
}

static void braid__udp_read_cb(braid__op *op, intptr_t st) {
  braid_udp_t *u = braid__container_of(op, braid_udp_t, rop);
  u->reading = 0;
  u->batch = 1; /* a completion starts a new pass */
  braid__udp_on_read(u, st);
  /* After an error, give the loop a turn before trying again, so that an
   * error that repeats cannot spin here. */
  braid__udp_read(u, st < 0 && st != BRAID_ECANCELED);
}

/* Keep one receive submitted while receiving is wanted. */
static void braid__udp_read(braid_udp_t *u, int defer) {
  while (braid__udp_may_read(u)) {
    if (u->batch >= BRAID__UDP_BATCH)
      defer = 1;
    u->rop.type = BRAID__OP_RECVFROM;
    u->rop.flags = defer ? BRAID__OPF_DEFER : 0;
    u->rop.cb = braid__udp_read_cb;
    u->rop.u.read.base = NULL;
    u->rop.u.read.len = 0;
    u->rop.addr = braid__addr_sa(&u->from);
    u->rop.addrlen = (int)sizeof u->from.sa_;
    intptr_t st = u->r->io->submit(&u->sock, &u->rop);
    if (st == BRAID__PENDING) {
      u->reading = 1;
      return;
    }
    u->batch++;
    braid__udp_on_read(u, st);
    defer = st < 0;
  }
}

/* ------------------------------------------------------------------------
 * Sending
 * ------------------------------------------------------------------------ */

static void braid__udp_flush(braid_udp_t *u);

/* The head of the queue completed with status st. */
static void braid__udp_pop(braid_udp_t *u, intptr_t st) {
  braid__dgram *d = u->head;
  u->head = d->next;
  if (u->head == NULL)
    u->tail = NULL;
  u->queued -= d->len;
  braid_free(d);
  if (st < 0)
    braid__udp_error(u, (int)st);
}

static void braid__udp_write_cb(braid__op *op, intptr_t st) {
  braid_udp_t *u = braid__container_of(op, braid_udp_t, wop);
  u->writing = 0;
  if (st == BRAID_ECANCELED || u->head == NULL)
    return; /* closing: the queue is freed with the handle */
  braid__udp_pop(u, st);
  braid__udp_flush(u);
}

/* Submit the head of the queue; returns PENDING or its inline status. */
static intptr_t braid__udp_submit_head(braid_udp_t *u) {
  braid__dgram *d = u->head;
  u->wbuf.base = d->data;
  u->wbuf.len = d->len;
  u->wop.type = BRAID__OP_SENDTO;
  u->wop.flags = 0;
  u->wop.cb = braid__udp_write_cb;
  u->wop.u.write.bufs = &u->wbuf;
  u->wop.u.write.nbufs = 1;
  u->wop.u.write.done = 0;
  u->wop.addr = d->to.len_ ? braid__addr_sa(&d->to) : NULL;
  u->wop.addrlen = (int)d->to.len_;
  intptr_t st = u->r->io->submit(&u->sock, &u->wop);
  if (st == BRAID__PENDING)
    u->writing = 1;
  return st;
}

static void braid__udp_flush(braid_udp_t *u) {
  while (!u->writing && !u->closing && u->head != NULL) {
    intptr_t st = braid__udp_submit_head(u);
    if (st == BRAID__PENDING)
      return;
    braid__udp_pop(u, st);
  }
}

/* Where a datagram goes: *sa NULL for the connected peer. */
static int braid__udp_dest(const braid_udp_t *u, const braid_addr_t *to,
                           const braid_addr_t **dst) {
  *dst = NULL;
  if (u->connected) {
    if (to != NULL && !braid__udp_addr_eq(to, &u->peer))
      return BRAID_EISCONN;
    return 0;
  }
  if (to == NULL)
    return BRAID_ENOTCONN;
  if (braid_addr_family(to) != u->family)
    return BRAID_EAFNOSUPPORT;
  *dst = to;
  return 0;
}

int braid_udp_sendv(braid_udp_t *u, const braid_iovec_t *iov, size_t n,
                    const braid_addr_t *to) {
  if (u == NULL || (iov == NULL && n > 0))
    return BRAID_EINVAL;
  if (u->closing)
    return BRAID_ECLOSED;
  const braid_addr_t *dst;
  int rc = braid__udp_dest(u, to, &dst);
  if (rc < 0)
    return rc;
  size_t total = 0;
  for (size_t i = 0; i < n; i++) {
    if (iov[i].base == NULL && iov[i].len > 0)
      return BRAID_EINVAL;
    total += iov[i].len;
    if (total > BRAID__UDP_MAX)
      return BRAID_EMSGSIZE;
  }
  const braid__io_ops *io = u->r->io;
  /* Nothing queued: try the kernel straight from the caller's memory. An
   * empty datagram is never tried, because TRY's "0" means "not sent".
   * This is also what makes the errors the kernel reports at once
   * (EMSGSIZE, ENETUNREACH, EACCES...) this call's result, as braid/udp.h
   * promises; a platform without TRY_SENDTO reports them through error(). */
  if (u->head == NULL && !u->writing && total > 0 && n <= BRAID__UDP_IOV &&
      (io->caps & BRAID__CAP_TRY_SENDTO)) {
    braid__buf bufs[BRAID__UDP_IOV];
    for (size_t i = 0; i < n; i++) {
      bufs[i].base = (void *)iov[i].base;
      bufs[i].len = iov[i].len;
    }
    u->wop.type = BRAID__OP_SENDTO;
    u->wop.flags = BRAID__OPF_TRY;
    u->wop.cb = braid__udp_write_cb;
    u->wop.u.write.bufs = bufs;
    u->wop.u.write.nbufs = n;
    u->wop.u.write.done = 0;
    u->wop.addr = dst != NULL ? (struct sockaddr *)braid__addr_csa(dst) : NULL;
    u->wop.addrlen = dst != NULL ? (int)dst->len_ : 0;
    intptr_t st = io->submit(&u->sock, &u->wop);
    if (st < 0)
      return (int)st;
    if (st > 0)
      return 0;
  }
  if (u->head != NULL && u->queued + total > u->limit)
    return BRAID_ELIMIT;
  braid__dgram *d = braid_malloc(sizeof *d + total);
  if (d == NULL)
    return BRAID_ENOMEM;
  d->next = NULL;
  d->len = total;
  if (dst != NULL)
    d->to = *dst;
  else
    memset(&d->to, 0, sizeof d->to);
  size_t off = 0;
  for (size_t i = 0; i < n; i++) {
    if (iov[i].len > 0)
      memcpy(d->data + off, iov[i].base, iov[i].len);
    off += iov[i].len;
  }
  if (u->tail != NULL)
    u->tail->next = d;
  else
    u->head = d;
  u->tail = d;
  u->queued += total;
  if (u->writing || u->head != d)
    return 0;
  /* The only datagram in the queue: its inline failure is this call's
   * result, never a callback from inside it. */
  intptr_t st = braid__udp_submit_head(u);
  if (st == BRAID__PENDING)
    return 0;
  u->head = u->tail = NULL;
  u->queued = 0;
  braid_free(d);
  return st < 0 ? (int)st : 0;
}

int braid_udp_send(braid_udp_t *u, const void *data, size_t len,
                   const braid_addr_t *to) {
  braid_iovec_t iov;
  iov.base = data;
  iov.len = len;
  return braid_udp_sendv(u, &iov, 1, to);
}

size_t braid_udp_send_queued(const braid_udp_t *u) {
  return u != NULL ? u->queued : 0;
}

/* ------------------------------------------------------------------------
 * Opening and closing
 * ------------------------------------------------------------------------ */

int braid_udp_open(braid_reactor_t *r, const braid_addr_t *bind,
                   const braid_udp_options *opts, const braid_udp_ops *ops,
                   void *user, braid_udp_t **out) {
  static const braid_udp_options defaults = {0};
  if (out != NULL)
    *out = NULL;
  if (r == NULL || bind == NULL || ops == NULL ||
      ops->datagram_received == NULL || out == NULL)
    return BRAID_EINVAL;
  int fam = braid_addr_family(bind);
  if (fam != AF_INET && fam != AF_INET6)
    return BRAID_EINVAL;
  if (opts == NULL)
    opts = &defaults;
  if (opts->recv_buffer_size < 0 || opts->send_buffer_size < 0)
    return BRAID_EINVAL;
  braid_udp_t *u = braid_calloc(1, sizeof *u);
  if (u == NULL)
    return BRAID_ENOMEM;
  u->r = r;
  u->ops = ops;
  u->user = user;
  u->family = fam;
  u->limit =
      opts->send_queue_limit ? opts->send_queue_limit : BRAID__UDP_QLIMIT;
  const braid__io_ops *io = r->io;
  int rc = io->sock_open(r, &u->sock, fam, SOCK_DGRAM);
  if (rc < 0) {
    braid_free(u);
    return rc;
  }
  r->live_udp++;
  if (opts->reuse_addr)
    rc = io->sock_setopt(&u->sock, BRAID__SO_REUSEADDR, 1);
  if (rc == 0 && opts->reuse_port)
    rc = io->sock_setopt(&u->sock, BRAID__SO_REUSEPORT, 1);
  if (rc == 0 && fam == AF_INET6)
    rc = io->sock_setopt(&u->sock, BRAID__SO_V6ONLY, opts->ipv6_only);
  if (rc == 0 && opts->broadcast)
    rc = io->sock_setopt(&u->sock, BRAID__SO_BROADCAST, 1);
  if (rc == 0 && opts->recv_buffer_size > 0)
    rc = io->sock_setopt(&u->sock, BRAID__SO_RCVBUF, opts->recv_buffer_size);
  if (rc == 0 && opts->send_buffer_size > 0)
    rc = io->sock_setopt(&u->sock, BRAID__SO_SNDBUF, opts->send_buffer_size);
  if (rc == 0)
    rc = io->sock_bind(&u->sock, braid__addr_csa(bind), (int)bind->len_);
  if (rc < 0) {
    u->closing = 1;
    io->close(&u->sock, braid__udp_closed); /* frees u; no callback */
    return rc;
  }
  u->opened = 1;
  braid__handle_add(r, &u->h, braid__udp_abort_h);
  /* Deferred: a datagram that is already waiting must not be delivered
   * before the caller has the handle. */
  braid__udp_read(u, 1);
  *out = u;
  return 0;
}

int braid_udp_close(braid_udp_t *u) {
  if (u == NULL)
    return BRAID_EINVAL;
  if (u->closing)
    return BRAID_ECLOSED;
  u->closing = 1;
  u->r->io->close(&u->sock, braid__udp_closed);
  return 0;
}

/* ------------------------------------------------------------------------
 * Connect, addresses, pause
 * ------------------------------------------------------------------------ */

static void braid__udp_connect_cb(braid__op *op, intptr_t st) {
  braid_udp_t *u = braid__container_of(op, braid_udp_t, wop);
  u->writing = 0;
  if (st == BRAID_ECANCELED)
    return;
  if (st < 0) {
    u->connected = 0;
    braid__udp_error(u, (int)st);
  }
  braid__udp_flush(u);
}

int braid_udp_connect(braid_udp_t *u, const braid_addr_t *peer) {
  if (u == NULL || peer == NULL)
    return BRAID_EINVAL;
  if (u->closing)
    return BRAID_ECLOSED;
  if (braid_addr_family(peer) != u->family)
    return BRAID_EAFNOSUPPORT;
  if (u->writing || u->head != NULL)
    return BRAID_EBUSY;
  u->peer = *peer;
  u->wop.type = BRAID__OP_CONNECT;
  u->wop.flags = 0;
  u->wop.cb = braid__udp_connect_cb;
  u->wop.addr = braid__addr_sa(&u->peer);
  u->wop.addrlen = (int)u->peer.len_;
  intptr_t st = u->r->io->submit(&u->sock, &u->wop);
  if (st == BRAID__PENDING) {
    /* No POSIX system waits to connect a datagram socket; a platform that
     * does completes through the callback. Sends queue meanwhile. */
    u->writing = 1;
    u->connected = 1;
    return 0;
  }
  if (st < 0) {
    u->connected = 0;
    return (int)st;
  }
  u->connected = 1;
  return 0;
}

static int braid__udp_name(const braid_udp_t *u, int peer, braid_addr_t *out) {
  if (u == NULL || out == NULL)
    return BRAID_EINVAL;
  if (u->closing)
    return BRAID_ECLOSED;
  memset(out, 0, sizeof *out);
  int len = (int)sizeof out->sa_;
  int rc = u->r->io->sock_name((braid__sock *)&u->sock, peer,
                               braid__addr_sa(out), &len);
  if (rc == 0)
    out->len_ = (uint32_t)len;
  return rc;
}

int braid_udp_local_addr(const braid_udp_t *u, braid_addr_t *out) {
  return braid__udp_name(u, 0, out);
}

int braid_udp_peer_addr(const braid_udp_t *u, braid_addr_t *out) {
  if (u != NULL && out != NULL && !u->connected && !u->closing)
    return BRAID_ENOTCONN;
  return braid__udp_name(u, 1, out);
}

int braid_udp_pause(braid_udp_t *u) {
  if (u == NULL)
    return BRAID_EINVAL;
  if (u->closing)
    return BRAID_ECLOSED;
  u->paused = 1;
  if (u->reading)
    u->r->io->cancel(&u->sock, &u->rop);
  return 0;
}

int braid_udp_resume(braid_udp_t *u) {
  if (u == NULL)
    return BRAID_EINVAL;
  if (u->closing)
    return BRAID_ECLOSED;
  u->paused = 0;
  /* Resume may be called from inside datagram_received: deferring keeps
   * callbacks from nesting and the shared buffer intact. A datagram that a
   * receive cancelled by the pause brought comes first (core/io.h). */
  braid__udp_read(u, 1);
  return 0;
}

void *braid_udp_user(const braid_udp_t *u) {
  return u != NULL ? u->user : NULL;
}

braid_reactor_t *braid_udp_reactor(const braid_udp_t *u) {
  return u != NULL ? u->r : NULL;
}

/* ------------------------------------------------------------------------
 * Options and multicast
 * ------------------------------------------------------------------------ */

static int braid__udp_setopt(braid_udp_t *u, int opt, int value) {
  if (u == NULL)
    return BRAID_EINVAL;
  if (u->closing)
    return BRAID_ECLOSED;
  return u->r->io->sock_setopt(&u->sock, opt, value);
}

static int braid__udp_getopt(const braid_udp_t *u, int opt) {
  if (u == NULL)
    return BRAID_EINVAL;
  if (u->closing)
    return BRAID_ECLOSED;
  int v = 0;
  int rc = u->r->io->sock_getopt((braid__sock *)&u->sock, opt, &v);
  return rc < 0 ? rc : v;
}

int braid_udp_set_broadcast(braid_udp_t *u, bool on) {
  return braid__udp_setopt(u, BRAID__SO_BROADCAST, on);
}

int braid_udp_get_broadcast(const braid_udp_t *u) {
  int v = braid__udp_getopt(u, BRAID__SO_BROADCAST);
  return v < 0 ? v : v != 0;
}

int braid_udp_set_multicast_ttl(braid_udp_t *u, int ttl) {
  if (ttl < 0 || ttl > 255)
    return BRAID_EINVAL;
  return braid__udp_setopt(u, BRAID__SO_MULTICAST_TTL, ttl);
}

int braid_udp_get_multicast_ttl(const braid_udp_t *u) {
  return braid__udp_getopt(u, BRAID__SO_MULTICAST_TTL);
}

int braid_udp_set_multicast_loopback(braid_udp_t *u, bool on) {
  return braid__udp_setopt(u, BRAID__SO_MULTICAST_LOOP, on);
}

int braid_udp_get_multicast_loopback(const braid_udp_t *u) {
  int v = braid__udp_getopt(u, BRAID__SO_MULTICAST_LOOP);
  return v < 0 ? v : v != 0;
}

/* Parse `iface` (see braid/udp.h) into an IPv4 address or an IPv6 index. */
static int braid__udp_iface(const braid_udp_t *u, const char *iface,
                            braid_addr_t *a4, int *have4, unsigned *index) {
  *have4 = 0;
  *index = 0;
  if (iface == NULL)
    return 0;
  if (u->family == AF_INET) {
    if (braid_addr_ip(a4, iface, 0) < 0 || braid_addr_family(a4) != AF_INET)
      return BRAID_EINVAL;
    *have4 = 1;
    return 0;
  }
  if (*iface == '\0')
    return BRAID_EINVAL;
  if (iface[strspn(iface, "0123456789")] == '\0') {
    char *end;
    unsigned long v = strtoul(iface, &end, 10);
    if (v == 0 || v > 0xffffffffu)
      return BRAID_EINVAL;
    *index = (unsigned)v;
    return 0;
  }
  return braid__if_index(iface, index);
}

static int braid__udp_membership(braid_udp_t *u, int op,
                                 const braid_addr_t *group, const char *iface) {
  if (u == NULL || group == NULL)
    return BRAID_EINVAL;
  if (u->closing)
    return BRAID_ECLOSED;
  if (braid_addr_family(group) != u->family)
    return BRAID_EAFNOSUPPORT;
  braid_addr_t a4;
  int have4;
  unsigned index;
  int rc = braid__udp_iface(u, iface, &a4, &have4, &index);
  if (rc < 0)
    return rc;
  if (u->family == AF_INET6 && iface == NULL)
    index = ((const struct sockaddr_in6 *)group->sa_.bytes)->sin6_scope_id;
  return u->r->io->sock_mcast(&u->sock, op, u->family, braid__addr_csa(group),
                              have4 ? braid__addr_csa(&a4) : NULL, index);
}

int braid_udp_join_group(braid_udp_t *u, const braid_addr_t *group,
                         const char *iface) {
  return braid__udp_membership(u, BRAID__MC_JOIN, group, iface);
}

int braid_udp_leave_group(braid_udp_t *u, const braid_addr_t *group,
                          const char *iface) {
  return braid__udp_membership(u, BRAID__MC_LEAVE, group, iface);
}

int braid_udp_set_multicast_interface(braid_udp_t *u, const char *iface) {
  if (u == NULL)
    return BRAID_EINVAL;
  if (u->closing)
    return BRAID_ECLOSED;
  braid_addr_t a4;
  int have4;
  unsigned index;
  int rc = braid__udp_iface(u, iface, &a4, &have4, &index);
  if (rc < 0)
    return rc;
  return u->r->io->sock_mcast(&u->sock, BRAID__MC_IF, u->family, NULL,
                              have4 ? braid__addr_csa(&a4) : NULL, index);
}
