/* braid: HTTP/1.x request and response head parser.
 *
 * The parser works on indexes into the caller's buffer rather than on
 * pointers, so that limits can be added to positions without forming
 * pointers past the end of the buffer.
 *
 * Every decision is made from bytes the caller has already passed, in the
 * order they appear, so that cutting the input anywhere never changes the
 * answer (see "Split invariance" in braid/http_parser.h). In practice this
 * means each line is only judged once its LF has arrived, or once the bytes
 * it has used prove that its limit is crossed whatever comes next.
 */
#include "braid/http_parser.h"

#include <limits.h>
#include <string.h>

#include "protocols/http/internal.h"

/* Generated from the RFC 9110 definitions; test_http_parser checks every
 * entry against them. */
const unsigned char braid__http_chars[256] = {
    0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, /* 0x00 */
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, /* 0x10 */
    2, 7, 6, 7, 7, 7, 7, 7, 6, 6, 7, 7, 6, 7, 7, 6, /* 0x20 */
    7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 6, 6, 6, 6, 6, 6, /* 0x30 */
    6, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, /* 0x40 */
    7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 6, 6, 6, 7, 7, /* 0x50 */
    7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, /* 0x60 */
    7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 6, 7, 6, 7, 0, /* 0x70 */
    2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, /* 0x80 */
    2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, /* 0x90 */
    2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, /* 0xa0 */
    2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, /* 0xb0 */
    2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, /* 0xc0 */
    2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, /* 0xd0 */
    2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, /* 0xe0 */
    2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, /* 0xf0 */
};

#define DEFAULT_START_LINE 8192
#define DEFAULT_HEADER_BYTES 16384
#define DEFAULT_MAX_HEADERS 100
/* RFC 9112 section 2.2: a server SHOULD ignore at least one empty line
 * before the request line (some clients send CRLF after a POST body). A
 * small bound keeps a stream of empty lines from costing a full parse each
 * under the resume hint. */
#define MAX_LEADING_EMPTY 4
/* Limits are clamped so that a head's length always fits in an int. */
#define LIMIT_CAP ((size_t)INT_MAX / 4)

enum { PHASE_NONE = 0, PHASE_START_LINE = 1, PHASE_HEADERS = 2 };

struct cfg {
  size_t max_line;
  size_t max_hdr_bytes;
  size_t max_headers;
  bool strict;
};

/* Where an incomplete parse stopped, for the resume hint. */
struct progress {
  unsigned char phase;
  size_t pos;   /* start line: look for its LF from here; headers: the
                   start of the unfinished line */
  size_t limit; /* start line: parse in full once the input is longer */
  size_t hs;    /* headers: where the header section starts */
  size_t nh;    /* headers: lines parsed so far */
  uint64_t cl;  /* headers: Content-Length so far */
  bool have_cl;
};

/* What the header lines say about framing and the connection. */
struct fields {
  uint64_t cl;
  bool have_cl;
  bool have_te;
  bool te_last_chunked;
  unsigned te_codings, te_chunked, te_unknown;
  bool conn_close, conn_keep_alive, conn_upgrade;
  bool expect_continue;
  unsigned host_count;
  braid_http_view_t host;
  braid_http_view_t upgrade;
};

struct headers_out {
  braid_http_header_t *arr;
  size_t max;
  size_t n;
  bool dry; /* validate and count only (the resume hint's scan) */
};

static size_t sat_add(size_t a, size_t b) {
  return a > SIZE_MAX - b ? SIZE_MAX : a + b;
}

static size_t min_size(size_t a, size_t b) {
  return a < b ? a : b;
}

static size_t pick(size_t v, size_t dflt) {
  if (v == 0)
    return dflt;
  return v > LIMIT_CAP ? LIMIT_CAP : v;
}

static void load_cfg(struct cfg *c, const braid_http_limits_t *lim) {
  static const braid_http_limits_t zero;
  if (lim == NULL)
    lim = &zero;
  c->max_line = pick(lim->max_start_line, DEFAULT_START_LINE);
  c->max_hdr_bytes = pick(lim->max_header_bytes, DEFAULT_HEADER_BYTES);
  c->max_headers = pick(lim->max_headers, DEFAULT_MAX_HEADERS);
  c->strict = (lim->flags & BRAID_HTTP_STRICT_CRLF) != 0;
}

