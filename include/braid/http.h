/* braid: the HTTP/1.1 server (RFC 9110, RFC 9112) and static files.
 *
 * A server is a router plus a protocol factory. Each connection parses
 * request heads with braid/http_parser.h and hands every request to the
 * handler of the route that matches it:
 *
 *   braid_http_server_t *srv;
 *   braid_http_server_create(r, NULL, &srv);
 *   braid_http_route(srv, "GET", "/hello", hello, NULL);
 *   braid_http_server_listen(srv, "tcp:8080", err, sizeof err);
 *
 *   static void hello(braid_http_req_t *req, void *arg) {
 *     braid_http_respond(req, 200, NULL, 0, "hello, world\n", 13);
 *   }
 *
 * Routing: a route is a method (NULL: any) and a path prefix. The route
 * with the longest prefix that matches the request's decoded path wins; a
 * prefix matches at a segment boundary ("/a" matches "/a" and "/a/b", not
 * "/ab"; "/" matches everything). When prefixes match but no route takes
 * the method, the answer is 405; when nothing matches, 404. The part of
 * the path after the prefix is braid_http_req_rest().
 *
 * One request at a time: a connection parses the next request only after
 * the current response is finished, so pipelined requests are answered in
 * order by construction (Twisted's HTTPChannel does the same). While a
 * request is being answered the connection reads on (so a reset is
 * noticed) until 64 KiB of later requests are buffered, then pauses.
 * While the transport asks to stop producing (its queued output passed
 * the high-water mark, see braid_transport_set_write_limits), the
 * connection stops reading and neither parses nor dispatches the next
 * request until the client has read its way below the low-water mark. So
 * a client that pipelines without reading costs the server at most the
 * transport's window plus one response and one read, whatever it sends,
 * and is dropped after write_timeout (below).
 *
 * Request lifetime: a braid_http_req_t is valid from the handler call until
 * braid_http_finish() (or braid_http_respond(), which finishes) returns.
 * If the connection is lost first (or the server is destroyed, or the
 * handler times out: see Timeouts), the stream ops' `closed` callback runs
 * with the reason and the request is freed when it returns (a body being
 * read gets its `end` first, a pending braid_http_sendfile its `done`);
 * without a `closed` callback
 * the request stays allocated, every call on it returns BRAID_ECLOSED, and
 * braid_http_finish() frees it. Either way a handler never sees a dangling
 * request.
 *
 * Bodies stream both ways:
 *   - The request body is not read until the handler asks with
 *     braid_http_read_body(); then it arrives in pieces (Content-Length and
 *     chunked alike, decoded), then one `end` call. "Expect: 100-continue"
 *     is answered with "100 Continue" at that moment, not before. A body
 *     larger than max_body (declared in Content-Length) is refused with
 *     413 before the handler runs; a chunked one that grows past it ends
 *     with BRAID_ELIMIT, and the handler should answer 413 (the
 *     connection closes after that response). A handler that responds without
 * reading the body gets it discarded (the connection stays usable), except
 * after an unanswered 100-continue or over max_body, where the connection is
 *     closed after the response.
 *   - A response is complete (braid_http_respond) or streamed
 *     (braid_http_start, braid_http_write..., braid_http_finish). A
 *     streamed response has Content-Length when the length is given, else
 *     chunked coding (HTTP/1.1) or a close-delimited body (HTTP/1.0).
 *     Writes queue on the transport; past its high-water mark the stream
 *     ops' `pause` callback says to stop producing and `resume` to go on,
 *     so a slow reader costs at most the transport's window.
 *   - braid_http_sendfile() sends a file range with sendfile(2) where the
 *     platform has it, else by reading 64 KiB pieces as the client drains
 *     them.
 *
 * Timeouts: a connection is always waiting for one thing, and each wait
 * has its timeout (the options below), so no client can hold a
 * connection without a limit:
 *   - a request head must arrive within header_timeout: the first from
 *     the moment the client connects, a later one from its first byte;
 *     more bytes do not restart it (slowloris). Then 408 and close, or a
 *     silent close when nothing arrived;
 *   - between a response and the next request's first byte, idle_timeout
 *     (keep-alive); then a silent close;
 *   - a handler that makes no call on its request (respond, start, write,
 *     sendfile, read_body, finish...) for handler_timeout gets `closed`
 *     with BRAID_ETIMEDOUT, and the client a 503 if no response had
 *     started (else the connection is aborted);
 *   - a body the handler asked for must keep coming: body_timeout between
 *     two reads, then the handler's `end` gets BRAID_ETIMEDOUT and the
 *     connection closes after its response; the unread body of a finished
 *     request is skipped under the same limit, then the connection is
 *     dropped;
 *   - a client that stops reading is dropped after write_timeout without
 *     progress (nginx's send_timeout): the timer runs while the transport
 *     asks to stop producing, while a sendfile piece waits for the client,
 *     and while a closing connection still has output queued; only bytes
 *     the client accepts restart it (checked every quarter of the
 *     timeout, so the drop comes between write_timeout and 1.25 x
 *     write_timeout after the last accepted byte), never bytes it sends;
 *   - a lingering close (after a response that closes the connection
 *     while request bytes may still arrive) reads and drops input for
 *     linger_timeout after the client took the last of the output.
 *
 * Errors from the parser are answered with its status (400, 413, 414,
 * 431, 501, 505) and "Connection: close", then the connection closes.
 *
 * Access log: one line per request through braid_reactor_log() with
 * domain "access" and level INFO, in the Common Log Format:
 *   127.0.0.1 - - [22/Nov/2026:03:23:05 +0000] "GET /x HTTP/1.1" 200 13
 * The last field is the body bytes sent. A request whose connection is
 * lost (reset, close, timeout, server destroyed) before its response was
 * written out is logged then, as nginx does: with the response's status
 * and the body bytes the transport had written by then, or with 499
 * (nginx's "client closed request") and 0 when no response had started.
 * A response that finishes while the client is slow to read (the
 * transport asks to stop producing) is logged once the client has read
 * all but the transport's low-water mark of it, or when the connection
 * is lost. Bytes written are known at the granularity of the pieces
 * handed to the transport (64 KiB; sendfile pieces grow from 64 KiB to
 * 1 MiB with what was sent), rounding down: the count is never more than
 * the transport wrote, and short by at most two pieces.
 */
