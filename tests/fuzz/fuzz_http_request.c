/* libFuzzer target: braid_http_parse_request.
 * Input: byte 0 picks the limits, the rest is the message. Checks that the
 * result is in range, that every view lies in the input, and that parsing a
 * random prefix (fresh, and with the resume hint) agrees with the whole. */
#include "fuzz_common.h"

static void snap(struct fz_snap *s, int r, const braid_http_request_t *q,
                 const char *base, size_t n) {
  memset(s, 0, sizeof *s);
  s->r = r;
  s->status = q->error_status;
  CHECK(r >= BRAID_HTTP_INCOMPLETE);
  if (r == BRAID_HTTP_ERROR) {
    CHECK(s->status == 400 || s->status == 414 || s->status == 431 ||
          s->status == 501 || s->status == 505);
    return;
  }
  CHECK(s->status == 0);
  if (r < 0)
    return;
  CHECK((size_t)r <= n && r > 0);
  CHECK(q->minor_version >= 0 && q->minor_version <= 9);
  CHECK(q->body_kind == BRAID_HTTP_BODY_NONE ||
        q->body_kind == BRAID_HTTP_BODY_LENGTH ||
        q->body_kind == BRAID_HTTP_BODY_CHUNKED);
  s->minor = q->minor_version;
  s->body = q->body_kind;
  s->cl = q->content_length;
  s->ka = q->keep_alive;
  s->expect = q->expect_continue;
  s->a = fz_view(q->method, base, (size_t)r);
  s->b = fz_view(q->target, base, (size_t)r);
  s->c = fz_view(q->host, base, (size_t)r);
  s->d = fz_view(q->upgrade, base, (size_t)r);
  CHECK(s->a.len > 0 && s->b.len > 0);
  CHECK(q->num_headers <= FUZZ_MAXH);
  s->nh = q->num_headers;
  for (size_t i = 0; i < s->nh; i++) {
    s->hn[i] = fz_view(q->headers[i].name, base, (size_t)r);
    s->hv[i] = fz_view(q->headers[i].value, base, (size_t)r);
    CHECK(s->hn[i].len > 0);
  }
}

static int parse(const char *p, size_t n, braid_http_request_t *q,
                 braid_http_header_t *h, const braid_http_limits_t *lim,
                 int fresh) {
  if (fresh) {
    memset(q, 0, sizeof *q);
    q->headers = h;
    q->headers_cap = FUZZ_MAXH;
  }
  return braid_http_parse_request(p, n, q, lim);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1)
    return 0;
  braid_http_limits_t lim;
  fz_limits(data[0], &lim);
  data++;
  size--;
  uint32_t h = fz_hash(data, size);
  size_t k1 = size ? h % (size + 1) : 0;
  size_t k2 = k1 + (size - k1 ? (h >> 16) % (size - k1 + 1) : 0);

  static braid_http_header_t hdrs[FUZZ_MAXH];
  braid_http_request_t q;
  struct fz_snap whole, s;

  char *all = fz_dup(data, size);
  int r = parse(all, size, &q, hdrs, &lim, 1);
  snap(&whole, r, &q, all, size);

  /* A prefix, fresh: INCOMPLETE or the same answer. */
  char *pre = fz_dup(data, k1);
  r = parse(pre, k1, &q, hdrs, &lim, 1);
  if (r != BRAID_HTTP_INCOMPLETE) {
    snap(&s, r, &q, pre, k1);
    CHECK(memcmp(&s, &whole, sizeof s) == 0);
  } else {
    CHECK(k1 < size || whole.r == BRAID_HTTP_INCOMPLETE);
  }

  /* Three calls with the hint (k1, k2, whole), each in its own buffer,
   * as a caller that grows its buffer with realloc would make them. */
  char *mid = fz_dup(data, k2);
  r = parse(pre, k1, &q, hdrs, &lim, 1);
  if (r == BRAID_HTTP_INCOMPLETE) {
    r = parse(mid, k2, &q, hdrs, &lim, 0);
    if (r != BRAID_HTTP_INCOMPLETE) {
      snap(&s, r, &q, mid, k2);
    } else {
      r = parse(all, size, &q, hdrs, &lim, 0);
      snap(&s, r, &q, all, size);
    }
    CHECK(memcmp(&s, &whole, sizeof s) == 0);
  }
  free(all);
  free(pre);
  free(mid);
  return 0;
}
