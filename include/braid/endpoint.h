/* braid: endpoints from strings, as Twisted's endpoint descriptions.
 *
 * Servers:  "tcp:8080"  "tcp:port=8080:interface=127.0.0.1:backlog=128"
 *           "tcp6:port=0:interface=\:\:1"  "unix:/path/sock"
 *           "unix:address=@abstract"  (reuseport=1 is accepted on tcp)
 * Clients:  "tcp:host=example.org:port=80:timeout=5"  "tcp:127.0.0.1:80"
 *           "unix:/path/sock"  "unix:path=/path/sock"
 * TLS (braid/tls.h; "ssl:" is an alias, as in Twisted):
 * Servers:  "tls:port=8443:certificate=cert.pem:privateKey=key.pem"
 *           (+ interface, backlog, alpn=h2,http/1.1)
 * Clients:  "tls:host=example.org:port=443" (+ caFile, caCertsDir, sni,
 *           alpn, timeout); the server is verified against the system CA
 *           store (or caFile/caCertsDir) and the host (or sni) name.
 * Both:     handshake_timeout=SECONDS (default 10, 0: none), and the suites
 *           ciphers=, ciphersuites= and groups=, as OpenSSL lists with ','
 *           or '\:' between names (braid/tls.h has the defaults).
 *           Closing a tls: listener aborts its handshakes in progress: the
 *           factory given to braid_endpoint_listen is never called after
 *           braid_listener_close, as with tcp:.
 * A ':' inside a value is written "\:". Errors name the bad part.
 * A unix: listener removes its socket file when closed (braid_listen in
 * braid/transport.h says when).
 */
#ifndef BRAID_ENDPOINT_H
#define BRAID_ENDPOINT_H

#include "braid/transport.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum braid_endpoint_kind {
  BRAID_ENDPOINT_TCP = 1, /* IPv4 or IPv6 by address / lookup */
  BRAID_ENDPOINT_TCP6,
  BRAID_ENDPOINT_UNIX
} braid_endpoint_kind;

#define BRAID_ENDPOINT_HOST_MAX 256

typedef struct braid_endpoint {
  braid_endpoint_kind kind;
  char host[BRAID_ENDPOINT_HOST_MAX]; /* client host / server interface,
                                         or the Unix path */
  uint16_t port;
  int backlog;        /* servers; 0 = default */
  bool reuse_port;    /* servers */
  uint64_t timeout;   /* clients, ns; 0 = none */
} braid_endpoint_t;

/* Parse a description. `server` selects the server grammar. On error
 * returns BRAID_EINVAL and, when err != NULL, writes a message naming the
 * bad part into err (NUL-terminated, truncated to errlen). */
int braid_endpoint_parse(braid_endpoint_t *ep, const char *desc, bool server,
                         char *err, size_t errlen);

/* Parse a server description and listen on it. Server addresses must be
 * numeric (or empty: all interfaces). */
int braid_endpoint_listen(braid_reactor_t *r, const char *desc,
                          braid_factory_t *f, braid_listener_t **out,
                          char *err, size_t errlen);

/* Parse a client description and connect `p` to it (see braid_connect for
 * the callbacks). A host name is resolved on the reactor's thread pool
 * (braid/resolve.h) and each address is tried in turn; `p` sees one
 * connection_made, or one connection_lost with the last error
 * (BRAID_ENOTFOUND when the name does not resolve). */
int braid_endpoint_connect(braid_reactor_t *r, const char *desc,
                           braid_protocol_t *p, char *err, size_t errlen);

#ifdef __cplusplus
}
#endif
#endif