#ifndef BRAID_HTTP_H
#define BRAID_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "braid/http_parser.h"
#include "braid/transport.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct braid_http_server braid_http_server_t;
typedef struct braid_http_req braid_http_req_t;

/* A response header field given by the handler: two NUL-terminated
 * strings. CR, LF and NUL are refused (BRAID_EINVAL) so a handler cannot be
 * tricked into splitting a response. */
typedef struct braid_http_field {
  const char *name;
  const char *value;
} braid_http_field_t;

/* A streamed response's length when it is not known in advance. */
#define BRAID_HTTP_LENGTH_UNKNOWN UINT64_MAX

typedef struct braid_http_server_options {
  /* Timeouts, one per state of a connection (see Timeouts above). */
  uint64_t header_timeout;    /* ns; 0: 10 s. A request head, from the
                                 connection (the first) or from its first
                                 byte (later ones) */
  uint64_t idle_timeout;      /* ns; 0: 60 s. Keep-alive: between a response
                                 and the next request's first byte */
  uint64_t body_timeout;      /* ns; 0: idle_timeout. Between two reads of a
                                 request body (nginx's client_body_timeout) */
  uint64_t handler_timeout;   /* ns; 0: 60 s. The handler makes no call on
                                 its request for this long (nginx's
                                 proxy_read_timeout); raise it for long
                                 polls */
  uint64_t write_timeout;     /* ns; 0: 60 s. A client that accepts no byte
                                 of output for this long is dropped (nginx's
                                 send_timeout) */
  uint64_t linger_timeout;    /* ns; 0: 2 s. Lingering close: how long input
                                 is read and dropped after the client took
                                 the last of our output */
  uint64_t max_body;          /* request body bytes; 0: 16 MiB */
  braid_http_limits_t limits; /* head limits (zero: the parser's) */
  const char *server_name;    /* "Server:" value (at most 128 bytes); NULL:
                                 "braid"; "" sends no Server field */
  bool no_access_log;         /* do not log one line per request */
  bool no_sendfile;           /* always read files into memory (nginx's
                                 "sendfile off": for file systems where the
                                 kernel's copy misbehaves, and for tests) */
} braid_http_server_options;

