/* Inspecting a TLS transport (braid/tls.h): what was negotiated, who the
 * peer is, and the same by name through braid_transport_extra(). Read-only
 * views of a connection of tls_conn.c. */
#include <stdio.h>
#include <string.h>

#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "braid/error.h"
#include "braid/tls.h"
#include "protocols/tls/tls_internal.h"

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
void *braid__tls_extra(braid_transport_t *t, const char *name) {
  braid__tls *s = braid__tls_of(t);
  if (strncmp(name, "tls.", 4) != 0)
    return s->lower != NULL && s->state != BRAID__TLS_CLOSED
               ? braid_transport_extra(s->lower, name)
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
