/* The HTTP/1.1 server: connections, requests, responses (braid/http.h).
 *
 * A connection reads into its own buffer, parses one request head at a
 * time with braid_http_parse_request, copies the head into the request
 * (so the buffer can be reused for the body and the next request) and
 * calls the route's handler. The body is decoded from the same buffer as
 * the handler asks for it. Reading is paused whenever nobody wants the
 * bytes, so memory per connection stays at about one read plus one head.
 *
 * Re-entrancy: handlers call back into this file (finish from inside a
 * body callback, a write that fails and loses the connection...). Every
 * entry from the outside world (transport callbacks, timers) raises
 * c->depth; work that must not nest, such as starting the next pipelined
 * request, is left to the loop in conn_process() at depth 0. So a client
 * pipelining a thousand requests costs a loop, not a thousand frames. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "braid/braid.h"
#include "braid/http.h"
#include "protocols/http/internal.h"

#define HTTP_READ_MAX (64u * 1024u) /* bytes buffered past a head */
/* Body bytes from the caller's memory that cannot go out at once are
 * handed to the transport in owned pieces of at most this size: each
 * piece's release tells how far the client has read (see out_sample), so
 * the access log and the write timeout know it to within a piece. */
#define HTTP_OUT_PIECE (64u * 1024u)
#define HTTP_FILE_PIECE (64u * 1024u) /* fallback file read size */
#define HTTP_MAX_HEADERS 100
#define HTTP_SENDFILE_MIN (32u * 1024u) /* smaller files are read */
/* A sendfile is queued in pieces: the release of each written piece tells
 * how far the client has read (the access log's byte count on a reset,
 * the write timeout's progress), and the next piece is queued then. The
 * pieces grow with what was sent, from HTTP_OUT_PIECE up to this, so a
 * count is never short by more than 64 KiB or half of it, and a large
 * file costs few pieces. */
#define HTTP_SENDFILE_PIECE (1024u * 1024u)
#define HTTP_MAX_LISTENERS 8

typedef struct conn conn;

typedef struct route {
  char *method; /* NULL: any */
  char *prefix;
  size_t plen;
  braid_http_handler_cb cb;
  void *arg;
} route;

struct braid_http_server {
  braid_reactor_t *r;
  braid_http_server_options opts;
  char *server_name;
  route *routes;
  size_t nroutes, cap;
  braid_factory_t factory;
  braid_listener_t *listeners[HTTP_MAX_LISTENERS];
  size_t nlisteners;
  conn *conns; /* doubly linked */
  size_t nconns;
  int destroyed;
  int draining; /* braid_http_server_drain: no more keep-alive */
  int64_t date_sec;
  char date[32];
  braid__http_parse_probe_cb probe; /* test hook (internal.h) */
  void *probe_arg;
};

/* What happens to request body bytes in the connection's buffer. */
enum { BODY_NONE, BODY_HELD, BODY_DELIVER, BODY_DISCARD };
/* Which timeout is running: none (a handler is working), idle
 * (keep-alive), head (a request head is arriving), active (a body we
 * asked for is arriving), write (output is stalled: the client does not
 * read), linger (lingering close). */
enum { TM_NONE, TM_IDLE, TM_HEAD, TM_ACTIVE, TM_WRITE, TM_LINGER };
#define HTTP_LINGER BRAID_SEC(2)
/* braid_http_sendfile progress. */
enum { FILE_NONE, FILE_SENDING, FILE_MORE, FILE_PUMPING, FILE_DONE };

struct conn {
  braid_protocol_t p;
  braid_http_server_t *srv;
  braid_transport_t *t;
  conn *prev, *next;
  char *buf;
  size_t len, cap;
  braid_http_req_t *req; /* the request being answered */
  braid_timer_t timer, kick;
  int tstate;
  int depth;
  int lost;        /* connection_lost ran */
  int closing;     /* close or abort asked */
  int rpaused;     /* reading paused on the transport */
  int wpaused;     /* the transport asked us to stop producing */
  int lost_reason; /* set by our own aborts (timeouts) */
  int aborted;     /* abort asked */
  int lingering;   /* output shut down, input drained until EOF */
  /* Output accounting: bytes handed to the transport, and how many of
   * them it has written (a lower bound, see out_sample). */
  uint64_t out_total;
  uint64_t acked;
  /* TM_WRITE: `acked` when progress was last seen, and when. */
  uint64_t wmark;
  uint64_t wlast;
  /* A finished response still being written to a slow client: logged
   * when the client has read it (conn_resume) or the connection is lost. */
  braid_http_req_t *logq;
  /* The body of the current (or just finished) request. */
  int bmode;
  braid_http_body_kind_t bkind;
  uint64_t bleft; /* LENGTH: bytes to come */
  uint64_t bseen; /* bytes delivered or discarded */
  braid_http_chunked_decoder_t dec;
  braid_addr_t peer;
  /* The head parser's state, kept between segments so a head that
   * trickles in is scanned once, not from its start on every segment
   * (the parser's resume hint, braid/http_parser.h). Reset after every
   * head. */
  braid_http_request_t pr;
  braid_http_header_t hdrs[HTTP_MAX_HEADERS];
};

struct braid_http_req {
  conn *c; /* NULL once the connection is gone */
  braid_reactor_t *r;
  char *head; /* a copy of the request head */
  braid_http_header_t *hdrs;
  size_t nhdrs;
  braid_http_view_t method, target, query;
  char *path;
  const char *rest;
  int minor;
  bool is_head, keep_alive, expect;
  braid_http_body_kind_t bkind;
  uint64_t clen;
  /* Body in. */
  const braid_http_body_ops *bops;
  void *barg;
  int bstate; /* 0 not asked, 1 reading, 2 ended */
  int bpaused;
  int bend_pending; /* end(bend_status) is due from the loop */
  int bend_status;
  /* Response out. */
  int status;
  bool head_sent, chunked, no_body, close_after, finished, logged;
  uint64_t length, sent;
  uint64_t body_at; /* c->out_total where the body starts */
  const braid_http_stream_ops *sops;
  void *sarg;
  void *user;
  int guard; /* inside a callback that must not free the request */
  /* braid_http_sendfile. */
  int fstate;
  int ffd;
  int fstatus;
  uint64_t foff, fleft;
  braid_http_file_cb fdone;
  void *farg;
};

static void conn_process(conn *c);
static void conn_update(conn *c);
static void req_free(braid_http_req_t *q);

/* ------------------------------------------------------------------------
 * Small helpers
 * ------------------------------------------------------------------------ */

const char *braid_http_reason(int status) {
  switch (status) {
  case 100:
    return "Continue";
  case 101:
    return "Switching Protocols";
  case 200:
    return "OK";
  case 201:
    return "Created";
  case 202:
    return "Accepted";
  case 204:
    return "No Content";
  case 206:
    return "Partial Content";
  case 301:
    return "Moved Permanently";
  case 302:
    return "Found";
  case 303:
    return "See Other";
  case 304:
    return "Not Modified";
  case 307:
    return "Temporary Redirect";
  case 308:
    return "Permanent Redirect";
  case 400:
    return "Bad Request";
  case 401:
    return "Unauthorized";
  case 403:
    return "Forbidden";
  case 404:
    return "Not Found";
  case 405:
    return "Method Not Allowed";
  case 408:
    return "Request Timeout";
  case 411:
    return "Length Required";
  case 412:
    return "Precondition Failed";
  case 413:
    return "Content Too Large";
  case 414:
    return "URI Too Long";
  case 415:
    return "Unsupported Media Type";
  case 416:
    return "Range Not Satisfiable";
  case 417:
    return "Expectation Failed";
  case 426:
    return "Upgrade Required";
  case 431:
    return "Request Header Fields Too Large";
  case 500:
    return "Internal Server Error";
  case 501:
    return "Not Implemented";
  case 502:
    return "Bad Gateway";
  case 503:
    return "Service Unavailable";
  case 504:
    return "Gateway Timeout";
  case 505:
    return "HTTP Version Not Supported";
  }
  return "";
}

static const char wdays[7][4] = {"Sun", "Mon", "Tue", "Wed",
                                 "Thu", "Fri", "Sat"};
static const char months[12][4] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                   "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};

/* Days since 1970-01-01 for a civil date (Howard Hinnant's algorithm):
 * timegm() is not in C11 or POSIX, and mktime() would apply the local
 * zone. */
static int64_t days_from_civil(int64_t y, unsigned m, unsigned d) {
  y -= m <= 2;
  int64_t era = (y >= 0 ? y : y - 399) / 400;
  unsigned yoe = (unsigned)(y - era * 400);
  unsigned doy = (153 * (m + (m > 2 ? (unsigned)-3 : 9)) + 2) / 5 + d - 1;
  unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + (int64_t)doe - 719468;
}

