/* braid: HTTP/1.1 client (Twisted's Agent and HTTPConnectionPool, with a
 * treq-like buffered shortcut).
 *
 * A client owns a keep-alive connection pool per host:port. A request
 * returns a deferred that fires with a braid_http_client_response_t:
 *
 *   - buffered (braid_http_request, or braid_http_request_ex without
 *     body handlers): the deferred fires once the whole body has arrived,
 *     with resp->body holding it (at most max_body_size bytes, else
 *     BRAID_ELIMIT);
 *   - streaming (braid_http_request_ex with handlers.body_data set): the
 *     deferred fires as soon as the head has arrived (resp->body is NULL),
 *     then the body is passed to handlers.body_data piece by piece and
 *     handlers.body_end ends it. braid_http_call_pause/resume stop and
 *     restart reading from the connection (flow control towards the
 *     server).
 *
 * The request body is either given whole (sent with Content-Length) or
 * written by the caller in pieces (opts.stream_body): with
 * braid_http_call_write and braid_http_call_finish, using chunked transfer
 * coding unless opts.body_length gives the length in advance.
 *
 * The deferred's value is owned by the deferred (its dtor is
 * braid_http_client_response_free); take it with braid_result_take() to
 * keep it past the chain.
 *
 * https:// runs over braid's TLS layer (braid/tls.h): the server's
 * certificate is verified (options.tls_ca_file, else the system's CAs) and
 * its name checked against the URL's host; a refused certificate errbacks
 * with BRAID_EPROTO. In a build without TLS, https requests errback with
 * BRAID_ENOTSUP.
 *
 * Errors: argument errors are returned at once (BRAID_EINVAL for a bad
 * URL, method or header). Everything else errbacks the deferred with a braid-domain
 * failure: BRAID_ECONNREFUSED and other connect errors, BRAID_ENOTFOUND
 * (the name does not resolve), BRAID_ETIMEDOUT (connect, response-head or
 * body timeout), BRAID_EPROTO (a malformed response, a 101 Switching
 * Protocols, which nothing here can ask for, or the connection ended
 * before the response did), BRAID_ELIMIT (a head or body limit),
 * BRAID_ECANCELED (deferred cancelled, client destroyed),
 * BRAID_ECONNABORTED / BRAID_ECONNRESET (connection lost).
 *
 * Lifetime: destroy the client before the reactor, or let
 * braid_reactor_destroy() free it (then never call destroy). Idle pooled
 * connections keep braid_reactor_run() from returning, as any open
 * connection does: destroy the client, or stop the reactor, when done.
 *
 * Cancelling the deferred before it fired aborts the request; its
 * connection, if it had one, is aborted too and never reused.
 *
 * Retries: a request sent on a pooled connection that had already served a
 * response, which the server closes before answering anything (the usual
 * race with a server's idle timeout), is sent again once on a new
 * connection, if its method is idempotent (RFC 9110 section 9.2.2) and its
 * body is not streamed.
 *
 * All functions are for the reactor's thread only.
 */
#ifndef BRAID_HTTP_CLIENT_H
#define BRAID_HTTP_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "braid/deferred.h"
#include "braid/http_parser.h"
#include "braid/reactor.h"
#include "braid/transport.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct braid_http_client braid_http_client_t;
/* One request in progress, for streaming bodies (see below). */
typedef struct braid_http_call braid_http_call_t;

/* How the client opens a connection. The default resolves `host` on the
 * reactor's thread pool and connects over TCP (braid_endpoint_connect).
 * Tests replace it to hand out memory transports. Same contract as
 * braid_connect: return 0 and later call connection_made and/or
 * connection_lost on `p` (connection_made may be called before this
 * returns), or return a BRAID_E* code with no callback. timeout in ns, 0 =
 * none. */
typedef int (*braid_http_connect_cb)(braid_reactor_t *r, const char *host,
                                     uint16_t port, uint64_t timeout,
                                     braid_protocol_t *p, void *arg);

/* Client options; a zero-filled struct (or NULL) means the defaults. All
 * times in nanoseconds. */
typedef struct braid_http_client_options {
  uint64_t connect_timeout;      /* 0 = 30 s */
  uint64_t response_timeout;     /* from the end of sending the request head
                                    (and body, if not streamed) until the
                                    response head is complete. 0 = 60 s;
                                    UINT64_MAX = none */
  uint64_t body_timeout;         /* longest silence while a response body
                                    arrives (not counted while a streamed
                                    body is paused). 0 = 60 s;
                                    UINT64_MAX = none */
  uint64_t idle_timeout;         /* how long an idle connection stays in the
                                    pool. 0 = 60 s */
  uint64_t continue_timeout;     /* how long to wait for "100 Continue" before
                                    sending the body anyway. 0 = 1 s */
  size_t max_per_host;           /* connections per host:port (busy + idle);
                                    further requests wait in a queue. 0 = 6 */
  size_t max_idle_per_host;      /* idle connections kept. 0 = max_per_host */
  size_t max_body_size;          /* largest buffered body. 0 = 64 MiB */
  braid_http_limits_t limits;    /* response head limits (http_parser.h) */
  braid_http_connect_cb connect; /* NULL: TCP via the thread-pool resolver */
  void *connect_arg;
  const char *user_agent; /* NULL: "braid/<version>"; "" = none */
  const char *tls_ca_file; /* https: PEM file of trusted CAs; NULL: the
                              system's. The server's name is always
                              checked against the URL's host. */
} braid_http_client_options;

int braid_http_client_create(braid_reactor_t *r,
                             const braid_http_client_options *opts,
                             braid_http_client_t **out);

/* Abort every connection, errback every request still in progress with
 * BRAID_ECANCELED, and free the client (at once, or once the connection
 * attempts still resolving a name have ended). May be called from the
 * client's own callbacks. Destroying the reactor without calling this does
 * the same; do not call it afterwards. */
