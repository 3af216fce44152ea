/* The skeleton of a braid protocol (docs/PROTOCOLS.md): "upper", a line
 * server that answers every line with the same line in capitals and "QUIT"
 * with "BYE" before closing.
 *
 * Small on purpose, but built the way every braid protocol is: a parser
 * with the picohttpparser contract (braid_line_parse), an explicit state
 * machine with one transition function and a timeout for every state,
 * limits that are options, flow control that stops reading and parsing
 * while the peer does not read, a drain callback for the service tree and
 * a destroy that ends every connection in every state. Only the public
 * API (include/braid/) is used. tests/test_proto_skeleton.c tests it over
 * the memory transport and the iosim pump.
 */
#ifndef PROTO_SKELETON_H
#define PROTO_SKELETON_H

#include <stddef.h>
#include <stdint.h>

#include "braid/braid.h"
#include "braid/policy.h"

/* A connection's state; see the table at the top of proto_skeleton.c. */
typedef enum upper_state {
  UPPER_NEW,     /* built, connection_made not yet called */
  UPPER_IDLE,    /* waiting for the first byte of a line */
  UPPER_LINE,    /* waiting for the rest of a line */
  UPPER_STALLED, /* waiting for the peer to read our answers */
  UPPER_CLOSING, /* waiting for our last bytes to be taken */
  UPPER_ABORTED, /* aborted: waiting for connection_lost */
  UPPER_CLOSED,  /* connection_lost ran */
  UPPER_NSTATES
} upper_state;

/* Options. Zero-filled means the defaults. */
typedef struct upper_options {
  size_t max_line;        /* bytes of one line, CRLF excluded; 0: 512 */
  uint64_t idle_timeout;  /* ns; 0: 60 s. Then: a quiet close */
  uint64_t line_timeout;  /* ns; 0: 10 s, from a line's first byte to its
                             end (bytes do not push it back). Then: "ERR
                             timeout" and close */
  uint64_t write_timeout; /* ns; 0: 30 s in stalled and in closing. Then:
                             abort */
  /* Called on every state change (tests and logs); may be NULL. */
  void (*on_state)(void *arg, upper_state from, upper_state to);
  void *arg;
} upper_options;

typedef struct upper_stats {
  size_t open;                      /* connections open now */
  uint64_t lines;                   /* lines answered */
  uint64_t too_long;                /* lines over max_line */
  uint64_t timeouts[UPPER_NSTATES]; /* timeouts, by state */
} upper_stats;

typedef struct upper_server upper_server_t;

/* Create a server (opts may be NULL). BRAID_EINVAL, BRAID_ENOMEM. */
int upper_server_create(braid_reactor_t *r, const upper_options *opts,
                        upper_server_t **out);

/* The factory to listen with (braid_listen, braid_service_listener_create,
 * braid_iosim_connect, a policy or TLS wrapping factory). */
braid_factory_t *upper_server_factory(upper_server_t *s);

/* A graceful stop for one connection (a braid_policy_visit_cb, for
 * braid_service_listener_options.drain, with the server as `arg`): an idle
 * connection says BYE and closes now, a busy one after its current line. */
void upper_server_drain(braid_protocol_t *p, braid_transport_t *t, void *arg);

/* Counters; see upper_stats. */
void upper_server_stats(const upper_server_t *s, upper_stats *out);

/* Abort every open connection and free the server once the last one has
 * gone. Close the listeners using its factory first. NULL is ignored. */
void upper_server_destroy(upper_server_t *s);

const char *upper_state_name(upper_state st);

#endif
