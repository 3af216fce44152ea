/* The HTTP server's request object: built from a parsed head, its
 * accessors, its body (read as the handler asks), and its end when the
 * connection goes first. */
#include <string.h>

#include "protocols/http/server_internal.h"

void braid__hs_req_free(braid_http_req_t *q) {
  braid_free(q->head);
  braid_free(q->path);
  braid_free(q->hdrs);
  braid_free(q);
}

/* Build a request from a parsed head in c->buf[0..n). */
braid_http_req_t *braid__hs_req_new(hs_conn *c, const braid_http_request_t *pr,
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
    braid__hs_req_free(q);
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
int braid__hs_req_path(braid_http_req_t *q) {
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

void braid__hs_req_detach(hs_conn *c, braid_http_req_t *q, int reason) {
  /* Every request gets its log line, a response cut short included. */
  braid__hs_req_log(c, q, 1);
  if (c->req == q)
    c->req = NULL;
  q->c = NULL;
  q->guard++;
  if (q->bstate == HS_BODY_READING) {
    q->bend_pending = false;
    braid__hs_body_end(q, reason);
  }
  if (q->fstate != HS_FILE_NONE && !q->finished) {
    q->fstate = HS_FILE_NONE;
    q->fdone(q, reason, q->farg);
  }
  int freed_by_closed = 0;
  if (!q->finished && q->sops != NULL && q->sops->closed != NULL) {
    q->sops->closed(q, reason, q->sarg);
    freed_by_closed = 1;
  }
  q->guard--;
  if (q->finished || freed_by_closed)
    braid__hs_req_free(q);
}

/* ------------------------------------------------------------------------
 * The request body
 * ------------------------------------------------------------------------ */

void braid__hs_body_end(braid_http_req_t *q, int status) {
  if (q->bstate != HS_BODY_READING)
    return;
  q->bstate = HS_BODY_ENDED;
  if (q->bops != NULL && q->bops->end != NULL)
    q->bops->end(q, status, q->barg);
}

int braid__hs_body_pump(hs_conn *c) {
  braid_http_req_t *q = c->req;
  /* No request: the body of a finished one, skipped to reach the next. */
  bool deliver = q != NULL;
  /* Nothing is delivered while stalled: a handler answering as the body
   * arrives would only add to what waits for the client. */
  while (c->len > 0 && braid__hs_live(c) && !c->wpaused) {
    if (deliver && (q->bstate != HS_BODY_READING || q->bpaused))
      return 0;
    size_t take;
    int done = 0;
    if (c->bkind == BRAID_HTTP_BODY_LENGTH) {
      take = c->len < c->bleft ? c->len : (size_t)c->bleft;
      c->bleft -= take;
      done = c->bleft == 0;
      c->bseen += take;
      if (deliver && take > 0)
        q->bops->data(q, c->buf, take, q->barg);
      /* The callback may have finished the request, but not freed the
       * connection: it is freed only from connection_lost. */
      memmove(c->buf, c->buf + take, c->len - take);
      c->len -= take;
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
      if (deliver && dlen > 0)
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
    if (deliver && c->req != q)
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
  if (q->bstate != HS_BODY_UNASKED)
    return BRAID_EALREADY;
  hs_conn *c = q->c;
  if (c == NULL)
    return BRAID_ECLOSED; /* a zombie (braid/http.h, request lifetime) */
  q->bops = ops;
  q->barg = arg;
  q->bstate = HS_BODY_READING;
  braid__hs_handler_alive(c);
  if (!c->body_pending) {
    q->bend_pending = true;
    q->bend_status = 0;
  } else if (q->expect && !q->head_sent) {
    static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
    braid__hs_write_raw(c, cont, sizeof cont - 1);
    q->expect = false; /* answered */
  }
  if (c->depth == 0)
    braid__hs_process(c);
  else
    braid__hs_kick(c);
  return 0;
}

int braid_http_pause_body(braid_http_req_t *q) {
  if (q == NULL)
    return BRAID_EINVAL;
  q->bpaused = true;
  if (q->c == NULL)
    return BRAID_ECLOSED;
  braid__hs_handler_alive(q->c);
  braid__hs_settle(q->c);
  return 0;
}

int braid_http_resume_body(braid_http_req_t *q) {
  if (q == NULL)
    return BRAID_EINVAL;
  q->bpaused = false;
  if (q->c == NULL)
    return BRAID_ECLOSED;
  braid__hs_handler_alive(q->c);
  braid__hs_kick(q->c);
  return 0;
}

/* ------------------------------------------------------------------------
 * Accessors
 * ------------------------------------------------------------------------ */

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