size_t braid_http_date_format(int64_t unix_time, char *buf) {
  time_t tt = (time_t)unix_time;
  struct tm tm;
  if (gmtime_r(&tt, &tm) == NULL)
    memset(&tm, 0, sizeof tm);
  int n = snprintf(buf, 30, "%s, %02d %s %04d %02d:%02d:%02d GMT",
                   wdays[tm.tm_wday % 7], tm.tm_mday, months[tm.tm_mon % 12],
                   tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec);
  return n > 0 ? (size_t)n : 0;
}

static int month_index(const char *s) {
  for (int i = 0; i < 12; i++)
    if (strncmp(s, months[i], 3) == 0)
      return i;
  return -1;
}

int braid_http_date_parse(const char *s, size_t len, int64_t *out) {
  char b[64];
  if (s == NULL || out == NULL || len == 0 || len >= sizeof b)
    return BRAID_EINVAL;
  memcpy(b, s, len);
  b[len] = '\0';
  char wd[16], mon[4];
  int d, y, hh, mm, ss, n = 0;
  /* IMF-fixdate, RFC 850, asctime (RFC 9110 section 5.6.7). */
  if (sscanf(b, "%3s, %2d %3s %4d %2d:%2d:%2d GMT%n", wd, &d, mon, &y, &hh, &mm,
             &ss, &n) == 7 &&
      n == (int)len) {
  } else if (sscanf(b, "%15[A-Za-z], %2d-%3s-%2d %2d:%2d:%2d GMT%n", wd, &d,
                    mon, &y, &hh, &mm, &ss, &n) == 7 &&
             n == (int)len) {
    y += y < 70 ? 2000 : 1900;
  } else if (sscanf(b, "%3s %3s %2d %2d:%2d:%2d %4d%n", wd, mon, &d, &hh, &mm,
                    &ss, &y, &n) == 7 &&
             n == (int)len) {
  } else {
    return BRAID_EINVAL;
  }
  int m = month_index(mon);
  if (m < 0 || d < 1 || d > 31 || hh > 23 || mm > 59 || ss > 60 || hh < 0 ||
      mm < 0 || ss < 0)
    return BRAID_EINVAL;
  *out = days_from_civil(y, (unsigned)m + 1, (unsigned)d) * 86400 + hh * 3600 +
         mm * 60 + ss;
  return 0;
}

static int hexval(int ch) {
  if (ch >= '0' && ch <= '9')
    return ch - '0';
  if (ch >= 'a' && ch <= 'f')
    return ch - 'a' + 10;
  if (ch >= 'A' && ch <= 'F')
    return ch - 'A' + 10;
  return -1;
}

int braid_http_path_decode(const char *in, size_t len, char *out) {
  size_t o = 0;
  for (size_t i = 0; i < len; i++) {
    int ch = (unsigned char)in[i];
    if (ch == '%') {
      if (i + 2 >= len)
        return BRAID_EINVAL;
      int h = hexval(in[i + 1]), l = hexval(in[i + 2]);
      if (h < 0 || l < 0)
        return BRAID_EINVAL;
      ch = h * 16 + l;
      i += 2;
    }
    if (ch == 0)
      return BRAID_EINVAL;
    out[o++] = (char)ch;
  }
  out[o] = '\0';
  return (int)o;
}

static int ieq(const char *a, size_t alen, const char *b) {
  size_t blen = strlen(b);
  if (alen != blen)
    return 0;
  for (size_t i = 0; i < alen; i++) {
    int x = (unsigned char)a[i], y = (unsigned char)b[i];
    if (x >= 'A' && x <= 'Z')
      x += 32;
    if (y >= 'A' && y <= 'Z')
      y += 32;
    if (x != y)
      return 0;
  }
  return 1;
}

static const char *server_date(braid_http_server_t *s) {
  int64_t now = (int64_t)time(NULL);
  if (now != s->date_sec) {
    s->date_sec = now;
    braid_http_date_format(now, s->date);
  }
  return s->date;
}

static int field_ok(const char *s) {
  for (; *s; s++)
    if (*s == '\r' || *s == '\n')
      return 0;
  return 1;
}

/* ------------------------------------------------------------------------
 * Output accounting
 *
 * The access log wants the bytes a response really put on the wire, and
 * the write timeout wants to know whether the client reads at all. The
 * transport tells neither directly, but everything it has not written is
 * in its queue: written = out_total - write_queued(), at any moment the
 * queue is whole. It is not whole inside the release callbacks of a queue
 * being dropped (transports differ in when they zero their count), so
 * release callbacks only sample while the transport is open; a connection
 * lost after an orderly close wrote everything (conn_lost). `acked` is
 * the highest sample: a lower bound that only grows. Samples are taken
 * after every write, at every timer tick and in the release of every
 * owned piece, which is why large bodies go out in owned pieces.
 * ------------------------------------------------------------------------ */

static void out_sample(conn *c, int in_release) {
  if (c->lost || c->t == NULL)
    return;
  if (in_release && braid_transport_closing(c->t))
    return;
  size_t queued = braid_transport_write_queued(c->t);
  uint64_t w = c->out_total >= queued ? c->out_total - queued : 0;
  if (w > c->acked)
    c->acked = w;
}

/* Bytes handed to a closing transport are refused (close asked) or
 * dropped (failed): they are not counted as output. */
static int out_writev(conn *c, const braid_iovec_t *v, size_t n) {
  uint64_t total = 0;
  for (size_t i = 0; i < n; i++)
    total += v[i].len;
  int live = !braid_transport_closing(c->t);
  if (live)
    c->out_total += total;
  int rc = braid_transport_writev(c->t, v, n);
  if (rc < 0 && live)
    c->out_total -= total;
  out_sample(c, 0);
  return rc;
}

static int out_write(conn *c, const void *data, size_t len) {
  braid_iovec_t v = {data, len};
  return out_writev(c, &v, 1);
}

static void piece_release(void *data, void *arg) {
  braid_free(data);
  out_sample(arg, 1);
}

/* Hand over `data` (braid_malloc'ed, at most HTTP_OUT_PIECE bytes): freed
 * when written or dropped. On an error return it is freed here too. */
static int out_owned(conn *c, void *data, size_t len) {
  int live = !braid_transport_closing(c->t);
  if (live)
    c->out_total += len;
  int rc = braid_transport_write_owned(c->t, data, len, piece_release, c);
  if (rc < 0) {
    if (live)
      c->out_total -= len;
    braid_free(data);
  }
  out_sample(c, 0);
  return rc;
}

/* pre, then the body from the caller's memory, then post. Pieces that
 * the kernel may take at once (nothing is queued) are written straight
 * from the caller's memory; once output is queued, the rest is copied
 * into owned pieces (the transport would copy it anyway). */
static int out_body(conn *c, const void *pre, size_t pn, const void *data,
                    size_t len, const void *post, size_t qn) {
  const char *p = data;
  size_t first = len < HTTP_OUT_PIECE ? len : HTTP_OUT_PIECE;
  braid_iovec_t v[3] = {{pre, pn}, {p, first}, {post, 0}};
  if (first == len)
    v[2].len = qn;
  int rc = out_writev(c, v, 3);
  size_t off = first;
  while (rc == 0 && off < len) {
    size_t n = len - off < HTTP_OUT_PIECE ? len - off : HTTP_OUT_PIECE;
    char *piece = NULL;
    if (braid_transport_write_queued(c->t) > 0)
      piece = braid_malloc(n);
    if (piece != NULL) {
      memcpy(piece, p + off, n);
      rc = out_owned(c, piece, n);
    } else {
      /* Nothing queued (the kernel may take it all), or no memory for a
       * copy: the transport copies what it cannot write. */
      rc = out_write(c, p + off, n);
    }
    off += n;
  }
  if (rc == 0 && first < len && qn > 0)
    rc = out_write(c, post, qn);
  return rc;
}

/* ------------------------------------------------------------------------
 * Timers
 * ------------------------------------------------------------------------ */

static void timer_set(conn *c, int st, int restart);

static void conn_abort(conn *c, int reason) {
  if (c->lost || c->aborted)
    return;
  c->aborted = 1;
  c->closing = 1;
  c->lost_reason = reason;
  braid_transport_abort(c->t);
}

/* Close after the queued output. When request bytes may still be on their
 * way (an unread body, pipelined requests), closing at once would make the
 * kernel answer them with a reset that can destroy the response before
 * the client reads it; so shut down our side, keep reading and dropping
 * for a moment, and close when the client does (nginx's lingering close). */
