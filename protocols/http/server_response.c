/* The HTTP server's responses: heads, bodies (whole, streamed, chunked),
 * files (sendfile, or read in pieces as the client drains them), and the
 * accounting of what the transport has written. */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "protocols/http/server_internal.h"

int braid__hs_field_ok(const char *s) {
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
 * lost after an orderly close wrote everything (connection_lost). `acked` is
 * the highest sample: a lower bound that only grows. Samples are taken
 * after every write, at every timer tick and in the release of every
 * owned piece, which is why large bodies go out in owned pieces.
 * ------------------------------------------------------------------------ */

void braid__hs_out_sample(hs_conn *c, int in_release) {
  /* After an abort nothing more is known to have gone out. */
  if (c->t == NULL || c->state == BRAID__HTTP_CS_ABORTED ||
      c->state == BRAID__HTTP_CS_CLOSED)
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
static int out_writev(hs_conn *c, const braid_iovec_t *v, size_t n) {
  uint64_t total = 0;
  for (size_t i = 0; i < n; i++)
    total += v[i].len;
  int live = !braid_transport_closing(c->t);
  if (live)
    c->out_total += total;
  int rc = braid_transport_writev(c->t, v, n);
  if (rc < 0 && live)
    c->out_total -= total;
  braid__hs_out_sample(c, 0);
  return rc;
}

int braid__hs_out_write(hs_conn *c, const void *data, size_t len) {
  braid_iovec_t v = {data, len};
  return out_writev(c, &v, 1);
}

static void piece_release(void *data, void *arg) {
  braid_free(data);
  braid__hs_out_sample(arg, 1);
}

/* Hand over `data` (braid_malloc'ed, at most HS_OUT_PIECE bytes): freed
 * when written or dropped. On an error return it is freed here too. */
static int out_owned(hs_conn *c, void *data, size_t len) {
  int live = !braid_transport_closing(c->t);
  if (live)
    c->out_total += len;
  int rc = braid_transport_write_owned(c->t, data, len, piece_release, c);
  if (rc < 0) {
    if (live)
      c->out_total -= len;
    braid_free(data);
  }
  braid__hs_out_sample(c, 0);
  return rc;
}

/* pre, then the body from the caller's memory, then post. Pieces that
 * the kernel may take at once (nothing is queued) are written straight
 * from the caller's memory; once output is queued, the rest is copied
 * into owned pieces (the transport would copy it anyway). */
static int out_body(hs_conn *c, const void *pre, size_t pn, const void *data,
                    size_t len, const void *post, size_t qn) {
  const char *p = data;
  size_t first = len < HS_OUT_PIECE ? len : HS_OUT_PIECE;
  braid_iovec_t v[3] = {{pre, pn}, {p, first}, {post, 0}};
  if (first == len)
    v[2].len = qn;
  int rc = out_writev(c, v, 3);
  size_t off = first;
  while (rc == 0 && off < len) {
    size_t n = len - off < HS_OUT_PIECE ? len - off : HS_OUT_PIECE;
    char *piece = NULL;
    if (braid_transport_write_queued(c->t) > 0)
      piece = braid_malloc(n);
    if (piece != NULL) {
      memcpy(piece, p + off, n);
      rc = out_owned(c, piece, n);
    } else {
      /* Nothing queued (the kernel may take it all), or no memory for a
       * copy: the transport copies what it cannot write. */
      rc = braid__hs_out_write(c, p + off, n);
    }
    off += n;
  }
  if (rc == 0 && first < len && qn > 0)
    rc = braid__hs_out_write(c, post, qn);
  return rc;
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
  hs_conn *c = q->c;
  braid_http_server_t *s = c->srv;
  size_t need = 256 + strlen(s->server_name);
  for (size_t i = 0; i < nf; i++) {
    if (f[i].name == NULL || f[i].value == NULL ||
        !braid__hs_field_ok(f[i].name) || !braid__hs_field_ok(f[i].value) ||
        f[i].name[0] == '\0')
      return NULL;
    need += strlen(f[i].name) + strlen(f[i].value) + 4;
  }
  char *h = braid_malloc(need);
  if (h == NULL)
    return NULL;
  /* Keep-alive only when both sides can frame the next message. */
  bool keep = q->keep_alive && !s->destroyed && !s->draining && !q->close_after;
  if (c->body_pending && q->bstate == HS_BODY_UNASKED &&
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
                              braid_http_reason(status), braid__hs_date(s));
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
  if (q->c == NULL || !braid__hs_live(q->c) || braid_transport_closing(q->c->t))
    return BRAID_ECLOSED;
  braid__hs_handler_alive(q->c);
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
  rc = braid__hs_out_write(q->c, h, hl);
  q->body_at = q->c->out_total;
  braid_free(h);
  return rc;
}

/* Body bytes out: framing, HEAD, length accounting. `owned` memory (at
 * most HS_OUT_PIECE bytes) is handed to the transport (freed by
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
  hs_conn *c = q->c;
  char hdr[24];
  size_t hn = 0;
  if (q->chunked)
    hn = (size_t)snprintf(hdr, sizeof hdr, "%zx\r\n", len);
  int rc;
  if (owned != NULL) {
    rc = hn ? braid__hs_out_write(c, hdr, hn) : 0;
    if (rc == 0)
      rc = out_owned(c, owned, len);
    else
      braid_free(owned);
    if (rc == 0 && q->chunked)
      rc = braid__hs_out_write(c, "\r\n", 2);
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
  hs_conn *c = q->c;
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
void braid__hs_req_done(braid_http_req_t *q) {
  hs_conn *c = q->c;
  c->req = NULL;
  /* A response the client is slow to read, or that a failing transport
   * may not deliver, is logged when that is settled: when the client has
   * read it (resume_writing) or the connection is lost (with the
   * bytes written). No other request is dispatched meanwhile (the
   * transport asks to stop producing, or is going away), so one slot is
   * enough. */
  braid__hs_out_sample(c, 0);
  braid__hs_logq_flush(c, 0);
  int defer =
      c->acked < c->out_total && (c->wpaused || braid_transport_closing(c->t));
  if (defer)
    c->logq = q;
  else
    braid__hs_req_log(c, q, 0);
  /* The handler finished while still reading: stop delivering. What is
   * left of the body is skipped to reach the next request (the discard
   * state), unless the connection closes. */
  if (q->bstate == HS_BODY_READING)
    q->bstate = HS_BODY_ENDED;
  /* Draining: a response whose head promised keep-alive before the drain
   * began still ends its connection; the client sees an idle persistent
   * connection close, which RFC 9112 section 9.6 allows at any time. */
  int keep = !q->close_after && !c->srv->draining;
  if (q->length != BRAID_HTTP_LENGTH_UNKNOWN && q->sent < q->length &&
      !q->no_body)
    keep = 0; /* short body: the client cannot find the next response */
  if (!keep)
    braid__hs_close(c);
  if (!defer)
    braid__hs_req_free(q);
  if (c->depth == 0)
    braid__hs_process(c);
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
      braid__hs_req_free(q);
    return BRAID_ECLOSED;
  }
  hs_conn *c = q->c;
  if (c->state == BRAID__HTTP_CS_ABORTED) {
    /* connection_lost is on its way: it logs the request as cut short
     * and frees it. */
    return BRAID_ECLOSED;
  }
  int rc = 0;
  if (!q->head_sent) {
    /* finish without a head: an empty 200, like Twisted's finish(). */
    size_t hl;
    char *h = head_build(q, 200, NULL, 0, 0, &hl);
    if (h != NULL) {
      braid__hs_write_raw(c, h, hl);
      q->body_at = c->out_total;
      braid_free(h);
    }
  }
  if (q->chunked && !q->no_body && braid__hs_live(c))
    rc = braid__hs_out_write(c, "0\r\n\r\n", 5);
  if (q->guard > 0 || q->fstate != HS_FILE_NONE) {
    /* Inside our own callback into the handler (a file `done`), or a file
     * still being sent (its release needs the request): the request is
     * completed when that is over (braid__hs_process). */
    return rc;
  }
  braid__hs_req_done(q);
  return rc;
}