typedef void (*braid_http_handler_cb)(braid_http_req_t *req, void *arg);

/* Create a server on `r`. opts may be NULL. The options are copied. */
int braid_http_server_create(braid_reactor_t *r,
                             const braid_http_server_options *opts,
                             braid_http_server_t **out);

/* Add a route (see the top of this file). `method` and `prefix` are
 * copied; prefix must start with '/'. BRAID_EEXIST for a duplicate. */
int braid_http_route(braid_http_server_t *srv, const char *method,
                     const char *prefix, braid_http_handler_cb cb, void *arg);

/* The factory that builds one HTTP connection per accepted socket: give it
 * to braid_listen or braid_endpoint_listen, or use the call below. */
braid_factory_t *braid_http_server_factory(braid_http_server_t *srv);

/* Listen on an endpoint description ("tcp:8080"); the listener is closed
 * with the server. May be called several times. */
int braid_http_server_listen(braid_http_server_t *srv, const char *endpoint,
                             char *err, size_t errlen);

/* The first listener's address (for port 0). */
int braid_http_server_addr(const braid_http_server_t *srv, braid_addr_t *out);

/* Begin a graceful stop (Go's Server.Shutdown): close the listeners opened
 * with braid_http_server_listen, close every connection that has no
 * request in progress (no byte of a next request received), and from now
 * on end each connection after its current response, which carries
 * "Connection: close" (a response whose head went out before the call
 * still ends its connection). Requests in flight are not touched: bound
 * their time yourself (a deadline, then braid_http_server_destroy; the
 * service tree's braid_service_stop does both, with this call as its
 * listeners' drain callback). braid_http_server_connections() reaching 0
 * means the drain is complete. 0, or BRAID_EINVAL after destroy; calling
 * it again does nothing. */
int braid_http_server_drain(braid_http_server_t *srv);

/* Close the listeners and abort open connections (their requests see
 * `closed`). The memory is freed once the last connection is gone, which
 * may be during this call or later in the loop. Idempotent. */
void braid_http_server_destroy(braid_http_server_t *srv);

/* Open connections (for tests and figures). */
size_t braid_http_server_connections(const braid_http_server_t *srv);

/* Memory held for the open connections at this moment: what is bounded
 * above (for tests, figures and monitoring). */
typedef struct braid_http_server_stats {
  size_t connections;
  uint64_t input_buffered;    /* bytes allocated for unparsed input */
  uint64_t output_queued;     /* bytes queued on the transports, not yet
                                 taken by the kernel */
  uint64_t output_queued_max; /* the most queued on one connection */
} braid_http_server_stats;

void braid_http_server_stats_get(const braid_http_server_t *srv,
                                 braid_http_server_stats *out);

/* ------------------------------------------------------------------------
 * The request
 * ------------------------------------------------------------------------ */

/* Views into the request head, valid as long as the request. */
braid_http_view_t braid_http_req_method(const braid_http_req_t *req);
braid_http_view_t braid_http_req_target(const braid_http_req_t *req);
/* The target's path, percent-decoded, NUL-terminated (a decoded NUL makes
 * the request a 400 before any handler sees it). */
const char *braid_http_req_path(const braid_http_req_t *req);
/* The part of the path after the route's prefix (always starts with '/'
 * unless empty). */
const char *braid_http_req_rest(const braid_http_req_t *req);
/* The query without '?', not decoded; {NULL, 0} when absent. */
braid_http_view_t braid_http_req_query(const braid_http_req_t *req);
/* HTTP/1.<minor>. */
int braid_http_req_minor_version(const braid_http_req_t *req);
bool braid_http_req_is_head(const braid_http_req_t *req);
/* The first header with this name (case-insensitive); {NULL, 0} if none. */
braid_http_view_t braid_http_req_header(const braid_http_req_t *req,
                                        const char *name);
