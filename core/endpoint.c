/* Endpoint description strings (see braid/endpoint.h). */
#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "braid/endpoint.h"
#include "braid/tls.h"
#include "core/resolve_internal.h"
#include "core/transport.h"

static int braid__ep_error(char *err, size_t errlen, const char *fmt, ...) {
  if (err != NULL && errlen > 0) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
  }
  return BRAID_EINVAL;
}

int braid_endpoint_split(const char *desc, char *type, size_t typelen,
                         braid_endpoint_part *parts, int *nparts, char *err,
                         size_t errlen) {
  if (desc == NULL || type == NULL || typelen == 0 || parts == NULL ||
      nparts == NULL)
    return braid__ep_error(err, errlen, "no endpoint description");
  const char *p = desc;
  size_t n = 0;
  *nparts = 0;
  while (*p != '\0' && *p != ':') {
    if (n + 1 >= typelen)
      return braid__ep_error(err, errlen, "endpoint type too long in '%s'",
                             desc);
    type[n++] = *p++;
  }
  type[n] = '\0';
  if (n == 0)
    return braid__ep_error(err, errlen, "missing endpoint type in '%s'", desc);
  *nparts = 0;
  while (*p == ':') {
    p++;
    if (*nparts == BRAID_ENDPOINT_MAX_PARTS)
      return braid__ep_error(err, errlen, "too many parts in '%s'", desc);
    braid_endpoint_part *part = &parts[(*nparts)++];
    char buf[BRAID_ENDPOINT_PART_MAX];
    size_t len = 0;
    /* Where the first unescaped '=' is: escapes are resolved while
     * copying, so looking for '=' afterwards could not tell "k=v" from
     * "k\=v" (a positional value that contains '='). */
    size_t eqpos = SIZE_MAX;
    while (*p != '\0' && *p != ':') {
      char c = *p++;
      if (c == '\\') {
        if (*p == '\0')
          return braid__ep_error(err, errlen, "trailing '\\' in '%s'", desc);
        c = *p++;
      } else if (c == '=' && eqpos == SIZE_MAX) {
        eqpos = len;
      }
      if (len + 1 >= sizeof buf)
        return braid__ep_error(err, errlen, "part %d too long in '%s'",
                               *nparts, desc);
      buf[len++] = c;
    }
    buf[len] = '\0';
    if (eqpos != SIZE_MAX) {
      if (eqpos == 0) /* an empty key would read as a positional value */
        return braid__ep_error(err, errlen, "missing option name before "
                               "'=' in '%s'", desc);
      if (eqpos >= sizeof part->key)
        return braid__ep_error(err, errlen, "option name '%.*s' too long in "
                               "'%s'", (int)eqpos, buf, desc);
      memcpy(part->key, buf, eqpos);
      part->key[eqpos] = '\0';
      memcpy(part->value, buf + eqpos + 1, len - eqpos); /* with the NUL */
    } else {
      part->key[0] = '\0';
      memcpy(part->value, buf, len + 1);
    }
  }
  return 0;
}

static int braid__ep_uint(const char *s, unsigned long max,
                          unsigned long *out) {
  /* strtoul would also take leading blanks and a sign. */
  if (*s < '0' || *s > '9')
    return -1;
  char *end;
  errno = 0;
  unsigned long v = strtoul(s, &end, 10);
  if (errno != 0 || *end != '\0' || v > max)
    return -1;
  *out = v;
  return 0;
}

int braid_endpoint_parse_seconds(const char *value, uint64_t *ns) {
  if (value == NULL || ns == NULL)
    return BRAID_EINVAL;
  /* Decimal digits with at most one point: strtod alone would also take
   * leading blanks, signs, exponents, hex and "inf". */
  int points = 0, digits = 0;
  for (const char *c = value; *c != '\0'; c++) {
    if (*c == '.')
      points++;
    else if (*c >= '0' && *c <= '9')
      digits++;
    else
      return BRAID_EINVAL;
  }
  if (digits == 0 || points > 1)
    return BRAID_EINVAL;
  char *end;
  errno = 0;
  double v = strtod(value, &end);
  if (errno != 0 || *end != '\0' || end == value || !(v >= 0) || v > 1e9)
    return BRAID_EINVAL;
  *ns = (uint64_t)(v * 1e9);
  return 0;
}

