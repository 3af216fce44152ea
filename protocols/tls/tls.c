/* TLS as a transport over a transport (braid/tls.h), on OpenSSL 3 through
 * memory BIOs.
 *
 * Why it lives in protocols/ and not core/: core has no dependencies and
 * this file needs OpenSSL; and like any protocol it only uses the lower
 * transport through the public braid_transport_* API, so it works over
 * streams, the memory transport and whatever transport comes next. Its
 * upper side implements a transport through the public implementation
 * interface (braid/transport_impl.h), so that argument checks, state bits
 * and flow-control marks stay in core, as for every transport; its
 * "tls:" endpoint scheme uses braid/endpoint.h's scheme interface.
 *
 * Data flow: the lower transport's bytes are appended to `rbio`; OpenSSL
 * reads them from there and writes records to `wbio`, which is drained into
 * braid_transport_write(lower) after every step. Plaintext for the
 * protocol is read with SSL_read_ex into a stack buffer the size of one
 * record and delivered without a further copy.
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
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "braid/alloc.h"
#include "braid/endpoint.h"
#include "braid/error.h"
#include "braid/log.h"
#include "braid/tls.h"
#include "braid/transport_impl.h"

#define BRAID__TLS_ERR_MAX 256
#define BRAID__TLS_CACHE_MAX 64
#define BRAID__TLS_ALPN_MAX 256

/* The default suites (braid/tls.h says why): for TLS 1.2, ECDHE key
 * exchange with AES-GCM or ChaCha20-Poly1305, ECDSA and RSA certificates,
 * in the order of Mozilla's "intermediate" profile without its DHE
 * suites; for TLS 1.3, its three mandatory-or-common AEAD suites (RFC
 * 8446 9.1), AES-128-GCM first. */
#define BRAID__TLS_CIPHERS                                                     \
  "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"                 \
  "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"                 \
  "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"
#define BRAID__TLS_CIPHERSUITES                                                \
  "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:"                             \
  "TLS_CHACHA20_POLY1305_SHA256"

/* ------------------------------------------------------------------------
 * Contexts
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
  unsigned char alpn[BRAID__TLS_ALPN_MAX]; /* wire format */
  size_t alpn_len;
  braid_tls_sni_cb sni_cb;
  void *sni_arg;
  braid__tls_sess *cache; /* most recent first */
  size_t cache_n;
};

/* The first error on OpenSSL's thread-local queue as text, clearing it. */
static void braid__tls_errtext(char *buf, size_t len) {
  unsigned long e = ERR_get_error();
  if (e == 0)
    snprintf(buf, len, "unknown OpenSSL error");
  else
    ERR_error_string_n(e, buf, len);
  ERR_clear_error();
}

static void braid__tls_ctx_log(const char *what) {
  char e[BRAID__TLS_ERR_MAX];
  braid__tls_errtext(e, sizeof e);
  char line[BRAID__TLS_ERR_MAX + 128];
  /* A long file name may cut the line short: it is only a log line. */
  if (snprintf(line, sizeof line, "%s: %s", what, e) < 0)
    return;
  braid_log_default(NULL, BRAID_LOG_ERROR, "tls", line);
}

bool braid_tls_available(void) {
  return true;
}

static void braid__tls_cache_free(braid_tls_context_t *c) {
  braid__tls_sess *s = c->cache;
  while (s != NULL) {
    braid__tls_sess *next = s->next;
    SSL_SESSION_free(s->sess);
    braid_free(s);
    s = next;
  }
  c->cache = NULL;
  c->cache_n = 0;
}

static void braid__tls_ctx_unref(braid_tls_context_t *c) {
  if (c == NULL || --c->refs > 0)
    return;
  braid__tls_cache_free(c);
  SSL_CTX_free(c->ctx);
  braid_free(c);
}

void braid_tls_context_free(braid_tls_context_t *ctx) {
  braid__tls_ctx_unref(ctx);
}

static int braid__tls_new_session_cb(SSL *ssl, SSL_SESSION *sess);
static int braid__tls_alpn_select_cb(SSL *ssl, const unsigned char **out,
                                     unsigned char *outlen,
                                     const unsigned char *in,
                                     unsigned int inlen, void *arg);
static int braid__tls_sni_select_cb(SSL *ssl, int *alert, void *arg);