static void conn_close(conn *c) {
  if (c->closing || c->lost)
    return;
  c->closing = 1;
  if (c->len > 0 || c->bmode != BODY_NONE) {
    c->lingering = 1;
    braid_transport_shutdown_write(c->t);
    if (c->rpaused) {
      c->rpaused = 0;
      braid_transport_resume_reading(c->t);
    }
    timer_set(c, TM_LINGER, 1);
    return;
  }
  braid_transport_close(c->t);
  /* A client that never reads what is queued is dropped after the write
   * timeout; one that reads slowly keeps the connection while it reads. */
  timer_set(c, TM_WRITE, 0);
}

static void write_raw(conn *c, const void *data, size_t len) {
  if (!c->closing && !c->lost)
    out_write(c, data, len);
}

static void access_log(braid_http_server_t *s, conn *c,
                       const braid_http_req_t *q, int status, uint64_t bytes);

/* Answer a request that never reached a handler (parse errors, 408, 413
 * for a declared length) and close. */
static void conn_fail(conn *c, int status, const braid_http_req_t *q) {
  char buf[512];
  const char *reason = braid_http_reason(status);
  char body[128];
  int blen = snprintf(body, sizeof body, "%d %s\n", status, reason);
  int n = snprintf(buf, sizeof buf,
                   "HTTP/1.1 %d %s\r\nDate: %s\r\nServer: %s\r\n"
                   "Content-Type: text/plain; charset=utf-8\r\n"
                   "Content-Length: %d\r\nConnection: close\r\n\r\n%s",
                   status, reason, server_date(c->srv), c->srv->server_name,
                   blen, body);
  if (n < 0 || (size_t)n >= sizeof buf)
    n = (int)sizeof buf - 1; /* cannot happen: server_name <= 128 bytes */
  write_raw(c, buf, (size_t)n);
  access_log(c->srv, c, q, status, (uint64_t)blen);
  conn_close(c);
}

static void timer_cb(braid_timer_t *t, void *arg) {
  (void)t;
  conn *c = arg;
  int st = c->tstate;
  c->tstate = TM_NONE;
  c->depth++;
  if (st == TM_HEAD) {
    /* Slowloris: the head did not arrive in time. */
    conn_fail(c, 408, NULL);
  } else if (st == TM_IDLE) {
    conn_close(c);
  } else if (st == TM_WRITE) {
    /* Has the client taken a byte since the last tick? Bytes it sends do
     * not count: a client that pipelines without reading is a stalled
     * one. */
    braid_reactor_t *r = c->srv->r;
    uint64_t now = braid_reactor_now(r);
    uint64_t limit = c->srv->opts.write_timeout;
    out_sample(c, 0);
    if (c->acked > c->wmark) {
      c->wmark = c->acked;
      c->wlast = now;
    }
    uint64_t quiet = now - c->wlast;
    if (quiet >= limit) {
      conn_abort(c, BRAID_ETIMEDOUT);
    } else {
      uint64_t d = limit - quiet < limit / 4 ? limit - quiet : limit / 4;
      c->tstate = TM_WRITE;
      braid_timer_start(r, &c->timer, d > 0 ? d : 1, timer_cb, c);
    }
  } else if (st == TM_ACTIVE || st == TM_LINGER) {
    conn_abort(c, BRAID_ETIMEDOUT);
  }
  c->depth--;
}

static void timer_set(conn *c, int st, int restart) {
  if (c->lost)
    return;
  if (st == c->tstate && !restart)
    return;
  if (braid_timer_active(&c->timer))
    braid_timer_cancel(&c->timer);
  c->tstate = st;
  if (st == TM_NONE)
    return;
  const braid_http_server_options *o = &c->srv->opts;
  uint64_t d = st == TM_HEAD ? o->header_timeout : o->idle_timeout;
  if (st == TM_LINGER)
    d = HTTP_LINGER; /* time for the client to read what we sent */
  /* Inside an I/O callback the reactor's cached clock is the one from
   * before the poller's wait, which may have blocked for a long time: a
   * deadline from it would fire early (at once, after an idle second).
   * Refresh it (a vDSO call). */
  braid_reactor_update_time(c->srv->r);
  if (st == TM_WRITE) {
    /* Progress is looked for every quarter of the timeout (timer_cb). */
    out_sample(c, 0);
    c->wmark = c->acked;
    c->wlast = braid_reactor_now(c->srv->r);
    d = o->write_timeout / 4 > 0 ? o->write_timeout / 4 : 1;
  }
  braid_timer_start(c->srv->r, &c->timer, d, timer_cb, c);
}

static void kick_cb(braid_timer_t *t, void *arg) {
  (void)t;
  conn_process(arg);
}

/* Run conn_process from the loop (at depth 0, on the next pass). */
static void conn_kick(conn *c) {
  if (!c->lost && !braid_timer_active(&c->kick))
    braid_timer_start(c->srv->r, &c->kick, 0, kick_cb, c);
}

/* ------------------------------------------------------------------------
 * Access log
 * ------------------------------------------------------------------------ */

static void access_log(braid_http_server_t *s, conn *c,
                       const braid_http_req_t *q, int status, uint64_t bytes) {
  if (s->opts.no_access_log)
    return;
  char peer[80] = "-";
  braid_addr_t a;
  if (c != NULL) {
    a = c->peer;
    if (braid_addr_format(&a, peer, sizeof peer) > 0) {
      /* CLF wants the host alone: drop ":port" (and IPv6 brackets). */
      char *colon = strrchr(peer, ':');
      if (colon != NULL && braid_addr_family(&a) != 0 &&
          braid_addr_port(&a) != 0)
        *colon = '\0';
      if (peer[0] == '[') {
        size_t l = strlen(peer);
        memmove(peer, peer + 1, l);
        if (l >= 2 && peer[l - 2] == ']')
          peer[l - 2] = '\0';
      }
    }
  }
  time_t now = time(NULL);
  struct tm tm;
  gmtime_r(&now, &tm);
  char when[40];
  snprintf(when, sizeof when, "%02d/%s/%04d:%02d:%02d:%02d +0000", tm.tm_mday,
           months[tm.tm_mon % 12], tm.tm_year + 1900, tm.tm_hour, tm.tm_min,
           tm.tm_sec);
  /* The request line is escaped: a log line must stay one line and must
   * not let a client forge quotes (CVE-2009-4487 style log injection). */
  char line[512];
  size_t o = 0;
  if (q != NULL) {
    const braid_http_view_t parts[2] = {q->method, q->target};
    for (int i = 0; i < 2; i++) {
      for (size_t k = 0; k < parts[i].len && o + 8 < sizeof line - 16; k++) {
        unsigned char ch = (unsigned char)parts[i].ptr[k];
        if (ch < 0x20 || ch >= 0x7f || ch == '"' || ch == '\\')
          o += (size_t)snprintf(line + o, sizeof line - o, "\\x%02x", ch);
        else
          line[o++] = (char)ch;
      }
      line[o++] = ' ';
    }
    o += (size_t)snprintf(line + o, sizeof line - o, "HTTP/1.%d", q->minor);
  } else {
    line[o++] = '-';
  }
  line[o] = '\0';
  braid_reactor_log(s->r, BRAID_LOG_INFO, "access",
                    "%s - - [%s] \"%s\" %d %llu", peer, when, line, status,
                    (unsigned long long)bytes);
}

/* Log q's line, once. `lost`: the connection went away first, so the
 * body bytes are those written by then (chunk framing included, never
 * more than the body), and a request that had no response yet is 499,
 * nginx's "client closed request". */
static void req_log(conn *c, braid_http_req_t *q, int lost) {
  if (q->logged)
    return;
  q->logged = true;
  int status = q->status;
  uint64_t body = q->no_body ? 0 : q->sent;
  if (lost && !q->head_sent) {
    status = 499;
    body = 0;
  } else if (lost) {
    uint64_t w = c->acked > q->body_at ? c->acked - q->body_at : 0;
    if (w < body)
      body = w;
  }
  access_log(c->srv, c, q, status, body);
}

/* The finished response that waited for a slow client is out (or lost). */
static void logq_flush(conn *c, int lost) {
  braid_http_req_t *q = c->logq;
  if (q == NULL)
    return;
  c->logq = NULL;
  req_log(c, q, lost);
  req_free(q);
}

/* ------------------------------------------------------------------------
 * Requests
 * ------------------------------------------------------------------------ */

static void req_free(braid_http_req_t *q) {
  braid_free(q->head);
  braid_free(q->path);
  braid_free(q->hdrs);
  braid_free(q);
}

