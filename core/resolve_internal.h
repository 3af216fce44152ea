#ifndef BRAID_CORE_RESOLVE_INTERNAL_H
#define BRAID_CORE_RESOLVE_INTERNAL_H
#include "braid/endpoint.h"
/* Resolve host, then connect p to each address in turn (core/resolve.c). */
int braid__connect_name(braid_reactor_t *r, const char *host, uint16_t port,
                        int family, const braid_connect_options *opts,
                        braid_protocol_t *p);
#endif