int braid_tls_context_create(braid_tls_context_t **out, braid_tls_role role) {
  if (out == NULL || (role != BRAID_TLS_CLIENT && role != BRAID_TLS_SERVER))
    return BRAID_EINVAL;
  *out = NULL;
  braid_tls_context_t *c = braid_calloc(1, sizeof *c);
  if (c == NULL)
    return BRAID_ENOMEM;
  c->ctx = SSL_CTX_new(role == BRAID_TLS_SERVER ? TLS_server_method()
                                                : TLS_client_method());
  if (c->ctx == NULL) {
    braid__tls_ctx_log("SSL_CTX_new failed");
    braid_free(c);
    return BRAID_ENOMEM;
  }
  c->refs = 1;
  c->role = role;
  /* Our context hangs off the SSL_CTX's app data (ex_data index 0, which
   * OpenSSL reserves for the application), so callbacks that only get an
   * SSL find it, also after SNI switched contexts; no process-wide index
   * has to be allocated (and raced for). */
  SSL_CTX_set_app_data(c->ctx, c);
  SSL_CTX_set_min_proto_version(c->ctx, TLS1_2_VERSION);
  /* Renegotiation is a source of bugs and DoS with little use left; TLS
   * 1.3 removed it. Compression invites CRIME. */
  SSL_CTX_set_options(c->ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION);
  /* Idle connections give their record buffers back. */
  SSL_CTX_set_mode(c->ctx, SSL_MODE_RELEASE_BUFFERS);
  c->hs_timeout = BRAID_TLS_HANDSHAKE_TIMEOUT;
  /* Forward-secret AEAD suites only (see braid/tls.h for the why). Both
   * calls fail only when no listed suite is available at all. */
  if (SSL_CTX_set_cipher_list(c->ctx, BRAID__TLS_CIPHERS) != 1 ||
      SSL_CTX_set_ciphersuites(c->ctx, BRAID__TLS_CIPHERSUITES) != 1) {
    braid__tls_ctx_log("cannot set the default cipher suites");
    SSL_CTX_free(c->ctx);
    braid_free(c);
    return BRAID_ENOMEM;
  }
  if (role == BRAID_TLS_CLIENT) {
    c->verify = true;
    SSL_CTX_set_verify(c->ctx, SSL_VERIFY_PEER, NULL);
    /* OpenSSL's internal cache only serves servers; clients keep sessions
     * themselves, so the new-session callback stores them by name. */
    SSL_CTX_set_session_cache_mode(
        c->ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
    SSL_CTX_sess_set_new_cb(c->ctx, braid__tls_new_session_cb);
    if (SSL_CTX_set_default_verify_paths(c->ctx) != 1)
      ERR_clear_error(); /* no system store: load_ca can still add one */
  } else {
    /* Sessions (and client-certificate verification) are bound to this
     * id; tickets are on by default. */
    SSL_CTX_set_session_id_context(c->ctx, (const unsigned char *)"braid", 5);
    SSL_CTX_set_verify(c->ctx, SSL_VERIFY_NONE, NULL);
    /* The server's order decides, so a client that lists a weaker suite
     * first still gets the strongest one both have (all are AEAD, but
     * 128-bit AES-GCM is first for speed where AES-NI exists); ChaCha20 is
     * preferred for clients that put it first, which are the ones without
     * AES hardware. */
    SSL_CTX_set_options(c->ctx, SSL_OP_CIPHER_SERVER_PREFERENCE |
                                    SSL_OP_PRIORITIZE_CHACHA);
    SSL_CTX_set_alpn_select_cb(c->ctx, braid__tls_alpn_select_cb, c);
    SSL_CTX_set_tlsext_servername_callback(c->ctx, braid__tls_sni_select_cb);
    SSL_CTX_set_tlsext_servername_arg(c->ctx, c);
    /* 0-RTT stays off: max_early_data is 0 unless set. */
    SSL_CTX_set_max_early_data(c->ctx, 0);
  }
  *out = c;
  return 0;
}

int braid_tls_context_use_certificate_file(braid_tls_context_t *ctx,
                                           const char *chain_file,
                                           const char *key_file) {
  if (ctx == NULL || chain_file == NULL || key_file == NULL)
    return BRAID_EINVAL;
  if (SSL_CTX_use_certificate_chain_file(ctx->ctx, chain_file) != 1) {
    char what[300];
    snprintf(what, sizeof what, "cannot load certificate chain '%s'",
             chain_file);
    braid__tls_ctx_log(what);
    return BRAID_EINVAL;
  }
  if (SSL_CTX_use_PrivateKey_file(ctx->ctx, key_file, SSL_FILETYPE_PEM) != 1 ||
      SSL_CTX_check_private_key(ctx->ctx) != 1) {
    char what[300];
    snprintf(what, sizeof what, "cannot use private key '%s'", key_file);
    braid__tls_ctx_log(what);
    return BRAID_EINVAL;
  }
  return 0;
}

int braid_tls_context_use_certificate_mem(braid_tls_context_t *ctx,
                                          const void *chain_pem,
                                          size_t chain_len, const void *key_pem,
                                          size_t key_len) {
  if (ctx == NULL || chain_pem == NULL || key_pem == NULL ||
      chain_len > INT_MAX || key_len > INT_MAX)
    return BRAID_EINVAL;
  int rc = BRAID_EINVAL;
  BIO *b = BIO_new_mem_buf(chain_pem, (int)chain_len);
  BIO *k = BIO_new_mem_buf(key_pem, (int)key_len);
  X509 *leaf = NULL;
  EVP_PKEY *key = NULL;
  if (b == NULL || k == NULL) {
    rc = BRAID_ENOMEM;
    goto out;
  }
  leaf = PEM_read_bio_X509(b, NULL, NULL, NULL);
  if (leaf == NULL || SSL_CTX_use_certificate(ctx->ctx, leaf) != 1) {
    braid__tls_ctx_log("cannot load certificate from memory");
    goto out;
  }
  SSL_CTX_clear_chain_certs(ctx->ctx);
  for (;;) {
    X509 *ca = PEM_read_bio_X509(b, NULL, NULL, NULL);
    if (ca == NULL)
      break;
    if (SSL_CTX_add0_chain_cert(ctx->ctx, ca) != 1) {
      X509_free(ca);
      braid__tls_ctx_log("cannot add chain certificate");
      goto out;
    }
  }
  ERR_clear_error(); /* the loop ends on "no start line" */
  key = PEM_read_bio_PrivateKey(k, NULL, NULL, NULL);
  if (key == NULL || SSL_CTX_use_PrivateKey(ctx->ctx, key) != 1 ||
      SSL_CTX_check_private_key(ctx->ctx) != 1) {
    braid__tls_ctx_log("cannot use private key from memory");
    goto out;
  }
  rc = 0;
out:
  X509_free(leaf);
  EVP_PKEY_free(key);
  BIO_free(b);
  BIO_free(k);
  return rc;
}

int braid_tls_context_load_ca(braid_tls_context_t *ctx, const char *file,
                              const char *dir) {
  if (ctx == NULL)
    return BRAID_EINVAL;
  if (file == NULL && dir == NULL) {
    if (SSL_CTX_set_default_verify_paths(ctx->ctx) != 1) {
      braid__tls_ctx_log("cannot load the system CA store");
      return BRAID_EINVAL;
    }
    return 0;
  }
  if (SSL_CTX_load_verify_locations(ctx->ctx, file, dir) != 1) {
    char what[600];
    snprintf(what, sizeof what, "cannot load CA certificates from '%s'",
             file != NULL ? file : dir);
    braid__tls_ctx_log(what);
    return BRAID_EINVAL;
  }
  return 0;
}

int braid_tls_context_load_ca_mem(braid_tls_context_t *ctx, const void *pem,
                                  size_t len) {
  if (ctx == NULL || pem == NULL || len > INT_MAX)
    return BRAID_EINVAL;
  BIO *b = BIO_new_mem_buf(pem, (int)len);
  if (b == NULL)
    return BRAID_ENOMEM;
  X509_STORE *store = SSL_CTX_get_cert_store(ctx->ctx);
  int n = 0, rc = 0;
  for (;;) {
    X509 *x = PEM_read_bio_X509(b, NULL, NULL, NULL);
    if (x == NULL)
      break;
    if (X509_STORE_add_cert(store, x) != 1)
      rc = BRAID_EINVAL;
    X509_free(x);
    n++;
  }
  ERR_clear_error();
  BIO_free(b);
  if (n == 0 || rc < 0) {
    braid_log_default(NULL, BRAID_LOG_ERROR, "tls",
                      "no usable CA certificate in the PEM given");
    return BRAID_EINVAL;
  }
  return 0;
}

int braid_tls_context_set_verify(braid_tls_context_t *ctx, bool on) {
  if (ctx == NULL)
    return BRAID_EINVAL;
  ctx->verify = on;
  int mode = SSL_VERIFY_NONE;
  if (on)
    mode = ctx->role == BRAID_TLS_SERVER
               ? SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT
               : SSL_VERIFY_PEER;
  SSL_CTX_set_verify(ctx->ctx, mode, NULL);
  return 0;
}

int braid_tls_context_set_alpn(braid_tls_context_t *ctx,
                               const char *const *protos, size_t n) {
  if (ctx == NULL || (protos == NULL && n > 0))
    return BRAID_EINVAL;
  size_t len = 0;
  unsigned char wire[BRAID__TLS_ALPN_MAX];
  for (size_t i = 0; i < n; i++) {
    size_t l = protos[i] != NULL ? strlen(protos[i]) : 0;
    if (l == 0 || l > 255 || len + 1 + l > sizeof wire)
      return BRAID_EINVAL;
    wire[len++] = (unsigned char)l;
    memcpy(wire + len, protos[i], l);
    len += l;
  }
  memcpy(ctx->alpn, wire, len);
  ctx->alpn_len = len;
  /* Clients offer the list in the ClientHello; servers select in the
   * callback. SSL_CTX_set_alpn_protos returns 0 on success. */
  if (ctx->role == BRAID_TLS_CLIENT &&
      SSL_CTX_set_alpn_protos(ctx->ctx, len ? ctx->alpn : NULL,
                              (unsigned)len) != 0)
    return BRAID_ENOMEM;
  return 0;
}

int braid_tls_context_set_min_version(braid_tls_context_t *ctx, int version) {
  if (ctx == NULL || (version != BRAID_TLS_1_2 && version != BRAID_TLS_1_3))
    return BRAID_EINVAL;
  return SSL_CTX_set_min_proto_version(ctx->ctx, version) == 1 ? 0
                                                               : BRAID_EINVAL;
}

int braid_tls_context_set_handshake_timeout(braid_tls_context_t *ctx,
                                            uint64_t ns) {
  if (ctx == NULL)
    return BRAID_EINVAL;
  ctx->hs_timeout = ns;
  return 0;
}

uint64_t braid_tls_context_handshake_timeout(const braid_tls_context_t *ctx) {
  return ctx != NULL ? ctx->hs_timeout : 0;
}

/* The three list setters: OpenSSL checks the names and fails when nothing
 * usable is left, which is logged with OpenSSL's reason. */
static int braid__tls_set_list(braid_tls_context_t *ctx, const char *list,
                               int (*set)(SSL_CTX *, const char *),
                               const char *what) {
  if (ctx == NULL || list == NULL || list[0] == '\0')
    return BRAID_EINVAL;
  if (set(ctx->ctx, list) != 1) {
    char line[300];
    snprintf(line, sizeof line, "no usable %s in '%.200s'", what, list);
    braid__tls_ctx_log(line);
    return BRAID_EINVAL;
  }
  return 0;
}

/* SSL_CTX_set1_groups_list is a macro over SSL_CTX_ctrl. */
static int braid__tls_set_groups(SSL_CTX *c, const char *list) {
  return SSL_CTX_set1_groups_list(c, list) == 1 ? 1 : 0;
}

int braid_tls_context_set_ciphers(braid_tls_context_t *ctx, const char *list) {
  return braid__tls_set_list(ctx, list, SSL_CTX_set_cipher_list,
                             "TLS 1.2 cipher suite");
}

int braid_tls_context_set_ciphersuites(braid_tls_context_t *ctx,
                                       const char *list) {
  return braid__tls_set_list(ctx, list, SSL_CTX_set_ciphersuites,
                             "TLS 1.3 cipher suite");
}

int braid_tls_context_set_groups(braid_tls_context_t *ctx, const char *list) {
  return braid__tls_set_list(ctx, list, braid__tls_set_groups,
                             "key exchange group");
}

int braid_tls_context_set_lenient_eof(braid_tls_context_t *ctx, bool on) {
  if (ctx == NULL)
    return BRAID_EINVAL;
  ctx->lenient_eof = on;
  return 0;
}

int braid_tls_context_set_sni_cb(braid_tls_context_t *ctx, braid_tls_sni_cb cb,
                                 void *arg) {
  if (ctx == NULL || ctx->role != BRAID_TLS_SERVER)
    return BRAID_EINVAL;
  ctx->sni_cb = cb;
  ctx->sni_arg = arg;
  return 0;
}

int braid_tls_context_set_early_data(braid_tls_context_t *ctx, bool on) {
  if (ctx == NULL)
    return BRAID_EINVAL;
  return on ? BRAID_ENOTSUP : 0;
}

void *braid_tls_context_native(braid_tls_context_t *ctx) {
  return ctx != NULL ? ctx->ctx : NULL;
}

/* ------------------------------------------------------------------------
 * The connection
 * ------------------------------------------------------------------------ */

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
  braid_timer_t kick;     /* processes buffered input on a later turn */
  braid_timer_t hs_timer; /* the handshake's deadline */
  uint64_t hs_timeout;    /* from the context, ns; 0: none */
  int reason;             /* for the user's connection_lost */
  char *alpn;             /* negotiated, NUL-terminated */
  char err[BRAID__TLS_ERR_MAX];
  uint8_t server, started, handshaken, made, lost, failed, sent_shutdown,
      got_close_notify, eof_delivered, in_process;
  /* The lower transport's EOF arrived while the protocol had paused
   * reading (inside a delivery): acted on after the resume. */
  uint8_t lower_eof_pending;
} braid__tls;

