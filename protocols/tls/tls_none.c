/* The TLS API in a build without OpenSSL (-Dtls=disabled, or auto without
 * OpenSSL 3): everything that can fail says so with BRAID_ENOTSUP and one
 * log line naming the cause, so a program learns why instead of guessing. */
#include "braid/endpoint.h"
#include "braid/error.h"
#include "braid/log.h"
#include "braid/tls.h"

#include <stdio.h>

#define BRAID__TLS_NONE                                                        \
  "braid was built without TLS support (-Dtls=disabled, or OpenSSL 3 was "     \
  "not found)"

static int braid__tls_none(braid_reactor_t *r) {
  if (r != NULL)
    braid_reactor_log(r, BRAID_LOG_ERROR, "tls", "%s", BRAID__TLS_NONE);
  else
    braid_log_default(NULL, BRAID_LOG_ERROR, "tls", BRAID__TLS_NONE);
  return BRAID_ENOTSUP;
}

bool braid_tls_available(void) {
  return false;
}

int braid_tls_context_create(braid_tls_context_t **out, braid_tls_role role) {
  (void)role;
  if (out != NULL)
    *out = NULL;
  return braid__tls_none(NULL);
}
void braid_tls_context_free(braid_tls_context_t *ctx) {
  (void)ctx;
}
int braid_tls_context_use_certificate_file(braid_tls_context_t *ctx,
                                           const char *c, const char *k) {
  (void)ctx, (void)c, (void)k;
  return braid__tls_none(NULL);
}
int braid_tls_context_use_certificate_mem(braid_tls_context_t *ctx,
                                          const void *c, size_t cl,
                                          const void *k, size_t kl) {
  (void)ctx, (void)c, (void)cl, (void)k, (void)kl;
  return braid__tls_none(NULL);
}
int braid_tls_context_load_ca(braid_tls_context_t *ctx, const char *f,
                              const char *d) {
  (void)ctx, (void)f, (void)d;
  return braid__tls_none(NULL);
}
int braid_tls_context_load_ca_mem(braid_tls_context_t *ctx, const void *pem,
                                  size_t len) {
  (void)ctx, (void)pem, (void)len;
  return braid__tls_none(NULL);
}
int braid_tls_context_set_verify(braid_tls_context_t *ctx, bool on) {
  (void)ctx, (void)on;
  return braid__tls_none(NULL);
}
int braid_tls_context_set_alpn(braid_tls_context_t *ctx,
                               const char *const *protos, size_t n) {
  (void)ctx, (void)protos, (void)n;
  return braid__tls_none(NULL);
}
int braid_tls_context_set_min_version(braid_tls_context_t *ctx, int v) {
  (void)ctx, (void)v;
  return braid__tls_none(NULL);
}
int braid_tls_context_set_lenient_eof(braid_tls_context_t *ctx, bool on) {
  (void)ctx, (void)on;
  return braid__tls_none(NULL);
}
int braid_tls_context_set_sni_cb(braid_tls_context_t *ctx, braid_tls_sni_cb cb,
                                 void *arg) {
  (void)ctx, (void)cb, (void)arg;
  return braid__tls_none(NULL);
}
int braid_tls_context_set_early_data(braid_tls_context_t *ctx, bool on) {
  (void)ctx, (void)on;
  return braid__tls_none(NULL);
}
int braid_tls_context_set_handshake_timeout(braid_tls_context_t *ctx,
                                            uint64_t ns) {
  (void)ctx, (void)ns;
  return braid__tls_none(NULL);
}
uint64_t braid_tls_context_handshake_timeout(const braid_tls_context_t *ctx) {
  (void)ctx;
  return 0;
}
int braid_tls_context_set_close_timeout(braid_tls_context_t *ctx,
                                        uint64_t ns) {
  (void)ctx, (void)ns;
  return braid__tls_none(NULL);
}
uint64_t braid_tls_context_close_timeout(const braid_tls_context_t *ctx) {
  (void)ctx;
  return 0;
}
int braid_tls_context_set_ciphers(braid_tls_context_t *ctx, const char *list) {
  (void)ctx, (void)list;
  return braid__tls_none(NULL);
}
int braid_tls_context_set_ciphersuites(braid_tls_context_t *ctx,
                                       const char *list) {
  (void)ctx, (void)list;
  return braid__tls_none(NULL);
}
int braid_tls_context_set_groups(braid_tls_context_t *ctx, const char *list) {
  (void)ctx, (void)list;
  return braid__tls_none(NULL);
}
void *braid_tls_context_native(braid_tls_context_t *ctx) {
  (void)ctx;
  return NULL;
}
int braid_tls_connect(braid_reactor_t *r, const braid_addr_t *addr,
                      const braid_connect_options *opts,
                      braid_tls_context_t *ctx, const char *server_name,
                      braid_protocol_t *p) {
  (void)addr, (void)opts, (void)ctx, (void)server_name, (void)p;
  return braid__tls_none(r);
}
int braid_tls_wrap_factory(braid_factory_t *inner, braid_tls_context_t *ctx,
                           braid_factory_t **out) {
  (void)inner, (void)ctx;
  if (out != NULL)
    *out = NULL;
  return braid__tls_none(NULL);
}
size_t braid_tls_factory_handshakes(const braid_factory_t *f) {
  (void)f;
  return 0;
}
void braid_tls_factory_free(braid_factory_t *f) {
  (void)f;
}
int braid_tls_start(braid_transport_t *lower, braid_tls_context_t *ctx,
                    const char *server_name, braid_protocol_t *p,
                    braid_transport_t **out) {
  (void)ctx, (void)server_name, (void)p;
  if (out != NULL)
    *out = NULL;
  return braid__tls_none(braid_transport_reactor(lower));
}
int braid_tls_feed(braid_transport_t *tls, const void *data, size_t len) {
  (void)tls, (void)data, (void)len;
  return BRAID_EINVAL; /* no transport can be a TLS one */
}
bool braid_transport_is_tls(const braid_transport_t *t) {
  (void)t;
  return false;
}
const char *braid_tls_alpn(const braid_transport_t *t) {
  (void)t;
  return NULL;
}
const char *braid_tls_server_name(const braid_transport_t *t) {
  (void)t;
  return NULL;
}
const char *braid_tls_version(const braid_transport_t *t) {
  (void)t;
  return NULL;
}
const char *braid_tls_cipher(const braid_transport_t *t) {
  (void)t;
  return NULL;
}
bool braid_tls_session_reused(const braid_transport_t *t) {
  (void)t;
  return false;
}
const char *braid_tls_error(const braid_transport_t *t) {
  (void)t;
  return NULL;
}
int braid_tls_peer_subject(const braid_transport_t *t, char *b, size_t l) {
  (void)t, (void)b, (void)l;
  return BRAID_EINVAL;
}
int braid_tls_peer_issuer(const braid_transport_t *t, char *b, size_t l) {
  (void)t, (void)b, (void)l;
  return BRAID_EINVAL;
}
int braid_tls_peer_fingerprint(const braid_transport_t *t, char *b, size_t l) {
  (void)t, (void)b, (void)l;
  return BRAID_EINVAL;
}
void *braid_tls_peer_x509(const braid_transport_t *t) {
  (void)t;
  return NULL;
}
void *braid_tls_native(const braid_transport_t *t) {
  (void)t;
  return NULL;
}

static int braid__tls_endpoint_listen(braid_reactor_t *r, const char *desc,
                                      braid_factory_t *f,
                                      braid_listener_t **out, char *err,
                                      size_t errlen, void *arg) {
  (void)f, (void)arg;
  if (out != NULL)
    *out = NULL;
  if (err != NULL && errlen > 0)
    snprintf(err, errlen, "cannot listen on '%s': %s", desc, BRAID__TLS_NONE);
  return braid__tls_none(r);
}
static int braid__tls_endpoint_connect(braid_reactor_t *r, const char *desc,
                                       braid_protocol_t *p, char *err,
                                       size_t errlen, void *arg) {
  (void)p, (void)arg;
  if (err != NULL && errlen > 0)
    snprintf(err, errlen, "cannot connect to '%s': %s", desc, BRAID__TLS_NONE);
  return braid__tls_none(r);
}

static const braid_endpoint_scheme braid__tls_scheme = {
    .listen = braid__tls_endpoint_listen,
    .connect = braid__tls_endpoint_connect,
};

const braid_endpoint_scheme *braid_tls_endpoint_scheme(void) {
  return &braid__tls_scheme;
}