static unsigned char lower(unsigned char c) {
  return (c >= 'A' && c <= 'Z') ? (unsigned char)(c + ('a' - 'A')) : c;
}

/* Compare a received name or list element with a lower-case literal. */
static bool eq_ci(const char *s, size_t n, const char *lit, size_t litlen) {
  if (n != litlen)
    return false;
  for (size_t i = 0; i < n; i++)
    if (lower((unsigned char)s[i]) != (unsigned char)lit[i])
      return false;
  return true;
}

#define EQ_CI(s, n, lit) eq_ci((s), (n), lit, sizeof(lit) - 1)

static bool is_ows(char c) {
  return c == ' ' || c == '\t';
}

/* Iterate over the comma-separated elements of a field value (RFC 9110
 * section 5.6.1), each with its surrounding whitespace removed. Empty
 * elements are reported; callers decide whether they are allowed. */
struct list_iter {
  const char *s;
  size_t len;
  size_t pos;
  bool done;
};

static bool list_next(struct list_iter *it, const char **e, size_t *elen) {
  if (it->done)
    return false;
  size_t start = it->pos, end;
  const char *comma = memchr(it->s + start, ',', it->len - start);
  if (comma == NULL) {
    end = it->len;
    it->done = true;
  } else {
    end = (size_t)(comma - it->s);
    it->pos = end + 1;
  }
  while (start < end && is_ows(it->s[start]))
    start++;
  while (end > start && is_ows(it->s[end - 1]))
    end--;
  *e = it->s + start;
  *elen = end - start;
  return true;
}

static void list_init(struct list_iter *it, braid_http_view_t v) {
  it->s = v.ptr;
  it->len = v.len;
  it->pos = 0;
  it->done = false;
}

/* Content-Length = 1*DIGIT; also accept a list of identical values
 * ("42, 42"), which is what a recipient sees when an intermediary has
 * joined duplicated lines (RFC 9110 section 8.6). */
static int field_content_length(struct fields *f, braid_http_view_t v) {
  struct list_iter it;
  const char *e;
  size_t n;
  list_init(&it, v);
  while (list_next(&it, &e, &n)) {
    if (n == 0)
      return 400;
    uint64_t x = 0;
    for (size_t i = 0; i < n; i++) {
      unsigned d = (unsigned char)e[i] - (unsigned)'0';
      if (d > 9)
        return 400;
      if (x > (UINT64_MAX - d) / 10)
        return 400; /* does not fit: no body layer could accept it */
      x = x * 10 + d;
    }
    if (f->have_cl && f->cl != x)
      return 400;
    f->have_cl = true;
    f->cl = x;
  }
  return 0;
}

static void field_transfer_encoding(struct fields *f, braid_http_view_t v) {
  struct list_iter it;
  const char *e;
  size_t n;
  f->have_te = true;
  list_init(&it, v);
  while (list_next(&it, &e, &n)) {
    if (n == 0)
      continue;
    f->te_codings++;
    /* "chunked" with parameters is not chunked: it has none defined, and
     * treating it as unknown is the safe reading. */
    if (EQ_CI(e, n, "chunked")) {
      f->te_chunked++;
      f->te_last_chunked = true;
    } else {
      f->te_unknown++;
      f->te_last_chunked = false;
    }
  }
}

static void field_connection(struct fields *f, braid_http_view_t v) {
  struct list_iter it;
  const char *e;
  size_t n;
  list_init(&it, v);
  while (list_next(&it, &e, &n)) {
    if (EQ_CI(e, n, "close"))
      f->conn_close = true;
    else if (EQ_CI(e, n, "keep-alive"))
      f->conn_keep_alive = true;
    else if (EQ_CI(e, n, "upgrade"))
      f->conn_upgrade = true;
  }
}

static void field_expect(struct fields *f, braid_http_view_t v) {
  struct list_iter it;
  const char *e;
  size_t n;
  list_init(&it, v);
  while (list_next(&it, &e, &n))
    if (EQ_CI(e, n, "100-continue"))
      f->expect_continue = true;
}

