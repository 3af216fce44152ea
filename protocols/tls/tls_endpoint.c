/* The "tls:" endpoint scheme (braid/endpoint.h), served as "tls" and as
 * Twisted's "ssl": the TLS options are taken out of the description, the
 * rest is handed to "tcp:", and the connection or listener runs TLS over
 * it with a context built from the options (tls_context.c). A listener
 * owns its wrapping factory (tls_factory.c) and frees it when closed. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "braid/alloc.h"
#include "braid/endpoint.h"
#include "braid/error.h"
#include "braid/tls.h"
#include "protocols/tls/tls_internal.h"

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
      if (braid_endpoint_parse_seconds(v, &e->hs_timeout) < 0) {
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
