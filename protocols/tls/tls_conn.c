/* One TLS connection (braid/tls.h): a transport over a lower transport, on
 * OpenSSL 3 through memory BIOs, run as an explicit state machine.
 *
 * Why it lives in protocols/ and not core/: core has no dependencies and
 * this needs OpenSSL; and like any protocol it only uses the lower
 * transport through the public braid_transport_* API, so it works over
 * streams, the memory transport and whatever transport comes next. Its
 * upper side implements a transport through the public implementation
 * interface (braid/transport_impl.h), so that argument checks, state bits
 * and flow-control marks stay in core, as for every transport.
 *
 * States. A connection is in exactly one state, s->state, changed only by
 * braid__tls_enter(), which also arms the state's one timer (s->timer) and
 * does what entering the state means for the lower transport. The other
 * fields are facts the state is decided from (see braid__tls in
 * tls_internal.h), or the state's data.
 *
 *   state        waits for                       timeout (context, default)
 *   -----------  ------------------------------  --------------------------
 *   new          the lower transport: a client's none of its own: the
 *                connect, a factory-built        connect's (braid_connect
 *                connection's connection_made    options); a listener's
 *                                                transport is up at once
 *   handshaking  the handshake to complete       handshake_timeout (10 s)
 *                (a close asked for meanwhile    from entry. Then: abort,
 *                waits for it, so that the       connection_lost
 *                writes made before go out)      (BRAID_ETIMEDOUT).
 *   open         anything: the protocol runs     none: the protocol above
 *                (also half-closed, either way:  owns its idle and read
 *                it still reads or writes)       timeouts, as on TCP.
 *   closing      the lower transport to flush    close_timeout (5 s)
 *                our last records and the        without progress: the
 *                close_notify (or a failure's    peer taking no byte of
 *                alert) and close. We do not     the lower queue. Then:
 *                wait for the peer's             abort, connection_lost
 *                close_notify (RFC 8446 6.1      (BRAID_ETIMEDOUT, or the
 *                allows it), and read nothing.   failure's reason).
 *   aborted      the lower transport's           none: a transport calls
 *                connection_lost                 it after an abort
 *   closed       nothing: freed as the user's connection_lost returns
 *
 * "Without progress", for closing: a peer that stops reading must not
 * hold a closed connection (its buffers, its descriptor) for ever, but a
 * slow peer still reading the end of a response written just before the
 * close must get it, as it would on TCP. So the clock restarts whenever
 * the lower queue shrank; it is looked at every quarter of the timeout,
 * so the abort comes between 1 and 1.25 timeouts after the last byte the
 * peer took.
 *
 * Transitions:
 *
 *      lower up             handshake done              close, or the
 *   new --------> handshaking ------------> open ----------------------.
 *    |                |  \  (a close asked for meanwhile:    |          |
 *    |                |   `-- closing after the writes) --.  | peer's   |
 *    |                |                                   |  | close_   |
 *    |                | failure (alert sent)              v  | notify   v
 *    |                `-------------------------------> closing <-------'
 *    |                                                    |  when we had
 *    |       abort, handshake timeout, refused by the     |  shut down
 *    |       inner factory, factory freed, no memory      |  writing
 *    `--------------------------> aborted <---------------'
 *                                    |   close timeout, abort
 *   any --lower connection_lost--> closed (freed)
 *
 * Data flow: the lower transport's bytes are appended to `rbio`; OpenSSL
 * reads them from there and writes records to `wbio`, which is drained into
 * braid_transport_write(lower) after every step. Plaintext for the
 * protocol is read with SSL_read_ex into a stack buffer the size of one
 * record and delivered without a further copy. `kick`, a zero-delay
 * timer, is not a state's timer: it runs buffered input on a later turn
 * (after a resume, or ciphertext given with braid_tls_feed).
 *
 * Lifetime: one braid__tls per connection, freed in the lower transport's
 * connection_lost (which never runs inside another of its callbacks), right
 * after the user's connection_lost. Every user callback may call back into
 * the TLS transport; the code re-checks the state after each one. */
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "braid/alloc.h"
#include "braid/error.h"
#include "braid/log.h"
#include "braid/tls.h"
#include "braid/transport_impl.h"
#include "protocols/tls/tls_internal.h"

#define ST_NEW BRAID__TLS_NEW
#define ST_HANDSHAKING BRAID__TLS_HANDSHAKING
#define ST_OPEN BRAID__TLS_OPEN
#define ST_CLOSING BRAID__TLS_CLOSING
#define ST_ABORTED BRAID__TLS_ABORTED
#define ST_CLOSED BRAID__TLS_CLOSED

#define BRAID__TLS(tp) BRAID_CONTAINER_OF(tp, braid__tls, t)

static const braid_transport_vt braid__tls_vt;
static const braid_protocol_ops braid__tls_lower_ops;