/* Note the header fields that decide framing. Returns 0 or an error
 * status. */
static int note_field(struct fields *f, braid_http_view_t name,
                      braid_http_view_t value) {
  switch (name.len) {
  case 4:
    if (EQ_CI(name.ptr, name.len, "host")) {
      if (f->host_count++ == 0)
        f->host = value;
    }
    break;
  case 6:
    if (EQ_CI(name.ptr, name.len, "expect"))
      field_expect(f, value);
    break;
  case 7:
    if (EQ_CI(name.ptr, name.len, "upgrade") && f->upgrade.ptr == NULL)
      f->upgrade = value;
    break;
  case 10:
    if (EQ_CI(name.ptr, name.len, "connection"))
      field_connection(f, value);
    break;
  case 14:
    if (EQ_CI(name.ptr, name.len, "content-length"))
      return field_content_length(f, value);
    break;
  case 17:
    if (EQ_CI(name.ptr, name.len, "transfer-encoding"))
      field_transfer_encoding(f, value);
    break;
  default:
    break;
  }
  return 0;
}

/* Find the LF ending the line that starts at `ls`, whose content may be at
 * most `max` bytes. Returns 1 with *lf and *content_end set, 0 when more
 * input is needed, -1 when the line is over-long whatever follows, or -2
 * for a bare LF in strict mode. */
static int find_line(const char *buf, size_t len, size_t ls, size_t max,
                     bool strict, size_t *lf, size_t *content_end) {
  size_t wend = sat_add(ls, sat_add(max, 2)); /* content, CR, LF */
  size_t avail = min_size(len, wend);
  const char *nl = memchr(buf + ls, '\n', avail - ls);
  if (nl == NULL)
    return len >= wend ? -1 : 0;
  size_t n = (size_t)(nl - buf), ce = n;
  if (ce > ls && buf[ce - 1] == '\r')
    ce--;
  else if (strict)
    return -2;
  if (ce - ls > max)
    return -1;
  *lf = n;
  *content_end = ce;
  return 1;
}

/* The header lines, from `i` (the start of a line in the header section
 * that starts at `hs`) to the empty line. Returns the index after the empty
 * line, or -1 / -2. */
