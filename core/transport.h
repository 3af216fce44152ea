/* Transport internals: the vtable every transport implements (streams,
 * the in-memory test transport, TLS) and the state core keeps for all of
 * them, so that argument checks and flow control exist once. */
#ifndef BRAID_CORE_TRANSPORT_H
#define BRAID_CORE_TRANSPORT_H

#include "braid/transport.h"
#include "core/internal.h"

struct sockaddr;

/* braid_transport.state bits */
#define BRAID__T_CLOSING 0x01u       /* close() asked: flush, then close */
#define BRAID__T_WR_SHUT 0x02u       /* shutdown_write() asked */
#define BRAID__T_READ_PAUSED 0x04u   /* pause_reading() */
#define BRAID__T_PRODUCER_PAUSED 0x08u /* pause_writing() was sent */
#define BRAID__T_DEAD 0x10u          /* failed or aborted: writes dropped */
#define BRAID__T_EOF 0x20u           /* the peer shut down writing */

enum braid__close_how { BRAID__CLOSE, BRAID__ABORT, BRAID__SHUTDOWN_WRITE };
enum braid__sockopt_t { BRAID__T_NODELAY, BRAID__T_KEEPALIVE };

typedef struct braid__transport_vt {
  /* Queue iov for writing. With release != NULL, n == 1 and the memory is
   * handed over (zero-copy). Updates t->queued. */
  int (*write)(braid_transport_t *t, const braid_iovec_t *iov, size_t n,
               braid_release_cb release, void *arg);
  /* Start closing as `how` says; state bits are already set. */
  int (*close)(braid_transport_t *t, int how);
  /* Reading was paused (on = 0) or resumed (on = 1). */
  int (*set_reading)(braid_transport_t *t, int on);
  /* Local or peer address. NULL: BRAID_ENOTSUP. */
  int (*addr)(braid_transport_t *t, int peer, braid_addr_t *out);
  /* A BRAID__T_* socket option. NULL: BRAID_ENOTSUP. */
  int (*sockopt)(braid_transport_t *t, int opt, int on, unsigned value);
  /* Queue len bytes of a file from offset (braid_transport_sendfile).
   * NULL, or BRAID_ENOTSUP at run time: the caller falls back to reading
   * the file itself. Updates t->queued. */
  int (*sendfile)(braid_transport_t *t, int fd, uint64_t offset, size_t len,
                  braid_release_cb release, void *arg);
} braid__transport_vt;

struct braid_transport {
  const braid__transport_vt *vt;
  braid_protocol_t *proto;
  braid_reactor_t *reactor;
  size_t queued;
  size_t high, low;
  unsigned state;
};

void braid__transport_init(braid_transport_t *t, const braid__transport_vt *vt,
                           braid_reactor_t *r, braid_protocol_t *p);
/* After t->queued dropped: send resume_writing when it fell below low. */
void braid__transport_drained(braid_transport_t *t);
/* After t->queued grew: send pause_writing when it passed high. */
void braid__transport_filled(braid_transport_t *t);

struct sockaddr *braid__addr_sa(braid_addr_t *a);
const struct sockaddr *braid__addr_csa(const braid_addr_t *a);

#endif