/* Build a request from a parsed head in c->buf[0..n). */
static braid_http_req_t *req_new(conn *c, const braid_http_request_t *pr,
                                 size_t n) {
  braid_http_req_t *q = braid_calloc(1, sizeof *q);
  if (q == NULL)
    return NULL;
  q->c = c;
  q->r = c->srv->r;
  q->ffd = -1;
  q->head = braid_malloc(n + 1);
  q->hdrs =
      braid_malloc((pr->num_headers ? pr->num_headers : 1) * sizeof *q->hdrs);
  if (q->head == NULL || q->hdrs == NULL) {
    req_free(q);
    return NULL;
  }
  memcpy(q->head, c->buf, n);
  q->head[n] = '\0';
  /* Re-point every view from the connection's buffer into the copy. */
#define MOVE(v)                                                                \
  ((v).ptr != NULL                                                             \
       ? (braid_http_view_t){q->head + ((v).ptr - c->buf), (v).len}            \
       : (v))
  q->method = MOVE(pr->method);
  q->target = MOVE(pr->target);
  q->nhdrs = pr->num_headers;
  for (size_t i = 0; i < pr->num_headers; i++) {
    q->hdrs[i].name = MOVE(pr->headers[i].name);
    q->hdrs[i].value = MOVE(pr->headers[i].value);
  }
#undef MOVE
  q->minor = pr->minor_version;
  q->keep_alive = pr->keep_alive;
  q->expect = pr->expect_continue;
  q->bkind = pr->body_kind;
  q->clen = pr->content_length;
  q->is_head = q->method.len == 4 && memcmp(q->method.ptr, "HEAD", 4) == 0;
  return q;
}

/* Split the target into the decoded path and the query. Returns 0 or an
 * HTTP status to fail with. */
static int req_path(braid_http_req_t *q) {
  const char *p = q->target.ptr;
  size_t len = q->target.len;
  /* absolute-form (RFC 9112 section 3.2.2): skip scheme and authority. */
  if (len > 0 && p[0] != '/' && p[0] != '*') {
    const char *sep = memchr(p, ':', len);
    if (sep == NULL || (size_t)(sep - p) + 3 > len || sep[1] != '/' ||
        sep[2] != '/')
      return 400;
    const char *auth = sep + 3;
    const char *end = p + len;
    const char *slash = memchr(auth, '/', (size_t)(end - auth));
    if (slash == NULL) {
      p = "/";
      len = 1;
    } else {
      len = (size_t)(end - slash);
      p = slash;
    }
  }
  const char *qm = memchr(p, '?', len);
  size_t plen = qm ? (size_t)(qm - p) : len;
  if (qm != NULL) {
    q->query.ptr = qm + 1;
    q->query.len = len - plen - 1;
  }
  /* Drop a fragment a client should not have sent. */
  const char *hash = memchr(p, '#', plen);
  if (hash != NULL)
    plen = (size_t)(hash - p);
  q->path = braid_malloc(plen + 1);
  if (q->path == NULL)
    return 500;
  if (braid_http_path_decode(p, plen, q->path) < 0)
    return 400;
  q->rest = q->path;
  return 0;
}

/* Longest prefix wins; see braid/http.h. */
static int route_find(braid_http_server_t *s, braid_http_req_t *q,
                      route **out) {
  route *best = NULL;
  size_t best_len = 0;
  int path_matched = 0;
  const char *path = q->path;
  size_t len = strlen(path);
  for (size_t i = 0; i < s->nroutes; i++) {
    route *rt = &s->routes[i];
    if (rt->plen > len || memcmp(path, rt->prefix, rt->plen) != 0)
      continue;
    if (rt->prefix[rt->plen - 1] != '/' && path[rt->plen] != '\0' &&
        path[rt->plen] != '/')
      continue;
    path_matched = 1;
    if (rt->method != NULL &&
        (strlen(rt->method) != q->method.len ||
         memcmp(rt->method, q->method.ptr, q->method.len) != 0)) {
      /* A GET route also answers HEAD, as every server does. */
      if (!(q->is_head && strcmp(rt->method, "GET") == 0))
        continue;
    }
    if (best == NULL || rt->plen > best_len ||
        (rt->plen == best_len && best->method == NULL && rt->method != NULL)) {
      best = rt;
      best_len = rt->plen;
    }
  }
  *out = best;
  if (best == NULL)
    return path_matched ? 405 : 404;
  q->rest = path + best_len;
  if (best->prefix[best_len - 1] == '/')
    q->rest = path + best_len - 1;
  return 0;
}

/* ------------------------------------------------------------------------
 * The request body
 * ------------------------------------------------------------------------ */

static void body_end(braid_http_req_t *q, int status) {
  if (q->bstate != 1)
    return;
  q->bstate = 2;
  if (q->bops != NULL && q->bops->end != NULL)
    q->bops->end(q, status, q->barg);
}

/* Decode and hand out (or drop) body bytes from the buffer. Returns 1 if
 * the body is complete, 0 if more is needed or delivery stopped, -1 on an
 * error (framing or size). */
static int body_pump(conn *c) {
  braid_http_req_t *q = c->req;
  while (c->len > 0 && !c->closing) {
    if (c->bmode == BODY_DELIVER && (q == NULL || q->bpaused))
      return 0;
    size_t take;
    int done = 0;
    if (c->bkind == BRAID_HTTP_BODY_LENGTH) {
      take = c->len < c->bleft ? c->len : (size_t)c->bleft;
      c->bleft -= take;
      done = c->bleft == 0;
      if (c->bmode == BODY_DELIVER && take > 0)
        q->bops->data(q, c->buf, take, q->barg);
      memmove(c->buf, c->buf + take, c->len - take);
      c->len -= take;
      c->bseen += take;
    } else {
      /* In place: the decoder moves data to the front and reports what
       * follows the body (the next pipelined request). */
      size_t dlen = c->len;
      ptrdiff_t rc = braid_http_decode_chunked(&c->dec, c->buf, &dlen);
      if (rc == BRAID_HTTP_ERROR)
        return -1;
      c->bseen += dlen;
      if (c->bseen > c->srv->opts.max_body)
        return -1;
      if (c->bmode == BODY_DELIVER && dlen > 0)
        q->bops->data(q, c->buf, dlen, q->barg);
      if (rc >= 0) {
        memmove(c->buf, c->buf + dlen, (size_t)rc);
        c->len = (size_t)rc;
        done = 1;
      } else {
        c->len = 0;
      }
    }
    /* A data callback may have finished the request. */
    if (c->bmode == BODY_DELIVER && c->req != q)
      return done;
    if (done)
      return 1;
  }
  if (c->bkind == BRAID_HTTP_BODY_LENGTH && c->bleft == 0)
    return 1;
  return 0;
}

int braid_http_read_body(braid_http_req_t *q, const braid_http_body_ops *ops,
                         void *arg) {
  if (q == NULL || ops == NULL || ops->data == NULL)
    return BRAID_EINVAL;
  if (q->bstate != 0)
    return BRAID_EALREADY;
  q->bops = ops;
  q->barg = arg;
  q->bstate = 1;
  conn *c = q->c;
  if (c == NULL) {
    q->bend_pending = 1;
    q->bend_status = BRAID_ECLOSED;
    return 0;
  }
  if (c->bmode == BODY_NONE) {
    q->bend_pending = 1;
    q->bend_status = 0;
  } else {
    c->bmode = BODY_DELIVER;
    if (q->expect && !q->head_sent) {
      static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
      write_raw(c, cont, sizeof cont - 1);
      q->expect = false; /* answered */
    }
  }
  if (c->depth == 0)
    conn_process(c);
  else
    conn_kick(c);
  return 0;
}

int braid_http_pause_body(braid_http_req_t *q) {
  if (q == NULL)
    return BRAID_EINVAL;
  q->bpaused = 1;
  if (q->c != NULL)
    conn_update(q->c);
  return q->c != NULL ? 0 : BRAID_ECLOSED;
}

int braid_http_resume_body(braid_http_req_t *q) {
  if (q == NULL)
    return BRAID_EINVAL;
  q->bpaused = 0;
  if (q->c == NULL)
    return BRAID_ECLOSED;
  conn_kick(q->c);
  return 0;
}

/* ------------------------------------------------------------------------
 * The response
 * ------------------------------------------------------------------------ */

static int status_has_body(int status) {
  return !(status < 200 || status == 204 || status == 304);
}