#define BRAID__TLS(tp) BRAID_CONTAINER_OF(tp, braid__tls, t)

/* A server-side wrapping factory (braid_tls_wrap_factory). It owns the
 * connections whose handshake is in progress, which have no user protocol
 * yet and so no owner the user could reach: freeing the factory aborts
 * them, so that `inner` (and whatever owns it) may go away right after. */
typedef struct braid__tls_factory {
  braid_factory_t f;
  braid_factory_t *inner;
  braid_tls_context_t *ctx;
  braid__tls *hs; /* handshakes in progress */
  size_t nhs;
} braid__tls_factory;

/* The connection leaves its factory's list: its handshake is over one way
 * or the other, or the factory is going away. */
static void braid__tls_unlink(braid__tls *s) {
  braid__tls_factory *tf = s->tf;
  if (tf == NULL)
    return;
  if (s->hs_prev != NULL)
    s->hs_prev->hs_next = s->hs_next;
  else
    tf->hs = s->hs_next;
  if (s->hs_next != NULL)
    s->hs_next->hs_prev = s->hs_prev;
  s->hs_prev = s->hs_next = NULL;
  s->tf = NULL;
  tf->nhs--;
}

static const braid_transport_vt braid__tls_vt;
static const braid_protocol_ops braid__tls_lower_ops;

static braid__tls *braid__tls_of(const braid_transport_t *t) {
  if (braid_transport_impl_vt(t) != &braid__tls_vt)
    return NULL;
  return BRAID_CONTAINER_OF((braid_transport_t *)t, braid__tls, t);
}

static void braid__tls_process(braid__tls *s);

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

