/* Endpoint description strings (see braid/endpoint.h). */
#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "braid/endpoint.h"
#include "core/endpoint_internal.h"
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

/* Split "type:a:k=v:..." on unescaped ':'; "\:" and "\\" are escapes. */
int braid__ep_split(const char *desc, char *type, size_t typelen,
                    braid__ep_part *parts, int *nparts, char *err,
                    size_t errlen) {
  const char *p = desc;
  size_t n = 0;
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
    if (*nparts == BRAID__EP_MAX_PARTS)
      return braid__ep_error(err, errlen, "too many parts in '%s'", desc);
    braid__ep_part *part = &parts[(*nparts)++];
    char buf[BRAID__EP_PART_MAX];
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

static int braid__ep_seconds(const char *s, uint64_t *out) {
  char *end;
  errno = 0;
  double v = strtod(s, &end);
  if (errno != 0 || *end != '\0' || end == s || !(v >= 0) || v > 1e9)
    return -1;
  *out = (uint64_t)(v * 1e9);
  return 0;
}

int braid_endpoint_parse(braid_endpoint_t *ep, const char *desc, bool server,
                         char *err, size_t errlen) {
  if (ep == NULL || desc == NULL)
    return braid__ep_error(err, errlen, "no endpoint description");
  memset(ep, 0, sizeof *ep);
  char type[16];
  braid__ep_part parts[BRAID__EP_MAX_PARTS];
  int nparts = 0;
  int rc = braid__ep_split(desc, type, sizeof type, parts, &nparts, err,
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
      if (braid__ep_seconds(v, &ep->timeout) < 0)
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

int braid_endpoint_listen(braid_reactor_t *r, const char *desc,
                          braid_factory_t *f, braid_listener_t **out,
                          char *err, size_t errlen) {
  if (braid__ep_is_tls(desc)) /* the TLS layer owns tls: and ssl: */
    return braid__tls_endpoint_listen(r, desc, f, out, err, errlen);
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
  if (braid__ep_is_tls(desc))
    return braid__tls_endpoint_connect(r, desc, p, err, errlen);
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
