/* Framing helpers (braid/basic.h): the pure parsers, then the receivers
 * driven through the memory transport with every input split at every
 * byte boundary (two and three pieces, and byte by byte), and the chat
 * example over two memory transports. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include <cmocka.h>

#include "braid/braid.h"
#include "braid/testing.h"

/* ------------------------------------------------------------------------
 * Pure parsers
 * ------------------------------------------------------------------------ */

static void t_line_parse(void **st) {
  (void)st;
  braid_line_parser_t p = {0};
  assert_int_equal(braid_line_parse(&p, "abc", 3, "\r\n", 2, 100), -2);
  /* incremental: the same bytes plus more, same state */
  assert_int_equal(braid_line_parse(&p, "abc\r", 4, "\r\n", 2, 100), -2);
  assert_int_equal(braid_line_parse(&p, "abc\r\nxy", 7, "\r\n", 2, 100), 5);
  memset(&p, 0, sizeof p);
  assert_int_equal(braid_line_parse(&p, "\r\n", 2, "\r\n", 2, 0), 2);
  memset(&p, 0, sizeof p);
  /* a false start of the delimiter */
  assert_int_equal(braid_line_parse(&p, "a\rb\r\n", 5, "\r\n", 2, 100), 5);
  memset(&p, 0, sizeof p);
  /* max: a 3-byte line is fine at max 3 and an error at 2 */
  assert_int_equal(braid_line_parse(&p, "abc\n", 4, "\n", 1, 3), 4);
  memset(&p, 0, sizeof p);
  assert_int_equal(braid_line_parse(&p, "abc\n", 4, "\n", 1, 2), -1);
  assert_int_equal(p.error, BRAID_ELIMIT);
  /* known too long before the delimiter comes: max + dlen bytes held */
  memset(&p, 0, sizeof p);
  assert_int_equal(braid_line_parse(&p, "abcd", 4, "\r\n", 2, 3), -2);
  assert_int_equal(braid_line_parse(&p, "abcde", 5, "\r\n", 2, 3), -1);
  assert_int_equal(p.error, BRAID_ELIMIT);
  /* 8-byte delimiter */
  memset(&p, 0, sizeof p);
  assert_int_equal(braid_line_parse(&p, "x12345678", 9, "12345678", 8, 10), 9);
  memset(&p, 0, sizeof p);
  assert_int_equal(braid_line_parse(&p, "x", 1, "123456789", 9, 10), -1);
  assert_int_equal(p.error, BRAID_EINVAL);
  memset(&p, 0, sizeof p);
  assert_int_equal(braid_line_parse(&p, "x", 1, "", 0, 10), -1);
}

static ptrdiff_t ns(const char *s, size_t max, const char **pl, size_t *n,
                    int *err) {
  braid_string_parser_t p = {0};
  const void *v = NULL;
  ptrdiff_t r = braid_netstring_parse(&p, s, strlen(s), max, &v, n);
  *pl = v;
  *err = p.error;
  return r;
}

static void t_netstring_parse(void **st) {
  (void)st;
  const char *pl;
  size_t n;
  int err;
  assert_int_equal(ns("12:hello world!,", 100, &pl, &n, &err), 16);
  assert_int_equal(n, 12);
  assert_memory_equal(pl, "hello world!", 12);
  assert_int_equal(ns("0:,", 100, &pl, &n, &err), 3);
  assert_int_equal(n, 0);
  assert_int_equal(ns("0:,", 0, &pl, &n, &err), 3);
  assert_int_equal(ns("12:hello", 100, &pl, &n, &err), -2);
  assert_int_equal(ns("12", 100, &pl, &n, &err), -2);
  assert_int_equal(ns("", 100, &pl, &n, &err), -2);
  static const char *bad[] = {"01:a,", "00:,",  ":,",     "a:",     "1a:",
                              "-1:x,", " 1:x,", "3:abcX", "3:abc:", "0:x"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    assert_int_equal(ns(bad[i], 100, &pl, &n, &err), -1);
    assert_int_equal(err, BRAID_EPROTO);
  }
  /* the limit, at the edge and past it, and a length that would overflow */
  assert_int_equal(ns("5:abcde,", 5, &pl, &n, &err), 8);
  assert_int_equal(ns("6:", 5, &pl, &n, &err), -1);
  assert_int_equal(err, BRAID_ELIMIT);
  assert_int_equal(ns("10", 9, &pl, &n, &err), -1);
  assert_int_equal(err, BRAID_ELIMIT);
  assert_int_equal(ns("99999999999999999999999999:", SIZE_MAX, &pl, &n, &err),
                   -1);
  assert_int_equal(err, BRAID_ELIMIT);
  /* incremental with state: header remembered */
  braid_string_parser_t p = {0};
  const void *v;
  assert_int_equal(braid_netstring_parse(&p, "3:a", 3, 10, &v, &n), -2);
  assert_int_equal(braid_netstring_parse(&p, "3:abc,", 6, 10, &v, &n), 6);
  assert_int_equal(n, 3);
}