static long parse_fields(const char *buf, size_t len, size_t hs, size_t i,
                         const struct cfg *c, struct headers_out *h,
                         struct fields *f, int *status, struct progress *pr) {
  size_t hend = sat_add(hs, c->max_hdr_bytes);
  for (;;) {
    /* Every byte of the header section must lie below hend; the head
     * still needs at least one more byte, so reaching hend is final. */
    if (i >= hend) {
      *status = 431;
      return BRAID_HTTP_ERROR;
    }
    if (i >= len)
      break;
    size_t wend = min_size(len, hend);
    char ch = buf[i];
    if (ch == '\r') {
      if (i + 1 >= wend) {
        if (wend == hend) {
          *status = 431;
          return BRAID_HTTP_ERROR;
        }
        break;
      }
      if (buf[i + 1] != '\n') {
        *status = 400; /* bare CR */
        return BRAID_HTTP_ERROR;
      }
      return (long)(i + 2);
    }
    if (ch == '\n') {
      if (c->strict) {
        *status = 400;
        return BRAID_HTTP_ERROR;
      }
      return (long)(i + 1);
    }
    if (ch == ' ' || ch == '\t') {
      /* obs-fold (RFC 9112 section 5.2), or whitespace between the start
       * line and the first field, which section 2.2 says to reject. */
      *status = 400;
      return BRAID_HTTP_ERROR;
    }
    const char *nl = memchr(buf + i, '\n', wend - i);
    if (nl == NULL) {
      if (wend == hend) {
        *status = 431;
        return BRAID_HTTP_ERROR;
      }
      break;
    }
    size_t n = (size_t)(nl - buf), ce = n;
    if (buf[ce - 1] == '\r') {
      ce--;
    } else if (c->strict) {
      *status = 400;
      return BRAID_HTTP_ERROR;
    }
    if (h->n >= h->max) {
      *status = 431;
      return BRAID_HTTP_ERROR;
    }
    size_t p = i;
    while (p < ce && BRAID__HTTP_IS(BRAID__HTTP_TCHAR, buf[p]))
      p++;
    /* An empty name, a name with a non-token byte, or whitespace before
     * the colon (RFC 9112 section 5.1: MUST reject, 400). */
    if (p == i || p == ce || buf[p] != ':') {
      *status = 400;
      return BRAID_HTTP_ERROR;
    }
    size_t vs = p + 1;
    while (vs < ce && is_ows(buf[vs]))
      vs++;
    for (size_t k = vs; k < ce; k++) {
      if (!BRAID__HTTP_IS(BRAID__HTTP_FVCHAR, buf[k])) {
        *status = 400; /* control character, or a CR not before the LF */
        return BRAID_HTTP_ERROR;
      }
    }
    size_t ve = ce;
    while (ve > vs && is_ows(buf[ve - 1]))
      ve--;
    braid_http_header_t hd;
    hd.name.ptr = buf + i;
    hd.name.len = p - i;
    hd.value.ptr = buf + vs;
    hd.value.len = ve - vs;
    if (!h->dry)
      h->arr[h->n] = hd;
    h->n++;
    int st = note_field(f, hd.name, hd.value);
    if (st != 0) {
      *status = st;
      return BRAID_HTTP_ERROR;
    }
    i = n + 1;
  }
  /* Incomplete: everything before `i` has been judged, and the state
   * needed to judge the rest is the line count and Content-Length. */
  pr->phase = PHASE_HEADERS;
  pr->pos = i;
  pr->hs = hs;
  pr->nh = h->n;
  pr->cl = f->cl;
  pr->have_cl = f->have_cl;
  return BRAID_HTTP_INCOMPLETE;
}

/* Which status an over-long request line gets, from its first `max`
 * bytes (all of which are present). */
static int long_request_line_status(const char *buf, size_t ls, size_t max) {
  const char *sp = memchr(buf + ls, ' ', max);
  size_t end = sp ? (size_t)(sp - buf) : ls + max;
  for (size_t k = ls; k < end; k++)
    if (!BRAID__HTTP_IS(BRAID__HTTP_TCHAR, buf[k]))
      return 400;
  if (sp == NULL)
    return 501; /* a method longer than any we implement (RFC 9112 s3) */
  return end == ls ? 400 : 414;
}

static void set_start_progress(struct progress *pr, size_t ls,
                               const struct cfg *c) {
  pr->phase = PHASE_START_LINE;
  pr->pos = ls;
  /* find_line() gives up once len >= ls + max + 2. */
  pr->limit = sat_add(ls, sat_add(c->max_line, 2)) - 1;
}

/* "HTTP/x.y" at buf[p..p+8). Returns 0 with *minor set, or a status. */
static int parse_version(const char *buf, size_t p, int *minor) {
  if (memcmp(buf + p, "HTTP/", 5) != 0 || buf[p + 6] != '.')
    return 400;
  unsigned major = (unsigned char)buf[p + 5] - (unsigned)'0';
  unsigned mnr = (unsigned char)buf[p + 7] - (unsigned)'0';
  if (major > 9 || mnr > 9)
    return 400;
  if (major != 1)
    return 505;
  *minor = (int)mnr;
  return 0;
}