int braid_endpoint_parse(braid_endpoint_t *ep, const char *desc, bool server,
                         char *err, size_t errlen) {
  if (ep == NULL || desc == NULL)
    return braid__ep_error(err, errlen, "no endpoint description");
  memset(ep, 0, sizeof *ep);
  char type[BRAID_ENDPOINT_SCHEME_MAX];
  braid_endpoint_part parts[BRAID_ENDPOINT_MAX_PARTS];
  int nparts = 0;
  int rc = braid_endpoint_split(desc, type, sizeof type, parts, &nparts, err,
                                errlen);
  if (rc < 0)
    return rc;
  if (strcmp(type, "tcp") == 0)
    ep->kind = BRAID_ENDPOINT_TCP;
  else if (strcmp(type, "tcp6") == 0)
    ep->kind = BRAID_ENDPOINT_TCP6;
  else if (strcmp(type, "unix") == 0)
    ep->kind = BRAID_ENDPOINT_UNIX;
  else
    return braid__ep_error(err, errlen,
                           "unknown endpoint type '%s' in '%s' (tcp, tcp6, "
                           "unix)",
                           type, desc);
  int npos = 0, have_port = 0, have_host = 0;
  for (int i = 0; i < nparts; i++) {
    const char *k = parts[i].key, *v = parts[i].value;
    unsigned long num;
    if (k[0] == '\0') {
      /* Positional: tcp server [port]; tcp client [host, port]; unix
       * [path]. */
      int pos = npos++;
      if (ep->kind == BRAID_ENDPOINT_UNIX && pos == 0)
        k = server ? "address" : "path";
      else if (ep->kind != BRAID_ENDPOINT_UNIX && server && pos == 0)
        k = "port";
      else if (ep->kind != BRAID_ENDPOINT_UNIX && !server && pos == 0)
        k = "host";
      else if (ep->kind != BRAID_ENDPOINT_UNIX && !server && pos == 1)
        k = "port";
      else
        return braid__ep_error(err, errlen,
                               "unexpected argument '%s' in '%s'", v, desc);
    }
    if (ep->kind != BRAID_ENDPOINT_UNIX && strcmp(k, "port") == 0) {
      if (braid__ep_uint(v, 65535, &num) < 0)
        return braid__ep_error(err, errlen, "bad port '%s' in '%s'", v, desc);
      ep->port = (uint16_t)num;
      have_port = 1;
    } else if (ep->kind != BRAID_ENDPOINT_UNIX &&
               strcmp(k, server ? "interface" : "host") == 0) {
      if (strlen(v) >= sizeof ep->host)
        return braid__ep_error(err, errlen, "%s too long in '%s'", k, desc);
      /* An empty interface means "all interfaces", but a client has no
       * such default: "tcp::80" used to parse, and the connect then went
       * to 0.0.0.0, which Linux quietly treats as the local host. */
      if (!server && v[0] == '\0')
        return braid__ep_error(err, errlen, "empty host in '%s'", desc);
      snprintf(ep->host, sizeof ep->host, "%s", v);
      have_host = 1;
    } else if (ep->kind == BRAID_ENDPOINT_UNIX &&
               strcmp(k, server ? "address" : "path") == 0) {
      if (strlen(v) >= sizeof ep->host || v[0] == '\0')
        return braid__ep_error(err, errlen, "bad unix path '%s' in '%s'", v,
                               desc);
      snprintf(ep->host, sizeof ep->host, "%s", v);
      have_host = 1;
    } else if (server && strcmp(k, "backlog") == 0) {
      if (braid__ep_uint(v, 65535, &num) < 0 || num == 0)
        return braid__ep_error(err, errlen, "bad backlog '%s' in '%s'", v,
                               desc);
      ep->backlog = (int)num;
    } else if (server && ep->kind != BRAID_ENDPOINT_UNIX &&
               strcmp(k, "reuseport") == 0) {
      if (braid__ep_uint(v, 1, &num) < 0)
        return braid__ep_error(err, errlen, "bad reuseport '%s' in '%s'", v,
                               desc);
      ep->reuse_port = num == 1;
    } else if (!server && strcmp(k, "timeout") == 0) {
      if (braid_endpoint_parse_seconds(v, &ep->timeout) < 0)
        return braid__ep_error(err, errlen, "bad timeout '%s' in '%s'", v,
                               desc);
    } else {
      return braid__ep_error(err, errlen, "unknown option '%s' in '%s'", k,
                             desc);
    }
  }
  if (ep->kind == BRAID_ENDPOINT_UNIX && !have_host)
    return braid__ep_error(err, errlen, "missing unix path in '%s'", desc);
  if (ep->kind != BRAID_ENDPOINT_UNIX && !have_port)
    return braid__ep_error(err, errlen, "missing port in '%s'", desc);
  if (!server && ep->kind != BRAID_ENDPOINT_UNIX && !have_host)
    return braid__ep_error(err, errlen, "missing host in '%s'", desc);
  return 0;
}

/* The numeric address an endpoint names, or BRAID_ENOTSUP for a host name
 * (resolution is asynchronous and separate). */