braid__tls *braid__tls_of(const braid_transport_t *t) {
  if (braid_transport_impl_vt(t) != &braid__tls_vt)
    return NULL;
  return BRAID_CONTAINER_OF((braid_transport_t *)t, braid__tls, t);
}

/* The states that read, write and run OpenSSL. */
static bool braid__tls_live(const braid__tls *s) {
  return s->state <= ST_OPEN;
}

static void braid__tls_process(braid__tls *s);
static void braid__tls_enter(braid__tls *s, braid__tls_state st);

/* The TLS transport's queue: plaintext waiting for the handshake plus the
 * lower transport's ciphertext, which core counts live.
 * braid_transport_impl_follow_lower also has the lower transport pause us
 * at the TLS transport's low mark, so its resume_writing arrives exactly
 * when our queue fell back below it (the lower queue is ours minus the
 * plaintext); core keeps the lower marks in step when the user changes
 * ours. */
static void braid__tls_sync_queued(braid__tls *s) {
  braid_transport_impl_follow_lower(&s->t, s->lower, s->pending);
}

static void braid__tls_free_pending(braid__tls *s) {
  braid__tls_chunk *c = s->head;
  while (c != NULL) {
    braid__tls_chunk *next = c->next;
    braid_free(c);
    c = next;
  }
  s->head = s->tail = NULL;
  s->pending = 0;
}

void braid__tls_destroy(braid__tls *s) {
  braid__tls_unlink(s);
  if (braid_timer_active(&s->kick))
    braid_timer_cancel(&s->kick);
  if (braid_timer_active(&s->timer))
    braid_timer_cancel(&s->timer);
  braid__tls_free_pending(s);
  SSL_free(s->ssl); /* frees both BIOs */
  braid__tls_ctx_unref(s->ctx);
  braid_free(s->alpn);
  braid_free(s);
}

/* Move everything OpenSSL produced to the lower transport. */
static int braid__tls_flush(braid__tls *s) {
  char *data;
  long n = BIO_get_mem_data(s->wbio, &data);
  if (n <= 0)
    return 0;
  int rc = 0;
  if (s->lower != NULL && !braid_transport_closing(s->lower))
    rc = braid_transport_write(s->lower, data, (size_t)n);
  /* Consume what was written. Not BIO_reset: on a read-write memory BIO
   * it clears the whole allocation, which stays as large as the largest
   * burst, on every flush. Reading only moves a pointer (and copies n). */
  char scratch[4096];
  while (BIO_read(s->wbio, scratch, sizeof scratch) > 0)
    ;
  if (rc == BRAID_ECLOSED)
    rc = 0; /* the lower side is going away; connection_lost follows */
  braid__tls_sync_queued(s);
  return rc;
}

/* ------------------------------------------------------------------------
 * Failures
 * ------------------------------------------------------------------------ */

/* Record why the connection ends (for connection_lost and
 * braid_tls_error) and log it: WARN on clients, INFO on servers, which
 * meet broken peers routinely. Sets DEAD: nothing but connection_lost
 * reaches the protocol any more. The first failure wins. */
static void braid__tls_recordv(braid__tls *s, int reason, const char *fmt,
                               va_list ap)
#if defined(__GNUC__) || defined(__clang__)
    __attribute__((format(printf, 3, 0)))
#endif
    ;
static void braid__tls_recordv(braid__tls *s, int reason, const char *fmt,
                               va_list ap) {
  if (s->failed)
    return;
  s->failed = 1;
  s->reason = reason;
  vsnprintf(s->err, sizeof s->err, fmt, ap);
  char peer[64] = "?";
  if (s->lower != NULL) {
    braid_addr_t a;
    if (braid_transport_peer_addr(s->lower, &a) == 0)
      braid_addr_format(&a, peer, sizeof peer);
  }
  braid_reactor_log(braid_transport_reactor(&s->t),
                    s->server ? BRAID_LOG_INFO : BRAID_LOG_WARN, "tls",
                    "%s with %s: %s",
                    s->handshaken ? "connection" : "handshake", peer, s->err);
  braid_transport_impl_fail(&s->t);
  braid__tls_free_pending(s);
}

static void braid__tls_record(braid__tls *s, int reason, const char *fmt, ...)
#if defined(__GNUC__) || defined(__clang__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;
static void braid__tls_record(braid__tls *s, int reason, const char *fmt,
                              ...) {
  va_list ap;
  va_start(ap, fmt);
  braid__tls_recordv(s, reason, fmt, ap);
  va_end(ap);
}

/* The connection failed: record why, send whatever alert OpenSSL queued,
 * and close the lower transport (the alert is flushed first: closing), or
 * abort it when `abort` is set (aborted). */
static void braid__tls_fail(braid__tls *s, int reason, int abort,
                            const char *fmt, ...)
#if defined(__GNUC__) || defined(__clang__)
    __attribute__((format(printf, 4, 5)))
#endif
    ;
