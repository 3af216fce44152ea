/* braid: implementing a transport (for module authors).
 *
 * braid/transport.h is the protocol's side: write, close, pause. This
 * header is the other side, for a module that *is* a transport to some
 * protocol: TLS over TCP, a SOCKS or HTTP CONNECT tunnel, a WebSocket or
 * framing layer, an SSH channel or an HTTP/2 stream multiplexed over one
 * connection, a process pipe. braid's own TCP/Unix streams, the memory
 * transport of braid/testing.h and TLS are written against it.
 *
 * Who does what
 * -------------
 * core (the braid_transport_* functions of braid/transport.h) checks every
 * argument and state (NULL, write after close, double pause, ...), keeps
 * the state bits below, counts the write queue against the flow-control
 * marks and sends pause_writing / resume_writing. It calls your vtable
 * only for calls that passed those checks, so a transport never repeats
 * them and every transport behaves the same to a protocol.
 *
 * The implementation (your vtable and your event handlers) moves bytes,
 * tells core how many bytes it holds (braid_transport_impl_set_queued) and
 * when its queue drained (braid_transport_impl_drained), and reports
 * events to the protocol through the braid_transport_deliver_* functions,
 * which apply the lifetime rules of braid/transport.h (connection_made at
 * most once, nothing delivered while reading is paused or the transport
 * is closing, connection_lost exactly once and last).
 *
 * Writing one
 * -----------
 *   1. Embed a braid_transport_t in your connection's struct (anywhere;
 *      get back with BRAID_CONTAINER_OF) and give it a static const
 *      braid_transport_vt. braid_transport_init() it before handing the
 *      braid_transport_t * to anyone.
 *   2. When the connection is up: braid_transport_deliver_made().
 *      Bytes in: braid_transport_deliver_data(); the end of the peer's
 *      output: braid_transport_deliver_eof(). A broken connection:
 *      braid_transport_impl_fail(), then (from a later event, never from
 *      inside one of the protocol's own calls) braid_transport_deliver_lost()
 *      and free your struct after it returns.
 *   3. In vt->write: take the bytes (copy them, or keep owned memory until
 *      written), update the queue with braid_transport_impl_set_queued();
 *      core sends pause_writing when the queue passed the high mark. When
 *      bytes leave the queue later, set the queue again and call
 *      braid_transport_impl_drained(), which sends resume_writing when it
 *      fell to the low mark.
 *   4. vt->close finishes what close/abort/shutdown_write asked (the state
 *      bits are already set) and ends with deliver_lost on a later turn;
 *      vt->set_reading stops or restarts deliveries.
 *
 * Threads: everything here runs on the reactor's thread, like the rest of
 * the transport API.
 *
 * Stacking on another transport
 * -----------------------------
 * A layer over a lower transport (TLS, a framing layer, a tunnel) is a
 * protocol of the lower transport (a braid_protocol_t of its own, given to
 * braid_connect, a factory or braid_transport_set_protocol) and a
 * transport to the protocol above. Its lower-side callbacks turn into
 * deliveries upward; its vtable slots turn into calls on the lower
 * transport:
 *   - write:        encode and braid_transport_write(lower, ...);
 *   - close/abort/shutdown_write: the same on the lower transport (after
 *                   whatever closing message the layer sends);
 *   - set_reading:  braid_transport_pause/resume_reading(lower): the
 *                   upper protocol's pause reaches the socket;
 *   - addr, sockopt, extra: ask the lower transport (extra after the
 *                   layer's own names);
 *   - flow control: call braid_transport_impl_follow_lower() once the
 *                   lower transport is known (and whenever the layer's own
 *                   held bytes change), and braid_transport_impl_drained()
 *                   in the lower protocol's resume_writing: the upper
 *                   queue counts the lower one, and the upper protocol is
 *                   paused and resumed at the upper marks.
 *
 * Wrapping a factory
 * ------------------
 * A server-side layer wraps the user's factory: a braid_factory_t whose
 * build() allocates the layer's connection and returns the layer's
 * lower-side protocol. The user's protocol is built from the inner factory
 * when the layer is ready for it (at once, or after a handshake), set with
 * braid_transport_set_protocol() and told with
 * braid_transport_deliver_made(). A factory built by build() has no
 * reactor: braid_transport_init() takes NULL then, and the layer sets it
 * from the lower transport in its connection_made
 * (braid_transport_impl_set_reactor). When the inner factory refuses
 * (build returns NULL), abort the lower transport, as a listener closes a
 * refused connection. A wrapping factory that owns connections not yet
 * handed to the user (handshakes in progress) should abort them when it is
 * freed, and a listener that owns its wrapping factory frees it from
 * braid_listener_on_close().
 */
