/* braid: an I/O simulator for protocol tests (Twisted's twisted.test.iosim
 * and twisted.protocols.loopback, in C).
 *
 * A simulator connects client protocols to server protocols over pairs of
 * memory transports (braid/testing.h) and moves the bytes between them
 * itself, on the reactor's manual clock, with everything that can vary on
 * a real network drawn from one seeded generator:
 *
 *   - latency: each batch of bytes a side hands to the network arrives
 *     delay_min..delay_max ns later (never earlier than the batch before
 *     it: one stream is never reordered);
 *   - splitting: each delivery (one data_received) carries
 *     chunk_min..chunk_max bytes, so chunk_max = 1 delivers byte by byte;
 *     a chunk callback may choose the sizes instead (every split point);
 *   - interleaving: deliveries due at the same moment on different
 *     connections and directions happen in a seeded order;
 *   - flow control: at most `window` bytes per direction are in flight;
 *     the rest stays in the sender's write queue, so its pause_writing /
 *     resume_writing fire at its transport's marks, and nothing is
 *     delivered to a side that paused reading;
 *   - closing as TCP does: braid_transport_shutdown_write and
 *     braid_transport_close reach the peer as an end of input (after the
 *     bytes before them); braid_transport_abort drops what is still in
 *     flight in both directions and the peer loses the connection with
 *     BRAID_ECONNRESET; bytes that arrive at a side that has gone make the
 *     sender lose its connection with BRAID_ECONNRESET too.
 *
 * The same options and seed give the same run, byte for byte and event for
 * event, as long as the protocols themselves are deterministic.
 *
 * Driving: nothing moves until the test calls braid_iosim_pump() (one
 * event) or braid_iosim_flush() (until nothing is left to do, advancing the
 * manual clock to the next delivery when nothing is due yet). Connecting is
 * asynchronous as on a real network: connection_made runs inside a pump,
 * never inside braid_iosim_connect(). The pump functions must not be called
 * from inside a protocol callback they caused (BRAID_EBUSY).
 *
 * Ownership: the simulator owns its connections and their memory
 * transports and frees them in braid_iosim_destroy(), which must run before
 * the reactor is destroyed. Protocols are owned as with any transport: the
 * client protocol by the caller, a server protocol by whoever built it; each
 * sees exactly one connection_lost (a client whose connection never came up
 * sees it without connection_made). A protocol may free itself in
 * connection_lost.
 */
#ifndef BRAID_IOSIM_H
#define BRAID_IOSIM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "braid/reactor.h"
#include "braid/testing.h"
#include "braid/transport.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct braid_iosim braid_iosim_t;
typedef struct braid_iosim_conn braid_iosim_conn_t;

/* The two directions of a connection. */
typedef enum braid_iosim_dir {
  BRAID_IOSIM_TO_SERVER = 0,
  BRAID_IOSIM_TO_CLIENT = 1
} braid_iosim_dir;

/* What a pump step did (for the trace callback). */
typedef enum braid_iosim_event {
  BRAID_IOSIM_CONNECTED = 1, /* both sides got connection_made */
  BRAID_IOSIM_REFUSED, /* nobody listened: connection_lost(ECONNREFUSED) */
  BRAID_IOSIM_DATA,    /* `len` bytes delivered to one data_received */
  BRAID_IOSIM_EOF,     /* the end of input reached the receiver */
  BRAID_IOSIM_RESET,   /* the receiver lost the connection (ECONNRESET) */
  BRAID_IOSIM_DROPPED  /* `len` bytes thrown away (see the top) */
} braid_iosim_event;

/* Chooses how many of the `available` bytes (contiguous, due now, at least
 * 1) the next delivery in direction `dir` carries. The result is clamped
 * to 1..available. */
typedef size_t (*braid_iosim_chunk_cb)(braid_iosim_conn_t *c,
                                       braid_iosim_dir dir, size_t available,
                                       void *arg);

/* Called for every event, before it is delivered (for DATA, `len` bytes;
 * for DROPPED, the number thrown away; otherwise 0). */
typedef void (*braid_iosim_trace_cb)(braid_iosim_conn_t *c,
                                     braid_iosim_event ev, braid_iosim_dir dir,
                                     size_t len, void *arg);

/* Options for braid_iosim_create(). Zero-filled (or NULL) means: seed 0,
 * no delay, everything due delivered at once, a 64 KiB window. */
typedef struct braid_iosim_options {
  uint64_t seed;
  /* One-way latency in ns, drawn uniformly from [delay_min, delay_max] for
   * every batch (delay_max below delay_min counts as delay_min). Needs a
   * reactor with a manual clock when not 0 (flush advances it). */
  uint64_t delay_min, delay_max;
  /* Bytes per delivery, drawn uniformly from [chunk_min, chunk_max]
   * (chunk_min 0 counts as 1; chunk_max 0 means everything that is due). */
  size_t chunk_min, chunk_max;
  /* Bytes in flight per direction, at most; 0 means 65536. */
  size_t window;
  /* Replaces the drawn chunk sizes when set. */
  braid_iosim_chunk_cb chunk_cb;
  void *chunk_arg;
  braid_iosim_trace_cb trace_cb;
  void *trace_arg;
  /* The server's address, as both sides see it; zero-filled means
   * 10.0.0.1:8080. */
  braid_addr_t server_addr;
} braid_iosim_options;