static int braid__ep_addr(const braid_endpoint_t *ep, bool server,
                          braid_addr_t *a, char *err, size_t errlen,
                          const char *desc) {
  if (ep->kind == BRAID_ENDPOINT_UNIX) {
    int rc = braid_addr_unix(a, ep->host);
    if (rc < 0)
      return braid__ep_error(err, errlen, "bad unix path in '%s': %s", desc,
                             braid_strerror(rc));
    return 0;
  }
  const char *host = ep->host;
  if (host[0] == '\0')
    host = ep->kind == BRAID_ENDPOINT_TCP6 ? "::" : "0.0.0.0";
  if (braid_addr_ip(a, host, ep->port) < 0) {
    if (server)
      return braid__ep_error(err, errlen,
                             "interface '%s' in '%s' is not a numeric address",
                             ep->host, desc);
    return BRAID_ENOTFOUND; /* a host name: the caller resolves it */
  }
  if (ep->kind == BRAID_ENDPOINT_TCP6 && braid_addr_family(a) != AF_INET6)
    return braid__ep_error(err, errlen, "tcp6 needs an IPv6 address in '%s'",
                           desc);
  return 0;
}

/* ------------------------------------------------------------------------
 * Schemes
 * ------------------------------------------------------------------------ */

typedef struct braid__ep_entry {
  char name[BRAID_ENDPOINT_SCHEME_MAX];
  const braid_endpoint_scheme *scheme;
  void *arg;
} braid__ep_entry;

/* A reactor's registrations, made on the first one and freed at reactor
 * teardown (through the public teardown hook, like any module's state). */
struct braid__ep_schemes {
  braid_teardown_t td;
  braid_reactor_t *r;
  braid__ep_entry *e;
  size_t n, cap;
};

/* Core's own types, which braid_endpoint_parse knows. */
static int braid__ep_core_type(const char *name) {
  return strcmp(name, "tcp") == 0 || strcmp(name, "tcp6") == 0 ||
         strcmp(name, "unix") == 0;
}

/* The schemes of braid's own modules, on every reactor. TLS is a module of
 * its own (protocols/tls), using only this public interface; it is listed
 * here because it is built into libbraid (as a stub without OpenSSL). */
static const braid_endpoint_scheme *braid__ep_builtin(const char *name) {
  if (strcmp(name, "tls") == 0 || strcmp(name, "ssl") == 0)
    return braid_tls_endpoint_scheme();
  return NULL;
}

static void braid__ep_schemes_free(braid_teardown_t *td) {
  struct braid__ep_schemes *s =
      BRAID_CONTAINER_OF(td, struct braid__ep_schemes, td);
  s->r->ep_schemes = NULL;
  braid_free(s->e);
  braid_free(s);
}

static int braid__ep_name_ok(const char *name) {
  size_t n = strlen(name);
  if (n == 0 || n >= BRAID_ENDPOINT_SCHEME_MAX || name[0] < 'a' ||
      name[0] > 'z')
    return 0;
  for (size_t i = 0; i < n; i++) {
    char c = name[i];
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '+' ||
          c == '.' || c == '-'))
      return 0;
  }
  return 1;
}

static braid__ep_entry *braid__ep_find(braid_reactor_t *r, const char *name) {
  struct braid__ep_schemes *s = r->ep_schemes;
  for (size_t i = 0; s != NULL && i < s->n; i++)
    if (strcmp(s->e[i].name, name) == 0)
      return &s->e[i];
  return NULL;
}

int braid_endpoint_add_scheme(braid_reactor_t *r, const char *name,
                              const braid_endpoint_scheme *scheme, void *arg) {
  if (r == NULL || name == NULL || scheme == NULL || !braid__ep_name_ok(name))
    return BRAID_EINVAL;
  if (braid__ep_core_type(name) || braid__ep_builtin(name) != NULL ||
      braid__ep_find(r, name) != NULL)
    return BRAID_EEXIST;
  struct braid__ep_schemes *s = r->ep_schemes;
  if (s == NULL) {
    s = braid_calloc(1, sizeof *s);
    if (s == NULL)
      return BRAID_ENOMEM;
    s->r = r;
    r->ep_schemes = s;
    braid_teardown_add(r, &s->td, braid__ep_schemes_free);
  }
  if (s->n == s->cap) {
    size_t cap = s->cap ? s->cap * 2 : 4;
    braid__ep_entry *e = braid_realloc(s->e, cap * sizeof *e);
    if (e == NULL)
      return BRAID_ENOMEM;
    s->e = e;
    s->cap = cap;
  }
  braid__ep_entry *e = &s->e[s->n++];
  memcpy(e->name, name, strlen(name) + 1);
  e->scheme = scheme;
  e->arg = arg;
  return 0;
}