static void braid__tls_fail(braid__tls *s, int reason, int abort,
                            const char *fmt, ...) {
  if (s->failed || !braid__tls_live(s))
    return;
  va_list ap;
  va_start(ap, fmt);
  braid__tls_recordv(s, reason, fmt, ap);
  va_end(ap);
  if (!abort)
    braid__tls_flush(s); /* the alert (if any), best effort */
  braid__tls_enter(s, abort ? ST_ABORTED : ST_CLOSING);
}

/* Turn an SSL_get_error result into a failure with a reason naming the
 * problem (the certificate check's own text when that is what failed). */
static void braid__tls_ssl_fail(braid__tls *s, int ret) {
  int e = SSL_get_error(s->ssl, ret);
  long v = SSL_get_verify_result(s->ssl);
  if (v != X509_V_OK) {
    ERR_clear_error();
    braid__tls_fail(s, BRAID_EPROTO, 0,
                    "certificate verify failed: %s (X509 error %ld)",
                    X509_verify_cert_error_string(v), v);
    return;
  }
  char e2[BRAID__TLS_ERR_MAX - 32];
  if (e == SSL_ERROR_SSL) {
    braid__tls_errtext(e2, sizeof e2);
    braid__tls_fail(s, BRAID_EPROTO, 0, "TLS error: %s", e2);
  } else {
    ERR_clear_error();
    braid__tls_fail(s, BRAID_EPROTO, 0, "TLS error (SSL_get_error %d)", e);
  }
}

void braid__tls_drop(braid__tls *s) {
  s->inner = NULL;
  if (s->failed || !braid__tls_live(s))
    return;
  s->failed = 1;
  s->reason = BRAID_ECONNABORTED;
  braid_transport_impl_fail(&s->t);
  braid__tls_enter(s, ST_ABORTED);
}

/* ------------------------------------------------------------------------
 * The states' timers and the transition function
 * ------------------------------------------------------------------------ */

/* The handshake did not complete in time: a peer that sends nothing, part
 * of a hello or stops in the middle would otherwise hold the connection
 * (and its buffers) for ever, since no protocol and so no protocol timer
 * exists before the handshake. Aborted, not closed: a peer that stalls may
 * not read either, and there is nothing worth flushing. */
static void braid__tls_hs_timeout_cb(braid_timer_t *t, void *arg) {
  (void)t;
  braid__tls *s = arg;
  braid__tls_fail(s, BRAID_ETIMEDOUT, 1, "handshake timed out after %llu ms",
                  (unsigned long long)(s->hs_timeout / 1000000u));
}

static uint64_t braid__tls_now(braid__tls *s) {
  /* Inside an I/O callback the cached clock may be from before a long
   * wait in the poller: refresh it, or the deadline would be early. */
  braid_reactor_t *r = braid_transport_reactor(&s->t);
  braid_reactor_update_time(r);
  return braid_reactor_now(r);
}

static void braid__tls_close_timeout_cb(braid_timer_t *t, void *arg);

/* Arm the closing state's timer for its next look, at most a quarter of
 * the timeout away (see "without progress" at the top). */
static int braid__tls_close_arm(braid__tls *s, uint64_t now) {
  uint64_t end = s->close_progress + s->close_timeout;
  uint64_t step = s->close_timeout / 4 > 0 ? s->close_timeout / 4 : 1;
  uint64_t d = end > now ? end - now : 1;
  if (d > step)
    d = step;
  return braid_timer_start(braid_transport_reactor(&s->t), &s->timer, d,
                           braid__tls_close_timeout_cb, s);
}

static void braid__tls_close_timeout_cb(braid_timer_t *t, void *arg) {
  (void)t;
  braid__tls *s = arg;
  uint64_t now = braid__tls_now(s);
  size_t q = braid_transport_write_queued(s->lower);
  if (q < s->close_queued) { /* the peer took bytes: progress */
    s->close_queued = q;
    s->close_progress = now;
  }
  if (now - s->close_progress < s->close_timeout) {
    if (braid__tls_close_arm(s, now) == 0)
      return;
    braid__tls_record(s, BRAID_ENOMEM, "cannot arm the close timer");
  } else {
    /* A failure's reason (the close was its alert) stays the reason. */
    braid__tls_record(s, BRAID_ETIMEDOUT,
                      "close timed out: the peer took none of the last %zu "
                      "bytes for %llu ms",
                      q, (unsigned long long)(s->close_timeout / 1000000u));
  }
  braid__tls_enter(s, ST_ABORTED);
}

/* The one transition function: set the state, stop the old state's timer
 * and arm the new one's, and act on the lower transport as the new state
 * requires. Callers have done the state's other work first (sent the
 * close_notify before closing, recorded a failure). */
