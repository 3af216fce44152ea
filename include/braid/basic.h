/* braid: basic framing (Twisted's twisted.protocols.basic).
 *
 * Two layers:
 *
 * 1. Pure parsers: functions over a byte buffer and a small state struct
 *    that is valid when zero-filled. They allocate and copy nothing and
 *    follow one contract (as h2o's picohttpparser):
 *      >= 0  a complete frame: the number of bytes it used
 *        -1  malformed input; st->error says why (BRAID_ELIMIT or
 *            BRAID_EPROTO); the stream cannot be resynchronised
 *        -2  incomplete: call again with the same bytes plus more, from
 *            the same start, with the same state (it remembers how far it
 *            got, so the bytes are not scanned twice)
 *    After a complete frame, zero the state before parsing the next one.
 *    They are the part to fuzz.
 *
 * 2. Receivers: protocols (they embed a braid_protocol_t and ARE one) that
 *    run a parser over the bytes a transport delivers and call you once per
 *    frame. Frames complete inside one read are handed to you as pointers
 *    into the transport's read buffer (no copy); only a frame split across
 *    reads is copied into a buffer, bounded by the maximum frame length.
 *    The frame pointer is valid only during your callback.
 *    Closing or aborting the transport from a callback stops delivery at
 *    once (the rest of that read is dropped, as the transport drops what
 *    it has not read). Pausing reading does not: the frames already read
 *    are still delivered, so a pause takes effect at the next read.
 *
 * Ownership: the receiver struct is yours (embed it, allocate it in a
 * factory's build function); give &x.proto to braid (factory, connect, or
 * braid_memory_transport_create). The receiver frees its own buffer before
 * calling your connection_lost, which is the place to free the struct.
 */
#ifndef BRAID_BASIC_H
#define BRAID_BASIC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "braid/transport.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------------
 * Lines
 * ------------------------------------------------------------------------ */

#define BRAID_LINE_DELIMITER_MAX 8
#define BRAID_LINE_MAX_DEFAULT                                                 \
  16384 /* as Twisted's LineReceiver.MAX_LENGTH                                \
         */

typedef struct braid_line_parser {
  int error;       /* set when -1 is returned */
  size_t scanned_; /* private: bytes known not to start a delimiter */
} braid_line_parser_t;

/* Find the first line in buf: the bytes before the first occurrence of
 * `delim` (1..8 bytes). Returns the bytes used including the delimiter
 * (the line is buf[0 .. ret - dlen)), -2 if buf holds no delimiter yet, or
 * -1 with st->error = BRAID_ELIMIT once the line is known to be longer
 * than `max_len` bytes (even before its delimiter arrives: a caller never
 * needs to hold more than max_len + dlen - 1 bytes of one line), or
 * BRAID_EINVAL for a bad delimiter. */
ptrdiff_t braid_line_parse(braid_line_parser_t *st, const void *buf, size_t len,
                           const void *delim, size_t dlen, size_t max_len);

typedef struct braid_line_receiver braid_line_receiver_t;

typedef struct braid_line_receiver_ops {
  /* Optional. The transport is braid_line_receiver_transport(lr). */
  void (*connection_made)(braid_line_receiver_t *lr);
  /* One line, without its delimiter and not NUL-terminated. */
  void (*line_received)(braid_line_receiver_t *lr, const char *line,
                        size_t len);
  /* Bytes received in raw mode (braid_line_receiver_set_raw_mode).
   * Required if raw mode is used. */
  void (*raw_data_received)(braid_line_receiver_t *lr, const void *data,
                            size_t len);
  /* A line passed the maximum length. NULL: close the connection
   * (Twisted's lineLengthExceeded). When set, the rest of the over-long
   * line is skipped without being buffered and parsing goes on at the next
   * line, unless the callback closes the connection (a server can answer
   * "line too long" and carry on, as SMTP servers do). */
  void (*line_too_long)(braid_line_receiver_t *lr);
  /* As in braid_protocol_ops; eof_received NULL means "close". */
  void (*eof_received)(braid_line_receiver_t *lr);
  void (*connection_lost)(braid_line_receiver_t *lr, int reason);
  void (*pause_writing)(braid_line_receiver_t *lr);
  void (*resume_writing)(braid_line_receiver_t *lr);
} braid_line_receiver_ops;