/* All header lines, in order. */
const braid_http_header_t *braid_http_req_headers(const braid_http_req_t *req,
                                                  size_t *n);
/* Body framing as the parser saw it. */
braid_http_body_kind_t braid_http_req_body_kind(const braid_http_req_t *req);
uint64_t braid_http_req_content_length(const braid_http_req_t *req);
/* The client's address. */
int braid_http_req_peer(const braid_http_req_t *req, braid_addr_t *out);
braid_reactor_t *braid_http_req_reactor(const braid_http_req_t *req);

/* Where a handler keeps its own per-request state. */
void braid_http_req_set_user(braid_http_req_t *req, void *user);
void *braid_http_req_user(const braid_http_req_t *req);

/* ------------------------------------------------------------------------
 * The request body
 * ------------------------------------------------------------------------ */

typedef struct braid_http_body_ops {
  /* A piece of the body, valid only during the call. */
  void (*data)(braid_http_req_t *req, const void *data, size_t len, void *arg);
  /* The body ended: 0 when complete, BRAID_ELIMIT over max_body,
   * BRAID_EPROTO for bad chunked framing, BRAID_ETIMEDOUT, or the
   * connection's error. Called once. After an error the handler should
   * still finish (a 4xx response goes out if none started). */
  void (*end)(braid_http_req_t *req, int status, void *arg);
} braid_http_body_ops;

/* Start receiving the body (sends "100 Continue" when the client asked).
 * A request without a body gets `end(0)` from the loop, never from inside
 * this call. BRAID_EALREADY if called twice. `ops` must outlive the body. */
int braid_http_read_body(braid_http_req_t *req, const braid_http_body_ops *ops,
                         void *arg);

/* Stop / restart body delivery (flow control for uploads: the client's
 * sending is throttled by TCP once the socket buffers fill). */
int braid_http_pause_body(braid_http_req_t *req);
int braid_http_resume_body(braid_http_req_t *req);

/* ------------------------------------------------------------------------
 * The response
 * ------------------------------------------------------------------------ */

/* A complete response: head, body, finish. Content-Length is set from
 * `len` (drop it from `fields`); Date, Server and Connection are added.
 * For HEAD, and for 1xx/204/304, the body is not sent. */
int braid_http_respond(braid_http_req_t *req, int status,
                       const braid_http_field_t *fields, size_t nfields,
                       const void *body, size_t len);

/* A streamed response: send the head now. `length` is the body length
 * (Content-Length) or BRAID_HTTP_LENGTH_UNKNOWN (chunked on HTTP/1.1,
 * close-delimited on HTTP/1.0). BRAID_EALREADY if a head was sent. */
int braid_http_start(braid_http_req_t *req, int status,
                     const braid_http_field_t *fields, size_t nfields,
                     uint64_t length);

/* A piece of a streamed body (copied when it cannot be written at once).
 * Writing more than a declared length is BRAID_ERANGE. Returns
 * BRAID_ECLOSED once the connection is gone. */
int braid_http_write(braid_http_req_t *req, const void *data, size_t len);

/* Send len bytes of an open regular file from offset as part of the body:
 * sendfile(2) where the platform allows, else read in 64 KiB pieces as
 * the transport drains. done(req, status, arg) runs once from the loop
 * when the bytes are queued (sendfile) or written, or failed; the
 * descriptor stays the caller's and may be closed from `done`. One at a
 * time (BRAID_EBUSY). */
typedef void (*braid_http_file_cb)(braid_http_req_t *req, int status,
                                   void *arg);
int braid_http_sendfile(braid_http_req_t *req, int fd, uint64_t offset,
                        uint64_t len, braid_http_file_cb done, void *arg);

/* End the response (the last chunk for chunked bodies). A response
 * shorter than its Content-Length closes the connection, since the client
 * cannot frame what follows. Frees the request (see the top). */