static void braid__tls_destroy(braid__tls *s) {
  braid__tls_unlink(s);
  if (braid_timer_active(&s->kick))
    braid_timer_cancel(&s->kick);
  if (braid_timer_active(&s->hs_timer))
    braid_timer_cancel(&s->hs_timer);
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

/* The connection failed: record why, send whatever alert OpenSSL queued,
 * and drop the lower transport: closed (the alert is flushed first), or
 * aborted when `abort` is set. */
static void braid__tls_failv(braid__tls *s, int reason, int abort,
                             const char *fmt, va_list ap)
#if defined(__GNUC__) || defined(__clang__)
    __attribute__((format(printf, 4, 0)))
#endif
    ;
static void braid__tls_fail(braid__tls *s, int reason, const char *fmt, ...)
#if defined(__GNUC__) || defined(__clang__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;

static void braid__tls_fail(braid__tls *s, int reason, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  braid__tls_failv(s, reason, 0, fmt, ap);
  va_end(ap);
}

static void braid__tls_failv(braid__tls *s, int reason, int abort,
                             const char *fmt, va_list ap) {
  if (s->failed || s->lost)
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
  if (braid_timer_active(&s->hs_timer))
    braid_timer_cancel(&s->hs_timer);
  braid__tls_free_pending(s);
  if (s->lower != NULL) {
    /* The alert (if any) is best effort: close flushes it first. */
    if (!abort)
      braid__tls_flush(s);
    if (abort || braid_transport_close(s->lower) < 0)
      braid_transport_abort(s->lower);
  }
}

/* Turn an SSL_get_error result into a failure with a reason naming the
 * problem (the certificate check's own text when that is what failed). */
static void braid__tls_ssl_fail(braid__tls *s, int ret) {
  int e = SSL_get_error(s->ssl, ret);
  long v = SSL_get_verify_result(s->ssl);
  if (v != X509_V_OK) {
    ERR_clear_error();
    braid__tls_fail(s, BRAID_EPROTO,
                    "certificate verify failed: %s (X509 error %ld)",
                    X509_verify_cert_error_string(v), v);
    return;
  }
  char e2[BRAID__TLS_ERR_MAX - 32];
  if (e == SSL_ERROR_SSL) {
    braid__tls_errtext(e2, sizeof e2);
    braid__tls_fail(s, BRAID_EPROTO, "TLS error: %s", e2);
  } else {
    ERR_clear_error();
    braid__tls_fail(s, BRAID_EPROTO, "TLS error (SSL_get_error %d)", e);
  }
}

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
  if (s->lost || braid_timer_active(&s->kick))
    return;
  if (braid_timer_start(braid_transport_reactor(&s->t), &s->kick, 0,
                        braid__tls_kick_cb, s) < 0)
    braid__tls_fail(s, BRAID_ENOMEM, "cannot schedule TLS processing");
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
      braid__tls_fail(s, BRAID_ENOMEM, "cannot queue encrypted data");
      return BRAID_ENOMEM;
    }
  }
  return 0;
}

/* Send the close_notify once, then act on the lower transport. */
static void braid__tls_send_shutdown(braid__tls *s) {
  if (s->sent_shutdown || !s->handshaken)
    return;
  s->sent_shutdown = 1;
  int ret = SSL_shutdown(s->ssl);
  if (ret < 0)
    ERR_clear_error(); /* a peer that already went away */
  braid__tls_flush(s);
}

/* The handshake completed: the user's protocol exists from now on (server
 * wrap) and learns about the connection. */
static void braid__tls_handshake_done(braid__tls *s) {
  s->handshaken = 1;
  if (braid_timer_active(&s->hs_timer))
    braid_timer_cancel(&s->hs_timer);
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
      braid_transport_impl_fail(&s->t);
      s->failed = 1;
      braid_transport_abort(s->lower); /* refused, as a plain listener does */
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
  if (s->lost || (braid_transport_impl_state(&s->t) & BRAID_TRANSPORT_DEAD))
    return;
  /* A producer paused by plaintext queued during the handshake is resumed
   * here if that plaintext, now ciphertext, sits below the low mark (the
   * lower transport only reports drains from above it). */
  braid__tls_sync_queued(s);
  braid_transport_impl_drained(&s->t);
  /* A close asked for before the handshake can go ahead now. */
  if (before & BRAID_TRANSPORT_CLOSING) {
    braid__tls_send_shutdown(s);
    braid_transport_close(s->lower);
  } else if (before & BRAID_TRANSPORT_WRITE_SHUT) {
    braid__tls_send_shutdown(s);
    braid_transport_shutdown_write(s->lower);
  }
}

static int braid__tls_may_read(const braid__tls *s) {
  return !s->lost && !s->failed && braid_transport_impl_reading(&s->t);
}

/* The peer's close_notify: an orderly end of its output. A protocol that
 * is not half-close aware is closed by core (braid__tls_close answers with
 * our close_notify, as a stream closes on EOF); one that had shut down
 * writing too is closed the same way, both directions being done. */
static void braid__tls_close_notify(braid__tls *s) {
  s->got_close_notify = 1;
  s->eof_delivered = 1;
  braid_transport_deliver_eof(&s->t);
}

/* Run OpenSSL over what is buffered: the handshake, then plaintext for the
 * protocol while it reads. */