static void braid__tls_enter(braid__tls *s, braid__tls_state st) {
  if (s->state == st || s->state == ST_CLOSED)
    return;
  /* Closing means flushing into a lower transport: without one (a client
   * still connecting) there is nothing to flush. */
  if (st == ST_CLOSING && s->lower == NULL)
    st = ST_ABORTED;
  s->state = st;
  if (braid_timer_active(&s->timer))
    braid_timer_cancel(&s->timer);
  braid_reactor_t *r = braid_transport_reactor(&s->t);
  switch (st) {
  case ST_HANDSHAKING:
    if (s->hs_timeout > 0 && braid_timer_start(r, &s->timer, s->hs_timeout,
                                               braid__tls_hs_timeout_cb, s) < 0)
      /* Unarmed, a stalled handshake would wait for ever: end it. */
      braid__tls_fail(s, BRAID_ENOMEM, 1,
                      "cannot start TLS: no memory for the handshake timer");
    break;
  case ST_CLOSING: {
    /* BRAID_ECLOSED: the lower transport is going already (it failed, or
     * closes itself): its connection_lost follows, and the timer bounds
     * the wait as for our own close. */
    int rc = braid_transport_close(s->lower);
    if (rc < 0 && rc != BRAID_ECLOSED) {
      braid__tls_enter(s, ST_ABORTED);
      break;
    }
    if (s->close_timeout > 0 && s->state == ST_CLOSING) {
      s->close_progress = braid__tls_now(s);
      s->close_queued = braid_transport_write_queued(s->lower);
      if (braid__tls_close_arm(s, s->close_progress) < 0) {
        braid__tls_record(s, BRAID_ENOMEM, "cannot arm the close timer");
        braid__tls_enter(s, ST_ABORTED);
      }
    }
    break;
  }
  case ST_ABORTED:
    /* Without a lower transport yet, its connection_made sees the state
     * and aborts it. */
    if (s->lower != NULL)
      braid_transport_abort(s->lower);
    break;
  case ST_NEW:
  case ST_OPEN:
  case ST_CLOSED:
    break; /* no timer: see the table at the top */
  }
}

/* ------------------------------------------------------------------------
 * Running OpenSSL
 * ------------------------------------------------------------------------ */

static void braid__tls_lower_eof_now(braid__tls *s);

static void braid__tls_kick_cb(braid_timer_t *t, void *arg) {
  (void)t;
  braid__tls *s = arg;
  braid__tls_process(s);
  if (s->lower_eof_pending && braid_transport_impl_reading(&s->t)) {
    s->lower_eof_pending = 0;
    braid__tls_lower_eof_now(s);
  }
}

static void braid__tls_schedule(braid__tls *s) {
  if (s->state == ST_CLOSED || braid_timer_active(&s->kick))
    return;
  if (braid_timer_start(braid_transport_reactor(&s->t), &s->kick, 0,
                        braid__tls_kick_cb, s) < 0)
    braid__tls_fail(s, BRAID_ENOMEM, 0, "cannot schedule TLS processing");
}

/* Encrypt plaintext now that the handshake is done. */
static int braid__tls_encrypt(braid__tls *s, const void *data, size_t len) {
  /* One record at a time, each flushed to the lower transport at once: the
   * write BIO never holds more than a record, so a large write does not
   * leave a large buffer behind on the connection. */
  size_t done = 0;
  while (done < len) {
    size_t n = 0, want = len - done;
    if (want > 16384)
      want = 16384;
    int ret = SSL_write_ex(s->ssl, (const char *)data + done, want, &n);
    if (ret != 1) {
      braid__tls_ssl_fail(s, ret);
      return BRAID_EPROTO;
    }
    done += n;
    if (braid__tls_flush(s) < 0) {
      braid__tls_fail(s, BRAID_ENOMEM, 0, "cannot queue encrypted data");
      return BRAID_ENOMEM;
    }
  }
  return 0;
}

/* Send the close_notify once. */
static void braid__tls_send_shutdown(braid__tls *s) {
  if (s->sent_shutdown || !s->handshaken)
    return;
  s->sent_shutdown = 1;
  int ret = SSL_shutdown(s->ssl);
  if (ret < 0)
    ERR_clear_error(); /* a peer that already went away */
  braid__tls_flush(s);
}

/* Our close_notify, then the lower transport flushes and closes. */
static void braid__tls_close_now(braid__tls *s) {
  braid__tls_send_shutdown(s);
  braid__tls_enter(s, ST_CLOSING);
}

/* The handshake completed: the user's protocol exists from now on (server
 * wrap) and learns about the connection. */
