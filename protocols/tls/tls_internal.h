/* TLS module internals, shared by the files of protocols/tls/ (the OpenSSL
 * build; tls_none.c needs none of it):
 *
 *   tls_context.c   contexts: certificates, verification, suites, ALPN,
 *                   SNI, the client session cache and OpenSSL's callbacks
 *   tls_conn.c      one connection: a transport over a lower transport,
 *                   an explicit state machine (the diagram is at its top)
 *   tls_inspect.c   what a protocol may ask a TLS transport (ALPN, peer
 *                   certificate, extras)
 *   tls_factory.c   the server-side wrapping factory, which owns the
 *                   connections whose handshake is in progress
 *   tls_endpoint.c  the "tls:" / "ssl:" endpoint scheme
 *
 * Like any protocol module, these files use braid's public headers only
 * (scripts/check-includes.sh). */
#ifndef BRAID_PROTOCOLS_TLS_INTERNAL_H
#define BRAID_PROTOCOLS_TLS_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <openssl/ssl.h>

#include "braid/tls.h"
#include "braid/transport_impl.h"

#define BRAID__TLS_ERR_MAX 256
#define BRAID__TLS_CACHE_MAX 64
#define BRAID__TLS_ALPN_MAX 256

/* ------------------------------------------------------------------------
 * Contexts (tls_context.c)
 * ------------------------------------------------------------------------ */

/* One cached client session, by server name. */
typedef struct braid__tls_sess {
  struct braid__tls_sess *next;
  SSL_SESSION *sess;
  char name[]; /* NUL-terminated */
} braid__tls_sess;

struct braid_tls_context {
  SSL_CTX *ctx;
  unsigned refs;
  braid_tls_role role;
  bool verify, lenient_eof;
  uint64_t hs_timeout;                     /* ns; 0: none */
  uint64_t close_timeout;                  /* ns; 0: none */
  unsigned char alpn[BRAID__TLS_ALPN_MAX]; /* wire format */
  size_t alpn_len;
  braid_tls_sni_cb sni_cb;
  void *sni_arg;
  braid__tls_sess *cache; /* most recent first */
  size_t cache_n;
};

/* The first error on OpenSSL's thread-local queue as text, clearing it. */
void braid__tls_errtext(char *buf, size_t len);
/* Take a reference (a connection, a factory) / drop one. */
void braid__tls_ctx_ref(braid_tls_context_t *c);
void braid__tls_ctx_unref(braid_tls_context_t *c);
/* A client connection to `name` resumes the session cached for it, if
 * any and still resumable. */
void braid__tls_ctx_resume(braid_tls_context_t *c, SSL *ssl, const char *name);

/* ------------------------------------------------------------------------
 * Connections (tls_conn.c)
 * ------------------------------------------------------------------------ */

/* The connection's states; tls_conn.c's top comment has the diagram and
 * the timeout of each. */
typedef enum braid__tls_state {
  BRAID__TLS_NEW = 0,     /* no lower transport yet */
  BRAID__TLS_HANDSHAKING, /* lower transport up, handshake running */
  BRAID__TLS_OPEN,        /* handshake done, the protocol runs */
  BRAID__TLS_CLOSING,     /* lower transport closing: flushing our output */
  BRAID__TLS_ABORTED,     /* lower transport aborted: its lost follows */
  BRAID__TLS_CLOSED       /* connection_lost delivered; being freed */
} braid__tls_state;

/* Plaintext written before the handshake completed. */
typedef struct braid__tls_chunk {
  struct braid__tls_chunk *next;
  size_t len;
  unsigned char data[];
} braid__tls_chunk;

struct braid__tls_factory;

typedef struct braid__tls {
  braid_transport_t t;      /* what the user's protocol sees */
  braid_protocol_t lower_p; /* what the lower transport sees */
  braid_transport_t *lower;
  braid_tls_context_t *ctx; /* referenced */
  SSL *ssl;
  BIO *rbio, *wbio;              /* network -> OpenSSL, OpenSSL -> network */
  braid__tls_chunk *head, *tail; /* plaintext waiting for the handshake */
  size_t pending;                /* bytes in that queue */
  braid_factory_t *inner;        /* server wrap: builds the user protocol */
  /* Server wrap: the factory that owns this connection while its handshake
   * runs (and may abort it), linked in its list; NULL once the user's
   * protocol exists or the factory let go. */
  struct braid__tls_factory *tf;
  struct braid__tls *hs_prev, *hs_next;
  braid_addr_t peer;
  braid__tls_state state; /* changed by braid__tls_enter only */
  braid_timer_t timer;    /* the state's timeout */
  braid_timer_t kick;     /* processes buffered input on a later turn */
  uint64_t hs_timeout;    /* from the context, ns; 0: none */
  uint64_t close_timeout; /* from the context, ns; 0: none */
  /* CLOSING: the lower queue when the peer last took bytes, and when. */
  size_t close_queued;
  uint64_t close_progress;
  int reason;  /* for the user's connection_lost, once failed */
  char *alpn;  /* negotiated, NUL-terminated */
  char err[BRAID__TLS_ERR_MAX];
  /* Facts the state is decided with, not states of their own:
   *   server            the role;
   *   handshaken        OpenSSL finished the handshake (inspection works);
   *   made              its results went up: the user's protocol exists
   *                     and writes are encrypted, no longer queued;
   *   failed            a failure was recorded (reason, err);
   *   sent_shutdown     our close_notify went out;
   *   got_close_notify  the peer's did, and went up as an EOF;
   *   in_process        braid__tls_process is on the stack;
   *   lower_eof_pending the lower EOF came while the protocol had paused
   *                     reading (inside a delivery): acted on after the
   *                     resume. */
  uint8_t server, handshaken, made, failed, sent_shutdown, got_close_notify,
      in_process, lower_eof_pending;
} braid__tls;

/* The TLS connection behind `t`, or NULL when t is not a TLS transport. */
braid__tls *braid__tls_of(const braid_transport_t *t);
/* A connection over no lower transport yet, in state NEW; NULL without
 * memory. `user` may be NULL (server wrap), `server_name` too. */
braid__tls *braid__tls_new(braid_reactor_t *r, braid_tls_context_t *ctx,
                           braid_protocol_t *user, const char *server_name);
/* Free a connection whose lower transport never took its lower_p. */
void braid__tls_destroy(braid__tls *s);
/* End a connection whose handshake is in progress at once, as a factory
 * going away does: the lower transport is aborted (now, or as soon as it
 * comes up) and nobody is told but the lower transport. */
void braid__tls_drop(braid__tls *s);

/* The vtable's extra slot (tls_inspect.c). */
void *braid__tls_extra(braid_transport_t *t, const char *name);

/* ------------------------------------------------------------------------
 * The wrapping factory (tls_factory.c)
 * ------------------------------------------------------------------------ */

/* A server-side wrapping factory (braid_tls_wrap_factory). */
typedef struct braid__tls_factory {
  braid_factory_t f;
  braid_factory_t *inner;
  braid_tls_context_t *ctx;
  struct braid__tls *hs; /* handshakes in progress */
  size_t nhs;
} braid__tls_factory;

/* The connection leaves its factory's list: its handshake is over one way
 * or the other, or the factory is going away. No-op when not listed. */
void braid__tls_unlink(braid__tls *s);

#endif
