/* braid: test doubles (Twisted's twisted.internet.testing, in C).
 *
 * These are a supported, installed part of braid: protocol code can be
 * tested deterministically, without sockets or sleeping.
 *
 * The deterministic clock: create a reactor with BRAID_REACTOR_MANUAL_CLOCK
 * (or braid_testing_reactor_create()). Its time starts at 0 and moves only
 * when braid_clock_advance() is called, which fires every timer that has
 * come due, in deadline order, exactly as the loop would.
 */
#ifndef BRAID_TESTING_H
#define BRAID_TESTING_H

#include "braid/reactor.h"
#include "braid/transport.h"

#ifdef __cplusplus
extern "C" {
#endif

/* A reactor with a manual clock on the default poller. */
int braid_testing_reactor_create(braid_reactor_t **out);

/* Move the manual clock forward by `delta` ns, firing due timers as it
 * goes: a timer scheduled by a callback during the advance fires within
 * the same advance if its deadline falls inside it. Queued call-soons run
 * after the timers. BRAID_EINVAL if the reactor has no manual clock. */
int braid_clock_advance(braid_reactor_t *r, uint64_t delta);

/* Run every queued call-soon (including ones they queue, up to `limit`
 * passes) without waiting for I/O. Returns the number of callbacks run. */
size_t braid_testing_flush(braid_reactor_t *r, unsigned limit);

/* ------------------------------------------------------------------------
 * The memory transport (Twisted's StringTransport)
 *
 * Connects a protocol to buffers that the test feeds and inspects by hand:
 * no sockets, nothing happens unless the test asks. Every braid_transport_*
 * call works on it, with the same argument and state checks as on a TCP
 * connection (core/transport.c is shared), so a protocol cannot tell the
 * difference.
 *
 * Driving: braid_memory_transport_feed() calls data_received at once, with
 * a pointer to the caller's bytes (zero-copy, as a real transport hands out
 * its read buffer). While the protocol has paused reading, fed bytes are
 * kept and delivered, as one chunk, when it resumes; an EOF fed meanwhile
 * follows them.
 *
 * Deferred events: like a real transport, this one never calls
 * connection_lost from inside a call the protocol made (close, abort,
 * shutdown_write, write), so a protocol may free itself in connection_lost
 * without pulling its own stack away. Events caused by a protocol call made
 * inside one of the driving functions below (feed, feed_eof, lose, drain,
 * set_consumer_blocked, create) are delivered before that driving function
 * returns. Events caused outside them (a timer callback, another
 * transport's callback, test code calling braid_transport_close) are
 * delivered by a zero-delay timer on the reactor: call
 * braid_clock_advance(r, 0) (manual clock) or braid_reactor_run_once().
 *
 * Writing: written bytes are appended to the "value" buffer. When the test
 * blocks the consumer (a slow peer), writes are queued instead and counted
 * in braid_transport_write_queued(), so pause_writing/resume_writing fire at
 * the transport's high/low marks; drain or unblock to move queued bytes into
 * the value buffer.
 *
 * Ownership: the test owns the memory transport and destroys it; the
 * protocol is owned as for any transport (freed in its connection_lost if
 * it wants). Memory handed to braid_transport_write_owned() is released
 * when its bytes are copied into the value buffer (at once when the
 * consumer is not blocked), or when it is dropped (abort, lose, destroy).
 * connection_lost is called exactly once: on close/abort/lose, or by
 * destroy (BRAID_ECONNABORTED) or by the reactor's destruction if nothing
 * else did.
 * ------------------------------------------------------------------------ */

typedef struct braid_memory_transport braid_memory_transport_t;

/* Create a memory transport, point p->transport at it and call
 * connection_made. The reactor provides the deferred-event timer and must
 * be live while the transport is used (destroying the reactor first is
 * safe: it ends the connection, and destroy then only frees memory).
 * BRAID_EINVAL for NULL arguments, BRAID_ENOMEM. */
int braid_memory_transport_create(braid_reactor_t *r, braid_protocol_t *p,
                                  braid_memory_transport_t **out);

/* Options for braid_memory_transport_create_ex(). Zero-filled (or NULL)
 * means what braid_memory_transport_create() does. */
typedef struct braid_memory_transport_options {
  /* The addresses braid_transport_local_addr/peer_addr return, already in
   * connection_made (NULL: the defaults below). */
  const braid_addr_t *local;
  const braid_addr_t *peer;
  /* Start with the consumer blocked, so that even what the protocol writes
   * in connection_made is queued (and counted for flow control) instead of
   * reaching the value buffer: what a pump between two transports needs
   * (braid/iosim.h). */
  bool consumer_blocked;
} braid_memory_transport_options;

/* braid_memory_transport_create() with options (opts may be NULL). */
int braid_memory_transport_create_ex(braid_reactor_t *r, braid_protocol_t *p,
                                     const braid_memory_transport_options *opts,
                                     braid_memory_transport_t **out);

/* End the connection if still up (connection_lost(BRAID_ECONNABORTED)),
 * drop queued writes and free the transport. BRAID_EBUSY from inside one
 * of its own callbacks. NULL is accepted and ignored. */
int braid_memory_transport_destroy(braid_memory_transport_t *mt);

/* The transport the protocol sees. */
braid_transport_t *
braid_memory_transport_transport(braid_memory_transport_t *mt);

/* Deliver now the events this transport deferred (see "Deferred events"
 * above) instead of on the next reactor turn: for a driver that polls the
 * transport outside any of its callbacks, such as the iosim
 * (braid/iosim.h). A zero-delay timer started inside a timer callback is
 * due a nanosecond later on the manual clock, so without this a close made
 * from a timer would complete only once the clock moved. BRAID_EBUSY from
 * inside one of the transport's callbacks. */
int braid_memory_transport_run_pending(braid_memory_transport_t *mt);

/* The peer sends bytes: data_received (or buffered while reading is
 * paused). BRAID_ECLOSED once the protocol closed or the connection is
 * lost (the bytes are dropped: the real transport stops reading then),
 * or after feed_eof. BRAID_ENOMEM when buffering fails. len 0 is a no-op. */
int braid_memory_transport_feed(braid_memory_transport_t *mt, const void *data,
                                size_t len);

/* The peer shuts down its writing side: eof_received, or when the protocol
 * has none, a close after flushing (as the stream transport does).
 * BRAID_ECLOSED if already fed or the connection is gone. */
int braid_memory_transport_feed_eof(braid_memory_transport_t *mt);

/* The peer's connection drops: queued output is dropped and
 * connection_lost(reason) runs (reason 0 models a clean close by the peer).
 * BRAID_ECLOSED if connection_lost already ran. */
int braid_memory_transport_lose(braid_memory_transport_t *mt, int reason);

/* Bytes the protocol has written (and that reached the peer). The pointer
 * is valid until the next write, drain, clear or destroy; *len may be NULL.
 * Never NULL: an empty value is "". */
const void *braid_memory_transport_value(const braid_memory_transport_t *mt,
                                         size_t *len);

/* Forget the value buffer's bytes (Twisted's clear()). */
void braid_memory_transport_clear(braid_memory_transport_t *mt);

/* Block or unblock the consumer. While blocked, writes queue up; on
 * unblocking, everything queued moves into the value buffer (resume_writing
 * fires if pause_writing had been sent, and a pending close completes). */
int braid_memory_transport_set_consumer_blocked(braid_memory_transport_t *mt,
                                                bool blocked);

/* The blocked peer reads: move up to `max` queued bytes into the value
 * buffer, leaving it blocked. Returns the number moved, or a BRAID_E*. */
ptrdiff_t braid_memory_transport_drain(braid_memory_transport_t *mt,
                                       size_t max);

/* Set the addresses braid_transport_local_addr/peer_addr return; NULL
 * leaves one unchanged. The defaults are 10.0.0.1:12345 (local) and
 * 192.168.1.1:54321 (peer), as Twisted's StringTransport. */
int braid_memory_transport_set_addrs(braid_memory_transport_t *mt,
                                     const braid_addr_t *local,
                                     const braid_addr_t *peer);

/* State queries. */
/* connection_lost has run; *reason (may be NULL) gets its argument. */
bool braid_memory_transport_disconnected(const braid_memory_transport_t *mt,
                                         int *reason);
/* Closing after a flush (Twisted's `disconnecting`): the protocol called
 * braid_transport_close, or EOF arrived at a protocol without
 * eof_received. */
bool braid_memory_transport_closing(const braid_memory_transport_t *mt);
/* The protocol called braid_transport_abort. */
bool braid_memory_transport_aborted(const braid_memory_transport_t *mt);
/* The protocol called braid_transport_shutdown_write. */
bool braid_memory_transport_write_shut(const braid_memory_transport_t *mt);
/* The protocol paused reading. */
bool braid_memory_transport_reading_paused(const braid_memory_transport_t *mt);
/* pause_writing was sent and resume_writing not yet. */
bool braid_memory_transport_writing_paused(const braid_memory_transport_t *mt);
/* Fed bytes waiting for the protocol to resume reading. */
size_t braid_memory_transport_pending_input(const braid_memory_transport_t *mt);

#ifdef __cplusplus
}
#endif
#endif
