/* TLS contexts (braid/tls.h): the configuration many connections share,
 * on OpenSSL 3. Certificates and keys, trust anchors and verification,
 * protocol versions, cipher suites and groups, ALPN, the handshake and
 * close timeouts, SNI, and the client's session cache with the OpenSSL
 * callbacks that fill and use it.
 *
 * A context is reference-counted (connections and wrapping factories hold
 * a reference), and hangs off its SSL_CTX's app data so that OpenSSL
 * callbacks, which only get an SSL, find it. */
#include <limits.h>
#include <stdio.h>
#include <string.h>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "braid/alloc.h"
#include "braid/error.h"
#include "braid/log.h"
#include "braid/tls.h"
#include "protocols/tls/tls_internal.h"

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

/* The first error on OpenSSL's thread-local queue as text, clearing it. */
void braid__tls_errtext(char *buf, size_t len) {
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

void braid__tls_ctx_ref(braid_tls_context_t *c) {
  c->refs++;
}

void braid__tls_ctx_unref(braid_tls_context_t *c) {
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
  c->close_timeout = BRAID_TLS_CLOSE_TIMEOUT;
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

int braid_tls_context_set_close_timeout(braid_tls_context_t *ctx,
                                        uint64_t ns) {
  if (ctx == NULL)
    return BRAID_EINVAL;
  ctx->close_timeout = ns;
  return 0;
}

uint64_t braid_tls_context_close_timeout(const braid_tls_context_t *ctx) {
  return ctx != NULL ? ctx->close_timeout : 0;
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
 * The client session cache and OpenSSL's callbacks
 * ------------------------------------------------------------------------ */

void braid__tls_ctx_resume(braid_tls_context_t *c, SSL *ssl, const char *name) {
  for (braid__tls_sess *e = c->cache; e != NULL; e = e->next)
    if (strcmp(e->name, name) == 0) {
      if (SSL_SESSION_is_resumable(e->sess))
        SSL_set_session(ssl, e->sess);
      return;
    }
}

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

