/* libFuzzer target for the basic framing parsers: braid_line_parse,
 * braid_netstring_parse and braid_prefixed_parse (INT8/16/32).
 *
 * Input: byte 0 picks the parser and the maximum length, byte 1 the
 * delimiter length (lines), then for lines the delimiter bytes, then the
 * stream. Each frame is parsed twice: from the whole remaining buffer at
 * once, and incrementally, growing the buffer one split at a time with the
 * same state, as a receiver does. The two must agree exactly (the -2
 * contract: "call again with the same bytes plus more"), and every answer is
 * checked against what the grammar says. Every buffer handed to a parser is
 * an exact-size heap copy, so a read past its end is an ASan report. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "braid/basic.h"

#define CHECK(cond)                                                            \
  do {                                                                         \
    if (!(cond)) {                                                             \
      fprintf(stderr, "%s:%d: invariant failed: %s\n", __FILE__, __LINE__,     \
              #cond);                                                          \
      abort();                                                                 \
    }                                                                          \
  } while (0)

typedef struct result {
  ptrdiff_t r;
  int error;
  size_t poff, plen; /* payload offset and length (strings) */
} result;

static char *dup_exact(const uint8_t *d, size_t n) {
  char *p = malloc(n ? n : 1);
  CHECK(p != NULL);
  if (n)
    memcpy(p, d, n);
  return p;
}

/* One parse of buf[0..n) with state st; the buffer is a fresh copy. */
static result parse_once(int kind, void *st, const uint8_t *d, size_t n,
                         const char *delim, size_t dlen, size_t max) {
  result res = {0, 0, 0, 0};
  char *b = dup_exact(d, n);
  if (kind == 0) {
    braid_line_parser_t *lp = st;
    res.r = braid_line_parse(lp, b, n, delim, dlen, max);
    res.error = res.r == -1 ? lp->error : 0;
  } else {
    braid_string_parser_t *sp = st;
    const void *pl = NULL;
    size_t plen = 0;
    static const braid_framing fr[] = {BRAID_NETSTRING, BRAID_INT8, BRAID_INT16,
                                       BRAID_INT32};
    res.r = braid_string_parse(sp, fr[kind - 1], b, n, max, &pl, &plen);
    res.error = res.r == -1 ? sp->error : 0;
    if (res.r >= 0) {
      const char *p = pl;
      CHECK(p >= b && plen <= n && (size_t)(p - b) + plen <= (size_t)res.r);
      res.poff = (size_t)(p - b);
      res.plen = plen;
    }
  }
  free(b);
  CHECK(res.r >= -2 && res.r <= (ptrdiff_t)n);
  CHECK(res.r != 0);
  if (res.r == -1)
    CHECK(res.error == BRAID_ELIMIT || res.error == BRAID_EPROTO);
  return res;
}

/* The grammar, checked on a complete answer. */
static void check_frame(int kind, const uint8_t *d, size_t n, result res,
                        const char *delim, size_t dlen, size_t max) {
  size_t used = (size_t)res.r;
  if (kind == 0) {
    /* The line ends at the first delimiter and is within the limit. */
    CHECK(used >= dlen && used - dlen <= max);
    CHECK(memcmp(d + used - dlen, delim, dlen) == 0);
    for (size_t i = 0; i + dlen < used; i++)
      CHECK(memcmp(d + i, delim, dlen) != 0);
    return;
  }
  CHECK(res.plen <= max);
  if (kind == 1) {
    /* "<len>:<payload>," with no leading zero. */
    size_t i = 0, len = 0;
    while (i < n && d[i] >= '0' && d[i] <= '9')
      len = len * 10 + (size_t)(d[i++] - '0');
    CHECK(i >= 1 && (i == 1 || d[0] != '0') && d[i] == ':');
    CHECK(len == res.plen && res.poff == i + 1);
    CHECK(used == i + 1 + len + 1 && d[used - 1] == ',');
  } else {
    size_t w = kind == 2 ? 1 : kind == 3 ? 2 : 4, len = 0;
    for (size_t i = 0; i < w; i++)
      len = (len << 8) | d[i];
    CHECK(res.poff == w && res.plen == len && used == w + len);
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 2)
    return 0;
  int kind = data[0] % 5; /* line, netstring, int8, int16, int32 */
  /* Small maxima reach the limit paths; 255 + 65536 go past a prefix's
   * own range. */
  static const size_t maxes[] = {0, 1, 3, 7, 16, 255, 65536, 99999};
  size_t max = maxes[(data[0] / 5) % 8];
  size_t dlen = 1 + data[1] % BRAID_LINE_DELIMITER_MAX;
  data += 2;
  size -= 2;
  char delim[BRAID_LINE_DELIMITER_MAX];
  if (kind == 0) {
    if (size < dlen)
      return 0;
    memcpy(delim, data, dlen);
    data += dlen;
    size -= dlen;
  }
  uint32_t h = 2166136261u; /* split points: a hash of the input */
  for (size_t i = 0; i < size; i++)
    h = (h ^ data[i]) * 16777619u;

  size_t off = 0;
  for (int frames = 0; frames < 64 && off <= size; frames++) {
    const uint8_t *d = data + off;
    size_t n = size - off;
    union {
      braid_line_parser_t l;
      braid_string_parser_t s;
    } whole, inc;
    memset(&whole, 0, sizeof whole);
    memset(&inc, 0, sizeof inc);
    result a = parse_once(kind, &whole, d, n, delim, dlen, max);

    /* Incremental: grow by hash-chosen steps; stop at the first answer
     * that is not "need more". */
    result b = {-2, 0, 0, 0};
    size_t have = 0;
    while (have < n) {
      h = h * 1103515245u + 12345u;
      size_t step = 1 + (h >> 16) % 17;
      have = have + step < n ? have + step : n;
      b = parse_once(kind, &inc, d, have, delim, dlen, max);
      if (b.r != -2)
        break;
    }
    if (n == 0)
      b = parse_once(kind, &inc, d, 0, delim, dlen, max);
    CHECK(a.r == b.r && a.error == b.error && a.poff == b.poff &&
          a.plen == b.plen);
    if (a.r == -1 && a.error == BRAID_ELIMIT && kind == 0) {
      /* Too long only once max + dlen bytes hold no delimiter that ends a
       * line within the limit. */
      CHECK(n >= max + dlen);
      for (size_t i = 0; i <= max; i++)
        CHECK(memcmp(d + i, delim, dlen) != 0);
    }
    if (a.r == -2 && kind == 0) {
      /* Need more: no delimiter in the bytes seen yet. */
      for (size_t i = 0; i + dlen <= n; i++)
        CHECK(memcmp(d + i, delim, dlen) != 0);
    }
    if (a.r < 0)
      break;
    check_frame(kind, d, n, a, delim, dlen, max);
    off += (size_t)a.r;
  }
  return 0;
}