static void braid__tls_handshake_done(braid__tls *s) {
  s->handshaken = 1;
  braid__tls_enter(s, ST_OPEN);
  /* From here on the connection belongs to the user's protocol (or is
   * refused), no longer to the factory. */
  braid__tls_unlink(s);
  const unsigned char *a = NULL;
  unsigned alen = 0;
  SSL_get0_alpn_selected(s->ssl, &a, &alen);
  if (alen > 0) {
    s->alpn = braid_malloc(alen + 1);
    if (s->alpn != NULL) {
      memcpy(s->alpn, a, alen);
      s->alpn[alen] = '\0';
    }
  }
  if (s->inner != NULL) {
    braid_protocol_t *p = s->inner->build(s->inner, &s->peer);
    s->inner = NULL;
    if (p == NULL || braid_transport_set_protocol(&s->t, p) < 0) {
      /* Refused, as a plain listener does: reset, nobody to tell. */
      braid_transport_impl_fail(&s->t);
      s->failed = 1;
      braid__tls_enter(s, ST_ABORTED);
      return;
    }
  }
  /* Plaintext written before the handshake goes first. */
  braid__tls_chunk *c = s->head;
  s->head = s->tail = NULL;
  s->pending = 0;
  int rc = 0;
  while (c != NULL) {
    braid__tls_chunk *next = c->next;
    if (rc == 0)
      rc = braid__tls_encrypt(s, c->data, c->len);
    braid_free(c);
    c = next;
  }
  if (rc < 0)
    return;
  s->made = 1;
  /* What the protocol asked for before this point; from connection_made on,
   * close and shutdown_write act at once (braid__tls_close). */
  unsigned before = braid_transport_impl_state(&s->t);
  /* A client that closed before the handshake completed has its writes
   * sent, but is not told the connection was made (deliver_made sees the
   * CLOSING bit). */
  braid_transport_deliver_made(&s->t);
  if (s->state != ST_OPEN ||
      (braid_transport_impl_state(&s->t) & BRAID_TRANSPORT_DEAD))
    return;
  /* A producer paused by plaintext queued during the handshake is resumed
   * here if that plaintext, now ciphertext, sits below the low mark (the
   * lower transport only reports drains from above it). */
  braid__tls_sync_queued(s);
  braid_transport_impl_drained(&s->t);
  /* A close asked for before the handshake can go ahead now. */
  if (before & BRAID_TRANSPORT_CLOSING) {
    braid__tls_close_now(s);
  } else if (before & BRAID_TRANSPORT_WRITE_SHUT) {
    braid__tls_send_shutdown(s);
    braid_transport_shutdown_write(s->lower);
  }
}

static int braid__tls_may_read(const braid__tls *s) {
  return braid__tls_live(s) && braid_transport_impl_reading(&s->t);
}

/* The peer's close_notify: an orderly end of its output. A protocol that
 * is not half-close aware is closed by core (braid__tls_close answers with
 * our close_notify, as a stream closes on EOF); one that had shut down
 * writing too is closed the same way, both directions being done. */
static void braid__tls_close_notify(braid__tls *s) {
  s->got_close_notify = 1;
  braid_transport_deliver_eof(&s->t);
}

/* Run OpenSSL over what is buffered: the handshake, then plaintext for the
 * protocol while it reads. */
static void braid__tls_process(braid__tls *s) {
  if (!braid__tls_live(s) || s->in_process)
    return;
  s->in_process = 1;
  if (!s->handshaken) {
    ERR_clear_error();
    int ret = SSL_do_handshake(s->ssl);
    if (ret == 1) {
      if (braid__tls_flush(s) < 0) {
        braid__tls_fail(s, BRAID_ENOMEM, 0, "cannot queue handshake output");
        goto out;
      }
      braid__tls_handshake_done(s);
    } else {
      int e = SSL_get_error(s->ssl, ret);
      if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE) {
        braid__tls_ssl_fail(s, ret);
        goto out;
      }
    }
    if (braid__tls_flush(s) < 0)
      braid__tls_fail(s, BRAID_ENOMEM, 0, "cannot queue handshake output");
    if (!s->handshaken)
      goto out;
  }
  while (braid__tls_may_read(s) && !s->got_close_notify) {
    /* One record's worth: SSL_read never returns more than that. */
    unsigned char buf[16384];
    size_t n = 0;
    ERR_clear_error();
    int ret = SSL_read_ex(s->ssl, buf, sizeof buf, &n);
    /* Reading may produce output (TLS 1.3 key updates, alerts). */
    braid__tls_flush(s);
    if (ret == 1) {
      braid_transport_deliver_data(&s->t, buf, n);
      continue;
    }
    int e = SSL_get_error(s->ssl, ret);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
      break;
    if (e == SSL_ERROR_ZERO_RETURN) {
      braid__tls_close_notify(s);
      break;
    }
    braid__tls_ssl_fail(s, ret);
    break;
  }
out:
  s->in_process = 0;
}

/* The lower transport is up: the handshake's clock starts, and a client
 * sends its ClientHello. */
static void braid__tls_begin(braid__tls *s) {
  braid__tls_sync_queued(s);
  braid__tls_enter(s, ST_HANDSHAKING);
  if (!s->server)
    braid__tls_process(s);
}

/* ------------------------------------------------------------------------
 * The lower transport's protocol
 * ------------------------------------------------------------------------ */

#define BRAID__TLS_LOWER(p) BRAID_CONTAINER_OF(p, braid__tls, lower_p)

