/* braid: HTTP/1.x message parser (RFC 9110, RFC 9112).
 *
 * Two head parsers (request and response) and a chunked body decoder. None
 * of them allocates or copies: the heads are returned as views (pointer and
 * length) into the caller's buffer, and the chunked decoder works in place.
 * They follow the picohttpparser contract used by every braid line/frame
 * parser: a call returns
 *
 *   >= 0                    done: for the head parsers, the number of bytes
 *                           of the head (start line, header lines and the
 *                           empty line); for the chunked decoder, the bytes
 *                           left over after the body (see below)
 *   BRAID_HTTP_ERROR (-1)   the input is not valid HTTP; for the head
 *                           parsers `error_status` says which status a
 *                           server should answer with
 *   BRAID_HTTP_INCOMPLETE (-2)  need more bytes: call again with the same
 *                           bytes plus whatever arrived since
 *
 * Split invariance: a message may be cut at any byte. When a call on a
 * prefix of the input returns anything but BRAID_HTTP_INCOMPLETE, the call
 * on the whole input returns exactly the same result (same count, same
 * status, same fields). The tests check this for every split point.
 *
 * Line endings: the head parsers accept CRLF and, as RFC 9112 section 2.2
 * allows, a bare LF as the end of a start line or header line (a CR before
 * the LF is then ignored). Set BRAID_HTTP_STRICT_CRLF in
 * braid_http_limits.flags to reject bare LF with 400. A CR anywhere that is
 * not immediately followed by LF is always rejected (400), and so is any
 * bare LF in chunked framing: body framing is where front ends and back ends
 * must agree byte for byte, and every real client sends CRLF there.
 *
 * Re-parsing: like picohttpparser, a head parser that returned
 * BRAID_HTTP_INCOMPLETE parses again from the first byte once the head is
 * complete, so the views always point into the buffer of the latest call
 * (the caller may move or grow its buffer between calls). To keep
 * byte-at-a-time input linear rather than quadratic, the request/response
 * struct remembers how far the last call got (private fields, cleared by
 * every call that does not return BRAID_HTTP_INCOMPLETE): in the start line,
 * how far it has looked for the LF; in the header section, which lines it
 * has already judged, how many there were and the Content-Length so far.
 * The next call with the same struct only judges the new lines, with the
 * same code, and parses the whole head (storing the views) once it is
 * complete or wrong. The answer is exactly that of a fresh parse of the
 * same bytes, errors included, at any split (the tests and fuzzers check
 * this). Rules: the bytes already passed must not change, the limits must
 * stay the same, and a struct that returned BRAID_HTTP_INCOMPLETE must be
 * reset (braid_http_request_reset) before it is used on other input.
 */
#ifndef BRAID_HTTP_PARSER_H
#define BRAID_HTTP_PARSER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

enum {
  BRAID_HTTP_ERROR = -1,
  BRAID_HTTP_INCOMPLETE = -2,
};

/* A view into the caller's buffer: `len` bytes at `ptr`, not
 * NUL-terminated. An absent value is {NULL, 0}. */
typedef struct braid_http_view {
  const char *ptr;
  size_t len;
} braid_http_view_t;

/* One header line. The name is exactly as received (compare it
 * case-insensitively); the value has leading and trailing spaces and tabs
 * removed and may be empty. Repeated fields are reported one per line, in
 * order. */
typedef struct braid_http_header {
  braid_http_view_t name;
  braid_http_view_t value;
} braid_http_header_t;

/* How the body that follows the head is delimited (RFC 9112 section 6.3). */
typedef enum braid_http_body_kind {
  BRAID_HTTP_BODY_NONE = 0,    /* no body (also Content-Length: 0) */
  BRAID_HTTP_BODY_LENGTH,      /* exactly content_length bytes */
  BRAID_HTTP_BODY_CHUNKED,     /* chunked: use braid_http_decode_chunked */
  BRAID_HTTP_BODY_UNTIL_CLOSE, /* responses only: read until EOF */
} braid_http_body_kind_t;

/* Reject a bare LF line terminator in the head (400). */
#define BRAID_HTTP_STRICT_CRLF 0x1u

/* Size limits for one head. A zero-filled struct (or NULL) means the
 * defaults. Crossing a limit is an error with the status given below. */