/* Compose the head into a new buffer. */
static char *head_build(braid_http_req_t *q, int status,
                        const braid_http_field_t *f, size_t nf, uint64_t length,
                        size_t *outlen) {
  conn *c = q->c;
  braid_http_server_t *s = c->srv;
  size_t need = 256 + strlen(s->server_name);
  for (size_t i = 0; i < nf; i++) {
    if (f[i].name == NULL || f[i].value == NULL || !field_ok(f[i].name) ||
        !field_ok(f[i].value) || f[i].name[0] == '\0')
      return NULL;
    need += strlen(f[i].name) + strlen(f[i].value) + 4;
  }
  char *h = braid_malloc(need);
  if (h == NULL)
    return NULL;
  /* Keep-alive only when both sides can frame the next message. */
  bool keep = q->keep_alive && !s->destroyed && !s->draining && !q->close_after;
  if (c->bmode != BODY_NONE && q->bstate == 0 &&
      (q->expect ||
       (c->bkind == BRAID_HTTP_BODY_LENGTH && c->bleft > s->opts.max_body)))
    keep = false; /* the body was never asked for and cannot be skipped */
  q->no_body = !status_has_body(status);
  if (!q->no_body && length == BRAID_HTTP_LENGTH_UNKNOWN) {
    if (q->minor >= 1)
      q->chunked = true;
    else
      keep = false; /* HTTP/1.0: the close ends the body */
  }
  if (q->is_head)
    q->no_body = true;
  q->close_after = !keep;
  size_t o = (size_t)snprintf(h, need, "HTTP/1.1 %d %s\r\nDate: %s\r\n", status,
                              braid_http_reason(status), server_date(s));
  if (s->server_name[0] != '\0')
    o += (size_t)snprintf(h + o, need - o, "Server: %s\r\n", s->server_name);
  for (size_t i = 0; i < nf; i++)
    o += (size_t)snprintf(h + o, need - o, "%s: %s\r\n", f[i].name, f[i].value);
  if (status_has_body(status)) {
    if (length != BRAID_HTTP_LENGTH_UNKNOWN)
      o += (size_t)snprintf(h + o, need - o, "Content-Length: %llu\r\n",
                            (unsigned long long)length);
    else if (q->chunked)
      o += (size_t)snprintf(h + o, need - o, "Transfer-Encoding: chunked\r\n");
  }
  if (!keep)
    o += (size_t)snprintf(h + o, need - o, "Connection: close\r\n");
  else if (q->minor == 0)
    o += (size_t)snprintf(h + o, need - o, "Connection: keep-alive\r\n");
  o += (size_t)snprintf(h + o, need - o, "\r\n");
  *outlen = o;
  q->status = status;
  q->length = status_has_body(status) ? length : 0;
  q->head_sent = true;
  return h;
}

static int req_check(braid_http_req_t *q) {
  if (q == NULL)
    return BRAID_EINVAL;
  if (q->finished)
    return BRAID_EALREADY;
  /* A failed connection swallows writes until connection_lost: tell the
   * producer now, so it does not generate the rest of its body for
   * nothing. */
  if (q->c == NULL || q->c->closing || braid_transport_closing(q->c->t))
    return BRAID_ECLOSED;
  return 0;
}

int braid_http_start(braid_http_req_t *q, int status,
                     const braid_http_field_t *f, size_t nf, uint64_t length) {
  int rc = req_check(q);
  if (rc < 0)
    return rc;
  if (q->head_sent)
    return BRAID_EALREADY;
  if (status < 200 || status > 999 || (nf > 0 && f == NULL))
    return BRAID_EINVAL;
  size_t hl;
  char *h = head_build(q, status, f, nf, length, &hl);
  if (h == NULL)
    return BRAID_EINVAL;
  rc = out_write(q->c, h, hl);
  q->body_at = q->c->out_total;
  braid_free(h);
  return rc;
}

/* Body bytes out: framing, HEAD, length accounting. `owned` memory (at
 * most HTTP_OUT_PIECE bytes) is handed to the transport (freed by
 * braid_free when written). */
static int body_out(braid_http_req_t *q, const void *data, size_t len,
                    void *owned) {
  if (len == 0) {
    braid_free(owned);
    return 0;
  }
  if (q->length != BRAID_HTTP_LENGTH_UNKNOWN && (q->sent + len > q->length)) {
    braid_free(owned);
    return BRAID_ERANGE;
  }
  q->sent += len;
  if (q->no_body) {
    braid_free(owned);
    return 0;
  }
  conn *c = q->c;
  char hdr[24];
  size_t hn = 0;
  if (q->chunked)
    hn = (size_t)snprintf(hdr, sizeof hdr, "%zx\r\n", len);
  int rc;
  if (owned != NULL) {
    rc = hn ? out_write(c, hdr, hn) : 0;
    if (rc == 0)
      rc = out_owned(c, owned, len);
    else
      braid_free(owned);
    if (rc == 0 && q->chunked)
      rc = out_write(c, "\r\n", 2);
  } else {
    rc = out_body(c, hdr, hn, data, len, "\r\n", q->chunked ? 2 : 0);
  }
  return rc;
}

int braid_http_write(braid_http_req_t *q, const void *data, size_t len) {
  int rc = req_check(q);
  if (rc < 0)
    return rc;
  if (!q->head_sent)
    return BRAID_EINVAL;
  if (data == NULL && len > 0)
    return BRAID_EINVAL;
  return body_out(q, data, len, NULL);
}

static void req_done(braid_http_req_t *q);

int braid_http_respond(braid_http_req_t *q, int status,
                       const braid_http_field_t *f, size_t nf, const void *body,
                       size_t len) {
  int rc = req_check(q);
  if (rc < 0) {
    if (rc == BRAID_ECLOSED)
      braid_http_finish(q);
    return rc;
  }
  if (q->head_sent)
    return BRAID_EALREADY;
  if (status < 200 || status > 999 || (nf > 0 && f == NULL) ||
      (body == NULL && len > 0))
    return BRAID_EINVAL;
  size_t hl;
  char *h = head_build(q, status, f, nf, len, &hl);
  if (h == NULL)
    return BRAID_EINVAL;
  /* Head and body in one write: a small response is one syscall. */
  conn *c = q->c;
  uint64_t at = c->out_total;
  rc = out_body(c, h, hl, body, q->no_body ? 0 : len, NULL, 0);
  q->body_at = at + hl;
  braid_free(h);
  q->sent = len;
  int rc2 = braid_http_finish(q);
  return rc < 0 ? rc : rc2;
}

int braid_http_set_stream_ops(braid_http_req_t *q,
                              const braid_http_stream_ops *ops, void *arg) {
  if (q == NULL)
    return BRAID_EINVAL;
  q->sops = ops;
  q->sarg = arg;
  return 0;
}

bool braid_http_write_paused(const braid_http_req_t *q) {
  return q != NULL && q->c != NULL && q->c->wpaused;
}

/* The response is complete: log, decide about the connection, move on. */
static void req_done(braid_http_req_t *q) {
  conn *c = q->c;
  c->req = NULL;
  /* A response the client is slow to read, or that a failing transport
   * may not deliver, is logged when that is settled: when the client has
   * read it (conn_resume) or the connection is lost (conn_lost, with the
   * bytes written). No other request is dispatched meanwhile (the
   * transport asks to stop producing, or is going away), so one slot is
   * enough. */
  out_sample(c, 0);
  logq_flush(c, 0);
  int defer =
      c->acked < c->out_total && (c->wpaused || braid_transport_closing(c->t));
  if (defer)
    c->logq = q;
  else
    req_log(c, q, 0);
  if (q->bstate == 1) {
    /* The handler finished while still reading: stop delivering. */
    q->bstate = 2;
  }
  /* Draining: a response whose head promised keep-alive before the drain
   * began still ends its connection; the client sees an idle persistent
   * connection close, which RFC 9112 section 9.3 allows at any time. */
  int keep = !q->close_after && !c->srv->draining;
  if (q->length != BRAID_HTTP_LENGTH_UNKNOWN && q->sent < q->length &&
      !q->no_body)
    keep = 0; /* short body: the client cannot find the next response */
  if (c->bmode == BODY_DELIVER || c->bmode == BODY_HELD)
    c->bmode = BODY_DISCARD; /* skip the rest to reach the next request */
  if (!keep) {
    conn_close(c);
  }
  if (!defer)
    req_free(q);
  if (c->depth == 0)
    conn_process(c);
}

int braid_http_finish(braid_http_req_t *q) {
  if (q == NULL)
    return BRAID_EINVAL;
  if (q->finished)
    return BRAID_EALREADY;
  q->finished = true;
  if (q->c == NULL) {
    /* A zombie: the connection went away before. */
    if (q->guard == 0)
      req_free(q);
    return BRAID_ECLOSED;
  }
  conn *c = q->c;
  int rc = 0;
  if (!q->head_sent) {
    /* finish without a head: an empty 200, like Twisted's finish(). */
    size_t hl;
    char *h = head_build(q, 200, NULL, 0, 0, &hl);
    if (h != NULL) {
      write_raw(c, h, hl);
      q->body_at = c->out_total;
      braid_free(h);
    }
  }
  if (q->chunked && !q->no_body && !c->closing)
    rc = out_write(c, "0\r\n\r\n", 5);
  if (q->guard > 0 || q->fstate != FILE_NONE) {
    /* Inside our own callback into the handler (a file `done`), or a file
     * still being sent (its release needs the request): the request is
     * completed when that is over (conn_process). */
    return rc;
  }
  req_done(q);
  return rc;
}

