/* Transport internals. The vtable, the struct and the state bits are
 * public (braid/transport_impl.h), so that modules outside core implement
 * transports the same way; core's own transports (streams, the memory
 * transport) use that header too. What is left here are core's short
 * names for the public bits and the socket address helpers. */
#ifndef BRAID_CORE_TRANSPORT_H
#define BRAID_CORE_TRANSPORT_H

#include "braid/transport_impl.h"
#include "core/internal.h"

struct sockaddr;

/* braid_transport.state bits */
#define BRAID__T_CLOSING BRAID_TRANSPORT_CLOSING
#define BRAID__T_WR_SHUT BRAID_TRANSPORT_WRITE_SHUT
#define BRAID__T_READ_PAUSED BRAID_TRANSPORT_READ_PAUSED
#define BRAID__T_PRODUCER_PAUSED BRAID_TRANSPORT_WRITE_PAUSED
#define BRAID__T_DEAD BRAID_TRANSPORT_DEAD
#define BRAID__T_EOF BRAID_TRANSPORT_EOF

/* vt->close's `how` and vt->sockopt's `opt` */
#define BRAID__CLOSE BRAID_TRANSPORT_CLOSE
#define BRAID__ABORT BRAID_TRANSPORT_ABORT
#define BRAID__SHUTDOWN_WRITE BRAID_TRANSPORT_SHUTDOWN_WRITE
#define BRAID__T_NODELAY BRAID_TRANSPORT_OPT_NODELAY
#define BRAID__T_KEEPALIVE BRAID_TRANSPORT_OPT_KEEPALIVE

typedef braid_transport_vt braid__transport_vt;

struct sockaddr *braid__addr_sa(braid_addr_t *a);
const struct sockaddr *braid__addr_csa(const braid_addr_t *a);

#endif