static void braid__tls_lower_made(braid_protocol_t *p, braid_transport_t *t) {
  braid__tls *s = BRAID__TLS_LOWER(p);
  s->lower = t;
  /* Built by a factory, which has no reactor: the lower transport's. */
  if (braid_transport_reactor(&s->t) == NULL)
    braid_transport_impl_set_reactor(&s->t, braid_transport_reactor(t));
  unsigned st = braid_transport_impl_state(&s->t);
  if (s->state == ST_ABORTED || (st & BRAID_TRANSPORT_DEAD)) {
    /* aborted while connecting, or dropped by its factory */
    braid_transport_abort(t);
    return;
  }
  if (st & BRAID_TRANSPORT_READ_PAUSED)
    braid_transport_pause_reading(t);
  braid__tls_begin(s);
}

static void braid__tls_lower_data(braid_protocol_t *p, const void *data,
                                  size_t len) {
  braid__tls *s = BRAID__TLS_LOWER(p);
  if (!braid__tls_live(s))
    return;
  /* A memory BIO grows as needed; it only fails without memory. */
  if (len > INT_MAX || BIO_write(s->rbio, data, (int)len) != (int)len) {
    braid__tls_fail(s, BRAID_ENOMEM, 0, "cannot buffer received data");
    return;
  }
  braid__tls_process(s);
}

static void braid__tls_lower_eof(braid_protocol_t *p) {
  braid__tls *s = BRAID__TLS_LOWER(p);
  if (!braid__tls_live(s))
    return;
  /* Records still buffered come before the end. (With reading paused they
   * stay buffered: the lower transport is paused too then, so its EOF
   * comes after the resume.) */
  braid__tls_process(s);
  if (!braid__tls_live(s))
    return;
  if (!s->got_close_notify &&
      (braid_transport_impl_state(&s->t) & BRAID_TRANSPORT_READ_PAUSED)) {
    /* The protocol paused inside a delivery just made: the end comes after
     * the records still buffered, once it resumes (the kick). */
    s->lower_eof_pending = 1;
    return;
  }
  braid__tls_lower_eof_now(s);
}

static void braid__tls_lower_eof_now(braid__tls *s) {
  if (!braid__tls_live(s))
    return;
  if (s->got_close_notify) {
    /* Both directions are done once we had shut down writing. */
    if (braid_transport_impl_state(&s->t) & BRAID_TRANSPORT_WRITE_SHUT)
      braid__tls_enter(s, ST_CLOSING);
    return;
  }
  if (!s->handshaken) {
    braid__tls_fail(s, BRAID_EPROTO, 0,
                    "the peer closed the connection during the handshake");
    return;
  }
  if (!s->ctx->lenient_eof) {
    braid__tls_fail(s, BRAID_EPROTO, 0,
                    "the peer closed the connection without close_notify "
                    "(truncated)");
    return;
  }
  /* Lenient: an ordinary EOF (closing as after a close_notify). */
  braid_transport_deliver_eof(&s->t);
}

static void braid__tls_lower_lost(braid_protocol_t *p, int reason) {
  braid__tls *s = BRAID__TLS_LOWER(p);
  braid__tls_enter(s, ST_CLOSED);
  int r = s->failed ? s->reason : reason;
  if (!s->made && r == 0)
    r = BRAID_ECONNABORTED; /* closed before the handshake completed */
  /* A server whose handshake never completed has no user protocol (the
   * delivery finds none); a client (or STARTTLS) protocol hears about the
   * failure. */
  if (s->inner == NULL)
    braid_transport_deliver_lost(&s->t, r);
  else
    braid_transport_impl_fail(&s->t);
  braid__tls_destroy(s);
}

static void braid__tls_lower_pause(braid_protocol_t *p) {
  (void)p; /* our own mark decides; see braid__tls_sync_queued */
}

static void braid__tls_lower_resume(braid_protocol_t *p) {
  braid__tls *s = BRAID__TLS_LOWER(p);
  if (s->state == ST_CLOSED)
    return;
  braid__tls_sync_queued(s);
  if (s->made)
    braid_transport_impl_drained(&s->t);
}

static const braid_protocol_ops braid__tls_lower_ops = {
    .connection_made = braid__tls_lower_made,
    .data_received = braid__tls_lower_data,
    .eof_received = braid__tls_lower_eof,
    .connection_lost = braid__tls_lower_lost,
    .pause_writing = braid__tls_lower_pause,
    .resume_writing = braid__tls_lower_resume,
};

/* ------------------------------------------------------------------------
 * The TLS transport's vtable
 * ------------------------------------------------------------------------ */

