/* libFuzzer target for the line receiver protocol (braid_line_receiver_t)
 * driven over the memory transport, with the input split at hash-chosen
 * points and with the protocol switching modes as the lines tell it.
 *
 * Input: byte 0 picks the maximum line length and whether line_too_long is
 * handled (skip the line) or not (close); the rest is the stream. A line
 * (or the byte ending a counted raw section) may be a command:
 *   R<n>  counted raw mode for n % 32 + 1 bytes
 *   U     raw mode until a raw chunk holding 'L' (then line mode)
 *   D<d>  the delimiter becomes the rest of the line (1..8 bytes)
 *   M<n>  the maximum line length becomes n (0: the default)
 *   P     pause reading (the harness resumes before the next feed)
 *   S     send the line back (exercises writes from a callback)
 *   X     close the connection
 * The stream is fed whole once and in pieces once. Checks:
 *  - every byte delivered, in order: the lines with the delimiter in force
 *    and the raw bytes rebuild the input (up to the first over-long line);
 *  - no delivered line holds its delimiter or passes the maximum;
 *  - the two runs see the same lines, raw bytes and events, unless the
 *    input used U (where the switch back depends on the chunking, as the
 *    API says). */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "braid/basic.h"
#include "braid/testing.h"

#define CHECK(cond)                                                            \
  do {                                                                         \
    if (!(cond)) {                                                             \
      fprintf(stderr, "%s:%d: invariant failed: %s\n", __FILE__, __LINE__,     \
              #cond);                                                          \
      abort();                                                                 \
    }                                                                          \
  } while (0)

typedef struct buf {
  char *p;
  size_t len, cap;
} buf;

static void buf_add(buf *b, const void *d, size_t n) {
  if (b->len + n > b->cap) {
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + n)
      cap *= 2;
    b->p = realloc(b->p, cap);
    CHECK(b->p != NULL);
    b->cap = cap;
  }
  if (n)
    memcpy(b->p + b->len, d, n);
  b->len += n;
}

typedef struct run {
  braid_line_receiver_t lr;
  buf log;     /* events, for comparing the two runs */
  buf rebuilt; /* the input as the callbacks saw it */
  char delim[BRAID_LINE_DELIMITER_MAX];
  size_t dlen, max;
  int too_long, closed, paused, unstable, used_settings, last_raw, lost;
  int unlimited; /* in raw mode from U */
} run;

static void log_event(run *u, char type, const void *d, size_t n) {
  /* Raw chunks are merged: their boundaries depend on the splits. */
  if (type == 'W' && u->last_raw) {
    buf_add(&u->log, d, n);
    return;
  }
  u->last_raw = type == 'W';
  uint32_t len = (uint32_t)n;
  buf_add(&u->log, &type, 1);
  if (type != 'W')
    buf_add(&u->log, &len, sizeof len);
  buf_add(&u->log, d, n);
}

static void on_line(braid_line_receiver_t *lr, const char *line, size_t len) {
  run *u = (run *)lr;
  CHECK(len <= u->max);
  for (size_t i = 0; i + u->dlen <= len; i++)
    CHECK(memcmp(line + i, u->delim, u->dlen) != 0);
  log_event(u, 'L', line, len);
  if (!u->too_long) {
    buf_add(&u->rebuilt, line, len);
    buf_add(&u->rebuilt, u->delim, u->dlen);
  }
  if (len == 0)
    return;
  switch (line[0]) {
  case 'R':
    CHECK(braid_line_receiver_set_raw_mode(
              lr, len > 1 ? (uint8_t)line[1] % 32 + 1 : 1) == 0);
    break;
  case 'U':
    CHECK(braid_line_receiver_set_raw_mode(lr, BRAID_RAW_UNLIMITED) == 0);
    u->unstable = 1;
    u->unlimited = 1;
    break;
  case 'D':
    if (len > 1) {
      size_t n = len - 1 > BRAID_LINE_DELIMITER_MAX ? BRAID_LINE_DELIMITER_MAX
                                                    : len - 1;
      CHECK(braid_line_receiver_set_delimiter(lr, line + 1, n) == 0);
      memcpy(u->delim, line + 1, n);
      u->dlen = n;
      u->used_settings = 1;
    }
    break;
  case 'M':
    if (len > 1) {
      size_t m = (uint8_t)line[1];
      CHECK(braid_line_receiver_set_max_length(lr, m) == 0);
      u->max = m ? m : BRAID_LINE_MAX_DEFAULT;
      u->used_settings = 1;
    }
    break;
  case 'P':
    CHECK(braid_transport_pause_reading(braid_line_receiver_transport(lr)) ==
          0);
    u->paused = 1;
    break;
  case 'S':
    CHECK(braid_line_receiver_send_line(lr, line, len) == 0);
    break;
  case 'X':
    CHECK(braid_transport_close(braid_line_receiver_transport(lr)) == 0);
    u->closed = 1;
    break;
  }
}