#ifndef BRAID_TRANSPORT_IMPL_H
#define BRAID_TRANSPORT_IMPL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "braid/transport.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------------
 * State bits (read with braid_transport_impl_state; core sets them)
 * ------------------------------------------------------------------------ */

/* braid_transport_close() was called, or the transport closes by itself
 * (the peer's EOF reached a protocol without eof_received): flush, then
 * close. No data is delivered any more. Also set by abort. */
#define BRAID_TRANSPORT_CLOSING 0x01u
/* braid_transport_shutdown_write() was called. */
#define BRAID_TRANSPORT_WRITE_SHUT 0x02u
/* The protocol paused reading (braid_transport_pause_reading). */
#define BRAID_TRANSPORT_READ_PAUSED 0x04u
/* pause_writing was sent to the protocol and resume_writing not yet. */
#define BRAID_TRANSPORT_WRITE_PAUSED 0x08u
/* Aborted, or failed (braid_transport_impl_fail): writes are accepted and
 * dropped, and nothing but connection_lost is delivered any more. */
#define BRAID_TRANSPORT_DEAD 0x10u
/* The peer's end of output was delivered (braid_transport_deliver_eof). */
#define BRAID_TRANSPORT_EOF 0x20u
/* connection_made was delivered (braid_transport_deliver_made). */
#define BRAID_TRANSPORT_MADE 0x40u
/* connection_lost was delivered (braid_transport_deliver_lost). */
#define BRAID_TRANSPORT_LOST 0x80u

/* ------------------------------------------------------------------------
 * The vtable
 * ------------------------------------------------------------------------ */

/* vt->close's `how`. */
#define BRAID_TRANSPORT_CLOSE 0          /* braid_transport_close */
#define BRAID_TRANSPORT_ABORT 1          /* braid_transport_abort */
#define BRAID_TRANSPORT_SHUTDOWN_WRITE 2 /* braid_transport_shutdown_write */

/* vt->sockopt's `opt`. */
#define BRAID_TRANSPORT_OPT_NODELAY 0   /* set_nodelay(on) */
#define BRAID_TRANSPORT_OPT_KEEPALIVE 1 /* set_keepalive(on, idle s) */

/* One table per kind of transport, static and const. Every slot receives
 * a transport initialised with this table. Slots marked optional may be
 * NULL; the others are required. */
typedef struct braid_transport_vt {
  /* Queue the bytes of iov[0..n) for writing, in order after everything
   * queued before. Core has checked the arguments and the state: the
   * transport is not closing, not shut for writing, not dead, and the
   * bytes total more than 0 (so n >= 1).
   *   release == NULL (write, writev): the memory is the caller's only for
   *     this call: copy what cannot be written at once.
   *   release != NULL (write_owned; then n == 1): the memory is handed
   *     over; on success call release(iov[0].base, arg) exactly once, when
   *     the bytes are written or dropped (at close, abort, failure), and
   *     not from inside this call's caller's stack if that matters to you
   *     (core allows either). On an error return release must NOT have
   *     been called: the caller still owns the memory.
   * Update the queue (braid_transport_impl_set_queued) before returning;
   * core calls braid_transport_impl_filled afterwards, which may send
   * pause_writing. Return 0, or BRAID_ENOMEM / another negative code, in
   * which case nothing of this write may have been queued (all or
   * nothing). Never deliver protocol callbacks from here. */
  int (*write)(braid_transport_t *t, const braid_iovec_t *iov, size_t n,
               braid_release_cb release, void *arg);

  /* Act on braid_transport_close / abort / shutdown_write. Core has set
   * the state bits first (CLOSE: CLOSING; ABORT: DEAD | CLOSING;
   * SHUTDOWN_WRITE: WRITE_SHUT) and calls each `how` at most once (ABORT
   * may follow CLOSE). CLOSE: stop reading, write what is queued, then
   * close and deliver_lost(0). ABORT: drop the queue (releasing owned
   * memory), close at once, deliver_lost(BRAID_ECONNABORTED).
   * SHUTDOWN_WRITE: after the queue drains, end the output (TCP FIN); keep
   * reading. connection_lost must never be delivered from inside this
   * call: the protocol may be in the middle of its own code (use the
   * completion of the close, or a zero-delay timer). Return 0 or a
   * negative code that the caller of close/abort gets back. */
  int (*close)(braid_transport_t *t, int how);

  /* Reading was paused (on == 0) or resumed (on == 1); core calls it only
   * when the READ_PAUSED bit changed. While paused, deliveries return
   * BRAID_EAGAIN: keep what arrives (or stop asking for it: a stacked
   * transport pauses its lower one) and deliver it after the resume, on a
   * later turn of the loop, never from inside this call (resume may be
   * called inside data_received). */
  int (*set_reading)(braid_transport_t *t, int on);

  /* Optional: the local (peer == 0) or peer (peer == 1) address into
   * *out (out != NULL). NULL slot: BRAID_ENOTSUP. */
  int (*addr)(braid_transport_t *t, int peer, braid_addr_t *out);

  /* Optional: a BRAID_TRANSPORT_OPT_* socket option. NULL slot:
   * BRAID_ENOTSUP. */
  int (*sockopt)(braid_transport_t *t, int opt, int on, unsigned value);

  /* Optional: queue len (> 0) bytes of the regular file fd from offset
   * (braid_transport_sendfile), with release(NULL, arg) called exactly
   * once when they are written or dropped. Like write, for the queue and
   * the error return. NULL slot, or BRAID_ENOTSUP returned: the caller
   * falls back to reading the file. */
  int (*sendfile)(braid_transport_t *t, int fd, uint64_t offset, size_t len,
                  braid_release_cb release, void *arg);

  /* Optional: the value of a named extra (braid_transport_extra), or NULL
   * when this transport has none by that name. A stacked transport
   * answers its own names and asks its lower transport for the rest. */
  void *(*extra)(braid_transport_t *t, const char *name);
} braid_transport_vt;

