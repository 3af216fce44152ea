/* braid: connection policies (Twisted's twisted.protocols.policies and
 * twisted.application.internet.ClientService, in C).
 *
 *   - braid_timeout_t: a per-connection timeout that activity pushes back
 *     (Twisted's TimeoutMixin);
 *   - the policy factory: wraps a factory to limit connections, in total
 *     and per peer host, to throttle reading and writing to a number of
 *     bytes per second, and to drop idle connections (Twisted's
 *     LimitTotalConnectionsFactory, LimitConnectionsByPeer,
 *     ThrottlingFactory and TimeoutFactory in one);
 *   - the client service: keeps one client connection up, reconnecting
 *     with exponential backoff and seeded jitter (Twisted's ClientService).
 *
 * Everything runs on the reactor clock, so a manual clock (braid/testing.h)
 * drives it deterministically. Call these functions on the reactor's
 * thread only.
 */
#ifndef BRAID_POLICY_H
#define BRAID_POLICY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "braid/deferred.h"
#include "braid/reactor.h"
#include "braid/transport.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------------
 * Timeouts (Twisted's TimeoutMixin)
 *
 * Embed a braid_timeout_t in your protocol, init it in connection_made,
 * set a period, call braid_timeout_reset() on every sign of life, and
 * braid_timeout_cancel() in connection_lost (before freeing it). The
 * callback runs once, `period` ns after the last reset (or the set); the
 * timeout is then inactive until set again. Resetting is O(1) and never
 * touches the timer heap: the timer is moved only when it fires early.
 * ------------------------------------------------------------------------ */

typedef struct braid_timeout braid_timeout_t;
typedef void (*braid_timeout_cb)(braid_timeout_t *to, void *arg);

struct braid_timeout {
  /* All fields are private. A zero-filled one is valid and inactive. */
  braid_timer_t timer_;
  braid_reactor_t *reactor_;
  braid_timeout_cb cb_;
  void *arg_;
  uint64_t period_;
  uint64_t deadline_; /* last activity + period */
};

/* Bind to a reactor and a callback. The timeout starts inactive. */
void braid_timeout_init(braid_timeout_t *to, braid_reactor_t *r,
                        braid_timeout_cb cb, void *arg);

/* Fire `period` ns from now (and from every reset); 0 cancels. Replaces a
 * period already set. BRAID_EINVAL before init, BRAID_ENOMEM when the
 * timer heap cannot grow (the timeout is then inactive). */
int braid_timeout_set(braid_timeout_t *to, uint64_t period);

/* Activity: push the expiry back to now + period. No effect while
 * inactive (as Twisted's resetTimeout). */
void braid_timeout_reset(braid_timeout_t *to);

/* Make it inactive; the callback will not run. Safe to repeat. */
void braid_timeout_cancel(braid_timeout_t *to);

/* The period set (0 when inactive). */
uint64_t braid_timeout_period(const braid_timeout_t *to);

/* When it fires, on the reactor clock (0 when inactive). */
uint64_t braid_timeout_deadline(const braid_timeout_t *to);

/* A ready-made callback: abort the transport passed as `arg`. A timed-out
 * peer is presumed gone or hostile, so waiting for it to read a close
 * would keep the connection open: abort drops it at once. */
void braid_timeout_abort_transport(braid_timeout_t *to, void *transport);

/* ------------------------------------------------------------------------
 * The policy factory
 *
 * braid_policy_factory_create() wraps `inner`: hand the result to
 * braid_listen / braid_endpoint_listen (or to braid_tls_wrap_factory, or
 * to the iosim) instead of `inner`. For each connection it
 *   - refuses (build returns NULL: the listener closes the connection at
 *     once) when max_connections are open, or max_per_peer from the same
 *     peer host (the address without its port);
 *   - otherwise builds the inner protocol and stands between it and the
 *     transport: reading is paused while the connection has read more than
 *     read_rate allows, what the protocol writes is passed on no faster
 *     than write_rate (the protocol's pause_writing / resume_writing follow
 *     what is held back, at the marks it set on its transport), and a
 *     connection without reads or writes for idle_timeout is aborted.
 * Rates are token buckets: up to `burst` bytes pass at once, then `rate`
 * bytes per second on average.
 *
 * The transport the inner protocol sees is the policy's own when a rate or
 * an idle timeout is set (braid_transport_sendfile then returns
 * BRAID_ENOTSUP while a write rate is set, as on TLS: fall back to
 * writing), and the listener's transport itself otherwise.
 *
 * Ownership: the policy factory must outlive its listeners (close them
 * first). braid_policy_factory_destroy() may be called while connections
 * are still open: its memory goes with the last of them.
 * ------------------------------------------------------------------------ */

/* Limits for one value: at most 2^32 bytes per second and 2^32 bytes of
 * burst (BRAID_EINVAL above). */
#define BRAID_POLICY_RATE_MAX (UINT64_C(1) << 32)

typedef struct braid_policy_options {
  size_t max_connections; /* open at once; 0: no limit */
  size_t max_per_peer;    /* open at once from one peer host; 0: no limit */
  uint64_t read_rate;     /* bytes per second; 0: no limit */
  uint64_t write_rate;    /* bytes per second; 0: no limit */
  uint64_t read_burst;    /* bytes; 0: one second's worth (the rate) */
  uint64_t write_burst;   /* bytes; 0: one second's worth (the rate) */
  uint64_t idle_timeout;  /* ns without reads or writes; 0: none */
} braid_policy_options;

typedef struct braid_policy_stats {
  size_t open;            /* connections open now */
  uint64_t accepted;      /* connections built */
  uint64_t refused_total; /* refused by max_connections */
  uint64_t refused_peer;  /* refused by max_per_peer */
  uint64_t timed_out;     /* aborted by idle_timeout */
  uint64_t read_pauses;   /* times reading was paused by read_rate */
  uint64_t write_waits;   /* times writes were held back by write_rate */
  uint64_t bytes_read;    /* passed to the inner protocols */
  uint64_t bytes_written; /* passed on to the transports */
} braid_policy_stats;

/* Wrap `inner` (which must outlive the policy factory). BRAID_EINVAL for
 * NULL arguments or a rate or burst above BRAID_POLICY_RATE_MAX,
 * BRAID_ENOMEM. */
int braid_policy_factory_create(braid_reactor_t *r, braid_factory_t *inner,
                                const braid_policy_options *opts,
                                braid_factory_t **out);

/* Give up the factory (see Ownership above). Pending when_idle deferreds
 * fail with BRAID_ECANCELED. BRAID_EINVAL for anything that is not a
 * policy factory; NULL is ignored. */
int braid_policy_factory_destroy(braid_factory_t *f);

int braid_policy_factory_stats(const braid_factory_t *f,
                               braid_policy_stats *out);

/* Connections open now from the host of `peer` (its port is ignored). */
size_t braid_policy_factory_peer_count(const braid_factory_t *f,
                                       const braid_addr_t *peer);

/* Call fn(p, t, arg) for each open connection, with the inner protocol and
 * the transport it sees (e.g. to close or abort them all). Connections that
 * end during the walk are not visited again; ones accepted during it are
 * not visited. */
typedef void (*braid_policy_visit_cb)(braid_protocol_t *p, braid_transport_t *t,
                                      void *arg);
int braid_policy_factory_each(braid_factory_t *f, braid_policy_visit_cb fn,
                              void *arg);

/* A deferred that fires (with a NULL value) once no connection is open: at
 * once if none is. The factory keeps it alive until it has fired it, also
 * when you cancelled it first (the late fire is then dropped); to use the
 * handle later than the turn it fires in, hold a reference of your own
 * (braid/deferred.h, "Lifetime"). BRAID_EINVAL, BRAID_ENOMEM (then *out is
 * none). */
int braid_policy_factory_when_idle(braid_factory_t *f, braid_deferred_t *out);

/* ------------------------------------------------------------------------
 * The client service (Twisted's ClientService)
 *
 * Keeps one connection up: connects when started; when an attempt fails
 * or the connection is lost, waits and tries again. The n-th consecutive
 * retry waits min(initial_delay * factor^(n-1), max_delay) plus a jitter
 * drawn uniformly from [0, jitter] by a generator seeded with `seed`; a
 * successful connection resets n. Each attempt builds a new protocol with
 * `factory` (called with an unspecified peer address) and connects it
 * through `endpoint` (braid_endpoint_connect) or `connect_cb`; the
 * protocol sees the usual lifetime (connection_lost exactly once, also
 * for a failed attempt) and is owned as with braid_connect.
 * ------------------------------------------------------------------------ */

typedef struct braid_client_service braid_client_service_t;

/* Start a connection attempt for `p`, as braid_connect does: 0 and then
 * p's callbacks, or an error at once and no callback. */
typedef int (*braid_client_connect_cb)(braid_reactor_t *r, braid_protocol_t *p,
                                       void *arg);

typedef struct braid_client_service_options {
  const char *endpoint; /* a client description, or NULL with connect_cb */
  braid_client_connect_cb connect_cb;
  void *connect_arg;
  braid_factory_t *factory; /* required; must outlive the service */
  uint64_t initial_delay;   /* ns; 0: 1 s */
  double factor;            /* >= 1; 0: 1.5 */
  uint64_t max_delay;       /* ns; 0: 60 s */
  uint64_t jitter;          /* ns; 0: none */
  uint64_t seed;
} braid_client_service_options;

typedef struct braid_client_service_stats {
  uint64_t attempts;     /* connection attempts started */
  uint64_t connections;  /* attempts that connected */
  unsigned failures;     /* consecutive failed attempts now */
  uint64_t next_attempt; /* reactor time of the scheduled retry, or 0 */
} braid_client_service_stats;

/* Check the options (an endpoint that does not parse is described in err)
 * and create a stopped service. BRAID_EINVAL, BRAID_ENOMEM. */
int braid_client_service_create(braid_reactor_t *r,
                                const braid_client_service_options *opts,
                                braid_client_service_t **out, char *err,
                                size_t errlen);

/* Connect now, and keep reconnecting until stopped. BRAID_EALREADY when
 * running, BRAID_EBUSY while a stop is still waiting for its connection. */
int braid_client_service_start(braid_client_service_t *cs);

/* Stop reconnecting and end the connection: close it (flushing what is
 * queued), and abort it if it is still open `grace` ns later (0: abort
 * now; UINT64_MAX: never). An attempt still connecting is aborted as soon
 * as it connects. *out (out may be NULL; *out is none on error) fires with
 * a NULL value once no connection is left; the service keeps it alive until
 * then, as for when_connected. Pending when_connected deferreds fail with
 * BRAID_ECANCELED. Stopping a stopped service succeeds at once. */
int braid_client_service_stop(braid_client_service_t *cs, uint64_t grace,
                              braid_deferred_t *out);

/* A deferred that fires with the connected protocol (braid_protocol_t *,
 * not owned: valid until its connection_lost): at once when connected,
 * else at the next connection. It fails with the attempt's error after
 * `fail_after` consecutive failed attempts (0: never), and with
 * BRAID_ECANCELED when the service stops (at once if it was stopped after
 * running). The service keeps it alive until it has fired it, also when you
 * cancelled it first (the late fire is then dropped); to use the handle
 * later than the turn it fires in, hold a reference of your own
 * (braid/deferred.h, "Lifetime"). BRAID_EINVAL, BRAID_ENOMEM (then *out is
 * none). */
int braid_client_service_when_connected(braid_client_service_t *cs,
                                        unsigned fail_after,
                                        braid_deferred_t *out);

/* The connected protocol, or NULL. */
braid_protocol_t *braid_client_service_protocol(braid_client_service_t *cs);

bool braid_client_service_running(const braid_client_service_t *cs);

int braid_client_service_stats_get(const braid_client_service_t *cs,
                                   braid_client_service_stats *out);

/* Free the service. A connection still open is aborted (an attempt still
 * connecting, as soon as it connects) and its protocol gets its
 * connection_lost as usual later; pending deferreds fail with
 * BRAID_ECANCELED. Call it before destroying the reactor. NULL is
 * ignored. */
void braid_client_service_destroy(braid_client_service_t *cs);

#ifdef __cplusplus
}
#endif
#endif