static void on_raw(braid_line_receiver_t *lr, const void *data, size_t len) {
  run *u = (run *)lr;
  CHECK(len > 0);
  log_event(u, 'W', data, len);
  if (!u->too_long)
    buf_add(&u->rebuilt, data, len);
  const char *c = data;
  if (u->unlimited) {
    if (memchr(c, 'L', len) != NULL) {
      CHECK(braid_line_receiver_set_line_mode(lr) == 0);
      u->unlimited = 0;
    }
  } else if (!braid_line_receiver_raw(lr) && c[len - 1] == 'R') {
    /* A counted section just ended on 'R': start another, from inside
     * the callback, as a chunked body does. */
    CHECK(braid_line_receiver_set_raw_mode(lr, 5) == 0);
  }
}

static void on_too_long(braid_line_receiver_t *lr) {
  run *u = (run *)lr;
  u->too_long = 1;
  log_event(u, 'T', NULL, 0);
}

static void on_lost(braid_line_receiver_t *lr, int reason) {
  run *u = (run *)lr;
  (void)reason;
  u->lost++;
}

static const braid_line_receiver_ops skip_ops = {
    .line_received = on_line,
    .raw_data_received = on_raw,
    .line_too_long = on_too_long,
    .connection_lost = on_lost,
};
static const braid_line_receiver_ops close_ops = {
    .line_received = on_line,
    .raw_data_received = on_raw,
    .connection_lost = on_lost,
};

static braid_reactor_t *reactor(void) {
  static braid_reactor_t *r;
  if (r == NULL)
    CHECK(braid_testing_reactor_create(&r) == 0);
  return r;
}

/* Feed data[0..n) in pieces whose sizes come from `seed` (0: at once). */
static void drive(run *u, uint8_t cfg, const uint8_t *data, size_t n,
                  uint32_t seed) {
  memset(u, 0, sizeof *u);
  braid_line_receiver_init(&u->lr, (cfg & 1) ? &skip_ops : &close_ops, u);
  static const size_t maxes[] = {1, 2, 5, 16, 64, 0, 0, 0};
  size_t m = maxes[(cfg >> 1) & 7];
  CHECK(braid_line_receiver_set_max_length(&u->lr, m) == 0);
  u->max = m ? m : BRAID_LINE_MAX_DEFAULT;
  memcpy(u->delim, "\r\n", 2);
  u->dlen = 2;
  braid_memory_transport_t *mt;
  CHECK(braid_memory_transport_create(reactor(), &u->lr.proto, &mt) == 0);
  size_t off = 0;
  while (off < n) {
    size_t step = n - off;
    if (seed != 0) {
      seed = seed * 1103515245u + 12345u;
      size_t s = 1 + (seed >> 16) % 24;
      step = s < step ? s : step;
    }
    if (u->paused) {
      u->paused = 0;
      braid_transport_resume_reading(braid_line_receiver_transport(&u->lr));
    }
    /* An exact-size copy, so that reading past the piece is an ASan
     * report. */
    char *piece = malloc(step);
    CHECK(piece != NULL);
    memcpy(piece, data + off, step);
    int rc = braid_memory_transport_feed(mt, piece, step);
    free(piece);
    /* Only a close asked by X, or by an over-long line when there is no
     * line_too_long, refuses bytes. */
    CHECK(rc == 0 || (rc == BRAID_ECLOSED && (u->closed || !(cfg & 1))));
    if (rc == BRAID_ECLOSED)
      break;
    off += step;
  }
  if (u->paused) {
    u->paused = 0;
    braid_transport_resume_reading(braid_line_receiver_transport(&u->lr));
  }
  /* Every byte delivered is the input's, in order. */
  CHECK(u->rebuilt.len <= n);
  CHECK(u->rebuilt.len == 0 || memcmp(u->rebuilt.p, data, u->rebuilt.len) == 0);
  /* What is left over is a partial line the receiver may hold: shorter than
   * max + delimiter, and without a delimiter. A close or an over-long line
   * ends delivery early, and settings changed mid-stream move the bounds. */
  if (!u->closed && !u->too_long && !u->used_settings && !u->unstable &&
      !braid_line_receiver_raw(&u->lr) && !braid_memory_transport_closing(mt)) {
    size_t left = n - u->rebuilt.len;
    CHECK(left < u->max + u->dlen);
    for (size_t i = 0; i + u->dlen <= left; i++)
      CHECK(memcmp(data + u->rebuilt.len + i, u->delim, u->dlen) != 0);
  }
  braid_memory_transport_destroy(mt);
  CHECK(u->lost == 1);
  braid_clock_advance(reactor(), 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1 || size > 8192)
    return 0;
  uint8_t cfg = data[0];
  data++;
  size--;
  uint32_t h = 2166136261u;
  for (size_t i = 0; i < size; i++)
    h = (h ^ data[i]) * 16777619u;
  static run whole, split;
  drive(&whole, cfg, data, size, 0);
  drive(&split, cfg, data, size, h | 1);
  if (getenv("FUZZ_DEBUG") != NULL) {
    fwrite(whole.log.p, 1, whole.log.len, stderr);
    fputs("\n----\n", stderr);
    fwrite(split.log.p, 1, split.log.len, stderr);
    fputs("\n", stderr);
  }
  if (!whole.unstable && !split.unstable) {
    CHECK(whole.log.len == split.log.len);
    CHECK(whole.log.len == 0 ||
          memcmp(whole.log.p, split.log.p, whole.log.len) == 0);
  }
  free(whole.log.p);
  free(whole.rebuilt.p);
  free(split.log.p);
  free(split.rebuilt.p);
  return 0;
}