/* ------------------------------------------------------------------------
 * The transport struct
 * ------------------------------------------------------------------------ */

/* Embed this in your connection's struct. Every field is private to core:
 * read and change it only through the functions below. (The fields are
 * declared, not hidden, only so that the struct can be embedded without
 * an allocation.) */
struct braid_transport {
  const braid_transport_vt *vt; /* private */
  braid_protocol_t *proto;      /* private */
  braid_reactor_t *reactor;     /* private */
  size_t queued;                /* private: own bytes not yet written */
  size_t high, low;             /* private: flow-control marks */
  unsigned state;               /* private: BRAID_TRANSPORT_* bits */
  braid_transport_t *lower;     /* private: see follow_lower */
};

/* Initialise `t`: vtable `vt` (required, must outlive t), reactor `r`
 * (NULL for a transport built by a factory, set later with
 * braid_transport_impl_set_reactor), protocol `p` (NULL until a wrapped
 * factory built it; see braid_transport_set_protocol). The queue is
 * empty, the marks are 64 KiB high and 16 KiB low, no state bit is set.
 * Does not set p->transport (braid_transport_deliver_made does) and calls
 * nothing. */
void braid_transport_init(braid_transport_t *t, const braid_transport_vt *vt,
                          braid_reactor_t *r, braid_protocol_t *p);

/* ------------------------------------------------------------------------
 * Reading the shared state
 * ------------------------------------------------------------------------ */

/* The BRAID_TRANSPORT_* bits; 0 for NULL. */
unsigned braid_transport_impl_state(const braid_transport_t *t);

/* The protocol events go to now (braid_transport_set_protocol may change
 * it between two events); NULL for NULL or none yet. */
braid_protocol_t *braid_transport_impl_protocol(const braid_transport_t *t);

/* The vtable t was initialised with, so that a module recognises its own
 * transports (compare with the address of its table); NULL for NULL. */
const braid_transport_vt *braid_transport_impl_vt(const braid_transport_t *t);

/* The flow-control marks (braid_transport_set_write_limits); either
 * pointer may be NULL. */
void braid_transport_impl_limits(const braid_transport_t *t, size_t *high,
                                 size_t *low);

/* Whether data and EOF may be delivered now: not paused, closing, dead or
 * lost. */
bool braid_transport_impl_reading(const braid_transport_t *t);

/* ------------------------------------------------------------------------
 * Changing the shared state
 * ------------------------------------------------------------------------ */

/* Set the reactor of a transport initialised with none (a factory-built
 * layer learns it from its lower transport). */
void braid_transport_impl_set_reactor(braid_transport_t *t, braid_reactor_t *r);

/* The connection broke (an I/O error, a protocol violation, a reset):
 * sets DEAD, after which writes are swallowed, braid_transport_closing()
 * is true, pause/resume_writing are no longer sent and nothing but
 * connection_lost is delivered. Deliver it (braid_transport_deliver_lost)
 * once the transport is done with its resources. Idempotent. */
void braid_transport_impl_fail(braid_transport_t *t);

/* ------------------------------------------------------------------------
 * Flow control
 * ------------------------------------------------------------------------ */

