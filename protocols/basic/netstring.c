/* The netstring parser ("12:hello world!,", cr.yp.to/proto/netstrings.txt).
 *
 * The length is checked against the maximum digit by digit, so a peer
 * cannot make braid buffer anything (or overflow a counter) by announcing a
 * huge string: "99999999999..." fails at the first digit that passes the
 * limit. */
#include "braid/basic.h"

static ptrdiff_t braid__ns_fail(braid_string_parser_t *st, int err) {
  st->error = err;
  return -1;
}

ptrdiff_t braid_netstring_parse(braid_string_parser_t *st, const void *buf,
                                size_t len, size_t max_len,
                                const void **payload, size_t *plen) {
  const unsigned char *b = buf;
  if (buf == NULL && len > 0)
    return braid__ns_fail(st, BRAID_EINVAL);
  if (st->state_ == 0) {
    size_t i = st->pos_;
    uint64_t v = st->len_;
    for (; i < len; i++) {
      unsigned ch = b[i];
      if (ch == ':') {
        if (i == 0)
          return braid__ns_fail(st, BRAID_EPROTO); /* ":" has no length */
        break;
      }
      if (ch < '0' || ch > '9')
        return braid__ns_fail(st, BRAID_EPROTO);
      /* The spec forbids leading zeros: "0:," is the only length that
       * starts with 0. */
      if (i == 1 && b[0] == '0')
        return braid__ns_fail(st, BRAID_EPROTO);
      unsigned digit = ch - '0';
      if (digit > max_len || v > ((uint64_t)max_len - digit) / 10u)
        return braid__ns_fail(st, BRAID_ELIMIT);
      v = v * 10u + digit;
    }
    st->pos_ = i;
    st->len_ = v;
    if (i == len)
      return -2;
    st->state_ = 1;
    st->pos_ = i + 1; /* the header, ':' included */
  }
  size_t hdr = st->pos_;
  size_t n = (size_t)st->len_;
  /* n <= max_len, but hdr + n + 1 may still pass what a ptrdiff_t can
   * report when max_len is near SIZE_MAX. */
  if (n > (size_t)PTRDIFF_MAX - hdr - 1)
    return braid__ns_fail(st, BRAID_ELIMIT);
  size_t total = hdr + n + 1;
  if (len < total)
    return -2;
  if (b[total - 1] != ',')
    return braid__ns_fail(st, BRAID_EPROTO);
  if (payload != NULL)
    *payload = b + hdr;
  if (plen != NULL)
    *plen = n;
  return (ptrdiff_t)total;
}
