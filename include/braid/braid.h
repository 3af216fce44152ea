/* braid: an event-driven networking engine. Include this for everything. */
#ifndef BRAID_BRAID_H
#define BRAID_BRAID_H

#include "braid/alloc.h"
#include "braid/basic.h"
#include "braid/endpoint.h"
#include "braid/deferred.h"
#include "braid/embed.h"
#include "braid/error.h"
#include "braid/failure.h"
#include "braid/http.h"
#include "braid/http_client.h"
#include "braid/http_parser.h"
#include "braid/log.h"
#include "braid/policy.h"
#include "braid/reactor.h"
#include "braid/resolve.h"
#include "braid/service.h"
#include "braid/transport.h"
#include "braid/threadpool.h"
#include "braid/tls.h"
#include "braid/udp.h"
#include "braid/version.h"

#endif