/* Record how many bytes the transport holds itself that were written by
 * the protocol and have not left yet. braid_transport_write_queued and the
 * marks count these plus, for a stacked transport, the lower transport's
 * queue (braid_transport_impl_follow_lower). Sends nothing: see
 * filled/drained. */
void braid_transport_impl_set_queued(braid_transport_t *t, size_t bytes);

/* After the queue grew: if it passed the high mark, send pause_writing
 * (once, until resume). Core calls this after every successful vt->write
 * and vt->sendfile; call it yourself when your queue grows otherwise (a
 * layer adding its own framing bytes). Not sent to a dead transport. */
void braid_transport_impl_filled(braid_transport_t *t);

/* After the queue shrank: if pause_writing was sent and the queue is now
 * at or below the low mark, send resume_writing (never to a transport that
 * is dead or closing). Call it from your write-completion path, never from
 * inside vt->write. */
void braid_transport_impl_drained(braid_transport_t *t);

/* For a transport stacked on `lower`, keeping `own` bytes of its own (not
 * yet handed down, e.g. plaintext held during a handshake; 0 for a layer
 * that hands everything down at once):
 *   - from now on t's queue, as braid_transport_write_queued(t) and the
 *     marks see it, is own + lower's queue, counted live (and through
 *     further layers below), so it is never stale;
 *   - lower's marks are set to t's low mark for both, now and whenever t's
 *     marks change, so that the lower transport sends its protocol (the
 *     layer) pause_writing as soon as it holds more than t's low mark and
 *     resume_writing exactly when it falls back to it: the moment t's
 *     queue may have drained.
 * Call it once the lower transport is known and again whenever `own`
 * changes (in vt->write after handing bytes down, for instance), and in
 * the lower protocol's resume_writing call braid_transport_impl_drained(t).
 * lower == NULL counts as an empty lower queue. The link is dropped when
 * connection_lost is delivered. */
void braid_transport_impl_follow_lower(braid_transport_t *t,
                                       braid_transport_t *lower, size_t own);

/* ------------------------------------------------------------------------
 * Delivering events to the protocol
 * ------------------------------------------------------------------------
 * Each reads the current protocol (set_protocol may change it) and skips
 * a NULL callback. A protocol's callback may call anything of
 * braid/transport.h on `t`, including close and abort: re-check what you
 * need (braid_transport_impl_state, _reading) after each delivery.
 * Delivery functions are not re-entrant per transport: do not deliver from
 * inside a vtable slot (core calls those from the protocol's own calls). */

/* The connection is up: sets p->transport = t, then connection_made(p, t),
 * and the MADE bit. Returns 0; BRAID_EALREADY if made was delivered
 * before; BRAID_ECLOSED, without calling it, when the protocol closed or
 * aborted the transport before it was made (a client's transport exists
 * from the connect call on) or it failed. BRAID_EINVAL for NULL or no
 * protocol. */
int braid_transport_deliver_made(braid_transport_t *t);

/* Bytes for data_received (`data` need only live during the call). 0:
 * delivered (len 0 delivers nothing); BRAID_EAGAIN: reading is paused:
 * nothing was delivered, keep the bytes and deliver them after
 * vt->set_reading(t, 1); BRAID_ECLOSED: the transport is closing, dead
 * or lost: drop them. */
int braid_transport_deliver_data(braid_transport_t *t, const void *data,
                                 size_t len);

/* The peer ended its output. 0: delivered, and the EOF bit set. A
 * protocol with eof_received gets it; if the protocol had shut down
 * writing (before or inside the callback), both directions are now done
 * and the transport is closed (braid_transport_close: CLOSING set,
 * vt->close(CLOSE) called). A protocol without eof_received is not
 * half-close aware and is closed the same way, as braid/transport.h
 * promises. BRAID_EAGAIN: reading is paused; deliver it after the resume,
 * after any bytes kept. BRAID_ECLOSED: closing, dead or lost: nothing
 * happens. BRAID_EALREADY: EOF was delivered before. */
int braid_transport_deliver_eof(braid_transport_t *t);

/* The end: sets DEAD and LOST and calls connection_lost(p, reason)
 * (reason 0 for a clean close by either side, else a BRAID_E* code),
 * exactly once: a second call does nothing and returns BRAID_EALREADY.
 * Delivered whether or not connection_made was (a client whose connect
 * failed hears only this). After it returns the protocol may have freed
 * itself and must not be touched: free your own struct now. Returns 0. */
int braid_transport_deliver_lost(braid_transport_t *t, int reason);

#ifdef __cplusplus
}
#endif
#endif