/* ------------------------------------------------------------------------
 * Files
 * ------------------------------------------------------------------------ */

static void file_release(void *data, void *arg) {
  (void)data;
  braid_http_req_t *q = arg;
  q->fstate = q->fleft > 0 && q->fstatus == 0 ? FILE_MORE : FILE_DONE;
  if (q->c != NULL) {
    out_sample(q->c, 1);
    conn_kick(q->c);
  }
}

/* Queue the next piece of a sendfile body. */
static int file_send_piece(braid_http_req_t *q) {
  uint64_t piece = q->sent < HTTP_OUT_PIECE ? HTTP_OUT_PIECE : q->sent;
  if (piece > HTTP_SENDFILE_PIECE)
    piece = HTTP_SENDFILE_PIECE;
  size_t n = q->fleft < piece ? (size_t)q->fleft : (size_t)piece;
  uint64_t off = q->foff;
  /* Account first: the release may run inside the call. */
  conn *c = q->c;
  int live = !braid_transport_closing(c->t);
  q->fstate = FILE_SENDING;
  q->foff += n;
  q->fleft -= n;
  q->sent += n;
  if (live)
    c->out_total += n;
  int rc = braid_transport_sendfile(c->t, q->ffd, off, n, file_release, q);
  if (rc < 0) {
    q->foff -= n;
    q->fleft += n;
    q->sent -= n;
    if (live)
      c->out_total -= n;
  }
  out_sample(c, 0);
  return rc;
}

/* The fallback: read pieces while the transport takes them. */
static void file_pump(braid_http_req_t *q) {
  while (q->fstate == FILE_PUMPING && q->c != NULL && !q->c->wpaused &&
         !q->c->closing && !braid_transport_closing(q->c->t)) {
    if (q->fleft == 0) {
      q->fstate = FILE_DONE;
      conn_kick(q->c);
      return;
    }
    size_t n = q->fleft < HTTP_FILE_PIECE ? (size_t)q->fleft : HTTP_FILE_PIECE;
    char *b = braid_malloc(n);
    if (b == NULL) {
      q->fstatus = BRAID_ENOMEM;
      q->fstate = FILE_DONE;
      conn_kick(q->c);
      return;
    }
    ssize_t got = pread(q->ffd, b, n, (off_t)q->foff);
    if (got <= 0) {
      braid_free(b);
      q->fstatus = BRAID_EIO;
      q->fstate = FILE_DONE;
      conn_kick(q->c);
      return;
    }
    q->foff += (uint64_t)got;
    q->fleft -= (uint64_t)got;
    int rc = body_out(q, b, (size_t)got, b);
    if (rc < 0) {
      q->fstatus = rc;
      q->fstate = FILE_DONE;
      conn_kick(q->c);
      return;
    }
  }
}

static int c_no_sendfile(const braid_http_req_t *q) {
  return q->c->srv->opts.no_sendfile;
}

int braid_http_sendfile(braid_http_req_t *q, int fd, uint64_t offset,
                        uint64_t len, braid_http_file_cb done, void *arg) {
  int rc = req_check(q);
  if (rc < 0)
    return rc;
  if (fd < 0 || done == NULL || !q->head_sent)
    return BRAID_EINVAL;
  if (q->fstate != FILE_NONE)
    return BRAID_EBUSY;
  if (q->length != BRAID_HTTP_LENGTH_UNKNOWN && q->sent + len > q->length)
    return BRAID_ERANGE;
  q->ffd = fd;
  q->foff = offset;
  q->fleft = len;
  q->fdone = done;
  q->farg = arg;
  q->fstatus = 0;
  if (q->no_body || len == 0) {
    q->sent += len;
    q->fstate = FILE_DONE;
    conn_kick(q->c);
    return 0;
  }
  /* sendfile for Content-Length bodies; chunked ones are pumped so that
   * each piece gets its own chunk header. Small files are read: one pread
   * and a write cost less than the sendfile op's bookkeeping. */
  if (len >= HTTP_SENDFILE_MIN && len <= SIZE_MAX && !q->chunked &&
      !c_no_sendfile(q)) {
    rc = file_send_piece(q);
    if (rc == 0)
      return 0;
    q->fstate = FILE_NONE;
    if (rc != BRAID_ENOTSUP)
      return rc;
  }
  q->fstate = FILE_PUMPING;
  file_pump(q);
  return 0;
}

/* ------------------------------------------------------------------------
 * Connections
 * ------------------------------------------------------------------------ */

/* Read when somebody wants the bytes: the next head, a body that is being
 * delivered or skipped, or (bounded) what follows a request in progress. */
static void conn_update(conn *c) {
  if (c->lost || c->closing)
    return;
  int want;
  if (c->wpaused)
    /* The client does not read what we send: read nothing more from it
     * (no next request, no more body for a handler to answer) until it
     * does. What it sends meanwhile waits in the kernel's buffers, and
     * TCP stops it. */
    want = 0;
  else if (c->req == NULL)
    want = c->bmode == BODY_DISCARD || c->bmode == BODY_NONE;
  else
    /* While a handler works on a request whose body is in, keep reading
     * (pipelined requests are buffered, up to the limit below): that is
     * how a reset from a client that gave up is noticed, and the handler
     * told through `closed`, instead of when its answer is written. */
    want =
        (c->bmode == BODY_DELIVER && !c->req->bpaused) || c->bmode == BODY_NONE;
  /* Never buffer more than one read past what can be consumed. */
  if (c->req != NULL && c->len >= HTTP_READ_MAX)
    want = 0;
  if (want && c->rpaused) {
    c->rpaused = 0;
    braid_transport_resume_reading(c->t);
  } else if (!want && !c->rpaused) {
    c->rpaused = 1;
    braid_transport_pause_reading(c->t);
  }
  /* Timeouts follow what we are waiting for. */
  if (c->wpaused) {
    timer_set(c, TM_WRITE, 0);
  } else if (c->req == NULL) {
    if (c->bmode == BODY_DISCARD)
      timer_set(c, TM_ACTIVE, 0);
    else if (c->len > 0)
      timer_set(c, TM_HEAD, 0);
    else
      timer_set(c, TM_IDLE, 0);
  } else if (c->bmode == BODY_DELIVER && !c->req->bpaused) {
    timer_set(c, TM_ACTIVE, 0);
  } else {
    timer_set(c, TM_NONE, 0);
  }
}

static void dispatch(conn *c, braid_http_req_t *q) {
  braid_http_server_t *s = c->srv;
  route *rt = NULL;
  int st = req_path(q);
  c->req = q;
  if (st == 0 && strcmp(q->path, "*") == 0) {
    /* "OPTIONS *" asks about the server as a whole (RFC 9110 section
     * 9.3.7); "*" is no target for any other method. */
    if (q->method.len == 7 && memcmp(q->method.ptr, "OPTIONS", 7) == 0)
      braid_http_respond(q, 204, NULL, 0, NULL, 0);
    else {
      q->close_after = true;
      braid_http_respond(q, 400, NULL, 0, NULL, 0);
    }
    return;
  }
  if (st == 0)
    st = route_find(s, q, &rt);
  if (st != 0) {
    braid_http_field_t f[2] = {{"Content-Type", "text/plain; charset=utf-8"},
                               {"Allow", "GET, HEAD"}};
    char body[64];
    int n = snprintf(body, sizeof body, "%d %s\n", st, braid_http_reason(st));
    if (st >= 500 || st == 400)
      q->close_after = true;
    braid_http_respond(q, st, f, st == 405 ? 2 : 1, body, (size_t)n);
    return;
  }
  rt->cb(q, rt->arg);
}