typedef struct braid_http_limits {
  /* Longest request line or status line, not counting its CRLF.
   * 0 = 8192. Requests: 414 when the method has been read (the target is
   * what is long), 501 when the line is one over-long token (a method
   * longer than any implemented), 400 when that token is not a valid
   * method. */
  size_t max_start_line;
  /* Longest header section: every byte after the start line, up to and
   * including the empty line that ends the head. 0 = 16384. 431. */
  size_t max_header_bytes;
  /* Most header lines. 0 = 100. The caller's array capacity (headers_cap)
   * is a limit too; the smaller one applies. 431. */
  size_t max_headers;
  /* BRAID_HTTP_* flags above. */
  unsigned flags;
} braid_http_limits_t;

/* Private: where the last BRAID_HTTP_INCOMPLETE call stopped, so the next
 * call can carry on from there. All zero means "no hint". */
struct braid_http__hint {
  size_t pos_;   /* start line: scan for LF from here; headers: the start
                    of the unfinished line */
  size_t len_;   /* the length passed to that call */
  size_t limit_; /* start line: parse in full once the input is longer */
  size_t hs_;    /* headers: where the header section starts */
  size_t nh_;    /* headers: complete header lines so far */
  uint64_t cl_;  /* headers: Content-Length so far, if have_cl_ */
  bool have_cl_;
  unsigned char phase_; /* 0 none, 1 in the start line, 2 in the headers */
};

/* A parsed request head. Before the first call, set `headers` and
 * `headers_cap` (both may be 0/NULL: then any header field is 431) and
 * zero the rest; the parser fills in the other fields. */
typedef struct braid_http_request {
  /* In: where to store header views, and how many fit. */
  braid_http_header_t *headers;
  size_t headers_cap;

  /* Out, valid when the call returned >= 0. */
  braid_http_view_t method; /* a token, case-sensitive ("GET") */
  braid_http_view_t target; /* request-target as received */
  int minor_version;        /* HTTP/1.<minor_version>: 0 or 1 (2..9 are
                               accepted and mean "1.1 or later") */
  size_t num_headers;
  braid_http_body_kind_t body_kind; /* NONE, LENGTH or CHUNKED */
  uint64_t content_length;          /* when body_kind == LENGTH */
  bool keep_alive;           /* the connection may carry another request after
                                this one: HTTP/1.1 unless "Connection: close",
                                HTTP/1.0 only with "Connection: keep-alive" */
  bool expect_continue;      /* "Expect: 100-continue" in HTTP/1.1 */
  braid_http_view_t host;    /* the Host value ({NULL,0} if absent, which
                                only HTTP/1.0 allows) */
  braid_http_view_t upgrade; /* the Upgrade value when the request asks for
                                one (HTTP/1.1 with "Connection: upgrade");
                                else {NULL, 0} */

  /* Out, valid when the call returned BRAID_HTTP_ERROR: 400, 414, 431, 501
   * or 505. 0 otherwise. */
  int error_status;

  /* Private: the resume hint (see the top of this file). */
  struct braid_http__hint hint_;
} braid_http_request_t;

/* A parsed response head. Set `headers`, `headers_cap` and the two
 * request_was_* inputs; zero the rest. */
typedef struct braid_http_response {
  /* In. */
  braid_http_header_t *headers;
  size_t headers_cap;
  bool request_was_head;    /* the request was HEAD: the response has no
                               body whatever its headers say */
  bool request_was_connect; /* the request was CONNECT: a 2xx response has
                               no body and the connection becomes a tunnel */

  /* Out, valid when the call returned >= 0. */
  int minor_version;
  int status;               /* 100..599 */
  braid_http_view_t reason; /* may be empty */
  size_t num_headers;
  braid_http_body_kind_t body_kind; /* any of the four */
  uint64_t content_length;
  bool keep_alive;           /* false for UNTIL_CLOSE bodies */
  braid_http_view_t upgrade; /* Upgrade value of a 101 response */

  /* Out on BRAID_HTTP_ERROR: what is wrong, as the status a server would
   * use (400, 431, 501, 505); useful for logging, or 502 in a proxy. */
  int error_status;

  /* Private: the resume hint. */
  struct braid_http__hint hint_;
} braid_http_response_t;

