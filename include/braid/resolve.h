/* braid: name resolution without blocking the loop.
 *
 * getaddrinfo() runs on the reactor's thread pool (braid/threadpool.h); the
 * result comes back as a deferred on the reactor thread. Numeric hosts are
 * answered at once, without a thread. */
#ifndef BRAID_RESOLVE_H
#define BRAID_RESOLVE_H

#include "braid/deferred.h"
#include "braid/transport.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The addresses a name resolved to, in the resolver's order. */
typedef struct braid_addr_list {
  size_t count;
  braid_addr_t addr[];
} braid_addr_list_t;

/* Resolve `host` for a stream connection to `port`. family: 0 (any),
 * AF_INET or AF_INET6. *out fires with a braid_addr_list_t * (owned by the
 * deferred's result; take it with braid_result_take to keep it, then free it
 * with braid_free), or errbacks with BRAID_ENOTFOUND (no such name),
 * BRAID_EAGAIN (temporary failure), BRAID_ENOMEM, or BRAID_EUNKNOWN. */
int braid_resolve(braid_reactor_t *r, const char *host, uint16_t port,
                  int family, braid_deferred_t *out);

#ifdef __cplusplus
}
#endif
#endif