/* ------------------------------------------------------------------------
 * Files
 * ------------------------------------------------------------------------ */

static void file_release(void *data, void *arg) {
  (void)data;
  braid_http_req_t *q = arg;
  q->fstate = q->fleft > 0 && q->fstatus == 0 ? HS_FILE_MORE : HS_FILE_DONE;
  if (q->c != NULL) {
    braid__hs_out_sample(q->c, 1);
    braid__hs_kick(q->c);
  }
}

/* Queue the next piece of a sendfile body. */
int braid__hs_file_send_piece(braid_http_req_t *q) {
  uint64_t piece = q->sent < HS_OUT_PIECE ? HS_OUT_PIECE : q->sent;
  if (piece > HS_SENDFILE_PIECE)
    piece = HS_SENDFILE_PIECE;
  size_t n = q->fleft < piece ? (size_t)q->fleft : (size_t)piece;
  uint64_t off = q->foff;
  /* Account first: the release may run inside the call. */
  hs_conn *c = q->c;
  int live = !braid_transport_closing(c->t);
  q->fstate = HS_FILE_SENDING;
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
  braid__hs_out_sample(c, 0);
  return rc;
}

/* The fallback: read pieces while the transport takes them. */
void braid__hs_file_pump(braid_http_req_t *q) {
  while (q->fstate == HS_FILE_PUMPING && q->c != NULL && !q->c->wpaused &&
         braid__hs_live(q->c) && !braid_transport_closing(q->c->t)) {
    if (q->fleft == 0) {
      q->fstate = HS_FILE_DONE;
      braid__hs_kick(q->c);
      return;
    }
    size_t n = q->fleft < HS_FILE_PIECE ? (size_t)q->fleft : HS_FILE_PIECE;
    char *b = braid_malloc(n);
    if (b == NULL) {
      q->fstatus = BRAID_ENOMEM;
      q->fstate = HS_FILE_DONE;
      braid__hs_kick(q->c);
      return;
    }
    ssize_t got = pread(q->ffd, b, n, (off_t)q->foff);
    if (got <= 0) {
      braid_free(b);
      q->fstatus = BRAID_EIO;
      q->fstate = HS_FILE_DONE;
      braid__hs_kick(q->c);
      return;
    }
    q->foff += (uint64_t)got;
    q->fleft -= (uint64_t)got;
    int rc = body_out(q, b, (size_t)got, b);
    if (rc < 0) {
      q->fstatus = rc;
      q->fstate = HS_FILE_DONE;
      braid__hs_kick(q->c);
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
  if (q->fstate != HS_FILE_NONE)
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
    q->fstate = HS_FILE_DONE;
    braid__hs_kick(q->c);
    return 0;
  }
  /* sendfile for Content-Length bodies; chunked ones are pumped so that
   * each piece gets its own chunk header. Small files are read: one pread
   * and a write cost less than the sendfile op's bookkeeping. */
  if (len >= HS_SENDFILE_MIN && len <= SIZE_MAX && !q->chunked &&
      !c_no_sendfile(q)) {
    rc = braid__hs_file_send_piece(q);
    if (rc == 0)
      return 0;
    q->fstate = HS_FILE_NONE;
    if (rc != BRAID_ENOTSUP)
      return rc;
  }
  q->fstate = HS_FILE_PUMPING;
  braid__hs_file_pump(q);
  return 0;
}