/* Set up with braid_line_receiver_init (the settings are then the
 * defaults: "\r\n", 16384 bytes). Fields ending in '_' are private. */
struct braid_line_receiver {
  braid_protocol_t proto; /* hand &lr->proto to braid */
  const braid_line_receiver_ops *ops;
  void *user;
  char delim_[BRAID_LINE_DELIMITER_MAX];
  uint8_t dlen_;      /* 0: "\r\n" */
  uint8_t raw_;       /* in raw mode */
  uint8_t skipping_;  /* skipping the rest of an over-long line */
  size_t max_len_;    /* 0: BRAID_LINE_MAX_DEFAULT */
  uint64_t raw_left_; /* raw bytes to go before line mode returns */
  size_t skipped_;    /* bytes of the over-long line seen so far */
  char *buf_;         /* a partial line */
  size_t buf_len_, buf_cap_;
  braid_line_parser_t st_; /* the parser state over buf_ */
};

/* Set up `lr` (zero-fills it) for use with `ops`. */
void braid_line_receiver_init(braid_line_receiver_t *lr,
                              const braid_line_receiver_ops *ops, void *user);

/* The delimiter, 1..BRAID_LINE_DELIMITER_MAX bytes (BRAID_EINVAL
 * otherwise). Change it between lines: from line_received, the new
 * delimiter applies to the bytes after the current line. */
int braid_line_receiver_set_delimiter(braid_line_receiver_t *lr,
                                      const void *delim, size_t len);

/* The longest line accepted, delimiter excluded; 0 restores the default.
 * It applies from the line being received on. */
int braid_line_receiver_set_max_length(braid_line_receiver_t *lr, size_t max);

/* Deliver the next `count` bytes to raw_data_received, then go back to
 * line mode by itself (count = BRAID_RAW_UNLIMITED: until set_line_mode).
 * Called from line_received, the switch happens right after the current
 * line: the rest of the same read goes raw. A counted switch is exact to
 * the byte, as an HTTP body with a Content-Length needs; bytes after the
 * count in the same read are parsed as lines again. */
#define BRAID_RAW_UNLIMITED UINT64_MAX
int braid_line_receiver_set_raw_mode(braid_line_receiver_t *lr, uint64_t count);

/* Back to line mode. Called from raw_data_received, it applies to the
 * bytes after the ones that call was given. */
int braid_line_receiver_set_line_mode(braid_line_receiver_t *lr);

/* Whether the receiver is in raw mode. */
bool braid_line_receiver_raw(const braid_line_receiver_t *lr);

/* Write `line` followed by the delimiter (one writev). */
int braid_line_receiver_send_line(braid_line_receiver_t *lr, const void *line,
                                  size_t len);

/* The transport (NULL before connection_made). */
braid_transport_t *braid_line_receiver_transport(braid_line_receiver_t *lr);

/* ------------------------------------------------------------------------
 * Strings: netstrings and length-prefixed messages
 * ------------------------------------------------------------------------ */

typedef enum braid_framing {
  BRAID_NETSTRING = 0, /* "12:hello world!," (cr.yp.to/proto/netstrings) */
  BRAID_INT8 = 1,      /* 1-byte length prefix (Twisted's Int8StringReceiver) */
  BRAID_INT16 = 2,     /* 2-byte big-endian prefix */
  BRAID_INT32 = 4      /* 4-byte big-endian prefix */
} braid_framing;

#define BRAID_STRING_MAX_DEFAULT 99999 /* as Twisted's NetstringReceiver */

typedef struct braid_string_parser {
  int error;      /* set when -1 is returned */
  uint8_t state_; /* private: 0 header, 1 header done */
  size_t pos_;    /* private: header bytes checked */
  uint64_t len_;  /* private: payload length so far / parsed */
} braid_string_parser_t;