/* Finish the loop work: bodies, pending callbacks, the next request. */
static void conn_process(conn *c) {
  if (c->lost)
    return;
  c->depth++;
  for (int guard = 0; guard < 1000000; guard++) {
    braid_http_req_t *q = c->req;
    if (q != NULL && q->bend_pending) {
      q->bend_pending = 0;
      body_end(q, q->bend_status);
      continue;
    }
    if (q != NULL && q->fstate == FILE_DONE) {
      q->fstate = FILE_NONE;
      q->guard++;
      q->fdone(q, q->fstatus, q->farg);
      q->guard--;
      if (q->finished && q->fstate == FILE_NONE)
        req_done(q);
      continue;
    }
    if (q != NULL && q->fstate == FILE_MORE) {
      if (c->closing || braid_transport_closing(c->t)) {
        q->fstatus = BRAID_ECLOSED;
        q->fstate = FILE_DONE;
      } else if (file_send_piece(q) < 0) {
        q->fstatus = BRAID_EIO;
        q->fstate = FILE_DONE;
      }
      continue;
    }
    if (q != NULL && q->fstate == FILE_PUMPING && !c->wpaused) {
      file_pump(q);
      if (q->fstate == FILE_DONE)
        continue;
    }
    if (c->closing)
      break;
    if (c->bmode == BODY_DELIVER || c->bmode == BODY_DISCARD) {
      if (c->bmode == BODY_DELIVER && (q == NULL || q->bpaused))
        break;
      int rc = body_pump(c);
      if (rc < 0) {
        c->bmode = BODY_NONE;
        if (q != NULL && q->bstate == 1) {
          q->close_after = true;
          body_end(q, c->bseen > c->srv->opts.max_body ? BRAID_ELIMIT
                                                       : BRAID_EPROTO);
          continue;
        }
        conn_close(c);
        break;
      }
      if (rc == 1) {
        int deliver = c->bmode == BODY_DELIVER;
        c->bmode = BODY_NONE;
        if (deliver && c->req == q && q != NULL)
          body_end(q, 0);
        continue;
      }
      if (c->req != q)
        continue;
      break; /* need more bytes */
    }
    if (q != NULL || c->len == 0)
      break;
    /* Not while the client does not read: the next response would only
     * add to what waits for it (conn_resume goes on). */
    if (c->wpaused)
      break;
    /* The next request head, carrying on where the last segment left
     * the parser. */
    braid_http_request_t *pr = &c->pr;
    if (c->srv->probe != NULL)
      c->srv->probe(c->buf, c->len, pr, c->srv->probe_arg);
    int n = braid_http_parse_request(c->buf, c->len, pr, &c->srv->opts.limits);
    if (n == BRAID_HTTP_INCOMPLETE)
      break;
    if (n < 0) {
      conn_fail(c, pr->error_status ? pr->error_status : 400, NULL);
      break;
    }
    q = req_new(c, pr, (size_t)n);
    braid_http_request_reset(pr); /* the next head starts afresh */
    if (q == NULL) {
      conn_fail(c, 503, NULL);
      break;
    }
    memmove(c->buf, c->buf + n, c->len - (size_t)n);
    c->len -= (size_t)n;
    c->bkind = q->bkind;
    c->bseen = 0;
    c->bleft = q->bkind == BRAID_HTTP_BODY_LENGTH ? q->clen : 0;
    memset(&c->dec, 0, sizeof c->dec);
    c->bmode = q->bkind == BRAID_HTTP_BODY_NONE ? BODY_NONE : BODY_HELD;
    timer_set(c, TM_NONE, 0);
    if (q->bkind == BRAID_HTTP_BODY_LENGTH && q->clen > c->srv->opts.max_body) {
      /* Refuse before the client sends a byte of it. */
      c->req = q;
      conn_fail(c, 413, q);
      c->req = NULL;
      req_free(q);
      break;
    }
    dispatch(c, q);
  }
  c->depth--;
  conn_update(c);
}

/* conn embeds its protocol first, so the protocol pointer is the conn. */
static conn *conn_of(braid_protocol_t *p) {
  return (conn *)(void *)p;
}

static void conn_made(braid_protocol_t *p, braid_transport_t *t) {
  conn *c = conn_of(p);
  c->t = t;
  /* Responses are written whole; Nagle would only delay the last piece. */
  braid_transport_set_nodelay(t, true);
  conn_update(c);
}

static void conn_data(braid_protocol_t *p, const void *data, size_t len) {
  conn *c = conn_of(p);
  if (c->closing || c->lost)
    return; /* lingering: drop it */
  if (c->len + len > c->cap) {
    size_t cap = c->cap ? c->cap : 4096;
    while (cap < c->len + len)
      cap *= 2;
    char *b = braid_realloc(c->buf, cap);
    if (b == NULL) {
      conn_abort(c, BRAID_ENOMEM);
      return;
    }
    c->buf = b;
    c->cap = cap;
  }
  memcpy(c->buf + c->len, data, len);
  c->len += len;
  /* Progress on a body restarts its timeout; a head's does not (that is
   * what stops a client sending one byte every few seconds). */
  if (c->tstate == TM_ACTIVE)
    timer_set(c, TM_ACTIVE, 1);
  conn_process(c);
  /* Give back a large buffer once it is empty: idle connections stay
   * small. */
  if (c->len == 0 && c->cap > 16384) {
    braid_free(c->buf);
    c->buf = NULL;
    c->cap = 0;
  }
}

static void conn_eof(braid_protocol_t *p) {
  conn *c = conn_of(p);
  if (c->closing) {
    /* Lingering or closing: the transport closes once our output is
     * flushed and shut down. */
    if (!c->lingering)
      return;
    braid_transport_close(c->t);
    return;
  }
  /* The client will send nothing more. A request in progress may still be
   * answered (a client may half-close after its request); otherwise we
   * are done. */
  if (c->req == NULL) {
    conn_close(c);
    return;
  }
  if (c->req->bstate == 1 && c->bmode == BODY_DELIVER) {
    c->bmode = BODY_NONE;
    c->req->close_after = true;
    c->depth++;
    body_end(c->req, BRAID_ECONNRESET);
    c->depth--;
  }
  if (c->req != NULL)
    c->req->close_after = true;
  if (c->depth == 0)
    conn_process(c);
}

static void conn_pause(braid_protocol_t *p) {
  conn *c = conn_of(p);
  c->wpaused = 1;
  braid_http_req_t *q = c->req;
  if (q != NULL && q->sops != NULL && q->sops->pause != NULL) {
    c->depth++;
    q->sops->pause(q, q->sarg);
    c->depth--;
  }
  conn_update(c);
}

static void conn_resume(braid_protocol_t *p) {
  conn *c = conn_of(p);
  c->wpaused = 0;
  /* The client read its way below the low-water mark: a response that
   * finished while it was slow is as good as sent. */
  out_sample(c, 0);
  logq_flush(c, 0);
  braid_http_req_t *q = c->req;
  if (q != NULL && q->sops != NULL && q->sops->resume != NULL) {
    c->depth++;
    q->sops->resume(q, q->sarg);
    c->depth--;
  }
  conn_process(c);
}

static void server_maybe_free(braid_http_server_t *s);

static void conn_lost(braid_protocol_t *p, int reason) {
  conn *c = conn_of(p);
  braid_http_server_t *s = c->srv;
  /* An orderly close wrote everything queued; otherwise the last sample
   * (out_sample) is what is known to have gone out. */
  if (reason == 0 && c->lost_reason == 0)
    c->acked = c->out_total;
  c->lost = 1;
  if (c->lost_reason != 0)
    reason = c->lost_reason;
  if (reason == 0)
    reason = BRAID_ECONNRESET; /* lost before the response was finished */
  if (braid_timer_active(&c->timer))
    braid_timer_cancel(&c->timer);
  if (braid_timer_active(&c->kick))
    braid_timer_cancel(&c->kick);
  /* Every request gets its log line, a response cut short included. */
  logq_flush(c, 1);
  braid_http_req_t *q = c->req;
  if (q != NULL) {
    req_log(c, q, 1);
    c->req = NULL;
    q->c = NULL;
    q->guard++;
    if (q->bstate == 1) {
      q->bend_pending = 0;
      body_end(q, reason);
    }
    if (q->fstate != FILE_NONE && !q->finished) {
      q->fstate = FILE_NONE;
      q->fdone(q, reason, q->farg);
    }
    int freed_by_closed = 0;
    if (!q->finished && q->sops != NULL && q->sops->closed != NULL) {
      q->sops->closed(q, reason, q->sarg);
      freed_by_closed = 1;
    }
    q->guard--;
    if (q->finished || freed_by_closed)
      req_free(q);
  }
  if (c->prev != NULL)
    c->prev->next = c->next;
  else
    s->conns = c->next;
  if (c->next != NULL)
    c->next->prev = c->prev;
  s->nconns--;
  braid_free(c->buf);
  braid_free(c);
  server_maybe_free(s);
}

static const braid_protocol_ops conn_ops = {
    .connection_made = conn_made,
    .data_received = conn_data,
    .eof_received = conn_eof,
    .connection_lost = conn_lost,
    .pause_writing = conn_pause,
    .resume_writing = conn_resume,
};

static braid_protocol_t *conn_build(braid_factory_t *f,
                                    const braid_addr_t *peer) {
  braid_http_server_t *s = f->user;
  if (s->destroyed)
    return NULL;
  conn *c = braid_calloc(1, sizeof *c);
  if (c == NULL)
    return NULL;
  c->p.ops = &conn_ops;
  c->p.user = c;
  c->srv = s;
  c->rpaused = 0;
  c->pr.headers = c->hdrs;
  c->pr.headers_cap = HTTP_MAX_HEADERS;
  if (peer != NULL)
    c->peer = *peer;
  c->next = s->conns;
  if (s->conns != NULL)
    s->conns->prev = c;
  s->conns = c;
  s->nconns++;
  return &c->p;
}