/* Parse a request head from buf[0..len). `lim` may be NULL. Returns the
 * head's length, BRAID_HTTP_ERROR (req->error_status set) or
 * BRAID_HTTP_INCOMPLETE. Bytes after the head (a body, or the next
 * pipelined request) are not looked at.
 *
 * Framing is checked as RFC 9112 section 6 asks of a server: Content-Length
 * must be digits (a list of identical values, on one line or several, is
 * accepted; differing values are 400); Transfer-Encoding must end in
 * "chunked" (400 otherwise; 501 for any other coding, which braid does not
 * decode; 400 in an HTTP/1.0 request); both Content-Length and
 * Transfer-Encoding is 400 (request smuggling); an HTTP/1.1 request needs
 * exactly one Host (400). A body too large for the application is for the
 * body layer to refuse (413). Up to four empty lines before the request
 * line are skipped (RFC 9112 section 2.2). */
int braid_http_parse_request(const char *buf, size_t len,
                             braid_http_request_t *req,
                             const braid_http_limits_t *lim);

/* Parse a response head (the client side). Same contract. Framing: 1xx,
 * 204, 304 and responses to HEAD (and 2xx to CONNECT) have no body; then
 * Transfer-Encoding ending in chunked is CHUNKED, any other
 * Transfer-Encoding is UNTIL_CLOSE; then Content-Length; else UNTIL_CLOSE.
 * Both Content-Length and Transfer-Encoding is an error here too: a client
 * has no reason to trust such a response. */
int braid_http_parse_response(const char *buf, size_t len,
                              braid_http_response_t *res,
                              const braid_http_limits_t *lim);

/* Zero a request struct's results and private fields, keeping `headers`
 * and `headers_cap`: call it before parsing the next pipelined request
 * with the same struct (not needed after a call that returned >= 0 or
 * BRAID_HTTP_ERROR, which leave no hint behind). */
void braid_http_request_reset(braid_http_request_t *req);
void braid_http_response_reset(braid_http_response_t *res);

/* ------------------------------------------------------------------------
 * Chunked transfer coding (RFC 9112 section 7.1)
 * ------------------------------------------------------------------------ */

/* Decoder state. A zero-filled struct is a valid decoder with default
 * limits; to change a limit, set it after zero-filling and before the first
 * call. */
typedef struct braid_http_chunked_decoder {
  /* Most bytes of chunk extensions (everything between the chunk size and
   * its CRLF) on one chunk-size line. 0 = 1024. Extensions are checked for
   * control characters and otherwise ignored. */
  size_t max_ext_len;
  /* Most bytes in the trailer section, including its final empty line.
   * 0 = 8192. Trailer fields are checked (token name, colon, no control
   * characters, no obs-fold) and then discarded: they are not exposed,
   * because the bytes they occupy are reused by the in-place decoding and
   * because RFC 9110 section 6.5.1 lets a recipient drop them. */
  size_t max_trailer_bytes;

  /* Private. */
  uint64_t remaining_; /* chunk size being read, then data bytes to go */
  size_t count_;       /* digits, extension bytes or trailer bytes so far */
  unsigned char state_;
} braid_http_chunked_decoder_t;

/* Decode buf[0..*len) in place. The chunk data found in it is moved to the
 * front of the buffer and *len is set to its length (buf[0..*len) is then
 * body data, ready to use). Returns
 *   >= 0  the body is complete; the return value is the number of bytes
 *         that followed it (the next pipelined message), which have been
 *         moved to buf[*len .. *len + ret).
 *   BRAID_HTTP_INCOMPLETE  every byte was used; call again with the next
 *         bytes (only the new ones: the decoder keeps its own state).
 *   BRAID_HTTP_ERROR  malformed chunked framing (answer 400 and close):
 *         bad or missing hex size, more than 16 hex digits, a bare CR or
 *         LF, a control character or too many bytes in an extension or
 *         trailer, data not followed by CRLF. Sticky: later calls fail too.
 *         *len is the data decoded before the error.
 * Once complete, later calls return all their input as left over. */
ptrdiff_t braid_http_decode_chunked(braid_http_chunked_decoder_t *dec,
                                    char *buf, size_t *len);

/* True when the decoder has seen the whole body. */
bool braid_http_chunked_done(const braid_http_chunked_decoder_t *dec);

#ifdef __cplusplus
}
#endif
#endif