void braid_http_client_destroy(braid_http_client_t *c);

/* Connections, for tests and statistics: open (busy, idle or connecting)
 * and idle ones, summed over every host. */
size_t braid_http_client_open_connections(const braid_http_client_t *c);
size_t braid_http_client_idle_connections(const braid_http_client_t *c);

/* A response. The head is an owned copy: every view points into it and
 * stays valid until braid_http_client_response_free. */
typedef struct braid_http_client_response {
  int status;        /* 100..599 */
  int minor_version; /* HTTP/1.<minor_version> */
  braid_http_view_t reason;
  braid_http_header_t *headers;
  size_t num_headers;
  /* Buffered requests: the whole body (NUL-terminated for convenience,
   * not counted in body_len). Streaming: NULL. */
  char *body;
  size_t body_len;
  /* The connection had served an earlier response (it came from the
   * pool). */
  bool reused_connection;
  /* Private. */
  char *head_;
  size_t body_cap_;
} braid_http_client_response_t;

void braid_http_client_response_free(void *resp);

/* The first header named `name` (case-insensitive), or NULL. */
const braid_http_view_t *
braid_http_client_response_header(const braid_http_client_response_t *resp,
                                  const char *name);

/* Streaming handlers. data: a piece of the body, valid during the call.
 * end: called once after the deferred succeeded: status 0 when the body is
 * complete, else the BRAID_E* reason it was cut short. The call handle is
 * freed after end returns (do not abort it from there). */
typedef struct braid_http_body_handlers {
  void (*body_data)(braid_http_call_t *call, const void *data, size_t len,
                    void *user);
  void (*body_end)(braid_http_call_t *call, int status, void *user);
  /* Flow control of a streamed request body (optional): the connection's
   * write queue passed its high-water mark (paused = true: stop calling
   * braid_http_call_write) or drained again (false). Pieces written before
   * the connection is up (or while waiting for 100 Continue) are held in
   * memory without a limit, so keep those few. */
  void (*body_writable)(braid_http_call_t *call, bool paused, void *user);
  void *user;
} braid_http_body_handlers;

typedef struct braid_http_request_options {
  const char *method; /* NULL = "GET" */
  const char *url;    /* http://host[:port][/path][?query] */
  /* Extra header fields. Host, Content-Length, Transfer-Encoding and
   * Connection belong to the client (framing and pooling): giving one is
   * BRAID_EINVAL, as is a name that is not a token or a value with CR, LF
   * or another control character. */
  const braid_http_header_t *headers;
  size_t num_headers;
  /* A whole body (copied), sent with Content-Length. */
  const void *body;
  size_t body_len;
  /* The caller writes the body with braid_http_call_write/finish. */
  bool stream_body;
  /* With stream_body: the body's length if known (Content-Length), or -1
   * for chunked. */
  int64_t body_length;
  /* Send "Expect: 100-continue" and hold the body until the server says
   * 100, a final answer arrives, or continue_timeout passes. */
  bool expect_continue;
  /* Streaming response body when handlers->body_data is set. */
  const braid_http_body_handlers *handlers;
} braid_http_request_options;

/* The buffered shortcut: method, url, extra headers, a whole body (or
 * NULL, 0). *out gets a deferred that fires with the response. Argument
 * errors (NULL, bad URL) are returned at once; everything else is
 * the deferred's errback. */
int braid_http_request(braid_http_client_t *c, const char *method,
                       const char *url, const braid_http_header_t *headers,
                       size_t num_headers, const void *body, size_t body_len,
                       braid_deferred_t *out);

/* The general form. *call (may be NULL) gets the request's handle, valid
 * until the deferred errbacks or, after success, until the response is
 * complete (buffered) or body_end returns (streaming). */
int braid_http_request_ex(braid_http_client_t *c,
                          const braid_http_request_options *opts,
                          braid_deferred_t *out, braid_http_call_t **call);

/* Streamed request body: queue a piece / end the body. Pieces are copied
 * and held until the connection is up (and, with expect_continue, until
 * the server agreed). BRAID_EINVAL without stream_body or after finish;
 * BRAID_ELIMIT if more than body_length bytes are written. */
int braid_http_call_write(braid_http_call_t *call, const void *data,
                          size_t len);
int braid_http_call_finish(braid_http_call_t *call);

/* Flow control of a streamed response body: stop / restart reading from
 * the connection (Twisted's pauseProducing). Bytes already read when
 * pause is called (the rest of the current read) are still delivered. */
int braid_http_call_pause(braid_http_call_t *call);
int braid_http_call_resume(braid_http_call_t *call);

/* Abort the request: its connection is aborted; the deferred errbacks with
 * BRAID_ECANCELED if it had not fired, else body_end gets
 * BRAID_ECANCELED. */
int braid_http_call_abort(braid_http_call_t *call);

/* URL parsing, exposed for tests and tools. host is lower-cased and without
 * brackets for IPv6 literals. */
typedef struct braid_http_url {
  bool https;
  char host[256];
  uint16_t port;
  const char *path; /* points into the input: the path and query as
                       written, possibly empty or starting with '?'
                       (a request then sends "/" before it) */
  size_t path_len;  /* up to the fragment ('#'), which is not sent */
  bool ipv6;
} braid_http_url_t;

/* BRAID_EINVAL for anything that is not http:// or https:// with a host,
 * BRAID_ENAMETOOLONG for a host over 255 bytes. Scheme and host are
 * case-insensitive; userinfo ("user@") and fragments are rejected / cut. */
int braid_http_url_parse(braid_http_url_t *u, const char *url);

#ifdef __cplusplus
}
#endif
#endif