static void t_prefixed_parse(void **st) {
  (void)st;
  braid_string_parser_t p = {0};
  const void *v;
  size_t n;
  assert_int_equal(braid_prefixed_parse(&p, BRAID_INT16, "\x00", 1, 10, &v, &n),
                   -2);
  assert_int_equal(braid_prefixed_parse(&p, BRAID_INT16,
                                        "\x00\x03"
                                        "ab",
                                        4, 10, &v, &n),
                   -2);
  assert_int_equal(braid_prefixed_parse(&p, BRAID_INT16, "\x00\x03\x61\x62\x63",
                                        5, 10, &v, &n),
                   5);
  assert_int_equal(n, 3);
  assert_memory_equal(v, "abc", 3);
  memset(&p, 0, sizeof p);
  assert_int_equal(braid_prefixed_parse(&p, BRAID_INT32, "\x00\x01\x00\x00", 4,
                                        65535, &v, &n),
                   -1);
  assert_int_equal(p.error, BRAID_ELIMIT);
  memset(&p, 0, sizeof p);
  assert_int_equal(braid_prefixed_parse(&p, BRAID_INT8, "\x00", 1, 0, &v, &n),
                   1);
  assert_int_equal(n, 0);
  memset(&p, 0, sizeof p);
  assert_int_equal(braid_prefixed_parse(&p, 3, "\x00", 1, 0, &v, &n), -1);
  assert_int_equal(p.error, BRAID_EINVAL);
  char h[BRAID_STRING_HEADER_MAX];
  assert_int_equal(braid_string_header(BRAID_INT8, 256, h), BRAID_EMSGSIZE);
  assert_int_equal(braid_string_header(BRAID_INT8, 255, h), 1);
  assert_int_equal(braid_string_header(BRAID_INT16, 65536, h), BRAID_EMSGSIZE);
  assert_int_equal(braid_string_header(BRAID_INT32, 0x01020304, h), 4);
  assert_memory_equal(h, "\x01\x02\x03\x04", 4);
  assert_int_equal(braid_string_header(BRAID_NETSTRING, 12, h), 3);
  assert_memory_equal(h, "12:", 3);
}

/* Every prefix of each input, placed so its last byte is the last readable
 * byte before a PROT_NONE page (as picohttpparser's tests): a parser that
 * reads one byte too far crashes here instead of passing by luck. */