int braid_http_finish(braid_http_req_t *req);

/* Producer callbacks for streamed responses (Twisted's IPushProducer). */
typedef struct braid_http_stream_ops {
  void (*pause)(braid_http_req_t *req, void *arg);  /* stop producing */
  void (*resume)(braid_http_req_t *req, void *arg); /* go on */
  /* The connection was lost before finish: `reason` is the BRAID_E*
   * code. The request is freed when this returns. */
  void (*closed)(braid_http_req_t *req, int reason, void *arg);
} braid_http_stream_ops;

int braid_http_set_stream_ops(braid_http_req_t *req,
                              const braid_http_stream_ops *ops, void *arg);

/* True while the transport asks the producer to pause. */
bool braid_http_write_paused(const braid_http_req_t *req);

/* The reason phrase for a status ("Not Found"), "" when unknown. */
const char *braid_http_reason(int status);

/* Write an HTTP-date (RFC 9110 section 5.6.7) for a Unix time into buf
 * (at least 30 bytes); returns its length. Parse one back: 0 or
 * BRAID_EINVAL (the three formats of RFC 9110 section 5.6.7). */
size_t braid_http_date_format(int64_t unix_time, char *buf);
int braid_http_date_parse(const char *s, size_t len, int64_t *unix_time);

/* Percent-decode a path into out (size >= len + 1); returns the decoded
 * length, or BRAID_EINVAL for a bad escape or a decoded NUL. */
int braid_http_path_decode(const char *in, size_t len, char *out);

/* ------------------------------------------------------------------------
 * Static files (twisted.web.static.File)
 *
 * GET and HEAD only (405 otherwise). The path after the route's prefix is
 * percent-decoded and resolved under `root`; any ".." segment (decoded, so
 * "%2e%2e" too), a NUL, a backslash, or a symlink that leaves `root` is
 * refused with 403. Every file opened for a request, a directory's
 * index.html included, is resolved and checked the same way.
 * Hidden names are not published: a path with a segment starting with
 * '.' ("/.git/config", "/a/.env") is 404 and such names are left out of
 * listings, unless the `dotfiles` option is set. A directory without a
 * trailing slash redirects (301) to one; the Location is the request's
 * path alone (re-encoded, runs of '/' made one, the query kept), never a
 * scheme or host, so neither "GET //host" nor an absolute-form target
 * can send a browser to another site. With the slash, index.html is
 * served or a listing generated (names HTML-escaped and percent-encoded).
 * Every file response has Content-Type from the extension (mime.c),
 * Last-Modified, an ETag ("size-mtime" in hex, weak-free) and
 * Accept-Ranges: bytes. If-None-Match (first) or If-Modified-Since give
 * 304. One "Range: bytes=" range gives 206 with Content-Range, an
 * unsatisfiable one 416 with "Content-Range: bytes * /size"; several
 * ranges are answered with the whole file (200), which RFC 9110 section
 * 14.2 allows (a server may ignore Range). If-Range is honoured for ETags
 * and dates. The body goes through braid_http_sendfile.
 * ------------------------------------------------------------------------ */

typedef struct braid_http_static braid_http_static_t;

typedef struct braid_http_static_options {
  bool no_listing; /* 404 for directories without index.html */
  bool dotfiles;   /* publish names starting with '.' (default: 404, and
                      left out of listings) */
} braid_http_static_options;

int braid_http_static_create(const char *root,
                             const braid_http_static_options *opts,
                             braid_http_static_t **out);
void braid_http_static_destroy(braid_http_static_t *st);

/* The handler: route it with the static object as its argument, e.g.
 * braid_http_route(srv, NULL, "/", braid_http_static_handler, st). */
void braid_http_static_handler(braid_http_req_t *req, void *arg);

/* The MIME type for a file name, by extension (case-insensitive);
 * "application/octet-stream" when unknown. Text types carry
 * "; charset=utf-8". */
const char *braid_http_mime_type(const char *name);

#ifdef __cplusplus
}
#endif
#endif