static long parse_request_head(const char *buf, size_t len,
                               braid_http_request_t *req, const struct cfg *c,
                               struct fields *f, int *status,
                               struct progress *pr) {
  size_t i = 0;
  for (int k = 0; k < MAX_LEADING_EMPTY && i < len; k++) {
    if (buf[i] == '\n') {
      if (c->strict) {
        *status = 400;
        return BRAID_HTTP_ERROR;
      }
      i++;
    } else if (buf[i] == '\r') {
      if (i + 1 >= len) {
        pr->phase = PHASE_NONE; /* a CR that may yet be bare */
        return BRAID_HTTP_INCOMPLETE;
      }
      if (buf[i + 1] != '\n') {
        *status = 400;
        return BRAID_HTTP_ERROR;
      }
      i += 2;
    } else {
      break;
    }
  }
  size_t ls = i, lf = 0, ce = 0;
  if (ls >= len) {
    /* Only empty lines so far: the next byte may be a CR that turns out
     * bare. They are few (MAX_LEADING_EMPTY), so no hint is needed. */
    pr->phase = PHASE_NONE;
    return BRAID_HTTP_INCOMPLETE;
  }
  int r = find_line(buf, len, ls, c->max_line, c->strict, &lf, &ce);
  if (r == 0) {
    set_start_progress(pr, ls, c);
    return BRAID_HTTP_INCOMPLETE;
  }
  if (r == -1) {
    *status = long_request_line_status(buf, ls, c->max_line);
    return BRAID_HTTP_ERROR;
  }
  if (r == -2) {
    *status = 400;
    return BRAID_HTTP_ERROR;
  }

  /* method SP request-target SP HTTP-version, single spaces exactly. */
  size_t p = ls;
  while (p < ce && BRAID__HTTP_IS(BRAID__HTTP_TCHAR, buf[p]))
    p++;
  if (p == ls || p == ce || buf[p] != ' ') {
    *status = 400;
    return BRAID_HTTP_ERROR;
  }
  req->method.ptr = buf + ls;
  req->method.len = p - ls;
  size_t ts = ++p;
  while (p < ce && BRAID__HTTP_IS(BRAID__HTTP_TARGET, buf[p]))
    p++;
  if (p == ts || p == ce || buf[p] != ' ' || ce - (p + 1) != 8) {
    *status = 400;
    return BRAID_HTTP_ERROR;
  }
  req->target.ptr = buf + ts;
  req->target.len = p - ts;
  int st = parse_version(buf, p + 1, &req->minor_version);
  if (st != 0) {
    *status = st;
    return BRAID_HTTP_ERROR;
  }

  struct headers_out h = {req->headers,
                          min_size(req->headers_cap, c->max_headers), 0, false};
  long end = parse_fields(buf, len, lf + 1, lf + 1, c, &h, f, status, pr);
  req->num_headers = h.n;
  return end;
}

/* RFC 9112 section 6.3, as a server applies it to a request. */
static int request_framing(braid_http_request_t *req, const struct fields *f) {
  bool v11 = req->minor_version >= 1;
  if (f->have_te) {
    if (!v11)
      return 400; /* section 6.1: faulty framing in HTTP/1.0 */
    if (f->have_cl)
      return 400; /* request smuggling (section 6.3 item 3) */
    if (f->te_codings == 0 || !f->te_last_chunked || f->te_chunked > 1)
      return 400;
    if (f->te_unknown > 0)
      return 501;
    req->body_kind = BRAID_HTTP_BODY_CHUNKED;
  } else if (f->have_cl) {
    req->content_length = f->cl;
    req->body_kind = f->cl ? BRAID_HTTP_BODY_LENGTH : BRAID_HTTP_BODY_NONE;
  }
  /* RFC 9112 section 3.2: exactly one Host in HTTP/1.1; never two. */
  if (f->host_count > 1 || (v11 && f->host_count == 0))
    return 400;
  req->host = f->host;
  req->keep_alive = !f->conn_close && (v11 || f->conn_keep_alive);
  req->expect_continue = v11 && f->expect_continue;
  /* RFC 9110 section 7.8: Upgrade needs "Connection: upgrade" and is
   * ignored in HTTP/1.0. */
  if (v11 && f->conn_upgrade && f->upgrade.ptr != NULL)
    req->upgrade = f->upgrade;
  return 0;
}

/* Whether a full parse is due. If not, the input is still incomplete,
 * exactly as a full parse would find it, and the hint has been advanced
 * over the new bytes: in the start line by looking for its LF, in the
 * header section by judging each new line as the full parse would (without
 * storing it), from the line count and Content-Length saved in the hint.
 * Either way each byte is looked at once before the head is complete. */