static int braid__tls_write(braid_transport_t *t, const braid_iovec_t *iov,
                            size_t n, braid_release_cb release, void *arg) {
  braid__tls *s = BRAID__TLS(t);
  size_t total = 0;
  for (size_t i = 0; i < n; i++)
    total += iov[i].len;
  int rc = 0;
  if (!braid__tls_live(s)) {
    /* swallowed until connection_lost, as on a failed stream */
  } else if (!s->made) {
    braid__tls_chunk *c = braid_malloc(sizeof *c + total);
    if (c == NULL)
      return BRAID_ENOMEM; /* release not called: the caller keeps it */
    c->next = NULL;
    c->len = total;
    size_t off = 0;
    for (size_t i = 0; i < n; i++) {
      if (iov[i].len > 0)
        memcpy(c->data + off, iov[i].base, iov[i].len);
      off += iov[i].len;
    }
    if (s->tail != NULL)
      s->tail->next = c;
    else
      s->head = c;
    s->tail = c;
    s->pending += total;
  } else {
    /* Small iovecs are coalesced so that a line and its delimiter make one
     * record, not two. */
    unsigned char buf[4096];
    if (n > 1 && total <= sizeof buf) {
      size_t off = 0;
      for (size_t i = 0; i < n; i++) {
        if (iov[i].len > 0)
          memcpy(buf + off, iov[i].base, iov[i].len);
        off += iov[i].len;
      }
      rc = braid__tls_encrypt(s, buf, total);
    } else {
      for (size_t i = 0; i < n && rc == 0; i++)
        rc = braid__tls_encrypt(s, iov[i].base, iov[i].len);
    }
    if (rc == 0 && braid__tls_flush(s) < 0)
      braid__tls_fail(s, BRAID_ENOMEM, 0, "cannot queue encrypted data");
    rc = 0; /* a failure ends the connection; the write itself is taken */
  }
  /* The bytes were copied or encrypted: the caller's memory is free. */
  if (release != NULL)
    release((void *)iov[0].base, arg);
  braid__tls_sync_queued(s);
  return rc;
}

static int braid__tls_close(braid_transport_t *t, int how) {
  braid__tls *s = BRAID__TLS(t);
  if (s->state == ST_CLOSED)
    return 0;
  switch (how) {
  case BRAID_TRANSPORT_ABORT:
    if (!s->failed)
      s->reason = BRAID_ECONNABORTED;
    braid__tls_free_pending(s);
    braid__tls_enter(s, ST_ABORTED);
    return 0;
  case BRAID_TRANSPORT_CLOSE:
    /* Before the handshake (new, handshaking): a client or STARTTLS
     * protocol waits for it to finish so that its queued writes go out
     * (see handshake_done). Failed or closing already: under way. */
    if (s->state == ST_OPEN && s->made)
      braid__tls_close_now(s);
    return 0;
  case BRAID_TRANSPORT_SHUTDOWN_WRITE:
    if (s->state != ST_OPEN || !s->made)
      return 0;
    if (s->got_close_notify) {
      braid__tls_close_now(s);
    } else {
      braid__tls_send_shutdown(s);
      braid_transport_shutdown_write(s->lower);
    }
    return 0;
  }
  return BRAID_EINVAL;
}

static int braid__tls_set_reading(braid_transport_t *t, int on) {
  braid__tls *s = BRAID__TLS(t);
  if (s->state == ST_CLOSED || s->lower == NULL)
    return 0;
  if (!on)
    return braid_transport_pause_reading(s->lower);
  int rc = braid_transport_resume_reading(s->lower);
  /* Records OpenSSL already holds are delivered on the next turn, so a
   * resume inside data_received does not nest callbacks. */
  braid__tls_schedule(s);
  return rc;
}

static int braid__tls_addr(braid_transport_t *t, int peer, braid_addr_t *out) {
  braid__tls *s = BRAID__TLS(t);
  if (s->state == ST_CLOSED || s->lower == NULL)
    return BRAID_ECLOSED;
  return peer ? braid_transport_peer_addr(s->lower, out)
              : braid_transport_local_addr(s->lower, out);
}

static int braid__tls_sockopt(braid_transport_t *t, int opt, int on,
                              unsigned value) {
  braid__tls *s = BRAID__TLS(t);
  if (s->state == ST_CLOSED || s->lower == NULL)
    return BRAID_ECLOSED;
  if (opt == BRAID_TRANSPORT_OPT_NODELAY)
    return braid_transport_set_nodelay(s->lower, on);
  return braid_transport_set_keepalive(s->lower, on, value);
}

static const braid_transport_vt braid__tls_vt = {
    .write = braid__tls_write,
    .close = braid__tls_close,
    .set_reading = braid__tls_set_reading,
    .addr = braid__tls_addr,
    .sockopt = braid__tls_sockopt,
    .extra = braid__tls_extra,
};

/* ------------------------------------------------------------------------
 * Creating connections
 * ------------------------------------------------------------------------ */

/* A name that parses as an IPv4 or IPv6 address. */
static int braid__tls_is_ip(const char *name) {
  braid_addr_t a;
  return braid_addr_ip(&a, name, 0) == 0;
}

