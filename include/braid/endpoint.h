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
 * Other modules add schemes of their own (braid_endpoint_add_scheme).
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

/* ------------------------------------------------------------------------
 * Schemes of other modules
 *
 * "tcp", "tcp6" and "unix" are core's; "tls" and "ssl" are the TLS
 * module's (braid/tls.h), registered by braid on every reactor. Another
 * module (a SOCKS client, a WebSocket or SSH layer) adds its own scheme to
 * a reactor, and braid_endpoint_listen / _connect hand it every
 * description that starts with its name. A scheme usually takes its own
 * options out of the description with braid_endpoint_split() and passes
 * the rest, rebuilt as "tcp:...", back to braid_endpoint_listen /
 * _connect, wrapping the factory or protocol it was given.
 * ------------------------------------------------------------------------ */

#define BRAID_ENDPOINT_MAX_PARTS 16  /* parts after the type */
#define BRAID_ENDPOINT_PART_MAX 256  /* bytes of one value, with its NUL */
#define BRAID_ENDPOINT_KEY_MAX 32    /* bytes of one key, with its NUL */
#define BRAID_ENDPOINT_SCHEME_MAX 16 /* bytes of a scheme name, with NUL */

/* One ':'-separated part of a description: "key=value", or a positional
 * value (key ""). Escapes are resolved: "a\:b" is the value "a:b". */
typedef struct braid_endpoint_part {
  char key[BRAID_ENDPOINT_KEY_MAX];
  char value[BRAID_ENDPOINT_PART_MAX];
} braid_endpoint_part;

/* Split "type:a:k=v:..." on unescaped ':' ("\:" and "\\" are escapes):
 * the type into type[typelen], the parts into parts[] (room for
 * BRAID_ENDPOINT_MAX_PARTS), their count into *nparts. Nothing is
 * allocated. BRAID_EINVAL, with a message naming the bad part in err
 * (when err != NULL), for an empty or too long type, too many parts, a
 * part or key too long, an empty key ("=v") or a trailing '\'. */
int braid_endpoint_split(const char *desc, char *type, size_t typelen,
                         braid_endpoint_part *parts, int *nparts, char *err,
                         size_t errlen);

/* A duration option as every endpoint takes it ("timeout=2",
 * "handshake_timeout=0.5"): decimal seconds (digits and at most one
 * point), at most 10^9, into nanoseconds. BRAID_EINVAL for anything else
 * ("", "soon", "-1", "1e3", "0x10", " 1", "nan"); *ns is left alone
 * then. */
int braid_endpoint_parse_seconds(const char *value, uint64_t *ns);

/* What a scheme does. `desc` is the whole description (with the scheme
 * name); `arg` is what was registered with it; err/errlen as for
 * braid_endpoint_listen (may be NULL/0). Either slot may be NULL: then
 * that direction returns BRAID_ENOTSUP with a message. The callbacks have
 * the contracts of braid_endpoint_listen and braid_endpoint_connect. */
typedef struct braid_endpoint_scheme {
  int (*listen)(braid_reactor_t *r, const char *desc, braid_factory_t *f,
                braid_listener_t **out, char *err, size_t errlen, void *arg);
  int (*connect)(braid_reactor_t *r, const char *desc, braid_protocol_t *p,
                 char *err, size_t errlen, void *arg);
} braid_endpoint_scheme;

/* Register `scheme` under `name` on reactor r: descriptions "name:..."
 * go to it from now on. `scheme` (and arg) must stay valid until removed
 * or the reactor is destroyed; nothing is copied but the name. Names are
 * 1-15 characters of [a-z0-9+.-] starting with a letter. BRAID_EINVAL for
 * NULL arguments or a bad name, BRAID_EEXIST when the name is taken (by
 * core, by braid's TLS schemes or by an earlier registration),
 * BRAID_ENOMEM. */
int braid_endpoint_add_scheme(braid_reactor_t *r, const char *name,
                              const braid_endpoint_scheme *scheme, void *arg);

/* Remove a scheme added with braid_endpoint_add_scheme. Listeners and
 * connections it made are not affected. BRAID_ENOENT when r has no such
 * registration, BRAID_EINVAL for NULL. */
int braid_endpoint_remove_scheme(braid_reactor_t *r, const char *name);

#ifdef __cplusplus
}
#endif
#endif