/* One netstring at the start of buf. On success returns the bytes used and
 * sets *payload (a pointer into buf) and *plen. Errors (-1, st->error):
 * BRAID_EPROTO for a non-digit, a leading zero ("01:"), an empty length
 * (":"), or a missing ',' after the payload; BRAID_ELIMIT as soon as the
 * announced length exceeds max_len. */
ptrdiff_t braid_netstring_parse(braid_string_parser_t *st, const void *buf,
                                size_t len, size_t max_len,
                                const void **payload, size_t *plen);

/* One length-prefixed message (`framing` BRAID_INT8/16/32); same returns.
 * BRAID_ELIMIT when the prefix exceeds max_len, BRAID_EINVAL for another
 * framing. */
ptrdiff_t braid_prefixed_parse(braid_string_parser_t *st, braid_framing framing,
                               const void *buf, size_t len, size_t max_len,
                               const void **payload, size_t *plen);

/* Either of the two, by `framing`. */
ptrdiff_t braid_string_parse(braid_string_parser_t *st, braid_framing framing,
                             const void *buf, size_t len, size_t max_len,
                             const void **payload, size_t *plen);

/* Encode a header for a `len`-byte string into out (at least
 * BRAID_STRING_HEADER_MAX bytes). Returns its length; BRAID_EMSGSIZE when
 * the prefix cannot represent len. A netstring also needs a trailing ','. */
#define BRAID_STRING_HEADER_MAX 24
int braid_string_header(braid_framing framing, size_t len, char *out);

typedef struct braid_string_receiver braid_string_receiver_t;

typedef struct braid_string_receiver_ops {
  void (*connection_made)(braid_string_receiver_t *sr);
  /* One complete string. */
  void (*string_received)(braid_string_receiver_t *sr, const void *data,
                          size_t len);
  /* Malformed input (BRAID_EPROTO), a string over the maximum
   * (BRAID_ELIMIT), or no memory to collect a split string (BRAID_ENOMEM).
   * The stream cannot be resynchronised, so everything after it is
   * ignored. NULL: close the connection (as Twisted; abort for ENOMEM). */
  void (*string_error)(braid_string_receiver_t *sr, int err);
  void (*eof_received)(braid_string_receiver_t *sr);
  void (*connection_lost)(braid_string_receiver_t *sr, int reason);
  void (*pause_writing)(braid_string_receiver_t *sr);
  void (*resume_writing)(braid_string_receiver_t *sr);
} braid_string_receiver_ops;

/* Set up with braid_string_receiver_init. Fields ending in '_' are
 * private. */
struct braid_string_receiver {
  braid_protocol_t proto; /* hand &sr->proto to braid */
  const braid_string_receiver_ops *ops;
  void *user;
  braid_framing framing_;
  size_t max_len_; /* 0: BRAID_STRING_MAX_DEFAULT */
  uint8_t failed_; /* malformed input seen: ignore the rest */
  char *buf_;      /* a partial string */
  size_t buf_len_, buf_cap_;
  braid_string_parser_t st_;
};

/* Set up `sr` (zero-fills it). BRAID_EINVAL for an unknown framing. */
int braid_string_receiver_init(braid_string_receiver_t *sr,
                               braid_framing framing,
                               const braid_string_receiver_ops *ops,
                               void *user);

/* The longest string accepted (0: the default). For prefixed framings it
 * is also capped by what the prefix can say. */
int braid_string_receiver_set_max_length(braid_string_receiver_t *sr,
                                         size_t max);

/* Write one framed string (one writev: header, data, and ',' for a
 * netstring). BRAID_EMSGSIZE if the prefix cannot represent len. The
 * receiver's own maximum is not applied: the peer's may differ. */
int braid_string_receiver_send(braid_string_receiver_t *sr, const void *data,
                               size_t len);

braid_transport_t *braid_string_receiver_transport(braid_string_receiver_t *sr);

#ifdef __cplusplus
}
#endif
#endif
