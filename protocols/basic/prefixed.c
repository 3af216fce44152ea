/* Length-prefixed messages: a 1, 2 or 4-byte big-endian length, then the
 * bytes (Twisted's Int8StringReceiver, Int16StringReceiver and
 * Int32StringReceiver). Network byte order, as Twisted's "!B", "!H", "!I"
 * struct formats. */
#include <stdio.h>

#include "braid/basic.h"

ptrdiff_t braid_prefixed_parse(braid_string_parser_t *st, braid_framing framing,
                               const void *buf, size_t len, size_t max_len,
                               const void **payload, size_t *plen) {
  const unsigned char *b = buf;
  size_t k = (size_t)framing;
  if ((framing != BRAID_INT8 && framing != BRAID_INT16 &&
       framing != BRAID_INT32) ||
      (buf == NULL && len > 0)) {
    st->error = BRAID_EINVAL;
    return -1;
  }
  if (st->state_ == 0) {
    if (len < k)
      return -2;
    uint32_t n = 0;
    for (size_t i = 0; i < k; i++)
      n = (n << 8) | b[i];
    if (n > max_len || n > (size_t)PTRDIFF_MAX - k) {
      st->error = BRAID_ELIMIT;
      return -1;
    }
    /* Remember the header so a caller waiting for the body knows how
     * many bytes to wait for. */
    st->state_ = 1;
    st->pos_ = k;
    st->len_ = n;
  }
  size_t total = st->pos_ + (size_t)st->len_;
  if (len < total)
    return -2;
  if (payload != NULL)
    *payload = b + st->pos_;
  if (plen != NULL)
    *plen = (size_t)st->len_;
  return (ptrdiff_t)total;
}

ptrdiff_t braid_string_parse(braid_string_parser_t *st, braid_framing framing,
                             const void *buf, size_t len, size_t max_len,
                             const void **payload, size_t *plen) {
  if (framing == BRAID_NETSTRING)
    return braid_netstring_parse(st, buf, len, max_len, payload, plen);
  return braid_prefixed_parse(st, framing, buf, len, max_len, payload, plen);
}

int braid_string_header(braid_framing framing, size_t len, char *out) {
  switch (framing) {
  case BRAID_NETSTRING:
    return snprintf(out, BRAID_STRING_HEADER_MAX, "%zu:", len);
  case BRAID_INT8:
    if (len > 0xffu)
      return BRAID_EMSGSIZE;
    out[0] = (char)len;
    return 1;
  case BRAID_INT16:
    if (len > 0xffffu)
      return BRAID_EMSGSIZE;
    out[0] = (char)(len >> 8);
    out[1] = (char)len;
    return 2;
  case BRAID_INT32:
    if (len > 0xffffffffu)
      return BRAID_EMSGSIZE;
    out[0] = (char)(len >> 24);
    out[1] = (char)(len >> 16);
    out[2] = (char)(len >> 8);
    out[3] = (char)len;
    return 4;
  }
  return BRAID_EINVAL;
}
