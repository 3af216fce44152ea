/* libFuzzer target: braid_http_decode_chunked.
 * Input: byte 0 picks the limits, the rest is the body. Decodes it whole,
 * in two pieces at a random point and (for short inputs) byte by byte;
 * the data, the result and the left-over bytes must agree. Each piece is
 * in its own exactly-sized allocation so an over-read is caught. */
#include "fuzz_common.h"

struct out {
  ptrdiff_t r;
  char *data;
  size_t dlen;
  char *left;
  size_t llen;
};

static void feed(braid_http_chunked_decoder_t *dec, const uint8_t *d, size_t n,
                 struct out *o) {
  char *p = fz_dup(d, n);
  size_t len = n;
  ptrdiff_t r = braid_http_decode_chunked(dec, p, &len);
  CHECK(r >= BRAID_HTTP_INCOMPLETE);
  CHECK(len <= n);
  if (o->r == BRAID_HTTP_INCOMPLETE) {
    memcpy(o->data + o->dlen, p, len);
    o->dlen += len;
  } else {
    CHECK(len == 0);
  }
  if (r >= 0) {
    CHECK((size_t)r <= n - len);
    CHECK(braid_http_chunked_done(dec));
    memcpy(o->left + o->llen, p + len, (size_t)r);
    o->llen += (size_t)r;
    if (o->r == BRAID_HTTP_INCOMPLETE)
      o->r = 0;
  } else if (r == BRAID_HTTP_ERROR) {
    CHECK(o->r != 0);
    o->r = r;
  } else {
    CHECK(o->r == BRAID_HTTP_INCOMPLETE);
  }
  free(p);
}

static void init(struct out *o, size_t n) {
  o->r = BRAID_HTTP_INCOMPLETE;
  o->data = malloc(n + 1);
  o->left = malloc(n + 1);
  CHECK(o->data && o->left);
  o->dlen = o->llen = 0;
}

static void same(const struct out *a, const struct out *b) {
  CHECK(a->r == b->r);
  CHECK(a->dlen == b->dlen && memcmp(a->data, b->data, a->dlen) == 0);
  CHECK(a->llen == b->llen && memcmp(a->left, b->left, a->llen) == 0);
}

static void fini(struct out *o) {
  free(o->data);
  free(o->left);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1)
    return 0;
  braid_http_chunked_decoder_t cfg;
  memset(&cfg, 0, sizeof cfg);
  if (data[0] & 1) {
    cfg.max_ext_len = 1 + (data[0] >> 4);
    cfg.max_trailer_bytes = 1 + ((data[0] >> 1) & 7) * 5;
  }
  data++;
  size--;
  size_t k = size ? fz_hash(data, size) % (size + 1) : 0;

  struct out whole, two, bytes;
  braid_http_chunked_decoder_t dec;
  init(&whole, size);
  dec = cfg;
  feed(&dec, data, size, &whole);

  init(&two, size);
  dec = cfg;
  feed(&dec, data, k, &two);
  feed(&dec, data + k, size - k, &two);
  same(&whole, &two);

  if (size <= 512) {
    init(&bytes, size);
    dec = cfg;
    for (size_t i = 0; i < size; i++)
      feed(&dec, data + i, 1, &bytes);
    same(&whole, &bytes);
    fini(&bytes);
  }
  fini(&whole);
  fini(&two);
  return 0;
}