/* Counters since creation. */
typedef struct braid_iosim_stats {
  uint64_t events;          /* pump steps that did something */
  uint64_t bytes_delivered; /* to data_received */
  uint64_t bytes_dropped;   /* in flight at an abort, or sent to a gone side */
  uint64_t resets;          /* connections lost with BRAID_ECONNRESET */
  uint64_t clock_advances;  /* times flush moved the clock */
} braid_iosim_stats;

/* The default step bound of braid_iosim_flush (max_steps 0). */
#define BRAID_IOSIM_DEFAULT_STEPS 1000000u

/* Create a simulator on `r` (opts may be NULL). BRAID_EINVAL for a NULL
 * r or out, BRAID_ENOMEM. */
int braid_iosim_create(braid_reactor_t *r, const braid_iosim_options *opts,
                       braid_iosim_t **out);

/* End every connection still up (each protocol gets
 * connection_lost(BRAID_ECONNABORTED), or ECONNABORTED without
 * connection_made while still connecting) and free everything. BRAID_EBUSY
 * from inside a pump. NULL is accepted and ignored. */
int braid_iosim_destroy(braid_iosim_t *sim);

/* Start connecting `client` to a server: either the ready protocol
 * `server`, or the one `factory` builds (called with the client's address
 * when the connection comes up; NULL from it refuses the connection: the
 * client sees connection_made and then the end of input, as from a TCP
 * listener). With neither, nobody listens: the client gets
 * connection_lost(BRAID_ECONNREFUSED). `client_addr` (may be NULL: 10.0.0.2
 * and port 40000 + the connection's number) is the client's address as
 * both sides see it. The connection comes up in a later pump, one delay
 * after now. *out (may be NULL) is valid until braid_iosim_destroy.
 * BRAID_EINVAL for bad arguments (both server and factory, a protocol
 * without ops), BRAID_EBUSY from inside a pump, BRAID_ENOMEM. */
int braid_iosim_connect(braid_iosim_t *sim, braid_protocol_t *client,
                        braid_protocol_t *server, braid_factory_t *factory,
                        const braid_addr_t *client_addr,
                        braid_iosim_conn_t **out);

/* Do one thing that is due now: bring up a connection, deliver one chunk,
 * an end of input or a reset, choosing by the seed among all that are due.
 * First, what every side wrote or closed since the last step is taken over
 * (within the window). Returns 1 when something happened, 0 when nothing
 * is due now, BRAID_EBUSY from inside a pump. */
int braid_iosim_pump(braid_iosim_t *sim);

/* Pump until nothing is left to do: nothing due, nothing in flight that a
 * reader could take (bytes held back by a paused reader wait for it), and
 * no timer due on the manual clock. When nothing is due yet, the clock is
 * advanced to the next delivery (which fires the protocols' own timers up
 * to then, as on a real clock). Returns the number of steps (pumps that did
 * something, plus clock advances); BRAID_ELIMIT when `max_steps` (0:
 * BRAID_IOSIM_DEFAULT_STEPS) were not enough, BRAID_EINVAL when it would
 * have to advance a clock that is not manual, BRAID_EBUSY from inside a
 * pump. */
ptrdiff_t braid_iosim_flush(braid_iosim_t *sim, size_t max_steps);

/* A network failure now: bytes in flight are dropped and both sides lose
 * the connection with `reason` (a negative BRAID_E* code, e.g.
 * BRAID_ECONNRESET); while still connecting, the client gets
 * connection_lost(reason). BRAID_EINVAL for reason >= 0, BRAID_ECLOSED
 * when both sides are already gone, BRAID_EBUSY from inside a pump. */
int braid_iosim_break(braid_iosim_conn_t *c, int reason);

/* The connection's two memory transports, for inspection
 * (braid_memory_transport_disconnected, _writing_paused, ...): NULL before
 * it came up, and the server's when the connection was refused. Leave the
 * driving functions (feed, drain, set_consumer_blocked) to the simulator. */
braid_memory_transport_t *braid_iosim_client(braid_iosim_conn_t *c);
braid_memory_transport_t *braid_iosim_server(braid_iosim_conn_t *c);

/* The server protocol (the one given, or built by the factory; NULL before
 * the connection came up or when the factory refused). It may have freed
 * itself in connection_lost. */
braid_protocol_t *braid_iosim_server_protocol(braid_iosim_conn_t *c);

/* Both sides got connection_made. */
bool braid_iosim_established(const braid_iosim_conn_t *c);

/* The connection's number: 0, 1, 2, ... in the order of connect. */
unsigned braid_iosim_conn_id(const braid_iosim_conn_t *c);

/* Data bytes on the wire in `dir`: taken from the sender, not yet
 * delivered. */
size_t braid_iosim_in_flight(const braid_iosim_conn_t *c, braid_iosim_dir dir);

/* Copy the counters into *out. */
int braid_iosim_stats_get(const braid_iosim_t *sim, braid_iosim_stats *out);

#ifdef __cplusplus
}
#endif
#endif