static bool hint_wants_parse(struct braid_http__hint *h, const char *buf,
                             size_t len, const struct cfg *c,
                             size_t headers_cap) {
  if (h->phase_ == PHASE_NONE || len < h->len_ || h->pos_ > h->len_)
    return true;
  if (h->phase_ == PHASE_START_LINE) {
    if (len > h->limit_ || memchr(buf + h->pos_, '\n', len - h->pos_))
      return true;
    h->pos_ = h->len_ = len;
    return false;
  }
  struct headers_out hd = {NULL, min_size(headers_cap, c->max_headers), h->nh_,
                           true};
  struct fields f;
  struct progress pr;
  int status = 0;
  memset(&f, 0, sizeof f);
  f.cl = h->cl_;
  f.have_cl = h->have_cl_;
  if (parse_fields(buf, len, h->hs_, h->pos_, c, &hd, &f, &status, &pr) !=
      BRAID_HTTP_INCOMPLETE)
    return true;
  h->pos_ = pr.pos;
  h->len_ = len;
  h->nh_ = pr.nh;
  h->cl_ = pr.cl;
  h->have_cl_ = pr.have_cl;
  return false;
}

static void hint_set(struct braid_http__hint *h, const struct progress *pr,
                     size_t len) {
  memset(h, 0, sizeof *h);
  h->phase_ = pr->phase;
  h->pos_ = pr->pos;
  h->len_ = len;
  h->limit_ = pr->limit;
  h->hs_ = pr->hs;
  h->nh_ = pr->nh;
  h->cl_ = pr->cl;
  h->have_cl_ = pr->have_cl;
}

void braid_http_request_reset(braid_http_request_t *req) {
  braid_http_header_t *hdrs = req->headers;
  size_t cap = req->headers_cap;
  memset(req, 0, sizeof *req);
  req->headers = hdrs;
  req->headers_cap = cap;
}

void braid_http_response_reset(braid_http_response_t *res) {
  braid_http_header_t *hdrs = res->headers;
  size_t cap = res->headers_cap;
  bool head = res->request_was_head, connect = res->request_was_connect;
  memset(res, 0, sizeof *res);
  res->headers = hdrs;
  res->headers_cap = cap;
  res->request_was_head = head;
  res->request_was_connect = connect;
}

int braid_http_parse_request(const char *buf, size_t len,
                             braid_http_request_t *req,
                             const braid_http_limits_t *lim) {
  struct cfg c;
  load_cfg(&c, lim);
  if (!hint_wants_parse(&req->hint_, buf, len, &c, req->headers_cap))
    return BRAID_HTTP_INCOMPLETE;
  braid_http_request_reset(req);

  struct fields f;
  struct progress pr;
  int status = 0;
  memset(&pr, 0, sizeof pr);
  memset(&f, 0, sizeof f);
  long r = parse_request_head(buf, len, req, &c, &f, &status, &pr);
  if (r == BRAID_HTTP_INCOMPLETE) {
    hint_set(&req->hint_, &pr, len);
    return BRAID_HTTP_INCOMPLETE;
  }
  if (r >= 0)
    status = request_framing(req, &f);
  if (r < 0 || status != 0) {
    braid_http_request_reset(req);
    req->error_status = status;
    return BRAID_HTTP_ERROR;
  }
  return (int)r;
}

/* ------------------------------------------------------------------------
 * Responses
 * ------------------------------------------------------------------------ */

