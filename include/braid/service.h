/* braid: services for programs (Twisted's twisted.application.service:
 * IService and MultiService, with TCPServer/ClientService children).
 *
 * A program is a tree of services started and stopped together:
 *
 *   - a group (MultiService) holds children; starting it starts them in the
 *     order they were added, stopping it stops them all at once (asked in
 *     reverse order) and completes when the last one has stopped;
 *   - a listener listens on an endpoint description (braid/endpoint.h) with
 *     a factory, under a policy (braid/policy.h: limits, throttling, idle
 *     timeout) and knows its open connections;
 *   - a client keeps one connection up (a braid_client_service_t);
 *   - a custom service runs your own start and stop functions.
 *
 * Graceful shutdown: braid_service_stop(s, grace, &d) stops accepting at
 * once (every listener closes), tells each open connection through its
 * listener's drain callback, lets in-flight work finish, and aborts what is
 * still open `grace` ns later (on the reactor clock, so a manual clock
 * drives it in tests). `d` fires when everything below `s` has stopped.
 *
 * Ownership: a service added to a group belongs to it and is destroyed with
 * it; destroy only the root. Factories, callbacks' arguments and the
 * reactor must outlive the services using them; destroy the tree before the
 * reactor. All functions are for the reactor's thread.
 */
#ifndef BRAID_SERVICE_H
#define BRAID_SERVICE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "braid/deferred.h"
#include "braid/policy.h"
#include "braid/reactor.h"
#include "braid/transport.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct braid_service braid_service_t;

/* What a custom service does. */
typedef struct braid_service_ops {
  /* Start: 0, or a BRAID_E* code with a message in err (may be left
   * empty). Required. */
  int (*start)(braid_service_t *s, void *arg, char *err, size_t errlen);
  /* Stop, finishing within `grace` ns: leave *done none when stopped at
   * once, or set it to a deferred that fires when stopped (a failure counts
   * as stopped, and is logged). The service adds its step to it before
   * the call that stopped it returns. Optional (NULL: stopped at once). */
  int (*stop)(braid_service_t *s, void *arg, uint64_t grace,
              braid_deferred_t *done);
  /* Free what `arg` holds; called once, by braid_service_destroy.
   * Optional. */
  void (*destroy)(void *arg);
} braid_service_ops;

typedef struct braid_service_listener_options {
  /* Limits and rates for the listener's connections (zero-filled: none). */
  braid_policy_options policy;
  /* Called for each open connection when a stop begins, with the protocol
   * and its transport: finish the current work and close (an HTTP server
   * closes idle keep-alive connections, and the others after their
   * response). NULL: connections are left to end by themselves until the
   * deadline. */
  braid_policy_visit_cb drain;
  void *drain_arg;
} braid_service_listener_options;

/* Names: NULL or a string (copied) that is unique among the children of
 * one group (BRAID_EEXIST otherwise, when added). */

/* A group (MultiService). */
int braid_service_group_create(braid_reactor_t *r, const char *name,
                               braid_service_t **out);

/* A listener on `endpoint` (a server description, checked now: a bad one
 * is BRAID_EINVAL with a message in err; one of another module's scheme,
 * such as tls:, is checked by that module when the listener starts)
 * building protocols with `f`.
 * opts may be NULL. It listens when started; a stopped listener can be
 * started again (on port 0, the new port may differ). */
int braid_service_listener_create(braid_reactor_t *r, const char *name,
                                  const char *endpoint, braid_factory_t *f,
                                  const braid_service_listener_options *opts,
                                  braid_service_t **out, char *err,
                                  size_t errlen);

/* A client service (see braid/policy.h) as a service. */
int braid_service_client_create(braid_reactor_t *r, const char *name,
                                const braid_client_service_options *opts,
                                braid_service_t **out, char *err,
                                size_t errlen);

/* Your own service. */
int braid_service_custom_create(braid_reactor_t *r, const char *name,
                                const braid_service_ops *ops, void *arg,
                                braid_service_t **out);

/* Add `child` (a root: not in a group yet) to `group`, which owns it from
 * now on. BRAID_EINVAL when group is not a group, child already has a
 * parent or is group itself or one of its ancestors; BRAID_EEXIST for a
 * name in use among the group's children; BRAID_EBUSY while the group runs
 * or stops (add children before starting it). */
int braid_service_add(braid_service_t *group, braid_service_t *child);

/* Start `s` and everything below it (children already running are left
 * as they are). If one fails, the ones this call started are stopped again
 * (aborting at once) and its error is returned, with err naming it
 * ("db: listener tcp:5432: address already in use"). BRAID_EALREADY when
 * running, BRAID_EBUSY while stopping. */
int braid_service_start(braid_service_t *s, char *err, size_t errlen);

/* Stop `s` and everything below it; see "Graceful shutdown" above. grace 0
 * aborts open connections at once; UINT64_MAX never does. *out (out may be
 * NULL; *out is none on error) fires with a NULL value once all has
 * stopped (at once when `s` is not running). The service keeps it alive
 * until it has fired it, also when you cancelled it first (the late fire
 * is then dropped); to use the handle later than the turn it fires in,
 * hold a reference of your own (braid/deferred.h, "Lifetime"). Calling it
 * again while stopping adds a deferred, and with grace 0 aborts at once. */
int braid_service_stop(braid_service_t *s, uint64_t grace,
                       braid_deferred_t *out);

/* Destroy a root and everything below it. What runs is torn down at once
 * (listeners closed, open connections aborted, clients destroyed; their
 * protocols still get connection_lost as usual); pending stop deferreds
 * fail with BRAID_ECANCELED. BRAID_EINVAL for a service in a group. NULL
 * is ignored. */
int braid_service_destroy(braid_service_t *s);

bool braid_service_running(const braid_service_t *s);
/* Started and not yet fully stopped. */
bool braid_service_stopping(const braid_service_t *s);
const char *braid_service_name(const braid_service_t *s);
braid_service_t *braid_service_parent(const braid_service_t *s);

/* A direct child by name (Twisted's getServiceNamed), or NULL. */
braid_service_t *braid_service_find(const braid_service_t *group,
                                    const char *name);

/* Open connections below `s`: a listener's accepted connections that are
 * still open, 1 for a client that is connected, summed over a group. */
size_t braid_service_connections(const braid_service_t *s);

/* Connections aborted at the deadline by the last stop of `s` (summed over
 * a group). */
uint64_t braid_service_aborted(const braid_service_t *s);

/* A listening listener's bound address (the real port for port 0).
 * BRAID_EINVAL for another kind, BRAID_ECLOSED when not listening. */
int braid_service_listener_addr(const braid_service_t *s, braid_addr_t *out);

/* A listener's policy factory (for braid_policy_factory_stats and
 * friends), or NULL for another kind. */
braid_factory_t *braid_service_listener_factory(const braid_service_t *s);

/* A client service's braid_client_service_t (for when_connected and its
 * stats), or NULL for another kind. */
braid_client_service_t *braid_service_client(const braid_service_t *s);

#ifdef __cplusplus
}
#endif
#endif
