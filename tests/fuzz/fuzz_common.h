/* Shared helpers for the HTTP parser fuzz targets: result snapshots with
 * views turned into offsets, so results from different buffers (a prefix
 * copy, a moved buffer) can be compared. A broken invariant aborts, which
 * libFuzzer reports as a crash with the input that caused it. */
#ifndef BRAID_FUZZ_COMMON_H
#define BRAID_FUZZ_COMMON_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "braid/http_parser.h"

#define FUZZ_MAXH 16

#define CHECK(cond)                                                            \
  do {                                                                         \
    if (!(cond)) {                                                             \
      fprintf(stderr, "%s:%d: invariant failed: %s\n", __FILE__, __LINE__,     \
              #cond);                                                          \
      abort();                                                                 \
    }                                                                          \
  } while (0)

struct fz_view {
  long off;
  size_t len;
};

struct fz_snap {
  int r, status, minor, code, body;
  uint64_t cl;
  int ka, expect;
  struct fz_view a, b, c, d; /* method/target/host/upgrade or reason/upgrade */
  size_t nh;
  struct fz_view hn[FUZZ_MAXH], hv[FUZZ_MAXH];
};

/* The view must lie inside base[0..n); returns it as an offset. */
static inline struct fz_view fz_view(braid_http_view_t v, const char *base,
                                     size_t n) {
  struct fz_view s = {-1, 0};
  if (v.ptr != NULL) {
    CHECK(v.ptr >= base && v.len <= n && v.ptr - base <= (long)(n - v.len));
    s.off = (long)(v.ptr - base);
    s.len = v.len;
  } else {
    CHECK(v.len == 0);
  }
  return s;
}

/* A 32-bit hash of the input, to pick split points. */
static inline uint32_t fz_hash(const uint8_t *d, size_t n) {
  uint32_t h = 2166136261u;
  for (size_t i = 0; i < n; i++)
    h = (h ^ d[i]) * 16777619u;
  return h;
}

static inline char *fz_dup(const uint8_t *d, size_t n) {
  char *p = malloc(n ? n : 1);
  CHECK(p != NULL);
  if (n)
    memcpy(p, d, n);
  return p;
}

/* First byte: limits. Small limits make the limit paths reachable. */
static inline void fz_limits(uint8_t b, braid_http_limits_t *lim) {
  memset(lim, 0, sizeof *lim);
  if (b & 1) {
    lim->max_start_line = 8 + (size_t)(b >> 4) * 4;
    lim->max_header_bytes = 16 + (size_t)(b >> 2) * 3;
    lim->max_headers = 1 + (size_t)((b >> 2) & 7);
  }
  if (b & 2)
    lim->flags |= BRAID_HTTP_STRICT_CRLF;
}

#endif
