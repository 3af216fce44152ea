/* libFuzzer target: braid_http_parse_response.
 * Input: byte 0 picks the limits (and bits 2-3 of byte 0 also set
 * request_was_head / request_was_connect), the rest is the message. */
#include "fuzz_common.h"

static void snap(struct fz_snap *s, int r, const braid_http_response_t *q,
                 const char *base, size_t n) {
  memset(s, 0, sizeof *s);
  s->r = r;
  s->status = q->error_status;
  CHECK(r >= BRAID_HTTP_INCOMPLETE);
  if (r == BRAID_HTTP_ERROR) {
    CHECK(s->status == 400 || s->status == 431 || s->status == 501 ||
          s->status == 505);
    return;
  }
  CHECK(s->status == 0);
  if (r < 0)
    return;
  CHECK((size_t)r <= n && r >= 14);
  CHECK(q->status >= 100 && q->status <= 599);
  CHECK(q->body_kind >= BRAID_HTTP_BODY_NONE &&
        q->body_kind <= BRAID_HTTP_BODY_UNTIL_CLOSE);
  CHECK(!(q->body_kind == BRAID_HTTP_BODY_UNTIL_CLOSE && q->keep_alive));
  s->minor = q->minor_version;
  s->code = q->status;
  s->body = q->body_kind;
  s->cl = q->content_length;
  s->ka = q->keep_alive;
  s->a = fz_view(q->reason, base, (size_t)r);
  s->b = fz_view(q->upgrade, base, (size_t)r);
  CHECK(q->num_headers <= FUZZ_MAXH);
  s->nh = q->num_headers;
  for (size_t i = 0; i < s->nh; i++) {
    s->hn[i] = fz_view(q->headers[i].name, base, (size_t)r);
    s->hv[i] = fz_view(q->headers[i].value, base, (size_t)r);
    CHECK(s->hn[i].len > 0);
  }
}

static int parse(const char *p, size_t n, braid_http_response_t *q,
                 braid_http_header_t *h, const braid_http_limits_t *lim,
                 uint8_t flags, int fresh) {
  if (fresh) {
    memset(q, 0, sizeof *q);
    q->headers = h;
    q->headers_cap = FUZZ_MAXH;
    q->request_was_head = (flags & 4) != 0;
    q->request_was_connect = (flags & 8) != 0;
  }
  return braid_http_parse_response(p, n, q, lim);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1)
    return 0;
  uint8_t flags = data[0];
  braid_http_limits_t lim;
  fz_limits(flags, &lim);
  data++;
  size--;
  uint32_t h = fz_hash(data, size);
  size_t k1 = size ? h % (size + 1) : 0;
  size_t k2 = k1 + (size - k1 ? (h >> 16) % (size - k1 + 1) : 0);

  static braid_http_header_t hdrs[FUZZ_MAXH];
  braid_http_response_t q;
  struct fz_snap whole, s;

  char *all = fz_dup(data, size);
  int r = parse(all, size, &q, hdrs, &lim, flags, 1);
  snap(&whole, r, &q, all, size);

  char *pre = fz_dup(data, k1);
  r = parse(pre, k1, &q, hdrs, &lim, flags, 1);
  if (r != BRAID_HTTP_INCOMPLETE) {
    snap(&s, r, &q, pre, k1);
    CHECK(memcmp(&s, &whole, sizeof s) == 0);
  } else {
    CHECK(k1 < size || whole.r == BRAID_HTTP_INCOMPLETE);
  }

  char *mid = fz_dup(data, k2);
  r = parse(pre, k1, &q, hdrs, &lim, flags, 1);
  if (r == BRAID_HTTP_INCOMPLETE) {
    r = parse(mid, k2, &q, hdrs, &lim, flags, 0);
    if (r != BRAID_HTTP_INCOMPLETE) {
      snap(&s, r, &q, mid, k2);
    } else {
      r = parse(all, size, &q, hdrs, &lim, flags, 0);
      snap(&s, r, &q, all, size);
    }
    CHECK(memcmp(&s, &whole, sizeof s) == 0);
  }
  free(all);
  free(pre);
  free(mid);
  return 0;
}