int braid_endpoint_remove_scheme(braid_reactor_t *r, const char *name) {
  if (r == NULL || name == NULL)
    return BRAID_EINVAL;
  braid__ep_entry *e = braid__ep_find(r, name);
  if (e == NULL)
    return BRAID_ENOENT;
  struct braid__ep_schemes *s = r->ep_schemes;
  size_t i = (size_t)(e - s->e);
  memmove(&s->e[i], &s->e[i + 1], (s->n - i - 1) * sizeof *e);
  s->n--;
  return 0;
}

/* The scheme that handles `desc`, if another module's: 1 with *sch and
 * *arg set, 0 for core's own types (and anything unknown, which
 * braid_endpoint_parse reports). */
static int braid__ep_scheme_none(char *err, size_t errlen, const char *what,
                                 const char *desc) {
  if (err != NULL && errlen > 0)
    snprintf(err, errlen, "the endpoint type of '%s' has no %s", desc, what);
  return BRAID_ENOTSUP;
}

static int braid__ep_scheme_of(braid_reactor_t *r, const char *desc,
                               const braid_endpoint_scheme **sch, void **arg) {
  char name[BRAID_ENDPOINT_SCHEME_MAX];
  size_t n = 0;
  if (r == NULL || desc == NULL)
    return 0;
  while (desc[n] != '\0' && desc[n] != ':') {
    if (n + 1 >= sizeof name)
      return 0;
    name[n] = desc[n];
    n++;
  }
  name[n] = '\0';
  const braid_endpoint_scheme *b = braid__ep_builtin(name);
  if (b != NULL) {
    *sch = b;
    *arg = NULL;
    return 1;
  }
  braid__ep_entry *e = braid__ep_find(r, name);
  if (e == NULL)
    return 0;
  *sch = e->scheme;
  *arg = e->arg;
  return 1;
}

bool braid__endpoint_is_scheme(braid_reactor_t *r, const char *desc) {
  const braid_endpoint_scheme *sch;
  void *sarg;
  return braid__ep_scheme_of(r, desc, &sch, &sarg) != 0;
}

int braid_endpoint_listen(braid_reactor_t *r, const char *desc,
                          braid_factory_t *f, braid_listener_t **out,
                          char *err, size_t errlen) {
  const braid_endpoint_scheme *sch;
  void *sarg;
  if (braid__ep_scheme_of(r, desc, &sch, &sarg)) {
    if (sch->listen == NULL)
      return braid__ep_scheme_none(err, errlen, "servers", desc);
    return sch->listen(r, desc, f, out, err, errlen, sarg);
  }
  braid_endpoint_t ep;
  int rc = braid_endpoint_parse(&ep, desc, true, err, errlen);
  if (rc < 0)
    return rc;
  braid_addr_t a;
  rc = braid__ep_addr(&ep, true, &a, err, errlen, desc);
  if (rc < 0)
    return rc;
  braid_listen_options o = {0};
  o.backlog = ep.backlog;
  o.reuse_port = ep.reuse_port;
  o.ipv6_only = ep.kind == BRAID_ENDPOINT_TCP6;
  rc = braid_listen(r, &a, &o, f, out);
  if (rc < 0)
    braid__ep_error(err, errlen, "cannot listen on '%s': %s", desc,
                    braid_strerror(rc));
  return rc;
}

int braid_endpoint_connect(braid_reactor_t *r, const char *desc,
                           braid_protocol_t *p, char *err, size_t errlen) {
  const braid_endpoint_scheme *sch;
  void *sarg;
  if (braid__ep_scheme_of(r, desc, &sch, &sarg)) {
    if (sch->connect == NULL)
      return braid__ep_scheme_none(err, errlen, "clients", desc);
    return sch->connect(r, desc, p, err, errlen, sarg);
  }
  braid_endpoint_t ep;
  int rc = braid_endpoint_parse(&ep, desc, false, err, errlen);
  if (rc < 0)
    return rc;
  braid_addr_t a;
  braid_connect_options o = {0};
  o.timeout = ep.timeout;
  rc = braid__ep_addr(&ep, false, &a, err, errlen, desc);
  if (rc == BRAID_ENOTFOUND) {
    /* A host name: resolve it off the loop, then try each address. */
    rc = braid__connect_name(r, ep.host, ep.port,
                             ep.kind == BRAID_ENDPOINT_TCP6 ? AF_INET6 : 0, &o,
                             p);
    if (rc < 0)
      braid__ep_error(err, errlen, "cannot resolve '%s': %s", ep.host,
                      braid_strerror(rc));
    return rc;
  }
  if (rc < 0)
    return rc;
  rc = braid_connect(r, &a, &o, p);
  if (rc < 0)
    braid__ep_error(err, errlen, "cannot connect to '%s': %s", desc,
                    braid_strerror(rc));
  return rc;
}