static void t_guard_page(void **st) {
  (void)st;
  long pg = sysconf(_SC_PAGESIZE);
  char *mem = mmap(NULL, (size_t)pg * 2, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  assert_true(mem != MAP_FAILED);
  assert_int_equal(mprotect(mem + pg, (size_t)pg, PROT_NONE), 0);
  static const char *inputs[] = {"hello\r\nworld\r\n", "12:hello world!,",
                                 "01:x,", "\x00\x05hello", "a\r\r\n"};
  static const size_t lens[] = {14, 16, 5, 7, 4};
  for (size_t k = 0; k < 5; k++) {
    for (size_t n = 0; n <= lens[k]; n++) {
      char *b = mem + pg - n;
      memcpy(b, inputs[k], n);
      braid_line_parser_t lp = {0};
      braid_line_parse(&lp, b, n, "\r\n", 2, 8);
      braid_string_parser_t sp = {0};
      const void *v;
      size_t pl;
      braid_netstring_parse(&sp, b, n, 100, &v, &pl);
      for (int f = 1; f <= 4; f *= 2) {
        memset(&sp, 0, sizeof sp);
        braid_prefixed_parse(&sp, (braid_framing)f, b, n, 100, &v, &pl);
      }
    }
  }
  munmap(mem, (size_t)pg * 2);
}

/* ------------------------------------------------------------------------
 * A line receiver that logs what it gets:
 *   [line]  a line     {raw}  raw bytes (consecutive raw calls merged)
 *   !       line too long   E  eof   L  lost
 * Lines "RAW n" switch to raw mode for n bytes, "DELIM x" changes the
 * delimiter to x, "QUIT" closes the connection.
 * ------------------------------------------------------------------------ */

typedef struct lrec {
  braid_line_receiver_t lr;
  char log[4096];
  size_t n;
  int lost;
} lrec;

static void lrec_put(lrec *r, const char *s, size_t len) {
  assert_true(r->n + len < sizeof r->log);
  memcpy(r->log + r->n, s, len);
  r->n += len;
  r->log[r->n] = '\0';
}

static void lrec_line(braid_line_receiver_t *lr, const char *line, size_t len) {
  lrec *r = (lrec *)lr;
  lrec_put(r, "[", 1);
  lrec_put(r, line, len);
  lrec_put(r, "]", 1);
  if (len > 4 && memcmp(line, "RAW ", 4) == 0) {
    char num[16] = {0};
    memcpy(num, line + 4, len - 4 < 15 ? len - 4 : 15);
    assert_int_equal(braid_line_receiver_set_raw_mode(lr, strtoull(num, 0, 10)),
                     0);
  } else if (len > 6 && memcmp(line, "DELIM ", 6) == 0) {
    assert_int_equal(braid_line_receiver_set_delimiter(lr, line + 6, len - 6),
                     0);
  } else if (len == 4 && memcmp(line, "QUIT", 4) == 0) {
    braid_transport_close(braid_line_receiver_transport(lr));
  }
}

static void lrec_raw(braid_line_receiver_t *lr, const void *data, size_t len) {
  lrec *r = (lrec *)lr;
  assert_true(len > 0);
  if (r->n > 0 && r->log[r->n - 1] == '}') {
    r->n--; /* merge with the previous raw call: splits must not show */
  } else {
    lrec_put(r, "{", 1);
  }
  lrec_put(r, data, len);
  lrec_put(r, "}", 1);
}

static void lrec_too_long(braid_line_receiver_t *lr) {
  lrec_put((lrec *)lr, "!", 1);
}

static void lrec_eof(braid_line_receiver_t *lr) {
  lrec_put((lrec *)lr, "E", 1);
}

static void lrec_lost(braid_line_receiver_t *lr, int reason) {
  (void)reason;
  lrec *r = (lrec *)lr;
  lrec_put(r, "L", 1);
  r->lost++;
}

static const braid_line_receiver_ops lrec_ops = {
    .line_received = lrec_line,
    .raw_data_received = lrec_raw,
    .line_too_long = lrec_too_long,
    .eof_received = lrec_eof,
    .connection_lost = lrec_lost,
};

/* The same, closing on over-long lines (the default) and on EOF. */
static const braid_line_receiver_ops lrec_default_ops = {
    .line_received = lrec_line,
    .raw_data_received = lrec_raw,
    .connection_lost = lrec_lost,
};

typedef struct split_case {
  const char *in;
  size_t len;
  size_t max;        /* 0: default */
  const char *delim; /* NULL: default */
} split_case;

/* Feed `pieces` (offsets into c->in) to a fresh receiver, then EOF, and
 * return the log. Feeding may fail once the receiver closed: the rest is
 * dropped, as a real transport stops reading. */
static void run_pieces(braid_reactor_t *re, const split_case *c,
                       const braid_line_receiver_ops *ops, const size_t *cuts,
                       size_t ncuts, char *out, size_t outlen) {
  lrec r;
  memset(&r, 0, sizeof r);
  braid_line_receiver_init(&r.lr, ops, NULL);
  if (c->max)
    braid_line_receiver_set_max_length(&r.lr, c->max);
  if (c->delim)
    braid_line_receiver_set_delimiter(&r.lr, c->delim, strlen(c->delim));
  braid_memory_transport_t *mt;
  assert_int_equal(braid_memory_transport_create(re, &r.lr.proto, &mt), 0);
  size_t prev = 0;
  for (size_t i = 0; i <= ncuts; i++) {
    size_t end = i < ncuts ? cuts[i] : c->len;
    /* Copy each piece into its own allocation so reads past its end are
     * caught by ASan/valgrind. */
    char *piece = malloc(end - prev + 1);
    memcpy(piece, c->in + prev, end - prev);
    int rc = braid_memory_transport_feed(mt, piece, end - prev);
    assert_true(rc == 0 || rc == BRAID_ECLOSED);
    free(piece);
    prev = end;
  }
  braid_memory_transport_feed_eof(mt);
  assert_int_equal(braid_memory_transport_destroy(mt), 0);
  assert_int_equal(r.lost, 1);
  snprintf(out, outlen, "%s", r.log);
}

/* Check the log for the whole input against every two- and three-piece
 * split and against byte-by-byte feeding. */
static void check_splits(const split_case *c,
                         const braid_line_receiver_ops *ops, const char *want) {
  braid_reactor_t *re;
  assert_int_equal(braid_testing_reactor_create(&re), 0);
  static char got[4096];
  run_pieces(re, c, ops, NULL, 0, got, sizeof got);
  assert_string_equal(got, want);
  for (size_t i = 0; i <= c->len; i++) {
    size_t cuts[1] = {i};
    run_pieces(re, c, ops, cuts, 1, got, sizeof got);
    if (strcmp(got, want) != 0)
      fail_msg("split at %zu: got %s want %s", i, got, want);
    for (size_t j = i; j <= c->len && c->len <= 64; j++) {
      size_t cuts2[2] = {i, j};
      run_pieces(re, c, ops, cuts2, 2, got, sizeof got);
      if (strcmp(got, want) != 0)
        fail_msg("split at %zu,%zu: got %s want %s", i, j, got, want);
    }
  }
  size_t *every = malloc(sizeof *every * (c->len + 1));
  for (size_t i = 0; i < c->len; i++)
    every[i] = i + 1;
  run_pieces(re, c, ops, every, c->len, got, sizeof got);
  free(every);
  assert_string_equal(got, want);
  assert_int_equal(braid_reactor_destroy(re), 0);
}

#define CASE(s) s, sizeof(s) - 1

static void t_lines_split(void **st) {
  (void)st;
  split_case c = {CASE("hello\r\nworld\r\n\r\nlast"), 0, NULL};
  check_splits(&c, &lrec_ops, "[hello][world][]EL");
  /* lone \r and \n are line content with a two-byte delimiter */
  split_case c2 = {CASE("a\rb\nc\r\r\n\n\r\n"), 0, NULL};
  check_splits(&c2, &lrec_ops, "[a\rb\nc\r][\n]EL");
  split_case c3 = {CASE("one\ntwo\n\nthree\n"), 0, "\n"};
  check_splits(&c3, &lrec_ops, "[one][two][][three]EL");
  /* a long delimiter with false starts that straddle reads */
  split_case c4 = {CASE("a--b---c--d---"), 0, "---"};
  check_splits(&c4, &lrec_ops, "[a--b][c--d]EL");
  split_case c5 = {CASE("x12345671234567812345678"), 0, "12345678"};
  check_splits(&c5, &lrec_ops, "[x1234567][]EL");
}

static void t_lines_max(void **st) {
  (void)st;
  /* max 5: exactly 5 passes; 6 is reported once, skipped, and parsing goes
   * on with the next line */
  split_case c = {CASE("abcde\r\nabcdef\r\nxy\r\nabcdefghijklmnop\r\nz\r\n"), 5,
                  NULL};
  check_splits(&c, &lrec_ops, "[abcde]![xy]![z]EL");
  /* a delimiter false start at the edge of the limit */
  split_case c2 = {CASE("abcd\r\r\nab\r\n"), 5, NULL};
  check_splits(&c2, &lrec_ops, "[abcd\r][ab]EL");
  split_case c3 = {CASE("abcde\r\r\nab\r\n"), 5, NULL};
  check_splits(&c3, &lrec_ops, "![ab]EL");
  /* max 1 with a one-byte delimiter */
  split_case c4 = {CASE("\n\nab\na\n"), 1, "\n"};
  check_splits(&c4, &lrec_ops, "[][]![a]EL");
  /* skipping an over-long line buffers nothing but a delimiter's worth */
  {
    braid_reactor_t *re;
    assert_int_equal(braid_testing_reactor_create(&re), 0);
    lrec r;
    memset(&r, 0, sizeof r);
    braid_line_receiver_init(&r.lr, &lrec_ops, NULL);
    braid_line_receiver_set_max_length(&r.lr, 5);
    braid_memory_transport_t *mt;
    assert_int_equal(braid_memory_transport_create(re, &r.lr.proto, &mt), 0);
    assert_int_equal(braid_memory_transport_feed(mt, "abc", 3), 0);
    char junk[1000];
    memset(junk, 'x', sizeof junk);
    for (int i = 0; i < 10; i++)
      assert_int_equal(braid_memory_transport_feed(mt, junk, sizeof junk), 0);
    assert_true(r.lr.buf_cap_ <= 128); /* private: peeked at on purpose */
    assert_int_equal(braid_memory_transport_feed(mt, "\r\nok\r\n", 6), 0);
    assert_string_equal(r.log, "![ok]");
    assert_int_equal(braid_memory_transport_destroy(mt), 0);
    assert_int_equal(braid_reactor_destroy(re), 0);
  }
  /* the default: the connection is closed, nothing after it parsed */
  split_case c5 = {CASE("ok\r\ntoolong\r\nnever\r\n"), 5, NULL};
  check_splits(&c5, &lrec_default_ops, "[ok]L");
}

static void t_lines_raw(void **st) {
  (void)st;
  /* counted raw sections, switched from inside a line, exact to the byte */
  split_case c = {CASE("GET\r\nRAW 5\r\nab\r\ncdone\r\nRAW 3\r\nxyzRAW 1\r\n"
                       "!tail\r\n"),
                  0, NULL};
  check_splits(&c, &lrec_ops,
               "[GET][RAW 5]{ab\r\nc}[done][RAW 3]{xyz}[RAW 1]{!}[tail]EL");
  /* raw bytes that look like an over-long line are not lines */
  split_case c2 = {CASE("RAW 12\r\nabcdefghijkl\r\nab\r\n"), 6, NULL};
  check_splits(&c2, &lrec_ops, "[RAW 12]{abcdefghijkl}[][ab]EL");
  /* a delimiter change applies to the bytes after the line */
  split_case c3 = {CASE("DELIM ;\r\na;b;c\r\n;"), 0, NULL};
  check_splits(&c3, &lrec_ops, "[DELIM ;][a][b][c\r\n]EL");
  /* QUIT closes: nothing after it is delivered, in any split */
  split_case c4 = {CASE("a\r\nQUIT\r\nb\r\nRAW 2\r\nxx"), 0, NULL};
  check_splits(&c4, &lrec_ops, "[a][QUIT]L");
}

/* Unlimited raw mode, and switching back from inside the raw handler. */
static void urec_raw(braid_line_receiver_t *lr, const void *data, size_t len) {
  lrec_raw(lr, data, len);
  if (memchr(data, '.', len) != NULL)
    braid_line_receiver_set_line_mode(lr);
}

static void urec_line(braid_line_receiver_t *lr, const char *line, size_t len) {
  lrec_line(lr, line, len);
  if (len == 4 && memcmp(line, "DATA", 4) == 0)
    braid_line_receiver_set_raw_mode(lr, BRAID_RAW_UNLIMITED);
}

static const braid_line_receiver_ops urec_ops = {
    .line_received = urec_line,
    .raw_data_received = urec_raw,
    .connection_lost = lrec_lost,
};

static void t_lines_raw_unlimited(void **st) {
  (void)st;
  braid_reactor_t *re;
  assert_int_equal(braid_testing_reactor_create(&re), 0);
  lrec r;
  memset(&r, 0, sizeof r);
  braid_line_receiver_init(&r.lr, &urec_ops, NULL);
  braid_memory_transport_t *mt;
  assert_int_equal(braid_memory_transport_create(re, &r.lr.proto, &mt), 0);
  /* the rest of the read after "DATA" goes raw, in the same call */
  assert_int_equal(braid_memory_transport_feed(mt, "DATA\r\nabc", 9), 0);
  assert_true(braid_line_receiver_raw(&r.lr));
  assert_int_equal(braid_memory_transport_feed(mt, "de.", 3), 0);
  assert_false(braid_line_receiver_raw(&r.lr));
  assert_int_equal(braid_memory_transport_feed(mt, "x\r\n", 3), 0);
  assert_string_equal(r.log, "[DATA]{abcde.}[x]");
  /* raw mode entered between reads with a partial line buffered: the
   * buffered bytes come first, raw */
  assert_int_equal(braid_memory_transport_feed(mt, "part", 4), 0);
  assert_int_equal(braid_line_receiver_set_raw_mode(&r.lr, 6), 0);
  assert_int_equal(braid_memory_transport_feed(mt, "ial\r\nz\r\n", 8), 0);
  assert_string_equal(r.log, "[DATA]{abcde.}[x]{partia}[l][z]");
  assert_int_equal(braid_memory_transport_destroy(mt), 0);
  assert_int_equal(braid_reactor_destroy(re), 0);
  /* set_raw_mode needs a raw handler */
  braid_line_receiver_t bare;
  static const braid_line_receiver_ops noraw = {.line_received = lrec_line};
  braid_line_receiver_init(&bare, &noraw, NULL);
  assert_int_equal(braid_line_receiver_set_raw_mode(&bare, 1), BRAID_EINVAL);
  assert_int_equal(braid_line_receiver_set_delimiter(&bare, "123456789", 9),
                   BRAID_EINVAL);
}

/* Lines complete inside one read are views into it; only a split line is
 * copied (and only it). */
static const char *zc_chunk;
static size_t zc_views, zc_copies;
static void zc_line(braid_line_receiver_t *lr, const char *line, size_t len) {
  (void)lr;
  (void)len;
  if (line >= zc_chunk && line < zc_chunk + 64)
    zc_views++;
  else
    zc_copies++;
}
static const braid_line_receiver_ops zc_ops = {.line_received = zc_line};

static void t_lines_zero_copy(void **st) {
  (void)st;
  braid_reactor_t *re;
  assert_int_equal(braid_testing_reactor_create(&re), 0);
  braid_line_receiver_t lr;
  braid_line_receiver_init(&lr, &zc_ops, NULL);
  braid_memory_transport_t *mt;
  assert_int_equal(braid_memory_transport_create(re, &lr.proto, &mt), 0);
  static const char a[] = "one\r\ntwo\r\nthr", b[] = "ee\r\nfour\r\nfive\r\n";
  zc_chunk = a;
  assert_int_equal(braid_memory_transport_feed(mt, a, sizeof a - 1), 0);
  assert_int_equal(zc_views, 2);
  zc_chunk = b;
  assert_int_equal(braid_memory_transport_feed(mt, b, sizeof b - 1), 0);
  assert_int_equal(zc_views, 4);
  assert_int_equal(zc_copies, 1);
  assert_int_equal(braid_memory_transport_destroy(mt), 0);
  assert_int_equal(braid_reactor_destroy(re), 0);
}

static void t_send_line(void **st) {
  (void)st;
  braid_reactor_t *re;
  assert_int_equal(braid_testing_reactor_create(&re), 0);
  lrec r;
  memset(&r, 0, sizeof r);
  braid_line_receiver_init(&r.lr, &lrec_ops, NULL);
  braid_memory_transport_t *mt;
  assert_int_equal(braid_memory_transport_create(re, &r.lr.proto, &mt), 0);
  assert_int_equal(braid_line_receiver_send_line(&r.lr, "hi", 2), 0);
  assert_int_equal(braid_line_receiver_set_delimiter(&r.lr, "\n", 1), 0);
  assert_int_equal(braid_line_receiver_send_line(&r.lr, "", 0), 0);
  size_t n;
  const char *v = braid_memory_transport_value(mt, &n);
  assert_int_equal(n, 5);
  assert_memory_equal(v, "hi\r\n\n", 5);
  /* EOF with eof_received set: the receiver forwards it and stays open */
  assert_int_equal(braid_memory_transport_feed_eof(mt), 0);
  assert_string_equal(r.log, "E");
  assert_false(braid_memory_transport_disconnected(mt, NULL));
  assert_int_equal(braid_memory_transport_destroy(mt), 0);
  assert_int_equal(braid_reactor_destroy(re), 0);
}

/* ------------------------------------------------------------------------
 * String receivers
 * ------------------------------------------------------------------------ */

typedef struct srec {
  braid_string_receiver_t sr;
  char log[4096];
  size_t n;
  int lost;
} srec;

static void srec_put(srec *r, const char *s, size_t len) {
  assert_true(r->n + len < sizeof r->log);
  memcpy(r->log + r->n, s, len);
  r->n += len;
  r->log[r->n] = '\0';
}

static void srec_string(braid_string_receiver_t *sr, const void *d,
                        size_t len) {
  srec *r = (srec *)sr;
  srec_put(r, "[", 1);
  srec_put(r, d, len);
  srec_put(r, "]", 1);
}

static void srec_error(braid_string_receiver_t *sr, int err) {
  srec *r = (srec *)sr;
  srec_put(r,
           err == BRAID_ELIMIT   ? "!limit"
           : err == BRAID_EPROTO ? "!proto"
                                 : "!other",
           6);
}

static void srec_lost(braid_string_receiver_t *sr, int reason) {
  (void)reason;
  srec *r = (srec *)sr;
  srec_put(r, "L", 1);
  r->lost++;
}

static const braid_string_receiver_ops srec_ops = {
    .string_received = srec_string,
    .string_error = srec_error,
    .connection_lost = srec_lost,
};

static const braid_string_receiver_ops srec_default_ops = {
    .string_received = srec_string,
    .connection_lost = srec_lost,
};

static void srun(braid_reactor_t *re, braid_framing fr, size_t max,
                 const braid_string_receiver_ops *ops, const char *in,
                 size_t len, const size_t *cuts, size_t ncuts, char *out,
                 size_t outlen, int *closed) {
  srec r;
  memset(&r, 0, sizeof r);
  assert_int_equal(braid_string_receiver_init(&r.sr, fr, ops, NULL), 0);
  braid_string_receiver_set_max_length(&r.sr, max);
  braid_memory_transport_t *mt;
  assert_int_equal(braid_memory_transport_create(re, &r.sr.proto, &mt), 0);
  size_t prev = 0;
  for (size_t i = 0; i <= ncuts; i++) {
    size_t end = i < ncuts ? cuts[i] : len;
    char *piece = malloc(end - prev + 1);
    memcpy(piece, in + prev, end - prev);
    int rc = braid_memory_transport_feed(mt, piece, end - prev);
    assert_true(rc == 0 || rc == BRAID_ECLOSED);
    free(piece);
    prev = end;
  }
  *closed = braid_memory_transport_closing(mt);
  assert_int_equal(braid_memory_transport_destroy(mt), 0);
  assert_int_equal(r.lost, 1);
  snprintf(out, outlen, "%s", r.log);
}

static void scheck(braid_framing fr, size_t max,
                   const braid_string_receiver_ops *ops, const char *in,
                   size_t len, const char *want, int want_closed) {
  braid_reactor_t *re;
  assert_int_equal(braid_testing_reactor_create(&re), 0);
  static char got[4096];
  int closed;
  srun(re, fr, max, ops, in, len, NULL, 0, got, sizeof got, &closed);
  assert_string_equal(got, want);
  assert_int_equal(closed, want_closed);
  for (size_t i = 0; i <= len; i++) {
    size_t cuts[1] = {i};
    srun(re, fr, max, ops, in, len, cuts, 1, got, sizeof got, &closed);
    if (strcmp(got, want) != 0 || closed != want_closed)
      fail_msg("split at %zu: got %s want %s", i, got, want);
    for (size_t j = i; j <= len && len <= 64; j++) {
      size_t cuts2[2] = {i, j};
      srun(re, fr, max, ops, in, len, cuts2, 2, got, sizeof got, &closed);
      if (strcmp(got, want) != 0)
        fail_msg("split at %zu,%zu: got %s want %s", i, j, got, want);
    }
  }
  size_t *every = malloc(sizeof *every * (len + 1));
  for (size_t i = 0; i < len; i++)
    every[i] = i + 1;
  srun(re, fr, max, ops, in, len, every, len, got, sizeof got, &closed);
  free(every);
  assert_string_equal(got, want);
  assert_int_equal(braid_reactor_destroy(re), 0);
}

#define SCHECK(fr, max, ops, lit, want, closed)                                \
  scheck(fr, max, ops, lit, sizeof(lit) - 1, want, closed)

static void t_netstrings_split(void **st) {
  (void)st;
  SCHECK(BRAID_NETSTRING, 0, &srec_ops, "12:hello world!,0:,3:abc,",
         "[hello world!][][abc]L", 0);
  /* at the limit, and one over */
  SCHECK(BRAID_NETSTRING, 5, &srec_ops, "5:abcde,6:abcdef,1:x,",
         "[abcde]!limitL", 0);
  SCHECK(BRAID_NETSTRING, 5, &srec_ops, "2:ab,01:x,1:y,", "[ab]!protoL", 0);
  SCHECK(BRAID_NETSTRING, 5, &srec_ops, "2:ab,2:abc,", "[ab]!protoL", 0);
  SCHECK(BRAID_NETSTRING, 5, &srec_ops, "1:a,x", "[a]!protoL", 0);
  SCHECK(BRAID_NETSTRING, 5, &srec_ops, "2:ab,:,", "[ab]!protoL", 0);
  /* without string_error the connection is closed */
  SCHECK(BRAID_NETSTRING, 5, &srec_default_ops, "1:a,9999:", "[a]L", 1);
}

static void t_prefixed_split(void **st) {
  (void)st;
  SCHECK(BRAID_INT8, 0, &srec_ops, "\x05hello\x00\x01!", "[hello][][!]L", 0);
  SCHECK(BRAID_INT16, 0, &srec_ops, "\x00\x05hello\x00\x00\x00\x01!",
         "[hello][][!]L", 0);
  SCHECK(BRAID_INT32, 0, &srec_ops,
         "\x00\x00\x00\x05hello\x00\x00\x00\x00\x00\x00\x00\x01!",
         "[hello][][!]L", 0);
  /* max 3: 3 passes, 4 is refused before its body arrives */
  SCHECK(BRAID_INT16, 3, &srec_ops,
         "\x00\x03"
         "abc\x00\x04"
         "abcd",
         "[abc]!limitL", 0);
  SCHECK(BRAID_INT32, 3, &srec_default_ops,
         "\x00\x00\x00\x03"
         "abc\xff\xff\xff\xff",
         "[abc]L", 1);
}

static void t_string_send_roundtrip(void **st) {
  (void)st;
  braid_reactor_t *re;
  assert_int_equal(braid_testing_reactor_create(&re), 0);
  braid_framing frs[] = {BRAID_NETSTRING, BRAID_INT8, BRAID_INT16, BRAID_INT32};
  for (size_t k = 0; k < 4; k++) {
    srec a;
    memset(&a, 0, sizeof a);
    assert_int_equal(braid_string_receiver_init(&a.sr, frs[k], &srec_ops, 0),
                     0);
    braid_memory_transport_t *mt;
    assert_int_equal(braid_memory_transport_create(re, &a.sr.proto, &mt), 0);
    assert_int_equal(braid_string_receiver_send(&a.sr, "hello", 5), 0);
    assert_int_equal(braid_string_receiver_send(&a.sr, "", 0), 0);
    char big[300];
    memset(big, 'b', sizeof big);
    int want = frs[k] == BRAID_INT8 ? BRAID_EMSGSIZE : 0;
    assert_int_equal(braid_string_receiver_send(&a.sr, big, sizeof big), want);
    /* what was sent parses back */
    size_t n;
    const char *v = braid_memory_transport_value(mt, &n);
    char *copy = malloc(n);
    memcpy(copy, v, n);
    assert_int_equal(braid_memory_transport_feed(mt, copy, n), 0);
    free(copy);
    char expect[400];
    snprintf(expect, sizeof expect, "[hello][]%s%.*s%s", want ? "" : "[",
             want ? 0 : 300, big, want ? "" : "]");
    assert_string_equal(a.log, expect);
    assert_int_equal(braid_memory_transport_destroy(mt), 0);
  }
  braid_string_receiver_t bad;
  assert_int_equal(braid_string_receiver_init(&bad, 3, &srec_ops, 0),
                   BRAID_EINVAL);
  assert_int_equal(braid_reactor_destroy(re), 0);
}

/* ------------------------------------------------------------------------
 * Out of memory: the allocator is swapped for one that fails on demand.
 * A partial frame that cannot be kept must end the connection (the line
 * receiver aborts; the string receiver reports BRAID_ENOMEM), never
 * deliver a frame with a hole in it.
 * ------------------------------------------------------------------------ */

static int fail_alloc;
static void *f_malloc(size_t n) {
  return fail_alloc ? NULL : malloc(n);
}
static void *f_realloc(void *p, size_t n) {
  return fail_alloc ? NULL : realloc(p, n);
}
static void *f_calloc(size_t a, size_t b) {
  return fail_alloc ? NULL : calloc(a, b);
}

static void t_oom(void **st) {
  (void)st;
  assert_int_equal(braid_set_allocator(f_malloc, f_realloc, f_calloc, free), 0);
  braid_reactor_t *re;
  assert_int_equal(braid_testing_reactor_create(&re), 0);

  lrec r;
  memset(&r, 0, sizeof r);
  braid_line_receiver_init(&r.lr, &lrec_ops, NULL);
  braid_memory_transport_t *mt;
  assert_int_equal(braid_memory_transport_create(re, &r.lr.proto, &mt), 0);
  fail_alloc = 1;
  /* complete lines need no memory */
  assert_int_equal(braid_memory_transport_feed(mt, "a\r\nb\r\n", 6), 0);
  assert_int_equal(braid_memory_transport_feed(mt, "partial", 7), 0);
  int reason;
  assert_true(braid_memory_transport_disconnected(mt, &reason));
  assert_int_equal(reason, BRAID_ECONNABORTED);
  assert_string_equal(r.log, "[a][b]L");
  fail_alloc = 0;
  assert_int_equal(braid_memory_transport_destroy(mt), 0);

  srec s;
  memset(&s, 0, sizeof s);
  assert_int_equal(
      braid_string_receiver_init(&s.sr, BRAID_NETSTRING, &srec_ops, NULL), 0);
  assert_int_equal(braid_memory_transport_create(re, &s.sr.proto, &mt), 0);
  fail_alloc = 1;
  assert_int_equal(braid_memory_transport_feed(mt, "1:x,3:ab", 8), 0);
  assert_string_equal(s.log, "[x]!other");
  /* the memory transport itself: writes and paused feeds fail cleanly */
  braid_transport_t *t = braid_memory_transport_transport(mt);
  assert_int_equal(braid_transport_write(t, "x", 1), BRAID_ENOMEM);
  assert_int_equal(braid_transport_pause_reading(t), 0);
  assert_int_equal(braid_memory_transport_feed(mt, "y", 1), BRAID_ENOMEM);
  fail_alloc = 0;
  size_t n;
  braid_memory_transport_value(mt, &n);
  assert_int_equal(n, 0);
  assert_int_equal(braid_memory_transport_destroy(mt), 0);

  assert_int_equal(braid_reactor_destroy(re), 0);
  braid_reset_allocator();
}

/* ------------------------------------------------------------------------
 * The chat example over memory transports
 * ------------------------------------------------------------------------ */

#define CHAT_NO_MAIN
#include "../examples/chat.c"

static void t_chat(void **st) {
  (void)st;
  braid_reactor_t *re;
  assert_int_equal(braid_testing_reactor_create(&re), 0);
  chat_server srv = {{chat_build, NULL}, NULL};
  braid_memory_transport_t *m[3];
  for (int i = 0; i < 3; i++) {
    braid_protocol_t *p = srv.factory.build(&srv.factory, NULL);
    assert_non_null(p);
    assert_int_equal(braid_memory_transport_create(re, p, &m[i]), 0);
  }
  /* a line split over two reads reaches the two others, not the sender */
  assert_int_equal(braid_memory_transport_feed(m[0], "hel", 3), 0);
  assert_int_equal(braid_memory_transport_feed(m[0], "lo\r\nbye\r\n", 9), 0);
  size_t n;
  for (int i = 1; i < 3; i++) {
    const char *v = braid_memory_transport_value(m[i], &n);
    assert_int_equal(n, 12);
    assert_memory_equal(v, "hello\r\nbye\r\n", 12);
  }
  braid_memory_transport_value(m[0], &n);
  assert_int_equal(n, 0);
  /* a client that leaves is no longer written to */
  assert_int_equal(braid_memory_transport_lose(m[1], BRAID_ECONNRESET), 0);
  braid_memory_transport_clear(m[1]);
  assert_int_equal(braid_memory_transport_feed(m[2], "x\r\n", 3), 0);
  braid_memory_transport_value(m[1], &n);
  assert_int_equal(n, 0);
  assert_memory_equal(braid_memory_transport_value(m[0], &n), "x\r\n", 3);
  /* a reader that falls behind is dropped rather than buffered forever */
  braid_transport_set_write_limits(braid_memory_transport_transport(m[0]), 8,
                                   0);
  assert_int_equal(braid_memory_transport_set_consumer_blocked(m[0], true), 0);
  assert_int_equal(braid_memory_transport_feed(m[2], "0123456789\r\n", 12), 0);
  /* m[0] aborted from inside m[2]'s callback: its connection_lost comes
   * from the reactor, as with a real transport */
  assert_true(braid_memory_transport_aborted(m[0]));
  assert_false(braid_memory_transport_disconnected(m[0], NULL));
  assert_int_equal(braid_clock_advance(re, 0), 0);
  assert_true(braid_memory_transport_aborted(m[0]));
  assert_true(braid_memory_transport_disconnected(m[0], NULL));
  /* an over-long line closes its sender */
  char big[1100];
  memset(big, 'a', sizeof big);
  assert_int_equal(braid_memory_transport_feed(m[2], big, sizeof big), 0);
  assert_true(braid_memory_transport_disconnected(m[2], NULL));
  assert_null(srv.clients);
  for (int i = 0; i < 3; i++)
    assert_int_equal(braid_memory_transport_destroy(m[i]), 0);
  assert_int_equal(braid_reactor_destroy(re), 0);
}

/* The chat server over real sockets on the poller under test: two clients
 * connect, and a line from one reaches the other. */
typedef struct sock_client {
  braid_protocol_t p;
  char got[64];
  size_t n;
  int lost;
} sock_client;

typedef struct smoke {
  braid_reactor_t *r;
  chat_server srv;
  sock_client a, b;
  braid_timer_t poll, deadline;
  int sent, timed_out;
} smoke;

static void sc_made(braid_protocol_t *p, braid_transport_t *t) {
  (void)p;
  (void)t;
}
static void sc_data(braid_protocol_t *p, const void *d, size_t len) {
  sock_client *c = (sock_client *)p;
  assert_true(c->n + len <= sizeof c->got);
  memcpy(c->got + c->n, d, len);
  c->n += len;
  if (c->n == 4)
    braid_reactor_stop(braid_transport_reactor(p->transport));
}
static void sc_lost(braid_protocol_t *p, int reason) {
  (void)reason;
  ((sock_client *)p)->lost++;
}
static const braid_protocol_ops sc_ops = {
    .connection_made = sc_made,
    .data_received = sc_data,
    .connection_lost = sc_lost,
};

static size_t chat_count(const chat_server *srv) {
  size_t n = 0;
  for (const chat_client *c = srv->clients; c != NULL; c = c->next)
    n++;
  return n;
}

/* The server may accept after the clients see their connects complete, so
 * wait until it knows both before talking. */
static void smoke_poll(braid_timer_t *t, void *arg) {
  smoke *s = arg;
  if (chat_count(&s->srv) < 2) {
    braid_timer_start(s->r, t, BRAID_MSEC(1), smoke_poll, s);
    return;
  }
  assert_int_equal(braid_transport_write(s->a.p.transport, "hi\r\n", 4), 0);
}

static void smoke_deadline(braid_timer_t *t, void *arg) {
  (void)t;
  smoke *s = arg;
  s->timed_out = 1;
  braid_reactor_stop(s->r);
}

static void t_chat_sockets(void **st) {
  (void)st;
  static smoke s;
  memset(&s, 0, sizeof s);
  s.srv.factory.build = chat_build;
  assert_int_equal(braid_reactor_create(&s.r, NULL), 0);
  braid_listener_t *l;
  char err[128];
  assert_int_equal(braid_endpoint_listen(s.r, "tcp:port=0:interface=127.0.0.1",
                                         &s.srv.factory, &l, err, sizeof err),
                   0);
  braid_addr_t addr;
  assert_int_equal(braid_listener_addr(l, &addr), 0);
  s.a.p.ops = s.b.p.ops = &sc_ops;
  assert_int_equal(braid_connect(s.r, &addr, NULL, &s.a.p), 0);
  assert_int_equal(braid_connect(s.r, &addr, NULL, &s.b.p), 0);
  braid_timer_start(s.r, &s.poll, BRAID_MSEC(1), smoke_poll, &s);
  braid_timer_start(s.r, &s.deadline, BRAID_SEC(5), smoke_deadline, &s);
  assert_int_equal(braid_reactor_run(s.r), 0);
  assert_false(s.timed_out);
  assert_int_equal(s.b.n, 4);
  assert_memory_equal(s.b.got, "hi\r\n", 4);
  assert_int_equal(s.a.n, 0);
  if (braid_timer_active(&s.poll))
    braid_timer_cancel(&s.poll);
  braid_timer_cancel(&s.deadline);
  /* destroying the reactor closes the listener and all four ends */
  assert_int_equal(braid_reactor_destroy(s.r), 0);
  assert_int_equal(s.a.lost, 1);
  assert_int_equal(s.b.lost, 1);
  assert_null(s.srv.clients);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(t_line_parse),
      cmocka_unit_test(t_netstring_parse),
      cmocka_unit_test(t_prefixed_parse),
      cmocka_unit_test(t_guard_page),
      cmocka_unit_test(t_lines_split),
      cmocka_unit_test(t_lines_max),
      cmocka_unit_test(t_lines_raw),
      cmocka_unit_test(t_lines_raw_unlimited),
      cmocka_unit_test(t_lines_zero_copy),
      cmocka_unit_test(t_send_line),
      cmocka_unit_test(t_netstrings_split),
      cmocka_unit_test(t_prefixed_split),
      cmocka_unit_test(t_string_send_roundtrip),
      cmocka_unit_test(t_oom),
      cmocka_unit_test(t_chat),
      cmocka_unit_test(t_chat_sockets),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