braid__tls *braid__tls_new(braid_reactor_t *r, braid_tls_context_t *ctx,
                           braid_protocol_t *user, const char *server_name) {
  /* Callers check that a verifying client has a name to verify. */
  braid__tls *s = braid_calloc(1, sizeof *s);
  if (s == NULL)
    return NULL;
  s->ssl = SSL_new(ctx->ctx);
  s->rbio = BIO_new(BIO_s_mem());
  s->wbio = BIO_new(BIO_s_mem());
  if (s->ssl == NULL || s->rbio == NULL || s->wbio == NULL)
    goto fail;
  /* An empty read BIO means "wait for more", not end of input. */
  BIO_set_mem_eof_return(s->rbio, -1);
  SSL_set_bio(s->ssl, s->rbio, s->wbio);
  SSL_set_app_data(s->ssl, s);
  s->server = ctx->role == BRAID_TLS_SERVER;
  if (s->server) {
    SSL_set_accept_state(s->ssl);
  } else {
    SSL_set_connect_state(s->ssl);
    if (server_name != NULL && server_name[0] != '\0') {
      int ip = braid__tls_is_ip(server_name);
      if (!ip && SSL_set_tlsext_host_name(s->ssl, server_name) != 1)
        goto fail;
      if (ctx->verify) {
        int ok = ip ? X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(s->ssl),
                                                    server_name)
                    : SSL_set1_host(s->ssl, server_name);
        if (ok != 1)
          goto fail;
      }
      braid__tls_ctx_resume(ctx, s->ssl, server_name);
    }
  }
  s->ctx = ctx;
  braid__tls_ctx_ref(ctx);
  s->hs_timeout = ctx->hs_timeout;
  s->close_timeout = ctx->close_timeout;
  s->state = ST_NEW;
  braid_transport_init(&s->t, &braid__tls_vt, r, user);
  s->lower_p.ops = &braid__tls_lower_ops;
  return s;
fail:
  ERR_clear_error();
  if (s->ssl != NULL) {
    SSL_free(s->ssl);
  } else {
    BIO_free(s->rbio);
    BIO_free(s->wbio);
  }
  /* SSL_set_bio gave the BIOs to the SSL; without it they are freed above. */
  braid_free(s);
  return NULL;
}

int braid_tls_connect(braid_reactor_t *r, const braid_addr_t *addr,
                      const braid_connect_options *opts,
                      braid_tls_context_t *ctx, const char *server_name,
                      braid_protocol_t *p) {
  if (r == NULL || addr == NULL || ctx == NULL || p == NULL || p->ops == NULL ||
      ctx->role != BRAID_TLS_CLIENT)
    return BRAID_EINVAL;
  if (ctx->verify && (server_name == NULL || server_name[0] == '\0')) {
    braid_reactor_log(r, BRAID_LOG_ERROR, "tls",
                      "a verifying client needs the server's name (or turn "
                      "verification off)");
    return BRAID_EINVAL;
  }
  braid__tls *s = braid__tls_new(r, ctx, p, server_name);
  if (s == NULL)
    return BRAID_ENOMEM;
  p->transport = &s->t;
  int rc = braid_connect(r, addr, opts, &s->lower_p);
  if (rc < 0)
    braid__tls_destroy(s);
  return rc;
}

int braid_tls_start(braid_transport_t *lower, braid_tls_context_t *ctx,
                    const char *server_name, braid_protocol_t *p,
                    braid_transport_t **out) {
  if (lower == NULL || ctx == NULL || p == NULL || p->ops == NULL)
    return BRAID_EINVAL;
  if (braid_transport_closing(lower))
    return BRAID_ECLOSED;
  if (ctx->role == BRAID_TLS_CLIENT && ctx->verify &&
      (server_name == NULL || server_name[0] == '\0')) {
    braid_reactor_log(braid_transport_reactor(lower), BRAID_LOG_ERROR, "tls",
                      "a verifying client needs the server's name (or turn "
                      "verification off)");
    return BRAID_EINVAL;
  }
  braid__tls *s =
      braid__tls_new(braid_transport_reactor(lower), ctx, p, server_name);
  if (s == NULL)
    return BRAID_ENOMEM;
  /* From here on the lower transport talks to the TLS layer. */
  braid_transport_set_protocol(lower, &s->lower_p);
  s->lower = lower;
  p->transport = &s->t;
  if (out != NULL)
    *out = &s->t;
  braid__tls_begin(s);
  return 0;
}

int braid_tls_feed(braid_transport_t *tls, const void *data, size_t len) {
  braid__tls *s = braid__tls_of(tls);
  if (s == NULL || (data == NULL && len > 0) || len > INT_MAX)
    return BRAID_EINVAL;
  if (!braid__tls_live(s) || braid_transport_closing(tls))
    return BRAID_ECLOSED;
  if (len == 0)
    return 0;
  if (BIO_write(s->rbio, data, (int)len) != (int)len)
    return BRAID_ENOMEM;
  braid__tls_schedule(s);
  return 0;
}
