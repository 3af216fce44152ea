/* braid: in-place decoder for the chunked transfer coding (RFC 9112
 * section 7.1).
 *
 *   chunked-body = *chunk last-chunk trailer-section CRLF
 *   chunk        = chunk-size [ chunk-ext ] CRLF chunk-data CRLF
 *   last-chunk   = 1*("0") [ chunk-ext ] CRLF
 *
 * A byte-driven state machine for the framing, with the chunk data moved in
 * bulk: the decoded data only ever moves towards the front of the buffer,
 * over framing bytes already read, so one memmove per chunk piece does it.
 * Because every state is kept in the decoder, input may be cut anywhere.
 */
#include "braid/http_parser.h"

#include <string.h>

#include "protocols/http/internal.h"

#define DEFAULT_MAX_EXT 1024
#define DEFAULT_MAX_TRAILER 8192
/* 16 hex digits hold any 64-bit size; more is refused even when they are
 * leading zeros, so the digit count alone bounds the line. */
#define MAX_SIZE_DIGITS 16

enum {
  ST_SIZE = 0, /* hex digits of chunk-size (the zero-filled state) */
  ST_SIZE_WS,  /* BWS after the size, before ';' */
  ST_EXT,      /* chunk extensions up to CR */
  ST_SIZE_LF,  /* LF after the size line's CR */
  ST_DATA,     /* chunk data: remaining_ bytes to go */
  ST_DATA_CR,  /* CR after the data */
  ST_DATA_LF,  /* LF after the data */
  ST_TRAILER,  /* start of a trailer line, or of the final CRLF */
  ST_TRAILER_NAME,
  ST_TRAILER_VALUE,
  ST_TRAILER_LF, /* LF ending a trailer line */
  ST_END_LF,     /* LF of the final CRLF */
  ST_DONE,
  ST_ERROR,
};

static int hexval(unsigned char c) {
  if (c >= '0' && c <= '9')
    return c - '0';
  c = (unsigned char)(c | 0x20);
  if (c >= 'a' && c <= 'f')
    return c - 'a' + 10;
  return -1;
}

static bool is_ctl(unsigned char c) {
  return (c < 0x20 && c != '\t') || c == 0x7f;
}

bool braid_http_chunked_done(const braid_http_chunked_decoder_t *dec) {
  return dec->state_ == ST_DONE;
}

ptrdiff_t braid_http_decode_chunked(braid_http_chunked_decoder_t *dec,
                                    char *buf, size_t *len) {
  size_t n = *len, src = 0, dst = 0;
  size_t max_ext = dec->max_ext_len ? dec->max_ext_len : DEFAULT_MAX_EXT;
  size_t max_tr =
      dec->max_trailer_bytes ? dec->max_trailer_bytes : DEFAULT_MAX_TRAILER;
  unsigned state = dec->state_;

  if (state == ST_ERROR) {
    *len = 0;
    return BRAID_HTTP_ERROR;
  }
  if (state == ST_DONE) {
    *len = 0;
    return (ptrdiff_t)n;
  }

  while (src < n) {
    if (state == ST_DATA) {
      size_t take = n - src;
      if (dec->remaining_ < take)
        take = (size_t)dec->remaining_;
      if (dst != src)
        memmove(buf + dst, buf + src, take);
      dst += take;
      src += take;
      dec->remaining_ -= take;
      if (dec->remaining_ == 0)
        state = ST_DATA_CR;
      continue;
    }

    unsigned char c = (unsigned char)buf[src++];
    switch (state) {
    case ST_SIZE: {
      int v = hexval(c);
      if (v >= 0) {
        if (dec->count_ == MAX_SIZE_DIGITS)
          goto fail;
        dec->remaining_ = (dec->remaining_ << 4) | (unsigned)v;
        dec->count_++;
        break;
      }
      if (dec->count_ == 0)
        goto fail;
      dec->count_ = 0; /* now counts extension bytes */
      if (c == '\r') {
        state = ST_SIZE_LF;
      } else if (c == ';' || c == ' ' || c == '\t') {
        state = c == ';' ? ST_EXT : ST_SIZE_WS;
        if (++dec->count_ > max_ext)
          goto fail;
      } else {
        goto fail;
      }
      break;
    }
    case ST_SIZE_WS:
      if (c == ';')
        state = ST_EXT;
      else if (c != ' ' && c != '\t')
        goto fail; /* BWS is only allowed before an extension */
      if (++dec->count_ > max_ext)
        goto fail;
      break;
    case ST_EXT:
      /* Extensions are ignored, but a CR or LF inside one must not be
       * read as the end of the line by us and not by someone else. */
      if (c == '\r') {
        state = ST_SIZE_LF;
        break;
      }
      if (is_ctl(c) || ++dec->count_ > max_ext)
        goto fail;
      break;
    case ST_SIZE_LF:
      if (c != '\n')
        goto fail;
      dec->count_ = 0;
      state = dec->remaining_ == 0 ? ST_TRAILER : ST_DATA;
      break;
    case ST_DATA_CR:
      if (c != '\r')
        goto fail;
      state = ST_DATA_LF;
      break;
    case ST_DATA_LF:
      if (c != '\n')
        goto fail;
      dec->count_ = 0;
      dec->remaining_ = 0;
      state = ST_SIZE;
      break;
    default:
      /* The trailer section: count every byte against the limit. */
      if (++dec->count_ > max_tr)
        goto fail;
      switch (state) {
      case ST_TRAILER:
        if (c == '\r')
          state = ST_END_LF;
        else if (BRAID__HTTP_IS(BRAID__HTTP_TCHAR, c))
          state = ST_TRAILER_NAME;
        else
          goto fail; /* obs-fold, empty name, bare LF */
        break;
      case ST_TRAILER_NAME:
        if (c == ':')
          state = ST_TRAILER_VALUE;
        else if (!BRAID__HTTP_IS(BRAID__HTTP_TCHAR, c))
          goto fail;
        break;
      case ST_TRAILER_VALUE:
        if (c == '\r')
          state = ST_TRAILER_LF;
        else if (!BRAID__HTTP_IS(BRAID__HTTP_FVCHAR, c))
          goto fail;
        break;
      case ST_TRAILER_LF:
        if (c != '\n')
          goto fail;
        state = ST_TRAILER;
        break;
      case ST_END_LF: {
        if (c != '\n')
          goto fail;
        size_t left = n - src;
        if (left > 0 && dst != src)
          memmove(buf + dst, buf + src, left);
        dec->state_ = ST_DONE;
        *len = dst;
        return (ptrdiff_t)left;
      }
      default:
        goto fail; /* cannot happen */
      }
      break;
    }
  }
  dec->state_ = (unsigned char)state;
  *len = dst;
  return BRAID_HTTP_INCOMPLETE;

fail:
  dec->state_ = ST_ERROR;
  *len = dst;
  return BRAID_HTTP_ERROR;
}