static void braid__tls_process(braid__tls *s) {
  if (s->lost || s->failed || s->in_process)
    return;
  s->in_process = 1;
  if (!s->handshaken) {
    ERR_clear_error();
    int ret = SSL_do_handshake(s->ssl);
    if (ret == 1) {
      if (braid__tls_flush(s) < 0) {
        braid__tls_fail(s, BRAID_ENOMEM, "cannot queue handshake output");
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
      braid__tls_fail(s, BRAID_ENOMEM, "cannot queue handshake output");
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

/* ------------------------------------------------------------------------
 * The lower transport's protocol
 * ------------------------------------------------------------------------ */

#define BRAID__TLS_LOWER(p) BRAID_CONTAINER_OF(p, braid__tls, lower_p)

static int braid__tls_begin(braid__tls *s);

static void braid__tls_lower_made(braid_protocol_t *p, braid_transport_t *t) {
  braid__tls *s = BRAID__TLS_LOWER(p);
  s->lower = t;
  /* Built by a factory, which has no reactor: the lower transport's. */
  if (braid_transport_reactor(&s->t) == NULL)
    braid_transport_impl_set_reactor(&s->t, braid_transport_reactor(t));
  unsigned st = braid_transport_impl_state(&s->t);
  if (st & BRAID_TRANSPORT_DEAD) { /* aborted while connecting */
    braid_transport_abort(t);
    return;
  }
  if (st & BRAID_TRANSPORT_READ_PAUSED)
    braid_transport_pause_reading(t);
  braid__tls_sync_queued(s);
  int rc = braid__tls_begin(s);
  if (rc < 0)
    braid__tls_fail(s, rc, "cannot start TLS: %s", braid_strerror(rc));
}

static void braid__tls_lower_data(braid_protocol_t *p, const void *data,
                                  size_t len) {
  braid__tls *s = BRAID__TLS_LOWER(p);
  if (s->lost || s->failed)
    return;
  /* A memory BIO grows as needed; it only fails without memory. */
  if (len > INT_MAX || BIO_write(s->rbio, data, (int)len) != (int)len) {
    braid__tls_fail(s, BRAID_ENOMEM, "cannot buffer received data");
    return;
  }
  braid__tls_process(s);
}

static void braid__tls_lower_eof(braid_protocol_t *p) {
  braid__tls *s = BRAID__TLS_LOWER(p);
  if (s->lost || s->failed)
    return;
  /* Records still buffered come before the end. (With reading paused they
   * stay buffered: the lower transport is paused too then, so its EOF
   * comes after the resume.) */
  braid__tls_process(s);
  if (s->lost || s->failed)
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
  if (s->lost || s->failed)
    return;
  if (s->got_close_notify) {
    if (braid_transport_impl_state(&s->t) & BRAID_TRANSPORT_WRITE_SHUT)
      braid_transport_close(s->lower);
    return;
  }
  if (!s->handshaken) {
    braid__tls_fail(s, BRAID_EPROTO,
                    "the peer closed the connection during the handshake");
    return;
  }
  if (!s->ctx->lenient_eof) {
    braid__tls_fail(s, BRAID_EPROTO,
                    "the peer closed the connection without close_notify "
                    "(truncated)");
    return;
  }
  /* Lenient: an ordinary EOF (closing as after a close_notify). */
  s->eof_delivered = 1;
  braid_transport_deliver_eof(&s->t);
}

static void braid__tls_lower_lost(braid_protocol_t *p, int reason) {
  braid__tls *s = BRAID__TLS_LOWER(p);
  s->lost = 1;
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
  if (s->lost)
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
  if (s->lost || s->failed) {
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
      braid__tls_fail(s, BRAID_ENOMEM, "cannot queue encrypted data");
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
  if (s->lost || s->lower == NULL)
    return 0;
  switch (how) {
  case BRAID_TRANSPORT_ABORT:
    s->reason = BRAID_ECONNABORTED;
    braid__tls_free_pending(s);
    braid_transport_abort(s->lower);
    return 0;
  case BRAID_TRANSPORT_CLOSE:
    if (s->failed)
      return 0;
    if (!s->made) {
      /* Before the handshake: a client or STARTTLS protocol waits for it
       * to finish so that its queued writes go out (see handshake_done). */
      return 0;
    }
    braid__tls_send_shutdown(s);
    braid_transport_close(s->lower);
    return 0;
  case BRAID_TRANSPORT_SHUTDOWN_WRITE:
    if (!s->made || s->failed)
      return 0;
    braid__tls_send_shutdown(s);
    if (s->got_close_notify)
      braid_transport_close(s->lower);
    else
      braid_transport_shutdown_write(s->lower);
    return 0;
  }
  return BRAID_EINVAL;
}

static int braid__tls_set_reading(braid_transport_t *t, int on) {
  braid__tls *s = BRAID__TLS(t);
  if (s->lost || s->lower == NULL)
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
  if (s->lost || s->lower == NULL)
    return BRAID_ECLOSED;
  return peer ? braid_transport_peer_addr(s->lower, out)
              : braid_transport_local_addr(s->lower, out);
}

static int braid__tls_sockopt(braid_transport_t *t, int opt, int on,
                              unsigned value) {
  braid__tls *s = BRAID__TLS(t);
  if (s->lost || s->lower == NULL)
    return BRAID_ECLOSED;
  if (opt == BRAID_TRANSPORT_OPT_NODELAY)
    return braid_transport_set_nodelay(s->lower, on);
  return braid_transport_set_keepalive(s->lower, on, value);
}

static void *braid__tls_extra(braid_transport_t *t, const char *name);

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

static braid__tls *braid__tls_new(braid_reactor_t *r, braid_tls_context_t *ctx,
                                  braid_protocol_t *user,
                                  const char *server_name) {
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
      /* Resume a session we have for this name. */
      for (braid__tls_sess *c = ctx->cache; c != NULL; c = c->next)
        if (strcmp(c->name, server_name) == 0) {
          if (SSL_SESSION_is_resumable(c->sess))
            SSL_set_session(s->ssl, c->sess);
          break;
        }
    }
  }
  s->ctx = ctx;
  ctx->refs++;
  s->hs_timeout = ctx->hs_timeout;
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

/* The handshake did not complete in time: a peer that sends nothing, part
 * of a hello or stops in the middle would otherwise hold the connection
 * (and its buffers) for ever, since no protocol and so no protocol timer
 * exists before the handshake. Aborted, not closed: a peer that stalls may
 * not read either, and there is nothing worth flushing. */
static void braid__tls_timed_out(braid__tls *s, const char *fmt, ...)
#if defined(__GNUC__) || defined(__clang__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;
static void braid__tls_timed_out(braid__tls *s, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  braid__tls_failv(s, BRAID_ETIMEDOUT, 1, fmt, ap);
  va_end(ap);
}

static void braid__tls_hs_timeout_cb(braid_timer_t *t, void *arg) {
  (void)t;
  braid__tls *s = arg;
  if (s->lost || s->failed || s->handshaken)
    return;
  braid__tls_timed_out(s, "handshake timed out after %llu ms",
                       (unsigned long long)(s->hs_timeout / 1000000u));
}

/* The lower transport is up: the handshake's clock starts, and a client
 * sends its ClientHello. */
static int braid__tls_begin(braid__tls *s) {
  s->started = 1;
  if (s->hs_timeout > 0) {
    int rc = braid_timer_start(braid_transport_reactor(&s->t), &s->hs_timer,
                               s->hs_timeout, braid__tls_hs_timeout_cb, s);
    if (rc < 0)
      return rc;
  }
  if (!s->server)
    braid__tls_process(s);
  return 0;
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

static braid_protocol_t *braid__tls_build(braid_factory_t *f,
                                          const braid_addr_t *peer) {
  braid__tls_factory *tf = BRAID_CONTAINER_OF(f, braid__tls_factory, f);
  /* The factory has no reactor; the listener's comes with the transport,
   * so the TLS transport gets it in lower_made. */
  braid__tls *s = braid__tls_new(NULL, tf->ctx, NULL, NULL);
  if (s == NULL)
    return NULL;
  s->inner = tf->inner;
  s->peer = *peer;
  s->tf = tf;
  s->hs_next = tf->hs;
  if (tf->hs != NULL)
    tf->hs->hs_prev = s;
  tf->hs = s;
  tf->nhs++;
  return &s->lower_p;
}

int braid_tls_wrap_factory(braid_factory_t *inner, braid_tls_context_t *ctx,
                           braid_factory_t **out) {
  if (inner == NULL || ctx == NULL || out == NULL ||
      ctx->role != BRAID_TLS_SERVER)
    return BRAID_EINVAL;
  braid__tls_factory *tf = braid_calloc(1, sizeof *tf);
  if (tf == NULL)
    return BRAID_ENOMEM;
  tf->f.build = braid__tls_build;
  tf->inner = inner;
  tf->ctx = ctx;
  ctx->refs++;
  *out = &tf->f;
  return 0;
}

/* Abort every handshake still in progress: they never reach `inner`. The
 * lower transports report connection_lost later (never inside abort), and
 * the TLS layer frees itself then; there is no user protocol to tell. */
static void braid__tls_factory_abort(braid__tls_factory *tf) {
  while (tf->hs != NULL) {
    braid__tls *s = tf->hs;
    braid__tls_unlink(s);
    s->inner = NULL;
    if (s->failed || s->lost)
      continue;
    s->failed = 1;
    s->reason = BRAID_ECONNABORTED;
    braid_transport_impl_fail(&s->t);
    if (braid_timer_active(&s->hs_timer))
      braid_timer_cancel(&s->hs_timer);
    /* Without a lower transport yet, lower_made sees DEAD and aborts. */
    if (s->lower != NULL)
      braid_transport_abort(s->lower);
  }
}

size_t braid_tls_factory_handshakes(const braid_factory_t *f) {
  if (f == NULL || f->build != braid__tls_build)
    return 0;
  return BRAID_CONTAINER_OF((braid_factory_t *)f, braid__tls_factory, f)->nhs;
}

void braid_tls_factory_free(braid_factory_t *f) {
  if (f == NULL || f->build != braid__tls_build)
    return;
  braid__tls_factory *tf = BRAID_CONTAINER_OF(f, braid__tls_factory, f);
  braid__tls_factory_abort(tf);
  braid__tls_ctx_unref(tf->ctx);
  braid_free(tf);
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
  braid__tls_sync_queued(s);
  int rc = braid__tls_begin(s);
  if (rc < 0)
    braid__tls_fail(s, rc, "cannot start TLS: %s", braid_strerror(rc));
  return 0;
}

int braid_tls_feed(braid_transport_t *tls, const void *data, size_t len) {
  braid__tls *s = braid__tls_of(tls);
  if (s == NULL || (data == NULL && len > 0) || len > INT_MAX)
    return BRAID_EINVAL;
  if (s->lost || s->failed || braid_transport_closing(tls))
    return BRAID_ECLOSED;
  if (len == 0)
    return 0;
  if (BIO_write(s->rbio, data, (int)len) != (int)len)
    return BRAID_ENOMEM;
  braid__tls_schedule(s);
  return 0;
}

/* ------------------------------------------------------------------------
 * OpenSSL callbacks
 * ------------------------------------------------------------------------ */

/* Client: a new session (TLS 1.3 tickets come after the handshake). Keep
 * it under the server name; returning 1 keeps the reference. */
static int braid__tls_new_session_cb(SSL *ssl, SSL_SESSION *sess) {
  braid_tls_context_t *c = SSL_CTX_get_app_data(SSL_get_SSL_CTX(ssl));
  const char *name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
  if (name == NULL) {
    /* An IP address (no SNI): the verified name is the key then. */
    name = X509_VERIFY_PARAM_get0_host(SSL_get0_param(ssl), 0);
  }
  if (c == NULL || name == NULL)
    return 0;
  braid__tls_sess **pp = &c->cache;
  for (; *pp != NULL; pp = &(*pp)->next)
    if (strcmp((*pp)->name, name) == 0) {
      braid__tls_sess *old = *pp;
      SSL_SESSION_free(old->sess);
      old->sess = sess;
      return 1;
    }
  size_t nlen = strlen(name);
  braid__tls_sess *e = braid_malloc(sizeof *e + nlen + 1);
  if (e == NULL)
    return 0;
  memcpy(e->name, name, nlen + 1);
  e->sess = sess;
  e->next = c->cache;
  c->cache = e;
  if (++c->cache_n > BRAID__TLS_CACHE_MAX) {
    /* Drop the oldest (the last). */
    braid__tls_sess **q = &c->cache;
    while ((*q)->next != NULL)
      q = &(*q)->next;
    SSL_SESSION_free((*q)->sess);
    braid_free(*q);
    *q = NULL;
    c->cache_n--;
  }
  return 1;
}

static int braid__tls_alpn_select_cb(SSL *ssl, const unsigned char **out,
                                     unsigned char *outlen,
                                     const unsigned char *in,
                                     unsigned int inlen, void *arg) {
  (void)arg;
  /* The context in force (SNI may have switched it). */
  braid_tls_context_t *c = SSL_CTX_get_app_data(SSL_get_SSL_CTX(ssl));
  if (c == NULL || c->alpn_len == 0)
    return SSL_TLSEXT_ERR_NOACK;
  unsigned char *sel = NULL;
  unsigned char sel_len = 0;
  if (SSL_select_next_proto(&sel, &sel_len, c->alpn, (unsigned)c->alpn_len, in,
                            inlen) != OPENSSL_NPN_NEGOTIATED)
    return SSL_TLSEXT_ERR_NOACK; /* no overlap: go on without ALPN */
  *out = sel;
  *outlen = sel_len;
  return SSL_TLSEXT_ERR_OK;
}

static int braid__tls_sni_select_cb(SSL *ssl, int *alert, void *arg) {
  (void)alert;
  braid_tls_context_t *c = arg;
  if (c->sni_cb == NULL)
    return SSL_TLSEXT_ERR_OK;
  const char *name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
  braid_tls_context_t *other = c->sni_cb(c->sni_arg, name);
  if (other != NULL && other != c && other->role == BRAID_TLS_SERVER) {
    if (SSL_set_SSL_CTX(ssl, other->ctx) == NULL)
      return SSL_TLSEXT_ERR_ALERT_FATAL;
    /* SSL_set_SSL_CTX swaps the certificate only: take the verification
     * settings of the chosen context too. */
    SSL_set_verify(ssl, SSL_CTX_get_verify_mode(other->ctx), NULL);
  }
  return SSL_TLSEXT_ERR_OK;
}

/* ------------------------------------------------------------------------
 * Inspection
 * ------------------------------------------------------------------------ */

bool braid_transport_is_tls(const braid_transport_t *t) {
  return braid__tls_of(t) != NULL;
}

const char *braid_tls_alpn(const braid_transport_t *t) {
  braid__tls *s = braid__tls_of(t);
  return s != NULL ? s->alpn : NULL;
}

const char *braid_tls_server_name(const braid_transport_t *t) {
  braid__tls *s = braid__tls_of(t);
  return s != NULL ? SSL_get_servername(s->ssl, TLSEXT_NAMETYPE_host_name)
                   : NULL;
}

const char *braid_tls_version(const braid_transport_t *t) {
  braid__tls *s = braid__tls_of(t);
  return s != NULL && s->handshaken ? SSL_get_version(s->ssl) : NULL;
}

const char *braid_tls_cipher(const braid_transport_t *t) {
  braid__tls *s = braid__tls_of(t);
  return s != NULL && s->handshaken ? SSL_get_cipher_name(s->ssl) : NULL;
}

bool braid_tls_session_reused(const braid_transport_t *t) {
  braid__tls *s = braid__tls_of(t);
  return s != NULL && s->handshaken && SSL_session_reused(s->ssl) == 1;
}

const char *braid_tls_error(const braid_transport_t *t) {
  braid__tls *s = braid__tls_of(t);
  return s != NULL && s->err[0] != '\0' ? s->err : NULL;
}

static int braid__tls_peer(const braid_transport_t *t, X509 **out) {
  braid__tls *s = braid__tls_of(t);
  if (s == NULL)
    return BRAID_EINVAL;
  if (!s->handshaken)
    return BRAID_ENOTCONN;
  *out = SSL_get0_peer_certificate(s->ssl);
  return *out != NULL ? 0 : BRAID_ENOENT;
}

static int braid__tls_name(const X509_NAME *n, char *buf, size_t len) {
  if (buf == NULL || len == 0)
    return BRAID_EINVAL;
  BIO *b = BIO_new(BIO_s_mem());
  if (b == NULL)
    return BRAID_ENOMEM;
  X509_NAME_print_ex(b, n, 0, XN_FLAG_RFC2253);
  char *data;
  long dl = BIO_get_mem_data(b, &data);
  size_t w = dl > 0 ? (size_t)dl : 0;
  if (w >= len)
    w = len - 1;
  memcpy(buf, data, w);
  buf[w] = '\0';
  BIO_free(b);
  return (int)w;
}

int braid_tls_peer_subject(const braid_transport_t *t, char *buf, size_t len) {
  X509 *x;
  int rc = braid__tls_peer(t, &x);
  return rc < 0 ? rc : braid__tls_name(X509_get_subject_name(x), buf, len);
}

int braid_tls_peer_issuer(const braid_transport_t *t, char *buf, size_t len) {
  X509 *x;
  int rc = braid__tls_peer(t, &x);
  return rc < 0 ? rc : braid__tls_name(X509_get_issuer_name(x), buf, len);
}

int braid_tls_peer_fingerprint(const braid_transport_t *t, char *buf,
                               size_t len) {
  X509 *x;
  int rc = braid__tls_peer(t, &x);
  if (rc < 0)
    return rc;
  if (buf == NULL || len == 0)
    return BRAID_EINVAL;
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned mdlen = 0;
  if (X509_digest(x, EVP_sha256(), md, &mdlen) != 1)
    return BRAID_ENOMEM;
  char hex[EVP_MAX_MD_SIZE * 3 + 1];
  size_t w = 0;
  for (unsigned i = 0; i < mdlen; i++)
    w += (size_t)snprintf(hex + w, sizeof hex - w, i ? ":%02X" : "%02X", md[i]);
  if (w >= len)
    w = len - 1;
  memcpy(buf, hex, w);
  buf[w] = '\0';
  return (int)w;
}

void *braid_tls_peer_x509(const braid_transport_t *t) {
  X509 *x;
  return braid__tls_peer(t, &x) == 0 ? x : NULL;
}

void *braid_tls_native(const braid_transport_t *t) {
  braid__tls *s = braid__tls_of(t);
  return s != NULL ? s->ssl : NULL;
}

/* braid_transport_extra: the inspection functions above by name (see
 * braid/tls.h), and the lower transport's extras for other names. */
static void *braid__tls_extra(braid_transport_t *t, const char *name) {
  braid__tls *s = BRAID__TLS(t);
  if (strncmp(name, "tls.", 4) != 0)
    return s->lower != NULL && !s->lost ? braid_transport_extra(s->lower, name)
                                        : NULL;
  const char *k = name + 4;
  if (strcmp(k, "ssl") == 0)
    return braid_tls_native(t);
  if (strcmp(k, "peer_x509") == 0)
    return braid_tls_peer_x509(t);
  if (strcmp(k, "alpn") == 0)
    return (void *)braid_tls_alpn(t);
  if (strcmp(k, "server_name") == 0)
    return (void *)braid_tls_server_name(t);
  if (strcmp(k, "version") == 0)
    return (void *)braid_tls_version(t);
  if (strcmp(k, "cipher") == 0)
    return (void *)braid_tls_cipher(t);
  return NULL;
}

/* ------------------------------------------------------------------------
 * Endpoint strings: "tls:" (and Twisted's "ssl:")
 * ------------------------------------------------------------------------ */

/* Append one part to a "tcp:" description, escaping ':' and '\'. */
static int braid__tls_ep_append(char *out, size_t cap, size_t *len,
                                const braid_endpoint_part *part) {
  char tmp[2 * BRAID_ENDPOINT_PART_MAX + 40];
  size_t n = 0;
  tmp[n++] = ':';
  if (part->key[0] != '\0') {
    size_t kl = strlen(part->key);
    memcpy(tmp + n, part->key, kl);
    n += kl;
    tmp[n++] = '=';
  }
  for (const char *v = part->value; *v != '\0'; v++) {
    if (*v == ':' || *v == '\\' || (part->key[0] == '\0' && *v == '='))
      tmp[n++] = '\\';
    tmp[n++] = *v;
  }
  if (*len + n + 1 > cap)
    return BRAID_EINVAL;
  memcpy(out + *len, tmp, n);
  *len += n;
  out[*len] = '\0';
  return 0;
}

typedef struct braid__tls_ep {
  char tcp[BRAID_ENDPOINT_MAX_PARTS * (2 * BRAID_ENDPOINT_PART_MAX + 40)];
  const char *cert, *key, *ca_file, *ca_dir, *sni, *alpn;
  char *ciphers, *ciphersuites, *groups; /* ',' turned into ':' */
  uint64_t hs_timeout;
  bool has_hs_timeout;
  braid_endpoint_part parts[BRAID_ENDPOINT_MAX_PARTS];
} braid__tls_ep;

/* "2", "0.5": seconds, as the endpoint's own timeout= takes them. */
static int braid__tls_ep_seconds(const char *v, uint64_t *out) {
  char *end;
  double d = strtod(v, &end);
  if (end == v || *end != '\0' || !(d >= 0) || d > 1e6)
    return -1;
  *out = (uint64_t)(d * 1e9);
  return 0;
}

/* OpenSSL lists are ':'-separated, which an endpoint string must escape;
 * ',' is accepted too (as in alpn=). Edits the part in place. */
static char *braid__tls_ep_list(char *v) {
  for (char *c = v; *c != '\0'; c++)
    if (*c == ',')
      *c = ':';
  return v;
}

/* Take the TLS options out of `desc` and rebuild the rest as "tcp:...". */
static int braid__tls_ep_parse(braid__tls_ep *e, const char *desc, bool server,
                               char *err, size_t errlen) {
  char type[16];
  int n = 0;
  memset(e, 0, sizeof *e);
  int rc =
      braid_endpoint_split(desc, type, sizeof type, e->parts, &n, err, errlen);
  if (rc < 0)
    return rc;
  size_t len = 0;
  memcpy(e->tcp, "tcp", 4);
  len = 3;
  for (int i = 0; i < n; i++) {
    const char *k = e->parts[i].key, *v = e->parts[i].value;
    if (server && strcmp(k, "certificate") == 0)
      e->cert = v;
    else if (server && strcmp(k, "privateKey") == 0)
      e->key = v;
    else if (!server && strcmp(k, "caFile") == 0)
      e->ca_file = v;
    else if (!server && strcmp(k, "caCertsDir") == 0)
      e->ca_dir = v;
    else if (!server && strcmp(k, "sni") == 0)
      e->sni = v;
    else if (strcmp(k, "alpn") == 0)
      e->alpn = v;
    else if (strcmp(k, "ciphers") == 0)
      e->ciphers = braid__tls_ep_list(e->parts[i].value);
    else if (strcmp(k, "ciphersuites") == 0)
      e->ciphersuites = braid__tls_ep_list(e->parts[i].value);
    else if (strcmp(k, "groups") == 0)
      e->groups = braid__tls_ep_list(e->parts[i].value);
    else if (strcmp(k, "handshake_timeout") == 0) {
      if (braid__tls_ep_seconds(v, &e->hs_timeout) < 0) {
        if (err != NULL && errlen > 0)
          snprintf(err, errlen, "bad handshake_timeout '%s' in '%s'", v, desc);
        return BRAID_EINVAL;
      }
      e->has_hs_timeout = true;
    } else if (braid__tls_ep_append(e->tcp, sizeof e->tcp, &len, &e->parts[i]) <
               0)
      goto toolong;
  }
  if (server && e->cert == NULL) {
    if (err != NULL && errlen > 0)
      snprintf(err, errlen, "missing certificate in '%s'", desc);
    return BRAID_EINVAL;
  }
  if (server && e->key == NULL)
    e->key = e->cert; /* as Twisted: the key may sit in the certificate file */
  return 0;
toolong:
  if (err != NULL && errlen > 0)
    snprintf(err, errlen, "description too long: '%s'", desc);
  return BRAID_EINVAL;
}

/* "h2,http/1.1" -> the context's ALPN list. */
static int braid__tls_ep_alpn(braid_tls_context_t *ctx, const char *list) {
  char buf[BRAID_ENDPOINT_PART_MAX];
  const char *names[16];
  size_t n = 0;
  snprintf(buf, sizeof buf, "%s", list);
  for (char *tok = strtok(buf, ","); tok != NULL && n < 16;
       tok = strtok(NULL, ","))
    names[n++] = tok;
  return braid_tls_context_set_alpn(ctx, names, n);
}

static int braid__tls_ep_fail(char *err, size_t errlen, int rc,
                              const char *what, const char *desc) {
  if (err != NULL && errlen > 0)
    snprintf(err, errlen, "%s in '%s' (see the tls log)", what, desc);
  return rc;
}

/* The options both roles share. */
static int braid__tls_ep_apply(braid_tls_context_t *ctx, const braid__tls_ep *e,
                               const char *desc, char *err, size_t errlen) {
  int rc = 0;
  if (e->alpn != NULL && (rc = braid__tls_ep_alpn(ctx, e->alpn)) < 0)
    return braid__tls_ep_fail(err, errlen, rc, "bad alpn", desc);
  if (e->ciphers != NULL &&
      (rc = braid_tls_context_set_ciphers(ctx, e->ciphers)) < 0)
    return braid__tls_ep_fail(err, errlen, rc, "bad ciphers", desc);
  if (e->ciphersuites != NULL &&
      (rc = braid_tls_context_set_ciphersuites(ctx, e->ciphersuites)) < 0)
    return braid__tls_ep_fail(err, errlen, rc, "bad ciphersuites", desc);
  if (e->groups != NULL &&
      (rc = braid_tls_context_set_groups(ctx, e->groups)) < 0)
    return braid__tls_ep_fail(err, errlen, rc, "bad groups", desc);
  if (e->has_hs_timeout)
    braid_tls_context_set_handshake_timeout(ctx, e->hs_timeout);
  return 0;
}

/* A "tls:" listener owns its wrapping factory: closing the listener frees
 * it, which aborts the handshakes in progress (see braid_listener_on_close
 * for why). */
static void braid__tls_ep_closed(void *arg) {
  braid_tls_factory_free(arg);
}

static int braid__tls_endpoint_listen(braid_reactor_t *r, const char *desc,
                                      braid_factory_t *f,
                                      braid_listener_t **out, char *err,
                                      size_t errlen, void *arg) {
  (void)arg;
  braid__tls_ep *e = braid_malloc(sizeof *e);
  if (e == NULL)
    return BRAID_ENOMEM;
  braid_tls_context_t *ctx = NULL;
  braid_factory_t *tf = NULL;
  int rc = braid__tls_ep_parse(e, desc, true, err, errlen);
  if (rc < 0)
    goto out;
  rc = braid_tls_context_create(&ctx, BRAID_TLS_SERVER);
  if (rc < 0)
    goto out;
  rc = braid_tls_context_use_certificate_file(ctx, e->cert, e->key);
  if (rc < 0) {
    braid__tls_ep_fail(err, errlen, rc, "cannot load certificate/key", desc);
    goto out;
  }
  if ((rc = braid__tls_ep_apply(ctx, e, desc, err, errlen)) < 0)
    goto out;
  rc = braid_tls_wrap_factory(f, ctx, &tf);
  if (rc < 0)
    goto out;
  rc = braid_endpoint_listen(r, e->tcp, tf, out, err, errlen);
  if (rc < 0)
    goto out;
  rc = braid_listener_on_close(*out, braid__tls_ep_closed, tf);
  if (rc < 0) {
    braid_listener_close(*out); /* nobody would free the factory */
    *out = NULL;
    goto out;
  }
  tf = NULL;
out:
  braid_tls_factory_free(tf);
  braid_tls_context_free(ctx); /* the factory holds its own reference */
  braid_free(e);
  return rc;
}

static int braid__tls_endpoint_connect(braid_reactor_t *r, const char *desc,
                                       braid_protocol_t *p, char *err,
                                       size_t errlen, void *arg) {
  (void)arg;
  if (p == NULL || p->ops == NULL)
    return BRAID_EINVAL;
  braid__tls_ep *e = braid_malloc(sizeof *e);
  if (e == NULL)
    return BRAID_ENOMEM;
  braid_tls_context_t *ctx = NULL;
  braid__tls *s = NULL;
  braid_endpoint_t ep;
  int rc = braid__tls_ep_parse(e, desc, false, err, errlen);
  if (rc < 0)
    goto out;
  rc = braid_endpoint_parse(&ep, e->tcp, false, err, errlen);
  if (rc < 0)
    goto out;
  rc = braid_tls_context_create(&ctx, BRAID_TLS_CLIENT);
  if (rc < 0)
    goto out;
  if ((e->ca_file != NULL || e->ca_dir != NULL) &&
      (rc = braid_tls_context_load_ca(ctx, e->ca_file, e->ca_dir)) < 0) {
    braid__tls_ep_fail(err, errlen, rc, "cannot load CA certificates", desc);
    goto out;
  }
  if ((rc = braid__tls_ep_apply(ctx, e, desc, err, errlen)) < 0)
    goto out;
  s = braid__tls_new(r, ctx, p, e->sni != NULL ? e->sni : ep.host);
  if (s == NULL) {
    rc = BRAID_ENOMEM;
    goto out;
  }
  p->transport = &s->t;
  rc = braid_endpoint_connect(r, e->tcp, &s->lower_p, err, errlen);
  if (rc < 0) {
    braid__tls_destroy(s);
    goto out;
  }
out:
  braid_tls_context_free(ctx); /* the connection holds its own reference */
  braid_free(e);
  return rc;
}

static const braid_endpoint_scheme braid__tls_scheme = {
    .listen = braid__tls_endpoint_listen,
    .connect = braid__tls_endpoint_connect,
};

const braid_endpoint_scheme *braid_tls_endpoint_scheme(void) {
  return &braid__tls_scheme;
}