static long parse_response_head(const char *buf, size_t len,
                                braid_http_response_t *res, const struct cfg *c,
                                struct fields *f, int *status,
                                struct progress *pr) {
  size_t lf = 0, ce = 0;
  if (len == 0) {
    set_start_progress(pr, 0, c);
    return BRAID_HTTP_INCOMPLETE;
  }
  int r = find_line(buf, len, 0, c->max_line, c->strict, &lf, &ce);
  if (r == 0) {
    set_start_progress(pr, 0, c);
    return BRAID_HTTP_INCOMPLETE;
  }
  if (r < 0) {
    *status = 400;
    return BRAID_HTTP_ERROR;
  }
  /* HTTP-version SP 3DIGIT SP [ reason-phrase ]; a missing SP after the
   * code is accepted, as most clients do. */
  if (ce < 12 || buf[8] != ' ') {
    *status = 400;
    return BRAID_HTTP_ERROR;
  }
  int st = parse_version(buf, 0, &res->minor_version);
  if (st != 0) {
    *status = st;
    return BRAID_HTTP_ERROR;
  }
  int code = 0;
  for (size_t k = 9; k < 12; k++) {
    unsigned d = (unsigned char)buf[k] - (unsigned)'0';
    if (d > 9) {
      *status = 400;
      return BRAID_HTTP_ERROR;
    }
    code = code * 10 + (int)d;
  }
  if (code < 100 || code > 599) {
    *status = 400;
    return BRAID_HTTP_ERROR;
  }
  res->status = code;
  size_t rs = 12;
  if (ce > 12) {
    if (buf[12] != ' ') {
      *status = 400;
      return BRAID_HTTP_ERROR;
    }
    rs = 13;
    for (size_t k = rs; k < ce; k++) {
      if (!BRAID__HTTP_IS(BRAID__HTTP_FVCHAR, buf[k])) {
        *status = 400;
        return BRAID_HTTP_ERROR;
      }
    }
  }
  res->reason.ptr = buf + rs;
  res->reason.len = ce - rs;

  struct headers_out h = {res->headers,
                          min_size(res->headers_cap, c->max_headers), 0, false};
  long end = parse_fields(buf, len, lf + 1, lf + 1, c, &h, f, status, pr);
  res->num_headers = h.n;
  return end;
}

/* RFC 9112 section 6.3, as a client applies it to a response. */
static int response_framing(braid_http_response_t *res,
                            const struct fields *f) {
  bool v11 = res->minor_version >= 1;
  int s = res->status;
  if (f->have_te && f->have_cl)
    return 400;
  if (f->have_te && f->te_chunked > 1)
    return 400;
  res->keep_alive = !f->conn_close && (v11 || f->conn_keep_alive);
  /* Section 6.1: Transfer-Encoding in HTTP/1.0 means faulty framing; read
   * this message, then close. */
  if (f->have_te && !v11)
    res->keep_alive = false;
  bool no_body = (s >= 100 && s < 200) || s == 204 || s == 304 ||
                 res->request_was_head ||
                 (res->request_was_connect && s >= 200 && s < 300);
  if (f->have_cl)
    res->content_length = f->cl;
  if (no_body) {
    res->body_kind = BRAID_HTTP_BODY_NONE;
  } else if (f->have_te) {
    res->body_kind = f->te_last_chunked ? BRAID_HTTP_BODY_CHUNKED
                                        : BRAID_HTTP_BODY_UNTIL_CLOSE;
  } else if (f->have_cl) {
    res->body_kind = f->cl ? BRAID_HTTP_BODY_LENGTH : BRAID_HTTP_BODY_NONE;
  } else {
    res->body_kind = BRAID_HTTP_BODY_UNTIL_CLOSE;
  }
  if (res->body_kind == BRAID_HTTP_BODY_UNTIL_CLOSE)
    res->keep_alive = false;
  if (s == 101 && f->upgrade.ptr != NULL)
    res->upgrade = f->upgrade;
  return 0;
}

int braid_http_parse_response(const char *buf, size_t len,
                              braid_http_response_t *res,
                              const braid_http_limits_t *lim) {
  struct cfg c;
  load_cfg(&c, lim);
  if (!hint_wants_parse(&res->hint_, buf, len, &c, res->headers_cap))
    return BRAID_HTTP_INCOMPLETE;
  braid_http_response_reset(res);

  struct fields f;
  struct progress pr;
  int status = 0;
  memset(&pr, 0, sizeof pr);
  memset(&f, 0, sizeof f);
  long r = parse_response_head(buf, len, res, &c, &f, &status, &pr);
  if (r == BRAID_HTTP_INCOMPLETE) {
    hint_set(&res->hint_, &pr, len);
    return BRAID_HTTP_INCOMPLETE;
  }
  if (r >= 0)
    status = response_framing(res, &f);
  if (r < 0 || status != 0) {
    braid_http_response_reset(res);
    res->error_status = status;
    return BRAID_HTTP_ERROR;
  }
  return (int)r;
}