/* ------------------------------------------------------------------------
 * The server
 * ------------------------------------------------------------------------ */

static char *dupstr(const char *s) {
  size_t n = strlen(s) + 1;
  char *d = braid_malloc(n);
  if (d != NULL)
    memcpy(d, s, n);
  return d;
}

int braid_http_server_create(braid_reactor_t *r,
                             const braid_http_server_options *opts,
                             braid_http_server_t **out) {
  if (r == NULL || out == NULL)
    return BRAID_EINVAL;
  *out = NULL;
  braid_http_server_t *s = braid_calloc(1, sizeof *s);
  if (s == NULL)
    return BRAID_ENOMEM;
  s->r = r;
  if (opts != NULL)
    s->opts = *opts;
  if (s->opts.header_timeout == 0)
    s->opts.header_timeout = BRAID_SEC(10);
  if (s->opts.idle_timeout == 0)
    s->opts.idle_timeout = BRAID_SEC(60);
  /* nginx's send_timeout default. */
  if (s->opts.write_timeout == 0)
    s->opts.write_timeout = BRAID_SEC(60);
  if (s->opts.max_body == 0)
    s->opts.max_body = 16u * 1024u * 1024u;
  s->server_name = dupstr(s->opts.server_name ? s->opts.server_name : "braid");
  if (s->server_name == NULL || !field_ok(s->server_name) ||
      strlen(s->server_name) > 128) {
    int rc = s->server_name == NULL ? BRAID_ENOMEM : BRAID_EINVAL;
    braid_free(s->server_name);
    braid_free(s);
    return rc;
  }
  s->opts.server_name = NULL;
  s->factory.build = conn_build;
  s->factory.user = s;
  s->date_sec = -1;
  *out = s;
  return 0;
}

int braid_http_route(braid_http_server_t *s, const char *method,
                     const char *prefix, braid_http_handler_cb cb, void *arg) {
  if (s == NULL || prefix == NULL || prefix[0] != '/' || cb == NULL)
    return BRAID_EINVAL;
  for (size_t i = 0; i < s->nroutes; i++) {
    route *rt = &s->routes[i];
    if (strcmp(rt->prefix, prefix) == 0 &&
        ((rt->method == NULL && method == NULL) ||
         (rt->method != NULL && method != NULL &&
          strcmp(rt->method, method) == 0)))
      return BRAID_EEXIST;
  }
  if (s->nroutes == s->cap) {
    size_t cap = s->cap ? s->cap * 2 : 8;
    route *n = braid_realloc(s->routes, cap * sizeof *n);
    if (n == NULL)
      return BRAID_ENOMEM;
    s->routes = n;
    s->cap = cap;
  }
  route *rt = &s->routes[s->nroutes];
  rt->method = method ? dupstr(method) : NULL;
  rt->prefix = dupstr(prefix);
  if ((method != NULL && rt->method == NULL) || rt->prefix == NULL) {
    braid_free(rt->method);
    braid_free(rt->prefix);
    return BRAID_ENOMEM;
  }
  rt->plen = strlen(prefix);
  rt->cb = cb;
  rt->arg = arg;
  s->nroutes++;
  return 0;
}

braid_factory_t *braid_http_server_factory(braid_http_server_t *s) {
  return s != NULL ? &s->factory : NULL;
}

int braid_http_server_listen(braid_http_server_t *s, const char *endpoint,
                             char *err, size_t errlen) {
  if (s == NULL || endpoint == NULL || s->destroyed)
    return BRAID_EINVAL;
  if (s->nlisteners == HTTP_MAX_LISTENERS)
    return BRAID_ELIMIT;
  braid_listener_t *l;
  int rc = braid_endpoint_listen(s->r, endpoint, &s->factory, &l, err, errlen);
  if (rc < 0)
    return rc;
  s->listeners[s->nlisteners++] = l;
  return 0;
}

int braid_http_server_addr(const braid_http_server_t *s, braid_addr_t *out) {
  if (s == NULL || out == NULL || s->nlisteners == 0)
    return BRAID_EINVAL;
  return braid_listener_addr(s->listeners[0], out);
}

size_t braid_http_server_connections(const braid_http_server_t *s) {
  return s != NULL ? s->nconns : 0;
}

void braid_http_server_stats_get(const braid_http_server_t *s,
                                 braid_http_server_stats *out) {
  if (out == NULL)
    return;
  memset(out, 0, sizeof *out);
  if (s == NULL)
    return;
  out->connections = s->nconns;
  for (const conn *c = s->conns; c != NULL; c = c->next) {
    out->input_buffered += c->cap;
    uint64_t q = c->t != NULL ? braid_transport_write_queued(c->t) : 0;
    out->output_queued += q;
    if (q > out->output_queued_max)
      out->output_queued_max = q;
  }
}

void braid__http_server_set_parse_probe(braid_http_server_t *s,
                                        braid__http_parse_probe_cb cb,
                                        void *arg) {
  s->probe = cb;
  s->probe_arg = arg;
}

static void server_maybe_free(braid_http_server_t *s) {
  if (!s->destroyed || s->nconns > 0)
    return;
  for (size_t i = 0; i < s->nroutes; i++) {
    braid_free(s->routes[i].method);
    braid_free(s->routes[i].prefix);
  }
  braid_free(s->routes);
  braid_free(s->server_name);
  braid_free(s);
}

int braid_http_server_drain(braid_http_server_t *s) {
  if (s == NULL || s->destroyed)
    return BRAID_EINVAL;
  if (s->draining)
    return 0;
  s->draining = 1;
  for (size_t i = 0; i < s->nlisteners; i++)
    braid_listener_close(s->listeners[i]);
  s->nlisteners = 0;
  /* Idle connections close now; the others after their response (see
   * req_done). A connection holding part of a head, or a body to skip, is
   * not idle: its request is in flight. */
  for (conn *c = s->conns, *next; c != NULL; c = next) {
    next = c->next;
    if (c->req == NULL && c->len == 0 && c->bmode == BODY_NONE)
      conn_close(c);
  }
  return 0;
}

void braid_http_server_destroy(braid_http_server_t *s) {
  if (s == NULL || s->destroyed)
    return;
  s->destroyed = 1;
  for (size_t i = 0; i < s->nlisteners; i++)
    braid_listener_close(s->listeners[i]);
  s->nlisteners = 0;
  for (conn *c = s->conns; c != NULL; c = c->next)
    conn_abort(c, BRAID_ECONNABORTED);
  server_maybe_free(s);
}

/* ------------------------------------------------------------------------
 * Request accessors
 * ------------------------------------------------------------------------ */

braid_http_view_t braid_http_req_method(const braid_http_req_t *q) {
  return q->method;
}
braid_http_view_t braid_http_req_target(const braid_http_req_t *q) {
  return q->target;
}
const char *braid_http_req_path(const braid_http_req_t *q) {
  return q->path;
}
const char *braid_http_req_rest(const braid_http_req_t *q) {
  return q->rest;
}
braid_http_view_t braid_http_req_query(const braid_http_req_t *q) {
  return q->query;
}
int braid_http_req_minor_version(const braid_http_req_t *q) {
  return q->minor;
}
bool braid_http_req_is_head(const braid_http_req_t *q) {
  return q->is_head;
}

braid_http_view_t braid_http_req_header(const braid_http_req_t *q,
                                        const char *name) {
  for (size_t i = 0; i < q->nhdrs; i++)
    if (ieq(q->hdrs[i].name.ptr, q->hdrs[i].name.len, name))
      return q->hdrs[i].value;
  return (braid_http_view_t){NULL, 0};
}

const braid_http_header_t *braid_http_req_headers(const braid_http_req_t *q,
                                                  size_t *n) {
  if (n != NULL)
    *n = q->nhdrs;
  return q->hdrs;
}

braid_http_body_kind_t braid_http_req_body_kind(const braid_http_req_t *q) {
  return q->bkind;
}
uint64_t braid_http_req_content_length(const braid_http_req_t *q) {
  return q->clen;
}

int braid_http_req_peer(const braid_http_req_t *q, braid_addr_t *out) {
  if (q->c == NULL)
    return BRAID_ECLOSED;
  *out = q->c->peer;
  return 0;
}

braid_reactor_t *braid_http_req_reactor(const braid_http_req_t *q) {
  return q->r;
}

void braid_http_req_set_user(braid_http_req_t *q, void *user) {
  q->user = user;
}
void *braid_http_req_user(const braid_http_req_t *q) {
  return q->user;
}
